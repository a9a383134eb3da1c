/*  stress_job.c - a job handle's fetcher thread under ThreadSanitizer: a
    real zexec-broker (its own process) and a worker embedded in this
    process. A detached executor submits N tasks and detaches; a handle's
    futures (zx_job_futures) complete on its fetcher thread while this
    thread waits in zx_as_completed and asks zx_job_info between results,
    on the same socket the fetcher uses (job->lock); a done-callback counts
    on the fetcher thread. A plain program, as criterion cannot start under
    ThreadSanitizer; exit status 0: pass.

    Checks: every future completes with its task's value; every callback
    ran; every result is acknowledged; the handle and the worker stop. */
#include "zexec.h"
#include "zexec_worker.h"
#include "zx_net.h"
#include "zx_test_fns.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define N 600

static atomic_int s_callbacks;

static void s_on_done(zx_future_t *f, void *arg)
{
    (void)f;
    (void)arg;
    atomic_fetch_add(&s_callbacks, 1);
}

static void *s_worker_main(void *arg)
{
    return (void *)(intptr_t)zx_worker_run(arg);
}

static int s_run(const char *cep)
{
    zx_executor_t *ex = zx_executor_new(cep, &(zx_options_t){.detach = true});
    if (!ex) {
        return 1;
    }
    for (int i = 0; i < N; i++) {
        zx_future_t *f = zxt_submit_int(ex, "square", 1, i, 0);
        if (!f) {
            zx_executor_destroy(&ex);
            return 1;
        }
        zx_future_unref(&f);
    }
    char id[ZX_JOB_ID_LEN + 1];
    int rc = zx_executor_detach(ex, 60, id);
    zx_executor_destroy(&ex);
    if (rc != ZX_OK) {
        fprintf(stderr, "stress_job: detach: %s\n", zx_strerror(rc));
        return 1;
    }
    zx_job_t *job = zx_job_attach(cep, id, NULL);
    if (!job) {
        return 1;
    }
    zx_future_t **fs = NULL;
    size_t n = 0;
    int failed = zx_job_futures(job, 30, &fs, &n) != ZX_OK || n != N;
    for (size_t i = 0; !failed && i < n; i++) {
        zx_future_add_done_callback(fs[i], s_on_done, NULL);
    }
    zx_as_completed_t *it = failed ? NULL : zx_as_completed_new(fs, n, 120);
    size_t got = 0;
    for (zx_future_t *f; it && (f = zx_as_completed_next(it));) {
        uint64_t seq = 0;
        for (size_t i = 0; i < n; i++) {
            seq = fs[i] == f ? i + 1 : seq;
        }
        int64_t want = (int64_t)(seq - 1) * (int64_t)(seq - 1);
        if (zxt_result_int(f, 0) != want) {
            fprintf(stderr, "stress_job: seq %llu: wrong value\n", (unsigned long long)seq);
            failed = 1;
        }
        if (++got % 50 == 0) {
            zx_job_info_t info;
            failed |= zx_job_info(job, 10, &info) != ZX_OK;
        }
    }
    failed |= !it || zx_as_completed_status(it) != ZX_OK || got != N;
    zx_as_completed_destroy(&it);
    failed |= atomic_load(&s_callbacks) != N;
    /* every result acknowledged once its future completed */
    zx_job_info_t info = {0};
    for (int i = 0; i < 500 && !failed; i++) {
        if (zx_job_info(job, 10, &info) != ZX_OK) {
            failed = 1;
        } else if (info.acked == N) {
            break;
        }
        usleep(10000);
    }
    failed |= info.acked != N;
    for (size_t i = 0; i < n; i++) {
        zx_future_unref(&fs[i]);
    }
    free(fs);
    zx_job_destroy(&job);
    return failed;
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
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execl(bin, bin, "--clients", cep, "--workers", wep, "-q", (char *)NULL);
        _exit(127);
    }
    if (broker < 0) {
        perror("stress_job: fork");
        return 1;
    }
    zx_worker_opts_t wo = {.threads = 2, .procs = -1, .no_builtins = true};
    zx_worker_t *w = zx_worker_new(wep, &wo);
    int failed = !w || zx_worker_register(w, "square", zxt_fn_square, ZX_POOLS_THREAD) != ZX_OK;
    pthread_t wt;
    bool worker_started = !failed && pthread_create(&wt, NULL, s_worker_main, w) == 0;
    failed = failed || !worker_started;
    if (!failed) {
        failed = s_run(cep);
    }
    if (worker_started) {
        zx_worker_stop(w);
        void *rv = NULL;
        pthread_join(wt, &rv);
        failed |= rv != (void *)(intptr_t)ZX_OK;
    }
    zx_worker_destroy(&w);
    kill(broker, SIGTERM);
    int st = 0;
    if (waitpid(broker, &st, 0) != broker || !WIFEXITED(st)) {
        fprintf(stderr, "stress_job: the broker did not exit cleanly\n");
        failed = 1;
    }
    printf("stress_job: %s\n", failed ? "FAILED" : "ok");
    return failed;
}
