// The relay answers for a tunnel that is offline from the status its agent last sent (CTL_STATUS,
// sanitized and cached in Redis): a status ping gets the server's MOTD and favicon marked
// "offline - back soon", a legacy ping the same in one line, a login a clear "reconnecting" kick,
// all at once; when the agent comes back, players join again.
//
//   node --test --test-concurrency=1 tests/e2e/offline.test.mjs

import { before, after } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import * as h from './harness.mjs'
import { join, ping, legacyPing } from './mc-client.mjs'
import { startServer } from './mc-server.mjs'

const MOTD = `Offline e2e world ${crypto.randomBytes(3).toString('hex')}`
// ~20 KiB: the cached answer is bigger than one default socket send buffer
const FAVICON = 'data:image/png;base64,' + crypto.randomBytes(15000).toString('base64')
const RECONNECTING = 'The server is reconnecting. Try again in a few seconds.'

let keys, redis, relay, mc, token, agent, hostname
const show = (r) => JSON.stringify(r && { ...r, raw: undefined })

before(h.withLogs('setup', async () => {
  h.requireBinaries()
  keys = await h.makeKeys()
  redis = await h.startRedis()
  relay = await h.startRelay({ redisPort: redis.port, keys })
  // in this process, so that its status can carry a favicon
  mc = await startServer({ port: 0, motd: MOTD, log: () => {} })
  mc.server.favicon = FAVICON
  token = await h.mintToken({ keys, sub: 'user-offline', tid: 'tunnel-offline', plan: 'free', ttl: 3600 })
  agent = await h.startAgent({ relayAgentPort: relay.agentPort, token, ca: keys.ca, localPort: mc.port })
  hostname = agent.hostname
}), { timeout: 90000 })

after(async () => {
  await h.cleanup()
  await mc?.close()
})

h.scenario('the agent\'s status reaches the relay and is stored', async () => {
  const deadline = Date.now() + 15000
  while (await relay.metric('dvv_relay_status_stored_total') < 1) {
    assert.ok(Date.now() < deadline, 'expected dvv_relay_status_stored_total >= 1 within 15 s of tunnel_up')
    await h.sleep(200)
  }
  const r = await ping({ relayPort: relay.playerPort, hostname, timeoutMs: 10000 })
  assert.equal(r.ok, true, `expected a status answer through the live tunnel, got ${show(r)}`)
  assert.equal(r.motd, MOTD, `expected the live server's own MOTD, got ${JSON.stringify(r.motd)}`)
})

h.scenario('with the agent stopped, a status ping answers at once with the cached MOTD and favicon marked offline', async () => {
  await h.stopProcess(agent.proc)
  const r = await ping({ relayPort: relay.playerPort, hostname, timeoutMs: 5000 })
  assert.equal(r.ok, true, `expected a status answer for ${hostname} while its agent is stopped, got ${show(r)}`)
  assert.ok(r.ms < 2000, `expected the answer at once, it took ${r.ms} ms`)
  assert.equal(r.motd, `offline - back soon\n${MOTD}`, `expected the offline mark and the cached MOTD, got ${JSON.stringify(r.motd)}`)
  assert.equal(r.raw.favicon, FAVICON, `expected the cached favicon (${FAVICON.length} chars), got ${String(r.raw.favicon).length} chars`)
  assert.equal(r.version, 'Offline', `expected version name "Offline", got ${JSON.stringify(r.version)}`)
  assert.equal(r.players && r.players.online, 0, `expected 0 players online, got ${JSON.stringify(r.players)}`)
})

h.scenario('a legacy 1.6 ping gets the same answer as a kick', async () => {
  const r = await legacyPing({ port: relay.playerPort, hostname, timeoutMs: 5000 })
  assert.equal(r.ok, true, `expected a 0xFF kick, got ${show(r)}`)
  assert.ok(r.ms < 2000, `expected the answer at once, it took ${r.ms} ms`)
  assert.equal(r.motd, `offline - back soon: ${MOTD}`, `expected the offline mark and the MOTD, got ${JSON.stringify(r.motd)}`)
  assert.equal(r.version, 'Offline', `expected version "Offline", got ${JSON.stringify(r.version)}`)
})

h.scenario('a login gets the reconnecting kick at once', async () => {
  const r = await join({ relayPort: relay.playerPort, hostname, username: 'early', timeoutMs: 5000 })
  assert.equal(r.ok, false, `expected the login to be refused while the agent is stopped, got ${show(r)}`)
  assert.equal(r.kicked, RECONNECTING, `expected ${JSON.stringify(RECONNECTING)}, got ${show(r)}`)
  assert.ok(r.ms < 3000, `expected the kick at once, it took ${r.ms} ms`)
})

h.scenario('a name nobody holds still gets the plain offline answer', async () => {
  const name = `nobody-${crypto.randomBytes(4).toString('hex')}.eu.dvv.test`
  const r = await join({ relayPort: relay.playerPort, hostname: name, username: 'lost', timeoutMs: 5000 })
  assert.equal(r.ok, false)
  assert.notEqual(r.kicked, RECONNECTING, `an unknown name must not be told it is reconnecting: ${show(r)}`)
  assert.match(r.kicked || '', /no server is online/i, `expected the offline kick, got ${show(r)}`)
})

h.scenario('after the agent restarts, players join again', async () => {
  agent = await h.startAgent({ relayAgentPort: relay.agentPort, token, ca: keys.ca, localPort: mc.port, upTimeoutMs: 30000 })
  assert.equal(agent.hostname, hostname, `expected the same hostname back, got ${agent.hostname}`)
  const r = await join({ relayPort: relay.playerPort, hostname, username: 'back', chat: 'hi again', timeoutMs: 15000 })
  assert.equal(r.ok, true, `expected a player to join through the restarted agent, got ${show(r)}`)
  const s = await ping({ relayPort: relay.playerPort, hostname, timeoutMs: 10000 })
  assert.equal(s.motd, MOTD, `expected the live MOTD again, got ${JSON.stringify(s.motd)}`)
})

h.scenario('the agent and the relay stop on SIGTERM without sanitizer reports', async () => {
  const a = await h.stopProcess(agent.proc)
  const rl = await h.stopProcess(relay.proc)
  assert.ok(!a.forced, `expected the agent to exit within 3 s of SIGTERM (${show(a)})`)
  assert.ok(!rl.forced, `expected the relay to exit within 3 s of SIGTERM (${show(rl)})`)
  const reports = h.sanitizerReports()
  assert.deepEqual(reports, [], `expected no sanitizer reports, got:\n${reports.map((r) => `${r.name}: ${r.line}`).join('\n')}`)
})
