/*
 * t_failinit.c -- init registers a resource and starts a timer, then fails: the loader must
 * undo both and report the plugin by name. With -s t_failinit.fail=0 it loads instead, and
 * leaves a repeating timer running at fini (the core must stop it and say so).
 */
#include "moonlet.h"

static int
get(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    (void)req, (void)ud;
    return moonlet_resp_payload(resp, "up", 2);
}

static void
tick(moonlet_timer *t, void *ud)
{
    (void)t, (void)ud;
}

static int
failinit_init(moonlet_plugin *p, const moonlet_conf *conf)
{
    static const moonlet_resource_def def = {.path = "/t/failinit", .get = get};

    if (!moonlet_resource_add(p, &def, NULL))
        return MOONLET_EINVAL;
    if (!moonlet_timer_start(p, 0.05, 0.05, tick, NULL))
        return MOONLET_ENOMEM;
    return moonlet_conf_bool(conf, "fail", 1) ? MOONLET_EINVAL : MOONLET_OK;
}

MOONLET_PLUGIN("t_failinit", "1", failinit_init, NULL);
