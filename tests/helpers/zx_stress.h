/*  zx_stress.h - for the stress programs (tests/stress_*.c), which run
    without criterion (it cannot start under ThreadSanitizer). */
#ifndef ZX_STRESS_H
#define ZX_STRESS_H

#include <stdio.h>

/* In a thread function: on a failed check, say which and where, and end
   the thread with a non-NULL result (the program's failure). */
#define ZX_STRESS_CHECK(prog, cond, what)                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s: %s failed at %s:%d\n", prog, what, __FILE__, __LINE__);           \
            return (void *)1;                                                                      \
        }                                                                                          \
    } while (0)

#endif
