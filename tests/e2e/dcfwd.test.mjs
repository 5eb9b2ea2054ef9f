// Two relays behind one round-robin TCP proxy, as on a platform whose TCP proxy sends each
// connection to any replica (Railway): the agent dials the proxy, so its control channel lands on
// one relay and about half of its data connections on the other, which forwards them to the
// relay that issued their attach token (the token's tag names it). Players dial a second proxy in
// front of both player ports. Every player joins and chats, and the counters of forwarded data
// connections moved: sent on the relay without the tunnel, received on the one with it.
//
//   node --test --test-concurrency=1 tests/e2e/dcfwd.test.mjs

import { before, after } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import net from 'node:net'
import * as h from './harness.mjs'
import { join } from './mc-client.mjs'

const PLAYERS = 20
let keys, redis, mc, relays, agent, agentProxy, playerProxy
const SECRET = crypto.randomBytes(24).toString('hex')

// no MOVE to the other relay: the agent stays behind the proxy, as on Railway
const forwardingRelay = (id) => h.startForwardingRelay({
  redisPort: redis.port, keys, instanceId: `${id}-${process.pid}`, secret: SECRET, extraArgs: ['--placement-margin', '1000000']
})

/** A TCP proxy on loopback that sends each new connection to the next of ports in turn. */
function roundRobinProxy (ports) {
  let next = 0
  const socks = new Set()
  const server = net.createServer((c) => {
    const u = net.connect(ports[next++ % ports.length], '127.0.0.1')
    for (const s of [c, u]) {
      socks.add(s)
      s.on('close', () => socks.delete(s))
      s.on('error', () => { c.destroy(); u.destroy() })
    }
    c.pipe(u)
    u.pipe(c)
  })
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({
    port: server.address().port,
    close: () => new Promise((resolve) => {
      for (const s of socks) s.destroy()
      server.close(() => resolve())
    })
  })))
}

/** The value of one labelled sample (0 when absent). */
async function sample (relay, name, labels) {
  const body = await relay.metrics()
  const line = body.split('\n').find((l) => l.startsWith(`${name}{${labels}} `))
  return line ? Number(line.split(' ')[1]) : 0
}

before(h.withLogs('setup', async () => {
  h.requireBinaries()
  keys = await h.makeKeys()
  redis = await h.startRedis()
  mc = await h.startMcServer({ maxPlayers: PLAYERS + 5 })
  relays = [await forwardingRelay('e2e-dcfwd-a'), await forwardingRelay('e2e-dcfwd-b')]
  // each relay learns the other's internal address from its heartbeat (every 2 s)
  await h.sleep(2500)
  agentProxy = await roundRobinProxy(relays.map((r) => r.agentPort))
  playerProxy = await roundRobinProxy(relays.map((r) => r.playerPort))
  const token = await h.mintToken({ keys, sub: 'user-dcfwd', tid: 'tunnel-dcfwd', plan: 'free', ttl: 3600 })
  agent = await h.startAgent({ relayAgentPort: agentProxy.port, token, ca: keys.ca, localPort: mc.port })
}), { timeout: 90000 })

after(async () => {
  if (agentProxy) await agentProxy.close()
  if (playerProxy) await playerProxy.close()
  await h.cleanup()
})

h.scenario(`an agent behind a round-robin proxy serves ${PLAYERS} players through both relays`, async () => {
  const active = await Promise.all(relays.map((r) => r.metric('dvv_relay_tunnels_active')))
  assert.deepEqual(active.slice().sort(), [0, 1], `one relay holds the tunnel: ${active}`)
  const owner = relays[active.indexOf(1)]
  const other = relays[active.indexOf(0)]
  const results = []
  // a few at a time: the pool refills between them, through the proxy, on both relays
  for (let i = 0; i < PLAYERS; i += 5) {
    const batch = []
    for (let k = i; k < i + 5 && k < PLAYERS; k++) {
      batch.push(join({ relayPort: playerProxy.port, hostname: agent.hostname, username: `dcfwd${k}`, chat: `hello ${k}`, timeoutMs: 15000 }))
    }
    results.push(...await Promise.all(batch))
  }
  const failed = results.filter((r) => !r.ok)
  assert.equal(failed.length, 0, `${failed.length} of ${PLAYERS} players failed: ${JSON.stringify(failed.slice(0, 3))}`)
  // half the players reached the relay without the tunnel and were forwarded as before
  assert.ok(await other.metric('dvv_relay_players_forwarded_total') >= 1, 'no player was forwarded')
  // and data connections landed on the relay without the tunnel and went to the owner
  const sent = await sample(other, 'dvv_relay_dataconns_forwarded_total', 'side="sent"')
  const received = await sample(owner, 'dvv_relay_dataconns_forwarded_total', 'side="received"')
  assert.ok(sent >= 1, `the relay without the tunnel forwarded no data connection (sent ${sent})`)
  assert.ok(received >= 1, `the owner received no forwarded data connection (received ${received})`)
  assert.equal(await sample(owner, 'dvv_relay_dataconns_forwarded_total', 'side="sent"'), 0,
    'the owner forwarded a data connection for its own token')
})
