/*
 * config.c -- the configuration file, read with libconfig (Debian libconfig-dev): a syntax
 * people already know from other daemons, with line numbers for every setting, so each
 * problem is reported as FILE:LINE. See examples/moonlet.conf and the README.
 *
 *   listen    = [ "coap://[::]:5683" ];     multicast = [ "eth0" ];
 *   log_level = "info";                    watch = true;  admin = false;
 *   settings  = { ack_timeout = 2.0; ... };   any `-o` key
 *   lua       = { memory = 67108864; ... };   `-s lua.KEY`
 *   plugins   = ( { path = "x.so"; settings = { ... }; } );
 *   scripts   = ( { path = "y.lua"; settings = { ... }; } );
 */
#include <libconfig.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"

#define MAX_ERRORS 20

struct ctx {
    const char *file;
    unsigned errors;
    struct config *c;
};

static void
bad(struct ctx *x, const config_setting_t *s, const char *fmt, const char *a, const char *b)
{
    char msg[512];

    x->errors++;
    if (x->errors > MAX_ERRORS)
        return;
    snprintf(msg, sizeof msg, fmt, a, b ? b : "");
    log_error("%s:%d: %s", x->file, s ? config_setting_source_line(s) : 0, msg);
}

/* A scalar setting as the text a `-o`/`-s` value would be; NULL for a group or list. */
static int
scalar(const config_setting_t *s, char *buf, size_t len)
{
    switch (config_setting_type(s)) {
    case CONFIG_TYPE_INT:
        snprintf(buf, len, "%d", config_setting_get_int(s));
        return 0;
    case CONFIG_TYPE_INT64:
        snprintf(buf, len, "%lld", config_setting_get_int64(s));
        return 0;
    case CONFIG_TYPE_FLOAT:
        snprintf(buf, len, "%.17g", config_setting_get_float(s));
        return 0;
    case CONFIG_TYPE_BOOL:
        snprintf(buf, len, "%s", config_setting_get_bool(s) ? "true" : "false");
        return 0;
    case CONFIG_TYPE_STRING:
        snprintf(buf, len, "%s", config_setting_get_string(s));
        return 0;
    default:
        return -1;
    }
}

static int
item_add(struct conf_item ***tail, const char *plugin, const char *key, const char *value)
{
    struct conf_item *n = calloc(1, sizeof *n);

    if (n == NULL || (n->plugin = strdup(plugin)) == NULL || (n->key = strdup(key)) == NULL ||
        (n->value = strdup(value)) == NULL) {
        if (n) {
            free(n->plugin);
            free(n->key);
            free(n);
        }
        return -1;
    }
    **tail = n;
    *tail = &n->next;
    return 0;
}

/* A list of strings (listen, multicast). */
static char **
strings(struct ctx *x, const config_setting_t *s, unsigned *n)
{
    int len = config_setting_length(s);
    char **out;

    *n = 0;
    if (!config_setting_is_array(s) && !config_setting_is_list(s)) {
        bad(x, s, "%s must be a list of strings: [ \"...\", ... ]", config_setting_name(s), NULL);
        return NULL;
    }
    if ((out = calloc((size_t)len + 1, sizeof *out)) == NULL)
        return NULL;
    for (int i = 0; i < len; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);

        if (config_setting_type(e) != CONFIG_TYPE_STRING) {
            bad(x, e, "%s: every element must be a string", config_setting_name(s), NULL);
            continue;
        }
        out[(*n)++] = strdup(config_setting_get_string(e));
    }
    return out;
}

/* "coap://[ADDR]:PORT", "coap://ADDR:PORT", port optional (5683, RFC 7252 §6.1). */
static int
parse_listen(const char *uri, struct config_listen *l)
{
    const char *p = uri, *end;
    char *e;
    long port = 5683;

    if (strncmp(p, "coap://", 7) != 0)
        return -1;
    p += 7;
    if (*p == '[') {
        if ((end = strchr(p, ']')) == NULL)
            return -1;
        l->addr = strndup(p + 1, (size_t)(end - p - 1));
        p = end + 1;
    } else {
        end = strchr(p, ':');
        end = end ? end : p + strlen(p);
        l->addr = strndup(p, (size_t)(end - p));
        p = end;
    }
    if (l->addr == NULL || *l->addr == '\0')
        return -1;
    if (*p == ':') {
        port = strtol(p + 1, &e, 10);
        if (p[1] == '\0' || *e != '\0' || port < 0 || port > 65535)
            return -1;
    } else if (*p != '\0') {
        return -1;
    }
    l->port = (unsigned)port;
    return 0;
}

static void
settings(struct ctx *x, const config_setting_t *g)
{
    char val[128], err[256];

    if (!config_setting_is_group(g)) {
        bad(x, g, "settings must be a group: { key = value; ... }", NULL, NULL);
        return;
    }
    for (unsigned i = 0; i < (unsigned)config_setting_length(g); i++) {
        const config_setting_t *s = config_setting_get_elem(g, i);

        if (scalar(s, val, sizeof val) < 0) {
            bad(x, s, "settings.%s: a number or a string, not a group or list",
                config_setting_name(s), NULL);
            continue;
        }
        if (server_config_set(&x->c->cfg, config_setting_name(s), val, err, sizeof err) < 0)
            bad(x, s, "settings: %s", err, NULL);
    }
}

static void
lua_group(struct ctx *x, const config_setting_t *g)
{
    static const char *const known[] = {"memory", "instructions", "errors", "sandbox", "paths",
                                        NULL};
    struct conf_item **tail = &x->c->lua;
    char val[4096];

    if (!config_setting_is_group(g)) {
        bad(x, g, "lua must be a group: { memory = ...; ... }", NULL, NULL);
        return;
    }
    for (unsigned i = 0; i < (unsigned)config_setting_length(g); i++) {
        const config_setting_t *s = config_setting_get_elem(g, i);
        const char *name = config_setting_name(s);
        int k;

        for (k = 0; known[k] && strcmp(known[k], name); k++)
            ;
        if (known[k] == NULL) {
            bad(x, s, "lua.%s: unknown key (memory, instructions, errors, sandbox, paths)",
                name, NULL);
            continue;
        }
        if (strcmp(name, "paths") == 0 && config_setting_is_aggregate(s)) {
            size_t len = 0;         /* a list of directories, ':'-joined as -s wants */

            val[0] = '\0';
            for (unsigned j = 0; j < (unsigned)config_setting_length(s); j++) {
                const char *d = config_setting_get_string_elem(s, (int)j);

                if (d == NULL) {
                    bad(x, s, "lua.paths: a list of strings", NULL, NULL);
                    break;
                }
                len += (size_t)snprintf(val + len, len < sizeof val ? sizeof val - len : 0,
                                        "%s%s", j ? ":" : "", d);
            }
        } else if (scalar(s, val, sizeof val) < 0) {
            bad(x, s, "lua.%s: a number, a string or a boolean", name, NULL);
            continue;
        }
        if (strcmp(name, "sandbox") == 0 && config_setting_type(s) == CONFIG_TYPE_BOOL)
            snprintf(val, sizeof val, "%s", config_setting_get_bool(s) ? "on" : "off");
        item_add(&tail, "lua", name, val);
    }
}

/* plugins = ( { path = "..."; settings = { ... }; }, ... ) and the same for scripts. */
static void
units(struct ctx *x, const config_setting_t *list, const char *suffix, const char *dir)
{
    const char *what = config_setting_name(list);

    if (!config_setting_is_list(list) && !config_setting_is_array(list)) {
        bad(x, list, "%s must be a list of groups: ( { path = \"...\"; }, ... )", what, NULL);
        return;
    }
    for (unsigned i = 0; i < (unsigned)config_setting_length(list); i++) {
        const config_setting_t *e = config_setting_get_elem(list, i), *p, *s;
        struct config_unit *u;
        struct conf_item **tail;
        const char *path;
        char val[1024];
        size_t n;

        if (!config_setting_is_group(e)) {
            bad(x, e, "%s: each entry is a group { path = \"...\"; settings = { ... }; }",
                what, NULL);
            continue;
        }
        for (unsigned j = 0; j < (unsigned)config_setting_length(e); j++) {
            const char *k = config_setting_name(config_setting_get_elem(e, j));

            if (strcmp(k, "path") && strcmp(k, "settings"))
                bad(x, config_setting_get_elem(e, j), "%s: unknown key '%s' (path, settings)",
                    what, k);
        }
        if ((p = config_setting_get_member(e, "path")) == NULL ||
            (path = config_setting_get_string(p)) == NULL) {
            bad(x, e, "%s: an entry without a path (a string)", what, NULL);
            continue;
        }
        n = strlen(path);
        if (n < strlen(suffix) || strcmp(path + n - strlen(suffix), suffix) != 0) {
            bad(x, p, "%s: '%s' does not end in the expected suffix", what, path);
            continue;
        }
        u = realloc(x->c->units, (x->c->nunits + 1) * sizeof *u);
        if (u == NULL)
            continue;
        x->c->units = u;
        u = &x->c->units[x->c->nunits++];
        memset(u, 0, sizeof *u);
        if (path[0] == '/' || dir == NULL) {
            u->path = strdup(path);
        } else if ((u->path = malloc(strlen(dir) + n + 2)) != NULL) {
            sprintf(u->path, "%s/%s", dir, path);     /* relative to the config file */
        }
        tail = &u->settings;
        if ((s = config_setting_get_member(e, "settings")) != NULL) {
            if (!config_setting_is_group(s)) {
                bad(x, s, "%s: settings must be a group { key = value; ... }", what, NULL);
                continue;
            }
            for (unsigned j = 0; j < (unsigned)config_setting_length(s); j++) {
                const config_setting_t *kv = config_setting_get_elem(s, j);

                if (scalar(kv, val, sizeof val) < 0) {
                    bad(x, kv, "settings.%s: a number, a string or a boolean",
                        config_setting_name(kv), NULL);
                    continue;
                }
                item_add(&tail, "", config_setting_name(kv), val);   /* "": this unit's */
            }
        }
    }
}

struct config *
config_load(const char *file)
{
    static const char *const known[] = {"listen", "multicast", "log_level", "settings", "lua",
                                        "plugins", "scripts", "watch", "admin", NULL};
    struct config *c = calloc(1, sizeof *c);
    struct ctx x = {file, 0, c};
    const config_setting_t *root, *s;
    char *dir = NULL, *slash;
    config_t cf;

    if (c == NULL)
        return NULL;
    config_init(&cf);
    server_config_defaults(&c->cfg);
    c->log_level = CONFIG_UNSET;
    if ((c->file = strdup(file)) == NULL)
        goto fail;
    if (config_read_file(&cf, file) != CONFIG_TRUE) {
        if (config_error_type(&cf) == CONFIG_ERR_FILE_IO)
            log_error("%s: cannot read the configuration file", file);
        else
            log_error("%s:%d: syntax error: %s", file, config_error_line(&cf),
                      config_error_text(&cf));
        goto fail;
    }
    if ((slash = strrchr(file, '/')) != NULL)
        dir = strndup(file, (size_t)(slash - file));
    root = config_root_setting(&cf);
    for (unsigned i = 0; i < (unsigned)config_setting_length(root); i++) {
        const char *name = config_setting_name(config_setting_get_elem(root, i));
        int k;

        for (k = 0; known[k] && strcmp(known[k], name); k++)
            ;
        if (known[k] == NULL)
            bad(&x, config_setting_get_elem(root, i), "unknown key '%s' (listen, multicast, "
                "log_level, settings, lua, plugins, scripts, watch, admin)", name, NULL);
    }
    if ((s = config_setting_get_member(root, "listen")) != NULL) {
        unsigned n;
        char **uris = strings(&x, s, &n);

        c->listen = calloc(n ? n : 1, sizeof *c->listen);
        for (unsigned i = 0; uris && c->listen && i < n; i++) {
            static const char *later[] = {"coaps://", "coap+tcp://", "coaps+tcp://",
                                          "coap+ws://", "coaps+ws://", NULL};
            unsigned k = 0;

            while (later[k] && strncmp(uris[i], later[k], strlen(later[k])) != 0)
                k++;
            if (later[k]) {     /* RFC 7252 §6.2, RFC 8323 §8: schemes still to come */
                bad(&x, s, "listen: '%s': %s listeners are not built yet (coap:// only)",
                    uris[i], later[k]);
            } else if (parse_listen(uris[i], &c->listen[c->nlisten]) < 0) {
                free(c->listen[c->nlisten].addr);
                bad(&x, s, "listen: '%s' is not coap://ADDR:PORT (IPv6 in brackets)", uris[i],
                    NULL);
            } else {
                c->nlisten++;
            }
        }
        for (unsigned i = 0; uris && i < n; i++)
            free(uris[i]);
        free(uris);
    }
    if ((s = config_setting_get_member(root, "multicast")) != NULL)
        c->multicast = strings(&x, s, &c->nmulticast);
    if ((s = config_setting_get_member(root, "log_level")) != NULL) {
        static const char *const levels[] = {"error", "warn", "info", "debug"};
        const char *v = config_setting_get_string(s);

        for (int i = 0; v && i < 4; i++)
            if (strcmp(v, levels[i]) == 0)
                c->log_level = MOONLET_LOG_ERROR + i;
        if (c->log_level == CONFIG_UNSET)
            bad(&x, s, "log_level: one of \"error\", \"warn\", \"info\", \"debug\"", NULL, NULL);
    }
    if ((s = config_setting_get_member(root, "settings")) != NULL)
        settings(&x, s);
    for (int i = 0; i < 2; i++) {       /* watch, admin: booleans over -o keys */
        const char *key = i ? "admin" : "watch";

        if ((s = config_setting_get_member(root, key)) == NULL)
            continue;
        if (config_setting_type(s) != CONFIG_TYPE_BOOL)
            bad(&x, s, "%s: true or false", key, NULL);
        else
            server_config_set(&c->cfg, key, config_setting_get_bool(s) ? "1" : "0", NULL, 0);
    }
    if ((s = config_setting_get_member(root, "lua")) != NULL)
        lua_group(&x, s);
    if ((s = config_setting_get_member(root, "plugins")) != NULL)
        units(&x, s, ".so", dir);
    if ((s = config_setting_get_member(root, "scripts")) != NULL)
        units(&x, s, ".lua", dir);
    if (x.errors > MAX_ERRORS)
        log_error("%s: %u more problems", file, x.errors - MAX_ERRORS);
    free(dir);
    config_destroy(&cf);
    if (x.errors) {
        config_free(c);
        return NULL;
    }
    return c;
fail:
    config_destroy(&cf);
    config_free(c);
    return NULL;
}

void
config_free(struct config *c)
{
    if (c == NULL)
        return;
    for (unsigned i = 0; i < c->nlisten; i++)
        free(c->listen[i].addr);
    free(c->listen);
    for (unsigned i = 0; i < c->nmulticast; i++)
        free(c->multicast[i]);
    free(c->multicast);
    conf_list_free(c->lua);
    for (unsigned i = 0; i < c->nunits; i++) {
        free(c->units[i].path);
        conf_list_free(c->units[i].settings);
    }
    free(c->units);
    free(c->file);
    free(c);
}
