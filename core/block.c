/*
 * block.c -- block-wise transfer (RFC 7959; Request-Tag, RFC 9175 §3).
 *
 * Block2: a response larger than one block becomes a snapshot (struct rep) keyed by
 * resource, variant (query, Accept) and ETag, shared by every peer downloading the same
 * bytes; each peer's transfer points at its snapshot, so later blocks never run the
 * handler again and every block of a transfer comes from one representation (§2.4). A
 * request for block k without a transfer (random access, resumption) runs the handler of
 * a safe method and serves block k. Snapshots live while a transfer uses them.
 *
 * Block1: blocks are reassembled per peer, resource and Request-Tag, strictly in order;
 * the handler runs once with the whole body. Bounded per body (max_body: 4.13 with Size1,
 * early when Size1 says so), per peer (block_per_peer) and in total (block1_bytes: 5.03);
 * idle uploads expire after block_idle.
 */
#include <stdlib.h>
#include <string.h>

#include "block.h"
#include "crash.h"
#include "log.h"
#include "option.h"
#include "server.h"
#include "session.h"
#include "tree.h"

#define SZX_BERT 7

static unsigned
server_szx(const struct server *srv)
{
    unsigned szx = 0;

    while ((16u << (szx + 1)) <= srv->cfg.block_size && szx < 6)
        szx++;
    return szx;
}

/* The SZX of the blocks of a response: ours, or smaller if the client asked for smaller
 * (§2.4), or if the 3x rule caps it; BERT (RFC 8323 §6) to a peer that takes blocks of
 * 2 KiB or more, unless it asked for a smaller SZX. */
static unsigned
reply_szx(const struct server *srv, const struct block_ctx *c)
{
    unsigned szx = server_szx(srv);

    if (c->bert && !c->capped && (c->has_b2 ? c->b2.szx == SZX_BERT : c->bert >= 2048))
        return SZX_BERT;
    if (c->has_b2 && c->b2.szx < szx)
        szx = c->b2.szx;
    if (c->capped && c->cap_szx < szx)
        szx = c->cap_szx;
    return szx;
}

/* What NUM counts in, for a block size exponent: 1024 bytes for BERT (RFC 8323 §6). */
static size_t
block_unit(unsigned szx)
{
    return szx == SZX_BERT ? 1024 : 16u << szx;
}

/* The bytes of one block of a response at szx: a BERT block is as many units as the peer
 * takes. */
static size_t
reply_size(const struct block_ctx *c, unsigned szx)
{
    return szx == SZX_BERT ? c->bert : 16u << szx;
}

static struct block_opt
block_decode(uint32_t v)
{
    return (struct block_opt){v >> 4, (uint8_t)((v >> 3) & 1), (uint8_t)(v & 7)};
}

static uint32_t
block_encode(uint32_t num, unsigned more, unsigned szx)
{
    return num << 4 | (more ? 8u : 0u) | szx;
}

/* FNV-1a's step over eight bytes at a time (a shift folds the high bits back in), the tail
 * a byte at a time: an ETag of a 256 KiB representation costs ~50 us, not the 0.4 ms of a
 * byte-wise loop (found by the BERT download benchmark of issue 15) */
static uint64_t
hash64(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;

    for (; n >= 8; n -= 8, b += 8) {
        uint64_t w;

        memcpy(&w, b, 8);
        h = (h ^ w) * 1099511628211ULL;
        h ^= h >> 29;
    }
    for (; n; n--)
        h = (h ^ *b++) * 1099511628211ULL;
    return h;
}

/* What selects a representation besides the resource (§2.4): the query and Accept. */
static uint32_t
variant_of(const struct moonlet_req *req)
{
    uint64_t h = hash64(14695981039346656037ULL, &req->accept, sizeof req->accept);

    for (unsigned i = 0; i < req->nq; i++) {
        h = hash64(h, &req->q[i].len, sizeof req->q[i].len);
        h = hash64(h, req->q[i].p, req->q[i].len);
    }
    return (uint32_t)(h ^ h >> 32);
}

static int
safe_method(unsigned m)
{
    return m == MOONLET_GET || m == MOONLET_FETCH;
}

static void
simple(struct moonlet_resp *resp, unsigned code, const char *diag)
{
    resp_reset(resp);
    resp_simple(resp, code, diag);
}

/* ---- snapshots ----------------------------------------------------------------------- */

static void
rep_release(struct server *srv, struct rep *r)
{
    if (r == NULL || --r->refs > 0)
        return;
    if (r->prev)
        r->prev->next = r->next;
    else
        srv->reps = r->next;
    if (r->next)
        r->next->prev = r->prev;
    srv->rep_bytes -= r->bytes;
    resp_free(&r->resp);
    free(r);
}

/* The ETag of a representation: the handler's, else a hash of its bytes and format. */
static void
etag_of(const struct moonlet_resp *resp, uint8_t etag[8], uint8_t *len)
{
    uint64_t h;

    for (unsigned i = 0; i < resp->nopt; i++) {
        if (resp->opt[i].num == MOONLET_OPT_ETAG && resp->opt[i].len <= 8) {
            memcpy(etag, resp->obuf + resp->opt[i].off, resp->opt[i].len);
            *len = (uint8_t)resp->opt[i].len;
            return;
        }
    }
    h = hash64(14695981039346656037ULL, &resp->ct, sizeof resp->ct);
    h = hash64(h, resp->payload, resp->plen);
    memcpy(etag, &h, 8);
    *len = 8;
}

static int
has_option(const struct moonlet_resp *resp, unsigned num)
{
    for (unsigned i = 0; i < resp->nopt; i++)
        if (resp->opt[i].num == num)
            return 1;
    return 0;
}

/* The snapshot of resp (shared if an identical one exists), or NULL over block2_bytes or
 * without memory. Takes the payload buffer of resp when it makes a new one. */
static struct rep *
rep_get(struct server *srv, const struct block_ctx *c, struct moonlet_resp *resp)
{
    uint8_t etag[8], elen;
    struct rep *r;

    etag_of(resp, etag, &elen);
    for (r = srv->reps; r; r = r->next) {
        if (r->res_id == c->res_id && r->variant == c->variant && r->etag_len == elen &&
            memcmp(r->etag, etag, elen) == 0 && r->bytes == resp->plen) {
            r->refs++;
            return r;
        }
    }
    if (srv->rep_bytes + resp->plen > srv->cfg.block2_bytes || (r = calloc(1, sizeof *r)) == NULL)
        return NULL;
    r->refs = 1;
    r->res_id = c->res_id;
    r->variant = c->variant;
    memcpy(r->etag, etag, elen);
    r->etag_len = elen;
    r->bytes = resp->plen;
    resp_init(&r->resp, 0);
    r->resp.code = resp->code;
    r->resp.ct = resp->ct;
    for (unsigned i = 0; i < resp->nopt; i++)
        if (resp->opt[i].num != MOONLET_OPT_ETAG &&
            moonlet_resp_option(&r->resp, resp->opt[i].num, resp->obuf + resp->opt[i].off,
                                resp->opt[i].len) < 0) {
            resp_free(&r->resp);
            free(r);
            return NULL;
        }
    /* take the payload: the response gets a new buffer for its block */
    r->resp.payload = resp->payload;
    r->resp.plen = resp->plen;
    r->resp.pcap = resp->pcap;
    resp->payload = NULL;
    resp->plen = resp->pcap = 0;
    r->next = srv->reps;
    if (srv->reps)
        srv->reps->prev = r;
    srv->reps = r;
    srv->rep_bytes += r->bytes;
    return r;
}

/* resp := block num of the representation (§2.4), with ETag, Block2 and Size2. */
static void
serve_block(struct server *srv, const struct block_ctx *c, const struct moonlet_resp *full,
            const uint8_t *etag, unsigned elen, struct moonlet_resp *resp)
{
    unsigned szx = reply_szx(srv, c);
    size_t size = reply_size(c, szx), unit = block_unit(szx);
    size_t off = (size_t)(c->has_b2 ? c->b2.num : 0) * unit;
    size_t total = full->plen, n;
    const uint8_t *src = full->payload;

    if (off >= total && off > 0) {
        /* the choice (RFC 7959 leaves it open): 4.02, the Block2 option is bad */
        simple(resp, MOONLET_BAD_OPTION, "block beyond the end");
        return;
    }
    n = total - off < size ? total - off : size;
    if (full == resp) {     /* slicing the handler's own response in place */
        memmove(resp->payload, src + off, n);
        resp->plen = n;
    } else {
        resp_reset(resp);   /* keeps its buffers */
        resp->code = full->code;
        resp->ct = full->ct;
        for (unsigned i = 0; i < full->nopt; i++)
            moonlet_resp_option(resp, full->opt[i].num, full->obuf + full->opt[i].off,
                                full->opt[i].len);
        resp->max_payload = (size_t)-1;     /* a block is never over the limit */
        moonlet_resp_payload(resp, src + off, n);
        resp->max_payload = srv->cfg.max_payload;
    }
    if (!has_option(resp, MOONLET_OPT_ETAG))
        moonlet_resp_option(resp, MOONLET_OPT_ETAG, etag, elen);
    moonlet_resp_option_uint(resp, MOONLET_OPT_BLOCK2,
                             block_encode((uint32_t)(off / unit), off + n < total, szx));
    if (off > 0 && off + n >= total)    /* the last of several blocks: a download done */
        srv->m.downloads_done++;
    /* §4: Size2 tells the size on the first block, and whenever asked with Size2 = 0 */
    if (off == 0 || c->want_size2)
        moonlet_resp_option_uint(resp, MOONLET_OPT_SIZE2, (uint32_t)total);
}

static void xfer2_free(struct server *srv, struct session *s, struct xfer2 *x);

/* The peer's live transfer of this response; one past block_idle is gone even if the
 * sweep has not run yet. */
static struct xfer2 *
xfer2_find(struct server *srv, struct session *s, const struct block_ctx *c)
{
    for (struct xfer2 *x = s->x2; x; x = x->next) {
        if (x->res_id == c->res_id && x->variant == c->variant && x->method == c->method) {
            if (x->expires > ev_now(srv->loop))
                return x;
            xfer2_free(srv, s, x);
            return NULL;
        }
    }
    return NULL;
}

static void
xfer2_free(struct server *srv, struct session *s, struct xfer2 *x)
{
    struct xfer2 **pp = &s->x2;

    while (*pp != x)
        pp = &(*pp)->next;
    *pp = x->next;
    rep_release(srv, x->rep);
    s->nx2--;
    srv->m.downloads_open--;
    free(x);
}

/* Remember that this peer downloads rep (replacing an older transfer of the same key). */
static void
xfer2_set(struct server *srv, struct session *s, const struct block_ctx *c, struct rep *rep)
{
    struct xfer2 *x = xfer2_find(srv, s, c);

    if (x == NULL) {
        if (s->nx2 >= srv->cfg.block_per_peer) {    /* forget the oldest (the list tail) */
            struct xfer2 *last = s->x2;

            while (last->next)
                last = last->next;
            xfer2_free(srv, s, last);
        }
        if ((x = calloc(1, sizeof *x)) == NULL) {
            rep_release(srv, rep);
            return;
        }
        srv->m.downloads_open++;
        x->res_id = c->res_id;
        x->variant = c->variant;
        x->method = c->method;
        x->next = s->x2;
        s->x2 = x;
        s->nx2++;
    } else {
        rep_release(srv, x->rep);
    }
    x->rep = rep;
    x->expires = ev_now(srv->loop) + srv->cfg.block_idle;
}

void
block_response(struct server *srv, struct session *s, const struct block_ctx *c,
               struct moonlet_resp *resp)
{
    size_t size;

    /* blocks when asked for, or when larger than one; without a cap a block is block_size
     * (a power of two), so most answers need no block arithmetic at all */
    size_t one = c->capped ? 16u << reply_szx(srv, c) : srv->cfg.block_size;

    if (c->bert > one && !c->capped)
        one = c->bert;          /* it fits the peer's Max-Message-Size: no blocks at all */
    if (MSG_CLASS(resp->code) == 2 && (c->has_b2 || (resp->plen > one && !c->whole))) {
        unsigned szx = reply_szx(srv, c);

        size = reply_size(c, szx);
        if (resp->plen <= size && (!c->has_b2 || c->b2.num == 0)) {
            if (c->has_b2)      /* §2.4: it fits: block 0 is the whole of it */
                moonlet_resp_option_uint(resp, MOONLET_OPT_BLOCK2, block_encode(0, 0, szx));
        } else {
            struct rep *rep = s ? rep_get(srv, c, resp) : NULL;
            uint8_t etag[8], elen;

            if (rep) {
                xfer2_set(srv, s, c, rep);
                serve_block(srv, c, &rep->resp, rep->etag, rep->etag_len, resp);
            } else {
                /* no room for a snapshot: cut this block straight from the response;
                 * a later block runs the handler again (the ETag shows any change) */
                etag_of(resp, etag, &elen);
                serve_block(srv, c, resp, etag, elen, resp);
            }
        }
    }
    /* §2.3: the response to the last block of a Block1 transfer carries its Block1 */
    if (c->has_b1)
        moonlet_resp_option_uint(resp, MOONLET_OPT_BLOCK1,
                                 block_encode(c->b1.num, 0, c->b1.szx));
}

struct rep *
block_notification(struct server *srv, const struct block_ctx *c, struct moonlet_resp *resp)
{
    struct rep *rep;
    uint8_t etag[8], elen;
    struct block_ctx nc = *c;

    /* one body for every observer of the group, whatever carries it: no BERT */
    nc.bert = 0;
    if (MSG_CLASS(resp->code) != 2 || resp->plen <= (16u << server_szx(srv)))
        return NULL;
    if ((rep = rep_get(srv, &nc, resp)) != NULL) {
        serve_block(srv, &nc, &rep->resp, rep->etag, rep->etag_len, resp);
        return rep;
    }
    etag_of(resp, etag, &elen);     /* no room for a snapshot: block 0 all the same */
    serve_block(srv, &nc, resp, etag, elen, resp);
    return NULL;
}

void
block_attach(struct server *srv, struct session *s, const struct block_ctx *c, struct rep *rep)
{
    rep->refs++;
    xfer2_set(srv, s, c, rep);
}

void
block_rep_release(struct server *srv, struct rep *rep)
{
    rep_release(srv, rep);
}

void
block_etag_add(struct moonlet_resp *resp)
{
    uint8_t etag[8], elen;

    if (has_option(resp, MOONLET_OPT_ETAG))
        return;
    etag_of(resp, etag, &elen);
    moonlet_resp_option(resp, MOONLET_OPT_ETAG, etag, elen);
}

/* ---- Block1 ------------------------------------------------------------------------ */

/* RFC 9175 §3.3: blocks belong to one operation when they agree on the resource, the
 * method, the options that are not about the blocks (the query and Accept: the variant)
 * and the Request-Tag. */
static int
xfer1_match(const struct xfer1 *x, const struct block_ctx *c, const struct msg_opt *tag)
{
    return x->res_id == c->res_id && x->method == c->method && x->variant == c->variant &&
           x->has_tag == (tag != NULL) &&
           (!tag || (x->taglen == tag->len && memcmp(x->tag, tag->val, tag->len) == 0));
}

static void
xfer1_unlink(struct session *s, struct xfer1 *x)
{
    struct xfer1 **pp = &s->x1;

    while (*pp && *pp != x)
        pp = &(*pp)->next;
    if (*pp) {
        *pp = x->next;
        s->nx1--;
    }
    x->next = NULL;
}

static void
xfer1_free(struct server *srv, struct xfer1 *x)
{
    if (x->unv)
        srv->sessions.unv_bytes -= x->cap;
    srv->x1_bytes -= x->cap;
    srv->m.uploads_open--;
    free(x->buf);
    free(x);
}

static void
xfer1_drop(struct server *srv, struct session *s, struct xfer1 *x)
{
    xfer1_unlink(s, x);
    xfer1_free(srv, x);
}

static int
too_large(struct server *srv, struct moonlet_resp *resp)
{
    /* §2.9.3: 4.13 with Size1 telling the largest body we take */
    simple(resp, MOONLET_REQUEST_ENTITY_TOO_LARGE, "body too large");
    moonlet_resp_option_uint(resp, MOONLET_OPT_SIZE1, (uint32_t)srv->cfg.max_body);
    return BLOCK_ANSWERED;
}

static int
incomplete(struct moonlet_resp *resp, const char *why)
{
    /* §2.5: a block out of order, or missing ones, is 4.08 */
    simple(resp, MOONLET_REQUEST_ENTITY_INCOMPLETE, why);
    return BLOCK_ANSWERED;
}

/* The upload these blocks belong to; one idle past block_idle is dropped here. */
static struct xfer1 *
xfer1_find(struct server *srv, struct session *s, const struct block_ctx *c,
           const struct msg_opt *tag)
{
    for (struct xfer1 *x = s->x1; x; x = x->next) {
        if (xfer1_match(x, c, tag)) {
            if (x->expires > ev_now(srv->loop))
                return x;
            xfer1_drop(srv, s, x);
            return NULL;
        }
    }
    return NULL;
}

static int
block1(struct server *srv, struct moonlet_req *req, struct resource *r, struct block_opt b,
       const struct msg_opt *tag, uint32_t size1, int has_size1, struct moonlet_resp *resp)
{
    struct session *s = req->sess;
    struct xfer1 *x = xfer1_find(srv, s, &req->blk, tag);
    size_t size = 16u << b.szx, len = req->payload_len, off = (size_t)b.num * size, need;
    unsigned our = b.szx < server_szx(srv) ? b.szx : server_szx(srv);

    if (b.szx == SZX_BERT) {
        /* RFC 8323 §6: NUM counts 1024-byte units; a block is any multiple of 1024 (the
         * last one: any size) within our Max-Message-Size, which the stream layer holds */
        size = len % 1024 == 0 && len ? len : 1024;
        off = (size_t)b.num * 1024;
        our = SZX_BERT;
    }

    if (b.num == 0) {
        if (has_size1 && size1 > srv->cfg.max_body) {   /* early, before any data */
            if (x)
                xfer1_drop(srv, s, x);
            return too_large(srv, resp);
        }
        if (x) {                                    /* a new block 0 restarts it */
            x->len = 0;
        } else {
            if (s->nx1 >= srv->cfg.block_per_peer) {
                simple(resp, MOONLET_SERVICE_UNAVAILABLE, "too many uploads");
                moonlet_resp_option_uint(resp, MOONLET_OPT_MAX_AGE, 10);
                return BLOCK_ANSWERED;
            }
            if ((x = calloc(1, sizeof *x)) == NULL) {
                simple(resp, MOONLET_SERVICE_UNAVAILABLE, "out of memory");
                return BLOCK_ANSWERED;
            }
            srv->m.uploads_open++;
            x->res_id = r->id;
            x->method = req->method;
            x->variant = req->blk.variant;
            if (tag) {
                x->has_tag = 1;
                x->taglen = (uint8_t)tag->len;
                memcpy(x->tag, tag->val, tag->len);
            }
            x->next = s->x1;
            s->x1 = x;
            s->nx1++;
            x->unv = !s->verified;
            session_probe(srv, s);      /* RFC 9175 §2.4: an upload is lasting state */
        }
        x->szx = (uint8_t)b.szx;
        x->ct = req->ct;
    } else {
        if (x == NULL)
            return incomplete(resp, "no upload in progress: block 0 missing");
        if (b.szx > x->szx) {                       /* §2.3: only the server lowers it */
            xfer1_drop(srv, s, x);
            simple(resp, MOONLET_BAD_REQUEST, "block size grew");
            return BLOCK_ANSWERED;
        }
        if (req->ct != x->ct) {
            xfer1_drop(srv, s, x);
            return incomplete(resp, "content format changed");
        }
        if (off < x->len && off + len == x->len &&
            (r->body || memcmp(x->buf + off, req->payload, len) == 0)) {
            /* §2.5 with §4.5: the last block again (its ACK was lost): answer it again */
            goto ack;
        }
        if (off != x->len) {
            xfer1_drop(srv, s, x);
            return incomplete(resp, "block out of order");
        }
    }
    /* §2.2: every block but the last is exactly the block size (BERT: a multiple of
     * 1024 bytes, RFC 8323 §6) */
    if ((b.more && len != size) || (len > size && b.szx != SZX_BERT)) {
        xfer1_drop(srv, s, x);
        simple(resp, MOONLET_BAD_REQUEST, "block payload size does not match SZX");
        return BLOCK_ANSWERED;
    }
    need = x->len + len;
    if (need > srv->cfg.max_body) {
        xfer1_drop(srv, s, x);
        return too_large(srv, resp);
    }
    if (r->body) {                      /* streamed: the plugin takes each piece as it comes */
        struct crash_ctx cc = {r->unit->name, r->path, req->method, "body of"};
        struct crash_ctx *up = crash_enter(&cc);
        int rc = r->body(req, x->len, req->payload, len, !b.more, r->ud);

        crash_leave(up);

        if (rc != MOONLET_OK) {
            xfer1_drop(srv, s, x);
            if (rc == MOONLET_ERANGE)
                return too_large(srv, resp);
            simple(resp, MOONLET_INTERNAL_SERVER_ERROR, "upload refused");
            return BLOCK_ANSWERED;
        }
        x->len = need;
        goto ack;
    }
    if (need > x->cap) {
        size_t cap = x->cap ? x->cap : 1024;
        uint8_t *nb;

        while (cap < need)
            cap *= 2;
        if (cap > srv->cfg.max_body)
            cap = srv->cfg.max_body;
        /* unverified peers' uploads share unverified_bytes: a spoofed flood of block 0s
         * cannot take the reassembly memory real uploads need; the ping sent at block 0
         * verifies a real uploader, whose retry then counts elsewhere */
        if (srv->x1_bytes + cap - x->cap > srv->cfg.block1_bytes ||
            (x->unv && srv->sessions.unv_bytes + cap - x->cap > srv->cfg.unverified_bytes) ||
            (nb = realloc(x->buf, cap)) == NULL) {
            xfer1_drop(srv, s, x);
            simple(resp, MOONLET_SERVICE_UNAVAILABLE, "upload memory exhausted");
            moonlet_resp_option_uint(resp, MOONLET_OPT_MAX_AGE, 10);
            return BLOCK_ANSWERED;
        }
        if (x->unv)
            srv->sessions.unv_bytes += cap - x->cap;
        srv->x1_bytes += cap - x->cap;
        x->buf = nb;
        x->cap = cap;
    }
    if (len)
        memcpy(x->buf + x->len, req->payload, len);
    x->len = need;
ack:
    x->expires = ev_now(srv->loop) + srv->cfg.block_idle;
    if (b.more) {
        /* §2.3: 2.31 Continue echoes the block; a smaller SZX asks for smaller blocks */
        x->szx = (uint8_t)our;
        resp_reset(resp);
        moonlet_resp_code(resp, MOONLET_CONTINUE);
        moonlet_resp_option_uint(resp, MOONLET_OPT_BLOCK1, block_encode(b.num, 1, our));
        return BLOCK_ANSWERED;
    }
    /* the last block: the handler gets the whole body; the upload is the request's now */
    srv->m.uploads_done++;
    xfer1_unlink(s, x);
    req->x1 = x;
    req->payload = r->body ? NULL : x->buf;
    req->payload_len = r->body ? 0 : x->len;
    req->blk.has_b1 = 1;
    req->blk.b1 = (struct block_opt){b.num, 0, (uint8_t)our};
    return BLOCK_PASS;
}

void
block_request_done(struct server *srv, struct moonlet_req *req)
{
    if (req->x1) {
        xfer1_free(srv, req->x1);
        req->x1 = NULL;
    }
}

int
block_request(struct server *srv, struct moonlet_req *req, struct resource *r,
              struct moonlet_resp *resp)
{
    struct block_ctx *c = &req->blk;
    struct msg_iter it;
    struct msg_opt o, tag;
    int has_b1 = 0, has_tag = 0, has_size1 = 0;
    struct block_opt b1 = {0};
    uint32_t size1 = 0;
    unsigned prev = 0, nth = 0;

    c->res_id = r->id;
    c->method = req->method;
    msg_iter_init(&it, req->m);
    while (msg_iter_next(&it, &o)) {
        nth = o.num == prev ? nth + 1 : 0;
        prev = o.num;
        if (!option_usable(&o, nth))
            continue;
        switch (o.num) {
        case MOONLET_OPT_BLOCK2:
            c->has_b2 = 1;
            c->b2 = block_decode(msg_uint(o.val, o.len));
            c->b2.more = 0;     /* §2.2: M has no meaning in a request's Block2 */
            break;
        case MOONLET_OPT_BLOCK1:
            has_b1 = 1;
            b1 = block_decode(msg_uint(o.val, o.len));
            break;
        case MOONLET_OPT_SIZE1:
            has_size1 = 1;
            size1 = msg_uint(o.val, o.len);
            break;
        case MOONLET_OPT_SIZE2:
            c->want_size2 = msg_uint(o.val, o.len) == 0;
            break;
        case MOONLET_OPT_REQUEST_TAG:
            if (!has_tag)
                tag = o;
            has_tag = 1;
            break;
        }
    }
    /* §2.2: SZX 7 is BERT, for reliable transports only, between peers that both said
     * Block-Wise-Transfer in their CSM (RFC 8323 §6) */
    if ((c->has_b2 && c->b2.szx == SZX_BERT && !c->bert) ||
        (has_b1 && b1.szx == SZX_BERT && !c->bert_ok)) {
        simple(resp, MOONLET_BAD_REQUEST,
               c->bert_ok ? "BERT (SZX 7): no room for a 1024-byte block in Max-Message-Size"
                          : "BERT (SZX 7) needs a reliable transport and Block-Wise-Transfer");
        return BLOCK_ANSWERED;
    }
    /* every request: a download that starts without Block2 continues from its snapshot */
    c->variant = variant_of(req);
    if (has_b1)
        return block1(srv, req, r, b1, has_tag ? &tag : NULL, size1, has_size1, resp);
    /* RFC 7252 §5.9.2.9: max_body holds for a body in one message as for one in blocks */
    if ((has_size1 && size1 > srv->cfg.max_body) || req->payload_len > srv->cfg.max_body)
        return too_large(srv, resp);
    if (r->body && req->payload_len) {  /* a streamed resource sees every body the same way */
        struct crash_ctx cc = {r->unit->name, r->path, req->method, "body of"};
        struct crash_ctx *up = crash_enter(&cc);
        int rc = r->body(req, 0, req->payload, req->payload_len, 1, r->ud);

        crash_leave(up);

        if (rc != MOONLET_OK) {
            if (rc == MOONLET_ERANGE)
                return too_large(srv, resp);
            simple(resp, MOONLET_INTERNAL_SERVER_ERROR, "upload refused");
            return BLOCK_ANSWERED;
        }
        req->payload = NULL;
        req->payload_len = 0;
    }
    if (c->has_b2 && c->b2.num > 0) {
        struct xfer2 *x = xfer2_find(srv, req->sess, c);

        if (x) {                        /* a later block of a transfer: its snapshot */
            x->expires = ev_now(srv->loop) + srv->cfg.block_idle;
            serve_block(srv, c, &x->rep->resp, x->rep->etag, x->rep->etag_len, resp);
            return BLOCK_ANSWERED;
        }
        if (!safe_method(req->method))  /* never re-run a POST for its block k */
            return incomplete(resp, "no transfer of this response in progress");
    }
    return BLOCK_PASS;                  /* random access falls through to the handler */
}

void
block_session_sweep(struct server *srv, struct session *s, int gone)
{
    ev_tstamp now = ev_now(srv->loop);

    for (struct xfer1 *x = s->x1, *next; x; x = next) {
        next = x->next;
        if (gone || x->expires <= now)
            xfer1_drop(srv, s, x);
    }
    for (struct xfer2 *x = s->x2, *next; x; x = next) {
        next = x->next;
        if (gone || x->expires <= now)
            xfer2_free(srv, s, x);
    }
}

void
block_drop_resource(struct server *srv, uint64_t res_id)
{
    /* one pass over the sessions (a removal is rare next to requests: no index by
     * resource to keep up on the hot path) */
    for (unsigned p = 0; p < 3; p++)
        for (struct session *s = srv->sessions.pool[p].mru; s; s = s->next) {
            for (struct xfer1 *x = s->x1, *next; x; x = next) {
                next = x->next;
                if (x->res_id == res_id)
                    xfer1_drop(srv, s, x);
            }
            for (struct xfer2 *x = s->x2, *next; x; x = next) {
                next = x->next;
                if (x->res_id == res_id)
                    xfer2_free(srv, s, x);
            }
        }
}

void
block_cap(struct block_ctx *c, size_t budget, unsigned tkl)
{
    /* what a block answer carries besides its payload: header, token, Content-Format (3),
     * ETag (9), Block2 (4), Size2 (5), Max-Age (5), the payload marker */
    size_t overhead = 4 + tkl + 3 + 9 + 4 + 5 + 5 + 1;
    unsigned szx = 0;

    while (szx < 6 && overhead + (32u << szx) <= budget)
        szx++;
    c->capped = 1;
    c->cap_szx = (uint8_t)szx;
}

size_t
block_audit(const struct session *s)
{
    size_t n = 0;

    for (const struct xfer1 *x = s->x1; x; x = x->next)
        n += x->unv ? x->cap : 0;
    return n;
}

void
block_session_verified(struct server *srv, struct session *s)
{
    for (struct xfer1 *x = s->x1; x; x = x->next)
        if (x->unv) {
            x->unv = 0;
            srv->sessions.unv_bytes -= x->cap;
        }
}

void
block_fini(struct server *srv)
{
    while (srv->reps) {         /* only if a session outlived its table: cannot happen */
        srv->reps->refs = 1;
        rep_release(srv, srv->reps);
    }
}
