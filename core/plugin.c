/*
 * plugin.c -- the .so loader. Rules, in order, each failure one line naming the file:
 * dlopen(RTLD_NOW | RTLD_LOCAL) so a missing symbol fails the load, not a later request;
 * the descriptor `moonlet_plugin_descriptor` must exist; ABI major equal and minor not newer than
 * ours; the descriptor is read only up to its info_size; init runs in a staging phase
 * (registrations allowed only there) and a failing init is undone completely.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crash.h"
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

/* dlopen a private copy of path: a rebuilt plugin at the same path is a new object to
 * the dynamic loader (which would hand back the old handle for the same file), and a
 * build that rewrites the file in place can never change code we are running. */
static void *
open_copy(const char *path, char *err, size_t errlen)
{
    const char *dir = getenv("TMPDIR");
    char tmp[4096], buf[65536];
    int in, out = -1;
    ssize_t n = 0;
    void *dl = NULL;

    snprintf(tmp, sizeof tmp, "%s/moonlet-plugin-XXXXXX.so", dir && *dir ? dir : "/tmp");
    if ((in = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    if ((out = mkstemps(tmp, 3)) < 0) {
        snprintf(err, errlen, "%s: cannot copy to %s: %s", path, tmp, strerror(errno));
        close(in);
        return NULL;
    }
    while ((n = read(in, buf, sizeof buf)) > 0)
        if (write(out, buf, (size_t)n) != n) {
            n = -1;
            break;
        }
    if (n < 0)
        snprintf(err, errlen, "%s: cannot copy to %s: %s", path, tmp, strerror(errno));
    else if ((dl = dlopen(tmp, RTLD_NOW | RTLD_LOCAL)) == NULL)
        snprintf(err, errlen, "%s: %s", path, dlerror());
    close(in);
    close(out);
    unlink(tmp);    /* the mapping stays while the handle is open */
    return dl;
}

static void
plugin_destroy(struct server *srv, struct unit *u)
{
    struct moonlet_plugin *p = (struct moonlet_plugin *)u;

    (void)srv;
    if (p->handed_over || p->heir_of)   /* given away, or never received (not committed) */
        p->data = NULL;
    if (p->phase == PLUGIN_RUNNING) {
        p->phase = PLUGIN_FINI;
        if (p->copy.fini) {
            struct crash_ctx cc = {p->copy.name, NULL, 0, "fini"}, *up = crash_enter(&cc);

            p->copy.fini(p);
            crash_leave(up);
        }
    }
    timers_stop_all(p);
    if (p->dl)
        dlclose(p->dl);
    free(p->path);
    free(p);
}

static int
plugin_load(struct server *srv, const char *path, const struct conf_item *conf,
            struct unit *prev, struct unit **out, char *err, size_t errlen)
{
    const moonlet_plugin_info *info;
    struct moonlet_plugin *p = calloc(1, sizeof *p);
    int rc;

    *out = NULL;
    if (p == NULL || (p->path = strdup(path)) == NULL) {
        snprintf(err, errlen, "%s: out of memory", path);
        free(p);
        return -1;
    }
    p->srv = srv;
    p->unit.rt = &runtime_c;
    p->unit.srv = srv;
    p->unit.name = p->path;
    p->phase = PLUGIN_FINI;
    *out = &p->unit;
    if ((p->dl = open_copy(path, err, errlen)) == NULL)
        return -1;
    if ((info = dlsym(p->dl, "moonlet_plugin_descriptor")) == NULL) {
        snprintf(err, errlen, "%s: not a moonlet plugin (no moonlet_plugin_descriptor symbol)", path);
        return -1;
    }
    if (info->abi_major != MOONLET_ABI_MAJOR || info->abi_minor > MOONLET_ABI_MINOR) {
        snprintf(err, errlen, "%s: plugin needs ABI %u.%u, server has %u.%u", path,
                 info->abi_major, info->abi_minor, MOONLET_ABI_MAJOR, MOONLET_ABI_MINOR);
        return -1;
    }
    if (info->info_size < offsetof(moonlet_plugin_info, state_version)) {
        snprintf(err, errlen, "%s: plugin descriptor too small", path);
        return -1;
    }
    memcpy(&p->copy, info, info->info_size < sizeof p->copy ? info->info_size : sizeof p->copy);
    if (p->copy.name == NULL || p->copy.init == NULL) {
        snprintf(err, errlen, "%s: plugin descriptor has no name or init", path);
        return -1;
    }
    for (struct unit *u = srv->units; u; u = u->next) {
        const struct moonlet_plugin *q = (const struct moonlet_plugin *)u;

        if (u != prev && u->ld == &plugin_loader && strcmp(q->copy.name, p->copy.name) == 0) {
            snprintf(err, errlen, "%s: a plugin named '%s' is already loaded (%s)", path,
                     p->copy.name, q->path);
            return -1;
        }
    }
    p->info = info;
    p->unit.name = p->copy.name;
    p->unit.version = p->copy.version;
    p->conf.items = conf;
    p->conf.name = p->copy.name;
    p->phase = PLUGIN_INIT;
    if (prev && prev->ld == &plugin_loader)
        p->prev = (struct moonlet_plugin *)prev;
    {
        struct crash_ctx cc = {p->copy.name, NULL, 0, "init"}, *up = crash_enter(&cc);

        rc = p->copy.init(p, &p->conf);
        crash_leave(up);
    }
    p->prev = NULL;
    if (rc != MOONLET_OK) {
        snprintf(err, errlen, "%s: init of '%s' failed (%d)", path, p->copy.name, rc);
        p->phase = PLUGIN_FINI;
        timers_stop_all(p);
        return -1;
    }
    p->phase = PLUGIN_RUNNING;
    log_info("loaded plugin %s %s from %s", p->copy.name,
             p->copy.version ? p->copy.version : "", path);
    return 0;
}

/* Replaced or unloaded: no new requests reach it. Its fini runs once nothing refers to it
 * (plugin_destroy), so that separate responses it owes can still be sent by its timers.
 * A successor now live that inherited its data completes the handoff. */
static void
plugin_retire(struct server *srv, struct unit *u)
{
    struct moonlet_plugin *p = (struct moonlet_plugin *)u;

    for (struct unit *v = srv->units; v; v = v->next) {
        struct moonlet_plugin *q = (struct moonlet_plugin *)v;

        if (v->ld == &plugin_loader && q->heir_of == p) {
            q->heir_of = NULL;
            p->handed_over = 1;
        }
    }
}

const struct loader plugin_loader = {".so", plugin_load, plugin_retire, NULL, plugin_destroy,
                                     NULL, NULL};

/* ---- settings lists ------------------------------------------------------------------ */

void
conf_list_free(struct conf_item *c)
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
conf_list_copy(const struct conf_item *c, struct conf_item **out)
{
    struct conf_item **tail = out;

    *out = NULL;
    for (; c; c = c->next) {
        struct conf_item *n = calloc(1, sizeof *n);

        if (n == NULL || (n->plugin = strdup(c->plugin)) == NULL ||
            (n->key = strdup(c->key)) == NULL || (n->value = strdup(c->value)) == NULL) {
            if (n) {
                free(n->plugin);
                free(n->key);
                free(n);
            }
            conf_list_free(*out);
            *out = NULL;
            return -1;
        }
        *tail = n;
        tail = &n->next;
    }
    return 0;
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
    if (p->phase == PLUGIN_FINI) {
        log_error("%s: moonlet_resource_add in fini", p->unit.name);
        return NULL;
    }
    if ((r = tree_resource_new(def, def_size, ud, &p->unit, err, sizeof err)) == NULL) {
        log_error("%s: cannot register: %s", p->unit.name, err);
        return NULL;
    }
    if (p->phase == PLUGIN_INIT) {
        if (server_register(p->srv, r) != MOONLET_OK) {
            log_error("%s: cannot register %s: path already registered", p->unit.name,
                      r->path);
            tree_resource_free(r);
            return NULL;
        }
    } else {
        int rc = server_register_runtime(p->srv, r);

        if (rc != MOONLET_OK) {
            log_warn("%s: cannot create %s: %s", p->unit.name, r->path,
                     rc == MOONLET_EEXIST   ? "path already registered"
                     : rc == MOONLET_ERANGE ? "runtime_resources reached"
                                            : "the plugin was replaced by a reload");
            tree_resource_free(r);
            return NULL;
        }
    }
    return (moonlet_resource *)r;
}

int
moonlet_resource_remove(moonlet_plugin *p, moonlet_resource *mr)
{
    struct resource *r = (struct resource *)mr;

    if (p == NULL || r == NULL || r->unit != &p->unit || p->phase == PLUGIN_FINI)
        return MOONLET_EINVAL;
    return server_unregister(p->srv, r) == MOONLET_OK ? MOONLET_OK : MOONLET_EINVAL;
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

void *
moonlet_plugin_inherit(moonlet_plugin *p)
{
    struct moonlet_plugin *old = p->prev;

    if (p->phase != PLUGIN_INIT || old == NULL || p->copy.state_version == 0 ||
        old->copy.state_version != p->copy.state_version)
        return NULL;
    p->heir_of = old;
    p->data = old->data;
    return p->data;
}

const char *
moonlet_conf_str(const moonlet_conf *c, const char *key, const char *dflt)
{
    const char *v = dflt;

    /* the last setting wins, as on a command line; an item named "" is this unit's own
     * (a config file's settings block) */
    for (const struct conf_item *i = c ? c->items : NULL; i; i = i->next)
        if ((i->plugin[0] == '\0' || strcmp(i->plugin, c->name) == 0) && strcmp(i->key, key) == 0)
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
    errno = 0;
    n = strtol(v, &end, 0);
    return *v && *end == '\0' && errno != ERANGE ? n : dflt;    /* no clamping to LONG_MAX */
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
    struct crash_ctx cc = {t->p->unit.name, NULL, 0, NULL}, *up;
    int oneshot = w->repeat <= 0;

    (void)loop, (void)revents;
    t->firing = 1;
    up = crash_enter(&cc); /* a fatal signal in the callback names the plugin (crash.c) */
    t->cb(t, t->ud);
    crash_leave(up);
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
