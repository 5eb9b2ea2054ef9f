// Helpers that start real processes for an end-to-end test and always clean them up.
//
// Every process started here is tracked: cleanup() sends SIGTERM, then SIGKILL after 3 s, and
// removes the temp dirs. Test files call `after(cleanup)`; a process 'exit' hook SIGKILLs anything
// left if the test process dies another way. Each child's stderr (and stdout) goes to a log file in
// the run's temp dir; scenario() prints the tails of those logs when a test fails.
//
// Binaries come from $DVV_BUILD (default build-san, relative to the repository root).

import { spawn, execFile } from 'node:child_process'
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import http from 'node:http'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import process from 'node:process'
import { fileURLToPath } from 'node:url'
import { test } from 'node:test'

const here = path.dirname(fileURLToPath(import.meta.url))
export const REPO_ROOT = path.resolve(here, '..', '..')
export const BUILD = path.resolve(REPO_ROOT, process.env.DVV_BUILD || 'build-san')
export const MC_SERVER = path.join(here, 'mc-server.mjs')

const procs = new Set() // every child we started
const tempDirs = new Set()
let runDir = null // one temp dir per test file (process) for logs and state

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
export { sleep }

// ---------------------------------------------------------------------------------------------
// basics

export function bin (name) {
  return path.join(BUILD, name)
}

/** Throws a readable error when the binaries under test are missing. */
export function requireBinaries (names = ['dvv-relay', 'dvv', 'dvv-token']) {
  const missing = names.filter((n) => !fs.existsSync(bin(n)))
  const mkkeys = path.join(REPO_ROOT, 'scripts', 'mkkeys.sh')
  if (!fs.existsSync(mkkeys)) missing.push('scripts/mkkeys.sh')
  if (missing.length) {
    throw new Error(`missing ${missing.join(', ')} (BUILD=${BUILD}); build them first (make SAN=1) or set DVV_BUILD`)
  }
}

export function tempRoot () {
  if (!runDir) {
    runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvv-e2e-'))
    tempDirs.add(runDir)
  }
  return runDir
}

export async function makeTempDir (name) {
  const dir = await fsp.mkdtemp(path.join(tempRoot(), `${name}-`))
  return dir
}

const portsGiven = new Set() // never hand out the same port twice in one test process

/** A TCP port that was free a moment ago on 127.0.0.1, and not given out before by this process
 * (the kernel may hand the same ephemeral port to two probes in a row: CI once started a relay
 * with its agent and admin ports equal). */
export async function freePort () {
  for (let i = 0; i < 50; i++) {
    const port = await new Promise((resolve, reject) => {
      const srv = net.createServer()
      srv.unref()
      srv.on('error', reject)
      srv.listen(0, '127.0.0.1', () => {
        const { port } = srv.address()
        srv.close(() => resolve(port))
      })
    })
    if (!portsGiven.has(port)) {
      portsGiven.add(port)
      return port
    }
  }
  throw new Error('freePort: no port not given out before in 50 tries')
}

/** Resident set size of a process in kB (VmRSS from /proc/PID/status), or null if it is gone. */
export function rssKb (pid) {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8')
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status)
    return m ? Number(m[1]) : null
  } catch {
    return null
  }
}

/** Number of open file descriptors of a process, or null. */
export function fdCount (pid) {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).length
  } catch {
    return null
  }
}

// ---------------------------------------------------------------------------------------------
// processes

/**
 * Spawn a tracked child. stdout is split into lines (kept in proc.lines, passed to listeners and
 * written to NAME.stdout.log); stderr goes to NAME.stderr.log and a short in-memory tail.
 */
export function spawnProcess (name, cmd, args, { env = {}, cwd = REPO_ROOT } = {}) {
  const dir = tempRoot()
  let n = 0
  let base = name
  while (fs.existsSync(path.join(dir, `${base}.stderr.log`))) base = `${name}-${++n}`
  const stderrLog = path.join(dir, `${base}.stderr.log`)
  const stdoutLog = path.join(dir, `${base}.stdout.log`)
  const errStream = fs.createWriteStream(stderrLog)
  const outStream = fs.createWriteStream(stdoutLog)
  errStream.write(`$ ${cmd} ${args.map((a) => (/[\s'"]/.test(a) || a === '' ? JSON.stringify(a) : a)).join(' ')}\n`)

  const child = spawn(cmd, args, {
    cwd,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  const proc = {
    name: base,
    cmd,
    args,
    child,
    pid: child.pid,
    stderrLog,
    stdoutLog,
    lines: [], // stdout lines
    events: [], // stdout lines that parsed as JSON objects
    listeners: new Set(),
    exited: false,
    exitCode: null,
    signal: null,
    exitPromise: null,
    stderrTail: []
  }
  proc.exitPromise = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      proc.exited = true
      proc.exitCode = code
      proc.signal = signal
      resolve({ code, signal })
    })
    child.on('error', (err) => {
      errStream.write(`[harness] spawn error: ${err.message}\n`)
      proc.exited = true
      proc.exitCode = -1
      resolve({ code: -1, signal: null, error: err })
    })
  })
  // Close the log streams only when both pipes have drained.
  let openPipes = 2
  const pipeDone = () => { if (--openPipes === 0) { errStream.end(); outStream.end() } }
  let buf = ''
  child.stdout.on('data', (d) => {
    outStream.write(d)
    buf += d.toString('utf8')
    let i
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i)
      buf = buf.slice(i + 1)
      proc.lines.push(line)
      let ev = null
      if (line.startsWith('{')) {
        try { ev = JSON.parse(line) } catch {}
      }
      if (ev && typeof ev === 'object') proc.events.push(ev)
      for (const fn of proc.listeners) {
        try { fn(line, ev) } catch {}
      }
    }
  })
  child.stdout.on('close', pipeDone)
  child.stderr.on('data', (d) => {
    errStream.write(d)
    const parts = d.toString('utf8').split('\n')
    proc.stderrTail.push(...parts.filter((s) => s.length))
    if (proc.stderrTail.length > 400) proc.stderrTail.splice(0, proc.stderrTail.length - 400)
  })
  child.stderr.on('close', pipeDone)
  procs.add(proc)
  return proc
}

/**
 * Resolve with the first stdout line (and its parsed JSON, if any) for which pred(line, ev) is true.
 * Rejects on timeout or if the process exits first, with the log tail in the message.
 */
export function waitForLine (proc, pred, { timeoutMs = 10000, what = 'the expected output' } = {}) {
  return new Promise((resolve, reject) => {
    for (const line of proc.lines) {
      let ev = null
      if (line.startsWith('{')) { try { ev = JSON.parse(line) } catch {} }
      if (pred(line, ev)) return resolve({ line, ev })
    }
    let timer = null
    const done = () => {
      proc.listeners.delete(listener)
      clearTimeout(timer)
    }
    const listener = (line, ev) => {
      if (pred(line, ev)) {
        done()
        resolve({ line, ev })
      }
    }
    proc.listeners.add(listener)
    timer = setTimeout(() => {
      done()
      reject(new Error(`${proc.name} (pid ${proc.pid}) did not print ${what} within ${timeoutMs} ms\n${tailOf(proc)}`))
    }, timeoutMs)
    proc.exitPromise.then(({ code, signal }) => {
      if (!proc.listeners.has(listener)) return
      // Give the last stdout chunk a moment to be parsed.
      setTimeout(() => {
        if (!proc.listeners.has(listener)) return
        done()
        reject(new Error(`${proc.name} (pid ${proc.pid}) exited (code ${code}, signal ${signal}) before printing ${what}\n${tailOf(proc)}`))
      }, 100)
    })
  })
}

/** SIGTERM, then SIGKILL after graceMs. Resolves with {code, signal}. */
export async function stopProcess (proc, { signal = 'SIGTERM', graceMs = 3000 } = {}) {
  if (!proc || proc.exited) return proc ? { code: proc.exitCode, signal: proc.signal } : null
  try { process.kill(proc.pid, signal) } catch {}
  const res = await Promise.race([proc.exitPromise, sleep(graceMs).then(() => null)])
  if (res) return res
  try { process.kill(proc.pid, 'SIGKILL') } catch {}
  const killed = await Promise.race([proc.exitPromise, sleep(2000).then(() => ({ code: null, signal: 'SIGKILL?' }))])
  return { ...killed, forced: true }
}

/** kill -9, and wait until it is gone. */
export async function kill9 (proc) {
  if (proc.exited) return { code: proc.exitCode, signal: proc.signal }
  try { process.kill(proc.pid, 'SIGKILL') } catch {}
  return proc.exitPromise
}

/** Kill everything this file started and remove its temp dirs (logs are kept if DVV_E2E_KEEP=1). */
export async function cleanup () {
  const alive = [...procs].filter((p) => !p.exited)
  await Promise.all(alive.map((p) => stopProcess(p)))
  if (process.env.DVV_E2E_KEEP) {
    if (runDir) process.stderr.write(`[harness] kept logs in ${runDir}\n`)
  } else {
    for (const d of tempDirs) {
      try { fs.rmSync(d, { recursive: true, force: true }) } catch {}
    }
    tempDirs.clear()
    runDir = null
  }
  procs.clear()
}

process.on('exit', () => {
  for (const p of procs) {
    if (!p.exited) { try { process.kill(p.pid, 'SIGKILL') } catch {} }
  }
  if (!process.env.DVV_E2E_KEEP) {
    for (const d of tempDirs) { try { fs.rmSync(d, { recursive: true, force: true }) } catch {} }
  }
})
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(sig, () => {
    for (const p of procs) {
      if (!p.exited) { try { process.kill(p.pid, 'SIGKILL') } catch {} }
    }
    process.exit(130)
  })
}

// ---------------------------------------------------------------------------------------------
// logs

export function tailOf (proc, lines = 40) {
  let text = ''
  try { text = fs.readFileSync(proc.stderrLog, 'utf8') } catch { text = proc.stderrTail.join('\n') }
  const stderrLines = text.split('\n')
  const st = stderrLines.slice(-lines).join('\n')
  const out = proc.lines.slice(-Math.min(lines, 15)).join('\n')
  const state = proc.exited ? `exited code=${proc.exitCode} signal=${proc.signal}` : 'running'
  return `----- ${proc.name} (pid ${proc.pid}, ${state}) stderr tail -----\n${st}\n` +
    (out ? `----- ${proc.name} stdout tail -----\n${out}\n` : '')
}

/** Tails of every tracked process's logs. */
export function logTails (lines = 40) {
  return [...procs].map((p) => tailOf(p, lines)).join('\n')
}

const SANITIZER_RE = /ERROR: (AddressSanitizer|LeakSanitizer|ThreadSanitizer|MemorySanitizer)|runtime error: |SUMMARY: (Address|Leak|Undefined)/

/** Sanitizer findings in the stderr logs of the given (or all) processes: [{name, line}]. */
export function sanitizerReports (only = null) {
  const found = []
  for (const p of only || procs) {
    let text = ''
    try { text = fs.readFileSync(p.stderrLog, 'utf8') } catch { continue }
    for (const line of text.split('\n')) {
      if (SANITIZER_RE.test(line)) found.push({ name: p.name, line: line.trim() })
    }
  }
  return found
}

/**
 * node:test `test()` that, when the body fails, prints the tails of all child logs (to stderr and
 * as test diagnostics) before rethrowing.
 */
export function scenario (name, opts, fn) {
  if (typeof opts === 'function') { fn = opts; opts = {} }
  return test(name, { timeout: 120000, ...opts }, async (t) => {
    try {
      await fn(t)
    } catch (err) {
      const tails = logTails(40)
      process.stderr.write(`\n===== logs after failure of "${name}" (${runDir}) =====\n${tails}\n`)
      throw err
    }
  })
}

/** Wrap a hook body (before/after) so that its failure also prints the log tails. */
export function withLogs (name, fn) {
  return async (...a) => {
    try {
      return await fn(...a)
    } catch (err) {
      process.stderr.write(`\n===== logs after failure of ${name} (${runDir}) =====\n${logTails(40)}\n`)
      throw err
    }
  }
}

// ---------------------------------------------------------------------------------------------
// services

function run (cmd, args, { cwd = REPO_ROOT, env = {}, timeoutMs = 30000 } = {}) {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { cwd, env: { ...process.env, ...env }, timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) {
        err.message = `${cmd} ${args.join(' ')} failed: ${err.message}\nstdout: ${stdout}\nstderr: ${stderr}`
        return reject(err)
      }
      resolve({ stdout, stderr })
    })
  })
}

export function tcpRoundTrip (port, payload, { host = '127.0.0.1', timeoutMs = 1000 } = {}) {
  return new Promise((resolve) => {
    const sock = net.connect(port, host)
    let data = ''
    const t = setTimeout(() => { sock.destroy(); resolve(null) }, timeoutMs)
    sock.on('connect', () => sock.write(payload))
    sock.on('data', (d) => {
      data += d.toString()
      if (data.includes('\r\n')) { clearTimeout(t); sock.destroy(); resolve(data) }
    })
    sock.on('error', () => { clearTimeout(t); resolve(null) })
  })
}

async function pollUntil (fn, { timeoutMs, intervalMs = 100, proc = null, what }) {
  const t0 = Date.now()
  for (;;) {
    if (proc && proc.exited) {
      throw new Error(`${proc.name} exited (code ${proc.exitCode}, signal ${proc.signal}) while waiting for ${what}\n${tailOf(proc)}`)
    }
    const v = await fn()
    if (v) return v
    if (Date.now() - t0 > timeoutMs) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${proc ? '\n' + tailOf(proc) : ''}`)
    }
    await sleep(intervalMs)
  }
}

/** A throwaway redis-server on a free port. Resolves {proc, port}. */
export async function startRedis () {
  const port = await freePort()
  const dir = await makeTempDir('redis')
  const proc = spawnProcess('redis', 'redis-server', [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    '--dir', dir, '--daemonize', 'no', '--protected-mode', 'no', '--loglevel', 'warning'
  ])
  await pollUntil(async () => {
    const r = await tcpRoundTrip(port, 'PING\r\n')
    return r && r.startsWith('+PONG')
  }, { timeoutMs: 10000, proc, what: `redis PING on port ${port}` })
  return { proc, port, pid: proc.pid }
}

/** Keys and certificates from scripts/mkkeys.sh. */
export async function makeKeys () {
  const dir = await makeTempDir('keys')
  await run('bash', [path.join(REPO_ROOT, 'scripts', 'mkkeys.sh'), dir])
  const keys = {
    dir,
    jwtKey: path.join(dir, 'jwt.key'),
    jwtPub: path.join(dir, 'jwt.pub'),
    ca: path.join(dir, 'ca.pem'),
    relayCert: path.join(dir, 'relay.pem'),
    relayKey: path.join(dir, 'relay.key')
  }
  for (const [k, f] of Object.entries(keys)) {
    if (k !== 'dir' && !fs.existsSync(f)) throw new Error(`scripts/mkkeys.sh did not create ${f}`)
  }
  return keys
}

/** A JWT from dvv-token. Extra options map to --flags (camelCase becomes kebab-case). */
export async function mintToken ({ keys, key, sub, tid, plan, ttl, iss, aud, ...extra } = {}) {
  const args = ['--key', key || keys.jwtKey, '--sub', String(sub), '--tid', String(tid)]
  if (plan !== undefined) args.push('--plan', String(plan))
  if (ttl !== undefined) args.push('--ttl', String(ttl))
  if (iss !== undefined) args.push('--iss', String(iss))
  if (aud !== undefined) args.push('--aud', String(aud))
  for (const [k, v] of Object.entries(extra)) {
    args.push('--' + k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase()), String(v))
  }
  const { stdout } = await run(bin('dvv-token'), args)
  const token = stdout.trim().split('\n').pop().trim()
  if (token.split('.').length !== 3) throw new Error(`dvv-token printed something that is not a JWT: ${JSON.stringify(stdout)}`)
  return token
}

export function httpGet (port, urlPath, { host = '127.0.0.1', timeoutMs = 2000 } = {}) {
  return new Promise((resolve) => {
    const req = http.get({ host, port, path: urlPath, agent: false, timeout: timeoutMs }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d) => { body += d })
      res.on('end', () => resolve({ status: res.statusCode, body }))
      res.on('error', (e) => resolve({ status: 0, body: '', error: e.message }))
    })
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', (e) => resolve({ status: 0, body: '', error: e.message }))
  })
}

/**
 * dvv-relay on free loopback ports, ready when /readyz answers 200.
 * Resolves {proc, pid, playerPort, agentPort, adminPort, metrics(), metric(name)}.
 */
// Every test client dials from 127.0.0.1, i.e. one source address and one /24: unless a test
// is about the per-source limits (limits: 'production'), lift them so that concurrency tests
// measure the tunnel, not the admission control.
const LOOPBACK_LIMITS = ['--join-rate-v4', '1000000', '--join-rate-v6', '1000000',
  '--join-burst', '1000000', '--max-pending-per-source', '1000000',
  '--agent-unauth-per-source', '1000000']

// instanceId null: no --instance-id, the relay picks its default (hostname-pid). wrapper: a
// command that execs the relay (same pid), e.g. ['prlimit', '--nofile=128:128', '--'].
/** A relay that forwards between relays: an internal port of its own and the cluster secret. */
export async function startForwardingRelay ({ redisPort, keys, instanceId, secret, extraArgs = [] }) {
  const internal = await freePort()
  return startRelay({
    redisPort,
    keys,
    instanceId,
    env: { DVV_CLUSTER_SECRET: secret },
    extraArgs: ['--internal-listen', `127.0.0.1:${internal}`, ...extraArgs]
  })
}

export async function startRelay ({ redisPort, keys, extraArgs = [], instanceId = 'e2e-relay', region = 'eu', baseDomain = 'dvv.test', env = {}, readyTimeoutMs = 20000, limits = 'loopback', wrapper = [] } = {}) {
  const [playerPort, agentPort, adminPort] = [await freePort(), await freePort(), await freePort()]
  const args = [
    '--player-listen', `127.0.0.1:${playerPort}`,
    '--agent-listen', `127.0.0.1:${agentPort}`,
    '--admin-listen', `127.0.0.1:${adminPort}`,
    '--redis', `127.0.0.1:${redisPort}`,
    '--region', region,
    '--base-domain', baseDomain,
    '--tls-cert', keys.relayCert,
    '--tls-key', keys.relayKey,
    '--jwt-pubkey', keys.jwtPub,
    '--jwt-issuer', 'dvv',
    '--jwt-audience', 'dvv-relay',
    ...(instanceId === null ? [] : ['--instance-id', instanceId]),
    ...(limits === 'loopback' ? LOOPBACK_LIMITS : []),
    // scripts/test.sh runs the suite once per data plane (DVV_DATAPLANE=bpf, then userspace)
    ...(process.env.DVV_DATAPLANE ? ['--dataplane', process.env.DVV_DATAPLANE] : []),
    ...extraArgs
  ]
  const proc = wrapper.length
    ? spawnProcess('relay', wrapper[0], [...wrapper.slice(1), bin('dvv-relay'), ...args], { env })
    : spawnProcess('relay', bin('dvv-relay'), args, { env })
  await pollUntil(async () => (await httpGet(adminPort, '/readyz')).status === 200,
    { timeoutMs: readyTimeoutMs, proc, what: `relay /readyz on 127.0.0.1:${adminPort}` })
  const relay = {
    proc,
    pid: proc.pid,
    playerPort,
    agentPort,
    adminPort,
    baseDomain,
    region,
    metrics: async () => (await httpGet(adminPort, '/metrics')).body,
    /** Sum of all samples of a Prometheus metric (any labels), or null if absent. */
    metric: async (name) => {
      const body = (await httpGet(adminPort, '/metrics')).body || ''
      let sum = null
      for (const line of body.split('\n')) {
        if (line.startsWith('#')) continue
        const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line)
        if (m && m[1] === name) sum = (sum || 0) + Number(m[3])
      }
      return sum
    }
  }
  return relay
}

/**
 * The dvv agent. Resolves, once it prints its tunnel_up event, with
 * {proc, pid, hostname, events, waitForEvent(name)}.
 */
export async function startAgent ({
  relayAgentPort, token, ca, localPort, localHost = '127.0.0.1', json = true, proxyProtocol = false,
  extraArgs = [], tokenVia = 'arg', env = {}, upTimeoutMs = 20000, relayHost = '127.0.0.1'
} = {}) {
  const args = ['--relay', `${relayHost}:${relayAgentPort}`, '--ca', ca, '--local', `${localHost}:${localPort}`]
  const childEnv = { ...env }
  if (tokenVia === 'env') childEnv.DVV_TOKEN = token
  else args.push('--token', token)
  if (proxyProtocol) args.push('--proxy-protocol')
  if (json) args.push('--json')
  args.push(...extraArgs)
  const proc = spawnProcess('agent', bin('dvv'), args, { env: childEnv })
  const agent = {
    proc,
    pid: proc.pid,
    hostname: null,
    events: proc.events,
    // the first `name` event at index >= since of proc.events, already printed or still to come
    waitForEvent: (name, { timeoutMs = 10000, since = 0 } = {}) => {
      const seen = proc.events.slice(since).find((e) => e.event === name)
      if (seen) return Promise.resolve(seen)
      const from = proc.events.length
      return waitForLine(proc, (_l, ev) => ev && ev.event === name && proc.events.indexOf(ev) >= from, { timeoutMs, what: `a ${name} event` }).then((r) => r.ev)
    }
  }
  if (!json) return agent
  const { ev } = await waitForLine(proc, (_l, e) => e && e.event === 'tunnel_up', { timeoutMs: upTimeoutMs, what: 'a tunnel_up event' })
  if (typeof ev.hostname !== 'string' || !ev.hostname) {
    throw new Error(`tunnel_up event has no hostname: ${JSON.stringify(ev)}`)
  }
  agent.hostname = ev.hostname
  return agent
}

/**
 * tests/e2e/mc-server.mjs as a child process. Resolves {proc, pid, port, motd, waitForLogin(username)}.
 */
export async function startMcServer ({ port = 0, motd = 'DVV e2e server', version, maxPlayers, host = '127.0.0.1' } = {}) {
  const args = [MC_SERVER, '--port', String(port), '--host', host, '--motd', motd]
  if (version) args.push('--version', version)
  if (maxPlayers) args.push('--max-players', String(maxPlayers))
  const proc = spawnProcess('mc-server', process.execPath, args)
  const { ev } = await waitForLine(proc, (_l, e) => e && e.event === 'listening', { timeoutMs: 15000, what: 'its listening event' })
  return {
    proc,
    pid: proc.pid,
    port: ev.port,
    motd,
    waitForLogin: (username, timeoutMs = 5000) =>
      waitForLine(proc, (_l, e) => e && e.event === 'login' && e.username === username, { timeoutMs, what: `a login event for ${username}` }).then((r) => r.ev)
  }
}

/**
 * A plain TCP server standing in for a game that is not Minecraft, behind an agent. The agent's
 * own status pings (a handshake whose next state is 1) are closed; each player connection is
 * handed, paused with its first bytes still unread, to the promise of the latest nextPlayer()
 * (closed when none waits; forget() drops a wait). Resolves {server, port, nextPlayer, forget,
 * close}; cleanup() does not close it.
 */
export async function startRawServer () {
  let waiting = null
  const server = net.createServer((c) => {
    c.on('error', () => {})
    c.once('data', (d) => {
      if (d.length > d[0] && d[d[0]] === 1) { c.destroy(); return }
      c.pause()
      c.unshift(d)
      const f = waiting
      waiting = null
      if (f) f(c); else c.destroy() // resumed by the test once it listens
    })
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    server,
    port: server.address().port,
    nextPlayer: () => new Promise((resolve) => { waiting = resolve }),
    forget: () => { waiting = null },
    close: () => server.close()
  }
}

/**
 * Debian's haproxy in the foreground: frontend on a free port with `accept-proxy`, TCP mode, one
 * log line per connection on stdout ("dvv-src=CLIENT_IP:CLIENT_PORT"), backend = targetPort.
 */
export async function startHaproxy ({ targetPort, acceptProxy = true } = {}) {
  const port = await freePort()
  const dir = await makeTempDir('haproxy')
  const cfg = path.join(dir, 'haproxy.cfg')
  await fsp.writeFile(cfg, [
    'global',
    '    log stdout format raw local0',
    '',
    'defaults',
    '    mode tcp',
    '    timeout connect 5s',
    '    timeout client 60s',
    '    timeout server 60s',
    '',
    'frontend mc',
    `    bind 127.0.0.1:${port}${acceptProxy ? ' accept-proxy' : ''}`,
    '    mode tcp',
    '    log stdout format raw local0',
    '    option logasap',
    '    log-format "dvv-src=%ci:%cp dst=%fi:%fp backend=%b"',
    '    default_backend mcs',
    '',
    'backend mcs',
    '    mode tcp',
    `    server s1 127.0.0.1:${targetPort}`,
    ''
  ].join('\n'))
  await run('/usr/sbin/haproxy', ['-c', '-f', cfg])
  const proc = spawnProcess('haproxy', '/usr/sbin/haproxy', ['-db', '-f', cfg])
  await pollUntil(() => new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1')
    s.on('connect', () => { s.destroy(); resolve(true) })
    s.on('error', () => resolve(false))
  }), { timeoutMs: 10000, proc, what: `haproxy listening on ${port}` })
  return {
    proc,
    pid: proc.pid,
    port,
    config: cfg,
    sources: () => proc.lines.map((l) => /dvv-src=(\S+)/.exec(l)).filter(Boolean).map((m) => m[1])
  }
}
