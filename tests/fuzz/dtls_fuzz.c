/*
 * dtls_fuzz.c -- libFuzzer harness for what core/dtls.c reads from the network and from
 * its configuration itself, rather than through GnuTLS. The first byte chooses:
 *   0: a datagram from an address without an association: the ClientHello shape check
 *      (client_hello) and, for a ClientHello, the walk to its session ticket extension
 *      (hello_ticket, which runs on anything a peer with a valid cookie sends): a ticket
 *      found lies inside the datagram, and which master key sealed it is a fixed answer;
 *   1: a -d KEY=VALUE (dtls_config_set: psk=ID:KEY, rpk_client=sha256:HEX, paths, modes):
 *      accepted or refused with a reason, the configuration freed without a leak.
 * dtls.c is included whole: its checks are static.
 */
#include <stdint.h>
#include <string.h>

#include "../../core/dtls.c"
#include "fuzz.h"

static void
datagram(const uint8_t *b, size_t n)
{
    static struct dtls_state st;        /* two fixed masters: ticket_master must not care */
    static uint8_t master[2][64];
    size_t tlen = 0;
    const uint8_t *t;

    if (!client_hello(b, n))
        return;
    t = hello_ticket(b, n, &tlen);
    if (t == NULL)
        return;
    CHECKF(t > b && t + tlen <= b + n, "ticket at %td+%zu of %zu", t - b, tlen, n);
    if (tlen >= 16) {
        for (int m = 0; m < 2; m++) {
            memset(master[m], 0x11 * (m + 1), sizeof master[m]);
            st.stek[m] = (gnutls_datum_t){master[m], sizeof master[m]};
        }
        int w = ticket_master(&st, t, 3600);
        CHECK(w >= -1 && w <= 1);
    }
}

static void
setting(const uint8_t *b, size_t n)
{
    struct dtls_config c = {0};
    char text[512], err[256] = "", *eq;

    if (n >= sizeof text)
        return;
    memcpy(text, b, n);
    text[n] = '\0';
    if ((eq = strchr(text, '=')) == NULL || strlen(text) != n)
        return;
    *eq = '\0';
    if (dtls_config_set(&c, text, eq + 1, err, sizeof err) < 0)
        CHECKF(err[0] != '\0', "refused without a reason: %s", text);
    dtls_config_free(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] & 1)
        setting(data + 1, size - 1);
    else
        datagram(data + 1, size - 1);
    return 0;
}
