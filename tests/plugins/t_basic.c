/*
 * t_basic.c -- test plugin for the integration suite (tests/integration/test_core.py):
 * resources that make the core's decisions observable on the wire (4.02/4.04/4.05/4.06/4.15,
 * separate responses, hidden resources, percent-encoded segments, link attributes, -s conf).
 * Uses only moonlet.h.
 *
 * /t/counter  GET: number of state-changing handler runs (PUT/POST/DELETE on any t_basic
 *             resource) -- proves a handler ran once, or not at all (4.02).
 *             PUT: sets the count to the decimal payload. POST: adds one (like every run).
 * /t/store    ct {0, 50}. GET: the stored value as text (0) or a JSON string (50).
 *             PUT: stores the payload. DELETE: clears it.
 * /t/getonly  GET only.      /t/defer?ms=N  2.05 "late" after N ms (moonlet_defer + timer).
 * /t/hidden   not listed.    /t/a%2Fb       one segment "a/b".
 * /t/attrs    every link attribute.   /t/big  1000 bytes.   /t/conf  -s t_basic.greeting.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moonlet.h"

#define STORE_MAX 256
#define DEFER_MAX_MS 60000

struct t_state {
    moonlet_plugin *p;
    unsigned long runs;     /* state-changing handler runs */
    char store[STORE_MAX];
    size_t store_len;
    const moonlet_conf *conf;
    char greeting[64];
};

static int text(moonlet_resp *resp, unsigned code, const char *s)
{
    moonlet_resp_code(resp, code);
    moonlet_resp_ct(resp, MOONLET_CT_TEXT);
    return moonlet_resp_payload(resp, s, strlen(s));
}

static int counter_get(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    struct t_state *st = ud;
    char buf[32];

    (void)req;
    snprintf(buf, sizeof buf, "%lu", st->runs);
    return text(resp, MOONLET_CONTENT, buf);
}

static int counter_put(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    struct t_state *st = ud;
    char buf[32];
    size_t len;
    const uint8_t *pl = moonlet_req_payload(req, &len);

    if (len == 0 || len >= sizeof buf)
        return moonlet_resp_error(resp, MOONLET_BAD_REQUEST, "decimal payload expected");
    memcpy(buf, pl, len);
    buf[len] = '\0';
    st->runs = strtoul(buf, NULL, 10);
    moonlet_resp_code(resp, MOONLET_CHANGED);
    return MOONLET_OK;
}

static int counter_post(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    struct t_state *st = ud;

    (void)req;
    st->runs++;
    moonlet_resp_code(resp, MOONLET_CHANGED);
    return MOONLET_OK;
}

static int store_get(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    struct t_state *st = ud;
    char buf[STORE_MAX + 3];

    if (moonlet_req_accept(req) == MOONLET_CT_JSON) {
        /* test values are plain ASCII words; no JSON escaping needed */
        int n = snprintf(buf, sizeof buf, "\"%.*s\"", (int)st->store_len, st->store);
        moonlet_resp_ct(resp, MOONLET_CT_JSON);
        return moonlet_resp_payload(resp, buf, (size_t)n);
    }
    moonlet_resp_ct(resp, MOONLET_CT_TEXT);
    return moonlet_resp_payload(resp, st->store, st->store_len);
}

static int store_put(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    struct t_state *st = ud;
    size_t len;
    const uint8_t *pl = moonlet_req_payload(req, &len);

    if (len > sizeof st->store)
        return moonlet_resp_error(resp, MOONLET_REQUEST_ENTITY_TOO_LARGE, "max %d bytes",
                                  STORE_MAX);
    st->runs++;
    memcpy(st->store, pl, len);
    st->store_len = len;
    moonlet_resp_code(resp, MOONLET_CHANGED);
    return MOONLET_OK;
}

static int store_del(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    struct t_state *st = ud;

    (void)req;
    st->runs++;
    st->store_len = 0;
    moonlet_resp_code(resp, MOONLET_DELETED);
    return MOONLET_OK;
}

static void defer_fire(moonlet_timer *t, void *ud)
{
    moonlet_pending *pd = ud;

    (void)t;
    text(moonlet_pending_resp(pd), MOONLET_CONTENT, "late");
    moonlet_pending_send(pd);
}

static int defer_get(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    struct t_state *st = ud;
    const char *ms_s = moonlet_req_query(req, "ms", NULL);
    unsigned long ms = ms_s ? strtoul(ms_s, NULL, 10) : 0;
    moonlet_pending *pd;

    if (ms > DEFER_MAX_MS)
        return moonlet_resp_error(resp, MOONLET_BAD_REQUEST, "ms <= %d", DEFER_MAX_MS);
    pd = moonlet_defer(req, (unsigned)ms + 10000);
    if (!pd)
        return MOONLET_ENOMEM;
    if (!moonlet_timer_start(st->p, ms / 1000.0, 0, defer_fire, pd)) {
        moonlet_pending_drop(pd);
        return MOONLET_DEFERRED;
    }
    return MOONLET_DEFERRED;
}

/* The reply names the resource: the request's last (decoded) segment. */
static int const_get(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    size_t len = 0;
    unsigned n = moonlet_req_segments(req);
    const char *seg = n ? moonlet_req_segment(req, n - 1, &len) : "";

    (void)ud;
    moonlet_resp_ct(resp, MOONLET_CT_TEXT);
    return moonlet_resp_payload(resp, seg, len);
}

static int big_get(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    char buf[1000];

    (void)req;
    (void)ud;
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (char)('0' + i % 10);
    moonlet_resp_ct(resp, MOONLET_CT_OCTETS);
    return moonlet_resp_payload(resp, buf, sizeof buf);
}

static int conf_get(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    struct t_state *st = ud;
    const char *key = moonlet_req_query(req, "int", NULL);
    char num[32];

    if (key) {          /* /t/conf?int=KEY: moonlet_conf_int(KEY, -1) */
        snprintf(num, sizeof num, "%ld", moonlet_conf_int(st->conf, key, -1));
        return text(resp, MOONLET_CONTENT, num);
    }
    return text(resp, MOONLET_CONTENT, st->greeting);
}

static const int ct_text_json[] = {MOONLET_CT_TEXT, MOONLET_CT_JSON, MOONLET_CT_END};
static const moonlet_attr attrs_extra[] = {{"foo", NULL}, {"bar", NULL}, {NULL, NULL}};

static const moonlet_resource_def defs[] = {
    {.path = "/t/counter", .get = counter_get, .put = counter_put, .post = counter_post},
    {.path = "/t/store", .ct = ct_text_json, .get = store_get, .put = store_put,
     .del = store_del},
    {.path = "/t/getonly", .get = const_get},
    {.path = "/t/defer", .get = defer_get},
    {.path = "/t/hidden", .hidden = 1, .get = const_get},
    {.path = "/t/a%2Fb", .get = const_get},
    {.path = "/t/attrs", .rt = "x y", .iface = "sensor", .ct = ct_text_json, .sz = 123,
     .title = "A, \"quoted\" title", .obs = 1, .extra = attrs_extra, .get = const_get},
    {.path = "/t/big", .get = big_get},
    {.path = "/t/conf", .get = conf_get},
};

static int t_init(moonlet_plugin *p, const moonlet_conf *conf)
{
    struct t_state *st = calloc(1, sizeof *st);

    if (!st)
        return MOONLET_ENOMEM;
    st->p = p;
    st->conf = conf;
    snprintf(st->greeting, sizeof st->greeting, "%s",
             moonlet_conf_str(conf, "greeting", "none"));
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++) {
        if (!moonlet_resource_add(p, &defs[i], st)) {
            free(st);   /* the core logged why and undoes the registrations */
            return MOONLET_EINVAL;
        }
    }
    moonlet_plugin_set_data(p, st);
    return MOONLET_OK;
}

static void t_fini(moonlet_plugin *p)
{
    free(moonlet_plugin_data(p));
}

MOONLET_PLUGIN("t_basic", "1", t_init, t_fini);
