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
 *   tcp-bench [options] scrape  -n N (50) HTTP/1.1 GETs of /PATH one after the other, each
 *                             on a new connection read until the server closes it: the time
 *                             of each, and whether the body is Prometheus text (see below)
 *
 *   -t tcp|ws    the transport of req, idle and dl: coap+tcp (RFC 8323 §3, the default) or
 *                coap+ws (§4: a WebSocket at /.well-known/coap, see below)
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
 * With -t ws, each connection first sends the HTTP/1.1 upgrade (RFC 6455 §4.1: GET
 * /.well-known/coap, a random Sec-WebSocket-Key, version 13, the subprotocol "coap") and
 * wants 101 with the Sec-WebSocket-Accept of its key (SHA-1 and base64, here) and "coap"
 * back; a refusal is an error. Then every CoAP message is one binary frame in §4.4's format
 * (the TCP header without its length: Len 0), ours masked with a fresh key each (§5.3),
 * and a burst still goes in one send(). The server's frames must be unmasked; fragmented
 * messages are put together, its Pings get a Pong (ws_pings=), its Close ends the
 * connection (closed=), a text frame or a Len other than 0 is an error.
 *
 * scrape checks that each answer is 200 with a body of the length announced
 * (Content-Length or chunked) and that the body reads as Prometheus text (0.0.4): every
 * line a comment, "# TYPE NAME counter|gauge|histogram|summary|untyped", or a sample
 * "NAME[{LABELS}] VALUE [TIMESTAMP]", the last one ended; with at least one "# TYPE" and one
 * moonlet_ sample. It stops at the first answer that is not 200 (code= says which).
 *
 * Prints one line of NAME=VALUE on stdout. Exit status 0; 1 with invalid answers, lost
 * ones or closed connections (scrape: a failed scrape); 2 for bad usage or setup.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

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
/* WebSocket (RFC 6455 §5.2) */
#define WS_CONT 0x0
#define WS_TEXT 0x1
#define WS_BINARY 0x2
#define WS_CLOSE 0x8
#define WS_PING 0x9
#define WS_PONG 0xA
#define WS_HEAD_MAX 8192 /* an upgrade answer's head longer than this: refused */
#define WS_PATH "/.well-known/coap"
#define SCRAPE_LIMIT 10.0 /* s for one scrape, connect to the server's close */
#define SCRAPE_MAX (256u << 20) /* bytes of one answer, at most */

enum { CONNECTING, UPGRADING, CSM_WAIT, OPEN, DEAD };

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
    /* -t ws */
    uint8_t *frag; /* a fragmented message so far */
    size_t fraglen, fragcap;
    uint8_t infrag;
    char accept[32]; /* the Sec-WebSocket-Accept expected */
};

static struct tally {
    unsigned long ok, errors, lost, late, closed, pongs, sent, ws_pings, ws_fragmented;
} tally;

static struct {
    const char *addr, *path, *payload, *file, *pid;
    int ws; /* -t ws */
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

/* ---- WebSocket (RFC 6455, RFC 8323 §4) */

static uint64_t rng; /* xorshift64*, seeded by getrandom() */

static uint32_t
rnd32(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (uint32_t)((rng * 0x2545F4914F6CDD1DULL) >> 32);
}

/* base64 (RFC 4648 §4) of n bytes into out (4 * ceil(n / 3) + 1 bytes), by GnuTLS */
static void
base64(const uint8_t *in, size_t n, char *out)
{
    gnutls_datum_t d = {(unsigned char *)in, (unsigned)n}, b = {0};

    if (gnutls_base64_encode2(&d, &b) < 0)
        die("base64");
    memcpy(out, b.data, b.size);
    out[b.size] = 0;
    gnutls_free(b.data);
}

/* a client frame's header (FIN, opcode, MASK and the length, RFC 6455 §5.2) and a fresh
 * masking key into h: its length (6, 8 or 14) */
static size_t
ws_head(uint8_t *h, unsigned op, size_t len)
{
    size_t n = 2;
    uint32_t key = rnd32();

    h[0] = (uint8_t)(0x80 | op);
    if (len < 126) {
        h[1] = (uint8_t)(0x80 | len);
    } else if (len < 65536) {
        h[1] = 0x80 | 126;
        h[2] = (uint8_t)(len >> 8);
        h[3] = (uint8_t)len;
        n = 4;
    } else {
        h[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
        n = 10;
    }
    memcpy(h + n, &key, 4);
    return n + 4;
}

/* the client frame at m, total bytes with its header, masked (§5.3) */
static void
ws_mask(uint8_t *m, size_t total)
{
    size_t kl = (m[1] & 127) == 126 ? 4 : (m[1] & 127) == 127 ? 10 : 2;
    const uint8_t *key = m + kl;

    for (size_t i = 0, at = kl + 4; at < total; i++, at++)
        m[at] ^= key[i & 3];
}

/* A message's header into h, for a body (options and payload) of `body` bytes after a
 * token of tkl bytes: over TCP §3.2's (Len/TKL, the extended length, Code); over a
 * WebSocket a binary frame's header and masking key, then §4.4's (Len 0 and TKL, Code).
 * Its length; msg_seal when the message is whole. */
static size_t
msg_head(uint8_t *h, size_t body, unsigned tkl, unsigned code)
{
    size_t n;

    if (!opt.ws)
        return frame_head(h, body, tkl, code);
    n = ws_head(h, WS_BINARY, 2 + tkl + body);
    h[n++] = (uint8_t)tkl;
    h[n++] = (uint8_t)code;
    return n;
}

/* the message at m (total bytes) ready to go: masked over a WebSocket */
static inline void
msg_seal(uint8_t *m, size_t total)
{
    if (opt.ws)
        ws_mask(m, total);
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
    free(c->frag);
    c->frag = NULL;
    c->fraglen = c->fragcap = 0;
    c->infrag = 0;
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
    uint8_t m[32], v[4];
    size_t vl = 0, n, hl, body;
    uint32_t mms = (uint32_t)opt.mms;

    while (mms >> (8 * vl) && vl < 4)
        vl++;
    for (size_t i = 0; i < vl; i++)
        v[i] = (uint8_t)(mms >> (8 * (vl - 1 - i)));
    body = 1 + vl + 1;
    hl = msg_head(m, body, 0, CSM);
    n = hl;
    m[n++] = (uint8_t)(CSM_MMS << 4 | vl);
    memcpy(m + n, v, vl);
    n += vl;
    m[n++] = (uint8_t)((CSM_BWT - CSM_MMS) << 4);
    msg_seal(m, n);
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
    hl = msg_head(b, bl, 4, GET);
    memcpy(b + hl, &token, 4);
    memcpy(b + hl + 4, body, bl);
    msg_seal(b, hl + 4 + bl);
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
    uint8_t m[32];
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
        hl = msg_head(m, 0, f->tkl, PONG);
        memcpy(m + hl, f->token, f->tkl);
        msg_seal(m, hl + f->tkl);
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

/* ---- WebSocket: the upgrade and the frames */

/* the upgrade request (RFC 6455 §4.1), with a fresh key; the accept value it wants kept */
static void
ws_upgrade(struct conn *c)
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    uint8_t raw[16], digest[20], cat[64];
    char key[32], req[512];
    int n;

    for (int i = 0; i < 16; i += 4) {
        uint32_t r = rnd32();

        memcpy(raw + i, &r, 4);
    }
    base64(raw, 16, key);
    memcpy(cat, key, 24);
    memcpy(cat + 24, guid, 36);
    if (gnutls_hash_fast(GNUTLS_DIG_SHA1, cat, 60, digest) < 0)
        die("sha1");
    base64(digest, 20, c->accept);
    n = snprintf(req, sizeof req,
                 "GET " WS_PATH " HTTP/1.1\r\nHost: %s%s%s:%u\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                 "Sec-WebSocket-Protocol: coap\r\n\r\n",
                 server.ss_family == AF_INET6 ? "[" : "", opt.addr,
                 server.ss_family == AF_INET6 ? "]" : "", opt.port, key);
    conn_write(c, (const uint8_t *)req, (size_t)n);
}

/* Does the header line at p (n bytes, "Name: value") have this name? Its value then,
 * without the white space around it, in *v and *vl. */
static int
header_is(const char *p, size_t n, const char *name, const char **v, size_t *vl)
{
    size_t k = strlen(name);

    if (n <= k || strncasecmp(p, name, k) != 0 || p[k] != ':')
        return 0;
    p += k + 1, n -= k + 1;
    while (n && (*p == ' ' || *p == '\t'))
        p++, n--;
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    *v = p;
    *vl = n;
    return 1;
}

/* does the comma-separated list v (vl bytes) hold token, case-insensitively? */
static int
list_has(const char *v, size_t vl, const char *token)
{
    size_t k = strlen(token);

    while (vl) {
        size_t l = 0, e;

        while (vl && (*v == ' ' || *v == '\t' || *v == ','))
            v++, vl--;
        while (l < vl && v[l] != ',')
            l++;
        for (e = l; e && (v[e - 1] == ' ' || v[e - 1] == '\t'); e--)
            ;
        if (e == k && strncasecmp(v, token, k) == 0)
            return 1;
        v += l, vl -= l;
    }
    return 0;
}

/* The answer to the upgrade in rx (have bytes): 0 while its head is not whole (or it was
 * refused: c is DEAD then), else the head's length; c then sends its CSM. */
static size_t
ws_upgraded(struct conn *c, size_t have)
{
    const char *h = (const char *)rx, *end = memmem(rx, have, "\r\n\r\n", 4), *p, *v;
    size_t vl, status_len;
    int accept = 0, proto = 0, upgrade = 0, connection = 0;

    if (end == NULL) {
        if (have > WS_HEAD_MAX) {
            tally.errors++;
            conn_end(c, 1, "an upgrade answer with a head over 8 KiB");
        }
        return 0;
    }
    status_len = strcspn(h, "\r");
    for (p = h + status_len + 2; p < end + 2;) {
        size_t l = (size_t)((const char *)memmem(p, (size_t)(end + 2 - p), "\r\n", 2) - p);

        if (header_is(p, l, "Sec-WebSocket-Accept", &v, &vl))
            accept = vl == strlen(c->accept) && memcmp(v, c->accept, vl) == 0;
        else if (header_is(p, l, "Sec-WebSocket-Protocol", &v, &vl))
            proto = vl == 4 && strncasecmp(v, "coap", 4) == 0;
        else if (header_is(p, l, "Upgrade", &v, &vl))
            upgrade = list_has(v, vl, "websocket");
        else if (header_is(p, l, "Connection", &v, &vl))
            connection = list_has(v, vl, "upgrade");
        p += l + 2;
    }
    if (status_len < 12 || memcmp(h, "HTTP/1.1 101", 12) != 0 || !accept || !proto || !upgrade ||
        !connection) {
        tally.errors++;
        complain("upgrade refused: '%.*s'%s%s%s%s", (int)(status_len < 80 ? status_len : 80), h,
                 accept ? "" : ", no or a wrong Sec-WebSocket-Accept",
                 proto ? "" : ", no Sec-WebSocket-Protocol: coap",
                 upgrade ? "" : ", no Upgrade: websocket",
                 connection ? "" : ", no Connection: Upgrade");
        conn_end(c, 0, NULL);
        return 0;
    }
    c->state = CSM_WAIT;
    send_csm(c);
    return (size_t)(end + 4 - h);
}

/* a control frame (a Pong, a Close) to the server, masked */
static void
ws_control(struct conn *c, unsigned op, const uint8_t *p, size_t len)
{
    uint8_t m[14 + 125];
    size_t hl = ws_head(m, op, len);

    memcpy(m + hl, p, len);
    ws_mask(m, hl + len);
    conn_write(c, m, hl + len);
}

/* one CoAP message in §4.4's format (a binary message's payload) */
static void
ws_message(struct conn *c, const uint8_t *p, size_t len, double t)
{
    if (len < 2 || (p[0] >> 4) != 0 || (p[0] & 15) > 8 || len < 2u + (p[0] & 15)) {
        tally.errors++;
        complain("a binary message that is not CoAP over WebSockets (%zu bytes, first %02x)",
                 len, len ? p[0] : 0);
        return;
    }
    frame_in(c, p, len, 2, t);
}

/* one whole WebSocket frame from the server */
static void
ws_frame(struct conn *c, unsigned fin, unsigned op, const uint8_t *p, size_t len, double t)
{
    char why[160];
    size_t n;

    switch (op) {
    case WS_BINARY:
    case WS_CONT:
        if ((op == WS_BINARY) == c->infrag) {
            tally.errors++;
            conn_end(c, 1, op == WS_CONT ? "a continuation frame with no message to continue"
                                         : "a new message inside a fragmented one");
            return;
        }
        if (fin && !c->infrag) { /* the usual case: no copy */
            ws_message(c, p, len, t);
            return;
        }
        if (c->fraglen + len > opt.mms + 16) {
            tally.errors++;
            conn_end(c, 1, "a fragmented message over our Max-Message-Size");
            return;
        }
        if (c->fraglen + len > c->fragcap) {
            c->fragcap = c->fraglen + len;
            if ((c->frag = realloc(c->frag, c->fragcap)) == NULL)
                die("realloc");
        }
        memcpy(c->frag + c->fraglen, p, len);
        c->fraglen += len;
        c->infrag = !fin;
        if (fin) {
            n = c->fraglen;
            c->fraglen = 0;
            tally.ws_fragmented++;
            ws_message(c, c->frag, n, t);
        }
        return;
    case WS_PING:
        tally.ws_pings++;
        ws_control(c, WS_PONG, p, len);
        return;
    case WS_PONG:
        return;
    case WS_CLOSE:
        snprintf(why, sizeof why, "WebSocket Close %u '%.*s'",
                 len >= 2 ? (unsigned)(p[0] << 8 | p[1]) : 1005,
                 (int)(len > 2 ? (len - 2 < 80 ? len - 2 : 80) : 0), (const char *)p + 2);
        conn_end(c, 1, why);
        return;
    default:
        tally.errors++;
        snprintf(why, sizeof why, "a WebSocket frame with opcode %u%s", op,
                 op == WS_TEXT ? " (text)" : "");
        conn_end(c, 1, why);
    }
}

/* What rx holds (have bytes) over a WebSocket: the upgrade's answer, then whole frames
 * handled; the bytes taken (the rest is a cut frame). */
static size_t
ws_in(struct conn *c, size_t have, double t)
{
    size_t at = 0;

    if (c->state == UPGRADING && (at = ws_upgraded(c, have)) == 0)
        return 0;
    while (at < have && c->state != DEAD) {
        const uint8_t *p = rx + at;
        size_t avail = have - at, hl = 2;
        uint64_t len;
        unsigned fin, op;

        if (avail < 2)
            break;
        len = p[1] & 127;
        fin = p[0] >> 7;
        op = p[0] & 15;
        if (p[0] & 0x70 || p[1] & 0x80) {
            tally.errors++;
            conn_end(c, 1, p[1] & 0x80 ? "a masked frame from the server" : "RSV bits set");
            break;
        }
        if (len == 126) {
            hl = 4;
            if (avail < hl)
                break;
            len = (uint64_t)p[2] << 8 | p[3];
        } else if (len == 127) {
            hl = 10;
            if (avail < hl)
                break;
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | p[2 + i];
        }
        if (op >= 8 && (!fin || len > 125)) {
            tally.errors++;
            conn_end(c, 1, "a fragmented or long control frame");
            break;
        }
        if (len > rxcap / 2) {
            tally.errors++;
            conn_end(c, 1, "a frame far over our Max-Message-Size");
            break;
        }
        if (avail - hl < len)
            break;
        ws_frame(c, fin, op, p + hl, (size_t)len, t);
        at += hl + (size_t)len;
    }
    return at;
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
    if (opt.ws)
        at = ws_in(c, have, t);
    else
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
        watch(c, EPOLLIN);
        if (opt.ws) {
            c->state = UPGRADING;
            ws_upgrade(c);
        } else {
            c->state = CSM_WAIT;
            send_csm(c);
        }
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
           " pongs=%lu",
           server_mms, server_bwt, tally.sent, tally.ok, tally.errors, tally.lost, tally.late,
           tally.closed, tally.pongs);
    if (opt.ws)
        printf(" transport=ws ws_pings=%lu ws_fragmented=%lu", tally.ws_pings, tally.ws_fragmented);
    printf("\n");
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

/* ---- scrape: HTTP/1.1 GETs, a connection each */

/* a connection to the server by `until`: its descriptor (non-blocking), -1 and errno */
static int
http_connect(double until)
{
    int fd = socket(server.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), err = 0;
    socklen_t el = sizeof err;
    struct pollfd pf;

    if (fd < 0)
        die("socket");
    if (connect(fd, (struct sockaddr *)&server, server_len) == 0)
        return fd;
    if (errno != EINPROGRESS)
        goto fail;
    pf = (struct pollfd){fd, POLLOUT, 0};
    if (poll(&pf, 1, (int)((until - now()) * 1e3) + 1) <= 0) {
        errno = ETIMEDOUT;
        goto fail;
    }
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err == 0)
        return fd;
    errno = err;
fail:
    err = errno;
    close(fd);
    errno = err;
    return -1;
}

/* One GET: the whole answer, to the server's close, in *buf (*len bytes, *cap held), its
 * time in *took. 0, or -1 and why. */
static int
scrape_once(char **buf, size_t *len, size_t *cap, double *took, char *why, size_t wl)
{
    double t0 = now(), until = t0 + SCRAPE_LIMIT, t;
    char req[512];
    int fd, one = 1;
    size_t n, off = 0;

    n = (size_t)snprintf(req, sizeof req, "GET /%s HTTP/1.1\r\nHost: %s%s%s:%u\r\n"
                         "Accept: text/plain\r\nUser-Agent: tcp-bench\r\n\r\n", opt.path,
                         server.ss_family == AF_INET6 ? "[" : "", opt.addr,
                         server.ss_family == AF_INET6 ? "]" : "", opt.port);
    if ((fd = http_connect(until)) < 0) {
        snprintf(why, wl, "connect: %s", strerror(errno));
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    *len = 0;
    while ((t = now()) < until) {
        struct pollfd pf = {fd, (short)(off < n ? POLLOUT | POLLIN : POLLIN), 0};
        ssize_t k;

        if (poll(&pf, 1, (int)((until - t) * 1e3) + 1) <= 0)
            continue;
        if (off < n && pf.revents & POLLOUT) {
            k = send(fd, req + off, n - off, MSG_NOSIGNAL);
            if (k < 0 && errno != EAGAIN && errno != EINTR) {
                snprintf(why, wl, "send: %s", strerror(errno));
                close(fd);
                return -1;
            }
            off += k > 0 ? (size_t)k : 0;
        }
        if (!(pf.revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        if (*cap - *len < 65536) {
            *cap = *cap ? 2 * *cap : 1u << 20;
            if (*cap > SCRAPE_MAX + 65536u) {
                snprintf(why, wl, "an answer over %u MiB", SCRAPE_MAX >> 20);
                close(fd);
                return -1;
            }
            if ((*buf = realloc(*buf, *cap)) == NULL)
                die("realloc");
        }
        k = recv(fd, *buf + *len, *cap - *len - 1, 0);
        if (k == 0) { /* the server's close: the answer is whole */
            *took = now() - t0;
            (*buf)[*len] = 0;
            close(fd);
            return 0;
        }
        if (k < 0 && errno != EAGAIN && errno != EINTR) {
            snprintf(why, wl, "recv after %zu bytes: %s", *len, strerror(errno));
            close(fd);
            return -1;
        }
        *len += k > 0 ? (size_t)k : 0;
    }
    snprintf(why, wl, "no close within %.0f s (%zu bytes came)", SCRAPE_LIMIT, *len);
    close(fd);
    return -1;
}

/* an HTTP/1.1 answer, parsed */
struct http_answer {
    int code;
    char *body; /* in the buffer (chunks joined in place) */
    size_t body_len;
    char ctype[96]; /* Content-Type, its spaces left out */
};

/* the answer in b (n bytes, NUL after them): 0, or -1 and why */
static int
http_parse(char *b, size_t n, struct http_answer *a, char *why, size_t wl)
{
    char *end = memmem(b, n, "\r\n\r\n", 4), *p, *v;
    long clen = -1;
    int chunked = 0;

    a->ctype[0] = 0;
    if (end == NULL || sscanf(b, "HTTP/1.%*1[01] %3d", &a->code) != 1) {
        snprintf(why, wl, "not an HTTP/1.1 answer: '%.40s'", b);
        return -1;
    }
    for (p = strstr(b, "\r\n") + 2; p < end + 2; p = strstr(p, "\r\n") + 2) {
        size_t l = strcspn(p, "\r"), vl;

        if (header_is(p, l, "Content-Length", (const char **)&v, &vl))
            clen = strtol(v, NULL, 10);
        else if (header_is(p, l, "Transfer-Encoding", (const char **)&v, &vl))
            chunked = list_has(v, vl, "chunked");
        else if (header_is(p, l, "Content-Type", (const char **)&v, &vl)) {
            size_t k = 0;

            for (size_t i = 0; i < vl && k + 1 < sizeof a->ctype; i++)
                if (v[i] != ' ' && v[i] != '"')
                    a->ctype[k++] = v[i];
            a->ctype[k] = 0;
        }
    }
    a->body = end + 4;
    a->body_len = n - (size_t)(a->body - b);
    if (chunked) { /* RFC 9112 §7.1, joined in place */
        char *in = a->body, *out = a->body, *stop = b + n;

        for (;;) {
            char *e;
            unsigned long sz = strtoul(in, &e, 16);

            if (e == in || (e = strstr(e, "\r\n")) == NULL) {
                snprintf(why, wl, "a malformed chunk at body byte %zu", (size_t)(in - a->body));
                return -1;
            }
            in = e + 2;
            if (sz == 0)
                break;
            if (sz > (size_t)(stop - in) || (size_t)(stop - in) - sz < 2 || memcmp(in + sz, "\r\n", 2)) {
                snprintf(why, wl, "a chunk of %lu bytes cut short", sz);
                return -1;
            }
            memmove(out, in, sz);
            out += sz;
            in += sz + 2;
        }
        a->body_len = (size_t)(out - a->body);
        *out = 0;
    } else if (clen >= 0 && (size_t)clen != a->body_len) {
        snprintf(why, wl, "Content-Length %ld, %zu bytes came", clen, a->body_len);
        return -1;
    }
    return 0;
}

/* what a scrape holds: "# TYPE" lines and moonlet_ samples (promtool checks the format
 * itself in the tests: test_metrics.py) */
struct prom {
    unsigned types, samples, moonlet_samples, lines, bad;
    char first_bad[100];
};

static void
prom_check(const char *b, size_t n, struct prom *r)
{
    const char *p = b, *end = b + n;

    *r = (struct prom){0};
    while (p < end) {
        const char *e = memchr(p, '\n', (size_t)(end - p));

        if (e == NULL) {
            if (r->bad++ == 0)
                snprintf(r->first_bad, sizeof r->first_bad, "(the last line is not ended)");
            break;
        }
        r->lines++;
        if (e - p > 7 && memcmp(p, "# TYPE ", 7) == 0)
            r->types++;
        else if (*p != '#' && e > p) {
            r->samples++;
            r->moonlet_samples += e - p > 8 && memcmp(p, "moonlet_", 8) == 0;
            if (memchr(p, ' ', (size_t)(e - p)) == NULL && r->bad++ == 0)
                snprintf(r->first_bad, sizeof r->first_bad, "%.*s",
                         (int)(e - p < 80 ? e - p : 80), p);
        }
        p = e + 1;
    }
}

/* -n GETs of /PATH, one after the other, each on a connection of its own */
static int
mode_scrape(void)
{
    unsigned long n = opt.n, done = 0;
    double *took = calloc(n, sizeof *took), first = 0;
    char *buf = NULL, why[240] = "";
    size_t cap = 0, len = 0, body_min = 0, body_max = 0;
    struct http_answer a = {0};
    struct prom pr = {0}, pr0 = {0};
    struct mark m0, m1;
    int code = 0;

    if (took == NULL)
        die("calloc");
    m0 = mark_now(opt.pid);
    for (unsigned long i = 0; i < n; i++) {
        if (scrape_once(&buf, &len, &cap, &took[done], why, sizeof why) < 0 ||
            http_parse(buf, len, &a, why, sizeof why) < 0)
            break;
        code = a.code;
        if (a.code != 200) {
            snprintf(why, sizeof why, "answered %d: '%.*s'", a.code,
                     (int)strcspn(a.body, "\r\n") < 100 ? (int)strcspn(a.body, "\r\n") : 100, a.body);
            break;
        }
        prom_check(a.body, a.body_len, &pr);
        if (pr.bad || pr.types == 0 || pr.moonlet_samples == 0) {
            snprintf(why, sizeof why, "not Prometheus text: %u of %u lines do not read as it (first:"
                     " '%s'), %u # TYPE lines, %u moonlet_ samples", pr.bad, pr.lines, pr.first_bad,
                     pr.types, pr.moonlet_samples);
            break;
        }
        if (done == 0) {
            pr0 = pr;
            first = took[0];
            body_min = body_max = a.body_len;
        }
        body_min = a.body_len < body_min ? a.body_len : body_min;
        body_max = a.body_len > body_max ? a.body_len : body_max;
        done++;
    }
    m1 = mark_now(opt.pid);
    qsort(took, done, sizeof *took, by_double);
    printf("mode=scrape path=/%s n=%lu done=%lu code=%d", opt.path, n, done, code);
    if (done) {
        printf(" first_ms=%.2f min_ms=%.2f p50_ms=%.2f max_ms=%.2f body_bytes=%zu body_max=%zu"
               " lines=%u types=%u samples=%u moonlet_samples=%u server_us=", first * 1e3,
               took[0] * 1e3, took[done / 2] * 1e3, took[done - 1] * 1e3, body_min, body_max,
               pr0.lines, pr0.types, pr0.samples, pr0.moonlet_samples);
        if (m0.server_ms >= 0 && m1.server_ms >= 0)
            printf("%.0f", (m1.server_ms - m0.server_ms) * 1e3 / done);
        else
            printf("-");
        printf(" client_us=%.0f content_type=%s", (m1.client_ms - m0.client_ms) * 1e3 / done,
               a.ctype[0] ? a.ctype : "-");
    }
    printf("\n");
    if (why[0])
        fprintf(stderr, "tcp-bench: scrape %lu: %s\n", done + 1, why);
    free(buf);
    free(took);
    return done < n;
}

_Noreturn static void
usage(void)
{
    fprintf(stderr, "usage: tcp-bench -p PORT [-a ADDR] [-u PATH] [-e TEXT] [-f FILE] [-b SZX]"
                    " [-d S] [-W S] [-N N] [-s PID] [-c N] [-w N] [-n N] [-P N] [-M BYTES]"
                    " [-t tcp|ws] req|idle|dl|scrape\n");
    exit(2);
}

static void
options(int argc, char **argv)
{
    int o;

    while ((o = getopt(argc, argv, "a:p:u:e:f:b:d:W:N:s:c:w:n:P:M:t:")) != -1) {
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
        case 't':
            if (strcmp(optarg, "ws") != 0 && strcmp(optarg, "tcp") != 0)
                usage();
            opt.ws = strcmp(optarg, "ws") == 0;
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
    if (strcmp(mode, "scrape") == 0 && opt.n == 0)
        opt.n = 50;
    if (getrandom(&rng, sizeof rng, 0) != sizeof rng || rng == 0)
        rng = (uint64_t)now() * 0x9E3779B97F4A7C15ULL | 1;
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
    if (strcmp(mode, "scrape") == 0)
        return mode_scrape();
    usage();
}
