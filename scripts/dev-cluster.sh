#!/usr/bin/env bash
# A multi-relay DVV deployment on this machine, each relay in its own network namespace with
# its own address, so that cross-instance traffic really crosses a network.
#
#   scripts/dev-cluster.sh up [--relays N] [--regions eu,us] [--redis standalone|cluster]
#                             [--id K] [--build DIR]
#   scripts/dev-cluster.sh down [--id K]
#
# `up` prints one JSON object describing every endpoint (relays' player, agent, internal and
# admin addresses per region, Redis, the keys to mint tokens with) and returns; everything
# keeps running until `down`. Needs root (ip netns). --id K (0..200) lets several clusters
# coexist (tests use their own). Relays are spread over the regions round-robin.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

cmd=${1:-}; shift || true
relays=3 regions=eu redis_mode=standalone id=0 build=build
while (($#)); do
  case $1 in
    --relays) relays=$2; shift ;;
    --regions) regions=$2; shift ;;
    --redis) redis_mode=$2; shift ;;
    --id) id=$2; shift ;;
    --build) build=$2; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "dev-cluster: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[[ $id =~ ^[0-9]+$ && $id -le 200 ]] || { echo "dev-cluster: --id wants 0..200" >&2; exit 2; }
[[ $relays =~ ^[0-9]+$ && $relays -ge 1 && $relays -le 40 ]] || { echo "dev-cluster: --relays wants 1..40" >&2; exit 2; }

pfx="dvc$id"                 # interface / namespace prefix (names stay under 15 chars)
net="10.77.$id"
br="${pfx}br"
state="${TMPDIR:-/tmp}/dvv-dev-cluster-$id"

down() {
  if [[ -f $state/pids ]]; then
    while read -r pid; do kill -TERM "$pid" 2>/dev/null || true; done <"$state/pids"
    sleep 0.5
    while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done <"$state/pids"
  fi
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$pfx-" || true); do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  ip link del "$br" 2>/dev/null || true
  # relays remove their pins on a clean exit; a relay killed hard leaves them (and the next
  # start would clean them): remove them here so nothing of ours stays in bpffs
  rm -rf "/sys/fs/bpf/dvv/dev-cluster-$id" 2>/dev/null || true
  [[ -n ${DVV_KEEP_STATE:-} ]] || rm -rf "$state"   # DVV_KEEP_STATE=1: keep logs for a post-mortem
}

wait_for() { local t=$(($1 * 10)); shift; while ((t-- > 0)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }

# every node of the cluster: a replica's link to its primary is up, and there are 3 replicas
replicas_synced() {
  local hp n=0 info
  for hp in "$@"; do
    info=$(redis-cli -h "${hp%:*}" -p "${hp#*:}" info replication) || return 1
    grep -q '^role:slave' <<<"$info" || continue
    grep -q '^master_link_status:up' <<<"$info" || return 1
    grep -q '^master_sync_in_progress:0' <<<"$info" || return 1
    n=$((n + 1))
  done
  ((n == $# / 2))
}

up() {
  [[ $(id -u) -eq 0 ]] || { echo "dev-cluster: needs root (network namespaces)" >&2; exit 1; }
  for b in dvv-relay dvv-token; do
    [[ -x $build/$b ]] || { echo "dev-cluster: $build/$b missing (run make)" >&2; exit 1; }
  done
  down
  mkdir -p "$state"
  : >"$state/pids"
  # one certificate for every relay: its SANs name each relay's address
  local sans="" k
  for ((k = 1; k <= relays; k++)); do sans+="${sans:+,}IP:$net.$((10 + k))"; done
  DVV_CERT_SANS="$sans" scripts/mkkeys.sh "$state/keys"
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$state/cluster.secret"

  ip link add "$br" type bridge
  ip addr add "$net.1/24" dev "$br"
  ip link set "$br" up

  # Redis in the root namespace, on the bridge address
  local redis_addr
  if [[ $redis_mode == cluster ]]; then
    local ports=() p
    for i in 0 1 2 3 4 5; do
      p=$((7100 + id * 10 + i)); ports+=("$net.1:$p")
      mkdir -p "$state/redis-$p"
      redis-server --port "$p" --bind "$net.1" --cluster-enabled yes \
        --cluster-config-file "$state/redis-$p/nodes.conf" --cluster-node-timeout 2000 \
        --repl-diskless-sync-delay 0 --protected-mode no --save '' --appendonly no --dir "$state/redis-$p" >"$state/redis-$p.log" 2>&1 &
      echo $! >>"$state/pids"
    done
    for hp in "${ports[@]}"; do wait_for 5 redis-cli -h "${hp%:*}" -p "${hp#*:}" ping; done
    redis-cli --cluster create "${ports[@]}" --cluster-replicas 1 --cluster-yes >"$state/cluster-create.log" 2>&1
    wait_for 15 bash -c "redis-cli -h $net.1 -p $((7100 + id * 10)) cluster info | grep -q cluster_state:ok"
    # A replica that never finished its first sync refuses to fail over ("Disconnected from
    # master for longer than allowed"): a primary killed before that loses its slots for good.
    # Up means every replica in sync, so a failure test can kill any primary at once.
    wait_for 20 replicas_synced "${ports[@]}" ||
      { echo "dev-cluster: Redis replicas not in sync after 20 s" >&2; exit 1; }
    redis_addr=$(IFS=,; echo "${ports[*]}")
  else
    local p=$((6400 + id))
    # redis.start starts it (again, empty: failure tests stop and restart Redis); pid in redis.pid
    {
      echo '#!/usr/bin/env bash'
      printf '%q ' redis-server --port "$p" --bind "$net.1" --protected-mode no --save '' --appendonly no --dir "$state"
      printf '>>%q 2>&1 &\n' "$state/redis.log"
      printf 'echo $! >%q; echo $! >>%q\n' "$state/redis.pid" "$state/pids"
    } >"$state/redis.start"
    chmod +x "$state/redis.start"
    "$state/redis.start"
    wait_for 5 redis-cli -h "$net.1" -p "$p" ping
    redis_addr="$net.1:$p"
  fi

  local bindir=$build
  [[ $bindir == /* ]] || bindir=$root/$build
  IFS=, read -ra regs <<<"$regions"
  local json_relays="" i
  for ((i = 1; i <= relays; i++)); do
    local ns="$pfx-r$i" host="${pfx}r${i}h" peer="${pfx}r${i}n" ip="$net.$((10 + i))"
    local region=${regs[$(((i - 1) % ${#regs[@]}))]}
    ip netns add "$ns"
    ip link add "$host" type veth peer name "$peer"
    ip link set "$peer" netns "$ns"
    ip link set "$host" master "$br" up
    ip -n "$ns" addr add "$ip/24" dev "$peer"
    ip -n "$ns" link set "$peer" up
    ip -n "$ns" link set lo up
    ip -n "$ns" route add default via "$net.1"
    # nsenter, not `ip netns exec`: the latter mounts a fresh /sys for the command, so the
    # relay would pin its maps in a private bpffs that nobody outside can inspect or clean.
    # relay-rN.start starts it (again: failure tests restart relays they killed); its pid is
    # in relay-rN.pid.
    local argv=(nsenter --net="/run/netns/$ns" "$bindir/dvv-relay"
      --player-listen "$ip:25565" --agent-listen "$ip:7000" --internal-listen "$ip:7001"
      --admin-listen "$ip:9100" --redis "$redis_addr" --region "$region" --base-domain dvv.test
      --tls-cert "$state/keys/relay.pem" --tls-key "$state/keys/relay.key"
      --jwt-pubkey "$state/keys/jwt.pub" --cluster-secret-file "$state/cluster.secret"
      --instance-id "r$i-$region" --bpf-pin-root "/sys/fs/bpf/dvv/dev-cluster-$id")
    # shellcheck disable=SC2206 # DVV_RELAY_ARGS is a list of options, split on purpose
    argv+=(${DVV_RELAY_ARGS:-})
    {
      echo '#!/usr/bin/env bash'
      printf '%q ' "${argv[@]}"
      printf '>>%q 2>&1 &\n' "$state/relay-r$i.log"
      printf 'echo $! >%q; echo $! >>%q\n' "$state/relay-r$i.pid" "$state/pids"
    } >"$state/relay-r$i.start"
    chmod +x "$state/relay-r$i.start"
    "$state/relay-r$i.start"
    json_relays+="${json_relays:+,}{\"id\":\"r$i-$region\",\"region\":\"$region\",\"netns\":\"$ns\",\"ip\":\"$ip\",\"player_addr\":\"$ip:25565\",\"agent_addr\":\"$ip:7000\",\"internal_addr\":\"$ip:7001\",\"admin\":\"http://$ip:9100\",\"log\":\"$state/relay-r$i.log\",\"start\":\"$state/relay-r$i.start\",\"pidfile\":\"$state/relay-r$i.pid\"}"
  done
  for ((i = 1; i <= relays; i++)); do
    wait_for 20 curl -fsS "http://$net.$((10 + i)):9100/readyz" ||
      { echo "dev-cluster: relay r$i did not become ready; log:" >&2; tail -20 "$state/relay-r$i.log" >&2; exit 1; }
  done
  printf '{"id":%s,"redis":"%s","redis_mode":"%s","gateway":"%s.1","keys":"%s/keys","state":"%s","relays":[%s]}\n' \
    "$id" "$redis_addr" "$redis_mode" "$net" "$state" "$state" "$json_relays" | tee "$state/cluster.json"
}

case $cmd in
  up)
    # a failed start (a relay never ready, Redis refusing) leaves nothing behind
    trap 'rc=$?; if ((rc)); then echo "dev-cluster: up failed, tearing down" >&2; down; fi' EXIT
    up
    trap - EXIT ;;
  down) down ;;
  *) echo "usage: $0 up|down [options] (see --help)" >&2; exit 2 ;;
esac
