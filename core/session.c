/*
 * session.c -- per-peer state and its bounds: the deduplication ring (RFC 7252 §4.5), the
 * peer table in two pools (unverified, verified; see session.h) and the 3x rule toward
 * unverified addresses (RFC 9175 §2.4). Each pool's activity list (most recently active
 * first) serves the idle sweep and eviction, in O(1) per request.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "answer.h"
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

static struct session_pool *
pool_of(struct session_table *t, const struct session *s)
{
    return &t->pool[s->pool];
}

static void
list_unlink(struct session_table *t, struct session *s)
{
    struct session_pool *p = pool_of(t, s);

    if (s->prev)
        s->prev->next = s->next;
    else
        p->mru = s->next;
    if (s->next)
        s->next->prev = s->prev;
    else
        p->lru = s->prev;
    s->prev = s->next = NULL;
    p->count--;
}

static void
list_push(struct session_table *t, struct session *s)
{
    struct session_pool *p = pool_of(t, s);

    s->prev = NULL;
    s->next = p->mru;
    if (p->mru)
        p->mru->prev = s;
    p->mru = s;
    if (p->lru == NULL)
        p->lru = s;
    p->count++;
}

static void
hash_unlink(struct session_table *t, struct session *s)
{
    struct session **pp = &t->buckets[s->hash & (t->nbuckets - 1)];

    while (*pp != s)
        pp = &(*pp)->hnext;
    *pp = s->hnext;
}

/* Everything s holds goes; the struct itself stays while something refers to it. */
static void
session_empty(struct server *srv, struct session *s)
{
    struct session_table *t = &srv->sessions;

    observe_session_gone(srv, s);
    exchange_session_gone(srv, s);
    block_session_sweep(srv, s, 1);
    for (unsigned i = 0; i < s->dd_cap; i++)
        free(s->dd[i].resp);
    t->dd_bytes -= s->dd_bytes;
    s->dd_bytes = 0;
    free(s->dd);
    free(s->dd_mid);
    s->dd = NULL;
    s->dd_mid = NULL;
    s->dd_cap = s->dd_n = s->dd_head = 0;
}

/* Forget s: out of the table at once; freed now, or when the last reference lets go (a
 * pending still owned by a plugin or a waiting handler, which learns MOONLET_EGONE). */
static void
session_drop(struct server *srv, struct session *s)
{
    struct session_table *t = &srv->sessions;

    list_unlink(t, s);
    if (s->pool != POOL_CONN) {
        hash_unlink(t, s);
        t->count--;
    }
    answer_session_evict(srv, s);       /* its deferred answers end (5.03) */
    exchange_session_evict(srv, s);     /* its multicast answers go */
    session_empty(srv, s);
    if (s->conn && s->ep && s->ep->tp->detach)
        s->ep->tp->detach(s->ep, s);    /* its connection goes with it */
    if (s->refs) {
        s->dead = 1;
        s->ep = NULL;           /* unreachable: nothing goes out through it any more */
        return;
    }
    free(s);
}

void
session_close(struct server *srv, struct session *s)
{
    if (!s->dead)
        session_drop(srv, s);
}

void
session_table_fini(struct server *srv)
{
    struct session_table *t = &srv->sessions;

    for (int p = 0; p < 3; p++)
        while (t->pool[p].mru)
            session_drop(srv, t->pool[p].mru);
    free(t->buckets);
    t->buckets = NULL;
}

/* Work in progress: a deferred answer, a CON in flight, an upload half done, or an
 * observation (RFC 7641: it lasts until the client cancels it or stops acknowledging). */
int
session_busy(const struct session *s)
{
    return s->refs > 0 || s->out_head != NULL || s->x1 != NULL || s->obs != NULL;
}

/* Forget the least recently active idle verified session other than keep, or failing that
 * any unverified one (idle first); 0 if none could go. For the byte cap of dedup. */
static int
evict_one(struct server *srv, const struct session *keep)
{
    struct session_table *t = &srv->sessions;

    for (int p = POOL_UNVERIFIED; p <= POOL_VERIFIED; p++)
        for (struct session *s = t->pool[p].lru; s; s = s->prev)
            if (s != keep && !session_busy(s)) {
                srv->stats.evicted++;
                session_drop(srv, s);
                return 1;
            }
    for (struct session *s = t->pool[POOL_UNVERIFIED].lru; s; s = s->prev)
        if (s != keep) {
            srv->stats.evicted++;
            session_drop(srv, s);
            return 1;
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

/* Room for one more session in pool p: the least recently active one that may go goes. An
 * unverified session goes whatever it holds (spoofed peers must never fill the table); a
 * verified one only when idle -- unless verification is off, where nothing tells a spoofed
 * peer from a real one and the least recently active goes regardless. */
static int
make_room(struct server *srv, int p)
{
    struct session_pool *pool = &srv->sessions.pool[p];
    size_t cap = p == POOL_VERIFIED ? srv->cfg.max_sessions : srv->cfg.unverified_sessions;
    struct session *s;

    if (pool->count < cap)
        return 1;
    for (s = pool->lru; s && p == POOL_VERIFIED && session_busy(s); s = s->prev)
        ;
    if (s == NULL && p == POOL_VERIFIED && srv->cfg.verify == VERIFY_OFF)
        s = pool->lru;
    if (s == NULL)
        return 0;
    srv->stats.evicted++;
    session_drop(srv, s);
    return 1;
}

struct session *
session_get(struct server *srv, struct endpoint *ep, const struct peer *p)
{
    struct session_table *t = &srv->sessions;
    uint32_t h = peer_hash(p, t->key);
    struct session *s;
    /* a DTLS peer has returned our cookie and finished a handshake: its address is proven
     * (RFC 6347 §4.2.1), no 3x rule */
    int verified = srv->cfg.verify == VERIFY_OFF || ep->tp->secure;

    for (s = t->buckets[h & (t->nbuckets - 1)]; s; s = s->hnext) {
        if (s->hash == h && s->ep == ep && peer_equal(&s->peer, p)) {
            s->last = s->heard = ev_now(srv->loop);
            if (pool_of(t, s)->mru != s) {
                list_unlink(t, s);
                list_push(t, s);
            }
            return s;
        }
    }
    if (!make_room(srv, verified ? POOL_VERIFIED : POOL_UNVERIFIED))
        return NULL;
    s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->ep = ep;
    s->peer = *p;
    s->hash = h;
    s->verified = (uint8_t)verified;
    s->pool = verified ? POOL_VERIFIED : POOL_UNVERIFIED;
    s->hdr = p->u.sa.sa_family == AF_INET || IN6_IS_ADDR_V4MAPPED(&p->u.in6.sin6_addr)
                 ? 20 + 8 : 40 + 8;
    s->last = s->heard = ev_now(srv->loop);
    /* RFC 7252 §4.4: start Message IDs at a random value */
    s->next_mid = (uint16_t)(server_random(srv) * 65536.0);
    s->hnext = t->buckets[h & (t->nbuckets - 1)];
    t->buckets[h & (t->nbuckets - 1)] = s;
    list_push(t, s);
    if (++t->count > t->nbuckets)
        grow(t);
    return s;
}

struct session *
session_of_conn(struct server *srv, struct endpoint *ep, const struct peer *p, struct conn *c)
{
    struct session *s = calloc(1, sizeof *s);

    if (s == NULL)
        return NULL;
    s->ep = ep;
    s->peer = *p;
    s->conn = c;
    s->verified = 1;            /* RFC 8323 §4.1: the handshake proved the address */
    s->pool = POOL_CONN;
    s->last = s->heard = ev_now(srv->loop);
    list_push(&srv->sessions, s);
    return s;
}

void
session_verify(struct server *srv, struct session *s)
{
    struct session_table *t = &srv->sessions;

    if (s->verified || s->dead)
        return;
    s->verified = 1;
    srv->stats.verified++;
    /* what it holds leaves the unverified budgets; what waited for this goes out */
    exchange_session_verified(srv, s);
    answer_session_verified(srv, s);
    block_session_verified(srv, s);
    observe_session_verified(srv, s);
    list_unlink(t, s);
    s->pool = POOL_VERIFIED;    /* in no list now: make_room cannot pick it */
    if (!make_room(srv, POOL_VERIFIED))
        s->pool = POOL_UNVERIFIED;
    list_push(t, s);
}

int
session_credit_slow(const struct server *srv, const struct session *s, size_t len)
{
    /* RFC 9175 §2.4 item 3 with the QUIC bound (RFC 9000 §8.1): toward an address not
     * verified, at most three times the bytes received from it -- on the wire, so that
     * many small datagrams (pings) cannot multiply headers either */
    return s->verified || srv->cfg.verify == VERIFY_OFF ||
           (uint64_t)s->tx + len + s->hdr + s->reserve <= 3 * (uint64_t)s->rx;
}

void
session_rx(struct session *s, size_t len)
{
    uint64_t rx = (uint64_t)s->rx + len + s->hdr;

    s->rx = rx > UINT32_MAX ? UINT32_MAX : (uint32_t)rx;
}

int
session_send_slow(struct server *srv, struct session *s, const uint8_t *buf, size_t len)
{
    if (s->ep == NULL)
        return -1;
    if (!s->verified) {
        if (!session_credit_slow(srv, s, len)) {
            srv->stats.amplification++;
            return -1;
        }
        s->tx += (uint32_t)(len + s->hdr);
    }
    return s->ep->tp->send(s->ep, &s->peer, buf, len);
}

void
session_probe(struct server *srv, struct session *s)
{
    if (!s->verified && !s->dead && srv->cfg.verify != VERIFY_OFF)
        exchange_ping(srv, s);
}

void
session_sweep(struct server *srv)
{
    struct session_table *t = &srv->sessions;
    ev_tstamp now = ev_now(srv->loop), cutoff = now - srv->cfg.exchange_lifetime;

    for (int p = 0; p < 3; p++) {
        struct session *s = t->pool[p].lru, *prev;

        for (; p != POOL_CONN && s && s->last < cutoff; s = prev) {
            prev = s->prev;
            if (!session_busy(s))
                session_drop(srv, s);
        }
        for (s = t->pool[p].mru; s; s = s->next) {
            if (s->x1 || s->x2)         /* idle block transfers expire */
                block_session_sweep(srv, s, 0);
            /* RFC 7641 §4.5: a peer quiet for observe_check gets a CON check (over a
             * connection, the stream layer's keepalive asks instead) */
            if (s->obs && p != POOL_CONN && now - s->heard >= srv->cfg.observe_check)
                observe_check(srv, s);
        }
    }
}

int
session_audit(const struct server *srv, char *why, size_t len)
{
    const struct session_table *t = &srv->sessions;
    size_t n[2] = {0, 0}, bytes = 0, obs = 0;

    for (int p = 0; p < 2; p++)
        for (const struct session *s = t->pool[p].mru; s; s = s->next) {
            n[p]++;
            if (s->pool != p || s->dead || (p == POOL_VERIFIED && !s->verified) ||
                exchange_audit(srv, s, &bytes) < 0) {
                snprintf(why, len, "session in pool %d: pool %d dead %d verified %d held %zu",
                         p, s->pool, s->dead, s->verified, bytes);
                return -1;
            }
            bytes += block_audit(s);
            obs += observe_audit(s);
        }
    if (n[0] != t->pool[0].count || n[1] != t->pool[1].count || n[0] + n[1] != t->count) {
        snprintf(why, len, "pools hold %zu + %zu sessions, counted %zu + %zu = %zu", n[0],
                 n[1], t->pool[0].count, t->pool[1].count, t->count);
        return -1;
    }
    if (bytes != t->unv_bytes || obs != t->unv_observers ||
        (exchange_audit_pendings(srv) + answer_audit_pendings(srv)) != t->unv_pendings) {
        snprintf(why, len, "unverified budgets: bytes %zu counted %zu, observers %zu counted "
                 "%zu, pendings %zu counted %zu", bytes, t->unv_bytes, obs, t->unv_observers,
                 (exchange_audit_pendings(srv) + answer_audit_pendings(srv)), t->unv_pendings);
        return -1;
    }
    return 0;
}

void
session_endpoint_gone(struct server *srv, struct endpoint *ep)
{
    struct session_table *t = &srv->sessions;

    answer_endpoint_gone(srv, ep);
    exchange_endpoint_gone(srv, ep);
    for (int p = 0; p < 3; p++) {
        struct session *s, *next;

        for (s = t->pool[p].mru; s; s = next) {
            next = s->next;
            if (s->ep != ep)
                continue;
            observe_session_end(srv, s, MOONLET_SERVICE_UNAVAILABLE);
            session_drop(srv, s);
        }
    }
}

void
session_release(struct server *srv, struct session *s)
{
    (void)srv;
    if (s->refs && --s->refs == 0 && s->dead)
        free(s);
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

    if (t->buckets == NULL)     /* shutdown: the table went before the listeners */
        return NULL;
    for (struct session *s = t->buckets[h & (t->nbuckets - 1)]; s; s = s->hnext)
        if (s->hash == h && s->ep == ep && peer_equal(&s->peer, p))
            return s;
    return NULL;
}
