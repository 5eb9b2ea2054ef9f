#!/usr/bin/env bash
# Runs the whole product on this machine with an embedded default: a throwaway Redis and
# PostgreSQL, a relay, dvv-api with its web dashboard (and a local stand-in for Stripe, so the
# upgrade flow works offline), a dvv agent, and a small offline-mode Minecraft server (unless you
# point the agent at yours). Prints the address players dial (localhost: the relay's default
# tunnel is the demo's) and the dashboard's address, then stays up until Ctrl-C, SIGTERM or
# SIGHUP, lets the relay drain, and removes every process, file and BPF pin it made.
#
#   scripts/dvv-local.sh                       everything, sample server included
#   scripts/dvv-local.sh --local 127.0.0.1:25565   forward to your own server instead
#   scripts/dvv-local.sh --json                one JSON object on stdout: player_addr, hostname,
#                                              dashboard, api, ...
#   scripts/dvv-local.sh --proxy-protocol      send PROXY v2 to your server (Paper/Velocity with it on)
#   scripts/dvv-local.sh --instance-id ID      the relay's id (default local-1): its BPF pins are
#                                              /sys/fs/bpf/dvv/ID while it runs
#   DVV_BUILD=build-san scripts/dvv-local.sh   use binaries built there (no setup, no make)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

json=0
instance=local-1
local_addr=""
agent_extra=()
while (($#)); do
  case $1 in
    --json) json=1 ;;
    --local) local_addr=${2:?--local needs host:port}; shift ;;
    --proxy-protocol) agent_extra+=(--proxy-protocol) ;;
    --instance-id) instance=${2:?--instance-id needs an id}; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "dvv-local: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

say() { ((json)) || echo "$@"; }
log() { echo "dvv-local: $*" >&2; }

bin=${DVV_BUILD:-build}
if [[ -z ${DVV_BUILD:-} ]]; then
  scripts/setup.sh >&2
  make -s -j"$(nproc)" all >&2
fi

run=$(mktemp -d /tmp/dvv-local.XXXXXX)
pids=()
relay_pid=""
pg_data=""
# Every component runs in its own session (setsid): a Ctrl-C or a signal to this script's process
# group reaches only the script, whose cleanup stops them. The relay drains for --drain-timeout-s
# on its first SIGTERM and exits at once on a second, so it gets exactly one, from cleanup. It is waited for up to the drain plus a margin,
# then killed, and then its pins are removed here (a killed relay cannot remove them).
drain_s=2
cleanup() {
  trap '' INT TERM HUP # a second Ctrl-C must not cut the cleanup short
  trap - EXIT
  local p t alive
  if [[ -n $relay_pid ]] && kill -0 "$relay_pid" 2>/dev/null; then
    # a service manager may have signalled the relay itself (the whole cgroup): no second signal
    grep -q 'draining (up to' "$run/relay.log" 2>/dev/null || kill -TERM "$relay_pid" 2>/dev/null || true
  fi
  for p in "${pids[@]}"; do [[ $p == "$relay_pid" ]] || kill -TERM "$p" 2>/dev/null || true; done
  for ((t = 0; t < (drain_s + 3) * 10; t++)); do
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for p in "${pids[@]}"; do
    if kill -0 "$p" 2>/dev/null; then
      log "pid $p did not stop in $((drain_s + 3)) s: killing it"
      kill -KILL "$p" 2>/dev/null || true
    fi
  done
  wait 2>/dev/null || true
  # left behind only by a relay that was killed (or crashed): bpffs pins are removed with rm
  [[ -d /sys/fs/bpf/dvv/$instance ]] && rm -rf "/sys/fs/bpf/dvv/$instance"
  [[ -n $pg_data ]] && as_pg "$pg_bin/pg_ctl" -D "$pg_data" -m fast -w -t 10 stop >/dev/null 2>&1
  rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 0' INT TERM HUP

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
# the demo's tunnel has a fixed label (a custom name, honoured for paid tokens), so the relay can
# make it the default: players who dial localhost or 127.0.0.1 reach it without any DNS name
label=demo
redis_port=$(pick_port 16379)
pg_port=$(pick_port 15432)
api_port=$(pick_port 8080)
stripe_port=$(pick_port 12111)
player_port=$(pick_port 25565)
agent_port=$(pick_port 7000)
admin_port=$(pick_port 9100)

setsid redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$run" \
  >"$run/redis.log" 2>&1 &
pids+=($!)
wait_for 5 redis-cli -p "$redis_port" ping || { log "redis did not start"; cat "$run/redis.log" >&2; exit 1; }

setsid "$bin/dvv-relay" --player-listen "127.0.0.1:$player_port" --agent-listen "127.0.0.1:$agent_port" \
  --admin-listen "127.0.0.1:$admin_port" --redis "127.0.0.1:$redis_port" --region eu \
  --base-domain dvv.localhost --tls-cert "$run/keys/relay.pem" --tls-key "$run/keys/relay.key" \
  --jwt-pubkey "$run/keys/jwt-keys" --instance-id "$instance" --drain-timeout-s "$drain_s" \
  --default-tunnel "$label" 2>"$run/relay.log" &
relay_pid=$!
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
agent_cmd="$root/$bin/dvv"
[[ $agent_cmd =~ ^[A-Za-z0-9_./:-]+$ ]] || agent_cmd=$bin/dvv

api_url="http://127.0.0.1:$api_port"
stripe_key="sk_test_local_$(openssl rand -hex 8)"
webhook_secret="whsec_local_$(openssl rand -hex 16)"
setsid node tests/api/stripe-standin.mjs serve --port "$stripe_port" --secret-key "$stripe_key" \
  --webhook-url "$api_url/v1/stripe/webhook" --webhook-secret "$webhook_secret" \
  >"$run/stripe-standin.log" 2>&1 &
pids+=($!)
DVV_API_STRIPE_SECRET_KEY=$stripe_key DVV_API_STRIPE_WEBHOOK_SECRET=$webhook_secret \
  setsid "$bin/dvv-api" --listen "127.0.0.1:$api_port" --public-url "$api_url" \
  --pg "host=127.0.0.1 port=$pg_port user=dvv dbname=dvv" --redis "127.0.0.1:$redis_port" \
  --plans deploy/plans.json --web-root api/web --base-domain dvv.localhost \
  --relays "eu=127.0.0.1:$agent_port" --ca-pem "$run/keys/ca.pem" --jwt-key-dir "$run/keys/api-keys" \
  --stripe-api "http://127.0.0.1:$stripe_port" --agent-cmd "$agent_cmd" --agent-local "$cmd_local" \
  2>"$run/api.log" &
pids+=($!)
wait_for 20 curl -fsS "$api_url/readyz" || { log "dvv-api did not start"; cat "$run/api.log" >&2; exit 1; }

if [[ -z $local_addr ]]; then
  setsid node tests/e2e/mc-server.mjs --port "$mc_port" --motd "A DVV tunnel demo server" \
    >"$run/mc.log" 2>&1 &
  pids+=($!)
  wait_for 20 grep -q listening "$run/mc.log" || { log "sample server did not start"; cat "$run/mc.log" >&2; exit 1; }
  local_addr="127.0.0.1:$mc_port"
fi

token=$("$bin/dvv-token" --key "$run/keys/jwt.key" --kid jwt --sub local-user --tid local-tunnel --ttl 86400 \
  --plan paid --name "$label")
DVV_TOKEN=$token setsid "$bin/dvv" --relay "127.0.0.1:$agent_port" --ca "$run/keys/ca.pem" \
  --local "$local_addr" --json "${agent_extra[@]+"${agent_extra[@]}"}" >"$run/agent.out" 2>"$run/agent.log" &
pids+=($!)
wait_for 15 grep -q '"tunnel_up"' "$run/agent.out" || { log "agent did not come up"; cat "$run/agent.log" >&2; exit 1; }
hostname=$(grep -m1 '"tunnel_up"' "$run/agent.out" | sed 's/.*"hostname":"\([^"]*\)".*/\1/')

player_suffix=""
((player_port == 25565)) || player_suffix=":$player_port"
player_host="localhost$player_suffix"
if ((json)); then
  printf '{"player_addr":"127.0.0.1:%s","hostname":"%s","instance_id":"%s","server":"%s","relay_agent_addr":"127.0.0.1:%s","admin":"http://127.0.0.1:%s","redis":"127.0.0.1:%s","dashboard":"%s/","api":"%s","postgres":"host=127.0.0.1 port=%s user=dvv dbname=dvv","stripe_standin":"http://127.0.0.1:%s","logs":"%s"}\n' \
    "$player_port" "$hostname" "$instance" "$local_addr" "$agent_port" "$admin_port" "$redis_port" "$api_url" "$api_url" "$pg_port" "$stripe_port" "$run"
else
  cat <<MSG

  DVV is running locally.

  Players join:  $player_host   (the relay's default tunnel; its name is $hostname)
  Forwarding to: $local_addr

  In Minecraft, add a server with the address  $player_host
  (or 127.0.0.1${player_suffix}). Names that are no tunnel name reach this demo's tunnel; the
  tunnel's own name works where *.localhost resolves to 127.0.0.1 ($hostname:$player_port).

  Dashboard:     $api_url/   (sign up, create a token, run the command it shows;
                 "Upgrade" pays on a local stand-in for Stripe: nothing is charged)
  Metrics: http://127.0.0.1:$admin_port/metrics   Logs: $run
  Ctrl-C stops everything (so do SIGTERM and SIGHUP; the relay drains for ${drain_s} s first).
MSG
fi

# stay up until interrupted, or until a component dies
while :; do
  for p in "${pids[@]}"; do
    if ! kill -0 "$p" 2>/dev/null; then log "a component exited; logs follow"; tail -n 20 "$run"/*.log >&2; exit 1; fi
  done
  sleep 1 &
  wait $! || true # returns at once on a signal: the trap runs without waiting out the sleep
done
