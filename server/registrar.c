/* The registrar (registrar.h): a FIFO of dataset ids and one thread that
 * works through it. Everything slow or fed by strangers happens here or in
 * the children it runs, never on an HTTP thread. */
#include "registrar.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "child.h"
#include "fetch.h"
#include "log.h"
#include "store.h"

#define CHILD_OUTPUT_MAX (64u << 20)

/* ------------------------------------------------- a dataset's files */

/* The archive kinds an upload's name may end with; the first match wins. */
static const char *const EXTENSIONS[] = {".tar.gz", ".tgz", ".tar", ".zip", ".npz"};

void registrar_dir(const lsqd_config *cfg, int64_t id, char *out, size_t cap)
{
    snprintf(out, cap, "%.*s/datasets/%lld", (int)(cap > 64 ? cap - 64 : 0), cfg->data,
             (long long)id);
}

const char *registrar_extension(const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof EXTENSIONS / sizeof *EXTENSIONS; i++) {
        size_t e = strlen(EXTENSIONS[i]);
        if (n > e && !strcasecmp(name + n - e, EXTENSIONS[i])) return EXTENSIONS[i];
    }
    return NULL;
}

void registrar_source_path(const lsqd_config *cfg, int64_t id, const char *name, char *out,
                           size_t cap)
{
    char dir[PATH_MAX];
    registrar_dir(cfg, id, dir, sizeof dir);
    const char *ext = registrar_extension(name);
    snprintf(out, cap, "%.*s/source%s", (int)(cap > 32 ? cap - 32 : 0), dir, ext ? ext : "");
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    if (flag == FTW_DP) rmdir(path);
    else unlink(path);
    return 0;
}

void registrar_remove_dir(const char *dir)
{
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}


static const lsqd_config *g_cfg;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cond = PTHREAD_COND_INITIALIZER;
static int64_t *g_queue;
static size_t g_head, g_len, g_cap;
static int g_stop;      /* read by children and fetches through their stop pointer */
static pthread_t g_thread;
static int g_started;

void registrar_enqueue(int64_t id)
{
    pthread_mutex_lock(&g_lock);
    if (g_head > 0 && g_head == g_len) g_head = g_len = 0;
    if (g_len == g_cap) {
        size_t cap = g_cap ? g_cap * 2 : 16;
        int64_t *q = realloc(g_queue, cap * sizeof *q);
        if (!q) {
            pthread_mutex_unlock(&g_lock);
            log_error("cannot queue a dataset (out of memory); it registers at the next start",
                      "{s:I}", "dataset", (json_int_t)id);
            return;
        }
        g_queue = q;
        g_cap = cap;
    }
    g_queue[g_len++] = id;
    pthread_cond_signal(&g_cond);
    pthread_mutex_unlock(&g_lock);
}

static int stopping(void)
{
    return __atomic_load_n(&g_stop, __ATOMIC_ACQUIRE);
}

/* Fails the registration: the folder goes, the row keeps the error. The
 * message is scrubbed of the server's paths first. */
static void fail(int64_t id, const char *dir, const char *code, const char *message)
{
    registrar_remove_dir(dir);
    if (store_dataset_fail(id, code, message) != STORE_OK)
        log_error("cannot record a failed dataset", "{s:I}", "dataset", (json_int_t)id);
    log_warn("dataset failed", "{s:I,s:s,s:s}", "dataset", (json_int_t)id, "code", code,
             "message", message);
}

/* msg with the source path as the dataset's name, its folder as
 * "dataset NAME" and any other path of the data folder as DATA. */
static void scrub(char *out, size_t cap, const char *msg, const char *src, const char *dir,
                  const char *name)
{
    char a[1024], b[1024], label[DATASET_NAME_MAX + 16];
    snprintf(label, sizeof label, "dataset %s", name);
    child_scrub(a, sizeof a, msg, src, name);
    child_scrub(b, sizeof b, a, dir, label);
    child_scrub(out, cap, b, g_cfg->data, "DATA");
}

static void add_arg(char **argv, int *argc, const char *s)
{
    argv[(*argc)++] = (char *)(uintptr_t)s;
}

static void register_one(int64_t id)
{
    json_t *ds = store_dataset_get(id, 0);
    if (!ds) return;
    char dir[PATH_MAX], src[PATH_MAX + 64], samples[PATH_MAX + 32], msg[1024];
    char *out = NULL, *sout = NULL;
    json_t *doc = NULL;
    const char *state = json_string_value(json_object_get(ds, "state"));
    const char *name = json_string_value(json_object_get(ds, "name"));
    const char *source = json_string_value(json_object_get(ds, "source"));
    const char *origin = json_string_value(json_object_get(ds, "origin"));
    json_t *opts = json_object_get(ds, "options");
    if (strcmp(state, DS_STATE_NAMES[DS_REGISTERING])) goto out;
    registrar_dir(g_cfg, id, dir, sizeof dir);
    int is_url = !strcmp(source, DS_SOURCE_NAMES[DS_SRC_URL]);
    int is_root = !strcmp(source, DS_SOURCE_NAMES[DS_SRC_ROOT]);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        snprintf(msg, sizeof msg, "cannot create the dataset's folder: %s", strerror(errno));
        fail(id, dir, "internal", msg);
        goto out;
    }
    double t0 = 0;
    {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        t0 = ts.tv_sec + ts.tv_nsec / 1e9;
    }
    if (is_root) {
        snprintf(src, sizeof src, "%s/%s", g_cfg->datasets_root, origin ? origin : "");
    } else {
        registrar_source_path(g_cfg, id, name, src, sizeof src);
    }
    if (is_url) {
        fetch_opts fo = {g_cfg->fetch_timeout_s, g_cfg->fetch_low_speed_s, g_cfg->max_upload,
                         g_cfg->allow_private_urls, &g_stop};
        fetch_err fe;
        long long bytes = 0;
        char sha[65];
        if (fetch_to_file(origin, src, &fo, &bytes, sha, &fe)) {
            if (!strcmp(fe.code, "stopped")) goto out; /* fetched again at the next start */
            fail(id, dir, fe.code, fe.message);
            goto out;
        }
        store_dataset_set_file(id, bytes, sha);
    } else if (!is_root && access(src, R_OK) != 0) {
        fail(id, dir, "interrupted", "the uploaded file is gone (lsqd stopped before it was "
             "registered); upload it again");
        goto out;
    }

    /* lsq dataset import SRC --out DIR --json --max-bytes N [options] */
    char maxb[32], chans[8], frac[32];
    char *argv[24];
    int argc = 0;
    snprintf(maxb, sizeof maxb, "%llu", g_cfg->max_expanded);
    add_arg(argv, &argc, g_cfg->lsq_bin);
    add_arg(argv, &argc, "dataset");
    add_arg(argv, &argc, "import");
    add_arg(argv, &argc, src);
    add_arg(argv, &argc, "--out");
    add_arg(argv, &argc, dir);
    add_arg(argv, &argc, "--json");
    add_arg(argv, &argc, "--max-bytes");
    add_arg(argv, &argc, maxb);
    const char *fmt = json_string_value(json_object_get(opts, "format"));
    const char *size = json_string_value(json_object_get(opts, "size"));
    json_t *ch = json_object_get(opts, "channels"), *tf = json_object_get(opts, "test_fraction");
    if (fmt) { add_arg(argv, &argc, "--format"); add_arg(argv, &argc, fmt); }
    if (size) { add_arg(argv, &argc, "--size"); add_arg(argv, &argc, size); }
    if (json_is_integer(ch)) {
        snprintf(chans, sizeof chans, "%d", (int)json_integer_value(ch));
        add_arg(argv, &argc, "--channels");
        add_arg(argv, &argc, chans);
    }
    if (json_is_number(tf)) {
        snprintf(frac, sizeof frac, "%.17g", json_number_value(tf));
        add_arg(argv, &argc, "--test-fraction");
        add_arg(argv, &argc, frac);
    }
    argv[argc] = NULL;
    child_result cr;
    out = child_run(argv, g_cfg->import_timeout_s, CHILD_OUTPUT_MAX, &g_stop, &cr);
    if (cr.stopped) goto out;
    doc = out ? json_loads(out, 0, NULL) : NULL;
    if (!out || cr.status != 0 || !json_is_object(doc) || json_object_get(doc, "error")) {
        json_t *e = json_object_get(doc, "error");
        const char *code = json_string_value(json_object_get(e, "code"));
        const char *m = json_string_value(json_object_get(e, "message"));
        if (cr.timed_out) {
            snprintf(msg, sizeof msg, "the import took longer than %g s (--import-timeout)",
                     g_cfg->import_timeout_s);
            fail(id, dir, "timeout", msg);
        } else if (m) {
            scrub(msg, sizeof msg, m, src, dir, name);
            fail(id, dir, code && *code ? code : "import_failed", msg);
        } else {
            fail(id, dir, "import_failed", !out ? "cannot run the importer"
                                                : "the importer stopped without a summary");
        }
        goto out;
    }

    /* lsq dataset samples DIR --out DIR/samples.png */
    snprintf(samples, sizeof samples, "%s/samples.png", dir);
    char *sargv[] = {(char *)g_cfg->lsq_bin, "dataset", "samples", dir, "--out", samples, "--json", NULL};
    sout = child_run(sargv, g_cfg->import_timeout_s, CHILD_OUTPUT_MAX, &g_stop, &cr);
    if (cr.stopped) goto out;
    if (!sout || cr.status != 0) {
        fail(id, dir, "internal", "cannot draw the dataset's samples");
        goto out;
    }
    if (!is_root) unlink(src);
    /* the summary, without the cache's server path */
    json_object_del(doc, "cache");
    json_t *cb = json_object_get(doc, "bytes");
    if (cb) {
        json_object_set(doc, "cache_bytes", cb);
        json_object_del(doc, "bytes");
    }
    char *text = json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(17));
    if (!text || store_dataset_ready(id, text) != STORE_OK) {
        fail(id, dir, "internal", "cannot record the dataset");
        free(text);
        goto out;
    }
    free(text);
    {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        log_info("dataset ready", "{s:I,s:s,s:s,s:f}", "dataset", (json_int_t)id, "name", name,
                 "source", source, "seconds", ts.tv_sec + ts.tv_nsec / 1e9 - t0);
    }
out:
    free(out);
    free(sout);
    json_decref(doc);
    json_decref(ds);
}

static void *run(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&g_lock);
        while (g_head == g_len && !stopping()) pthread_cond_wait(&g_cond, &g_lock);
        if (stopping()) {
            pthread_mutex_unlock(&g_lock);
            break;
        }
        int64_t id = g_queue[g_head++];
        pthread_mutex_unlock(&g_lock);
        register_one(id);
    }
    return NULL;
}

static int name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > DATASET_NAME_MAX || s[0] == '.') return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return 0;
    return 1;
}

/* Every sub-folder of the root that has no dataset yet gets one. */
static int scan_root(const lsqd_config *cfg)
{
    struct dirent **list = NULL;
    int n = scandir(cfg->datasets_root, &list, NULL, alphasort);
    if (n < 0) {
        log_error("cannot read --datasets-root", "{s:s,s:s}", "root", cfg->datasets_root,
                  "error", strerror(errno));
        return -1;
    }
    int added = 0;
    for (int i = 0; i < n; i++) {
        const char *sub = list[i]->d_name;
        char path[PATH_MAX + 256];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", cfg->datasets_root, sub);
        int64_t id;
        if (name_ok(sub) && stat(path, &sb) == 0 && S_ISDIR(sb.st_mode) &&
            store_dataset_root_find(sub, &id) == STORE_NOT_FOUND) {
            if (store_dataset_insert(sub, DS_SRC_ROOT, sub, "{}", -1, NULL, STORE_LOCAL_USER,
                                     &id) == STORE_OK) {
                registrar_enqueue(id);
                added++;
            }
        }
        free(list[i]);
    }
    free(list);
    log_info("datasets root scanned", "{s:s,s:i}", "root", cfg->datasets_root, "new", added);
    return 0;
}

int registrar_start(const lsqd_config *cfg)
{
    g_cfg = cfg;
    __atomic_store_n(&g_stop, 0, __ATOMIC_RELEASE);
    char top[PATH_MAX];
    snprintf(top, sizeof top, "%.*s/datasets", PATH_MAX - 16, cfg->data);
    if (mkdir(top, 0755) != 0 && errno != EEXIST) {
        log_error("cannot create the datasets folder", "{s:s}", "error", strerror(errno));
        return -1;
    }
    json_t *left = store_datasets_registering();
    size_t i;
    json_t *v;
    json_array_foreach(left, i, v) registrar_enqueue(json_integer_value(v));
    if (json_array_size(left))
        log_info("registering datasets left by the previous lsqd", "{s:i}", "datasets",
                 (int)json_array_size(left));
    json_decref(left);
    if (cfg->datasets_root[0] && scan_root(cfg)) return -1;
    if (pthread_create(&g_thread, NULL, run, NULL)) return -1;
    g_started = 1;
    return 0;
}

void registrar_stop(void)
{
    if (!g_started) return;
    pthread_mutex_lock(&g_lock);
    __atomic_store_n(&g_stop, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&g_cond);
    pthread_mutex_unlock(&g_lock);
    pthread_join(g_thread, NULL);
    g_started = 0;
    /* ids still queued stay registering in the store: the next start
     * queues them again */
    pthread_mutex_lock(&g_lock);
    free(g_queue);
    g_queue = NULL;
    g_head = g_len = g_cap = 0;
    pthread_mutex_unlock(&g_lock);
}
