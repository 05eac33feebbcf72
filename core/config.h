/*
 * config.h -- the configuration file (`moonlet -c FILE`), in libconfig's syntax: parsed
 * and validated whole, every problem reported as `FILE:LINE: what is wrong`.
 */
#ifndef CONFIG_H
#define CONFIG_H

#include "plugin.h"
#include "server.h"

struct config_listen {
    char *addr;                         /* "::", "127.0.0.1" */
    unsigned port;
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
};

#define CONFIG_UNSET (-2)

/* Parse and check FILE. NULL if anything is wrong; each problem was logged (log_error)
 * as FILE:LINE: message. */
struct config *config_load(const char *file);
void config_free(struct config *c);

#endif
