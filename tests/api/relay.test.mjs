// The real relay accepts API-minted tokens: dvv-relay verifying with the API key's <kid>.pub,
// a real agent running with a token from POST /v1/tokens, the tunnel comes up, and a revoked
// token's jti is in Redis for the relay to refuse.

import assert from 'node:assert/strict'
import { after } from 'node:test'
import { requireBinaries, scenario, startAgent, startMcServer, startRedis, startRelay } from '../e2e/harness.mjs'
import { apiKeys, cleanupApi, startApi, until } from './api.mjs'

after(cleanupApi)

scenario('an API-minted token brings a real tunnel up through a real relay', async () => {
  requireBinaries(['dvv-relay', 'dvv', 'dvv-api'])
  const redis = await startRedis()
  const keys = await apiKeys()
  const relay = await startRelay({ redisPort: redis.port, keys: { ...keys, jwtPub: keys.kidPub } })
  const api = await startApi({ redisPort: redis.port, keys, extraArgs: ['--relays', `eu=127.0.0.1:${relay.agentPort}`] })
  const u = await api.signup()
  const cfg = (await api.request('GET', '/v1/agent-config')).json
  assert.equal(cfg.relays.eu, `127.0.0.1:${relay.agentPort}`)
  const tid = (await api.request('GET', '/v1/tunnels', { session: u.session })).json.tunnels[0].id
  const tok = (await api.request('POST', '/v1/tokens', { session: u.session, body: { tunnel_id: tid } })).json
  const mc = await startMcServer()
  const agent = await startAgent({ relayAgentPort: relay.agentPort, token: tok.token, ca: keys.ca, localPort: mc.port })
  assert.match(agent.hostname, /\.eu\.dvv\.test$/)
  // the relay recorded the tunnel's name under its tid: the API shows it
  const t = (await api.request('GET', '/v1/tunnels', { session: u.session })).json.tunnels[0]
  assert.equal(t.hostname, agent.hostname)
  // revoking the token in the API closes the running tunnel at the relay within about a second
  // (API commit -> outbox -> Redis revoked set + `revoke` event -> the relay's event poller)
  const before = (await relay.metric('dvv_relay_plan_closed_total')) || 0
  const t0 = Date.now()
  assert.equal((await api.request('DELETE', `/v1/tokens/${tok.id}`, { session: u.session })).status, 204)
  await until(async () => ((await relay.metric('dvv_relay_plan_closed_total')) || 0) > before, { timeoutMs: 3000, intervalMs: 50, what: 'the relay closing the revoked tunnel' })
  const ms = Date.now() - t0
  assert.ok(ms < 2000, `revocation took ${ms} ms end to end`)
  const m = await relay.metrics()
  assert.match(m, /dvv_relay_plan_closed_total\{reason="revoked"\} [1-9]/)
})
