// Sessions, cookies and the CSRF rule; login answers; rate limits on signup and login.

import assert from 'node:assert/strict'
import { after, before } from 'node:test'
import { scenario } from '../e2e/harness.mjs'
import { PASSWORD, cleanupApi, startApi, uniqueEmail } from './api.mjs'

let api
before(async () => { api = await startApi() })
after(cleanupApi)

scenario('signup sets an HttpOnly SameSite=Strict cookie; the session works as Bearer and cookie', async () => {
  const u = await api.signup()
  const cookie = u.res.headers['set-cookie'][0]
  assert.match(cookie, /^dvv_session=[A-Za-z0-9_-]{43}; /)
  assert.match(cookie, /HttpOnly/)
  assert.match(cookie, /SameSite=Strict/)
  assert.match(cookie, /Path=\//)
  assert.doesNotMatch(cookie, /Secure/, 'plain http public URL: no Secure flag')
  assert.equal(u.session.length, 43)
  // stored hashed: the secret itself is nowhere in the database
  const rows = await api.sql(`SELECT encode(hash, 'hex') FROM sessions WHERE user_id = '${u.user.id}'`)
  assert.equal(rows.length, 1)
  assert.equal(rows[0][0].length, 64)
  const dump = await api.sql('SELECT string_agg(encode(hash, \'escape\'), \'\') FROM sessions')
  assert.ok(!String(dump).includes(u.session))
  assert.equal((await api.request('GET', '/v1/me', { session: u.session })).status, 200)
  assert.equal((await api.request('GET', '/v1/me', { cookie: u.session })).status, 200)
})

scenario('cookie requests other than GET need X-Requested-With: dvv (CSRF); Bearer does not', async () => {
  const u = await api.signup()
  const noHeader = await api.request('POST', '/v1/tunnels', { cookie: u.session, body: {} })
  assert.equal(noHeader.status, 403)
  assert.equal(noHeader.json.error.code, 'csrf')
  const wrong = await api.request('POST', '/v1/logout', { cookie: u.session, headers: { 'X-Requested-With': 'XMLHttpRequest' } })
  assert.equal(wrong.json.error.code, 'csrf')
  const withHeader = await api.request('POST', '/v1/tunnels', { cookie: u.session, body: {}, headers: { 'X-Requested-With': 'dvv' } })
  assert.equal(withHeader.status, 403, 'free plan: one tunnel already')
  assert.equal(withHeader.json.error.code, 'plan_limit')
  const bearer = await api.request('POST', '/v1/tunnels', { session: u.session, body: {} })
  assert.equal(bearer.json.error.code, 'plan_limit')
})

scenario('login: same 401 for unknown email and wrong password; email case does not matter; logout ends the session', async () => {
  const u = await api.signup(uniqueEmail('Case'))
  const bad1 = await api.login(u.email, 'wrong password 1')
  const bad2 = await api.login(uniqueEmail('nobody'), 'wrong password 1')
  assert.equal(bad1.status, 401)
  assert.equal(bad2.status, 401)
  assert.deepEqual(bad1.json, bad2.json)
  const ok = await api.login(u.email.toUpperCase())
  assert.equal(ok.status, 200, ok.text)
  assert.equal(ok.json.user.id, u.user.id)
  const dup = await api.request('POST', '/v1/signup', { body: { email: u.email.toLowerCase(), password: PASSWORD } })
  assert.equal(dup.status, 409)
  assert.equal(dup.json.error.code, 'email_taken')
  const out = await api.request('POST', '/v1/logout', { session: ok.json.session })
  assert.equal(out.status, 204)
  assert.match(out.headers['set-cookie'][0], /Max-Age=0/)
  assert.equal((await api.request('GET', '/v1/me', { session: ok.json.session })).status, 401)
  assert.equal((await api.request('GET', '/v1/me', { session: u.session })).status, 200, 'other sessions live on')
  assert.equal((await api.request('GET', '/v1/me')).status, 401)
})

scenario('rate limits: per IP on signup+login and per account on login, 429 with Retry-After', async () => {
  const limited = await startApi({
    pg: api.pg,
    redisPort: api.redisPort,
    testArgs: ['--argon2-m-kib', '8192', '--argon2-t', '1', '--rate-ip-per-min', '6', '--rate-account-per-min', '3', '--trust-proxy', '1']
  })
  // per account: 3 logins a minute for one email, from different (proxied) addresses
  const u = await limited.signup(uniqueEmail(), PASSWORD)
  let statuses = []
  for (let i = 0; i < 5; i++) {
    const r = await limited.request('POST', '/v1/login', { body: { email: u.email, password: 'wrong password 1' }, headers: { 'X-Forwarded-For': `198.51.100.${i + 1}` } })
    statuses.push(r.status)
    if (r.status === 429) {
      assert.equal(r.json.error.code, 'rate_limited')
      assert.match(r.headers['retry-after'], /^[1-9]\d*$/)
    }
  }
  assert.deepEqual(statuses, [401, 401, 401, 429, 429])
  // per IP: 6 a minute from one address, whatever the account
  statuses = []
  for (let i = 0; i < 8; i++) {
    const r = await limited.request('POST', '/v1/login', { body: { email: uniqueEmail(), password: 'wrong password 1' }, headers: { 'X-Forwarded-For': '203.0.113.7, 203.0.113.9' } })
    statuses.push(r.status)
  }
  assert.deepEqual(statuses, [401, 401, 401, 401, 401, 401, 429, 429])
  // the limit is the last hop's: another last hop is another client
  const other = await limited.request('POST', '/v1/login', { body: { email: uniqueEmail(), password: 'wrong password 1' }, headers: { 'X-Forwarded-For': '203.0.113.9, 203.0.113.10' } })
  assert.equal(other.status, 401)
})
