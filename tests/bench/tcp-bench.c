/*
 * tcp-bench -- load generator for CoAP over TCP (RFC 8323): pipelined GETs over one or
 * many connections, what idle connections cost the server, and block-wise downloads
 * (Block2 with SZX 6, or BERT: SZX 7, RFC 8323 §6).
 *
 *   tcp-bench [options] req   GETs over -c CONNS connections, -w WINDOW in flight on each
 *   tcp-bench [options] idle  -n N connections opened (CSM both ways) and held; the server's
 *                             RSS before and after, then one GET on each (still served?)
 *   tcp-bench [options] dl    -n N downloads of -u PATH one after the other, one block at a
 *                             time, compared with -f FILE; -b 7 asks for BERT
 *
 *   -a ADDR      server address (::1)       -p PORT     server port (required)
 *   -u PATH      resource (hello)           -e TEXT     req/idle: its payload (Hello, world)
 *   -f FILE      dl: the bytes expected     -b SZX      dl: 6 (1024-byte blocks) or 7 (BERT)
 *   -d SECONDS   each measured run (2)      -W SECONDS  warm-up before them (0.5)
 *   -N ROUNDS    measured runs, the fastest reported (1)
 *   -s PID       the server's: CPU per request (and RSS in idle mode) from /proc/PID
 *   -c N (1)  -w N (1)  -n N (idle: 10000, dl: 10)
 *   -P N         connections being set up at once (32)
 *   -M BYTES     Max-Message-Size in our CSM (65536)
 *
 * Every connection: non-blocking connect, TCP_NODELAY, our CSM (7.01 with
 * Max-Message-Size and Block-Wise-Transfer) at once, then it waits for the server's CSM
 * before its first request. Requests are GETs with a 4-byte token (a slot number and a
 * generation: distinct among those in flight); a burst is written with one send().
 * Answers are matched by token, whatever their order; each must be 2.05 with the payload
 * expected (req, idle) or the block expected (dl). The server's Ping gets a Pong; its
 * Release or Abort, an end of stream or a reset while we still use the connection is
 * counted in closed= (and fails the run).
 *
 * Latency is from the send() that carried a request to the recv() that brought its
 * answer (one clock reading per connection event); p50/p99/max over every measured run.
 * over5ms= counts answers slower than 5 ms, over35ms= those slower than 35 ms: a write
 * that Nagle's algorithm holds back until a delayed ACK (40 ms at least on Linux) comes
 * costs that much, where a busy CPU costs a few ms.
 *
 * Prints one line of NAME=VALUE on stdout. Exit status 0; 1 with invalid answers, lost
 * ones or closed connections; 2 for bad usage or setup.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proc.h"

#define LOST_AFTER 1.0     /* s without an answer: lost (TCP does not lose: the server did) */
#define CONNECT_LIMIT 10.0 /* s for one connection to be up (connect and the server's CSM) */
#define OPEN_LIMIT 60.0    /* s to open the idle connections, at most */
#define SETTLE 0.5         /* s for the server to settle before its RSS is read */
#define DL_LIMIT 10.0      /* s for one download */
#define COMPLAINTS 10      /* problems described on stderr, then only counted */
#define MAX_WINDOW 4096
#define STALL 5e-3  /* an answer slower than this: counted in over5ms */
#define NAGLE 35e-3 /* and this: over35ms (a delayed ACK is 40 ms at least) */

/* codes */
#define GET 0x01
#define CONTENT 0x45
#define CSM 0xE1
#define PING 0xE2
#define PONG 0xE3
#define RELEASE 0xE4
#define ABORT 0xE5
/* options */
#define OPT_ETAG 4
#define OPT_URI_PATH 11
#define OPT_BLOCK2 23
#define CSM_MMS 2
#define CSM_BWT 4

enum { CONNECTING, CSM_WAIT, OPEN, DEAD };

struct slot {
    double sent;
    uint32_t token;
    uint8_t busy;
};

struct conn {
    int fd, state;
    uint32_t events; /* what epoll waits for */
    double born;     /* connect() */
    uint8_t *rbuf;   /* a frame not whole yet */
    size_t rlen;
    uint8_t *wbuf; /* bytes the socket has not taken yet, from woff */
    size_t wlen, woff, wcap;
    unsigned inflight, want; /* want: GETs still to send (idle's check), ~0u: no limit */
    uint16_t gen;
    uint32_t peer_mms;
    uint8_t bwt;
    struct slot *slots; /* nslots, a power of 2 >= the window */
};

static struct tally {
    unsigned long ok, errors, lost, late, closed, pongs, sent;
} tally;

static struct {
    const char *addr, *path, *payload, *file, *pid;
    unsigned port, conns, window, rounds, parallel, szx;
    unsigned long n, mms;
    double secs, warmup;
} opt = {.addr = "::1",
         .path = "hello",
         .payload = "Hello, world",
         .conns = 1,
         .window = 1,
         .rounds = 1,
         .parallel = 32,
         .szx = 6,
         .mms = 65536,
         .secs = 2,
         .warmup = 0.5};

static struct sockaddr_storage server;
static socklen_t server_len;
static int ep = -1;
static unsigned nslots;
static uint8_t uri[300]; /* the Uri-Path options */
static size_t urilen;
static size_t plen; /* strlen(opt.payload) */
static uint8_t *rx; /* what one read brings, after a connection's kept bytes */
static size_t rxcap;
static unsigned outstanding; /* GETs in flight over all connections */
static unsigned complaints;
static int measuring;
static unsigned long server_mms;
static int server_bwt = -1;

/* the measured answers' latencies, s */
static struct {
    float *v;
    size_t n, cap;
} lat;

/* dl: the download under way */
static struct {
    const uint8_t *data;
    size_t size, got;
    uint32_t num; /* the block asked for (in 1024-byte units with BERT) */
    uint8_t etag[8], etag_len, has_etag;
    int done, failed, bert_no;
    char why[160]; /* dl: why BERT is not supported */
    unsigned blocks;
    double max_block, block_sent;
} dl;

_Noreturn static void
die(const char *what)
{
    fprintf(stderr, "tcp-bench: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void
complain(const char *fmt, ...)
{
    va_list ap;

    if (complaints++ >= COMPLAINTS)
        return;
    va_start(ap, fmt);
    fputs("tcp-bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ---- framing (RFC 8323 §3.2) */

/* Len/TKL, the extended length, Code: the header's length */
static size_t
frame_head(uint8_t *h, size_t body, unsigned tkl, unsigned code)
{
    size_t n = 1;

    if (body < 13) {
        h[0] = (uint8_t)(body << 4 | tkl);
    } else if (body < 269) {
        h[0] = (uint8_t)(13 << 4 | tkl);
        h[n++] = (uint8_t)(body - 13);
    } else if (body < 65805) {
        h[0] = (uint8_t)(14 << 4 | tkl);
        h[n++] = (uint8_t)((body - 269) >> 8);
        h[n++] = (uint8_t)(body - 269);
    } else {
        uint32_t v = (uint32_t)(body - 65805);

        h[0] = (uint8_t)(15 << 4 | tkl);
        h[n++] = (uint8_t)(v >> 24);
        h[n++] = (uint8_t)(v >> 16);
        h[n++] = (uint8_t)(v >> 8);
        h[n++] = (uint8_t)v;
    }
    h[n++] = (uint8_t)code;
    return n;
}

/* The length of the frame at p (n bytes there): its total, 0 while its header is not
 * whole, -1 for a TKL over 8. *hl: the header's length. */
static long
frame_len(const uint8_t *p, size_t n, size_t *hl)
{
    unsigned len = p[0] >> 4, tkl = p[0] & 15, x = len < 13 ? 0 : len == 13 ? 1 : len == 14 ? 2 : 4;
    uint64_t body;

    if (tkl > 8)
        return -1;
    if (n < 2 + x)
        return 0;
    if (x == 0)
        body = len;
    else if (x == 1)
        body = 13u + p[1];
    else if (x == 2)
        body = 269u + ((unsigned)p[1] << 8 | p[2]);
    else
        body = 65805u + ((uint64_t)p[1] << 24 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 8 | p[4]);
    *hl = 2 + x;
    if (body > (1u << 30))
        return -1;
    return (long)(*hl + tkl + body);
}

/* one option after another (RFC 7252 §3.1) */
struct opts {
    const uint8_t *p, *end;
    unsigned num;
};

/* 1: an option (num, val, len); 0: the end or the payload marker; -1: malformed */
static int
opt_next(struct opts *o, unsigned *num, const uint8_t **val, size_t *len)
{
    const uint8_t *p = o->p;
    unsigned d, l;

    if (p >= o->end || *p == 0xFF)
        return 0;
    d = *p >> 4;
    l = *p++ & 15u;
    if (d == 15 || l == 15)
        return -1;
    if (d == 13) {
        if (p >= o->end)
            return -1;
        d = 13u + *p++;
    } else if (d == 14) {
        if (p + 2 > o->end)
            return -1;
        d = 269u + (unsigned)(p[0] << 8 | p[1]);
        p += 2;
    }
    if (l == 13) {
        if (p >= o->end)
            return -1;
        l = 13u + *p++;
    } else if (l == 14) {
        if (p + 2 > o->end)
            return -1;
        l = 269u + (unsigned)(p[0] << 8 | p[1]);
        p += 2;
    }
    if (p + l > o->end)
        return -1;
    o->num += d;
    *num = o->num;
    *val = p;
    *len = l;
    o->p = p + l;
    return 1;
}

static uint32_t
uint_val(const uint8_t *v, size_t len)
{
    uint32_t x = 0;

    while (len--)
        x = x << 8 | *v++;
    return x;
}

/* one message, parsed */
struct frame {
    unsigned code, tkl;
    const uint8_t *token, *opts, *payload;
    size_t optlen, plen;
};

/* -1 when its options run past its end, or a payload marker has no payload after it */
static int
frame_parse(const uint8_t *p, size_t total, size_t hl, struct frame *f)
{
    struct opts o;
    unsigned num;
    const uint8_t *v;
    size_t l;
    int r;

    f->tkl = p[0] & 15;
    f->code = p[hl - 1];
    f->token = p + hl;
    f->opts = p + hl + f->tkl;
    o = (struct opts){f->opts, p + total, 0};
    while ((r = opt_next(&o, &num, &v, &l)) > 0)
        ;
    if (r < 0)
        return -1;
    f->optlen = (size_t)(o.p - f->opts);
    if (o.p < p + total) { /* the marker */
        f->payload = o.p + 1;
        f->plen = (size_t)(p + total - o.p - 1);
        if (f->plen == 0)
            return -1;
    } else {
        f->payload = o.p;
        f->plen = 0;
    }
    return 0;
}

/* an option's value in f: 1 and *val, *len when it is there */
static int
frame_opt(const struct frame *f, unsigned want, const uint8_t **val, size_t *len)
{
    struct opts o = {f->opts, f->opts + f->optlen, 0};
    unsigned num;

    while (opt_next(&o, &num, val, len) > 0)
        if (num == want)
            return 1;
    return 0;
}

/* opt.path as Uri-Path options */
static void
uri_encode(const char *path)
{
    unsigned delta = OPT_URI_PATH;

    while (*path) {
        size_t l = strcspn(path, "/");

        if (l >= 269 || urilen + 2 + l > sizeof uri) {
            fprintf(stderr, "tcp-bench: path too long\n");
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

/* ---- connections */

static void
watch(struct conn *c, uint32_t events)
{
    struct epoll_event e = {.events = events, .data.ptr = c};

    if (events == c->events)
        return;
    if (epoll_ctl(ep, c->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &e) < 0)
        die("epoll_ctl");
    c->events = events;
}

/* The connection is over: what it had in flight is lost. closed: the server's doing. */
static void
conn_end(struct conn *c, int closed, const char *why)
{
    if (c->state == DEAD)
        return;
    if (closed) {
        tally.closed++;
        complain("connection closed: %s", why);
    }
    for (unsigned i = 0; i < nslots && c->inflight; i++)
        if (c->slots[i].busy) {
            c->slots[i].busy = 0;
            c->inflight--;
            outstanding--;
            tally.lost++;
        }
    close(c->fd);
    c->fd = -1;
    c->events = 0;
    c->state = DEAD;
    free(c->rbuf);
    c->rbuf = NULL;
    c->rlen = 0;
    free(c->wbuf);
    c->wbuf = NULL;
    c->wlen = c->woff = c->wcap = 0;
}

/* What the socket takes now; the rest waits for EPOLLOUT. */
static void
conn_write(struct conn *c, const uint8_t *p, size_t len)
{
    ssize_t n = 0;

    if (c->state == DEAD)
        return;
    if (c->wlen == c->woff) {
        c->wlen = c->woff = 0;
        n = send(c->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            conn_end(c, 1, strerror(errno));
            return;
        }
        if (n < 0)
            n = 0;
    }
    if ((size_t)n < len) {
        size_t rest = len - (size_t)n;

        if (c->wlen + rest > c->wcap) {
            size_t cap = c->wcap ? c->wcap : 4096;

            while (cap < c->wlen + rest)
                cap *= 2;
            if ((c->wbuf = realloc(c->wbuf, cap)) == NULL)
                die("realloc");
            c->wcap = cap;
        }
        memcpy(c->wbuf + c->wlen, p + n, rest);
        c->wlen += rest;
        watch(c, EPOLLIN | EPOLLOUT);
    }
}

static void
conn_flush(struct conn *c)
{
    ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL | MSG_DONTWAIT);

    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            conn_end(c, 1, strerror(errno));
        return;
    }
    c->woff += (size_t)n;
    if (c->woff == c->wlen) {
        c->wlen = c->woff = 0;
        watch(c, EPOLLIN);
    }
}

/* our CSM: Max-Message-Size, Block-Wise-Transfer (§5.3) */
static void
send_csm(struct conn *c)
{
    uint8_t m[16], v[4];
    size_t vl = 0, n, hl, body;
    uint32_t mms = (uint32_t)opt.mms;

    while (mms >> (8 * vl) && vl < 4)
        vl++;
    for (size_t i = 0; i < vl; i++)
        v[i] = (uint8_t)(mms >> (8 * (vl - 1 - i)));
    body = 1 + vl + 1;
    hl = frame_head(m, body, 0, CSM);
    n = hl;
    m[n++] = (uint8_t)(CSM_MMS << 4 | vl);
    memcpy(m + n, v, vl);
    n += vl;
    m[n++] = (uint8_t)((CSM_BWT - CSM_MMS) << 4);
    conn_write(c, m, n);
}

/* A new connection, connect() under way (or done). */
static struct conn *
conn_new(void)
{
    struct conn *c = calloc(1, sizeof *c);
    int one = 1, fd;

    if (c == NULL || (c->slots = calloc(nslots, sizeof *c->slots)) == NULL)
        die("calloc");
    if ((fd = socket(server.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0)
        die("socket");
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->born = now();
    c->want = ~0u;
    c->peer_mms = 1152;
    c->state = CONNECTING;
    if (connect(fd, (struct sockaddr *)&server, server_len) < 0 && errno != EINPROGRESS)
        die("connect");
    watch(c, EPOLLOUT);
    return c;
}

/* ---- requests */

/* A GET (with Block2 when block >= 0) into b: its length. The slot it takes: its token. */
static size_t
get_build(struct conn *c, uint8_t *b, long block, double t)
{
    uint8_t body[sizeof uri + 8];
    size_t bl = urilen, hl;
    struct slot *s = NULL;
    uint32_t token;

    for (unsigned i = 0; i < nslots; i++)
        if (!c->slots[(c->gen + i) & (nslots - 1)].busy) {
            s = &c->slots[(c->gen + i) & (nslots - 1)];
            break;
        }
    if (s == NULL)
        return 0;
    token = (uint32_t)c->gen << 16 | (uint32_t)(s - c->slots);
    c->gen++;
    memcpy(body, uri, urilen);
    if (block >= 0) { /* Block2: delta from the last Uri-Path (11) is 12 */
        uint32_t v = (uint32_t)block;
        size_t vl = v ? v < 256 ? 1 : v < 65536 ? 2 : 3 : 0;

        body[bl++] = (uint8_t)((OPT_BLOCK2 - OPT_URI_PATH) << 4 | vl);
        for (size_t i = 0; i < vl; i++)
            body[bl++] = (uint8_t)(v >> (8 * (vl - 1 - i)));
    }
    hl = frame_head(b, bl, 4, GET);
    memcpy(b + hl, &token, 4);
    memcpy(b + hl + 4, body, bl);
    *s = (struct slot){t, token, 1};
    c->inflight++;
    outstanding++;
    tally.sent++;
    return hl + 4 + bl;
}

/* GETs until c has `window` in flight, in one write */
static void
refill(struct conn *c, unsigned window, double t)
{
    uint8_t b[16384];
    size_t n = 0;

    while (c->state == OPEN && c->inflight < window && c->want) {
        if (n + 320 > sizeof b) {
            conn_write(c, b, n);
            n = 0;
        }
        size_t k = get_build(c, b + n, -1, t);

        if (k == 0)
            break;
        n += k;
        if (c->want != ~0u)
            c->want--;
    }
    if (n)
        conn_write(c, b, n);
}

/* GETs in flight for LOST_AFTER: lost */
static void
expire(struct conn *c, double t)
{
    for (unsigned i = 0; i < nslots && c->inflight; i++)
        if (c->slots[i].busy && t - c->slots[i].sent >= LOST_AFTER) {
            c->slots[i].busy = 0;
            c->inflight--;
            outstanding--;
            tally.lost++;
            complain("no answer within %.0f ms", LOST_AFTER * 1e3);
        }
}

static void
lat_add(double s)
{
    if (lat.n == lat.cap) {
        lat.cap = lat.cap ? 2 * lat.cap : 65536;
        if ((lat.v = realloc(lat.v, lat.cap * sizeof *lat.v)) == NULL)
            die("realloc");
    }
    lat.v[lat.n++] = (float)s;
}

/* The slot of the answer's token, freed; NULL (counted) when it is none of ours. */
static struct slot *
slot_take(struct conn *c, const struct frame *f)
{
    uint32_t token;
    struct slot *s;

    if (f->tkl != 4) {
        tally.errors++;
        complain("an answer with a %u-byte token", f->tkl);
        return NULL;
    }
    memcpy(&token, f->token, 4);
    s = &c->slots[(token & 0xFFFF) & (nslots - 1)];
    if (!s->busy || s->token != token) {
        tally.late++;
        return NULL;
    }
    s->busy = 0;
    c->inflight--;
    outstanding--;
    return s;
}

/* req, idle: 2.05 with the payload expected */
static void
answer_get(struct conn *c, const struct frame *f, double t)
{
    struct slot *s = slot_take(c, f);

    if (s == NULL)
        return;
    if (f->code != CONTENT || f->plen != plen || memcmp(f->payload, opt.payload, plen) != 0) {
        tally.errors++;
        complain("invalid answer: code %u.%02u payload '%.*s'", f->code >> 5, f->code & 31,
                 (int)(f->plen < 60 ? f->plen : 60), (const char *)f->payload);
        return;
    }
    tally.ok += measuring;
    if (measuring) {
        lat_add(t - s->sent);
    }
}

/* dl: the block asked for, next */
static void
dl_ask(struct conn *c, double t)
{
    uint8_t b[400];
    size_t n = get_build(c, b, (long)(dl.num << 4 | opt.szx), t);

    dl.block_sent = t;
    conn_write(c, b, n);
}

static void
dl_fail(const char *fmt, ...)
{
    va_list ap;

    tally.errors++;
    dl.failed = 1;
    if (complaints++ >= COMPLAINTS)
        return;
    va_start(ap, fmt);
    fputs("tcp-bench: download: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* dl: the block, checked against the file; then the next one asked for */
static void
answer_block(struct conn *c, const struct frame *f, double t)
{
    struct slot *s = slot_take(c, f);
    const uint8_t *v;
    size_t vl, off, unit;
    uint32_t b2, num, szx, more;
    int has_b2;

    if (s == NULL)
        return;
    if (t - dl.block_sent > dl.max_block)
        dl.max_block = t - dl.block_sent;
    has_b2 = frame_opt(f, OPT_BLOCK2, &v, &vl);
    b2 = has_b2 ? uint_val(v, vl) : 0;
    szx = b2 & 7;
    /* BERT asked for, not given: a fact to report, not an error (RFC 8323 §6 is optional) */
    if (opt.szx == 7 && dl.num == 0 && (f->code != CONTENT || !has_b2 || szx != 7)) {
        if (f->code != CONTENT)
            snprintf(dl.why, sizeof dl.why, "answered %u.%02u '%.*s'", f->code >> 5, f->code & 31,
                     (int)(f->plen < 60 ? f->plen : 60), (const char *)f->payload);
        else if (!has_b2)
            snprintf(dl.why, sizeof dl.why, "answered without Block2 (%zu bytes)", f->plen);
        else
            snprintf(dl.why, sizeof dl.why, "answered Block2 SZX %u", szx);
        dl.bert_no = 1;
        dl.done = 1;
        return;
    }
    if (f->code != CONTENT) {
        dl_fail("block %u: code %u.%02u '%.*s'", dl.num, f->code >> 5, f->code & 31,
                (int)(f->plen < 60 ? f->plen : 60), (const char *)f->payload);
        return;
    }
    if (!has_b2) {
        dl_fail("block %u: no Block2", dl.num);
        return;
    }
    num = b2 >> 4;
    more = b2 >> 3 & 1;
    unit = 16u << (szx == 7 ? 6 : szx);
    off = (size_t)num * unit;
    if (szx != opt.szx || num != dl.num) {
        dl_fail("asked for block %u SZX %u, got %u SZX %u", dl.num, opt.szx, num, szx);
        return;
    }
    if ((more && (f->plen == 0 || f->plen % unit != 0 || (szx != 7 && f->plen != unit))) ||
        off != dl.got || off + f->plen > dl.size ||
        memcmp(f->payload, dl.data + off, f->plen) != 0) {
        dl_fail("block %u (%zu bytes at %zu): not the file's bytes there", num, f->plen, off);
        return;
    }
    if (frame_opt(f, OPT_ETAG, &v, &vl)) {
        if (!dl.has_etag && num == 0 && vl <= sizeof dl.etag) {
            memcpy(dl.etag, v, vl);
            dl.etag_len = (uint8_t)vl;
            dl.has_etag = 1;
        } else if (dl.has_etag && (vl != dl.etag_len || memcmp(v, dl.etag, vl) != 0)) {
            dl_fail("block %u: the ETag changed", num);
            return;
        }
    }
    dl.got += f->plen;
    dl.blocks++;
    if (!more) {
        if (dl.got != dl.size)
            dl_fail("%zu bytes, not %zu", dl.got, dl.size);
        dl.done = 1;
        return;
    }
    dl.num = (uint32_t)(dl.got / (szx == 7 ? 1024 : unit));
    dl_ask(c, t);
}

static void (*on_answer)(struct conn *, const struct frame *, double) = answer_get;

/* signaling (§5) */
static void
signal_in(struct conn *c, const struct frame *f)
{
    const uint8_t *v;
    size_t vl;
    uint8_t m[16];
    size_t hl;

    switch (f->code) {
    case CSM:
        if (frame_opt(f, CSM_MMS, &v, &vl))
            c->peer_mms = uint_val(v, vl);
        c->bwt |= frame_opt(f, CSM_BWT, &v, &vl);
        if (server_bwt < 0) {
            server_mms = c->peer_mms;
            server_bwt = c->bwt;
        }
        if (c->state == CSM_WAIT)
            c->state = OPEN;
        return;
    case PING:
        hl = frame_head(m, 0, f->tkl, PONG);
        memcpy(m + hl, f->token, f->tkl);
        tally.pongs++;
        conn_write(c, m, hl + f->tkl);
        return;
    case PONG:
        return;
    case RELEASE:
    case ABORT:
        complain("%s: '%.*s'", f->code == ABORT ? "Abort" : "Release",
                 (int)(f->plen < 80 ? f->plen : 80), (const char *)f->payload);
        conn_end(c, 1, f->code == ABORT ? "Abort" : "Release");
        return;
    default:
        tally.errors++;
        complain("signaling code 7.%02u", f->code & 31);
    }
}

/* one whole frame */
static void
frame_in(struct conn *c, const uint8_t *p, size_t total, size_t hl, double t)
{
    struct frame f;

    if (frame_parse(p, total, hl, &f) < 0) {
        tally.errors++;
        complain("a malformed message (code %u.%02u)", p[hl - 1] >> 5, p[hl - 1] & 31);
        return;
    }
    if (total > opt.mms) {
        tally.errors++;
        complain("a %zu-byte message, over our Max-Message-Size %lu", total, opt.mms);
    }
    if (f.code == 0)
        return; /* Empty: ignored (§3.4) */
    if (f.code >> 5 == 7) {
        signal_in(c, &f);
        return;
    }
    if (c->state != OPEN) {
        tally.errors++;
        complain("a message (code %u.%02u) before the server's CSM", f.code >> 5, f.code & 31);
        return;
    }
    if (f.code >> 5 == 0) {
        tally.errors++;
        complain("a request from the server (code 0.%02u)", f.code & 31);
        return;
    }
    on_answer(c, &f, t);
}

/* What has come: whole frames handled, a cut one kept. */
static void
conn_read(struct conn *c, double t)
{
    size_t have = c->rlen, hl = 0, at = 0;
    ssize_t n;

    if (have)
        memcpy(rx, c->rbuf, have);
    n = recv(c->fd, rx + have, rxcap - have, 0);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        conn_end(c, 1, n == 0 ? "end of stream from the server" : strerror(errno));
        return;
    }
    have += (size_t)n;
    while (at < have && c->state != DEAD) {
        long total = frame_len(rx + at, have - at, &hl);

        if (total < 0) {
            tally.errors++;
            conn_end(c, 1, "unframeable bytes");
            return;
        }
        if (total == 0 || (size_t)total > have - at)
            break;
        frame_in(c, rx + at, (size_t)total, hl, t);
        at += (size_t)total;
    }
    if (c->state == DEAD)
        return;
    c->rlen = have - at;
    if (c->rlen > rxcap / 2) { /* a frame larger than we could ever hold */
        tally.errors++;
        conn_end(c, 1, "a message far over our Max-Message-Size");
        return;
    }
    if (c->rlen) {
        if ((c->rbuf = realloc(c->rbuf, c->rlen)) == NULL)
            die("realloc");
        memcpy(c->rbuf, rx + at, c->rlen);
    } else {
        free(c->rbuf);
        c->rbuf = NULL;
    }
}

static void
conn_event(struct conn *c, uint32_t ev, double t)
{
    if (c->state == CONNECTING) {
        int err = 0;
        socklen_t el = sizeof err;

        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) {
            errno = err;
            conn_end(c, 1, strerror(err));
            return;
        }
        c->state = CSM_WAIT;
        watch(c, EPOLLIN);
        send_csm(c);
        return;
    }
    if (ev & EPOLLOUT && c->wlen > c->woff)
        conn_flush(c);
    if (c->state != DEAD && ev & (EPOLLIN | EPOLLERR | EPOLLHUP))
        conn_read(c, t);
}

/* Events for up to `wait` s; each connection's answers, then (window > 0) its refill. */
static void
poll_once(double wait, unsigned window)
{
    struct epoll_event ev[256];
    int k = epoll_wait(ep, ev, 256, wait > 0 ? (int)(wait * 1e3 + 0.999) : 0);

    for (int i = 0; i < k; i++) {
        struct conn *c = ev[i].data.ptr;
        double t = now();

        conn_event(c, ev[i].events, t);
        if (window)
            refill(c, window, t);
    }
}

/* ---- opening */

/* n connections up (CSM both ways), at most opt.parallel being set up at once, until
 * `until`; those not up then are given up. The number up is *up. */
static struct conn **
conns_open(unsigned long n, double until, unsigned long *up)
{
    struct conn **cs = calloc(n, sizeof *cs);
    unsigned long started = 0, first = 0, pending = 0, i;

    if (cs == NULL)
        die("calloc");
    while (now() < until) {
        unsigned long done = first;
        double t;

        while (started < n && pending < opt.parallel) {
            cs[started++] = conn_new();
            pending++;
        }
        poll_once(0.005, 0);
        t = now();
        /* those still being set up: up by now, failed, or too slow */
        for (i = first, pending = 0; i < started; i++) {
            struct conn *c = cs[i];

            if (c->state != OPEN && c->state != DEAD && t - c->born > CONNECT_LIMIT)
                conn_end(c, 1, "not up in time (connect and the server's CSM)");
            if (c->state == OPEN || c->state == DEAD)
                done++;
            else
                pending++;
        }
        while (first < started && (cs[first]->state == OPEN || cs[first]->state == DEAD))
            first++;
        if (done == n)
            break;
    }
    for (i = 0, *up = 0; i < started; i++) {
        if (cs[i]->state != OPEN)
            conn_end(cs[i], cs[i]->state != DEAD, "not up in time");
        *up += cs[i]->state == OPEN;
    }
    for (; i < n; i++) { /* never started: an empty dead one */
        cs[i] = calloc(1, sizeof **cs);
        if (cs[i] == NULL || (cs[i]->slots = calloc(nslots, sizeof *cs[i]->slots)) == NULL)
            die("calloc");
        cs[i]->fd = -1;
        cs[i]->state = DEAD;
    }
    return cs;
}

static void
conns_close(struct conn **cs, unsigned long n)
{
    for (unsigned long i = 0; i < n; i++) {
        conn_end(cs[i], 0, NULL);
        free(cs[i]->slots);
        free(cs[i]);
    }
    free(cs);
}

/* ---- measurement (struct mark, struct run: proc.h) */

static int
by_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;

    return (x > y) - (x < y);
}

/* " p50_us=.. p99_us=.. max_us=.. over5ms=.. over35ms=.." of the measured answers */
static void
print_latency(void)
{
    size_t over = 0, stalls = 0;

    if (lat.n == 0) {
        printf(" p50_us=- p99_us=- max_us=- over5ms=- over35ms=-");
        return;
    }
    qsort(lat.v, lat.n, sizeof *lat.v, by_float);
    for (size_t i = lat.n; i-- > 0 && lat.v[i] > STALL;) {
        over++;
        stalls += lat.v[i] > NAGLE;
    }
    printf(" p50_us=%.0f p99_us=%.0f max_us=%.0f over5ms=%zu over35ms=%zu", lat.v[lat.n / 2] * 1e6,
           lat.v[lat.n * 99 / 100] * 1e6, lat.v[lat.n - 1] * 1e6, over, stalls);
}

static void
print_tally(void)
{
    printf(" server_mms=%lu server_bwt=%d sent=%lu ok=%lu errors=%lu lost=%lu late=%lu closed=%lu"
           " pongs=%lu\n",
           server_mms, server_bwt, tally.sent, tally.ok, tally.errors, tally.lost, tally.late,
           tally.closed, tally.pongs);
}

static int
status(void)
{
    return tally.errors || tally.lost || tally.closed ? 1 : 0;
}

/* ---- modes */

/* GETs, refilled to the window as answers come, until `until` */
static void
req_run(struct conn **cs, unsigned long n, double until)
{
    double t, sweep = now() + 0.1;

    for (unsigned long i = 0; i < n; i++)
        refill(cs[i], opt.window, now());
    while ((t = now()) < until) {
        poll_once(until - t < 0.005 ? until - t : 0.005, opt.window);
        if (t >= sweep) {
            for (unsigned long i = 0; i < n; i++)
                expire(cs[i], t);
            sweep = t + 0.1;
        }
    }
}

/* no more sent; what is in flight answered (or lost after LOST_AFTER) */
static void
drain(struct conn **cs, unsigned long n)
{
    double end = now() + LOST_AFTER;

    while (outstanding && now() < end)
        poll_once(0.005, 0);
    for (unsigned long i = 0; i < n; i++)
        expire(cs[i], end + LOST_AFTER);
}

static int
mode_req(void)
{
    unsigned long up;
    struct conn **cs = conns_open(opt.conns, now() + OPEN_LIMIT, &up);
    struct run best = {0}, r;

    if (up < opt.conns) {
        fprintf(stderr, "tcp-bench: %lu of %u connections up\n", up, opt.conns);
        printf("mode=req conns=%u window=%u up=%lu", opt.conns, opt.window, up);
        print_tally();
        return 1;
    }
    req_run(cs, opt.conns, now() + opt.warmup);
    for (unsigned i = 0; i < opt.rounds; i++) {
        unsigned long before = tally.ok;

        measuring = 1;
        r.a = mark_now(opt.pid);
        req_run(cs, opt.conns, r.a.t + opt.secs);
        r.b = mark_now(opt.pid);
        measuring = 0;
        r.ops = tally.ok - before;
        if (i == 0 || run_rate(&r) > run_rate(&best))
            best = r;
    }
    drain(cs, opt.conns);
    printf("mode=req conns=%u window=%u", opt.conns, opt.window);
    print_run("", &best);
    print_latency();
    print_tally();
    conns_close(cs, opt.conns);
    return status();
}

/* N connections up and idle; the server's RSS before and after; then one GET on each */
static int
mode_idle(void)
{
    unsigned long up, alive = 0, closed, next = 0;
    long rss0, rss1;
    struct mark a, b;
    struct conn **cs;
    double t, end, sweep;

    rss0 = opt.pid ? rss_kb(opt.pid) : -1;
    a = mark_now(opt.pid);
    cs = conns_open(opt.n, a.t + OPEN_LIMIT, &up);
    b = mark_now(opt.pid);
    closed = tally.closed;
    /* the server settles; we answer what it sends meanwhile (a Ping, a close) */
    for (end = now() + SETTLE; (t = now()) < end;)
        poll_once(end - t, 0);
    rss1 = opt.pid ? rss_kb(opt.pid) : -1;
    closed = tally.closed - closed;
    /* still served? one GET on each, 256 in flight at most */
    measuring = 1;
    sweep = now() + 0.1;
    end = now() + OPEN_LIMIT;
    while ((next < opt.n || outstanding) && (t = now()) < end) {
        for (; next < opt.n && outstanding < 256; next++) {
            cs[next]->want = 1;
            refill(cs[next], 1, now());
        }
        poll_once(0.005, 0);
        if (t >= sweep) {
            for (unsigned long j = 0; j < next; j++)
                expire(cs[j], t);
            sweep = t + 0.1;
        }
    }
    measuring = 0;
    alive = tally.ok;
    printf("mode=idle n=%lu up=%lu open_s=%.2f open_server_us=", opt.n, up, b.t - a.t);
    if (a.server_ms >= 0 && up)
        printf("%.1f", (b.server_ms - a.server_ms) * 1e3 / up);
    else
        printf("-");
    printf(" rss_before_kb=%ld rss_after_kb=%ld bytes_per_conn=", rss0, rss1);
    if (rss0 >= 0 && rss1 >= 0 && up)
        printf("%.0f", (rss1 - rss0) * 1024.0 / up);
    else
        printf("-");
    printf(" closed_idle=%lu alive=%lu", closed, alive);
    print_tally();
    conns_close(cs, opt.n);
    return status() || up < opt.n || alive < opt.n;
}

/* one download: its time (s), -1 when it failed or did not end in time */
static double
dl_once(struct conn *c)
{
    double t0 = now(), limit = t0 + DL_LIMIT, t;

    dl.got = 0;
    dl.num = 0;
    dl.done = dl.failed = 0;
    dl.has_etag = 0;
    dl.blocks = 0;
    dl_ask(c, t0);
    while (!dl.done && !dl.failed && c->state == OPEN && (t = now()) < limit)
        poll_once(limit - t < 0.005 ? limit - t : 0.005, 0);
    t = now() - t0;
    if (!dl.done && !dl.failed) {
        dl_fail("no end after %.1f s (%zu bytes)", t, dl.got);
        expire(c, now() + LOST_AFTER);
    }
    return dl.done && !dl.failed ? t : -1;
}

static int
by_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static int
mode_dl(void)
{
    unsigned long up, ok = 0;
    struct conn **cs = conns_open(1, now() + CONNECT_LIMIT, &up);
    struct conn *c = cs[0];
    double *took = calloc(opt.n + 1, sizeof *took), max_block = 0;
    struct mark a, b;
    struct stat st;
    uint8_t *data;
    FILE *f;

    if (took == NULL)
        die("calloc");
    if ((f = fopen(opt.file, "rb")) == NULL || fstat(fileno(f), &st) < 0)
        die(opt.file);
    if ((data = malloc((size_t)st.st_size + 1)) == NULL ||
        fread(data, 1, (size_t)st.st_size, f) != (size_t)st.st_size)
        die(opt.file);
    fclose(f);
    dl.data = data;
    dl.size = (size_t)st.st_size;
    on_answer = answer_block;
    printf("mode=dl szx=%u bytes=%zu", opt.szx, dl.size);
    if (!up) {
        printf(" downloads=0");
        print_tally();
        return 1;
    }
    /* a warm-up download, which also says whether BERT is there */
    dl_once(c);
    if (dl.bert_no) {
        printf(" bert=unsupported why=\"%s\"", dl.why);
        print_tally();
        conns_close(cs, 1);
        return status();
    }
    dl.max_block = 0;
    a = mark_now(opt.pid);
    for (unsigned long i = 0; i < opt.n && c->state == OPEN; i++) {
        double t = dl_once(c);

        if (t < 0)
            break;
        took[ok++] = t;
    }
    b = mark_now(opt.pid);
    max_block = dl.max_block;
    qsort(took, ok, sizeof *took, by_double);
    printf(" downloads=%lu blocks=%u", ok, dl.blocks);
    if (ok) {
        printf(" min_ms=%.2f median_ms=%.2f max_ms=%.2f max_block_us=%.0f server_us=",
               took[0] * 1e3, took[ok / 2] * 1e3, took[ok - 1] * 1e3, max_block * 1e6);
        if (a.server_ms >= 0)
            printf("%.0f", (b.server_ms - a.server_ms) * 1e3 / ok);
        else
            printf("-");
        printf(" client_us=%.0f MBps=%.1f", (b.client_ms - a.client_ms) * 1e3 / ok,
               dl.size / took[ok / 2] / 1e6);
        print_elsewhere("", &a, &b);
        if (opt.szx == 7)
            printf(" bert=yes");
    }
    tally.ok = ok;
    print_tally();
    conns_close(cs, 1);
    free(data);
    free(took);
    return status() || ok < opt.n;
}

_Noreturn static void
usage(void)
{
    fprintf(stderr, "usage: tcp-bench -p PORT [-a ADDR] [-u PATH] [-e TEXT] [-f FILE] [-b SZX]"
                    " [-d S] [-W S] [-N N] [-s PID] [-c N] [-w N] [-n N] [-P N] [-M BYTES]"
                    " req|idle|dl\n");
    exit(2);
}

static void
options(int argc, char **argv)
{
    int o;

    while ((o = getopt(argc, argv, "a:p:u:e:f:b:d:W:N:s:c:w:n:P:M:")) != -1) {
        switch (o) {
        case 'a':
            opt.addr = optarg;
            break;
        case 'p':
            opt.port = (unsigned)atoi(optarg);
            break;
        case 'u':
            opt.path = optarg;
            break;
        case 'e':
            opt.payload = optarg;
            break;
        case 'f':
            opt.file = optarg;
            break;
        case 'b':
            opt.szx = (unsigned)atoi(optarg);
            break;
        case 'd':
            opt.secs = atof(optarg);
            break;
        case 'W':
            opt.warmup = atof(optarg);
            break;
        case 'N':
            opt.rounds = (unsigned)atoi(optarg);
            break;
        case 's':
            opt.pid = optarg;
            break;
        case 'c':
            opt.conns = (unsigned)atoi(optarg);
            break;
        case 'w':
            opt.window = (unsigned)atoi(optarg);
            break;
        case 'n':
            opt.n = strtoul(optarg, NULL, 10);
            break;
        case 'P':
            opt.parallel = (unsigned)atoi(optarg);
            break;
        case 'M':
            opt.mms = strtoul(optarg, NULL, 10);
            break;
        default:
            usage();
        }
    }
    if (optind + 1 != argc || !opt.port || opt.port > 65535 || !opt.conns || opt.conns > 10000 ||
        !opt.window || opt.window > MAX_WINDOW || !opt.rounds || opt.secs <= 0 || opt.warmup < 0 ||
        !opt.parallel || opt.szx < 6 || opt.szx > 7 || opt.mms < 1152 || opt.mms > (1u << 24))
        usage();
}

static void
setup(const char *mode)
{
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&server;
    struct sockaddr_in *s4 = (struct sockaddr_in *)&server;
    struct rlimit rl;
    unsigned long fds;

    if (inet_pton(AF_INET6, opt.addr, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)opt.port);
        server_len = sizeof *s6;
    } else if (inet_pton(AF_INET, opt.addr, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)opt.port);
        server_len = sizeof *s4;
    } else {
        usage();
    }
    if (strcmp(mode, "idle") == 0 && opt.n == 0)
        opt.n = 10000;
    if (strcmp(mode, "dl") == 0) {
        if (opt.n == 0)
            opt.n = 10;
        if (opt.file == NULL)
            usage();
    }
    /* as many descriptors as the hard limit allows; the connections need them */
    fds = (strcmp(mode, "idle") == 0 ? opt.n : opt.conns) + 32;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < fds) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < fds) {
            fprintf(stderr, "tcp-bench: %lu connections need %lu descriptors, the limit is %lu\n",
                    fds - 32, fds, (unsigned long)rl.rlim_cur);
            exit(2);
        }
    }
    for (nslots = 1; nslots < opt.window; nslots *= 2)
        ;
    uri_encode(opt.path);
    plen = strlen(opt.payload);
    rxcap = 2 * opt.mms + 65536;
    if ((rx = malloc(rxcap)) == NULL)
        die("malloc");
    if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0)
        die("epoll_create1");
}

int
main(int argc, char **argv)
{
    const char *mode;

    options(argc, argv);
    mode = argv[optind];
    setup(mode);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (strcmp(mode, "req") == 0)
        return mode_req();
    if (strcmp(mode, "idle") == 0)
        return mode_idle();
    if (strcmp(mode, "dl") == 0)
        return mode_dl();
    usage();
}
