/*
 * option.h -- the CoAP option table (RFC 7252 §5.4, §5.10, §12.2 and the options of RFC 7641,
 * 7959, 7967, 9175): number, name, format, length bounds and properties, and the request
 * option check that decides 4.02 (§5.4.1) and "ignore" (§5.4.3, §5.4.5).
 */
#ifndef OPTION_H
#define OPTION_H

#include "msg.h"

enum option_format { OPT_EMPTY, OPT_OPAQUE, OPT_UINT, OPT_STRING };

enum {
    OPT_REPEAT = 1,     /* may occur more than once */
    OPT_KNOWN = 2,      /* registered and understood by this server */
};

struct option_def {
    uint16_t num;
    uint8_t format;
    uint8_t flags;
    uint16_t min, max;
    const char *name;
};

/* RFC 7252 §5.4.6: the properties are encoded in the number. */
static inline int option_critical(unsigned num) { return num & 1; }
static inline int option_unsafe(unsigned num) { return (num & 2) != 0; }
static inline int option_nocachekey(unsigned num) { return (num & 0x1e) == 0x1c; }

/* The definition for num, or NULL if the number is not registered. */
const struct option_def *option_get(unsigned num);
/* Name, or NULL. Lookup by name (case-sensitive, e.g. "Uri-Path"), or NULL. */
const char *option_name(unsigned num);
const struct option_def *option_by_name(const char *name);

/* Option verdict for one request (RFC 7252 §5.4.1, §5.4.3, §5.4.5). */
struct option_check {
    unsigned bad;       /* the offending option number when 4.02 */
    const char *why;    /* short diagnostic for the 4.02 payload */
};

/* Returns 0 when the request may be processed, or the response code to send (4.02 Bad
 * Option, 5.05 Proxying Not Supported) with *chk filled. The option ignore-list for
 * elective problems is applied by option_usable. */
unsigned option_check_request(const struct msg *m, struct option_check *chk);
/* Whether occurrence `nth` (0-based) of option o in a request is to be used: registered,
 * within its length bounds and, if not repeatable, the first occurrence (§5.4.3, §5.4.5). */
int option_usable(const struct msg_opt *o, unsigned nth);

#endif
