/*  test_waiters.c - zx_as_completed_* and zx_wait (libclient/waiters.c):
    order, duplicates, timeouts, the three return_when modes, and futures of
    two executors in one call. Futures made with the internal API are
    completed by the test itself, so completion order is exact. */
#include "zx_client_int.h"
#include "zx_test_fns.h"
#include "zx_waiter.h"

#include <criterion/criterion.h>
#include <czmq.h>
#include <string.h>

static const unsigned char k_nil[] = {0xc0};

static void s_new_n(zx_future_t **fs, int n)
{
    for (int i = 0; i < n; i++) {
        fs[i] = zx__future_new(NULL, "fn", (uint64_t)i);
    }
}

static void s_unref_n(zx_future_t **fs, int n)
{
    for (int i = 0; i < n; i++) {
        zx_future_unref(&fs[i]);
    }
}

/* ---- as_completed ------------------------------------------------------- */

Test(as_completed, yields_done_ones_first_in_input_order_then_completion_order, .timeout = 10)
{
    zx_future_t *fs[5];
    s_new_n(fs, 5);
    zx__future_set_result(fs[3], k_nil, 1);
    zx__future_set_cancelled(fs[1], "");
    zx_as_completed_t *it = zx_as_completed_new(fs, 5, ZX_FOREVER);
    cr_assert_not_null(it);
    cr_assert_eq(zx_as_completed_next(it), fs[1]);
    cr_assert_eq(zx_as_completed_next(it), fs[3]);
    zx__future_set_result(fs[4], k_nil, 1);
    zx__future_set_exception(fs[0], ZX_ERAISED, "E", "m", "", "", 0);
    zx__future_set_result(fs[2], k_nil, 1);
    cr_assert_eq(zx_as_completed_next(it), fs[4]);
    cr_assert_eq(zx_as_completed_next(it), fs[0]);
    cr_assert_eq(zx_as_completed_next(it), fs[2]);
    cr_assert_null(zx_as_completed_next(it));
    cr_assert_eq(zx_as_completed_status(it), ZX_OK);
    zx_as_completed_destroy(&it);
    cr_assert_null(it);
    s_unref_n(fs, 5);
}

Test(as_completed, yields_duplicates_once, .timeout = 10)
{
    zx_future_t *fs[12];
    s_new_n(fs, 2);
    /* 12 entries: more than the small-input scan, exercising the hash path */
    zx_future_t *in[12];
    for (int i = 0; i < 12; i++) {
        in[i] = fs[i % 2];
    }
    zx__future_set_result(fs[0], k_nil, 1);
    zx_as_completed_t *it = zx_as_completed_new(in, 12, 5);
    cr_assert_eq(zx_as_completed_next(it), fs[0]);
    zx__future_set_result(fs[1], k_nil, 1);
    cr_assert_eq(zx_as_completed_next(it), fs[1]);
    cr_assert_null(zx_as_completed_next(it));
    cr_assert_eq(zx_as_completed_status(it), ZX_OK);
    zx_as_completed_destroy(&it);
    s_unref_n(fs, 2);
}

Test(as_completed, many_inputs_with_duplicates_and_nulls_yield_each_once, .timeout = 10)
{
    /* 600 futures given three times each, between NULLs: the flat set */
    enum { N = 600 };
    zx_future_t *fs[N];
    s_new_n(fs, N);
    zx_future_t **in = calloc(4 * N, sizeof *in);
    for (int r = 0; r < 3; r++) {
        for (int i = 0; i < N; i++) {
            in[r * N + i] = fs[(i * 7 + r * 11) % N];
        }
    }
    for (int i = 0; i < N; i += 2) {
        zx__future_set_result(fs[i], k_nil, 1); /* half done before the call */
    }
    zx_as_completed_t *it = zx_as_completed_new(in, 4 * N, 5);
    cr_assert_not_null(it);
    for (int i = 1; i < N; i += 2) {
        zx__future_set_result(fs[i], k_nil, 1);
    }
    int seen[N] = {0};
    int n = 0, next_early = 0;
    zx_future_t *f;
    while ((f = zx_as_completed_next(it))) {
        long k = -1;
        for (int i = 0; i < N && k < 0; i++) {
            k = fs[i] == f ? i : -1;
        }
        cr_assert(k >= 0, "yielded a future that was not given");
        cr_assert_eq(seen[k]++, 0, "future %ld yielded twice", k);
        /* the early (even) ones come first, in order of first appearance:
           the first round gives fs[(i * 7) % N] for i = 0, 1, ... */
        if (n < N / 2) {
            while ((next_early * 7) % N % 2 != 0) {
                next_early++;
            }
            cr_assert_eq(k, (next_early * 7) % N, "early future %d out of input order", n);
            next_early++;
        }
        n++;
    }
    cr_assert_eq(n, N, "each future once: %d of %d", n, N);
    cr_assert_eq(zx_as_completed_status(it), ZX_OK);
    zx_as_completed_destroy(&it);
    free(in);
    s_unref_n(fs, N);
}

Test(as_completed, timeout_counts_from_the_call_and_leaves_the_rest, .timeout = 10)
{
    zx_future_t *fs[3];
    s_new_n(fs, 3);
    zx__future_set_result(fs[2], k_nil, 1);
    int64_t t0 = zclock_mono();
    zx_as_completed_t *it = zx_as_completed_new(fs, 3, 0.2);
    cr_assert_eq(zx_as_completed_next(it), fs[2]);
    cr_assert_null(zx_as_completed_next(it));
    int64_t took = zclock_mono() - t0;
    cr_assert_eq(zx_as_completed_status(it), ZX_ETIMEOUT);
    cr_assert_geq(took, 190); /* a timeout that never fired: the test's own limit */
    cr_assert_null(zx_as_completed_next(it), "stays ended");
    cr_assert_eq(zx_future_state(fs[0]), ZX_PENDING, "the rest is left alone");
    zx_as_completed_destroy(&it);
    /* completing after destroy must not touch the freed iterator */
    zx__future_set_result(fs[0], k_nil, 1);
    zx__future_set_result(fs[1], k_nil, 1);
    s_unref_n(fs, 3);
}

Test(as_completed, holds_references_to_its_futures, .timeout = 10)
{
    zx_future_t *f = zx__future_new(NULL, "fn", 1);
    zx_future_t *keep = f;
    zx_as_completed_t *it = zx_as_completed_new(&f, 1, 5);
    zx_future_unref(&f); /* the iterator's reference keeps it alive */
    zx__future_set_result(keep, k_nil, 1);
    cr_assert_eq(zx_as_completed_next(it), keep);
    cr_assert_eq(zx_future_result(keep, 0, NULL, NULL), ZX_OK);
    zx_as_completed_destroy(&it);
}

Test(as_completed, empty_input_ends_at_once, .timeout = 10)
{
    zx_as_completed_t *it = zx_as_completed_new(NULL, 0, ZX_FOREVER);
    cr_assert_not_null(it);
    cr_assert_null(zx_as_completed_next(it));
    cr_assert_eq(zx_as_completed_status(it), ZX_OK);
    zx_as_completed_destroy(&it);
}

Test(as_completed, mixes_futures_of_two_local_executors, .timeout = 30)
{
    zxt_gate_reset();
    zx_executor_t *a = zx_executor_new_local(1);
    zx_executor_t *b = zx_executor_new_local(1);
    zxt_register_all(a);
    zxt_register_all(b);
    zx_future_t *fs[4];
    fs[0] = zxt_submit_int(a, "block", 1, 0, 0); /* held until the gate opens */
    fs[1] = zxt_submit_int(b, "square", 1, 4, 0);
    fs[2] = zx__future_new(NULL, "manual", 9); /* completed by hand below */
    cr_assert_eq(zxt_result_int(fs[1], 10), 16);
    fs[3] = zxt_submit_int(b, "square", 1, 5, 0);
    zx_as_completed_t *it = zx_as_completed_new(fs, 4, 20);
    zx_future_t *first = zx_as_completed_next(it);
    cr_assert_eq(first, fs[1], "already done comes first");
    zx_future_t *second = zx_as_completed_next(it);
    cr_assert_eq(second, fs[3], "b's second task finishes while a's is blocked");
    zx__future_set_result(fs[2], k_nil, 1);
    cr_assert_eq(zx_as_completed_next(it), fs[2]);
    zxt_gate_open();
    cr_assert_eq(zx_as_completed_next(it), fs[0]);
    cr_assert_null(zx_as_completed_next(it));
    cr_assert_eq(zx_as_completed_status(it), ZX_OK);
    zx_as_completed_destroy(&it);
    s_unref_n(fs, 4);
    zx_executor_destroy(&a);
    zx_executor_destroy(&b);
}

/* ---- wait --------------------------------------------------------------- */

Test(wait, first_completed_returns_on_the_first, .timeout = 10)
{
    zx_future_t *fs[3], *done[3], *not_done[3];
    size_t nd = 99, nn = 99;
    s_new_n(fs, 3);
    cr_assert_eq(zx_wait(fs, 3, 0.05, ZX_FIRST_COMPLETED, done, &nd, not_done, &nn), ZX_ETIMEOUT);
    cr_assert_eq(nd, 0);
    cr_assert_eq(nn, 3);
    zx__future_set_result(fs[1], k_nil, 1);
    cr_assert_eq(zx_wait(fs, 3, ZX_FOREVER, ZX_FIRST_COMPLETED, done, &nd, not_done, &nn), ZX_OK);
    cr_assert_eq(nd, 1);
    cr_assert_eq(done[0], fs[1]);
    cr_assert_eq(nn, 2);
    cr_assert_eq(not_done[0], fs[0]);
    cr_assert_eq(not_done[1], fs[2]);
    s_unref_n(fs, 3);
}

typedef struct {
    zx_future_t *f;
    int how; /* 0 result, 1 exception, 2 cancel */
} later_t;

static void *s_later(void *p)
{
    later_t *l = p;
    /* completes once zx_wait has registered on the future, so the wake-up
       is what is tested */
    while (zx__future_waiting(l->f) == 0) {
        zclock_sleep(1);
    }
    if (l->how == 0) {
        zx__future_set_result(l->f, k_nil, 1);
    } else if (l->how == 1) {
        zx__future_set_exception(l->f, ZX_ERAISED, "E", "m", "", "", 0);
    } else {
        zx__future_set_cancelled(l->f, "");
    }
    return NULL;
}

Test(wait, first_completed_is_woken_by_completion, .timeout = 10)
{
    zx_future_t *fs[2];
    s_new_n(fs, 2);
    later_t l = {fs[0], 0};
    pthread_t t;
    pthread_create(&t, NULL, s_later, &l);
    size_t nd;
    cr_assert_eq(zx_wait(fs, 2, 10, ZX_FIRST_COMPLETED, NULL, &nd, NULL, NULL), ZX_OK);
    cr_assert_eq(nd, 1);
    pthread_join(t, NULL);
    s_unref_n(fs, 2);
}

Test(wait, first_exception_ignores_results_and_cancellations, .timeout = 10)
{
    zx_future_t *fs[4], *done[4];
    size_t nd, nn;
    s_new_n(fs, 4);
    zx__future_set_result(fs[0], k_nil, 1);
    zx__future_set_cancelled(fs[1], "");
    cr_assert_eq(zx_wait(fs, 4, 0.05, ZX_FIRST_EXCEPTION, done, &nd, NULL, &nn), ZX_ETIMEOUT,
                 "a result and a cancellation are not exceptions");
    cr_assert_eq(nd, 2);
    cr_assert_eq(nn, 2);
    later_t l = {fs[3], 1};
    pthread_t t;
    pthread_create(&t, NULL, s_later, &l);
    cr_assert_eq(zx_wait(fs, 4, 10, ZX_FIRST_EXCEPTION, done, &nd, NULL, &nn), ZX_OK);
    pthread_join(t, NULL);
    cr_assert_eq(nd, 3);
    cr_assert_eq(done[2], fs[3]);
    cr_assert_eq(nn, 1);
    s_unref_n(fs, 4);
}

Test(wait, first_exception_returns_when_all_complete_without_one, .timeout = 10)
{
    zx_future_t *fs[2];
    size_t nd;
    s_new_n(fs, 2);
    zx__future_set_result(fs[0], k_nil, 1);
    later_t l = {fs[1], 2};
    pthread_t t;
    pthread_create(&t, NULL, s_later, &l);
    cr_assert_eq(zx_wait(fs, 2, 10, ZX_FIRST_EXCEPTION, NULL, &nd, NULL, NULL), ZX_OK);
    pthread_join(t, NULL);
    cr_assert_eq(nd, 2);
    s_unref_n(fs, 2);
}

Test(wait, all_completed_waits_for_all_and_times_out_with_sets_filled, .timeout = 10)
{
    zx_future_t *fs[3], *done[4], *not_done[4];
    size_t nd, nn;
    s_new_n(fs, 3);
    zx__future_set_result(fs[0], k_nil, 1);
    zx__future_set_result(fs[2], k_nil, 1);
    zx_future_t *in[4] = {fs[0], fs[1], fs[2], fs[1]}; /* a duplicate */
    int64_t t0 = zclock_mono();
    cr_assert_eq(zx_wait(in, 4, 0.1, ZX_ALL_COMPLETED, done, &nd, not_done, &nn), ZX_ETIMEOUT);
    cr_assert_geq(zclock_mono() - t0, 90);
    cr_assert_eq(nd, 2);
    cr_assert_eq(nn, 1, "duplicates once");
    cr_assert_eq(not_done[0], fs[1]);
    later_t l = {fs[1], 1};
    pthread_t t;
    pthread_create(&t, NULL, s_later, &l);
    cr_assert_eq(zx_wait(in, 4, 10, ZX_ALL_COMPLETED, done, &nd, not_done, &nn), ZX_OK);
    pthread_join(t, NULL);
    cr_assert_eq(nd, 3);
    cr_assert_eq(nn, 0);
    cr_assert_eq(zx_wait(NULL, 0, 0, ZX_ALL_COMPLETED, NULL, &nd, NULL, NULL), ZX_OK);
    cr_assert_eq(nd, 0);
    cr_assert_eq(zx_wait(fs, 3, 0, (zx_return_when_t)7, NULL, NULL, NULL, NULL), ZX_EINVAL);
    s_unref_n(fs, 3);
}

Test(wait, works_on_local_executor_futures, .timeout = 30)
{
    zx_executor_t *ex = zx_executor_new_local(2);
    zxt_register_all(ex);
    zx_future_t *fs[20];
    for (int i = 0; i < 20; i++) {
        fs[i] = zxt_submit_int(ex, "fail_if", 2, i, 13);
    }
    size_t nd;
    cr_assert_eq(zx_wait(fs, 20, 10, ZX_FIRST_EXCEPTION, NULL, &nd, NULL, NULL), ZX_OK);
    cr_assert(zx_future_done(fs[13]));
    cr_assert_eq(zx_wait(fs, 20, 10, ZX_ALL_COMPLETED, NULL, &nd, NULL, NULL), ZX_OK);
    cr_assert_eq(nd, 20);
    s_unref_n(fs, 20);
    zx_executor_destroy(&ex);
}
