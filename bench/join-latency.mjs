// Join time through the tunnel vs a direct connection, measured in one run with a real
// Minecraft client and server (PrismarineJS). A "join" is TCP connect + handshake + login until
// the client is in play state. Status pings are measured the same way.
//
//   node bench/join-latency.mjs [--joins 40] [--build build]
//
// Prints a markdown table; ratios matter, absolute numbers depend on the machine.
import * as h from '../tests/e2e/harness.mjs'
import { join, ping } from '../tests/e2e/mc-client.mjs'

const args = process.argv.slice(2)
const opt = (name, def) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : def }
const N = Number(opt('--joins', 40))

function stats (xs) {
  const s = [...xs].sort((a, b) => a - b)
  const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))]
  return { n: s.length, min: s[0], p50: q(0.5), p90: q(0.9), max: s[s.length - 1] }
}

async function series (label, fn) {
  const out = []
  for (let i = 0; i < N; i++) {
    const t0 = process.hrtime.bigint()
    const r = await fn(i)
    const ms = Number(process.hrtime.bigint() - t0) / 1e6
    if (!r.ok) throw new Error(`${label} #${i} failed: ${JSON.stringify(r)}`)
    out.push(ms)
  }
  return stats(out)
}

async function main () {
  const keys = await h.makeKeys()
  const redis = await h.startRedis()
  const relay = await h.startRelay({ redisPort: redis.port, keys })
  const mc = await h.startMcServer({ motd: 'bench' })
  const token = await h.mintToken({ keys, sub: 'bench', tid: 'bench', ttl: 3600 })
  const agent = await h.startAgent({ relayAgentPort: relay.agentPort, token, ca: keys.ca, localPort: mc.port })
  // warm up both paths (JIT, TLS, pools)
  for (let i = 0; i < 5; i++) {
    await join({ relayPort: mc.port, hostname: 'localhost', username: `w${i}` })
    await join({ relayPort: relay.playerPort, hostname: agent.hostname, username: `v${i}` })
  }
  const rows = []
  // interleave so both see the same machine noise
  const direct = []; const tunnel = []; const pd = []; const pt = []
  for (let i = 0; i < N; i++) {
    for (const [arr, port, host, kind] of [[direct, mc.port, 'localhost', 'join'], [tunnel, relay.playerPort, agent.hostname, 'join'],
      [pd, mc.port, 'localhost', 'ping'], [pt, relay.playerPort, agent.hostname, 'ping']]) {
      const t0 = process.hrtime.bigint()
      const r = kind === 'join'
        ? await join({ relayPort: port, hostname: host, username: `b${i}` })
        : await ping({ relayPort: port, hostname: host })
      if (!r.ok) throw new Error(`${kind} via ${port} failed: ${JSON.stringify(r)}`)
      arr.push(Number(process.hrtime.bigint() - t0) / 1e6)
    }
  }
  const sd = stats(direct); const st = stats(tunnel); const spd = stats(pd); const spt = stats(pt)
  rows.push(['login to play state', sd, st], ['status ping', spd, spt])
  console.log(`\n| ${N} runs each, interleaved | direct p50 | tunnel p50 | ratio | direct p90 | tunnel p90 | added p50 |`)
  console.log('|---|---|---|---|---|---|---|')
  for (const [name, d, t] of rows) {
    console.log(`| ${name} | ${d.p50.toFixed(1)} ms | ${t.p50.toFixed(1)} ms | ${(t.p50 / d.p50).toFixed(2)}x | ${d.p90.toFixed(1)} ms | ${t.p90.toFixed(1)} ms | ${(t.p50 - d.p50).toFixed(1)} ms |`)
  }
  void series
  await h.cleanup()
}

main().catch(async (e) => { console.error(e); await h.cleanup(); process.exit(1) })
