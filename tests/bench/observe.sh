#!/usr/bin/env bash
# Observe fan-out benchmark: moonlet serving tests/bench/observe.lua, driven by obs-bench.
#
# usage: tests/bench/observe.sh MOONLET_BIN OBS_BENCH_BIN [OBSERVERS [SOCKETS]]
#
# Registers OBSERVERS (default 10000) observers over SOCKETS (default 40) client sockets,
# then times five single notifies from the POST that triggers each to the last observer's
# notification, and reports the server's RSS growth per observer. The server is pinned to
# CPU 0 and the client to CPU 1, started on a free loopback port and stopped by PID.
set -u -o pipefail
[ $# -ge 2 ] || { sed -n '2,9s/^# \{0,1\}//p' "$0"; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
MOONLET=$1
BENCH=$2
OBSERVERS=${3:-10000}
SOCKETS=${4:-40}
# shellcheck source=tests/bench/lib.sh
. "$HERE/lib.sh"
one_server
taskset -c $CPU_S "$MOONLET" -a ::1 -p 0 "$HERE/observe.lua" >"$LOG" 2>&1 &
PID=$!
PORT=$(ready_port observe.sh) || exit 1
echo "== Observe fan-out: $OBSERVERS observers over $SOCKETS sockets (targets: < 50 ms, < 300 B)"
taskset -c $CPU_C "$BENCH" ::1 "$PORT" "$PID" "$OBSERVERS" "$SOCKETS" 5
