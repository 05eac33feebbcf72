/*
 * cbor_fuzz.c -- libFuzzer harness for moonlet.cbor.decode (lua/cbor.c, RFC 8949) in a Lua
 * state capped like a script's: it returns a value or nil and a message and never raises,
 * stays within a fixed multiple of the input, and what it returns encodes and decodes again.
 */
#include <stdint.h>

#include "../../lua/codec.h"
#include "luacap.h"

#define CAP (8u << 20)    /* lua.memory of the roomy run */
#define PER_BYTE 128      /* Lua memory a decode may take per input byte, at most */
#define SLACK (16u << 10) /* and its stack and first tables */
#define MEMORY_ERROR "CBOR: not enough memory"

/* moonlet.cbor.decode(s, {tags = true}), as req.body decodes CBOR */
static int
decode_tags(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);

    lua_settop(L, 1);
    if (lcbor_decode_value(L, s, n, 1) == CODEC_OK)
        return 1;
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
}

/* With tags kept, decoding what encode wrote and encoding it again gives the same item: the
 * same bytes, up to the order of map entries. */
static void
stable(lua_State *L, int value)
{
    size_t n1, n2;
    const char *e1, *e2;
    long count[256] = {0};

    lua_pushcfunction(L, lcbor_encode);
    lua_pushvalue(L, value);
    CHECK(lua_pcall(L, 1, 1, 0) == LUA_OK);
    e1 = lua_tolstring(L, -1, &n1);
    lua_pushcfunction(L, decode_tags);
    lua_pushvalue(L, -2);
    CHECK(lua_pcall(L, 1, 2, 0) == LUA_OK);
    CHECKF(lua_isnil(L, -1), "what encode wrote does not decode: %s", lua_tostring(L, -1));
    lua_pop(L, 1);
    lua_pushcfunction(L, lcbor_encode);
    lua_insert(L, -2);
    CHECK(lua_pcall(L, 1, 1, 0) == LUA_OK);
    e2 = lua_tolstring(L, -1, &n2);
    /* the same bytes, but for the order of map entries (Lua's iteration order) */
    CHECKF(n1 == n2, "encode(decode(encode(v))) has %zu bytes, not %zu", n2, n1);
    for (size_t i = 0; i < n1; i++)
        count[(unsigned char)e1[i]]++, count[(unsigned char)e2[i]]--;
    for (int i = 0; i < 256; i++)
        CHECKF(count[i] == 0, "encode(decode(encode(v))) differs: byte %02x", i);
    lua_pop(L, 2);
}

/* Decode under a cap of `room` bytes beyond what the state and the input take; tags: kept. */
static struct outcome
decode(const uint8_t *data, size_t size, size_t room, int roundtrip, int tags)
{
    struct cap c = {0, CAP, 0};
    lua_State *L = lua_newstate(cap_alloc, &c);
    struct outcome o;
    size_t base, peak;

    CHECK(L != NULL);
    lua_pushlstring(L, (const char *)data, size);   /* 1: the input */
    lua_pushcfunction(L, tags ? decode_tags : lcbor_decode); /* 2 */
    lua_pushliteral(L, "");
    call(L, 2, 3); /* a warm state, as a script's: its stack and call frames made */
    lua_settop(L, 2);
    lua_gc(L, LUA_GCCOLLECT);
    base = c.peak = c.used;
    c.limit = base + room;
    o = call(L, 2, 1);                              /* 3: the value, if any */
    peak = c.peak - base;
    if (getenv("CBOR_FUZZ_PEAK"))
        fprintf(stderr, "%zu input bytes: %zu bytes of Lua memory (%.1f per byte)\n", size, peak,
                size ? (double)peak / (double)size : 0.0);
    if (roundtrip) {
        CHECK(peak <= PER_BYTE * size + SLACK);
        if (o.ok) {
            lua_pushcfunction(L, lcbor_encode);
            lua_pushvalue(L, 3);
            CHECK(lua_pcall(L, 1, 1, 0) == LUA_OK);
            CHECK(call(L, 2, 4).ok);
            if (tags)
                stable(L, 3);
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
    int tags = size > 0 && (data[0] & 1);   /* half the inputs as req.body reads them */
    struct outcome roomy = decode(data, size, CAP, 1, tags), tight;
    size_t room = size ? size * (data[size / 2] % 100u) : 0;

    /* short of memory, a decode gives the same answer or says memory ran out */
    tight = decode(data, size, room, 0, tags);
    if (!memory_error(tight.err)) {
        CHECK(tight.ok == roomy.ok);
        CHECK(strcmp(tight.err, roomy.err) == 0);
    }
    return 0;
}
