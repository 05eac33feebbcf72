/*
 * tcp.c -- coap+tcp:// listeners (RFC 8323 §8.1): a listening socket whose accepted
 * connections go to the stream message layer (stream.c) with plain socket I/O. Nagle is
 * off on every connection (TCP_NODELAY): an answer leaves when it is written, and the
 * stream layer writes a burst's answers at once.
 */
#include <errno.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "layer.h"
#include "log.h"
#include "server.h"
#include "stream.h"
#include "transport.h"

#define ACCEPTS 64              /* connections taken per wake-up before yielding */

static ssize_t
plain_read(struct conn *c, void *st, uint8_t *buf, size_t len)
{
    ssize_t n;

    (void)st;
    do
        n = recv(stream_fd(c), buf, len, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? -1 : -2;
    return n;
}

static ssize_t
plain_writev(struct conn *c, void *st, const struct iovec *iov, int n)
{
    struct msghdr mh = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n};
    ssize_t w;

    (void)st;
    if (n == 0)
        return 0;
    do
        w = sendmsg(stream_fd(c), &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (w < 0 && errno == EINTR);
    if (w < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
    return w;
}

const struct stream_io tcp_plain_io = {
    .read = plain_read,
    .writev = plain_writev,
};

static void
plain_accept(struct endpoint *ep, int fd, const struct peer *p)
{
    stream_accept(ep, fd, p, &tcp_plain_io, NULL);
}

struct tcp_ep {
    void (*accept)(struct endpoint *ep, int fd, const struct peer *p);
};

static void
accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct endpoint *ep = (struct endpoint *)((char *)w - offsetof(struct endpoint, io));
    struct tcp_ep *t = ep->impl;
    int one = 1;

    (void)loop, (void)revents;
    for (int i = 0; i < ACCEPTS; i++) {
        struct peer p = {.len = sizeof p.u};
        int fd = accept4(ep->fd, &p.u.sa, &p.len, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE)
                log_warn("%s: out of file descriptors", ep->name);
            return;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        t->accept(ep, fd, &p);
    }
}

void
tcp_unlisten(struct endpoint *ep)
{
    stream_endpoint_close(ep);
    ev_io_stop(ep->srv->loop, &ep->io);
    close(ep->fd);
    free(ep->impl);
    free(ep);
}

static const struct transport tcp_transport = {
    .scheme = "coap+tcp",
    .ml = &stream_layer,
    .metric = MT_TCP,
    .send = stream_send,
    .flush = stream_flush,
    .close = tcp_unlisten,
    .detach = stream_detach,
};

struct endpoint *
tcp_listen(struct server *srv, const struct transport *tp, const char *addr, unsigned port,
           void (*accept)(struct endpoint *ep, int fd, const struct peer *p), char *err,
           size_t errlen)
{
    struct endpoint *ep = NULL;
    struct tcp_ep *t = NULL;
    struct peer local;
    char pb[64], name[80];
    int fd;

    snprintf(name, sizeof name, strchr(addr, ':') ? "%s://[%s]:%u" : "%s://%s:%u",
             tp->scheme, addr, port);
    /* SO_REUSEADDR: a restart binds again while the old connections sit in TIME_WAIT */
    if ((fd = sock_bind(SOCK_STREAM, addr, port, 1, name, &local, err, errlen)) < 0)
        return NULL;
    if ((ep = calloc(1, sizeof *ep)) == NULL || (t = malloc(sizeof *t)) == NULL) {
        snprintf(err, errlen, "%s: out of memory", name);
        free(ep);
        close(fd);
        return NULL;
    }
    t->accept = accept;
    ep->impl = t;
    ep->tp = tp;
    ep->srv = srv;
    ep->fd = fd;
    snprintf(ep->name, sizeof ep->name, "%s://%s", tp->scheme, peer_str(&local, pb, sizeof pb));
    ev_io_init(&ep->io, accept_cb, fd, EV_READ);
    ev_io_start(srv->loop, &ep->io);
    return ep;
}

struct endpoint *
tcp_open(struct server *srv, const char *addr, unsigned port, char *err, size_t errlen)
{
    return tcp_listen(srv, &tcp_transport, addr, port, plain_accept, err, errlen);
}
