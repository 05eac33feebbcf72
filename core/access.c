/*
 * access.c -- identities and access rules (RFC 7252 §5.9.2.2 4.01, §5.9.2.4 4.03). The
 * transport tells who a peer is (transport.identity: DTLS's PSK identity, certificate or
 * raw public key); this file decides, the same way for C plugins, scripts and the rules of
 * the configuration file.
 */
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "access.h"
#include "server.h"
#include "session.h"
#include "tree.h"

static const char *const no_alt[] = {NULL};
static const moonlet_identity id_none = {MOONLET_AUTH_NONE, "", no_alt};

const moonlet_identity *
access_identity(const struct session *s)
{
    const moonlet_identity *id = NULL;

    if (s && s->ep && s->ep->tp->identity)
        id = s->ep->tp->identity(s);
    return id ? id : &id_none;
}

MOONLET_API int
moonlet_identity_match(const moonlet_identity *id, const char *pattern)
{
    static const char *const kinds[] = {"any", "psk", "rpk", "x509"};
    const char *colon, *glob;
    size_t klen;
    int kind = -1;

    if (id == NULL || pattern == NULL || id->auth < MOONLET_AUTH_PSK ||
        id->auth > MOONLET_AUTH_X509)
        return 0;       /* nobody authenticated: no pattern matches */
    if (strcmp(pattern, "any") == 0)
        return 1;
    if ((colon = strchr(pattern, ':')) == NULL)
        return 0;
    klen = (size_t)(colon - pattern);
    glob = colon + 1;
    for (int k = 0; k < 4; k++)
        if (strlen(kinds[k]) == klen && strncmp(pattern, kinds[k], klen) == 0)
            kind = k;
    if (kind < 0 || (kind > 0 && kind != id->auth))
        return 0;
    if (fnmatch(glob, id->name, 0) == 0)
        return 1;
    for (const char *const *a = id->alt; id->auth == MOONLET_AUTH_X509 && a && *a; a++)
        if (fnmatch(glob, *a, 0) == 0)
            return 1;
    return 0;
}

int
access_pattern_ok(const char *p)
{
    static const char *const kinds[] = {"any:", "psk:", "rpk:", "x509:"};

    if (p == NULL)
        return 0;
    if (strcmp(p, "any") == 0)
        return 1;
    for (int k = 0; k < 4; k++)
        if (strncmp(p, kinds[k], strlen(kinds[k])) == 0 && p[strlen(kinds[k])] != '\0')
            return 1;
    return 0;
}

int
acl_copy(struct acl *a, int secure, const char *const *allow, char *err, size_t errlen)
{
    size_t n = 0;

    a->secure = secure != 0;
    a->allow = NULL;
    if (allow == NULL)
        return 0;
    while (allow[n]) {
        if (!access_pattern_ok(allow[n])) {
            snprintf(err, errlen, "allow: '%.80s' is not an identity pattern (psk:GLOB, "
                     "rpk:GLOB, x509:GLOB, any:GLOB or any)", allow[n]);
            return -1;
        }
        n++;
    }
    if ((a->allow = calloc(n + 1, sizeof *a->allow)) == NULL)
        goto nomem;
    for (size_t i = 0; i < n; i++)
        if ((a->allow[i] = strdup(allow[i])) == NULL)
            goto nomem;
    a->secure = 1;      /* an identity is only known over a secure transport */
    return 0;
nomem:
    acl_free(a);
    snprintf(err, errlen, "out of memory");
    return -1;
}

void
acl_free(struct acl *a)
{
    for (size_t i = 0; a->allow && a->allow[i]; i++)
        free(a->allow[i]);
    free(a->allow);
    a->allow = NULL;
    a->secure = 0;
}

/* One rule against one identity: 0, 4.01 or 4.03. */
static unsigned
check(const struct acl *a, const moonlet_identity *id)
{
    if (!a->secure && a->allow == NULL)
        return 0;
    if (id->auth == MOONLET_AUTH_NONE)
        return MOONLET_UNAUTHORIZED;    /* §5.9.2.2: over coap://, come back over coaps:// */
    if (a->allow == NULL)
        return 0;
    for (char **p = a->allow; *p; p++)
        if (moonlet_identity_match(id, *p))
            return 0;
    /* secure but anonymous (no client certificate): authenticating may help; an identity
     * that does not match is refused (§5.9.2.4) */
    return id->auth == MOONLET_AUTH_ANON ? MOONLET_UNAUTHORIZED : MOONLET_FORBIDDEN;
}

unsigned
access_check(const struct server *srv, const struct resource *r, const struct session *s)
{
    const moonlet_identity *id = NULL;
    unsigned code;

    if (!r->acl.secure && srv->nrules == 0)
        return 0;       /* the common case: nothing to check, no identity looked up */
    id = access_identity(s);
    if ((code = check(&r->acl, id)) != 0)
        return code;
    for (unsigned i = 0; i < srv->nrules; i++)
        if (fnmatch(srv->rules[i].path, r->path, 0) == 0 &&
            (code = check(&srv->rules[i].acl, id)) != 0)
            return code;
    return 0;
}

int
access_any(const struct server *srv)
{
    return srv->nrules > 0 || srv->tree->guarded > 0;
}
