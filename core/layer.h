/*
 * layer.h -- the seam between the transport-neutral request path and a message layer.
 *
 * A request reaches the core through the message layer of its transport family: UDP's
 * (exchange.c: types, Message IDs, deduplication, retransmission, the 3x rule; DTLS too)
 * or the reliable transports' (stream.c: RFC 8323 framing and signaling; TCP, TLS). The
 * layer parses and screens it, finds the session, runs answer_dispatch and sends a
 * synchronous answer itself. What the request path sends later -- a deferred answer, an
 * Observe notification -- it hands back to the session's layer through this table, so
 * nothing above the layers writes a message header.
 */
#ifndef LAYER_H
#define LAYER_H

#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "request.h"

struct server;
struct observer;

struct msglayer {
    /* RFC 8323: no message types, no retransmission, no congestion control of ours */
    int reliable;
    /* A handler deferred its answer (the pending's timers are armed): UDP acknowledges a
     * CON with an empty ACK if the answer is slow (RFC 7252 §5.2.2). */
    void (*deferred)(struct server *srv, moonlet_pending *pd);
    /* Send pd->resp, the deferred answer to pd's request; block-wise, Observe and
     * autonotify have seen it already. */
    void (*answer)(struct server *srv, moonlet_pending *pd);
    /* An Observe notification to o under its token: code, then body (options and payload,
     * serialised once per fan-out by resp_body). con: RFC 7641 §4.5 wants a confirmable
     * one (a datagram layer's concern: §7 of RFC 8323 has no types). */
    void (*notify)(struct server *srv, struct observer *o, unsigned code, const uint8_t *body,
                   size_t len, int con, ev_tstamp now);
};

extern const struct msglayer udp_layer;         /* exchange.c */
extern const struct msglayer stream_layer;      /* stream.c */

#endif
