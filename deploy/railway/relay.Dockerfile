# dvv-relay for Railway: the userspace data plane (no BPF, no XDP: a Railway container has no
# CAP_BPF), players and agents on one public TCP port (--one-port), forwarding between replicas
# on the private network (--internal-listen, --advertise-addr railway). Build context: the
# repository root (railway.json sets dockerfilePath).
#
#   podman build -f deploy/railway/relay.Dockerfile -t dvv-relay .

# ---- build: Debian 12 with the build dependencies of scripts/setup.sh that the relay needs.
# The relay binary links libbpf and embeds its BPF programs even when run on the userspace
# plane; building them reads the build host's BTF (/sys/kernel/btf/vmlinux).
FROM debian:12 AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential pkg-config clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev \
      libssl-dev libjwt-dev libjansson-dev libhiredis-dev libmicrohttpd-dev libpq-dev \
      libargon2-dev libcurl4-openssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN make -s -j"$(nproc)" build/dvv-relay

# ---- run: Debian 12 slim with the runtime libraries only.
FROM debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libbpf1 libelf1 zlib1g libssl3 libjwt0 libjansson4 libhiredis0.14 libmicrohttpd12 \
      ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin dvv
COPY --from=build /src/build/dvv-relay /usr/local/bin/dvv-relay
COPY deploy/railway/relay-entrypoint.sh /usr/local/bin/relay-entrypoint.sh
# The drain deadline: players keep playing this long after SIGTERM. relay.railway.json's
# drainingSeconds must stay above it (tests/deploy/check.sh checks that).
ENV DVV_DRAIN_TIMEOUT_S=30 \
    DVV_DATAPLANE=userspace \
    DVV_LOG_LEVEL=info
USER dvv
# 25565: the one public port (Railway's TCP proxy targets it); 7001: forwarding between
# replicas (private network only); $PORT (Railway sets it): /healthz /readyz /metrics.
EXPOSE 25565 7001
# exec form, and the script execs the relay: it is PID 1 and gets Railway's SIGTERM (the drain)
ENTRYPOINT ["/usr/local/bin/relay-entrypoint.sh"]
