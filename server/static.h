/* The dashboard's files (web/ of the source tree, or --web DIR), served at
 * /static/NAME. Names are plain file names: nothing with '/', a leading '.'
 * or a character outside [A-Za-z0-9._-] reaches the file system. */
#ifndef LSQD_STATIC_H
#define LSQD_STATIC_H

#include "reply.h"

/* GET /static/{name}: the file with a content type from its extension;
 * 404 for an unknown or refused name. */
enum MHD_Result static_reply(req *r);

#endif
