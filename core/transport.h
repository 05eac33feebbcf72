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
#include <sys/uio.h>

#include <ev.h>

struct server;
struct endpoint;
struct session;

/* A peer address; IPv4 peers of a dual-stack socket arrive as v4-mapped IPv6. */
struct peer {
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } u;
    socklen_t len;
};

struct moonlet_identity;
struct msglayer;

struct transport {
    const char *scheme;     /* "coap", "coaps" */
    const struct msglayer *ml;  /* its family's message layer (layer.h) */
    int secure;             /* 1: peers are authenticated (DTLS): a session starts verified */
    unsigned metric;        /* its "transport" label in /metrics (MT_*, metrics.h) */
    /* One datagram's CoAP message(s) from a peer, for the message layer (exchange_input;
     * DTLS decrypts first). */
    void (*input)(struct endpoint *ep, const struct peer *from, const uint8_t *buf,
                  size_t len);
    /* Queue one message to a peer; it leaves at the next flush. 0 or -1 (dropped). */
    int (*send)(struct endpoint *ep, const struct peer *to, const uint8_t *buf, size_t len);
    /* Send everything queued. */
    void (*flush)(struct endpoint *ep);
    void (*close)(struct endpoint *ep);
    /* How the peer of session s authenticated and who it is; NULL for none (and on an
     * insecure transport: the field may be NULL). */
    const struct moonlet_identity *(*identity)(const struct session *s);
    /* The core dropped s, the session of one of ep's connections (shutdown, the listener
     * going): the connection closes. NULL for transports without connections. */
    void (*detach)(struct endpoint *ep, struct session *s);
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
    void *impl;             /* the datagram layer's state (udp.c: batches) */
    void *sec;              /* the security layer's state (dtls.c), or NULL */
};

/* A listener's URI scheme (RFC 7252 §6.1-6.2, RFC 8323 §8): its default port and how an
 * endpoint of it opens. The one table of them is in server.c: a new transport is one entry
 * there. */
struct scheme {
    const char *name;           /* "coap", "coaps", ... (the URI says "NAME://") */
    unsigned port;
    int secure;                 /* needs credentials (DTLS, TLS) */
    struct endpoint *(*open)(struct server *srv, const char *addr, unsigned port, char *err,
                             size_t errlen);
};
/* The scheme uri starts with ("coaps://..."), or NULL. */
const struct scheme *scheme_of(const char *uri);
/* "coap://, coaps://": the schemes that can be opened, for messages. */
const char *scheme_names(void);

/* Compare and hash peers (address family, address, port). */
int peer_equal(const struct peer *a, const struct peer *b);
uint32_t peer_hash(const struct peer *p, uint64_t key);
/* "[::1]:5683" or "127.0.0.1:5683" (v4-mapped shown as IPv4). */
const char *peer_str(const struct peer *p, char *buf, size_t len);

/* A non-blocking socket of type (SOCK_DGRAM; SOCK_STREAM: listening) bound to addr:port
 * ("::": dual stack), with SO_REUSEADDR if reuse; the address it got in *local. -1 with a
 * one-line reason naming name (address in use, bad address) in err. */
int sock_bind(int type, const char *addr, unsigned port, int reuse, const char *name,
              struct peer *local, char *err, size_t errlen);
/* UDP endpoint on addr:port ("::" dual stack); NULL with *err set to a one-line reason. */
struct endpoint *udp_open(struct server *srv, const char *addr, unsigned port, char *err,
                          size_t errlen);
/* The same socket and batches under another transport (DTLS: tp's input decrypts, its send
 * encrypts into udp_queue); name prefix "dtls" for logs. */
struct endpoint *udp_open_as(struct server *srv, const struct transport *tp, const char *prefix,
                             const char *addr, unsigned port, char *err, size_t errlen);
/* Queue one datagram made of n pieces to a peer (it leaves at the next flush); 0, or -1
 * when it is larger than a slot. Flush and close as the UDP transport does. */
int udp_queue(struct endpoint *ep, const struct peer *to, const struct iovec *iov, int n);
void udp_flush(struct endpoint *ep);
void udp_close(struct endpoint *ep);
/* coap+tcp:// listener on addr:port (RFC 8323 §8.1); NULL with *err set. */
struct endpoint *tcp_open(struct server *srv, const char *addr, unsigned port, char *err,
                          size_t errlen);
/* HTTP/1.1 listeners on addr:port serving the WebSocket upgrade (RFC 8323 §4) and
 * /metrics: coap+ws:// (§8.3) and http://, coaps+ws:// (§8.4) and https:// (TLS with
 * srv->creds). NULL with *err set. */
struct endpoint *ws_open(struct server *srv, const char *addr, unsigned port, char *err,
                         size_t errlen);
struct endpoint *http_open(struct server *srv, const char *addr, unsigned port, char *err,
                           size_t errlen);
struct endpoint *wss_open(struct server *srv, const char *addr, unsigned port, char *err,
                          size_t errlen);
struct endpoint *https_open(struct server *srv, const char *addr, unsigned port, char *err,
                            size_t errlen);
/* A connected socket fd from p, for listener ep as a coap+ws:// one takes it: the HTTP
 * request, then the WebSocket (what its accept does; the fuzz harness calls it). */
void ws_accept(struct endpoint *ep, int fd, const struct peer *p);
/* A listening TCP socket for transport tp: each connection accepted (its socket
 * non-blocking, Nagle off) goes to accept. NULL with *err set. */
struct endpoint *tcp_listen(struct server *srv, const struct transport *tp, const char *addr,
                            unsigned port,
                            void (*accept)(struct endpoint *ep, int fd, const struct peer *p),
                            char *err, size_t errlen);
/* Stop listening and free ep (its connections are the stream layer's). */
void tcp_unlisten(struct endpoint *ep);
/* Join the All-CoAP-Nodes groups (RFC 7252 §12.8: ff02::fd, ff05::fd; 224.0.1.187 when
 * the endpoint takes IPv4) on interface ifname, at the endpoint's port. Requests to a group
 * reach exchange_multicast and are answered from the endpoint's unicast socket. 0, or -1
 * with a one-line reason. */
int udp_join(struct endpoint *ep, const char *ifname, char *err, size_t errlen);
/* Leave the groups joined on interface ifname (close their sockets); how many were left. */
int udp_leave(struct endpoint *ep, const char *ifname);

#endif
