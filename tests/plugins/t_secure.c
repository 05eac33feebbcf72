/* t_secure -- the identity and access API of moonlet.h (ABI 1.5) for test_dtls.py:
 *   GET /c/who        "AUTH|NAME|ALT1,ALT2" of moonlet_req_identity
 *   GET /c/gw         only for the PSK identity "gw" (allow)
 *   GET /c/secure     only over coaps:// (secure)
 *   GET /c/match?p=P  moonlet_identity_match(identity, P): "1" or "0" */
#include <stdio.h>
#include <string.h>

#include "moonlet.h"

static int who_get(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    static const char *const auths[] = {"none", "psk", "rpk", "x509", "anon"};
    const moonlet_identity *id = moonlet_req_identity(req);
    char buf[1024];
    size_t n;

    (void)ud;
    n = (size_t)snprintf(buf, sizeof buf, "%s|%s|", auths[id->auth], id->name);
    for (const char *const *a = id->alt; *a && n < sizeof buf; a++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s%s", a == id->alt ? "" : ",", *a);
    return moonlet_resp_payload(resp, buf, strlen(buf));
}

static int ok_get(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    (void)req, (void)ud;
    return moonlet_resp_payload(resp, "ok", 2);
}

static int match_get(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    const char *p = moonlet_req_query(req, "p", NULL);

    (void)ud;
    return moonlet_resp_payload(resp, moonlet_identity_match(moonlet_req_identity(req), p)
                                          ? "1" : "0", 1);
}

static const char *const gw_only[] = {"psk:gw", NULL};

static const moonlet_resource_def defs[] = {
    {.path = "/c/who", .get = who_get},
    {.path = "/c/gw", .get = ok_get, .allow = gw_only},
    {.path = "/c/secure", .get = ok_get, .secure = 1},
    {.path = "/c/match", .get = match_get},
};

static int t_init(moonlet_plugin *p, const moonlet_conf *conf)
{
    (void)conf;
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++)
        if (!moonlet_resource_add(p, &defs[i], NULL))
            return MOONLET_EINVAL;
    return MOONLET_OK;
}

MOONLET_PLUGIN("t_secure", "1", t_init, NULL);
