/*
 * hello.c -- the smallest useful moonlet plugin: a text resource, an echo, and a slow
 * resource answered later as a separate response (RFC 7252 §5.2.2).
 *
 *   make && build/moonlet build/plugins/hello.so
 *   coap-client-notls -m get coap://[::1]/hello
 */
#include <stdlib.h>
#include <string.h>

#include <moonlet.h>

static int
hello_get(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    const char *text = ud;

    (void)req;
    moonlet_resp_ct(resp, MOONLET_CT_TEXT);
    return moonlet_resp_payload(resp, text, strlen(text));
}

static int
echo_post(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    size_t len;
    const uint8_t *body = moonlet_req_payload(req, &len);

    (void)ud;
    moonlet_resp_code(resp, MOONLET_CHANGED);
    if (moonlet_req_ct(req) != MOONLET_CT_NONE)
        moonlet_resp_ct(resp, moonlet_req_ct(req));
    return moonlet_resp_payload(resp, body, len);
}

/* /slow: keep the request open, answer from a timer three seconds later. */
static void
slow_done(moonlet_timer *t, void *ud)
{
    moonlet_pending *pd = ud;
    moonlet_resp *resp = moonlet_pending_resp(pd);

    (void)t;
    moonlet_resp_ct(resp, MOONLET_CT_TEXT);
    moonlet_resp_payload(resp, "slow response", 13);
    moonlet_pending_send(pd);
}

static int
slow_get(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    moonlet_plugin *p = ud;
    moonlet_pending *pd = moonlet_defer(req, 10000);

    (void)resp;
    if (pd == NULL)
        return MOONLET_ENOMEM;
    if (moonlet_timer_start(p, 3.0, 0, slow_done, pd) == NULL) {
        moonlet_pending_drop(pd);
        return MOONLET_ENOMEM;
    }
    return MOONLET_DEFERRED;
}

static const int text_only[] = {MOONLET_CT_TEXT, MOONLET_CT_END};

static int
hello_init(moonlet_plugin *p, const moonlet_conf *conf)
{
    static const moonlet_resource_def hello = {
        .path = "/hello", .rt = "hello", .ct = text_only, .title = "Hello", .get = hello_get};
    static const moonlet_resource_def echo = {
        .path = "/echo", .rt = "echo", .title = "Echo", .post = echo_post};
    static const moonlet_resource_def slow = {
        .path = "/slow", .rt = "slow", .ct = text_only, .title = "Slow", .get = slow_get};
    /* the greeting is configurable: moonlet -s hello.text='Hej' ... */
    const char *text = moonlet_conf_str(conf, "text", "Hello, world");
    char *copy = strdup(text);

    if (copy == NULL)
        return MOONLET_ENOMEM;
    moonlet_plugin_set_data(p, copy);
    if (!moonlet_resource_add(p, &hello, copy) || !moonlet_resource_add(p, &echo, NULL) ||
        !moonlet_resource_add(p, &slow, p)) {
        free(copy);
        return MOONLET_EINVAL;
    }
    return MOONLET_OK;
}

static void
hello_fini(moonlet_plugin *p)
{
    free(moonlet_plugin_data(p));
}

MOONLET_PLUGIN("hello", "1.0.0", hello_init, hello_fini);
