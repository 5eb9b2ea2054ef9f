// Bandwidth accounting end to end, on whichever plane DVV_DATAPLANE names (scripts/test.sh runs
// the suite once per plane): the relay's per-user usage hash in Redis matches the bytes that
// really crossed the tunnel, both ways, byte for byte.
//
// What the relay counts is exactly what its data plane moves between a player's socket and the
// agent's data connection: the player's handshake (peeked for routing, then forwarded) and
// everything after it, and everything the server sends back. Not counted: the agent's attach
// preamble and the relay's player header on the data connection (both before the join), and
// the agent's local status pings.
// So the expectations below are computed from the far ends:
//  - Minecraft: a counting proxy in front of the local server sees every byte of the player's
//    connection (the agent forwards it unchanged, no PROXY header): up + down;
//  - raw streams: the test writes both ends itself: handshake + bytes each way.
//
//   DVV_DATAPLANE=userspace node --test --test-concurrency=1 tests/e2e/usage.test.mjs

import { before, after } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import * as h from './harness.mjs'
import { handshakeBytes, stayingPlayer } from './mc-client.mjs'

const exec = promisify(execFile)
const SUB = 'user-usage'
const MIB = 1024 * 1024
const FLUSH_MS = 500

let keys, redis, redisDir, relay, mcs, proxy, rawServer, agentMc, agentRaw

async function rcli (...args) {
  const { stdout } = await exec('redis-cli', ['-p', String(redis.port), '--raw', ...args])
  return stdout.trim()
}

async function usage () {
  const out = await rcli('HGETALL', `dvv:user:{${SUB}}:usage`)
  const lines = out ? out.split('\n') : []
  const o = {}
  for (let i = 0; i + 1 < lines.length; i += 2) o[lines[i]] = lines[i + 1]
  return o
}

async function live (tid) {
  const v = await rcli('HGET', `dvv:user:{${SUB}}:live`, tid)
  return v ? JSON.parse(v) : null
}

async function until (pred, what, timeoutMs = 15000) {
  const t0 = Date.now()
  let last
  for (;;) {
    last = await pred()
    if (last) return last
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await h.sleep(100)
  }
}

/** Waits until t:<tid> equals want, and checks the total is the sum of the tunnels. */
async function expectCounted (tid, want, what) {
  let u
  try {
    await until(async () => { u = await usage(); return Number(u['t:' + tid] || 0) === want }, what)
  } catch (e) {
    throw new Error(`${e.message}: t:${tid} = ${u && u['t:' + tid]}, want ${want} (usage ${JSON.stringify(u)})`)
  }
  const sum = Object.keys(u).filter((k) => k.startsWith('t:')).reduce((s, k) => s + Number(u[k]), 0)
  assert.equal(Number(u.bytes), sum, `bytes is the sum of the tunnels: ${JSON.stringify(u)}`)
  return u
}

function monthStart () {
  const d = new Date()
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1) / 1000
}

/** A redis-server with an RDB file on disk, so a restart keeps what was written. */
async function startRedis (port) {
  const proc = h.spawnProcess('redis', 'redis-server', [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    '--dir', redisDir, '--daemonize', 'no', '--protected-mode', 'no', '--loglevel', 'warning'
  ])
  await until(async () => {
    const r = await h.tcpRoundTrip(port, 'PING\r\n')
    return r && r.startsWith('+PONG')
  }, `redis on ${port}`, 10000)
  return { proc, port }
}

// In front of the Minecraft server: counts the bytes of each login connection (status pings,
// the agent's own, are connections of their own with next state 1 and are left out).
function startCountingProxy (targetPort) {
  const conns = []
  const srv = net.createServer((c) => {
    const rec = { up: 0, down: 0, login: null, closed: false }
    conns.push(rec)
    const s = net.connect({ port: targetPort, host: '127.0.0.1' })
    let head = Buffer.alloc(0)
    c.on('data', (d) => {
      rec.up += d.length
      if (rec.login === null) {
        head = Buffer.concat([head, d])
        if (head.length > head[0]) rec.login = head[head[0]] === 2
      }
      s.write(d)
    })
    s.on('data', (d) => { rec.down += d.length; c.write(d) })
    const done = () => { rec.closed = true; c.destroy(); s.destroy() }
    c.on('close', done); s.on('close', done)
    c.on('error', () => {}); s.on('error', () => {})
  })
  return new Promise((resolve) => srv.listen(0, '127.0.0.1', () => resolve({ srv, port: srv.address().port, conns })))
}

/** A raw player of the raw tunnel: dial, handshake, write up bytes, read down bytes, close. */
async function rawExchange (up, down) {
  const hs = handshakeBytes({ hostname: agentRaw.hostname })
  const serverSide = rawServer.nextPlayer()
  const p = net.connect({ port: relay.playerPort, host: '127.0.0.1' })
  await new Promise((resolve, reject) => { p.once('connect', resolve); p.once('error', reject) })
  p.write(hs)
  const s = await serverSide
  const gotUp = new Promise((resolve) => {
    let n = 0
    s.on('data', (d) => { n += d.length; if (n >= hs.length + up) resolve(n) })
    s.resume()
  })
  const gotDown = new Promise((resolve) => {
    let n = 0
    if (down === 0) resolve(0)
    p.on('data', (d) => { n += d.length; if (n >= down) resolve(n) })
  })
  const chunk = Buffer.alloc(64 * 1024, 7)
  const pump = async (sock, total) => {
    for (let left = total; left > 0;) {
      const n = Math.min(left, chunk.length)
      if (!sock.write(chunk.subarray(0, n))) await new Promise((resolve) => sock.once('drain', resolve))
      left -= n
    }
  }
  await Promise.all([pump(p, up), pump(s, down)])
  const [nu, nd] = await Promise.all([gotUp, gotDown])
  assert.equal(nu, hs.length + up)
  assert.equal(nd, down)
  p.end(); s.end()
  await Promise.all([new Promise((resolve) => p.on('close', resolve)), new Promise((resolve) => s.on('close', resolve))])
  return hs.length + up + down
}

before(h.withLogs('setup', async () => {
  h.requireBinaries()
  keys = await h.makeKeys()
  redisDir = await h.makeTempDir('redis-usage')
  redis = await startRedis(await h.freePort())
  relay = await h.startRelay({ redisPort: redis.port, keys, extraArgs: ['--usage-flush-ms', String(FLUSH_MS)] })
  mcs = await h.startMcServer({ motd: 'usage e2e' })
  proxy = await startCountingProxy(mcs.port)
  rawServer = await h.startRawServer()
  const tMc = await h.mintToken({ keys, sub: SUB, tid: 'tunnel-mc', ttl: 3600 })
  const tRaw = await h.mintToken({ keys, sub: SUB, tid: 'tunnel-raw', ttl: 3600 })
  agentMc = await h.startAgent({ relayAgentPort: relay.agentPort, token: tMc, ca: keys.ca, localPort: proxy.port })
  agentRaw = await h.startAgent({ relayAgentPort: relay.agentPort, token: tRaw, ca: keys.ca, localPort: rawServer.port })
}), { timeout: 90000 })

after(async () => {
  proxy?.srv.close()
  rawServer?.close()
  await h.cleanup()
})

h.scenario('a Minecraft player is counted byte for byte and shows in the live hash', { timeout: 60000 }, async () => {
  // live state is written as soon as the tunnels are up: hostname, region, instance, 0 players
  const l0 = await until(() => live('tunnel-mc'), 'a live entry for tunnel-mc')
  assert.equal(l0.hostname, agentMc.hostname)
  assert.equal(l0.region, 'eu')
  assert.equal(l0.instance, 'e2e-relay')
  assert.equal(l0.players, 0)
  assert.ok(Math.abs(l0.t - Date.now() / 1000) < 60, `t is recent: ${l0.t}`)
  const pl = await stayingPlayer({ relayPort: relay.playerPort, hostname: agentMc.hostname, username: 'counted' })
  assert.ok(await pl.chat('hello usage'), 'the server echoes chat')
  const l1 = await until(async () => { const l = await live('tunnel-mc'); return l && l.players === 1 && l }, 'players 1 in the live entry')
  assert.equal(l1.hostname, agentMc.hostname)
  assert.ok(l1.since >= l0.since)
  pl.end()
  await until(() => proxy.conns.filter((c) => c.login).every((c) => c.closed), 'the login connection closed at the server', 10000)
  const logins = proxy.conns.filter((c) => c.login)
  assert.equal(logins.length, 1, 'one login connection reached the server')
  const want = logins[0].up + logins[0].down
  assert.ok(want > 1000, `a real login moved bytes both ways (${logins[0].up} up, ${logins[0].down} down)`)
  const u = await expectCounted('tunnel-mc', want, 'the Minecraft login counted')
  assert.equal(Number(u.period), monthStart(), 'the period is the UTC calendar month (no plan)')
  await until(async () => { const l = await live('tunnel-mc'); return l && l.players === 0 }, 'players back to 0')
})

h.scenario('raw streams both ways: usage matches the bytes moved exactly', { timeout: 60000 }, async () => {
  const before = Number((await usage())['t:tunnel-raw'] || 0)
  let want = before
  want += await rawExchange(3 * MIB + 17, 5 * MIB + 3)
  want += await rawExchange(1234, 0)
  await expectCounted('tunnel-raw', want, 'the raw streams counted')
  assert.equal(Number(await relay.metric('dvv_relay_usage_dropped_bytes_total')), 0)
  assert.ok(Number(await relay.metric('dvv_relay_usage_flushes_total')) > 0)
})

h.scenario('a Redis restart mid-run loses no counted byte', { timeout: 90000 }, async () => {
  const before = Number((await usage())['t:tunnel-raw'] || 0)
  let want = before + await rawExchange(MIB, 2 * MIB)
  await expectCounted('tunnel-raw', want, 'the bytes before the restart')
  // bytes in flight when Redis goes: the relay keeps them; the unanswered batch is sent again
  const moving = rawExchange(4 * MIB, 4 * MIB)
  await h.sleep(50)
  await rcli('SHUTDOWN', 'SAVE').catch(() => {}) // the connection drops as it exits
  await until(() => redis.proc.exited, 'redis to exit', 10000)
  want += await moving
  want += await rawExchange(MIB + 1, 3)
  await h.sleep(3 * FLUSH_MS)
  assert.ok(Number(await relay.metric('dvv_relay_usage_backlog_bytes')) > 0, 'the relay holds a backlog while Redis is away')
  redis = await startRedis(redis.port)
  await expectCounted('tunnel-raw', want, 'every byte after Redis came back', 30000)
  assert.equal(Number(await relay.metric('dvv_relay_usage_backlog_bytes')), 0)
  assert.equal(Number(await relay.metric('dvv_relay_usage_dropped_bytes_total')), 0)
})

h.scenario('a new billing period resets the usage hash', { timeout: 60000 }, async () => {
  // as if the hash were last month's: the next flush with a later period starts it afresh
  await rcli('HSET', `dvv:user:{${SUB}}:usage`, 'period', String(monthStart() - 86400 * 31), 'bytes', '999999999', 't:old', '999999999')
  const n = await rawExchange(4321, 1234)
  const u = await expectCounted('tunnel-raw', n, 'only the new period\'s bytes')
  assert.equal(Number(u.period), monthStart())
  assert.equal(u['t:old'], undefined)
  assert.equal(Number(u.bytes), n)
})

h.scenario('a tunnel that goes down leaves the live hash; its bytes stay', { timeout: 60000 }, async () => {
  const before = Number((await usage())['t:tunnel-raw'])
  await h.stopProcess(agentRaw.proc)
  await until(async () => (await live('tunnel-raw')) === null, 'the live entry of tunnel-raw removed')
  assert.ok(await live('tunnel-mc'), 'the other tunnel stays live')
  assert.equal(Number((await usage())['t:tunnel-raw']), before)
})
