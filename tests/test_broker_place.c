/*  test_broker_place.c - unit tests of the broker's placement policy
    (broker/placement.c, compiled into this test) alone: fake pools and a
    fake clock, no sockets. The window starts at slots + the announced
    prefetch, stays there until ZXB_PLACE_FIRST results have given the pool
    a run-time estimate, widens for short tasks up to --prefetch-max,
    narrows back to the announced prefetch for long ones, and stops past the
    announced window while the pool's arguments in flight reach the byte
    budget.
*/
#include "../broker/placement.c"

#include <criterion/criterion.h>

/* the broker's defaults (broker/main.c) */
static const zxb_place_cfg_t s_cfg = {.target_ms = 2.0, .max = 1024, .bytes = 4ull << 20};

/* n tasks of run_us each, one after the other, on a fake clock. */
static void s_run(zxb_place_pool_t *pool, int n, int64_t run_us, int64_t *clock_us)
{
    for (int i = 0; i < n; i++) {
        zxb_place_on_start(pool, *clock_us);
        *clock_us += run_us;
        zxb_place_on_result(pool, true, *clock_us);
    }
}

Test(place, window_starts_at_slots_plus_announced_prefetch)
{
    zxb_place_pool_t pool;
    zxb_place_pool_init(&pool, 4, 1);
    cr_assert_eq(zxb_place_window(&pool), 5);
    cr_assert_eq(pool.run_us, 0);
    zxb_place_pool_t none;
    zxb_place_pool_init(&none, 0, 1);
    cr_assert_eq(zxb_place_window(&none), 0, "a pool the worker does not have takes nothing");
    cr_assert_not(zxb_place_has_credit(&s_cfg, &none));
    /* an absent pool is left alone by adapt */
    cr_assert_eq(zxb_place_adapt(&s_cfg, &none, 1000), 0);
}

Test(place, credit_up_to_the_window)
{
    zxb_place_pool_t pool;
    zxb_place_pool_init(&pool, 2, 1);
    for (uint32_t i = 0; i < 3; i++) {
        cr_assert(zxb_place_has_credit(&s_cfg, &pool), "task %u of a window of 3", i);
        pool.inflight++;
    }
    cr_assert_not(zxb_place_has_credit(&s_cfg, &pool));
    cr_assert_eq(zxb_place_free_slots(&pool), 0, "never fewer than none");
    pool.inflight = 1;
    cr_assert_eq(zxb_place_free_slots(&pool), 1);
}

Test(place, first_estimate_after_the_documented_results)
{
    zxb_place_pool_t pool;
    zxb_place_pool_init(&pool, 4, 1);
    int64_t now = 1000000;
    s_run(&pool, ZXB_PLACE_FIRST - 1, 10, &now);
    cr_assert_not(zxb_place_due(&s_cfg, &pool), "%d results are not enough", ZXB_PLACE_FIRST - 1);
    cr_assert_eq(zxb_place_window(&pool), 5);
    s_run(&pool, 1, 10, &now);
    cr_assert(zxb_place_due(&s_cfg, &pool));
    /* 10 us tasks, 4 slots, a target of 2 ms per slot: 4 * 2000 / 10 = 800 */
    cr_assert_eq(zxb_place_adapt(&s_cfg, &pool, now), 4 + 800);
    cr_assert_float_eq(pool.run_us, 10.0, 1e-9);
    cr_assert_eq(pool.nres, 0);
    cr_assert_not(zxb_place_due(&s_cfg, &pool), "measured: the next update is at the tick");
    s_run(&pool, ZXB_PLACE_EVERY, 10, &now);
    cr_assert(zxb_place_due(&s_cfg, &pool), "or after %d more results", ZXB_PLACE_EVERY);
}

Test(place, very_short_tasks_reach_the_maximum)
{
    zxb_place_pool_t pool;
    zxb_place_pool_init(&pool, 4, 1);
    int64_t now = 0;
    /* start and result in one loop turn: measured as 0 us, counted as 1 us */
    s_run(&pool, ZXB_PLACE_FIRST, 0, &now);
    cr_assert_eq(zxb_place_adapt(&s_cfg, &pool, now), 4 + 1024);
    cr_assert_float_eq(pool.run_us, 1.0, 1e-9);
}

Test(place, long_tasks_narrow_to_the_announced_prefetch)
{
    zxb_place_pool_t pool;
    zxb_place_pool_init(&pool, 4, 1);
    int64_t now = 5000;
    s_run(&pool, ZXB_PLACE_FIRST, 10, &now);
    cr_assert_eq(zxb_place_adapt(&s_cfg, &pool, now), 804);
    /* a phase of 100 ms tasks: the estimate moves halfway per update */
    s_run(&pool, 4, 100000, &now);
    cr_assert_eq(zxb_place_adapt(&s_cfg, &pool, now), 5);
    cr_assert_float_eq(pool.run_us, 0.5 * 10 + 0.5 * 100000, 1e-6);
}

Test(place, running_tasks_give_a_floor_before_they_end)
{
    zxb_place_pool_t pool;
    zxb_place_pool_init(&pool, 2, 1);
    int64_t now = 0;
    s_run(&pool, ZXB_PLACE_FIRST, 10, &now);
    cr_assert_eq(zxb_place_adapt(&s_cfg, &pool, now), 2 + 400);
    /* two tasks start and run for a whole second without ending */
    zxb_place_on_start(&pool, now);
    zxb_place_on_start(&pool, now);
    now += 1000000;
    cr_assert_eq(zxb_place_adapt(&s_cfg, &pool, now), 3, "they run at least 1 s each");
    cr_assert_float_eq(pool.run_us, 1000000.0, 1e-6);
}

Test(place, result_without_start_counts_as_no_time)
{
    zxb_place_pool_t pool;
    zxb_place_pool_init(&pool, 1, 1);
    for (int i = 0; i < ZXB_PLACE_FIRST; i++) {
        zxb_place_on_result(&pool, false, 100);
    }
    cr_assert(zxb_place_due(&s_cfg, &pool));
    cr_assert_eq(zxb_place_adapt(&s_cfg, &pool, 100), 1 + 1024);
}

Test(place, widened_part_stops_at_the_byte_budget)
{
    zxb_place_pool_t pool;
    zxb_place_pool_init(&pool, 2, 1);
    int64_t now = 0;
    s_run(&pool, ZXB_PLACE_FIRST, 10, &now);
    cr_assert_eq(zxb_place_adapt(&s_cfg, &pool, now), 402);
    pool.inflight = 3; /* the announced window is full */
    pool.bytes = s_cfg.bytes - 1;
    cr_assert(zxb_place_has_credit(&s_cfg, &pool));
    pool.bytes = s_cfg.bytes;
    cr_assert_not(zxb_place_has_credit(&s_cfg, &pool));
    pool.inflight = 2; /* within the announced window bytes do not matter */
    cr_assert(zxb_place_has_credit(&s_cfg, &pool));
}

Test(place, off_with_a_target_of_zero)
{
    const zxb_place_cfg_t off = {.target_ms = 0, .max = 1024, .bytes = 4ull << 20};
    zxb_place_pool_t pool;
    zxb_place_pool_init(&pool, 4, 1);
    int64_t now = 0;
    s_run(&pool, ZXB_PLACE_EVERY, 10, &now);
    cr_assert_not(zxb_place_adaptive(&off));
    cr_assert_not(zxb_place_due(&off, &pool));
    cr_assert(zxb_place_adaptive(&s_cfg));
    cr_assert_eq(zxb_place_window(&pool), 5);
}
