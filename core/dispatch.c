/*
 * dispatch.c -- request -> resource -> runtime (RFC 7252 §5.4.1, §5.7.2, §5.8, §5.9,
 * §5.10.3, §5.10.4). Every decision a handler must not have to make is made here, the
 * same way for C plugins and scripts.
 */
#include <stdio.h>

#include "access.h"
#include "block.h"
#include "crash.h"
#include "dispatch.h"
#include "log.h"
#include "metrics.h"
#include "observe.h"
#include "option.h"
#include "server.h"
#include "tree.h"

static int
ct_listed(const int *list, int ct)
{
    for (; *list != MOONLET_CT_END; list++)
        if (*list == ct)
            return 1;
    return 0;
}

static int
has_body(unsigned method)
{
    return method == MOONLET_POST || method == MOONLET_PUT || method == MOONLET_FETCH ||
           method == MOONLET_PATCH || method == MOONLET_IPATCH;
}

int
dispatch(struct server *srv, struct moonlet_req *req, struct moonlet_resp *resp)
{
    struct option_check chk;
    struct resource *r;
    unsigned verdict, code, slot;
    char diag[96];

    verdict = request_parse(req, req->m);
    /* §5.4.1: an unrecognised critical option rejects the request, whatever else it has */
    if ((code = option_check_request(req->m, &chk)) != 0) {
        if (chk.bad)
            snprintf(diag, sizeof diag, "%s: %u", chk.why, chk.bad);
        else
            snprintf(diag, sizeof diag, "%s", chk.why);
        resp_simple(resp, code, diag);
        return MOONLET_OK;
    }
    /* §5.8: an unknown method code is 4.05 */
    if (req->method < MOONLET_GET || req->method > MOONLET_IPATCH) {
        resp_simple(resp, MOONLET_METHOD_NOT_ALLOWED, NULL);
        return MOONLET_OK;
    }
    if (verdict) {
        resp_simple(resp, verdict, verdict == MOONLET_BAD_REQUEST ? "too many query options"
                                                                 : NULL);
        return MOONLET_OK;
    }
    if ((r = tree_find(srv->tree, req->seg, req->nseg)) == NULL) {
        resp_simple(resp, MOONLET_NOT_FOUND, NULL);
        return MOONLET_OK;
    }
    req->met = metrics_res(srv, r);
    /* §5.9.2.2, §5.9.2.4: who may use it, before anything else is decided about it */
    if ((code = access_check(srv, r, req->sess)) != 0) {
        resp_simple(resp, code, code == MOONLET_UNAUTHORIZED ? "secure transport required"
                                                             : "not allowed for this identity");
        return MOONLET_OK;
    }
    slot = r->has[req->method] ? req->method : 0;
    if (!r->has[slot]) {
        resp_simple(resp, MOONLET_METHOD_NOT_ALLOWED, NULL);
        return MOONLET_OK;
    }
    if (r->ct) {
        /* §5.10.4: a representation in the Accept'ed format or 4.06 */
        if (req->accept != MOONLET_CT_NONE && !ct_listed(r->ct, req->accept)) {
            resp_simple(resp, MOONLET_NOT_ACCEPTABLE, "format not available");
            return MOONLET_OK;
        }
        /* §5.10.3, §5.9.2.10: a body in a format the resource does not take is 4.15 */
        if (has_body(req->method) && req->ct != MOONLET_CT_NONE && !ct_listed(r->ct, req->ct)) {
            resp_simple(resp, MOONLET_UNSUPPORTED_CONTENT_FORMAT, "format not supported");
            return MOONLET_OK;
        }
    }
    /* RFC 7959: a Block1 body is reassembled, a Block2 continuation served from its
     * snapshot, before any handler runs */
    if (block_request(srv, req, r, resp) == BLOCK_ANSWERED)
        return MOONLET_OK;
    /* RFC 7641 §4.1: a GET/FETCH with Observe registers once its answer is a success */
    req->obs = req->multicast ? NULL : observe_request(srv, req, r);
    if (dispatch_call(srv, r, slot, req, resp) == MOONLET_DEFERRED) {
        block_request_done(srv, req);
        tree_resource_release(r);
        return MOONLET_DEFERRED;
    }
    block_response(srv, req->sess, &req->blk, resp);
    block_request_done(srv, req);
    if (req->obs)
        observe_answer(srv, req->obs, resp);
    dispatch_changed(srv, r, req->method, resp->code);
    tree_resource_release(r);   /* the handler may have removed it: freed now */
    return MOONLET_OK;
}

int
dispatch_call(struct server *srv, struct resource *r, unsigned slot, struct moonlet_req *req,
              struct moonlet_resp *resp)
{
    int rc;

    req->res = r;
    req->scratch = srv->scratch;
    req->scratch_len = 0;
    req->scratch_cap = sizeof srv->scratch;
    r->refs++;                          /* the caller's, released when it is done with r */
    r->unit->refs++;
    /* a fatal signal in the handler names its unit, method and path (crash.c) */
    struct crash_ctx cc = {r->unit->name, r->path, req->method, NULL}, *up = crash_enter(&cc);
    rc = r->unit->rt->call(r, r->h[slot], req, resp);
    crash_leave(up);
    if (req->answered) {                /* the handler sent its pending itself */
        r->unit->refs--;
        return MOONLET_DEFERRED;
    }
    if (rc == MOONLET_DEFERRED && req->pd) {
        req->pd->unit = r->unit;        /* the unit and the resource stay referenced while
                                           the pending lives (exchange.c: pending_free) */
        r->refs++;
        req->pd->blk = req->blk;
        return MOONLET_DEFERRED;
    }
    r->unit->refs--;
    if (req->pd) {                      /* deferred, yet answered now: the pending is void */
        req->pd->gone = 1;
        req->pd->req = NULL;
        req->pd->obs = NULL;
        req->pd->group = NULL;
        req->pd = NULL;
    }
    if (rc == MOONLET_DEFERRED) {
        log_error("%s: %s handler returned MOONLET_DEFERRED without moonlet_defer",
                  r->unit->name, r->path);
        rc = MOONLET_EINVAL;
    }
    if (rc < 0) {
        if (rc != MOONLET_ENOMEM)
            log_warn("%s: %s handler failed (%d); answered 5.00", r->unit->name, r->path, rc);
        resp_simple(resp, rc == MOONLET_ENOMEM ? MOONLET_SERVICE_UNAVAILABLE
                                               : MOONLET_INTERNAL_SERVER_ERROR,
                    rc == MOONLET_ENOMEM ? "out of memory" : "handler failed");
    }
    return MOONLET_OK;
}

void
dispatch_changed(struct server *srv, struct resource *r, unsigned method, unsigned code)
{
    /* RFC 7641 §2: a state change by a successful PUT, POST, DELETE or (i)PATCH notifies
     * the resource's observers when it asked for that (autonotify) */
    if (r->autonotify && r->groups && MSG_CLASS(code) == 2 && method != MOONLET_GET &&
        method != MOONLET_FETCH)
        observe_notify(srv, r);
}
