/* The registrar: one thread that registers datasets off the HTTP threads.
 * For each dataset in state registering it fetches the URL (fetch.h) when
 * there is one, runs `lsq dataset import --json` and `lsq dataset samples`
 * in child processes (child.h) with time limits, and ends the dataset
 * ready with the importer's summary or failed with the fetcher's or the
 * importer's error code and message; a failed registration leaves no file
 * behind. Datasets found registering at start-up (lsqd stopped during a
 * registration) are registered again, and every sub-folder of
 * --datasets-root not registered yet is registered once. */
#ifndef LSQD_REGISTRAR_H
#define LSQD_REGISTRAR_H

#include <stdint.h>

#include <stddef.h>

#include "config.h"

#define DATASET_NAME_MAX 128

/* A dataset's files, which the registrar makes and removes:
 * DATA/datasets/ID (no trailing slash). */
void registrar_dir(const lsqd_config *cfg, int64_t id, char *out, size_t cap);
/* The file a registration reads: DATA/datasets/ID/source.EXT, the extension
 * the one of name (the importer tells a .npz by it). */
void registrar_source_path(const lsqd_config *cfg, int64_t id, const char *name, char *out,
                           size_t cap);
/* The archive kind a dataset's name ends with (".tar", ".tar.gz", ".tgz",
 * ".zip", ".npz"; a static string), or NULL when it is none of them. */
const char *registrar_extension(const char *name);
/* Removes a folder and everything in it (no symlink is followed). */
void registrar_remove_dir(const char *dir);

/* Queues the leftovers and the new folders of the datasets root, then
 * starts the thread. -1 (logged) when the root cannot be read or the
 * thread cannot start. */
int registrar_start(const lsqd_config *cfg);
/* Dataset id (registering) is waiting: register it after those before it. */
void registrar_enqueue(int64_t id);
/* Stops the thread: a fetch or a child running now is abandoned, and its
 * dataset stays registering (registered again at the next start). */
void registrar_stop(void);

#endif
