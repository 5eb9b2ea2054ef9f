#!/bin/sh
# dvv-api's entrypoint on Railway: signing keys from variables into files, PostgreSQL from the
# plugin's variables, Redis resolved to the numeric address dvv-api wants, HTTP on $PORT; then
# execs dvv-api (PID 1: it gets SIGTERM).
#
# Required variables:
#   DVV_JWT_KID, DVV_JWT_KEY_PEM, DVV_JWT_PUB_PEM   the token signing key pair (scripts/mkkeys.sh)
#   PGHOST PGPORT PGUSER PGPASSWORD PGDATABASE      the PostgreSQL plugin's (reference them)
#   DVV_REDIS_HOST                                  Redis host (e.g. redis.railway.internal)
#   DVV_API_PUBLIC_URL, DVV_API_BASE_DOMAIN, DVV_API_RELAYS   as in dvv-api --help
set -eu
umask 077

die() {
	echo "api-entrypoint: $*" >&2
	exit 2
}

keys=${DVV_API_JWT_KEY_DIR:-/tmp/dvv-jwt}
mkdir -p "$keys"
[ -n "${DVV_JWT_KID:-}" ] || die "DVV_JWT_KID is not set"
case $DVV_JWT_KID in
*/* | .*) die "DVV_JWT_KID must be a plain name" ;;
esac
write() {
	v=$(printenv "$1" || true)
	[ -n "$v" ] || die "$1 is not set"
	printf '%s\n' "$v" >"$2"
}
write DVV_JWT_KEY_PEM "$keys/$DVV_JWT_KID.key"
write DVV_JWT_PUB_PEM "$keys/$DVV_JWT_KID.pub"
unset DVV_JWT_KEY_PEM DVV_JWT_PUB_PEM
export DVV_API_JWT_KEY_DIR="$keys" DVV_API_JWT_KID="$DVV_JWT_KID"

# libpq reads PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE itself: the conninfo stays
# free of the password (dvv-api never logs it either way)
: "${DVV_API_PG:=sslmode=prefer}"
export DVV_API_PG

if [ -z "${DVV_API_REDIS:-}" ]; then
	host=${DVV_REDIS_HOST:-redis.railway.internal}
	ip=$(getent ahosts "$host" | awk 'NR == 1 { print $1 }')
	[ -n "$ip" ] || die "cannot resolve DVV_REDIS_HOST $host"
	# dvv-api splits at the last ':' and hands the rest to hiredis: no brackets, also for IPv6
	DVV_API_REDIS="$ip:${DVV_REDIS_PORT:-6379}"
	export DVV_API_REDIS
fi
: "${DVV_API_LISTEN:=[::]:${PORT:-8080}}"
export DVV_API_LISTEN

exec /usr/local/bin/dvv-api "$@"
