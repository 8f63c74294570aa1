/* Helpers shared by the subcommand groups of lsq (train.c, deploy.c,
 * client.c). Nothing here calls back into a group. */
#ifndef LSQ_CLI_UTIL_H
#define LSQ_CLI_UTIL_H

#include <stddef.h>

#include "core/err.h"

/* Reads a whole file (NUL-terminated; caller frees *out). 0, or -1 with errno. */
int cli_read_file(const char *path, char **out, size_t *len);
/* "lsq CMD: field: message" on stderr. */
void cli_print_err(const char *cmd, const lsq_err *err);
/* Whether argv holds --help or -h. */
int cli_has_help(int argc, char **argv);
/* Parses s as an integer in lo..hi into *out; on failure prints
 * "lsq CMD: OPT must be ..." and returns -1. */
int cli_parse_int(const char *cmd, const char *opt, const char *s, int lo, int hi, int *out);
/* Whether s ends with suffix. */
int cli_ends_with(const char *s, const char *suffix);

#endif
