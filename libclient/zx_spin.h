/*  zx_spin.h - the waiting spin's policy (spin.c): whether a thread about to
    wait for a future spins first, and the bound ZEXEC_SPIN_US sets.
*/
#ifndef ZX_SPIN_H
#define ZX_SPIN_H

#include <stdbool.h>

/* ZEXEC_SPIN_US: the longest spin, in microseconds (default 250; 0: never). */
int zx__spin_max_us(void);

/* One thread's recent waits, for the second bound: a thread spins only
   while its spun waits averaged under the bound (spinning longer would
   not catch the result). Zero-initialised. */
typedef struct {
    double recent_us; /* the thread's spun waits, smoothed */
    unsigned unspun;  /* waits the average ruled out since the last spin */
    bool probe;       /* the wait being planned spins to test the average */
} zx__spin_hist_t;
/* How long the wait about to begin may spin, in microseconds (0..max_us),
   by the thread's history alone (the machine's say is zx__spin_begin). */
int zx__spin_plan(zx__spin_hist_t *h, int max_us);
/* The wait zx__spin_plan planned ended after waited_us; spun: it spun. */
void zx__spin_note(zx__spin_hist_t *h, bool spun, double waited_us);
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
