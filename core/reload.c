/*
 * reload.c -- units (plugins and scripts) in and out of the live resource tree.
 *
 * Every load stages: the loader runs the unit's init (or top-level chunk) while its
 * registrations go to a staging tree, so a unit that fails to load leaves nothing behind
 * and a new version never touches the live tree until it has loaded completely. The
 * commit then swaps it in within one loop turn: a path the new version serves again keeps
 * its resource id (block-wise snapshots stay valid, so downloads in progress complete with
 * the bytes they started with) and its observers, which get the new representation; a
 * path it no longer serves gives its observers a final 4.04 (RFC 7641 §3.2, §4.2). The
 * old unit is retired: no new requests reach it, its timers stop, and the requests it is
 * still working on finish on its code; it is freed once nothing refers to it.
 *
 * With cfg.watch, each unit's file is watched (libev ev_stat: inotify where it exists);
 * a change, once the file has been quiet for WATCH_SETTLE seconds, reloads it. A version
 * that fails to load is logged (FILE:LINE for a script) and the running one stays.
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "block.h"
#include "exchange.h"
#include "log.h"
#include "observe.h"
#include "plugin.h"
#include "server.h"
#include "tree.h"

#define WATCH_SETTLE 0.2        /* s without further change before a reload */
#define WATCH_POLL 0.5          /* s between stat()s where inotify is not available */

struct watch {
    ev_stat st;
    ev_timer settle;
    struct server *srv;
    char *path;
};

/* ---- units ------------------------------------------------------------------------------ */

static const struct loader *
loader_for(const struct server *srv, const char *path, char *err, size_t errlen)
{
    size_t n = strlen(path);

    for (unsigned i = 0; i < SERVER_LOADERS && srv->loaders[i]; i++) {
        size_t k = strlen(srv->loaders[i]->suffix);

        if (n > k && strcmp(path + n - k, srv->loaders[i]->suffix) == 0)
            return srv->loaders[i];
    }
    if (n > 4 && strcmp(path + n - 4, ".lua") == 0) {
        snprintf(err, errlen, "%s: this moonlet was built without the Lua runtime", path);
        return NULL;
    }
    return &plugin_loader;      /* anything else is tried as a shared object */
}

int
server_is_plugin(const struct server *srv, const char *path)
{
    char err[160];

    return loader_for(srv, path, err, sizeof err) == &plugin_loader;
}

static struct unit *
find_unit(const struct server *srv, const char *path)
{
    for (struct unit *u = srv->units; u; u = u->next)
        if (strcmp(u->path, path) == 0)
            return u;
    return NULL;
}

int
server_register(struct server *srv, struct resource *r)
{
    struct tree *t = srv->staging ? srv->staging : srv->tree;

    if (tree_add(t, r) != MOONLET_OK)
        return MOONLET_EEXIST;
    r->unext = r->unit->res;
    r->unit->res = r;
    return MOONLET_OK;
}

int
server_register_runtime(struct server *srv, struct resource *r)
{
    struct unit *u = r->unit;
    int rc;

    if (u->retired)
        return MOONLET_ESTATE;
    if (u->created >= srv->cfg.runtime_resources)
        return MOONLET_ERANGE;
    if ((rc = tree_add(srv->tree, r)) != MOONLET_OK)
        return rc;
    r->runtime = 1;
    u->created++;
    r->unext = u->res;
    u->res = r;
    return MOONLET_OK;
}

int
server_unregister(struct server *srv, struct resource *r)
{
    struct resource **pp = &r->unit->res;

    if (r->removed)
        return MOONLET_ENOENT;
    if (tree_find_path(srv->tree, r->path) == r) {
        observe_end_resource(srv, r, MOONLET_NOT_FOUND);
        block_drop_resource(srv, r->id);
        tree_remove(srv->tree, r);
    } else if (srv->staging) {              /* declared and removed while its unit loads */
        tree_remove(srv->staging, r);
    }
    while (*pp && *pp != r)
        pp = &(*pp)->unext;
    if (*pp)
        *pp = r->unext;
    r->unit->created -= r->runtime;
    r->removed = 1;
    if (r->refs == 0)
        tree_resource_free(r);
    return MOONLET_OK;
}

static void watch_stop(struct server *srv, struct unit *u);

/* Free a unit nothing refers to: its resources (releasing the handler references), then
 * the loader's state. */
static void
unit_destroy(struct server *srv, struct unit *u)
{
    struct conf_item *conf = u->conf;
    char *path = u->path;

    watch_stop(srv, u);
    while (u->res) {
        struct resource *r = u->res;

        u->res = r->unext;
        tree_resource_free(r);
    }
    u->ld->destroy(srv, u);
    conf_list_free(conf);
    free(path);
}

/* A staged unit that will not go live: out of the staging tree, freed. */
static void
discard(struct server *srv, struct unit *u, struct tree *staging)
{
    for (struct resource *r = u->res; r; r = r->unext)
        tree_remove(staging, r);
    tree_free(staging);
    unit_destroy(srv, u);
}

/* Load path into a new unit whose resources wait in *staging. NULL with err. */
static struct unit *
stage(struct server *srv, const char *path, const struct conf_item *conf, struct unit *prev,
      struct tree **staging, char *err, size_t errlen)
{
    const struct loader *ld = loader_for(srv, path, err, errlen);
    struct conf_item *copy;
    struct unit *u = NULL;
    int rc;

    if (ld == NULL)
        return NULL;
    if ((*staging = tree_new()) == NULL || conf_list_copy(conf, &copy) < 0) {
        snprintf(err, errlen, "%s: out of memory", path);
        tree_free(*staging);
        return NULL;
    }
    srv->staging = *staging;
    rc = ld->load(srv, path, copy, prev, &u, err, errlen);
    srv->staging = NULL;
    if (u == NULL) {
        conf_list_free(copy);
        tree_free(*staging);
        return NULL;
    }
    u->ld = ld;
    u->conf = copy;
    if ((u->path = strdup(path)) == NULL && rc == 0) {
        snprintf(err, errlen, "%s: out of memory", path);
        rc = -1;
    }
    if (rc != 0) {
        discard(srv, u, *staging);
        return NULL;
    }
    return u;
}

/* Out of the tree (its observers told 4.04), no new work; freed by reload_reap. */
static void
retire(struct server *srv, struct unit *u)
{
    struct unit **pp = &srv->units;

    while (*pp && *pp != u)
        pp = &(*pp)->next;
    if (*pp)
        *pp = u->next;
    for (struct resource *r = u->res; r; r = r->unext) {
        if (tree_find_path(srv->tree, r->path) == r) {  /* not taken over by a new version */
            observe_end_resource(srv, r, MOONLET_NOT_FOUND);
            tree_remove(srv->tree, r);
        }
    }
    watch_stop(srv, u);
    u->retired = 1;
    u->ld->retire(srv, u);
    u->next = srv->retired;
    srv->retired = u;
}

/* Put staged unit u live in place of prev (or beside the others). -1 with err on a path
 * another unit serves; nothing changed then. */
static int
commit(struct server *srv, struct unit *prev, struct unit *u, struct tree *staging, char *err,
       size_t errlen)
{
    struct resource *r;

    for (r = staging->first; r; r = r->next) {
        const struct resource *o = tree_find_path(srv->tree, r->path);

        if (o && o->unit != prev) {
            snprintf(err, errlen, "%s: %s is already served by %s", u->path, r->path,
                     o->unit->name);
            return -1;
        }
    }
    while ((r = staging->first) != NULL) {
        struct resource *o = tree_find_path(srv->tree, r->path);

        tree_remove(staging, r);
        r->id = 0;
        if (o) {                /* the same path again: same id, same observers */
            r->id = o->id;
            tree_remove(srv->tree, o);
        }
        tree_add(srv->tree, r);
        if (o)
            observe_move(srv, o, r);
    }
    tree_free(staging);
    u->loaded_at = (double)time(NULL);
    u->next = srv->units;
    srv->units = u;
    if (prev)
        retire(srv, prev);      /* what the new version no longer serves: 4.04; its
                                   successor (live now) takes over its state */
    return 0;
}

/* ---- watching files -------------------------------------------------------------------- */

static void
settle_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    struct watch *w = (struct watch *)((char *)t - offsetof(struct watch, settle));
    struct unit *u;
    char err[512];

    (void)loop, (void)revents;
    if ((u = find_unit(w->srv, w->path)) == NULL)
        return;
    if (server_reload(w->srv, w->path, u->conf, err, sizeof err) < 0)
        log_error("%s; the running version keeps serving", err);
}

static void
stat_cb(struct ev_loop *loop, ev_stat *st, int revents)
{
    struct watch *w = (struct watch *)((char *)st - offsetof(struct watch, st));

    (void)revents;
    if (st->attr.st_nlink == 0)     /* removed (or mid-rename): wait for it to come back */
        return;
    ev_timer_stop(loop, &w->settle);
    ev_timer_set(&w->settle, WATCH_SETTLE, 0);
    ev_timer_start(loop, &w->settle);
}

static void
watch_start(struct server *srv, struct unit *u)
{
    struct watch *w;

    if (!srv->cfg.watch || (w = calloc(1, sizeof *w)) == NULL)
        return;
    if ((w->path = strdup(u->path)) == NULL) {
        free(w);
        return;
    }
    w->srv = srv;
    ev_stat_init(&w->st, stat_cb, w->path, WATCH_POLL);
    ev_stat_start(srv->loop, &w->st);
    ev_unref(srv->loop);        /* watching does not keep the server running */
    ev_timer_init(&w->settle, settle_cb, WATCH_SETTLE, 0);
    u->watch = w;
}

static void
watch_stop(struct server *srv, struct unit *u)
{
    struct watch *w = u->watch;

    if (w == NULL)
        return;
    ev_ref(srv->loop);
    ev_stat_stop(srv->loop, &w->st);
    ev_timer_stop(srv->loop, &w->settle);
    free(w->path);
    free(w);
    u->watch = NULL;
}

/* ---- the API ------------------------------------------------------------------------- */

int
server_load(struct server *srv, const char *path, const struct conf_item *conf, char *err,
            size_t errlen)
{
    struct tree *staging;
    struct unit *u = stage(srv, path, conf, NULL, &staging, err, errlen);

    if (u == NULL)
        return -1;
    if (commit(srv, NULL, u, staging, err, errlen) < 0) {
        discard(srv, u, staging);
        return -1;
    }
    watch_start(srv, u);
    return 0;
}

int
server_reload(struct server *srv, const char *path, const struct conf_item *conf, char *err,
              size_t errlen)
{
    struct unit *prev = find_unit(srv, path), *u;
    struct tree *staging;
    void *watch;

    if (prev == NULL) {
        snprintf(err, errlen, "%s: not loaded", path);
        return -1;
    }
    if ((u = stage(srv, path, conf, prev, &staging, err, errlen)) == NULL) {
        srv->m.reloads_failed++;
        return -1;
    }
    watch = prev->watch;        /* the file's watch goes on, for the new version */
    prev->watch = NULL;
    if (commit(srv, prev, u, staging, err, errlen) < 0) {
        prev->watch = watch;
        discard(srv, u, staging);
        srv->m.reloads_failed++;
        return -1;
    }
    srv->m.reloads_ok++;
    u->watch = watch;
    if (watch == NULL)
        watch_start(srv, u);
    log_info("reloaded %s", path);
    return 0;
}

int
server_unload(struct server *srv, const char *path)
{
    struct unit *u = find_unit(srv, path);

    if (u == NULL)
        return -1;
    retire(srv, u);
    log_info("unloaded %s", path);
    return 0;
}

void
reload_reap(struct server *srv)
{
    struct unit **pp = &srv->retired;
    int freed = 0;

    while (*pp) {
        struct unit *u = *pp;

        if (u->refs == 0 && !(u->ld->busy && u->ld->busy(u))) {
            *pp = u->next;
            log_info("%s: the retired version is freed", u->path);
            unit_destroy(srv, u);
            freed = 1;
        } else {
            pp = &u->next;
        }
    }
#ifdef __GLIBC__
    /* A whole Lua state (or plugin) was built while the old one still drained, then the
     * old one freed: its pages are holes between live blocks, which glibc keeps. Give them
     * back, so a reloading server's RSS stays flat (a soak measured +18 KiB/min without;
     * reloads are rare, the trim takes well under a millisecond). */
    if (freed)
        malloc_trim(0);
#endif
}

void
reload_fini(struct server *srv)
{
    const struct loader *done[SERVER_LOADERS + 1];
    unsigned n = 0;

    while (srv->units)
        retire(srv, srv->units);
    while (srv->retired) {      /* shutdown: whatever still waits is dropped */
        struct unit *u = srv->retired;

        srv->retired = u->next;
        unit_destroy(srv, u);
    }
    for (unsigned i = 0; i < SERVER_LOADERS && srv->loaders[i]; i++)
        done[n++] = srv->loaders[i];
    done[n++] = &plugin_loader;
    for (unsigned i = 0; i < n; i++)
        if (done[i]->fini)
            done[i]->fini(srv);
}

/* ---- the admin view ---------------------------------------------------------------------- */

static int
units_get(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    struct server *srv = ud;
    char line[1024];
    size_t len = 0, cap = 0;
    char *buf = NULL;
    int rc;

    (void)req;
    /* one line per unit: path, kind, name, version, load time (UTC), resources */
    for (const struct unit *u = srv->units; u; u = u->next) {
        time_t t = (time_t)u->loaded_at;
        struct tm tm;
        char when[32];
        unsigned nres = 0;
        int n;

        for (const struct resource *r = u->res; r; r = r->unext)
            nres++;
        gmtime_r(&t, &tm);
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        n = snprintf(line, sizeof line, "%s %s %s %s %s %u\n", u->path,
                     u->ld == &plugin_loader ? "plugin" : "script", u->name,
                     u->version ? u->version : "-", when, nres);
        if (n < 0)
            continue;
        if (len + (size_t)n + 1 > cap) {
            char *nb = realloc(buf, cap = (len + (size_t)n + 1) * 2);

            if (nb == NULL) {
                free(buf);
                return MOONLET_ENOMEM;
            }
            buf = nb;
        }
        memcpy(buf + len, line, (size_t)n);
        len += (size_t)n;
    }
    moonlet_resp_ct(resp, MOONLET_CT_TEXT);
    rc = moonlet_resp_payload(resp, buf ? buf : "", len);
    free(buf);
    return rc;
}

int
reload_admin_register(struct server *srv)
{
    struct unit *admin_unit = &srv->admin_unit;

    static const int ct[] = {MOONLET_CT_TEXT, MOONLET_CT_END};
    const moonlet_resource_def def = {.path = "/.well-known/moonlet/units", .ct = ct,
                                      .hidden = 1, .get = units_get};
    struct resource *r;
    char err[128];

    admin_unit->rt = &runtime_c;
    admin_unit->name = "builtin";
    admin_unit->srv = srv;
    if ((r = tree_resource_new(&def, sizeof def, srv, admin_unit, err, sizeof err)) == NULL)
        return -1;
    if (tree_add(srv->tree, r) != MOONLET_OK) {
        tree_resource_free(r);
        return -1;
    }
    return 0;
}
