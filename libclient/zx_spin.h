/*  zx_spin.h - the waiting spin's policy (spin.c): whether a thread about to
    wait for a future spins first, and the bound ZEXEC_SPIN_US sets.
*/
#ifndef ZX_SPIN_H
#define ZX_SPIN_H

#include <stdbool.h>

/* ZEXEC_SPIN_US: the longest spin, in microseconds (default 250; 0: never). */
int zx__spin_max_us(void);
/* True if this thread may spin now: the machine had an idle core lately
   (measured, spin.c) and no other thread of the process spins. Then the
   caller spins for at most its bound and calls zx__spin_end. */
bool zx__spin_begin(void);
/* The spin that zx__spin_begin allowed is over: its CPU time is counted. */
void zx__spin_end(void);
/* The policy's decision now (measured again when the last one is older
   than its interval): true if the machine had an idle core lately. */
bool zx__spin_idle_core(void);

#endif
