// Replicas: several relays of a region, each in its own network namespace, sharing Redis
// (standalone or a real 6-node Redis Cluster). Any relay serves any player of its region.
// Used by relays.test.mjs (standalone Redis) and relays-cluster.test.mjs (Redis Cluster).
// Needs root (network namespaces).

import { before, after } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import fs from 'node:fs'
import path from 'node:path'
import { execFile, execFileSync } from 'node:child_process'
import { promisify } from 'node:util'
import * as h from '../e2e/harness.mjs'
import { join, ping } from '../e2e/mc-client.mjs'

const exec = promisify(execFile)
const show = (r) => JSON.stringify(r)

export function relaysSuite ({ redisMode, id }) {
  const script = path.join(h.REPO_ROOT, 'scripts', 'dev-cluster.sh')
  const build = process.env.DVV_BUILD || 'build-san'
  let cl, keys, mc, agent, token, haproxy, pagent
  let drained = null // the relay the drain scenario stopped
  const live = () => cl.relays.filter((x) => x !== drained)
  const relayById = (rid) => cl.relays.find((r) => r.id === rid)
  const cli = (...a) => exec('redis-cli', [...redisTarget(), ...a]).then((r) => r.stdout.trim())
  function redisTarget () {
    const first = cl.redis.split(',')[0]
    const [host, port] = first.split(':')
    return redisMode === 'cluster' ? ['-c', '-h', host, '-p', port] : ['-h', host, '-p', port]
  }
  async function metric (relay, name) {
    const body = await new Promise((resolve, reject) => {
      const s = net.connect(9100, relay.ip, () => s.write('GET /metrics HTTP/1.0\r\n\r\n'))
      let buf = ''
      s.on('data', (d) => { buf += d })
      s.on('end', () => resolve(buf))
      s.on('error', reject)
    })
    // a labelled family (e.g. forward_refused_total{reason}) counts as the sum of its series
    const all = [...body.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\d+)`, 'gm'))]
    return all.length ? all.reduce((sum, m) => sum + Number(m[1]), 0) : null
  }
  const relayLog = (r) => { try { return fs.readFileSync(r.log, 'utf8') } catch { return '' } }

  // Interrupted (Ctrl-C, a CI timeout): the harness's signal handler exits at once and after()
  // never runs, so take the cluster down from the exit hook too (synchronously: it is the last
  // chance). A normal end has already taken it down in after() and skips this.
  let up = false
  const downAtExit = () => {
    if (!up) return
    try { execFileSync(script, ['down', '--id', String(id)], { stdio: 'ignore', timeout: 30000 }) } catch {}
  }
  process.once('exit', downAtExit)

  before(h.withLogs('dev cluster up', async () => {
    h.requireBinaries()
    up = true
    await exec(script, ['down', '--id', String(id)]).catch(() => {})
    const { stdout } = await exec(script, ['up', '--id', String(id), '--relays', '3', '--regions', 'eu',
      '--redis', redisMode, '--build', build], {
      env: {
        ...process.env,
        // small leases so takeover is observable quickly; no placement slack so load decides
        DVV_RELAY_ARGS: '--lease-ttl-s 6 --placement-margin 0 --route-cache-ms 1000 --join-rate-v4 100000 --join-burst 100000 --max-pending-per-source 100000 --drain-timeout-s 20'
      },
      timeout: 120000
    })
    cl = JSON.parse(stdout.trim().split('\n').pop())
    keys = { jwtKey: path.join(cl.keys, 'jwt.key'), ca: path.join(cl.keys, 'ca.pem') }
    mc = await h.startMcServer({ host: '0.0.0.0', motd: `relays ${redisMode}` })
    token = await h.mintToken({ keys, sub: 'user-rep', tid: 'tunnel-rep', ttl: 3600 })
  }), { timeout: 150000 })

  after(async () => {
    await h.cleanup()
    await exec(script, ['down', '--id', String(id)]).catch(() => {})
    up = false
  })

  const r = (i) => cl.relays[i]

  h.scenario('an agent registers on the relay it dialled when loads are equal, and stays there', async () => {
    agent = await h.startAgent({ relayHost: r(0).ip, relayAgentPort: 7000, token, ca: keys.ca, localPort: mc.port, upTimeoutMs: 30000 })
    assert.match(agent.hostname, /\.eu\.dvv\.test$/)
    const up = agent.proc.events.find((e) => e.event === 'tunnel_up')
    assert.equal(up.relay, `${r(0).ip}:7000`, `expected the tunnel on ${r(0).id}, got ${show(up)}`)
  })

  h.scenario('players entering through each relay all join the same tunnel (forwarded to its owner)', async () => {
    for (const rel of cl.relays) {
      const res = await join({ relayHost: rel.ip, relayPort: 25565, hostname: agent.hostname, username: `via-${rel.id}`.slice(0, 16), chat: 'hi', timeoutMs: 20000 })
      assert.equal(res.ok, true, `expected a join through ${rel.id} to reach the tunnel on ${r(0).id}, got ${show(res)}`)
      assert.equal(res.echoed, 'echo: hi')
    }
    const fw = (await metric(r(1), 'dvv_relay_players_forwarded_total')) + (await metric(r(2), 'dvv_relay_players_forwarded_total'))
    assert.ok(fw >= 2, `expected relays 2 and 3 to have forwarded the players to relay 1, counted ${fw}`)
    const adopted = await metric(r(0), 'dvv_relay_players_adopted_total')
    assert.ok(adopted >= 2, `expected relay 1 to have adopted >= 2 forwarded players, got ${adopted}`)
    const st = await ping({ relayHost: r(2).ip, relayPort: 25565, hostname: agent.hostname, timeoutMs: 10000 })
    assert.equal(st.motd, `relays ${redisMode}`, `expected the server's own MOTD through a forwarded status ping, got ${show(st)}`)
  })

  h.scenario('a new tunnel is placed on the least-loaded relay (MOVE, one hop)', async () => {
    await h.sleep(2500) // one heartbeat: relay 1's load now counts its tunnel
    const t2 = await h.mintToken({ keys, sub: 'user-rep2', tid: 'tunnel-rep2', ttl: 3600 })
    const a2 = await h.startAgent({ relayHost: r(0).ip, relayAgentPort: 7000, token: t2, ca: keys.ca, localPort: mc.port, upTimeoutMs: 30000 })
    const up = a2.proc.events.find((e) => e.event === 'tunnel_up')
    assert.notEqual(up.relay, `${r(0).ip}:7000`, `expected the second tunnel to be moved off the loaded relay 1, it stayed: ${show(up)}`)
    const moved = await metric(r(0), 'dvv_relay_tunnels_moved_total')
    assert.ok(moved >= 1, `expected relay 1 to count a MOVE, got ${moved}`)
    const res = await join({ relayHost: r(0).ip, relayPort: 25565, hostname: a2.hostname, username: 'to-moved', timeoutMs: 20000 })
    assert.equal(res.ok, true, `expected a join to the moved tunnel through relay 1, got ${show(res)}`)
    await h.stopProcess(a2.proc)
  })

  h.scenario('the player\'s real address survives the extra hop (PROXY v2 at the backend shows the player)', async () => {
    haproxy = await h.startHaproxy({ targetPort: mc.port })
    const t3 = await h.mintToken({ keys, sub: 'user-pp', tid: 'tunnel-pp', ttl: 3600 })
    pagent = await h.startAgent({ relayHost: r(2).ip, relayAgentPort: 7000, token: t3, ca: keys.ca, localPort: haproxy.port, proxyProtocol: true, upTimeoutMs: 30000, extraArgs: [] })
    const owner = pagent.proc.events.find((e) => e.event === 'tunnel_up').relay
    const entry = cl.relays.find((x) => `${x.ip}:7000` !== owner)
    let local = null
    const res = await join({ relayHost: entry.ip, relayPort: 25565, hostname: pagent.hostname, username: 'pp', timeoutMs: 20000, onSocket: (s) => s.on('connect', () => { local = `${s.localAddress}:${s.localPort}` }) })
    assert.equal(res.ok, true, `expected a forwarded join through ${entry.id}, got ${show(res)}`)
    await h.sleep(300)
    const srcs = haproxy.sources()
    assert.ok(srcs.includes(local), `expected haproxy to log the player ${local} (not relay ${entry.ip}), it logged ${show(srcs)}`)
  })

  h.scenario('a forged forward header sent by a player is refused, and a wrong secret on the internal port too', async () => {
    const before = await metric(r(0), 'dvv_relay_forward_refused_total')
    // to the player port: it is not a Minecraft handshake, closed at once
    const fake = Buffer.concat([Buffer.from('DVVF'), Buffer.from([1, 0, 0, 120]), Buffer.alloc(120, 7)])
    const closed = await new Promise((resolve) => {
      const s = net.connect(25565, r(0).ip, () => s.write(fake))
      const t0 = Date.now()
      s.on('data', () => {})
      s.on('error', () => {})
      s.on('close', () => resolve(Date.now() - t0))
      setTimeout(() => { s.destroy(); resolve(null) }, 5000)
    })
    assert.ok(closed !== null && closed < 2000, `expected the player port to drop a forward header at once, closed after ${closed} ms`)
    // to the internal port with a header signed by a different secret
    const refused = await new Promise((resolve) => {
      const s = net.connect(7001, r(0).ip, () => s.write(fake))
      s.on('error', () => {})
      s.on('close', () => resolve(true))
      setTimeout(() => { s.destroy(); resolve(false) }, 5000)
    })
    assert.equal(refused, true, 'expected the internal port to close a connection with a forged header')
    const after = await metric(r(0), 'dvv_relay_forward_refused_total')
    assert.ok(after > before, `expected dvv_relay_forward_refused_total to grow (was ${before}, now ${after})`)
  })

  h.scenario('the user\'s plan is read from Redis at registration and wins over the token\'s claim', async () => {
    // the API marked the user paid after the token was minted "free": the custom label is granted
    await cli('HSET', 'dvv:user:{user-plan}:plan', 'tier', 'paid', 'custom_names', '1', 'max_players', '50', 'max_tunnels', '3')
    const tp = await h.mintToken({ keys, sub: 'user-plan', tid: 'tunnel-plan', plan: 'free', name: 'plan-probe', ttl: 3600 })
    const ap = await h.startAgent({ relayHost: r(1).ip, relayAgentPort: 7000, token: tp, ca: keys.ca, localPort: mc.port, upTimeoutMs: 30000 })
    assert.equal(ap.hostname, 'plan-probe.eu.dvv.test', `expected the paid plan from Redis to grant the custom name, got ${ap.hostname}`)
    await h.stopProcess(ap.proc)
    // downgraded to free: the token still says paid, the custom label is not granted any more
    await cli('HSET', 'dvv:user:{user-down}:plan', 'tier', 'free', 'custom_names', '0')
    const td = await h.mintToken({ keys, sub: 'user-down', tid: 'tunnel-down', plan: 'paid', name: 'down-probe', ttl: 3600 })
    const ad = await h.startAgent({ relayHost: r(2).ip, relayAgentPort: 7000, token: td, ca: keys.ca, localPort: mc.port, upTimeoutMs: 30000 })
    assert.notEqual(ad.hostname, 'down-probe.eu.dvv.test', 'a user downgraded to free in Redis kept the paid custom name')
    assert.match(ad.hostname, /^[a-z]+-[a-z]+\.eu\.dvv\.test$/)
    await h.stopProcess(ad.proc)
  })

  h.scenario('no loop when relays disagree: a forwarded player is never forwarded again', async () => {
    // Redis says relay 2 holds a name that relay 2 does not have: relay 1 forwards once, relay 2
    // answers the player itself ("reconnecting") and does not forward back.
    const name = 'ghost-tunnel.eu.dvv.test'
    await cli('SET', `dvv:{${name}}:route`, `${r(1).id} 1 ${r(1).internal_addr}`, 'EX', '30')
    const f2 = await metric(r(1), 'dvv_relay_players_forwarded_total')
    const res = await join({ relayHost: r(0).ip, relayPort: 25565, hostname: name, username: 'ghost', timeoutMs: 10000 })
    assert.equal(res.ok, false)
    assert.match(res.kicked || '', /reconnect/i, `expected a clear "reconnecting" kick, got ${show(res)}`)
    assert.equal(await metric(r(1), 'dvv_relay_players_forwarded_total'), f2, 'relay 2 forwarded a forwarded player')
    // Redis says relay 1 holds it, and the player is at relay 1, which has no session: offline, no forward
    await cli('SET', `dvv:{${name}}:route`, `${r(0).id} 1 ${r(0).internal_addr}`, 'EX', '30')
    await h.sleep(1100) // route cache
    const f1 = await metric(r(0), 'dvv_relay_players_forwarded_total')
    const res2 = await join({ relayHost: r(0).ip, relayPort: 25565, hostname: name, username: 'ghost2', timeoutMs: 10000 })
    assert.equal(res2.ok, false)
    assert.match(res2.kicked || '', /no server is online/i, `expected the offline kick, got ${show(res2)}`)
    assert.equal(await metric(r(0), 'dvv_relay_players_forwarded_total'), f1, 'relay 1 forwarded to itself')
  })

  h.scenario('a stale owner notices its lease was taken (fencing epoch) and closes its session', async () => {
    const name = agent.hostname
    const owner = relayById(agent.proc.events.find((e) => e.event === 'tunnel_up').relay === `${r(0).ip}:7000` ? r(0).id : r(1).id)
    await cli('SET', `dvv:{${name}}:epoch`, '999999', 'EX', '600')
    await cli('SET', `dvv:{${name}}:route`, `elsewhere 999999 10.255.255.1:7001`, 'EX', '600')
    await h.waitForLine(agent.proc, (l) => /"taken_over"|tunnel_down/.test(l), { timeoutMs: 10000, what: 'the agent being told its tunnel was taken over' })
    assert.match(relayLog(owner), /lease now held by another relay/, 'expected the old owner to log the lost lease')
    // the agent comes back (new registration, higher epoch) and the name works again
    await cli('DEL', `dvv:{${name}}:route`)
    await h.waitForLine(agent.proc, (l) => { try { const e = JSON.parse(l); return e.event === 'tunnel_up' && agent.proc.events.filter((x) => x.event === 'tunnel_up').length >= 2 } catch { return false } }, { timeoutMs: 40000, what: 'the agent re-registering' })
    const res = await join({ relayHost: r(2).ip, relayPort: 25565, hostname: name, username: 'after-fence', timeoutMs: 20000 })
    assert.equal(res.ok, true, `expected the name to work again after re-registration, got ${show(res)}`)
  })

  h.scenario('draining a relay moves its agents to the others; the name keeps working through every relay', async () => {
    const upEvents = () => agent.proc.events.filter((e) => e.event === 'tunnel_up')
    const n0 = upEvents().length
    const ownerAddr = upEvents().pop().relay
    const owner = cl.relays.find((x) => `${x.ip}:7000` === ownerAddr)
    const ownerPid = (await exec('ip', ['netns', 'pids', owner.netns])).stdout.trim().split('\n')[0]
    drained = owner
    process.kill(Number(ownerPid), 'SIGTERM')
    await h.waitForLine(agent.proc, () => upEvents().length > n0, { timeoutMs: 30000, what: 'tunnel_up on another relay after MOVE' })
    const now = upEvents().pop().relay
    assert.notEqual(now, ownerAddr, `expected the agent to move off the draining relay ${ownerAddr}`)
    // the lease was taken over by the new relay with a higher fencing epoch
    const newOwner = cl.relays.find((x) => `${x.ip}:7000` === now)
    const route = (await cli('GET', `dvv:{${agent.hostname}}:route`)).split(' ')
    assert.equal(route[0], newOwner.id, `expected the route lease to name ${newOwner.id}, got ${route.join(' ')}`)
    assert.ok(Number(route[1]) > 0, `expected a fencing epoch in the route, got ${route.join(' ')}`)
    for (const rel of cl.relays.filter((x) => x !== owner)) {
      const res = await join({ relayHost: rel.ip, relayPort: 25565, hostname: agent.hostname, username: `d-${rel.id}`.slice(0, 16), timeoutMs: 20000 })
      assert.equal(res.ok, true, `expected a join through ${rel.id} after the move, got ${show(res)}`)
    }
  })

  if (redisMode === 'cluster') {
    h.scenario('Redis Cluster primary failover mid-test: players keep joining after it recovers', async () => {
      // kill the primary that owns the tunnel's name slot
      const name = agent.hostname
      const slot = Number(await cli('CLUSTER', 'KEYSLOT', `dvv:{${name}}:route`))
      const nodes = await cli('CLUSTER', 'NODES')
      const primary = nodes.split('\n').map((l) => l.split(' ')).find((f) => f[2].includes('master') && f.slice(8).some((rg) => {
        const [a, b] = rg.split('-').map(Number); return slot >= a && slot <= (b ?? a)
      }))
      const port = primary[1].split('@')[0].split(':')[1]
      const pid = (await exec('bash', ['-c', `ss -ltnpH 'sport = :${port}' | sed -n 's/.*pid=\\([0-9]*\\).*/\\1/p' | head -1`])).stdout.trim()
      assert.ok(pid, `could not find the redis primary on port ${port}`)
      process.kill(Number(pid), 'SIGKILL')
      const t0 = Date.now()
      let ok = 0; let failed = 0
      while (Date.now() - t0 < 30000 && ok < 5) {
        const res = await join({ relayHost: live()[ok % live().length].ip, relayPort: 25565, hostname: name, username: `fo${ok}`, timeoutMs: 10000 })
        if (res.ok) ok++; else { failed++; await h.sleep(500) }
      }
      assert.ok(ok >= 5, `expected players to keep joining through the failover (ok ${ok}, failed ${failed})`)
      // and new registrations work on the recovered cluster
      const t4 = await h.mintToken({ keys, sub: 'user-fo', tid: 'tunnel-fo', ttl: 3600 })
      const a4 = await h.startAgent({ relayHost: live()[1].ip, relayAgentPort: 7000, token: t4, ca: keys.ca, localPort: mc.port, upTimeoutMs: 40000 })
      const res = await join({ relayHost: live()[0].ip, relayPort: 25565, hostname: a4.hostname, username: 'fo-new', timeoutMs: 20000 })
      assert.equal(res.ok, true, `expected a new tunnel to work after the failover, got ${show(res)}`)
    })
  }
}
