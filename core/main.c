/*
 * main.c -- the moonlet command line: listen, load plugins, serve until SIGINT/SIGTERM.
 * Start-up errors are one line on stderr and a non-zero exit.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
            "usage: moonlet [options] PLUGIN.so|SCRIPT.lua ...\n"
            "  -a ADDR          listen address (default :: , dual stack)\n"
            "  -p PORT          UDP port (default 5683; 0 picks a free one)\n"
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

static void
conf_free(struct conf_item *c)
{
    while (c) {
        struct conf_item *next = c->next;

        free(c->plugin);
        free(c->key);
        free(c->value);
        free(c);
        c = next;
    }
}

int
main(int argc, char **argv)
{
    static struct server srv;   /* large (send/scratch buffers): not on the stack */
    struct conf_item *conf = NULL;
    const char *addr = "::";
    unsigned port = 5683;
    char err[512];
    const char *groups[16];
    unsigned ngroups = 0;
    int opt, status = 1;

    server_config_defaults(&srv.cfg);
    while ((opt = getopt(argc, argv, "a:p:o:s:g:qvVh")) != -1) {
        switch (opt) {
        case 'a':
            addr = optarg;
            break;
        case 'p': {
            char *end;
            long v = strtol(optarg, &end, 10);

            if (*optarg == '\0' || *end || v < 0 || v > 65535) {
                log_error("-p %s: not a port number", optarg);
                goto out;
            }
            port = (unsigned)v;
            break;
        }
        case 'o': {
            char *eq = strchr(optarg, '='), key[64];

            if (eq == NULL || (size_t)(eq - optarg) >= sizeof key) {
                log_error("-o %s: expected KEY=VALUE", optarg);
                goto out;
            }
            memcpy(key, optarg, (size_t)(eq - optarg));
            key[eq - optarg] = '\0';
            if (server_config_set(&srv.cfg, key, eq + 1, err, sizeof err) < 0) {
                log_error("-o %s", err);
                goto out;
            }
            break;
        }
        case 's':
            if (conf_add(&conf, optarg) == NULL) {
                log_error("-s %s: expected PLUGIN.KEY=VALUE", optarg);
                goto out;
            }
            break;
        case 'g':
            if (ngroups == sizeof groups / sizeof groups[0]) {
                log_error("-g %s: at most %zu interfaces", optarg,
                          sizeof groups / sizeof groups[0]);
                goto out;
            }
            groups[ngroups++] = optarg;
            break;
        case 'q':
            log_set_level(MOONLET_LOG_ERROR);
            break;
        case 'v':
            log_set_level(MOONLET_LOG_DEBUG);
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
#ifdef MOONLET_LUA
    srv.loaders[0] = &lua_loader;
#endif
    if (server_init(&srv, ev_default_loop(EVFLAG_AUTO)) < 0) {
        log_error("cannot initialise the server (out of memory)");
        goto out;
    }
    if (server_listen(&srv, addr, port, err, sizeof err) < 0) {
        log_error("%s", err);
        goto fini;
    }
    for (unsigned i = 0; i < ngroups; i++) {
        for (struct endpoint *ep = srv.endpoints; ep; ep = ep->next) {
            if (udp_join(ep, groups[i], err, sizeof err) < 0) {
                log_error("%s", err);
                goto fini;
            }
            log_info("%s: multicast groups joined on %s", ep->name, groups[i]);
        }
    }
    for (int i = optind; i < argc; i++) {
        if (server_load(&srv, argv[i], conf, err, sizeof err) < 0) {
            /* at start-up a unit that does not load is fatal: the operator asked for it */
            log_error("%s", err);
            goto fini;
        }
    }
    for (struct endpoint *ep = srv.endpoints; ep; ep = ep->next)
        log_notice("ready %s", ep->name);
    server_run(&srv);
    log_debug("rx %lu tx %lu dup %lu rst %lu dropped %lu truncated %lu evicted %lu",
              srv.stats.rx, srv.stats.tx, srv.stats.dup, srv.stats.rst, srv.stats.dropped,
              srv.stats.truncated, srv.stats.evicted);
    status = 0;
fini:
    server_fini(&srv);
    ev_loop_destroy(srv.loop);
out:
    conf_free(conf);
    return status;
}
