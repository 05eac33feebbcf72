/*
 * answer.h -- the request path every transport shares (answer.c): dispatch, and deferred
 * answers (moonlet_defer) until they go out through the session's message layer.
 */
#ifndef ANSWER_H
#define ANSWER_H

#include "request.h"

struct server;
struct session;
struct endpoint;
struct unit;

/* Run a parsed request (req: srv, sess, m and multicast set, the rest zeroed) and leave
 * its answer in resp: MOONLET_OK, for the message layer to send now; MOONLET_DEFERRED when
 * a handler deferred it (the pending's timers are armed) or sent it already. */
int answer_dispatch(struct server *srv, struct moonlet_req *req, struct moonlet_resp *resp);
/* Create (or return) the pending of a request; NULL on ENOMEM (or no room for one more
 * of an unverified peer's). */
moonlet_pending *answer_defer(struct moonlet_req *req, unsigned deadline_ms);
/* Arm a pending's timers once its handler has returned MOONLET_DEFERRED. */
void answer_start(struct server *srv, moonlet_pending *pd);
/* Send a pending's response and free it. MOONLET_OK or MOONLET_EGONE. */
int answer_send(moonlet_pending *pd);
/* Free a pending without answering (if not answered yet, 5.03 goes out). */
void answer_drop(moonlet_pending *pd);
/* A listener closes: deferred answers owed to its peers go out now as 5.03 (the pendings
 * stay, gone, for their owners to free). */
void answer_endpoint_gone(struct server *srv, struct endpoint *ep);
/* s is pushed out of the table: its deferred answers end with 5.03 (their owners learn
 * MOONLET_EGONE). */
void answer_session_evict(struct server *srv, struct session *s);
/* s was verified: its deferred answers leave the unverified budget. */
void answer_session_verified(struct server *srv, struct session *s);
/* How many deferred answers count against unverified_pendings (audits). */
size_t answer_audit_pendings(const struct server *srv);
/* A unit (plugin, script) is unloading: answer 5.03 to the pendings it left open and free
 * them (u NULL: every pending, at shutdown). */
void answer_unit_gone(struct server *srv, struct unit *u);

#endif
