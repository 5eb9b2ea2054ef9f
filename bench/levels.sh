#!/usr/bin/env bash
# Load levels: one real dvv-relay (+ its own redis-server) under build/dvv-loadgen's agents and
# players, and what that costs. One command per level:
#
#   bench/levels.sh small   [--dataplane bpf|userspace] [--out FILE]   1k tunnels,  5k players
#   bench/levels.sh medium  ...                                       10k tunnels, 50k players
#   bench/levels.sh large   ...                                       50k tunnels, 200k players
#   bench/levels.sh tiny    ...                                       20 tunnels, 100 players
#   --relays K: split the level into K shards, each its own relay and loadgen on the one Redis
#   (for hosts whose per-process descriptor limit cannot hold one relay; the relay figures are
#   then the K relays' sums, the latency percentiles the worst shard's)
#
# The environment overrides the level's sizes: TUNNELS, PLAYERS, REG_RATE, JOIN_RATE, HOLD (s of
# steady state), SETTLE (s between the last registration and the first join), MSG_BYTES,
# INTERVAL_MS, THREADS (loadgen threads), DURATION (hard bound of the loadgen run, s).
#
# Recorded (a markdown section appended to --out, default /tmp/dvv-levels.md, and the raw data
# as JSON beside it, FILE.json):
#   - relay RSS and anonymous memory (/proc/PID/status, smaps_rollup) at three points: baseline
#     (relay up, nothing registered), tunnels only (after SETTLE), steady state (every player up)
#     -> userspace bytes per tunnel = (tunnels - baseline) / N, per player = (steady - tunnels)/M
#   - kernel socket memory: /proc/net/sockstat TCP "mem" (pages, the whole machine: the loadgen's
#     sockets count too, both ends are on this host) and `ss -tm` skmem totals of the relay's
#     own sockets at steady state
#   - CPU: relay, loadgen, redis (utime+stime from /proc/PID/stat, % of one core) and machine-wide
#     busy % (/proc/stat) over the register, join and steady phases
#   - Redis: commands/s (total_commands_processed delta per phase; instantaneous_ops_per_sec
#     peak) and used_memory at the end
#   - loadgen's figures: time to register all tunnels, join latency percentiles during the ramp
#     and at steady state (churned joins), errors by kind (must all be 0)
# Everything runs on loopback; the machine is shared with whatever else runs, so compare the
# figures of one run. Needs root (BPF; fd limits and fs.nr_open are raised for the run and put
# back), redis-server, redis-cli, python3, curl, ss. Cleans up (processes, pins, temp dir) on every
# exit path. Exit status: 0 when loadgen reported zero errors and every player up.
set -euo pipefail
cd "$(dirname "$0")/.."

LEVEL=${1:-}
shift || true
PLANE=bpf
OUT=/tmp/dvv-levels.md
RELAYS=${RELAYS:-1}
while (($#)); do
  case $1 in
    --dataplane) PLANE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --relays) RELAYS=$2; shift 2 ;;
    *) echo "usage: bench/levels.sh tiny|small|medium|large [--dataplane bpf|userspace] [--out FILE] [--relays K]"; exit 2 ;;
  esac
done
[[ $RELAYS =~ ^[0-9]+$ ]] && ((RELAYS >= 1 && RELAYS <= 64)) || { echo "levels.sh: --relays 1..64"; exit 2; }
case $LEVEL in
  tiny)   D_T=20;    D_P=100;    D_REG=200;  D_JOIN=500;  D_HOLD=5 ;;
  small)  D_T=1000;  D_P=5000;   D_REG=1000; D_JOIN=2000; D_HOLD=20 ;;
  medium) D_T=10000; D_P=50000;  D_REG=1000; D_JOIN=4000; D_HOLD=30 ;;
  large)  D_T=50000; D_P=200000; D_REG=1000; D_JOIN=4000; D_HOLD=30 ;;
  *) echo "usage: bench/levels.sh tiny|small|medium|large [--dataplane bpf|userspace] [--out FILE]"; exit 2 ;;
esac
[[ $PLANE == bpf || $PLANE == userspace ]] || { echo "levels.sh: --dataplane bpf|userspace"; exit 2; }
TUNNELS=${TUNNELS:-$D_T}
PLAYERS=${PLAYERS:-$D_P}
REG_RATE=${REG_RATE:-$D_REG}
JOIN_RATE=${JOIN_RATE:-$D_JOIN}
HOLD=${HOLD:-$D_HOLD}
SETTLE=${SETTLE:-5}
MSG_BYTES=${MSG_BYTES:-64}
INTERVAL_MS=${INTERVAL_MS:-1000}
THREADS=${THREADS:-2}
# registration + settle + joins + hold + slack, at the rates asked
DURATION=${DURATION:-$((TUNNELS / REG_RATE + SETTLE + PLAYERS / JOIN_RATE + HOLD + 120))}
B=build
TMP=$(mktemp -d /tmp/dvv-levels.XXXXXX)
INST=lvl-i12-load-$LEVEL-$PLANE-$$
PINS=()
PIDS=()
OLD_NR_OPEN=

cleanup() {
  local p i
  [[ -n ${SAMPLER_STOP:-} ]] && touch "$SAMPLER_STOP"
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill "${PIDS[i]}" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for i in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  for p in "${PINS[@]}"; do
    [[ -e $p ]] && { echo "levels.sh: removing pins left in $p"; rm -rf -- "$p"; }
  done
  [[ -n $OLD_NR_OPEN ]] && sysctl -qw fs.nr_open="$OLD_NR_OPEN" 2>/dev/null || true
  if [[ -n ${KEEP_LOGS:-} ]]; then echo "levels.sh: logs kept in $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[[ $(id -u) -eq 0 ]] || { echo "levels.sh: needs root (BPF, fd limits)"; exit 1; }
for c in redis-server redis-cli python3 curl ss; do
  command -v "$c" >/dev/null || { echo "levels.sh: needs $c (scripts/setup.sh)"; exit 1; }
done

echo "== build (release)"
make -s -j"$(nproc)" $B/dvv-relay $B/dvv-loadgen

# Each of the relay and the loadgen holds ~5 descriptors per tunnel (control + ~4 pooled data
# connections, measured at small) and 2 per player; the relay's userspace plane 4 more per player
# (two splice pipes). Refuse a level this process tree cannot hold rather than measure descriptor
# exhaustion.
PER_PLAYER=2
[[ $PLANE == userspace ]] && PER_PLAYER=6
# With --relays K the level is split into K shards, each a relay and a loadgen of its own (on one
# Redis): the same load on this machine, for hosts whose per-process descriptor limit is too low
# for one relay (its figures are then K relays' sums, not one relay's).
ST=$(((TUNNELS + RELAYS - 1) / RELAYS)) SP=$(((PLAYERS + RELAYS - 1) / RELAYS))
FDS=$((5 * ST + PER_PLAYER * SP + 1000))
# Both processes raise their soft limit to the hard one; the hard one (and fs.nr_open, put back
# on exit) is raised here when the kernel lets us.
cur=$(cat /proc/sys/fs/nr_open)
if ((cur < FDS)); then OLD_NR_OPEN=$cur; sysctl -qw fs.nr_open="$FDS" || OLD_NR_OPEN=; fi
if (($(ulimit -Hn) < FDS)); then
  ulimit -Hn "$(cat /proc/sys/fs/nr_open)" 2>/dev/null || true # needs CAP_SYS_RESOURCE
fi
ulimit -Sn "$(ulimit -Hn)"
if (($(ulimit -Hn) < FDS)); then
  echo "levels.sh: $LEVEL needs about $FDS descriptors per process (relay and loadgen each);" \
    "the hard RLIMIT_NOFILE here is $(ulimit -Hn) and cannot be raised (no CAP_SYS_RESOURCE?)." \
    "Run it where 'ulimit -Hn $FDS' works, split it with --relays K, or set TUNNELS/PLAYERS."
  exit 3
fi

read -r P_REDIS PORTS < <(python3 -c '
import socket, sys
ss = [socket.socket() for _ in range(1 + 4 * int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$RELAYS")
read -r -a PA <<<"$PORTS" # relay k: player PA[3k], agent PA[3k+1], admin PA[3k+2]; internal IA[k]
IA=("${PA[@]:$((3 * RELAYS))}")

echo "== keys, redis, $RELAYS relay(s) ($PLANE, instance $INST; logs in $TMP)"
bash scripts/mkkeys.sh "$TMP/keys" >/dev/null
K=$TMP/keys
mkdir -p "$TMP/redis"
redis-server --port "$P_REDIS" --bind 127.0.0.1 --save '' --appendonly no --dir "$TMP/redis" \
  --daemonize no --protected-mode no --loglevel warning >"$TMP/redis.log" 2>&1 &
PIDS+=($!)
REDIS_PID=$!
for i in $(seq 1 100); do
  redis-cli -p "$P_REDIS" ping 2>/dev/null | grep -q PONG && break
  ((i < 100)) || { echo "levels.sh: redis did not start"; cat "$TMP/redis.log"; exit 1; }
  sleep 0.1
done

# All load comes from this host: the per-source limits are lifted (as tests/e2e/harness.mjs
# LOOPBACK_LIMITS does), and the relay-wide admission rates and caps are raised to the level;
# placement never moves an agent to another of our relays. With several relays, forwarding between
# them is on (--internal-listen, one cluster secret): a relay cut from Redis longer than the lease
# MOVEs its agents to another relay, and the players of those tunnels, who keep dialling their
# shard's relay, are then forwarded to it (without forwarding they would hear "reconnecting").
RELAY_PIDS=()
FWD=()
if ((RELAYS > 1)); then
  export DVV_CLUSTER_SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
fi
PINS=()
for ((k = 0; k < RELAYS; k++)); do
  inst=$INST; ((RELAYS > 1)) && inst=$INST-$k
  PINS+=("/sys/fs/bpf/dvv/$inst")
  ((RELAYS > 1)) && FWD=(--internal-listen "127.0.0.1:${IA[k]}")
  $B/dvv-relay --player-listen "127.0.0.1:${PA[3 * k]}" --agent-listen "127.0.0.1:${PA[3 * k + 1]}" \
    --admin-listen "127.0.0.1:${PA[3 * k + 2]}" --redis "127.0.0.1:$P_REDIS" --region eu \
    --base-domain dvv.test --tls-cert "$K/relay.pem" --tls-key "$K/relay.key" \
    --jwt-pubkey "$K/jwt.pub" --jwt-issuer dvv --jwt-audience dvv-relay --instance-id "$inst" \
    --dataplane "$PLANE" --drain-timeout-s 1 --log-level "${RELAY_LOG_LEVEL:-warn}" \
    --join-rate-v4 1000000 --join-rate-v6 1000000 --join-burst 1000000 \
    --max-pending-per-source 1000000 --agent-unauth-per-source 1000000 \
    --agent-unauth-max 1000000 --agent-tls-rate 100000 --agent-reg-rate 100000 \
    --max-tunnels $((ST + 1000)) --capacity $((4 * ST + SP + 1000)) --placement-margin 1000000 \
    --max-handshakes 100000 "${FWD[@]}" >"$TMP/relay-$k.log" 2>&1 &
  PIDS+=($!)
  RELAY_PIDS+=($!)
done
for ((k = 0; k < RELAYS; k++)); do
  for i in $(seq 1 200); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 1 \
      "http://127.0.0.1:${PA[3 * k + 2]}/readyz" || true) == 200 ]] && break
    if ! kill -0 "${RELAY_PIDS[k]}" 2>/dev/null || ((i == 200)); then
      echo "levels.sh: dvv-relay $k not ready:"; tail -20 "$TMP/relay-$k.log"; exit 1
    fi
    sleep 0.1
  done
done
RELAY_PID=${RELAY_PIDS[0]}

# Sampler: once a second, everything the report needs, as JSON lines.
SAMPLER_STOP=$TMP/sampler.stop
python3 - "$TMP/samples.jsonl" "$SAMPLER_STOP" "$(IFS=,; echo "${RELAY_PIDS[*]}")" "$REDIS_PID" \
  "$P_REDIS" <<'EOF' &
import json, os, subprocess, sys, time
out, stop, relay, redis, rport = sys.argv[1:6]
def stat(pids):  # utime + stime ticks, summed over a comma-separated pid list
    t = 0
    for pid in pids.split(","):
        try:
            f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            t += int(f[11]) + int(f[12])
        except Exception:
            return None
    return t
def status(pids):
    d = {}
    for pid in pids.split(","):
        try:
            for l in open(f"/proc/{pid}/status"):
                if l.startswith(("VmRSS", "RssAnon", "VmHWM")):
                    k, v = l.split(":"); d[k] = d.get(k, 0) + int(v.split()[0]) * 1024
        except Exception:
            pass
    return d
def cpu():
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(f), f[3] + f[4]
def sockstat():
    for l in open("/proc/net/sockstat"):
        if l.startswith("TCP:"):
            p = l.split()
            return {p[i]: int(p[i + 1]) for i in range(1, len(p) - 1, 2)}
    return {}
def rinfo():
    try:
        s = subprocess.run(["redis-cli", "-p", rport, "info"], capture_output=True, text=True, timeout=5).stdout
    except Exception:
        return {}
    d = {}
    for l in s.splitlines():
        if ":" in l:
            k, v = l.split(":", 1)
            if k in ("total_commands_processed", "instantaneous_ops_per_sec", "used_memory", "connected_clients"):
                d[k] = int(v)
    return d
lg = None
with open(out, "w") as o:
    while not os.path.exists(stop):
        if lg is None and os.path.exists(stop + ".lg"):
            lg = open(stop + ".lg").read().strip()
        tot, idle = cpu()
        o.write(json.dumps({"t": int(time.time() * 1000), "cpu_total": tot, "cpu_idle": idle,
            "relay": stat(relay), "redis": stat(redis), "loadgen": stat(lg) if lg else None,
            "relay_mem": status(relay), "tcp": sockstat(), "rinfo": rinfo()}) + "\n")
        o.flush()
        time.sleep(1)
EOF
PIDS+=($!)

snap() { # snap NAME: relay memory (every relay) and socket totals at one moment
  { echo "== $1 $(date +%s%3N)"
    for p in "${RELAY_PIDS[@]}"; do cat "/proc/$p/status" "/proc/$p/smaps_rollup"; done
    cat /proc/net/sockstat; grep -E '^(Slab|SUnreclaim):' /proc/meminfo; } >"$TMP/snap-$1.txt"
}
sleep 2
snap baseline

echo "== loadgen: $TUNNELS tunnels at $REG_RATE/s, $PLAYERS players at $JOIN_RATE/s, hold ${HOLD}s, bound ${DURATION}s, $RELAYS shard(s)"
LG_PIDS=()
LG_THREADS=$THREADS; ((RELAYS > 1)) && LG_THREADS=1
for ((k = 0; k < RELAYS; k++)); do
  t0=$((k * ST)) p0=$((k * SP))
  nt=$((TUNNELS - t0 < ST ? TUNNELS - t0 : ST)) np=$((PLAYERS - p0 < SP ? PLAYERS - p0 : SP))
  ((nt > 0)) || break
  $B/dvv-loadgen --agent-port "${PA[3 * k + 1]}" --player-port "${PA[3 * k]}" --ca "$K/ca.pem" \
    --jwt-key "$K/jwt.key" --tunnels "$nt" --players "$((np < 0 ? 0 : np))" \
    --reg-rate "$(python3 -c "print($REG_RATE / $RELAYS)")" \
    --join-rate "$(python3 -c "print($JOIN_RATE / $RELAYS)")" --hold "$HOLD" --settle "$SETTLE" \
    --msg-bytes "$MSG_BYTES" --interval-ms "$INTERVAL_MS" --threads "$LG_THREADS" \
    --duration "$DURATION" --tid-prefix "lgt$k-" --sub-prefix "lgu$k-" --tunnel-offset "$t0" \
    --player-offset "$p0" >"$TMP/loadgen-$k.json" 2>"$TMP/loadgen-$k.log" &
  PIDS+=($!)
  LG_PIDS+=($!)
done
(IFS=,; echo "${LG_PIDS[*]}") >"$SAMPLER_STOP.lg"
NLG=${#LG_PIDS[@]}
tail -qF "$TMP/loadgen-0.log" 2>/dev/null | grep --line-buffered -v '^loadgen: player' >&2 &
TAIL_PID=$!
PIDS+=($TAIL_PID)
in_phase() { # every loadgen has printed a progress line in phase $1
  local n; n=$(grep -l "phase=$1" "$TMP"/loadgen-*.log 2>/dev/null | wc -l)
  ((n == NLG))
}
alive() { local p; for p in "${LG_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
# the two memory points: after the tunnels settled (before any join), and at steady state
took_tunnels= took_steady=
RELAY_SS_FILTER=$(for ((k = 0; k < RELAYS; k++)); do
  printf '%ssport = :%s or sport = :%s' "$( ((k)) && echo ' or ')" "${PA[3 * k]}" "${PA[3 * k + 1]}"; done)
while alive; do
  if [[ -z $took_tunnels ]] && in_phase settle; then
    sleep $((SETTLE > 2 ? SETTLE - 2 : 0)); snap tunnels; took_tunnels=1
  fi
  if [[ -z $took_steady ]] && in_phase steady; then
    redis-cli -p "$P_REDIS" info commandstats >"$TMP/commandstats-steady.txt" 2>/dev/null || true
    date +%s%3N >"$TMP/commandstats-steady.t"
    sleep $((HOLD / 2)); snap steady; took_steady=1
    redis-cli -p "$P_REDIS" info commandstats >"$TMP/commandstats-steady2.txt" 2>/dev/null || true
    date +%s%3N >"$TMP/commandstats-steady2.t"
    curl -s --max-time 5 "http://127.0.0.1:${PA[2]}/metrics" >"$TMP/metrics-steady.txt" || true
    # the relays' own sockets: accepted ones have a relay's player or agent port as local port
    ss -tmnH "( $RELAY_SS_FILTER )" 2>/dev/null | python3 -c '
import re, sys
c = s = 0
for l in sys.stdin:
    m = re.search(r"skmem:\(([^)]*)\)", l)
    if m:
        c += 1
        s += sum(int(v[len(k):]) for v in m.group(1).split(",") for k in ("r", "t", "f", "w", "o", "bl")
                 if re.fullmatch(k + r"\d+", v))
print(f"relay_sockets={c} skmem_bytes={s}")' >"$TMP/ss.txt" || true
  fi
  sleep 0.5
done
LG_RC=0
for p in "${LG_PIDS[@]}"; do wait "$p" || LG_RC=1; done
kill "$TAIL_PID" 2>/dev/null || true
curl -s --max-time 5 "http://127.0.0.1:${PA[2]}/metrics" >"$TMP/metrics.txt" || true
redis-cli -p "$P_REDIS" info commandstats >"$TMP/commandstats.txt" 2>/dev/null || true
touch "$SAMPLER_STOP"
sleep 1.5

echo "== report -> $OUT"
python3 - "$TMP" "$OUT" "$LEVEL" "$PLANE" "$TUNNELS" "$PLAYERS" "$LG_RC" "$REG_RATE" "$JOIN_RATE" \
  "$MSG_BYTES" "$INTERVAL_MS" "$HOLD" "$NLG" <<'EOF'
import json, os, re, sys, datetime
tmp, out, level, plane, N, M, rc, reg_rate, join_rate, msg, ival, hold, shards = sys.argv[1:14]
N, M, shards = int(N), int(M), int(shards)
parts = []
for k in range(shards):
    p = f"{tmp}/loadgen-{k}.json"
    if os.path.exists(p) and os.path.getsize(p):
        parts.append(json.load(open(p)))
# one summary from the shards: counts add up; times and phase ends are the latest, phase starts
# the earliest; a latency percentile is the worst shard's (an upper bound when shards > 1)
lg = {}
if parts:
    lg = dict(parts[0])
    for k in ("tunnels_up", "players_up", "joins", "reg_busy", "pool_retired", "data_opened",
              "msgs_tx", "msgs_rx", "errors_total", "moves", "migrations", "migrated",
              "join_reconnecting"):
        lg[k] = sum(x.get(k, 0) for x in parts)
    lg["errors"] = {e: sum(x["errors"].get(e, 0) for x in parts) for e in parts[0]["errors"]}
    lg["register_s"] = max(x["register_s"] for x in parts)
    w = [x["wall_ms"] for x in parts]
    lg["wall_ms"] = {"start": min(x["start"] for x in w), "registered": max(x["registered"] for x in w),
                     "joining": max(x["joining"] for x in w), "players_up": max(x["players_up"] for x in w),
                     "drain": min(x["drain"] for x in w)}
    for d in ("register_latency", "join_latency_ramp", "join_latency_steady"):
        ds = [x[d] for x in parts if x[d].get("n")]
        lg[d] = {"n": sum(x[d]["n"] for x in parts)}
        for q in ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"):
            if ds: lg[d][q] = max(x[q] for x in ds)
S = [json.loads(l) for l in open(f"{tmp}/samples.jsonl") if l.strip()]
tck = os.sysconf("SC_CLK_TCK")
def snap(name):
    d = {}
    try:
        for l in open(f"{tmp}/snap-{name}.txt"):
            m = re.match(r"(VmRSS|RssAnon|Anonymous|Rss|Pss):\s+(\d+) kB", l)
            if m: d[m.group(1)] = d.get(m.group(1), 0) + int(m.group(2)) * 1024
            m = re.match(r"TCP: inuse (\d+) orphan \d+ tw \d+ alloc (\d+) mem (\d+)", l)
            if m: d["tcp_inuse"], d["tcp_alloc"], d["tcp_mem_pages"] = map(int, m.groups())
            m = re.match(r"(Slab|SUnreclaim):\s+(\d+) kB", l)
            if m: d[m.group(1)] = int(m.group(2)) * 1024
    except FileNotFoundError:
        pass
    return d
base, tun, st = snap("baseline"), snap("tunnels"), snap("steady")
w = lg.get("wall_ms", {})
phases = [("register", w.get("start"), w.get("registered")),
          ("join", w.get("joining"), w.get("players_up")),
          ("steady", w.get("players_up"), w.get("drain"))]
def window(a, b):
    if not a or not b: return None
    xs = [s for s in S if a <= s["t"] <= b]
    if len(xs) < 2: return None
    x, y = xs[0], xs[-1]
    dt = (y["t"] - x["t"]) / 1000
    def pc(k):
        if x.get(k) is None or y.get(k) is None: return None
        return 100.0 * (y[k] - x[k]) / tck / dt
    busy = 100.0 * (1 - (y["cpu_idle"] - x["cpu_idle"]) / max(1, y["cpu_total"] - x["cpu_total"]))
    cmds = (y["rinfo"].get("total_commands_processed", 0) - x["rinfo"].get("total_commands_processed", 0)) / dt
    peak = max(s["rinfo"].get("instantaneous_ops_per_sec", 0) for s in xs)
    return {"s": dt, "relay_pct": pc("relay"), "loadgen_pct": pc("loadgen"), "redis_pct": pc("redis"),
            "machine_busy_pct": busy, "redis_cmds_per_s": cmds, "redis_peak_ops": peak}
W = {n: window(a, b) for n, a, b in phases}
ss = {}
try:
    ss = dict(kv.split("=") for kv in open(f"{tmp}/ss.txt").read().split())
except Exception:
    pass
R = {"level": level, "plane": plane, "tunnels": N, "players": M, "loadgen_rc": int(rc),
     "loadgen": lg, "mem": {"baseline": base, "tunnels": tun, "steady": st}, "phases": W,
     "relay_ss": ss, "redis_used_memory_end": (S[-1]["rinfo"].get("used_memory") if S else None)}
def per(a, b, n, k):
    return (b[k] - a[k]) / n if n and k in a and k in b else None
R["bytes_per_tunnel_rss"] = per(base, tun, N, "VmRSS")
R["bytes_per_tunnel_anon"] = per(base, tun, N, "RssAnon")
R["bytes_per_player_rss"] = per(tun, st, M, "VmRSS")
R["bytes_per_player_anon"] = per(tun, st, M, "RssAnon")
R["tcp_mem_bytes_steady"] = st.get("tcp_mem_pages", 0) * 4096
f = lambda v, d=1: "n/a" if v is None else f"{v:,.{d}f}"
lat = lambda k: lg.get(k, {})
errs = lg.get("errors", {})
relays_arg = f" --relays {shards}" if shards > 1 else ""
lines = []
lines.append(f"### {level}: {N:,} tunnels, {M:,} players, {plane} plane" +
             (f", {shards} relays (one shard each)" if shards > 1 else "") + f" ({datetime.date.today()})\n")
lines.append(f"`bench/levels.sh {level} --dataplane {plane}{relays_arg}` on {os.cpu_count()} vCPU, "
             f"{round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB, "
             f"kernel {os.uname().release}; machine shared with other work. Registration at {reg_rate}/s, "
             f"joins at {join_rate}/s, {msg} B each way every {ival} ms per player, {hold} s steady. "
             f"loadgen exit {rc}.\n")
lines.append("| figure | value |\n|---|---|")
row = lambda k, v: lines.append(f"| {k} | {v} |")
row("tunnels up / players up at the end", f"{lg.get('tunnels_up','?'):,} / {lg.get('players_up','?'):,}")
row("errors (all kinds)", f"{lg.get('errors_total','?')}" + ("" if not lg.get("errors_total") else " " + json.dumps({k: v for k, v in errs.items() if v})))
row("time to register all tunnels (s)", f(lg.get("register_s"), 2))
rl = lat("register_latency")
row("registration latency p50 / p99 (ms)", f"{f(rl.get('p50_ms'),2)} / {f(rl.get('p99_ms'),2)}")
for k, name in (("join_latency_ramp", "join latency, ramp"), ("join_latency_steady", "join latency, steady (churn)")):
    d = lat(k)
    row(f"{name}: n, p50 / p90 / p99 / p99.9 / max (ms)",
        f"{d.get('n',0):,}: {f(d.get('p50_ms'),2)} / {f(d.get('p90_ms'),2)} / {f(d.get('p99_ms'),2)} / {f(d.get('p999_ms'),2)} / {f(d.get('max_ms'),2)}")
row("relay RSS baseline / tunnels only / steady (MiB)",
    " / ".join(f(x.get("VmRSS", 0) / 2**20) for x in (base, tun, st)))
row("relay userspace bytes per tunnel (RSS, anon delta)", f"{f(R['bytes_per_tunnel_rss'],0)}, {f(R['bytes_per_tunnel_anon'],0)}")
row("relay userspace bytes per player (RSS, anon delta)", f"{f(R['bytes_per_player_rss'],0)}, {f(R['bytes_per_player_anon'],0)}")
row("kernel TCP memory, whole machine, steady (MiB; sockstat)", f(R["tcp_mem_bytes_steady"] / 2**20))
row("TCP sockets in use, whole machine, steady", f"{st.get('tcp_inuse',0):,}")
if "Slab" in base and "Slab" in st and st.get("tcp_alloc", 0) > base.get("tcp_alloc", 0):
    R["slab_bytes_per_socket"] = (st["Slab"] - base["Slab"]) / (st["tcp_alloc"] - base["tcp_alloc"])
    row("kernel slab per TCP socket, whole machine (Slab delta / sockets delta, bytes)",
        f(R["slab_bytes_per_socket"], 0))
if ss:
    row("relay's sockets at steady (ss -tm): count, skmem sum (MiB)",
        f"{int(ss.get('relay_sockets',0)):,}, {f(int(ss.get('skmem_bytes',0)) / 2**20)}")
for n in ("register", "join", "steady"):
    x = W.get(n)
    if not x: continue
    row(f"CPU {n} ({f(x['s'],0)} s): relay / loadgen / redis (% of a core), machine busy %",
        f"{f(x['relay_pct'])} / {f(x['loadgen_pct'])} / {f(x['redis_pct'])}, {f(x['machine_busy_pct'])}")
    row(f"Redis {n}: commands/s (mean), peak instantaneous ops/s",
        f"{f(x['redis_cmds_per_s'],0)}, {x['redis_peak_ops']:,}")
cs = []
try:
    for l in open(f"{tmp}/commandstats.txt"):
        m = re.match(r"cmdstat_(\w+):calls=(\d+)", l)
        if m: cs.append((int(m.group(2)), m.group(1)))
except FileNotFoundError:
    pass
cs.sort(reverse=True)
R["redis_commandstats"] = {k: v for v, k in cs}
if cs:
    row("Redis commands over the whole run, most called", ", ".join(f"{k} {v:,}" for v, k in cs[:6]))
def cstats(name):
    d = {}
    try:
        for l in open(f"{tmp}/{name}.txt"):
            m = re.match(r"cmdstat_(\w+):calls=(\d+)", l)
            if m: d[m.group(1)] = int(m.group(2))
        return d, int(open(f"{tmp}/{name}.t").read()) / 1000
    except (FileNotFoundError, ValueError):
        return None, None
(c1, t1), (c2, t2) = cstats("commandstats-steady"), cstats("commandstats-steady2")
if c1 is not None and c2 is not None and t2 > t1 and N:
    # commands inside scripts count under their own names (hget, hincrby, ...) as well as evalsha
    d = sorted(((c2.get(k, 0) - c1.get(k, 0)) / (t2 - t1) / N, k) for k in c2)
    d = [(v, k) for v, k in reversed(d) if v > 0]
    R["redis_steady_calls_per_tunnel_s"] = {k: v for v, k in d}
    row(f"Redis at steady state ({f(t2 - t1, 0)} s): calls per tunnel per second, by command",
        ", ".join(f"{k} {v:.3f}" for v, k in d[:8]))
if lg.get("moves") or lg.get("migrations"):
    row("agents moved: placement MOVEs / make-before-break migrations (completed) / players answered 'reconnecting'",
        f"{lg.get('moves',0)} / {lg.get('migrations',0)} ({lg.get('migrated',0)}) / {lg.get('join_reconnecting',0)}")
row("Redis used_memory at the end (MiB)", f((R["redis_used_memory_end"] or 0) / 2**20))
bw = M * int(msg) * 2 * 1000 / int(ival)
row("player payload, both directions (kB/s)", f(bw / 1000))
lines.append("")
with open(out + ".json", "a") as o:
    o.write(json.dumps(R) + "\n")
with open(out, "a") as o:
    o.write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
echo "levels.sh: loadgen exit $LG_RC"
exit "$LG_RC"
