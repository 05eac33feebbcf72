/*
 * ws_fuzz.c -- libFuzzer harness for the WebSocket listener (core/ws.c, RFC 8323 §4): the
 * HTTP/1.1 request head (libhttp-parser), the upgrade at /.well-known/coap or a refusal,
 * GET /metrics, then WebSocket frames (libwslay) whose binary messages are CoAP messages in
 * the §4.4 format for the stream layer (core/stream.c). One connection per input, given to
 * ws_accept on one end of a socketpair as a coap+ws:// listener's accept would; the harness
 * is the client on the other end, over the server and resources of tests/unit/loopback.h (a
 * fresh server per input, virtual clock).
 *
 * Input: FLAGS NCTL CTL[NCTL] STREAM. STREAM is what the client sends, raw: the request
 * head, then (masked) frames; the seeds mask with the key 0, so a frame's payload is the
 * CoAP message as it is and mutation reaches it. It is written in chunks, CTL[i] says how
 * the i-th is cut and what happens after it; past the CTL bytes FLAGS picks the cut.
 * Between chunks the loop runs and what the server wrote is read and checked: one HTTP
 * answer (a known status; a refusal or /metrics with Connection: close and exactly its
 * Content-Length of body, then the end of the connection), and after a 101 WebSocket frames,
 * unmasked, binary ones each a well-formed §4.4 CoAP message, the first a CSM with our
 * Max-Message-Size; no data after a close frame, no CoAP message after an Abort or Release.
 *
 *   FLAGS bit 0      end by close() (else shutdown(SHUT_WR), still reading)
 *         bit 1      the server's socket takes little (SO_SNDBUF minimal): its queue fills
 *         bits 2-3   chunks past CTL: 0 the rest at once, 1 a byte each, 2 1-32 bytes
 *                    (pseudo-random, from the input), 3 five bytes each
 *         bit 4      keepalive on (tcp_keepalive=4, tcp_ping_timeout=2)
 *         bit 5      at the end the client answers /d's deferred requests (else their
 *                    deadline does, 4 s)
 *         bit 6      ws_origins=https://ok.example, metrics_token=s3cret,
 *                    metrics_address=::1 (this listener's: /metrics needs the token)
 *         bit 7      before closing, the client stays silent 8 s (reading): the upgrade
 *                    deadline (tls_handshake_timeout=3) or the keepalive may fire; a
 *                    connection that sent an Abort or a close frame, or no HTTP answer
 *                    at all, must be gone by then
 *   NCTL  bits 0-5   how many CTL bytes
 *         bits 6-7   the end: 0 the client closes; 1 the listener goes (server_unlisten:
 *                    Release, close 1001), then the client closes; 2 the server stops with
 *                    the connection open; 3 the client closes, and /metrics is served only
 *                    on 127.0.0.1 (metrics_address: not on this listener, 404)
 *   CTL   bits 0-3   chunk size: 1 2 3 4 5 6 7 8 11 13 16 24 64 256 1024, 15: the rest
 *         bits 4-6   then: 0 -, 1 +1 s, 2 +5 s, 3 answer the oldest deferred request,
 *                    4 answer all, 5 notify /o and /f, 6 the chunk 16 times (one write),
 *                    7 +0.5 s
 *         bit 7      do not read what the server wrote this time
 *
 * Invariants: after the client closes, the connection is gone within a few virtual seconds
 * (stream_count 0, no connection session left); session_audit is clean after every chunk;
 * when the listener goes, the connection goes at once; after the server stops no watcher of
 * it is left in the loop; ASan/LSan see nothing leaked. WS_FUZZ_LOG=1 keeps the server's log.
 */
#include "connfuzz.h"
#include "log.h"
#include "metrics.h"

/* ---- the endpoint: a coap+ws:// listener's transport without its listening socket ----- */

static const struct transport wf_transport = {
    .scheme = "coap+ws",
    .ml = &stream_layer,
    .metric = MT_WS,
    .send = stream_send,
    .flush = stream_flush,
    .close = cf_close,
    .detach = stream_detach,
};

/* ---- the client: what the server writes, checked ---------------------------------------- */

enum { S_HEAD, S_FRAMES, S_BODY };

struct peer_side {
    int fd;
    int state;                  /* S_* */
    unsigned status;            /* the HTTP answer's */
    size_t clen, body;          /* a refusal's (or /metrics') Content-Length, bytes seen */
    uint8_t buf[(1 << 17) + 16];    /* the head, or a frame, not whole yet */
    size_t len;
    unsigned msgs;              /* binary messages */
    int closed;                 /* the server's close frame came */
    int aborted, released;      /* its Abort, its Release came */
};

static size_t
find(const uint8_t *p, size_t n, const char *s)
{
    const uint8_t *q = memmem(p, n, s, strlen(s));

    return q ? (size_t)(q - p) : (size_t)-1;
}

/* The HTTP answer's head is whole in ps->buf (hl bytes with its blank line). */
static void
out_head(struct peer_side *ps, size_t hl)
{
    static const unsigned known[] = {101, 200, 400, 401, 403, 404, 405, 414, 426, 431, 503};
    const char *h = (const char *)ps->buf;
    unsigned ok = 0;
    size_t at;

    CHECKF(hl > 13 && memcmp(h, "HTTP/1.1 ", 9) == 0 && h[9] >= '1' && h[9] <= '5' &&
           h[12] == ' ', "server's answer starts %.*s", (int)(hl < 40 ? hl : 40), h);
    ps->status = (unsigned)(h[9] - '0') * 100 + (unsigned)(h[10] - '0') * 10 +
                 (unsigned)(h[11] - '0');
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        ok |= ps->status == known[i];
    CHECKF(ok, "server answered %u", ps->status);
    if (ps->status == 101) {
        CHECKF(find(ps->buf, hl, "\r\nSec-WebSocket-Protocol: coap\r\n") != (size_t)-1 &&
               find(ps->buf, hl, "\r\nSec-WebSocket-Accept: ") != (size_t)-1,
               "101 without Sec-WebSocket-Protocol or -Accept");
        ps->state = S_FRAMES;
        return;
    }
    CHECKF(find(ps->buf, hl, "\r\nConnection: close\r\n") != (size_t)-1,
           "%u without Connection: close", ps->status);
    at = find(ps->buf, hl, "\r\nContent-Length: ");
    CHECKF(at != (size_t)-1, "%u without Content-Length", ps->status);
    ps->clen = strtoul(h + at + 18, NULL, 10);
    CHECKF(ps->status != 426 || find(ps->buf, hl, "\r\nSec-WebSocket-Version: 13\r\n") !=
           (size_t)-1, "426 without Sec-WebSocket-Version");
    CHECKF(ps->status != 405 || find(ps->buf, hl, "\r\nAllow: GET\r\n") != (size_t)-1,
           "405 without Allow");
    ps->state = S_BODY;
    ps->body = 0;
}

/* A binary message of the server's: one CoAP message in the §4.4 format. */
static void
out_coap(struct peer_side *ps, const uint8_t *p, size_t n)
{
    struct msg m = {0};
    unsigned tkl, cls;

    CHECKF(n >= 2 && p[0] >> 4 == 0 && (p[0] & 15) <= 8 && 2u + (p[0] & 15) <= n,
           "server message %u is not in the §4.4 format (%zu bytes, first %#x)", ps->msgs, n,
           n ? p[0] : 0);
    tkl = p[0] & 15;
    m.code = p[1];
    m.tkl = (uint8_t)tkl;
    CHECKF(msg_parse_body(&m, p + 2 + tkl, p + n) == MSG_OK,
           "server message %u (code %#x) does not parse", ps->msgs, m.code);
    CHECKF(!ps->aborted && !ps->released, "server message %u (code %#x) after its %s",
           ps->msgs, m.code, ps->aborted ? "Abort" : "Release");
    cls = MSG_CLASS(m.code);
    if (ps->msgs == 0) {
        struct msg_opt o;

        CHECKF(m.code == MSG_CODE(7, 1), "server's first message is %#x, not CSM", m.code);
        CHECKF(msg_find(&m, 2, &o) && msg_uint(o.val, o.len) == 2048,
               "server CSM without Max-Message-Size 2048");
    } else {
        CHECKF(cls == 2 || cls == 4 || cls == 5 || (cls == 7 && m.code != MSG_CODE(7, 1) &&
                                                    m.code <= MSG_CODE(7, 5)),
               "server message %u has code %#x", ps->msgs, m.code);
    }
    if (m.code == MSG_CODE(7, 5))
        ps->aborted = 1;
    if (m.code == MSG_CODE(7, 4))
        ps->released = 1;
    ps->msgs++;
}

/* WebSocket frames from the server (RFC 6455 §5.2): never masked, no RSV bits, whole. */
static void
out_frames(struct peer_side *ps)
{
    size_t off = 0;

    while (ps->len - off >= 2) {
        const uint8_t *p = ps->buf + off;
        size_t n = ps->len - off, hl = 2;
        uint64_t plen = p[1] & 127;
        unsigned op = p[0] & 15;

        CHECKF((p[0] & 0x70) == 0, "server frame with RSV bits %#x", p[0]);
        CHECKF(!(p[1] & 0x80), "server frame masked");
        if (plen == 126) {
            if (n < 4)
                break;
            plen = (uint64_t)p[2] << 8 | p[3];
            hl = 4;
        } else if (plen == 127) {
            if (n < 10)
                break;
            plen = 0;
            for (int i = 0; i < 8; i++)
                plen = plen << 8 | p[2 + i];
            hl = 10;
        }
        CHECKF(plen <= sizeof ps->buf - hl, "server frame of %llu bytes",
               (unsigned long long)plen);
        if (n < hl + plen)
            break;
        CHECKF(!ps->closed, "server frame (opcode %u) after its close frame", op);
        switch (op) {
        case 2:
            CHECKF(p[0] & 0x80, "server message fragmented");
            out_coap(ps, p + hl, (size_t)plen);
            break;
        case 8:
            CHECKF(plen == 0 || plen >= 2, "server close frame of %llu bytes",
                   (unsigned long long)plen);
            ps->closed = 1;
            break;
        case 10:            /* a Pong to the client's Ping */
            break;
        default:
            CHECKF(0, "server frame with opcode %u", op);
        }
        off += hl + (size_t)plen;
    }
    memmove(ps->buf, ps->buf + off, ps->len - off);
    ps->len -= off;
}

static void
out_bytes(struct lo *lo, struct peer_side *ps)
{
    if (ps->state == S_HEAD) {
        size_t hl = find(ps->buf, ps->len, "\r\n\r\n");

        if (hl == (size_t)-1) {
            CHECKF(ps->len < 1024, "server's answer head longer than 1 KiB");
            return;
        }
        hl += 4;
        out_head(ps, hl);
        memmove(ps->buf, ps->buf + hl, ps->len - hl);
        ps->len -= hl;
    }
    if (ps->state == S_FRAMES) {
        out_frames(ps);
    } else if (ps->state == S_BODY) {
        ps->body += ps->len;
        ps->len = 0;
        CHECKF(ps->body <= ps->clen, "%u with %zu bytes of body, Content-Length %zu",
               ps->status, ps->body, ps->clen);
        /* the answer's last byte written, the connection is closed (plain socket) */
        CHECKF(ps->body < ps->clen || stream_count(&lo->srv) == 0,
               "connection still open after its %u", ps->status);
    }
}

static void
drain(struct lo *lo, struct peer_side *ps)
{
    for (;;) {
        ssize_t n;

        if (ps->fd < 0)
            return;
        n = recv(ps->fd, ps->buf + ps->len, sizeof ps->buf - ps->len, MSG_DONTWAIT);
        if (n <= 0)
            return;
        ps->len += (size_t)n;
        out_bytes(lo, ps);
    }
}

static void
drain_cb(struct lo *lo, void *ps)
{
    drain(lo, ps);
}

/* ---- the input ---------------------------------------------------------------------- */

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const opts[] = {"tcp_max_message=2048", "tcp_inflight=2",
                                       "tcp_write_bytes=4096", "tcp_csm_timeout=3",
                                       "tcp_keepalive=0", "tcp_ping_timeout=2",
                                       "tls_handshake_timeout=3", "defer_deadline=4",
                                       "block_idle=3", "block2_bytes=8000",
                                       "block1_bytes=6000", NULL};
    static struct peer_side ps;
    struct cf_client cl = {&ps.fd, drain_cb, &ps, 0};
    const uint8_t *end = data + size, *ctl, *s;
    unsigned flags, nctl, end_mode;
    uint32_t rng;
    struct lo *lo;
    struct endpoint *ep;
    int sv[2];

    if (size < 2)
        return 0;
    if (getenv("WS_FUZZ_LOG") == NULL)  /* refusals, closes and Aborts are the point */
        log_set_level(MOONLET_LOG_ERROR - 2);
    flags = data[0];
    nctl = data[1] & 63;
    end_mode = data[1] >> 6;
    if (nctl > size - 2)
        nctl = (unsigned)(size - 2);
    ctl = data + 2;
    s = ctl + nctl;
    rng = 0x9E3779B9u ^ (uint32_t)size * 2654435761u ^ flags;

    /* libev's ev_now is a wall clock it derives from the monotonic one, which is real
     * between inputs (the last ev_run of stopped) and virtual during one: read it on the
     * virtual clock before the server records its start (srv->started), else the uptime of
     * /metrics is negative (the real uptime before the virtual clock's jump back) */
    lo_virtual = 1;
    ev_now_update(ev_default_loop(0));
    if ((lo = lo_start(opts)) == NULL || (ep = calloc(1, sizeof *ep)) == NULL)
        abort();
    if (flags & 16) {
        lo->srv.cfg.tcp_keepalive = 4;
        lo->srv.cfg.tcp_ping_timeout = 2;
    }
    if (flags & 64) {
        snprintf(lo->srv.cfg.ws_origins, sizeof lo->srv.cfg.ws_origins,
                 "https://ok.example, http://[::1]:8080");
        snprintf(lo->srv.cfg.metrics_token, sizeof lo->srv.cfg.metrics_token, "s3cret");
        snprintf(lo->srv.cfg.metrics_address, sizeof lo->srv.cfg.metrics_address, "::1");
    }
    if (end_mode == 3)
        snprintf(lo->srv.cfg.metrics_address, sizeof lo->srv.cfg.metrics_address, "127.0.0.1");
    ep->tp = &wf_transport;
    ep->srv = &lo->srv;
    ep->fd = -1;
    snprintf(ep->name, sizeof ep->name, "coap+ws://[::1]:8683");
    ep->next = lo->srv.endpoints;
    lo->srv.endpoints = ep;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    if (flags & 2) {
        int one = 1;

        setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &one, sizeof one);
    }
    ps.fd = sv[1];
    ps.state = S_HEAD;
    ps.status = 0;
    ps.clen = ps.body = ps.len = 0;
    ps.msgs = 0;
    ps.closed = ps.aborted = ps.released = 0;
    ws_accept(ep, sv[0], &lo->peers[0]);
    CHECK(stream_count(&lo->srv) == 1);
    lo_run(lo);
    drain(lo, &ps);
    CHECK(ps.len == 0);         /* nothing before the request */

    cf_feed(lo, &cl, ctl, nctl, flags, rng, s, end, 0);

    if (flags & 128) {          /* silent: the upgrade's deadline, a close, an Abort's grace */
        cf_silent(lo, &cl, &ps.aborted);
        CHECKF(!ps.aborted || stream_count(&lo->srv) == 0,
               "connection still open 8 s after its Abort");
        CHECKF(!ps.closed || stream_count(&lo->srv) == 0,
               "connection still open 8 s after its close frame");
        CHECKF(ps.state != S_HEAD || ps.len > 0 || stream_count(&lo->srv) == 0,
               "connection without an answer still open 8 s after its deadline");
    }

    if (end_mode == 1 && stream_count(&lo->srv)) {
        /* the listener goes (a reload removed it): Release and a close 1001, at once */
        server_unlisten(&lo->srv, ep);
        CHECK(stream_count(&lo->srv) == 0);
        audit(lo);
        drain(lo, &ps);
    } else if (end_mode == 2 && stream_count(&lo->srv)) {
        lo_stop(lo);
        stopped();
        drain(lo, &ps);
        close(sv[1]);
        return 0;
    }

    /* the client goes: the connection follows once it owes nothing */
    cf_client_goes(lo, &cl, flags & 1, flags & 32);
    if (getenv("WS_FUZZ_LOG"))
        fprintf(stderr, "ws_fuzz: HTTP %u, %u CoAP messages%s%s%s\n", ps.status, ps.msgs,
                ps.closed ? ", close frame" : "", ps.aborted ? ", Abort" : "",
                ps.released ? ", Release" : "");
    if (ps.fd >= 0)
        close(sv[1]);
    answer_all(lo);
    lo_stop(lo);
    stopped();
    return 0;
}
