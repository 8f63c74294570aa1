/* Static files of the dashboard: one flat folder (cfg->web_dir), so a name
 * is checked by its characters alone and never names a path. */
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "static.h"

static const struct { const char *ext, *ctype; } TYPES[] = {
    {".html", "text/html; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".mjs", "text/javascript; charset=utf-8"},
    {".json", "application/json"},
    {".svg", "image/svg+xml"},
    {".png", "image/png"},
    {".ico", "image/x-icon"},
    {".txt", "text/plain; charset=utf-8"},
};

/* The content type of a name by its extension, NULL when not served. */
static const char *static_ctype(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (!dot) return NULL;
    for (size_t i = 0; i < sizeof TYPES / sizeof *TYPES; i++)
        if (!strcmp(dot, TYPES[i].ext)) return TYPES[i].ctype;
    return NULL;
}

static int static_name_ok(const char *name)
{
    if (!name[0] || name[0] == '.') return 0;
    for (const char *c = name; *c; c++) {
        int ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                 (*c >= '0' && *c <= '9') || *c == '.' || *c == '_' || *c == '-';
        if (!ok) return 0;
    }
    return 1;
}

enum MHD_Result static_reply(req *r)
{
    const char *name = r->name_param;
    const char *ctype = static_name_ok(name) ? static_ctype(name) : NULL;
    if (!ctype || !r->cfg->web_dir[0])
        return http_reply_error(r, HERR_NOT_FOUND, NULL, "no file /static/%s", name);
    char path[PATH_MAX + ROUTE_PARAM_MAX + 2];
    snprintf(path, sizeof path, "%s/%s", r->cfg->web_dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        if (fd >= 0) close(fd);
        return http_reply_error(r, HERR_NOT_FOUND, NULL, "no file /static/%s", name);
    }
    /* takes fd: closed with the response */
    struct MHD_Response *resp = MHD_create_response_from_fd((uint64_t)sb.st_size, fd);
    if (!resp) { close(fd); return MHD_NO; }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    /* small files that change with lsqd: revalidate rather than go stale */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    return http_reply_response(r, 200, resp);
}
