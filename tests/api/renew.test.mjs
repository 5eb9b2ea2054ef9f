// A long-running agent renews the token `dvv login` stored, and presents the new one when it
// registers again. The token the agent starts with is past half its life and expires a few
// seconds later (signed here with the API's own key, its row in PostgreSQL aged to match), so:
// the agent renews it at once (POST /v1/tokens/renew), saves the new token in its credentials
// file (still 0600), keeps its tunnel up on the old token, and once the old token has expired
// (past the relays' 30 s leeway) a drain moves it to the region's other relay, which accepts
// only the new token. Both relays are real, verifying with the API's public key.
//
//   node --test --test-concurrency=1 tests/api/renew.test.mjs   (root not needed)

import { before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import * as h from '../e2e/harness.mjs'
import { join } from '../e2e/mc-client.mjs'
import { startApi, apiKeys, cleanupApi, until } from './api.mjs'

let keys, redis, relayA, api, mc, user, cfgHome, tunnelId, minted

function dvv (args, { timeoutMs = 20000 } = {}) {
  return new Promise((resolve) => {
    execFile(h.bin('dvv'), args, {
      env: { ...process.env, XDG_CONFIG_HOME: cfgHome, DVV_API: '', DVV_TOKEN: '', DVV_RELAY: '' },
      timeout: timeoutMs
    }, (err, stdout, stderr) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }))
  })
}

const credsFile = () => path.join(cfgHome, 'dvv', 'agent.json')
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url')

/** The API-minted token re-signed with the API's key with other times (same jti, sub, tid). */
function resign (token, { iat, exp }) {
  const claims = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString())
  const head = b64({ alg: 'ES256', kid: keys.kid, typ: 'JWT' })
  const body = b64({ ...claims, iat, nbf: iat, exp })
  const sig = crypto.sign('sha256', Buffer.from(`${head}.${body}`), { key: fs.readFileSync(path.join(keys.keyDir, `${keys.kid}.key`)), dsaEncoding: 'ieee-p1363' })
  return `${head}.${body}.${sig.toString('base64url')}`
}

before(h.withLogs('setup', async () => {
  h.requireBinaries(['dvv-relay', 'dvv', 'dvv-api'])
  keys = await apiKeys()
  redis = await h.startRedis()
  relayA = await h.startRelay({ redisPort: redis.port, keys, instanceId: 'renew-a', extraArgs: ['--jwt-pubkey', keys.kidPub] })
  api = await startApi({ redisPort: redis.port, keys, extraArgs: ['--relays', `eu=127.0.0.1:${relayA.agentPort}`] })
  mc = await h.startMcServer({ motd: 'DVV token renewal' })
  cfgHome = await h.makeTempDir('xdg')
  user = await api.signup()
  tunnelId = (await api.request('GET', '/v1/tunnels', { session: user.session })).json.tunnels[0].id
  minted = await api.request('POST', '/v1/tokens', { session: user.session, body: { tunnel_id: tunnelId, ttl_days: 1 } })
  assert.equal(minted.status, 201, minted.text)
}), { timeout: 120000 })

after(cleanupApi)

h.scenario('an agent renews its stored token past half its life and registers with the new one after the old expired', { timeout: 150000 }, async () => {
  const now = Math.floor(Date.now() / 1000)
  const iat = now - 100
  const exp = now + 5 // expires 5 s from now: a relay refuses it from exp + 30 s (leeway)
  await api.sql(`UPDATE agent_tokens SET created_at = to_timestamp(${iat}), expires_at = to_timestamp(${exp}) WHERE id = '${minted.json.id}'`)
  const old = resign(minted.json.token, { iat, exp })
  const login = await dvv(['login', '--api', api.url, '--token', old])
  assert.equal(login.code, 0, `dvv login: ${login.stderr}`)

  const proc = h.spawnProcess('agent', h.bin('dvv'), ['--json', '--local', `127.0.0.1:${mc.port}`],
    { env: { XDG_CONFIG_HOME: cfgHome, DVV_TOKEN: '', DVV_RELAY: '', DVV_REGIONS: '' } })
  const { ev: up } = await h.waitForLine(proc, (_l, e) => e && e.event === 'tunnel_up', { timeoutMs: 20000, what: 'a tunnel_up event' })
  assert.equal(up.relay, `127.0.0.1:${relayA.agentPort}`)

  // renewed at once (overdue), saved in the credentials file, still 0600
  const saved = await until(() => {
    const t = JSON.parse(fs.readFileSync(credsFile(), 'utf8')).token
    return t !== old && t
  }, { timeoutMs: 15000, what: 'a renewed token in the credentials file' })
  const fresh = saved.value
  assert.equal(fs.statSync(credsFile()).mode & 0o777, 0o600)
  const c = JSON.parse(Buffer.from(fresh.split('.')[1], 'base64url').toString())
  assert.equal(c.tid, tunnelId)
  assert.notEqual(c.jti, minted.json.id)
  assert.ok(c.exp - c.iat >= 86400, `the new token lives a day (the shortest lifetime): ${c.exp - c.iat} s`)
  const toks = (await api.request('GET', '/v1/tokens', { session: user.session })).json.tokens
  assert.deepEqual(toks.map((t) => t.id).sort(), [minted.json.id, c.jti].sort())
  assert.ok(toks.every((t) => t.revoked_at === null), 'the old token is not revoked: the session on it stays')
  process.stderr.write(`[renew] token renewed ${saved.ms} ms after the agent started\n`)

  // the second relay joins the region; once the old token is past exp + leeway, drain relay A
  const relayB = await h.startRelay({ redisPort: redis.port, keys, instanceId: 'renew-b', extraArgs: ['--jwt-pubkey', keys.kidPub] })
  const waitMs = (exp + 31) * 1000 - Date.now()
  if (waitMs > 0) await h.sleep(waitMs)
  // the tunnel is still up on the old token meanwhile
  const p = await join({ relayPort: relayA.playerPort, hostname: up.hostname, username: 'oldtok', timeoutMs: 15000 })
  assert.equal(p.ok, true, `a player joins while the agent's session runs on the expired token: ${JSON.stringify(p)}`)
  const n0 = proc.lines.length
  let seen = 0 // waitForLine calls the predicate once per line, oldest first: skip the first n0
  process.kill(relayA.pid, 'SIGTERM')
  const { ev: moved } = await h.waitForLine(proc, (_l, e) => ++seen > n0 && e && (e.event === 'tunnel_up' || e.event === 'error'), { timeoutMs: 30000, what: 'the agent on relay B' })
  assert.equal(moved.event, 'tunnel_up', `the agent registered on relay B with the renewed token: ${JSON.stringify(moved)}`)
  assert.equal(moved.relay, `127.0.0.1:${relayB.agentPort}`)
  const q = await join({ relayPort: relayB.playerPort, hostname: moved.hostname, username: 'newtok', timeoutMs: 15000 })
  assert.equal(q.ok, true, `a player joins through relay B: ${JSON.stringify(q)}`)
  // no token in the agent's output
  const out = fs.readFileSync(proc.stdoutLog, 'utf8') + fs.readFileSync(proc.stderrLog, 'utf8')
  for (const t of [old, fresh]) assert.ok(!out.includes(t.split('.')[2]), 'no token signature in the agent output')
  assert.match(out, /token renewed/)
})
