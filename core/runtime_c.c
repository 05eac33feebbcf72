/*
 * runtime_c.c -- the C runtime: a handler is a function pointer.
 */
#include "runtime.h"
#include "tree.h"

int
runtime_c_call(struct resource *r, union handler h, moonlet_req *req, moonlet_resp *resp)
{
    return h.fn(req, resp, r->ud);
}

int
runtime_c_children(struct resource *r, moonlet_child_emit emit, void *ctx)
{
    return r->kids.children((moonlet_resource *)r, emit, ctx, r->ud);
}

const struct runtime runtime_c = {"c", runtime_c_call, NULL, runtime_c_children};
