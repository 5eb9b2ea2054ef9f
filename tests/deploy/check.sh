#!/usr/bin/env bash
# Static checks of deploy/ with the tools Debian has, in cmocka-like output:
#   - shellcheck on every shell script under deploy/ and tests/deploy/
#   - systemd-analyze verify on every unit (ExecStart paths pointed at the built binaries)
#   - the Railway configs are JSON, name an existing Dockerfile, and drainingSeconds covers
#     the relay's drain deadline; the relay unit's TimeoutStopSec covers it too
#   - every Dockerfile starts from a Debian 12 image, copies only files that exist, and
#     installs only packages Debian 12 has (apt-cache)
#   - every sysctl in deploy/sysctl.d names a key this kernel has
#   - every DVV_* variable in the example region configs is a relay option, and the relay
#     accepts the values (it parses its environment, then --version exits)
# A container build is not done here: podman/buildah need the debian:12 base image from a
# registry, and these machines reach only Debian's package archive.
#
#   BUILD=build-san tests/deploy/check.sh
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
BUILD=${BUILD:-build-san}
pass=0
fail=0
failed=()

ok() {
	echo "[       OK ] $1"
	pass=$((pass + 1))
}
bad() {
	echo "[  FAILED  ] $1"
	[[ -n ${2:-} ]] && printf '%s\n' "$2" | sed 's/^/             /'
	fail=$((fail + 1))
	failed+=("$1")
}

tmp=$(mktemp -d /tmp/dvv-deploy-check.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# ---- shell scripts
if command -v shellcheck >/dev/null; then
	while IFS= read -r f; do
		if out=$(shellcheck -x "$f" 2>&1); then ok "shellcheck $f"; else bad "shellcheck $f" "$out"; fi
	done < <(find deploy tests/deploy -name '*.sh' | sort)
else
	bad "shellcheck is not installed (apt-get install shellcheck)"
fi

# ---- systemd units
if command -v systemd-analyze >/dev/null; then
	for u in deploy/systemd/*.service; do
		name=$(basename "$u")
		sed "s#/usr/local/bin/#$PWD/$BUILD/#g" "$u" >"$tmp/$name"
		inst=${name/@.service/@eu.service}
		# verify prints warnings (unknown keys, bad values) but still exits 0: any output fails
		out=$(cd "$tmp" && systemd-analyze verify --man=no "$inst" 2>&1)
		rc=$?
		if [[ $rc -eq 0 && -z $out ]]; then ok "systemd-analyze verify $name"; else bad "systemd-analyze verify $name" "$out"; fi
	done
else
	bad "systemd-analyze is not installed"
fi

# ---- drain deadline wiring
drain=$(sed -n 's/.*DVV_DRAIN_TIMEOUT_S=\([0-9][0-9]*\).*/\1/p' deploy/railway/relay.Dockerfile | head -1)
json() { # FILE EXPR: python3 evaluates EXPR on the parsed JSON as j
	python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}
for cfg in deploy/railway/*.railway.json; do
	if ! out=$(json "$cfg" 'j["build"]["dockerfilePath"]' 2>&1); then
		bad "$cfg is JSON with build.dockerfilePath" "$out"
		continue
	fi
	if [[ -f $out ]]; then ok "$cfg builds $out"; else bad "$cfg: dockerfilePath $out does not exist"; fi
done
ds=$(json deploy/railway/relay.railway.json 'j["deploy"]["drainingSeconds"]' 2>/dev/null)
os=$(json deploy/railway/relay.railway.json 'j["deploy"]["overlapSeconds"]' 2>/dev/null)
hp=$(json deploy/railway/relay.railway.json 'j["deploy"]["healthcheckPath"]' 2>/dev/null)
if [[ -n $drain && $ds =~ ^[0-9]+$ ]] && ((ds >= drain + 5)); then
	ok "relay drainingSeconds $ds covers the drain deadline ${drain} s plus 5 s to exit"
else
	bad "relay drainingSeconds '$ds' must be >= the Dockerfile's DVV_DRAIN_TIMEOUT_S '$drain' + 5"
fi
if [[ $os =~ ^[0-9]+$ ]] && ((os >= 10)); then
	ok "relay overlapSeconds $os lets new replicas heartbeat into placement before the old ones drain"
else
	bad "relay overlapSeconds '$os' must be >= 10"
fi
if [[ $hp == /readyz ]] && grep -q '"/readyz"' userspace/admin.c; then
	ok "relay health check path $hp is served by the relay's admin port"
else
	bad "relay healthcheckPath '$hp' is not an endpoint of userspace/admin.c"
fi
unit_drain=30 # dvv-relay's default --drain-timeout-s
stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)/\1/p' deploy/systemd/dvv-relay.service)
if [[ $stop =~ ^[0-9]+$ ]] && ((stop >= unit_drain + 5)); then
	ok "dvv-relay.service TimeoutStopSec $stop covers the default drain deadline"
else
	bad "dvv-relay.service TimeoutStopSec '$stop' < $unit_drain + 5"
fi
help=$("$BUILD/dvv-relay" --help)
if grep -q -- '--drain-timeout-s' <<<"$help"; then ok "the relay has --drain-timeout-s"; else bad "the relay has no --drain-timeout-s"; fi

# ---- Dockerfiles
for df in deploy/railway/*.Dockerfile; do
	froms=$(awk 'toupper($1) == "FROM" { print $2 }' "$df")
	nonDebian=$(echo "$froms" | grep -vE '^debian:12(-slim)?$' || true)
	if [[ -n $froms && -z $nonDebian ]]; then ok "$df: Debian 12 base images"; else bad "$df: base images $froms"; fi
	missing=""
	while read -r src; do
		[[ -e $src ]] || missing+="$src "
	done < <(awk 'toupper($1) == "COPY" && $2 !~ /^--from/ { for (i = 2; i < NF; i++) print $i }' "$df")
	if [[ -z $missing ]]; then ok "$df: every COPY source exists"; else bad "$df: COPY sources missing: $missing"; fi
	pkgs=$(tr '\n' ' ' <"$df" | sed 's/\\ / /g' | grep -o 'apt-get install[^&]*' | sed 's/apt-get install//' |
		tr ' ' '\n' | grep -vE '^(-|$)' | sort -u)
	unknown=""
	for p in $pkgs; do
		apt-cache show --no-all-versions "$p" >/dev/null 2>&1 || unknown+="$p "
	done
	if [[ -n $pkgs && -z $unknown ]]; then ok "$df: $(echo "$pkgs" | wc -w) packages, all in Debian 12"; else bad "$df: not in Debian 12: ${unknown:-no packages found}"; fi
	# the run stage installs the package of every library the binary it copies links directly
	# (its DT_NEEDED entries, found where ldd resolves them; dpkg -S names the package; apt
	# brings their own dependencies). libc6 and libgcc-s1 are in the base image, the
	# sanitizer runtimes only in SAN builds.
	runpkgs=$(awk 'toupper($1) == "FROM" { n++ } n == 2' "$df" | tr '\n' ' ' | sed 's/\\ / /g' |
		grep -o 'apt-get install[^&]*' | sed 's/apt-get install//' | tr ' ' '\n' | grep -vE '^(-|$)')
	while read -r b; do
		need=""
		needed=$(objdump -p "$BUILD/$b" | awk '$1 == "NEEDED" { print $2 }')
		while read -r lib; do
			pkg=$(dpkg -S "$lib" 2>/dev/null | head -1 | cut -d: -f1)
			[[ -z $pkg ]] && pkg=$(dpkg -S "$(readlink -f "$lib")" 2>/dev/null | head -1 | cut -d: -f1)
			case $pkg in libc6 | libgcc-s1 | libasan* | libubsan* | gcc-*) continue ;; esac
			grep -qx "$pkg" <<<"$runpkgs" || need+="${pkg:-?($lib)} "
		done < <(ldd "$BUILD/$b" | awk -v n="$needed" 'BEGIN { split(n, a, "\n"); for (i in a) want[a[i]] = 1 }
			$2 == "=>" && $3 ~ /^\// && ($1 in want) { print $3 }')
		if [[ -z $need ]]; then ok "$df: the run stage has every library $b links"; else bad "$df: $b links libraries of packages the run stage lacks: $need"; fi
	done < <(sed -n 's#^COPY --from=build /src/build/\([a-z-]*\) .*#\1#p' "$df")
done

# ---- sysctls
for f in deploy/sysctl.d/*.conf; do
	unknown=""
	while IFS='=' read -r k _; do
		k=$(echo "$k" | tr -d ' ')
		[[ -z $k || $k == \#* ]] && continue
		[[ -e /proc/sys/${k//.//} ]] || unknown+="$k "
	done <"$f"
	if [[ -z $unknown ]]; then ok "$f: every key exists in /proc/sys"; else bad "$f: unknown keys: $unknown"; fi
done

# ---- example region configs
opts=$(sed -n 's/^  --\([a-z0-9-]*\).*/\1/p' <<<"$help" | tr 'a-z-' 'A-Z_' | sed 's/^/DVV_/')
for f in deploy/examples/*.env; do
	unknown=""
	vars=()
	while IFS= read -r line; do
		[[ -z $line || $line == \#* ]] && continue
		k=${line%%=*}
		grep -qx "$k" <<<"$opts" || unknown+="$k "
		vars+=("$line")
	done <"$f"
	if [[ -z $unknown ]]; then ok "$f: every variable is a relay option"; else bad "$f: not relay options: $unknown"; fi
	if out=$(env -i "${vars[@]}" "$BUILD/dvv-relay" --version 2>&1); then ok "$f: the relay accepts its values"; else bad "$f: the relay refuses it" "$out"; fi
done

echo "[==========] $((pass + fail)) test(s) run."
echo "[  PASSED  ] $pass test(s)."
if ((fail)); then
	echo "[  FAILED  ] $fail test(s), listed below:"
	printf '[  FAILED  ] %s\n' "${failed[@]}"
	exit 1
fi
