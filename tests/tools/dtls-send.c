/*
 * dtls-send -- a scriptable DTLS 1.2 client for moonlet's tests (GnuTLS): handshake with a
 * pre-shared key, a certificate or a raw public key, send CoAP messages given in hex, print
 * what comes back, optionally stay connected to see the server end the association.
 *
 *   dtls-send [options] HOST PORT [HEX ...]
 *     -u ID -k KEY      PSK identity and key (text)
 *     -c CERT -j KEY    client certificate (or with -M: raw public key) and its key, PEM
 *     -M                the -c file is a raw public key (RFC 7250)
 *     -w SECONDS        wait this long for answers after each message (default 2)
 *     -n COUNT          answers to wait for per message (default 1; 0: do not wait)
 *     -H SECONDS        after the messages, hold the association open up to this long and
 *                       print "closed" if the server ends it (close_notify or alert)
 *     -q                no close_notify at the end (leave like a crashed client)
 *     -x COUNT          send each message COUNT times (the records are distinct: DTLS
 *                       numbers them, so this is what a CoAP retransmission looks like)
 *     -i SECONDS        pause this long before each message after the first
 *     -p PORT           bind this local UDP port (a peer that restarts on the same port)
 *     -t SECONDS        give up a handshake after this long (default 10)
 *     -R SECONDS        afterwards, wait this long, then connect again resuming the session
 *                       (RFC 5077 ticket), print its "handshake OK ..." line and send the
 *                       messages again
 *
 * Prints "handshake OK SUITE" (" resumed") or "handshake FAILED reason" (exit 2), then
 * for each message one line "< HEX" per record received and "= N" (how many). Exit 0.
 * Every wait is bounded.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/dtls.h>
#include <gnutls/gnutls.h>

static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int
wait_readable(int fd, double until)
{
    struct pollfd p = {fd, POLLIN, 0};
    double left = until - now();

    if (left <= 0)
        return 0;
    return poll(&p, 1, (int)(left * 1000) + 1) > 0;
}

static int
unhex(const char *s, unsigned char *out, size_t cap)
{
    size_t n = strlen(s);

    if (n % 2 || n / 2 > cap)
        return -1;
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;

        if (sscanf(s + 2 * i, "%2x", &v) != 1)
            return -1;
        out[i] = (unsigned char)v;
    }
    return (int)(n / 2);
}

static void
print_hex(const char *pre, const unsigned char *b, size_t n)
{
    printf("%s", pre);
    for (size_t i = 0; i < n; i++)
        printf("%02x", b[i]);
    printf("\n");
    fflush(stdout);
}

/* Read records until want answers came or until passes; -1 if the server ended it. */
static int
collect(gnutls_session_t s, int fd, int want, double until)
{
    unsigned char buf[4096];
    int got = 0;

    while (got < want || want < 0) {
        ssize_t r = gnutls_record_recv(s, buf, sizeof buf);

        if (r > 0) {
            print_hex("< ", buf, (size_t)r);
            got++;
            continue;
        }
        if (r == 0 || (r < 0 && gnutls_error_is_fatal((int)r)))
            return -1;
        if (!wait_readable(fd, until))
            break;
    }
    return got;
}

static void
sleep_for(double seconds)
{
    struct timespec ts = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};

    nanosleep(&ts, NULL);
}

static int
connect_udp(const char *host, const char *port, int local)
{
    struct addrinfo hints = {.ai_socktype = SOCK_DGRAM}, *ai;
    int fd, on = 1;

    if (getaddrinfo(host, port, &hints, &ai) != 0)
        return -1;
    fd = socket(ai->ai_family, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    if (fd >= 0 && local) {
        struct sockaddr_storage a;

        memset(&a, 0, sizeof a);
        a.ss_family = (sa_family_t)ai->ai_family;
        if (ai->ai_family == AF_INET6)
            ((struct sockaddr_in6 *)&a)->sin6_port = htons((uint16_t)local);
        else
            ((struct sockaddr_in *)&a)->sin_port = htons((uint16_t)local);
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
        if (bind(fd, (struct sockaddr *)&a, ai->ai_addrlen) < 0) {
            close(fd);
            fd = -1;
        }
    }
    if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

/* Handshake on fd within 10 s: 0, or -1 after printing why. */
static double handshake_limit = 10;

static int
handshake(gnutls_session_t s, int fd)
{
    double until = now() + handshake_limit;
    char *desc;
    int rc;

    gnutls_transport_set_int(s, fd);
    gnutls_dtls_set_timeouts(s, 500, (unsigned)(handshake_limit * 1000));
    do {
        rc = gnutls_handshake(s);
        if (rc == GNUTLS_E_AGAIN)
            wait_readable(fd, now() + gnutls_dtls_get_timeout(s) / 1000.0);
    } while (rc == GNUTLS_E_AGAIN && now() < until);
    if (rc < 0) {
        printf("handshake FAILED %s\n", gnutls_strerror(rc));
        if (rc == GNUTLS_E_FATAL_ALERT_RECEIVED)
            printf("alert %s\n", gnutls_alert_get_name(gnutls_alert_get(s)));
        return -1;
    }
    desc = gnutls_session_get_desc(s);
    printf("handshake OK %s%s\n", desc, gnutls_session_is_resumed(s) ? " resumed" : "");
    gnutls_free(desc);
    fflush(stdout);
    return 0;
}

struct opts {
    double wait, pause;
    int answers, repeat;
};

/* Send each hex message and print what answers it; -1 (after "closed") if the server
 * ended the association, -2 for a message that is not hex. */
static int
send_all(gnutls_session_t s, int fd, char **msgs, int n, const struct opts *o)
{
    for (int i = 0; i < n; i++) {
        unsigned char msg[2048];
        int len = unhex(msgs[i], msg, sizeof msg), got = 0;

        if (i > 0 && o->pause > 0)
            collect(s, fd, -1, now() + o->pause);   /* reads while it waits */
        if (len < 0) {
            fprintf(stderr, "dtls-send: %s: not hex\n", msgs[i]);
            return -2;
        }
        for (int k = 0; k < o->repeat; k++)
            gnutls_record_send(s, msg, (size_t)len);
        if (o->answers > 0 && (got = collect(s, fd, o->answers, now() + o->wait)) < 0) {
            printf("closed\n");
            return -1;
        }
        printf("= %d\n", got);
        fflush(stdout);
    }
    return 0;
}

/* A client session with the credentials and our priorities. */
static gnutls_session_t
session_new(int rawpk, gnutls_psk_client_credentials_t psk,
            gnutls_certificate_credentials_t xc, int with_cert)
{
    gnutls_session_t s;

    gnutls_init(&s, GNUTLS_CLIENT | GNUTLS_DATAGRAM | GNUTLS_NONBLOCK |
                        (rawpk ? GNUTLS_ENABLE_RAWPK : 0));
    gnutls_priority_set_direct(s, "NORMAL:-VERS-ALL:+VERS-DTLS1.2:+PSK:+ECDHE-PSK:"
                               "+AES-128-CCM-8:+AES-128-CCM:+CTYPE-ALL", NULL);
    if (psk)
        gnutls_credentials_set(s, GNUTLS_CRD_PSK, psk);
    if (with_cert)      /* the server's certificate is not checked */
        gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, xc);
    return s;
}

int
main(int argc, char **argv)
{
    const char *user = NULL, *key = NULL, *cert = NULL, *ckey = NULL;
    double hold = 0, resume = -1;
    struct opts o = {2, 0, 1, 1};
    int opt, rawpk = 0, quiet_exit = 0, local = 0, fd, rc;
    gnutls_session_t s;
    gnutls_psk_client_credentials_t psk = NULL;
    gnutls_certificate_credentials_t xc = NULL;

    while ((opt = getopt(argc, argv, "u:k:c:j:Mw:n:H:qx:i:p:R:t:")) != -1) {
        switch (opt) {
        case 'u': user = optarg; break;
        case 'k': key = optarg; break;
        case 'c': cert = optarg; break;
        case 'j': ckey = optarg; break;
        case 'M': rawpk = 1; break;
        case 'w': o.wait = atof(optarg); break;
        case 'n': o.answers = atoi(optarg); break;
        case 'H': hold = atof(optarg); break;
        case 'q': quiet_exit = 1; break;
        case 'x': o.repeat = atoi(optarg); break;
        case 'i': o.pause = atof(optarg); break;
        case 'p': local = atoi(optarg); break;
        case 'R': resume = atof(optarg); break;
        case 't': handshake_limit = atof(optarg); break;
        default:
            fprintf(stderr, "usage: see the comment at the top of dtls-send.c\n");
            return 64;
        }
    }
    if (argc - optind < 2 || (fd = connect_udp(argv[optind], argv[optind + 1], local)) < 0) {
        fprintf(stderr, "dtls-send: HOST PORT (a reachable UDP address) needed\n");
        return 64;
    }
    gnutls_global_init();
    if (user && key) {
        gnutls_datum_t k = {(unsigned char *)key, (unsigned)strlen(key)};

        gnutls_psk_allocate_client_credentials(&psk);
        gnutls_psk_set_client_credentials(psk, user, &k, GNUTLS_PSK_KEY_RAW);
    }
    gnutls_certificate_allocate_credentials(&xc);
    if (cert && ckey) {
        rc = rawpk ? gnutls_certificate_set_rawpk_key_file(xc, cert, ckey, GNUTLS_X509_FMT_PEM,
                                                           NULL, 0, NULL, 0, 0, 0)
                   : gnutls_certificate_set_x509_key_file(xc, cert, ckey, GNUTLS_X509_FMT_PEM);
        if (rc < 0) {
            fprintf(stderr, "dtls-send: %s: %s\n", cert, gnutls_strerror(rc));
            return 64;
        }
    }
    s = session_new(rawpk, psk, xc, cert || !user);
    if (handshake(s, fd) < 0)
        return 2;
    if (send_all(s, fd, argv + optind + 2, argc - optind - 2, &o) < 0)
        return 0;
    if (hold > 0) {
        if (collect(s, fd, -1, now() + hold) < 0)
            printf("closed\n");
        else
            printf("open\n");
    }
    fflush(stdout);
    if (resume >= 0) {
        gnutls_datum_t data = {0};

        gnutls_session_get_data2(s, &data);
        gnutls_bye(s, GNUTLS_SHUT_WR);
        gnutls_deinit(s);
        close(fd);
        sleep_for(resume);
        fd = connect_udp(argv[optind], argv[optind + 1], local);
        s = session_new(rawpk, psk, xc, cert || !user);
        gnutls_session_set_data(s, data.data, data.size);
        gnutls_free(data.data);
        if (handshake(s, fd) < 0)
            return 2;
        if (send_all(s, fd, argv + optind + 2, argc - optind - 2, &o) < 0)
            return 0;
    }
    if (!quiet_exit)
        gnutls_bye(s, GNUTLS_SHUT_WR);
    gnutls_deinit(s);
    if (psk)
        gnutls_psk_free_client_credentials(psk);
    gnutls_certificate_free_credentials(xc);
    gnutls_global_deinit();
    close(fd);
    return 0;
}
