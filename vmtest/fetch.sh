#!/usr/bin/env bash
# Fetches Debian kernel packages for vmtest into a cache outside the repository and unpacks
# the two things a VM needs from each: the bootable image and its modules tree.
#
#   vmtest/fetch.sh 6.1       newest linux-image-6.1.0-N-amd64 in bookworm (Debian 12's LTS kernel)
#   vmtest/fetch.sh bpo       newest linux-image-*-amd64 in bookworm-backports (6.12 today)
#   vmtest/fetch.sh running   this machine's kernel, if /boot has its image (else exit 3)
#
# Prints the kernel release it made available (a directory $CACHE/kernels/RELEASE with vmlinuz
# and lib/modules/RELEASE). Exit 3: that kernel cannot be had here (reason on stderr).
# bookworm-backports is read through a private apt state under $CACHE, so the machine's own
# apt sources and lists are never changed.
set -euo pipefail

CACHE=${DVV_VMTEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dvv-vmtest}
which=${1:?usage: vmtest/fetch.sh 6.1|bpo|running}
mkdir -p "$CACHE/kernels" "$CACHE/debs"
# one fetch at a time per cache (two runs at once would unpack over each other)
exec 9>"$CACHE/.lock"
flock -w 600 9 || { echo "fetch: $CACHE is locked by another run" >&2; exit 3; }

# Unpacks a downloaded linux-image .deb into $CACHE/kernels/RELEASE (kept: vmlinuz + modules).
unpack() { # DEB
	local deb=$1 tmp rel
	tmp=$(mktemp -d "$CACHE/unpack.XXXXXX")
	trap 'rm -rf "$tmp"' RETURN
	dpkg-deb -x "$deb" "$tmp"
	rel=$(ls "$tmp/lib/modules" | head -1)
	[[ -n $rel && -f $tmp/boot/vmlinuz-$rel ]] || { echo "fetch: $deb holds no kernel image" >&2; return 1; }
	rm -rf "$CACHE/kernels/$rel"
	mkdir -p "$CACHE/kernels/$rel/lib/modules"
	cp "$tmp/boot/vmlinuz-$rel" "$CACHE/kernels/$rel/vmlinuz"
	mv "$tmp/lib/modules/$rel" "$CACHE/kernels/$rel/lib/modules/"
	# the package leaves modules.dep to the installer: run.sh reads it to find dependencies
	depmod -b "$CACHE/kernels/$rel" "$rel"
	echo "$rel"
}

# apt-get download PKG into $CACHE/debs, unless it is there already; prints the .deb path.
download() { # PKG APT-OPTIONS...
	local pkg=$1 deb
	shift
	deb=$(ls "$CACHE/debs/${pkg}_"*.deb 2>/dev/null | head -1 || true)
	if [[ -z $deb ]]; then
		(cd "$CACHE/debs" && apt-get -o APT::Sandbox::User=root "$@" download -q=2 "$pkg" >&2)
		deb=$(ls "$CACHE/debs/${pkg}_"*.deb | head -1)
	fi
	echo "$deb"
}

case $which in
6.1)
	# the machine's own bookworm lists (scripts/setup.sh runs apt-get update)
	pkg=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' | cut -d' ' -f1 | sort -V | tail -1)
	[[ -n $pkg ]] || { echo "fetch: no linux-image-6.1.0-*-amd64 in the apt lists (apt-get update?)" >&2; exit 3; }
	;;
bpo)
	apt_dir=$CACHE/apt
	mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
	echo "deb http://deb.debian.org/debian bookworm-backports main" >"$apt_dir/sources.list"
	APT=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
	     -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
	     -o Acquire::Languages=none -o APT::Sandbox::User=root)
	# refreshed at most once a day: the list is only needed to name the newest kernel
	if [[ -z $(find "$apt_dir/lists" -name '*Packages*' -mtime -1 2>/dev/null) ]]; then
		apt-get "${APT[@]}" update -q=2 >&2 || { echo "fetch: bookworm-backports unreachable" >&2; exit 3; }
	fi
	pkg=$(apt-cache "${APT[@]}" search --names-only '^linux-image-[0-9.]+\+[a-z0-9]+-amd64(-unsigned)?$' | cut -d' ' -f1 | sort -V | tail -1)
	[[ -n $pkg ]] || { echo "fetch: no linux-image-*+*-amd64 in bookworm-backports" >&2; exit 3; }
	;;
running)
	rel=$(uname -r)
	if [[ -d $CACHE/kernels/$rel ]]; then echo "$rel"; exit 0; fi
	if [[ ! -r /boot/vmlinuz-$rel || ! -d /lib/modules/$rel ]]; then
		echo "fetch: this machine's kernel $rel has no image under /boot (or no /lib/modules/$rel)" >&2
		exit 3
	fi
	mkdir -p "$CACHE/kernels/$rel/lib/modules"
	cp "/boot/vmlinuz-$rel" "$CACHE/kernels/$rel/vmlinuz"
	cp -a "/lib/modules/$rel" "$CACHE/kernels/$rel/lib/modules/"
	echo "$rel"
	exit 0
	;;
*)
	echo "usage: vmtest/fetch.sh 6.1|bpo|running" >&2
	exit 2
	;;
esac

# already unpacked? the release is the package name without linux-image- (and -unsigned)
rel=${pkg#linux-image-}
rel=${rel%-unsigned}
if [[ -f $CACHE/kernels/$rel/vmlinuz ]]; then echo "$rel"; exit 0; fi
deb=$(download "$pkg" ${APT[@]+"${APT[@]}"})
unpack "$deb"
rm -f "$deb" # only the unpacked kernel is kept
