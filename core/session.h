/*
 * session.h -- per-peer state: the deduplication ring (RFC 7252 §4.5), the queue of
 * server-originated CONs (NSTART, §4.7), address verification (RFC 9175 §2.4) and the
 * table of peers with its bounds.
 *
 * Every peer starts unverified: a datagram's source address can be spoofed. An unverified
 * peer is sent at most three times the bytes it sent (the QUIC rule, RFC 9000 §8.1), and
 * what it holds lives in a pool of its own, small and evicted least recently active first
 * whatever it holds, so spoofed peers can never fill the table: a new peer always gets a
 * session. A peer is verified once it returns something only a receiver of our datagrams
 * can know: an Echo value (RFC 9175 §2.3) or the Message ID of a CON we sent it (a
 * CoAP ping answered by RST, or an acknowledged CON). Verified peers live in the main
 * pool (max_sessions), where only idle sessions are evicted.
 */
#ifndef SESSION_H
#define SESSION_H

#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "transport.h"

enum dedup_state {
    DEDUP_FREE = 0,
    DEDUP_BUSY,     /* handler running or deferred; no response yet */
    DEDUP_ACKED,    /* empty ACK sent; the response goes separately */
    DEDUP_DONE,     /* response cached (len 0: nothing to resend, e.g. a NON) */
    DEDUP_HELD,     /* response cached, not yet sent: it waits for the peer's verification */
};

struct dedup {
    uint16_t mid;
    uint8_t state;
    uint8_t con;
    uint8_t tkl;
    uint8_t token[8];                   /* a MID reused with another token is a new request */
    uint16_t len, cap;
    ev_tstamp expires;
    uint8_t *resp;
};

struct outmsg;
struct held;

/* POOL_CONN: the session of a reliable transport's connection (RFC 8323), verified by
 * its handshake, owned by the connection: in no hash chain, under no session cap (the
 * connection limits are the stream layer's), on its list for the sweep. */
enum { POOL_UNVERIFIED, POOL_VERIFIED, POOL_CONN };

struct conn;

/* The generic part comes first; the UDP message layer's (exchange.c: MIDs, dedup, the
 * CON queue, the 3x rule) follows, unused by a connection's session, which has conn. */
struct session {
    struct session *hnext;              /* hash chain */
    struct session *prev, *next;        /* its pool's activity list, most recent first */
    struct endpoint *ep;
    struct peer peer;
    uint32_t hash;
    ev_tstamp last;                     /* last request (the idle sweep) */
    ev_tstamp heard;                    /* last datagram of any kind (observer liveness) */
    unsigned refs;                      /* pendings and multicast answers holding it */
    struct conn *conn;                  /* its connection (stream.c), NULL over UDP */
    struct xfer1 *x1;                   /* Block1 uploads in progress (block.c) */
    struct xfer2 *x2;                   /* Block2 downloads and their snapshots */
    unsigned nx1, nx2;
    struct observer *obs;               /* its observations (observe.c) */
    unsigned nobs;
    /* -- the UDP message layer's -- */
    uint16_t next_mid;
    uint8_t verified;                   /* its address is proven (RFC 9175 §2.4) */
    uint8_t pool;                       /* the list it is in: POOL_VERIFIED only when both
                                         * verified and admitted under max_sessions */
    uint8_t dead;                       /* evicted while referenced: freed at refs 0 */
    uint32_t rx, tx;                    /* bytes from / to it while unverified (3x rule),
                                         * counted on the wire: with IP and UDP headers */
    uint8_t hdr;                        /* those headers: 28 (IPv4), 48 (IPv6) */
    uint16_t reserve;                   /* credit kept back for the repetitions of a
                                         * verification ping: it goes before anything */
    struct dedup *dd;
    uint16_t *dd_mid;                   /* the entries' MIDs, compact for the scan */
    uint16_t dd_cap, dd_n, dd_head;     /* slots [0, dd_n) in use; dd_head: next to reuse */
    size_t dd_bytes;
    struct outmsg *out_head, *out_tail; /* NSTART queue: the head is in flight */
    struct held *held, *held_tail;      /* answers waiting for its verification (3x rule) */
    /* round trips and congestion toward the peer, kept by observe.c (RFC 7641 §4.5.1,
     * RFC 7252 §4.7) */
    float srtt;                         /* smoothed round-trip time (s); 0: no sample yet */
    ev_tstamp cc_wait;                  /* a CON notification has waited for the peer since
                                         * (0: none outstanding) */
};

struct session_pool {
    struct session *mru, *lru;          /* activity list ends */
    size_t count;
};

struct session_table {
    struct session **buckets;
    size_t nbuckets, count;
    size_t dd_bytes;                    /* all peers' cached response bytes */
    uint64_t key;                       /* peer hash key, random per server */
    struct session_pool pool[3];        /* POOL_UNVERIFIED, POOL_VERIFIED, POOL_CONN */
    /* what unverified peers hold, against their own budgets (cfg.unverified_*) */
    size_t unv_bytes;                   /* queued answers and upload buffers */
    size_t unv_pendings, unv_observers;
};

struct server;

int session_table_init(struct session_table *t);
void session_table_fini(struct server *srv);
/* The session of a peer, created if absent (unverified unless verification is off), which
 * may evict the least recently active unverified one. NULL only without memory. Marks it
 * active now. */
struct session *session_get(struct server *srv, struct endpoint *ep, const struct peer *p);
/* The session of connection c from peer p on ep (RFC 8323): verified, in POOL_CONN. The
 * connection closes it (session_close, c unset first); when the core drops it instead
 * (shutdown, its listener closing) ep's transport hears it through detach. NULL only
 * without memory. */
struct session *session_of_conn(struct server *srv, struct endpoint *ep, const struct peer *p,
                                struct conn *c);
/* The session of a peer if it exists (no creation, no activity mark). */
struct session *session_find(struct server *srv, struct endpoint *ep, const struct peer *p);
/* Forget idle sessions older than the exchange lifetime; check quiet observers. */
void session_sweep(struct server *srv);
/* The peer's security association ended (DTLS close_notify, a fatal alert, idle time, a
 * new association): s and everything it holds go without a word to the peer, which can no
 * longer read us; its deferred answers' owners learn MOONLET_EGONE. */
void session_close(struct server *srv, struct session *s);
/* Does s hold work in progress (a deferred answer, a CON in flight, an upload half done,
 * an observation)? */
int session_busy(const struct session *s);
/* A pending or multicast answer lets go of s (an evicted session is freed at the last). */
void session_release(struct server *srv, struct session *s);
/* Listener ep closes: its peers' observations and deferred answers end with 5.03 (sent
 * before the socket goes), their sessions and everything they hold are freed. */
void session_endpoint_gone(struct server *srv, struct endpoint *ep);

/* The peer proved its address: the 3x rule no longer holds for it, what it held is sent,
 * and it joins the verified pool -- unless that pool is full of busy sessions: it then
 * stays in the unverified one, evicted first when room is needed. */
void session_verify(struct server *srv, struct session *s);
/* The 3x rule for an unverified s (session.c): may it be sent a datagram of len bytes? */
int session_credit_slow(const struct server *srv, const struct session *s, size_t len);
/* Queue buf to an unverified s within the 3x rule (session.c). 0 or -1. */
int session_send_slow(struct server *srv, struct session *s, const uint8_t *buf, size_t len);
/* A datagram of len bytes came from an unverified s: more credit (session.c). */
void session_rx(struct session *s, size_t len);

/* May s be sent a datagram of len bytes now? Always, once verified: the fast path of every
 * answer is this one test. */
static inline int
session_credit(const struct server *srv, const struct session *s, size_t len)
{
    return s->verified || session_credit_slow(srv, s, len);
}

/* Queue buf to the peer, within the 3x rule while it is unverified. 0, or -1 when that
 * rule (or the transport) refused it. */
static inline int
session_send(struct server *srv, struct session *s, const uint8_t *buf, size_t len)
{
    if (!s->verified || s->ep == NULL)
        return session_send_slow(srv, s, buf, len);
    return s->ep->tp->send(s->ep, &s->peer, buf, len);
}

/* A datagram of len bytes came from the peer of s, now (for a request, session_get has
 * marked the time already): liveness, and more credit while it is unverified. */
static inline void
session_heard(ev_tstamp now, struct session *s, size_t len)
{
    s->heard = now;
    if (!s->verified)
        session_rx(s, len);
}
/* s is about to hold lasting state (an observation, a deferred answer, an upload): if it is
 * unverified, start proving its address with a CoAP ping (RFC 7252 §4.3). */
void session_probe(struct server *srv, struct session *s);

/* Consistency check for tests and fuzzing: the pools' lists and counts agree, and the
 * unverified budgets equal what the sessions hold. 0, or -1 with the discrepancy in why. */
int session_audit(const struct server *srv, char *why, size_t len);

/* Dedup: the live entry for mid, or NULL. */
struct dedup *dedup_find(struct server *srv, struct session *s, uint16_t mid);
/* A new BUSY entry for mid (overwrites the oldest when the ring is full). */
struct dedup *dedup_add(struct server *srv, struct session *s, uint16_t mid, int con,
                        const uint8_t *token, unsigned tkl);
/* Start the entry over as a new BUSY exchange (same MID, another request). */
void dedup_reset(struct server *srv, struct dedup *d, int con, const uint8_t *token,
                 unsigned tkl);
/* Cache the response bytes in the entry (DONE). Returns 0, or -1 if they cannot be kept:
 * the entry is then freed (a retransmission will be processed again). */
int dedup_store(struct server *srv, struct session *s, struct dedup *d, const uint8_t *buf,
                size_t len);

#endif
