/*
 * json.c -- moonlet.json (RFC 8259): decoding over yajl's streaming parser, which hands us
 * each token so that we build the Lua value as we read (integers stay integers); made safe
 * for untrusted payloads like moonlet.cbor (lua/cbor.c). Encoding is lua-cjson's.
 *
 * Why yajl (Debian libyajl2, 2.1.0 with its CVE fixes): a callback parser that gives a
 * number's text, so each numeral becomes what the same numeral is in Lua -- `1` an integer,
 * `1.0`, `1e3` and integers beyond 64 bits floats -- and every value lives in Lua memory
 * from the start, counted in lua.memory and proportional to the input. jansson and json-c
 * build a tree of their own in malloc first (outside lua.memory, converted afterwards) and
 * read integers with rules of their own (jansson refuses one beyond 64 bits, json-c
 * saturates it); lua-cjson reads every number with strtod, so `1` became 1.0.
 */
#include <stdio.h>
#include <string.h>

#include <yajl/yajl_parse.h>

#include "codec.h"
#include "linkparse.h"
#include "runtime.h"

struct jdec {
    lua_State *L;
    yajl_handle h;
    const unsigned char *s;
    size_t len;
    int depth, max_depth;
    lua_Integer count[CODEC_DEPTH + 1]; /* per open level: elements so far; -1: an object */
    const char *why;                    /* what made a callback stop the parse (NULL: depth) */
};

/* A value is on top: into its array or object, or, at the top level, the result. */
static int
store(struct jdec *d)
{
    lua_Integer *n = &d->count[d->depth];

    if (d->depth == 0)
        return 1;
    if (*n < 0)
        lua_rawset(d->L, -3); /* object key value */
    else
        lua_rawseti(d->L, -2, ++*n); /* array value */
    return 1;
}

static int
on_null(void *ctx)
{
    lua_pushlightuserdata(((struct jdec *)ctx)->L, NULL); /* cjson.null, moonlet.json.null */
    return store(ctx);
}

static int
on_boolean(void *ctx, int b)
{
    lua_pushboolean(((struct jdec *)ctx)->L, b);
    return store(ctx);
}

/* The numeral as Lua reads it (manual §3.1): an integer unless it has a fraction or an
 * exponent or does not fit in 64 bits. The JSON grammar (RFC 8259 §6), which yajl's lexer
 * checks, is a subset of Lua's. */
static int
on_number(void *ctx, const char *s, size_t n)
{
    struct jdec *d = ctx;
    char buf[64];

    if (n < sizeof buf) {
        memcpy(buf, s, n);
        buf[n] = '\0';
        if (lua_stringtonumber(d->L, buf) == 0)
            goto bad;
        return store(d);
    }
    lua_pushlstring(d->L, s, n);
    if (lua_stringtonumber(d->L, lua_tostring(d->L, -1)) == 0)
        goto bad;
    lua_remove(d->L, -2);
    return store(d);
bad:
    d->why = "a number Lua cannot read";
    return 0;
}

static int
on_string(void *ctx, const unsigned char *s, size_t n)
{
    lua_pushlstring(((struct jdec *)ctx)->L, (const char *)s, n);
    return store(ctx);
}

static int
on_key(void *ctx, const unsigned char *s, size_t n)
{
    lua_pushlstring(((struct jdec *)ctx)->L, (const char *)s, n);
    return 1;
}

static int
open_level(struct jdec *d, lua_Integer first)
{
    if (d->depth >= d->max_depth)
        return 0; /* d->why NULL: too deep */
    lua_createtable(d->L, 0, 0);
    d->count[++d->depth] = first;
    return 1;
}

static int
on_start_map(void *ctx)
{
    return open_level(ctx, -1);
}

static int
on_start_array(void *ctx)
{
    return open_level(ctx, 0);
}

static int
on_end(void *ctx)
{
    struct jdec *d = ctx;

    d->depth--;
    return store(d);
}

static const yajl_callbacks callbacks = {
    .yajl_null = on_null,
    .yajl_boolean = on_boolean,
    .yajl_number = on_number, /* instead of yajl_integer and yajl_double */
    .yajl_string = on_string,
    .yajl_start_map = on_start_map,
    .yajl_map_key = on_key,
    .yajl_end_map = on_end,
    .yajl_start_array = on_start_array,
    .yajl_end_array = on_end,
};

static int
hex4(const unsigned char *s, size_t left, unsigned *v)
{
    *v = 0;
    if (left < 4)
        return 0;
    for (int i = 0; i < 4; i++) {
        int c = s[i];

        *v <<= 4;
        if (c >= '0' && c <= '9')
            *v |= (unsigned)(c - '0');
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
            *v |= (unsigned)((c | 0x20) - 'a' + 10);
        else
            return 0;
    }
    return 1;
}

/*
 * What yajl lets through: RFC 8259 §8.1 text is UTF-8, yajl's check takes overlong forms and
 * surrogates; §7 writes a character beyond the BMP as a pair of \u escapes, and yajl turns a
 * lone or mismatched surrogate into '?' or into another character. Both refused here, before
 * parsing; the scan follows strings as the grammar delimits them, so on valid JSON it is
 * exact, and on invalid JSON one of the two reports an error either way. Returns the message
 * (its %I the byte), or NULL.
 */
static const char *
prescan(const unsigned char *s, size_t len, size_t *at)
{
    int in_string = 0;

    if ((*at = linkparse_utf8_prefix(s, len)) < len)
        return "JSON: invalid UTF-8 at byte %I";
    for (size_t i = 0; i < len; i++) {
        unsigned hi, lo;

        if (s[i] == '"') {
            in_string = !in_string;
            continue;
        }
        if (!in_string || s[i] != '\\')
            continue;
        if (i + 1 == len || s[i + 1] != 'u' || !hex4(s + i + 2, len - i - 2, &hi)) {
            i++; /* a one-character escape, or a bad one yajl reports */
            continue;
        }
        *at = i;
        if (hi >= 0xdc00 && hi <= 0xdfff)
            return "JSON: a low surrogate escape without its high one at byte %I";
        if (hi >= 0xd800 && hi <= 0xdbff) {
            if (len - i < 12 || s[i + 6] != '\\' || s[i + 7] != 'u' ||
                !hex4(s + i + 8, len - i - 8, &lo) || lo < 0xdc00 || lo > 0xdfff)
                return "JSON: a high surrogate escape without its low one at byte %I";
            i += 6;
        }
        i += 5;
    }
    return NULL;
}

/* Raises yajl's reason, "parse error: premature EOF\n" without its line end or final '.' */
static int
yajl_error(struct jdec *d, size_t at)
{
    unsigned char *e = yajl_get_error(d->h, 0, NULL, 0);
    char why[160];
    size_t n;

    snprintf(why, sizeof why, "%s", e ? (const char *)e : "malformed");
    yajl_free_error(d->h, e); /* before anything that may raise */
    n = strlen(why);
    while (n && (why[n - 1] == '\n' || why[n - 1] == '.'))
        why[--n] = '\0';
    return luaL_error(d->L, "JSON: %s at byte %I", why, (lua_Integer)at);
}

/* Run in a protected call: data errors raise a message, a memory error LUA_ERRMEM. */
static int
parse_protected(lua_State *L)
{
    struct jdec *d = lua_touserdata(L, 1);
    yajl_status st;
    size_t at;

    /* a table and a key per level, the value */
    if (!lua_checkstack(L, 2 * CODEC_DEPTH + 8))
        return luaL_error(L, "JSON: not enough memory (lua.memory) at byte 0");
    st = yajl_parse(d->h, d->s, d->len);
    /* yajl stops just past the token it could not take: the byte named is its last one */
    at = yajl_get_bytes_consumed(d->h);
    at = at ? at - 1 : 0;
    if (st == yajl_status_ok) {
        st = yajl_complete_parse(d->h);
        at = d->len; /* what only the end reveals: a truncated text */
    }
    if (st == yajl_status_client_canceled && d->why == NULL)
        return luaL_error(L, "JSON: nested deeper than %d at byte %I", d->max_depth,
                          (lua_Integer)at);
    if (st == yajl_status_client_canceled)
        return luaL_error(L, "JSON: %s at byte %I", d->why, (lua_Integer)at);
    if (st != yajl_status_ok)
        return yajl_error(d, at);
    return 1;
}

/*
 * Decoding allocates Lua memory for the value as it goes (a memory error unwinds through
 * yajl, whose handle is freed here on every path); yajl's own scratch -- its handle, a
 * state per level (at most max_depth + 1) and a buffer for a string with escapes, no
 * longer than that string -- is malloc'ed and bounded by the input.
 */
enum codec_status
ljson_decode_value(lua_State *L, const char *s, size_t len, int max_depth)
{
    struct jdec d = {.L = L, .s = (const unsigned char *)s, .len = len, .max_depth = max_depth};
    const char *why;
    size_t at;
    int rc;

    if ((why = prescan(d.s, len, &at)) != NULL) {
        codec_push_message(L, why, (lua_Integer)at);
        return CODEC_MALFORMED;
    }
    if ((d.h = yajl_alloc(&callbacks, NULL, &d)) == NULL) {
        codec_push_message(L, "JSON: not enough memory at byte %I", 0);
        return CODEC_NOMEM;
    }
    lua_pushcfunction(L, parse_protected);
    lua_pushlightuserdata(L, &d);
    rc = lua_pcall(L, 1, 1, 0);
    at = yajl_get_bytes_consumed(d.h);
    yajl_free(d.h);
    if (rc == LUA_OK)
        return CODEC_OK;
    if (rc == LUA_ERRMEM) {
        lua_pop(L, 1);
        codec_push_message(L, "JSON: not enough memory (lua.memory) at byte %I", (lua_Integer)at);
        return CODEC_NOMEM;
    }
    return CODEC_MALFORMED;
}

/* ---- the module: lua-cjson (Debian lua-cjson 2.1), linked in, with our decoder -------- */

int luaopen_cjson(lua_State *L);

/* An instance's decoding settings, shared by its decode and decode_max_depth. */
struct jconf {
    int depth;
};

/* decode(s) -> value, or nil and "JSON: what at byte N"; only a non-string raises */
static int
json_decode(lua_State *L)
{
    struct jconf *c = lua_touserdata(L, lua_upvalueindex(1));
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);

    lua_settop(L, 1);
    if (ljson_decode_value(L, s, len, c->depth) == CODEC_OK)
        return 1;
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
}

/* decode_max_depth([n]) -> the depth: n may lower it, not raise it past CODEC_DEPTH */
static int
json_depth(lua_State *L)
{
    struct jconf *c = lua_touserdata(L, lua_upvalueindex(1));

    if (!lua_isnoneornil(L, 1)) {
        lua_Integer n = luaL_checkinteger(L, 1);

        if (n > CODEC_DEPTH)
            return luaL_error(L, "moonlet.json: decode_max_depth is at most %d", CODEC_DEPTH);
        luaL_argcheck(L, n >= 1, 1, "expected an integer between 1 and 32");
        c->depth = (int)n;
    }
    lua_pushinteger(L, c->depth);
    return 1;
}

/* A lua-cjson instance whose decode is ours (nil, err; at most 32 deep; within lua.memory);
 * new() makes another such one, with settings of its own. */
static int
json_open(lua_State *L)
{
    struct jconf *c;

    luaopen_cjson(L);
    c = lua_newuserdatauv(L, sizeof *c, 0);
    c->depth = CODEC_DEPTH;
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, json_decode, 1);
    lua_setfield(L, -3, "decode");
    lua_pushcclosure(L, json_depth, 1);
    lua_setfield(L, -2, "decode_max_depth");
    lua_pushcfunction(L, json_open);
    lua_setfield(L, -2, "new");
    return 1;
}

/* The instance is package.loaded.cjson too: require "cjson" gets the same bounded table. */
int
ljson_open(lua_State *L)
{
    luaL_requiref(L, "cjson", json_open, 0);
    return 1;
}
