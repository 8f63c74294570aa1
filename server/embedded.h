/* Files that lsqd carries inside its executable: the migrations, in order,
 * and the OpenAPI document. The build generates their definitions
 * (build/gen/embedded.c, by scripts/embed.sh from schema/); they are never
 * committed. Text is NUL-terminated; len excludes the NUL. */
#ifndef LSQD_EMBEDDED_H
#define LSQD_EMBEDDED_H

#include <stddef.h>

typedef struct {
    const char *name;
    const char *text;
    size_t len;
} embedded_file;

extern const embedded_file EMBED_MIGRATIONS[];
extern const int EMBED_MIGRATION_COUNT;
extern const embedded_file EMBED_OPENAPI;

#endif
