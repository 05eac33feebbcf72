/*
 * json_fuzz.c -- libFuzzer harness for moonlet.json.decode (lua/json.c: yajl's streaming
 * parser building Lua values) in a Lua state capped like a script's: a value or nil and a
 * message, never an error; no leak, neither of Lua memory nor of yajl's (its handle is freed
 * on every path, a memory error unwinding through it included); at most PER_BYTE bytes of Lua
 * memory per input byte; what it returns and lua-cjson encodes decodes again.
 */
#include <stdint.h>

#include "luacap.h"

#define CAP (8u << 20)    /* lua.memory of the roomy run */
#define PER_BYTE 128      /* Lua memory a decode may take per input byte, at most */
#define SLACK (16u << 10) /* and its stack and first tables */
#define MEMORY_ERROR "JSON: not enough memory"

/* Decode under a cap of `room` bytes beyond what the state, the module and the input take;
 * a success encodes again, and what lua-cjson writes decodes again. */
static struct outcome
decode(const uint8_t *data, size_t size, size_t room, int roundtrip)
{
    struct cap c = {0, CAP, 0};
    lua_State *L = lua_newstate(cap_alloc, &c);
    struct outcome o;
    size_t base, peak;

    CHECK(L != NULL);
    ljson_open(L);                /* 1: the module */
    lua_getfield(L, 1, "decode"); /* 2 */
    lua_getfield(L, 1, "encode"); /* 3 */
    lua_pushlstring(L, (const char *)data, size);
    lua_pushliteral(L, "[]");
    call(L, 2, 5); /* a warm state, as a script's: its stack and call frames made */
    lua_settop(L, 4);
    lua_gc(L, LUA_GCCOLLECT);
    base = c.peak = c.used;
    c.limit = base + room;
    o = call(L, 2, 4); /* 5: the value, if any */
    peak = c.peak - base;
    if (getenv("JSON_FUZZ_PEAK"))
        fprintf(stderr, "%zu input bytes: %zu bytes of Lua memory (%.1f per byte)\n", size, peak,
                size ? (double)peak / (double)size : 0.0);
    if (roundtrip) {
        CHECKF(peak <= PER_BYTE * size + SLACK, "%zu bytes for %zu", peak, size);
        c.limit = CAP;
        lua_pushvalue(L, 3);
        lua_pushvalue(L, 5);
        /* may fail: NaN, infinities, sparse arrays; must not crash */
        if (o.ok && lua_pcall(L, 1, 1, 0) == LUA_OK) {
            struct outcome again = call(L, 2, lua_gettop(L));

            CHECKF(again.ok, "lua-cjson's encoding does not decode: %s", again.err);
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
