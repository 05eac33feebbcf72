#!/usr/bin/env bash
# Benchmark moonlet against libcoap's example server (coap-server-notls).
#
# usage: tests/bench/run.sh MOONLET_BIN PLUGIN_SO [BENCH_BIN [LUA_SCRIPT]]
#
#   MOONLET_BIN  moonlet binary, started as: MOONLET_BIN -a ::1 -p PORT -q PLUGIN_SO
#                ("-" skips moonlet and benchmarks libcoap only)
#   PLUGIN_SO    plugin serving GET /hello -> 2.05 "Hello, world"
#   BENCH_BIN    load generator (default build/coap-bench)
#   LUA_SCRIPT   the Lua twin of PLUGIN_SO (examples/hello.lua): run by a third
#                server, compared with the C plugin in a second table
#
# Environment:
#   BENCH_SECONDS      measured seconds per run (default 4)
#   BENCH_WARMUP       unmeasured warm-up seconds per run (default 1)
#   BENCH_WINDOWS      CON windows to run (default "1 16 256")
#   BENCH_NON_WINDOWS  windows also run with NON requests (default "256";
#                      empty: no NON runs)
#
# Both servers are pinned to CPU 0, the generator to CPU 1, and they are
# loaded one after the other with identical generator parameters.  Exit
# status is non-zero if a server could not be started or any generator run
# reported errors (invalid responses); loss is reported but not fatal.

set -u -o pipefail

usage() {
	sed -n '2,20s/^# \{0,1\}//p' "$0"
	exit 2
}
[ $# -ge 2 ] && [ $# -le 4 ] || usage

MOONLET_BIN=$1
PLUGIN_SO=$2
BENCH_BIN=${3:-build/coap-bench}
LUA_SCRIPT=${4:-}
BENCH_SECONDS=${BENCH_SECONDS:-4}
BENCH_WARMUP=${BENCH_WARMUP:-1}
BENCH_WINDOWS=${BENCH_WINDOWS:-"1 16 256"}
BENCH_NON_WINDOWS=${BENCH_NON_WINDOWS-"256"}

PAYLOAD="Hello, world"
COAP_CLIENT=${COAP_CLIENT:-coap-client-notls}
COAP_SERVER=${COAP_SERVER:-coap-server-notls}

die() { echo "run.sh: $*" >&2; FAILED=1; exit 1; }

for t in taskset python3 ss "$COAP_CLIENT" "$COAP_SERVER"; do
	command -v "$t" >/dev/null 2>&1 || die "$t not found (libcoap3-bin, python3, util-linux, iproute2)"
done
[ -x "$BENCH_BIN" ] || die "$BENCH_BIN not executable (make build/coap-bench)"
if [ "$MOONLET_BIN" != "-" ]; then
	[ -x "$MOONLET_BIN" ] || die "$MOONLET_BIN not executable"
	[ -f "$PLUGIN_SO" ] || die "$PLUGIN_SO not found"
fi

# servers on CPU 0, generator on CPU 1 (both on CPU 0 if there is only one)
SERVER_CPU=0
BENCH_CPU=1
if [ "$(nproc)" -lt 2 ]; then
	echo "run.sh: warning: only one CPU, server and generator share CPU 0" >&2
	BENCH_CPU=0
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/moonlet-bench.XXXXXX") || die "mktemp failed"
MOONLET_PID=
LIBCOAP_PID=
LUA_PID=
FAILED=0

# shellcheck source=tests/bench/lib.sh
. "$(dirname "$0")/lib.sh"

cleanup() {
	stop_pid "$MOONLET_PID"
	stop_pid "$LIBCOAP_PID"
	stop_pid "$LUA_PID"
	if [ "$FAILED" != 0 ]; then
		local f
		for f in "$TMP"/*.log; do
			[ -s "$f" ] || continue
			echo "---- $(basename "$f") (last lines) ----" >&2
			tail -n 15 "$f" >&2
		done
	fi
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Three distinct free UDP ports on ::1 (the kernel picks them; there is a small
# window in which something else could grab them, which start-up detects).
read -r PORT1 PORT2 PORT3 < <(python3 -c '
import socket
a = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); a.bind(("::1", 0))
b = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); b.bind(("::1", 0))
c = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); c.bind(("::1", 0))
print(a.getsockname()[1], b.getsockname()[1], c.getsockname()[1])') || die "cannot pick free ports"

# now in milliseconds (for bounded waits)
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# wait_ready PID PORT PATH NAME: until the server has bound PORT and
# answers GET PATH with the payload; at most ~5 s.
wait_ready() {
	local pid=$1 port=$2 path=$3 name=$4
	local deadline=$(( $(now_ms) + 5000 )) out
	# 1. the UDP port is bound (cheap, 20 ms polling)
	until ss -Hlun "sport = :$port" 2>/dev/null | grep -q .; do
		kill -0 "$pid" 2>/dev/null || die "$name exited during start-up"
		[ "$(now_ms)" -lt "$deadline" ] || die "$name did not bind UDP port $port within 5 s"
		sleep 0.02
	done
	# 2. it answers (coap-client exits 0 even on timeout: check the output)
	while :; do
		kill -0 "$pid" 2>/dev/null || die "$name exited during start-up"
		out=$(timeout 3 "$COAP_CLIENT" -B 1 -m get "coap://[::1]:$port$path" 2>>"$TMP/probe.log")
		[ "$out" = "$PAYLOAD" ] && return 0
		[ "$(now_ms)" -lt "$deadline" ] || die "$name does not answer GET $path with \"$PAYLOAD\" (got: \"$out\")"
		sleep 0.05
	done
}

# ---------------------------------------------------------------- servers

if [ "$MOONLET_BIN" != "-" ]; then
	taskset -c "$SERVER_CPU" "$MOONLET_BIN" -a ::1 -p "$PORT1" -q "$PLUGIN_SO" \
		>"$TMP/moonlet.log" 2>&1 &
	MOONLET_PID=$!
	wait_ready "$MOONLET_PID" "$PORT1" /hello moonlet
fi

if [ "$MOONLET_BIN" != "-" ] && [ -n "$LUA_SCRIPT" ]; then
	taskset -c "$SERVER_CPU" "$MOONLET_BIN" -a ::1 -p "$PORT3" -q "$LUA_SCRIPT" \
		>"$TMP/lua.log" 2>&1 &
	LUA_PID=$!
	wait_ready "$LUA_PID" "$PORT3" /hello "moonlet (Lua)"
fi

# libcoap's example server has no fixed small text resource: "/" returns a
# 137-byte banner, "/time" a 15-byte clock string with Max-Age and Observe
# support (formatting the time on every GET), "/async" a delayed separate
# response.  "/example_data" is a plain stored-data resource that accepts
# PUT; its initial content is a 1500-byte test pattern served block-wise
# (Block2 1024 + ETag + Size2).  We PUT the same 12 bytes moonlet's /hello
# returns, after which GET /example_data answers a piggybacked 2.05 with just
# that payload and no options -- the closest equivalent of moonlet's
# GET /hello.  (-e, "echo back PUT data", is not needed for this.)
taskset -c "$SERVER_CPU" "$COAP_SERVER" -A ::1 -p "$PORT2" >"$TMP/libcoap.log" 2>&1 &
LIBCOAP_PID=$!
deadline=$(( $(now_ms) + 5000 ))
until ss -Hlun "sport = :$PORT2" 2>/dev/null | grep -q .; do
	kill -0 "$LIBCOAP_PID" 2>/dev/null || die "coap-server-notls exited during start-up"
	[ "$(now_ms)" -lt "$deadline" ] || die "coap-server-notls did not bind UDP port $PORT2"
	sleep 0.02
done
timeout 5 "$COAP_CLIENT" -B 2 -m put -e "$PAYLOAD" "coap://[::1]:$PORT2/example_data" \
	>>"$TMP/probe.log" 2>&1 || die "PUT /example_data to coap-server-notls failed"
wait_ready "$LIBCOAP_PID" "$PORT2" /example_data coap-server-notls

# ---------------------------------------------------------------- runs

# field LINE NAME: value of NAME=... in a generator result line
field() {
	local re="(^| )$2=([^ ]*)"
	[[ $1 =~ $re ]] && echo "${BASH_REMATCH[2]}" || echo "-"
}

# bench LABEL TYPE WINDOW PORT PATH -> sets RESULT (stdout line) and RC
bench() {
	local label=$1 type=$2 window=$3 port=$4 path=$5 flags=()
	[ "$type" = NON ] && flags+=(-n)
	{ echo "== $label $type w=$window"; } >>"$TMP/bench-$label.log"
	RESULT=$(timeout "$RUN_CAP" \
		taskset -c "$BENCH_CPU" "$BENCH_BIN" "${flags[@]}" -w "$window" \
		-d "$BENCH_SECONDS" -W "$BENCH_WARMUP" -t 1000 -c 2.05 -e "$PAYLOAD" \
		::1 "$port" "$path" 2>>"$TMP/bench-$label.log")
	RC=$?
	echo "$RESULT" >>"$TMP/bench-$label.log"
}

# safety net around each generator run (it bounds itself anyway)
RUN_CAP=$(awk -v a="$BENCH_SECONDS" -v b="$BENCH_WARMUP" 'BEGIN { printf "%d", a + b + 15 }')

rows=()
lua_rows=()
details=()
configs=()
for w in $BENCH_WINDOWS; do configs+=("CON $w"); done
for w in $BENCH_NON_WINDOWS; do configs+=("NON $w"); done

if [ -n "$MOONLET_PID" ]; then M_DESC="[::1]:$PORT1 /hello"; else M_DESC="skipped"; fi
echo "moonlet: $M_DESC    libcoap: [::1]:$PORT2 /example_data" \
     "   servers on CPU $SERVER_CPU, generator on CPU $BENCH_CPU," \
     "${BENCH_SECONDS}s measured + ${BENCH_WARMUP}s warm-up per run"

for c in "${configs[@]}"; do
	read -r type w <<<"$c"
	m_line="" l_line="" m_rc=0 l_rc=0
	if [ -n "$MOONLET_PID" ]; then
		bench moonlet "$type" "$w" "$PORT1" /hello
		m_line=$RESULT m_rc=$RC
	fi
	bench libcoap "$type" "$w" "$PORT2" /example_data
	l_line=$RESULT l_rc=$RC
	if [ -n "$LUA_PID" ]; then
		bench lua "$type" "$w" "$PORT3" /hello
		[ "$RC" = 0 ] || [ "$RC" = 2 ] || FAILED=1
		[ "$(field "$RESULT" errors)" = 0 ] || FAILED=1
		s_rps=$(field "$RESULT" rps)
		lua_rows+=("$(printf '%6s %4s | %10s %10s %6s | %9s %9s | %6s' "$w" "$type" \
			"$s_rps" "$(field "$m_line" rps)" \
			"$(awk -v a="$s_rps" -v b="$(field "$m_line" rps)" \
				'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f", a / b }')" \
			"$(field "$RESULT" p50_us)" "$(field "$RESULT" p99_us)" "$(field "$RESULT" lost)")")
	fi

	m_rps=$(field "$m_line" rps) l_rps=$(field "$l_line" rps)
	m_p50=$(field "$m_line" p50_us) m_p99=$(field "$m_line" p99_us)
	l_p50=$(field "$l_line" p50_us) l_p99=$(field "$l_line" p99_us)
	ratio=$(awk -v a="$m_rps" -v b="$l_rps" \
		'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f", a / b }')
	p99r=$(awk -v a="$m_p99" -v b="$l_p99" \
		'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f", a / b }')
	rows+=("$(printf '%6s %4s | %10s %10s %6s | %9s %9s | %9s %9s | %6s' \
		"$w" "$type" "$m_rps" "$l_rps" "$ratio" "$m_p50" "$m_p99" \
		"$l_p50" "$l_p99" "$p99r")")

	for who in moonlet libcoap; do
		if [ $who = moonlet ]; then
			[ -n "$MOONLET_PID" ] || continue
			line=$m_line rc=$m_rc
		else
			line=$l_line rc=$l_rc
		fi
		sent=$(field "$line" sent) errs=$(field "$line" errors) lost=$(field "$line" lost)
		note=""
		case $rc in
		0) ;;
		2) note="LOSS > 1%" ;;
		1) note="ERRORS"; FAILED=1 ;;
		*) note="generator failed (exit $rc)"; FAILED=1 ;;
		esac
		# a missing or unparsable result line is a failure too
		if [ "$errs" = "-" ]; then
			note="${note:-no result}"; FAILED=1
		elif [ "$errs" != 0 ]; then
			FAILED=1
		fi
		details+=("$(printf '%6s %4s %-8s sent=%-9s errors=%-6s lost=%-6s %s' \
			"$w" "$type" "$who" "$sent" "$errs" "$lost" "$note")")
	done
done

echo
printf '%6s %4s | %10s %10s %6s | %9s %9s | %9s %9s | %6s\n' \
	window type "moonlet" "libcoap" ratio "m p50us" "m p99us" "l p50us" "l p99us" "p99 r"
printf '%6s %4s | %10s %10s %6s | %9s %9s | %9s %9s | %6s\n' \
	"" "" "rps" "rps" "m/l" "" "" "" "" "m/l"
echo "------------+-------------------------------+---------------------+---------------------+-------"
printf '%s\n' "${rows[@]}"
echo
echo "errors / lost (lost = no response within 1000 ms; fatal only if errors > 0):"
printf '%s\n' "${details[@]}"

if [ -n "$LUA_PID" ]; then
	echo
	echo "Lua twin ($LUA_SCRIPT) against the C plugin, same run:"
	printf '%6s %4s | %10s %10s %6s | %9s %9s | %6s\n' window type "Lua rps" "C rps" "Lua/C" \
		"p50us" "p99us" lost
	echo "------------+-------------------------------+---------------------+-------"
	printf '%s\n' "${lua_rows[@]}"
fi

for pid_name in "$MOONLET_PID:moonlet" "$LIBCOAP_PID:coap-server-notls" "$LUA_PID:moonlet-lua"; do
	pid=${pid_name%%:*}
	[ -n "$pid" ] || continue
	if ! kill -0 "$pid" 2>/dev/null; then
		echo "run.sh: ${pid_name#*:} died during the benchmark" >&2
		FAILED=1
	fi
done

if [ "$FAILED" != 0 ]; then
	echo "run.sh: FAILED" >&2
	exit 1
fi
exit 0
