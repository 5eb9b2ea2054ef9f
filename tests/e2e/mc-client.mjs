#!/usr/bin/env node
// A Minecraft client for tests: dials one address (the relay) but puts another hostname in the
// handshake, the way a player's client does after DNS resolves the tunnel name.
//
//   node tests/e2e/mc-client.mjs join|ping|legacy --relay 127.0.0.1:25565 --hostname NAME
//        [--username U] [--chat hello] [--count N] [--version 1.21.1] [--timeout-ms 10000]
//
// One JSON line per result on stdout. Exit code 0 when every result is ok.
//
// Importable: join(), ping(), legacyPing(), textOf().

import net from 'node:net'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import process from 'node:process'

const require = createRequire(import.meta.url)
const mc = require('minecraft-protocol')
const { guardSplitter } = await import('./mc-server.mjs')

export const DEFAULT_VERSION = '1.21.1'

// Plain text of a chat component: a JSON string, a parsed component, an NBT-simplified object or
// a bare string.
export function textOf (component) {
  if (component === null || component === undefined) return ''
  if (typeof component === 'string') {
    const s = component
    if (s.startsWith('{') || s.startsWith('[') || s.startsWith('"')) {
      try { return textOf(JSON.parse(s)) } catch {}
    }
    return s
  }
  if (Array.isArray(component)) return component.map(textOf).join('')
  if (typeof component === 'object') {
    // prismarine-nbt shaped value: {type, value}
    if ('type' in component && 'value' in component && Object.keys(component).length === 2) {
      try { return textOf(require('prismarine-nbt').simplify(component)) } catch {}
    }
    let out = ''
    if (typeof component.text === 'string' || typeof component.text === 'number') out += String(component.text)
    else if (component[''] !== undefined) out += textOf(component[''])
    if (component.translate) {
      out += component.translate
      if (Array.isArray(component.with)) out += ' ' + component.with.map(textOf).join(' ')
    }
    if (Array.isArray(component.extra)) out += component.extra.map(textOf).join('')
    return out
  }
  return String(component)
}

// An offline-mode client that dials through `connect` but names `hostname` in its handshake.
function offlineClient ({ hostname, port, username, version, connect }) {
  return mc.createClient({
    host: hostname,
    port,
    username,
    version,
    auth: 'offline',
    validateChannelProtocol: false,
    hideErrors: true,
    keepAlive: true,
    connect
  })
}

function connectVia (relayHost, relayPort, onSocket, localAddress) {
  return (client) => {
    guardSplitter(client)
    const sock = localAddress ? net.connect({ port: relayPort, host: relayHost, localAddress }) : net.connect(relayPort, relayHost)
    if (onSocket) onSocket(sock)
    client.setSocket(sock)
  }
}

/**
 * Log in through relayHost:relayPort with `hostname` in the handshake, wait for play state, and
 * optionally chat and wait for the echo.
 * Resolves {ok:true, ms, echoed, localPort} or {ok:false, error, kicked?, ms, localPort}.
 * Never rejects. The client is always ended.
 */
export function join ({
  relayHost = '127.0.0.1',
  relayPort,
  hostname,
  username = 'tester',
  version = DEFAULT_VERSION,
  timeoutMs = 10000,
  chat = null,
  port = 25565, // the port written in the handshake
  onSocket = null,
  holdMs = 0, // stay in play state this long before leaving
  localAddress = null // dial from this local address (a test host with many addresses)
} = {}) {
  const t0 = Date.now()
  return new Promise((resolve) => {
    let done = false
    let client = null
    let localPort = null
    let inPlay = false
    let echoed = null
    const finish = (res) => {
      if (done) return
      done = true
      clearTimeout(timer)
      res.ms = Date.now() - t0
      res.localPort = localPort
      if (!res.ok && inPlay && res.reachedPlay === undefined) res.reachedPlay = true
      try { client && client.end('bye') } catch {}
      // Don't wait for a graceful close: the relay side may never finish it.
      setTimeout(() => { try { client && client.socket && client.socket.destroy() } catch {} }, 200).unref()
      resolve(res)
    }
    const timer = setTimeout(() => {
      finish({ ok: false, error: inPlay ? `timed out after ${timeoutMs} ms waiting for the chat echo` : `timed out after ${timeoutMs} ms before reaching play state (state ${client ? client.state : 'none'})` })
    }, timeoutMs)

    try {
      client = offlineClient({
        hostname,
        port,
        username,
        version,
        connect: connectVia(relayHost, relayPort, (sock) => {
          sock.once('connect', () => { localPort = sock.localPort })
          if (onSocket) onSocket(sock)
        }, localAddress)
      })
    } catch (e) {
      finish({ ok: false, error: `createClient: ${e.message}` })
      return
    }

    const kicked = (packet) => {
      const reason = textOf(packet.reason)
      finish({ ok: false, error: `kicked: ${reason}`, kicked: reason, reasonRaw: typeof packet.reason === 'string' ? packet.reason : JSON.stringify(packet.reason) })
    }
    client.on('disconnect', kicked) // login / configuration state
    client.on('kick_disconnect', kicked) // play state
    client.on('error', (err) => finish({ ok: false, error: err && (err.code ? `${err.code}: ${err.message}` : err.message) }))
    // A disconnect packet can still be in the parser pipeline when the socket ends: give it a moment.
    client.on('end', (reason) => setTimeout(() => finish({ ok: false, error: `connection closed before ${inPlay ? 'the chat echo' : 'play state'} (${reason || 'socket closed'})` }), 50))

    client.on('systemChat', ({ formattedMessage }) => {
      const text = textOf(formattedMessage)
      if (chat !== null && text === 'echo: ' + chat) {
        echoed = text
        setTimeout(() => finish({ ok: true, echoed }), holdMs)
      }
    })

    client.once('login', () => {
      inPlay = true
      if (chat !== null) {
        try {
          client.chat(String(chat))
        } catch (e) {
          finish({ ok: false, error: `chat: ${e.message}` })
        }
      } else {
        setTimeout(() => finish({ ok: true, echoed: null }), holdMs)
      }
    })
  })
}

/**
 * A player that logs in through relayHost:relayPort and stays in play state until end(): chat(msg)
 * resolves true once the server echoed msg (false after waitMs or if the connection ended).
 * Rejects if play state is not reached within timeoutMs.
 */
export async function stayingPlayer ({ relayHost = '127.0.0.1', relayPort, hostname, username, version = DEFAULT_VERSION, timeoutMs = 15000 }) {
  const client = offlineClient({ hostname, port: 25565, username, version, connect: connectVia(relayHost, relayPort) })
  const echoes = []
  let ended = null
  client.on('systemChat', ({ formattedMessage }) => echoes.push(textOf(formattedMessage)))
  client.on('end', (r) => { ended = r || 'closed' })
  client.on('error', (e) => { ended = e.message })
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${username} did not reach play state in ${timeoutMs} ms (ended: ${ended})`)), timeoutMs)
    client.once('login', () => { clearTimeout(t); resolve() })
    client.once('end', () => { clearTimeout(t); reject(new Error(`${username} disconnected before play state: ${ended}`)) })
  })
  return {
    client,
    get ended () { return ended },
    async chat (msg, waitMs = 5000) {
      if (ended) return false
      client.chat(msg)
      const t0 = Date.now()
      while (Date.now() - t0 < waitMs) {
        if (echoes.includes('echo: ' + msg)) return true
        if (ended) return false
        await new Promise((resolve) => setTimeout(resolve, 20))
      }
      return false
    },
    end () { try { client.end('bye') } catch {} ; setTimeout(() => { try { client.socket.destroy() } catch {} }, 200).unref() }
  }
}

/**
 * Modern (1.7+) status ping through the relay. Resolves {ok:true, motd, version, protocol, players,
 * latency, ms, raw} or {ok:false, error, ms}. Never rejects.
 */
export async function ping ({
  relayHost = '127.0.0.1',
  relayPort,
  hostname,
  version = DEFAULT_VERSION,
  timeoutMs = 5000,
  port = 25565
} = {}) {
  const t0 = Date.now()
  let timer
  let sock = null
  try {
    const p = mc.ping({
      host: hostname,
      port,
      version,
      closeTimeout: timeoutMs,
      noPongTimeout: Math.min(timeoutMs, 5000),
      connect: (client) => {
        guardSplitter(client)
        sock = net.connect(relayPort, relayHost)
        client.setSocket(sock)
      }
    })
    const data = await Promise.race([
      p,
      new Promise((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs) })
    ])
    return {
      ok: true,
      motd: textOf(data.description),
      version: data.version && data.version.name,
      protocol: data.version && data.version.protocol,
      players: data.players,
      latency: data.latency,
      ms: Date.now() - t0,
      raw: data
    }
  } catch (e) {
    return { ok: false, error: e && (e.code ? `${e.code}: ${e.message}` : e.message), ms: Date.now() - t0 }
  } finally {
    clearTimeout(timer)
    if (sock) setTimeout(() => sock.destroy(), 100).unref()
  }
}

export function varint (n) {
  const out = []
  let v = n >>> 0
  do {
    let b = v & 0x7f
    v >>>= 7
    if (v) b |= 0x80
    out.push(b)
  } while (v)
  return Buffer.from(out)
}

/** A complete Java-edition handshake frame (length-prefixed), as a client sends it first. */
export function handshakeBytes ({ hostname, port = 25565, protocol = 767, nextState = 2 } = {}) {
  const host = Buffer.from(hostname, 'utf8')
  const portBuf = Buffer.alloc(2)
  portBuf.writeUInt16BE(port)
  const body = Buffer.concat([varint(0x00), varint(protocol), varint(host.length), host, portBuf, varint(nextState)])
  return Buffer.concat([varint(body.length), body])
}

function utf16be (s) {
  const le = Buffer.from(s, 'utf16le')
  for (let i = 0; i + 1 < le.length; i += 2) { const t = le[i]; le[i] = le[i + 1]; le[i + 1] = t }
  return le
}

function fromUtf16be (buf) {
  const le = Buffer.from(buf)
  for (let i = 0; i + 1 < le.length; i += 2) { const t = le[i]; le[i] = le[i + 1]; le[i + 1] = t }
  return le.toString('utf16le')
}

/** The bytes a 1.6 client sends: FE 01 FA + "MC|PingHost" plugin message carrying hostname/port. */
export function legacyPingBytes (hostname, port = 25565, protocol = 74) {
  const channel = utf16be('MC|PingHost')
  const host = utf16be(hostname)
  const rest = Buffer.alloc(1 + 2 + host.length + 4)
  rest.writeUInt8(protocol, 0)
  rest.writeUInt16BE(hostname.length, 1)
  host.copy(rest, 3)
  rest.writeInt32BE(port, 3 + host.length)
  const head = Buffer.alloc(3 + 2)
  head[0] = 0xfe; head[1] = 0x01; head[2] = 0xfa
  head.writeUInt16BE('MC|PingHost'.length, 3)
  const len = Buffer.alloc(2)
  len.writeUInt16BE(rest.length)
  return Buffer.concat([head, channel, len, rest])
}

/** Parse a 0xFF kick answer. Returns {ok, motd, protocol, version, online, max, text} or {ok:false,error}. */
export function parseLegacyAnswer (buf) {
  if (buf.length < 3) return { ok: false, error: `short answer (${buf.length} bytes)` }
  if (buf[0] !== 0xff) return { ok: false, error: `answer starts with 0x${buf[0].toString(16)}, expected 0xff` }
  const chars = buf.readUInt16BE(1)
  if (buf.length < 3 + chars * 2) return { ok: false, error: `answer announces ${chars} chars but has ${(buf.length - 3) / 2}` }
  const text = fromUtf16be(buf.subarray(3, 3 + chars * 2))
  if (text.startsWith('\u00a71\u0000')) {
    const [, protocol, version, motd, online, max] = text.split('\u0000')
    return { ok: true, protocol, version, motd, online, max, text }
  }
  // pre-1.4 form: motd§online§max
  const parts = text.split('\u00a7')
  return { ok: true, motd: parts[0], online: parts[1], max: parts[2], text }
}

/**
 * Legacy (1.6) server-list ping with raw bytes. Resolves {ok:true, motd, ...} or {ok:false, error}.
 * `host`/`port` is where to connect; `hostname` goes into MC|PingHost.
 */
export function legacyPing ({ host = '127.0.0.1', port, hostname = 'localhost', timeoutMs = 5000, bytes = null } = {}) {
  const t0 = Date.now()
  return new Promise((resolve) => {
    const chunks = []
    let done = false
    const sock = net.connect(port, host)
    const finish = (res) => {
      if (done) return
      done = true
      clearTimeout(timer)
      res.ms = Date.now() - t0
      sock.destroy()
      resolve(res)
    }
    const tryParse = (final) => {
      const buf = Buffer.concat(chunks)
      if (buf.length >= 3 && buf[0] === 0xff && buf.length >= 3 + buf.readUInt16BE(1) * 2) return finish(parseLegacyAnswer(buf))
      if (buf.length >= 1 && buf[0] !== 0xff) return finish({ ok: false, error: `answer starts with 0x${buf[0].toString(16)}, expected 0xff`, raw: buf.toString('hex').slice(0, 200) })
      if (final) finish(buf.length ? parseLegacyAnswer(buf) : { ok: false, error: 'connection closed without an answer' })
    }
    const timer = setTimeout(() => finish({ ok: false, error: `timed out after ${timeoutMs} ms (${Buffer.concat(chunks).length} bytes received)` }), timeoutMs)
    sock.on('connect', () => sock.write(bytes || legacyPingBytes(hostname, 25565)))
    sock.on('data', (d) => { chunks.push(d); tryParse(false) })
    sock.on('end', () => tryParse(true))
    sock.on('close', () => tryParse(true))
    sock.on('error', (e) => finish({ ok: false, error: `${e.code || ''} ${e.message}`.trim() }))
  })
}

function parseHostPort (s, def = 25565) {
  const m = /^\[?([^\]]+?)\]?(?::(\d+))?$/.exec(s)
  if (!m) throw new Error(`bad address: ${s}`)
  return { host: m[1], port: m[2] ? Number(m[2]) : def }
}

async function main () {
  const argv = process.argv.slice(2)
  const cmd = argv.shift()
  const o = { relay: '127.0.0.1:25565', hostname: 'localhost', username: null, chat: null, count: 1, version: DEFAULT_VERSION, timeoutMs: 10000 }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    const v = () => { if (i + 1 >= argv.length) throw new Error(`${a} needs a value`); return argv[++i] }
    switch (a) {
      case '--relay': o.relay = v(); break
      case '--hostname': o.hostname = v(); break
      case '--username': o.username = v(); break
      case '--chat': o.chat = v(); break
      case '--count': o.count = Number(v()); break
      case '--version': o.version = v(); break
      case '--timeout-ms': o.timeoutMs = Number(v()); break
      default: throw new Error(`unknown argument: ${a}`)
    }
  }
  const { host, port } = parseHostPort(o.relay)
  const out = (r) => process.stdout.write(JSON.stringify(r) + '\n')
  let allOk = true
  if (cmd === 'join') {
    const jobs = []
    for (let i = 0; i < o.count; i++) {
      const username = o.username ? (o.count > 1 ? `${o.username}${i}`.slice(0, 16) : o.username) : `player${i}`
      jobs.push(join({ relayHost: host, relayPort: port, hostname: o.hostname, username, version: o.version, timeoutMs: o.timeoutMs, chat: o.chat })
        .then((r) => { out({ cmd: 'join', username, ...r }); if (!r.ok) allOk = false }))
    }
    await Promise.all(jobs)
  } else if (cmd === 'ping') {
    const r = await ping({ relayHost: host, relayPort: port, hostname: o.hostname, version: o.version, timeoutMs: o.timeoutMs })
    delete r.raw
    out({ cmd: 'ping', ...r })
    allOk = r.ok
  } else if (cmd === 'legacy') {
    const r = await legacyPing({ host, port, hostname: o.hostname, timeoutMs: o.timeoutMs })
    out({ cmd: 'legacy', ...r })
    allOk = r.ok
  } else {
    process.stderr.write('usage: mc-client.mjs join|ping|legacy --relay HOST:PORT --hostname NAME [--username U] [--chat TEXT] [--count N] [--version V] [--timeout-ms MS]\n')
    process.exit(2)
  }
  process.exit(allOk ? 0 : 1)
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((e) => { process.stderr.write(`mc-client: ${e.message}\n`); process.exit(2) })
}
