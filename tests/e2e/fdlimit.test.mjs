// Out of file descriptors: the relay runs under a small RLIMIT_NOFILE (prlimit), players open more
// connections than it has descriptors for, and accept4() fails with EMFILE while connections wait
// in the backlog. The level-triggered listeners must then be paused and re-armed by a timer, not
// polled in a loop: CPU stays low, a pair already joined keeps flowing, the failures are counted,
// and once the connections go away players join again.
//
//   node --test --test-concurrency=1 tests/e2e/fdlimit.test.mjs

import { before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import * as h from './harness.mjs'
import { join, ping, handshakeBytes } from './mc-client.mjs'

const FD_LIMIT = 128
const EXTRA = 40 // connections beyond the limit: they wait in the backlog
const MEASURE_MS = 2000
const MAX_CPU_S = 0.4 // of MEASURE_MS; a listener polled in a loop burns all of it
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100

let keys, redis, relay, mc, echo, mcAgent, echoAgent
const held = [] // silent player connections that use up the relay's descriptors

before(h.withLogs('setup', async () => {
  h.requireBinaries()
  keys = await h.makeKeys()
  redis = await h.startRedis()
  relay = await h.startRelay({
    redisPort: redis.port,
    keys,
    wrapper: ['prlimit', `--nofile=${FD_LIMIT}:${FD_LIMIT}`, '--'],
    // the held connections must stay open through the measurement; on SIGTERM its agents have
    // no other relay to move to and keep serving: the drain ends at its deadline
    extraArgs: ['--handshake-timeout-ms', '60000', '--drain-timeout-s', '1']
  })
  mc = await h.startMcServer({ motd: 'DVV fd limit test' })
  echo = net.createServer((c) => c.pipe(c))
  await new Promise((resolve) => echo.listen(0, '127.0.0.1', resolve))
  const t1 = await h.mintToken({ keys, sub: 'user-fd', tid: 'tunnel-fd-mc', ttl: 3600 })
  mcAgent = await h.startAgent({ relayAgentPort: relay.agentPort, token: t1, ca: keys.ca, localPort: mc.port })
  const t2 = await h.mintToken({ keys, sub: 'user-fd', tid: 'tunnel-fd-echo', ttl: 3600 })
  echoAgent = await h.startAgent({ relayAgentPort: relay.agentPort, token: t2, ca: keys.ca, localPort: echo.address().port })
}), { timeout: 90000 })

after(async () => {
  for (const s of held) s.destroy()
  if (echo) echo.close()
  await h.cleanup()
})

/** utime + stime of a process (all threads), in seconds. */
function cpuSeconds (pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(f[11]) + Number(f[12])) / CLK_TCK // fields 14 and 15 of proc(5)
}

function relayLog () {
  try { return fs.readFileSync(relay.proc.stderrLog, 'utf8') } catch { return '' }
}

async function waitFor (what, fn, timeoutMs = 10000) {
  const t0 = Date.now()
  for (;;) {
    const v = await fn()
    if (v) return v
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await h.sleep(100)
  }
}

/** A player connection through the echo tunnel; resolves with a function that round-trips a line. */
function echoPair () {
  return new Promise((resolve, reject) => {
    const s = net.connect(relay.playerPort, '127.0.0.1', () => {
      s.write(handshakeBytes({ hostname: echoAgent.hostname }))
      let buf = Buffer.alloc(0)
      s.on('data', (d) => { buf = Buffer.concat([buf, d]) })
      const roundTrip = async (line, timeoutMs = 5000) => {
        buf = Buffer.alloc(0)
        s.write(line)
        const t0 = Date.now()
        while (!buf.includes(line) && Date.now() - t0 < timeoutMs) await h.sleep(20)
        return buf.includes(line)
      }
      resolve({ sock: s, roundTrip })
    })
    s.once('error', reject)
    held.push(s)
  })
}

function openSilent () {
  return new Promise((resolve) => {
    const s = net.connect(relay.playerPort, '127.0.0.1')
    s.on('error', () => {})
    s.once('connect', () => resolve(s))
    s.once('close', () => resolve(s))
    held.push(s)
  })
}

function acceptErrors (body, reason) {
  const m = new RegExp(`^dvv_relay_accept_errors_total\\{reason="${reason}"\\} (\\d+)$`, 'm').exec(body || '')
  return m ? Number(m[1]) : null
}

h.scenario('with every descriptor in use the relay idles, serves joined pairs, then recovers', async () => {
  const before = await join({ relayPort: relay.playerPort, hostname: mcAgent.hostname, username: 'before', chat: 'hi', timeoutMs: 15000 })
  assert.equal(before.ok, true, `expected a join before the flood, got ${JSON.stringify(before)}`)
  const pair = await echoPair()
  assert.ok(await pair.roundTrip('first\n'), 'expected the echo pair to work before the flood')

  const used = h.fdCount(relay.pid)
  assert.ok(used < FD_LIMIT - 8, `the relay already uses ${used} of ${FD_LIMIT} descriptors`)
  const n = FD_LIMIT - used + EXTRA
  for (let i = 0; i < n; i++) await openSilent()
  await waitFor('the relay to log EMFILE on the player port',
    () => /player accept: Too many open files/.test(relayLog()))
  // let the connections the relay could still take settle in
  await h.sleep(300)
  assert.ok(h.fdCount(relay.pid) >= FD_LIMIT - 4, `expected the relay near its ${FD_LIMIT} descriptors, has ${h.fdCount(relay.pid)}`)

  const cpu0 = cpuSeconds(relay.pid)
  await h.sleep(MEASURE_MS)
  const cpu = cpuSeconds(relay.pid) - cpu0
  assert.ok(cpu < MAX_CPU_S, `expected the saturated relay to idle, it used ${cpu.toFixed(2)} s of CPU in ${MEASURE_MS} ms`)
  assert.ok(h.fdCount(relay.pid) >= FD_LIMIT - 4, 'expected the relay to be still out of descriptors after the measurement')

  // joined pairs do not need accept(): they keep flowing while the listeners are paused
  assert.ok(await pair.roundTrip('still here\n'), 'expected the joined echo pair to keep working while saturated')

  // warnings are rate limited, not one line per wake-up
  const lines = relayLog().split('\n').filter((l) => /accept: Too many open files/.test(l)).length
  assert.ok(lines >= 1 && lines <= 20, `expected a few rate-limited EMFILE warnings, got ${lines} lines`)

  // give the descriptors back: the backlog drains, players join again
  while (held.length > 1) held.pop().destroy()
  await waitFor('the relay to close the abandoned connections', () => h.fdCount(relay.pid) < used + 8, 15000)
  const after = await join({ relayPort: relay.playerPort, hostname: mcAgent.hostname, username: 'after', chat: 'back', timeoutMs: 15000 })
  assert.equal(after.ok, true, `expected a join once descriptors were free again, got ${JSON.stringify(after)}`)
  const p = await ping({ relayPort: relay.playerPort, hostname: mcAgent.hostname })
  assert.equal(p.ok, true, `expected a status ping once descriptors were free again, got ${JSON.stringify(p)}`)
  assert.equal(p.motd, 'DVV fd limit test')
  assert.ok(await pair.roundTrip('and after\n'), 'expected the echo pair to survive the episode')

  const body = await relay.metrics()
  const emfile = acceptErrors(body, 'emfile')
  assert.ok(emfile >= 1, `expected dvv_relay_accept_errors_total{reason="emfile"} >= 1, got ${emfile}`)
  assert.ok(/fd limit: 128 \(hard 128\)/.test(relayLog()), 'expected the relay to log its fd limit at start')
})

h.scenario('the relay exits cleanly on SIGTERM with no sanitizer report', async () => {
  for (const s of held) s.destroy()
  const rl = await h.stopProcess(relay.proc)
  assert.ok(!rl.forced && rl.code === 0, `expected the relay to exit 0 within 3 s of SIGTERM, got ${JSON.stringify(rl)}`)
  const reports = h.sanitizerReports()
  assert.deepEqual(reports, [], `expected no sanitizer reports, got:\n${reports.map((r) => `${r.name}: ${r.line}`).join('\n')}`)
})
