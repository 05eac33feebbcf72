/*
 * dtls-bench -- load generator for CoAP over DTLS 1.2 (RFC 7252 §9, RFC 6347): GnuTLS PSK
 * clients measuring full and resumed (RFC 5077 ticket) handshakes, GETs over established
 * sessions, and what idle sessions cost the server.
 *
 *   dtls-bench [options] hs    handshakes, -c PARALLEL at a time (-R resumed, -g one GET each)
 *   dtls-bench [options] req   GETs over -n SESSIONS, -w WINDOW outstanding over all of them
 *   dtls-bench [options] idle  GETs over one live session (-w WINDOW), then -n N idle sessions
 *                              opened (-c at a time, at most -r per second), then GETs again
 *
 *   -p PORT      server port (required)      -a ADDR     server address (127.0.0.1)
 *   -i IDENTITY  PSK identity (bench)        -k KEY      PSK key (benchkey)
 *   -P PRIORITY  GnuTLS priority string (PSK with AES-128-CCM-8 only)
 *   -u PATH      resource to GET (hello)     -e TEXT     its expected payload (Hello, world)
 *   -d SECONDS   each measured run (3)       -W SECONDS  warm-up before them (0.5)
 *   -N ROUNDS    measured runs, the fastest reported (1)
 *   -s PID       the server's: CPU per operation (and RSS in idle mode) from /proc/PID
 *   -c N (1)  -n N (hs: -, req: 1, idle: 10000)  -w N (1)  -r N (idle: 2000)  -R  -g
 *
 * Each handshake is a new UDP socket, from an address of its own in 127.128.0.0/9, and a
 * new session, cookie exchange included. hs ends each with close_notify (the server frees
 * it); idle mode just drops them after one GET (the server keeps them until its idle
 * timeout). GETs are CON and must come back as piggybacked ACK 2.05 with the token and
 * payload expected.
 * Prints one line of NAME=VALUE on stdout: rate (per second), server_us and client_us (CPU
 * per operation), p50_ms, p99_ms and max_ms (hs: time per handshake and GET), suite (the
 * cipher suite negotiated), errors (invalid answers), lost (no answer within LOST_AFTER),
 * late (answers after that), failed (handshakes), dead (sessions that ended under load);
 * idle mode prefixes none_ and idle_ to its two runs' fields and adds the RSS ones. Exit
 * status 0; 1 with errors, failed handshakes or a session lost on the way; 2 for bad usage
 * or setup.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <gnutls/dtls.h>
#include <gnutls/gnutls.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "proc.h"

#define PRIORITY "NONE:+VERS-DTLS1.2:+PSK:+AES-128-CCM-8:+AEAD:+COMP-NULL:+SIGN-ALL:+CURVE-ALL"
#define REQ_SLOTS 1024      /* GETs in flight per session, by MID: more than any window */
#define LOST_AFTER 1.0      /* s without an answer: lost (CoAP would retransmit at 2-3 s) */
#define HS_RETRANSMIT 1000  /* ms, RFC 6347 §4.2.4.1's initial timer */
#define HS_TOTAL 10000      /* ms before a handshake gives up */
#define SRC_NET 0x7F800000u /* 127.128.0.0/9: the sessions' source addresses */
#define SRC_SIZE 0x800000u
#define OPEN_LIMIT 60.0 /* s to open the idle sessions, at most */
#define SETTLE 0.5      /* s for the server to finish the last ones before RSS is read */
#define COMPLAINTS 10   /* problems described on stderr, then only counted */
#define MAX_FDS 1024    /* -c and req's -n */

enum { HANDSHAKE, GET, OPEN, DEAD };

struct req {
    double sent;
    uint32_t token;
    uint16_t mid;
    uint8_t busy;
};

struct conn {
    int fd, state;
    gnutls_session_t tls;
    double born; /* when its handshake began */
    double wake; /* HANDSHAKE: call gnutls_handshake again; GET: the answer is lost */
    uint16_t mid;
    unsigned inflight;
    unsigned long pulled;       /* datagrams GnuTLS has read */
    int kick;                   /* pull_timeout: say there is data (see handshake_step) */
    struct req reqs[REQ_SLOTS]; /* by MID */
};

/* handshakes in up to `parallel` slots: how many, how fast, what then */
struct pool {
    unsigned parallel;
    unsigned long total; /* to start, 0: as many as time allows */
    double rate;         /* started per second, 0: no limit */
    int get;             /* one GET once it is up */
    int keep;            /* then keep it in kept[] (else close it) */
    int bye;             /* close with close_notify (else just drop it) */
    struct conn **slot, **kept;
    unsigned nkept;
    unsigned long started;
    double begin;
};

/* what the runs saw; reset before the measured ones */
struct tally {
    unsigned long done, handshakes, resumed, failed, ok, errors, lost, late, dead;
};
static struct tally tally;

/* how long each handshake (and its GET) took, s: since the last tally reset */
static struct {
    double *v;
    size_t n, cap;
} took;

static struct {
    const char *addr, *ident, *key, *prio, *path, *payload, *pid;
    unsigned port, parallel, window, rounds;
    unsigned long n;
    double secs, warmup, rate;
    int resume, get;
} opt = {.addr = "127.0.0.1",
         .ident = "bench",
         .key = "benchkey",
         .prio = PRIORITY,
         .path = "hello",
         .payload = "Hello, world",
         .parallel = 1,
         .window = 1,
         .rounds = 1,
         .secs = 3,
         .warmup = 0.5,
         .rate = 2000};

static gnutls_psk_client_credentials_t psk;
static gnutls_priority_t prio;
static struct sockaddr_in server;
static gnutls_datum_t ticket; /* session data of the first handshake, for -R */
static char suite[64] = "-";  /* the first handshake's cipher suite */
static uint8_t uri[300];      /* the GET's Uri-Path options */
static size_t urilen;
static unsigned outstanding; /* GETs in flight over all sessions */
static uint32_t next_token;
static unsigned complaints;
static uint32_t src_next; /* where in SRC_NET the next session comes from */

_Noreturn static void
die(const char *what)
{
    fprintf(stderr, "dtls-bench: %s: %s\n", what, strerror(errno));
    exit(2);
}

/* Describe a problem on stderr, the first COMPLAINTS of them: the counts say the rest. */
static void
complain(const char *fmt, ...)
{
    va_list ap;

    if (complaints++ >= COMPLAINTS)
        return;
    va_start(ap, fmt);
    fputs("dtls-bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ---- transport: our own, so that nothing blocks and a flight is one datagram */

/* A full socket buffer loses the datagram, as a network would: DTLS retransmits a
 * handshake flight, and a GET without an answer is counted lost. */
static ssize_t
sent(ssize_t r, size_t len)
{
    return r < 0 && (errno == EAGAIN || errno == ENOBUFS) ? (ssize_t)len : r;
}

static ssize_t
push(gnutls_transport_ptr_t p, const void *buf, size_t len)
{
    return sent(send(((struct conn *)p)->fd, buf, len, 0), len);
}

/* all the records GnuTLS has queued -- a whole handshake flight -- in one datagram */
static ssize_t
vec_push(gnutls_transport_ptr_t p, const giovec_t *iov, int iovcnt)
{
    struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
    size_t len = 0;
    int i;

    for (i = 0; i < iovcnt; i++)
        len += iov[i].iov_len;
    return sent(sendmsg(((struct conn *)p)->fd, &m, 0), len);
}

static ssize_t
pull(gnutls_transport_ptr_t p, void *buf, size_t len)
{
    struct conn *c = p;
    ssize_t r = recv(c->fd, buf, len, 0);

    c->pulled += r >= 0;
    return r;
}

/* never waits: the event loops poll (a blocking DTLS client sleeps 50 ms per flight) */
static int
pull_timeout(gnutls_transport_ptr_t p, unsigned ms)
{
    struct conn *c = p;
    struct pollfd pf = {c->fd, POLLIN, 0};

    (void)ms;
    if (c->kick) {
        c->kick = 0;
        return 1;
    }
    return poll(&pf, 1, 0);
}

/* ---- sessions */

/* Each session from an address of its own, as devices would be, and so never from an
 * address and port the server still holds a session for (an idle one, or one given up half
 * way): libcoap 4.3.1 takes a ClientHello from there for a record of that session, which
 * does not decrypt, and never answers it. */
static uint32_t
src_address(void)
{
    return SRC_NET + src_next++ % SRC_SIZE;
}

/* A new client session on a new socket. */
static struct conn *
conn_new(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(src_address())};
    struct conn *c = calloc(1, sizeof *c);

    if (c == NULL)
        die("calloc");
    if ((c->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0)
        die("socket");
    if (bind(c->fd, (struct sockaddr *)&a, sizeof a) < 0)
        die("bind");
    if (connect(c->fd, (struct sockaddr *)&server, sizeof server) < 0)
        die("connect");
    if (gnutls_init(&c->tls, GNUTLS_CLIENT | GNUTLS_DATAGRAM | GNUTLS_NONBLOCK) < 0)
        die("gnutls_init");
    gnutls_priority_set(c->tls, prio);
    gnutls_credentials_set(c->tls, GNUTLS_CRD_PSK, psk);
    gnutls_transport_set_ptr(c->tls, c);
    gnutls_transport_set_push_function(c->tls, push);
    gnutls_transport_set_vec_push_function(c->tls, vec_push);
    gnutls_transport_set_pull_function(c->tls, pull);
    gnutls_transport_set_pull_timeout_function(c->tls, pull_timeout);
    gnutls_dtls_set_timeouts(c->tls, HS_RETRANSMIT, HS_TOTAL);
    if (ticket.data)
        gnutls_session_set_data(c->tls, ticket.data, ticket.size);
    c->state = HANDSHAKE;
    c->born = now();
    return c;
}

/* Forget c's GETs in flight (the answers that still come are late), then c itself. */
static void
conn_free(struct conn *c, int bye)
{
    unsigned i;

    for (i = 0; i < REQ_SLOTS && c->inflight; i++)
        if (c->reqs[i].busy) {
            c->reqs[i].busy = 0;
            c->inflight--;
            outstanding--;
        }
    if (bye)
        gnutls_bye(c->tls, GNUTLS_SHUT_WR);
    gnutls_deinit(c->tls);
    close(c->fd);
    free(c);
}

/* 1 when c's handshake is complete, 0 while it goes on (c->wake: when to go on), -1.
 * GnuTLS 3.7.9 may read a datagram and return E_AGAIN with it unread in its buffers (seen
 * when libcoap's Finished comes in a datagram after its ChangeCipherSpec); a call that
 * follows asks pull_timeout first and, with the socket empty, would wait for the
 * retransmission timer. So after a call that read something, call again with
 * pull_timeout saying there is data: GnuTLS then looks at its buffers. */
static int
handshake_step(struct conn *c)
{
    unsigned long pulled;
    int r;

    do {
        pulled = c->pulled;
        r = gnutls_handshake(c->tls);
        c->kick = c->pulled != pulled;
    } while (r == GNUTLS_E_AGAIN && c->kick);
    c->kick = 0;
    if (r == GNUTLS_E_SUCCESS)
        return 1;
    if (gnutls_error_is_fatal(r)) {
        complain("handshake failed: %s", gnutls_strerror(r));
        return -1;
    }
    c->wake = now() + gnutls_dtls_get_timeout(c->tls) / 1e3;
    return 0;
}

static void
handshake_note(struct conn *c)
{
    const char *name;

    tally.handshakes++;
    tally.resumed += gnutls_session_is_resumed(c->tls) != 0;
    if (suite[0] == '-' &&
        (name = gnutls_cipher_suite_get_name(gnutls_kx_get(c->tls), gnutls_cipher_get(c->tls),
                                             gnutls_mac_get(c->tls))) != NULL)
        snprintf(suite, sizeof suite, "TLS_%s", name);
    if (opt.resume && ticket.data == NULL)
        gnutls_session_get_data2(c->tls, &ticket);
}

/* ---- CoAP GET (RFC 7252 §3) */

/* opt.path as Uri-Path options (§5.10.1), one per segment */
static void
uri_encode(const char *path)
{
    unsigned delta = 11;

    while (*path) {
        size_t l = strcspn(path, "/");

        if (l >= 269 || urilen + 2 + l > sizeof uri) {
            fprintf(stderr, "dtls-bench: path too long\n");
            exit(2);
        }
        if (l) {
            uri[urilen++] = (uint8_t)(delta << 4 | (l < 13 ? l : 13));
            if (l >= 13)
                uri[urilen++] = (uint8_t)(l - 13);
            memcpy(uri + urilen, path, l);
            urilen += l;
            delta = 0;
        }
        path += l + (path[l] == '/');
    }
}

/* CON GET with a 4-byte token, in the slot of its MID (a slot still busy: that one's lost) */
static void
get_send(struct conn *c)
{
    uint8_t msg[8 + sizeof uri] = {0x44, 0x01, (uint8_t)(c->mid >> 8), (uint8_t)c->mid};
    struct req *q = &c->reqs[c->mid % REQ_SLOTS];
    ssize_t r;

    if (q->busy) {
        tally.lost++;
        c->inflight--;
        outstanding--;
    }
    *q = (struct req){now(), next_token++, c->mid++, 1};
    memcpy(msg + 4, &q->token, 4);
    memcpy(msg + 8, uri, urilen);
    c->inflight++;
    outstanding++;
    if ((r = gnutls_record_send(c->tls, msg, 8 + urilen)) < 0)
        complain("send: %s", gnutls_strerror((int)r)); /* the GET will count as lost */
}

/* The offset of the payload marker after the options from b[i], n without a payload, 0
 * when an option runs past the end (§3.1). */
static size_t
payload_at(const uint8_t *b, size_t n, size_t i)
{
    while (i < n && b[i] != 0xFF) {
        unsigned d = b[i] >> 4;
        size_t l = b[i] & 15u;

        if (d == 15 || l == 15)
            return 0;
        i += 1 + (d == 13) + 2 * (d == 14);
        if (l >= 13 && i + (l - 12) > n)
            return 0;
        if (l == 13)
            l = 13 + b[i++];
        else if (l == 14) {
            l = 269 + (size_t)(b[i] << 8 | b[i + 1]);
            i += 2;
        }
        i += l;
    }
    return i > n ? 0 : i;
}

/* §5.2.1: the answer is piggybacked -- an ACK with the request's MID -- 2.05, its token,
 * the payload expected */
static int
answer_ok(const uint8_t *b, size_t n, const struct req *q)
{
    size_t plen = strlen(opt.payload), i;

    if (b[0] != 0x64 || b[1] != 0x45 || n < 8 || memcmp(b + 4, &q->token, 4) != 0) {
        complain("invalid answer: type %d code %d.%02d tkl %d", b[0] >> 4 & 3, b[1] >> 5, b[1] & 31,
                 b[0] & 15);
        return 0;
    }
    i = payload_at(b, n, 8);
    if (i == 0 || i == n || n - i - 1 != plen || memcmp(b + i + 1, opt.payload, plen) != 0) {
        complain("invalid answer: payload '%.*s'", i && i < n ? (int)(n - i - 1) : 0,
                 (const char *)b + i + 1);
        return 0;
    }
    return 1;
}

static void
answer(struct conn *c, const uint8_t *b, size_t n)
{
    uint16_t mid;
    struct req *q;

    if (n < 4) {
        tally.errors++;
        complain("a %zu-byte record", n);
        return;
    }
    mid = (uint16_t)(b[2] << 8 | b[3]);
    q = &c->reqs[mid % REQ_SLOTS];
    if (!q->busy || q->mid != mid) {
        tally.late++;
        return;
    }
    q->busy = 0;
    c->inflight--;
    outstanding--;
    if (answer_ok(b, n, q))
        tally.ok++;
    else
        tally.errors++;
}

/* Every record that has come for c (one CoAP message each); -1 when the session is over. */
static int
conn_input(struct conn *c)
{
    uint8_t buf[2048];
    ssize_t r;

    while ((r = gnutls_record_recv(c->tls, buf, sizeof buf)) != GNUTLS_E_AGAIN) {
        if (r > 0)
            answer(c, buf, (size_t)r);
        else if (r == 0 || gnutls_error_is_fatal((int)r)) {
            complain("session closed: %s", r ? gnutls_strerror((int)r) : "close_notify");
            return -1;
        }
    }
    return 0;
}

/* GETs in flight for LOST_AFTER: lost */
static void
expire(struct conn *c, double t)
{
    unsigned i;

    for (i = 0; i < REQ_SLOTS && c->inflight; i++)
        if (c->reqs[i].busy && t - c->reqs[i].sent >= LOST_AFTER) {
            c->reqs[i].busy = 0;
            c->inflight--;
            outstanding--;
            tally.lost++;
        }
}

/* ---- handshakes in parallel */

static void
took_add(double s)
{
    if (took.n == took.cap) {
        took.cap = took.cap ? 2 * took.cap : 4096;
        if ((took.v = realloc(took.v, took.cap * sizeof *took.v)) == NULL)
            die("realloc");
    }
    took.v[took.n++] = s;
}

static int
by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* " p50_ms=.. p99_ms=.. max_ms=..": a slow handshake is one that lost a flight */
static void
print_took(void)
{
    if (took.n == 0) {
        printf(" p50_ms=- p99_ms=- max_ms=-");
        return;
    }
    qsort(took.v, took.n, sizeof *took.v, by_value);
    printf(" p50_ms=%.2f p99_ms=%.2f max_ms=%.1f", took.v[took.n / 2] * 1e3,
           took.v[took.n * 99 / 100] * 1e3, took.v[took.n - 1] * 1e3);
}

/* c's handshake (and GET) are over: keep it or close it */
static void
pool_done(struct pool *p, unsigned i)
{
    struct conn *c = p->slot[i];

    tally.done++;
    took_add(now() - c->born);
    p->slot[i] = NULL;
    if (p->keep) {
        c->state = OPEN;
        p->kept[p->nkept++] = c;
    } else {
        conn_free(c, p->bye);
    }
}

static void
pool_fail(struct pool *p, unsigned i)
{
    tally.failed++;
    conn_free(p->slot[i], 0);
    p->slot[i] = NULL;
}

static void
pool_up(struct pool *p, unsigned i)
{
    struct conn *c = p->slot[i];

    handshake_note(c);
    if (!p->get) {
        pool_done(p, i);
        return;
    }
    get_send(c);
    c->state = GET;
    c->wake = now() + LOST_AFTER;
}

/* Move slot i on: after a datagram came or its time is up. */
static void
pool_step(struct pool *p, unsigned i, double t)
{
    struct conn *c = p->slot[i];
    int r;

    if (c->state == HANDSHAKE) {
        if ((r = handshake_step(c)) < 0)
            pool_fail(p, i);
        else if (r > 0)
            pool_up(p, i);
    } else if (conn_input(c) < 0) {
        pool_fail(p, i);
    } else if (c->inflight == 0 || t >= c->wake) {
        expire(c, t + LOST_AFTER);
        pool_done(p, i);
    }
}

/* Start what the plan allows in free slots; the number of slots busy. */
static unsigned
pool_fill(struct pool *p, double t)
{
    unsigned i, busy = 0;

    for (i = 0; i < p->parallel; i++) {
        if (p->slot[i] == NULL && (!p->total || p->started < p->total) &&
            (p->rate <= 0 || p->started < p->rate * (t - p->begin) + 1)) {
            p->slot[i] = conn_new();
            p->started++;
            p->slot[i]->wake = t; /* the ClientHello goes out at the first step */
        }
        busy += p->slot[i] != NULL;
    }
    return busy;
}

/* Until `until`, or until the plan's total handshakes are over. */
static void
pool_run(struct pool *p, double until)
{
    struct pollfd pf[MAX_FDS];
    double t;
    unsigned i;

    while ((t = now()) < until) {
        double wait = until - t > 0.005 ? 0.005 : until - t;

        if (pool_fill(p, t) == 0 && p->total && p->started >= p->total)
            break;

        for (i = 0; i < p->parallel; i++) {
            pf[i] = (struct pollfd){p->slot[i] ? p->slot[i]->fd : -1, POLLIN, 0};
            if (p->slot[i] && p->slot[i]->wake - t < wait)
                wait = p->slot[i]->wake - t;
        }
        poll(pf, p->parallel, wait > 0 ? (int)(wait * 1e3 + 0.999) : 0);
        t = now();
        for (i = 0; i < p->parallel; i++)
            if (p->slot[i] && (pf[i].revents || t >= p->slot[i]->wake))
                pool_step(p, i, t);
    }
}

/* the handshakes (and GETs) still under way: given up */
static void
pool_stop(struct pool *p)
{
    unsigned i;

    for (i = 0; i < p->parallel; i++)
        if (p->slot[i]) {
            conn_free(p->slot[i], p->bye && p->slot[i]->state != HANDSHAKE);
            p->slot[i] = NULL;
        }
}

/* Start no more and let those under way finish, so that the server's counters show none
 * of ours given up half way; then give up what is left. */
static void
pool_drain(struct pool *p)
{
    if (p->started) {
        p->total = p->started;
        pool_run(p, now() + HS_TOTAL / 1e3);
    }
    pool_stop(p);
}

static struct pool
pool_new(unsigned parallel, unsigned long total)
{
    struct pool p = {.parallel = parallel, .total = total, .begin = now()};

    if ((p.slot = calloc(parallel, sizeof *p.slot)) == NULL)
        die("calloc");
    return p;
}

/* n sessions open, or exit 1 */
static struct conn **
sessions_open(unsigned n)
{
    struct pool p = pool_new(n < 16 ? n : 16, n);

    p.keep = 1;
    if ((p.kept = calloc(n, sizeof *p.kept)) == NULL)
        die("calloc");
    pool_run(&p, now() + HS_TOTAL / 1e3 + 5);
    pool_stop(&p);
    free(p.slot);
    if (p.nkept < n) {
        fprintf(stderr, "dtls-bench: %u of %u sessions opened\n", p.nkept, n);
        exit(1);
    }
    return p.kept;
}

/* close_notify: the next run finds the server without them */
static void
sessions_close(struct conn **c, unsigned n)
{
    unsigned i;

    for (i = 0; i < n; i++)
        conn_free(c[i], c[i]->state == OPEN);
    free(c);
}

/* ---- GETs over open sessions */

/* The answers that have come, through epoll (poll over 100 sockets per answer would make
 * this side the bottleneck); c_dead counts the sessions that ended. */
static void
req_input(int ep, unsigned *c_dead)
{
    struct epoll_event ev[64];
    int i, k = epoll_wait(ep, ev, 64, 5);

    for (i = 0; i < k; i++) {
        struct conn *c = ev[i].data.ptr;

        if (c->state == OPEN && conn_input(c) < 0) {
            c->state = DEAD;
            tally.dead++;
            (*c_dead)++;
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            expire(c, now() + LOST_AFTER);
        }
    }
}

/* Keep `window` GETs in flight over the n sessions, round robin, until `until`. */
static void
req_run(struct conn **c, unsigned n, unsigned window, double until)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    unsigned i, next = 0, dead = 0;
    double t, sweep = now() + 0.1;

    if (ep < 0)
        die("epoll_create1");
    for (i = 0; i < n; i++) {
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = c[i]};

        dead += c[i]->state != OPEN;
        if (c[i]->state == OPEN && epoll_ctl(ep, EPOLL_CTL_ADD, c[i]->fd, &e) < 0)
            die("epoll_ctl");
    }
    while ((t = now()) < until && dead < n) {
        for (i = 0; outstanding < window && i < n; next++)
            if (c[next % n]->state == OPEN)
                get_send(c[next % n]);
            else
                i++; /* a dead one: skip (a full round of them ends the filling) */
        req_input(ep, &dead);
        if (t >= sweep) {
            for (i = 0; i < n; i++)
                expire(c[i], t);
            sweep = t + 0.1;
        }
    }
    close(ep);
}

/* ---- measurement */

/* The fastest of opt.rounds measured runs of go(ctx, until), ops being what *count grew
 * by: the machine may be busy with other work for a while, which only ever slows a run. */
static struct run
measure(void (*go)(void *, double), void *ctx, const unsigned long *count)
{
    struct run best = {0}, r;
    unsigned i;

    for (i = 0; i < opt.rounds; i++) {
        unsigned long before = *count;

        r.a = mark_now(opt.pid);
        go(ctx, r.a.t + opt.secs);
        r.b = mark_now(opt.pid);
        r.ops = *count - before;
        if (i == 0 || run_rate(&r) > run_rate(&best))
            best = r;
    }
    return best;
}

static void
print_tally(void)
{
    printf(" suite=%s ok=%lu errors=%lu lost=%lu late=%lu failed=%lu dead=%lu\n", suite, tally.ok,
           tally.errors, tally.lost, tally.late, tally.failed, tally.dead);
}

static int
status(void)
{
    return tally.errors || tally.failed || tally.dead ? 1 : 0;
}

/* -R: a full handshake first, whose session data the others resume */
static void
ticket_get(void)
{
    struct pool p = pool_new(1, 1);

    p.bye = 1;
    pool_run(&p, now() + HS_TOTAL / 1e3 + 1);
    if (ticket.data == NULL) {
        fprintf(stderr, "dtls-bench: no session to resume: the first handshake failed\n");
        exit(1);
    }
    free(p.slot);
}

static void
pool_go(void *p, double until)
{
    pool_run(p, until);
}

static int
mode_hs(void)
{
    struct pool p = pool_new(opt.parallel, opt.n);
    struct run r;

    if (opt.resume)
        ticket_get();
    tally = (struct tally){0};
    p.get = opt.get;
    p.bye = 1;
    pool_run(&p, now() + opt.warmup);
    /* a server that never resumes (libcoap's) needs no measuring: resumed=0 says it */
    if (opt.resume && tally.resumed == 0 && tally.handshakes > 0) {
        opt.secs = 0.1;
        opt.rounds = 1;
    }
    tally = (struct tally){0};
    took.n = 0;
    r = measure(pool_go, &p, &tally.done);
    pool_drain(&p);
    free(p.slot);
    printf("mode=hs parallel=%u get=%d resume=%d ops=%lu handshakes=%lu resumed=%lu", opt.parallel,
           opt.get, opt.resume, r.ops, tally.handshakes, tally.resumed);
    print_run("", &r);
    print_took();
    print_tally();
    return status();
}

/* GETs over these sessions */
struct open {
    struct conn **c;
    unsigned n;
};

static void
req_go(void *o, double until)
{
    req_run(((struct open *)o)->c, ((struct open *)o)->n, opt.window, until);
}

/* a warm-up, then the measured runs of GETs: the line's fields for the best, with prefix */
static void
req_measure(const char *prefix, struct conn **c, unsigned n)
{
    struct open o = {c, n};
    struct run r;

    req_run(c, n, opt.window, now() + opt.warmup);
    r = measure(req_go, &o, &tally.ok);
    print_run(prefix, &r);
}

static int
mode_req(void)
{
    unsigned n = opt.n ? (unsigned)opt.n : 1;
    struct conn **c = sessions_open(n);

    tally = (struct tally){0};
    printf("mode=req sessions=%u window=%u", n, opt.window);
    req_measure("", c, n);
    print_tally();
    sessions_close(c, n);
    return status();
}

/* N sessions, one GET each, then dropped: the server holds them idle */
static unsigned long
idle_open(double *secs, double *server_us)
{
    struct pool p = pool_new(opt.parallel, opt.n);
    unsigned long done = tally.done;
    struct mark a, b;

    p.rate = opt.rate;
    p.get = 1;
    a = mark_now(opt.pid);
    p.begin = a.t;
    pool_run(&p, a.t + OPEN_LIMIT);
    b = mark_now(opt.pid);
    pool_stop(&p);
    free(p.slot);
    *secs = b.t - a.t;
    done = tally.done - done;
    *server_us = a.server_ms >= 0 && done ? (b.server_ms - a.server_ms) * 1e3 / done : -1;
    return done;
}

static int
mode_idle(void)
{
    struct conn **live = sessions_open(1);
    unsigned long opened, failed;
    long rss0, rss1;
    double secs, server_us;

    printf("mode=idle window=%u", opt.window);
    req_measure("none_", live, 1);
    rss0 = opt.pid ? rss_kb(opt.pid) : -1;
    failed = tally.failed;
    opened = idle_open(&secs, &server_us);
    failed = tally.failed - failed;
    usleep((useconds_t)(SETTLE * 1e6));
    rss1 = opt.pid ? rss_kb(opt.pid) : -1;
    printf(" idle=%lu opened=%lu open_failed=%lu open_s=%.2f open_server_us=%.1f"
           " rss_before_kb=%ld rss_after_kb=%ld bytes_per_session=%.0f",
           opt.n, opened, failed, secs, server_us, rss0, rss1,
           opened && rss0 >= 0 ? (rss1 - rss0) * 1024.0 / opened : -1);
    req_measure("idle_", live, 1);
    print_tally();
    sessions_close(live, 1);
    return status() || opened < opt.n;
}

_Noreturn static void
usage(void)
{
    fprintf(stderr, "usage: dtls-bench -p PORT [-a ADDR] [-i ID] [-k KEY] [-P PRIO] [-u PATH]"
                    " [-e TEXT] [-d S] [-N N] [-W S] [-s PID] [-c N] [-n N] [-w N] [-r N] [-R] [-g]"
                    " hs|req|idle\n");
    exit(2);
}

static void
options(int argc, char **argv)
{
    int o;

    while ((o = getopt(argc, argv, "a:p:i:k:P:u:e:d:W:s:c:n:N:w:r:Rg")) != -1) {
        switch (o) {
        case 'a':
            opt.addr = optarg;
            break;
        case 'p':
            opt.port = (unsigned)atoi(optarg);
            break;
        case 'i':
            opt.ident = optarg;
            break;
        case 'k':
            opt.key = optarg;
            break;
        case 'P':
            opt.prio = optarg;
            break;
        case 'u':
            opt.path = optarg;
            break;
        case 'e':
            opt.payload = optarg;
            break;
        case 'd':
            opt.secs = atof(optarg);
            break;
        case 'W':
            opt.warmup = atof(optarg);
            break;
        case 's':
            opt.pid = optarg;
            break;
        case 'c':
            opt.parallel = (unsigned)atoi(optarg);
            break;
        case 'n':
            opt.n = strtoul(optarg, NULL, 10);
            break;
        case 'N':
            opt.rounds = (unsigned)atoi(optarg);
            break;
        case 'w':
            opt.window = (unsigned)atoi(optarg);
            break;
        case 'r':
            opt.rate = atof(optarg);
            break;
        case 'R':
            opt.resume = 1;
            break;
        case 'g':
            opt.get = 1;
            break;
        default:
            usage();
        }
    }
    if (optind + 1 != argc || !opt.port || !opt.parallel || opt.parallel > MAX_FDS || !opt.window ||
        !opt.rounds || opt.secs <= 0 || opt.n > (strcmp(argv[optind], "idle") ? MAX_FDS : 60000))
        usage();
}

/* the credentials and priorities every session shares */
static void
setup(void)
{
    gnutls_datum_t key = {(unsigned char *)opt.key, (unsigned)strlen(opt.key)};
    const char *at = NULL;
    int r;

    server = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(opt.port)};
    if (inet_pton(AF_INET, opt.addr, &server.sin_addr) != 1)
        usage();
    if ((r = gnutls_global_init()) < 0 || (r = gnutls_psk_allocate_client_credentials(&psk)) < 0 ||
        (r = gnutls_psk_set_client_credentials(psk, opt.ident, &key, GNUTLS_PSK_KEY_RAW)) < 0 ||
        (r = gnutls_priority_init(&prio, opt.prio, &at)) < 0) {
        fprintf(stderr, "dtls-bench: %s%s%s\n", gnutls_strerror(r), at ? " at " : "", at ? at : "");
        exit(2);
    }
    uri_encode(opt.path);
    src_next = (uint32_t)getpid() * 65537u + (uint32_t)time(NULL); /* apart from other runs' */
}

int
main(int argc, char **argv)
{
    const char *mode;

    options(argc, argv);
    mode = argv[optind];
    setup();
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (strcmp(mode, "hs") == 0)
        return mode_hs();
    if (strcmp(mode, "req") == 0)
        return mode_req();
    if (strcmp(mode, "idle") == 0) {
        opt.n = opt.n ? opt.n : 10000;
        return mode_idle();
    }
    usage();
}
