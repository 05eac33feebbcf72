/*
 * server.c -- the server context: configuration, start-up, the loop's housekeeping
 * (send flush before sleeping, session sweep, signals), shutdown.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "answer.h"
#include "block.h"
#include "dtls.h"
#include "exchange.h"
#include "log.h"
#include "observe.h"
#include "plugin.h"
#include "server.h"
#include "stream.h"
#include "tree.h"

enum kind { K_SECONDS, K_FACTOR, K_COUNT, K_BYTES, K_CHOICE, K_TEXT };

/* the words of K_CHOICE settings, by value */
static const char *const verify_words[] = {"off", "auto", "always", NULL};

static const struct key {
    const char *name;
    enum kind kind;
    size_t off;
    double min, max;
} keys[] = {
    {"ack_timeout", K_SECONDS, offsetof(struct server_config, ack_timeout), 0.01, 600},
    {"ack_random_factor", K_FACTOR, offsetof(struct server_config, ack_random_factor), 1, 10},
    {"max_retransmit", K_COUNT, offsetof(struct server_config, max_retransmit), 0, 20},
    {"separate_after", K_SECONDS, offsetof(struct server_config, separate_after), 0, 600},
    {"exchange_lifetime", K_SECONDS, offsetof(struct server_config, exchange_lifetime), 0,
     86400},
    {"non_lifetime", K_SECONDS, offsetof(struct server_config, non_lifetime), 0, 86400},
    {"dedup_per_peer", K_COUNT, offsetof(struct server_config, dedup_per_peer), 1, 65535},
    {"dedup_bytes", K_BYTES, offsetof(struct server_config, dedup_bytes), 0, 1e12},
    {"max_sessions", K_COUNT, offsetof(struct server_config, max_sessions), 1, 1e8},
    {"max_payload", K_BYTES, offsetof(struct server_config, max_payload), 0, 1 << 30},
    {"defer_deadline", K_SECONDS, offsetof(struct server_config, defer_deadline), 0.01, 86400},
    {"udp_rcvbuf", K_BYTES, offsetof(struct server_config, udp_rcvbuf), 0, 1 << 30},
    {"block_size", K_BYTES, offsetof(struct server_config, block_size), 16, 1024},
    {"max_body", K_BYTES, offsetof(struct server_config, max_body), 0, 1 << 30},
    {"block1_bytes", K_BYTES, offsetof(struct server_config, block1_bytes), 0, 1e12},
    {"block2_bytes", K_BYTES, offsetof(struct server_config, block2_bytes), 0, 1e12},
    {"block_idle", K_SECONDS, offsetof(struct server_config, block_idle), 0.01, 86400},
    {"block_per_peer", K_COUNT, offsetof(struct server_config, block_per_peer), 1, 1000},
    {"observe_max", K_COUNT, offsetof(struct server_config, observe_max), 0, 1e8},
    {"observe_per_peer", K_COUNT, offsetof(struct server_config, observe_per_peer), 0, 1e8},
    {"observe_con_every", K_COUNT, offsetof(struct server_config, observe_con_every), 1, 1e6},
    {"multicast_leisure", K_SECONDS, offsetof(struct server_config, multicast_leisure), 0,
     600},
    {"watch", K_COUNT, offsetof(struct server_config, watch), 0, 1},
    {"admin", K_COUNT, offsetof(struct server_config, admin), 0, 1},
    {"observe_con_interval", K_SECONDS, offsetof(struct server_config, observe_con_interval),
     1, 86400},
    {"observe_check", K_SECONDS, offsetof(struct server_config, observe_check), 1, 86400},
    {"probing_rate", K_FACTOR, offsetof(struct server_config, probing_rate), 0.001, 1e9},
    {"verify", K_CHOICE, offsetof(struct server_config, verify), 0, 2},
    {"unverified_sessions", K_COUNT, offsetof(struct server_config, unverified_sessions), 1,
     1e8},
    {"unverified_bytes", K_BYTES, offsetof(struct server_config, unverified_bytes), 0, 1e12},
    {"unverified_pendings", K_COUNT, offsetof(struct server_config, unverified_pendings), 0,
     1e6},
    {"unverified_observers", K_COUNT, offsetof(struct server_config, unverified_observers), 0,
     1e8},
    {"echo_lifetime", K_SECONDS, offsetof(struct server_config, echo_lifetime), 1, 86400},
    {"runtime_resources", K_COUNT, offsetof(struct server_config, runtime_resources), 0, 1e7},
    {"dtls_sessions", K_COUNT, offsetof(struct server_config, dtls_sessions), 1, 1e7},
    {"dtls_handshakes", K_COUNT, offsetof(struct server_config, dtls_handshakes), 1, 1e6},
    {"dtls_handshake_timeout", K_SECONDS, offsetof(struct server_config, dtls_handshake_timeout),
     1, 600},
    {"dtls_handshake_rate", K_FACTOR, offsetof(struct server_config, dtls_handshake_rate), 0.01,
     1e6},
    {"dtls_idle", K_SECONDS, offsetof(struct server_config, dtls_idle), 1, 86400 * 7},
    {"tcp_connections", K_COUNT, offsetof(struct server_config, tcp_connections), 1, 1e7},
    {"tcp_per_address", K_COUNT, offsetof(struct server_config, tcp_per_address), 1, 1e7},
    {"tcp_csm_timeout", K_SECONDS, offsetof(struct server_config, tcp_csm_timeout), 0.01, 600},
    {"tcp_keepalive", K_SECONDS, offsetof(struct server_config, tcp_keepalive), 0, 86400},
    {"tcp_ping_timeout", K_SECONDS, offsetof(struct server_config, tcp_ping_timeout), 0.01,
     600},
    {"tcp_max_message", K_BYTES, offsetof(struct server_config, tcp_max_message), 1152, 65536},
    {"tcp_write_bytes", K_BYTES, offsetof(struct server_config, tcp_write_bytes), 4096,
     1 << 30},
    {"tcp_inflight", K_COUNT, offsetof(struct server_config, tcp_inflight), 1, 1e6},
    {"tls_handshake_timeout", K_SECONDS, offsetof(struct server_config, tls_handshake_timeout),
     0.01, 600},
    {"dtls_ticket_rotate", K_SECONDS, offsetof(struct server_config, dtls_ticket_rotate), 0,
     86400 * 7},
    /* K_TEXT: max is the buffer's size */
    {"ws_origins", K_TEXT, offsetof(struct server_config, ws_origins), 0,
     sizeof ((struct server_config *)0)->ws_origins},
    {"metrics", K_COUNT, offsetof(struct server_config, metrics), 0, 1},
    {"metrics_token", K_TEXT, offsetof(struct server_config, metrics_token), 0,
     sizeof ((struct server_config *)0)->metrics_token},
    {"metrics_address", K_TEXT, offsetof(struct server_config, metrics_address), 0,
     sizeof ((struct server_config *)0)->metrics_address},
    {"metrics_resources", K_COUNT, offsetof(struct server_config, metrics_resources), 0, 1e6},
};

void
server_config_defaults(struct server_config *c)
{
    /* RFC 7252 §4.8 */
    c->ack_timeout = 2.0;
    c->ack_random_factor = 1.5;
    c->max_retransmit = 4;
    c->separate_after = 0.5;
    c->exchange_lifetime = 0;   /* 0: derived (§4.8.2), see server_init */
    c->non_lifetime = 0;
    c->dedup_per_peer = 64;
    c->dedup_bytes = 32u << 20;
    c->max_sessions = 200000;   /* verified peers: 100,000 devices and room to spare */
    c->max_payload = 1u << 20;  /* sent block-wise when over block_size */
    c->defer_deadline = 120;
    c->udp_rcvbuf = 4u << 20;
    c->block_size = 1024;
    c->max_body = 1u << 20;
    c->block1_bytes = 16u << 20;
    c->block2_bytes = 64u << 20;
    c->block_idle = 60;
    c->block_per_peer = 8;
    c->observe_max = 200000;
    c->observe_per_peer = 256;
    c->observe_con_every = 20;
    c->observe_con_interval = 86400;    /* RFC 7641 §4.5: a CON at least every 24 hours */
    c->multicast_leisure = 5;           /* RFC 7252 §8.2: DEFAULT_LEISURE */
    c->observe_check = 300;
    c->probing_rate = 1;                /* RFC 7252 §4.8: PROBING_RATE, 1 byte/s */
    c->verify = VERIFY_AUTO;            /* RFC 9175 §2.4: the 3x rule by default */
    c->unverified_sessions = 10000;
    c->unverified_bytes = 4u << 20;
    c->unverified_pendings = 256;
    c->unverified_observers = 10000;
    c->echo_lifetime = 300;
    c->watch = 1;
    c->runtime_resources = 10000;       /* a directory of devices, one resource each */
    c->dtls_sessions = 10000;
    c->dtls_handshakes = 1000;
    c->dtls_handshake_timeout = 30;     /* RFC 6347 §4.2.4: retransmit from 1 s, doubling */
    c->dtls_handshake_rate = 10;        /* per address and second, bursts of as many */
    c->dtls_idle = 600;                 /* CoAP pings keep a NAT binding (and us) alive */
    c->dtls_ticket_rotate = 3600;       /* 0: no session tickets */
    c->tcp_connections = 10000;
    c->tcp_per_address = 1000;          /* a NAT or a gateway may hold many */
    c->tcp_csm_timeout = 10;
    c->tcp_keepalive = 120;             /* NAT bindings of TCP last minutes at least */
    c->tcp_ping_timeout = 20;
    c->tcp_max_message = 8192;          /* BERT blocks of up to 7 KiB (RFC 8323 §6) */
    c->tcp_write_bytes = 256u << 10;
    c->tcp_inflight = 64;
    c->tls_handshake_timeout = 10;
    c->metrics = 1;
    c->metrics_resources = 2000;
}

static int
set_choice(struct server_config *c, const struct key *k, const char *value, char *err,
           size_t errlen)
{
    for (unsigned i = 0; verify_words[i]; i++)
        if (strcmp(verify_words[i], value) == 0) {
            *(unsigned *)((char *)c + k->off) = i;
            return 0;
        }
    snprintf(err, errlen, "%s=%s: one of off, auto, always", k->name, value);
    return -1;
}

int
server_config_set(struct server_config *c, const char *name, const char *value, char *err,
                  size_t errlen)
{
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const struct key *k = &keys[i];
        char *end;
        double v;

        if (strcmp(k->name, name) != 0)
            continue;
        if (k->kind == K_CHOICE)
            return set_choice(c, k, value, err, errlen);
        if (k->kind == K_TEXT) {
            if (strlen(value) >= (size_t)k->max) {
                snprintf(err, errlen, "%s: longer than %g bytes", name, k->max - 1);
                return -1;
            }
            strcpy((char *)c + k->off, value);
            return 0;
        }
        if (k->kind == K_COUNT && k->max == 1 &&        /* a switch */
            (strcmp(value, "true") == 0 || strcmp(value, "false") == 0))
            value = value[0] == 't' ? "1" : "0";
        errno = 0;
        v = strtod(value, &end);
        if (*value == '\0' || *end != '\0' || errno || !isfinite(v)) {
            snprintf(err, errlen, "%s=%s: not a number", name, value);
            return -1;
        }
        if (v < k->min || v > k->max || ((k->kind == K_COUNT || k->kind == K_BYTES) &&
                                          v != floor(v)) ||
            (k->off == offsetof(struct server_config, block_size) &&
             ((unsigned)v & ((unsigned)v - 1)) != 0)) {
            snprintf(err, errlen, "%s=%s: must be %s between %g and %g", name, value,
                     k->off == offsetof(struct server_config, block_size) ? "a power of two"
                     : k->kind == K_COUNT || k->kind == K_BYTES ? "a whole number" : "a number",
                     k->min, k->max);
            return -1;
        }
        switch (k->kind) {
        case K_SECONDS:
        case K_FACTOR:
            *(double *)((char *)c + k->off) = v;
            break;
        case K_COUNT:
        case K_CHOICE:
            *(unsigned *)((char *)c + k->off) = (unsigned)v;
            break;
        case K_TEXT:
            break;
        case K_BYTES:
            *(size_t *)((char *)c + k->off) = (size_t)v;
            break;
        }
        return 0;
    }
    snprintf(err, errlen, "%s: unknown setting", name);
    return -1;
}

double
server_random(struct server *srv)
{
    /* xorshift64*: timing jitter and initial MIDs, not security */
    uint64_t x = srv->rng;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    srv->rng = x;
    return (double)((x * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
}

static void
flush_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    struct server *srv = (struct server *)((char *)w - offsetof(struct server, flush));

    (void)loop, (void)revents;
    if (srv->obs.dirty)
        observe_flush(srv);
    if (srv->retired)
        reload_reap(srv);
    for (struct endpoint *ep = srv->endpoints; ep; ep = ep->next)
        ep->tp->flush(ep);
    metrics_flush(srv);         /* the turn's answers are out: their latencies */
}

static void
sweep_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct server *srv = (struct server *)((char *)w - offsetof(struct server, sweep));

    (void)loop, (void)revents;
    session_sweep(srv);
}

static void
signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    log_info("signal %d: stopping", w->signum);
    ev_break(loop, EVBREAK_ALL);
}

/* SIGUSR1: one line of state, for operators (and tests that watch state come and go) */
static void
stats_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct server *srv = (struct server *)((char *)w - offsetof(struct server, sigusr1));
    const struct session_table *t = &srv->sessions;
    char dtls[768];

    (void)loop, (void)revents;
    dtls_stats(srv, dtls, sizeof dtls);
    log_notice("stats: sessions %zu verified %zu unverified %zu observers %zu "
               "unverified_observers %zu unverified_pendings %zu unverified_bytes %zu "
               "uploads %zu bytes snapshots %zu bytes rx %lu tx %lu dup %lu rst %lu "
               "dropped %lu truncated %lu evicted %lu overload %lu pings %lu verifications %lu "
               "challenges %lu amplification %lu shed %lu connections %u%s",
               t->count, t->pool[POOL_VERIFIED].count, t->pool[POOL_UNVERIFIED].count,
               srv->obs.count, t->unv_observers, t->unv_pendings, t->unv_bytes,
               srv->x1_bytes, srv->rep_bytes, srv->stats.rx, srv->stats.tx, srv->stats.dup,
               srv->stats.rst, srv->stats.dropped, srv->stats.truncated, srv->stats.evicted,
               srv->stats.overload, srv->stats.pings, srv->stats.verified,
               srv->stats.challenges, srv->stats.amplification, srv->stats.shed,
               stream_count(srv), dtls);
}

int
server_init(struct server *srv, struct ev_loop *loop)
{
    struct server_config *c = &srv->cfg;
    /* §4.8.2 */
    double span = c->ack_timeout * (pow(2, c->max_retransmit) - 1) * c->ack_random_factor;
    double sweep;

    srv->loop = loop;
    if (c->exchange_lifetime <= 0)
        c->exchange_lifetime = span + 2 * 100 + c->ack_timeout;  /* MAX_LATENCY 100 s */
    if (c->non_lifetime <= 0)
        c->non_lifetime = span + 100;
    if (getrandom(&srv->rng, sizeof srv->rng, 0) != sizeof srv->rng || srv->rng == 0)
        srv->rng = (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ULL | 1;
    /* the Echo key must not be guessable (RFC 9175 §2.4): the kernel's, or no server */
    if (getrandom(srv->echo_key, sizeof srv->echo_key, 0) != sizeof srv->echo_key)
        return -1;
    srv->started = ev_now(loop) - 1;    /* an Echo time of 0 is never "in the future" */
    if (session_table_init(&srv->sessions) < 0 || (srv->tree = tree_new()) == NULL)
        return -1;
    srv->sessions.key = srv->rng * 0xD6E8FEB86659FD93ULL;
    resp_init(&srv->resp, c->max_payload);
    if (observe_init(srv) < 0)
        return -1;
    if (linkfmt_register(srv) < 0 || (c->admin && reload_admin_register(srv) < 0))
        return -1;
    ev_prepare_init(&srv->flush, flush_cb);
    ev_prepare_start(loop, &srv->flush);
    ev_unref(loop);     /* housekeeping watchers do not keep the loop alive */
    /* the sweep frees idle sessions and transfers; often enough that a short block_idle
     * returns its memory on time */
    sweep = c->block_idle / 2 < 5.0 ? c->block_idle / 2 : 5.0;
    if (c->observe_check / 2 < sweep)   /* a quiet observer is checked on time as well */
        sweep = c->observe_check / 2;
    ev_timer_init(&srv->sweep, sweep_cb, sweep, sweep);
    ev_timer_start(loop, &srv->sweep);
    ev_unref(loop);
    ev_signal_init(&srv->sigint, signal_cb, SIGINT);
    ev_signal_start(loop, &srv->sigint);
    ev_signal_init(&srv->sigterm, signal_cb, SIGTERM);
    ev_signal_start(loop, &srv->sigterm);
    ev_signal_init(&srv->sigusr1, stats_cb, SIGUSR1);
    ev_signal_start(loop, &srv->sigusr1);
    ev_unref(loop);
    return 0;
}

static struct endpoint *
coaps_open(struct server *srv, const char *addr, unsigned port, char *err, size_t errlen)
{
    return dtls_open(srv, addr, port, srv->creds, err, errlen);
}

static struct endpoint *
coaps_tcp_open(struct server *srv, const char *addr, unsigned port, char *err, size_t errlen)
{
    return tls_open(srv, addr, port, srv->creds, err, errlen);
}

/* Every listener scheme ("coap" is no prefix of "coaps://": the "://" is compared too) */
static const struct scheme schemes[] = {
    {"coap", 5683, 0, udp_open},        /* RFC 7252 §6.1 */
    {"coaps", 5684, 1, coaps_open},     /* RFC 7252 §6.2: DTLS */
    {"coap+tcp", 5683, 0, tcp_open},    /* RFC 8323 §8.1 */
    {"coaps+tcp", 5684, 1, coaps_tcp_open},     /* RFC 8323 §8.2: TLS */
    {"coap+ws", 80, 0, ws_open},        /* RFC 8323 §8.3 */
    {"coaps+ws", 443, 1, wss_open},     /* RFC 8323 §8.4 */
    {"http", 80, 0, http_open},         /* the same listener as coap+ws:// */
    {"https", 443, 1, https_open},      /* the same listener as coaps+ws:// */
};

const struct scheme *
scheme_of(const char *uri)
{
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
        size_t n = strlen(schemes[i].name);

        if (strncmp(uri, schemes[i].name, n) == 0 && strncmp(uri + n, "://", 3) == 0)
            return &schemes[i];
    }
    return NULL;
}

const char *
scheme_names(void)
{
    static char names[128];

    if (names[0] == '\0')
        for (size_t i = 0, n = 0; i < sizeof schemes / sizeof schemes[0]; i++)
            n += (size_t)snprintf(names + n, sizeof names - n, "%s%s://", n ? ", " : "",
                                  schemes[i].name);
    return names;
}

int
server_listen(struct server *srv, const struct scheme *sc, const char *addr, unsigned port,
              char *err, size_t errlen)
{
    struct endpoint *ep = sc->open(srv, addr, port, err, errlen);

    if (ep == NULL)
        return -1;
    snprintf(ep->bind_addr, sizeof ep->bind_addr, "%s", addr);
    ep->bind_port = port;
    ep->next = srv->endpoints;
    srv->endpoints = ep;
    return 0;
}

void
server_unlisten(struct server *srv, struct endpoint *ep)
{
    struct endpoint **pp = &srv->endpoints;

    while (*pp != ep)
        pp = &(*pp)->next;
    session_endpoint_gone(srv, ep);
    *pp = ep->next;
    log_notice("closed %s", ep->name);
    ep->tp->close(ep);          /* flushes what the goodbyes queued */
}

void
server_run(struct server *srv)
{
    ev_run(srv->loop, 0);
}

void
server_fini(struct server *srv)
{
    srv->stopping = 1;
    observe_end(srv, NULL, MOONLET_SERVICE_UNAVAILABLE);   /* observers hear we stop */
    answer_unit_gone(srv, NULL);      /* open deferred answers: 5.03 */
    reload_fini(srv);
    exchange_fini(srv);
    for (struct endpoint *ep = srv->endpoints; ep; ep = ep->next)
        ep->tp->flush(ep);
    session_table_fini(srv);
    observe_fini(srv);
    block_fini(srv);
    while (srv->endpoints) {
        struct endpoint *ep = srv->endpoints;

        srv->endpoints = ep->next;
        ep->tp->close(ep);
    }
    dtls_fini(srv);             /* after the last coaps:// listener */
    stream_fini(srv);           /* after the last connection */
    tree_free(srv->tree);
    srv->tree = NULL;
    metrics_fini(srv);
    resp_free(&srv->resp);
    ev_ref(srv->loop);
    ev_prepare_stop(srv->loop, &srv->flush);
    ev_ref(srv->loop);
    ev_timer_stop(srv->loop, &srv->sweep);
    ev_signal_stop(srv->loop, &srv->sigint);
    ev_signal_stop(srv->loop, &srv->sigterm);
    ev_ref(srv->loop);
    ev_signal_stop(srv->loop, &srv->sigusr1);
}
