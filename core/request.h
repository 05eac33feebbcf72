/*
 * request.h -- the request view and response builder behind moonlet_req / moonlet_resp,
 * and the pending (separate) response. A request is parsed once from the message into
 * views (segments, queries, Accept, Content-Format); a response collects options in any
 * order and is serialised sorted (RFC 7252 §3.1).
 */
#ifndef REQUEST_H
#define REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "include/moonlet.h"
#include "msg.h"
#include "transport.h"

#define REQ_MAX_SEGMENTS 32     /* a deeper path cannot be registered: 4.04 */
#define REQ_MAX_QUERIES 32      /* more Uri-Query options: 4.00 */
#define RESP_MAX_OPTIONS 32
#define REQ_SCRATCH 16384     /* strings handed to one handler call */

struct view {
    const uint8_t *p;
    size_t len;
};

struct session;
struct resource;
struct server;
struct xfer1;
struct observer;
struct obs_group;

/* A Block option value (RFC 7959 §2.2): NUM (20 bits), M, SZX. */
struct block_opt {
    uint32_t num;
    uint8_t more, szx;
};

/* What a request asked of block-wise transfer (block.c), kept with a deferred answer. */
struct block_ctx {
    uint8_t has_b1, has_b2, want_size2;
    uint8_t capped, cap_szx;    /* no larger blocks than cap_szx (the 3x rule, multicast) */
    uint8_t whole;              /* the peer takes no blocks it did not ask for (RFC 8323
                                 * §5.3.2: no Block-Wise-Transfer in its CSM) */
    uint8_t bert_ok;            /* the peer takes BERT (RFC 8323 §6: a reliable transport
                                 * and Block-Wise-Transfer in its CSM) */
    uint16_t bert;              /* bytes of a BERT block it takes (a multiple of 1024 within
                                 * its Max-Message-Size); 0: none */
    struct block_opt b1;        /* the Block1 to echo in the final response */
    struct block_opt b2;        /* the Block2 the client asked for */
    uint32_t variant;           /* hash of what selects the representation: query, Accept */
    uint64_t res_id;
    unsigned method;
};

struct moonlet_req {
    struct server *srv;
    struct session *sess;
    const struct msg *m;
    struct resource *res;
    unsigned method;
    int ct, accept;
    unsigned no_response;       /* RFC 7967 bitmask, 0 if absent */
    int multicast;              /* it came to a group address (RFC 7252 §8) */
    const uint8_t *payload;
    size_t payload_len;
    moonlet_pending *pd;        /* set by moonlet_defer */
    struct met_res *met;        /* the latency histogram of its resource (metrics.c) */
    ev_tstamp t0;               /* when it arrived: its loop turn */
    int answered;               /* the pending was sent inside the handler */
    char *path;                 /* built on first moonlet_req_path */
    struct block_ctx blk;
    struct xfer1 *x1;           /* the reassembled body, owned until the request is over */
    struct observer *obs;       /* the observer this request registers (observe.c) */
    struct obs_group *group;    /* set: not a peer's request but a notification's build */
    char *scratch;              /* NUL-terminated copies handed to the handler */
    size_t scratch_len, scratch_cap;
    unsigned nseg, nq;
    /* the views below are filled by request_parse; everything above is zeroed per request */
    struct view seg[REQ_MAX_SEGMENTS];
    struct view q[REQ_MAX_QUERIES];
};

struct resp_opt {
    uint16_t num, len;
    uint32_t off;
};

struct moonlet_resp {
    uint8_t code;
    int ct;
    unsigned nopt;
    struct resp_opt opt[RESP_MAX_OPTIONS];
    uint8_t *obuf;              /* option values */
    size_t olen, ocap;
    uint8_t *payload;
    size_t plen, pcap;
    size_t max_payload;
};

struct moonlet_pending {
    struct moonlet_pending *next, *prev;    /* server's list */
    struct server *srv;
    struct session *sess;
    struct unit *unit;          /* held while the pending lives (reload drains on it) */
    struct moonlet_req *req;    /* while the handler runs */
    uint8_t con, tkl, acked, gone;
    uint8_t notify_only;        /* a notification's build: never answers the peer */
    uint8_t multicast;          /* answered as a multicast request is (RFC 7252 §8.2) */
    uint8_t unv;                /* counted against unverified_pendings */
    uint16_t mid;
    uint8_t token[MSG_TOKEN_MAX];
    unsigned no_response;
    struct block_ctx blk;
    struct observer *obs;       /* registers when the answer is a success */
    struct obs_group *group;    /* a notification's build: the answer goes to its group */
    struct resource *res;       /* for the notify after a change (autonotify) */
    struct met_res *met;        /* as its request's */
    ev_tstamp t0;
    unsigned method;
    ev_timer ack_timer;         /* separate_after: send the empty ACK */
    ev_timer deadline;
    struct moonlet_resp resp;
};

/* Fill req from a parsed, option-checked request. Returns 0 or a response code (4.00
 * for too many queries, 4.04 for a path too deep to exist). */
unsigned request_parse(struct moonlet_req *req, const struct msg *m);
/* A heap copy of a request and of the datagram its views point into, readable after the
 * receive buffer is reused (a runtime's handler waiting past its first slice). No scratch
 * area: use the views. Free with request_detached_free. NULL on ENOMEM. */
struct moonlet_req *request_detach(const struct moonlet_req *req);
void request_detached_free(struct moonlet_req *req);
/* Copy bytes into the request's scratch area, NUL-terminated; NULL when the area
 * (REQ_SCRATCH bytes per request) is used up. */
char *request_scratch(struct moonlet_req *req, const void *p, size_t len);

void resp_init(struct moonlet_resp *r, size_t max_payload);
void resp_reset(struct moonlet_resp *r);
void resp_free(struct moonlet_resp *r);
/* A response with just a code and a diagnostic text (RFC 7252 §5.5.2). */
void resp_simple(struct moonlet_resp *r, unsigned code, const char *diag);
/* Serialise into buf as (type, mid, token). Returns the length, or -1 if it does not fit. */
long resp_write(const struct moonlet_resp *r, uint8_t *buf, size_t cap, unsigned type,
                uint16_t mid, const uint8_t *token, unsigned tkl);
/* Serialise only the options and payload (the framing adds header and token). Returns the
 * length, or -1 if it does not fit. */
long resp_body(const struct moonlet_resp *r, uint8_t *buf, size_t cap);

#endif
