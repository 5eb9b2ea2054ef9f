#!/usr/bin/env node
// Replicas: what forwarding a player costs, and how many Redis commands a join and a
// registration take. Three relays in network namespaces (scripts/dev-cluster.sh), a real
// Minecraft client and server (PrismarineJS), the real agent (build/dvv).
//
//   node bench/cluster-bench.mjs [--joins N] [--redis standalone|cluster] [--out docs/performance.md]
//                                [--reps R] [--id K] [--dataplane bpf|userspace]
//
//   --joins N   joins entering at the owner and joins entering at another relay, N of each,
//               interleaved (default 30)
//   --reps R    repetitions of each Redis-counted event (cold / warm forwarded join, join at the
//               owner, new and known registration; default 6)
//   --redis     standalone Redis (default) or a 6-node Redis Cluster
//   --out FILE  where the "Replicas: forwarding and Redis cost" section goes (default
//               docs/performance.md; `--out -` prints only). Only the text between the
//               cluster-bench markers is replaced, and only this --redis mode's part of it.
//   --id K      dev-cluster id (default 30: 10.77.30.0/24, namespaces dvc30-*)
//   --dataplane  pass --dataplane to the relays (default: theirs, auto)
//
// Binaries come from $DVV_BUILD (default build; built with make if missing). Needs root (network
// namespaces). Takes about a minute with the defaults; every loop is bounded in count and time,
// and the cluster is taken down on every exit path (`scripts/dev-cluster.sh down --id K`).
//
// What is measured (see the "how to read it" text written with the tables):
//   - join latency: wall time of join() from tests/e2e/mc-client.mjs (TCP connect, handshake,
//     login, configuration, until the client is in play state), entering at the relay that
//     holds the tunnel (B) or at another one (A), which forwards the player to B over the
//     internal port; pairs interleaved, order alternating
//   - the same comparison with a status request on a raw socket (time to the first answer
//     byte): far less client work than a login, so the relay's share stands out
//   - route cache: a forwarded join (and a status request) after A's cached route expired (A
//     asks Redis) versus the next one (cached)
//   - Redis: INFO commandstats deltas on every primary around each event (commands executed,
//     including those a Lua script runs), and a MONITOR on every primary over the same window
//     (the commands the relays sent, i.e. round trips, by relay; also a cross-check of INFO).
//     A window that background work touched (a heartbeat's ZADD/ZREM within a guard time
//     either side, a slot-map refresh) is discarded and the event repeated, so the per-event
//     figures contain no background; the background is measured on its own, over an idle
//     window of one lease-renewal period.

import { execFile, execFileSync } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import process from 'node:process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

const exec = promisify(execFile)
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
process.chdir(REPO)

// ---------------------------------------------------------------------------------------------
// options

function usage (msg) {
  if (msg) process.stderr.write(`cluster-bench: ${msg}\n`)
  process.stderr.write('usage: node bench/cluster-bench.mjs [--joins N] [--redis standalone|cluster] [--out FILE|-] [--reps R] [--id K] [--dataplane bpf|userspace]\n')
  process.exit(2)
}
const opts = { joins: 30, redis: 'standalone', out: 'docs/performance.md', reps: 6, id: 30, dataplane: null }
{
  const argv = process.argv.slice(2)
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const v = () => { if (i + 1 >= argv.length) usage(`${a} needs a value`); return argv[++i] }
    switch (a) {
      case '--joins': opts.joins = Number(v()); break
      case '--redis': opts.redis = v(); break
      case '--out': opts.out = v(); break
      case '--reps': opts.reps = Number(v()); break
      case '--id': opts.id = Number(v()); break
      case '--dataplane': opts.dataplane = v(); break
      case '-h': case '--help':
        process.stdout.write(fs.readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').slice(1).filter((l, i, a) => a.slice(0, i + 1).every((x) => x.startsWith('//'))).map((l) => l.replace(/^\/\/ ?/, '')).join('\n') + '\n')
        process.exit(0)
        break
      default: usage(`unknown argument ${a}`)
    }
  }
  if (!Number.isInteger(opts.joins) || opts.joins < 3 || opts.joins > 1000) usage('--joins wants 3..1000')
  if (!Number.isInteger(opts.reps) || opts.reps < 2 || opts.reps > 50) usage('--reps wants 2..50')
  if (!['standalone', 'cluster'].includes(opts.redis)) usage('--redis wants standalone or cluster')
  if (!Number.isInteger(opts.id) || opts.id < 0 || opts.id > 200) usage('--id wants 0..200')
  if (opts.dataplane !== null && !['bpf', 'userspace', 'auto'].includes(opts.dataplane)) usage('--dataplane wants bpf, userspace or auto')
}
const commandLine = ['node bench/cluster-bench.mjs', ...process.argv.slice(2)].join(' ')

// fixed by the relay's defaults, which this bench does not change (docs/redis.md)
const ROUTE_CACHE_MS = 2000
const HEARTBEAT_MS = 2000
const LEASE_TTL_S = 30
const IDLE_MS = LEASE_TTL_S * 1000 / 3 // one lease-renewal period: exactly one renewal per holder
// every player dials from the bridge address: lift the per-/24 join limits (as the tests do);
// everything else stays at the relay's defaults
const RELAY_ARGS = '--join-rate-v4 100000 --join-burst 100000 --max-pending-per-source 100000' +
  (opts.dataplane ? ` --dataplane ${opts.dataplane}` : '')
const LOAD_AT_START = os.loadavg()[0]
const GUARD_MS = 40 // a heartbeat this close to a window makes it dirty (renewals follow it)
const SETTLE_MS = 150 // after an event, for commands that follow it (async SET after a claim)
const JOIN_TIMEOUT_MS = 10000
const PAUSE_MS = 300 // between the requests of a route-cache round: each starts from the same quiet machine
const T_START = Date.now()
const BUDGET_MS = 150000 + opts.joins * 2 * 1500 + opts.reps * 12000 // hard bound for the run
const left = () => BUDGET_MS - (Date.now() - T_START)
function checkBudget (what) {
  if (left() <= 0) throw new Error(`out of time (${Math.round(BUDGET_MS / 1000)} s budget) during ${what}`)
}

// the harness picks its binaries at import time
process.env.DVV_BUILD = process.env.DVV_BUILD || 'build'
const BUILD_DIR = process.env.DVV_BUILD
const h = await import('../tests/e2e/harness.mjs')
const { join, handshakeBytes } = await import('../tests/e2e/mc-client.mjs')
const sleep = h.sleep

// ---------------------------------------------------------------------------------------------
// teardown on every path (the harness's own signal handlers exit at once: replace them)

const SCRIPT = path.join(REPO, 'scripts', 'dev-cluster.sh')
let clusterStarted = false
let clusterDown = false
const redisConns = new Set()
let tearingDown = null

function downSync () {
  if (!clusterStarted || clusterDown) return
  clusterDown = true
  try { execFileSync(SCRIPT, ['down', '--id', String(opts.id)], { stdio: 'ignore', timeout: 30000 }) } catch {}
}

async function teardown () {
  if (tearingDown) return tearingDown
  tearingDown = (async () => {
    for (const c of redisConns) c.close()
    await h.cleanup().catch(() => {})
    if (clusterStarted && !clusterDown) {
      clusterDown = true
      await exec(SCRIPT, ['down', '--id', String(opts.id)], { timeout: 30000 }).catch((e) => {
        process.stderr.write(`cluster-bench: dev-cluster down failed: ${e.message}\n`)
      })
    }
  })()
  return tearingDown
}

for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.removeAllListeners(sig)
  process.once(sig, () => {
    process.stderr.write(`\ncluster-bench: ${sig}, cleaning up\n`)
    setTimeout(() => { downSync(); process.exit(130) }, 20000).unref()
    teardown().finally(() => process.exit(130))
  })
}
process.on('exit', downSync) // last resort (the harness's own exit hook kills our children)
// every wait below has its own timeout; this catches anything that still hangs
setTimeout(() => {
  process.stderr.write(`cluster-bench: watchdog: still running after ${Math.round((BUDGET_MS + 60000) / 1000)} s, giving up\n`)
  setTimeout(() => { downSync(); process.exit(1) }, 20000).unref()
  teardown().finally(() => process.exit(1))
}, BUDGET_MS + 60000).unref()

// ---------------------------------------------------------------------------------------------
// a minimal RESP client: INFO snapshots and MONITOR streams

function parseResp (buf, off) {
  if (off >= buf.length) return null
  const nl = buf.indexOf('\r\n', off)
  if (nl < 0) return null
  const type = String.fromCharCode(buf[off])
  const line = buf.toString('utf8', off + 1, nl)
  const end = nl + 2
  switch (type) {
    case '+': return { value: line, end }
    case '-': return { value: new Error(line), end }
    case ':': return { value: Number(line), end }
    case '$': {
      const len = Number(line)
      if (len < 0) return { value: null, end }
      if (buf.length < end + len + 2) return null
      return { value: buf.toString('utf8', end, end + len), end: end + len + 2 }
    }
    case '*': {
      const n = Number(line)
      if (n < 0) return { value: null, end }
      const out = []
      let at = end
      for (let i = 0; i < n; i++) {
        const r = parseResp(buf, at)
        if (!r) return null
        out.push(r.value)
        at = r.end
      }
      return { value: out, end: at }
    }
    default: throw new Error(`unexpected RESP type ${JSON.stringify(type)}`)
  }
}

class RedisConn {
  constructor (host, port) {
    this.host = host
    this.port = port
    this.buf = Buffer.alloc(0)
    this.pending = []
    this.onPush = null // MONITOR mode: every reply goes here
    this.sock = null
  }

  open (timeoutMs = 3000) {
    return new Promise((resolve, reject) => {
      const s = net.connect(this.port, this.host)
      const t = setTimeout(() => { s.destroy(); reject(new Error(`redis ${this.host}:${this.port}: connect timeout`)) }, timeoutMs)
      s.setNoDelay(true)
      s.once('connect', () => { clearTimeout(t); this.local = `${s.localAddress}:${s.localPort}`; resolve(this) })
      s.on('error', (e) => {
        clearTimeout(t)
        reject(e)
        for (const p of this.pending.splice(0)) p.reject(e)
      })
      s.on('data', (d) => this.feed(d))
      this.sock = s
      redisConns.add(this)
    })
  }

  feed (d) {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d
    let off = 0
    for (;;) {
      const r = parseResp(this.buf, off)
      if (!r) break
      off = r.end
      if (this.onPush) this.onPush(r.value)
      else {
        const p = this.pending.shift()
        if (p) { clearTimeout(p.timer); r.value instanceof Error ? p.reject(r.value) : p.resolve(r.value) }
      }
    }
    this.buf = this.buf.subarray(off)
  }

  cmd (args, timeoutMs = 3000) {
    return new Promise((resolve, reject) => {
      const parts = [`*${args.length}\r\n`]
      for (const a of args) parts.push(`$${Buffer.byteLength(String(a))}\r\n${a}\r\n`)
      const p = { resolve, reject, timer: null }
      p.timer = setTimeout(() => reject(new Error(`redis ${this.host}:${this.port}: ${args[0]} timed out`)), timeoutMs)
      this.pending.push(p)
      this.sock.write(parts.join(''))
    })
  }

  /** Resolves once Redis answered MONITOR: every command it runs afterwards reaches onLine. */
  monitor (onLine, timeoutMs = 3000) {
    return new Promise((resolve, reject) => {
      let ok = false
      const t = setTimeout(() => reject(new Error(`redis ${this.host}:${this.port}: MONITOR not answered`)), timeoutMs)
      this.onPush = (v) => {
        if (!ok) { ok = true; clearTimeout(t); return v === 'OK' ? resolve() : reject(new Error(`MONITOR answered ${v}`)) }
        if (typeof v === 'string') onLine(v)
      }
      this.sock.write('*1\r\n$7\r\nMONITOR\r\n')
    })
  }

  close () {
    redisConns.delete(this)
    try { this.sock && this.sock.destroy() } catch {}
  }
}

// commands whose first argument names a subcommand in INFO commandstats
const CONTAINERS = new Set(['cluster', 'client', 'config', 'command', 'script', 'object', 'memory', 'xinfo', 'acl', 'function', 'latency', 'module', 'pubsub', 'slowlog', 'debug'])
// not the relays': what this bench itself sends, and the replicas' REPLCONF ACK every second
const OURS = new Set(['info', 'monitor', 'cluster|nodes', 'replconf'])

function parseMonitorLine (line) {
  // 1796563581.107653 [0 10.77.30.11:44924] "EVAL" "..." "0"
  const m = /^\d+\.\d+ \[\d+ ([^\]]+)\] "((?:[^"\\]|\\.)*)"(?: "((?:[^"\\]|\\.)*)")?/.exec(line)
  if (!m) return null
  let cmd = m[2].toLowerCase()
  if (CONTAINERS.has(cmd) && m[3]) cmd += '|' + m[3].toLowerCase()
  const addr = m[1]
  return { addr, ip: addr === 'lua' ? 'lua' : addr.replace(/:\d+$/, ''), cmd }
}

function parseCommandstats (text) {
  const out = new Map()
  for (const line of text.split('\n')) {
    const m = /^cmdstat_([^:]+):calls=(\d+)/.exec(line.trim())
    if (m) out.set(m[1], Number(m[2]))
  }
  return out
}

/** INFO commandstats and MONITOR on every primary, with snapshots that delimit both exactly. */
class RedisObserver {
  constructor (endpoints, mode) {
    this.endpoints = endpoints
    this.mode = mode
    this.nodes = []
    this.snaps = 0
  }

  async open () {
    let primaries = this.endpoints
    if (this.mode === 'cluster') {
      const [host, port] = this.endpoints[0].split(':')
      const c = await new RedisConn(host, Number(port)).open()
      const text = await c.cmd(['CLUSTER', 'NODES'])
      c.close()
      primaries = text.split('\n').map((l) => l.trim().split(' ')).filter((f) => f.length > 2 && /master/.test(f[2]) && !/fail/.test(f[2]))
        .map((f) => f[1].split('@')[0])
      if (primaries.length < 1) throw new Error(`no primaries in CLUSTER NODES:\n${text}`)
    }
    for (const ep of primaries) {
      const [host, port] = ep.split(':')
      const stats = await new RedisConn(host, Number(port)).open()
      this.nodes.push({ ep, stats, mon: null, lines: [], infoPos: [], sent: 0 })
    }
    return this
  }

  async startMonitor () {
    for (const n of this.nodes) {
      n.mon = await new RedisConn(n.stats.host, n.stats.port).open()
      const mine = n.stats.local
      await n.mon.monitor((line) => {
        const e = parseMonitorLine(line)
        if (!e) return
        if (e.addr === mine) {
          if (e.cmd === 'info') n.infoPos.push(n.lines.length)
          return
        }
        n.lines.push(e)
      })
    }
    // every monitor is live: the INFO snapshots sent from now on are numbered from 0
    for (const n of this.nodes) { n.lines = []; n.infoPos = []; n.sent = 0 }
  }

  stopMonitor () {
    for (const n of this.nodes) { if (n.mon) n.mon.close(); n.mon = null }
  }

  /** One INFO commandstats per primary. Returns {total: Map, ord: [per node INFO ordinal], t}. */
  async snap () {
    const res = await Promise.all(this.nodes.map(async (n) => {
      const ord = n.sent++
      const text = await n.stats.cmd(['INFO', 'commandstats'])
      return { ord, stats: parseCommandstats(text) }
    }))
    const total = new Map()
    for (const r of res) for (const [k, v] of r.stats) total.set(k, (total.get(k) || 0) + v)
    return { total, ord: res.map((r) => r.ord), t: Date.now() }
  }

  async waitMonitor (ords, timeoutMs = 2000) {
    const t0 = Date.now()
    while (this.nodes.some((n, i) => n.mon && n.infoPos.length <= ords[i])) {
      if (Date.now() - t0 > timeoutMs) throw new Error('MONITOR stream lagging')
      await sleep(10)
    }
  }

  /** Relays' own commands between snapshots a and b, from MONITOR: [{ip, cmd}] (lua lines too). */
  async linesBetween (a, b) {
    if (!this.nodes.every((n) => n.mon)) return null
    await this.waitMonitor(b.ord)
    const out = []
    this.nodes.forEach((n, i) => { out.push(...n.lines.slice(n.infoPos[a.ord[i]], n.infoPos[b.ord[i]])) })
    return out
  }

  close () {
    this.stopMonitor()
    for (const n of this.nodes) n.stats.close()
  }
}

function diffStats (a, b) {
  const d = new Map()
  for (const [k, v] of b.total) {
    if (OURS.has(k)) continue
    const x = v - (a.total.get(k) || 0)
    if (x) d.set(k, x)
  }
  return d
}
// background markers: every heartbeat runs ZADD or ZREM (lease renewals run in the same tick); a
// Redis Cluster client re-reads the slot map every 30 s (CLUSTER SLOTS)
const BACKGROUND = ['zadd', 'zrem', 'cluster|slots', 'cluster|shards']
const POLLER = new Set(['xread', 'xrevrange'])
const backgroundSeen = (a, b) => BACKGROUND.some((k) => (b.total.get(k) || 0) !== (a.total.get(k) || 0))

// ---------------------------------------------------------------------------------------------
// statistics and formatting

function stats (xs) {
  const s = [...xs].sort((a, b) => a - b)
  const q = (p) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))]
  return { n: s.length, min: s[0], p50: q(0.5), p90: q(0.9), max: s[s.length - 1] }
}
const f1 = (x) => (x === undefined || x === null || Number.isNaN(x) ? '-' : x.toFixed(1))
const f2 = (x) => (Number.isInteger(x) ? String(x) : x.toFixed(2))
const signed = (x) => (x >= 0 ? '+' : '') + x.toFixed(1)
const f2r = (x) => x.toFixed(2)
const signed2 = (x) => (x >= 0 ? '+' : '') + x.toFixed(2)
const upper = (c) => c.toUpperCase()

/** {cmd: mean count} over samples of Map(cmd -> n). */
function meanCounts (samples) {
  const sum = new Map()
  for (const s of samples) for (const [k, v] of s) sum.set(k, (sum.get(k) || 0) + v)
  const out = new Map()
  for (const [k, v] of sum) out.set(k, v / samples.length)
  return out
}
function fmtCounts (m, label = (k) => upper(k)) {
  const parts = [...m].filter(([, v]) => v).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).map(([k, v]) => `${label(k)} ${f2(v)}`)
  return parts.length ? parts.join(', ') : 'none'
}
const total = (m) => [...m.values()].reduce((a, b) => a + b, 0)

// ---------------------------------------------------------------------------------------------
// cluster helpers

let cl = null
async function metrics (relay) {
  const r = await h.httpGet(9100, '/metrics', { host: relay.ip, timeoutMs: 3000 })
  if (r.status !== 200) throw new Error(`${relay.id} /metrics answered ${r.status} ${r.error || ''}`)
  return r.body
}
function metricOf (body, name) {
  let sum = null
  for (const line of body.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line)
    if (m && m[1] === name) sum = (sum || 0) + Number(m[3])
  }
  return sum
}
async function routeCounters (relay) {
  const b = await metrics(relay)
  return { lookups: metricOf(b, 'dvv_relay_route_lookups_total'), hits: metricOf(b, 'dvv_relay_route_cache_hits_total'), forwarded: metricOf(b, 'dvv_relay_players_forwarded_total') }
}

let joinSeq = 0
async function timedJoin (relay, hostname, what) {
  const username = `cb${joinSeq++}`.slice(0, 16)
  const t0 = process.hrtime.bigint()
  const r = await join({ relayHost: relay.ip, relayPort: 25565, hostname, username, timeoutMs: JOIN_TIMEOUT_MS })
  const ms = Number(process.hrtime.bigint() - t0) / 1e6
  if (!r.ok) throw new Error(`${what}: join through ${relay.id} (${relay.ip}) failed: ${JSON.stringify(r)}`)
  return ms
}

/**
 * A status request on a raw socket (handshake with next state 1, then the empty status request):
 * ms from connect() to the first byte of the server's answer. Far less client work than a login,
 * so the path's own cost stands out more.
 */
function statusProbe (relay, hostname, what) {
  const payload = Buffer.concat([handshakeBytes({ hostname, nextState: 1 }), Buffer.from([0x01, 0x00])])
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint()
    let ms = null
    const s = net.connect(25565, relay.ip)
    const timer = setTimeout(() => { s.destroy(); reject(new Error(`${what}: no status answer through ${relay.id} within 5 s`)) }, 5000)
    s.setNoDelay(true)
    s.on('connect', () => s.write(payload))
    s.on('data', () => {
      if (ms === null) { ms = Number(process.hrtime.bigint() - t0) / 1e6; s.end() }
    })
    s.on('error', (e) => { if (ms === null) { clearTimeout(timer); reject(new Error(`${what}: ${e.message}`)) } })
    s.on('close', () => {
      clearTimeout(timer)
      if (ms === null) reject(new Error(`${what}: ${relay.id} closed without a status answer`))
      else resolve(ms)
    })
  })
}

const PING_SCRIPT = `
const net = require('net'); const [host, port, n] = process.argv.slice(1)
const s = net.connect(Number(port), host); s.setNoDelay(true)
const out = []; let t0 = 0
const next = () => { if (out.length >= Number(n)) { console.log(JSON.stringify(out)); s.destroy(); return } t0 = process.hrtime.bigint(); s.write('PING\\r\\n') }
let buf = ''
s.on('connect', next)
s.on('data', (d) => { buf += d; while (buf.includes('\\r\\n')) { buf = buf.slice(buf.indexOf('\\r\\n') + 2); out.push(Number(process.hrtime.bigint() - t0) / 1e6); next() } })
s.on('error', (e) => { console.error(e.message); process.exit(1) })
setTimeout(() => { console.error('timeout'); process.exit(1) }, 10000).unref()
`
/** n sequential PINGs to ep ("host:port") from inside relay's network namespace: ms each. */
async function pingFrom (relay, ep, n) {
  const [host, port] = ep.split(':')
  const { stdout } = await exec('ip', ['netns', 'exec', relay.netns, process.execPath, '-e', PING_SCRIPT, host, port, String(n)], { timeout: 20000 })
  return JSON.parse(stdout.trim())
}

function relayLogTails () {
  if (!cl) return ''
  return cl.relays.map((r) => {
    let t = ''
    try { t = fs.readFileSync(r.log, 'utf8').split('\n').slice(-15).join('\n') } catch {}
    return `----- ${r.id} log tail -----\n${t}`
  }).join('\n')
}

// ---------------------------------------------------------------------------------------------
// the run

function log (msg) { process.stderr.write(`[cluster-bench ${((Date.now() - T_START) / 1000).toFixed(1)}s] ${msg}\n`) }

async function ensureBinaries () {
  const names = ['dvv-relay', 'dvv', 'dvv-token']
  const missing = names.filter((n) => !fs.existsSync(path.join(BUILD_DIR, n)))
  if (!missing.length) return
  if (!['build', 'build-san'].includes(BUILD_DIR)) throw new Error(`missing ${missing.join(', ')} in ${BUILD_DIR} (DVV_BUILD): build them first`)
  log(`building ${missing.map((n) => `${BUILD_DIR}/${n}`).join(' ')}`)
  const args = ['-s', `BUILD=${BUILD_DIR}`]
  if (/san/.test(BUILD_DIR)) args.push('SAN=1')
  await exec('make', [...args, ...names.map((n) => `${BUILD_DIR}/${n}`)], { timeout: 600000, maxBuffer: 64 << 20 })
}

async function run () {
  if (process.getuid && process.getuid() !== 0) throw new Error('needs root (network namespaces)')
  await ensureBinaries()
  h.requireBinaries()

  log(`dev cluster up: 3 relays, ${opts.redis} Redis, id ${opts.id}`)
  await exec(SCRIPT, ['down', '--id', String(opts.id)], { timeout: 30000 }).catch(() => {})
  clusterStarted = true
  const { stdout } = await exec(SCRIPT, ['up', '--relays', '3', '--regions', 'eu', '--id', String(opts.id),
    '--redis', opts.redis, '--build', BUILD_DIR], {
    env: { ...process.env, DVV_RELAY_ARGS: RELAY_ARGS },
    timeout: 120000
  })
  cl = JSON.parse(stdout.trim().split('\n').pop())
  const keys = { jwtKey: path.join(cl.keys, 'jwt.key'), ca: path.join(cl.keys, 'ca.pem') }
  const byAgentAddr = (a) => cl.relays.find((r) => `${r.ip}:7000` === a)
  const planes = new Set()
  for (const r of cl.relays) planes.add((/dvv_relay_info\{[^}]*dataplane="([^"]+)"/.exec(await metrics(r)) || [])[1] || '?')
  const dataplane = [...planes].join(' / ')

  const mc = await h.startMcServer({ motd: 'cluster-bench' })
  const token = await h.mintToken({ keys, sub: 'bench-main', tid: 'bench-main', ttl: 3600 })
  const agent = await h.startAgent({ relayHost: cl.relays[0].ip, relayAgentPort: 7000, token, ca: keys.ca, localPort: mc.port, upTimeoutMs: 30000 })
  const up = agent.proc.events.find((e) => e.event === 'tunnel_up')
  const B = byAgentAddr(up.relay)
  if (!B) throw new Error(`tunnel_up names a relay that is not in the cluster: ${JSON.stringify(up)}`)
  const active = metricOf(await metrics(B), 'dvv_relay_tunnels_active')
  if (active !== 1) throw new Error(`tunnel_up says ${B.id} owns ${agent.hostname}, but its dvv_relay_tunnels_active is ${active}`)
  const others = cl.relays.filter((r) => r !== B)
  const A = others[0]
  const C = others[1]
  const role = new Map([[B.ip, 'B'], [A.ip, 'A'], [C.ip, 'C']])
  log(`tunnel ${agent.hostname} owned by ${B.id} (B, dialled ${cl.relays[0].id}); forwarding entry A = ${A.id}, other = ${C.id}; data plane ${dataplane}`)

  // warm-up: client JIT, agent data-connection pool, A's and C's first route lookups
  for (let i = 0; i < 3; i++) {
    await timedJoin(B, agent.hostname, 'warm-up')
    await timedJoin(A, agent.hostname, 'warm-up')
    await timedJoin(C, agent.hostname, 'warm-up')
  }

  // ---- 1. join latency, interleaved pairs
  log(`join latency: ${opts.joins} joins at the owner and ${opts.joins} forwarded, interleaved`)
  const direct = []; const fwd = []; const fwdHit = []; const fwdMiss = []; const pairDiff = []
  for (let i = 0; i < opts.joins; i++) {
    checkBudget('the join-latency series')
    const before = await routeCounters(A)
    let d, f
    if (i % 2 === 0) {
      d = await timedJoin(B, agent.hostname, `direct #${i}`)
      f = await timedJoin(A, agent.hostname, `forwarded #${i}`)
    } else {
      f = await timedJoin(A, agent.hostname, `forwarded #${i}`)
      d = await timedJoin(B, agent.hostname, `direct #${i}`)
    }
    const after = await routeCounters(A)
    if (after.forwarded - before.forwarded !== 1) throw new Error(`forwarded join #${i}: ${A.id} counted ${after.forwarded - before.forwarded} forwards, expected 1`)
    direct.push(d); fwd.push(f); pairDiff.push(f - d)
    ;(after.lookups > before.lookups ? fwdMiss : fwdHit).push(f)
  }

  // status requests: the same comparison with far less client work, twice as many
  log(`status requests: ${opts.joins * 2} at the owner and ${opts.joins * 2} forwarded, interleaved`)
  const sDirect = []; const sFwd = []; const sPair = []
  for (let i = 0; i < 3; i++) { await statusProbe(B, agent.hostname, 'warm-up'); await statusProbe(A, agent.hostname, 'warm-up') }
  for (let i = 0; i < opts.joins * 2; i++) {
    checkBudget('the status-request series')
    let d, f
    if (i % 2 === 0) {
      d = await statusProbe(B, agent.hostname, `direct status #${i}`)
      f = await statusProbe(A, agent.hostname, `forwarded status #${i}`)
    } else {
      f = await statusProbe(A, agent.hostname, `forwarded status #${i}`)
      d = await statusProbe(B, agent.hostname, `direct status #${i}`)
    }
    sDirect.push(d); sFwd.push(f); sPair.push(f - d)
  }

  // ---- 2. Redis: observer, idle background
  const endpoints = cl.redis.split(',')
  const obs = await new RedisObserver(endpoints, opts.redis).open()
  // for scale: one Redis round trip from A's namespace (as A's route lookup makes it), before any window
  const redisRtt = await pingFrom(A, obs.nodes[0].ep, 50)
  await obs.startMonitor()
  log(`Redis: ${obs.nodes.length} primar${obs.nodes.length > 1 ? 'ies' : 'y'} observed; idle background over ${IDLE_MS / 1000} s`)
  const iStart = await obs.snap()
  const i0 = iStart
  await sleep(IDLE_MS)
  const i1 = await obs.snap()
  const idleSec = (i1.t - i0.t) / 1000
  const idleExec = diffStats(i0, i1)
  const idleLines = await obs.linesBetween(i0, i1)
  const idleTop = new Map(); const idleLua = new Map()
  for (const e of idleLines) {
    const m = e.ip === 'lua' ? idleLua : idleTop
    const k = e.ip === 'lua' ? e.cmd : `${e.cmd}@${role.get(e.ip) || e.ip}`
    m.set(k, (m.get(k) || 0) + 1)
  }

  /** One event between INFO snapshots; clean is false when background work came within GUARD_MS of it. */
  async function window (fn) {
    const s0 = await obs.snap()
    await sleep(GUARD_MS)
    const s1 = await obs.snap()
    const result = await fn()
    await sleep(SETTLE_MS)
    const s2 = await obs.snap()
    await sleep(GUARD_MS)
    const s3 = await obs.snap()
    const exec = diffStats(s1, s2)
    const lines = await obs.linesBetween(s1, s2)
    const top = new Map(); const topByRole = new Map(); const lua = new Map()
    for (const e of lines) {
      if (e.ip === 'lua') { lua.set(e.cmd, (lua.get(e.cmd) || 0) + 1); continue }
      top.set(e.cmd, (top.get(e.cmd) || 0) + 1)
      const k = `${e.cmd}@${role.get(e.ip) || e.ip}`
      topByRole.set(k, (topByRole.get(k) || 0) + 1)
    }
    // cross-check: what INFO counted is what MONITOR saw (relays' commands + script commands)
    const seen = new Map(top)
    for (const [k, v] of lua) seen.set(k, (seen.get(k) || 0) + v)
    const agree = [...new Set([...exec.keys(), ...seen.keys()])].every((k) => (exec.get(k) || 0) === (seen.get(k) || 0))
    // the relays' control-events poller (XREAD every 200 ms, XREVRANGE on an idle stream) runs
    // on its own clock like the heartbeat, but far too often to discard its windows: it is
    // taken out of the per-event figures and shows in the background rate instead
    for (const m of [exec, top, lua]) for (const k of [...m.keys()]) if (POLLER.has(k.toLowerCase())) m.delete(k)
    for (const k of [...topByRole.keys()]) if (POLLER.has(k.split('@')[0].toLowerCase())) topByRole.delete(k)
    return { clean: !backgroundSeen(s0, s3), exec, top, topByRole, lua, agree, result }
  }

  const ev = {
    cold: { name: 'forwarded join at A, route cache cold', samples: [] },
    warm: { name: 'forwarded join at A, route cache warm', samples: [] },
    owner: { name: 'join at the owner B', samples: [] },
    regNew: { name: 'registration, new tunnel (new user)', samples: [] },
    regKnown: { name: 'registration, known tunnel (agent reconnects, plan cached)', samples: [] }
  }
  let dirty = 0; let disagree = 0
  const keep = (e, w) => {
    if (!w.clean) { dirty++; return false }
    if (!w.agree) disagree++
    e.samples.push(w)
    return true
  }

  // ---- 3. cold / warm / owner rounds: latency and Redis
  log(`route cache: ${opts.reps}+ rounds of (cold forwarded, warm forwarded, owner) joins and status requests`)
  const coldMs = []; const warmMs = []; const ownerMs = []
  const sColdMs = []; const sWarmMs = []; const sOwnerMs = []
  const lastLookup = new Map([[A, Date.now()], [C, Date.now()]]) // conservative: as if both had just looked up
  const entries = [A, C]
  /**
   * Wait until X's cached route expired, an untimed op at B (so that the cold op does not also pay
   * for waking an idle machine), PAUSE, cold op at X, PAUSE, warm op at X, PAUSE, op at B.
   */
  async function coldWarmOwner (X, what, op, wrap) {
    const wait = lastLookup.get(X) + ROUTE_CACHE_MS + 150 - Date.now()
    if (wait > 0) await sleep(wait)
    await op(B, `wake-up before ${what}`)
    await sleep(PAUSE_MS)
    const c0 = await routeCounters(X)
    const cold = await wrap(() => op(X, `cold ${what}`))
    lastLookup.set(X, Date.now())
    const c1 = await routeCounters(X)
    if (c1.lookups - c0.lookups !== 1) throw new Error(`cold ${what}: expected a route lookup at ${X.id} (cache expired), counted ${c1.lookups - c0.lookups} lookups, ${c1.hits - c0.hits} hits`)
    await sleep(PAUSE_MS)
    const warm = await wrap(() => op(X, `warm ${what}`))
    const c2 = await routeCounters(X)
    if (c2.lookups !== c1.lookups || c2.hits - c1.hits !== 1) throw new Error(`warm ${what}: expected a cache hit at ${X.id}, counted ${c2.lookups - c1.lookups} lookups, ${c2.hits - c1.hits} hits`)
    await sleep(PAUSE_MS)
    const owner = await wrap(() => op(B, `owner ${what}`))
    return { cold, warm, owner }
  }
  let round = 0
  const enough = () => [ev.cold, ev.warm, ev.owner].every((e) => e.samples.length >= opts.reps)
  while ((round < opts.reps || !enough()) && round < opts.reps * 3) {
    checkBudget('the route-cache rounds')
    const X = entries[round % 2]
    const Y = entries[(round + 1) % 2]
    const j = await coldWarmOwner(X, `forwarded join, round ${round}`, (rel, what) => timedJoin(rel, agent.hostname, what), window)
    // the entry relay is A in the tables, whichever of the two it was
    for (const w of [j.cold, j.warm]) {
      w.topByRole = new Map([...w.topByRole].map(([k, v]) => [k.replace(/@[AC]$/, (m) => (X === A ? m : m === '@C' ? '@A' : '@C')), v]))
    }
    coldMs.push(j.cold.result); warmMs.push(j.warm.result); ownerMs.push(j.owner.result)
    keep(ev.cold, j.cold); keep(ev.warm, j.warm); keep(ev.owner, j.owner)
    if (round < opts.reps) { // the other entry relay's route has expired meanwhile (or nearly)
      const st = await coldWarmOwner(Y, `forwarded status request, round ${round}`, (rel, what) => statusProbe(rel, agent.hostname, what), (fn) => fn())
      sColdMs.push(st.cold); sWarmMs.push(st.warm); sOwnerMs.push(st.owner)
    }
    round++
  }

  // ---- 4. registrations
  log(`registrations: ${opts.reps} new tunnels and ${opts.reps} reconnects, agents dialling ${C.id}`)
  const regMs = { regNew: [], regKnown: [] }
  const moved = { regNew: 0, regKnown: 0 }
  let regSeq = 0
  async function register (tok) {
    const t0 = process.hrtime.bigint()
    const a = await h.startAgent({ relayHost: C.ip, relayAgentPort: 7000, token: tok, ca: keys.ca, localPort: mc.port, upTimeoutMs: 20000 })
    const ms = Number(process.hrtime.bigint() - t0) / 1e6
    return { a, ms, relay: a.proc.events.find((e) => e.event === 'tunnel_up').relay }
  }
  const stopAgent = async (a) => { await h.stopProcess(a.proc); await sleep(250) } // its release EVAL lands outside the next window
  const runTag = Date.now().toString(36)
  for (let tries = 0; ev.regNew.samples.length < opts.reps && tries < opts.reps * 3; tries++) {
    checkBudget('the registrations')
    const n = regSeq++
    const tok = await h.mintToken({ keys, sub: `bench-u-${runTag}-${n}`, tid: `bench-t-${runTag}-${n}`, ttl: 3600 })
    let reg
    const w = await window(async () => (reg = await register(tok)))
    if (keep(ev.regNew, w)) { regMs.regNew.push(reg.ms); if (reg.relay !== `${C.ip}:7000`) moved.regNew++ }
    await stopAgent(reg.a)
  }
  {
    const tok = await h.mintToken({ keys, sub: `bench-known-${runTag}`, tid: `bench-known-${runTag}`, ttl: 3600 })
    const first = await register(tok) // the tunnel now has a name; this relay caches the plan
    await stopAgent(first.a)
    for (let tries = 0; ev.regKnown.samples.length < opts.reps && tries < opts.reps * 3; tries++) {
      checkBudget('the registrations')
      let reg
      const w = await window(async () => (reg = await register(tok)))
      if (keep(ev.regKnown, w)) { regMs.regKnown.push(reg.ms); if (reg.relay !== `${C.ip}:7000`) moved.regKnown++ }
      await stopAgent(reg.a)
    }
  }
  const iEnd = await obs.snap()
  const allLines = await obs.linesBetween(iStart, iEnd)
  const observedSec = (iEnd.t - iStart.t) / 1000
  const mapRefresh = new Map()
  for (const e of allLines) if (e.ip !== 'lua' && /^cluster\|/.test(e.cmd)) mapRefresh.set(role.get(e.ip) || e.ip, (mapRefresh.get(role.get(e.ip) || e.ip) || 0) + 1)
  obs.close()

  // ---- checks: the bench measured what it says
  for (const [k, e] of Object.entries(ev)) {
    if (e.samples.length < 2) throw new Error(`only ${e.samples.length} clean Redis windows for "${e.name}" (${k})`)
  }
  const tunnelsOnB = metricOf(await metrics(B), 'dvv_relay_tunnels_active')
  if (tunnelsOnB !== 1) throw new Error(`${B.id} holds ${tunnelsOnB} tunnels at the end, expected the bench's one`)

  return {
    B, A, C, hostname: agent.hostname, dataplane,
    direct, fwd, fwdHit, fwdMiss, pairDiff, coldMs, warmMs, ownerMs, sDirect, sFwd, sPair, sColdMs, sWarmMs, sOwnerMs,
    redisRtt, idleSec, idleExec, idleTop, idleLua, ev, dirty, disagree, regMs, moved, rounds: round, observedSec, mapRefresh,
    relayArgs: RELAY_ARGS
  }
}

// ---------------------------------------------------------------------------------------------
// report

function render (r) {
  const date = new Date().toISOString().slice(0, 10)
  const cpu = (os.cpus()[0] || {}).model || 'unknown CPU'
  const ncpu = os.availableParallelism ? os.availableParallelism() : os.cpus().length
  const sd = stats(r.direct); const sf = stats(r.fwd); const sp = stats(r.pairDiff)
  const L = []
  L.push(`### ${r.mode === 'cluster' ? 'Redis Cluster (6 nodes, 3 primaries)' : 'Standalone Redis'}`)
  L.push('')
  L.push(`Measured ${date} by \`${commandLine}\` on ${ncpu} vCPU (${cpu}), kernel ${os.release()}, Node ${process.version};` +
    ` three relays (\`scripts/dev-cluster.sh\`, one network namespace each on a veth bridge), ${r.mode === 'cluster' ? 'a 6-node Redis Cluster' : 'standalone Redis'},` +
    ` data plane ${r.dataplane}; load average ${LOAD_AT_START.toFixed(2)} when the run started. Relay defaults (route cache ${ROUTE_CACHE_MS} ms, heartbeat ${HEARTBEAT_MS / 1000} s, lease ${LEASE_TTL_S} s) except \`${r.relayArgs}\`` +
    ' (every player comes from the bridge address). Tunnel on relay B; A is another relay of the region.')
  L.push('')
  {
    const tp0 = stats(r.sPair); const ev = r.ev
    const cnt = (k) => {
      const top = total(meanCounts(ev[k].samples.map((x) => x.top))); const ex = total(meanCounts(ev[k].samples.map((x) => x.exec)))
      return top === 0 && ex === 0 ? 'nothing' : `${f2(top)} round trip${top === 1 ? '' : 's'} (${f2(ex)} command${ex === 1 ? '' : 's'} executed)`
    }
    const bg = meanCounts([r.idleTop]); const bgRate = total(bg) / r.idleSec
    L.push(`**Summary.** Forwarding added ${signed2(tp0.p50)} ms (median of interleaved pairs) to the first answer of a status request;` +
      ` to a whole login it added ${signed(sp.p50)} ms (median of pairs), ${Math.abs(sp.p50) < sd.p90 - sd.p50 ? 'inside' : 'beyond'} the login's own spread (direct p50 ${f1(sd.p50)}, p90 ${f1(sd.p90)} ms).` +
      ` Redis: a join costs ${cnt('owner')} at the owner and ${cnt('warm')} forwarded with a cached route, ${cnt('cold')} when A's cached route has expired;` +
      ` a registration costs ${cnt('regNew')} for a new tunnel and ${cnt('regKnown')} for a known one;` +
      ` the idle background is ${f2(bgRate)} round trips/s for three relays and one tunnel.`)
    L.push('')
  }
  // owner vs forwarded, the difference of the two and the per-pair distribution
  const forwardTable = (title, d, f, pair, fmt, sgn) => {
    L.push(`| ${title} | min | p50 | p90 | max |`)
    L.push('|---|---|---|---|---|')
    L.push(`| entering at the owner B | ${fmt(d.min)} | ${fmt(d.p50)} | ${fmt(d.p90)} | ${fmt(d.max)} |`)
    L.push(`| entering at A, forwarded A -> B | ${fmt(f.min)} | ${fmt(f.p50)} | ${fmt(f.p90)} | ${fmt(f.max)} |`)
    L.push(`| added by forwarding (forwarded - direct) | ${sgn(f.min - d.min)} | ${sgn(f.p50 - d.p50)} | | |`)
    L.push(`| same, per interleaved pair | ${sgn(pair.min)} | ${sgn(pair.p50)} | ${sgn(pair.p90)} | ${sgn(pair.max)} |`)
    L.push('')
  }
  forwardTable(`join latency, ms (${r.direct.length} each, interleaved)`, sd, sf, sp, f1, signed)
  const td = stats(r.sDirect); const tf = stats(r.sFwd); const tp = stats(r.sPair)
  forwardTable(`status request, ms to the first answer byte (raw socket, ${r.sDirect.length} each, interleaved)`,
    td, tf, tp, f2r, signed2)
  const sc = stats(r.coldMs); const sw = stats(r.warmMs); const so = stats(r.ownerMs)
  const tc = stats(r.sColdMs); const tw = stats(r.sWarmMs); const to = stats(r.sOwnerMs)
  const hit = r.fwdHit.length ? stats(r.fwdHit) : null
  L.push(`| route cache, ms (rounds: A's cached route expires, one untimed request at B, then ${PAUSE_MS} ms before each of: via A, via A again, at B) | rounds | min | p50 | max |`)
  L.push('|---|---|---|---|---|')
  L.push(`| join, forwarded, cold cache (A asks Redis) | ${sc.n} | ${f1(sc.min)} | ${f1(sc.p50)} | ${f1(sc.max)} |`)
  L.push(`| join, forwarded, the next one (cached) | ${sw.n} | ${f1(sw.min)} | ${f1(sw.p50)} | ${f1(sw.max)} |`)
  L.push(`| join at the owner, same rounds | ${so.n} | ${f1(so.min)} | ${f1(so.p50)} | ${f1(so.max)} |`)
  L.push(`| join, cold - cached | | ${signed(sc.min - sw.min)} | ${signed(sc.p50 - sw.p50)} | |`)
  L.push(`| status request, forwarded, cold cache | ${tc.n} | ${f2r(tc.min)} | ${f2r(tc.p50)} | ${f2r(tc.max)} |`)
  L.push(`| status request, forwarded, the next one (cached) | ${tw.n} | ${f2r(tw.min)} | ${f2r(tw.p50)} | ${f2r(tw.max)} |`)
  L.push(`| status request at the owner, same rounds | ${to.n} | ${f2r(to.min)} | ${f2r(to.p50)} | ${f2r(to.max)} |`)
  L.push(`| status request, cold - cached | | ${signed2(tc.min - tw.min)} | ${signed2(tc.p50 - tw.p50)} | |`)
  L.push('')
  const rr = stats(r.redisRtt)
  L.push(`A cold cache costs A one Redis round trip; for scale, a \`PING\` from A's namespace to Redis takes min ${f2r(rr.min)}, p50 ${f2r(rr.p50)} ms (${rr.n} of them), well inside these rows' spread.`)
  L.push('')
  L.push(`In the interleaved series ${r.fwdMiss.length} of ${r.fwd.length} forwarded joins found A's cached route expired (it lives ${ROUTE_CACHE_MS} ms from the lookup)` +
    (hit ? `; the cached ones alone: p50 ${f1(hit.p50)} ms.` : '.'))
  L.push('')
  L.push('| Redis per event (mean of clean windows) | windows | round trips, sent by the relays (MONITOR) | commands executed (INFO commandstats, incl. inside scripts) | executed |')
  L.push('|---|---|---|---|---|')
  for (const k of ['owner', 'warm', 'cold', 'regNew', 'regKnown']) {
    const e = r.ev[k]
    const top = meanCounts(e.samples.map((s) => s.topByRole))
    const exec = meanCounts(e.samples.map((s) => s.exec))
    const topLabel = (x) => { const [c, who] = x.split('@'); return `${upper(c)}${who ? ` (${who})` : ''}` }
    L.push(`| ${e.name} | ${e.samples.length} | ${f2(total(top))}: ${fmtCounts(top, topLabel)} | ${fmtCounts(exec)} | ${f2(total(exec))} |`)
  }
  const idleTopRate = new Map([...r.idleTop].map(([k, v]) => [k, v / r.idleSec]))
  const idleExecRate = new Map([...r.idleExec].map(([k, v]) => [k, v / r.idleSec]))
  const topLabel = (x) => { const [c, who] = x.split('@'); return `${upper(c)}${who ? ` (${who})` : ''}` }
  L.push(`| background, per second (idle ${r.idleSec.toFixed(1)} s: 3 relays, 1 tunnel on B) | | ${f2(total(idleTopRate))}: ${fmtCounts(idleTopRate, topLabel)} | ${fmtCounts(idleExecRate)} | ${f2(total(idleExecRate))} |`)
  L.push('')
  if (r.mode === 'cluster') {
    L.push(`Slot-map refreshes (\`CLUSTER SLOTS\`, each relay every 30 s in a healthy cluster) over the whole ${r.observedSec.toFixed(0)} s Redis was observed: ` +
      `${[...r.mapRefresh].map(([k, v]) => `${k} ${v}`).join(', ') || 'none'}; windows they fell in were discarded like heartbeats.`)
    L.push('')
  }
  const rn = stats(r.regMs.regNew); const rk = stats(r.regMs.regKnown)
  L.push(`Registration wall time (agent process start to its \`tunnel_up\`, dialling a relay without tunnels): new tunnel p50 ${f1(rn.p50)} ms (min ${f1(rn.min)}), known tunnel p50 ${f1(rk.p50)} ms (min ${f1(rk.min)});` +
    ` ${r.moved.regNew + r.moved.regKnown} of ${rn.n + rk.n} were moved by placement. ${r.dirty} event windows touched by background work were discarded and repeated;` +
    ` ${r.disagree ? `in ${r.disagree} kept windows MONITOR and INFO disagreed (see the executed column)` : 'in every kept window, INFO commandstats matched the commands MONITOR showed'}.`)
  return L.join('\n')
}

const NCPU = os.availableParallelism ? os.availableParallelism() : os.cpus().length
const HOW_TO_READ = `How to read it:

- **Added join latency** is forwarded minus direct, both through the same real client, relay, agent
  and server; only the entry differs. The forwarded path adds A's own work (peek the handshake, find
  the route, open a TCP connection to B's internal port, send the signed forward header, wait for B's
  ACCEPT byte, hand both sockets to the data plane) and one hop over the veth bridge, since all
  namespaces share this host. A real deployment adds the A-B network on top: about 2 A-B round trips
  to set the forward up (TCP connect, header and ACCEPT) and one more for every client-server round
  trip of the login (a 1.21 login has about three), so relays of one region belong close together.
- **Cold route cache** adds one Redis \`GET\` at A; here Redis is one bridge hop away. A relay keeps a
  route for ${ROUTE_CACHE_MS} ms after looking it up, so a busy name costs at most one lookup per relay every
  ${ROUTE_CACHE_MS / 1000} s, however many players join.
- **Round trips** are the commands the relays sent (one \`EVAL\` is one round trip, whatever its script
  does); **executed** counts what Redis ran, as \`INFO commandstats\` counts it, including the commands
  inside scripts. Windows are delimited by INFO snapshots on every primary. A window that background
  work touched (a heartbeat's ZADD/ZREM within ${GUARD_MS} ms of it, lease renewals run in the same tick;
  a slot-map refresh) is thrown away and the event repeated, so per-event figures carry none. The
  control-events poller (each relay's \`XREAD\` every 200 ms, \`XREVRANGE\` on an idle stream) is
  taken out of every window and counted in the background only. The is reported on its own, as a rate over an idle window of one lease-renewal period
  (${IDLE_MS / 1000} s): each relay's heartbeat every ${HEARTBEAT_MS / 1000} s, plus the owner's lease renewal every
  ${LEASE_TTL_S / 3} s. With Redis Cluster the counts are summed over the primaries (the replicas'
  \`REPLCONF ACK\`s left out); replicas apply the writes again, not counted here.
- Absolute times are mostly the Node client and server (PrismarineJS) on a ${NCPU} vCPU VM, with
  wake-up noise and rare stalls of ~100 ms (the max column; they show with either data plane, and
  other work may share the machine: see the load average). Compare min and p50 within one table, not
  across runs. A whole login varies by more than forwarding costs; the status-request rows, with a
  fraction of the client work, resolve it. The route-cache rounds start each request from an idle
  machine (after a pause), hence slower than the back-to-back series.`

const BEGIN = '<!-- cluster-bench:begin (generated by bench/cluster-bench.mjs; edits between the markers are overwritten) -->'
const END = '<!-- cluster-bench:end -->'
const modeBegin = (m) => `<!-- cluster-bench:redis=${m} -->`
const modeEnd = (m) => `<!-- cluster-bench:redis=${m}:end -->`

function writeDoc (file, mode, body) {
  let doc = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '# Performance\n'
  const re = /<!-- cluster-bench:begin[^>]*-->[\s\S]*?<!-- cluster-bench:end -->/
  const old = re.exec(doc)
  const parts = {}
  for (const m of ['standalone', 'cluster']) {
    if (old) {
      const i = old[0].indexOf(modeBegin(m)); const j = old[0].indexOf(modeEnd(m))
      if (i >= 0 && j > i) parts[m] = old[0].slice(i + modeBegin(m).length, j).trim()
    }
  }
  parts[mode] = body
  const section = [BEGIN, '## Replicas: forwarding and Redis cost', '',
    'Generated by `node bench/cluster-bench.mjs [--redis standalone|cluster]`; each Redis mode keeps its own last run.', '',
    ...['standalone', 'cluster'].filter((m) => parts[m]).flatMap((m) => [modeBegin(m), parts[m], modeEnd(m), '']),
    HOW_TO_READ, END].join('\n')
  if (old) doc = doc.slice(0, old.index) + section + doc.slice(old.index + old[0].length)
  else doc = doc.replace(/\n*$/, '\n\n') + section + '\n'
  const tmp = `${file}.cluster-bench.tmp`
  fs.writeFileSync(tmp, doc)
  fs.renameSync(tmp, file)
}

// ---------------------------------------------------------------------------------------------

let code = 0
try {
  const res = await run()
  res.mode = opts.redis
  const body = render(res)
  process.stdout.write(`\n## Replicas: forwarding and Redis cost\n\n${body}\n\n${HOW_TO_READ}\n`)
  if (opts.out !== '-') {
    writeDoc(path.resolve(REPO, opts.out), opts.redis, body)
    log(`wrote the ${opts.redis} part of the cluster-bench section of ${opts.out}`)
  }
} catch (e) {
  code = 1
  process.stderr.write(`\ncluster-bench: FAILED: ${e && e.stack ? e.stack : e}\n${relayLogTails()}\n`)
} finally {
  await teardown()
  log(code ? 'failed; cluster down' : 'done; cluster down')
}
process.exit(code)
