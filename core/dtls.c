/*
 * dtls.c -- CoAP over DTLS 1.2 (RFC 7252 §9, RFC 6347) through GnuTLS; the only file that
 * includes a GnuTLS header. A coaps:// endpoint is a UDP endpoint (udp.c: recvmmsg,
 * sendmmsg batches) whose transport decrypts each datagram into the UDP message layer
 * (exchange_input) and encrypts each message the layer sends into the same batches.
 *
 * State a datagram can create: none before the peer returns a cookie (RFC 6347 §4.2.1:
 * gnutls_dtls_cookie_send/verify, an HMAC of its address under a key rotated every
 * COOKIE_ROTATE seconds); then a handshake, if its address has rate left and fewer than
 * dtls_handshakes are in progress, dropped after dtls_handshake_timeout; then, once
 * authenticated, an association among at most dtls_sessions (the least recently active
 * idle one makes room), freed after dtls_idle without a record from the peer.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/crypto.h>
#include <gnutls/dtls.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "dtls.h"
#include "exchange.h"
#include "layer.h"
#include "log.h"
#include "server.h"
#include "session.h"
#include "stream.h"

/* RFC 7252 §9.1.3: TLS_PSK_WITH_AES_128_CCM_8 and TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 are
 * mandatory; the GCM and ChaCha20 suites are what clients commonly offer. Our order wins,
 * so both libcoap clients (GnuTLS and OpenSSL) end up on the CCM_8 suites. Key exchanges
 * are offered only for the credentials we have: GnuTLS 3.7 otherwise picks a certificate
 * suite a PSK-only server cannot complete ("insufficient credentials") when the client
 * offers both kinds. */
#define DTLS_KX_CERT "+ECDHE-ECDSA:+ECDHE-RSA:"
#define DTLS_KX_PSK "+PSK:+ECDHE-PSK:"
#define DTLS_PRIORITY_REST                                                                 \
    "+AES-128-CCM-8:+AES-128-GCM:+AES-256-GCM:+AES-128-CCM:+CHACHA20-POLY1305:+AEAD:"      \
    "+SIGN-ALL:+GROUP-SECP256R1:+GROUP-X25519:+GROUP-SECP384R1:+COMP-NULL:+CTYPE-ALL:"     \
    "%SERVER_PRECEDENCE"
#define DTLS_MTU 1280           /* IPv6's minimum: a 1024-byte block and its headers fit */
#define COOKIE_ROTATE 30.0      /* a cookie is good for one to two of these, s */
#define RATE_SLOTS 8192         /* per-address handshake buckets (16 bytes each) */
#define LOG_PER_SECOND 10       /* failed-handshake lines, then a count of those left out */

enum { ST_HANDSHAKE, ST_OPEN };

struct dtls_creds {
    unsigned refs;
    gnutls_priority_t prio;             /* DTLS 1.2 */
    gnutls_priority_t tls_prio;         /* TLS 1.3 and 1.2 (coaps+tcp://) */
    gnutls_psk_server_credentials_t psk;
    gnutls_certificate_credentials_t cert;
    struct dtls_psk *keys;              /* sorted by identity: bsearch */
    unsigned nkeys;
    uint8_t (*rpk_ok)[32];              /* allowed client keys, SHA-256 of the SPKI */
    unsigned nrpk_ok;
    unsigned rawpk : 1, x509 : 1, ca : 1;
    int client_auth;
};

/* What the credential callbacks of a handshake see (the session's pointer): DTLS's and
 * TLS's alike. */
struct hs_ctx {
    struct dtls_creds *creds;
    char *why;                          /* why it was refused, for the log line */
    size_t whylen;
};

struct dtls_conn {
    struct hs_ctx hx;                   /* first: gnutls_session_get_ptr */
    struct dtls_conn *hnext;            /* the endpoint's table, by peer */
    struct dtls_conn *prev, *next;      /* open: activity list; handshake: the list of them */
    struct dtls_conn *pred, *succ;      /* a new handshake from an open association's
                                         * address replaces it when done (§4.2.8) */
    struct dtls_ep *d;
    gnutls_session_t s;
    struct dtls_creds *creds;
    struct peer peer;
    uint32_t hash;
    uint8_t state, intable;
    const uint8_t *in;                  /* the datagram being read (pull), or NULL */
    size_t inlen;
    ev_timer tmr;                       /* handshake: retransmission and the deadline */
    ev_tstamp start, last;
    struct moonlet_identity id;
    char *idmem;                        /* the identity's strings */
};

struct dtls_ep {
    struct endpoint *ep;
    struct dtls_creds *creds;
    struct dtls_conn **buckets;
    size_t nbuckets, count;
    struct dtls_conn *mru, *lru;        /* open associations by activity */
    struct dtls_conn *hs;               /* handshakes in progress */
    struct dtls_conn *cur;              /* the last one looked up */
    ev_timer sweep;
    uint8_t plain[2048];                /* one decrypted record */
};

struct rate {
    uint32_t key;
    float tokens;
    ev_tstamp t;
};

struct dtls_state {
    gnutls_datum_t cookie[2];           /* current, previous */
    ev_tstamp cookie_at;
    gnutls_datum_t stek[2];             /* session ticket masters: current, previous */
    ev_tstamp stek_at;
    uint64_t key;                       /* address hash key */
    unsigned nopen, nhs;                /* all endpoints together */
    ev_tstamp log_at;
    unsigned log_n, log_skipped;
    struct rate rate[RATE_SLOTS];
    char why[160];                      /* why a callback refused the handshake being driven
                                         * (one at a time: not kept per association) */
    struct {
        unsigned long hvr, cookie_ok, full, resumed, fail_timeout, fail_psk, fail_cert,
            fail_alert, fail_other, rate_limited, hs_full, evicted, idle, closed_by_peer,
            replaced, stray, sessions_full;
    } n;
};

static const struct moonlet_identity id_none = {MOONLET_AUTH_NONE, "", (const char *const[]){NULL}};

/* ---- configuration ------------------------------------------------------------------ */

void
dtls_config_free(struct dtls_config *c)
{
    for (unsigned i = 0; i < c->npsk; i++) {
        free(c->psk[i].identity);
        free(c->psk[i].key);
    }
    free(c->psk);
    for (unsigned i = 0; i < c->nrpk_clients; i++)
        free(c->rpk_clients[i]);
    free(c->rpk_clients);
    free(c->psk_file);
    free(c->psk_hint);
    free(c->certificate);
    free(c->key);
    free(c->ca);
    free(c->crl);
    free(c->rpk);
    free(c->rpk_key);
    free(c->priority);
    memset(c, 0, sizeof *c);
}

static int
unhex(const char *hex, uint8_t **out, size_t *len)
{
    size_t n = strlen(hex);
    uint8_t *b;

    if (n == 0 || n % 2 || (b = malloc(n / 2)) == NULL)
        return -1;
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;

        if (sscanf(hex + 2 * i, "%2x", &v) != 1 || !strchr("0123456789abcdefABCDEF", hex[2 * i]) ||
            !strchr("0123456789abcdefABCDEF", hex[2 * i + 1])) {
            free(b);
            return -1;
        }
        b[i] = (uint8_t)v;
    }
    *out = b;
    *len = n / 2;
    return 0;
}

/* A key as written: text, or "hex:..." for binary. */
static int
key_value(const char *text, uint8_t **out, size_t *len)
{
    if (strncmp(text, "hex:", 4) == 0)
        return unhex(text + 4, out, len);
    *len = strlen(text);
    if (*len == 0 || (*out = malloc(*len)) == NULL)
        return -1;
    memcpy(*out, text, *len);
    return 0;
}

int
dtls_config_psk(struct dtls_config *c, const char *identity, const char *key, int hex,
                char *err, size_t errlen)
{
    struct dtls_psk *l, k = {0};

    if (*identity == '\0' || strlen(identity) > 128) {
        snprintf(err, errlen, "a PSK identity has 1 to 128 bytes");
        return -1;
    }
    if (hex ? unhex(key, &k.key, &k.len) < 0
            : (k.len = strlen(key)) == 0 || (k.key = (uint8_t *)strdup(key)) == NULL) {
        snprintf(err, errlen, "'%s': %s", identity,
                 hex ? "hex must be an even number of hex digits" : "an empty key");
        return -1;
    }
    if ((l = realloc(c->psk, (c->npsk + 1) * sizeof *l)) == NULL ||
        (k.identity = strdup(identity)) == NULL) {
        if (l)
            c->psk = l;
        free(k.key);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    c->psk = l;
    c->psk[c->npsk++] = k;
    return 0;
}

int
dtls_config_set(struct dtls_config *c, const char *key, const char *value, char *err,
                size_t errlen)
{
    static const struct {
        const char *name;
        size_t off;
    } paths[] = {
        {"psk_file", offsetof(struct dtls_config, psk_file)},
        {"psk_hint", offsetof(struct dtls_config, psk_hint)},
        {"certificate", offsetof(struct dtls_config, certificate)},
        {"key", offsetof(struct dtls_config, key)},
        {"ca", offsetof(struct dtls_config, ca)},
        {"crl", offsetof(struct dtls_config, crl)},
        {"rpk", offsetof(struct dtls_config, rpk)},
        {"rpk_key", offsetof(struct dtls_config, rpk_key)},
        {"priority", offsetof(struct dtls_config, priority)},
    };

    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        char **p = (char **)((char *)c + paths[i].off);

        if (strcmp(key, paths[i].name) != 0)
            continue;
        free(*p);
        *p = strdup(value);
        return 0;
    }
    if (strcmp(key, "client_auth") == 0) {
        static const char *const modes[] = {"none", "optional", "required"};

        for (int i = 0; i < 3; i++)
            if (strcmp(value, modes[i]) == 0) {
                c->client_auth = DTLS_CLIENT_AUTH_NONE + i;
                return 0;
            }
        snprintf(err, errlen, "client_auth=%s: one of none, optional, required", value);
        return -1;
    }
    if (strcmp(key, "rpk_client") == 0) {
        char **l;
        uint8_t *h = NULL;
        size_t n = 0;
        int ok = strncmp(value, "sha256:", 7) == 0 && unhex(value + 7, &h, &n) == 0 && n == 32;

        free(h);
        if (!ok) {
            snprintf(err, errlen, "rpk_client=%s: sha256: and 64 hex digits (the SHA-256 of "
                     "the client's SubjectPublicKeyInfo)", value);
            return -1;
        }
        if ((l = realloc(c->rpk_clients, (c->nrpk_clients + 1) * sizeof *l)) == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        c->rpk_clients = l;
        l[c->nrpk_clients++] = strdup(value);
        return 0;
    }
    if (strcmp(key, "psk") == 0) {    /* IDENTITY:KEY or IDENTITY:hex:HEX */
        const char *colon = strchr(value, ':');
        char *id;
        int rc;

        if (colon == NULL || colon == value) {
            snprintf(err, errlen, "psk=%s: IDENTITY:KEY (KEY as text, or hex:HEX)", value);
            return -1;
        }
        if ((id = strndup(value, (size_t)(colon - value))) == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        rc = strncmp(colon + 1, "hex:", 4) == 0
                 ? dtls_config_psk(c, id, colon + 5, 1, err, errlen)
                 : dtls_config_psk(c, id, colon + 1, 0, err, errlen);
        free(id);
        return rc;
    }
    snprintf(err, errlen, "%s: unknown dtls key (psk, psk_file, psk_hint, certificate, key, ca, "
             "crl, client_auth, rpk, rpk_key, rpk_client, priority)", key);
    return -1;
}

/* ---- credentials -------------------------------------------------------------------- */

static int
psk_cmp(const void *a, const void *b)
{
    return strcmp(((const struct dtls_psk *)a)->identity, ((const struct dtls_psk *)b)->identity);
}

static int
add_key(struct dtls_creds *c, const char *id, size_t idlen, const uint8_t *key, size_t len)
{
    struct dtls_psk *l = realloc(c->keys, (c->nkeys + 1) * sizeof *l);

    if (l == NULL)
        return -1;
    c->keys = l;
    l[c->nkeys].identity = strndup(id, idlen);
    l[c->nkeys].key = malloc(len);
    l[c->nkeys].len = len;
    if (l[c->nkeys].identity == NULL || l[c->nkeys].key == NULL) {
        free(l[c->nkeys].identity);
        free(l[c->nkeys].key);
        return -1;
    }
    memcpy(l[c->nkeys].key, key, len);
    c->nkeys++;
    return 0;
}

/* A key file: one "IDENTITY KEY" per line (KEY the rest of the line: text, or hex:HEX);
 * blank lines and lines starting with '#' are skipped. */
static int
read_psk_file(struct dtls_creds *c, const char *file, char *err, size_t errlen)
{
    FILE *f = fopen(file, "r");
    char line[4096];
    unsigned no = 0;

    if (f == NULL) {
        snprintf(err, errlen, "%s: cannot read the PSK file: %s", file, strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof line, f)) {
        char *p = line, *id, *k;
        uint8_t *key;
        size_t len, n = strlen(line);

        no++;
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '\0' || *p == '#')
            continue;
        id = p;
        while (*p && *p != ' ' && *p != '\t')
            p++;
        k = p;
        while (*k == ' ' || *k == '\t')
            k++;
        if (*k == '\0' || key_value(k, &key, &len) < 0) {
            snprintf(err, errlen, "%s:%u: expected IDENTITY KEY (KEY as text, or hex:HEX)", file,
                     no);
            fclose(f);
            return -1;
        }
        if (add_key(c, id, (size_t)(p - id), key, len) < 0) {
            free(key);
            fclose(f);
            snprintf(err, errlen, "%s: out of memory", file);
            return -1;
        }
        free(key);
    }
    fclose(f);
    return 0;
}

/* A callback refuses the handshake of c: why, for the log line and the counters. */
static void refuse(struct hs_ctx *c, const char *fmt, ...) MOONLET_PRINTF(2, 3);

static void
refuse(struct hs_ctx *c, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(c->why, c->whylen, fmt, ap);
    va_end(ap);
}

static int
psk_lookup(gnutls_session_t s, const char *username, gnutls_datum_t *key)
{
    struct hs_ctx *c = gnutls_session_get_ptr(s);
    struct dtls_psk probe = {(char *)username, NULL, 0}, *k;

    k = bsearch(&probe, c->creds->keys, c->creds->nkeys, sizeof *k, psk_cmp);
    if (k == NULL) {
        refuse(c, "unknown PSK identity '%.64s'", username);
        return -1;      /* GnuTLS answers unknown_psk_identity (RFC 4279 §2) */
    }
    if ((key->data = gnutls_malloc(k->len)) == NULL)
        return -1;
    memcpy(key->data, k->key, k->len);
    key->size = (unsigned)k->len;
    return 0;
}

static int
rpk_cmp(const void *a, const void *b)
{
    return memcmp(a, b, 32);
}

/* The client's certificate or raw public key, after the handshake has it (RFC 7250 §3,
 * RFC 5280 path validation by GnuTLS against the CA bundle, CRLs and validity dates). */
static int
verify_peer(gnutls_session_t s)
{
    struct hs_ctx *c = gnutls_session_get_ptr(s);
    const struct dtls_creds *cr = c->creds;
    unsigned n = 0, status = 0;
    const gnutls_datum_t *certs = gnutls_certificate_get_peers(s, &n);

    if (certs == NULL || n == 0) {
        if (cr->client_auth == DTLS_CLIENT_AUTH_REQUIRED) {
            refuse(c, "no client certificate (client_auth required)");
            return -1;
        }
        return 0;
    }
    if (gnutls_certificate_type_get2(s, GNUTLS_CTYPE_CLIENT) == GNUTLS_CRT_RAWPK) {
        uint8_t h[32];

        gnutls_hash_fast(GNUTLS_DIG_SHA256, certs[0].data, certs[0].size, h);
        if (cr->nrpk_ok == 0 || bsearch(h, cr->rpk_ok, cr->nrpk_ok, 32, rpk_cmp) == NULL) {
            refuse(c, "raw public key not on rpk_clients");
            return -1;
        }
        return 0;
    }
    if (!cr->ca) {
        refuse(c, "client certificate, but no ca to check it against");
        return -1;
    }
    if (gnutls_certificate_verify_peers2(s, &status) < 0 || status) {
        gnutls_datum_t out = {0};

        gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0);
        refuse(c, "client certificate: %s",
                 out.data ? (const char *)out.data : "not verified");
        gnutls_free(out.data);
        return -1;      /* GnuTLS answers with a fatal alert (bad_certificate) */
    }
    return 0;
}

/* Does file exist and can we read it? The one line names it. */
static int
readable(const char *what, const char *file, char *err, size_t errlen)
{
    FILE *f = fopen(file, "r");

    if (f == NULL) {
        snprintf(err, errlen, "%s: cannot read the %s: %s", file, what, strerror(errno));
        return -1;
    }
    fclose(f);
    return 0;
}

static const char *
tls_reason(int rc)
{
    switch (rc) {
    case GNUTLS_E_CERTIFICATE_KEY_MISMATCH:
        return "the private key does not match the certificate";
    case GNUTLS_E_BASE64_DECODING_ERROR:
    case GNUTLS_E_BASE64_UNEXPECTED_HEADER_ERROR:
    case GNUTLS_E_ASN1_DER_ERROR:
    case GNUTLS_E_PARSING_ERROR:
        return "not a PEM file of the right kind";
    default:
        return gnutls_strerror(rc);
    }
}

struct dtls_creds *
dtls_creds_new(const struct dtls_config *cf, char *err, size_t errlen)
{
    struct dtls_creds *c = calloc(1, sizeof *c);
    const char *at = NULL;
    int rc;

    if (c == NULL || gnutls_global_init() < 0) {
        snprintf(err, errlen, "dtls: out of memory");
        free(c);
        return NULL;
    }
    c->refs = 1;
    for (unsigned i = 0; i < cf->npsk; i++)
        if (add_key(c, cf->psk[i].identity, strlen(cf->psk[i].identity), cf->psk[i].key,
                    cf->psk[i].len) < 0)
            goto nomem;
    if (cf->psk_file && read_psk_file(c, cf->psk_file, err, errlen) < 0)
        goto fail;
    if (c->nkeys)
        qsort(c->keys, c->nkeys, sizeof *c->keys, psk_cmp);
    for (unsigned i = 1; i < c->nkeys; i++)
        if (strcmp(c->keys[i - 1].identity, c->keys[i].identity) == 0) {
            snprintf(err, errlen, "dtls: PSK identity '%s' given twice", c->keys[i].identity);
            goto fail;
        }
    if (c->nkeys) {
        if (gnutls_psk_allocate_server_credentials(&c->psk) < 0)
            goto nomem;
        gnutls_psk_set_server_credentials_function(c->psk, psk_lookup);
        if (cf->psk_hint)
            gnutls_psk_set_server_credentials_hint(c->psk, cf->psk_hint);
    }
    if ((cf->certificate != NULL) != (cf->key != NULL)) {
        snprintf(err, errlen, "dtls: certificate and key come together (%s given alone)",
                 cf->certificate ? "certificate" : "key");
        goto fail;
    }
    if ((cf->rpk != NULL) != (cf->rpk_key != NULL)) {
        snprintf(err, errlen, "dtls: rpk and rpk_key come together (%s given alone)",
                 cf->rpk ? "rpk" : "rpk_key");
        goto fail;
    }
    if (cf->certificate || cf->rpk) {
        if (gnutls_certificate_allocate_credentials(&c->cert) < 0)
            goto nomem;
        gnutls_certificate_set_verify_function(c->cert, verify_peer);
    }
    if (cf->certificate) {
        if (readable("certificate", cf->certificate, err, errlen) < 0 ||
            readable("private key", cf->key, err, errlen) < 0)
            goto fail;
        if ((rc = gnutls_certificate_set_x509_key_file(c->cert, cf->certificate, cf->key,
                                                       GNUTLS_X509_FMT_PEM)) < 0) {
            snprintf(err, errlen, "%s (key %s): %s", cf->certificate, cf->key, tls_reason(rc));
            goto fail;
        }
        c->x509 = 1;
    }
    if (cf->rpk) {
        if (readable("raw public key", cf->rpk, err, errlen) < 0 ||
            readable("private key", cf->rpk_key, err, errlen) < 0)
            goto fail;
        if ((rc = gnutls_certificate_set_rawpk_key_file(c->cert, cf->rpk, cf->rpk_key,
                                                        GNUTLS_X509_FMT_PEM, NULL, 0, NULL, 0,
                                                        0, 0)) < 0) {
            snprintf(err, errlen, "%s (key %s): %s", cf->rpk, cf->rpk_key, tls_reason(rc));
            goto fail;
        }
        c->rawpk = 1;
    }
    if (cf->ca) {
        if (c->cert == NULL) {
            snprintf(err, errlen, "dtls: ca needs a certificate (or rpk) of the server's own");
            goto fail;
        }
        if (readable("CA bundle", cf->ca, err, errlen) < 0)
            goto fail;
        if ((rc = gnutls_certificate_set_x509_trust_file(c->cert, cf->ca,
                                                         GNUTLS_X509_FMT_PEM)) <= 0) {
            snprintf(err, errlen, "%s: %s", cf->ca,
                     rc == 0 ? "no certificate in the CA bundle" : tls_reason(rc));
            goto fail;
        }
        c->ca = 1;
    }
    if (cf->crl) {
        if (!c->ca) {
            snprintf(err, errlen, "dtls: crl needs a ca");
            goto fail;
        }
        if (readable("CRL", cf->crl, err, errlen) < 0)
            goto fail;
        if ((rc = gnutls_certificate_set_x509_crl_file(c->cert, cf->crl, GNUTLS_X509_FMT_PEM)) <
            0) {
            snprintf(err, errlen, "%s: %s", cf->crl, tls_reason(rc));
            goto fail;
        }
    }
    if (cf->nrpk_clients) {
        if (!c->rawpk) {
            snprintf(err, errlen, "dtls: rpk_clients need the server's own rpk and rpk_key");
            goto fail;
        }
        if ((c->rpk_ok = calloc(cf->nrpk_clients, 32)) == NULL)
            goto nomem;
        for (unsigned i = 0; i < cf->nrpk_clients; i++) {
            uint8_t *h;
            size_t n;

            if (unhex(cf->rpk_clients[i] + 7, &h, &n) < 0)
                goto nomem;
            memcpy(c->rpk_ok[i], h, 32);
            free(h);
        }
        c->nrpk_ok = cf->nrpk_clients;
        qsort(c->rpk_ok, c->nrpk_ok, 32, rpk_cmp);
    }
    {
        char prio[512];

        snprintf(prio, sizeof prio, "NONE:+VERS-DTLS1.2:%s%s%s",
                 c->x509 || c->rawpk ? DTLS_KX_CERT : "", c->nkeys ? DTLS_KX_PSK : "",
                 DTLS_PRIORITY_REST);
        if ((rc = gnutls_priority_init2(&c->prio, cf->priority ? cf->priority : prio, &at,
                                        0)) < 0) {
            snprintf(err, errlen, "dtls: priority '%s': %s at '%.32s'",
                     cf->priority ? cf->priority : prio, gnutls_strerror(rc), at ? at : "");
            goto fail;
        }
        /* coaps+tcp: TLS 1.3 and 1.2 with the same key exchanges (RFC 8323 §9.1: the
         * suites of RFC 7925 where TLS 1.2; TLS 1.3's own) */
        snprintf(prio, sizeof prio, "NONE:+VERS-TLS1.3:+VERS-TLS1.2:%s%s%s",
                 c->x509 || c->rawpk ? DTLS_KX_CERT : "", c->nkeys ? DTLS_KX_PSK : "",
                 DTLS_PRIORITY_REST);
        if ((rc = gnutls_priority_init2(&c->tls_prio, prio, &at, 0)) < 0) {
            snprintf(err, errlen, "tls: priority '%s': %s at '%.32s'", prio,
                     gnutls_strerror(rc), at ? at : "");
            goto fail;
        }
    }
    c->client_auth = cf->client_auth;
    if (c->client_auth == DTLS_CLIENT_AUTH_DEFAULT)
        c->client_auth = c->ca || c->nrpk_ok ? DTLS_CLIENT_AUTH_OPTIONAL : DTLS_CLIENT_AUTH_NONE;
    if (c->client_auth != DTLS_CLIENT_AUTH_NONE && !c->ca && !c->nrpk_ok) {
        snprintf(err, errlen, "dtls: client_auth needs a ca or rpk_clients to check clients");
        goto fail;
    }
    return c;
nomem:
    snprintf(err, errlen, "dtls: out of memory");
fail:
    dtls_creds_release(c);
    return NULL;
}

int
dtls_creds_usable(const struct dtls_creds *c)
{
    return c && (c->nkeys || c->x509 || c->rawpk);
}

void
dtls_creds_release(struct dtls_creds *c)
{
    if (c == NULL || --c->refs)
        return;
    if (c->prio)
        gnutls_priority_deinit(c->prio);
    if (c->tls_prio)
        gnutls_priority_deinit(c->tls_prio);
    if (c->psk)
        gnutls_psk_free_server_credentials(c->psk);
    if (c->cert)
        gnutls_certificate_free_credentials(c->cert);
    for (unsigned i = 0; i < c->nkeys; i++) {
        gnutls_memset(c->keys[i].key, 0, c->keys[i].len);
        free(c->keys[i].key);
        free(c->keys[i].identity);
    }
    free(c->keys);
    free(c->rpk_ok);
    free(c);
    gnutls_global_deinit();
}

/* ---- process-wide state: keys, counters, the per-address rate --------------------- */

static struct dtls_state *
state(struct server *srv)
{
    struct dtls_state *st = srv->dtls;

    if (st)
        return st;
    if ((st = calloc(1, sizeof *st)) == NULL)
        return NULL;
    if (gnutls_global_init() < 0 ||
        gnutls_key_generate(&st->cookie[0], GNUTLS_COOKIE_KEY_SIZE) < 0 ||
        gnutls_session_ticket_key_generate(&st->stek[0]) < 0 ||
        gnutls_rnd(GNUTLS_RND_NONCE, &st->key, sizeof st->key) < 0) {
        free(st);
        return NULL;
    }
    st->cookie_at = st->stek_at = ev_now(srv->loop);
    srv->dtls = st;
    return st;
}

void
dtls_fini(struct server *srv)
{
    struct dtls_state *st = srv->dtls;

    if (st == NULL)
        return;
    for (int i = 0; i < 2; i++) {
        gnutls_free(st->cookie[i].data);
        if (st->stek[i].data)
            gnutls_memset(st->stek[i].data, 0, st->stek[i].size);
        gnutls_free(st->stek[i].data);
    }
    free(st);
    srv->dtls = NULL;
    gnutls_global_deinit();
}

static void
rotate(gnutls_datum_t k[2], int ticket)
{
    gnutls_datum_t fresh = {0};

    if ((ticket ? gnutls_session_ticket_key_generate(&fresh)
                : gnutls_key_generate(&fresh, GNUTLS_COOKIE_KEY_SIZE)) < 0)
        return;         /* keep the old keys rather than none */
    if (k[1].data)
        gnutls_memset(k[1].data, 0, k[1].size);
    gnutls_free(k[1].data);
    k[1] = k[0];
    k[0] = fresh;
}

/* Keys change lazily, when a ClientHello needs them. */
static void
keys_tick(struct server *srv, struct dtls_state *st)
{
    ev_tstamp now = ev_now(srv->loop);

    if (now - st->cookie_at >= COOKIE_ROTATE) {
        rotate(st->cookie, 0);
        st->cookie_at = now;
    }
    if (srv->cfg.dtls_ticket_rotate > 0 && now - st->stek_at >= srv->cfg.dtls_ticket_rotate) {
        rotate(st->stek, 1);
        st->stek_at = now;
    }
}

/* May the peer's address start one more handshake now? A token bucket per address (the
 * port does not count), dtls_handshake_rate per second with a burst as large. Buckets live
 * in a table of RATE_SLOTS, two candidate slots per address (two halves of a keyed hash):
 * an address uses the slot that holds it, else takes the one whose bucket is the fuller
 * (the longer unused), so distinct devices rarely share tokens (a shared bucket would
 * throttle a device that made a single handshake) and memory stays fixed. */
static int
rate_ok(struct server *srv, struct dtls_state *st, const struct peer *p)
{
    struct peer a = *p;
    double rate = srv->cfg.dtls_handshake_rate, burst = rate < 1 ? 1 : rate;
    ev_tstamp now = ev_now(srv->loop);
    uint32_t h;
    struct rate *r, *r2;

    if (a.u.sa.sa_family == AF_INET6)
        a.u.in6.sin6_port = 0;
    else
        a.u.in.sin_port = 0;
    h = peer_hash(&a, st->key) | 1;
    r = &st->rate[(h & 0xffff) % RATE_SLOTS];
    r2 = &st->rate[(h >> 16) % RATE_SLOTS];
    if (r->key != h) {
        if (r2->key == h || r2->t < r->t)
            r = r2;
        if (r->key != h) {      /* a new address, or one whose slot was taken: full */
            r->key = h;
            r->tokens = (float)burst;
            r->t = now;
        }
    }
    r->tokens += (float)((now - r->t) * rate);
    if (r->tokens > burst)
        r->tokens = (float)burst;
    r->t = now;
    if (r->tokens < 1)
        return 0;
    r->tokens -= 1;
    return 1;
}

/* ---- associations ------------------------------------------------------------------- */

static uint32_t
conn_hash(const struct dtls_ep *d, const struct peer *p)
{
    return peer_hash(p, d->ep->srv->dtls->key);
}

static struct dtls_conn *
conn_find(struct dtls_ep *d, const struct peer *p)
{
    uint32_t h;

    if (d->cur && peer_equal(&d->cur->peer, p))
        return d->cur;
    h = conn_hash(d, p);
    for (struct dtls_conn *c = d->buckets[h & (d->nbuckets - 1)]; c; c = c->hnext)
        if (c->hash == h && peer_equal(&c->peer, p))
            return d->cur = c;
    return NULL;
}

static void
table_grow(struct dtls_ep *d)
{
    size_t n = d->nbuckets * 2;
    struct dtls_conn **b = calloc(n, sizeof *b);

    if (b == NULL)
        return;
    for (size_t i = 0; i < d->nbuckets; i++)
        for (struct dtls_conn *c = d->buckets[i], *next; c; c = next) {
            next = c->hnext;
            c->hnext = b[c->hash & (n - 1)];
            b[c->hash & (n - 1)] = c;
        }
    free(d->buckets);
    d->buckets = b;
    d->nbuckets = n;
}

static void
table_add(struct dtls_ep *d, struct dtls_conn *c)
{
    struct dtls_conn **b = &d->buckets[c->hash & (d->nbuckets - 1)];

    c->hnext = *b;
    *b = c;
    c->intable = 1;
    if (++d->count > d->nbuckets)
        table_grow(d);
}

static void
table_del(struct dtls_ep *d, struct dtls_conn *c)
{
    struct dtls_conn **pp = &d->buckets[c->hash & (d->nbuckets - 1)];

    if (!c->intable)
        return;
    while (*pp != c)
        pp = &(*pp)->hnext;
    *pp = c->hnext;
    c->intable = 0;
    d->count--;
    if (d->cur == c)
        d->cur = NULL;
}

/* The lists: open associations (mru..lru) or handshakes (d->hs, unordered). */
static void
list_del(struct dtls_ep *d, struct dtls_conn *c)
{
    if (c->state == ST_OPEN) {
        if (c->prev)
            c->prev->next = c->next;
        else
            d->mru = c->next;
        if (c->next)
            c->next->prev = c->prev;
        else
            d->lru = c->prev;
    } else {
        if (c->prev)
            c->prev->next = c->next;
        else
            d->hs = c->next;
        if (c->next)
            c->next->prev = c->prev;
    }
    c->prev = c->next = NULL;
}

static void
list_push(struct dtls_ep *d, struct dtls_conn *c)
{
    struct dtls_conn **head = c->state == ST_OPEN ? &d->mru : &d->hs;

    c->prev = NULL;
    c->next = *head;
    if (*head)
        (*head)->prev = c;
    *head = c;
    if (c->state == ST_OPEN && d->lru == NULL)
        d->lru = c;
}

/* The peer used the association: it moves to the front of the activity list. */
static void
touch(struct dtls_ep *d, struct dtls_conn *c, ev_tstamp now)
{
    c->last = now;
    if (c->state == ST_OPEN && d->mru != c) {
        list_del(d, c);
        list_push(d, c);
    }
}

static void
log_fail_at(struct server *srv, const char *ep, const struct peer *p, const char *what)
{
    struct dtls_state *st = srv->dtls;
    ev_tstamp now = ev_now(srv->loop);
    char pb[64];

    /* a flood of failures is not a flood of lines (issue 14): LOG_PER_SECOND, then a sum */
    if (now - st->log_at >= 1.0) {
        if (st->log_skipped)
            log_warn("dtls: %u more failed handshakes not logged", st->log_skipped);
        st->log_at = now;
        st->log_n = st->log_skipped = 0;
    }
    if (st->log_n++ >= LOG_PER_SECOND) {
        st->log_skipped++;
        return;
    }
    log_warn("%s: handshake with %s failed: %s", ep, peer_str(p, pb, sizeof pb), what);
}

static void
log_fail(struct server *srv, const struct dtls_conn *c, const char *what)
{
    log_fail_at(srv, c->d->ep->name, &c->peer, what);
}

/* The association ends. bye: tell the peer (close_notify, RFC 5246 §7.2.1). Its CoAP
 * session goes with it: observations end, uploads and deferred answers are dropped. */
static void
conn_free(struct dtls_conn *c, int bye)
{
    struct dtls_ep *d = c->d;
    struct server *srv = d->ep->srv;
    struct dtls_state *st = srv->dtls;
    struct dtls_conn *succ = c->succ;

    if (bye && c->state == ST_OPEN)
        gnutls_bye(c->s, GNUTLS_SHUT_WR);   /* non-blocking: one record, no wait */
    table_del(d, c);
    list_del(d, c);
    if (c->pred)
        c->pred->succ = NULL;
    if (c->state == ST_OPEN) {
        struct session *s = session_find(srv, d->ep, &c->peer);

        st->nopen--;
        if (s)
            session_close(srv, s);
    } else {
        st->nhs--;
    }
    if (succ) {         /* the new handshake goes on by itself */
        succ->pred = NULL;
        table_add(d, succ);
    }
    ev_timer_stop(srv->loop, &c->tmr);
    gnutls_deinit(c->s);
    dtls_creds_release(c->creds);
    free(c->idmem);
    free(c);
}

static ssize_t
push(gnutls_transport_ptr_t ptr, const void *buf, size_t len)
{
    struct dtls_conn *c = ptr;
    struct iovec v = {(void *)buf, len};

    /* a full batch or socket is loss: DTLS retransmits handshakes, CoAP the rest */
    udp_queue(c->d->ep, &c->peer, &v, 1);
    return (ssize_t)len;
}

/* A flight's records as one datagram (else each handshake message goes on its own) */
static ssize_t
push_vec(gnutls_transport_ptr_t ptr, const giovec_t *iov, int n)
{
    struct dtls_conn *c = ptr;
    ssize_t len = 0;

    udp_queue(c->d->ep, &c->peer, (const struct iovec *)iov, n);
    for (int i = 0; i < n; i++)
        len += (ssize_t)iov[i].iov_len;
    return len;
}

static ssize_t
pull(gnutls_transport_ptr_t ptr, void *buf, size_t len)
{
    struct dtls_conn *c = ptr;
    size_t n = c->inlen < len ? c->inlen : len;

    if (c->in == NULL) {
        gnutls_transport_set_errno(c->s, EAGAIN);
        return -1;
    }
    memcpy(buf, c->in, n);
    c->in = NULL;
    c->inlen = 0;
    return (ssize_t)n;
}

static int
pull_timeout(gnutls_transport_ptr_t ptr, unsigned ms)
{
    (void)ms;       /* never waits: the event loop does */
    return ((struct dtls_conn *)ptr)->in != NULL;
}

/* Walk a ClientHello (RFC 6347 §4.2.2; its shape was checked) to the session ticket
 * extension (RFC 5077 §3.2, type 35): its body, or NULL. */
static const uint8_t *
hello_ticket(const uint8_t *d, size_t n, size_t *len)
{
    size_t pos = 13 + 12 + 2 + 32, end;

    if (pos >= n)
        return NULL;
    pos += 1 + d[pos];                              /* session id */
    if (pos >= n)
        return NULL;
    pos += 1 + d[pos];                              /* cookie */
    if (pos + 2 > n)
        return NULL;
    pos += 2 + ((size_t)d[pos] << 8 | d[pos + 1]);  /* cipher suites */
    if (pos >= n)
        return NULL;
    pos += 1 + d[pos];                              /* compression methods */
    if (pos + 2 > n)
        return NULL;
    end = pos + 2 + ((size_t)d[pos] << 8 | d[pos + 1]);
    pos += 2;
    if (end > n)
        return NULL;
    while (pos + 4 <= end) {
        unsigned type = (unsigned)d[pos] << 8 | d[pos + 1];
        size_t elen = (size_t)d[pos + 2] << 8 | d[pos + 3];

        pos += 4;
        if (pos + elen > end)
            return NULL;
        if (type == 35) {
            *len = elen;
            return elen ? d + pos : NULL;
        }
        pos += elen;
    }
    return NULL;
}

/* Which master key sealed this ticket? GnuTLS 3.7 seals tickets under a key derived from
 * the master as SHA3-512(T || master), T the time in periods of three ticket lifetimes,
 * and accepts T and T-1; a ticket starts with that key's first 16 bytes, its name. We
 * rotate masters (current, previous) and pick the one whose key names the ticket, so a
 * ticket survives one rotation. 0, 1, or -1 (unknown: a full handshake follows). */
static int
ticket_master(const struct dtls_state *st, const uint8_t *name, double lifetime)
{
    uint64_t period = (uint64_t)time(NULL) / (uint64_t)(3 * lifetime);

    for (int m = 0; m < 2; m++) {
        if (st->stek[m].data == NULL || st->stek[m].size != 64)
            continue;
        for (uint64_t t = period; t + 1 >= period && t > 0; t--) {
            uint8_t in[8 + 64], out[64];

            for (int i = 0; i < 8; i++)
                in[i] = (uint8_t)(t >> (56 - 8 * i));
            memcpy(in + 8, st->stek[m].data, 64);
            if (gnutls_hash_fast(GNUTLS_DIG_SHA3_512, in, sizeof in, out) == 0 &&
                memcmp(out, name, 16) == 0)
                return m;
        }
    }
    return -1;
}

static int drive(struct dtls_conn *c);

static void
hs_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct dtls_conn *c = (struct dtls_conn *)((char *)w - offsetof(struct dtls_conn, tmr));

    (void)loop, (void)revents;
    if (ev_now(loop) - c->start >= c->d->ep->srv->cfg.dtls_handshake_timeout) {
        c->d->ep->srv->dtls->n.fail_timeout++;
        log_fail(c->d->ep->srv, c, "timed out (a wrong PSK ends so too)");
        conn_free(c, 0);
        return;
    }
    drive(c);   /* GnuTLS retransmits its last flight (RFC 6347 §4.2.4) */
    udp_flush(c->d->ep);
}

/* A handshake for the peer (cookie returned, rate and bounds checked): a GnuTLS session
 * primed with the ClientHello's prestate. pred: the open association it would replace. */
static struct dtls_conn *
conn_new(struct dtls_ep *d, const struct peer *p, gnutls_dtls_prestate_st *pre,
         const uint8_t *hello, size_t n, struct dtls_conn *pred)
{
    struct server *srv = d->ep->srv;
    struct dtls_state *st = srv->dtls;
    struct dtls_creds *cr = d->creds;
    unsigned flags = GNUTLS_SERVER | GNUTLS_DATAGRAM | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL;
    struct dtls_conn *c = calloc(1, sizeof *c);
    double lifetime = 2 * srv->cfg.dtls_ticket_rotate;

    if (c == NULL)
        return NULL;
    if (cr->rawpk)
        flags |= GNUTLS_ENABLE_RAWPK;
    if (srv->cfg.dtls_ticket_rotate <= 0)
        flags |= GNUTLS_NO_TICKETS;
    if (gnutls_init(&c->s, flags) < 0) {
        free(c);
        return NULL;
    }
    c->d = d;
    c->peer = *p;
    c->hash = conn_hash(d, p);
    c->creds = cr;
    cr->refs++;
    c->state = ST_HANDSHAKE;
    c->start = c->last = ev_now(srv->loop);
    c->id = id_none;
    c->hx.creds = cr;
    c->hx.why = st->why;
    c->hx.whylen = sizeof st->why;
    gnutls_session_set_ptr(c->s, &c->hx);
    gnutls_priority_set(c->s, cr->prio);
    if (cr->psk)
        gnutls_credentials_set(c->s, GNUTLS_CRD_PSK, cr->psk);
    if (cr->cert) {
        gnutls_credentials_set(c->s, GNUTLS_CRD_CERTIFICATE, cr->cert);
        if (cr->client_auth != DTLS_CLIENT_AUTH_NONE)
            gnutls_certificate_server_set_request(
                c->s, cr->client_auth == DTLS_CLIENT_AUTH_REQUIRED ? GNUTLS_CERT_REQUIRE
                                                                   : GNUTLS_CERT_REQUEST);
    }
    if (srv->cfg.dtls_ticket_rotate > 0) {
        const gnutls_datum_t *master = &st->stek[0];
        size_t tlen = 0;
        const uint8_t *t = hello_ticket(hello, n, &tlen);

        if (t && tlen >= 16 && ticket_master(st, t, lifetime) == 1)
            master = &st->stek[1];
        gnutls_db_set_cache_expiration(c->s, (unsigned)lifetime);
        gnutls_session_ticket_enable_server(c->s, master);
    }
    gnutls_transport_set_ptr(c->s, c);
    gnutls_transport_set_push_function(c->s, push);
    gnutls_transport_set_vec_push_function(c->s, push_vec);
    gnutls_transport_set_pull_function(c->s, pull);
    gnutls_transport_set_pull_timeout_function(c->s, pull_timeout);
    gnutls_dtls_set_mtu(c->s, DTLS_MTU);
    /* RFC 6347 §4.2.4.1: 1 s initial retransmission timer, doubled up to the total */
    gnutls_dtls_set_timeouts(c->s, 1000, (unsigned)(srv->cfg.dtls_handshake_timeout * 1000));
    gnutls_dtls_prestate_set(c->s, pre);
    ev_timer_init(&c->tmr, hs_timer, 1.0, 0.);
    st->nhs++;
    list_push(d, c);
    if (pred) {
        c->pred = pred;
        pred->succ = c;
    } else {
        table_add(d, c);
    }
    return c;
}

static const struct transport dtls_transport;

/* The least recently active open association whose CoAP session holds no work, or NULL */
static struct dtls_conn *
idle_victim(struct server *srv)
{
    for (struct endpoint *ep = srv->endpoints; ep; ep = ep->next) {
        struct dtls_ep *d = ep->sec;

        if (ep->tp != &dtls_transport || d == NULL)
            continue;
        for (struct dtls_conn *c = d->lru; c; c = c->prev) {
            struct session *s = session_find(srv, ep, &c->peer);

            if (s == NULL || !session_busy(s))
                return c;
        }
    }
    return NULL;
}

/* An identity as text, before it is stored with its association. */
struct id_text {
    int auth;
    char name[1024];
    char alt[16][300];
    unsigned nalt;
};

/* An X.509 certificate's subject (RFC 4514) and subjectAltNames as "kind:value". */
static void
x509_identity(const gnutls_datum_t *der, struct id_text *t)
{
    gnutls_x509_crt_t crt;
    gnutls_datum_t dn = {0};

    if (gnutls_x509_crt_init(&crt) < 0)
        return;
    if (gnutls_x509_crt_import(crt, der, GNUTLS_X509_FMT_DER) == 0) {
        t->auth = MOONLET_AUTH_X509;
        if (gnutls_x509_crt_get_dn3(crt, &dn, 0) == 0)
            snprintf(t->name, sizeof t->name, "%s", (const char *)dn.data);
        gnutls_free(dn.data);
        for (unsigned i = 0; t->nalt < 16; i++) {
            char v[256], ip[INET6_ADDRSTRLEN], *out = t->alt[t->nalt];
            size_t vlen = sizeof v - 1, cap = sizeof t->alt[0];
            int k = gnutls_x509_crt_get_subject_alt_name(crt, i, v, &vlen, NULL);

            if (k == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE)
                break;
            if (k < 0)
                continue;
            v[vlen < sizeof v ? vlen : sizeof v - 1] = '\0';
            if (k == GNUTLS_SAN_DNSNAME)
                snprintf(out, cap, "dns:%s", v);
            else if (k == GNUTLS_SAN_RFC822NAME)
                snprintf(out, cap, "email:%s", v);
            else if (k == GNUTLS_SAN_URI)
                snprintf(out, cap, "uri:%s", v);
            else if (k == GNUTLS_SAN_IPADDRESS &&
                     inet_ntop(vlen == 4 ? AF_INET : AF_INET6, v, ip, sizeof ip))
                snprintf(out, cap, "ip:%s", ip);
            else
                continue;
            t->nalt++;
        }
    }
    gnutls_x509_crt_deinit(crt);
}

/* What the handshake of s authenticated. */
static void
identity_of(gnutls_session_t s, struct id_text *t)
{
    const gnutls_datum_t *certs;
    gnutls_datum_t u = {0};
    unsigned n = 0;
    uint8_t h[32];

    t->auth = MOONLET_AUTH_ANON;
    if (gnutls_auth_get_type(s) == GNUTLS_CRD_PSK) {
        t->auth = MOONLET_AUTH_PSK;
        if (gnutls_psk_server_get_username2(s, &u) == 0)
            snprintf(t->name, sizeof t->name, "%.*s", (int)u.size, (const char *)u.data);
        return;
    }
    if (gnutls_auth_get_type(s) != GNUTLS_CRD_CERTIFICATE ||
        (certs = gnutls_certificate_get_peers(s, &n)) == NULL || n == 0)
        return;     /* no client certificate: anonymous */
    if (gnutls_certificate_type_get2(s, GNUTLS_CTYPE_CLIENT) != GNUTLS_CRT_RAWPK) {
        x509_identity(&certs[0], t);
        return;
    }
    t->auth = MOONLET_AUTH_RPK;     /* RFC 7250: the SubjectPublicKeyInfo, named by hash */
    gnutls_hash_fast(GNUTLS_DIG_SHA256, certs[0].data, certs[0].size, h);
    strcpy(t->name, "sha256:");
    for (int i = 0; i < 32; i++)
        snprintf(t->name + 7 + 2 * i, 3, "%02x", h[i]);
}

/* A session's identity, in one block (*mem): the alt pointers, then the strings. */
static void
identity_set(gnutls_session_t s, struct moonlet_identity *id, char **mem)
{
    struct id_text t = {0};
    size_t need;
    const char **a;
    char *m, *p;

    identity_of(s, &t);
    need = (t.nalt + 1) * sizeof(char *) + strlen(t.name) + 1;
    for (unsigned i = 0; i < t.nalt; i++)
        need += strlen(t.alt[i]) + 1;
    if ((m = malloc(need)) == NULL) {
        *id = id_none;      /* nothing a pattern can match: access denied */
        return;
    }
    a = (const char **)(void *)m;
    p = m + (t.nalt + 1) * sizeof(char *);
    id->auth = t.auth;
    id->name = strcpy(p, t.name);
    p += strlen(t.name) + 1;
    for (unsigned i = 0; i < t.nalt; i++) {
        a[i] = strcpy(p, t.alt[i]);
        p += strlen(t.alt[i]) + 1;
    }
    a[t.nalt] = NULL;
    id->alt = a;
    *mem = m;
}

static void
identity_fill(struct dtls_conn *c)
{
    identity_set(c->s, &c->id, &c->idmem);
}

/* The handshake completed: the association opens (replacing the one it succeeds), within
 * dtls_sessions. 1, or 0 if c was freed. */
static int
conn_open(struct dtls_conn *c)
{
    struct dtls_ep *d = c->d;
    struct server *srv = d->ep->srv;
    struct dtls_state *st = srv->dtls;

    if (st->nopen >= srv->cfg.dtls_sessions && c->pred == NULL) {
        struct dtls_conn *v = idle_victim(srv);

        if (v == NULL) {
            st->n.sessions_full++;
            log_fail(srv, c, "dtls_sessions reached and none is idle");
            gnutls_alert_send(c->s, GNUTLS_AL_FATAL, GNUTLS_A_INTERNAL_ERROR);
            conn_free(c, 0);
            return 0;
        }
        st->n.evicted++;
        conn_free(v, 1);
    }
    ev_timer_stop(srv->loop, &c->tmr);
    list_del(d, c);
    st->nhs--;
    c->state = ST_OPEN;
    c->last = ev_now(srv->loop);    /* idle from now, not from the first ClientHello */
    st->nopen++;
    list_push(d, c);
    if (gnutls_session_is_resumed(c->s))
        st->n.resumed++;
    else
        st->n.full++;
    identity_fill(c);
    if (c->pred) {      /* RFC 6347 §4.2.8: the peer restarted; the old association goes */
        struct dtls_conn *old = c->pred;

        st->n.replaced++;
        old->succ = NULL;
        c->pred = NULL;
        conn_free(old, 0);
        table_add(d, c);
    }
    return 1;
}

/* Run c on what its pull buffer holds (or on a timer). 1, or 0 if c was freed. */
static int
drive(struct dtls_conn *c)
{
    struct dtls_ep *d = c->d;
    struct server *srv = d->ep->srv;
    struct dtls_state *st = srv->dtls;
    int r;

    if (c->state == ST_HANDSHAKE) {
        st->why[0] = '\0';
        r = gnutls_handshake(c->s);
        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
            double left = srv->cfg.dtls_handshake_timeout - (ev_now(srv->loop) - c->start);
            double t = gnutls_dtls_get_timeout(c->s) / 1000.0 + 0.001;

            ev_timer_stop(srv->loop, &c->tmr);
            ev_timer_set(&c->tmr, t < left ? t : left > 0 ? left : 0.001, 0.);
            ev_timer_start(srv->loop, &c->tmr);
            return 1;
        }
        if (r < 0) {
            char why[200];

            if (r == GNUTLS_E_FATAL_ALERT_RECEIVED) {
                st->n.fail_alert++;
                snprintf(why, sizeof why, "the peer sent alert %s",
                         gnutls_alert_get_name(gnutls_alert_get(c->s)));
            } else {
                if (r == GNUTLS_E_TIMEDOUT)
                    st->n.fail_timeout++;
                else if (strncmp(st->why, "unknown PSK", 11) == 0)
                    st->n.fail_psk++;
                else if (*st->why)
                    st->n.fail_cert++;
                else
                    st->n.fail_other++;
                snprintf(why, sizeof why, "%s", *st->why ? st->why : gnutls_strerror(r));
                /* GnuTLS leaves the alert to us (RFC 5246 §7.2.2): bad_certificate,
                 * unknown_psk_identity, handshake_failure ... */
                if (strncmp(st->why, "unknown PSK", 11) == 0)    /* RFC 4279 §2 */
                    gnutls_alert_send(c->s, GNUTLS_AL_FATAL, GNUTLS_A_UNKNOWN_PSK_IDENTITY);
                else if (r != GNUTLS_E_TIMEDOUT)
                    gnutls_alert_send_appropriate(c->s, r);
            }
            log_fail(srv, c, why);
            conn_free(c, 0);
            return 0;
        }
        if (!conn_open(c))
            return 0;
    }
    for (;;) {
        r = (int)gnutls_record_recv(c->s, d->plain, sizeof d->plain);
        if (r > 0) {
            touch(d, c, ev_now(srv->loop));
            exchange_input(d->ep, &c->peer, d->plain, (size_t)r);
            continue;
        }
        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
            return 1;
        if (r == 0 || gnutls_error_is_fatal(r)) {   /* close_notify, a fatal alert */
            st->n.closed_by_peer++;
            conn_free(c, 0);
            return 0;
        }
        /* a warning alert, a rehandshake request we ignore: nothing to deliver */
        if (c->in == NULL && gnutls_record_check_pending(c->s) == 0)
            return 1;
    }
}

/* RFC 6347 §4.2.2, §4.2.1: is this datagram an unfragmented epoch-0 ClientHello? Checked
 * before the cookie, which looks at none of it. */
static int
client_hello(const uint8_t *b, size_t n)
{
    return n >= 13 + 12 + 2 + 32 + 1 && b[0] == 22 && b[1] == 254 && b[3] == 0 && b[4] == 0 &&
           b[13] == 1 && b[19] == 0 && b[20] == 0 && b[21] == 0 && memcmp(b + 14, b + 22, 3) == 0;
}

static ssize_t
hvr_push(gnutls_transport_ptr_t ptr, const void *buf, size_t len)
{
    struct dtls_conn *c = ptr;     /* only d and peer are set: no association exists */
    struct iovec v = {(void *)buf, len};

    udp_queue(c->d->ep, &c->peer, &v, 1);
    return (ssize_t)len;
}

/* A ClientHello from an address without a handshake: without a valid cookie it gets a
 * HelloVerifyRequest and nothing is kept; with one, a handshake starts if the address's
 * rate and the bound on handshakes allow. */
static struct dtls_conn *
accept_hello(struct dtls_ep *d, const struct peer *p, const uint8_t *b, size_t n,
             struct dtls_conn *pred)
{
    struct server *srv = d->ep->srv;
    struct dtls_state *st = srv->dtls;
    gnutls_dtls_prestate_st pre;
    int ok = -1;

    keys_tick(srv, st);
    for (int k = 0; k < 2 && ok < 0; k++) {
        memset(&pre, 0, sizeof pre);
        if (st->cookie[k].data)
            ok = gnutls_dtls_cookie_verify(&st->cookie[k], (void *)&p->u, p->len, (void *)b, n,
                                           &pre);
    }
    if (ok < 0) {
        struct dtls_conn tmp = {.d = d, .peer = *p};

        memset(&pre, 0, sizeof pre);
        pre.record_seq = b[10];     /* §4.2.1: the HelloVerifyRequest echoes it */
        gnutls_dtls_cookie_send(&st->cookie[0], (void *)&p->u, p->len, &pre, &tmp, hvr_push);
        st->n.hvr++;
        return NULL;
    }
    st->n.cookie_ok++;
    if (st->nhs >= srv->cfg.dtls_handshakes) {
        st->n.hs_full++;
        return NULL;        /* the peer retransmits its ClientHello later */
    }
    if (!rate_ok(srv, st, p)) {
        st->n.rate_limited++;
        return NULL;
    }
    return conn_new(d, p, &pre, b, n, pred);
}

static void
dtls_input(struct endpoint *ep, const struct peer *from, const uint8_t *buf, size_t len)
{
    struct dtls_ep *d = ep->sec;
    struct dtls_conn *c = conn_find(d, from), *t = c;

    if (len < 13) {
        ep->srv->dtls->n.stray++;
        return;
    }
    if (c == NULL) {
        if (!client_hello(buf, len)) {  /* nothing to decrypt it with: no state, no answer */
            ep->srv->dtls->n.stray++;
            return;
        }
        if ((t = accept_hello(d, from, buf, len, NULL)) == NULL)
            return;
    } else if (c->state == ST_OPEN &&
               ((buf[3] == 0 && buf[4] == 0) || (c->succ && (buf[0] == 20 || buf[0] == 22)))) {
        /* epoch 0 to an open association: a new handshake from the same address, kept
         * apart until it completes (RFC 6347 §4.2.8); its later flights follow it */
        if (c->succ == NULL) {
            if (!client_hello(buf, len)) {
                ep->srv->dtls->n.stray++;
                return;
            }
            if ((t = accept_hello(d, from, buf, len, c)) == NULL)
                return;
        } else {
            t = c->succ;
        }
    }
    t->in = buf;
    t->inlen = len;
    if (drive(t)) {
        t->in = NULL;
        t->inlen = 0;
    }
}

/* ---- the transport ------------------------------------------------------------------ */

static int
dtls_send(struct endpoint *ep, const struct peer *to, const uint8_t *buf, size_t len)
{
    struct dtls_conn *c = conn_find(ep->sec, to);

    if (c == NULL || c->state != ST_OPEN)
        return -1;
    metrics_out(&ep->srv->m, MT_DTLS, (buf[0] >> 4) & 3, len);
    return gnutls_record_send(c->s, buf, len) < 0 ? -1 : 0;
}

static const struct moonlet_identity *
dtls_identity(const struct session *s)
{
    struct dtls_conn *c = s->ep->sec ? conn_find(s->ep->sec, &s->peer) : NULL;

    return c && c->state == ST_OPEN ? &c->id : NULL;
}

/* Associations idle for dtls_idle go (with close_notify). */
static void
sweep(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct dtls_ep *d = (struct dtls_ep *)((char *)w - offsetof(struct dtls_ep, sweep));
    struct server *srv = d->ep->srv;
    ev_tstamp cut = ev_now(loop) - srv->cfg.dtls_idle;

    (void)revents;
    while (d->lru && d->lru->last < cut) {
        srv->dtls->n.idle++;
        conn_free(d->lru, 1);
    }
    udp_flush(d->ep);
}

static void
dtls_close(struct endpoint *ep)
{
    struct dtls_ep *d = ep->sec;

    /* close_notify to every open association (RFC 5246 §7.2.1), handshakes just go */
    while (d->mru)
        conn_free(d->mru, 1);
    while (d->hs)
        conn_free(d->hs, 0);
    ev_timer_stop(ep->srv->loop, &d->sweep);
    dtls_creds_release(d->creds);
    free(d->buckets);
    free(d);
    ep->sec = NULL;
    udp_close(ep);      /* flushes the goodbyes */
}

static const struct transport dtls_transport = {
    .scheme = "coaps",
    .ml = &udp_layer,
    .secure = 1,
    .metric = MT_DTLS,
    .input = dtls_input,
    .send = dtls_send,
    .flush = udp_flush,
    .close = dtls_close,
    .identity = dtls_identity,
};

struct endpoint *
dtls_open(struct server *srv, const char *addr, unsigned port, struct dtls_creds *creds,
          char *err, size_t errlen)
{
    struct dtls_ep *d = NULL;
    struct endpoint *ep;
    double every = srv->cfg.dtls_idle / 4 < 5 ? srv->cfg.dtls_idle / 4 : 5;

    if (!dtls_creds_usable(creds)) {
        snprintf(err, errlen, "coaps://%s%s%s:%u: needs DTLS credentials (a dtls group with "
                 "psk, psk_file, certificate or rpk)", strchr(addr, ':') ? "[" : "", addr,
                 strchr(addr, ':') ? "]" : "", port);
        return NULL;
    }
    if (state(srv) == NULL || (d = calloc(1, sizeof *d)) == NULL ||
        (d->buckets = calloc(64, sizeof *d->buckets)) == NULL) {
        free(d);
        snprintf(err, errlen, "coaps: out of memory");
        return NULL;
    }
    d->nbuckets = 64;
    if ((ep = udp_open_as(srv, &dtls_transport, "dtls", addr, port, err, errlen)) == NULL) {
        free(d->buckets);
        free(d);
        return NULL;
    }
    d->ep = ep;
    d->creds = creds;
    creds->refs++;
    ep->sec = d;
    ev_timer_init(&d->sweep, sweep, every, every);
    ev_timer_start(srv->loop, &d->sweep);
    ev_unref(srv->loop);
    return ep;
}

/* ---- TLS over TCP: coaps+tcp:// (RFC 8323 §4.1, §8.2) ------------------------------ */

/* A coaps+tcp:// listener's state (ep->sec): the credentials new handshakes use. The
 * layout's head is a dtls_ep's, so that dtls_set_creds serves both. */
struct tls_ep {
    struct endpoint *ep;
    struct dtls_creds *creds;
};

/* A connection's TLS session (its stream I/O state). */
struct tls_conn {
    struct hs_ctx hx;                   /* first: gnutls_session_get_ptr */
    gnutls_session_t s;
    struct server *srv;
    struct moonlet_identity id;
    char *idmem;
    uint8_t done;                       /* the handshake is */
    uint8_t held;                       /* a record_send returned AGAIN: GnuTLS holds it */
};

/* by enum tls_alpn */
static const gnutls_datum_t alpn[] = {{(unsigned char *)"coap", 4},
                                      {(unsigned char *)"http/1.1", 8}};

static int
tls_handshake(struct conn *c, void *st_)
{
    struct tls_conn *t = st_;
    struct dtls_state *st = t->srv->dtls;
    int r;

    st->why[0] = '\0';
    r = gnutls_handshake(t->s);
    if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
        return 0;
    if (r < 0) {
        if (r == GNUTLS_E_FATAL_ALERT_RECEIVED) {
            st->n.fail_alert++;
        } else {
            if (strncmp(st->why, "unknown PSK", 11) == 0) {     /* RFC 4279 §2 */
                st->n.fail_psk++;
                gnutls_alert_send(t->s, GNUTLS_AL_FATAL, GNUTLS_A_UNKNOWN_PSK_IDENTITY);
            } else {
                if (*st->why)
                    st->n.fail_cert++;
                else
                    st->n.fail_other++;
                gnutls_alert_send_appropriate(t->s, r);
            }
        }
        log_fail_at(t->srv, stream_endpoint(c)->name, stream_peer(c),
                    r == GNUTLS_E_FATAL_ALERT_RECEIVED
                        ? gnutls_alert_get_name(gnutls_alert_get(t->s))
                        : *st->why ? st->why : gnutls_strerror(r));
        return -1;
    }
    t->done = 1;
    if (gnutls_session_is_resumed(t->s))
        st->n.resumed++;
    else
        st->n.full++;
    identity_set(t->s, &t->id, &t->idmem);
    return 1;
}

static ssize_t
tls_read(struct conn *c, void *st, uint8_t *buf, size_t len)
{
    struct tls_conn *t = st;
    size_t got = 0;

    (void)c;
    /* records until the buffer is full or the socket has no more: a short count means
     * nothing is left, as for a plain socket */
    while (got < len) {
        ssize_t r = gnutls_record_recv(t->s, buf + got, len - got);

        if (r > 0) {
            got += (size_t)r;
            continue;
        }
        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
            break;
        if (r < 0 && (r == GNUTLS_E_REHANDSHAKE || !gnutls_error_is_fatal((int)r)))
            continue;   /* a warning alert: nothing to deliver */
        if (got)
            break;      /* the end comes at the next read */
        /* close_notify is the end of the stream; a peer that just closes is too */
        return r == 0 || r == GNUTLS_E_PREMATURE_TERMINATION ? 0 : -2;
    }
    return got ? (ssize_t)got : -1;
}

static ssize_t
tls_writev(struct conn *c, void *st, const struct iovec *iov, int n)
{
    struct tls_conn *t = st;
    ssize_t done = 0;

    (void)c;
    if (t->held) {      /* GnuTLS must finish the record it holds before another */
        ssize_t r = gnutls_record_send(t->s, NULL, 0);

        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
            return 0;
        if (r < 0)
            return -1;
        t->held = 0;
    }
    if (n == 0)
        return 0;
    gnutls_record_cork(t->s);   /* the pieces of a message go in one record */
    for (int i = 0; i < n; i++) {
        if (iov[i].iov_len == 0)
            continue;
        if (gnutls_record_send(t->s, iov[i].iov_base, iov[i].iov_len) < 0)
            return -1;
        done += (ssize_t)iov[i].iov_len;
    }
    if (done) {
        int r = gnutls_record_uncork(t->s, 0);

        /* what GnuTLS took is taken: the rest of its records go when the socket can */
        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED)
            t->held = 1;
        else if (r < 0)
            return -1;
    }
    return done;
}

static int
tls_want_write(struct conn *c, void *st)
{
    struct tls_conn *t = st;

    (void)c;
    return t->held || (!t->done && gnutls_record_get_direction(t->s) == 1);
}

static int
tls_buffered(struct conn *c, void *st)
{
    struct tls_conn *t = st;

    (void)c;
    return t->done && gnutls_record_check_pending(t->s) > 0;
}

static void
tls_free(struct conn *c, void *st)
{
    struct tls_conn *t = st;

    (void)c;
    if (t == NULL)
        return;
    if (t->done)        /* close_notify (RFC 8446 §6.1), best effort */
        gnutls_bye(t->s, GNUTLS_SHUT_WR);
    dtls_creds_release(t->hx.creds);
    gnutls_deinit(t->s);
    free(t->idmem);
    free(t);
}

const struct stream_io tls_io = {
    .read = tls_read,
    .writev = tls_writev,
    .free = tls_free,
    .handshake = tls_handshake,
    .want_write = tls_want_write,
    .buffered = tls_buffered,
};

void *
tls_session_new(struct endpoint *ep, int fd, enum tls_alpn proto)
{
    struct tls_ep *te = ep->sec;
    struct dtls_creds *cr = te->creds;
    struct dtls_state *st = state(ep->srv);
    unsigned flags = GNUTLS_SERVER | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL;
    struct tls_conn *t = calloc(1, sizeof *t);

    if (cr->rawpk)
        flags |= GNUTLS_ENABLE_RAWPK;
    if (ep->srv->cfg.dtls_ticket_rotate <= 0)
        flags |= GNUTLS_NO_TICKETS;
    if (st == NULL || t == NULL || gnutls_init(&t->s, flags) < 0) {
        free(t);
        return NULL;
    }
    t->srv = ep->srv;
    t->id = id_none;
    t->hx.creds = cr;
    cr->refs++;
    t->hx.why = st->why;
    t->hx.whylen = sizeof st->why;
    gnutls_session_set_ptr(t->s, &t->hx);
    gnutls_priority_set(t->s, cr->tls_prio);
    if (cr->psk)
        gnutls_credentials_set(t->s, GNUTLS_CRD_PSK, cr->psk);
    if (cr->cert) {
        gnutls_credentials_set(t->s, GNUTLS_CRD_CERTIFICATE, cr->cert);
        if (cr->client_auth != DTLS_CLIENT_AUTH_NONE)
            gnutls_certificate_server_set_request(
                t->s, cr->client_auth == DTLS_CLIENT_AUTH_REQUIRED ? GNUTLS_CERT_REQUIRE
                                                                   : GNUTLS_CERT_REQUEST);
    }
    /* RFC 8323 §4.1: ALPN "coap" (WebSockets: "http/1.1", RFC 8323 §4.3); a client that
     * offers other protocols only is refused (no_application_protocol, RFC 7301 §3.2),
     * one that offers none is served */
    gnutls_alpn_set_protocols(t->s, &alpn[proto], 1, GNUTLS_ALPN_MANDATORY);
    if (ep->srv->cfg.dtls_ticket_rotate > 0) {
        /* resumption by ticket (RFC 8446 §2.2, RFC 5077), under the key DTLS uses too; a
         * ticket of the previous key means a full handshake */
        keys_tick(ep->srv, st);
        gnutls_db_set_cache_expiration(t->s, (unsigned)(2 * ep->srv->cfg.dtls_ticket_rotate));
        gnutls_session_ticket_enable_server(t->s, &st->stek[0]);
    }
    gnutls_transport_set_int(t->s, fd);
    return t;
}

/* A TCP connection came: a TLS session on its socket, with the listener's credentials;
 * the stream layer drives the handshake. */
static void
tls_accept(struct endpoint *ep, int fd, const struct peer *p)
{
    void *t = tls_session_new(ep, fd, TLS_ALPN_COAP);

    if (t == NULL) {
        close(fd);
        return;
    }
    stream_accept(ep, fd, p, &tls_io, t);
}

const struct moonlet_identity *
tls_session_identity(const void *st)
{
    const struct tls_conn *t = st;

    return t && t->done ? &t->id : NULL;
}

static const struct moonlet_identity *
tls_identity(const struct session *s)
{
    return s->conn ? tls_session_identity(stream_io_state(s->conn)) : NULL;
}

void
tls_unlisten(struct endpoint *ep)
{
    struct tls_ep *te = ep->sec;

    tcp_unlisten(ep);   /* its connections go first: they hold references of their own */
    dtls_creds_release(te->creds);
    free(te);
}

static const struct transport tls_transport = {
    .scheme = "coaps+tcp",
    .ml = &stream_layer,
    .secure = 1,
    .metric = MT_TLS,
    .send = stream_send,
    .flush = stream_flush,
    .close = tls_unlisten,
    .identity = tls_identity,
    .detach = stream_detach,
};

struct endpoint *
tls_listen(struct server *srv, const struct transport *tp, const char *addr, unsigned port,
           struct dtls_creds *creds,
           void (*accept)(struct endpoint *ep, int fd, const struct peer *p), char *err,
           size_t errlen)
{
    struct tls_ep *te = calloc(1, sizeof *te);
    struct endpoint *ep;

    if (te == NULL || state(srv) == NULL) {
        snprintf(err, errlen, "%s: out of memory", tp->scheme);
        free(te);
        return NULL;
    }
    if ((ep = tcp_listen(srv, tp, addr, port, accept, err, errlen)) == NULL) {
        free(te);
        return NULL;
    }
    te->ep = ep;
    te->creds = creds;
    creds->refs++;
    ep->sec = te;
    return ep;
}

struct endpoint *
tls_open(struct server *srv, const char *addr, unsigned port, struct dtls_creds *creds,
         char *err, size_t errlen)
{
    return tls_listen(srv, &tls_transport, addr, port, creds, tls_accept, err, errlen);
}

int
tls_ws_accept(const char *key, char *out, size_t len)
{
    /* RFC 6455 §4.2.2: base64(SHA-1(key ++ the GUID)) */
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char in[128];
    uint8_t h[20];
    gnutls_datum_t d = {h, sizeof h}, b64 = {0};
    size_t n = strlen(key);

    if (n != 24 || n + sizeof guid > sizeof in)     /* 16 bytes in base64 */
        return -1;
    memcpy(in, key, n);
    memcpy(in + n, guid, sizeof guid - 1);
    if (gnutls_hash_fast(GNUTLS_DIG_SHA1, in, n + sizeof guid - 1, h) < 0 ||
        gnutls_base64_encode2(&d, &b64) < 0)
        return -1;
    if (b64.size + 1 > len) {
        gnutls_free(b64.data);
        return -1;
    }
    memcpy(out, b64.data, b64.size);
    out[b64.size] = '\0';
    gnutls_free(b64.data);
    return 0;
}

void
dtls_set_creds(struct endpoint *ep, struct dtls_creds *creds)
{
    struct dtls_creds **slot = ep->tp->ml == &stream_layer ? &((struct tls_ep *)ep->sec)->creds
                                                         : &((struct dtls_ep *)ep->sec)->creds;

    creds->refs++;
    dtls_creds_release(*slot);
    *slot = creds;
}

void
dtls_counts(const struct server *srv, unsigned *sessions, unsigned *handshakes)
{
    *sessions = srv->dtls ? srv->dtls->nopen : 0;
    *handshakes = srv->dtls ? srv->dtls->nhs : 0;
}

void
dtls_stats(const struct server *srv, char *buf, size_t len)
{
    const struct dtls_state *st = srv->dtls;

    if (st == NULL) {
        *buf = '\0';
        return;
    }
    snprintf(buf, len,
             " dtls_sessions %u dtls_handshaking %u dtls_full %lu dtls_resumed %lu "
             "dtls_hvr %lu dtls_cookie_ok %lu dtls_fail_timeout %lu dtls_fail_psk %lu "
             "dtls_fail_cert %lu dtls_fail_alert %lu dtls_fail_other %lu dtls_rate_limited %lu "
             "dtls_handshakes_full %lu dtls_sessions_full %lu dtls_evicted %lu dtls_idle %lu "
             "dtls_closed_by_peer %lu dtls_replaced %lu dtls_stray %lu",
             st->nopen, st->nhs, st->n.full, st->n.resumed, st->n.hvr, st->n.cookie_ok,
             st->n.fail_timeout, st->n.fail_psk, st->n.fail_cert, st->n.fail_alert,
             st->n.fail_other, st->n.rate_limited, st->n.hs_full, st->n.sessions_full,
             st->n.evicted, st->n.idle, st->n.closed_by_peer, st->n.replaced, st->n.stray);
}
