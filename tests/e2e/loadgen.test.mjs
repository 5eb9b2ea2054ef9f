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
import crypto from 'node:crypto'
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

// The loadgen follows relays the way the agent does (docs/protocol.md, "Moving a session"): two
// relays of one region on the same Redis, registrations slow enough that the first relay's load
// shows and later agents are placed on the second one (MOVE before WELCOME: they re-dial there
// with placed=true); then, at steady state, the first relay is drained (SIGTERM) and MOVEs every
// agent it holds to the second one, make-before-break. The players dial the second relay, so
// those of tunnels on the first are forwarded to it (relay to relay) and keep playing through it
// while it drains.
// A migration must lose no player: zero errors of any kind, every player up at the end.
h.scenario('loadgen: placement MOVEs and a drained relay\'s make-before-break MOVEs lose no player', async () => {
  // forwarding between the two (--internal-listen, one cluster secret), in a region of their
  // own so that the first scenario's relay is no placement target
  const secret = crypto.randomBytes(24).toString('hex')
  const relay = async (id) => h.startRelay({
    redisPort: redis.port,
    keys,
    instanceId: id,
    region: 'mv',
    env: { DVV_CLUSTER_SECRET: secret },
    extraArgs: ['--internal-listen', `127.0.0.1:${await h.freePort()}`, '--agent-unauth-max', '100000',
      '--agent-tls-rate', '10000', '--agent-reg-rate', '10000', '--drain-timeout-s', '60']
  })
  const ra = await relay('lg-mv-a')
  const rb = await relay('lg-mv-b')
  await h.sleep(2500) // one heartbeat: each relay knows the other as a placement / move target
  const lg = h.spawnProcess('loadgen-move', h.bin('dvv-loadgen'), [
    '--agent-port', String(ra.agentPort), '--player-port', String(rb.playerPort),
    '--ca', keys.ca, '--jwt-key', keys.jwtKey, '--tid-prefix', 'lgmv', '--sub-prefix', 'lgmvu',
    '--tunnels', String(TUNNELS), '--players', String(PLAYERS),
    '--reg-rate', '4', '--join-rate', '500', '--hold', '10', '--settle', '1',
    '--interval-ms', '250', '--duration', '80'
  ])
  const progress = () => fs.existsSync(lg.stderrLog) ? fs.readFileSync(lg.stderrLog, 'utf8') : ''
  for (let i = 0; !progress().includes('phase=steady'); i++) {
    assert.ok(i < 600 && !lg.exited, `loadgen reached no steady state:\n${progress()}`)
    await h.sleep(100)
  }
  process.kill(ra.pid, 'SIGTERM')
  const { code } = await lg.exitPromise
  // the log stream may still be writing the summary when the exit is seen
  for (let i = 0; i < 50 && !/}\s*$/.test(fs.readFileSync(lg.stdoutLog, 'utf8')); i++) await h.sleep(100)
  const out = fs.readFileSync(lg.stdoutLog, 'utf8')
  let r
  try { r = JSON.parse(out) } catch { assert.fail(`loadgen printed no JSON summary (exit ${code}):\n${out}`) }
  assert.deepEqual(Object.entries(r.errors).filter(([, v]) => v !== 0), [],
    `loadgen errors: ${JSON.stringify(r.errors)}`)
  assert.ok(r.moves > 0, `some agents were placed on the second relay: ${out}`)
  assert.ok(r.migrations > 0, `the drained relay moved its agents: ${out}`)
  assert.equal(r.migrated, r.migrations, 'every migration completed (new WELCOME, GOODBYE moved)')
  assert.equal(r.tunnels_up, TUNNELS, 'every tunnel up at the end')
  assert.equal(r.players_up, PLAYERS, 'every player joined and still up at the end')
  assert.ok(r.join_latency_steady.n > 0, 'players left and joined again during and after the moves')
  assert.equal(code, 0, `loadgen exit status ${code}`)
  assert.deepEqual(h.sanitizerReports([lg]), [])
}, { timeout: 120000 })
