/*
 * access.h -- who may use a resource (RFC 7252 §5.9.2.2, §5.9.2.4): the peer's identity as
 * its secure transport authenticated it, matched against a resource's own rule (its
 * definition: secure, allow) and the configuration file's rules (`access`), before any
 * handler runs and when /.well-known/core is built.
 */
#ifndef ACCESS_H
#define ACCESS_H

#include "include/moonlet.h"

struct server;
struct session;
struct resource;

/* A rule: what a resource asks of its requesters. */
struct acl {
    int secure;                         /* only over a secure transport */
    char **allow;                       /* identity patterns, NULL-ended; NULL: any */
};

/* A rule of the configuration file for the resources whose registered path matches path,
 * an fnmatch(3) pattern without FNM_PATHNAME: a '*' after "/fw/" covers all below /fw. */
struct access_rule {
    char *path;
    struct acl acl;
};

/* The identity of the peer of s (none for coap://, or once the association is gone). */
const moonlet_identity *access_identity(const struct session *s);
/* May the peer of s use r? 0, or MOONLET_UNAUTHORIZED (no security, or not authenticated
 * where an identity is wanted: improve the authentication) or MOONLET_FORBIDDEN. */
unsigned access_check(const struct server *srv, const struct resource *r,
                      const struct session *s);
/* Does any rule (a resource's or the file's) exist? Discovery is cached only without. */
int access_any(const struct server *srv);
/* Copy a definition's rule into a (validated: patterns KIND:GLOB). 0, or -1 with err. */
int acl_copy(struct acl *a, int secure, const char *const *allow, char *err, size_t errlen);
void acl_free(struct acl *a);
/* Is pattern a valid identity pattern? ("any", or psk|rpk|x509|any ':' GLOB) */
int access_pattern_ok(const char *pattern);

#endif
