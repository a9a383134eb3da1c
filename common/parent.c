/*  parent.c - see zx_parent.h. */
#include "zx_parent.h"

#include <stdlib.h>
#include <unistd.h>

bool zx__parent_gone(void)
{
    static pid_t parent = -1; /* -1: not read yet; 0: not watched */
    if (parent < 0) {
        const char *s = getenv(ZX_PARENT_ENV);
        char *end = NULL;
        long v = s ? strtol(s, &end, 10) : 0;
        parent = (s && end && *end == 0 && v > 1) ? (pid_t)v : 0;
    }
    return parent > 0 && getppid() != parent;
}
