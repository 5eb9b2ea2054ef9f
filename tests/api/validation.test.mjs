// Request validation: every bad input gets the one error shape with the right status and code;
// SQL injection strings are stored verbatim or rejected, never executed; oversized bodies are
// refused before they are read; only JSON is accepted.

import assert from 'node:assert/strict'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { after, before } from 'node:test'
import { makeTempDir, scenario } from '../e2e/harness.mjs'
import { PASSWORD, cleanupApi, sleep, startApi, uniqueEmail } from './api.mjs'

let api
before(async () => { api = await startApi() })
after(cleanupApi)

function isError (r, status, code) {
  assert.equal(r.status, status, `${r.status} ${r.text}`)
  assert.equal(r.headers['content-type'], 'application/json')
  assert.equal(r.json.error.code, code, r.text)
  assert.equal(typeof r.json.error.message, 'string')
  assert.ok(r.json.error.message.length > 0)
}

scenario('signup validation: missing, wrong types, bad email, weak password, unknown fields', async () => {
  const cases = [
    [{}, 400, 'invalid_field'],
    [{ email: 'a@b.example' }, 400, 'invalid_field'],
    [{ email: 5, password: PASSWORD }, 400, 'invalid_field'],
    [{ email: 'not-an-email', password: PASSWORD }, 400, 'invalid_field'],
    [{ email: 'a@b', password: PASSWORD }, 400, 'invalid_field'],
    [{ email: 'x'.repeat(250) + '@b.example', password: PASSWORD }, 400, 'invalid_field'],
    [{ email: uniqueEmail(), password: 'short1!' }, 422, 'weak_password'],
    [{ email: uniqueEmail(), password: 'abcdefghijk' }, 422, 'weak_password'],
    [{ email: uniqueEmail(), password: 'x'.repeat(257) }, 400, 'invalid_field'],
    [{ email: uniqueEmail(), password: PASSWORD, admin: true }, 400, 'invalid_field'],
    [[1, 2], 400, 'invalid_json'],
    ['"just a string"', 400, 'invalid_json'],
    ['{"email": "a@b.example", "email": "c@d.example", "password": "x"}', 400, 'invalid_json'],
    ['{"email":', 400, 'invalid_json']
  ]
  for (const [body, status, code] of cases) {
    const r = await api.request('POST', '/v1/signup', { body })
    isError(r, status, code)
  }
  const rows = await api.sql('SELECT count(*) FROM users')
  assert.equal(rows[0][0], '0', 'no invalid signup created a user')
})

scenario('SQL injection strings in every field are stored verbatim or rejected, never run', async () => {
  const evil = ["'; DROP TABLE users; --", "x' OR '1'='1", 'a"); DELETE FROM sessions; --', "\\'; SELECT pg_sleep(5); --"]
  // email: the local part may hold quotes; stored verbatim
  const email = `o'brien+${Date.now()}@example.com`
  const s = await api.request('POST', '/v1/signup', { body: { email, password: evil[0] + 'Aa1' } })
  assert.equal(s.status, 201, s.text)
  assert.equal(s.json.user.email, email)
  const stored = await api.sql(`SELECT email FROM users WHERE id = '${s.json.user.id}'`)
  assert.equal(stored[0][0], email)
  const l = await api.login(email, evil[0] + 'Aa1')
  assert.equal(l.status, 200, 'the password with SQL in it is just a password')
  for (const e of evil) {
    const r1 = await api.login(`${e}@example.com`, e)
    assert.ok([400, 401].includes(r1.status), r1.text)
    const r2 = await api.request('POST', '/v1/tokens', { session: s.json.session, body: { tunnel_id: e } })
    isError(r2, 404, 'not_found')
    const r3 = await api.request('PUT', `/v1/tunnels/${encodeURIComponent(e)}/subdomain`, { session: s.json.session, body: { label: e } })
    assert.equal(r3.status, 404, r3.text) // not a valid id segment: no route
    const r4 = await api.request('GET', '/v1/me', { session: e })
    isError(r4, 401, 'unauthorized')
  }
  // the tables are all still there and hold what they should
  const n = await api.sql("SELECT count(*) FROM users WHERE email LIKE 'o''brien+%'")
  assert.equal(n[0][0], '1')
  const sessions = await api.sql('SELECT count(*) FROM sessions')
  assert.ok(Number(sessions[0][0]) >= 2)
})

scenario('a body over 64 KiB is refused with 413 before it is read', async () => {
  const big = JSON.stringify({ email: 'a@b.example', password: 'x'.repeat(70 * 1024) })
  const r = await api.request('POST', '/v1/signup', { body: big })
  isError(r, 413, 'too_large')
  // announced 100 MiB, send only the headers: the answer must come without the body
  const answer = await new Promise((resolve, reject) => {
    const sock = net.connect(api.port, '127.0.0.1')
    let data = ''
    const t = setTimeout(() => { sock.destroy(); reject(new Error('no answer without the body')) }, 5000)
    sock.on('connect', () => sock.write('POST /v1/signup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 104857600\r\n\r\n'))
    sock.on('data', (d) => { data += d; if (data.includes('too_large')) { clearTimeout(t); sock.destroy(); resolve(data) } })
    sock.on('error', reject)
  })
  assert.match(answer, /^HTTP\/1\.1 413/)
  // chunked (no Content-Length): cut once over the limit
  const chunked = await new Promise((resolve) => {
    const sock = net.connect(api.port, '127.0.0.1')
    let data = ''
    sock.on('connect', () => {
      sock.write('POST /v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n')
      const chunk = 'x'.repeat(16384)
      for (let i = 0; i < 6; i++) sock.write(`${chunk.length.toString(16)}\r\n${chunk}\r\n`)
      sock.write('0\r\n\r\n')
    })
    sock.on('data', (d) => { data += d })
    sock.on('close', () => resolve(data))
    sock.on('error', () => resolve(data))
    setTimeout(() => sock.destroy(), 5000)
  })
  assert.match(chunked, /^HTTP\/1\.1 413/)
})

/** Opens `n` connections from `src` that each send a request line and stop. */
async function slowClients (port, n, src) {
  const socks = []
  for (let i = 0; i < n; i++) {
    const s = net.connect({ port, host: '127.0.0.1', localAddress: src })
    s.closedAt = null
    s.on('error', () => {})
    s.on('close', () => { s.closedAt = Date.now() })
    await new Promise((resolve) => { s.once('connect', resolve); s.once('close', resolve) })
    if (!s.destroyed) s.write('GET /healthz HTTP/1.1\r\n')
    socks.push(s)
  }
  return socks
}

scenario('slow clients: 64 held per address and the rest closed at once, other addresses served, idle ones closed after --conn-timeout-s', async () => {
  const slow = await startApi({ pg: api.pg, redisPort: api.redisPort, keys: api.keys, extraArgs: ['--conn-timeout-s', '3'] })
  const socks = await slowClients(slow.port, 100, '127.0.0.1')
  await sleep(500)
  const open = socks.filter((s) => !s.closedAt).length
  assert.equal(open, 64, `connections from one address held after 0.5 s: ${open} of 100`)
  // another address is answered at once (the relays' own health checks, a second user)
  const other = await new Promise((resolve, reject) => {
    const s = net.connect({ port: slow.port, host: '127.0.0.1', localAddress: '127.0.0.2' }, () =>
      s.write('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'))
    let d = ''
    s.on('data', (c) => { d += c })
    s.on('close', () => resolve(d))
    s.on('error', reject)
    setTimeout(() => s.destroy(), 2000)
  })
  assert.match(other, /^HTTP\/1\.1 200/, 'a request from another address is answered while one address is at its cap')
  // the held ones are closed once idle for --conn-timeout-s, and the address is served again
  const t0 = Date.now()
  while (socks.some((s) => !s.closedAt) && Date.now() - t0 < 8000) await sleep(100)
  const held = socks.filter((s) => !s.closedAt).length
  assert.equal(held, 0, `${held} slow connections still open 8 s after a 3 s idle timeout`)
  const r = await slow.request('GET', '/healthz')
  assert.equal(r.status, 200)
})

scenario('wrong content type is 415; unknown route 404; wrong method 405', async () => {
  const r = await api.request('POST', '/v1/login', { body: 'email=a&password=b', headers: { 'Content-Type': 'application/x-www-form-urlencoded' } })
  isError(r, 415, 'unsupported_media_type')
  const r2 = await api.request('POST', '/v1/login', { body: '{}', headers: { 'Content-Type': 'text/plain' } })
  isError(r2, 415, 'unsupported_media_type')
  const ok = await api.request('POST', '/v1/login', { body: '{}', headers: { 'Content-Type': 'application/json; charset=utf-8' } })
  isError(ok, 400, 'invalid_field')
  isError(await api.request('GET', '/v1/nothing'), 404, 'not_found')
  isError(await api.request('DELETE', '/v1/login'), 405, 'method_not_allowed')
  isError(await api.request('GET', '/v1/signup'), 405, 'method_not_allowed')
})

scenario('static files: the dashboard root, no traversal, JSON 404 for the rest', async () => {
  for (const p of ['/../../etc/passwd', '/..%2f..%2fetc/passwd', '/.git/config', '/%2e%2e/Makefile', '//etc/passwd']) {
    const r = await api.request('GET', p)
    assert.equal(r.status, 404, `${p}: ${r.status}`)
    assert.ok(!r.text.includes('root:'), p)
  }
})

scenario('static files from --web-root: content types, index.html, no symlinks out', async () => {
  const root = await makeTempDir('web')
  fs.writeFileSync(path.join(root, 'index.html'), '<!doctype html><title>dvv</title>')
  fs.writeFileSync(path.join(root, 'app.js'), 'console.log(1)')
  fs.writeFileSync(path.join(root, 'style.css'), 'body{}')
  fs.writeFileSync(path.join(root, '.secret'), 'hidden')
  fs.symlinkSync('/etc/passwd', path.join(root, 'passwd'))
  const web = await startApi({ pg: api.pg, redisPort: api.redisPort, extraArgs: ['--web-root', root] })
  const idx = await web.request('GET', '/')
  assert.equal(idx.status, 200)
  assert.equal(idx.headers['content-type'], 'text/html; charset=utf-8')
  assert.match(idx.text, /<title>dvv<\/title>/)
  assert.equal(idx.headers['x-content-type-options'], 'nosniff')
  assert.equal((await web.request('GET', '/app.js')).headers['content-type'], 'text/javascript; charset=utf-8')
  assert.equal((await web.request('GET', '/style.css')).headers['content-type'], 'text/css; charset=utf-8')
  assert.equal((await web.request('GET', '/.secret')).status, 404)
  assert.equal((await web.request('GET', '/passwd')).status, 404, 'a symlink is not followed')
  assert.equal((await web.request('GET', '/missing.js')).status, 404)
})

scenario('metrics count requests by route and status', async () => {
  const r = await api.request('GET', '/metrics')
  assert.equal(r.status, 200)
  assert.match(r.text, /dvv_api_requests_total\{route="signup",status="400"\} \d+/)
  assert.match(r.text, /dvv_api_request_duration_seconds_bucket\{route="signup",le="\+Inf"\} \d+/)
  const h = await api.request('GET', '/healthz')
  assert.equal(h.status, 200)
})
