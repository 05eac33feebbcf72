/*
 * api.c -- the request accessors and deferred-response calls of moonlet.h: thin wrappers
 * over request.c and exchange.c. (Resources, config, timers and logging are in plugin.c;
 * the response builder in request.c.)
 */
#include <stdio.h>
#include <string.h>

#include "answer.h"
#include "exchange.h"
#include "msg.h"
#include "option.h"
#include "request.h"
#include "session.h"
#include "tree.h"

unsigned
moonlet_req_method(const moonlet_req *req)
{
    return req->method;
}

const char *
moonlet_req_path(const moonlet_req *req)
{
    moonlet_req *r = (moonlet_req *)req;    /* the path is built lazily, once */
    char buf[REQ_MAX_SEGMENTS * 256 * 3 + 2], *o = buf;

    if (r->path)
        return r->path;
    if (req->res && !req->res->subtree) {   /* the registered path is the canonical form
                                               of this request's */
        r->path = req->res->path;
        return r->path;
    }
    *o = '/';
    o[1] = '\0';
    for (unsigned i = 0; i < req->nseg; i++) {
        *o++ = '/';
        for (size_t j = 0; j < req->seg[i].len; j++) {
            unsigned char c = req->seg[i].p[j];

            if (req->seg[i].len == 1 && c == '*')   /* a raw one would end a subtree's path */
                o += sprintf(o, "%%2A");
            else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                     (c >= '0' && c <= '9') || (c && strchr("-._~!$&'()*+=:@", c)))
                *o++ = (char)c;
            else
                o += sprintf(o, "%%%02X", c);
        }
    }
    r->path = request_scratch(r, buf, req->nseg ? (size_t)(o - buf) : 1);
    return r->path;
}

unsigned
moonlet_req_segments(const moonlet_req *req)
{
    return req->nseg;
}

unsigned
moonlet_req_base(const moonlet_req *req)
{
    return req->res && req->res->subtree ? req->res->nseg : req->nseg;
}

const char *
moonlet_req_segment(const moonlet_req *req, unsigned i, size_t *len)
{
    if (i >= req->nseg)
        return NULL;
    if (len)
        *len = req->seg[i].len;
    return (const char *)req->seg[i].p;
}

const char *
moonlet_req_query(const moonlet_req *req, const char *key, size_t *len)
{
    size_t klen = strlen(key);

    for (unsigned i = 0; i < req->nq; i++) {
        const struct view *q = &req->q[i];
        const uint8_t *v;
        size_t vlen;
        char *s;

        if (q->len < klen || memcmp(q->p, key, klen) != 0)
            continue;
        if (q->len == klen) {
            v = q->p + klen, vlen = 0;
        } else if (q->p[klen] == '=') {
            v = q->p + klen + 1, vlen = q->len - klen - 1;
        } else {
            continue;
        }
        if ((s = request_scratch((moonlet_req *)req, v, vlen)) != NULL && len)
            *len = vlen;
        return s;
    }
    return NULL;
}

unsigned
moonlet_req_queries(const moonlet_req *req)
{
    return req->nq;
}

const char *
moonlet_req_query_item(const moonlet_req *req, unsigned i, size_t *len)
{
    char *s;

    if (i >= req->nq)
        return NULL;
    if ((s = request_scratch((moonlet_req *)req, req->q[i].p, req->q[i].len)) && len)
        *len = req->q[i].len;
    return s;
}

const uint8_t *
moonlet_req_option(const moonlet_req *req, unsigned num, unsigned n, size_t *len)
{
    struct msg_iter it;
    struct msg_opt o;

    msg_iter_init(&it, req->m);
    while (msg_iter_next(&it, &o)) {
        if (o.num > num)
            break;
        if (o.num == num && n-- == 0) {
            if (len)
                *len = o.len;
            return o.val;
        }
    }
    return NULL;
}

uint32_t
moonlet_req_option_uint(const moonlet_req *req, unsigned num, uint32_t dflt)
{
    const struct option_def *def;
    size_t len;
    const uint8_t *v = moonlet_req_option(req, num, 0, &len);

    if (v == NULL || len > 4)
        return dflt;
    /* RFC 7252 §5.4.3: a registered option of a length outside its bounds is treated like
     * an unrecognised one -- an elective one is ignored, as if absent (Observe of 4 bytes
     * is a plain GET: MALFORMED V7) */
    def = option_get(num);
    if (def && (len < def->min || len > def->max))
        return dflt;
    return msg_uint(v, len);
}

const uint8_t *
moonlet_req_payload(const moonlet_req *req, size_t *len)
{
    static const uint8_t empty[1];

    if (len)
        *len = req->payload_len;
    return req->payload ? req->payload : empty;
}

int
moonlet_req_ct(const moonlet_req *req)
{
    return req->ct;
}

int
moonlet_req_accept(const moonlet_req *req)
{
    return req->accept;
}

const void *
moonlet_req_peer(const moonlet_req *req, size_t *len)
{
    if (len)
        *len = req->sess->peer.len;
    return &req->sess->peer.u.sa;
}

const char *
moonlet_req_peer_str(const moonlet_req *req)
{
    char buf[64];

    peer_str(&req->sess->peer, buf, sizeof buf);
    return request_scratch((moonlet_req *)req, buf, strlen(buf));
}

const moonlet_identity *
moonlet_req_identity(const moonlet_req *req)
{
    return access_identity(req ? req->sess : NULL);
}

moonlet_pending *
moonlet_defer(moonlet_req *req, unsigned deadline_ms)
{
    return req ? answer_defer(req, deadline_ms) : NULL;
}

moonlet_resp *
moonlet_pending_resp(moonlet_pending *pd)
{
    return &pd->resp;
}

int
moonlet_pending_send(moonlet_pending *pd)
{
    return pd ? answer_send(pd) : MOONLET_EINVAL;
}

void
moonlet_pending_drop(moonlet_pending *pd)
{
    if (pd)
        answer_drop(pd);
}
