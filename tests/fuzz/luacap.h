/*
 * luacap.h -- for the Lua decoders' harnesses: a state whose allocator counts and caps like
 * a script's lua.memory (lua/runtime.c), keeping the peak, and the decoders' contract for
 * untrusted data: a value, or nil and a message -- never an error, nothing else left.
 */
#ifndef LUACAP_H
#define LUACAP_H

#include <string.h>

#include "../../lua/runtime.h"
#include "fuzz.h"

struct cap {
    size_t used, limit, peak;
};

static void *
cap_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct cap *c = ud;
    size_t old = ptr ? osize : 0;
    void *p;

    if (nsize == 0) {
        free(ptr);
        c->used -= old;
        return NULL;
    }
    if (nsize > old && c->used - old + nsize > c->limit)
        return NULL;
    if ((p = realloc(ptr, nsize)) == NULL)
        return NULL;
    c->used = c->used - old + nsize;
    if (c->used > c->peak)
        c->peak = c->used;
    return p;
}

/* What one decode gave: 1 a value (left on the stack), 0 an error (its message kept). */
struct outcome {
    int ok;
    char err[128];
};

/* The function at stack index fn, called on the value at index arg: checks the contract and
 * leaves the value, or nothing, on the stack. */
static struct outcome
call(lua_State *L, int fn, int arg)
{
    struct outcome o = {0, ""};
    int top = lua_gettop(L), n;

    lua_pushvalue(L, fn);
    lua_pushvalue(L, arg);
    CHECK(lua_pcall(L, 1, LUA_MULTRET, 0) == LUA_OK);
    n = lua_gettop(L) - top;
    CHECK(n == 1 || (n == 2 && lua_isnil(L, -2) && lua_type(L, -1) == LUA_TSTRING));
    o.ok = n == 1;
    if (!o.ok) {
        snprintf(o.err, sizeof o.err, "%s", lua_tostring(L, -1));
        lua_settop(L, top);
    }
    return o;
}

#endif
