/*
 * cbor_fuzz.c -- libFuzzer harness for moonlet.cbor.decode (lua/cbor.c, RFC 8949) in a Lua
 * state capped like a script's: it returns a value or nil and a message and never raises,
 * stays within a fixed multiple of the input, and what it returns encodes and decodes again.
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

#define CAP (8u << 20)    /* lua.memory of the roomy run */
#define PER_BYTE 128      /* Lua memory a decode may take per input byte, at most */
#define SLACK (16u << 10) /* and its stack and first tables */
#define MEMORY_ERROR "CBOR: not enough memory"

/* The state's allocator: the runtime's accounting (lua/runtime.c), with the peak kept. */
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

/* f(arg) in L: checks the contract (a value, or nil and a string; never an error; nothing
 * else left on the stack) and leaves the value, or nothing, on the stack. */
static struct outcome
call(lua_State *L, lua_CFunction f, int arg)
{
    struct outcome o = {0, ""};
    int top = lua_gettop(L), n;

    lua_pushcfunction(L, f);
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

/* Decode under a cap of `room` bytes beyond what the state and the input take. */
static struct outcome
decode(const uint8_t *data, size_t size, size_t room, int roundtrip)
{
    struct cap c = {0, CAP, 0};
    lua_State *L = lua_newstate(cap_alloc, &c);
    struct outcome o;
    size_t base, peak;

    CHECK(L != NULL);
    lua_pushlstring(L, (const char *)data, size);
    lua_pushliteral(L, "");
    call(L, lcbor_decode, 2); /* a warm state, as a script's: its stack and call frames made */
    lua_settop(L, 1);
    lua_gc(L, LUA_GCCOLLECT);
    base = c.peak = c.used;
    c.limit = base + room;
    o = call(L, lcbor_decode, 1);
    peak = c.peak - base;
    if (getenv("CBOR_FUZZ_PEAK"))
        fprintf(stderr, "%zu input bytes: %zu bytes of Lua memory (%.1f per byte)\n", size, peak,
                size ? (double)peak / (double)size : 0.0);
    if (roundtrip) {
        CHECK(peak <= PER_BYTE * size + SLACK);
        if (o.ok) {
            lua_pushcfunction(L, lcbor_encode);
            lua_pushvalue(L, 2);
            CHECK(lua_pcall(L, 1, 1, 0) == LUA_OK);
            CHECK(call(L, lcbor_decode, 3).ok);
        }
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
    struct outcome roomy = decode(data, size, CAP, 1), tight;
    size_t room = size ? size * (data[size / 2] % 100u) : 0;

    /* short of memory, a decode gives the same answer or says memory ran out */
    tight = decode(data, size, room, 0);
    if (!memory_error(tight.err)) {
        CHECK(tight.ok == roomy.ok);
        CHECK(strcmp(tight.err, roomy.err) == 0);
    }
    return 0;
}
