/*  stress_remote.c - the remote executor's and the worker's threads under
    load, for ThreadSanitizer: a real zexec-broker (its own process) and a
    worker embedded in this process (zx_worker_run on a thread), so that the
    sanitizer sees both ends that share a socket between threads: a client
    thread sending its lone task itself instead of its I/O thread, and a
    worker pool thread sending its result itself instead of the worker's
    loop (docs/performance.md, 11). A plain program, as criterion cannot
    start under ThreadSanitizer; exit status 0: pass.

    The client's threads also lead (remote_io.c): a thread waiting for a
    future reads the socket itself while the I/O thread sleeps, completing
    other threads' futures and running their callbacks, one of which cancels
    another future; waits that time out while leading hand the socket back.

    Checks: every lone result is right; every future of a burst ends done and
    right; a cancelled future never carries a result; a callback runs once;
    the worker drains and returns. */
#include "zexec.h"
#include "zx_stress.h"
#include "zexec_worker.h"
#include "zx_clock.h"
#include "zx_net.h"
#include "zx_test_fns.h"

#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define THREADS 4
#define ROUNDS 300
#define BURST 32

static zx_executor_t *s_ex;

#define CHECK(cond, what) ZX_STRESS_CHECK("stress_remote", cond, what)

/* A done-callback that cancels another future (on a leader or the I/O
   thread: either decides without a round trip). */
typedef struct {
    zx_future_t *other;
    atomic_int calls;
} s_cb_t;

static void s_cancel_other(zx_future_t *f, void *arg)
{
    (void)f;
    s_cb_t *c = arg;
    zx_future_cancel(c->other);
    atomic_fetch_add(&c->calls, 1);
}

static void *s_user(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (int r = 0; r < ROUNDS; r++) {
        int64_t x = id * 100000 + r;
        /* one at a time: the direct paths at both ends */
        zx_future_t *f = zxt_submit_int(s_ex, "square", 1, x, 0);
        CHECK(f, "submit");
        CHECK(zxt_result_int(f, 30) == x * x, "lone result");
        zx_future_unref(&f);
        if (r % 10 == 0) {
            /* a burst: the I/O thread's batches, the worker loop's events */
            zx_future_t *fs[BURST];
            for (int i = 0; i < BURST; i++) {
                fs[i] = zxt_submit_int(s_ex, "square", 1, x + i, 0);
                CHECK(fs[i], "burst submit");
            }
            size_t nd = 0;
            CHECK(zx_wait(fs, BURST, 30, ZX_ALL_COMPLETED, NULL, &nd, NULL, NULL) == ZX_OK &&
                      nd == BURST,
                  "burst wait");
            for (int i = 0; i < BURST; i++) {
                CHECK(zxt_result_int(fs[i], 0) == (x + i) * (x + i), "burst result");
                zx_future_unref(&fs[i]);
            }
        }
        if (r % 5 == 0) {
            /* a callback that cancels; short waits that time out while leading */
            zx_future_t *p = zxt_submit_int(s_ex, "square", 1, x, 0);
            zx_future_t *q = zxt_submit_int(s_ex, "square", 1, x + 1, 0);
            CHECK(p && q, "submit pair");
            s_cb_t c = {.other = q};
            CHECK(zx_future_add_done_callback(p, s_cancel_other, &c) == ZX_OK, "callback");
            int rc;
            while ((rc = zx_future_result(p, 0.0002, NULL, NULL)) == ZX_ETIMEOUT) {
            }
            CHECK(rc == ZX_OK && zxt_result_int(p, 0) == x * x, "pair result");
            int64_t v = zxt_result_int(q, 30);
            CHECK(zx_future_cancelled(q) ? v == INT64_MIN : v == (x + 1) * (x + 1),
                  "cancelled by a callback");
            zx_as_completed_t *it = zx_as_completed_new((zx_future_t *[]){p, q}, 2, 30);
            int n = 0;
            while (zx_as_completed_next(it)) {
                n++;
            }
            CHECK(n == 2 && zx_as_completed_status(it) == ZX_OK, "as_completed");
            zx_as_completed_destroy(&it);
            /* result() returns once p is done; its callbacks run right after,
               on the completing thread */
            for (int64_t t0 = zx__mono_us(); atomic_load(&c.calls) == 0;) {
                CHECK(zx__mono_us() - t0 < 30000000, "callback ran");
                sched_yield();
            }
            CHECK(atomic_load(&c.calls) == 1, "callback ran once");
            zx_future_unref(&p);
            zx_future_unref(&q);
        }
        if (r % 7 == 0) {
            /* a cancel racing the send and the run */
            zx_future_t *c = zxt_submit_int(s_ex, "square", 1, x, 0);
            CHECK(c, "submit to cancel");
            bool cancelled = zx_future_cancel(c);
            int64_t v = zxt_result_int(c, 30);
            CHECK(cancelled ? zx_future_cancelled(c) && v == INT64_MIN : v == x * x,
                  "cancel outcome");
            zx_future_unref(&c);
        }
    }
    return NULL;
}

static void *s_worker_main(void *arg)
{
    return (void *)(intptr_t)zx_worker_run(arg);
}

int main(void)
{
    int cport = zx__free_tcp_port(), wport = zx__free_tcp_port();
    while (wport == cport) {
        wport = zx__free_tcp_port();
    }
    char cep[64], wep[64], bin[4096];
    snprintf(cep, sizeof cep, "tcp://127.0.0.1:%d", cport);
    snprintf(wep, sizeof wep, "tcp://127.0.0.1:%d", wport);
    const char *dir = getenv("ZEXEC_BIN_DIR");
    snprintf(bin, sizeof bin, "%s/zexec-broker", dir ? dir : ".");
    /* forked before this process has any thread or ZeroMQ context */
    pid_t broker = fork();
    if (broker == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* gone with this test, however it ends */
        execl(bin, bin, "--clients", cep, "--workers", wep, "-q", (char *)NULL);
        _exit(127);
    }
    if (broker < 0) {
        perror("stress_remote: fork");
        return 1;
    }
    zx_worker_opts_t wo = {.threads = 2, .procs = -1, .no_builtins = true};
    zx_worker_t *w = zx_worker_new(wep, &wo);
    int failed = !w || zx_worker_register(w, "square", zxt_fn_square, ZX_POOLS_THREAD) != ZX_OK;
    pthread_t wt;
    bool worker_started = !failed && pthread_create(&wt, NULL, s_worker_main, w) == 0;
    failed = failed || !worker_started;
    if (!failed) {
        s_ex = zx_executor_new(cep, &(zx_options_t){.name = "stress"});
        failed = !s_ex;
    }
    if (!failed) {
        pthread_t t[THREADS];
        for (int i = 0; i < THREADS; i++) {
            pthread_create(&t[i], NULL, s_user, (void *)(intptr_t)i);
        }
        for (int i = 0; i < THREADS; i++) {
            void *rv;
            pthread_join(t[i], &rv);
            failed |= rv != NULL;
        }
        zx_executor_destroy(&s_ex);
    }
    if (worker_started) {
        zx_worker_stop(w);
        void *rv = NULL;
        pthread_join(wt, &rv);
        if (rv != (void *)(intptr_t)ZX_OK) {
            fprintf(stderr, "stress_remote: the worker returned %d\n", (int)(intptr_t)rv);
            failed = 1;
        }
    }
    zx_worker_destroy(&w);
    kill(broker, SIGTERM);
    int st = 0;
    if (waitpid(broker, &st, 0) != broker || !WIFEXITED(st)) {
        fprintf(stderr, "stress_remote: the broker did not exit cleanly\n");
        failed = 1;
    }
    printf("stress_remote: %s\n", failed ? "FAILED" : "ok");
    return failed;
}
