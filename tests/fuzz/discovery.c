/*
 * discovery.c -- see discovery.h. The filter oracle parses the unfiltered document back and
 * applies the README's policy to what it reads (RFC 6690 §4.1): "name" keeps the links that
 * have the attribute, "name=value" those where one space-separated token equals value (href
 * and title: the whole value), a trailing '*' makes value a prefix, all items must match.
 */
#include <string.h>

#include "discovery.h"

static int
is_alnum(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static int
is_hex(int c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* RFC 3986 §3.3 path characters without ',' and ';': the RFC allows them raw, but tree.c
 * percent-encodes them so that no naive link-format parser splits an href. */
static int
href_char(int c)
{
    return is_alnum(c) || (c && strchr("-._~!$&'()*+=:@/", c));
}

/* RFC 8288 §3 (RFC 5987 parmname) */
static int
parmname_char(int c)
{
    return is_alnum(c) || (c && strchr("!#$&+-.^_`|~", c));
}

/* RFC 6690 §2 ptokenchar */
static int
ptoken_char(int c)
{
    return is_alnum(c) || (c && strchr("!#$%&'()*+-./:<=>?@[]^_`{|}~", c));
}

/* RFC 9110 §5.6.4 qdtext, and the character after a backslash (quoted-pair) */
static int
qd_char(int c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

/* "<" path-absolute ">" */
static int
parse_href(struct lf_link *l, const char **pp, const char *end)
{
    const char *p = *pp;

    if (p == end || *p++ != '<' || p == end || *p != '/')
        return -1;
    l->href = p;
    while (p < end && *p != '>') {
        if (*p == '%' && end - p >= 3 && is_hex(p[1]) && is_hex(p[2]))
            p += 3;
        else if (href_char((unsigned char)*p))
            p++;
        else
            return -1;
    }
    if (p == end)
        return -1;
    l->hlen = (size_t)(p - l->href);
    *pp = p + 1;
    return 0;
}

/* DQUOTE *( qdtext / quoted-pair ) DQUOTE, unescaped into the arena */
static int
parse_quoted(struct lf_doc *d, struct lf_param *pa, const char **pp, const char *end)
{
    const char *p = *pp + 1;
    char *o = d->arena + d->used;

    pa->value = o;
    for (;;) {
        int c;

        if (p == end)
            return -1;
        c = (unsigned char)*p++;
        if (c == '"')
            break;
        if (c == '\\') {
            if (p == end)
                return -1;
            c = (unsigned char)*p++;
        }
        if (!qd_char(c))
            return -1;
        *o++ = (char)c;
    }
    pa->vlen = (size_t)(o - pa->value);
    d->used += pa->vlen;
    *pp = p;
    return 0;
}

/* ";" parmname [ "=" ( ptoken / quoted-string ) ] */
static int
parse_param(struct lf_doc *d, struct lf_link *l, const char **pp, const char *end)
{
    const char *p = *pp + 1;
    struct lf_param *pa;

    CHECK(l->nparam < LF_MAX_PARAMS);
    pa = &l->param[l->nparam++];
    pa->name = p;
    while (p < end && parmname_char((unsigned char)*p))
        p++;
    pa->nlen = (size_t)(p - pa->name);
    pa->value = NULL;
    pa->vlen = 0;
    *pp = p;
    if (pa->nlen == 0)
        return -1;
    if (p == end || *p != '=')
        return 0;
    if (++p < end && *p == '"') {
        *pp = p;
        return parse_quoted(d, pa, pp, end);
    }
    pa->value = d->arena + d->used;
    while (p < end && ptoken_char((unsigned char)*p))
        d->arena[d->used++] = *p++;
    pa->vlen = (size_t)(d->arena + d->used - pa->value);
    *pp = p;
    return pa->vlen ? 0 : -1;
}

static int
parse_link(struct lf_doc *d, const char **pp, const char *end)
{
    struct lf_link *l;
    const char *p = *pp;

    CHECK(d->n < LF_MAX_LINKS);
    l = &d->link[d->n++];
    l->text = p;
    l->nparam = 0;
    if (parse_href(l, &p, end) < 0)
        return -1;
    while (p < end && *p == ';')
        if (parse_param(d, l, &p, end) < 0)
            return -1;
    l->len = (size_t)(p - l->text);
    *pp = p;
    return 0;
}

int
lf_parse(struct lf_doc *d, const char *s, size_t len)
{
    const char *p = s, *end = s + len;

    d->n = 0;
    d->used = 0;
    d->arena = malloc(len + 1); /* unescaped values are never longer than the text */
    CHECK(d->arena != NULL);
    if (len == 0)
        return 0;
    for (;;) {
        if (parse_link(d, &p, end) < 0)
            return -1;
        if (p == end)
            return 0;
        if (*p++ != ',')
            return -1;
    }
}

void
lf_free(struct lf_doc *d)
{
    free(d->arena);
    d->arena = NULL;
}

static void
expect_param(const struct lf_link *l, unsigned *j, const char *name, const char *value)
{
    const struct lf_param *pa;

    CHECK(*j < l->nparam);
    pa = &l->param[(*j)++];
    CHECK(pa->nlen == strlen(name) && memcmp(pa->name, name, pa->nlen) == 0);
    if (value == NULL) {
        CHECK(pa->value == NULL);
        return;
    }
    CHECK(pa->value != NULL && pa->vlen == strlen(value));
    CHECK(memcmp(pa->value, value, pa->vlen) == 0);
}

/* "0 50": the content formats as one space-separated value */
static void
expect_ct(const struct lf_link *l, unsigned *j, const int *ct)
{
    size_t n = 0, used = 0;
    char *s;

    while (ct[n] != MOONLET_CT_END)
        n++;
    s = malloc(n * 12 + 1);
    CHECK(s != NULL);
    for (size_t i = 0; i < n; i++)
        used += (size_t)sprintf(s + used, i ? " %d" : "%d", ct[i]);
    expect_param(l, j, "ct", s);
    free(s);
}

static void
check_link(const struct resource *r, const struct lf_link *l)
{
    unsigned j = 0;
    char num[32];
    /* a subtree is listed as its prefix (the path without its final segment "*") */
    size_t hlen = !r->subtree ? strlen(r->path) : strlen(r->path) > 2 ? strlen(r->path) - 2 : 1;

    CHECK(l->hlen == hlen && memcmp(l->href, r->path, l->hlen) == 0);
    if (r->rt)
        expect_param(l, &j, "rt", r->rt);
    if (r->iface)
        expect_param(l, &j, "if", r->iface);
    if (r->ct && r->ct[0] != MOONLET_CT_END)
        expect_ct(l, &j, r->ct);
    if (r->sz > 0) {
        snprintf(num, sizeof num, "%ld", r->sz);
        expect_param(l, &j, "sz", num);
    }
    if (r->obs)
        expect_param(l, &j, "obs", NULL);
    if (r->title)
        expect_param(l, &j, "title", r->title);
    for (unsigned i = 0; i < r->nextra; i++)
        expect_param(l, &j, r->extra[i].name, r->extra[i].value);
    CHECK(j == l->nparam);
}

void
lf_check_tree(const struct tree *t, const struct lf_doc *d)
{
    unsigned i = 0;

    for (const struct resource *r = t->first; r; r = r->next) {
        if (r->hidden)
            continue;
        CHECK(i < d->n);
        check_link(r, &d->link[i++]);
    }
    CHECK(i == d->n);
}

/* ---- the tree ------------------------------------------------------------------------- */

static const int ct_text_json[] = {MOONLET_CT_TEXT, MOONLET_CT_JSON, MOONLET_CT_END};
static const int ct_text[] = {MOONLET_CT_TEXT, MOONLET_CT_END};
static const int ct_cbor[] = {MOONLET_CT_CBOR, MOONLET_CT_END};
static const int ct_link[] = {MOONLET_CT_LINK_FORMAT, MOONLET_CT_END};
static const int ct_none[] = {MOONLET_CT_END};
static const int ct_many[] = {0, 40, 41, 42, 47, 50, 60, 110, 112, 65535, MOONLET_CT_END};
static const moonlet_attr ext_led[] = {{"foo", "bar baz"}, {"flag", NULL}, {NULL, NULL}};
/* a repeated name, a value with runs of spaces, an empty value, quotes and backslashes */
static const moonlet_attr ext_odd[] = {
    {"foo", "bar"}, {"x-flag", NULL},         {"foo", "second value"}, {"note", "  spaced  out "},
    {"empty", ""},  {"q", "say \"hi\" \\o/"}, {"utf8", "caf\xc3\xa9"}, {"Foo", "case"},
    {NULL, NULL}};
static const moonlet_attr ext_secret[] = {{"foo", "bar"}, {NULL, NULL}};

/* tests/lua/discovery_res.lua, README's examples, and the corners of quoting and paths */
static const moonlet_resource_def defs[] = {
    {.path = "/"},
    {.path = "/.well-known/core", .ct = ct_link, .hidden = 1},
    {.path = "/sensors/temp",
     .rt = "temperature c",
     .iface = "sensor",
     .ct = ct_text_json,
     .sz = 12,
     .obs = 1,
     .title = "Temp, \"inside\""},
    {.path = "/sensors/temp_outdoor", .rt = "temperature", .ct = ct_text, .sz = 42},
    {.path = "/sensors/hum", .rt = "humidity", .iface = "sensor core.s"},
    {.path = "/actuators/led",
     .rt = "light",
     .iface = "actuator",
     .ct = ct_cbor,
     .title = "Room \"1\", north\\",
     .extra = ext_led},
    {.path = "/ext", .extra = ext_odd},
    {.path = "/secret",
     .rt = "temperature",
     .ct = ct_text,
     .obs = 1,
     .hidden = 1,
     .title = "secret",
     .extra = ext_secret},
    {.path = "/secret/inner", .ct = ct_many, .sz = 7, .hidden = 1},
    {.path = "/a/b", .rt = "a-b"},
    {.path = "/a%2Fb", .title = "slash; inside, <b>"},
    {.path = "/x%20y", .rt = "x y", .iface = "x"},
    {.path = "/c%2Cd%3Be", .title = ""},
    {.path = "/q%3Fx%23y", .rt = "*", .title = "*"},
    {.path = "/caf%C3%A9", .title = "caf\xc3\xa9", .sz = 2147483647},
    {.path = "/nul%00byte", .rt = "nul"},
    {.path = "/ct/many", .ct = ct_many, .obs = 1},
    {.path = "/ct/none", .ct = ct_none, .rt = "temp"},
    {.path = "/many/r01", .rt = "filler", .title = "Filler resource number 01 of forty"},
    {.path = "/many/r02", .rt = "filler", .title = "Filler resource number 02 of forty"},
    {.path = "/many/r10", .rt = "filler", .title = "Filler resource number 10 of forty"},
    {.path = "/many/r10/deeper", .rt = "filler deeper"},
    {.path = "/-._~!$&'()*+=:@"},
};

static struct tree *tree;
static struct lf_doc *full; /* discovery_tree()'s unfiltered document, parsed */
static char *full_text;

static void
tree_build(void)
{
    char err[160];
    size_t len;

    tree = tree_new();
    CHECK(tree != NULL);
    for (size_t i = 0; i < sizeof defs / sizeof *defs; i++) {
        struct resource *r =
            tree_resource_new(&defs[i], sizeof defs[i], NULL, NULL, err, sizeof err);

        if (r == NULL)
            fprintf(stderr, "%s: %s\n", defs[i].path, err);
        CHECK(r != NULL && tree_add(tree, r) == MOONLET_OK);
    }
    full = malloc(sizeof *full);
    full_text = linkfmt_build(tree, NULL, 0, &len);
    CHECK(full != NULL && full_text != NULL && strlen(full_text) == len);
    CHECK(lf_parse(full, full_text, len) == 0);
    lf_check_tree(tree, full);
}

const struct tree *
discovery_tree(void)
{
    if (tree == NULL)
        tree_build();
    return tree;
}

/* ---- filters -------------------------------------------------------------------------- */

/* One query item as the README reads it: name[=value[*]]. */
struct item {
    const char *name, *value;
    size_t nlen, vlen;
    int has_value, prefix;
};

static void
item_parse(const struct view *q, struct item *it)
{
    const char *p = (const char *)q->p;
    size_t i = 0;

    while (i < q->len && p[i] != '=')
        i++;
    it->name = p;
    it->nlen = i;
    it->has_value = i < q->len;
    it->value = it->has_value ? p + i + 1 : NULL;
    it->vlen = it->has_value ? q->len - i - 1 : 0;
    it->prefix = it->vlen > 0 && it->value[it->vlen - 1] == '*';
    it->vlen -= (size_t)it->prefix;
}

/* linkfmt_filters reads the item the same way, and points into its bytes */
static void
check_filter(const struct linkfmt_filter *f, const struct item *it)
{
    CHECK(f->name == it->name && f->nlen == it->nlen);
    CHECK(!f->has_value == !it->has_value && !f->prefix == !it->prefix);
    CHECK(f->vlen == it->vlen && (!it->has_value || f->value == it->value));
}

static int
name_is(const struct item *it, const char *s)
{
    return it->nlen == strlen(s) && memcmp(it->name, s, it->nlen) == 0;
}

static int
value_match(const char *v, size_t n, const struct item *it)
{
    if (it->prefix ? n < it->vlen : n != it->vlen)
        return 0;
    return it->vlen == 0 || memcmp(v, it->value, it->vlen) == 0;
}

/* RFC 6690 §2: a multi-valued attribute is space-separated tokens; a token is a maximal
 * run of non-space bytes, so an empty one does not exist */
static int
token_match(const char *v, size_t n, const struct item *it)
{
    size_t i = 0;

    while (i < n) {
        size_t s;

        while (i < n && v[i] == ' ')
            i++;
        s = i;
        while (i < n && v[i] != ' ')
            i++;
        if (i > s && value_match(v + s, i - s, it))
            return 1;
    }
    return 0;
}

/* The README's href policy: the target as written, or with every %XX decoded. */
static int
href_match(const struct lf_link *l, const struct item *it)
{
    char *dec;
    size_t k = 0;
    int ok;

    if (value_match(l->href, l->hlen, it))
        return 1;
    dec = malloc(l->hlen + 1);
    CHECK(dec != NULL);
    for (size_t i = 0; i < l->hlen; i++) {
        unsigned v;

        if (l->href[i] == '%' && i + 2 < l->hlen && sscanf(l->href + i + 1, "%2x", &v) == 1) {
            dec[k++] = (char)v;
            i += 2;
        } else {
            dec[k++] = l->href[i];
        }
    }
    ok = value_match(dec, k, it);
    free(dec);
    return ok;
}

static int
link_match(const struct lf_link *l, const struct item *it)
{
    if (name_is(it, "href"))
        return !it->has_value || href_match(l, it);
    for (unsigned j = 0; j < l->nparam; j++) {
        const struct lf_param *pa = &l->param[j];

        if (pa->nlen != it->nlen || memcmp(pa->name, it->name, it->nlen) != 0)
            continue;
        if (!it->has_value)
            return 1;
        if (pa->value == NULL)
            continue; /* a flag (obs) has no value to match */
        if (name_is(it, "title") ? value_match(pa->value, pa->vlen, it)
                                 : token_match(pa->value, pa->vlen, it))
            return 1;
    }
    return 0;
}

static int
all_match(const struct lf_link *l, const struct item *it, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (!link_match(l, &it[i]))
            return 0;
    return 1;
}

static struct lf_doc *
build(const struct linkfmt_filter *f, unsigned nf, char **text)
{
    struct lf_doc *d = malloc(sizeof *d);
    size_t len = 0;

    *text = linkfmt_build(tree, f, nf, &len);
    CHECK(d != NULL && *text != NULL && strlen(*text) == len);
    CHECK(lf_parse(d, *text, len) == 0);
    return d;
}

static void
release(struct lf_doc *d, char *text)
{
    lf_free(d);
    free(d);
    free(text);
}

/* Every link names a listed resource by its registered path, once. */
static void
check_existing(const struct lf_doc *d)
{
    for (unsigned i = 0; i < d->n; i++) {
        char *href = strndup(d->link[i].href, d->link[i].hlen);
        const struct resource *r;

        CHECK(href != NULL);
        r = tree_find_path(tree, href);
        CHECK(r != NULL && !r->hidden && strcmp(r->path, href) == 0);
        for (unsigned j = 0; j < i; j++)
            CHECK(d->link[j].hlen != d->link[i].hlen ||
                  memcmp(d->link[j].href, href, d->link[i].hlen) != 0);
        free(href);
    }
}

/* Exactly the links of the unfiltered document that every item matches, in order. */
static void
check_oracle(const struct lf_doc *d, const struct item *it, unsigned n)
{
    unsigned k = 0;

    for (unsigned i = 0; i < full->n; i++) {
        const struct lf_link *l = &full->link[i];

        if (!all_match(l, it, n))
            continue;
        CHECK(k < d->n);
        CHECK(d->link[k].len == l->len && memcmp(d->link[k].text, l->text, l->len) == 0);
        k++;
    }
    CHECK(k == d->n);
}

static int
contains(const struct lf_doc *d, const struct lf_link *l)
{
    for (unsigned i = 0; i < d->n; i++)
        if (d->link[i].len == l->len && memcmp(d->link[i].text, l->text, l->len) == 0)
            return 1;
    return 0;
}

static void
check_superset(const struct lf_doc *sub, const struct linkfmt_filter *f, unsigned nf)
{
    char *text;
    struct lf_doc *sup = build(f, nf, &text);

    for (unsigned i = 0; i < sub->n; i++)
        CHECK(contains(sup, &sub->link[i]));
    release(sup, text);
}

/* Metamorphic, independent of the oracle: a prefix pattern keeps a superset of what the
 * exact value keeps, and one item fewer never keeps less. */
static void
check_relaxed(const struct lf_doc *d, const struct linkfmt_filter *f, unsigned nf)
{
    struct linkfmt_filter g[REQ_MAX_QUERIES];

    if (nf == 0)
        return;
    memcpy(g, f, nf * sizeof *f);
    for (unsigned i = 0; i < nf; i++)
        g[i].prefix = g[i].has_value;
    check_superset(d, g, nf);
    check_superset(d, f, nf - 1);
}

/* Each item in a heap block of its own size, so that any read past it is caught. */
static struct view *
copy_items(const struct view *q, unsigned nq)
{
    struct view *c = malloc((nq ? nq : 1) * sizeof *c);

    CHECK(c != NULL);
    for (unsigned i = 0; i < nq; i++) {
        uint8_t *p = malloc(q[i].len);

        CHECK(p != NULL || q[i].len == 0);
        if (q[i].len)
            memcpy(p, q[i].p, q[i].len);
        c[i] = (struct view){p, q[i].len};
    }
    return c;
}

void
discovery_check(const struct view *q, unsigned nq)
{
    struct linkfmt_filter f[REQ_MAX_QUERIES];
    struct item it[REQ_MAX_QUERIES];
    struct view *own;
    unsigned nf, want = nq < REQ_MAX_QUERIES ? nq : REQ_MAX_QUERIES;
    struct lf_doc *d;
    char *text;

    discovery_tree();
    if (nq == 0)
        return; /* no filter: the unfiltered document was checked with the tree */
    own = copy_items(q, nq);
    nf = linkfmt_filters(own, nq, f);
    CHECK(nf == want);
    for (unsigned i = 0; i < nf; i++) {
        item_parse(&own[i], &it[i]);
        check_filter(&f[i], &it[i]);
    }
    d = build(f, nf, &text);
    check_existing(d);
    check_oracle(d, it, nf);
    check_relaxed(d, f, nf);
    release(d, text);
    for (unsigned i = 0; i < nq; i++)
        free((void *)own[i].p);
    free(own);
}

/* linkfmt.c's built-in /.well-known/core resource calls its handler through runtime_c_call
 * (runtime_c.c, which needs the whole server). The harnesses never register that resource
 * (linkfmt_register needs a server), so this is never called. */
int
runtime_c_call(struct resource *r, union handler h, moonlet_req *req, moonlet_resp *resp)
{
    (void)r, (void)h, (void)req, (void)resp;
    abort();
}
