/*
 * state_test.c -- the message layer's state machines over the in-process loopback
 * (loopback.h), on a virtual clock: retransmission (RFC 7252 §4.2), deduplication (§4.5),
 * address verification and the 3x rule (RFC 9175 §2.4), Echo (§2.3), the two pools of
 * peers and their budgets, observers reaped (RFC 7641 §4.5), oversize datagrams, the
 * Observe Content-Format rule (§4.2), NON pacing (§4.5.1) and congestion toward a peer
 * that does not respond (RFC 7252 §4.7).
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

/* ---- Observe: the Content-Format rule, pacing, congestion ------------------------------- */

/* The value of option num in d as a uint, -1 if absent, -2 if d is not a message. */
static long
opt_of(const struct lo_dgram *d, unsigned num)
{
    struct msg m;
    struct msg_opt o;

    if (d == NULL || msg_parse(&m, d->buf, d->len) != MSG_OK)
        return -2;
    if (msg_find(&m, num, &o) == NULL)
        return -1;
    return (long)msg_uint(o.val, o.len);
}

/* Is d a message with token tok and payload text? */
static int
is_msg(const struct lo_dgram *d, unsigned type, unsigned code, const char *tok, const char *text)
{
    struct msg m;

    return d && msg_parse(&m, d->buf, d->len) == MSG_OK && m.type == type && m.code == code &&
           m.tkl == strlen(tok) && memcmp(m.token, tok, m.tkl) == 0 &&
           m.payload_len == strlen(text) && memcmp(m.payload, text, m.payload_len) == 0;
}

static unsigned
type_of(const struct lo_dgram *d)
{
    return d->buf[0] >> 4 & 3;
}

/* Peer p registers on path with token tok (a CON GET with Observe 0); the verification
 * ping, if one comes, is answered rtt seconds later. Returns the answer (len 0: none). */
static struct lo_dgram
observe_reg(struct lo *lo, unsigned p, const char *path, const char *tok, uint16_t mid,
            double rtt)
{
    struct lo_opt obs = {MOONLET_OPT_OBSERVE, "", 0};
    struct lo_dgram ans = {0}, ping = {0};
    const struct lo_dgram *d;
    size_t n = lo_request(req, sizeof req, MT_CON, MOONLET_GET, mid, tok, path, &obs, 1, NULL,
                          0);

    lo_input(lo, p, req, n, 0);
    for (int round = 0; round < 2; round++) {
        while ((d = lo_take(lo, p)) != NULL) {
            if (is_ping(d))
                ping = *d;
            else
                ans = *d;
        }
        if (ping.len == 0)
            break;
        if (rtt > 0)
            lo_advance(lo, rtt);
        lo_reply_empty(lo, p, &ping, MT_RST);   /* an answer held for it follows */
        ping.len = 0;
    }
    return ans;
}

/* Peer w PUTs text to /f in Content-Format ct (a 2.04; autonotify). */
static void
put_f(struct lo *lo, unsigned w, uint16_t mid, const char *text, uint8_t ct)
{
    struct lo_opt cf = {MOONLET_OPT_CONTENT_FORMAT, &ct, ct ? 1 : 0};
    size_t n = lo_request(req, sizeof req, MT_CON, MOONLET_PUT, mid, "w", "f", &cf, 1, text,
                          strlen(text));

    lo_input(lo, w, req, n, 0);
    T_EQ_INT(code_of(lo_take(lo, w)), MOONLET_CHANGED, "the PUT to /f");
}

static void
t_cf_rule(void)
{
    struct lo *lo = lo_start(NULL);
    struct lo_dgram a, b;
    const struct lo_dgram *d;

    /* RFC 7641 §4.2: A registered when /f was text/plain; the format changes without a
     * notification, B registers (the same request: the same group) and is answered in XML */
    lo->f_ct = MOONLET_CT_TEXT;
    a = observe_reg(lo, 0, "f", "A", MID, 0);
    T_OK(code_of(&a) == MOONLET_CONTENT && opt_of(&a, MOONLET_OPT_CONTENT_FORMAT) == 0 &&
         opt_of(&a, MOONLET_OPT_OBSERVE) >= 0, "A registers, answered in text/plain (0)");
    lo->f_ct = MOONLET_CT_XML;
    b = observe_reg(lo, 1, "f", "B", MID, 0);
    T_OK(code_of(&b) == MOONLET_CONTENT && opt_of(&b, MOONLET_OPT_CONTENT_FORMAT) == 41 &&
         opt_of(&b, MOONLET_OPT_OBSERVE) >= 0, "B registers, answered in XML (41)");
    T_EQ_INT(lo->srv.obs.count, 2, "two observers");
    put_f(lo, 2, MID + 1, "7", MOONLET_CT_XML);
    d = lo_take(lo, 0);
    T_OK(is_msg(d, MT_CON, MOONLET_NOT_ACCEPTABLE, "A", "Content-Format now 41") &&
         opt_of(d, MOONLET_OPT_OBSERVE) == -1 && opt_of(d, MOONLET_OPT_CONTENT_FORMAT) == -1,
         "A gets a final 4.06 (CON, no Observe, a short diagnostic) instead of XML (§4.2)");
    if (d)
        lo_reply_empty(lo, 0, d, MT_ACK);
    T_OK(lo_take(lo, 0) == NULL, "once");
    d = lo_take(lo, 1);
    T_OK(is_msg(d, MT_NON, MOONLET_CONTENT, "B", "f=7") &&
         opt_of(d, MOONLET_OPT_CONTENT_FORMAT) == 41 &&
         opt_of(d, MOONLET_OPT_OBSERVE) > opt_of(&b, MOONLET_OPT_OBSERVE),
         "B, registered in XML, gets the XML notification with a newer Observe value");
    T_EQ_INT(lo->srv.obs.count, 1, "A is no observer any more");
    T_OK(lo_session(lo, 0)->obs == NULL && lo_session(lo, 1)->obs != NULL, "B still is");
    put_f(lo, 2, MID + 2, "8", MOONLET_CT_XML);
    for (int i = 0; i < 100; i++)       /* retransmissions, had the 4.06 stayed a CON */
        lo_advance(lo, 1);
    T_OK(lo_take(lo, 0) == NULL, "A hears nothing more");
    T_OK(is_msg(lo_take(lo, 1), MT_NON, MOONLET_CONTENT, "B", "f=8"), "B gets the next one");
    /* no Content-Format is a format of its own */
    lo->f_ct = MOONLET_CT_NONE;
    observe_notify(&lo->srv, tree_find_path(lo->srv.tree, "/f"));
    lo_run(lo);
    d = lo_take(lo, 1);
    T_OK(is_msg(d, MT_CON, MOONLET_NOT_ACCEPTABLE, "B", "Content-Format now absent"),
         "a representation without Content-Format: 4.06 to B");
    T_EQ_INT(lo->srv.obs.count, 0, "no observer left");
    T_OK(tree_find_path(lo->srv.tree, "/f")->groups == NULL, "nor its group");
    lo_stop(lo);
}

static void
t_cf_block(void)
{
    struct lo *lo = lo_start(NULL);
    struct lo_dgram a, b;
    const struct lo_dgram *d;

    /* RFC 7959 §3.4: a large representation is notified as its block 0; the format rule
     * holds for it as for any (and the refused observer gets no snapshot to fetch) */
    lo->f_ct = MOONLET_CT_TEXT;
    lo->f_big = 1;
    a = observe_reg(lo, 0, "f", "A", MID, 0);
    T_OK(code_of(&a) == MOONLET_CONTENT && opt_of(&a, MOONLET_OPT_BLOCK2) == (8 | 6),
         "A registers: block 0 in text/plain");
    lo->f_ct = MOONLET_CT_XML;
    b = observe_reg(lo, 1, "f", "B", MID, 0);
    T_OK(code_of(&b) == MOONLET_CONTENT && opt_of(&b, MOONLET_OPT_CONTENT_FORMAT) == 41,
         "B registers: block 0 in XML");
    put_f(lo, 2, MID + 1, "9", MOONLET_CT_XML);
    d = lo_take(lo, 0);
    T_OK(d && code_of(d) == MOONLET_NOT_ACCEPTABLE && opt_of(d, MOONLET_OPT_BLOCK2) == -1 &&
         opt_of(d, MOONLET_OPT_ETAG) == -1, "A: 4.06, without Block2 or ETag");
    d = lo_take(lo, 1);
    T_OK(d && code_of(d) == MOONLET_CONTENT && opt_of(d, MOONLET_OPT_CONTENT_FORMAT) == 41 &&
         opt_of(d, MOONLET_OPT_BLOCK2) == (8 | 6) && opt_of(d, MOONLET_OPT_SIZE2) == 3000 &&
         opt_of(d, MOONLET_OPT_OBSERVE) >= 0, "B: block 0 of the XML, Size2 3000");
    T_EQ_INT(lo->srv.obs.count, 1, "one observer left");
    lo_stop(lo);
}

static void
t_cf_valid(void)
{
    struct lo *lo = lo_start(NULL);
    struct lo_dgram a;
    const struct lo_dgram *d;

    /* a registration answered 2.03 (§4.4: the client's cached copy is valid) says no
     * format: the first 2.05 sets it, a later change of format ends the observation */
    lo->f_valid = 1;
    a = observe_reg(lo, 0, "f", "A", MID, 0);
    T_OK(code_of(&a) == MOONLET_VALID && opt_of(&a, MOONLET_OPT_OBSERVE) >= 0 &&
         opt_of(&a, MOONLET_OPT_CONTENT_FORMAT) == -1, "A registers, answered 2.03");
    lo->f_valid = 0;
    lo->f_ct = MOONLET_CT_TEXT;
    put_f(lo, 2, MID + 1, "3", MOONLET_CT_TEXT);
    d = lo_take(lo, 0);
    T_OK(is_msg(d, MT_NON, MOONLET_CONTENT, "A", "f=3") &&
         opt_of(d, MOONLET_OPT_CONTENT_FORMAT) == 0, "then a 2.05 in text/plain, not a 4.06");
    put_f(lo, 2, MID + 2, "4", MOONLET_CT_XML);
    d = lo_take(lo, 0);
    T_OK(d && code_of(d) == MOONLET_NOT_ACCEPTABLE, "and XML after it is a 4.06");
    T_EQ_INT(lo->srv.obs.count, 0, "no observer left");
    lo_stop(lo);
}

/* Peer 1 POSTs to /o: it changes, its observers are notified. */
static void
post_o(struct lo *lo, uint16_t mid)
{
    size_t n = lo_request(req, sizeof req, MT_CON, MOONLET_POST, mid, "w", "o", NULL, 0,
                          NULL, 0);

    lo_input(lo, 1, req, n, 0);
    while (lo_take(lo, 1) != NULL)
        ;
}

static void
t_pacing(void)
{
    struct lo *lo = lo_start(NULL);
    struct lo_dgram a = observe_reg(lo, 0, "o", "ob", MID, 0.2);
    const struct lo_dgram *d;
    struct session *s = lo_session(lo, 0);
    long first;

    T_OK(code_of(&a) == MOONLET_CONTENT, "registered");
    T_OK(s && s->srtt > 0.199 && s->srtt < 0.201, "the verification ping's answer after "
         "0.2 s is the RTT estimate (%.3f)", s ? s->srtt : 0);
    /* RFC 7641 §4.5.1: five changes within one RTT */
    for (int i = 0; i < 5; i++) {
        post_o(lo, (uint16_t)(MID + 1 + i));
        if (i < 4)
            lo_advance(lo, 0.01);
    }
    d = lo_take(lo, 0);
    T_OK(is_msg(d, MT_NON, MOONLET_CONTENT, "ob", "o=1"), "the first change goes at once");
    first = opt_of(d, MOONLET_OPT_OBSERVE);
    T_OK(lo_take(lo, 0) == NULL, "the next four wait: one NON per round trip");
    lo_advance(lo, 0.1);
    T_OK(lo_take(lo, 0) == NULL, "still within the round trip");
    lo_advance(lo, 0.07);
    d = lo_take(lo, 0);
    T_OK(is_msg(d, MT_NON, MOONLET_CONTENT, "ob", "o=5") &&
         opt_of(d, MOONLET_OPT_OBSERVE) > first,
         "one round trip after the first: one NON with the latest state");
    lo_advance(lo, 1);
    T_OK(lo_take(lo, 0) == NULL, "and nothing else (no queue of old states)");
    post_o(lo, MID + 9);
    T_OK(is_msg(lo_take(lo, 0), MT_NON, MOONLET_CONTENT, "ob", "o=6"),
         "a change a round trip later goes at once");
    lo_stop(lo);
}

static void
t_pacing_no_estimate(void)
{
    const char *opts[] = {"verify=off", "ack_timeout=2", "ack_random_factor=1.5", NULL};
    struct lo *lo = lo_start(opts);
    struct lo_dgram a = observe_reg(lo, 0, "o", "ob", MID, 0);
    const struct lo_dgram *d;

    T_OK(code_of(&a) == MOONLET_CONTENT && lo_session(lo, 0)->srtt == 0,
         "registered without a ping (verify=off): no RTT estimate");
    post_o(lo, MID + 1);
    T_OK(is_msg(lo_take(lo, 0), MT_NON, MOONLET_CONTENT, "ob", "o=1"), "the first NON goes");
    lo_advance(lo, 2.5);
    post_o(lo, MID + 2);
    d = lo_take(lo, 0);
    T_OK(is_msg(d, MT_CON, MOONLET_CONTENT, "ob", "o=2"), "without an estimate, a second one "
         "within ACK_TIMEOUT * ACK_RANDOM_FACTOR (3 s, §4.5.1) is a CON");
    lo_advance(lo, 0.05);
    if (d)
        lo_reply_empty(lo, 0, d, MT_ACK);
    T_OK(lo_session(lo, 0)->srtt > 0.049 && lo_session(lo, 0)->srtt < 0.051,
         "its ACK gives the estimate");
    lo_advance(lo, 0.1);
    post_o(lo, MID + 3);
    T_OK(is_msg(lo_take(lo, 0), MT_NON, MOONLET_CONTENT, "ob", "o=3"), "then NONs again");
    lo_stop(lo);
}

static void
t_probing(void)
{
    const char *opts[] = {"ack_timeout=2", "max_retransmit=8", "observe_check=86400", NULL};
    struct lo *lo = lo_start(opts);
    struct resource *c = tree_find_path(lo->srv.tree, "/c");
    const struct lo_dgram *d;
    double t0 = 0, silent_at = 0, now = 0, end = 900;
    size_t non_bytes = 0, nons = 0, cons = 0, stale = 0;
    int other_con = 0;
    char first_con = 0;
    struct lo_dgram last = {0};

    /* peer 0 observes /c (every notification a CON) twice and /o (NON) twice, then
     * acknowledges nothing: RFC 7252 §4.7, NSTART = 1 and PROBING_RATE */
    observe_reg(lo, 0, "c", "c1", MID, 0);
    observe_reg(lo, 0, "c", "c2", MID + 1, 0);
    observe_reg(lo, 0, "o", "o1", MID + 2, 0);
    observe_reg(lo, 0, "o", "o2", MID + 3, 0);
    T_EQ_INT(lo->srv.obs.count, 4, "four observers of one peer");
    for (int step = 0; now < end; step++) {
        post_o(lo, (uint16_t)(MID + 10 + step));
        observe_notify(&lo->srv, c);
        lo_run(lo);
        while ((d = lo_take(lo, 0)) != NULL) {
            if (type_of(d) == MT_CON) {
                cons++;
                if (first_con == 0)
                    first_con = (char)d->buf[5];
                other_con |= d->buf[5] != first_con;    /* another exchange on the wire */
                if (t0 == 0) {
                    t0 = now;
                    silent_at = t0 + 2;
                }
                last = *d;
            } else if (now >= silent_at && silent_at > 0) {
                char want[32];

                snprintf(want, sizeof want, "o=%ld", lo->o_value);
                nons++;
                non_bytes += d->len + 48;
                stale += !is_msg(d, MT_NON, MOONLET_CONTENT, d->buf[5] == '1' ? "o1" : "o2",
                                 want);
            }
        }
        lo_advance(lo, 0.5);
        now += 0.5;
    }
    T_OK(cons >= 2 && cons <= 9, "CONs on the wire: the first and its repetitions (%zu)", cons);
    T_OK(!other_con, "only one CON outstanding: the other observer's waits (NSTART = 1)");
    T_OK(nons >= 2 && non_bytes <= 1.0 * (end - silent_at) + 2 * 80,
         "NONs to the silent peer: %zu datagrams, %zu bytes in %.0f s (PROBING_RATE 1 B/s)",
         nons, non_bytes, end - silent_at);
    T_EQ_INT(stale, 0, "each with the state of the moment it went");
    T_EQ_INT(lo->srv.obs.count, 4, "still observing (the CON is still being repeated)");
    post_o(lo, MID + 5000);
    T_OK(lo_take(lo, 0) == NULL, "a change while it is silent: held back");
    /* the peer answers: the CON, replaced meanwhile, goes again at once (§4.5.2) ... */
    lo_reply_empty(lo, 0, &last, MT_ACK);
    d = lo_take(lo, 0);
    T_OK(d && type_of(d) == MT_CON && d->buf[5] == first_con, "the peer acknowledges: the "
         "CON, replaced meanwhile, goes again with the latest state");
    if (d) {
        last = *d;
        lo_reply_empty(lo, 0, &last, MT_ACK);
    }
    /* ... and the observations PROBING_RATE held back get the latest state, without
     * waiting for another change or for their turn at that rate */
    nons = stale = 0;
    while ((d = lo_take(lo, 0)) != NULL) {
        char want[32];

        if (type_of(d) != MT_NON)
            continue;
        snprintf(want, sizeof want, "o=%ld", lo->o_value);
        nons++;
        stale += !is_msg(d, MT_NON, MOONLET_CONTENT, d->buf[5] == '1' ? "o1" : "o2", want);
    }
    T_EQ_INT(nons, 2, "once it answers again, both NON observers get the latest state");
    T_EQ_INT(stale, 0, "which is the latest");
    lo_stop(lo);
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
    t_cf_rule();
    t_cf_block();
    t_cf_valid();
    t_pacing();
    t_pacing_no_estimate();
    t_probing();
    return t_done();
}
