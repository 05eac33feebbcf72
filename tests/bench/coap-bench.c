/*
 * coap-bench -- closed-loop CoAP/UDP GET load generator for benchmarking.
 *
 * Standalone C11 (gnu11) program, libc + Linux only:
 *   gcc -O2 -Wall -Wextra -std=gnu11 -o build/coap-bench tests/bench/coap-bench.c
 *
 * It keeps a fixed window of W requests outstanding against one server,
 * spread over S connected UDP sockets, validates every response, and prints
 * exactly one machine-readable line on stdout:
 *
 *   rps=<float> p50_us=<float> p99_us=<float> sent=<n> ok=<n> errors=<n> lost=<n>
 *
 * plus a human-readable detail line on stderr.  See tests/bench/README.md.
 *
 * Wire format (RFC 7252, section 3): 4-byte header
 *   | Ver(2)=1 | T(2) | TKL(4) | Code(8) | Message ID(16) |
 * then TKL token bytes, then options (delta/length nibbles with 13/14
 * extensions), then optionally 0xFF and the payload.
 *
 * ---------------------------------------------------------------------------
 * Message IDs, tokens and the number of sockets
 * ---------------------------------------------------------------------------
 * A CoAP server deduplicates CON (and NON) messages by (peer endpoint, MID).
 * Every request we send is new, so we must never present the server with a
 * (socket, MID) pair that it still remembers from an earlier request,
 * otherwise it would (correctly) answer with a cached response or drop it.
 *
 *  - Each socket has its own 16-bit MID counter, starting at a random value
 *    and incremented for every request sent on that socket (RFC 7252 4.4).
 *    Requests that time out are never retransmitted: they are replaced by a
 *    new request with a new MID and a new token, so a MID is used once.
 *  - Every request carries a unique 8-byte token: a 48-bit global sequence
 *    number plus the 16-bit index of the window slot that sent it.  The
 *    token alone identifies the request, which lets NON responses (which
 *    carry the server's MID) be matched, and lets us tell a late/duplicate
 *    response ("stray": a token we did send, but no longer wait for) from a
 *    bogus one (a token we never sent: an error).
 *
 * MID wrap-around: strict RFC 7252 forbids reusing a MID towards the same
 * endpoint within EXCHANGE_LIFETIME (247 s), i.e. at most 65536/247 = ~265
 * requests/s per socket.  A benchmark at 300k req/s would need >1000
 * sockets to honour that, so we do not try.  What matters in practice is
 * how the server remembers MIDs:
 *  - moonlet keeps, per peer, a bounded ring of the most recent MIDs
 *    (64 entries by default).  A MID can only be mistaken for a duplicate
 *    if it reappears while its previous use is still in that ring, i.e.
 *    within 64 requests from the same socket.  With incrementing MIDs the
 *    reuse distance is 65536 requests, so wrapping is harmless: a socket
 *    doing 30k req/s wraps in ~2.2 s and that is fine.
 *  - libcoap 4.3.1 (coap-server-notls) only remembers the last CON MID of a
 *    session (and only consults it when it sends a separate response), so
 *    wrapping is harmless there too.
 *  - A server that keeps MIDs for the full EXCHANGE_LIFETIME would see
 *    duplicates after a wrap; the detail line on stderr reports how often
 *    the busiest socket wrapped ("mid_wraps") so such a result can be
 *    recognised (it shows up as errors/lost anyway, never as silent success).
 *
 * Per-socket window: at most MAX_PER_SOCKET (32) requests are outstanding on
 * one socket, i.e. at most half of moonlet's per-peer dedup ring.  All MIDs a
 * socket has in flight are therefore always among the last 32 MIDs the
 * server has seen from it, well inside the ring even with reordering, and no
 * server with a bounded per-peer table is pushed into its eviction/overflow
 * path by the benchmark.  It also keeps every socket looking like a
 * plausible (if very eager) single client instead of one endpoint flooding
 * hundreds of parallel exchanges.
 *
 * Default socket count: max(1, W/16), capped at 64, and raised if needed so
 * that ceil(W/S) <= 32 (hence W <= 64*32 = 2048).  W=1 -> 1 socket,
 * W=16 -> 1 socket, W=256 -> 16 sockets (16 outstanding each).  At 300k
 * req/s over 16 sockets a socket does ~19k req/s and wraps its MIDs every
 * ~3.5 s, which by the argument above is harmless.  More sockets would
 * shrink the sendmmsg/recvmmsg batches per socket and make the generator
 * itself slower, so we do not go higher by default.
 *
 * ---------------------------------------------------------------------------
 * Measurement
 * ---------------------------------------------------------------------------
 * The run has three phases: warm-up (-W s, not measured), measurement (-d s
 * or until -N measured requests were sent), and drain (no new requests;
 * wait for the outstanding ones, at most the timeout).  A request is
 * "measured" if it was sent during the measurement phase; sent/ok/lost and
 * the latency histogram only count measured requests, so
 * sent = ok + lost + (measured requests that got an invalid response).
 * "errors" counts every invalid datagram of the whole run, warm-up
 * included: any protocol error fails the run.
 *
 * rps = ok / measurement duration.  In a closed loop the W requests still
 * in flight at the start of the measurement (sent during warm-up, not
 * counted) balance the W requests in flight at its end (counted), so this is
 * the steady-state throughput.
 *
 * Latency = CLOCK_MONOTONIC at the return of the recvmmsg() that delivered
 * the response minus CLOCK_MONOTONIC just before the sendmmsg() that sent the
 * request (one timestamp per batch), kept in a log-linear histogram with
 * 64 sub-buckets per power of two (<= 1.6% relative error).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MAX_SOCKETS     64
#define MAX_PER_SOCKET  32
#define MAX_WINDOW      (MAX_SOCKETS * MAX_PER_SOCKET)
#define BATCH           64
#define RX_BUF          2048
#define MAX_MSG         1024
#define TOKEN_LEN       8
#define RECV_ROUNDS     4 /* max recvmmsg calls per ready socket per loop */

#define COAP_CON 0
#define COAP_NON 1
#define COAP_ACK 2
#define COAP_RST 3

#define NS_PER_S  1000000000ULL
#define NS_PER_MS 1000000ULL

/* ------------------------------------------------------------------------ */
/* configuration                                                            */

static struct {
	const char *host, *port, *path;
	unsigned window;
	unsigned sockets;     /* 0 = automatic */
	bool non;
	unsigned expect_code;
	const char *expect_payload; /* NULL = do not check */
	size_t expect_len;
	double duration, warmup;
	uint64_t max_requests; /* 0 = unlimited */
	unsigned timeout_ms;
	int cpu;               /* -1 = do not pin */
	bool busy;
	bool verbose;
} cfg = {
	.window = 1, .non = false, .expect_code = (2 << 5) | 5,
	.duration = 5.0, .warmup = 1.0, .timeout_ms = 1000, .cpu = -1,
};

/* ------------------------------------------------------------------------ */
/* state                                                                    */

struct slot {
	uint64_t seq;      /* sequence number of the outstanding request */
	uint64_t t_sent;   /* CLOCK_MONOTONIC ns */
	uint16_t mid;
	uint8_t sock;
	bool inflight;
	bool measured;
};

struct sock {
	int fd;
	uint16_t next_mid;
	uint64_t nsent;                /* requests sent on this socket */
	unsigned nslots;
	uint16_t slots[MAX_PER_SOCKET];
	unsigned npend;                /* slots waiting to be (re)sent */
	uint16_t pend[MAX_PER_SOCKET];
};

static struct slot *slots;
static struct sock socks[MAX_SOCKETS];
static unsigned nsocks;
static uint64_t next_seq = 1;
static unsigned inflight;
static bool sending = true;    /* false once the drain phase started */

/* request template: header, token, options; MID and token patched per send */
static uint8_t tmpl[MAX_MSG];
static size_t tmpl_len;

/* counters */
static struct {
	uint64_t sent, ok, lost;     /* measured requests */
	uint64_t warm_sent, warm_ok, warm_lost;
	uint64_t stray;
	uint64_t e_malformed, e_truncated, e_bogus_token, e_wrong_socket;
	uint64_t e_type, e_mid, e_code, e_payload, e_rst, e_empty_ack;
	uint64_t e_request, e_sock;
} st;

static uint64_t errors_total(void)
{
	return st.e_malformed + st.e_truncated + st.e_bogus_token +
	       st.e_wrong_socket + st.e_type + st.e_mid + st.e_code +
	       st.e_payload + st.e_rst + st.e_empty_ack + st.e_request +
	       st.e_sock;
}

/* ------------------------------------------------------------------------ */
/* latency histogram: values < 128 ns exact, then 64 sub-buckets per octave */

#define H_SUB_BITS 6
#define H_SUB      (1u << H_SUB_BITS)
#define H_BUCKETS  (2 * H_SUB + (63 - H_SUB_BITS) * H_SUB)

static uint64_t hist[H_BUCKETS];
static uint64_t h_count, h_min = UINT64_MAX, h_max;
static long double h_sum;

static unsigned h_bucket(uint64_t v)
{
	if (v < 2 * H_SUB)
		return (unsigned)v;
	unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= H_SUB_BITS+1 */
	unsigned sub = (unsigned)(v >> (e - H_SUB_BITS)) & (H_SUB - 1);
	return 2 * H_SUB + (e - H_SUB_BITS - 1) * H_SUB + sub;
}

/* representative value (middle) of a bucket, in ns */
static double h_value(unsigned b)
{
	if (b < 2 * H_SUB)
		return b;
	unsigned k = b - 2 * H_SUB;
	unsigned e = k / H_SUB + H_SUB_BITS + 1;
	unsigned sub = k % H_SUB;
	double width = (double)(1ULL << (e - H_SUB_BITS));
	return (double)(H_SUB + sub) * width + width / 2.0;
}

static void h_add(uint64_t v)
{
	hist[h_bucket(v)]++;
	h_count++;
	h_sum += v;
	if (v < h_min)
		h_min = v;
	if (v > h_max)
		h_max = v;
}

/* p in [0,1]; returns ns */
static double h_pct(double p)
{
	if (h_count == 0)
		return 0.0;
	uint64_t rank = (uint64_t)(p * (double)h_count + 0.999999);
	if (rank < 1)
		rank = 1;
	if (rank > h_count)
		rank = h_count;
	uint64_t cum = 0;
	for (unsigned b = 0; b < H_BUCKETS; b++) {
		cum += hist[b];
		if (cum >= rank) {
			double v = h_value(b);
			/* never report outside the observed range */
			if (v < (double)h_min)
				v = (double)h_min;
			if (v > (double)h_max)
				v = (double)h_max;
			return v;
		}
	}
	return (double)h_max;
}

/* ------------------------------------------------------------------------ */

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	(void)sig;
	interrupted = interrupted ? 2 : 1; /* second signal: stop draining */
}

static inline uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static void usage(FILE *f)
{
	fprintf(f,
"usage: coap-bench [options] HOST PORT PATH\n"
"\n"
"Closed-loop CoAP/UDP GET load generator.  HOST is an IPv6 or IPv4 literal\n"
"(e.g. ::1), PATH the Uri-Path, e.g. /hello (a '?a=b&c' suffix becomes\n"
"Uri-Query options).\n"
"\n"
"  -w N        requests kept outstanding (window), 1..%u (default 1)\n"
"  -s SOCKETS  client UDP sockets (default max(1,N/16), max %u; at most %u\n"
"              outstanding per socket)\n"
"  -n          send NON requests (default CON, expecting piggybacked ACKs)\n"
"  -c CODE     expected response code, e.g. 2.05 or 69 (default 2.05)\n"
"  -e STRING   expected response payload (default: not checked)\n"
"  -d SECONDS  measured duration (default 5)\n"
"  -W SECONDS  warm-up before measuring (default 1)\n"
"  -N COUNT    stop after COUNT measured requests (default: no limit)\n"
"  -t MS       response timeout; late requests count as lost and are\n"
"              replaced by new ones (default 1000)\n"
"  -C CPU      pin the generator to CPU (sched_setaffinity)\n"
"  -B          busy-poll (epoll timeout 0) instead of blocking\n"
"  -v          verbose: print the error breakdown even when zero\n"
"  -h          this help\n"
"\n"
"Output (stdout, one line):\n"
"  rps=<float> p50_us=<float> p99_us=<float> sent=<n> ok=<n> errors=<n> lost=<n>\n"
"Details go to stderr.  Exit: 0 ok, 1 errors>0 or failure, 2 lost>1%% of sent,\n"
"3 usage error.\n",
		MAX_WINDOW, MAX_SOCKETS, MAX_PER_SOCKET);
}

static void die_usage(const char *msg, const char *arg)
{
	fprintf(stderr, "coap-bench: %s%s%s\n", msg, arg ? ": " : "",
		arg ? arg : "");
	fprintf(stderr, "try 'coap-bench -h'\n");
	exit(3);
}

static uint64_t parse_uint(const char *s, uint64_t min, uint64_t max,
			   const char *what)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || v < min || v > max)
		die_usage(what, s);
	return v;
}

static double parse_secs(const char *s, double min, const char *what)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= min) || v > 86400.0)
		die_usage(what, s);
	return v;
}

/* "2.05" -> 69, "69" -> 69 */
static unsigned parse_code(const char *s)
{
	const char *dot = strchr(s, '.');
	if (dot) {
		char *end;
		unsigned long c = strtoul(s, &end, 10);
		if (end != dot || c > 7 || strlen(dot + 1) != 2 ||
		    dot[1] < '0' || dot[1] > '9' || dot[2] < '0' || dot[2] > '9')
			die_usage("bad response code", s);
		unsigned long d = (unsigned long)(dot[1] - '0') * 10 +
				  (unsigned long)(dot[2] - '0');
		if (d > 31)
			die_usage("bad response code", s);
		return (unsigned)(c << 5 | d);
	}
	return (unsigned)parse_uint(s, 0, 255, "bad response code");
}

/* ------------------------------------------------------------------------ */
/* request template                                                         */

static size_t put_option(uint8_t *p, size_t cap, unsigned *last,
			 unsigned num, const char *val, size_t len)
{
	unsigned delta = num - *last;
	uint8_t ext[4];
	size_t ne = 0;
	unsigned dn, ln;

	if (delta < 13) {
		dn = delta;
	} else if (delta < 269) {
		dn = 13;
		ext[ne++] = (uint8_t)(delta - 13);
	} else {
		dn = 14;
		ext[ne++] = (uint8_t)((delta - 269) >> 8);
		ext[ne++] = (uint8_t)(delta - 269);
	}
	if (len < 13) {
		ln = (unsigned)len;
	} else if (len < 269) {
		ln = 13;
		ext[ne++] = (uint8_t)(len - 13);
	} else {
		ln = 14;
		ext[ne++] = (uint8_t)((len - 269) >> 8);
		ext[ne++] = (uint8_t)(len - 269);
	}
	if (1 + ne + len > cap)
		die_usage("PATH too long", NULL);
	p[0] = (uint8_t)(dn << 4 | ln);
	memcpy(p + 1, ext, ne);
	memcpy(p + 1 + ne, val, len);
	*last = num;
	return 1 + ne + len;
}

static void build_template(void)
{
	uint8_t *p = tmpl;
	size_t cap = sizeof tmpl;
	unsigned last = 0;

	p[0] = (uint8_t)(1 << 6 | (cfg.non ? COAP_NON : COAP_CON) << 4 |
			 TOKEN_LEN);
	p[1] = 1; /* 0.01 GET */
	p[2] = p[3] = 0;
	memset(p + 4, 0, TOKEN_LEN);
	size_t n = 4 + TOKEN_LEN;

	const char *path = cfg.path;
	const char *q = strchr(path, '?');
	const char *pend = q ? q : path + strlen(path);

	/* Uri-Path (11): one option per non-empty segment */
	for (const char *s = path; s < pend;) {
		const char *e = memchr(s, '/', (size_t)(pend - s));
		if (!e)
			e = pend;
		size_t len = (size_t)(e - s);
		if (len > 255)
			die_usage("Uri-Path segment longer than 255 bytes", NULL);
		if (len)
			n += put_option(p + n, cap - n, &last, 11, s, len);
		s = e + 1;
	}
	/* Uri-Query (15): one option per '&'-separated argument */
	if (q) {
		for (const char *s = q + 1; *s;) {
			const char *e = strchr(s, '&');
			if (!e)
				e = s + strlen(s);
			size_t len = (size_t)(e - s);
			if (len > 255)
				die_usage("Uri-Query argument longer than 255 bytes",
					  NULL);
			if (len)
				n += put_option(p + n, cap - n, &last, 15, s, len);
			s = *e ? e + 1 : e;
		}
	}
	tmpl_len = n;
}

/* ------------------------------------------------------------------------ */
/* response parsing                                                         */

struct msg {
	unsigned type, tkl, code;
	uint16_t mid;
	const uint8_t *token;
	const uint8_t *payload;
	size_t plen;
};

/* Returns false if the datagram is not a well-formed CoAP message. */
static bool parse_msg(const uint8_t *p, size_t n, struct msg *m)
{
	if (n < 4 || (p[0] >> 6) != 1)
		return false;
	m->type = (p[0] >> 4) & 3;
	m->tkl = p[0] & 15;
	m->code = p[1];
	m->mid = (uint16_t)(p[2] << 8 | p[3]);
	if (m->tkl > 8 || n < 4 + m->tkl)
		return false;
	m->token = p + 4;
	m->payload = NULL;
	m->plen = 0;
	if (m->code == 0) /* empty message: header only */
		return n == 4 && m->tkl == 0;
	size_t i = 4 + m->tkl;
	while (i < n) {
		unsigned b = p[i++];
		if (b == 0xFF) {
			if (i == n) /* marker followed by empty payload */
				return false;
			m->payload = p + i;
			m->plen = n - i;
			return true;
		}
		unsigned d = b >> 4, l = b & 15;
		if (d == 15 || l == 15)
			return false;
		if (d == 13) {
			if (i + 1 > n)
				return false;
			i += 1;
		} else if (d == 14) {
			if (i + 2 > n)
				return false;
			i += 2;
		}
		size_t len = l;
		if (l == 13) {
			if (i + 1 > n)
				return false;
			len = 13u + p[i];
			i += 1;
		} else if (l == 14) {
			if (i + 2 > n)
				return false;
			len = 269u + ((size_t)p[i] << 8 | p[i + 1]);
			i += 2;
		}
		if (len > n - i)
			return false;
		i += len;
	}
	return true;
}

/* ------------------------------------------------------------------------ */
/* slot life cycle                                                          */

static void requeue(unsigned si)
{
	struct slot *s = &slots[si];
	if (!sending)
		return;
	struct sock *k = &socks[s->sock];
	k->pend[k->npend++] = (uint16_t)si;
}

/* a request got its (valid or invalid) answer */
static void finish(unsigned si, bool ok, uint64_t now)
{
	struct slot *s = &slots[si];
	s->inflight = false;
	inflight--;
	if (ok) {
		if (s->measured) {
			st.ok++;
			h_add(now - s->t_sent);
		} else {
			st.warm_ok++;
		}
	}
	requeue(si);
}

static void expire(unsigned si)
{
	struct slot *s = &slots[si];
	s->inflight = false;
	inflight--;
	if (s->measured)
		st.lost++;
	else
		st.warm_lost++;
	requeue(si);
}

static void check_timeouts(uint64_t now)
{
	uint64_t to = (uint64_t)cfg.timeout_ms * NS_PER_MS;
	for (unsigned i = 0; i < cfg.window; i++)
		if (slots[i].inflight && now - slots[i].t_sent >= to)
			expire(i);
}

static struct slot *find_by_mid(unsigned sk, uint16_t mid, unsigned *out)
{
	struct sock *k = &socks[sk];
	for (unsigned j = 0; j < k->nslots; j++) {
		unsigned si = k->slots[j];
		if (slots[si].inflight && slots[si].mid == mid) {
			*out = si;
			return &slots[si];
		}
	}
	return NULL;
}

static void handle_datagram(unsigned sk, const uint8_t *p, size_t n,
			    uint64_t now)
{
	struct msg m;
	unsigned si;
	struct slot *s;

	if (!parse_msg(p, n, &m)) {
		st.e_malformed++;
		return;
	}

	/* empty ACK or RST: matched by MID only */
	if (m.code == 0) {
		if (m.type == COAP_CON || m.type == COAP_NON) {
			/* CoAP ping or empty NON sent to a client: wrong */
			st.e_request++;
			return;
		}
		s = find_by_mid(sk, m.mid, &si);
		if (!s) {
			st.stray++;
			return;
		}
		if (m.type == COAP_RST)
			st.e_rst++;
		else
			st.e_empty_ack++; /* separate response: not expected */
		finish(si, false, now);
		return;
	}
	if (m.code < 64) { /* class 0 and not empty: a request */
		st.e_request++;
		return;
	}

	/* a response: matched by token */
	if (m.tkl != TOKEN_LEN) {
		st.e_bogus_token++;
		return;
	}
	uint64_t v = 0;
	for (unsigned i = 0; i < TOKEN_LEN; i++)
		v = v << 8 | m.token[i];
	si = (unsigned)(v & 0xFFFF);
	uint64_t seq = v >> 16;
	if (si >= cfg.window || seq == 0 || seq >= next_seq) {
		st.e_bogus_token++; /* never sent by us */
		return;
	}
	s = &slots[si];
	if (!s->inflight || s->seq != seq) {
		st.stray++; /* late (after timeout) or duplicated response */
		return;
	}
	if (s->sock != sk) {
		st.e_wrong_socket++;
		finish(si, false, now);
		return;
	}
	if (cfg.non) {
		if (m.type != COAP_NON) {
			st.e_type++;
			finish(si, false, now);
			return;
		}
	} else {
		if (m.type != COAP_ACK) {
			st.e_type++;
			finish(si, false, now);
			return;
		}
		if (m.mid != s->mid) {
			st.e_mid++;
			finish(si, false, now);
			return;
		}
	}
	if (m.code != cfg.expect_code) {
		st.e_code++;
		finish(si, false, now);
		return;
	}
	if (cfg.expect_payload &&
	    (m.plen != cfg.expect_len ||
	     (m.plen && memcmp(m.payload, cfg.expect_payload, m.plen) != 0))) {
		st.e_payload++;
		finish(si, false, now);
		return;
	}
	finish(si, true, now);
}

/* ------------------------------------------------------------------------ */
/* I/O                                                                      */

static uint8_t rxbuf[BATCH][RX_BUF];
static struct iovec rxiov[BATCH];
static struct mmsghdr rxmsg[BATCH];

static uint8_t txbuf[BATCH][MAX_MSG];
static struct iovec txiov[BATCH];
static struct mmsghdr txmsg[BATCH];

static void io_init(void)
{
	for (unsigned i = 0; i < BATCH; i++) {
		rxiov[i].iov_base = rxbuf[i];
		rxiov[i].iov_len = RX_BUF;
		rxmsg[i].msg_hdr.msg_iov = &rxiov[i];
		rxmsg[i].msg_hdr.msg_iovlen = 1;
		txiov[i].iov_base = txbuf[i];
		txmsg[i].msg_hdr.msg_iov = &txiov[i];
		txmsg[i].msg_hdr.msg_iovlen = 1;
	}
}

static void sock_error(int err)
{
	/* ECONNREFUSED etc.: queued ICMP errors on a connected socket */
	st.e_sock++;
	if (st.e_sock <= 3)
		fprintf(stderr, "coap-bench: socket error: %s\n", strerror(err));
}

/* receive everything currently queued on socket sk (bounded) */
static void do_recv(unsigned sk)
{
	int fd = socks[sk].fd;
	for (unsigned round = 0; round < RECV_ROUNDS; round++) {
		for (unsigned i = 0; i < BATCH; i++)
			rxmsg[i].msg_hdr.msg_flags = 0;
		int n = recvmmsg(fd, rxmsg, BATCH, MSG_DONTWAIT, NULL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			if (errno == EINTR)
				continue;
			sock_error(errno);
			continue;
		}
		uint64_t now = now_ns();
		for (int i = 0; i < n; i++) {
			if (rxmsg[i].msg_hdr.msg_flags & MSG_TRUNC) {
				st.e_truncated++;
				continue;
			}
			handle_datagram(sk, rxbuf[i], rxmsg[i].msg_len, now);
		}
		if (n < BATCH)
			return;
	}
}

/*
 * Send the pending requests of socket sk.  measured: whether requests sent
 * now belong to the measurement; budget: max number of requests to send.
 * Returns the number sent; *blocked set if the socket refused some.
 */
static unsigned do_send(unsigned sk, bool measured, uint64_t budget,
			bool *blocked)
{
	struct sock *k = &socks[sk];
	unsigned n = k->npend;
	if (n > BATCH)
		n = BATCH;
	if (n > budget)
		n = (unsigned)budget;
	if (n == 0)
		return 0;

	/* build messages from the top of the pending stack */
	uint16_t mid = k->next_mid;
	uint64_t seq = next_seq;
	for (unsigned i = 0; i < n; i++) {
		unsigned si = k->pend[k->npend - 1 - i];
		uint8_t *b = txbuf[i];
		memcpy(b, tmpl, tmpl_len);
		uint16_t m = (uint16_t)(mid + i);
		b[2] = (uint8_t)(m >> 8);
		b[3] = (uint8_t)m;
		uint64_t v = (seq + i) << 16 | si;
		for (int j = TOKEN_LEN - 1; j >= 0; j--) {
			b[4 + j] = (uint8_t)v;
			v >>= 8;
		}
		txiov[i].iov_len = tmpl_len;
	}
	/* MIDs and sequence numbers are consumed even if sending fails:
	 * uniqueness is all that matters */
	k->next_mid = (uint16_t)(mid + n);
	next_seq += n;

	uint64_t now = now_ns();
	int r = sendmmsg(k->fd, txmsg, n, MSG_DONTWAIT);
	if (r < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS ||
		    errno == EINTR)
			*blocked = true;
		else
			sock_error(errno);
		*blocked = true; /* retry soon rather than at the next tick */
		return 0;
	}
	if ((unsigned)r < n)
		*blocked = true;
	for (int i = 0; i < r; i++) {
		unsigned si = k->pend[--k->npend];
		struct slot *s = &slots[si];
		s->seq = seq + (unsigned)i;
		s->mid = (uint16_t)(mid + (unsigned)i);
		s->t_sent = now;
		s->inflight = true;
		s->measured = measured;
		inflight++;
	}
	k->nsent += (unsigned)r;
	if (measured)
		st.sent += (unsigned)r;
	else
		st.warm_sent += (unsigned)r;
	return (unsigned)r;
}

static int open_sockets(void)
{
	struct addrinfo hints = {
		.ai_family = AF_UNSPEC,
		.ai_socktype = SOCK_DGRAM,
		.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV,
	}, *ai;
	int rc = getaddrinfo(cfg.host, cfg.port, &hints, &ai);
	if (rc) {
		fprintf(stderr, "coap-bench: %s %s: %s\n", cfg.host, cfg.port,
			gai_strerror(rc));
		return -1;
	}
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0) {
		perror("coap-bench: epoll_create1");
		freeaddrinfo(ai);
		return -1;
	}
	uint16_t rnd[MAX_SOCKETS];
	if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
		uint64_t t = now_ns();
		for (unsigned i = 0; i < MAX_SOCKETS; i++)
			rnd[i] = (uint16_t)(t >> (i % 48)) ^ (uint16_t)(i * 40503u);
	}
	for (unsigned i = 0; i < nsocks; i++) {
		int fd = socket(ai->ai_family,
				SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			perror("coap-bench: socket");
			goto fail;
		}
		int sz = 1 << 20;
		(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
		(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
			perror("coap-bench: connect");
			close(fd);
			goto fail;
		}
		struct epoll_event ev = { .events = EPOLLIN, .data.u32 = i };
		if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
			perror("coap-bench: epoll_ctl");
			close(fd);
			goto fail;
		}
		socks[i].fd = fd;
		socks[i].next_mid = rnd[i];
	}
	freeaddrinfo(ai);
	return ep;
fail:
	freeaddrinfo(ai);
	close(ep);
	return -1;
}

/* ------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
	int opt;
	bool sockets_set = false;

	while ((opt = getopt(argc, argv, "w:s:nc:e:d:W:N:t:C:Bvh")) != -1) {
		switch (opt) {
		case 'w':
			cfg.window = (unsigned)parse_uint(optarg, 1, MAX_WINDOW,
							  "bad window (-w)");
			break;
		case 's':
			cfg.sockets = (unsigned)parse_uint(optarg, 1, MAX_SOCKETS,
							   "bad socket count (-s)");
			sockets_set = true;
			break;
		case 'n':
			cfg.non = true;
			break;
		case 'c':
			cfg.expect_code = parse_code(optarg);
			break;
		case 'e':
			cfg.expect_payload = optarg;
			cfg.expect_len = strlen(optarg);
			break;
		case 'd':
			cfg.duration = parse_secs(optarg, 0.001, "bad duration (-d)");
			break;
		case 'W':
			cfg.warmup = parse_secs(optarg, 0.0, "bad warm-up (-W)");
			break;
		case 'N':
			cfg.max_requests = parse_uint(optarg, 1, UINT64_MAX,
						      "bad request count (-N)");
			break;
		case 't':
			cfg.timeout_ms = (unsigned)parse_uint(optarg, 1, 600000,
							      "bad timeout (-t)");
			break;
		case 'C':
			cfg.cpu = (int)parse_uint(optarg, 0, CPU_SETSIZE - 1,
						  "bad CPU (-C)");
			break;
		case 'B':
			cfg.busy = true;
			break;
		case 'v':
			cfg.verbose = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 3;
		}
	}
	if (argc - optind != 3)
		die_usage("expected HOST PORT PATH", NULL);
	cfg.host = argv[optind];
	cfg.port = argv[optind + 1];
	cfg.path = argv[optind + 2];
	(void)parse_uint(cfg.port, 1, 65535, "bad port");

	/* socket count, see the comment at the top of the file */
	if (!sockets_set) {
		unsigned s = cfg.window / 16;
		if (s < 1)
			s = 1;
		if (s > MAX_SOCKETS)
			s = MAX_SOCKETS;
		while ((cfg.window + s - 1) / s > MAX_PER_SOCKET)
			s++;
		cfg.sockets = s;
	}
	if (cfg.sockets > cfg.window)
		cfg.sockets = cfg.window;
	if ((cfg.window + cfg.sockets - 1) / cfg.sockets > MAX_PER_SOCKET) {
		fprintf(stderr,
			"coap-bench: %u outstanding over %u sockets exceeds %u per "
			"socket (server dedup window); use more sockets\n",
			cfg.window, cfg.sockets, MAX_PER_SOCKET);
		return 3;
	}
	nsocks = cfg.sockets;

	if (cfg.cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(cfg.cpu, &set);
		if (sched_setaffinity(0, sizeof set, &set) < 0) {
			perror("coap-bench: sched_setaffinity");
			return 1;
		}
	}

	build_template();
	io_init();

	slots = calloc(cfg.window, sizeof *slots);
	if (!slots) {
		perror("coap-bench: calloc");
		return 1;
	}
	for (unsigned i = 0; i < cfg.window; i++) {
		unsigned sk = i % nsocks;
		slots[i].sock = (uint8_t)sk;
		socks[sk].slots[socks[sk].nslots++] = (uint16_t)i;
	}
	/* initially every slot waits to be sent; push in reverse so the
	 * lowest-numbered slot goes first */
	for (unsigned sk = 0; sk < nsocks; sk++)
		for (unsigned j = socks[sk].nslots; j-- > 0;)
			socks[sk].pend[socks[sk].npend++] = socks[sk].slots[j];

	int ep = open_sockets();
	if (ep < 0)
		return 1;

	struct sigaction sa = { .sa_handler = on_signal };
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	const uint64_t timeout_ns = (uint64_t)cfg.timeout_ms * NS_PER_MS;
	uint64_t tcheck_every = timeout_ns / 8;
	if (tcheck_every < NS_PER_MS)
		tcheck_every = NS_PER_MS;
	if (tcheck_every > 100 * NS_PER_MS)
		tcheck_every = 100 * NS_PER_MS;

	const uint64_t t_start = now_ns();
	const uint64_t t0 = t_start + (uint64_t)(cfg.warmup * 1e9);
	const uint64_t t1 = t0 + (uint64_t)(cfg.duration * 1e9);
	/* absolute safety net: nothing runs past this, whatever happens */
	const uint64_t t_hard = t1 + timeout_ns + tcheck_every + NS_PER_S;
	uint64_t t_stop = 0, drain_deadline = 0, last_done = 0;
	uint64_t next_tcheck = t_start + tcheck_every;
	bool stopped_by_count = false;
	struct epoll_event evs[MAX_SOCKETS];

	for (;;) {
		uint64_t now = now_ns();

		/* phase changes */
		if (sending) {
			bool cap = cfg.max_requests && st.sent >= cfg.max_requests;
			if (now >= t1 || cap || interrupted || now >= t_hard) {
				sending = false;
				stopped_by_count = cap && now < t1;
				t_stop = now < t1 ? now : t1;
				if (t_stop < t0)
					t_stop = t0;
				drain_deadline = now + timeout_ns + tcheck_every;
				for (unsigned sk = 0; sk < nsocks; sk++)
					socks[sk].npend = 0;
			}
		}
		if (!sending) {
			if (inflight == 0)
				break;
			if (now >= drain_deadline || now >= t_hard ||
			    interrupted > 1) {
				/* whatever is still out is lost */
				for (unsigned i = 0; i < cfg.window; i++)
					if (slots[i].inflight)
						expire(i);
				break;
			}
		}
		if (now >= next_tcheck) {
			check_timeouts(now);
			next_tcheck = now + tcheck_every;
		}

		/* send whatever is pending (start-up, replaced lost requests,
		 * earlier EAGAIN) */
		bool blocked = false;
		bool measured = now >= t0;
		uint64_t budget = UINT64_MAX;
		if (measured && cfg.max_requests)
			budget = cfg.max_requests - st.sent;
		if (sending) {
			for (unsigned sk = 0; sk < nsocks && budget; sk++) {
				if (!socks[sk].npend)
					continue;
				budget -= do_send(sk, measured, budget, &blocked);
			}
		}

		/* wait */
		int wait_ms;
		if (cfg.busy || blocked) {
			wait_ms = blocked ? 1 : 0;
		} else {
			uint64_t dl = next_tcheck;
			if (sending) {
				uint64_t ph = now < t0 ? t0 : t1;
				if (ph < dl)
					dl = ph;
			} else if (drain_deadline < dl) {
				dl = drain_deadline;
			}
			uint64_t left = dl > now ? dl - now : 0;
			wait_ms = (int)((left + NS_PER_MS - 1) / NS_PER_MS);
		}
		int n = epoll_wait(ep, evs, MAX_SOCKETS, wait_ms);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			perror("coap-bench: epoll_wait");
			return 1;
		}
		for (int i = 0; i < n; i++) {
			unsigned sk = evs[i].data.u32;
			if (evs[i].events & (EPOLLIN | EPOLLERR))
				do_recv(sk);
			/* refill this socket's window right away: keeps the
			 * generator's own turnaround out of the server's way */
			if (sending && budget && socks[sk].npend)
				budget -= do_send(sk, measured, budget, &blocked);
		}
		if (n > 0 && !sending)
			last_done = now_ns();
	}

	/* ------------------------------------------------------------------ */
	/* report                                                             */

	double secs;
	if (stopped_by_count) {
		/* -N: measure until the last measured request was answered */
		uint64_t end = last_done > t_stop ? last_done : t_stop;
		secs = (double)(end - t0) / 1e9;
	} else {
		secs = (double)(t_stop - t0) / 1e9;
	}
	double rps = secs > 0 ? (double)st.ok / secs : 0.0;
	uint64_t errors = errors_total();

	printf("rps=%.1f p50_us=%.1f p99_us=%.1f sent=%" PRIu64 " ok=%" PRIu64
	       " errors=%" PRIu64 " lost=%" PRIu64 "\n",
	       rps, h_pct(0.50) / 1e3, h_pct(0.99) / 1e3, st.sent, st.ok, errors,
	       st.lost);
	fflush(stdout);

	uint64_t maxsent = 0;
	for (unsigned sk = 0; sk < nsocks; sk++)
		if (socks[sk].nsent > maxsent)
			maxsent = socks[sk].nsent;
	fprintf(stderr,
		"coap-bench: %s window=%u sockets=%u measured=%.3fs "
		"p90_us=%.1f p999_us=%.1f min_us=%.1f mean_us=%.1f max_us=%.1f "
		"stray=%" PRIu64 " warmup_sent=%" PRIu64 " warmup_ok=%" PRIu64
		" warmup_lost=%" PRIu64 " mid_wraps=%" PRIu64 "\n",
		cfg.non ? "NON" : "CON", cfg.window, nsocks, secs,
		h_pct(0.90) / 1e3, h_pct(0.999) / 1e3,
		h_count ? (double)h_min / 1e3 : 0.0,
		h_count ? (double)(h_sum / h_count) / 1e3 : 0.0,
		(double)h_max / 1e3, st.stray, st.warm_sent, st.warm_ok,
		st.warm_lost, maxsent / 65536);
	if (errors || cfg.verbose)
		fprintf(stderr,
			"coap-bench: errors: malformed=%" PRIu64 " truncated=%" PRIu64
			" bogus_token=%" PRIu64 " wrong_socket=%" PRIu64
			" wrong_type=%" PRIu64 " wrong_mid=%" PRIu64
			" wrong_code=%" PRIu64 " wrong_payload=%" PRIu64
			" rst=%" PRIu64 " empty_ack=%" PRIu64 " request=%" PRIu64
			" socket=%" PRIu64 "\n",
			st.e_malformed, st.e_truncated, st.e_bogus_token,
			st.e_wrong_socket, st.e_type, st.e_mid, st.e_code,
			st.e_payload, st.e_rst, st.e_empty_ack, st.e_request,
			st.e_sock);

	for (unsigned sk = 0; sk < nsocks; sk++)
		close(socks[sk].fd);
	close(ep);
	free(slots);

	if (errors)
		return 1;
	if (st.sent == 0 || st.lost * 100 > st.sent)
		return 2;
	return 0;
}
