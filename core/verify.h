/*
 * verify.h -- address verification (RFC 9175 §2.4, §2.6): stateless Echo values and the
 * 4.01 challenge. The 3x rule itself is session.c's (session_send), the ping exchange.c's.
 */
#ifndef VERIFY_H
#define VERIFY_H

#include <stddef.h>
#include <stdint.h>

#include "msg.h"
#include "transport.h"

#define VERIFY_ECHO_LEN 12      /* 4 bytes of time, 8 of MAC (RFC 9175 §2.2: 1..40) */

struct server;

/* SipHash-2-4 of in under key (a keyed PRF for short inputs). */
uint64_t verify_siphash(const uint8_t key[16], const uint8_t *in, size_t len);
/* An Echo value for peer p, valid for cfg.echo_lifetime. */
void verify_echo_make(const struct server *srv, const struct peer *p,
                      uint8_t out[VERIFY_ECHO_LEN]);
/* Is v an Echo value we issued to p, still fresh? */
int verify_echo_check(const struct server *srv, const struct peer *p, const uint8_t *v,
                      size_t len);
/* Does request m carry a valid Echo for p? */
int verify_request_echo(const struct server *srv, const struct peer *p, const struct msg *m);
/* Serialise the 4.01 + Echo answer to request m from p into buf: its length, or -1. (It
 * is 14 bytes and the token: within the 3x rule of any request with a token or an option.) */
long verify_challenge(const struct server *srv, const struct peer *p, const struct msg *m,
                      uint8_t *buf, size_t cap);

#endif
