// Admission control above XDP: one network cannot take more than its share of handshakes, and one
// address cannot hold more than a few unfinished handshakes, while players of other sources are
// unaffected. (Every client here is 127.0.0.1, so the limits are set small.)
//
//   node --test --test-concurrency=1 tests/e2e/limits.test.mjs

import { before, after } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import * as h from './harness.mjs'
import { join } from './mc-client.mjs'

const BURST = 3
let keys, redis, relay, mc, agent

before(h.withLogs('setup', async () => {
  h.requireBinaries()
  keys = await h.makeKeys()
  redis = await h.startRedis()
  relay = await h.startRelay({
    redisPort: redis.port,
    keys,
    limits: 'production',
    extraArgs: ['--join-rate-v4', '1', '--join-burst', String(BURST), '--max-pending-per-source', '4',
      '--handshake-timeout-ms', '3000',
      // on SIGTERM its agent has no other relay to move to and keeps serving: the drain ends at
      // its deadline
      '--drain-timeout-s', '1']
  })
  mc = await h.startMcServer({ motd: 'DVV limits test' })
  const token = await h.mintToken({ keys, sub: 'user-limits', tid: 'tunnel-limits', ttl: 3600 })
  agent = await h.startAgent({ relayAgentPort: relay.agentPort, token, ca: keys.ca, localPort: mc.port })
}), { timeout: 90000 })

after(h.cleanup)

function openSilent () {
  return new Promise((resolve) => {
    const s = net.connect(relay.playerPort, '127.0.0.1')
    const t0 = Date.now()
    const st = { sock: s, closedAfterMs: null }
    s.on('connect', () => resolve(st))
    s.on('error', () => {})
    s.on('close', () => { st.closedAfterMs = Date.now() - t0 })
  })
}

h.scenario('a source over its unfinished-handshake cap is shed at once; finishing frees the slots', async () => {
  const held = []
  for (let i = 0; i < 4; i++) held.push(await openSilent())
  const extra = await openSilent()
  await h.sleep(500)
  assert.notEqual(extra.closedAfterMs, null, 'expected the 5th unfinished handshake from one address to be closed at once')
  for (const s of held) {
    assert.equal(s.closedAfterMs, null, 'expected the first 4 unfinished handshakes to stay open until their deadline')
  }
  const shed = await relay.metric('dvv_relay_handshakes_shed_total')
  assert.ok(shed >= 1, `expected dvv_relay_handshakes_shed_total >= 1, got ${shed}`)
  for (const s of held) s.sock.destroy()
  await h.sleep(300)
  // slots are free again: a real join works (this also spends one join token)
  const r = await join({ relayPort: relay.playerPort, hostname: agent.hostname, username: 'after-cap', timeoutMs: 15000 })
  assert.equal(r.ok, true, `expected a join after the held handshakes closed, got ${JSON.stringify(r)}`)
})

h.scenario('over the per-network join rate a player gets a readable refusal, not a hang', async () => {
  await h.sleep(BURST * 1000 + 200) // refill the bucket
  const results = []
  for (let i = 0; i < BURST + 2; i++) {
    // raw handshakes are enough to spend tokens; the last ones must be refused
    results.push(await join({ relayPort: relay.playerPort, hostname: agent.hostname, username: `burst${i}`, timeoutMs: 15000 }))
  }
  const ok = results.filter((r) => r.ok).length
  const refused = results.filter((r) => !r.ok && /too many/i.test(r.kicked || ''))
  assert.ok(ok >= BURST - 1 && ok <= BURST + 1, `expected about ${BURST} joins within the burst, got ${ok}: ${JSON.stringify(results)}`)
  assert.ok(refused.length >= 1, `expected at least one "too many connection attempts" kick, got ${JSON.stringify(results)}`)
  const limited = await relay.metric('dvv_relay_players_rate_limited_total')
  assert.ok(limited >= refused.length, `expected dvv_relay_players_rate_limited_total >= ${refused.length}, got ${limited}`)
})

h.scenario('the relay exits cleanly on SIGTERM with no sanitizer report', async () => {
  const rl = await h.stopProcess(relay.proc)
  assert.ok(!rl.forced && rl.code === 0, `expected the relay to exit 0 within 3 s of SIGTERM, got ${JSON.stringify(rl)}`)
  const reports = h.sanitizerReports()
  assert.deepEqual(reports, [], `expected no sanitizer reports, got:\n${reports.map((r) => `${r.name}: ${r.line}`).join('\n')}`)
})
