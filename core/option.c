/*
 * option.c -- the option table (RFC 7252 §5.4, §5.10, §12.2; RFC 7641 §2; RFC 7959 §2.1,
 * §4; RFC 7967 §2; RFC 9175 §2.2, §3.2) and the request option check (§5.4.1, §5.4.3,
 * §5.4.5). One sorted table drives validation, 4.02 decisions and names.
 */
#include "option.h"

#include <string.h>

#define R (OPT_REPEAT | OPT_KNOWN)
#define K OPT_KNOWN

/* Sorted by number. OSCORE (9) is absent on purpose: unsupported, so a request carrying it
 * gets 4.02 as an unrecognised critical option (RFC 8613 §2). */
static const struct option_def table[] = {
    {1, OPT_OPAQUE, R, 0, 8, "If-Match"},
    {3, OPT_STRING, K, 1, 255, "Uri-Host"},
    {4, OPT_OPAQUE, R, 1, 8, "ETag"},
    {5, OPT_EMPTY, K, 0, 0, "If-None-Match"},
    {6, OPT_UINT, K, 0, 3, "Observe"},
    {7, OPT_UINT, K, 0, 2, "Uri-Port"},
    {8, OPT_STRING, R, 0, 255, "Location-Path"},
    {11, OPT_STRING, R, 0, 255, "Uri-Path"},
    {12, OPT_UINT, K, 0, 2, "Content-Format"},
    {14, OPT_UINT, K, 0, 4, "Max-Age"},
    {15, OPT_STRING, R, 0, 255, "Uri-Query"},
    {16, OPT_UINT, K, 1, 1, "Hop-Limit"},
    {17, OPT_UINT, K, 0, 2, "Accept"},
    {20, OPT_STRING, R, 0, 255, "Location-Query"},
    {23, OPT_UINT, K, 0, 3, "Block2"},
    {27, OPT_UINT, K, 0, 3, "Block1"},
    {28, OPT_UINT, K, 0, 4, "Size2"},
    {35, OPT_STRING, K, 1, 1034, "Proxy-Uri"},
    {39, OPT_STRING, K, 1, 255, "Proxy-Scheme"},
    {60, OPT_UINT, K, 0, 4, "Size1"},
    {252, OPT_OPAQUE, K, 1, 40, "Echo"},
    {258, OPT_UINT, K, 0, 1, "No-Response"},
    {292, OPT_OPAQUE, R, 0, 8, "Request-Tag"},
};

#undef R
#undef K

const struct option_def *
option_get(unsigned num)
{
    size_t lo = 0, hi = sizeof table / sizeof table[0];

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;

        if (table[mid].num == num)
            return &table[mid];
        if (table[mid].num < num)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const char *
option_name(unsigned num)
{
    const struct option_def *d = option_get(num);

    return d ? d->name : NULL;
}

const struct option_def *
option_by_name(const char *name)
{
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(table[i].name, name) == 0)
            return &table[i];
    return NULL;
}

int
option_usable(const struct msg_opt *o, unsigned nth)
{
    const struct option_def *d = option_get(o->num);

    if (d == NULL || o->len < d->min || o->len > d->max)
        return 0;
    return nth == 0 || (d->flags & OPT_REPEAT);
}

/* RFC 7252 §5.10.7: 128, 132, 136 and 140 are reserved for future Location-* options and
 * are handled as unrecognised critical options wherever they appear. */
static int
reserved_location(unsigned num)
{
    return num == 128 || num == 132 || num == 136 || num == 140;
}

unsigned
option_check_request(const struct msg *m, struct option_check *chk)
{
    struct msg_iter it;
    struct msg_opt o;
    unsigned prev = 0, count = 0;
    int proxy = 0;

    msg_iter_init(&it, m);
    while (msg_iter_next(&it, &o)) {
        const struct option_def *d = option_get(o.num);

        count = (o.num == prev) ? count + 1 : 0;
        prev = o.num;
        if (o.num == 35 || o.num == 39)
            proxy = 1;
        if (d == NULL || reserved_location(o.num)) {
            /* §5.4.1: unrecognised elective options are silently ignored */
            if (!option_critical(o.num) && !reserved_location(o.num))
                continue;
            chk->bad = o.num;
            chk->why = "unknown critical option";
            return MSG_CODE(4, 2);
        }
        if (!option_critical(o.num))
            continue;   /* §5.4.3, §5.4.5: a bad or repeated elective option is ignored */
        if (o.len < d->min || o.len > d->max) {
            /* §5.4.3: a critical option with an out-of-range length is unrecognised */
            chk->bad = o.num;
            chk->why = "bad option length";
            return MSG_CODE(4, 2);
        }
        if (count > 0 && !(d->flags & OPT_REPEAT)) {
            /* §5.4.5: a repeated non-repeatable critical option is unrecognised */
            chk->bad = o.num;
            chk->why = "option repeated";
            return MSG_CODE(4, 2);
        }
    }
    if (proxy) {
        /* §5.7.2, §5.10.2: we are not a forward proxy */
        chk->bad = 0;
        chk->why = "proxying not supported";
        return MSG_CODE(5, 5);
    }
    return 0;
}
