/*
 * config.h -- the configuration file (`moonlet -c FILE`), in libconfig's syntax: parsed
 * and validated whole, every problem reported as `FILE:LINE: what is wrong`.
 */
#ifndef CONFIG_H
#define CONFIG_H

#include "access.h"
#include "dtls.h"
#include "plugin.h"
#include "server.h"

struct config_listen {
    char *addr;                         /* "::", "127.0.0.1" */
    unsigned port;
    const struct scheme *scheme;        /* coap, coaps (transport.h) */
};

struct config_unit {
    char *path;                         /* absolute, or relative to the working directory */
    struct conf_item *settings;         /* its own (plugin ""), then the lua ones */
};

struct config {
    char *file;
    struct config_listen *listen;
    unsigned nlisten;
    char **multicast;
    unsigned nmulticast;
    int log_level;                      /* MOONLET_LOG_*, or CONFIG_UNSET */
    struct server_config cfg;           /* the defaults with `settings` applied */
    struct conf_item *lua;              /* plugin "lua" */
    struct config_unit *units;          /* plugins and scripts, in file order */
    unsigned nunits;
    struct dtls_config dtls;            /* the dtls group: credentials (paths resolved) */
    unsigned dtls_line;                 /* where it is (0: absent), for errors */
    struct access_rule *rules;          /* the access list, in file order */
    unsigned nrules;
};

#define CONFIG_UNSET (-2)

/* Parse and check FILE. NULL if anything is wrong; each problem was logged (log_error)
 * as FILE:LINE: message. */
struct config *config_load(const char *file);
/* The same for a configuration already in memory (text, NUL-terminated), reported and
 * with relative paths resolved as if it had been read from FILE. */
struct config *config_parse(const char *file, const char *text);
/* lua.memory and lua.instructions (KEY), given as text: checked where the file is read
 * (so -t sees them) and where the Lua runtime applies them (-s lua.KEY). 0 with the value
 * in *out, or -1 with "lua.KEY=VALUE: what it must be" in err. */
int config_lua_limit(const char *key, const char *value, unsigned long long *out, char *err,
                     size_t errlen);
/* Parse "SCHEME://ADDR:PORT" (IPv6 in brackets, port optional: the scheme's default) into
 * l (l->addr malloc'd). 0, or -1 (not such a URI). */
int config_parse_listen(const char *uri, struct config_listen *l);
/* Why config_parse_listen refused (l as it left it), into buf: the schemes there are. */
const char *config_listen_why(const struct config_listen *l, char *buf, size_t len);
void config_free(struct config *c);
/* Free a list of access rules. */
void config_rules_free(struct access_rule *r, unsigned n);

#endif
