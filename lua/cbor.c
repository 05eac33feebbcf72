/*
 * cbor.c -- moonlet.cbor (RFC 8949) over libcbor, made safe for untrusted payloads: decoding
 * allocates only Lua memory (lua.memory), at most a fixed multiple of the input, nests at most
 * CBOR_DEPTH deep, and answers nil, err for bad data. Tagged items (§3.4) are dropped to their
 * content or, on request (and in req.body), kept as moonlet.cbor.tagged tables that encode
 * back to the same tag.
 */
#include <cbor.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "codec.h"
#include "linkparse.h"
#include "runtime.h"

#define CBOR_DEPTH CODEC_DEPTH
/* Lua does not seed its hash of numbers: keys chosen to share one chain would make
 * decoding a map quadratic (20,000 multiples of 32767: 1.8 s). Integers within +-65536 can
 * only share a chain by a bounded amount; other numbers are limited per map. */
#define CBOR_SMALL_KEY 65536
#define CBOR_WIDE_KEYS 256
#define TAGGED "moonlet.cbor.tagged" /* the metatable of a kept tag: {tag =, value =, bytes =} */

/* ---- encoding --------------------------------------------------------------------------
 * Integers in their shortest form (§4.2.1); a table is an array when it is a sequence 1..n,
 * else a map; a string is a text string when it is UTF-8, else a byte string (§3.1: major
 * type 3 is UTF-8, §5.3.1: an item breaking that is invalid). The encoder runs in a
 * protected call and may raise anywhere: what it holds is listed, and freed by the caller. */

struct enc {
    lua_State *L;
    unsigned char *buf;                      /* the serialised item */
    int nheld;
    cbor_item_t *held[2 * (CBOR_DEPTH + 2)]; /* a container per level, and a map's key */
};

static void
hold(struct enc *e, cbor_item_t *item)
{
    e->held[e->nheld++] = item;
}

static cbor_item_t *
release(struct enc *e)
{
    return e->held[--e->nheld];
}

static cbor_item_t *
built(struct enc *e, cbor_item_t *item)
{
    if (item == NULL)
        luaL_error(e->L, "out of memory");
    return item;
}

static cbor_item_t *
uint_item(uint64_t v)
{
    return v <= 0xff         ? cbor_build_uint8((uint8_t)v)
           : v <= 0xffff     ? cbor_build_uint16((uint16_t)v)
           : v <= 0xffffffff ? cbor_build_uint32((uint32_t)v)
                             : cbor_build_uint64(v);
}

static cbor_item_t *
negint_item(uint64_t v) /* encodes -1 - v */
{
    return v <= 0xff         ? cbor_build_negint8((uint8_t)v)
           : v <= 0xffff     ? cbor_build_negint16((uint16_t)v)
           : v <= 0xffffffff ? cbor_build_negint32((uint32_t)v)
                             : cbor_build_negint64(v);
}

static int
is_sequence(lua_State *L, int idx, size_t *n)
{
    size_t len = lua_rawlen(L, idx), count = 0;

    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        count++;
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 ||
            (size_t)lua_tointeger(L, -1) > len) {
            lua_pop(L, 1);
            return 0;
        }
    }
    *n = len;
    return count == len && len > 0;
}

/* Whether the value at idx has the metatable moonlet.cbor.tagged */
static int
is_tagged(lua_State *L, int idx)
{
    int r;

    if (!lua_getmetatable(L, idx))
        return 0;
    luaL_getmetatable(L, TAGGED);
    r = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return r;
}

static cbor_item_t *encode(struct enc *e, int idx, int depth);

static cbor_item_t *
encode_string(struct enc *e, int idx, int bytes)
{
    size_t n;
    const char *s = lua_tolstring(e->L, idx, &n);

    if (bytes || linkparse_utf8_prefix(s, n) < n)
        return built(e, cbor_build_bytestring((cbor_data)s, n));
    return built(e, cbor_build_stringn(s, n));
}

/* {tag = N, value = v [, bytes = true]}: tag N (§3.4) over v; bytes makes a string v a byte
 * string. A tag number above 2^63-1 is the negative integer with its 64 bits. */
static cbor_item_t *
encode_tagged(struct enc *e, int idx, int depth)
{
    lua_State *L = e->L;
    cbor_item_t *content, *item;
    uint64_t tag;
    int bytes;

    lua_pushliteral(L, "tag");
    if (lua_rawget(L, idx) != LUA_TNUMBER || !lua_isinteger(L, -1))
        luaL_error(L, "a moonlet.cbor.tagged table needs an integer tag");
    tag = (uint64_t)lua_tointeger(L, -1);
    lua_pushliteral(L, "bytes");
    bytes = lua_rawget(L, idx) != LUA_TNIL && lua_toboolean(L, -1);
    lua_pushliteral(L, "value");
    if (lua_rawget(L, idx) == LUA_TSTRING && bytes)
        content = encode_string(e, lua_gettop(L), 1);
    else
        content = encode(e, lua_gettop(L), depth + 1);
    lua_pop(L, 3);
    item = cbor_build_tag(tag, content);    /* holds its own reference to content */
    cbor_decref(&content);
    return built(e, item);
}

static cbor_item_t *
encode_array(struct enc *e, int idx, size_t n, int depth)
{
    cbor_item_t *item = built(e, cbor_new_definite_array(n));

    hold(e, item);
    for (size_t i = 1; i <= n; i++) {
        cbor_item_t *v;
        int ok;

        lua_rawgeti(e->L, idx, (lua_Integer)i);
        v = encode(e, lua_gettop(e->L), depth + 1);
        lua_pop(e->L, 1);
        ok = cbor_array_push(item, v);      /* takes a reference of its own */
        cbor_decref(&v);
        if (!ok)
            luaL_error(e->L, "out of memory");
    }
    return release(e);
}

static cbor_item_t *
encode_map(struct enc *e, int idx, int depth)
{
    lua_State *L = e->L;
    cbor_item_t *item;
    size_t n = 0;

    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        n++;
    }
    item = built(e, cbor_new_definite_map(n));
    hold(e, item);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        cbor_item_t *k = encode(e, lua_gettop(L) - 1, depth + 1), *v;
        int ok;

        hold(e, k);
        v = encode(e, lua_gettop(L), depth + 1);
        release(e);
        lua_pop(L, 1);
        ok = cbor_map_add(item, (struct cbor_pair){.key = k, .value = v});
        cbor_decref(&k);
        cbor_decref(&v);
        if (!ok)
            luaL_error(L, "out of memory");
    }
    return release(e);
}

static cbor_item_t *
encode(struct enc *e, int idx, int depth)
{
    lua_State *L = e->L;

    if (depth > CBOR_DEPTH)
        luaL_error(L, "nested deeper than %d (a cycle?)", CBOR_DEPTH);
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        return built(e, cbor_new_null());
    case LUA_TBOOLEAN:
        return built(e, cbor_build_bool(lua_toboolean(L, idx)));
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            lua_Integer v = lua_tointeger(L, idx);

            return built(e, v >= 0 ? uint_item((uint64_t)v)
                                   : negint_item((uint64_t)(-(v + 1))));
        } else {
            double d = lua_tonumber(L, idx);

            return built(e, (double)(float)d == d ? cbor_build_float4((float)d)
                                                  : cbor_build_float8(d));
        }
    case LUA_TSTRING:
        return encode_string(e, idx, 0);
    case LUA_TTABLE: {
        size_t n;

        luaL_checkstack(L, 6, "cbor");
        if (is_tagged(L, idx))
            return encode_tagged(e, idx, depth);
        if (is_sequence(L, idx, &n))
            return encode_array(e, idx, n, depth);
        return encode_map(e, idx, depth);
    }
    default:
        return luaL_error(L, "cannot encode a %s", luaL_typename(L, idx)), NULL;
    }
}

/* encode(value) -> its CBOR, serialised into a string; on the stack: e, value */
static int
encode_protected(lua_State *L)
{
    struct enc *e = lua_touserdata(L, 1);
    cbor_item_t *item = encode(e, 2, 0);
    size_t size = 0, len = cbor_serialize_alloc(item, &e->buf, &size);

    cbor_decref(&item);
    if (len == 0)
        return luaL_error(L, "out of memory");
    lua_pushlstring(L, (const char *)e->buf, len);
    return 1;
}

int
lcbor_encode(lua_State *L)
{
    struct enc e = {.L = L, .buf = NULL, .nheld = 0};
    int rc;

    luaL_checkany(L, 1);
    lua_settop(L, 1);
    lua_pushcfunction(L, encode_protected);
    lua_pushlightuserdata(L, &e);
    lua_pushvalue(L, 1);
    rc = lua_pcall(L, 2, 1, 0);
    free(e.buf);
    while (e.nheld > 0) {
        cbor_item_t *item = release(&e);

        cbor_decref(&item);
    }
    if (rc == LUA_OK)
        return 1;
    if (rc == LUA_ERRMEM)
        return luaL_error(L, "moonlet.cbor.encode: out of memory");
    return luaL_error(L, "moonlet.cbor.encode: %s", lua_tostring(L, -1));
}

/* ---- decoding: libcbor's streaming decoder reads one head at a time, we build the value -- */

enum head_kind {
    H_UINT,
    H_NEGINT,
    H_BYTES,
    H_TEXT,
    H_BYTES_INDEF,
    H_TEXT_INDEF,
    H_ARRAY,
    H_ARRAY_INDEF,
    H_MAP,
    H_MAP_INDEF,
    H_TAG,
    H_FLOAT,
    H_BOOL,
    H_NIL,
    H_BREAK
};

/* The head of one data item (§3) as cbor_stream_decode reports it, without allocating. */
struct head {
    enum head_kind kind;
    uint64_t n; /* integer, length, count, tag number or boolean */
    double d;
    cbor_data p; /* a definite string's bytes, inside the input */
};

static void
head_set(void *ctx, enum head_kind kind, uint64_t n)
{
    struct head *h = ctx;

    h->kind = kind;
    h->n = n;
}

#define HEAD_NUM(name, type, kind)                                                                 \
    static void name(void *ctx, type v)                                                            \
    {                                                                                              \
        head_set(ctx, kind, (uint64_t)v);                                                          \
    }
#define HEAD_NONE(name, kind)                                                                      \
    static void name(void *ctx)                                                                    \
    {                                                                                              \
        head_set(ctx, kind, 0);                                                                    \
    }
HEAD_NUM(on_uint8, uint8_t, H_UINT)
HEAD_NUM(on_uint16, uint16_t, H_UINT)
HEAD_NUM(on_uint32, uint32_t, H_UINT)
HEAD_NUM(on_uint64, uint64_t, H_UINT)
HEAD_NUM(on_negint8, uint8_t, H_NEGINT)
HEAD_NUM(on_negint16, uint16_t, H_NEGINT)
HEAD_NUM(on_negint32, uint32_t, H_NEGINT)
HEAD_NUM(on_negint64, uint64_t, H_NEGINT)
HEAD_NUM(on_array, size_t, H_ARRAY)
HEAD_NUM(on_map, size_t, H_MAP)
HEAD_NUM(on_tag, uint64_t, H_TAG)
HEAD_NUM(on_bool, bool, H_BOOL)
HEAD_NONE(on_bytes_indef, H_BYTES_INDEF)
HEAD_NONE(on_text_indef, H_TEXT_INDEF)
HEAD_NONE(on_array_indef, H_ARRAY_INDEF)
HEAD_NONE(on_map_indef, H_MAP_INDEF)
HEAD_NONE(on_nil, H_NIL)
HEAD_NONE(on_break, H_BREAK)

static void
on_bytes(void *ctx, cbor_data p, size_t n)
{
    head_set(ctx, H_BYTES, n);
    ((struct head *)ctx)->p = p;
}

static void
on_text(void *ctx, cbor_data p, size_t n)
{
    head_set(ctx, H_TEXT, n);
    ((struct head *)ctx)->p = p;
}

static void
on_float(void *ctx, float f)
{
    head_set(ctx, H_FLOAT, 0);
    ((struct head *)ctx)->d = f;
}

static void
on_double(void *ctx, double d)
{
    head_set(ctx, H_FLOAT, 0);
    ((struct head *)ctx)->d = d;
}

static const struct cbor_callbacks heads = {
    .uint8 = on_uint8,
    .uint16 = on_uint16,
    .uint32 = on_uint32,
    .uint64 = on_uint64,
    .negint8 = on_negint8,
    .negint16 = on_negint16,
    .negint32 = on_negint32,
    .negint64 = on_negint64,
    .byte_string = on_bytes,
    .byte_string_start = on_bytes_indef,
    .string = on_text,
    .string_start = on_text_indef,
    .array_start = on_array,
    .indef_array_start = on_array_indef,
    .map_start = on_map,
    .indef_map_start = on_map_indef,
    .tag = on_tag,
    .float2 = on_float,
    .float4 = on_float,
    .float8 = on_double,
    .undefined = on_nil,
    .null = on_nil,
    .boolean = on_bool,
    .indef_break = on_break,
};

struct dec {
    lua_State *L;
    cbor_data s;
    size_t len, pos;
    size_t promised; /* input bytes that pre-sized tables still count on for their elements */
    int keep_tags;
};

static void
dec_fail(struct dec *d, size_t at, const char *what)
{
    lua_pushfstring(d->L, "CBOR: %s at byte %I", what, (lua_Integer)at);
    lua_error(d->L);
}

/* libcbor 0.8 rejects tags 6..20 in the initial byte; §3.4 has every tag number well-formed. */
static void
head_next(struct dec *d, struct head *h)
{
    size_t at = d->pos;
    struct cbor_decoder_result r;

    if (at == d->len)
        dec_fail(d, at, "unexpected end of input");
    if (d->s[at] >= 0xc6 && d->s[at] <= 0xd4) {
        head_set(h, H_TAG, d->s[at] - 0xc0u);
        d->pos++;
        return;
    }
    r = cbor_stream_decode(d->s + at, d->len - at, &heads, h);
    if (r.status == CBOR_DECODER_NEDATA)
        dec_fail(d, at, "truncated item");
    if (r.status != CBOR_DECODER_FINISHED)
        dec_fail(d, at, "malformed item");
    d->pos += r.read;
}

/* §3.2.1: the "break" stop code ends an indefinite-length item. */
static int
at_break(struct dec *d)
{
    if (d->pos < d->len && d->s[d->pos] == 0xff) {
        d->pos++;
        return 1;
    }
    return 0;
}

/* Slots to pre-size for a declared count: no more than the rest of the input can fill (an
 * element takes at least `each` bytes) beyond what enclosing tables already count on, so a
 * forged count costs nothing and nested ones cannot add up. */
static size_t
presize(struct dec *d, uint64_t count, size_t each)
{
    size_t left = d->len - d->pos, n;

    n = left > d->promised ? (left - d->promised) / each : 0;
    if (count < n)
        n = (size_t)count;
    if (n > INT_MAX / 2)
        n = INT_MAX / 2;
    d->promised += n * each;
    return n;
}

static void item(struct dec *d, int depth);

/* §3.1: integers reach 2^64; one beyond Lua's integers is a float, as an overflowing decimal
 * numeral is in Lua (manual §3.1). */
static void
push_int(lua_State *L, uint64_t v, int negative)
{
    if (v <= (uint64_t)LUA_MAXINTEGER)
        lua_pushinteger(L, negative ? -1 - (lua_Integer)v : (lua_Integer)v);
    else
        lua_pushnumber(L, negative ? -1.0 - (lua_Number)v : (lua_Number)v);
}

/* §3.2.3: the chunks of an indefinite-length string are definite strings of its major type. */
static void
push_chunks(struct dec *d, enum head_kind chunk)
{
    luaL_Buffer b;
    struct head h;

    luaL_buffinit(d->L, &b);
    while (!at_break(d)) {
        size_t at = d->pos;

        head_next(d, &h);
        if (h.kind != chunk)
            dec_fail(d, at, "not a chunk of the indefinite-length string");
        luaL_addlstring(&b, (const char *)h.p, (size_t)h.n);
    }
    luaL_pushresult(&b);
}

static void
push_array(struct dec *d, const struct head *h, int depth)
{
    int indef = h->kind == H_ARRAY_INDEF;
    size_t pre = indef ? 0 : presize(d, h->n, 1);

    lua_createtable(d->L, (int)pre, 0);
    for (uint64_t i = 1; indef || i <= h->n; i++) {
        if (indef && at_break(d))
            break;
        item(d, depth);
        lua_rawseti(d->L, -2, (lua_Integer)i);
        if (i <= pre)
            d->promised--;
    }
}

/* A key Lua cannot hold (null and undefined are nil; NaN) is skipped with its value. */
static void
set_pair(lua_State *L)
{
    int nan = lua_type(L, -2) == LUA_TNUMBER && lua_tonumber(L, -2) != lua_tonumber(L, -2);

    if (lua_isnil(L, -2) || nan)
        lua_pop(L, 2);
    else
        lua_rawset(L, -3);
}

/* Is the key at idx a number outside +-CBOR_SMALL_KEY (a float, or a large integer)? */
static int
wide_key(lua_State *L, int idx)
{
    lua_Integer k;

    if (lua_type(L, idx) != LUA_TNUMBER)
        return 0;
    if (!lua_isinteger(L, idx))
        return 1;
    k = lua_tointeger(L, idx);
    return k > CBOR_SMALL_KEY || k < -CBOR_SMALL_KEY;
}

static void
push_map(struct dec *d, const struct head *h, int depth)
{
    int indef = h->kind == H_MAP_INDEF;
    size_t pre = indef ? 0 : presize(d, h->n, 2);
    unsigned wide = 0;

    lua_createtable(d->L, 0, (int)pre);
    for (uint64_t i = 0; indef || i < h->n; i++) {
        size_t at;

        if (indef && at_break(d))
            break;
        at = d->pos;
        item(d, depth);
        if (wide_key(d->L, -1) && ++wide > CBOR_WIDE_KEYS)
            dec_fail(d, at, lua_pushfstring(d->L, "more than %d keys in one map are numbers "
                                            "beyond +-%d", CBOR_WIDE_KEYS, CBOR_SMALL_KEY));
        item(d, depth);
        set_pair(d->L);
        if (i < pre)
            d->promised -= 2;
    }
}

static void
push_value(struct dec *d, const struct head *h, size_t at, int depth)
{
    switch (h->kind) {
    case H_UINT:
    case H_NEGINT:
        push_int(d->L, h->n, h->kind == H_NEGINT);
        break;
    case H_BYTES:
    case H_TEXT:
        lua_pushlstring(d->L, (const char *)h->p, (size_t)h->n);
        break;
    case H_BYTES_INDEF:
    case H_TEXT_INDEF:
        push_chunks(d, h->kind == H_BYTES_INDEF ? H_BYTES : H_TEXT);
        break;
    case H_ARRAY:
    case H_ARRAY_INDEF:
    case H_MAP:
    case H_MAP_INDEF:
        if (depth >= CBOR_DEPTH)
            dec_fail(d, at, lua_pushfstring(d->L, "nested deeper than %d", CBOR_DEPTH));
        if (h->kind == H_ARRAY || h->kind == H_ARRAY_INDEF)
            push_array(d, h, depth + 1);
        else
            push_map(d, h, depth + 1);
        break;
    case H_FLOAT:
        lua_pushnumber(d->L, h->d);
        break;
    case H_BOOL:
        lua_pushboolean(d->L, (int)h->n);
        break;
    case H_NIL:
        lua_pushnil(d->L);
        break;
    default: /* a break; tags never get here */
        dec_fail(d, at, "unexpected break");
    }
}

/* The metatable of kept tags, pushed (made the first time). */
static void
push_tagged_mt(lua_State *L)
{
    luaL_newmetatable(L, TAGGED);   /* its __name is TAGGED */
}

/* A kept tag (§3.4): {tag = N, value = content}, with bytes = true when the content is a
 * byte string, so that encoding writes the same major type back. A tag is a level of
 * nesting: the table holds its content. */
static void
push_tagged(struct dec *d, uint64_t tag, size_t at, int depth)
{
    lua_State *L = d->L;
    int bytes;

    if (depth >= CBOR_DEPTH)
        dec_fail(d, at, lua_pushfstring(L, "nested deeper than %d", CBOR_DEPTH));
    bytes = d->pos < d->len && d->s[d->pos] >> 5 == 2;
    lua_createtable(L, 0, bytes ? 3 : 2);
    lua_pushinteger(L, (lua_Integer)tag);
    lua_setfield(L, -2, "tag");
    item(d, depth + 1);
    lua_setfield(L, -2, "value");
    if (bytes) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "bytes");
    }
    push_tagged_mt(L);
    lua_setmetatable(L, -2);
}

/* One data item, pushed. A tag is kept (keep_tags), or read and dropped: the value is then
 * the tagged item's, and a chain of tags costs neither stack nor memory. */
static void
item(struct dec *d, int depth)
{
    struct head h;
    size_t at;

    do {
        at = d->pos;
        head_next(d, &h);
        if (h.kind == H_TAG && d->keep_tags) {
            push_tagged(d, h.n, at, depth);
            return;
        }
    } while (h.kind == H_TAG);
    push_value(d, &h, at, depth);
}

/* Run in a protected call: data errors raise a message, a memory error LUA_ERRMEM. */
static int
decode_protected(lua_State *L)
{
    struct dec *d = lua_touserdata(L, 1);

    /* a table and a key per level, the value, a string buffer */
    if (!lua_checkstack(L, 2 * CBOR_DEPTH + 8))
        dec_fail(d, 0, "not enough memory (lua.memory)");
    item(d, 0);
    if (d->pos != d->len)
        dec_fail(d, d->pos, "trailing bytes after the item");
    return 1;
}

static int
format_protected(lua_State *L)
{
    lua_pushfstring(L, (const char *)lua_touserdata(L, 1), lua_tointeger(L, 2));
    return 1;
}

void
codec_push_message(lua_State *L, const char *fmt, lua_Integer n)
{
    lua_pushcfunction(L, format_protected);
    lua_pushlightuserdata(L, (void *)fmt);
    lua_pushinteger(L, n);
    lua_pcall(L, 2, 1, 0);
}

enum codec_status
lcbor_decode_value(lua_State *L, const char *s, size_t len, int keep_tags)
{
    struct dec d = {.L = L, .s = (cbor_data)s, .len = len, .keep_tags = keep_tags};
    int rc;

    lua_pushcfunction(L, decode_protected);
    lua_pushlightuserdata(L, &d);
    rc = lua_pcall(L, 1, 1, 0);
    if (rc == LUA_OK)
        return CODEC_OK;
    if (rc == LUA_ERRMEM) {
        lua_pop(L, 1);
        codec_push_message(L, "CBOR: not enough memory (lua.memory) at byte %I", (lua_Integer)d.pos);
        return CODEC_NOMEM;
    }
    return CODEC_MALFORMED;
}

/* decode(s [, {tags = true}]) -> value, or nil and "CBOR: what at byte N" */
int
lcbor_decode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len); /* misuse raises; data never does */
    int keep = 0;

    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_getfield(L, 2, "tags");
        keep = lua_toboolean(L, -1);
    }
    lua_settop(L, 1);
    if (lcbor_decode_value(L, s, len, keep) == CODEC_OK)
        return 1;
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
}

/* moonlet.cbor.tag(n, v) -> {tag = n, value = v}, which encodes as tag n over v */
static int
cbor_tag(lua_State *L)
{
    luaL_checkinteger(L, 1);
    lua_settop(L, 2);
    lua_createtable(L, 0, 2);
    lua_pushvalue(L, 1);
    lua_setfield(L, -2, "tag");
    lua_pushvalue(L, 2);
    lua_setfield(L, -2, "value");
    push_tagged_mt(L);
    lua_setmetatable(L, -2);
    return 1;
}

int
lcbor_open(lua_State *L)
{
    lua_createtable(L, 0, 4);
    lua_pushcfunction(L, lcbor_encode);
    lua_setfield(L, -2, "encode");
    lua_pushcfunction(L, lcbor_decode);
    lua_setfield(L, -2, "decode");
    lua_pushcfunction(L, cbor_tag);
    lua_setfield(L, -2, "tag");
    push_tagged_mt(L);
    lua_setfield(L, -2, "tagged");
    return 1;
}
