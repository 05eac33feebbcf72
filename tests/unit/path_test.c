/*
 * path_test.c -- the limits of a registered path (RFC 7252 §5.10.1; tree.h): 32 segments
 * of 255 bytes each is the largest path, and it registers and is found by its segments.
 * Found by tests/fuzz/path_fuzz.c.
 */
#include <stdlib.h>
#include <string.h>

#include "t.h"
#include "tree.h"

/* nseg segments of n bytes 'a'..: "/aaa/bbb/..." */
static char *
long_path(unsigned nseg, size_t n)
{
    char *s = malloc(nseg * (n + 1) + 1), *o = s;

    for (unsigned i = 0; i < nseg; i++) {
        *o++ = '/';
        memset(o, 'a' + (int)(i % 26), n);
        o += n;
    }
    *o = '\0';
    return s;
}

static struct resource *
reg(struct tree *t, const char *path)
{
    const moonlet_resource_def def = {.path = path};
    char err[200];
    struct resource *r = tree_resource_new(&def, sizeof def, NULL, NULL, err, sizeof err);

    if (r && tree_add(t, r) != MOONLET_OK) {
        tree_resource_free(r);
        return NULL;
    }
    return r;
}

static void
test_largest_path(void)
{
    struct tree *t = tree_new();
    char *max = long_path(REQ_MAX_SEGMENTS, 255), *over = long_path(REQ_MAX_SEGMENTS, 256);
    char *deep = long_path(REQ_MAX_SEGMENTS + 1, 1);
    struct view seg[REQ_MAX_SEGMENTS];
    struct resource *r = reg(t, max);

    T_OK(r != NULL, "%d segments of 255 bytes register", REQ_MAX_SEGMENTS);
    for (unsigned i = 0; i < REQ_MAX_SEGMENTS; i++)
        seg[i] = (struct view){(const uint8_t *)max + 1 + i * 256, 255};
    T_OK(r && tree_find(t, seg, REQ_MAX_SEGMENTS) == r, "and are found by their segments");
    T_OK(r && tree_find_path(t, max) == r, "and by their path");
    T_OK(reg(t, over) == NULL, "a segment of 256 bytes is refused");
    T_OK(reg(t, deep) == NULL, "%d segments are refused", REQ_MAX_SEGMENTS + 1);
    free(max);
    free(over);
    free(deep);
    tree_free(t);
}

int
main(void)
{
    test_largest_path();
    return t_done();
}
