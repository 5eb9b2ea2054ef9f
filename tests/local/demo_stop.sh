#!/usr/bin/env bash
# scripts/dvv-local.sh cleans up however it is stopped. Each case starts the demo (its own
# instance id and ports), waits until it prints its JSON, checks a player reaches the demo's
# tunnel as "localhost", stops it one way, and checks: the script exits 0, none of its processes
# remain, the relay drained once (one signal, "drain finished", never "exiting now") or, when
# it cannot exit, was killed and its pins removed by the script, and /sys/fs/bpf/dvv/<id> and
# the temp directory are gone. Prints cmocka-style lines.
#
#   tests/local/demo_stop.sh              (DVV_BUILD=build-san by default: built binaries)
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
export DVV_BUILD=${DVV_BUILD:-build-san}
pin_root=/sys/fs/bpf/dvv
tag="i14self-$$"
passed=0
failed=0
script_pid=""
tail_pid=""
work=$(mktemp -d "/tmp/dvv-demo-stop.XXXXXX")

fail() { echo "      $*"; case_ok=0; }

# whatever a failed case left running: only the processes this test started (and theirs)
on_exit() {
  [[ -n $tail_pid ]] && kill "$tail_pid" 2>/dev/null
  if [[ -n $script_pid ]] && kill -0 "$script_pid" 2>/dev/null; then
    kill -TERM "$script_pid" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$script_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$script_pid" 2>/dev/null
  fi
  rm -rf "$work"
}
trap on_exit EXIT

# run_case NAME HOW: HOW is script (SIGTERM to the script, as a service manager or a script
# does), hup (SIGHUP to the script) or stuck-group-int (the relay is stopped with SIGSTOP, so it
# cannot drain or exit, then SIGINT goes to the script's process group as Ctrl-C sends it: the
# other components must not die of it before the script stops them, and the script must kill
# the relay and remove its pins itself)
run_case() {
  local name=$1 how=$2 id="$tag-$2" out="$work/$2.out" err="$work/$2.err" relaylog="$work/$2.relay"
  local kids run relay t rc
  case_ok=1
  local t0=$SECONDS
  echo "[ RUN      ] $name"
  # as from a terminal: its own process group, SIGINT not ignored (a background job of a script
  # starts with SIGINT ignored, and bash cannot trap a signal ignored on entry)
  env --default-signal=INT setsid scripts/dvv-local.sh --json --instance-id "$id" >"$out" 2>"$err" &
  script_pid=$!
  for ((t = 0; t < 600; t++)); do
    grep -q '"player_addr"' "$out" 2>/dev/null && break
    kill -0 "$script_pid" 2>/dev/null || break
    sleep 0.1
  done
  if ! grep -q '"player_addr"' "$out"; then
    fail "the demo did not become ready within 60 s:"
    tail -n 20 "$err" | sed 's/^/      /'
    echo "[  FAILED  ] $name"
    failed=$((failed + 1))
    on_exit_case
    return
  fi
  run=$(sed -n 's/.*"logs":"\([^"]*\)".*/\1/p' "$out")
  player=$(sed -n 's/.*"player_addr":"\([^"]*\)".*/\1/p' "$out")
  kids=$(pgrep -P "$script_pid" | tr '\n' ' ')
  relay=$(pgrep -P "$script_pid" -f "dvv-relay" | head -n1)
  [[ -n $relay ]] || fail "no relay process under the demo script"
  # the demo's tunnel is the relay's default: a status ping as "localhost" gets its server
  if ! (cd tests/e2e && node mc-client.mjs ping --relay "$player" --hostname localhost --timeout-ms 10000) |
    grep -q '"motd":"A DVV tunnel demo server"'; then
    fail "a status ping with hostname localhost did not reach the demo's server"
  fi
  if grep -q 'data plane: bpf' "$run/relay.log"; then
    [[ -d $pin_root/$id ]] || fail "expected the relay's pins at $pin_root/$id while it runs"
  fi
  echo "      ready after $((SECONDS - t0)) s"
  t0=$SECONDS
  tail -n +1 -F "$run/relay.log" >"$relaylog" 2>/dev/null &
  tail_pid=$!
  case $how in
    script) kill -TERM "$script_pid" ;;
    hup) kill -HUP "$script_pid" ;;
    stuck-group-int) kill -STOP "$relay"; kill -INT -- "-$script_pid" ;;
  esac
  # bounded: the relay's drain (2 s) + the script's margin (3 s) + PostgreSQL's stop (<= 10 s)
  for ((t = 0; t < 250; t++)); do kill -0 "$script_pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$script_pid" 2>/dev/null; then
    fail "the demo script was still running 25 s after the signal"
    on_exit_case
    rc=0
  else
    wait "$script_pid"
    rc=$?
    script_pid=""
  fi
  sleep 0.2
  kill "$tail_pid" 2>/dev/null
  wait "$tail_pid" 2>/dev/null
  tail_pid=""
  ((rc == 0)) || fail "the demo script exited with status $rc, want 0"
  for k in $kids; do
    if kill -0 "$k" 2>/dev/null; then
      fail "process $k of the demo is still running: $(ps -o cmd= -p "$k" | cut -c1-100)"
      kill -KILL "$k" 2>/dev/null
    fi
  done
  if [[ -d $pin_root/$id ]]; then
    fail "$pin_root/$id is still there"
    rm -rf "${pin_root:?}/$id"
  fi
  [[ -e $run ]] && fail "the demo's temp directory $run is still there"
  if [[ $how == stuck-* ]]; then
    kill -CONT "$relay" 2>/dev/null # only if it somehow survived (reported above)
    grep -q "did not stop in" "$err" || fail "expected the script to say it killed the stuck relay"
  else
    grep -q 'signal [0-9]*: draining' "$relaylog" || fail "the relay was not asked to drain"
    grep -q 'drain finished' "$relaylog" || fail "the relay did not finish its drain"
    if grep -q 'exiting now' "$relaylog"; then
      fail "the relay got a second signal and cut its drain short"
    fi
  fi
  echo "      stopped after $((SECONDS - t0)) s"
  if ((case_ok)); then
    echo "[       OK ] $name"
    passed=$((passed + 1))
  else
    echo "[  FAILED  ] $name"
    grep -E 'signal|drain|exiting' "$relaylog" | sed 's/^/      relay: /'
    tail -n 5 "$err" | sed 's/^/      demo: /'
    failed=$((failed + 1))
  fi
}

on_exit_case() {
  if [[ -n $script_pid ]]; then
    kill -TERM "$script_pid" 2>/dev/null
    for _ in $(seq 1 200); do kill -0 "$script_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$script_pid" 2>/dev/null
    wait "$script_pid" 2>/dev/null
    script_pid=""
  fi
}

echo "[==========] demo_stop"
# two cases keep this near a minute: each demo takes ~20 s to start on a busy 2-core machine
run_case "SIGTERM to the script: the relay drains once, everything is removed" script
run_case "Ctrl-C (SIGINT to the group) with a relay that cannot exit: killed after drain + margin, its pins removed" stuck-group-int
echo "[==========] $((passed + failed)) test(s) run."
echo "[  PASSED  ] $passed test(s)."
((failed == 0)) || echo "[  FAILED  ] $failed test(s)."
((failed == 0))
