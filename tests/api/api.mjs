// Starts dvv-api for a test: a throwaway PostgreSQL (pg.mjs), a throwaway Redis and fresh
// signing keys (tests/e2e/harness.mjs), and gives HTTP helpers (request, signup, login), a raw
// Redis client (redis) and SQL (sql). cleanupApi() stops all of it.

import fs from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import path from 'node:path'
import crypto from 'node:crypto'
import {
  REPO_ROOT, bin, cleanup, freePort, httpGet, makeKeys, sanitizerReports, sleep, spawnProcess, startRedis, stopProcess, waitForLine
} from '../e2e/harness.mjs'
import { startPg, stopAllPg } from './pg.mjs'

export { sleep }

/** One Redis command over RESP; resolves the parsed reply (errors as {error}). */
export function redis (port, ...args) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1')
    let buf = Buffer.alloc(0)
    const t = setTimeout(() => { sock.destroy(); reject(new Error('redis timeout')) }, 5000)
    sock.on('connect', () => {
      let s = `*${args.length}\r\n`
      for (const a of args) { const b = Buffer.from(String(a)); s += `$${b.length}\r\n${b}\r\n` }
      sock.write(s)
    })
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d])
      const r = parse(buf, 0)
      if (r) { clearTimeout(t); sock.destroy(); resolve(r.v) }
    })
    sock.on('error', (e) => { clearTimeout(t); reject(e) })
  })
}

function parse (b, i) {
  const nl = b.indexOf('\r\n', i)
  if (nl < 0) return null
  const line = b.toString('utf8', i + 1, nl)
  const t = String.fromCharCode(b[i])
  if (t === '+') return { v: line, i: nl + 2 }
  if (t === '-') return { v: { error: line }, i: nl + 2 }
  if (t === ':') return { v: Number(line), i: nl + 2 }
  if (t === '$') {
    const n = Number(line)
    if (n < 0) return { v: null, i: nl + 2 }
    if (b.length < nl + 2 + n + 2) return null
    return { v: b.toString('utf8', nl + 2, nl + 2 + n), i: nl + 2 + n + 2 }
  }
  if (t === '*') {
    const n = Number(line)
    if (n < 0) return { v: null, i: nl + 2 }
    const out = []
    let j = nl + 2
    for (let k = 0; k < n; k++) {
      const r = parse(b, j)
      if (!r) return null
      out.push(r.v)
      j = r.i
    }
    return { v: out, i: j }
  }
  throw new Error('bad RESP')
}

/** HGETALL as an object. */
export async function hgetall (port, key) {
  const arr = await redis(port, 'HGETALL', key)
  const o = {}
  for (let i = 0; i < arr.length; i += 2) o[arr[i]] = arr[i + 1]
  return o
}

/** Raw HTTP request. body: object (JSON), string or Buffer. Resolves {status, headers, text, json}. */
export function request (port, method, urlPath, { body, headers = {}, session, cookie, timeoutMs = 15000 } = {}) {
  return new Promise((resolve, reject) => {
    const h = { ...headers }
    let data = null
    if (body !== undefined) {
      data = Buffer.isBuffer(body) ? body : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body))
      if (!Object.keys(h).some((k) => k.toLowerCase() === 'content-type')) h['Content-Type'] = 'application/json'
      h['Content-Length'] = data.length
    }
    if (session) h.Authorization = `Bearer ${session}`
    if (cookie) h.Cookie = `dvv_session=${cookie}`
    const req = http.request({ host: '127.0.0.1', port, method, path: urlPath, headers: h, agent: false, timeout: timeoutMs }, (res) => {
      const chunks = []
      res.on('data', (d) => chunks.push(d))
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8')
        let json = null
        try { json = text ? JSON.parse(text) : null } catch {}
        resolve({ status: res.statusCode, headers: res.headers, text, json })
      })
    })
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', reject)
    if (data) req.write(data)
    req.end()
  })
}

/** mkkeys.sh output plus a signing key dir holding <kid>.key and <kid>.pub (kid "k1"). */
export async function apiKeys (kid = 'k1') {
  const keys = await makeKeys()
  const dir = path.join(keys.dir, 'jwt')
  fs.mkdirSync(dir, { recursive: true })
  fs.copyFileSync(keys.jwtKey, path.join(dir, `${kid}.key`))
  fs.copyFileSync(keys.jwtPub, path.join(dir, `${kid}.pub`))
  return { ...keys, kid, keyDir: dir, kidPub: path.join(dir, `${kid}.pub`) }
}

const apiProcs = new Set()
let counter = 0
export function uniqueEmail (tag = 'user') {
  return `${tag}-${process.pid}-${++counter}-${crypto.randomBytes(3).toString('hex')}@example.com`
}
export const PASSWORD = 'correct horse battery 9'

const TEST_ARGS = ['--argon2-m-kib', '8192', '--argon2-t', '1', '--rate-ip-per-min', '0', '--rate-account-per-min', '0']

/**
 * dvv-api with its own database. Shares pg/redis/keys when given (two APIs on one database).
 * Resolves {proc, port, url, pg, db, redisPort, keys, request, signup, login, sql, redis, stop}.
 */
export async function startApi ({ pg, db, redisPort, keys, extraArgs = [], env = {}, testArgs = TEST_ARGS, waitReady = true } = {}) {
  pg = pg || await startPg()
  if (!db) {
    db = `dvv_${++counter}_${process.pid}`
    await pg.createDb(db)
  }
  if (!redisPort) redisPort = (await startRedis()).port
  keys = keys || await apiKeys()
  const port = await freePort()
  const url = `http://127.0.0.1:${port}`
  const args = [
    '--listen', `127.0.0.1:${port}`,
    '--pg', pg.conninfo(db),
    '--redis', `127.0.0.1:${redisPort}`,
    '--jwt-key-dir', keys.keyDir,
    '--plans', path.join(REPO_ROOT, 'deploy', 'plans.json'),
    '--web-root', path.join(REPO_ROOT, 'api', 'web'),
    '--public-url', url,
    '--relays', 'eu=127.0.0.1:7000',
    '--base-domain', 'dvv.test',
    '--ca-pem', keys.ca,
    ...testArgs,
    ...extraArgs
  ]
  const proc = spawnProcess('api', bin('dvv-api'), args, { env })
  apiProcs.add(proc)
  const api = {
    proc, port, url, pg, db, redisPort, keys, args,
    request: (method, p, opts) => request(port, method, p, opts),
    sql: (q) => pg.psql(db, q),
    redis: (...a) => redis(redisPort, ...a),
    hgetall: (k) => hgetall(redisPort, k),
    async signup (email = uniqueEmail(), password = PASSWORD) {
      const r = await request(port, 'POST', '/v1/signup', { body: { email, password } })
      if (r.status !== 201) throw new Error(`signup ${email}: ${r.status} ${r.text}`)
      return { email, password, session: r.json.session, user: r.json.user, res: r }
    },
    async login (email, password = PASSWORD) {
      return request(port, 'POST', '/v1/login', { body: { email, password } })
    }
  }
  if (waitReady) await waitApiReady(api)
  return api
}

export async function waitApiReady (api, timeoutMs = 20000) {
  const t0 = Date.now()
  for (;;) {
    if (api.proc.exited) throw new Error(`dvv-api exited (code ${api.proc.exitCode})`)
    const r = await httpGet(api.port, '/readyz')
    if (r.status === 200) return
    if (Date.now() - t0 > timeoutMs) throw new Error('dvv-api not ready')
    await sleep(100)
  }
}

/** Poll fn until it returns a truthy value (or throw after timeoutMs). */
export async function until (fn, { timeoutMs = 3000, intervalMs = 50, what = 'condition' } = {}) {
  const t0 = Date.now()
  for (;;) {
    const v = await fn()
    if (v) return { value: v, ms: Date.now() - t0 }
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(intervalMs)
  }
}

/** Entries of the control stream as [{id, ...fields}]. */
export async function events (redisPort, prefix = 'dvv:') {
  const arr = await redis(redisPort, 'XRANGE', `${prefix}{ctl}:events`, '-', '+')
  return (arr || []).map(([id, f]) => {
    const o = { id }
    for (let i = 0; i < f.length; i += 2) o[f[i]] = f[i + 1]
    return o
  })
}

/** Stop everything; then fail the file if any process (dvv-api under ASan+UBSan) reported. */
export async function cleanupApi () {
  const procs = [...apiProcs]
  apiProcs.clear()
  await Promise.all(procs.filter((p) => !p.exited).map((p) => stopProcess(p)))
  const found = sanitizerReports(procs)
  await cleanup()
  await stopAllPg()
  if (found.length) throw new Error(`sanitizer reports from dvv-api:\n${found.map((f) => `${f.name}: ${f.line}`).join('\n')}`)
}

export { waitForLine, spawnProcess, bin, REPO_ROOT }
