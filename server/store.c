/* SQLite store of lsqd: the only file with SQL in it. Each thread uses its
 * own connection (WAL lets readers run beside the one writer); writes that
 * must be atomic run in BEGIN IMMEDIATE transactions, and SQLITE_BUSY is
 * absorbed by a busy timeout. */
#include "store.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "embedded.h"
#include "log.h"

const char *const JOB_STATE_NAMES[] = {"queued", "running", "succeeded", "failed", "cancelled"};
_Static_assert(sizeof JOB_STATE_NAMES / sizeof *JOB_STATE_NAMES == JOB_STATE_COUNT,
               "JOB_STATE_NAMES must name every job_state");

const char *const DS_STATE_NAMES[] = {"registering", "ready", "failed"};
_Static_assert(sizeof DS_STATE_NAMES / sizeof *DS_STATE_NAMES == DS_STATE_COUNT,
               "DS_STATE_NAMES must name every ds_state");
const char *const DS_SOURCE_NAMES[] = {"upload", "url", "root"};
_Static_assert(sizeof DS_SOURCE_NAMES / sizeof *DS_SOURCE_NAMES == DS_SRC_COUNT,
               "DS_SOURCE_NAMES must name every ds_source");

int job_state_from_name(const char *name)
{
    for (int i = 0; i < JOB_STATE_COUNT; i++)
        if (name && !strcmp(name, JOB_STATE_NAMES[i])) return i;
    return -1;
}


typedef struct conn_node {
    sqlite3 *db;
    struct conn_node *next;
} conn_node;

static char g_path[4096];
/* Only store_open creates the file: a connection opened later on a file that
 * has gone (moved, deleted) fails, instead of starting an empty database. */
static int g_may_create;
static pthread_mutex_t g_conns_lock = PTHREAD_MUTEX_INITIALIZER;
static conn_node *g_conns;
static _Thread_local sqlite3 *tl_db;
static _Thread_local unsigned tl_generation;
static unsigned g_generation = 1;  /* bumped by store_close: stale tl_db */

static double now_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

/* The last failure of a SQLite call on this thread and when it happened:
 * what store_fault_since tells the HTTP layer, so that a busy, full or
 * failing database gets its own reply instead of a generic 500. */
static _Thread_local int tl_fault_rc;
static _Thread_local double tl_fault_t;

static int note(int rc)
{
    if (rc != SQLITE_OK && rc != SQLITE_ROW && rc != SQLITE_DONE) {
        tl_fault_rc = rc;
        tl_fault_t = now_s();
    }
    return rc;
}

static int sql_step(sqlite3_stmt *st)
{
    return note(sqlite3_step(st));
}

store_fault store_fault_since(double t0)
{
    if (!tl_fault_rc || tl_fault_t < t0) return STORE_FAULT_NONE;
    switch (tl_fault_rc & 0xff) {
    case SQLITE_BUSY: case SQLITE_LOCKED: return STORE_FAULT_BUSY;
    case SQLITE_FULL: return STORE_FAULT_FULL;
    case SQLITE_IOERR: case SQLITE_CANTOPEN: case SQLITE_CORRUPT: case SQLITE_READONLY:
    case SQLITE_NOTADB:
        return STORE_FAULT_IO;
    default: return STORE_FAULT_OTHER;
    }
}

static void log_sql(const char *what, sqlite3 *db)
{
    log_error("sqlite", "{s:s,s:s}", "op", what, "error", db ? sqlite3_errmsg(db) : "no connection");
}

static int exec_sql(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (note(sqlite3_exec(db, sql, NULL, NULL, &msg)) != SQLITE_OK) {
        log_error("sqlite", "{s:s,s:s}", "op", sql, "error", msg ? msg : "?");
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

/* Ends the open transaction: COMMIT when ok, else ROLLBACK. A COMMIT that
 * fails (SQLITE_BUSY, SQLITE_FULL, SQLITE_IOERR) is rolled back too, so that
 * nothing half-written stays; returns -1 then. The ROLLBACK is not noted as
 * a fault: the failure that caused it is the one to report. */
static int tx_end(sqlite3 *db, int ok)
{
    if (ok && exec_sql(db, "COMMIT") == 0) return 0;
    if (!sqlite3_get_autocommit(db)) sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return ok ? -1 : 0;
}

static sqlite3 *open_conn(void)
{
    sqlite3 *db = NULL;
    if (note(sqlite3_open_v2(g_path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX |
                             (g_may_create ? SQLITE_OPEN_CREATE : 0), NULL)) != SQLITE_OK) {
        log_sql("open", db);
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, STORE_BUSY_TIMEOUT_MS);
    if (exec_sql(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
                     "PRAGMA foreign_keys=ON;")) {
        sqlite3_close(db);
        return NULL;
    }
    conn_node *n = malloc(sizeof *n);
    if (!n) { sqlite3_close(db); return NULL; }
    n->db = db;
    pthread_mutex_lock(&g_conns_lock);
    n->next = g_conns;
    g_conns = n;
    pthread_mutex_unlock(&g_conns_lock);
    return db;
}

/* This thread's connection, opened on first use. */
static sqlite3 *db_get(void)
{
    if (tl_db && tl_generation == __atomic_load_n(&g_generation, __ATOMIC_ACQUIRE)) return tl_db;
    tl_db = open_conn();
    tl_generation = __atomic_load_n(&g_generation, __ATOMIC_ACQUIRE);
    return tl_db;
}

static sqlite3_stmt *prep(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (!db) return NULL;
    if (note(sqlite3_prepare_v2(db, sql, -1, &st, NULL)) != SQLITE_OK) {
        log_error("sqlite", "{s:s,s:s}", "op", sql, "error", sqlite3_errmsg(db));
        return NULL;
    }
    return st;
}

/* Statements of the requests every authenticated call makes (the token,
 * the object's owner), prepared once per connection and reset after each
 * use instead of parsed again: with tokens on, they ran on every request.
 * Finalized when store_close closes their connection. */
enum { HOT_TOKEN, HOT_OWNER_JOB, HOT_OWNER_MODEL, HOT_OWNER_DATASET, HOT_COUNT };
static _Thread_local sqlite3_stmt *tl_hot[HOT_COUNT];
static _Thread_local unsigned tl_hot_generation;

static sqlite3_stmt *prep_hot(sqlite3 *db, int slot, const char *sql)
{
    if (!db) return NULL;
    if (tl_hot_generation != tl_generation) {
        memset(tl_hot, 0, sizeof tl_hot); /* a new connection: the old ones' are gone */
        tl_hot_generation = tl_generation;
    }
    if (!tl_hot[slot] &&
        note(sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &tl_hot[slot], NULL)) !=
            SQLITE_OK) {
        log_error("sqlite", "{s:s,s:s}", "op", sql, "error", sqlite3_errmsg(db));
        tl_hot[slot] = NULL;
    }
    return tl_hot[slot];
}

static void done_hot(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

static int migrate(sqlite3 *db)
{
    int version = 0;
    sqlite3_stmt *st = prep(db, "PRAGMA user_version");
    if (!st) return -1;
    if (sql_step(st) == SQLITE_ROW) version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (version > EMBED_MIGRATION_COUNT) {
        log_error("database is newer than this lsqd", "{s:i,s:i}", "version", version,
                  "known", EMBED_MIGRATION_COUNT);
        return -1;
    }
    for (int v = version; v < EMBED_MIGRATION_COUNT; v++) {
        char pragma[64];
        snprintf(pragma, sizeof pragma, "PRAGMA user_version=%d;", v + 1);
        if (exec_sql(db, "BEGIN IMMEDIATE")) return -1;
        if (exec_sql(db, EMBED_MIGRATIONS[v].text) || exec_sql(db, pragma)) {
            exec_sql(db, "ROLLBACK");
            return -1;
        }
        if (exec_sql(db, "COMMIT")) return -1;
        log_info("migration applied", "{s:s,s:i}", "file", EMBED_MIGRATIONS[v].name,
                 "version", v + 1);
    }
    return 0;
}

int store_open(const char *path)
{
    snprintf(g_path, sizeof g_path, "%s", path);
    g_may_create = 1;
    sqlite3 *db = db_get();
    g_may_create = 0;
    if (!db) return -1;
    return migrate(db);
}

void store_close(void)
{
    pthread_mutex_lock(&g_conns_lock);
    for (conn_node *n = g_conns, *next; n; n = next) {
        next = n->next;
        /* the hot statements (prep_hot) live as long as their connection */
        for (sqlite3_stmt *st; (st = sqlite3_next_stmt(n->db, NULL));) sqlite3_finalize(st);
        sqlite3_close_v2(n->db);
        free(n);
    }
    g_conns = NULL;
    __atomic_add_fetch(&g_generation, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&g_conns_lock);
    tl_db = NULL;
}

int store_version(void)
{
    int v = -1;
    sqlite3_stmt *st = prep(db_get(), "PRAGMA user_version");
    if (st && sql_step(st) == SQLITE_ROW) v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

int store_ping(void)
{
    sqlite3_stmt *st = prep(db_get(), "SELECT count(*) FROM jobs WHERE id = 0");
    int rc = st && sql_step(st) == SQLITE_ROW ? 0 : -1;
    sqlite3_finalize(st);
    return rc;
}

/* ---------------------------------------------------------------- jobs */

store_status store_job_insert(const char *name, const char *spec_json, int64_t model_id,
                              int64_t dataset_id, int64_t owner_id, int max_queue,
                              int max_per_user, int64_t *id)
{
    sqlite3 *db = db_get();
    sqlite3_stmt *st = NULL;
    store_status rc = STORE_ERR;
    if (!db || exec_sql(db, "BEGIN IMMEDIATE")) return STORE_ERR;
    st = prep(db, "SELECT count(*) FROM jobs WHERE state = 'queued'");
    if (!st || sql_step(st) != SQLITE_ROW) goto out;
    if (sqlite3_column_int64(st, 0) >= max_queue) { rc = STORE_FULL; goto out; }
    sqlite3_finalize(st);
    st = NULL;
    if (max_per_user > 0) {
        st = prep(db, "SELECT count(*) FROM jobs WHERE state = 'queued' AND owner_id = ?");
        if (!st) goto out;
        sqlite3_bind_int64(st, 1, owner_id);
        if (sql_step(st) != SQLITE_ROW) goto out;
        if (sqlite3_column_int64(st, 0) >= max_per_user) { rc = STORE_LIMIT; goto out; }
        sqlite3_finalize(st);
        st = NULL;
    }
    if (model_id > 0) {
        /* in the same transaction as the insert: a DELETE of the model
         * cannot slip in between */
        st = prep(db, "SELECT 1 FROM models WHERE id = ?");
        if (!st) goto out;
        sqlite3_bind_int64(st, 1, model_id);
        int step = sql_step(st);
        if (step == SQLITE_DONE) { rc = STORE_NOT_FOUND; goto out; }
        if (step != SQLITE_ROW) goto out;
        sqlite3_finalize(st);
        st = NULL;
    }
    if (dataset_id > 0) {
        st = prep(db, "SELECT 1 FROM datasets WHERE id = ? AND state = 'ready'");
        if (!st) goto out;
        sqlite3_bind_int64(st, 1, dataset_id);
        int step = sql_step(st);
        if (step == SQLITE_DONE) { rc = STORE_NOT_FOUND; goto out; }
        if (step != SQLITE_ROW) goto out;
        sqlite3_finalize(st);
        st = NULL;
    }
    st = prep(db, "INSERT INTO jobs (name, spec, created_at, model_id, dataset_id, owner_id) "
                  "VALUES (?, ?, ?, ?, ?, ?)");
    if (!st) goto out;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, spec_json, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(st, 3, now_s());
    if (model_id > 0) sqlite3_bind_int64(st, 4, model_id);
    else sqlite3_bind_null(st, 4);
    if (dataset_id > 0) sqlite3_bind_int64(st, 5, dataset_id);
    else sqlite3_bind_null(st, 5);
    sqlite3_bind_int64(st, 6, owner_id);
    if (sql_step(st) != SQLITE_DONE) { log_sql("insert job", db); goto out; }
    *id = sqlite3_last_insert_rowid(db);
    rc = STORE_OK;
out:
    sqlite3_finalize(st);
    if (tx_end(db, rc == STORE_OK)) rc = STORE_ERR;
    return rc;
}

#define JOB_COLUMNS "id, name, state, spec, created_at, started_at, finished_at, attempts, " \
    "cancel_requested, last_seq, progress, last_epoch, test_acc, error_code, error_message, " \
    "exit_status, dataset_id, error_field, (SELECT u.name FROM users u WHERE u.id = jobs.owner_id), " \
    "slurm_id"

static json_t *col_real_or_null(sqlite3_stmt *st, int i)
{
    return sqlite3_column_type(st, i) == SQLITE_NULL ? json_null()
                                                     : json_real(sqlite3_column_double(st, i));
}

static json_t *col_json_or_null(sqlite3_stmt *st, int i)
{
    const char *t = (const char *)sqlite3_column_text(st, i);
    if (!t) return json_null();
    json_t *v = json_loads(t, 0, NULL);
    return v ? v : json_null();
}

static json_t *col_text_or_null(sqlite3_stmt *st, int i)
{
    const char *t = (const char *)sqlite3_column_text(st, i);
    return t ? json_string(t) : json_null();
}

static json_t *row_to_job(sqlite3_stmt *st, int with_spec)
{
    json_t *j = json_object();
    json_object_set_new(j, "id", json_integer(sqlite3_column_int64(st, 0)));
    json_object_set_new(j, "name", json_string((const char *)sqlite3_column_text(st, 1)));
    json_object_set_new(j, "state", json_string((const char *)sqlite3_column_text(st, 2)));
    if (with_spec) json_object_set_new(j, "spec", col_json_or_null(st, 3));
    json_object_set_new(j, "created_at", col_real_or_null(st, 4));
    json_object_set_new(j, "started_at", col_real_or_null(st, 5));
    json_object_set_new(j, "finished_at", col_real_or_null(st, 6));
    json_object_set_new(j, "attempts", json_integer(sqlite3_column_int(st, 7)));
    json_object_set_new(j, "cancel_requested", json_boolean(sqlite3_column_int(st, 8)));
    json_object_set_new(j, "last_seq", json_integer(sqlite3_column_int64(st, 9)));
    json_object_set_new(j, "progress", col_json_or_null(st, 10));
    json_object_set_new(j, "last_epoch", col_json_or_null(st, 11));
    json_object_set_new(j, "test_acc", col_real_or_null(st, 12));
    if (sqlite3_column_type(st, 13) != SQLITE_NULL) {
        json_t *e = json_pack("{s:s,s:s}",
            "code", (const char *)sqlite3_column_text(st, 13),
            "message", sqlite3_column_text(st, 14) ? (const char *)sqlite3_column_text(st, 14) : "");
        if (sqlite3_column_type(st, 17) != SQLITE_NULL)
            json_object_set_new(e, "field", json_string((const char *)sqlite3_column_text(st, 17)));
        json_object_set_new(j, "error", e);
    } else {
        json_object_set_new(j, "error", json_null());
    }
    json_object_set_new(j, "exit_status", sqlite3_column_type(st, 15) == SQLITE_NULL
                        ? json_null() : json_integer(sqlite3_column_int(st, 15)));
    json_object_set_new(j, "dataset_id", sqlite3_column_type(st, 16) == SQLITE_NULL
                        ? json_null() : json_integer(sqlite3_column_int64(st, 16)));
    json_object_set_new(j, "owner", col_text_or_null(st, 18));
    json_object_set_new(j, "slurm_id", sqlite3_column_type(st, 19) == SQLITE_NULL
                        ? json_null() : json_string((const char *)sqlite3_column_text(st, 19)));
    return j;
}

json_t *store_job_get(int64_t id)
{
    sqlite3_stmt *st = prep(db_get(), "SELECT " JOB_COLUMNS " FROM jobs WHERE id = ?");
    json_t *j = NULL;
    if (!st) return NULL;
    sqlite3_bind_int64(st, 1, id);
    if (sql_step(st) == SQLITE_ROW) j = row_to_job(st, 1);
    sqlite3_finalize(st);
    return j;
}

json_t *store_job_list(int state, int limit, int64_t after, int64_t owner_id)
{
    sqlite3_stmt *st = prep(db_get(),
        "SELECT " JOB_COLUMNS " FROM jobs WHERE (?1 IS NULL OR state = ?1) "
        "AND (?2 <= 0 OR id < ?2) AND (?4 <= 0 OR owner_id = ?4) ORDER BY id DESC LIMIT ?3");
    if (!st) return NULL;
    sqlite3_bind_int64(st, 4, owner_id);
    if (state >= 0) sqlite3_bind_text(st, 1, JOB_STATE_NAMES[state], -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, after);
    sqlite3_bind_int(st, 3, limit);
    json_t *arr = json_array();
    int rc;
    while ((rc = sql_step(st)) == SQLITE_ROW) json_array_append_new(arr, row_to_job(st, 1));
    if (rc != SQLITE_DONE) { log_sql("list jobs", db_get()); json_decref(arr); arr = NULL; }
    sqlite3_finalize(st);
    return arr;
}

store_status store_job_counts(int64_t *counts)
{
    for (int i = 0; i < JOB_STATE_COUNT; i++) counts[i] = 0;
    sqlite3_stmt *st = prep(db_get(), "SELECT state, count(*) FROM jobs GROUP BY state");
    if (!st) return STORE_ERR;
    int rc;
    while ((rc = sql_step(st)) == SQLITE_ROW) {
        int s = job_state_from_name((const char *)sqlite3_column_text(st, 0));
        if (s >= 0) counts[s] = sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? STORE_OK : STORE_ERR;
}

int store_job_finished(int64_t id, job_state *state)
{
    sqlite3_stmt *st = prep(db_get(), "SELECT state FROM jobs WHERE id = ?");
    int r = -1;
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, id);
    if (sql_step(st) == SQLITE_ROW) {
        int s = job_state_from_name((const char *)sqlite3_column_text(st, 0));
        if (state) *state = (job_state)s;
        r = s >= JOB_SUCCEEDED;
    }
    sqlite3_finalize(st);
    return r;
}

store_status store_job_claim(int max_running_per_user, int64_t *id, char **spec, int *attempts)
{
    sqlite3 *db = db_get();
    sqlite3_stmt *st = prep(db,
        "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = ?1 "
        "WHERE id = (SELECT q.id FROM jobs q WHERE q.state = 'queued' AND (?2 <= 0 OR "
        "(SELECT count(*) FROM jobs r WHERE r.state = 'running' AND r.owner_id = q.owner_id) "
        "< ?2) ORDER BY q.id LIMIT 1) "
        "RETURNING id, spec, attempts");
    if (!st) return STORE_ERR;
    sqlite3_bind_double(st, 1, now_s());
    sqlite3_bind_int(st, 2, max_running_per_user);
    store_status rc = STORE_NOT_FOUND;
    int s = sql_step(st);
    if (s == SQLITE_ROW) {
        *id = sqlite3_column_int64(st, 0);
        *spec = strdup((const char *)sqlite3_column_text(st, 1));
        *attempts = sqlite3_column_int(st, 2);
        rc = *spec ? STORE_OK : STORE_ERR;
        s = sql_step(st);
    }
    if (s != SQLITE_DONE) { log_sql("claim job", db); rc = STORE_ERR; }
    sqlite3_finalize(st);
    return rc;
}

store_status store_job_finish(int64_t id, job_state state, const char *error_code,
                              const char *message, int exit_status)
{
    sqlite3 *db = db_get();
    sqlite3_stmt *st = prep(db,
        "UPDATE jobs SET state = ?2, finished_at = ?3, "
        "error_code = coalesce(?4, error_code), error_message = coalesce(?5, error_message), "
        "exit_status = ?6 WHERE id = ?1");
    if (!st) return STORE_ERR;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, JOB_STATE_NAMES[state], -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 3, now_s());
    if (error_code) sqlite3_bind_text(st, 4, error_code, -1, SQLITE_TRANSIENT);
    if (message) sqlite3_bind_text(st, 5, message, -1, SQLITE_TRANSIENT);
    if (exit_status > -1000) sqlite3_bind_int(st, 6, exit_status);
    store_status rc = sql_step(st) == SQLITE_DONE ? STORE_OK : STORE_ERR;
    if (rc) log_sql("finish job", db);
    sqlite3_finalize(st);
    return rc;
}

store_status store_job_requeue(int64_t id)
{
    sqlite3 *db = db_get();
    sqlite3_stmt *st = prep(db,
        "UPDATE jobs SET state = 'queued', attempts = max(attempts - 1, 0) "
        "WHERE id = ? AND state = 'running'");
    if (!st) return STORE_ERR;
    sqlite3_bind_int64(st, 1, id);
    store_status rc = sql_step(st) == SQLITE_DONE ? STORE_OK : STORE_ERR;
    if (rc) log_sql("requeue job", db);
    sqlite3_finalize(st);
    return rc;
}

/* Opens a write transaction and reads job id's state: STORE_OK with *state
 * set, STORE_NOT_FOUND or STORE_ERR (the transaction is open in every case:
 * the caller ends it with tx_end). */
static store_status tx_job_state(sqlite3 *db, int64_t id, int *state)
{
    sqlite3_stmt *st = prep(db, "SELECT state FROM jobs WHERE id = ?");
    if (!st) return STORE_ERR;
    sqlite3_bind_int64(st, 1, id);
    int s = sql_step(st);
    store_status rc = s == SQLITE_DONE ? STORE_NOT_FOUND : s == SQLITE_ROW ? STORE_OK : STORE_ERR;
    if (rc == STORE_OK) *state = job_state_from_name((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return rc;
}

store_status store_job_resume(int64_t id)
{
    sqlite3 *db = db_get();
    sqlite3_stmt *st = NULL;
    int state;
    if (!db || exec_sql(db, "BEGIN IMMEDIATE")) return STORE_ERR;
    store_status rc = tx_job_state(db, id, &state);
    if (rc != STORE_OK) goto out;
    rc = STORE_ERR;
    if (state != JOB_FAILED) {
        rc = STORE_CONFLICT;
        goto out;
    }
    st = prep(db, "UPDATE jobs SET state = 'queued', finished_at = NULL, error_code = NULL, "
                  "error_message = NULL, exit_status = NULL WHERE id = ?");
    if (!st) goto out;
    sqlite3_bind_int64(st, 1, id);
    if (sql_step(st) != SQLITE_DONE) goto out;
    rc = STORE_OK;
out:
    if (rc == STORE_ERR) log_sql("resume job", db);
    sqlite3_finalize(st);
    if (tx_end(db, rc == STORE_OK)) rc = STORE_ERR;
    return rc;
}

int store_jobs_recover(int max_attempts, int keep_slurm, int *cancelled)
{
    sqlite3 *db = db_get();
    int n = -1;
    json_t *failed = json_array();
    *cancelled = 0;
    if (!db || exec_sql(db, "BEGIN IMMEDIATE")) {
        json_decref(failed);
        return -1;
    }
    /* The cancel was answered 202 and its worker died with lsqd: the job
     * ends as the client was told, before the attempts are looked at (a
     * re-queued job would run again, one at its last attempt would fail). */
    sqlite3_stmt *st = prep(db,
        "UPDATE jobs SET state = 'cancelled', finished_at = ?1 "
        "WHERE state = 'running' AND cancel_requested <> 0 AND (?2 = 0 OR slurm_id IS NULL)");
    if (!st) goto out;
    sqlite3_bind_double(st, 1, now_s());
    sqlite3_bind_int(st, 2, keep_slurm);
    if (sqlite3_step(st) != SQLITE_DONE) goto out;
    *cancelled = sqlite3_changes(db);
    sqlite3_finalize(st);
    st = prep(db,
        "UPDATE jobs SET state = 'failed', finished_at = ?2, error_code = 'too_many_attempts', "
        "error_message = 'the job was interrupted ' || attempts || ' times' "
        "WHERE state = 'running' AND attempts >= ?1 AND (?3 = 0 OR slurm_id IS NULL) "
        "RETURNING id, error_message");
    if (!st || !failed) goto out;
    sqlite3_bind_int(st, 1, max_attempts);
    sqlite3_bind_int(st, 3, keep_slurm);
    sqlite3_bind_double(st, 2, now_s());
    int s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW)
        json_array_append_new(failed, json_pack("{s:I,s:s}",
            "id", (json_int_t)sqlite3_column_int64(st, 0),
            "message", (const char *)sqlite3_column_text(st, 1)));
    if (s != SQLITE_DONE) goto out;
    sqlite3_finalize(st);
    /* jobs that Slurm runs stay running: the Slurm executor reconciles them */
    st = prep(db, keep_slurm
        ? "UPDATE jobs SET state = 'queued' WHERE state = 'running' AND slurm_id IS NULL"
        : "UPDATE jobs SET state = 'queued', slurm_id = NULL WHERE state = 'running'");
    if (!st || sql_step(st) != SQLITE_DONE) goto out;
    n = sqlite3_changes(db);
out:
    if (n < 0) log_sql("recover jobs", db);
    sqlite3_finalize(st);
    if (tx_end(db, n >= 0)) n = -1;
    /* A job failed here says why in its events too, as one whose worker
     * died does (its stream ends with the error, not just a failed state). */
    size_t i;
    json_t *f;
    json_array_foreach(n >= 0 ? failed : NULL, i, f) {
        json_t *ev = json_pack("{s:s,s:s,s:O,s:f}", "type", "error", "code",
                               "too_many_attempts", "message", json_object_get(f, "message"),
                               "time", now_s());
        int64_t seq;
        if (!ev || store_event_add(json_integer_value(json_object_get(f, "id")), EV_ERROR, ev,
                                   &seq) != STORE_OK)
            log_error("cannot store the event of a job failed at start-up", NULL);
        json_decref(ev);
    }
    json_decref(failed);
    return n;
}

store_status store_job_set_slurm(int64_t id, const char *slurm_id)
{
    sqlite3_stmt *st = prep(db_get(), "UPDATE jobs SET slurm_id = ?2 WHERE id = ?1");
    if (!st) return STORE_ERR;
    sqlite3_bind_int64(st, 1, id);
    if (slurm_id) sqlite3_bind_text(st, 2, slurm_id, -1, SQLITE_TRANSIENT);
    else sqlite3_bind_null(st, 2);
    store_status rc = sql_step(st) == SQLITE_DONE
                      ? (sqlite3_changes(db_get()) ? STORE_OK : STORE_NOT_FOUND) : STORE_ERR;
    if (rc == STORE_ERR) log_sql("set slurm id", db_get());
    sqlite3_finalize(st);
    return rc;
}

store_status store_job_adopt_slurm(int64_t id, const char *slurm_id)
{
    /* queued: store_jobs_recover put it back when it found no Slurm id */
    sqlite3_stmt *st = prep(db_get(), "UPDATE jobs SET state = 'running', slurm_id = ?2 "
                                      "WHERE id = ?1 AND state IN ('queued', 'running') "
                                      "AND slurm_id IS NULL");
    if (!st) return STORE_ERR;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, slurm_id, -1, SQLITE_TRANSIENT);
    store_status rc = sqlite3_step(st) == SQLITE_DONE
                      ? (sqlite3_changes(db_get()) ? STORE_OK : STORE_NOT_FOUND) : STORE_ERR;
    if (rc == STORE_ERR) log_sql("adopt slurm job", db_get());
    sqlite3_finalize(st);
    return rc;
}

json_t *store_jobs_slurm_running(void)
{
    sqlite3_stmt *st = prep(db_get(), "SELECT id, slurm_id, events_offset, cancel_requested, "
                                      "worker_seq FROM jobs WHERE state = 'running' "
                                      "AND slurm_id IS NOT NULL ORDER BY id");
    if (!st) return NULL;
    json_t *arr = json_array();
    int s;
    while (arr && (s = sql_step(st)) == SQLITE_ROW)
        json_array_append_new(arr, json_pack("{s:I,s:s,s:I,s:b,s:I}",
            "id", (json_int_t)sqlite3_column_int64(st, 0),
            "slurm_id", (const char *)sqlite3_column_text(st, 1),
            "events_offset", (json_int_t)sqlite3_column_int64(st, 2),
            "cancel", sqlite3_column_int(st, 3),
            "worker_seq", (json_int_t)sqlite3_column_int64(st, 4)));
    if (arr && s != SQLITE_DONE) {
        log_sql("list slurm jobs", db_get());
        json_decref(arr);
        arr = NULL;
    }
    sqlite3_finalize(st);
    return arr;
}

int64_t store_job_events_offset(int64_t id, int64_t *worker_seq)
{
    sqlite3_stmt *st = prep(db_get(), "SELECT events_offset, worker_seq FROM jobs WHERE id = ?");
    int64_t r = -1;
    *worker_seq = 0;
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, id);
    if (sql_step(st) == SQLITE_ROW) {
        r = sqlite3_column_int64(st, 0);
        *worker_seq = sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);
    return r;
}

store_status store_job_token_set(int64_t id, const char *sha256_hex)
{
    sqlite3_stmt *st = prep(db_get(), "INSERT OR REPLACE INTO job_tokens (job_id, sha256, "
                                      "created_at) VALUES (?, ?, ?)");
    if (!st) return STORE_ERR;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, sha256_hex, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(st, 3, now_s());
    store_status rc = sql_step(st) == SQLITE_DONE ? STORE_OK : STORE_ERR;
    if (rc != STORE_OK) log_sql("set job token", db_get());
    sqlite3_finalize(st);
    return rc;
}

int store_job_token_check(int64_t id, const char *sha256_hex)
{
    sqlite3_stmt *st = prep(db_get(), "SELECT sha256 FROM job_tokens WHERE job_id = ?");
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, id);
    int r = 0;
    if (sql_step(st) == SQLITE_ROW) {
        const char *want = (const char *)sqlite3_column_text(st, 0);
        /* same length hex digests: compare every byte */
        unsigned diff = want && strlen(want) == strlen(sha256_hex) ? 0 : 1;
        for (size_t i = 0; !diff && want[i]; i++) diff |= (unsigned char)(want[i] ^ sha256_hex[i]);
        r = diff == 0;
    }
    sqlite3_finalize(st);
    return r;
}

int store_job_cancel_requested(int64_t id)
{
    sqlite3_stmt *st = prep(db_get(), "SELECT cancel_requested FROM jobs WHERE id = ?");
    int r = -1;
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, id);
    if (sql_step(st) == SQLITE_ROW) r = sqlite3_column_int(st, 0) != 0;
    sqlite3_finalize(st);
    return r;
}

store_status store_job_cancel(int64_t id, int *was_running)
{
    sqlite3 *db = db_get();
    sqlite3_stmt *st = NULL;
    int state;
    if (!db || exec_sql(db, "BEGIN IMMEDIATE")) return STORE_ERR;
    store_status rc = tx_job_state(db, id, &state);
    if (rc != STORE_OK) goto out;
    rc = STORE_ERR;
    if (state >= JOB_SUCCEEDED) { rc = STORE_CONFLICT; goto out; }
    *was_running = state == JOB_RUNNING;
    st = prep(db, state == JOB_RUNNING
        ? "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1"
        : "UPDATE jobs SET state = 'cancelled', cancel_requested = 1, finished_at = ?2 WHERE id = ?1");
    if (!st) goto out;
    sqlite3_bind_int64(st, 1, id);
    if (state != JOB_RUNNING) sqlite3_bind_double(st, 2, now_s());
    if (sql_step(st) != SQLITE_DONE) goto out;
    rc = STORE_OK;
out:
    if (rc == STORE_ERR) log_sql("cancel job", db);
    sqlite3_finalize(st);
    if (tx_end(db, rc == STORE_OK)) rc = STORE_ERR;
    return rc;
}

/* -------------------------------------------------------------- events */

static int add_metric(sqlite3 *db, int64_t job, int64_t seq, const char *kind, json_t *ev,
                      const char *name, double value)
{
    sqlite3_stmt *st = prep(db,
        "INSERT INTO metrics (job_id, seq, kind, phase, epoch, step, name, value) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, job);
    sqlite3_bind_int64(st, 2, seq);
    sqlite3_bind_text(st, 3, kind, -1, SQLITE_STATIC);
    const char *phase = json_string_value(json_object_get(ev, "phase"));
    if (phase) sqlite3_bind_text(st, 4, phase, -1, SQLITE_TRANSIENT);
    json_t *e = json_object_get(ev, "epoch"), *s = json_object_get(ev, "step");
    if (json_is_integer(e)) sqlite3_bind_int64(st, 5, json_integer_value(e));
    if (json_is_integer(s)) sqlite3_bind_int64(st, 6, json_integer_value(s));
    sqlite3_bind_text(st, 7, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(st, 8, value);
    int rc = sql_step(st) == SQLITE_DONE ? 0 : -1;
    sqlite3_finalize(st);
    return rc;
}

/* Every number of the event (one level, and one level into objects such as
 * step_sizes, named "step_sizes.conv2.weight") becomes a metric point. */
static int add_metrics(sqlite3 *db, int64_t job, int64_t seq, const char *kind, json_t *ev)
{
    static const char *const SKIP[] = {"time", "epoch", "step", "steps", NULL};
    const char *key;
    json_t *v;
    json_object_foreach(ev, key, v) {
        int skip = 0;
        for (int i = 0; SKIP[i]; i++) skip |= !strcmp(key, SKIP[i]);
        if (skip) continue;
        if (json_is_number(v)) {
            if (add_metric(db, job, seq, kind, ev, key, json_number_value(v))) return -1;
        } else if (json_is_object(v)) {
            const char *k2;
            json_t *v2;
            json_object_foreach(v, k2, v2) {
                if (!json_is_number(v2)) continue;
                char name[300];
                snprintf(name, sizeof name, "%s.%s", key, k2);
                if (add_metric(db, job, seq, kind, ev, name, json_number_value(v2))) return -1;
            }
        }
    }
    return 0;
}

static int step_update(sqlite3 *db, const char *sql, int64_t job, const char *text, double num)
{
    sqlite3_stmt *st = prep(db, sql);
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, job);
    if (text) sqlite3_bind_text(st, 2, text, -1, SQLITE_TRANSIENT);
    else sqlite3_bind_double(st, 2, num);
    int rc = sql_step(st) == SQLITE_DONE ? 0 : -1;
    sqlite3_finalize(st);
    return rc;
}

store_status store_event_add(int64_t job_id, ev_type type, json_t *ev, int64_t *seq)
{
    return store_worker_event_add(job_id, 0, type, ev, -1, seq);
}

store_status store_worker_event_add(int64_t job_id, int64_t wseq, ev_type type, json_t *ev,
                                    int64_t end_offset, int64_t *seq)
{
    sqlite3 *db = db_get();
    store_status rc = STORE_ERR;
    sqlite3_stmt *st = NULL;
    char *text = json_dumps(ev, JSON_COMPACT | JSON_REAL_PRECISION(15));
    *seq = 0;
    if (!db || !text || exec_sql(db, "BEGIN IMMEDIATE")) { free(text); return STORE_ERR; }
    if (wseq > 0) {
        /* the worker's numbering: each of its events once, in order, from
         * whichever path (the events file, HTTP) brings it first */
        st = prep(db, "SELECT worker_seq FROM jobs WHERE id = ?");
        if (!st) goto out;
        sqlite3_bind_int64(st, 1, job_id);
        if (sql_step(st) != SQLITE_ROW) { rc = STORE_NOT_FOUND; goto out; }
        int64_t have = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        st = NULL;
        if (wseq > have + 1) { rc = STORE_CONFLICT; goto out; }
        if (wseq <= have) {
            rc = end_offset >= 0 && step_update(db, "UPDATE jobs SET events_offset = "
                                                "max(events_offset, ?2) WHERE id = ?1",
                                                job_id, NULL, (double)end_offset)
                 ? STORE_ERR : STORE_OK;
            goto out;
        }
    }
    st = prep(db, "UPDATE jobs SET last_seq = last_seq + 1, "
                  "events_offset = CASE WHEN ?2 >= 0 THEN ?2 ELSE events_offset END, "
                  "worker_seq = CASE WHEN ?3 > 0 THEN ?3 ELSE worker_seq END "
                  "WHERE id = ?1 RETURNING last_seq");
    if (!st) goto out;
    sqlite3_bind_int64(st, 1, job_id);
    sqlite3_bind_int64(st, 2, end_offset);
    sqlite3_bind_int64(st, 3, wseq);
    if (sql_step(st) != SQLITE_ROW) { rc = STORE_NOT_FOUND; goto out; }
    *seq = sqlite3_column_int64(st, 0);
    sql_step(st);
    sqlite3_finalize(st);
    st = prep(db, "INSERT INTO events (job_id, seq, type, json) VALUES (?, ?, ?, ?)");
    if (!st) goto out;
    sqlite3_bind_int64(st, 1, job_id);
    sqlite3_bind_int64(st, 2, *seq);
    sqlite3_bind_text(st, 3, EV_TYPE_NAMES[type], -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, text, -1, SQLITE_STATIC);
    if (sql_step(st) != SQLITE_DONE) goto out;
    sqlite3_finalize(st);
    st = NULL;
    switch (type) {
    case EV_PROGRESS:
        if (step_update(db, "UPDATE jobs SET progress = ?2 WHERE id = ?1", job_id, text, 0) ||
            add_metrics(db, job_id, *seq, "progress", ev))
            goto out;
        break;
    case EV_EPOCH:
        if (step_update(db, "UPDATE jobs SET last_epoch = ?2 WHERE id = ?1", job_id, text, 0) ||
            add_metrics(db, job_id, *seq, "epoch", ev))
            goto out;
        break;
    case EV_DONE: {
        json_t *acc = json_object_get(ev, "test_acc");
        if (json_is_number(acc) &&
            step_update(db, "UPDATE jobs SET test_acc = ?2 WHERE id = ?1", job_id, NULL,
                        json_number_value(acc)))
            goto out;
        break;
    }
    case EV_ERROR: {
        const char *code = json_string_value(json_object_get(ev, "code"));
        const char *msg = json_string_value(json_object_get(ev, "message"));
        if (step_update(db, "UPDATE jobs SET error_code = ?2 WHERE id = ?1", job_id,
                        code ? code : "error", 0) ||
            step_update(db, "UPDATE jobs SET error_message = ?2 WHERE id = ?1", job_id,
                        msg ? msg : "", 0))
            goto out;
        /* the key the error names, when it names one */
        const char *field = json_string_value(json_object_get(ev, "field"));
        if (step_update(db, "UPDATE jobs SET error_field = nullif(?2, '') WHERE id = ?1", job_id,
                        field ? field : "", 0))
            goto out;
        break;
    }
    case EV_ARTIFACT: {
        const char *name = json_string_value(json_object_get(ev, "name"));
        const char *sha = json_string_value(json_object_get(ev, "sha256"));
        json_t *bytes = json_object_get(ev, "bytes");
        if (!name || !sha || !json_is_integer(bytes)) break; /* kept as an event only */
        st = prep(db, "INSERT OR REPLACE INTO artifacts (job_id, name, bytes, sha256, created_at) "
                      "VALUES (?, ?, ?, ?, ?)");
        if (!st) goto out;
        sqlite3_bind_int64(st, 1, job_id);
        sqlite3_bind_text(st, 2, name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 3, json_integer_value(bytes));
        sqlite3_bind_text(st, 4, sha, -1, SQLITE_TRANSIENT);
        sqlite3_bind_double(st, 5, now_s());
        if (sql_step(st) != SQLITE_DONE) goto out;
        break;
    }
    default:
        break;
    }
    rc = STORE_OK;
out:
    if (rc == STORE_ERR) log_sql("add event", db);
    sqlite3_finalize(st);
    if (tx_end(db, rc == STORE_OK)) rc = STORE_ERR;
    free(text);
    return rc;
}

json_t *store_events_after(int64_t job_id, int64_t after, int limit)
{
    sqlite3_stmt *st = prep(db_get(),
        "SELECT seq, type, json FROM events WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?");
    if (!st) return NULL;
    sqlite3_bind_int64(st, 1, job_id);
    sqlite3_bind_int64(st, 2, after);
    sqlite3_bind_int(st, 3, limit);
    json_t *arr = json_array();
    int rc;
    while ((rc = sql_step(st)) == SQLITE_ROW)
        json_array_append_new(arr, json_pack("{s:I,s:s,s:s}",
            "seq", (json_int_t)sqlite3_column_int64(st, 0),
            "type", (const char *)sqlite3_column_text(st, 1),
            "json", (const char *)sqlite3_column_text(st, 2)));
    if (rc != SQLITE_DONE) { json_decref(arr); arr = NULL; }
    sqlite3_finalize(st);
    return arr;
}

json_t *store_metrics_get(int64_t job_id)
{
    sqlite3_stmt *st = prep(db_get(),
        "SELECT kind, name, seq, phase, epoch, step, value FROM metrics WHERE job_id = ? "
        "ORDER BY seq");
    if (!st) return NULL;
    sqlite3_bind_int64(st, 1, job_id);
    json_t *series = json_object();
    int rc;
    while ((rc = sql_step(st)) == SQLITE_ROW) {
        char key[400];
        snprintf(key, sizeof key, "%s.%s", (const char *)sqlite3_column_text(st, 0),
                 (const char *)sqlite3_column_text(st, 1));
        json_t *arr = json_object_get(series, key);
        if (!arr) {
            arr = json_array();
            json_object_set_new(series, key, arr);
        }
        json_t *p = json_object();
        json_object_set_new(p, "seq", json_integer(sqlite3_column_int64(st, 2)));
        json_object_set_new(p, "phase", sqlite3_column_type(st, 3) == SQLITE_NULL ? json_null()
                            : json_string((const char *)sqlite3_column_text(st, 3)));
        json_object_set_new(p, "epoch", sqlite3_column_type(st, 4) == SQLITE_NULL ? json_null()
                            : json_integer(sqlite3_column_int64(st, 4)));
        json_object_set_new(p, "step", sqlite3_column_type(st, 5) == SQLITE_NULL ? json_null()
                            : json_integer(sqlite3_column_int64(st, 5)));
        json_object_set_new(p, "value", json_real(sqlite3_column_double(st, 6)));
        json_array_append_new(arr, p);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) { json_decref(series); return NULL; }
    return json_pack("{s:I,s:o}", "job_id", (json_int_t)job_id, "series", series);
}

json_t *store_artifacts_list(int64_t job_id)
{
    sqlite3_stmt *st = prep(db_get(),
        "SELECT name, bytes, sha256, created_at FROM artifacts WHERE job_id = ? ORDER BY name");
    if (!st) return NULL;
    sqlite3_bind_int64(st, 1, job_id);
    json_t *arr = json_array();
    while (sql_step(st) == SQLITE_ROW)
        json_array_append_new(arr, json_pack("{s:s,s:I,s:s,s:f}",
            "name", (const char *)sqlite3_column_text(st, 0),
            "bytes", (json_int_t)sqlite3_column_int64(st, 1),
            "sha256", (const char *)sqlite3_column_text(st, 2),
            "created_at", sqlite3_column_double(st, 3)));
    sqlite3_finalize(st);
    return arr;
}

store_status store_artifact_get(int64_t job_id, const char *name, int64_t *bytes, char *sha256)
{
    sqlite3_stmt *st = prep(db_get(),
        "SELECT bytes, sha256 FROM artifacts WHERE job_id = ? AND name = ?");
    if (!st) return STORE_ERR;
    sqlite3_bind_int64(st, 1, job_id);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_TRANSIENT);
    store_status rc = STORE_NOT_FOUND;
    if (sql_step(st) == SQLITE_ROW) {
        *bytes = sqlite3_column_int64(st, 0);
        snprintf(sha256, 65, "%s", (const char *)sqlite3_column_text(st, 1));
        rc = STORE_OK;
    }
    sqlite3_finalize(st);
    return rc;
}

/* ------------------------------------------------------------ datasets */

#define DATASET_COLUMNS                                                                    \
    "d.id, d.name, d.source, d.origin, d.options, d.state, d.bytes, d.sha256, d.summary, " \
    "d.error_code, d.error_message, d.created_at, d.finished_at, "                         \
    "(SELECT count(*) FROM jobs j WHERE j.dataset_id = d.id AND j.state IN "               \
    "('queued','running')), (SELECT u.name FROM users u WHERE u.id = d.owner_id), "         \
    "d.progress_phase, d.progress_done, d.progress_total"

static json_t *dataset_row(sqlite3_stmt *st, int with_classes)
{
    json_t *j = json_object();
    json_object_set_new(j, "id", json_integer(sqlite3_column_int64(st, 0)));
    json_object_set_new(j, "name", col_text_or_null(st, 1));
    json_object_set_new(j, "source", col_text_or_null(st, 2));
    json_object_set_new(j, "origin", col_text_or_null(st, 3));
    json_t *opts = col_json_or_null(st, 4);
    json_object_set_new(j, "options", json_is_object(opts) ? opts : json_object());
    if (!json_is_object(opts)) json_decref(opts);
    json_object_set_new(j, "state", col_text_or_null(st, 5));
    json_object_set_new(j, "bytes", sqlite3_column_type(st, 6) == SQLITE_NULL
                        ? json_null() : json_integer(sqlite3_column_int64(st, 6)));
    json_object_set_new(j, "sha256", col_text_or_null(st, 7));
    json_t *summary = col_json_or_null(st, 8);
    if (!with_classes && json_is_object(summary)) json_object_del(summary, "classes");
    json_object_set_new(j, "summary", summary);
    if (sqlite3_column_type(st, 9) != SQLITE_NULL)
        json_object_set_new(j, "error", json_pack("{s:s,s:s}",
            "code", (const char *)sqlite3_column_text(st, 9),
            "message", sqlite3_column_text(st, 10) ? (const char *)sqlite3_column_text(st, 10)
                                                   : ""));
    else
        json_object_set_new(j, "error", json_null());
    json_object_set_new(j, "created_at", col_real_or_null(st, 11));
    json_object_set_new(j, "finished_at", col_real_or_null(st, 12));
    json_object_set_new(j, "jobs_active", json_integer(sqlite3_column_int64(st, 13)));
    json_object_set_new(j, "owner", col_text_or_null(st, 14));
    if (sqlite3_column_type(st, 15) != SQLITE_NULL)
        json_object_set_new(j, "progress", json_pack("{s:s,s:I,s:o}",
            "phase", (const char *)sqlite3_column_text(st, 15),
            "done", (json_int_t)sqlite3_column_int64(st, 16),
            "total", sqlite3_column_type(st, 17) == SQLITE_NULL
                ? json_null() : json_integer(sqlite3_column_int64(st, 17))));
    else
        json_object_set_new(j, "progress", json_null());
    return j;
}

store_status store_dataset_insert(const char *name, ds_source source, const char *origin,
                                  const char *options_json, long long bytes,
                                  const char *sha256, int64_t owner_id, int64_t *id)
{
    sqlite3 *db = db_get();
    sqlite3_stmt *st = prep(db,
        "INSERT INTO datasets (name, source, origin, options, bytes, sha256, created_at, "
        "owner_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
    if (!st) return STORE_ERR;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, DS_SOURCE_NAMES[source], -1, SQLITE_STATIC);
    if (origin) sqlite3_bind_text(st, 3, origin, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, options_json ? options_json : "{}", -1, SQLITE_TRANSIENT);
    if (bytes >= 0) sqlite3_bind_int64(st, 5, bytes);
    if (sha256) sqlite3_bind_text(st, 6, sha256, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(st, 7, now_s());
    sqlite3_bind_int64(st, 8, owner_id);
    store_status rc = sql_step(st) == SQLITE_DONE ? STORE_OK : STORE_ERR;
    if (rc) log_sql("insert dataset", db);
    else *id = sqlite3_last_insert_rowid(db);
    sqlite3_finalize(st);
    return rc;
}

json_t *store_dataset_get(int64_t id, int with_classes)
{
    sqlite3_stmt *st = prep(db_get(), "SELECT " DATASET_COLUMNS " FROM datasets d WHERE d.id = ?");
    if (!st) return NULL;
    sqlite3_bind_int64(st, 1, id);
    json_t *j = sql_step(st) == SQLITE_ROW ? dataset_row(st, with_classes) : NULL;
    sqlite3_finalize(st);
    return j;
}

json_t *store_dataset_list(int64_t owner_id)
{
    sqlite3_stmt *st = prep(db_get(), "SELECT " DATASET_COLUMNS " FROM datasets d "
                                      "WHERE ?1 <= 0 OR d.owner_id = ?1 OR d.source = 'root' "
                                      "ORDER BY d.id DESC");
    if (!st) return NULL;
    sqlite3_bind_int64(st, 1, owner_id);
    json_t *arr = json_array();
    int rc;
    while ((rc = sql_step(st)) == SQLITE_ROW) json_array_append_new(arr, dataset_row(st, 0));
    if (rc != SQLITE_DONE) { log_sql("list datasets", db_get()); json_decref(arr); arr = NULL; }
    sqlite3_finalize(st);
    return arr;
}

store_status store_dataset_set_file(int64_t id, long long bytes, const char *sha256)
{
    sqlite3 *db = db_get();
    sqlite3_stmt *st = prep(db, "UPDATE datasets SET bytes = ?2, sha256 = ?3 WHERE id = ?1");
    if (!st) return STORE_ERR;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, bytes);
    sqlite3_bind_text(st, 3, sha256, -1, SQLITE_TRANSIENT);
    store_status rc = sql_step(st) == SQLITE_DONE ? STORE_OK : STORE_ERR;
    if (rc) log_sql("dataset file", db);
    sqlite3_finalize(st);
    return rc;
}

/* Ends a registration: the one transition out of 'registering'. */
store_status store_dataset_progress(int64_t id, const char *phase, long long done,
                                    long long total)
{
    sqlite3 *db = db_get();
    sqlite3_stmt *st = prep(db, "UPDATE datasets SET progress_phase = ?2, progress_done = ?3, "
                                "progress_total = ?4 WHERE id = ?1 AND state = 'registering'");
    if (!st) return STORE_ERR;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, phase, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, done);
    if (total >= 0) sqlite3_bind_int64(st, 4, total);
    store_status rc = sql_step(st) == SQLITE_DONE ? STORE_OK : STORE_ERR;
    if (rc) log_sql("dataset progress", db);
    else if (sqlite3_changes(db) == 0) rc = STORE_NOT_FOUND;
    sqlite3_finalize(st);
    return rc;
}

static store_status dataset_finish(int64_t id, ds_state state, const char *summary,
                                   const char *code, const char *message)
{
    sqlite3 *db = db_get();
    sqlite3_stmt *st = prep(db,
        "UPDATE datasets SET state = ?2, summary = ?3, error_code = ?4, error_message = ?5, "
        "finished_at = ?6 WHERE id = ?1 AND state = 'registering'");
    if (!st) return STORE_ERR;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, DS_STATE_NAMES[state], -1, SQLITE_STATIC);
    if (summary) sqlite3_bind_text(st, 3, summary, -1, SQLITE_TRANSIENT);
    if (code) sqlite3_bind_text(st, 4, code, -1, SQLITE_TRANSIENT);
    if (message) sqlite3_bind_text(st, 5, message, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(st, 6, now_s());
    store_status rc = STORE_ERR;
    if (sql_step(st) == SQLITE_DONE) rc = sqlite3_changes(db) ? STORE_OK : STORE_NOT_FOUND;
    else log_sql("finish dataset", db);
    sqlite3_finalize(st);
    return rc;
}

store_status store_dataset_ready(int64_t id, const char *summary_json)
{
    return dataset_finish(id, DS_READY, summary_json, NULL, NULL);
}

store_status store_dataset_fail(int64_t id, const char *code, const char *message)
{
    return dataset_finish(id, DS_FAILED, NULL, code, message);
}

store_status store_dataset_delete(int64_t id, int64_t *active_job)
{
    sqlite3 *db = db_get();
    sqlite3_stmt *st = NULL;
    store_status rc = STORE_ERR;
    *active_job = 0;
    if (!db || exec_sql(db, "BEGIN IMMEDIATE")) return STORE_ERR;
    st = prep(db, "SELECT state FROM datasets WHERE id = ?");
    if (!st) goto out;
    sqlite3_bind_int64(st, 1, id);
    int step = sql_step(st);
    if (step == SQLITE_DONE) { rc = STORE_NOT_FOUND; goto out; }
    if (step != SQLITE_ROW) goto out;
    if (!strcmp((const char *)sqlite3_column_text(st, 0), DS_STATE_NAMES[DS_REGISTERING])) {
        rc = STORE_CONFLICT;
        goto out;
    }
    sqlite3_finalize(st);
    st = prep(db, "SELECT min(id) FROM jobs WHERE dataset_id = ? AND state IN "
                  "('queued','running')");
    if (!st) goto out;
    sqlite3_bind_int64(st, 1, id);
    if (sql_step(st) != SQLITE_ROW) goto out;
    if (sqlite3_column_type(st, 0) != SQLITE_NULL) {
        *active_job = sqlite3_column_int64(st, 0);
        rc = STORE_CONFLICT;
        goto out;
    }
    sqlite3_finalize(st);
    st = prep(db, "DELETE FROM datasets WHERE id = ?");
    if (!st) goto out;
    sqlite3_bind_int64(st, 1, id);
    if (sql_step(st) != SQLITE_DONE) { log_sql("delete dataset", db); goto out; }
    rc = STORE_OK;
out:
    sqlite3_finalize(st);
    if (tx_end(db, rc == STORE_OK)) rc = STORE_ERR;
    return rc;
}

json_t *store_datasets_registering(void)
{
    sqlite3_stmt *st = prep(db_get(), "SELECT id FROM datasets WHERE state = 'registering' "
                                      "ORDER BY id");
    if (!st) return NULL;
    json_t *arr = json_array();
    while (sql_step(st) == SQLITE_ROW)
        json_array_append_new(arr, json_integer(sqlite3_column_int64(st, 0)));
    sqlite3_finalize(st);
    return arr;
}

store_status store_dataset_root_find(const char *origin, int64_t *id)
{
    sqlite3_stmt *st = prep(db_get(), "SELECT id FROM datasets WHERE source = 'root' AND "
                                      "origin = ?");
    if (!st) return STORE_ERR;
    sqlite3_bind_text(st, 1, origin, -1, SQLITE_TRANSIENT);
    store_status rc = STORE_NOT_FOUND;
    if (sql_step(st) == SQLITE_ROW) {
        *id = sqlite3_column_int64(st, 0);
        rc = STORE_OK;
    }
    sqlite3_finalize(st);
    return rc;
}

/* ---------------------------------------------------------------- models */

static json_t *model_row(sqlite3_stmt *st)
{
    json_t *summary = json_loads((const char *)sqlite3_column_text(st, 4), 0, NULL);
    const char *owner = (const char *)sqlite3_column_text(st, 7);
    return json_pack("{s:I, s:s, s:I, s:s, s:o, s:f, s:I, s:s?}",
                     "id", (json_int_t)sqlite3_column_int64(st, 0),
                     "name", (const char *)sqlite3_column_text(st, 1),
                     "bytes", (json_int_t)sqlite3_column_int64(st, 2),
                     "sha256", (const char *)sqlite3_column_text(st, 3),
                     "summary", summary ? summary : json_object(),
                     "created_at", sqlite3_column_double(st, 5),
                     "jobs_active", (json_int_t)sqlite3_column_int64(st, 6),
                     "owner", owner);
}

#define MODEL_COLUMNS                                                                      \
    "m.id, m.name, m.bytes, m.sha256, m.summary, m.created_at, "                           \
    "(SELECT count(*) FROM jobs j WHERE j.model_id = m.id AND j.state IN "                 \
    "('queued','running')), (SELECT u.name FROM users u WHERE u.id = m.owner_id)"

store_status store_model_insert(const char *name, long long bytes, const char *sha256,
                                const char *summary_json, int64_t owner_id, int64_t *id)
{
    sqlite3 *db = db_get();
    sqlite3_stmt *st = prep(db, "INSERT INTO models (name, bytes, sha256, summary, created_at, "
                                "owner_id) VALUES (?, ?, ?, ?, ?, ?)");
    if (!st) return STORE_ERR;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, bytes);
    sqlite3_bind_text(st, 3, sha256, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, summary_json, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(st, 5, now_s());
    sqlite3_bind_int64(st, 6, owner_id);
    store_status rc = sql_step(st) == SQLITE_DONE ? STORE_OK : STORE_ERR;
    if (rc) log_sql("insert model", db);
    else *id = sqlite3_last_insert_rowid(db);
    sqlite3_finalize(st);
    return rc;
}

json_t *store_model_get(int64_t id)
{
    sqlite3_stmt *st = prep(db_get(), "SELECT " MODEL_COLUMNS " FROM models m WHERE m.id = ?");
    if (!st) return NULL;
    sqlite3_bind_int64(st, 1, id);
    json_t *m = sql_step(st) == SQLITE_ROW ? model_row(st) : NULL;
    sqlite3_finalize(st);
    return m;
}

json_t *store_model_list(int64_t owner_id)
{
    sqlite3_stmt *st = prep(db_get(), "SELECT " MODEL_COLUMNS " FROM models m "
                                      "WHERE ?1 <= 0 OR m.owner_id = ?1 ORDER BY m.id DESC");
    if (!st) return NULL;
    sqlite3_bind_int64(st, 1, owner_id);
    json_t *arr = json_array();
    while (sql_step(st) == SQLITE_ROW) json_array_append_new(arr, model_row(st));
    sqlite3_finalize(st);
    return arr;
}

store_status store_model_delete(int64_t id, int64_t *active_job)
{
    sqlite3 *db = db_get();
    sqlite3_stmt *st = NULL;
    store_status rc = STORE_ERR;
    *active_job = 0;
    if (!db || exec_sql(db, "BEGIN IMMEDIATE")) return STORE_ERR;
    st = prep(db, "SELECT 1 FROM models WHERE id = ?");
    if (!st) goto out;
    sqlite3_bind_int64(st, 1, id);
    int step = sql_step(st);
    if (step == SQLITE_DONE) { rc = STORE_NOT_FOUND; goto out; }
    if (step != SQLITE_ROW) goto out;
    sqlite3_finalize(st);
    st = prep(db, "SELECT min(id) FROM jobs WHERE model_id = ? AND state IN ('queued','running')");
    if (!st) goto out;
    sqlite3_bind_int64(st, 1, id);
    if (sql_step(st) != SQLITE_ROW) goto out;
    if (sqlite3_column_type(st, 0) != SQLITE_NULL) {
        *active_job = sqlite3_column_int64(st, 0);
        rc = STORE_CONFLICT;
        goto out;
    }
    sqlite3_finalize(st);
    st = prep(db, "DELETE FROM models WHERE id = ?");
    if (!st) goto out;
    sqlite3_bind_int64(st, 1, id);
    if (sql_step(st) != SQLITE_DONE) { log_sql("delete model", db); goto out; }
    rc = STORE_OK;
out:
    sqlite3_finalize(st);
    if (tx_end(db, rc == STORE_OK)) rc = STORE_ERR;
    return rc;
}

/* ------------------------------------------------------- users and tokens */

store_status store_token_insert(const char *user, int admin, const char *sha256,
                                int64_t *token_id, int *user_admin)
{
    sqlite3 *db = db_get();
    sqlite3_stmt *st = NULL;
    store_status rc = STORE_ERR;
    int64_t uid = 0;
    if (!db || exec_sql(db, "BEGIN IMMEDIATE")) return STORE_ERR;
    /* the user is made on its first token; --admin promotes, never demotes */
    st = prep(db, "INSERT INTO users (name, admin, created_at) VALUES (?1, ?2, ?3) "
                  "ON CONFLICT (name) DO UPDATE SET admin = max(admin, excluded.admin) "
                  "RETURNING id, admin");
    if (!st) goto out;
    sqlite3_bind_text(st, 1, user, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 2, admin ? 1 : 0);
    sqlite3_bind_double(st, 3, now_s());
    if (sql_step(st) != SQLITE_ROW) { log_sql("insert user", db); goto out; }
    uid = sqlite3_column_int64(st, 0);
    *user_admin = sqlite3_column_int(st, 1);
    sql_step(st);
    sqlite3_finalize(st);
    st = prep(db, "INSERT INTO tokens (user_id, sha256, created_at) VALUES (?, ?, ?)");
    if (!st) goto out;
    sqlite3_bind_int64(st, 1, uid);
    sqlite3_bind_text(st, 2, sha256, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(st, 3, now_s());
    if (sql_step(st) != SQLITE_DONE) { log_sql("insert token", db); goto out; }
    *token_id = sqlite3_last_insert_rowid(db);
    rc = STORE_OK;
out:
    sqlite3_finalize(st);
    if (tx_end(db, rc == STORE_OK)) rc = STORE_ERR;
    return rc;
}

json_t *store_token_list(void)
{
    sqlite3_stmt *st = prep(db_get(),
        "SELECT t.id, u.name, u.admin, t.created_at, t.last_used, t.revoked_at "
        "FROM tokens t JOIN users u ON u.id = t.user_id ORDER BY t.id");
    if (!st) return NULL;
    json_t *arr = json_array();
    int rc;
    while ((rc = sql_step(st)) == SQLITE_ROW)
        json_array_append_new(arr, json_pack("{s:I,s:s,s:b,s:o,s:o,s:o}",
            "id", (json_int_t)sqlite3_column_int64(st, 0),
            "user", (const char *)sqlite3_column_text(st, 1),
            "admin", sqlite3_column_int(st, 2),
            "created_at", col_real_or_null(st, 3), "last_used", col_real_or_null(st, 4),
            "revoked_at", col_real_or_null(st, 5)));
    if (rc != SQLITE_DONE) { log_sql("list tokens", db_get()); json_decref(arr); arr = NULL; }
    sqlite3_finalize(st);
    return arr;
}

store_status store_token_revoke(int64_t id)
{
    sqlite3 *db = db_get();
    sqlite3_stmt *st = prep(db, "UPDATE tokens SET revoked_at = coalesce(revoked_at, ?2) "
                                "WHERE id = ?1 RETURNING revoked_at = ?2");
    if (!st) return STORE_ERR;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_double(st, 2, now_s());
    store_status rc = STORE_NOT_FOUND;
    int s = sql_step(st);
    if (s == SQLITE_ROW) {
        rc = sqlite3_column_int(st, 0) ? STORE_OK : STORE_CONFLICT;
        s = sql_step(st);
    }
    if (s != SQLITE_DONE) { log_sql("revoke token", db); rc = STORE_ERR; }
    sqlite3_finalize(st);
    return rc;
}

/* ------------------------------------------------------------ webhooks */

store_status store_webhook_secret_get(int64_t owner_id, char *out, size_t cap)
{
    sqlite3_stmt *st = prep(db_get(), "SELECT secret FROM webhook_secrets WHERE owner_id = ?");
    if (!st) return STORE_ERR;
    sqlite3_bind_int64(st, 1, owner_id);
    store_status rc = STORE_NOT_FOUND;
    if (sql_step(st) == SQLITE_ROW) {
        snprintf(out, cap, "%s", (const char *)sqlite3_column_text(st, 0));
        rc = STORE_OK;
    }
    sqlite3_finalize(st);
    return rc;
}

int store_tokens_active(void)
{
    sqlite3_stmt *st = prep(db_get(), "SELECT count(*) FROM tokens WHERE revoked_at IS NULL");
    int n = -1;
    if (st && sql_step(st) == SQLITE_ROW) n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return n;
}

store_status store_token_lookup(const char *sha256, store_user *u, char stored[65])
{
    sqlite3 *db = db_get();
    sqlite3_stmt *st = prep_hot(db, HOT_TOKEN,
        "SELECT t.id, t.sha256, u.id, u.name, u.admin, t.last_used FROM tokens t "
        "JOIN users u ON u.id = t.user_id WHERE t.sha256 = ? AND t.revoked_at IS NULL");
    if (!st) return STORE_ERR;
    sqlite3_bind_text(st, 1, sha256, -1, SQLITE_TRANSIENT);
    store_status rc = STORE_NOT_FOUND;
    int64_t token_id = 0;
    double last = 0;
    int s = sql_step(st);
    if (s == SQLITE_ROW) {
        token_id = sqlite3_column_int64(st, 0);
        snprintf(stored, 65, "%s", (const char *)sqlite3_column_text(st, 1));
        u->id = sqlite3_column_int64(st, 2);
        snprintf(u->name, sizeof u->name, "%s", (const char *)sqlite3_column_text(st, 3));
        u->admin = sqlite3_column_int(st, 4);
        last = sqlite3_column_double(st, 5);
        rc = STORE_OK;
    } else if (s != SQLITE_DONE) {
        log_sql("token lookup", db);
        rc = STORE_ERR;
    }
    done_hot(st);
    /* last_used to the minute: not a write on every request */
    double now = now_s();
    if (rc == STORE_OK && now - last > 60) {
        st = prep(db, "UPDATE tokens SET last_used = ?2 WHERE id = ?1");
        if (st) {
            sqlite3_bind_int64(st, 1, token_id);
            sqlite3_bind_double(st, 2, now);
            if (sql_step(st) != SQLITE_DONE) log_sql("token last_used", db);
        }
        sqlite3_finalize(st);
    }
    return rc;
}

store_status store_owner_get(store_object kind, int64_t id, int64_t *owner_id, int *shared)
{
    static const char *const SQL[STORE_OBJECT_COUNT] = {
        "SELECT owner_id, 0 FROM jobs WHERE id = ?",
        "SELECT owner_id, 0 FROM models WHERE id = ?",
        "SELECT owner_id, source = 'root' FROM datasets WHERE id = ?",
    };
    sqlite3_stmt *st = prep_hot(db_get(), HOT_OWNER_JOB + (int)kind, SQL[kind]);
    if (!st) return STORE_ERR;
    sqlite3_bind_int64(st, 1, id);
    store_status rc = STORE_NOT_FOUND;
    int s = sql_step(st);
    if (s == SQLITE_ROW) {
        *owner_id = sqlite3_column_int64(st, 0);
        *shared = sqlite3_column_int(st, 1);
        rc = STORE_OK;
    } else if (s != SQLITE_DONE) {
        log_sql("owner", db_get());
        rc = STORE_ERR;
    }
    done_hot(st);
    return rc;
}

long long store_owner_bytes(int64_t owner_id)
{
    sqlite3_stmt *st = prep(db_get(),
        "SELECT (SELECT coalesce(sum(bytes), 0) FROM models WHERE owner_id = ?1) + "
        "(SELECT coalesce(sum(bytes), 0) FROM datasets WHERE owner_id = ?1 AND source != 'root') + "
        "(SELECT coalesce(sum(a.bytes), 0) FROM artifacts a JOIN jobs j ON j.id = a.job_id "
        "WHERE j.owner_id = ?1)");
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, owner_id);
    long long n = sql_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    if (n < 0) log_sql("owner bytes", db_get());
    sqlite3_finalize(st);
    return n;
}

store_status store_webhook_secret_add(int64_t owner_id, const char *secret)
{
    sqlite3 *db = db_get();
    sqlite3_stmt *st = prep(db, "INSERT OR IGNORE INTO webhook_secrets (owner_id, secret, "
                                "created_at) VALUES (?, ?, ?)");
    if (!st) return STORE_ERR;
    sqlite3_bind_int64(st, 1, owner_id);
    sqlite3_bind_text(st, 2, secret, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(st, 3, now_s());
    store_status rc = sql_step(st) == SQLITE_DONE ? STORE_OK : STORE_ERR;
    if (rc) log_sql("add webhook secret", db);
    sqlite3_finalize(st);
    return rc;
}

store_status store_webhook_next(int64_t *job_id, int64_t *owner_id, char **url, int *attempts,
                                double *next_at)
{
    sqlite3_stmt *st = prep(db_get(),
        "SELECT d.job_id, d.owner_id, d.url, d.next_at, "
        "(SELECT count(*) FROM webhook_attempts a WHERE a.job_id = d.job_id) "
        "FROM webhook_deliveries d WHERE d.state = 'pending' ORDER BY d.next_at LIMIT 1");
    if (!st) return STORE_ERR;
    store_status rc = STORE_NOT_FOUND;
    if (sql_step(st) == SQLITE_ROW) {
        *job_id = sqlite3_column_int64(st, 0);
        *owner_id = sqlite3_column_int64(st, 1);
        *url = strdup((const char *)sqlite3_column_text(st, 2));
        *next_at = sqlite3_column_double(st, 3);
        *attempts = sqlite3_column_int(st, 4);
        rc = *url ? STORE_OK : STORE_ERR;
    }
    sqlite3_finalize(st);
    return rc;
}

store_status store_webhook_attempt(int64_t job_id, int n, double at, int status,
                                   const char *error, const char *state, double next_at)
{
    sqlite3 *db = db_get();
    store_status rc = STORE_ERR;
    if (!db || exec_sql(db, "BEGIN IMMEDIATE")) return STORE_ERR;
    sqlite3_stmt *st = prep(db, "INSERT INTO webhook_attempts (job_id, n, at, status, error) "
                                "VALUES (?, ?, ?, ?, ?)");
    if (!st) goto out;
    sqlite3_bind_int64(st, 1, job_id);
    sqlite3_bind_int(st, 2, n);
    sqlite3_bind_double(st, 3, at);
    if (status > 0) sqlite3_bind_int(st, 4, status);
    if (error) sqlite3_bind_text(st, 5, error, -1, SQLITE_TRANSIENT);
    if (sql_step(st) != SQLITE_DONE) goto out;
    sqlite3_finalize(st);
    st = prep(db, "UPDATE webhook_deliveries SET state = ?2, next_at = ?3 WHERE job_id = ?1");
    if (!st) goto out;
    sqlite3_bind_int64(st, 1, job_id);
    sqlite3_bind_text(st, 2, state, -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 3, next_at);
    if (sql_step(st) != SQLITE_DONE) goto out;
    rc = STORE_OK;
out:
    if (rc) log_sql("record webhook attempt", db);
    sqlite3_finalize(st);
    if (tx_end(db, rc == STORE_OK)) rc = STORE_ERR;
    return rc;
}

json_t *store_job_notify(int64_t job_id, const char *url)
{
    sqlite3 *db = db_get();
    sqlite3_stmt *st = prep(db, "SELECT url, state, next_at FROM webhook_deliveries "
                                "WHERE job_id = ?");
    if (!st) return NULL;
    sqlite3_bind_int64(st, 1, job_id);
    json_t *j = NULL;
    if (sql_step(st) == SQLITE_ROW) {
        const char *state = (const char *)sqlite3_column_text(st, 1);
        j = json_pack("{s:s,s:s,s:o,s:o,s:o}", "url", (const char *)sqlite3_column_text(st, 0),
                      "state", state, "delivered",
                      !strcmp(state, "pending") ? json_null() : json_boolean(!strcmp(state, "delivered")),
                      "next_at", !strcmp(state, "pending")
                                     ? json_real(sqlite3_column_double(st, 2)) : json_null(),
                      "attempts", json_array());
    } else if (url) {
        /* the job has not ended yet */
        j = json_pack("{s:s,s:s,s:n,s:n,s:[]}", "url", url, "state", "waiting", "delivered",
                      "next_at", "attempts");
    }
    sqlite3_finalize(st);
    if (!j) return NULL;
    st = prep(db, "SELECT at, status, error FROM webhook_attempts WHERE job_id = ? ORDER BY n");
    if (!st) { json_decref(j); return NULL; }
    sqlite3_bind_int64(st, 1, job_id);
    json_t *list = json_object_get(j, "attempts");
    while (sql_step(st) == SQLITE_ROW)
        json_array_append_new(list, json_pack("{s:f,s:o,s:o}", "at", sqlite3_column_double(st, 0),
                                              "status", sqlite3_column_type(st, 1) == SQLITE_NULL
                                                  ? json_null() : json_integer(sqlite3_column_int(st, 1)),
                                              "error", col_text_or_null(st, 2)));
    sqlite3_finalize(st);
    return j;
}
