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
#include <ctype.h>
#include <errno.h>
#include <libconfig.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"

#define MAX_ERRORS 20
#define MAX_FILE (16u << 20) /* a configuration is a few KiB; this is something else */

/* A number as the file spells it (see lex). */
struct lit {
    const char *text;
    size_t len;
    unsigned line;
    unsigned hex : 1, longs : 1, real : 1; /* 0x..., an L/LL suffix, a float */
};

/* A numeric setting's exact value, as -o/-s would give it: the setting's hook. */
struct num {
    char text[32];
};

struct ctx {
    const char *file;
    unsigned errors;
    struct config *c;
    struct lit *lits; /* the text's numbers, in order */
    size_t nlits, cap, next;
    struct num *nums; /* one per literal */
};

static void
bad_line(struct ctx *x, unsigned line, const char *fmt, const char *a, const char *b)
{
    char msg[512];

    x->errors++;
    if (x->errors > MAX_ERRORS)
        return;
    snprintf(msg, sizeof msg, fmt, a, b ? b : "");
    log_error("%s:%u: %s", x->file, line, msg);
}

static void
bad(struct ctx *x, const config_setting_t *s, const char *fmt, const char *a, const char *b)
{
    bad_line(x, s ? config_setting_source_line(s) : 0, fmt, a, b);
}

/* A scalar setting as the text a `-o`/`-s` value would be, into buf: 0; or -1, reported
 * (not_scalar, with the setting's name, for a group or a list; a value too long for buf;
 * a number without an exact value was reported by check_numbers). */
static int
value(struct ctx *x, const config_setting_t *s, char *buf, size_t len, const char *not_scalar)
{
    const struct num *n;
    int w;

    switch (config_setting_type(s)) {
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64:
    case CONFIG_TYPE_FLOAT:
        if ((n = config_setting_get_hook(s)) == NULL)
            return -1;
        w = snprintf(buf, len, "%s", n->text);
        break;
    case CONFIG_TYPE_BOOL:
        w = snprintf(buf, len, "%s", config_setting_get_bool(s) ? "true" : "false");
        break;
    case CONFIG_TYPE_STRING:
        w = snprintf(buf, len, "%s", config_setting_get_string(s));
        break;
    default:
        bad(x, s, not_scalar, config_setting_name(s), NULL);
        return -1;
    }
    if (w < 0 || (size_t)w >= len) { /* cut, it could read as another value */
        bad(x, s, "%s: the value is too long", config_setting_name(s), NULL);
        return -1;
    }
    return 0;
}

/* ---- numbers ---------------------------------------------------------------------------
 * libconfig 1.5 as Debian builds it converts a decimal literal without L the way atoi()
 * does (an int: 4294967297 becomes 1, 2^63 becomes -1, -1 stays -1), a hex one with
 * strtoul() cut to an int (0x100000001 becomes 1, 0xFFFFFFFF -1); with L it saturates
 * (atoll: 2^63L becomes 2^63 - 1) or wraps (strtoull: 0xFFFFFFFFFFFFFFFFL becomes -1); a
 * float is atof() (1e400 is inf). None of it is reported. So no parsed number is trusted:
 * the text is scanned for its number literals the way libconfig's scanner (lib/scanner.l)
 * finds them, each numeric setting is matched in order with its literal, which must give
 * libconfig's value computed libconfig's way (else the two scanners disagree: an error,
 * never a guess), and the literal is read again, exactly, as a 64-bit integer or a double.
 */

static size_t
span(const char *p, int (*is)(int))
{
    size_t n = 0;

    while (is((unsigned char)p[n]))
        n++;
    return n;
}

/* [eE][-+]?[0-9]+ */
static size_t
exponent(const char *p)
{
    size_t k = (*p == 'e' || *p == 'E') ? 1 : 0, d;

    if (k == 0)
        return 0;
    if (p[k] == '-' || p[k] == '+')
        k++;
    d = span(p + k, isdigit);
    return d ? k + d : 0;
}

/* L(L)? */
static size_t
suffix(const char *p, struct lit *l)
{
    size_t n = p[0] == 'L' ? (p[1] == 'L' ? 2 : 1) : 0;

    l->longs = n > 0;
    return n;
}

/* The length of the longest of scanner.l's number patterns at p, as flex picks it (integer
 * [-+]?[0-9]+, integer64 with L(L)?, hex 0[Xx][0-9A-Fa-f]+, hex64, float
 * [-+]?[0-9]*\.[0-9]*(exponent)? or [-+]?[0-9]+(\.[0-9]*)?exponent); 0 if none. */
static size_t
number_at(const char *p, struct lit *l)
{
    size_t sign = (*p == '-' || *p == '+'), d = span(p + sign, isdigit), n = sign + d, e;

    if (!sign && p[0] == '0' && (p[1] == 'x' || p[1] == 'X') && isxdigit((unsigned char)p[2])) {
        l->hex = 1;
        n = 2 + span(p + 2, isxdigit);
        return n + suffix(p + n, l);
    }
    if (p[n] == '.') {
        l->real = 1;
        n += 1 + span(p + n + 1, isdigit);
        return n + exponent(p + n);
    }
    if (d == 0)
        return 0;
    if ((e = exponent(p + n)) > 0) {
        l->real = 1;
        return n + e;
    }
    return n + suffix(p + n, l);
}

static int
name_char(int c)
{
    return isalnum(c) || c == '-' || c == '_' || c == '*';
}

/* A string's rest after its opening quote: \" and \\ are escapes; lines are counted. */
static const char *
skip_string(const char *p, unsigned *line)
{
    while (*p && *p != '"') {
        if (p[0] == '\\' && (p[1] == '"' || p[1] == '\\')) {
            p += 2;
            continue;
        }
        *line += *p++ == '\n';
    }
    return *p ? p + 1 : p;
}

static const char *
skip_comment(const char *p, unsigned *line)
{
    while (*p && !(p[0] == '*' && p[1] == '/'))
        *line += *p++ == '\n';
    return *p ? p + 2 : p;
}

static int
lit_add(struct ctx *x, const struct lit *l)
{
    if (x->nlits == x->cap) {
        size_t cap = x->cap ? 2 * x->cap : 64;
        struct lit *n = realloc(x->lits, cap * sizeof *n);

        if (n == NULL)
            return -1;
        x->lits = n;
        x->cap = cap;
    }
    x->lits[x->nlits++] = *l;
    return 0;
}

/* The numbers of text, in order, skipping what scanner.l skips: strings, comments (#, //,
 * block) and names (which may hold digits and '-'). An @include is refused before
 * libconfig would follow it: the numbers of another file could not be checked, and a
 * configuration is one file. 0, or -1 (reported). */
static int
lex(struct ctx *x, const char *p)
{
    unsigned line = 1;

    while (*p) {
        struct lit l = {p, 0, line, 0, 0, 0};

        if (*p == '\n') {
            line++;
            p++;
        } else if (*p == '"') {
            p = skip_string(p + 1, &line);
        } else if (*p == '#' || (p[0] == '/' && p[1] == '/')) {
            p += strcspn(p, "\n");
        } else if (p[0] == '/' && p[1] == '*') {
            p = skip_comment(p + 2, &line);
        } else if (isalpha((unsigned char)*p) || *p == '*') {
            p += 1 + span(p + 1, name_char);
        } else if (strncmp(p, "@include", 8) == 0) {
            bad_line(x, line, "@include: not supported (the configuration is one file)", NULL,
                     NULL);
            return -1;
        } else if ((l.len = number_at(p, &l)) > 0) {
            if (lit_add(x, &l) < 0) {
                bad_line(x, line, "out of memory", NULL, NULL);
                return -1;
            }
            p += l.len;
        } else {
            p++;
        }
    }
    return 0;
}

/* Does literal l (tok: its text alone) give setting s's value, computed as libconfig does? */
static int
parsed_as(const struct lit *l, const char *tok, const config_setting_t *s)
{
    switch (config_setting_type(s)) {
    case CONFIG_TYPE_INT:
        return !l->real && !l->longs &&
               config_setting_get_int(s) ==
                   (l->hex ? (int)strtoul(tok, NULL, 16) : (int)strtol(tok, NULL, 10));
    case CONFIG_TYPE_INT64:
        return !l->real && l->longs &&
               config_setting_get_int64(s) ==
                   (l->hex ? (long long)strtoull(tok, NULL, 16) : strtoll(tok, NULL, 10));
    default:
        return l->real && config_setting_get_float(s) == strtod(tok, NULL);
    }
}

/* The literal's exact value as text into n; NULL, or why it has none: an integer beyond
 * 64 bits (a hex one is a non-negative value, so at most 0x7FFFFFFFFFFFFFFF), a float
 * beyond a double's range or below its precision, "." (scanner.l's float, atof's 0). */
static const char *
exact(const struct lit *l, const char *tok, struct num *n)
{
    char *end;

    errno = 0;
    if (l->real) {
        double v = strtod(tok, &end);

        if (end == tok)
            return "not a number";
        if (*end != '\0' || errno || !isfinite(v))
            return "out of the range of a double";
        snprintf(n->text, sizeof n->text, "%.17g", v);
    } else if (l->hex) {
        unsigned long long v = strtoull(tok, &end, 16);

        if (errno || v > INT64_MAX)
            return "out of the range of a 64-bit integer";
        snprintf(n->text, sizeof n->text, "%llu", v);
    } else {
        long long v = strtoll(tok, &end, 10);

        if (errno)
            return "out of the range of a 64-bit integer";
        snprintf(n->text, sizeof n->text, "%lld", v);
    }
    return NULL;
}

/* A setting's name for a message, with its group's ("settings.max_sessions"); a list
 * element goes by its list's. */
static const char *
label(const config_setting_t *s, char *buf, size_t len)
{
    const config_setting_t *p = config_setting_parent(s);
    const char *name = config_setting_name(s);

    if (name == NULL) {
        name = p && config_setting_name(p) ? config_setting_name(p) : "a list element";
        p = p ? config_setting_parent(p) : NULL;
    }
    if (p && config_setting_name(p))
        snprintf(buf, len, "%s.%s", config_setting_name(p), name);
    else
        snprintf(buf, len, "%s", name);
    return buf;
}

/* The scanners disagree at line (the text is not what libconfig read): refuse rather than
 * guess. A fuzzing build stops here instead, for this is a bug of lex(). */
static void
mismatch(struct ctx *x, unsigned line)
{
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
    abort();
#endif
    bad_line(x, line, "a number that cannot be checked against libconfig's reading of it", NULL,
             NULL);
    x->next = x->nlits + 1; /* out of step: the numbers after it are not checked */
}

/* Each numeric setting under s, in file order, with its literal: its exact value becomes
 * the setting's hook, or the literal is reported (FILE:LINE of the literal). */
static void
check_numbers(struct ctx *x, config_setting_t *s)
{
    int type = config_setting_type(s);
    char name[160], what[240];
    const struct lit *l;
    const char *why;
    char *tok;

    if (config_setting_is_aggregate(s)) {
        for (unsigned i = 0; i < (unsigned)config_setting_length(s); i++)
            check_numbers(x, config_setting_get_elem(s, i));
        return;
    }
    if ((type != CONFIG_TYPE_INT && type != CONFIG_TYPE_INT64 && type != CONFIG_TYPE_FLOAT) ||
        x->next > x->nlits)
        return;
    if (x->next == x->nlits) {
        mismatch(x, config_setting_source_line(s));
        return;
    }
    l = &x->lits[x->next];
    if ((tok = strndup(l->text, l->len)) == NULL) {
        bad(x, s, "out of memory", NULL, NULL);
        return;
    }
    if (!parsed_as(l, tok, s)) {
        mismatch(x, l->line);
    } else if ((why = exact(l, tok, &x->nums[x->next])) != NULL) {
        snprintf(what, sizeof what, "%s = %.40s%s", label(s, name, sizeof name), tok,
                 l->len > 40 ? "..." : "");
        bad_line(x, l->line, "%s: %s", what, why);
    } else {
        config_setting_set_hook(s, &x->nums[x->next]);
    }
    if (x->next < x->nlits)
        x->next++;
    free(tok);
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

/* "coap://[ADDR]:PORT", "coap://ADDR:PORT", port optional (5683, RFC 7252 §6.1); the same
 * with coaps:// (5684, §6.2). */
int
config_parse_listen(const char *uri, struct config_listen *l)
{
    const char *p = uri, *end;
    char *e;
    long port = 5683;

    l->addr = NULL;
    if ((l->scheme = scheme_of(uri)) == NULL)
        return -1;
    port = l->scheme->port;
    p += strlen(l->scheme->name) + 3;
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

const char *
config_listen_why(const struct config_listen *l, char *buf, size_t len)
{
    (void)l;
    snprintf(buf, len, "not SCHEME://ADDR:PORT (%s; IPv6 in brackets)", scheme_names());
    return buf;
}

static void
settings(struct ctx *x, const config_setting_t *g)
{
    char val[1024], err[256];

    if (!config_setting_is_group(g)) {
        bad(x, g, "settings must be a group: { key = value; ... }", NULL, NULL);
        return;
    }
    for (unsigned i = 0; i < (unsigned)config_setting_length(g); i++) {
        const config_setting_t *s = config_setting_get_elem(g, i);

        if (value(x, s, val, sizeof val,
                  "settings.%s: a number or a string, not a group or "
                  "list") < 0)
            continue;
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
    char val[4096], err[256];

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
        } else if (value(x, s, val, sizeof val, "lua.%s: a number, a string or a boolean") < 0) {
            continue;
        }
        if (strcmp(name, "sandbox") == 0 && config_setting_type(s) == CONFIG_TYPE_BOOL)
            snprintf(val, sizeof val, "%s", config_setting_get_bool(s) ? "on" : "off");
        /* -t checks the runtime's limits too, though it loads no script */
        if (config_lua_limit(name, val, NULL, err, sizeof err) < 0)
            bad(x, s, "%s", err, NULL);
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

                if (value(x, kv, val, sizeof val,
                          "settings.%s: a number, a string or a "
                          "boolean") < 0)
                    continue;
                item_add(&tail, "", config_setting_name(kv), val);   /* "": this unit's */
            }
        }
    }
}

/* listen = [ "coap://...", ... ] */
static void
listeners(struct ctx *x, const config_setting_t *s)
{
    struct config *c = x->c;
    unsigned n;
    char **uris = strings(x, s, &n);

    c->listen = calloc(n ? n : 1, sizeof *c->listen);
    for (unsigned i = 0; uris && c->listen && i < n; i++) {
        struct config_listen *l = &c->listen[c->nlisten];

        if (config_parse_listen(uris[i], l) == 0) {
            c->nlisten++;
            continue;
        }
        char why[200];

        free(l->addr);
        l->addr = NULL;     /* the next entry reuses the slot */
        bad(x, s, "listen: '%s': %s", uris[i], config_listen_why(l, why, sizeof why));
    }
    for (unsigned i = 0; uris && i < n; i++)
        free(uris[i]);
    free(uris);
}

static void
level(struct ctx *x, const config_setting_t *s)
{
    static const char *const levels[] = {"error", "warn", "info", "debug"};
    const char *v = config_setting_get_string(s);

    for (int i = 0; v && i < 4; i++)
        if (strcmp(v, levels[i]) == 0)
            x->c->log_level = MOONLET_LOG_ERROR + i;
    if (x->c->log_level == CONFIG_UNSET)
        bad(x, s, "log_level: one of \"error\", \"warn\", \"info\", \"debug\"", NULL, NULL);
}

/* watch, admin: booleans over -o keys */
static void
flag(struct ctx *x, const config_setting_t *s, const char *key)
{
    if (config_setting_type(s) != CONFIG_TYPE_BOOL)
        bad(x, s, "%s: true or false", key, NULL);
    else
        server_config_set(&x->c->cfg, key, config_setting_get_bool(s) ? "1" : "0", NULL, 0);
}

/* A path as the file gives it: relative to the file's directory. */
static char *
resolve(const char *path, const char *dir)
{
    char *out;

    if (path[0] == '/' || dir == NULL)
        return strdup(path);
    if ((out = malloc(strlen(dir) + strlen(path) + 2)) != NULL)
        sprintf(out, "%s/%s", dir, path);
    return out;
}

/* dtls = { psk = ( { identity = "..."; key = "..."; }, ... ); psk_file = "..."; ... } */
static void
dtls_group(struct ctx *x, const config_setting_t *g, const char *dir)
{
    static const char *const files[] = {"psk_file", "certificate", "key", "ca", "crl", "rpk",
                                        "rpk_key", NULL};
    static const char *const texts[] = {"psk_hint", "client_auth", "priority", NULL};
    struct dtls_config *d = &x->c->dtls;
    char err[256];

    x->c->dtls_line = config_setting_source_line(g);
    if (!config_setting_is_group(g)) {
        bad(x, g, "dtls must be a group: { psk = ( ... ); certificate = \"...\"; ... }", NULL,
            NULL);
        return;
    }
    for (unsigned i = 0; i < (unsigned)config_setting_length(g); i++) {
        const config_setting_t *s = config_setting_get_elem(g, i);
        const char *name = config_setting_name(s), *v;
        int k, f = -1, t = -1;

        for (k = 0; files[k]; k++)
            if (strcmp(files[k], name) == 0)
                f = k;
        for (k = 0; texts[k]; k++)
            if (strcmp(texts[k], name) == 0)
                t = k;
        if (f >= 0 || t >= 0) {
            char *path = NULL;

            if ((v = config_setting_get_string(s)) == NULL || *v == '\0') {
                bad(x, s, "dtls.%s: a string", name, NULL);
                continue;
            }
            if (f >= 0 && (path = resolve(v, dir)) == NULL)
                continue;
            if (dtls_config_set(d, name, path ? path : v, err, sizeof err) < 0)
                bad(x, s, "dtls.%s", err, NULL);
            free(path);
        } else if (strcmp(name, "rpk_clients") == 0 && config_setting_is_aggregate(s)) {
            for (unsigned j = 0; j < (unsigned)config_setting_length(s); j++) {
                const char *h = config_setting_get_string_elem(s, (int)j);

                if (h == NULL)
                    bad(x, s, "dtls.rpk_clients: a list of strings \"sha256:HEX\"", NULL, NULL);
                else if (dtls_config_set(d, "rpk_client", h, err, sizeof err) < 0)
                    bad(x, s, "dtls.%s", err, NULL);
            }
        } else if (strcmp(name, "psk") == 0 && config_setting_is_list(s)) {
            for (unsigned j = 0; j < (unsigned)config_setting_length(s); j++) {
                const config_setting_t *e = config_setting_get_elem(s, j);
                const char *id = NULL, *key = NULL, *hex = NULL;
                int n = config_setting_length(e);

                if (!config_setting_is_group(e) ||
                    !config_setting_lookup_string(e, "identity", &id) ||
                    (config_setting_lookup_string(e, "key", &key) +
                     config_setting_lookup_string(e, "hex", &hex)) != 1 ||
                    n != 2 || *id == '\0') {
                    bad(x, e, "dtls.psk: each entry { identity = \"...\"; key = \"text\"; } or "
                        "{ identity = \"...\"; hex = \"00ff...\"; }", NULL, NULL);
                    continue;
                }
                if (dtls_config_psk(d, id, hex ? hex : key, hex != NULL, err, sizeof err) < 0)
                    bad(x, e, "dtls.psk: %s", err, NULL);
            }
        } else {
            bad(x, s, "dtls.%s: unknown key, or not of its kind (psk = ( {...} ), psk_file, "
                "psk_hint, certificate, key, ca, crl, client_auth, rpk, rpk_key, rpk_clients = "
                "[...], priority)", name, NULL);
        }
    }
}

void
config_rules_free(struct access_rule *r, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        free(r[i].path);
        acl_free(&r[i].acl);
    }
    free(r);
}

/* access = ( { path = "/fw/x"; secure = true; allow = [ "psk:fw-1" ]; }, ... ) */
static void
access_list(struct ctx *x, const config_setting_t *l)
{
    struct config *c = x->c;
    unsigned n = config_setting_is_list(l) ? (unsigned)config_setting_length(l) : 0;
    char err[256];

    if (!config_setting_is_list(l)) {
        bad(x, l, "access must be a list: ( { path = \"/x/*\"; allow = [ \"psk:*\" ]; }, ... )",
            NULL, NULL);
        return;
    }
    if ((c->rules = calloc(n ? n : 1, sizeof *c->rules)) == NULL)
        return;
    for (unsigned i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(l, i), *a;
        const char *path = NULL, *pats[65];
        int secure = 0, ok = 1;
        unsigned np = 0;

        if (!config_setting_is_group(e) || !config_setting_lookup_string(e, "path", &path) ||
            path[0] != '/') {
            bad(x, e, "access: each entry has a path starting with '/'", NULL, NULL);
            continue;
        }
        for (unsigned j = 0; j < (unsigned)config_setting_length(e); j++) {
            const char *name = config_setting_name(config_setting_get_elem(e, j));

            if (strcmp(name, "path") && strcmp(name, "secure") && strcmp(name, "allow")) {
                bad(x, e, "access: unknown key '%s' (path, secure, allow)", name, NULL);
                ok = 0;
            }
        }
        if ((a = config_setting_get_member(e, "secure")) != NULL) {
            if (config_setting_type(a) != CONFIG_TYPE_BOOL) {
                bad(x, a, "access.secure: true or false", NULL, NULL);
                ok = 0;
            }
            secure = config_setting_get_bool(a);
        }
        if ((a = config_setting_get_member(e, "allow")) != NULL) {
            if (!config_setting_is_aggregate(a) || config_setting_length(a) > 64 ||
                config_setting_length(a) == 0) {
                bad(x, a, "access.allow: a list of 1 to 64 identity patterns", NULL, NULL);
                ok = 0;
            }
            for (unsigned j = 0; ok && j < (unsigned)config_setting_length(a); j++)
                if ((pats[np++] = config_setting_get_string_elem(a, (int)j)) == NULL) {
                    bad(x, a, "access.allow: strings", NULL, NULL);
                    ok = 0;
                }
        }
        pats[np] = NULL;
        if (!ok)
            continue;
        if (acl_copy(&c->rules[c->nrules].acl, secure, a && np ? pats : NULL, err,
                     sizeof err) < 0) {
            bad(x, e, "access: %s", err, NULL);
            continue;
        }
        if (!c->rules[c->nrules].acl.secure)
            bad(x, e, "access: '%s' asks nothing (secure = true, or allow = [ ... ])", path,
                NULL);
        c->rules[c->nrules++].path = strdup(path);
    }
}

/* Every top-level key, checked; dir: the file's directory (relative unit paths). */
static void
check_root(struct ctx *x, const config_setting_t *root, const char *dir)
{
    static const char *const known[] = {"listen", "multicast", "log_level", "settings", "lua",
                                        "plugins", "scripts", "watch", "admin", "dtls",
                                        "access", NULL};
    const config_setting_t *s;

    for (unsigned i = 0; i < (unsigned)config_setting_length(root); i++) {
        const char *name = config_setting_name(config_setting_get_elem(root, i));
        int k;

        for (k = 0; known[k] && strcmp(known[k], name); k++)
            ;
        if (known[k] == NULL)
            bad(x, config_setting_get_elem(root, i),
                "unknown key '%s' (listen, multicast, "
                "log_level, settings, lua, plugins, scripts, watch, admin, dtls, access)",
                name, NULL);
    }
    if ((s = config_setting_get_member(root, "listen")) != NULL)
        listeners(x, s);
    if ((s = config_setting_get_member(root, "multicast")) != NULL)
        x->c->multicast = strings(x, s, &x->c->nmulticast);
    if ((s = config_setting_get_member(root, "log_level")) != NULL)
        level(x, s);
    if ((s = config_setting_get_member(root, "settings")) != NULL)
        settings(x, s);
    if ((s = config_setting_get_member(root, "watch")) != NULL)
        flag(x, s, "watch");
    if ((s = config_setting_get_member(root, "admin")) != NULL)
        flag(x, s, "admin");
    if ((s = config_setting_get_member(root, "lua")) != NULL)
        lua_group(x, s);
    if ((s = config_setting_get_member(root, "plugins")) != NULL)
        units(x, s, ".so", dir);
    if ((s = config_setting_get_member(root, "scripts")) != NULL)
        units(x, s, ".lua", dir);
    if ((s = config_setting_get_member(root, "dtls")) != NULL)
        dtls_group(x, s, dir);
    if ((s = config_setting_get_member(root, "access")) != NULL)
        access_list(x, s);
}

/* libconfig's parse of text, its numbers checked (see "numbers" above). 0, or -1. */
static int
parse(struct ctx *x, config_t *cf, const char *text)
{
    if (lex(x, text) < 0)
        return -1;
    if (config_read_string(cf, text) != CONFIG_TRUE) {
        log_error("%s:%d: syntax error: %s", x->file, config_error_line(cf), config_error_text(cf));
        return -1;
    }
    if ((x->nums = calloc(x->nlits ? x->nlits : 1, sizeof *x->nums)) == NULL) {
        log_error("%s: out of memory", x->file);
        return -1;
    }
    check_numbers(x, config_root_setting(cf));
    if (x->next < x->nlits) /* a literal no setting took: the scanners disagree */
        mismatch(x, x->lits[x->next].line);
    return 0;
}

struct config *
config_parse(const char *file, const char *text)
{
    struct config *c = calloc(1, sizeof *c);
    struct ctx x = {.file = file, .c = c};
    const char *slash = strrchr(file, '/');
    char *dir = NULL;
    config_t cf;

    if (c == NULL)
        return NULL;
    config_init(&cf);
    server_config_defaults(&c->cfg);
    c->log_level = CONFIG_UNSET;
    if (slash)
        dir = strndup(file, (size_t)(slash - file));
    if ((c->file = strdup(file)) == NULL || (slash && dir == NULL)) {
        log_error("%s: out of memory", file);
        x.errors++;
    } else if (parse(&x, &cf, text) < 0) {
        x.errors++;
    } else {
        check_root(&x, config_root_setting(&cf), dir);
    }
    if (x.errors > MAX_ERRORS)
        log_error("%s: %u more problems", file, x.errors - MAX_ERRORS);
    free(dir);
    config_destroy(&cf);
    free(x.lits);
    free(x.nums);
    if (x.errors) {
        config_free(c);
        return NULL;
    }
    return c;
}

/* The whole file as a string; NULL if it cannot be read or holds a NUL byte (libconfig
 * reads text: a NUL would end the string early and hide what follows). */
static char *
slurp(const char *file)
{
    FILE *f = fopen(file, "r");
    size_t len = 0, cap = 0;
    char *text = NULL, *nul;
    int ok = 0;

    while (f != NULL && !ok && !ferror(f)) {
        if (len == cap) {
            char *n = cap < MAX_FILE ? realloc(text, (cap ? 2 * cap : 65536) + 1) : NULL;

            if (n == NULL)
                break;
            text = n;
            cap = cap ? 2 * cap : 65536;
        }
        len += fread(text + len, 1, cap - len, f);
        ok = feof(f) && !ferror(f);
    }
    if (f != NULL)
        fclose(f);
    if (!ok) {
        log_error("%s: cannot read the configuration file%s", file,
                  cap >= MAX_FILE ? " (over 16 MiB)" : "");
        free(text);
        return NULL;
    }
    if ((nul = memchr(text, '\0', len)) != NULL) {
        unsigned line = 1;

        for (const char *p = text; p < nul; p++)
            line += *p == '\n';
        log_error("%s:%u: a NUL byte: this is not a text file", file, line);
        free(text);
        return NULL;
    }
    text[len] = '\0';
    return text;
}

struct config *
config_load(const char *file)
{
    char *text = slurp(file);
    struct config *c;

    if (text == NULL)
        return NULL;
    c = config_parse(file, text);
    free(text);
    return c;
}

int
config_lua_limit(const char *key, const char *value, unsigned long long *out, char *err,
                 size_t errlen)
{
    /* memory: a cap past any machine's memory is a typo, not a wish; instructions: the
     * count hook takes an int (lua_sethook) */
    static const struct {
        const char *key, *what;
        unsigned long long min, max;
    } limits[] = {
        {"memory", "bytes", 65536, 1ULL << 40},
        {"instructions", "a count (0: none)", 0, 2000000000},
    };

    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
        unsigned long long v;
        char *end;

        if (strcmp(limits[i].key, key) != 0)
            continue;
        errno = 0;
        v = strtoull(value, &end, 10);
        /* strtoull takes "-1" for 2^64 - 1 and saturates silently: digits only */
        if (!isdigit((unsigned char)*value) || *end != '\0' || errno || v < limits[i].min ||
            v > limits[i].max) {
            snprintf(err, errlen, "lua.%s=%s: %s, %llu..%llu", key, value, limits[i].what,
                     limits[i].min, limits[i].max);
            return -1;
        }
        if (out)
            *out = v;
        return 0;
    }
    return 0;
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
    dtls_config_free(&c->dtls);
    config_rules_free(c->rules, c->nrules);
    free(c->file);
    free(c);
}
