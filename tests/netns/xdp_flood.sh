#!/usr/bin/env bash
# The XDP SYN guard under real SYN floods. Two network namespaces joined by a veth pair: the
# "client" side holds a legitimate client (10.77.0.1) and the attacker (hping3), the "server"
# side a TCP listener on the player port behind the guard (native XDP on its veth end). Each
# phase runs 100 paced legitimate connects while a bounded flood runs, and checks that at least
# 99% of them succeed and that the guard's drop counters moved.
#
#   tests/netns/xdp_flood.sh            (root; needs hping3, ethtool, python3, bpftool, ip)
#   DVV_BUILD=build-san tests/netns/xdp_flood.sh
#   FLOOD_SECONDS=7 CONNECTS=100 tests/netns/xdp_flood.sh
#
# Prints cmocka-like lines ("[       OK ] name", "[  FAILED  ] name") and a final
# "[  PASSED  ] N test(s)." or "[  FAILED  ] N test(s).". Everything it creates (namespaces,
# veth, pins, processes) is removed on exit, on failure too; it runs in a private mount
# namespace, so a bpffs it has to mount is never seen outside.
set -uo pipefail

if [[ ${DVVX_PRIVATE_MNT:-} != 1 ]]; then
  [[ $(id -u) == 0 ]] || { echo "[  FAILED  ] xdp_flood needs root"; echo "[  FAILED  ] 1 test(s)."; exit 1; }
  DVVX_PRIVATE_MNT=1 exec unshare --mount --propagation private -- "$0" "$@"
fi

cd "$(dirname "$0")/../.."
BUILD=${DVV_BUILD:-build}
FLOOD_SECONDS=${FLOOD_SECONDS:-7}   # each flood; the connects run inside it
CONNECTS=${CONNECTS:-100}
PACE_MS=${PACE_MS:-50}              # 20 connects/s: the relay default per-source rate
CONNECT_TIMEOUT=${CONNECT_TIMEOUT:-1.0} # below the 1 s SYN retransmit: a dropped SYN is a failure
PLAYER_PORT=25565
AGENT_PORT=25566
# SYN cookies off: this script tests the per-source buckets and the port budget themselves;
# tests/netns/syncookie.sh tests what cookies add (new sources during a spoofed flood).
GUARD_FLAGS=(${GUARD_FLAGS:---xdp-syn-rate=20 --xdp-syn-burst=40 --xdp-port-syn-budget=20000 --xdp-syncookies=off})

ID=$$
NS_C=dvvx-$ID-c
NS_S=dvvx-$ID-s
IF_C=dvvx${ID}c
IF_S=dvvx${ID}s
PIN=/sys/fs/bpf/dvvx-$ID/guard
TMP=$(mktemp -d /tmp/dvvx-$ID.XXXXXX)
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
  rm -rf "/sys/fs/bpf/dvvx-$ID" "$TMP"
}
finish() {
  cleanup
  if ((failed)); then echo "[  FAILED  ] $failed test(s)."; else echo "[  PASSED  ] $passed test(s)."; fi
  ((failed == 0)) && exit 0 || exit 1
}
trap finish EXIT
trap 'bad "interrupted"; exit 1' INT TERM

die() { bad "$1"; exit 1; }

# ---- prerequisites ----------------------------------------------------------------------------
for t in hping3 ethtool python3 bpftool ip nsenter; do
  command -v "$t" >/dev/null || die "prerequisite: $t not found (apt-get install -y hping3 ethtool python3 bpftool iproute2)"
done
[[ -f $BUILD/librelay.a && -f $BUILD/libdvv.a ]] || die "prerequisite: $BUILD/librelay.a missing (make${BUILD/build-san/ SAN=1})"

DRIVER=$BUILD/tests/xdp_attach
if [[ ! -x $DRIVER || tests/netns/xdp_attach.c -nt $DRIVER || $BUILD/librelay.a -nt $DRIVER ]]; then
  san=()
  [[ $BUILD == build-san ]] && san=(-fsanitize=address,undefined -fno-omit-frame-pointer)
  mkdir -p "$BUILD/tests"
  cc -std=gnu11 -O1 -g -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
    -Wno-unused-parameter -D_GNU_SOURCE "${san[@]}" -Icommon -Iuserspace -I"$BUILD/gen" \
    -o "$DRIVER" tests/netns/xdp_attach.c "$BUILD/librelay.a" "$BUILD/libdvv.a" \
    -lbpf -lelf -lz -lssl -lcrypto -ljwt -ljansson -lhiredis -lmicrohttpd -lpthread \
    >"$TMP/cc.log" 2>&1 || { cat "$TMP/cc.log"; die "build $DRIVER"; }
fi

# ---- topology ---------------------------------------------------------------------------------
ip netns add "$NS_C" && ip netns add "$NS_S" &&
  ip link add name "$IF_C" netns "$NS_C" type veth peer name "$IF_S" netns "$NS_S" &&
  ip -n "$NS_C" addr add 10.77.0.1/24 dev "$IF_C" &&
  ip -n "$NS_C" addr add 10.77.0.3/24 dev "$IF_C" &&
  ip -n "$NS_C" addr add 10.77.0.4/24 dev "$IF_C" &&
  ip -n "$NS_S" addr add 10.77.0.2/24 dev "$IF_S" &&
  ip -n "$NS_C" link set lo up && ip -n "$NS_S" link set lo up &&
  ip -n "$NS_C" link set "$IF_C" up && ip -n "$NS_S" link set "$IF_S" up ||
  die "create namespaces $NS_C, $NS_S and veth $IF_C/$IF_S"
# veth checksum offload would leave XDP looking at packets without a checksum.
ip netns exec "$NS_C" ethtool -K "$IF_C" tx off >/dev/null 2>&1 &&
  ip netns exec "$NS_S" ethtool -K "$IF_S" tx off >/dev/null 2>&1 || die "ethtool -K tx off"

# A listener that accepts and closes, bounded in time.
timeout 300 ip netns exec "$NS_S" python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.77.0.2", '"$PLAYER_PORT"')); s.listen(4096)
while True:
    c, _ = s.accept(); c.close()
' >"$TMP/listener.log" 2>&1 &
PIDS+=($!)

# ---- the guard --------------------------------------------------------------------------------
nsenter --net="/run/netns/$NS_S" "$DRIVER" "$PLAYER_PORT" "$AGENT_PORT" "$PIN" \
  --xdp-ifaces="$IF_S" --xdp-mode=native "${GUARD_FLAGS[@]}" >"$TMP/driver.out" 2>"$TMP/driver.err" &
DRIVER_PID=$!
PIDS+=($DRIVER_PID)
for _ in $(seq 100); do grep -q '^ready' "$TMP/driver.out" 2>/dev/null && break; kill -0 $DRIVER_PID 2>/dev/null || break; sleep 0.1; done
# "ip link" says "xdp" for native (driver) mode, "xdpgeneric" for generic.
if grep -q '^ready' "$TMP/driver.out" && ip -n "$NS_S" link show "$IF_S" | grep -qE 'mtu [0-9]+ xdp '; then
  ok "guard attaches in native mode on $IF_S ($(grep -o 'attached in [a-z]* mode' "$TMP/driver.err"))"
else
  cat "$TMP/driver.err"; ip -n "$NS_S" link show "$IF_S"
  die "guard attaches in native mode on $IF_S"
fi

counters() { # -> "name=value ..." summed over CPUs, read through the pinned map like an operator
  bpftool -j map dump pinned "$PIN/xdp_counters" | python3 -c '
import json, sys
tot = {}
for cpu in json.load(sys.stdin)[0]["formatted"]["values"]:
    for k, v in cpu["value"].items():
        tot[k] = tot.get(k, 0) + v
print(" ".join(f"{k}={v}" for k, v in tot.items()))'
}
counter() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"; }

# N paced connects from SRC; prints "ok=.. fail=.. median_ms=.. p99_ms=.. max_ms=.."
connects() {
  local src=$1 n=$2
  timeout $((n * 2 + 30)) ip netns exec "$NS_C" python3 - "$src" "$n" "$PACE_MS" "$CONNECT_TIMEOUT" <<'EOF'
import socket, sys, time
src, n, pace, tmo = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) / 1000, float(sys.argv[4])
ok, lat = 0, []
for i in range(n):
    t0 = time.monotonic()
    s = socket.socket(); s.settimeout(tmo); s.bind((src, 0))
    try:
        s.connect(("10.77.0.2", 25565)); ok += 1; lat.append((time.monotonic() - t0) * 1000)
    except OSError:
        pass
    finally:
        s.close()
    time.sleep(max(0.0, pace - (time.monotonic() - t0)))
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else -1
print(f"ok={ok} fail={n - ok} median_ms={q(0.5):.2f} p99_ms={q(0.99):.2f} max_ms={q(1.0):.2f}")
EOF
}

need=$(((CONNECTS * 99 + 99) / 100))

# ---- phases -----------------------------------------------------------------------------------
phase() { # name, counter that must move, hping3 args (empty: no flood)
  local name=$1 moved=$2
  shift 2
  local before after res okn hp=""
  before=$(counters)
  if (($#)); then
    timeout -s INT "$FLOOD_SECONDS" ip netns exec "$NS_C" hping3 "$@" -c 50000000 10.77.0.2 \
      >"$TMP/hping.out" 2>&1 &
    hp=$!
    PIDS+=($hp)
    sleep 0.5
  fi
  res=$(connects 10.77.0.1 "$CONNECTS")
  [[ -n $hp ]] && wait "$hp"
  after=$(counters)
  okn=$(counter "$res" ok)
  local sent="" rate=""
  if [[ -n $hp ]]; then
    sent=$(grep -o '^[0-9]* packets transmitted' "$TMP/hping.out" | awk '{print $1}')
    [[ -n $sent ]] && rate=" ($sent SYNs in ${FLOOD_SECONDS}s, $((sent / FLOOD_SECONDS))/s)"
  fi
  local d="" k
  for k in pass_syn drop_rate drop_budget pass_reserve pass_other; do
    d+=" $k+$(($(counter "$after" $k) - $(counter "$before" $k)))"
  done
  note "$name: legit $res"
  note "$name: flood${rate:- none}; counters$d"
  if [[ -z $okn || $okn -lt $need ]]; then
    bad "$name: expected >= $need/$CONNECTS legitimate connects, got ${okn:-none}"
  elif [[ -n $moved ]] && (($(counter "$after" "$moved") <= $(counter "$before" "$moved"))); then
    bad "$name: expected $moved to move, it stayed at $(counter "$after" "$moved")"
  else
    ok "$name: $okn/$CONNECTS legitimate connects${moved:+, $moved moved}"
  fi
}

phase "no flood" ""
phase "single-source SYN flood" drop_rate -S -p "$PLAYER_PORT" -a 10.77.0.3 --flood -q
phase "random-source SYN flood" drop_budget -S -p "$PLAYER_PORT" --rand-source --flood -q

# ---- stop -------------------------------------------------------------------------------------
kill -TERM $DRIVER_PID
for _ in $(seq 50); do kill -0 $DRIVER_PID 2>/dev/null || break; sleep 0.1; done
if kill -0 $DRIVER_PID 2>/dev/null; then
  bad "guard stops on SIGTERM"
elif [[ -e $PIN ]] || ip -n "$NS_S" link show "$IF_S" | grep -qE ' xdp(generic)? '; then
  bad "guard detaches and unpins on stop"
else
  ok "guard detaches and unpins on stop (final: $(sed -n 's/^counters //p' "$TMP/driver.out" | tail -1))"
fi
