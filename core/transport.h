/*
 * transport.h -- the transport seam. A transport turns bytes on a socket into whole CoAP
 * messages for a peer and back. UDP (and later DTLS) hand datagrams to the exchange layer;
 * reliable transports (TCP, TLS, WebSockets; RFC 8323) will deliver framed messages to the
 * same dispatcher without exchange. Nothing above exchange knows which transport it is.
 */
#ifndef TRANSPORT_H
#define TRANSPORT_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <ev.h>

struct server;
struct endpoint;

/* A peer address; IPv4 peers of a dual-stack socket arrive as v4-mapped IPv6. */
struct peer {
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } u;
    socklen_t len;
};

struct transport {
    const char *scheme;     /* "coap" */
    int reliable;           /* 1: no CON/ACK/MID layer (RFC 8323) */
    /* Queue one message to a peer; it leaves at the next flush. 0 or -1 (dropped). */
    int (*send)(struct endpoint *ep, const struct peer *to, const uint8_t *buf, size_t len);
    /* Send everything queued. */
    void (*flush)(struct endpoint *ep);
    void (*close)(struct endpoint *ep);
};

struct endpoint {
    const struct transport *tp;
    struct server *srv;
    struct endpoint *next;
    ev_io io;
    int fd;
    char name[80];          /* "udp://[::1]:5683", for logs */
    char bind_addr[64];     /* the address and port it was opened with (port may be 0), */
    unsigned bind_port;     /* which a configuration reload compares */
    void *impl;             /* the transport's own state (batches) */
};

/* Compare and hash peers (address family, address, port). */
int peer_equal(const struct peer *a, const struct peer *b);
uint32_t peer_hash(const struct peer *p, uint64_t key);
/* "[::1]:5683" or "127.0.0.1:5683" (v4-mapped shown as IPv4). */
const char *peer_str(const struct peer *p, char *buf, size_t len);

/* UDP endpoint on addr:port ("::" dual stack); NULL with *err set to a one-line reason. */
struct endpoint *udp_open(struct server *srv, const char *addr, unsigned port, char *err,
                          size_t errlen);
/* Join the All-CoAP-Nodes groups (RFC 7252 §12.8: ff02::fd, ff05::fd; 224.0.1.187 when
 * the endpoint takes IPv4) on interface ifname, at the endpoint's port. Requests to a group
 * reach exchange_multicast and are answered from the endpoint's unicast socket. 0, or -1
 * with a one-line reason. */
int udp_join(struct endpoint *ep, const char *ifname, char *err, size_t errlen);
/* Leave the groups joined on interface ifname (close their sockets); how many were left. */
int udp_leave(struct endpoint *ep, const char *ifname);

#endif
