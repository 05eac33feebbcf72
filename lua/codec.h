/*
 * codec.h -- the Lua runtime's decoders as C calls (lua/json.c, lua/cbor.c), shared by the
 * moonlet.json and moonlet.cbor modules and by req.body (lua/req.c).
 */
#ifndef LUA_CODEC_H
#define LUA_CODEC_H

#include <stddef.h>

#include <lua.h>

/* What a decoder returns. CODEC_OK: the value is pushed; otherwise one message is pushed,
 * "JSON: what at byte N" or "CBOR: what at byte N" (bytes counted from 0). */
enum codec_status {
    CODEC_OK = 0,
    CODEC_MALFORMED = -1, /* the input is not what the format allows */
    CODEC_NOMEM = -2,     /* the value would not fit in lua.memory */
};

#define CODEC_DEPTH 32 /* arrays and maps inside one another, CBOR and JSON alike */

/* Decode s (RFC 8259) into Lua values, at most max_depth (<= CODEC_DEPTH) levels deep:
 * integers stay integers, null is moonlet.json.null. Never raises. */
enum codec_status ljson_decode_value(lua_State *L, const char *s, size_t len, int max_depth);

/* Decode s (RFC 8949) into Lua values; keep_tags: a tagged item becomes a
 * moonlet.cbor.tagged table (lua/README.md) instead of its content. Never raises. */
enum codec_status lcbor_decode_value(lua_State *L, const char *s, size_t len, int keep_tags);

/* Pushes fmt formatted with n (its one %I), made where a memory error is caught: short
 * even of that memory, Lua's own "not enough memory" stands in (lua/cbor.c). */
void codec_push_message(lua_State *L, const char *fmt, lua_Integer n);

/* The moonlet.cbor table: encode, decode, tag, tagged (pushed). */
int lcbor_open(lua_State *L);

struct coro;
struct moonlet_resp;

/* After co's handler raised: when the error is the one req.body raises for a body it cannot
 * decode (lua/req.c), fill resp with its code and reason and return 1; else 0 (a script
 * error). Without resp (a timer), the error is replaced by its reason and 0 returned. */
int lreq_body_error(struct coro *co, struct moonlet_resp *resp);

#endif
