// A player reaches a local Minecraft server through the relay and the agent, by hostname.
//
//   node --test --test-concurrency=1 tests/e2e/tunnel.test.mjs

import { before, after } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import * as h from './harness.mjs'
import { join, ping, legacyPing } from './mc-client.mjs'

const MOTD = `DVV e2e world ${crypto.randomBytes(3).toString('hex')}`
const OFFLINE_RE = /offline|unknown|no server|not (online|found|running|available|connected)|isn't (online|running)/i

let keys, redis, relay, mc, token, agent
const unknownHost = () => `nobody-${crypto.randomBytes(4).toString('hex')}.eu.dvv.test`
const show = (r) => JSON.stringify(r)

before(h.withLogs('setup', async () => {
  h.requireBinaries()
  keys = await h.makeKeys()
  redis = await h.startRedis()
  relay = await h.startRelay({ redisPort: redis.port, keys })
  mc = await h.startMcServer({ motd: MOTD })
  token = await h.mintToken({ keys, sub: 'user-tunnel', tid: 'tunnel-1', plan: 'free', ttl: 3600 })
  agent = await h.startAgent({ relayAgentPort: relay.agentPort, token, ca: keys.ca, localPort: mc.port })
}), { timeout: 90000 })

after(h.cleanup)

h.scenario('the agent is given a hostname under the region and base domain', () => {
  assert.match(agent.hostname, /^[a-z0-9]+(-[a-z0-9]+)*\.eu\.dvv\.test$/,
    `expected a hostname like adjective-noun.eu.dvv.test in the tunnel_up event, got ${JSON.stringify(agent.hostname)}`)
})

h.scenario('a player logs in through the tunnel by hostname, reaches play state and gets the chat echo', async () => {
  const r = await join({ relayPort: relay.playerPort, hostname: agent.hostname, username: 'alice', chat: 'hello through dvv', timeoutMs: 15000 })
  assert.equal(r.ok, true, `expected alice to reach play state and get the echo via ${agent.hostname}, got ${show(r)}`)
  assert.equal(r.echoed, 'echo: hello through dvv', `expected the local server's echo, got ${show(r)}`)
  const login = await mc.waitForLogin('alice')
  assert.equal(login.hostname, agent.hostname,
    `expected the local server to see the handshake hostname ${agent.hostname} unchanged, got ${JSON.stringify(login.hostname)}`)
})

h.scenario('a status ping through the tunnel returns the local server\'s own MOTD', async () => {
  const r = await ping({ relayPort: relay.playerPort, hostname: agent.hostname, timeoutMs: 10000 })
  assert.equal(r.ok, true, `expected a status answer via ${agent.hostname}, got ${show(r)}`)
  assert.equal(r.motd, MOTD, `expected the local server's MOTD ${JSON.stringify(MOTD)}, got ${JSON.stringify(r.motd)}`)
  assert.equal(r.version, '1.21.1', `expected the local server's version 1.21.1, got ${JSON.stringify(r.version)}`)
  assert.equal(typeof r.latency, 'number', `expected the pong to come back (latency measured), got ${show(r)}`)
})

h.scenario('a legacy 1.6 server-list ping for an unknown hostname gets the relay\'s offline answer', async () => {
  const name = unknownHost()
  const r = await legacyPing({ port: relay.playerPort, hostname: name, timeoutMs: 5000 })
  assert.equal(r.ok, true, `expected a 0xFF kick answer for ${name}, got ${show(r)}`)
  assert.notEqual(r.motd, MOTD, 'expected the relay\'s own answer, not a tunnelled server\'s MOTD')
  assert.match(r.motd || '', OFFLINE_RE, `expected an offline MOTD for ${name}, got ${JSON.stringify(r.motd)} (full answer ${JSON.stringify(r.text)})`)
  assert.ok(r.ms < 2000, `expected the answer at once, it took ${r.ms} ms`)
})

h.scenario('a status ping to an unknown hostname gets the relay\'s offline status at once', async () => {
  const name = unknownHost()
  const r = await ping({ relayPort: relay.playerPort, hostname: name, timeoutMs: 5000 })
  assert.equal(r.ok, true, `expected a status answer for ${name}, got ${show(r)}`)
  assert.ok(r.ms < 2000, `expected the offline status in under 2 s, it took ${r.ms} ms`)
  assert.match(r.motd, OFFLINE_RE, `expected a MOTD saying the server is offline/unknown, got ${JSON.stringify(r.motd)}`)
})

h.scenario('a status ping from an old 1.8.9 client to an unknown hostname gets the offline status too', async () => {
  const name = unknownHost()
  const r = await ping({ relayPort: relay.playerPort, hostname: name, version: '1.8.9', timeoutMs: 5000 })
  assert.equal(r.ok, true, `expected a status answer for a 1.8.9 client, got ${show(r)}`)
  assert.ok(r.ms < 2000, `expected the offline status in under 2 s, it took ${r.ms} ms`)
  assert.match(r.motd, OFFLINE_RE, `expected a MOTD saying the server is offline/unknown, got ${JSON.stringify(r.motd)}`)
})

h.scenario('a login to an unknown hostname is kicked with a readable reason, not left hanging', async () => {
  const name = unknownHost()
  const r = await join({ relayPort: relay.playerPort, hostname: name, username: 'lost', timeoutMs: 5000 })
  assert.equal(r.ok, false, `expected the login to ${name} to be refused, got ${show(r)}`)
  assert.equal(typeof r.kicked, 'string', `expected a disconnect packet with a reason, got ${show(r)}`)
  assert.match(r.kicked, /[a-z]{3,}/i, `expected a human-readable reason, got ${JSON.stringify(r.kicked)}`)
  assert.doesNotMatch(r.kicked, /[\u0000-\u0008\u000e-\u001f]/, `expected printable text, got ${JSON.stringify(r.kicked)}`)
  assert.ok(r.ms < 3000, `expected the kick at once, it took ${r.ms} ms`)
})

h.scenario('the hostname in uppercase and with a trailing dot still joins', async () => {
  const variants = [agent.hostname.toUpperCase(), agent.hostname + '.', agent.hostname.toUpperCase() + '.']
  for (const [i, name] of variants.entries()) {
    const r = await join({ relayPort: relay.playerPort, hostname: name, username: `variant${i}`, chat: `v${i}`, timeoutMs: 15000 })
    assert.equal(r.ok, true, `expected ${JSON.stringify(name)} to reach the same server, got ${show(r)}`)
  }
})

h.scenario('50 players join concurrently and all reach play state', async () => {
  const N = 50
  const results = await Promise.all(Array.from({ length: N }, (_, i) =>
    join({ relayPort: relay.playerPort, hostname: agent.hostname, username: `crowd${i}`, timeoutMs: 60000 })))
  const failed = results.map((r, i) => ({ i, ...r })).filter((r) => !r.ok)
  const ms = results.map((r) => r.ms).sort((a, b) => a - b)
  assert.equal(failed.length, 0,
    `expected all ${N} to reach play state; ${failed.length} failed, e.g. ${failed.slice(0, 5).map(show).join('; ')}`)
  // The server writes the play packets before it prints its login event, so a client can be in
  // play state a moment before the harness has read that line from the server's stdout pipe.
  const logged = await Promise.all(results.map((_, i) =>
    mc.waitForLogin(`crowd${i}`, 5000).then(() => null, () => `crowd${i}`)))
  const missing = logged.filter((u) => u !== null)
  assert.equal(missing.length, 0, `expected the local server to log in all ${N}; missing ${missing.join(', ')}`)
  process.stderr.write(`[tunnel] 50 concurrent joins: median ${ms[N >> 1]} ms, max ${ms[N - 1]} ms\n`)
})

h.scenario('after kill -9 of the agent, the same token brings the same hostname back and players join again', async () => {
  const previous = agent.hostname
  await h.kill9(agent.proc)
  agent = await h.startAgent({ relayAgentPort: relay.agentPort, token, ca: keys.ca, localPort: mc.port, upTimeoutMs: 30000 })
  assert.equal(agent.hostname, previous, `expected the restarted agent to get ${previous} back, got ${agent.hostname}`)
  const r = await join({ relayPort: relay.playerPort, hostname: agent.hostname, username: 'returning', chat: 'back again', timeoutMs: 15000 })
  assert.equal(r.ok, true, `expected a player to join through the restarted agent, got ${show(r)}`)
})

h.scenario('after Redis forgets its scripts (SCRIPT FLUSH) a second tunnel registers and players join, with no Redis error', async () => {
  const errors0 = await relay.metric('dvv_relay_redis_errors_total')
  const loads0 = await relay.metric('dvv_relay_redis_script_loads_total')
  const flushed = await h.tcpRoundTrip(redis.port, 'SCRIPT FLUSH\r\n')
  assert.ok(flushed && flushed.startsWith('+OK'), `SCRIPT FLUSH answered ${JSON.stringify(flushed)}`)
  const token2 = await h.mintToken({ keys, sub: 'user-tunnel', tid: 'tunnel-2', plan: 'free', ttl: 3600 })
  const agent2 = await h.startAgent({ relayAgentPort: relay.agentPort, token: token2, ca: keys.ca, localPort: mc.port })
  assert.notEqual(agent2.hostname, agent.hostname, 'expected the second tunnel to get its own name')
  const r = await join({ relayPort: relay.playerPort, hostname: agent2.hostname, username: 'scripted', timeoutMs: 15000 })
  assert.equal(r.ok, true, `expected a player to join the tunnel registered after the flush, got ${show(r)}`)
  assert.ok(await relay.metric('dvv_relay_redis_script_loads_total') > loads0,
    'expected the relay to have re-sent a script as EVAL after NOSCRIPT (dvv_relay_redis_script_loads_total unchanged)')
  assert.equal(await relay.metric('dvv_relay_redis_errors_total'), errors0, 'expected no failed Redis command after the flush')
  await h.stopProcess(agent2.proc)
})

h.scenario('the agent and the relay stop on SIGTERM without sanitizer reports', async () => {
  const a = await h.stopProcess(agent.proc)
  const rl = await h.stopProcess(relay.proc)
  assert.ok(!a.forced, `expected the agent to exit within 3 s of SIGTERM; it had to be killed (${show(a)})`)
  assert.ok(!rl.forced, `expected the relay to exit within 3 s of SIGTERM; it had to be killed (${show(rl)})`)
  const reports = h.sanitizerReports()
  assert.deepEqual(reports, [], `expected no sanitizer reports, got:\n${reports.map((r) => `${r.name}: ${r.line}`).join('\n')}`)
  assert.ok(rl.code === 0 || rl.signal === 'SIGTERM', `expected the relay to exit 0 (or by SIGTERM), got ${show(rl)}`)
  assert.ok(a.code === 0 || a.signal === 'SIGTERM', `expected the agent to exit 0 (or by SIGTERM), got ${show(a)}`)
})
