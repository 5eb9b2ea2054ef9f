// A Redis Cluster primary killed under traffic: three relays on a real 6-node Redis Cluster
// (three primaries, three replicas), real Minecraft clients playing and joining through every
// relay, and kill -9 of the primary that holds the tunnel's keys. Established players must not
// notice; joins may fail while the replica is promoted (about the cluster's node timeout, 2 s)
// and must recover by themselves.
//
// Needs root (network namespaces).

import { before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import * as h from '../e2e/harness.mjs'
import { Traffic, appendTable, renderTable, stopAll } from './traffic.mjs'
import { DevCluster } from './cluster.mjs'

const run = promisify(execFile)
const show = (x) => JSON.stringify(x)
const rows = []
const cl = new DevCluster({
  id: 10,
  redisMode: 'cluster',
  relayArgs: '--lease-ttl-s 6 --heartbeat-ms 1000 --route-cache-ms 1000 --placement-margin 1000000 --join-rate-v4 100000 --join-burst 100000 --max-pending-per-source 100000'
})
let mc, agent

before(h.withLogs('chaos Redis Cluster up', async () => {
  h.requireBinaries()
  await cl.up()
  mc = await h.startMcServer({ host: '127.0.0.1', motd: 'chaos cluster' })
  const token = await h.mintToken({ keys: cl.keys, sub: 'user-chaosrc', tid: 'tunnel-chaosrc', ttl: 3600 })
  agent = await h.startAgent({ relayHost: cl.relays[0].ip, relayAgentPort: 7000, token, ca: cl.keys.ca, localPort: mc.port, upTimeoutMs: 30000 })
}), { timeout: 180000 })

after(async () => {
  await stopAll()
  process.stderr.write(`\n[chaos] ${renderTable(rows)}\n`)
  try { appendTable('/tmp/dvv-chaos-table.md', rows) } catch {}
  await h.cleanup()
  await cl.down()
})

h.scenario('Redis Cluster primary holding the tunnel\'s keys killed: players keep playing, joins recover', { timeout: 120000 }, async () => {
  const t = new Traffic({ entries: cl.relays.map((r) => cl.entry(r)), hostname: agent.hostname, players: 3, joinEveryMs: 400, prefix: 'rc' })
  await t.start()
  await h.sleep(1500)
  // the primary that serves the slot of the tunnel's route key
  const slot = Number(await cl.redis('CLUSTER', 'KEYSLOT', `dvv:{${agent.hostname}}:route`))
  const nodes = (await cl.redis('CLUSTER', 'NODES')).split('\n')
  let victim = null
  for (const line of nodes) {
    const f = line.split(' ')
    if (!f[2] || !f[2].includes('master')) continue
    for (const range of f.slice(8)) {
      const [a, b] = range.split('-').map(Number)
      if (slot >= a && slot <= (Number.isNaN(b) ? a : b)) victim = f[1].split('@')[0]
    }
  }
  assert.ok(victim, `expected to find the primary of slot ${slot} in ${show(nodes)}`)
  t.mark('primary killed')
  await run('pkill', ['-KILL', '-f', `redis-server ${victim}`])
  assert.ok(await t.recovered({ n: 5, timeoutMs: 30000 }), `expected joins to recover after the failover, got ${show(t.stats())}`)
  await h.sleep(2000)
  const stats = await t.stop()
  assert.equal(stats.dropped, 0, `expected no established player dropped, got ${show(stats.dropReasons)}`)
  assert.equal(stats.hangs, 0, `expected no hung join, got ${show(stats.reasons)}`)
  rows.push({ name: 'Redis Cluster primary killed', stats, notes: `primary ${victim} (slot ${slot}) kill -9; replica promoted` })
})
