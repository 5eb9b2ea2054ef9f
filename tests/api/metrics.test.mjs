// docs/metrics.md against a running dvv-api: every family /metrics exposes is documented with
// its type, every documented dvv-api family is exposed, and every route and status label value
// is one the document lists (bounded: route patterns, never paths with ids). The API runs with
// --log-format json: its log lines are JSON objects.

import assert from 'node:assert/strict'
import fs from 'node:fs'
import { after, before } from 'node:test'
import { scenario } from '../e2e/harness.mjs'
import { documentedMetrics, parseExposition, compare } from '../e2e/metricsdoc.mjs'
import { cleanupApi, startApi } from './api.mjs'

let api
before(async () => { api = await startApi({ extraArgs: ['--log-format', 'json'] }) })
after(cleanupApi)

scenario('dvv-api /metrics and docs/metrics.md agree, and labels stay bounded', async () => {
  // requests that make series appear: a created account, an unauthenticated call, a path with
  // an id (must be counted by its route, not its path), an unknown path, a bad body
  const u = await api.signup()
  assert.equal((await api.request('GET', '/v1/me')).status, 401)
  assert.equal((await api.request('DELETE', '/v1/tunnels/no-such-tunnel-123', { session: u.session })).status, 404)
  assert.equal((await api.request('GET', '/v1/nothing-here-' + Date.now())).status, 404)
  assert.equal((await api.request('POST', '/v1/login', { body: { email: 3 } })).status, 400)
  const res = await api.request('GET', '/metrics')
  assert.equal(res.status, 200)
  const expo = parseExposition(res.text)
  const problems = compare(documentedMetrics(), expo, { prefix: 'dvv_api_', expect: () => true })
  assert.deepEqual(problems, [], problems.join('\n'))
  const count = (route, status) => expo.samples
    .filter((s) => s.name === 'dvv_api_requests_total' && s.labels.route === route && s.labels.status === status)
    .reduce((n, s) => n + s.value, 0)
  assert.equal(count('signup', '201'), 1)
  assert.equal(count('me', '401'), 1)
  assert.equal(count('tunnels_delete', '404'), 1)
  assert.ok(!res.text.includes('no-such-tunnel-123'), 'a path id leaked into a label')
})

scenario('dvv-api --log-format json writes one JSON object per line', async () => {
  const lines = fs.readFileSync(api.proc.stderrLog, 'utf8').split('\n').filter((l) => l && !l.startsWith('$ '))
  assert.ok(lines.length >= 1, 'no log line')
  for (const l of lines) {
    const o = JSON.parse(l)
    assert.equal(o.program, 'dvv-api')
    assert.ok(['error', 'warn', 'info', 'debug'].includes(o.level))
    assert.equal(typeof o.msg, 'string')
    assert.match(o.time, /Z$/)
  }
})
