/*  clock.c - see zx_clock.h. */
#include "zx_clock.h"

#include <time.h>

int64_t zx__mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}
