#!/usr/bin/env node
// What the bandwidth accounting costs Redis: the relay's commands per second with N tunnels of
// U users carrying traffic, against the same relay idle. One relay on loopback, a real agent per
// tunnel, a raw echo server behind them, a player per tunnel writing 1 KiB every 100 ms.
//
//   DVV_BUILD=build node bench/usage-cost.mjs [--tunnels N] [--users U] [--flush-ms MS] [--seconds S]
//
// Counts come from Redis's INFO commandstats (every command Redis ran, scripts' inner commands
// included) and its per-command `calls` for EVALSHA/EVAL (round trips the relay sent), over a
// window of S seconds with traffic and one of S seconds without (same tunnels, players gone).
// Prints one Markdown table.

import net from 'node:net'
import { execFileSync } from 'node:child_process'
import * as h from '../tests/e2e/harness.mjs'
import { handshakeBytes } from '../tests/e2e/mc-client.mjs'

const opts = { tunnels: 20, users: 20, flushMs: 5000, seconds: 20 }
const argv = process.argv.slice(2)
for (let i = 0; i < argv.length; i += 2) {
  const k = { '--tunnels': 'tunnels', '--users': 'users', '--flush-ms': 'flushMs', '--seconds': 'seconds' }[argv[i]]
  if (!k || i + 1 >= argv.length) { process.stderr.write('usage: node bench/usage-cost.mjs [--tunnels N] [--users U] [--flush-ms MS] [--seconds S]\n'); process.exit(2) }
  opts[k] = Number(argv[i + 1])
}

let redis
const cmdstats = () => {
  const out = new Map()
  const text = execFileSync('redis-cli', ['-p', String(redis.port), 'INFO', 'commandstats'], { encoding: 'utf8' })
  for (const m of text.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) out.set(m[1], Number(m[2]))
  return out
}
const diff = (a, b) => {
  const d = new Map()
  for (const [k, v] of b) if (k !== 'info' && v - (a.get(k) || 0)) d.set(k, v - (a.get(k) || 0))
  return d
}
const total = (d) => [...d.values()].reduce((s, v) => s + v, 0)
const fmt = (d, secs) => [...d.entries()].sort((x, y) => y[1] - x[1]).map(([k, v]) => `${k} ${(v / secs).toFixed(2)}`).join(', ')

async function main () {
  h.requireBinaries()
  const keys = await h.makeKeys()
  redis = await h.startRedis()
  const relay = await h.startRelay({ redisPort: redis.port, keys, extraArgs: ['--usage-flush-ms', String(opts.flushMs)] })
  const echo = net.createServer((c) => { c.on('error', () => {}); c.pipe(c) })
  await new Promise((resolve) => echo.listen(0, '127.0.0.1', resolve))
  const agents = []
  for (let i = 0; i < opts.tunnels; i++) {
    const token = await h.mintToken({ keys, sub: `bench-u${i % opts.users}`, tid: `bench-t${i}`, ttl: 3600 })
    agents.push(await h.startAgent({ relayAgentPort: relay.agentPort, token, ca: keys.ca, localPort: echo.address().port }))
  }
  // one player per tunnel, 1 KiB every 100 ms each way (the echo sends it back)
  const players = []
  for (const a of agents) {
    const s = net.connect(relay.playerPort, '127.0.0.1')
    s.on('error', () => {})
    s.on('data', () => {})
    await new Promise((resolve) => s.once('connect', resolve))
    s.write(handshakeBytes({ hostname: a.hostname }))
    players.push(s)
  }
  const buf = Buffer.alloc(1024, 1)
  const timer = setInterval(() => { for (const s of players) s.write(buf) }, 100)
  await h.sleep(opts.flushMs + 1000) // every tunnel has flushed once
  const busy0 = cmdstats()
  const f0 = await relay.metric('dvv_relay_usage_flushes_total')
  await h.sleep(opts.seconds * 1000)
  const busy = diff(busy0, cmdstats())
  const f1 = await relay.metric('dvv_relay_usage_flushes_total')
  clearInterval(timer)
  for (const s of players) s.destroy()
  await h.sleep(opts.flushMs + 1000) // the last bytes flushed
  const idle0 = cmdstats()
  await h.sleep(opts.seconds * 1000)
  const idle = diff(idle0, cmdstats())
  const S = opts.seconds
  const flushes = (f1 - f0) / (S * 1000 / opts.flushMs)
  const scripts = (d) => (d.get('evalsha') || 0) + (d.get('eval') || 0)
  process.stdout.write([
    `| ${opts.tunnels} tunnels of ${opts.users} users, --usage-flush-ms ${opts.flushMs}, ${S} s windows | commands/s executed | scripts (EVAL/EVALSHA)/s | what |`,
    '|---|---|---|---|',
    `| players moving bytes on every tunnel | ${(total(busy) / S).toFixed(2)} | ${(scripts(busy) / S).toFixed(2)} | ${fmt(busy, S)} |`,
    `| same tunnels, no players | ${(total(idle) / S).toFixed(2)} | ${(scripts(idle) / S).toFixed(2)} | ${fmt(idle, S)} |`,
    `| difference (the usage flush) | ${((total(busy) - total(idle)) / S).toFixed(2)} | ${((scripts(busy) - scripts(idle)) / S).toFixed(2)} | per-user usage EVALs per flush interval (relay metric dvv_relay_usage_flushes_total): ${flushes.toFixed(2)} |`,
    ''
  ].join('\n') + '\n')
  echo.close()
  await h.cleanup()
}

main().catch(async (e) => { process.stderr.write(`usage-cost: ${e.stack || e}\n`); await h.cleanup(); process.exit(1) })
