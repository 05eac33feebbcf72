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

/* How a connection's bytes move: a plain socket (tcp.c), a TLS session (dtls.c), a
 * WebSocket over either (ws.c). Each function gets the connection and st, the I/O state
 * given to stream_accept: a layer over another (WebSockets over TLS) calls the lower one's
 * functions with that one's state. */
struct stream_io {
    /* Read up to len bytes: how many (> 0), 0 at the end of the stream, -1 when nothing
     * is there now, -2 on an error (the connection goes). */
    ssize_t (*read)(struct conn *c, void *st, uint8_t *buf, size_t len);
    /* Write what it can of iov: the bytes taken (>= 0), or -1 on an error. n == 0: only
     * push out what the I/O holds (want_write). */
    ssize_t (*writev)(struct conn *c, void *st, const struct iovec *iov, int n);
    /* Free st as the connection closes; may be NULL. */
    void (*free)(struct conn *c, void *st);
    /* NULL when there is none. Go on with the handshake (TLS, the WebSocket upgrade): 1
     * done, 0 not yet, -1 failed (the connection goes). */
    int (*handshake)(struct conn *c, void *st);
    /* Does it wait for the socket to take bytes (a handshake's flight, a record GnuTLS
     * holds)? Are bytes read and waiting that the socket will not signal? May be NULL. */
    int (*want_write)(struct conn *c, void *st);
    int (*buffered)(struct conn *c, void *st);
    /* Bytes written to it that the socket has not taken yet (WebSockets gather frames):
     * they count against tcp_write_bytes, and a closing connection waits for them. May be
     * NULL (nothing held, or nothing known: TLS). */
    size_t (*queued)(struct conn *c, void *st);
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
