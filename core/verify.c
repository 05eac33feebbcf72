/*
 * verify.c -- address verification (RFC 9175 §2.4 item 3, §2.6; RFC 7252 §11.3): the Echo
 * values we issue and check, and the 4.01 challenge that carries one.
 *
 * An Echo value is stateless: 4 bytes of time (seconds since the server started) and 8 of
 * SipHash-2-4 over that time and the peer's address and port, under a key drawn at
 * start-up. A peer that sends one back within echo_lifetime has received a datagram we
 * sent to its address -- which is all the 3x rule needs to know (§2.4: "this needs to be
 * done only once per peer"). Nothing is stored per challenge, so a flood of spoofed
 * requests costs one small datagram each and no memory.
 */
#include <string.h>

#include "log.h"
#include "server.h"
#include "verify.h"

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                             \
    do {                                                                                     \
        v0 += v1, v1 = ROTL(v1, 13), v1 ^= v0, v0 = ROTL(v0, 32);                            \
        v2 += v3, v3 = ROTL(v3, 16), v3 ^= v2;                                               \
        v0 += v3, v3 = ROTL(v3, 21), v3 ^= v0;                                               \
        v2 += v1, v1 = ROTL(v1, 17), v1 ^= v2, v2 = ROTL(v2, 32);                            \
    } while (0)

static uint64_t
le64(const uint8_t *p, size_t n)
{
    uint64_t v = 0;

    for (size_t i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

uint64_t
verify_siphash(const uint8_t key[16], const uint8_t *in, size_t len)
{
    uint64_t k0 = le64(key, 8), k1 = le64(key + 8, 8);
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
    uint64_t last = (uint64_t)len << 56;
    size_t i = 0;

    for (; i + 8 <= len; i += 8) {      /* c = 2 rounds per 8-byte word */
        uint64_t m = le64(in + i, 8);

        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    last |= le64(in + i, len - i);
    v3 ^= last;
    SIPROUND;
    SIPROUND;
    v0 ^= last;
    v2 ^= 0xff;                         /* d = 4 finalisation rounds */
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* The MAC of (time, peer). */
static uint64_t
echo_mac(const struct server *srv, uint32_t t, const struct peer *p)
{
    uint8_t in[4 + 2 + 16 + 2];
    size_t n = 0;

    memcpy(in, &t, 4);
    n = 4;
    in[n++] = (uint8_t)p->u.sa.sa_family;
    in[n++] = 0;
    if (p->u.sa.sa_family == AF_INET6) {
        memcpy(in + n, &p->u.in6.sin6_addr, 16);
        n += 16;
        memcpy(in + n, &p->u.in6.sin6_port, 2);
    } else {
        memcpy(in + n, &p->u.in.sin_addr, 4);
        n += 4;
        memcpy(in + n, &p->u.in.sin_port, 2);
    }
    return verify_siphash(srv->echo_key, in, n + 2);
}

static uint32_t
now_s(const struct server *srv)
{
    /* a wall clock set back past the start: 0, not a negative double cast (UB) */
    return ev_now(srv->loop) > srv->started ? (uint32_t)(ev_now(srv->loop) - srv->started) : 0;
}

void
verify_echo_make(const struct server *srv, const struct peer *p, uint8_t out[VERIFY_ECHO_LEN])
{
    uint32_t t = now_s(srv);
    uint64_t mac = echo_mac(srv, t, p);

    out[0] = (uint8_t)(t >> 24);
    out[1] = (uint8_t)(t >> 16);
    out[2] = (uint8_t)(t >> 8);
    out[3] = (uint8_t)t;
    memcpy(out + 4, &mac, 8);
}

int
verify_echo_check(const struct server *srv, const struct peer *p, const uint8_t *v, size_t len)
{
    uint32_t t, now = now_s(srv);
    uint64_t mac;

    if (len != VERIFY_ECHO_LEN)
        return 0;
    t = (uint32_t)v[0] << 24 | (uint32_t)v[1] << 16 | (uint32_t)v[2] << 8 | v[3];
    if (t > now || now - t > srv->cfg.echo_lifetime)
        return 0;                       /* RFC 9175 §2.3: stale values verify nothing */
    mac = echo_mac(srv, t, p);
    return memcmp(&mac, v + 4, 8) == 0;
}

int
verify_request_echo(const struct server *srv, const struct peer *p, const struct msg *m)
{
    struct msg_opt o;

    /* options are sorted: a message without any at or above 252 has no Echo */
    if (m->last_opt < MOONLET_OPT_ECHO || msg_find(m, MOONLET_OPT_ECHO, &o) == NULL)
        return 0;
    return verify_echo_check(srv, p, o.val, o.len);
}

long
verify_challenge(const struct server *srv, const struct peer *p, const struct msg *m,
                 uint8_t *buf, size_t cap)
{
    uint8_t echo[VERIFY_ECHO_LEN];
    struct msg_wr w;

    /* §2.4: 4.01 with an Echo; the client repeats its request with it. As a piggybacked
     * ACK to a CON, or a NON (§2.3 allows both). */
    verify_echo_make(srv, p, echo);
    msg_wr_init(&w, buf, cap, m->type == MT_CON ? MT_ACK : MT_NON, MOONLET_UNAUTHORIZED,
                m->mid, m->token, m->tkl);
    msg_wr_opt(&w, MOONLET_OPT_ECHO, echo, sizeof echo);
    return msg_wr_end(&w);
}
