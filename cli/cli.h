/* Shared helpers of the lsq command's subcommand files. */
#ifndef LSQ_CLI_H
#define LSQ_CLI_H

#include <stddef.h>

#include "err.h"

/* Reads a whole file (NUL-terminated; caller frees *out). 0, or -1 with errno. */
int cli_read_file(const char *path, char **out, size_t *len);
/* "lsq CMD: field: message" on stderr. */
void cli_print_err(const char *cmd, const lsq_err *err);
/* Whether argv holds --help or -h. */
int cli_has_help(int argc, char **argv);

/* Test accuracy of a packed model with the integer engine. */
int cli_eval_lsqm(const char *model, const char *data_dir, int limit, int threads);
/* Runs the commands beyond train/eval/check (export, predict, info, and the
 * lsqd client); returns their exit status, or -1 for an unknown command. */
int cli_dispatch_more(const char *cmd, int argc, char **argv);
/* The lsqd client commands (submit, jobs, status, watch, cancel, download);
 * -1 for another command. */
int cli_client_dispatch(const char *cmd, int argc, char **argv);

#endif
