/*  test_seqtab.c - the remote executor's pending table (libclient/seqtab.c)
    alone: lookups, growth, backward-shift deletion keeping every other
    entry reachable, wrap-around at the end of the slots, sorted listing.
*/
#include "zx_seqtab.h"

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>

/* the value stored under seq k is k's address in this array */
static int s_vals[4096];

Test(seqtab, put_get_del)
{
    zx__seqtab_t t;
    cr_assert_eq(zx__seqtab_init(&t, 2), 0);
    for (uint64_t k = 1; k <= 1000; k++) {
        cr_assert_eq(zx__seqtab_put(&t, k, &s_vals[k]), 0);
    }
    cr_assert_eq(t.count, 1000);
    cr_assert_geq(t.mask + 1, 2000, "the load stays at most 1/2");
    for (uint64_t k = 1; k <= 1000; k++) {
        cr_assert_eq(zx__seqtab_get(&t, k), &s_vals[k]);
    }
    cr_assert_null(zx__seqtab_get(&t, 1001));
    /* every third one out; the rest must still be found */
    for (uint64_t k = 3; k <= 1000; k += 3) {
        cr_assert_eq(zx__seqtab_del(&t, k), &s_vals[k]);
    }
    cr_assert_null(zx__seqtab_del(&t, 3), "already gone");
    for (uint64_t k = 1; k <= 1000; k++) {
        cr_assert_eq(zx__seqtab_get(&t, k), k % 3 == 0 ? NULL : &s_vals[k], "seq %lu",
                     (unsigned long)k);
    }
    cr_assert_eq(t.count, 1000 - 333);
    zx__seqtab_fini(&t);
}

Test(seqtab, collisions_and_wrap_around)
{
    zx__seqtab_t t;
    cr_assert_eq(zx__seqtab_init(&t, 4), 0); /* 16 slots */
    /* the same home slot (k & 15 == 14) for all, so the run wraps past the end */
    uint64_t ks[] = {14, 30, 46, 62, 78};
    for (size_t i = 0; i < 5; i++) {
        cr_assert_eq(zx__seqtab_put(&t, ks[i], &s_vals[i]), 0);
    }
    cr_assert_eq(t.mask, 15, "5 of 16: no growth");
    cr_assert_eq(zx__seqtab_del(&t, 30), &s_vals[1]);
    for (size_t i = 0; i < 5; i++) {
        cr_assert_eq(zx__seqtab_get(&t, ks[i]), i == 1 ? NULL : &s_vals[i]);
    }
    cr_assert_eq(zx__seqtab_del(&t, 14), &s_vals[0]);
    cr_assert_eq(zx__seqtab_get(&t, 78), &s_vals[4]);
    cr_assert_null(zx__seqtab_get(&t, 94), "a miss in a wrapped run ends");
    zx__seqtab_fini(&t);
}

Test(seqtab, list_sorted_and_not)
{
    zx__seqtab_t t;
    cr_assert_eq(zx__seqtab_init(&t, 3), 0);
    uint64_t ks[] = {900, 5, 77, 13, 1024, 2};
    for (size_t i = 0; i < 6; i++) {
        cr_assert_eq(zx__seqtab_put(&t, ks[i], &s_vals[ks[i]]), 0);
    }
    size_t n = 0;
    void **v = zx__seqtab_list(&t, &n, true);
    cr_assert_not_null(v);
    cr_assert_eq(n, 6);
    uint64_t want[] = {2, 5, 13, 77, 900, 1024};
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(v[i], &s_vals[want[i]], "position %zu", i);
    }
    free(v);
    v = zx__seqtab_list(&t, &n, false);
    cr_assert_eq(n, 6);
    int seen = 0;
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < 6; j++) {
            seen += v[i] == &s_vals[want[j]];
        }
    }
    cr_assert_eq(seen, 6, "each record once");
    free(v);
    zx__seqtab_fini(&t);
    cr_assert_eq(zx__seqtab_init(&t, 1), 0);
    v = zx__seqtab_list(&t, &n, true);
    cr_assert_not_null(v);
    cr_assert_eq(n, 0, "empty");
    free(v);
    zx__seqtab_fini(&t);
}
