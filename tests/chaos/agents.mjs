// Many agents at once, for reconnect storms: each holds a real TLS control channel to a relay,
// authenticates with its own ES256 token (signed here with the deployment's JWT key, the same
// claims dvv-token writes), answers PINGs, and reconnects with full-jitter backoff when its
// channel ends, exactly as the dvv agent does. They open no data connections: a storm is about
// control channels, TLS handshakes and registrations.

import crypto from 'node:crypto'
import fs from 'node:fs'
import net from 'node:net'
import tls from 'node:tls'

const b64url = (b) => Buffer.from(b).toString('base64url')

/** An ES256 JWT like dvv-token's (iss dvv, aud dvv-relay). */
export function signToken (keyPem, { sub, tid, ttl = 3600, plan = 'free' }) {
  const now = Math.floor(Date.now() / 1000)
  const head = b64url(JSON.stringify({ alg: 'ES256', typ: 'JWT' }))
  const body = b64url(JSON.stringify({ iss: 'dvv', aud: 'dvv-relay', sub, tid, plan, iat: now, exp: now + ttl }))
  const sig = crypto.sign('sha256', Buffer.from(`${head}.${body}`), { key: keyPem, dsaEncoding: 'ieee-p1363' })
  return `${head}.${body}.${b64url(sig)}`
}

function frame (type, obj) {
  const payload = Buffer.from(JSON.stringify(obj))
  const h = Buffer.alloc(4)
  h[0] = 1
  h[1] = type
  h.writeUInt16BE(payload.length, 2)
  return Buffer.concat([h, payload])
}

const T = { HELLO: 1, WELCOME: 2, ERROR: 3, ATTACH: 4, PING: 5, PONG: 6, MOVE: 7, GOODBYE: 8 }

class SimAgent {
  constructor (fleet, i, token) {
    this.fleet = fleet
    this.i = i
    this.token = token
    this.up = false
    this.attempt = 0
    this.sessions = 0
    this.errors = {}
    this.target = null
  }

  connect () {
    if (this.fleet.stopped) return
    const { host, port } = this.target || this.fleet.relay
    this.target = null
    // the relay's certificate is checked against the CA; an IP address is not a TLS server name
    const s = tls.connect({ host, port, ca: this.fleet.ca, servername: net.isIP(this.fleet.servername) ? undefined : this.fleet.servername, checkServerIdentity: () => undefined })
    this.sock = s
    let buf = Buffer.alloc(0)
    const timer = setTimeout(() => s.destroy(new Error('handshake timeout')), 15000)
    s.on('secureConnect', () => s.write(frame(T.HELLO, { proto: 1, token: this.token, agent: 'chaos-sim', placed: this.placed || false })))
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d])
      while (buf.length >= 4) {
        const len = buf.readUInt16BE(2)
        if (buf.length < 4 + len) break
        const type = buf[1]
        let msg = {}
        try { msg = JSON.parse(buf.subarray(4, 4 + len).toString('utf8')) } catch {}
        buf = buf.subarray(4 + len)
        if (type === T.WELCOME) {
          clearTimeout(timer)
          this.up = true
          this.placed = false
          this.sessions++
          this.upAt = Date.now()
          this.fleet.onUp(this)
        } else if (type === T.PING) {
          s.write(frame(T.PONG, { t: msg.t }))
        } else if (type === T.ERROR) {
          this.errors[msg.code] = (this.errors[msg.code] || 0) + 1
          this.retryAfter = msg.retry_after_ms || 0
        } else if (type === T.MOVE) {
          const [h, p] = msg.addr.split(':')
          this.target = { host: h, port: Number(p) }
          this.placed = true
        }
      }
    })
    const ended = () => {
      clearTimeout(timer)
      if (this.sock !== s) return
      this.sock = null
      if (this.up) { this.up = false; this.fleet.onDown(this) }
      if (this.fleet.stopped) return
      let delay
      if (this.target) delay = 0
      else if (this.retryAfter) delay = this.retryAfter + Math.random() * this.retryAfter / 4
      else delay = Math.random() * Math.min(30000, 500 * 2 ** this.attempt)
      this.retryAfter = 0
      if (!this.target) this.attempt++
      setTimeout(() => this.connect(), delay).unref()
    }
    s.on('error', () => {})
    s.on('close', ended)
  }
}

export class Fleet {
  constructor ({ relay, ca, servername, jwtKeyFile, n, prefix = 'storm' }) {
    this.relay = relay // {host, port}
    this.ca = fs.readFileSync(ca)
    this.servername = servername
    const key = fs.readFileSync(jwtKeyFile)
    this.agents = []
    for (let i = 0; i < n; i++) {
      this.agents.push(new SimAgent(this, i, signToken(key, { sub: `${prefix}-user-${i}`, tid: `${prefix}-${i}` })))
    }
    this.nup = 0
    this.stopped = false
  }

  onUp () { this.nup++ }
  onDown () { this.nup-- }

  start () {
    for (const a of this.agents) a.connect()
  }

  /** Resolve when every agent has a session (true) or timeoutMs passes (false). */
  async allUp (timeoutMs) {
    const end = Date.now() + timeoutMs
    while (Date.now() < end) {
      if (this.nup === this.agents.length) return true
      await new Promise((resolve) => setTimeout(resolve, 200))
    }
    return false
  }

  errorCounts () {
    const out = {}
    for (const a of this.agents) for (const [k, v] of Object.entries(a.errors)) out[k] = (out[k] || 0) + v
    return out
  }

  stop () {
    this.stopped = true
    for (const a of this.agents) { try { a.sock && a.sock.destroy() } catch {} }
  }
}
