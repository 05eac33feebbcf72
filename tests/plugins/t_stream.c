/*
 * t_stream.c -- a streamed upload resource (moonlet_resource_def.body, ABI 1.1): the body
 * is never buffered by the core; this plugin folds it into a size, an FNV-1a hash and a
 * count of pieces, checking that the offsets follow each other. PUT answers and GET
 * repeats "size hash pieces" (hash as 16 hex digits); a gap answers 5.00.
 */
#include <stdio.h>
#include <string.h>

#include "moonlet.h"

struct st {
    size_t size, pieces;
    unsigned long long hash;
    int gap;
    char last[64];
};

static int
body(moonlet_req *req, size_t offset, const uint8_t *data, size_t len, int last, void *ud)
{
    struct st *st = ud;

    (void)req, (void)last;
    if (offset == 0) {
        st->size = st->pieces = 0;
        st->hash = 14695981039346656037ULL;
        st->gap = 0;
    }
    if (offset != st->size)
        st->gap = 1;
    for (size_t i = 0; i < len; i++)
        st->hash = (st->hash ^ data[i]) * 1099511628211ULL;
    st->size += len;
    st->pieces++;
    return st->size > 200000 ? MOONLET_ERANGE : MOONLET_OK;
}

static int
put(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    struct st *st = ud;
    size_t len;

    moonlet_req_payload(req, &len);
    if (st->gap || len != 0)
        return moonlet_resp_error(resp, MOONLET_INTERNAL_SERVER_ERROR, "gap or buffered body");
    snprintf(st->last, sizeof st->last, "%zu %016llx %zu", st->size, st->hash, st->pieces);
    moonlet_resp_code(resp, MOONLET_CHANGED);
    return moonlet_resp_payload(resp, st->last, strlen(st->last));
}

static int
get(moonlet_req *req, moonlet_resp *resp, void *ud)
{
    struct st *st = ud;

    (void)req;
    return moonlet_resp_payload(resp, st->last, strlen(st->last));
}

static struct st state;

static int
stream_init(moonlet_plugin *p, const moonlet_conf *conf)
{
    static const moonlet_resource_def def = {
        .path = "/t/stream", .get = get, .put = put, .body = body};

    (void)conf;
    return moonlet_resource_add(p, &def, &state) ? MOONLET_OK : MOONLET_EINVAL;
}

MOONLET_PLUGIN("t_stream", "1", stream_init, NULL);
