/*
 * runtime.h -- the Lua runtime: one lua_State per script, a pool of coroutines per state
 * (one per request or timer callback), instruction and memory budgets, and the runtime
 * vtable the dispatcher calls (core/runtime.h).
 */
#ifndef LUA_RUNTIME_H
#define LUA_RUNTIME_H

#include <stddef.h>

#include <ev.h>
#include <lauxlib.h>
#include <lua.h>

#include "request.h"
#include "runtime.h"
#include "tree.h"

struct server;
struct script;
struct conf_item;

/* The runtime's settings (-s lua.KEY=VALUE) and its scripts, one per server. */
struct lua_rt {
    struct server *srv;
    struct script *scripts;
    size_t memory;              /* bytes per script state */
    long instructions;          /* VM instructions per call or resumption */
    int errors_full;            /* put the error message in the 5.00 payload */
    int sandbox;
    char *paths;                /* extra readable directories, ':'-separated */
    struct coro *ready;         /* woken by moonlet.signal, resumed on the next loop turn */
    ev_idle resume;
};

enum coro_state { CO_IDLE, CO_RUNNING, CO_SLEEP, CO_WAIT, CO_READY };

/* A coroutine running one handler call or timer callback. */
struct coro {
    struct coro *next, *prev;   /* the script's pool (idle) or active list */
    struct script *sc;
    lua_State *L;
    int ref;                    /* anchors the thread in the registry */
    enum coro_state state;
    struct moonlet_req *req;    /* the request, live during the first slice */
    struct lreq *lreq;          /* its Lua object */
    moonlet_pending *pd;        /* the answer, once the handler has waited */
    struct resource *res;
    unsigned method;
    int accept;
    ev_timer wake;              /* sleep, or a wait's timeout */
    char *event;                /* moonlet.wait's event name */
    int nwake;                  /* values pushed for the next resumption */
    struct coro *rnext;         /* ready list */
};

struct ltimer;

struct script {
    struct unit unit;           /* first: a resource's unit is its script */
    struct script *next;
    struct lua_rt *rt;
    lua_State *L;
    char *path, *dir;
    size_t mem;
    int loading;                /* the top-level chunk runs: resources may be declared */
    struct coro *pool, *active;
    int npool;
    struct ltimer *timers;
    int env_ref;                /* the sandbox _ENV */
    char *name;                 /* file name without ".lua": its -s NAME.KEY settings */
    const struct conf_item *conf;
};

/* The script whose state L (or a thread of it) belongs to. */
struct script *script_of(lua_State *L);
/* The coroutine running in L, or NULL (top level, a user's own coroutine). */
struct coro *coro_of(lua_State *L);
/* Start a function (on top of sc->L's stack, popped) in a new coroutine: a timer. */
void coro_spawn(struct script *sc);
/* Mark a waiting coroutine ready with nargs values already pushed on its stack. */
void coro_ready(struct coro *co, int nargs);
/* Run a coroutine's next slice; on a wait, arrange to answer later. */
void coro_sleep(struct coro *co, double seconds);

/* lib.c: the `moonlet` module (left in the registry as "moonlet"). */
int lib_open(lua_State *L, struct script *sc);
/* A subtree's children function, called for discovery (runtime.c: lua_children). */
struct lib_kids {
    struct resource *r;
    moonlet_child_emit emit;
    void *ctx;
};
int lib_children_run(lua_State *L);
void lib_stop_timers(struct script *sc);
/* A reload: the new script's moonlet.state becomes a copy of the old one's (plain data).
 * 0, or -1 (out of memory in the new state). */
int lib_carry_state(struct script *to, struct script *from);
/* sandbox.c: build the environment table for sc and leave it on the stack. */
int sandbox_env(lua_State *L, struct script *sc);
/* req.c */
struct lreq;
void lreq_metatable(lua_State *L);
void lreq_push(lua_State *L, struct coro *co, struct moonlet_req *req);
/* Detach the request of co from its receive buffer (before the first wait). 0 or -1. */
int lreq_detach(struct coro *co);
void lreq_release(struct coro *co);
/* Turn a handler's results (n values from index base) into resp. 0, or -1 with err. */
int lresp_convert(lua_State *L, int base, int n, struct coro *co, moonlet_resp *resp,
                  char *err, size_t errlen);
/* cbor.c */
int lcbor_encode(lua_State *L);
int lcbor_decode(lua_State *L);
/* The json module (lua-cjson), registered once per state. */
int ljson_open(lua_State *L);

#endif
