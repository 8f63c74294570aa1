/* The subcommand groups of lsq, one file each: train.c (train, check),
 * deploy.c (export, eval, predict, info), model.c (import), dataset.c
 * (dataset import, dataset info) and client.c (the lsqd client: submit,
 * jobs, status, watch, cancel, download). Each dispatcher runs its
 * command and returns the exit status, or -1 when cmd is not one of its own.
 * argv[0] is the command's name. */
#ifndef LSQ_CLI_COMMANDS_H
#define LSQ_CLI_COMMANDS_H

int cli_train_dispatch(const char *cmd, int argc, char **argv);
int cli_deploy_dispatch(const char *cmd, int argc, char **argv);
int cli_model_dispatch(const char *cmd, int argc, char **argv);
int cli_dataset_dispatch(const char *cmd, int argc, char **argv);
int cli_client_dispatch(const char *cmd, int argc, char **argv);

#endif
