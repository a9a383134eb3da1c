/*  test_jobs.c - detached jobs (protocol 2.2, broker/jobs.c, durable.c)
    against the real zexec-broker: fake clients and workers (raw DEALER
    sockets, tests/broker_peers.h) drive it message by message, and one
    test runs a real zexec-worker. A job outlives its session; its results
    are fetched from another session, resumably (FETCH after an index), and
    forgotten only when RACKed; JCANCEL, the per-job quota, retention, and
    a broker killed with -9 and restarted on its journal.
*/
#include "broker_peers.h"

#include <stdio.h>
#include <sys/stat.h>

static zxt_cluster_t s_cluster;
static char s_dir[128];

static void s_stop(void)
{
    zxt_cluster_stop(&s_cluster);
    if (s_dir[0]) {
        char cmd[256];
        snprintf(cmd, sizeof cmd, "rm -rf %s", s_dir);
        cr_assert(system(cmd) == 0);
        s_dir[0] = 0;
    }
}

static void s_journal_dir(void)
{
    snprintf(s_dir, sizeof s_dir, "/tmp/zexec-test-jobs-XXXXXX");
    cr_assert(mkdtemp(s_dir));
}

/* HELLO with flags; WELCOME expected. */
static void fj_hello(fp_t *c, const char *name, uint32_t flags)
{
    cr_assert(zxp_send_hello_flags(c->sock, c->id, name, c->hb_ms, flags) == 0);
    cr_assert(fp_expect(c, ZXP_WELCOME, 5000), "no WELCOME for %s", name);
}

/* What one FETCH returned. */
typedef struct {
    size_t n;
    uint64_t seq[256], index[256];
    uint32_t status[256];
    uint8_t first_byte[256]; /* of each payload */
    size_t len[256];
    zxp_jobinfo_t info;
} fj_got_t;

/* FETCH from c and collects the JRESULTs until FETCHED. */
static void fj_fetch(fp_t *c, const uint8_t *job, uint64_t after, uint64_t max, uint32_t wait_ms,
                     fj_got_t *got)
{
    memset(got, 0, sizeof *got);
    zxp_fetch_t f = {.job = job, .after = after, .max = max, .wait_ms = wait_ms};
    cr_assert(zxp_send_fetch(c->sock, &f) == 0);
    for (;;) {
        int cmd = fp_recv(c, (int)wait_ms + 10000);
        cr_assert(cmd >= 0, "no answer to FETCH");
        if (cmd == ZXP_JRESULT) {
            for (size_t i = 0; i < c->in.count; i++) {
                cr_assert_eq(zxp_item_bad(&c->in, i), 0);
                zxp_jresult_t j;
                zxp_get_jresult(&c->in, i, &j);
                zframe_t *p = zxp_payload_take(&c->in);
                cr_assert(got->n < 256);
                got->seq[got->n] = j.r.seq;
                got->index[got->n] = j.index;
                got->status[got->n] = j.r.status;
                got->len[got->n] = zframe_size(p);
                got->first_byte[got->n] = zframe_size(p) ? zframe_data(p)[0] : 0;
                got->n++;
                zframe_destroy(&p);
            }
        } else if (cmd == ZXP_FETCHED) {
            cr_assert(memcmp(zxp_job_id(&c->in), job, ZXP_ID_LEN) == 0);
            cr_assert_eq(zxp_get_jobinfo(zxp_jobinfo_obj(&c->in), &got->info), 0);
            return;
        }
    }
}

static void fj_rack(fp_t *c, const uint8_t *job, const uint64_t *seqs, size_t n)
{
    cr_assert(zxp_send_rack(c->sock, job, seqs, n) == 0);
}

/* Waits for ACCEPTED items until every seq in 1..n has come. */
static void fj_expect_accepted(fp_t *c, uint64_t n)
{
    bool seen[64] = {false};
    uint64_t count = 0;
    cr_assert(n < 64);
    while (count < n) {
        cr_assert(fp_expect(c, ZXP_ACCEPTED, 10000), "only %" PRIu64 " of %" PRIu64 " ACCEPTED",
                  count, n);
        for (size_t i = 0; i < c->in.count; i++) {
            uint64_t s = zxp_u(zxp_item(&c->in, i), 0);
            cr_assert(s >= 1 && s <= n, "ACCEPTED for an unknown seq %" PRIu64, s);
            if (!seen[s]) {
                seen[s] = true;
                count++;
            }
        }
    }
}

/* A payload of one byte tag then filler, len bytes. */
static void fw_result_tagged(fp_t *w, const uint8_t *session, uint64_t seq, uint8_t tag, size_t len)
{
    uint8_t *buf = calloc(1, len);
    cr_assert(buf);
    buf[0] = tag;
    fw_result_ex(w, session, seq, ZXP_ST_OK, ZXP_POOL_THREAD, true, buf, len);
    free(buf);
}

/* The seqs of the TASKs w receives until it has n of them. */
static void fw_take_tasks(fp_t *w, size_t n, uint64_t *seqs)
{
    size_t got = 0;
    while (got < n) {
        cr_assert(fp_expect(w, ZXP_TASK, 10000), "worker got %zu of %zu tasks", got, n);
        for (size_t i = 0; i < w->in.count; i++) {
            zxp_task_t t;
            zxp_get_task(&w->in, i, &t);
            seqs[got++] = t.seq;
        }
    }
}

/* --max-jobs bounds the detached jobs a HELLO can make (each is kept
   --job-retention): beyond it the session is welcomed but no job is made
   and its tasks are refused with a QuotaError naming the limit; a job
   that exists still attaches, and a plain session is unaffected. */
Test(jobs, max_jobs_bounds_the_jobs_hellos_make, .timeout = 30, .fini = s_stop)
{
    const char *extra[] = {"--max-jobs", "2", NULL};
    fb_start(&s_cluster, extra);
    fp_t j[3], p;
    for (int i = 0; i < 3; i++) {
        fp_init(&j[i], s_cluster.client_ep, ZXP_ROLE_CLIENT);
        char name[16];
        snprintf(name, sizeof name, "job%d", i);
        fj_hello(&j[i], name, ZXP_HELLO_JOB | ZXP_HELLO_ACCEPT);
    }
    fj_got_t got;
    fj_fetch(&j[0], j[1].id, 0, 0, 0, &got);
    cr_assert_str_eq(got.info.error, "", "job1 exists");
    fj_fetch(&j[0], j[2].id, 0, 0, 0, &got);
    cr_assert_str_neq(got.info.error, "", "job2 was not made");
    fc_submit(&j[2], 1, "f");
    zxp_result_t r;
    cr_assert(fc_expect_result(&j[2], 1, 5000, &r));
    cr_assert_eq(r.status, ZXP_ST_REJECTED);
    zframe_t *f = zxp_payload_take(&j[2].in);
    char type[64], msg[512];
    fp_error_of(f, type, sizeof type, msg, sizeof msg);
    zframe_destroy(&f);
    cr_assert_str_eq(type, "QuotaError");
    cr_assert(strstr(msg, "--max-jobs 2"), "message names the limit: %s", msg);
    /* a job that exists attaches again; its tasks are taken */
    fj_hello(&j[0], "job0", ZXP_HELLO_JOB | ZXP_HELLO_ACCEPT);
    fc_submit(&j[0], 1, "f");
    fj_expect_accepted(&j[0], 1);
    /* a plain session is no job: unaffected */
    fp_init(&p, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fc_hello(&p, "plain");
    fc_submit(&p, 1, "f");
    const msgpack_object *st = fc_status(&p);
    cr_assert_eq(fp_status_total(st, "queued"), 2);
    for (int i = 0; i < 3; i++) {
        fp_fini(&j[i]);
    }
    fp_fini(&p);
}

Test(jobs, a_job_outlives_its_session_and_is_fetched_from_another, .timeout = 60, .fini = s_stop)
{
    fb_start(&s_cluster, NULL);
    fp_t w, j, f;
    fp_init(&w, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fp_init(&j, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fp_init(&f, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fw_ready(&w, "node-a", 8, 0, "echo");
    fj_hello(&j, "nightly", ZXP_HELLO_JOB | ZXP_HELLO_ACCEPT);
    for (uint64_t s = 1; s <= 3; s++) {
        fc_submit(&j, s, "echo");
    }
    fj_expect_accepted(&j, 3);
    uint64_t seqs[3];
    fw_take_tasks(&w, 3, seqs);
    /* the job's session leaves: its tasks stay with the worker */
    zxp_send_empty(j.sock, NULL, ZXP_BYE);
    fp_fini(&j);
    fj_hello(&f, "fetcher", 0);
    fj_got_t got;
    /* (the BYE came on another socket, or, cut by the socket's close, the
       session ends at its liveness) */
    int64_t end = zclock_mono() + 10000;
    do {
        fj_fetch(&f, j.id, 0, 100, 0, &got);
    } while (strcmp(got.info.state, "open") == 0 && zclock_mono() < end);
    cr_assert_eq(got.n, 0);
    cr_assert_str_eq(got.info.state, "detached");
    cr_assert_str_eq(got.info.name, "nightly");
    cr_assert_eq(got.info.submitted, 3);
    cr_assert_eq(got.info.running, 3);
    for (size_t i = 0; i < 3; i++) {
        fw_result_tagged(&w, j.id, seqs[i], (uint8_t)(0x10 + seqs[i]), 1 + 600 * i);
    }
    /* a long poll returns as soon as results are there */
    fj_fetch(&f, j.id, 0, 100, 20000, &got);
    if (got.n < 3) {
        fj_got_t more;
        fj_fetch(&f, j.id, got.index[got.n - 1], 100, 20000, &more);
        for (size_t i = 0; i < more.n; i++) {
            got.seq[got.n] = more.seq[i];
            got.index[got.n] = more.index[i];
            got.first_byte[got.n] = more.first_byte[i];
            got.len[got.n++] = more.len[i];
        }
        got.info = more.info;
    }
    cr_assert_eq(got.n, 3);
    for (size_t i = 0; i < 3; i++) {
        cr_assert_eq(got.index[i], i + 1, "completion indexes count from 1 in order");
        cr_assert_eq(got.seq[i], seqs[i]);
        cr_assert_eq(got.first_byte[i], 0x10 + seqs[i], "the payload is the worker's");
        cr_assert_eq(got.len[i], 1 + 600 * i);
    }
    cr_assert_str_eq(got.info.state, "done");
    cr_assert_eq(got.info.held, 3);
    cr_assert_eq(got.info.done, 3);
    cr_assert_eq(got.info.next, 3);
    const msgpack_object *st = fc_status(&f);
    cr_assert_eq(fp_status_total(st, "jobs"), 1);
    cr_assert_eq(fp_status_total(st, "held_results"), 3);
    fp_fini(&w);
    fp_fini(&f);
}

Test(jobs, a_fetch_resumes_after_an_index_and_rack_forgets, .timeout = 60, .fini = s_stop)
{
    fb_start(&s_cluster, NULL);
    fp_t w, j, f;
    fp_init(&w, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fp_init(&j, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fp_init(&f, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fw_ready(&w, "node-a", 8, 0, "echo");
    fj_hello(&j, "resumable", ZXP_HELLO_JOB);
    for (uint64_t s = 1; s <= 4; s++) {
        fc_submit(&j, s, "echo");
    }
    uint64_t seqs[4];
    fw_take_tasks(&w, 4, seqs);
    for (size_t i = 0; i < 4; i++) {
        fw_result_tagged(&w, j.id, seqs[i], (uint8_t)seqs[i], 8);
    }
    /* while the job's session is connected it gets its RESULTs as usual */
    size_t live = 0;
    while (live < 4) {
        cr_assert(fp_expect(&j, ZXP_RESULT, 10000), "%zu of 4 RESULTs", live);
        live += j.in.count;
    }
    fj_hello(&f, "fetcher", 0);
    fj_got_t got;
    fj_fetch(&f, j.id, 0, 0, 0, &got);
    cr_assert_eq(got.n, 0, "max 0 asks only for the info");
    cr_assert_str_eq(got.info.state, "open");
    cr_assert_eq(got.info.held, 4, "results are held even when sent live");
    /* an interrupted fetch: the first two, then again from index 2 */
    fj_fetch(&f, j.id, 0, 2, 0, &got);
    cr_assert_eq(got.n, 2);
    cr_assert_eq(got.index[1], 2);
    fj_fetch(&f, j.id, 2, 100, 0, &got);
    cr_assert_eq(got.n, 2);
    cr_assert_eq(got.index[0], 3);
    cr_assert_eq(got.index[1], 4);
    /* RACK the first three (and an unknown seq, ignored) */
    uint64_t rack[4] = {seqs[0], seqs[1], seqs[2], 999};
    fj_rack(&f, j.id, rack, 4);
    fj_fetch(&f, j.id, 0, 100, 0, &got);
    cr_assert_eq(got.n, 1);
    cr_assert_eq(got.seq[0], seqs[3]);
    cr_assert_eq(got.index[0], 4);
    cr_assert_eq(got.info.held, 1);
    cr_assert_eq(got.info.acked, 3);
    /* detached and the last RACKed: the job is done, nothing held */
    zxp_send_empty(j.sock, NULL, ZXP_BYE);
    fj_rack(&f, j.id, &seqs[3], 1);
    /* (the BYE comes on another socket: the broker may take it after the
       fetcher's next message) */
    int64_t end = zclock_mono() + 10000;
    do {
        fj_fetch(&f, j.id, 0, 100, 0, &got);
    } while (strcmp(got.info.state, "open") == 0 && zclock_mono() < end);
    cr_assert_eq(got.n, 0);
    cr_assert_str_eq(got.info.state, "done");
    cr_assert_eq(got.info.held, 0);
    cr_assert_eq(got.info.acked, 4);
    /* JOBS lists it */
    zxp_send_empty(f.sock, NULL, ZXP_JOBS);
    cr_assert(fp_expect(&f, ZXP_JOBS_REPLY, 5000));
    cr_assert_eq(zxp_jobs_count(&f.in), 1);
    zxp_jobinfo_t info;
    cr_assert_eq(zxp_get_jobinfo(zxp_jobs_info(&f.in, 0), &info), 0);
    cr_assert(memcmp(info.id, j.id, ZXP_ID_LEN) == 0);
    cr_assert_eq(info.submitted, 4);
    /* an unknown job */
    uint8_t other[ZXP_ID_LEN];
    fp_random_id(other);
    fj_fetch(&f, other, 0, 10, 0, &got);
    cr_assert(got.info.error[0] != 0, "an unknown job is said so");
    fp_fini(&j);
    fp_fini(&w);
    fp_fini(&f);
}

Test(jobs, jcancel_drops_queued_tasks_and_terminates_running_ones, .timeout = 60, .fini = s_stop)
{
    fb_start(&s_cluster, NULL);
    fp_t w, j, f;
    fp_init(&w, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fp_init(&j, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fp_init(&f, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fw_ready(&w, "node-a", 1, 0, "echo"); /* one slot: one task runs, two wait */
    fj_hello(&j, "doomed", ZXP_HELLO_JOB | ZXP_HELLO_ACCEPT);
    for (uint64_t s = 1; s <= 3; s++) {
        fc_submit(&j, s, "echo");
    }
    fj_expect_accepted(&j, 3);
    cr_assert(fp_expect(&w, ZXP_TASK, 5000));
    uint64_t running = fw_task_seq(&w);
    zxp_send_empty(j.sock, NULL, ZXP_BYE);
    fj_hello(&f, "canceller", 0);
    cr_assert(zxp_send_jcancel(f.sock, j.id) == 0);
    cr_assert(fp_expect(&f, ZXP_JCANCELLED, 5000));
    zxp_jobinfo_t info;
    cr_assert_eq(zxp_get_jobinfo(zxp_jobinfo_obj(&f.in), &info), 0);
    cr_assert_str_eq(info.state, "cancelled");
    cr_assert_eq(info.queued, 0, "its queued tasks are dropped");
    cr_assert(fp_expect(&w, ZXP_WCANCEL, 5000), "its running task is terminated");
    const msgpack_object *it = zxp_item(&w.in, 0);
    cr_assert_eq(zxp_u(it, 1), running);
    cr_assert(zxp_b(it, 2), "terminate");
    /* a result that still comes is discarded */
    fw_result_tagged(&w, j.id, running, 1, 4);
    fj_got_t got;
    fj_fetch(&f, j.id, 0, 100, 0, &got);
    cr_assert_eq(got.n, 0);
    cr_assert_eq(got.info.held, 0);
    /* the job takes no more tasks */
    fp_t j2;
    fp_init(&j2, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    memcpy(j2.id, j.id, ZXP_ID_LEN);
    zsock_destroy(&j2.sock);
    j2.sock = zsock_new(ZMQ_DEALER);
    zxp_sock_setup(j2.sock);
    zmq_setsockopt(zsock_resolve(j2.sock), ZMQ_ROUTING_ID, j2.id, ZXP_ID_LEN);
    fp_fini(&j); /* its socket held the routing id */
    cr_assert(zsock_connect(j2.sock, "%s", s_cluster.client_ep) == 0);
    fj_hello(&j2, "doomed", ZXP_HELLO_JOB);
    fc_submit(&j2, 10, "echo");
    zxp_result_t r;
    cr_assert(fc_expect_result(&j2, 10, 5000, &r));
    cr_assert_eq(r.status, ZXP_ST_REJECTED);
    fp_fini(&j2);
    fp_fini(&w);
    fp_fini(&f);
}

Test(jobs, the_quota_refuses_new_tasks_until_results_are_racked, .timeout = 60, .fini = s_stop)
{
    const char *extra[] = {"--job-max-bytes", "1K", NULL};
    fb_start(&s_cluster, extra);
    fp_t w, j;
    fp_init(&w, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fp_init(&j, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fw_ready(&w, "node-a", 4, 0, "echo");
    fj_hello(&j, "big", ZXP_HELLO_JOB | ZXP_HELLO_ACCEPT);
    fc_submit(&j, 1, "echo");
    fj_expect_accepted(&j, 1);
    cr_assert(fp_expect(&w, ZXP_TASK, 5000));
    fw_result_tagged(&w, j.id, 1, 7, 2000);
    cr_assert(fc_expect_result(&j, 1, 5000, NULL));
    fc_submit(&j, 2, "echo");
    zxp_result_t r;
    cr_assert(fc_expect_result(&j, 2, 5000, &r));
    cr_assert_eq(r.status, ZXP_ST_REJECTED, "over the job's quota");
    zframe_t *p = zxp_payload_take(&j.in);
    char type[64], msg[256];
    fp_error_of(p, type, sizeof type, msg, sizeof msg);
    zframe_destroy(&p);
    cr_assert(strstr(msg, "job quota exceeded: fetch results"), "%s", msg);
    uint64_t one = 1;
    fj_rack(&j, j.id, &one, 1);
    fc_submit(&j, 3, "echo");
    cr_assert(fp_expect(&w, ZXP_TASK, 5000), "accepted again once RACKed");
    cr_assert_eq(fw_task_seq(&w), 3);
    fp_fini(&w);
    fp_fini(&j);
}

Test(jobs, a_detached_job_expires_after_its_retention, .timeout = 60, .fini = s_stop)
{
    const char *extra[] = {"--job-retention", "1", NULL};
    fb_start(&s_cluster, extra);
    fp_t w, j, f;
    fp_init(&w, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fp_init(&j, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fp_init(&f, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fw_ready(&w, "node-a", 4, 0, "echo");
    fj_hello(&j, "short-lived", ZXP_HELLO_JOB);
    fc_submit(&j, 1, "echo");
    cr_assert(fp_expect(&w, ZXP_TASK, 5000));
    fw_result_tagged(&w, j.id, 1, 7, 10);
    cr_assert(fc_expect_result(&j, 1, 5000, NULL));
    zxp_send_empty(j.sock, NULL, ZXP_BYE);
    fj_hello(&f, "watcher", 0);
    fj_got_t got;
    fj_fetch(&f, j.id, 0, 0, 0, &got);
    cr_assert_eq(got.info.held, 1);
    /* nobody touches it: within a few retention periods it is gone */
    int64_t end = zclock_mono() + 20000;
    bool gone = false;
    while (!gone && zclock_mono() < end) {
        fp_quiet(&f, 500);
        zxp_send_empty(f.sock, NULL, ZXP_STATUS);
        cr_assert(fp_expect(&f, ZXP_STATUS_REPLY, 5000));
        const msgpack_object *st = zxp_o(&f.in.hdr, 0);
        gone = fp_status_total(st, "held_results") == 0;
    }
    cr_assert(gone, "the held result expired");
    fp_fini(&j);
    fp_fini(&w);
    fp_fini(&f);
}

Test(jobs, a_real_worker_runs_a_detached_job, .timeout = 120, .fini = s_stop)
{
    fb_start(&s_cluster, NULL);
    cr_assert(zxt_worker_start(&s_cluster, "real", NULL) > 0);
    fp_t j, f;
    fp_init(&j, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fp_init(&f, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fj_hello(&j, "real-job", ZXP_HELLO_JOB | ZXP_HELLO_ACCEPT);
    for (uint64_t s = 1; s <= 40; s++) {
        uint8_t args[] = {0x91, (uint8_t)s}; /* [s] */
        fc_submit_ex(&j, s, "echo", ZXP_POOL_ANY, 0, 0, args, sizeof args);
    }
    fj_expect_accepted(&j, 40);
    zxp_send_empty(j.sock, NULL, ZXP_BYE);
    fj_hello(&f, "fetcher", 0);
    bool seen[41] = {false};
    size_t count = 0;
    uint64_t after = 0;
    while (count < 40) {
        fj_got_t got;
        fj_fetch(&f, j.id, after, 100, 20000, &got);
        cr_assert(got.n > 0 || got.info.held > count, "a long poll returned nothing");
        for (size_t i = 0; i < got.n; i++) {
            cr_assert_eq(got.status[i], ZXP_ST_OK);
            cr_assert(got.seq[i] >= 1 && got.seq[i] <= 40);
            if (!seen[got.seq[i]]) {
                seen[got.seq[i]] = true;
                count++;
            }
            after = got.index[i];
        }
    }
    fp_fini(&j);
    fp_fini(&f);
}

Test(jobs, a_job_survives_a_broker_killed_with_its_journal, .timeout = 120, .fini = s_stop)
{
    s_journal_dir();
    const char *extra[] = {"--journal", s_dir, "--client-timeout", "5", NULL};
    fb_start(&s_cluster, extra);
    fp_t w, j;
    fp_init(&w, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fp_init(&j, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fw_ready(&w, "node-a", 8, 0, "echo");
    fj_hello(&j, "durable", ZXP_HELLO_JOB | ZXP_HELLO_ACCEPT);
    for (uint64_t s = 1; s <= 5; s++) {
        fc_submit(&j, s, "echo");
    }
    /* ACCEPTED: in the journal, fsync'd */
    fj_expect_accepted(&j, 5);
    uint64_t seqs[5];
    fw_take_tasks(&w, 5, seqs);
    fw_result_tagged(&w, j.id, seqs[0], 0x41, 5);
    fw_result_tagged(&w, j.id, seqs[1], 0x42, 3000);
    cr_assert(fc_expect_result(&j, seqs[1], 5000, NULL));
    zxp_send_empty(j.sock, NULL, ZXP_BYE);
    fp_fini(&j);
    fp_fini(&w);
    zxt_kill(s_cluster.broker);
    cr_assert(zxt_broker_restart(&s_cluster, extra) == 0);
    /* every accepted task is there: held results, and the others run again
       (a result not yet committed at the kill runs again: at least once) */
    fp_t w2, f;
    fp_init(&w2, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fp_init(&f, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fj_hello(&f, "fetcher", 0);
    fw_ready(&w2, "node-b", 8, 0, "echo");
    fj_got_t got;
    fj_fetch(&f, j.id, 0, 100, 0, &got);
    cr_assert(got.info.submitted == 5, "submitted %" PRIu64, got.info.submitted);
    size_t held = got.n;
    cr_assert(held <= 2);
    size_t rerun = 5 - held;
    uint64_t again[5];
    fw_take_tasks(&w2, rerun, again);
    for (size_t i = 0; i < rerun; i++) {
        fw_result_tagged(&w2, j.id, again[i], (uint8_t)(0x50 + again[i]), 4);
    }
    bool seen[6] = {false};
    size_t count = 0;
    uint64_t after = 0;
    while (count < 5) {
        fj_fetch(&f, j.id, after, 100, 10000, &got);
        cr_assert(got.n > 0, "results missing after the restart");
        for (size_t i = 0; i < got.n; i++) {
            cr_assert(got.seq[i] >= 1 && got.seq[i] <= 5);
            count += !seen[got.seq[i]];
            seen[got.seq[i]] = true;
            after = got.index[i];
        }
    }
    cr_assert_str_eq(got.info.state, "done");
    fp_fini(&w2);
    fp_fini(&f);
}

static bool s_first_segment_gone(void *arg)
{
    char path[256];
    snprintf(path, sizeof path, "%s/seg-0000000000000001.zxj", (const char *)arg);
    return access(path, F_OK) != 0;
}

/* A snapshot (forced early with --journal-snapshot) replaces the records
   before it: after kill -9 the job is what it was, its RACKed results gone,
   the others held with their indexes and bytes. */
Test(jobs, a_snapshot_keeps_a_job_exactly_across_a_kill, .timeout = 120, .fini = s_stop)
{
    s_journal_dir();
    const char *extra[] = {"--journal", s_dir, "--journal-snapshot", "16K", NULL};
    fb_start(&s_cluster, extra);
    fp_t w, j, f;
    fp_init(&w, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fp_init(&j, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fp_init(&f, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fw_ready(&w, "node-a", 8, 0, "echo");
    fj_hello(&j, "snap", ZXP_HELLO_JOB | ZXP_HELLO_ACCEPT);
    const uint64_t n = 2000;
    uint8_t args[100];
    memset(args, 0x90, sizeof args);
    for (uint64_t s = 1; s <= n; s++) {
        fc_submit_ex(&j, s, "echo", ZXP_POOL_ANY, 0, 0, args, sizeof args);
    }
    zxp_send_empty(j.sock, NULL, ZXP_BYE);
    uint64_t answered = 0;
    while (answered < n) {
        cr_assert(fp_expect(&w, ZXP_TASK, 10000), "%" PRIu64 " of %" PRIu64 " tasks", answered, n);
        for (size_t i = 0; i < w.in.count; i++) {
            zxp_task_t t;
            zxp_get_task(&w.in, i, &t);
            fw_result_tagged(&w, j.id, t.seq, (uint8_t)t.seq, 100 + (t.seq % 7));
            answered++;
        }
    }
    /* fetch everything, RACK all but every 20th */
    fj_hello(&f, "fetcher", 0);
    uint64_t after = 0, got = 0;
    uint64_t idx_of[2001] = {0};
    while (got < n) {
        zxp_fetch_t fr = {.job = j.id, .after = after, .max = 4096, .wait_ms = 5000};
        cr_assert(zxp_send_fetch(f.sock, &fr) == 0);
        uint64_t rack[4096];
        size_t nrack = 0;
        for (;;) {
            int cmd = fp_recv(&f, 10000);
            cr_assert(cmd >= 0);
            if (cmd == ZXP_JRESULT) {
                for (size_t i = 0; i < f.in.count; i++) {
                    zxp_jresult_t jr;
                    zxp_get_jresult(&f.in, i, &jr);
                    zframe_t *p = zxp_payload_take(&f.in);
                    zframe_destroy(&p);
                    cr_assert(jr.r.seq >= 1 && jr.r.seq <= n && idx_of[jr.r.seq] == 0);
                    idx_of[jr.r.seq] = jr.index;
                    got++;
                    after = jr.index;
                    if (jr.r.seq % 20 != 0) {
                        rack[nrack++] = jr.r.seq;
                    }
                }
            } else if (cmd == ZXP_FETCHED) {
                break;
            }
        }
        if (nrack) {
            fj_rack(&f, j.id, rack, nrack);
        }
    }
    fj_got_t info;
    fj_fetch(&f, j.id, 0, 0, 0, &info);
    cr_assert_eq(info.info.held, n / 20);
    /* the RACKs' records shrink what is live: a snapshot comes, and the
       segments before it go once it is committed */
    cr_assert(zxt_wait_for(s_first_segment_gone, s_dir, 30), "no snapshot was written");
    /* and every record appended so far (the last RACKs') is committed */
    int64_t end = zclock_mono() + 30000;
    while (fp_status_total(fc_status(&f), "journal_uncommitted") > 0) {
        cr_assert(zclock_mono() < end, "the journal does not commit");
        fp_quiet(&f, 20);
    }
    fp_fini(&w);
    fp_fini(&f);
    fp_fini(&j);
    zxt_kill(s_cluster.broker);
    cr_assert(zxt_broker_restart(&s_cluster, extra) == 0);
    fp_t f2;
    fp_init(&f2, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fj_hello(&f2, "fetcher", 0);
    fj_got_t back;
    fj_fetch(&f2, j.id, 0, 4096, 0, &back);
    cr_assert_eq(back.info.submitted, n);
    cr_assert_eq(back.info.done, n);
    cr_assert_eq(back.info.acked, n - n / 20);
    cr_assert_eq(back.info.held, n / 20);
    cr_assert_eq(back.info.next, n);
    cr_assert_str_eq(back.info.state, "done");
    cr_assert_eq(back.n, n / 20);
    for (size_t i = 0; i < back.n; i++) {
        uint64_t s = back.seq[i];
        cr_assert_eq(s % 20, 0, "a RACKed result came back: %" PRIu64, s);
        cr_assert_eq(back.index[i], idx_of[s], "its completion index is kept");
        cr_assert_eq(back.first_byte[i], (uint8_t)s, "its bytes are kept");
        cr_assert_eq(back.len[i], 100 + (s % 7));
    }
    fp_fini(&f2);
}

/* A session that sends long-poll FETCH after FETCH for one job holds one
   wait, not one per FETCH: each new one answers the one before it at once
   (a flood of them used to keep 640 bytes each for their whole wait, and
   every turn of the broker walked them all). */
Test(jobs, a_fetch_flood_holds_one_wait_per_session_and_job, .timeout = 60, .fini = s_stop)
{
    fb_start(&s_cluster, NULL);
    fp_t w, j;
    fp_init(&w, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fp_init(&j, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fw_ready(&w, "node-f", 1, 0, "echo");
    fj_hello(&j, "flooded", ZXP_HELLO_JOB);
    fc_submit(&j, 1, "echo");
    uint64_t seq;
    fw_take_tasks(&w, 1, &seq);
    enum { N = 1000 };
    for (int i = 0; i < N; i++) {
        zxp_fetch_t f = {.job = j.id, .after = 0, .max = 10, .wait_ms = 30000};
        cr_assert(zxp_send_fetch(j.sock, &f) == 0);
    }
    /* the older ones are answered now, with nothing to fetch yet */
    int fetched = 0;
    while (fetched < N - 1 && fp_expect(&j, ZXP_FETCHED, 5000)) {
        fetched++;
    }
    cr_assert_eq(fetched, N - 1, "%d of the %d older FETCHes answered at once", fetched, N - 1);
    /* the newest still waits, and gets the result when it comes */
    cr_assert_eq(fp_quiet(&j, 300), -1, "the newest FETCH waits");
    fw_result_tagged(&w, j.id, seq, 0x42, 1);
    cr_assert(fp_expect(&j, ZXP_JRESULT, 5000), "the waiting FETCH got the result");
    cr_assert(fp_expect(&j, ZXP_FETCHED, 5000));
    fp_fini(&w);
    fp_fini(&j);
}
