#!/usr/bin/env bash
# Runs the whole product on this machine with an embedded default: a throwaway Redis and
# PostgreSQL, a relay, dvv-api with its web dashboard (and a local stand-in for Stripe, so the
# upgrade flow works offline), a dvv agent, and a small offline-mode Minecraft server (unless you
# point the agent at yours). Prints the address players dial, the hostname they use and the
# dashboard's address, then stays up until Ctrl-C (or SIGTERM) and cleans up after itself.
#
#   scripts/dvv-local.sh                       everything, sample server included
#   scripts/dvv-local.sh --local 127.0.0.1:25565   forward to your own server instead
#   scripts/dvv-local.sh --json                one JSON object on stdout: player_addr, hostname,
#                                              dashboard, api, ...
#   scripts/dvv-local.sh --proxy-protocol      send PROXY v2 to your server (Paper/Velocity with it on)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

json=0
local_addr=""
agent_extra=()
while (($#)); do
  case $1 in
    --json) json=1 ;;
    --local) local_addr=${2:?--local needs host:port}; shift ;;
    --proxy-protocol) agent_extra+=(--proxy-protocol) ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "dvv-local: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

say() { ((json)) || echo "$@"; }
log() { echo "dvv-local: $*" >&2; }

scripts/setup.sh >&2
make -s -j"$(nproc)" all >&2

run=$(mktemp -d /tmp/dvv-local.XXXXXX)
pids=()
pg_data=""
cleanup() {
  trap - EXIT INT TERM
  local p t
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  # the relay drains (--drain-timeout-s 2) and removes its BPF pins on the way out: give every
  # component up to 5 s to finish before anything is killed
  for ((t = 0; t < 50; t++)); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ -n $pg_data ]] && as_pg "$pg_bin/pg_ctl" -D "$pg_data" -m fast -w -t 10 stop >/dev/null 2>&1
  rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

port_free() { ! ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
pick_port() { # preferred port if free, else a free one from the kernel
  if port_free "$1"; then echo "$1"; else
    python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])' 2>/dev/null ||
      echo $((20000 + RANDOM % 20000))
  fi
}
wait_for() { # wait_for SECONDS CMD...
  local t=$(($1 * 10)); shift
  while ((t-- > 0)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}

# PostgreSQL refuses to run as root: as root it runs as the postgres user on a directory it owns
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
as_pg() { if (($(id -u) == 0)); then runuser -u postgres -- "$@"; else "$@"; fi; }

scripts/mkkeys.sh "$run/keys" >&2
# dvv-api signs agent tokens with <kid>.key; relays verify with the <kid>.pub files of a directory
mkdir -p "$run/keys/api-keys"
cp "$run/keys/jwt.key" "$run/keys/jwt.pub" "$run/keys/api-keys/"
redis_port=$(pick_port 16379)
pg_port=$(pick_port 15432)
api_port=$(pick_port 8080)
stripe_port=$(pick_port 12111)
player_port=$(pick_port 25565)
agent_port=$(pick_port 7000)
admin_port=$(pick_port 9100)

redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$run" \
  >"$run/redis.log" 2>&1 &
pids+=($!)
wait_for 5 redis-cli -p "$redis_port" ping || { log "redis did not start"; cat "$run/redis.log" >&2; exit 1; }

build/dvv-relay --player-listen "127.0.0.1:$player_port" --agent-listen "127.0.0.1:$agent_port" \
  --admin-listen "127.0.0.1:$admin_port" --redis "127.0.0.1:$redis_port" --region eu \
  --base-domain dvv.localhost --tls-cert "$run/keys/relay.pem" --tls-key "$run/keys/relay.key" \
  --jwt-pubkey "$run/keys/jwt-keys" --instance-id local-1 --drain-timeout-s 2 \
  2>"$run/relay.log" &
pids+=($!)
wait_for 10 curl -fsS "http://127.0.0.1:$admin_port/readyz" || { log "relay did not start"; cat "$run/relay.log" >&2; exit 1; }

mkdir -p "$run/pg"
(($(id -u) == 0)) && chown postgres:postgres "$run/pg" && chmod 755 "$run"
pg_data="$run/pg/data"
as_pg "$pg_bin/initdb" -D "$pg_data" -U dvv --auth=trust -E UTF8 -N >"$run/pg-init.log" 2>&1 ||
  { pg_data=""; log "initdb failed"; cat "$run/pg-init.log" >&2; exit 1; }
as_pg "$pg_bin/pg_ctl" -D "$pg_data" -l "$run/pg/log" -w -t 30 \
  -o "-p $pg_port -k $run/pg -c listen_addresses=127.0.0.1" start >/dev/null ||
  { log "postgresql did not start"; cat "$run/pg/log" >&2; exit 1; }
as_pg "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U dvv dvv

# the command the dashboard shows runs this checkout's agent against the sample server (or yours)
if [[ -z $local_addr ]]; then
  mc_port=$(pick_port 25566)
  cmd_local="127.0.0.1:$mc_port"
else
  cmd_local=$local_addr
fi
agent_cmd="$root/build/dvv"
[[ $agent_cmd =~ ^[A-Za-z0-9_./:-]+$ ]] || agent_cmd=build/dvv

api_url="http://127.0.0.1:$api_port"
stripe_key="sk_test_local_$(openssl rand -hex 8)"
webhook_secret="whsec_local_$(openssl rand -hex 16)"
node tests/api/stripe-standin.mjs serve --port "$stripe_port" --secret-key "$stripe_key" \
  --webhook-url "$api_url/v1/stripe/webhook" --webhook-secret "$webhook_secret" \
  >"$run/stripe-standin.log" 2>&1 &
pids+=($!)
DVV_API_STRIPE_SECRET_KEY=$stripe_key DVV_API_STRIPE_WEBHOOK_SECRET=$webhook_secret \
  build/dvv-api --listen "127.0.0.1:$api_port" --public-url "$api_url" \
  --pg "host=127.0.0.1 port=$pg_port user=dvv dbname=dvv" --redis "127.0.0.1:$redis_port" \
  --plans deploy/plans.json --web-root api/web --base-domain dvv.localhost \
  --relays "eu=127.0.0.1:$agent_port" --ca-pem "$run/keys/ca.pem" --jwt-key-dir "$run/keys/api-keys" \
  --stripe-api "http://127.0.0.1:$stripe_port" --agent-cmd "$agent_cmd" --agent-local "$cmd_local" \
  2>"$run/api.log" &
pids+=($!)
wait_for 20 curl -fsS "$api_url/readyz" || { log "dvv-api did not start"; cat "$run/api.log" >&2; exit 1; }

if [[ -z $local_addr ]]; then
  node tests/e2e/mc-server.mjs --port "$mc_port" --motd "A DVV tunnel demo server" \
    >"$run/mc.log" 2>&1 &
  pids+=($!)
  wait_for 20 grep -q listening "$run/mc.log" || { log "sample server did not start"; cat "$run/mc.log" >&2; exit 1; }
  local_addr="127.0.0.1:$mc_port"
fi

token=$(build/dvv-token --key "$run/keys/jwt.key" --kid jwt --sub local-user --tid local-tunnel --ttl 86400)
DVV_TOKEN=$token build/dvv --relay "127.0.0.1:$agent_port" --ca "$run/keys/ca.pem" \
  --local "$local_addr" --json "${agent_extra[@]+"${agent_extra[@]}"}" >"$run/agent.out" 2>"$run/agent.log" &
pids+=($!)
wait_for 15 grep -q '"tunnel_up"' "$run/agent.out" || { log "agent did not come up"; cat "$run/agent.log" >&2; exit 1; }
hostname=$(grep -m1 '"tunnel_up"' "$run/agent.out" | sed 's/.*"hostname":"\([^"]*\)".*/\1/')

if ((json)); then
  printf '{"player_addr":"127.0.0.1:%s","hostname":"%s","server":"%s","relay_agent_addr":"127.0.0.1:%s","admin":"http://127.0.0.1:%s","redis":"127.0.0.1:%s","dashboard":"%s/","api":"%s","postgres":"host=127.0.0.1 port=%s user=dvv dbname=dvv","stripe_standin":"http://127.0.0.1:%s","logs":"%s"}\n' \
    "$player_port" "$hostname" "$local_addr" "$agent_port" "$admin_port" "$redis_port" "$api_url" "$api_url" "$pg_port" "$stripe_port" "$run"
else
  cat <<MSG

  DVV is running locally.

  Players join:  $hostname   (dial 127.0.0.1:$player_port)
  Forwarding to: $local_addr

  In Minecraft, add a server with the address  $hostname:$player_port
  (*.localhost names resolve to 127.0.0.1 on most systems; if yours does not, add
  "127.0.0.1 $hostname" to /etc/hosts). From a script you can dial 127.0.0.1:$player_port
  and put $hostname in the handshake.

  Dashboard:     $api_url/   (sign up, create a token, run the command it shows;
                 "Upgrade" pays on a local stand-in for Stripe: nothing is charged)
  Metrics: http://127.0.0.1:$admin_port/metrics   Logs: $run
  Ctrl-C stops everything.
MSG
fi

# stay up until interrupted, or until a component dies
while :; do
  for p in "${pids[@]}"; do
    if ! kill -0 "$p" 2>/dev/null; then log "a component exited; logs follow"; tail -n 20 "$run"/*.log >&2; exit 1; fi
  done
  sleep 1
done
