#!/usr/bin/env bash
# Block-wise benchmark: moonlet against libcoap's example server (coap-server-notls).
#
# usage: tests/bench/block.sh MOONLET_BIN [LUA_SCRIPT]
#
#   MOONLET_BIN  the moonlet binary, started as MOONLET_BIN -a ::1 -p 0 LUA_SCRIPT
#   LUA_SCRIPT   default tests/lua/block_res.lua: /b/big (256 KiB) and /b/up (stores a PUT)
#
# 1. Downloads of 256 KiB with coap-client-notls -b 1024 and -b 512: moonlet's /b/big
#    and libcoap's /example_data after a PUT of the very same bytes (-f). Every
#    download is compared with the file.
# 2. Block1 uploads of the same 256 KiB (-f, -m put, -b 1024 and -b 512): moonlet's
#    /b/up, libcoap's /example_data; read back once and compared.
#    Each measurement runs BENCH_RUNS times (default 3); the median is printed, side by
#    side, with the ratio moonlet / libcoap (time: lower is better for moonlet), also
#    net of the client's start-up (a one-datagram GET, measured the same way).
# 3. The lossy link: the same download from moonlet through tests/tools/lossy_relay.py
#    (10% loss each way, seeded), at 1024- and 512-byte blocks at once, each bounded by
#    BENCH_LOSSY_TIMEOUT seconds (default 600) and stopped when its output has not grown
#    for BENCH_LOSSY_STALL seconds (default 100): time, SHA-256 check, relay counters.
#    coap-client-notls 4.3.1 waits ACK_TIMEOUT = 2 s (and doubles it) for every loss,
#    so this takes minutes. BENCH_LOSSY=0 skips it.
#
# Servers are pinned to CPU 0, clients to CPU 1. Servers are stopped by PID on exit.
# Exit status is non-zero if a server does not start or dies, or a transfer is not
# byte-exact (a lossy run that stalls or times out is reported, not fatal).

set -u -o pipefail
export LC_ALL=C

usage() {
	sed -n '2,26s/^# \{0,1\}//p' "$0"
	exit 2
}
[ $# -ge 1 ] && [ $# -le 2 ] || usage

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
MOONLET_BIN=$1
LUA_SCRIPT=${2:-$ROOT/tests/lua/block_res.lua}
RELAY=$ROOT/tests/tools/lossy_relay.py
RUNS=${BENCH_RUNS:-3}
LOSSY=${BENCH_LOSSY:-1}
LOSSY_TIMEOUT=${BENCH_LOSSY_TIMEOUT:-600}
LOSSY_STALL=${BENCH_LOSSY_STALL:-100}
COAP_CLIENT=${COAP_CLIENT:-coap-client-notls}
COAP_SERVER=${COAP_SERVER:-coap-server-notls}
SIZE=262144

FAILED=0
die() { echo "block.sh: $*" >&2; FAILED=1; exit 1; }

for t in taskset python3 sha256sum cmp "$COAP_CLIENT" "$COAP_SERVER"; do
	command -v "$t" >/dev/null 2>&1 ||
		die "$t not found (libcoap3-bin, python3, util-linux, coreutils)"
done
[ -x "$MOONLET_BIN" ] || die "$MOONLET_BIN not executable"
[ -f "$LUA_SCRIPT" ] || die "$LUA_SCRIPT not found"
[ -f "$RELAY" ] || die "$RELAY not found"

SERVER_CPU=0
CLIENT_CPU=1
if [ "$(nproc)" -lt 2 ]; then
	echo "block.sh: warning: only one CPU, servers and clients share CPU 0" >&2
	CLIENT_CPU=0
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/moonlet-block.XXXXXX") || die "mktemp failed"
MOONLET_PID=
LIBCOAP_PID=
RELAY_PIDS=()
CLIENT_PIDS=()

# shellcheck source=tests/bench/lib.sh
. "$(dirname "$0")/lib.sh"

cleanup() {
	local rc=$? p
	for p in "${CLIENT_PIDS[@]}" "${RELAY_PIDS[@]}"; do stop_pid "$p"; done
	stop_pid "$MOONLET_PID"
	stop_pid "$LIBCOAP_PID"
	if [ "$FAILED" != 0 ]; then
		for p in "$TMP"/*.log; do
			[ -s "$p" ] || continue
			echo "---- $(basename "$p") (last lines) ----" >&2
			tail -n 15 "$p" >&2
		done
	fi
	rm -rf "$TMP"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_us() { echo "${EPOCHREALTIME/./}"; }

# wait_line FILE REGEX PID SECONDS: until a line of FILE matches (the match on stdout)
wait_line() {
	local file=$1 re=$2 pid=$3 deadline=$(( $(now_us) + $4 * 1000000 )) line
	while :; do
		line=$(grep -E -m 1 -o "$re" "$file" 2>/dev/null) && { echo "$line"; return 0; }
		kill -0 "$pid" 2>/dev/null || return 1
		[ "$(now_us)" -lt "$deadline" ] || return 1
		sleep 0.02
	done
}

# ---------------------------------------------------------------- servers

taskset -c "$SERVER_CPU" "$MOONLET_BIN" -a ::1 -p 0 "$LUA_SCRIPT" >"$TMP/moonlet.log" 2>&1 &
MOONLET_PID=$!
line=$(wait_line "$TMP/moonlet.log" 'ready udp://\[::1\]:[0-9]+' "$MOONLET_PID" 5) ||
	die "moonlet did not print its ready line within 5 s"
M_PORT=${line##*:}

L_PORT=$(python3 -c '
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.bind(("::1", 0))
print(s.getsockname()[1])') || die "cannot pick a free port"
# libcoap 4.3.1's example server needs no option for this: /example_data takes a PUT of
# any size block-wise (Block1, COAP_BLOCK_USE_LIBCOAP is its default -L 1) and serves it
# back block-wise at the client's size (checked below). -d is only for creating new
# resources by PUT, -e only echoes the PUT data back.
taskset -c "$SERVER_CPU" "$COAP_SERVER" -A ::1 -p "$L_PORT" >"$TMP/libcoap.log" 2>&1 &
LIBCOAP_PID=$!

M_URL="coap://[::1]:$M_PORT"
L_URL="coap://[::1]:$L_PORT"
FILE=$TMP/data.bin

client() { # client ARGS...: coap-client-notls on the client CPU, bounded
	timeout 120 taskset -c "$CLIENT_CPU" "$COAP_CLIENT" -B 60 "$@"
}

# the bytes moonlet serves, which libcoap gets by PUT
client -b 1024 -m get "$M_URL/b/big" -o "$FILE" 2>>"$TMP/client.log" ||
	die "GET /b/big from moonlet failed"
[ "$(stat -c %s "$FILE" 2>/dev/null)" = "$SIZE" ] || die "/b/big is not $SIZE bytes"
SHA=$(sha256sum <"$FILE" | cut -d' ' -f1)

deadline=$(( $(now_us) + 5000000 ))
until client -B 1 -b 1024 -m put -f "$FILE" "$L_URL/example_data" >>"$TMP/client.log" 2>&1 &&
	client -B 1 -b 1024 -m get "$L_URL/example_data" -o "$TMP/check.bin" 2>>"$TMP/client.log" &&
	cmp -s "$FILE" "$TMP/check.bin"; do
	kill -0 "$LIBCOAP_PID" 2>/dev/null || die "coap-server-notls exited during start-up"
	[ "$(now_us)" -lt "$deadline" ] || die "coap-server-notls does not store and serve back 256 KiB"
	sleep 0.05
done

# ---------------------------------------------------------------- measurements

median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ms() { awk -v u="$1" 'BEGIN { printf "%.1f", u / 1000 }'; }

# timed OUTVAR ARGS...: the client's wall time in microseconds; non-zero on failure
timed() {
	local __out=$1 t0 t1 rc
	shift
	t0=$(now_us)
	client "$@" >"$TMP/out.txt" 2>"$TMP/err.txt"
	rc=$?
	t1=$(now_us)
	printf -v "$__out" '%s' $(( t1 - t0 ))
	cat "$TMP/err.txt" >>"$TMP/client.log"
	return $rc
}

# measure NAME KIND BLOCK URL: RUNS runs; sets MED (median us) and RUNS_MS (the list)
measure() {
	local name=$1 kind=$2 b=$3 u=$4 i t times=()
	RUNS_MS=""
	for i in $(seq 1 "$RUNS"); do
		if [ "$kind" = GET ]; then
			rm -f "$TMP/got.bin"
			timed t -b "$b" -m get "$u" -o "$TMP/got.bin" || die "$name: GET -b $b failed"
			cmp -s "$FILE" "$TMP/got.bin" || die "$name: GET -b $b is not byte-exact"
		else
			timed t -b "$b" -m put -f "$FILE" "$u" || die "$name: PUT -b $b failed"
			[ ! -s "$TMP/err.txt" ] || die "$name: PUT -b $b answered $(cat "$TMP/err.txt")"
		fi
		times+=("$t")
		RUNS_MS+="$(ms "$t") "
	done
	MED=$(median "${times[@]}")
}

# a one-datagram GET: the client's own start-up and teardown, included in every number
base=()
for i in $(seq 1 "$RUNS"); do
	timed t -m get "$M_URL/b/small" -o /dev/null || die "GET /b/small failed"
	base+=("$t")
done
BASE=$(median "${base[@]}")

echo "block-wise transfer of $SIZE bytes, coap-client-notls on CPU $CLIENT_CPU, servers on" \
	"CPU $SERVER_CPU, median of $RUNS runs"
echo "moonlet: $M_URL /b/b{ig,up} ($(basename "$LUA_SCRIPT"))   libcoap: $L_URL /example_data"
echo
printf '%-12s | %9s %9s %6s %6s | %-20s | %-20s\n' "" "moonlet" "libcoap" "ratio" "net" \
	"moonlet runs (ms)" "libcoap runs (ms)"
printf '%-12s | %9s %9s %6s %6s | %-20s | %-20s\n' "" "ms" "ms" "m/l" "m/l" "" ""
echo "-------------+----------------------------------+----------------------+---------------------"
for kind in GET PUT; do
	for b in 1024 512; do
		if [ "$kind" = GET ]; then mu="$M_URL/b/big"; else mu="$M_URL/b/up"; fi
		measure moonlet "$kind" "$b" "$mu"
		m=$MED m_runs=$RUNS_MS
		measure libcoap "$kind" "$b" "$L_URL/example_data"
		l=$MED l_runs=$RUNS_MS
		printf '%-12s | %9s %9s %6s %6s | %-20s | %-20s\n' "$kind -b $b" "$(ms "$m")" \
			"$(ms "$l")" "$(awk -v a="$m" -v b="$l" 'BEGIN { printf "%.2f", a / b }')" \
			"$(awk -v a="$m" -v b="$l" -v z="$BASE" \
				'BEGIN { if (b - z > 0) printf "%.2f", (a - z) / (b - z); else print "-" }')" \
			"$m_runs" "$l_runs"
	done
done
echo
echo "ratio: moonlet time / libcoap time, lower is better for moonlet; net: the same after"
echo "subtracting a one-datagram GET ($(ms "$BASE") ms: the client's own start-up and teardown)"

# the uploads arrived intact: read back the last one from each server
client -b 1024 -m get "$M_URL/b/up" -o "$TMP/back_m.bin" 2>>"$TMP/client.log"
cmp -s "$FILE" "$TMP/back_m.bin" || die "moonlet: the uploaded body read back differs"
client -b 1024 -m get "$L_URL/example_data" -o "$TMP/back_l.bin" 2>>"$TMP/client.log"
cmp -s "$FILE" "$TMP/back_l.bin" || die "libcoap: the uploaded body read back differs"
echo "uploads read back byte-exact from both servers"

# ---------------------------------------------------------------- the lossy link

if [ "$LOSSY" != 0 ]; then
	echo
	echo "lossy link: $SIZE bytes from moonlet through lossy_relay.py (--loss 0.1 each way)," \
		"CON, both block sizes at once, each bounded by ${LOSSY_TIMEOUT}s"
	declare -A R_PORT=() T0=()
	for b in 1024 512; do
		taskset -c "$CLIENT_CPU" python3 "$RELAY" --server-port "$M_PORT" --loss 0.1 \
			--seed "$b" --lifetime $(( LOSSY_TIMEOUT + 60 )) >"$TMP/relay$b.log" 2>&1 &
		RELAY_PIDS+=($!)
		line=$(wait_line "$TMP/relay$b.log" 'relay ready [0-9]+' "$!" 10) ||
			die "the relay did not start"
		R_PORT[$b]=${line##* }
	done
	declare -A CPID=() RC=() T=() LAST_SIZE=() LAST_GROW=()
	for b in 1024 512; do
		T0[$b]=$(now_us)
		LAST_SIZE[$b]=-1
		LAST_GROW[$b]=${T0[$b]}
		timeout "$LOSSY_TIMEOUT" taskset -c "$CLIENT_CPU" "$COAP_CLIENT" \
			-B $(( LOSSY_TIMEOUT + 30 )) -b "$b" -m get "coap://[::1]:${R_PORT[$b]}/b/big" \
			-o "$TMP/lossy$b.bin" >"$TMP/lossy$b.out" 2>"$TMP/lossy$b.log" &
		CPID[$b]=$!
		CLIENT_PIDS+=($!)
	done
	# Wait for both; a client whose output has not grown for LOSSY_STALL seconds (more than
	# MAX_TRANSMIT_WAIT, 93 s, the longest a single block can legitimately take) is
	# stopped and reported as stalled.
	deadline=$(( $(now_us) + (LOSSY_TIMEOUT + 10) * 1000000 ))
	while [ "${#RC[@]}" -lt 2 ] && [ "$(now_us)" -lt "$deadline" ]; do
		for b in 1024 512; do
			[ -z "${RC[$b]:-}" ] || continue
			now=$(now_us)
			if ! kill -0 "${CPID[$b]}" 2>/dev/null; then
				wait "${CPID[$b]}"
				RC[$b]=$?
				T[$b]=$(( now - T0[$b] ))
				continue
			fi
			size=$(stat -c %s "$TMP/lossy$b.bin" 2>/dev/null || echo 0)
			if [ "$size" != "${LAST_SIZE[$b]}" ]; then
				LAST_SIZE[$b]=$size
				LAST_GROW[$b]=$now
			elif [ $(( now - LAST_GROW[$b] )) -gt $(( LOSSY_STALL * 1000000 )) ]; then
				stop_pid "${CPID[$b]}"
				RC[$b]=stalled
				T[$b]=$(( LAST_GROW[$b] - T0[$b] ))
			fi
		done
		sleep 0.5
	done
	i=0
	for b in 1024 512; do
		stop_pid "${CPID[$b]}"
		stop_pid "${RELAY_PIDS[$i]}"
		i=$((i + 1))
		rc=${RC[$b]:-timeout}
		t=${T[$b]:-$(( $(now_us) - T0[$b] ))}
		counters=$(grep -E -m 1 '^relay up_forwarded' "$TMP/relay$b.log" || echo "no counters")
		got=$(stat -c %s "$TMP/lossy$b.bin" 2>/dev/null || echo 0)
		if [ "$got" = "$SIZE" ] &&
			[ "$(sha256sum <"$TMP/lossy$b.bin" | cut -d' ' -f1)" = "$SHA" ]; then
			verdict="complete, SHA-256 equal"
		elif [ "$got" != 0 ] && ! cmp -s -n "$got" "$TMP/lossy$b.bin" "$FILE"; then
			verdict="NOT byte-exact: the $got bytes received differ from the file"
			FAILED=1
		else
			case $rc in
			stalled) why="STALLED: no progress for ${LOSSY_STALL}s, stopped" ;;
			124 | timeout) why="TIMED OUT after ${LOSSY_TIMEOUT}s" ;;
			*) why="INCOMPLETE: the client exited ($rc)" ;;
			esac
			verdict="$why with $got of $SIZE bytes (correct so far)"
		fi
		printf '  -b %-4s %8.1f s  %s\n           %s\n' "$b" \
			"$(awk -v u="$t" 'BEGIN { printf "%.1f", u / 1e6 }')" "$verdict" "$counters"
	done
	echo "  (a stalled or incomplete run is coap-client-notls's, not fatal: see README.md)"
fi

for p in "$MOONLET_PID:moonlet" "$LIBCOAP_PID:coap-server-notls"; do
	kill -0 "${p%%:*}" 2>/dev/null || { echo "block.sh: ${p#*:} died" >&2; FAILED=1; }
done
if [ "$FAILED" != 0 ]; then
	echo "block.sh: FAILED" >&2
	exit 1
fi
exit 0
