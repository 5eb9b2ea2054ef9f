#!/usr/bin/env bash
# Latency under load, as a test (root): over emulated links with a slow player downlink
# (10 Mbit/s, 20 ms; agent link 100 Mbit/s, 10 ms), ONE stream server -> player must hold no
# more bytes between the two applications, relayed, than CHECK_RATIO (2) x what the routed path
# holds in the same run + CHECK_SLACK_KB (256 KiB): a ratio, not a timing. Both data planes.
# Runs bench/queue.sh in its CHECK mode (the downlink case only, 4 s warm-up + 8 s measured
# per path; about 1 minute); its namespaces (dvvq-lat-<pid>-*) and processes are removed on
# every exit path by its trap.
#
#   sudo tests/netns/queue.sh            # uses build/ (DVV_BUILD=build-san for the SAN build)
set -uo pipefail
cd "$(dirname "$0")/../.."
B=${DVV_BUILD:-build} NO_BUILD=${NO_BUILD:-} CHECK=1 DURATION=${DURATION:-8} WARMUP=${WARMUP:-4} \
	OUT=/dev/null timeout 180 bench/queue.sh
