/*
 * t_observe.c -- Observe from a C plugin (ABI 1.2): /t/obs is observable; GET answers
 * "c=<n>" and counts its runs; POST adds one to n and calls moonlet_notify itself;
 * /t/obs-auto is observable with autonotify: a PUT of a number sets m, and the core
 * notifies after the 2.04; GET /t/obs-runs answers the GET run count of /t/obs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moonlet.h"

static struct {
    moonlet_resource *obs;
    long n, m, runs;
} st;

static int
text(moonlet_resp *resp, const char *fmt, long v)
{
    char buf[32];
    int len = snprintf(buf, sizeof buf, fmt, v);

    return moonlet_resp_payload(resp, buf, (size_t)len);
}

static int
obs_get(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    (void)req, (void)ud;
    st.runs++;
    return text(resp, "c=%ld", st.n);
}

static int
obs_post(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    (void)req, (void)ud;
    st.n++;
    moonlet_resp_code(resp, MOONLET_CHANGED);
    return moonlet_notify(st.obs);
}

static int
auto_get(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    (void)req, (void)ud;
    return text(resp, "m=%ld", st.m);
}

static int
auto_put(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    size_t len;
    const uint8_t *p = moonlet_req_payload(req, &len);
    char buf[24];

    (void)ud;
    if (len == 0 || len >= sizeof buf)
        return moonlet_resp_error(resp, MOONLET_BAD_REQUEST, "a number");
    memcpy(buf, p, len);
    buf[len] = '\0';
    st.m = strtol(buf, NULL, 10);
    moonlet_resp_code(resp, MOONLET_CHANGED);
    return MOONLET_OK;
}

static int
runs_get(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    (void)req, (void)ud;
    return text(resp, "%ld", st.runs);
}

static int
observe_init(moonlet_plugin *p, const moonlet_conf *conf)
{
    static const moonlet_resource_def obs = {
        .path = "/t/obs", .obs = 1, .get = obs_get, .post = obs_post};
    static const moonlet_resource_def autod = {
        .path = "/t/obs-auto", .obs = 1, .autonotify = 1, .get = auto_get, .put = auto_put};
    static const moonlet_resource_def runs = {.path = "/t/obs-runs", .get = runs_get};

    (void)conf;
    st.obs = moonlet_resource_add(p, &obs, NULL);
    if (st.obs == NULL || moonlet_resource_add(p, &autod, NULL) == NULL ||
        moonlet_resource_add(p, &runs, NULL) == NULL)
        return MOONLET_EINVAL;
    return MOONLET_OK;
}

MOONLET_PLUGIN("t_observe", "1", observe_init, NULL);
