/*
 * linkparse_test.c -- moonlet_linkfmt_parse (core/linkparse.c), the link-format reader of
 * request bodies (RFC 6690 §2): links, targets and attributes as the grammar has them,
 * quoted strings unquoted, every malformed form refused with what and where, the limits of
 * one link, the callback stopping the parse; and the strict UTF-8 check (RFC 3629 §4).
 */
#include <stdlib.h>
#include <string.h>

#include "linkparse.h"
#include "t.h"

/* The links read, rendered as TARGET then |name=value or |name for each, " // " between. */
struct seen {
    char text[16384];
    size_t len;
    unsigned links, stop_at;
};

static int
collect(void *ud, const char *target, size_t tlen, const moonlet_attr *attrs, unsigned n)
{
    struct seen *s = ud;
    int w;

    if (strlen(target) != tlen)
        return -100;
    w = snprintf(s->text + s->len, sizeof s->text - s->len, "%s%s", s->links ? " // " : "", target);
    s->len += (size_t)w;
    for (unsigned i = 0; i < n; i++) {
        w = snprintf(s->text + s->len, sizeof s->text - s->len, "|%s%s%s", attrs[i].name,
                     attrs[i].value ? "=" : "", attrs[i].value ? attrs[i].value : "");
        s->len += (size_t)w;
    }
    return ++s->links == s->stop_at ? 7 : 0;
}

/* doc with control characters and bytes above 0x7e as \xHH, for a test's name */
static const char *
printable(const char *doc, size_t len, char *out, size_t cap)
{
    size_t n = 0;

    for (size_t i = 0; i < len && n + 5 < cap; i++) {
        unsigned char c = (unsigned char)doc[i];

        if (c < 0x20 || c > 0x7e)
            n += (size_t)snprintf(out + n, cap - n, "\\x%02x", c);
        else
            out[n++] = (char)c;
    }
    out[n] = '\0';
    return out;
}

static int
parse(const char *doc, size_t len, struct seen *s, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    return moonlet_linkfmt_parse(doc, len, collect, s, err, errlen);
}

static void
good(const char *doc, const char *want)
{
    struct seen s;
    char err[200], p[400], w[400], g[400];
    int rc = parse(doc, strlen(doc), &s, err, sizeof err);

    printable(doc, strlen(doc), p, sizeof p);
    if (!T_OK(rc == MOONLET_OK, "'%s' parses (%s)", p, err))
        return;
    T_OK(strcmp(s.text, want) == 0, "'%s' -> '%s' (got '%s')", p,
         printable(want, strlen(want), w, sizeof w), printable(s.text, s.len, g, sizeof g));
}

static void
bad_n(const char *doc, size_t len, const char *want)
{
    struct seen s;
    char err[200], p[400];
    int rc = parse(doc, len, &s, err, sizeof err);

    T_OK(rc == MOONLET_EINVAL && strcmp(err, want) == 0, "'%s' -> EINVAL '%s' (got %d '%s')",
         printable(doc, len, p, sizeof p), want, rc, err);
}

static void
bad(const char *doc, const char *want)
{
    bad_n(doc, strlen(doc), want);
}

static void
test_links(void)
{
    good("", "");
    good("</a/b>", "/a/b");
    good("<>", "");
    good("</sensors/temp>;rt=\"temperature-c\";if=\"sensor\";ct=0;obs,</l>;rt=x;rt=y",
         "/sensors/temp|rt=temperature-c|if=sensor|ct=0|obs // /l|rt=x|rt=y");
    /* ',' and ';' are URI characters: inside <> they belong to the target */
    good("</a;b,c>;x", "/a;b,c|x");
    good("<coap://[::1]:5683/a%20b?x=1&y#f>;anchor=\"coap://h/\"",
         "coap://[::1]:5683/a%20b?x=1&y#f|anchor=coap://h/");
    /* quoted strings: ',' ';' '<' and spaces inside, quoted-pair escapes removed */
    good("</a>;title=\"x, y; <z>\";t2=\"say \\\"hi\\\" \\\\ \\q\"",
         "/a|title=x, y; <z>|t2=say \"hi\" \\ q");
    good("</a>;title=\"\"", "/a|title=");
    good("</a>;rt=\"a  b\tc\"", "/a|rt=a  b\tc");
    good("</a>;title=\"\xe2\x82\xac \xf0\x9f\x98\x80\"", "/a|title=\xe2\x82\xac \xf0\x9f\x98\x80");
    /* a ptoken holds '<', '>', '=' and '/' */
    good("</a>;type=text/plain;x=<a>=b;sz=1024", "/a|type=text/plain|x=<a>=b|sz=1024");
    /* RFC 5987 ext-value, as written */
    good("</a>;title*=UTF-8'en'%E2%82%AC%20rates;t*=utf-8''x",
         "/a|title*=UTF-8'en'%E2%82%AC%20rates|t*=utf-8''x");
    /* names as written: case kept */
    good("</a>;RT=X;Obs", "/a|RT=X|Obs");
    good("</a>,</b>,</c>", "/a // /b // /c");
}

static void
test_malformed(void)
{
    bad("</a> ;x", "link-format: expected ';', ',' or the end after a link at byte 4");
    bad("</a>, </b>", "link-format: expected '<' at byte 5");
    bad("</a>,\n</b>", "link-format: expected '<' at byte 5");
    bad(" </a>", "link-format: expected '<' at byte 0");
    bad("</a>,", "link-format: ',' at the end: a link must follow it at byte 4");
    bad(",</a>", "link-format: expected '<' at byte 0");
    bad("</a>,,</b>", "link-format: expected '<' at byte 5");
    bad("/a", "link-format: expected '<' at byte 0");
    bad("</a", "link-format: target without '>' at byte 0");
    bad("</a b>", "link-format: a character not allowed in a URI reference at byte 3");
    bad("</a\"b>", "link-format: a character not allowed in a URI reference at byte 3");
    bad("</a<b>", "link-format: a character not allowed in a URI reference at byte 3");
    bad("</a%2>", "link-format: bad percent-encoding in the target at byte 3");
    bad("</a%zz>", "link-format: bad percent-encoding in the target at byte 3");
    bad("</a>;", "link-format: expected an attribute name after ';' at byte 5");
    bad("</a>; x", "link-format: expected an attribute name after ';' at byte 5");
    bad("</a>;x ;y", "link-format: expected ';', ',' or the end after a link at byte 6");
    bad("</a>;x =1", "link-format: expected ';', ',' or the end after a link at byte 6");
    bad("</a>;x=", "link-format: expected a value (a token or a quoted string) after '=' at "
                   "byte 7");
    bad("</a>;x= 1", "link-format: expected a value (a token or a quoted string) after '=' at "
                     "byte 7");
    bad("</a>;x=,</b>", "link-format: expected a value (a token or a quoted string) after '=' "
                        "at byte 7");
    bad("</a>;x=\"abc", "link-format: quoted string without its closing '\"' at byte 7");
    bad("</a>;x=\"abc\\", "link-format: quoted string without its closing '\"' at byte 7");
    bad("</a>;x=\"a\nb\"", "link-format: a control character in a quoted string at byte 9");
    bad("</a>;x=\"a\\\rb\"", "link-format: a control character in a quoted string at byte 10");
    bad("</a>;x=\"a\x7f\"", "link-format: a control character in a quoted string at byte 9");
    bad("</a>;x=a\"b\"", "link-format: expected ';', ',' or the end after a link at byte 8");
    bad("</a>;x=a b", "link-format: expected ';', ',' or the end after a link at byte 8");
    bad("</a>;x=\"a\" ", "link-format: expected ';', ',' or the end after a link at byte 10");
    bad("</a>;t*=x", "link-format: bad ext-value (RFC 5987: charset'language'value) at byte 8");
    bad("</a>;t*=UTF-8'en", "link-format: bad ext-value (RFC 5987: charset'language'value) at "
                            "byte 8");
    bad("</a>;t*=UTF-8''%4", "link-format: bad percent-encoding in an ext-value at byte 15");
    bad("</a>;t*x", "link-format: expected '=' after a name ending in '*' at byte 7");
    bad("</a>;t*", "link-format: expected '=' after a name ending in '*' at byte 7");
    bad("</a>;t*=\"x\"", "link-format: bad ext-value (RFC 5987: charset'language'value) at "
                         "byte 8");
    bad("</a>;a(b=1", "link-format: expected ';', ',' or the end after a link at byte 6");
    bad_n("</a>;x=\"a\0b\"", 12, "link-format: a control character in a quoted string at byte 9");
    bad_n("</a\0>", 5, "link-format: a character not allowed in a URI reference at byte 3");
    /* UTF-8 (RFC 3629): checked first, over the whole document */
    bad("</a>;t=\"\xff\"", "link-format: invalid UTF-8 at byte 8");
    bad("</a>;t=\"\xc0\x80\"", "link-format: invalid UTF-8 at byte 8");
    bad("</a>;t=\"\xed\xa0\x80\"", "link-format: invalid UTF-8 at byte 8");
    bad("</a>;t=\"\xf4\x90\x80\x80\"", "link-format: invalid UTF-8 at byte 8");
    bad("</a>;t=\"\xe2\x82\"", "link-format: invalid UTF-8 at byte 8");
    bad("</\xc3\xa9>", "link-format: a character not allowed in a URI reference at byte 2");
}

static void
test_limits(void)
{
    char doc[12000], err[200];
    struct seen s;
    size_t n = 0;
    int rc;

    n += (size_t)snprintf(doc, sizeof doc, "</a>");
    for (int i = 0; i < MOONLET_LINK_MAX_ATTRS; i++)
        n += (size_t)snprintf(doc + n, sizeof doc - n, ";a%d", i);
    T_EQ_INT(parse(doc, n, &s, err, sizeof err), MOONLET_OK, "64 attributes");
    n += (size_t)snprintf(doc + n, sizeof doc - n, ";x");
    rc = parse(doc, n, &s, err, sizeof err);
    T_OK(rc == MOONLET_ERANGE && strcmp(err, "link-format: the link at byte 0 has more than "
                                             "64 attributes") == 0,
         "65 attributes -> ERANGE (%d '%s')", rc, err);

    /* "/a" NUL, "t" NUL and the value NUL: 4096 bytes exactly, then one more */
    n = (size_t)snprintf(doc, sizeof doc, "</x>,</a>;t=\"");
    memset(doc + n, 'v', 4096 - 6);
    n += 4096 - 6;
    n += (size_t)snprintf(doc + n, sizeof doc - n, "\"");
    T_EQ_INT(parse(doc, n, &s, err, sizeof err), MOONLET_OK, "a link of 4096 bytes");
    memmove(doc + n, doc + n - 1, 1);
    doc[n - 1] = 'v';
    rc = parse(doc, n + 1, &s, err, sizeof err);
    T_OK(rc == MOONLET_ERANGE && strcmp(err, "link-format: the link at byte 5 takes more than "
                                             "4096 bytes") == 0,
         "a link of 4097 bytes -> ERANGE (%d '%s')", rc, err);
    T_EQ_INT(s.links, 1, "the link before it was handed over");
    n = (size_t)snprintf(doc, sizeof doc, "<");
    memset(doc + n, 'p', 5000);
    n += 5000;
    n += (size_t)snprintf(doc + n, sizeof doc - n, ">");
    T_EQ_INT(parse(doc, n, &s, err, sizeof err), MOONLET_ERANGE, "a target of 5000 bytes");
}

static void
test_callback(void)
{
    const char *doc = "</a>,</b>;x,</c>,</d";
    struct seen s;
    char err[200];

    memset(&s, 0, sizeof s);
    s.stop_at = 2;
    T_EQ_INT(moonlet_linkfmt_parse(doc, strlen(doc), collect, &s, err, sizeof err), 7,
             "the callback's non-zero value stops the parse and is returned");
    T_EQ_INT(s.links, 2, "no link after the stop");
    T_EQ_INT(moonlet_linkfmt_parse(doc, 16, NULL, NULL, NULL, 0), MOONLET_OK,
             "no callback: a validation");
    T_EQ_INT(moonlet_linkfmt_parse(doc, strlen(doc), NULL, NULL, NULL, 0), MOONLET_EINVAL,
             "no err buffer: still the status");
    T_EQ_INT(moonlet_linkfmt_parse(NULL, 0, collect, &s, err, sizeof err), MOONLET_OK,
             "NULL, 0: an empty document");
    T_EQ_INT(moonlet_linkfmt_parse(NULL, 1, collect, &s, err, sizeof err), MOONLET_EINVAL,
             "NULL, 1: refused");
}

static void
utf8(const char *s, size_t len, size_t want)
{
    T_EQ_INT(linkparse_utf8_prefix(s, len), want, "UTF-8 prefix");
}

static void
test_utf8(void)
{
    utf8("", 0, 0);
    utf8("abc", 3, 3);
    utf8("a\0b", 3, 3);
    utf8("\xc2\x80\xdf\xbf", 4, 4);                 /* U+0080, U+07FF */
    utf8("\xe0\xa0\x80\xef\xbf\xbf", 6, 6);         /* U+0800, U+FFFF */
    utf8("\xed\x9f\xbf\xee\x80\x80", 6, 6);         /* U+D7FF, U+E000 */
    utf8("\xf0\x90\x80\x80\xf4\x8f\xbf\xbf", 8, 8); /* U+10000, U+10FFFF */
    utf8("a\xc1\xbf", 3, 1);                        /* overlong */
    utf8("a\xe0\x9f\xbf", 4, 1);                    /* overlong */
    utf8("a\xf0\x8f\xbf\xbf", 5, 1);                /* overlong */
    utf8("a\xed\xa0\x80", 4, 1);                    /* surrogate */
    utf8("a\xf4\x90\x80\x80", 5, 1);                /* above U+10FFFF */
    utf8("a\xf5\x80\x80\x80", 5, 1);
    utf8("a\x80", 2, 1);     /* a lone continuation byte */
    utf8("a\xe2\x82", 3, 1); /* truncated */
    utf8("a\xe2\x82x", 4, 1);
    utf8("a\xe2\x28\xa1", 4, 1);
}

int
main(void)
{
    test_links();
    test_malformed();
    test_limits();
    test_callback();
    test_utf8();
    return t_done();
}
