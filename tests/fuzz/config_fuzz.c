/*
 * config_fuzz.c -- libFuzzer harness for the configuration file (core/config.c over
 * libconfig): any text is accepted or refused whole, without a crash, a leak or undefined
 * behaviour; and every number libconfig reads must be matched with its literal in the text
 * (config.c aborts on a mismatch when built with FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
const char *__lsan_default_suppressions(void);

/* libconfig 1.5 leaks the string token at which a syntax error stops (its grammar frees
 * no token on error: `x = { a "s" = 1; };` loses 64 bytes, `x = { a "" = 1; };` one, from
 * its scanner); not ours, and it would end every run at the first such input */
const char *
__lsan_default_suppressions(void)
{
    return "leak:strbuf_append\nleak:libconfig_yylex\n";
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text;

    /* config_load refuses a file with a NUL byte before parsing */
    if (memchr(data, '\0', size) != NULL || (text = malloc(size + 1)) == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    log_set_level(MOONLET_LOG_ERROR - 2); /* below notices: every FILE:LINE line is silent */
    config_free(config_parse("fuzz.conf", text));
    free(text);
    return 0;
}
