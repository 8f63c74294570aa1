/* Authentication and ownership of lsqd (auth.h). A token is "lsqd_" and 64
 * hex digits from getrandom; the store keeps only its SHA-256, so a copy of
 * the database gives no way in. A request's token is hashed, looked up by
 * its hash and compared with the stored hash in constant time. Objects that
 * belong to another user answer 404, as if they did not exist. */
#include "auth.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include "log.h"
#include "store.h"

#define HOST_NAMES_MAX 32
#define USER_NAME_MAX 64

static int g_enabled;
static int g_port;
static char g_names[HOST_NAMES_MAX][128];
static int g_nnames;

static const char REALM[] = "Bearer realm=\"lsqd\"";
static const char REALM_INVALID[] = "Bearer realm=\"lsqd\", error=\"invalid_token\"";

static int is_loopback(const char *host)
{
    return !strncmp(host, "127.", 4) || !strcasecmp(host, "localhost") || !strcmp(host, "::1") ||
           !strcmp(host, "[::1]");
}

static void name_add(const char *name, size_t len)
{
    while (len && *name == ' ') { name++; len--; }
    while (len && name[len - 1] == ' ') len--;
    if (!len || len >= sizeof g_names[0] || g_nnames >= HOST_NAMES_MAX) return;
    memcpy(g_names[g_nnames], name, len);
    g_names[g_nnames][len] = '\0';
    g_nnames++;
}

int auth_init(const lsqd_config *cfg)
{
    int beyond = !is_loopback(cfg->host);
    g_nnames = 0;
    name_add(cfg->host, strlen(cfg->host));
    name_add("localhost", 9);
    name_add("127.0.0.1", 9);
    name_add("[::1]", 5);
    for (const char *p = cfg->host_allow; *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        name_add(p, len);
        p += len + (comma != NULL);
    }
    if (cfg->auth == AUTH_OFF && beyond) {
        log_error("--auth off is refused when lsqd listens beyond loopback: anyone who reaches "
                  "the port would own it", "{s:s}", "listen", cfg->host);
        return -1;
    }
    g_enabled = cfg->auth == AUTH_ON || (cfg->auth == AUTH_AUTO && beyond);
    if (g_enabled) {
        int n = store_tokens_active();
        if (n < 0) return -1;
        if (n == 0 && beyond) {
            char how[PATH_MAX + 96];
            snprintf(how, sizeof how, "lsqd token create --user admin --admin --data %s",
                     cfg->data);
            log_error("lsqd listens beyond loopback and needs a token, but the store has none: "
                      "create the first admin token with the command in \"fix\"",
                      "{s:s,s:s}", "listen", cfg->host, "fix", how);
            return -1;
        }
        if (n == 0)
            log_warn("tokens are required and the store has none yet: lsqd token create", NULL);
    }
    return g_enabled;
}

void auth_set_port(int port) { g_port = port; }

int auth_enabled(void) { return g_enabled; }

/* ------------------------------------------------------------ Host check */

static int host_allowed(const char *h)
{
    const char *name_end;
    if (h[0] == '[') {
        const char *close = strchr(h, ']');
        if (!close) return 0;
        name_end = close + 1;
    } else {
        name_end = strchr(h, ':');
        if (!name_end) name_end = h + strlen(h);
    }
    const char *port = NULL;
    if (*name_end == ':') {
        port = name_end + 1;
        char *end;
        errno = 0;
        long p = strtol(port, &end, 10);
        if (errno || *end || end == port || p != g_port) port = "";  /* not our port */
    } else if (*name_end) {
        return 0;
    }
    size_t nlen = (size_t)(name_end - h);
    for (int i = 0; i < g_nnames; i++) {
        /* an allowed name with its own port (a reverse proxy's) is matched
         * as a whole */
        if (!strcasecmp(g_names[i], h)) return 1;
        if (strlen(g_names[i]) == nlen && !strncasecmp(g_names[i], h, nlen) &&
            (!port || *port))
            return 1;
    }
    return 0;
}

int auth_host_or_reply(req *r, enum MHD_Result *res)
{
    const char *h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    if (h && host_allowed(h)) return 0;
    *res = http_reply_error(r, HERR_MISDIRECTED, "Host",
                            "this lsqd does not answer for host '%.200s': it answers for its "
                            "listen address, localhost and the names of --host-allow",
                            h ? h : "(none)");
    return -1;
}

/* ------------------------------------------------------------- tokens */

static void token_hash(const char *token, char hex[65])
{
    sha256_ctx c;
    unsigned char d[32];
    sha256_init(&c);
    sha256_update(&c, token, strlen(token));
    sha256_final(&c, d);
    sha256_hex(d, hex);
}

/* Compares two 64-character hashes in time independent of where they differ. */
static int hash_equal(const char *a, const char *b)
{
    unsigned char diff = 0;
    for (int i = 0; i < 64; i++) diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

static const store_user LOCAL_USER = {STORE_LOCAL_USER, "local", 1};

int auth_user_or_reply(req *r, const route_def *route, enum MHD_Result *res)
{
    if (!g_enabled) {
        r->user = LOCAL_USER;
        return 0;
    }
    if (route->access == ACCESS_PUBLIC) return 0;
    const char *a = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                MHD_HTTP_HEADER_AUTHORIZATION);
    const char *token = NULL;
    if (a) {
        if (strncasecmp(a, "Bearer ", 7)) {
            *res = http_reply_error_header(r, HERR_UNAUTHORIZED, "Authorization",
                                           MHD_HTTP_HEADER_WWW_AUTHENTICATE, REALM,
                                           "Authorization must be 'Bearer TOKEN'");
            return -1;
        }
        token = a + 7;
        while (*token == ' ') token++;
    } else if (!strcmp(route->name, "job_events")) {
        /* EventSource cannot send headers: the events stream alone takes
         * the token in the query */
        token = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "access_token");
    }
    if (!token || !*token) {
        *res = http_reply_error_header(r, HERR_UNAUTHORIZED, "Authorization",
                                       MHD_HTTP_HEADER_WWW_AUTHENTICATE, REALM,
                                       "this lsqd needs a token: send 'Authorization: Bearer "
                                       "TOKEN' (the operator makes one with lsqd token create)");
        return -1;
    }
    char hex[65], stored[65];
    token_hash(token, hex);
    store_user u;
    store_status st = store_token_lookup(hex, &u, stored);
    if (st == STORE_ERR) {
        *res = http_reply_error(r, HERR_UNAVAILABLE, NULL, "cannot check the token");
        return -1;
    }
    if (st != STORE_OK || !hash_equal(hex, stored)) {
        *res = http_reply_error_header(r, HERR_UNAUTHORIZED, "Authorization",
                                       MHD_HTTP_HEADER_WWW_AUTHENTICATE, REALM_INVALID,
                                       "the token is not valid: unknown or revoked");
        return -1;
    }
    r->user = u;
    if (route->access == ACCESS_ADMIN && !u.admin) {
        *res = http_reply_error(r, HERR_FORBIDDEN, NULL, "%s %s is for admins only", route->method,
                                route->pattern);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ ownership */

static const char *const OBJECT_PREFIX[STORE_OBJECT_COUNT] = {
    "/api/v1/jobs/{id}", "/api/v1/models/{id}", "/api/v1/datasets/{id}",
};
static const char *const OBJECT_NAME[STORE_OBJECT_COUNT] = {"job", "model", "dataset"};

int auth_may_use(const store_user *u, store_object kind, int64_t id)
{
    int64_t owner = 0;
    int shared = 0;
    if (store_owner_get(kind, id, &owner, &shared) != STORE_OK) return 0;
    return u->admin || owner == u->id || shared;
}

int auth_owner_or_reply(req *r, const route_def *route, enum MHD_Result *res)
{
    if (!strstr(route->pattern, "{id}")) return 0;
    int kind = -1;
    for (int k = 0; k < STORE_OBJECT_COUNT; k++) {
        size_t n = strlen(OBJECT_PREFIX[k]);
        if (!strncmp(route->pattern, OBJECT_PREFIX[k], n) &&
            (route->pattern[n] == '\0' || route->pattern[n] == '/'))
            kind = k;
    }
    if (kind < 0) {
        /* a new kind of object needs its owner rule here: refuse until then */
        *res = http_reply_error(r, HERR_INTERNAL, NULL, "no owner rule for %s", route->pattern);
        return -1;
    }
    int64_t owner = 0;
    int shared = 0;
    store_status st = store_owner_get((store_object)kind, r->job_id, &owner, &shared);
    if (st == STORE_ERR) {
        *res = http_reply_error(r, HERR_INTERNAL, NULL, "cannot read the %s",
                                OBJECT_NAME[kind]);
        return -1;
    }
    if (st == STORE_NOT_FOUND || !(r->user.admin || owner == r->user.id || shared)) {
        *res = http_reply_error(r, HERR_NOT_FOUND, "id", "no %s %lld", OBJECT_NAME[kind],
                                (long long)r->job_id);
        return -1;
    }
    if (shared && owner != r->user.id && !r->user.admin && strcmp(route->method, "GET")) {
        *res = http_reply_error(r, HERR_FORBIDDEN, "id",
                                "%s %lld comes from the datasets root: only an admin may "
                                "change it", OBJECT_NAME[kind], (long long)r->job_id);
        return -1;
    }
    return 0;
}

int auth_quota_or_reply(req *r, unsigned long long adding, enum MHD_Result *res)
{
    unsigned long long quota = r->cfg->quota_per_user;
    if (!quota) return 0;
    long long used = store_owner_bytes(r->user.id);
    if (used < 0) {
        *res = http_reply_error(r, HERR_INTERNAL, NULL, "cannot count the bytes of %s",
                                r->user.name);
        return -1;
    }
    if (adding > 0 && (unsigned long long)used + adding > quota) {
        *res = http_reply_error(r, HERR_BODY_TOO_LARGE, "body",
                                "%s keeps %lld bytes; this file of %llu bytes would pass the "
                                "%llu of --quota-per-user (uploads and artifacts): delete "
                                "something first", r->user.name, used, adding, quota);
        return -1;
    }
    if (adding == 0 && (unsigned long long)used >= quota) {
        *res = http_reply_error(r, HERR_LIMIT, NULL,
                                "%s keeps %lld bytes, at the %llu of --quota-per-user (uploads "
                                "and artifacts): delete something first", r->user.name, used,
                                quota);
        return -1;
    }
    return 0;
}

int64_t auth_list_owner(const req *r)
{
    return r->user.admin ? 0 : r->user.id;
}

/* ------------------------------------------------------- lsqd token ... */

static const char TOKEN_USAGE[] =
    "usage: lsqd token create --user NAME [--admin] [--data DIR]\n"
    "       lsqd token list [--data DIR]\n"
    "       lsqd token revoke ID [--data DIR]\n"
    "\n"
    "Manages the API tokens of the lsqd whose data folder is DIR (LSQD_DATA,\n"
    "./var); it may run while lsqd runs. create prints the new token once, on\n"
    "standard output: only its SHA-256 is stored. --admin makes the user an\n"
    "admin (sees and manages every user's objects, reads /metrics).\n";

static int user_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > USER_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == '_' || s[i] == '-' ||
              s[i] == '@'))
            return 0;
    return 1;
}

static int mkdir_p(const char *path)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0755) && errno != EEXIST) return -1;
        *p = '/';
    }
    return mkdir(tmp, 0755) && errno != EEXIST ? -1 : 0;
}

static void fmt_time(json_t *t, char *out, size_t cap)
{
    if (!json_is_number(t)) { snprintf(out, cap, "-"); return; }
    time_t s = (time_t)json_number_value(t);
    struct tm tm;
    gmtime_r(&s, &tm);
    strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int token_create(const char *user, int admin)
{
    if (!user || !user_name_ok(user)) {
        fprintf(stderr, "lsqd token create: --user must be 1 to %d letters, digits, '.', '_', "
                "'-' or '@'\n", USER_NAME_MAX);
        return 2;
    }
    if (!strcmp(user, LOCAL_USER.name)) {
        fprintf(stderr, "lsqd token create: the user 'local' owns what lsqd made without "
                "tokens; it takes no tokens (give an admin one of its own)\n");
        return 2;
    }
    unsigned char raw[32];
    size_t got = 0;
    while (got < sizeof raw) {
        ssize_t n = getrandom(raw + got, sizeof raw - got, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            fprintf(stderr, "lsqd token create: getrandom: %s\n", strerror(errno));
            return 1;
        }
        got += (size_t)n;
    }
    char token[AUTH_TOKEN_LEN + 1], hex[65];
    memcpy(token, "lsqd_", 5);
    for (size_t i = 0; i < sizeof raw; i++) snprintf(token + 5 + 2 * i, 3, "%02x", raw[i]);
    token_hash(token, hex);
    int64_t id = 0;
    int is_admin = 0;
    if (store_token_insert(user, admin, hex, &id, &is_admin) != STORE_OK) {
        fprintf(stderr, "lsqd token create: cannot store the token\n");
        return 1;
    }
    printf("%s\n", token);
    fflush(stdout);
    fprintf(stderr, "token %lld for user %s%s: it is shown this once (only its SHA-256 is "
            "kept); send it as 'Authorization: Bearer TOKEN' or LSQD_TOKEN\n", (long long)id,
            user, is_admin ? " (admin)" : "");
    return 0;
}

static int token_list(void)
{
    json_t *arr = store_token_list();
    if (!arr) {
        fprintf(stderr, "lsqd token list: cannot read the tokens\n");
        return 1;
    }
    printf("%-6s %-24s %-5s %-20s %-20s %s\n", "ID", "USER", "ADMIN", "CREATED", "LAST USED",
           "REVOKED");
    size_t i;
    json_t *t;
    json_array_foreach(arr, i, t) {
        char c[32], l[32], rv[32];
        fmt_time(json_object_get(t, "created_at"), c, sizeof c);
        fmt_time(json_object_get(t, "last_used"), l, sizeof l);
        fmt_time(json_object_get(t, "revoked_at"), rv, sizeof rv);
        printf("%-6lld %-24s %-5s %-20s %-20s %s\n",
               (long long)json_integer_value(json_object_get(t, "id")),
               json_string_value(json_object_get(t, "user")),
               json_is_true(json_object_get(t, "admin")) ? "yes" : "no", c, l, rv);
    }
    json_decref(arr);
    return 0;
}

static int token_revoke(const char *arg)
{
    char *end;
    errno = 0;
    long long id = arg ? strtoll(arg, &end, 10) : 0;
    if (!arg || errno || *end || id <= 0) {
        fprintf(stderr, "lsqd token revoke: ID must be a token id (lsqd token list)\n");
        return 2;
    }
    store_status st = store_token_revoke(id);
    if (st == STORE_NOT_FOUND) {
        fprintf(stderr, "lsqd token revoke: no token %lld\n", id);
        return 1;
    }
    if (st == STORE_ERR) {
        fprintf(stderr, "lsqd token revoke: cannot revoke token %lld\n", id);
        return 1;
    }
    printf("token %lld %s\n", id, st == STORE_CONFLICT ? "was revoked already" : "revoked");
    return 0;
}

int auth_token_main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : NULL, *user = NULL, *arg = NULL;
    const char *data = getenv("LSQD_DATA");
    int admin = 0;
    if (!data || !*data) data = "./var";
    if (!cmd || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        fputs(TOKEN_USAGE, cmd ? stdout : stderr);
        return cmd ? 0 : 2;
    }
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--user") && i + 1 < argc) user = argv[++i];
        else if (!strncmp(argv[i], "--user=", 7)) user = argv[i] + 7;
        else if (!strcmp(argv[i], "--data") && i + 1 < argc) data = argv[++i];
        else if (!strncmp(argv[i], "--data=", 7)) data = argv[i] + 7;
        else if (!strcmp(argv[i], "--admin")) admin = 1;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(TOKEN_USAGE, stdout);
            return 0;
        } else if (argv[i][0] != '-' && !arg) arg = argv[i];
        else {
            fprintf(stderr, "lsqd token: unexpected argument '%s'\n%s", argv[i], TOKEN_USAGE);
            return 2;
        }
    }
    int known = !strcmp(cmd, "create") || !strcmp(cmd, "list") || !strcmp(cmd, "revoke");
    if (!known || (strcmp(cmd, "revoke") && arg) || (strcmp(cmd, "create") && (user || admin))) {
        fprintf(stderr, "lsqd token: bad command line\n%s", TOKEN_USAGE);
        return 2;
    }
    char real[PATH_MAX], db[PATH_MAX + 16];
    if (mkdir_p(data) || !realpath(data, real)) {
        fprintf(stderr, "lsqd token: cannot open the data folder %s: %s\n", data,
                strerror(errno));
        return 1;
    }
    snprintf(db, sizeof db, "%s/lsqd.db", real);
    if (store_open(db)) {
        fprintf(stderr, "lsqd token: cannot open the store %s\n", db);
        return 1;
    }
    int rc = !strcmp(cmd, "create") ? token_create(user, admin)
             : !strcmp(cmd, "list") ? token_list() : token_revoke(arg);
    store_close();
    return rc;
}
