/*
 * fuzz.h -- what every harness shares: CHECK, an invariant that aborts with where it
 * failed (so libFuzzer keeps the input), and CHECKF, the same with a printf-style message.
 */
#ifndef FUZZ_H
#define FUZZ_H

#include <stdio.h>
#include <stdlib.h>

#define CHECKF(c, ...)                                                                             \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "check failed: %s (%s:%d) ", #c, __FILE__, __LINE__);                  \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)
#define CHECK(c) CHECKF(c, "%s", "")

#endif
