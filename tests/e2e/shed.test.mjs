// Priority under load (docs/operators.md "Plans at the relay"): with a small --capacity and
// --shed-threshold, a priority-0 (free) registration is refused `busy` when the relay has no
// peer, while a priority-1 (paid) one is accepted; over capacity, the relay moves its
// priority-0 tunnels to a peer (make-before-break) and keeps its priority-1 ones. The plans are
// written into a real Redis as dvv-api writes them (docs/redis.md). Runs on both data planes.
//
// Load = 4 per tunnel + 1 per player (the relay's load score); --capacity 10 and
// --shed-threshold 0.5 put the threshold at 5 and the capacity at 10.
//
//   DVV_DATAPLANE=userspace node --test --test-concurrency=1 tests/e2e/shed.test.mjs

import { before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import * as h from './harness.mjs'
import { stayingPlayer } from './mc-client.mjs'

let keys, redis, mcs
const SMALL = ['--capacity', '10', '--shed-threshold', '0.5', '--heartbeat-ms', '500']

function rcli (...args) {
  return execFileSync('redis-cli', ['-p', String(redis.port), '--raw', ...args.map(String)], { encoding: 'utf8' }).trim()
}

let version = 0
function writePlan (sub, fields) {
  const key = `dvv:user:{${sub}}:plan`
  const flat = Object.entries({ tier: 'free', max_tunnels: 5, custom_names: 0, idle_timeout_s: 0, bandwidth_bytes: 0, max_players: 0, priority: 0, status: 'active', version: ++version, ...fields }).flat()
  execFileSync('redis-cli', ['-p', String(redis.port)], { input: `MULTI\nDEL ${key}\nHSET ${key} ${flat.join(' ')}\nEXEC\n`, encoding: 'utf8' })
}

async function until (pred, what, timeoutMs = 5000) {
  const t0 = Date.now()
  for (;;) {
    if (await pred()) return Date.now() - t0
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await h.sleep(50)
  }
}

async function agent (relay, sub, tid, opts = {}) {
  const token = await h.mintToken({ keys, sub, tid, ttl: 3600 })
  return h.startAgent({ relayAgentPort: relay.agentPort, token, ca: keys.ca, localPort: mcs.port, ...opts })
}

const upsOf = (a) => a.proc.events.filter((e) => e.event === 'tunnel_up')

before(h.withLogs('setup', async () => {
  h.requireBinaries()
  keys = await h.makeKeys()
  redis = await h.startRedis()
  mcs = await h.startMcServer({ motd: 'DVV shed test' })
  writePlan('u-free', { tier: 'free', priority: 0 })
  writePlan('u-paid', { tier: 'paid', priority: 1, custom_names: 1 })
}), { timeout: 90000 })

after(h.cleanup)

/** An agent whose handle comes back at once (it may be refused first); --json events. */
async function agentNoWait (relay, sub, tid) {
  const token = await h.mintToken({ keys, sub, tid, ttl: 3600 })
  return h.startAgent({ relayAgentPort: relay.agentPort, token, ca: keys.ca, localPort: mcs.port, json: false, extraArgs: ['--json'] })
}

async function labelled (relay, name, reason) {
  const body = await relay.metrics()
  const m = new RegExp(`^dvv_relay_${name}\\{reason="${reason}"\\} (\\S+)$`, 'm').exec(body)
  return m ? Number(m[1]) : null
}

h.scenario('at the shed threshold without a peer: priority 0 is refused busy, priority 1 is accepted; priority 0 gets in once there is room', async () => {
  const relay = await h.startRelay({ redisPort: redis.port, keys, instanceId: 'shed-alone', region: 'alone', extraArgs: SMALL })
  const paid1 = await agent(relay, 'u-paid', 't-alone-p1') // load 4: under the threshold
  // a free registration would make the load 8 >= 5: refused busy, the agent keeps retrying
  const free = await agentNoWait(relay, 'u-free', 't-alone-p0')
  const busy = await free.waitForEvent('error', { timeoutMs: 5000 })
  assert.equal(busy.code, 'busy', `expected ERROR busy, got ${JSON.stringify(busy)}`)
  assert.match(busy.message, /keeps its room for priority plans/)
  assert.ok(await labelled(relay, 'agent_refused_total', 'shed') >= 1, 'agent_refused_total{reason="shed"} counts it')
  assert.equal(upsOf(free).length, 0, 'the free tunnel is not up')
  // a paid registration at the same load is accepted (load 8 < capacity 10)
  const paid2 = await agent(relay, 'u-paid', 't-alone-p1b')
  assert.ok(paid2.hostname)
  assert.equal(upsOf(free).length, 0, 'the free tunnel is still not up')
  // room again: the paid tunnels go, the free agent's next retry registers
  await h.stopProcess(paid1.proc)
  await h.stopProcess(paid2.proc)
  const up = await free.waitForEvent('tunnel_up', { timeoutMs: 15000 })
  assert.equal(up.relay, `127.0.0.1:${relay.agentPort}`)
  for (const p of [free, relay]) await h.stopProcess(p.proc)
})

h.scenario('over capacity with a peer: the priority-0 tunnel is moved away (make-before-break), the priority-1 ones stay; a new priority-0 registration lands on the peer', async () => {
  const a = await h.startRelay({ redisPort: redis.port, keys, instanceId: 'shed-a', region: 'two', extraArgs: SMALL })
  // alone, A takes a free tunnel (load 4) and a paid one (load 8)
  const free = await agent(a, 'u-free', 't-two-p0')
  const paid = await agent(a, 'u-paid', 't-two-p1')
  const b = await h.startRelay({ redisPort: redis.port, keys, instanceId: 'shed-b', region: 'two', extraArgs: ['--heartbeat-ms', '500'] })
  await until(() => rcli('HEXISTS', 'dvv:{two}:agents', 'shed-b') === '1', 'shed-b in the agents hash')
  await h.sleep(1200) // a heartbeat: A knows B as a peer
  assert.equal(upsOf(free).length, 1, 'no move while under capacity')
  // three players on the paid tunnel: load 8 + 3 = 11 > capacity 10
  const n0 = free.proc.events.length
  const players = []
  for (let i = 0; i < 3; i++) players.push(await stayingPlayer({ relayPort: a.playerPort, hostname: paid.hostname, username: `load${i}` }))
  const up = await free.waitForEvent('tunnel_up', { since: n0, timeoutMs: 8000 })
  assert.equal(up.relay, `127.0.0.1:${b.agentPort}`, `the free tunnel moved to B: ${JSON.stringify(up)}`)
  const evs = free.proc.events.slice(n0)
  assert.ok(evs.some((e) => e.event === 'migrating'), `a make-before-break migration: ${JSON.stringify(evs)}`)
  const downIdx = evs.findIndex((e) => e.event === 'tunnel_down')
  assert.ok(downIdx < 0 || downIdx > evs.indexOf(up), `the old session went down before the new one was up: ${JSON.stringify(evs)}`)
  assert.ok(await labelled(a, 'plan_closed_total', 'shed') >= 1, 'plan_closed_total{reason="shed"} counts the move')
  // the paid tunnel and its players stayed on A
  assert.equal(upsOf(paid).length, 1, 'the paid tunnel was not moved')
  for (const [i, p] of players.entries()) assert.ok(await p.chat(`still-${i}`), `player ${i} of the paid tunnel still plays`)
  assert.match(rcli('GET', `dvv:{${up.hostname}}:route`), /^shed-b /, 'the free name routes to B')
  assert.match(rcli('GET', `dvv:{${paid.hostname}}:route`), /^shed-a /, 'the paid name routes to A')
  // a new free registration dialling A ends on B
  const free2 = await agent(a, 'u-free', 't-two-p0b')
  const up2 = upsOf(free2).at(-1)
  assert.equal(up2.relay, `127.0.0.1:${b.agentPort}`, `the new free tunnel registered on B: ${JSON.stringify(free2.proc.events)}`)
  for (const p of players) p.end()
  for (const p of [free, free2, paid, a, b]) await h.stopProcess(p.proc)
})

h.scenario('both relays at the threshold: a priority-0 registration moved once is refused busy there, never moved back', async () => {
  const a = await h.startRelay({ redisPort: redis.port, keys, instanceId: 'full-a', region: 'full', extraArgs: SMALL })
  const b = await h.startRelay({ redisPort: redis.port, keys, instanceId: 'full-b', region: 'full', extraArgs: SMALL })
  await until(() => rcli('HLEN', 'dvv:{full}:agents') === '2', 'both relays in the agents hash')
  await h.sleep(1200) // a heartbeat: each knows the other as a peer
  const pa = await agent(a, 'u-paid', 't-full-a')
  const pb = await agent(b, 'u-paid', 't-full-b')
  assert.equal(upsOf(pb).at(-1).relay, `127.0.0.1:${b.agentPort}`, 'one paid tunnel on each relay')
  const free = await agentNoWait(a, 'u-free', 't-full-p0')
  const busy = await free.waitForEvent('error', { timeoutMs: 5000 })
  assert.equal(busy.code, 'busy', `expected ERROR busy, got ${JSON.stringify(busy)}`)
  await h.sleep(1000)
  const moves = free.proc.events.filter((e) => e.event === 'connecting').length
  assert.ok(moves <= 3, `the free agent dialled ${moves} times in a second: moved back and forth (${JSON.stringify(free.proc.events)})`)
  assert.equal(upsOf(free).length, 0)
  for (const p of [free, pa, pb, a, b]) await h.stopProcess(p.proc)
})

h.scenario('the relays and agents logged no sanitizer reports', async () => {
  const reports = h.sanitizerReports()
  assert.deepEqual(reports, [], `sanitizer reports: ${JSON.stringify(reports)}`)
})
