/*
 * msg_fuzz.c -- libFuzzer harness for the CoAP codec and the request option check
 * (core/msg.c, core/option.c; RFC 7252 §3, §3.1, §5.4): whatever the parser accepts must
 * stay inside the input, pass the option check consistently, and survive a write/parse
 * round trip. The input is also fed to msg_parse_body as a header-less body (RFC 8323).
 */
#include "fuzz.h"
#include "msg.h"
#include "option.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/* Extension bytes of a delta or length nibble (§3.1). */
static size_t
ext_len(unsigned v)
{
    return v < 13 ? 0 : v < 269 ? 1 : 2;
}

/* Every view lies inside [lo, hi), numbers never descend, and headers plus values account
 * for every byte of the option region: nothing is skipped or reported short. */
static void
check_views(const struct msg *m, const uint8_t *lo, const uint8_t *hi)
{
    struct msg_iter it;
    struct msg_opt o;
    unsigned n = 0, prev = 0;
    size_t bytes = 0;

    CHECK(m->opts >= lo && m->opts <= hi && m->opts_len <= (size_t)(hi - m->opts));
    msg_iter_init(&it, m);
    while (msg_iter_next(&it, &o)) {
        CHECK(o.num >= prev);
        CHECK(o.val >= lo && o.val <= hi && o.len <= (size_t)(hi - o.val));
        bytes += 1 + ext_len(o.num - prev) + ext_len(o.len) + o.len;
        prev = o.num;
        n++;
    }
    CHECK(n == m->nopts);
    CHECK(bytes == m->opts_len);
    if (m->payload == NULL) {
        CHECK(m->payload_len == 0 && m->opts + m->opts_len == hi);
        return;
    }
    CHECK(m->payload == m->opts + m->opts_len + 1 && m->payload[-1] == 0xff);
    CHECK(m->payload_len > 0 && m->payload + m->payload_len == hi);
}

/* The verdict is one of the three codes, names an option present, and agrees with
 * option_usable: an accepted request has only usable critical options. */
static void
check_request(const struct msg *m)
{
    struct option_check chk = {0, NULL};
    unsigned v = option_check_request(m, &chk), prev = 0, nth = 0, i = 0;
    struct msg_iter it;
    struct msg_opt o;

    CHECK(v == 0 || v == MSG_CODE(4, 2) || v == MSG_CODE(5, 5));
    if (v == MSG_CODE(4, 2))
        CHECK(chk.why != NULL && msg_find(m, chk.bad, &o) != NULL);
    if (v == MSG_CODE(5, 5))
        CHECK(chk.why != NULL && (msg_find(m, 35, &o) || msg_find(m, 39, &o)));
    msg_iter_init(&it, m);
    while (msg_iter_next(&it, &o)) {
        int ok;

        nth = (i++ > 0 && o.num == prev) ? nth + 1 : 0;
        prev = o.num;
        ok = option_usable(&o, nth);
        if (v == 0 && option_critical(o.num))
            CHECK(ok);
        if (option_get(o.num) == NULL)
            CHECK(!ok);
    }
}

static int
is_uint(unsigned num, size_t len)
{
    const struct option_def *d = option_get(num);

    return d != NULL && d->format == OPT_UINT && len <= 4;
}

/* Writes m again (uint options re-encoded minimally when `minimal`) and checks that the
 * result parses to the same header, token, options and payload. */
static void
roundtrip(const struct msg *m, size_t size, int minimal)
{
    size_t cap = size + 16;
    uint8_t *buf = malloc(cap);
    struct msg_iter a, b;
    struct msg_opt x, y;
    struct msg_wr w;
    struct msg r;
    long len;

    CHECK(buf != NULL);
    msg_wr_init(&w, buf, cap, m->type, m->code, m->mid, m->token, m->tkl);
    msg_iter_init(&a, m);
    while (msg_iter_next(&a, &x)) {
        if (minimal && is_uint(x.num, x.len))
            msg_wr_opt_uint(&w, x.num, msg_uint(x.val, x.len));
        else
            msg_wr_opt(&w, x.num, x.val, x.len);
    }
    msg_wr_payload(&w, m->payload, m->payload_len);
    len = msg_wr_end(&w);
    CHECK(len >= 0 && (size_t)len <= cap);
    CHECK(msg_parse(&r, buf, (size_t)len) == MSG_OK);
    CHECK(r.type == m->type && r.code == m->code && r.mid == m->mid && r.tkl == m->tkl);
    CHECK(memcmp(r.token, m->token, m->tkl) == 0);
    CHECK(r.nopts == m->nopts);
    msg_iter_init(&a, m);
    msg_iter_init(&b, &r);
    while (msg_iter_next(&a, &x)) {
        CHECK(msg_iter_next(&b, &y));
        CHECK(x.num == y.num);
        if (minimal && is_uint(x.num, x.len)) {
            CHECK(msg_uint(x.val, x.len) == msg_uint(y.val, y.len));
            CHECK(y.len <= x.len && (y.len == 0 || y.val[0] != 0));
        } else {
            CHECK(x.len == y.len && memcmp(x.val, y.val, x.len) == 0);
        }
    }
    CHECK(!msg_iter_next(&b, &y));
    CHECK(r.payload_len == m->payload_len);
    if (m->payload_len)
        CHECK(memcmp(r.payload, m->payload, m->payload_len) == 0);
    free(buf);
}

static void
check_accepted(const struct msg *m, const uint8_t *data, size_t size)
{
    check_views(m, data, data + size);
    check_request(m);
    roundtrip(m, size, 0);
    roundtrip(m, size, 1);
}

/* The libFuzzer entry point; declared here for -Wmissing-prototypes. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct msg m;
    int rc = msg_parse(&m, data, size);

    CHECK(rc == MSG_OK || rc == MSG_ESHORT || rc == MSG_EVERSION || rc == MSG_EFORMAT);
    CHECK((rc == MSG_ESHORT) == (size < 4));
    if (rc == MSG_OK) {
        CHECK(m.tkl <= MSG_TOKEN_MAX && m.token == data + 4 && m.opts == data + 4 + m.tkl);
        check_accepted(&m, data, size);
    }

    /* the same bytes as the body of a header-less framing; give it a header to write */
    memset(&m, 0, sizeof m);
    if (msg_parse_body(&m, data, data + size) == MSG_OK) {
        m.code = MSG_CODE(0, 1);
        m.token = data;
        check_accepted(&m, data, size);
    }
    return 0;
}
