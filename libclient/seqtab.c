/*  seqtab.c - the table of records keyed by sequence number (zx_seqtab.h):
    open addressing on the seq itself with Robin Hood probing and
    backward-shift deletion, no allocation per entry. Why this and not a
    general hash table is in zx_seqtab.h.
*/
#include "zx_seqtab.h"

#include <stdlib.h>
#include <string.h>

/* How far slot i is from k's home slot. */
static size_t s_dist(const zx__seqtab_t *t, uint64_t k, size_t i)
{
    return (i - (size_t)k) & t->mask;
}

int zx__seqtab_init(zx__seqtab_t *t, unsigned bits)
{
    size_t cap = (size_t)1 << bits;
    t->keys = calloc(cap, sizeof *t->keys);
    t->vals = calloc(cap, sizeof *t->vals);
    if (!t->keys || !t->vals) {
        free(t->keys);
        free(t->vals);
        return -1;
    }
    t->mask = cap - 1;
    t->bits = bits;
    t->count = 0;
    return 0;
}

void zx__seqtab_fini(zx__seqtab_t *t)
{
    free(t->keys);
    free(t->vals);
    memset(t, 0, sizeof *t);
}

/* The slot holding k, or SIZE_MAX. */
static size_t s_find(const zx__seqtab_t *t, uint64_t k)
{
    size_t i = (size_t)k & t->mask;
    for (size_t d = 0;; d++, i = (i + 1) & t->mask) {
        uint64_t x = t->keys[i];
        if (x == k) {
            return i;
        }
        if (x == 0 || s_dist(t, x, i) < d) {
            return SIZE_MAX; /* k would sit before this entry */
        }
    }
}

void *zx__seqtab_get(const zx__seqtab_t *t, uint64_t seq)
{
    size_t i = s_find(t, seq);
    return i == SIZE_MAX ? NULL : t->vals[i];
}

static void s_insert(zx__seqtab_t *t, uint64_t k, void *v)
{
    t->count++;
    size_t i = (size_t)k & t->mask;
    for (size_t d = 0;; d++, i = (i + 1) & t->mask) {
        if (t->keys[i] == 0) {
            t->keys[i] = k;
            t->vals[i] = v;
            return;
        }
        size_t e = s_dist(t, t->keys[i], i);
        if (e < d) { /* the richer entry moves on: runs stay sorted by distance */
            uint64_t tk = t->keys[i];
            void *tv = t->vals[i];
            t->keys[i] = k;
            t->vals[i] = v;
            k = tk;
            v = tv;
            d = e;
        }
    }
}

int zx__seqtab_put(zx__seqtab_t *t, uint64_t seq, void *val)
{
    if ((t->count + 1) * 2 > t->mask + 1) {
        zx__seqtab_t bigger;
        if (zx__seqtab_init(&bigger, t->bits + 1) != 0) {
            return -1;
        }
        for (size_t i = 0; i <= t->mask; i++) {
            if (t->keys[i]) {
                s_insert(&bigger, t->keys[i], t->vals[i]);
            }
        }
        zx__seqtab_fini(t);
        *t = bigger;
    }
    s_insert(t, seq, val);
    return 0;
}

void *zx__seqtab_del(zx__seqtab_t *t, uint64_t seq)
{
    size_t i = s_find(t, seq);
    if (i == SIZE_MAX) {
        return NULL;
    }
    void *val = t->vals[i];
    /* backward shift until an empty slot or an entry at its home */
    for (size_t j = (i + 1) & t->mask; t->keys[j] != 0 && s_dist(t, t->keys[j], j) > 0;
         j = (j + 1) & t->mask) {
        t->keys[i] = t->keys[j];
        t->vals[i] = t->vals[j];
        i = j;
    }
    t->keys[i] = 0;
    t->vals[i] = NULL;
    t->count--;
    return val;
}

typedef struct {
    uint64_t key;
    void *val;
} s_pair_t;

static int s_cmp_key(const void *a, const void *b)
{
    uint64_t x = ((const s_pair_t *)a)->key, y = ((const s_pair_t *)b)->key;
    return x < y ? -1 : x > y;
}

void **zx__seqtab_list(const zx__seqtab_t *t, size_t *n, bool sorted)
{
    *n = 0;
    size_t cap = t->count ? t->count : 1;
    void **v = malloc(cap * sizeof *v);
    s_pair_t *p = sorted ? malloc(cap * sizeof *p) : NULL;
    if (!v || (sorted && !p)) {
        free(v);
        free(p);
        return NULL;
    }
    for (size_t i = 0; i <= t->mask; i++) {
        if (!t->keys[i]) {
            continue;
        }
        if (sorted) {
            p[*n] = (s_pair_t){t->keys[i], t->vals[i]};
        }
        v[(*n)++] = t->vals[i];
    }
    if (sorted) {
        qsort(p, *n, sizeof *p, s_cmp_key);
        for (size_t i = 0; i < *n; i++) {
            v[i] = p[i].val;
        }
        free(p);
    }
    return v;
}
