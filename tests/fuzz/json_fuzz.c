/*
 * json_fuzz.c -- libFuzzer harness for moonlet.json.decode (lua-cjson behind lua/cbor.c) in a
 * Lua state capped like a script's: a value or nil and a message, never an error, and no leak
 * (lua-cjson leaks its buffer on a memory error: the wrapper must keep it from ever having one).
 */
#include "../../lua/runtime.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "check failed: %s (%s:%d)\n", #c, __FILE__, __LINE__);                 \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define CAP (8u << 20) /* lua.memory of the roomy run */
#define MEMORY_ERROR "JSON: not enough memory"

/* The state's allocator: the runtime's accounting (lua/runtime.c). */
struct cap {
    size_t used, limit;
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
    return p;
}

/* What one decode gave: 1 a value (left on the stack), 0 an error (its message kept). */
struct outcome {
    int ok;
    char err[128];
};

/* f(arg) in L, f at index fn: checks the contract (a value, or nil and a string; never an
 * error; nothing else left on the stack) and leaves the value, or nothing, on the stack. */
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

/* Decode under a cap of `room` bytes beyond what the state, the module and the input take;
 * a success encodes again. */
static struct outcome
decode(const uint8_t *data, size_t size, size_t room)
{
    struct cap c = {0, CAP};
    lua_State *L = lua_newstate(cap_alloc, &c);
    struct outcome o;

    CHECK(L != NULL);
    ljson_open(L);                /* 1: the module */
    lua_getfield(L, 1, "decode"); /* 2 */
    lua_getfield(L, 1, "encode"); /* 3 */
    lua_pushlstring(L, (const char *)data, size);
    lua_pushliteral(L, "[]");
    call(L, 2, 5); /* a warm state, as a script's: its stack and call frames made */
    lua_settop(L, 4);
    lua_gc(L, LUA_GCCOLLECT);
    c.limit = c.used + room;
    o = call(L, 2, 4);
    if (o.ok) {
        c.limit = CAP;
        lua_pushvalue(L, 3);
        lua_pushvalue(L, 5);
        lua_pcall(L, 1, 1, 0); /* may fail: NaN, sparse arrays; must not crash */
    }
    lua_close(L);
    CHECK(c.used == 0);
    return o;
}

/* Ours names the byte; Lua's own stands in when even that message finds no memory. */
static int
memory_error(const char *err)
{
    return strncmp(err, MEMORY_ERROR, strlen(MEMORY_ERROR)) == 0 ||
           strcmp(err, "not enough memory") == 0;
}

/* The libFuzzer entry point; declared here for -Wmissing-prototypes. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct outcome roomy = decode(data, size, CAP), tight;
    size_t room = size ? size * (data[size / 2] % 100u) : 0;

    /* short of memory, a decode gives the same answer or says memory ran out */
    tight = decode(data, size, room);
    if (!memory_error(tight.err)) {
        CHECK(tight.ok == roomy.ok);
        CHECK(strcmp(tight.err, roomy.err) == 0);
    }
    return 0;
}
