#!/usr/bin/env bash
# Capacity benchmark (see bench/README.md): builds the load generator, installs
# the peer relay (rtpengine-daemon, user space) if needed, runs bench/driver.py,
# which prints the table and writes bench/RESULTS.md.
#
# Environment: RTPP_BENCH_TARGETS (e.g. "rtpengine,bare"), RTPP_BENCH_LADDER,
# RTPP_BENCH_DURATION; arguments are passed to bench/driver.py.
set -euo pipefail
cd "$(dirname "$0")/.."

CC=${CC:-cc}
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
mkdir -p bench/out
"$CC" -O2 -Wall -o bench/out/loadgen bench/loadgen.c

targets=${RTPP_BENCH_TARGETS:-rtpproxy,rtpproxy-kernel,rtpengine,bare,direct}
if [[ ",$targets," == *",rtpengine,"* ]] && ! command -v rtpengine >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "bench: installing rtpengine-daemon" >&2
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			rtpengine-daemon >/dev/null
	else
		echo "bench: rtpengine not installed (needs root + apt-get); it is reported as not measured" >&2
	fi
fi

exec "$PY" bench/driver.py "$@"
