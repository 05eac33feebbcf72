/*
 * plugin.h -- the .so loader and the plugin-side objects: configuration values, timers.
 */
#ifndef PLUGIN_H
#define PLUGIN_H

#include <ev.h>

#include "include/moonlet.h"
#include "runtime.h"

struct server;

/* `-s NAME.KEY=VALUE` settings, in order. */
struct conf_item {
    struct conf_item *next;
    char *plugin, *key, *value;
};

void conf_list_free(struct conf_item *c);
/* A deep copy (a unit keeps its own: the caller's list may go). 0, or -1 (no memory). */
int conf_list_copy(const struct conf_item *c, struct conf_item **out);

struct moonlet_conf {
    const struct conf_item *items;  /* the server's list, filtered by name */
    const char *name;
};

struct moonlet_timer {
    ev_timer w;
    struct moonlet_timer *next, *prev;
    struct moonlet_plugin *p;
    moonlet_timer_cb cb;
    void *ud;
    int firing;
};

enum plugin_phase { PLUGIN_INIT, PLUGIN_RUNNING, PLUGIN_FINI };

struct moonlet_plugin {
    struct unit unit;
    struct moonlet_plugin *next;
    struct server *srv;
    void *dl;
    const moonlet_plugin_info *info;
    moonlet_plugin_info copy;       /* the descriptor, read up to info_size */
    char *path;
    enum plugin_phase phase;
    void *data;
    struct moonlet_plugin *prev;    /* in init: the version it replaces (NULL: first load) */
    struct moonlet_plugin *heir_of; /* took prev's data; cleared when prev retires */
    int handed_over;                /* its data went to a newer version */
    struct moonlet_conf conf;
    struct moonlet_timer *timers;
};

/* The .so loader (struct loader, server.h): dlopen of a private copy, the descriptor and
 * ABI checks, init with registrations staged; fini when nothing refers to it any more. */
struct loader;
extern const struct loader plugin_loader;

#endif
