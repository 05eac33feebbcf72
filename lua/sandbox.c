/*
 * sandbox.c -- the environment a script runs in. By default a whitelist of the standard
 * library: no process control (os.execute, os.exit, io.popen), no native code
 * (package.loadlib, C modules), no debug library, no bytecode (string.dump, binary
 * chunks), and files only below the script's directory and lua.paths. `lua.sandbox=off`
 * gives the whole standard library.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime.h"

/* Is path (or, for a file to be created, its directory) below an allowed directory?
 * Paths are resolved (realpath), so neither ".." nor a symlink leads out. */
static int
path_allowed(struct script *sc, const char *path)
{
    char real[PATH_MAX], dir[PATH_MAX], allowed[PATH_MAX];
    const char *list = sc->rt->paths ? sc->rt->paths : "";
    const char *p = list;
    size_t n = strlen(path);

    if (n == 0 || n >= sizeof dir)
        return 0;
    if (realpath(path, real) == NULL) {
        char *slash;

        if (errno != ENOENT)
            return 0;
        memcpy(dir, path, n + 1);       /* a new file: its directory must exist and pass */
        slash = strrchr(dir, '/');
        if (slash == dir)
            slash[1] = '\0';
        else if (slash)
            *slash = '\0';
        else
            strcpy(dir, ".");
        if (realpath(dir, real) == NULL)
            return 0;
    }
    for (int first = 1;; first = 0) {
        const char *d = first ? sc->dir : p;
        size_t dl = first ? strlen(d) : strcspn(p, ":"), rl;
        char want[PATH_MAX];

        if (!first && *p == '\0')
            return 0;
        if (dl > 0 && dl < sizeof want) {
            memcpy(want, d, dl);
            want[dl] = '\0';
            if (realpath(want, allowed) != NULL) {
                rl = strlen(allowed);
                if (strncmp(real, allowed, rl) == 0 &&
                    (real[rl] == '\0' || real[rl] == '/' || (rl == 1 && allowed[0] == '/')))
                    return 1;
            }
        }
        if (!first)
            p += dl + (p[dl] == ':');
    }
}

static int
refuse(lua_State *L, const char *fn, const char *path)
{
    return luaL_error(L, "%s: '%s' is outside the script's allowed paths (lua.paths)", fn,
                      path);
}

/* io.open / io.lines / os.remove / os.rename with a path check; the original function is
 * upvalue 1. */
static int
checked_call(lua_State *L, const char *fn, int npaths)
{
    struct script *sc = script_of(L);

    for (int i = 1; i <= npaths; i++) {
        const char *path = luaL_checkstring(L, i);

        if (!path_allowed(sc, path))
            return refuse(L, fn, path);
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

static int
s_io_open(lua_State *L)
{
    return checked_call(L, "io.open", 1);
}

static int
s_io_lines(lua_State *L)
{
    return checked_call(L, "io.lines", 1);
}

static int
s_os_remove(lua_State *L)
{
    return checked_call(L, "os.remove", 1);
}

static int
s_os_rename(lua_State *L)
{
    return checked_call(L, "os.rename", 2);
}

/* load(chunk [, name [, mode [, env]]]): text only, and the sandbox as the default env */
static int
s_load(lua_State *L)
{
    int top = lua_gettop(L);

    lua_settop(L, 4);
    lua_pushliteral(L, "t");
    lua_replace(L, 3);
    if (top < 4) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, script_of(L)->env_ref);
        lua_replace(L, 4);
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, 4, LUA_MULTRET);
    return lua_gettop(L);
}

static int
s_collectgarbage(lua_State *L)
{
    const char *opt = luaL_optstring(L, 1, "collect");

    if (strcmp(opt, "count") != 0)
        return luaL_error(L, "collectgarbage('%s') is not available in the sandbox", opt);
    lua_pushnumber(L, (lua_Number)lua_gc(L, LUA_GCCOUNT) + lua_gc(L, LUA_GCCOUNTB) / 1024.0);
    return 1;
}

/* require(name): "moonlet", "cjson", or NAME.lua below an allowed directory, run in the
 * sandbox. Upvalue 1: the cache of loaded modules. */
static int
s_require(lua_State *L)
{
    struct script *sc = script_of(L);
    const char *name = luaL_checkstring(L, 1);
    const char *dirs = sc->rt->paths ? sc->rt->paths : "";
    char file[PATH_MAX];

    lua_settop(L, 1);
    if (lua_getfield(L, lua_upvalueindex(1), name) != LUA_TNIL)
        return 1;
    lua_pop(L, 1);
    if (strcmp(name, "moonlet") == 0 || strcmp(name, "cjson") == 0) {
        lua_getfield(L, LUA_REGISTRYINDEX, "moonlet");
        if (name[0] == 'c')
            lua_getfield(L, -1, "json");
        return 1;
    }
    if (strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.") !=
        strlen(name) || strstr(name, "..") || name[0] == '.')
        return luaL_error(L, "module '%s': bad name", name);
    for (int first = 1;; first = 0) {
        const char *d = first ? sc->dir : dirs;
        size_t dl = first ? strlen(d) : strcspn(dirs, ":");
        char *q;

        if (!first && *dirs == '\0')
            break;
        if (dl && (size_t)snprintf(file, sizeof file, "%.*s/%s.lua", (int)dl, d, name) <
                      sizeof file) {
            for (q = file + dl + 1; *q; q++)
                if (*q == '.' && strcmp(q, ".lua") != 0)
                    *q = '/';
            if (access(file, R_OK) == 0) {
                if (luaL_loadfilex(L, file, "t") != LUA_OK)
                    return lua_error(L);
                lua_rawgeti(L, LUA_REGISTRYINDEX, sc->env_ref);
                lua_setupvalue(L, -2, 1);
                lua_pushstring(L, name);
                lua_call(L, 1, 1);
                if (lua_isnil(L, -1)) {
                    lua_pop(L, 1);
                    lua_pushboolean(L, 1);
                }
                lua_pushvalue(L, -1);
                lua_setfield(L, lua_upvalueindex(1), name);
                return 1;
            }
        }
        if (!first)
            dirs += dl + (dirs[dl] == ':');
    }
    return luaL_error(L, "module '%s' not found (the sandbox loads Lua modules from the "
                         "script's directory and lua.paths only)", name);
}

/* Copy t[names...] from the table at src into the table on top. */
static void
copy_fields(lua_State *L, int src, const char *const *names)
{
    for (; *names; names++) {
        lua_getfield(L, src, *names);
        lua_setfield(L, -2, *names);
    }
}

/* A copy of global library `lib` with only `names`, set as env[lib]. */
static void
copy_lib(lua_State *L, int env, const char *lib, const char *const *names)
{
    lua_getglobal(L, lib);
    lua_newtable(L);
    copy_fields(L, lua_gettop(L) - 1, names);
    lua_setfield(L, env, lib);
    lua_pop(L, 1);
}

static void
wrap(lua_State *L, int env, const char *lib, const char *name, lua_CFunction f)
{
    lua_getfield(L, env, lib);          /* the sandbox's copy of the library */
    lua_getglobal(L, lib);
    lua_getfield(L, -1, name);          /* the original, as upvalue */
    lua_pushcclosure(L, f, 1);
    lua_setfield(L, -3, name);
    lua_pop(L, 2);
}

int
sandbox_env(lua_State *L, struct script *sc)
{
    static const char *const base[] = {
        "assert", "error", "ipairs", "next", "pairs", "pcall", "rawequal", "rawget", "rawlen",
        "rawset", "select", "setmetatable", "getmetatable", "tonumber", "tostring", "type",
        "xpcall", "_VERSION", NULL};
    static const char *const string_f[] = {
        "byte", "char", "find", "format", "gmatch", "gsub", "len", "lower", "match", "pack",
        "packsize", "rep", "reverse", "sub", "unpack", "upper", NULL};
    static const char *const table_f[] = {"concat", "insert", "move", "pack", "remove", "sort",
                                          "unpack", NULL};
    static const char *const math_f[] = {
        "abs", "ceil", "cos", "deg", "exp", "floor", "fmod", "huge", "log", "max", "maxinteger",
        "min", "mininteger", "modf", "pi", "rad", "random", "randomseed", "sin", "sqrt", "tan",
        "tointeger", "type", "ult", "acos", "asin", "atan", NULL};
    static const char *const utf8_f[] = {"char", "charpattern", "codes", "codepoint", "len",
                                         "offset", NULL};
    static const char *const co_f[] = {"create", "isyieldable", "resume", "running", "status",
                                       "wrap", "yield", "close", NULL};
    static const char *const os_f[] = {"clock", "date", "difftime", "time", "remove",
                                       "rename", NULL};
    static const char *const io_f[] = {"open", "lines", "type", NULL};
    int env;

    if (!sc->rt->sandbox) {
        lua_pushglobaltable(L);
        lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
        lua_getfield(L, LUA_REGISTRYINDEX, "moonlet");
        lua_setfield(L, -2, "moonlet");
        lua_pop(L, 1);
        return 0;
    }
    /* string.dump is reachable through every string's metatable: drop it at the source */
    lua_getglobal(L, "string");
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
    lua_pop(L, 1);
    lua_newtable(L);
    env = lua_gettop(L);
    lua_pushglobaltable(L);
    for (const char *const *n = base; *n; n++) {
        lua_getfield(L, -1, *n);
        lua_setfield(L, env, *n);
    }
    lua_getfield(L, -1, "load");
    lua_pushcclosure(L, s_load, 1);
    lua_setfield(L, env, "load");
    lua_pop(L, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, "moonlet.print");
    lua_setfield(L, env, "print");
    lua_pushcfunction(L, s_collectgarbage);
    lua_setfield(L, env, "collectgarbage");
    copy_lib(L, env, "string", string_f);
    copy_lib(L, env, "table", table_f);
    copy_lib(L, env, "math", math_f);
    copy_lib(L, env, "utf8", utf8_f);
    copy_lib(L, env, "coroutine", co_f);
    copy_lib(L, env, "os", os_f);
    copy_lib(L, env, "io", io_f);
    wrap(L, env, "io", "open", s_io_open);
    wrap(L, env, "io", "lines", s_io_lines);
    wrap(L, env, "os", "remove", s_os_remove);
    wrap(L, env, "os", "rename", s_os_rename);
    lua_newtable(L);                    /* require's cache */
    lua_pushcclosure(L, s_require, 1);
    lua_setfield(L, env, "require");
    lua_pushvalue(L, env);
    lua_setfield(L, env, "_G");
    return 0;
}
