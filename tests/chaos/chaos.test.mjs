// The failure table, done to running processes: three relays in network namespaces sharing a
// standalone Redis (scripts/dev-cluster.sh), a real dvv agent in front of a real Minecraft
// server, and real Minecraft clients joining and chatting throughout every scenario
// (tests/chaos/traffic.mjs). Each scenario reports players dropped, joins failed (and how many
// of those hung), and time to recover; the suite prints the table at the end.
//
// Needs root (network namespaces, nftables). Every fault is undone by the scenario that made it.

import { before, after } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import * as h from '../e2e/harness.mjs'
import { join, ping } from '../e2e/mc-client.mjs'
import { Traffic, renderTable, appendTable, stopAll } from './traffic.mjs'
import { DevCluster, ownerOf } from './cluster.mjs'
import { Fleet } from './agents.mjs'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'

const run = promisify(execFile)

const show = (x) => JSON.stringify(x)
const rows = []
const DRAIN_S = 20

const cl = new DevCluster({
  id: 9,
  relayArgs: [
    '--lease-ttl-s 6 --heartbeat-ms 1000 --route-cache-ms 1000 --placement-margin 1000000',
    '--join-rate-v4 100000 --join-burst 100000 --max-pending-per-source 100000',
    `--drain-timeout-s ${DRAIN_S}`
  ].join(' ')
})
let mc, agent, token

function record (name, stats, notes = '') {
  rows.push({ name, stats, notes })
  process.stderr.write(`[chaos] ${name}: ${show(stats)}${notes ? ' ' + notes : ''}\n`)
}

/** The agent is settled: its last session event is a tunnel_up (no migration or reconnect in
 * flight from an earlier fault) and Redis routes the name to that relay. */
async function settled (timeoutMs = 45000) {
  const end = Date.now() + timeoutMs
  const kinds = new Set(['tunnel_up', 'tunnel_down', 'migrating', 'reconnecting'])
  for (;;) {
    const evs = agent.proc.events.filter((e) => kinds.has(e.event))
    const last = evs[evs.length - 1]
    const owner = ownerOf(cl, agent)
    const route = await cl.redis('GET', `dvv:{${agent.hostname}}:route`).catch(() => '')
    if (last && last.event === 'tunnel_up' && owner && route.startsWith(owner.id + ' ')) return
    if (Date.now() > end) throw new Error(`agent not settled on one relay within ${timeoutMs} ms: last event ${show(last)}, route ${show(route)}`)
    await h.sleep(250)
  }
}

/** Traffic on the current tunnel: players enter through `via`, joins rotate over `joinsVia`. */
async function traffic ({ via, joinsVia, players = 4, prefix }) {
  const t = new Traffic({
    entries: joinsVia.map((r) => cl.entry(r)),
    playerEntries: via.map((r) => cl.entry(r)),
    hostname: agent.hostname,
    players,
    joinEveryMs: 400,
    prefix
  })
  await t.start()
  return t
}

before(h.withLogs('chaos cluster up', async () => {
  h.requireBinaries()
  await cl.up()
  mc = await h.startMcServer({ host: '127.0.0.1', motd: 'chaos server' })
  token = await h.mintToken({ keys: cl.keys, sub: 'user-chaos', tid: 'tunnel-chaos', ttl: 3600 })
  agent = await h.startAgent({ relayHost: cl.relays[0].ip, relayAgentPort: 7000, token, ca: cl.keys.ca, localPort: mc.port, upTimeoutMs: 30000 })
}), { timeout: 180000 })

after(async () => {
  await stopAll()
  const table = renderTable(rows)
  process.stderr.write(`\n[chaos] failure table\n${table}\n`)
  try { appendTable('/tmp/dvv-chaos-table.md', rows) } catch {}
  await h.cleanup()
  await cl.down()
})

h.scenario('scale-down: a draining relay keeps its players, moves its agent (make-before-break) and exits 0 with its keys gone', { timeout: 180000 }, async () => {
  await cl.ensureAllUp() // whatever an earlier scenario left behind
  await settled()
  const victim = ownerOf(cl, agent)
  assert.ok(victim, 'expected the agent to have a tunnel')
  const others = cl.relays.filter((r) => r !== victim)
  const t = await traffic({ via: [victim, ...others, victim], joinsVia: cl.relays, prefix: 'sd' })
  await h.sleep(2000)
  const ups = agent.proc.events.length // waitForEvent's `since` is an index into events
  t.mark('SIGTERM')
  const t0 = Date.now()
  cl.signal(victim, 'SIGTERM')
  // readiness goes false at once
  let ready = 200
  for (let i = 0; i < 20 && ready === 200; i++) { ready = await cl.readyz(victim); await h.sleep(100) }
  assert.equal(ready, 503, `expected /readyz 503 on a draining relay, got ${ready}`)
  // the agent moves (a new tunnel_up elsewhere), and the old relay keeps the established players
  const moved = await agent.waitForEvent('tunnel_up', { since: ups, timeoutMs: 15000 })
  const moveMs = Date.now() - t0
  assert.notEqual(moved.relay, `${victim.ip}:7000`, `expected the agent to move off the draining relay, got ${show(moved)}`)
  // joins through the other relays go to the new home at once; through the draining relay they
  // are forwarded or answered clearly, never hung
  await h.sleep(6000)
  const playingBeforeLeave = t.playing()
  const migration = t.stats()
  const stats = await t.stop()
  record('agent migration (make-before-break)', migration, `agent re-registered in ${(moveMs / 1000).toFixed(1)} s`)
  assert.equal(playingBeforeLeave, stats.players, `expected every established player to keep playing through the drain, ${stats.dropped} dropped: ${show(stats.dropReasons)}`)
  assert.equal(stats.hangs, 0, `expected no join to hang during the drain, got ${show(stats.reasons)}`)
  // the players left: the relay has nothing left and exits 0 well before the deadline
  const exit = await cl.waitExit(victim, (DRAIN_S + 5) * 1000)
  const exitMs = Date.now() - t0
  assert.ok(exit, `expected the draining relay to exit once its players left (deadline ${DRAIN_S} s)`)
  assert.equal(exit.status, 0, `expected exit status 0 from the drained relay\n${cl.log(victim).slice(-2000)}`)
  const pub = await cl.published(victim)
  assert.deepEqual(pub, { alive: false, info: false, load: false, agent: false }, `expected the drained relay's Redis entries gone, found ${show(pub)}`)
  record('scale-down of 1 of 3 relays (SIGTERM)', stats, `exit 0 after ${(exitMs / 1000).toFixed(1)} s, keys gone`)
  await cl.restart(victim)
})

h.scenario('kill -9 of the relay holding the tunnel: the agent re-homes and players join again within seconds', { timeout: 120000 }, async () => {
  await cl.ensureAllUp() // whatever an earlier scenario left behind
  await settled()
  const victim = ownerOf(cl, agent)
  const others = cl.relays.filter((r) => r !== victim)
  const t = await traffic({ via: others, joinsVia: others, prefix: 'kl' })
  await h.sleep(1500)
  const ups = agent.proc.events.length // waitForEvent's `since` is an index into events
  t.mark('kill -9')
  cl.signal(victim, 'SIGKILL')
  const moved = await agent.waitForEvent('tunnel_up', { since: ups, timeoutMs: 45000 })
  assert.notEqual(moved.relay, `${victim.ip}:7000`, 'expected the agent on another relay')
  assert.ok(await t.recovered({ n: 3, timeoutMs: 20000 }), `expected joins to recover after the crash, got ${show(t.stats())}`)
  const stats = await t.stop()
  // the dead instance disappears from what placement and operators read
  let pub
  for (let i = 0; i < 50; i++) {
    pub = await cl.published(victim)
    if (!pub.alive && !pub.load && !pub.agent) break
    await h.sleep(200)
  }
  assert.deepEqual({ alive: pub.alive, load: pub.load, agent: pub.agent }, { alive: false, load: false, agent: false }, `expected the dead relay's liveness, load and agent entries gone, found ${show(pub)}`)
  assert.equal(stats.hangs, 0, `expected no join to hang, got ${show(stats.reasons)}`)
  record('kill -9 of the owning relay', stats, 'players forwarded through the dead relay are lost with it')
  await cl.restart(victim)
})

h.scenario('Redis stopped for 30 s then restarted: established players untouched, local joins keep working, state re-published', { timeout: 150000 }, async () => {
  await cl.ensureAllUp() // whatever an earlier scenario left behind
  await settled()
  const owner = ownerOf(cl, agent)
  const t = await traffic({ via: cl.relays, joinsVia: [owner], prefix: 'rd' })
  await h.sleep(1500)
  t.mark('redis down')
  await cl.redisStop()
  await h.sleep(30000)
  const during = t.stats()
  await cl.redisStart()
  // leases and load are re-published
  let route = ''
  for (let i = 0; i < 100 && !route; i++) { route = await cl.redis('GET', `dvv:{${agent.hostname}}:route`).catch(() => ''); if (!route) await h.sleep(200) }
  assert.match(route, new RegExp(`^${owner.id} `), `expected the route lease re-published by ${owner.id}, got ${show(route)}`)
  let loads = 0
  for (let i = 0; i < 50 && loads < 3; i++) { loads = Number(await cl.redis('ZCARD', 'dvv:{eu}:load')); if (loads < 3) await h.sleep(200) }
  assert.equal(loads, 3, 'expected all three relays back in the load set')
  const stats = await t.stop()
  assert.equal(stats.dropped, 0, `expected no established player dropped, got ${show(stats.dropReasons)}`)
  assert.equal(during.joinsFailedAfterFault, 0, `expected every join through the owning relay to work during the outage, got ${show(during.reasons)}`)
  record('Redis stopped 30 s, restarted empty', stats, 'route and load re-published')
  // joins through every relay work again
  const res = await join({ relayHost: cl.relays.find((r) => r !== owner).ip, relayPort: 25565, hostname: agent.hostname, username: 'after-redis', chat: 'x', timeoutMs: 15000 })
  assert.equal(res.ok, true, `expected a forwarded join after Redis returned, got ${show(res)}`)
  // the tunnel keeps its name: a session that moves after the outage finds its name record
  // re-published, not a random new name
  const last = agent.proc.events.filter((e) => e.event === 'tunnel_up').pop()
  assert.equal(last.hostname, agent.hostname, `expected the tunnel to keep its name across the Redis restart, got ${show(last)}`)
})

h.scenario('relay cut from Redis: it stops claiming, hands its agent over, and players keep playing', { timeout: 120000 }, async () => {
  await cl.ensureAllUp() // whatever an earlier scenario left behind
  await settled()
  const victim = ownerOf(cl, agent)
  const others = cl.relays.filter((r) => r !== victim)
  const t = await traffic({ via: [victim, ...others], joinsVia: others, prefix: 'cr' })
  await h.sleep(1500)
  const ups = agent.proc.events.length // waitForEvent's `since` is an index into events
  t.mark('cut from redis')
  await cl.block(victim, cl.redisHost, cl.redisPort)
  try {
    let ready = 200
    for (let i = 0; i < 100 && ready === 200; i++) { ready = await cl.readyz(victim); await h.sleep(100) }
    assert.equal(ready, 503, 'expected /readyz false on a relay that cannot reach Redis')
    const moved = await agent.waitForEvent('tunnel_up', { since: ups, timeoutMs: 30000 })
    assert.notEqual(moved.relay, `${victim.ip}:7000`, 'expected the agent handed to a relay that reaches Redis')
    assert.ok(await t.recovered({ n: 3, timeoutMs: 20000 }), `expected joins to recover, got ${show(t.stats())}`)
    const stats = await t.stop()
    assert.equal(stats.dropped, 0, `expected no established player dropped, got ${show(stats.dropReasons)}`)
    assert.equal(stats.hangs, 0, `expected no hung join, got ${show(stats.reasons)}`)
    record('relay cut from Redis', stats, 'agent handed over make-before-break')
  } finally {
    await cl.unblock(victim)
  }
})

h.scenario('relay cut from the owning relay: a forwarded player gets a clear answer at once', { timeout: 60000 }, async () => {
  await cl.ensureAllUp() // whatever an earlier scenario left behind
  await settled()
  const owner = ownerOf(cl, agent)
  const entry = cl.relays.find((r) => r !== owner)
  await cl.block(entry, owner.ip, 7001)
  try {
    const t0 = Date.now()
    const res = await join({ relayHost: entry.ip, relayPort: 25565, hostname: agent.hostname, username: 'cutoff', chat: 'x', timeoutMs: 15000 })
    const ms = Date.now() - t0
    assert.equal(res.ok, false)
    assert.ok(res.kicked !== undefined, `expected a Login Disconnect with a reason, got ${show(res)}`)
    assert.match(res.kicked, /reconnect|try again/i, `expected a "reconnecting, try again" reason, got ${show(res.kicked)}`)
    assert.ok(ms < 6000, `expected the answer within a few seconds, took ${ms} ms`)
    const st = await ping({ relayHost: entry.ip, relayPort: 25565, hostname: agent.hostname, timeoutMs: 10000 })
    assert.equal(st.ok, true, `expected a status answer, got ${show(st)}`)
    assert.match(st.motd, /offline|back soon|reconnect/i, `expected the cached status marked offline, got ${show(st)}`)
    record('relay cut from another relay', { players: 0, dropped: 0, chats: 0, echoesLost: 0, joins: 1, joinsOk: 0, joinsFailedAfterFault: 1, hangs: 0, recoveryMs: 0 }, `clear kick in ${ms} ms; status "${st.motd.replace(/\s+/g, ' ').slice(0, 40)}"`)
  } finally {
    await cl.unblock(entry)
  }
})

h.scenario('a connection flood on the agent port does not keep real agents out or count as load', { timeout: 120000 }, async () => {
  await cl.ensureAllUp() // whatever an earlier scenario left behind
  await settled()
  const target = cl.relays[1]
  // 50 source addresses on the bridge, 40 connections each: silent, half a TLS record, junk
  const srcs = []
  for (let i = 0; i < 50; i++) srcs.push(`10.77.${cl.id}.${100 + i}`)
  for (const a of srcs) await run('ip', ['addr', 'add', `${a}/32`, 'dev', `dvc${cl.id}br`]).catch(() => {})
  const socks = []
  try {
    for (const a of srcs) {
      for (let k = 0; k < 40; k++) {
        const s = net.connect({ host: target.ip, port: 7000, localAddress: a })
        s.on('error', () => {})
        if (k % 3 === 1) s.on('connect', () => s.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00])))
        if (k % 3 === 2) s.on('connect', () => s.write('GET / HTTP/1.1\r\n'))
        socks.push(s)
      }
    }
    await h.sleep(1000)
    const t0 = Date.now()
    const agents = []
    for (let i = 0; i < 5; i++) {
      const tok = await h.mintToken({ keys: cl.keys, sub: `flood-user-${i}`, tid: `flood-${i}`, ttl: 600 })
      agents.push(h.startAgent({ relayHost: target.ip, relayAgentPort: 7000, token: tok, ca: cl.keys.ca, localPort: mc.port, upTimeoutMs: 30000 }))
    }
    const up = await Promise.all(agents)
    const ms = Date.now() - t0
    const tunnels = await cl.redis('HGET', `dvv:{eu}:info:${target.id}`, 'tunnels')
    const real = up.filter((a) => ownerOf(cl, a) === target).length
    assert.ok(Number(tunnels) <= real + 1, `expected the published tunnel count to ignore the ${socks.length} unauthenticated connections, info says ${tunnels} (${real} real tunnels here)`)
    const res = await join({ relayHost: target.ip, relayPort: 25565, hostname: up[0].hostname, username: 'flooded', chat: 'x', timeoutMs: 15000 })
    assert.equal(res.ok, true, `expected a player to join a tunnel registered during the flood, got ${show(res)}`)
    record('connection flood on the agent port', { players: 0, dropped: 0, chats: 0, echoesLost: 0, joins: 1, joinsOk: 1, joinsFailedAfterFault: 0, hangs: 0, recoveryMs: 0 }, `${socks.length} flood connections from 50 sources; 5 agents up in ${(ms / 1000).toFixed(1)} s; published tunnels ${tunnels}`)
    for (const a of up) await h.stopProcess(a.proc)
  } finally {
    for (const s of socks) s.destroy()
    for (const a of srcs) await run('ip', ['addr', 'del', `${a}/32`, 'dev', `dvc${cl.id}br`]).catch(() => {})
  }
})

h.scenario('2,000 agents reconnecting at once to a restarted relay all come back, with memory and fds bounded', { timeout: 240000 }, async () => {
  await cl.ensureAllUp() // whatever an earlier scenario left behind
  await settled()
  const target = cl.relays[2]
  const fleet = new Fleet({ relay: { host: target.ip, port: 7000 }, ca: cl.keys.ca, servername: target.ip, jwtKeyFile: cl.keys.jwtKey, n: 2000 })
  try {
    fleet.start()
    assert.ok(await fleet.allUp(90000), `expected 2000 agents up, ${fleet.nup} are (errors ${show(fleet.errorCounts())})`)
    cl.signal(target, 'SIGKILL')
    await h.sleep(500)
    const t0 = Date.now()
    await cl.restart(target)
    const pid = cl.pid(target)
    let maxRss = 0; let maxFds = 0; let maxRedisMs = 0
    const watch = setInterval(async () => {
      maxRss = Math.max(maxRss, h.rssKb(pid) || 0)
      maxFds = Math.max(maxFds, h.fdCount(pid) || 0)
      const a = Date.now()
      await cl.redis('PING').catch(() => {})
      maxRedisMs = Math.max(maxRedisMs, Date.now() - a)
    }, 250)
    const ok = await fleet.allUp(120000)
    clearInterval(watch)
    const ms = Date.now() - t0
    assert.ok(ok, `expected all 2000 agents back, ${fleet.nup} are (errors ${show(fleet.errorCounts())})`)
    assert.ok(maxFds < 2000 + 600, `expected the relay's fds bounded near its agents, max ${maxFds}`)
    record('2,000 agents reconnecting at once', { players: 0, dropped: 0, chats: 0, echoesLost: 0, joins: 0, joinsOk: 0, joinsFailedAfterFault: 0, hangs: 0, recoveryMs: ms }, `all back in ${(ms / 1000).toFixed(1)} s; relay max RSS ${(maxRss / 1024).toFixed(0)} MiB, max fds ${maxFds}; Redis PING max ${maxRedisMs} ms; refusals ${show(fleet.errorCounts())}`)
  } finally {
    fleet.stop()
  }
})
