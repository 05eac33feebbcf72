/*
 * session.c -- per-peer state and its bounds: the deduplication ring (RFC 7252 §4.5) and
 * the peer table. The activity list (most recently active first) serves both the idle
 * sweep and eviction under the global caps, in O(1) per request.
 */
#include <stdlib.h>
#include <string.h>

#include "exchange.h"
#include "log.h"
#include "server.h"
#include "session.h"

int
session_table_init(struct session_table *t)
{
    memset(t, 0, sizeof *t);
    t->nbuckets = 1024;
    t->buckets = calloc(t->nbuckets, sizeof *t->buckets);
    return t->buckets ? 0 : -1;
}

static void
list_unlink(struct session_table *t, struct session *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        t->mru = s->next;
    if (s->next)
        s->next->prev = s->prev;
    else
        t->lru = s->prev;
    s->prev = s->next = NULL;
}

static void
list_push(struct session_table *t, struct session *s)
{
    s->prev = NULL;
    s->next = t->mru;
    if (t->mru)
        t->mru->prev = s;
    t->mru = s;
    if (t->lru == NULL)
        t->lru = s;
}

static void
session_free(struct server *srv, struct session *s)
{
    struct session_table *t = &srv->sessions;
    struct session **pp = &t->buckets[s->hash & (t->nbuckets - 1)];

    while (*pp != s)
        pp = &(*pp)->hnext;
    *pp = s->hnext;
    list_unlink(t, s);
    exchange_session_gone(srv, s);
    for (unsigned i = 0; i < s->dd_cap; i++)
        free(s->dd[i].resp);
    t->dd_bytes -= s->dd_bytes;
    t->count--;
    free(s->dd);
    free(s);
}

void
session_table_fini(struct server *srv)
{
    struct session_table *t = &srv->sessions;

    while (t->mru)
        session_free(srv, t->mru);
    free(t->buckets);
    t->buckets = NULL;
}

static int
busy(const struct session *s)
{
    return s->refs > 0 || s->out_head != NULL;
}

/* Forget the least recently active idle session other than keep; 0 if none could go. */
static int
evict_one(struct server *srv, const struct session *keep)
{
    for (struct session *s = srv->sessions.lru; s; s = s->prev) {
        if (s != keep && !busy(s)) {
            srv->stats.evicted++;
            session_free(srv, s);
            return 1;
        }
    }
    return 0;
}

static void
grow(struct session_table *t)
{
    size_t n = t->nbuckets * 2;
    struct session **b = calloc(n, sizeof *b);

    if (b == NULL)
        return;     /* longer chains, still correct */
    for (size_t i = 0; i < t->nbuckets; i++) {
        struct session *s = t->buckets[i], *next;

        for (; s; s = next) {
            next = s->hnext;
            s->hnext = b[s->hash & (n - 1)];
            b[s->hash & (n - 1)] = s;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
}

struct session *
session_get(struct server *srv, struct endpoint *ep, const struct peer *p)
{
    struct session_table *t = &srv->sessions;
    uint32_t h = peer_hash(p);
    struct session *s;

    for (s = t->buckets[h & (t->nbuckets - 1)]; s; s = s->hnext) {
        if (s->hash == h && s->ep == ep && peer_equal(&s->peer, p)) {
            s->last = ev_now(srv->loop);
            if (t->mru != s) {
                list_unlink(t, s);
                list_push(t, s);
            }
            return s;
        }
    }
    if (t->count >= srv->cfg.max_sessions && !evict_one(srv, NULL))
        return NULL;
    s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->ep = ep;
    s->peer = *p;
    s->hash = h;
    s->last = ev_now(srv->loop);
    /* RFC 7252 §4.4: start Message IDs at a random value */
    s->next_mid = (uint16_t)(server_random(srv) * 65536.0);
    s->hnext = t->buckets[h & (t->nbuckets - 1)];
    t->buckets[h & (t->nbuckets - 1)] = s;
    list_push(t, s);
    if (++t->count > t->nbuckets)
        grow(t);
    return s;
}

void
session_sweep(struct server *srv)
{
    ev_tstamp cutoff = ev_now(srv->loop) - srv->cfg.exchange_lifetime;
    struct session *s = srv->sessions.lru, *prev;

    for (; s && s->last < cutoff; s = prev) {
        prev = s->prev;
        if (!busy(s))
            session_free(srv, s);
    }
}

void
session_release(struct server *srv, struct session *s)
{
    (void)srv;
    if (s->refs)
        s->refs--;
}

struct dedup *
dedup_find(struct server *srv, struct session *s, uint16_t mid)
{
    ev_tstamp now = ev_now(srv->loop);

    /* newest first: retransmissions are of recent messages */
    for (unsigned k = 0; k < s->dd_n; k++) {
        unsigned i = (s->dd_head + s->dd_n - 1 - k) % s->dd_cap;
        struct dedup *d = &s->dd[i];

        if (d->mid == mid && d->state != DEDUP_FREE)
            return d->expires > now ? d : NULL;
    }
    return NULL;
}

struct dedup *
dedup_add(struct server *srv, struct session *s, uint16_t mid, int con)
{
    struct dedup *d;

    if (s->dd_n == s->dd_cap && s->dd_cap < srv->cfg.dedup_per_peer) {
        /* grow the ring (doubling) while it is linear: oldest at dd_head == 0 */
        unsigned cap = s->dd_cap ? s->dd_cap * 2u : 4u;
        struct dedup *n;

        if (cap > srv->cfg.dedup_per_peer)
            cap = srv->cfg.dedup_per_peer;
        n = realloc(s->dd, cap * sizeof *n);
        if (n != NULL) {
            /* unroll the ring so that the oldest entry is at index 0 */
            if (s->dd_head) {
                struct dedup *tmp = malloc(s->dd_n * sizeof *tmp);

                if (tmp == NULL) {
                    s->dd = n;
                    goto full;
                }
                for (unsigned k = 0; k < s->dd_n; k++)
                    tmp[k] = n[(s->dd_head + k) % s->dd_cap];
                memcpy(n, tmp, s->dd_n * sizeof *tmp);
                free(tmp);
                s->dd_head = 0;
            }
            memset(n + s->dd_cap, 0, (cap - s->dd_cap) * sizeof *n);
            s->dd = n;
            s->dd_cap = (uint16_t)cap;
        }
    }
full:
    if (s->dd_cap == 0)
        return NULL;
    if (s->dd_n < s->dd_cap) {
        d = &s->dd[(s->dd_head + s->dd_n) % s->dd_cap];
        s->dd_n++;
    } else {
        d = &s->dd[s->dd_head];     /* overwrite the oldest */
        s->dd_head = (uint16_t)((s->dd_head + 1) % s->dd_cap);
    }
    d->mid = mid;
    d->state = DEDUP_BUSY;
    d->con = (uint8_t)con;
    d->len = 0;
    /* §4.8.2: a CON is a duplicate within EXCHANGE_LIFETIME, a NON within NON_LIFETIME */
    d->expires = ev_now(srv->loop) + (con ? srv->cfg.exchange_lifetime : srv->cfg.non_lifetime);
    return d;
}

int
dedup_store(struct server *srv, struct session *s, struct dedup *d, const uint8_t *buf,
            size_t len)
{
    struct session_table *t = &srv->sessions;

    d->state = DEDUP_DONE;
    d->len = 0;
    if (len > d->cap) {
        size_t cap = len < 64 ? 64 : len;
        uint8_t *b;

        /* over the global byte cap, forget idle peers first (never this one) */
        while (t->dd_bytes + cap - d->cap > srv->cfg.dedup_bytes && evict_one(srv, s))
            ;
        if (t->dd_bytes + cap - d->cap > srv->cfg.dedup_bytes)
            return -1;
        if ((b = realloc(d->resp, cap)) == NULL)
            return -1;
        t->dd_bytes += cap - d->cap;
        s->dd_bytes += cap - d->cap;
        d->resp = b;
        d->cap = (uint16_t)cap;
    }
    memcpy(d->resp, buf, len);
    d->len = (uint16_t)len;
    return 0;
}

struct session *
session_find(struct server *srv, struct endpoint *ep, const struct peer *p)
{
    struct session_table *t = &srv->sessions;
    uint32_t h = peer_hash(p);

    for (struct session *s = t->buckets[h & (t->nbuckets - 1)]; s; s = s->hnext)
        if (s->hash == h && s->ep == ep && peer_equal(&s->peer, p))
            return s;
    return NULL;
}
