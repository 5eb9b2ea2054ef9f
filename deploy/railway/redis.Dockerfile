# Redis for a Railway deployment, from Debian 12's redis-server. The relays and dvv-api speak to
# Redis without AUTH, so this service must have NO public networking: only the project's private
# network (redis.railway.internal) reaches it. Attach a volume at /data to keep the names and
# usage counters across restarts (docs/redis.md: relays keep no authoritative state, but names
# and usage live here).
FROM debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown redis:redis /data
USER redis
EXPOSE 6379
# [::]: Railway's private network is IPv6; protected mode off because there is no password
# (see above); AOF every second: at most a second of usage counts lost on a crash.
ENTRYPOINT ["redis-server", "--bind", "::", "--port", "6379", "--protected-mode", "no", \
            "--dir", "/data", "--appendonly", "yes", "--appendfsync", "everysec", \
            "--maxmemory-policy", "noeviction"]
