// dvv-api when PostgreSQL goes away under it: every request gets a clear answer in bounded time
// (503 `unavailable`, the liveness probe still 200, readiness 503), a Stripe webhook is answered
// with an error so Stripe delivers it again, and nothing hangs; when PostgreSQL comes back the
// same process serves again without a restart, sessions made before still work, and the
// redelivered webhook is recorded once.

import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { after } from 'node:test'
import { scenario, startRedis } from '../e2e/harness.mjs'
import { startPg } from './pg.mjs'
import { signHeader } from './stripe-standin.mjs'
import { cleanupApi, events, startApi, until } from './api.mjs'

after(cleanupApi)

const SECRET = 'whsec_faults_test_secret'

function webhook (a, ev) {
  const payload = JSON.stringify(ev)
  return a.request('POST', '/v1/stripe/webhook', {
    body: payload,
    headers: { 'Stripe-Signature': signHeader(SECRET, payload) },
    timeoutMs: 30000
  })
}

async function timed (fn) {
  const t0 = Date.now()
  const r = await fn()
  return { r, ms: Date.now() - t0 }
}

scenario('PostgreSQL stopped under a running API: 503s in bounded time, webhook refused for redelivery; back: served again, webhook recorded once', { timeout: 120000 }, async () => {
  const pg = await startPg()
  const redis = await startRedis()
  const a = await startApi({ pg, redisPort: redis.port, extraArgs: ['--stripe-webhook-secret', SECRET] })
  const u = await a.signup()
  const tid = (await a.request('GET', '/v1/tunnels', { session: u.session })).json.tunnels[0].id
  const ev = {
    id: `evt_faults_${Date.now()}`,
    object: 'event',
    api_version: '2024-06-20',
    created: Math.floor(Date.now() / 1000),
    type: 'customer.created',
    data: { object: { id: 'cus_faults', object: 'customer', metadata: { user_id: u.user.id } } },
    livemode: false
  }

  await pg.pause()
  // what a load balancer, a user and Stripe see meanwhile: answers, not hangs
  const health = await timed(() => a.request('GET', '/healthz'))
  assert.equal(health.r.status, 200, 'liveness does not depend on PostgreSQL (the process is fine)')
  const ready = await timed(() => a.request('GET', '/readyz', { timeoutMs: 30000 }))
  assert.equal(ready.r.status, 503, ready.r.text)
  assert.equal(ready.r.json.error.code, 'unavailable')
  const me = await timed(() => a.request('GET', '/v1/me', { session: u.session, timeoutMs: 30000 }))
  assert.equal(me.r.status, 503, me.r.text)
  assert.equal(me.r.json.error.code, 'unavailable')
  const login = await timed(() => a.login(u.email, u.password))
  assert.equal(login.r.status, 503, login.r.text)
  const hook = await timed(() => webhook(a, ev))
  assert.ok(hook.r.status >= 500, `a webhook that could not be recorded must get a 5xx so Stripe retries it, got ${hook.r.status} ${hook.r.text}`)
  process.stderr.write(`[faults] PostgreSQL down: readyz ${ready.ms} ms, /v1/me ${me.ms} ms, login ${login.ms} ms, webhook ${hook.ms} ms (${hook.r.status})\n`)
  for (const [what, t] of [['readyz', ready], ['/v1/me', me], ['login', login], ['webhook', hook]]) {
    assert.ok(t.ms < 20000, `${what} answered after ${t.ms} ms with PostgreSQL down`)
  }

  await pg.resume()
  const back = await until(async () => (await a.request('GET', '/readyz')).status === 200, { timeoutMs: 20000, intervalMs: 250, what: 'readyz 200 after PostgreSQL is back' })
  process.stderr.write(`[faults] ready again ${back.ms} ms after PostgreSQL restarted\n`)
  // the same process, the same session
  const me2 = await a.request('GET', '/v1/me', { session: u.session })
  assert.equal(me2.status, 200, me2.text)
  assert.equal((await a.login(u.email, u.password)).status, 200)
  // Stripe's redelivery is recorded, and a second one is not recorded again
  assert.equal((await webhook(a, ev)).status, 200)
  assert.equal((await webhook(a, ev)).status, 200)
  const rows = await a.sql(`SELECT count(*) FROM stripe_events WHERE id = '${ev.id}'`)
  assert.equal(rows[0][0], '1', 'the redelivered event is recorded exactly once')
  // writes reach Redis again: a revocation made after the outage
  const tok = (await a.request('POST', '/v1/tokens', { session: u.session, body: { tunnel_id: tid } })).json
  assert.equal((await a.request('DELETE', `/v1/tokens/${tok.id}`, { session: u.session })).status, 204)
  await until(async () => (await events(redis.port)).some((e) => e.type === 'revoke' && e.jti === tok.id), { what: 'the revoke event in Redis' })
})

// nft rules dropping every packet to and from PostgreSQL's port on loopback: a database host
// that went silent (no RST, no FIN), which a stopped server never is.
function blackhole (port, on) {
  const table = `dvvtest_pg_${port}`
  const nft = (script) => execFileSync('nft', ['-f', '-'], { input: script })
  if (on) {
    nft(`table inet ${table} {\n chain in { type filter hook input priority -10; tcp dport ${port} drop; tcp sport ${port} drop; }\n}\n`)
  } else {
    try { nft(`delete table inet ${table}\n`) } catch {}
  }
}

scenario('PostgreSQL silent (packets dropped): requests answered 503 within the TCP and connect timeouts, not hung; served again once it answers', { timeout: 150000, skip: process.getuid() !== 0 && 'needs root for nft' }, async () => {
  const pg = await startPg()
  const redis = await startRedis()
  const a = await startApi({ pg, redisPort: redis.port })
  const u = await a.signup()
  // the pool holds established connections; each is used once before the silence
  await Promise.all(Array.from({ length: 8 }, () => a.request('GET', '/v1/me', { session: u.session })))
  blackhole(pg.port, true)
  try {
    const times = []
    for (let i = 0; i < 3; i++) {
      const t = await timed(() => a.request('GET', '/v1/me', { session: u.session, timeoutMs: 60000 }))
      assert.equal(t.r.status, 503, t.r.text)
      times.push(t.ms)
    }
    process.stderr.write(`[faults] PostgreSQL silent: /v1/me answered 503 after ${times.join(', ')} ms\n`)
    for (const ms of times) assert.ok(ms < 20000, `a request waited ${ms} ms on a silent PostgreSQL`)
    const h = await timed(() => a.request('GET', '/healthz'))
    assert.equal(h.r.status, 200)
    assert.ok(h.ms < 1000, `liveness took ${h.ms} ms`)
  } finally {
    blackhole(pg.port, false)
  }
  const back = await until(async () => (await a.request('GET', '/v1/me', { session: u.session, timeoutMs: 60000 })).status === 200, { timeoutMs: 90000, intervalMs: 250, what: '/v1/me 200 after the silence ends' })
  process.stderr.write(`[faults] served again ${back.ms} ms after the silence ended\n`)
})
