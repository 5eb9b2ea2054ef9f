// Byte-exactness through the whole path: player -> relay (data plane under test) -> agent ->
// local server, and back. The "server" is a plain TCP server written here, so every byte can be
// checked: SHA-256 of what one side wrote against what the other side read, for bulk transfers,
// half-closes with data in flight and resets from either side. Runs on whichever plane
// DVV_DATAPLANE names (scripts/test.sh runs the suite once per plane).
//
//   DVV_DATAPLANE=bpf node --test --test-concurrency=1 tests/e2e/bytes.test.mjs     (root)
//   DVV_E2E_BULK_MIB=1024 (default) sets the size of the bulk transfer each way

import { before, after } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import net from 'node:net'
import * as h from './harness.mjs'
import { handshakeBytes } from './mc-client.mjs'

const BULK = Number(process.env.DVV_E2E_BULK_MIB || 1024) * 1024 * 1024
const MIB = 1024 * 1024

let keys, redis, relay, agent, server
let onConn = null // what the test server does with the next connection

// A 4 MiB pool of random bytes; a stream is a walk over it at a stride that does not divide it,
// so no two chunks repeat at the same stream offset and a lost, duplicated or reordered chunk
// changes the hash.
const POOL = crypto.randomBytes(4 * MIB)
function * chunks (total, seed = 1) {
  let off = (seed * 7919) % POOL.length
  let left = total
  while (left > 0) {
    const n = Math.min(left, 256 * 1024, POOL.length - off)
    yield POOL.subarray(off, off + n)
    left -= n
    off = (off + n + 4099) % POOL.length
  }
}

/** A login-intent Minecraft handshake for `host`: the relay routes on it and forwards it as is. */
const handshake = (host) => handshakeBytes({ hostname: host })

/** Writes a stream with backpressure; resolves with its SHA-256 once everything is queued. */
async function writeAll (sock, total, seed) {
  const hash = crypto.createHash('sha256')
  for (const c of chunks(total, seed)) {
    hash.update(c)
    if (!sock.write(c)) {
      await new Promise((resolve, reject) => {
        const done = () => { sock.off('drain', done); sock.off('close', fail); resolve() }
        const fail = () => { sock.off('drain', done); reject(new Error('socket closed while writing')) }
        sock.once('drain', done)
        sock.once('close', fail)
      })
    }
  }
  return hash.digest('hex')
}

/** Reads until end/close; resolves {bytes, sha, ended (FIN seen), error}. skip: bytes to drop first. */
function readAll (sock, { skip = 0 } = {}) {
  return new Promise((resolve) => {
    const hash = crypto.createHash('sha256')
    let bytes = 0
    let ended = false
    let error = null
    sock.on('data', (d) => {
      if (skip) {
        const k = Math.min(skip, d.length)
        skip -= k
        d = d.subarray(k)
      }
      bytes += d.length
      hash.update(d)
    })
    sock.on('end', () => { ended = true })
    sock.on('error', (e) => { error = e.code || e.message })
    sock.on('close', () => resolve({ bytes, sha: hash.digest('hex'), ended, error }))
  })
}

/** Dials the relay as a player of the tunnel and sends the handshake. */
function dial () {
  return new Promise((resolve, reject) => {
    // half-open allowed on both ends: a FIN in one direction must not close the other
    const s = net.connect({ port: relay.playerPort, host: '127.0.0.1', allowHalfOpen: true }, () => {
      s.write(handshake(agent.hostname))
      resolve(s)
    })
    s.once('error', reject)
  })
}

/** The server side of the next connection, with the forwarded handshake already read off. */
function nextServerConn (timeoutMs = 10000) {
  const hs = handshake(agent.hostname).length
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => { onConn = null; reject(new Error(`the local server saw no connection within ${timeoutMs} ms`)) }, timeoutMs)
    onConn = (c) => {
      // the handshake arrives first and whole; what follows is the test's stream
      let got = Buffer.alloc(0)
      const take = (d) => {
        got = Buffer.concat([got, d])
        // the agent also pings the server's status (handshake next state 1, the frame's last
        // byte): that is not the player
        if (got.length > got[0] && got[got[0]] === 1) { c.off('data', take); c.destroy(); return }
        if (got.length < hs) return
        clearTimeout(t)
        onConn = null
        c.off('data', take)
        c.pause()
        const rest = got.subarray(hs)
        if (rest.length) c.unshift(rest)
        resolve(c)
      }
      c.on('data', take)
    }
  })
}

before(h.withLogs('setup', async () => {
  h.requireBinaries()
  keys = await h.makeKeys()
  redis = await h.startRedis()
  relay = await h.startRelay({ redisPort: redis.port, keys })
  server = net.createServer({ allowHalfOpen: true }, (c) => {
    c.on('error', () => {}) // resets are part of the tests; each test checks what it expects
    if (onConn) onConn(c); else c.destroy()
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const token = await h.mintToken({ keys, sub: 'user-bytes', tid: 'tunnel-bytes', ttl: 3600 })
  agent = await h.startAgent({ relayAgentPort: relay.agentPort, token, ca: keys.ca, localPort: server.address().port })
}), { timeout: 90000 })

after(async () => {
  server?.close()
  await h.cleanup()
})

h.scenario(`${BULK / MIB} MiB each way arrive byte-exact through relay and agent`, { timeout: 300000 }, async () => {
  const srvP = nextServerConn()
  const p = await dial()
  const s = await srvP
  s.resume()
  // both directions at once: the server sends its own stream while it reads the player's
  const t0 = Date.now()
  const [pRead, sRead, pSha, sSha] = await Promise.all([
    readAll(p), readAll(s),
    writeAll(p, BULK, 1).then((sha) => { p.end(); return sha }),
    writeAll(s, BULK, 2).then((sha) => { s.end(); return sha })
  ])
  const secs = (Date.now() - t0) / 1000
  process.stderr.write(`[bytes] ${2 * BULK / MIB} MiB in ${secs.toFixed(1)} s (${(2 * BULK * 8 / secs / 1e9).toFixed(2)} Gbit/s both ways together) on ${process.env.DVV_DATAPLANE || 'the default'} plane\n`)
  assert.equal(sRead.bytes, BULK, `the server read ${sRead.bytes} of the player's ${BULK} bytes`)
  assert.equal(sRead.sha, pSha, 'the server read different bytes than the player sent')
  assert.equal(pRead.bytes, BULK, `the player read ${pRead.bytes} of the server's ${BULK} bytes`)
  assert.equal(pRead.sha, sSha, 'the player read different bytes than the server sent')
  assert.ok(pRead.ended && sRead.ended, `expected both FINs to arrive (player saw ${pRead.ended}, server saw ${sRead.ended})`)
})

h.scenario('the player half-closes with data in flight: the server reads every byte, then its reply arrives whole', async () => {
  const srvP = nextServerConn()
  const p = await dial()
  const s = await srvP
  const pReadP = readAll(p)
  // the server reads to the player's FIN, then answers with its own stream and closes
  const sDone = new Promise((resolve) => {
    const hash = crypto.createHash('sha256')
    let bytes = 0
    s.on('data', (d) => { bytes += d.length; hash.update(d) })
    s.on('end', async () => {
      const sha = await writeAll(s, 8 * MIB, 3)
      s.end()
      resolve({ bytes, sha: hash.digest('hex'), replySha: sha })
    })
    s.resume()
  })
  const pSha = await writeAll(p, 32 * MIB, 4)
  p.end()
  const got = await sDone
  const pRead = await pReadP
  assert.equal(got.bytes, 32 * MIB, `the server read ${got.bytes} bytes before the player's FIN, expected ${32 * MIB}`)
  assert.equal(got.sha, pSha, 'the tail of the player\'s stream was lost or changed')
  assert.equal(pRead.bytes, 8 * MIB, `the half-closed player read ${pRead.bytes} bytes of the reply, expected ${8 * MIB}`)
  assert.equal(pRead.sha, got.replySha, 'the reply after the half-close was changed')
  assert.ok(pRead.ended, 'expected the server\'s FIN to reach the player')
})

h.scenario('the server closes first with data in flight: the player still reads every byte', async () => {
  const srvP = nextServerConn()
  const p = await dial()
  const s = await srvP
  s.resume()
  const pReadP = readAll(p)
  const sSha = await writeAll(s, 32 * MIB, 5)
  s.end() // FIN right behind 32 MiB that are still on their way
  const pRead = await new Promise((resolve) => {
    pReadP.then(resolve)
    p.on('end', () => p.end())
  })
  assert.equal(pRead.bytes, 32 * MIB, `the player read ${pRead.bytes} bytes, expected ${32 * MIB}: the tail was lost`)
  assert.equal(pRead.sha, sSha, 'the server\'s stream arrived changed')
  assert.ok(pRead.ended, 'expected the server\'s FIN to reach the player')
})

// Resolves with how the socket ended within ms: 'reset' (ECONNRESET), 'eof', 'closed' (before we
// looked) or 'open'. The socket must have read everything sent to it first: libuv reports a reset
// that arrives together with unread data as a plain EOF (POLLHUP after a partial read), which
// would make a correct reset look like a FIN.
async function endingWithin (sock, ms) {
  if (sock.destroyed) return 'closed'
  return new Promise((resolve) => {
    let how = 'open'
    const t = setTimeout(() => resolve(how), ms)
    sock.on('error', (e) => { how = e.code === 'ECONNRESET' ? 'reset' : e.code })
    sock.on('end', () => { how = 'eof' })
    sock.on('close', () => { clearTimeout(t); resolve(how === 'open' ? 'closed' : how) })
    sock.resume()
  })
}

// Reads from sock until n bytes arrived (bounded by ms).
function readN (sock, n, ms = 10000) {
  return new Promise((resolve, reject) => {
    let got = 0
    const t = setTimeout(() => reject(new Error(`read ${got} of ${n} bytes in ${ms} ms`)), ms)
    const on = (d) => {
      got += d.length
      if (got >= n) { clearTimeout(t); sock.off('data', on); resolve(got) }
    }
    sock.on('data', on)
    sock.resume()
  })
}

h.scenario('a reset from the player tears the server side down', async () => {
  const srvP = nextServerConn()
  const p = await dial()
  const s = await srvP
  p.write(Buffer.alloc(64 * 1024, 1))
  await readN(s, 64 * 1024) // everything through first: the reset then follows the data
  p.resetAndDestroy()
  const how = await endingWithin(s, 5000)
  assert.equal(how, 'reset', `after the player's reset the server connection ended with ${how}, expected a reset`)
})

h.scenario('a reset from the server tears the player side down', async () => {
  const srvP = nextServerConn()
  const p = await dial()
  const s = await srvP
  s.write(Buffer.alloc(64 * 1024, 2))
  await readN(p, 64 * 1024)
  s.resetAndDestroy()
  const how = await endingWithin(p, 5000)
  assert.equal(how, 'reset', `after the server's reset the player connection ended with ${how}, expected a reset`)
})

h.scenario('the relay keeps no pair and no leaked fd once the connections are gone', async () => {
  const t0 = Date.now()
  let active = null
  while (Date.now() - t0 < 10000) {
    active = await relay.metric('dvv_relay_splices_active')
    if (active === 0) break
    await h.sleep(200)
  }
  assert.equal(active, 0, `expected no live pair in the relay, /metrics says ${active}`)
  if (process.env.DVV_DATAPLANE === 'bpf') {
    const pairs = await relay.metric('dvv_relay_bpf_pairs_active')
    assert.equal(pairs, 0, `expected the bpf plane to hold no pair, it says ${pairs}`)
  }
})

h.scenario('the relay and the agent logged no sanitizer reports', async () => {
  await h.stopProcess(agent.proc)
  await h.stopProcess(relay.proc)
  const reports = h.sanitizerReports()
  assert.deepEqual(reports, [], `sanitizer reports: ${JSON.stringify(reports)}`)
})
