/* lsq: one command for local work (train, import, eval, export, predict, info) and
 * for talking to lsqd (see `lsq --help`). Each group of subcommands lives in
 * its own file (commands.h); this one only dispatches. */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "core/isa.h"
#include "train/train.h"

static const char *USAGE =
    "usage: lsq COMMAND [ARGS]\n"
    "\n"
    "Local work:\n"
    "  train SPEC.json [--out DIR] [--events-fd N | --events FILE] [--threads N] [--quiet]\n"
    "                     train a job (full precision or LSQ) into DIR\n"
    "  import MODEL.onnx [--weight-bits N] [--act-bits N] [--json]\n"
    "                     a float ONNX model as lsq sees it: layers, shapes, bits\n"
    "  eval MODEL         test accuracy and loss of a checkpoint (.lsqc) or packed model (.lsqm)\n"
    "  export CHECKPOINT --format lsqm|onnx [-o FILE]\n"
    "  predict MODEL.lsqm IMAGES...   classify PNG / JPEG / PGM / IDX images\n"
    "  info MODEL         layers, bits, step sizes and size of a model\n"
    "  check SPEC.json    validate a job spec and print it with every default\n"
    "  dataset import SRC --out DIR [...]   decode a dataset (IDX, CIFAR, image folders,\n"
    "                     .npz) once into a cache that jobs train on\n"
    "  dataset info DIR   the summary of a dataset cache\n"
    "\n"
    "Talking to lsqd (LSQD_URL, default http://127.0.0.1:8080; LSQD_TOKEN, the bearer\n"
    "token when lsqd asks for one):\n"
    "  submit SPEC.json | jobs | status ID | watch ID | cancel ID | download ID NAME [-o FILE]\n"
    "\n"
    "Run `lsq COMMAND --help` for the options of one command; `lsq --version` for\n"
    "the vector path of the training loops (LSQ_ISA=avx2|avx512 forces one).\n";

/* Which vector path the training loops take here, and which this CPU has. */
static int print_version(void)
{
    printf("lsq\nisa: %s\navailable:", lsq_isa_name(lsq_isa_active()));
    for (int i = 0; i < LSQ_ISA_COUNT; i++)
        if (lsq_isa_supported((lsq_isa)i)) printf(" %s", lsq_isa_name((lsq_isa)i));
    printf("\n");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(USAGE, stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(USAGE, stdout);
        return 0;
    }
    /* a bad LSQ_ISA, LSQ_CONV, LSQ_WINO, LSQ_BWD or LSQ_KERNEL fails every
     * command rather than run another path */
    lsq_err err;
    if (train_paths_from_env(&err) != LSQ_OK) {
        fprintf(stderr, "lsq: %s\n", err.message);
        return 2;
    }
    if (strcmp(cmd, "--version") == 0) return print_version();
    argc--, argv++;
    int (*const groups[])(const char *, int, char **) = {
        cli_train_dispatch, cli_model_dispatch, cli_deploy_dispatch, cli_dataset_dispatch,
        cli_client_dispatch,
    };
    for (size_t i = 0; i < sizeof groups / sizeof *groups; i++) {
        int rc = groups[i](cmd, argc, argv);
        if (rc >= 0) return rc;
    }
    fprintf(stderr, "lsq: unknown command '%s'\n\n%s", cmd, USAGE);
    return 2;
}
