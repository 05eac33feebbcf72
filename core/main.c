/*
 * main.c -- the moonlet command line: a configuration file and/or options, listen, load
 * plugins and scripts, serve until SIGINT/SIGTERM; SIGHUP re-reads the configuration
 * file. Start-up errors are one line on stderr each and a non-zero exit.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "crash.h"
#include "log.h"
#include "plugin.h"
#include "server.h"

#ifdef MOONLET_LUA
extern const struct loader lua_loader;     /* lua/runtime.c */
#endif

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: moonlet [options] [PLUGIN.so|SCRIPT.lua ...]\n"
            "  -c FILE          configuration file (listeners, settings, plugins, scripts)\n"
            "  -t               check the configuration (-c FILE) and exit\n"
            "  -a ADDR          listen address (default :: , dual stack)\n"
            "  -p PORT          UDP port (default 5683; 0 picks a free one)\n"
            "  -l URI           listen on coap://ADDR:PORT or coaps://ADDR:PORT (repeatable;\n"
            "                   with -a/-p or -l the file's listen list is not used)\n"
            "  -d KEY=VALUE     DTLS credential over the file's dtls group (psk=ID:KEY,\n"
            "                   psk_file, certificate, key, ca, rpk, rpk_key, ...)\n"
            "  -o KEY=VALUE     server setting (see README: ack_timeout, max_sessions, ...)\n"
            "  -s NAME.KEY=VAL  setting for the plugin named NAME (lua.KEY: the Lua runtime)\n"
            "  -g IFACE         join the All-CoAP-Nodes multicast groups on IFACE (repeatable)\n"
            "  -q / -v          quieter (errors only) / more verbose (debug)\n"
            "  -V               print the version and ABI\n"
            "  -h               this help\n");
}

static struct conf_item *
conf_add(struct conf_item **list, const char *arg)
{
    const char *dot = strchr(arg, '.'), *eq = strchr(arg, '=');
    struct conf_item *c, **tail = list;

    if (dot == NULL || eq == NULL || dot > eq || dot == arg || eq == dot + 1)
        return NULL;
    if ((c = calloc(1, sizeof *c)) == NULL)
        return NULL;
    c->plugin = strndup(arg, (size_t)(dot - arg));
    c->key = strndup(dot + 1, (size_t)(eq - dot - 1));
    c->value = strdup(eq + 1);
    while (*tail)
        tail = &(*tail)->next;
    *tail = c;
    return c;
}

/* What the command line and the configuration file said; SIGHUP re-reads the file. */
static struct {
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
} run = {.cli_level = CONFIG_UNSET};

/* When a file lists no listener: coap://[::]:5683, dual stack (RFC 7252 §6.1's default
 * port; the scheme is set in main). */
static char any_addr[] = "::";
static struct config_listen default_listen = {any_addr, 5683, NULL};

static int
apply_opts(struct server_config *cfg)
{
    char key[64], err[256];

    for (unsigned i = 0; i < run.nopts; i++) {
        const char *eq = strchr(run.opts[i], '=');

        if (eq == NULL || (size_t)(eq - run.opts[i]) >= sizeof key) {
            log_error("-o %s: expected KEY=VALUE", run.opts[i]);
            return -1;
        }
        memcpy(key, run.opts[i], (size_t)(eq - run.opts[i]));
        key[eq - run.opts[i]] = '\0';
        if (server_config_set(cfg, key, eq + 1, err, sizeof err) < 0) {
            log_error("-o %s", err);
            return -1;
        }
    }
    return 0;
}

/* a + b + c as one new list (a unit's settings, the lua ones, the command line's), the
 * items copied as they are: no detour through "NAME.KEY=VALUE" text, which cut a value
 * at 1 KiB (a long lua.paths) */
static struct conf_item *
conf_join(const struct conf_item *a, const struct conf_item *b, const struct conf_item *c)
{
    const struct conf_item *lists[3] = {a, b, c};
    struct conf_item *out = NULL, **tail = &out;

    for (int i = 0; i < 3; i++)
        if (conf_list_copy(lists[i], tail) == 0)
            while (*tail)
                tail = &(*tail)->next;
    return out;
}

static int
same_settings(const struct conf_item *a, const struct conf_item *b)
{
    for (; a && b; a = a->next, b = b->next)
        if (strcmp(a->plugin, b->plugin) || strcmp(a->key, b->key) || strcmp(a->value, b->value))
            return 0;
    return a == b;
}

static const struct config_unit *
unit_in(const struct config *cf, const char *path)
{
    for (unsigned i = 0; cf && i < cf->nunits; i++)
        if (strcmp(cf->units[i].path, path) == 0)
            return &cf->units[i];
    return NULL;
}

static int
join_groups(struct endpoint *ep, char **ifs, unsigned n)
{
    char err[512];

    if (ep->tp->secure)         /* RFC 7252 §9.1: no DTLS over multicast */
        return 0;
    for (unsigned i = 0; i < n; i++) {
        if (udp_join(ep, ifs[i], err, sizeof err) < 0) {
            log_error("%s", err);
            return -1;
        }
        log_info("%s: multicast groups joined on %s", ep->name, ifs[i]);
    }
    return 0;
}

/* Open a listener and join it to the multicast groups of -g and of the file. At start-up
 * the ready lines come once everything is loaded; at a reload, at once. */
static int
listen_on(const struct config_listen *l, const struct config *cf, int announce)
{
    char err[512];

    if (server_listen(run.srv, l->scheme, l->addr, l->port, err, sizeof err) < 0) {
        log_error("%s", err);
        return -1;
    }
    if (join_groups(run.srv->endpoints, run.groups, run.ngroups) < 0 ||
        (cf && join_groups(run.srv->endpoints, cf->multicast, cf->nmulticast) < 0))
        return -1;
    if (announce)
        log_notice("ready %s", run.srv->endpoints->name);
    return 0;
}

static const struct config_listen *
listens(const struct config *cf, unsigned *n)
{
    *n = cf && cf->nlisten ? cf->nlisten : 1;
    return cf && cf->nlisten ? cf->listen : &default_listen;
}

static int
name_in(const char *name, char *const *list, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (strcmp(list[i], name) == 0)
            return 1;
    return 0;
}

/* SIGHUP: interfaces the file's `multicast` no longer lists are left, new ones joined, on
 * the listeners open now (those -g names stay joined whatever the file says). */
static void
regroup(const struct config *oc, const struct config *nc)
{
    unsigned on = oc ? oc->nmulticast : 0;

    for (unsigned i = 0; i < on; i++) {
        const char *name = oc->multicast[i];

        if (name_in(name, nc->multicast, nc->nmulticast) ||
            name_in(name, run.groups, run.ngroups))
            continue;
        for (struct endpoint *ep = run.srv->endpoints; ep; ep = ep->next)
            if (udp_leave(ep, name) > 0)
                log_info("%s: multicast groups left on %s", ep->name, name);
    }
    for (unsigned i = 0; i < nc->nmulticast; i++) {
        char *name = nc->multicast[i];

        if ((on && name_in(name, oc->multicast, on)) || name_in(name, run.groups, run.ngroups))
            continue;
        for (struct endpoint *ep = run.srv->endpoints; ep; ep = ep->next)
            join_groups(ep, &name, 1);      /* a failure is logged; the reload stands */
    }
}

/* Was ep opened as l? (address and port as written, port 0 included) */
static int
opened_as(const struct endpoint *ep, const struct config_listen *l)
{
    return strcmp(ep->bind_addr, l->addr) == 0 && ep->bind_port == l->port &&
           strcmp(ep->tp->scheme, l->scheme->name) == 0;
}

/* SIGHUP: the listeners open are made those the new file lists (so one that failed to
 * open last time is tried again). Those it drops close first, so that an address the
 * file moves to another listener is free; then the missing ones open. One that cannot
 * open is logged; the rest of the reload stands. */
static void
relisten(const struct config *nc, unsigned *opened, unsigned *closed)
{
    unsigned nn;
    const struct config_listen *nl = listens(nc, &nn);
    struct endpoint *ep, *next;

    if (run.cli_listen)
        return;
    for (ep = run.srv->endpoints; ep; ep = next) {
        unsigned i = 0;

        next = ep->next;
        while (i < nn && !opened_as(ep, &nl[i]))
            i++;
        if (i == nn) {
            server_unlisten(run.srv, ep);
            ++*closed;
        }
    }
    for (unsigned i = 0; i < nn; i++) {
        for (ep = run.srv->endpoints; ep && !opened_as(ep, &nl[i]); ep = ep->next)
            ;
        if (ep == NULL && listen_on(&nl[i], nc, 1) == 0)
            ++*opened;
    }
}

/* The DTLS credentials of cf's dtls group (or of -d alone, cf NULL) with -d applied over
 * it; NULL when none are configured (*failed 0) or they do not load (*failed 1, logged). */
static struct dtls_creds *
credentials(struct config *cf, int *failed)
{
    struct dtls_config *dc = cf ? &cf->dtls : &run.dtls;
    struct dtls_creds *c;
    char err[512];

    *failed = 0;
    for (unsigned i = 0; i < run.ndopts; i++) {
        char *eq = strchr(run.dopts[i], '='), key[32];

        if (eq == NULL || (size_t)(eq - run.dopts[i]) >= sizeof key) {
            log_error("-d %s: expected KEY=VALUE", run.dopts[i]);
            *failed = 1;
            return NULL;
        }
        snprintf(key, sizeof key, "%.*s", (int)(eq - run.dopts[i]), run.dopts[i]);
        if (dtls_config_set(dc, key, eq + 1, err, sizeof err) < 0) {
            log_error("-d %s", err);
            *failed = 1;
            return NULL;
        }
    }
    if (!dc->npsk && !dc->psk_file && !dc->certificate && !dc->key && !dc->rpk &&
        !dc->rpk_key && !dc->ca && !dc->crl && !dc->nrpk_clients && !dc->priority &&
        !dc->psk_hint)
        return NULL;
    if ((c = dtls_creds_new(dc, err, sizeof err)) == NULL) {
        log_error("%s", err);   /* names the file at fault */
        *failed = 1;
    }
    return c;
}

/* SIGHUP: the new file, checked whole, replaces the running one; a bad one changes
 * nothing. Units are compared by path: new ones load, gone ones unload, ones whose
 * settings changed reload, the rest are left alone. */
static void
sighup_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct config *nc = config_load(run.file), *oc = run.cf;
    struct server *srv = run.srv;
    struct server_config cfg;
    unsigned added = 0, removed = 0, reloaded = 0, same = 0, failed = 0, opened = 0, closed = 0;
    char err[512];

    (void)loop, (void)w, (void)revents;
    if (nc == NULL) {
        log_error("%s: reload rejected; the running configuration stays", run.file);
        return;
    }
    cfg = nc->cfg;
    if (apply_opts(&cfg) < 0) {
        config_free(nc);
        return;
    }
    {
        int bad;
        struct dtls_creds *creds = credentials(nc, &bad);

        if (bad) {      /* the old credentials stay, and everything else too */
            log_error("%s: reload rejected; the running configuration stays", run.file);
            config_free(nc);
            return;
        }
        /* new handshakes use the new credentials; established sessions keep theirs */
        dtls_creds_release(srv->creds);
        srv->creds = creds;
        for (struct endpoint *ep = srv->endpoints; ep; ep = ep->next)
            if (ep->tp->secure && creds)
                dtls_set_creds(ep, creds);
    }
    srv->rules = nc->rules;     /* borrowed from the configuration, which stays */
    srv->nrules = nc->nrules;
    srv->cfg = cfg;
    log_set_level(run.cli_level != CONFIG_UNSET ? run.cli_level
                  : nc->log_level != CONFIG_UNSET ? nc->log_level : MOONLET_LOG_INFO);
    for (unsigned i = 0; oc && i < oc->nunits; i++)
        if (unit_in(nc, oc->units[i].path) == NULL) {
            server_unload(srv, oc->units[i].path);
            removed++;
        }
    for (unsigned i = 0; i < nc->nunits; i++) {
        const struct config_unit *u = &nc->units[i], *o = unit_in(oc, u->path);
        struct conf_item *conf;

        if (o && same_settings(o->settings, u->settings) &&
            /* the lua group concerns scripts only: a plugin stays when it changes */
            (server_is_plugin(srv, u->path) || same_settings(oc->lua, nc->lua))) {
            same++;
            continue;
        }
        conf = conf_join(u->settings, nc->lua, run.sets);
        if ((o ? server_reload : server_load)(srv, u->path, conf, err, sizeof err) < 0) {
            log_error("%s", err);
            failed++;
        } else if (o) {
            reloaded++;
        } else {
            added++;
        }
        conf_list_free(conf);
    }
    regroup(oc, nc);            /* before relisten: new listeners join by themselves */
    relisten(nc, &opened, &closed);
    log_info("reloaded %s: %u added, %u removed, %u reloaded, %u unchanged; listeners: %u "
             "opened, %u closed%s", run.file, added, removed, reloaded, same, opened, closed,
             failed ? " (some failed: see above)" : "");
    config_free(oc);
    run.cf = nc;
}

int
main(int argc, char **argv)
{
    static struct server srv;   /* large (send/scratch buffers): not on the stack */
    const char *addr = NULL;
    long port = -1;
    char err[512];
    int opt, status = 1, check_only = 0;

    run.srv = &srv;
    default_listen.scheme = scheme_of("coap://");
    run.opts = calloc((size_t)argc, sizeof *run.opts);
    server_config_defaults(&srv.cfg);
    run.uris = calloc((size_t)argc, sizeof *run.uris);
    run.dopts = calloc((size_t)argc, sizeof *run.dopts);
    while ((opt = getopt(argc, argv, "c:ta:p:l:d:o:s:g:qvVh")) != -1) {
        switch (opt) {
        case 'c':
            run.file = optarg;
            break;
        case 't':
            check_only = 1;
            break;
        case 'a':
            addr = optarg;
            break;
        case 'p': {
            char *end;

            port = strtol(optarg, &end, 10);
            if (*optarg == '\0' || *end || port < 0 || port > 65535) {
                log_error("-p %s: not a port number", optarg);
                goto out;
            }
            break;
        }
        case 'l':
            if (config_parse_listen(optarg, &run.uris[run.nuris]) < 0) {
                free(run.uris[run.nuris].addr);
                log_error("-l %s: %s", optarg,
                          config_listen_why(&run.uris[run.nuris], err, sizeof err));
                goto out;
            }
            run.nuris++;
            break;
        case 'd':
            run.dopts[run.ndopts++] = optarg;
            break;
        case 'o':
            run.opts[run.nopts++] = optarg;
            break;
        case 's':
            if (conf_add(&run.sets, optarg) == NULL) {
                log_error("-s %s: expected PLUGIN.KEY=VALUE", optarg);
                goto out;
            }
            break;
        case 'g':
            if (run.ngroups == sizeof run.groups / sizeof run.groups[0]) {
                log_error("-g %s: at most %zu interfaces", optarg,
                          sizeof run.groups / sizeof run.groups[0]);
                goto out;
            }
            run.groups[run.ngroups++] = optarg;
            break;
        case 'q':
            run.cli_level = MOONLET_LOG_ERROR;
            break;
        case 'v':
            run.cli_level = MOONLET_LOG_DEBUG;
            break;
        case 'V':
            printf("moonlet ABI %d.%d\n", MOONLET_ABI_MAJOR, MOONLET_ABI_MINOR);
            status = 0;
            goto out;
        case 'h':
            usage(stdout);
            status = 0;
            goto out;
        default:
            usage(stderr);
            goto out;
        }
    }
    if (check_only && run.file == NULL) {
        log_error("-t needs -c FILE");
        goto out;
    }
    if (run.file && (run.cf = config_load(run.file)) == NULL)
        goto out;                       /* each problem logged as FILE:LINE */
    if (run.cf)
        srv.cfg = run.cf->cfg;
    if (apply_opts(&srv.cfg) < 0)
        goto out;
    if (run.cli_level != CONFIG_UNSET)
        log_set_level(run.cli_level);
    else if (run.cf && run.cf->log_level != CONFIG_UNSET)
        log_set_level(run.cf->log_level);
    {
        int failed;

        srv.creds = credentials(run.cf, &failed);
        if (failed)
            goto out;
    }
    if (run.cf) {
        srv.rules = run.cf->rules;
        srv.nrules = run.cf->nrules;
    }
    if (check_only) {
#ifdef MOONLET_LUA
        char why[300];
        struct conf_item *lua = conf_join(NULL, run.cf->lua, run.sets);
        int bad = lua_loader.check(lua, why, sizeof why);

        conf_list_free(lua);
        if (bad) {
            log_error("%s: %s", run.file, why);
            goto out;
        }
#endif
        for (unsigned i = 0; i < run.cf->nlisten; i++)
            if (run.cf->listen[i].scheme->secure && !dtls_creds_usable(srv.creds)) {
                log_error("%s: a coaps:// listener needs DTLS credentials (a dtls group with "
                          "psk, psk_file, certificate or rpk)", run.file);
                goto out;
            }
        for (unsigned i = 0; i < run.cf->nunits; i++)
            if (access(run.cf->units[i].path, R_OK) != 0) {
                log_error("%s: %s: cannot read: %s", run.file, run.cf->units[i].path,
                          strerror(errno));
                goto out;
            }
        printf("%s: configuration OK\n", run.file);
        status = 0;
        goto out;
    }
#ifdef MOONLET_LUA
    srv.loaders[0] = &lua_loader;
#endif
    /* from here on a crash (a plugin's, say) is logged with what ran (crash.c) */
    if (crash_init() < 0)
        log_warn("fatal signals will not be reported: %s", strerror(errno));
    if (server_init(&srv, ev_default_loop(EVFLAG_AUTO)) < 0) {
        log_error("cannot initialise the server (out of memory)");
        goto out;
    }
    /* listeners: -a/-p and -l if given, else the file's, else [::]:5683 */
    run.cli_listen = addr || port >= 0 || run.nuris;
    if (run.cli_listen) {
        struct config_listen l = default_listen;

        if (addr)
            l.addr = (char *)addr;      /* from argv: not ours, only read */
        if (port >= 0)
            l.port = (unsigned)port;
        if ((addr || port >= 0 || run.nuris == 0) && listen_on(&l, run.cf, 0) < 0)
            goto fini;
        for (unsigned i = 0; i < run.nuris; i++)
            if (listen_on(&run.uris[i], run.cf, 0) < 0)
                goto fini;
    } else {
        unsigned n;
        const struct config_listen *l = listens(run.cf, &n);

        for (unsigned i = 0; i < n; i++)
            if (listen_on(&l[i], run.cf, 0) < 0)
                goto fini;
    }
    for (unsigned i = 0; run.cf && i < run.cf->nunits; i++) {
        struct conf_item *conf = conf_join(run.cf->units[i].settings, run.cf->lua, run.sets);
        int rc = server_load(&srv, run.cf->units[i].path, conf, err, sizeof err);

        conf_list_free(conf);
        if (rc < 0) {
            log_error("%s", err);
            goto fini;
        }
    }
    for (int i = optind; i < argc; i++) {
        struct conf_item *conf = conf_join(NULL, run.cf ? run.cf->lua : NULL, run.sets);
        int rc = server_load(&srv, argv[i], conf, err, sizeof err);

        conf_list_free(conf);
        if (rc < 0) {
            /* at start-up a unit that does not load is fatal: the operator asked for it */
            log_error("%s", err);
            goto fini;
        }
    }
    if (run.file) {
        ev_signal_init(&run.sighup, sighup_cb, SIGHUP);
        ev_signal_start(srv.loop, &run.sighup);
        ev_unref(srv.loop);
    }
    for (struct endpoint *ep = srv.endpoints; ep; ep = ep->next)
        log_notice("ready %s", ep->name);
    server_run(&srv);
    log_debug("rx %lu tx %lu dup %lu rst %lu dropped %lu truncated %lu evicted %lu",
              srv.stats.rx, srv.stats.tx, srv.stats.dup, srv.stats.rst, srv.stats.dropped,
              srv.stats.truncated, srv.stats.evicted);
    status = 0;
fini:
    if (ev_is_active(&run.sighup)) {
        ev_ref(srv.loop);
        ev_signal_stop(srv.loop, &run.sighup);
    }
    server_fini(&srv);
    ev_loop_destroy(srv.loop);
out:
    dtls_creds_release(srv.creds);
    srv.creds = NULL;
    conf_list_free(run.sets);
    config_free(run.cf);
    dtls_config_free(&run.dtls);
    for (unsigned i = 0; i < run.nuris; i++)
        free(run.uris[i].addr);
    free(run.uris);
    free(run.dopts);
    free(run.opts);
    return status;
}
