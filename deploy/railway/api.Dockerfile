# dvv-api for Railway: accounts, tokens, plans, the dashboard (docs/api.md). Plain HTTP on
# $PORT behind Railway's HTTPS edge. Build context: the repository root.
#
#   podman build -f deploy/railway/api.Dockerfile -t dvv-api .

FROM debian:12 AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential pkg-config clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev \
      libssl-dev libjwt-dev libjansson-dev libhiredis-dev libmicrohttpd-dev libpq-dev \
      libargon2-dev libcurl4-openssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN make -s -j"$(nproc)" build/dvv-api

FROM debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libmicrohttpd12 libpq5 libargon2-1 libjansson4 libjwt0 libssl3 libhiredis0.14 \
      libcurl4 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin dvv
COPY --from=build /src/build/dvv-api /usr/local/bin/dvv-api
COPY api/web /usr/share/dvv/web
COPY deploy/plans.json /usr/share/dvv/plans.json
COPY deploy/railway/api-entrypoint.sh /usr/local/bin/api-entrypoint.sh
ENV DVV_API_WEB_ROOT=/usr/share/dvv/web \
    DVV_API_PLANS_PATH=/usr/share/dvv/plans.json \
    DVV_API_TRUST_PROXY=1
USER dvv
ENTRYPOINT ["/usr/local/bin/api-entrypoint.sh"]
