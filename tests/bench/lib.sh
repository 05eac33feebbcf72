# lib.sh -- shell helpers the benchmark scripts source.

# one_server: for a script that runs one server at a time, set CPU_S and CPU_C (the
# server's and the generator's CPU), LOG (a temporary file for the server's output) and
# PID (the server's, once started), and on exit stop PID and remove LOG.
one_server() {
	CPU_S=0 CPU_C=1
	[ "$(nproc)" -ge 2 ] || CPU_C=0
	LOG=$(mktemp)
	PID=
	trap 'stop_pid "$PID"; rm -f "$LOG"' EXIT
}

# ready_port WHO [SCHEME]: print the port of the server's first "ready SCHEME://" line (udp
# by default; dtls for coaps://) in LOG, waited for up to 5 s; when it does not come, LOG
# goes to stderr and the status is 1 (PORT=$(ready_port NAME) || exit 1).
ready_port() {
	local i port scheme=${2:-udp}
	for i in $(seq 1 50); do
		grep -q "ready $scheme://" "$LOG" && break
		sleep 0.1
	done
	port=$(sed -n "s/.*ready $scheme:\/\/[^ ]*:\([0-9][0-9]*\).*/\1/p" "$LOG" | head -n 1)
	[ -n "$port" ] || { echo "$1: moonlet did not start:"; cat "$LOG"; } >&2
	[ -n "$port" ] || return 1
	echo "$port"
}

# stop_pid PID: stop one process we started, by PID only (TERM, up to 3 s, then KILL).
stop_pid() {
	local pid=$1 i
	[ -n "$pid" ] || return 0
	kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
	kill -TERM "$pid" 2>/dev/null
	for i in $(seq 1 30); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	return 0
}
