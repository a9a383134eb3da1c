/*  test_durable.c - the broker's journal under crashes (issue 18), with
    the real zexec-broker and real zexec-worker processes; the job's client
    and fetcher are raw DEALER sockets (tests/broker_peers.h).

    - kill -9 of the broker at 10 random moments of a detached job (10,000
      tasks here; ZEXEC_DURABLE_TASKS=100000 for the long form of
      docs/testing.md), journal on with per-batch fsync: no task lost, every
      result fetched, and tasks run again no more often than the tasks in
      flight at the kills (each worker's window: threads + prefetch, with
      adaptive prefetch off). Executions are counted by the workers' tally
      plugin (tests/plugins/zexec_tally_plugin.c).
    - a torn journal tail: garbage after the last record, and the last record
      cut in half: the broker starts, cuts it off and serves what was
      committed.
    - disk full: the journal on a 2 MiB tmpfs in a private mount namespace
      (unshare -m, as root): submissions are refused with JournalError (never
      ACCEPTED), what was ACCEPTED completes and is fetchable, STATUS says so.
*/
#include "broker_peers.h"

#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>

static zxt_cluster_t s_cluster;
static char s_dir[128];
static char s_tally[192];

static void s_stop(void)
{
    zxt_cluster_stop(&s_cluster);
    if (s_dir[0]) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf %s", s_dir);
        cr_assert(system(cmd) == 0);
        s_dir[0] = 0;
    }
}

TestSuite(durable, .fini = s_stop);

static void s_mkdir(void)
{
    snprintf(s_dir, sizeof s_dir, "/tmp/zexec-test-durable-XXXXXX");
    cr_assert(mkdtemp(s_dir));
    snprintf(s_tally, sizeof s_tally, "%s/tally", s_dir);
}

/* HELLO (with flags) until WELCOME: the broker may be starting. */
static void s_hello(fp_t *c, const char *name, uint32_t flags)
{
    int64_t end = zclock_mono() + 30000;
    while (zclock_mono() < end) {
        if (zxp_send_hello_flags(c->sock, c->id, name, c->hb_ms, flags) == 0 &&
            fp_expect(c, ZXP_WELCOME, 500)) {
            return;
        }
        zclock_sleep(50);
    }
    cr_assert_fail("no WELCOME for %s", name);
}

/* A DEALER for a session id of our choosing (a job's client coming back). */
static void s_peer_with_id(fp_t *p, const uint8_t *id)
{
    fp_init(p, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    zsock_destroy(&p->sock);
    memcpy(p->id, id, ZXP_ID_LEN);
    p->sock = zsock_new(ZMQ_DEALER);
    cr_assert(p->sock);
    zxp_sock_setup(p->sock);
    zmq_setsockopt(zsock_resolve(p->sock), ZMQ_ROUTING_ID, p->id, ZXP_ID_LEN);
    cr_assert(zsock_connect(p->sock, "%s", s_cluster.client_ep) == 0);
}

/* SUBMITs tally [seq] for every seq in [from, to] not yet accepted. */
static void s_submit(fp_t *c, const char *fn, uint64_t from, uint64_t to, const bool *accepted,
                     size_t argbytes)
{
    zxp_out_t out;
    zxp_out_init(&out);
    zxp_out_begin(&out, ZXP_SUBMIT);
    uint8_t *args = calloc(1, argbytes + 16);
    cr_assert(args);
    for (uint64_t s = from; s <= to; s++) {
        if (accepted && accepted[s]) {
            continue;
        }
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        if (argbytes) {
            msgpack_pack_array(&pk, 1);
            msgpack_pack_bin_with_body(&pk, args, argbytes);
        } else {
            msgpack_pack_array(&pk, 1);
            msgpack_pack_uint64(&pk, s);
        }
        zxp_submit_t sub = {.seq = s, .fn = {fn, (uint32_t)strlen(fn)}};
        zxp_put_submit(&out, &sub);
        zxp_out_payload_mem(&out, sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
        if (zxp_out_full(&out) || out.count >= 1000) {
            zxp_out_send(&out, c->sock, NULL); /* a broker just killed drops it: re-sent */
            zxp_out_begin(&out, ZXP_SUBMIT);
            fp_heartbeats();
        }
    }
    if (out.count) {
        zxp_out_send(&out, c->sock, NULL);
    }
    zxp_out_fini(&out);
    free(args);
}

static void s_start_workers(int n)
{
    char plugin[512];
    const char *dir = getenv("ZEXEC_TEST_PLUGIN_DIR");
    cr_assert(dir, "ZEXEC_TEST_PLUGIN_DIR is not set (run through ctest)");
    snprintf(plugin, sizeof plugin, "%s/libzexec_tally_plugin.so", dir);
    setenv("ZEXEC_TALLY_FILE", s_tally, 1);
    const char *extra[] = {"--threads", "4",    "--procs",     "0",   "--prefetch", "1",
                           "--plugin",  plugin, "--heartbeat", "0.2", "--quiet",    NULL};
    for (int i = 0; i < n; i++) {
        char node[16];
        snprintf(node, sizeof node, "w%d", i);
        cr_assert(zxt_worker_start(&s_cluster, node, extra) > 0);
    }
}

static int s_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* What is not durably finished now, as the broker says (STATUS): tasks on
   workers, and journal records appended and not committed yet. */
static uint64_t s_inflight(fp_t *c)
{
    const msgpack_object *st = fc_status(c);
    return fp_status_total(st, "running") + fp_status_total(st, "journal_uncommitted");
}

static void s_kill_restart(const char *const extra[], int *kills)
{
    zxt_kill(s_cluster.broker);
    (*kills)++;
    cr_assert(zxt_broker_restart(&s_cluster, extra) == 0);
}

Test(durable, kill_nine_at_ten_random_moments_loses_nothing, .timeout = 1800)
{
    const char *env = getenv("ZEXEC_DURABLE_TASKS");
    uint64_t n = env ? strtoull(env, NULL, 10) : 10000;
    cr_assert(n >= 100 && n <= 10000000);
    s_mkdir();
    const char *extra[] = {"--journal", s_dir,         "--fsync", "batch",   "--prefetch-target-ms",
                           "0",         "--heartbeat", "0.2",     "--quiet", NULL};
    fb_start(&s_cluster, extra);
    const int nworkers = 2, window = nworkers * (4 + 1);
    s_start_workers(nworkers);
    unsigned seed = (unsigned)time(NULL);
    if (getenv("ZEXEC_DURABLE_SEED")) {
        seed = (unsigned)strtoul(getenv("ZEXEC_DURABLE_SEED"), NULL, 10);
    }
    srand(seed);
    /* 10 kills at random points of the job's progress (tasks accepted, then
       results fetched: 2n steps; the last tenth left out, where the job may
       be done before its step is seen) */
    uint64_t at[10];
    for (int i = 0; i < 10; i++) {
        at[i] = (uint64_t)((double)rand() / RAND_MAX * (double)(19 * n / 10));
    }
    qsort(at, 10, sizeof at[0], s_cmp_u64);
    printf("durable: %" PRIu64 " tasks, seed %u, kills at progress", n, seed);
    for (int i = 0; i < 10; i++) {
        printf(" %" PRIu64, at[i]);
    }
    printf("\n");
    int kills = 0;
    uint64_t inflight = 0; /* summed at each kill */
    int64_t t0 = zclock_mono();

    /* the job: submit, ACCEPTED, re-send what was not ACCEPTED after a kill */
    uint8_t job[ZXP_ID_LEN];
    fp_random_id(job);
    fp_t j;
    s_peer_with_id(&j, job);
    j.hb_ms = 1000;
    s_hello(&j, "durable", ZXP_HELLO_JOB | ZXP_HELLO_ACCEPT);
    bool *accepted = calloc(n + 1, 1);
    cr_assert(accepted);
    uint64_t naccepted = 0, sent_to = 0;
    while (naccepted < n) {
        if (sent_to < n) {
            uint64_t to = sent_to + 2000 < n ? sent_to + 2000 : n;
            s_submit(&j, "tally", sent_to + 1, to, NULL, 0);
            sent_to = to;
        }
        int cmd = fp_recv(&j, 200);
        if (cmd == ZXP_ACCEPTED) {
            for (size_t i = 0; i < j.in.count; i++) {
                uint64_t s = zxp_u(zxp_item(&j.in, i), 0);
                cr_assert(s >= 1 && s <= n);
                if (!accepted[s]) {
                    accepted[s] = true;
                    naccepted++;
                }
            }
        } else if (cmd == ZXP_RESET) {
            s_hello(&j, "durable", ZXP_HELLO_JOB | ZXP_HELLO_ACCEPT);
            s_submit(&j, "tally", 1, sent_to, accepted, 0);
        } else if (cmd == ZXP_RESULT) {
            for (size_t i = 0; i < j.in.count; i++) {
                zxp_result_t r;
                zxp_get_result(&j.in, i, &r);
                cr_assert_eq(r.status, ZXP_ST_OK, "task %" PRIu64 " failed (status %u)", r.seq,
                             r.status);
            }
        }
        if (kills < 10 && naccepted >= at[kills]) {
            inflight += s_inflight(&j);
            s_kill_restart(extra, &kills);
            s_hello(&j, "durable", ZXP_HELLO_JOB | ZXP_HELLO_ACCEPT);
            s_submit(&j, "tally", 1, sent_to, accepted, 0); /* what was not ACCEPTED */
        }
    }
    zxp_send_empty(j.sock, NULL, ZXP_BYE);
    fp_fini(&j);
    printf("durable: all %" PRIu64 " ACCEPTED after %.1f s, %d kills so far\n", n,
           (double)(zclock_mono() - t0) / 1000.0, kills);

    /* the results, fetched and RACKed by another session, resumed after
       each kill from what is still held */
    fp_t f;
    fp_init(&f, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    f.hb_ms = 1000; /* liveness 3 s: this loop may be slow under load */
    s_hello(&f, "fetcher", 0);
    uint32_t *delivered = calloc(n + 1, sizeof *delivered);
    cr_assert(delivered);
    uint64_t unique = 0, after = 0;
    uint64_t *rack = malloc(ZXP_MAX_BATCH * sizeof *rack);
    cr_assert(rack);
    zxp_jobinfo_t info = {0};
    for (;;) {
        zxp_fetch_t fr = {.job = job, .after = after, .max = ZXP_MAX_BATCH, .wait_ms = 1000};
        cr_assert(zxp_send_fetch(f.sock, &fr) == 0 || kills > 0);
        size_t nrack = 0;
        bool answered = false;
        while (!answered) {
            int cmd = fp_recv(&f, 5000);
            if (cmd < 0) {
                break; /* killed while asking: ask again */
            }
            if (cmd == ZXP_RESET) {
                s_hello(&f, "fetcher", 0); /* the broker lost us (a slow turn here) */
                break;
            }
            if (cmd == ZXP_JRESULT) {
                for (size_t i = 0; i < f.in.count; i++) {
                    zxp_jresult_t jr;
                    cr_assert_eq(zxp_item_bad(&f.in, i), 0);
                    zxp_get_jresult(&f.in, i, &jr);
                    zframe_t *p = zxp_payload_take(&f.in);
                    cr_assert(jr.r.seq >= 1 && jr.r.seq <= n);
                    cr_assert_eq(jr.r.status, ZXP_ST_OK);
                    /* the value is the seq (tally returns its argument) */
                    msgpack_zone z;
                    msgpack_zone_init(&z, 256);
                    msgpack_object o;
                    cr_assert(zxp_mp_unpack(zframe_data(p), zframe_size(p), &z, &o) == 0);
                    cr_assert(o.type == MSGPACK_OBJECT_POSITIVE_INTEGER && o.via.u64 == jr.r.seq);
                    msgpack_zone_destroy(&z);
                    zframe_destroy(&p);
                    unique += delivered[jr.r.seq]++ == 0;
                    if (jr.index > after) {
                        after = jr.index;
                    }
                    cr_assert(nrack < ZXP_MAX_BATCH);
                    rack[nrack++] = jr.r.seq;
                }
            } else if (cmd == ZXP_FETCHED) {
                cr_assert_eq(zxp_get_jobinfo(zxp_jobinfo_obj(&f.in), &info), 0);
                cr_assert(info.error[0] == 0, "%s", info.error);
                answered = true;
            }
        }
        if (nrack) {
            zxp_send_rack(f.sock, job, rack, nrack);
        }
        if (answered && nrack == 0) {
            if (unique == n && info.held == 0 && strcmp(info.state, "done") == 0) {
                break; /* (not done: a result fetched before it was committed runs again) */
            }
            if (info.held > 0) {
                after = 0; /* held but behind us: RACKs lost in a kill */
            }
        }
        if (kills < 10 && n + unique >= at[kills]) {
            inflight += s_inflight(&f);
            s_kill_restart(extra, &kills);
            s_hello(&f, "fetcher", 0);
            after = 0; /* resume from what is still held */
        }
        cr_assert(zclock_mono() - t0 < 1700 * 1000, "the job did not finish");
    }
    double secs = (double)(zclock_mono() - t0) / 1000.0;
    cr_assert_str_eq(info.state, "done");
    cr_assert_eq(info.submitted, n);

    /* executions, as the workers counted them */
    char *raw = NULL;
    size_t rawlen = 0;
    FILE *tf = fopen(s_tally, "rb");
    cr_assert(tf, "no tally file: no task ran?");
    fseek(tf, 0, SEEK_END);
    rawlen = (size_t)ftell(tf);
    fseek(tf, 0, SEEK_SET);
    raw = malloc(rawlen + 1);
    cr_assert(fread(raw, 1, rawlen, tf) == rawlen);
    fclose(tf);
    cr_assert_eq(rawlen % 8, 0);
    uint32_t *ran = calloc(n + 1, sizeof *ran);
    for (size_t i = 0; i < rawlen / 8; i++) {
        uint64_t s;
        memcpy(&s, raw + 8 * i, 8);
        cr_assert(s >= 1 && s <= n);
        ran[s]++;
    }
    uint64_t lost = 0, dups = 0, redelivered = 0;
    for (uint64_t s = 1; s <= n; s++) {
        lost += ran[s] == 0 || delivered[s] == 0;
        dups += ran[s] > 1 ? ran[s] - 1 : 0;
        redelivered += delivered[s] > 1 ? delivered[s] - 1 : 0;
    }
    /* the bound: what was in flight at the kills (on workers, or not yet
       committed: STATUS just before each kill), and the workers' windows
       for what moved between that STATUS and the kill */
    uint64_t bound = inflight + (uint64_t)(window * kills);
    printf("durable: %" PRIu64 " tasks, %d kills, %.1f s: lost %" PRIu64 ", ran again %" PRIu64
           " (bound: %" PRIu64 " in flight at the kills + %d x %d), results delivered again "
           "%" PRIu64 "\n",
           n, kills, secs, lost, dups, inflight, window, kills, redelivered);
    cr_assert_eq(kills, 10);
    cr_assert_eq(lost, 0, "%" PRIu64 " tasks lost", lost);
    cr_assert(dups <= bound, "%" PRIu64 " tasks ran again, more than %" PRIu64, dups, bound);
    free(raw);
    free(ran);
    free(rack);
    free(delivered);
    free(accepted);
    fp_fini(&f);
}

/* The newest segment file of the journal in s_dir. */
static void s_last_segment(char *path, size_t len)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "ls %s/seg-*.zxj | sort | tail -1", s_dir);
    FILE *p = popen(cmd, "r");
    cr_assert(p);
    cr_assert(fgets(path, (int)len, p));
    pclose(p);
    path[strcspn(path, "\n")] = 0;
}

/* Submits n tasks as a job, waits for every ACCEPTED, kills the broker. */
static void s_job_then_kill(const uint8_t *job, uint64_t n)
{
    fp_t j;
    s_peer_with_id(&j, job);
    s_hello(&j, "torn", ZXP_HELLO_JOB | ZXP_HELLO_ACCEPT);
    s_submit(&j, "tally", 1, n, NULL, 0);
    uint64_t got = 0;
    while (got < n) {
        cr_assert(fp_expect(&j, ZXP_ACCEPTED, 10000));
        got += j.in.count;
    }
    fp_fini(&j);
    zxt_kill(s_cluster.broker);
}

static zxp_jobinfo_t s_info(const uint8_t *job)
{
    fp_t f;
    fp_init(&f, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    s_hello(&f, "info", 0);
    zxp_fetch_t fr = {.job = job};
    cr_assert(zxp_send_fetch(f.sock, &fr) == 0);
    cr_assert(fp_expect(&f, ZXP_FETCHED, 10000));
    zxp_jobinfo_t info;
    cr_assert_eq(zxp_get_jobinfo(zxp_jobinfo_obj(&f.in), &info), 0);
    fp_fini(&f);
    return info;
}

Test(durable, a_torn_tail_is_cut_off_and_the_rest_recovered, .timeout = 120)
{
    s_mkdir();
    /* no worker: the tasks stay queued, so the job's figures are exact */
    const char *extra[] = {"--journal", s_dir, "--quiet", NULL};
    fb_start(&s_cluster, extra);
    uint8_t job[ZXP_ID_LEN];
    fp_random_id(job);
    s_job_then_kill(job, 100);
    char seg[256];
    s_last_segment(seg, sizeof seg);
    struct stat st;
    cr_assert(stat(seg, &st) == 0);
    /* a record header that promises more than follows: a write torn by the
       crash */
    int fd = open(seg, O_WRONLY | O_APPEND);
    cr_assert(fd >= 0);
    uint8_t torn[13] = {0x40, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 2, 1, 0, 0, 0};
    cr_assert(write(fd, torn, sizeof torn) == (ssize_t)sizeof torn);
    close(fd);
    cr_assert(zxt_broker_restart(&s_cluster, extra) == 0);
    zxp_jobinfo_t info = s_info(job);
    cr_assert_eq(info.submitted, 100, "every committed task is there");
    cr_assert_eq(info.queued, 100);
    struct stat st2;
    cr_assert(stat(seg, &st2) == 0);
    cr_assert(st2.st_size <= st.st_size, "the torn bytes were cut off");
    /* now the last record cut in half */
    zxt_kill(s_cluster.broker);
    s_last_segment(seg, sizeof seg);
    cr_assert(stat(seg, &st) == 0);
    cr_assert(truncate(seg, st.st_size - 5) == 0);
    cr_assert(zxt_broker_restart(&s_cluster, extra) == 0);
    info = s_info(job);
    cr_assert(info.submitted >= 99 && info.submitted <= 100, "submitted %" PRIu64, info.submitted);
    /* and it serves: a worker runs what is queued */
    s_start_workers(1);
    fp_t f;
    fp_init(&f, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    s_hello(&f, "fetcher", 0);
    uint64_t got = 0;
    while (got < info.submitted) {
        zxp_fetch_t fr = {.job = job, .after = 0, .max = 1000, .wait_ms = 5000};
        cr_assert(zxp_send_fetch(f.sock, &fr) == 0);
        got = 0;
        for (;;) {
            int cmd = fp_recv(&f, 10000);
            cr_assert(cmd >= 0);
            if (cmd == ZXP_JRESULT) {
                got += f.in.count;
            } else if (cmd == ZXP_FETCHED) {
                break;
            }
        }
    }
    fp_fini(&f);
}

Test(durable, a_full_disk_refuses_submissions_and_loses_nothing_accepted, .timeout = 180)
{
    if (geteuid() != 0) {
        cr_skip_test("needs root for a tmpfs in a private mount namespace (unshare -m)");
    }
    s_mkdir();
    char jdir[160];
    snprintf(jdir, sizeof jdir, "%s/journal", s_dir);
    cr_assert(mkdir(jdir, 0700) == 0);
    s_cluster.client_port = zxt_free_port();
    s_cluster.worker_port = zxt_free_port();
    snprintf(s_cluster.client_ep, sizeof s_cluster.client_ep, "tcp://127.0.0.1:%d",
             s_cluster.client_port);
    snprintf(s_cluster.worker_ep, sizeof s_cluster.worker_ep, "tcp://127.0.0.1:%d",
             s_cluster.worker_port);
    char *broker = zxt_bin("zexec-broker");
    char script[1024];
    snprintf(script, sizeof script,
             "mount -t tmpfs -o size=2m tmpfs %s && exec %s --clients %s --workers %s "
             "--journal %s --quiet",
             jdir, broker, s_cluster.client_ep, s_cluster.worker_ep, jdir);
    char *argv[] = {"/usr/bin/unshare", "-m", "/bin/sh", "-c", script, NULL};
    s_cluster.broker = zxt_spawn(argv);
    cr_assert(s_cluster.broker > 0);
    free(broker);
    fp_t j;
    fp_init(&j, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    s_hello(&j, "filler", ZXP_HELLO_JOB | ZXP_HELLO_ACCEPT);
    /* 64 KiB arguments: about 32 fill the tmpfs */
    const uint64_t n = 100;
    bool accepted[101] = {false};
    bool refused[101] = {false};
    char why[256] = "";
    /* one at a time, each answered (ACCEPTED or refused) before the next,
       until the disk is full, then the rest */
    uint64_t answered = 0;
    for (uint64_t s = 1; s <= n; s++) {
        s_submit(&j, "tally", s, s, NULL, 64 * 1024);
        while (!accepted[s] && !refused[s]) {
            int cmd = fp_recv(&j, 20000);
            cr_assert(cmd >= 0, "task %" PRIu64 " not answered", s);
            for (size_t i = 0; cmd == ZXP_ACCEPTED && i < j.in.count; i++) {
                uint64_t a = zxp_u(zxp_item(&j.in, i), 0);
                cr_assert(a <= n && !refused[a], "task %" PRIu64 " both refused and ACCEPTED", a);
                answered += !accepted[a];
                accepted[a] = true;
            }
            for (size_t i = 0; cmd == ZXP_RESULT && i < j.in.count; i++) {
                zxp_result_t r;
                zxp_get_result(&j.in, i, &r);
                zframe_t *p = zxp_payload_take(&j.in);
                if (r.status == ZXP_ST_REJECTED) {
                    cr_assert(!accepted[r.seq], "task %" PRIu64 " ACCEPTED then refused", r.seq);
                    char type[64];
                    fp_error_of(p, type, sizeof type, why, sizeof why);
                    cr_assert_str_eq(type, "JournalError");
                    answered += !refused[r.seq];
                    refused[r.seq] = true;
                }
                zframe_destroy(&p);
            }
        }
    }
    cr_assert_eq(answered, n);
    uint64_t nacc = 0, nref = 0;
    for (uint64_t s = 1; s <= n; s++) {
        nacc += accepted[s];
        nref += refused[s];
    }
    printf("disk full: %" PRIu64 " ACCEPTED, %" PRIu64 " refused: %s\n", nacc, nref, why);
    cr_assert(nacc > 0 && nref > 0);
    cr_assert(strstr(why, "No space left on device"), "%s", why);
    const msgpack_object *st = fc_status(&j);
    const msgpack_object *totals = fp_map_get(st, "totals");
    const msgpack_object *jr = fp_map_get(totals, "journal");
    cr_assert(jr && jr->type == MSGPACK_OBJECT_STR && jr->via.str.size > 2 &&
                  memcmp(jr->via.str.ptr, "ok", 2) != 0,
              "STATUS shows the journal's error");
    /* a new submission is refused too */
    s_submit(&j, "tally", n + 1, n + 1, NULL, 0);
    zxp_result_t r;
    cr_assert(fc_expect_result(&j, n + 1, 10000, &r));
    cr_assert_eq(r.status, ZXP_ST_REJECTED);
    /* what was ACCEPTED runs and its results are served */
    zxp_send_empty(j.sock, NULL, ZXP_BYE);
    s_start_workers(1);
    fp_t f;
    fp_init(&f, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    s_hello(&f, "fetcher", 0);
    bool got[101] = {false};
    uint64_t ngot = 0;
    int64_t end = zclock_mono() + 60000;
    while (ngot < nacc && zclock_mono() < end) {
        zxp_fetch_t fr = {.job = j.id, .after = 0, .max = 1000, .wait_ms = 2000};
        cr_assert(zxp_send_fetch(f.sock, &fr) == 0);
        for (;;) {
            int cmd = fp_recv(&f, 10000);
            cr_assert(cmd >= 0);
            if (cmd == ZXP_JRESULT) {
                for (size_t i = 0; i < f.in.count; i++) {
                    zxp_jresult_t x;
                    zxp_get_jresult(&f.in, i, &x);
                    zframe_t *p = zxp_payload_take(&f.in);
                    zframe_destroy(&p);
                    cr_assert(x.r.seq <= n && accepted[x.r.seq]);
                    ngot += !got[x.r.seq];
                    got[x.r.seq] = true;
                }
            } else if (cmd == ZXP_FETCHED) {
                break;
            }
        }
    }
    cr_assert_eq(ngot, nacc, "every ACCEPTED task's result is served");
    fp_fini(&f);
    fp_fini(&j);
}
