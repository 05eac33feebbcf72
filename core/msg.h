/*
 * msg.h -- CoAP message codec (RFC 7252 §3): parse a datagram into views, write a message
 * straight into a send buffer. Framing of reliable transports (RFC 8323 §3.2) will share
 * msg_parse_body: only the header differs.
 */
#ifndef MSG_H
#define MSG_H

#include <stddef.h>
#include <stdint.h>

enum { MT_CON = 0, MT_NON = 1, MT_ACK = 2, MT_RST = 3 };

#define MSG_CODE(c, d) ((uint8_t)(((c) << 5) | (d)))
#define MSG_CLASS(code) ((code) >> 5)
#define MSG_DETAIL(code) ((code) & 31)
#define MSG_TOKEN_MAX 8

/* Parse results. */
enum {
    MSG_OK = 0,
    MSG_ESHORT = -1,    /* under 4 bytes: no MID, nothing to answer (§4.2) */
    MSG_EVERSION = -2,  /* version != 1: silently ignored (§3) */
    MSG_EFORMAT = -3,   /* message format error: RST for CON, drop otherwise (§4.2, §4.3) */
};

/* One option, a view into the datagram. */
struct msg_opt {
    uint16_t num;
    uint32_t len;           /* up to 65804 (§3.1), reachable over reliable transports */
    const uint8_t *val;
};

/* A parsed message; every pointer points into the buffer given to msg_parse. */
struct msg {
    uint8_t type, code, tkl;
    uint16_t mid;
    const uint8_t *token;
    const uint8_t *opts;     /* the encoded option region, already validated */
    size_t opts_len;
    const uint8_t *payload;  /* NULL when there is none */
    size_t payload_len;
    unsigned nopts;
    uint16_t last_opt;       /* the highest option number present (0: none) */
};

/* Iterator over a validated option region; cannot fail. */
struct msg_iter {
    const uint8_t *p, *end;
    unsigned num;
};

int msg_parse(struct msg *m, const uint8_t *buf, size_t len);
/* Options and payload of any framing: validates every option header (§3.1). */
int msg_parse_body(struct msg *m, const uint8_t *p, const uint8_t *end);
void msg_iter_init(struct msg_iter *it, const struct msg *m);
int msg_iter_next(struct msg_iter *it, struct msg_opt *o);
/* First option with this number, or NULL. */
const struct msg_opt *msg_find(const struct msg *m, unsigned num, struct msg_opt *out);
/* RFC 7252 §3.2 uint: big-endian, leading zeros allowed; len > 4 gives UINT32_MAX. */
uint32_t msg_uint(const uint8_t *v, size_t len);

/* Writer: header, then options in ascending order, then the payload. Any overflow sets
 * err and the message is unusable; check msg_wr_end. */
struct msg_wr {
    uint8_t *buf;
    size_t cap, len;
    unsigned last;
    int err;
    int sealed;             /* the payload is written: nothing may follow */
};

void msg_wr_init(struct msg_wr *w, uint8_t *buf, size_t cap, unsigned type, unsigned code,
                 uint16_t mid, const uint8_t *token, unsigned tkl);
/* A body alone: options and payload, the header and token being the framing's (a
 * notification's, serialised once for every observer; RFC 8323 §3.2). */
void msg_wr_body_init(struct msg_wr *w, uint8_t *buf, size_t cap);
void msg_wr_opt(struct msg_wr *w, unsigned num, const void *val, size_t len);
void msg_wr_opt_uint(struct msg_wr *w, unsigned num, uint32_t v);
void msg_wr_payload(struct msg_wr *w, const void *p, size_t len);
/* Length written, or -1 on overflow / out-of-order option. */
long msg_wr_end(const struct msg_wr *w);
/* Encode v as a minimal uint into out[4]; returns the length (0 for v == 0). */
unsigned msg_uint_enc(uint8_t out[4], uint32_t v);

/* Code as text "2.05" into buf[6]. */
const char *msg_code_str(unsigned code, char buf[6]);

#endif
