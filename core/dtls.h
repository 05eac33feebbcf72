/*
 * dtls.h -- CoAP over DTLS 1.2 (RFC 7252 §9, RFC 6347): the `coaps://` transport. dtls.c
 * is the only file that knows the TLS library (GnuTLS); the rest of the core sees an
 * endpoint whose transport decrypts before the UDP message layer and encrypts after it,
 * and an identity per peer.
 *
 * An association exists only after a peer returned our stateless cookie (RFC 6347 §4.2.1)
 * and passed the per-address handshake rate and the handshakes-in-progress bound; it is
 * usable once the handshake completed, and then its peer's CoAP session starts verified.
 * When it ends (close_notify, a fatal alert, idle time, eviction, a new association from
 * the same address, the listener closing) the CoAP session goes with it.
 */
#ifndef DTLS_H
#define DTLS_H

#include <stddef.h>
#include <stdint.h>

struct server;
struct endpoint;
struct moonlet_identity;
struct peer;
struct transport;

/* One pre-shared key (RFC 4279). */
struct dtls_psk {
    char *identity;
    uint8_t *key;
    size_t len;
};

enum { DTLS_CLIENT_AUTH_DEFAULT, DTLS_CLIENT_AUTH_NONE, DTLS_CLIENT_AUTH_OPTIONAL,
       DTLS_CLIENT_AUTH_REQUIRED };

/* The `dtls` group of the configuration file (paths already resolved), and -d KEY=VALUE. */
struct dtls_config {
    struct dtls_psk *psk;               /* inline keys */
    unsigned npsk;
    char *psk_file;                     /* lines "IDENTITY KEY" (KEY "hex:..." for binary) */
    char *psk_hint;
    char *certificate, *key;            /* X.509 chain and its private key (PEM) */
    char *ca, *crl;                     /* client certificates: trust anchors, revocations */
    int client_auth;                    /* DTLS_CLIENT_AUTH_* */
    char *rpk, *rpk_key;                /* raw public key (RFC 7250): SPKI PEM and key */
    char **rpk_clients;                 /* allowed client keys: "sha256:HEX" of the SPKI */
    unsigned nrpk_clients;
    char *priority;                     /* a GnuTLS priority string, NULL: ours */
};

void dtls_config_free(struct dtls_config *c);
/* Add a key: key is text (hex 0) or hex digits (hex 1). 0 or -1 with err. */
int dtls_config_psk(struct dtls_config *c, const char *identity, const char *key, int hex,
                    char *err, size_t errlen);
/* Set one key of c from text (-d KEY=VALUE: psk=ID:KEY, psk_file, psk_hint, certificate,
 * key, ca, crl, client_auth, rpk, rpk_key, rpk_client, priority). 0 or -1 with err. */
int dtls_config_set(struct dtls_config *c, const char *key, const char *value, char *err,
                    size_t errlen);

/* Credentials built from a configuration: keys read, certificates checked against their
 * keys, the priority string parsed. Reference counted: a listener and every association
 * it made holds one, so a SIGHUP swaps them without touching established sessions.
 * NULL with a one-line reason naming the file. */
struct dtls_creds;
struct dtls_creds *dtls_creds_new(const struct dtls_config *c, char *err, size_t errlen);
void dtls_creds_release(struct dtls_creds *c);
/* Does c hold anything a handshake can use? (a coaps:// listener needs it) */
int dtls_creds_usable(const struct dtls_creds *c);

/* A coaps:// listener on addr:port using creds (a reference is taken). NULL with err. */
struct endpoint *dtls_open(struct server *srv, const char *addr, unsigned port,
                           struct dtls_creds *creds, char *err, size_t errlen);
/* A coaps+tcp:// listener (TLS 1.3/1.2 over TCP, RFC 8323 §8.2) on addr:port using creds
 * (a reference is taken). NULL with err. */
struct endpoint *tls_open(struct server *srv, const char *addr, unsigned port,
                          struct dtls_creds *creds, char *err, size_t errlen);
/* What coaps+ws:// builds on (ws.c): a TLS listener of transport tp with creds (a
 * reference is taken) whose connections go to accept; tls_session_new makes the TLS
 * session of one accepted socket (its handshake is tls_io's), NULL when out of memory;
 * tls_session_identity is its peer's identity once the handshake is done (else NULL). */
struct stream_io;
extern const struct stream_io tls_io;
struct endpoint *tls_listen(struct server *srv, const struct transport *tp, const char *addr,
                            unsigned port, struct dtls_creds *creds,
                            void (*accept)(struct endpoint *ep, int fd, const struct peer *p),
                            char *err, size_t errlen);
void tls_unlisten(struct endpoint *ep);
enum tls_alpn { TLS_ALPN_COAP, TLS_ALPN_HTTP };     /* the protocol ALPN must agree on */
void *tls_session_new(struct endpoint *ep, int fd, enum tls_alpn proto);
const struct moonlet_identity *tls_session_identity(const void *st);
/* The Sec-WebSocket-Accept value for key (RFC 6455 §4.2.2) into out; 0, or -1 for a key
 * that is not 24 characters. (GnuTLS's SHA-1 and base64: this file holds GnuTLS.) */
int tls_ws_accept(const char *key, char *out, size_t len);
/* New handshakes on ep use creds from now on (SIGHUP); established sessions keep theirs. */
void dtls_set_creds(struct endpoint *ep, struct dtls_creds *creds);
/* DTLS associations open and handshakes in progress, all listeners together. */
void dtls_counts(const struct server *srv, unsigned *sessions, unsigned *handshakes);
/* The counters for the SIGUSR1 line, as " dtls_... N" pairs appended to buf. */
void dtls_stats(const struct server *srv, char *buf, size_t len);
/* Shutdown: the process-wide state (keys, counters) goes after the last listener. */
void dtls_fini(struct server *srv);

#endif
