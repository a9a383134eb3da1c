/*  test_tpool.c - the worker's thread pool (worker/tpool.c) on its own:
    jobs pushed as one list run in order, cancelling the head, a middle or
    the tail of a pushed list leaves the rest queued and runnable, a job
    not pushed yet cannot be cancelled, drop_queued hands every queued job
    back in order, and every started and done event reaches the main loop
    through the pool's descriptor. */
#include "zx_task.h"
#include "zx_worker_int.h"

#include <criterion/criterion.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

/* The function every job runs: waits while the gate is closed, then
   records the order in which jobs ran (by their first argument). */
static atomic_bool s_gate_open;
static atomic_int s_ran[64];
static atomic_int s_nran;

static int s_gated(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    (void)task;
    while (!atomic_load(&s_gate_open)) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    int id = (int)args->via.array.ptr[0].via.i64;
    s_ran[atomic_fetch_add(&s_nran, 1)] = id;
    msgpack_pack_int(result, id);
    return 0;
}

static zxw_fn_t s_fn = {"gated", s_gated, ZX_POOLS_THREAD, false, 0};

static zxw_job_t s_jobs[16];

static zxw_job_t *s_job(int id)
{
    zxw_job_t *job = &s_jobs[id];
    memset(job, 0, sizeof *job);
    job->seq = (uint64_t)id;
    job->fn = &s_fn;
    job->pool = ZXP_POOL_THREAD;
    uint8_t args[2] = {0x91, (uint8_t)id}; /* [id] */
    job->args = zframe_new(args, sizeof args);
    return job;
}

/* Links jobs by tq_next into a list to push. */
static zxw_job_t *s_list(int n, const int *ids)
{
    for (int i = 0; i < n; i++) {
        s_job(ids[i]);
        s_jobs[ids[i]].tq_next = i + 1 < n ? &s_jobs[ids[i + 1]] : NULL;
    }
    return &s_jobs[ids[0]];
}

/* Takes events until the done ones reach want; returns the started count. */
static int s_collect(zxw_tpool_t *pool, int want_done, int *done_ids)
{
    int done = 0, started = 0;
    for (int rounds = 0; done < want_done && rounds < 5000; rounds++) {
        struct pollfd p = {zxw_tpool_fd(pool), POLLIN, 0};
        poll(&p, 1, 2);
        zxw_job_t *st, *dn;
        zxw_tpool_take(pool, &st, &dn, false);
        for (; st; st = st->started_next) {
            started++;
        }
        for (; dn; dn = dn->done_next) {
            cr_assert_eq(dn->state, ZXW_FINISHED, "job %d done in state %d", (int)dn->seq,
                         dn->state);
            done_ids[done++] = (int)dn->seq;
        }
    }
    cr_assert_eq(done, want_done, "%d of %d jobs done", done, want_done);
    return started;
}

static void s_free_jobs(void)
{
    for (size_t i = 0; i < sizeof s_jobs / sizeof s_jobs[0]; i++) {
        zframe_destroy(&s_jobs[i].args);
        zframe_destroy(&s_jobs[i].result);
    }
}

static void s_wait_started(zxw_tpool_t *pool, int n)
{
    for (int i = 0; i < 5000 && zxw_tpool_busy(pool) < (size_t)n; i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    cr_assert_eq(zxw_tpool_busy(pool), (size_t)n, "the pool never got busy");
}

Test(tpool, cancels_head_middle_and_tail_of_a_pushed_list, .timeout = 30)
{
    atomic_store(&s_gate_open, false);
    atomic_store(&s_nran, 0);
    zxw_tpool_t *pool = zxw_tpool_new(1);
    cr_assert_not_null(pool);
    zxw_tpool_push(pool, s_list(1, (int[]){1}));
    s_wait_started(pool, 1); /* job 1 holds the only thread */
    zxw_tpool_push(pool, s_list(5, (int[]){2, 3, 4, 5, 6}));
    cr_assert(zxw_tpool_cancel(pool, &s_jobs[4]), "middle");
    cr_assert(zxw_tpool_cancel(pool, &s_jobs[2]), "head");
    cr_assert(zxw_tpool_cancel(pool, &s_jobs[6]), "tail");
    cr_assert_not(zxw_tpool_cancel(pool, &s_jobs[6]), "cancelled twice");
    cr_assert_not(zxw_tpool_cancel(pool, &s_jobs[1]), "a running job is not cancelled");
    /* a job made but not pushed (state QUEUED, as a fresh job's is) */
    s_job(9);
    cr_assert_not(zxw_tpool_cancel(pool, &s_jobs[9]), "a job never pushed");
    zxw_tpool_push(pool, s_list(1, (int[]){7}));
    atomic_store(&s_gate_open, true);
    int done[8];
    s_collect(pool, 4, done);
    cr_assert_eq(atomic_load(&s_nran), 4);
    int want[4] = {1, 3, 5, 7}; /* one thread: queue order, job 7 pushed after the cancels */
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(s_ran[i], want[i], "run %d was job %d", i, s_ran[i]);
        cr_assert_eq(done[i], want[i], "done %d was job %d", i, done[i]);
    }
    cr_assert_eq(s_jobs[2].state, ZXW_CANCELLED);
    cr_assert_eq(s_jobs[4].state, ZXW_CANCELLED);
    cr_assert_eq(s_jobs[6].state, ZXW_CANCELLED);
    cr_assert(zxw_tpool_destroy(&pool));
    s_free_jobs();
}

static int s_dropped[16];
static int s_ndropped;

static void s_on_drop(void *arg, zxw_job_t *job)
{
    (void)arg;
    cr_assert_eq(job->state, ZXW_CANCELLED);
    cr_assert_null(job->tq_next, "a dropped job keeps a queue link");
    s_dropped[s_ndropped++] = (int)job->seq;
}

Test(tpool, drop_queued_returns_the_queue_in_order, .timeout = 30)
{
    atomic_store(&s_gate_open, false);
    atomic_store(&s_nran, 0);
    s_ndropped = 0;
    zxw_tpool_t *pool = zxw_tpool_new(2);
    cr_assert_not_null(pool);
    zxw_tpool_push(pool, s_list(2, (int[]){1, 2}));
    s_wait_started(pool, 2);
    zxw_tpool_push(pool, s_list(3, (int[]){3, 4, 5}));
    zxw_tpool_push(pool, s_list(2, (int[]){6, 7}));
    cr_assert(zxw_tpool_cancel(pool, &s_jobs[5]));
    zxw_tpool_drop_queued(pool, s_on_drop, NULL);
    cr_assert_eq(s_ndropped, 4);
    int want[4] = {3, 4, 6, 7};
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(s_dropped[i], want[i], "dropped %d: job %d", i, s_dropped[i]);
    }
    /* the queue is empty and usable again */
    zxw_tpool_push(pool, s_list(2, (int[]){8, 9}));
    atomic_store(&s_gate_open, true);
    int done[8];
    s_collect(pool, 4, done);
    cr_assert_eq(atomic_load(&s_nran), 4, "only the running and the new jobs ran");
    cr_assert(zxw_tpool_destroy(&pool));
    s_free_jobs();
}

Test(tpool, many_lists_on_two_threads_all_report_done, .timeout = 60)
{
    atomic_store(&s_gate_open, true);
    zxw_tpool_t *pool = zxw_tpool_new(2);
    cr_assert_not_null(pool);
    /* 200 rounds of a 12-job list: every job done exactly once per round */
    for (int round = 0; round < 200; round++) {
        atomic_store(&s_nran, 0);
        int ids[12];
        for (int i = 0; i < 12; i++) {
            ids[i] = i + 1;
        }
        zxw_tpool_push(pool, s_list(12, ids));
        int done[12], seen[13] = {0};
        s_collect(pool, 12, done);
        for (int i = 0; i < 12; i++) {
            cr_assert_eq(seen[done[i]]++, 0, "round %d: job %d done twice", round, done[i]);
        }
        cr_assert_eq(zxw_tpool_busy(pool), 0);
        s_free_jobs();
    }
    cr_assert(zxw_tpool_destroy(&pool));
}

/* A second gate, for a job that must keep running while the first job's
   result is awaited. */
static atomic_bool s_gate2_open;

static int s_gated2(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    while (!atomic_load(&s_gate2_open)) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return s_gated(task, args, result);
}

static zxw_fn_t s_fn2 = {"gated2", s_gated2, ZX_POOLS_THREAD, false, 0};

Test(tpool, a_result_under_load_reaches_the_loop_while_the_next_task_runs, .timeout = 30)
{
    /* one thread, job 1 then job 2: job 1's result waits for company (the
       thread has job 2 to run) but must still reach the loop, promptly,
       while job 2 runs on */
    atomic_store(&s_gate_open, false);
    atomic_store(&s_gate2_open, false);
    atomic_store(&s_nran, 0);
    zxw_tpool_t *pool = zxw_tpool_new(1);
    cr_assert_not_null(pool);
    zxw_job_t *list = s_list(2, (int[]){1, 2});
    s_jobs[2].fn = &s_fn2;
    zxw_tpool_push(pool, list);
    s_wait_started(pool, 1);
    zxw_job_t *st, *dn;
    zxw_tpool_take(pool, &st, &dn, true); /* job 1's start, and its timer */
    atomic_store(&s_gate_open, true);     /* job 1 ends; job 2 blocks on gate 2 */
    int64_t t0 = zclock_mono();
    zxw_job_t *got = NULL;
    /* only a wake-up of the pool's descriptor lets the loop take events */
    while (!got && zclock_mono() - t0 < 3000) {
        struct pollfd p = {zxw_tpool_fd(pool), POLLIN, 0};
        if (poll(&p, 1, 3000) == 1) {
            zxw_tpool_take(pool, &st, &dn, false);
            got = dn;
        }
    }
    /* without a wake-up, poll runs out and got stays NULL */
    cr_assert_not_null(got, "job 1's result never reached the loop while job 2 ran");
    cr_assert_eq(got->seq, 1);
    cr_assert_null(got->done_next, "job 2 reported done while it still runs");
    cr_assert_eq(zxw_tpool_busy(pool), 1, "job 2 runs");
    atomic_store(&s_gate2_open, true);
    int done[2];
    s_collect(pool, 1, done);
    cr_assert_eq(done[0], 2);
    cr_assert(zxw_tpool_destroy(&pool));
    s_free_jobs();
}
