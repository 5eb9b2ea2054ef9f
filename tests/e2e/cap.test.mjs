// The bandwidth cap with real bytes, on whichever plane DVV_DATAPLANE names (scripts/test.sh
// runs the suite once per plane). The test writes the user's plan hash and control events into
// a real Redis exactly as dvv-api does (docs/redis.md); the bytes are real streams through a
// real relay and agent, the kicks and MOTDs are seen by a real Minecraft client.
//
// Two relays (cap-a, cap-b) share one Redis. The user has two tunnels on cap-a (a raw TCP echo
// of the test's own, and a Minecraft server) and one on cap-b (Minecraft). Bytes through the
// raw tunnel cross the plan's bandwidth_bytes; what must follow:
//  - cap-a: the stream carrying the bytes is cut within about one usage flush, a new login is
//    kicked with the capped text, a status ping gets the capped MOTD, the agent's --json prints
//    a plan event with state "capped", Redis usage bytes >= the cap, a `capped` event is in the
//    control stream;
//  - cap-b (which moved none of those bytes): it learns the cap from the `capped` event, cuts
//    its player, kicks new logins;
//  - a `plan` event with a higher cap (the API's upgrade) lifts it on both within ~2 s.
//
//   DVV_DATAPLANE=userspace node --test --test-concurrency=1 tests/e2e/cap.test.mjs

import { before, after } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { execFileSync } from 'node:child_process'
import * as h from './harness.mjs'
import { handshakeBytes, join, ping, stayingPlayer } from './mc-client.mjs'

const SUB = 'u-cap-real'
const MIB = 1024 * 1024
const CAP = 2 * MIB
const FLUSH_MS = 500

let keys, redis, relayA, relayB, mcs, rawServer, agentRaw, agentMc, agentB

function rcli (...args) {
  return execFileSync('redis-cli', ['-p', String(redis.port), '--raw', ...args.map(String)], { encoding: 'utf8' }).trim()
}

let version = 0
// The plan hash as the API writes it: replaced whole in MULTI, version increasing.
function writePlan (fields) {
  const key = `dvv:user:{${SUB}}:plan`
  const flat = Object.entries({ tier: 'free', max_tunnels: 3, custom_names: 0, idle_timeout_s: 0, bandwidth_bytes: 0, max_players: 0, priority: 0, status: 'active', version: ++version, ...fields }).flat()
  execFileSync('redis-cli', ['-p', String(redis.port)], { input: `MULTI\nDEL ${key}\nHSET ${key} ${flat.join(' ')}\nEXEC\n`, encoding: 'utf8' })
}
const event = (...fv) => rcli('XADD', 'dvv:{ctl}:events', 'MAXLEN', '~', '100000', '*', ...fv)

async function until (pred, what, timeoutMs = 5000) {
  const t0 = Date.now()
  for (;;) {
    const v = await pred()
    if (v) return Date.now() - t0
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await h.sleep(25)
  }
}

function resetDate () {
  const now = new Date()
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1)).toISOString().slice(0, 10)
}

// The user's usage bytes in Redis once the relays' flushes have settled: the same value over
// more than two flush intervals (the relays flush every FLUSH_MS).
async function settledUsage (timeoutMs = 8000) {
  const read = () => Number(rcli('HGET', `dvv:user:{${SUB}}:usage`, 'bytes') || 0)
  const t0 = Date.now()
  let last = read()
  for (;;) {
    await h.sleep(FLUSH_MS * 2 + 250)
    const now = read()
    if (now === last) return now
    if (Date.now() - t0 > timeoutMs) throw new Error(`usage still moving after ${timeoutMs} ms (${last} -> ${now})`)
    last = now
  }
}

const planEvents = (agent, state) => agent.proc.events.filter((e) => e.event === 'plan' && (!state || e.state === state))

before(h.withLogs('setup', async () => {
  h.requireBinaries()
  keys = await h.makeKeys()
  redis = await h.startRedis()
  writePlan({ bandwidth_bytes: CAP })
  const args = ['--usage-flush-ms', String(FLUSH_MS), '--heartbeat-ms', '500']
  relayA = await h.startRelay({ redisPort: redis.port, keys, instanceId: 'cap-a', extraArgs: args })
  mcs = await h.startMcServer({ motd: 'DVV cap test' })
  rawServer = await h.startRawServer()
  const token = (tid) => h.mintToken({ keys, sub: SUB, tid, ttl: 3600 })
  agentRaw = await h.startAgent({ relayAgentPort: relayA.agentPort, token: await token('t-raw'), ca: keys.ca, localPort: rawServer.port })
  agentMc = await h.startAgent({ relayAgentPort: relayA.agentPort, token: await token('t-mc'), ca: keys.ca, localPort: mcs.port })
  // cap-b joins the region after cap-a's tunnels settled: the least loaded, it keeps its own
  relayB = await h.startRelay({ redisPort: redis.port, keys, instanceId: 'cap-b', extraArgs: args })
  await until(() => rcli('HEXISTS', 'dvv:{eu}:agents', 'cap-b') === '1', 'cap-b in the agents hash')
  agentB = await h.startAgent({ relayAgentPort: relayB.agentPort, token: await token('t-b'), ca: keys.ca, localPort: mcs.port })
  const upB = agentB.events.find((e) => e.event === 'tunnel_up')
  assert.equal(upB.relay, `127.0.0.1:${relayB.agentPort}`, `t-b should run on cap-b: ${JSON.stringify(upB)}`)
}), { timeout: 90000 })

after(async () => {
  rawServer?.close()
  await h.cleanup()
})

/**
 * A raw player of t-raw that moves bytes both ways at a steady rate until the relay cuts it.
 * Resolves {crossedAt, cutAt, moved}: when the bytes seen at the far ends first reached the cap
 * (the handshake counts: the relay forwards it), when the player's socket closed, and the total.
 */
async function streamUntilCut ({ chunk = 32 * 1024, everyMs = 20, timeoutMs = 20000 } = {}) {
  const hs = handshakeBytes({ hostname: agentRaw.hostname })
  const serverSide = rawServer.nextPlayer()
  const p = net.connect({ port: relayA.playerPort, host: '127.0.0.1' })
  p.on('error', () => {})
  await new Promise((resolve, reject) => { p.once('connect', resolve); p.once('close', reject) })
  p.write(hs)
  const closed = new Promise((resolve) => p.once('close', () => resolve(null)))
  const s = await Promise.race([serverSide, closed, h.sleep(timeoutMs).then(() => 'timeout')])
  if (!s || s === 'timeout') { // refused at the handshake: the server never saw it
    rawServer.forget()
    p.destroy()
    return { crossedAt: null, cutAt: s ? null : Date.now(), moved: 0, refused: true }
  }
  s.resume()
  let up = 0
  let down = 0
  let crossedAt = null
  const note = () => { if (crossedAt === null && up + down >= CAP) crossedAt = Date.now() }
  s.on('data', (d) => { up += d.length; note() })
  p.on('data', (d) => { down += d.length; note() })
  const buf = Buffer.alloc(chunk, 9)
  const timer = setInterval(() => {
    if (!p.destroyed) p.write(buf)
    if (!s.destroyed) s.write(buf)
  }, everyMs)
  const cutAt = await Promise.race([closed.then(() => Date.now()), h.sleep(timeoutMs).then(() => null)])
  clearInterval(timer)
  s.destroy()
  p.destroy()
  return { crossedAt, cutAt, moved: up + down }
}

h.scenario('before the cap: players join through both relays', async () => {
  const a = await join({ relayPort: relayA.playerPort, hostname: agentMc.hostname, username: 'pre-a' })
  assert.ok(a.ok, `join through cap-a: ${a.error}`)
  const b = await join({ relayPort: relayB.playerPort, hostname: agentB.hostname, username: 'pre-b' })
  assert.ok(b.ok, `join through cap-b: ${b.error}`)
  for (const ag of [agentRaw, agentMc, agentB]) {
    await until(() => planEvents(ag, 'ok').length > 0, 'a plan event (state ok) after WELCOME')
    const pe = planEvents(ag, 'ok')[0]
    assert.equal(pe.tier, 'free')
    assert.equal(pe.bandwidth_bytes, CAP)
  }
})

h.scenario('real bytes cross the cap: the stream is cut within about one flush, logins kicked, MOTD, PLAN capped, usage and capped event in Redis; cap-b caps from the event', async () => {
  // a player that stays on cap-b: it must be cut by the `capped` event alone
  const stayB = await stayingPlayer({ relayPort: relayB.playerPort, hostname: agentB.hostname, username: 'stay-b' })
  assert.ok(await stayB.chat('before'), 'chat through cap-b before the cap')
  const nEvents = Number(rcli('XLEN', 'dvv:{ctl}:events'))
  const before = await settledUsage()

  const r = await streamUntilCut()
  process.stderr.write(`[cap] stream ${JSON.stringify(r)}\n`)
  assert.ok(r.cutAt, `the stream was never cut (moved ${r.moved} bytes, cap ${CAP})`)
  assert.ok(r.crossedAt, `the stream was cut before it reached the cap (${r.moved} of ${CAP} bytes)`)
  const lag = r.cutAt - r.crossedAt
  process.stderr.write(`[cap] ${process.env.DVV_DATAPLANE || 'default'} plane: cap crossed, stream cut ${lag} ms later after ${r.moved} bytes (flush every ${FLUSH_MS} ms)\n`)
  assert.ok(lag <= FLUSH_MS + 1000, `expected the cut within about one flush (${FLUSH_MS} ms) of crossing the cap, took ${lag} ms`)

  // Redis: the period's bytes at or over the cap, and the relay's `capped` event
  const bytes = Number(rcli('HGET', `dvv:user:{${SUB}}:usage`, 'bytes'))
  assert.ok(bytes >= CAP, `usage bytes ${bytes} >= cap ${CAP}`)
  // what the stream added, once counted and flushed: every byte that reached a far end, plus at
  // most what the relay had taken in but could not deliver when it cut the pair (the cut resets
  // both sockets, and the kernel drops what their queues held)
  const added = (await settledUsage()) - before
  process.stderr.write(`[cap] usage added ${added} bytes for ${r.moved} bytes seen at the far ends\n`)
  assert.ok(added >= r.moved, `usage added ${added} bytes, fewer than the ${r.moved} that reached the far ends`)
  assert.ok(added <= r.moved + 256 * 1024, `usage added ${added} bytes, far more than the ${r.moved} that reached the far ends`)
  const evs = rcli('XRANGE', 'dvv:{ctl}:events', '-', '+').split('\n')
  const capped = []
  for (let i = 0; i < evs.length; i++) if (evs[i] === 'type' && evs[i + 1] === 'capped') capped.push(evs.slice(i, i + 4).join(' '))
  assert.ok(Number(rcli('XLEN', 'dvv:{ctl}:events')) > nEvents, 'a new control event')
  assert.ok(capped.some((c) => c.includes(`sub ${SUB}`)), `a capped event for ${SUB}: ${JSON.stringify(capped)}`)

  // cap-a: the agent of the tunnel hears it; logins and pings of the user's other tunnel too
  await until(() => planEvents(agentRaw, 'capped').length && planEvents(agentMc, 'capped').length, 'PLAN capped at both cap-a agents', 3000)
  const pc = planEvents(agentRaw, 'capped')[0]
  assert.ok(pc.used_bytes >= CAP, `PLAN used_bytes ${pc.used_bytes} >= cap`)
  assert.match(pc.message, /used its DVV bandwidth/)
  const kickText = `This server has used its DVV bandwidth for this period (2.0 MiB on the free plan). It resets on ${resetDate()}.`
  const kick = await join({ relayPort: relayA.playerPort, hostname: agentMc.hostname, username: 'post-a' })
  assert.equal(kick.kicked, kickText)
  const st = await ping({ relayPort: relayA.playerPort, hostname: agentMc.hostname })
  assert.ok(st.ok && st.motd.includes(`Bandwidth limit reached - resets ${resetDate()}`), `capped MOTD: ${JSON.stringify(st)}`)
  // a new raw stream is refused at once
  const again = await streamUntilCut({ timeoutMs: 3000 })
  assert.ok(again.refused, `a new stream after the cap never reaches the server (moved ${again.moved})`)

  // cap-b: cut from the event, kicks, agent told
  await until(() => stayB.ended, 'the cap-b player to be cut by the capped event', 2000)
  const kickB = await join({ relayPort: relayB.playerPort, hostname: agentB.hostname, username: 'post-b' })
  assert.equal(kickB.kicked, kickText)
  await until(() => planEvents(agentB, 'capped').length, 'PLAN capped at the cap-b agent', 2000)
  assert.ok(await relayB.metric('dvv_relay_tunnels_capped') >= 1)
})

h.scenario('an upgrade (plan hash + plan event) lifts the cap on both relays within 2 s', async () => {
  writePlan({ tier: 'paid', bandwidth_bytes: 512 * MIB, priority: 1, custom_names: 1 })
  const t0 = Date.now()
  event('type', 'plan', 'sub', SUB)
  let last = null
  await until(async () => { last = await join({ relayPort: relayA.playerPort, hostname: agentMc.hostname, username: 'up-a', timeoutMs: 3000 }); return last.ok }, 'a join through cap-a after the upgrade', 4000)
  const msA = Date.now() - t0
  assert.ok(msA < 2000, `lifted on cap-a ${msA} ms after the plan event (last: ${JSON.stringify(last)})`)
  await until(async () => { last = await join({ relayPort: relayB.playerPort, hostname: agentB.hostname, username: 'up-b', timeoutMs: 3000 }); return last.ok }, 'a join through cap-b after the upgrade', 4000)
  const msB = Date.now() - t0
  process.stderr.write(`[cap] lifted on cap-a after ${msA} ms, on cap-b after ${msB} ms\n`)
  assert.ok(msB < 2500, `lifted on cap-b ${msB} ms after the plan event (last: ${JSON.stringify(last)})`)
  for (const ag of [agentRaw, agentMc, agentB]) {
    await until(() => ag.proc.events.filter((e) => e.event === 'plan' && e.tier === 'paid' && e.state === 'ok').length, 'PLAN ok on the paid tier', 2000)
  }
  // the gauge of capped tunnels comes back down with the cap
  assert.equal(await relayA.metric('dvv_relay_tunnels_capped'), 0, 'no capped tunnel left on cap-a')
  assert.equal(await relayB.metric('dvv_relay_tunnels_capped'), 0, 'no capped tunnel left on cap-b')
  // and bytes flow again on the raw tunnel, up to the new cap
  const r = await streamUntilCut({ timeoutMs: 1500 })
  assert.equal(r.cutAt, null, `the raw stream runs again after the upgrade (cut after ${r.moved} bytes)`)
  assert.ok(r.moved > MIB, `bytes flowed (${r.moved})`)
})

h.scenario('the relays and agents logged no sanitizer reports', async () => {
  for (const p of [agentRaw, agentMc, agentB, relayA, relayB]) await h.stopProcess(p.proc)
  const reports = h.sanitizerReports()
  assert.deepEqual(reports, [], `sanitizer reports: ${JSON.stringify(reports)}`)
})
