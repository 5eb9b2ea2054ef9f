#!/usr/bin/env bash
# Data-plane benchmark: the bpf plane vs the userspace plane vs a direct connection, in one run,
# along three paths. Writes the "Data plane" section of docs/performance.md (between its
# markers; the rest of the file is left alone) and prints the same tables.
#
#   bench/run.sh                 10 s per throughput run (~5 minutes in all)
#   DURATION=3 bench/run.sh      shorter runs (a quick check)
#   STREAMS, RTT_COUNT, SETUP_COUNT, WARMUP override the other sizes.
#   PLANES="userspace" PATHS="whole" OUT=/tmp/x.md bench/run.sh   a part only (quick looks
#                 while working; the missing cells read n/a, so keep such runs out of the docs)
#   AGENT_ARGS="--workers 0"   extra options for the real agent of path (b)
#
# Paths (everything on loopback; client and servers on this machine, so absolute numbers are
# those of a small VM: compare the columns of one run, not runs of different days):
#   direct   client -> sink / echo server (bench/dp_bench.c), no relay. One baseline for all.
#   (a)  hop      client -> dp_bench relay (calls the plane directly: accept, join to an upstream
#                 connection) -> sink / echo server. The plane and nothing else.
#   (a') relay    client -> build/dvv-relay -> dp_bench fakeagent, which speaks the real agent
#                 protocol (TLS control channel, HELLO + JWT, ATTACH, "DVVA" data connections,
#                 the "DVVP" player header) and then sinks / echoes itself: the real relay's
#                 own cost (handshake routing, pool, join, plane), with no second hop.
#   (b)  whole    client -> build/dvv-relay -> build/dvv (the real agent, splice(2)) -> sink /
#                 echo server: what a player sees.
# Every client connection first sends a Minecraft login handshake for the tunnel's hostname (the
# relay routes by it); direct and (a) get the same bytes, so every column does the same work.
#
# What is measured (dp_bench clients, see bench/dp_bench.c):
#   - throughput, 1 and $STREAMS streams: `dp_bench stream`, bulk senders for $DURATION s after
#     a $WARMUP s warm-up; bytes are those the sink counted over the window (a kernel redirect
#     queue can hold a lot that was "sent")
#   - CPU per GB: machine-wide system time (sys + irq + softirq, /proc/stat) over the window,
#     divided by the bytes received; includes the client's and the sink's own kernel work (the
#     same in every column)
#   - 64-byte round trip: one connection, ping-pong through the path (min, median, p99)
#   - connection setup: connect + handshake + 1 byte, all echoed back, close; sequential
# The relay runs with the per-source limits lifted (everything dials from 127.0.0.1, see
# tests/e2e/harness.mjs LOOPBACK_LIMITS) and with room for all $STREAMS players of a burst to
# wait for a data connection (the default, 64 per tunnel, answers the rest "busy": right for a
# server, but it would measure the cap instead of the path). Needs root (BPF), redis-server, curl.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-1}
STREAMS=${STREAMS:-100}
RTT_COUNT=${RTT_COUNT:-20000}
SETUP_COUNT=${SETUP_COUNT:-2000}
OUT=${OUT:-docs/performance.md} # OUT=/tmp/x.md: try it without touching the docs
TMP=$(mktemp -d /tmp/dvv-bench.XXXXXX)
PIDS=()	 # every process we started, in order
PINS=()	 # every /sys/fs/bpf/dvv/<instance> we asked a plane to create
B=build

cleanup() {
  local p i
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for i in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  for p in "${PINS[@]}"; do
    [[ -e $p ]] && { echo "bench/run.sh: removing pins left in $p"; rm -rf -- "$p"; }
  done
  if [[ -n ${KEEP_LOGS:-} ]]; then echo "logs kept in $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[[ $(id -u) -eq 0 ]] || { echo "bench/run.sh: needs root (BPF)"; exit 1; }
for c in python3 redis-server curl clang bpftool; do
  command -v "$c" >/dev/null || { echo "bench/run.sh: $c missing: running scripts/setup.sh"; bash scripts/setup.sh; break; }
done
for c in python3 redis-server curl; do
  command -v "$c" >/dev/null || { echo "bench/run.sh: needs $c"; exit 1; }
done

LOAD0=$(cut -d' ' -f1 /proc/loadavg) # written with the figures: was the machine shared?
echo "== build (release)"
make -s -j"$(nproc)" $B/librelay.a $B/libdvv.a $B/dvv-relay $B/dvv $B/dvv-token
cc -std=gnu11 -O2 -g -Wall -Wextra -Werror -Wno-unused-parameter -D_GNU_SOURCE -Icommon -Iuserspace \
  -I$B/gen -o $B/dp_bench bench/dp_bench.c $B/librelay.a $B/libdvv.a \
  -lbpf -lelf -lz -lssl -lcrypto -ljwt -ljansson -lhiredis -lmicrohttpd -lpthread

# Free loopback ports, chosen by the kernel (nothing fixed that another run could hold).
read -r P_SINK P_SINK_STATS P_ECHO P_HOP_STREAM P_HOP_ECHO P_REDIS P_PLAYER P_AGENT P_ADMIN \
  P_FA_STATS P_ECHO_STATS P_FA_ECHO_STATS < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(12)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')

start() { # name, ready-pattern, command...: start in background, wait (bounded) for the pattern
  local name=$1 pat=$2; shift 2
  "$@" >"$TMP/$name.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 200); do
    grep -q -- "$pat" "$TMP/$name.log" 2>/dev/null && return 0
    kill -0 "${PIDS[-1]}" 2>/dev/null || break
    sleep 0.05
  done
  echo "bench/run.sh: $name did not start:"; tail -20 "$TMP/$name.log"; exit 1
}

stop_last() { # stop the processes started since mark $1, newest first (SIGTERM, then SIGKILL)
  local keep=$1 p
  while ((${#PIDS[@]} > keep)); do
    p=${PIDS[-1]}
    kill "$p" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    unset 'PIDS[-1]'
  done
}

pin_gone() { # the plane removed its pins on stop
  if [[ -e $1 ]]; then echo "bench/run.sh: pins left behind in $1:"; ls "$1"; exit 1; fi
}

metric() { # relay /metrics sample sum: metric NAME
  curl -s --max-time 2 "http://127.0.0.1:$P_ADMIN/metrics" |
    awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $2 } END { printf "%d\n", s }'
}

declare -A R
# stream KEY PREFIX N PORT STATS_PORT HOST PIDS METRICS [--echo 1]: one throughput run into
# R[KEY,PREFIX N] (Gbit/s) and R[KEY,PREFIXc N] (system CPU s per GB)
stream() {
  local key=$1 pre=$2 n=$3 port=$4 st=$5 host=$6 pids=$7 m=$8 out th0 th1
  shift 8
  [[ -n $m ]] && th0=$(metric dvv_relay_bpf_throttles_total)
  out=$(timeout $((DURATION + WARMUP + 90)) $B/dp_bench stream --connect "$port" --stats "$st" \
    --streams "$n" --time "$DURATION" --warmup "$WARMUP" --host "$host" --pids "$pids" "$@") || {
    echo "   stream x$n failed: $out"; out="stream gbit=0 cpu_s_per_gb=0"; }
  [[ -n $m ]] && th1=$(metric dvv_relay_bpf_throttles_total) && out+=" throttles=$((th1 - th0))"
  echo "   $n stream(s)${1:+ both ways}: $out"
  R[$key,$pre$n]=$(sed -n 's/.*gbit=\([0-9.]*\).*/\1/p' <<<"$out")
  R[$key,${pre}c$n]=$(sed -n 's/.*cpu_s_per_gb=\([0-9.]*\).*/\1/p' <<<"$out")
}

# measure KEY STREAM_PORT STATS_PORT ECHO_PORT ECHO_STATS_PORT SINK_HOST ECHO_HOST SINK_PIDS
#         ECHO_PIDS [RELAY_WITH_METRICS]
# one way (t, c: to a sink) and both ways (e, ec: to an echo server), 1 and $STREAMS streams
measure() {
  local key=$1 ps=$2 pst=$3 pe=$4 pest=$5 hs=$6 he=$7 pids=$8 epids=$9 m=${10:-} n
  for n in 1 "$STREAMS"; do
    stream "$key" t "$n" "$ps" "$pst" "$hs" "$pids" "$m"
    R[$key,c$n]=${R[$key,tc$n]}
  done
  for n in 1 "$STREAMS"; do
    stream "$key" e "$n" "$pe" "$pest" "$he" "$epids" "$m" --echo 1 --idle "${ECHO_IDLE:-0}"
  done
  R[$key,rtt]=$(timeout 300 $B/dp_bench rtt --connect "$pe" --count "$RTT_COUNT" --size 64 \
    --host "$he")
  echo "   rtt 64 B:   ${R[$key,rtt]}"
  R[$key,setup]=$(timeout 300 $B/dp_bench setup --connect "$pe" --count "$SETUP_COUNT" \
    --host "$he")
  echo "   setup:      ${R[$key,setup]}"
}

echo "== keys, redis, servers (logs in $TMP)"
bash scripts/mkkeys.sh "$TMP/keys" >/dev/null
K=$TMP/keys
mkdir -p "$TMP/redis"
start redis "Ready to accept" redis-server --port "$P_REDIS" --bind 127.0.0.1 --save '' \
  --appendonly no --dir "$TMP/redis" --daemonize no --protected-mode no --loglevel notice
start sink ready $B/dp_bench sink --listen "$P_SINK" --stats "$P_SINK_STATS"
start echo ready $B/dp_bench echo --listen "$P_ECHO" --stats "$P_ECHO_STATS"
base=${#PIDS[@]}

echo "== direct (no relay)"
measure direct "$P_SINK" "$P_SINK_STATS" "$P_ECHO" "$P_ECHO_STATS" bench.direct bench.direct \
  "$(pgrep -P $$ -f "dp_bench sink" | head -1)" "$(pgrep -P $$ -f "dp_bench echo" | head -1)"

hostname_of() { sed -n 's/.*"hostname":"\([^"]*\)".*/\1/p; s/^ready hostname=\([^ ]*\).*/\1/p' \
  "$TMP/$1.log" | head -1; }

PLANES=${PLANES:-bpf userspace}
PATHS=${PATHS:-hop relay whole}
on() { [[ " $PATHS " == *" $1 "* ]]; }
for plane in $PLANES; do
  if on hop; then
  echo "== (a) relay hop alone (dp_bench relay), $plane"
  inst_s=bench-hop-s-$$-$plane inst_e=bench-hop-e-$$-$plane
  PINS+=("/sys/fs/bpf/dvv/$inst_s" "/sys/fs/bpf/dvv/$inst_e")
  start "hop-stream-$plane" ready $B/dp_bench relay --plane "$plane" --listen "$P_HOP_STREAM" \
    --target "$P_SINK" --pool 0 --instance "$inst_s"
  hop_pid=${PIDS[-1]}
  start "hop-echo-$plane" ready $B/dp_bench relay --plane "$plane" --listen "$P_HOP_ECHO" \
    --target "$P_ECHO" --pool 16 --instance "$inst_e"
  hop_echo_pid=${PIDS[-1]}
  sleep 0.5
  # the echo hop keeps a pool of 16 idle connections open at the echo server
  ECHO_IDLE=16 measure "hop,$plane" "$P_HOP_STREAM" "$P_SINK_STATS" "$P_HOP_ECHO" "$P_ECHO_STATS" \
    bench.hop bench.hop "$hop_pid" "$hop_echo_pid"
  kill -USR1 "$hop_pid" 2>/dev/null || true
  sleep 0.2
  grep -h '^bpf:' "$TMP/hop-stream-$plane.log" | tail -1 | sed 's/^/   hop counters: /' || true
  stop_last "$base"
  pin_gone "/sys/fs/bpf/dvv/$inst_s"
  pin_gone "/sys/fs/bpf/dvv/$inst_e"
  fi

  echo "== (a') real dvv-relay + fake agent, and (b) dvv-relay + dvv agent, $plane"
  inst=bench-relay-$$-$plane
  PINS+=("/sys/fs/bpf/dvv/$inst")
  $B/dvv-relay --player-listen "127.0.0.1:$P_PLAYER" --agent-listen "127.0.0.1:$P_AGENT" \
    --admin-listen "127.0.0.1:$P_ADMIN" --redis "127.0.0.1:$P_REDIS" --region eu \
    --base-domain dvv.test --tls-cert "$K/relay.pem" --tls-key "$K/relay.key" \
    --jwt-pubkey "$K/jwt.pub" --jwt-issuer dvv --jwt-audience dvv-relay --instance-id "$inst" \
    --dataplane "$plane" --drain-timeout-s 2 --log-level warn \
    --join-rate-v4 1000000 --join-rate-v6 1000000 --join-burst 1000000 \
    --max-pending-per-source 1000000 --max-waiting-per-tunnel 100000 >"$TMP/relay-$plane.log" 2>&1 &
  PIDS+=($!)
  relay_pid=$!
  for i in $(seq 1 100); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 1 \
      "http://127.0.0.1:$P_ADMIN/readyz" || true) == 200 ]] && break
    kill -0 "$relay_pid" 2>/dev/null && ((i < 100)) || {
      echo "bench/run.sh: dvv-relay not ready:"; tail -20 "$TMP/relay-$plane.log"; exit 1; }
    sleep 0.1
  done
  for t in fa-sink fa-echo ag-sink ag-echo; do # one tunnel each, a fresh id per relay
    (umask 077 && $B/dvv-token --key "$K/jwt.key" --sub bench --tid "$t-$plane" --ttl 3600 \
      >"$TMP/$t-$plane.jwt")
  done
  start "fa-sink-$plane" "^ready" $B/dp_bench fakeagent --relay "$P_AGENT" --ca "$K/ca.pem" \
    --token-file "$TMP/fa-sink-$plane.jwt" --mode sink --stats "$P_FA_STATS"
  fa_pid=${PIDS[-1]}
  start "fa-echo-$plane" "^ready" $B/dp_bench fakeagent --relay "$P_AGENT" --ca "$K/ca.pem" \
    --token-file "$TMP/fa-echo-$plane.jwt" --mode echo --stats "$P_FA_ECHO_STATS"
  fa_echo_pid=${PIDS[-1]}
  # shellcheck disable=SC2086 # AGENT_ARGS is a list of options
  start "ag-sink-$plane" tunnel_up $B/dvv --relay "127.0.0.1:$P_AGENT" --ca "$K/ca.pem" \
    --local "127.0.0.1:$P_SINK" --token-file "$TMP/ag-sink-$plane.jwt" --json --log-level warn \
    ${AGENT_ARGS:-}
  ag_pid=${PIDS[-1]}
  # shellcheck disable=SC2086
  start "ag-echo-$plane" tunnel_up $B/dvv --relay "127.0.0.1:$P_AGENT" --ca "$K/ca.pem" \
    --local "127.0.0.1:$P_ECHO" --token-file "$TMP/ag-echo-$plane.jwt" --json --log-level warn \
    ${AGENT_ARGS:-}
  ag_echo_pid=${PIDS[-1]}
  sleep 0.5

  if on relay; then
  echo "-- (a') relay + fake agent, $plane"
  measure "relay,$plane" "$P_PLAYER" "$P_FA_STATS" "$P_PLAYER" "$P_FA_ECHO_STATS" \
    "$(hostname_of "fa-sink-$plane")" "$(hostname_of "fa-echo-$plane")" "$relay_pid,$fa_pid" \
    "$relay_pid,$fa_echo_pid" metrics
  fi
  if on whole; then
  echo "-- (b) whole path: relay + dvv agent, $plane"
  measure "whole,$plane" "$P_PLAYER" "$P_SINK_STATS" "$P_PLAYER" "$P_ECHO_STATS" \
    "$(hostname_of "ag-sink-$plane")" "$(hostname_of "ag-echo-$plane")" "$relay_pid,$ag_pid" \
    "$relay_pid,$ag_echo_pid" metrics
  # the agent on one CPU (all its threads), against both CPUs above: does it use every core?
  echo "-- (b) whole path, the agent on 1 CPU (taskset), $plane"
  taskset -a -p -c 0 "$ag_echo_pid" >/dev/null
  stream "whole,$plane" e1cpu_ "$STREAMS" "$P_PLAYER" "$P_ECHO_STATS" \
    "$(hostname_of "ag-echo-$plane")" "$relay_pid,$ag_echo_pid" metrics --echo 1
  taskset -a -p -c "0-$(($(nproc) - 1))" "$ag_echo_pid" >/dev/null
  fi
  curl -s --max-time 2 "http://127.0.0.1:$P_ADMIN/metrics" >"$TMP/metrics-$plane.txt" || true
  grep -E '^dvv_relay_(bpf_(pairs_total|pairs_demoted_total|throttles_total|cut_lag_total|cut_error_total|user_bytes_total)|players_joined_total|join_wait)' \
    "$TMP/metrics-$plane.txt" | tr '\n' ' ' | sed 's/^/   relay counters: /; s/$/\n/' || true
  stop_last "$base"
  pin_gone "/sys/fs/bpf/dvv/$inst"
done

echo "== report"
for k in "${!R[@]}"; do printf '%s\t%s\n' "$k" "${R[$k]}"; done >"$TMP/results.tsv"
python3 - "$OUT" "$DURATION" "$STREAMS" "$(uname -r)" "$(nproc)" "$TMP/results.tsv" "$LOAD0" \
  "$(cut -d' ' -f1 /proc/loadavg)" <<'EOF'
import re, sys, datetime
out, dur, streams, kernel, ncpu, results, load0, load1 = sys.argv[1:9]
R = dict(line.rstrip("\n").split("\t", 1) for line in open(results) if "\t" in line)

def kv(s):
    return dict(x.split("=") for x in (s or "").split() if "=" in x)

def ratio(a, b):
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return "n/a"
    return "%.2fx" % (a / b) if b and a else "n/a"

def table(path):
    def get(plane, key):
        return R.get(("direct" if plane == "direct" else path + "," + plane) + "," + key)
    rows = ["| | direct (no relay) | bpf | userspace | bpf / direct | userspace / direct | bpf / userspace |",
            "|---|---|---|---|---|---|---|"]
    def row(name, key, fmt):
        d, b, u = (get(p, key) for p in ("direct", "bpf", "userspace"))
        f = lambda x: fmt % float(x) if x not in (None, "") else "n/a"
        rows.append("| %s | %s | %s | %s | %s | %s | %s |" % (name, f(d), f(b), f(u),
                    ratio(b, d), ratio(u, d), ratio(b, u)))
    row("throughput, 1 stream (Gbit/s)", "t1", "%.2f")
    row("throughput, %s streams (Gbit/s)" % streams, "t" + streams, "%.2f")
    row("system CPU per GB, 1 stream (s)", "c1", "%.3f")
    row("system CPU per GB, %s streams (s)" % streams, "c" + streams, "%.3f")
    row("both ways: throughput back, 1 stream (Gbit/s)", "e1", "%.2f")
    row("both ways: throughput back, %s streams (Gbit/s)" % streams, "e" + streams, "%.2f")
    row("both ways: system CPU per GB, 1 stream (s)", "ec1", "%.3f")
    row("both ways: system CPU per GB, %s streams (s)" % streams, "ec" + streams, "%.3f")
    if path == "whole":
        row("both ways, agent on 1 CPU: throughput back, %s streams (Gbit/s)" % streams,
            "e1cpu_" + streams, "%.2f")
        row("both ways, agent on 1 CPU: system CPU per GB, %s streams (s)" % streams,
            "e1cpu_c" + streams, "%.3f")
    for key, label in (("c1", "1 stream"), ("c" + streams, "%s streams" % streams)):
        try:
            d, b, u = (float(get(p, key)) for p in ("direct", "bpf", "userspace"))
        except (TypeError, ValueError):
            continue
        def hop(x):  # differences of two noisy figures: under 0.02 s/GB is zero
            return "%.3f" % x if x >= 0.02 else "~0"
        rows.append("| relay's own CPU per GB, %s (column - direct, s) | 0 | %s | %s | | | %s |" % (
            label, hop(b - d), hop(u - d),
            "n/a" if u - d < 0.02 else "~0x" if b - d < 0.02 else ratio(b - d, u - d)))
    for what, key in (("64 B round trip", "rtt"), ("connection setup", "setup")):
        d, b, u = (kv(get(p, key)) for p in ("direct", "bpf", "userspace"))
        for stat in ("min", "p50", "p99"):
            rows.append("| %s %s (us) | %s | %s | %s | %s | %s | %s |" % (what, stat,
                        d.get(stat, "n/a"), b.get(stat, "n/a"), u.get(stat, "n/a"),
                        ratio(b.get(stat), d.get(stat)), ratio(u.get(stat), d.get(stat)),
                        ratio(b.get(stat), u.get(stat))))
    return "\n".join(rows)

NOTES = """
### How to read it, and what the relay does with it

- **Many streams is the case that matters.** A Minecraft player moves well under 1 Mbit/s; a
  busy relay carries thousands of such connections, so the figures that decide the design are
  the many-stream ones: the bpf plane should reach the direct connection's throughput and spend
  far less of the relay's CPU per GB than the userspace plane (the "relay's own CPU" rows: the
  column minus the direct column, i.e. what the relay hop added to the machine's work). On the
  bpf plane the relay's process is out of the data path (its `pcpu` in the raw output is ~0).
- **One bulk stream is slower on the bpf plane, and this is why.** A redirect to a socket's
  egress is not sent in the softirq that received it: the kernel queues the skb on the peer's
  psock and a kernel worker sends it (`sk_psock_backlog`), so one stream is limited by one
  worker (measured here up to ~9 Gbit/s with no throttling, vs ~17 Gbit/s for splice(2)). On
  top of that the queue in front of the worker has no backpressure, so the relay bounds it
  (`--max-lag-mb`, default 64 MiB per connection, see docs/operators.md section 4.4): above
  4 MiB the sender's receive window is clamped to one MSS, above 32 MiB to 4 KiB. Over a real
  network one MSS per round trip is a strong brake and the second stage never comes; on
  loopback the MSS is 64 KiB and the round trip a few microseconds, so a same-host bulk sender
  reaches the second stage, is stopped, and only learns that its window was reopened from its
  next zero-window probe (~200 ms): that stop-and-go is what the 1-stream bpf figure measures.
  Raising `--max-lag-mb` trades memory for it (on this VM, one stream through the hop:
  64 MiB ~3-4 Gbit/s, 256 MiB ~6.5, 512 MiB ~8.7).
- **Why a bulk flow is not moved from the bpf plane to splice(2) while it runs.** The bytes
  already redirected wait in the peer socket's psock queue, and the kernel frees that queue when
  the socket leaves the sockmap: a switch would first have to stop the sender (the throttle's
  clamp), wait for the queue to drain, then remove both map entries and start splicing, a wait
  and two state changes per switch on the path of every throttled connection. The plane is
  therefore chosen per relay, and per pair only where the maps refuse one (below).
- **The policy.** `auto` and the default choose the bpf plane: Minecraft traffic is many
  low-rate streams, where it wins on CPU and latency and a single connection can never hold
  more than `--max-lag-mb` of relay memory. A relay whose traffic is a few bulk same-host
  streams (not the product's case) is better on `--dataplane userspace`, or with a larger
  `--max-lag-mb` where memory allows. Pairs the maps refuse (full, or already half-closed) are
  relayed with splice(2) whatever the plane.
- Connection setup through the relay includes routing the handshake (MSG_PEEK), taking a pooled
  data connection and, on the bpf plane, four map updates per pair; path (b) adds the agent's
  own connect to the local server, which is a whole TCP connection setup of its own (the direct
  column's is the only one it has), and the hand-off of the pair to a worker thread. Every byte
  of the whole path crosses three TCP connections each way instead of one, so about 3x the
  direct column's system CPU per GB is the floor of any relay of this shape.
- **The agent on every core.** The agent's main loop keeps the control channel, the pool and
  the local connects; each player's pair is handed to one of its worker threads (`--workers`,
  default one per CPU; the relay's userspace plane runs on the same pool code, common/spool.c).
  On this 2-vCPU machine the relay, the agent, the client and the echo server all share the
  two CPUs, so the 1-CPU row shows what pinning the agent costs, not a clean scaling figure.
"""

tables = {p: table(p) for p in ("hop", "relay", "whole")}
try:
    busy = max(float(load0), float(load1)) > float(ncpu)
except ValueError:
    busy = False
shared = (" (above %s: other work shared the machine, so the columns of this run are comparable and"
          " its absolute figures less so)" % ncpu) if busy else ""
section = f"""<!-- dp-bench:begin (generated by bench/run.sh; edits between the markers are overwritten) -->
## Data plane: the relay hop, the real relay, the whole path

Measured {datetime.date.today()} by `bench/run.sh` on loopback ({ncpu} vCPU, kernel {kernel}), throughput
windows of {dur} s after a 1 s warm-up, all three columns and all three paths in one run; load average
{load0} when it started, {load1} when it ended{shared}. Every
connection first sends a Minecraft login handshake (the relay routes by its hostname; the direct and
hop paths get the same bytes). Throughput counts what the sink received in the window; "system CPU per
GB" is machine-wide sys + irq + softirq time over the window divided by those bytes, so it includes
the client's and the sink's own kernel work (the same in every column); "relay's own CPU" is the
column minus direct. "Both ways" rows are a game's shape: the same bulk streams go to an echo
server (`dp_bench stream --echo 1`), the client reads everything back, "throughput back" is what
returned to it in the window (the other direction carried as much) and the CPU per GB is over the
bytes of both directions. Latency medians on a VM are dominated by wake-up noise: compare minimums and one
run's columns, not numbers across runs. The direct column is one measurement shared by the three
tables.

### (a) The relay hop alone

`bench/dp_bench.c relay`: accept, join the connection to an upstream one through the plane under
test, nothing else (no handshake parsing, no pool, no agent).

{tables["hop"]}

### (a') The real relay, with a fake agent

`build/dvv-relay` with `--dataplane bpf|userspace`; behind it `dp_bench fakeagent`, which speaks the
agent protocol (TLS control channel with a JWT HELLO, ATTACH, `DVVA` data connections, the `DVVP`
player header, through the project's own `common/ctlconn.c` and `common/proto.c`) and then sinks or
echoes the player's bytes itself: the relay's own cost, one hop.

{tables["relay"]}

### (b) The whole path: relay and agent

`build/dvv-relay` and the real agent `build/dvv` (`--local` at the same sink / echo server as the
direct column; the agent relays with splice(2) on its worker threads, one per CPU, whichever plane
the relay uses): what a player sees, two hops. "Agent on 1 CPU" rows: the same both-ways run with
every thread of the agent pinned to one CPU (`taskset -a`), against both CPUs in the row above it.

{tables["whole"]}

{{notes}}
<!-- dp-bench:end -->"""
section = section.replace("{notes}", NOTES.strip())
# Re-read the file right before writing: other sections may have changed meanwhile; only what
# lies between the markers is ours.
try:
    doc = open(out).read()
except FileNotFoundError:
    doc = "# Performance\n\nMeasured figures for DVV, each section generated or written by the tool named in it.\n\n"
if "<!-- dp-bench:begin" in doc:
    doc = re.sub(r"<!-- dp-bench:begin.*?<!-- dp-bench:end -->", lambda m: section, doc, count=1, flags=re.S)
else:
    doc = doc.rstrip("\n") + "\n\n" + section + "\n"
open(out, "w").write(doc)
for name, p in (("(a) relay hop alone", "hop"), ("(a') real relay + fake agent", "relay"),
                ("(b) whole path: relay + agent", "whole")):
    print("\n" + name + "\n" + tables[p])
EOF
echo "wrote $OUT"
