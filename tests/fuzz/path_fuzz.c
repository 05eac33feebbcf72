/*
 * path_fuzz.c -- libFuzzer harness for paths and queries: the Uri-Path/Uri-Query views of a
 * request (core/request.c; RFC 7252 §5.10.1), lookup by segments and by path string, and
 * the validation, percent-decoding and canonical form of registered paths (core/tree.c;
 * RFC 3986 §2.1, §3.3; RFC 6690 §2, MALFORMED.md R18). The input is read twice:
 * (a) as a CoAP message: its request views must be exactly its usable Uri-Path/Uri-Query
 *     options, its lookup in discovery_tree() must agree with a linear scan and with the
 *     lookup by path string, and its queries are checked as discovery filters;
 * (b) split at NUL bytes into path strings registered into a fresh tree (the last piece,
 *     when there are several, is also every resource's attribute text): a path registers
 *     exactly when the rule below says so, is found again by its own segments, its own
 *     string and its canonical path, and the tree renders as exactly its links.
 */
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "discovery.h"
#include "msg.h"

#define KEY_BYTES (REQ_MAX_SEGMENTS * 256 + 1)  /* and a subtree marker */
#define MAX_PIECES 32

static int
hexval(int c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* What tree.c writes raw: RFC 3986 §2.3 unreserved, ':', '@' and the sub-delims but ','
 * and ';' (so that no link-format parser splits an href) */
static int
kept_raw(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("-._~!$&'()*+=:@", c));
}

static int
upper_hex(int c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F');
}

/* The resource whose key is key[0..klen), by walking the registration list. */
static struct resource *
scan(const struct tree *t, const uint8_t *key, size_t klen)
{
    for (struct resource *r = t->first; r; r = r->next)
        if (r->keylen == klen && memcmp(r->key, key, klen) == 0)
            return r;
    return NULL;
}

/* ---- (a) a message ---------------------------------------------------------------------- */

static void
same_view(const struct view *v, unsigned n, unsigned idx, const struct msg_opt *o)
{
    if (idx >= REQ_MAX_SEGMENTS)
        return; /* over the cap: counted, not kept */
    CHECK(idx < n && v[idx].p == o->val && v[idx].len == o->len);
}

/* The views are the usable options (§5.4.5: length within bounds; Content-Format, Accept
 * and No-Response only the first occurrence) in message order, capped. */
static void
check_views(const struct moonlet_req *req, const struct msg *m, unsigned verdict)
{
    unsigned npath = 0, nquery = 0, nct = 0, nacc = 0, nnr = 0;
    int ct = MOONLET_CT_NONE, accept = MOONLET_CT_NONE;
    unsigned no_response = 0;
    struct msg_iter it;
    struct msg_opt o;

    msg_iter_init(&it, m);
    while (msg_iter_next(&it, &o)) {
        if (o.num == MOONLET_OPT_URI_PATH && o.len <= 255)
            same_view(req->seg, req->nseg, npath++, &o);
        else if (o.num == MOONLET_OPT_URI_QUERY && o.len <= 255)
            same_view(req->q, req->nq, nquery++, &o);
        else if (o.num == MOONLET_OPT_CONTENT_FORMAT && nct++ == 0 && o.len <= 2)
            ct = (int)msg_uint(o.val, o.len);
        else if (o.num == MOONLET_OPT_ACCEPT && nacc++ == 0 && o.len <= 2)
            accept = (int)msg_uint(o.val, o.len);
        else if (o.num == MOONLET_OPT_NO_RESPONSE && nnr++ == 0 && o.len <= 1)
            no_response = msg_uint(o.val, o.len);
    }
    CHECK(req->nseg == (npath < REQ_MAX_SEGMENTS ? npath : REQ_MAX_SEGMENTS));
    CHECK(req->nq == (nquery < REQ_MAX_QUERIES ? nquery : REQ_MAX_QUERIES));
    CHECK(verdict == (npath > REQ_MAX_SEGMENTS   ? MSG_CODE(4, 4)
                      : nquery > REQ_MAX_QUERIES ? MSG_CODE(4, 0)
                                                 : 0));
    CHECK(req->ct == ct && req->accept == accept && req->no_response == no_response);
    CHECK(req->method == m->code && req->payload == m->payload &&
          req->payload_len == m->payload_len);
}

/* "/seg/seg" with every byte but letters and digits percent-encoded, in lower-case hex:
 * another spelling of the same path, which tree_find_path must decode to the same key. */
static char *
encoded_path(const struct view *seg, unsigned nseg)
{
    size_t size = 2;
    char *s, *o;

    for (unsigned i = 0; i < nseg; i++)
        size += 1 + seg[i].len * 3;
    s = o = malloc(size);
    CHECK(s != NULL);
    for (unsigned i = 0; i < nseg; i++) {
        *o++ = '/';
        for (size_t j = 0; j < seg[i].len; j++) {
            int c = seg[i].p[j];

            if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
                *o++ = (char)c;
            else
                o += sprintf(o, "%%%02x", c);
        }
    }
    strcpy(o, nseg ? "" : "/");
    return s;
}

/* What a request for these segments should find, by linear scans: the resource of exactly
 * this path, else the subtree (key: its prefix's, then a 0) of the longest prefix. */
static const struct resource *
oracle_find(const struct tree *t, const struct view *seg, unsigned nseg, const struct resource **exact)
{
    uint8_t key[KEY_BYTES + 1];
    size_t k = 0, ends[REQ_MAX_SEGMENTS + 1] = {0};
    const struct resource *r;

    for (unsigned i = 0; i < nseg; i++) {
        key[k++] = (uint8_t)seg[i].len;
        memcpy(key + k, seg[i].p, seg[i].len);
        k += seg[i].len;
        ends[i + 1] = k;
    }
    if ((*exact = r = scan(t, key, k)) != NULL)
        return r;
    for (unsigned i = nseg + 1; i-- > 0;) {
        key[ends[i]] = 0;
        if ((r = scan(t, key, ends[i] + 1)) != NULL)
            return r;
    }
    return NULL;
}

/* tree_find agrees with linear scans (no segment is empty or over 255 bytes in a
 * registered path), and with tree_find_path, which is exact, on the path the segments
 * spell. */
static void
check_lookup(const struct tree *t, const struct view *seg, unsigned nseg)
{
    const struct resource *r = tree_find(t, seg, nseg), *want, *exact;
    char *path;

    for (unsigned i = 0; i < nseg; i++) {
        if (seg[i].len == 0 || seg[i].len > 255) {
            CHECK(r == NULL);
            return;
        }
    }
    want = oracle_find(t, seg, nseg, &exact);
    CHECK(r == want);
    path = encoded_path(seg, nseg);
    CHECK(tree_find_path(t, path) == exact);
    free(path);
}

/* A detached copy has the same views, pointing into its own bytes. */
static void
check_detach(const struct moonlet_req *req)
{
    struct moonlet_req *d = request_detach(req);

    CHECK(d != NULL);
    CHECK(d->nseg == req->nseg && d->nq == req->nq && d->method == req->method);
    CHECK(d->ct == req->ct && d->accept == req->accept && d->payload_len == req->payload_len);
    for (unsigned i = 0; i < req->nseg; i++)
        CHECK(d->seg[i].len == req->seg[i].len &&
              memcmp(d->seg[i].p, req->seg[i].p, req->seg[i].len) == 0);
    for (unsigned i = 0; i < req->nq; i++)
        CHECK(d->q[i].len == req->q[i].len && memcmp(d->q[i].p, req->q[i].p, req->q[i].len) == 0);
    if (req->payload_len)
        CHECK(d->payload != req->payload &&
              memcmp(d->payload, req->payload, req->payload_len) == 0);
    request_detached_free(d);
}

static void
check_message(const uint8_t *data, size_t size)
{
    struct moonlet_req *req;
    struct msg m;
    unsigned verdict;

    if (msg_parse(&m, data, size) != MSG_OK)
        return;
    /* request_parse fills the views; the caller zeroes the rest (request.h) */
    req = calloc(1, sizeof *req);
    CHECK(req != NULL);
    verdict = request_parse(req, &m);
    req->m = &m;
    check_views(req, &m, verdict);
    check_lookup(discovery_tree(), req->seg, req->nseg);
    check_detach(req);
    discovery_check(req->q, req->nq);
    free(req);
}

/* ---- (b) path strings ------------------------------------------------------------------- */

/* One byte of a segment: %HH decoded, or a raw byte that may stand in a URI path and an
 * href (R18: not a control, space, DEL, '?', '#', '<', '>', '"', '\' or ','). */
static int
segment_byte(const char **pp, int *c)
{
    const char *p = *pp;
    int x = (unsigned char)*p;

    if (x == '%') {
        if (hexval(p[1]) < 0 || hexval(p[2]) < 0)
            return 0;
        *c = hexval(p[1]) << 4 | hexval(p[2]);
        *pp = p + 3;
        return 1;
    }
    if (x <= 0x20 || x == 0x7f || strchr("?#<>\"\\,", x))
        return 0;
    *c = x;
    *pp = p + 1;
    return 1;
}

/* The registration rule (README "Writing a plugin", tree.h): "/" alone, or 1..32 times '/'
 * and a segment of 1..255 bytes after percent-decoding. Fills the key, each segment
 * prefixed by its length, when p is valid. */
static int
path_valid(const char *p, uint8_t *key, size_t *klen)
{
    size_t k = 0;
    unsigned nseg = 0;

    if (p[0] != '/')
        return 0;
    if (p[1] == '\0') {
        *klen = 0;
        return 1;
    }
    while (*p == '/') {
        size_t lenpos, n = 0;
        int c;

        if (p[1] == '*' && p[2] == '\0') {     /* a subtree: its prefix's key, then 0 */
            key[k++] = 0;
            break;
        }
        lenpos = k++;
        if (++nseg > REQ_MAX_SEGMENTS)
            return 0;
        for (p++; *p && *p != '/'; n++) {
            if (n == 255 || !segment_byte(&p, &c))
                return 0;
            key[k++] = (uint8_t)c;
        }
        if (n == 0)
            return 0;
        key[lenpos] = (uint8_t)n;
    }
    *klen = k;
    return 1;
}

/* RFC 6690 §2 rt/if: tokens of visible ASCII but '"' and '\', single spaces between. */
static int
tokens_valid(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || s[0] == ' ' || s[n - 1] == ' ' || strstr(s, "  "))
        return 0;
    for (; *s; s++)
        if (*s != ' ' && (*s < 0x21 || *s > 0x7e || *s == '"' || *s == '\\'))
            return 0;
    return 1;
}

/* quoted-string text: anything but controls (quotes and backslashes are escaped) */
static int
text_valid(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 0;
    return 1;
}

/* RFC 5987 parmname, the attribute names of RFC 6690 §2 -- but not the names the
 * definition's own fields write (and href), in any case (RFC 8288 §3) */
static int
name_valid(const char *s)
{
    static const char *const own[] = {"rt", "if", "ct", "sz", "obs", "title", "href"};

    for (size_t i = 0; i < sizeof own / sizeof *own; i++)
        if (strcasecmp(s, own[i]) == 0)
            return 0;
    if (*s == '\0')
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr("!#$&+-.^_`|~", *s)))
            return 0;
    return 1;
}

/* tree.c writes kept_raw bytes raw and every other byte as %XX in upper-case hex, so a
 * key has one spelling; a segment that is just "*" is written %2A (a raw one ends a
 * subtree's path). */
static void
check_canonical(const struct resource *r)
{
    uint8_t key[KEY_BYTES];
    size_t klen;

    CHECK(path_valid(r->path, key, &klen));
    CHECK(klen == r->keylen && memcmp(key, r->key, klen) == 0);
    for (const char *p = r->path; *p; p++) {
        if (*p == '%') {
            CHECK(upper_hex(p[1]) && upper_hex(p[2]));
            CHECK(!kept_raw(hexval(p[1]) << 4 | hexval(p[2])) ||
                  (p[-1] == '/' && p[1] == '2' && p[2] == 'A' && (p[3] == '/' || !p[3])));
            p += 2;
        } else {
            CHECK(*p == '/' || kept_raw((unsigned char)*p));
        }
    }
}

static void
probe(const moonlet_resource_def *def, int valid)
{
    char err[160];
    struct resource *r = tree_resource_new(def, sizeof *def, NULL, NULL, err, sizeof err);

    CHECK((r != NULL) == valid);
    tree_resource_free(r);
}

/* The attribute text as rt, if, title and attribute name: refused exactly by the rules. */
static void
check_attributes(const char *a)
{
    const moonlet_attr named[] = {{a, "v"}, {NULL, NULL}};

    probe(&(moonlet_resource_def){.path = "/p", .rt = a}, tokens_valid(a));
    probe(&(moonlet_resource_def){.path = "/p", .iface = a}, tokens_valid(a));
    probe(&(moonlet_resource_def){.path = "/p", .title = a}, text_valid(a));
    probe(&(moonlet_resource_def){.path = "/p", .extra = named}, name_valid(a));
}

/* Register p (with the attribute text a where the rules allow it): refused exactly when
 * path_valid says so, always when R18 characters are raw in it; a second spelling of a
 * registered key is EEXIST. Returns the resource now in t, or NULL. */
static struct resource *
register_path(struct tree *t, const char *p, const char *a)
{
    moonlet_attr extra[] = {{"x", NULL}, {NULL, NULL}};
    moonlet_resource_def def = {.path = p, .extra = extra};
    uint8_t key[KEY_BYTES];
    size_t klen = 0;
    int valid = path_valid(p, key, &klen);
    char err[160] = "";
    struct resource *r, *dup;

    if (a) {
        def.rt = def.iface = tokens_valid(a) ? a : NULL;
        def.title = extra[0].value = text_valid(a) ? a : NULL;
    }
    r = tree_resource_new(&def, sizeof def, NULL, NULL, err, sizeof err);
    CHECK((r != NULL) == valid);
    if (strpbrk(p, ",<>\r\n"))
        CHECK(r == NULL);
    if (r == NULL) {
        CHECK(err[0] != '\0');
        return NULL;
    }
    CHECK(r->keylen == klen && memcmp(r->key, key, klen) == 0);
    check_canonical(r);
    dup = scan(t, key, klen);
    CHECK(tree_add(t, r) == (dup ? MOONLET_EEXIST : MOONLET_OK));
    if (dup) {
        tree_resource_free(r);
        return NULL;
    }
    return r;
}

/* A valid path is found by its string, its canonical path and its segments. */
static void
check_found(const struct tree *t, const char *p)
{
    uint8_t key[KEY_BYTES];
    struct view seg[REQ_MAX_SEGMENTS];
    unsigned nseg = 0;
    struct resource *want;
    size_t klen;

    if (!path_valid(p, key, &klen)) {
        CHECK(tree_find_path(t, p) == NULL);
        return;
    }
    want = scan(t, key, klen);
    CHECK(want != NULL);
    CHECK(tree_find_path(t, p) == want && tree_find_path(t, want->path) == want);
    for (size_t i = 0; i < klen && key[i] != 0; i += 1 + key[i])   /* not the marker */
        seg[nseg++] = (struct view){key + i + 1, key[i]};
    if (!want->subtree) {
        CHECK(tree_find(t, seg, nseg) == want);
    } else {    /* the prefix: its exact resource if there is one, else this subtree */
        const struct resource *exact, *r = oracle_find(t, seg, nseg, &exact);

        CHECK(tree_find(t, seg, nseg) == r && (exact != NULL || r == want));
    }
}

/* The document of t is strict link-format with exactly its resources and attributes. */
static void
check_document(const struct tree *t)
{
    struct lf_doc *d = malloc(sizeof *d);
    size_t len = 0;
    char *text = linkfmt_build(t, NULL, 0, &len);

    CHECK(d != NULL && text != NULL && strlen(text) == len);
    CHECK(lf_parse(d, text, len) == 0);
    CHECK(d->n == t->count);
    lf_check_tree(t, d);
    lf_free(d);
    free(d);
    free(text);
}

static unsigned
split(const uint8_t *data, size_t size, char **piece)
{
    unsigned n = 0;
    size_t start = 0;

    for (size_t i = 0; i <= size && n < MAX_PIECES; i++) {
        if (i < size && data[i] != '\0')
            continue;
        piece[n] = strndup((const char *)data + start, i - start);
        CHECK(piece[n] != NULL);
        n++;
        start = i + 1;
    }
    return n;
}

static void
check_registrations(const uint8_t *data, size_t size)
{
    char *piece[MAX_PIECES];
    struct resource *res[MAX_PIECES];
    unsigned n = split(data, size, piece);
    const char *a = n > 1 ? piece[n - 1] : NULL;
    struct tree *t = tree_new();

    CHECK(t != NULL);
    if (a)
        check_attributes(a);
    for (unsigned i = 0; i < n; i++)
        res[i] = register_path(t, piece[i], a);
    check_document(t);
    for (unsigned i = 0; i < n; i++)
        check_found(t, piece[i]);
    /* removing every other one leaves the rest findable */
    for (unsigned i = 1; i < n; i += 2) {
        if (res[i] == NULL)
            continue;
        tree_remove(t, res[i]);
        CHECK(tree_find_path(t, res[i]->path) == NULL);
        tree_resource_free(res[i]);
    }
    for (unsigned i = 0; i < n; i += 2)
        if (res[i])
            CHECK(tree_find_path(t, res[i]->path) == res[i]);
    tree_free(t);
    for (unsigned i = 0; i < n; i++)
        free(piece[i]);
}

/* The libFuzzer entry point; declared here for -Wmissing-prototypes. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_message(data, size);
    check_registrations(data, size);
    return 0;
}
