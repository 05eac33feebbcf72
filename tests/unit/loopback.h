/*
 * loopback.h -- a whole server in-process, for the state machines' unit tests and the
 * stateful fuzz target: a transport that captures what the server sends instead of using a
 * socket, eight peers that feed it datagrams, a virtual clock (CLOCK_MONOTONIC and
 * gettimeofday are interposed while a test runs, so libev's timers fire when the test
 * advances time: deterministic and fast), and resources that drive every path:
 *
 *   /s  GET "ok" (small)             /b  GET 3000 bytes (block-wise)
 *   /u  PUT/POST a body: 2.04 "n=LEN"  /o  observable; POST changes it (autonotify)
 *   /d  GET deferred: the test answers it with lo_answer
 *   /f  observable; GET "f=N" in Content-Format lo->f_ct (3000 bytes when lo->f_big; a
 *       bare 2.03 when lo->f_valid); PUT sets N and the format from the request's
 *       (autonotify); a test may change lo->f_ct without notifying
 *   /c  observable, every notification a CON (notify_con); GET "c=N" with /o's value
 *
 * Include it in exactly one .c file of a program (it defines clock_gettime).
 */
#ifndef LOOPBACK_H
#define LOOPBACK_H

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "block.h"
#include "exchange.h"
#include "layer.h"
#include "observe.h"
#include "server.h"
#include "session.h"
#include "tree.h"

#define LO_PEERS 8
#define LO_QUEUE 512
#define LO_PENDINGS 8

/* ---- the virtual clock ------------------------------------------------------------------ */

static __thread int lo_virtual;         /* this thread reads the virtual clock */
static int64_t lo_ns = 1000000000LL;    /* nanoseconds since an arbitrary start */

/* libev reads CLOCK_MONOTONIC for its timers and gettimeofday for the wall clock; both
 * are virtual while a test runs. CLOCK_REALTIME stays real: libFuzzer's timeout alarm reads
 * it, on this very thread, in the middle of an input. */
int
clock_gettime(clockid_t id, struct timespec *ts)
{
    if (!lo_virtual || id != CLOCK_MONOTONIC)
        return (int)syscall(SYS_clock_gettime, id, ts);
    ts->tv_sec = lo_ns / 1000000000LL;
    ts->tv_nsec = lo_ns % 1000000000LL;
    return 0;
}

int
gettimeofday(struct timeval *tv, void *tz)
{
    struct timespec ts;
    int64_t ns = lo_ns + 1700000000LL * 1000000000LL;

    (void)tz;
    if (!lo_virtual) {
        syscall(SYS_clock_gettime, CLOCK_REALTIME, &ts);
        ns = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    }
    tv->tv_sec = ns / 1000000000LL;
    tv->tv_usec = ns % 1000000000LL / 1000;
    return 0;
}

/* ---- the server and its captured output ------------------------------------------------- */

struct lo_dgram {
    unsigned peer;
    size_t len;
    uint8_t buf[2048];
};

struct lo {
    struct server srv;
    struct endpoint *ep;
    struct peer peers[LO_PEERS];
    struct lo_dgram *q;                 /* captured datagrams, oldest first */
    unsigned nq;
    uint64_t rx[LO_PEERS], tx[LO_PEERS];    /* bytes to / from each peer, with headers */
    moonlet_pending *pd[LO_PENDINGS];   /* /d's deferred answers, in order */
    unsigned npd;
    struct unit unit;
    long o_value;
    size_t u_len;
    long f_value;
    int f_ct, f_big, f_valid;
};

static unsigned
lo_peer_of(const struct lo *lo, const struct peer *p)
{
    for (unsigned i = 0; i < LO_PEERS; i++)
        if (peer_equal(&lo->peers[i], p))
            return i;
    return LO_PEERS;
}

static int
lo_send(struct endpoint *ep, const struct peer *to, const uint8_t *buf, size_t len)
{
    struct lo *lo = (struct lo *)(void *)ep->srv;     /* srv is lo's first member */
    struct lo_dgram *d;

    if (lo->nq == LO_QUEUE || len > sizeof d->buf)
        return -1;
    d = &lo->q[lo->nq++];
    d->peer = lo_peer_of(lo, to);
    d->len = len;
    memcpy(d->buf, buf, len);
    if (d->peer < LO_PEERS)
        lo->tx[d->peer] += len + 48;
    return 0;
}

static void
lo_flush(struct endpoint *ep)
{
    (void)ep;
}

static void
lo_close(struct endpoint *ep)
{
    free(ep);
}

static const struct transport lo_transport = {.scheme = "coap", .ml = &udp_layer,
                                              .input = exchange_input,
                                              .send = lo_send, .flush = lo_flush,
                                              .close = lo_close};

/* ---- resources ------------------------------------------------------------------------ */

static int
lo_s_get(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    (void)req, (void)ud;
    return moonlet_resp_payload(resp, "ok", 2);
}

static int
lo_b_get(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    char big[3000];

    (void)req, (void)ud;
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)('a' + i % 26);
    return moonlet_resp_payload(resp, big, sizeof big);
}

static int
lo_u_put(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    struct lo *lo = ud;
    char txt[32];

    moonlet_req_payload(req, &lo->u_len);
    moonlet_resp_code(resp, MOONLET_CHANGED);
    return moonlet_resp_payload(resp, txt, (size_t)snprintf(txt, sizeof txt, "n=%zu",
                                                            lo->u_len));
}

static int
lo_o_get(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    struct lo *lo = ud;
    char txt[32];

    (void)req;
    return moonlet_resp_payload(resp, txt, (size_t)snprintf(txt, sizeof txt, "o=%ld",
                                                            lo->o_value));
}

static int
lo_o_post(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    struct lo *lo = ud;

    (void)req;
    lo->o_value++;
    moonlet_resp_code(resp, MOONLET_CHANGED);
    return MOONLET_OK;
}

static int
lo_f_get(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    struct lo *lo = ud;
    char txt[3000];
    int n = snprintf(txt, sizeof txt, "f=%ld", lo->f_value);

    (void)req;
    if (lo->f_valid) {
        moonlet_resp_code(resp, MOONLET_VALID);
        return MOONLET_OK;
    }
    if (lo->f_big) {
        memset(txt + n, '.', sizeof txt - (size_t)n);
        n = (int)sizeof txt;
    }
    moonlet_resp_ct(resp, lo->f_ct);
    return moonlet_resp_payload(resp, txt, (size_t)n);
}

static int
lo_f_put(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    struct lo *lo = ud;
    size_t len;
    const uint8_t *p = moonlet_req_payload(req, &len);
    char txt[24];

    snprintf(txt, sizeof txt, "%.*s", (int)(len < 23 ? len : 23), (const char *)p);
    lo->f_value = strtol(txt, NULL, 10);
    lo->f_ct = moonlet_req_ct(req);
    moonlet_resp_code(resp, MOONLET_CHANGED);
    return MOONLET_OK;
}

static int
lo_c_get(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    struct lo *lo = ud;
    char txt[32];

    (void)req;
    return moonlet_resp_payload(resp, txt, (size_t)snprintf(txt, sizeof txt, "c=%ld",
                                                            lo->o_value));
}

static int
lo_d_get(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    struct lo *lo = ud;
    moonlet_pending *pd;

    (void)resp;
    if (lo->npd == LO_PENDINGS || (pd = moonlet_defer(req, 0)) == NULL)
        return MOONLET_ENOMEM;
    lo->pd[lo->npd++] = pd;
    return MOONLET_DEFERRED;
}

static int
lo_add(struct lo *lo, const moonlet_resource_def *def)
{
    char err[128];
    struct resource *r = tree_resource_new(def, sizeof *def, lo, &lo->unit, err, sizeof err);

    if (r == NULL || tree_add(lo->srv.tree, r) != MOONLET_OK) {
        fprintf(stderr, "loopback: %s: %s\n", def->path, r ? "exists" : err);
        if (r)
            tree_resource_free(r);
        return -1;
    }
    return 0;
}

/* ---- driving it ------------------------------------------------------------------------- */

/* Run what is due: the loop's prepare work (notifications, flush), expired timers, and
 * the prepare work those timers made (libev runs prepare watchers before timers). */
static void
lo_run(struct lo *lo)
{
    ev_now_update(lo->srv.loop);
    ev_run(lo->srv.loop, EVRUN_NOWAIT);
    ev_run(lo->srv.loop, EVRUN_NOWAIT);
}

static void
lo_advance(struct lo *lo, double seconds)
{
    lo_ns += (int64_t)(seconds * 1e9);
    lo_run(lo);
}

/* A server with the settings "key=value" in opts (NULL-ended); NULL on failure. */
static struct lo *
lo_start(const char *const *opts)
{
    static const moonlet_resource_def defs[] = {
        {.path = "/s", .get = lo_s_get},
        {.path = "/b", .get = lo_b_get},
        {.path = "/u", .put = lo_u_put, .post = lo_u_put},
        {.path = "/o", .obs = 1, .autonotify = 1, .get = lo_o_get, .post = lo_o_post},
        {.path = "/d", .get = lo_d_get},
        {.path = "/f", .obs = 1, .autonotify = 1, .get = lo_f_get, .put = lo_f_put},
        {.path = "/c", .obs = 1, .notify_con = 1, .get = lo_c_get},
    };
    static struct lo_dgram queue[LO_QUEUE];     /* 1 MiB: once, not per server */
    struct lo *lo = calloc(1, sizeof *lo);
    char err[256];

    if (lo == NULL)
        goto fail;
    lo->q = queue;
    lo_virtual = 1;
    server_config_defaults(&lo->srv.cfg);
    for (; opts && *opts; opts++) {
        char key[64];
        const char *eq = strchr(*opts, '=');

        snprintf(key, sizeof key, "%.*s", (int)(eq - *opts), *opts);
        if (server_config_set(&lo->srv.cfg, key, eq + 1, err, sizeof err) < 0) {
            fprintf(stderr, "loopback: %s\n", err);
            goto fail;
        }
    }
    if (server_init(&lo->srv, ev_default_loop(0)) < 0)
        goto fail;
    /* deterministic: MIDs, ping MIDs, hash and Echo keys */
    lo->srv.rng = 0x9E3779B97F4A7C15ULL;
    lo->srv.sessions.key = 42;
    memset(lo->srv.echo_key, 7, sizeof lo->srv.echo_key);
    lo->unit = (struct unit){.rt = &runtime_c, .srv = &lo->srv, .name = "loopback"};
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++)
        if (lo_add(lo, &defs[i]) < 0)
            goto fail;
    if ((lo->ep = calloc(1, sizeof *lo->ep)) == NULL)
        goto fail;
    lo->ep->tp = &lo_transport;
    lo->ep->srv = &lo->srv;
    lo->ep->fd = -1;
    snprintf(lo->ep->name, sizeof lo->ep->name, "loopback");
    lo->srv.endpoints = lo->ep;
    for (unsigned i = 0; i < LO_PEERS; i++) {
        struct sockaddr_in6 *a = &lo->peers[i].u.in6;

        a->sin6_family = AF_INET6;
        inet_pton(AF_INET6, "fd00::1", &a->sin6_addr);
        a->sin6_addr.s6_addr[15] = (uint8_t)(1 + i);
        a->sin6_port = htons((uint16_t)(40000 + i));
        lo->peers[i].len = sizeof *a;
    }
    lo_run(lo);
    return lo;
fail:
    free(lo);
    lo_virtual = 0;
    return NULL;
}

static void
lo_stop(struct lo *lo)
{
    server_fini(&lo->srv);      /* drops the pendings /d still holds */
    lo->npd = 0;
    lo_virtual = 0;
    free(lo);
}

/* Peer p sends buf (to the group when mc), then what is due runs. */
static void
lo_input(struct lo *lo, unsigned p, const uint8_t *buf, size_t len, int mc)
{
    lo->rx[p] += len + 48;
    if (mc)
        exchange_multicast(lo->ep, &lo->peers[p], buf, len);
    else
        exchange_input(lo->ep, &lo->peers[p], buf, len);
    lo_run(lo);
}

/* The oldest captured datagram to peer p (removed), or NULL. */
static const struct lo_dgram *
lo_take(struct lo *lo, unsigned p)
{
    static struct lo_dgram out;

    for (unsigned i = 0; i < lo->nq; i++) {
        if (lo->q[i].peer != p)
            continue;
        out = lo->q[i];
        memmove(&lo->q[i], &lo->q[i + 1], (lo->nq - i - 1) * sizeof *lo->q);
        lo->nq--;
        return &out;
    }
    return NULL;
}

/* Answer /d's i-th deferred request with a 2.05 "late"; the send's result. */
static int
lo_answer(struct lo *lo, unsigned i)
{
    moonlet_pending *pd;
    int rc;

    if (i >= lo->npd)
        return MOONLET_EINVAL;
    pd = lo->pd[i];
    memmove(&lo->pd[i], &lo->pd[i + 1], (lo->npd - i - 1) * sizeof *lo->pd);
    lo->npd--;
    moonlet_resp_payload(moonlet_pending_resp(pd), "late", 4);
    rc = moonlet_pending_send(pd);
    lo_run(lo);
    return rc;
}

/* The server's session of peer p, or NULL. */
static struct session *
lo_session(struct lo *lo, unsigned p)
{
    return session_find(&lo->srv, lo->ep, &lo->peers[p]);
}

/* A request: type, code, MID, token, a path "a/b", options (number, value, length)... */
struct lo_opt {
    unsigned num;
    const void *val;
    size_t len;
};

static size_t
lo_request(uint8_t *buf, size_t cap, unsigned type, unsigned code, uint16_t mid,
           const char *token, const char *path, const struct lo_opt *opts, unsigned nopts,
           const void *payload, size_t plen)
{
    struct lo_opt all[32];
    unsigned n = 0;
    struct msg_wr w;
    const char *s = path;

    while (s && *s) {           /* Uri-Path (11) before anything above it, sorted below */
        const char *e = strchr(s, '/');
        size_t l = e ? (size_t)(e - s) : strlen(s);

        all[n++] = (struct lo_opt){MOONLET_OPT_URI_PATH, s, l};
        s = e ? e + 1 : NULL;
    }
    for (unsigned i = 0; i < nopts && n < 32; i++)
        all[n++] = opts[i];
    for (unsigned i = 1; i < n; i++)        /* stable insertion sort by number */
        for (unsigned j = i; j > 0 && all[j - 1].num > all[j].num; j--) {
            struct lo_opt t = all[j];

            all[j] = all[j - 1];
            all[j - 1] = t;
        }
    msg_wr_init(&w, buf, cap, type, code, mid, (const uint8_t *)token, strlen(token));
    for (unsigned i = 0; i < n; i++)
        msg_wr_opt(&w, all[i].num, all[i].val, all[i].len);
    if (plen)
        msg_wr_payload(&w, payload, plen);
    return (size_t)msg_wr_end(&w);
}

/* Peer p answers a datagram with an Empty ACK or RST of its MID. */
static void
lo_reply_empty(struct lo *lo, unsigned p, const struct lo_dgram *d, unsigned type)
{
    uint8_t b[4] = {(uint8_t)(0x40 | type << 4), 0, d->buf[2], d->buf[3]};

    lo_input(lo, p, b, 4, 0);
}

#endif
