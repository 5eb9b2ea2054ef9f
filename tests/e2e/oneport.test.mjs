// One-port mode (--one-port): players and agents share one listening socket, as behind a
// platform's TCP proxy that gives a service a single public port (Railway). A real agent
// registers and keeps its data connections on that port, a real Minecraft client joins, chats
// and pings through it, and bytes that are neither are closed and counted.
//
//   node --test --test-concurrency=1 tests/e2e/oneport.test.mjs

import { before, after } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import * as h from './harness.mjs'
import { join, ping, legacyPing, handshakeBytes } from './mc-client.mjs'

const HANDSHAKE_TIMEOUT_MS = 1500
const MOTD = 'DVV one-port world'

let keys, redis, relay, mc, agent, onePort

before(h.withLogs('setup', async () => {
  h.requireBinaries()
  keys = await h.makeKeys()
  redis = await h.startRedis()
  onePort = await h.freePort()
  relay = await h.startRelay({
    redisPort: redis.port,
    keys,
    extraArgs: ['--one-port', `127.0.0.1:${onePort}`, '--handshake-timeout-ms', String(HANDSHAKE_TIMEOUT_MS)]
  })
  mc = await h.startMcServer({ motd: MOTD })
  const token = await h.mintToken({ keys, sub: 'user-oneport', tid: 'tunnel-oneport', ttl: 3600 })
  agent = await h.startAgent({ relayAgentPort: onePort, token, ca: keys.ca, localPort: mc.port })
}), { timeout: 90000 })

after(h.cleanup)

// connect, write bytes, wait until the relay closes the socket or timeoutMs passes
function probe (bytes, { timeoutMs = 6000 } = {}) {
  return new Promise((resolve) => {
    const sock = net.connect(onePort, '127.0.0.1')
    let received = 0
    const timer = setTimeout(() => { sock.destroy(); resolve({ closed: false, received }) }, timeoutMs)
    sock.on('connect', () => { if (bytes.length) sock.write(bytes) })
    sock.on('data', (d) => { received += d.length })
    sock.on('error', () => {})
    sock.on('close', () => { clearTimeout(timer); resolve({ closed: true, received }) })
  })
}

function refused (port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1')
    s.on('connect', () => { s.destroy(); resolve(false) })
    s.on('error', (e) => resolve(e.code === 'ECONNREFUSED'))
  })
}

h.scenario('the relay listens on the one port only', async () => {
  assert.equal(await refused(relay.playerPort), true, 'the --player-listen port must not be open in one-port mode')
  assert.equal(await refused(relay.agentPort), true, 'the --agent-listen port must not be open in one-port mode')
  // the agent's control channel (TLS) and its data connections (DVVA) both came in on it
  let agents = 0
  for (let i = 0; i < 50 && agents < 2; i++) {
    agents = await relay.metric('dvv_relay_oneport_agents_total')
    if (agents < 2) await h.sleep(100)
  }
  assert.ok(agents >= 2,
    'expected the control channel and at least one pooled data connection through the one port')
})

h.scenario('a real client joins and chats through the one port', async () => {
  const before = await relay.metric('dvv_relay_oneport_players_total')
  const r = await join({ relayPort: onePort, hostname: agent.hostname, username: 'oneport1', chat: 'hello one port', timeoutMs: 15000 })
  assert.equal(r.ok, true, `join failed: ${JSON.stringify(r)}`)
  assert.equal(r.echoed, 'echo: hello one port', `chat echo: ${JSON.stringify(r)}`)
  assert.ok(await relay.metric('dvv_relay_oneport_players_total') > before)
})

h.scenario('status and legacy pings through the one port reach the server', async () => {
  const p = await ping({ relayPort: onePort, hostname: agent.hostname })
  assert.equal(p.ok, true, `ping failed: ${JSON.stringify(p)}`)
  assert.equal(p.motd, MOTD, 'expected the tunnelled server\'s MOTD')
  const lp = await legacyPing({ port: onePort, hostname: agent.hostname, timeoutMs: 5000 })
  assert.equal(lp.ok, true, `legacy ping failed: ${JSON.stringify(lp)}`)
  assert.equal(lp.motd, MOTD, 'expected the tunnelled server\'s MOTD through a legacy ping')
})

h.scenario('bad first bytes are closed and counted, and players still join', async () => {
  const refusedBefore = await relay.metric('dvv_relay_oneport_refused_total')
  const shapes = {
    http: Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'),
    ssh: Buffer.from('SSH-2.0-OpenSSH_9.2\r\n'),
    'frame with packet id 0x01': Buffer.from([0x14, 0x01, 0x00, 0x00]),
    'frame longer than a handshake may be': Buffer.from([0x81, 0x04, 0x00]),
    'attach magic misspelt': Buffer.from('DVVB0123456789abcdef')
  }
  for (const [name, bytes] of Object.entries(shapes)) {
    const r = await probe(bytes)
    assert.equal(r.closed, true, `${name}: still open`)
    assert.equal(r.received, 0, `${name}: the relay answered ${r.received} bytes`)
  }
  assert.equal(await relay.metric('dvv_relay_oneport_refused_total') - refusedBefore, Object.keys(shapes).length)
  const r = await join({ relayPort: onePort, hostname: agent.hostname, username: 'oneport2', timeoutMs: 15000 })
  assert.equal(r.ok, true, `join after garbage failed: ${JSON.stringify(r)}`)
})

h.scenario('a client that sends nothing, or too little to decide, is closed at the handshake deadline', async () => {
  const before = await relay.metric('dvv_relay_oneport_timeout_total')
  const [silent, partial] = await Promise.all([
    probe(Buffer.alloc(0), { timeoutMs: HANDSHAKE_TIMEOUT_MS + 5000 }),
    probe(Buffer.from('DVV'), { timeoutMs: HANDSHAKE_TIMEOUT_MS + 5000 })
  ])
  assert.equal(silent.closed, true, 'a silent connection stayed open past the deadline')
  assert.equal(partial.closed, true, 'an undecided prefix stayed open past the deadline')
  assert.equal(await relay.metric('dvv_relay_oneport_timeout_total') - before, 2)
  assert.equal(await relay.metric('dvv_relay_oneport_pending'), 0)
})

h.scenario('a player handshake split over several writes is still told apart', async () => {
  // the first byte alone (a VarInt length) decides nothing: the sniffer must wait, not refuse
  const hs = handshakeBytes({ hostname: agent.hostname })
  const sock = net.connect(onePort, '127.0.0.1')
  await new Promise((resolve, reject) => { sock.on('connect', resolve); sock.on('error', reject) })
  sock.write(hs.subarray(0, 1))
  await h.sleep(200)
  const before = await relay.metric('dvv_relay_oneport_players_total')
  sock.write(hs.subarray(1))
  let got = 0
  for (let i = 0; i < 50 && got === 0; i++) {
    await h.sleep(100)
    got = (await relay.metric('dvv_relay_oneport_players_total')) - before
  }
  sock.destroy()
  assert.equal(got, 1, 'the split handshake was not handed to the player path')
})

h.scenario('the relay stops on SIGTERM with an undecided connection open, and logged no sanitizer reports', async () => {
  const sock = net.connect(onePort, '127.0.0.1') // undecided: freed by the shut-down, not leaked
  sock.on('error', () => {})
  await new Promise((resolve) => sock.on('connect', resolve))
  sock.write(Buffer.from([0x14]))
  await h.sleep(200)
  assert.equal(await relay.metric('dvv_relay_oneport_pending'), 1)
  await h.stopProcess(agent.proc)
  const rl = await h.stopProcess(relay.proc)
  sock.destroy()
  assert.ok(!rl.forced, `expected the relay to exit within 3 s of SIGTERM; it had to be killed (${JSON.stringify(rl)})`)
  const reports = h.sanitizerReports()
  assert.deepEqual(reports, [], `expected no sanitizer reports, got:\n${reports.map((x) => `${x.name}: ${x.line}`).join('\n')}`)
})
