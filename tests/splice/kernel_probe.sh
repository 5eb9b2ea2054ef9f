#!/usr/bin/env bash
# Builds and runs tests/splice/kernel_probe: what this kernel's sockmap does with a live stream
# (see the header of kernel_probe.c and tests/splice/README.md). Needs root, clang, libbpf.
# Meant for the kernel matrix (vmtest/) too: exit status 0 when what the bpf plane relies on
# holds; the informational probes print [  BROKEN  ] without failing the run.
#
#   tests/splice/kernel_probe.sh [redirect|pass-relay|unhook|clamp|all] [rounds]
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=build/splice
ARCH=$(uname -m | sed 's/x86_64/x86/;s/aarch64/arm64/')
mkdir -p "$OUT"
[[ -f build/gen/vmlinux.h ]] || make -s build/gen/vmlinux.h || exit 1
clang -g -O2 -target bpf -D__TARGET_ARCH_"$ARCH" -Wall -Werror -Ibuild/gen \
  -c tests/splice/kernel_probe.bpf.c -o "$OUT/kernel_probe.bpf.o" || exit 1
cc -std=gnu11 -O2 -g -Wall -Wextra -Werror -D_GNU_SOURCE -o "$OUT/kernel_probe" \
  tests/splice/kernel_probe.c -lbpf -lpthread || exit 1
exec "$OUT/kernel_probe" "$OUT/kernel_probe.bpf.o" "${1:-all}" "${2:-5}"
