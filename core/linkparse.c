/*
 * linkparse.c -- reading a link-format document (RFC 6690 §2), for request bodies in
 * Content-Format 40 (a Resource Directory's registrations, RFC 9176 §5): strict to the
 * grammar, one callback per link, nothing allocated. linkfmt.c writes the format.
 */
#include <stdio.h>
#include <string.h>

#include "linkparse.h"

struct lp {
    const unsigned char *s;
    size_t len, pos;
    char *err;
    size_t errlen;
    size_t link_at; /* where the current link starts */
    size_t used;    /* bytes of text taken by the current link */
    unsigned nattrs;
    moonlet_attr attrs[MOONLET_LINK_MAX_ATTRS];
    char text[MOONLET_LINK_MAX_TEXT]; /* its target and attributes, unquoted */
};

size_t
linkparse_utf8_prefix(const void *buf, size_t len)
{
    const unsigned char *s = buf;
    size_t i = 0;

    while (i < len) {
        unsigned c = s[i];
        size_t n;
        unsigned lo = 0x80, hi = 0xbf; /* the range of the second byte */

        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            n = 1;
        else if (c >= 0xe0 && c <= 0xef)
            n = 2;
        else if (c >= 0xf0 && c <= 0xf4)
            n = 3;
        else
            return i;
        if (c == 0xe0)
            lo = 0xa0; /* overlong */
        else if (c == 0xed)
            hi = 0x9f; /* UTF-16 surrogates */
        else if (c == 0xf0)
            lo = 0x90; /* overlong */
        else if (c == 0xf4)
            hi = 0x8f; /* above U+10FFFF */
        if (len - i <= n || s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t k = 2; k <= n; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xbf)
                return i;
        i += n + 1;
    }
    return len;
}

static int
fail(struct lp *p, size_t at, const char *what)
{
    if (p->err && p->errlen)
        snprintf(p->err, p->errlen, "link-format: %s at byte %zu", what, at);
    return MOONLET_EINVAL;
}

/* MOONLET_ERANGE: the link is beyond the parser's limits (moonlet.h), in attributes or text */
static int
too_long(struct lp *p, int attrs)
{
    if (p->err && p->errlen) {
        if (attrs)
            snprintf(p->err, p->errlen, "link-format: the link at byte %zu has more than %d %s",
                     p->link_at, MOONLET_LINK_MAX_ATTRS, "attributes");
        else
            snprintf(p->err, p->errlen, "link-format: the link at byte %zu takes more than %d %s",
                     p->link_at, MOONLET_LINK_MAX_TEXT, "bytes");
    }
    return MOONLET_ERANGE;
}

static int
is_alpha(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int
is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static int
is_hex(int c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int
one_of(int c, const char *set)
{
    return c != '\0' && strchr(set, c) != NULL;
}

/* RFC 3986 §2: unreserved, gen-delims and sub-delims (and '%' of pct-encoded) */
static int
uri_char(int c)
{
    return is_alpha(c) || is_digit(c) || one_of(c, "-._~:/?#[]@!$&'()*+,;=");
}

/* RFC 5987 §3.2.1 attr-char: the characters of a parmname */
static int
attr_char(int c)
{
    return is_alpha(c) || is_digit(c) || one_of(c, "!#$&+-.^_`|~");
}

/* RFC 6690 §2 ptokenchar */
static int
ptoken_char(int c)
{
    return is_alpha(c) || is_digit(c) || one_of(c, "!#$%&'()*+-./:<=>?@[]^_`{|}~");
}

/* RFC 5987 §3.2.1 mime-charsetc */
static int
charset_char(int c)
{
    return is_alpha(c) || is_digit(c) || one_of(c, "!#$%&+-^_`{}~");
}

/* RFC 9110 §5.6.4 qdtext and what may follow a backslash (quoted-pair): HTAB, SP, visible
 * characters and obs-text. RFC 6690 refers to RFC 2616's quoted-string, whose line folding
 * RFC 9110 §5.5 has made obsolete: CR and LF are refused with the other controls. */
static int
quoted_char(int c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

/* Room for n more bytes of the current link's text, or NULL. */
static char *
room(struct lp *p, size_t n)
{
    char *o = p->text + p->used;

    if (n > sizeof p->text - p->used)
        return NULL;
    p->used += n;
    return o;
}

/* "<" URI-Reference ">": the characters of RFC 3986 §2, percent-encodings well-formed; its
 * structure (scheme, authority) is left to the caller, which resolves it (RFC 6690 §2.1). */
static int
parse_target(struct lp *p, const char **target, size_t *tlen)
{
    size_t start = p->pos + 1, i = start;
    char *o;

    if (p->pos == p->len || p->s[p->pos] != '<')
        return fail(p, p->pos, "expected '<'");
    while (i < p->len && p->s[i] != '>') {
        if (p->s[i] == '%') {
            if (p->len - i < 3 || !is_hex(p->s[i + 1]) || !is_hex(p->s[i + 2]))
                return fail(p, i, "bad percent-encoding in the target");
            i += 3;
        } else if (uri_char(p->s[i])) {
            i++;
        } else {
            return fail(p, i, "a character not allowed in a URI reference");
        }
    }
    if (i == p->len)
        return fail(p, p->pos, "target without '>'");
    *tlen = i - start;
    if ((o = room(p, *tlen + 1)) == NULL)
        return too_long(p, 0);
    memcpy(o, p->s + start, *tlen);
    o[*tlen] = '\0';
    *target = o;
    p->pos = i + 1;
    return MOONLET_OK;
}

/* quoted-string (RFC 9110 §5.6.4), unquoted into the link's text; p->pos is at the '"' */
static int
parse_quoted(struct lp *p, const char **value)
{
    size_t at = p->pos, i = p->pos + 1, n = 0;
    char *o = p->text + p->used;

    for (;;) {
        int c;

        if (i == p->len)
            return fail(p, at, "quoted string without its closing '\"'");
        c = p->s[i++];
        if (c == '"')
            break;
        if (c == '\\') {
            if (i == p->len)
                return fail(p, at, "quoted string without its closing '\"'");
            c = p->s[i++];
        }
        if (!quoted_char(c))
            return fail(p, i - 1, "a control character in a quoted string");
        if (room(p, 1) == NULL)
            return too_long(p, 0);
        o[n++] = (char)c;
    }
    if (room(p, 1) == NULL)
        return too_long(p, 0);
    o[n] = '\0';
    *value = o;
    p->pos = i;
    return MOONLET_OK;
}

/* p->pos after a run of characters accepted by ok; returns how many */
static size_t
span(struct lp *p, int (*ok)(int))
{
    size_t start = p->pos;

    while (p->pos < p->len && ok(p->s[p->pos]))
        p->pos++;
    return p->pos - start;
}

static int
lang_char(int c)
{
    return is_alpha(c) || is_digit(c) || c == '-';
}

/* RFC 5987 §3.2.1 ext-value: charset "'" [ language ] "'" value-chars, kept as written (the
 * caller decodes the percent-encoding in the charset it names). */
static int
ext_value_end(struct lp *p)
{
    size_t at = p->pos;

    if (span(p, charset_char) == 0 || p->pos == p->len || p->s[p->pos] != '\'')
        return fail(p, at, "bad ext-value (RFC 5987: charset'language'value)");
    p->pos++;
    span(p, lang_char);
    if (p->pos == p->len || p->s[p->pos] != '\'')
        return fail(p, at, "bad ext-value (RFC 5987: charset'language'value)");
    p->pos++;
    while (p->pos < p->len) {
        int c = p->s[p->pos];

        if (c == '%') {
            if (p->len - p->pos < 3 || !is_hex(p->s[p->pos + 1]) || !is_hex(p->s[p->pos + 2]))
                return fail(p, p->pos, "bad percent-encoding in an ext-value");
            p->pos += 3;
        } else if (attr_char(c)) {
            p->pos++;
        } else {
            break;
        }
    }
    return MOONLET_OK;
}

static const char *
copy_text(struct lp *p, size_t from, size_t n)
{
    char *o = room(p, n + 1);

    if (o == NULL)
        return NULL;
    memcpy(o, p->s + from, n);
    o[n] = '\0';
    return o;
}

/* ";" link-param, where every form of RFC 6690 §2 is a link-extension:
 * parmname [ "=" ( ptoken / quoted-string ) ] / parmname "*" "=" ext-value */
static int
parse_param(struct lp *p)
{
    size_t name_at = ++p->pos, nlen, vstart;
    moonlet_attr *a;
    int rc;

    if (p->nattrs == MOONLET_LINK_MAX_ATTRS)
        return too_long(p, 1);
    a = &p->attrs[p->nattrs];
    if ((nlen = span(p, attr_char)) == 0)
        return fail(p, name_at, "expected an attribute name after ';'");
    if (p->pos < p->len && p->s[p->pos] == '*') {
        /* ext-name-star "=" ext-value: no whitespace in between, the '=' is required */
        if (++p->pos == p->len || p->s[p->pos] != '=')
            return fail(p, p->pos, "expected '=' after a name ending in '*'");
        vstart = ++p->pos;
        if ((rc = ext_value_end(p)) != MOONLET_OK)
            return rc;
        if ((a->name = copy_text(p, name_at, nlen + 1)) == NULL ||
            (a->value = copy_text(p, vstart, p->pos - vstart)) == NULL)
            return too_long(p, 0);
        p->nattrs++;
        return MOONLET_OK;
    }
    if ((a->name = copy_text(p, name_at, nlen)) == NULL)
        return too_long(p, 0);
    a->value = NULL;
    if (p->pos < p->len && p->s[p->pos] == '=') {
        vstart = ++p->pos;
        if (p->pos < p->len && p->s[p->pos] == '"') {
            if ((rc = parse_quoted(p, &a->value)) != MOONLET_OK)
                return rc;
        } else if (span(p, ptoken_char) == 0) {
            return fail(p, vstart, "expected a value (a token or a quoted string) after '='");
        } else if ((a->value = copy_text(p, vstart, p->pos - vstart)) == NULL) {
            return too_long(p, 0);
        }
    }
    p->nattrs++;
    return MOONLET_OK;
}

MOONLET_API int
moonlet_linkfmt_parse(const void *doc, size_t len, moonlet_link_cb cb, void *ud, char *err,
                      size_t errlen)
{
    struct lp p;
    size_t valid;

    p.s = doc;
    p.len = len;
    p.pos = 0;
    p.err = err;
    p.errlen = errlen;
    if (err && errlen)
        err[0] = '\0';
    if (doc == NULL && len > 0)
        return fail(&p, 0, "no document (NULL)");
    /* RFC 6690 §3 (application/link-format): UTF-8 text */
    if ((valid = linkparse_utf8_prefix(doc, len)) < len)
        return fail(&p, valid, "invalid UTF-8");
    /* link-value-list = [ link-value *[ "," link-value ] ]: empty is a document of no links;
     * no whitespace anywhere outside quoted strings */
    while (p.pos < len) {
        const char *target;
        size_t tlen;
        int rc;

        p.link_at = p.pos;
        p.used = 0;
        p.nattrs = 0;
        if ((rc = parse_target(&p, &target, &tlen)) != MOONLET_OK)
            return rc;
        while (p.pos < len && p.s[p.pos] == ';')
            if ((rc = parse_param(&p)) != MOONLET_OK)
                return rc;
        if (p.pos < len && p.s[p.pos] != ',')
            return fail(&p, p.pos, "expected ';', ',' or the end after a link");
        if (cb && (rc = cb(ud, target, tlen, p.attrs, p.nattrs)) != 0)
            return rc;
        if (p.pos < len && ++p.pos == len)
            return fail(&p, p.pos - 1, "',' at the end: a link must follow it");
    }
    return MOONLET_OK;
}
