#!/bin/sh
# /init of a vmtest initramfs (vmtest/run.sh builds it): prepares what the tests need from the
# kernel (proc, sysfs, bpffs, debugfs, lo, modules), runs each line of /tests.list under a
# timeout and prints everything on the serial console between "VMTEST" markers that
# vmtest/report.py reads, then powers the VM off.
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t bpf bpf /sys/fs/bpf
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
ip link set lo up
ulimit -n 65536
ulimit -l unlimited

echo "VMTEST kernel $(uname -r)"
echo "VMTEST plan $(cut -d' ' -f1 /tests.list | tr '\n' ' ')"
echo "VMTEST cpus $(grep -c ^processor /proc/cpuinfo)"
for m in $(cat /modules.load); do
	if out=$(insmod "/modules/$m" 2>&1); then
		echo "VMTEST module $m ok"
	else
		echo "VMTEST module $m failed: $out"
	fi
done

while read -r name secs cmd; do
	echo "VMTEST begin $name"
	t0=$(cut -d. -f1 /proc/uptime)
	# shellcheck disable=SC2086
	timeout -s KILL "$secs" $cmd </dev/null 2>&1
	rc=$?
	echo "VMTEST end $name rc=$rc seconds=$(($(cut -d. -f1 /proc/uptime) - t0))"
done </tests.list

echo "VMTEST done"
sync
poweroff -f
