#!/usr/bin/env bash
# Runs the whole product on this machine with an embedded default: a throwaway Redis, a relay,
# a dvv agent, and a small offline-mode Minecraft server (unless you point the agent at yours).
# Prints the address players dial and the hostname they use, then stays up until Ctrl-C and
# cleans up after itself.
#
#   scripts/dvv-local.sh                       everything, sample server included
#   scripts/dvv-local.sh --local 127.0.0.1:25565   forward to your own server instead
#   scripts/dvv-local.sh --json                one JSON object on stdout: player_addr, hostname, ...
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
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
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
cleanup() {
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 0.3
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
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

scripts/mkkeys.sh "$run/keys"
redis_port=$(pick_port 16379)
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
  --jwt-pubkey "$run/keys/jwt.pub" --instance-id local-1 --drain-timeout-s 2 \
  2>"$run/relay.log" &
pids+=($!)
wait_for 10 curl -fsS "http://127.0.0.1:$admin_port/readyz" || { log "relay did not start"; cat "$run/relay.log" >&2; exit 1; }

if [[ -z $local_addr ]]; then
  mc_port=$(pick_port 25566)
  node tests/e2e/mc-server.mjs --port "$mc_port" --motd "A DVV tunnel demo server" \
    >"$run/mc.log" 2>&1 &
  pids+=($!)
  wait_for 20 grep -q listening "$run/mc.log" || { log "sample server did not start"; cat "$run/mc.log" >&2; exit 1; }
  local_addr="127.0.0.1:$mc_port"
fi

token=$(build/dvv-token --key "$run/keys/jwt.key" --sub local-user --tid local-tunnel --ttl 86400)
DVV_TOKEN=$token build/dvv --relay "127.0.0.1:$agent_port" --ca "$run/keys/ca.pem" \
  --local "$local_addr" --json "${agent_extra[@]+"${agent_extra[@]}"}" >"$run/agent.out" 2>"$run/agent.log" &
pids+=($!)
wait_for 15 grep -q '"tunnel_up"' "$run/agent.out" || { log "agent did not come up"; cat "$run/agent.log" >&2; exit 1; }
hostname=$(grep -m1 '"tunnel_up"' "$run/agent.out" | sed 's/.*"hostname":"\([^"]*\)".*/\1/')

if ((json)); then
  printf '{"player_addr":"127.0.0.1:%s","hostname":"%s","server":"%s","relay_agent_addr":"127.0.0.1:%s","admin":"http://127.0.0.1:%s","redis":"127.0.0.1:%s","logs":"%s"}\n' \
    "$player_port" "$hostname" "$local_addr" "$agent_port" "$admin_port" "$redis_port" "$run"
else
  cat <<MSG

  DVV is running locally.

  Players join:  $hostname   (dial 127.0.0.1:$player_port)
  Forwarding to: $local_addr

  In Minecraft, add a server with the address  $hostname:$player_port
  (*.localhost names resolve to 127.0.0.1 on most systems; if yours does not, add
  "127.0.0.1 $hostname" to /etc/hosts). From a script you can dial 127.0.0.1:$player_port
  and put $hostname in the handshake.

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
