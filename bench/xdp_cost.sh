#!/usr/bin/env bash
# Per-packet cost of the XDP guard's paths (SYN answered with a cookie, cookie ACK, ACK and RST
# floods) under BPF_PROG_TEST_RUN; prints a Markdown table (docs/performance.md, docs/xdp.md).
# Root; runs in its own network and mount namespaces, leaves nothing behind.
#
#   bench/xdp_cost.sh [RUNS] [REPEAT]        (defaults 200000 single runs, repeat 2000000)
set -euo pipefail
cd "$(dirname "$0")/.."
B=${DVV_BUILD:-build}
[[ $(id -u) == 0 ]] || { echo "bench/xdp_cost.sh: needs root (BPF)" >&2; exit 1; }
make -s -j2 "$B/librelay.a" "$B/libdvv.a" >/dev/null
cc -std=gnu11 -O2 -g -Wall -Wextra -Werror -D_GNU_SOURCE -Icommon -Iuserspace -I"$B/gen" \
  -o "$B/xdp_cost" bench/xdp_cost.c "$B/librelay.a" "$B/libdvv.a" \
  -lbpf -lelf -lz -lssl -lcrypto -ljwt -ljansson -lhiredis -lmicrohttpd -lpthread
echo "kernel $(uname -r), $(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%MZ)"
timeout 600 "$B/xdp_cost" "$@"
