/*
 * dispatch.h -- request -> resource -> runtime. The decisions around the handler call live
 * here: 4.02/5.05 (option check), 4.04, 4.05, 4.06, 4.15, and the error mapping of a
 * handler's return value.
 */
#ifndef DISPATCH_H
#define DISPATCH_H

#include "request.h"

struct server;

/* Answer req into resp, or defer (req->pd set). Returns MOONLET_OK or MOONLET_DEFERRED. */
int dispatch(struct server *srv, struct moonlet_req *req, struct moonlet_resp *resp);

#endif
