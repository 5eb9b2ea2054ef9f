// Lifecycle under failure, relay side: scale-down drain, admission control on the agent port,
// registration rate, and the renewal of pooled data connections by age.
//
// - drain: SIGTERM makes /readyz 503 at once, the agent moves to the region's other relay
//   (make-before-break: the old session serves until the new one is up), the player who plays
//   through the drained relay keeps chatting, the relay exits 0 ("exiting with status 0") once
//   the player leaves, and none of its Redis entries is left (alive key, info hash, load-set
//   member, agents-hash field, route lease).
// - an unauthenticated connection flood is counted apart (dvv_relay_agent_unauth_connections):
//   it neither fills --max-tunnels nor shows in the load published in Redis; a real agent still
//   registers.
// - the per-source cap on unauthenticated connections closes the ones over it at once.
// - the registration rate answers ERROR busy with a retry_after; the agent retries and gets in.
// - idle pooled data connections older than --pool-max-age-s are replaced; joins still work.

import { before, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import net from 'node:net'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import * as h from './harness.mjs'
import { join, stayingPlayer } from './mc-client.mjs'

const exec = promisify(execFile)
const show = (x) => JSON.stringify(x)

let redis, keys, mcs

before(h.withLogs('setup', async () => {
  h.requireBinaries()
  redis = await h.startRedis()
  keys = await h.makeKeys()
  mcs = await h.startMcServer({ motd: 'lifecycle e2e' })
}), { timeout: 60000 })

after(h.cleanup)

async function rcli (...args) {
  const { stdout } = await exec('redis-cli', ['-p', String(redis.port), '--raw', ...args])
  return stdout.trim()
}

async function until (pred, what, timeoutMs = 10000) {
  const t0 = Date.now()
  for (;;) {
    const v = await pred()
    if (v) return v
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await h.sleep(100)
  }
}

const waitEvent = (agent, name, opts) => agent.waitForEvent(name, opts)

// Raw TCP connections to the agent port that never say anything; resolves with the sockets
// and tracks which the relay closed.
async function silentConns (port, n) {
  const socks = []
  for (let i = 0; i < n; i++) {
    const s = net.connect(port, '127.0.0.1')
    s.closedByPeer = false
    s.on('error', () => {})
    s.on('close', () => { s.closedByPeer = true })
    await new Promise((resolve) => { s.once('connect', resolve); s.once('close', resolve) })
    socks.push(s)
  }
  return socks
}


h.scenario('drain: readyz 503 at once, the agent moves before its old session closes, the player keeps playing, exit 0, no Redis entry left', async () => {
  const token = await h.mintToken({ keys, sub: 'user-lc', tid: 'tunnel-lc-drain', ttl: 3600 })
  const relayA = await h.startRelay({ redisPort: redis.port, keys, instanceId: 'lc-a', extraArgs: ['--heartbeat-ms', '500', '--drain-timeout-s', '60'] })
  const agent = await h.startAgent({ relayAgentPort: relayA.agentPort, token, ca: keys.ca, localPort: mcs.port })
  const relayB = await h.startRelay({ redisPort: redis.port, keys, instanceId: 'lc-b', extraArgs: ['--heartbeat-ms', '500'] })
  // B is an active relay of the region: A learns it with its next heartbeat
  await until(async () => (await rcli('HGET', 'dvv:{eu}:agents', 'lc-b')) !== '', 'lc-b in the agents hash')
  await h.sleep(1200)

  const p = await stayingPlayer({ relayPort: relayA.playerPort, hostname: agent.hostname, username: 'stayer' })
  assert.equal(await p.chat('before'), true, 'expected the chat echo through relay A before the drain')

  const n0 = agent.proc.events.length
  process.kill(relayA.pid, 'SIGTERM')
  await until(async () => (await h.httpGet(relayA.adminPort, '/readyz')).status === 503, 'readyz 503 on the draining relay', 2000)
  const up = await waitEvent(agent, 'tunnel_up', { since: n0, timeoutMs: 20000 })
  assert.equal(up.relay, `127.0.0.1:${relayB.agentPort}`, `expected the agent on relay B, got ${show(up)}`)
  const evs = agent.proc.events.slice(n0)
  const mig = evs.find((e) => e.event === 'migrating')
  assert.ok(mig, `expected a migrating event (MOVE, not a dropped session), got ${show(evs)}`)
  // make-before-break: no tunnel_down before the new session came up
  const downIdx = evs.findIndex((e) => e.event === 'tunnel_down')
  assert.ok(downIdx < 0 || downIdx > evs.indexOf(up), `the old session went down before the new one was up: ${show(evs)}`)

  for (const msg of ['during', 'after']) {
    assert.equal(await p.chat(msg), true, `expected the echo of '${msg}' through the draining relay (ended: ${p.ended})`)
  }
  assert.equal(relayA.proc.exited, false, 'relay A should wait for its player while draining')
  const res = await join({ relayPort: relayB.playerPort, hostname: agent.hostname, username: 'newcomer', chat: 'hi', timeoutMs: 15000 })
  assert.equal(res.ok, true, `expected a join through relay B, got ${show(res)}`)

  p.end()
  const ex = await Promise.race([relayA.proc.exitPromise, h.sleep(15000).then(() => null)])
  assert.ok(ex, 'relay A did not exit after its last player left')
  assert.equal(ex.code, 0, `expected exit 0 after the drain, got ${show(ex)}`)
  const log = fs.readFileSync(relayA.proc.stderrLog, 'utf8')
  assert.match(log, /exiting with status 0/)

  // every Redis entry of lc-a is gone; the name's lease is B's
  assert.equal(await rcli('EXISTS', 'dvv:{eu}:alive:lc-a', 'dvv:{eu}:info:lc-a'), '0')
  assert.equal(await rcli('ZSCORE', 'dvv:{eu}:load', 'lc-a'), '')
  assert.equal(await rcli('HEXISTS', 'dvv:{eu}:agents', 'lc-a'), '0')
  const route = await rcli('GET', `dvv:{${agent.hostname}}:route`)
  assert.match(route, /^lc-b /, `expected the route lease held by lc-b, got '${route}'`)

  await h.stopProcess(agent.proc)
  await h.stopProcess(relayB.proc)
})

h.scenario('drain without another relay: GOODBYE draining keeps the session until the agent leaves; exit 0 at the deadline', async () => {
  const token = await h.mintToken({ keys, sub: 'user-lc', tid: 'tunnel-lc-alone', ttl: 3600 })
  const relay = await h.startRelay({ redisPort: redis.port, keys, instanceId: 'lc-alone', region: 'lonely', extraArgs: ['--drain-timeout-s', '3'] })
  const agent = await h.startAgent({ relayAgentPort: relay.agentPort, token, ca: keys.ca, localPort: mcs.port })
  process.kill(relay.pid, 'SIGTERM')
  const ex = await Promise.race([relay.proc.exitPromise, h.sleep(10000).then(() => null)])
  assert.ok(ex, 'the relay did not exit at its drain deadline')
  assert.equal(ex.code, 0)
  assert.match(fs.readFileSync(relay.proc.stderrLog, 'utf8'), /exiting with status 0/)
  assert.equal(await rcli('EXISTS', 'dvv:{lonely}:alive:lc-alone', 'dvv:{lonely}:info:lc-alone'), '0')
  assert.equal(await rcli('EXISTS', `dvv:{${agent.hostname}}:route`), '0', 'the lease should be released at exit')
  await h.stopProcess(agent.proc)
})

h.scenario('an unauthenticated flood is not counted as tunnels: no "full", no load in Redis, a real agent registers', async () => {
  const token = await h.mintToken({ keys, sub: 'user-lc', tid: 'tunnel-lc-flood', ttl: 3600 })
  const relay = await h.startRelay({
    redisPort: redis.port, keys, instanceId: 'lc-flood', region: 'flood',
    extraArgs: ['--max-tunnels', '2', '--agent-unauth-per-source', '1000', '--heartbeat-ms', '500']
  })
  const socks = await silentConns(relay.agentPort, 40)
  await until(async () => (await relay.metric('dvv_relay_agent_unauth_connections')) === 40, '40 unauthenticated connections counted')
  await h.sleep(1200) // a heartbeat or two
  assert.equal(await rcli('HGET', 'dvv:{flood}:info:lc-flood', 'tunnels'), '0', 'unauthenticated connections must not show as tunnels')
  assert.equal(Number(await rcli('ZSCORE', 'dvv:{flood}:load', 'lc-flood')), 0, 'nor weigh in the load score')
  const agent = await h.startAgent({ relayAgentPort: relay.agentPort, token, ca: keys.ca, localPort: mcs.port })
  assert.ok(agent.hostname)
  await until(async () => (await rcli('HGET', 'dvv:{flood}:info:lc-flood', 'tunnels')) === '1', 'one tunnel in the published info')
  assert.equal(await relay.metric('dvv_relay_agent_unauth_connections'), 40)
  for (const s of socks) s.destroy()
  await until(async () => (await relay.metric('dvv_relay_agent_unauth_connections')) === 0, 'the unauth gauge back to 0')
  await h.stopProcess(agent.proc)
  await h.stopProcess(relay.proc)
})

h.scenario('unauthenticated connections: per-source cap closes the excess at once, the auth timeout the rest', async () => {
  const relay = await h.startRelay({
    redisPort: redis.port, keys, instanceId: 'lc-cap', region: 'cap',
    extraArgs: ['--agent-unauth-per-source', '4', '--ctl-auth-timeout-ms', '1500']
  })
  const socks = await silentConns(relay.agentPort, 10)
  await until(async () => socks.filter((s) => s.closedByPeer).length === 6, '6 connections over the cap closed', 3000)
  assert.equal(await relay.metric('dvv_relay_agent_unauth_connections'), 4)
  const body = await relay.metrics()
  assert.match(body, /dvv_relay_agent_refused_total\{reason="unauth_source"\} 6/)
  // the 4 admitted ones time out
  await until(() => socks.every((s) => s.closedByPeer), 'the auth timeout closing the rest', 5000)
  assert.equal(await relay.metric('dvv_relay_agent_unauth_connections'), 0)
  // the source may connect again
  const more = await silentConns(relay.agentPort, 2)
  await h.sleep(200)
  assert.equal(more.filter((s) => s.closedByPeer).length, 0)
  for (const s of more) s.destroy()
  await h.stopProcess(relay.proc)
})

h.scenario('registration rate: over it, ERROR busy with retry_after; the agent retries and gets in', async () => {
  const relay = await h.startRelay({
    redisPort: redis.port, keys, instanceId: 'lc-rate', region: 'rate',
    extraArgs: ['--agent-reg-rate', '1']
  })
  const tokens = await Promise.all([1, 2, 3].map((i) => h.mintToken({ keys, sub: `user-rate-${i}`, tid: `tunnel-rate-${i}`, ttl: 3600 })))
  const agents = await Promise.all(tokens.map((token) =>
    h.startAgent({ relayAgentPort: relay.agentPort, token, ca: keys.ca, localPort: mcs.port, upTimeoutMs: 30000 })))
  const busy = agents.flatMap((a) => a.proc.events.filter((e) => e.event === 'error' && e.code === 'busy'))
  assert.ok(busy.length >= 1, `expected at least one ERROR busy, got ${show(agents.map((a) => a.proc.events))}`)
  const waits = agents.flatMap((a) => a.proc.events.filter((e) => e.event === 'reconnecting'))
  assert.ok(waits.some((e) => e.in_ms >= 1000), `expected a retry after >= 1 s (retry_after), got ${show(waits)}`)
  assert.ok(await relay.metric('dvv_relay_agent_refused_total') >= 1)
  assert.match(await relay.metrics(), /dvv_relay_agent_refused_total\{reason="reg_rate"\} [1-9]/)
  for (const a of agents) await h.stopProcess(a.proc)
  await h.stopProcess(relay.proc)
})

h.scenario('pooled data connections older than --pool-max-age-s are replaced, and joins still work', async () => {
  const token = await h.mintToken({ keys, sub: 'user-lc', tid: 'tunnel-lc-pool', ttl: 3600 })
  const relay = await h.startRelay({
    redisPort: redis.port, keys, instanceId: 'lc-pool', region: 'pool',
    extraArgs: ['--pool-max-age-s', '5', '--pool-min', '3']
  })
  const agent = await h.startAgent({ relayAgentPort: relay.agentPort, token, ca: keys.ca, localPort: mcs.port })
  await until(async () => (await relay.metric('dvv_relay_data_conns_idle')) === 3, 'a pool of 3')
  assert.equal(await relay.metric('dvv_relay_data_conns_retired_total'), 0)
  await until(async () => (await relay.metric('dvv_relay_data_conns_retired_total')) >= 3, 'the first pool retired', 12000)
  await until(async () => (await relay.metric('dvv_relay_data_conns_idle')) === 3, 'the pool refilled')
  const res = await join({ relayPort: relay.playerPort, hostname: agent.hostname, username: 'pooled', chat: 'hello', timeoutMs: 10000 })
  assert.equal(res.ok, true, `expected a join after the pool was renewed, got ${show(res)}`)
  await h.stopProcess(agent.proc)
  await h.stopProcess(relay.proc)
})
