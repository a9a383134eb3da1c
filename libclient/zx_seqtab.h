/*  zx_seqtab.h - a table of records keyed by a nonzero 64-bit sequence
    number (seqtab.c), for the remote executor's pending tasks.

    Open addressing with the seq itself as the hash and Robin Hood probing.
    Seqs are handed out in order and mostly resolve in order, so the live
    ones sit in consecutive slots at distance 0: a submit, a lookup and a
    delete touch the next cache line, where a mixing hash (Fibonacci, before)
    sent each to a random one, a cache miss per task with 200,000 in flight
    (callgrind/perf: ~10% of the client in bench A). Robin Hood keeps runs
    sorted by distance, so a miss and a backward-shift delete stop at the
    first entry at its home slot instead of walking the run. czmq's zhashx
    hashes and allocates per item, which is what this avoids. Not locked:
    its owner serialises access.
*/
#ifndef ZX_SEQTAB_H
#define ZX_SEQTAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t *keys; /* 0: empty slot */
    void **vals;
    size_t mask;
    unsigned bits;
    size_t count;
} zx__seqtab_t;

/* An empty table of 2^bits slots. 0, or -1 out of memory. */
int zx__seqtab_init(zx__seqtab_t *t, unsigned bits);
void zx__seqtab_fini(zx__seqtab_t *t);
/* The record under seq, or NULL. */
void *zx__seqtab_get(const zx__seqtab_t *t, uint64_t seq);
/* Adds val under seq (not in the table, never 0), growing the table to keep
   its load at most 1/2. 0, or -1 when it cannot grow (the table is
   unchanged). */
int zx__seqtab_put(zx__seqtab_t *t, uint64_t seq, void *val);
/* Removes seq; returns its record, or NULL if it was not there. */
void *zx__seqtab_del(zx__seqtab_t *t, uint64_t seq);
/* Every record, in seq order when sorted; malloc'd (free it), *n set.
   NULL out of memory. */
void **zx__seqtab_list(const zx__seqtab_t *t, size_t *n, bool sorted);

#endif
