/* t_abinewer.c -- a plugin that needs a newer minor ABI than the server has: refused. */
#include "moonlet.h"

static int
newer_init(moonlet_plugin *p, const moonlet_conf *conf)
{
    (void)p, (void)conf;
    return MOONLET_OK;
}

__attribute__((visibility("default"))) const moonlet_plugin_info moonlet_plugin_descriptor = {
    MOONLET_ABI_MAJOR, MOONLET_ABI_MINOR + 1, sizeof(moonlet_plugin_info), "t_abinewer", "1",
    newer_init, 0, 0, {0}};
