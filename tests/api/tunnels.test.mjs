// Tunnels and plans: create within max_tunnels, subdomain rules, plan changes through
// `dvv-api plan set` (Redis plan hash and event), downgrade suspends the newest extra tunnels,
// delete blocks the tunnel and revokes its tokens.

import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { after, before } from 'node:test'
import { scenario } from '../e2e/harness.mjs'
import { bin, cleanupApi, events, startApi, until } from './api.mjs'

let api
before(async () => { api = await startApi() })
after(cleanupApi)

function planSet (email, tier) {
  const args = [...api.args, 'plan', 'set', email, tier]
  return new Promise((resolve) => {
    execFile(bin('dvv-api'), args, { timeout: 30000 }, (err, stdout, stderr) => resolve({ code: err ? err.code : 0, stdout, stderr }))
  })
}

const planKey = (u) => `dvv:user:{${u.user.id}}:plan`

scenario('signup gives the default plan and one tunnel; a second is over the free plan (403 plan_limit)', async () => {
  const u = await api.signup()
  const list = await api.request('GET', '/v1/tunnels', { session: u.session })
  assert.equal(list.json.tunnels.length, 1)
  const t = list.json.tunnels[0]
  assert.match(t.id, /^t_[a-z0-9]{20}$/)
  assert.deepEqual({ ...t, id: 0, created_at: 0 }, { id: 0, label: null, hostname: null, state: 'active', online: false, players: 0, region: null, instance: null, bytes: 0, created_at: 0 })
  const r = await api.request('POST', '/v1/tunnels', { session: u.session, body: {} })
  assert.equal(r.status, 403)
  assert.equal(r.json.error.code, 'plan_limit')
  const plan = await until(async () => { const h = await api.hgetall(planKey(u)); return h.tier && h })
  assert.deepEqual({ ...plan.value, version: 0 }, { tier: 'free', max_tunnels: '1', custom_names: '0', idle_timeout_s: '1800', bandwidth_bytes: '10737418240', max_players: '20', priority: '0', status: 'active', version: 0 })
  const me = await api.request('GET', '/v1/me', { session: u.session })
  assert.equal(me.json.plan.tier, 'free')
  assert.equal(me.json.usage.capped, false)
})

scenario('live state from the relays: hostname, online, players, bytes this period', async () => {
  const u = await api.signup()
  const tid = (await api.request('GET', '/v1/tunnels', { session: u.session })).json.tunnels[0].id
  await api.redis('SET', `dvv:tunnel:{${tid}}`, 'old-name.eu.dvv.test')
  let t = (await api.request('GET', '/v1/tunnels', { session: u.session })).json.tunnels[0]
  assert.equal(t.hostname, 'old-name.eu.dvv.test')
  assert.equal(t.online, false)
  const now = Math.floor(Date.now() / 1000)
  await api.redis('HSET', `dvv:user:{${u.user.id}}:live`, tid, JSON.stringify({ hostname: 'zesty-basalt.eu.dvv.test', region: 'eu', instance: 'r1', players: 3, since: now - 60, t: now }))
  const me0 = (await api.request('GET', '/v1/me', { session: u.session })).json
  await api.redis('HSET', `dvv:user:{${u.user.id}}:usage`, 'period', String(me0.plan.period_start), 'bytes', '10737418240', `t:${tid}`, '1234')
  t = (await api.request('GET', '/v1/tunnels', { session: u.session })).json.tunnels[0]
  assert.deepEqual([t.hostname, t.online, t.players, t.region, t.instance, t.bytes], ['zesty-basalt.eu.dvv.test', true, 3, 'eu', 'r1', 1234])
  const me = (await api.request('GET', '/v1/me', { session: u.session })).json
  assert.deepEqual(me.usage, { bytes: 10737418240, bandwidth_bytes: 10737418240, capped: true })
  // a stale live entry (agent gone for > 75 s) is offline; a different period counts nothing
  await api.redis('HSET', `dvv:user:{${u.user.id}}:live`, tid, JSON.stringify({ hostname: 'zesty-basalt.eu.dvv.test', region: 'eu', instance: 'r1', players: 3, since: now - 600, t: now - 200 }))
  await api.redis('HSET', `dvv:user:{${u.user.id}}:usage`, 'period', '1')
  t = (await api.request('GET', '/v1/tunnels', { session: u.session })).json.tunnels[0]
  assert.deepEqual([t.online, t.players, t.bytes], [false, 0, 0])
})

scenario('subdomains: plan_required on free; invalid, reserved, taken in PostgreSQL and in Redis', async () => {
  const u = await api.signup()
  const tid = (await api.request('GET', '/v1/tunnels', { session: u.session })).json.tunnels[0].id
  const put = (label, id = tid, s = u.session) => api.request('PUT', `/v1/tunnels/${id}/subdomain`, { session: s, body: { label } })
  let r = await put('sleepy-creeper')
  assert.equal(r.status, 403)
  assert.equal(r.json.error.code, 'plan_required')
  const ps = await planSet(u.email, 'paid')
  assert.equal(ps.code, 0, ps.stderr)
  for (const bad of ['ab', 'a'.repeat(41), '-abc', 'abc-', 'ABC', 'a_b', 'xn--abc', 'café', 'a b c', '']) {
    r = await put(bad)
    assert.equal(r.status, 422, `${bad}: ${r.text}`)
    assert.equal(r.json.error.code, 'invalid_label')
  }
  for (const res of ['www', 'api', 'admin', 'dvv', 'mail', 'status', 'dashboard']) {
    r = await put(res)
    assert.equal(r.status, 422, res)
    assert.equal(r.json.error.code, 'reserved_name')
  }
  const label = `sleepy-${Date.now().toString(36)}`
  r = await put(label)
  assert.equal(r.status, 200, r.text)
  assert.equal(r.json.label, label)
  await until(async () => (await api.redis('HGET', `dvv:user:{${u.user.id}}:names`, tid)) === label, { timeoutMs: 1000, what: 'the names hash' })
  // taken in PostgreSQL by another user's tunnel
  const v = await api.signup()
  assert.equal((await planSet(v.email, 'paid')).code, 0)
  const vtid = (await api.request('GET', '/v1/tunnels', { session: v.session })).json.tunnels[0].id
  r = await put(label, vtid, v.session)
  assert.equal(r.status, 409)
  assert.equal(r.json.error.code, 'name_taken')
  // taken in Redis: a relay recorded another tunnel as the owner of that name
  const label2 = `creeper-${Date.now().toString(36)}`
  await api.redis('SET', `dvv:{${label2}.eu.dvv.test}:owner`, 't_someoneelse0000000000')
  r = await put(label2, vtid, v.session)
  assert.equal(r.status, 409)
  assert.equal(r.json.error.code, 'name_taken')
  // held in Redis by this very tunnel (its random name from before): fine
  await api.redis('SET', `dvv:{${label2}.eu.dvv.test}:owner`, vtid)
  r = await put(label2, vtid, v.session)
  assert.equal(r.status, 200, r.text)
  // the token carries the label while the plan allows it
  const tok = (await api.request('POST', '/v1/tokens', { session: u.session, body: { tunnel_id: tid } })).json.token
  const c = JSON.parse(Buffer.from(tok.split('.')[1], 'base64url'))
  assert.equal(c.name, label)
  assert.equal(c.plan, 'paid')
  // delete the label: gone from Redis, free for others
  assert.equal((await api.request('DELETE', `/v1/tunnels/${tid}/subdomain`, { session: u.session })).status, 204)
  await until(async () => (await api.redis('HGET', `dvv:user:{${u.user.id}}:names`, tid)) === null, { timeoutMs: 1000 })
  r = await put(label, vtid, v.session)
  assert.equal(r.status, 200, r.text)
})

scenario('plan set paid -> plan hash + plan event; downgrade suspends the newest extra tunnels and drops labels from Redis', async () => {
  const u = await api.signup()
  assert.equal((await planSet(u.email, 'paid')).code, 0)
  const h = await until(async () => { const x = await api.hgetall(planKey(u)); return x.tier === 'paid' && x }, { timeoutMs: 1000 })
  assert.equal(h.value.max_tunnels, '5')
  assert.equal(h.value.custom_names, '1')
  assert.equal(h.value.priority, '1')
  const v1 = Number(h.value.version)
  const ev = (await events(api.redisPort)).filter((e) => e.sub === u.user.id && e.type === 'plan')
  assert.ok(ev.length >= 1)
  const ids = [(await api.request('GET', '/v1/tunnels', { session: u.session })).json.tunnels[0].id]
  for (let i = 0; i < 3; i++) {
    const r = await api.request('POST', '/v1/tunnels', { session: u.session, body: {} })
    assert.equal(r.status, 201, r.text)
    ids.push(r.json.id)
  }
  const label = `keep-${Date.now().toString(36)}`
  assert.equal((await api.request('PUT', `/v1/tunnels/${ids[0]}/subdomain`, { session: u.session, body: { label } })).status, 200)
  await until(async () => (await api.redis('HGET', `dvv:user:{${u.user.id}}:names`, ids[0])) === label)
  const before = (await events(api.redisPort)).length
  assert.equal((await planSet(u.email, 'free')).code, 0)
  const blocked = await until(async () => { const s = await api.redis('SMEMBERS', `dvv:user:{${u.user.id}}:blocked`); return s.length === 3 && s }, { timeoutMs: 1000, what: 'three blocked tunnels' })
  assert.deepEqual(blocked.value.sort(), ids.slice(1).sort(), 'the oldest stays, the newer three are suspended')
  const h2 = await api.hgetall(planKey(u))
  assert.equal(h2.tier, 'free')
  assert.ok(Number(h2.version) > v1, 'version increases')
  assert.equal(await api.redis('HLEN', `dvv:user:{${u.user.id}}:names`), 0, 'no custom names on free')
  const list = (await api.request('GET', '/v1/tunnels', { session: u.session })).json.tunnels
  assert.deepEqual(list.map((t) => t.state), ['active', 'suspended', 'suspended', 'suspended'])
  assert.equal(list[0].label, label, 'the label stays in PostgreSQL')
  const newEv = (await events(api.redisPort)).slice(before).filter((e) => e.sub === u.user.id)
  assert.deepEqual(newEv.map((e) => e.type).sort(), ['plan', 'tunnel', 'tunnel', 'tunnel'])
  assert.ok(newEv.filter((e) => e.type === 'tunnel').every((e) => e.reason === 'suspended'))
  // the audit trail
  const audit = await api.sql(`SELECT coalesce(from_tier, '-'), to_tier, source FROM plan_changes WHERE user_id = '${u.user.id}' ORDER BY id`)
  assert.deepEqual(audit, [['-', 'free', 'signup'], ['free', 'paid', 'admin'], ['paid', 'free', 'admin']])
  // a no-op writes nothing
  assert.equal((await planSet(u.email, 'free')).code, 0)
  assert.equal((await api.sql(`SELECT count(*) FROM plan_changes WHERE user_id = '${u.user.id}'`))[0][0], '3')
  // upgrade again: everything runs, the label is back
  assert.equal((await planSet(u.email, 'paid')).code, 0)
  await until(async () => (await api.redis('SCARD', `dvv:user:{${u.user.id}}:blocked`)) === 0, { timeoutMs: 1000 })
  assert.equal(await api.redis('HGET', `dvv:user:{${u.user.id}}:names`, ids[0]), label)
  // unknown user / plan
  assert.notEqual((await planSet('nobody@example.com', 'paid')).code, 0)
  assert.notEqual((await planSet(u.email, 'platinum')).code, 0)
})

scenario('delete a tunnel: blocked, tokens revoked, `tunnel` deleted event; a suspended one moves up', async () => {
  const u = await api.signup()
  const first = (await api.request('GET', '/v1/tunnels', { session: u.session })).json.tunnels[0].id
  const tok = (await api.request('POST', '/v1/tokens', { session: u.session, body: { tunnel_id: first } })).json
  assert.equal((await planSet(u.email, 'paid')).code, 0)
  const second = (await api.request('POST', '/v1/tunnels', { session: u.session, body: {} })).json.id
  assert.equal((await planSet(u.email, 'free')).code, 0)
  await until(async () => (await api.redis('SISMEMBER', `dvv:user:{${u.user.id}}:blocked`, second)) === 1, { timeoutMs: 1000 })
  const r = await api.request('DELETE', `/v1/tunnels/${first}`, { session: u.session })
  assert.equal(r.status, 204)
  await until(async () => (await api.redis('SISMEMBER', `dvv:user:{${u.user.id}}:blocked`, first)) === 1, { timeoutMs: 1000, what: 'deleted tunnel blocked' })
  assert.equal(await api.redis('SISMEMBER', `dvv:user:{${u.user.id}}:blocked`, second), 0, 'the suspended tunnel is within the limit again')
  assert.notEqual(await api.redis('ZSCORE', `dvv:user:{${u.user.id}}:revoked`, tok.id), null)
  const ev = (await events(api.redisPort)).find((e) => e.type === 'tunnel' && e.tid === first)
  assert.deepEqual({ ...ev, id: 0 }, { id: 0, type: 'tunnel', sub: u.user.id, tid: first, reason: 'deleted' })
  const list = (await api.request('GET', '/v1/tunnels', { session: u.session })).json.tunnels
  assert.deepEqual(list.map((t) => [t.id, t.state]), [[second, 'active']])
  assert.equal((await api.request('DELETE', `/v1/tunnels/${first}`, { session: u.session })).status, 404)
  assert.equal((await api.request('POST', '/v1/tokens', { session: u.session, body: { tunnel_id: first } })).status, 404)
})
