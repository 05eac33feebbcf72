/*
 * session.c -- per-peer state and its bounds: the deduplication ring (RFC 7252 §4.5) and
 * the peer table. The activity list (most recently active first) serves both the idle
 * sweep and eviction under the global caps, in O(1) per request.
 */
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "block.h"
#include "exchange.h"
#include "log.h"
#include "observe.h"
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
    observe_session_gone(srv, s);
    exchange_session_gone(srv, s);
    block_session_sweep(srv, s, 1);
    for (unsigned i = 0; i < s->dd_cap; i++)
        free(s->dd[i].resp);
    t->dd_bytes -= s->dd_bytes;
    t->count--;
    free(s->dd);
    free(s->dd_mid);
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

/* Work in progress: a deferred answer, a CON in flight, an upload half done, or an
 * observation (RFC 7641: it lasts until the client cancels it or stops acknowledging). */
static int
busy(const struct session *s)
{
    return s->refs > 0 || s->out_head != NULL || s->x1 != NULL || s->obs != NULL;
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
    uint32_t h = peer_hash(p, t->key);
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
    for (s = srv->sessions.mru; s; s = s->next)    /* idle block transfers expire */
        if (s->x1 || s->x2)
            block_session_sweep(srv, s, 0);
}

void
session_endpoint_gone(struct server *srv, struct endpoint *ep)
{
    struct session *s, *next;

    exchange_endpoint_gone(srv, ep);
    for (s = srv->sessions.mru; s; s = next) {
        next = s->next;
        if (s->ep != ep)
            continue;
        observe_session_end(srv, s, MOONLET_SERVICE_UNAVAILABLE);
        if (s->refs == 0) {
            session_free(srv, s);
            continue;
        }
        /* still held (a pending its owner has not freed, a notification build for
         * another peer): it stays, unreachable, without work, until the sweep */
        exchange_session_gone(srv, s);
        block_session_sweep(srv, s, 1);
        s->ep = NULL;
    }
}

void
session_release(struct server *srv, struct session *s)
{
    (void)srv;
    if (s->refs)
        s->refs--;
}

/* Index of the first slot at or after i holding mid, or n. Slots [0, n) are in use; the
 * scan compares eight MIDs per step where SSE2 exists. */
static unsigned
mid_scan(const uint16_t *mids, unsigned i, unsigned n, uint16_t mid)
{
#ifdef __SSE2__
    const __m128i want = _mm_set1_epi16((short)mid);

    for (; i + 8 <= n; i += 8) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(mids + i));
        unsigned m = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi16(v, want));

        if (m)
            return i + (unsigned)__builtin_ctz(m) / 2;
    }
#endif
    for (; i < n; i++)
        if (mids[i] == mid)
            break;
    return i;
}

struct dedup *
dedup_find(struct server *srv, struct session *s, uint16_t mid)
{
    ev_tstamp now = ev_now(srv->loop);

    /* at most one live entry per MID exists (dedup_add runs only when none is found), so
     * the order of the scan does not matter; expired ones are skipped */
    for (unsigned i = mid_scan(s->dd_mid, 0, s->dd_n, mid); i < s->dd_n;
         i = mid_scan(s->dd_mid, i + 1, s->dd_n, mid)) {
        struct dedup *d = &s->dd[i];

        if (d->state != DEDUP_FREE && d->expires > now)
            return d;
    }
    return NULL;
}

/* Double the ring (up to dedup_per_peer) while it is not full yet. */
static void
ring_grow(struct server *srv, struct session *s)
{
    unsigned cap = s->dd_cap ? s->dd_cap * 2u : 4u;
    struct dedup *n;
    uint16_t *m;

    if (cap > srv->cfg.dedup_per_peer)
        cap = srv->cfg.dedup_per_peer;
    if ((n = realloc(s->dd, cap * sizeof *n)) == NULL)
        return;
    s->dd = n;
    if ((m = realloc(s->dd_mid, cap * sizeof *m)) == NULL)
        return;
    s->dd_mid = m;
    memset(n + s->dd_cap, 0, (cap - s->dd_cap) * sizeof *n);
    s->dd_cap = (uint16_t)cap;
}

void
dedup_reset(struct server *srv, struct dedup *d, int con, const uint8_t *token, unsigned tkl)
{
    d->state = DEDUP_BUSY;
    d->con = (uint8_t)con;
    d->len = 0;
    d->tkl = (uint8_t)tkl;
    memcpy(d->token, token, tkl);
    /* §4.8.2: a CON is a duplicate within EXCHANGE_LIFETIME, a NON within NON_LIFETIME */
    d->expires = ev_now(srv->loop) + (con ? srv->cfg.exchange_lifetime : srv->cfg.non_lifetime);
}

struct dedup *
dedup_add(struct server *srv, struct session *s, uint16_t mid, int con, const uint8_t *token,
          unsigned tkl)
{
    struct dedup *d;
    unsigned i;

    if (s->dd_n == s->dd_cap && s->dd_cap < srv->cfg.dedup_per_peer)
        ring_grow(srv, s);
    if (s->dd_cap == 0)
        return NULL;
    if (s->dd_n < s->dd_cap) {
        i = s->dd_n++;
    } else {
        i = s->dd_head;     /* full: reuse the oldest slot */
        s->dd_head = (uint16_t)((s->dd_head + 1) % s->dd_cap);
    }
    d = &s->dd[i];
    s->dd_mid[i] = mid;
    d->mid = mid;
    dedup_reset(srv, d, con, token, tkl);
    return d;
}

int
dedup_store(struct server *srv, struct session *s, struct dedup *d, const uint8_t *buf,
            size_t len)
{
    struct session_table *t = &srv->sessions;

    /* a response we cannot keep (over dedup_bytes, or no memory) leaves the exchange
     * forgotten: a retransmission is then processed again rather than left unanswered */
    d->state = DEDUP_FREE;
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
    d->state = DEDUP_DONE;
    return 0;
}

struct session *
session_find(struct server *srv, struct endpoint *ep, const struct peer *p)
{
    struct session_table *t = &srv->sessions;
    uint32_t h = peer_hash(p, t->key);

    for (struct session *s = t->buckets[h & (t->nbuckets - 1)]; s; s = s->hnext)
        if (s->hash == h && s->ep == ep && peer_equal(&s->peer, p))
            return s;
    return NULL;
}
