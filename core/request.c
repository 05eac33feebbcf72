/*
 * request.c -- requests as views (RFC 7252 §5.10: Uri-Path, Uri-Query, Content-Format,
 * Accept; RFC 7967 No-Response) and the response builder, serialised with options sorted
 * (§3.1 needs ascending numbers; handlers may add them in any order).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "option.h"
#include "request.h"

unsigned
request_parse(struct moonlet_req *req, const struct msg *m)
{
    struct msg_iter it;
    struct msg_opt o;
    unsigned prev = 0, nth = 0, verdict = 0;

    req->method = m->code;
    req->ct = req->accept = MOONLET_CT_NONE;
    req->payload = m->payload;
    req->payload_len = m->payload_len;
    req->nseg = req->nq = 0;
    msg_iter_init(&it, m);
    while (msg_iter_next(&it, &o)) {
        nth = o.num == prev ? nth + 1 : 0;
        prev = o.num;
        if (!option_usable(&o, nth))
            continue;   /* §5.4.3, §5.4.5: bad elective options are ignored */
        switch (o.num) {
        case MOONLET_OPT_URI_PATH:
            if (req->nseg == REQ_MAX_SEGMENTS)
                verdict = MSG_CODE(4, 4);   /* deeper than anything registrable */
            else
                req->seg[req->nseg++] = (struct view){o.val, o.len};
            break;
        case MOONLET_OPT_URI_QUERY:
            if (req->nq == REQ_MAX_QUERIES)
                verdict = verdict ? verdict : MSG_CODE(4, 0);
            else
                req->q[req->nq++] = (struct view){o.val, o.len};
            break;
        case MOONLET_OPT_CONTENT_FORMAT:
            req->ct = (int)msg_uint(o.val, o.len);
            break;
        case MOONLET_OPT_ACCEPT:
            req->accept = (int)msg_uint(o.val, o.len);
            break;
        case MOONLET_OPT_NO_RESPONSE:
            req->no_response = msg_uint(o.val, o.len);
            break;
        }
    }
    return verdict;
}

/* A request detached from its receive buffer, with a copy of the datagram the views point
 * into. */
struct detached {
    struct moonlet_req req;
    struct msg m;
    uint8_t bytes[];
};

struct moonlet_req *
request_detach(const struct moonlet_req *req)
{
    const struct msg *m = req->m;
    /* the token, options and payload: whatever header framed them (a datagram's, a
     * stream's: RFC 8323 §3.2) is the message layer's and not copied */
    const uint8_t *start = m->token;
    const uint8_t *end = m->payload ? m->payload + m->payload_len : m->opts + m->opts_len;
    size_t len = (size_t)(end - start);
    /* a body reassembled from blocks lies outside the message: copy it too */
    size_t body = req->payload && (req->payload < start || req->payload >= end)
                      ? req->payload_len : 0;
    struct detached *d = malloc(sizeof *d + len + body);

    if (d == NULL)
        return NULL;
    memcpy(d->bytes, start, len);
    if (body)
        memcpy(d->bytes + len, req->payload, body);
    memset(&d->req, 0, sizeof d->req);
    d->m = *m;
    d->m.token = d->bytes;
    /* it parsed once: cannot fail */
    if (msg_parse_body(&d->m, d->bytes + m->tkl, d->bytes + len) != MSG_OK) {
        free(d);
        return NULL;
    }
    request_parse(&d->req, &d->m);
    d->req.srv = req->srv;
    d->req.sess = req->sess;
    d->req.m = &d->m;
    d->req.res = req->res;
    d->req.no_response = req->no_response;
    d->req.blk = req->blk;
    d->req.obs = req->obs;
    d->req.multicast = req->multicast;
    d->req.group = req->group;
    if (body) {
        d->req.payload = d->bytes + len;
        d->req.payload_len = body;
    }
    return &d->req;
}

void
request_detached_free(struct moonlet_req *req)
{
    free(req);     /* the struct moonlet_req is the first member of struct detached */
}

char *
request_scratch(struct moonlet_req *req, const void *p, size_t len)
{
    char *s;

    if (req->scratch_cap - req->scratch_len < len + 1)
        return NULL;
    s = req->scratch + req->scratch_len;
    memcpy(s, p, len);
    s[len] = '\0';
    req->scratch_len += len + 1;
    return s;
}

void
resp_init(struct moonlet_resp *r, size_t max_payload)
{
    memset(r, 0, sizeof *r);
    r->max_payload = max_payload;
    resp_reset(r);
}

void
resp_reset(struct moonlet_resp *r)
{
    r->code = MSG_CODE(2, 5);
    r->ct = MOONLET_CT_NONE;
    r->nopt = 0;
    r->olen = 0;
    r->plen = 0;
}

void
resp_free(struct moonlet_resp *r)
{
    free(r->obuf);
    free(r->payload);
    r->obuf = r->payload = NULL;
    r->ocap = r->pcap = 0;
}

static int
reserve(uint8_t **buf, size_t *cap, size_t need)
{
    size_t n = *cap ? *cap : 64;
    uint8_t *b;

    if (need <= *cap)
        return 0;
    while (n < need)
        n *= 2;
    if ((b = realloc(*buf, n)) == NULL)
        return -1;
    *buf = b;
    *cap = n;
    return 0;
}

void
moonlet_resp_code(moonlet_resp *r, unsigned code)
{
    r->code = (uint8_t)code;
}

int
moonlet_resp_ct(moonlet_resp *r, int ct)
{
    if (ct < MOONLET_CT_NONE || ct > 65535)
        return MOONLET_EINVAL;
    r->ct = ct;
    return MOONLET_OK;
}

int
moonlet_resp_payload(moonlet_resp *r, const void *data, size_t len)
{
    if (len > r->max_payload)
        return MOONLET_ERANGE;
    if (reserve(&r->payload, &r->pcap, len) < 0)
        return MOONLET_ENOMEM;
    if (len)
        memcpy(r->payload, data, len);
    r->plen = len;
    return MOONLET_OK;
}

int
moonlet_resp_option(moonlet_resp *r, unsigned num, const void *val, size_t len)
{
    if (num == 0 || num > 65535 || len > 1034)
        return MOONLET_EINVAL;
    if (num == MOONLET_OPT_CONTENT_FORMAT)
        return len <= 2 ? moonlet_resp_ct(r, (int)msg_uint(val, len)) : MOONLET_EINVAL;
    if (r->nopt == RESP_MAX_OPTIONS)
        return MOONLET_ERANGE;
    /* at least one byte: once an option exists, obuf is never NULL, so obuf + off is
     * defined even when every value is empty (found by tests/fuzz/stateful_fuzz.c) */
    if (reserve(&r->obuf, &r->ocap, r->olen + len + 1) < 0)
        return MOONLET_ENOMEM;
    if (len)
        memcpy(r->obuf + r->olen, val, len);
    r->opt[r->nopt++] = (struct resp_opt){(uint16_t)num, (uint16_t)len, (uint32_t)r->olen};
    r->olen += len;
    return MOONLET_OK;
}

int
moonlet_resp_option_uint(moonlet_resp *r, unsigned num, uint32_t v)
{
    uint8_t b[4];

    return moonlet_resp_option(r, num, b, msg_uint_enc(b, v));
}

int
moonlet_resp_error(moonlet_resp *r, unsigned code, const char *fmt, ...)
{
    char text[256];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof text)
        n = sizeof text - 1;
    resp_reset(r);
    r->code = (uint8_t)code;
    return moonlet_resp_payload(r, text, (size_t)n);
}

void
resp_simple(struct moonlet_resp *r, unsigned code, const char *diag)
{
    resp_reset(r);
    r->code = (uint8_t)code;
    /* §5.5.2: a diagnostic payload is UTF-8 text without Content-Format */
    if (diag)
        moonlet_resp_payload(r, diag, strlen(diag));
}

/* Options (sorted, RFC 7252 §3.1) and payload of r into w. */
static long
resp_body_wr(const struct moonlet_resp *r, struct msg_wr *w)
{
    uint8_t order[RESP_MAX_OPTIONS + 1];
    unsigned n = 0, ctpos = RESP_MAX_OPTIONS;

    /* stable insertion sort of option indices by number; the Content-Format is index
     * RESP_MAX_OPTIONS so that it takes its place among the others */
    for (unsigned i = 0; i <= r->nopt; i++) {
        unsigned idx = i < r->nopt ? i : ctpos, num, j;

        if (idx == ctpos && r->ct == MOONLET_CT_NONE)
            break;
        num = idx == ctpos ? MOONLET_OPT_CONTENT_FORMAT : r->opt[idx].num;
        for (j = n; j > 0; j--) {
            unsigned pj = order[j - 1] == ctpos ? MOONLET_OPT_CONTENT_FORMAT
                                                : r->opt[order[j - 1]].num;
            if (pj <= num)
                break;
            order[j] = order[j - 1];
        }
        order[j] = (uint8_t)idx;
        n++;
    }
    for (unsigned i = 0; i < n; i++) {
        if (order[i] == ctpos)
            msg_wr_opt_uint(w, MOONLET_OPT_CONTENT_FORMAT, (uint32_t)r->ct);
        else
            msg_wr_opt(w, r->opt[order[i]].num, r->obuf + r->opt[order[i]].off,
                       r->opt[order[i]].len);
    }
    msg_wr_payload(w, r->payload, r->plen);
    return msg_wr_end(w);
}

long
resp_write(const struct moonlet_resp *r, uint8_t *buf, size_t cap, unsigned type, uint16_t mid,
           const uint8_t *token, unsigned tkl)
{
    struct msg_wr w;

    msg_wr_init(&w, buf, cap, type, r->code, mid, token, tkl);
    return resp_body_wr(r, &w);
}

long
resp_body(const struct moonlet_resp *r, uint8_t *buf, size_t cap)
{
    struct msg_wr w;

    msg_wr_body_init(&w, buf, cap);
    return resp_body_wr(r, &w);
}
