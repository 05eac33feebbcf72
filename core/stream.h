/*
 * stream.h -- the message layer of reliable transports (RFC 8323): a connection object,
 * the §3.2 framing, signaling (CSM, Ping/Pong, Release, Abort: §5) and the limits a
 * connection lives under. Byte transports (tcp.c; TLS) accept connections and hand them
 * here with the functions that move their bytes.
 */
#ifndef STREAM_H
#define STREAM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "transport.h"

struct conn;

/* How a connection's bytes move: a plain socket (tcp.c) or a TLS session. */
struct stream_io {
    /* Read up to len bytes: how many (> 0), 0 at the end of the stream, -1 when nothing
     * is there now, -2 on an error (the connection goes). */
    ssize_t (*read)(struct conn *c, uint8_t *buf, size_t len);
    /* Write what it can of iov: the bytes taken (>= 0), or -1 on an error. */
    ssize_t (*writev)(struct conn *c, const struct iovec *iov, int n);
    /* Free the I/O state (io_state) as the connection closes; may be NULL. */
    void (*free)(struct conn *c);
    /* TLS only (NULL for a plain socket). Go on with the handshake: 1 done, 0 not yet,
     * -1 failed (the connection goes). */
    int (*handshake)(struct conn *c);
    /* Does it wait for the socket to take bytes (a handshake's flight, a record GnuTLS
     * holds)? Are decrypted bytes waiting that the socket will not signal? */
    int (*want_write)(struct conn *c);
    int (*buffered)(struct conn *c);
    /* 1: the transport delimits messages itself (WebSockets: RFC 8323 §4.4, a header
     * without a length); read hands each one to stream_message, writev takes one */
    int messages;
};

/* A plain socket's (tcp.c): recv and sendmsg, non-blocking. */
extern const struct stream_io tcp_plain_io;

/* A new connection from p on listener ep, its socket fd non-blocking: the server's CSM
 * goes at once (§5.3), after the handshake if io has one (within tls_handshake_timeout).
 * NULL if the connection limits refuse it (fd is then closed, io_state freed). */
struct conn *stream_accept(struct endpoint *ep, int fd, const struct peer *p,
                           const struct stream_io *io, void *io_state);
/* A whole message of a message transport (io.messages), in the §4.4 format. */
void stream_message(struct conn *c, const uint8_t *p, size_t len);
/* The socket of c, the I/O state given to stream_accept, its peer, its listener. */
int stream_fd(const struct conn *c);
void *stream_io_state(const struct conn *c);
const struct peer *stream_peer(const struct conn *c);
struct endpoint *stream_endpoint(const struct conn *c);
/* Listener ep closes: each connection gets Release (§5.5) and what is queued, best
 * effort, then goes. */
void stream_endpoint_close(struct endpoint *ep);
/* The core dropped the session of one of ep's connections: the connection goes. */
void stream_detach(struct endpoint *ep, struct session *s);
/* transport.send and .flush of a connection-based transport: nothing goes to a peer
 * address, every connection writes its own. */
int stream_send(struct endpoint *ep, const struct peer *to, const uint8_t *buf, size_t len);
void stream_flush(struct endpoint *ep);
/* Connections open now (for the SIGUSR1 line and tests). */
unsigned stream_count(const struct server *srv);
void stream_fini(struct server *srv);

#endif
