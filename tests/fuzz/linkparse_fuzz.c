/*
 * linkparse_fuzz.c -- libFuzzer harness for moonlet_linkfmt_parse (core/linkparse.c), the
 * reader of link-format bodies (RFC 6690 §2). The input is a document: the status is one of
 * three and the same without a callback; an error names a byte of the input (or its end);
 * every link handed over holds only what the grammar allows (URI characters in the target,
 * attr-chars in names, no control character but HTAB in values); written back in canonical
 * form (every value quoted), a parsed document parses to the same links; and a callback that
 * stops at link k stops the parse there with its value.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "include/moonlet.h"

#define STOP 42 /* what the callback returns to stop */

struct copy {
    char *buf; /* the links as canonical link-format */
    size_t len, cap;
    unsigned links, stop_at;
};

static void
put(struct copy *c, const char *s, size_t n)
{
    if (c->len + n > c->cap) {
        c->cap = (c->len + n) * 2;
        c->buf = realloc(c->buf, c->cap);
        CHECK(c->buf != NULL);
    }
    memcpy(c->buf + c->len, s, n);
    c->len += n;
}

static int
uri_char(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("-._~:/?#[]@!$&'()*+,;=%", c));
}

static int
attr_char(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$&+-.^_`|~", c));
}

/* Checks one link and appends it in canonical form: quoted values, '"' and '\' escaped. */
static int
on_link(void *ud, const char *target, size_t tlen, const moonlet_attr *attrs, unsigned n)
{
    struct copy *c = ud;

    CHECK(strlen(target) == tlen);
    CHECK(n <= MOONLET_LINK_MAX_ATTRS);
    for (size_t i = 0; i < tlen; i++)
        CHECK(uri_char((unsigned char)target[i]));
    put(c, c->links ? ",<" : "<", c->links ? 2 : 1);
    put(c, target, tlen);
    put(c, ">", 1);
    for (unsigned i = 0; i < n; i++) {
        size_t nl = strlen(attrs[i].name);
        int star = nl > 0 && attrs[i].name[nl - 1] == '*';

        CHECK(nl > (size_t)star);
        for (size_t k = 0; k < nl - (size_t)star; k++)
            CHECK(attr_char((unsigned char)attrs[i].name[k]));
        CHECK(!star || attrs[i].value != NULL);
        put(c, ";", 1);
        put(c, attrs[i].name, nl);
        if (attrs[i].value == NULL)
            continue;
        if (star) { /* an ext-value is given as written: it goes back as it was */
            put(c, "=", 1);
            put(c, attrs[i].value, strlen(attrs[i].value));
            continue;
        }
        put(c, "=\"", 2);
        for (const char *v = attrs[i].value; *v; v++) {
            unsigned char ch = (unsigned char)*v;

            CHECK(ch == '\t' || (ch >= 0x20 && ch != 0x7f));
            if (ch == '"' || ch == '\\')
                put(c, "\\", 1);
            put(c, v, 1);
        }
        put(c, "\"", 1);
    }
    return ++c->links == c->stop_at ? STOP : 0;
}

/* The byte named by "... at byte N" */
static size_t
err_byte(const char *err)
{
    const char *at = strstr(err, " at byte ");

    CHECKF(at != NULL, "error without a byte: %s", err);
    return strtoul(at + 9, NULL, 10);
}

/* The libFuzzer entry point; declared here for -Wmissing-prototypes. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct copy first = {0}, again = {0}, stopped = {0};
    char err[200], err2[200];
    int rc = moonlet_linkfmt_parse(data, size, on_link, &first, err, sizeof err), rc2;

    CHECK(rc == MOONLET_OK || rc == MOONLET_EINVAL || rc == MOONLET_ERANGE);
    CHECK(moonlet_linkfmt_parse(data, size, NULL, NULL, err2, sizeof err2) == rc);
    CHECK(strcmp(err, err2) == 0);
    if (rc == MOONLET_EINVAL) /* the end of the input, when something is missing there */
        CHECKF(err_byte(err) <= size, "%s", err);
    if (rc == MOONLET_ERANGE)
        CHECKF(strstr(err, "the link at byte") != NULL, "%s", err);
    if (rc != MOONLET_OK) {
        CHECK(err[0] != '\0');
        free(first.buf);
        return 0;
    }
    CHECK(err[0] == '\0');
    /* written back canonically, the same links */
    rc2 = moonlet_linkfmt_parse(first.buf, first.len, on_link, &again, err, sizeof err);
    CHECKF(rc2 == MOONLET_OK, "the canonical form does not parse: %s: %.*s", err, (int)first.len,
           first.buf);
    CHECK(again.links == first.links);
    CHECK(again.len == first.len &&
          (first.len == 0 || memcmp(again.buf, first.buf, first.len) == 0));
    /* a callback's value stops the parse at its link */
    if (first.links > 0) {
        stopped.stop_at = 1 + (data[0] % first.links);
        CHECK(moonlet_linkfmt_parse(data, size, on_link, &stopped, NULL, 0) == STOP);
        CHECK(stopped.links == stopped.stop_at);
        CHECK(stopped.len <= first.len && memcmp(stopped.buf, first.buf, stopped.len) == 0);
    }
    free(first.buf);
    free(again.buf);
    free(stopped.buf);
    return 0;
}
