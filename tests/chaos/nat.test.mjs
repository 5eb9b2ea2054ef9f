// The agent behind a home router that forgets idle flows: a network namespace "home" (the agent
// and the Minecraft server) behind a namespace "router" that masquerades, drops what its
// connection tracking does not know (strict TCP tracking, input and forward policy drop) and
// forgets an established flow after 20 s of silence, as home routers, CGNAT and cloud firewalls
// do after minutes. The relay is in the root namespace on the router's "internet" side.
//
// The pooled data connections and the control channel must survive 45 s without a player: the
// next player joins at once instead of being joined to a connection whose NAT mapping is gone.
//
// Needs root (network namespaces, nftables).

import { before, after } from 'node:test'
import assert from 'node:assert/strict'
import path from 'node:path'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import * as h from '../e2e/harness.mjs'
import { join } from '../e2e/mc-client.mjs'
import { appendTable } from './traffic.mjs'

const run = promisify(execFile)
const HOME = 'dvvnat-home'
const ROUTER = 'dvvnat-rtr'
const WAN = '10.78.0.1' // the relay's address (root namespace)
const NAT_TIMEOUT_S = 20
const IDLE_S = 45

let relay, agent, token, keys, redis, mc

async function sh (cmd) { return run('bash', ['-c', cmd]) }

async function teardown () {
  await sh(`ip netns del ${HOME} 2>/dev/null; ip netns del ${ROUTER} 2>/dev/null; ip link del dvvnatw0 2>/dev/null; true`)
}

before(h.withLogs('NAT topology up', async () => {
  h.requireBinaries()
  await teardown()
  await sh([
    'set -e',
    `ip netns add ${HOME}`, `ip netns add ${ROUTER}`,
    // root <-> router ("internet"), router <-> home ("LAN")
    `ip link add dvvnatw0 type veth peer name wan netns ${ROUTER}`,
    `ip addr add ${WAN}/24 dev dvvnatw0`, 'ip link set dvvnatw0 up',
    `ip -n ${ROUTER} addr add 10.78.0.2/24 dev wan`, `ip -n ${ROUTER} link set wan up`,
    `ip -n ${ROUTER} link add lan type veth peer name eth0 netns ${HOME}`,
    `ip -n ${ROUTER} addr add 192.168.78.1/24 dev lan`, `ip -n ${ROUTER} link set lan up`,
    `ip -n ${ROUTER} link set lo up`,
    `ip -n ${HOME} addr add 192.168.78.2/24 dev eth0`, `ip -n ${HOME} link set eth0 up`,
    `ip -n ${HOME} link set lo up`, `ip -n ${HOME} route add default via 192.168.78.1`,
    `ip netns exec ${ROUTER} sysctl -qw net.ipv4.ip_forward=1`,
    `ip netns exec ${ROUTER} nft -f - <<'EOF'
table ip nat {
  chain post { type nat hook postrouting priority 100 ; oifname "wan" masquerade ; }
}
table inet filter {
  chain input { type filter hook input priority 0 ; policy drop ; ct state established,related accept ; iifname "lo" accept ; }
  chain forward { type filter hook forward priority 0 ; policy drop ; ct state invalid drop ; ct state established,related accept ; iifname "lan" accept ; }
}
EOF`,
    // the router forgets an idle established flow after NAT_TIMEOUT_S, and a mid-stream packet
    // of a forgotten flow is invalid (dropped), not picked up as a new flow
    `ip netns exec ${ROUTER} sysctl -qw net.netfilter.nf_conntrack_tcp_timeout_established=${NAT_TIMEOUT_S}`,
    `ip netns exec ${ROUTER} sysctl -qw net.netfilter.nf_conntrack_tcp_loose=0`
  ].join('\n'))

  keys = await h.makeKeys()
  // a certificate that also names the relay's WAN address
  const dir = await h.makeTempDir('natkeys')
  await run('bash', [path.join(h.REPO_ROOT, 'scripts', 'mkkeys.sh'), dir], { env: { ...process.env, DVV_CERT_SANS: `IP:${WAN}` } })
  keys = { ...keys, dir, jwtKey: path.join(dir, 'jwt.key'), jwtPub: path.join(dir, 'jwt.pub'), ca: path.join(dir, 'ca.pem'), relayCert: path.join(dir, 'relay.pem'), relayKey: path.join(dir, 'relay.key') }
  redis = await h.startRedis()
  const [pp, ap] = [await h.freePort(), await h.freePort()]
  relay = await h.startRelay({ redisPort: redis.port, keys, extraArgs: ['--player-listen', `${WAN}:${pp}`, '--agent-listen', `${WAN}:${ap}`] })
  relay.wanPlayerPort = pp
  relay.wanAgentPort = ap
  // the server and the agent live at home
  const srv = h.spawnProcess('mc-server', 'nsenter', [`--net=/run/netns/${HOME}`, process.execPath, h.MC_SERVER, '--port', '0', '--host', '127.0.0.1', '--motd', 'behind NAT'])
  const { ev } = await h.waitForLine(srv, (_l, e) => e && e.event === 'listening', { timeoutMs: 15000, what: 'its listening event' })
  mc = { proc: srv, port: ev.port }
  token = await h.mintToken({ keys, sub: 'user-nat', tid: 'tunnel-nat', ttl: 3600 })
  const proc = h.spawnProcess('agent', 'nsenter', [`--net=/run/netns/${HOME}`, h.bin('dvv'), '--relay', `${WAN}:${ap}`, '--ca', keys.ca, '--local', `127.0.0.1:${mc.port}`, '--json', '--token', token])
  const up = await h.waitForLine(proc, (_l, e) => e && e.event === 'tunnel_up', { timeoutMs: 20000, what: 'a tunnel_up event' })
  agent = { proc, hostname: up.ev.hostname }
}), { timeout: 90000 })

after(async () => {
  await h.cleanup()
  await teardown()
})

h.scenario(`after ${IDLE_S} s without players behind a NAT that forgets idle flows after ${NAT_TIMEOUT_S} s, the next players join at once`, { timeout: 150000 }, async () => {
  const first = await join({ relayHost: WAN, relayPort: relay.wanPlayerPort, hostname: agent.hostname, username: 'before-idle', chat: 'hi', timeoutMs: 10000 })
  assert.equal(first.ok, true, `expected a join through the NAT before the idle period, got ${JSON.stringify(first)}`)
  await h.sleep(IDLE_S * 1000)
  // several players in a row: each takes a pooled connection that sat idle through the NAT
  const results = []
  for (let i = 0; i < 4; i++) {
    results.push(await join({ relayHost: WAN, relayPort: relay.wanPlayerPort, hostname: agent.hostname, username: `after-idle${i}`, chat: 'hi', timeoutMs: 10000 }))
  }
  const bad = results.filter((r) => !r.ok)
  assert.equal(bad.length, 0, `expected every join after the idle period to work, got ${JSON.stringify(bad)}`)
  const slow = results.filter((r) => r.ms > 3000)
  assert.equal(slow.length, 0, `expected each join within 3 s (a dead pooled connection would hang it), got ${results.map((r) => r.ms).join(', ')} ms`)
  const downs = agent.proc.events.filter((e) => e.event === 'tunnel_down')
  assert.equal(downs.length, 0, `expected the control channel to survive the idle period, got ${JSON.stringify(downs)}`)
  process.stderr.write(`[chaos] NAT idle: joins after ${IDLE_S} s idle took ${results.map((r) => r.ms).join(', ')} ms\n`)
  appendTable('/tmp/dvv-chaos-table.md', [{
    name: `NAT forgets idle flows after ${NAT_TIMEOUT_S} s; ${IDLE_S} s without players`,
    stats: { players: 0, dropped: 0, chats: 0, echoesLost: 0, joins: results.length + 1, joinsOk: results.filter((r) => r.ok).length + 1, joinsFailedAfterFault: bad.length, hangs: 0, recoveryMs: 0 },
    notes: `joins after the idle period took ${results.map((r) => r.ms).join(', ')} ms; control channel never dropped`
  }])
})
