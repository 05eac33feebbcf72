/*
 * dispatch.h -- request -> resource -> runtime. The decisions around the handler call live
 * here: 4.02/5.05 (option check), 4.04, 4.05, 4.06, 4.15, and the error mapping of a
 * handler's return value.
 */
#ifndef DISPATCH_H
#define DISPATCH_H

#include "request.h"

struct server;
struct resource;

/* Answer req into resp, or defer (req->pd set). Returns MOONLET_OK or MOONLET_DEFERRED. */
int dispatch(struct server *srv, struct moonlet_req *req, struct moonlet_resp *resp);
/* Run handler slot of r for req: MOONLET_OK with resp filled (a handler error mapped to
 * 5.00/5.03), or MOONLET_DEFERRED (req->pd set, or already answered inside the handler).
 * Either way it takes a reference on r the caller drops (tree_resource_release) when done
 * with r: the handler may remove it. */
int dispatch_call(struct server *srv, struct resource *r, unsigned slot, struct moonlet_req *req,
                  struct moonlet_resp *resp);
/* A request to r was answered with code: notify r's observers if it changed r. */
void dispatch_changed(struct server *srv, struct resource *r, unsigned method, unsigned code);

#endif
