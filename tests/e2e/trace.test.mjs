// One trace id follows a player across relay A (accepts it), relay B (holds the tunnel; A
// forwards the player there) and the agent (opens the local connection): the same id is on the
// lines about that player in all three logs, which are JSON lines (--log-format json) that all
// parse and carry time, level, program and msg. Secrets (the agent's token, the cluster secret)
// appear in none of them.
//
//   node --test --test-concurrency=1 tests/e2e/trace.test.mjs

import { before, after } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import fs from 'node:fs'
import * as h from './harness.mjs'
import { join } from './mc-client.mjs'

let keys, redis, mc, relayA, relayB, agent, token
const SECRET = crypto.randomBytes(24).toString('hex')

const forwardingRelay = (id) => h.startForwardingRelay({
  redisPort: redis.port, keys, instanceId: `${id}-${process.pid}`, secret: SECRET, extraArgs: ['--log-format', 'json']
})

/** The JSON lines of a process's stderr log (the harness writes a "$ command" line first). */
function jsonLines (proc) {
  const lines = fs.readFileSync(proc.stderrLog, 'utf8').split('\n').filter((l) => l && !l.startsWith('$ '))
  return lines.map((l) => {
    let o
    try { o = JSON.parse(l) } catch { throw new Error(`${proc.name}: a log line is not JSON: ${l}`) }
    return o
  })
}

async function waitLog (proc, pred, what) {
  for (let i = 0; i < 100; i++) {
    const hit = jsonLines(proc).find(pred)
    if (hit) return hit
    await h.sleep(100)
  }
  throw new Error(`${proc.name}: no log line with ${what}; last lines:\n${h.tailOf(proc, 20)}`)
}

before(h.withLogs('setup', async () => {
  h.requireBinaries()
  keys = await h.makeKeys()
  redis = await h.startRedis()
  mc = await h.startMcServer()
  relayA = await forwardingRelay('e2e-trace-a')
  relayB = await forwardingRelay('e2e-trace-b')
  token = await h.mintToken({ keys, sub: 'user-trace', tid: 'tunnel-trace', plan: 'free', ttl: 3600 })
  agent = await h.startAgent({ relayAgentPort: relayB.agentPort, token, ca: keys.ca, localPort: mc.port, extraArgs: ['--log-format', 'json'] })
}), { timeout: 90000 })

after(h.cleanup)

h.scenario('a player joined through relay A to the tunnel on relay B has one trace id in A, B and the agent', async () => {
  const r = await join({ relayPort: relayA.playerPort, hostname: agent.hostname, username: 'tracer' })
  assert.ok(r.ok, `join through A failed: ${JSON.stringify(r)}`)
  // A: accepted the player and forwarded it to B
  const a = await waitLog(relayA.proc, (o) => o.trace_id && /for .*: forwarded to relay e2e-trace-b/.test(o.msg), 'a forwarded line')
  const id = a.trace_id
  assert.match(id, /^[0-9a-f]{16}$/)
  // B: joined it to the agent, with A's id (not one of its own)
  const b = await waitLog(relayB.proc, (o) => /joined to its agent \(forwarded by another relay\)/.test(o.msg), 'a joined line')
  assert.equal(b.trace_id, id, `B logged ${b.trace_id}, A ${id}`)
  // the agent: opened the local connection and closed it when the player left
  const open = await waitLog(agent.proc, (o) => o.trace_id === id && /^player .* joined/.test(o.msg), `a joined line with trace ${id}`)
  assert.equal(open.program, 'dvv')
  await waitLog(agent.proc, (o) => o.trace_id === id && /^player .* left after/.test(o.msg), `a left line with trace ${id}`)
  const ev = await agent.waitForEvent('player_open')
  assert.equal(ev.trace_id, id, 'the --json player_open event carries the trace id')
  // no other player has this id
  for (const p of [relayA.proc, relayB.proc, agent.proc]) {
    for (const o of jsonLines(p)) if (o.trace_id && o.trace_id !== id) assert.fail(`${p.name} logged another trace id ${o.trace_id}: ${o.msg}`)
  }
})

h.scenario('a second player gets another trace id', async () => {
  const r = await join({ relayPort: relayB.playerPort, hostname: agent.hostname, username: 'tracer2' })
  assert.ok(r.ok, `join at B failed: ${JSON.stringify(r)}`)
  const direct = await waitLog(relayB.proc, (o) => o.trace_id && /joined to its agent$/.test(o.msg), 'a direct join line')
  const first = jsonLines(relayA.proc).find((o) => o.trace_id).trace_id
  assert.notEqual(direct.trace_id, first)
  await waitLog(agent.proc, (o) => o.trace_id === direct.trace_id && /joined/.test(o.msg), `the agent's line for ${direct.trace_id}`)
})

h.scenario('every log line is a JSON object with time, level, program and msg, and no secret', async () => {
  // stop first: the exit lines are logged too
  for (const p of [agent.proc, relayA.proc, relayB.proc]) {
    assert.ok(!(await h.stopProcess(p)).forced, `${p.name} had to be killed`)
  }
  const programs = { [relayA.proc.name]: 'dvv-relay', [relayB.proc.name]: 'dvv-relay', [agent.proc.name]: 'dvv' }
  for (const p of [relayA.proc, relayB.proc, agent.proc]) {
    const raw = fs.readFileSync(p.stderrLog, 'utf8').split('\n').slice(1).join('\n')
    assert.ok(!raw.includes(SECRET), `${p.name} logged the cluster secret`)
    assert.ok(!raw.includes(token.split('.')[2]), `${p.name} logged the token's signature`)
    const lines = jsonLines(p)
    assert.ok(lines.length >= 3, `${p.name}: only ${lines.length} log lines`)
    for (const o of lines) {
      assert.match(o.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
      assert.ok(['error', 'warn', 'info', 'debug'].includes(o.level), `level ${o.level}`)
      assert.equal(o.program, programs[p.name])
      assert.equal(typeof o.msg, 'string')
    }
  }
  assert.deepEqual(h.sanitizerReports(), [])
})
