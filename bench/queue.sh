#!/usr/bin/env bash
# Latency under load: the bytes queued on ONE connection, server -> player, relayed (bpf plane,
# userspace plane) against a routed path over the same emulated links, in one run. Writes the
# "Queue under load" section of docs/performance.md (between its own markers).
#
#   bench/queue.sh               ~5 minutes
#   DURATION=10 SYM_RUNS=3 bench/queue.sh     quicker
#   OUT=/tmp/q.md bench/queue.sh              leave the docs alone
#   RELAY_ARGS="--notsent-lowat-kb 0 ..." AGENT_ARGS="..."   extra flags (compare settings);
#            AGENT_ARGS defaults to "--local-mss 7168 --local-rcvbuf-kb 64" (off in the agent's
#            own defaults: docs/operators.md "Queue bounds")
#   CHECK=1 (tests/netns/queue.sh): the slow-downlink case only, short, and exit 1 unless, for
#            each plane, the median bytes held past the server's own socket (by the agent, the
#            links and the relay: CHECK_WHAT=held, the default) are <= CHECK_RATIO x the routed
#            path's whole median queue + CHECK_SLACK_KB KiB; CHECK_WHAT=total compares the
#            whole relayed queue instead, the local server's send buffer included (which dvv
#            cannot size: docs/performance.md "Queue under load")
#
# Three network namespaces, joined by emulated links (bench/wire.c: TUN devices, a bottleneck
# rate with a drop-tail buffer of BUFFER_MS at that rate, and a propagation delay; this kernel
# has no sch_netem):
#
#   srv (game server + dvv agent) --agent link-- rly (dvv-relay, redis; IP router) --player link-- ply
#
# Routed path: the player connects straight to the server's address in srv; rly forwards IP.
# Relayed: the player connects to dvv-relay, which joins it to the dvv agent in srv, which
# connects to the same server on 127.0.0.1. The server and the player are one process
# (bench/qprobe.py) that reads both byte counters at the same instant.
#
# Cases:
#   downlink   player link DOWN_KBIT (10 Mbit/s) down, PLAYER_RTT_MS (20 ms); agent link
#              AGENT_KBIT (100 Mbit/s), AGENT_RTT_MS (10 ms): the queue forms in front of the
#              player's downlink. Reports the queued bytes (median, p95) per path.
#   symmetric  both links SYM_KBIT (50 Mbit/s): throughput of one stream, SYM_RUNS runs per
#              path, and in how many runs the bpf plane's lag throttle fired.
# Namespaces, TUN devices and processes carry this run's PID and are removed on every exit.
# Needs root, python3, redis-server, curl, iproute2.
set -uo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-20}
WARMUP=${WARMUP:-5}
SYM_RUNS=${SYM_RUNS:-5}
SYM_DURATION=${SYM_DURATION:-10}
DOWN_KBIT=${DOWN_KBIT:-10000}
AGENT_KBIT=${AGENT_KBIT:-100000}
SYM_KBIT=${SYM_KBIT:-50000}
PLAYER_RTT_MS=${PLAYER_RTT_MS:-20}
AGENT_RTT_MS=${AGENT_RTT_MS:-10}
BUFFER_MS=${BUFFER_MS:-100}
RELAY_ARGS=${RELAY_ARGS:-}
AGENT_ARGS=${AGENT_ARGS-"--local-mss 7168 --local-rcvbuf-kb 64"}
CHECK=${CHECK:-}
CHECK_RATIO=${CHECK_RATIO:-2}
CHECK_SLACK_KB=${CHECK_SLACK_KB:-256}
CHECK_WHAT=${CHECK_WHAT:-held}
# planes whose queue CHECK asserts (the others are printed as INFO): the bpf plane has only its
# lag throttle (from 4 MiB), not the per-pair queue bound (docs/sockmap.md section 3)
CHECK_PLANES=${CHECK_PLANES:-userspace}
OUT=${OUT:-docs/performance.md}
B=${B:-build}
ID=$$
PFX=dvvq-lat-$ID
TMP=$(mktemp -d /tmp/dvv-queue.XXXXXX)
PIDS=()
PINS=()
SRVPORT=25000
export QPROBE_TRACE=${QPROBE_TRACE:-}

die() { echo "queue: $*" >&2; exit 1; }

stop_pids() {
	local p i
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${PIDS[@]}"; do
		for i in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	PIDS=()
}

teardown() {
	stop_pids
	local ns p
	for ns in srv rly ply; do ip netns del "$PFX-$ns" 2>/dev/null; done
	for p in "${PINS[@]}"; do [[ -e $p ]] && rm -rf -- "$p"; done
	return 0
}

cleanup() {
	teardown
	if [[ -n ${KEEP_LOGS:-} ]]; then echo "logs kept in $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces, BPF)"
for c in python3 redis-server curl ip ss; do command -v $c >/dev/null || die "needs $c"; done
[[ -e /dev/net/tun ]] || die "needs /dev/net/tun"

if [[ -z ${NO_BUILD:-} ]]; then
	make -s -j2 $B/dvv-relay $B/dvv $B/dvv-token >/dev/null || die "build failed"
fi
cc -std=gnu11 -O2 -Wall -Wextra -Werror -o "$TMP/wire" bench/wire.c || die "wire build failed"
DVV_CERT_SANS="IP:10.88.1.2" bash scripts/mkkeys.sh "$TMP/keys" >/dev/null || die "mkkeys failed"
K=$TMP/keys

nsx() { ip netns exec "$PFX-$1" "${@:2}"; }
# Background processes are started with ip netns exec itself, never through nsx: ip execs the
# program in place, so $! is the program's PID and stop_pids really stops it (through the
# function, $! would be a subshell whose child outlived the kill).

wait_file() { # FILE PID
	local i
	for i in $(seq 200); do
		[[ -e $1 ]] && return 0
		kill -0 "$2" 2>/dev/null || return 1
		sleep 0.05
	done
	return 1
}

# setup AGENT_KBIT_UP AGENT_KBIT_DOWN PLAYER_KBIT_UP PLAYER_KBIT_DOWN: namespaces + links.
# "down" is towards the player: srv -> rly on the agent link, rly -> ply on the player link.
setup() {
	local ns a_b p_b
	for ns in srv rly ply; do
		ip netns add "$PFX-$ns" || return 1
		nsx $ns ip link set lo up
	done
	a_b=$(($2 * BUFFER_MS / 8)) p_b=$(($4 * BUFFER_MS / 8)) # bytes: kbit * ms / 8
	rm -f "$TMP/wire.ready"
	# link 0: srv (A) <-> rly (B); link 1: rly (A) <-> ply (B). One-way delay = RTT / 2.
	"$TMP/wire" "$TMP/wire.ready" \
		"dq${ID}s:dq${ID}r:$((AGENT_RTT_MS / 2)):$2:$1:$a_b" \
		"dq${ID}R:dq${ID}p:$((PLAYER_RTT_MS / 2)):$4:$3:$p_b" 2>"$TMP/wire.log" &
	PIDS+=($!)
	wait_file "$TMP/wire.ready" $! || { cat "$TMP/wire.log"; return 1; }
	ip link set "dq${ID}s" netns "$PFX-srv" && ip link set "dq${ID}r" netns "$PFX-rly" &&
		ip link set "dq${ID}R" netns "$PFX-rly" && ip link set "dq${ID}p" netns "$PFX-ply" ||
		return 1
	nsx srv ip addr add 10.88.1.1/24 dev "dq${ID}s" && nsx srv ip link set "dq${ID}s" up &&
		nsx rly ip addr add 10.88.1.2/24 dev "dq${ID}r" && nsx rly ip link set "dq${ID}r" up &&
		nsx rly ip addr add 10.88.2.1/24 dev "dq${ID}R" && nsx rly ip link set "dq${ID}R" up &&
		nsx ply ip addr add 10.88.2.2/24 dev "dq${ID}p" && nsx ply ip link set "dq${ID}p" up &&
		nsx srv ip route add default via 10.88.1.2 &&
		nsx ply ip route add default via 10.88.2.1 &&
		nsx rly sysctl -qw net.ipv4.ip_forward=1 || return 1
	start_redis
}

start_redis() {
	mkdir -p "$TMP/redis"
	ip netns exec "$PFX-rly" redis-server --port 6379 --bind 127.0.0.1 --save '' --appendonly no \
		--dir "$TMP/redis" --daemonize no --protected-mode no --loglevel warning \
		>"$TMP/redis.log" 2>&1 &
	PIDS+=($!)
	local i
	for i in $(seq 100); do
		nsx rly redis-cli -p 6379 ping 2>/dev/null | grep -q PONG && return 0
		sleep 0.05
	done
	echo "redis did not start"; return 1
}

RELAY_PID= AGENT_PID= HOSTNAME_=
# relay_up PLANE: dvv-relay in rly, the dvv agent in srv; sets HOSTNAME_.
relay_up() {
	local plane=$1 inst=qlat-$ID-$1-$RANDOM i
	PINS+=("/sys/fs/bpf/dvv/$inst")
	# shellcheck disable=SC2086 # RELAY_ARGS is a list of flags
	ip netns exec "$PFX-rly" $B/dvv-relay --player-listen 10.88.2.1:25565 --agent-listen 10.88.1.2:7000 \
		--admin-listen 127.0.0.1:9100 --redis 127.0.0.1:6379 --region eu \
		--base-domain dvv.test --tls-cert "$K/relay.pem" --tls-key "$K/relay.key" \
		--jwt-pubkey "$K/jwt.pub" --jwt-issuer dvv --jwt-audience dvv-relay --instance-id "$inst" \
		--dataplane "$plane" --drain-timeout-s 1 --log-level warn $RELAY_ARGS \
		>"$TMP/relay-$plane.log" 2>&1 &
	PIDS+=($!)
	RELAY_PID=$!
	for i in $(seq 100); do
		[[ $(nsx rly curl -s -o /dev/null -w '%{http_code}' --max-time 1 \
			http://127.0.0.1:9100/readyz) == 200 ]] && break
		kill -0 $RELAY_PID 2>/dev/null && ((i < 100)) || {
			echo "dvv-relay not ready:"; tail -20 "$TMP/relay-$plane.log"; return 1; }
		sleep 0.1
	done
	(umask 077 && $B/dvv-token --key "$K/jwt.key" --sub bench --tid "q-$plane-$RANDOM" \
		--ttl 3600 >"$TMP/agent-$plane.jwt") || return 1
	# shellcheck disable=SC2086
	ip netns exec "$PFX-srv" $B/dvv --relay 10.88.1.2:7000 --ca "$K/ca.pem" --local "127.0.0.1:$SRVPORT" \
		--token-file "$TMP/agent-$plane.jwt" --json --log-level warn $AGENT_ARGS \
		>"$TMP/agent-$plane.log" 2>&1 &
	PIDS+=($!)
	AGENT_PID=$!
	for i in $(seq 200); do
		grep -q tunnel_up "$TMP/agent-$plane.log" && break
		kill -0 $AGENT_PID 2>/dev/null && ((i < 200)) || {
			echo "dvv agent not up:"; tail -20 "$TMP/agent-$plane.log"; return 1; }
		sleep 0.05
	done
	HOSTNAME_=$(sed -n 's/.*"hostname":"\([^"]*\)".*/\1/p' "$TMP/agent-$plane.log" | head -1)
	# the tunnel must be this plane's relay's (a stray relay holding the ports would not be)
	kill -0 $RELAY_PID 2>/dev/null || { echo "dvv-relay ($plane) exited:"; tail -5 "$TMP/relay-$plane.log"; return 1; }
}

relay_down() { # stop agent then relay (the last two PIDS)
	local p i n
	for n in 1 2; do
		p=${PIDS[-1]}
		kill "$p" 2>/dev/null
		for i in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$p" 2>/dev/null
		wait "$p" 2>/dev/null
		unset 'PIDS[-1]'
	done
}

throttles() {
	nsx rly curl -s --max-time 2 http://127.0.0.1:9100/metrics |
		awk '$1 == "dvv_relay_bpf_throttles_total" || $1 == "dvv_relay_splice_clamps_total" {
			s += $2 } END { printf "%d\n", s }'
}

# sockets KEY: Send-Q + Recv-Q summed per namespace (established TCP, loopback included), and
# every socket's line, into the log: where the queue sits mid-run.
sockets() {
	local ns sum
	for ns in srv rly ply; do
		nsx $ns ss -tniH state established >"$TMP/ss-$1-$ns.txt" 2>/dev/null
		sum=$(awk '{ s += $1 + $2 } END { printf "%d", s }' "$TMP/ss-$1-$ns.txt")
		echo "$1,sock_$ns=$sum" >>"$TMP/results"
	done
}

# probe KEY TARGET HOST TIME: one stream; appends KEY,k=v lines to results.
probe() {
	local key=$1 target=$2 host=$3 t=$4 out pp
	python3 bench/qprobe.py "$PFX-srv" $SRVPORT "$PFX-ply" "$target" "$host" "$t" "$WARMUP" \
		>"$TMP/probe-$key.out" 2>&1 &
	pp=$!
	PIDS+=($pp)
	sleep $((WARMUP + t / 2))
	sockets "$key"
	wait $pp
	unset 'PIDS[-1]'
	out=$(tail -1 "$TMP/probe-$key.out")
	echo "   $key: $out"
	for kv in $out; do echo "$key,$kv" >>"$TMP/results"; done
	[[ $out == mbit=* ]]
}

: >"$TMP/results"
fail=0

run_case() { # NAME TIME RUNS
	local name=$1 t=$2 runs=$3 plane r th0 th1
	for r in $(seq 1 "$runs"); do
		probe "$name,routed,$r" "10.88.1.1:$SRVPORT" routed "$t" || fail=1
	done
	for plane in bpf userspace; do
		relay_up $plane || { fail=1; continue; }
		for r in $(seq 1 "$runs"); do
			th0=$(throttles)
			probe "$name,$plane,$r" 10.88.2.1:25565 "$HOSTNAME_" "$t" || fail=1
			th1=$(throttles)
			echo "$name,$plane,$r,throttles=$((th1 - th0))" >>"$TMP/results"
			echo "   $name,$plane,$r: throttles $((th1 - th0))"
		done
		relay_down
	done
}

echo "== downlink: player ${DOWN_KBIT} kbit/s down, ${PLAYER_RTT_MS} ms RTT; agent ${AGENT_KBIT} kbit/s, ${AGENT_RTT_MS} ms RTT"
setup "$AGENT_KBIT" "$AGENT_KBIT" "$DOWN_KBIT" "$DOWN_KBIT" || die "setup failed"
run_case downlink "$DURATION" 1
teardown

if [[ -z $CHECK ]]; then
	echo "== symmetric: both links ${SYM_KBIT} kbit/s, one stream, $SYM_RUNS runs per path"
	setup "$SYM_KBIT" "$SYM_KBIT" "$SYM_KBIT" "$SYM_KBIT" || die "setup failed"
	run_case symmetric "$SYM_DURATION" "$SYM_RUNS"
	teardown
fi
((fail)) && { echo "queue: a run failed (logs: KEEP_LOGS=1)"; [[ -n $CHECK ]] && exit 1; }

python3 - "$TMP/results" "$OUT" "$CHECK" "$CHECK_RATIO" "$CHECK_SLACK_KB" "$CHECK_WHAT" "$CHECK_PLANES" <<EOF
import re, sys, statistics
res, out, check, ratio, slack = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5]) * 1024
what = sys.argv[6]
planes = sys.argv[7].split()
R = {}
for line in open(res):
    key, _, kv = line.strip().rpartition(",")
    k, _, v = kv.partition("=")
    R.setdefault(key, {})[k] = float(v)

def get(case, path, k, run=1):
    return R.get("%s,%s,%d" % (case, path, run), {}).get(k)

def mib(b):
    return "n/a" if b is None else "%.2f" % (b / 1048576)

paths = ["routed", "bpf", "userspace"]
if check:
    base = get("downlink", "routed", "queued_med")
    limit = None if base is None else ratio * base + slack
    bad = 0
    checked = [p for p in ("bpf", "userspace") if p in planes]
    for p in ("bpf", "userspace"):
        for w, k in (("held", "held_med"), ("total", "queued_med")):
            q = get("downlink", p, k)
            ok = q is not None and limit is not None and q <= limit
            if w != what or p not in checked:
                print("[   INFO   ] %s plane %s %s MiB (%s), routed queue %s MiB, bound %s MiB" % (
                    p, w, mib(q), "within" if ok else "over", mib(base), mib(limit)))
                continue
            print("[ %s ] %s plane %s %s MiB, routed queue %s MiB, bound %s MiB" % (
                "      OK" if ok else "  FAILED", p, w, mib(q), mib(base), mib(limit)))
            bad += not ok
    print("[  FAILED  ] %d test(s)." % bad if bad else "[  PASSED  ] %d test(s)." % len(checked))
    sys.exit(1 if bad else 0)

rows = ["| downlink case | routed | bpf | userspace | bpf / routed | userspace / routed |",
        "|---|---|---|---|---|---|"]
def row(label, k, fmt, ratio=True):
    v = [get("downlink", p, k) for p in paths]
    cells = [("n/a" if x is None else fmt(x)) for x in v]
    r = ["%.2fx" % (x / v[0]) if ratio and x is not None and v[0] else "" for x in v[1:]]
    rows.append("| %s | %s | %s |" % (label, " | ".join(cells), " | ".join(r)))
row("queued server -> player, median (MiB)", "queued_med", lambda x: "%.2f" % (x / 1048576))
row("queued, p95 (MiB)", "queued_p95", lambda x: "%.2f" % (x / 1048576))
row("of it past the server's socket (agent, links, relay), median (MiB)", "held_med", lambda x: "%.2f" % (x / 1048576), False)
row("that queue in seconds at the player's rate", "queue_s", lambda x: "%.2f s" % x)
row("player's read rate (Mbit/s)", "mbit", lambda x: "%.1f" % x)
row("server socket SIOCOUTQ, median (KiB)", "srv_outq_med", lambda x: "%d" % (x / 1024), False)
row("server socket unsent (SIOCOUTQNSD), median (KiB)", "srv_unsent_med", lambda x: "%d" % (x / 1024), False)
row("mid-run Send-Q + Recv-Q, srv namespace (KiB)", "sock_srv", lambda x: "%d" % (x / 1024), False)
row("mid-run Send-Q + Recv-Q, relay namespace (KiB)", "sock_rly", lambda x: "%d" % (x / 1024), False)
t = get("downlink", "bpf", "throttles")
rows.append("| bpf throttles | | %s | | | |" % ("n/a" if t is None else "%d" % t))

sym = []
runs = sorted({int(k.split(",")[2]) for k in R if k.startswith("symmetric,")})
if runs:
    sym = ["| symmetric case, %d runs | routed | bpf | userspace | bpf / routed | userspace / routed |" % len(runs),
           "|---|---|---|---|---|---|"]
    med = {p: statistics.median([get("symmetric", p, "mbit", r) or 0 for r in runs]) for p in paths}
    mn = {p: min([get("symmetric", p, "mbit", r) or 0 for r in runs]) for p in paths}
    sym.append("| one stream, median Mbit/s | %.1f | %.1f | %.1f | %.2fx | %.2fx |" % (
        med["routed"], med["bpf"], med["userspace"], med["bpf"] / med["routed"], med["userspace"] / med["routed"]))
    sym.append("| one stream, lowest run Mbit/s | %.1f | %.1f | %.1f | %.2fx | %.2fx |" % (
        mn["routed"], mn["bpf"], mn["userspace"], mn["bpf"] / mn["routed"], mn["userspace"] / mn["routed"]))
    fired = sum(1 for r in runs if (get("symmetric", "bpf", "throttles", r) or 0) > 0)
    sym.append("| runs in which the bpf throttle fired | | %d of %d | | | |" % (fired, len(runs)))
    sym.append("| queued, median of runs (MiB) | %s | %s | %s | | |" % tuple(
        mib(statistics.median([get("symmetric", p, "queued_med", r) or 0 for r in runs])) for p in paths))

body = "\n".join(rows) + "\n\n" + "\n".join(sym) + "\n"
print(body)
begin, end = "<!-- queue-bench:begin", "<!-- queue-bench:end -->"
try:
    doc = open(out).read()
except FileNotFoundError:
    doc = ""
if begin in doc and end in doc:
    b = doc.index("\n", doc.index(begin)) + 1  # keep the whole begin line
    doc = doc[:b] + body + doc[doc.index(end):]
    open(out, "w").write(doc)
    print("wrote the queue-bench section of " + out)
else:
    print("no queue-bench markers in %s: tables printed only" % out)
EOF
