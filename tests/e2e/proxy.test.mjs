// With --proxy-protocol the agent tells the local server who the player really is (PROXY v2).
// haproxy with `accept-proxy` stands in for a server that reads the header and logs the source.
//
//   node --test --test-concurrency=1 tests/e2e/proxy.test.mjs

import { before, after } from 'node:test'
import assert from 'node:assert/strict'
import * as h from './harness.mjs'
import { join } from './mc-client.mjs'

let keys, redis, relay, mc, haproxy

before(h.withLogs('setup', async () => {
  h.requireBinaries()
  keys = await h.makeKeys()
  redis = await h.startRedis()
  relay = await h.startRelay({ redisPort: redis.port, keys })
  mc = await h.startMcServer({ motd: 'DVV proxy-protocol test' })
  haproxy = await h.startHaproxy({ targetPort: mc.port, acceptProxy: true })
}), { timeout: 90000 })

after(h.cleanup)

async function waitForSource (expected, timeoutMs = 5000) {
  const t0 = Date.now()
  while (Date.now() - t0 < timeoutMs) {
    if (haproxy.sources().includes(expected)) return true
    await h.sleep(100)
  }
  return false
}

h.scenario('with --proxy-protocol the local server sees the player\'s address, not the agent\'s', async () => {
  const token = await h.mintToken({ keys, sub: 'user-proxy', tid: 'tunnel-proxy', ttl: 3600 })
  const agent = await h.startAgent({ relayAgentPort: relay.agentPort, token, ca: keys.ca, localPort: haproxy.port, proxyProtocol: true })
  const r = await join({ relayPort: relay.playerPort, hostname: agent.hostname, username: 'proxied', chat: 'who am i', timeoutMs: 15000 })
  assert.equal(r.ok, true, `expected the join through agent -> haproxy(accept-proxy) -> server to work, got ${JSON.stringify(r)}`)
  assert.ok(r.localPort, 'expected to know the client socket\'s local port')
  const expected = `127.0.0.1:${r.localPort}`
  const t0 = Date.now()
  const found = await waitForSource(expected)
  process.stderr.write(`[proxy] join ${r.ms} ms; haproxy logged ${expected} after ${Date.now() - t0} ms more\n`)
  assert.ok(found,
    `expected haproxy to log the player's source ${expected} from the PROXY header; it logged sources ${JSON.stringify(haproxy.sources())}`)
  await h.stopProcess(agent.proc)
})

h.scenario('without --proxy-protocol a player joins the plain server as before', async () => {
  const token = await h.mintToken({ keys, sub: 'user-plain', tid: 'tunnel-plain', ttl: 3600 })
  const agent = await h.startAgent({ relayAgentPort: relay.agentPort, token, ca: keys.ca, localPort: mc.port })
  const r = await join({ relayPort: relay.playerPort, hostname: agent.hostname, username: 'plain', chat: 'no header', timeoutMs: 15000 })
  assert.equal(r.ok, true, `expected the join through an agent without --proxy-protocol to work, got ${JSON.stringify(r)}`)
  const login = await mc.waitForLogin('plain')
  assert.match(login.address, /^127\.0\.0\.1:\d+$/, `expected the server to see a loopback connection from the agent, got ${login.address}`)
  await h.stopProcess(agent.proc)
})

h.scenario('the relay and agents logged no sanitizer reports', async () => {
  const rl = await h.stopProcess(relay.proc)
  assert.ok(!rl.forced, `expected the relay to exit within 3 s of SIGTERM; it had to be killed (${JSON.stringify(rl)})`)
  const reports = h.sanitizerReports()
  assert.deepEqual(reports, [], `expected no sanitizer reports, got:\n${reports.map((x) => `${x.name}: ${x.line}`).join('\n')}`)
})
