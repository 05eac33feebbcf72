/*
 * observe.c -- Observe (RFC 7641).
 *
 * Registration (§4.1): a GET or FETCH with Observe 0 on an observable resource creates an
 * observer keyed by (peer, token, resource), live once the answer is a 2.xx; the same
 * key again replaces it; Observe 1 (§3.6), an RST to a notification (§3.6) and a CON
 * notification that is never acknowledged (§4.5) remove it.
 *
 * Fan-out (§4.2): observers asking for the same representation share a group. A notify
 * queues the group; before the loop sleeps the group's handler runs once on a copy of the
 * first registration, the answer is serialised once without token, and every observer
 * gets that template with its own header, MID and token. Sequence numbers are the
 * group's, so they increase for every observer (§3.4, §4.4).
 *
 * Reliability (§4.5): NON by default, a CON every observe_con_every notifications and at
 * least every observe_con_interval seconds; one CON notification per observer at a time:
 * a newer state replaces the one queued or in flight (§4.5.2), so a burst of changes
 * leaves no backlog. A non-2.xx notification is final (§4.2): sent as a CON, without the
 * Observe option, and the group's observers are removed.
 *
 * Content-Format (§4.2): every notification is in the format of the registration's
 * answer; an observer that would get another one gets a final 4.06 and is removed.
 *
 * Pacing (§4.5.1) and congestion (RFC 7252 §4.7): at most one NON notification per round
 * trip to an observer, and a peer that leaves a CON notification unanswered gets NONs at
 * PROBING_RATE at most. A notification that may not go yet is not queued: the observer is
 * owed the latest state, and its group is built again for it when its turn comes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "answer.h"
#include "block.h"
#include "dispatch.h"
#include "exchange.h"
#include "layer.h"
#include "log.h"
#include "observe.h"
#include "server.h"
#include "session.h"
#include "tree.h"

#define SEQ_MASK 0xFFFFFFu      /* §4: the Observe value is 24 bits */
/* a paced observer's turn, give or take the clock's rounding (libev's timers run on the
 * monotonic clock, ev_now on the wall clock) */
#define PACE_SLACK 1e-4

struct obs_group {
    struct obs_group *next, *prev;      /* the resource's groups */
    struct obs_group *dnext;            /* the server's queue of groups to notify */
    struct resource *res;
    struct moonlet_req *req;            /* the first registration, detached; builds run on it */
    struct block_ctx blk;               /* what block.c keys this representation by */
    struct observer *head;
    unsigned n;
    uint32_t seq;                       /* the last Observe value sent in this group */
    uint8_t queued, again, building;
    uint8_t subset;                     /* queued for some observers only: those with a CON
                                         * check due, and those owed the latest state */
    unsigned ndue;                      /* observers owed the latest state (pacing) */
    moonlet_pending *pd;                /* a build waiting for its handler's deferred answer */
    struct server *srv;
    ev_timer pace;                      /* the earliest turn of an observer owed a state */
};

/* ---- the observer table: (session, token) ------------------------------------------ */

static size_t
slot_of(const struct server *srv, const struct session *s, const uint8_t *tok, unsigned tkl)
{
    uint64_t h = (uint64_t)(uintptr_t)s * 0x9E3779B97F4A7C15ULL;

    for (unsigned i = 0; i < tkl; i++)
        h = (h ^ tok[i]) * 0x100000001B3ULL;
    return (size_t)(h ^ h >> 31) & (srv->obs.nbuckets - 1);
}

static void
table_grow(struct server *srv)
{
    size_t n = srv->obs.nbuckets * 2;
    struct observer **b = calloc(n, sizeof *b), **old = srv->obs.buckets;
    size_t oldn = srv->obs.nbuckets;

    if (b == NULL)
        return;                         /* longer chains, still correct */
    srv->obs.buckets = b;
    srv->obs.nbuckets = n;
    for (size_t i = 0; i < oldn; i++) {
        for (struct observer *o = old[i], *next; o; o = next) {
            size_t k = slot_of(srv, o->sess, o->token, o->tkl);

            next = o->hnext;
            o->hnext = b[k];
            b[k] = o;
        }
    }
    free(old);
}

static struct observer *
table_find(const struct server *srv, const struct session *s, const struct msg *m,
           const struct resource *r)
{
    struct observer *o = srv->obs.buckets[slot_of(srv, s, m->token, m->tkl)];

    for (; o; o = o->hnext)
        if (o->sess == s && o->g->res == r && o->tkl == m->tkl &&
            memcmp(o->token, m->token, m->tkl) == 0)
            return o;
    return NULL;
}

/* ---- groups ------------------------------------------------------------------------ */

static void
queue_remove(struct server *srv, struct obs_group *g)
{
    struct obs_group **pp = &srv->obs.dirty, *prev = NULL;

    while (*pp && *pp != g) {
        prev = *pp;
        pp = &(*pp)->dnext;
    }
    if (*pp == NULL)
        return;
    *pp = g->dnext;
    if (srv->obs.dirty_tail == g)
        srv->obs.dirty_tail = prev;
    g->queued = 0;
}

static void
group_free(struct server *srv, struct obs_group *g)
{
    struct resource *r = g->res;

    if (g->queued)
        queue_remove(srv, g);
    ev_timer_stop(srv->loop, &g->pace);
    if (g->pd) {                /* its handler still works on a notification: nobody wants it */
        g->pd->group = NULL;
        g->pd->gone = 1;
    }
    if (g->prev)
        g->prev->next = g->next;
    else
        r->groups = g->next;
    if (g->next)
        g->next->prev = g->prev;
    request_detached_free(g->req);
    free(g);
}

/* Do a and b ask for the same representation? (§4.2: query and Accept select it; a FETCH
 * also its body, RFC 8132 §2.4) */
static int
same_variant(const struct moonlet_req *a, const struct moonlet_req *b)
{
    if (a->method != b->method || a->accept != b->accept || a->nq != b->nq)
        return 0;
    for (unsigned i = 0; i < a->nq; i++)
        if (a->q[i].len != b->q[i].len || memcmp(a->q[i].p, b->q[i].p, a->q[i].len) != 0)
            return 0;
    if (a->method == MOONLET_FETCH &&
        (a->ct != b->ct || a->payload_len != b->payload_len ||
         (a->payload_len && memcmp(a->payload, b->payload, a->payload_len) != 0)))
        return 0;
    return 1;
}

static void pace_cb(struct ev_loop *loop, ev_timer *w, int revents);

static struct obs_group *
group_get(struct server *srv, struct moonlet_req *req, struct resource *r)
{
    struct obs_group *g;

    for (g = r->groups; g; g = g->next)
        if (same_variant(g->req, req))
            return g;
    if ((g = calloc(1, sizeof *g)) == NULL)
        return NULL;
    if ((g->req = request_detach(req)) == NULL) {
        free(g);
        return NULL;
    }
    g->res = r;
    g->srv = srv;
    ev_init(&g->pace, pace_cb);
    g->req->res = r;
    g->blk.res_id = r->id;
    g->blk.variant = req->blk.variant;
    g->blk.method = req->method;
    if (req->blk.has_b2) {      /* a client that asked for small blocks gets small ones */
        g->blk.has_b2 = 1;
        g->blk.b2 = (struct block_opt){0, 0, req->blk.b2.szx};
    }
    g->seq = (uint32_t)(server_random(srv) * SEQ_MASK);    /* any start will do (§3.4) */
    g->next = r->groups;
    if (r->groups)
        r->groups->prev = g;
    r->groups = g;
    return g;
}

/* ---- observers ----------------------------------------------------------------------- */

static void
observer_free(struct server *srv, struct observer *o)
{
    struct obs_group *g = o->g;
    struct session *s = o->sess;
    struct observer **pp = &srv->obs.buckets[slot_of(srv, s, o->token, o->tkl)];

    while (*pp != o)
        pp = &(*pp)->hnext;
    *pp = o->hnext;
    for (pp = &s->obs; *pp != o; pp = &(*pp)->snext)
        ;
    *pp = o->snext;
    if (o->gprev)
        o->gprev->gnext = o->gnext;
    else
        g->head = o->gnext;
    if (o->gnext)
        o->gnext->gprev = o->gprev;
    if (o->om)
        exchange_con_forget(o->om);
    if (o->pd)
        o->pd->obs = NULL;
    if (o->unv)
        srv->sessions.unv_observers--;
    if (o->due)
        g->ndue--;
    srv->obs.count--;
    s->nobs--;
    g->n--;
    free(o);
    if (g->head == NULL && !g->building)
        group_free(srv, g);
}

struct observer *
observe_request(struct server *srv, struct moonlet_req *req, struct resource *r)
{
    struct session *s = req->sess;
    uint32_t v = moonlet_req_option_uint(req, MOONLET_OPT_OBSERVE, UINT32_MAX);
    struct observer *o;
    struct obs_group *g;
    size_t k;

    if (v > 1 || (req->method != MOONLET_GET && req->method != MOONLET_FETCH))
        return NULL;            /* §2: other values and methods mean nothing here */
    o = table_find(srv, s, req->m, r);
    if (v == 1) {               /* §3.6: deregistration; the request is answered as usual */
        if (o)
            observer_free(srv, o);
        return NULL;
    }
    if (!r->obs)                /* §4.1: not observable: a plain answer, no Observe */
        return NULL;
    if (o) {                    /* §4.1: the same (peer, token, resource) replaces */
        if (same_variant(o->g->req, req)) {
            if (o->pd)          /* an older registration still unanswered: this one wins */
                o->pd->obs = NULL;
            o->pd = NULL;
            return o;
        }
        observer_free(srv, o);  /* another representation now: another group */
    }
    if (srv->obs.count >= srv->cfg.observe_max || s->nobs >= srv->cfg.observe_per_peer ||
        (!s->verified && srv->sessions.unv_observers >= srv->cfg.unverified_observers)) {
        log_debug("%s: observer limit reached; answered without Observe", r->path);
        session_probe(srv, s);  /* once verified, a new registration counts elsewhere */
        return NULL;            /* §4.1: a response without Observe says "not registered" */
    }
    if ((g = group_get(srv, req, r)) == NULL || (o = calloc(1, sizeof *o)) == NULL) {
        if (g && g->head == NULL)
            group_free(srv, g);
        return NULL;
    }
    o->g = g;
    o->sess = s;
    o->con_at = ev_now(srv->loop);
    if (!s->verified) {         /* RFC 7641 §7: a spoofed registration must not last */
        int idle = s->out_head == NULL;

        o->unv = 1;
        srv->sessions.unv_observers++;
        session_probe(srv, s);
        if (idle && s->out_head)        /* the ping left now: its answer times a round trip */
            o->timing = OBS_TIMING_PING;
    }
    o->tkl = req->m->tkl & 15;
    memcpy(o->token, req->m->token, o->tkl);
    o->gnext = g->head;
    if (g->head)
        g->head->gprev = o;
    g->head = o;
    g->n++;
    o->snext = s->obs;
    s->obs = o;
    s->nobs++;
    if (++srv->obs.count > srv->obs.nbuckets)
        table_grow(srv);
    k = slot_of(srv, s, o->token, o->tkl);
    o->hnext = srv->obs.buckets[k];
    srv->obs.buckets[k] = o;
    return o;
}

void
observe_answer(struct server *srv, struct observer *o, struct moonlet_resp *resp)
{
    struct obs_group *g;

    if (o == NULL)
        return;
    o->pd = NULL;
    if (resp == NULL || MSG_CLASS(resp->code) != 2) {
        observer_free(srv, o);  /* §4.1: an error response does not register */
        return;
    }
    g = o->g;
    o->live = 1;
    /* §4.2: the format its notifications must have (none is a format too); a 2.03 (§4.4)
     * validated what the client holds, whose format it does not say */
    o->ct_open = resp->code == MOONLET_VALID;
    o->no_ct = resp->ct == MOONLET_CT_NONE;
    o->ct = (uint16_t)(o->no_ct ? 0 : resp->ct);
    if (o->due) {               /* this answer is the latest state */
        o->due = 0;
        g->ndue--;
    }
    block_etag_add(resp);       /* as every notification has (§3.3.1, §4.3.2) */
    /* every message of a group with an Observe value gets a newer one (§3.4) */
    g->seq = (g->seq + 1) & SEQ_MASK;
    moonlet_resp_option_uint(resp, MOONLET_OPT_OBSERVE, g->seq);
}

/* ---- notifications ---------------------------------------------------------------- */

/* Schedule a notification of g: to all its observers, or (subset) only to those whose CON
 * check is due and those owed the latest state. */
static void
queue_add(struct server *srv, struct obs_group *g, int subset)
{
    if (g->building) {          /* its handler runs: once it answers, another round */
        g->again = 1;
        return;
    }
    if (g->queued) {
        g->subset &= (uint8_t)subset;
        return;
    }
    g->subset = (uint8_t)subset;
    g->queued = 1;
    g->dnext = NULL;
    if (srv->obs.dirty)
        srv->obs.dirty_tail->dnext = g;
    else
        srv->obs.dirty = g;
    srv->obs.dirty_tail = g;
}

void
observe_notify(struct server *srv, struct resource *r)
{
    for (struct obs_group *g = r->groups; g; g = g->next)
        queue_add(srv, g, 0);
}

/* ---- round trips, pacing, congestion (RFC 7641 §4.5.1, RFC 7252 §4.7) --------------- */

/* A round-trip sample r of the peer of s, smoothed as RFC 6298 §2 does (SRTT <- 7/8 SRTT +
 * 1/8 R; the first sample as it is). */
static void
rtt_sample(struct session *s, double r)
{
    if (r < 1e-6)
        r = 1e-6;               /* 0 is "no sample" */
    s->srtt = (float)(s->srtt > 0 ? 0.875 * s->srtt + 0.125 * r : r);
}

/* RFC 7252 §4.7: a peer that has left a CON notification unanswered for ACK_TIMEOUT, and
 * sent nothing else meanwhile, does not respond. */
static int
silent(const struct server *srv, const struct session *s, ev_tstamp now)
{
    if (s->cc_wait == 0 || s->out_head == NULL)
        return 0;
    return now - (s->cc_wait > s->heard ? s->cc_wait : s->heard) >= srv->cfg.ack_timeout;
}

enum { PACE_NON, PACE_CON, PACE_WAIT };

/* May o be sent a NON notification of len bytes now? PACE_WAIT: not before *at. */
static int
pace(const struct server *srv, const struct observer *o, size_t len, ev_tstamp now,
     ev_tstamp *at)
{
    const struct session *s = o->sess;
    double gap;

    if (silent(srv, s, now)) {
        /* RFC 7252 §4.7: PROBING_RATE to the peer on average; its observers share it, so
         * the NONs to each are that many times further apart (IP and UDP headers count) */
        gap = (double)(len + s->hdr) * (s->nobs ? s->nobs : 1) / srv->cfg.probing_rate;
    } else if (s->srtt > 0) {
        gap = s->srtt;          /* §4.5.1: one NON notification per round trip */
    } else {
        /* §4.5.1 without an estimate: one NON in ACK_TIMEOUT * ACK_RANDOM_FACTOR (RFC 7252
         * §4.8; 3 s by default, the rate §4.5.1 names). What comes sooner goes as a CON:
         * its acknowledgement gives the estimate, and CONs wait for each other (NSTART) */
        gap = srv->cfg.ack_timeout * srv->cfg.ack_random_factor;
        return now >= o->non_at + gap - PACE_SLACK ? PACE_NON : PACE_CON;
    }
    if (now >= o->non_at + gap - PACE_SLACK)
        return PACE_NON;
    *at = o->non_at + gap;
    return PACE_WAIT;
}

static void
owe(struct obs_group *g, struct observer *o)
{
    if (!o->due) {
        o->due = 1;
        g->ndue++;
    }
}

static void
settle(struct obs_group *g, struct observer *o)
{
    if (o->due) {
        o->due = 0;
        g->ndue--;
    }
}

/* The group's next turn: at (0: nobody is owed anything). */
static void
pace_arm(struct server *srv, struct obs_group *g, ev_tstamp at, ev_tstamp now)
{
    ev_timer_stop(srv->loop, &g->pace);
    if (at == 0)
        return;
    ev_timer_set(&g->pace, at > now ? at - now : 0, 0);
    ev_timer_start(srv->loop, &g->pace);
}

/* An observer's turn came: the group is built again for those owed the latest state, so
 * the state they get is the one of now, never an older one kept for them. */
static void
pace_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct obs_group *g = (struct obs_group *)((char *)w - offsetof(struct obs_group, pace));

    (void)loop, (void)revents;
    if (g->ndue)
        queue_add(g->srv, g, 1);
}

/* The peer of s answers again after keeping us waiting: observations of it held back by
 * PROBING_RATE may go at its pace now. */
static void
resume(struct server *srv, struct session *s)
{
    for (struct observer *o = s->obs; o; o = o->snext)
        if (o->due)
            queue_add(srv, o->g, 1);
}

/* ---- fan-out ------------------------------------------------------------------------- */

/* Send a notification to o through its session's message layer: code, then body (options
 * and payload, serialised once for the whole group). */
static void
emit(struct server *srv, struct observer *o, unsigned code, const uint8_t *body, size_t n,
     int con, ev_tstamp now)
{
    struct endpoint *ep = o->sess->ep;

    if (ep) {
        srv->m.notifications++;
        ep->tp->ml->notify(srv, o, code, body, n, con, now);
    }
}

#define REFUSAL_MAX 64

/* RFC 7641 §4.2: "the Content-Format MUST be the same as the one used in the initial
 * response"; a server that cannot keep it SHOULD send 4.06 and MUST then remove the
 * observer. o gets that as its final notification (a CON, like every final one); the 4.06
 * is serialised once per fan-out, into buf (*n: its length, 0 until then). */
static void
refuse(struct server *srv, struct observer *o, int ct, uint8_t *buf, long *n, ev_tstamp now)
{
    if (*n == 0) {
        char why[40];
        struct msg_wr w;
        int len = ct == MOONLET_CT_NONE
                      ? snprintf(why, sizeof why, "Content-Format now absent")
                      : snprintf(why, sizeof why, "Content-Format now %d", ct);

        msg_wr_body_init(&w, buf, REFUSAL_MAX);
        msg_wr_payload(&w, why, (size_t)len);
        *n = msg_wr_end(&w);
    }
    log_debug("%s: observer registered in Content-Format %d removed (now %d): 4.06",
              o->g->res->path, o->no_ct ? MOONLET_CT_NONE : (int)o->ct, ct);
    if (*n > 0)
        emit(srv, o, MOONLET_NOT_ACCEPTABLE, buf, (size_t)*n, 1, now);
    observer_free(srv, o);
}

/* Send resp to every live observer of g (or, g->subset, to those with a CON check due or
 * owed the latest state), then end the group if resp is final. Returns 1: g is gone.
 *
 * One group, many formats: observers share a group by what they asked for, but each
 * registration's answer fixed its own format (§4.2), and a registration answered after a
 * change its group has not been notified of yet joins with the new format. Each observer
 * therefore keeps its format and is checked in this loop -- one integer comparison beside
 * the header it gets written anyway. Splitting groups by format instead would need the
 * format before the handler has answered, run the handler once per format, and still not
 * spare the check: a group's format changes whenever the handler's answer does. */
static int
fanout(struct server *srv, struct obs_group *g, struct moonlet_resp *resp)
{
    /* a resource that stopped being observable (a reload) answers once more, finally */
    int final = MSG_CLASS(resp->code) != 2 || !g->res->obs;
    int ct = resp->ct;
    unsigned no_ct = ct == MOONLET_CT_NONE, ct16 = no_ct ? 0 : (unsigned)ct;
    int check_ct = !final && resp->code != MOONLET_VALID;      /* a 2.03 has no format */
    uint8_t *t = srv->obs.tmpl, refusal[REFUSAL_MAX];
    uint8_t building = g->building;
    ev_tstamp now = ev_now(srv->loop), wake = 0;
    struct rep *rep = NULL;
    long n, nr = 0;

    if (!final) {
        rep = block_notification(srv, &g->blk, resp);   /* §3.4 of RFC 7959: block 0 */
        block_etag_add(resp);   /* tells a representation from the last one (§3.3.1) */
        g->seq = (g->seq + 1) & SEQ_MASK;
        moonlet_resp_option_uint(resp, MOONLET_OPT_OBSERVE, g->seq);
    }
    /* the body, once for every observer: each one's header and token are its message
     * layer's (room is left for the longest in txbuf) */
    n = resp_body(resp, t, sizeof srv->txbuf - 4 - MSG_TOKEN_MAX);
    if (n < 0) {
        log_warn("%s: notification does not fit one datagram; sent 5.00", g->res->path);
        resp_reset(resp);
        resp_simple(resp, MSG_CODE(5, 0), "notification too large");
        final = 1;
        n = resp_body(resp, t, sizeof srv->txbuf - 4 - MSG_TOKEN_MAX);
    }
    g->building = 1;            /* keep g while observers leave (refused ones) */
    for (struct observer *o = g->head, *next; o; o = next) {
        struct session *s = o->sess;
        size_t len = (size_t)n + 4 + o->tkl;     /* as a datagram: 3x rule, pacing */
        ev_tstamp at;
        int con;

        next = o->gnext;
        if (!o->live || (g->subset && !o->check && !o->due))
            continue;
        if (check_ct && o->ct_open) {
            o->ct_open = 0;
            o->no_ct = no_ct & 1;
            o->ct = (uint16_t)ct16;
        } else if (check_ct && (o->ct != ct16 || o->no_ct != no_ct)) {
            refuse(srv, o, ct, refusal, &nr, now);
            continue;
        }
        /* §4.5: a CON now and then, and whenever the 3x rule does not let a NON go (the CON
         * waits behind a ping: RFC 9175 §2.4). Over a reliable transport there are no
         * types, and TCP paces (RFC 8323 §7) */
        if (s->ep->tp->ml->reliable)
            con = 0;
        else
            con = final || o->om || o->check || g->res->notify_con ||
              (unsigned)o->since_con + 1 >= srv->cfg.observe_con_every ||
              now - o->con_at >= srv->cfg.observe_con_interval ||
              !session_credit(srv, s, len);
        if (!con && !s->ep->tp->ml->reliable) {
            int p = pace(srv, o, len, now, &at);

            if (p == PACE_WAIT) {       /* the latest state goes at its turn (pace_cb) */
                owe(g, o);
                if (wake == 0 || at < wake)
                    wake = at;
                continue;
            }
            con = p == PACE_CON;
        }
        o->check = 0;
        settle(g, o);
        if (rep)                /* its next blocks come from the same snapshot */
            block_attach(srv, s, &g->blk, rep);
        emit(srv, o, resp->code, t, (size_t)n, con, now);
    }
    if (rep)
        block_rep_release(srv, rep);
    if (final) {                /* §4.2: the observation ends with it */
        while (g->head)
            observer_free(srv, g->head);
        group_free(srv, g);     /* a build still in flight learns it (g->pd) */
        return 1;
    }
    g->building = building;
    if (g->head == NULL && !building) {     /* every one was refused */
        group_free(srv, g);
        return 1;
    }
    pace_arm(srv, g, wake, now);
    return 0;
}

static void
build(struct server *srv, struct obs_group *g)
{
    struct moonlet_req *req = g->req;
    struct resource *r = g->res;
    struct moonlet_resp *resp = &srv->obs.resp;
    unsigned slot = r->has[req->method] ? req->method : 0;

    if (!r->has[slot]) {        /* cannot happen: it answered the registration */
        resp_reset(resp);
        resp_simple(resp, MOONLET_METHOD_NOT_ALLOWED, NULL);
        fanout(srv, g, resp);
        return;
    }
    /* the copy of the registration, as new: the handler cannot tell it from a request */
    req->pd = NULL;
    req->answered = 0;
    req->path = NULL;
    req->x1 = NULL;
    req->obs = NULL;
    req->group = g;
    req->sess = g->head->sess;
    req->blk = g->blk;
    resp_reset(resp);
    g->building = 1;
    if (dispatch_call(srv, r, slot, req, resp) == MOONLET_DEFERRED) {
        if (req->pd) {          /* NULL: it answered already (observe_deliver ran) */
            g->pd = req->pd;
            req->pd->req = NULL;
            answer_start(srv, req->pd);
        }
    } else {
        observe_deliver(srv, g, resp);
    }
    tree_resource_release(r);
}

void
observe_deliver(struct server *srv, struct obs_group *g, struct moonlet_resp *resp)
{
    if (g == NULL)
        return;
    g->pd = NULL;
    g->building = 0;
    if (g->head == NULL) {      /* every observer left while the handler worked */
        group_free(srv, g);
        return;
    }
    if (resp == NULL)
        log_warn("%s: a notification's handler never answered", g->res->path);
    else if (fanout(srv, g, resp))
        return;                 /* a final notification: g is gone */
    if (g->again) {
        g->again = 0;
        queue_add(srv, g, 0);
    }
}

static void
wake_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    (void)revents;
    ev_idle_stop(loop, w);      /* the next prepare builds what is queued */
}

void
observe_flush(struct server *srv)
{
    unsigned n = 0;

    for (struct obs_group *g = srv->obs.dirty; g; g = g->dnext)
        n++;
    /* only what was queued before: a handler that notifies itself waits a round */
    while (n-- > 0 && srv->obs.dirty) {
        struct obs_group *g = srv->obs.dirty;

        srv->obs.dirty = g->dnext;
        if (srv->obs.dirty == NULL)
            srv->obs.dirty_tail = NULL;
        g->queued = 0;
        build(srv, g);
    }
    if (srv->obs.dirty)
        ev_idle_start(srv->loop, &srv->obs.wake);
}

/* ---- ends -------------------------------------------------------------------------- */

void
observe_con_done(struct server *srv, struct observer *o, int how)
{
    struct session *s = o->sess;
    ev_tstamp now = ev_now(srv->loop);
    int waited = s->cc_wait > 0 && now - s->cc_wait >= srv->cfg.ack_timeout;

    o->om = NULL;
    /* Karn's rule (RFC 6298 §5): only an answer that comes before the CON could have been
     * repeated (ACK_TIMEOUT at least, RFC 7252 §4.2) times a round trip */
    if (how == OBS_ACKED && o->timing == OBS_TIMING_CON &&
        now - o->con_at < srv->cfg.ack_timeout)
        rtt_sample(s, now - o->con_at);
    o->timing = OBS_TIMING_NONE;
    /* the peer answered; a CON queued behind this one leaves now (exchange.c) */
    s->cc_wait = how != OBS_TIMEOUT && s->out_head ? now : 0;
    if (how != OBS_ACKED) {
        /* §3.6: an RST ends it; §4.5: so does a CON notification never acknowledged */
        log_debug("%s: observer removed (%s)", o->g->res->path,
                  how == OBS_REJECTED ? "reset" : "not acknowledged");
        observer_free(srv, o);
    }
    if (waited && how != OBS_TIMEOUT)
        resume(srv, s);
}

int
observe_rst(struct server *srv, struct session *s, uint16_t mid)
{
    for (struct observer *o = s->obs; o; o = o->snext) {
        if (o->non_sent && o->last_mid == mid) {
            observer_free(srv, o);
            return 1;
        }
    }
    return 0;
}

void
observe_session_gone(struct server *srv, struct session *s)
{
    while (s->obs)
        observer_free(srv, s->obs);
}

void
observe_session_verified(struct server *srv, struct session *s)
{
    ev_tstamp now = ev_now(srv->loop);

    for (struct observer *o = s->obs; o; o = o->snext) {
        if (o->unv) {
            o->unv = 0;
            srv->sessions.unv_observers--;
        }
        /* the ping its registration sent was answered: a round trip, unless the ping could
         * have been repeated (after ACK_TIMEOUT/4 at least, exchange.c) -- Karn's rule */
        if (o->timing == OBS_TIMING_PING) {
            if (now - o->con_at < srv->cfg.ack_timeout / 4)
                rtt_sample(s, now - o->con_at);
            o->timing = OBS_TIMING_NONE;
        }
    }
}

size_t
observe_audit(const struct session *s)
{
    size_t n = 0;

    for (const struct observer *o = s->obs; o; o = o->snext)
        n += o->unv;
    return n;
}

void
observe_check(struct server *srv, struct session *s)
{
    for (struct observer *o = s->obs; o; o = o->snext)
        if (o->live && o->om == NULL && !o->check) {    /* none in flight already */
            o->check = 1;
            queue_add(srv, o->g, 1);
        }
}

void
observe_con_forget(struct observer *o)
{
    o->om = NULL;
    o->timing = OBS_TIMING_NONE;
}

void
observe_session_end(struct server *srv, struct session *s, unsigned code)
{
    struct moonlet_resp *resp = &srv->obs.resp;

    s->reserve = 0;             /* no ping will be repeated: the credit is the goodbye's */
    while (s->obs) {
        struct observer *o = s->obs;
        long n;

        if (o->live) {
            /* §4.2: a non-2.xx notification ends the observation. Sent as a NON: the
             * socket closes right after, so nothing could retransmit a CON. To an
             * unverified peer the diagnostic (optional, §5.5.2) goes if the 3x rule
             * would not let it */
            resp_reset(resp);
            resp_simple(resp, code, "listener closed");
            n = resp_body(resp, srv->obs.tmpl, sizeof srv->obs.tmpl);
            if (n > 0 && !session_credit(srv, s, (size_t)n + 4 + o->tkl)) {
                resp->plen = 0;
                n = resp_body(resp, srv->obs.tmpl, sizeof srv->obs.tmpl);
            }
            if (n >= 0)
                emit(srv, o, code, srv->obs.tmpl, (size_t)n, 0, ev_now(srv->loop));
        }
        observer_free(srv, o);
    }
}

void
observe_end_resource(struct server *srv, struct resource *r, unsigned code)
{
    while (r->groups) {
        struct moonlet_resp *resp = &srv->obs.resp;

        resp_reset(resp);
        resp_simple(resp, code, code == MOONLET_NOT_FOUND ? NULL : "server stopping");
        fanout(srv, r->groups, resp);
    }
}

void
observe_end(struct server *srv, struct unit *u, unsigned code)
{
    if (srv->tree == NULL)      /* start-up failed before there was anything to observe */
        return;
    for (struct resource *r = srv->tree->first; r; r = r->next)
        if (u == NULL || r->unit == u)
            observe_end_resource(srv, r, code);
}

void
observe_move(struct server *srv, struct resource *from, struct resource *to)
{
    struct obs_group *g = from->groups;

    if (g == NULL)
        return;
    for (; g; g = g->next) {
        g->res = to;
        g->req->res = to;
    }
    to->groups = from->groups;
    from->groups = NULL;
    observe_notify(srv, to);    /* the new version's representation (or its final word) */
}

int
observe_init(struct server *srv)
{
    srv->obs.nbuckets = 64;
    if ((srv->obs.buckets = calloc(srv->obs.nbuckets, sizeof *srv->obs.buckets)) == NULL)
        return -1;
    resp_init(&srv->obs.resp, srv->cfg.max_payload);
    ev_idle_init(&srv->obs.wake, wake_cb);
    return 0;
}

void
observe_fini(struct server *srv)
{
    ev_idle_stop(srv->loop, &srv->obs.wake);
    free(srv->obs.buckets);
    srv->obs.buckets = NULL;
    resp_free(&srv->obs.resp);
}
