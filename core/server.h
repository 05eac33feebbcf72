/*
 * server.h -- the server context: everything one worker owns. No other mutable global
 * state exists (log level aside), so a second worker is a second struct server.
 */
#ifndef SERVER_H
#define SERVER_H

#include <ev.h>

#include "metrics.h"
#include "request.h"
#include "runtime.h"

struct observer;
struct obs_group;
struct later;
#include "session.h"
#include "transport.h"

/* Tunables; names are the `-o KEY=VALUE` keys. RFC 7252 §4.8 gives the defaults. */
struct server_config {
    double ack_timeout;         /* ACK_TIMEOUT, s */
    double ack_random_factor;   /* ACK_RANDOM_FACTOR */
    unsigned max_retransmit;    /* MAX_RETRANSMIT */
    double separate_after;      /* a handler slower than this gets an empty ACK first, s */
    double exchange_lifetime;   /* dedup lifetime of a CON, s (§4.8.2: derived) */
    double non_lifetime;        /* dedup lifetime of a NON, s (§4.8.2: derived) */
    unsigned dedup_per_peer;    /* dedup entries kept per peer (ring) */
    size_t dedup_bytes;         /* cached response bytes, all peers together */
    unsigned max_sessions;      /* peers with state */
    size_t max_payload;         /* largest response payload a handler may set */
    double defer_deadline;      /* upper bound on a deferred response, s */
    size_t udp_rcvbuf;          /* socket receive buffer, bytes (bursts of datagrams) */
    size_t block_size;          /* largest block we send or ask for (RFC 7959: 16..1024) */
    size_t max_body;            /* largest request body reassembled from Block1 */
    size_t block1_bytes;        /* reassembly buffers, all uploads together */
    size_t block2_bytes;        /* representation snapshots, all downloads together */
    double block_idle;          /* an idle transfer is forgotten after this, s */
    unsigned block_per_peer;    /* uploads (and downloads) in progress per peer */
    unsigned observe_max;       /* observers in total (RFC 7641) */
    unsigned observe_per_peer;  /* observers per peer */
    unsigned observe_con_every; /* at least every Nth notification is a CON (§4.5) */
    double observe_con_interval; /* and at least one CON in this many seconds (§4.5: 24 h) */
    double probing_rate;        /* bytes/s of NONs to a peer that does not answer (§4.7) */
    double multicast_leisure;   /* answers to group requests wait up to this long, s (§8.2) */
    double observe_check;       /* a peer observing and quiet this long gets a CON check, s */
    unsigned verify;            /* VERIFY_*: address verification (RFC 9175 §2.4) */
    unsigned unverified_sessions;   /* the unverified pool (evicted whatever it holds) */
    size_t unverified_bytes;    /* queued answers and uploads of unverified peers, in all */
    unsigned unverified_pendings;   /* deferred answers of unverified peers, in all */
    unsigned unverified_observers;  /* observations of unverified peers, in all */
    double echo_lifetime;       /* an Echo value we issued is accepted this long, s */
    unsigned watch;             /* reload a unit when its file changes */
    unsigned admin;             /* serve /.well-known/moonlet/units */
    unsigned runtime_resources; /* resources one unit may have created at run time */
    unsigned dtls_sessions;     /* DTLS associations, all coaps:// listeners together */
    unsigned dtls_handshakes;   /* handshakes in progress, all listeners together */
    double dtls_handshake_timeout;  /* a handshake not done by then is dropped, s */
    double dtls_handshake_rate; /* handshakes one address may start per second */
    double dtls_idle;           /* an association the peer has not used this long goes, s */
    double dtls_ticket_rotate;  /* session ticket keys change this often, s (0: no tickets) */
    unsigned tcp_connections;   /* connections (TCP, TLS), all listeners together */
    unsigned tcp_per_address;   /* connections from one address */
    double tcp_csm_timeout;     /* a connection whose CSM has not come by then goes, s */
    double tcp_keepalive;       /* an idle connection is sent a Ping after this, s (0: never) */
    double tcp_ping_timeout;    /* and goes if nothing comes back within this, s */
    size_t tcp_max_message;     /* our CSM's Max-Message-Size: the largest message we take */
    size_t tcp_write_bytes;     /* queued for a peer that does not read: reading from it
                                 * stops; at twice this it goes */
    unsigned tcp_inflight;      /* deferred answers a connection may wait for at once */
    double tls_handshake_timeout;   /* a TLS handshake not done by then: closed, s */
    char ws_origins[1024];      /* Origins a WebSocket may come from, comma-separated
                                 * ("": any; RFC 6455 §10.2) */
    unsigned metrics;           /* HTTP listeners serve GET /metrics */
    char metrics_token[128];    /* /metrics wants "Authorization: Bearer" this ("": no) */
    char metrics_address[64];   /* /metrics only on listeners bound to it ("": all) */
    unsigned metrics_resources; /* latency histograms kept (resource paths), the rest
                                 * counted as one */
};

/* cfg.verify: off (trusted networks: no limit), auto (the 3x rule; a peer proves its
 * address when it needs more, by an Echo or a ping), always (4.01 + Echo before anything) */
enum { VERIFY_OFF, VERIFY_AUTO, VERIFY_ALWAYS };

struct conf_item;

/* A runtime that loads units from files by suffix (".so": plugin.c, ".lua": the Lua
 * runtime). The core knows only this, so it builds and is tested without Lua. */
struct loader {
    const char *suffix;
    /* Load path into a new unit (*out, set as soon as it exists, also on failure) whose
     * resources go through server_register. prev: the unit it will replace, or NULL (a
     * script carries moonlet.state over). 0, or -1 with a one-line reason in err. */
    int (*load)(struct server *srv, const char *path, const struct conf_item *conf,
                struct unit *prev, struct unit **out, char *err, size_t errlen);
    /* The unit left the tree: no new work (stop timers); requests in flight may finish. */
    void (*retire)(struct server *srv, struct unit *u);
    /* Work of its own still running (waiting coroutines), besides u->refs. May be NULL. */
    int (*busy)(const struct unit *u);
    /* Free it: its resources are gone already. */
    void (*destroy)(struct server *srv, struct unit *u);
    /* After every unit of this loader is gone (shutdown). May be NULL. */
    void (*fini)(struct server *srv);
    /* Check the loader's own settings (the `lua` group, -s lua.*) without applying them:
     * `moonlet -t`. 0, or -1 with a one-line reason. May be NULL. */
    int (*check)(const struct conf_item *conf, char *err, size_t errlen);
};

#define SERVER_LOADERS 4

struct server {
    struct ev_loop *loop;
    const struct loader *loaders[SERVER_LOADERS];
    void *lua;                          /* the Lua runtime's state, opaque to the core */
    struct dtls_state *dtls;            /* dtls.c: keys, counters (NULL until a coaps://) */
    struct dtls_creds *creds;           /* what new coaps:// listeners use (dtls.c) */
    struct stream_state *stream;        /* stream.c: connections (NULL until the first) */
    struct access_rule *rules;          /* the configuration file's access rules */
    unsigned nrules;
    uint64_t next_res_id;
    struct server_config cfg;
    struct endpoint *endpoints;
    struct session_table sessions;
    struct tree *tree;
    struct tree *staging;               /* where a loading unit's resources go (reload.c) */
    struct unit *units, *retired;       /* loaded units; replaced ones still referenced */
    struct unit admin_unit;             /* the admin view's (reload.c) */
    struct resource *wkc;               /* the built-in /.well-known/core */
    struct moonlet_pending *pendings;   /* open deferred responses, for shutdown */
    struct later *laters;               /* multicast answers waiting (exchange.c) */
    struct rep *reps;                   /* Block2 snapshots (block.c) */
    struct {                            /* observe.c */
        struct observer **buckets;      /* hash on (session, token) */
        size_t nbuckets, count;
        struct obs_group *dirty, *dirty_tail;   /* notified groups, built before sleeping */
        uint8_t tmpl[2048];             /* one notification, serialised without token */
        struct moonlet_resp resp;       /* a notification being built */
        ev_idle wake;                   /* keeps the loop from sleeping with groups dirty */
    } obs;
    size_t rep_bytes, x1_bytes;
    struct moonlet_resp resp;           /* reused for synchronous handlers */
    uint8_t txbuf[2048];                /* one serialised message */
    char scratch[REQ_SCRATCH];          /* strings handed to the running handler */
    uint64_t rng;
    uint8_t echo_key[16];               /* keys the Echo values we issue (verify.c) */
    ev_tstamp started;
    int stopping;                       /* server_fini has begun */
    ev_signal sigint, sigterm, sigusr1;
    ev_prepare flush;
    ev_timer sweep;
    struct metrics m;                   /* for GET /metrics (metrics.c) */
    struct {                            /* refused HTTP requests logged this second (ws.c) */
        ev_tstamp at;
        unsigned n, skipped;
    } http_log;
    struct {
        unsigned long rx, tx, dropped, truncated, rst, dup, mid_reuse, evicted, overload;
        unsigned long verified, pings, challenges, amplification, shed;
    } stats;
};

void server_config_defaults(struct server_config *c);
/* Set one `-o` key; 0 or -1 with a reason in err. */
int server_config_set(struct server_config *c, const char *key, const char *value, char *err,
                      size_t errlen);

int server_init(struct server *srv, struct ev_loop *loop);
/* Open a listener of scheme sc (one that can open: sc->open set); coaps:// uses srv->creds. */
int server_listen(struct server *srv, const struct scheme *sc, const char *addr, unsigned port,
                  char *err, size_t errlen);
/* Close listener ep (a configuration reload removed it). Its peers are told once, best
 * effort, before the socket goes: deferred answers and observations end with 5.03; their
 * sessions, transfers and queued CONs are freed. */
void server_unlisten(struct server *srv, struct endpoint *ep);
/* reload.c. Load a plugin (.so) or, through a loader, a script, and put its resources
 * live; watched for changes when cfg.watch. The conf list is copied. 0 or -1 with err. */
int server_load(struct server *srv, const char *path, const struct conf_item *conf, char *err,
                size_t errlen);
/* Would path load as a plugin (rather than through a script loader)? */
int server_is_plugin(const struct server *srv, const char *path);
/* A loading unit registers a resource (into the staging tree). MOONLET_OK or EEXIST. */
int server_register(struct server *srv, struct resource *r);
/* A resource a handler or timer of its live unit creates: in the tree at once, counted
 * against cfg.runtime_resources. MOONLET_OK, EEXIST (the path is taken), ERANGE (the
 * unit's bound), ESTATE (the unit was replaced by a reload). */
int server_register_runtime(struct server *srv, struct resource *r);
/* Take r out (RFC 7641 §3.2: its observers get 4.04; its block-wise transfers end) and
 * free it once no handler or pending answer uses it. MOONLET_ENOENT if removed already. */
int server_unregister(struct server *srv, struct resource *r);
/* Free retired units nothing refers to any more (before the loop sleeps). */
void reload_reap(struct server *srv);
/* Shutdown: every unit goes, the loaders' runtimes too. */
void reload_fini(struct server *srv);
/* The admin view (cfg.admin): /.well-known/moonlet/units. */
int reload_admin_register(struct server *srv);
/* The unit loaded from path goes: its observers get 4.04, its requests in flight finish
 * on its code, then it is freed. 0, or -1 if no unit came from path. */
int server_unload(struct server *srv, const char *path);
/* Load path again (new code, new settings) into a fresh unit and swap it in atomically; if
 * it fails to load the old one keeps serving and err says why (FILE:LINE for a script).
 * conf is the whole new settings list (NULL: none; a file change passes the unit's own);
 * it is copied. 0 or -1. */
int server_reload(struct server *srv, const char *path, const struct conf_item *conf,
                  char *err, size_t errlen);
void server_run(struct server *srv);
void server_fini(struct server *srv);

/* Uniform random in [0, 1), from the server's generator. */
double server_random(struct server *srv);

#endif
