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
#include <sys/socket.h>

#include "fuzz.h"
#include "loopback.h"
#include "stream.h"

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

#endif
