/*
 * main.c -- the moonlet command line: parse the options, then run the steps of control.c
 * in order (configuration, credentials, listeners, units, SIGHUP) and serve until
 * SIGINT/SIGTERM. Start-up errors are one line on stderr each and a non-zero exit.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "control.h"
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

static struct control run = {.cli_level = CONFIG_UNSET};

int
main(int argc, char **argv)
{
    static struct server srv;   /* large (send/scratch buffers): not on the stack */
    const char *addr = NULL;
    long port = -1;
    char err[512];
    int opt, status = 1, check_only = 0;

    run.srv = &srv;
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
    if (control_opts(&run, &srv.cfg) < 0)
        goto out;
    if (run.cli_level != CONFIG_UNSET)
        log_set_level(run.cli_level);
    else if (run.cf && run.cf->log_level != CONFIG_UNSET)
        log_set_level(run.cf->log_level);
    {
        int failed;

        srv.creds = control_credentials(&run, run.cf, &failed);
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
        struct conf_item *lua = control_conf(&run, NULL, run.cf->lua);
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
        struct config_listen l = *control_default();

        if (addr)
            l.addr = (char *)addr;      /* from argv: not ours, only read */
        if (port >= 0)
            l.port = (unsigned)port;
        if ((addr || port >= 0 || run.nuris == 0) && control_listen(&run, &l, run.cf, 0) < 0)
            goto fini;
        for (unsigned i = 0; i < run.nuris; i++)
            if (control_listen(&run, &run.uris[i], run.cf, 0) < 0)
                goto fini;
    } else {
        unsigned n;
        const struct config_listen *l = control_listens(run.cf, &n);

        for (unsigned i = 0; i < n; i++)
            if (control_listen(&run, &l[i], run.cf, 0) < 0)
                goto fini;
    }
    for (unsigned i = 0; run.cf && i < run.cf->nunits; i++) {
        struct conf_item *conf = control_conf(&run, run.cf->units[i].settings, run.cf->lua);
        int rc = server_load(&srv, run.cf->units[i].path, conf, err, sizeof err);

        conf_list_free(conf);
        if (rc < 0) {
            log_error("%s", err);
            goto fini;
        }
    }
    for (int i = optind; i < argc; i++) {
        struct conf_item *conf = control_conf(&run, NULL, run.cf ? run.cf->lua : NULL);
        int rc = server_load(&srv, argv[i], conf, err, sizeof err);

        conf_list_free(conf);
        if (rc < 0) {
            /* at start-up a unit that does not load is fatal: the operator asked for it */
            log_error("%s", err);
            goto fini;
        }
    }
    if (run.file)
        control_watch(&run);
    for (struct endpoint *ep = srv.endpoints; ep; ep = ep->next)
        log_notice("ready %s", ep->name);
    server_run(&srv);
    log_debug("rx %lu tx %lu dup %lu rst %lu dropped %lu truncated %lu evicted %lu",
              srv.stats.rx, srv.stats.tx, srv.stats.dup, srv.stats.rst, srv.stats.dropped,
              srv.stats.truncated, srv.stats.evicted);
    status = 0;
fini:
    control_unwatch(&run);
    server_fini(&srv);
    ev_loop_destroy(srv.loop);
out:
    dtls_creds_release(srv.creds);
    srv.creds = NULL;
    control_fini(&run);
    return status;
}
