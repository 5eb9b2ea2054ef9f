// Runs the examples of docs/api.md against a real dvv-api, in document order, so the document
// cannot drift from the API. Format (docs/api.md, "Endpoints"): a ```http block holds a request
// (METHOD PATH, headers, blank line, body) then a line "HTTP/1.1 STATUS" and the answer's JSON
// (optional). Checked: the status exactly, the JSON's shape (same keys at every level, same
// types, every array element like the first one shown), error codes exactly.

import assert from 'node:assert/strict'
import fs from 'node:fs'
import path from 'node:path'
import { after, before } from 'node:test'
import { scenario } from '../e2e/harness.mjs'
import { REPO_ROOT, cleanupApi, startApi, uniqueEmail } from './api.mjs'

export function parseExamples (md) {
  const out = []
  const re = /```http\n([\s\S]*?)```/g
  let m
  while ((m = re.exec(md))) {
    const text = m[1]
    const at = text.search(/^HTTP\/1\.1 \d{3}/m)
    if (at < 0) throw new Error(`example without an HTTP/1.1 status line:\n${text}`)
    const reqText = text.slice(0, at).replace(/\n+$/, '')
    const [head, ...rest] = reqText.split('\n\n')
    const [first, ...headerLines] = head.split('\n')
    const [method, urlPath] = first.split(' ')
    const headers = {}
    for (const h of headerLines) {
      const i = h.indexOf(':')
      headers[h.slice(0, i).trim()] = h.slice(i + 1).trim()
    }
    const resText = text.slice(at)
    const nl = resText.indexOf('\n')
    const status = Number(resText.slice(9, 12))
    const bodyText = resText.slice(nl + 1).trim()
    out.push({ method, path: urlPath, headers, body: rest.join('\n\n'), status, json: bodyText ? JSON.parse(bodyText) : null, source: text })
  }
  return out
}

function typeOf (v) {
  return v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v
}

/** Problems where actual's shape differs from expected's (empty = same). */
export function shapeDiff (expected, actual, where = '$') {
  const te = typeOf(expected)
  const ta = typeOf(actual)
  if (te !== ta) {
    // a documented null may be a string (a label, a hostname) and the other way round
    if ((te === 'null' && ta === 'string') || (te === 'string' && ta === 'null')) return []
    return [`${where}: documented ${te}, got ${ta}`]
  }
  if (te === 'array') {
    if (!expected.length) return []
    return actual.flatMap((a, i) => shapeDiff(expected[0], a, `${where}[${i}]`))
  }
  if (te !== 'object') return []
  const probs = []
  for (const k of Object.keys(expected)) {
    if (!(k in actual)) probs.push(`${where}.${k}: documented, missing`)
    else probs.push(...shapeDiff(expected[k], actual[k], `${where}.${k}`))
  }
  for (const k of Object.keys(actual)) if (!(k in expected)) probs.push(`${where}.${k}: answered, not documented`)
  return probs
}

const doc = fs.readFileSync(path.join(REPO_ROOT, 'docs', 'api.md'), 'utf8')
let api
before(async () => { api = await startApi() })
after(cleanupApi)

scenario('the shape checker itself catches differences', () => {
  assert.deepEqual(shapeDiff({ a: 1, b: [{ c: 's' }] }, { a: 2, b: [{ c: 't' }, { c: 'u' }] }), [])
  assert.equal(shapeDiff({ a: 1 }, { a: '1' }).length, 1)
  assert.equal(shapeDiff({ a: 1 }, { a: 1, b: 2 }).length, 1)
  assert.equal(shapeDiff({ a: 1, b: 2 }, { a: 1 }).length, 1)
  assert.equal(shapeDiff({ l: [{ x: 1 }] }, { l: [{ x: 1 }, { y: 1 }] }).length, 2)
})

scenario('every example in docs/api.md runs as documented', async () => {
  const examples = parseExamples(doc)
  assert.ok(examples.length >= 25, `only ${examples.length} examples found`)
  const vars = { EMAIL: uniqueEmail('docs') }
  const subst = (s) => s.replace(/\$([A-Z_]+)/g, (all, k) => (k in vars ? vars[k] : all))
  for (const ex of examples) {
    const headers = {}
    for (const [k, v] of Object.entries(ex.headers)) headers[k] = subst(v)
    const opts = { headers }
    if (ex.body) opts.body = subst(ex.body)
    const r = await api.request(ex.method, subst(ex.path), opts)
    const label = `${ex.method} ${ex.path} (documented ${ex.status})`
    assert.equal(r.status, ex.status, `${label}: got ${r.status} ${r.text}`)
    if (ex.json === null) {
      assert.equal(r.text, '', `${label}: documented no body`)
      continue
    }
    assert.deepEqual(shapeDiff(ex.json, r.json), [], `${label}: ${r.text}`)
    if (ex.json.error) assert.equal(r.json.error.code, ex.json.error.code, label)
    if (r.json.session) vars.SESSION = r.json.session
    if (ex.method === 'GET' && ex.path === '/v1/tunnels') vars.TUNNEL = r.json.tunnels[0].id
    if (ex.method === 'POST' && ex.path === '/v1/tokens' && r.status === 201) { vars.TOKEN_ID = r.json.id; vars.AGENT_TOKEN = r.json.token }
  }
})
