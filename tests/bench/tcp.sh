#!/usr/bin/env bash
# CoAP over TCP benchmark (RFC 8323): moonlet's coap+tcp:// listener against libcoap's
# coap-server-notls (which listens on TCP beside UDP), side by side, driven by tcp-bench.
#
# usage: tests/bench/tcp.sh MOONLET_BIN PLUGIN_SO TCP_BENCH_BIN [LUA_SCRIPT]
#
# Tables: GETs per second over 1 connection with 1, 16 and 256 pipelined and over 100
# connections with 16 each (rate, server CPU per request); the same runs' latency (p50,
# p99, max, answers over 5 ms and 35 ms: a Nagle/delayed-ACK stall costs 40 ms); the RSS of
# TCP_IDLE idle connections (CSM exchanged, then nothing; each is sent one GET afterwards
# to show it is still served); 256 KiB downloads, one block at a time, with Block2 SZX 6
# (1024 bytes) and with BERT (SZX 7, §6; reported, not failed, when a server has none).
# moonlet serves PLUGIN_SO's GET /hello and LUA_SCRIPT's /b/big (default
# tests/lua/block_res.lua: 256 KiB of xorshift32 output, computed here too); libcoap gets
# a PUT of "Hello, world" to /example_data and of the same 256 KiB to /big (a resource
# its -d creates). Servers on CPU 0, generator on CPU 1, [::1], free ports, stopped by
# PID. Exit status 1 when a server does not start or dies, or a run gets an invalid
# answer, loses one or has a connection closed under it; the 5 ms target only informs.
#
# Environment: BENCH_SECONDS (2) per measured run, BENCH_ROUNDS (2) measured runs of which
# the fastest counts, BENCH_WARMUP (0.5) before them, TCP_IDLE (10000) idle connections,
# TCP_DOWNLOADS (20) measured downloads per row.
set -u -o pipefail
[ $# -ge 3 ] && [ $# -le 4 ] || { sed -n '2,22s/^# \{0,1\}//p' "$0"; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
MOONLET=$1
PLUGIN=$2
BENCH=$3
LUA=${4:-$HERE/../lua/block_res.lua}
SECS=${BENCH_SECONDS:-2}
ROUNDS=${BENCH_ROUNDS:-2}
WARM=${BENCH_WARMUP:-0.5}
IDLE=${TCP_IDLE:-10000}
DLS=${TCP_DOWNLOADS:-20}
PAYLOAD="Hello, world"
SIZE=262144
# shellcheck source=tests/bench/lib.sh
. "$HERE/lib.sh"
one_server
LPID=
LLOG=$(mktemp)
ERR=$(mktemp)
BIG=$(mktemp)
trap 'stop_pid "$PID"; stop_pid "$LPID"; rm -f "$LOG" "$LLOG" "$ERR" "$BIG"' EXIT
FAILED=0
PROBLEMS=()

die() { echo "tcp.sh: $*" >&2; exit 1; }

for t in taskset python3 ss coap-server-notls coap-client-notls; do
	command -v "$t" >/dev/null 2>&1 || die "$t not found (libcoap3-bin, python3, util-linux, iproute2)"
done
[ -x "$BENCH" ] || die "$BENCH not executable"
[ -x "$MOONLET" ] || die "$MOONLET not executable"
[ -f "$PLUGIN" ] || die "$PLUGIN not found"
[ -f "$LUA" ] || die "$LUA not found"

# every idle connection is a descriptor in the server and one in the generator: the soft
# limit up to the hard one (which only a privileged process could raise), inherited by
# both; the idle count down to what fits
ulimit -n "$(ulimit -Hn)" 2>/dev/null
FDS=$(ulimit -n)
if [ "$FDS" != unlimited ] && [ "$IDLE" -gt $((FDS - 100)) ]; then
	PROBLEMS+=("idle connections: $IDLE asked for, $((FDS - 100)) measured (ulimit -Hn is $FDS)")
	IDLE=$((FDS - 100))
fi

# /b/big of block_res.lua (its default seed): x ^= x << 13; x ^= x >> 17; x ^= x << 5,
# each x as 4 little-endian bytes
python3 -c '
import struct, sys
x, out = 2463534242, bytearray()
for _ in range(int(sys.argv[1]) // 4):
    x ^= (x << 13) & 0xffffffff; x ^= x >> 17; x ^= (x << 5) & 0xffffffff
    out += struct.pack("<I", x)
sys.stdout.buffer.write(out)' "$SIZE" >"$BIG" || die "cannot write the 256 KiB file"

# get PATH PORT: coap-client-notls GET over coap+tcp, bounded
get() { timeout 5 coap-client-notls -B 3 "coap+tcp://[::1]:$2/$1" 2>/dev/null; }

# start_moonlet [ARGS...]: PLUGIN (and ARGS: -o K=V, LUA) on a free port (its
# "ready coap+tcp://" line), answering
start_moonlet() {
	: >"$LOG"
	taskset -c "$CPU_S" "$MOONLET" -q -l "coap+tcp://[::1]:0" "$PLUGIN" "$@" >"$LOG" 2>&1 &
	PID=$!
	MPORT=$(ready_port moonlet coap+tcp) || die "moonlet did not start"
	[ "$(get hello "$MPORT")" = "$PAYLOAD" ] || die "moonlet does not answer GET /hello over TCP"
}

# libcoap binds UDP and TCP on its port (and nothing on port+1 without TLS)
free_port() {
	python3 -c '
import socket
for _ in range(50):
    u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); u.bind(("::1", 0))
    p = u.getsockname()[1]
    t = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        t.bind(("::1", p))
        print(p)
        break
    except OSError:
        pass'
}

# start_libcoap [BIG]: /example_data holding the payload; with BIG, /big the 256 KiB too
start_libcoap() {
	LPORT=$(free_port)
	[ -n "$LPORT" ] || die "no free port for libcoap"
	: >"$LLOG"
	taskset -c "$CPU_S" coap-server-notls -A ::1 -p "$LPORT" -d 4 >"$LLOG" 2>&1 &
	LPID=$!
	for _ in $(seq 1 50); do
		ss -Htln "sport = :$LPORT" 2>/dev/null | grep -q . && break
		kill -0 "$LPID" 2>/dev/null || break
		sleep 0.1
	done
	timeout 5 coap-client-notls -B 3 -m put -e "$PAYLOAD" \
		"coap+tcp://[::1]:$LPORT/example_data" >>"$LLOG" 2>&1 &&
		[ "$(get example_data "$LPORT")" = "$PAYLOAD" ] ||
		{ cat "$LLOG" >&2; die "coap-server-notls did not start (or refused the PUT)"; }
	if [ $# -gt 0 ]; then
		timeout 10 coap-client-notls -B 5 -m put -f "$BIG" "coap+tcp://[::1]:$LPORT/big" \
			>>"$LLOG" 2>&1 || die "coap-server-notls refused the PUT of $SIZE bytes to /big"
	fi
}

# field LINE NAME: NAME's value in a tcp-bench line, "-" without one
field() {
	local re="(^| )$2=([^ ]*)"
	[[ $1 =~ $re ]] && echo "${BASH_REMATCH[2]}" || echo "-"
}
F() { field "$2" "$1"; }

# calc EXPR A B...: awk arithmetic on fields, "-" when one of them is missing
calc() {
	local expr=$1
	shift
	awk -v e="$expr" -v args="$*" 'BEGIN {
		n = split(args, v, " ")
		for (i = 1; i <= n; i++) if (v[i] == "-" || v[i] == "") { print "-"; exit }
		a = v[1]; b = v[2]
		if (e == "ratio") { if (b + 0 == 0) print "-"; else printf "%.2f", a / b }
		else if (e == "busy") printf "%.0f%%", a * b / 1e4
		else if (e == "diff") print a - b
		else if (e == "queue") { if (b + 0 == 0) print "-"; else printf "%.0f", a * 1e6 / b }
	}'
}

# meets A OP B: 1 when A OP B holds, 0 else or when either is missing
meets() { awk -v a="$1" -v b="$3" -v op="$2" 'BEGIN {
	if (a == "-" || b == "-") { print 0; exit }
	print (op == ">=" ? a + 0 >= b + 0 : a + 0 <= b + 0) ? 1 : 0 }'; }

# gen WHO MODE ARGS...: tcp-bench against moonlet (m) or libcoap (l); its line in LINE.
# Invalid answers, lost ones, closed connections or a generator that fails fail the run.
gen() {
	local who=$1 mode=$2 rc name args
	shift 2
	args="$mode $*"
	if [ "$who" = m ]; then
		name=moonlet
		set -- -p "$MPORT" -s "$PID" "$@"
	else
		name=libcoap
		set -- -p "$LPORT" -s "$LPID" "$@"
	fi
	: >"$ERR"
	LINE=$(timeout "$CAP" taskset -c "$CPU_C" "$BENCH" -d "$SECS" -N "$ROUNDS" -W "$WARM" \
		-e "$PAYLOAD" "$@" "$mode" 2>"$ERR")
	rc=$?
	if [ "$rc" != 0 ] || [ "$(F errors "$LINE")" != 0 ]; then
		FAILED=1
		PROBLEMS+=("$name $args: tcp-bench exited $rc: errors=$(F errors "$LINE")" \
			"lost=$(F lost "$LINE") closed=$(F closed "$LINE"): $(head -n 3 "$ERR" | tr '\n' ' ')")
	elif [ -s "$ERR" ]; then
		PROBLEMS+=("$name $args: $(head -n 3 "$ERR" | tr '\n' ' ')")
	fi
	[ "$(F late "$LINE")" = 0 ] || [ "$(F late "$LINE")" = - ] ||
		PROBLEMS+=("$name $args: late=$(F late "$LINE") (answers after ${LOST_MS} ms)")
}
LOST_MS=1000

# stop WHO: stop moonlet (m) or libcoap (l); a server that died or crashed fails the run
stop() {
	local pid name
	if [ "$1" = m ]; then pid=$PID name=moonlet; else pid=$LPID name=libcoap; fi
	if ! kill -0 "$pid" 2>/dev/null; then
		FAILED=1
		PROBLEMS+=("$name died during the benchmark")
	fi
	stop_pid "$pid"
	if [ "$1" = m ] && grep -q 'fatal:' "$LOG"; then
		FAILED=1
		PROBLEMS+=("moonlet crashed when stopped: $(grep -A2 'fatal:' "$LOG" | tr '\n' ' ')")
	fi
	if [ "$1" = m ]; then PID=; else LPID=; fi
}

# moonlet's refused connections (its SIGUSR1 line's overload) and warnings, into NOTES
NOTES=()
moonlet_notes() {
	local over warn
	kill -USR1 "$PID" 2>/dev/null
	sleep 0.3
	over=$(grep -o 'stats: .*' "$LOG" | tail -n 1 | sed -n 's/.* overload \([0-9]*\).*/\1/p')
	warn=$(grep -c 'warn' "$LOG")
	NOTES+=("moonlet ($1): ${over:--} connections refused (overload), $warn warnings in its log")
	[ "$warn" = 0 ] || NOTES+=("  first: $(grep -m 1 'warn' "$LOG" | cut -c 1-150)")
}

# the kernel's count of connections dropped at a full accept queue (all listeners)
listen_overflows() {
	awk '/^TcpExt:/ { if (!h) { split($0, n); h = 1 } else for (i = 2; i <= NF; i++)
		if (n[i] == "ListenOverflows") print $i }' /proc/net/netstat
}

# a bound on one tcp-bench run, which bounds itself (idle: 60 s to open, 60 s to check)
CAP=$(awk -v s="$SECS" -v n="$ROUNDS" -v w="$WARM" 'BEGIN { printf "%d", 2 * (s * n + w) + 140 }')

start_moonlet "$LUA"
start_libcoap big
echo "moonlet coap+tcp://[::1]:$MPORT GET /hello, /b/big ($(basename "$LUA"));" \
	"libcoap coap+tcp://[::1]:$LPORT GET /example_data (after a PUT of \"$PAYLOAD\"), /big"
echo "servers on CPU $CPU_S, generator on CPU $CPU_C (TCP_NODELAY); best of $ROUNDS runs of" \
	"$SECS s after $WARM s of warm-up; us/op: server CPU per request"

echo
echo "== GETs/s over coap+tcp, pipelined: WIN in flight on each connection, 2.05 and payload checked"
printf '%-10s | %9s %9s %6s | %8s %8s %6s | %5s %5s %7s\n' "conn  win" moonlet libcoap m/l \
	"m us/op" "l us/op" l/m "m CPU" gen else
echo "-----------+--------------------------+--------------------------+--------------------"
declare -A ML LL
for cw in "1 1" "1 16" "1 256" "100 16"; do
	read -r c w <<<"$cw"
	gen m req -c "$c" -w "$w" -u hello
	ML[$cw]=$LINE
	gen l req -c "$c" -w "$w" -u example_data
	LL[$cw]=$LINE
	m=${ML[$cw]} l=${LL[$cw]}
	printf '%4s %5s | %9s %9s %6s | %8s %8s %6s | %5s %5s %7s\n' "$c" "$w" "$(F rate "$m")" \
		"$(F rate "$l")" "$(calc ratio "$(F rate "$m")" "$(F rate "$l")")" \
		"$(F server_us "$m")" "$(F server_us "$l")" \
		"$(calc ratio "$(F server_us "$l")" "$(F server_us "$m")")" \
		"$(calc busy "$(F server_us "$m")" "$(F rate "$m")")" \
		"$(calc busy "$(F client_us "$m")" "$(F rate "$m")")" \
		"$(F elsewhere "$m" | tr -d %)/$(F elsewhere "$l")"
done

echo
echo "== Latency of the same runs, us (send to answer); >5ms, >35: answers slower than 5 ms," \
	"35 ms (a Nagle/delayed-ACK stall is >= 40 ms); queue: conns*win/rate (target: moonlet max < 5 ms)"
printf '%-10s | %6s %6s %6s %6s %3s %6s | %6s %6s %6s %6s %3s %6s | %s\n' "conn  win" "m p50" \
	"m p99" "m max" ">5ms" ">35" queue "l p50" "l p99" "l max" ">5ms" ">35" queue target
echo "-----------+---------------------------------------+---------------------------------------+-------"
for cw in "1 1" "1 16" "1 256" "100 16"; do
	read -r c w <<<"$cw"
	m=${ML[$cw]} l=${LL[$cw]}
	printf '%4s %5s | %6s %6s %6s %6s %3s %6s | %6s %6s %6s %6s %3s %6s | %s\n' "$c" "$w" \
		"$(F p50_us "$m")" "$(F p99_us "$m")" "$(F max_us "$m")" "$(F over5ms "$m")" \
		"$(F over35ms "$m")" "$(calc queue $((c * w)) "$(F rate "$m")")" \
		"$(F p50_us "$l")" "$(F p99_us "$l")" "$(F max_us "$l")" "$(F over5ms "$l")" \
		"$(F over35ms "$l")" "$(calc queue $((c * w)) "$(F rate "$l")")" \
		"$([ "$(meets "$(F max_us "$m")" "<=" 5000)" = 1 ] && echo met || echo MISSED)"
done

echo
echo "== Downloads of $SIZE bytes, one block at a time on one connection, every byte checked;" \
	"median of $DLS (ms), server CPU per download"
printf '%-13s | %8s %8s %6s | %8s %8s | %7s %7s | %s\n' "" moonlet libcoap m/l "m us/dl" \
	"l us/dl" "m blk" "l blk" "max us per block m/l"
echo "--------------+--------------------------+-------------------+-----------------+-----------"
for szx in 6 7; do
	gen m dl -b "$szx" -n "$DLS" -u b/big -f "$BIG"
	m=$LINE
	gen l dl -b "$szx" -n "$DLS" -u big -f "$BIG"
	l=$LINE
	label="SZX 6 (1024)"
	[ "$szx" = 7 ] && label="BERT (SZX 7)"
	printf '%-13s | %8s %8s %6s | %8s %8s | %7s %7s | %s\n' "$label" "$(F median_ms "$m")" \
		"$(F median_ms "$l")" "$(calc ratio "$(F median_ms "$m")" "$(F median_ms "$l")")" \
		"$(F server_us "$m")" "$(F server_us "$l")" "$(F blocks "$m")" "$(F blocks "$l")" \
		"$(F max_block_us "$m")/$(F max_block_us "$l")"
	for who in moonlet libcoap; do
		[ $who = moonlet ] && x=$m || x=$l
		if [ "$(F bert "$x")" = unsupported ]; then
			echo "  $who BERT: not supported by server ($(sed -n 's/.*why="\([^"]*\)".*/\1/p' <<<"$x"))"
		fi
	done
done
moonlet_notes "requests, downloads"
stop m
stop l

# idle: fresh servers, one at a time, so that each RSS is its connections' alone
start_moonlet -o tcp_connections=$((IDLE * 2)) -o tcp_per_address=$((IDLE * 2))
o=$(listen_overflows)
gen m idle -n "$IDLE" -u hello
IM=$LINE
OM=$(calc diff "$(listen_overflows)" "$o")
moonlet_notes "idle"
stop m
start_libcoap
o=$(listen_overflows)
gen l idle -n "$IDLE" -u example_data
IL=$LINE
OL=$(calc diff "$(listen_overflows)" "$o")
stop l

echo
echo "== $IDLE idle connections from [::1] (CSM both ways, then nothing; moonlet with" \
	"tcp_connections and tcp_per_address $((IDLE * 2))); then one GET on each"
printf '%-8s | %6s %7s %8s %6s | %8s %8s %7s | %6s %6s\n' "" up "open s" "us/open" ovfl \
	"RSS0 kB" "RSS1 kB" "B/conn" closed alive
echo "---------+--------------------------------+---------------------------+--------------"
for who in moonlet libcoap; do
	if [ $who = moonlet ]; then x=$IM o=$OM; else x=$IL o=$OL; fi
	printf '%-8s | %6s %7s %8s %6s | %8s %8s %7s | %6s %6s\n' $who "$(F up "$x")" \
		"$(F open_s "$x")" "$(F open_server_us "$x")" "$o" "$(F rss_before_kb "$x")" \
		"$(F rss_after_kb "$x")" "$(F bytes_per_conn "$x")" "$(F closed_idle "$x")" "$(F alive "$x")"
done
printf '%-8s | %6s %7s %8s %6s | %8s %8s %7s |\n' m/l "" \
	"$(calc ratio "$(F open_s "$IM")" "$(F open_s "$IL")")" \
	"$(calc ratio "$(F open_server_us "$IM")" "$(F open_server_us "$IL")")" "" "" "" \
	"$(calc ratio "$(F bytes_per_conn "$IM")" "$(F bytes_per_conn "$IL")")"

echo
echo "us/op: the server's CPU per request; l/m: libcoap's over moonlet's. m CPU, gen:" \
	"moonlet's and the generator's CPU use in moonlet's run (near 100%: that side set the" \
	"pace). else: the machine's CPU used by other processes meanwhile (moonlet's" \
	"run/libcoap's, % of all cores). queue: the latency that queueing alone explains at that" \
	"rate (Little's law); an answer over 5 ms well above it is a stall. RSS counts the" \
	"server's user-space memory only (not the kernel's socket buffers). ovfl: connection" \
	"attempts the kernel dropped at a full accept queue meanwhile (coap-server-notls listens" \
	"with a backlog of 5; each drop costs that client a 1 s SYN retransmission), which sets" \
	"libcoap's open time. CPU time comes in 10 ms ticks: us/dl is coarse."
printf '%s\n' "${NOTES[@]}"
if [ ${#PROBLEMS[@]} -gt 0 ]; then
	echo "noted:"
	printf '  %s\n' "${PROBLEMS[@]}"
fi
[ "$FAILED" = 0 ] || { echo "tcp.sh: FAILED" >&2; exit 1; }
exit 0
