/*
 * plugin.c -- the .so loader. Rules, in order, each failure one line naming the file:
 * dlopen(RTLD_NOW | RTLD_LOCAL) so a missing symbol fails the load, not a later request;
 * the descriptor `moonlet_plugin_descriptor` must exist; ABI major equal and minor not newer than
 * ours; the descriptor is read only up to its info_size; init runs in a staging phase
 * (registrations allowed only there) and a failing init is undone completely.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "exchange.h"
#include "log.h"
#include "observe.h"
#include "plugin.h"
#include "server.h"
#include "tree.h"

static void
timers_stop_all(struct moonlet_plugin *p)
{
    while (p->timers) {
        struct moonlet_timer *t = p->timers;

        log_warn("%s: timer still running at unload; stopped", p->unit.name);
        moonlet_timer_stop(t);
    }
}

static void
plugin_free(struct moonlet_plugin *p)
{
    if (p->dl)
        dlclose(p->dl);
    free(p->path);
    free(p);
}

int
plugin_load(struct server *srv, const char *path, const struct conf_item *conf, char *err,
            size_t errlen)
{
    const moonlet_plugin_info *info;
    struct moonlet_plugin *p = calloc(1, sizeof *p);
    int rc;

    if (p == NULL || (p->path = strdup(path)) == NULL) {
        snprintf(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    if ((p->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL)) == NULL) {
        /* dlerror already names the file */
        snprintf(err, errlen, "%s", dlerror());
        goto fail;
    }
    if ((info = dlsym(p->dl, "moonlet_plugin_descriptor")) == NULL) {
        snprintf(err, errlen, "%s: not a moonlet plugin (no moonlet_plugin_descriptor symbol)", path);
        goto fail;
    }
    if (info->abi_major != MOONLET_ABI_MAJOR || info->abi_minor > MOONLET_ABI_MINOR) {
        snprintf(err, errlen, "%s: plugin needs ABI %u.%u, server has %u.%u", path,
                 info->abi_major, info->abi_minor, MOONLET_ABI_MAJOR, MOONLET_ABI_MINOR);
        goto fail;
    }
    if (info->info_size < offsetof(moonlet_plugin_info, state_version)) {
        snprintf(err, errlen, "%s: plugin descriptor too small", path);
        goto fail;
    }
    memcpy(&p->copy, info, info->info_size < sizeof p->copy ? info->info_size : sizeof p->copy);
    if (p->copy.name == NULL || p->copy.init == NULL) {
        snprintf(err, errlen, "%s: plugin descriptor has no name or init", path);
        goto fail;
    }
    for (struct moonlet_plugin *q = srv->plugins; q; q = q->next)
        if (strcmp(q->copy.name, p->copy.name) == 0) {
            snprintf(err, errlen, "%s: a plugin named '%s' is already loaded (%s)", path,
                     p->copy.name, q->path);
            goto fail;
        }
    p->info = info;
    p->srv = srv;
    p->unit.rt = &runtime_c;
    p->unit.srv = srv;
    p->unit.name = p->copy.name;
    p->conf.items = conf;
    p->conf.name = p->copy.name;
    p->phase = PLUGIN_INIT;
    rc = p->copy.init(p, &p->conf);
    if (rc != MOONLET_OK) {
        snprintf(err, errlen, "%s: init of '%s' failed (%d)", path, p->copy.name, rc);
        p->phase = PLUGIN_FINI;
        timers_stop_all(p);
        tree_remove_unit(srv->tree, &p->unit);
        goto fail;
    }
    p->phase = PLUGIN_RUNNING;
    p->next = srv->plugins;
    srv->plugins = p;
    log_info("loaded plugin %s %s from %s", p->copy.name,
             p->copy.version ? p->copy.version : "", path);
    return 0;
fail:
    if (p)
        plugin_free(p);
    return -1;
}

void
plugin_unload(struct server *srv, struct moonlet_plugin *p)
{
    struct moonlet_plugin **pp = &srv->plugins;

    while (*pp && *pp != p)
        pp = &(*pp)->next;
    if (*pp)
        *pp = p->next;
    p->phase = PLUGIN_FINI;
    if (p->copy.fini)
        p->copy.fini(p);
    timers_stop_all(p);
    observe_end(srv, &p->unit, MOONLET_NOT_FOUND);
    exchange_unit_gone(srv, &p->unit);
    tree_remove_unit(srv->tree, &p->unit);
    plugin_free(p);
}

/* ---- the plugin-facing API ----------------------------------------------------------- */

moonlet_resource *
moonlet_resource_add_(moonlet_plugin *p, const moonlet_resource_def *def, size_t def_size,
                      void *ud)
{
    struct resource *r;
    char err[200];

    if (p == NULL || def == NULL)
        return NULL;
    if (p->phase != PLUGIN_INIT) {
        log_error("%s: moonlet_resource_add outside init", p->unit.name);
        return NULL;
    }
    if ((r = tree_resource_new(def, def_size, ud, &p->unit, err, sizeof err)) == NULL) {
        log_error("%s: cannot register: %s", p->unit.name, err);
        return NULL;
    }
    if (tree_add(p->srv->tree, r) != MOONLET_OK) {
        log_error("%s: cannot register %s: path already registered", p->unit.name, r->path);
        tree_resource_free(r);
        return NULL;
    }
    return (moonlet_resource *)r;
}

const char *
moonlet_resource_path(const moonlet_resource *r)
{
    return ((const struct resource *)r)->path;
}

int
moonlet_notify(moonlet_resource *mr)
{
    struct resource *r = (struct resource *)mr;

    if (r == NULL)
        return MOONLET_EINVAL;
    observe_notify(r->unit->srv, r);
    return MOONLET_OK;
}

void
moonlet_plugin_set_data(moonlet_plugin *p, void *data)
{
    p->data = data;
}

void *
moonlet_plugin_data(const moonlet_plugin *p)
{
    return p->data;
}

const char *
moonlet_conf_str(const moonlet_conf *c, const char *key, const char *dflt)
{
    const char *v = dflt;

    /* the last setting wins, as on a command line */
    for (const struct conf_item *i = c ? c->items : NULL; i; i = i->next)
        if (strcmp(i->plugin, c->name) == 0 && strcmp(i->key, key) == 0)
            v = i->value;
    return v;
}

long
moonlet_conf_int(const moonlet_conf *c, const char *key, long dflt)
{
    const char *v = moonlet_conf_str(c, key, NULL);
    char *end;
    long n;

    if (v == NULL)
        return dflt;
    n = strtol(v, &end, 0);
    return *v && *end == '\0' ? n : dflt;
}

int
moonlet_conf_bool(const moonlet_conf *c, const char *key, int dflt)
{
    const char *v = moonlet_conf_str(c, key, NULL);

    if (v == NULL)
        return dflt;
    if (!strcmp(v, "1") || !strcmp(v, "yes") || !strcmp(v, "true") || !strcmp(v, "on"))
        return 1;
    if (!strcmp(v, "0") || !strcmp(v, "no") || !strcmp(v, "false") || !strcmp(v, "off"))
        return 0;
    return dflt;
}

void
moonlet_log(moonlet_plugin *p, int level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vmsg(level, p ? p->unit.name : "plugin", fmt, ap);
    va_end(ap);
}

void
moonlet_version(unsigned *major, unsigned *minor)
{
    if (major)
        *major = MOONLET_ABI_MAJOR;
    if (minor)
        *minor = MOONLET_ABI_MINOR;
}

/* ---- timers ------------------------------------------------------------------------- */

static void
timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct moonlet_timer *t = (struct moonlet_timer *)w;
    int oneshot = w->repeat <= 0;

    (void)loop, (void)revents;
    t->firing = 1;
    t->cb(t, t->ud);
    t->firing = 0;
    if (oneshot && t->p)        /* p NULL: stopped from inside its callback */
        moonlet_timer_stop(t);
    else if (t->p == NULL)
        free(t);
}

moonlet_timer *
moonlet_timer_start(moonlet_plugin *p, double after, double repeat, moonlet_timer_cb cb,
                    void *ud)
{
    struct moonlet_timer *t;

    if (p == NULL || cb == NULL || after < 0 || repeat < 0 || p->phase == PLUGIN_FINI)
        return NULL;
    if ((t = calloc(1, sizeof *t)) == NULL)
        return NULL;
    t->p = p;
    t->cb = cb;
    t->ud = ud;
    ev_timer_init(&t->w, timer_cb, after, repeat);
    ev_timer_start(p->srv->loop, &t->w);
    t->next = p->timers;
    if (p->timers)
        p->timers->prev = t;
    p->timers = t;
    return t;
}

void
moonlet_timer_stop(moonlet_timer *t)
{
    struct moonlet_plugin *p;

    if (t == NULL || (p = t->p) == NULL)
        return;
    ev_timer_stop(p->srv->loop, &t->w);
    if (t->prev)
        t->prev->next = t->next;
    else
        p->timers = t->next;
    if (t->next)
        t->next->prev = t->prev;
    t->p = NULL;
    if (!t->firing)
        free(t);
}
