/*
 * option_test.c -- unit tests of the option table and the request option check
 * (core/option.c; RFC 7252 §5.4, §5.10, §12.2; RFC 7641, 7959, 7967, 8768, 9175): every
 * registered option, the number-encoded properties (§5.4.6), and the MALFORMED.md rows the
 * check decides (O11-O32, B3, B4).
 */
#include "include/moonlet.h"
#include "msg.h"
#include "option.h"
#include "t.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

enum { CON = 0, NON = 1 }; /* message types as on the wire (§3) */

#define BAD_OPTION 0x82 /* 4.02 */
#define NO_PROXY 0xa5   /* 5.05 */

static uint8_t dgram[4096];
static uint8_t fill[1100];

/* ---- the table ------------------------------------------------------------------------ */

/* What the RFCs register (7252 Table 4; 7641 §2; 7959 §2.1, §4; 7967 §2; 8768 §3;
 * 9175 §2.2, §3.2), written out independently of core/option.c. */
static const struct {
    unsigned num;
    const char *name;
    int format, repeat;
    unsigned min, max;
} registered[] = {
    {1, "If-Match", OPT_OPAQUE, 1, 0, 8},
    {3, "Uri-Host", OPT_STRING, 0, 1, 255},
    {4, "ETag", OPT_OPAQUE, 1, 1, 8},
    {5, "If-None-Match", OPT_EMPTY, 0, 0, 0},
    {6, "Observe", OPT_UINT, 0, 0, 3},
    {7, "Uri-Port", OPT_UINT, 0, 0, 2},
    {8, "Location-Path", OPT_STRING, 1, 0, 255},
    {11, "Uri-Path", OPT_STRING, 1, 0, 255},
    {12, "Content-Format", OPT_UINT, 0, 0, 2},
    {14, "Max-Age", OPT_UINT, 0, 0, 4},
    {15, "Uri-Query", OPT_STRING, 1, 0, 255},
    {16, "Hop-Limit", OPT_UINT, 0, 1, 1},
    {17, "Accept", OPT_UINT, 0, 0, 2},
    {20, "Location-Query", OPT_STRING, 1, 0, 255},
    {23, "Block2", OPT_UINT, 0, 0, 3},
    {27, "Block1", OPT_UINT, 0, 0, 3},
    {28, "Size2", OPT_UINT, 0, 0, 4},
    {35, "Proxy-Uri", OPT_STRING, 0, 1, 1034},
    {39, "Proxy-Scheme", OPT_STRING, 0, 1, 255},
    {60, "Size1", OPT_UINT, 0, 0, 4},
    {252, "Echo", OPT_OPAQUE, 0, 1, 40},
    {258, "No-Response", OPT_UINT, 0, 0, 1},
    {292, "Request-Tag", OPT_OPAQUE, 1, 0, 8},
};
#define NREG (sizeof registered / sizeof registered[0])

static void
test_table(void)
{
    unsigned found = 0;

    for (size_t i = 0; i < NREG; i++) {
        const struct option_def *d = option_get(registered[i].num);
        const char *name = registered[i].name;

        if (!T_OK(d != NULL, "option_get(%u) finds %s", registered[i].num, name))
            continue;
        T_OK(d->num == registered[i].num && strcmp(d->name, name) == 0, "%s: number %u and name",
             name, registered[i].num);
        T_OK(d->format == registered[i].format, "%s: format", name);
        T_OK(d->min == registered[i].min && d->max == registered[i].max, "%s: length %u..%u", name,
             registered[i].min, registered[i].max);
        T_OK(!(d->flags & OPT_REPEAT) == !registered[i].repeat, "%s: %srepeatable", name,
             registered[i].repeat ? "" : "not ");
        T_OK(d->flags & OPT_KNOWN, "%s: known", name);
        T_OK(option_name(registered[i].num) == d->name, "option_name(%u)", registered[i].num);
        T_OK(option_by_name(name) == d, "option_by_name(\"%s\")", name);
    }
    for (unsigned n = 0; n <= 65535; n++)
        found += option_get(n) != NULL;
    T_EQ_INT(found, NREG, "no other number in 0..65535 is registered");
    T_OK(option_get(9) == NULL, "OSCORE (9) is not registered: unsupported");
    T_OK(option_get(0) == NULL && option_get(65535) == NULL && option_get(65536) == NULL,
         "0, 65535 and 65536 are not registered");
    T_OK(option_name(99) == NULL, "option_name of an unknown number is NULL");
    T_OK(option_by_name("uri-path") == NULL, "option_by_name is case-sensitive");
    T_OK(option_by_name("") == NULL && option_by_name("Uri-Paths") == NULL,
         "option_by_name of an unknown name is NULL");
    T_OK(MOONLET_OPT_IF_MATCH == 1 && MOONLET_OPT_URI_PATH == 11 && MOONLET_OPT_BLOCK1 == 27 &&
             option_get(MOONLET_OPT_REQUEST_TAG) != NULL && option_get(MOONLET_OPT_ECHO) &&
             option_get(MOONLET_OPT_NO_RESPONSE) && option_get(MOONLET_OPT_HOP_LIMIT),
         "the public option numbers are in the table");
}

/* §5.4.6: C = bit 0, U = bit 1, NoCacheKey = bits 1..4 all set except bit 1 (0x1c). */
static void
test_properties(void)
{
    static const struct {
        unsigned num;
        int c, u, n;
    } p[] = {
        {1, 1, 0, 0},  {3, 1, 1, 0},  {4, 0, 0, 0},  {5, 1, 0, 0},  {6, 0, 1, 0},   {8, 0, 0, 0},
        {11, 1, 1, 0}, {12, 0, 0, 0}, {28, 0, 0, 1}, {60, 0, 0, 1}, {258, 0, 1, 0}, {292, 0, 0, 0},
    };

    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) {
        T_OK(!option_critical(p[i].num) == !p[i].c, "%u is %s", p[i].num,
             p[i].c ? "critical" : "elective");
        T_OK(!option_unsafe(p[i].num) == !p[i].u, "%u is %s", p[i].num,
             p[i].u ? "unsafe" : "safe to forward");
        T_OK(!option_nocachekey(p[i].num) == !p[i].n, "%u is %s", p[i].num,
             p[i].n ? "NoCacheKey" : "part of the cache key");
    }
}

/* option_usable at each registered option's length bounds, first and second occurrence. */
static void
test_usable_bounds(void)
{
    for (size_t i = 0; i < NREG; i++) {
        struct msg_opt o = {(uint16_t)registered[i].num, 0, fill};
        const char *name = registered[i].name;

        o.len = (uint16_t)registered[i].min;
        T_OK(option_usable(&o, 0), "%s of length %u is usable", name, o.len);
        T_OK(!option_usable(&o, 1) == !registered[i].repeat, "%s: second occurrence %s", name,
             registered[i].repeat ? "usable" : "ignored");
        o.len = (uint16_t)registered[i].max;
        T_OK(option_usable(&o, 0), "%s of length %u is usable", name, o.len);
        o.len = (uint16_t)(registered[i].max + 1);
        T_OK(!option_usable(&o, 0), "%s of length %u is not usable", name, o.len);
        if (registered[i].min > 0) {
            o.len = (uint16_t)(registered[i].min - 1);
            T_OK(!option_usable(&o, 0), "%s of length %u is not usable", name, o.len);
        }
    }
    T_OK(!option_usable(&(struct msg_opt){100, 0, fill}, 0), "an unknown option is not usable");
}

/* ---- the request check ------------------------------------------------------------- */

/* The verdict on a request given in hex (MALFORMED.md conventions), after checking that it
 * parses. chk is preset to values the check must overwrite. */
static unsigned
verdict_hex(const char *hex, struct msg *m, uint8_t *buf, struct option_check *chk)
{
    size_t n = 0;

    for (; hex[0]; hex++) {
        unsigned b;

        if (hex[0] == ' ' || sscanf(hex, "%2x", &b) != 1)
            continue;
        buf[n++] = (uint8_t)b;
        hex++;
    }
    chk->bad = 12345;
    chk->why = NULL;
    if (msg_parse(m, buf, n) != MSG_OK) {
        fprintf(stderr, "test request does not parse\n");
        return 1;
    }
    return option_check_request(m, chk);
}

struct opt {
    unsigned num;
    size_t len;
};

/* The verdict on a request with these options (values filled with 'a'), written by msg_wr. */
static unsigned
verdict(unsigned type, unsigned code, const struct opt *o, size_t n, struct msg *m,
        struct option_check *chk)
{
    struct msg_wr w;
    long len;

    msg_wr_init(&w, dgram, sizeof dgram, type, code, 0xabcd, (const uint8_t *)"tk", 2);
    for (size_t i = 0; i < n; i++)
        msg_wr_opt(&w, o[i].num, fill, o[i].len);
    len = msg_wr_end(&w);
    chk->bad = 12345;
    chk->why = NULL;
    if (len < 0 || msg_parse(m, dgram, (size_t)len) != MSG_OK) {
        fprintf(stderr, "test request cannot be written or parsed\n");
        return 1;
    }
    return option_check_request(m, chk);
}

/* Expects 4.02 naming option bad, with a diagnostic. */
static void
expect_bad(const char *id, unsigned got, const struct option_check *chk, unsigned bad)
{
    char name[120];

    snprintf(name, sizeof name, "%s: 4.02", id);
    T_EQ_INT(got, BAD_OPTION, name);
    snprintf(name, sizeof name, "%s: chk->bad is %u, with a reason", id, bad);
    T_OK(got == BAD_OPTION && chk->bad == bad && chk->why != NULL, "%s", name);
}

/* The usability of the nth option (0-based position in the message) with its occurrence. */
static int
usable_at(const struct msg *m, unsigned pos)
{
    struct msg_iter it;
    struct msg_opt o;
    unsigned prev = 0, nth = 0, i = 0;

    msg_iter_init(&it, m);
    while (msg_iter_next(&it, &o)) {
        nth = (i > 0 && o.num == prev) ? nth + 1 : 0;
        prev = o.num;
        if (i++ == pos)
            return option_usable(&o, nth);
    }
    return -1;
}

static void
test_check_rows(void)
{
    uint8_t buf[600];
    struct option_check chk;
    struct msg m;
    unsigned v;

    v = verdict_hex("40 01 ab cd b4 74696d65 d0 4b", &m, buf, &chk);
    expect_bad("O11 critical 99 in a CON GET", v, &chk, 99);
    v = verdict_hex("50 01 ab cd b4 74696d65 d0 4b", &m, buf, &chk);
    expect_bad("O12 critical 99 in a NON GET", v, &chk, 99);
    v = verdict_hex("40 01 ab cd b4 74696d65 d0 4c", &m, buf, &chk);
    T_EQ_INT(v, 0, "O14 elective 100 is ignored");
    T_OK(usable_at(&m, 1) == 0, "O14 option 100 is not usable");
    v = verdict_hex("40 01 ab cd 90 24 74696d65", &m, buf, &chk);
    expect_bad("O15 OSCORE (9), unsupported", v, &chk, 9);
    v = verdict_hex("40 01 ab cd b4 74696d65 61 00 01 00", &m, buf, &chk);
    expect_bad("O16 two Accept", v, &chk, 17);
    v = verdict_hex("40 01 ab cd 39 6c6f63616c686f7374 09 6c6f63616c686f7374", &m, buf, &chk);
    expect_bad("O17 two Uri-Host", v, &chk, 3);

    v = verdict_hex("40 03 ab cd b4 74696d65 11 00 01 28 ff 41", &m, buf, &chk);
    T_EQ_INT(v, 0, "O18 two Content-Format in a PUT: processed");
    T_OK(usable_at(&m, 1) == 1 && usable_at(&m, 2) == 0,
         "O18 the first Content-Format is used, the second ignored");
    /* O16's bytes without the Uri-Path before them are two Observe: O19 */
    v = verdict_hex("40 01 ab cd 61 00 01 00", &m, buf, &chk);
    T_EQ_INT(v, 0, "O19 two Observe: processed");
    T_OK(usable_at(&m, 0) == 1 && usable_at(&m, 1) == 0,
         "O19 the first Observe is used, the second ignored");

    v = verdict_hex("40 01 ab cd 64 00000001 54 74696d65", &m, buf, &chk);
    T_EQ_INT(v, 0, "V7 Observe of length 4: processed");
    T_OK(usable_at(&m, 0) == 0, "V7 the Observe is ignored (a plain GET)");

    v = verdict_hex("40 01 ab cd 30 84 74696d65", &m, buf, &chk);
    expect_bad("O20 Uri-Host of length 0", v, &chk, 3);
    v = verdict_hex("40 01 ab cd b4 74696d65 63 000000", &m, buf, &chk);
    expect_bad("O21 Accept of length 3", v, &chk, 17);
    v = verdict_hex("40 03 ab cd 51 00 64 74696d65 ff 41", &m, buf, &chk);
    expect_bad("O22 If-None-Match of length 1", v, &chk, 5);
    v = verdict_hex("40 01 ab cd 73 001633 44 74696d65", &m, buf, &chk);
    expect_bad("O23 Uri-Port of length 3", v, &chk, 7);

    v = verdict_hex("40 02 ab cd b4 74696d65 13 000000 ff 41", &m, buf, &chk);
    T_EQ_INT(v, 0, "O26 Content-Format of length 3: processed");
    T_OK(usable_at(&m, 1) == 0, "O26 the Content-Format is ignored");
    v = verdict_hex("40 03 ab cd b4 74696d65 31 3c ff 41", &m, buf, &chk);
    T_EQ_INT(v, 0, "O27 Max-Age in a PUT: processed");
    v = verdict_hex("40 03 ab cd 83 666f6f 34 74696d65 d0 70 ff 41", &m, buf, &chk);
    expect_bad("O28 Location-Path + reserved 136 in a PUT", v, &chk, 136);
}

static void
test_check_written(void)
{
    static const struct opt path255[] = {{11, 255}}, path256[] = {{11, 256}};
    static const struct opt query255[] = {{11, 4}, {15, 255}}, query256[] = {{11, 4}, {15, 256}};
    static const struct opt proxy_uri[] = {{35, 23}}, proxy_path[] = {{11, 4}, {35, 23}};
    static const struct opt proxy_scheme[] = {{11, 4}, {39, 4}};
    static const struct opt block1[] = {{11, 4}, {27, 4}}, block2[] = {{11, 4}, {23, 4}};
    static const struct opt block2_ok[] = {{11, 4}, {23, 3}};
    static const struct opt paths[] = {{1, 0}, {1, 8}, {11, 1}, {11, 0}, {11, 255}};
    static const unsigned reserved[] = {128, 132, 136, 140};
    struct opt many[1000];
    struct option_check chk;
    struct msg m;
    unsigned v;
    char name[80];

    expect_bad("O24 Uri-Path of 256 B", verdict(CON, 1, path256, 1, &m, &chk), &chk, 11);
    T_EQ_INT(verdict(CON, 1, path255, 1, &m, &chk), 0, "control: Uri-Path of 255 B");
    expect_bad("O25 Uri-Query of 256 B", verdict(CON, 1, query256, 2, &m, &chk), &chk, 15);
    T_EQ_INT(verdict(CON, 1, query255, 2, &m, &chk), 0, "control: Uri-Query of 255 B");

    v = verdict(CON, 1, proxy_uri, 1, &m, &chk);
    T_OK(v == NO_PROXY && chk.why != NULL, "O29 Proxy-Uri: 5.05 with a reason");
    v = verdict(CON, 1, proxy_path, 2, &m, &chk);
    T_OK(v == NO_PROXY && chk.why != NULL, "O30 Proxy-Uri + Uri-Path: 5.05");
    v = verdict(NON, 1, proxy_scheme, 2, &m, &chk);
    T_OK(v == NO_PROXY && chk.why != NULL, "O31 Proxy-Scheme without Uri-Host: 5.05");

    for (size_t i = 0; i < 1000; i++)
        many[i] = (struct opt){100, 0};
    T_EQ_INT(verdict(NON, 1, many, 1000, &m, &chk), 0, "O32 1000 zero-length elective 100");
    T_EQ_INT(m.nopts, 1000, "O32 all 1000 options parsed");
    for (size_t i = 0; i < 1000; i++)
        many[i] = (struct opt){6, 0};
    T_EQ_INT(verdict(NON, 1, many, 1000, &m, &chk), 0, "O32 1000 zero-length Observe");
    for (size_t i = 0; i < 1000; i++)
        many[i] = (struct opt){(unsigned)(200 + i * 2), 0};
    T_EQ_INT(verdict(NON, 1, many, 1000, &m, &chk), 0, "O32 1000 distinct elective 200..2198");

    expect_bad("B3 Block1 of length 4", verdict(CON, 3, block1, 2, &m, &chk), &chk, 27);
    expect_bad("B4 Block2 of length 4", verdict(CON, 1, block2, 2, &m, &chk), &chk, 23);
    T_EQ_INT(verdict(CON, 1, block2_ok, 2, &m, &chk), 0, "control: Block2 of length 3");
    T_EQ_INT(verdict(CON, 1, paths, 5, &m, &chk), 0,
             "control: repeated If-Match and Uri-Path (1, 0, 255 B)");

    /* §5.10.7: even-numbered, yet handled as unrecognised critical options */
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++) {
        struct opt o[] = {{11, 4}, {reserved[i], 1}};

        snprintf(name, sizeof name, "reserved Location-* number %u", reserved[i]);
        expect_bad(name, verdict(CON, 1, o, 2, &m, &chk), &chk, reserved[i]);
    }
    T_EQ_INT(verdict(CON, 1, NULL, 0, &m, &chk), 0, "control: a GET without options");
}

int
main(void)
{
    memset(fill, 'a', sizeof fill);
    test_table();
    test_properties();
    test_usable_bounds();
    test_check_rows();
    test_check_written();
    return t_done();
}
