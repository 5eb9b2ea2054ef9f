// The load generator (bench/loadgen.c, behind bench/levels.sh) kept working: a tiny run of 20
// agents and 100 players against a real relay (this suite's data plane) and a real Redis must end
// with every tunnel registered, every player joined, every message both ways intact and zero
// errors of any kind. The loadgen itself checks the bytes (handshake and Login Start as sent, the
// right tunnel, every message's player, direction, sequence and pattern), so an error here is a
// fault in the relay's path or in the tool; either must be fixed before a level is measured.
//
//   node --test --test-concurrency=1 tests/e2e/loadgen.test.mjs

import { before, after } from 'node:test'
import assert from 'node:assert/strict'
import fs from 'node:fs'
import * as h from './harness.mjs'

const TUNNELS = 20
const PLAYERS = 100

let keys, redis, relay

before(h.withLogs('setup', async () => {
  h.requireBinaries(['dvv-relay', 'dvv-loadgen'])
  keys = await h.makeKeys()
  redis = await h.startRedis()
  // every agent dials from this host: the relay-wide agent admission rates are lifted too
  relay = await h.startRelay({
    redisPort: redis.port,
    keys,
    extraArgs: ['--agent-unauth-max', '100000', '--agent-tls-rate', '10000',
      '--agent-reg-rate', '10000', '--drain-timeout-s', '1']
  })
}), { timeout: 60000 })

after(async () => {
  await h.cleanup()
})

h.scenario(`loadgen: ${TUNNELS} tunnels and ${PLAYERS} players, zero errors, every player up`, async () => {
  const lg = h.spawnProcess('loadgen', h.bin('dvv-loadgen'), [
    '--agent-port', String(relay.agentPort), '--player-port', String(relay.playerPort),
    '--ca', keys.ca, '--jwt-key', keys.jwtKey,
    '--tunnels', String(TUNNELS), '--players', String(PLAYERS),
    '--reg-rate', '200', '--join-rate', '500', '--hold', '4', '--settle', '1',
    '--interval-ms', '250', '--duration', '60'
  ])
  const { code } = await lg.exitPromise
  const out = fs.readFileSync(lg.stdoutLog, 'utf8')
  let r
  try { r = JSON.parse(out) } catch { assert.fail(`loadgen printed no JSON summary (exit ${code}):\n${out}`) }
  assert.deepEqual(Object.entries(r.errors).filter(([, v]) => v !== 0), [],
    `loadgen errors: ${JSON.stringify(r.errors)}`)
  assert.equal(r.errors_total, 0)
  assert.equal(r.tunnels_up, TUNNELS, 'every tunnel registered')
  assert.equal(r.players_up, PLAYERS, 'every player joined and still up at the end')
  assert.equal(r.join_latency_ramp.n, PLAYERS, 'one join latency per player')
  assert.ok(r.join_latency_steady.n > 0, 'players left and joined again at steady state')
  // messages flowed both ways: 4/s per player and direction, half the 4 s hold at the least
  // (every message of a pair still up was checked on arrival: errors.lost and errors.corrupt)
  assert.ok(r.msgs_rx >= PLAYERS * 2 * 4 * 2, `messages received: ${r.msgs_rx}`)
  assert.equal(code, 0, `loadgen exit status ${code}`)
  assert.deepEqual(h.sanitizerReports([lg]), [])
}, { timeout: 90000 })
