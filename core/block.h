/*
 * block.h -- block-wise transfer (RFC 7959) with Request-Tag (RFC 9175): Block1
 * reassembly before the handler, Block2 slicing after it, for every runtime alike.
 */
#ifndef BLOCK_H
#define BLOCK_H

#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "request.h"

struct server;
struct session;
struct resource;

/* A representation snapshot: what every block of one transfer is cut from (§2.4). */
struct rep {
    struct rep *next, *prev;
    unsigned refs;
    uint64_t res_id;
    uint32_t variant;
    uint8_t etag[8], etag_len;
    size_t bytes;
    struct moonlet_resp resp;   /* code, options, the whole payload */
};

/* A peer's Block2 transfer. */
struct xfer2 {
    struct xfer2 *next;
    uint64_t res_id;
    uint32_t variant;
    unsigned method;
    struct rep *rep;
    ev_tstamp expires;
};

/* A peer's Block1 upload in progress. */
struct xfer1 {
    struct xfer1 *next;
    uint64_t res_id;
    uint32_t variant;
    unsigned method;
    uint8_t tag[8], taglen, has_tag;
    uint8_t szx;
    uint8_t unv;                /* its buffer counts against unverified_bytes */
    int ct;
    uint8_t *buf;
    size_t len, cap;
    ev_tstamp expires;
};

enum { BLOCK_PASS, BLOCK_ANSWERED };

/* Before the handler: parse Block1/Block2, serve Block2 continuations from a snapshot,
 * reassemble Block1. BLOCK_ANSWERED: resp holds the answer (a block, 2.31 or an error);
 * BLOCK_PASS: call the handler (req->payload is the whole body after the last block). */
int block_request(struct server *srv, struct moonlet_req *req, struct resource *r,
                  struct moonlet_resp *resp);
/* After the handler (or when a deferred answer is sent): slice a large representation,
 * echo Block1. May replace resp by an error (a NUM past the end). */
void block_response(struct server *srv, struct session *s, const struct block_ctx *ctx,
                    struct moonlet_resp *resp);
/* A notification (RFC 7641 with RFC 7959 §3.4): a large representation becomes its
 * block 0 in resp. Returns its snapshot (one reference) for block_attach, or NULL. */
struct rep *block_notification(struct server *srv, const struct block_ctx *c,
                               struct moonlet_resp *resp);
/* s fetches the rest of rep's blocks like a transfer of its own. */
void block_attach(struct server *srv, struct session *s, const struct block_ctx *c,
                  struct rep *rep);
void block_rep_release(struct server *srv, struct rep *rep);
/* Give resp an ETag (a hash of its content and format) unless it has one. */
void block_etag_add(struct moonlet_resp *resp);
/* The request is over: release the reassembly buffer it used. */
void block_request_done(struct server *srv, struct moonlet_req *req);
/* Answers to this request are cut into blocks small enough that one fits budget bytes
 * (RFC 7252 §11.3: an unverified peer of a group request gets its answer within the 3x
 * rule; it fetches the rest by unicast, RFC 7959 §2.4). */
void block_cap(struct block_ctx *c, size_t budget, unsigned tkl);
/* Consistency check: the upload buffer bytes of s counted against unverified_bytes. */
size_t block_audit(const struct session *s);
/* The session was verified: its upload buffers leave the unverified budget. */
void block_session_verified(struct server *srv, struct session *s);
/* Expire idle transfers of a session; free all of them when gone is set. */
void block_session_sweep(struct server *srv, struct session *s, int gone);
/* A resource was removed: every transfer of it ends (its uploads' buffers and its
 * snapshots are freed). */
void block_drop_resource(struct server *srv, uint64_t res_id);
/* The snapshot cache at shutdown. */
void block_fini(struct server *srv);

#endif
