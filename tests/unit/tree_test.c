/*
 * tree_test.c -- the resource tree (path keys, percent-decoding, lookup by segments,
 * registration validation) and link-format output and filtering (RFC 6690 §2, §4.1).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "t.h"
#include "tree.h"

static int
h_get(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    (void)req, (void)resp, (void)ud;
    return MOONLET_OK;
}

static struct unit unit = {.rt = &runtime_c, .name = "test"};

static struct resource *
mk(const moonlet_resource_def *def, char *err)
{
    return tree_resource_new(def, sizeof *def, NULL, &unit, err, 200);
}

static struct resource *
add(struct tree *t, const char *path)
{
    moonlet_resource_def def = {.path = path, .get = h_get};
    char err[200];
    struct resource *r = mk(&def, err);

    if (r && tree_add(t, r) != MOONLET_OK) {
        tree_resource_free(r);
        return NULL;
    }
    return r;
}

/* Split "a/b/c" into views (test helper; '|' stands for a literal '/' inside a segment). */
static unsigned
segs(const char *path, struct view *v, char *store)
{
    unsigned n = 0;

    strcpy(store, path);
    for (char *p = store; *p;) {
        char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);

        for (size_t i = 0; i < len; i++)
            if (p[i] == '|')
                p[i] = '/';
        v[n++] = (struct view){(const uint8_t *)p, len};
        p += len + (e != NULL);
    }
    return n;
}

static struct resource *
find(struct tree *t, const char *path)
{
    struct view v[REQ_MAX_SEGMENTS];
    char store[512];

    return tree_find(t, v, segs(path, v, store));
}

static void
test_lookup(void)
{
    struct tree *t = tree_new();
    struct resource *ab = add(t, "/a/b"), *slash = add(t, "/a%2Fb"), *root = add(t, "/");
    struct resource *sp = add(t, "/x%20y");
    struct view none[1];

    T_OK(ab && slash && root && sp, "registrations succeed");
    T_OK(find(t, "a/b") == ab, "/a/b found by segments a, b");
    T_OK(find(t, "a|b") == slash, "one segment 'a/b' finds /a%%2Fb, not /a/b (R4)");
    T_OK(tree_find(t, none, 0) == root, "no segments find /");
    T_OK(find(t, "x y") == sp, "percent-decoded space");
    T_OK(find(t, "a") == NULL, "a prefix of a path is not a resource");
    T_OK(find(t, "a/b/c") == NULL, "a longer path is not a resource");
    T_OK(find(t, "A/b") == NULL, "segments are case-sensitive");
    T_OK(find(t, "a/..") == NULL && find(t, "a/.") == NULL, ".. and . are opaque (R2, R3)");
    T_EQ_MEM(slash->path, strlen(slash->path), "/a%2Fb", 6, "canonical path re-encodes '/'");
    T_EQ_MEM(sp->path, strlen(sp->path), "/x%20y", 6, "canonical path re-encodes ' '");
    T_OK(add(t, "/a/b") == NULL, "duplicate path refused");
    T_OK(add(t, "/a/%62") == NULL, "duplicate after percent-decoding refused");
    {
        struct view v[2] = {{(const uint8_t *)"ti\0me", 5}, {NULL, 0}};

        T_OK(tree_find(t, v, 1) == NULL, "NUL inside a segment is not truncated (R5)");
    }
    tree_remove(t, ab);
    tree_resource_free(ab);
    T_OK(find(t, "a/b") == NULL && find(t, "a|b") == slash, "removal leaves the others");
    tree_free(t);
}

static void
test_validation(void)
{
    static const char *bad_paths[] = {"", "a", "//", "/a//b", "/a/", "/%zz", "/%4", "/a b",
                                      "/a?b", "/a#b", "/<x>", "/a\"b", "/a,b"};
    char err[200];

    for (size_t i = 0; i < sizeof bad_paths / sizeof *bad_paths; i++) {
        moonlet_resource_def def = {.path = bad_paths[i], .get = h_get};
        struct resource *r = mk(&def, err);

        T_OK(r == NULL, "path '%s' refused", bad_paths[i]);
        tree_resource_free(r);
    }
    {
        char deep[200] = "";
        moonlet_resource_def def = {.path = deep, .get = h_get};

        for (int i = 0; i < REQ_MAX_SEGMENTS + 1; i++)
            strcat(deep, "/s");
        T_OK(mk(&def, err) == NULL, "more than %d segments refused", REQ_MAX_SEGMENTS);
    }
    {
        /* R17: a value that tries to break out of its quoted-string */
        moonlet_resource_def def = {.path = "/x", .rt = "x\",</secret>;rt=\"y", .get = h_get};

        T_OK(mk(&def, err) == NULL, "rt with a quote refused (R17)");
        def.rt = "a  b";
        T_OK(mk(&def, err) == NULL, "rt with a double space refused");
        def.rt = NULL;
        def.title = "line\r\nbreak";
        T_OK(mk(&def, err) == NULL, "title with CR LF refused");
    }
    {
        static const int ct[] = {70000, MOONLET_CT_END};
        moonlet_resource_def def = {.path = "/x", .ct = ct, .get = h_get};

        T_OK(mk(&def, err) == NULL, "content format > 65535 refused");
    }
    {
        static const moonlet_attr extra[] = {{"bad name", "v"}, {NULL, NULL}};
        moonlet_resource_def def = {.path = "/x", .extra = extra, .get = h_get};

        T_OK(mk(&def, err) == NULL, "attribute name with a space refused");
    }
    {
        static const moonlet_attr rt[] = {{"RT", "x"}, {NULL, NULL}};
        static const moonlet_attr obs[] = {{"obs", NULL}, {NULL, NULL}};
        static const moonlet_attr anchor[] = {{"anchor", "coap://h"}, {NULL, NULL}};
        moonlet_resource_def def = {.path = "/x", .extra = rt, .get = h_get};
        struct resource *r;

        T_OK(mk(&def, err) == NULL && strstr(err, "has its own field"),
             "an extra 'RT' refused: a link would carry two rt (%s)", err);
        def.extra = obs;
        T_OK(mk(&def, err) == NULL, "an extra flag 'obs' refused");
        def.extra = anchor;
        T_OK((r = mk(&def, err)) != NULL, "an extra 'anchor' is fine");
        tree_resource_free(r);
    }
}

static char *
doc(struct tree *t, const char *query)
{
    struct view q[REQ_MAX_QUERIES];
    struct linkfmt_filter f[REQ_MAX_QUERIES];
    unsigned nq = 0;
    size_t len;
    char store[256];

    if (query) {
        strcpy(store, query);
        for (char *p = strtok(store, "&"); p; p = strtok(NULL, "&"))
            q[nq++] = (struct view){(const uint8_t *)p, strlen(p)};
    }
    return linkfmt_build(t, f, linkfmt_filters(q, nq, f), &len);
}

static void
expect_doc(struct tree *t, const char *query, const char *want)
{
    char *got = doc(t, query);

    T_OK(got && strcmp(got, want) == 0, "?%s -> %s%s%s", query ? query : "", want,
         got && strcmp(got, want) ? " ; got " : "", got && strcmp(got, want) ? got : "");
    free(got);
}

static void
test_linkfmt(void)
{
    static const int ct2[] = {0, 50, MOONLET_CT_END}, ct1[] = {60, MOONLET_CT_END};
    static const moonlet_attr extra[] = {{"foo", "bar baz"}, {"flag", NULL}, {NULL, NULL}};
    const moonlet_resource_def defs[] = {
        {.path = "/sensors/temp", .rt = "temperature c", .iface = "sensor", .ct = ct2,
         .obs = 1, .title = "Room \"1\", north\\", .get = h_get},
        {.path = "/sensors/temp_outdoor", .rt = "temperature", .sz = 42, .get = h_get},
        {.path = "/actuators/led", .rt = "light", .iface = "actuator", .ct = ct1,
         .extra = extra, .get = h_get},
        {.path = "/secret", .hidden = 1, .get = h_get},
    };
    struct tree *t = tree_new();
    char err[200];

    for (size_t i = 0; i < sizeof defs / sizeof *defs; i++)
        tree_add(t, mk(&defs[i], err));
    expect_doc(t, NULL,
               "</sensors/temp>;rt=\"temperature c\";if=\"sensor\";ct=\"0 50\";obs;"
               "title=\"Room \\\"1\\\", north\\\\\","
               "</sensors/temp_outdoor>;rt=\"temperature\";sz=42,"
               "</actuators/led>;rt=\"light\";if=\"actuator\";ct=60;foo=\"bar baz\";flag");
    expect_doc(t, "rt=temperature",
               "</sensors/temp>;rt=\"temperature c\";if=\"sensor\";ct=\"0 50\";obs;"
               "title=\"Room \\\"1\\\", north\\\\\","
               "</sensors/temp_outdoor>;rt=\"temperature\";sz=42");
    expect_doc(t, "rt=c", "</sensors/temp>;rt=\"temperature c\";if=\"sensor\";ct=\"0 50\";obs;"
                          "title=\"Room \\\"1\\\", north\\\\\"");
    expect_doc(t, "rt=temp*&obs",
               "</sensors/temp>;rt=\"temperature c\";if=\"sensor\";ct=\"0 50\";obs;"
               "title=\"Room \\\"1\\\", north\\\\\"");
    expect_doc(t, "href=/act*", "</actuators/led>;rt=\"light\";if=\"actuator\";ct=60;"
                                "foo=\"bar baz\";flag");
    expect_doc(t, "ct=60", "</actuators/led>;rt=\"light\";if=\"actuator\";ct=60;"
                           "foo=\"bar baz\";flag");
    expect_doc(t, "foo=baz", "</actuators/led>;rt=\"light\";if=\"actuator\";ct=60;"
                             "foo=\"bar baz\";flag");
    expect_doc(t, "sz=42", "</sensors/temp_outdoor>;rt=\"temperature\";sz=42");
    expect_doc(t, "rt=nothing", "");
    expect_doc(t, "unknown=1", "");
    expect_doc(t, "href=/secret", "");
    tree_free(t);
}

/* Subtrees (a last segment "*"): exact paths first, then the longest prefix; the prefix
 * itself belongs to its subtree. And a tree of many resources (it grows its buckets). */
static void
test_subtree(void)
{
    struct tree *t = tree_new();
    struct resource *ab = add(t, "/a/b"), *a = add(t, "/a/*"), *abc = add(t, "/a/b/c/*");
    struct resource *star = add(t, "/a/%2A"), *all = add(t, "/*");
    struct view none[1];
    char path[32];
    int found = 1;

    T_OK(ab && a && abc && star && all, "registrations succeed");
    T_OK(a->subtree && a->nseg == 1 && abc->nseg == 3 && all->nseg == 0 && !star->subtree &&
             !ab->subtree, "subtree flags and prefix lengths");
    T_OK(find(t, "a/b") == ab, "an exact path wins over the subtree around it");
    T_OK(find(t, "a") == a, "the prefix itself belongs to its subtree");
    T_OK(find(t, "a/x/y") == a, "a path below the prefix");
    T_OK(find(t, "a/b/c") == abc && find(t, "a/b/c/d/e") == abc, "the longest prefix wins");
    T_OK(find(t, "a/b/x") == a, "/a/b is exact only: /a/b/x falls to /a/*");
    T_OK(find(t, "a/*") == star, "a segment '*' in a request is a plain segment");
    T_EQ_MEM(star->path, strlen(star->path), "/a/%2A", 6,
             "a literal segment '*' is written %%2A (a raw one ends a subtree's path)");
    T_OK(tree_find_path(t, star->path) == star, "and found by that spelling (path_fuzz)");
    T_OK(find(t, "z") == all && tree_find(t, none, 0) == all, "/* owns the rest, / too");
    T_OK(tree_find_path(t, "/a/*") == a && tree_find_path(t, "/a") == NULL,
         "tree_find_path is exact");
    T_EQ_MEM(a->path, strlen(a->path), "/a/*", 4, "a subtree's path keeps its '*'");
    T_OK(add(t, "/a/*") == NULL, "a duplicate subtree is refused");
    tree_remove(t, a);
    tree_resource_free(a);
    T_OK(find(t, "a/x") == all, "without /a/*, /* takes /a/x");
    tree_free(t);

    t = tree_new();
    for (int i = 0; i < 3000; i++) {
        snprintf(path, sizeof path, "/d/%d", i);
        add(t, path);
    }
    for (int i = 0; i < 3000 && found; i++) {
        struct resource *r;

        snprintf(path, sizeof path, "d/%d", i);
        r = find(t, path);
        found = r && strcmp(r->path + 1, path) == 0;
    }
    T_OK(found && t->count == 3000 && t->nbuckets >= 2048, "3000 resources, %zu buckets",
         t->nbuckets);
    tree_free(t);
}

int
main(void)
{
    test_lookup();
    test_subtree();
    test_validation();
    test_linkfmt();
    return t_done();
}
