/*
 * t_runtime.c -- run-time resources from a C plugin (ABI 1.4): POST /t/items with a body
 * creates /t/items/N (2.01, Location-Path t/items/N) whose GET answers the body and whose
 * DELETE removes it from inside its own handler; /t/tree/ * (a subtree) answers the rest
 * of the path and how many segments the resource's own path has, and lists the children
 * x and y/z in /.well-known/core.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moonlet.h"

struct item {
    moonlet_resource *res;
    size_t len;
    char body[64];
};

static moonlet_plugin *plugin;
static unsigned next_id;
static struct item *items[64];     /* ours to free: the core copies definitions, not ud */

static int
item_get(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    struct item *it = ud;

    (void)req;
    return moonlet_resp_payload(resp, it->body, it->len);
}

static int
item_delete(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    struct item *it = ud;

    (void)req;
    moonlet_resp_code(resp, MOONLET_DELETED);
    if (moonlet_resource_remove(plugin, it->res) != MOONLET_OK)
        return moonlet_resp_error(resp, MOONLET_INTERNAL_SERVER_ERROR, "remove failed");
    for (unsigned i = 0; i < 64; i++)
        if (items[i] == it)
            items[i] = NULL;
    free(it);
    return MOONLET_OK;
}

static int
items_post(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    const moonlet_resource_def def = {.get = item_get, .del = item_delete, .obs = 1,
                                      .rt = "item", .path = NULL};
    moonlet_resource_def d = def;
    struct item *it = calloc(1, sizeof *it);
    const uint8_t *body;
    char path[64], id[16];
    size_t len;

    (void)ud;
    if (it == NULL)
        return MOONLET_ENOMEM;
    if (next_id >= 64) {
        free(it);
        return moonlet_resp_error(resp, MOONLET_SERVICE_UNAVAILABLE, "64 items made");
    }
    body = moonlet_req_payload(req, &len);
    it->len = len < sizeof it->body ? len : sizeof it->body;
    memcpy(it->body, body, it->len);
    snprintf(id, sizeof id, "%u", ++next_id);
    snprintf(path, sizeof path, "/t/items/%s", id);
    d.path = path;
    if ((it->res = moonlet_resource_add(plugin, &d, it)) == NULL) {
        free(it);
        return moonlet_resp_error(resp, MOONLET_SERVICE_UNAVAILABLE, "cannot create %s", path);
    }
    items[next_id - 1] = it;
    moonlet_resp_code(resp, MOONLET_CREATED);
    moonlet_resp_option(resp, MOONLET_OPT_LOCATION_PATH, "t", 1);
    moonlet_resp_option(resp, MOONLET_OPT_LOCATION_PATH, "items", 5);
    return moonlet_resp_option(resp, MOONLET_OPT_LOCATION_PATH, id, strlen(id));
}

static int
tree_get(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    char buf[256];
    int n = snprintf(buf, sizeof buf, "base=%u rest=", moonlet_req_base(req));

    (void)ud;
    for (unsigned i = moonlet_req_base(req); i < moonlet_req_segments(req); i++) {
        size_t len;
        const char *s = moonlet_req_segment(req, i, &len);

        n += snprintf(buf + n, sizeof buf - (size_t)n, "%s%.*s",
                      i > moonlet_req_base(req) ? "/" : "", (int)len, s);
    }
    return moonlet_resp_payload(resp, buf, (size_t)n);
}

/* /t/tree/ * lists two children in /.well-known/core */
static int
tree_children(moonlet_resource *r, moonlet_child_emit emit, void *ctx, void *ud)
{
    const moonlet_resource_def x = {.path = "x"}, yz = {.path = "y/z", .rt = "leaf", .obs = 1};

    (void)r, (void)ud;
    if (emit(ctx, &x) == 0)
        emit(ctx, &yz);
    return MOONLET_OK;
}

static int
init(moonlet_plugin *p, const moonlet_conf *conf)
{
    const moonlet_resource_def list = {.path = "/t/items", .post = items_post};
    const moonlet_resource_def tree = {.path = "/t/tree/*", .get = tree_get,
                                       .children = tree_children};

    (void)conf;
    plugin = p;
    return moonlet_resource_add(p, &list, NULL) && moonlet_resource_add(p, &tree, NULL)
               ? MOONLET_OK
               : MOONLET_EINVAL;
}

static void
fini(moonlet_plugin *p)
{
    (void)p;
    for (unsigned i = 0; i < 64; i++)
        free(items[i]);
}

MOONLET_PLUGIN("t_runtime", "1", init, fini);
