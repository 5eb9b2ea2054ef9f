// Players behind one address (a carrier-grade NAT, a school, a LAN party): with the relay's
// production defaults (no limit lifted), 200 real Minecraft logins that start at the same moment
// from one source address all get into the game. The per-network join limit and the per-address
// cap on unfinished handshakes exist against floods; their defaults must leave room for this.
//
//   node --test --test-concurrency=1 tests/e2e/cgnat.test.mjs

import { before, after } from 'node:test'
import assert from 'node:assert/strict'
import * as h from './harness.mjs'
import { join } from './mc-client.mjs'

const PLAYERS = 200
let keys, redis, relay, mc, agent

before(h.withLogs('setup', async () => {
  h.requireBinaries()
  keys = await h.makeKeys()
  redis = await h.startRedis()
  // limits 'production': the relay's own defaults for every per-source limit
  relay = await h.startRelay({ redisPort: redis.port, keys, limits: 'production' })
  mc = await h.startMcServer({ motd: 'DVV CGNAT test', maxPlayers: PLAYERS + 10 })
  const token = await h.mintToken({ keys, sub: 'user-cgnat', tid: 'tunnel-cgnat', ttl: 3600 })
  agent = await h.startAgent({ relayAgentPort: relay.agentPort, token, ca: keys.ca, localPort: mc.port })
}), { timeout: 90000 })

after(h.cleanup)

h.scenario(`${PLAYERS} logins at once from one address all get in with the default limits`, { timeout: 120000 }, async () => {
  const results = await Promise.all(Array.from({ length: PLAYERS }, (_, i) =>
    join({ relayPort: relay.playerPort, hostname: agent.hostname, username: `cgnat${i}`, timeoutMs: 60000, holdMs: 500 })))
  const failed = results.filter((r) => !r.ok)
  assert.equal(failed.length, 0,
    `expected all ${PLAYERS} logins from 127.0.0.1 to get in, ${failed.length} did not; first: ${JSON.stringify(failed.slice(0, 3))}`)
  assert.equal(await relay.metric('dvv_relay_players_rate_limited_total'), 0, 'no join was rate limited')
  assert.equal(await relay.metric('dvv_relay_handshakes_shed_total'), 0, 'no handshake was shed')
})
