/*
 * connfuzz.h -- what the harnesses of connection transports share (stream_fuzz.c for
 * RFC 8323's TCP framing, ws_fuzz.c for WebSockets): a fake listener's close, writing an
 * input into the server's socket, and the invariants checked between chunks and at the
 * end. Both run one connection per input on tests/unit/loopback.h's server.
 */
#ifndef CONNFUZZ_H
#define CONNFUZZ_H

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz.h"
#include "loopback.h"
#include "observe.h"
#include "stream.h"
#include "tree.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
const char *__asan_default_options(void);

const char *
__asan_default_options(void)
{
    return "quarantine_size_mb=16";
}

/* The fake listener goes (it has no socket): its connections first. */
static void
cf_close(struct endpoint *ep)
{
    stream_endpoint_close(ep);
    free(ep);
}

/* Write p whole into fd (drain(lo, arg) reads what comes back when the socket is full);
 * -1 when the server is gone, or takes nothing more for a while (it is not reading: the
 * rest is dropped). */
static int
cf_put(struct lo *lo, int fd, const uint8_t *p, size_t n, void (*drain)(struct lo *, void *),
       void *arg)
{
    unsigned stuck = 0;

    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);

        if (w > 0) {
            p += w;
            n -= (size_t)w;
            stuck = 0;
            continue;
        }
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && ++stuck < 4) {
            drain(lo, arg);
            lo_run(lo);
            continue;
        }
        return -1;
    }
    return 0;
}

static void
answer_all(struct lo *lo)
{
    while (lo->npd)
        lo_answer(lo, 0);
}

static unsigned
conn_sessions(const struct lo *lo)
{
    unsigned n = 0;

    for (const struct session *s = lo->srv.sessions.pool[POOL_CONN].mru; s; s = s->next)
        n++;
    return n;
}

static void
audit(struct lo *lo)
{
    char why[256];

    CHECKF(session_audit(&lo->srv, why, sizeof why) == 0, "%s", why);
    CHECKF(conn_sessions(lo) == stream_count(&lo->srv), "%u connection sessions, %u connections",
           conn_sessions(lo), stream_count(&lo->srv));
}

/* After server_fini nothing of the server may still be armed in the (shared) loop: a
 * watcher left there (a pending's deadline, a connection's timer) would fire into freed
 * memory during a later input. */
static void
stopped(void)
{
    CHECKF(!ev_run(ev_default_loop(0), EVRUN_NOWAIT), "a watcher outlived the server");
}

/* The client side of one input: its socket, how to read what the server wrote. */
struct cf_client {
    int *fd;                            /* the harness's; -1 once closed */
    void (*drain)(struct lo *lo, void *arg);
    void *arg;
    int undrained;                      /* it left the server's bytes unread at some point */
};

#define CF_DRAIN(lo, cl) ((cl)->drain((lo), (cl)->arg))

/*
 * Write STREAM [s, end) to the server in chunks, as the CTL bytes and FLAGS say (both
 * harnesses' input format): CTL bits 0-3 the chunk's size (sizes[], 0: the rest), bits 4-6
 * what follows it (1 +1 s, 2 +5 s, 3 answer the oldest deferred request, 4 all of them, 5
 * notify /o and /f, 6 the chunk 16 times in one write, 7 op7: 256 times (op7_burst) or
 * +0.5 s), bit 7 leave the server's bytes unread this time; past the CTL bytes, FLAGS bits
 * 2-3 pick the cut (the rest, a byte, 1-32 pseudo-random bytes, five). Stops when the
 * connection is gone. session_audit after every chunk.
 */
static void
cf_feed(struct lo *lo, struct cf_client *cl, const uint8_t *ctl, unsigned nctl,
        unsigned flags, uint32_t rng, const uint8_t *s, const uint8_t *end, int op7_burst)
{
    static const unsigned sizes[16] = {1, 2, 3, 4, 5, 6, 7, 8, 11, 13, 16, 24, 64, 256, 1024, 0};
    static uint8_t burst[256 * 1024];
    unsigned ci = 0;
    int alive = 1;

    while (s < end && alive) {
        unsigned c = ci < nctl ? ctl[ci] : 0, op = c >> 4 & 7, repeat = 1;
        size_t n = (size_t)(end - s);

        if (ci < nctl) {
            if (sizes[c & 15] && sizes[c & 15] < n)
                n = sizes[c & 15];
            repeat = op == 6 ? 16 : op == 7 && op7_burst ? 256 : 1;
        } else {
            switch (flags >> 2 & 3) {
            case 1:
                n = 1;
                break;
            case 2:
                rng ^= rng << 13, rng ^= rng >> 17, rng ^= rng << 5;
                n = 1 + rng % 32;
                break;
            case 3:
                n = 5;
                break;
            }
            if (n > (size_t)(end - s))
                n = (size_t)(end - s);
        }
        ci++;
        if (repeat > 1) {       /* one write: the server may read it all at once */
            if (n > sizeof burst / repeat)
                n = sizeof burst / repeat;
            for (unsigned r = 0; r < repeat; r++)
                memcpy(burst + r * n, s, n);
            if (cf_put(lo, *cl->fd, burst, n * repeat, cl->drain, cl->arg) < 0)
                alive = 0;
        } else if (cf_put(lo, *cl->fd, s, n, cl->drain, cl->arg) < 0) {
            alive = 0;
        }
        s += n;
        lo_run(lo);
        switch (op) {
        case 1:
            lo_advance(lo, 1);
            break;
        case 2:
            lo_advance(lo, 5);
            break;
        case 3:
            lo_answer(lo, 0);
            break;
        case 4:
            answer_all(lo);
            break;
        case 5:
            observe_notify(&lo->srv, tree_find_path(lo->srv.tree, "/o"));
            lo->f_value++;
            observe_notify(&lo->srv, tree_find_path(lo->srv.tree, "/f"));
            lo_run(lo);
            break;
        case 7:
            if (!op7_burst)
                lo_advance(lo, 0.5);
            break;
        }
        if (!(c & 128))
            CF_DRAIN(lo, cl);
        else
            cl->undrained = 1;
        audit(lo);
        if (stream_count(&lo->srv) == 0)
            alive = 0;
    }
}

/* The client stays silent (reading) for 8 virtual seconds: deadlines run out. An Abort
 * may come late in them (deferred answers time out, the requests read meanwhile are
 * handled, one is malformed): when *aborted, 2 seconds more, past its grace. */
static void
cf_silent(struct lo *lo, struct cf_client *cl, const int *aborted)
{
    for (int t = 0; t < 16 && stream_count(&lo->srv); t++) {
        CF_DRAIN(lo, cl);
        lo_advance(lo, 0.5);
    }
    CF_DRAIN(lo, cl);
    for (int t = 0; t < 4 && *aborted && stream_count(&lo->srv); t++) {
        lo_advance(lo, 0.5);
        CF_DRAIN(lo, cl);
    }
}

/* The client goes (close, or shutdown(SHUT_WR) and still reading): the connection must
 * follow within 20 virtual seconds, once it owes nothing (answer: its deferred requests
 * are answered meanwhile, else their deadline ends them). */
static void
cf_client_goes(struct lo *lo, struct cf_client *cl, int close_it, int answer)
{
    if (close_it) {
        close(*cl->fd);
        *cl->fd = -1;
    } else {
        shutdown(*cl->fd, SHUT_WR);
    }
    for (int t = 0; t < 40 && stream_count(&lo->srv); t++) {
        CF_DRAIN(lo, cl);
        if (answer && t >= 1)
            answer_all(lo);
        lo_advance(lo, t == 0 ? 0 : 0.5);
        audit(lo);
    }
    CF_DRAIN(lo, cl);
    CHECKF(stream_count(&lo->srv) == 0, "connection still open 20 s after the client closed "
           "(%u deferred answers unsent)", lo->npd);
    audit(lo);
    CHECK(conn_sessions(lo) == 0);
}

#endif
