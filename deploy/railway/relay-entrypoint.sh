#!/bin/sh
# dvv-relay's entrypoint on Railway: turns the service's variables into the relay's key files
# and settings, then execs the relay, which becomes PID 1 and receives Railway's SIGTERM (the
# drain). Every DVV_* variable the relay knows (dvv-relay --help) can still be set directly.
#
# Required variables:
#   DVV_TLS_CERT_PEM, DVV_TLS_KEY_PEM  the agent control channel's certificate chain and key
#   DVV_JWT_PUB_PEM                    the token signing public key (dvv-api's <kid>.pub)
#   DVV_CLUSTER_SECRET                 shared by every relay replica (forwarding HMAC)
#   DVV_REDIS_HOST                     Redis host (e.g. redis.railway.internal), DVV_REDIS_PORT
set -eu
umask 077

die() {
	echo "relay-entrypoint: $*" >&2
	exit 2
}

keys=${DVV_KEY_DIR:-/tmp/dvv-keys}
mkdir -p "$keys"

# write VAR FILE: the PEM text held in $VAR (Railway variables keep newlines) into FILE
write() {
	v=$(printenv "$1" || true)
	[ -n "$v" ] || die "$1 is not set"
	printf '%s\n' "$v" >"$2"
}
write DVV_TLS_CERT_PEM "$keys/relay.pem"
write DVV_TLS_KEY_PEM "$keys/relay.key"
write DVV_JWT_PUB_PEM "$keys/jwt.pub"
[ -n "${DVV_CLUSTER_SECRET:-}" ] || die "DVV_CLUSTER_SECRET is not set"
export DVV_TLS_CERT="$keys/relay.pem" DVV_TLS_KEY="$keys/relay.key" DVV_JWT_PUBKEY="$keys/jwt.pub"
# the PEMs are in files now; the relay has no use for the copies in its environment
unset DVV_TLS_CERT_PEM DVV_TLS_KEY_PEM DVV_JWT_PUB_PEM

# --redis wants numeric addresses (the relay never resolves names on its event loop):
# resolve the private name here, once; Railway's private network is IPv6
if [ -z "${DVV_REDIS:-}" ]; then
	host=${DVV_REDIS_HOST:-redis.railway.internal}
	ip=$(getent ahosts "$host" | awk 'NR == 1 { print $1 }')
	[ -n "$ip" ] || die "cannot resolve DVV_REDIS_HOST $host"
	case $ip in
	*:*) DVV_REDIS="[$ip]:${DVV_REDIS_PORT:-6379}" ;;
	*) DVV_REDIS="$ip:${DVV_REDIS_PORT:-6379}" ;;
	esac
	export DVV_REDIS
fi

# One public TCP port for players and agents (Railway's TCP proxy gives one per service)
: "${DVV_ONE_PORT:=[::]:25565}"
# Railway health-checks $PORT: the admin endpoints listen there, on the private network
: "${DVV_ADMIN_LISTEN:=[::]:${PORT:-9100}}"
# Forwarding between replicas over the private network, published with this replica's own
# private address (the one of RAILWAY_PRIVATE_DOMAIN's addresses that is local)
: "${DVV_INTERNAL_LISTEN:=[::]:7001}"
: "${DVV_ADVERTISE_ADDR:=railway}"
# Agents are told to dial the public TCP proxy (MOVE targets, WELCOME peers)
if [ -z "${DVV_PUBLIC_AGENT_ADDR:-}" ] && [ -n "${RAILWAY_TCP_PROXY_DOMAIN:-}" ]; then
	DVV_PUBLIC_AGENT_ADDR="$RAILWAY_TCP_PROXY_DOMAIN:${RAILWAY_TCP_PROXY_PORT:-25565}"
fi
# A replica's id names it in Redis: Railway's replica id is unique and stable for its life
: "${DVV_INSTANCE_ID:=relay-${RAILWAY_REPLICA_ID:-$(hostname)}}"
export DVV_ONE_PORT DVV_ADMIN_LISTEN DVV_INTERNAL_LISTEN DVV_ADVERTISE_ADDR DVV_INSTANCE_ID
[ -n "${DVV_PUBLIC_AGENT_ADDR:-}" ] && export DVV_PUBLIC_AGENT_ADDR

exec /usr/local/bin/dvv-relay "$@"
