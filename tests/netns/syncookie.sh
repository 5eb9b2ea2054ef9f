#!/usr/bin/env bash
# XDP SYN cookies, end to end: a spoofed SYN flood must never keep a new player out.
#
# Two network namespaces joined by a veth pair. "S" (the server) runs Redis, dvv-relay with its
# XDP guard in native mode on the veth (player port on [::]:25565, so 10.78.0.2 and fd78::2),
# tests/e2e/mc-server.mjs and a dvv agent registered to the relay. "C" (the clients) runs the
# flooders and real Minecraft logins (tests/e2e/mc-client.mjs join, each bound to an address of
# its own: 10.78.1.1.. and one IPv6 /64 per player, fd78:1:0:N::1, since the guard buckets IPv6
# per /64). The relay's per-/24 and per-address join limits are lifted: only the XDP port budget
# (--xdp-port-syn-budget, BUDGET, spent by every flood here) stands between a new source and
# the relay.
#
#   1 no flood: NEW_V4 new IPv4 sources log in
#   2 hping3 -S --rand-source --flood: NEW_V4 other new IPv4 sources log in
#   3 the same flood again: one source seen before any flood logs in ESTABLISHED times (all must)
#   4 IPv6 SYN flood, each SYN from a random /64 of fd78::/16 (a bounded raw-socket flooder
#     below; hping3 has no IPv6): NEW_V6 new IPv6 /64s log in
#   5 ACK flood, then RST flood (hping3 -A / -R --rand-source): ACKRST new IPv4 sources each log
#     in; the RSTs the server namespace sends (nstat TcpOutRsts) are printed, and with
#     EXPECT_ACK_FILTER=1 (the default) the ACK flood must not draw RSTs back: at most
#     RST_SLACK + 2 per login. EXPECT_ACK_FILTER=0 prints the figure only (today's guard lets
#     ACKs through to the kernel, which answers each with a RST: set it to 0 until ACKs are
#     filtered).
#   6 SIGTERM: the relay exits, no XDP program on the veth, no tc/tcx program on its ingress, and
#     its pin directory is gone.
# "Log in" is a real Minecraft login to play state through relay and agent; a phase passes when
# at most one login per 100 started fails (99 of 100, 49 of 50). In the SYN-flood phases (2-4)
# the players' first SYNs must also be answered: the clients' namespace may retransmit at most
# one SYN per 100 logins (nstat TcpExtTCPSynRetrans; the flooders' raw packets are not counted
# there). A count, not a timing: on a busy 2-core machine the flood pauses now and then, the
# budget refills and a retransmitted SYN may get through, so logins alone can pass by luck.
# Without SYN cookies, phases 2 and 4 fail: a new source's SYNs compete with the flood for the
# port budget. Each phase prints the flood rate, the login latency (median/p99/max) and the
# deltas of every field of the pinned xdp_counters map and of any other pinned *counters map
# (the TC half of SYN cookies), summed over CPUs, so counters that a later guard adds show up by
# themselves. No assertion is made on timing.
#
#   tests/netns/syncookie.sh               (root; needs hping3 ethtool python3 bpftool ip nsenter
#                                           node redis-server nstat tc, and make SAN=1 all)
#   DVV_BUILD=build tests/netns/syncookie.sh
#   FLOOD_SECONDS=20 NEW_V4=100 NEW_V6=50 ACKRST=50 BUDGET=2000 tests/netns/syncookie.sh
#   EXTRA_RELAY_ARGS="--xdp-syn-rate 20" KEEP=1 tests/netns/syncookie.sh   (KEEP=1: keep the logs)
#   EXTRA_RELAY_ARGS="--xdp-syncookies off" EXPECT_COOKIES=0 tests/netns/syncookie.sh  (the guard
#     without cookies: phases 2, 4 and 5a fail, the figures before cookies)
# With cookies (EXPECT_COOKIES=1, the default) phases 2-4 also check that every flood SYN over
# the budget was answered (tx_cookie moved, drop_budget did not).
#
# Prints cmocka-like lines ("[       OK ] name", "[  FAILED  ] name") and a final
# "[  PASSED  ] N test(s)." or "[  FAILED  ] N test(s)."; exit status 0 or 1. Everything it
# creates (namespaces, veth, bpffs and pins, processes, temp dir) is removed on every exit path;
# it runs in a private mount namespace with a bpffs of its own, never seen outside.
set -uo pipefail

if [[ ${DVVSC_PRIVATE_MNT:-} != 1 ]]; then
  [[ $(id -u) == 0 ]] || { echo "[  FAILED  ] syncookie needs root"; echo "[  FAILED  ] 1 test(s)."; exit 1; }
  DVVSC_PRIVATE_MNT=1 exec unshare --mount --propagation private -- "$0" "$@"
fi

cd "$(dirname "$0")/../.." || exit 1
REPO=$PWD
BUILD=${DVV_BUILD:-build-san}
FLOOD_SECONDS=${FLOOD_SECONDS:-25}     # upper bound of each flood; it is stopped once its logins end
NEW_V4=${NEW_V4:-100}                  # new IPv4 sources in phases 1 and 2 (each)
ESTABLISHED=${ESTABLISHED:-20}         # logins of the known source in phase 3
EXPECT_COOKIES=${EXPECT_COOKIES:-1}    # 0: the guard runs without cookies (before/after figures)
NEW_V6=${NEW_V6:-50}                   # new IPv6 /64s in phase 4
ACKRST=${ACKRST:-50}                   # new IPv4 sources in each of the ACK and RST floods
PACE_MS=${PACE_MS:-40}                 # one login starts every PACE_MS (they overlap)
JOIN_TIMEOUT_MS=${JOIN_TIMEOUT_MS:-8000} # a login's deadline: room for SYN retransmits at 1 s and 3 s
BUDGET=${BUDGET:-2000}                 # --xdp-port-syn-budget: SYNs/s per port, all sources
V6_MAX_PACKETS=${V6_MAX_PACKETS:-20000000}
EXPECT_ACK_FILTER=${EXPECT_ACK_FILTER:-1}
RST_SLACK=${RST_SLACK:-50}
read -ra EXTRA_RELAY_ARGS <<<"${EXTRA_RELAY_ARGS:-}" # more dvv-relay flags, split on blanks

ID=$$
NS_C=dvvsc-$ID-c
NS_S=dvvsc-$ID-s
IF_C=dvsc${ID}c
IF_S=dvsc${ID}s
PLAYER_PORT=25565
AGENT_PORT=7000
ADMIN_PORT=9100
REDIS_PORT=16379
MC_PORT=25570
INSTANCE=sc-$ID
TMP=$(mktemp -d "/tmp/dvvsc-$ID.XXXXXX")
BPFFS=$TMP/bpffs
PIN=$BPFFS/$INSTANCE
PIDS=()
passed=0
failed=0

ok() { echo "[       OK ] $1"; passed=$((passed + 1)); }
bad() { echo "[  FAILED  ] $1"; failed=$((failed + 1)); }
note() { echo "             $*"; }

cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
  done
  ip netns del "$NS_C" 2>/dev/null
  ip netns del "$NS_S" 2>/dev/null
  mountpoint -q "$BPFFS" && umount "$BPFFS"
  [[ ${KEEP:-0} == 1 ]] && { echo "             kept logs in $TMP" >&2; return; }
  rm -rf "$TMP"
}
finish() {
  cleanup
  if ((failed)); then echo "[  FAILED  ] $failed test(s)."; else echo "[  PASSED  ] $passed test(s)."; fi
  ((failed == 0)) && exit 0 || exit 1
}
trap finish EXIT
trap 'bad "interrupted"; exit 1' INT TERM

die() { bad "$1"; exit 1; }
# Into S's network namespace, in this mount namespace. Background processes are started with
# "${IN_S[@]}" X & (not through a function, which would run in a subshell): $! is then X itself,
# as nsenter --no-fork execs it.
IN_S=(nsenter --no-fork --net="/run/netns/$NS_S")
in_s() { "${IN_S[@]}" "$@"; }
in_c() { ip netns exec "$NS_C" "$@"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# ---- prerequisites ----------------------------------------------------------------------------
for t in hping3 ethtool python3 bpftool ip nsenter node redis-server nstat tc; do
  command -v "$t" >/dev/null ||
    die "prerequisite: $t not found (apt-get install -y hping3 ethtool python3 bpftool iproute2 nodejs redis-server)"
done
for b in dvv-relay dvv dvv-token; do
  [[ -x $BUILD/$b ]] || die "prerequisite: $BUILD/$b missing (make${BUILD/build-san/ SAN=1} all)"
done
[[ -d tests/e2e/node_modules/minecraft-protocol ]] || die "prerequisite: tests/e2e/node_modules (cd tests/e2e && npm ci)"

# ---- topology ---------------------------------------------------------------------------------
{
  ip netns add "$NS_C" && ip netns add "$NS_S" &&
    ip link add name "$IF_C" netns "$NS_C" type veth peer name "$IF_S" netns "$NS_S" &&
    ip -n "$NS_C" link set lo up && ip -n "$NS_S" link set lo up &&
    ip -n "$NS_C" addr add 10.78.0.1/24 dev "$IF_C" &&
    ip -n "$NS_S" addr add 10.78.0.2/24 dev "$IF_S" &&
    ip -n "$NS_C" addr add fd78::1/64 dev "$IF_C" nodad &&
    ip -n "$NS_S" addr add fd78::2/64 dev "$IF_S" nodad &&
    ip -n "$NS_C" link set "$IF_C" up && ip -n "$NS_S" link set "$IF_S" up &&
    # the relay host's way out is the clients' side: replies to any source go back over the veth
    ip -n "$NS_S" route add default via 10.78.0.1 &&
    ip -n "$NS_S" -6 route add default via fd78::1 &&
    ip -n "$NS_C" route add default via 10.78.0.2 &&
    ip -n "$NS_C" -6 route add default via fd78::2
} || die "create namespaces $NS_C, $NS_S and veth $IF_C/$IF_S"
# New sources: one IPv4 address, or one IPv6 /64, per player.
NV4_TOTAL=$((2 * NEW_V4 + 2 * ACKRST))
((NV4_TOTAL <= 250 * 250)) || die "too many IPv4 sources asked for"
V4=()
V6=()
{
  for ((i = 0; i < NV4_TOTAL; i++)); do
    a=10.78.$((1 + i / 250)).$((1 + i % 250))
    V4+=("$a")
    echo "addr add $a/32 dev $IF_C"
  done
  for ((i = 1; i <= NEW_V6; i++)); do
    a=$(printf 'fd78:1:0:%x::1' "$i")
    V6+=("$a")
    echo "addr add $a/128 dev $IF_C nodad"
  done
} >"$TMP/addrs.batch"
ip -n "$NS_C" -b "$TMP/addrs.batch" || die "add ${#V4[@]} IPv4 and ${#V6[@]} IPv6 client addresses"
# Checksum offload off: XDP would see packets without a checksum. XDP_TX on a native-XDP veth
# queues the frame to the peer, whose receive queue is only kicked when the peer has an XDP
# program of its own (GRO alone leaves SYN-ACKs waiting up to seconds): the guard's own object,
# with no ports set, passes everything on the clients' end.
{ in_c ethtool -K "$IF_C" tx off gro on && in_s ethtool -K "$IF_S" tx off gro on; } >/dev/null 2>&1 ||
  die "ethtool -K tx off gro on"
ip -n "$NS_C" link set dev "$IF_C" xdpdrv obj "$BUILD/bpf/xdp_guard.bpf.o" sec xdp ||
  die "load a pass-everything XDP program on the clients' veth end $IF_C"
note "topology: $NS_C ($IF_C 10.78.0.1, fd78::1, ${#V4[@]} + ${#V6[@]} player addresses) <-> $NS_S ($IF_S 10.78.0.2, fd78::2)"

{ mkdir -p "$BPFFS" && mount -t bpf bpf "$BPFFS"; } || die "mount a private bpffs on $BPFFS"

# ---- services in S ----------------------------------------------------------------------------
wait_for() { # what, tries (0.1 s), command...
  local what=$1 n=$2
  shift 2
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "$what"
}
alive() { kill -0 "$1" 2>/dev/null; }

mkdir -p "$TMP/redis"
"${IN_S[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$TMP/redis" \
  --daemonize no --protected-mode no --loglevel warning >"$TMP/redis.log" 2>&1 &
PIDS+=($!)
redis_up() { in_s python3 -c '
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1); s.sendall(b"PING\r\n")
sys.exit(0 if s.recv(16).startswith(b"+PONG") else 1)' "$REDIS_PORT" 2>/dev/null; }
wait_for "redis-server answers PING in $NS_S" 100 redis_up

bash scripts/mkkeys.sh "$TMP/keys" >"$TMP/mkkeys.log" 2>&1 || { cat "$TMP/mkkeys.log"; die "scripts/mkkeys.sh"; }

# Per-source and per-prefix join limits lifted (as tests/e2e/harness.mjs 'loopback'): the players
# share 10.78.1.0/24 and fd78:1::/32, and those limits are not what this test is about.
RELAY_ARGS=(
  --player-listen "[::]:$PLAYER_PORT" --agent-listen "127.0.0.1:$AGENT_PORT"
  --admin-listen "127.0.0.1:$ADMIN_PORT" --redis "127.0.0.1:$REDIS_PORT"
  --region eu --base-domain dvv.test --instance-id "$INSTANCE"
  --tls-cert "$TMP/keys/relay.pem" --tls-key "$TMP/keys/relay.key"
  --jwt-pubkey "$TMP/keys/jwt.pub" --jwt-issuer dvv --jwt-audience dvv-relay
  --join-rate-v4 1000000 --join-rate-v6 1000000 --join-burst 1000000
  --max-pending-per-source 1000000 --agent-unauth-per-source 1000000
  --drain-timeout-s 1
  --bpf-pin-root "$BPFFS" --xdp-ifaces "$IF_S" --xdp-mode native --xdp-port-syn-budget "$BUDGET"
  "${EXTRA_RELAY_ARGS[@]}"
)
"${IN_S[@]}" "$BUILD/dvv-relay" "${RELAY_ARGS[@]}" >"$TMP/relay.out" 2>"$TMP/relay.err" &
RELAY_PID=$!
PIDS+=("$RELAY_PID")
readyz() { alive $RELAY_PID && in_s python3 -c '
import sys, urllib.request
sys.exit(0 if urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/readyz", timeout=1).status == 200 else 1)' "$ADMIN_PORT" 2>/dev/null; }
for _ in $(seq 300); do readyz && break; alive $RELAY_PID || break; sleep 0.1; done
readyz || { tail -30 "$TMP/relay.err"; die "dvv-relay ready in $NS_S"; }

"${IN_S[@]}" node tests/e2e/mc-server.mjs --port "$MC_PORT" --host 127.0.0.1 --max-players 10000 \
  --motd "DVV syncookie test" >"$TMP/mc.out" 2>"$TMP/mc.err" &
PIDS+=($!)
wait_for "mc-server listening in $NS_S" 150 grep -q '"event":"listening"' "$TMP/mc.out"

TOKEN=$("$BUILD/dvv-token" --key "$TMP/keys/jwt.key" --sub user-sc --tid "tunnel-sc-$ID" --ttl 3600 2>"$TMP/token.err" | tail -1)
[[ $TOKEN == *.*.* ]] || { cat "$TMP/token.err"; die "dvv-token mints a token"; }
"${IN_S[@]}" "$BUILD/dvv" --relay "127.0.0.1:$AGENT_PORT" --ca "$TMP/keys/ca.pem" --local "127.0.0.1:$MC_PORT" \
  --token "$TOKEN" --json >"$TMP/agent.out" 2>"$TMP/agent.err" &
PIDS+=($!)
wait_for "agent tunnel_up" 200 grep -q '"event":[ ]*"tunnel_up"' "$TMP/agent.out"
MCHOST=$(python3 -c '
import json, sys
for l in open(sys.argv[1]):
    try: e = json.loads(l)
    except ValueError: continue
    if e.get("event") == "tunnel_up": print(e["hostname"]); break' "$TMP/agent.out")
[[ -n $MCHOST ]] || die "agent prints its hostname"

# "ip link" says "xdp" for native (driver) mode, "xdpgeneric" for generic.
if ip -n "$NS_S" link show "$IF_S" | grep -qE 'mtu [0-9]+ xdp ' && [[ -e $PIN/xdp_counters ]]; then
  ok "relay attaches its guard in native mode on $IF_S, counters pinned; tunnel $MCHOST up"
else
  grep -i xdp "$TMP/relay.err" | tail -5; ip -n "$NS_S" link show "$IF_S"; ls -la "$PIN" 2>&1
  die "relay attaches its guard in native mode on $IF_S with $PIN/xdp_counters"
fi

# ---- measuring --------------------------------------------------------------------------------
counters() { # -> "name=value ..." summed over CPUs: every field of xdp_counters, and of any
  # other pinned *counters map (SYN cookies' TC half: xdp_cookie_tc_counters) as map.field
  local m
  for m in "$PIN"/*counters*; do
    [[ -e $m ]] || continue
    bpftool -j map dump pinned "$m" 2>/dev/null | python3 -c '
import json, sys
pre = "" if sys.argv[1] == "xdp_counters" else sys.argv[1].removesuffix("_counters") + "."
tot = {}
for cpu in json.load(sys.stdin)[0]["formatted"]["values"]:
    for k, v in cpu["value"].items():
        if isinstance(v, int):
            tot[pre + k] = tot.get(pre + k, 0) + v
print(" ".join(f"{k}={v}" for k, v in tot.items()))' "${m##*/}"
  done | tr '\n' ' '
}
deltas() { # before after -> "name+delta ..." for every field of after
  python3 -c '
import sys
b = dict(kv.split("=") for kv in sys.argv[1].split())
a = dict(kv.split("=") for kv in sys.argv[2].split())
print(" ".join(f"{k}+{int(v) - int(b.get(k, 0))}" for k, v in a.items()))' "$1" "$2"
}
out_rsts() { in_s nstat -asz TcpOutRsts | awk '$1 == "TcpOutRsts" {print $2}'; }
# SYNs the clients' kernel sent again for want of a SYN-ACK within the initial RTO (1 s); the
# flooders write raw packets, so every one of these is a player's SYN that went unanswered.
syn_retrans() { in_c nstat -asz TcpExtTCPSynRetrans | awk '$1 == "TcpExtTCPSynRetrans" {print $2}'; }
field() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"; }

cat >"$TMP/logins.mjs" <<'EOF'
// node logins.mjs RELAY_HOST HOSTNAME USER_PREFIX PACE_MS TIMEOUT_MS ADDR... : one login per
// ADDR (bound to it), one started every PACE_MS; prints one JSON summary line.
import { pathToFileURL } from 'node:url'
const { join } = await import(pathToFileURL(process.env.MC_CLIENT).href)
const [relayHost, hostname, prefix, pace, timeoutMs, ...addrs] = process.argv.slice(2)
const jobs = []
for (let i = 0; i < addrs.length; i++) {
  jobs.push(join({ relayHost, relayPort: 25565, hostname, username: `${prefix}${i}`.slice(0, 16), timeoutMs: Number(timeoutMs), localAddress: addrs[i] }).then((r) => ({ addr: addrs[i], ...r })))
  await new Promise((resolve) => setTimeout(resolve, Number(pace)))
}
const res = await Promise.all(jobs)
const lat = res.filter((r) => r.ok).map((r) => r.ms).sort((a, b) => a - b)
const q = (p) => lat.length ? lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] : -1
const errors = {}
for (const r of res.filter((r) => !r.ok)) errors[r.error] = (errors[r.error] || 0) + 1
console.log(JSON.stringify({ ok: lat.length, fail: res.length - lat.length, median_ms: q(0.5), p99_ms: q(0.99), max_ms: q(1), errors }))
process.exit(0)
EOF

logins() { # relay address, user prefix, addresses... -> JSON summary
  local relay=$1 prefix=$2
  shift 2
  local bound=$(($# * PACE_MS / 1000 + JOIN_TIMEOUT_MS / 1000 + 20))
  MC_CLIENT=$REPO/tests/e2e/mc-client.mjs timeout "$bound" ip netns exec "$NS_C" \
    node "$TMP/logins.mjs" "$relay" "$MCHOST" "$prefix" "$PACE_MS" "$JOIN_TIMEOUT_MS" "$@" 2>>"$TMP/logins.err" |
    tail -1
}
jget() { python3 -c 'import json, sys; print(json.loads(sys.argv[1]).get(sys.argv[2], ""))' "$1" "$2" 2>/dev/null; }
summary() { python3 -c '
import json, sys
r = json.loads(sys.argv[1])
e = "; ".join("%dx %s" % (n, k) for k, n in r["errors"].items())
print("ok=%(ok)s fail=%(fail)s median_ms=%(median_ms)s p99_ms=%(p99_ms)s max_ms=%(max_ms)s" % r + (" errors: " + e[:300] if e else ""))' "$1" 2>/dev/null || echo "no result"; }

# ---- floods -----------------------------------------------------------------------------------
FLOOD_PID=""
FLOOD_T0=0
FLOOD_KIND=""
flood_start() { # kind (v4|v6), args...
  FLOOD_KIND=$1
  shift
  if [[ $FLOOD_KIND == v4 ]]; then
    timeout -s INT "$FLOOD_SECONDS" ip netns exec "$NS_C" hping3 "$@" --flood -q -c 100000000 \
      -p "$PLAYER_PORT" 10.78.0.2 >"$TMP/flood.out" 2>&1 &
  else
    timeout -s INT "$((FLOOD_SECONDS + 5))" ip netns exec "$NS_C" python3 "$TMP/flood6.py" fd78::2 \
      "$PLAYER_PORT" "$FLOOD_SECONDS" "$V6_MAX_PACKETS" >"$TMP/flood.out" 2>&1 &
  fi
  FLOOD_PID=$!
  PIDS+=("$FLOOD_PID")
  FLOOD_T0=$(now_ms)
  sleep 1 # the flood has spent the budget before the first login
}
flood_stop() { # -> "N packets in S s, R/s"
  kill -INT "$FLOOD_PID" 2>/dev/null
  wait "$FLOOD_PID" 2>/dev/null
  local ms=$(($(now_ms) - FLOOD_T0)) sent
  if [[ $FLOOD_KIND == v4 ]]; then
    sent=$(grep -o '^[0-9]* packets transmitted' "$TMP/flood.out" | awk '{print $1}')
  else
    sent=$(sed -n 's/^sent \([0-9]*\) .*/\1/p' "$TMP/flood.out")
  fi
  if [[ -z $sent ]]; then
    echo "no count ($(tail -c 200 "$TMP/flood.out" | tr '\n' ' '))"
  else
    echo "$sent packets in $((ms / 1000)).$((ms % 1000 / 100)) s, $((sent * 1000 / (ms > 0 ? ms : 1)))/s"
  fi
}

# A bounded IPv6 SYN flooder: raw IPv6 + TCP headers with a random source in a random /64 of
# fd78::/16 (the guard buckets IPv6 per /64: each SYN is a new source to it), random port and
# sequence number. Stops after SECONDS or COUNT packets, whichever comes first.
cat >"$TMP/flood6.py" <<'EOF'
import os, random, signal, socket, struct, sys, time
dst, dport, seconds, count = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
IPV6_HDRINCL = 36
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_TCP)
s.setsockopt(socket.IPPROTO_IPV6, IPV6_HDRINCL, 1)
dbin = socket.inet_pton(socket.AF_INET6, dst)
stop = [False]
signal.signal(signal.SIGINT, lambda *a: stop.__setitem__(0, True))
signal.signal(signal.SIGTERM, lambda *a: stop.__setitem__(0, True))
dsum = sum(struct.unpack("!8H", dbin))
rnd = random.getrandbits
pack_ip = struct.Struct("!IHBB").pack
pack_tcp = struct.Struct("!HHIIBBHHH").pack
words = struct.Struct("!8H").unpack
sent, t0 = 0, time.monotonic()
deadline = t0 + seconds
while not stop[0] and sent < count:
    for _ in range(256):
        # fd78:XXXX:XXXX:XXXX:<random interface id>, never fd78:0:0:0 (the link) nor fd78:1:0:*
        src = b"\xfd\x78" + rnd(48).to_bytes(6, "big") + rnd(64).to_bytes(8, "big")
        if src[2:4] in (b"\x00\x00", b"\x00\x01"):
            continue
        sport, seq = 1024 + rnd(15), rnd(32)
        # pseudo-header (src, dst, length 20, next header 6) + TCP header with checksum 0
        tcp0 = pack_tcp(sport, dport, seq, 0, 5 << 4, 0x02, 64240, 0, 0)
        acc = sum(words(src)) + dsum + 20 + 6 + sum(struct.unpack("!10H", tcp0))
        while acc >> 16:
            acc = (acc & 0xFFFF) + (acc >> 16)
        tcp = pack_tcp(sport, dport, seq, 0, 5 << 4, 0x02, 64240, ~acc & 0xFFFF, 0)
        pkt = pack_ip(0x60000000, 20, 6, 64) + src + dbin + tcp
        try:
            s.sendto(pkt, (dst, 0))
            sent += 1
        except OSError:
            pass  # ENOBUFS under load: drop and go on
    if time.monotonic() >= deadline:
        break
dt = time.monotonic() - t0
print(f"sent {sent} SYNs in {dt:.1f} s")
EOF

need() { echo $(($1 - ($1 + 99) / 100)); } # one failure per 100 started: 99 of 100, 49 of 50

# phase NAME MIN_OK RELAY_ADDR PREFIX ADDRS... with FLOOD_ARGS (empty: none) set by the caller
phase() {
  local name=$1 min=$2 relay=$3 prefix=$4
  shift 4
  local n=$# before after rst0 rst1 syn0 syn1 res okn flood="none"
  before=$(counters)
  rst0=$(out_rsts)
  syn0=$(syn_retrans)
  ((${#FLOOD_ARGS[@]})) && flood_start "${FLOOD_ARGS[@]}"
  res=$(logins "$relay" "$prefix" "$@")
  [[ -n $FLOOD_PID ]] && flood=$(flood_stop)
  FLOOD_PID=""
  sleep 0.3
  after=$(counters)
  rst1=$(out_rsts)
  syn1=$(syn_retrans)
  okn=$(jget "$res" ok)
  PHASE_RSTS=$((rst1 - rst0))
  PHASE_OK=${okn:-0}
  note "$name: logins $(summary "$res")"
  note "$name: flood $flood; server TcpOutRsts +$PHASE_RSTS; client SYN retransmits +$((syn1 - syn0))"
  note "$name: counters $(deltas "$before" "$after")"
  if [[ -z $okn || $okn -lt $min ]]; then
    bad "$name: expected >= $min/$n logins, got ${okn:-none}"
  else
    ok "$name: $okn/$n logins"
  fi
  # Under a SYN flood a player's first SYN must be answered: one dropped SYN costs it a second
  # (the initial RTO) and a few in a row its login, with whatever luck the flood leaves it.
  if ((SYN_CHECK && EXPECT_COOKIES)); then
    local db=$(($(field "$after" drop_budget) - $(field "$before" drop_budget)))
    local tx=$(($(field "$after" tx_cookie) - $(field "$before" tx_cookie)))
    if ((db == 0 && tx > 0)); then
      ok "$name: every SYN over the budget answered with a cookie (tx_cookie +$tx, drop_budget +0)"
    else
      bad "$name: every SYN over the budget answered with a cookie: tx_cookie +$tx, drop_budget +$db"
    fi
  fi
  if ((SYN_CHECK)); then
    local max=$(((n + 99) / 100))
    if ((syn1 - syn0 <= max)); then
      ok "$name: players' first SYNs answered ($((syn1 - syn0)) SYN retransmits, at most $max)"
    else
      bad "$name: players' first SYNs answered: $((syn1 - syn0)) SYN retransmits for $n logins, expected at most $max"
    fi
  fi
}

i4=0
take_v4() { TAKEN=("${V4[@]:i4:$1}"); i4=$((i4 + $1)); }

# ---- phases -----------------------------------------------------------------------------------
# The established source connects once before any flood: the guard knows it from then on.
FLOOD_ARGS=()
SYN_CHECK=0
res=$(logins 10.78.0.2 known 10.78.0.1)
note "established source 10.78.0.1 before the floods: $(summary "$res")"

take_v4 "$NEW_V4"
phase "1 no flood, $NEW_V4 new IPv4 sources" "$(need "$NEW_V4")" 10.78.0.2 a "${TAKEN[@]}"

FLOOD_ARGS=(v4 -S --rand-source)
SYN_CHECK=1
take_v4 "$NEW_V4"
phase "2 random-source SYN flood, $NEW_V4 new IPv4 sources" "$(need "$NEW_V4")" 10.78.0.2 b "${TAKEN[@]}"

EST=()
for ((i = 0; i < ESTABLISHED; i++)); do EST+=(10.78.0.1); done
phase "3 random-source SYN flood, established source x$ESTABLISHED" "$ESTABLISHED" 10.78.0.2 k "${EST[@]}"

FLOOD_ARGS=(v6)
phase "4 IPv6 random-/64 SYN flood, $NEW_V6 new IPv6 /64s" "$(need "$NEW_V6")" fd78::2 c "${V6[@]}"

FLOOD_ARGS=(v4 -A --rand-source)
SYN_CHECK=0
take_v4 "$ACKRST"
phase "5a random-source ACK flood, $ACKRST new IPv4 sources" "$(need "$ACKRST")" 10.78.0.2 d "${TAKEN[@]}"
ack_rsts=$PHASE_RSTS
ack_ok=$PHASE_OK
FLOOD_ARGS=(v4 -R --rand-source)
take_v4 "$ACKRST"
phase "5b random-source RST flood, $ACKRST new IPv4 sources" "$(need "$ACKRST")" 10.78.0.2 e "${TAKEN[@]}"
FLOOD_ARGS=()
rst_max=$((RST_SLACK + 2 * ack_ok))
if [[ $EXPECT_ACK_FILTER == 1 ]]; then
  if ((ack_rsts <= rst_max)); then
    ok "5a the ACK flood draws no RSTs from the server (TcpOutRsts +$ack_rsts, at most $rst_max)"
  else
    bad "5a the ACK flood draws no RSTs from the server: TcpOutRsts +$ack_rsts, expected at most $rst_max"
  fi
else
  note "5a RSTs the server sent during the ACK flood: $ack_rsts (EXPECT_ACK_FILTER=0: not checked)"
fi

# ---- stop -------------------------------------------------------------------------------------
kill -TERM $RELAY_PID
for _ in $(seq 100); do alive $RELAY_PID || break; sleep 0.1; done
link=$(ip -n "$NS_S" link show "$IF_S" 2>/dev/null)
tcf=$(tc -n "$NS_S" filter show dev "$IF_S" ingress 2>&1)
bnet=$(in_s bpftool net show dev "$IF_S" 2>&1)
if alive $RELAY_PID; then
  bad "6 relay exits on SIGTERM within 10 s"
else
  wait $RELAY_PID 2>/dev/null
  rc=$?
  problems=()
  grep -qE ' xdp(generic|offload)? ' <<<"$link" && problems+=("XDP still on $IF_S")
  [[ -n $tcf ]] && problems+=("tc ingress filters left: $(tr '\n' ' ' <<<"$tcf")")
  grep -qE '^[[:space:]]*'"$IF_S"'\(' <<<"$bnet" && problems+=("bpftool net show lists $IF_S: $(tr '\n' ' ' <<<"$bnet")")
  [[ -e $PIN ]] && problems+=("pin directory $PIN left: $(find "$PIN" | head -5 | tr '\n' ' ')")
  if ((${#problems[@]})); then
    bad "6 relay on SIGTERM (exit $rc) removes its programs and pins: ${problems[*]}"
  else
    ok "6 relay on SIGTERM (exit $rc): no XDP or tc program on $IF_S, pin directory gone"
  fi
  qd=$(tc -n "$NS_S" qdisc show dev "$IF_S" 2>/dev/null | grep -E 'clsact|ingress')
  [[ -n $qd ]] && note "6 (informational) qdisc left on $IF_S: $qd"
fi
if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error: ' "$TMP/relay.err" "$TMP/agent.err" 2>/dev/null; then
  grep -hE 'ERROR: (Address|Leak)Sanitizer|runtime error: |SUMMARY' "$TMP/relay.err" "$TMP/agent.err" | head -5
  bad "no sanitizer report from relay or agent"
fi
