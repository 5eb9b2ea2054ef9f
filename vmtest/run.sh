#!/usr/bin/env bash
# The kernel matrix: runs the BPF and data-plane test subset (XDP guard, bpf data plane, splice
# correctness on the bpf plane) inside qemu on other kernels, and reports which behaviours pass
# on which kernel. Ends with "N passed, N failed, N skipped".
#
#   vmtest/run.sh                   Debian 12's 6.1 LTS, the newest bookworm-backports kernel
#                                   and this machine's kernel (when /boot has its image)
#   vmtest/run.sh 6.1 [bpo] [running]   only those
#
# Each kernel boots from a minimal initramfs (busybox-static, the test binaries and the shared
# libraries ldd lists for them, the modules they need) whose /init mounts proc/sys/bpffs/debugfs,
# brings lo up, runs each test under a timeout, prints the results on the serial console and
# powers off. Without /dev/kvm qemu emulates the CPU (TCG), so the subset is small.
#
# Kernels are downloaded with apt-get into $DVV_VMTEST_CACHE (default ~/.cache/dvv-vmtest), never
# into the repository. Results: $VMTEST_OUT (default $DVV_VMTEST_CACHE/results): one serial log
# per kernel, table.md (kernel x test), results.tsv and results.json.
#
# Environment: VMTEST_TIMEOUT seconds per kernel (default 1200); VMTEST_SPLICE_CASES the splice
# cases to run on the bpf plane ("all", or names; default: all but the 1 GiB one); VMTEST_PROBES
# the kernel_probe probes (default "clamp"; "redirect clamp" adds the 256 MiB redirect);
# VMTEST_CPUS (2); VMTEST_MEM_MB (3072).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

export DVV_VMTEST_CACHE=${DVV_VMTEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dvv-vmtest}
OUT=${VMTEST_OUT:-$DVV_VMTEST_CACHE/results}
TIMEOUT=${VMTEST_TIMEOUT:-1200}
CPUS=${VMTEST_CPUS:-2}
MEM=${VMTEST_MEM_MB:-3072}
# Left out by default: one_gib_each_way_arrives_byte_exact and the 256 MiB redirect probe. Their
# time bounds (a 120 s watchdog, the plane's lag cut, a 10 s drain) assume a real CPU; on the
# emulated one, on a busy 2-core host, they failed without any kernel fault (docs/kernels.md).
# The other splice cases still check every byte on the kernel path.
SPLICE_CASES=${VMTEST_SPLICE_CASES:-}
PROBES=${VMTEST_PROBES:-clamp}
BUILD_LOG=$(mktemp /tmp/dvv-vmtest-build.XXXXXX)
JOBS=$(nproc 2>/dev/null || echo 2)
specs=("$@")
((${#specs[@]})) || specs=(6.1 bpo running)
# kernel modules the tests need that Debian builds as modules (veth and bridge for the XDP
# attach tests; clsact + cls_bpf for the TC half of SYN cookies)
MODULES=(veth bridge sch_ingress cls_bpf)

die() { echo "vmtest: $*" >&2; echo "0 passed, 1 failed"; exit 1; }

for tool in qemu-system-x86_64 depmod python3 dpkg-deb; do
	command -v "$tool" >/dev/null || die "$tool missing (scripts/setup.sh installs it)"
done
BUSYBOX=/bin/busybox
# busybox-static: the initramfs has no libc for busybox to load
[[ $(ldd "$BUSYBOX" 2>&1) == *"not a dynamic executable"* ]] || die "busybox-static missing (scripts/setup.sh)"

# ---- the test binaries (release build: the sanitizers would only slow the emulated CPU) ----
echo "== vmtest: building the test binaries (build/)"
BIN_SPLICE=build/tests/splice/splice_test
CFLAGS="-std=gnu11 -O2 -g -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
  -Wno-unused-parameter -Wformat=2 -D_GNU_SOURCE -Icommon -Iuserspace -Ibuild/gen"
LIBS="-lcmocka -lbpf -lelf -lz -lssl -lcrypto -ljwt -ljansson -lhiredis -lmicrohttpd -lpthread"
make -s -j"$JOBS" build/tests/test_xdp build/tests/test_dp_bpf build/librelay.a build/libdvv.a \
	>"$BUILD_LOG" 2>&1 || { cat "$BUILD_LOG"; die "build failed"; }
mkdir -p "$(dirname "$BIN_SPLICE")"
# shellcheck disable=SC2086
cc $CFLAGS -o "$BIN_SPLICE" tests/splice/splice_test.c build/librelay.a build/libdvv.a $LIBS \
	>"$BUILD_LOG" 2>&1 || { cat "$BUILD_LOG"; die "splice_test build failed"; }

# kernel_probe (tests/splice/README.md): what the kernel's sockmap itself does, no DVV code
ARCH=$(uname -m | sed 's/x86_64/x86/;s/aarch64/arm64/')
mkdir -p build/splice
clang -g -O2 -target bpf -D__TARGET_ARCH_"$ARCH" -Wall -Werror -Ibuild/gen \
	-c tests/splice/kernel_probe.bpf.c -o build/splice/kernel_probe.bpf.o >"$BUILD_LOG" 2>&1 &&
	cc -std=gnu11 -O2 -g -Wall -Wextra -Werror -D_GNU_SOURCE -o build/splice/kernel_probe \
		tests/splice/kernel_probe.c -lbpf -lpthread >>"$BUILD_LOG" 2>&1 ||
	{ cat "$BUILD_LOG"; die "kernel_probe build failed"; }

# the splice cases, as splice_test.c lists them (CASES); names are unique, none inside another
mapfile -t all_cases < <(sed -n '/^#define CASES/,/^$/p' tests/splice/splice_test.c | grep -o 'X([a-z0-9_]*)' | sed 's/^X(\(.*\))$/\1/')
((${#all_cases[@]})) || die "no case list in tests/splice/splice_test.c"
if [[ $SPLICE_CASES == all ]]; then
	splice_cases=("${all_cases[@]}")
elif [[ -n $SPLICE_CASES ]]; then
	read -r -a splice_cases <<<"$SPLICE_CASES"
else
	splice_cases=()
	for c in "${all_cases[@]}"; do [[ $c == one_gib_each_way_arrives_byte_exact ]] || splice_cases+=("$c"); done
fi

# ---- the initramfs -------------------------------------------------------------------------
# Copies every shared library ldd lists for FILE into ROOT, at the same paths.
copy_libs() { # ROOT FILE
	local root=$1 f=$2 lib
	for lib in $(ldd "$f" | grep -oE '/[^ ]+\.so[^ ]*'); do
		[[ -e $root$lib ]] || cp -L --parents "$lib" "$root"
	done
}

# Builds the initramfs for kernel RELEASE (unpacked by fetch.sh) into the file CPIO.
make_initrd() { # RELEASE CPIO
	local rel=$1 cpio=$2 kdir=$DVV_VMTEST_CACHE/kernels/$1 m dep f
	root=$(mktemp -d /tmp/dvv-vmtest-root.XXXXXX)
	mkdir -p "$root"/{bin,proc,sys,dev,tmp,etc,modules,tests}
	cp "$BUSYBOX" "$root/bin/busybox"
	# /bin/sh is dash, not busybox's ash: that one runs its own applets before PATH, so the
	# tests' system("ip link add ... type veth") would get busybox's ip, which cannot
	cp -L /bin/dash "$root/bin/sh"
	copy_libs "$root" /bin/dash
	cp build/splice/kernel_probe.bpf.o "$root/tests/"
	for f in build/tests/test_xdp build/tests/test_dp_bpf "$BIN_SPLICE" build/splice/kernel_probe; do
		cp "$f" "$root/tests/"
		copy_libs "$root" "$f"
	done
	# splice_test reads the pinned maps with bpftool (bpf_pinned_maps_dump_as_named_fields)
	mkdir -p "$root/usr/sbin"
	cp -L "$(command -v bpftool)" "$root/usr/sbin/bpftool"
	copy_libs "$root" "$(command -v bpftool)"
	# test_xdp makes veth pairs and a bridge with iproute2's ip (busybox's cannot)
	cp -L "$(command -v ip)" "$root/usr/sbin/ip"
	copy_libs "$root" "$(command -v ip)"
	echo "127.0.0.1 localhost" >"$root/etc/hosts"
	echo "root:x:0:0:root:/:/bin/sh" >"$root/etc/passwd"

	# modules: each wanted one and what modules.dep says it needs, deps first, decompressed
	local moddir=$kdir/lib/modules/$rel order=()
	[[ -f $moddir/modules.dep ]] || depmod -b "$kdir" "$rel"
	for m in "${MODULES[@]}"; do
		if grep -qE "/$m\.ko(\.xz|\.zst|\.gz)?$" "$moddir/modules.builtin" 2>/dev/null; then
			continue # built in
		fi
		dep=$(grep -E "(^|/)$m\.ko(\.xz|\.zst|\.gz)?:" "$moddir/modules.dep" | head -1)
		[[ -n $dep ]] || { echo "vmtest: $rel has no module $m" >&2; continue; }
		local mods i
		read -r -a mods <<<"${dep#*:}"
		for ((i = ${#mods[@]} - 1; i >= 0; i--)); do order+=("${mods[i]}"); done
		order+=("${dep%%:*}")
	done
	: >"$root/modules.load"
	for f in "${order[@]}"; do
		local base
		base=$(basename "$f")
		base=${base%.xz}; base=${base%.zst}; base=${base%.gz}
		[[ -e $root/modules/$base ]] && continue
		case $f in
		*.xz) xz -dc "$moddir/$f" >"$root/modules/$base" ;;
		*.zst) zstd -qdc "$moddir/$f" >"$root/modules/$base" ;;
		*.gz) gzip -dc "$moddir/$f" >"$root/modules/$base" ;;
		*) cp "$moddir/$f" "$root/modules/$base" ;;
		esac
		echo "$base" >>"$root/modules.load"
	done

	# NAME TIMEOUT COMMAND...: what /init runs, in order
	{
		echo "test_xdp 600 /tests/test_xdp"
		echo "test_dp_bpf 300 /tests/test_dp_bpf"
		# one process per case: a case that hangs or crashes costs only itself
		for c in "${splice_cases[@]}"; do echo "splice_bpf 300 /tests/splice_test bpf $c"; done
		# the sockmap behaviours the bpf plane relies on, one round each
		for p in $PROBES; do echo "probe_$p 300 /tests/kernel_probe /tests/kernel_probe.bpf.o $p 1"; done
	} >"$root/tests.list"
	cp vmtest/init.sh "$root/init"
	chmod +x "$root/init"

	(cd "$root" && find . | "$BUSYBOX" cpio -o -H newc 2>/dev/null) >"$cpio"
	rm -rf "$root"
	root=
}

# ---- one VM per kernel ---------------------------------------------------------------------
root=
initrd=$(mktemp /tmp/dvv-vmtest-initrd.XXXXXX)
trap 'rm -rf "$initrd" "$BUILD_LOG" ${root:+"$root"}' EXIT
mkdir -p "$OUT"
rm -f "$OUT"/*.log "$OUT"/*.unavailable
for spec in "${specs[@]}"; do
	echo "== vmtest: kernel $spec"
	if ! rel=$(vmtest/fetch.sh "$spec" 2>/tmp/dvv-vmtest-fetch.log); then
		why=$(tail -1 /tmp/dvv-vmtest-fetch.log)
		echo "   unavailable: $why"
		# Debian 12's own kernel must be testable; the others are taken when they can be had
		printf '%s\t%s\n' "$spec" "${why#fetch: }" >"$OUT/$spec.unavailable"
		[[ $spec == 6.1 ]] && printf 'required\n' >>"$OUT/$spec.unavailable"
		continue
	fi
	make_initrd "$rel" "$initrd"
	log=$OUT/$rel.log
	start=$(date +%s)
	timeout -k 10 "$TIMEOUT" qemu-system-x86_64 -machine q35 -accel tcg,thread=multi -cpu max \
		-smp "$CPUS" -m "$MEM" -kernel "$DVV_VMTEST_CACHE/kernels/$rel/vmlinuz" \
		-initrd "$initrd" \
		-append "console=ttyS0 quiet panic=-1 rdinit=/init" \
		-display none -monitor none -serial "file:$log" -net none -no-reboot
	rc=$?
	echo "VMTEST host qemu-exit=$rc seconds=$(($(date +%s) - start))" >>"$log"
	echo "   $rel: $(($(date +%s) - start)) s (qemu exit $rc), log $log"
done

python3 vmtest/report.py "$OUT"
