/* t_abi2.c -- a plugin built for ABI 2.0: the loader must refuse it (major differs). */
#include "moonlet.h"

static int
abi2_init(moonlet_plugin *p, const moonlet_conf *conf)
{
    (void)p, (void)conf;
    return MOONLET_OK;
}

__attribute__((visibility("default"))) const moonlet_plugin_info moonlet_plugin_descriptor = {
    2, 0, sizeof(moonlet_plugin_info), "t_abi2", "1", abi2_init, 0, 0, {0}};
