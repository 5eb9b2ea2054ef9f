# dvv-autoscale for Railway: one per region, sets the replica count of that region's relay
# service from the load in Redis (docs/autoscaling.md). Build context: the repository root.
FROM debian:12 AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential pkg-config clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev \
      libssl-dev libjwt-dev libjansson-dev libhiredis-dev libmicrohttpd-dev libpq-dev \
      libargon2-dev libcurl4-openssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN make -s -j"$(nproc)" build/dvv-autoscale

FROM debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libhiredis0.14 libcurl4 libjansson4 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin dvv
COPY --from=build /src/build/dvv-autoscale /usr/local/bin/dvv-autoscale
COPY deploy/railway/autoscale-entrypoint.sh /usr/local/bin/autoscale-entrypoint.sh
USER dvv
ENTRYPOINT ["/usr/local/bin/autoscale-entrypoint.sh"]
