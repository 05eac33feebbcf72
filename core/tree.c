/*
 * tree.c -- path -> resource. A path's key is its segment sequence, each segment prefixed
 * by its length, so lookup is one hash over the request's Uri-Path bytes and one compare:
 * O(path length), and a segment "a/b" never matches "a","b" (RFC 7252 §5.10.1, §6.5).
 * Registration validates and copies everything (paths, link attributes).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "tree.h"

#define KEY_MAX (REQ_MAX_SEGMENTS * 256)

static uint32_t
key_hash(const uint8_t *k, size_t n)
{
    uint32_t h = 2166136261u;

    for (size_t i = 0; i < n; i++)
        h = (h ^ k[i]) * 16777619u;
    return h;
}

struct tree *
tree_new(void)
{
    struct tree *t = calloc(1, sizeof *t);

    if (t == NULL)
        return NULL;
    t->nbuckets = 256;
    if ((t->buckets = calloc(t->nbuckets, sizeof *t->buckets)) == NULL) {
        free(t);
        return NULL;
    }
    return t;
}

void
tree_free(struct tree *t)
{
    if (t == NULL)
        return;
    while (t->first) {
        struct resource *r = t->first;

        tree_remove(t, r);
        tree_resource_free(r);
    }
    free(t->buckets);
    free(t);
}

static int
hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* "/a/b%2Fc" -> key [1]a[3]b/c. Percent-decoding per segment (RFC 3986 §2.1). A last
 * segment "*" makes a subtree: the prefix's key and a 0 (no real segment is empty), and
 * *nsegp counts the prefix only. A literal "*" segment is written "%2A". */
static int
path_key(const char *path, uint8_t *key, size_t *keylen, unsigned *nsegp, int *subtree,
         char *err, size_t errlen)
{
    size_t k = 0;
    unsigned nseg = 0;
    const char *p = path;

    if (path == NULL || *p != '/') {
        snprintf(err, errlen, "path must start with '/'");
        return -1;
    }
    *nsegp = 0;
    *subtree = 0;
    if (p[1] == '\0') {     /* "/": the root, no segments */
        *keylen = 0;
        return 0;
    }
    while (*p == '/') {
        if (p[1] == '*' && p[2] == '\0') {
            key[k++] = 0;   /* the subtree marker */
            *subtree = 1;
            break;
        }
        size_t lenpos = k++, n = 0;

        p++;
        if (++nseg > REQ_MAX_SEGMENTS) {
            snprintf(err, errlen, "more than %d segments", REQ_MAX_SEGMENTS);
            return -1;
        }
        for (; *p && *p != '/'; p++, n++) {
            int c = (unsigned char)*p;

            if (c == '%') {
                int hi = hexval(p[1]), lo = hi < 0 ? -1 : hexval(p[2]);

                if (lo < 0) {
                    snprintf(err, errlen, "bad percent-encoding");
                    return -1;
                }
                c = hi << 4 | lo;
                p += 2;
            } else if (c <= 0x20 || c == 0x7f || c == '?' || c == '#' || c == '<' ||
                       c == '>' || c == '"' || c == '\\' || c == ',') {
                /* RFC 6690 §2: ',' separates links; a raw one in an href is refused
                 * (percent-encoded, "%2C", it is a plain segment byte) */
                snprintf(err, errlen, "character 0x%02x not allowed (percent-encode it)", c);
                return -1;
            }
            if (n == 255 || k >= KEY_MAX) {
                snprintf(err, errlen, "segment longer than 255 bytes");
                return -1;
            }
            key[k++] = (uint8_t)c;
        }
        if (n == 0) {
            snprintf(err, errlen, "empty path segment");
            return -1;
        }
        key[lenpos] = (uint8_t)n;
    }
    *keylen = k;
    *nsegp = nseg;
    return 0;
}

/* The canonical URI path of a key: pchar kept, everything else percent-encoded
 * (RFC 3986 §3.3; ',' and ';' too, so link-format parsers never split an href). */
static char *
key_path(const uint8_t *key, size_t keylen)
{
    static const char keep[] = "-._~!$&'()*+=:@";
    char *s = malloc(keylen * 3 + 2), *o = s;

    if (s == NULL)
        return NULL;
    if (keylen == 0)
        *o++ = '/';
    for (size_t i = 0; i < keylen;) {
        size_t n = key[i++];

        *o++ = '/';
        if (n == 0)             /* the subtree marker */
            *o++ = '*';
        for (size_t j = 0; j < n; j++, i++) {
            int c = key[i];

            if (n == 1 && c == '*')                 /* a segment "*" is the marker's */
                o += sprintf(o, "%%2A");
            else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                     (c >= '0' && c <= '9') || (c && strchr(keep, c)))
                *o++ = (char)c;
            else
                o += sprintf(o, "%%%02X", c);
        }
    }
    *o = '\0';
    return s;
}

/* RFC 6690 §2: rt/if are space-separated tokens written inside a quoted-string; we accept
 * visible ASCII without quote or backslash, single spaces between tokens. */
static int
tokens_ok(const char *s)
{
    if (*s == '\0' || *s == ' ')
        return 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;

        if (c == ' ' && (s[1] == ' ' || s[1] == '\0'))
            return 0;
        if (c != ' ' && (c < 0x21 || c > 0x7e || c == '"' || c == '\\'))
            return 0;
    }
    return 1;
}

/* A quoted-string value (title, extra attributes): no control characters; quotes and
 * backslashes are escaped on output. */
static int
text_ok(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 0;
    return 1;
}

/* RFC 8288 §3 token for attribute names. */
static int
name_ok(const char *s)
{
    if (*s == '\0')
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              (*s >= '0' && *s <= '9') || strchr("!#$&+-.^_`|~", *s)))
            return 0;
    return 1;
}

/* What the definition's own fields write (and href, which filters match): an extra
 * attribute of that name would make a link with two, which filters read either way
 * (RFC 8288 §3: names compare case-insensitively). */
static int
builtin_name(const char *s)
{
    static const char *const names[] = {"rt", "if", "ct", "sz", "obs", "title", "href"};

    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (strcasecmp(s, names[i]) == 0)
            return 1;
    return 0;
}

static char *
dup_or_null(const char *s, int *fail)
{
    char *d;

    if (s == NULL)
        return NULL;
    if ((d = strdup(s)) == NULL)
        *fail = 1;
    return d;
}

void
tree_resource_free(struct resource *r)
{
    if (r == NULL)
        return;
    if (r->unit && r->unit->rt->drop)
        for (unsigned i = 0; i < TREE_METHODS; i++)
            if (r->has[i])
                r->unit->rt->drop(r, r->h[i]);
    if (r->has_kids && r->unit && r->unit->rt->drop)
        r->unit->rt->drop(r, r->kids);
    free(r->key);
    free(r->path);
    free(r->rt);
    free(r->iface);
    free(r->title);
    free(r->ct);
    for (unsigned i = 0; i < r->nextra; i++) {
        free(r->extra[i].name);
        free(r->extra[i].value);
    }
    free(r->extra);
    acl_free(&r->acl);
    free(r);
}

void
tree_resource_release(struct resource *r)
{
    if (--r->refs == 0 && r->removed)
        tree_resource_free(r);
}

struct resource *
tree_resource_new(const moonlet_resource_def *def, size_t def_size, void *ud, struct unit *u,
                  char *err, size_t errlen)
{
    moonlet_resource_def d = {0};
    uint8_t key[KEY_MAX + 1];
    size_t keylen;
    struct resource *r;
    unsigned nseg;
    int fail = 0, subtree;

    /* read only the fields the caller's struct has (ABI growth, moonlet.h) */
    memcpy(&d, def, def_size < sizeof d ? def_size : sizeof d);
    if (path_key(d.path, key, &keylen, &nseg, &subtree, err, errlen) < 0)
        return NULL;
    if ((d.rt && !tokens_ok(d.rt)) || (d.iface && !tokens_ok(d.iface))) {
        snprintf(err, errlen, "%s: rt/if must be space-separated tokens without quotes",
                 d.path);
        return NULL;
    }
    if (d.title && !text_ok(d.title)) {
        snprintf(err, errlen, "%s: title has control characters", d.path);
        return NULL;
    }
    if ((r = calloc(1, sizeof *r)) == NULL)
        goto nomem;
    static uint64_t serials;

    r->serial = ++serials;
    r->keylen = keylen;
    r->nseg = nseg;
    r->subtree = subtree != 0;     /* not the last key byte: a segment may end in NUL */
    r->hash = key_hash(key, keylen);
    if ((r->key = malloc(keylen + 1)) == NULL || (r->path = key_path(key, keylen)) == NULL)
        goto nomem;
    memcpy(r->key, key, keylen);
    r->rt = dup_or_null(d.rt, &fail);
    r->iface = dup_or_null(d.iface, &fail);
    r->title = dup_or_null(d.title, &fail);
    if (fail)
        goto nomem;
    if (d.ct) {
        size_t n = 0;

        while (d.ct[n] != MOONLET_CT_END)
            if (d.ct[n] < 0 || d.ct[n++] > 65535) {
                snprintf(err, errlen, "%s: content format out of range", d.path);
                goto fail;
            }
        if ((r->ct = malloc((n + 1) * sizeof *r->ct)) == NULL)
            goto nomem;
        memcpy(r->ct, d.ct, (n + 1) * sizeof *r->ct);
    }
    if (d.extra) {
        size_t n = 0;

        while (d.extra[n].name)
            n++;
        if ((r->extra = calloc(n ? n : 1, sizeof *r->extra)) == NULL)
            goto nomem;
        for (size_t i = 0; i < n; i++) {
            if (!name_ok(d.extra[i].name) || (d.extra[i].value && !text_ok(d.extra[i].value))) {
                snprintf(err, errlen, "%s: bad link attribute '%s'", d.path, d.extra[i].name);
                goto fail;
            }
            if (builtin_name(d.extra[i].name)) {
                snprintf(err, errlen, "%s: link attribute '%s' has its own field", d.path,
                         d.extra[i].name);
                goto fail;
            }
            r->extra[i].name = dup_or_null(d.extra[i].name, &fail);
            r->extra[i].value = dup_or_null(d.extra[i].value, &fail);
            r->nextra++;
        }
        if (fail)
            goto nomem;
    }
    if (d.sz < 0) {
        snprintf(err, errlen, "%s: negative sz", d.path);
        goto fail;
    }
    r->sz = d.sz;
    r->obs = d.obs;
    r->hidden = d.hidden;
    r->autonotify = d.autonotify;  /* zero bits in definitions older than ABI 1.2 */
    r->notify_con = d.notify_con;
    r->ud = ud;
    r->body = d.body;
    if (d.children && !r->subtree) {
        snprintf(err, errlen, "%s: children are for a subtree (a path ending in \"*\")",
                 d.path);
        goto fail;
    }
    r->kids.children = d.children;
    r->has_kids = d.children != NULL;
    if (acl_copy(&r->acl, d.secure, d.allow, err, errlen) < 0) {
        char why[160];

        snprintf(why, sizeof why, "%s", err);
        snprintf(err, errlen, "%s: %s", d.path, why);
        goto fail;
    }
    {
        moonlet_handler hs[TREE_METHODS] = {d.any, d.get, d.post, d.put, d.del, d.fetch,
                                            d.patch, d.ipatch};

        for (unsigned i = 0; i < TREE_METHODS; i++)
            if (hs[i]) {
                r->h[i].fn = hs[i];
                r->has[i] = 1;
            }
    }
    r->unit = u;
    return r;
nomem:
    snprintf(err, errlen, "%s: out of memory", d.path ? d.path : "?");
fail:
    if (r)
        r->unit = NULL;     /* no runtime references taken yet */
    tree_resource_free(r);
    return NULL;
}

static struct resource **
slot(const struct tree *t, uint32_t h, const uint8_t *key, size_t keylen)
{
    struct resource **pp = &t->buckets[h & (t->nbuckets - 1)];

    for (; *pp; pp = &(*pp)->hnext)
        if ((*pp)->hash == h && (*pp)->keylen == keylen && memcmp((*pp)->key, key, keylen) == 0)
            break;
    return pp;
}

/* Twice the buckets once there are more resources than buckets: run-time resources (a
 * directory of devices) may number tens of thousands. On no memory, the chains grow. */
static void
grow(struct tree *t)
{
    size_t n = t->nbuckets * 2;
    struct resource **b = calloc(n, sizeof *b);

    if (b == NULL)
        return;
    for (size_t i = 0; i < t->nbuckets; i++)
        for (struct resource *r = t->buckets[i], *next; r; r = next) {
            next = r->hnext;
            r->hnext = b[r->hash & (n - 1)];
            b[r->hash & (n - 1)] = r;
        }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
}

int
tree_add(struct tree *t, struct resource *r)
{
    struct resource **pp;

    if (t->count >= t->nbuckets)
        grow(t);
    pp = slot(t, r->hash, r->key, r->keylen);
    if (*pp)
        return MOONLET_EEXIST;
    r->hnext = NULL;
    if (r->id == 0)             /* a reloaded path keeps its id (block snapshots) */
        r->id = ++t->next_id;
    *pp = r;
    r->prev = t->last;
    r->next = NULL;
    if (t->last)
        t->last->next = r;
    else
        t->first = r;
    t->last = r;
    t->count++;
    t->subtrees += r->subtree;
    t->kids += r->has_kids;
    t->guarded += r->acl.secure;
    t->generation++;
    return MOONLET_OK;
}

void
tree_remove(struct tree *t, struct resource *r)
{
    struct resource **pp = slot(t, r->hash, r->key, r->keylen);

    if (*pp != r)
        return;
    *pp = r->hnext;
    if (r->prev)
        r->prev->next = r->next;
    else
        t->first = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        t->last = r->prev;
    t->count--;
    t->subtrees -= r->subtree;
    t->kids -= r->has_kids;
    t->guarded -= r->acl.secure;
    t->generation++;
}

struct resource *
tree_find(const struct tree *t, const struct view *seg, unsigned nseg)
{
    uint8_t key[KEY_MAX + 1];
    size_t k = 0, ends[REQ_MAX_SEGMENTS + 1];
    struct resource *r;

    ends[0] = 0;
    for (unsigned i = 0; i < nseg; i++) {
        if (seg[i].len == 0 || seg[i].len > 255)
            return NULL;    /* registered paths have no empty segments */
        key[k++] = (uint8_t)seg[i].len;
        memcpy(key + k, seg[i].p, seg[i].len);
        k += seg[i].len;
        ends[i + 1] = k;
    }
    if ((r = *slot(t, key_hash(key, k), key, k)) != NULL || t->subtrees == 0)
        return r;
    for (unsigned i = nseg + 1; i-- > 0;) {     /* the longest prefix first */
        key[ends[i]] = 0;
        if ((r = *slot(t, key_hash(key, ends[i] + 1), key, ends[i] + 1)) != NULL)
            return r;
    }
    return NULL;
}

struct resource *
tree_find_path(const struct tree *t, const char *path)
{
    uint8_t key[KEY_MAX + 1];
    size_t keylen;
    unsigned nseg;
    int subtree;
    char err[80];

    if (path_key(path, key, &keylen, &nseg, &subtree, err, sizeof err) < 0)
        return NULL;
    return *slot(t, key_hash(key, keylen), key, keylen);
}
