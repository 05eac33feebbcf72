/*
 * cbor.c -- moonlet.cbor.encode/decode (RFC 8949) over libcbor, Debian's maintained CBOR
 * library (chosen over an encoder of our own: it decodes every major type, indefinite
 * lengths and tags, and is fuzzed upstream). Encoding writes integers in their shortest
 * form (§4.2.1); a table is an array when it is a sequence 1..n, else a map.
 */
#include <cbor.h>
#include <string.h>

#include "runtime.h"

#define CBOR_DEPTH 32

static cbor_item_t *
uint_item(uint64_t v)
{
    return v <= 0xff ? cbor_build_uint8((uint8_t)v) : v <= 0xffff ? cbor_build_uint16((uint16_t)v)
         : v <= 0xffffffff ? cbor_build_uint32((uint32_t)v) : cbor_build_uint64(v);
}

static cbor_item_t *
negint_item(uint64_t v)    /* encodes -1 - v */
{
    return v <= 0xff ? cbor_build_negint8((uint8_t)v)
         : v <= 0xffff ? cbor_build_negint16((uint16_t)v)
         : v <= 0xffffffff ? cbor_build_negint32((uint32_t)v) : cbor_build_negint64(v);
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

static cbor_item_t *
encode(lua_State *L, int idx, int depth)
{
    if (depth > CBOR_DEPTH)
        luaL_error(L, "moonlet.cbor.encode: nested deeper than %d (a cycle?)", CBOR_DEPTH);
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        return cbor_new_null();
    case LUA_TBOOLEAN:
        return cbor_build_bool(lua_toboolean(L, idx));
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            lua_Integer v = lua_tointeger(L, idx);

            return v >= 0 ? uint_item((uint64_t)v) : negint_item((uint64_t)(-(v + 1)));
        } else {
            double d = lua_tonumber(L, idx);

            return (double)(float)d == d ? cbor_build_float4((float)d) : cbor_build_float8(d);
        }
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);

        return cbor_build_stringn(s, n);
    }
    case LUA_TTABLE: {
        size_t n;
        cbor_item_t *item;

        luaL_checkstack(L, 4, "cbor");
        if (is_sequence(L, idx, &n)) {
            item = cbor_new_definite_array(n);
            for (size_t i = 1; item && i <= n; i++) {
                cbor_item_t *v;

                lua_rawgeti(L, idx, (lua_Integer)i);
                v = encode(L, lua_gettop(L), depth + 1);
                lua_pop(L, 1);
                if (v == NULL || !cbor_array_push(item, cbor_move(v)))
                    return NULL;
            }
            return item;
        }
        n = 0;
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            lua_pop(L, 1);
            n++;
        }
        item = cbor_new_definite_map(n);
        lua_pushnil(L);
        while (item && lua_next(L, idx)) {
            cbor_item_t *k = encode(L, lua_gettop(L) - 1, depth + 1);
            cbor_item_t *v = encode(L, lua_gettop(L), depth + 1);

            lua_pop(L, 1);
            if (k == NULL || v == NULL ||
                !cbor_map_add(item, (struct cbor_pair){.key = cbor_move(k), .value = cbor_move(v)}))
                return NULL;
        }
        return item;
    }
    default:
        luaL_error(L, "moonlet.cbor.encode: cannot encode a %s", luaL_typename(L, idx));
        return NULL;
    }
}

int
lcbor_encode(lua_State *L)
{
    cbor_item_t *item;
    unsigned char *buf = NULL;
    size_t size = 0, len;

    luaL_checkany(L, 1);
    lua_settop(L, 1);
    if ((item = encode(L, 1, 0)) == NULL)
        return luaL_error(L, "moonlet.cbor.encode: out of memory");
    len = cbor_serialize_alloc(item, &buf, &size);
    cbor_decref(&item);
    if (len == 0) {
        free(buf);
        return luaL_error(L, "moonlet.cbor.encode: out of memory");
    }
    lua_pushlstring(L, (const char *)buf, len);
    free(buf);
    return 1;
}

static void
push_chunks(lua_State *L, cbor_item_t **chunks, size_t n, int text)
{
    luaL_Buffer b;

    luaL_buffinit(L, &b);
    for (size_t i = 0; i < n; i++) {
        if (text)
            luaL_addlstring(&b, (const char *)cbor_string_handle(chunks[i]),
                            cbor_string_length(chunks[i]));
        else
            luaL_addlstring(&b, (const char *)cbor_bytestring_handle(chunks[i]),
                            cbor_bytestring_length(chunks[i]));
    }
    luaL_pushresult(&b);
}

static void
decode(lua_State *L, cbor_item_t *item, int depth)
{
    if (depth > CBOR_DEPTH)
        luaL_error(L, "moonlet.cbor.decode: nested deeper than %d", CBOR_DEPTH);
    luaL_checkstack(L, 4, "cbor");
    switch (cbor_typeof(item)) {
    case CBOR_TYPE_UINT:
        lua_pushinteger(L, (lua_Integer)cbor_get_int(item));
        break;
    case CBOR_TYPE_NEGINT:
        lua_pushinteger(L, -1 - (lua_Integer)cbor_get_int(item));
        break;
    case CBOR_TYPE_BYTESTRING:
        if (cbor_bytestring_is_indefinite(item))
            push_chunks(L, cbor_bytestring_chunks_handle(item),
                        cbor_bytestring_chunk_count(item), 0);
        else
            lua_pushlstring(L, (const char *)cbor_bytestring_handle(item),
                            cbor_bytestring_length(item));
        break;
    case CBOR_TYPE_STRING:
        if (cbor_string_is_indefinite(item))
            push_chunks(L, cbor_string_chunks_handle(item), cbor_string_chunk_count(item), 1);
        else
            lua_pushlstring(L, (const char *)cbor_string_handle(item),
                            cbor_string_length(item));
        break;
    case CBOR_TYPE_ARRAY: {
        size_t n = cbor_array_size(item);
        cbor_item_t **items = cbor_array_handle(item);

        lua_createtable(L, n < 1024 ? (int)n : 1024, 0);
        for (size_t i = 0; i < n; i++) {
            decode(L, items[i], depth + 1);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        break;
    }
    case CBOR_TYPE_MAP: {
        size_t n = cbor_map_size(item);
        struct cbor_pair *pairs = cbor_map_handle(item);

        lua_createtable(L, 0, n < 1024 ? (int)n : 1024);
        for (size_t i = 0; i < n; i++) {
            decode(L, pairs[i].key, depth + 1);
            decode(L, pairs[i].value, depth + 1);
            if (lua_isnil(L, -2))
                lua_pop(L, 2);          /* a null key cannot be a Lua table key */
            else
                lua_rawset(L, -3);
        }
        break;
    }
    case CBOR_TYPE_TAG: {
        cbor_item_t *inner = cbor_tag_item(item);   /* counted reference */

        decode(L, inner, depth + 1);
        cbor_decref(&inner);
        break;
    }
    case CBOR_TYPE_FLOAT_CTRL:
        if (cbor_float_ctrl_is_ctrl(item)) {
            if (cbor_is_bool(item))
                lua_pushboolean(L, cbor_get_bool(item));
            else
                lua_pushnil(L);         /* null, undefined, other simple values */
        } else {
            lua_pushnumber(L, cbor_float_get_float(item));
        }
        break;
    }
}

/* Decoding errors after cbor_load must not leak the item: decode in a protected call. */
static int
decode_protected(lua_State *L)
{
    decode(L, lua_touserdata(L, 1), 0);
    return 1;
}

int
lcbor_decode(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    struct cbor_load_result res;
    cbor_item_t *item = cbor_load((cbor_data)s, len, &res);
    int rc;

    if (item == NULL || res.error.code != CBOR_ERR_NONE || res.read != len) {
        if (item)
            cbor_decref(&item);
        lua_pushnil(L);
        lua_pushfstring(L, "not one well-formed CBOR item (at byte %d)", (int)res.error.position);
        return 2;
    }
    lua_pushcfunction(L, decode_protected);
    lua_pushlightuserdata(L, item);
    rc = lua_pcall(L, 1, 1, 0);
    cbor_decref(&item);
    if (rc != LUA_OK)
        return lua_error(L);
    return 1;
}

/* lua-cjson (Debian lua-cjson), linked in: the module table becomes moonlet.json. */
int luaopen_cjson(lua_State *L);

int
ljson_open(lua_State *L)
{
    luaL_requiref(L, "cjson", luaopen_cjson, 0);
    return 1;
}
