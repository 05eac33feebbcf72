/*
 * json_fuzz.c -- libFuzzer harness for moonlet.json.decode (lua-cjson behind lua/cbor.c) in a
 * Lua state capped like a script's: a value or nil and a message, never an error, and no leak
 * (lua-cjson leaks its buffer on a memory error: the wrapper must keep it from ever having one).
 */
#include <stdint.h>

#include "luacap.h"

#define CAP (8u << 20) /* lua.memory of the roomy run */
#define MEMORY_ERROR "JSON: not enough memory"

/* Decode under a cap of `room` bytes beyond what the state, the module and the input take;
 * a success encodes again. */
static struct outcome
decode(const uint8_t *data, size_t size, size_t room)
{
    struct cap c = {0, CAP, 0};
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
