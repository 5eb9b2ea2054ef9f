#!/usr/bin/env node
// dvv-api throughput: requests/s and latency percentiles for login (argon2id with the default
// parameters), token mint (ES256 signing + one INSERT) and the Stripe webhook (signature check +
// recording the event), against the real API on a throwaway PostgreSQL 15 and Redis.
//
//   node bench/api-bench.mjs [--seconds S] [--conc C] [--threads T] [--slots N]
//
//   --seconds S  measuring time per case (default 5)
//   --conc C     concurrent clients (default 16), each with its own keep-alive connection
//   --threads T  dvv-api --threads (default 8)
//   --slots N    dvv-api --argon2-slots (default: the number of CPUs)
//
// Binaries come from $DVV_BUILD (default build: measure the optimised binary, not ASan). The
// webhook case uses an event type dvv-api records and otherwise ignores (customer.created), so
// it measures verification and the idempotency insert. Prints one table.

import crypto from 'node:crypto'
import http from 'node:http'
import os from 'node:os'
import process from 'node:process'

process.env.DVV_BUILD = process.env.DVV_BUILD || 'build'
const { startApi, cleanupApi, PASSWORD } = await import('../tests/api/api.mjs')

const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`)
  return i > 0 ? Number(process.argv[i + 1]) : def
}
const SECONDS = arg('seconds', 5)
const CONC = arg('conc', 16)
const THREADS = arg('threads', 8)
const SLOTS = arg('slots', os.cpus().length)
const SECRET = 'whsec_bench_secret'

function pct (sorted, p) {
  if (!sorted.length) return NaN
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]
}

/** Run `make()` -> {method, path, headers, body} from CONC clients for SECONDS; stats. */
async function load (port, make, expect) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONC })
  const lat = []
  const statuses = {}
  const t0 = Date.now()
  const end = t0 + SECONDS * 1000
  async function one () {
    while (Date.now() < end) {
      const r = make()
      const s = performance.now()
      const status = await new Promise((resolve) => {
        const data = r.body ? Buffer.from(r.body) : null
        const req = http.request({ host: '127.0.0.1', port, method: r.method, path: r.path, agent, headers: { ...(r.headers || {}), ...(data ? { 'Content-Type': 'application/json', 'Content-Length': data.length } : {}) } }, (res) => {
          res.resume()
          res.on('end', () => resolve(res.statusCode))
        })
        req.on('error', () => resolve(0))
        if (data) req.write(data)
        req.end()
      })
      lat.push(performance.now() - s)
      statuses[status] = (statuses[status] || 0) + 1
    }
  }
  await Promise.all(Array.from({ length: CONC }, one))
  agent.destroy()
  const secs = (Date.now() - t0) / 1000
  lat.sort((a, b) => a - b)
  const ok = statuses[expect] || 0
  return { rps: ok / secs, p50: pct(lat, 50), p99: pct(lat, 99), n: lat.length, statuses }
}

const api = await startApi({
  testArgs: ['--rate-ip-per-min', '0', '--rate-account-per-min', '0', '--threads', String(THREADS), '--argon2-slots', String(SLOTS), '--pg-pool', String(Math.max(8, THREADS)), '--log-level', 'warn'],
  extraArgs: ['--stripe-webhook-secret', SECRET, '--stripe-secret-key', 'sk_test_bench', '--stripe-api', 'http://127.0.0.1:9']
})
const rows = []
try {
  const u = await api.signup()
  const tid = (await api.request('GET', '/v1/tunnels', { session: u.session })).json.tunnels[0].id
  const login = JSON.stringify({ email: u.email, password: PASSWORD })
  rows.push(['login (argon2id 19 MiB, t=2)', await load(api.port, () => ({ method: 'POST', path: '/v1/login', body: login }), 200)])
  const mint = JSON.stringify({ tunnel_id: tid })
  rows.push(['token mint (ES256)', await load(api.port, () => ({ method: 'POST', path: '/v1/tokens', body: mint, headers: { Authorization: `Bearer ${u.session}` } }), 201)])
  let n = 0
  rows.push(['stripe webhook (verify + record)', await load(api.port, () => {
    const payload = JSON.stringify({ id: `evt_bench_${process.pid}_${++n}`, object: 'event', type: 'customer.created', created: Math.floor(Date.now() / 1000), data: { object: { id: `cus_${n}`, object: 'customer' } } })
    const t = Math.floor(Date.now() / 1000)
    const v1 = crypto.createHmac('sha256', SECRET).update(`${t}.${payload}`).digest('hex')
    return { method: 'POST', path: '/v1/stripe/webhook', body: payload, headers: { 'Stripe-Signature': `t=${t},v1=${v1}` } }
  }, 200)])
} finally {
  await cleanupApi()
}
const cpu = os.cpus()[0].model.replace(/\s+/g, ' ')
console.log(`\ndvv-api on ${os.cpus().length} x ${cpu}; ${CONC} clients, ${SECONDS} s per case, --threads ${THREADS}, --argon2-slots ${SLOTS}\n`)
console.log('| case | requests/s | p50 ms | p99 ms | requests | statuses |')
console.log('|---|---:|---:|---:|---:|---|')
for (const [name, r] of rows) {
  console.log(`| ${name} | ${r.rps.toFixed(0)} | ${r.p50.toFixed(1)} | ${r.p99.toFixed(1)} | ${r.n} | ${Object.entries(r.statuses).map(([k, v]) => `${k}:${v}`).join(' ')} |`)
}
