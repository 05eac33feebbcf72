/*
 * exchange.h -- the message layer of UDP and DTLS (RFC 7252 §4, §5.2): types, ACK/RST,
 * dedup, retransmission of server-originated CONs with NSTART = 1, separate responses, and
 * the 3x rule's consequences (RFC 9175 §2.4): answers held behind a ping, 4.01 challenges.
 * It is udp_layer (layer.h) for the request path.
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
/* A datagram larger than the receive buffer: its first len bytes of real_len. A request
 * gets 4.13 (RFC 7252 §5.9.2.9), statelessly; anything else is dropped. */
void exchange_oversize(struct endpoint *ep, const struct peer *from, const uint8_t *buf,
                       size_t len, size_t real_len);
/* One datagram a peer sent to a multicast group we joined (RFC 7252 §8); ep answers. */
void exchange_multicast(struct endpoint *ep, const struct peer *from, const uint8_t *buf,
                        size_t len);
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
/* Shutdown: free what still waits to be sent. */
void exchange_fini(struct server *srv);
/* A listener closes: its multicast answers still waiting are dropped. */
void exchange_endpoint_gone(struct server *srv, struct endpoint *ep);
/* s is pushed out of the table: its multicast answers are dropped. */
void exchange_session_evict(struct server *srv, struct session *s);
/* s was verified: what it holds leaves the unverified budgets. */
void exchange_session_verified(struct server *srv, struct session *s);
/* Consistency checks (tests, fuzzing): add what s holds against unverified_bytes to *bytes
 * (-1 if s is verified and still holds something); count the multicast answers that count
 * against unverified_pendings. */
int exchange_audit(const struct server *srv, const struct session *s, size_t *bytes);
size_t exchange_audit_pendings(const struct server *srv);
/* Prove s's address with a CoAP ping (RFC 7252 §4.3), unless a CON is in flight already:
 * the RST (or an ACK) verifies it. */
void exchange_ping(struct server *srv, struct session *s);

#endif
