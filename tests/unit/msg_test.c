/*
 * msg_test.c -- unit tests of the CoAP codec (core/msg.c; RFC 7252 §3, §3.1, §3.2): round
 * trips through the writer and the parser, every malformed-input row of MALFORMED.md that the
 * codec decides (H1-H8, O1-O10), uint encoding, msg_find, writer errors, msg_code_str.
 */
#include "msg.h"
#include "t.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Message types as on the wire (§3), independent of the header's names for them. */
enum { CON = 0, NON = 1, ACK = 2, RST = 3 };

/* Option values and payloads are taken from here; large enough for a 65804-byte option. */
static uint8_t pattern[70000];
/* Datagrams under test; large enough for the biggest round trip. */
static uint8_t dgram[262144];

static int
hexdigit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Decodes lower-case hex (spaces ignored) into buf; returns the length. */
static size_t
unhex(uint8_t *buf, size_t cap, const char *hex)
{
    size_t n = 0;

    while (*hex) {
        if (*hex == ' ') {
            hex++;
            continue;
        }
        if (n == cap || hexdigit(hex[0]) < 0 || hexdigit(hex[1]) < 0) {
            fprintf(stderr, "bad test hex: %s\n", hex);
            return 0;
        }
        buf[n++] = (uint8_t)(hexdigit(hex[0]) << 4 | hexdigit(hex[1]));
        hex += 2;
    }
    return n;
}

/* Parses a datagram and checks the result. A format error must still report the type and
 * MID (an RST echoes the MID, §4.2), so the rows below all use a CON with MID abcd. */
static void
parse_len(const char *id, const uint8_t *buf, size_t len, int want)
{
    struct msg m;
    int rc = msg_parse(&m, buf, len);

    T_EQ_INT(rc, want, id);
    if (want == MSG_EFORMAT && rc == MSG_EFORMAT)
        T_OK(m.mid == 0xabcd && m.type == (buf[0] >> 4 & 3), "%s: type and MID for the RST", id);
}

static void
parse_hex(const char *id, const char *hex, int want)
{
    uint8_t buf[512];

    parse_len(id, buf, unhex(buf, sizeof buf, hex), want);
}

/* ---- malformed rows (MALFORMED.md, "Message layer" and "Options") -------------------- */

static void
test_header_rows(void)
{
    uint8_t buf[64] = {0x40};
    char id[64];

    parse_len("H1 empty datagram", buf, 0, MSG_ESHORT);
    parse_hex("H1 1 byte", "40", MSG_ESHORT);
    parse_hex("H1 2 bytes 40 01", "40 01", MSG_ESHORT);
    parse_hex("H1 3 bytes", "40 01 ab", MSG_ESHORT);
    parse_hex("H2 version 0", "00 01 ab cd", MSG_EVERSION);
    parse_hex("H3 version 2", "80 01 ab cd", MSG_EVERSION);
    parse_hex("H3 version 3", "c0 01 ab cd", MSG_EVERSION);
    /* the version is checked before the TKL: a bad version is silent, not an RST */
    parse_hex("H3 version 2 with TKL 15", "8f 01 ab cd", MSG_EVERSION);
    for (unsigned tkl = 9; tkl <= 12; tkl++) {
        memset(buf, 0x11, sizeof buf);
        unhex(buf, 4, "40 01 ab cd");
        buf[0] |= (uint8_t)tkl;
        snprintf(id, sizeof id, "H4 TKL %u with %u token bytes", tkl, tkl);
        parse_len(id, buf, 4 + tkl, MSG_EFORMAT);
        snprintf(id, sizeof id, "H4 TKL %u with 20 more bytes", tkl);
        parse_len(id, buf, 24, MSG_EFORMAT);
    }
    parse_hex("H5 TKL 15", "4f 01 ab cd", MSG_EFORMAT);
    parse_hex("H5 TKL 15 with 20 more bytes",
              "4f 01 ab cd 0000000000000000000000000000000000000000", MSG_EFORMAT);
    parse_hex("H6 TKL 13, no extension byte", "4d 01 ab cd", MSG_EFORMAT);
    parse_hex("H7 TKL 13, extension 0, 13-byte token", "4d 01 ab cd 00 11223344556677889900112233",
              MSG_EFORMAT);
    parse_hex("H7 TKL 14 with its 2-byte extension", "4e 01 ab cd 00 00", MSG_EFORMAT);
    parse_hex("H8 TKL 8, 2 token bytes", "48 01 ab cd 11 22", MSG_EFORMAT);
    parse_hex("H8 TKL 1, no token byte", "41 01 ab cd", MSG_EFORMAT);
    parse_hex("H9 same as NON (the codec says EFORMAT; the layer drops)", "58 01 ab cd 11 22",
              MSG_EFORMAT);

    /* positive controls */
    parse_hex("control: 4-byte GET", "40 01 ab cd", MSG_OK);
    parse_hex("control: TKL 8 with 8 token bytes", "48 01 ab cd 1122334455667788", MSG_OK);
    /* H10-H13 are decided by the message layer, not the codec: it must parse them */
    parse_hex("control H10: CoAP ping parses", "40 00 ab cd", MSG_OK);
    parse_hex("control H11: Empty with a token parses", "41 00 ab cd 11", MSG_OK);
    parse_hex("control H12: Empty with a payload parses", "40 00 ab cd ff 41", MSG_OK);
    parse_hex("control H13: Empty with options parses", "40 00 ab cd b4 74696d65", MSG_OK);
}

static void
test_option_rows(void)
{
    parse_hex("O1 delta nibble 15, not ff", "40 01 ab cd f1 41", MSG_EFORMAT);
    parse_hex("O1 delta nibble 15, length 0", "40 01 ab cd f0", MSG_EFORMAT);
    parse_hex("O1 after an option", "40 01 ab cd b4 74696d65 f1 41", MSG_EFORMAT);
    parse_hex("O2 length nibble 15", "40 01 ab cd 1f", MSG_EFORMAT);
    parse_hex("O2 length nibble 15 with bytes after", "40 01 ab cd 1f 41 41", MSG_EFORMAT);
    parse_hex("O3 delta 13, extension missing", "40 01 ab cd b4 74696d65 d0", MSG_EFORMAT);
    parse_hex("O4 delta 14, 1 of 2 extension bytes", "40 01 ab cd b4 74696d65 e0 01", MSG_EFORMAT);
    parse_hex("O4 delta 14, no extension byte", "40 01 ab cd e0", MSG_EFORMAT);
    parse_hex("O5 length 13, extension missing", "40 01 ab cd b4 74696d65 0d", MSG_EFORMAT);
    parse_hex("O5 delta 13 present, length 13 extension missing", "40 01 ab cd dd 00", MSG_EFORMAT);
    parse_hex("O6 length 14, 1 of 2 extension bytes", "40 01 ab cd b4 74696d65 0e 01", MSG_EFORMAT);
    parse_hex("O6 delta 14 present, length 14 extension missing", "40 01 ab cd ee 00 00 00",
              MSG_EFORMAT);
    parse_hex("O7 option length past the end", "40 01 ab cd b5 74 69 6d", MSG_EFORMAT);
    parse_hex("O7 length 13+0 past the end", "40 01 ab cd 0d 00 41", MSG_EFORMAT);
    parse_hex("O8 delta extension ffff (number 65804)", "40 01 ab cd e0 ff ff", MSG_EFORMAT);
    parse_hex("O8 first number 65536", "40 01 ab cd e0 fe f3", MSG_EFORMAT);
    parse_hex("O9 running number wraps (65535 then +12)", "40 01 ab cd e0 fe f2 c0", MSG_EFORMAT);
    parse_hex("O9 running number 65535 then +1", "40 01 ab cd e0 fe f2 10", MSG_EFORMAT);
    parse_hex("O10 payload marker, no payload", "40 01 ab cd b4 74696d65 ff", MSG_EFORMAT);

    /* positive controls */
    parse_hex("control O3: delta 13 + 0 is option 13", "40 01 ab cd d0 00", MSG_OK);
    parse_hex("control O4: delta 14 + 00 00 is option 269", "40 01 ab cd e0 00 00", MSG_OK);
    parse_hex("control O5: length 13 + 0 with 13 bytes",
              "40 01 ab cd 0d 00 41414141414141414141414141", MSG_OK);
    parse_hex("control O7: Uri-Path time", "40 01 ab cd b4 74696d65", MSG_OK);
    parse_hex("control O8: number 65535", "40 01 ab cd e0 fe f2", MSG_OK);
    parse_hex("control O9: 65534 then +1, then +0", "40 01 ab cd e0 fe f1 10 00", MSG_OK);
    parse_hex("control O10: marker and 1 payload byte", "40 01 ab cd b4 74696d65 ff 41", MSG_OK);
}

static void
test_marker_last(void)
{
    parse_hex("marker is the last byte, right after the header", "40 01 ab cd ff", MSG_EFORMAT);
    parse_hex("marker is the last byte, after the token", "41 01 ab cd 11 ff", MSG_EFORMAT);
    parse_hex("marker after 0xff payload byte is payload", "40 01 ab cd ff ff", MSG_OK);
}

/* ---- header, payload views ----------------------------------------------------------- */

static void
test_header_fields(void)
{
    static const char *const hex[] = {"40 01 ab cd", "50 02 ab cd", "60 45 ab cd", "70 00 ab cd"};
    static const uint8_t code[] = {0x01, 0x02, 0x45, 0x00};
    uint8_t buf[8];
    struct msg m;

    for (unsigned t = 0; t < 4; t++) {
        int rc = msg_parse(&m, buf, unhex(buf, sizeof buf, hex[t]));

        T_OK(rc == MSG_OK && m.type == t && m.code == code[t] && m.mid == 0xabcd && m.tkl == 0 &&
                 m.nopts == 0 && m.payload == NULL && m.payload_len == 0 && m.opts_len == 0,
             "header %s: type %u, code, MID, no options, no payload", hex[t], t);
    }
    T_EQ_INT(MSG_CODE(2, 5), 0x45, "MSG_CODE(2, 5)");
    T_EQ_INT(MSG_CLASS(0xa5), 5, "MSG_CLASS(5.05)");
    T_EQ_INT(MSG_DETAIL(0xa5), 5, "MSG_DETAIL(5.05)");
}

static void
test_zero_copy(void)
{
    uint8_t buf[32];
    size_t len = unhex(buf, sizeof buf, "42 02 ab cd 7a 7b b4 74696d65 ff 68 69");
    struct msg m;
    struct msg_opt o;
    struct msg_iter it;

    if (!T_EQ_INT(msg_parse(&m, buf, len), MSG_OK, "zero copy: parses"))
        return;
    T_OK(m.token == buf + 4, "zero copy: token points into the buffer");
    T_OK(m.opts == buf + 6 && m.opts_len == 5, "zero copy: option region is a view");
    T_OK(m.payload == buf + 12 && m.payload_len == 2, "zero copy: payload points into the buffer");
    msg_iter_init(&it, &m);
    T_OK(msg_iter_next(&it, &o) && o.num == 11 && o.len == 4 && o.val == buf + 7,
         "zero copy: option value points into the buffer");
    T_OK(!msg_iter_next(&it, &o), "zero copy: one option");
    buf[12] = 'H';
    T_OK(m.payload[0] == 'H', "zero copy: a change in the buffer shows through the view");
}

/* ---- round trips --------------------------------------------------------------------- */

struct opt {
    unsigned num;
    size_t len;
};

/* Writes a message with these options (value of option i: pattern + i) and payload, parses
 * it back and compares every field. */
static void
roundtrip(const char *name, unsigned type, const uint8_t *tok, unsigned tkl, const struct opt *o,
          size_t n, size_t plen)
{
    struct msg_wr w;
    struct msg m;
    struct msg_iter it;
    struct msg_opt got;
    size_t i, bad = n;
    long len;

    msg_wr_init(&w, dgram, sizeof dgram, type, MSG_CODE(0, 3), 0x1234, tok, tkl);
    for (i = 0; i < n; i++)
        msg_wr_opt(&w, o[i].num, pattern + i, o[i].len);
    msg_wr_payload(&w, pattern + 1000, plen);
    len = msg_wr_end(&w);
    if (!T_OK(len > 0, "%s: written", name))
        return;
    if (!T_OK(msg_parse(&m, dgram, (size_t)len) == MSG_OK, "%s: parses back", name))
        return;
    T_OK(m.type == type && m.code == MSG_CODE(0, 3) && m.mid == 0x1234 && m.tkl == tkl &&
             (tkl == 0 || memcmp(m.token, tok, tkl) == 0),
         "%s: header and token", name);
    T_OK(m.nopts == n, "%s: nopts is %zu", name, n);
    msg_iter_init(&it, &m);
    for (i = 0; i < n && bad == n; i++)
        if (!msg_iter_next(&it, &got) || got.num != o[i].num || got.len != o[i].len ||
            memcmp(got.val, pattern + i, o[i].len) != 0)
            bad = i;
    if (!T_OK(bad == n && !msg_iter_next(&it, &got), "%s: option numbers, lengths, values", name))
        printf("# %s: first mismatch at option %zu\n", name, bad);
    T_OK(m.payload_len == plen &&
             (plen == 0 ? m.payload == NULL : memcmp(m.payload, pattern + 1000, plen) == 0),
         "%s: payload of %zu bytes", name, plen);
}

static void
test_roundtrip_tokens(void)
{
    static const uint8_t tok[8] = {0xde, 0xad, 0xbe, 0xef, 0x00, 0xff, 0x12, 0x34};
    static const struct opt path = {11, 4};
    char name[64];

    for (unsigned tkl = 0; tkl <= MSG_TOKEN_MAX; tkl++) {
        snprintf(name, sizeof name, "token of %u bytes, type %u", tkl, tkl % 4);
        roundtrip(name, tkl % 4, tok, tkl, &path, 1, tkl);
    }
}

static void
test_roundtrip_numbers(void)
{
    static const unsigned nums[] = {0, 1, 12, 13, 14, 267, 268, 269, 270, 1000, 65534, 65535};
    /* deltas 0, 12, 13, 268, 269 and the rest up to 65535 */
    static const struct opt deltas[] = {{0, 0},   {0, 1},   {12, 2},   {25, 3},
                                        {293, 0}, {562, 5}, {65535, 1}};
    static const struct opt repeats[] = {{11, 4}, {11, 0}, {11, 255}, {60, 4}, {60, 4}};
    char name[64];

    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        struct opt o = {nums[i], 2};

        snprintf(name, sizeof name, "single option %u", nums[i]);
        roundtrip(name, CON, NULL, 0, &o, 1, 0);
    }
    roundtrip("deltas 0, 12, 13, 268, 269, 64973", CON, NULL, 0, deltas, 7, 3);
    roundtrip("repeated options", NON, NULL, 0, repeats, 5, 0);
    roundtrip("no options, payload only", ACK, NULL, 0, NULL, 0, 100);
    roundtrip("no options, no payload", RST, NULL, 0, NULL, 0, 0);
}

static void
test_roundtrip_lengths(void)
{
    static const size_t lens[] = {0, 1, 12, 13, 14, 268, 269, 270, 1034, 65535};
    struct opt many[1000];
    char name[64];

    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        struct opt o[2] = {{11, lens[i]}, {15, lens[i]}};

        snprintf(name, sizeof name, "option length %zu", lens[i]);
        roundtrip(name, CON, NULL, 0, o, 2, lens[i]);
    }
    for (size_t i = 0; i < 1000; i++)
        many[i] = (struct opt){(unsigned)(i * 65), 0};
    roundtrip("1000 zero-length options, numbers 0..64935", NON, NULL, 0, many, 1000, 1);
}

/* The option header for each boundary must be the minimal one (§3.1). */
static void
test_header_encoding(void)
{
    static const struct {
        unsigned num;
        size_t len;
        const char *hdr;
    } c[] = {
        {0, 0, "00"},           {12, 0, "c0"},          {13, 0, "d0 00"},      {268, 0, "d0 ff"},
        {269, 0, "e0 00 00"},   {65535, 0, "e0 fe f2"}, {0, 12, "0c"},         {0, 13, "0d 00"},
        {0, 268, "0d ff"},      {0, 269, "0e 00 00"},   {0, 1034, "0e 02 fd"}, {14, 13, "dd 01 00"},
        {0, 65535, "0e fe f2"},
    };
    uint8_t want[8];
    struct msg_wr w;
    char name[64];

    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        size_t n = unhex(want, sizeof want, c[i].hdr);

        msg_wr_init(&w, dgram, sizeof dgram, CON, 1, 0xabcd, NULL, 0);
        msg_wr_opt(&w, c[i].num, pattern, c[i].len);
        snprintf(name, sizeof name, "header of option %u, length %zu is %s", c[i].num, c[i].len,
                 c[i].hdr);
        T_OK(msg_wr_end(&w) == (long)(4 + n + c[i].len) && memcmp(dgram + 4, want, n) == 0, "%s",
             name);
    }
}

/* ---- uint ---------------------------------------------------------------------------- */

static void
test_uint(void)
{
    static const struct {
        uint32_t v;
        const char *enc;
    } c[] = {
        {0, ""},
        {1, "01"},
        {255, "ff"},
        {256, "01 00"},
        {65535, "ff ff"},
        {65536, "01 00 00"},
        {0xffffff, "ff ff ff"},
        {0x1000000, "01 00 00 00"},
        {UINT32_MAX, "ff ff ff ff"},
    };
    static const struct {
        const char *hex;
        uint32_t v;
    } dec[] = {
        {"", 0},
        {"00", 0},
        {"00 00 01", 1},
        {"00 01 00", 256},
        {"00 00 00 00", 0},
        {"12 34 56 78", 0x12345678},
        {"ff ff ff ff", UINT32_MAX},
        {"00 00 00 00 01", UINT32_MAX},
        {"00 00 00 00 00 00 00 00", UINT32_MAX},
    };
    uint8_t out[4], want[4], buf[16];
    char name[80];

    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        size_t n = unhex(want, sizeof want, c[i].enc);
        unsigned got = msg_uint_enc(out, c[i].v);

        snprintf(name, sizeof name, "msg_uint_enc(%lu) is \"%s\"", (unsigned long)c[i].v, c[i].enc);
        T_EQ_MEM(out, got, want, n, name);
        snprintf(name, sizeof name, "msg_uint of the encoding of %lu", (unsigned long)c[i].v);
        T_EQ_INT(msg_uint(out, got), c[i].v, name);
    }
    for (size_t i = 0; i < sizeof dec / sizeof dec[0]; i++) {
        size_t n = unhex(buf, sizeof buf, dec[i].hex);

        snprintf(name, sizeof name, "msg_uint(\"%s\", %zu)", dec[i].hex, n);
        T_EQ_INT(msg_uint(buf, n), dec[i].v, name);
    }
}

/* msg_wr_opt_uint writes the minimal form: Content-Format (12) right after the header. */
static void
test_wr_opt_uint(void)
{
    static const struct {
        uint32_t v;
        const char *hex;
    } c[] = {
        {0, "c0"},
        {255, "c1 ff"},
        {256, "c2 01 00"},
        {65536, "c3 01 00 00"},
        {0x1000000, "c4 01 00 00 00"},
        {UINT32_MAX, "c4 ff ff ff ff"},
    };
    uint8_t want[8];
    struct msg_wr w;
    struct msg m;
    struct msg_opt o;
    char name[80];

    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        size_t n = unhex(want, sizeof want, c[i].hex);
        long len;

        msg_wr_init(&w, dgram, 64, CON, 3, 0xabcd, NULL, 0);
        msg_wr_opt_uint(&w, 12, c[i].v);
        len = msg_wr_end(&w);
        snprintf(name, sizeof name, "msg_wr_opt_uint(12, %lu) writes %s", (unsigned long)c[i].v,
                 c[i].hex);
        T_EQ_MEM(dgram + 4, len - 4, want, n, name);
        snprintf(name, sizeof name, "msg_wr_opt_uint(12, %lu) reads back", (unsigned long)c[i].v);
        T_OK(msg_parse(&m, dgram, (size_t)len) == MSG_OK && msg_find(&m, 12, &o) != NULL &&
                 msg_uint(o.val, o.len) == c[i].v,
             "%s", name);
    }
}

/* ---- msg_find, msg_parse_body -------------------------------------------------------- */

static void
test_find(void)
{
    uint8_t buf[64];
    /* Uri-Path "a", Uri-Path "b", Size1 4, No-Response 0, Request-Tag "t" */
    size_t len = unhex(buf, sizeof buf, "40 01 ab cd b1 61 01 62 d1 24 04 d0 b9 d1 15 74");
    struct msg m;
    struct msg_opt o;

    if (!T_EQ_INT(msg_parse(&m, buf, len), MSG_OK, "msg_find: message parses"))
        return;
    T_EQ_INT(m.nopts, 5, "msg_find: 5 options");
    T_OK(msg_find(&m, 11, &o) == &o && o.len == 1 && o.val[0] == 'a',
         "msg_find returns the first of repeated options");
    T_OK(msg_find(&m, 292, &o) == &o && o.len == 1 && o.val[0] == 't',
         "msg_find finds the last option");
    T_OK(msg_find(&m, 258, &o) == &o && o.len == 0, "msg_find finds a zero-length option");
    /* on a miss, out holds the last option examined: the first one past the number */
    T_OK(msg_find(&m, 12, &o) == NULL && o.num == 60,
         "msg_find(12) stops at option 60, not at the end");
    T_OK(msg_find(&m, 3, &o) == NULL && o.num == 11, "msg_find(3) stops at the first option");
    T_OK(msg_find(&m, 65535, &o) == NULL && o.num == 292, "msg_find(65535) scans to the end");
    len = unhex(buf, sizeof buf, "40 01 ab cd ff 41");
    T_OK(msg_parse(&m, buf, len) == MSG_OK && msg_find(&m, 0, &o) == NULL,
         "msg_find on a message without options");
}

static void
test_parse_body(void)
{
    uint8_t buf[64];
    size_t len = unhex(buf, sizeof buf, "b4 74696d65 ff 41 42");
    struct msg m;

    T_OK(msg_parse_body(&m, buf, buf) == MSG_OK && m.nopts == 0 && m.opts_len == 0 &&
             m.payload == NULL && m.payload_len == 0,
         "msg_parse_body of an empty body");
    T_OK(msg_parse_body(&m, buf, buf + len) == MSG_OK && m.nopts == 1 && m.opts_len == 5 &&
             m.payload == buf + 6 && m.payload_len == 2,
         "msg_parse_body of options and payload");
    T_OK(msg_parse_body(&m, buf, buf + 5) == MSG_OK && m.nopts == 1 && m.payload == NULL,
         "msg_parse_body of options only");
    T_EQ_INT(msg_parse_body(&m, buf, buf + 6), MSG_EFORMAT, "msg_parse_body: marker last");
    T_EQ_INT(msg_parse_body(&m, buf, buf + 4), MSG_EFORMAT, "msg_parse_body: value cut short");
    T_EQ_INT(msg_parse_body(&m, buf + 5, buf + 6), MSG_EFORMAT, "msg_parse_body: marker only");
}

/*
 * The length extension reaches 65535 + 269 = 65804 (§3.1), which a reliable transport
 * (RFC 8323) can carry. The parser must either reject lengths it cannot report, or report
 * them exactly: the view must cover the whole value it skips.
 */
static void
test_parse_body_long_option(void)
{
    static const size_t lens[] = {65535, 65536, 65804};
    char name[80];

    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        size_t ext = lens[i] - 269;
        struct msg m;
        struct msg_iter it;
        struct msg_opt o;
        int rc;

        dgram[0] = 0xbe; /* Uri-Path, length 14 */
        dgram[1] = (uint8_t)(ext >> 8);
        dgram[2] = (uint8_t)ext;
        memset(dgram + 3, 'x', lens[i]);
        rc = msg_parse_body(&m, dgram, dgram + 3 + lens[i]);
        snprintf(name, sizeof name, "option of %zu bytes: rejected or reported exactly", lens[i]);
        if (rc != MSG_OK) {
            T_OK(lens[i] > 65535 && rc == MSG_EFORMAT, "%s", name);
            continue;
        }
        msg_iter_init(&it, &m);
        msg_iter_next(&it, &o);
        T_EQ_INT(o.len, it.p - o.val, name);
    }
}

/* ---- writer errors ------------------------------------------------------------------- */

static void
test_writer_errors(void)
{
    static const uint8_t tok[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    uint8_t buf[16];
    struct msg_wr w;
    struct msg m;

    msg_wr_init(&w, buf, 3, CON, 1, 0xabcd, NULL, 0);
    T_EQ_INT(msg_wr_end(&w), -1, "writer: capacity 3 cannot hold a header");
    msg_wr_init(&w, buf, 4, CON, 1, 0xabcd, NULL, 0);
    T_EQ_INT(msg_wr_end(&w), 4, "writer: capacity 4 holds a header");
    msg_wr_init(&w, buf, 11, CON, 1, 0xabcd, tok, 8);
    T_EQ_INT(msg_wr_end(&w), -1, "writer: capacity 11 cannot hold an 8-byte token");
    msg_wr_init(&w, buf, 12, CON, 1, 0xabcd, tok, 8);
    T_EQ_INT(msg_wr_end(&w), 12, "writer: capacity 12 holds an 8-byte token");
    msg_wr_init(&w, buf, sizeof buf, CON, 1, 0xabcd, tok, 9);
    T_EQ_INT(msg_wr_end(&w), -1, "writer: TKL 9 is refused");

    msg_wr_init(&w, buf, 9, CON, 1, 0xabcd, NULL, 0);
    msg_wr_opt(&w, 11, "time", 4);
    T_EQ_INT(msg_wr_end(&w), 9, "writer: an option that fits exactly");
    msg_wr_init(&w, buf, 8, CON, 1, 0xabcd, NULL, 0);
    msg_wr_opt(&w, 11, "time", 4);
    T_EQ_INT(msg_wr_end(&w), -1, "writer: an option one byte too long");
    msg_wr_opt(&w, 12, NULL, 0);
    T_EQ_INT(msg_wr_end(&w), -1, "writer: the error is sticky");

    msg_wr_init(&w, buf, 7, CON, 1, 0xabcd, NULL, 0);
    msg_wr_payload(&w, "hi", 2);
    T_EQ_INT(msg_wr_end(&w), 7, "writer: a payload that fits exactly");
    msg_wr_init(&w, buf, 6, CON, 1, 0xabcd, NULL, 0);
    msg_wr_payload(&w, "hi", 2);
    T_EQ_INT(msg_wr_end(&w), -1, "writer: a payload one byte too long");
    msg_wr_init(&w, buf, 4, CON, 1, 0xabcd, NULL, 0);
    msg_wr_payload(&w, "", 0);
    T_EQ_INT(msg_wr_end(&w), 4, "writer: an empty payload writes no marker");

    msg_wr_init(&w, buf, sizeof buf, CON, 1, 0xabcd, NULL, 0);
    msg_wr_opt(&w, 11, "a", 1);
    msg_wr_opt(&w, 11, "b", 1);
    T_EQ_INT(msg_wr_end(&w), 8, "writer: a repeated number is in order");
    msg_wr_opt(&w, 3, "h", 1);
    T_EQ_INT(msg_wr_end(&w), -1, "writer: descending option numbers are refused");
    msg_wr_init(&w, buf, sizeof buf, CON, 1, 0xabcd, NULL, 0);
    msg_wr_opt(&w, 65536, NULL, 0);
    T_EQ_INT(msg_wr_end(&w), -1, "writer: option number 65536 is refused");
    msg_wr_init(&w, dgram, sizeof dgram, CON, 1, 0xabcd, NULL, 0);
    msg_wr_opt(&w, 11, pattern, 65805);
    T_EQ_INT(msg_wr_end(&w), -1, "writer: option length 65805 is refused");

    /* The contract is header, options, payload; an option after the payload would land in
     * the payload bytes, so it is out of order. */
    msg_wr_init(&w, buf, sizeof buf, CON, 1, 0xabcd, NULL, 0);
    msg_wr_payload(&w, "hi", 2);
    msg_wr_opt(&w, 11, "a", 1);
    T_EQ_INT(msg_wr_end(&w), -1, "writer: an option after the payload is refused");
    /* A second payload either fails or appends; it must not embed a second marker. */
    msg_wr_init(&w, buf, sizeof buf, CON, 1, 0xabcd, NULL, 0);
    msg_wr_payload(&w, "ab", 2);
    msg_wr_payload(&w, "cd", 2);
    T_OK(msg_wr_end(&w) == -1 || (msg_parse(&m, buf, (size_t)msg_wr_end(&w)) == MSG_OK &&
                                  m.payload_len == 4 && memcmp(m.payload, "abcd", 4) == 0),
         "writer: a second payload is refused or appended");
}

/* An option of 65536..65804 bytes is encodable (§3.1); what is written must read back. */
static void
test_writer_long_option(void)
{
    static const size_t lens[] = {65536, 65804};
    char name[80];

    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        struct msg_wr w;
        struct msg m;
        struct msg_opt o;
        long len;

        msg_wr_init(&w, dgram, sizeof dgram, CON, 1, 0xabcd, NULL, 0);
        msg_wr_opt(&w, 11, pattern, lens[i]);
        len = msg_wr_end(&w);
        snprintf(name, sizeof name, "writer: option of %zu bytes refused or read back", lens[i]);
        T_OK(len == -1 || (msg_parse(&m, dgram, (size_t)len) == MSG_OK && msg_find(&m, 11, &o) &&
                           (size_t)o.len == lens[i] && memcmp(o.val, pattern, lens[i]) == 0),
             "%s", name);
    }
}

static void
test_code_str(void)
{
    static const struct {
        unsigned code;
        const char *s;
    } c[] = {{0x00, "0.00"}, {0x01, "0.01"}, {0x07, "0.07"}, {0x45, "2.05"},
             {0x5f, "2.31"}, {0x80, "4.00"}, {0x82, "4.02"}, {0x84, "4.04"},
             {0xa5, "5.05"}, {0xe1, "7.01"}, {0xff, "7.31"}};
    char buf[6], name[48];

    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        const char *s = msg_code_str(c[i].code, buf);

        snprintf(name, sizeof name, "msg_code_str(0x%02x) is %s", c[i].code, c[i].s);
        T_OK(s == buf && strcmp(s, c[i].s) == 0, "%s", name);
    }
}

int
main(void)
{
    for (size_t i = 0; i < sizeof pattern; i++)
        pattern[i] = (uint8_t)(i * 31 + 7);
    test_header_rows();
    test_option_rows();
    test_marker_last();
    test_header_fields();
    test_zero_copy();
    test_roundtrip_tokens();
    test_roundtrip_numbers();
    test_roundtrip_lengths();
    test_header_encoding();
    test_uint();
    test_wr_opt_uint();
    test_find();
    test_parse_body();
    test_parse_body_long_option();
    test_writer_errors();
    test_writer_long_option();
    test_code_str();
    return t_done();
}
