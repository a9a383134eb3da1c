/*  zx_clock.h - a monotonic microsecond clock (czmq has zclock_mono in
    milliseconds and zclock_usecs on the wall clock, which steps). */
#ifndef ZX_CLOCK_H
#define ZX_CLOCK_H

#include <stdint.h>

/* Microseconds on CLOCK_MONOTONIC: for durations. */
int64_t zx__mono_us(void);

#endif
