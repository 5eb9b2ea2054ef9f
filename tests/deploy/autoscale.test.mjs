// dvv-autoscale against real Redis, real relays and a local stand-in for Railway's GraphQL API
// (the one thing that cannot be reached from here): it records every request. Load comes from
// synthetic relay records (alive:<id> + info:<id>, as the relays' heartbeat writes them,
// docs/redis.md) and, for the drain, from two real relays.
//
//   node --test --test-concurrency=1 tests/deploy/autoscale.test.mjs

import { before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import http from 'node:http'
import path from 'node:path'
import * as h from '../e2e/harness.mjs'

const TOKEN = 'test-token-5f1c9a'
let redis, keys

before(h.withLogs('setup', async () => {
  h.requireBinaries(['dvv-relay', 'dvv-autoscale'])
  redis = await h.startRedis()
  keys = await h.makeKeys()
}), { timeout: 60000 })

after(h.cleanup)

const rcli = (...args) => execFileSync('redis-cli', ['-p', String(redis.port), ...args], { encoding: 'utf8' })

function setRelay (region, id, { players, capacity = 20000, state = 'alive' }) {
  rcli('SET', `dvv:{${region}}:alive:${id}`, state)
  rcli('HSET', `dvv:{${region}}:info:${id}`, 'tunnels', '0', 'players', String(players),
    'capacity', String(capacity), 'agent_addr', `${id}.example:7000`,
    'state', state === 'draining' ? 'draining' : 'active')
}

// The stand-in: records {t, auth, body} of every POST; answers as told by reply().
async function standIn (reply = () => ({ data: { serviceInstanceUpdate: true } }), onCall = () => {}) {
  const calls = []
  const server = http.createServer((req, res) => {
    let body = ''
    req.on('data', (d) => { body += d })
    req.on('end', () => {
      const call = { t: Date.now(), path: req.url, auth: req.headers.authorization, body: JSON.parse(body) }
      onCall(call)
      calls.push(call)
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify(reply(call)))
    })
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  after(() => server.close())
  return { calls, url: `http://127.0.0.1:${server.address().port}/graphql/v2` }
}

function startScaler (region, api, extra = []) {
  return h.spawnProcess(`autoscale-${region}`, h.bin('dvv-autoscale'), [
    '--redis', `127.0.0.1:${redis.port}`, '--region', region,
    '--api-url', api.url, '--service-id', 'svc-relay', '--environment-id', 'env-prod',
    '--interval-ms', '100', '--out-for-s', '1', '--in-for-s', '1', '--cooldown-s', '2',
    '--min', '1', '--max', '6', ...extra
  ], { env: { RAILWAY_API_TOKEN: TOKEN } })
}

const logOf = (proc) => { try { return fs.readFileSync(proc.stderrLog, 'utf8') } catch { return '' } }
const samples = (proc) => (logOf(proc).match(/ sample: /g) || []).length

async function until (pred, what, ms = 20000) {
  const end = Date.now() + ms
  while (Date.now() < end) {
    if (await pred()) return
    await h.sleep(50)
  }
  throw new Error(`timed out waiting for ${what}`)
}

h.scenario('scale out above the threshold, to the middle of the band, then the cool-down before the next', async () => {
  setRelay('as1', 'r1', { players: 16000 })
  setRelay('as1', 'r2', { players: 16000 }) // 80 % of 40000
  const api = await standIn()
  const p = startScaler('as1', api)
  await until(() => api.calls.length >= 1, 'the first scale-out request')
  const c = api.calls[0]
  assert.equal(c.auth, `Bearer ${TOKEN}`)
  assert.match(c.body.query, /serviceInstanceUpdate\(serviceId: \$serviceId, environmentId: \$environmentId, input: \$input\)/)
  assert.deepEqual(c.body.variables, { serviceId: 'svc-relay', environmentId: 'env-prod', replicas: 4, input: { numReplicas: 4 } },
    '32000 load units at 20000 per relay, brought to 50 %: 4 replicas')
  // the new replicas never appear (synthetic): still 80 %, so a second request after the cool-down
  await until(() => api.calls.length >= 2, 'the second scale-out request')
  // 4 wanted but still 2 seen: at least one more than the last count, 5
  assert.equal(api.calls[1].body.variables.input.numReplicas, 5)
  assert.ok(api.calls[1].t - api.calls[0].t >= 2000, 'the second request came inside the 2 s cool-down')
  assert.match(logOf(p), /hold: cool-down/)
  await until(() => api.calls.length >= 3, 'the third scale-out request')
  assert.equal(api.calls[2].body.variables.input.numReplicas, 6, 'capped at --max 6')
  // at max: no fourth request however long it stays loaded
  const n = samples(p)
  await until(() => samples(p) >= n + 30, '30 more samples')
  assert.equal(api.calls.length, 3)
  assert.match(logOf(p), /above the scale-out threshold at max replicas/)
  assert.ok(!logOf(p).includes(TOKEN), 'the API token appeared in the log')
})

h.scenario('no flapping: load swinging inside the band never changes the count', async () => {
  const api = await standIn()
  let high = false
  const swing = () => {
    high = !high
    for (const id of ['a', 'b', 'c']) setRelay('as2', id, { players: high ? 13000 : 7000 }) // 65 % / 35 %
  }
  swing()
  const p = startScaler('as2', api)
  const timer = setInterval(swing, 150)
  try {
    await until(() => samples(p) >= 60, '60 samples')
  } finally {
    clearInterval(timer)
  }
  assert.equal(api.calls.length, 0, `expected no request, got ${JSON.stringify(api.calls.map((c) => c.body.variables))}`)
  assert.match(logOf(p), /inside the band/)
})

h.scenario('an API error keeps the count, retries after the cool-down, and never logs the token', async () => {
  setRelay('as4', 'x', { players: 19000 })
  const api = await standIn(() => ({ errors: [{ message: 'Not Authorized' }] }))
  const p = startScaler('as4', api)
  await until(() => api.calls.length >= 2, 'a retried request')
  assert.equal(api.calls[0].body.variables.input.numReplicas, api.calls[1].body.variables.input.numReplicas)
  assert.ok(api.calls[1].t - api.calls[0].t >= 2000, 'retried inside the cool-down')
  assert.match(logOf(p), /Not Authorized/)
  assert.ok(!logOf(p).includes(TOKEN), 'the API token appeared in the log')
})

h.scenario('scale in drains the least loaded real relay first, then lowers the count', async () => {
  const dir = await h.makeTempDir('drain')
  const relays = {}
  for (const id of ['as3-a', 'as3-b']) {
    relays[id] = await h.startRelay({
      redisPort: redis.port, keys, region: 'as3', instanceId: id,
      extraArgs: ['--capacity', '100', '--heartbeat-ms', '200', '--drain-timeout-s', '10']
    })
    fs.writeFileSync(path.join(dir, `${id}.pid`), String(relays[id].pid))
  }
  await until(() => rcli('KEYS', 'dvv:{as3}:alive:*').trim().split('\n').length === 2, 'both relays alive in Redis')
  // what Redis held when the count was lowered: a relay deletes its alive key only when it
  // exits (its drain over), so the drained one must be gone and the other still there
  let atCall = null
  const api = await standIn(undefined, () => {
    atCall = { alive: rcli('KEYS', 'dvv:{as3}:alive:*').trim().split('\n').filter(Boolean) }
  })
  const drainCmd = `kill -TERM "$(cat '${dir}'/"$DVV_DRAIN_INSTANCE".pid)" && echo "$DVV_DRAIN_INSTANCE" >> '${dir}/drained'`
  const p = startScaler('as3', api, ['--drain-cmd', drainCmd, '--drain-wait-s', '30'])
  await until(() => api.calls.length >= 1, 'the scale-in request', 40000)
  const drained = fs.readFileSync(path.join(dir, 'drained'), 'utf8').trim().split('\n')
  assert.equal(drained.length, 1, 'exactly one relay drained')
  const victim = drained[0]
  const other = victim === 'as3-a' ? 'as3-b' : 'as3-a'
  assert.equal(api.calls[0].body.variables.input.numReplicas, 1)
  assert.deepEqual(atCall.alive, [`dvv:{as3}:alive:${other}`], 'the drained relay was still in Redis when the count was lowered')
  const { code } = await relays[victim].proc.exitPromise
  assert.equal(code, 0, 'the drained relay did not exit cleanly')
  assert.match(fs.readFileSync(relays[victim].proc.stderrLog, 'utf8'), /draining[\s\S]*drain finished/)
  assert.equal(relays[other].proc.exited, false, 'the other relay was stopped too')
  // at --min 1 now: nothing more
  const n = samples(p)
  await until(() => samples(p) >= n + 20, '20 more samples')
  assert.equal(api.calls.length, 1)
})
