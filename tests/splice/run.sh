#!/usr/bin/env bash
# Splice correctness suite: builds tests/splice/splice_test.c against the ASan+UBSan relay
# libraries (build-san/) and runs every case against the bpf and the userspace data plane.
# Needs root (loads BPF, pins under /sys/fs/bpf/dvv). Ends with cmocka-style lines:
#   [  PASSED  ] N test(s).        and, on failure,    [  FAILED  ] N test(s).
#
#   tests/splice/run.sh                      both planes, every case
#   tests/splice/run.sh bpf|userspace [substring-of-case-name]
set -uo pipefail
cd "$(dirname "$0")/../.."

BUILD=build-san
BIN=$BUILD/tests/splice/splice_test
JOBS=$(nproc 2>/dev/null || echo 2)
SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
CFLAGS="-std=gnu11 -O1 -g -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
  -Wno-unused-parameter -Wformat=2 -D_GNU_SOURCE -Icommon -Iuserspace -I$BUILD/gen $SAN"
LIBS="-lcmocka -lbpf -lelf -lz -lssl -lcrypto -ljwt -ljansson -lhiredis -lmicrohttpd -lpthread"

if [[ $(id -u) -ne 0 ]]; then
  echo "splice tests need root (BPF, bpffs)"; echo "[  FAILED  ] 1 test(s)."; exit 1
fi
if ! make -s -j"$JOBS" SAN=1 "$BUILD/librelay.a" "$BUILD/libdvv.a" >/tmp/dvv-splice-build.log 2>&1; then
  cat /tmp/dvv-splice-build.log; echo "[  FAILED  ] 1 test(s)."; exit 1
fi
mkdir -p "$(dirname "$BIN")"
# shellcheck disable=SC2086
if ! cc $CFLAGS -o "$BIN" tests/splice/splice_test.c "$BUILD/librelay.a" "$BUILD/libdvv.a" $LIBS \
     >/tmp/dvv-splice-build.log 2>&1; then
  cat /tmp/dvv-splice-build.log; echo "[  FAILED  ] 1 test(s)."; exit 1
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=23}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
"$BIN" "$@"
rc=$?

# nothing of ours may stay pinned
left=$(ls -d /sys/fs/bpf/dvv/splice-test-* 2>/dev/null)
if [[ -n $left ]]; then
  echo "pins left behind: $left"
  rm -rf $left
  echo "[  FAILED  ] 1 test(s)."
  exit 1
fi
exit $rc
