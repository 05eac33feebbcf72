/*
 * observe.h -- Observe (RFC 7641): registrations, notification fan-out, CON checks.
 *
 * An observer is one (peer, token, resource) registration (§4.1); observers of one
 * resource that asked for the same representation (method, query, Accept, FETCH body)
 * share a group. A notify marks the resource's groups; before the loop sleeps each marked
 * group runs its handler once, serialises the answer once, and sends it to every observer
 * with only the header, MID and token written per observer -- or a final 4.06 to one whose
 * registration was answered in another Content-Format (§4.2), or nothing yet to one whose
 * NON notifications are paced (§4.5.1): it gets the latest state when its turn comes.
 */
#ifndef OBSERVE_H
#define OBSERVE_H

#include <stdint.h>

#include <ev.h>

#include "request.h"

struct server;
struct session;
struct resource;
struct outmsg;
struct obs_group;

/* What starts at an observer's con_at and ends with the peer's answer: a round trip. */
enum { OBS_TIMING_NONE, OBS_TIMING_PING, OBS_TIMING_CON };

struct observer {
    struct observer *hnext;             /* server hash on (session, token) */
    struct observer *gnext, *gprev;     /* the group's observers */
    struct observer *snext;             /* the session's observers */
    struct obs_group *g;
    struct session *sess;
    struct outmsg *om;                  /* its CON notification, queued or in flight */
    moonlet_pending *pd;                /* the registration's deferred answer */
    ev_tstamp con_at;                   /* the last CON notification (or registration) */
    ev_tstamp non_at;                   /* the last NON notification (pacing, §4.5.1) */
    uint16_t last_mid;                  /* of the last NON notification: an RST names it */
    uint16_t since_con;                 /* notifications since the last CON */
    uint16_t ct;                        /* Content-Format of the registration's answer: the
                                         * only one it may be sent (§4.2), unless no_ct */
    /* bit-fields keep an observer in 96 bytes (an allocator's size class) */
    uint16_t tkl : 4, live : 1, non_sent : 1;
    uint16_t no_ct : 1;                 /* that answer had no Content-Format */
    uint16_t ct_open : 1;               /* that answer was a 2.03: the next 2.05 fixes it */
    uint16_t unv : 1;                   /* counted against unverified_observers */
    uint16_t check : 1;                 /* a CON check is due (RFC 7641 §4.5) */
    uint16_t due : 1;                   /* owed the latest state: a NON had to wait (§4.5.1) */
    uint16_t timing : 2;                /* OBS_TIMING_*: con_at starts a round-trip sample */
    uint8_t token[8];
};

/* Before the handler of a request to r: Observe 0 on an observable resource (GET, FETCH)
 * returns the request's observer, new (not yet live) or the one it re-registers; Observe 1
 * removes the matching one (§3.6). NULL: nothing to register (not asked, not observable,
 * over a limit, no memory). */
struct observer *observe_request(struct server *srv, struct moonlet_req *req,
                                 struct resource *r);
/* The answer to a registering request is final: a 2.xx makes o live and gets the Observe
 * option; any other code removes o (§4.1: only a success registers). */
void observe_answer(struct server *srv, struct observer *o, struct moonlet_resp *resp);
/* Notify every observer of r (their notification is built before the loop sleeps). */
void observe_notify(struct server *srv, struct resource *r);
/* Build and send the notifications scheduled since the last call. */
void observe_flush(struct server *srv);
/* A notification whose handler answered late (a deferred build). g may be NULL (gone). */
void observe_deliver(struct server *srv, struct obs_group *g, struct moonlet_resp *resp);

enum { OBS_ACKED, OBS_REJECTED, OBS_TIMEOUT };
/* The CON notification of o ended (exchange.c). */
void observe_con_done(struct server *srv, struct observer *o, int how);
/* An RST for a NON notification (§3.6): ends the observation that sent mid. 1 if found. */
int observe_rst(struct server *srv, struct session *s, uint16_t mid);
/* The session goes: its observers go without a word. */
void observe_session_gone(struct server *srv, struct session *s);
/* The session was verified: its observers leave the unverified budget. */
void observe_session_verified(struct server *srv, struct session *s);
/* The peer of s has been quiet for observe_check: each of its observations gets the
 * current representation as a CON (RFC 7641 §4.5); no acknowledgement ends them. */
void observe_check(struct server *srv, struct session *s);
/* Consistency check: the observations of s counted against unverified_observers. */
size_t observe_audit(const struct session *s);
/* The CON notification of o was dropped with its session's queue. */
void observe_con_forget(struct observer *o);
/* The session's listener closes: each live observation ends with a final NON of code. */
void observe_session_end(struct server *srv, struct session *s, unsigned code);
/* End the observations of unit u's resources (u NULL: of every resource) with a final
 * notification of code: 4.04 when the resources go (unload, reload), 5.03 when the server
 * stops (§4.2: a non-2.xx notification ends an observation). */
struct unit;
void observe_end(struct server *srv, struct unit *u, unsigned code);
void observe_end_resource(struct server *srv, struct resource *r, unsigned code);
/* A reload replaced from by to (same path): its observers stay, bound to the new version,
 * and get its representation (a final one if to is not observable). */
void observe_move(struct server *srv, struct resource *from, struct resource *to);
int observe_init(struct server *srv);
void observe_fini(struct server *srv);

#endif
