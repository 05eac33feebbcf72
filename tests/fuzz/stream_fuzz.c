/*
 * stream_fuzz.c -- libFuzzer harness for the message layer of reliable transports
 * (core/stream.c, RFC 8323): §3.2 framing, CSM/Ping/Pong/Release/Abort signaling, requests
 * through the shared request path, the connection's limits. One connection per input,
 * accepted by stream_accept on one end of a socketpair with the plain read/writev of tcp.c;
 * the harness is the peer on the other end, over the server and resources of
 * tests/unit/loopback.h (a fresh server per input, virtual clock).
 *
 * Input: FLAGS NCTL CTL[NCTL] STREAM. STREAM is written to the server in chunks, CTL[i]
 * says how the i-th is cut and what happens after it; past the CTL bytes FLAGS picks the
 * cut. Between chunks the loop runs and what the server wrote is read and checked (every
 * frame well formed; a CSM first, with our Max-Message-Size; nothing after an Abort or a
 * Release).
 *
 *   FLAGS bit 0      end by close() (else shutdown(SHUT_WR), still reading)
 *         bit 1      the server's socket takes little (SO_SNDBUF minimal): its queue fills
 *         bits 2-3   chunks past CTL: 0 the rest at once, 1 a byte each, 2 1-32 bytes
 *                    (pseudo-random, from the input), 3 five bytes each
 *         bit 4      keepalive on (tcp_keepalive=4, tcp_ping_timeout=2)
 *         bit 5      at the end the peer answers /d's deferred requests (else their
 *                    deadline does, 4 s)
 *         bit 6      /f answers 3000 bytes
 *         bit 7      before closing, the peer stays silent 8 s (reading): an Abort it saw
 *                    must have closed the connection by then
 *   NCTL  bits 0-5   how many CTL bytes
 *         bits 6-7   the end: 0, 3 the peer closes; 1 the listener goes (server_unlisten:
 *                    Release naming the other coap+tcp listener), then the peer closes;
 *                    2 the server stops with the connection open (Release with Hold-Off)
 *   CTL   bits 0-3   chunk size: 1 2 3 4 5 6 7 8 11 13 16 24 64 256 1024, 15: the rest
 *         bits 4-6   then: 0 -, 1 +1 s, 2 +5 s, 3 answer the oldest deferred request,
 *                    4 answer all, 5 notify /o and /f, 6 the chunk 16 times, 7 256 times
 *                    (one write: a burst the server may read whole; at most 256 KiB)
 *         bit 7      do not read what the server wrote this time
 *
 * Invariants: after the peer closes, the connection is gone within a few virtual seconds
 * (it owes nothing, or the deferred deadline / Abort grace passes): stream_count is 0 and
 * no connection session is left; session_audit is clean (after every chunk too); when the
 * listener goes, the connection goes at once; after the server stops no watcher of it is
 * left in the loop; ASan/LSan see nothing leaked. STREAM_FUZZ_LOG=1 keeps the server's log.
 */
#include "connfuzz.h"
#include "log.h"

/* ---- the endpoint: tcp.c's transport without the listening socket (and its plain I/O) */

static const struct transport sf_transport = {
    .scheme = "coap+tcp",
    .ml = &stream_layer,
    .send = stream_send,
    .flush = stream_flush,
    .close = cf_close,
    .detach = stream_detach,
};

/* ---- the peer: what the server writes, checked frame by frame ----------------------- */

struct peer_side {
    int fd;
    uint8_t buf[65536 + 16];    /* a frame of the server's not whole yet */
    size_t len;
    unsigned frames;
    int aborted;                /* its Abort came */
    int released, alt, hold_off;    /* its Release came, with Alternative-Address, Hold-Off */
};

static void
out_frames(struct peer_side *ps)
{
    size_t off = 0;

    while (ps->len - off >= 1) {
        const uint8_t *p = ps->buf + off;
        size_t n = ps->len - off, len = p[0] >> 4, tkl = p[0] & 15, x, hl;
        uint64_t body;
        struct msg m = {0};
        unsigned cls;

        CHECKF(tkl <= 8, "server sent TKL %zu", tkl);
        x = len < 13 ? 0 : len == 13 ? 1 : len == 14 ? 2 : 4;
        if (n < 2 + x)
            break;
        body = x == 0 ? len : x == 1 ? 13u + p[1] : x == 2 ? 269u + ((unsigned)p[1] << 8 | p[2])
             : 65805u + ((uint64_t)p[1] << 24 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 8 | p[4]);
        hl = 2 + x;
        CHECKF(hl + tkl + body <= sizeof ps->buf, "server frame of %llu bytes",
               (unsigned long long)(hl + tkl + body));
        if (n < hl + tkl + body)
            break;
        m.code = p[hl - 1];
        m.tkl = (uint8_t)tkl;
        CHECKF(msg_parse_body(&m, p + hl + tkl, p + hl + tkl + body) == MSG_OK,
               "server frame %u (code %#x) does not parse", ps->frames, m.code);
        cls = MSG_CLASS(m.code);
        CHECKF(!ps->aborted && !ps->released, "server frame %u (code %#x) after its %s",
               ps->frames, m.code, ps->aborted ? "Abort" : "Release");
        if (ps->frames == 0) {
            struct msg_opt o;

            CHECKF(m.code == MSG_CODE(7, 1), "server's first frame is %#x, not CSM", m.code);
            CHECKF(msg_find(&m, 2, &o) && msg_uint(o.val, o.len) == 2048,
                   "server CSM without Max-Message-Size 2048");
        } else {
            CHECKF(cls == 2 || cls == 4 || cls == 5 || (cls == 7 && m.code != MSG_CODE(7, 1) &&
                                                        m.code <= MSG_CODE(7, 5)),
                   "server frame %u has code %#x", ps->frames, m.code);
        }
        if (m.code == MSG_CODE(7, 5))
            ps->aborted = 1;
        if (m.code == MSG_CODE(7, 4)) {
            struct msg_opt o;

            ps->released = 1;
            ps->alt = msg_find(&m, 2, &o) && o.len == 10 && !memcmp(o.val, "[::1]:5683", 10);
            ps->hold_off = msg_find(&m, 4, &o) != NULL;
        }
        ps->frames++;
        off += hl + tkl + body;
    }
    memmove(ps->buf, ps->buf + off, ps->len - off);
    ps->len -= off;
}

static void
drain(struct peer_side *ps)
{
    for (;;) {
        ssize_t n;

        if (ps->fd < 0)
            return;
        n = recv(ps->fd, ps->buf + ps->len, sizeof ps->buf - ps->len, MSG_DONTWAIT);
        if (n <= 0)
            return;
        ps->len += (size_t)n;
        out_frames(ps);
    }
}

static void
drain_cb(struct lo *lo, void *ps)
{
    (void)lo;
    drain(ps);
}

/* ---- the input ---------------------------------------------------------------------- */

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const opts[] = {"tcp_max_message=2048", "tcp_inflight=2",
                                       "tcp_write_bytes=4096", "tcp_csm_timeout=3",
                                       "tcp_keepalive=0", "tcp_ping_timeout=2",
                                       "defer_deadline=4", "block_idle=3",
                                       "block2_bytes=8000", "block1_bytes=6000", NULL};
    static struct peer_side ps;
    struct cf_client cl = {&ps.fd, drain_cb, &ps, 0};
    const uint8_t *end = data + size, *ctl, *s;
    unsigned flags, nctl, end_mode;
    uint32_t rng;
    struct lo *lo;
    struct endpoint *ep, *ep2;
    int sv[2];

    if (size < 2)
        return 0;
    if (getenv("STREAM_FUZZ_LOG") == NULL)  /* Aborts and 5.03s are the point: silent */
        log_set_level(MOONLET_LOG_ERROR - 2);
    flags = data[0];
    nctl = data[1] & 63;
    end_mode = data[1] >> 6;
    if (nctl > size - 2)
        nctl = (unsigned)(size - 2);
    ctl = data + 2;
    s = ctl + nctl;
    rng = 0x9E3779B9u ^ (uint32_t)size * 2654435761u ^ flags;

    if ((lo = lo_start(opts)) == NULL || (ep = calloc(1, sizeof *ep)) == NULL ||
        (ep2 = calloc(1, sizeof *ep2)) == NULL)
        abort();
    if (flags & 16) {
        lo->srv.cfg.tcp_keepalive = 4;
        lo->srv.cfg.tcp_ping_timeout = 2;
    }
    lo->f_big = flags >> 6 & 1;
    ep->tp = &sf_transport;
    ep->srv = &lo->srv;
    ep->fd = -1;
    snprintf(ep->name, sizeof ep->name, "coap+tcp://fuzz");
    *ep2 = *ep;                 /* another listener of the kind: a Release names it */
    snprintf(ep2->name, sizeof ep2->name, "coap+tcp://[::1]:5683");
    ep2->next = lo->srv.endpoints;
    ep->next = ep2;
    lo->srv.endpoints = ep;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    if (flags & 2) {
        int one = 1;

        setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &one, sizeof one);
    }
    ps.fd = sv[1];
    ps.len = 0;
    ps.frames = 0;
    ps.aborted = ps.released = ps.alt = ps.hold_off = 0;
    CHECK(stream_accept(ep, sv[0], &lo->peers[0], &tcp_plain_io, NULL) != NULL);
    lo_run(lo);
    drain(&ps);
    CHECK(ps.frames == 1);      /* our CSM went at once */

    cf_feed(lo, &cl, ctl, nctl, flags, rng, s, end, 1);

    if (flags & 128) {          /* silent: an Abort's grace, or the keepalive, runs out */
        cf_silent(lo, &cl, &ps.aborted);
        CHECKF(!ps.aborted || stream_count(&lo->srv) == 0,
               "connection still open 8 s after its Abort");
    }

    if (end_mode == 1 && stream_count(&lo->srv)) {
        /* the listener goes (a reload removed it): Release naming the other one, at once */
        server_unlisten(&lo->srv, ep);
        CHECK(stream_count(&lo->srv) == 0);
        audit(lo);
        drain(&ps);
        CHECKF(ps.aborted || ps.released || (flags & 2) || cl.undrained,
               "no Release as the listener closed");
        CHECKF(!ps.released || ps.alt, "Release without Alternative-Address");
    } else if (end_mode == 2 && stream_count(&lo->srv)) {
        /* the server stops: Release with Hold-Off, best effort */
        lo_stop(lo);
        stopped();
        drain(&ps);
        CHECKF(!ps.released || ps.hold_off, "Release without Hold-Off as the server stops");
        close(sv[1]);
        return 0;
    }

    /* the peer goes: the connection follows once it owes nothing */
    cf_client_goes(lo, &cl, flags & 1, flags & 32);
    if (ps.fd >= 0)
        close(sv[1]);
    answer_all(lo);
    lo_stop(lo);
    stopped();
    return 0;
}
