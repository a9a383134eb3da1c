/*  test_job_api.c - the C API of detached jobs (libclient/job.c and
    zx_executor_detach) against a real zexec-broker and zexec-worker with
    the demo plugin: a detached executor's job fetched later by new handles,
    resumably (what one handle acknowledged the next one does not get, and
    nothing is lost); the futures of a job with zx_as_completed; a detach
    that times out without a broker and succeeds once there is one; cancel;
    the errors; zx_executor_job_id, the same id from the executor's creation.
*/
#include "zx_testutil.h"

#include <criterion/criterion.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <zexec.h>

static zxt_cluster_t s_c;

/* A broker and one worker with n threads, or with n processes (procs). */
static void s_start_pool(int n, bool procs)
{
    cr_assert_eq(zxt_broker_start(&s_c, NULL), 0);
    char *plugin = zxt_plugin("zexec_demo_plugin");
    char np[16];
    snprintf(np, sizeof np, "%d", n);
    const char *wargs[] = {"--plugin",       plugin,    "--threads",
                           procs ? "0" : np, "--procs", procs ? np : "0",
                           "--prefetch",     "1",       NULL};
    cr_assert_gt(zxt_worker_start(&s_c, "jw1", wargs), 0);
    free(plugin);
}

static void s_start(int threads)
{
    s_start_pool(threads, false);
}

static void s_stop(void)
{
    zxt_cluster_stop(&s_c);
}

static zx_executor_t *s_detached(const char *ep, const char *name)
{
    zx_options_t o = {.detach = true, .job_name = name};
    zx_executor_t *ex = zx_executor_new(ep, &o);
    cr_assert(ex);
    return ex;
}

static int64_t s_int(const void *v, size_t len)
{
    msgpack_zone z;
    msgpack_zone_init(&z, 64);
    msgpack_object o;
    size_t off = 0;
    cr_assert_eq(msgpack_unpack(v, len, &off, &z, &o), MSGPACK_UNPACK_SUCCESS);
    int64_t n = o.type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int64_t)o.via.u64 : o.via.i64;
    msgpack_zone_destroy(&z);
    return n;
}

/* Waits (bounded) until the job's acked count reaches n. */
static void s_wait_acked(zx_job_t *job, uint64_t n)
{
    zx_job_info_t info;
    for (int i = 0; i < 500; i++) {
        cr_assert_eq(zx_job_info(job, 10, &info), ZX_OK);
        if (info.acked >= n) {
            return;
        }
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    cr_assert_fail("acked stayed at %llu, below %llu", (unsigned long long)info.acked,
                   (unsigned long long)n);
}

TestSuite(job_api, .fini = s_stop, .timeout = 120);

Test(job_api, a_detached_job_is_fetched_later_resumably_and_nothing_is_lost)
{
    s_start(2);
    enum { N = 40 };
    zx_executor_t *ex = s_detached(s_c.client_ep, "api-resume");
    /* the job id is known before any task: the one detach gives */
    char early[ZX_JOB_ID_LEN + 1] = "";
    cr_assert_eq(zx_executor_job_id(ex, early), ZX_OK);
    zx_future_t *fs[N + 1];
    for (int i = 0; i < N; i++) {
        fs[i] = zx_submitf(ex, "square", "i", i + 1);
        cr_assert(fs[i]);
    }
    fs[N] = zx_submitf(ex, "divide", "ii", 1, 0);
    char id[ZX_JOB_ID_LEN + 1];
    cr_assert_eq(zx_executor_detach(ex, 60, id), ZX_OK);
    cr_assert_eq(strlen(id), ZX_JOB_ID_LEN);
    cr_assert_eq(strspn(id, "0123456789abcdef"), ZX_JOB_ID_LEN, "lower-case hex: %s", id);
    cr_assert_str_eq(early, id, "zx_executor_job_id gave the id detach gives");
    /* every future is done now: with its result, or detached */
    for (int i = 0; i <= N; i++) {
        cr_assert(zx_future_done(fs[i]));
        const zx_error_t *e = zx_future_exception(fs[i], 0);
        cr_assert(!e || e->code == ZX_EDETACHED || e->code == ZX_ERAISED, "future %d: %s", i,
                  e ? zx_strerror(e->code) : "");
        zx_future_unref(&fs[i]);
    }
    cr_assert_null(zx_submitf(ex, "square", "i", 1), "a detached executor takes no more");
    cr_assert_eq(zx_executor_detach(ex, 1, id), ZX_ESHUTDOWN);
    char after[ZX_JOB_ID_LEN + 1] = "";
    cr_assert_eq(zx_executor_job_id(ex, after), ZX_OK, "still known after the detach");
    cr_assert_str_eq(after, id);
    zx_executor_destroy(&ex);

    /* the first handle takes 10 results and goes */
    bool seen[N + 2] = {false};
    zx_job_t *a = zx_job_attach(s_c.client_ep, id, NULL);
    cr_assert(a, "attach: %s", zx_strerror(zx_last_error()));
    zx_job_info_t info;
    cr_assert_eq(zx_job_info(a, 10, &info), ZX_OK);
    cr_assert_str_eq(info.id, id);
    cr_assert_str_eq(info.name, "api-resume");
    cr_assert_eq(info.submitted, N + 1);
    int got = 0;
    for (; got < 10; got++) {
        zx_job_result_t r;
        cr_assert_eq(zx_job_next(a, 30, &r), ZX_OK);
        cr_assert(r.seq >= 1 && r.seq <= N + 1);
        cr_assert(!seen[r.seq], "seq %llu twice in one handle", (unsigned long long)r.seq);
        seen[r.seq] = true;
    }
    zx_job_destroy(&a); /* acknowledges all 10 */

    zx_job_t *b = zx_job_attach(s_c.client_ep, id, NULL);
    cr_assert(b);
    s_wait_acked(b, 10);
    int rest = 0, raised = 0;
    for (;;) {
        zx_job_result_t r;
        int rc = zx_job_next(b, 30, &r);
        if (rc == ZX_EDONE) {
            break;
        }
        cr_assert_eq(rc, ZX_OK, "next: %s", zx_strerror(rc));
        cr_assert(!seen[r.seq], "seq %llu was acknowledged by the first handle",
                  (unsigned long long)r.seq);
        seen[r.seq] = true;
        rest++;
        if (r.seq == N + 1) {
            cr_assert_eq(r.status, ZX_ERAISED);
            cr_assert_str_eq(r.error->type, "ZeroDivisionError");
            raised++;
        } else {
            cr_assert_eq(r.status, ZX_OK);
            cr_assert_eq(s_int(r.value, r.value_len), (int64_t)(r.seq * r.seq));
            cr_assert_str_eq(r.node, "jw1");
        }
    }
    cr_assert_eq(got + rest, N + 1, "every result exactly once across the two handles");
    for (int s = 1; s <= N + 1; s++) {
        cr_assert(seen[s], "seq %d lost", s);
    }
    cr_assert_leq(raised, 1);
    cr_assert_eq(zx_job_next(b, 0, &(zx_job_result_t){0}), ZX_EDONE);
    zx_job_destroy(&b);
}

Test(job_api, the_futures_of_a_job_complete_under_as_completed)
{
    s_start(4);
    enum { N = 12 };
    zx_executor_t *ex = s_detached(s_c.client_ep, NULL);
    for (int i = 0; i < N; i++) {
        zx_future_t *f = zx_submitf(ex, "slow_square", "id", i, 0.2);
        cr_assert(f);
        zx_future_unref(&f);
    }
    char id[ZX_JOB_ID_LEN + 1];
    cr_assert_eq(zx_executor_detach(ex, 60, id), ZX_OK);
    zx_executor_destroy(&ex);

    zx_job_t *job = zx_job_attach(s_c.client_ep, id, NULL);
    cr_assert(job);
    zx_future_t **fs = NULL;
    size_t n = 0;
    cr_assert_eq(zx_job_futures(job, 10, &fs, &n), ZX_OK);
    cr_assert_eq(n, N);
    zx_job_result_t r;
    cr_assert_eq(zx_job_next(job, 0, &r), ZX_EINVAL, "futures and next do not mix");
    zx_as_completed_t *it = zx_as_completed_new(fs, n, 60);
    int yielded = 0;
    for (zx_future_t *f; (f = zx_as_completed_next(it));) {
        const void *v;
        size_t len;
        cr_assert_eq(zx_future_result(f, 0, &v, &len), ZX_OK);
        int64_t seq = -1;
        for (size_t i = 0; i < n; i++) {
            seq = fs[i] == f ? (int64_t)i : seq;
        }
        /* seq i + 1 ran slow_square(i) */
        cr_assert_eq(s_int(v, len), seq * seq);
        yielded++;
    }
    cr_assert_eq(zx_as_completed_status(it), ZX_OK);
    cr_assert_eq(yielded, N);
    zx_as_completed_destroy(&it);
    s_wait_acked(job, N); /* each acknowledged once its future completed */
    for (size_t i = 0; i < n; i++) {
        zx_future_unref(&fs[i]);
    }
    free(fs);
    zx_job_destroy(&job);
}

Test(job_api, detach_times_out_without_a_broker_and_succeeds_once_there_is_one)
{
    s_c.client_port = zxt_free_port();
    s_c.worker_port = zxt_free_port();
    snprintf(s_c.client_ep, sizeof s_c.client_ep, "tcp://127.0.0.1:%d", s_c.client_port);
    snprintf(s_c.worker_ep, sizeof s_c.worker_ep, "tcp://127.0.0.1:%d", s_c.worker_port);
    zx_executor_t *ex = s_detached(s_c.client_ep, "late");
    /* no broker yet, and still the job's id */
    char early[ZX_JOB_ID_LEN + 1];
    cr_assert_eq(zx_executor_job_id(ex, early), ZX_OK);
    cr_assert_eq(strspn(early, "0123456789abcdef"), ZX_JOB_ID_LEN, "%s", early);
    zx_future_t *f = zx_submitf(ex, "square", "i", 3);
    cr_assert(f);
    char id[ZX_JOB_ID_LEN + 1] = "";
    cr_assert_eq(zx_executor_detach(ex, 0.5, id), ZX_ETIMEOUT);
    cr_assert_str_eq(id, "", "no id on timeout");
    cr_assert_not(zx_future_done(f), "nothing changed");
    zx_future_t *g = zx_submitf(ex, "square", "i", 4);
    cr_assert(g, "still usable");
    /* no worker yet: the tasks stay queued instead of failing with ENOFUNC */
    const char *bargs[] = {"--nofunc-grace", "600", NULL};
    cr_assert_eq(zxt_broker_restart(&s_c, bargs), 0);
    cr_assert_eq(zx_executor_detach(ex, 60, id), ZX_OK);
    cr_assert_str_eq(id, early);
    zx_executor_destroy(&ex);
    zx_job_t *job = zx_job_attach(s_c.client_ep, id, NULL);
    cr_assert(job);
    zx_job_info_t info;
    cr_assert_eq(zx_job_info(job, 10, &info), ZX_OK);
    cr_assert_eq(info.submitted, 2);
    cr_assert_eq(info.queued, 2, "no worker: both queued (%s)", info.state);
    cr_assert_str_eq(info.name, "late");
    /* no worker: nothing comes within a short wait */
    zx_job_result_t r;
    cr_assert_eq(zx_job_next(job, 0.3, &r), ZX_ETIMEOUT);
    zx_job_destroy(&job);
    zx_future_unref(&f);
    zx_future_unref(&g);
}

Test(job_api, cancel_drops_the_queued_tasks_and_keeps_the_results)
{
    s_start_pool(1, true); /* a process pool: cancel terminates the running task */
    enum { N = 20 };
    zx_executor_t *ex = s_detached(s_c.client_ep, "to-cancel");
    for (int i = 0; i < N; i++) {
        zx_future_t *f = zx_submitf(ex, "slow_square", "id", i, 0.3);
        zx_future_unref(&f);
    }
    char id[ZX_JOB_ID_LEN + 1];
    cr_assert_eq(zx_executor_detach(ex, 60, id), ZX_OK);
    zx_executor_destroy(&ex);
    zx_job_t *job = zx_job_attach(s_c.client_ep, id, NULL);
    cr_assert(job);
    zx_job_result_t r;
    cr_assert_eq(zx_job_next(job, 30, &r), ZX_OK, "one result before the cancel");
    cr_assert_eq(zx_job_cancel(job, 10), ZX_OK);
    zx_job_info_t info;
    cr_assert_eq(zx_job_info(job, 10, &info), ZX_OK);
    cr_assert_str_eq(info.state, "cancelled");
    cr_assert_eq(info.queued, 0);
    int n = 1;
    int rc;
    while ((rc = zx_job_next(job, 30, &r)) == ZX_OK) {
        n++;
    }
    cr_assert_eq(rc, ZX_EDONE, "a cancelled job ends: %s", zx_strerror(rc));
    cr_assert_lt(n, N, "the queued tasks never ran (%d results)", n);
    zx_job_destroy(&job);
}

/* A job cancelled from elsewhere while its submitter is still connected
   (it has not detached): the submitter's futures of the dropped queued
   tasks end cancelled (the broker says CANCELLED, as for its own CANCEL),
   so the executor can be destroyed instead of waiting for them forever. */
Test(job_api, a_job_cancelled_before_its_submitter_detached_ends_its_futures)
{
    s_start_pool(1, true);
    enum { N = 12 };
    zx_executor_t *ex = s_detached(s_c.client_ep, "cancelled-early");
    zx_future_t *fs[N];
    for (int i = 0; i < N; i++) {
        fs[i] = zx_submitf(ex, "slow_square", "id", i, 0.5);
        cr_assert(fs[i]);
    }
    char id[ZX_JOB_ID_LEN + 1];
    cr_assert_eq(zx_executor_job_id(ex, id), ZX_OK);
    /* the last task is queued at the broker behind the one the pool runs */
    zx_job_t *job = NULL;
    zx_job_info_t info = {0};
    for (int i = 0; i < 500 && info.submitted < N; i++) {
        if (!job) {
            job = zx_job_attach(s_c.client_ep, id, NULL);
        }
        if (job) {
            cr_assert_eq(zx_job_info(job, 10, &info), ZX_OK);
        }
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    cr_assert(job, "the broker knows the job");
    cr_assert_eq(info.submitted, N);
    cr_assert_eq(zx_job_cancel(job, 10), ZX_OK);
    const void *v;
    size_t len;
    int rc = zx_future_result(fs[N - 1], 30, &v, &len);
    cr_assert_eq(rc, ZX_ECANCELLED, "the queued task's future ends cancelled: %s", zx_strerror(rc));
    for (int i = 0; i < N; i++) {
        cr_assert(zx_future_done(fs[i]) || zx_future_exception(fs[i], 30), "future %d ended", i);
        zx_future_unref(&fs[i]);
    }
    zx_executor_destroy(&ex);
    zx_job_destroy(&job);
}

Test(job_api, errors_have_names_and_bad_calls_are_refused)
{
    cr_assert_str_neq(zx_strerror(ZX_EDETACHED), "unknown error");
    cr_assert_str_neq(zx_strerror(ZX_EDONE), "unknown error");
    cr_assert_str_neq(zx_strerror(ZX_ENOJOB), "unknown error");
    s_start(1);
    zx_executor_t *ex = zx_executor_new(s_c.client_ep, NULL);
    char id[ZX_JOB_ID_LEN + 1];
    cr_assert_eq(zx_executor_detach(ex, 1, id), ZX_EINVAL, "not a detached executor");
    memset(id, 'x', sizeof id);
    cr_assert_eq(zx_executor_job_id(ex, id), ZX_EINVAL, "no job id: not a detached executor");
    cr_assert_eq(id[0], 'x', "nothing written");
    zx_executor_destroy(&ex);
    ex = zx_executor_new_local(1);
    cr_assert(ex);
    cr_assert_eq(zx_executor_job_id(ex, id), ZX_EINVAL, "a local executor has no job");
    zx_executor_destroy(&ex);
    cr_assert_eq(zx_executor_job_id(NULL, id), ZX_EINVAL);
    cr_assert_null(zx_job_attach(s_c.client_ep, "xyz", NULL));
    cr_assert_eq(zx_last_error(), ZX_EINVAL);
    cr_assert_null(zx_job_attach(s_c.client_ep, "0123456789abcdef0123456789abcdef", NULL));
    cr_assert_eq(zx_last_error(), ZX_ENOJOB);
    zx_job_info_t *v = NULL;
    size_t n = 99;
    cr_assert_eq(zx_jobs_list(s_c.client_ep, NULL, 10, &v, &n), ZX_OK);
    cr_assert_eq(n, 0);
    cr_assert_null(v);
    zx_job_destroy(NULL);
}

/* The job client says HELLO again after a broker restart (RESET) and goes on
   where it was: with the journal, nothing is lost, and signing works as for
   the executor (the handle's connection is made the same way). */
Test(job_api, a_signed_job_survives_a_broker_restart_on_its_journal)
{
    char dir[] = "/tmp/zx_jobapi_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char secret[600], journal[600];
    snprintf(secret, sizeof secret, "%s/secret", dir);
    snprintf(journal, sizeof journal, "%s/journal", dir);
    FILE *f = fopen(secret, "w");
    cr_assert(f);
    fputs("a shared secret of at least sixteen bytes\n", f);
    fclose(f);
    chmod(secret, 0600);
    const char *bargs[] = {"--secret-file", secret, "--journal", journal, NULL};
    cr_assert_eq(zxt_broker_start(&s_c, bargs), 0);
    char *plugin = zxt_plugin("zexec_demo_plugin");
    const char *wargs[] = {"--secret-file", secret, "--plugin", plugin, "--threads", "2",
                           "--procs",       "0",    NULL};
    cr_assert_gt(zxt_worker_start(&s_c, "jw1", wargs), 0);
    free(plugin);

    enum { N = 20 };
    zx_options_t o = {.detach = true, .secret_file = secret};
    zx_executor_t *ex = zx_executor_new(s_c.client_ep, &o);
    cr_assert(ex);
    for (int i = 0; i < N; i++) {
        zx_future_t *t = zx_submitf(ex, "slow_square", "id", i, 0.2);
        zx_future_unref(&t);
    }
    char id[ZX_JOB_ID_LEN + 1];
    cr_assert_eq(zx_executor_detach(ex, 60, id), ZX_OK);
    zx_executor_destroy(&ex);

    zx_options_t jo = {.secret_file = secret, .broker_timeout = 60};
    zx_options_t unsigned_opts = {.broker_timeout = 2};
    cr_assert_null(zx_job_attach(s_c.client_ep, id, &unsigned_opts), "unsigned: refused");
    zx_job_t *job = zx_job_attach(s_c.client_ep, id, &jo);
    cr_assert(job, "attach: %s", zx_strerror(zx_last_error()));
    bool seen[N + 1] = {false};
    zx_job_result_t r;
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(zx_job_next(job, 30, &r), ZX_OK);
        seen[r.seq] = true;
    }
    zxt_kill(s_c.broker);
    cr_assert_eq(zxt_broker_restart(&s_c, bargs), 0);
    int rc;
    while ((rc = zx_job_next(job, 60, &r)) == ZX_OK) {
        cr_assert(r.seq >= 1 && r.seq <= N);
        cr_assert_eq(r.status, ZX_OK);
        cr_assert_eq(s_int(r.value, r.value_len), (int64_t)((r.seq - 1) * (r.seq - 1)));
        seen[r.seq] = true;
    }
    cr_assert_eq(rc, ZX_EDONE, "%s", zx_strerror(rc));
    for (int s = 1; s <= N; s++) {
        cr_assert(seen[s], "seq %d lost across the restart", s);
    }
    zx_job_destroy(&job);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}
