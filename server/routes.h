/* The REST API's route table and its handlers (routes.c). */
#ifndef LSQD_ROUTES_H
#define LSQD_ROUTES_H

#include "reply.h"

/* The whole route table; *n gets its length. Static storage. */
const route_def *routes_table(int *n);

#endif
