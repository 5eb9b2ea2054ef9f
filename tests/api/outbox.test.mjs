// The outbox: changes made while Redis is unreachable wait in PostgreSQL, survive the API being
// SIGKILLed, and reach Redis when an API runs again; migrations apply once when two APIs start
// on one empty database at the same moment.

import assert from 'node:assert/strict'
import fs from 'node:fs'
import { after } from 'node:test'
import { freePort, kill9, scenario, startRedis } from '../e2e/harness.mjs'
import { startPg } from './pg.mjs'
import { cleanupApi, events, startApi, until } from './api.mjs'

after(cleanupApi)

scenario('API SIGKILLed with outbox rows pending: pushed to Redis after the restart', async () => {
  const pg = await startPg()
  const redis = await startRedis()
  const deadPort = await freePort() // nothing listens here: Redis "down"
  const a = await startApi({ pg, redisPort: deadPort })
  const u = await a.signup()
  const tid = (await a.request('GET', '/v1/tunnels', { session: u.session })).json.tunnels[0].id
  const tok = (await a.request('POST', '/v1/tokens', { session: u.session, body: { tunnel_id: tid } })).json
  assert.equal((await a.request('DELETE', `/v1/tokens/${tok.id}`, { session: u.session })).status, 204)
  const pending = await a.sql(`SELECT count(*) FROM redis_outbox WHERE user_id = '${u.user.id}'`)
  assert.equal(pending[0][0], '2', 'signup and revoke rows wait for Redis')
  await kill9(a.proc)
  // the restarted API (same database and keys) talks to a Redis that works
  const b = await startApi({ pg, db: a.db, redisPort: redis.port, keys: a.keys })
  const plan = await until(async () => { const h = await b.hgetall(`dvv:user:{${u.user.id}}:plan`); return h.tier && h }, { timeoutMs: 3000, what: 'the plan hash' })
  assert.equal(plan.value.tier, 'free')
  assert.notEqual(await b.redis('ZSCORE', `dvv:user:{${u.user.id}}:revoked`, tok.id), null)
  const ev = await events(redis.port)
  assert.ok(ev.some((e) => e.type === 'revoke' && e.jti === tok.id && e.sub === u.user.id && e.tid === tid))
  assert.ok(ev.some((e) => e.type === 'plan' && e.sub === u.user.id))
  await until(async () => (await b.sql('SELECT count(*) FROM redis_outbox'))[0][0] === '0', { what: 'an empty outbox' })
  // the session made before the crash still works
  assert.equal((await b.request('GET', '/v1/me', { session: u.session })).status, 200)
})

scenario('two APIs starting at once on an empty database apply each migration once', async () => {
  const pg = await startPg()
  const redis = await startRedis()
  await pg.createDb('race')
  const [a, b] = await Promise.all([
    startApi({ pg, db: 'race', redisPort: redis.port }),
    startApi({ pg, db: 'race', redisPort: redis.port })
  ])
  const rows = await a.sql('SELECT version, name FROM schema_migrations ORDER BY version')
  const files = fs.readdirSync(new URL('../../api/migrations/', import.meta.url)).filter((f) => f.endsWith('.sql')).sort()
  assert.deepEqual(rows.map(([v, n]) => `${String(v).padStart(3, '0')}_${n}.sql`), files)
  // the log files are written from the processes' piped stderr, asynchronously: read them once
  // both hold the line each API logs after its migrations ("listening on")
  const readLogs = () => [a.proc.stderrLog, b.proc.stderrLog].map((f) => fs.readFileSync(f, 'utf8'))
  const { value: logs } = await until(() => { const l = readLogs(); return l.every((t) => /listening on/.test(t)) && l }, { what: 'both APIs to log "listening on"' })
  const applied = logs.join('\n').match(/applied migration 001_core/g) || []
  assert.equal(applied.length, 1, 'exactly one API applied 001_core')
  // both serve
  const u = await a.signup()
  assert.equal((await b.request('GET', '/v1/me', { session: u.session })).status, 200)
})

scenario('expired revoked tokens leave the revoked set (the rewrite after a restart drops them)', async () => {
  const a = await startApi()
  const u = await a.signup()
  const tid = (await a.request('GET', '/v1/tunnels', { session: u.session })).json.tunnels[0].id
  const tok = (await a.request('POST', '/v1/tokens', { session: u.session, body: { tunnel_id: tid } })).json
  const keep = (await a.request('POST', '/v1/tokens', { session: u.session, body: { tunnel_id: tid } })).json
  await a.request('DELETE', `/v1/tokens/${tok.id}`, { session: u.session })
  await a.request('DELETE', `/v1/tokens/${keep.id}`, { session: u.session })
  const key = `dvv:user:{${u.user.id}}:revoked`
  await until(async () => (await a.redis('ZCARD', key)) === 2, { what: 'two revoked tokens in Redis' })
  await a.sql(`UPDATE agent_tokens SET expires_at = now() - interval '1 hour' WHERE id = '${tok.id}'`)
  await kill9(a.proc)
  const b = await startApi({ pg: a.pg, db: a.db, redisPort: a.redisPort, keys: a.keys })
  await until(async () => (await b.redis('ZSCORE', key, tok.id)) === null, { timeoutMs: 3000, what: 'the expired token trimmed' })
  assert.notEqual(await b.redis('ZSCORE', key, keep.id), null, 'the unexpired revoked token stays')
})
