/*
 * stateful_fuzz.c -- libFuzzer harness for the whole message layer with its state: a
 * sequence of datagrams from eight peers fed through exchange (dedup, CON/ACK/RST,
 * separate answers), block-wise (RFC 7959), Observe (RFC 7641), multicast (RFC 7252 §8) and
 * address verification (RFC 9175 §2.4), over the in-process loopback with its virtual clock
 * (tests/unit/loopback.h), so that timers -- retransmissions, pings, expiry, observer
 * checks -- fire as the input says. A fresh server per input.
 *
 * Peers 0-3 are spoofers: they never answer a ping, never send an ACK or RST, never an Echo
 * -- so they must never be verified, and must never receive more than three times the
 * bytes they sent (IP and UDP headers counted). Peers 4-7 behave: they answer pings and
 * acknowledge CONs when the input says so. After every step the budgets of unverified
 * peers must equal what the sessions hold (session_audit); at the end ASan and LSan check
 * that the server freed everything.
 */
#include "fuzz.h"
#include "loopback.h"


static const char *const paths[] = {"s", "b", "u", "o", "d", ".well-known/core", "nothere"};

struct in {
    const uint8_t *p, *end;
};

static unsigned
byte(struct in *in)
{
    return in->p < in->end ? *in->p++ : 0;
}

static void
check_all(struct lo *lo)
{
    char why[256];

    CHECKF(session_audit(&lo->srv, why, sizeof why) == 0, "%s", why);
    for (unsigned p = 0; p < 4; p++) {
        struct session *s = lo_session(lo, p);

        CHECKF(s == NULL || !s->verified, "spoofer %u verified", p);
        CHECKF(lo->tx[p] <= 3 * lo->rx[p], "spoofer %u: %llu bytes out for %llu in", p,
              (unsigned long long)lo->tx[p], (unsigned long long)lo->rx[p]);
    }
}

/* A request built from the input: peer, type, method, path, options, payload. */
static void
structured(struct lo *lo, struct in *in, unsigned p, int mc)
{
    static uint8_t buf[2048], body[1100];
    struct lo_opt o[6];
    unsigned n = 0, flags = byte(in), type = byte(in) & 1, method = 1 + byte(in) % 7;
    uint8_t obs = (uint8_t)(byte(in) & 1), b1[3], b2[3], tag[2];
    uint32_t v1 = byte(in) << 8 | byte(in), v2 = byte(in) << 8 | byte(in);
    size_t plen = (size_t)(byte(in) * 5) % sizeof body;
    uint16_t mid = (uint16_t)(byte(in) << 8 | byte(in));
    char token[3] = {(char)('a' + byte(in) % 4), 0, 0};

    if (flags & 1)
        o[n++] = (struct lo_opt){MOONLET_OPT_OBSERVE, &obs, obs ? 1 : 0};
    if (flags & 2) {
        b1[0] = (uint8_t)(v1 >> 8), b1[1] = (uint8_t)v1;
        o[n++] = (struct lo_opt){MOONLET_OPT_BLOCK1, b1, 2};
    }
    if (flags & 4) {
        b2[0] = (uint8_t)(v2 >> 8), b2[1] = (uint8_t)v2;
        o[n++] = (struct lo_opt){MOONLET_OPT_BLOCK2, b2, 2};
    }
    if (flags & 8) {
        tag[0] = (uint8_t)byte(in), tag[1] = 0;
        o[n++] = (struct lo_opt){MOONLET_OPT_REQUEST_TAG, tag, 1};
    }
    memset(body, 'x', plen);
    n = (unsigned)lo_request(buf, sizeof buf, type, method, mid, token,
                             paths[(flags >> 4) % 7], o, n, body, plen);
    if (n > 0)
        lo_input(lo, p, buf, n, mc);
}

/* A raw datagram from the input; a spoofer's may not be an ACK or RST. */
static void
raw(struct lo *lo, struct in *in, unsigned p)
{
    static uint8_t buf[1200];
    size_t n = byte(in) % sizeof buf;

    if ((size_t)(in->end - in->p) < n)
        n = (size_t)(in->end - in->p);
    memcpy(buf, in->p, n);
    in->p += n;
    if (p < 4 && n > 0 && (buf[0] >> 4 & 3) >= MT_ACK)
        buf[0] &= 0xdf;         /* ACK -> CON, RST -> NON */
    lo_input(lo, p, buf, n, 0);
}

/* An honest peer answers what it was sent: RST to a ping, ACK to a CON. */
static void
respond(struct lo *lo, unsigned p)
{
    const struct lo_dgram *d;

    while ((d = lo_take(lo, p)) != NULL) {
        if (d->len >= 4 && (d->buf[0] >> 4 & 3) == MT_CON) {
            struct lo_dgram copy = *d;

            lo_reply_empty(lo, p, &copy, copy.buf[1] == 0 ? MT_RST : MT_ACK);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
const char *__asan_default_options(void);

/* A server per input is some tens of KiB: ASan's default quarantine (256 MiB) would hand
 * out fresh, page-faulting memory for every one; 16 MiB still holds many inputs' frees. */
const char *
__asan_default_options(void)
{
    return "quarantine_size_mb=16";
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const opts[] = {"ack_timeout=1", "max_retransmit=2", "separate_after=0.2",
                                       "unverified_sessions=4", "max_sessions=3",
                                       "unverified_bytes=4096", "unverified_pendings=3",
                                       "unverified_observers=3", "observe_check=5",
                                       "block_idle=3", "exchange_lifetime=10", "non_lifetime=5",
                                       "defer_deadline=4", "dedup_bytes=8192",
                                       "block1_bytes=6000", "block2_bytes=8000", NULL};
    struct in in = {data, data + size};
    struct lo *lo;
    unsigned steps = 0;

    if ((lo = lo_start(opts)) == NULL)
        abort();
    while (in.p < in.end && steps++ < 64) {
        unsigned op = byte(&in), p = op >> 4 & 7;

        switch (op & 7) {
        case 0:
        case 1:
            structured(lo, &in, p, 0);
            break;
        case 2:
            raw(lo, &in, p);
            break;
        case 3:
            lo_advance(lo, byte(&in) / 16.0);     /* up to 16 s */
            break;
        case 4:
            if (p >= 4)
                respond(lo, p);
            break;
        case 5:
            lo_answer(lo, byte(&in) % LO_PENDINGS);
            break;
        case 6:
            structured(lo, &in, p, 1);              /* to the group */
            break;
        case 7:
            observe_notify(&lo->srv, tree_find_path(lo->srv.tree, "/o"));
            lo_run(lo);
            break;
        }
        check_all(lo);
        if (lo->nq > LO_QUEUE / 2)                  /* forget what nobody read */
            lo->nq = 0;
    }
    lo_advance(lo, 30);                             /* everything expires */
    check_all(lo);
    lo_stop(lo);
    return 0;
}
