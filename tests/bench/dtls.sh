#!/usr/bin/env bash
# DTLS benchmark: moonlet's coaps:// listener against libcoap's coap-server-gnutls, side by
# side in one run, driven by dtls-bench (GnuTLS clients, PSK, TLS_PSK_WITH_AES_128_CCM_8).
#
# usage: tests/bench/dtls.sh MOONLET_BIN PLUGIN_SO DTLS_BENCH_BIN
#
# Tables: full handshakes per second (one at a time and 16 at once), resumed ones (session
# tickets; libcoap has none), GETs per second over 1 and 100 sessions with 1, 16 and 256
# outstanding, memory per idle session with DTLS_IDLE of them held, and one live session's
# GETs per second with them held against none. Each row: moonlet, libcoap, the ratio, the
# server CPU per operation (on two cores the generator may be the one that saturates) and
# the issue's target. moonlet serves PLUGIN_SO's GET /hello; libcoap has no such resource,
# so it gets a PUT of the same "Hello, world" to /example_data, which it then serves.
# Servers on CPU 0, generator on CPU 1, loopback, free ports, stopped by PID. Exit status 1
# when a server does not start or a run gets an invalid response; targets only inform.
#
# Environment: BENCH_SECONDS (2) per measured run, BENCH_ROUNDS (2) measured runs of which
# the fastest counts (the machine may be busy elsewhere for a while), BENCH_WARMUP (0.5)
# before them, DTLS_IDLE (10000) idle sessions, DTLS_IDLE_RATE (2000) opened per second.
set -u -o pipefail
[ $# -eq 3 ] || { sed -n '2,20s/^# \{0,1\}//p' "$0"; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
MOONLET=$1
PLUGIN=$2
BENCH=$3
SECS=${BENCH_SECONDS:-2}
ROUNDS=${BENCH_ROUNDS:-2}
WARM=${BENCH_WARMUP:-0.5}
IDLE=${DTLS_IDLE:-10000}
IDLE_RATE=${DTLS_IDLE_RATE:-2000}
IDENT=bench
KEY=benchkey
PAYLOAD="Hello, world"
# shellcheck source=tests/bench/lib.sh
. "$HERE/lib.sh"
one_server
LPID=
LLOG=$(mktemp)
ERR=$(mktemp)
trap 'stop_pid "$PID"; stop_pid "$LPID"; rm -f "$LOG" "$LLOG" "$ERR"' EXIT
FAILED=0
PROBLEMS=()

die() { echo "dtls.sh: $*" >&2; exit 1; }

for t in taskset python3 ss coap-server-gnutls coap-client-gnutls; do
	command -v "$t" >/dev/null 2>&1 || die "$t not found (libcoap3-bin, python3, util-linux, iproute2)"
done
[ -x "$BENCH" ] || die "$BENCH not executable"
[ -x "$MOONLET" ] || die "$MOONLET not executable"

# moonlet on a free port; the port from its "ready dtls://" line
start_moonlet() {
	: >"$LOG"
	taskset -c "$CPU_S" "$MOONLET" -q -l coaps://127.0.0.1:0 -d "psk=$IDENT:$KEY" \
		-o dtls_sessions=$((IDLE * 2)) -o dtls_handshake_rate=1000000 \
		-o dtls_handshakes=100000 "$PLUGIN" >"$LOG" 2>&1 &
	PID=$!
	MPORT=$(ready_port moonlet dtls) || die "moonlet did not start"
}

# libcoap listens on PORT (coap, coap+tcp) and PORT+1 (coaps, coaps+tcp): two free ones
free_pair() {
	python3 -c '
import random, socket
for _ in range(200):
    p = random.randrange(20000, 60000)
    try:
        s = [socket.socket(socket.AF_INET, t) for t in (socket.SOCK_DGRAM, socket.SOCK_STREAM) * 2]
        for i, x in enumerate(s):
            x.bind(("127.0.0.1", p + i // 2))
        print(p)
        break
    except OSError:
        pass'
}

start_libcoap() {
	local base
	base=$(free_pair)
	[ -n "$base" ] || die "no free port pair for libcoap"
	LPORT=$((base + 1))
	: >"$LLOG"
	taskset -c "$CPU_S" coap-server-gnutls -A 127.0.0.1 -p "$base" -k "$KEY" >"$LLOG" 2>&1 &
	LPID=$!
	for _ in $(seq 1 50); do
		ss -Hlun "sport = :$LPORT" 2>/dev/null | grep -q . && break
		kill -0 "$LPID" 2>/dev/null || break
		sleep 0.1
	done
	timeout 5 coap-client-gnutls -B 3 -k "$KEY" -u "$IDENT" -m put -e "$PAYLOAD" \
		"coaps://127.0.0.1:$LPORT/example_data" >>"$LLOG" 2>&1 ||
		{ cat "$LLOG" >&2; die "coap-server-gnutls did not start (or refused the PUT)"; }
}

# field LINE NAME: NAME's value in a dtls-bench line, "-" without one
field() {
	local re="(^| )$2=([^ ]*)"
	[[ $1 =~ $re ]] && echo "${BASH_REMATCH[2]}" || echo "-"
}

# calc EXPR A B...: awk arithmetic on fields, "-" when one of them is missing
calc() {
	local expr=$1
	shift
	awk -v e="$expr" -v args="$*" 'BEGIN {
		n = split(args, v, " ")
		for (i = 1; i <= n; i++) if (v[i] == "-" || v[i] == "") { print "-"; exit }
		a = v[1]; b = v[2]
		if (e == "ratio") { if (b + 0 == 0) print "-"; else printf "%.2f", a / b }
		else if (e == "kib") printf "%.1f", a / 1024
		else if (e == "busy") printf "%.0f%%", a * b / 1e4
	}'
}

# gen WHO ARGS...: dtls-bench against moonlet (m) or libcoap (l); its line in LINE. An
# invalid response or a generator that fails fails the whole run; the rest is noted.
gen() {
	local who=$1 rc name errs args
	shift
	args="$*"
	if [ "$who" = m ]; then
		name=moonlet
		set -- -p "$MPORT" -s "$PID" "$@"
	else
		name=libcoap
		set -- -p "$LPORT" -s "$LPID" -u example_data "$@"
	fi
	: >"$ERR"
	LINE=$(timeout "$CAP" taskset -c "$CPU_C" "$BENCH" -d "$SECS" -N "$ROUNDS" -W "$WARM" \
		-i "$IDENT" -k "$KEY" -e "$PAYLOAD" "$@" 2>"$ERR")
	rc=$?
	errs=$(field "$LINE" errors)
	[ -z "$SUITE" ] && [ "$(field "$LINE" suite)" != - ] && SUITE=$(field "$LINE" suite)
	if [ "$rc" -gt 1 ] || [ "$errs" = - ]; then
		FAILED=1
		PROBLEMS+=("$name $args: dtls-bench exited $rc: $(head -c 300 "$ERR")")
	elif [ "$errs" != 0 ]; then
		FAILED=1
		PROBLEMS+=("$name $args: $errs invalid responses: $(head -n 3 "$ERR" | tr '\n' ' ')")
	elif [ "$rc" != 0 ] || [ -s "$ERR" ]; then
		PROBLEMS+=("$name $args: failed=$(field "$LINE" failed) dead=$(field "$LINE" dead)" \
			"lost=$(field "$LINE" lost): $(head -n 3 "$ERR" | tr '\n' ' ')")
	fi
	if [ "$(field "$LINE" lost)" != 0 ] && [ "$(field "$LINE" lost)" != - ]; then
		PROBLEMS+=("$name $args: lost=$(field "$LINE" lost) late=$(field "$LINE" late)")
	fi
	if [ "$(meets "$(field "$LINE" max_ms)" ">=" 900)" = 1 ]; then
		PROBLEMS+=("$name $args: a handshake took $(field "$LINE" max_ms) ms (a flight lost," \
			"retransmitted after 1 s)")
	fi
}

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

# verdict OK: what to print in the target column
verdict() { [ "$1" = 1 ] && echo met || echo MISSED; }

# meets A OP B: 1 when A OP B holds, 0 else or when either is missing
meets() { awk -v a="$1" -v b="$3" -v op="$2" 'BEGIN {
	if (a == "-" || b == "-") { print 0; exit }
	print (op == ">=" ? a + 0 >= b + 0 : a + 0 <= b + 0) ? 1 : 0 }'; }

# the moonlet's DTLS counters (SIGUSR1's stats line)
moonlet_stats() {
	kill -USR1 "$PID" 2>/dev/null
	sleep 0.3
	echo "moonlet stats:$(grep -o 'stats: .*' "$LOG" | tail -n 1 | grep -o ' dtls_.*')"
}

# a bound on one dtls-bench run, which bounds itself: idle mode opens for 60 s at most
CAP=$(awk -v s="$SECS" -v n="$ROUNDS" -v w="$WARM" 'BEGIN { printf "%d", 2 * (s * n + w) + 100 }')
SUITE=
start_moonlet
start_libcoap
echo "moonlet 127.0.0.1:$MPORT GET /hello (dtls_handshake_rate raised to 1000000/s per address," \
	"dtls_handshakes 100000, dtls_sessions $((IDLE * 2)));" \
	"libcoap 127.0.0.1:$LPORT GET /example_data (after a PUT of \"$PAYLOAD\")"
echo "PSK identity $IDENT; servers on CPU $CPU_S, generator on CPU $CPU_C;" \
	"best of $ROUNDS runs of $SECS s after $WARM s of warm-up; us/op: server CPU per operation"

# F NAME LINE: shorthand for field
F() { field "$2" "$1"; }

# the columns every moonlet-against-libcoap row has after its label
CMP_HEAD=$(printf '%9s %9s %6s | %8s %8s %6s | %5s %5s %7s' moonlet libcoap m/l "m us/op" \
	"l us/op" l/m "m CPU" gen else)
CMP_RULE="---------------------------+--------------------------+--------------------"

# cmp M_LINE L_LINE: those columns for a moonlet run and a libcoap run
cmp() {
	printf '%9s %9s %6s | %8s %8s %6s | %5s %5s %7s' "$(F rate "$1")" "$(F rate "$2")" \
		"$(calc ratio "$(F rate "$1")" "$(F rate "$2")")" "$(F server_us "$1")" \
		"$(F server_us "$2")" "$(calc ratio "$(F server_us "$2")" "$(F server_us "$1")")" \
		"$(calc busy "$(F server_us "$1")" "$(F rate "$1")")" \
		"$(calc busy "$(F client_us "$1")" "$(F rate "$1")")" \
		"$(F elsewhere "$1" | tr -d %)/$(F elsewhere "$2")"
}

echo
echo "== Full PSK handshakes/s: new socket, cookie exchange, one GET, close_notify" \
	"(target: moonlet >= libcoap)"
printf '%-10s | %s | %s\n' "" "$CMP_HEAD" target
echo "-----------+-$CMP_RULE-+-------"
declare -A FULL FULL_US
for c in 1 16; do
	gen m hs -g -c "$c"
	m=$LINE
	gen l hs -g -c "$c"
	FULL[$c]=$(F rate "$m")
	FULL_US[$c]=$(F server_us "$m")
	printf '%-10s | %s | %s\n' "$c at once" "$(cmp "$m" "$LINE")" \
		"$(verdict "$(meets "$(F rate "$m")" ">=" "$(F rate "$LINE")")")"
done

echo
echo "== Resumed handshakes/s (RFC 5077 ticket of one full handshake), one GET, close_notify" \
	"(target: resumed >= 3x moonlet's full)"
printf '%-10s | %9s %11s %9s %8s | %8s %8s | %4s | %-9s | %s\n' "" moonlet resumed "m full" \
	res/full "m us/op" "full us" else libcoap target
echo "-----------+------------------------------------------+-------------------+------+-----------+-------"
for c in 1 16; do
	gen m hs -g -R -c "$c"
	m=$LINE
	gen l hs -g -R -c "$c"
	lres="n/a"
	[ "$(F resumed "$LINE")" = 0 ] || lres="$(F rate "$LINE")"
	r=$(calc ratio "$(F rate "$m")" "${FULL[$c]}")
	printf '%-10s | %9s %11s %9s %8s | %8s %8s | %4s | %-9s | %s\n' "$c at once" "$(F rate "$m")" \
		"$(F resumed "$m")/$(F handshakes "$m")" "${FULL[$c]}" "$r" "$(F server_us "$m")" \
		"${FULL_US[$c]}" "$(F elsewhere "$m")" "$lres" \
		"$(verdict "$(meets "$r" ">=" 3)")"
done
# plain PSK has no public-key work for a ticket to save; with ECDHE-PSK (forward secrecy:
# the client offers only it) there is, and that is where resumption pays
# (GnuTLS 3.7 has ECDHE-PSK with ChaCha20 among the AEAD ciphers, not with CCM or GCM)
ECDHE="NONE:+VERS-DTLS1.2:+ECDHE-PSK:+CHACHA20-POLY1305:+AEAD:+COMP-NULL:+SIGN-ALL:+GROUP-SECP256R1"
for c in 1 16; do
	gen m hs -g -c "$c" -P "$ECDHE"
	full=$LINE
	gen m hs -g -R -c "$c" -P "$ECDHE"
	r=$(calc ratio "$(F rate "$LINE")" "$(F rate "$full")")
	printf '%-10s | %9s %11s %9s %8s | %8s %8s | %4s | %-9s | %s\n' "$c ECDHE" "$(F rate "$LINE")" \
		"$(F resumed "$LINE")/$(F handshakes "$LINE")" "$(F rate "$full")" "$r" \
		"$(F server_us "$LINE")" "$(F server_us "$full")" "$(F elsewhere "$LINE")" "-" \
		"$(verdict "$(meets "$r" ">=" 3)")"
done

echo
echo "== GET requests/s over established sessions, CON, piggybacked 2.05 checked" \
	"(target: moonlet >= 2x libcoap)"
printf '%-10s | %s | %s\n' "sess  win" "$CMP_HEAD" target
echo "-----------+-$CMP_RULE-+-------"
for n in 1 100; do
	for w in 1 16 256; do
		gen m req -n "$n" -w "$w"
		m=$LINE
		gen l req -n "$n" -w "$w"
		r=$(calc ratio "$(F rate "$m")" "$(F rate "$LINE")")
		printf '%4s %5s | %s | %s\n' "$n" "$w" "$(cmp "$m" "$LINE")" "$(verdict "$(meets "$r" ">=" 2)")"
	done
done
moonlet_stats
stop m
stop l

# idle: fresh servers, one at a time, so that each RSS is the idle sessions' alone
start_moonlet
gen m idle -n "$IDLE" -c 16 -r "$IDLE_RATE" -w 16
IM=$LINE
moonlet_stats
stop m
start_libcoap
gen l idle -n "$IDLE" -c 16 -r "$IDLE_RATE" -w 16
IL=$LINE
stop l

echo
echo "== $IDLE idle sessions, each after a handshake and one GET, from its own address" \
	"(at most $IDLE_RATE opened/s; target: <= 8 KiB each)"
printf '%-8s | %7s %7s %8s | %9s %9s %8s | %s\n' "" opened "open s" "us/open" "RSS0 kB" \
	"RSS1 kB" "KiB/sess" target
echo "---------+--------------------------+------------------------------+-------"
MKIB=$(calc kib "$(F bytes_per_session "$IM")")
LKIB=$(calc kib "$(F bytes_per_session "$IL")")
for who in moonlet libcoap; do
	if [ $who = moonlet ]; then l=$IM kib=$MKIB; else l=$IL kib=$LKIB; fi
	printf '%-8s | %7s %7s %8s | %9s %9s %8s | %s\n' $who "$(F opened "$l")" "$(F open_s "$l")" \
		"$(F open_server_us "$l")" "$(F rss_before_kb "$l")" "$(F rss_after_kb "$l")" "$kib" \
		"$([ $who = moonlet ] && verdict "$(meets "$kib" "<=" 8)")"
done
printf '%-8s | %7s %7s %8s | %9s %9s %8s |\n' m/l "" "" "" "" "" "$(calc ratio "$MKIB" "$LKIB")"

echo
echo "== One live session, window 16: GETs/s with the $IDLE idle sessions held vs none" \
	"(target: within 10% of none)"
printf '%-8s | %9s %9s %7s | %8s %8s | %7s | %s\n' "" none idle idle/no "us none" "us idle" \
	else target
echo "---------+-----------------------------+-------------------+---------+-------"
for who in moonlet libcoap; do
	[ $who = moonlet ] && l=$IM || l=$IL
	r=$(calc ratio "$(F idle_rate "$l")" "$(F none_rate "$l")")
	printf '%-8s | %9s %9s %7s | %8s %8s | %7s | %s\n' $who "$(F none_rate "$l")" \
		"$(F idle_rate "$l")" "$r" "$(F none_server_us "$l")" "$(F idle_server_us "$l")" \
		"$(F none_elsewhere "$l" | tr -d %)/$(F idle_elsewhere "$l")" \
		"$([ $who = moonlet ] && verdict "$(meets "$r" ">=" 0.9)")"
done
printf '%-8s | %9s %9s\n' m/l "$(calc ratio "$(F none_rate "$IM")" "$(F none_rate "$IL")")" \
	"$(calc ratio "$(F idle_rate "$IM")" "$(F idle_rate "$IL")")"

echo
echo "Cipher suite negotiated: ${SUITE:-none}. us/op: the server's CPU per operation; l/m:" \
	"libcoap's over moonlet's. m CPU, gen: moonlet's and the generator's CPU use in moonlet's" \
	"run (near 100%: that side set the pace; both about 50%: one at a time, each waits for" \
	"the other). else: the machine's CPU used by other processes meanwhile (moonlet's run/" \
	"libcoap's, % of all cores): the higher, the lower and less comparable the rates."
if [ ${#PROBLEMS[@]} -gt 0 ]; then
	echo "noted:"
	printf '  %s\n' "${PROBLEMS[@]}"
fi
[ "$FAILED" = 0 ] || { echo "dtls.sh: FAILED" >&2; exit 1; }
exit 0
