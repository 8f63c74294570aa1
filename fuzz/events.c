/* The JSON-lines events a training child writes and lsqd reads (ev_parse,
 * as server/scheduler.c and server/slurm.c call it on each line). */
#include "fuzz.h"
#include "train/events.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 64 * 1024) return -1;
    json_t *ev = NULL;
    ev_type type;
    lsq_err err;
    if (ev_parse((const char *)data, size, &ev, &type, &err) == LSQ_OK) {
        if (!ev || (int)type < 0 || type >= EV_COUNT) abort();
        json_decref(ev);
    }
    return 0;
}
