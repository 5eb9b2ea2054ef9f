#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, builds with ASan+UBSan, runs
# the cmocka unit tests, every libFuzzer target for a bounded time, and the end-to-end tests
# with real Minecraft clients and servers. Ends with "N passed, N failed".
#
#   scripts/test.sh                 everything
#   scripts/test.sh PART            one part: unit fuzz e2e local api deploy splice netns redis
#                                   cluster chaos ops vmtest (the kernel matrix under qemu,
#                                   vmtest/run.sh: ~4 min without KVM once the kernels are cached,
#                                   the last part)
#   FUZZ_SECONDS=60 scripts/test.sh fuzz
#
# splice, netns, redis, cluster and chaos need root (BPF, bpffs, network namespaces); CI runs as root.
# Without root those parts are reported as failed, never silently skipped.
set -uo pipefail
cd "$(dirname "$0")/.."

parts=${1:-all}
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
JOBS=$(nproc 2>/dev/null || echo 2)
passed=0
failed=0
failures=()

ok() { passed=$((passed + $1)); }
bad() { failed=$((failed + $1)); failures+=("$2"); }
want() { [[ $parts == all || $parts == "$1" ]]; }

# Runs a script that prints cmocka-style lines and counts its "[  PASSED  ] N" / "[  FAILED  ] N".
cmocka_script() { # NAME CMD...
  local name=$1 out rc p f
  shift
  out=$("$@" 2>&1)
  rc=$?
  echo "$out" | grep -E '^\[ +(OK|FAILED|PASSED|  ERROR) |^ {5,}' || true
  p=$(echo "$out" | sed -n 's/.*\[  PASSED  \] \([0-9][0-9]*\) test.*/\1/p' | tail -1)
  f=$(echo "$out" | sed -n 's/.*\[  FAILED  \] \([0-9][0-9]*\) test.*/\1/p' | tail -1)
  ok "${p:-0}"
  if [[ -n $f && $f -gt 0 ]]; then
    bad "$f" "$name"
    echo "$out" | tail -40
  elif [[ $rc -ne 0 || -z $p ]]; then
    bad 1 "$name (exit $rc)"
    echo "$out" | tail -40
  fi
}

# Runs node's test runner over the given files/dirs and counts its "ℹ pass N" / "ℹ fail N".
node_tests() { # NAME ENV... -- PATHS...
  local name=$1 out rc p f envs=()
  shift
  while [[ $1 != -- ]]; do envs+=("$1"); shift; done
  shift
  out=$(env "${envs[@]}" node --test --test-concurrency=1 --test-reporter=spec "$@" 2>&1)
  rc=$?
  echo "$out" | grep -vE '^\s*$' | tail -n 200
  p=$(echo "$out" | sed -n 's/^ℹ pass \([0-9]*\)$/\1/p' | tail -1)
  f=$(echo "$out" | sed -n 's/^ℹ fail \([0-9]*\)$/\1/p' | tail -1)
  ok "${p:-0}"
  if [[ -n $f && $f -gt 0 ]]; then
    bad "$f" "$name"
  elif [[ $rc -ne 0 || -z $p ]]; then
    bad 1 "$name runner (exit $rc)"
  fi
}

scripts/setup.sh || { echo "setup failed"; echo "0 passed, 1 failed"; exit 1; }

echo "== build (ASan+UBSan)"
if ! make -s -j"$JOBS" SAN=1 all unit >/tmp/dvv-build.log 2>&1; then
  cat /tmp/dvv-build.log
  echo "0 passed, 1 failed"
  exit 1
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=23}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

if want unit; then
  echo "== unit tests (cmocka)"
  for t in build-san/tests/test_*; do
    [[ -x $t ]] || continue
    cmocka_script "$t" "$t"
  done
fi

if want fuzz; then
  echo "== fuzz (${FUZZ_SECONDS}s per target)"
  if make -s -j"$JOBS" fuzz >/tmp/dvv-fuzz-build.log 2>&1; then
    for f in build-fuzz/fuzz_*; do
      [[ -x $f ]] || continue
      name=$(basename "$f")
      corpus=tests/fuzz/corpus/$name
      mkdir -p "/tmp/dvv-corpus-$name"
      args=("/tmp/dvv-corpus-$name")
      [[ -d $corpus ]] && args+=("$corpus")
      if "$f" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
           -artifact_prefix="/tmp/dvv-$name-" "${args[@]}" >/tmp/dvv-$name.log 2>&1; then
        echo "[       OK ] $name ($(grep -o 'Done [0-9]* runs' /tmp/dvv-$name.log))"
        ok 1
      else
        echo "[  FAILED  ] $name"
        tail -40 "/tmp/dvv-$name.log"
        bad 1 "$name"
      fi
    done
  else
    cat /tmp/dvv-fuzz-build.log
    bad 1 "fuzz build"
  fi
fi

if want e2e; then
  echo "== agent release binary (static)"
  if make -s static >/tmp/dvv-static.log 2>&1; then
    size=$(stat -c %s build/dvv-static)
    if ((size < 10 * 1024 * 1024)); then
      echo "[       OK ] static agent is $size bytes (< 10 MB)"
      ok 1
    else
      echo "[  FAILED  ] static agent is $size bytes (>= 10 MB)"
      bad 1 "agent size"
    fi
  else
    cat /tmp/dvv-static.log
    bad 1 "static agent build"
  fi

  # the same suite on each data plane: bpf (in-kernel splice, needs root) and userspace
  for plane in bpf userspace; do
    echo "== end to end on the $plane data plane (real Minecraft client and server, real Redis)"
    node_tests "e2e ($plane)" DVV_BUILD=build-san DVV_DATAPLANE=$plane -- tests/e2e/
  done
fi

if want local; then
  # scripts/dvv-local.sh stopped by SIGTERM and by Ctrl-C with a stuck relay (~1 minute)
  echo "== the local demo: stopped by a signal, it leaves no process, temp dir or BPF pin"
  cmocka_script demo_stop env DVV_BUILD=build-san tests/local/demo_stop.sh
fi

if want api; then
  # dvv-api against a throwaway PostgreSQL and Redis per test file (its C unit tests run in unit)
  echo "== dvv-api (real PostgreSQL 15, Redis, relay and agent)"
  node_tests api DVV_BUILD=build-san -- tests/api/
fi

if want deploy; then
  # deploy/: static checks with Debian's tools, then the autoscaler against real Redis and relays
  echo "== deploy/ (shellcheck, systemd-analyze verify, Railway configs, Dockerfiles, sysctls)"
  cmocka_script deploy-check env BUILD=build-san tests/deploy/check.sh
  echo "== autoscaler (real Redis and relays, a local stand-in for Railway's API)"
  node_tests autoscale DVV_BUILD=build-san -- tests/deploy/
fi

if want splice; then
  echo "== splice correctness on both data planes (real TCP through relay and agent)"
  cmocka_script splice tests/splice/run.sh
fi

if want netns; then
  echo "== network namespaces: XDP SYN guard under floods, region pick under netem delay, queues"
  cmocka_script xdp_flood env DVV_BUILD=build-san tests/netns/xdp_flood.sh
  echo "== network namespaces: SYN cookies, real Minecraft logins from new sources under spoofed SYN, ACK and RST floods"
  cmocka_script syncookie env DVV_BUILD=build-san tests/netns/syncookie.sh
  cmocka_script region_pick env DVV=build-san/dvv tests/netns/region_pick.sh
  echo "== network namespaces: bytes queued on one connection over a slow downlink, relayed vs routed"
  cmocka_script queue env DVV_BUILD=build-san NO_BUILD=1 tests/netns/queue.sh
fi

if want redis; then
  echo "== Redis Cluster client against a real 6-node cluster (failover) and standalone Redis"
  cmocka_script rcluster env BUILD=build-san tests/redis/cluster.sh
fi

if want cluster; then
  echo "== replicas: 3 relays in network namespaces, standalone Redis and a 6-node Redis Cluster"
  node_tests cluster DVV_BUILD=build-san -- tests/cluster/
fi

if want chaos; then
  echo "== failure scenarios: drain, migration, crash, Redis outage, partitions, floods, storms, NAT idle timeout"
  rm -f /tmp/dvv-chaos-table.md
  node_tests chaos DVV_BUILD=build-san -- tests/chaos/
  [[ -f /tmp/dvv-chaos-table.md ]] && cat /tmp/dvv-chaos-table.md
fi

if want ops; then
  # deploy/prometheus and deploy/grafana against docs/metrics.md (promtool from Debian's
  # prometheus package); a few seconds
  echo "== operator files: alert rules (promtool check/test rules), Prometheus config, Grafana dashboard"
  node_tests ops DVV_BUILD=build-san -- tests/ops/
fi

# Last: without KVM the VMs take ~4 minutes (plus a 177 MB download of Debian kernels the
# first time, cached in ~/.cache/dvv-vmtest).
if want vmtest; then
  echo "== kernel matrix: BPF and data-plane tests under qemu on Debian's 6.1 and backports kernels"
  out=$(vmtest/run.sh 2>&1)
  rc=$?
  echo "$out" | tail -n 120
  p=$(echo "$out" | sed -n 's/^\([0-9][0-9]*\) passed, [0-9][0-9]* failed.*/\1/p' | tail -1)
  f=$(echo "$out" | sed -n 's/^[0-9][0-9]* passed, \([0-9][0-9]*\) failed.*/\1/p' | tail -1)
  ok "${p:-0}"
  if [[ -n $f && $f -gt 0 ]]; then
    bad "$f" vmtest
  elif [[ $rc -ne 0 || -z $p ]]; then
    bad 1 "vmtest (exit $rc)"
  fi
fi

echo
((${#failures[@]})) && printf 'failed: %s\n' "${failures[@]}"
echo "$passed passed, $failed failed"
((failed == 0))
