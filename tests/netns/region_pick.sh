#!/usr/bin/env bash
# Region selection, end to end (root): `dvv --probe-regions --json` must pick the region with
# the lowest latency. Each case builds a "client" network namespace and one namespace per
# region (eu, us, asia), each region joined to the client by its own link and /24, with a
# plain TCP listener on port 7000 and an artificial delay on the client -> region direction:
#
#   netem  veth pairs + `tc qdisc add dev <veth> root netem delay Dms` (needs sch_netem)
#   wire   when the kernel has no netem: a pair of TUN devices per region, joined by a small
#          userspace forwarder that holds each client -> region packet for D ms
#
# The mode is chosen automatically (DELAY_MODE=netem|wire forces one). Every namespace, link
# and helper process is removed by a trap, also on failure or Ctrl-C. Bounded: < 60 s.
#
#   sudo tests/netns/region_pick.sh            # uses build/dvv
#   DVV=build-san/dvv sudo -E tests/netns/region_pick.sh
set -uo pipefail
cd "$(dirname "$0")/../.."

DVV=${DVV:-build/dvv}
DELAY_MODE=${DELAY_MODE:-auto}
ID=$$
PFX=dvvr-$ID
TMP=$(mktemp -d /tmp/dvv-region-pick.XXXXXX)
REGIONS=(eu us asia)
PIDS=()
passed=0
failed=0
START=$SECONDS

die() { echo "region_pick: $*" >&2; exit 1; }

teardown() {
	local p
	for p in "${PIDS[@]}"; do
		kill "$p" 2>/dev/null
	done
	for p in "${PIDS[@]}"; do
		wait "$p" 2>/dev/null
	done
	PIDS=()
	local ns
	for ns in client "${REGIONS[@]}"; do
		ip netns del "$PFX-$ns" 2>/dev/null
	done
	return 0
}

cleanup() {
	teardown
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces)"
[[ -x $DVV ]] || die "$DVV not built (make -j2 build/dvv)"
command -v ip >/dev/null || die "iproute2 (ip) is missing"
command -v python3 >/dev/null || die "python3 is missing"

# ---- helpers run inside the namespaces ----

cat >"$TMP/listen.py" <<'EOF'
# A plain TCP listener: accept and close, like a relay dropping an empty connection.
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[2])))
s.listen(128)
open(sys.argv[1], "w").close()
while True:
    c, _ = s.accept()
    c.close()
EOF

cat >"$TMP/wire.py" <<'EOF'
# Userspace "cable" with a delay, for kernels without sch_netem. For each
# CLIENT_TUN:REGION_TUN:DELAY_MS argument it creates two TUN devices (in the current network
# namespace; the caller moves them) and forwards IP packets between them, holding every
# client -> region packet DELAY_MS (so the round trip grows by DELAY_MS, as with netem on the
# client's side of a veth).
import fcntl, heapq, os, select, struct, sys, time
TUNSETIFF, IFF_TUN, IFF_NO_PI = 0x400454CA, 0x0001, 0x1000

def tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd

route = {}  # fd -> (peer fd, delay in s)
for spec in sys.argv[2:]:
    c, r, d = spec.split(":")
    fc, fr = tun(c), tun(r)
    route[fc] = (fr, int(d) / 1000.0)
    route[fr] = (fc, 0.0)
open(sys.argv[1], "w").close()
queue, seq = [], 0
while True:
    timeout = max(0.0, queue[0][0] - time.monotonic()) if queue else None
    ready, _, _ = select.select(list(route), [], [], timeout)
    now = time.monotonic()
    for fd in ready:
        while True:
            try:
                pkt = os.read(fd, 65536)
            except BlockingIOError:
                break
            out, delay = route[fd]
            seq += 1
            heapq.heappush(queue, (now + delay, seq, out, pkt))
    now = time.monotonic()
    while queue and queue[0][0] <= now:
        _, _, out, pkt = heapq.heappop(queue)
        try:
            os.write(out, pkt)
        except OSError:
            pass
EOF

wait_file() { # FILE PID: wait until the helper wrote FILE (or died)
	local i
	for i in $(seq 100); do
		[[ -e $1 ]] && return 0
		kill -0 "$2" 2>/dev/null || return 1
		sleep 0.05
	done
	return 1
}

nsx() { ip netns exec "$PFX-$1" "${@:2}"; }

# ---- which delay mechanism ----

netem_works() {
	ip netns add "$PFX-client" || return 1
	local ok=1
	nsx client ip link add t0 type veth peer name t1 &&
		nsx client tc qdisc add dev t0 root netem delay 1ms 2>"$TMP/netem.err" && ok=0
	ip netns del "$PFX-client"
	return $ok
}

if [[ $DELAY_MODE == auto ]]; then
	if netem_works; then
		DELAY_MODE=netem
	else
		DELAY_MODE=wire
		echo "note: tc netem is not available here ($(tr -d '\n' <"$TMP/netem.err")):" \
			"delays come from a userspace TUN forwarder instead"
	fi
fi
[[ $DELAY_MODE == netem || $DELAY_MODE == wire ]] || die "DELAY_MODE must be netem or wire"
echo "delay mode: $DELAY_MODE"

# setup DELAY_EU DELAY_US DELAY_ASIA: client namespace, region namespaces, links, listeners.
# Region i (0-based) is 10.77.(i+1).2, the client's side 10.77.(i+1).1.
setup() {
	local delays=("$@") i r
	ip netns add "$PFX-client" || return 1
	nsx client ip link set lo up
	for i in "${!REGIONS[@]}"; do
		r=${REGIONS[$i]}
		ip netns add "$PFX-$r" || return 1
		nsx "$r" ip link set lo up
	done
	if [[ $DELAY_MODE == netem ]]; then
		for i in "${!REGIONS[@]}"; do
			r=${REGIONS[$i]}
			ip link add "c-$r" netns "$PFX-client" type veth peer name "r-$r" \
				netns "$PFX-$r" || return 1
			if ((delays[i] > 0)); then
				nsx client tc qdisc add dev "c-$r" root netem delay "${delays[$i]}ms" ||
					return 1
			fi
		done
	else
		local specs=()
		for i in "${!REGIONS[@]}"; do
			specs+=("dvw${ID}c$i:dvw${ID}r$i:${delays[$i]}")
		done
		rm -f "$TMP/wire.ready"
		python3 "$TMP/wire.py" "$TMP/wire.ready" "${specs[@]}" &
		PIDS+=($!)
		wait_file "$TMP/wire.ready" $! || { echo "the TUN forwarder did not start"; return 1; }
		for i in "${!REGIONS[@]}"; do
			r=${REGIONS[$i]}
			ip link set "dvw${ID}c$i" netns "$PFX-client" &&
				nsx client ip link set "dvw${ID}c$i" name "c-$r" &&
				ip link set "dvw${ID}r$i" netns "$PFX-$r" &&
				nsx "$r" ip link set "dvw${ID}r$i" name "r-$r" || return 1
		done
	fi
	for i in "${!REGIONS[@]}"; do
		r=${REGIONS[$i]}
		nsx client ip addr add "10.77.$((i + 1)).1/24" dev "c-$r" &&
			nsx client ip link set "c-$r" up &&
			nsx "$r" ip addr add "10.77.$((i + 1)).2/24" dev "r-$r" &&
			nsx "$r" ip link set "r-$r" up || return 1
		rm -f "$TMP/listen.$r"
		ip netns exec "$PFX-$r" python3 "$TMP/listen.py" "$TMP/listen.$r" 7000 &
		PIDS+=($!)
		wait_file "$TMP/listen.$r" $! || { echo "listener in $r did not start"; return 1; }
	done
}

# probe OUT REGIONS_SPEC [extra dvv args]: run dvv in the client namespace; sets RC
probe() {
	local out=$1 spec=$2
	shift 2
	local t0=$SECONDS
	timeout 8 ip netns exec "$PFX-client" "$DVV" --probe-regions --regions "$spec" "$@" \
		>"$out" 2>"$out.err"
	RC=$?
	ELAPSED=$((SECONDS - t0))
}

ep() { echo "${REGIONS[$1]}=10.77.$(($1 + 1)).2:${2:-7000}"; }
spec_all() { echo "$(ep 0),$(ep 1),$(ep 2)"; }

# check_json OUT WANT_PICKED [DELAYS...]: one regions event, picked as wanted, and every
# reachable region's median at least its delay.
check_json() {
	python3 - "$@" <<'EOF'
import json, sys

def fail(msg):
    print("    " + msg)
    sys.exit(1)

out, want, delays = sys.argv[1], sys.argv[2], [int(d) for d in sys.argv[3:]]
lines = [l for l in open(out).read().splitlines() if l.strip()]
if len(lines) != 1:
    fail(f"want exactly one JSON line, got {len(lines)}: {lines!r}")
ev = json.loads(lines[0])
if ev.get("event") != "regions":
    fail(f"not a regions event: {ev}")
got = ev.get("picked")
if delays and len(ev.get("results", [])) != len(delays):
    fail(f"want {len(delays)} results: {ev}")
table = ", ".join(f"{r['region']} {'-' if r['median_ms'] is None else r['median_ms']} ms ({r['ok']} ok)" for r in ev["results"])
if (got or "null") != want:
    fail(f"picked {got}, want {want}: {table}")
for r, d in zip(ev["results"], delays):
    for k in ("region", "endpoint", "median_ms", "min_ms", "ok"):
        if k not in r:
            fail(f"result without {k}: {r}")
    if r["median_ms"] is not None and r["median_ms"] < d * 0.95:
        fail(f"{r['region']}: median {r['median_ms']} ms below its {d} ms delay")
print(f"    picked {got}: {table}")
EOF
}

# Keep the whole run under a minute: a case that would start late fails instead.
in_budget() {
	if ((SECONDS - START > 45)); then
		echo "    skipped: the run is over its time budget"
		return 1
	fi
}

result() { # NAME STATUS
	if [[ $2 -eq 0 ]]; then
		echo "[       OK ] $1"
		passed=$((passed + 1))
	else
		echo "[  FAILED  ] $1"
		failed=$((failed + 1))
	fi
}

# case NAME DELAY_EU DELAY_US DELAY_ASIA WANT
pick_case() {
	local name=$1 want=$5 st=1
	echo "[ RUN      ] $name (eu $2 ms, us $3 ms, asia $4 ms)"
	if in_budget && setup "$2" "$3" "$4"; then
		probe "$TMP/$name.out" "$(spec_all)" --json
		if [[ $RC -ne 0 ]]; then
			echo "    dvv exited $RC"; cat "$TMP/$name.out" "$TMP/$name.out.err"
		elif check_json "$TMP/$name.out" "$want" "$2" "$3" "$4"; then
			st=0
		fi
	fi
	teardown
	result "$name" $st
}

# ---- cases ----

pick_case fastest_in_the_middle 40 5 80 us
pick_case fastest_last 70 35 5 asia
pick_case fastest_first 3 60 30 eu

name=refused_region_is_not_fastest
echo "[ RUN      ] $name (asia refuses at once: eu 40 ms, us 80 ms)"
st=1
if in_budget && setup 40 80 0; then
	probe "$TMP/$name.out" "$(ep 0),$(ep 1),$(ep 2 7001)" --json
	if [[ $RC -ne 0 ]]; then
		echo "    dvv exited $RC"; cat "$TMP/$name.out" "$TMP/$name.out.err"
	elif check_json "$TMP/$name.out" eu 40 80 0 &&
		grep -q '"region":"asia"[^}]*"median_ms":null[^}]*"ok":0' "$TMP/$name.out"; then
		st=0
	fi
fi
teardown
result $name $st

name=silent_region_times_out
echo "[ RUN      ] $name (asia's address does not answer at all)"
st=1
if in_budget && setup 20 10 0; then
	probe "$TMP/$name.out" "$(ep 0),$(ep 1),asia=10.77.3.99:7000" --json
	if [[ $RC -ne 0 ]]; then
		echo "    dvv exited $RC"; cat "$TMP/$name.out" "$TMP/$name.out.err"
	elif ((ELAPSED > 4)); then
		echo "    took ${ELAPSED} s, want about 1.7 s (1.5 s timeout per sample)"
	elif check_json "$TMP/$name.out" us 20 10 0 &&
		grep -q '"region":"asia"[^}]*"ok":0,"error":"no answer within 1.5 s"' "$TMP/$name.out"; then
		st=0
	else
		cat "$TMP/$name.out"
	fi
fi
teardown
result $name $st

name=none_reachable_exits_1
echo "[ RUN      ] $name"
st=1
if in_budget && setup 0 0 0; then
	probe "$TMP/$name.out" "$(ep 0 7001),$(ep 1 7001),$(ep 2 7001)" --json
	if [[ $RC -ne 1 ]]; then
		echo "    dvv exited $RC, want 1"; cat "$TMP/$name.out" "$TMP/$name.out.err"
	elif check_json "$TMP/$name.out" null; then
		st=0
	fi
fi
teardown
result $name $st

name=human_table
echo "[ RUN      ] $name"
st=1
if in_budget && setup 30 60 2; then
	probe "$TMP/$name.out" "$(spec_all)"
	if [[ $RC -eq 0 ]] && grep -q '^region  *endpoint  *median  *min  *ok$' "$TMP/$name.out" &&
		grep -Eq '^asia  *10\.77\.3\.2:7000  *[0-9.]+ ms  *[0-9.]+ ms  *5/5$' "$TMP/$name.out" &&
		grep -Eq '^Fastest region: asia \([0-9.]+ ms\)$' "$TMP/$name.out"; then
		sed 's/^/    /' "$TMP/$name.out"
		st=0
	else
		echo "    dvv exited $RC"; cat "$TMP/$name.out" "$TMP/$name.out.err"
	fi
fi
teardown
result $name $st

echo "($((SECONDS - START)) s)"
if ((failed)); then
	echo "[  FAILED  ] $failed test(s)."
	exit 1
fi
echo "[  PASSED  ] $passed test(s)."
exit 0
