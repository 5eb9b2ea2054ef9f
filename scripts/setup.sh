#!/usr/bin/env bash
# Installs everything DVV needs on Debian 12 (idempotent): build toolchain, libraries, the
# servers the tests start (Redis, PostgreSQL), test tools (promtool from the prometheus package
# checks deploy/prometheus), and the npm test tooling.
# Needs root (or sudo) only when something is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(
  build-essential pkg-config clang llvm libclang-rt-14-dev
  libbpf-dev bpftool libelf-dev zlib1g-dev
  libssl-dev libjwt-dev libjansson-dev libhiredis-dev libmicrohttpd-dev libpq-dev
  libargon2-dev libcurl4-openssl-dev
  libcmocka-dev
  redis-server redis-tools haproxy postgresql
  iproute2 nftables hping3 ethtool curl ca-certificates openssl procps psmisc python3
  nodejs npm
  chromium fonts-dejavu-core
  qemu-system-x86 busybox-static kmod xz-utils
  prometheus
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# nodejs may come from elsewhere (nodesource, nvm): only install it if no node is present
if command -v node >/dev/null 2>&1; then
  tmp=()
  for p in "${missing[@]}"; do [[ $p == nodejs || $p == npm ]] || tmp+=("$p"); done
  missing=("${tmp[@]+"${tmp[@]}"}")
fi

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # the packaged servers start on their default ports; our scripts run their own instances
  for svc in redis-server haproxy postgresql prometheus; do
    $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || $SUDO service "$svc" stop >/dev/null 2>&1 || true
  done
fi

# Node test tooling (a real Minecraft client and server: PrismarineJS minecraft-protocol;
# puppeteer-core, which drives the packaged chromium and never downloads a browser)
if [[ ! -d tests/e2e/node_modules/minecraft-protocol || ! -d tests/e2e/node_modules/puppeteer-core ]]; then
  echo "setup: installing npm test tooling (tests/e2e)" >&2
  (cd tests/e2e && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
