/*
 * session.h -- per-peer state: the deduplication ring (RFC 7252 §4.5), the queue of
 * server-originated CONs (NSTART, §4.7), and the table of peers with its bounds.
 *
 * Bounds: at most cfg.dedup_per_peer dedup entries per peer (a ring: the oldest is
 * overwritten), at most cfg.max_sessions peers and cfg.dedup_bytes of cached responses in
 * total; over either total, the least recently active idle peer is forgotten. A peer idle
 * for EXCHANGE_LIFETIME is forgotten by the sweep, unless it has work in progress or
 * observes something.
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

struct session {
    struct session *hnext;              /* hash chain */
    struct session *prev, *next;        /* activity list, most recent first */
    struct endpoint *ep;
    struct peer peer;
    uint32_t hash;
    ev_tstamp last;
    unsigned refs;                      /* pendings and outgoing CONs holding it */
    uint16_t next_mid;
    struct dedup *dd;
    uint16_t *dd_mid;                   /* the entries' MIDs, compact for the scan */
    uint16_t dd_cap, dd_n, dd_head;     /* slots [0, dd_n) in use; dd_head: next to reuse */
    size_t dd_bytes;
    struct outmsg *out_head, *out_tail; /* NSTART queue: the head is in flight */
    struct xfer1 *x1;                   /* Block1 uploads in progress (block.c) */
    struct xfer2 *x2;                   /* Block2 downloads and their snapshots */
    unsigned nx1, nx2;
    struct observer *obs;               /* its observations (observe.c) */
    unsigned nobs;
};

struct session_table {
    struct session **buckets;
    size_t nbuckets, count;
    size_t dd_bytes;                    /* all peers' cached response bytes */
    uint64_t key;                       /* peer hash key, random per server */
    struct session *mru, *lru;          /* activity list ends */
};

struct server;

int session_table_init(struct session_table *t);
void session_table_fini(struct server *srv);
/* The session of a peer, created if absent (NULL when over max_sessions with every
 * session busy, or out of memory). Marks it active now. */
struct session *session_get(struct server *srv, struct endpoint *ep, const struct peer *p);
/* Forget idle sessions older than the exchange lifetime. */
void session_sweep(struct server *srv);
void session_release(struct server *srv, struct session *s);
/* Listener ep closes: its peers' observations and deferred answers end with 5.03 (sent
 * before the socket goes), their sessions and everything they hold are freed. */
void session_endpoint_gone(struct server *srv, struct endpoint *ep);

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



/* The session of a peer if it exists (no creation, no activity mark). */
struct session *session_find(struct server *srv, struct endpoint *ep, const struct peer *p);
#endif
