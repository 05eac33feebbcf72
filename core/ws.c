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
#include "metrics.h"
#include "server.h"
#include "stream.h"
#include "transport.h"

#define WS_HEAD_MAX 8192        /* an HTTP request head larger than this: 431 */
#define WS_URL_MAX 2048         /* a request target longer than this: 414 */
#define WS_LOG_PER_SECOND 10    /* refusals logged a second, then counted */
#define WS_PATH "/.well-known/coap"
#define METRICS_PATH "/metrics"

/* A connection's HTTP and WebSocket state (its stream I/O state), over the I/O below it:
 * the plain socket (coap+ws://, http://) or a TLS session (coaps+ws://, https://). */
struct ws {
    struct server *srv;
    const struct stream_io *lo;         /* the bytes below: tcp_plain_io or tls_io */
    void *lo_st;
    wslay_event_context_ptr ctx;        /* after the upgrade */
    struct conn *c;
    http_parser hp;
    char *head;                         /* WS_HEAD_MAX bytes until the head is answered */
    size_t hlen, hdone;                 /* bytes read, the head's length */
    size_t urllen;
    char field[32];                     /* the header being read (lower case, cut) */
    char key[64];                       /* Sec-WebSocket-Key */
    uint8_t lo_done;                    /* the lower handshake (TLS) is */
    uint8_t path;                       /* PATH_* */
    uint8_t upgrade, connection, version, protocol, host, complete;
    uint8_t origin;                     /* an Origin header came ... */
    uint8_t origin_ok;                  /* ... and ws_origins allows it */
    uint8_t bearer_ok;                  /* Authorization: Bearer metrics_token */
    char *out;                          /* an HTTP answer being written, then the end */
    size_t nout, outoff;
    uint8_t *ob;                        /* frames wslay made, for one write to go */
    size_t olen, ooff, ocap;
    uint8_t *rest;                      /* bytes after the head: the first frames */
    size_t nrest;
    int eof;                            /* the peer closed, or the WebSocket did */
    int in_recv;                        /* inside wslay_event_recv: queue, send after */
};

enum { PATH_OTHER, PATH_COAP, PATH_METRICS };

/* ---- the request head (RFC 9112 §2-5, RFC 6455 §4.2.1) ----------------------------- */

static int
on_url(http_parser *p, const char *at, size_t n)
{
    struct ws *w = p->data;
    size_t q;

    w->urllen = n;
    for (q = 0; q < n && at[q] != '?'; q++)     /* a query does not change the resource */
        ;
    if (q == strlen(WS_PATH) && memcmp(at, WS_PATH, q) == 0)
        w->path = PATH_COAP;
    else if (q == strlen(METRICS_PATH) && memcmp(at, METRICS_PATH, q) == 0)
        w->path = PATH_METRICS;
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

/* Does the list at (n bytes, separated by commas or blanks) hold token? Case-insensitive
 * (tokens, RFC 9110 §5.6.2) unless exact (origins: RFC 6454 §6.1 serialises them). */
static int
list_has(const char *at, size_t n, const char *token, size_t t, int exact)
{
    while (n) {
        size_t j;

        while (n && (*at == ' ' || *at == '\t' || *at == ',')) {
            at++;
            n--;
        }
        for (j = 0; j < n && at[j] != ',' && at[j] != ' ' && at[j] != '\t'; j++)
            ;
        if (j && j == t && (exact ? memcmp(at, token, t) : strncasecmp(at, token, t)) == 0)
            return 1;
        at += j;
        n -= j;
    }
    return 0;
}

/* Equal, in a time that does not depend on where they differ (the metrics token). */
static int
same_secret(const char *a, size_t n, const char *b)
{
    size_t m = strlen(b);
    unsigned diff = n != m;

    for (size_t i = 0; i < n; i++)
        diff |= (unsigned)(a[i] ^ b[i < m ? i : 0]);
    return m > 0 && diff == 0;
}

static int
on_value(http_parser *p, const char *at, size_t n)
{
    struct ws *w = p->data;
    const struct server_config *cf = &w->srv->cfg;

    if (strcmp(w->field, "upgrade") == 0)
        w->upgrade |= list_has(at, n, "websocket", 9, 0);
    else if (strcmp(w->field, "connection") == 0)
        w->connection |= list_has(at, n, "upgrade", 7, 0);
    else if (strcmp(w->field, "sec-websocket-version") == 0)
        w->version = n == 2 && memcmp(at, "13", 2) == 0;
    else if (strcmp(w->field, "sec-websocket-protocol") == 0)
        w->protocol |= list_has(at, n, "coap", 4, 0);
    else if (strcmp(w->field, "host") == 0)
        w->host = 1;
    else if (strcmp(w->field, "sec-websocket-key") == 0 && n < sizeof w->key)
        memcpy(w->key, at, n), w->key[n] = '\0';
    else if (strcmp(w->field, "origin") == 0) {
        /* RFC 6455 §10.2: a browser names the page's origin; ws_origins lists those that
         * may connect (empty: any) */
        w->origin = 1;
        w->origin_ok = !cf->ws_origins[0] || list_has(cf->ws_origins, strlen(cf->ws_origins),
                                                       at, n, 1);
    } else if (strcmp(w->field, "authorization") == 0 && n > 7 &&
               strncasecmp(at, "Bearer ", 7) == 0)      /* RFC 6750 §2.1 */
        w->bearer_ok = same_secret(at + 7, n - 7, cf->metrics_token);
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

/* ---- HTTP answers ------------------------------------------------------------------ */

/* Write what is left of the answer; 0 while the socket takes no more, -1 when it is all
 * out (the connection then ends: every answer but the 101 closes it) or on an error. */
static int
answer_out(struct ws *w)
{
    while (w->outoff < w->nout) {
        struct iovec iov = {w->out + w->outoff, w->nout - w->outoff};
        ssize_t n = w->lo->writev(w->c, w->lo_st, &iov, 1);

        if (n < 0)
            return -1;
        if (n == 0)
            return 0;
        w->outoff += (size_t)n;
    }
    if (w->lo->want_write && w->lo->want_write(w->c, w->lo_st)) {   /* TLS holds records */
        if (w->lo->writev(w->c, w->lo_st, NULL, 0) < 0)
            return -1;
        if (w->lo->want_write(w->c, w->lo_st))
            return 0;
    }
    return -1;
}

/* An HTTP answer (status line, extra header lines, a body of len bytes) and the end of
 * the connection. */
static int
answer(struct ws *w, const char *status, const char *extra, const char *type,
       const char *body, size_t len)
{
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
                     "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
                     status, type, len, extra);

    if (n < 0 || (size_t)n >= sizeof head || (w->out = malloc((size_t)n + len)) == NULL)
        return -1;
    memcpy(w->out, head, (size_t)n);
    memcpy(w->out + n, body, len);
    w->nout = (size_t)n + len;
    return answer_out(w);
}

/* A refusal with a one-line reason (text/plain), logged -- WS_LOG_PER_SECOND lines a
 * second, then a count: a scanner on the HTTP port is not a flood of lines; the
 * connection goes. */
static int
refuse(struct ws *w, const char *status, const char *extra, const char *why)
{
    struct server *srv = w->srv;
    ev_tstamp now = ev_now(srv->loop);
    char b[256], pb[64];
    int n = snprintf(b, sizeof b, "%s\n", why);

    if (now - srv->http_log.at >= 1.0) {
        if (srv->http_log.skipped)
            log_info("http: %u more refused requests not logged", srv->http_log.skipped);
        srv->http_log.at = now;
        srv->http_log.n = srv->http_log.skipped = 0;
    }
    if (srv->http_log.n++ < WS_LOG_PER_SECOND)
        log_info("%s: %s refused (%s): %s", peer_str(stream_peer(w->c), pb, sizeof pb),
                 w->path == PATH_METRICS ? METRICS_PATH : "WebSocket upgrade", status, why);
    else
        srv->http_log.skipped++;
    return answer(w, status, extra, "text/plain; charset=utf-8", b, (size_t)n);
}

/* Is ep bound to the address addr ("127.0.0.1", "::1" or "[::1]")? Its name says. */
static int
bound_to(const struct endpoint *ep, const char *addr)
{
    const char *a = strstr(ep->name, "://") + 3, *colon = strrchr(a, ':');
    size_t n = (size_t)(colon - a), m = strlen(addr);

    if (*a == '[' && *addr != '[')
        a++, n -= 2;
    return n == m && memcmp(a, addr, n) == 0;
}

/* GET /metrics (the Prometheus text format 0.0.4) */
static int
metrics_page(struct ws *w)
{
    const struct server_config *cf = &w->srv->cfg;
    size_t len;
    char *text;
    int r;

    if (!cf->metrics || (cf->metrics_address[0] &&
                         !bound_to(stream_endpoint(w->c), cf->metrics_address)))
        return refuse(w, "404 Not Found", "", "metrics are not served here");
    if (cf->metrics_token[0] && !w->bearer_ok)
        return refuse(w, "401 Unauthorized", "WWW-Authenticate: Bearer realm=\"moonlet\"\r\n",
                      "a bearer token is required");
    if ((text = metrics_text(w->srv, &len)) == NULL)
        return refuse(w, "503 Service Unavailable", "", "out of memory");
    r = answer(w, "200 OK", "", "text/plain; version=0.0.4; charset=utf-8", text, len);
    free(text);
    return r;
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

/* The request is complete: the upgrade (RFC 6455 §4.2.2, RFC 8323 §4.3), /metrics, or
 * the refusal the RFCs name. 1: a WebSocket; else as answer_out. */
static int
request(struct ws *w)
{
    char accept[32], b[512];
    struct iovec iov;
    ssize_t n;

    w->srv->m.http_requests++;
    if (w->urllen > WS_URL_MAX)
        return refuse(w, "414 URI Too Long", "", "request target too long");
    if (w->hp.method != HTTP_GET)
        return refuse(w, "405 Method Not Allowed", "Allow: GET\r\n", "GET only");
    if (!w->host)       /* RFC 9112 §3.2: a request without Host gets a 400 */
        return refuse(w, "400 Bad Request", "", "no Host header");
    if (w->path == PATH_METRICS)
        return metrics_page(w);
    if (w->path != PATH_COAP)
        return refuse(w, "404 Not Found", "", "the CoAP endpoint is " WS_PATH);
    if (w->hp.http_major < 1 || (w->hp.http_major == 1 && w->hp.http_minor < 1))
        return refuse(w, "400 Bad Request", "", "a WebSocket needs HTTP/1.1 (RFC 6455 §4.1)");
    if (!w->upgrade || !w->connection || !w->key[0])
        return refuse(w, "400 Bad Request", "",
                      "not a WebSocket upgrade (Upgrade, Connection, Sec-WebSocket-Key)");
    if (!w->version)
        return refuse(w, "426 Upgrade Required", "Sec-WebSocket-Version: 13\r\n",
                      "WebSocket version 13 only");
    if (!w->protocol)
        return refuse(w, "400 Bad Request", "",
                      "Sec-WebSocket-Protocol must offer coap (RFC 8323 §4.2)");
    if (w->origin && !w->origin_ok)     /* RFC 6455 §4.2.2 item 4: 403 */
        return refuse(w, "403 Forbidden", "", "origin not allowed (ws_origins)");
    if (tls_ws_accept(w->key, accept, sizeof accept) < 0)
        return refuse(w, "400 Bad Request", "", "bad Sec-WebSocket-Key");
    iov.iov_base = b;
    iov.iov_len = (size_t)snprintf(
        b, sizeof b,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: %s\r\nSec-WebSocket-Protocol: coap\r\n\r\n",
        accept);
    /* a fresh connection's socket takes these few bytes (TLS: GnuTLS keeps what it holds) */
    if ((n = w->lo->writev(w->c, w->lo_st, &iov, 1)) != (ssize_t)iov.iov_len)
        return -1;
    /* what came after the head already is the first frames */
    if (w->hlen > w->hdone) {
        w->nrest = w->hlen - w->hdone;
        if ((w->rest = malloc(w->nrest)) == NULL)
            return -1;
        memcpy(w->rest, w->head + w->hdone, w->nrest);
    }
    free(w->head);
    w->head = NULL;
    if (wslay_event_context_server_init(&w->ctx, &ws_callbacks, w) != 0)
        return -1;
    /* a message larger than our Max-Message-Size: closed with 1009 (RFC 6455 §7.4.1) */
    wslay_event_config_set_max_recv_msg_length(w->ctx, w->srv->cfg.tcp_max_message);
    return 1;
}

/* The connection's handshake: TLS first when there is one, then the HTTP request (every
 * request but an upgrade is answered and closes the connection). */
static int
ws_handshake(struct conn *c, void *st)
{
    struct ws *w = st;
    ssize_t n;

    w->c = c;
    if (w->out) {       /* what comes while the answer goes is not read: it is dropped */
        uint8_t junk[512];

        for (int i = 0; i < 16 && w->lo->read(c, w->lo_st, junk, sizeof junk) > 0; i++)
            ;
        return answer_out(w);
    }
    if (!w->lo_done && w->lo->handshake) {
        int r = w->lo->handshake(c, w->lo_st);

        if (r <= 0)
            return r;
    }
    w->lo_done = 1;
    if (w->head == NULL && (w->head = malloc(WS_HEAD_MAX)) == NULL)
        return -1;
    for (;;) {
        char *end;

        if (w->hlen == WS_HEAD_MAX)
            return refuse(w, "431 Request Header Fields Too Large", "",
                          "request head too large");
        n = w->lo->read(c, w->lo_st, (uint8_t *)w->head + w->hlen, WS_HEAD_MAX - w->hlen);
        if (n == -1)
            return 0;
        if (n <= 0)
            return -1;
        w->hlen += (size_t)n;
        /* the parser gets the whole head at once: each of its callbacks sees a whole
         * request target, field name or value, wherever the peer's writes cut them */
        if ((end = memmem(w->head, w->hlen, "\r\n\r\n", 4)) == NULL)
            continue;
        w->hdone = (size_t)(end + 4 - w->head);
        http_parser_execute(&w->hp, &head_settings, w->head, w->hdone);
        if (w->complete)
            return request(w);
        return refuse(w, "400 Bad Request", "",
                      HTTP_PARSER_ERRNO(&w->hp) != HPE_OK
                          ? http_errno_description(HTTP_PARSER_ERRNO(&w->hp))
                          : "not an HTTP/1.1 request head");
    }
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
    n = w->lo->read(w->c, w->lo_st, buf, len);
    if (n == -1) {
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

/* wslay hands each frame over in pieces (header, payload): they are gathered, and what a
 * turn produced goes in one write (ob_flush), as the stream layer batches over TCP */
static ssize_t
ws_send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *ud)
{
    struct ws *w = ud;

    (void)flags;
    if (w->olen + len > w->ocap) {
        size_t cap = w->ocap ? w->ocap : 2048;
        uint8_t *b;

        while (cap < w->olen + len)
            cap *= 2;
        if ((b = realloc(w->ob, cap)) == NULL) {
            wslay_event_set_error(ctx, WSLAY_ERR_NOMEM);
            return -1;
        }
        w->ob = b;
        w->ocap = cap;
    }
    memcpy(w->ob + w->olen, data, len);
    w->olen += len;
    return (ssize_t)len;
}

/* Write what was gathered; what the socket does not take waits for it (want_write). A
 * buffer of a burst goes once drained; a small one stays for the next. -1 on an error. */
static int
ob_flush(struct ws *w)
{
    while (w->ooff < w->olen) {
        struct iovec iov = {w->ob + w->ooff, w->olen - w->ooff};
        ssize_t n = w->lo->writev(w->c, w->lo_st, &iov, 1);

        if (n < 0)
            return -1;
        if (n == 0)
            return 0;
        w->ooff += (size_t)n;
    }
    w->olen = w->ooff = 0;
    if (w->ocap > 16384) {
        free(w->ob);
        w->ob = NULL;
        w->ocap = 0;
    }
    if (w->lo->want_write && w->lo->want_write(w->c, w->lo_st) &&
        w->lo->writev(w->c, w->lo_st, NULL, 0) < 0)
        return -1;
    return 0;
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
ws_read(struct conn *c, void *st, uint8_t *buf, size_t len)
{
    struct ws *w = st;
    int rc;

    (void)buf, (void)len;
    w->c = c;
    w->in_recv = 1;
    rc = wslay_event_recv(w->ctx);
    w->in_recv = 0;
    /* a frame wslay could not take (a reserved opcode, a bad length): RFC 6455 §7.1.7
     * fails the connection, with 1002 (§7.4.1) when wslay has not closed it itself */
    if (rc != 0 && !w->eof && !wslay_event_get_close_sent(w->ctx))
        wslay_event_queue_close(w->ctx, WSLAY_CODE_PROTOCOL_ERROR, NULL, 0);
    wslay_event_send(w->ctx);   /* the answers (and a close) queued meanwhile */
    if (ob_flush(w) < 0)
        return -2;
    /* closed, or a close sent or received (a text frame, a frame too large, a protocol
     * error: wslay queued the close with its code, RFC 6455 §7.4.1): the end */
    if (rc != 0 || w->eof || !wslay_event_want_read(w->ctx) ||
        wslay_event_get_close_sent(w->ctx))
        return 0;
    return -1;
}

/* One CoAP message (the pieces of iov) as one binary message, framed here (RFC 6455 §5.2:
 * a server's frames are unmasked; FIN, opcode 2, the length in 7, 16 or 64 bits) and
 * gathered behind what is there already -- so answers leave in order, before a close
 * libwslay makes later -- then written at once, or after the read that caused it. n ==
 * 0: push out what waits. */
static ssize_t
ws_writev(struct conn *c, void *st, const struct iovec *iov, int n)
{
    struct ws *w = st;
    uint8_t h[10];
    size_t len = 0, hl;

    w->c = c;
    for (int i = 0; i < n; i++)
        len += iov[i].iov_len;
    if (len) {
        if (wslay_event_get_close_sent(w->ctx))
            return -1;          /* §5.5.1: no data after our close */
        if (w->olen - w->ooff + len > 2 * w->srv->cfg.tcp_write_bytes)
            return -1;          /* a peer that does not read */
        h[0] = 0x80 | WSLAY_BINARY_FRAME;
        if (len < 126) {
            h[1] = (uint8_t)len;
            hl = 2;
        } else if (len < 65536) {
            h[1] = 126;
            h[2] = (uint8_t)(len >> 8);
            h[3] = (uint8_t)len;
            hl = 4;
        } else {
            h[1] = 127;
            for (int i = 0; i < 8; i++)
                h[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
            hl = 10;
        }
        if (ws_send_cb(w->ctx, h, hl, 0, w) < 0)
            return -1;
        for (int i = 0; i < n; i++)
            if (iov[i].iov_len && ws_send_cb(w->ctx, iov[i].iov_base, iov[i].iov_len, 0, w) < 0)
                return -1;
    }
    if (!w->in_recv && (wslay_event_send(w->ctx) != 0 || ob_flush(w) < 0))
        return -1;
    return (ssize_t)len;
}

static size_t
ws_queued(struct conn *c, void *st)
{
    struct ws *w = st;

    (void)c;
    return w->olen - w->ooff;
}

static int
ws_want_write(struct conn *c, void *st)
{
    struct ws *w = st;

    return (w->lo->want_write && w->lo->want_write(c, w->lo_st)) ||
           (w->out && w->outoff < w->nout) || w->ooff < w->olen;
}

static int
ws_buffered(struct conn *c, void *st)
{
    struct ws *w = st;

    return w->ctx && (w->nrest > 0 || (w->lo->buffered && w->lo->buffered(c, w->lo_st)));
}

static void
ws_free(struct conn *c, void *st)
{
    struct ws *w = st;

    if (w == NULL)
        return;
    w->c = c;
    if (w->ctx) {
        wslay_event_queue_close(w->ctx, 1001, NULL, 0);     /* going away, best effort */
        wslay_event_send(w->ctx);
        ob_flush(w);
        wslay_event_context_free(w->ctx);
    }
    if (w->lo->free)
        w->lo->free(c, w->lo_st);
    free(w->head);
    free(w->out);
    free(w->ob);
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
    .queued = ws_queued,
    .messages = 1,
};

/* ---- the listeners ----------------------------------------------------------------- */

static struct ws *
ws_new(struct endpoint *ep, const struct stream_io *lo, void *lo_st)
{
    struct ws *w = calloc(1, sizeof *w);

    if (w == NULL)
        return NULL;
    w->srv = ep->srv;
    w->lo = lo;
    w->lo_st = lo_st;
    http_parser_init(&w->hp, HTTP_REQUEST);
    w->hp.data = w;
    return w;
}

void
ws_accept(struct endpoint *ep, int fd, const struct peer *p)
{
    struct ws *w = ws_new(ep, &tcp_plain_io, NULL);

    if (w == NULL) {
        close(fd);
        return;
    }
    stream_accept(ep, fd, p, &ws_io, w);
}

/* TLS first (RFC 8323 §8.4; ALPN http/1.1, RFC 7301), then the same HTTP request */
static void
wss_accept(struct endpoint *ep, int fd, const struct peer *p)
{
    void *t = tls_session_new(ep, fd, TLS_ALPN_HTTP);
    struct ws *w = t ? ws_new(ep, &tls_io, t) : NULL;

    if (w == NULL) {
        if (t) {
            struct conn *none = NULL;

            tls_io.free(none, t);
        }
        close(fd);
        return;
    }
    stream_accept(ep, fd, p, &ws_io, w);
}

static const struct moonlet_identity *
wss_identity(const struct session *s)
{
    struct ws *w = s->conn ? stream_io_state(s->conn) : NULL;

    return w ? tls_session_identity(w->lo_st) : NULL;
}

/* coap+ws:// and http:// are two names of one listener, as are coaps+ws:// and https://:
 * each serves the WebSocket upgrade and /metrics */
static const struct transport ws_transports[] = {
    {.scheme = "coap+ws", .ml = &stream_layer, .metric = MT_WS, .send = stream_send, .flush = stream_flush,
     .close = tcp_unlisten, .detach = stream_detach},
    {.scheme = "http", .ml = &stream_layer, .metric = MT_WS, .send = stream_send, .flush = stream_flush,
     .close = tcp_unlisten, .detach = stream_detach},
    {.scheme = "coaps+ws", .ml = &stream_layer, .secure = 1, .metric = MT_WSS, .send = stream_send,
     .flush = stream_flush, .close = tls_unlisten, .identity = wss_identity,
     .detach = stream_detach},
    {.scheme = "https", .ml = &stream_layer, .secure = 1, .metric = MT_WSS, .send = stream_send,
     .flush = stream_flush, .close = tls_unlisten, .identity = wss_identity,
     .detach = stream_detach},
};

struct endpoint *
ws_open(struct server *srv, const char *addr, unsigned port, char *err, size_t errlen)
{
    return tcp_listen(srv, &ws_transports[0], addr, port, ws_accept, err, errlen);
}

struct endpoint *
http_open(struct server *srv, const char *addr, unsigned port, char *err, size_t errlen)
{
    return tcp_listen(srv, &ws_transports[1], addr, port, ws_accept, err, errlen);
}

struct endpoint *
wss_open(struct server *srv, const char *addr, unsigned port, char *err, size_t errlen)
{
    return tls_listen(srv, &ws_transports[2], addr, port, srv->creds, wss_accept, err, errlen);
}

struct endpoint *
https_open(struct server *srv, const char *addr, unsigned port, char *err, size_t errlen)
{
    return tls_listen(srv, &ws_transports[3], addr, port, srv->creds, wss_accept, err, errlen);
}
