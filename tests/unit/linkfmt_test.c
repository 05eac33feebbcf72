/*
 * linkfmt_test.c -- discovery filters on attribute values with odd spacing (RFC 6690 §2,
 * §4.1): a token is a maximal run of non-space bytes, so an empty token never exists.
 * Found by tests/fuzz/linkfmt_fuzz.c.
 */
#include <stdlib.h>
#include <string.h>

#include "t.h"
#include "tree.h"

static char *
filtered(struct tree *t, const char *item)
{
    struct view q = {(const uint8_t *)item, strlen(item)};
    struct linkfmt_filter f[1];
    size_t len;

    return linkfmt_build(t, f, linkfmt_filters(&q, 1, f), &len);
}

static void
expect(struct tree *t, const char *item, const char *want)
{
    char *got = filtered(t, item);
    int ok = got && strcmp(got, want) == 0;

    T_OK(ok, "?%s -> '%s'%s%s", item, want, ok ? "" : "; got ", ok || !got ? "" : got);
    free(got);
}

static void
test_spaced_values(void)
{
    static const moonlet_attr extra[] = {{"note", "  spaced  out "}, {NULL, NULL}};
    const moonlet_resource_def def = {.path = "/n", .extra = extra};
    const char *link = "</n>;note=\"  spaced  out \"";
    struct tree *t = tree_new();
    char err[200];
    struct resource *r = tree_resource_new(&def, sizeof def, NULL, NULL, err, sizeof err);

    T_OK(r && tree_add(t, r) == MOONLET_OK, "/n registered");
    expect(t, "note=", ""); /* leading spaces once made an empty first token */
    expect(t, "note=spaced", link);
    expect(t, "note=out", link);
    expect(t, "note=sp*", link);
    expect(t, "note=*", link);
    expect(t, "note", link);
    expect(t, "note=spaced  out", "");
    tree_free(t);
}

int
main(void)
{
    test_spaced_values();
    return t_done();
}
