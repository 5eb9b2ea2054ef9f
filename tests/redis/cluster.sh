#!/usr/bin/env bash
# userspace/rcluster.c against real Redis: a throwaway 6-node Redis Cluster (3 primaries, 3
# replicas) and a throwaway standalone server, all on loopback ports chosen free, in a temp dir,
# always torn down. Builds the ASan+UBSan archives if needed and compiles tests/redis/rc_driver.c
# against them (RC_DRIVER=path uses a prebuilt driver instead).
#
#   tests/redis/cluster.sh            prints cmocka-style lines, exits non-zero on failure
#   BUILD=build tests/redis/cluster.sh   without sanitizers
#
# Tests: every slot written and read back + EVAL on one hash tag (cluster and standalone); a slot
# migrated while writing (ASK, then MOVED); kill -9 of a primary mid-stream (writes resume on
# the promoted replica, no acknowledged write lost); kill -9 + restart of the standalone server
# (AOF, fsync always). Takes ~40 s.
set -uo pipefail
cd "$(dirname "$0")/../.."

BUILD=${BUILD:-build-san}
[[ $BUILD == build-san ]] && SAN=1 || SAN=0
CC=${CC:-cc}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=23}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

tmp=$(mktemp -d /tmp/dvv-rcluster.XXXXXX)
# Every server is daemonized with $tmp/<port>/redis.pid. A pid is killed only if it still is
# our redis-server on that port (a node killed by a test may have its pid reused by then).
kill_servers() {
  local f pid port
  for f in "$tmp"/*/redis.pid; do
    [[ -f $f ]] || continue
    pid=$(cat "$f" 2>/dev/null)
    port=$(basename "$(dirname "$f")")
    [[ $pid =~ ^[0-9]+$ ]] || continue
    ps -p "$pid" -o args= 2>/dev/null | grep -q "redis-server 127.0.0.1:$port" &&
      kill -9 "$pid" 2>/dev/null
    rm -f "$f"
  done
}
cleanup() {
  kill_servers
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

passed=0
failed=0
failures=()
pass() { echo "[       OK ] $1"; passed=$((passed + 1)); }
fail() { echo "[  FAILED  ] $1"; failed=$((failed + 1)); failures+=("$1"); }
summary() {
  echo "[==========] $((passed + failed)) test(s) run."
  echo "[  PASSED  ] $passed test(s)."
  if ((failed)); then
    echo "[  FAILED  ] $failed test(s), listed below:"
    local f
    for f in "${failures[@]}"; do echo "[  FAILED  ] $f"; done
    exit 1
  fi
  exit 0
}
# A setup step that fails counts as one failed test and ends the run.
die() { echo "$*"; fail "setup: $1"; summary; }

# Any socket, not only listeners: a connection's source port blocks a bind just as well.
port_free() { ! ss -Htan "sport = :$1" 2>/dev/null | grep -q .; }

# Six ports P..P+5 plus their cluster bus ports P+10000.. (kept below the kernel's ephemeral
# range, 32768 by default, where outgoing connections take ports behind our back), and one for
# the standalone server.
pick_ports() {
  local try base i ok
  for try in $(seq 1 40); do
    base=$((15000 + RANDOM % 7700))
    ok=1
    for i in 0 1 2 3 4 5 6; do
      port_free $((base + i)) && port_free $((base + 10000 + i)) || { ok=0; break; }
    done
    ((ok)) && { echo "$base"; return 0; }
  done
  return 1
}

# wait_for SECONDS CMD...: poll every 0.1 s
wait_for() {
  local n=$(($1 * 10)) i
  shift
  for ((i = 0; i < n; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}

cluster_ok() {
  local p
  for p in "${ports[@]}"; do
    redis-cli -p "$p" cluster info | grep -q '^cluster_state:ok' || return 1
    redis-cli -p "$p" cluster info | grep -q '^cluster_known_nodes:6' || return 1
    if redis-cli -p "$p" info replication | grep -q '^role:slave'; then
      redis-cli -p "$p" info replication | grep -q '^master_link_status:up' || return 1
    fi
  done
}

echo "== build"
if [[ -n ${RC_DRIVER:-} ]]; then
  driver=$RC_DRIVER
else
  make -s -j2 SAN=$SAN "$BUILD/librelay.a" "$BUILD/libdvv.a" >"$tmp/build.log" 2>&1 ||
    { cat "$tmp/build.log"; die "make $BUILD/librelay.a failed"; }
  flags=(-std=gnu11 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
         -Wno-unused-parameter -Wformat=2 -D_GNU_SOURCE -Icommon -Iuserspace -g)
  ((SAN)) && flags+=(-O1 -fsanitize=address,undefined -fno-omit-frame-pointer
                     -fno-sanitize-recover=undefined) || flags+=(-O2)
  driver=$tmp/rc_driver
  "$CC" "${flags[@]}" -o "$driver" tests/redis/rc_driver.c "$BUILD/librelay.a" "$BUILD/libdvv.a" \
    -lhiredis >"$tmp/cc.log" 2>&1 || { cat "$tmp/cc.log"; die "compiling rc_driver failed"; }
fi

# start_cluster: 6 nodes on fresh ports; 1 if a node could not start (a port race: try again)
start_cluster() {
  local i p
  base=$(pick_ports) || die "no free ports"
  ports=()
  for i in 0 1 2 3 4 5; do
    p=$((base + i))
    ports+=("$p")
    rm -rf "$tmp/$p"
    mkdir -p "$tmp/$p"
    redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-config-file "nodes-$p.conf" --cluster-node-timeout 2000 --save '' \
      --appendonly no --dir "$tmp/$p" --logfile "$tmp/$p/redis.log" \
      --daemonize yes --pidfile "$tmp/$p/redis.pid" >/dev/null
  done
  for p in "${ports[@]}"; do
    if ! wait_for 10 redis-cli -p "$p" ping; then
      tail -3 "$tmp/$p/redis.log"
      kill_servers
      return 1
    fi
  done
}

echo "== 6-node Redis Cluster"
started=0
for attempt in 1 2 3; do
  start_cluster && { started=1; break; }
  echo "cluster start failed (attempt $attempt), trying other ports"
done
((started)) || die "redis-server nodes did not start"
create_args=()
for p in "${ports[@]}"; do create_args+=("127.0.0.1:$p"); done
timeout 30 redis-cli --cluster create "${create_args[@]}" --cluster-replicas 1 --cluster-yes \
  >"$tmp/create.log" 2>&1 || { cat "$tmp/create.log"; die "redis-cli --cluster create failed"; }
wait_for 30 cluster_ok || { redis-cli -p "${ports[0]}" cluster nodes; die "cluster not ok"; }
echo "cluster ok on ports ${ports[*]}"

# run NAME driver-args...: one test, bounded to 60 s
run() {
  local name=$1 rc
  shift
  echo "[ RUN      ] $name"
  timeout 60 "$driver" "$@" >"$tmp/out.log" 2>&1
  rc=$?
  cat "$tmp/out.log"
  if ((rc == 0)); then pass "$name"; else fail "$name (exit $rc)"; fi
}

seeds="127.0.0.1:${ports[0]},127.0.0.1:${ports[3]}"
run "cluster: every slot written and read back, EVAL on one hash tag, errors passed on" \
  basic "$seeds" cluster
# one seed only, a replica: everything else is learnt from the map and redirects
run "cluster: slot migrated while writing, ASK during the migration, MOVED after it" \
  reshard "127.0.0.1:${ports[5]}"
run "cluster: kill -9 a primary mid-stream, writes resume on the promoted replica, none lost" \
  failover "$seeds"

echo "== standalone Redis"
sp=$((base + 6))
mkdir -p "$tmp/$sp"
sa_cmd="redis-server --port $sp --bind 127.0.0.1 --save '' --appendonly yes --appendfsync always"
sa_cmd+=" --dir $tmp/$sp --logfile $tmp/$sp/redis.log --pidfile $tmp/$sp/redis.pid --daemonize yes"
bash -c "$sa_cmd" || die "standalone redis-server did not start"
wait_for 5 redis-cli -p "$sp" ping || die "standalone redis-server on $sp not answering"
run "standalone: every slot's key written and read back, EVAL, errors passed on" \
  basic "127.0.0.1:$sp" standalone
run "standalone: kill -9 and restart mid-stream, writes resume, none acknowledged lost" \
  restart "127.0.0.1:$sp" "$sa_cmd"

summary
