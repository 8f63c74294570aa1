/* Inputs that the fuzz targets (fuzz/, docs/reliability.md) once crashed
 * the engine with, each fed to the same reader here and checked to be
 * refused with the right error. `make test-fuzz` also replays them under
 * ASan and UBSan. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/onnx_import.h"
#include "train/events.h"

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    unsigned char *buf = malloc(1 << 20);
    cr_assert_not_null(buf);
    *n = fread(buf, 1, 1 << 20, f);
    fclose(f);
    return buf;
}

/* An event whose type is unknown: the message quoted the type after the
 * object that held it was released (a use after free in lsqd's reader). */
Test(fuzz_regressions, event_of_unknown_type_is_named)
{
    size_t n;
    unsigned char *b = slurp("fuzz/regressions/events/unknown-type-use-after-free.json", &n);
    json_t *ev = NULL;
    ev_type type;
    lsq_err err;
    cr_assert_eq(ev_parse((const char *)b, n, &ev, &type, &err), LSQ_ERR_INVALID);
    cr_assert_null(ev);
    cr_assert_str_eq(err.field, "event.type");
    cr_assert_str_eq(err.message, "unknown event type 'artifabt'");
    free(b);
}

/* A graph whose image input has no name: its value was stored under a NULL
 * name and hashed (a NULL dereference). */
Test(fuzz_regressions, onnx_input_without_name_is_refused)
{
    size_t n;
    unsigned char *b = slurp("fuzz/regressions/onnx/input-without-name.onnx", &n);
    onnx_import im;
    lsq_err err;
    cr_assert_eq(onnx_import_bytes(&im, b, n, &err), LSQ_ERR_INVALID, "%s", err.message);
    cr_assert_str_eq(err.field, "model.onnx.graph.input");
    cr_assert_str_eq(err.message, "the graph's image input has no name");
    free(b);
}
