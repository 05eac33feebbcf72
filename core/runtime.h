/*
 * runtime.h -- the one handler interface. The dispatcher calls a resource's handler through
 * this vtable; the C runtime calls a function pointer, the Lua runtime (lua/) will resume a
 * coroutine. Dedup, negotiation, block-wise, observe and separate responses happen around
 * the call, so every runtime gets them identically.
 */
#ifndef RUNTIME_H
#define RUNTIME_H

#include "include/moonlet.h"

struct resource;
struct server;

/* What a resource stores per method: a C function or a runtime's own reference. */
union handler {
    moonlet_handler fn;
    moonlet_children_cb children;
    long ref;
};

struct runtime {
    const char *name;
    /* Run handler h of resource r. Returns MOONLET_OK, MOONLET_DEFERRED or MOONLET_E*. */
    int (*call)(struct resource *r, union handler h, moonlet_req *req, moonlet_resp *resp);
    /* Release a handler reference when its resource goes away (may be NULL). */
    void (*drop)(struct resource *r, union handler h);
    /* List the children of subtree r (resource.kids) through emit (moonlet.h). */
    int (*children)(struct resource *r, moonlet_child_emit emit, void *ctx);
};

extern const struct runtime runtime_c;
/* The C runtime's call, for built-in runtimes that differ only in how they drop. */
int runtime_c_call(struct resource *r, union handler h, moonlet_req *req, moonlet_resp *resp);
int runtime_c_children(struct resource *r, moonlet_child_emit emit, void *ctx);

struct loader;
struct conf_item;

/* A unit of code: a plugin or a script; resources point to it. The fields after refs are
 * reload.c's: every loaded unit is on the server's list until it is replaced or unloaded,
 * then retired until nothing refers to it (refs: pendings; the loader's busy hook). */
struct unit {
    const struct runtime *rt;
    struct server *srv;
    const char *name;
    unsigned refs;
    const char *version;                /* a plugin's, for the admin view; may be NULL */
    struct unit *next;                  /* the server's live or retired units */
    const struct loader *ld;            /* who loaded it; NULL: built in */
    char *path;                         /* the file it came from */
    struct conf_item *conf;             /* its own copy of the settings */
    struct resource *res;               /* its resources (resource.unext) */
    unsigned created;                   /* of them, made at run time */
    double loaded_at;                   /* wall clock, for the admin view */
    void *watch;                        /* reload.c's file watch */
    unsigned retired : 1;
};

#endif
