// The dev cluster (scripts/dev-cluster.sh) as the chaos suite drives it: three relays in network
// namespaces sharing Redis, and the faults done to them: signals to a relay, Redis stopped and
// started, firewall rules inside a relay's namespace (nftables) that cut it from Redis or from
// another relay, and a look at what each relay publishes in Redis and /metrics.

import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { execFile, execFileSync } from 'node:child_process'
import { promisify } from 'node:util'
import * as h from '../e2e/harness.mjs'

const exec = promisify(execFile)

export class DevCluster {
  constructor ({ id, redisMode = 'standalone', relays = 3, relayArgs = '' }) {
    Object.assign(this, { id, redisMode, nrelays: relays, relayArgs })
    this.script = path.join(h.REPO_ROOT, 'scripts', 'dev-cluster.sh')
    this.build = process.env.DVV_BUILD || 'build-san'
    this.isUp = false
    // Interrupted (Ctrl-C, a CI timeout): take the cluster down from the exit hook too.
    process.once('exit', () => {
      if (!this.isUp) return
      try { execFileSync(this.script, ['down', '--id', String(id)], { stdio: 'ignore', timeout: 30000 }) } catch {}
    })
  }

  async up () {
    this.isUp = true
    await exec(this.script, ['down', '--id', String(this.id)]).catch(() => {})
    const { stdout } = await exec(this.script, ['up', '--id', String(this.id), '--relays', String(this.nrelays), '--regions', 'eu',
      '--redis', this.redisMode, '--build', this.build], { env: { ...process.env, DVV_RELAY_ARGS: this.relayArgs }, timeout: 120000 })
    this.info = JSON.parse(stdout.trim().split('\n').pop())
    this.relays = this.info.relays
    this.keys = { jwtKey: path.join(this.info.keys, 'jwt.key'), ca: path.join(this.info.keys, 'ca.pem') }
    const first = this.info.redis.split(',')[0]
    this.redisHost = first.split(':')[0]
    this.redisPort = Number(first.split(':')[1])
    return this
  }

  async down () {
    for (const r of this.relays || []) await this.unblock(r).catch(() => {})
    await exec(this.script, ['down', '--id', String(this.id)]).catch(() => {})
    this.isUp = false
  }

  entry (r) { return { host: r.ip, port: 25565 } }
  byAgentAddr (addr) { return this.relays.find((r) => `${r.ip}:7000` === addr) }

  pid (r) {
    try { return Number(fs.readFileSync(r.pidfile, 'utf8').trim()) } catch { return 0 }
  }

  alive (r) {
    const pid = this.pid(r)
    if (!pid) return false
    try { process.kill(pid, 0); return true } catch { return false }
  }

  signal (r, sig) { process.kill(this.pid(r), sig) }

  /** Resolve with the relay's exit status once its process is gone ({code} or {signal}). */
  async waitExit (r, timeoutMs) {
    const pid = this.pid(r)
    const end = Date.now() + timeoutMs
    while (Date.now() < end) {
      try { process.kill(pid, 0) } catch { break }
      await h.sleep(100)
    }
    if (Date.now() >= end) return null
    // nsenter execs the relay (same pid) but it is not our child: its last log line says how
    // it ended ("exiting with status N")
    const m = /exiting with status (\d+)\s*$/.exec(this.log(r).trimEnd() + '\n')
    return { status: m ? Number(m[1]) : null }
  }

  log (r) { try { return fs.readFileSync(r.log, 'utf8') } catch { return '' } }

  /** Start a relay again (after a kill or a drain) and wait for /readyz. */
  async restart (r) {
    await exec(r.start)
    await this.waitReady(r, 30000)
  }

  /** Every relay running and ready (a scenario that failed midway may have left one down). */
  async ensureAllUp () {
    for (const r of this.relays) await this.unblock(r).catch(() => {})
    for (const r of this.relays) {
      // a relay left draining (its scenario failed before it exited) is not ready and may
      // take up to its drain deadline to go: wait for it to exit, then start it again
      const end = Date.now() + 60000
      while (Date.now() < end) {
        if (!this.alive(r)) { await this.restart(r); break }
        if (await this.readyz(r) === 200) break
        await h.sleep(200)
      }
      await this.waitReady(r, 30000)
    }
  }

  async waitReady (r, timeoutMs = 20000) {
    const end = Date.now() + timeoutMs
    while (Date.now() < end) {
      const res = await h.httpGet(9100, '/readyz', { host: r.ip, timeoutMs: 1000 }).catch(() => null)
      if (res && res.status === 200) return true
      await h.sleep(200)
    }
    throw new Error(`relay ${r.id} not ready within ${timeoutMs} ms\n${this.log(r).slice(-3000)}`)
  }

  async readyz (r) {
    const res = await h.httpGet(9100, '/readyz', { host: r.ip, timeoutMs: 1000 }).catch(() => null)
    return res ? res.status : 0
  }

  async metric (r, name) {
    const body = await new Promise((resolve) => {
      const s = net.connect(9100, r.ip, () => s.write('GET /metrics HTTP/1.0\r\n\r\n'))
      let buf = ''
      s.on('data', (d) => { buf += d })
      s.on('end', () => resolve(buf))
      s.on('error', () => resolve(''))
    })
    const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\d+)`, 'm').exec(body)
    return m ? Number(m[1]) : null
  }

  redisArgs () {
    return this.redisMode === 'cluster' ? ['-c', '-h', this.redisHost, '-p', String(this.redisPort)] : ['-h', this.redisHost, '-p', String(this.redisPort)]
  }

  async redis (...args) {
    const { stdout } = await exec('redis-cli', [...this.redisArgs(), ...args], { timeout: 10000 })
    return stdout.trim()
  }

  /** What the relay publishes about itself in Redis (empty fields when gone). */
  async published (r) {
    const region = r.region
    const [alive, info, load, agent] = await Promise.all([
      this.redis('EXISTS', `dvv:{${region}}:alive:${r.id}`),
      this.redis('EXISTS', `dvv:{${region}}:info:${r.id}`),
      this.redis('ZSCORE', `dvv:{${region}}:load`, r.id),
      this.redis('HGET', `dvv:{${region}}:agents`, r.id)
    ])
    return { alive: alive === '1', info: info === '1', load: load !== '', agent: agent !== '' }
  }

  // ---- standalone Redis stopped and started (an empty Redis comes back: no persistence) ----
  redisPid () { return Number(fs.readFileSync(path.join(this.info.state, 'redis.pid'), 'utf8').trim()) }
  async redisStop () {
    const pid = this.redisPid()
    process.kill(pid, 'SIGKILL')
    while (true) { try { process.kill(pid, 0) } catch { break } await h.sleep(50) }
  }

  async redisStart () {
    await exec(path.join(this.info.state, 'redis.start'))
    const end = Date.now() + 10000
    while (Date.now() < end) {
      if (await this.redis('PING').catch(() => '') === 'PONG') return
      await h.sleep(100)
    }
    throw new Error('redis did not come back')
  }

  // ---- firewall inside a relay's namespace: silently drop what it sends to an address ----
  async block (r, host, port) {
    const ns = r.netns
    await exec('ip', ['netns', 'exec', ns, 'nft', 'add', 'table', 'inet', 'dvvchaos'])
    await exec('ip', ['netns', 'exec', ns, 'nft', 'add chain inet dvvchaos out { type filter hook output priority 0 ; }'])
    await exec('ip', ['netns', 'exec', ns, 'nft', 'add chain inet dvvchaos in { type filter hook input priority 0 ; }'])
    await exec('ip', ['netns', 'exec', ns, 'nft', `add rule inet dvvchaos out ip daddr ${host} tcp dport ${port} drop`])
    await exec('ip', ['netns', 'exec', ns, 'nft', `add rule inet dvvchaos in ip saddr ${host} tcp sport ${port} drop`])
  }

  async unblock (r) {
    await exec('ip', ['netns', 'exec', r.netns, 'nft', 'delete', 'table', 'inet', 'dvvchaos'])
  }
}

/** The relay an agent's last tunnel_up event names. */
export function ownerOf (cl, agent) {
  const ups = agent.proc.events.filter((e) => e.event === 'tunnel_up')
  const last = ups[ups.length - 1]
  return last ? cl.byAgentAddr(last.relay) : null
}
