// The operator's files under deploy/: the Prometheus alert rules are valid and each fires on
// synthetic series (promtool, Debian's prometheus package), the example Prometheus config loads,
// the Grafana dashboard parses and its queries are valid PromQL, and every metric the dashboard
// and the alerts use is documented in docs/metrics.md (so a renamed metric breaks this test, not
// a production dashboard). Every alert is listed in docs/metrics.md and tested.
//
//   node --test tests/ops/

import { test } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { documentedMetrics } from '../e2e/metricsdoc.mjs'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
const PROM = path.join(ROOT, 'deploy', 'prometheus')
const DASH = path.join(ROOT, 'deploy', 'grafana', 'dvv-overview.json')
const read = (f) => fs.readFileSync(f, 'utf8')

function promtool (args, cwd = PROM) {
  return new Promise((resolve) => {
    execFile('promtool', args, { cwd, timeout: 60000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (err.code ?? 1) : 0, out: `${stdout}${stderr}` })
    })
  })
}

/** dvv_* metric names in a text, histogram suffixes folded into their family. */
function metricNames (text, doc) {
  const names = new Set()
  for (const [m] of text.matchAll(/\bdvv_[a-z0-9_]+\b/g)) {
    const base = m.replace(/_(bucket|sum|count)$/, '')
    names.add(doc[m] ? m : doc[base] ? base : m)
  }
  return names
}

function dashboardExprs () {
  const d = JSON.parse(read(DASH))
  assert.ok(Array.isArray(d.panels) && d.panels.length > 0, 'the dashboard has no panels')
  return d.panels.flatMap((p) => (p.targets || []).map((t) => ({ panel: p.title, expr: t.expr })))
}

test('promtool check rules: deploy/prometheus/alerts.yml is valid', async () => {
  const r = await promtool(['check', 'rules', 'alerts.yml'])
  assert.equal(r.code, 0, r.out)
  assert.match(r.out, /SUCCESS: \d+ rules found/)
})

test('promtool test rules: every alert fires on its synthetic series (alerts.test.yml)', async () => {
  const r = await promtool(['test', 'rules', 'alerts.test.yml'])
  assert.equal(r.code, 0, r.out)
  const alerts = [...read(path.join(PROM, 'alerts.yml')).matchAll(/- alert: (\w+)/g)].map((m) => m[1])
  const tested = new Set([...read(path.join(PROM, 'alerts.test.yml')).matchAll(/alertname: (\w+)/g)].map((m) => m[1]))
  const untested = alerts.filter((a) => !tested.has(a))
  assert.deepEqual(untested, [], `alerts without a test in alerts.test.yml: ${untested}`)
})

test('promtool check config: the example prometheus.yml loads with the rules', async () => {
  const r = await promtool(['check', 'config', 'prometheus.yml'])
  assert.equal(r.code, 0, r.out)
})

test('every metric the alerts use is in docs/metrics.md, and every alert is listed there', () => {
  const doc = documentedMetrics()
  const rules = read(path.join(PROM, 'alerts.yml'))
  const missing = [...metricNames(rules, doc)].filter((n) => !doc[n])
  assert.deepEqual(missing, [], `alerts.yml uses metrics docs/metrics.md does not list: ${missing}`)
  const md = read(path.join(ROOT, 'docs', 'metrics.md'))
  const listed = new Set([...md.matchAll(/^\| `(Dvv\w+)` \|/gm)].map((m) => m[1]))
  const alerts = new Set([...rules.matchAll(/- alert: (\w+)/g)].map((m) => m[1]))
  assert.deepEqual([...alerts].sort(), [...listed].sort(), 'alerts.yml and the alert table of docs/metrics.md differ')
})

test('the Grafana dashboard parses, uses only documented metrics and covers the overview', () => {
  const doc = documentedMetrics()
  const exprs = dashboardExprs()
  const used = new Set()
  for (const { panel, expr } of exprs) {
    for (const n of metricNames(expr, doc)) {
      assert.ok(doc[n], `panel "${panel}" uses ${n}, which docs/metrics.md does not list`)
      used.add(n)
    }
  }
  // what the overview must show (issue: players, joins by outcome, bytes by plane, XDP
  // verdicts, Redis latency, relays draining, plan enforcement, API requests)
  for (const n of ['dvv_relay_splices_active', 'dvv_relay_player_outcomes_total', 'dvv_relay_bytes_total',
    'dvv_relay_xdp_packets_total', 'dvv_relay_redis_command_duration_seconds', 'dvv_relay_draining',
    'dvv_relay_plan_closed_total', 'dvv_api_requests_total']) {
    assert.ok(used.has(n), `the dashboard shows nothing of ${n}`)
  }
})

test("the dashboard's queries are valid PromQL (promtool checks them as recording rules)", async () => {
  const exprs = dashboardExprs()
  // Grafana's $__rate_interval is not PromQL: any duration stands in for it
  const rules = exprs.map(({ expr }, i) => `      - record: dashboard:q${i}\n        expr: ${JSON.stringify(expr.replaceAll('$__rate_interval', '5m'))}\n`)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvv-ops-'))
  try {
    fs.writeFileSync(path.join(dir, 'dash.yml'), `groups:\n  - name: dashboard\n    rules:\n${rules.join('')}`)
    const r = await promtool(['check', 'rules', 'dash.yml'], dir)
    assert.equal(r.code, 0, r.out)
    assert.match(r.out, new RegExp(`SUCCESS: ${exprs.length} rules found`))
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})
