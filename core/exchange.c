/*
 * exchange.c -- the message layer over UDP (RFC 7252 §4, §5.2).
 * Input: type/code screening (§4.2, §4.3), deduplication (§4.5), piggybacked responses.
 * Output: separate responses (§5.2.2) as CONs, retransmitted with exponential back-off
 * (§4.2) one at a time per peer (NSTART = 1, §4.7); an RST or the last timeout ends them.
 */
#include <stdlib.h>
#include <string.h>

#include "block.h"
#include "dispatch.h"
#include "exchange.h"
#include "log.h"
#include "observe.h"
#include "plugin.h"
#include "server.h"
#include "session.h"

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
    uint8_t *buf;               /* inline, or malloc'd when a replacement outgrew it */
    size_t len, cap;
    uint8_t inline_buf[];
};

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
    if (om->buf != om->inline_buf)
        free(om->buf);
    free(om);
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
    if (s->out_head)
        out_start(s->out_head);
}

static void
out_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct outmsg *om = (struct outmsg *)((char *)w - offsetof(struct outmsg, timer));
    struct endpoint *ep = om->sess->ep;

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
    om->timeout *= 2;
    if (om->stale) {
        /* RFC 7641 §4.5.2: a newer notification replaces the one being retransmitted; it
         * keeps the retransmission counter and timeout, under a MID of its own */
        om->stale = 0;
        om->mid = om->sess->next_mid++;
        om->buf[2] = (uint8_t)(om->mid >> 8);
        om->buf[3] = (uint8_t)om->mid;
    }
    ep->tp->send(ep, &om->sess->peer, om->buf, om->len);
    ev_timer_set(&om->timer, om->timeout, 0);
    ev_timer_start(loop, &om->timer);
}

static void
out_start(struct outmsg *om)
{
    struct server *srv = om->srv;
    struct session *s = om->sess;
    struct endpoint *ep = s->ep;

    om->mid = s->next_mid++;
    om->buf[2] = (uint8_t)(om->mid >> 8);
    om->buf[3] = (uint8_t)om->mid;
    om->retries = 0;
    /* §4.2: initial timeout random in [ACK_TIMEOUT, ACK_TIMEOUT * ACK_RANDOM_FACTOR] */
    om->timeout = srv->cfg.ack_timeout *
                  (1.0 + server_random(srv) * (srv->cfg.ack_random_factor - 1.0));
    ep->tp->send(ep, &s->peer, om->buf, om->len);
    ev_timer_init(&om->timer, out_timeout, om->timeout, 0);
    ev_timer_start(srv->loop, &om->timer);
}

struct outmsg *
exchange_con_send(struct server *srv, struct session *s, const uint8_t *buf, size_t len,
                  struct observer *o)
{
    struct outmsg *om = malloc(sizeof *om + len);

    if (om == NULL)
        return NULL;
    memset(om, 0, sizeof *om);
    om->sess = s;
    om->srv = srv;
    om->obs = o;
    om->buf = om->inline_buf;
    om->len = om->cap = len;
    memcpy(om->buf, buf, len);
    ev_init(&om->timer, out_timeout);
    if (s->out_tail)
        s->out_tail->next = om;
    else
        s->out_head = om;
    s->out_tail = om;
    if (s->out_head == om)
        out_start(om);
    return om;
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

    for (; om; om = next) {
        next = om->next;
        ev_timer_stop(srv->loop, &om->timer);
        out_free(om);
    }
    s->out_head = s->out_tail = NULL;
}

/* An empty ACK or RST from a peer: does it end our CON in flight? (§4.2, §4.3) */
static void
ack_or_rst(struct endpoint *ep, const struct peer *from, const struct msg *m)
{
    struct session *s = session_find(ep->srv, ep, from);

    if (s == NULL)
        return;
    if (s->out_head && s->out_head->mid == m->mid)
        out_done(s->out_head, m->type == MT_ACK ? OBS_ACKED : OBS_REJECTED);
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

/* Answer a request now: piggybacked in the ACK of a CON, or as a NON (§5.2.1, §5.2.3). */
static void
respond(struct server *srv, struct session *s, const struct msg *m, struct dedup *d,
        struct moonlet_resp *resp, unsigned no_response)
{
    struct endpoint *ep = s->ep;
    long n;

    if (suppressed(no_response, resp->code)) {
        if (m->type == MT_CON) {       /* RFC 7967 §2: the CON is still acknowledged */
            uint8_t b[4] = {0x60, 0, (uint8_t)(m->mid >> 8), (uint8_t)m->mid};

            if (d)
                dedup_store(srv, s, d, b, 4);
            ep->tp->send(ep, &s->peer, b, 4);
        } else if (d) {
            d->state = DEDUP_DONE;
        }
        return;
    }
    if (m->type == MT_CON)
        n = serialise(srv, resp, MT_ACK, m->mid, m->token, m->tkl);
    else
        n = serialise(srv, resp, MT_NON, s->next_mid++, m->token, m->tkl);
    if (n < 0)
        return;
    if (d) {
        if (m->type == MT_CON)
            dedup_store(srv, s, d, srv->txbuf, (size_t)n);
        else
            d->state = DEDUP_DONE;      /* a duplicate NON is dropped (§4.5) */
    }
    ep->tp->send(ep, &s->peer, srv->txbuf, (size_t)n);
}

/* ---- multicast (RFC 7252 §8.2) -------------------------------------------------------- */

struct later {
    struct later *next, *prev;  /* the server's list, for shutdown */
    ev_timer timer;
    struct server *srv;
    struct session *sess;       /* referenced until sent */
    size_t len;
    uint8_t buf[];
};

static void
later_free(struct later *l)
{
    struct server *srv = l->srv;

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
    s->ep->tp->send(s->ep, &s->peer, l->buf, l->len);
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
    n = serialise(srv, resp, MT_NON, s->next_mid++, m->token, m->tkl);
    if (n < 0 || (l = malloc(sizeof *l + (size_t)n)) == NULL)
        return;
    l->srv = srv;
    l->sess = s;
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

/* Over max_sessions with every session busy: answer without state (no dedup). */
static void
respond_stateless(struct endpoint *ep, const struct peer *from, const struct msg *m)
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
    if (n > 0)
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
    send_empty(pd->sess->ep, &pd->sess->peer, MT_ACK, pd->mid);
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

/* Send pd->resp as the answer to its request. */
static void
pending_answer(moonlet_pending *pd)
{
    struct server *srv = pd->srv;
    struct session *s = pd->sess;
    struct dedup *d = pending_dedup(pd);
    long n;

    ev_timer_stop(srv->loop, &pd->ack_timer);
    ev_timer_stop(srv->loop, &pd->deadline);
    if (pd->group || pd->notify_only) {     /* a notification's build, not a peer's answer */
        observe_deliver(srv, pd->group, &pd->resp);
        pd->group = NULL;
        return;
    }
    block_response(srv, s, &pd->blk, &pd->resp);
    if (pd->obs) {
        observe_answer(srv, pd->obs, &pd->resp);
        pd->obs = NULL;
    }
    if (pd->res)
        dispatch_changed(srv, pd->res, pd->blk.method, pd->resp.code);
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
    if (n < 0)
        return;
    if (pd->con)
        exchange_con_send(srv, s, srv->txbuf, (size_t)n, NULL);
    else
        s->ep->tp->send(s->ep, &s->peer, srv->txbuf, (size_t)n);
}

static void
deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    moonlet_pending *pd = (moonlet_pending *)((char *)w - offsetof(moonlet_pending, deadline));

    (void)loop, (void)revents;
    log_warn("deferred response not sent within its deadline; answered 5.03");
    resp_reset(&pd->resp);
    resp_simple(&pd->resp, MSG_CODE(5, 3), "handler timed out");
    pending_answer(pd);
    pd->gone = 1;
}

static void
pending_free(moonlet_pending *pd)
{
    struct server *srv = pd->srv;

    ev_timer_stop(srv->loop, &pd->ack_timer);
    ev_timer_stop(srv->loop, &pd->deadline);
    if (pd->prev)
        pd->prev->next = pd->next;
    else
        srv->pendings = pd->next;
    if (pd->next)
        pd->next->prev = pd->prev;
    session_release(srv, pd->sess);
    if (pd->obs)                /* never answered: the registration does not happen */
        observe_answer(srv, pd->obs, NULL);
    if (pd->group)
        observe_deliver(srv, pd->group, NULL);
    if (pd->req) {              /* sent or dropped inside the handler itself */
        pd->req->pd = NULL;
        pd->req->answered = 1;
    }
    if (pd->unit)
        pd->unit->refs--;
    resp_free(&pd->resp);
    free(pd);
}

moonlet_pending *
exchange_defer(struct moonlet_req *req, unsigned deadline_ms)
{
    struct server *srv = req->srv;
    moonlet_pending *pd;
    double limit = deadline_ms / 1000.0;

    if (req->pd)
        return req->pd;
    if ((pd = calloc(1, sizeof *pd)) == NULL)
        return NULL;
    pd->srv = srv;
    pd->sess = req->sess;
    pd->con = req->m->type == MT_CON && req->group == NULL;
    pd->group = req->group;
    pd->notify_only = req->group != NULL;
    pd->obs = req->obs;
    if (req->obs)
        req->obs->pd = pd;
    pd->res = req->res;
    pd->mid = req->m->mid;
    pd->tkl = req->m->tkl;
    memcpy(pd->token, req->m->token, req->m->tkl);
    pd->no_response = req->no_response;
    pd->multicast = (uint8_t)req->multicast;
    resp_init(&pd->resp, srv->cfg.max_payload);
    if (limit <= 0 || limit > srv->cfg.defer_deadline)
        limit = srv->cfg.defer_deadline;
    ev_timer_init(&pd->ack_timer, ack_timer_cb, srv->cfg.separate_after, 0);
    ev_timer_init(&pd->deadline, deadline_cb, limit, 0);
    pd->req = req;
    req->sess->refs++;
    pd->next = srv->pendings;
    if (srv->pendings)
        srv->pendings->prev = pd;
    srv->pendings = pd;
    req->pd = pd;
    return pd;
}

void
exchange_pending_start(struct server *srv, moonlet_pending *pd)
{
    if (pd->con) {
        if (srv->cfg.separate_after <= 0)
            pending_ack(pd);
        else
            ev_timer_start(srv->loop, &pd->ack_timer);
    }
    ev_timer_start(srv->loop, &pd->deadline);
}

int
exchange_pending_send(moonlet_pending *pd)
{
    int gone = pd->gone;

    if (!gone)
        pending_answer(pd);
    pending_free(pd);
    return gone ? MOONLET_EGONE : MOONLET_OK;
}

void
exchange_pending_drop(moonlet_pending *pd)
{
    if (!pd->gone) {
        resp_reset(&pd->resp);
        resp_simple(&pd->resp, MSG_CODE(5, 3), "request dropped");
        pending_answer(pd);
    }
    pending_free(pd);
}

void
exchange_endpoint_gone(struct server *srv, struct endpoint *ep)
{
    moonlet_pending *pd;
    struct later *l, *next;

    /* the peer still waits: 5.03 now, while the socket is open. The pending itself stays
     * until its owner sends or drops it (it learns MOONLET_EGONE), as after its deadline. */
    for (pd = srv->pendings; pd; pd = pd->next) {
        if (pd->gone || pd->group || pd->notify_only || pd->sess->ep != ep)
            continue;
        resp_reset(&pd->resp);
        resp_simple(&pd->resp, MSG_CODE(5, 3), "listener closed");
        pending_answer(pd);
        pd->gone = 1;
    }
    for (l = srv->laters; l; l = next) {        /* multicast answers not yet sent */
        next = l->next;
        if (l->sess->ep == ep) {
            session_release(srv, l->sess);
            later_free(l);
        }
    }
}

void
exchange_unit_gone(struct server *srv, struct unit *u)
{
    moonlet_pending *pd = srv->pendings, *next;

    /* its code is going away: nobody can send or drop these any more */
    for (; pd; pd = next) {
        next = pd->next;
        if (u == NULL || pd->unit == u) {
            log_warn("%s: deferred response still open at unload; answered 5.03",
                     pd->unit ? pd->unit->name : "core");
            exchange_pending_drop(pd);
        }
    }
}

/* ---- input ------------------------------------------------------------------------- */

static void
request(struct endpoint *ep, const struct peer *from, const struct msg *m, int mc)
{
    struct server *srv = ep->srv;
    struct session *s = session_get(srv, ep, from);
    struct moonlet_req req;
    struct dedup *d;

    if (s == NULL) {
        if (!mc)
            respond_stateless(ep, from, m);
        return;
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
        if (d->state == DEDUP_DONE && d->len)
            ep->tp->send(ep, &s->peer, d->resp, d->len);
        else if (d->state == DEDUP_BUSY || d->state == DEDUP_ACKED) {
            send_empty(ep, &s->peer, MT_ACK, m->mid);
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
    resp_reset(&srv->resp);
    if (dispatch(srv, &req, &srv->resp) == MOONLET_DEFERRED) {
        if (req.pd) {           /* NULL: already answered from inside the handler */
            req.pd->req = NULL;
            exchange_pending_start(srv, req.pd);
        }
        return;
    }
    if (mc)
        respond_multicast(srv, s, m, d, &srv->resp, req.no_response, req.res);
    else
        respond(srv, s, m, d, &srv->resp, req.no_response);
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
    request(ep, from, &m, 1);
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
            ack_or_rst(ep, from, &m);
        return;                                     /* §4.3: an Empty NON is dropped */
    }
    switch (MSG_CLASS(m.code)) {
    case 0:
        /* §4.2, §4.3: a request travels in a CON or NON; in an ACK/RST it is malformed */
        if (m.type == MT_CON || m.type == MT_NON)
            request(ep, from, &m, 0);
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
