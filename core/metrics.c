/*
 * metrics.c -- counters in, Prometheus text out (the text exposition format 0.0.4).
 *
 * Series are bounded by construction: methods, code classes, transports and message kinds
 * are fixed sets, and latency histograms are kept by the resource path as registered --
 * never the request's Uri-Path -- up to cfg.metrics_resources of them; requests that
 * reached no resource count under "(none)", paths beyond the bound under "(other)". A
 * histogram outlives its resource (a reload, a removal), so nothing counts backwards.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtls.h"
#include "metrics.h"
#include "server.h"
#include "stream.h"
#include "tree.h"

/* upper bounds, seconds: 100 µs (a handler on a warm path) to 10 s (deferred answers) */
static const double bounds[MET_BUCKETS] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                           0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                           1,      2.5,     5,      10};
static const char *const bound_text[MET_BUCKETS + 1] = {
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
    "0.1",    "0.25",    "0.5",    "1",     "2.5",    "5",     "10",   "+Inf"};
static const char *const methods[8] = {"other", "GET",   "POST",  "PUT",
                                       "DELETE", "FETCH", "PATCH", "iPATCH"};
static const char *const transports[MET_TRANSPORTS] = {"coap",     "coaps",   "coap+tcp",
                                                       "coaps+tcp", "coap+ws", "coaps+ws"};
static const char *const kinds[MET_KINDS] = {"CON", "NON", "ACK", "RST", "message", "signal"};

/* ---- latency histograms by resource path --------------------------------------------- */

static uint32_t
path_hash(const char *p)
{
    uint32_t h = 2166136261u;   /* FNV-1a: a few paths, hashed once per resource */

    for (; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    return h;
}

static struct met_res *
res_new(const char *path)
{
    size_t n = strlen(path) + 1;
    struct met_res *e = calloc(1, sizeof *e + n);

    if (e)
        memcpy(e->path, path, n);
    return e;
}

/* The histogram of path: found, made (within the bound), or the catch-all. */
static struct met_res *
res_of(struct server *srv, const char *path)
{
    struct metrics *m = &srv->m;
    struct met_res *e;
    uint32_t h = path_hash(path);

    if (m->table == NULL) {
        if ((m->table = calloc(64, sizeof *m->table)) == NULL)
            return m->other;
        m->nbuckets = 64;
    }
    for (e = m->table[h & (m->nbuckets - 1)]; e; e = e->next)
        if (strcmp(e->path, path) == 0)
            return e;
    if (m->nres >= srv->cfg.metrics_resources || (e = res_new(path)) == NULL)
        return m->other;
    if (m->nres + 1 > m->nbuckets) {            /* keep chains short: double */
        struct met_res **t = calloc(m->nbuckets * 2, sizeof *t);

        if (t) {
            for (size_t i = 0; i < m->nbuckets; i++)
                for (struct met_res *x = m->table[i], *next; x; x = next) {
                    next = x->next;
                    x->next = t[path_hash(x->path) & (m->nbuckets * 2 - 1)];
                    t[path_hash(x->path) & (m->nbuckets * 2 - 1)] = x;
                }
            free(m->table);
            m->table = t;
            m->nbuckets *= 2;
        }
    }
    e->next = m->table[h & (m->nbuckets - 1)];
    m->table[h & (m->nbuckets - 1)] = e;
    m->nres++;
    return e;
}

static unsigned
bucket_of(double s)
{
    unsigned i = 0;

    while (i < MET_BUCKETS && s > bounds[i])
        i++;
    return i;
}

void
metrics_flush(struct server *srv)
{
    struct metrics *m = &srv->m;
    ev_tstamp now, t0 = -1;
    double s = 0;
    unsigned b = 0;

    if (m->nbatch == 0)
        return;
    now = ev_time();            /* one clock reading for the turn's answers */
    for (unsigned i = 0; i < m->nbatch; i++) {
        struct met_res *e = m->batch[i].r;

        if (m->batch[i].t0 != t0) {     /* most of a turn's answers share their arrival */
            t0 = m->batch[i].t0;
            s = now > t0 ? now - t0 : 0;
            b = bucket_of(s);
        }
        e->bucket[b]++;
        e->count++;
        e->sum += s;
    }
    m->nbatch = 0;
}

static int
catchalls(struct metrics *m)
{
    if (m->other == NULL) {
        free(m->none);
        if ((m->none = res_new("(none)")) == NULL || (m->other = res_new("(other)")) == NULL)
            return -1;
    }
    return 0;
}

struct met_res *
metrics_res_new(struct server *srv, struct resource *r)
{
    if (catchalls(&srv->m) == 0)
        r->met = res_of(srv, r->path);
    return r->met;
}

struct met_res *
metrics_none(struct server *srv)
{
    return catchalls(&srv->m) == 0 ? srv->m.none : NULL;
}

void
metrics_fini(struct server *srv)
{
    struct metrics *m = &srv->m;

    for (size_t i = 0; i < m->nbuckets; i++)
        for (struct met_res *e = m->table[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    free(m->table);
    free(m->none);
    free(m->other);
    m->table = NULL;
    m->none = m->other = NULL;
    m->nbuckets = m->nres = 0;
}

/* ---- the exposition ------------------------------------------------------------------ */

struct out {
    char *b;
    size_t len, cap;
    int failed;
};

static int
room(struct out *o, size_t n)
{
    if (o->len + n <= o->cap)
        return 1;
    size_t cap = o->cap ? o->cap : 16384;
    char *b;

    while (cap < o->len + n)
        cap *= 2;
    if (o->failed || (b = realloc(o->b, cap)) == NULL) {
        o->failed = 1;
        return 0;
    }
    o->b = b;
    o->cap = cap;
    return 1;
}

static void
put(struct out *o, const char *s)
{
    size_t n = strlen(s);

    if (room(o, n)) {
        memcpy(o->b + o->len, s, n);
        o->len += n;
    }
}

/* A decimal without printf: a scrape writes tens of thousands of them */
static void
put_u(struct out *o, uint64_t v)
{
    char t[24];
    int i = sizeof t;

    do
        t[--i] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    if (room(o, sizeof t - (size_t)i)) {
        memcpy(o->b + o->len, t + i, sizeof t - (size_t)i);
        o->len += sizeof t - (size_t)i;
    }
}

static void
put_f(struct out *o, double v)
{
    char t[40];

    snprintf(t, sizeof t, "%.9g", v);
    put(o, t);
}

/* A label value: \, " and newline escaped (the format's rules); paths are printable. */
static void
put_label(struct out *o, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            put(o, *s == '\\' ? "\\\\" : "\\\"");
        else if (*s == '\n')
            put(o, "\\n");
        else if (room(o, 1))
            o->b[o->len++] = *s;
    }
}

static void
head(struct out *o, const char *name, const char *type, const char *help)
{
    put(o, "# HELP ");
    put(o, name);
    put(o, " ");
    put(o, help);
    put(o, "\n# TYPE ");
    put(o, name);
    put(o, " ");
    put(o, type);
    put(o, "\n");
}

/* One series without labels. */
static void
one(struct out *o, const char *name, const char *type, const char *help, uint64_t v)
{
    head(o, name, type, help);
    put(o, name);
    put(o, " ");
    put_u(o, v);
    put(o, "\n");
}

/* A series with one label. */
static void
labelled(struct out *o, const char *name, const char *label, const char *value, uint64_t v)
{
    put(o, name);
    put(o, "{");
    put(o, label);
    put(o, "=\"");
    put_label(o, value);
    put(o, "\"} ");
    put_u(o, v);
    put(o, "\n");
}

/* Messages by transport and kind: RFC 7252's types on datagram transports, RFC 8323's
 * message or signal on the others. */
static void
by_kind(struct out *o, const char *name, const char *help,
        const uint64_t n[MET_TRANSPORTS][MET_KINDS])
{
    head(o, name, "counter", help);
    for (unsigned i = 0; i < MET_TRANSPORTS; i++) {
        unsigned k0 = i < MT_TCP ? MK_CON : MK_MSG, k1 = i < MT_TCP ? MK_MSG : MET_KINDS;

        for (unsigned k = k0; k < k1; k++) {
            put(o, name);
            put(o, "{transport=\"");
            put(o, transports[i]);
            put(o, "\",type=\"");
            put(o, kinds[k]);
            put(o, "\"} ");
            put_u(o, n[i][k]);
            put(o, "\n");
        }
    }
}

static void
histogram(struct out *o, const struct met_res *e)
{
    uint64_t cum = 0;

    if (e->count == 0)          /* never observed: no series yet (it appears at the first) */
        return;
    for (unsigned i = 0; i <= MET_BUCKETS; i++) {
        cum += e->bucket[i];
        put(o, "moonlet_request_duration_seconds_bucket{resource=\"");
        put_label(o, e->path);
        put(o, "\",le=\"");
        put(o, bound_text[i]);
        put(o, "\"} ");
        put_u(o, cum);
        put(o, "\n");
    }
    put(o, "moonlet_request_duration_seconds_sum{resource=\"");
    put_label(o, e->path);
    put(o, "\"} ");
    put_f(o, e->sum);
    put(o, "\nmoonlet_request_duration_seconds_count{resource=\"");
    put_label(o, e->path);
    put(o, "\"} ");
    put_u(o, e->count);
    put(o, "\n");
}

char *
metrics_text(struct server *srv, size_t *len)
{
    struct metrics *m = &srv->m;
    const struct session_table *t = &srv->sessions;
    struct out o = {0};
    unsigned dsess = 0, dhs = 0;

    metrics_flush(srv);         /* this turn's answers too */
    dtls_counts(srv, &dsess, &dhs);

    head(&o, "moonlet_requests_total", "counter",
         "Requests answered, by method and response code class.");
    for (unsigned i = 0; i < 8; i++)
        for (unsigned c = 0; c < 3; c++) {
            put(&o, "moonlet_requests_total{method=\"");
            put(&o, methods[i]);
            put(&o, "\",class=\"");
            put(&o, c == 0 ? "2" : c == 1 ? "4" : "5");
            put(&o, "\"} ");
            put_u(&o, m->req[i][c]);
            put(&o, "\n");
        }
    by_kind(&o, "moonlet_messages_received_total",
            "CoAP messages received, by transport and type (RFC 8323 transports: message or "
            "signal).",
            m->in);
    by_kind(&o, "moonlet_messages_sent_total",
            "CoAP messages sent, by transport and type (retransmissions included).", m->out);
    head(&o, "moonlet_received_bytes_total", "counter",
         "Bytes of CoAP messages received, by transport (below: UDP payloads, records, "
         "frames not counted).");
    for (unsigned i = 0; i < MET_TRANSPORTS; i++)
        labelled(&o, "moonlet_received_bytes_total", "transport", transports[i],
                 m->bytes_in[i]);
    head(&o, "moonlet_sent_bytes_total", "counter", "Bytes of CoAP messages sent, by transport.");
    for (unsigned i = 0; i < MET_TRANSPORTS; i++)
        labelled(&o, "moonlet_sent_bytes_total", "transport", transports[i], m->bytes_out[i]);
    one(&o, "moonlet_retransmissions_total", "counter",
        "Confirmable messages sent again (RFC 7252 §4.2).", m->retransmissions);
    one(&o, "moonlet_duplicates_total", "counter",
        "Duplicate requests answered from the deduplication cache (RFC 7252 §4.5).",
        srv->stats.dup);
    one(&o, "moonlet_dropped_total", "counter",
        "Datagrams dropped: not CoAP, or over a limit.", srv->stats.dropped);
    one(&o, "moonlet_sessions", "gauge", "Peers with state (UDP and DTLS).",
        t->pool[POOL_VERIFIED].count + t->pool[POOL_UNVERIFIED].count);
    one(&o, "moonlet_sessions_unverified", "gauge",
        "Peers whose address is not verified yet (RFC 9175 §2.4).",
        t->pool[POOL_UNVERIFIED].count);
    one(&o, "moonlet_connections", "gauge",
        "Connections open (TCP, TLS, WebSockets, HTTP).", stream_count(srv));
    one(&o, "moonlet_dtls_sessions", "gauge", "DTLS associations established.", dsess);
    one(&o, "moonlet_dtls_handshakes", "gauge", "DTLS handshakes in progress.", dhs);
    one(&o, "moonlet_observers", "gauge", "Observations registered (RFC 7641).",
        srv->obs.count);
    one(&o, "moonlet_notifications_total", "counter", "Observe notifications sent.",
        m->notifications);
    head(&o, "moonlet_block_transfers", "gauge",
         "Block-wise transfers in progress (RFC 7959): uploads reassembling, "
         "representations held for downloads.");
    labelled(&o, "moonlet_block_transfers", "direction", "upload", m->uploads_open);
    labelled(&o, "moonlet_block_transfers", "direction", "download", m->downloads_open);
    head(&o, "moonlet_block_transfers_completed_total", "counter",
         "Block-wise transfers completed: the last block received or sent.");
    labelled(&o, "moonlet_block_transfers_completed_total", "direction", "upload",
             m->uploads_done);
    labelled(&o, "moonlet_block_transfers_completed_total", "direction", "download",
             m->downloads_done);
    one(&o, "moonlet_lua_errors_total", "counter",
        "Lua handlers and timers that raised an error (budget kills included).",
        m->lua_errors);
    head(&o, "moonlet_lua_budget_kills_total", "counter",
         "Lua calls stopped by a budget (lua.instructions, lua.memory).");
    labelled(&o, "moonlet_lua_budget_kills_total", "budget", "instructions",
             m->lua_instructions);
    labelled(&o, "moonlet_lua_budget_kills_total", "budget", "memory", m->lua_memory);
    head(&o, "moonlet_reloads_total", "counter",
         "Hot reloads of a unit (script, plugin), by result.");
    labelled(&o, "moonlet_reloads_total", "result", "ok", m->reloads_ok);
    labelled(&o, "moonlet_reloads_total", "result", "failed", m->reloads_failed);
    one(&o, "moonlet_http_requests_total", "counter",
        "HTTP requests on HTTP listeners (WebSocket upgrades and /metrics included).",
        m->http_requests);
    one(&o, "moonlet_uptime_seconds", "gauge", "Seconds since the server started.",
        ev_now(srv->loop) > srv->started ? (uint64_t)(ev_now(srv->loop) - srv->started) : 0);
    head(&o, "moonlet_request_duration_seconds", "histogram",
         "Time from a request's arrival to its answer leaving, by resource as registered.");
    if (m->other) {
        histogram(&o, m->none);
        histogram(&o, m->other);
    }
    for (size_t i = 0; i < m->nbuckets; i++)
        for (const struct met_res *e = m->table[i]; e; e = e->next)
            histogram(&o, e);
    if (o.failed) {
        free(o.b);
        return NULL;
    }
    *len = o.len;
    return o.b;
}
