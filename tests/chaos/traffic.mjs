// Player traffic for the chaos suite: real Minecraft clients (PrismarineJS) that keep joining and
// playing while a scenario breaks something, and the figures a scenario reports.
//
//  - `players` long-lived clients log in through the relays and chat every `chatEveryMs`; each
//    chat must come back as the server's echo. A client whose connection ends before stop() is
//    a dropped player; an echo that does not come back within 5 s is a lost echo.
//  - a join loop logs a fresh client in every `joinEveryMs` (round robin over the relays, as DNS
//    spreads players), chats once, and leaves. Each join ends ok, refused with a message (a
//    Login Disconnect: "reconnecting", "offline"), closed without a word, or timed out (a hang).
//
// Nothing here decides pass or fail: scenarios assert on the numbers.

import fs from 'node:fs'
import net from 'node:net'
import { createRequire } from 'node:module'
import { join, textOf, DEFAULT_VERSION } from '../e2e/mc-client.mjs'

// the npm test tooling lives in tests/e2e/node_modules
const require = createRequire(new URL('../e2e/package.json', import.meta.url))
const mc = require('minecraft-protocol')
const { guardSplitter } = await import('../e2e/mc-server.mjs')

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// every Traffic not yet stopped: a scenario that fails midway still ends its clients (stopAll)
const live = new Set()

/** A player that stays in play state and chats until stopped. */
class Player {
  constructor ({ entry, hostname, username, chatEveryMs }) {
    Object.assign(this, { entry, hostname, username, chatEveryMs })
    this.state = 'connecting' // connecting | playing | dropped | failed | stopped
    this.sent = 0
    this.echoed = 0
    this.lost = 0
    this.pending = new Map() // chat text -> sent at
    this.error = null
    this.droppedAt = null
  }

  start (timeoutMs = 20000) {
    return new Promise((resolve) => {
      const timer = setTimeout(() => { this.fail(`no play state within ${timeoutMs} ms`); resolve(false) }, timeoutMs)
      this.client = mc.createClient({
        host: this.hostname,
        port: 25565,
        username: this.username,
        version: DEFAULT_VERSION,
        auth: 'offline',
        validateChannelProtocol: false,
        hideErrors: true,
        keepAlive: true,
        connect: (client) => {
          guardSplitter(client)
          client.setSocket(net.connect(this.entry.port, this.entry.host))
        }
      })
      const ended = (why) => {
        clearTimeout(timer)
        if (this.state === 'playing') {
          this.state = 'dropped'
          this.droppedAt = Date.now()
          this.error = why
        } else if (this.state === 'connecting') {
          this.fail(why)
          resolve(false)
        }
        clearInterval(this.tick)
      }
      this.client.on('error', (e) => ended(`error: ${e.code || e.message}`))
      this.client.on('end', (r) => ended(`closed: ${r || 'socket closed'}`))
      this.client.on('disconnect', (p) => ended(`kicked: ${textOf(p.reason)}`))
      this.client.on('kick_disconnect', (p) => ended(`kicked: ${textOf(p.reason)}`))
      this.client.on('systemChat', ({ formattedMessage }) => {
        const text = textOf(formattedMessage)
        if (!text.startsWith('echo: ')) return
        if (this.pending.delete(text.slice(6))) this.echoed++
      })
      this.client.once('login', () => {
        clearTimeout(timer)
        this.state = 'playing'
        this.tick = setInterval(() => this.chat(), this.chatEveryMs)
        this.tick.unref()
        resolve(true)
      })
    })
  }

  chat () {
    if (this.state !== 'playing') return
    const now = Date.now()
    for (const [text, at] of this.pending) {
      if (now - at > 5000) { this.pending.delete(text); this.lost++ }
    }
    const text = `${this.username}-${++this.sent}`
    this.pending.set(text, now)
    try { this.client.chat(text) } catch (e) { this.lost++; this.pending.delete(text) }
  }

  fail (why) {
    this.state = 'failed'
    this.error = why
  }

  stop () {
    clearInterval(this.tick)
    if (this.state === 'playing') this.state = 'stopped'
    try { this.client.end('bye') } catch {}
    setTimeout(() => { try { this.client.socket.destroy() } catch {} }, 200).unref()
  }
}

function outcomeOf (res) {
  if (res.ok) return 'ok'
  if (res.kicked !== undefined) return 'refused'
  if (/timed out/.test(res.error || '')) return 'hang'
  return 'closed'
}

export class Traffic {
  /**
   * entries: [{host, port}] the relays' player addresses the joins rotate over; playerEntries
   * (default: entries): player i enters through playerEntries[i % n].
   */
  constructor ({ entries, playerEntries, hostname, players = 4, chatEveryMs = 1000, joinEveryMs = 500, joinTimeoutMs = 8000, prefix = 'p' }) {
    Object.assign(this, { entries, hostname, nplayers: players, chatEveryMs, joinEveryMs, joinTimeoutMs, prefix })
    this.playerEntries = playerEntries || entries
    this.players = []
    this.joins = [] // {t0, t1, outcome, error, entry}
    this.marks = [] // {name, t}
    this.running = false
  }

  async start () {
    live.add(this)
    this.t0 = Date.now()
    for (let i = 0; i < this.nplayers; i++) {
      const p = new Player({ entry: this.playerEntries[i % this.playerEntries.length], hostname: this.hostname, username: `${this.prefix}play${i}`, chatEveryMs: this.chatEveryMs })
      this.players.push(p)
    }
    const ok = await Promise.all(this.players.map((p) => p.start()))
    const bad = this.players.filter((_p, i) => !ok[i])
    if (bad.length) throw new Error(`players could not start: ${bad.map((p) => `${p.username} via ${p.entry.host}:${p.entry.port}: ${p.error}`).join('; ')}`)
    this.running = true
    this.loop = this.joinLoop()
  }

  async joinLoop () {
    let k = 0
    while (this.running) {
      const entry = this.entries[k % this.entries.length]
      const t0 = Date.now()
      const res = await join({ relayHost: entry.host, relayPort: entry.port, hostname: this.hostname, username: `${this.prefix}j${k}`.slice(0, 16), chat: 'hi', timeoutMs: this.joinTimeoutMs })
      this.joins.push({ t0, t1: Date.now(), outcome: outcomeOf(res), error: res.error || null, entry: `${entry.host}:${entry.port}` })
      k++
      const wait = this.joinEveryMs - (Date.now() - t0)
      if (wait > 0) await sleep(wait)
    }
  }

  /** Note the moment a fault begins (recovery is measured from the last mark). */
  mark (name) {
    this.marks.push({ name, t: Date.now() })
  }

  /** Players currently in play state. */
  playing () {
    return this.players.filter((p) => p.state === 'playing').length
  }

  /** Wait until `n` joins in a row succeeded after the last mark (or timeoutMs passes). */
  async recovered ({ n = 3, timeoutMs = 30000 } = {}) {
    const since = this.marks.length ? this.marks[this.marks.length - 1].t : this.t0
    const end = Date.now() + timeoutMs
    while (Date.now() < end) {
      const after = this.joins.filter((j) => j.t0 >= since)
      if (after.length >= n && after.slice(-n).every((j) => j.outcome === 'ok')) return true
      await sleep(200)
    }
    return false
  }

  async stop () {
    this.running = false
    live.delete(this)
    await this.loop
    for (const p of this.players) p.stop()
    return this.stats()
  }

  /** The figures: players dropped, echoes lost, joins by outcome, time to recover. */
  stats () {
    const since = this.marks.length ? this.marks[0].t : this.t0
    const after = this.joins.filter((j) => j.t0 >= since)
    const count = (o, js = this.joins) => js.filter((j) => j.outcome === o).length
    // time to recover: from the first mark to the start of the first successful join after the
    // last failed one (0 when nothing failed after the mark)
    let recoveryMs = 0
    const lastBad = after.map((j) => j.outcome !== 'ok').lastIndexOf(true)
    if (lastBad >= 0) {
      const nextOk = after.slice(lastBad + 1).find((j) => j.outcome === 'ok')
      recoveryMs = nextOk ? nextOk.t0 - since : null
    }
    const reasons = {}
    for (const j of after) {
      if (j.outcome === 'ok') continue
      const key = `${j.outcome}: ${(j.error || '').replace(/\d+/g, 'N').slice(0, 90)}`
      reasons[key] = (reasons[key] || 0) + 1
    }
    return {
      players: this.players.length,
      dropped: this.players.filter((p) => p.state === 'dropped').length,
      dropReasons: this.players.filter((p) => p.state === 'dropped').map((p) => `${p.username}: ${p.error}`),
      chats: this.players.reduce((a, p) => a + p.sent, 0),
      echoesLost: this.players.reduce((a, p) => a + p.lost, 0),
      joins: this.joins.length,
      joinsOk: count('ok'),
      joinsFailedAfterFault: after.length - count('ok', after),
      refused: count('refused', after),
      closed: count('closed', after),
      hangs: count('hang', after),
      recoveryMs,
      reasons
    }
  }
}

const TABLE_HEAD = ['scenario', 'players dropped', 'echoes lost', 'joins ok', 'joins failed after the fault', 'of which hung', 'recovery s', 'notes']

function tableRow (r) {
  const s = r.stats || {}
  const rec = s.recoveryMs === null || s.recoveryMs === undefined ? 'never' : (s.recoveryMs / 1000).toFixed(1)
  return `| ${r.name} | ${s.dropped ?? '-'}/${s.players ?? '-'} | ${s.echoesLost ?? '-'}/${s.chats ?? '-'} | ${s.joinsOk ?? '-'}/${s.joins ?? '-'} | ${s.joinsFailedAfterFault ?? '-'} | ${s.hangs ?? '-'} | ${rec} | ${r.notes || ''} |`
}

/** Stop every Traffic still running (a failed scenario's): call from after(). */
export async function stopAll () {
  await Promise.all([...live].map((t) => t.stop()))
}

/** The table the suite prints: one row per scenario. */
export function renderTable (rows) {
  return [`| ${TABLE_HEAD.join(' | ')} |`, `|${TABLE_HEAD.map(() => '---').join('|')}|`, ...rows.map(tableRow)].join('\n')
}

/** Append rows to the run's table file (each chaos test file adds its own; the header once). */
export function appendTable (file, rows) {
  if (!rows.length) return
  let head = ''
  if (!fs.existsSync(file)) head = renderTable([]) + '\n'
  fs.appendFileSync(file, head + rows.map(tableRow).join('\n') + '\n')
}
