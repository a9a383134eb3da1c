/*  test_local.c - the in-process executor (libclient/local.c) and the public
    submit functions (libclient/executor.c): running registered functions,
    errors, cancel against start, time limits, shutdown, submitf formats, and
    a many-thread stress test (also run under ThreadSanitizer). */
#include "zexec.h"
#include "zx_test_fns.h"

#include <criterion/criterion.h>
#include <czmq.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

Test(local, runs_a_registered_function_and_reports_local_origin, .timeout = 30)
{
    zx_executor_t *ex = zx_executor_new_local(2);
    cr_assert_not_null(ex);
    zxt_register_all(ex);
    cr_assert_str_eq(zx_executor_endpoint(ex), "local");
    zx_future_t *f = zxt_submit_int(ex, "square", 1, 12, 0);
    cr_assert_not_null(f);
    cr_assert_str_eq(zx_future_fn(f), "square");
    cr_assert_eq(zxt_result_int(f, 10), 144);
    cr_assert_eq(zx_future_state(f), ZX_FINISHED);
    cr_assert_str_eq(zx_future_node(f), "local");
    cr_assert_eq(zx_future_pid(f), getpid());
    zx_future_unref(&f);

    f = zxt_submit_int(ex, "fail_if", 2, 5, 5);
    cr_assert_eq(zx_future_result(f, 10, NULL, NULL), ZX_ERAISED);
    const zx_error_t *e = zx_future_exception(f, 0);
    cr_assert_eq(e->code, ZX_ERAISED);
    cr_assert_str_eq(e->type, "ValueError");
    cr_assert_str_eq(e->message, "bad input 5");
    cr_assert_str_eq(e->node, "local");
    cr_assert_eq(e->pid, getpid());
    zx_future_unref(&f);
    zx_executor_destroy(&ex);
    cr_assert_null(ex);
}

Test(local, unknown_function_fails_with_nofunc, .timeout = 30)
{
    zx_executor_t *ex = zx_executor_new_local(1);
    zx_future_t *f = zxt_submit_int(ex, "nope", 0, 0, 0);
    cr_assert_not_null(f, "unknown names fail the future, not the submit");
    cr_assert_eq(zx_future_result(f, 10, NULL, NULL), ZX_ERAISED);
    const zx_error_t *e = zx_future_exception(f, 0);
    cr_assert_eq(e->code, ZX_ENOFUNC);
    cr_assert_str_eq(e->type, "NoFunctionError");
    zx_future_unref(&f);
    zx_executor_destroy(&ex);
}

Test(local, bad_arguments_are_rejected_at_submit, .timeout = 30)
{
    zx_executor_t *ex = zx_executor_new_local(1);
    zxt_register_all(ex);
    static const unsigned char not_array[] = {0x01};
    static const unsigned char truncated[] = {0x92, 0x01};
    cr_assert_null(zx_submit(ex, "square", not_array, sizeof not_array));
    cr_assert_eq(zx_last_error(), ZX_EINVAL);
    cr_assert_null(zx_submit(ex, "square", truncated, sizeof truncated));
    cr_assert_eq(zx_last_error(), ZX_EINVAL);
    cr_assert_null(zx_submit(ex, "", "\x90", 1));
    cr_assert_eq(zx_last_error(), ZX_EINVAL);
    cr_assert_null(zx_submit(NULL, "square", "\x90", 1));
    zx_task_opts_t bad = {.priority = 1000};
    cr_assert_null(zx_submit_opts(ex, "square", "\x91\x01", 2, &bad));
    cr_assert_eq(zx_last_error(), ZX_EINVAL);
    cr_assert_eq(zx_executor_register(ex, "", zxt_fn_square), ZX_EINVAL);
    cr_assert_eq(zx_executor_register(ex, "x", NULL), ZX_EINVAL);
    zx_executor_destroy(&ex);
}

Test(local, cancel_pending_succeeds_and_the_task_never_runs, .timeout = 30)
{
    zxt_gate_reset();
    zx_executor_t *ex = zx_executor_new_local(1);
    zxt_register_all(ex);
    zx_future_t *blocker = zxt_submit_int(ex, "block", 1, 1, 0);
    cr_assert(zxt_gate_wait_started(1, 10));
    zx_future_t *queued = zxt_submit_int(ex, "trace", 0, 0, 0);
    cr_assert_eq(zx_future_state(queued), ZX_PENDING);
    cr_assert(zx_future_cancel(queued));
    cr_assert(zx_future_cancelled(queued));
    cr_assert_eq(zx_future_result(queued, 0, NULL, NULL), ZX_ECANCELLED);
    cr_assert(zx_future_cancel(queued), "cancel again stays true");
    zxt_gate_open();
    cr_assert_eq(zxt_result_int(blocker, 10), 1);
    zx_executor_shutdown(ex, true, false);
    cr_assert_eq(atomic_load(&zxt_trace), 1, "only the blocker ran");
    zx_future_unref(&blocker);
    zx_future_unref(&queued);
    zx_executor_destroy(&ex);
}

Test(local, cancel_running_fails_and_the_task_completes, .timeout = 30)
{
    zxt_gate_reset();
    zx_executor_t *ex = zx_executor_new_local(1);
    zxt_register_all(ex);
    zx_future_t *f = zxt_submit_int(ex, "block", 1, 7, 0);
    cr_assert(zxt_gate_wait_started(1, 10));
    cr_assert_eq(zx_future_state(f), ZX_RUNNING);
    cr_assert(zx_future_running(f));
    cr_assert_not(zx_future_cancel(f));
    cr_assert_not(zx_future_terminate(f), "thread-pool tasks cannot be terminated");
    zxt_gate_open();
    cr_assert_eq(zxt_result_int(f, 10), 7);
    cr_assert_not(zx_future_cancel(f), "finished: false");
    zx_future_unref(&f);
    zx_executor_destroy(&ex);
}

Test(local, result_timeout_leaves_the_task_to_complete_later, .timeout = 30)
{
    zxt_gate_reset();
    zx_executor_t *ex = zx_executor_new_local(1);
    zxt_register_all(ex);
    zx_future_t *f = zxt_submit_int(ex, "block", 1, 3, 0);
    cr_assert(zxt_gate_wait_started(1, 10));
    cr_assert_eq(zx_future_result(f, 0.1, NULL, NULL), ZX_ETIMEOUT);
    cr_assert_eq(zx_future_exception(f, 0)->code, ZX_ETIMEOUT);
    cr_assert_eq(zx_future_state(f), ZX_RUNNING);
    zxt_gate_open();
    cr_assert_eq(zxt_result_int(f, ZX_FOREVER), 3);
    zx_future_unref(&f);
    zx_executor_destroy(&ex);
}

/* result() spins (yields) for up to ZEXEC_SPIN_US before it sleeps
   (libclient/future.c). Criterion runs each test in its own process, and
   the bound is read at the process's first wait. */
Test(local, waiting_spin_never_passes_the_timeout, .timeout = 30)
{
    setenv("ZEXEC_SPIN_US", "1000000", 1); /* a bound far past the timeout */
    zxt_gate_reset();
    zx_executor_t *ex = zx_executor_new_local(1);
    zxt_register_all(ex);
    zx_future_t *f = zxt_submit_int(ex, "block", 1, 7, 0);
    cr_assert(zxt_gate_wait_started(1, 10));
    int64_t t0 = zclock_usecs();
    cr_assert_eq(zx_future_result(f, 0.05, NULL, NULL), ZX_ETIMEOUT);
    int64_t dt = zclock_usecs() - t0;
    cr_assert(dt >= 50000 && dt < 500000, "waited %lld us for a 50 ms timeout", (long long)dt);
    zxt_gate_open();
    cr_assert_eq(zxt_result_int(f, ZX_FOREVER), 7);
    zx_future_unref(&f);
    zx_executor_destroy(&ex);
}

Test(local, waiting_spin_ends_when_the_future_completes, .timeout = 30)
{
    setenv("ZEXEC_SPIN_US", "1000000", 1);
    zx_executor_t *ex = zx_executor_new_local(1);
    zxt_register_all(ex);
    /* 20 ms of work: done while the waiter still spins; the wait must end
       then, not at the 1 s bound */
    zx_future_t *f = zxt_submit_int(ex, "spin_ms", 1, 20, 0);
    int64_t t0 = zclock_usecs();
    cr_assert_eq(zx_future_result(f, 10, NULL, NULL), ZX_OK);
    int64_t dt = zclock_usecs() - t0;
    cr_assert(dt < 500000, "waited %lld us for a 20 ms task", (long long)dt);
    zx_future_unref(&f);
    zx_executor_destroy(&ex);
}

static pthread_t s_cb_thread;
static atomic_int s_cb_calls;

static void s_cb(zx_future_t *f, void *arg)
{
    s_cb_thread = pthread_self();
    cr_assert(zx_future_done(f));
    atomic_fetch_add(&s_cb_calls, 1);
}

Test(local, done_callback_runs_once_on_the_pool_thread, .timeout = 30)
{
    zxt_gate_reset();
    atomic_store(&s_cb_calls, 0);
    zx_executor_t *ex = zx_executor_new_local(1);
    zxt_register_all(ex);
    zx_future_t *f = zxt_submit_int(ex, "block", 1, 1, 0);
    zx_future_add_done_callback(f, s_cb, NULL);
    zxt_gate_open();
    zxt_result_int(f, 10);
    zx_executor_shutdown(ex, true, false); /* the callback has returned too */
    cr_assert_eq(atomic_load(&s_cb_calls), 1);
    cr_assert_not(pthread_equal(s_cb_thread, pthread_self()));
    zx_future_add_done_callback(f, s_cb, NULL);
    cr_assert_eq(atomic_load(&s_cb_calls), 2);
    cr_assert(pthread_equal(s_cb_thread, pthread_self()));
    zx_future_unref(&f);
    zx_executor_destroy(&ex);
}

Test(local, time_limit_fails_the_future_at_the_deadline, .timeout = 30)
{
    zx_executor_t *ex = zx_executor_new_local(1);
    zxt_register_all(ex);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    zxt_args_int(&sb, 1, 20000, 0); /* would spin 20 s, but checks expiry */
    zx_task_opts_t opts = {.time_limit = 0.2};
    int64_t t0 = zclock_mono();
    zx_future_t *f = zx_submit_opts(ex, "spin_ms", sb.data, sb.size, &opts);
    cr_assert_eq(zx_future_result(f, 10, NULL, NULL), ZX_ERAISED);
    int64_t took = zclock_mono() - t0;
    const zx_error_t *e = zx_future_exception(f, 0);
    cr_assert_eq(e->code, ZX_ETIMELIMIT);
    cr_assert_str_eq(e->type, "TimeLimitError");
    /* at the deadline, not before it; a limit that never fired would leave
       result() to its own 10 s timeout (ZX_ETIMEOUT), not TimeLimitError */
    cr_assert_geq(took, 190);
    /* a task inside its limit is unaffected */
    zxt_args_int(&sb, 1, 1, 0);
    opts.time_limit = 5;
    zx_future_t *g = zx_submit_opts(ex, "spin_ms", sb.data, sb.size, &opts);
    cr_assert_eq(zx_future_result(g, 10, NULL, NULL), ZX_OK);
    msgpack_sbuffer_destroy(&sb);
    zx_future_unref(&f);
    zx_future_unref(&g);
    zx_executor_destroy(&ex);
}

/* A future failed by its time limit completes on the executor's timer
   thread, so its done-callbacks run there. A callback that shuts the executor
   down with wait must not join the timer thread from itself (it once did:
   EDEADLK was ignored, the executor counted as joined, and the destroy that
   followed freed it under the running timer thread, a heap-use-after-free
   under ASan). */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread;
    int shutdown_rc;
    bool shut_down;        /* the callback's shutdown(wait) returned */
    bool destroy_returned; /* the test's zx_executor_destroy returned */
    bool callback_returned;
} s_tl = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static void s_tl_wait(bool *flag, int64_t ms)
{
    int64_t end = zclock_mono() + ms;
    while (!*flag && zclock_mono() < end) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 10 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s_tl.cond, &s_tl.lock, &ts);
    }
}

static void s_tl_cb(zx_future_t *f, void *arg)
{
    zx_executor_t *ex = arg;
    zxt_gate_open(); /* lets the pool thread finish its (late) task */
    int rc = zx_executor_shutdown(ex, true, false);
    pthread_mutex_lock(&s_tl.lock);
    s_tl.thread = pthread_self();
    s_tl.shutdown_rc = rc;
    s_tl.shut_down = true;
    pthread_cond_broadcast(&s_tl.cond);
    /* Stay in the callback while the test destroys the executor: a correct
       destroy waits for this thread, so destroy_returned cannot become true
       here and the wait ends at its bound; the old destroy returned at once
       and freed the executor this thread goes back to. */
    s_tl_wait(&s_tl.destroy_returned, 300);
    s_tl.callback_returned = true;
    pthread_mutex_unlock(&s_tl.lock);
}

Test(local, shutdown_wait_from_a_time_limit_callback_does_not_wait, .timeout = 30)
{
    zxt_gate_reset();
    zx_executor_t *ex = zx_executor_new_local(1);
    zxt_register_all(ex);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    zxt_args_int(&sb, 1, 1, 0);
    /* "block" waits for the gate and never checks its limit, so it is the
       timer thread, not the pool thread, that fails the future */
    zx_task_opts_t opts = {.time_limit = 0.05};
    zx_future_t *f = zx_submit_opts(ex, "block", sb.data, sb.size, &opts);
    msgpack_sbuffer_destroy(&sb);
    cr_assert_not_null(f);
    cr_assert_eq(zx_future_add_done_callback(f, s_tl_cb, ex), ZX_OK);
    cr_assert_eq(zx_future_result(f, 10, NULL, NULL), ZX_ERAISED);
    cr_assert_eq(zx_future_exception(f, 0)->code, ZX_ETIMELIMIT);

    pthread_mutex_lock(&s_tl.lock);
    s_tl_wait(&s_tl.shut_down, 10000);
    cr_assert(s_tl.shut_down, "the callback's shutdown(wait) returned");
    cr_assert_eq(s_tl.shutdown_rc, ZX_OK);
    cr_assert_not(pthread_equal(s_tl.thread, pthread_self()));
    pthread_mutex_unlock(&s_tl.lock);

    zx_executor_destroy(&ex); /* joins the timer thread: the callback is over */
    pthread_mutex_lock(&s_tl.lock);
    bool callback_over = s_tl.callback_returned;
    s_tl.destroy_returned = true;
    pthread_cond_broadcast(&s_tl.cond);
    s_tl_wait(&s_tl.callback_returned, 10000);
    pthread_mutex_unlock(&s_tl.lock);
    cr_assert_eq(atomic_load(&zxt_trace), 1, "the timed-out task ran once");
    cr_assert(callback_over, "destroy returned before the callback did");
    zx_future_unref(&f);
}

Test(local, shutdown_cancel_futures_cancels_queued_and_rejects_submits, .timeout = 30)
{
    zxt_gate_reset();
    zx_executor_t *ex = zx_executor_new_local(1);
    zxt_register_all(ex);
    zx_future_t *running = zxt_submit_int(ex, "block", 1, 1, 0);
    cr_assert(zxt_gate_wait_started(1, 10));
    zx_future_t *queued[5];
    for (int i = 0; i < 5; i++) {
        queued[i] = zxt_submit_int(ex, "trace", 0, 0, 0);
    }
    cr_assert_eq(zx_executor_shutdown(ex, false, true), ZX_OK);
    for (int i = 0; i < 5; i++) {
        cr_assert(zx_future_cancelled(queued[i]), "queued %d cancelled", i);
    }
    cr_assert_null(zxt_submit_int(ex, "trace", 0, 0, 0));
    cr_assert_eq(zx_last_error(), ZX_ESHUTDOWN);
    cr_assert_eq(zx_future_state(running), ZX_RUNNING, "started tasks go on");
    zxt_gate_open();
    cr_assert_eq(zx_executor_shutdown(ex, true, false), ZX_OK, "idempotent");
    cr_assert(zx_future_done(running), "wait returned after the running task");
    cr_assert_eq(atomic_load(&zxt_trace), 1);
    for (int i = 0; i < 5; i++) {
        zx_future_unref(&queued[i]);
    }
    zx_future_unref(&running);
    zx_executor_destroy(&ex);
}

Test(local, shutdown_wait_runs_everything_queued, .timeout = 30)
{
    zxt_gate_reset();
    zx_executor_t *ex = zx_executor_new_local(2);
    zxt_register_all(ex);
    zx_future_t *fs[50];
    for (int i = 0; i < 50; i++) {
        fs[i] = zxt_submit_int(ex, "trace", 0, 0, 0);
    }
    zx_executor_shutdown(ex, true, false);
    for (int i = 0; i < 50; i++) {
        cr_assert_eq(zx_future_state(fs[i]), ZX_FINISHED);
        zx_future_unref(&fs[i]);
    }
    cr_assert_eq(atomic_load(&zxt_trace), 50);
    zx_executor_destroy(&ex);
}

Test(local, futures_outlive_their_destroyed_executor, .timeout = 30)
{
    zx_executor_t *ex = zx_executor_new_local(0);
    zxt_register_all(ex);
    zx_future_t *f = zxt_submit_int(ex, "square", 1, 9, 0);
    zx_executor_destroy(&ex); /* waits for f */
    cr_assert_eq(zxt_result_int(f, 0), 81);
    cr_assert_not(zx_future_cancel(f));
    zx_future_unref(&f);
    zx_executor_destroy(&ex); /* NULL: no-op */
}

Test(local, submitf_packs_every_format, .timeout = 30)
{
    zx_executor_t *ex = zx_executor_new_local(1);
    zxt_register_all(ex);
    static const unsigned char raw[] = {0x92, 0x01, 0x02}; /* [1, 2] */
    zx_future_t *f = zx_submitf(ex, "echo", "iIuUdbsynm", -5, (int64_t)-6000000000LL, 7u,
                                (uint64_t)9000000000ULL, 2.5, 1, "hi", "ab", (size_t)2,
                                (const void *)raw, sizeof raw);
    cr_assert_not_null(f);
    const void *v;
    size_t len;
    cr_assert_eq(zx_future_result(f, 10, &v, &len), ZX_OK);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    cr_assert_eq(msgpack_unpack_next(&u, v, len, NULL), MSGPACK_UNPACK_SUCCESS);
    msgpack_object o = u.data;
    cr_assert_eq(o.type, MSGPACK_OBJECT_ARRAY);
    cr_assert_eq(o.via.array.size, 10);
    msgpack_object *a = o.via.array.ptr;
    cr_assert_eq(a[0].via.i64, -5);
    cr_assert_eq(a[1].via.i64, -6000000000LL);
    cr_assert_eq(a[2].via.u64, 7);
    cr_assert_eq(a[3].via.u64, 9000000000ULL);
    cr_assert_eq(a[4].type, MSGPACK_OBJECT_FLOAT64);
    cr_assert_float_eq(a[4].via.f64, 2.5, 1e-12);
    cr_assert_eq(a[5].type, MSGPACK_OBJECT_BOOLEAN);
    cr_assert(a[5].via.boolean);
    cr_assert_eq(a[6].type, MSGPACK_OBJECT_STR);
    cr_assert_eq(memcmp(a[6].via.str.ptr, "hi", 2), 0);
    cr_assert_eq(a[7].type, MSGPACK_OBJECT_BIN);
    cr_assert_eq(a[7].via.bin.size, 2);
    cr_assert_eq(a[8].type, MSGPACK_OBJECT_NIL);
    cr_assert_eq(a[9].type, MSGPACK_OBJECT_ARRAY);
    cr_assert_eq(a[9].via.array.size, 2);
    msgpack_unpacked_destroy(&u);
    zx_future_unref(&f);

    f = zx_submitf(ex, "echo", "");
    cr_assert_eq(zx_future_result(f, 10, &v, &len), ZX_OK);
    cr_assert_eq(len, 1);
    cr_assert_eq(*(const unsigned char *)v, 0x90);
    zx_future_unref(&f);

    cr_assert_null(zx_submitf(ex, "echo", "q", 1));
    cr_assert_eq(zx_last_error(), ZX_EINVAL);
    cr_assert_null(zx_submitf(ex, "echo", "m", (const void *)raw, (size_t)2), "truncated m");
    cr_assert_eq(zx_last_error(), ZX_EINVAL);
    cr_assert_null(zx_submitf(ex, "echo", "s", (const char *)NULL));
    zx_executor_destroy(&ex);
}

Test(local, executor_new_with_a_bad_endpoint_fails_cleanly, .timeout = 30)
{
    /* the remote constructor is remote.c's; here only the dispatcher's part:
       a NULL result leaves an error code */
    zx_options_t opts = {.broker_timeout = 0.5};
    zx_executor_t *ex = zx_executor_new("not-an-endpoint", &opts);
    if (!ex) {
        cr_assert_neq(zx_last_error(), ZX_OK);
    }
    zx_executor_destroy(&ex);
    cr_assert_eq(zx_executor_register(NULL, "x", zxt_fn_square), ZX_EINVAL);
    cr_assert_eq(zx_executor_shutdown(NULL, true, false), ZX_EINVAL);
    cr_assert_null(zx_executor_endpoint(NULL));
}

/* ---- stress --------------------------------------------------------------- */

#define STRESS_THREADS 8
#define STRESS_ROUNDS 300

typedef struct {
    zx_executor_t *ex;
    zx_future_t **shared; /* futures every thread touches */
    size_t n_shared;
    atomic_int *ok;
    atomic_int *cancelled;
    int id;
} stress_arg_t;

static void s_stress_cb(zx_future_t *f, void *arg)
{
    atomic_fetch_add((atomic_int *)arg, 1);
}

static void *s_stress(void *p)
{
    stress_arg_t *a = p;
    unsigned seed = (unsigned)a->id * 7919u + 1;
    for (int r = 0; r < STRESS_ROUNDS; r++) {
        zx_future_t *mine[4];
        for (int i = 0; i < 4; i++) {
            mine[i] = zxt_submit_int(a->ex, "square", 1, r + i, 0);
            if (!mine[i]) {
                return (void *)1;
            }
            zx_future_add_done_callback(mine[i], s_stress_cb, a->ok);
        }
        seed = seed * 1103515245u + 12345u;
        zx_future_t *sh = a->shared[seed % a->n_shared];
        switch ((seed >> 8) % 4) {
        case 0: zx_future_cancel(mine[seed % 4]); break;
        case 1: zx_future_cancel(sh); break;
        case 2: zx_future_result(sh, 0.001, NULL, NULL); break;
        default: zx_future_state(sh); break;
        }
        zx_future_t *all[6] = {mine[0], mine[1], mine[2], mine[3], sh, mine[0]};
        zx_as_completed_t *it = zx_as_completed_new(all, 6, 10);
        int yielded = 0;
        while (zx_as_completed_next(it)) {
            yielded++;
        }
        if (zx_as_completed_status(it) != ZX_OK || yielded != 5) {
            zx_as_completed_destroy(&it);
            return (void *)2;
        }
        zx_as_completed_destroy(&it);
        size_t nd = 0;
        if (zx_wait(all, 6, 10, ZX_ALL_COMPLETED, NULL, &nd, NULL, NULL) != ZX_OK || nd != 5) {
            return (void *)3;
        }
        for (int i = 0; i < 4; i++) {
            if (zx_future_cancelled(mine[i])) {
                atomic_fetch_add(a->cancelled, 1);
            } else if (zxt_result_int(mine[i], 0) != (int64_t)(r + i) * (r + i)) {
                return (void *)4;
            }
            zx_future_unref(&mine[i]);
        }
    }
    return NULL;
}

Test(local, many_threads_submit_wait_cancel_and_iterate_shared_futures, .timeout = 120)
{
    zx_executor_t *ex = zx_executor_new_local(4);
    zx_executor_t *ex2 = zx_executor_new_local(2);
    zxt_register_all(ex);
    zxt_register_all(ex2);
    zx_future_t *shared[16];
    for (int i = 0; i < 16; i++) {
        shared[i] = zxt_submit_int(i % 2 ? ex2 : ex, "square", 1, i, 0);
    }
    atomic_int ok = 0, cancelled = 0;
    pthread_t t[STRESS_THREADS];
    stress_arg_t args[STRESS_THREADS];
    for (int i = 0; i < STRESS_THREADS; i++) {
        args[i] = (stress_arg_t){ex, shared, 16, &ok, &cancelled, i};
        pthread_create(&t[i], NULL, s_stress, &args[i]);
    }
    for (int i = 0; i < STRESS_THREADS; i++) {
        void *rv;
        pthread_join(t[i], &rv);
        cr_assert_null(rv, "thread %d failed at step %ld", i, (long)(intptr_t)rv);
    }
    /* callbacks run after waiters are woken: join the pools before counting */
    zx_executor_shutdown(ex, true, false);
    zx_executor_shutdown(ex2, true, false);
    int total = STRESS_THREADS * STRESS_ROUNDS * 4;
    cr_assert_eq(atomic_load(&ok), total, "one callback per future: %d of %d", atomic_load(&ok),
                 total);
    cr_assert_lt(atomic_load(&cancelled), total);
    for (int i = 0; i < 16; i++) {
        cr_assert(zx_future_done(shared[i]));
        zx_future_unref(&shared[i]);
    }
    zx_executor_destroy(&ex);
    zx_executor_destroy(&ex2);
}
