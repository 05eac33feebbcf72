/*
 * req.c -- the request a Lua handler receives, and the conversion of what it returns into
 * a response. The request object is a small userdata over the core's request views:
 * fields are computed when read, so a handler pays only for what it uses. Before the
 * first wait, the request is detached (the datagram copied) and stays readable. req.body
 * decodes the payload per its Content-Format once, on first read; a body that cannot be
 * decoded ends the handler with 4.00, 4.13 or 4.15 (RFC 7252 §5.9.2, §5.10.3).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "codec.h"
#include "linkparse.h"
#include "log.h"
#include "option.h"
#include "runtime.h"
#include "session.h"

#define BODY_ERROR "moonlet.body_error" /* {code =, message =}: what req.body raises */

enum body_state { BODY_UNREAD, BODY_READ, BODY_FAILED };

struct lreq {
    struct moonlet_req *req;    /* NULL once the handler is over */
    int detached;               /* req is our heap copy */
    enum body_state body;       /* READ/FAILED: user value 1 holds the value or the error */
};

static const char *const method_names[] = {"", "GET", "POST", "PUT", "DELETE",
                                           "FETCH", "PATCH", "iPATCH"};

static struct moonlet_req *
checkreq(lua_State *L)
{
    struct lreq *lr = luaL_checkudata(L, 1, "moonlet.req");

    if (lr->req == NULL)
        luaL_error(L, "the request is gone: its handler has returned");
    return lr->req;
}

static unsigned
option_number(lua_State *L, int idx)
{
    const struct option_def *d;

    if (lua_isinteger(L, idx)) {
        lua_Integer n = lua_tointeger(L, idx);

        luaL_argcheck(L, n > 0 && n <= 65535, idx, "option numbers are 1..65535");
        return (unsigned)n;
    }
    if ((d = option_by_name(luaL_checkstring(L, idx))) == NULL)
        luaL_error(L, "unknown option '%s'", lua_tostring(L, idx));
    return d->num;
}

static void
push_option(lua_State *L, const struct msg_opt *o)
{
    const struct option_def *d = option_get(o->num);

    if (d && d->format == OPT_UINT && o->len <= 4)
        lua_pushinteger(L, msg_uint(o->val, o->len));
    else
        lua_pushlstring(L, (const char *)o->val, o->len);
}

/* req:option(name_or_number) -> first value or nil; req:options(...) -> list */
static int
req_options(lua_State *L, int all)
{
    struct moonlet_req *req = checkreq(L);
    unsigned num = option_number(L, 2);
    struct msg_iter it;
    struct msg_opt o;
    lua_Integer n = 0;

    if (all)
        lua_newtable(L);
    msg_iter_init(&it, req->m);
    while (msg_iter_next(&it, &o) && o.num <= num) {
        if (o.num != num)
            continue;
        push_option(L, &o);
        if (!all)
            return 1;
        lua_rawseti(L, -2, ++n);
    }
    if (!all)
        lua_pushnil(L);
    return 1;
}

static int
req_option(lua_State *L)
{
    return req_options(L, 0);
}

static int
req_option_list(lua_State *L)
{
    return req_options(L, 1);
}

/* table key value on the stack top: t[key] = value, and a repeated key becomes the list of
 * its values (queries, link attributes). Pops key and value. */
static void
set_or_append(lua_State *L)
{
    lua_pushvalue(L, -2);
    if (lua_rawget(L, -4) == LUA_TNIL) {
        lua_pop(L, 1);
        lua_rawset(L, -3);
        return;
    }
    if (!lua_istable(L, -1)) {          /* the second value: make the list */
        lua_createtable(L, 2, 0);
        lua_insert(L, -2);
        lua_rawseti(L, -2, 1);
        lua_pushvalue(L, -3);
        lua_pushvalue(L, -2);
        lua_rawset(L, -6);
    }
    lua_insert(L, -2);                  /* key list value -> key value list ... */
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    lua_pop(L, 2);
}

static void
push_query(lua_State *L, const struct moonlet_req *req)
{
    lua_createtable(L, 0, (int)req->nq);
    for (unsigned i = 0; i < req->nq; i++) {
        const char *p = (const char *)req->q[i].p, *eq = memchr(p, '=', req->q[i].len);
        size_t kl = eq ? (size_t)(eq - p) : req->q[i].len;

        lua_pushlstring(L, p, kl);
        if (eq)
            lua_pushlstring(L, eq + 1, req->q[i].len - kl - 1);
        else
            lua_pushboolean(L, 1);
        set_or_append(L);
    }
}

static int req_body(lua_State *L, struct lreq *lr);

/* { auth = "none" | "psk" | "rpk" | "x509" | "anon", name = "...", alt = { ... } } */
static void
push_identity(lua_State *L, const moonlet_identity *id)
{
    static const char *const auths[] = {"none", "psk", "rpk", "x509", "anon"};
    int n = 0;

    lua_createtable(L, 0, 3);
    lua_pushstring(L, auths[id->auth >= 0 && id->auth <= MOONLET_AUTH_ANON ? id->auth : 0]);
    lua_setfield(L, -2, "auth");
    lua_pushstring(L, id->name);
    lua_setfield(L, -2, "name");
    while (id->alt[n])
        n++;
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushstring(L, id->alt[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "alt");
}

static int
req_index(lua_State *L)
{
    struct moonlet_req *req = checkreq(L);
    size_t kl;
    const char *k = luaL_checklstring(L, 2, &kl);

    switch (kl) {
    case 2:
        if (memcmp(k, "ct", 2) == 0) {
            if (req->ct == MOONLET_CT_NONE)
                lua_pushnil(L);
            else
                lua_pushinteger(L, req->ct);
            return 1;
        }
        break;
    case 4:
        if (memcmp(k, "body", 4) == 0)
            return req_body(L, lua_touserdata(L, 1));
        if (memcmp(k, "path", 4) == 0) {    /* a subtree's: the request's whole path */
            lua_pushstring(L, moonlet_req_path(req));
            return 1;
        }
        if (memcmp(k, "rest", 4) == 0) {    /* the segments below a subtree's prefix */
            unsigned base = moonlet_req_base(req);

            lua_createtable(L, (int)(req->nseg - base), 0);
            for (unsigned i = base; i < req->nseg; i++) {
                lua_pushlstring(L, (const char *)req->seg[i].p, req->seg[i].len);
                lua_rawseti(L, -2, i - base + 1);
            }
            return 1;
        }
        if (memcmp(k, "peer", 4) == 0) {
            char buf[64];

            lua_pushstring(L, peer_str(&req->sess->peer, buf, sizeof buf));
            return 1;
        }
        break;
    case 5:
        if (memcmp(k, "query", 5) == 0) {
            push_query(L, req);
            return 1;
        }
        break;
    case 6:
        if (memcmp(k, "method", 6) == 0) {
            lua_pushstring(L, method_names[req->method]);
            return 1;
        }
        if (memcmp(k, "accept", 6) == 0) {
            if (req->accept == MOONLET_CT_NONE)
                lua_pushnil(L);
            else
                lua_pushinteger(L, req->accept);
            return 1;
        }
        if (memcmp(k, "option", 6) == 0) {
            lua_pushcfunction(L, req_option);
            return 1;
        }
        break;
    case 7:
        if (memcmp(k, "payload", 7) == 0) {
            lua_pushlstring(L, req->payload ? (const char *)req->payload : "",
                            req->payload_len);
            return 1;
        }
        if (memcmp(k, "options", 7) == 0) {
            lua_pushcfunction(L, req_option_list);
            return 1;
        }
        break;
    case 8:
        if (memcmp(k, "segments", 8) == 0) {
            lua_createtable(L, (int)req->nseg, 0);
            for (unsigned i = 0; i < req->nseg; i++) {
                lua_pushlstring(L, (const char *)req->seg[i].p, req->seg[i].len);
                lua_rawseti(L, -2, i + 1);
            }
            return 1;
        }
        if (memcmp(k, "identity", 8) == 0) {
            push_identity(L, moonlet_req_identity(req));
            return 1;
        }
        break;
    case 9:
        if (memcmp(k, "query_raw", 9) == 0) {
            luaL_Buffer b;

            luaL_buffinit(L, &b);
            for (unsigned i = 0; i < req->nq; i++) {
                if (i)
                    luaL_addchar(&b, '&');
                luaL_addlstring(&b, (const char *)req->q[i].p, req->q[i].len);
            }
            luaL_pushresult(&b);
            return 1;
        }
        break;
    }
    lua_pushnil(L);
    return 1;
}

/* ---- req.body ----------------------------------------------------------------------- */

/* The links of a link-format body (RFC 6690 §2) go into the list on top of the stack, each
 * {target = "/a", attrs = {rt = "x", obs = true, ...}}: names lowercased (RFC 8288 §3 makes
 * them case-insensitive), a repeated name gives the list of its values in order. A memory
 * error raises through moonlet_linkfmt_parse, which holds nothing. */
static int
push_link(void *ud, const char *target, size_t tlen, const moonlet_attr *attrs, unsigned n)
{
    lua_State *L = ud;

    luaL_checkstack(L, 8, "link-format");
    lua_createtable(L, 0, 2);
    lua_pushlstring(L, target, tlen);
    lua_setfield(L, -2, "target");
    lua_createtable(L, 0, (int)n);
    for (unsigned i = 0; i < n; i++) {
        luaL_Buffer b;

        luaL_buffinit(L, &b);
        for (const char *c = attrs[i].name; *c; c++)
            luaL_addchar(&b, (*c >= 'A' && *c <= 'Z') ? (char)(*c + 32) : *c);
        luaL_pushresult(&b);                            /* attrs name */
        if (attrs[i].value)
            lua_pushstring(L, attrs[i].value);
        else
            lua_pushboolean(L, 1);                      /* attrs name value */
        set_or_append(L);
    }
    lua_setfield(L, -2, "attrs");
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    return 0;
}

/* Decode the payload per its Content-Format: pushes the value and returns 0, or pushes the
 * reason and returns the response code. */
static unsigned
body_decode(lua_State *L, const struct moonlet_req *req)
{
    const char *p = req->payload ? (const char *)req->payload : "";
    size_t n = req->payload_len, valid;
    enum codec_status st;
    char err[160];

    switch (req->ct) {
    case MOONLET_CT_NONE:   /* no Content-Format: the bytes as they came */
    case MOONLET_CT_OCTETS: /* application/octet-stream is bytes by definition */
        lua_pushlstring(L, p, n);
        return 0;
    case MOONLET_CT_TEXT:   /* RFC 7252 §12.3: text/plain; charset=utf-8 */
        if ((valid = linkparse_utf8_prefix(p, n)) < n) {
            lua_pushfstring(L, "text/plain: invalid UTF-8 at byte %I", (lua_Integer)valid);
            return MOONLET_BAD_REQUEST;
        }
        lua_pushlstring(L, p, n);
        return 0;
    case MOONLET_CT_JSON:
    case MOONLET_CT_SENML_JSON: /* RFC 8428 §4: SenML JSON is a JSON array */
        st = ljson_decode_value(L, p, n, CODEC_DEPTH);
        break;
    case MOONLET_CT_CBOR:
    case MOONLET_CT_SENML_CBOR:
        st = lcbor_decode_value(L, p, n, 1);
        break;
    case MOONLET_CT_LINK_FORMAT:
        lua_newtable(L);
        switch (moonlet_linkfmt_parse(p, n, push_link, L, err, sizeof err)) {
        case MOONLET_OK:
            return 0;
        case MOONLET_ERANGE:
            lua_pushstring(L, err);
            return MOONLET_REQUEST_ENTITY_TOO_LARGE;
        default:
            lua_pushstring(L, err);
            return MOONLET_BAD_REQUEST;
        }
    default:
        lua_pushfstring(L, "no decoder for Content-Format %d", req->ct);
        return MOONLET_UNSUPPORTED_CONTENT_FORMAT;
    }
    if (st == CODEC_OK)
        return 0;
    /* a body whose value does not fit in the script's memory is too large for us (§5.9.2.9) */
    return st == CODEC_NOMEM ? MOONLET_REQUEST_ENTITY_TOO_LARGE : MOONLET_BAD_REQUEST;
}

/* __tostring of the error: "4.00 JSON: ..." */
static int
body_error_tostring(lua_State *L)
{
    char code[8];
    lua_Integer c;

    lua_getfield(L, 1, "code");
    c = lua_tointeger(L, -1);
    snprintf(code, sizeof code, "%d.%02d", (int)((c >> 5) & 7), (int)(c & 31));
    lua_getfield(L, 1, "message");
    lua_pushfstring(L, "%s %s", code, lua_tostring(L, -1));
    return 1;
}

/* req.body: the decoded payload, cached in the request's user value; the first read decodes.
 * A body that cannot be decoded raises a moonlet.body_error object, every time it is read:
 * uncaught, the runtime answers it with its code (lreq_body_error). */
static int
req_body(lua_State *L, struct lreq *lr)
{
    unsigned code;

    if (lr->body != BODY_UNREAD) {
        lua_getiuservalue(L, 1, 1);
        return lr->body == BODY_READ ? 1 : lua_error(L);
    }
    code = body_decode(L, lr->req);
    if (code == 0) {
        lua_pushvalue(L, -1);
        lua_setiuservalue(L, 1, 1);
        lr->body = BODY_READ;
        return 1;
    }
    lua_createtable(L, 0, 2);
    lua_insert(L, -2);
    lua_setfield(L, -2, "message");
    lua_pushinteger(L, code);
    lua_setfield(L, -2, "code");
    luaL_setmetatable(L, BODY_ERROR);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, 1, 1);
    lr->body = BODY_FAILED;
    return lua_error(L);
}

int
lreq_body_error(struct coro *co, moonlet_resp *resp)
{
    lua_State *L = co->L;
    const char *msg;
    unsigned code;
    int is;

    if (!lua_istable(L, -1) || !lua_getmetatable(L, -1))
        return 0;
    luaL_getmetatable(L, BODY_ERROR);
    is = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (!is)
        return 0;
    lua_pushliteral(L, "code");
    lua_rawget(L, -2);
    code = (unsigned)lua_tointeger(L, -1);
    lua_pushliteral(L, "message");
    lua_rawget(L, -3);
    msg = lua_tostring(L, -1);
    if (code >> 5 != 4) {               /* changed by a handler that caught it: its error */
        lua_pop(L, 2);
        return 0;
    }
    if (resp == NULL) {                 /* a timer: logged as any error, with the reason */
        lua_replace(L, -3);
        lua_pop(L, 1);
        return 0;
    }
    /* RFC 7252 §5.5.2: the reason as a diagnostic payload; the client's error, not the
     * script's: logged at debug level only */
    log_debug("%s: %s: %u.%02u %s", co->sc->path, co->res ? co->res->path : "timer",
              code >> 5, code & 31, msg ? msg : "");
    resp_simple(resp, code, msg);
    lua_pop(L, 2);
    return 1;
}

void
lreq_metatable(lua_State *L)
{
    luaL_newmetatable(L, "moonlet.req");
    lua_pushcfunction(L, req_index);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "moonlet.req");
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
    luaL_newmetatable(L, BODY_ERROR);
    lua_pushcfunction(L, body_error_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
}

void
lreq_push(lua_State *L, struct coro *co, struct moonlet_req *req)
{
    struct lreq *lr = lua_newuserdatauv(L, sizeof *lr, 1);

    lr->req = req;
    lr->detached = 0;
    lr->body = BODY_UNREAD;
    luaL_setmetatable(L, "moonlet.req");
    co->lreq = lr;
    /* anchored until lreq_release: once the handler returns nothing on its stack refers
     * to it, and a collection while its answer is converted would free it under us */
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, co);
}

int
lreq_detach(struct coro *co)
{
    struct lreq *lr = co->lreq;
    struct moonlet_req *copy;

    if (lr == NULL || lr->detached)
        return 0;
    if ((copy = request_detach(lr->req)) == NULL)
        return -1;
    lr->req = copy;
    lr->detached = 1;
    return 0;
}

void
lreq_release(struct coro *co)
{
    struct lreq *lr = co->lreq;

    if (lr == NULL)
        return;
    if (lr->detached)
        request_detached_free(lr->req);
    lr->req = NULL;
    lr->detached = 0;
    co->lreq = NULL;
    lua_pushnil(co->sc->L);
    lua_rawsetp(co->sc->L, LUA_REGISTRYINDEX, co);
}

/* ---- the response --------------------------------------------------------------------- */

/* RFC 7252 §5.9 (and RFC 8132): the success code of each method when none is returned */
static unsigned
default_code(unsigned method)
{
    switch (method) {
    case MOONLET_GET:
    case MOONLET_FETCH:
        return MOONLET_CONTENT;
    case MOONLET_DELETE:
        return MOONLET_DELETED;
    default:
        return MOONLET_CHANGED;
    }
}

static int
add_value(lua_State *L, int idx, unsigned num, moonlet_resp *resp)
{
    switch (lua_type(L, idx)) {
    case LUA_TNUMBER: {
        lua_Integer v;

        if (!lua_isinteger(L, idx) || (v = lua_tointeger(L, idx)) < 0 || v > 0xffffffff)
            return -1;
        return moonlet_resp_option_uint(resp, num, (uint32_t)v);
    }
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);

        return moonlet_resp_option(resp, num, s, n);
    }
    case LUA_TBOOLEAN:
        return lua_toboolean(L, idx) ? moonlet_resp_option(resp, num, "", 0) : 0;
    default:
        return -1;
    }
}

/* "/a/b?x=1&y" -> Location-Path a, b and Location-Query x=1, y (RFC 7252 §5.10.7) */
static int
add_location(const char *loc, moonlet_resp *resp)
{
    const char *q = strchr(loc, '?'), *end = q ? q : loc + strlen(loc), *p = loc;

    while (p < end) {
        const char *e;

        if (*p == '/')
            p++;
        e = memchr(p, '/', (size_t)(end - p));
        if (e == NULL)
            e = end;
        if (e > p && moonlet_resp_option(resp, MOONLET_OPT_LOCATION_PATH, p,
                                         (size_t)(e - p)) < 0)
            return -1;
        p = e;
    }
    for (p = q ? q + 1 : end; q && *p;) {
        const char *e = strchr(p, '&');
        size_t n = e ? (size_t)(e - p) : strlen(p);

        if (n && moonlet_resp_option(resp, MOONLET_OPT_LOCATION_QUERY, p, n) < 0)
            return -1;
        p += n + (e != NULL);
    }
    return 0;
}

static int
convert_opts(lua_State *L, int t, moonlet_resp *resp, char *err, size_t errlen)
{
    lua_pushnil(L);
    while (lua_next(L, t)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        unsigned num = 0;
        int rc = 0;

        if (k && strcmp(k, "ct") == 0) {
            rc = lua_isinteger(L, -1) ? moonlet_resp_ct(resp, (int)lua_tointeger(L, -1)) : -1;
        } else if (k && strcmp(k, "location") == 0) {
            rc = lua_type(L, -1) == LUA_TSTRING ? add_location(lua_tostring(L, -1), resp) : -1;
        } else {
            if (k && strcmp(k, "max_age") == 0)
                num = MOONLET_OPT_MAX_AGE;
            else if (k && strcmp(k, "etag") == 0)
                num = MOONLET_OPT_ETAG;
            else if (k && option_by_name(k))
                num = option_by_name(k)->num;
            else if (lua_isinteger(L, -2) && lua_tointeger(L, -2) > 0 &&
                     lua_tointeger(L, -2) <= 65535)
                num = (unsigned)lua_tointeger(L, -2);
            if (num == 0) {
                snprintf(err, errlen, "unknown response option '%s'",
                         k ? k : luaL_typename(L, -2));
                return -1;
            }
            if (lua_istable(L, -1)) {
                for (lua_Integer i = 1; rc >= 0 && lua_rawgeti(L, -1, i) != LUA_TNIL; i++) {
                    rc = add_value(L, lua_gettop(L), num, resp);
                    lua_pop(L, 1);
                }
                lua_pop(L, 1);
            } else {
                rc = add_value(L, lua_gettop(L), num, resp);
            }
        }
        if (rc < 0) {
            snprintf(err, errlen, "bad value for response option '%s'",
                     k ? k : lua_tostring(L, -2));
            return -1;
        }
        lua_pop(L, 1);
    }
    return 0;
}

/* The content format of a table payload or a negotiated string (lua/README.md). */
static int
chosen_ct(const struct coro *co, const moonlet_resp *resp, int table)
{
    const int *list = co->res ? co->res->ct : NULL;

    if (resp->ct != MOONLET_CT_NONE)
        return resp->ct;
    if (co->accept != MOONLET_CT_NONE)      /* dispatch answered 4.06 if it is not listed */
        return co->accept;
    if (list && list[0] != MOONLET_CT_END)
        return list[0];
    return table ? MOONLET_CT_JSON : MOONLET_CT_NONE;
}

/* Encode the table at idx in ct; pushes the string. 0, or -1 with err. */
static int
encode_table(lua_State *L, int idx, int ct, char *err, size_t errlen)
{
    if (ct == MOONLET_CT_JSON || ct == MOONLET_CT_SENML_JSON) {
        lua_getfield(L, LUA_REGISTRYINDEX, "moonlet");    /* M */
        lua_getfield(L, -1, "json");                    /* M J */
        lua_getfield(L, -1, "encode");                  /* M J encode */
        lua_replace(L, -3);                             /* encode J */
        lua_pop(L, 1);                                  /* encode */
    } else if (ct == MOONLET_CT_CBOR || ct == MOONLET_CT_SENML_CBOR) {
        lua_pushcfunction(L, lcbor_encode);
    } else {
        snprintf(err, errlen, "a table payload needs a JSON or CBOR content format, not %d",
                 ct);
        return -1;
    }
    lua_pushvalue(L, idx);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        snprintf(err, errlen, "cannot encode the payload: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    return 0;
}

int
lresp_convert(lua_State *L, int base, int n, struct coro *co, moonlet_resp *resp, char *err,
              size_t errlen)
{
    int pay_idx = 0, opt_idx = 0, table, rc;
    unsigned code = default_code(co->method);

    if (n >= 1 && lua_type(L, base) == LUA_TNUMBER) {
        lua_Number v = lua_tonumber(L, base);

        /* a response code: class 2, 4 or 5 (RFC 7252 §5.9, §12.1.2) */
        if (!lua_isinteger(L, base) || isnan(v) || v < 64 || v > 191 || ((int)v >> 5) == 3) {
            snprintf(err, errlen, "bad response code %s", lua_tostring(L, base));
            return -1;
        }
        code = (unsigned)v;
        pay_idx = n >= 2 ? base + 1 : 0;
        opt_idx = n >= 3 ? base + 2 : 0;
    } else if (n >= 1) {
        pay_idx = base;
        opt_idx = n >= 2 ? base + 1 : 0;
    }
    resp_reset(resp);
    moonlet_resp_code(resp, code);
    if (opt_idx && !lua_isnil(L, opt_idx)) {
        if (!lua_istable(L, opt_idx)) {
            snprintf(err, errlen, "response options must be a table");
            return -1;
        }
        if (convert_opts(L, opt_idx, resp, err, errlen) < 0)
            return -1;
    }
    if (pay_idx == 0 || lua_isnil(L, pay_idx))
        return 0;
    table = lua_istable(L, pay_idx);
    /* negotiation applies to representations; an error's text is a diagnostic payload,
     * which carries no Content-Format (RFC 7252 §5.5.2) */
    if ((resp->ct == MOONLET_CT_NONE && code >> 5 == 2) || table) {
        int ct = chosen_ct(co, resp, table);

        if (ct != MOONLET_CT_NONE)
            moonlet_resp_ct(resp, ct);
    }
    if (table) {
        if (encode_table(L, pay_idx, resp->ct, err, errlen) < 0)
            return -1;
        lua_replace(L, pay_idx);
    }
    if (lua_type(L, pay_idx) != LUA_TSTRING && lua_type(L, pay_idx) != LUA_TNUMBER) {
        snprintf(err, errlen, "a payload must be a string or a table, not %s",
                 luaL_typename(L, pay_idx));
        return -1;
    }
    {
        size_t len;
        const char *p = lua_tolstring(L, pay_idx, &len);

        rc = moonlet_resp_payload(resp, p, len);
        if (rc == MOONLET_ERANGE) {
            snprintf(err, errlen, "payload of %zu bytes is over max_payload", len);
            return -1;
        }
        if (rc < 0) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    return 0;
}
