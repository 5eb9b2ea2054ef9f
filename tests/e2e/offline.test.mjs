// The relay answers for a tunnel that is offline from the status its agent last sent (CTL_STATUS,
// sanitized and cached in Redis): a status ping gets the server's MOTD and favicon marked
// "offline - back soon", a legacy ping the same in one line, a login a clear "reconnecting" kick,
// all at once; when the agent comes back, players join again.
//
//   node --test --test-concurrency=1 tests/e2e/offline.test.mjs

import { before, after } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import net from 'node:net'
import tls from 'node:tls'
import * as h from './harness.mjs'
import { join, ping, legacyPing } from './mc-client.mjs'
import { startServer } from './mc-server.mjs'

const MOTD = `Offline e2e world ${crypto.randomBytes(3).toString('hex')}`
// ~20 KiB: the cached answer is bigger than one default socket send buffer
const FAVICON = 'data:image/png;base64,' + crypto.randomBytes(15000).toString('base64')
const RECONNECTING = 'The server is reconnecting. Try again in a few seconds.'

let keys, redis, relay, mc, token, agent, hostname
const show = (r) => JSON.stringify(r && { ...r, raw: undefined })

before(h.withLogs('setup', async () => {
  h.requireBinaries()
  keys = await h.makeKeys()
  redis = await h.startRedis()
  relay = await h.startRelay({ redisPort: redis.port, keys })
  // in this process, so that its status can carry a favicon
  mc = await startServer({ port: 0, motd: MOTD, log: () => {} })
  mc.server.favicon = FAVICON
  token = await h.mintToken({ keys, sub: 'user-offline', tid: 'tunnel-offline', plan: 'free', ttl: 3600 })
  agent = await h.startAgent({ relayAgentPort: relay.agentPort, token, ca: keys.ca, localPort: mc.port })
  hostname = agent.hostname
}), { timeout: 90000 })

after(async () => {
  await h.cleanup()
  await mc?.close()
})

h.scenario('the agent\'s status reaches the relay and is stored', async () => {
  const deadline = Date.now() + 15000
  while (await relay.metric('dvv_relay_status_stored_total') < 1) {
    assert.ok(Date.now() < deadline, 'expected dvv_relay_status_stored_total >= 1 within 15 s of tunnel_up')
    await h.sleep(200)
  }
  const r = await ping({ relayPort: relay.playerPort, hostname, timeoutMs: 10000 })
  assert.equal(r.ok, true, `expected a status answer through the live tunnel, got ${show(r)}`)
  assert.equal(r.motd, MOTD, `expected the live server's own MOTD, got ${JSON.stringify(r.motd)}`)
})

h.scenario('with the agent stopped, a status ping answers at once with the cached MOTD and favicon marked offline', async () => {
  await h.stopProcess(agent.proc)
  const r = await ping({ relayPort: relay.playerPort, hostname, timeoutMs: 5000 })
  assert.equal(r.ok, true, `expected a status answer for ${hostname} while its agent is stopped, got ${show(r)}`)
  assert.ok(r.ms < 2000, `expected the answer at once, it took ${r.ms} ms`)
  assert.equal(r.motd, `offline - back soon\n${MOTD}`, `expected the offline mark and the cached MOTD, got ${JSON.stringify(r.motd)}`)
  assert.equal(r.raw.favicon, FAVICON, `expected the cached favicon (${FAVICON.length} chars), got ${String(r.raw.favicon).length} chars`)
  assert.equal(r.version, 'Offline', `expected version name "Offline", got ${JSON.stringify(r.version)}`)
  assert.equal(r.players && r.players.online, 0, `expected 0 players online, got ${JSON.stringify(r.players)}`)
})

h.scenario('a legacy 1.6 ping gets the same answer as a kick', async () => {
  const r = await legacyPing({ port: relay.playerPort, hostname, timeoutMs: 5000 })
  assert.equal(r.ok, true, `expected a 0xFF kick, got ${show(r)}`)
  assert.ok(r.ms < 2000, `expected the answer at once, it took ${r.ms} ms`)
  assert.equal(r.motd, `offline - back soon: ${MOTD}`, `expected the offline mark and the MOTD, got ${JSON.stringify(r.motd)}`)
  assert.equal(r.version, 'Offline', `expected version "Offline", got ${JSON.stringify(r.version)}`)
})

h.scenario('a login gets the reconnecting kick at once', async () => {
  const r = await join({ relayPort: relay.playerPort, hostname, username: 'early', timeoutMs: 5000 })
  assert.equal(r.ok, false, `expected the login to be refused while the agent is stopped, got ${show(r)}`)
  assert.equal(r.kicked, RECONNECTING, `expected ${JSON.stringify(RECONNECTING)}, got ${show(r)}`)
  assert.ok(r.ms < 3000, `expected the kick at once, it took ${r.ms} ms`)
})

h.scenario('a name nobody holds still gets the plain offline answer', async () => {
  const name = `nobody-${crypto.randomBytes(4).toString('hex')}.eu.dvv.test`
  const r = await join({ relayPort: relay.playerPort, hostname: name, username: 'lost', timeoutMs: 5000 })
  assert.equal(r.ok, false)
  assert.notEqual(r.kicked, RECONNECTING, `an unknown name must not be told it is reconnecting: ${show(r)}`)
  assert.match(r.kicked || '', /no server is online/i, `expected the offline kick, got ${show(r)}`)
})

h.scenario('after the agent restarts, players join again', async () => {
  agent = await h.startAgent({ relayAgentPort: relay.agentPort, token, ca: keys.ca, localPort: mc.port, upTimeoutMs: 30000 })
  assert.equal(agent.hostname, hostname, `expected the same hostname back, got ${agent.hostname}`)
  const r = await join({ relayPort: relay.playerPort, hostname, username: 'back', chat: 'hi again', timeoutMs: 15000 })
  assert.equal(r.ok, true, `expected a player to join through the restarted agent, got ${show(r)}`)
  const s = await ping({ relayPort: relay.playerPort, hostname, timeoutMs: 10000 })
  assert.equal(s.motd, MOTD, `expected the live MOTD again, got ${JSON.stringify(s.motd)}`)
})

// ---------------------------------------------------------------------------------------------
// A scripted agent (TLS control channel in this process) decides when data connections open, so
// players can be made to wait for a session, and that session then moved or crowded.

const T = { HELLO: 1, WELCOME: 2, ERROR: 3, ATTACH: 4, PING: 5, PONG: 6, MOVE: 7, GOODBYE: 8, STATUS: 9 }
function frame (type, obj) {
  const body = Buffer.from(JSON.stringify(obj))
  return Buffer.concat([Buffer.from([1, type, body.length >> 8, body.length & 255]), body])
}

/** One control session to a relay's agent port. Resolves once WELCOME arrived. */
async function scriptedSession (port, tok) {
  const s = { msgs: [], tokens: [], welcome: null }
  let buf = Buffer.alloc(0)
  s.sock = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false })
  s.sock.on('error', () => {})
  s.sock.on('data', (d) => {
    buf = Buffer.concat([buf, d])
    while (buf.length >= 4 && buf.length >= 4 + buf.readUInt16BE(2)) {
      const type = buf[1]
      const msg = JSON.parse(buf.subarray(4, 4 + buf.readUInt16BE(2)).toString())
      buf = buf.subarray(4 + buf.readUInt16BE(2))
      s.msgs.push({ type, msg })
      if (type === T.WELCOME) s.welcome = msg
      if (type === T.ATTACH) s.tokens.push(...msg.tokens)
      if (type === T.PING) s.sock.write(frame(T.PONG, { t: msg.t }))
    }
  })
  await new Promise((resolve, reject) => { s.sock.once('secureConnect', resolve); s.sock.once('error', reject) })
  s.sock.write(frame(T.HELLO, { proto: 1, token: tok, placed: true }))
  const t0 = Date.now()
  while (!s.welcome) {
    const err = s.msgs.find((m) => m.type === T.ERROR)
    assert.ok(!err && Date.now() - t0 < 10000, `expected WELCOME, got ${JSON.stringify(s.msgs)}`)
    await h.sleep(20)
  }
  return s
}

/** A data connection for one ATTACH token: resolves with what the relay sends on it. */
function dataConn (port, tokenHex) {
  const sock = net.connect(port, '127.0.0.1', () => sock.write(Buffer.concat([Buffer.from('DVVA'), Buffer.from(tokenHex, 'hex')])))
  const got = { sock, bytes: Buffer.alloc(0) }
  sock.on('data', (d) => { got.bytes = Buffer.concat([got.bytes, d]) })
  sock.on('error', () => {})
  return got
}

function varint (n) {
  const out = []
  do { let b = n & 0x7f; n >>>= 7; if (n) b |= 0x80; out.push(b) } while (n)
  return Buffer.from(out)
}
const mcString = (str) => Buffer.concat([varint(Buffer.byteLength(str)), Buffer.from(str)])
const packet = (body) => Buffer.concat([varint(body.length), body])

/** A raw player: a login handshake for name; collects what comes back. */
function rawPlayer (port, name) {
  const p = { bytes: Buffer.alloc(0), closed: false }
  const hs = packet(Buffer.concat([varint(0), varint(767), mcString(name), Buffer.from([0x63, 0xdd]), varint(2)]))
  const login = packet(Buffer.concat([varint(0), mcString('waiter'), Buffer.alloc(16)]))
  p.sock = net.connect(port, '127.0.0.1', () => p.sock.write(Buffer.concat([hs, login])))
  p.sock.on('data', (d) => { p.bytes = Buffer.concat([p.bytes, d]) })
  p.sock.on('close', () => { p.closed = true })
  p.sock.on('error', () => {})
  return p
}

async function until (pred, what, timeoutMs = 10000) {
  const t0 = Date.now()
  while (!(await pred())) {
    assert.ok(Date.now() - t0 < timeoutMs, `timed out after ${timeoutMs} ms waiting for ${what}`)
    await h.sleep(50)
  }
}

let relayA, relayB
const SECRET = crypto.randomBytes(24).toString('hex')

const forwardingRelay = (id) => h.startForwardingRelay({
  redisPort: redis.port,
  keys,
  instanceId: id,
  secret: SECRET,
  extraArgs: ['--join-wait-ms', '10000', '--max-waiting-per-tunnel', '2', '--pool-min', '0']
})

h.scenario('players waiting for a session that moves (GOODBYE "moved") follow it to the new relay instead of hearing "offline"', async () => {
  relayA = await forwardingRelay('e2e-move-a')
  relayB = await forwardingRelay('e2e-move-b')
  const tok = await h.mintToken({ keys, sub: 'user-move', tid: 'tunnel-move', plan: 'free', ttl: 3600 })
  const old = await scriptedSession(relayA.agentPort, tok)
  const name = old.welcome.hostname
  // the old session opens no data connection: the player waits at A
  const player = rawPlayer(relayA.playerPort, name)
  await h.sleep(300)
  assert.equal(player.bytes.length, 0, `expected the player to wait at A, it got ${player.bytes.toString()}`)
  // make-before-break: the new session is up at B, then the old one says "moved" at once (before
  // A's lease renewal can notice B's newer epoch); B's pool opens after that
  const neu = await scriptedSession(relayB.agentPort, tok)
  old.sock.write(frame(T.GOODBYE, { code: 'moved', reason: 'test' }))
  assert.equal(neu.welcome.hostname, name)
  await until(() => neu.tokens.length > 0, 'an ATTACH from B')
  const conns = neu.tokens.map((t) => dataConn(relayB.agentPort, t))
  await until(() => conns.some((c) => c.bytes.includes(Buffer.from(name))), `the player's handshake for ${name} on one of B's data connections (player got ${JSON.stringify(player.bytes.toString())})`)
  assert.ok(!player.bytes.toString().includes('offline') && !player.bytes.toString().includes('No server'),
    `the waiting player was answered instead of moved: ${player.bytes.toString()}`)
  // routed again by the GOODBYE, or already by A's lease renewal finding B's newer epoch
  assert.equal(await relayA.metric('dvv_relay_players_rerouted_total'), 1)
  assert.ok(await relayA.metric('dvv_relay_players_forwarded_total') >= 1, 'expected A to forward the player to B')
  player.sock.destroy()
  for (const c of conns) c.sock.destroy()
  old.sock.destroy()
  neu.sock.destroy()
})

h.scenario('a tunnel with --max-waiting-per-tunnel players waiting tells the next one at once that the server is busy', async () => {
  const tok = await h.mintToken({ keys, sub: 'user-busy', tid: 'tunnel-busy', plan: 'free', ttl: 3600 })
  const s = await scriptedSession(relayB.agentPort, tok)
  const name = s.welcome.hostname
  const waiting = [rawPlayer(relayB.playerPort, name), rawPlayer(relayB.playerPort, name)]
  await h.sleep(300)
  const t0 = Date.now()
  const third = rawPlayer(relayB.playerPort, name)
  await until(() => third.bytes.includes(Buffer.from('busy')), 'a busy kick for the third player', 3000)
  assert.ok(Date.now() - t0 < 2000, `expected the busy answer at once, it took ${Date.now() - t0} ms`)
  for (const w of waiting) assert.equal(w.bytes.length, 0, `the first two keep waiting, one got ${w.bytes.toString()}`)
  assert.ok(await relayB.metric('dvv_relay_players_busy_total') >= 1)
  for (const p of [...waiting, third]) p.sock.destroy()
  s.sock.destroy()
})

h.scenario('the agent and the relay stop on SIGTERM without sanitizer reports', async () => {
  for (const x of [relayA, relayB]) if (x) assert.ok(!(await h.stopProcess(x.proc)).forced, 'a forwarding relay had to be killed')
  const a = await h.stopProcess(agent.proc)
  const rl = await h.stopProcess(relay.proc)
  assert.ok(!a.forced, `expected the agent to exit within 3 s of SIGTERM (${show(a)})`)
  assert.ok(!rl.forced, `expected the relay to exit within 3 s of SIGTERM (${show(rl)})`)
  const reports = h.sanitizerReports()
  assert.deepEqual(reports, [], `expected no sanitizer reports, got:\n${reports.map((r) => `${r.name}: ${r.line}`).join('\n')}`)
})
