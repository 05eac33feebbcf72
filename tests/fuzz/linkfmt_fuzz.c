/*
 * linkfmt_fuzz.c -- libFuzzer harness for /.well-known/core filtering and output (core/
 * linkfmt.c, core/tree.c; RFC 6690 §2, §4.1). The input is a query string: '&' separates
 * Uri-Query items, each is given to linkfmt_filters as an option value would be (raw bytes,
 * any of them), and the filtered document of a fixed tree is checked by discovery_check:
 * strict link-format, only listed resources, each once, exactly the links the filter policy
 * keeps, and prefix patterns or fewer items never keep less.
 */
#include <stdint.h>
#include <string.h>

#include "discovery.h"

/* More than a request can carry (REQ_MAX_QUERIES): linkfmt_filters must stop at its cap. */
#define MAX_ITEMS (REQ_MAX_QUERIES + 8)

/* The libFuzzer entry point; declared here for -Wmissing-prototypes. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct view q[MAX_ITEMS];
    unsigned nq = 0;
    size_t start = 0;

    /* empty input: no query at all, the whole document */
    for (size_t i = 0; size > 0 && i <= size && nq < MAX_ITEMS; i++) {
        if (i < size && data[i] != '&')
            continue;
        q[nq++] = (struct view){data + start, i - start};
        start = i + 1;
    }
    discovery_check(q, nq);
    return 0;
}
