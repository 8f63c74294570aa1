/* Subcommands beyond train/eval/check. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

int cli_eval_lsqm(const char *model, const char *data_dir, int limit, int threads)
{
    (void)data_dir, (void)limit, (void)threads;
    fprintf(stderr, "lsq eval: %s: packed models are not supported by this build\n", model);
    return 1;
}

int cli_dispatch_more(const char *cmd, int argc, char **argv)
{
    (void)cmd, (void)argc, (void)argv;
    return -1;
}
