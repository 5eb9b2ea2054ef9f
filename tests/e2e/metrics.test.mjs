// docs/metrics.md against a running relay: every metric family the relay exposes is documented
// with its type, every documented family is exposed (those of the bpf plane when the relay runs
// it), and every label value is one the document lists (bounded cardinality: no tunnel, user or
// player in a label). The relay carries a real player first, through forwarding between two
// relays, so that the counters the test reads have moved.
//
//   node --test --test-concurrency=1 tests/e2e/metrics.test.mjs

import { before, after } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import * as h from './harness.mjs'
import { join } from './mc-client.mjs'
import { documentedMetrics, parseExposition, compare } from './metricsdoc.mjs'

let keys, redis, mc, relayA, relayB, agent
const SECRET = crypto.randomBytes(24).toString('hex')

const forwardingRelay = (id) => h.startForwardingRelay({
  redisPort: redis.port, keys, instanceId: `${id}-${process.pid}`, secret: SECRET
})

before(h.withLogs('setup', async () => {
  h.requireBinaries()
  keys = await h.makeKeys()
  redis = await h.startRedis()
  mc = await h.startMcServer()
  relayA = await forwardingRelay('e2e-metrics-a')
  relayB = await forwardingRelay('e2e-metrics-b')
  const token = await h.mintToken({ keys, sub: 'user-metrics', tid: 'tunnel-metrics', plan: 'free', ttl: 3600 })
  agent = await h.startAgent({ relayAgentPort: relayB.agentPort, token, ca: keys.ca, localPort: mc.port })
}), { timeout: 90000 })

after(h.cleanup)

h.scenario('a player forwarded from relay A to relay B moves the documented counters', async () => {
  const r = await join({ relayPort: relayA.playerPort, hostname: agent.hostname, username: 'metrics1' })
  assert.ok(r.ok, `join through A failed: ${JSON.stringify(r)}`)
  assert.ok(await relayA.metric('dvv_relay_players_forwarded_total') >= 1)
  const expo = parseExposition(await relayA.metrics())
  const fwd = expo.samples.find((s) => s.name === 'dvv_relay_player_outcomes_total' && s.labels.outcome === 'forwarded')
  assert.ok(fwd && fwd.value >= 1, 'player_outcomes_total{outcome="forwarded"} did not count the forward')
  const redisOk = expo.samples.find((s) => s.name === 'dvv_relay_redis_commands_total' && s.labels.result === 'ok')
  assert.ok(redisOk && redisOk.value > 0, 'no Redis command counted')
  const inf = expo.samples.find((s) => s.name === 'dvv_relay_redis_command_duration_seconds_bucket' && s.labels.le === '+Inf')
  const count = expo.samples.find((s) => s.name === 'dvv_relay_redis_command_duration_seconds_count')
  assert.equal(inf.value, count.value, 'the +Inf bucket is the count')
  assert.ok(await relayB.metric('dvv_relay_players_adopted_total') >= 1)
})

h.scenario('every metric the relay exposes is in docs/metrics.md and the reverse, with bounded labels', async () => {
  const doc = documentedMetrics()
  for (const relay of [relayA, relayB]) {
    const expo = parseExposition(await relay.metrics())
    const info = expo.samples.find((s) => s.name === 'dvv_relay_info')
    assert.ok(info, 'dvv_relay_info missing')
    const plane = info.labels.dataplane
    const problems = compare(doc, expo, {
      prefix: 'dvv_relay_',
      // xdp families need the XDP guard on an interface: not attached here (it would touch
      // every loopback test on the machine); they are checked against the source below
      expect: (d) => d.exposed === 'always' || d.exposed === plane
    })
    assert.deepEqual(problems, [], `relay on the ${plane} plane:\n${problems.join('\n')}`)
  }
})

h.scenario('the XDP families of docs/metrics.md are the ones the relay renders (source check: no XDP on loopback)', async () => {
  const doc = documentedMetrics()
  const src = fs.readFileSync(path.join(h.REPO_ROOT, 'userspace', 'admin.c'), 'utf8')
  const rendered = new Set([...src.matchAll(/(?:family|sample)\(b, "(xdp_[a-z_]+)"/g)].map((m) => `dvv_relay_${m[1]}`))
  const documented = new Set(Object.keys(doc).filter((n) => doc[n].exposed === 'xdp'))
  assert.ok(rendered.size >= 3, `expected the XDP families in userspace/admin.c, found ${[...rendered]}`)
  assert.deepEqual([...documented].sort(), [...rendered].sort())
  // and the verdict names the document lists are the ones admin.c prints
  const names = /static const char \*const names\[\] = \{([^}]*)\}/.exec(src)[1].match(/"([a-z_]+)"/g).map((s) => s.slice(1, -1))
  assert.deepEqual([...doc.dvv_relay_xdp_packets_total.labels.verdict].sort(), names.sort())
})

h.scenario('the relays stop cleanly', async () => {
  for (const p of [agent.proc, relayA.proc, relayB.proc]) {
    assert.ok(!(await h.stopProcess(p)).forced, `${p.name} had to be killed`)
  }
  assert.deepEqual(h.sanitizerReports(), [])
})
