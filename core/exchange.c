/*
 * exchange.c -- the message layer over UDP (RFC 7252 §4, §5.2).
 * Input: type/code screening (§4.2, §4.3), deduplication (§4.5), piggybacked responses.
 * Output: separate responses (§5.2.2) as CONs, retransmitted with exponential back-off
 * (§4.2) one at a time per peer (NSTART = 1, §4.7); an RST or the last timeout ends them.
 * Toward a peer not verified yet (RFC 9175 §2.4; session.h) what the 3x rule does not allow
 * waits: an answer is held as it is behind a ping, a CON waits in the queue behind one;
 * the ping's RST (or any ACK of ours) verifies the peer and releases them.
 */
#include <stdlib.h>
#include <string.h>

#include "answer.h"
#include "block.h"
#include "exchange.h"
#include "layer.h"
#include "log.h"
#include "observe.h"
#include "plugin.h"
#include "server.h"
#include "session.h"
#include "tree.h"
#include "verify.h"

struct outmsg {
    struct outmsg *next;
    struct session *sess;
    struct server *srv;
    struct observer *obs;       /* a CON notification's observer, else NULL */
    ev_timer timer;
    unsigned retries;
    double timeout;
    uint16_t mid;
    uint8_t stale;              /* replaced by a newer notification since last sent */
    uint8_t ping;               /* an empty CON proving the peer's address (RFC 9175 §2.4) */
    uint8_t unv;                /* counted in the unverified budget (unv_bytes) */
    uint8_t *buf;               /* inline, or malloc'd when a replacement outgrew it */
    size_t len, cap;
    uint8_t inline_buf[];
};

/* An answer the 3x rule held back: sent as it is (a piggybacked ACK, a NON) once the peer
 * is verified, which a ping asks for within a round trip -- well inside the client's ACK
 * timeout, so a CON request still gets its piggybacked answer. */
struct held {
    struct held *next;
    size_t len;
    uint8_t buf[];
};

/* An Empty ACK or RST, stateless (§4.2): never larger than what it answers. */
static void
send_empty(struct endpoint *ep, const struct peer *to, unsigned type, uint16_t mid)
{
    uint8_t b[4] = {(uint8_t)(0x40 | type << 4), 0, (uint8_t)(mid >> 8), (uint8_t)mid};

    if (type == MT_RST)
        ep->srv->stats.rst++;
    ep->tp->send(ep, to, b, sizeof b);
}

/* ---- server-originated CONs: NSTART = 1 queue, retransmission --------------------- */

static void out_start(struct outmsg *om);

static void
out_free(struct outmsg *om)
{
    if (om->unv)
        om->srv->sessions.unv_bytes -= om->len;
    if (om->buf != om->inline_buf)
        free(om->buf);
    free(om);
}

/* A CON of ours timed out: the peer is unreachable (§4.2). Whatever else waits for it
 * goes too, and its observations end (RFC 7641 §4.5). */
static void
unreachable(struct server *srv, struct session *s)
{
    char pb[64];

    log_debug("%s: unreachable; its observations and queued messages are dropped",
              peer_str(&s->peer, pb, sizeof pb));
    observe_session_gone(srv, s);
    exchange_session_gone(srv, s);
}

/* The head of the queue is over (how: OBS_ACKED, OBS_REJECTED, OBS_TIMEOUT); the next
 * one starts. */
static void
out_done(struct outmsg *om, int how)
{
    struct session *s = om->sess;
    struct server *srv = om->srv;
    struct observer *o = om->obs;

    ev_timer_stop(srv->loop, &om->timer);
    if (om->ping)
        s->reserve = 0;
    if (how != OBS_TIMEOUT)     /* our MID came back: the peer receives what we send */
        session_verify(srv, s);
    if (how == OBS_ACKED && om->stale) {
        /* RFC 7641 §4.5.2: the peer has an older state; the newest goes out now */
        om->stale = 0;
        out_start(om);
        return;
    }
    s->out_head = om->next;
    if (s->out_head == NULL)
        s->out_tail = NULL;
    out_free(om);
    if (o)
        observe_con_done(srv, o, how);
    if (how == OBS_TIMEOUT)
        unreachable(srv, s);
    else if (s->out_head)
        out_start(s->out_head);
}

/* Send om's bytes, within the 3x rule while the peer is unverified: what it does not allow
 * is not sent (the timer still runs, as for a datagram lost on the way). */
static void
out_send(struct outmsg *om)
{
    struct session *s = om->sess;

    if (!om->ping) {
        session_send(om->srv, s, om->buf, om->len);
        return;
    }
    /* the ping is the one way out of the 3x rule: the credit of its next repetition is
     * kept back, lest answers and notifications spend it first and a peer deaf to this
     * one (libcoap 4.3.1 in its first 250 ms) is never verified */
    s->reserve = 0;
    session_send(om->srv, s, om->buf, om->len);
    if (!s->verified && om->retries < om->srv->cfg.max_retransmit) {
        uint64_t cap = 3 * (uint64_t)s->rx, left = cap > s->tx ? cap - s->tx : 0;
        uint64_t one = om->len + s->hdr;

        s->reserve = (uint16_t)(one < left ? one : left);
    }
}

static void
out_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct outmsg *om = (struct outmsg *)((char *)w - offsetof(struct outmsg, timer));

    (void)revents;
    if (om->retries >= om->srv->cfg.max_retransmit) {
        char pb[64];

        log_debug("%s: CON %u not acknowledged, given up", peer_str(&om->sess->peer, pb,
                  sizeof pb), om->mid);
        out_done(om, OBS_TIMEOUT);
        return;
    }
    /* §4.2: the timeout doubles with each retransmission */
    om->retries++;
    om->srv->m.retransmissions++;
    om->timeout *= 2;
    if (om->stale) {
        /* RFC 7641 §4.5.2: a newer notification replaces the one being retransmitted; it
         * keeps the retransmission counter and timeout, under a MID of its own */
        om->stale = 0;
        om->mid = om->sess->next_mid++;
        om->buf[2] = (uint8_t)(om->mid >> 8);
        om->buf[3] = (uint8_t)om->mid;
    }
    out_send(om);
    ev_timer_set(&om->timer, om->timeout, 0);
    ev_timer_start(loop, &om->timer);
}

static struct outmsg *
out_new(struct server *srv, struct session *s, const uint8_t *buf, size_t len)
{
    struct outmsg *om = malloc(sizeof *om + len);

    if (om == NULL)
        return NULL;
    memset(om, 0, sizeof *om);
    om->sess = s;
    om->srv = srv;
    om->buf = om->inline_buf;
    om->len = om->cap = len;
    memcpy(om->buf, buf, len);
    ev_init(&om->timer, out_timeout);
    return om;
}

/* A CoAP ping (§4.3: an Empty CON, answered by RST) at the head of s's queue. Its Message
 * ID is random, not the next of the sequence: returning it proves the address. */
static struct outmsg *
ping_new(struct server *srv, struct session *s)
{
    static const uint8_t empty[4] = {0x40, 0, 0, 0};
    struct outmsg *om = out_new(srv, s, empty, sizeof empty);

    if (om == NULL)
        return NULL;
    om->ping = 1;
    om->next = s->out_head;
    s->out_head = om;
    if (s->out_tail == NULL)
        s->out_tail = om;
    srv->stats.pings++;
    return om;
}

static void
out_start(struct outmsg *om)
{
    struct server *srv = om->srv;
    struct session *s = om->sess;

    /* RFC 9175 §2.4: more than the 3x rule allows toward an unverified address waits
     * behind a ping; the answer (RST, or ACK) verifies the peer */
    if (!om->ping && !session_credit(srv, s, om->len)) {
        struct outmsg *ping = ping_new(srv, s);

        om = ping ? ping : om;  /* no memory for it: om waits, unsent, and times out */
    }
    om->mid = om->ping ? (uint16_t)(server_random(srv) * 65536.0) : s->next_mid++;
    om->buf[2] = (uint8_t)(om->mid >> 8);
    om->buf[3] = (uint8_t)om->mid;
    om->retries = 0;
    /* §4.2: initial timeout random in [ACK_TIMEOUT, ACK_TIMEOUT * ACK_RANDOM_FACTOR]. A
     * ping starts at a quarter of that: 4 bytes, still under the 3x rule, answered at once
     * by a live peer -- and some are deaf at first (libcoap 4.3.1 sends no RST to an Empty
     * message in its first 250 ms), so its first repetition should not take seconds; a
     * spoofed peer's state goes sooner too */
    om->timeout = srv->cfg.ack_timeout * (om->ping ? 0.25 : 1.0) *
                  (1.0 + server_random(srv) * (srv->cfg.ack_random_factor - 1.0));
    out_send(om);
    ev_timer_init(&om->timer, out_timeout, om->timeout, 0);
    ev_timer_start(srv->loop, &om->timer);
}

struct outmsg *
exchange_con_send(struct server *srv, struct session *s, const uint8_t *buf, size_t len,
                  struct observer *o)
{
    struct outmsg *om = out_new(srv, s, buf, len);

    if (om == NULL)
        return NULL;
    om->obs = o;
    if (s->out_tail)
        s->out_tail->next = om;
    else
        s->out_head = om;
    s->out_tail = om;
    if (s->out_head == om)
        out_start(om);
    return om;
}

void
exchange_ping(struct server *srv, struct session *s)
{
    /* a CON already in flight proves the address as well when it is acknowledged */
    if (s->out_head == NULL && ping_new(srv, s) != NULL)
        out_start(s->out_head);
}

/* Can an answer of len bytes be held for s until its address is verified? Within
 * unverified_bytes, what all unverified peers hold together. */
static int
can_hold(const struct server *srv, const struct session *s, size_t len)
{
    return s->verified || srv->sessions.unv_bytes + len <= srv->cfg.unverified_bytes;
}

/* Keep a datagram for s until it is verified, and ask for that with a ping. */
static int
hold(struct server *srv, struct session *s, const uint8_t *buf, size_t len)
{
    struct held *h = malloc(sizeof *h + len);

    if (h == NULL)
        return -1;
    h->next = NULL;
    h->len = len;
    memcpy(h->buf, buf, len);
    if (s->held_tail)
        s->held_tail->next = h;
    else
        s->held = h;
    s->held_tail = h;
    srv->sessions.unv_bytes += len;
    session_probe(srv, s);
    return 0;
}

/* Forget what s holds: its peer is gone, or unreachable. Held answers to CON requests are
 * forgotten by dedup too, so that a retransmission is processed anew. */
static void
held_drop(struct server *srv, struct session *s)
{
    while (s->held) {
        struct held *h = s->held;

        s->held = h->next;
        srv->sessions.unv_bytes -= h->len;
        free(h);
    }
    s->held_tail = NULL;
    for (unsigned i = 0; i < s->dd_n; i++)
        if (s->dd[i].state == DEDUP_HELD)
            s->dd[i].state = DEDUP_FREE;
}

/* s is verified: what waited goes now, in order. */
static void
held_flush(struct server *srv, struct session *s)
{
    while (s->held) {
        struct held *h = s->held;

        s->held = h->next;
        srv->sessions.unv_bytes -= h->len;
        session_send(srv, s, h->buf, h->len);
        free(h);
    }
    s->held_tail = NULL;
    for (unsigned i = 0; i < s->dd_n; i++)
        if (s->dd[i].state == DEDUP_HELD)
            s->dd[i].state = DEDUP_DONE;
}

/* An answer that leaves on its own (a NON, a multicast answer): now if the 3x rule allows,
 * else held for verification; dropped (and counted) when nothing can hold it. A CON
 * (separate response) waits in the queue behind a ping instead. */
static void
send_or_hold(struct server *srv, struct session *s, uint8_t *buf, size_t len, int con)
{
    if (con) {
        struct outmsg *om;

        buf[0] = (uint8_t)(0x40 | (buf[0] & 0x0f));     /* the queue sets the MID */
        if ((session_credit(srv, s, len) || can_hold(srv, s, len)) &&
            (om = exchange_con_send(srv, s, buf, len, NULL)) != NULL) {
            if (!s->verified) {
                om->unv = 1;
                srv->sessions.unv_bytes += len;
            }
            return;
        }
    } else if (session_credit(srv, s, len)) {
        session_send(srv, s, buf, len);
        return;
    } else if (can_hold(srv, s, len) && hold(srv, s, buf, len) == 0) {
        return;
    }
    srv->stats.shed++;
}

int
exchange_con_replace(struct outmsg *om, const uint8_t *buf, size_t len)
{
    uint8_t mid[2] = {om->buf[2], om->buf[3]};

    if (len > om->cap) {
        uint8_t *nb = malloc(len);

        if (nb == NULL)
            return -1;
        if (om->buf != om->inline_buf)
            free(om->buf);
        om->buf = nb;
        om->cap = len;
    }
    if (om->unv)
        om->srv->sessions.unv_bytes += len - om->len;
    memcpy(om->buf, buf, len);
    om->len = len;
    if (om->sess->out_head == om) {     /* in flight: sent at its next retransmission */
        om->buf[2] = mid[0];
        om->buf[3] = mid[1];
        om->stale = 1;
    }
    return 0;
}

void
exchange_con_forget(struct outmsg *om)
{
    om->obs = NULL;
}

void
exchange_session_gone(struct server *srv, struct session *s)
{
    struct outmsg *om = s->out_head, *next;

    held_drop(srv, s);
    s->reserve = 0;
    for (; om; om = next) {
        next = om->next;
        ev_timer_stop(srv->loop, &om->timer);
        if (om->obs)
            observe_con_forget(om->obs);
        out_free(om);
    }
    s->out_head = s->out_tail = NULL;
}

/* An empty ACK or RST from a peer: does it end our CON in flight? (§4.2, §4.3) */
static void
ack_or_rst(struct endpoint *ep, const struct peer *from, const struct msg *m, size_t len)
{
    struct session *s = session_find(ep->srv, ep, from);
    struct outmsg *om;

    if (s == NULL)
        return;
    session_heard(ev_now(ep->srv->loop), s, len);
    om = s->out_head;
    if (om && om->mid == m->mid)        /* §4.3: a ping is answered by RST: that is fine */
        out_done(om, m->type == MT_ACK || om->ping ? OBS_ACKED : OBS_REJECTED);
    else if (m->type == MT_RST && s->obs)
        observe_rst(ep->srv, s, m->mid);    /* RFC 7641 §3.6: a NON notification refused */
}

/* ---- responses ------------------------------------------------------------------- */

/* RFC 7967 §2: the No-Response bits 2, 8, 16 suppress classes 2, 4, 5. */
static int
suppressed(unsigned no_response, unsigned code)
{
    unsigned cls = MSG_CLASS(code);

    return (cls == 2 && (no_response & 2)) || (cls == 4 && (no_response & 8)) ||
           (cls == 5 && (no_response & 16));
}

/* Serialise resp into srv->txbuf; on overflow replace it by a 5.00. */
static long
serialise(struct server *srv, struct moonlet_resp *resp, unsigned type, uint16_t mid,
          const uint8_t *token, unsigned tkl)
{
    long n = resp_write(resp, srv->txbuf, sizeof srv->txbuf, type, mid, token, tkl);

    if (n < 0) {
        log_warn("response does not fit one datagram (%zu bytes payload); sent 5.00",
                 resp->plen);
        resp_simple(resp, MSG_CODE(5, 0), "response too large");
        n = resp_write(resp, srv->txbuf, sizeof srv->txbuf, type, mid, token, tkl);
    }
    return n;
}

/* RFC 9175 §2.4: instead of an answer the 3x rule does not allow and nothing can hold,
 * 4.01 with an Echo; the client repeats the request with it and is verified. */
static void
challenge(struct server *srv, struct session *s, const struct msg *m, struct dedup *d)
{
    long n = verify_challenge(srv, &s->peer, m, srv->txbuf, sizeof srv->txbuf);

    srv->stats.challenges++;
    if (n < 0)
        return;
    if (d && m->type == MT_CON)     /* a retransmission gets it again, credit permitting */
        dedup_store(srv, s, d, srv->txbuf, (size_t)n);
    else if (d)
        d->state = DEDUP_DONE;
    session_send(srv, s, srv->txbuf, (size_t)n);
}

/* Send the answer to request m of s serialised in srv->txbuf. When the 3x rule does not
 * allow it (an unverified peer), it is held, as it is, until a ping proves the address;
 * with no room left to hold it, it becomes a 4.01 challenge. */
static void
deliver(struct server *srv, struct session *s, const struct msg *m, struct dedup *d, size_t n)
{
    int now = session_credit(srv, s, n);

    if (!now && !can_hold(srv, s, n)) {
        challenge(srv, s, m, d);
        return;
    }
    if (d && m->type == MT_CON) {
        dedup_store(srv, s, d, srv->txbuf, n);
        if (!now && d->state == DEDUP_DONE)
            d->state = DEDUP_HELD;      /* a duplicate meanwhile is not answered */
    } else if (d) {
        d->state = DEDUP_DONE;          /* a duplicate NON is dropped (§4.5) */
    }
    if (now)
        session_send(srv, s, srv->txbuf, n);
    else if (hold(srv, s, srv->txbuf, n) < 0)
        srv->stats.shed++;
}

/* Answer a request now: piggybacked in the ACK of a CON, or as a NON (§5.2.1, §5.2.3). */
static void
respond(struct server *srv, struct session *s, const struct msg *m, struct dedup *d,
        struct moonlet_resp *resp, unsigned no_response)
{
    long n;

    if (suppressed(no_response, resp->code)) {
        if (m->type == MT_CON) {       /* RFC 7967 §2: the CON is still acknowledged */
            uint8_t b[4] = {0x60, 0, (uint8_t)(m->mid >> 8), (uint8_t)m->mid};

            if (d)
                dedup_store(srv, s, d, b, 4);
            session_send(srv, s, b, 4);
        } else if (d) {
            d->state = DEDUP_DONE;
        }
        return;
    }
    if (m->type == MT_CON)
        n = serialise(srv, resp, MT_ACK, m->mid, m->token, m->tkl);
    else
        n = serialise(srv, resp, MT_NON, s->next_mid++, m->token, m->tkl);
    if (n >= 0)
        deliver(srv, s, m, d, (size_t)n);
}

/* ---- multicast (RFC 7252 §8.2) -------------------------------------------------------- */

struct later {
    struct later *next, *prev;  /* the server's list, for shutdown */
    ev_timer timer;
    struct server *srv;
    struct session *sess;       /* referenced until sent */
    uint8_t unv;                /* counted against unverified_pendings */
    size_t len;
    uint8_t buf[];
};

static void
later_free(struct later *l)
{
    struct server *srv = l->srv;

    if (l->unv)
        srv->sessions.unv_pendings--;
    ev_timer_stop(srv->loop, &l->timer);
    if (l->prev)
        l->prev->next = l->next;
    else
        srv->laters = l->next;
    if (l->next)
        l->next->prev = l->prev;
    free(l);
}

void
exchange_fini(struct server *srv)
{
    while (srv->laters)         /* multicast answers still waiting out their leisure */
        later_free(srv->laters);
}

static void
later_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct later *l = (struct later *)((char *)w - offsetof(struct later, timer));
    struct session *s = l->sess;

    (void)loop, (void)revents;
    send_or_hold(l->srv, s, l->buf, l->len, 0);
    session_release(l->srv, s);
    later_free(l);
}

/* A multicast request's answer: from our unicast address (the endpoint's socket), after
 * a random leisure so that a group's members do not all answer at once (§8.2), never an
 * error (§8.2: "SHOULD NOT respond with an error"), never an empty discovery (RFC 6690
 * §4.1: a filter matching nothing gets no answer), and as the No-Response option says. */
static void
respond_multicast(struct server *srv, struct session *s, const struct msg *m, struct dedup *d,
                  struct moonlet_resp *resp, unsigned no_response, const struct resource *res)
{
    struct later *l;
    long n;

    if (d)
        d->state = DEDUP_DONE;          /* a repeated NON is dropped (§4.5) */
    if (suppressed(no_response, resp->code) || MSG_CLASS(resp->code) != 2 ||
        (res == srv->wkc && resp->plen == 0))
        return;
    /* a spoofed flood of group requests holds no more than unverified_pendings answers */
    if (!s->verified && srv->sessions.unv_pendings >= srv->cfg.unverified_pendings) {
        srv->stats.shed++;
        return;
    }
    n = serialise(srv, resp, MT_NON, s->next_mid++, m->token, m->tkl);
    if (n < 0 || (l = malloc(sizeof *l + (size_t)n)) == NULL)
        return;
    l->srv = srv;
    l->sess = s;
    l->unv = !s->verified;
    srv->sessions.unv_pendings += l->unv;
    l->len = (size_t)n;
    l->prev = NULL;
    l->next = srv->laters;
    if (srv->laters)
        srv->laters->prev = l;
    srv->laters = l;
    memcpy(l->buf, srv->txbuf, (size_t)n);
    s->refs++;
    ev_timer_init(&l->timer, later_cb, server_random(srv) * srv->cfg.multicast_leisure, 0);
    ev_timer_start(srv->loop, &l->timer);
}

/* No session could be had (out of memory, or a verified pool full of busy peers with
 * verification off): answer without state, within the 3x rule of this one datagram. */
static void
respond_stateless(struct endpoint *ep, const struct peer *from, const struct msg *m,
                  size_t in_len)
{
    struct server *srv = ep->srv;
    struct moonlet_resp *r = &srv->resp;
    long n;

    srv->stats.overload++;
    if (m->type != MT_CON)
        return;
    resp_reset(r);
    resp_simple(r, MSG_CODE(5, 3), "server busy");
    moonlet_resp_option_uint(r, MOONLET_OPT_MAX_AGE, 5);
    n = resp_write(r, srv->txbuf, sizeof srv->txbuf, MT_ACK, m->mid, m->token, m->tkl);
    if (n > 0 && (size_t)n <= 3 * in_len)
        ep->tp->send(ep, from, srv->txbuf, (size_t)n);
}

/* ---- separate responses ------------------------------------------------------------ */

/* The dedup entry of a pending's request, unless the MID was since reused for another. */
static struct dedup *
pending_dedup(moonlet_pending *pd)
{
    struct dedup *d = dedup_find(pd->srv, pd->sess, pd->mid);

    if (d && d->tkl == pd->tkl && memcmp(d->token, pd->token, pd->tkl) == 0)
        return d;
    return NULL;
}

static int
pending_acked(moonlet_pending *pd)
{
    struct dedup *d;

    if (!pd->acked && (d = pending_dedup(pd)) && d->state == DEDUP_ACKED)
        pd->acked = 1;
    return pd->acked;
}

static void
pending_ack(moonlet_pending *pd)
{
    struct dedup *d = pending_dedup(pd);

    if (pending_acked(pd))
        return;
    /* §5.2.2: the handler is slow; acknowledge now, answer later in a CON */
    uint8_t b[4] = {0x60, 0, (uint8_t)(pd->mid >> 8), (uint8_t)pd->mid};

    session_send(pd->srv, pd->sess, b, sizeof b);
    pd->acked = 1;
    if (d)
        d->state = DEDUP_ACKED;
}

static void
ack_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    moonlet_pending *pd = (moonlet_pending *)((char *)w - offsetof(moonlet_pending, ack_timer));

    (void)loop, (void)revents;
    pending_ack(pd);
}

/* The message layer's part of a deferred answer (answer.c has run the generic hooks):
 * piggybacked if the empty ACK has not gone out yet, else a CON or NON of its own
 * (§5.2.2); a multicast request's as §8.2 says. */
static void
udp_answer(struct server *srv, moonlet_pending *pd)
{
    struct session *s = pd->sess;
    struct dedup *d = pending_dedup(pd);
    long n;

    ev_timer_stop(srv->loop, &pd->ack_timer);
    if (pd->multicast) {
        struct msg m = {.type = MT_NON, .mid = pd->mid, .token = pd->token, .tkl = pd->tkl};

        respond_multicast(srv, s, &m, d, &pd->resp, pd->no_response, pd->res);
        return;
    }
    if (pd->con && !pending_acked(pd)) {
        struct msg m = {.type = MT_CON, .mid = pd->mid, .token = pd->token, .tkl = pd->tkl};

        respond(srv, s, &m, d, &pd->resp, pd->no_response);
        return;
    }
    if (d && d->state == DEDUP_BUSY)
        d->state = DEDUP_DONE;      /* NON: later duplicates are dropped */
    if (suppressed(pd->no_response, pd->resp.code))
        return;
    n = serialise(srv, &pd->resp, pd->con ? MT_CON : MT_NON, pd->con ? 0 : s->next_mid++,
                  pd->token, pd->tkl);
    if (n >= 0)
        send_or_hold(srv, s, srv->txbuf, (size_t)n, pd->con);
}

/* A deferred answer is open: a CON request gets its empty ACK after separate_after
 * (§5.2.2), at once when that is 0. */
static void
udp_deferred(struct server *srv, moonlet_pending *pd)
{
    if (!pd->con)
        return;
    ev_timer_init(&pd->ack_timer, ack_timer_cb, srv->cfg.separate_after, 0);
    if (srv->cfg.separate_after <= 0)
        pending_ack(pd);
    else
        ev_timer_start(srv->loop, &pd->ack_timer);
}

void
exchange_endpoint_gone(struct server *srv, struct endpoint *ep)
{
    for (struct later *l = srv->laters, *next; l; l = next) {  /* multicast answers unsent */
        next = l->next;
        if (l->sess->ep == ep) {
            session_release(srv, l->sess);
            later_free(l);
        }
    }
}

void
exchange_session_evict(struct server *srv, struct session *s)
{
    for (struct later *l = srv->laters, *next; l; l = next) {
        next = l->next;
        if (l->sess == s) {
            session_release(srv, s);
            later_free(l);
        }
    }
}

void
exchange_session_verified(struct server *srv, struct session *s)
{
    struct session_table *t = &srv->sessions;

    held_flush(srv, s);
    for (struct outmsg *om = s->out_head; om; om = om->next)
        if (om->unv) {
            om->unv = 0;
            t->unv_bytes -= om->len;
        }
    for (struct later *l = srv->laters; l; l = l->next)
        if (l->unv && l->sess == s) {
            l->unv = 0;
            t->unv_pendings--;
        }
}

int
exchange_audit(const struct server *srv, const struct session *s, size_t *bytes)
{
    size_t own = 0;

    for (const struct held *h = s->held; h; h = h->next)
        own += h->len;
    for (const struct outmsg *om = s->out_head; om; om = om->next)
        if (om->unv)
            own += om->len;
    (void)srv;
    *bytes += own;
    return s->verified && own ? -1 : 0;     /* a verified peer waits for nothing */
}

size_t
exchange_audit_pendings(const struct server *srv)
{
    size_t n = 0;

    for (const struct later *l = srv->laters; l; l = l->next)
        n += l->unv;
    return n;
}

/* ---- Observe notifications ------------------------------------------------------ */

/* A notification to o (RFC 7641 §4.5): code and body under o's token, as a CON, which
 * replaces the one o has queued or in flight (§4.5.2), or as a NON. */
static void
udp_notify(struct server *srv, struct observer *o, unsigned code, const uint8_t *body,
           size_t n, int con, ev_tstamp now)
{
    struct session *s = o->sess;
    uint8_t *b = srv->txbuf;
    size_t len = 4 + o->tkl + n;
    int idle;

    b[0] = (uint8_t)(0x40 | (con ? MT_CON : MT_NON) << 4 | o->tkl);
    b[1] = (uint8_t)code;
    memcpy(b + 4, o->token, o->tkl);
    memcpy(b + 4 + o->tkl, body, n);
    if (!con) {
        uint16_t mid = s->next_mid++;

        b[2] = (uint8_t)(mid >> 8);
        b[3] = (uint8_t)mid;
        o->last_mid = mid;
        o->non_sent = 1;
        o->since_con++;
        o->non_at = now;
        session_send(srv, s, b, len);
        return;
    }
    o->since_con = 0;
    o->con_at = now;
    if (o->om) {
        exchange_con_replace(o->om, b, len);
        o->timing = OBS_TIMING_NONE;    /* its ACK may be the older message's (Karn) */
        return;
    }
    idle = s->out_head == NULL;
    o->om = exchange_con_send(srv, s, b, len, o);
    /* it times a round trip only if it left now: not queued behind a CON or a ping */
    o->timing = o->om && idle && s->out_head == o->om ? OBS_TIMING_CON : OBS_TIMING_NONE;
    if (idle || s->cc_wait == 0)
        s->cc_wait = now;       /* the peer owes an answer from now */
}

const struct msglayer udp_layer = {
    .reliable = 0,
    .deferred = udp_deferred,
    .answer = udp_answer,
    .notify = udp_notify,
};

/* ---- input ------------------------------------------------------------------------- */

/* verify=always: a request from a peer not yet verified is answered 4.01 + Echo without
 * any state (RFC 9175 §2.4); it comes back with the Echo. 1 if it was. */
static int
must_verify(struct endpoint *ep, const struct peer *from, const struct msg *m, size_t len)
{
    struct server *srv = ep->srv;
    struct session *s = session_find(srv, ep, from);
    long n;

    if ((s && s->verified) || verify_request_echo(srv, from, m))
        return 0;
    srv->stats.challenges++;
    n = verify_challenge(srv, from, m, srv->txbuf, sizeof srv->txbuf);
    if (n > 0 && (size_t)n <= 3 * len)
        ep->tp->send(ep, from, srv->txbuf, (size_t)n);
    return 1;
}

static void
request(struct endpoint *ep, const struct peer *from, const struct msg *m, size_t len, int mc)
{
    struct server *srv = ep->srv;
    struct moonlet_req req;
    struct session *s;
    struct dedup *d;

    if (srv->cfg.verify == VERIFY_ALWAYS && !mc && must_verify(ep, from, m, len))
        return;
    if ((s = session_get(srv, ep, from)) == NULL) {
        if (!mc)
            respond_stateless(ep, from, m, len);
        return;
    }
    if (!s->verified) {                     /* session_get marked the time */
        session_rx(s, len);
        /* RFC 9175 §2.3: it got our Echo (options are sorted: none at or above 252, none) */
        if (m->last_opt >= MOONLET_OPT_ECHO && verify_request_echo(srv, from, m))
            session_verify(srv, s);
    }
    d = dedup_find(srv, s, m->mid);
    if (d && (d->tkl != m->tkl || memcmp(d->token, m->token, m->tkl) != 0)) {
        /* §4.4: a sender must not reuse a MID within EXCHANGE_LIFETIME. One that does with
         * another token sends another request, not a retransmission: process it anew */
        srv->stats.mid_reuse++;
        dedup_reset(srv, d, m->type == MT_CON, m->token, m->tkl);
    } else if (d) {
        /* §4.5: a duplicate is not processed again. A CON gets the same answer: the cached
         * response, or an empty ACK while the answer is still being worked on */
        srv->stats.dup++;
        if (m->type != MT_CON)
            return;
        if (d->state == DEDUP_DONE && d->len) {
            session_send(srv, s, d->resp, d->len);
        } else if (d->state == DEDUP_BUSY || d->state == DEDUP_ACKED) {
            uint8_t b[4] = {0x60, 0, (uint8_t)(m->mid >> 8), (uint8_t)m->mid};

            session_send(srv, s, b, sizeof b);
            d->state = DEDUP_ACKED;
        }
        return;
    } else {
        d = dedup_add(srv, s, m->mid, m->type == MT_CON, m->token, m->tkl);
    }
    memset(&req, 0, offsetof(struct moonlet_req, seg));
    req.srv = srv;
    req.sess = s;
    req.m = m;
    req.multicast = mc;
    /* a group request's answer is never held for a ping (a client's multicast session may
     * not answer one): it is cut to fit three times the request */
    if (mc && !s->verified && srv->cfg.verify != VERIFY_OFF)
        block_cap(&req.blk, 3 * len, m->tkl);
    resp_reset(&srv->resp);
    if (answer_dispatch(srv, &req, &srv->resp) == MOONLET_DEFERRED)
        return;
    if (mc)
        respond_multicast(srv, s, m, d, &srv->resp, req.no_response, req.res);
    else
        respond(srv, s, m, d, &srv->resp, req.no_response);
}

void
exchange_oversize(struct endpoint *ep, const struct peer *from, const uint8_t *buf, size_t len,
                  size_t real_len)
{
    struct server *srv = ep->srv;
    unsigned type = buf[0] >> 4 & 3, tkl = buf[0] & 15, szx = 0;
    uint16_t mid = (uint16_t)(buf[2] << 8 | buf[3]);
    struct msg_wr w;
    long n;

    /* only the header and token are sure to be whole: a request (§4.2: in a CON or a NON)
     * is all that gets an answer */
    if (len < 4 + tkl || buf[0] >> 6 != 1 || tkl > MSG_TOKEN_MAX || buf[1] == 0 ||
        MSG_CLASS(buf[1]) != 0 || (type != MT_CON && type != MT_NON))
        return;
    while ((16u << (szx + 1)) <= srv->cfg.block_size && szx < 6)
        szx++;
    msg_wr_init(&w, srv->txbuf, sizeof srv->txbuf, type == MT_CON ? MT_ACK : MT_NON,
                MOONLET_REQUEST_ENTITY_TOO_LARGE,
                type == MT_CON ? mid : (uint16_t)(server_random(srv) * 65536.0), buf + 4, tkl);
    /* RFC 7959 §2.9.3: with a Block1 option the 4.13 tells the block size to use instead,
     * when the body would fit max_body in blocks; Size1 the largest body we take */
    if (real_len - 4 - tkl <= srv->cfg.max_body)
        msg_wr_opt_uint(&w, MOONLET_OPT_BLOCK1, szx);
    msg_wr_opt_uint(&w, MOONLET_OPT_SIZE1, (uint32_t)srv->cfg.max_body);
    if ((n = msg_wr_end(&w)) > 0)
        ep->tp->send(ep, from, srv->txbuf, (size_t)n);
}

void
exchange_multicast(struct endpoint *ep, const struct peer *from, const uint8_t *buf,
                   size_t len)
{
    struct msg m;

    /* §8.1: only NON requests are for groups; anything else, malformed input included,
     * is dropped: an RST or ACK to a group message would be answered by every member */
    if (msg_parse(&m, buf, len) != MSG_OK || m.type != MT_NON || m.code == 0 ||
        MSG_CLASS(m.code) != 0) {
        ep->srv->stats.dropped++;
        return;
    }
    request(ep, from, &m, len, 1);
}

void
exchange_input(struct endpoint *ep, const struct peer *from, const uint8_t *buf, size_t len)
{
    struct msg m;
    int rc = msg_parse(&m, buf, len);

    if (rc == MSG_ESHORT || rc == MSG_EVERSION) {
        ep->srv->stats.dropped++;   /* §3: no MID to answer / "MUST be silently ignored" */
        return;
    }
    metrics_in(&ep->srv->m, ep->tp->metric, m.type, len);
    if (rc == MSG_EFORMAT) {
        /* §4.2: a CON with a format error is rejected with RST; §4.3: others are dropped */
        if (m.type == MT_CON)
            send_empty(ep, from, MT_RST, m.mid);
        return;
    }
    if (m.code == 0) {
        /* §4.1: an Empty message has no token, options or payload, else format error */
        int clean = len == 4;

        if (m.type == MT_CON)
            send_empty(ep, from, MT_RST, m.mid);   /* §4.3: CoAP ping, or malformed */
        else if ((m.type == MT_ACK || m.type == MT_RST) && clean)
            ack_or_rst(ep, from, &m, len);
        return;                                     /* §4.3: an Empty NON is dropped */
    }
    switch (MSG_CLASS(m.code)) {
    case 0:
        /* §4.2, §4.3: a request travels in a CON or NON; in an ACK/RST it is malformed */
        if (m.type == MT_CON || m.type == MT_NON)
            request(ep, from, &m, len, 0);
        return;
    case 2:
    case 4:
    case 5:
        /* §5.3.2: we send no requests, so every response is unsolicited: RST a CON,
         * drop the rest (an ACK with a response cannot match anything of ours) */
        if (m.type == MT_CON)
            send_empty(ep, from, MT_RST, m.mid);
        return;
    default:
        /* reserved classes 1, 3, 6 and signaling 7 (RFC 8323: reliable transports only) */
        if (m.type == MT_CON)
            send_empty(ep, from, MT_RST, m.mid);
        return;
    }
}
