#!/usr/bin/env bash
# CoAP over WebSockets (issue 16): moonlet's coap+ws:// beside its own coap+tcp:// in one
# run, and the cost of a /metrics scrape on a server holding 10,000 sessions and 1,000
# resources.
#
# usage: tests/bench/ws.sh MOONLET_BIN PLUGIN_SO TCP_BENCH_BIN [PEERS_BENCH_BIN]
#
# 1. One moonlet serving PLUGIN_SO's GET /hello on coap+tcp://[::1]:0 and on
#    coap+ws://[::1]:0, pinned to CPU 0; tcp-bench on CPU 1 sends pipelined GETs over ONE
#    connection at each window, over TCP and then over a WebSocket (tcp-bench -t ws):
#    requests/s, the server's CPU per request, latency, and ws/tcp (target: ws >= 80 % of
#    tcp's rate).
# 2. A fresh moonlet on coap+ws://[::1]:0 (its HTTP side) and coap://127.0.0.1:0, with
#    many.lua (1,000 resources) and observe.lua; peers-bench (PEERS_BENCH_BIN, by default
#    beside TCP_BENCH_BIN) makes WS_SESSIONS sessions: devices from distinct loopback
#    addresses, each verified and observing. Then WS_SCRAPES GET /metrics one after the
#    other (tcp-bench scrape: a new connection each, read to the server's close): p50 and
#    max in ms, the body's size, 200 and Prometheus text checked (target: p50 < 5 ms). A
#    server that answers 404 does not serve /metrics yet: said in one line, not a failure.
#
# Exit status 1 when a server does not start or dies, or a run gets invalid or lost
# answers or a closed connection, or /metrics answers neither 200 nor 404, or its body is
# not Prometheus text; the targets only inform (MET/MISSED).
#
# Environment: BENCH_SECONDS (2) per measured run, BENCH_ROUNDS (2) measured runs of which
# the fastest counts, BENCH_WARMUP (0.5) before them, WS_WINDOWS ("1 16"), WS_SESSIONS
# (10000), WS_SCRAPES (50).
set -u -o pipefail
[ $# -ge 3 ] && [ $# -le 4 ] || { sed -n '2,27s/^# \{0,1\}//p' "$0"; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
MOONLET=$1
PLUGIN=$2
BENCH=$3
PEERS=${4:-$(dirname "$BENCH")/peers-bench}
SECS=${BENCH_SECONDS:-2}
ROUNDS=${BENCH_ROUNDS:-2}
WARM=${BENCH_WARMUP:-0.5}
WINDOWS=${WS_WINDOWS:-1 16}
SESSIONS=${WS_SESSIONS:-10000}
SCRAPES=${WS_SCRAPES:-50}
PAYLOAD="Hello, world"
TARGET=0.80
# shellcheck source=tests/bench/lib.sh
. "$HERE/lib.sh"
one_server
ERR=$(mktemp)
trap 'stop_pid "$PID"; rm -f "$LOG" "$ERR"' EXIT
FAILED=0
PROBLEMS=()

die() { echo "ws.sh: $*" >&2; exit 1; }

command -v taskset >/dev/null 2>&1 || die "taskset not found (util-linux)"
[ -x "$MOONLET" ] || die "$MOONLET not executable"
[ -f "$PLUGIN" ] || die "$PLUGIN not found"
[ -x "$BENCH" ] || die "$BENCH not executable"
[ -x "$PEERS" ] || die "$PEERS not executable (make build/peers-bench)"

# field LINE NAME: NAME's value in a NAME=VALUE line, "-" without one
field() {
	local re="(^| )$2=([^ ]*)"
	[[ $1 =~ $re ]] && echo "${BASH_REMATCH[2]}" || echo "-"
}
F() { field "$2" "$1"; }

# calc EXPR A B: awk arithmetic on fields, "-" when one of them is missing
calc() {
	awk -v e="$1" -v a="$2" -v b="${3:-0}" 'BEGIN {
		if (a == "-" || a == "" || b == "-" || b == "") { print "-"; exit }
		if (e == "ratio") { if (b + 0 == 0) print "-"; else printf "%.2f", a / b }
		else if (e == "busy") printf "%.0f%%", a * b / 1e4
	}'
}

# meets A OP B: 1 when A OP B holds, 0 else or when either is missing
meets() { awk -v a="$1" -v b="$3" -v op="$2" 'BEGIN {
	if (a == "-" || b == "-") { print 0; exit }
	print (op == ">=" ? a + 0 >= b + 0 : a + 0 < b + 0) ? 1 : 0 }'; }

# start_moonlet SCHEME ARGS...: moonlet on CPU 0 with ARGS; its port of SCHEME in PORT
start_moonlet() {
	local scheme=$1
	shift
	: >"$LOG"
	taskset -c "$CPU_S" "$MOONLET" -q "$@" >"$LOG" 2>&1 &
	PID=$!
	PORT=$(ready_port moonlet "$scheme") || die "moonlet did not start"
}

# stop_moonlet WHAT: a server that died or crashed fails the run
stop_moonlet() {
	if ! kill -0 "$PID" 2>/dev/null; then
		FAILED=1
		PROBLEMS+=("moonlet died during $1: $(grep -m 1 -A 2 'fatal:' "$LOG" | tr '\n' ' ')")
	fi
	stop_pid "$PID"
	if grep -q 'fatal:' "$LOG"; then
		FAILED=1
		PROBLEMS+=("moonlet crashed ($1): $(grep -m 1 -A 2 'fatal:' "$LOG" | tr '\n' ' ')")
	fi
	PID=
}

# gen NAME ARGS...: tcp-bench on CPU 1 against moonlet; its line in LINE. Invalid answers,
# lost ones, closed connections or a generator that fails fail the run.
gen() {
	local name=$1 rc
	shift
	: >"$ERR"
	LINE=$(timeout "$CAP" taskset -c "$CPU_C" "$BENCH" -s "$PID" "$@" 2>"$ERR")
	rc=$?
	if [ "$rc" != 0 ] || [ "$(F errors "$LINE")" != 0 ]; then
		FAILED=1
		PROBLEMS+=("$name: tcp-bench exited $rc: errors=$(F errors "$LINE")" \
			"lost=$(F lost "$LINE") closed=$(F closed "$LINE"): $(head -n 3 "$ERR" | tr '\n' ' ')")
	elif [ -s "$ERR" ]; then
		PROBLEMS+=("$name: $(head -n 3 "$ERR" | tr '\n' ' ')")
	fi
	[ "$(F late "$LINE")" = 0 ] || [ "$(F late "$LINE")" = - ] ||
		PROBLEMS+=("$name: late=$(F late "$LINE") (answers after 1000 ms)")
}

# a bound on one tcp-bench run, which bounds itself
CAP=$(awk -v s="$SECS" -v n="$ROUNDS" -v w="$WARM" 'BEGIN { printf "%d", 2 * (s * n + w) + 30 }')

# ---- 1. GETs over one connection: coap+tcp and coap+ws of the same server
start_moonlet coap+ws -l "coap+tcp://[::1]:0" -l "coap+ws://[::1]:0" "$PLUGIN"
WPORT=$PORT
TPORT=$(ready_port moonlet coap+tcp) || die "moonlet did not start its coap+tcp listener"
echo "moonlet coap+tcp://[::1]:$TPORT and coap+ws://[::1]:$WPORT, GET /hello ($(basename "$PLUGIN"))," \
	"on CPU $CPU_S; tcp-bench on CPU $CPU_C (TCP_NODELAY); best of $ROUNDS runs of $SECS s after" \
	"$WARM s of warm-up"
declare -A TL WL
for w in $WINDOWS; do
	gen "tcp w$w" -p "$TPORT" -d "$SECS" -N "$ROUNDS" -W "$WARM" -e "$PAYLOAD" -u hello \
		-w "$w" req
	TL[$w]=$LINE
	gen "ws w$w" -t ws -p "$WPORT" -d "$SECS" -N "$ROUNDS" -W "$WARM" -e "$PAYLOAD" -u hello \
		-w "$w" req
	WL[$w]=$LINE
done
kill -USR1 "$PID" 2>/dev/null
sleep 0.3
OVER=$(grep -o 'stats: .*' "$LOG" | tail -n 1 | sed -n 's/.* overload \([0-9]*\).*/\1/p')
WARN=$(grep -c 'warn' "$LOG")
stop_moonlet "the GETs"

echo
echo "== GETs/s over ONE connection, pipelined: WIN in flight, 2.05 and payload checked" \
	"(target: ws >= $(awk -v t=$TARGET 'BEGIN { print t * 100 }')% of tcp)"
printf '%4s | %8s %8s %6s | %8s %8s %6s | %5s %5s %5s %5s | %6s %6s %6s %6s | %s\n' win tcp ws \
	ws/tcp "tcp us" "ws us" ws/tcp "tCPU" "wCPU" "tgen" "wgen" "t p50" "w p50" "t p99" "w p99" target
echo "-----+--------------------------+--------------------------+-------------------------+-----------------------------+-------"
for w in $WINDOWS; do
	t=${TL[$w]} x=${WL[$w]}
	r=$(calc ratio "$(F rate "$x")" "$(F rate "$t")")
	printf '%4s | %8s %8s %6s | %8s %8s %6s | %5s %5s %5s %5s | %6s %6s %6s %6s | %s\n' "$w" \
		"$(F rate "$t")" "$(F rate "$x")" "$r" \
		"$(F server_us "$t")" "$(F server_us "$x")" \
		"$(calc ratio "$(F server_us "$x")" "$(F server_us "$t")")" \
		"$(calc busy "$(F server_us "$t")" "$(F rate "$t")")" \
		"$(calc busy "$(F server_us "$x")" "$(F rate "$x")")" \
		"$(calc busy "$(F client_us "$t")" "$(F rate "$t")")" \
		"$(calc busy "$(F client_us "$x")" "$(F rate "$x")")" \
		"$(F p50_us "$t")" "$(F p50_us "$x")" "$(F p99_us "$t")" "$(F p99_us "$x")" \
		"$([ "$(meets "$r" ">=" $TARGET)" = 1 ] && echo MET || echo MISSED)"
done
echo "tcp, ws: requests/s; us: the server's CPU per request (ws/tcp: what a WebSocket costs" \
	"more); tCPU, wCPU: the server's CPU use, tgen, wgen: the generator's (near 100%: that side" \
	"set the pace); p50, p99: send to answer, us. Elsewhere (the machine's other load):" \
	"$(for w in $WINDOWS; do printf 'w%s %s/%s ' "$w" "$(F elsewhere "${TL[$w]}")" "$(F elsewhere "${WL[$w]}")"; done)"
echo "moonlet: ${OVER:--} connections refused (overload), $WARN warnings in its log"

# ---- 2. /metrics with SESSIONS sessions and 1,000 resources
echo
start_moonlet coap+ws -l "coap+ws://[::1]:0" -l "coap://127.0.0.1:0" "$HERE/many.lua" \
	"$HERE/observe.lua"
WPORT=$PORT
UPORT=$(ready_port moonlet udp) || die "moonlet did not start its coap:// listener"
# the 1,000 resources are there (over the WebSocket: no other client needed)
gen "GET /r/1000 over ws" -t ws -p "$WPORT" -d 0.2 -W 0 -e r1000 -u r/1000 req
# each is requested once: 1,000 latency histograms in every scrape (the worst case)
python3 - "$UPORT" <<'PY' || die "GET /r/1 .. /r/1000 over coap:// failed"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
for i in range(1, 1001):
    seg = str(i).encode()
    # CON GET, MID i, no token; Uri-Path "r", Uri-Path "<i>"
    s.sendto(bytes([0x40, 1, i >> 8, i & 255, 0xb1]) + b"r" + bytes([len(seg)]) + seg,
             ("127.0.0.1", int(sys.argv[1])))
    m = s.recv(64)
    assert m[1] == 0x45 and m[-len(seg):] == seg, m
PY
echo "== /metrics: GET http://[::1]:$WPORT/metrics, $SCRAPES one after the other, a new" \
	"connection each, read to the server's close; with $SESSIONS sessions (peers-bench:" \
	"devices from 127.1.0.1 on, each verified and observing /obs/value on udp://127.0.0.1:$UPORT)" \
	"and 1,000 resources (many.lua), each requested once: a latency histogram each" \
	"(target: p50 < 5 ms)"
PLINE=$(timeout 400 taskset -c "$CPU_C" "$PEERS" "$UPORT" "$PID" "$SESSIONS" 256 1 2>"$ERR")
rc=$?
if [ "$rc" != 0 ]; then
	FAILED=1
	PROBLEMS+=("peers-bench exited $rc: $PLINE $(head -n 3 "$ERR" | tr '\n' ' ')")
fi
kill -USR1 "$PID" 2>/dev/null
sleep 0.3
STATS=$(grep -o 'stats: .*' "$LOG" | tail -n 1)
echo "server before the scrapes: sessions $(sed -n 's/.*sessions \([0-9]*\) verified \([0-9]*\).*/\1 (verified \2)/p' <<<"$STATS")," \
	"observers $(sed -n 's/.* observers \([0-9]*\) .*/\1/p' <<<"$STATS"), RSS $(F rss_after_kb "$PLINE") kB;" \
	"peers-bench registered $(F registered "$PLINE") in $(F register_s "$PLINE") s"
: >"$ERR"
SLINE=$(timeout $((SCRAPES * 11 + 10)) taskset -c "$CPU_C" "$BENCH" -p "$WPORT" -s "$PID" \
	-n "$SCRAPES" -u metrics scrape 2>"$ERR")
rc=$?
code=$(F code "$SLINE")
if [ "$code" = 404 ]; then
	echo "metrics: /metrics not served (404)"
elif [ "$rc" != 0 ] || [ "$code" != 200 ]; then
	FAILED=1
	echo "metrics: FAILED (code $code): $(head -n 3 "$ERR" | tr '\n' ' ')"
	PROBLEMS+=("scrape: tcp-bench exited $rc: $SLINE $(head -n 3 "$ERR" | tr '\n' ' ')")
else
	printf '%7s | %7s %7s %8s | %10s %10s %7s %7s %7s | %8s | %s\n' scrapes "p50 ms" "max ms" \
		"first ms" "body bytes" "(max)" lines "# TYPE" samples "srv us" target
	echo "--------+----------------------------+---------------------------------------------+----------+-------"
	printf '%7s | %7s %7s %8s | %10s %10s %7s %7s %7s | %8s | %s\n' "$(F "done" "$SLINE")" \
		"$(F p50_ms "$SLINE")" "$(F max_ms "$SLINE")" "$(F first_ms "$SLINE")" \
		"$(F body_bytes "$SLINE")" "$(F body_max "$SLINE")" "$(F lines "$SLINE")" \
		"$(F types "$SLINE")" "$(F samples "$SLINE")" "$(F server_us "$SLINE")" \
		"$([ "$(meets "$(F p50_ms "$SLINE")" "<" 5)" = 1 ] && echo MET || echo MISSED)"
	echo "ms: connect to the server's close, at the client; srv us: the server's CPU per" \
		"scrape (10 ms ticks: coarse); Content-Type: $(F content_type "$SLINE")"
fi
stop_moonlet "the scrapes"

if [ ${#PROBLEMS[@]} -gt 0 ]; then
	echo "noted:"
	printf '  %s\n' "${PROBLEMS[@]}"
fi
[ "$FAILED" = 0 ] || { echo "ws.sh: FAILED" >&2; exit 1; }
exit 0
