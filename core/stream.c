/*
 * stream.c -- CoAP over reliable transports (RFC 8323): the message layer of TCP and TLS.
 *
 * A connection carries framed messages (§3.2) without types or Message IDs: requests go
 * to the shared request path (answer.c) and their answers come back framed; Observe
 * notifications are never confirmable (§7) -- the transport is. Signaling (§5): both
 * sides open with a CSM (ours goes as soon as the connection is accepted), Ping is
 * answered by Pong, Release closes once what is in flight is answered, Abort at once.
 *
 * What a peer can make us hold is bounded: a frame not whole yet is buffered only up to
 * our Max-Message-Size (the length field is checked before anything is allocated),
 * bytes queued for a peer that does not read stop our reading from it and, past twice
 * the bound, close it; a connection silent before its CSM, or dead to a Ping, is closed;
 * connections count against a total and a per-address limit. An idle connection holds
 * its struct and its session, nothing else: buffers exist only while they hold bytes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "answer.h"
#include "block.h"
#include "layer.h"
#include "log.h"
#include "observe.h"
#include "server.h"
#include "session.h"
#include "stream.h"

/* signaling codes (§5.2) and their options (§5.3-§5.6) */
#define SIG_CSM MSG_CODE(7, 1)
#define SIG_PING MSG_CODE(7, 2)
#define SIG_PONG MSG_CODE(7, 3)
#define SIG_RELEASE MSG_CODE(7, 4)
#define SIG_ABORT MSG_CODE(7, 5)
#define OPT_MAX_MESSAGE_SIZE 2
#define OPT_BLOCK_WISE_TRANSFER 4
#define OPT_CUSTODY 2
#define OPT_ALTERNATIVE_ADDRESS 2
#define OPT_HOLD_OFF 4
#define OPT_BAD_CSM_OPTION 2

#define MMS_DEFAULT 1152        /* §5.3.1: until the peer's CSM says otherwise */
#define FRAME_HEAD_MAX 6        /* Len/TKL, up to 4 bytes of extended length, Code */
#define STREAM_IO 65536         /* bytes read at once; bytes written in one batch */
#define ADDR_BUCKETS 1024
#define ABORT_GRACE 1.0         /* s an Abort's peer has to read it before we close */
/* what a block answer carries besides its payload (header, token, ETag, Block2, Size2,
 * Content-Format, Max-Age, the marker) and a handler's own options: room to spare */
#define BERT_OVERHEAD 128

struct conn {
    struct conn *next, *prev;   /* the server's connections */
    struct server *srv;
    struct endpoint *ep;
    struct session *sess;
    const struct stream_io *io;
    void *io_state;
    ev_io w;
    ev_timer timer;             /* CSM deadline, keepalive, the Pong's, the goodbye's */
    struct peer peer;
    struct addr_count *addr;    /* the count of its peer's address */
    ev_tstamp last_rx;          /* a whole message came (the keepalive's idle time runs
                                 * from it) */
    uint8_t *rbuf;              /* a frame not whole yet (rlen bytes), else NULL */
    uint8_t *wbuf;              /* bytes the socket has not taken yet, from woff */
    uint8_t *paused;            /* bytes read but not handled: tcp_inflight answers owed */
    uint32_t npaused;
    uint32_t rlen, rcap, wlen, woff, wcap;
    uint32_t peer_mms;          /* the peer's Max-Message-Size (§5.3.1) */
    unsigned inflight;          /* deferred answers still owed */
    int fd;
    uint8_t hs;                 /* the TLS handshake is not done yet */
    uint8_t csm;                /* the peer's CSM came */
    uint8_t bwt;                /* it supports block-wise transfer (§5.3.2) */
    uint8_t pinged;             /* our keepalive Ping waits for its Pong */
    uint8_t closing;            /* Release or end of stream: no new requests */
    uint8_t dying;              /* Abort sent: reading only to discard, then close */
};

struct addr_count {
    struct addr_count *next;
    struct peer addr;           /* port 0 */
    unsigned n;
};

struct stream_state {
    struct conn *conns;
    unsigned count;
    struct addr_count *addrs[ADDR_BUCKETS];
    struct conn *batch;         /* the connection being read: its answers gather in tx */
    size_t batch_len;
    uint8_t rx[STREAM_IO];
    uint8_t tx[STREAM_IO];
    uint8_t body[STREAM_IO];    /* one response's options and payload (BERT blocks) */
};

static void conn_close(struct conn *c);
static void send_csm(struct conn *c);
static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents);

static struct stream_state *
state(struct server *srv)
{
    if (srv->stream == NULL)
        srv->stream = calloc(1, sizeof(struct stream_state));
    return srv->stream;
}

unsigned
stream_count(const struct server *srv)
{
    const struct stream_state *st = srv->stream;

    return st ? st->count : 0;
}

int
stream_fd(const struct conn *c)
{
    return c->fd;
}

void *
stream_io_state(const struct conn *c)
{
    return c->io_state;
}

const struct peer *
stream_peer(const struct conn *c)
{
    return &c->peer;
}

struct endpoint *
stream_endpoint(const struct conn *c)
{
    return c->ep;
}

/* ---- per-address counts ---------------------------------------------------------- */

static struct addr_count **
addr_slot(struct stream_state *st, struct server *srv, const struct peer *a)
{
    struct addr_count **pp = &st->addrs[peer_hash(a, srv->sessions.key) % ADDR_BUCKETS];

    while (*pp && !peer_equal(&(*pp)->addr, a))
        pp = &(*pp)->next;
    return pp;
}

/* Count a connection from p's address; NULL when it has tcp_per_address already. */
static struct addr_count *
addr_take(struct stream_state *st, struct server *srv, const struct peer *p)
{
    struct peer a = *p;
    struct addr_count **pp, *ac;

    if (a.u.sa.sa_family == AF_INET6)
        a.u.in6.sin6_port = 0;
    else
        a.u.in.sin_port = 0;
    pp = addr_slot(st, srv, &a);
    if ((ac = *pp) == NULL) {
        if ((ac = calloc(1, sizeof *ac)) == NULL)
            return NULL;
        ac->addr = a;
        *pp = ac;
    }
    if (ac->n >= srv->cfg.tcp_per_address)
        return NULL;
    ac->n++;
    return ac;
}

static void
addr_put(struct stream_state *st, struct server *srv, struct addr_count *ac)
{
    struct addr_count **pp;

    if (--ac->n)
        return;
    pp = addr_slot(st, srv, &ac->addr);
    *pp = ac->next;
    free(ac);
}

/* ---- output --------------------------------------------------------------------- */

/* Keep bytes the socket did not take, after what is queued already. -1: past twice
 * tcp_write_bytes (a peer that does not read), or no memory. */
static int
queue(struct conn *c, const uint8_t *p, size_t len)
{
    size_t need = c->wlen - c->woff + len;

    if (need > 2 * c->srv->cfg.tcp_write_bytes)
        return -1;
    if (c->woff && c->wlen + len > c->wcap) {   /* slide what is left to the front */
        memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
        c->wlen -= c->woff;
        c->woff = 0;
    }
    if (c->wlen + len > c->wcap) {
        size_t cap = c->wcap ? c->wcap : 4096;
        uint8_t *nb;

        while (cap < c->wlen + len)
            cap *= 2;
        if ((nb = realloc(c->wbuf, cap)) == NULL)
            return -1;
        c->wbuf = nb;
        c->wcap = (uint32_t)cap;
    }
    memcpy(c->wbuf + c->wlen, p, len);
    c->wlen += (uint32_t)len;
    return 0;
}

/* Bytes waiting to go: the connection's buffer and what its I/O holds. */
static size_t
unsent(struct conn *c)
{
    return c->wlen - c->woff + (c->io->queued ? c->io->queued(c, c->io_state) : 0);
}

/* Which events c waits for: to write while bytes are queued; to read unless it is
 * closing, waits for tcp_inflight answers or has more queued than tcp_write_bytes. */
static void
arm(struct conn *c)
{
    struct server *srv = c->srv;
    int ev = 0;

    /* dying >= 2: it goes at the next turn (a writable socket says so at once) */
    if (c->wlen > c->woff || c->dying >= 2 ||
        (c->io->want_write && c->io->want_write(c, c->io_state)))
        ev |= EV_WRITE;
    if (c->hs)
        ev |= EV_READ;
    else if (c->dying || (!c->closing && c->inflight < srv->cfg.tcp_inflight && !c->paused &&
                          unsent(c) <= srv->cfg.tcp_write_bytes))
        ev |= EV_READ;
    if (ev == (c->w.events & (EV_READ | EV_WRITE)) && ev_is_active(&c->w))
        return;
    ev_io_stop(srv->loop, &c->w);
    ev_io_set(&c->w, c->fd, ev);
    if (ev)
        ev_io_start(srv->loop, &c->w);
}

/* Write iov now if nothing waits before it, and keep what the socket does not take. */
static int
put(struct conn *c, struct iovec *iov, int n)
{
    ssize_t done = 0;

    if (c->wlen == c->woff) {
        c->wlen = c->woff = 0;
        if ((done = c->io->writev(c, c->io_state, iov, n)) < 0)
            return -1;
    }
    for (int i = 0; i < n; i++) {
        size_t skip = (size_t)done < iov[i].iov_len ? (size_t)done : iov[i].iov_len;

        done -= (ssize_t)skip;
        if (skip < iov[i].iov_len &&
            queue(c, (const uint8_t *)iov[i].iov_base + skip, iov[i].iov_len - skip) < 0)
            return -1;
    }
    return 0;
}

/* The batch of the connection being read goes out: one write for all its answers. */
static void
batch_flush(struct stream_state *st)
{
    struct conn *c = st->batch;
    struct iovec iov = {st->tx, st->batch_len};

    st->batch_len = 0;
    if (c && iov.iov_len && put(c, &iov, 1) < 0)
        c->dying = 2;           /* closed by the reader when it is done */
}

/* Send one message: its pieces are gathered into the batch while c is being read (the
 * answers to a burst of pipelined requests leave in one write), else written now. */
static void
out(struct conn *c, struct iovec *iov, int n)
{
    struct stream_state *st = c->srv->stream;
    size_t len = 0;

    if (c->dying)
        return;
    for (int i = 0; i < n; i++)
        len += iov[i].iov_len;
    c->sess->last = ev_now(c->srv->loop);
    if (st->batch == c && !c->io->messages) {
        if (st->batch_len + len > sizeof st->tx)
            batch_flush(st);
        if (len <= sizeof st->tx) {
            for (int i = 0; i < n; i++) {
                memcpy(st->tx + st->batch_len, iov[i].iov_base, iov[i].iov_len);
                st->batch_len += iov[i].iov_len;
            }
            return;
        }
    }
    if (put(c, iov, n) < 0) {
        /* it goes from its own callback: out() runs under fan-outs and pendings */
        c->dying = 2;
        if (st->batch != c)
            ev_feed_event(c->srv->loop, &c->w, EV_WRITE);
        return;
    }
    if (st->batch != c)
        arm(c);
}

/* §3.2: Len/TKL, the extended length, Code. Returns the header's length. */
static size_t
frame_head(uint8_t *h, size_t body, unsigned tkl, unsigned code)
{
    size_t n = 1;

    if (body < 13) {
        h[0] = (uint8_t)(body << 4 | tkl);
    } else if (body < 269) {
        h[0] = (uint8_t)(13 << 4 | tkl);
        h[n++] = (uint8_t)(body - 13);
    } else if (body < 65805) {
        h[0] = (uint8_t)(14 << 4 | tkl);
        h[n++] = (uint8_t)((body - 269) >> 8);
        h[n++] = (uint8_t)(body - 269);
    } else {
        uint32_t v = (uint32_t)(body - 65805);

        h[0] = (uint8_t)(15 << 4 | tkl);
        h[n++] = (uint8_t)(v >> 24);
        h[n++] = (uint8_t)(v >> 16);
        h[n++] = (uint8_t)(v >> 8);
        h[n++] = (uint8_t)v;
    }
    h[n++] = (uint8_t)code;
    return n;
}

/* One message: code, token, body (options and payload). */
static void
send_msg(struct conn *c, unsigned code, const uint8_t *token, unsigned tkl,
         const uint8_t *body, size_t len)
{
    uint8_t h[FRAME_HEAD_MAX + MSG_TOKEN_MAX];
    size_t hl;

    if (c->io->messages) {      /* §4.4: Len 0, no extended length: the frame says it */
        h[0] = (uint8_t)tkl;
        h[1] = (uint8_t)code;
        hl = 2;
    } else {
        hl = frame_head(h, len, tkl, code);
    }
    struct iovec iov[2] = {{h, hl + tkl}, {(void *)body, len}};

    if (tkl)
        memcpy(h + hl, token, tkl);
    metrics_out(&c->srv->m, c->ep->tp->metric, MSG_CLASS(code) == 7 ? MK_SIGNAL : MK_MSG,
                hl + tkl + len);
    out(c, iov, len ? 2 : 1);
}

/* A signaling message with at most one option (num, value) and a diagnostic payload. */
static void
send_signal(struct conn *c, unsigned code, const uint8_t *token, unsigned tkl, unsigned num,
            const void *val, size_t vlen, const char *diag)
{
    uint8_t b[160];
    struct msg_wr w;
    long n;

    msg_wr_body_init(&w, b, sizeof b);
    if (num)
        msg_wr_opt(&w, num, val, vlen);
    if (diag)
        msg_wr_payload(&w, diag, strlen(diag));
    if ((n = msg_wr_end(&w)) >= 0)
        send_msg(c, code, token, tkl, b, (size_t)n);
}

/* A response to a request of c: resp framed under its token, within the peer's
 * Max-Message-Size (a larger one becomes 5.00: §5.3.1). RFC 7967 §2 applies here too. */
static void
send_resp(struct conn *c, struct moonlet_resp *resp, const uint8_t *token, unsigned tkl,
          unsigned no_response)
{
    struct stream_state *st = c->srv->stream;
    unsigned cls = MSG_CLASS(resp->code);
    size_t room = c->peer_mms - FRAME_HEAD_MAX - tkl;
    long n;

    if ((cls == 2 && (no_response & 2)) || (cls == 4 && (no_response & 8)) ||
        (cls == 5 && (no_response & 16)))
        return;
    n = resp_body(resp, st->body, room < sizeof st->body ? room : sizeof st->body);
    if (n < 0) {
        log_warn("response does not fit the peer's Max-Message-Size (%u bytes); sent 5.00",
                 c->peer_mms);
        resp_simple(resp, MSG_CODE(5, 0), NULL);
        n = resp_body(resp, st->body, sizeof st->body);
    }
    send_msg(c, resp->code, token, tkl, st->body, (size_t)n);
}

/* §5.6: Abort, with what went wrong (and the CSM option we refuse); then c goes once the
 * peer has had a moment to read it. */
static void
abort_conn(struct conn *c, unsigned bad_option, const char *why)
{
    char pb[64];
    uint8_t v[4];
    size_t vl = msg_uint_enc(v, bad_option);

    log_info("%s: %s: Abort", peer_str(&c->peer, pb, sizeof pb), why);
    if (c->dying)
        return;
    send_signal(c, SIG_ABORT, NULL, 0, bad_option ? OPT_BAD_CSM_OPTION : 0, v, vl, why);
    c->dying = 1;
    /* the peer has ABORT_GRACE seconds to read it and close; then we do */
    ev_timer_stop(c->srv->loop, &c->timer);
    ev_timer_set(&c->timer, ABORT_GRACE, 0);
    ev_timer_start(c->srv->loop, &c->timer);
}

/* ---- input ---------------------------------------------------------------------- */

static void
csm_in(struct conn *c, const struct msg *m)
{
    struct msg_iter it;
    struct msg_opt o;

    msg_iter_init(&it, m);
    while (msg_iter_next(&it, &o)) {
        if (o.num == OPT_MAX_MESSAGE_SIZE) {
            uint32_t v = msg_uint(o.val, o.len);

            /* never more than we can frame at once; never less than a header */
            c->peer_mms = v > STREAM_IO ? STREAM_IO : v < 64 ? 64 : v;
        } else if (o.num == OPT_BLOCK_WISE_TRANSFER) {
            c->bwt = 1;
        } else if (o.num & 1) {
            /* §5.3: an unknown critical option in a CSM: Abort naming it */
            abort_conn(c, o.num, "unsupported critical CSM option");
            return;
        }
    }
    if (!c->csm) {
        c->csm = 1;
        ev_timer_stop(c->srv->loop, &c->timer);     /* the keepalive takes over */
        if (c->srv->cfg.tcp_keepalive > 0) {
            ev_timer_set(&c->timer, c->srv->cfg.tcp_keepalive, 0);
            ev_timer_start(c->srv->loop, &c->timer);
        }
    }
}

static void
signal_in(struct conn *c, const struct msg *m)
{
    switch (m->code) {
    case SIG_CSM:
        csm_in(c, m);
        return;
    case SIG_PING: {
        /* §5.4: Pong, with Custody when the Ping asked for it and nothing of the peer's
         * is still being answered */
        struct msg_opt o;
        int custody = msg_find(m, OPT_CUSTODY, &o) && c->inflight == 0;

        send_signal(c, SIG_PONG, m->token, m->tkl, custody ? OPT_CUSTODY : 0, NULL, 0, NULL);
        return;
    }
    case SIG_PONG:
        c->pinged = 0;
        return;
    case SIG_RELEASE:
        /* §5.5: the peer goes; what it asked before is still answered, then we close */
        c->closing = 1;
        return;
    case SIG_ABORT:
        c->dying = 3;           /* §5.6: at once, nothing more is sent */
        return;
    default:
        /* §5: a signaling code we do not know; its options could be critical to it, so
         * the message is not understood as a whole: Abort */
        abort_conn(c, 0, "unknown signaling code");
        return;
    }
}

static void
request_in(struct conn *c, struct msg *m)
{
    struct server *srv = c->srv;
    struct moonlet_req req;

    if (c->closing)
        return;                 /* §5.5: after Release, new requests are not served */
    c->sess->last = ev_now(srv->loop);
    memset(&req, 0, offsetof(struct moonlet_req, seg));
    req.srv = srv;
    req.sess = c->sess;
    req.m = m;
    /* §5.3.1: no answer larger than the peer takes; a block-wise one is cut to fit, or
     * is BERT blocks as large as it takes (§6) when its CSM said Block-Wise-Transfer */
    if (c->peer_mms < BERT_OVERHEAD + 1024)
        block_cap(&req.blk, c->peer_mms, m->tkl);
    if (!c->bwt)
        req.blk.whole = 1;      /* §5.3.2: it said nothing of block-wise: one answer */
    if (c->bwt) {
        req.blk.bert_ok = 1;
        if (c->peer_mms >= BERT_OVERHEAD + 1024)
            req.blk.bert = (uint16_t)((c->peer_mms - BERT_OVERHEAD) / 1024 * 1024);
    }
    resp_reset(&srv->resp);
    if (answer_dispatch(srv, &req, &srv->resp) == MOONLET_DEFERRED) {
        if (req.pd)
            c->inflight++;
        return;
    }
    send_resp(c, &srv->resp, m->token, m->tkl, req.no_response);
}

/* One whole frame: hl bytes of header (Len/TKL, extended length, Code), then the token
 * and the body. */
static void
frame_in(struct conn *c, const uint8_t *p, size_t len, size_t hl)
{
    struct msg m = {0};
    unsigned cls;

    /* a whole message, not a byte, is a sign of life: a peer that trickles a frame it
     * never finishes cannot answer the keepalive's Ping either (slowloris) */
    c->last_rx = ev_now(c->srv->loop);
    c->pinged = 0;
    m.type = MT_CON;            /* the request path's idea of "answer it": always */
    m.tkl = p[0] & 15;
    m.code = p[hl - 1];
    metrics_in(&c->srv->m, c->ep->tp->metric, MSG_CLASS(m.code) == 7 ? MK_SIGNAL : MK_MSG,
               len);
    m.token = p + hl;
    if (msg_parse_body(&m, p + hl + m.tkl, p + len) != MSG_OK) {
        abort_conn(c, 0, "message format error");   /* §3.2 via RFC 7252 §3 */
        return;
    }
    if (!c->csm && m.code != SIG_CSM) {
        abort_conn(c, 0, "first message must be CSM");  /* §5.3 */
        return;
    }
    cls = MSG_CLASS(m.code);
    if (m.code == 0)
        return;                 /* §3.4: an Empty message is ignored */
    if (cls == 7)
        signal_in(c, &m);
    else if (cls == 0)
        request_in(c, &m);
    else if (cls == 2 || cls == 4 || cls == 5)
        return;                 /* a response: we send no requests; no RST here (§3.4) */
    else
        abort_conn(c, 0, "reserved code class");
}

/* The length of the frame that starts at p (n bytes there): > 0 its total, 0 while its
 * header is not whole, -1 for a reserved TKL, -2 when it is longer than max. *hl: the
 * header's length. Nothing is allocated before this has said yes. */
static long
frame_len(const uint8_t *p, size_t n, size_t max, size_t *hl)
{
    static const uint8_t ext[4] = {1, 2, 4};
    unsigned len = p[0] >> 4, tkl = p[0] & 15, x = len < 13 ? 0 : ext[len - 13];
    uint64_t body;

    if (tkl > MSG_TOKEN_MAX)
        return -1;              /* RFC 7252 §3: 9-15 reserved (RFC 8974 not supported) */
    if (n < 2 + x)
        return 0;
    if (x == 0)
        body = len;
    else if (x == 1)
        body = 13u + p[1];
    else if (x == 2)
        body = 269u + ((unsigned)p[1] << 8 | p[2]);
    else
        body = 65805u + ((uint64_t)p[1] << 24 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 8 |
                         p[4]);
    *hl = 2 + x;
    if (*hl + tkl + body > max)
        return -2;
    return (long)(*hl + tkl + body);
}

/* Frames in n bytes just read: whole ones are handled where they lie; the last one, if
 * cut, is kept (its bytes only: never more than our Max-Message-Size). */
static void
feed(struct conn *c, const uint8_t *p, size_t n)
{
    size_t max = c->srv->cfg.tcp_max_message, hl = 0;

    while (n && !c->dying) {
        long total;

        if (c->inflight >= c->srv->cfg.tcp_inflight && c->rlen == 0) {
            /* as many answers owed as it may have: the rest waits, unread (resume) */
            uint8_t *keep = malloc(n);

            if (keep == NULL) {
                abort_conn(c, 0, "out of memory");
                return;
            }
            memcpy(keep, p, n);
            c->paused = keep;
            c->npaused = (uint32_t)n;
            return;
        }

        if (c->rlen) {          /* complete the kept frame first */
            size_t take;

            total = frame_len(c->rbuf, c->rlen, max, &hl);
            if (total == 0) {   /* its header: a byte at a time, it is at most 6 */
                take = 1;
            } else if (total < 0) {
                break;
            } else {
                take = (size_t)total - c->rlen;
                if (take > n)
                    take = n;
            }
            if (c->rlen + take > c->rcap) {
                size_t cap = total > 0 ? (size_t)total : FRAME_HEAD_MAX;
                uint8_t *nb = realloc(c->rbuf, cap);

                if (nb == NULL) {
                    abort_conn(c, 0, "out of memory");
                    return;
                }
                c->rbuf = nb;
                c->rcap = (uint32_t)cap;
            }
            memcpy(c->rbuf + c->rlen, p, take);
            c->rlen += (uint32_t)take;
            p += take;
            n -= take;
            total = frame_len(c->rbuf, c->rlen, max, &hl);
            if (total > 0 && (size_t)total == c->rlen) {
                frame_in(c, c->rbuf, c->rlen, hl);
                free(c->rbuf);  /* an idle connection holds no buffer */
                c->rbuf = NULL;
                c->rlen = c->rcap = 0;
            }
        } else {
            total = frame_len(p, n, max, &hl);
            if (total > 0 && (size_t)total <= n) {
                frame_in(c, p, (size_t)total, hl);
                p += total;
                n -= (size_t)total;
                continue;
            }
            if (total >= 0) {   /* cut: keep its first bytes */
                size_t cap = total > 0 ? (size_t)total : FRAME_HEAD_MAX;

                if ((c->rbuf = malloc(cap)) == NULL) {
                    abort_conn(c, 0, "out of memory");
                    return;
                }
                c->rcap = (uint32_t)cap;
                memcpy(c->rbuf, p, n);
                c->rlen = (uint32_t)n;
                return;
            }
        }
        if (total == -1) {
            abort_conn(c, 0, "reserved token length");
            return;
        }
        if (total == -2) {
            /* §5.3.1: larger than our CSM's Max-Message-Size */
            abort_conn(c, 0, "message exceeds Max-Message-Size");
            return;
        }
    }
}

void
stream_message(struct conn *c, const uint8_t *p, size_t len)
{
    if (c->dying)
        return;
    /* §4.4: the TCP header with Len 0 and no extended length: any other Len is a format
     * error, as is a TKL of 9-15 or a message too short for its token */
    if (len < 2 || p[0] >> 4 != 0) {
        abort_conn(c, 0, "message format error (WebSocket: Len must be 0)");
        return;
    }
    if ((p[0] & 15) > MSG_TOKEN_MAX) {
        abort_conn(c, 0, "reserved token length");
        return;
    }
    if (2u + (p[0] & 15) > len) {
        abort_conn(c, 0, "message format error");
        return;
    }
    frame_in(c, p, len, 2);
}

/* Has a closing connection answered everything it owes? Then it goes. */
static int
closing_done(struct conn *c)
{
    return (c->closing && c->inflight == 0 && unsent(c) == 0) || c->dying >= 2;
}

static void
read_some(struct conn *c)
{
    struct stream_state *st = c->srv->stream;

    st->batch = c;
    for (int i = 0; i < 4 && !c->closing && !c->paused && c->dying < 2; i++) {
        ssize_t n = c->io->read(c, c->io_state, st->rx, sizeof st->rx);

        if (n == -1)
            break;
        if (n <= 0) {           /* end of stream (a half-close) or an error */
            if (n == 0 && !c->dying) {
                c->closing = 1; /* what it asked is still answered (it may read) */
                break;
            }
            c->dying = 3;
            break;
        }
        if (c->dying)
            continue;           /* after our Abort: read only to let it go */
        feed(c, st->rx, (size_t)n);
        if ((size_t)n < sizeof st->rx)
            break;
    }
    batch_flush(st);
    st->batch = NULL;
}

/* Answers owed dropped below tcp_inflight: handle what was read meanwhile (from the
 * connection's own callback). */
static void
resume(struct conn *c)
{
    struct stream_state *st = c->srv->stream;
    uint8_t *p = c->paused;
    size_t n = c->npaused;

    c->paused = NULL;
    c->npaused = 0;
    st->batch = c;
    feed(c, p, n);
    batch_flush(st);
    st->batch = NULL;
    free(p);
}

static void
conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct conn *c = (struct conn *)((char *)w - offsetof(struct conn, w));

    (void)loop;
    if (c->hs) {
        int r = c->io->handshake(c, c->io_state);

        if (r < 0) {
            conn_close(c);
            return;
        }
        if (r == 0) {
            arm(c);
            return;
        }
        c->hs = 0;              /* the CSM deadline runs from here */
        ev_timer_stop(loop, &c->timer);
        ev_timer_set(&c->timer, c->srv->cfg.tcp_csm_timeout, 0);
        ev_timer_start(loop, &c->timer);
        send_csm(c);
        revents = EV_READ;      /* records may have come with the last flight */
    }
    if (c->paused && c->inflight < c->srv->cfg.tcp_inflight)
        resume(c);
    if (revents & EV_WRITE) {
        struct iovec iov = {c->wbuf ? c->wbuf + c->woff : NULL, c->wlen - c->woff};
        /* an empty write lets TLS finish a record it holds */
        ssize_t n = c->io->writev(c, c->io_state, &iov, 1);

        if (n < 0) {
            conn_close(c);
            return;
        }
        c->woff += (uint32_t)n;
        if (c->woff == c->wlen) {   /* drained: the buffer goes */
            free(c->wbuf);
            c->wbuf = NULL;
            c->wlen = c->woff = c->wcap = 0;
        }
    }
    if (revents & EV_READ)
        read_some(c);
    if (c->dying >= 2 || closing_done(c)) {
        conn_close(c);
        return;
    }
    arm(c);
    /* TLS: records read and decrypted beyond what one pass took; the socket will not say */
    if (c->io->buffered && c->io->buffered(c, c->io_state) && (c->w.events & EV_READ))
        ev_feed_event(loop, &c->w, EV_READ);
}

/* The connection's one timer: no CSM in time; the keepalive (Ping after tcp_keepalive
 * idle, closed if nothing comes within tcp_ping_timeout); an Abort's grace. */
static void
timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct conn *c = (struct conn *)((char *)w - offsetof(struct conn, timer));
    struct server *srv = c->srv;
    ev_tstamp now = ev_now(loop), idle;

    (void)revents;
    if (c->dying || c->hs) {
        if (c->hs) {
            char pb[64];

            log_info("%s: TLS handshake not done in time", peer_str(&c->peer, pb, sizeof pb));
        }
        conn_close(c);
        return;
    }
    if (!c->csm) {
        abort_conn(c, 0, "no CSM in time");
        arm(c);
        return;
    }
    if (c->pinged) {
        char pb[64];

        log_info("%s: no Pong to the keepalive Ping: closed", peer_str(&c->peer, pb,
                 sizeof pb));
        conn_close(c);
        return;
    }
    idle = now - c->last_rx;
    if (idle < srv->cfg.tcp_keepalive) {
        ev_timer_set(&c->timer, srv->cfg.tcp_keepalive - idle, 0);
    } else {
        send_signal(c, SIG_PING, NULL, 0, 0, NULL, 0, NULL);
        c->pinged = 1;
        ev_timer_set(&c->timer, srv->cfg.tcp_ping_timeout, 0);
    }
    ev_timer_start(loop, &c->timer);
}

/* ---- the connection ------------------------------------------------------------- */

/* §5.3: our CSM first, at once: the largest message we take (§5.3.1), and that we do
 * block-wise transfer (§5.3.2; BERT, §6). */
static void
send_csm(struct conn *c)
{
    struct msg_wr w;
    uint8_t b[16];

    msg_wr_body_init(&w, b, sizeof b);
    msg_wr_opt_uint(&w, OPT_MAX_MESSAGE_SIZE, (uint32_t)c->srv->cfg.tcp_max_message);
    msg_wr_opt(&w, OPT_BLOCK_WISE_TRANSFER, NULL, 0);
    send_msg(c, SIG_CSM, NULL, 0, b, (size_t)msg_wr_end(&w));
}

struct conn *
stream_accept(struct endpoint *ep, int fd, const struct peer *p, const struct stream_io *io,
              void *io_state)
{
    struct server *srv = ep->srv;
    struct stream_state *st = state(srv);
    struct addr_count *ac = NULL;
    struct conn *c = NULL;

    if (st == NULL || st->count >= srv->cfg.tcp_connections ||
        (ac = addr_take(st, srv, p)) == NULL || (c = calloc(1, sizeof *c)) == NULL ||
        (c->sess = session_of_conn(srv, ep, p, c)) == NULL) {
        srv->stats.overload++;
        if (ac)
            addr_put(st, srv, ac);
        free(c);
        if (io->free) {         /* its I/O state goes with the socket */
            struct conn tmp = {.io_state = io_state, .fd = fd};

            io->free(&tmp, io_state);
        }
        close(fd);
        return NULL;
    }
    c->srv = srv;
    c->ep = ep;
    c->fd = fd;
    c->io = io;
    c->io_state = io_state;
    c->peer = *p;
    c->addr = ac;
    c->peer_mms = MMS_DEFAULT;
    c->last_rx = ev_now(srv->loop);
    c->next = st->conns;
    if (st->conns)
        st->conns->prev = c;
    st->conns = c;
    st->count++;
    ev_init(&c->w, conn_io_cb);
    c->hs = io->handshake != NULL;
    ev_timer_init(&c->timer, timer_cb,
                  c->hs ? srv->cfg.tls_handshake_timeout : srv->cfg.tcp_csm_timeout, 0);
    ev_timer_start(srv->loop, &c->timer);
    if (!c->hs)
        send_csm(c);
    arm(c);
    return c;
}

/* Free c; its session goes too unless the core is dropping it already (detach). */
static void
conn_free(struct conn *c, int drop_session)
{
    struct server *srv = c->srv;
    struct stream_state *st = srv->stream;
    struct session *s = c->sess;

    if (st->batch == c)
        st->batch = NULL;
    ev_io_stop(srv->loop, &c->w);
    ev_timer_stop(srv->loop, &c->timer);
    if (c->prev)
        c->prev->next = c->next;
    else
        st->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    st->count--;
    addr_put(st, srv, c->addr);
    if (c->io->free)
        c->io->free(c, c->io_state);
    close(c->fd);
    free(c->rbuf);
    free(c->wbuf);
    free(c->paused);
    c->sess = NULL;
    if (s) {
        s->conn = NULL;
        if (drop_session)
            session_close(srv, s);  /* its observations and transfers end */
    }
    free(c);
}

static void
conn_close(struct conn *c)
{
    conn_free(c, 1);
}

/* §5.5: Release, as the server stops or c's listener goes (a SIGHUP removed it). Where
 * another listener of the same kind stays, its address is offered as Alternative-Address
 * (the authority of a URI, repeatable); when stopping, none is and Hold-Off says when to
 * try again. */
static void
release(struct conn *c)
{
    struct server *srv = c->srv;
    uint8_t b[512];
    struct msg_wr w;
    long n;

    msg_wr_body_init(&w, b, sizeof b);
    if (!srv->stopping) {
        for (struct endpoint *e = srv->endpoints; e; e = e->next) {
            const char *auth = strstr(e->name, "://");

            if (e != c->ep && e->tp == c->ep->tp && auth && strlen(auth + 3) <= 255 &&
                w.len + strlen(auth + 3) + 8 < sizeof b - 40)
                msg_wr_opt(&w, OPT_ALTERNATIVE_ADDRESS, auth + 3, strlen(auth + 3));
        }
    } else {
        msg_wr_opt_uint(&w, OPT_HOLD_OFF, 5);
    }
    const char *diag = srv->stopping ? "server stopping" : "listener closed";

    msg_wr_payload(&w, diag, strlen(diag));
    if ((n = msg_wr_end(&w)) >= 0)
        send_msg(c, SIG_RELEASE, NULL, 0, b, (size_t)n);
}

void
stream_detach(struct endpoint *ep, struct session *s)
{
    struct conn *c = s->conn;

    (void)ep;
    if (c == NULL)
        return;
    if (!c->dying && !c->hs)
        release(c);             /* before its handshake, there is no one to tell */
    /* what was queued for it (the 5.03 of its observations) goes if the socket takes it */
    if (c->wlen > c->woff) {
        struct iovec iov = {c->wbuf + c->woff, c->wlen - c->woff};

        c->io->writev(c, c->io_state, &iov, 1);
    }
    conn_free(c, 0);
}

void
stream_endpoint_close(struct endpoint *ep)
{
    struct stream_state *st = ep->srv->stream;

    if (st == NULL)
        return;
    for (struct conn *c = st->conns, *next; c; c = next) {
        next = c->next;
        if (c->ep != ep)
            continue;
        stream_detach(ep, c->sess);     /* Release, then it closes */
    }
}

void
stream_fini(struct server *srv)
{
    free(srv->stream);
    srv->stream = NULL;
}

int
stream_send(struct endpoint *ep, const struct peer *to, const uint8_t *buf, size_t len)
{
    (void)ep, (void)to, (void)buf, (void)len;
    return -1;                  /* a connection's messages go through its conn */
}

void
stream_flush(struct endpoint *ep)
{
    (void)ep;                   /* each connection writes its own */
}

/* ---- the request path's side (layer.h) ------------------------------------------ */

static void
stream_deferred(struct server *srv, moonlet_pending *pd)
{
    (void)srv, (void)pd;        /* nothing to acknowledge: the transport is reliable */
}

static void
stream_answer(struct server *srv, moonlet_pending *pd)
{
    struct conn *c = pd->sess->conn;
    struct stream_state *st = srv->stream;

    if (c == NULL)
        return;
    if (c->inflight)
        c->inflight--;
    send_resp(c, &pd->resp, pd->token, pd->tkl, pd->no_response);
    if (st->batch == c)
        return;
    /* closing, or resuming what waited unread: in its own callback, not under the feet
     * of the pending being answered (and not at all once the server stops) */
    if (c->dying >= 2 || closing_done(c) || (c->paused && c->inflight < srv->cfg.tcp_inflight))
        ev_feed_event(srv->loop, &c->w, EV_WRITE);
    else
        arm(c);
}

static void
stream_notify(struct server *srv, struct observer *o, unsigned code, const uint8_t *body,
              size_t n, int con, ev_tstamp now)
{
    struct conn *c = o->sess->conn;

    (void)srv, (void)con, (void)now;    /* §7: never confirmable; TCP paces */
    if (c)
        send_msg(c, code, o->token, o->tkl, body, n);
}

const struct msglayer stream_layer = {
    .reliable = 1,
    .deferred = stream_deferred,
    .answer = stream_answer,
    .notify = stream_notify,
};
