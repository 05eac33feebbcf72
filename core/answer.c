/*
 * answer.c -- the request path every transport shares: a request's dispatch, and its
 * deferred answer (moonlet_defer) from the handler's return to the message going out --
 * the deadline, shedding under the unverified budget, 5.03 when its listener, its peer
 * or its unit goes. What is sent, and how, is the session's message layer's (layer.h);
 * block-wise transfer, Observe registration and autonotify see every answer here first,
 * whatever carries it.
 */
#include <stdlib.h>
#include <string.h>

#include "answer.h"
#include "block.h"
#include "dispatch.h"
#include "layer.h"
#include "log.h"
#include "observe.h"
#include "plugin.h"
#include "server.h"
#include "session.h"
#include "tree.h"

int
answer_dispatch(struct server *srv, struct moonlet_req *req, struct moonlet_resp *resp)
{
    req->t0 = ev_now(srv->loop);
    req->met = NULL;
    if (dispatch(srv, req, resp) != MOONLET_DEFERRED) {
        metrics_answer(&srv->m, srv, req->method, resp->code, req->met, req->t0);
        return MOONLET_OK;
    }
    if (req->pd) {              /* NULL: already answered from inside the handler */
        req->pd->req = NULL;
        answer_start(srv, req->pd);
    }
    return MOONLET_DEFERRED;
}

/* Send pd->resp as the answer to its request: the hooks every answer passes (block-wise,
 * Observe, autonotify), then its session's message layer. */
static void
pending_answer(moonlet_pending *pd)
{
    struct server *srv = pd->srv;
    struct session *s = pd->sess;

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
    metrics_answer(&srv->m, srv, pd->method, pd->resp.code, pd->met, pd->t0);
    if (s->ep)                  /* NULL: the peer is gone (its session was closed) */
        s->ep->tp->ml->answer(srv, pd);
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

    ev_timer_stop(srv->loop, &pd->ack_timer);   /* a message layer's (UDP: empty ACK) */
    ev_timer_stop(srv->loop, &pd->deadline);
    if (pd->unv)
        srv->sessions.unv_pendings--;
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
    if (pd->unit) {
        tree_resource_release(pd->res);
        pd->unit->refs--;
    }
    resp_free(&pd->resp);
    free(pd);
}

/* End pd now with 5.03 (it may be retried later: Max-Age); its owner learns EGONE. No
 * diagnostic payload (§5.5.2: optional): the peer is likely unverified, the bytes few. */
static void
pending_shed(moonlet_pending *pd)
{
    if (pd->unv) {
        pd->unv = 0;
        pd->srv->sessions.unv_pendings--;
    }
    resp_reset(&pd->resp);
    resp_simple(&pd->resp, MSG_CODE(5, 3), NULL);
    moonlet_resp_option_uint(&pd->resp, MOONLET_OPT_MAX_AGE, 5);
    pending_answer(pd);
    pd->gone = 1;
    pd->srv->stats.shed++;
}

/* Unverified peers hold at most unverified_pendings deferred answers: make room by ending
 * the oldest (a spoofed peer's never comes back; a real one is verified by its ping long
 * before, and its answer no longer counts here). 0 if none could go. */
static int
unverified_room(struct server *srv)
{
    moonlet_pending *pd = srv->pendings, *old = NULL;

    if (srv->sessions.unv_pendings < srv->cfg.unverified_pendings)
        return 1;
    for (; pd; pd = pd->next)
        if (pd->unv && !pd->gone)
            old = pd;               /* the list is newest first: the last one is oldest */
    if (old == NULL)
        return 0;
    pending_shed(old);
    return 1;
}

moonlet_pending *
answer_defer(struct moonlet_req *req, unsigned deadline_ms)
{
    struct server *srv = req->srv;
    moonlet_pending *pd;
    double limit = deadline_ms / 1000.0;
    int unv;

    if (req->pd)
        return req->pd;
    unv = req->group == NULL && !req->sess->verified;
    if ((unv && !unverified_room(srv)) || (pd = calloc(1, sizeof *pd)) == NULL)
        return NULL;
    if (unv) {
        pd->unv = 1;
        srv->sessions.unv_pendings++;
        session_probe(srv, req->sess);  /* a real peer is verified while the handler works */
    }
    pd->srv = srv;
    pd->sess = req->sess;
    pd->con = req->m->type == MT_CON && req->group == NULL;
    pd->group = req->group;
    pd->notify_only = req->group != NULL;
    pd->obs = req->obs;
    if (req->obs)
        req->obs->pd = pd;
    pd->res = req->res;
    pd->met = req->met;
    pd->t0 = req->t0;
    pd->method = req->method;
    pd->mid = req->m->mid;
    pd->tkl = req->m->tkl;
    memcpy(pd->token, req->m->token, req->m->tkl);
    pd->no_response = req->no_response;
    pd->multicast = (uint8_t)req->multicast;
    resp_init(&pd->resp, srv->cfg.max_payload);
    if (limit <= 0 || limit > srv->cfg.defer_deadline)
        limit = srv->cfg.defer_deadline;
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
answer_start(struct server *srv, moonlet_pending *pd)
{
    ev_timer_start(srv->loop, &pd->deadline);
    if (pd->sess->ep)
        pd->sess->ep->tp->ml->deferred(srv, pd);
}

int
answer_send(moonlet_pending *pd)
{
    int gone = pd->gone;

    if (!gone)
        pending_answer(pd);
    pending_free(pd);
    return gone ? MOONLET_EGONE : MOONLET_OK;
}

void
answer_drop(moonlet_pending *pd)
{
    if (!pd->gone) {
        resp_reset(&pd->resp);
        resp_simple(&pd->resp, MSG_CODE(5, 3), "request dropped");
        pending_answer(pd);
    }
    pending_free(pd);
}

void
answer_endpoint_gone(struct server *srv, struct endpoint *ep)
{
    moonlet_pending *pd;

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
}

void
answer_session_evict(struct server *srv, struct session *s)
{
    moonlet_pending *pd;

    /* a peer pushed out of the table: what it waits for ends now (5.03, best effort) */
    for (pd = srv->pendings; pd; pd = pd->next)
        if (pd->sess == s && !pd->gone && !pd->group && !pd->notify_only)
            pending_shed(pd);
}

void
answer_session_verified(struct server *srv, struct session *s)
{
    for (moonlet_pending *pd = srv->pendings; pd; pd = pd->next)
        if (pd->unv && pd->sess == s) {
            pd->unv = 0;
            srv->sessions.unv_pendings--;
        }
}

size_t
answer_audit_pendings(const struct server *srv)
{
    size_t n = 0;

    for (const moonlet_pending *pd = srv->pendings; pd; pd = pd->next)
        n += pd->unv;
    return n;
}

void
answer_unit_gone(struct server *srv, struct unit *u)
{
    moonlet_pending *pd = srv->pendings, *next;

    /* its code is going away: nobody can send or drop these any more */
    for (; pd; pd = next) {
        next = pd->next;
        if (u == NULL || pd->unit == u) {
            log_warn("%s: deferred response still open at unload; answered 5.03",
                     pd->unit ? pd->unit->name : "core");
            answer_drop(pd);
        }
    }
}
