/*
 * ws.c -- coap+ws:// listeners (RFC 8323 §4, §8.3): an HTTP/1.1 request on a TCP
 * connection is upgraded to a WebSocket at /.well-known/coap with the subprotocol "coap"
 * (§4.2, §4.3), then every binary message is one CoAP message in the §4.4 format (the
 * TCP header without its length) for the stream message layer, which handles CSM,
 * signaling and requests as over TCP. The upgrade is the connection's handshake
 * (stream_io.handshake); WebSocket framing -- masking, fragmentation, control frames,
 * close codes -- is Debian's libwslay, the request head Debian's libhttp-parser.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <http_parser.h>
#include <wslay/wslay.h>

#include "dtls.h"
#include "layer.h"
#include "log.h"
#include "server.h"
#include "stream.h"
#include "transport.h"

#define WS_HEAD_MAX 8192        /* an HTTP request head larger than this: 431 */
#define WS_PATH "/.well-known/coap"

/* A connection's WebSocket state (its stream I/O state). */
struct ws {
    struct server *srv;
    wslay_event_context_ptr ctx;        /* after the upgrade */
    struct conn *c;
    http_parser hp;
    char head[WS_HEAD_MAX];
    size_t hlen, hdone;                 /* bytes read, bytes the parser took */
    char field[32];                     /* the header being read (lower case, cut) */
    char key[64];                       /* Sec-WebSocket-Key */
    uint8_t path_ok, upgrade, connection, version, protocol, host, complete;
    uint8_t *rest;                      /* bytes after the head: the first frames */
    size_t nrest;
    int eof;                            /* the peer closed, or the WebSocket did */
    int in_recv;                        /* inside wslay_event_recv: queue, send after */
};

/* ---- the upgrade (RFC 6455 §4.2, RFC 8323 §4.2) ------------------------------------- */

static int
on_url(http_parser *p, const char *at, size_t n)
{
    struct ws *w = p->data;
    size_t plen = strlen(WS_PATH);

    w->path_ok = n == plen && memcmp(at, WS_PATH, n) == 0;
    return 0;
}

static int
on_field(http_parser *p, const char *at, size_t n)
{
    struct ws *w = p->data;
    size_t i;

    for (i = 0; i < n && i < sizeof w->field - 1; i++)
        w->field[i] = (char)(at[i] >= 'A' && at[i] <= 'Z' ? at[i] + 32 : at[i]);
    w->field[i] = '\0';
    return 0;
}

/* Does the comma-separated list at (n bytes) hold token, case-insensitively? */
static int
list_has(const char *at, size_t n, const char *token)
{
    size_t t = strlen(token);

    while (n) {
        size_t i = 0, j;

        while (i < n && (at[i] == ' ' || at[i] == '\t' || at[i] == ','))
            i++;
        at += i;
        n -= i;
        for (j = 0; j < n && at[j] != ','; j++)
            ;
        while (j && (at[j - 1] == ' ' || at[j - 1] == '\t'))
            j--;
        if (j == t && strncasecmp(at, token, t) == 0)
            return 1;
        while (n && *at != ',') {
            at++;
            n--;
        }
    }
    return 0;
}

static int
on_value(http_parser *p, const char *at, size_t n)
{
    struct ws *w = p->data;

    if (strcmp(w->field, "upgrade") == 0)
        w->upgrade |= list_has(at, n, "websocket");
    else if (strcmp(w->field, "connection") == 0)
        w->connection |= list_has(at, n, "upgrade");
    else if (strcmp(w->field, "sec-websocket-version") == 0)
        w->version = n == 2 && memcmp(at, "13", 2) == 0;
    else if (strcmp(w->field, "sec-websocket-protocol") == 0)
        w->protocol |= list_has(at, n, "coap");
    else if (strcmp(w->field, "host") == 0)
        w->host = 1;
    else if (strcmp(w->field, "sec-websocket-key") == 0 && n < sizeof w->key)
        memcpy(w->key, at, n), w->key[n] = '\0';
    return 0;
}

static int
on_headers_complete(http_parser *p)
{
    struct ws *w = p->data;

    w->complete = 1;
    return 1;                   /* no body: the rest is the WebSocket's */
}

static const http_parser_settings head_settings = {
    .on_url = on_url,
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_headers_complete = on_headers_complete,
};

/* Write a whole short answer (the head of a 101, an error) on a fresh connection. */
static int
say(int fd, const char *text)
{
    size_t n = strlen(text);

    return send(fd, text, n, MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)n ? 0 : -1;
}

/* An HTTP error with a one-line reason; the connection goes. */
static int
refuse(struct ws *w, int fd, const char *status, const char *extra, const char *why)
{
    char b[512];
    char pb[64];

    snprintf(b, sizeof b,
             "HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n%s"
             "Connection: close\r\n\r\n%s\n",
             status, strlen(why) + 1, extra, why);
    say(fd, b);
    log_info("%s: WebSocket upgrade refused (%s): %s", peer_str(stream_peer(w->c), pb,
             sizeof pb), status, why);
    return -1;
}

static ssize_t ws_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                          void *ud);
static ssize_t ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len,
                          int flags, void *ud);
static void ws_msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *a,
                      void *ud);

static const struct wslay_event_callbacks ws_callbacks = {
    .recv_callback = ws_recv_cb,
    .send_callback = ws_send_cb,
    .on_msg_recv_callback = ws_msg_cb,
};

static int
ws_handshake(struct conn *c)
{
    struct ws *w = stream_io_state(c);
    int fd = stream_fd(c);
    char accept[32], b[512];
    ssize_t n;

    w->c = c;
    for (;;) {
        if (w->hlen == sizeof w->head)
            return refuse(w, fd, "431 Request Header Fields Too Large", "",
                          "request head too large");
        n = recv(fd, w->head + w->hlen, sizeof w->head - w->hlen, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (n <= 0)
            return -1;
        w->hdone += http_parser_execute(&w->hp, &head_settings, w->head + w->hlen, (size_t)n);
        w->hlen += (size_t)n;
        if (w->complete)
            break;
        if (HTTP_PARSER_ERRNO(&w->hp) != HPE_OK)
            return refuse(w, fd, "400 Bad Request", "",
                          http_errno_description(HTTP_PARSER_ERRNO(&w->hp)));
    }
    /* RFC 6455 §4.2.1, RFC 8323 §4.3 */
    if (w->hp.method != HTTP_GET)
        return refuse(w, fd, "405 Method Not Allowed", "Allow: GET\r\n", "GET only");
    if (!w->path_ok)
        return refuse(w, fd, "404 Not Found", "", "the CoAP endpoint is " WS_PATH);
    if (!w->host || !w->upgrade || !w->connection || !w->key[0])
        return refuse(w, fd, "400 Bad Request", "",
                      "not a WebSocket upgrade (Host, Upgrade, Connection, Sec-WebSocket-Key)");
    if (!w->version)
        return refuse(w, fd, "426 Upgrade Required", "Sec-WebSocket-Version: 13\r\n",
                      "WebSocket version 13 only");
    if (!w->protocol)
        return refuse(w, fd, "400 Bad Request", "",
                      "Sec-WebSocket-Protocol must offer coap (RFC 8323 §4.2)");
    if (tls_ws_accept(w->key, accept, sizeof accept) < 0)
        return refuse(w, fd, "400 Bad Request", "", "bad Sec-WebSocket-Key");
    snprintf(b, sizeof b,
             "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Accept: %s\r\nSec-WebSocket-Protocol: coap\r\n\r\n",
             accept);
    if (say(fd, b) < 0)
        return -1;
    /* what came after the head already is the first frames */
    if (w->hlen > w->hdone) {
        w->nrest = w->hlen - w->hdone;
        if ((w->rest = malloc(w->nrest)) == NULL)
            return -1;
        memcpy(w->rest, w->head + w->hdone, w->nrest);
    }
    if (wslay_event_context_server_init(&w->ctx, &ws_callbacks, w) != 0)
        return -1;
    /* a message larger than our Max-Message-Size: closed with 1009 (RFC 6455 §7.4.1) */
    wslay_event_config_set_max_recv_msg_length(w->ctx, w->srv->cfg.tcp_max_message);
    return 1;
}

/* ---- WebSocket I/O ---------------------------------------------------------------- */

static ssize_t
ws_recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *ud)
{
    struct ws *w = ud;
    ssize_t n;

    (void)flags;
    if (w->nrest) {
        n = (ssize_t)(len < w->nrest ? len : w->nrest);
        memcpy(buf, w->rest, (size_t)n);
        memmove(w->rest, w->rest + n, w->nrest - (size_t)n);
        w->nrest -= (size_t)n;
        return n;
    }
    do
        n = recv(stream_fd(w->c), buf, len, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    if (n <= 0) {
        w->eof = 1;
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return n;
}

static ssize_t
ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *ud)
{
    struct ws *w = ud;
    ssize_t n;

    (void)flags;
    do
        n = send(stream_fd(w->c), data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        wslay_event_set_error(ctx, errno == EAGAIN || errno == EWOULDBLOCK
                                       ? WSLAY_ERR_WOULDBLOCK
                                       : WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return n;
}

static void
ws_msg_cb(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *a, void *ud)
{
    struct ws *w = ud;

    if (a->opcode == WSLAY_BINARY_FRAME)
        stream_message(w->c, a->msg, a->msg_length);
    else if (a->opcode == WSLAY_TEXT_FRAME)     /* RFC 8323 §4.4: binary only */
        wslay_event_queue_close(ctx, WSLAY_CODE_UNSUPPORTED_DATA,
                                (const uint8_t *)"binary frames only", 18);
}

/* Read what the socket has: whole messages go to the stream layer as they complete. */
static ssize_t
ws_read(struct conn *c, uint8_t *buf, size_t len)
{
    struct ws *w = stream_io_state(c);

    int rc;

    (void)buf, (void)len;
    w->in_recv = 1;
    rc = wslay_event_recv(w->ctx);
    w->in_recv = 0;
    wslay_event_send(w->ctx);   /* the answers (and a close) queued meanwhile */
    /* closed, or a close sent or received (a text frame, a frame too large, a protocol
     * error: wslay queued the close with its code, RFC 6455 §7.4.1): the end */
    if (rc != 0 || w->eof || !wslay_event_want_read(w->ctx) ||
        wslay_event_get_close_sent(w->ctx))
        return 0;
    return -1;
}

/* One CoAP message (the pieces of iov) as one binary message. */
static ssize_t
ws_writev(struct conn *c, const struct iovec *iov, int n)
{
    struct ws *w = stream_io_state(c);
    struct wslay_event_msg m = {WSLAY_BINARY_FRAME, NULL, 0};
    uint8_t small[512], *b = small;
    size_t len = 0, off = 0;
    int rc;

    for (int i = 0; i < n; i++)
        len += iov[i].iov_len;
    if (len) {
        if (wslay_event_get_queued_msg_length(w->ctx) > 2 * w->srv->cfg.tcp_write_bytes)
            return -1;          /* a peer that does not read */
        if (len > sizeof small && (b = malloc(len)) == NULL)
            return -1;
        for (int i = 0; i < n; i++) {
            memcpy(b + off, iov[i].iov_base, iov[i].iov_len);
            off += iov[i].iov_len;
        }
        m.msg = b;
        m.msg_length = len;
        rc = wslay_event_queue_msg(w->ctx, &m);   /* it copies */
        if (b != small)
            free(b);
        if (rc != 0)
            return -1;
    }
    if (!w->in_recv && wslay_event_send(w->ctx) != 0)
        return -1;
    return (ssize_t)len;
}

static int
ws_want_write(struct conn *c)
{
    struct ws *w = stream_io_state(c);

    return w->ctx && wslay_event_want_write(w->ctx);
}

static int
ws_buffered(struct conn *c)
{
    struct ws *w = stream_io_state(c);

    return w->ctx && w->nrest > 0;
}

static void
ws_free(struct conn *c)
{
    struct ws *w = stream_io_state(c);

    if (w == NULL)
        return;
    if (w->ctx) {
        wslay_event_queue_close(w->ctx, 1001, NULL, 0);     /* going away, best effort */
        wslay_event_send(w->ctx);
        wslay_event_context_free(w->ctx);
    }
    free(w->rest);
    free(w);
}

static const struct stream_io ws_io = {
    .read = ws_read,
    .writev = ws_writev,
    .free = ws_free,
    .handshake = ws_handshake,
    .want_write = ws_want_write,
    .buffered = ws_buffered,
    .messages = 1,
};

/* ---- the listener ------------------------------------------------------------------ */

static void
ws_accept(struct endpoint *ep, int fd, const struct peer *p)
{
    struct ws *w = calloc(1, sizeof *w);

    if (w == NULL) {
        close(fd);
        return;
    }
    w->srv = ep->srv;
    http_parser_init(&w->hp, HTTP_REQUEST);
    w->hp.data = w;
    stream_accept(ep, fd, p, &ws_io, w);
}

static const struct transport ws_transport = {
    .scheme = "coap+ws",
    .ml = &stream_layer,
    .send = stream_send,
    .flush = stream_flush,
    .close = tcp_unlisten,
    .detach = stream_detach,
};

struct endpoint *
ws_open(struct server *srv, const char *addr, unsigned port, char *err, size_t errlen)
{
    return tcp_listen(srv, &ws_transport, addr, port, ws_accept, err, errlen);
}
