/* Atomic file writes (core/file.h): the target appears whole or keeps its
 * old bytes, no temporary file is left behind, and a full disk is the
 * status disk_full rather than io_error. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/file.h"

static char g_dir[64];

static void setup(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/lsq-file-XXXXXX");
    cr_assert(mkdtemp(g_dir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    cr_expect_eq(system(cmd), 0);
}

static size_t read_all(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    cr_assert(f, "cannot open %s", path);
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

static int entries(const char *dir)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | wc -l", dir);
    FILE *p = popen(cmd, "r");
    cr_assert(p);
    int n = -1;
    cr_assert_eq(fscanf(p, "%d", &n), 1);
    pclose(p);
    return n;
}

Test(file, write_atomic_replaces_the_target_and_leaves_no_temp, .init = setup, .fini = teardown)
{
    char path[128], buf[64];
    snprintf(path, sizeof path, "%s/m.lsqm", g_dir);
    lsq_err err;
    cr_assert_eq(lsq_file_write_atomic(path, "first", 5, "f", &err), LSQ_OK);
    cr_assert_eq(lsq_file_write_atomic(path, "second!", 7, "f", &err), LSQ_OK);
    cr_assert_eq(read_all(path, buf, sizeof buf), 7);
    cr_assert(!memcmp(buf, "second!", 7));
    cr_assert_eq(entries(g_dir), 1, "only the target is in the folder");
}

Test(file, failed_rename_keeps_nothing_and_says_why, .init = setup, .fini = teardown)
{
    /* a folder where the file should go: the rename fails, no temp remains */
    char path[128];
    snprintf(path, sizeof path, "%s/m.onnx", g_dir);
    cr_assert_eq(mkdir(path, 0755), 0);
    lsq_err err;
    lsq_err_clear(&err);
    cr_assert_eq(lsq_file_write_atomic(path, "x", 1, "output file", &err), LSQ_ERR_IO);
    cr_assert_str_eq(err.field, "output file");
    cr_assert(strstr(err.message, "cannot rename"), "%s", err.message);
    cr_assert_eq(entries(g_dir), 1, "the temp file was removed");
}

Test(file, enospc_and_edquot_are_disk_full_other_errors_io)
{
    lsq_err err;
    cr_assert_eq(lsq_err_errno(&err, ENOSPC, "f", "cannot write %s", "a.lsqc"),
                 LSQ_ERR_DISK_FULL);
    cr_assert(strstr(err.message, "disk full (ENOSPC)") && strstr(err.message, "a.lsqc"),
              "%s", err.message);
    cr_assert_str_eq(LSQ_STATUS_NAMES[err.code], "disk_full");
    cr_assert_eq(lsq_err_errno(&err, EDQUOT, "f", "x"), LSQ_ERR_DISK_FULL);
    cr_assert(strstr(err.message, "EDQUOT"), "%s", err.message);
    cr_assert_eq(lsq_err_errno(&err, EIO, "f", "cannot write %s", "a.lsqc"), LSQ_ERR_IO);
    cr_assert(!strstr(err.message, "disk full"), "%s", err.message);
}

Test(file, a_full_disk_is_disk_full, .init = setup, .fini = teardown)
{
    /* /dev/full fails every write with ENOSPC; write through a link to it
     * is not possible (rename would replace the link), so the temp file
     * itself is the link: PATH.tmp.PID -> /dev/full */
    char path[128], tmp[200];
    snprintf(path, sizeof path, "%s/c.lsqc", g_dir);
    lsq_file_tmp_name(tmp, sizeof tmp, path);
    if (symlink("/dev/full", tmp)) cr_skip_test("no /dev/full link: %s", strerror(errno));
    if (access("/dev/full", W_OK)) cr_skip_test("no writable /dev/full");
    cr_assert_eq(lsq_file_write_atomic(path, "old", 3, "f", NULL), LSQ_ERR_DISK_FULL);
    struct stat sb;
    cr_assert(stat(path, &sb) != 0, "no target was made from a failed write");
}
