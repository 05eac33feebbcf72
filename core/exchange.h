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
struct outmsg;
struct observer;

/* One datagram from a peer. */
void exchange_input(struct endpoint *ep, const struct peer *from, const uint8_t *buf,
                    size_t len);
/* One datagram a peer sent to a multicast group we joined (RFC 7252 §8); ep answers. */
void exchange_multicast(struct endpoint *ep, const struct peer *from, const uint8_t *buf,
                        size_t len);
/* Send a pending's response (piggybacked if the empty ACK has not gone out yet, else as a
 * CON or NON of its own) and free it. MOONLET_OK or MOONLET_EGONE. */
int exchange_pending_send(moonlet_pending *pd);
/* Free a pending without answering (if not answered yet, 5.03 goes out). */
void exchange_pending_drop(moonlet_pending *pd);
/* Free every outgoing message of a session (shutdown / forget). */
void exchange_session_gone(struct server *srv, struct session *s);
/* Queue a serialised CON to s (NSTART = 1: its MID is set when it leaves the queue) and
 * retransmit it until acknowledged; o, if set, hears how it ended. NULL on ENOMEM. */
struct outmsg *exchange_con_send(struct server *srv, struct session *s, const uint8_t *buf,
                                 size_t len, struct observer *o);
/* Replace the bytes of a queued or in-flight CON by a newer message (RFC 7641 §4.5.2). */
int exchange_con_replace(struct outmsg *om, const uint8_t *buf, size_t len);
/* The observer of om is gone; the message still goes. */
void exchange_con_forget(struct outmsg *om);
/* Arm a pending's timers once its handler has returned MOONLET_DEFERRED. */
void exchange_pending_start(struct server *srv, moonlet_pending *pd);
/* Shutdown: free what still waits to be sent. */
void exchange_fini(struct server *srv);
/* Create (or return) the pending of a request; NULL on ENOMEM. */
moonlet_pending *exchange_defer(struct moonlet_req *req, unsigned deadline_ms);
/* A listener closes: deferred answers owed to its peers go out now as 5.03 (the pendings
 * stay, gone, for their owners to free); its multicast answers still waiting are dropped. */
void exchange_endpoint_gone(struct server *srv, struct endpoint *ep);
/* A unit (plugin, script) is unloading: answer 5.03 to the pendings it left open and free
 * them (u NULL: every pending, at shutdown). */
struct unit;
void exchange_unit_gone(struct server *srv, struct unit *u);

#endif
