/*
 * runtime.c -- the Lua runtime behind the dispatcher's vtable (core/runtime.h).
 *
 * Each script has its own lua_State with an accounting allocator (lua.memory) and runs
 * every handler call and timer callback in a coroutine from a per-state pool, under a
 * count hook (lua.instructions per slice). A handler that waits (moonlet.sleep/wait) is
 * answered through the core's pending response, exactly as a C plugin's moonlet_defer:
 * the core sends the empty ACK and the separate response (RFC 7252 §5.2.2).
 */
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "config.h"
#include "crash.h"
#include "exchange.h"
#include "log.h"
#include "observe.h"
#include "plugin.h"
#include "runtime.h"
#include "server.h"

#define CORO_POOL_MAX 64        /* idle coroutines kept per script */

static const struct runtime runtime_lua;

/* ---- memory ------------------------------------------------------------------------- */

static void *
lalloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct script *sc = ud;
    size_t old = ptr ? osize : 0;
    void *p;

    if (nsize == 0) {
        free(ptr);
        sc->mem -= old;
        return NULL;
    }
    /* the cap refuses growth only; Lua then collects and retries, and finally raises a
     * memory error in the call that wanted it */
    if (nsize > old && sc->mem - old + nsize > sc->rt->memory)
        return NULL;
    if ((p = realloc(ptr, nsize)) == NULL)
        return NULL;
    sc->mem = sc->mem - old + nsize;
    return p;
}

/* ---- budgets ------------------------------------------------------------------------ */

static void
budget_hook(lua_State *L, lua_Debug *ar)
{
    script_of(L)->rt->srv->m.lua_instructions++;
    if (lua_getinfo(L, "Sl", ar) && ar->currentline > 0)
        luaL_error(L, "%s:%d: instruction budget exceeded (lua.instructions)", ar->short_src,
                   ar->currentline);
    luaL_error(L, "instruction budget exceeded (lua.instructions)");
}

static void
budget_arm(struct script *sc, lua_State *L)
{
    if (sc->rt->instructions > 0)
        lua_sethook(L, budget_hook, LUA_MASKCOUNT, (int)sc->rt->instructions);
}

/* ---- finding things from a lua_State ------------------------------------------------- */

struct script *
script_of(lua_State *L)
{
    struct script *sc;

    lua_getallocf(L, (void **)&sc);
    return sc;
}

struct coro *
coro_of(lua_State *L)
{
    struct coro *co = *(struct coro **)lua_getextraspace(L);

    return co && co->L == L ? co : NULL;
}

/* ---- coroutines --------------------------------------------------------------------- */

static void
list_del(struct coro **head, struct coro *co)
{
    if (co->prev)
        co->prev->next = co->next;
    else
        *head = co->next;
    if (co->next)
        co->next->prev = co->prev;
    co->next = co->prev = NULL;
}

static void
list_add(struct coro **head, struct coro *co)
{
    co->prev = NULL;
    co->next = *head;
    if (*head)
        (*head)->prev = co;
    *head = co;
}

static void wake_cb(struct ev_loop *loop, ev_timer *w, int revents);

static struct coro *
coro_take(struct script *sc)
{
    struct coro *co = sc->pool;

    if (co) {
        list_del(&sc->pool, co);
        sc->npool--;
    } else {
        if ((co = calloc(1, sizeof *co)) == NULL)
            return NULL;
        co->sc = sc;
        co->L = lua_newthread(sc->L);   /* [-0, +1] */
        co->ref = luaL_ref(sc->L, LUA_REGISTRYINDEX);
        *(struct coro **)lua_getextraspace(co->L) = co;
        ev_init(&co->wake, wake_cb);
    }
    co->state = CO_RUNNING;
    co->req = NULL;
    co->lreq = NULL;
    co->pd = NULL;
    co->res = NULL;
    co->nwake = 0;
    list_add(&sc->active, co);
    return co;
}

static void
coro_destroy(struct script *sc, struct coro *co)
{
    luaL_unref(sc->L, LUA_REGISTRYINDEX, co->ref);
    free(co->event);
    free(co);
}

/* The coroutine's call is over: back to the pool if it ended cleanly, else discarded. */
static void
coro_finish(struct coro *co, int clean)
{
    struct script *sc = co->sc;

    ev_timer_stop(sc->rt->srv->loop, &co->wake);
    lreq_release(co);
    list_del(&sc->active, co);
    free(co->event);
    co->event = NULL;
    co->state = CO_IDLE;
    lua_settop(co->L, 0);
    if (clean && sc->npool < CORO_POOL_MAX) {
        list_add(&sc->pool, co);
        sc->npool++;
    } else {
#if LUA_VERSION_RELEASE_NUM >= 50406
        lua_closethread(co->L, sc->L);
#else
        lua_resetthread(co->L);     /* Lua 5.4.4 (Debian 12) */
#endif
        coro_destroy(sc, co);
    }
}

/* "SCRIPT: /path" or "SCRIPT: timer", built only when something is logged */
static const char *
what(const struct coro *co, char *buf, size_t len)
{
    snprintf(buf, len, "%s: %s", co->sc->path, co->res ? co->res->path : "timer");
    return buf;
}

static void
error_log(struct coro *co, int rc)
{
    char label[300];
    struct script *sc = co->sc;
    const char *msg = lua_tostring(co->L, -1);

    sc->rt->srv->m.lua_errors++;
    if (rc == LUA_ERRMEM) {
        sc->rt->srv->m.lua_memory++;
        lua_pushfstring(co->L, "not enough memory: the script's state reached lua.memory "
                               "(%d KiB)", (int)(sc->rt->memory >> 10));
        lua_replace(co->L, -2);
        msg = lua_tostring(co->L, -1);
    }
    if (msg == NULL)
        msg = lua_type(co->L, -1) == LUA_TNIL ? "nil" : "(error object is not a string)";
    luaL_traceback(sc->L, co->L, msg, 0);   /* the stack is not unwound after an error */
    log_error("%s: %s", what(co, label, sizeof label), lua_tostring(sc->L, -1));
    lua_pop(sc->L, 1);
}

/* Fill resp with 5.00 and the error (short unless lua.errors=full). */
static void
error_resp(struct coro *co, moonlet_resp *resp, const char *msg)
{
    if (resp == NULL)
        return;
    resp_simple(resp, MOONLET_INTERNAL_SERVER_ERROR,
                co->sc->rt->errors_full && msg ? msg : "script error");
}

/*
 * Run co's next slice with nargs values on its stack. Returns MOONLET_OK when the call is
 * over (resp filled, if given: the handler's answer or a 5.00), MOONLET_DEFERRED when it
 * waits. On OK the caller must coro_finish(co, clean) with *clean as set here.
 */
static int
coro_step(struct coro *co, int nargs, moonlet_resp *resp, int *clean)
{
    struct script *sc = co->sc;
    /* a fatal signal while the script runs names it: a resumption after a wait, a timer */
    struct crash_ctx cc = {sc->path, co->res ? co->res->path : NULL, co->method, NULL}, *up;
    char err[200], label[300];
    int nres = 0, rc;

    co->state = CO_RUNNING;
    budget_arm(sc, co->L);
    up = crash_enter(&cc);
    rc = lua_resume(co->L, sc->L, nargs, &nres);
    crash_leave(up);
    if (rc == LUA_YIELD) {
        lua_pop(co->L, nres);
        if (co->state == CO_SLEEP || co->state == CO_WAIT) {
            if (co->req) {          /* the first wait of a request: answer it later */
                co->pd = moonlet_defer(co->req, 0);
                co->req = NULL;
                if (co->pd == NULL) {
                    error_resp(co, resp, "out of memory");
                    *clean = 0;
                    return MOONLET_OK;
                }
            }
            return MOONLET_DEFERRED;
        }
        lua_pushstring(co->L, "coroutine.yield in a handler: use moonlet.sleep or moonlet.wait");
        rc = LUA_ERRRUN;
    }
    if (rc != LUA_OK) {
        /* req.body could not decode the request's body: the client's error, answered with
         * 4.00/4.13/4.15 and the reason (RFC 7252 §5.5.2), not a script error (lua/req.c) */
        if (lreq_body_error(co, resp)) {
            *clean = 0;
            return MOONLET_OK;
        }
        error_log(co, rc);
        if (rc == LUA_ERRMEM)
            lua_gc(sc->L, LUA_GCCOLLECT);
        error_resp(co, resp, lua_tostring(co->L, -1));
        *clean = 0;
        return MOONLET_OK;
    }
    *clean = 1;
    if (resp && lresp_convert(co->L, lua_gettop(co->L) - nres + 1, nres, co, resp, err,
                              sizeof err) < 0) {
        log_error("%s: %s", what(co, label, sizeof label), err);
        error_resp(co, resp, err);
    }
    return MOONLET_OK;
}

/* A slice after a wait: answer the pending request when the call is over. */
static void
coro_continue(struct coro *co, int nargs)
{
    moonlet_pending *pd = co->pd;
    int clean = 0;

    if (coro_step(co, nargs, pd ? moonlet_pending_resp(pd) : NULL, &clean) ==
        MOONLET_DEFERRED)
        return;
    co->pd = NULL;
    coro_finish(co, clean);
    if (pd)
        moonlet_pending_send(pd);   /* MOONLET_EGONE past the deadline: already answered */
}

static void
wake_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct coro *co = (struct coro *)((char *)w - offsetof(struct coro, wake));

    (void)loop, (void)revents;
    if (co->state == CO_WAIT) {     /* a wait's timeout */
        lua_pushnil(co->L);
        lua_pushliteral(co->L, "timeout");
        coro_continue(co, 2);
        return;
    }
    coro_continue(co, 0);
}

void
coro_sleep(struct coro *co, double seconds)
{
    co->state = CO_SLEEP;
    ev_timer_set(&co->wake, seconds > 0 ? seconds : 0, 0);
    ev_timer_start(co->sc->rt->srv->loop, &co->wake);
}

static void
resume_ready(struct ev_loop *loop, ev_idle *w, int revents)
{
    struct lua_rt *rt = (struct lua_rt *)((char *)w - offsetof(struct lua_rt, resume));

    (void)revents;
    ev_idle_stop(loop, w);
    while (rt->ready) {
        struct coro *co = rt->ready;

        rt->ready = co->rnext;
        coro_continue(co, co->nwake);
    }
}

void
coro_ready(struct coro *co, int nargs)
{
    struct lua_rt *rt = co->sc->rt;

    ev_timer_stop(rt->srv->loop, &co->wake);
    co->state = CO_READY;
    co->nwake = nargs;
    co->rnext = rt->ready;
    rt->ready = co;
    ev_idle_start(rt->srv->loop, &rt->resume);
}

void
coro_spawn(struct script *sc)
{
    struct coro *co = coro_take(sc);
    int clean = 0;

    if (co == NULL) {
        lua_pop(sc->L, 1);
        log_error("%s: timer: out of memory", sc->path);
        return;
    }
    lua_xmove(sc->L, co->L, 1);
    if (coro_step(co, 0, NULL, &clean) == MOONLET_OK)
        coro_finish(co, clean);
}

/* ---- the vtable ---------------------------------------------------------------------- */

static int
lua_call_handler(struct resource *r, union handler h, moonlet_req *req, moonlet_resp *resp)
{
    struct script *sc = (struct script *)r->unit;
    struct coro *co = coro_take(sc);
    int clean = 0;

    if (co == NULL)
        return MOONLET_ENOMEM;
    co->req = req;
    co->res = r;
    co->method = req->method;
    co->accept = req->accept;
    lua_rawgeti(co->L, LUA_REGISTRYINDEX, h.ref);
    lreq_push(co->L, co, req);
    if (coro_step(co, 1, resp, &clean) == MOONLET_DEFERRED)
        return MOONLET_DEFERRED;
    coro_finish(co, clean);
    return MOONLET_OK;
}

static void
lua_drop(struct resource *r, union handler h)
{
    struct script *sc = (struct script *)r->unit;

    luaL_unref(sc->L, LUA_REGISTRYINDEX, (int)h.ref);
    /* r is being freed (removed at run time): a coroutine still waiting in its handler,
     * its answer already given up (the pending's deadline), no longer names it */
    for (struct coro *co = sc->active; co; co = co->next)
        if (co->res == r)
            co->res = NULL;
}

/* A subtree's children for /.well-known/core: its function runs on the script's own
 * state under the instruction budget; an error is logged and lists nothing more. */
static int
lua_children(struct resource *r, moonlet_child_emit emit, void *ctx)
{
    struct script *sc = (struct script *)r->unit;
    struct lib_kids k = {r, emit, ctx};
    int top = lua_gettop(sc->L), rc;

    lua_pushcfunction(sc->L, lib_children_run);
    lua_pushlightuserdata(sc->L, &k);
    budget_arm(sc, sc->L);
    rc = lua_pcall(sc->L, 1, 0, 0);
    lua_sethook(sc->L, NULL, 0, 0);
    if (rc != LUA_OK)
        log_warn("%s: %s: children: %s", sc->path, r->path,
                 rc == LUA_ERRMEM ? "not enough memory (lua.memory)" : lua_tostring(sc->L, -1));
    lua_settop(sc->L, top);
    return MOONLET_OK;
}

static const struct runtime runtime_lua = {"lua", lua_call_handler, lua_drop, lua_children};

/* ---- loading ------------------------------------------------------------------------- */

static int
traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);

    luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
    return 1;
}

/* Free a script's state; its resources (and their handler references) are gone already,
 * and nothing waits on it any more (reload.c retires it first). */
static void
script_free(struct lua_rt *rt, struct script *sc)
{
    struct server *srv = rt->srv;
    struct script **sp = &rt->scripts;

    while (*sp && *sp != sc)
        sp = &(*sp)->next;
    if (*sp)
        *sp = sc->next;
    if (sc->L) {
        struct coro **pp = &rt->ready;

        while (*pp) {                       /* not resumed any more */
            if ((*pp)->sc == sc)
                *pp = (*pp)->rnext;
            else
                pp = &(*pp)->rnext;
        }
        lib_stop_timers(sc);
        while (sc->active) {
            struct coro *co = sc->active;

            ev_timer_stop(srv->loop, &co->wake);
            lreq_release(co);
            list_del(&sc->active, co);
            coro_destroy(sc, co);
        }
        while (sc->pool) {
            struct coro *co = sc->pool;

            list_del(&sc->pool, co);
            coro_destroy(sc, co);
        }
        lua_close(sc->L);
    }
    free(sc->path);
    free(sc->dir);
    free(sc->name);
    free(sc);
}

static const char *
conf_get(const struct conf_item *c, const char *key)
{
    const char *v = NULL;

    for (; c; c = c->next)
        if (strcmp(c->plugin, "lua") == 0 && strcmp(c->key, key) == 0)
            v = c->value;
    return v;
}

/* The lua group, applied at every load: the defaults, then what conf says; nothing
 * changes if any value is bad. Every load gets the same group (the file's, -s lua.*),
 * so the runtime always reflects the latest; SIGHUP reloads the scripts when it changes. */
static int
settings(struct lua_rt *rt, const struct conf_item *conf, char *err, size_t errlen)
{
    static const char *known[] = {"memory", "instructions", "errors", "sandbox", "paths"};
    struct lua_rt n = {.memory = 64u << 20, .instructions = 10000000, .sandbox = 1};
    unsigned long long m;
    const char *v;
    char why[200];

    for (const struct conf_item *c = conf; c; c = c->next) {
        size_t i;

        if (strcmp(c->plugin, "lua") != 0)
            continue;
        for (i = 0; i < sizeof known / sizeof *known && strcmp(known[i], c->key); i++)
            ;
        if (i == sizeof known / sizeof *known) {
            snprintf(err, errlen, "-s lua.%s: unknown setting", c->key);
            return -1;
        }
    }
    if ((v = conf_get(conf, "memory")) != NULL) {
        if (config_lua_limit("memory", v, &m, why, sizeof why) < 0)
            goto bad;
        n.memory = (size_t)m;
    }
    if ((v = conf_get(conf, "instructions")) != NULL) {
        if (config_lua_limit("instructions", v, &m, why, sizeof why) < 0)
            goto bad;
        n.instructions = (long)m;
    }
    if ((v = conf_get(conf, "errors")) != NULL) {
        if (strcmp(v, "short") && strcmp(v, "full")) {
            snprintf(err, errlen, "-s lua.errors=%s: short or full", v);
            return -1;
        }
        n.errors_full = strcmp(v, "full") == 0;
    }
    if ((v = conf_get(conf, "sandbox")) != NULL) {
        if (strcmp(v, "on") && strcmp(v, "off")) {
            snprintf(err, errlen, "-s lua.sandbox=%s: on or off", v);
            return -1;
        }
        n.sandbox = strcmp(v, "on") == 0;
    }
    if ((v = conf_get(conf, "paths")) != NULL && (n.paths = strdup(v)) == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    rt->memory = n.memory;
    rt->instructions = n.instructions;
    rt->errors_full = n.errors_full;
    rt->sandbox = n.sandbox;
    free(rt->paths);
    rt->paths = n.paths;
    return 0;
bad:
    snprintf(err, errlen, "-s %s", why);
    return -1;
}

static struct lua_rt *
rt_get(struct server *srv, const struct conf_item *conf, char *err, size_t errlen)
{
    struct lua_rt *rt = srv->lua;

    if (rt == NULL) {
        if ((rt = calloc(1, sizeof *rt)) == NULL) {
            snprintf(err, errlen, "out of memory");
            return NULL;
        }
        rt->srv = srv;
        ev_idle_init(&rt->resume, resume_ready);
        srv->lua = rt;
    }
    return settings(rt, conf, err, errlen) < 0 ? NULL : rt;
}

static int
lua_load_script(struct server *srv, const char *path, const struct conf_item *conf,
                struct unit *prev, struct unit **out, char *err, size_t errlen)
{
    struct lua_rt *rt = rt_get(srv, conf, err, errlen);
    struct script *sc;
    char *tmp;
    int rc;

    *out = NULL;
    if (rt == NULL)
        return -1;
    if ((sc = calloc(1, sizeof *sc)) == NULL) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    sc->rt = rt;
    sc->next = rt->scripts;
    rt->scripts = sc;
    sc->unit.rt = &runtime_lua;
    sc->unit.name = "script";
    sc->unit.srv = rt->srv;
    *out = &sc->unit;
    if ((sc->path = strdup(path)) == NULL || (tmp = strdup(path)) == NULL) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    sc->dir = strdup(dirname(tmp));
    free(tmp);
    if ((tmp = strdup(path)) != NULL) {
        char *base = basename(tmp), *dot = strrchr(base, '.');

        if (dot)
            *dot = '\0';
        sc->name = strdup(base);
        free(tmp);
    }
    sc->conf = conf;
    sc->unit.name = sc->path;
    if (sc->dir == NULL || (sc->L = lua_newstate(lalloc, sc)) == NULL) {
        snprintf(err, errlen, "%s: cannot create a Lua state (out of memory)", path);
        return -1;
    }
    *(struct coro **)lua_getextraspace(sc->L) = NULL;  /* threads copy it: "no coroutine" */
    lua_pushcfunction(sc->L, traceback);
    if (lib_open(sc->L, sc) != 0 || sandbox_env(sc->L, sc) != 0) {
        snprintf(err, errlen, "%s: %s", path, lua_tostring(sc->L, -1));
        return -1;
    }
    /* a reload: moonlet.state is the old version's, before the new chunk runs */
    if (prev && lib_carry_state(sc, (struct script *)prev) != 0) {
        snprintf(err, errlen, "%s: not enough memory to carry moonlet.state over", path);
        return -1;
    }
    sc->env_ref = luaL_ref(sc->L, LUA_REGISTRYINDEX);
    rc = luaL_loadfilex(sc->L, path, "t");
    if (rc != LUA_OK) {
        /* "FILE:LINE: message" (a missing file: "cannot open FILE") */
        snprintf(err, errlen, "%s", lua_tostring(sc->L, -1));
        return -1;
    }
    lua_rawgeti(sc->L, LUA_REGISTRYINDEX, sc->env_ref);
    lua_setupvalue(sc->L, -2, 1);   /* the chunk's _ENV */
    sc->loading = 1;
    budget_arm(sc, sc->L);
    rc = lua_pcall(sc->L, 0, 0, 1);
    lua_sethook(sc->L, NULL, 0, 0);
    sc->loading = 0;
    if (rc == LUA_ERRMEM) {     /* no message handler runs for a memory error */
        snprintf(err, errlen, "%s: not enough memory while loading: the script's state "
                 "reached lua.memory (%zu KiB)", path, rt->memory >> 10);
        return -1;
    }
    if (rc != LUA_OK) {
        const char *msg = lua_tostring(sc->L, -1);

        snprintf(err, errlen, "%s", msg ? msg : "error loading the script");
        /* keep only the first line (FILE:LINE: message); the traceback goes to the log */
        if ((tmp = strchr(err, '\n')) != NULL) {
            log_debug("%s", lua_tostring(sc->L, -1));
            *tmp = '\0';
        }
        return -1;
    }
    lua_settop(sc->L, 0);
    log_info("loaded script %s (%zu KiB)", path, sc->mem >> 10);
    return 0;
}

/* Replaced or unloaded: timers stop; handlers waiting (coroutines) run to their end. A
 * moonlet.wait without a timeout gets one (defer_deadline): with the timers gone and no
 * new requests, nothing may ever signal it, and it would keep the old version alive. */
static void
lua_retire(struct server *srv, struct unit *u)
{
    struct script *sc = (struct script *)u;

    lib_stop_timers(sc);
    for (struct coro *co = sc->active; co; co = co->next)
        if (co->state == CO_WAIT && !ev_is_active(&co->wake)) {
            ev_timer_set(&co->wake, srv->cfg.defer_deadline, 0);
            ev_timer_start(srv->loop, &co->wake);
        }
}

static int
lua_busy(const struct unit *u)
{
    return ((const struct script *)u)->active != NULL;
}

static void
lua_destroy(struct server *srv, struct unit *u)
{
    script_free(srv->lua, (struct script *)u);
}

static void
lua_fini(struct server *srv)
{
    struct lua_rt *rt = srv->lua;

    if (rt == NULL)
        return;
    while (rt->scripts)         /* none left but a load that failed before its unit */
        script_free(rt, rt->scripts);
    ev_idle_stop(srv->loop, &rt->resume);
    free(rt->paths);
    free(rt);
    srv->lua = NULL;
}

/* moonlet -t: the lua settings as a load would apply them, applied to nothing */
static int
lua_check(const struct conf_item *conf, char *err, size_t errlen)
{
    struct lua_rt scratch = {0};
    int rc = settings(&scratch, conf, err, errlen);

    free(scratch.paths);
    return rc;
}

const struct loader lua_loader = {".lua", lua_load_script, lua_retire, lua_busy, lua_destroy,
                                  lua_fini, lua_check};
