/*
 * control.h -- process control: what the command line said over the configuration file,
 * the listeners and units it makes, and SIGHUP, which re-reads the file and applies it
 * (units, settings, credentials, access rules, listeners, multicast groups). main.c only
 * parses arguments and runs the steps in order; anything that starts moonlet (a worker,
 * tests) can drive the same steps.
 */
#ifndef CONTROL_H
#define CONTROL_H

#include <ev.h>

#include "config.h"
#include "dtls.h"
#include "server.h"

/* What the command line and the configuration file said; SIGHUP re-reads the file. */
struct control {
    struct server *srv;
    struct config *cf;                  /* the running configuration file, or NULL */
    const char *file;
    char **opts;                        /* -o KEY=VALUE, applied over the file's settings */
    unsigned nopts;
    struct conf_item *sets;             /* -s NAME.KEY=VALUE */
    int cli_level;                      /* -q/-v, over the file's log_level */
    int cli_listen;                     /* -a/-p given: the file's listen list is not used */
    char *groups[16];                   /* -g IFACE */
    unsigned ngroups;
    struct config_listen *uris;         /* -l URI */
    unsigned nuris;
    char **dopts;                       /* -d KEY=VALUE */
    unsigned ndopts;
    struct dtls_config dtls;            /* -d without a file */
    ev_signal sighup;
};

/* -o KEY=VALUE over cfg. 0, or -1 (logged). */
int control_opts(const struct control *c, struct server_config *cfg);
/* A unit's settings, the lua group's and the command line's -s, as one new list. */
struct conf_item *control_conf(const struct control *c, const struct conf_item *unit,
                               const struct conf_item *lua);
/* The DTLS credentials of cf's dtls group (or of -d alone, cf NULL) with -d applied over
 * it; NULL when none are configured (*failed 0) or they do not load (*failed 1, logged). */
struct dtls_creds *control_credentials(struct control *c, struct config *cf, int *failed);
/* Open listener l and join it to the multicast groups of -g and of cf; announce: log its
 * ready line now (at start-up they come once everything is loaded). 0, or -1 (logged). */
int control_listen(struct control *c, const struct config_listen *l, const struct config *cf,
                   int announce);
/* The listeners of cf, or the default one (coap://[::]:5683) when it lists none. */
const struct config_listen *control_listens(const struct config *cf, unsigned *n);
const struct config_listen *control_default(void);
/* Re-read the file on SIGHUP from now on (c->file set). */
void control_watch(struct control *c);
/* Stop watching (before the loop goes). */
void control_unwatch(struct control *c);
/* Free what c holds (the running configuration too). */
void control_fini(struct control *c);

#endif
