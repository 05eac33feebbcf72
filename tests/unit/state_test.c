/*
 * state_test.c -- the message layer's state machines over the in-process loopback
 * (loopback.h), on a virtual clock: retransmission (RFC 7252 §4.2), deduplication (§4.5),
 * address verification and the 3x rule (RFC 9175 §2.4), Echo (§2.3), the two pools of
 * peers and their budgets, observers reaped (RFC 7641 §4.5), oversize datagrams.
 */
#include "loopback.h"
#include "t.h"
#include "verify.h"

#define MID 0x1234

static uint8_t req[2048];

static size_t
get(const char *path, uint16_t mid, unsigned type)
{
    return lo_request(req, sizeof req, type, MOONLET_GET, mid, "tk", path, NULL, 0, NULL, 0);
}

static int
is_ping(const struct lo_dgram *d)
{
    return d && d->len == 4 && d->buf[0] == 0x40 && d->buf[1] == 0;
}

static unsigned
code_of(const struct lo_dgram *d)
{
    return d ? d->buf[1] : 0;
}

static void
t_siphash(void)
{
    uint8_t key[16], in[15];

    for (int i = 0; i < 16; i++)
        key[i] = (uint8_t)i;
    for (int i = 0; i < 15; i++)
        in[i] = (uint8_t)i;
    /* the reference vector of the SipHash paper (Aumasson, Bernstein), 15-byte input */
    T_EQ_INT(verify_siphash(key, in, 15), 0xa129ca6149be45e5ULL, "SipHash-2-4 test vector");
}

static void
t_small_answer(void)
{
    struct lo *lo = lo_start(NULL);
    const struct lo_dgram *d;

    lo_input(lo, 0, req, get("s", MID, MT_CON), 0);
    d = lo_take(lo, 0);
    T_OK(d && d->buf[0] == (0x60 | 2) && d->buf[1] == MOONLET_CONTENT, "a small answer is "
         "piggybacked at once to an unverified peer (within 3x)");
    T_OK(lo_take(lo, 0) == NULL, "and nothing else (no ping)");
    T_OK(!lo_session(lo, 0)->verified, "the peer stays unverified");
    lo_stop(lo);
}

static void
t_held_then_ping(void)
{
    struct lo *lo = lo_start(NULL);
    const struct lo_dgram *d;
    struct session *s;

    lo_input(lo, 0, req, get("b", MID, MT_CON), 0);
    d = lo_take(lo, 0);
    T_OK(is_ping(d), "an answer over 3x: a ping goes instead");
    T_OK(lo_take(lo, 0) == NULL, "the answer is held");
    s = lo_session(lo, 0);
    T_OK(s && s->held && lo->srv.sessions.unv_bytes > 1000, "held, counted in unv_bytes");
    T_OK(lo->tx[0] <= 3 * lo->rx[0], "3x on the wire");
    lo_reply_empty(lo, 0, d, MT_RST);
    d = lo_take(lo, 0);
    T_OK(d && (d->buf[0] >> 4 & 3) == MT_ACK && d->buf[1] == MOONLET_CONTENT &&
         d->buf[2] == (MID >> 8) && d->buf[3] == (MID & 255), "the RST verifies: the answer "
         "goes piggybacked in the ACK of the request");
    T_OK(s->verified && lo->srv.sessions.unv_bytes == 0, "verified; the budget is free");
    lo_input(lo, 0, req, get("b", MID + 1, MT_CON), 0);
    T_OK(code_of(lo_take(lo, 0)) == MOONLET_CONTENT, "a verified peer gets it at once");
    lo_stop(lo);
}

static void
t_ping_unanswered(void)
{
    const char *opts[] = {"ack_timeout=2", "max_retransmit=4", NULL};
    struct lo *lo = lo_start(opts);
    unsigned pings = 0;
    const struct lo_dgram *d;

    lo_input(lo, 0, req, get("b", MID, MT_CON), 0);
    while ((d = lo_take(lo, 0)) != NULL)
        pings += is_ping(d);
    T_EQ_INT(pings, 1, "one ping at first");
    /* a ping is repeated after ACK_TIMEOUT/4 (0.5..0.75 s), doubling: 5 sends in ~23 s */
    lo_advance(lo, 0.4);
    T_OK(lo_take(lo, 0) == NULL, "not repeated before ACK_TIMEOUT/4");
    for (int i = 0; i < 240; i++)
        lo_advance(lo, 0.1);
    while ((d = lo_take(lo, 0)) != NULL)
        pings += is_ping(d);
    T_OK(pings >= 2 && lo->tx[0] <= 3 * lo->rx[0], "repeated only within 3x (%u pings)",
         pings);
    T_OK(lo_session(lo, 0)->held == NULL && lo->srv.sessions.unv_bytes == 0,
         "never answered: the held answer is dropped, the budget free");
    lo_stop(lo);
}

static void
t_dedup(void)
{
    struct lo *lo = lo_start(NULL);
    const struct lo_dgram *d;
    uint8_t first[64];
    size_t n = lo_request(req, sizeof req, MT_CON, MOONLET_POST, MID, "tk", "o", NULL, 0,
                          NULL, 0);

    lo_input(lo, 0, req, n, 0);
    d = lo_take(lo, 0);
    T_OK(d && d->len <= sizeof first, "answered");
    memcpy(first, d->buf, d->len);
    lo_input(lo, 0, req, n, 0);
    d = lo_take(lo, 0);
    T_OK(d && memcmp(first, d->buf, d->len) == 0, "a duplicate CON: the same bytes (§4.5)");
    T_EQ_INT(lo->o_value, 1, "the handler ran once");
    lo_stop(lo);
}

static void
t_separate_retransmission(void)
{
    const char *opts[] = {"separate_after=0.1", "ack_timeout=2", "ack_random_factor=1",
                          "max_retransmit=2", NULL};
    struct lo *lo = lo_start(opts);
    const struct lo_dgram *d;
    unsigned cons = 0;

    lo_input(lo, 0, req, get("d", MID, MT_CON), 0);
    while ((d = lo_take(lo, 0)) != NULL)        /* the ping a deferred answer brings */
        if (is_ping(d))
            lo_reply_empty(lo, 0, d, MT_RST);
    lo_advance(lo, 0.2);
    d = lo_take(lo, 0);
    T_OK(d && d->len == 4 && d->buf[0] == 0x60 && d->buf[2] == (MID >> 8),
         "separate_after: the empty ACK (§5.2.2)");
    T_EQ_INT(lo_answer(lo, 0), MOONLET_OK, "the deferred answer is sent");
    d = lo_take(lo, 0);
    T_OK(d && (d->buf[0] >> 4 & 3) == MT_CON && d->buf[1] == MOONLET_CONTENT,
         "as a CON of its own");
    cons = 1;
    for (int i = 0; i < 150; i++) {             /* at 2 and 6 s, given up at 14 s */
        lo_advance(lo, 0.1);
        while ((d = lo_take(lo, 0)) != NULL)
            cons += (d->buf[0] >> 4 & 3) == MT_CON && d->buf[1] == MOONLET_CONTENT;
    }
    T_EQ_INT(cons, 3, "sent 1 + MAX_RETRANSMIT times with back-off (§4.2)");
    T_OK(lo_session(lo, 0)->out_head == NULL, "then given up");
    lo_stop(lo);
}

static void
t_echo_always(void)
{
    const char *opts[] = {"verify=always", "echo_lifetime=10", NULL};
    struct lo *lo = lo_start(opts);
    const struct lo_dgram *d;
    uint8_t echo[VERIFY_ECHO_LEN];
    struct msg m;
    struct msg_opt o;
    struct lo_opt eo = {MOONLET_OPT_ECHO, echo, sizeof echo};
    size_t n;

    lo_input(lo, 0, req, get("s", MID, MT_CON), 0);
    d = lo_take(lo, 0);
    T_OK(code_of(d) == MOONLET_UNAUTHORIZED, "verify=always: 4.01 first");
    T_OK(lo_session(lo, 0) == NULL, "and no session");
    T_OK(msg_parse(&m, d->buf, d->len) == MSG_OK && msg_find(&m, MOONLET_OPT_ECHO, &o) &&
         o.len == VERIFY_ECHO_LEN, "with a 12-byte Echo");
    memcpy(echo, o.val, sizeof echo);
    n = lo_request(req, sizeof req, MT_CON, MOONLET_GET, MID + 1, "tk", "s", &eo, 1, NULL, 0);
    lo_input(lo, 1, req, n, 0);
    T_OK(code_of(lo_take(lo, 1)) == MOONLET_UNAUTHORIZED, "another peer's Echo verifies "
         "nothing");
    lo_input(lo, 0, req, n, 0);
    T_OK(code_of(lo_take(lo, 0)) == MOONLET_CONTENT && lo_session(lo, 0)->verified,
         "the request repeated with it: served, verified");
    lo_input(lo, 2, req, get("s", MID, MT_CON), 0);
    d = lo_take(lo, 2);
    msg_parse(&m, d->buf, d->len);
    msg_find(&m, MOONLET_OPT_ECHO, &o);
    memcpy(echo, o.val, sizeof echo);
    lo_advance(lo, 11);
    n = lo_request(req, sizeof req, MT_CON, MOONLET_GET, MID + 2, "tk", "s", &eo, 1, NULL, 0);
    lo_input(lo, 2, req, n, 0);
    T_OK(code_of(lo_take(lo, 2)) == MOONLET_UNAUTHORIZED, "past echo_lifetime: stale");
    lo_stop(lo);
}

static void
t_pools(void)
{
    const char *opts[] = {"unverified_sessions=2", "max_sessions=1", "separate_after=5",
                          NULL};
    struct lo *lo = lo_start(opts);
    const struct lo_dgram *d;

    lo_input(lo, 0, req, get("d", MID, MT_CON), 0);     /* a pending, unverified */
    lo_input(lo, 1, req, get("s", MID, MT_CON), 0);
    lo_input(lo, 2, req, get("s", MID, MT_CON), 0);     /* peer 0 (least recent) goes */
    T_OK(lo_session(lo, 0) == NULL && lo_session(lo, 1) && lo_session(lo, 2),
         "a full unverified pool forgets its least recently active peer, busy or not");
    while ((d = lo_take(lo, 0)) != NULL && is_ping(d))
        ;
    T_OK(d && code_of(d) == MOONLET_SERVICE_UNAVAILABLE, "its deferred answer ended: 5.03");
    T_EQ_INT(lo_answer(lo, 0), MOONLET_EGONE, "and its owner learns EGONE");
    lo_input(lo, 3, req, get("b", MID, MT_CON), 0);
    d = lo_take(lo, 3);
    lo_reply_empty(lo, 3, d, MT_RST);
    T_OK(lo_session(lo, 3)->verified && lo_session(lo, 3)->pool == POOL_VERIFIED,
         "a verified peer joins the verified pool");
    lo_input(lo, 4, req, get("b", MID, MT_CON), 0);
    lo_input(lo, 5, req, get("s", MID, MT_CON), 0);
    lo_input(lo, 6, req, get("s", MID, MT_CON), 0);
    T_OK(lo_session(lo, 3) != NULL, "unverified peers never push a verified one out");
    lo_stop(lo);
}

static void
t_observer_check(void)
{
    const char *opts[] = {"observe_check=10", "ack_timeout=1", "max_retransmit=1", NULL};
    struct lo *lo = lo_start(opts);
    const struct lo_dgram *d;
    struct lo_opt obs = {MOONLET_OPT_OBSERVE, "", 0};
    size_t n = lo_request(req, sizeof req, MT_CON, MOONLET_GET, MID, "ob", "o", &obs, 1, NULL,
                          0);

    for (unsigned p = 0; p < 2; p++) {
        lo_input(lo, p, req, n, 0);
        while ((d = lo_take(lo, p)) != NULL)
            if (is_ping(d))
                lo_reply_empty(lo, p, d, MT_RST);
    }
    T_EQ_INT(lo->srv.obs.count, 2, "two observers, verified");
    lo_advance(lo, 12);
    d = lo_take(lo, 0);
    if (!T_OK(d && (d->buf[0] >> 4 & 3) == MT_CON && d->buf[1] == MOONLET_CONTENT,
              "quiet for observe_check: a CON notification though nothing changed (§4.5)")) {
        lo_stop(lo);
        return;
    }
    lo_reply_empty(lo, 0, d, MT_ACK);
    for (int i = 0; i < 60; i++)
        lo_advance(lo, 0.1);
    T_EQ_INT(lo->srv.obs.count, 1, "the peer that never acknowledged it is reaped");
    T_OK(lo_session(lo, 0)->obs != NULL, "the one that did stays");
    lo_stop(lo);
}

static void
t_budgets(void)
{
    const char *opts[] = {"unverified_pendings=2", "unverified_bytes=2048",
                          "separate_after=5", NULL};
    struct lo *lo = lo_start(opts);
    uint8_t body[1024];
    uint8_t b1 = 0x0e;     /* Block1 NUM 0, M, SZX 6 */
    struct lo_opt blk = {MOONLET_OPT_BLOCK1, &b1, 1};
    const struct lo_dgram *d;
    size_t n;

    for (unsigned p = 0; p < 3; p++)
        lo_input(lo, p, req, get("d", MID, MT_CON), 0);
    while ((d = lo_take(lo, 0)) != NULL && is_ping(d))
        ;
    T_OK(code_of(d) == MOONLET_SERVICE_UNAVAILABLE, "unverified_pendings=2: a third deferred "
         "answer ends the oldest with 5.03");
    T_EQ_INT(lo->srv.sessions.unv_pendings, 2, "two counted");
    memset(body, 'x', sizeof body);
    n = lo_request(req, sizeof req, MT_CON, MOONLET_PUT, MID + 1, "up", "u", &blk, 1, body,
                   sizeof body);
    lo_input(lo, 4, req, n, 0);
    lo_input(lo, 5, req, n, 0);
    while ((d = lo_take(lo, 4)) != NULL && is_ping(d))
        ;
    T_EQ_INT(code_of(d), MOONLET_CONTINUE, "an upload within unverified_bytes: 2.31");
    while ((d = lo_take(lo, 5)) != NULL && is_ping(d))
        ;
    T_EQ_INT(code_of(d), MOONLET_CONTINUE, "a second one: 2.31");
    lo_input(lo, 6, req, n, 0);
    while ((d = lo_take(lo, 6)) != NULL && is_ping(d))
        ;
    T_EQ_INT(code_of(d), MOONLET_SERVICE_UNAVAILABLE, "a third is over it: 5.03");
    lo_stop(lo);
}

static void
t_deaf_first_ping(void)
{
    const char *opts[] = {"ack_timeout=2", NULL};
    struct lo *lo = lo_start(opts);
    struct lo_opt obs = {MOONLET_OPT_OBSERVE, "", 0};
    const struct lo_dgram *d;
    unsigned pings = 0;
    size_t n = lo_request(req, sizeof req, MT_CON, MOONLET_GET, MID, "ob", "o", &obs, 1, NULL,
                          0);

    /* a client deaf to the first ping (libcoap 4.3.1 in its first 250 ms) registers; the
     * resource then changes often: notifications must not spend the credit the ping's
     * repetition needs */
    lo_input(lo, 0, req, n, 0);
    for (int i = 0; i < 10; i++) {
        n = lo_request(req, sizeof req, MT_CON, MOONLET_POST, (uint16_t)(MID + 1 + i), "w",
                       "o", NULL, 0, NULL, 0);
        lo_input(lo, 1, req, n, 0);
    }
    while ((d = lo_take(lo, 0)) != NULL)
        pings += is_ping(d);
    T_EQ_INT(pings, 1, "the first ping (unanswered)");
    lo_advance(lo, 1.0);
    d = lo_take(lo, 0);
    T_OK(is_ping(d), "its repetition goes, whatever was notified meanwhile");
    if (d)
        lo_reply_empty(lo, 0, d, MT_RST);
    T_OK(lo_session(lo, 0)->verified, "and verifies the peer");
    d = lo_take(lo, 0);
    T_OK(d && d->buf[1] == MOONLET_CONTENT, "the latest notification follows");
    T_OK(lo->tx[0] <= 3 * lo->rx[0] + 200, "within 3x until then");
    lo_stop(lo);
}

static void
t_goodbye_unverified(void)
{
    struct lo *lo = lo_start(NULL);
    struct lo_opt obs = {MOONLET_OPT_OBSERVE, "", 0};
    const struct lo_dgram *d;
    unsigned codes = 0;
    size_t n = lo_request(req, sizeof req, MT_CON, MOONLET_GET, MID, "g", "o", &obs, 1, NULL,
                          0);

    /* an observer that has not answered its ping (deaf, or slow) when its listener closes:
     * the final 5.03 must still fit the 3x rule -- the ping's reserve is no longer needed,
     * the diagnostic is optional */
    lo_input(lo, 0, req, n, 0);
    while (lo_take(lo, 0) != NULL)
        ;
    session_endpoint_gone(&lo->srv, lo->ep);
    while ((d = lo_take(lo, 0)) != NULL)
        codes += d->buf[1] == MOONLET_SERVICE_UNAVAILABLE;
    T_EQ_INT(codes, 1, "an unverified observer gets its final 5.03 when the listener closes");
    T_OK(lo->tx[0] <= 3 * lo->rx[0], "within 3x");
    lo_stop(lo);
}

static void
t_oversize(void)
{
    struct lo *lo = lo_start(NULL);
    uint8_t big[2048];
    const struct lo_dgram *d;

    lo_request(big, sizeof big, MT_CON, MOONLET_PUT, MID, "ov", "u", NULL, 0, "x", 1);
    exchange_oversize(lo->ep, &lo->peers[0], big, sizeof big, 9000);
    lo_run(lo);
    d = lo_take(lo, 0);
    T_OK(d && d->buf[1] == MOONLET_REQUEST_ENTITY_TOO_LARGE && d->buf[2] == (MID >> 8),
         "a datagram over the receive slot: 4.13 from its head (R12)");
    T_OK(lo_session(lo, 0) == NULL, "without state");
    big[1] = MOONLET_CONTENT;
    exchange_oversize(lo->ep, &lo->peers[0], big, sizeof big, 9000);
    lo_run(lo);
    T_OK(lo_take(lo, 0) == NULL, "a response that large: dropped");
    lo_stop(lo);
}

static void
t_empty_options(void)
{
    struct moonlet_resp r;
    uint8_t buf[64];

    /* every option empty (Observe 0): obuf + offset must not be NULL + 0 (UBSan in SAN=1
     * builds; found by the stateful fuzzer) */
    resp_init(&r, 1024);
    moonlet_resp_option_uint(&r, MOONLET_OPT_OBSERVE, 0);
    T_EQ_INT(resp_write(&r, buf, sizeof buf, MT_ACK, 1, NULL, 0), 5,
             "a response whose only option is empty serialises");
    resp_free(&r);
}

int
main(void)
{
    t_siphash();
    t_empty_options();
    t_small_answer();
    t_held_then_ping();
    t_ping_unanswered();
    t_dedup();
    t_separate_retransmission();
    t_echo_always();
    t_pools();
    t_observer_check();
    t_budgets();
    t_deaf_first_ping();
    t_goodbye_unverified();
    t_oversize();
    return t_done();
}
