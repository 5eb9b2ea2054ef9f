// The agent against the real DVV API: sign up, mint a tunnel token (POST /v1/tokens), `dvv login
// --api … --token …`, then plain `dvv` (no token, no relay, no CA on the command line) opens the
// tunnel through a real relay that trusts the API's signing key, and a real Minecraft client
// joins. `dvv login --email` + `dvv tunnels` lists the tunnel; the credentials file is 0600 and
// refused once others can read it; revoking the token makes the running agent exit 3.
//
//   node --test --test-concurrency=1 tests/api/agent.test.mjs

import { before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import * as h from '../e2e/harness.mjs'
import { join } from '../e2e/mc-client.mjs'
import { startApi, apiKeys, cleanupApi, until, PASSWORD } from './api.mjs'

let keys, redis, relay, api, mc, user, cfgHome, tunnelId, tokenRes, agent

/** Run the dvv binary with the test's config home; resolves {code, stdout, stderr}. */
function dvv (args, { env = {}, timeoutMs = 20000 } = {}) {
  return new Promise((resolve) => {
    execFile(h.bin('dvv'), args, {
      env: { ...process.env, XDG_CONFIG_HOME: cfgHome, DVV_API: '', DVV_TOKEN: '', DVV_RELAY: '', ...env },
      timeout: timeoutMs
    }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr })
    })
  })
}

const credsFile = () => path.join(cfgHome, 'dvv', 'agent.json')
const show = (r) => JSON.stringify(r)

// Relay features this test relies on but other branches build: revocation (control events ->
// GOODBYE revoked, branch i11-relay) and live state in Redis (dvv:user:{sub}:live, written by the
// usage flush, branch i11-usage). Looked up in the relay's source of this tree.
function relaySourceHas (re) {
  const dir = path.join(h.REPO_ROOT, 'userspace')
  return fs.readdirSync(dir).filter((f) => f.endsWith('.c'))
    .some((f) => re.test(fs.readFileSync(path.join(dir, f), 'utf8')))
}
const relayActsOnRevocation = () => relaySourceHas(/XREAD COUNT/)
const relayWritesLive = () => relaySourceHas(/user:\{%s\}:live/)

before(h.withLogs('setup', async () => {
  h.requireBinaries(['dvv-relay', 'dvv', 'dvv-api'])
  keys = await apiKeys()
  redis = await h.startRedis()
  // the relay verifies with the very public key file the API signs for (kid k1)
  relay = await h.startRelay({ redisPort: redis.port, keys, extraArgs: ['--jwt-pubkey', keys.kidPub] })
  api = await startApi({ redisPort: redis.port, keys, extraArgs: ['--relays', `eu=127.0.0.1:${relay.agentPort}`] })
  mc = await h.startMcServer({ motd: 'DVV agent + API e2e' })
  cfgHome = await h.makeTempDir('xdg')
  user = await api.signup()
  const list = await api.request('GET', '/v1/tunnels', { session: user.session })
  assert.equal(list.status, 200, `GET /v1/tunnels: ${list.text}`)
  tunnelId = list.json.tunnels[0].id
  tokenRes = await api.request('POST', '/v1/tokens', { session: user.session, body: { tunnel_id: tunnelId } })
  assert.equal(tokenRes.status, 201, `POST /v1/tokens: ${tokenRes.text}`)
}), { timeout: 120000 })

after(cleanupApi)

h.scenario('dvv login --api URL --token T stores the token, relays and CA in a 0600 file in a 0700 directory', async () => {
  const r = await dvv(['login', '--api', api.url, '--token', tokenRes.json.token])
  assert.equal(r.code, 0, `dvv login exited ${r.code}: ${r.stderr}`)
  assert.match(r.stdout, new RegExp(`Token for tunnel ${tunnelId} saved`))
  assert.ok(!r.stdout.includes(tokenRes.json.token) && !r.stderr.includes(tokenRes.json.token), 'the token must never be printed')
  const st = fs.statSync(credsFile())
  assert.equal(st.mode & 0o777, 0o600, `agent.json mode ${(st.mode & 0o777).toString(8)}`)
  assert.equal(fs.statSync(path.dirname(credsFile())).mode & 0o777, 0o700)
  const c = JSON.parse(fs.readFileSync(credsFile(), 'utf8'))
  assert.equal(c.api, api.url)
  assert.equal(c.token, tokenRes.json.token)
  assert.equal(c.tunnel, tunnelId)
  assert.deepEqual(c.relays, { eu: `127.0.0.1:${relay.agentPort}` })
  assert.equal(c.ca_pem, fs.readFileSync(keys.ca, 'utf8'))
  assert.equal(c.session, null)
})

h.scenario('plain dvv runs with the stored credentials and a real player joins through the relay', async () => {
  const proc = h.spawnProcess('agent', h.bin('dvv'), ['--json', '--local', `127.0.0.1:${mc.port}`],
    { env: { XDG_CONFIG_HOME: cfgHome, DVV_TOKEN: '', DVV_RELAY: '', DVV_REGIONS: '' } })
  const { ev } = await h.waitForLine(proc, (_l, e) => e && e.event === 'tunnel_up', { timeoutMs: 20000, what: 'a tunnel_up event' })
  agent = { proc, hostname: ev.hostname }
  assert.equal(ev.relay, `127.0.0.1:${relay.agentPort}`, `expected the stored relay, got ${show(ev)}`)
  assert.match(ev.hostname, /\.eu\.dvv\.test$/)
  const r = await join({ relayPort: relay.playerPort, hostname: ev.hostname, username: 'apiuser', chat: 'via api token', timeoutMs: 15000 })
  assert.equal(r.ok, true, `expected the player to reach play state, got ${show(r)}`)
  assert.equal(r.echoed, 'echo: via api token')
})

h.scenario('a credentials file others can read is refused with the fix', async () => {
  fs.chmodSync(credsFile(), 0o644)
  try {
    const r = await dvv(['--json', '--local', `127.0.0.1:${mc.port}`])
    assert.equal(r.code, 2, `expected a usage error, got ${r.code}: ${r.stderr}`)
    assert.match(r.stderr, /chmod 600/)
    assert.ok(!r.stderr.includes(tokenRes.json.token))
  } finally {
    fs.chmodSync(credsFile(), 0o600)
  }
})

h.scenario('dvv login --email (password from DVV_PASSWORD) then dvv tunnels lists the tunnel with its hostname', async () => {
  let r = await dvv(['login', '--api', api.url, '--email', user.email], { env: { DVV_PASSWORD: PASSWORD } })
  assert.equal(r.code, 0, `dvv login --email exited ${r.code}: ${r.stderr}`)
  assert.ok(!r.stdout.includes(PASSWORD) && !r.stderr.includes(PASSWORD))
  const c = JSON.parse(fs.readFileSync(credsFile(), 'utf8'))
  assert.match(c.session, /^[A-Za-z0-9_-]{20,}$/)
  assert.equal(c.token, tokenRes.json.token, 'logging in to the same API keeps the stored token')
  // a wrong password: 401, exit 3, nothing stored changes
  r = await dvv(['login', '--api', api.url, '--email', user.email], { env: { DVV_PASSWORD: 'wrong password 123' } })
  assert.equal(r.code, 3, `expected exit 3 for a wrong password, got ${r.code}: ${r.stderr}`)
  assert.equal(JSON.parse(fs.readFileSync(credsFile(), 'utf8')).session, c.session)

  r = await dvv(['tunnels', '--json'])
  assert.equal(r.code, 0, `dvv tunnels --json exited ${r.code}: ${r.stderr}`)
  const t = JSON.parse(r.stdout).tunnels.find((x) => x.id === tunnelId)
  assert.ok(t, `tunnel ${tunnelId} missing from ${r.stdout}`)
  assert.equal(t.hostname, agent.hostname, `expected the running tunnel's hostname, got ${show(t)}`)
  if (!relayWritesLive()) {
    process.stderr.write('NOT CHECKED: "online" needs the relay\'s live state (dvv:user:{sub}:live, branch i11-usage), not in this tree\n')
  } else {
    await until(async () => {
      const x = await dvv(['tunnels', '--json'])
      return JSON.parse(x.stdout).tunnels.find((y) => y.id === tunnelId)?.online === true
    }, { timeoutMs: 40000, intervalMs: 500, what: 'dvv tunnels to show the tunnel online' })
  }
  r = await dvv(['tunnels'])
  assert.equal(r.code, 0)
  assert.match(r.stdout, new RegExp(`\\* ${tunnelId}\\s+${agent.hostname.replace(/\./g, '\\.')}`), `human list: ${r.stdout}`)
})

h.scenario('dvv tunnels create is refused over the free plan, with the API\'s message', async () => {
  const r = await dvv(['tunnels', 'create'])
  assert.equal(r.code, 1, `expected exit 1, got ${r.code}: ${r.stdout} ${r.stderr}`)
  assert.match(r.stderr, /plan_limit/)
})

h.scenario('dvv tunnels use ID stores a fresh token for that tunnel', async () => {
  const before = JSON.parse(fs.readFileSync(credsFile(), 'utf8')).token
  const r = await dvv(['tunnels', 'use', tunnelId])
  assert.equal(r.code, 0, `dvv tunnels use exited ${r.code}: ${r.stderr}`)
  const c = JSON.parse(fs.readFileSync(credsFile(), 'utf8'))
  assert.notEqual(c.token, before)
  assert.equal(c.tunnel, tunnelId)
  assert.ok(!r.stdout.includes(c.token) && !r.stderr.includes(c.token))
  const toks = await api.request('GET', '/v1/tokens', { session: user.session })
  assert.equal(toks.json.tokens.filter((k) => k.tunnel_id === tunnelId && !k.revoked_at).length, 2)
})

h.scenario('revoking the running agent\'s token (DELETE /v1/tokens/ID) makes it exit 3', async (t) => {
  if (!relayActsOnRevocation()) {
    const why = 'SKIPPED: needs the relay\'s control-event poller (branch i11-relay: revocation -> GOODBYE revoked), not in this tree'
    process.stderr.write(why + '\n')
    t.skip(why)
    return
  }
  const del = await api.request('DELETE', `/v1/tokens/${tokenRes.json.id}`, { session: user.session })
  assert.equal(del.status, 204, `DELETE /v1/tokens: ${del.text}`)
  const t0 = Date.now()
  const code = await Promise.race([agent.proc.exitPromise.then(() => agent.proc.exitCode), h.sleep(10000).then(() => 'still running')])
  assert.equal(code, 3, `expected the agent to exit 3 after its token was revoked, got ${code}`)
  assert.ok(Date.now() - t0 < 5000, `the agent took ${Date.now() - t0} ms to stop`)
  const err = agent.proc.events.find((e) => e.event === 'error' && e.code === 'revoked')
  assert.ok(err, `expected an error event with code revoked, got ${show(agent.proc.events.slice(-5))}`)
})

h.scenario('dvv logout ends the session at the API and removes the file', async () => {
  const session = JSON.parse(fs.readFileSync(credsFile(), 'utf8')).session
  const r = await dvv(['logout'])
  assert.equal(r.code, 0, `dvv logout exited ${r.code}: ${r.stderr}`)
  assert.equal(fs.existsSync(credsFile()), false)
  const me = await api.request('GET', '/v1/me', { session })
  assert.equal(me.status, 401, 'the session must be dead after logout')
})
