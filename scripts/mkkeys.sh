#!/usr/bin/env bash
# Development keys and certificates, made with the openssl CLI:
#   DIR/jwt.key  DIR/jwt.pub     ES256 (EC P-256) pair: dvv-token signs, the relay verifies
#   DIR/jwt-keys/jwt.pub         the same public key in a key directory (kid "jwt"): a relay
#                                given --jwt-pubkey DIR/jwt-keys accepts tokens minted with
#                                --kid jwt and any <kid>.pub added there later (rotation)
#   DIR/ca.key   DIR/ca.pem      development CA (10 years)
#   DIR/relay.key DIR/relay.pem  relay certificate signed by that CA, SAN DNS:localhost,
#                                IP:127.0.0.1, IP:::1 plus $DVV_CERT_SANS ("DNS:foo,IP:10.0.0.1")
# Idempotent: a file that exists is never touched (delete it to regenerate). Private keys are
# mode 600. Every file appears whole or not at all (written aside, then renamed).
#
# usage: scripts/mkkeys.sh [-v] DIR      (-v: say what was created)
set -euo pipefail

verbose=0
usage() { echo "usage: $0 [-v] DIR" >&2; exit 2; }
while getopts v opt; do
	case $opt in
	v) verbose=1 ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[[ $# -eq 1 && -n $1 ]] || usage
dir=$1

sans="DNS:localhost,IP:127.0.0.1,IP:::1"
if [[ -n ${DVV_CERT_SANS:-} ]]; then
	if [[ $DVV_CERT_SANS == *[[:space:]]* ]]; then
		echo "$0: DVV_CERT_SANS must be comma-separated, without spaces or newlines" >&2
		exit 2
	fi
	IFS=, read -r -a extra <<<"$DVV_CERT_SANS"
	for san in "${extra[@]}"; do
		# Only plain names and addresses: anything else would be read as openssl config.
		if [[ ! $san =~ ^(DNS:[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?|IP:[0-9A-Fa-f:.]+)$ ]]; then
			echo "$0: DVV_CERT_SANS entry '$san' is not DNS:name or IP:address" >&2
			exit 2
		fi
		sans+=",$san"
	done
fi

mkdir -p -- "$dir"
tmp=$(mktemp -d "$dir/.mkkeys.XXXXXX")
trap 'rm -rf -- "$tmp"' EXIT

say() { if ((verbose)); then echo "$@"; fi; }

# run CMD...: openssl is chatty on stderr; show its output only when it fails.
run() {
	if ! "$@" >"$tmp/log" 2>&1; then
		echo "$0: failed: $*" >&2
		cat "$tmp/log" >&2
		exit 1
	fi
}

# publish NAME MODE: move the finished $tmp/NAME into place unless something got there first.
publish() {
	chmod "$2" "$tmp/$1"
	mv -n -- "$tmp/$1" "$dir/$1"
	say "created $dir/$1"
}

new_ec_key() { # NAME
	[[ -e $dir/$1 ]] && return 0
	(umask 077 && run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
		-out "$tmp/$1")
	publish "$1" 600
}

# JWT signing pair.
new_ec_key jwt.key
if [[ ! -e $dir/jwt.pub ]]; then
	run openssl pkey -in "$dir/jwt.key" -pubout -out "$tmp/jwt.pub"
	publish jwt.pub 644
fi

# Key directory (--jwt-pubkey DIR/jwt-keys): kid = file name without .pub.
if [[ ! -e $dir/jwt-keys/jwt.pub ]]; then
	mkdir -p -- "$dir/jwt-keys"
	cp -- "$dir/jwt.pub" "$tmp/jwt-keys.pub"
	chmod 644 "$tmp/jwt-keys.pub"
	mv -n -- "$tmp/jwt-keys.pub" "$dir/jwt-keys/jwt.pub"
	say "created $dir/jwt-keys/jwt.pub"
fi

# Development CA.
new_ec_key ca.key
if [[ ! -e $dir/ca.pem ]]; then
	run openssl req -new -x509 -sha256 -days 3650 -key "$dir/ca.key" -out "$tmp/ca.pem" \
		-subj "/O=DVV development/CN=DVV development CA" \
		-addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" \
		-addext "subjectKeyIdentifier=hash"
	publish ca.pem 644
fi

# Relay certificate.
new_ec_key relay.key
if [[ ! -e $dir/relay.pem ]]; then
	cat >"$tmp/relay.ext" <<-EOF
		basicConstraints = critical,CA:FALSE
		keyUsage = critical,digitalSignature
		extendedKeyUsage = serverAuth
		subjectKeyIdentifier = hash
		authorityKeyIdentifier = keyid
		subjectAltName = $sans
	EOF
	run openssl req -new -sha256 -key "$dir/relay.key" -out "$tmp/relay.csr" \
		-subj "/O=DVV development/CN=localhost"
	run openssl x509 -req -sha256 -days 825 -in "$tmp/relay.csr" \
		-CA "$dir/ca.pem" -CAkey "$dir/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
		-extfile "$tmp/relay.ext" -out "$tmp/relay.pem"
	publish relay.pem 644
	say "relay certificate SAN: $sans"
fi
