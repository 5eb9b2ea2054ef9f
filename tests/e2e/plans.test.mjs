// Plan enforcement at the relay (docs/operators.md "Plans at the relay"): the test writes the
// user keys and control events into a real Redis exactly as dvv-api does (docs/redis.md), and
// checks what a real relay, agent and Minecraft client/server see. Runs on both data planes
// (scripts/test.sh e2e sets DVV_DATAPLANE).
//
//   node --test --test-concurrency=1 tests/e2e/plans.test.mjs

import { before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import * as h from './harness.mjs'
import { join, ping } from './mc-client.mjs'

let keys, redis, relay, mc

function rcli (...args) {
  return execFileSync('redis-cli', ['-p', String(redis.port), ...args.map(String)], { encoding: 'utf8' }).trim()
}

let version = 0
// The plan hash as the API writes it: replaced whole in MULTI, version increasing.
function writePlan (sub, fields) {
  const key = `dvv:user:{${sub}}:plan`
  const flat = Object.entries({ tier: 'free', max_tunnels: 1, custom_names: 0, idle_timeout_s: 0, bandwidth_bytes: 0, max_players: 0, priority: 0, status: 'active', version: ++version, ...fields }).flat()
  execFileSync('redis-cli', ['-p', String(redis.port)], { input: `MULTI\nDEL ${key}\nHSET ${key} ${flat.join(' ')}\nEXEC\n`, encoding: 'utf8' })
}
const event = (...fv) => rcli('XADD', 'dvv:{ctl}:events', 'MAXLEN', '~', '100000', '*', ...fv)

async function agentFor (sub, tid, extra = {}) {
  const token = await h.mintToken({ keys, sub, tid, ttl: 3600, ...extra })
  const agent = await h.startAgent({ relayAgentPort: relay.agentPort, token, ca: keys.ca, localPort: mc.port })
  return agent
}

async function waitFor (pred, { timeoutMs = 5000, what = 'the condition' } = {}) {
  const t0 = Date.now()
  while (Date.now() - t0 < timeoutMs) {
    if (await pred()) return Date.now() - t0
    await h.sleep(25)
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
}

const agentSaid = (agent, re) => agent.proc.lines.some((l) => re.test(l)) || re.test(h.tailOf(agent.proc, 400))

before(h.withLogs('setup', async () => {
  h.requireBinaries()
  keys = await h.makeKeys()
  redis = await h.startRedis()
  relay = await h.startRelay({ redisPort: redis.port, keys, extraArgs: ['--name-grace-s', '60'] })
  mc = await h.startMcServer({ motd: 'DVV plans test' })
}), { timeout: 90000 })

after(h.cleanup)

h.scenario('a revoked token: the tunnel closes within 1 s with GOODBYE revoked, and reconnecting is refused', async () => {
  writePlan('u-rev', { tier: 'free' })
  const agent = await agentFor('u-rev', 't-rev', { jti: 'k-rev1' })
  const ok = await join({ relayPort: relay.playerPort, hostname: agent.hostname, username: 'rev1' })
  assert.ok(ok.ok, `expected a join before the revocation, got ${ok.error}`)
  rcli('ZADD', 'dvv:user:{u-rev}:revoked', Math.floor(Date.now() / 1000) + 3600, 'k-rev1')
  const t0 = Date.now()
  event('type', 'revoke', 'sub', 'u-rev', 'jti', 'k-rev1', 'tid', 't-rev')
  await waitFor(() => agentSaid(agent, /revoked/), { timeoutMs: 3000, what: 'the agent to print the revocation' })
  const ms = Date.now() - t0
  assert.ok(ms < 1000, `expected the revocation to reach the agent within 1 s, took ${ms} ms`)
  const lat = await relay.metric('dvv_relay_revoke_to_goodbye_last_ms')
  assert.ok(lat !== null && lat < 1000, `expected dvv_relay_revoke_to_goodbye_last_ms < 1000, got ${lat}`)
  // its reconnect (same token) is refused with ERROR revoked
  await waitFor(() => agentSaid(agent, /token was revoked: create a new one/), { timeoutMs: 5000, what: 'the ERROR revoked on reconnect' })
  const closed = await relay.metric('dvv_relay_plan_closed_total')
  assert.ok(closed >= 1, `expected dvv_relay_plan_closed_total >= 1, got ${closed}`)
})

h.scenario('a blocked tunnel is refused at registration with ERROR blocked', async () => {
  writePlan('u-blk', { tier: 'free' })
  rcli('SADD', 'dvv:user:{u-blk}:blocked', 't-blk')
  const token = await h.mintToken({ keys, sub: 'u-blk', tid: 't-blk', ttl: 3600 })
  const agent = await h.startAgent({ relayAgentPort: relay.agentPort, token, ca: keys.ca, localPort: mc.port, json: true, upTimeoutMs: 100 }).catch((e) => e)
  assert.ok(agent instanceof Error, 'expected no tunnel_up for a blocked tunnel')
  await h.sleep(1500)
  assert.match(h.logTails(400), /deleted or is suspended/, 'expected the agent to print why the tunnel is blocked')
})

h.scenario('max_players kicks the login over the limit; a plan event (upgrade) lifts it; status still answers', async () => {
  writePlan('u-max', { tier: 'free', max_players: 1 })
  const agent = await agentFor('u-max', 't-max')
  const first = await (await import('./mc-client.mjs')).stayingPlayer({ relayPort: relay.playerPort, hostname: agent.hostname, username: 'max1' })
  await h.sleep(300)
  const second = await join({ relayPort: relay.playerPort, hostname: agent.hostname, username: 'max2' })
  assert.equal(second.ok, false)
  assert.equal(second.kicked, 'This server is full on its DVV plan (1 players).')
  const st = await ping({ relayPort: relay.playerPort, hostname: agent.hostname })
  assert.ok(st.ok && /DVV plans test/.test(st.motd), `expected the server's own status while full, got ${JSON.stringify(st)}`)
  writePlan('u-max', { tier: 'paid', max_players: 5, priority: 1, custom_names: 1 })
  event('type', 'plan', 'sub', 'u-max')
  await h.sleep(800)
  const third = await join({ relayPort: relay.playerPort, hostname: agent.hostname, username: 'max3' })
  assert.ok(third.ok, `expected the upgrade to lift max_players, got ${third.error}`)
  first.end()
  const refused = await relay.metric('dvv_relay_joins_refused_total')
  assert.ok(refused >= 1)
})

h.scenario('idle timeout: GOODBYE idle, then players get the idle kick and MOTD', async () => {
  writePlan('u-idle', { tier: 'free', idle_timeout_s: 3 })
  const agent = await agentFor('u-idle', 't-idle')
  // an agent that reconnects after the GOODBYE would clear the mark with its new registration:
  // blocking the tid (read at registration only) keeps this one from coming back
  rcli('SADD', 'dvv:user:{u-idle}:blocked', 't-idle')
  await waitFor(() => agentSaid(agent, /no players for 3 s: the free plan closes idle tunnels/), { timeoutMs: 8000, what: 'the idle GOODBYE' })
  await waitFor(async () => rcli('GET', `dvv:{${agent.hostname}}:down`) === 'idle' && rcli('EXISTS', `dvv:{${agent.hostname}}:route`) === '0', { what: 'the name to be marked down idle' })
  const kick = await join({ relayPort: relay.playerPort, hostname: agent.hostname, username: 'idle1' })
  assert.equal(kick.kicked, "This server's tunnel was closed after being idle. Ask its owner to restart it.")
  const st = await ping({ relayPort: relay.playerPort, hostname: agent.hostname })
  assert.ok(st.ok && /Closed after being idle - the owner can restart it/.test(st.motd), `expected the idle MOTD, got ${JSON.stringify(st)}`)
})

h.scenario('bandwidth cap (capped event): players cut, logins kicked with the reset date, MOTD, PLAN capped; an upgrade lifts it', async () => {
  writePlan('u-cap', { tier: 'free', bandwidth_bytes: 10737418240 })
  const agent = await agentFor('u-cap', 't-cap')
  const mcc = await import('./mc-client.mjs')
  const p = await mcc.stayingPlayer({ relayPort: relay.playerPort, hostname: agent.hostname, username: 'cap1' })
  assert.ok(await p.chat('before'), 'expected chat before the cap')
  // another relay saw the user cross the cap (what the usage flush publishes)
  rcli('HSET', 'dvv:user:{u-cap}:usage', 'bytes', '10737418241')
  event('type', 'capped', 'sub', 'u-cap')
  await waitFor(() => p.ended, { timeoutMs: 2000, what: 'the player to be cut' })
  const now = new Date()
  const reset = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1)).toISOString().slice(0, 10)
  const kick = await join({ relayPort: relay.playerPort, hostname: agent.hostname, username: 'cap2' })
  assert.equal(kick.kicked, `This server has used its DVV bandwidth for this period (10.0 GiB on the free plan). It resets on ${reset}.`)
  const st = await ping({ relayPort: relay.playerPort, hostname: agent.hostname })
  assert.ok(st.ok && st.motd.includes(`Bandwidth limit reached - resets ${reset}`), `expected the capped MOTD, got ${JSON.stringify(st)}`)
  writePlan('u-cap', { tier: 'paid', bandwidth_bytes: 536870912000, priority: 1 })
  event('type', 'plan', 'sub', 'u-cap')
  await h.sleep(800)
  const ok = await join({ relayPort: relay.playerPort, hostname: agent.hostname, username: 'cap3' })
  assert.ok(ok.ok, `expected the upgrade to lift the cap, got ${ok.error}`)
})
