/*  test_sched.c - scheduling with the real zexec-broker and zexec-worker
    (issue 14): no task waits, queued at the broker or prefetched at a node,
    while a slot that could run it is idle.

    The situations of the issue, each on loopback with 1 s tasks (the
    worker's `sleep` built-in, or `exec` of a shell that leaves a trace per
    run). The machine may be loaded, so nothing here asserts how long a
    schedule took: each test asserts the schedule itself, from where each
    task ran (its result's node and pid: the worker's own pid for its thread
    pool, a child's for its process pool), how many ran on each node, and,
    from the traces, that no task ran twice.
*/
#include "zx_testutil.h"
#include "zexec.h"

#include <criterion/criterion.h>
#include <czmq.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static zxt_cluster_t C;

static void s_stop_all(void)
{
    zxt_cluster_stop(&C);
}

TestSuite(sched, .fini = s_stop_all, .timeout = 120);

static zx_executor_t *s_connect(void)
{
    zx_options_t o = {0};
    o.heartbeat = 0.2;
    o.liveness = 3;
    o.broker_timeout = 60;
    zx_executor_t *ex = zx_executor_new(C.client_ep, &o);
    cr_assert(ex);
    return ex;
}

static zx_future_t *s_sleep(zx_executor_t *ex, double secs, zx_pool_t pool)
{
    zx_task_opts_t to = {.pool = pool};
    uint8_t buf[16];
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_double(&pk, secs);
    cr_assert_leq(sb.size, sizeof buf);
    memcpy(buf, sb.data, sb.size);
    size_t n = sb.size;
    msgpack_sbuffer_destroy(&sb);
    zx_future_t *f = zx_submit_opts(ex, "sleep", buf, n, &to);
    cr_assert(f);
    return f;
}

/* exec of `sh -c 'echo run >> DIR/task-I; sleep SECS'` in the process pool:
   every run of task I leaves one line in its file. */
static zx_future_t *s_traced(zx_executor_t *ex, const char *dir, int i, double secs)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "echo run >> %s/task-%d; sleep %g", dir, i, secs);
    const char *argv[] = {"sh", "-c", cmd};
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_array(&pk, 3);
    for (int k = 0; k < 3; k++) {
        size_t len = strlen(argv[k]);
        msgpack_pack_str(&pk, len);
        msgpack_pack_str_body(&pk, argv[k], len);
    }
    zx_task_opts_t to = {.pool = ZX_POOL_PROCESS};
    zx_future_t *f = zx_submit_opts(ex, "exec", sb.data, sb.size, &to);
    msgpack_sbuffer_destroy(&sb);
    cr_assert(f);
    return f;
}

/* Every task of the traced ones ran exactly once. */
static void s_assert_once(const char *dir, int n)
{
    for (int i = 0; i < n; i++) {
        char path[600];
        snprintf(path, sizeof path, "%s/task-%d", dir, i);
        FILE *f = fopen(path, "r");
        cr_assert(f, "task %d never ran", i);
        int lines = 0, c;
        while ((c = fgetc(f)) != EOF) {
            lines += c == '\n';
        }
        fclose(f);
        cr_assert_eq(lines, 1, "task %d ran %d times", i, lines);
        unlink(path);
    }
    rmdir(dir);
}

static void s_assert_ok(zx_future_t *f)
{
    const zx_error_t *e = zx_future_exception(f, 60);
    cr_assert_null(e, "task failed: %s %s: %s", e ? zx_strerror(e->code) : "", e ? e->type : "",
                   e ? e->message : "");
}

static bool s_streq(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

/* Rounds of short tasks until both nodes have run some: both are then
   registered, and `echo` is measured short. */
static void s_burst_until_both(zx_executor_t *ex, const char *a, const char *b)
{
    enum { ROUND = 2048 };
    zx_future_t **fs = calloc(ROUND, sizeof *fs);
    bool seen_a = false, seen_b = false;
    int64_t end = zclock_mono() + 30000;
    while (!(seen_a && seen_b) && zclock_mono() < end) {
        for (int i = 0; i < ROUND; i++) {
            fs[i] = zx_submitf(ex, "echo", "i", i);
            cr_assert(fs[i]);
        }
        for (int i = 0; i < ROUND; i++) {
            cr_assert_eq(zx_future_result(fs[i], 30, NULL, NULL), ZX_OK);
            seen_a |= s_streq(zx_future_node(fs[i]), a);
            seen_b |= s_streq(zx_future_node(fs[i]), b);
            zx_future_unref(&fs[i]);
        }
    }
    free(fs);
    cr_assert(seen_a && seen_b);
}

static bool s_running_n(void *arg)
{
    zx_future_t **fs = arg;
    int n = 0;
    for (int i = 0; fs[i]; i++) {
        n += zx_future_running(fs[i]) || zx_future_done(fs[i]);
    }
    return n >= 2;
}

static bool s_any_running(void *arg)
{
    zx_future_t **fs = arg;
    for (int i = 0; fs[i]; i++) {
        if (zx_future_running(fs[i])) {
            return true;
        }
    }
    return false;
}

/* Situation 1: after a burst of short tasks, 8 x 1 s on two workers of 2
   threads took 3 s: the first worker's window had widened on the echoes
   and the long tasks queued there. Now `sleep` is unknown, goes to free
   slots only, and each worker runs 4 (two rounds of two: about 2 s). */
Test(sched, long_tasks_after_a_burst_of_short_ones_spread_over_both_workers)
{
    cr_assert_eq(zxt_broker_start(&C, NULL), 0);
    const char *extra[] = {"--threads", "2", "--procs", "0", NULL};
    cr_assert_gt(zxt_worker_start(&C, "s1", extra), 0);
    cr_assert_gt(zxt_worker_start(&C, "s2", extra), 0);
    zx_executor_t *ex = s_connect();
    s_burst_until_both(ex, "s1", "s2");
    zx_future_t *fs[8];
    for (int i = 0; i < 8; i++) {
        fs[i] = s_sleep(ex, 1.0, ZX_POOL_ANY);
    }
    int on1 = 0, on2 = 0;
    for (int i = 0; i < 8; i++) {
        s_assert_ok(fs[i]);
        on1 += s_streq(zx_future_node(fs[i]), "s1");
        on2 += s_streq(zx_future_node(fs[i]), "s2");
        zx_future_unref(&fs[i]);
    }
    cr_assert_eq(on1, 4, "s1 ran %d of the 8 (s2: %d): they queued at one worker", on1, on2);
    cr_assert_eq(on2, 4, "s2 ran %d of the 8 (s1: %d)", on2, on1);
    zx_executor_destroy(&ex);
}

/* Situation 3: one worker with 2 threads and 2 processes, 4 x 1 s with the
   default pool (any): two run in each pool, all four at once (about 1 s),
   none behind a busy thread while a process slot idles. */
Test(sched, pool_any_takes_idle_slots_in_both_pools)
{
    cr_assert_eq(zxt_broker_start(&C, NULL), 0);
    const char *extra[] = {"--threads", "2", "--procs", "2", NULL};
    pid_t wpid = zxt_worker_start(&C, "both", extra);
    cr_assert_gt(wpid, 0);
    zx_executor_t *ex = s_connect();
    /* registered once a task has run there */
    zx_future_t *probe = zx_submitf(ex, "echo", "i", 1);
    cr_assert_eq(zx_future_result(probe, 30, NULL, NULL), ZX_OK);
    zx_future_unref(&probe);
    zx_future_t *fs[4];
    for (int i = 0; i < 4; i++) {
        fs[i] = s_sleep(ex, 1.0, ZX_POOL_ANY);
    }
    int threads = 0, procs = 0;
    for (int i = 0; i < 4; i++) {
        s_assert_ok(fs[i]);
        if (zx_future_pid(fs[i]) == wpid) {
            threads++;
        } else {
            procs++;
        }
        zx_future_unref(&fs[i]);
    }
    cr_assert_eq(threads, 2, "%d in the thread pool, %d in the process pool", threads, procs);
    cr_assert_eq(procs, 2, "%d in the thread pool, %d in the process pool", threads, procs);
    zx_executor_destroy(&ex);
}

/* Situation 2: 8 x 1 s queued for one worker of 2 threads; a second joins
   while the first two run and takes its share (about 2.3 s instead of 4). */
Test(sched, a_late_worker_takes_queued_tasks)
{
    cr_assert_eq(zxt_broker_start(&C, NULL), 0);
    const char *extra[] = {"--threads", "2", "--procs", "0", NULL};
    cr_assert_gt(zxt_worker_start(&C, "early", extra), 0);
    zx_executor_t *ex = s_connect();
    zx_future_t *fs[9] = {0};
    for (int i = 0; i < 8; i++) {
        fs[i] = s_sleep(ex, 1.0, ZX_POOL_ANY);
    }
    cr_assert(zxt_wait_for(s_running_n, fs, 30));
    cr_assert_gt(zxt_worker_start(&C, "late", extra), 0);
    int late = 0;
    for (int i = 0; i < 8; i++) {
        s_assert_ok(fs[i]);
        late += s_streq(zx_future_node(fs[i]), "late");
        zx_future_unref(&fs[i]);
    }
    /* it takes 2 when it registers; a second round of 2 unless the early
       worker's slots freed before it registered */
    cr_assert_geq(late, 2, "the late worker ran %d of 8", late);
    zx_executor_destroy(&ex);
}

/* The same with every task already prefetched at the first worker (the
   broker's fixed window, --prefetch-target-ms 0, and a worker asking for
   6 beyond its 2 slots): the late worker withdraws what has not started,
   and no task runs twice. */
Test(sched, a_late_worker_withdraws_prefetched_tasks_and_none_runs_twice)
{
    const char *bargs[] = {"--prefetch-target-ms", "0", NULL};
    cr_assert_eq(zxt_broker_start(&C, bargs), 0);
    const char *early[] = {"--threads",  "1", "--procs",      "2",
                           "--prefetch", "6", "--allow-exec", NULL};
    cr_assert_gt(zxt_worker_start(&C, "early", early), 0);
    char dir[] = "/tmp/zexec-test-sched-XXXXXX";
    cr_assert(mkdtemp(dir));
    zx_executor_t *ex = s_connect();
    zx_future_t *fs[9] = {0};
    for (int i = 0; i < 8; i++) {
        fs[i] = s_traced(ex, dir, i, 1.0);
    }
    cr_assert(zxt_wait_for(s_running_n, fs, 30));
    const char *late_args[] = {"--threads", "1", "--procs", "2", "--allow-exec", NULL};
    cr_assert_gt(zxt_worker_start(&C, "late", late_args), 0);
    int late = 0;
    for (int i = 0; i < 8; i++) {
        s_assert_ok(fs[i]);
        late += s_streq(zx_future_node(fs[i]), "late");
        zx_future_unref(&fs[i]);
    }
    cr_assert_geq(late, 2, "the late worker ran %d of 8 prefetched elsewhere", late);
    s_assert_once(dir, 8);
    zx_executor_destroy(&ex);
}

/* A draining worker (SIGTERM) gives back what it has not started at once:
   the other worker starts one of them while the drained worker's own two
   still run (before, they came back only with its BYE, after those). */
Test(sched, a_draining_worker_gives_back_its_unstarted_tasks_at_once)
{
    /* no withdrawal for idle slots here: only the drain gives tasks back */
    const char *bargs[] = {"--prefetch-target-ms", "0", "--steal-after-ms", "3600000", NULL};
    cr_assert_eq(zxt_broker_start(&C, bargs), 0);
    const char *a_args[] = {"--threads",  "1", "--procs",      "2",
                            "--prefetch", "6", "--allow-exec", NULL};
    pid_t a = zxt_worker_start(&C, "drained", a_args);
    cr_assert_gt(a, 0);
    char dir[] = "/tmp/zexec-test-sched-XXXXXX";
    cr_assert(mkdtemp(dir));
    zx_executor_t *ex = s_connect();
    zx_future_t *fs[9] = {0};
    for (int i = 0; i < 8; i++) {
        fs[i] = s_traced(ex, dir, i, 2.0);
    }
    cr_assert(zxt_wait_for(s_running_n, fs, 30));
    const char *b_args[] = {"--threads", "1", "--procs", "2", "--allow-exec", NULL};
    cr_assert_gt(zxt_worker_start(&C, "other", b_args), 0);
    /* the other worker registered: a thread-pool task runs there (the
       drained worker's thread is free too, so wait until one lands there) */
    bool seen = false;
    int64_t until = zclock_mono() + 30000;
    for (int round = 0; !seen && zclock_mono() < until; round++) {
        zx_future_t *p = zx_submitf(ex, "echo", "i", round);
        cr_assert_eq(zx_future_result(p, 30, NULL, NULL), ZX_OK);
        seen = s_streq(zx_future_node(p), "other");
        zx_future_unref(&p);
    }
    cr_assert(seen, "the second worker never ran a task");
    /* the two that run on the drained worker, and the six that wait there */
    zx_future_t *waiting[9] = {0}, *runs[3] = {0};
    int nw = 0, nr = 0;
    for (int i = 0; i < 8; i++) {
        if (zx_future_running(fs[i]) && nr < 2) {
            runs[nr++] = fs[i];
        } else {
            waiting[nw++] = fs[i];
        }
    }
    cr_assert_eq(nr, 2);
    kill(a, SIGTERM);
    cr_assert(zxt_wait_for(s_any_running, waiting, 30));
    /* a task given back started while the drained worker's own still ran */
    cr_assert_not(zx_future_done(runs[0]) && zx_future_done(runs[1]),
                  "the tasks came back only after the running ones ended");
    int drained = 0;
    for (int i = 0; i < 8; i++) {
        s_assert_ok(fs[i]);
        drained += s_streq(zx_future_node(fs[i]), "drained");
    }
    cr_assert_eq(drained, 2, "the drained worker ran %d (the 2 it had started)", drained);
    for (int i = 0; i < 8; i++) {
        zx_future_unref(&fs[i]);
    }
    s_assert_once(dir, 8);
    zx_executor_destroy(&ex);
}
