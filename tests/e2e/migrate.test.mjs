// The agent moving between relays without dropping anyone.
//
// 1. Real relays: a relay drained with SIGTERM MOVEs its agent to the region's other relay
//    (shared Redis); a player who was playing through the drained relay keeps playing (chat
//    echo) while the agent moves, and new players join through the new relay.
// 2. Scripted relays (FakeRelay below: TLS control channel + data connections, speaking
//    docs/protocol.md) for what today's relay does not do yet but the agent must:
//    make-before-break (the old session serves until the new WELCOME, then GOODBYE "moved"; a
//    second MOVE meanwhile is ignored; the old session's idle pool closes, the player's
//    connection does not), STATUS with the local server's status after WELCOME, keepalive on
//    the control and pooled connections, re-homing to a WELCOME peer when the relay dies and
//    home is down, and trying every address of the relay's name.

import { before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import tls from 'node:tls'
import { Duplex } from 'node:stream'
import { promisify } from 'node:util'
import * as h from './harness.mjs'
import { join, stayingPlayer, textOf } from './mc-client.mjs'

const exec = promisify(execFile)
const show = (x) => JSON.stringify(x)

// the certificate also names multi.dvv.test: the name that resolves to two addresses below
process.env.DVV_CERT_SANS = 'DNS:multi.dvv.test'

// ---------------------------------------------------------------------------------------------
// FakeRelay: one port like the relay's agent port (first byte 0x16: TLS control channel, 'D':
// data connection "DVVA" + 32-byte token), plus a player port that joins each player to one of
// the agent's idle data connections with the "DVVP" header.

function frame (type, obj) {
  const body = Buffer.from(JSON.stringify(obj))
  const hdr = Buffer.from([1, type, body.length >> 8, body.length & 255])
  return Buffer.concat([hdr, body])
}

const T = { HELLO: 1, WELCOME: 2, ERROR: 3, ATTACH: 4, PING: 5, PONG: 6, MOVE: 7, GOODBYE: 8, STATUS: 9 }

class FakeRelay {
  constructor ({ name, keys, host = '127.0.0.1' }) {
    this.name = name
    this.keys = keys
    this.host = host
    this.sessions = [] // every control channel, in order
    this.data = new Map() // token hex -> {sock, used, closedAt}
    this.log = []
    this.waiters = new Set()
  }

  note (what) {
    this.log.push({ t: Date.now(), what })
    for (const w of this.waiters) w()
  }

  async until (pred, what, timeoutMs = 10000) {
    const t0 = Date.now()
    while (!pred()) {
      if (Date.now() - t0 > timeoutMs) throw new Error(`${this.name}: timed out after ${timeoutMs} ms waiting for ${what}; log: ${show(this.log.map((l) => l.what))}`)
      await new Promise((resolve) => {
        const w = () => { this.waiters.delete(w); resolve() }
        this.waiters.add(w)
        setTimeout(w, 50)
      })
    }
  }

  async start () {
    const key = fs.readFileSync(this.keys.relayKey)
    const cert = fs.readFileSync(this.keys.relayCert)
    this.server = net.createServer((sock) => {
      sock.once('data', (first) => {
        if (first[0] === 0x16) this.control(sock, first, key, cert)
        else this.dataConn(sock, first)
      })
      sock.on('error', () => {})
    })
    this.players = net.createServer((p) => this.player(p))
    await new Promise((resolve) => this.server.listen(0, this.host, resolve))
    await new Promise((resolve) => this.players.listen(0, '127.0.0.1', resolve))
    this.port = this.server.address().port
    this.addr = this.host.includes(':') ? `[${this.host}]:${this.port}` : `${this.host}:${this.port}`
    this.playerPort = this.players.address().port
    return this
  }

  /** Stop accepting agents (existing connections stay): the relay is "down" for new dials. */
  async closeListener () {
    this.server.close() // its callback waits for the open connections: not awaited
    await h.sleep(100)
  }

  control (sock, first, key, cert) {
    // hand TLS the bytes already read: a Duplex over the socket that replays them first
    const d = new Duplex({
      read () {},
      write (c, _e, cb) { sock.write(c, cb) },
      final (cb) { sock.end(); cb() },
      destroy (err, cb) { sock.destroy(); cb(err) }
    })
    d.push(first)
    sock.on('data', (c) => d.push(c))
    sock.on('end', () => d.push(null))
    sock.on('close', () => d.destroy())
    const t = new tls.TLSSocket(d, { isServer: true, key, cert })
    const s = { relay: this, tls: t, raw: sock, frames: [], closed: false, closedAt: null, localPort: sock.remotePort }
    s.send = (type, obj) => { if (!s.closed) t.write(frame(type, obj)) }
    s.got = (type, pred = () => true) => s.frames.find((f) => f.type === type && pred(f.msg))
    this.sessions.push(s)
    let buf = Buffer.alloc(0)
    t.on('data', (c) => {
      buf = Buffer.concat([buf, c])
      while (buf.length >= 4) {
        const len = buf.readUInt16BE(2)
        if (buf.length < 4 + len) break
        const type = buf[1]
        let msg = null
        try { msg = JSON.parse(buf.subarray(4, 4 + len).toString('utf8')) } catch { msg = { unparsable: true } }
        buf = buf.subarray(4 + len)
        s.frames.push({ t: Date.now(), type, msg, len })
        this.note(`session ${this.sessions.indexOf(s)}: ${type}`)
        if (type === T.PING) s.send(T.PONG, { t: msg.t })
        if (type === T.HELLO && this.onHello) this.onHello(s, msg)
      }
    })
    const closed = () => { if (!s.closed) { s.closed = true; s.closedAt = Date.now(); this.note(`session ${this.sessions.indexOf(s)} closed`) } }
    t.on('close', closed)
    t.on('end', closed)
    t.on('error', closed)
  }

  dataConn (sock, first) {
    let buf = first
    const take = () => {
      if (buf.length < 36) return false
      assert.equal(buf.subarray(0, 4).toString(), 'DVVA', `${this.name}: data connection without DVVA`)
      const token = buf.subarray(4, 36).toString('hex')
      const dc = { sock, token, used: false, closedAt: null }
      this.data.set(token, dc)
      sock.on('close', () => { dc.closedAt = Date.now(); this.note(`data ${token.slice(0, 8)} closed`) })
      this.note(`data ${token.slice(0, 8)} attached`)
      return true
    }
    if (!take()) {
      const more = (c) => { buf = Buffer.concat([buf, c]); if (take()) sock.off('data', more) }
      sock.on('data', more)
    }
  }

  /** Ask the session's agent for n pooled data connections. */
  attach (s, n) {
    const tokens = []
    for (let i = 0; i < n; i++) tokens.push(Buffer.from(Array.from({ length: 32 }, () => Math.floor(Math.random() * 256))).toString('hex'))
    s.send(T.ATTACH, { tokens })
    return tokens
  }

  idle (tokens) { return tokens.map((t) => this.data.get(t)).filter((d) => d && !d.used && !d.closedAt) }

  player (p) {
    const dc = [...this.data.values()].find((d) => !d.used && !d.closedAt)
    if (!dc) { p.destroy(); return }
    dc.used = true
    const hdr = Buffer.alloc(8 + 38)
    hdr.write('DVVP', 0)
    hdr[4] = 1
    hdr.writeUInt16BE(38, 6)
    hdr[8] = 4
    hdr.writeUInt16BE(p.remotePort, 10)
    hdr.writeUInt16BE(this.playerPort, 12)
    hdr[8 + 6 + 10] = 0xff; hdr[8 + 6 + 11] = 0xff; Buffer.from([127, 0, 0, 1]).copy(hdr, 8 + 6 + 12)
    hdr[8 + 22 + 10] = 0xff; hdr[8 + 22 + 11] = 0xff; Buffer.from([127, 0, 0, 1]).copy(hdr, 8 + 22 + 12)
    dc.sock.write(hdr)
    p.pipe(dc.sock)
    dc.sock.pipe(p)
    p.on('error', () => {})
    p.on('close', () => dc.sock.destroy())
    dc.sock.on('close', () => p.destroy())
  }

  welcome (s, extra = {}) {
    s.send(T.WELCOME, { hostname: 'brave-otter.eu.dvv.test', tunnel: 't-fake', instance: this.name, region: 'eu', ping_ms: 15000, ...extra })
    s.welcomedAt = Date.now()
    this.note(`welcomed session ${this.sessions.indexOf(s)}`)
  }

  stop () {
    for (const s of this.sessions) { try { s.raw.destroy() } catch {} }
    for (const d of this.data.values()) { try { d.sock.destroy() } catch {} }
    try { this.server.close() } catch {}
    try { this.players.close() } catch {}
  }
}

// Keepalive as the kernel sees it: `ss -o` shows a keepalive timer on sockets with SO_KEEPALIVE.
async function keepaliveTimers (agentPid, remotePort) {
  const { stdout } = await exec('ss', ['-tnopH', 'state', 'established', `( dport = :${remotePort} )`])
  return stdout.split('\n').filter((l) => l.includes(`pid=${agentPid},`)).map((l) => /timer:\((\w+)/.exec(l)?.[1] || 'none')
}

// ---------------------------------------------------------------------------------------------

let redis, keys, mcs, token
const fakes = []

before(h.withLogs('setup', async () => {
  h.requireBinaries()
  redis = await h.startRedis()
  keys = await h.makeKeys()
  mcs = await h.startMcServer({ motd: 'migrate e2e' })
  token = await h.mintToken({ keys, sub: 'user-mig', tid: 'tunnel-mig', ttl: 3600 })
}), { timeout: 60000 })

after(async () => {
  for (const f of fakes) f.stop()
  await h.cleanup()
})

const upEvents = (agent) => agent.proc.events.filter((e) => e.event === 'tunnel_up')

const waitEvent = (agent, name, opts) => agent.waitForEvent(name, opts)

h.scenario('a drained relay moves its agent to the other relay while its player keeps playing', async () => {
  const relayA = await h.startRelay({ redisPort: redis.port, keys, instanceId: 'mig-a' })
  const agent = await h.startAgent({ relayAgentPort: relayA.agentPort, token, ca: keys.ca, localPort: mcs.port })
  assert.equal(upEvents(agent)[0].relay, `127.0.0.1:${relayA.agentPort}`)
  // the second relay joins the region after the agent settled (no placement MOVE at start)
  const relayB = await h.startRelay({ redisPort: redis.port, keys, instanceId: 'mig-b' })
  await h.sleep(2500) // one heartbeat: B is a move target now

  const p = await stayingPlayer({ relayPort: relayA.playerPort, hostname: agent.hostname, username: 'stayer' })
  assert.equal(await p.chat('before'), true, 'expected the chat echo through relay A before the drain')

  const n0 = agent.proc.events.length
  process.kill(relayA.pid, 'SIGTERM')
  const up = await waitEvent(agent, 'tunnel_up', { since: n0, timeoutMs: 20000 })
  assert.equal(up.relay, `127.0.0.1:${relayB.agentPort}`, `expected the agent on relay B, got ${show(up)}`)
  const mig = agent.proc.events.slice(n0).find((e) => e.event === 'migrating')
  assert.ok(mig, `expected a migrating event, got ${show(agent.proc.events.slice(n0))}`)
  assert.equal(mig.to, `127.0.0.1:${relayB.agentPort}`)
  assert.equal(mig.from, `127.0.0.1:${relayA.agentPort}`)

  // the player who was playing through A never noticed
  for (const msg of ['during', 'after-1', 'after-2']) {
    assert.equal(await p.chat(msg), true, `expected the chat echo of '${msg}' through the draining relay A (player ended: ${p.ended})`)
  }
  assert.equal(relayA.proc.exited, false, 'relay A should wait for its player while draining')
  // new players come in through B
  const res = await join({ relayPort: relayB.playerPort, hostname: agent.hostname, username: 'newcomer', chat: 'hi', timeoutMs: 15000 })
  assert.equal(res.ok, true, `expected a join through relay B after the move, got ${show(res)}`)
  // the player leaves: the drained relay exits on its own
  p.end()
  const ex = await Promise.race([relayA.proc.exitPromise, h.sleep(15000).then(() => null)])
  assert.ok(ex, 'relay A did not exit after its last player left')
  assert.equal(ex.code, 0, `expected relay A to exit 0 after draining, got ${show(ex)}`)
  const a = await h.stopProcess(agent.proc)
  assert.ok(!a.forced && a.code === 0, `expected the agent to exit 0 on SIGTERM, got ${show(a)}`)
  const b = await h.stopProcess(relayB.proc)
  assert.ok(!b.forced, `expected relay B to exit on SIGTERM, got ${show(b)}`)
})

h.scenario('make-before-break: the old session serves until the new WELCOME, then gets GOODBYE moved; players stay', async () => {
  const r1 = await new FakeRelay({ name: 'r1', keys }).start()
  const r2 = await new FakeRelay({ name: 'r2', keys }).start()
  const r3 = await new FakeRelay({ name: 'r3', keys }).start()
  fakes.push(r1, r2, r3)
  let r1s = null
  r1.onHello = (s) => { r1s = s; r1.welcome(s) }
  const agentP = h.startAgent({ relayAgentPort: r1.port, token: 'fake.token.value', ca: keys.ca, localPort: mcs.port })
  const agent = await agentP
  assert.equal(upEvents(agent)[0].relay, r1.addr)
  assert.equal(r1s.got(T.HELLO).msg.placed, undefined, 'a first HELLO is not placed')

  // STATUS: the local server's status response, right after WELCOME
  await r1.until(() => r1s.got(T.STATUS), 'a STATUS after WELCOME')
  const st = r1s.got(T.STATUS).msg
  assert.equal(textOf(st.description), 'migrate e2e', `expected the server's MOTD in STATUS, got ${show(st)}`)
  assert.ok(st.version && typeof st.version.protocol === 'number', `expected version.protocol in STATUS, got ${show(st)}`)
  assert.ok(st.players && typeof st.players.max === 'number', `expected players in STATUS, got ${show(st)}`)

  // a pool of 3; one carries a player
  const pool1 = r1.attach(r1s, 3)
  await r1.until(() => r1.idle(pool1).length === 3, 'three pooled data connections')
  const p = await stayingPlayer({ relayPort: r1.playerPort, hostname: agent.hostname, username: 'mbb' })
  assert.equal(await p.chat('one'), true, 'expected the chat echo through r1')

  // keepalive on the control channel and on the pooled connections (decision 5); a socket
  // with data in flight shows its retransmission timer instead: look again until it settled
  let timers = []
  for (let i = 0; i < 30; i++) {
    timers = await keepaliveTimers(agent.pid, r1.port)
    if (timers.length >= 4 && timers.every((x) => x === 'keepalive')) break
    await h.sleep(100)
  }
  assert.ok(timers.length >= 4, `expected the agent's control + data connections to r1, got ${show(timers)}`)
  assert.deepEqual([...new Set(timers)], ['keepalive'], `expected a keepalive timer on every agent connection to r1, got ${show(timers)}`)

  // MOVE: r2 holds WELCOME back for a while; meanwhile r1 must still be served
  let r2s = null
  let helloAt = null
  r2.onHello = (s) => { r2s = s; helloAt = Date.now() }
  const n0 = agent.proc.events.length
  r1s.send(T.MOVE, { addr: r2.addr, reason: 'relay draining' })
  await r2.until(() => r2s, 'HELLO on r2')
  assert.equal(r2s.got(T.HELLO).msg.placed, true, 'a HELLO after MOVE says placed')
  assert.equal(r1s.closed, false, 'the old session must stay open until the new one is welcomed')
  const mig = await waitEvent(agent, 'migrating', { since: n0 })
  assert.equal(mig.to, r2.addr)
  // a second MOVE during the migration is ignored (one migration in flight)
  r1s.send(T.MOVE, { addr: r3.addr, reason: 'changed my mind' })
  // the old session still answers PINGs and takes ATTACHes
  r1s.send(T.PING, { t: 4242 })
  await r1.until(() => r1s.got(T.PONG, (m) => m.t === 4242), 'PONG on the old session during the migration')
  const pool2 = r1.attach(r1s, 1)
  await r1.until(() => r1.idle(pool2).length === 1, 'an ATTACH on the old session served')
  assert.equal(await p.chat('two'), true, 'expected the chat echo during the migration')
  await h.sleep(300)
  assert.equal(r3.sessions.length, 0, 'the second MOVE must not open another session')
  assert.equal(agent.proc.events.slice(n0).some((e) => e.event === 'tunnel_down'), false, 'no tunnel_down while the old session serves')

  // WELCOME on r2: GOODBYE "moved" on r1, then r1's idle pool closes; the player stays
  r2.welcome(r2s, { peers: [r3.addr, 'not an address', 'bad host:1'] })
  const up = await waitEvent(agent, 'tunnel_up', { since: n0 })
  assert.equal(up.relay, r2.addr)
  assert.equal(up.moved_from, r1.addr, `expected tunnel_up to say where it moved from, got ${show(up)}`)
  await r1.until(() => r1s.closed, 'the old session closed')
  const bye = r1s.got(T.GOODBYE)
  assert.ok(bye, `expected GOODBYE on the old session, got frames ${show(r1s.frames.map((f) => f.type))}`)
  assert.equal(bye.msg.code, 'moved')
  assert.ok(bye.t >= r2s.welcomedAt, 'GOODBYE moved only after the new WELCOME')
  assert.ok(helloAt < r2s.welcomedAt)
  await r1.until(() => [...pool1, ...pool2].filter((t) => !r1.data.get(t).used).every((t) => r1.data.get(t).closedAt), "r1's idle pool closed")
  for (const t of [...pool1, ...pool2]) {
    const d = r1.data.get(t)
    if (!d.used) assert.ok(d.closedAt >= r2s.welcomedAt, 'an idle connection of the old session closed before the new WELCOME')
  }
  assert.equal(await p.chat('three'), true, `expected the chat echo through r1 after the move (player ended: ${p.ended})`)
  // the new session gets its STATUS too
  await r2.until(() => r2s.got(T.STATUS), 'a STATUS on the new session')
  assert.equal(agent.proc.events.slice(n0).some((e) => e.event === 'tunnel_down'), false, 'the tunnel never went down')

  // re-homing: r2 dies without a MOVE and home (r1) is gone: the agent goes to r2's peer r3
  let r3s = null
  r3.onHello = (s) => { r3s = s; r3.welcome(s) }
  await r1.closeListener()
  const n1 = agent.proc.events.length
  r2s.raw.destroy()
  const up3 = await waitEvent(agent, 'tunnel_up', { since: n1, timeoutMs: 20000 })
  assert.equal(up3.relay, r3.addr, `expected the agent to re-home to r2's peer r3, got ${show(up3)}`)
  assert.equal(r3s.got(T.HELLO).msg.placed, undefined, 're-homing is not a MOVE: no placed flag')
  const tried = agent.proc.events.slice(n1).filter((e) => e.event === 'connecting').map((e) => e.relay)
  assert.deepEqual(tried.slice(0, 2), [r1.addr, r3.addr], `expected home first, then the peer: ${show(tried)}`)
  assert.equal(await p.chat('four'), true, `expected the player through r1 to keep playing (player ended: ${p.ended})`)
  p.end()
  // SIGTERM: GOODBYE on the session, exit 0
  const a = await h.stopProcess(agent.proc)
  assert.ok(!a.forced && a.code === 0, `expected the agent to exit 0 on SIGTERM, got ${show(a)}`)
  assert.ok(r3s.got(T.GOODBYE), 'expected GOODBYE from the stopping agent')
})

h.scenario('a relay from before 32 KiB frames that cuts the session on a big STATUS is not fed one again', async () => {
  // a server whose status alone is over 8192 bytes (a long MOTD); the old relay refuses frames
  // over 8192 bytes as a protocol error: it just closes
  const big = await h.startMcServer({ motd: 'long motd '.repeat(1000) })
  const old = await new FakeRelay({ name: 'old', keys }).start()
  fakes.push(old)
  old.onHello = (s) => old.welcome(s)
  const agent = await h.startAgent({ relayAgentPort: old.port, token: 'fake.token.value', ca: keys.ca, localPort: big.port })
  await old.until(() => old.sessions[0].frames.some((f) => f.type === T.STATUS), 'the first (big) STATUS')
  assert.ok(old.sessions[0].got(T.STATUS).len > 8192)
  old.sessions[0].raw.destroy() // what a relay limited to 8192-byte frames does
  await old.until(() => old.sessions.length >= 2 && old.sessions[1].welcomedAt, 'the agent back')
  await h.sleep(1500) // the poll after WELCOME has answered by now
  const s2 = old.sessions[1]
  assert.equal(s2.closed, false)
  assert.equal(s2.frames.some((f) => f.type === T.STATUS && f.len > 8192), false, 'a big STATUS was sent to the old relay again')
  assert.equal(s2.got(T.STATUS), undefined, 'a status over 8192 bytes even without a favicon is not sent at all')
  assert.match(fs.readFileSync(agent.proc.stderrLog, 'utf8'), /keeping STATUS under 8192 bytes/)
  const a = await h.stopProcess(agent.proc)
  assert.ok(!a.forced && a.code === 0, `expected the agent to exit 0 on SIGTERM, got ${show(a)}`)
  await h.stopProcess(big.proc)
})

h.scenario('the agent tries every address its relay name resolves to', async (t) => {
  // a private mount namespace for the agent only: its /etc/hosts gives multi.dvv.test two
  // addresses, ::1 first; the relay listens on 127.0.0.1 only
  const hosts = path.join(h.tempRoot(), 'hosts')
  fs.writeFileSync(hosts, '127.0.0.1 localhost\n::1 multi.dvv.test\n127.0.0.1 multi.dvv.test\n')
  try {
    const { stdout } = await exec('unshare', ['-m', 'sh', '-c', `mount --bind ${hosts} /etc/hosts && getent ahosts multi.dvv.test`])
    if (!/^::1\s/.test(stdout) || !stdout.includes('127.0.0.1')) throw new Error(`getent: ${stdout}`)
  } catch (e) {
    t.skip(`needs unshare -m and a bind mount (root): ${e.message.split('\n')[0]}`)
    return
  }
  const r4 = await new FakeRelay({ name: 'r4', keys }).start()
  fakes.push(r4)
  r4.onHello = (s) => r4.welcome(s)
  const args = ['--relay', `multi.dvv.test:${r4.port}`, '--ca', keys.ca, '--local', `127.0.0.1:${mcs.port}`, '--token', 'fake.token.value', '--json', '--log-level', 'info']
  const proc = h.spawnProcess('agent-multi', 'unshare', ['-m', 'sh', '-c', `mount --bind ${hosts} /etc/hosts && exec "$0" "$@"`, h.bin('dvv'), ...args])
  const { ev } = await h.waitForLine(proc, (_l, e) => e && e.event === 'tunnel_up', { timeoutMs: 20000, what: 'tunnel_up through the second address' })
  assert.equal(ev.relay, `127.0.0.1:${r4.port}`)
  const log = fs.readFileSync(proc.stderrLog, 'utf8')
  assert.match(log, /\[::1\]:\d+: .*trying 127\.0\.0\.1:\d+, its next address/, 'expected the first address to fail and the next to be tried')
  assert.equal(proc.events.some((e) => e.event === 'reconnecting'), false, 'the second address is part of the same attempt: no backoff')
  const a = await h.stopProcess(proc)
  assert.ok(!a.forced && a.code === 0, `expected the agent to exit 0 on SIGTERM, got ${show(a)}`)
})

h.scenario('no sanitizer reports from any agent or relay of this file', async () => {
  for (const f of fakes) f.stop()
  const reports = h.sanitizerReports()
  assert.deepEqual(reports, [], `expected no sanitizer reports, got:\n${reports.map((r) => `${r.name}: ${r.line}`).join('\n')}`)
})
