/* Server-Sent Events of a job's events (sse.c). */
#ifndef LSQD_SSE_H
#define LSQD_SSE_H

#include <stdint.h>

#include "reply.h"

/* Streams job_id's events after sequence number `after` (the last one the
 * client has), then an "end" event once the job has ended. */
enum MHD_Result sse_reply(req *r, int64_t job_id, int64_t after);

#endif
