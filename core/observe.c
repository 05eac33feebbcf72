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
 */
#include <stdlib.h>
#include <string.h>

#include "block.h"
#include "dispatch.h"
#include "exchange.h"
#include "log.h"
#include "observe.h"
#include "server.h"
#include "session.h"
#include "tree.h"

#define SEQ_MASK 0xFFFFFFu      /* §4: the Observe value is 24 bits */

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
    uint8_t check_only;                 /* queued for CON checks only: not everyone */
    moonlet_pending *pd;                /* a build waiting for its handler's deferred answer */
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
    (void)srv;
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
    if (!s->verified) {         /* RFC 7641 §7: a spoofed registration must not last */
        o->unv = 1;
        srv->sessions.unv_observers++;
        session_probe(srv, s);
    }
    o->tkl = req->m->tkl;
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
    if (!o->live) {
        o->live = 1;
        o->con_at = ev_now(srv->loop);
    }
    block_etag_add(resp);       /* as every notification has (§3.3.1, §4.3.2) */
    /* every message of a group with an Observe value gets a newer one (§3.4) */
    g->seq = (g->seq + 1) & SEQ_MASK;
    moonlet_resp_option_uint(resp, MOONLET_OPT_OBSERVE, g->seq);
}

/* ---- notifications ---------------------------------------------------------------- */

/* Schedule a notification of g: to all its observers, or (check) only to those whose CON
 * check is due. */
static void
queue_add(struct server *srv, struct obs_group *g, int check)
{
    if (g->building) {          /* its handler runs: once it answers, another round */
        g->again = 1;
        return;
    }
    if (g->queued) {
        g->check_only &= (uint8_t)check;
        return;
    }
    g->check_only = (uint8_t)check;
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

/* Send resp to every live observer of g, then end the group if resp is final (returns 1:
 * g is gone). */
static int
fanout(struct server *srv, struct obs_group *g, struct moonlet_resp *resp)
{
    /* a resource that stopped being observable (a reload) answers once more, finally */
    int final = MSG_CLASS(resp->code) != 2 || !g->res->obs;
    uint8_t *t = srv->obs.tmpl, *b = srv->txbuf;
    ev_tstamp now = ev_now(srv->loop);
    struct rep *rep = NULL;
    long n;

    if (!final) {
        rep = block_notification(srv, &g->blk, resp);   /* §3.4 of RFC 7959: block 0 */
        block_etag_add(resp);   /* tells a representation from the last one (§3.3.1) */
        g->seq = (g->seq + 1) & SEQ_MASK;
        moonlet_resp_option_uint(resp, MOONLET_OPT_OBSERVE, g->seq);
    }
    /* the template leaves room for the longest token in txbuf */
    n = resp_write(resp, t, sizeof srv->txbuf - MSG_TOKEN_MAX, MT_NON, 0, NULL, 0);
    if (n < 0) {
        log_warn("%s: notification does not fit one datagram; sent 5.00", g->res->path);
        resp_reset(resp);
        resp_simple(resp, MSG_CODE(5, 0), "notification too large");
        final = 1;
        n = resp_write(resp, t, sizeof srv->txbuf - MSG_TOKEN_MAX, MT_NON, 0, NULL, 0);
    }
    for (struct observer *o = g->head; o; o = o->gnext) {
        struct session *s = o->sess;
        size_t len = (size_t)n + o->tkl;
        /* §4.5: a CON now and then, and whenever the 3x rule does not let a NON go (the CON
         * waits behind a ping: RFC 9175 §2.4) */
        int con = final || o->om || o->check || g->res->notify_con ||
                  (unsigned)o->since_con + 1 >= srv->cfg.observe_con_every ||
                  now - o->con_at >= srv->cfg.observe_con_interval ||
                  !session_credit(srv, s, len);

        if (!o->live || (g->check_only && !o->check))
            continue;
        o->check = 0;
        b[0] = (uint8_t)(0x40 | (con ? MT_CON : MT_NON) << 4 | o->tkl);
        b[1] = t[1];
        memcpy(b + 4, o->token, o->tkl);
        memcpy(b + 4 + o->tkl, t + 4, (size_t)n - 4);
        if (rep)                /* its next blocks come from the same snapshot */
            block_attach(srv, s, &g->blk, rep);
        if (con) {
            o->since_con = 0;
            o->con_at = now;
            if (o->om == NULL)
                o->om = exchange_con_send(srv, s, b, len, o);
            else
                exchange_con_replace(o->om, b, len);
        } else {
            uint16_t mid = s->next_mid++;

            b[2] = (uint8_t)(mid >> 8);
            b[3] = (uint8_t)mid;
            o->last_mid = mid;
            o->non_sent = 1;
            o->since_con++;
            session_send(srv, s, b, len);
        }
    }
    if (rep)
        block_rep_release(srv, rep);
    if (final) {                /* §4.2: the observation ends with it */
        g->building = 1;        /* keep g while its observers go */
        while (g->head)
            observer_free(srv, g->head);
        g->building = 0;
        group_free(srv, g);
    }
    return final;
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
            exchange_pending_start(srv, req->pd);
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
    o->om = NULL;
    if (how != OBS_ACKED) {
        /* §3.6: an RST ends it; §4.5: so does a CON notification never acknowledged */
        log_debug("%s: observer removed (%s)", o->g->res->path,
                  how == OBS_REJECTED ? "reset" : "not acknowledged");
        observer_free(srv, o);
    }
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
    for (struct observer *o = s->obs; o; o = o->snext)
        if (o->unv) {
            o->unv = 0;
            srv->sessions.unv_observers--;
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
            n = resp_write(resp, srv->txbuf, sizeof srv->txbuf, MT_NON, s->next_mid,
                           o->token, o->tkl);
            if (n > 0 && !session_credit(srv, s, (size_t)n)) {
                resp->plen = 0;
                n = resp_write(resp, srv->txbuf, sizeof srv->txbuf, MT_NON, s->next_mid,
                               o->token, o->tkl);
            }
            s->next_mid++;
            if (n > 0)
                session_send(srv, s, srv->txbuf, (size_t)n);
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
