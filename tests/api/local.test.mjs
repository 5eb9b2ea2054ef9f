// The README's first command, as a newcomer runs it: scripts/dvv-local.sh --json starts Redis,
// PostgreSQL, the relay, dvv-api with its dashboard, the Stripe stand-in, an agent and a sample
// Minecraft server. A real Minecraft client joins through it, the dashboard and the API answer,
// and SIGTERM (what a service manager sends) stops everything: no process, BPF pin, PostgreSQL
// cluster or temp dir is left behind.
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { REPO_ROOT, sleep } from '../e2e/harness.mjs'
import { join } from '../e2e/mc-client.mjs'

let proc = null
// a failed assertion still stops the demo the way a user does (SIGTERM: it stops its PostgreSQL
// and removes its files); SIGKILL only if that hangs
after(async () => {
  if (!proc || proc.exitCode !== null) return
  proc.kill('SIGTERM')
  for (let i = 0; i < 200 && proc.exitCode === null; i++) await sleep(100)
  if (proc.exitCode === null) proc.kill('SIGKILL')
})

function alive (pid) {
  try { process.kill(pid, 0); return true } catch { return false }
}

test('dvv-local.sh --json: a player joins, the dashboard answers, SIGTERM leaves nothing behind', { timeout: 600000 }, async () => {
  proc = spawn(path.join(REPO_ROOT, 'scripts', 'dvv-local.sh'), ['--json'], {
    cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'], detached: false
  })
  let out = ''
  let err = ''
  proc.stdout.on('data', (d) => { out += d })
  proc.stderr.on('data', (d) => { err += d })
  const deadline = Date.now() + 480000
  while (!out.includes('\n') && proc.exitCode === null && Date.now() < deadline) await sleep(200)
  assert.ok(out.includes('\n'), `dvv-local printed no JSON line (exit ${proc.exitCode}); stderr tail:\n${err.slice(-3000)}`)
  const info = JSON.parse(out.split('\n')[0])
  for (const k of ['player_addr', 'hostname', 'dashboard', 'api', 'redis', 'logs']) assert.ok(info[k], `--json lacks ${k}`)

  // the dashboard page and the API behind it
  const page = await fetch(info.dashboard)
  assert.equal(page.status, 200)
  assert.match(page.headers.get('content-type') || '', /text\/html/)
  const plans = await (await fetch(`${info.api}/v1/plans`)).json()
  assert.ok(Array.isArray(plans.plans) && plans.plans.length >= 2, 'GET /v1/plans lists the plans')
  const cfg = await (await fetch(`${info.api}/v1/agent-config`)).json()
  assert.ok(cfg.relays && Object.keys(cfg.relays).length >= 1, 'agent-config names a relay')

  // a real Minecraft client joins the sample server through the tunnel
  const [host, port] = info.player_addr.split(':')
  const r = await join({ relayHost: host, relayPort: Number(port), hostname: info.hostname, username: 'newcomer', timeoutMs: 20000 })
  assert.ok(r.ok, `join failed: ${r.error || r.kick}`)

  // a newcomer: signs up, creates a token, runs exactly the command the API hands out (with its
  // own config dir), and a Minecraft client joins the new tunnel
  const post = async (url, body, session) => {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...(session ? { Authorization: `Bearer ${session}` } : {}) },
      body: JSON.stringify(body)
    })
    return { status: res.status, json: await res.json() }
  }
  const su = await post(`${info.api}/v1/signup`, { email: 'newcomer@example.com', password: 'a long enough password' })
  assert.equal(su.status, 201, JSON.stringify(su.json))
  const tl = await (await fetch(`${info.api}/v1/tunnels`, { headers: { Authorization: `Bearer ${su.json.session}` } })).json()
  const tok = await post(`${info.api}/v1/tokens`, { tunnel_id: tl.tunnels[0].id }, su.json.session)
  assert.equal(tok.status, 201, JSON.stringify(tok.json))
  const cfgDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvv-newcomer-'))
  const agent = spawn('bash', ['-c', `${tok.json.command.replace(/ && /, ' && exec ')} --json`], {
    cwd: REPO_ROOT, env: { ...process.env, XDG_CONFIG_HOME: cfgDir }, stdio: ['ignore', 'pipe', 'pipe']
  })
  let aout = ''
  agent.stdout.on('data', (d) => { aout += d })
  agent.stderr.on('data', (d) => { aout += d })
  try {
    const t1 = Date.now()
    while (!/"tunnel_up"/.test(aout) && agent.exitCode === null && Date.now() - t1 < 30000) await sleep(200)
    const m = /"event":"tunnel_up".*?"hostname":"([^"]+)"/.exec(aout)
    assert.ok(m, `the agent started by the dashboard's command did not come up:\n${aout.slice(-2000)}`)
    assert.notEqual(m[1], info.hostname)
    const r2 = await join({ relayHost: host, relayPort: Number(port), hostname: m[1], username: 'friend', timeoutMs: 20000 })
    assert.ok(r2.ok, `join through the newcomer's tunnel failed: ${r2.error}`)
  } finally {
    agent.kill('SIGTERM')
    fs.rmSync(cfgDir, { recursive: true, force: true })
  }

  // SIGTERM: everything stops and is removed
  const logs = info.logs
  proc.kill('SIGTERM')
  const t0 = Date.now()
  while (proc.exitCode === null && Date.now() - t0 < 20000) await sleep(100)
  assert.notEqual(proc.exitCode, null, 'dvv-local did not exit within 20 s of SIGTERM')
  await sleep(300)
  assert.ok(!fs.existsSync(logs), `${logs} was left behind`)
  assert.ok(!fs.existsSync('/sys/fs/bpf/dvv/local-1'), 'the relay\'s BPF pins were left behind')
  const apiPort = new URL(info.api).port
  await assert.rejects(fetch(`${info.api}/healthz`), `dvv-api still answers on ${apiPort}`)
  const [, redisPort] = info.redis.split(':')
  const stray = fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d)).filter((pid) => {
    try {
      const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8')
      return cmd.includes(logs) || cmd.includes(`--port\0${redisPort}`)
    } catch { return false }
  })
  assert.deepEqual(stray.filter((p) => alive(Number(p))), [], 'processes of the run are still alive')
})
