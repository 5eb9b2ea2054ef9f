#!/bin/sh
# dvv-autoscale's entrypoint on Railway: resolves Redis's private name to the numeric address
# and execs the controller with the region's settings. RAILWAY_API_TOKEN (a project token or an
# account token) is read by dvv-autoscale from the environment and never logged.
#
# Required variables: DVV_REGION, DVV_RELAY_SERVICE_ID (the region's relay service),
# RAILWAY_ENVIRONMENT_ID (Railway sets it), RAILWAY_API_TOKEN. Optional: DVV_AUTOSCALE_ARGS
# (more flags, e.g. "--max 8 --out-pct 65"), DVV_REDIS_HOST, DVV_REDIS_PORT.
set -eu

die() {
	echo "autoscale-entrypoint: $*" >&2
	exit 2
}

[ -n "${DVV_REGION:-}" ] || die "DVV_REGION is not set"
[ -n "${DVV_RELAY_SERVICE_ID:-}" ] || die "DVV_RELAY_SERVICE_ID is not set"
[ -n "${RAILWAY_ENVIRONMENT_ID:-}" ] || die "RAILWAY_ENVIRONMENT_ID is not set"
host=${DVV_REDIS_HOST:-redis.railway.internal}
ip=$(getent ahosts "$host" | awk 'NR == 1 { print $1 }')
[ -n "$ip" ] || die "cannot resolve DVV_REDIS_HOST $host"

# word splitting of DVV_AUTOSCALE_ARGS is wanted: it holds several flags
# shellcheck disable=SC2086
exec /usr/local/bin/dvv-autoscale --redis "$ip:${DVV_REDIS_PORT:-6379}" --region "$DVV_REGION" \
	--service-id "$DVV_RELAY_SERVICE_ID" --environment-id "$RAILWAY_ENVIRONMENT_ID" \
	${DVV_AUTOSCALE_ARGS:-} "$@"
