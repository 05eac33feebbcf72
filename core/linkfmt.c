/*
 * linkfmt.c -- the CoRE link format (RFC 6690 §2) of the resource tree and the built-in
 * /.well-known/core resource (§4). Values are written as quoted-strings with '"' and '\'
 * escaped, so no registered value can break out of its attribute. The unfiltered document
 * is built once per tree generation and cached; query filtering follows §4.1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "server.h"
#include "tree.h"

struct sbuf {
    char *p;
    size_t len, cap;
    int err;
};

static void
sb_put(struct sbuf *b, const char *s, size_t n)
{
    if (b->err)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *p;

        while (cap < b->len + n + 1)
            cap *= 2;
        if ((p = realloc(b->p, cap)) == NULL) {
            b->err = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void
sb_str(struct sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

/* ;name="value" with quoted-pair escaping (RFC 8288 §3, RFC 9110 §5.6.4) */
static void
sb_attr(struct sbuf *b, const char *name, const char *value)
{
    sb_str(b, ";");
    sb_str(b, name);
    if (value == NULL)
        return;
    sb_str(b, "=\"");
    for (const char *s = value; *s; s++) {
        if (*s == '"' || *s == '\\')
            sb_put(b, "\\", 1);
        sb_put(b, s, 1);
    }
    sb_str(b, "\"");
}

/* ---- query filtering (RFC 6690 §4.1) ---------------------------------------------------
 * A query item "name=value" keeps the links whose attribute `name` has `value`; a value
 * ending in '*' is a prefix. Multi-valued attributes (rt, if, ct, extra values with
 * spaces) match when any one of their space-separated tokens does. "href" matches the
 * link target as written or percent-decoded: a Uri-Query arrives decoded (RFC 7252 §6.4
 * step 8), so "?href=/x%20y" in a URI is "/x y" here, while a client that did not decode
 * sends "/x%20y". Policy where the RFC leaves it open: an item without '=' ("?obs", "?rt")
 * keeps the links that carry the attribute at all; several items must all match; an
 * unknown attribute matches nothing, so the answer is an empty 2.05. */

static int
value_match(const char *have, size_t hlen, const struct linkfmt_filter *f)
{
    if (f->prefix)
        return hlen >= f->vlen && memcmp(have, f->value, f->vlen) == 0;
    return hlen == f->vlen && memcmp(have, f->value, f->vlen) == 0;
}

/* Any space-separated token of s matches. */
static int
tokens_match(const char *s, const struct linkfmt_filter *f)
{
    s += strspn(s, " "); /* leading spaces do not make an empty first token */
    while (*s) {
        size_t n = strcspn(s, " ");

        if (value_match(s, n, f))
            return 1;
        s += n;
        s += strspn(s, " ");
    }
    return 0;
}

/* The href of r: its path; a subtree's is its prefix (the path without its final "*"). */
static size_t
href_len(const struct resource *r)
{
    size_t n = strlen(r->path);

    return !r->subtree ? n : n > 2 ? n - 2 : 1;
}

static int
hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* An href as written, or percent-decoded (hrefs are canonical: every '%' has two hex
 * digits, tree.c). */
static int
href_match(const char *href, size_t n, const struct linkfmt_filter *f)
{
    char dec[REQ_MAX_SEGMENTS * 256 + REQ_MAX_SEGMENTS + 2];
    size_t k = 0;

    if (value_match(href, n, f))
        return 1;
    if (memchr(href, '%', n) == NULL)
        return 0;
    for (size_t i = 0; i < n && k < sizeof dec; i++) {
        if (href[i] == '%' && i + 2 < n && hexval(href[i + 1]) >= 0 &&
            hexval(href[i + 2]) >= 0) {
            dec[k++] = (char)(hexval(href[i + 1]) << 4 | hexval(href[i + 2]));
            i += 2;
        } else {
            dec[k++] = href[i];
        }
    }
    return value_match(dec, k, f);
}

static int
attr_match(const struct resource *r, const struct linkfmt_filter *f)
{
    char num[16 * 8];

#define IS(lit) (f->nlen == sizeof lit - 1 && memcmp(f->name, lit, f->nlen) == 0)
    if (IS("href"))
        return !f->has_value || href_match(r->path, href_len(r), f);
    if (IS("rt"))
        return r->rt && (!f->has_value || tokens_match(r->rt, f));
    if (IS("if"))
        return r->iface && (!f->has_value || tokens_match(r->iface, f));
    if (IS("title"))
        return r->title && (!f->has_value || value_match(r->title, strlen(r->title), f));
    if (IS("obs"))
        return r->obs && !f->has_value;
    if (IS("sz")) {
        snprintf(num, sizeof num, "%ld", r->sz);
        return r->sz > 0 && (!f->has_value || value_match(num, strlen(num), f));
    }
    if (IS("ct")) {
        if (r->ct == NULL || r->ct[0] == MOONLET_CT_END)
            return 0;
        if (!f->has_value)
            return 1;
        for (const int *c = r->ct; *c != MOONLET_CT_END; c++) {
            snprintf(num, sizeof num, "%d", *c);
            if (value_match(num, strlen(num), f))
                return 1;
        }
        return 0;
    }
#undef IS
    for (unsigned i = 0; i < r->nextra; i++) {
        const struct attr *a = &r->extra[i];

        if (strlen(a->name) != f->nlen || memcmp(a->name, f->name, f->nlen) != 0)
            continue;
        if (!f->has_value)
            return 1;
        if (a->value && tokens_match(a->value, f))
            return 1;
    }
    return 0;
}

static int
matches(const struct resource *r, const struct linkfmt_filter *f, unsigned nf)
{
    for (unsigned i = 0; i < nf; i++)
        if (!attr_match(r, &f[i]))
            return 0;
    return 1;
}

unsigned
linkfmt_filters(const struct view *q, unsigned nq, struct linkfmt_filter *out)
{
    unsigned n = 0;

    for (unsigned i = 0; i < nq && n < REQ_MAX_QUERIES; i++) {
        const char *p = (const char *)q[i].p, *eq = memchr(p, '=', q[i].len);
        struct linkfmt_filter *f = &out[n++];

        f->name = p;
        f->nlen = eq ? (size_t)(eq - p) : q[i].len;
        f->has_value = eq != NULL;
        f->value = eq ? eq + 1 : "";
        f->vlen = eq ? q[i].len - f->nlen - 1 : 0;
        f->prefix = f->vlen > 0 && f->value[f->vlen - 1] == '*';
        if (f->prefix)
            f->vlen--;
    }
    return n;
}

/* One link: <href> and r's attributes (RFC 6690 §2; RFC 7252 §7.2.1 for ct). */
static void
write_link(struct sbuf *b, const struct resource *r, const char *href, size_t hlen)
{
    char num[32];

    if (b->len > 0)
        sb_str(b, ",");
    sb_str(b, "<");
    sb_put(b, href, hlen);
    sb_str(b, ">");
    if (r->rt)
        sb_attr(b, "rt", r->rt);
    if (r->iface)
        sb_attr(b, "if", r->iface);
    if (r->ct && r->ct[0] != MOONLET_CT_END) {
        /* RFC 7252 §7.2.1: one ct is a number, several a quoted space-separated list */
        if (r->ct[1] == MOONLET_CT_END) {
            snprintf(num, sizeof num, ";ct=%d", r->ct[0]);
            sb_str(b, num);
        } else {
            sb_str(b, ";ct=\"");
            for (const int *c = r->ct; *c != MOONLET_CT_END; c++) {
                snprintf(num, sizeof num, c == r->ct ? "%d" : " %d", *c);
                sb_str(b, num);
            }
            sb_str(b, "\"");
        }
    }
    if (r->sz > 0) {
        snprintf(num, sizeof num, ";sz=%ld", r->sz);
        sb_str(b, num);
    }
    if (r->obs)
        sb_str(b, ";obs");
    if (r->title)
        sb_attr(b, "title", r->title);
    for (unsigned i = 0; i < r->nextra; i++)
        sb_attr(b, r->extra[i].name, r->extra[i].value);
}

/* The children of one subtree, as its runtime lists them (moonlet_child_emit). */
struct kids {
    struct sbuf *b;
    const struct resource *parent;
    const struct linkfmt_filter *f;
    unsigned nf, n;
};

#define LINKFMT_MAX_CHILDREN 4096   /* per subtree: a document, not a database dump */

static int
kid_emit(void *ctx, const moonlet_resource_def *child)
{
    struct kids *k = ctx;
    moonlet_resource_def d = *child;
    char path[REQ_MAX_SEGMENTS * 256 * 3 + 4], err[160];
    size_t plen = href_len(k->parent);
    struct resource *r;

    if (k->n++ >= LINKFMT_MAX_CHILDREN || child->path == NULL)
        return k->n > LINKFMT_MAX_CHILDREN;
    /* the parent's href ("/" for the root subtree), '/', the child's relative path */
    if (snprintf(path, sizeof path, "%.*s/%s", plen == 1 ? 0 : (int)plen, k->parent->path,
                 child->path) >= (int)sizeof path)
        return 0;
    d.path = path;
    d.children = NULL;
    if ((r = tree_resource_new(&d, sizeof d, NULL, NULL, err, sizeof err)) == NULL) {
        log_warn("%s: a child not listed: %s", k->parent->path, err);
        return 0;
    }
    if (!r->subtree && matches(r, k->f, k->nf))
        write_link(k->b, r, r->path, strlen(r->path));
    tree_resource_free(r);
    return 0;
}

char *
linkfmt_build(const struct tree *t, const struct linkfmt_filter *f, unsigned nf, size_t *len)
{
    return linkfmt_build_for(t, f, nf, NULL, NULL, len);
}

char *
linkfmt_build_for(const struct tree *t, const struct linkfmt_filter *f, unsigned nf,
                  const struct server *srv, const struct session *who, size_t *len)
{
    struct sbuf b = {0};

    sb_put(&b, "", 0);
    for (const struct resource *r = t->first; r; r = r->next) {
        if (r->hidden)
            continue;
        /* only what the requester may use (issue 14; RFC 6690 §4 leaves the choice of
         * links to the server); a subtree's children go with it */
        if (srv && access_check(srv, r, who) != 0)
            continue;
        if (matches(r, f, nf))
            write_link(&b, r, r->path, href_len(r));
        if (r->has_kids && r->unit && r->unit->rt->children) {
            struct kids k = {&b, r, f, nf, 0};

            r->unit->rt->children((struct resource *)r, kid_emit, &k);
        }
    }
    if (b.err) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

struct wkc {
    struct unit unit;
    struct server *srv;
    char *doc;
    size_t len;
    unsigned long gen;
};

/* The document, with an ETag of its bytes (RFC 7252 §5.10.6): it changes whenever the
 * set of resources does, run-time ones coming and going included. */
static int
answer(moonlet_resp *resp, const char *doc, size_t len)
{
    uint64_t h = 14695981039346656037u;     /* FNV-1a */
    uint8_t etag[8];

    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)doc[i]) * 1099511628211u;
    for (unsigned i = 0; i < 8; i++)
        etag[i] = (uint8_t)(h >> (8 * i));
    moonlet_resp_ct(resp, MOONLET_CT_LINK_FORMAT);
    moonlet_resp_option(resp, MOONLET_OPT_ETAG, etag, sizeof etag);
    return moonlet_resp_payload(resp, doc, len);
}

static int
wkc_get(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    struct wkc *w = ud;
    struct tree *t = w->srv->tree;

    if (req->nq || access_any(w->srv)) {
        /* filtered, or with access rules: built for this request and requester */
        struct linkfmt_filter f[REQ_MAX_QUERIES];
        unsigned nf = linkfmt_filters(req->q, req->nq, f);
        size_t len;
        char *doc = linkfmt_build_for(t, f, nf, w->srv, req->sess, &len);
        int rc;

        if (doc == NULL)
            return MOONLET_ENOMEM;
        rc = answer(resp, doc, len);
        free(doc);
        return rc;
    }
    if (t->kids) {     /* subtrees list children that change unseen: built every time */
        size_t len;
        char *doc = linkfmt_build(t, NULL, 0, &len);
        int rc;

        if (doc == NULL)
            return MOONLET_ENOMEM;
        rc = answer(resp, doc, len);
        free(doc);
        return rc;
    }
    if (w->doc == NULL || w->gen != t->generation) {
        free(w->doc);
        w->doc = linkfmt_build(t, NULL, 0, &w->len);
        w->gen = t->generation;
        if (w->doc == NULL)
            return MOONLET_ENOMEM;
    }
    return answer(resp, w->doc, w->len);
}

static void
wkc_drop(struct resource *r, union handler h)
{
    struct wkc *w = r->ud;

    (void)h;
    free(w->doc);
    free(w);
    r->ud = NULL;
}

/* the C runtime for the call; the drop frees the cache with the resource */
static const struct runtime wkc_runtime = {"builtin", runtime_c_call, wkc_drop, NULL};

int
linkfmt_register(struct server *srv)
{
    static const int ct[] = {MOONLET_CT_LINK_FORMAT, MOONLET_CT_END};
    const moonlet_resource_def def = {.path = "/.well-known/core", .ct = ct, .hidden = 1,
                                      .get = wkc_get};
    struct wkc *w = calloc(1, sizeof *w);
    struct resource *r;
    char err[128];

    if (w == NULL)
        return -1;
    w->srv = srv;
    w->unit.rt = &wkc_runtime;
    w->unit.name = "builtin";
    w->unit.srv = srv;
    r = tree_resource_new(&def, sizeof def, w, &w->unit, err, sizeof err);
    if (r == NULL) {
        free(w);
        return -1;
    }
    if (tree_add(srv->tree, r) != MOONLET_OK) {
        tree_resource_free(r);      /* frees w through wkc_drop */
        return -1;
    }
    srv->wkc = r;
    return 0;
}
