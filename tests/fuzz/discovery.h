/*
 * discovery.h -- shared by linkfmt_fuzz.c and path_fuzz.c: a strict link-format parser
 * (RFC 6690 §2, RFC 8288 §3), the resource tree both harnesses query, and the check of one
 * set of Uri-Query items as discovery filters (RFC 6690 §4.1) against an independent
 * reading of the unfiltered document.
 */
#ifndef DISCOVERY_H
#define DISCOVERY_H

#include "fuzz.h"
#include <stdio.h>
#include <stdlib.h>

#include "tree.h"


/* Enough for the harnesses' trees; a document with more is a harness error (CHECK). */
#define LF_MAX_LINKS 64
#define LF_MAX_PARAMS 16

struct lf_param {
    const char *name; /* into the document */
    size_t nlen;
    const char *value; /* unescaped (the document's arena), NULL for a flag */
    size_t vlen;
};

struct lf_link {
    const char *text; /* the whole link-value, into the document */
    size_t len;
    const char *href; /* between '<' and '>' */
    size_t hlen;
    unsigned nparam;
    struct lf_param param[LF_MAX_PARAMS];
};

struct lf_doc {
    unsigned n;
    struct lf_link link[LF_MAX_LINKS];
    char *arena; /* unescaped values */
    size_t used;
};

/* Parse s[0..len) strictly; 0, or -1 when it is not link-format. Free with lf_free. */
int lf_parse(struct lf_doc *d, const char *s, size_t len);
void lf_free(struct lf_doc *d);
/* The links of d are exactly the non-hidden resources of t, in order, each with the
 * attributes it was registered with (values unescaped back to the registered bytes). */
void lf_check_tree(const struct tree *t, const struct lf_doc *d);

/* The resource tree of the discovery harnesses, built and checked once. */
const struct tree *discovery_tree(void);
/* Filter discovery_tree() by the items q[0..nq) and check the document it gives. */
void discovery_check(const struct view *q, unsigned nq);

#endif
