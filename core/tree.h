/*
 * tree.h -- the resource set: path -> resource in O(path length). The key of a path is its
 * segment sequence, length-prefixed ("a/b" as one segment never equals "a","b"; RFC 7252
 * §5.10.1), hashed whole; the list keeps registration order for link-format.
 */
#ifndef TREE_H
#define TREE_H

#include <stddef.h>
#include <stdint.h>

#include "access.h"
#include "request.h"
#include "runtime.h"

struct obs_group;

#define TREE_METHODS 8      /* index 1..7 = method code, 0 = "any" */

struct attr {
    char *name, *value;     /* value NULL: flag */
};

struct resource {
    struct resource *hnext;             /* hash chain */
    struct resource *unext;             /* its unit's resources */
    struct resource *next, *prev;       /* registration order */
    uint32_t hash;
    uint8_t *key;
    size_t keylen;
    char *path;                         /* "/a/b", percent-encoded where needed */
    char *rt, *iface, *title;
    int *ct;                            /* ended by MOONLET_CT_END; NULL: any */
    long sz;
    unsigned obs : 1, hidden : 1, autonotify : 1, notify_con : 1;
    unsigned subtree : 1;               /* its path ends in a segment "*": it owns the
                                           paths below the prefix too */
    unsigned runtime : 1;               /* created by a handler or timer, not at load */
    unsigned removed : 1;               /* out of the tree; freed when refs reach 0 */
    unsigned nseg;                      /* segments of its path (a subtree's: the prefix) */
    unsigned refs;                      /* handlers running on it, pendings holding it */
    unsigned has_kids : 1;              /* a subtree that lists its children (kids) */
    union handler kids;
    struct attr *extra;
    unsigned nextra;
    union handler h[TREE_METHODS];
    moonlet_body_cb body;               /* streamed uploads (C plugins), or NULL */
    unsigned has[TREE_METHODS];
    void *ud;
    struct unit *unit;
    uint64_t id;                        /* unique for the server's life (block snapshots) */
    uint64_t serial;                    /* unique per definition (handles: lua/lib.c) */
    struct obs_group *groups;           /* its observers, by representation (observe.c) */
    struct met_res *met;                /* its latency histogram (metrics.c), or NULL */
    struct acl acl;                     /* who may use it (access.c); secure 0: anyone */
};

struct tree {
    struct resource **buckets;
    size_t nbuckets, count;
    struct resource *first, *last;
    unsigned long generation;           /* bumped on every change (link-format cache) */
    size_t subtrees;                    /* how many are subtrees: lookups try prefixes */
    size_t kids;                        /* how many list children: discovery not cached */
    size_t guarded;                     /* how many have an access rule: nor then */
    uint64_t next_id;
};

struct tree *tree_new(void);
void tree_free(struct tree *t);
/* Build a resource from a public definition (validated, everything copied). NULL with a
 * reason in err. Not yet in the tree. */
struct resource *tree_resource_new(const moonlet_resource_def *def, size_t def_size,
                                   void *ud, struct unit *u, char *err, size_t errlen);
void tree_resource_free(struct resource *r);
/* Drop a reference (resource.refs); a removed resource is freed by its last one. */
void tree_resource_release(struct resource *r);
/* Insert; MOONLET_EEXIST if the path exists. */
int tree_add(struct tree *t, struct resource *r);
void tree_remove(struct tree *t, struct resource *r);
/* Look up by request segments: the exact path, else the subtree with the longest prefix
 * (RFC 7252 §5.4.1 knows no wildcards: subtrees are our own). */
struct resource *tree_find(const struct tree *t, const struct view *seg, unsigned nseg);
/* Look up by a path string as registered ("/a/b%2Fc"; a subtree with its final "*");
 * NULL if absent or malformed. Exact: a subtree is found by its own path only. */
struct resource *tree_find_path(const struct tree *t, const char *path);

/* One RFC 6690 §4.1 query filter: name[=value[*]], views into the request. */
struct linkfmt_filter {
    const char *name, *value;
    size_t nlen, vlen;
    int has_value, prefix;
};

/* Filters from Uri-Query items; returns how many. */
unsigned linkfmt_filters(const struct view *q, unsigned nq, struct linkfmt_filter *out);
/* Link-format (RFC 6690) of the links matching every filter, as a malloc'd string. */
char *linkfmt_build(const struct tree *t, const struct linkfmt_filter *f, unsigned nf,
                    size_t *len);
/* The same with only the links the peer of who may use (access_check against srv's
 * rules); srv NULL: all of them. */
struct session;
char *linkfmt_build_for(const struct tree *t, const struct linkfmt_filter *f, unsigned nf,
                        const struct server *srv, const struct session *who, size_t *len);
/* Register the built-in /.well-known/core resource. */
int linkfmt_register(struct server *srv);

#endif
