/* The dashboard's files: GET / and GET /static/NAME from web/ (the default
 * --web of a build/lsqd), with content types; names that could leave the
 * folder never reach the file system. */
#include <criterion/criterion.h>
#include <string.h>

#include "api/harness.h"

Test(static_files, dashboard_files_and_refused_names)
{
    lsqd d;
    lsqd_start(&d, NULL);
    api_res *r = api(&d, "GET", "/", NULL, NULL, NULL);
    cr_assert_eq(r->status, 200);
    cr_assert(strstr(r->body, "/static/app.js"), "/ is the dashboard's index.html");
    api_free(r);

    static const struct { const char *path, *ctype; } OK[] = {
        {"/static/app.js", "text/javascript"},
        {"/static/style.css", "text/css"},
        {"/static/samples.png", "image/png"},
        {"/static/samples.json", "application/json"},
    };
    for (size_t i = 0; i < sizeof OK / sizeof *OK; i++) {
        r = api(&d, "GET", OK[i].path, NULL, NULL, NULL);
        cr_expect_eq(r->status, 200, "%s: %ld", OK[i].path, r->status);
        cr_expect(!strncmp(r->ctype, OK[i].ctype, strlen(OK[i].ctype)), "%s: %s", OK[i].path,
                  r->ctype);
        cr_expect(r->len > 0, "%s has content", OK[i].path);
        api_free(r);
    }
    static const char *const REFUSED[] = {
        "/static/nothing.js",     /* no such file */
        "/static/.hidden.js",     /* dot files */
        "/static/..",             /* the parent */
        "/static/%2e%2e%2fMakefile", /* ../Makefile, escaped */
        "/static/index",          /* no served extension */
        "/static/a%20b.js",       /* characters outside [A-Za-z0-9._-] */
        "/static/",
    };
    for (size_t i = 0; i < sizeof REFUSED / sizeof *REFUSED; i++) {
        r = api(&d, "GET", REFUSED[i], NULL, NULL, NULL);
        cr_expect_eq(r->status, 404, "%s: %ld", REFUSED[i], r->status);
        cr_expect_str_eq(api_err_code(r), "not_found", "%s", REFUSED[i]);
        api_free(r);
    }
    r = api(&d, "POST", "/static/app.js", "{}", NULL, NULL);
    cr_expect_eq(r->status, 405);
    api_free(r);
    lsqd_cleanup(&d);
}
