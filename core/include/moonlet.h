/*
 * moonlet.h -- the one public header of moonlet, a CoAP server (RFC 7252).
 * A plugin includes only this file. Every handle is opaque; the only struct bodies are the
 * two definitions a plugin fills (plugin info, resource definition), and both carry their
 * size so the ABI can grow them.
 *
 * Ownership, once for the whole header: every pointer obtained from a moonlet_req is valid
 * until the handler returns (for a deferred request: until moonlet_pending_send or _drop);
 * copy anything you keep longer. Everything a plugin hands to moonlet (paths, attributes,
 * payloads, option values) is copied at the call; the plugin keeps ownership of its memory.
 *
 * Threads: every call happens on the server's event-loop thread.
 */
#ifndef MOONLET_H
#define MOONLET_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped only when an existing call or struct changes incompatibly. */
#define MOONLET_ABI_MAJOR 1
/* Bumped when calls or struct fields are added. A plugin built against minor M loads into
 * a server whose minor is >= M. */
#define MOONLET_ABI_MINOR 5    /* 1.1: moonlet_resource_def.body (streamed uploads)
                                  1.2: moonlet_notify, moonlet_resource_def.autonotify and
                                       .notify_con
                                  1.3: moonlet_plugin_inherit, MOONLET_PLUGIN_STATE
                                  1.4: run-time resources (moonlet_resource_add after init,
                                       moonlet_resource_remove), subtrees and
                                       moonlet_req_base, moonlet_linkfmt_parse
                                  1.5: moonlet_req_identity, moonlet_identity_match,
                                       moonlet_resource_def.secure and .allow */

#if defined(__GNUC__)
#define MOONLET_API __attribute__((visibility("default")))
#define MOONLET_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define MOONLET_API
#define MOONLET_PRINTF(f, a)
#endif

/* ---- results -------------------------------------------------------------------------- */

enum {
    MOONLET_OK = 0,
    MOONLET_DEFERRED = 1,   /* handler: the answer comes later through a moonlet_pending */
    MOONLET_EINVAL = -1,    /* bad argument */
    MOONLET_ENOMEM = -2,    /* out of memory: a request is answered 5.03 */
    MOONLET_EEXIST = -3,    /* path already registered */
    MOONLET_ESTATE = -4,    /* call not allowed in this phase (e.g. registering outside init) */
    MOONLET_EGONE = -5,     /* the peer or the exchange is gone (pending_send after deadline) */
    MOONLET_ERANGE = -6,    /* value too large (payload over the limit, too many options) */
    MOONLET_ENOENT = -7,    /* no such item */
};

/* ---- codes (RFC 7252 §12.1, RFC 7959, RFC 8132): class << 5 | detail ----------------- */

#define MOONLET_CODE(c, d) ((unsigned)(((c) << 5) | (d)))

enum {
    MOONLET_GET = 1, MOONLET_POST = 2, MOONLET_PUT = 3, MOONLET_DELETE = 4,
    MOONLET_FETCH = 5, MOONLET_PATCH = 6, MOONLET_IPATCH = 7,

    MOONLET_CREATED = MOONLET_CODE(2, 1), MOONLET_DELETED = MOONLET_CODE(2, 2),
    MOONLET_VALID = MOONLET_CODE(2, 3), MOONLET_CHANGED = MOONLET_CODE(2, 4),
    MOONLET_CONTENT = MOONLET_CODE(2, 5), MOONLET_CONTINUE = MOONLET_CODE(2, 31),

    MOONLET_BAD_REQUEST = MOONLET_CODE(4, 0), MOONLET_UNAUTHORIZED = MOONLET_CODE(4, 1),
    MOONLET_BAD_OPTION = MOONLET_CODE(4, 2), MOONLET_FORBIDDEN = MOONLET_CODE(4, 3),
    MOONLET_NOT_FOUND = MOONLET_CODE(4, 4), MOONLET_METHOD_NOT_ALLOWED = MOONLET_CODE(4, 5),
    MOONLET_NOT_ACCEPTABLE = MOONLET_CODE(4, 6),
    MOONLET_REQUEST_ENTITY_INCOMPLETE = MOONLET_CODE(4, 8),
    MOONLET_CONFLICT = MOONLET_CODE(4, 9),
    MOONLET_PRECONDITION_FAILED = MOONLET_CODE(4, 12),
    MOONLET_REQUEST_ENTITY_TOO_LARGE = MOONLET_CODE(4, 13),
    MOONLET_UNSUPPORTED_CONTENT_FORMAT = MOONLET_CODE(4, 15),
    MOONLET_UNPROCESSABLE_ENTITY = MOONLET_CODE(4, 22),
    MOONLET_TOO_MANY_REQUESTS = MOONLET_CODE(4, 29),

    MOONLET_INTERNAL_SERVER_ERROR = MOONLET_CODE(5, 0),
    MOONLET_NOT_IMPLEMENTED = MOONLET_CODE(5, 1), MOONLET_BAD_GATEWAY = MOONLET_CODE(5, 2),
    MOONLET_SERVICE_UNAVAILABLE = MOONLET_CODE(5, 3),
    MOONLET_GATEWAY_TIMEOUT = MOONLET_CODE(5, 4),
    MOONLET_PROXYING_NOT_SUPPORTED = MOONLET_CODE(5, 5),
    MOONLET_HOP_LIMIT_REACHED = MOONLET_CODE(5, 8),
};

/* ---- content formats (RFC 7252 §12.3 and the IANA registry) --------------------------- */

enum {
    MOONLET_CT_TEXT = 0, MOONLET_CT_LINK_FORMAT = 40, MOONLET_CT_XML = 41,
    MOONLET_CT_OCTETS = 42, MOONLET_CT_EXI = 47, MOONLET_CT_JSON = 50, MOONLET_CT_CBOR = 60,
    MOONLET_CT_SENML_JSON = 110, MOONLET_CT_SENML_CBOR = 112,
    MOONLET_CT_END = -1,    /* ends a ct list */
    MOONLET_CT_NONE = -1,   /* "no Content-Format / Accept option" */
};

/* ---- option numbers (RFC 7252 §12.2, 7641, 7959, 7967, 9175) -------------------------- */

enum {
    MOONLET_OPT_IF_MATCH = 1, MOONLET_OPT_URI_HOST = 3, MOONLET_OPT_ETAG = 4,
    MOONLET_OPT_IF_NONE_MATCH = 5, MOONLET_OPT_OBSERVE = 6, MOONLET_OPT_URI_PORT = 7,
    MOONLET_OPT_LOCATION_PATH = 8, MOONLET_OPT_URI_PATH = 11,
    MOONLET_OPT_CONTENT_FORMAT = 12, MOONLET_OPT_MAX_AGE = 14, MOONLET_OPT_URI_QUERY = 15,
    MOONLET_OPT_HOP_LIMIT = 16, MOONLET_OPT_ACCEPT = 17, MOONLET_OPT_LOCATION_QUERY = 20,
    MOONLET_OPT_BLOCK2 = 23, MOONLET_OPT_BLOCK1 = 27, MOONLET_OPT_SIZE2 = 28,
    MOONLET_OPT_PROXY_URI = 35, MOONLET_OPT_PROXY_SCHEME = 39, MOONLET_OPT_SIZE1 = 60,
    MOONLET_OPT_ECHO = 252, MOONLET_OPT_NO_RESPONSE = 258, MOONLET_OPT_REQUEST_TAG = 292,
};

/* ---- log levels ----------------------------------------------------------------------- */

enum { MOONLET_LOG_ERROR = 0, MOONLET_LOG_WARN, MOONLET_LOG_INFO, MOONLET_LOG_DEBUG };

/* ---- handles (opaque) ----------------------------------------------------------------- */

typedef struct moonlet_plugin moonlet_plugin;      /* one loaded plugin */
typedef struct moonlet_conf moonlet_conf;          /* the plugin's configuration values */
typedef struct moonlet_resource moonlet_resource;  /* one registered path */
typedef struct moonlet_req moonlet_req;            /* a request, read-only */
typedef struct moonlet_resp moonlet_resp;          /* the response being built */
typedef struct moonlet_pending moonlet_pending;    /* a response that will be sent later */
typedef struct moonlet_timer moonlet_timer;        /* a plugin timer */

typedef int (*moonlet_handler)(moonlet_req *req, moonlet_resp *resp, void *ud);
/* A request body as it arrives, block by block (RFC 7959 Block1), in order: offset of this
 * piece, the piece, and whether it is the last. Return MOONLET_OK to go on, MOONLET_ERANGE
 * to refuse the body as too large (4.13), another MOONLET_E* to fail it (5.00). */
typedef int (*moonlet_body_cb)(moonlet_req *req, size_t offset, const uint8_t *data,
                               size_t len, int last, void *ud);
typedef void (*moonlet_timer_cb)(moonlet_timer *t, void *ud);

/* ---- the plugin descriptor -------------------------------------------------------------- */

typedef struct moonlet_plugin_info {
    unsigned abi_major, abi_minor;  /* what the plugin was compiled against */
    size_t info_size;               /* sizeof(moonlet_plugin_info) at compile time */
    const char *name, *version;
    int (*init)(moonlet_plugin *p, const moonlet_conf *conf);
    void (*fini)(moonlet_plugin *p);  /* may be NULL */
    unsigned state_version;           /* 0: no state handoff across reloads */
    void *reserved[6];                /* room to grow inside ABI 1 */
} moonlet_plugin_info;

/* Put this in exactly one .c file of a plugin. It defines the exported descriptor
 * `moonlet_plugin_descriptor` the loader looks up with dlsym. */
#define MOONLET_PLUGIN(name_, version_, init_, fini_)                                        \
    MOONLET_PLUGIN_STATE(name_, version_, init_, fini_, 0)
/* The same, for a plugin whose data a reloaded version may take over: versions declaring
 * the same non-zero state_version_ share the layout of that data (moonlet_plugin_inherit). */
#define MOONLET_PLUGIN_STATE(name_, version_, init_, fini_, state_version_)                  \
    __attribute__((visibility("default"))) const moonlet_plugin_info moonlet_plugin_descriptor = {     \
        MOONLET_ABI_MAJOR, MOONLET_ABI_MINOR, sizeof(moonlet_plugin_info), (name_),          \
        (version_), (init_), (fini_), (state_version_), {0}}

/* ---- resources -------------------------------------------------------------------------- */

typedef struct moonlet_attr {
    const char *name, *value;   /* value NULL: a flag attribute (written as just the name) */
} moonlet_attr;

struct moonlet_resource_def;

/* ABI 1.4. What lies below a subtree, for /.well-known/core: the core calls a resource's
 * children callback when it builds the discovery document; it calls emit once per child,
 * with child->path the child's path below the subtree's prefix ("a/b", percent-encoded
 * where needed, no leading '/') and its link attributes in the other fields (rt, iface,
 * ct, title, sz, obs, extra; handlers are ignored). emit returns nonzero when the
 * document is full: stop then. Return MOONLET_OK. */
typedef int (*moonlet_child_emit)(void *ctx, const struct moonlet_resource_def *child);
typedef int (*moonlet_children_cb)(moonlet_resource *r, moonlet_child_emit emit, void *ctx,
                                   void *ud);

typedef struct moonlet_resource_def {
    const char *path;           /* "/sensors/temp"; percent-encoding is decoded per segment */
    const char *rt, *iface;     /* space-separated tokens, no quotes: "temperature c" */
    const int *ct;              /* content formats it serves/accepts, ended by MOONLET_CT_END;
                                   NULL: any (no 4.06/4.15 decisions by the core) */
    const char *title;
    long sz;                    /* estimated size for link-format; 0: not listed */
    /* obs: observable (RFC 7641); hidden: not listed in /.well-known/core;
     * ABI 1.2: autonotify: a 2.xx answer to PUT/POST/DELETE/PATCH/iPATCH notifies;
     * notify_con: every notification is a CON (default: NON with a CON now and then) */
    unsigned obs : 1, hidden : 1, autonotify : 1, notify_con : 1;
    const moonlet_attr *extra;  /* other link attributes, ended by {NULL, NULL}; not rt, if,
                                   ct, sz, obs, title (fields of their own) or href */
    moonlet_handler get, post, put, del, fetch, patch, ipatch;
    moonlet_handler any;        /* used for any method without its own handler */
    /* ABI 1.1. Streamed uploads: when set, the core does not buffer request bodies of this
     * resource; it hands each piece to body (a body without Block1 as one last piece) and
     * then runs the method handler with an empty payload. */
    moonlet_body_cb body;
    /* ABI 1.4. For a subtree only: list its children in /.well-known/core (the subtree's
     * own link comes first). NULL: only the subtree's link. */
    moonlet_children_cb children;
    /* ABI 1.5. Access control, before any handler runs (RFC 7252 §5.9.2.2, §5.9.2.4):
     * secure: only over a secure transport (coaps://), else 4.01 Unauthorized;
     * allow: identity patterns (moonlet_identity_match), ended by NULL: the peer must match
     * one, else 4.01 without security and 4.03 Forbidden with another identity (allow
     * implies secure). /.well-known/core lists the resource only to who may use it. */
    int secure;
    const char *const *allow;
} moonlet_resource_def;

/* Register a resource. Call the macro, which passes the struct size.
 * A path whose last segment is "*" makes a subtree: the resource also serves every path
 * below its prefix (the path without that "*") that no other resource serves exactly;
 * moonlet_req_base says where the rest of the request's path begins (ABI 1.4).
 * Phase: init; since ABI 1.4 also later (a handler, a timer): a run-time resource, in the
 * tree at once, counted against the server's runtime_resources setting (per plugin).
 * A reload of the plugin removes the resources it created at run time (their observers
 * get 4.04) unless the new version registers the same paths in its init.
 * Owns: everything in def is copied.
 * Returns: the resource, or NULL (the reason is logged: bad path, bad attribute token,
 * duplicate path, the runtime_resources bound, a plugin replaced by a reload). */
MOONLET_API moonlet_resource *moonlet_resource_add_(moonlet_plugin *p,
                                                    const moonlet_resource_def *def,
                                                    size_t def_size, void *ud);
#define moonlet_resource_add(p, def, ud) moonlet_resource_add_((p), (def), sizeof *(def), (ud))

/* The path the resource was registered with. Valid: while the resource exists. */
MOONLET_API const char *moonlet_resource_path(const moonlet_resource *r);

/* Remove a resource of this plugin (ABI 1.4), whenever it was registered. Its observers
 * get 4.04 Not Found and end (RFC 7641 §3.2), its block-wise transfers end, and
 * /.well-known/core stops listing it at once. A request in flight on it (a handler running
 * it, this one included, or a deferred answer) completes; r stays valid until then for
 * that request only: do not use r after this call. Phase: any but fini.
 * Returns MOONLET_OK, MOONLET_EINVAL (NULL, or another plugin's resource). */
MOONLET_API int moonlet_resource_remove(moonlet_plugin *p, moonlet_resource *r);

/* The state of r changed: its observers (RFC 7641) get a notification. Before the server
 * next waits for input, the GET (or FETCH) handler runs once per representation the
 * observers asked for (query, Accept), and each answer goes to all of them; several
 * notifies in between make one notification. A handler never learns whether it answers
 * a request or builds a notification. Phase: any (ABI 1.2).
 * Returns MOONLET_OK (also with no observers), MOONLET_EINVAL for NULL. */
MOONLET_API int moonlet_notify(moonlet_resource *r);

/* ---- the request ---------------------------------------------------------------------- */

/* Method code (MOONLET_GET ...). */
MOONLET_API unsigned moonlet_req_method(const moonlet_req *req);
/* The request path as a URI path ("/a/b"), segments percent-encoded where needed
 * (RFC 7252 §6.5). Valid: until the handler returns. */
MOONLET_API const char *moonlet_req_path(const moonlet_req *req);
/* Number of Uri-Path segments, and segment i (raw bytes, not NUL-safe: use *len). */
MOONLET_API unsigned moonlet_req_segments(const moonlet_req *req);
MOONLET_API const char *moonlet_req_segment(const moonlet_req *req, unsigned i, size_t *len);
/* How many segments the resource's own path has (ABI 1.4): for a subtree, segments from
 * this index on are the rest of the path below its prefix; otherwise it equals
 * moonlet_req_segments. */
MOONLET_API unsigned moonlet_req_base(const moonlet_req *req);
/* Value of the first query item "key=value" (or "key" alone: returns ""), else NULL.
 * Valid: until the handler returns. The value is NUL-terminated; *len if non-NULL. */
MOONLET_API const char *moonlet_req_query(const moonlet_req *req, const char *key,
                                          size_t *len);
/* Number of Uri-Query options, and the raw item i ("key=value"). */
MOONLET_API unsigned moonlet_req_queries(const moonlet_req *req);
MOONLET_API const char *moonlet_req_query_item(const moonlet_req *req, unsigned i, size_t *len);
/* The n-th (0-based) occurrence of option `num`: its value and length, NULL if absent. */
MOONLET_API const uint8_t *moonlet_req_option(const moonlet_req *req, unsigned num,
                                              unsigned n, size_t *len);
/* Decode a uint option (RFC 7252 §3.2); returns dflt if absent, longer than 4 bytes, or
 * (a registered option) of a length outside its bounds: §5.4.3 ignores such an option. */
MOONLET_API uint32_t moonlet_req_option_uint(const moonlet_req *req, unsigned num,
                                             uint32_t dflt);
/* The payload (after Block1 reassembly, when that exists). Never NULL; *len 0 if none. */
MOONLET_API const uint8_t *moonlet_req_payload(const moonlet_req *req, size_t *len);
/* Content-Format and Accept of the request, MOONLET_CT_NONE if absent. */
MOONLET_API int moonlet_req_ct(const moonlet_req *req);
MOONLET_API int moonlet_req_accept(const moonlet_req *req);
/* The peer's address as a struct sockaddr (cast it), its length in *len. */
MOONLET_API const void *moonlet_req_peer(const moonlet_req *req, size_t *len);
/* The peer's address as text, "[::1]:5683" or "127.0.0.1:5683". */
MOONLET_API const char *moonlet_req_peer_str(const moonlet_req *req);

/* ABI 1.5: who the peer is, as its secure transport (coaps://) authenticated it. */
enum {
    MOONLET_AUTH_NONE = 0,  /* coap://, or no longer known (the association ended) */
    MOONLET_AUTH_PSK,       /* a pre-shared key (RFC 4279): name is its identity */
    MOONLET_AUTH_RPK,       /* a raw public key (RFC 7250): name is "sha256:" and the
                               lower-case hex SHA-256 of its SubjectPublicKeyInfo */
    MOONLET_AUTH_X509,      /* a certificate: name is its subject (RFC 4514 string) */
    MOONLET_AUTH_ANON,      /* secure, but the peer did not authenticate itself (a server
                               certificate only: client authentication optional) */
};
typedef struct moonlet_identity {
    int auth;               /* MOONLET_AUTH_* */
    const char *name;       /* see above; "" for NONE and ANON */
    const char *const *alt; /* X.509 subjectAltNames, "dns:host", "ip:192.0.2.1",
                               "uri:coap://x", "email:a@b"; ended by NULL, never NULL */
} moonlet_identity;
/* The peer's identity. Never NULL. Valid: as any moonlet_req pointer. Phase: handler. */
MOONLET_API const moonlet_identity *moonlet_req_identity(const moonlet_req *req);
/* Does id match pattern? A pattern is "KIND:GLOB" with KIND psk, rpk, x509 or any (every
 * authenticated peer); GLOB is an fnmatch(3) pattern ('*', '?', [...]) on the name or, for
 * x509, on the subject or any subjectAltName ("x509:dns:*.example.com"). "any" alone, or
 * "any:*", matches every authenticated peer. 1 or 0. Phase: any. */
MOONLET_API int moonlet_identity_match(const moonlet_identity *id, const char *pattern);

/* ABI 1.4: link-format bodies */

/* One link of a link-format document (RFC 6690 §2), handed to the callback of
 * moonlet_linkfmt_parse: the target as written between '<' and '>' (a URI-reference, not
 * resolved: percent-encoding kept) and its tlen; the attributes in the order written, the
 * name as written (RFC 8288 §3: compare names case-insensitively) and the value unquoted
 * (quoted-pair escapes removed; NULL for an attribute without '=', such as `;obs`); a
 * repeated name comes once per occurrence. An ext-value (`title*=UTF-8'en'%E2%82%AC`,
 * RFC 5987) is given as written, name with its '*'. Every string is NUL-terminated (none
 * can hold a NUL) and valid during the call only. Return 0 to go on; anything else stops
 * the parse, which returns that value. */
typedef int (*moonlet_link_cb)(void *ud, const char *target, size_t tlen,
                               const moonlet_attr *attrs, unsigned nattrs);

/* What one link may hold: attributes, and bytes of its target and attributes unquoted
 * (a NUL after each string counted). Beyond either the parse fails with MOONLET_ERANGE. */
#define MOONLET_LINK_MAX_ATTRS 64
#define MOONLET_LINK_MAX_TEXT 4096

/* Parse a link-format document (Content-Format 40, e.g. a request body) and call cb for
 * each link in order (cb may be NULL: a validation). Strict RFC 6690 §2: UTF-8; no
 * whitespace outside quoted strings; a target of RFC 3986 characters; attributes
 * `;name`, `;name=token` (ptoken), `;name="quoted string"` or `;name*=ext-value`; links
 * separated by single commas. An empty document is valid and has no links.
 * Allocates nothing (a link is unquoted into a buffer on the parser's stack, about 5 KiB).
 * Returns MOONLET_OK, MOONLET_EINVAL for a malformed document (and err says what and at
 * which byte, counting from 0: "link-format: expected '<' at byte 12"), MOONLET_ERANGE for
 * a link beyond the limits above, or what cb returned to stop. Links before the one in
 * error have been handed over. err may be NULL. Phase: any (ABI 1.4). */
MOONLET_API int moonlet_linkfmt_parse(const void *doc, size_t len, moonlet_link_cb cb,
                                      void *ud, char *err, size_t errlen);

/* ---- the response ----------------------------------------------------------------------- */

/* A response starts as 2.05 with no options and no payload. Options may be added in any
 * order; the core sorts them and writes Block2/Size2/Observe itself. */
MOONLET_API void moonlet_resp_code(moonlet_resp *resp, unsigned code);
MOONLET_API int moonlet_resp_ct(moonlet_resp *resp, int ct);
/* Payload, copied. Returns MOONLET_ERANGE above the configured response limit. */
MOONLET_API int moonlet_resp_payload(moonlet_resp *resp, const void *data, size_t len);
/* Any option; repeatable ones may be added several times. Copied. */
MOONLET_API int moonlet_resp_option(moonlet_resp *resp, unsigned num, const void *val,
                                    size_t len);
MOONLET_API int moonlet_resp_option_uint(moonlet_resp *resp, unsigned num, uint32_t val);
/* Convenience: a diagnostic payload (RFC 7252 §5.5.2) with the code, printf-style. */
MOONLET_API int moonlet_resp_error(moonlet_resp *resp, unsigned code, const char *fmt, ...)
    MOONLET_PRINTF(3, 4);

/* ---- separate (deferred) responses (RFC 7252 §5.2.2) ------------------------------------ */

/* Keep the request open past the handler: the handler returns MOONLET_DEFERRED and later
 * fills moonlet_pending_resp() and calls moonlet_pending_send. The core sends the empty ACK
 * itself when the answer takes long. If deadline_ms passes first, the core answers 5.03.
 * Owns: the plugin owns the handle until it calls moonlet_pending_send or _drop, exactly
 * once (also after the deadline: the call then returns MOONLET_EGONE and frees).
 * Phase: handler. Returns NULL on ENOMEM. */
MOONLET_API moonlet_pending *moonlet_defer(moonlet_req *req, unsigned deadline_ms);
/* The response builder of a pending. Valid: until send/drop. */
MOONLET_API moonlet_resp *moonlet_pending_resp(moonlet_pending *pd);
/* Send the response now and free the pending. Returns MOONLET_OK or MOONLET_EGONE. */
MOONLET_API int moonlet_pending_send(moonlet_pending *pd);
/* Give up without answering (the core answers 5.03) and free the pending. */
MOONLET_API void moonlet_pending_drop(moonlet_pending *pd);

/* ---- timers ----------------------------------------------------------------------------- */

/* A timer firing after `after` seconds, then every `repeat` seconds if repeat > 0.
 * A one-shot timer is freed after its callback returns; a repeating one by _stop.
 * Timers left running at fini are stopped by the core (and logged).
 * Phase: any. Returns NULL on ENOMEM. */
MOONLET_API moonlet_timer *moonlet_timer_start(moonlet_plugin *p, double after, double repeat,
                                               moonlet_timer_cb cb, void *ud);
MOONLET_API void moonlet_timer_stop(moonlet_timer *t);

/* ---- plugin state, configuration, logging --------------------------------------------- */

MOONLET_API void moonlet_plugin_set_data(moonlet_plugin *p, void *data);
MOONLET_API void *moonlet_plugin_data(const moonlet_plugin *p);
/* State handoff across a reload. In init: the data of the version this one replaces, when
 * both declared the same non-zero state_version (MOONLET_PLUGIN_STATE), also set as this
 * plugin's data; else NULL (a first load, no or another state_version: start afresh).
 * The old version keeps using the data while it finishes its requests in flight; just
 * before its fini runs, its moonlet_plugin_data becomes NULL, so a fini that frees what
 * moonlet_plugin_data returns frees nothing the new version owns. If the new version
 * fails to load, nothing was handed over: the old one goes on with its data, and the
 * failed one's fini (if its init had returned OK) sees NULL. */
MOONLET_API void *moonlet_plugin_inherit(moonlet_plugin *p);
/* Configuration values given to this plugin (command line `-s NAME.KEY=VALUE`, later the
 * config file). Valid: for the plugin's lifetime. */
MOONLET_API const char *moonlet_conf_str(const moonlet_conf *c, const char *key,
                                         const char *dflt);
/* An integer (decimal, 0x hex, 0 octal): dflt when absent, not a number, or beyond a long. */
MOONLET_API long moonlet_conf_int(const moonlet_conf *c, const char *key, long dflt);
MOONLET_API int moonlet_conf_bool(const moonlet_conf *c, const char *key, int dflt);

MOONLET_API void moonlet_log(moonlet_plugin *p, int level, const char *fmt, ...)
    MOONLET_PRINTF(3, 4);

/* The server's ABI numbers. */
MOONLET_API void moonlet_version(unsigned *major, unsigned *minor);

#ifdef __cplusplus
}
#endif
#endif
