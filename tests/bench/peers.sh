#!/usr/bin/env bash
# Devices at scale: moonlet with its default settings serving tests/bench/observe.lua, and
# peers-bench standing for PEERS devices, each its own address (127.1.0.1 ...), observing.
#
# usage: tests/bench/peers.sh MOONLET_BIN PEERS_BENCH_BIN [PEERS...]
#
# For each PEERS (default 10000 50000 100000) a fresh server: the RSS growth per device,
# the time to register them all (each answers the ping that verifies it), five single
# notifies fanned out to all of them, then the server's stats line. The server is pinned to
# CPU 0 and the client to CPU 1, on a free loopback port, stopped by PID. PEERS_WINDOW
# (default 256) registrations are outstanding at a time; PEERS_LINGER=S keeps answering
# for S seconds more, then notifies once more (late_notified).
set -u -o pipefail
[ $# -ge 2 ] || { sed -n '2,12s/^# \{0,1\}//p' "$0"; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
MOONLET=$1
BENCH=$2
shift 2
[ $# -gt 0 ] || set -- 10000 50000 100000
# shellcheck source=tests/bench/lib.sh
. "$HERE/lib.sh"
one_server
status=0
echo "== Devices: one observation each, default settings (target: 100,000 held, missing 0)"
for n in "$@"; do
	: >"$LOG"
	taskset -c $CPU_S "$MOONLET" -a 127.0.0.1 -p 0 "$HERE/observe.lua" >"$LOG" 2>&1 &
	PID=$!
	PORT=$(ready_port peers.sh) || exit 1
	taskset -c $CPU_C "$BENCH" "$PORT" "$PID" "$n" "${PEERS_WINDOW:-256}" 5 \
		"${PEERS_LINGER:-0}" || status=1
	kill -USR1 "$PID"
	sleep 0.3
	grep -o 'stats: .*' "$LOG" | tail -n 1
	stop_pid "$PID"
	PID=
done
exit $status
