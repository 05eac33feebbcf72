/*
 * msg.c -- CoAP message codec (RFC 7252 §3, §3.1, §3.2).
 * Parsing never copies: a struct msg holds views into the datagram. The option region is
 * validated once by msg_parse_body, so iterating it later cannot fail and needs no checks.
 */
#include "msg.h"

#include <stdio.h>
#include <string.h>

/* Decode one option header at p; returns the pointer to its value, or NULL on a format
 * error. RFC 7252 §3.1: nibble 13 -> 1 extension byte (+13), 14 -> 2 bytes (+269), 15 is
 * reserved (payload marker only when both nibbles are 15). */
static const uint8_t *
opt_header(const uint8_t *p, const uint8_t *end, unsigned *delta, unsigned *len)
{
    unsigned d = *p >> 4, l = *p & 15;

    p++;
    if (d == 15 || l == 15)
        return NULL;
    if (d == 13) {
        if (end - p < 1)
            return NULL;
        d = 13u + p[0];
        p += 1;
    } else if (d == 14) {
        if (end - p < 2)
            return NULL;
        d = 269u + ((unsigned)p[0] << 8 | p[1]);
        p += 2;
    }
    if (l == 13) {
        if (end - p < 1)
            return NULL;
        l = 13u + p[0];
        p += 1;
    } else if (l == 14) {
        if (end - p < 2)
            return NULL;
        l = 269u + ((unsigned)p[0] << 8 | p[1]);
        p += 2;
    }
    *delta = d;
    *len = l;
    return p;
}

int
msg_parse_body(struct msg *m, const uint8_t *p, const uint8_t *end)
{
    unsigned num = 0, n = 0;

    m->opts = p;
    m->payload = NULL;
    m->payload_len = 0;
    while (p < end) {
        unsigned delta, len;

        if (*p == 0xff) {
            /* RFC 7252 §3: a marker followed by a zero-length payload is a format error */
            if (p + 1 == end)
                return MSG_EFORMAT;
            m->opts_len = (size_t)(p - m->opts);
            m->payload = p + 1;
            m->payload_len = (size_t)(end - p - 1);
            m->nopts = n;
            m->last_opt = (uint16_t)num;
            return MSG_OK;
        }
        p = opt_header(p, end, &delta, &len);
        if (p == NULL || len > (size_t)(end - p))
            return MSG_EFORMAT;
        num += delta;
        if (num > 65535)    /* §3.1: option numbers are 16-bit; a wrap is a format error */
            return MSG_EFORMAT;
        p += len;
        n++;
    }
    m->opts_len = (size_t)(p - m->opts);
    m->nopts = n;
    m->last_opt = (uint16_t)num;
    return MSG_OK;
}

int
msg_parse(struct msg *m, const uint8_t *buf, size_t len)
{
    if (len < 4)
        return MSG_ESHORT;
    m->type = (buf[0] >> 4) & 3;
    m->tkl = buf[0] & 15;
    m->code = buf[1];
    m->mid = (uint16_t)(buf[2] << 8 | buf[3]);
    if (buf[0] >> 6 != 1)
        return MSG_EVERSION;
    /* §3: TKL 9..15 are reserved and MUST be processed as a message format error
     * (RFC 8974 extended tokens are not supported) */
    if (m->tkl > MSG_TOKEN_MAX || 4u + m->tkl > len)
        return MSG_EFORMAT;
    m->token = buf + 4;
    return msg_parse_body(m, buf + 4 + m->tkl, buf + len);
}

void
msg_iter_init(struct msg_iter *it, const struct msg *m)
{
    it->p = m->opts;
    it->end = m->opts + m->opts_len;
    it->num = 0;
}

int
msg_iter_next(struct msg_iter *it, struct msg_opt *o)
{
    unsigned delta, len;
    const uint8_t *v;

    if (it->p >= it->end)
        return 0;
    v = opt_header(it->p, it->end, &delta, &len);   /* validated by msg_parse_body */
    it->num += delta;
    o->num = (uint16_t)it->num;
    o->len = len;
    o->val = v;
    it->p = v + len;
    return 1;
}

const struct msg_opt *
msg_find(const struct msg *m, unsigned num, struct msg_opt *out)
{
    struct msg_iter it;

    msg_iter_init(&it, m);
    while (msg_iter_next(&it, out)) {
        if (out->num == num)
            return out;
        if (out->num > num)
            break;
    }
    return NULL;
}

uint32_t
msg_uint(const uint8_t *v, size_t len)
{
    uint32_t x = 0;

    if (len > 4)
        return UINT32_MAX;
    while (len--)
        x = x << 8 | *v++;
    return x;
}

unsigned
msg_uint_enc(uint8_t out[4], uint32_t v)
{
    unsigned n = v > 0xffffff ? 4 : v > 0xffff ? 3 : v > 0xff ? 2 : v > 0 ? 1 : 0;

    for (unsigned i = 0; i < n; i++)
        out[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    return n;
}

void
msg_wr_init(struct msg_wr *w, uint8_t *buf, size_t cap, unsigned type, unsigned code,
            uint16_t mid, const uint8_t *token, unsigned tkl)
{
    w->buf = buf;
    w->cap = cap;
    w->last = 0;
    w->sealed = 0;
    w->err = tkl > MSG_TOKEN_MAX || cap < 4u + tkl;
    if (w->err) {
        w->len = 0;
        return;
    }
    buf[0] = (uint8_t)(1u << 6 | (type & 3) << 4 | tkl);
    buf[1] = (uint8_t)code;
    buf[2] = (uint8_t)(mid >> 8);
    buf[3] = (uint8_t)mid;
    if (tkl)
        memcpy(buf + 4, token, tkl);
    w->len = 4u + tkl;
}

void
msg_wr_body_init(struct msg_wr *w, uint8_t *buf, size_t cap)
{
    w->buf = buf;
    w->cap = cap;
    w->len = 0;
    w->last = 0;
    w->sealed = 0;
    w->err = 0;
}

/* Write an extended nibble value; returns the nibble. */
static unsigned
nibble(unsigned v, uint8_t *ext, unsigned *n)
{
    if (v < 13)
        return v;
    if (v < 269) {
        ext[(*n)++] = (uint8_t)(v - 13);
        return 13;
    }
    ext[(*n)++] = (uint8_t)((v - 269) >> 8);
    ext[(*n)++] = (uint8_t)(v - 269);
    return 14;
}

void
msg_wr_opt(struct msg_wr *w, unsigned num, const void *val, size_t len)
{
    uint8_t hdr[5];
    unsigned n = 1, d, l;

    if (w->err || w->sealed || num < w->last || num > 65535 || len > 65535 + 269) {
        w->err = 1;
        return;
    }
    d = nibble(num - w->last, hdr, &n);
    l = nibble((unsigned)len, hdr, &n);
    hdr[0] = (uint8_t)(d << 4 | l);
    if (w->cap - w->len < n + len) {
        w->err = 1;
        return;
    }
    memcpy(w->buf + w->len, hdr, n);
    if (len)
        memcpy(w->buf + w->len + n, val, len);
    w->len += n + len;
    w->last = num;
}

void
msg_wr_opt_uint(struct msg_wr *w, unsigned num, uint32_t v)
{
    uint8_t b[4];

    msg_wr_opt(w, num, b, msg_uint_enc(b, v));
}

void
msg_wr_payload(struct msg_wr *w, const void *p, size_t len)
{
    if (w->err || len == 0)
        return;
    if (w->sealed || w->cap - w->len < 1 + len) {
        w->err = 1;
        return;
    }
    w->buf[w->len] = 0xff;
    memcpy(w->buf + w->len + 1, p, len);
    w->len += 1 + len;
    w->sealed = 1;
}

long
msg_wr_end(const struct msg_wr *w)
{
    return w->err ? -1 : (long)w->len;
}

const char *
msg_code_str(unsigned code, char buf[6])
{
    snprintf(buf, 6, "%u.%02u", (code >> 5) & 7, code & 31);
    return buf;
}
