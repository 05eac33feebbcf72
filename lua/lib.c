/*
 * lib.c -- the `moonlet` Lua module: resource declarations, waiting (sleep, wait,
 * signal), timers, notify, logging, codes and content formats, JSON and CBOR.
 * Misuse raises an error; runtime conditions return nil, err (OpenResty's two channels).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lualib.h>

#include "codec.h"
#include "log.h"
#include "observe.h"
#include "plugin.h"
#include "runtime.h"
#include "server.h"

/* ---- resources ---------------------------------------------------------------------- */

/* A handler slot is recognised by tree_resource_new through a non-NULL function pointer;
 * for Lua the slot then holds a registry reference instead (runtime.h: union handler). */
static int
lua_slot(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    (void)req, (void)resp, (void)ud;
    return MOONLET_EINVAL;
}

static const char *const method_keys[TREE_METHODS] = {
    "handler", "get", "post", "put", "delete", "fetch", "patch", "ipatch"};

/* A string, or a list of strings joined by spaces (rt, if). The result stays on the stack
 * (it backs the returned pointer); nil gives NULL. */
static const char *
tokens_field(lua_State *L, int t, const char *key)
{
    char buf[512];
    size_t len = 0;

    lua_getfield(L, t, key);
    if (lua_isnil(L, -1) || lua_type(L, -1) == LUA_TSTRING)
        return lua_tostring(L, -1);
    if (!lua_istable(L, -1))
        luaL_error(L, "moonlet.resource: %s must be a string or a list of strings", key);
    for (lua_Integer i = 1; lua_rawgeti(L, -1, i) != LUA_TNIL; i++) {
        size_t n;
        const char *v = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;

        if (v == NULL || len + n + 1 >= sizeof buf)
            luaL_error(L, "moonlet.resource: %s must be a list of strings (512 bytes)", key);
        if (i > 1)
            buf[len++] = ' ';
        memcpy(buf + len, v, n);
        len += n;
        lua_pop(L, 1);
    }
    lua_pop(L, 2);
    lua_pushlstring(L, buf, len);
    return lua_tostring(L, -1);
}

/* attrs = { name = value | true }: copied into arena, listed in out (ended by NULL). */
static unsigned
attrs_field(lua_State *L, int t, moonlet_attr *out, unsigned max, char *arena, size_t cap)
{
    size_t used = 0;
    unsigned n = 0;

    lua_getfield(L, t, "attrs");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    luaL_argcheck(L, lua_istable(L, -1), 1, "attrs must be a table");
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        size_t kl, vl = 0;
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &kl) : NULL;
        const char *v = NULL;

        if (k == NULL || n == max)
            luaL_error(L, "moonlet.resource: attrs: up to %d name = value pairs", (int)max);
        if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER)
            v = lua_tolstring(L, -1, &vl);      /* a number becomes a string in place */
        else if (lua_toboolean(L, -1) != 1 || !lua_isboolean(L, -1))
            luaL_error(L, "moonlet.resource: attrs.%s must be a string, number or true", k);
        if (used + kl + vl + 2 > cap)
            luaL_error(L, "moonlet.resource: attrs too long");
        out[n].name = memcpy(arena + used, k, kl + 1);
        used += kl + 1;
        out[n].value = v ? memcpy(arena + used, v, vl + 1) : NULL;
        used += v ? vl + 1 : 0;
        n++;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    out[n] = (moonlet_attr){NULL, NULL};
    return n;
}

static void
check_fields(lua_State *L, int t)
{
    static const char *const known[] = {"path", "rt", "iface", "if", "ct", "sz", "obs",
                                        "title", "hidden", "attrs", "autonotify", "notify_con",
                                        "children", "secure", "allow", NULL};

    lua_pushnil(L);
    while (lua_next(L, t)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        int ok = 0;

        for (int i = 0; k && known[i] && !ok; i++)
            ok = strcmp(k, known[i]) == 0;
        for (int i = 0; k && i < TREE_METHODS && !ok; i++)
            ok = strcmp(k, method_keys[i]) == 0;
        if (!ok)
            luaL_error(L, "moonlet.resource: unknown field '%s'", k ? k : "(not a string)");
        lua_pop(L, 1);
    }
}

/* What a definition's link attributes point into while it is built. */
struct def_store {
    int ct[17];
    moonlet_attr attrs[33];
    char arena[2048];
};

/* rt, iface/if, title, sz, obs, ct, attrs of the table at t into def (values stay on the
 * stack or in st). Raises on a bad field. */
static void
link_fields(lua_State *L, int t, moonlet_resource_def *def, struct def_store *st)
{
    unsigned nattr;
    int nct = 0;

    def->rt = tokens_field(L, t, "rt");
    def->iface = tokens_field(L, t, "iface");
    if (def->iface == NULL)
        def->iface = tokens_field(L, t, "if");
    lua_getfield(L, t, "title");
    def->title = luaL_optstring(L, -1, NULL);
    lua_getfield(L, t, "sz");
    def->sz = (long)luaL_optinteger(L, -1, 0);
    lua_getfield(L, t, "obs");
    def->obs = lua_toboolean(L, -1);
    lua_getfield(L, t, "ct");
    if (lua_isinteger(L, -1)) {
        st->ct[nct++] = (int)lua_tointeger(L, -1);
    } else if (lua_istable(L, -1)) {
        for (lua_Integer i = 1; lua_rawgeti(L, -1, i) != LUA_TNIL; i++) {
            if (!lua_isinteger(L, -1) || nct == 16)
                luaL_error(L, "moonlet.resource: ct must be up to 16 integers");
            st->ct[nct++] = (int)lua_tointeger(L, -1);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    } else if (!lua_isnil(L, -1)) {
        luaL_error(L, "moonlet.resource: ct must be an integer or a list of them");
    }
    st->ct[nct] = MOONLET_CT_END;
    def->ct = nct ? st->ct : NULL;
    nattr = attrs_field(L, t, st->attrs, 32, st->arena, sizeof st->arena);
    def->extra = nattr ? st->attrs : NULL;
}

/* Like lua_slot: marks a subtree whose children a Lua function lists (resource.kids). */
static int
lua_kids_slot(moonlet_resource *r, moonlet_child_emit emit, void *ctx, void *ud)
{
    (void)r, (void)emit, (void)ctx, (void)ud;
    return MOONLET_EINVAL;
}

/* lua_children's protected part (runtime.c arms the instruction budget): the children
 * function's list -- path strings, or tables of a path and link attributes -- to emit. */
int
lib_children_run(lua_State *L)
{
    struct lib_kids *k = lua_touserdata(L, 1);

    lua_rawgeti(L, LUA_REGISTRYINDEX, (int)k->r->kids.ref);
    lua_call(L, 0, 1);
    if (!lua_istable(L, 2))
        return luaL_error(L, "children must return a list");
    for (lua_Integer i = 1; lua_rawgeti(L, 2, i) != LUA_TNIL; i++) {
        moonlet_resource_def def = {0};
        struct def_store st;

        if (lua_type(L, 3) == LUA_TSTRING) {
            def.path = lua_tostring(L, 3);
        } else if (lua_istable(L, 3)) {
            lua_getfield(L, 3, "path");
            if ((def.path = lua_tostring(L, -1)) == NULL || lua_type(L, -1) != LUA_TSTRING)
                return luaL_error(L, "children: entry %d has no path", (int)i);
            link_fields(L, 3, &def, &st);
        } else {
            return luaL_error(L, "children: entry %d is not a path or a table", (int)i);
        }
        if (k->emit(k->ctx, &def))
            break;
        lua_settop(L, 2);
    }
    return 0;
}

static int
res_notify(lua_State *L);

static const char serial_key = 's';    /* a handle's private field: which definition */

static int
l_resource(lua_State *L)
{
    struct script *sc = script_of(L);
    moonlet_resource_def def = {0};
    struct def_store store;
    const char *allow[33];
    int any = 0;
    struct resource *r;
    char err[256];

    luaL_checktype(L, 1, LUA_TTABLE);
    check_fields(L, 1);
    lua_getfield(L, 1, "path");
    if ((def.path = lua_tostring(L, -1)) == NULL || lua_type(L, -1) != LUA_TSTRING)
        return luaL_error(L, "moonlet.resource: path (a string) is required");
    link_fields(L, 1, &def, &store);
    lua_getfield(L, 1, "hidden");
    def.hidden = lua_toboolean(L, -1);
    lua_getfield(L, 1, "autonotify");
    def.autonotify = lua_toboolean(L, -1);
    lua_getfield(L, 1, "notify_con");
    def.notify_con = lua_toboolean(L, -1);
    lua_getfield(L, 1, "children");
    if (!lua_isnil(L, -1) && !lua_isfunction(L, -1))
        return luaL_error(L, "moonlet.resource: children must be a function");
    def.children = lua_isnil(L, -1) ? NULL : lua_kids_slot;
    lua_getfield(L, 1, "secure");
    def.secure = lua_toboolean(L, -1);
    lua_getfield(L, 1, "allow");      /* identity patterns; the strings stay on the stack */
    if (lua_istable(L, -1)) {
        int n = 0, t = lua_gettop(L);

        luaL_checkstack(L, 34, "moonlet.resource: allow");
        for (lua_Integer i = 1; lua_rawgeti(L, t, i) != LUA_TNIL; i++) {
            if (lua_type(L, -1) != LUA_TSTRING || n == 32)
                return luaL_error(L, "moonlet.resource: allow must be up to 32 strings");
            allow[n++] = lua_tostring(L, -1);
        }
        lua_pop(L, 1);
        allow[n] = NULL;
        def.allow = allow;
    } else if (!lua_isnil(L, -1)) {
        return luaL_error(L, "moonlet.resource: allow must be a list of identity patterns");
    }
    for (int i = 0; i < TREE_METHODS; i++) {
        moonlet_handler *slot[TREE_METHODS] = {&def.any, &def.get, &def.post, &def.put,
                                               &def.del, &def.fetch, &def.patch, &def.ipatch};

        lua_getfield(L, 1, method_keys[i]);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            continue;
        }
        if (!lua_isfunction(L, -1))
            return luaL_error(L, "moonlet.resource: %s must be a function", method_keys[i]);
        lua_pop(L, 1);
        *slot[i] = lua_slot;
        any = 1;
    }
    if (!any)
        return luaL_error(L, "moonlet.resource: %s has no handler (get, put, ..., handler)",
                          def.path);
    r = tree_resource_new(&def, sizeof def, NULL, &sc->unit, err, sizeof err);
    if (r == NULL)
        return luaL_error(L, "moonlet.resource: %s", err);
    for (int i = 0; i < TREE_METHODS; i++) {
        if (!r->has[i])
            continue;
        lua_getfield(L, 1, method_keys[i]);
        r->h[i].ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    if (r->has_kids) {
        lua_getfield(L, 1, "children");
        r->kids.ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    if (sc->loading) {
        if (server_register(sc->rt->srv, r) != MOONLET_OK) {
            snprintf(err, sizeof err, "%s: path already registered", r->path);
            tree_resource_free(r);      /* releases the references */
            return luaL_error(L, "moonlet.resource: %s", err);
        }
    } else {
        /* at run time (a handler, a timer): live at once; what can go wrong here is the
         * state of the world, not the script, so it is nil and a message */
        int rc = server_register_runtime(sc->rt->srv, r);

        if (rc != MOONLET_OK) {
            if (rc == MOONLET_EEXIST)
                snprintf(err, sizeof err, "%s: path already registered", r->path);
            else if (rc == MOONLET_ERANGE)
                snprintf(err, sizeof err, "too many resources created at run time "
                         "(runtime_resources = %u)", sc->rt->srv->cfg.runtime_resources);
            else
                snprintf(err, sizeof err, "the script was reloaded: its new version serves");
            tree_resource_free(r);
            lua_pushnil(L);
            lua_pushstring(L, err);
            return 2;
        }
    }
    lua_createtable(L, 0, 2);       /* the resource object: its path, and which one */
    lua_pushstring(L, r->path);
    lua_setfield(L, -2, "path");
    lua_pushlightuserdata(L, (void *)&serial_key);
    lua_pushinteger(L, (lua_Integer)r->serial);
    lua_rawset(L, -3);
    luaL_setmetatable(L, "moonlet.resource");
    return 1;
}

/* The resource a handle stands for, if it still exists and is this script's. */
static struct resource *
handle_resource(lua_State *L, int idx)
{
    struct script *sc = script_of(L);
    struct server *srv = sc->rt->srv;
    struct resource *r;
    const char *path;
    lua_Integer serial;

    luaL_checktype(L, idx, LUA_TTABLE);
    lua_getfield(L, idx, "path");
    path = lua_tostring(L, -1);
    lua_pushlightuserdata(L, (void *)&serial_key);
    lua_rawget(L, idx);
    serial = lua_tointeger(L, -1);
    lua_pop(L, 2);
    if (path == NULL)
        return NULL;
    r = tree_find_path(srv->tree, path);
    if ((r == NULL || r->serial != (uint64_t)serial) && srv->staging)
        r = tree_find_path(srv->staging, path);     /* declared by the loading top level */
    if (r == NULL || r->serial != (uint64_t)serial || r->unit != &sc->unit)
        return NULL;
    return r;
}

/* res:remove(): RFC 7641 §3.2, its observers get 4.04 (server_unregister). */
static int
res_remove(lua_State *L)
{
    struct resource *r = handle_resource(L, 1);

    if (r == NULL) {
        lua_pushnil(L);
        lua_pushliteral(L, "no such resource");
        return 2;
    }
    server_unregister(script_of(L)->rt->srv, r);
    lua_pushboolean(L, 1);
    return 1;
}

/* ---- notify --------------------------------------------------------------------------- */

static int
l_notify(lua_State *L)
{
    struct script *sc = script_of(L);
    struct resource *r;
    const char *path;

    if (lua_istable(L, 1)) {
        lua_getfield(L, 1, "path");
        lua_replace(L, 1);
    }
    path = luaL_checkstring(L, 1);
    if ((r = tree_find_path(sc->rt->srv->tree, path)) == NULL) {
        lua_pushnil(L);
        lua_pushliteral(L, "no such resource");
        return 2;
    }
    observe_notify(sc->rt->srv, r);    /* built and sent before the server next waits */
    lua_pushboolean(L, 1);
    return 1;
}

static int
res_notify(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    return l_notify(L);
}

/* ---- waiting ---------------------------------------------------------------------------- */

static struct coro *
waiting_coro(lua_State *L, const char *fn)
{
    struct coro *co = coro_of(L);

    if (co == NULL)
        luaL_error(L, "moonlet.%s: only inside handlers and timers (not at the top level or in "
                      "a coroutine of your own)", fn);
    if (co->req && lreq_detach(co) < 0)
        luaL_error(L, "moonlet.%s: out of memory", fn);
    return co;
}

static int
l_sleep(lua_State *L)
{
    double s = luaL_checknumber(L, 1);
    struct coro *co = waiting_coro(L, "sleep");

    coro_sleep(co, s);
    return lua_yield(L, 0);
}

static int
l_wait(lua_State *L)
{
    const char *ev = luaL_checkstring(L, 1);
    double timeout = luaL_optnumber(L, 2, -1);
    struct coro *co = waiting_coro(L, "wait");

    free(co->event);
    if ((co->event = strdup(ev)) == NULL)
        return luaL_error(L, "moonlet.wait: out of memory");
    co->state = CO_WAIT;
    if (timeout >= 0) {
        ev_timer_set(&co->wake, timeout, 0);
        ev_timer_start(co->sc->rt->srv->loop, &co->wake);
    }
    return lua_yield(L, 0);
}

static int
l_signal(lua_State *L)
{
    struct script *sc = script_of(L);
    const char *ev = luaL_checkstring(L, 1);
    int n = lua_gettop(L) - 1, woken = 0;

    for (struct coro *co = sc->active; co; co = co->next) {
        if (co->state != CO_WAIT || co->event == NULL || strcmp(co->event, ev) != 0)
            continue;
        if (!lua_checkstack(co->L, n + 1))
            continue;
        for (int i = 2; i <= n + 1; i++)
            lua_pushvalue(L, i);
        lua_xmove(L, co->L, n);
        free(co->event);
        co->event = NULL;
        coro_ready(co, n);
        woken++;
    }
    lua_pushinteger(L, woken);
    return 1;
}

/* ---- timers --------------------------------------------------------------------------- */

struct ltimer {
    ev_timer w;
    struct ltimer *next, *prev;
    struct script *sc;
    int fn_ref, self_ref;
};

static void
timer_unlink(struct ltimer *t)
{
    struct script *sc = t->sc;

    ev_timer_stop(sc->rt->srv->loop, &t->w);
    if (t->prev)
        t->prev->next = t->next;
    else
        sc->timers = t->next;
    if (t->next)
        t->next->prev = t->prev;
    t->next = t->prev = NULL;
    luaL_unref(sc->L, LUA_REGISTRYINDEX, t->fn_ref);
    luaL_unref(sc->L, LUA_REGISTRYINDEX, t->self_ref);  /* now collectable */
    t->fn_ref = t->self_ref = LUA_NOREF;
}

static void
timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct ltimer *t = (struct ltimer *)w;
    struct script *sc = t->sc;

    (void)loop, (void)revents;
    lua_rawgeti(sc->L, LUA_REGISTRYINDEX, t->fn_ref);
    if (w->repeat <= 0)
        timer_unlink(t);    /* one-shot: done before it runs (it may start another) */
    coro_spawn(sc);
}

static int
start_timer(lua_State *L, double repeat)
{
    struct script *sc = script_of(L);
    double after = luaL_checknumber(L, 1);
    struct ltimer *t;

    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (after < 0 || (repeat >= 0 && after <= 0))
        return luaL_error(L, "moonlet.%s: the interval must be positive",
                          repeat >= 0 ? "every" : "after");
    t = lua_newuserdatauv(L, sizeof *t, 0);
    memset(t, 0, sizeof *t);
    luaL_setmetatable(L, "moonlet.timer");
    t->sc = sc;
    lua_pushvalue(L, 2);
    t->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, -1);
    t->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);   /* alive while scheduled */
    ev_timer_init(&t->w, timer_cb, after, repeat >= 0 ? after : 0);
    ev_timer_start(sc->rt->srv->loop, &t->w);
    t->next = sc->timers;
    if (sc->timers)
        sc->timers->prev = t;
    sc->timers = t;
    return 1;
}

static int
l_after(lua_State *L)
{
    return start_timer(L, -1);
}

static int
l_every(lua_State *L)
{
    return start_timer(L, 0);
}

static int
timer_cancel(lua_State *L)
{
    struct ltimer *t = luaL_checkudata(L, 1, "moonlet.timer");

    if (t->self_ref != LUA_NOREF)
        timer_unlink(t);
    return 0;
}

/* ---- state carried over a reload ------------------------------------------------------- */

/* Push onto `to` a copy of the value at index i of `from`: plain data only (tables deeply,
 * shared and cyclic tables kept so, through the map at index map of `to`); functions,
 * userdata and threads become nil. */
static void
copy_value(lua_State *from, int i, lua_State *to, int map, int depth)
{
    size_t n;
    const char *s;
    const void *key;

    switch (lua_type(from, i)) {
    case LUA_TNUMBER:
        if (lua_isinteger(from, i))
            lua_pushinteger(to, lua_tointeger(from, i));
        else
            lua_pushnumber(to, lua_tonumber(from, i));
        return;
    case LUA_TSTRING:
        s = lua_tolstring(from, i, &n);
        lua_pushlstring(to, s, n);
        return;
    case LUA_TBOOLEAN:
        lua_pushboolean(to, lua_toboolean(from, i));
        return;
    case LUA_TTABLE:
        key = lua_topointer(from, i);
        if (lua_rawgetp(to, map, key) == LUA_TTABLE)
            return;                             /* met before: the same copy */
        lua_pop(to, 1);
        if (depth > 64 || !lua_checkstack(from, 3) || !lua_checkstack(to, 4))
            break;
        lua_newtable(to);
        lua_pushvalue(to, -1);
        lua_rawsetp(to, map, key);
        i = lua_absindex(from, i);
        lua_pushnil(from);
        while (lua_next(from, i)) {
            copy_value(from, -2, to, map, depth + 1);
            copy_value(from, -1, to, map, depth + 1);
            if (lua_isnil(to, -2) || lua_isnil(to, -1))
                lua_pop(to, 2);
            else
                lua_rawset(to, -3);
            lua_pop(from, 1);
        }
        return;
    default:
        break;
    }
    lua_pushnil(to);
}

/* In `to` (protected): moonlet.state := a copy of the old state's moonlet.state. */
static int
carry_state(lua_State *to)
{
    lua_State *from = lua_touserdata(to, 1);
    int map;

    lua_newtable(to);
    map = lua_gettop(to);
    lua_getfield(from, LUA_REGISTRYINDEX, "moonlet");
    lua_getfield(from, -1, "state");
    copy_value(from, -1, to, map, 0);
    lua_pop(from, 2);
    lua_getfield(to, LUA_REGISTRYINDEX, "moonlet");
    lua_insert(to, -2);
    lua_setfield(to, -2, "state");
    return 0;
}

int
lib_carry_state(struct script *to, struct script *from)
{
    lua_pushcfunction(to->L, carry_state);
    lua_pushlightuserdata(to->L, from->L);
    if (lua_pcall(to->L, 1, 0, 0) != LUA_OK) {
        lua_pop(to->L, 1);
        return -1;
    }
    return 0;
}

void
lib_stop_timers(struct script *sc)
{
    while (sc->timers)
        timer_unlink(sc->timers);
}

/* ---- logging, time, codes -------------------------------------------------------------- */

static void
log_values(lua_State *L, int level, int from)
{
    struct script *sc = script_of(L);
    luaL_Buffer b;
    int n = lua_gettop(L);

    luaL_buffinit(L, &b);
    for (int i = from; i <= n; i++) {
        if (i > from)
            luaL_addchar(&b, ' ');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    log_msg(level, "%s: %s", sc->path, lua_tostring(L, -1));
}

static int
l_log(lua_State *L)
{
    static const char *const levels[] = {"error", "warn", "info", "debug", NULL};

    log_values(L, luaL_checkoption(L, 1, NULL, levels), 2);
    return 0;
}

static int
l_print(lua_State *L)
{
    log_values(L, MOONLET_LOG_INFO, 1);
    return 0;
}

/* moonlet.conf(key [, default]): the value of -s NAME.KEY=VALUE for this script (NAME is
 * its file name without .lua), a string; else default. */
static int
l_conf(lua_State *L)
{
    struct script *sc = script_of(L);
    const char *key = luaL_checkstring(L, 1), *v = NULL;

    for (const struct conf_item *c = sc->conf; c; c = c->next)
        if ((c->plugin[0] == '\0' || (sc->name && strcmp(c->plugin, sc->name) == 0)) &&
            strcmp(c->key, key) == 0)
            v = c->value;
    if (v)
        lua_pushstring(L, v);
    else
        lua_settop(L, 2);
    return 1;
}

static int
l_now(lua_State *L)
{
    lua_pushnumber(L, ev_now(script_of(L)->rt->srv->loop));
    return 1;
}

static int
l_code(lua_State *L)
{
    lua_Integer c = luaL_checkinteger(L, 1), d = luaL_checkinteger(L, 2);

    luaL_argcheck(L, c >= 0 && c <= 7, 1, "class 0..7");
    luaL_argcheck(L, d >= 0 && d <= 31, 2, "detail 0..31");
    lua_pushinteger(L, c << 5 | d);
    return 1;
}

static int
l_code_str(lua_State *L)
{
    lua_Integer c = luaL_checkinteger(L, 1);

    luaL_argcheck(L, c >= 0 && c <= 255, 1, "a code 0..255");
    lua_pushfstring(L, "%d.%d%d", (int)(c >> 5), (int)(c & 31) / 10, (int)(c & 31) % 10);
    return 1;
}

static const struct {
    const char *name;
    int value;
} codes[] = {
    {"CREATED", MOONLET_CREATED}, {"DELETED", MOONLET_DELETED}, {"VALID", MOONLET_VALID},
    {"CHANGED", MOONLET_CHANGED}, {"CONTENT", MOONLET_CONTENT}, {"CONTINUE", MOONLET_CONTINUE},
    {"BAD_REQUEST", MOONLET_BAD_REQUEST}, {"UNAUTHORIZED", MOONLET_UNAUTHORIZED},
    {"BAD_OPTION", MOONLET_BAD_OPTION}, {"FORBIDDEN", MOONLET_FORBIDDEN},
    {"NOT_FOUND", MOONLET_NOT_FOUND}, {"METHOD_NOT_ALLOWED", MOONLET_METHOD_NOT_ALLOWED},
    {"NOT_ACCEPTABLE", MOONLET_NOT_ACCEPTABLE},
    {"REQUEST_ENTITY_INCOMPLETE", MOONLET_REQUEST_ENTITY_INCOMPLETE},
    {"CONFLICT", MOONLET_CONFLICT}, {"PRECONDITION_FAILED", MOONLET_PRECONDITION_FAILED},
    {"REQUEST_ENTITY_TOO_LARGE", MOONLET_REQUEST_ENTITY_TOO_LARGE},
    {"UNSUPPORTED_CONTENT_FORMAT", MOONLET_UNSUPPORTED_CONTENT_FORMAT},
    {"UNPROCESSABLE_ENTITY", MOONLET_UNPROCESSABLE_ENTITY},
    {"TOO_MANY_REQUESTS", MOONLET_TOO_MANY_REQUESTS},
    {"INTERNAL_SERVER_ERROR", MOONLET_INTERNAL_SERVER_ERROR},
    {"NOT_IMPLEMENTED", MOONLET_NOT_IMPLEMENTED}, {"BAD_GATEWAY", MOONLET_BAD_GATEWAY},
    {"SERVICE_UNAVAILABLE", MOONLET_SERVICE_UNAVAILABLE},
    {"GATEWAY_TIMEOUT", MOONLET_GATEWAY_TIMEOUT},
    {"PROXYING_NOT_SUPPORTED", MOONLET_PROXYING_NOT_SUPPORTED},
    {"HOP_LIMIT_REACHED", MOONLET_HOP_LIMIT_REACHED},
};

static const struct {
    const char *name;
    int value;
} cts[] = {
    {"text", MOONLET_CT_TEXT}, {"link_format", MOONLET_CT_LINK_FORMAT},
    {"xml", MOONLET_CT_XML}, {"octets", MOONLET_CT_OCTETS}, {"exi", MOONLET_CT_EXI},
    {"json", MOONLET_CT_JSON}, {"cbor", MOONLET_CT_CBOR},
    {"senml_json", MOONLET_CT_SENML_JSON}, {"senml_cbor", MOONLET_CT_SENML_CBOR},
};

static const luaL_Reg funcs[] = {
    {"resource", l_resource}, {"notify", l_notify}, {"sleep", l_sleep}, {"wait", l_wait},
    {"signal", l_signal}, {"after", l_after}, {"every", l_every}, {"log", l_log},
    {"now", l_now}, {"conf", l_conf}, {"code", l_code}, {"code_str", l_code_str}, {NULL, NULL},
};

/* Build the module; leave it in the registry as "moonlet" (require returns it) and set
 * the metatables of resources, timers and requests. Returns 0. */
int
lib_open(lua_State *L, struct script *sc)
{
    luaL_openlibs(L);           /* the sandbox picks from these (sandbox.c) */
    luaL_newmetatable(L, "moonlet.resource");
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, res_notify);
    lua_setfield(L, -2, "notify");
    lua_pushcfunction(L, res_remove);
    lua_setfield(L, -2, "remove");
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_newmetatable(L, "moonlet.timer");
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, timer_cancel);
    lua_setfield(L, -2, "cancel");
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    lreq_metatable(L);

    luaL_newlib(L, funcs);
    for (size_t i = 0; i < sizeof codes / sizeof *codes; i++) {
        lua_pushinteger(L, codes[i].value);
        lua_setfield(L, -2, codes[i].name);
    }
    lua_createtable(L, 0, (int)(sizeof cts / sizeof *cts));
    for (size_t i = 0; i < sizeof cts / sizeof *cts; i++) {
        lua_pushinteger(L, cts[i].value);
        lua_setfield(L, -2, cts[i].name);
    }
    lua_setfield(L, -2, "ct");
    ljson_open(L);
    lua_setfield(L, -2, "json");
    lcbor_open(L);
    lua_setfield(L, -2, "cbor");
    lua_newtable(L);
    lua_setfield(L, -2, "state");
    lua_pushstring(L, sc->dir);
    lua_setfield(L, -2, "script_dir");
    lua_setfield(L, LUA_REGISTRYINDEX, "moonlet");
    lua_pushcfunction(L, l_print);
    lua_setfield(L, LUA_REGISTRYINDEX, "moonlet.print");
    return 0;
}
