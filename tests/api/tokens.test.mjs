// Agent tokens: mint (ES256 with kid, every claim), list, revoke (Redis revoked zset and a
// `revoke` event within 1 s), and tokens only for one's own tunnels.

import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import fs from 'node:fs'
import { after, before } from 'node:test'
import { scenario } from '../e2e/harness.mjs'
import { cleanupApi, events, startApi, until } from './api.mjs'

let api
before(async () => { api = await startApi() })
after(cleanupApi)

function decode (seg) { return JSON.parse(Buffer.from(seg, 'base64url').toString('utf8')) }

scenario('POST /v1/tokens mints an ES256 token with kid and every claim, verifiable with <kid>.pub', async () => {
  const u = await api.signup()
  const tid = (await api.request('GET', '/v1/tunnels', { session: u.session })).json.tunnels[0].id
  const t0 = Math.floor(Date.now() / 1000)
  const r = await api.request('POST', '/v1/tokens', { session: u.session, body: { tunnel_id: tid, ttl_days: 7 } })
  assert.equal(r.status, 201, r.text)
  assert.match(r.json.id, /^k_[a-z0-9]{20}$/)
  assert.equal(r.json.tunnel_id, tid)
  assert.equal(r.json.command, `dvv login --api ${api.url} --token ${r.json.token} && dvv --local 127.0.0.1:25565`)
  const [h, p, s] = r.json.token.split('.')
  assert.deepEqual(decode(h), { alg: 'ES256', kid: 'k1', typ: 'JWT' })
  const c = decode(p)
  assert.equal(c.iss, 'dvv')
  assert.equal(c.aud, 'dvv-relay')
  assert.equal(c.sub, u.user.id)
  assert.equal(c.tid, tid)
  assert.equal(c.jti, r.json.id)
  assert.equal(c.plan, 'free')
  assert.equal(c.name, undefined)
  assert.ok(Math.abs(c.iat - t0) <= 5)
  assert.equal(c.nbf, c.iat)
  assert.equal(c.exp - c.iat, 7 * 86400)
  const ok = crypto.verify('sha256', Buffer.from(`${h}.${p}`), { key: fs.readFileSync(api.keys.kidPub), dsaEncoding: 'ieee-p1363' }, Buffer.from(s, 'base64url'))
  assert.ok(ok, 'signature verifies with the published key')
  // the token itself is not stored
  const dump = await api.sql('SELECT row_to_json(t)::text FROM agent_tokens t')
  assert.ok(!JSON.stringify(dump).includes(s))
})

scenario('token body rules: ttl_days 1..365, tunnel must be yours and not deleted', async () => {
  const u = await api.signup()
  const v = await api.signup()
  const tid = (await api.request('GET', '/v1/tunnels', { session: u.session })).json.tunnels[0].id
  for (const ttl of [0, 366, 1.5, '9']) {
    const r = await api.request('POST', '/v1/tokens', { session: u.session, body: { tunnel_id: tid, ttl_days: ttl } })
    assert.equal(r.status, 400, `${ttl}: ${r.text}`)
    assert.equal(r.json.error.code, 'invalid_field')
  }
  const other = await api.request('POST', '/v1/tokens', { session: v.session, body: { tunnel_id: tid } })
  assert.equal(other.status, 404)
  const def = await api.request('POST', '/v1/tokens', { session: u.session, body: { tunnel_id: tid } })
  const c = decode(def.json.token.split('.')[1])
  assert.equal(c.exp - c.iat, 90 * 86400)
})

scenario('list and revoke: revoked zset and `revoke` event reach Redis within 1 s', async () => {
  const u = await api.signup()
  const tid = (await api.request('GET', '/v1/tunnels', { session: u.session })).json.tunnels[0].id
  const a = (await api.request('POST', '/v1/tokens', { session: u.session, body: { tunnel_id: tid } })).json
  const b = (await api.request('POST', '/v1/tokens', { session: u.session, body: { tunnel_id: tid } })).json
  const list = await api.request('GET', '/v1/tokens', { session: u.session })
  assert.equal(list.status, 200)
  assert.deepEqual(list.json.tokens.map((t) => t.id).sort(), [a.id, b.id].sort())
  for (const t of list.json.tokens) {
    assert.equal(t.revoked_at, null)
    assert.equal(t.tunnel_id, tid)
    assert.match(t.expires_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/)
  }
  const v = await api.signup()
  assert.equal((await api.request('DELETE', `/v1/tokens/${a.id}`, { session: v.session })).status, 404, 'not your token')
  const t0 = Date.now()
  const del = await api.request('DELETE', `/v1/tokens/${a.id}`, { session: u.session })
  assert.equal(del.status, 204)
  const key = `dvv:user:{${u.user.id}}:revoked`
  const { ms } = await until(async () => (await api.redis('ZSCORE', key, a.id)) !== null, { timeoutMs: 1000, what: 'the revoked zset entry' })
  const exp = JSON.parse(Buffer.from(a.token.split('.')[1], 'base64url')).exp
  assert.equal(Number(await api.redis('ZSCORE', key, a.id)), exp, 'score = the token exp')
  assert.equal(await api.redis('ZSCORE', key, b.id), null)
  const ev = await until(async () => (await events(api.redisPort)).find((e) => e.type === 'revoke' && e.jti === a.id), { timeoutMs: 1000 - ms, what: 'the revoke event' })
  assert.deepEqual(ev.value, { id: ev.value.id, type: 'revoke', sub: u.user.id, jti: a.id, tid })
  assert.ok(Date.now() - t0 < 1500)
  const after = await api.request('GET', '/v1/tokens', { session: u.session })
  assert.notEqual(after.json.tokens.find((t) => t.id === a.id).revoked_at, null)
  assert.equal(after.json.tokens.find((t) => t.id === b.id).revoked_at, null)
})

scenario('POST /v1/tokens/renew: the agent token itself, in the last half of its life, for a new one of the same lifetime; forged, revoked and deleted-tunnel tokens refused', async () => {
  const u = await api.signup()
  const tid = (await api.request('GET', '/v1/tunnels', { session: u.session })).json.tunnels[0].id
  const old = (await api.request('POST', '/v1/tokens', { session: u.session, body: { tunnel_id: tid, ttl_days: 30 } })).json
  const renew = (token) => api.request('POST', '/v1/tokens/renew', { session: token, body: {} })
  // too early: the first half of its life
  const early = await renew(old.token)
  assert.equal(early.status, 409, early.text)
  assert.equal(early.json.error.code, 'not_due')
  const wait = Number(early.headers['retry-after'])
  assert.ok(wait > 14 * 86400 && wait <= 15 * 86400 + 5, `Retry-After ${wait} s: half of 30 days`)
  // made 40 days ago for 70 days: 30 days left of 70, due
  await api.sql(`UPDATE agent_tokens SET created_at = now() - interval '40 days' WHERE id = '${old.id}'`)
  const t0 = Math.floor(Date.now() / 1000)
  const r = await renew(old.token)
  assert.equal(r.status, 201, r.text)
  assert.equal(r.json.tunnel_id, tid)
  assert.equal(r.json.renewed, old.id)
  assert.notEqual(r.json.id, old.id)
  const c = decode(r.json.token.split('.')[1])
  assert.equal(c.sub, u.user.id)
  assert.equal(c.tid, tid)
  assert.equal(c.jti, r.json.id)
  assert.equal(c.aud, 'dvv-relay')
  assert.ok(Math.abs(c.exp - (t0 + 70 * 86400)) <= 60, `the same lifetime (70 days) from now: exp ${c.exp}`)
  const [h, p, sig] = r.json.token.split('.')
  assert.ok(crypto.verify('sha256', Buffer.from(`${h}.${p}`), { key: fs.readFileSync(api.keys.kidPub), dsaEncoding: 'ieee-p1363' }, Buffer.from(sig, 'base64url')))
  // both listed, the old one not revoked (the session running on it stays up)
  const list = (await api.request('GET', '/v1/tokens', { session: u.session })).json.tokens
  assert.deepEqual(list.filter((t) => t.tunnel_id === tid).map((t) => [t.id, t.revoked_at]).sort(), [[old.id, null], [r.json.id, null]].sort())
  // the new one is not due yet itself
  assert.equal((await renew(r.json.token)).status, 409)
  // one renewal per token: the old one again is refused (no fan-out)
  const again = await renew(old.token)
  assert.equal(again.status, 409, again.text)
  assert.equal(again.json.error.code, 'already_renewed')
  assert.equal((await api.sql(`SELECT count(*) FROM agent_tokens WHERE tunnel_id = '${tid}'`))[0][0], '2')
  // refused: no token, garbage, a session secret, a token of another key, a flipped signature
  for (const [what, res] of [
    ['no header', await api.request('POST', '/v1/tokens/renew', { body: {} })],
    ['garbage', await renew('not.a.token')],
    ['a session secret', await renew(u.session)],
    ['a changed payload', await renew(`${h}.${Buffer.from(JSON.stringify({ ...c, exp: c.exp + 1 })).toString('base64url')}.${sig}`)],
    ['alg none', await renew(`${Buffer.from(JSON.stringify({ alg: 'none', kid: 'k1', typ: 'JWT' })).toString('base64url')}.${p}.`)]
  ]) {
    assert.equal(res.status, 401, `${what}: ${res.text}`)
    assert.equal(res.json.error.code, 'unauthorized', what)
    assert.ok(!res.text.includes(r.json.token), 'the answer never quotes the token')
  }
  // revoking the old token revokes its renewal too (a leaked token's renewals die with it):
  // both in PostgreSQL, both in Redis's revoked set, a revoke event for each
  assert.equal((await api.request('DELETE', `/v1/tokens/${old.id}`, { session: u.session })).status, 204)
  const after = (await api.request('GET', '/v1/tokens', { session: u.session })).json.tokens
  for (const id of [old.id, r.json.id]) assert.notEqual(after.find((t) => t.id === id).revoked_at, null, `${id} revoked`)
  const key = `dvv:user:{${u.user.id}}:revoked`
  await until(async () => (await api.redis('ZSCORE', key, r.json.id)) !== null && (await api.redis('ZSCORE', key, old.id)) !== null, { what: 'both in the revoked set' })
  const evs = await events(api.redisPort)
  for (const id of [old.id, r.json.id]) assert.ok(evs.some((e) => e.type === 'revoke' && e.jti === id && e.tid === tid), `a revoke event for ${id}`)
  // revoked: refused
  await api.sql(`UPDATE agent_tokens SET created_at = now() - interval '40 days' WHERE id = '${r.json.id}'`)
  const rv = await renew(r.json.token)
  assert.equal(rv.status, 401, rv.text)
  assert.match(rv.json.error.message, /revoked/)
  // the tunnel deleted: refused
  const v = await api.signup()
  const vtid = (await api.request('GET', '/v1/tunnels', { session: v.session })).json.tunnels[0].id
  const vt = (await api.request('POST', '/v1/tokens', { session: v.session, body: { tunnel_id: vtid, ttl_days: 2 } })).json
  await api.sql(`UPDATE agent_tokens SET created_at = now() - interval '10 days' WHERE id = '${vt.id}'`)
  assert.equal((await api.request('DELETE', `/v1/tunnels/${vtid}`, { session: v.session })).status, 204)
  assert.equal((await renew(vt.token)).status, 401)
  // the token is in no log line of the API
  const log = fs.readFileSync(api.proc.stderrLog, 'utf8') + fs.readFileSync(api.proc.stdoutLog, 'utf8')
  assert.match(log, new RegExp(`token ${old.id} of tunnel ${tid} renewed as ${r.json.id}`))
  for (const t of [old.token, r.json.token, vt.token]) assert.ok(!log.includes(t.split('.')[2]), 'no token signature in the log')
})

scenario('GET /v1/agent-config: relays, CA, base domain, no auth needed', async () => {
  const r = await api.request('GET', '/v1/agent-config')
  assert.equal(r.status, 200)
  assert.equal(r.json.api, api.url)
  assert.deepEqual(r.json.relays, { eu: '127.0.0.1:7000' })
  assert.equal(r.json.ca_pem, fs.readFileSync(api.keys.ca, 'utf8'))
  assert.equal(r.json.base_domain, 'dvv.test')
})
