/*
 * metrics.h -- the server's counters for operators: GET /metrics on an HTTP listener
 * (ws.c) renders them in the Prometheus text format. Counting costs an increment where
 * the event happens; request latencies are observed in a batch, once per loop turn,
 * against one clock reading taken as the turn's answers leave. Everything lives in the
 * server, not in a unit: a hot reload leaves the counters as they were (monotonic).
 */
#ifndef METRICS_H
#define METRICS_H

#include <stddef.h>
#include <stdint.h>

#include <ev.h>

struct server;
struct resource;

/* The transports, by transport.metric: what "transport" label a message gets. */
enum { MT_UDP, MT_DTLS, MT_TCP, MT_TLS, MT_WS, MT_WSS, MET_TRANSPORTS };
/* Message kinds: RFC 7252's four types (CON, NON, ACK, RST) on datagram transports; on
 * RFC 8323's, whose messages have no type, a message or a signal (7.xx). */
enum { MK_CON, MK_NON, MK_ACK, MK_RST, MK_MSG, MK_SIGNAL, MET_KINDS };

#define MET_BUCKETS 16          /* latency bounds, +Inf aside */
#define MET_BATCH 512           /* latencies observed per loop turn before a flush */

/* One resource path's latency histogram (and the catch-alls "(none)", "(other)"). */
struct met_res {
    struct met_res *next;               /* hash chain */
    uint64_t bucket[MET_BUCKETS + 1];   /* not cumulative; the last is +Inf */
    uint64_t count;
    double sum;
    char path[];
};

struct metrics {
    uint64_t req[8][3];                 /* by method (0: other, 1..7: GET..iPATCH) and
                                         * answer class (2, 4, 5) */
    uint64_t in[MET_TRANSPORTS][MET_KINDS], out[MET_TRANSPORTS][MET_KINDS];
    uint64_t bytes_in[MET_TRANSPORTS], bytes_out[MET_TRANSPORTS];
    uint64_t retransmissions, notifications;
    uint64_t uploads_done, downloads_done;  /* block-wise transfers completed */
    uint64_t uploads_open, downloads_open;  /* and in progress (gauges) */
    uint64_t lua_errors, lua_instructions, lua_memory;
    uint64_t reloads_ok, reloads_failed;
    uint64_t http_requests, ws_upgrades;
    /* latency: histograms by resource path, at most cfg.metrics_resources of them */
    struct met_res **table;
    size_t nbuckets, nres;
    struct met_res *none, *other;
    struct {                            /* answers of this loop turn, observed at flush */
        struct met_res *r;
        ev_tstamp t0;
    } batch[MET_BATCH];
    unsigned nbatch;
};

/* The answers of this turn leave now: observe their latencies (the prepare watcher). */
void metrics_flush(struct server *srv);
/* The histograms made at first use: r's (kept for its path), that of "(none)". */
struct met_res *metrics_res_new(struct server *srv, struct resource *r);
struct met_res *metrics_none(struct server *srv);
/* A message in or out on transport t (MT_*), of kind k (MK_*), len bytes. */
static inline void
metrics_in(struct metrics *m, unsigned t, unsigned k, size_t len)
{
    m->in[t][k]++;
    m->bytes_in[t] += len;
}
static inline void
metrics_out(struct metrics *m, unsigned t, unsigned k, size_t len)
{
    m->out[t][k]++;
    m->bytes_out[t] += len;
}
/* The latency histogram of r (made at its first request, kept for its path). */
#define metrics_res(srv, r) ((r)->met ? (r)->met : metrics_res_new((srv), (r)))

/* A request was answered with code; e: its resource's histogram (NULL: it reached none),
 * t0: when it arrived (its loop turn's ev_now). Inline: every request passes here. */
static inline void
metrics_answer(struct metrics *m, struct server *srv, unsigned method, unsigned code,
               struct met_res *e, ev_tstamp t0)
{
    unsigned cls = code >> 5;

    m->req[method <= 7 ? method : 0][cls == 2 ? 0 : cls == 4 ? 1 : 2]++;
    if (e == NULL && (e = m->none) == NULL && (e = metrics_none(srv)) == NULL)
        return;
    if (m->nbatch == MET_BATCH)
        metrics_flush(srv);
    m->batch[m->nbatch].r = e;
    m->batch[m->nbatch].t0 = t0;
    m->nbatch++;
}

/* The exposition, malloc'd (*len bytes); NULL when out of memory. */
char *metrics_text(struct server *srv, size_t *len);
void metrics_fini(struct server *srv);

#endif
