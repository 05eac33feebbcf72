/*
 * linkparse.h -- reading link-format documents (RFC 6690 §2): moonlet_linkfmt_parse is
 * declared in the public header; the UTF-8 check it uses is shared with the Lua body
 * decoders (lua/req.c, lua/json.c, lua/cbor.c).
 */
#ifndef LINKPARSE_H
#define LINKPARSE_H

#include <stddef.h>

#include "include/moonlet.h"

/* The length of the longest prefix of s that is well-formed UTF-8 (RFC 3629 §4: no
 * overlong forms, no surrogates, nothing above U+10FFFF); len when all of it is. */
size_t linkparse_utf8_prefix(const void *s, size_t len);

#endif
