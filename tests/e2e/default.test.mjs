// --default-tunnel: players who dial no tunnel name (localhost, an IP, the base domain) reach the
// relay's default tunnel, on the relay that holds it and on another relay of the cluster (which
// forwards them); a name under the base domain that nobody holds still gets the offline answer
// and never the default.
//
//   node --test --test-concurrency=1 tests/e2e/default.test.mjs

import { before, after } from 'node:test'
import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import * as h from './harness.mjs'
import { join, ping } from './mc-client.mjs'

const MOTD = `Default tunnel world ${crypto.randomBytes(3).toString('hex')}`
const LABEL = `home-${crypto.randomBytes(3).toString('hex')}`
const SECRET = crypto.randomBytes(24).toString('hex')

let keys, redis, relayA, relayB, mc, agent, hostname
const show = (r) => JSON.stringify(r && { ...r, raw: undefined })

async function clusterRelay (id) {
  return h.startRelay({
    redisPort: redis.port,
    keys,
    instanceId: id,
    env: { DVV_CLUSTER_SECRET: SECRET },
    extraArgs: ['--internal-listen', `127.0.0.1:${await h.freePort()}`, '--default-tunnel', LABEL]
  })
}

before(h.withLogs('setup', async () => {
  h.requireBinaries()
  keys = await h.makeKeys()
  redis = await h.startRedis()
  relayA = await clusterRelay('e2e-default-a')
  relayB = await clusterRelay('e2e-default-b')
  mc = await h.startMcServer({ motd: MOTD })
  // a custom label (honoured for paid tokens) so the relays can be told its name in advance
  const token = await h.mintToken({ keys, sub: 'user-default', tid: 'tunnel-default', plan: 'paid', ttl: 3600, name: LABEL })
  agent = await h.startAgent({ relayAgentPort: relayA.agentPort, token, ca: keys.ca, localPort: mc.port })
  hostname = agent.hostname
}), { timeout: 90000 })

after(async () => {
  await h.cleanup()
})

h.scenario('the agent holds the default tunnel\'s name', async () => {
  assert.equal(hostname, `${LABEL}.eu.dvv.test`, `expected the custom label under the relay's suffix, got ${hostname}`)
})

for (const dialed of ['localhost', '127.0.0.1']) {
  h.scenario(`a status ping and a login with hostname "${dialed}" reach the default tunnel on the relay that holds it`, async () => {
    const s = await ping({ relayPort: relayA.playerPort, hostname: dialed, timeoutMs: 10000 })
    assert.equal(s.ok, true, `expected the server's status, got ${show(s)}`)
    assert.equal(s.motd, MOTD, `expected the default tunnel's MOTD, got ${JSON.stringify(s.motd)}`)
    const r = await join({ relayPort: relayA.playerPort, hostname: dialed, username: 'local1', chat: 'hello default', timeoutMs: 15000 })
    assert.equal(r.ok, true, `expected to join through the default tunnel, got ${show(r)}`)
    assert.equal(r.echoed, 'echo: hello default', `expected the chat echoed by the server, got ${show(r)}`)
  })

  h.scenario(`on another relay of the cluster, "${dialed}" is forwarded to the default tunnel`, async () => {
    const before = await relayB.metric('dvv_relay_players_forwarded_total')
    const s = await ping({ relayPort: relayB.playerPort, hostname: dialed, timeoutMs: 10000 })
    assert.equal(s.ok, true, `expected the server's status through relay B, got ${show(s)}`)
    assert.equal(s.motd, MOTD, `expected the default tunnel's MOTD through B, got ${JSON.stringify(s.motd)}`)
    const r = await join({ relayPort: relayB.playerPort, hostname: dialed, username: 'remote1', chat: 'via b', timeoutMs: 15000 })
    assert.equal(r.ok, true, `expected to join through relay B, got ${show(r)}`)
    assert.equal(r.echoed, 'echo: via b')
    const after = await relayB.metric('dvv_relay_players_forwarded_total')
    assert.ok(after >= (before || 0) + 2, `expected relay B to forward both players, forwarded ${before} -> ${after}`)
  })
}

h.scenario('the bare base domain and <region>.<base-domain> reach the default too', async () => {
  for (const dialed of ['dvv.test', 'eu.dvv.test']) {
    const s = await ping({ relayPort: relayA.playerPort, hostname: dialed, timeoutMs: 10000 })
    assert.equal(s.motd, MOTD, `expected the default tunnel's MOTD for ${dialed}, got ${show(s)}`)
  }
})

h.scenario('an unknown name under the base domain keeps the offline answer and never reaches the default', async () => {
  const name = `nobody-${crypto.randomBytes(4).toString('hex')}.eu.dvv.test`
  for (const relay of [relayA, relayB]) {
    const r = await join({ relayPort: relay.playerPort, hostname: name, username: 'lost', timeoutMs: 8000 })
    assert.equal(r.ok, false, `expected ${name} to be refused, got ${show(r)}`)
    assert.match(r.kicked || '', /no server is online at nobody-/i, `expected the offline kick naming ${name}, got ${show(r)}`)
    const s = await ping({ relayPort: relay.playerPort, hostname: name, timeoutMs: 8000 })
    assert.notEqual(s.motd, MOTD, `the unknown name reached the default tunnel: ${show(s)}`)
    assert.match(s.motd || '', /No server is online at nobody-/, `expected the offline status, got ${show(s)}`)
  }
})
