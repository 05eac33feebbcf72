/*
 * linkfmt.c -- the CoRE link format (RFC 6690 §2) of the resource tree and the built-in
 * /.well-known/core resource (§4). Values are written as quoted-strings with '"' and '\'
 * escaped, so no registered value can break out of its attribute; the document is built
 * once per tree generation and cached.
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

char *
linkfmt_build(const struct tree *t, size_t *len)
{
    struct sbuf b = {0};
    int first = 1;

    sb_put(&b, "", 0);
    for (const struct resource *r = t->first; r; r = r->next) {
        char num[32];

        if (r->hidden)
            continue;
        if (!first)
            sb_str(&b, ",");
        first = 0;
        sb_str(&b, "<");
        sb_str(&b, r->path);
        sb_str(&b, ">");
        if (r->rt)
            sb_attr(&b, "rt", r->rt);
        if (r->iface)
            sb_attr(&b, "if", r->iface);
        if (r->ct && r->ct[0] != MOONLET_CT_END) {
            /* RFC 7252 §7.2.1: one ct is a number, several a quoted space-separated list */
            if (r->ct[1] == MOONLET_CT_END) {
                snprintf(num, sizeof num, ";ct=%d", r->ct[0]);
                sb_str(&b, num);
            } else {
                sb_str(&b, ";ct=\"");
                for (const int *c = r->ct; *c != MOONLET_CT_END; c++) {
                    snprintf(num, sizeof num, c == r->ct ? "%d" : " %d", *c);
                    sb_str(&b, num);
                }
                sb_str(&b, "\"");
            }
        }
        if (r->sz > 0) {
            snprintf(num, sizeof num, ";sz=%ld", r->sz);
            sb_str(&b, num);
        }
        if (r->obs)
            sb_str(&b, ";obs");
        if (r->title)
            sb_attr(&b, "title", r->title);
        for (unsigned i = 0; i < r->nextra; i++)
            sb_attr(&b, r->extra[i].name, r->extra[i].value);
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

static int
wkc_get(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    struct wkc *w = ud;
    struct tree *t = w->srv->tree;

    (void)req;
    if (w->doc == NULL || w->gen != t->generation) {
        free(w->doc);
        w->doc = linkfmt_build(t, &w->len);
        w->gen = t->generation;
        if (w->doc == NULL)
            return MOONLET_ENOMEM;
    }
    moonlet_resp_ct(resp, MOONLET_CT_LINK_FORMAT);
    return moonlet_resp_payload(resp, w->doc, w->len);
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
static const struct runtime wkc_runtime = {"builtin", runtime_c_call, wkc_drop};

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
    r = tree_resource_new(&def, sizeof def, w, &w->unit, err, sizeof err);
    if (r == NULL) {
        free(w);
        return -1;
    }
    if (tree_add(srv->tree, r) != MOONLET_OK) {
        tree_resource_free(r);      /* frees w through wkc_drop */
        return -1;
    }
    return 0;
}
