// dvv-api on a Redis Cluster: a real 3-primary cluster (no replicas) on free ports; the API is
// given one node and must follow MOVED to write each user's keys on that user's slot owner and
// the control stream on the {ctl} slot's owner.

import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { after } from 'node:test'
import { freePort, makeTempDir, scenario, spawnProcess, tcpRoundTrip } from '../e2e/harness.mjs'
import { cleanupApi, redis, startApi, until } from './api.mjs'

after(cleanupApi)

function run (cmd, args) {
  return new Promise((resolve, reject) => execFile(cmd, args, { timeout: 30000 }, (e, out, err) => e ? reject(new Error(`${cmd} ${args.join(' ')}: ${e.message} ${err}`)) : resolve(out)))
}

async function startCluster () {
  const ports = [await freePort(), await freePort(), await freePort()]
  for (const p of ports) {
    const dir = await makeTempDir(`rc-${p}`)
    spawnProcess(`redis-${p}`, 'redis-server', ['--port', String(p), '--bind', '127.0.0.1', '--cluster-enabled', 'yes', '--cluster-config-file', `${dir}/nodes.conf`, '--dir', dir, '--save', '', '--appendonly', 'no', '--protected-mode', 'no'])
  }
  for (const p of ports) await until(async () => ((await tcpRoundTrip(p, 'PING\r\n')) || '').startsWith('+PONG'), { timeoutMs: 10000 })
  await run('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'])
  for (const p of ports) await until(async () => /cluster_state:ok/.test(await redis(p, 'CLUSTER', 'INFO')), { timeoutMs: 15000, what: 'cluster_state:ok' })
  return ports
}

/** A command sent to whichever node owns the key (following MOVED like a cluster client). */
async function ccmd (ports, key, ...args) {
  let port = ports[0]
  for (let i = 0; i < 5; i++) {
    const r = await redis(port, ...args)
    const m = r && r.error && /^MOVED \d+ [\d.]+:(\d+)/.exec(r.error)
    if (!m) return r
    port = Number(m[1])
  }
  throw new Error('too many redirects')
}

scenario('the outbox writes user keys and events through MOVED on a 3-primary Redis Cluster', async () => {
  const ports = await startCluster()
  const api = await startApi({ redisPort: ports[0] })
  const users = []
  for (let i = 0; i < 6; i++) users.push(await api.signup())
  // six users: their slots land on different primaries, most not on the seed
  const owners = new Set()
  for (const u of users) {
    const key = `dvv:user:{${u.user.id}}:plan`
    const r = await redis(ports[0], 'HGET', key, 'tier')
    owners.add(r && r.error ? r.error.split(' ')[2] : `127.0.0.1:${ports[0]}`)
    await until(async () => (await ccmd(ports, key, 'HGET', key, 'tier')) === 'free', { timeoutMs: 3000, what: `plan hash of ${u.user.id}` })
  }
  assert.ok(owners.size >= 2, `users spread over ${owners.size} node(s)`)
  const u = users[users.length - 1]
  const tid = (await api.request('GET', '/v1/tunnels', { session: u.session })).json.tunnels[0].id
  const tok = (await api.request('POST', '/v1/tokens', { session: u.session, body: { tunnel_id: tid } })).json
  assert.equal((await api.request('DELETE', `/v1/tokens/${tok.id}`, { session: u.session })).status, 204)
  const rkey = `dvv:user:{${u.user.id}}:revoked`
  await until(async () => (await ccmd(ports, rkey, 'ZSCORE', rkey, tok.id)) !== null, { timeoutMs: 1000, what: 'revoked on the slot owner' })
  const stream = 'dvv:{ctl}:events'
  const ev = await until(async () => {
    const arr = await ccmd(ports, stream, 'XRANGE', stream, '-', '+')
    return Array.isArray(arr) && arr.find(([, f]) => f.includes('revoke') && f.includes(tok.id))
  }, { timeoutMs: 1000, what: 'the revoke event on the {ctl} owner' })
  assert.ok(ev.value)
  // reads follow MOVED too: the tunnel list shows what a relay wrote on the user's slot
  await ccmd(ports, `dvv:tunnel:{${tid}}`, 'SET', `dvv:tunnel:{${tid}}`, 'cluster-name.eu.dvv.test')
  const t = (await api.request('GET', '/v1/tunnels', { session: u.session })).json.tunnels[0]
  assert.equal(t.hostname, 'cluster-name.eu.dvv.test')
  assert.equal((await api.sql('SELECT count(*) FROM redis_outbox'))[0][0], '0')
})
