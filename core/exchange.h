/*
 * exchange.h -- the message layer of UDP (RFC 7252 §4, §5.2): types, ACK/RST, dedup,
 * retransmission of server-originated CONs with NSTART = 1, separate responses.
 */
#ifndef EXCHANGE_H
#define EXCHANGE_H

#include "request.h"
#include "transport.h"

struct server;
struct session;

/* One datagram from a peer. */
void exchange_input(struct endpoint *ep, const struct peer *from, const uint8_t *buf,
                    size_t len);
/* Send a pending's response (piggybacked if the empty ACK has not gone out yet, else as a
 * CON or NON of its own) and free it. MOONLET_OK or MOONLET_EGONE. */
int exchange_pending_send(moonlet_pending *pd);
/* Free a pending without answering (if not answered yet, 5.03 goes out). */
void exchange_pending_drop(moonlet_pending *pd);
/* Free every outgoing message of a session (shutdown / forget). */
void exchange_session_gone(struct server *srv, struct session *s);
/* Create (or return) the pending of a request; NULL on ENOMEM. */
moonlet_pending *exchange_defer(struct moonlet_req *req, unsigned deadline_ms);
/* A unit (plugin, script) is unloading: answer 5.03 to the pendings it left open and free
 * them (u NULL: every pending, at shutdown). */
struct unit;
void exchange_unit_gone(struct server *srv, struct unit *u);

#endif
