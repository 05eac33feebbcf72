/*
 * udp.c -- CoAP over UDP (RFC 7252): datagrams in with recvmmsg, out with sendmmsg.
 * Receive and send slots are preallocated; one sendmmsg per loop iteration (or per full
 * batch) carries every response of the datagrams read in that iteration.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "exchange.h"
#include "layer.h"
#include "log.h"
#include "server.h"
#include "transport.h"

#define UDP_BATCH 64
#define UDP_SLOT 2048       /* a larger request is answered 4.13 from its head (§4.6) */
#define UDP_READS 4         /* recvmmsg batches per wake-up before yielding to timers */

#ifndef IPV6_MULTICAST_ALL
#define IPV6_MULTICAST_ALL 29   /* Linux 4.20 */
#endif

/* A socket bound to one multicast group on one interface (RFC 7252 §8). */
struct mcast {
    struct mcast *next;
    struct endpoint *ep;        /* whose unicast socket answers */
    ev_io io;
    int fd;
    unsigned ifindex;           /* the interface it joined on */
};

struct udp {
    struct mcast *mc;
    struct mmsghdr rx[UDP_BATCH], tx[UDP_BATCH];
    struct iovec rxv[UDP_BATCH], txv[UDP_BATCH];
    struct peer rxa[UDP_BATCH], txa[UDP_BATCH];
    unsigned ntx;
    uint8_t rxbuf[UDP_BATCH][UDP_SLOT];
    uint8_t txbuf[UDP_BATCH][UDP_SLOT];
};

void
udp_flush(struct endpoint *ep)
{
    struct udp *u = ep->impl;
    unsigned done = 0;

    while (done < u->ntx) {
        int n = sendmmsg(ep->fd, u->tx + done, u->ntx - done, MSG_DONTWAIT);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            /* EAGAIN (socket buffer full) or a per-peer error: drop this one and go on;
             * CoAP's own retransmission covers a lost datagram */
            ep->srv->stats.dropped++;
            done++;
            continue;
        }
        done += (unsigned)n;
    }
    ep->srv->stats.tx += u->ntx;
    u->ntx = 0;
}

static int
udp_send(struct endpoint *ep, const struct peer *to, const uint8_t *buf, size_t len)
{
    struct udp *u = ep->impl;
    unsigned i;

    if (len > UDP_SLOT)
        return -1;
    if (u->ntx == UDP_BATCH)
        udp_flush(ep);
    i = u->ntx++;
    metrics_out(&ep->srv->m, MT_UDP, (buf[0] >> 4) & 3, len);
    memcpy(u->txbuf[i], buf, len);
    u->txa[i] = *to;
    u->txv[i].iov_len = len;
    u->tx[i].msg_hdr.msg_namelen = to->len;
    return 0;
}

int
udp_queue(struct endpoint *ep, const struct peer *to, const struct iovec *iov, int n)
{
    struct udp *u = ep->impl;
    size_t len = 0;
    unsigned i;

    for (int k = 0; k < n; k++)
        len += iov[k].iov_len;
    if (len > UDP_SLOT)
        return -1;
    if (u->ntx == UDP_BATCH)
        udp_flush(ep);
    i = u->ntx++;
    len = 0;
    for (int k = 0; k < n; k++) {
        memcpy(u->txbuf[i] + len, iov[k].iov_base, iov[k].iov_len);
        len += iov[k].iov_len;
    }
    u->txa[i] = *to;
    u->txv[i].iov_len = len;
    u->tx[i].msg_hdr.msg_namelen = to->len;
    return 0;
}

static void
udp_read(struct ev_loop *loop, ev_io *w, int revents)
{
    struct endpoint *ep = (struct endpoint *)((char *)w - offsetof(struct endpoint, io));
    struct udp *u = ep->impl;

    (void)loop, (void)revents;
    for (int round = 0; round < UDP_READS; round++) {
        int n;

        for (unsigned i = 0; i < UDP_BATCH; i++) {
            u->rx[i].msg_hdr.msg_namelen = sizeof u->rxa[i].u;
            u->rx[i].msg_hdr.msg_flags = 0;
        }
        /* MSG_TRUNC: msg_len is the datagram's real length, also when it did not fit */
        n = recvmmsg(ep->fd, u->rx, UDP_BATCH, MSG_DONTWAIT | MSG_TRUNC, NULL);
        if (n <= 0)
            break;
        for (int i = 0; i < n; i++) {
            ep->srv->stats.rx++;
            u->rxa[i].len = u->rx[i].msg_hdr.msg_namelen;
            if (u->rx[i].msg_hdr.msg_flags & MSG_TRUNC) {
                /* larger than a slot: its head is here, enough for a 4.13 (§5.9.2.9); a
                 * DTLS record cut short cannot be decrypted and is dropped */
                ep->srv->stats.truncated++;
                if (!ep->tp->secure)
                    exchange_oversize(ep, &u->rxa[i], u->rxbuf[i], UDP_SLOT,
                                      u->rx[i].msg_len);
                continue;
            }
            ep->tp->input(ep, &u->rxa[i], u->rxbuf[i], u->rx[i].msg_len);
        }
        udp_flush(ep);
        if (n < UDP_BATCH)
            break;
    }
}

void
udp_close(struct endpoint *ep)
{
    struct udp *u = ep->impl;

    while (u->mc) {
        struct mcast *m = u->mc;

        u->mc = m->next;
        ev_io_stop(ep->srv->loop, &m->io);
        close(m->fd);
        free(m);
    }
    ev_io_stop(ep->srv->loop, &ep->io);
    udp_flush(ep);
    close(ep->fd);
    free(ep->impl);
    free(ep);
}

static const struct transport udp_transport = {
    .scheme = "coap",
    .ml = &udp_layer,
    .metric = MT_UDP,
    .input = exchange_input,
    .send = udp_send,
    .flush = udp_flush,
    .close = udp_close,
};

static void
udp_slots(struct udp *u)
{
    for (unsigned i = 0; i < UDP_BATCH; i++) {
        u->rxv[i] = (struct iovec){u->rxbuf[i], UDP_SLOT};
        u->rx[i].msg_hdr = (struct msghdr){.msg_name = &u->rxa[i].u,
                                           .msg_namelen = sizeof u->rxa[i].u,
                                           .msg_iov = &u->rxv[i],
                                           .msg_iovlen = 1};
        u->txv[i] = (struct iovec){u->txbuf[i], 0};
        u->tx[i].msg_hdr = (struct msghdr){.msg_name = &u->txa[i].u, .msg_iov = &u->txv[i],
                                           .msg_iovlen = 1};
    }
}

/* A burst of requests waits in the socket buffer while we work; the kernel default
 * (~200 KiB) holds ~190 small datagrams. Ask for more, past net.core.rmem_max if we are
 * allowed to (SO_RCVBUFFORCE needs CAP_NET_ADMIN); 0 keeps the default. */
static void
rcvbuf(int fd, size_t want)
{
    int v = want > INT32_MAX / 2 ? INT32_MAX / 2 : (int)want, got = 0;
    socklen_t len = sizeof got;

    if (want == 0)
        return;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof v);
    getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &got, &len);
    if (got / 2 < v)    /* Linux reports twice the size asked for */
        setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &v, sizeof v);
}

struct endpoint *
udp_open(struct server *srv, const char *addr, unsigned port, char *err, size_t errlen)
{
    return udp_open_as(srv, &udp_transport, "udp", addr, port, err, errlen);
}

int
sock_bind(int type, const char *addr, unsigned port, int reuse, const char *name,
          struct peer *local, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_socktype = type, .ai_flags = AI_NUMERICHOST | AI_PASSIVE};
    struct addrinfo *ai = NULL;
    int fd, off = 0, one = 1, rc;

    if ((rc = getaddrinfo(addr, NULL, &hints, &ai)) != 0) {
        snprintf(err, errlen, "%s: bad address: %s", name, gai_strerror(rc));
        return -1;
    }
    memcpy(&local->u, ai->ai_addr, ai->ai_addrlen);
    local->len = ai->ai_addrlen;
    freeaddrinfo(ai);
    if (local->u.sa.sa_family == AF_INET6)
        local->u.in6.sin6_port = htons((uint16_t)port);
    else
        local->u.in.sin_port = htons((uint16_t)port);
    fd = socket(local->u.sa.sa_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    if (local->u.sa.sa_family == AF_INET6)  /* dual stack on "::" (v4-mapped peers) */
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
    if (reuse)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, &local->u.sa, local->len) < 0 || (type == SOCK_STREAM && listen(fd, 1024) < 0))
        goto fail;
    local->len = sizeof local->u;
    getsockname(fd, &local->u.sa, &local->len);
    return fd;
fail:
    if (errno == EADDRINUSE) /* from bind: say who, as the README promises */
        snprintf(err, errlen, "%s: address in use (another socket holds the port)", name);
    else
        snprintf(err, errlen, "%s: %s", name, strerror(errno));
    if (fd >= 0)
        close(fd);
    return -1;
}

struct endpoint *
udp_open_as(struct server *srv, const struct transport *tp, const char *prefix,
            const char *addr, unsigned port, char *err, size_t errlen)
{
    struct endpoint *ep;
    struct peer local;
    char pb[64], name[80];
    int fd, off = 0;

    snprintf(name, sizeof name, strchr(addr, ':') ? "%s://[%s]:%u" : "%s://%s:%u", prefix,
             addr, port);
    /* No SO_REUSEADDR: Linux lets a UDP bind share a port only when both sockets set it,
     * so this bind fails if anyone holds the port, with or without it, and nobody can
     * share it later (the last socket bound would take our unicast datagrams). The group
     * sockets need it for a moment: see udp_join. */
    if ((fd = sock_bind(SOCK_DGRAM, addr, port, 0, name, &local, err, errlen)) < 0)
        return NULL;
    rcvbuf(fd, srv->cfg.udp_rcvbuf);
    /* only the group sockets of udp_join get multicast: a wildcard-bound unicast socket
     * would otherwise receive every group some socket joined (Linux's default) */
    setsockopt(fd, IPPROTO_IP, IP_MULTICAST_ALL, &off, sizeof off);
    if (local.u.sa.sa_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_ALL, &off, sizeof off);
    ep = calloc(1, sizeof *ep);
    if (ep == NULL || (ep->impl = calloc(1, sizeof(struct udp))) == NULL) {
        snprintf(err, errlen, "%s: out of memory", name);
        free(ep);
        close(fd);
        return NULL;
    }
    udp_slots(ep->impl);
    ep->tp = tp;
    ep->srv = srv;
    ep->fd = fd;
    snprintf(ep->name, sizeof ep->name, "%s://%s", prefix, peer_str(&local, pb, sizeof pb));
    ev_io_init(&ep->io, udp_read, fd, EV_READ);
    ev_io_start(srv->loop, &ep->io);
    return ep;
}

/* ---- multicast (RFC 7252 §8) ------------------------------------------------------- */

static void
mc_read(struct ev_loop *loop, ev_io *w, int revents)
{
    struct mcast *m = (struct mcast *)((char *)w - offsetof(struct mcast, io));
    struct endpoint *ep = m->ep;
    struct sockaddr_in6 local;
    socklen_t llen = sizeof local;
    uint8_t buf[UDP_SLOT];

    (void)loop, (void)revents;
    getsockname(ep->fd, (struct sockaddr *)&local, &llen);
    for (int i = 0; i < UDP_BATCH; i++) {
        struct peer from;
        ssize_t n;

        from.len = sizeof from.u;
        n = recvfrom(m->fd, buf, sizeof buf, MSG_DONTWAIT | MSG_TRUNC, &from.u.sa, &from.len);
        if (n < 0)
            break;
        ep->srv->stats.rx++;
        if ((size_t)n > sizeof buf) {
            ep->srv->stats.truncated++;
            continue;
        }
        if (from.u.sa.sa_family == AF_INET && local.sin6_family == AF_INET6) {
            /* an IPv4 group feeding a dual-stack endpoint: its peers are v4-mapped */
            struct sockaddr_in v4 = from.u.in;

            memset(&from.u.in6, 0, sizeof from.u.in6);
            from.u.in6.sin6_family = AF_INET6;
            from.u.in6.sin6_port = v4.sin_port;
            from.u.in6.sin6_addr.s6_addr[10] = 0xff;
            from.u.in6.sin6_addr.s6_addr[11] = 0xff;
            memcpy(from.u.in6.sin6_addr.s6_addr + 12, &v4.sin_addr, 4);
            from.len = sizeof from.u.in6;
        }
        exchange_multicast(ep, &from, buf, (size_t)n);
    }
    udp_flush(ep);
}

static int
mc_open(struct endpoint *ep, int family, const char *group, unsigned ifindex, uint16_t port,
        char *err, size_t errlen)
{
    struct udp *u = ep->impl;
    struct mcast *m;
    int fd, on = 1, rc;

    if ((fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0)
        goto fail;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);  /* other servers, same host */
    if (family == AF_INET6) {
        struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port),
                                 .sin6_scope_id = ifindex};
        struct ipv6_mreq mr = {.ipv6mr_interface = ifindex};

        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
        inet_pton(AF_INET6, group, &a.sin6_addr);
        mr.ipv6mr_multiaddr = a.sin6_addr;
        rc = bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
             setsockopt(fd, IPPROTO_IPV6, IPV6_JOIN_GROUP, &mr, sizeof mr) < 0;
    } else {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
        struct ip_mreqn mr = {.imr_ifindex = (int)ifindex};

        inet_pton(AF_INET, group, &a.sin_addr);
        mr.imr_multiaddr = a.sin_addr;
        rc = bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
             setsockopt(fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &mr, sizeof mr) < 0;
    }
    if (rc || (m = calloc(1, sizeof *m)) == NULL)
        goto fail;
    m->ep = ep;
    m->fd = fd;
    m->ifindex = ifindex;
    m->next = u->mc;
    u->mc = m;
    ev_io_init(&m->io, mc_read, fd, EV_READ);
    ev_io_start(ep->srv->loop, &m->io);
    return 0;
fail:
    snprintf(err, errlen, "multicast group %s on interface %u: %s", group, ifindex,
             strerror(errno));
    if (fd >= 0)
        close(fd);
    return -1;
}

/* The group sockets of one interface: ff02::fd and ff05::fd, and 224.0.1.187 when the
 * endpoint is dual stack; an IPv4 endpoint joins 224.0.1.187 only. */
static int
join(struct endpoint *ep, unsigned ifindex, char *err, size_t errlen)
{
    struct peer local;

    local.len = sizeof local.u;
    getsockname(ep->fd, &local.u.sa, &local.len);
    if (local.u.sa.sa_family == AF_INET6) {
        uint16_t port = ntohs(local.u.in6.sin6_port);

        if (mc_open(ep, AF_INET6, "ff02::fd", ifindex, port, err, errlen) < 0 ||
            mc_open(ep, AF_INET6, "ff05::fd", ifindex, port, err, errlen) < 0)
            return -1;
        /* a dual-stack endpoint ("::") takes IPv4 peers too */
        if (IN6_IS_ADDR_UNSPECIFIED(&local.u.in6.sin6_addr) &&
            mc_open(ep, AF_INET, "224.0.1.187", ifindex, port, err, errlen) < 0)
            log_warn("%s (IPv6 groups joined)", err);
        return 0;
    }
    return mc_open(ep, AF_INET, "224.0.1.187", ifindex, ntohs(local.u.in.sin_port), err,
                   errlen);
}

int
udp_join(struct endpoint *ep, const char *ifname, char *err, size_t errlen)
{
    unsigned ifindex = if_nametoindex(ifname);
    int on = 1, off = 0, rc;

    if (ifindex == 0) {
        snprintf(err, errlen, "-g %s: no such network interface", ifname);
        return -1;
    }
    /* A group socket binds our port on the group address with SO_REUSEADDR, which Linux
     * refuses while a socket on the wildcard address ("::", "0.0.0.0") lacks it, as our
     * unicast socket does (udp_open). Linux checks the existing socket's flag at the time
     * of the new bind, so set it for the binds only: afterwards a stranger binding the
     * port meets a socket without it again and is refused. */
    setsockopt(ep->fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    rc = join(ep, ifindex, err, errlen);
    setsockopt(ep->fd, SOL_SOCKET, SO_REUSEADDR, &off, sizeof off);
    return rc;
}

int
udp_leave(struct endpoint *ep, const char *ifname)
{
    struct udp *u = ep->impl;
    unsigned ifindex = if_nametoindex(ifname);
    struct mcast **pp = &u->mc;
    int n = 0;

    while (ifindex && *pp) {
        struct mcast *m = *pp;

        if (m->ifindex != ifindex) {
            pp = &m->next;
            continue;
        }
        *pp = m->next;
        ev_io_stop(ep->srv->loop, &m->io);
        close(m->fd);           /* closing the socket leaves its groups */
        free(m);
        n++;
    }
    return n;
}

int
peer_equal(const struct peer *a, const struct peer *b)
{
    if (a->u.sa.sa_family != b->u.sa.sa_family)
        return 0;
    if (a->u.sa.sa_family == AF_INET6)
        return a->u.in6.sin6_port == b->u.in6.sin6_port &&
               memcmp(&a->u.in6.sin6_addr, &b->u.in6.sin6_addr, 16) == 0 &&
               a->u.in6.sin6_scope_id == b->u.in6.sin6_scope_id;
    return a->u.in.sin_port == b->u.in.sin_port &&
           a->u.in.sin_addr.s_addr == b->u.in.sin_addr.s_addr;
}

uint32_t
peer_hash(const struct peer *p, uint64_t key)
{
    uint64_t a, b = 0, h;

    /* the address as two words and the port, mixed with a per-server random key so that
     * peers cannot precompute colliding addresses for one chain */
    if (p->u.sa.sa_family == AF_INET6) {
        memcpy(&a, p->u.in6.sin6_addr.s6_addr, 8);
        memcpy(&b, p->u.in6.sin6_addr.s6_addr + 8, 8);
        b ^= (uint64_t)p->u.in6.sin6_port << 48;
    } else {
        a = (uint64_t)p->u.in.sin_addr.s_addr << 16 | p->u.in.sin_port;
    }
    h = ((a ^ key) * 0x9E3779B97F4A7C15ULL ^ b) * 0xBF58476D1CE4E5B9ULL;
    h ^= h >> 29;
    return (uint32_t)(h >> 32) ^ (uint32_t)h;
}

const char *
peer_str(const struct peer *p, char *buf, size_t len)
{
    char a[INET6_ADDRSTRLEN];

    if (p->u.sa.sa_family == AF_INET6) {
        const struct in6_addr *ia = &p->u.in6.sin6_addr;

        if (IN6_IS_ADDR_V4MAPPED(ia)) {
            inet_ntop(AF_INET, ia->s6_addr + 12, a, sizeof a);
            snprintf(buf, len, "%s:%u", a, ntohs(p->u.in6.sin6_port));
        } else {
            inet_ntop(AF_INET6, ia, a, sizeof a);
            snprintf(buf, len, "[%s]:%u", a, ntohs(p->u.in6.sin6_port));
        }
    } else {
        inet_ntop(AF_INET, &p->u.in.sin_addr, a, sizeof a);
        snprintf(buf, len, "%s:%u", a, ntohs(p->u.in.sin_port));
    }
    return buf;
}
