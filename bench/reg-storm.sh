#!/usr/bin/env bash
# Registration storm: N agents registering with one dvv-relay at once (round 1: first
# registration of every tunnel), then all disconnecting and reconnecting at once (round 2: the
# reconnect storm, every tunnel keeps its name), with the relay pinned to 1 and then 2 cores.
# Measures per round: time until all are registered, registrations/s, refusals, Redis commands
# per registration (every command the relay sends, from MONITOR, minus the background rate of
# the 2 s before the round; commands inside scripts are not counted, a script is one command;
# the usage flush is set to 10 min so its batched per-user EVAL stays out of the count), relay
# CPU seconds and peak RSS, and the client's CPU (it shares the machine's cores).
#
#   bench/reg-storm.sh                 N = 2000 5000 10000, relay on 1 and 2 cores
#   NS="2000" CORES="2" bench/reg-storm.sh
#   RELAY_ARGS="--agent-reg-rate 200" bench/reg-storm.sh   (extra relay flags, e.g. old limits)
#   RELAY_BIN=/path/to/other/dvv-relay bench/reg-storm.sh   (another build, e.g. an older commit)
#
# The relay gets --capacity 1000000: at the default (20000 load units, 4 per tunnel) a relay
# past 0.9 of it sends free-plan agents elsewhere from about 4,500 tunnels on, which is
# placement working, not registration speed.
#
# Everything runs on loopback: its own redis-server (no persistence) on a free port, its own
# dvv-relay (userspace plane, instance reg-storm-<pid>-...), bench/reg_storm.c as the agents
# from 127.91.x.y source addresses. Each round is bounded (DEADLINE_S, default 120 s); the
# trap stops everything this script started on every exit path.
set -euo pipefail
cd "$(dirname "$0")/.."
B=build
NS=${NS:-"2000 5000 10000"}
CORES=${CORES:-"1 2"}
DEADLINE_S=${DEADLINE_S:-120}
SOURCES=${SOURCES:-200}
# One run per agent count, each with its own Redis, relay and temporary directory.
read -r -a ns_list <<<"$NS"
if ((${#ns_list[@]} > 1)); then
	for n in "${ns_list[@]}"; do NS=$n bash "$0" || exit; done
	exit 0
fi
TMP=$(mktemp -d /tmp/dvv-reg-storm.XXXXXX)
PIDS=()

cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	if [[ -n ${KEEP_LOGS:-} ]]; then echo "logs kept in $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for c in redis-server redis-cli python3 curl taskset; do
	command -v "$c" >/dev/null || { echo "bench/reg-storm.sh: needs $c"; exit 1; }
done
ulimit -n "$(ulimit -Hn)" # 10,000 agents need 10,000+ descriptors in each process

echo "== build (release)"
make -s -j2 $B/librelay.a $B/libdvv.a $B/libagent.a $B/dvv-relay
cc -std=gnu11 -O2 -g -Wall -Wextra -Werror -Wno-unused-parameter -D_GNU_SOURCE -Icommon \
	-Iuserspace -Iclient -I$B/gen -o $B/reg_storm bench/reg_storm.c $B/libagent.a \
	$B/librelay.a $B/libdvv.a -lbpf -lelf -lz -lssl -lcrypto -ljwt -ljansson -lhiredis \
	-lmicrohttpd -lpthread

bash scripts/mkkeys.sh "$TMP/keys" >/dev/null
K=$TMP/keys
read -r P_REDIS < <(python3 -c 'import socket
s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$P_REDIS" --bind 127.0.0.1 --save '' --appendonly no \
	--maxclients 1000 --logfile "$TMP/redis.log" &
PIDS+=($!)
for _ in $(seq 1 50); do redis-cli -p "$P_REDIS" ping >/dev/null 2>&1 && break; sleep 0.1; done

rcli() { redis-cli -p "$P_REDIS" "$@"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hwm_kib() { sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$1/status"; }

RESULTS=()
for n in $NS; do
	for cores in $CORES; do
		cpus=0
		((cores > 1)) && cpus=0-$((cores - 1))
		rcli flushall >/dev/null
		read -r P_AGENT P_PLAYER P_ADMIN < <(python3 -c 'import socket
ss=[socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1",0))
print(*[s.getsockname()[1] for s in ss])')
		inst=reg-storm-$$-$n-$cores
		log=$TMP/relay-$n-$cores.log
		# shellcheck disable=SC2086 # RELAY_ARGS is a list of flags
		taskset -c "$cpus" "${RELAY_BIN:-$B/dvv-relay}" --player-listen "127.0.0.1:$P_PLAYER" \
			--agent-listen "127.0.0.1:$P_AGENT" --admin-listen "127.0.0.1:$P_ADMIN" \
			--redis "127.0.0.1:$P_REDIS" --region eu --base-domain dvv.test \
			--tls-cert "$K/relay.pem" --tls-key "$K/relay.key" --jwt-pubkey "$K/jwt.pub" \
			--jwt-issuer dvv --jwt-audience dvv-relay --instance-id "$inst" \
			--dataplane userspace --log-level warn \
			--join-rate-v4 1000000 --join-rate-v6 1000000 --join-burst 1000000 \
			--max-pending-per-source 1000000 --agent-unauth-per-source 1000000 \
			--usage-flush-ms 600000 --capacity 1000000 \
			${RELAY_ARGS:-} >"$log" 2>&1 &
		relay=$!
		PIDS+=($relay)
		for i in $(seq 1 100); do
			[[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 1 \
				"http://127.0.0.1:$P_ADMIN/readyz" || true) == 200 ]] && break
			kill -0 "$relay" 2>/dev/null && ((i < 100)) || {
				echo "bench/reg-storm.sh: dvv-relay not ready:"; tail -20 "$log"; exit 1; }
			sleep 0.1
		done
		# every command a client sends, timestamped (commands run inside scripts show as
		# "lua" and are not counted: a script is one command)
		rcli monitor >"$TMP/monitor-$n-$cores.log" 2>/dev/null &
		mon=$!
		PIDS+=($mon)
		echo "== N=$n, relay on $cores core(s) (cpus $cpus)"
		coproc STORM { exec timeout $((3 * DEADLINE_S + 120)) $B/reg_storm --relay "$P_AGENT" \
			--ca "$K/ca.pem" --jwt-key "$K/jwt.key" --n "$n" --sources "$SOURCES" \
			--rounds 2 --deadline-s "$DEADLINE_S" --tag "s$$x$n"; }
		storm=$STORM_PID sout=${STORM[0]} sin=${STORM[1]}
		PIDS+=($storm)
		for round in 1 2; do
			line=
			while read -r -u "$sout" line; do
				[[ $line == waiting* ]] && break
				echo "   $line"
			done
			[[ $line == waiting* ]] || { echo "bench/reg-storm.sh: reg_storm ended early"; exit 1; }
			# background Redis traffic (heartbeat, renewals, events, usage) over 1 s
			sleep 1 # let the previous round's closes settle
			b0=$(date +%s.%N); sleep 2
			t0=$(cpu_ticks "$relay"); s0=$(date +%s.%N)
			echo go >&"$sin"
			read -r -u "$sout" res
			s1=$(date +%s.%N); t1=$(cpu_ticks "$relay")
			hwm=$(hwm_kib "$relay")
			echo "   $res"
			sleep 0.5 # MONITOR's output reaches its file
			row=$(python3 - "$n" "$cores" "$round" "$res" "$b0" "$t0" "$t1" \
				"$s0" "$s1" "$hwm" "$(getconf CLK_TCK)" "$TMP/monitor-$n-$cores.log" <<-'EOF'
			import re, sys, collections
			n, cores, rnd, res = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
			b0, t0, t1 = float(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
			s0, s1, hwm, hz = float(sys.argv[8]), float(sys.argv[9]), int(sys.argv[10]), int(sys.argv[11])
			kv = dict(x.split("=", 1) for x in res.split())
			reg = int(kv["registered"])
			# commands sent by the relay: in the round, and in the 2 s before it (background:
			# heartbeat, renewals, events), scaled to the round's length
			line = re.compile(r'^(\d+\.\d+) \[\d+ ([^\]]+)\] "([A-Za-z]+)"')
			inround, bg = collections.Counter(), 0
			for l in open(sys.argv[12], errors="replace"):
			    m = line.match(l)
			    if not m or m.group(2) == "lua" or m.group(3).upper() in ("INFO", "MONITOR", "FLUSHALL", "PING"):
			        continue
			    ts = float(m.group(1))
			    if s0 <= ts <= s1:
			        inround[m.group(3).upper()] += 1
			    elif b0 <= ts < s0:
			        bg += 1
			bg_round = bg / (s0 - b0) * (s1 - s0)
			cmds = (sum(inround.values()) - bg_round) / reg if reg else 0
			mix = " ".join(f"{k}:{v / reg:.2f}" for k, v in sorted(inround.items())) if reg else ""
			print(f"   Redis commands in the round per registration: {mix} (background {bg_round / max(reg, 1):.2f})", file=sys.stderr)
			cpu = (t1 - t0) / hz
			print(f"| {n} | {'first' if rnd == '1' else 'reconnect'} | {cores} | {reg}/{n} | "
			      f"{kv['seconds']} | {kv['regs_per_s']} | {kv['busy']} busy, "
			      f"{kv['closed_without_error']} closed | {cmds:.2f} | {cpu:.1f} | "
			      f"{cpu * 1e3 / reg if reg else 0:.2f} | {hwm / 1024:.0f} | "
			      f"{int(kv['cpu_ms']) / 1000:.1f} |")
			EOF
			)
			RESULTS+=("$row")
		done
		wait "$storm" || echo "   (a round missed its ${DEADLINE_S} s deadline)"
		kill "$relay" "$mon" 2>/dev/null || true
		wait "$relay" "$mon" 2>/dev/null || true
	done
done

echo
echo "| agents | round | relay cores | registered | seconds | registrations/s | refusals | Redis commands / registration | relay CPU s | relay CPU ms / registration | relay peak RSS MiB | client CPU s |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${RESULTS[@]}"
