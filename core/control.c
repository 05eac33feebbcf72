/*
 * control.c -- process control (control.h): the command line over the configuration file,
 * listeners and units at start-up, and SIGHUP applying a new file as a whole or not at all.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"
#include "layer.h"
#include "log.h"
#include "plugin.h"

/* When a file lists no listener: coap://[::]:5683, dual stack (RFC 7252 §6.1's default
 * port). */
static char any_addr[] = "::";
static struct config_listen default_listen = {any_addr, 5683, NULL};

const struct config_listen *
control_default(void)
{
    if (default_listen.scheme == NULL)
        default_listen.scheme = scheme_of("coap://");
    return &default_listen;
}

int
control_opts(const struct control *c, struct server_config *cfg)
{
    char key[64], err[256];

    for (unsigned i = 0; i < c->nopts; i++) {
        const char *eq = strchr(c->opts[i], '=');

        if (eq == NULL || (size_t)(eq - c->opts[i]) >= sizeof key) {
            log_error("-o %s: expected KEY=VALUE", c->opts[i]);
            return -1;
        }
        memcpy(key, c->opts[i], (size_t)(eq - c->opts[i]));
        key[eq - c->opts[i]] = '\0';
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
conf_join(const struct conf_item *a, const struct conf_item *b, const struct conf_item *c3)
{
    const struct conf_item *lists[3] = {a, b, c3};
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

/* Can ep join multicast groups? Plain UDP only. */
static int
udp_groups(const struct endpoint *ep)
{
    return !ep->tp->secure && !ep->tp->ml->reliable;
}

static int
join_groups(struct endpoint *ep, char **ifs, unsigned n)
{
    char err[512];

    /* RFC 7252 §9.1: no DTLS over multicast; RFC 8323 has no groups at all */
    if (!udp_groups(ep))
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
int
control_listen(struct control *c, const struct config_listen *l, const struct config *cf,
               int announce)
{
    char err[512];

    if (server_listen(c->srv, l->scheme, l->addr, l->port, err, sizeof err) < 0) {
        log_error("%s", err);
        return -1;
    }
    if (join_groups(c->srv->endpoints, c->groups, c->ngroups) < 0 ||
        (cf && join_groups(c->srv->endpoints, cf->multicast, cf->nmulticast) < 0))
        return -1;
    if (announce)
        log_notice("ready %s", c->srv->endpoints->name);
    return 0;
}

const struct config_listen *
control_listens(const struct config *cf, unsigned *n)
{
    *n = cf && cf->nlisten ? cf->nlisten : 1;
    return cf && cf->nlisten ? cf->listen : control_default();
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
regroup(struct control *c, const struct config *oc, const struct config *nc)
{
    unsigned on = oc ? oc->nmulticast : 0;

    for (unsigned i = 0; i < on; i++) {
        const char *name = oc->multicast[i];

        if (name_in(name, nc->multicast, nc->nmulticast) ||
            name_in(name, c->groups, c->ngroups))
            continue;
        for (struct endpoint *ep = c->srv->endpoints; ep; ep = ep->next)
            if (udp_groups(ep) && udp_leave(ep, name) > 0)
                log_info("%s: multicast groups left on %s", ep->name, name);
    }
    for (unsigned i = 0; i < nc->nmulticast; i++) {
        char *name = nc->multicast[i];

        if ((on && name_in(name, oc->multicast, on)) || name_in(name, c->groups, c->ngroups))
            continue;
        for (struct endpoint *ep = c->srv->endpoints; ep; ep = ep->next)
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
relisten(struct control *c, const struct config *nc, unsigned *opened, unsigned *closed)
{
    unsigned nn;
    const struct config_listen *nl = control_listens(nc, &nn);
    struct endpoint *ep, *next;

    if (c->cli_listen)
        return;
    for (ep = c->srv->endpoints; ep; ep = next) {
        unsigned i = 0;

        next = ep->next;
        while (i < nn && !opened_as(ep, &nl[i]))
            i++;
        if (i == nn) {
            server_unlisten(c->srv, ep);
            ++*closed;
        }
    }
    for (unsigned i = 0; i < nn; i++) {
        for (ep = c->srv->endpoints; ep && !opened_as(ep, &nl[i]); ep = ep->next)
            ;
        if (ep == NULL && control_listen(c, &nl[i], nc, 1) == 0)
            ++*opened;
    }
}

/* The DTLS credentials of cf's dtls group (or of -d alone, cf NULL) with -d applied over
 * it; NULL when none are configured (*failed 0) or they do not load (*failed 1, logged). */
struct dtls_creds *
control_credentials(struct control *c, struct config *cf, int *failed)
{
    struct dtls_config *dc = cf ? &cf->dtls : &c->dtls;
    struct dtls_creds *creds;
    char err[512];

    *failed = 0;
    for (unsigned i = 0; i < c->ndopts; i++) {
        char *eq = strchr(c->dopts[i], '='), key[32];

        if (eq == NULL || (size_t)(eq - c->dopts[i]) >= sizeof key) {
            log_error("-d %s: expected KEY=VALUE", c->dopts[i]);
            *failed = 1;
            return NULL;
        }
        snprintf(key, sizeof key, "%.*s", (int)(eq - c->dopts[i]), c->dopts[i]);
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
    if ((creds = dtls_creds_new(dc, err, sizeof err)) == NULL) {
        log_error("%s", err);   /* names the file at fault */
        *failed = 1;
    }
    return creds;
}

/* SIGHUP: the new file, checked whole, replaces the running one; a bad one changes
 * nothing. Units are compared by path: new ones load, gone ones unload, ones whose
 * settings changed reload, the rest are left alone. */
static void
sighup_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct control *c = (struct control *)((char *)w - offsetof(struct control, sighup));
    struct config *nc = config_load(c->file), *oc = c->cf;
    struct server *srv = c->srv;
    struct server_config cfg;
    unsigned added = 0, removed = 0, reloaded = 0, same = 0, failed = 0, opened = 0, closed = 0;
    char err[512];

    (void)loop, (void)w, (void)revents;
    if (nc == NULL) {
        log_error("%s: reload rejected; the running configuration stays", c->file);
        return;
    }
    cfg = nc->cfg;
    if (control_opts(c, &cfg) < 0) {
        config_free(nc);
        return;
    }
    {
        int bad;
        struct dtls_creds *creds = control_credentials(c, nc, &bad);

        if (bad) {      /* the old credentials stay, and everything else too */
            log_error("%s: reload rejected; the running configuration stays", c->file);
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
    log_set_level(c->cli_level != CONFIG_UNSET ? c->cli_level
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
        conf = conf_join(u->settings, nc->lua, c->sets);
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
    regroup(c, oc, nc);            /* before relisten: new listeners join by themselves */
    relisten(c, nc, &opened, &closed);
    log_info("reloaded %s: %u added, %u removed, %u reloaded, %u unchanged; listeners: %u "
             "opened, %u closed%s", c->file, added, removed, reloaded, same, opened, closed,
             failed ? " (some failed: see above)" : "");
    config_free(oc);
    c->cf = nc;
}

struct conf_item *
control_conf(const struct control *c, const struct conf_item *unit, const struct conf_item *lua)
{
    return conf_join(unit, lua, c->sets);
}

void
control_watch(struct control *c)
{
    ev_signal_init(&c->sighup, sighup_cb, SIGHUP);
    ev_signal_start(c->srv->loop, &c->sighup);
    ev_unref(c->srv->loop);
}

void
control_unwatch(struct control *c)
{
    if (ev_is_active(&c->sighup)) {
        ev_ref(c->srv->loop);
        ev_signal_stop(c->srv->loop, &c->sighup);
    }
}

void
control_fini(struct control *c)
{
    conf_list_free(c->sets);
    config_free(c->cf);
    dtls_config_free(&c->dtls);
    for (unsigned i = 0; i < c->nuris; i++)
        free(c->uris[i].addr);
    free(c->uris);
    free(c->dopts);
    free(c->opts);
}
