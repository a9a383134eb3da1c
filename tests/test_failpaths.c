/*  test_failpaths.c - the failure paths of issue 16 against the real
    binaries on loopback: a refused handshake (an unknown CURVE key, a plain
    client against a CURVE broker) fails the client's futures with the
    reason, lets zx_executor_destroy return and `zexec status --timeout`
    answer in time, and a refused worker says why and still stops on
    SIGTERM; one bad item of a SUBMIT fails alone, a WRESULT with an unknown
    status fails its task, a result that is not one msgpack value fails with
    ProtocolError. Every case here hung or lied before: each test is bounded
    by its criterion timeout, so a hang fails it. */
#include "broker_peers.h"
#include "zexec.h"
#include "zx_auth.h"
#include "zx_czmq.h"
#include "zx_testutil.h"

#include "zexec_worker.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

TestSuite(failpaths, .timeout = 120);

static char s_dir[64];
static zxt_cluster_t s_cluster;

static char *s_path(const char *name)
{
    static char p[16][300];
    static int n;
    n = (n + 1) % 16;
    snprintf(p[n], sizeof p[n], "%s/%s", s_dir, name);
    return p[n];
}

/* Keys for a broker, an allowlisted client and worker, and a stranger. */
static void s_keys(void)
{
    snprintf(s_dir, sizeof s_dir, "/tmp/zx-fail-XXXXXX");
    cr_assert(mkdtemp(s_dir));
    char err[256];
    const char *names[] = {"broker", "alice", "w1", "eve"};
    for (size_t i = 0; i < 4; i++) {
        cr_assert_eq(zx__auth_keygen(s_dir, names[i], err, sizeof err), 0, "%s", err);
    }
    mkdir(s_path("clients"), 0700);
    mkdir(s_path("workers"), 0700);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cp %s/alice %s/clients/ && cp %s/w1 %s/workers/", s_dir, s_dir,
             s_dir, s_dir);
    cr_assert_eq(system(cmd), 0);
}

static void s_fini(void)
{
    zxt_cluster_stop(&s_cluster);
    if (s_dir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", s_dir);
        (void)!system(cmd);
    }
}

static void s_curve_broker(void)
{
    s_keys();
    const char *bargs[] = {"--key",
                           s_path("broker_secret"),
                           "--client-keys",
                           s_path("clients"),
                           "--worker-keys",
                           s_path("workers"),
                           NULL};
    cr_assert_eq(zxt_broker_start(&s_cluster, bargs), 0);
}

static const uint8_t ARGS[] = {0x91, 0x2a}; /* [42] */

/* Submits 5 tasks with o and checks that each fails with ZX_ECONN and a
   message containing want (NULL: naming a mechanism mismatch); then that
   destroy returns. */
static void s_expect_refused(const zx_options_t *o, const char *want)
{
    zx_executor_t *ex = zx_executor_new(s_cluster.client_ep, o);
    cr_assert(ex);
    zx_future_t *fs[5];
    for (int i = 0; i < 5; i++) {
        fs[i] = zx_submit(ex, "echo", ARGS, sizeof ARGS);
        cr_assert(fs[i]);
    }
    for (int i = 0; i < 5; i++) {
        const void *v;
        size_t len;
        /* broker_timeout is 600 s: only the refusal can end these in time */
        cr_assert_eq(zx_future_result(fs[i], 90, &v, &len), ZX_ERAISED, "task %d", i);
        const zx_error_t *e = zx_future_exception(fs[i], 0);
        cr_assert(e);
        cr_assert_eq(e->code, ZX_ECONN);
        cr_assert_str_eq(e->type, "HandshakeRefusedError");
        if (want) {
            cr_assert(strstr(e->message, want), "'%s' names '%s'", e->message, want);
        } else {
            cr_assert(strstr(e->message, "security mechanism mismatch") ||
                          strstr(e->message, "this side uses no CURVE key"),
                      "'%s' names the mismatch", e->message);
        }
        cr_assert(strstr(e->message, s_cluster.client_ep), "'%s' names the broker", e->message);
        zx_future_unref(&fs[i]);
    }
    /* a task submitted after the refusal fails at once with it too */
    zx_future_t *late = zx_submit(ex, "echo", ARGS, sizeof ARGS);
    cr_assert(late);
    cr_assert_eq(zx_future_result(late, 90, NULL, NULL), ZX_ERAISED);
    cr_assert_eq(zx_future_exception(late, 0)->code, ZX_ECONN);
    zx_future_unref(&late);
    zx_executor_destroy(&ex); /* returned: the test's timeout did not fire */
    cr_assert_null(ex);
}

Test(failpaths, an_unknown_curve_key_fails_futures_with_the_brokers_refusal, .fini = s_fini)
{
    s_curve_broker();
    zx_options_t o = {
        .broker_timeout = 600, .key = s_path("eve_secret"), .server_key = s_path("broker")};
    s_expect_refused(&o, "refused the handshake: key not allowed (ZAP status 400)");
}

Test(failpaths, a_plain_client_against_a_curve_broker_fails_with_the_mismatch, .fini = s_fini)
{
    s_curve_broker();
    zx_options_t o = {.broker_timeout = 600};
    /* which side sees the mismatch first is libzmq's race: either the
       client's own words, or the broker closing on it */
    s_expect_refused(&o, NULL);
}

/* Runs `zexec status` with args; returns its exit status and what it wrote. */
static int s_status(const char *args, char *out, size_t size)
{
    char *bin = zxt_bin("zexec");
    char cmd[2048];
    /* the outer timeout only keeps a hang from outliving the test */
    snprintf(cmd, sizeof cmd, "timeout -s KILL 100 %s status --broker %s %s 2>&1", bin,
             s_cluster.client_ep, args);
    free(bin);
    FILE *p = popen(cmd, "r");
    cr_assert(p);
    size_t n = fread(out, 1, size - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(failpaths, zexec_status_reports_a_refused_handshake_within_its_timeout, .fini = s_fini)
{
    s_curve_broker();
    char out[4096], args[1024];
    snprintf(args, sizeof args, "--timeout 4 --key %s --server-key %s", s_path("eve_secret"),
             s_path("broker"));
    cr_assert_eq(s_status(args, out, sizeof out), 1, "%s", out);
    cr_assert(strstr(out, "key not allowed"), "%s", out);
    cr_assert_eq(s_status("--timeout 4", out, sizeof out), 1, "%s", out);
    cr_assert(strstr(out, "security mechanism mismatch") ||
                  strstr(out, "this side uses no CURVE key"),
              "%s", out);
    /* the allowlisted key gets its answer */
    snprintf(args, sizeof args, "--timeout 30 --key %s --server-key %s", s_path("alice_secret"),
             s_path("broker"));
    cr_assert_eq(s_status(args, out, sizeof out), 0, "%s", out);
}

static bool s_file_has(void *arg)
{
    const char **a = arg;
    FILE *f = fopen(a[0], "r");
    if (!f) {
        return false;
    }
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    return strstr(buf, a[1]) != NULL;
}

Test(failpaths, a_refused_worker_says_why_and_stops_on_sigterm, .fini = s_fini)
{
    s_curve_broker();
    char *bin = zxt_bin("zexec-worker");
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "exec %s --broker %s --key %s --server-key %s --threads 1 --procs 0 "
             "--heartbeat 0.2 >%s 2>&1",
             bin, s_cluster.worker_ep, s_path("eve_secret"), s_path("broker"), s_path("w.log"));
    free(bin);
    char *const argv[] = {"/bin/sh", "-c", cmd, NULL};
    pid_t pid = zxt_spawn(argv);
    cr_assert_gt(pid, 0);
    const char *a[] = {s_path("w.log"), "refused the handshake: key not allowed"};
    cr_assert(zxt_wait_for(s_file_has, a, 60), "the worker logs the refusal");
    kill(pid, SIGTERM);
    int st = 0;
    cr_assert(zxt_wait_exit(pid, 60, &st), "the refused worker stops on SIGTERM");
    cr_assert(WIFEXITED(st));
}

/* ---- per-item validation ------------------------------------------------------------ */

static const char *const s_fast[] = {"--heartbeat", "0.1", "--liveness", "3", NULL};

Test(failpaths, a_bad_submit_item_fails_alone_and_the_rest_of_its_batch_runs, .fini = s_fini)
{
    fb_start(&s_cluster, s_fast);
    fp_t w, c;
    fp_init(&w, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fw_ready(&w, "w", 8, 0, "f");
    fp_init(&c, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fc_hello(&c, "mixed");
    zxp_out_t out;
    zxp_out_init(&out);
    zxp_out_begin(&out, ZXP_SUBMIT);
    for (uint64_t seq = 1; seq <= 4; seq++) {
        zxp_submit_t s = {.seq = seq, .fn = {"f", 1}};
        if (seq == 2) {
            s.retries = 500; /* over 100 */
        }
        if (seq == 3) {
            s.pool = 7; /* no such pool */
        }
        zxp_put_submit(&out, &s);
        zxp_out_payload_mem(&out, "\x90", 1);
    }
    cr_assert_eq(zxp_out_send(&out, c.sock, NULL), 0);
    zxp_out_fini(&out);
    /* the good ones run */
    size_t got = 0;
    uint64_t seqs = 0;
    while (got < 2) {
        cr_assert(fp_expect(&w, ZXP_TASK, 10000), "tasks 1 and 4 reach the worker");
        for (size_t i = 0; i < w.in.count; i++) {
            zxp_task_t t;
            zxp_get_task(&w.in, i, &t);
            seqs |= 1u << t.seq;
        }
        got += fw_answer_all(&w);
    }
    cr_assert_eq(seqs, (1u << 1) | (1u << 4));
    /* the bad ones are answered: REJECTED with the reason and the code */
    int rejected = 0, ok = 0;
    while (rejected + ok < 4) {
        cr_assert(fp_expect(&c, ZXP_RESULT, 10000), "every item is answered");
        for (size_t i = 0; i < c.in.count; i++) {
            zxp_result_t r;
            zxp_get_result(&c.in, i, &r);
            zframe_t *p = zxp_payload_take(&c.in);
            if (r.status == ZXP_ST_OK) {
                cr_assert(r.seq == 1 || r.seq == 4);
                ok++;
            } else {
                cr_assert_eq(r.status, ZXP_ST_REJECTED);
                char type[64], msg[256];
                fp_error_of(p, type, sizeof type, msg, sizeof msg);
                cr_assert_str_eq(type, "BadRequestError");
                if (r.seq == 2) {
                    cr_assert(strstr(msg, "retries out of range -1..100 (bad item code 4)"), "%s",
                              msg);
                } else {
                    cr_assert_eq(r.seq, 3);
                    cr_assert(strstr(msg, "pool out of range 0..2 (bad item code 2)"), "%s", msg);
                }
                rejected++;
            }
            zframe_destroy(&p);
        }
    }
    cr_assert_eq(rejected, 2);
    fp_fini(&w);
    fp_fini(&c);
}

Test(failpaths, a_worker_result_with_an_unknown_status_fails_its_task, .fini = s_fini)
{
    fb_start(&s_cluster, s_fast);
    fp_t w, c;
    fp_init(&w, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fw_ready(&w, "odd", 1, 0, "f");
    fp_init(&c, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fc_hello(&c, "waiting");
    fc_submit(&c, 1, "f");
    fc_submit(&c, 2, "f");
    cr_assert(fp_expect(&w, ZXP_TASK, 10000));
    zxp_task_t t;
    zxp_get_task(&w.in, 0, &t);
    fw_result_ex(&w, c.id, t.seq, 99, ZXP_POOL_THREAD, true, "\xc0", 1);
    cr_assert(fp_expect(&c, ZXP_RESULT, 10000), "the task is answered, not left RUNNING");
    zxp_result_t r;
    zxp_get_result(&c.in, 0, &r);
    cr_assert_eq(r.seq, t.seq);
    cr_assert_eq(r.status, ZXP_ST_RAISED);
    zframe_t *p = zxp_payload_take(&c.in);
    char type[64], msg[256];
    fp_error_of(p, type, sizeof type, msg, sizeof msg);
    zframe_destroy(&p);
    cr_assert_str_eq(type, "ProtocolError");
    cr_assert(strstr(msg, "worker odd answered with unknown status 99"), "%s", msg);
    /* its slot was freed: the next task comes */
    cr_assert(fp_expect(&w, ZXP_TASK, 10000), "the slot is free again");
    fp_fini(&w);
    fp_fini(&c);
}

/* A fake worker answers every task with bytes; the real client library
   must not call them a value. */
static void s_bad_value(const void *bytes, size_t len)
{
    fb_start(&s_cluster, s_fast);
    fp_t w;
    fp_init(&w, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fw_ready(&w, "liar", 1, 0, "f");
    zx_options_t o = {.broker_timeout = 600};
    zx_executor_t *ex = zx_executor_new(s_cluster.client_ep, &o);
    cr_assert(ex);
    zx_future_t *f = zx_submit(ex, "f", "\x90", 1);
    cr_assert(fp_expect(&w, ZXP_TASK, 10000));
    zxp_task_t t;
    zxp_get_task(&w.in, 0, &t);
    fw_result_ex(&w, t.session, t.seq, ZXP_ST_OK, ZXP_POOL_THREAD, true, bytes, len);
    cr_assert_eq(zx_future_result(f, 60, NULL, NULL), ZX_ERAISED, "not ZX_OK");
    const zx_error_t *e = zx_future_exception(f, 0);
    cr_assert_eq(e->code, ZX_EPROTO);
    cr_assert_str_eq(e->type, "ProtocolError");
    cr_assert(strstr(e->message, "not one well-formed msgpack value"), "%s", e->message);
    zx_future_unref(&f);
    zx_executor_destroy(&ex);
    fp_fini(&w);
}

Test(failpaths, a_result_announcing_four_billion_elements_is_a_protocol_error, .fini = s_fini)
{
    s_bad_value("\xdd\xff\xff\xff\xff", 5);
}

Test(failpaths, a_result_of_raw_bytes_is_a_protocol_error, .fini = s_fini)
{
    s_bad_value("raw bytes", 9); /* 'r' is a fixint, then trailing bytes */
}

/* ---- ranges, duplicates, versions ---------------------------------------------------- */

/* READY by hand, with the pid and the running list under the test's control. */
static void s_ready_raw(fp_t *w, uint32_t pid, uint32_t threads, const uint8_t *session,
                        const uint64_t *seqs, size_t n)
{
    zxp_out_t out;
    zxp_out_init(&out);
    zxp_out_begin(&out, ZXP_READY);
    msgpack_packer *pk = zxp_out_pk(&out);
    msgpack_pack_array(pk, 10);
    msgpack_pack_uint32(pk, ZXP_VERSION);
    msgpack_pack_bin(pk, ZXP_ID_LEN);
    msgpack_pack_bin_body(pk, w->id, ZXP_ID_LEN);
    msgpack_pack_str(pk, 1);
    msgpack_pack_str_body(pk, "w", 1);
    msgpack_pack_uint32(pk, pid);
    msgpack_pack_uint32(pk, threads);
    msgpack_pack_uint32(pk, 0);
    msgpack_pack_uint32(pk, 0);
    msgpack_pack_uint32(pk, w->hb_ms);
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 2);
    msgpack_pack_str(pk, 1);
    msgpack_pack_str_body(pk, "f", 1);
    msgpack_pack_uint8(pk, ZXP_POOLS_THREAD);
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n; i++) {
        msgpack_pack_array(pk, 3);
        msgpack_pack_bin(pk, ZXP_ID_LEN);
        msgpack_pack_bin_body(pk, session, ZXP_ID_LEN);
        msgpack_pack_uint64(pk, seqs[i]);
        msgpack_pack_uint8(pk, ZXP_POOL_THREAD);
    }
    cr_assert(zxp_out_send(&out, w->sock, NULL) == 0);
    zxp_out_fini(&out);
}

Test(failpaths, a_worker_with_a_pid_above_a_million_registers, .fini = s_fini)
{
    fb_start(&s_cluster, s_fast);
    /* Linux's PID_MAX_LIMIT (systemd's pid_max on 64-bit), and pid_t's top */
    uint32_t pids[] = {4194304, 2147483647u};
    for (size_t i = 0; i < 2; i++) {
        fp_t w;
        fp_init(&w, s_cluster.worker_ep, ZXP_ROLE_WORKER);
        s_ready_raw(&w, pids[i], 1, NULL, NULL, 0);
        cr_assert(fp_expect(&w, ZXP_WELCOME, 10000), "pid %u registers", pids[i]);
        fp_fini(&w);
    }
}

Test(failpaths, a_ready_listing_a_task_twice_takes_one_slot, .fini = s_fini)
{
    const char *const args[] = {"--heartbeat", "0.1", "--prefetch-target-ms", "0", NULL};
    fb_start(&s_cluster, args);
    fp_t w, c;
    fp_init(&c, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fc_hello(&c, "owner");
    fp_init(&w, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    uint64_t seqs[] = {5, 5};
    s_ready_raw(&w, 1234, 1, c.id, seqs, 2);
    cr_assert(fp_expect(&w, ZXP_WELCOME, 10000));
    /* the one task it runs ends: its one slot is free again */
    fw_result_ex(&w, c.id, 5, ZXP_ST_OK, ZXP_POOL_THREAD, true, "\xc0", 1);
    fc_submit(&c, 6, "f");
    cr_assert(fp_expect(&w, ZXP_TASK, 10000), "the slot was not leaked");
    zxp_task_t t;
    zxp_get_task(&w.in, 0, &t);
    cr_assert_eq(t.seq, 6);
    fp_fini(&w);
    fp_fini(&c);
}

Test(failpaths, libzmq_older_than_4_3_2_is_refused_with_a_clear_message)
{
    char err[256] = "";
    cr_assert_not(zx__zmq_version_ok(4, 3, 1, err, sizeof err));
    cr_assert(strstr(err, "libzmq 4.3.1 is too old: zexec needs 4.3.2 or newer"), "%s", err);
    cr_assert_not(zx__zmq_version_ok(4, 2, 5, err, sizeof err));
    cr_assert(zx__zmq_version_ok(4, 3, 2, err, sizeof err));
    cr_assert(zx__zmq_version_ok(5, 0, 0, err, sizeof err));
    cr_assert(zx__zmq_runtime_ok(err, sizeof err), "this machine's libzmq: %s", err);
}

Test(failpaths, cmake_refuses_libzmq_older_than_4_3_2, .timeout = 240)
{
    const char *src = getenv("ZEXEC_SOURCE_DIR");
    cr_assert(src, "ZEXEC_SOURCE_DIR is set by CTest");
    char dir[] = "/tmp/zx-cmake-XXXXXX";
    cr_assert(mkdtemp(dir));
    char path[600];
    snprintf(path, sizeof path, "%s/libzmq.pc", dir);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs("prefix=/usr\nlibdir=/usr/lib\nincludedir=/usr/include\n\nName: libzmq\n"
          "Description: an old libzmq\nVersion: 4.3.1\nLibs: -lzmq\nCflags:\n",
          f);
    fclose(f);
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "PKG_CONFIG_LIBDIR=%s PKG_CONFIG_PATH= cmake -S %s -B %s/build -DZEXEC_TESTS=OFF "
             "-DZEXEC_BENCH=OFF 2>&1",
             dir, src, dir);
    FILE *p = popen(cmd, "r");
    cr_assert(p);
    char out[65536];
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    int st = pclose(p);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    (void)!system(cmd);
    cr_assert_neq(st, 0, "configure fails");
    cr_assert(strstr(out, "zexec needs libzmq 4.3.2 or newer"), "%s", out);
    cr_assert(strstr(out, "found libzmq 4.3.1"), "%s", out);
}

/* ---- size limits ------------------------------------------------------------------- */

/* "big": returns a bin of the size its one argument names. */
static int s_big(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    (void)task;
    uint64_t n = args->via.array.size ? args->via.array.ptr[0].via.u64 : 0;
    char *buf = calloc(1, n ? n : 1);
    msgpack_pack_bin(result, n);
    msgpack_pack_bin_body(result, buf, n);
    free(buf);
    return ZX_OK;
}

typedef struct {
    zx_worker_t *w;
    pthread_t thread;
} s_embedded_t;

static void *s_embedded_run(void *arg)
{
    zx_worker_run(((s_embedded_t *)arg)->w);
    return NULL;
}

static void s_embedded_start(s_embedded_t *e, const char *ep)
{
    zx_worker_opts_t o = {.node = "embedded", .threads = 2, .procs = -1, .heartbeat = 0.1};
    e->w = zx_worker_new(ep, &o);
    cr_assert(e->w);
    cr_assert_eq(zx_worker_register(e->w, "big", s_big, ZX_POOLS_THREAD), 0);
    cr_assert_eq(pthread_create(&e->thread, NULL, s_embedded_run, e), 0);
}

static void s_embedded_stop(s_embedded_t *e)
{
    zx_worker_stop(e->w);
    pthread_join(e->thread, NULL);
    zx_worker_destroy(&e->w);
}

/* msgpack [n] */
static size_t s_arg_u32(uint8_t buf[6], uint32_t n)
{
    buf[0] = 0x91;
    buf[1] = 0xce;
    buf[2] = (uint8_t)(n >> 24);
    buf[3] = (uint8_t)(n >> 16);
    buf[4] = (uint8_t)(n >> 8);
    buf[5] = (uint8_t)n;
    return 6;
}

/* A SUBMIT over the broker's --max-msg fails at once, naming the limit; the
   connection stays and the next task runs. */
Test(failpaths, a_submit_over_the_brokers_limit_fails_alone_and_names_it, .fini = s_fini)
{
    const char *const bargs[] = {"--max-msg", "1M", NULL};
    cr_assert_eq(zxt_broker_start(&s_cluster, bargs), 0);
    cr_assert_gt(zxt_worker_start(&s_cluster, "w", NULL), 0);
    zx_options_t o = {.broker_timeout = 600};
    zx_executor_t *ex = zx_executor_new(s_cluster.client_ep, &o);
    cr_assert(ex);
    /* connected first: the limit comes with WELCOME */
    zx_future_t *f0 = zx_submit(ex, "echo", ARGS, sizeof ARGS);
    cr_assert_eq(zx_future_result(f0, 60, NULL, NULL), ZX_OK);
    zx_future_unref(&f0);
    size_t n = 2u << 20;
    uint8_t *big = malloc(n);
    big[0] = 0x91;
    big[1] = 0xc6; /* [bin32 of n - 6 bytes] */
    uint32_t bl = (uint32_t)(n - 6);
    big[2] = (uint8_t)(bl >> 24);
    big[3] = (uint8_t)(bl >> 16);
    big[4] = (uint8_t)(bl >> 8);
    big[5] = (uint8_t)bl;
    memset(big + 6, 0, n - 6);
    zx_future_t *f = zx_submit(ex, "echo", big, n);
    zx_future_t *g = zx_submit(ex, "echo", ARGS, sizeof ARGS);
    free(big);
    cr_assert_eq(zx_future_result(f, 60, NULL, NULL), ZX_ERAISED);
    const zx_error_t *e = zx_future_exception(f, 0);
    cr_assert_eq(e->code, ZX_EINVAL);
    cr_assert_str_eq(e->type, "MessageTooLargeError");
    cr_assert(strstr(e->message, "over the broker's limit of 1048576 bytes"), "%s", e->message);
    cr_assert_eq(zx_future_result(g, 60, NULL, NULL), ZX_OK, "the next task is not stuck");
    zx_future_unref(&f);
    zx_future_unref(&g);
    zx_executor_destroy(&ex);
}

/* A task over a worker's --max-msg is never sent to it (its libzmq would
   drop the connection at every try, and the broker retry it elsewhere):
   it fails naming the worker's limit; the worker stays and stops on SIGTERM. */
Test(failpaths, a_task_over_a_workers_limit_fails_and_the_worker_goes_on, .fini = s_fini)
{
    cr_assert_eq(zxt_broker_start(&s_cluster, s_fast), 0);
    const char *wargs[] = {"--max-msg", "1M", "--threads", "2", "--procs", "0", NULL};
    pid_t wp = zxt_worker_start(&s_cluster, "small", wargs);
    cr_assert_gt(wp, 0);
    zx_options_t o = {.broker_timeout = 600};
    zx_executor_t *ex = zx_executor_new(s_cluster.client_ep, &o);
    zx_future_t *f0 = zx_submit(ex, "echo", ARGS, sizeof ARGS);
    cr_assert_eq(zx_future_result(f0, 60, NULL, NULL), ZX_OK);
    zx_future_unref(&f0);
    size_t n = 2u << 20;
    uint8_t *big = calloc(1, n);
    big[0] = 0x91;
    big[1] = 0xc6;
    uint32_t bl = (uint32_t)(n - 6);
    big[2] = (uint8_t)(bl >> 24);
    big[3] = (uint8_t)(bl >> 16);
    big[4] = (uint8_t)(bl >> 8);
    big[5] = (uint8_t)bl;
    zx_future_t *f = zx_submit(ex, "echo", big, n);
    free(big);
    cr_assert_eq(zx_future_result(f, 60, NULL, NULL), ZX_ERAISED);
    const zx_error_t *e = zx_future_exception(f, 0);
    cr_assert_eq(e->code, ZX_EREJECTED);
    cr_assert_str_eq(e->type, "MessageTooLargeError");
    cr_assert(strstr(e->message, "over worker small's limit of 1048576 bytes"), "%s", e->message);
    zx_future_unref(&f);
    zx_future_t *g = zx_submit(ex, "echo", ARGS, sizeof ARGS);
    cr_assert_eq(zx_future_result(g, 60, NULL, NULL), ZX_OK, "the worker still serves");
    zx_future_unref(&g);
    zx_executor_destroy(&ex);
    kill(wp, SIGTERM);
    cr_assert(zxt_wait_exit(wp, 60, NULL), "the worker stops on SIGTERM");
    s_cluster.nworkers = 0;
}

/* A result over the broker's --max-msg fails its future with a clear error
   (the worker says so instead of sending it); the worker goes on. */
Test(failpaths, a_result_over_the_brokers_limit_fails_its_future, .fini = s_fini)
{
    const char *const bargs[] = {"--max-msg", "1M", "--heartbeat", "0.1", NULL};
    cr_assert_eq(zxt_broker_start(&s_cluster, bargs), 0);
    s_embedded_t emb;
    s_embedded_start(&emb, s_cluster.worker_ep);
    zx_options_t o = {.broker_timeout = 600};
    zx_executor_t *ex = zx_executor_new(s_cluster.client_ep, &o);
    uint8_t a[6];
    zx_future_t *f = zx_submit(ex, "big", a, s_arg_u32(a, 2u << 20));
    cr_assert_eq(zx_future_result(f, 60, NULL, NULL), ZX_ERAISED);
    const zx_error_t *e = zx_future_exception(f, 0);
    cr_assert_str_eq(e->type, "ResultTooLargeError");
    cr_assert(strstr(e->message, "over the broker's limit of 1048576 bytes"), "%s", e->message);
    zx_future_unref(&f);
    zx_future_t *g = zx_submit(ex, "big", a, s_arg_u32(a, 1000));
    const void *v;
    size_t len;
    cr_assert_eq(zx_future_result(g, 60, &v, &len), ZX_OK, "the worker still serves");
    cr_assert_eq(len, 1003u);
    zx_future_unref(&g);
    zx_executor_destroy(&ex);
    s_embedded_stop(&emb);
}

/* A result over the client's own limit (HELLO says it) fails its future
   instead of being sent into a connection its libzmq would drop. */
Test(failpaths, a_result_over_the_clients_limit_fails_its_future, .fini = s_fini)
{
    cr_assert_eq(zxt_broker_start(&s_cluster, s_fast), 0);
    fp_t w, c;
    fp_init(&w, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fw_ready(&w, "w", 1, 0, "f");
    zxp_set_max_msg(ZXP_MIN_MAX_MSG); /* this fake client's HELLO and socket */
    fp_init(&c, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fc_hello(&c, "small");
    zxp_set_max_msg(0);
    fc_submit(&c, 1, "f");
    cr_assert(fp_expect(&w, ZXP_TASK, 10000));
    size_t n = 200000;
    char *big = calloc(1, n);
    fw_result_ex(&w, c.id, 1, ZXP_ST_OK, ZXP_POOL_THREAD, true, big, n);
    free(big);
    cr_assert(fp_expect(&c, ZXP_RESULT, 30000), "an answer, not a dropped connection");
    zxp_result_t r;
    zxp_get_result(&c.in, 0, &r);
    cr_assert_eq(r.status, ZXP_ST_RAISED);
    zframe_t *p = zxp_payload_take(&c.in);
    char type[64], msg[256];
    fp_error_of(p, type, sizeof type, msg, sizeof msg);
    zframe_destroy(&p);
    cr_assert_str_eq(type, "ResultTooLargeError", "%s", msg);
    cr_assert(strstr(msg, "over the client's limit of 65536 bytes"), "%s", msg);
    fp_fini(&w);
    fp_fini(&c);
}

/* ---- a client that does not read -------------------------------------------------------- */

/* Finds key in a STATUS map (at any depth); UINT64_MAX when absent. */
static uint64_t s_find(const msgpack_object *o, const char *key, int depth)
{
    if (depth > 6 || o->type != MSGPACK_OBJECT_MAP) {
        return UINT64_MAX;
    }
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == strlen(key) &&
            memcmp(kv->key.via.str.ptr, key, strlen(key)) == 0 &&
            kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
            return kv->val.via.u64;
        }
        uint64_t v = s_find(&kv->val, key, depth + 1);
        if (v != UINT64_MAX) {
            return v;
        }
    }
    return UINT64_MAX;
}

static uint64_t s_status_total(const char *key)
{
    fp_t s;
    fp_init(&s, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fc_hello(&s, "status");
    zxp_send_empty(s.sock, NULL, ZXP_STATUS);
    cr_assert(fp_expect(&s, ZXP_STATUS_REPLY, 10000));
    uint64_t v = s_find(zxp_o(zxp_item(&s.in, 0), 0), key, 0);
    fp_fini(&s);
    return v;
}

/* Results pile up for a client that acknowledges nothing it reads: past
   --max-results-waiting its session is dropped (the broker's memory for it
   is bounded), and when it speaks again it is told RESET, so it re-sends
   and no future waits for ever. */
Test(failpaths, a_client_that_does_not_read_is_dropped_at_its_bound, .fini = s_fini)
{
    const char *const bargs[] = {"--heartbeat", "0.1", "--max-results-waiting", "1M", NULL};
    cr_assert_eq(zxt_broker_start(&s_cluster, bargs), 0);
    fp_t w, c;
    fp_init(&w, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fw_ready(&w, "w", 4, 0, "f");
    fp_init(&c, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fc_hello(&c, "sleepy");
    cr_assert_eq(zxp_send_heartbeat_rx(c.sock, NULL, 0), 0); /* it acknowledges: 0 bytes read */
    size_t n = 300000;
    char *res = calloc(1, n);
    for (uint64_t seq = 1; seq <= 8; seq++) {
        fc_submit(&c, seq, "f");
    }
    /* four slots: four tasks at once, 1.2 MB of results */
    size_t answered = 0;
    while (answered < 4) {
        cr_assert(fp_expect(&w, ZXP_TASK, 10000));
        for (size_t i = 0; i < w.in.count; i++) {
            zxp_task_t t;
            zxp_get_task(&w.in, i, &t);
            fw_result_ex(&w, c.id, t.seq, ZXP_ST_OK, ZXP_POOL_THREAD, true, res, n);
            answered++;
        }
    }
    free(res);
    /* 1.2 MB sent, none acknowledged: the session goes at a tick */
    uint64_t slow = 0;
    for (int i = 0; i < 100 && slow != 1; i++) {
        slow = s_status_total("slow_clients");
        if (slow != 1) {
            fp_quiet(&w, 100);
        }
    }
    cr_assert_eq(slow, 1, "the client's session was dropped at its bound");
    /* it reads again: what was sent arrives, then it learns to say HELLO */
    zxp_send_empty(c.sock, NULL, ZXP_HEARTBEAT);
    cr_assert(fp_expect(&c, ZXP_RESET, 20000), "told RESET: it will re-send");
    fp_fini(&w);
    fp_fini(&c);
}

/* ---- results held across a broker crash ----------------------------------------------- */

static atomic_int s_runs, s_done;
static atomic_llong s_first_start, s_last_done;

/* "slow": counts its runs, sleeps 2 s, returns nil. */
static int s_slow(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    (void)task;
    (void)args;
    long long zero = 0;
    atomic_compare_exchange_strong(&s_first_start, &zero, (long long)zclock_mono());
    atomic_fetch_add(&s_runs, 1);
    zclock_sleep(2000);
    msgpack_pack_nil(result);
    atomic_store(&s_last_done, (long long)zclock_mono());
    atomic_fetch_add(&s_done, 1);
    return ZX_OK;
}

static bool s_is_running(void *f)
{
    return zx_future_running(f);
}

/* The clock has reached *(int64_t *)at. */
static bool s_reached(void *at)
{
    return zclock_mono() >= *(int64_t *)at;
}

static bool s_all_done(void *n)
{
    return atomic_load(&s_done) >= *(int *)n;
}

static void *s_slow_worker_run(void *arg)
{
    zx_worker_run(arg);
    return NULL;
}

/* Tasks finish in the half second after the broker died, before their
   worker notices (liveness 3 x 0.2 s): their results, sent into the dead
   connection, are sent again to the new broker and accepted; nothing runs
   twice (before, every one of them ran again), and the worker registers
   once with the new broker. */
Test(failpaths, results_finished_across_a_broker_crash_are_accepted_not_rerun, .timeout = 180,
     .fini = s_fini)
{
    const char *const bargs[] = {"--heartbeat", "0.2", NULL};
    cr_assert_eq(zxt_broker_start(&s_cluster, bargs), 0);
    atomic_store(&s_runs, 0);
    atomic_store(&s_done, 0);
    atomic_store(&s_first_start, 0);
    zx_worker_opts_t wo = {
        .node = "holder", .threads = 8, .procs = -1, .heartbeat = 0.2, .no_builtins = true};
    zx_worker_t *w = zx_worker_new(s_cluster.worker_ep, &wo);
    cr_assert(w);
    cr_assert_eq(zx_worker_register(w, "slow", s_slow, ZX_POOLS_THREAD), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, s_slow_worker_run, w), 0);
    zx_options_t o = {.broker_timeout = 600, .heartbeat = 0.2};
    zx_executor_t *ex = zx_executor_new(s_cluster.client_ep, &o);
    enum { N = 8 };
    zx_future_t *fs[N];
    for (int i = 0; i < N; i++) {
        fs[i] = zx_submit(ex, "slow", "\x90", 1);
    }
    for (int i = 0; i < N; i++) {
        cr_assert(zxt_wait_for(s_is_running, fs[i], 60), "task %d started", i);
    }
    /* the broker dies 0.4 s before the first task ends */
    int64_t kill_at = (int64_t)atomic_load(&s_first_start) + 1600;
    cr_assert(zxt_wait_for(s_reached, &kill_at, 60));
    zxt_kill(s_cluster.broker);
    int n = N;
    cr_assert(zxt_wait_for(s_all_done, &n, 60));
    /* the worker has noticed (liveness 0.6 s) and made a new socket */
    int64_t restart_at = (int64_t)atomic_load(&s_last_done) + 1500;
    cr_assert(zxt_wait_for(s_reached, &restart_at, 60));
    cr_assert_eq(zxt_broker_restart(&s_cluster, bargs), 0);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(zx_future_result(fs[i], 120, NULL, NULL), ZX_OK, "task %d", i);
        zx_future_unref(&fs[i]);
    }
    cr_assert_eq(atomic_load(&s_runs), N, "no task ran twice (its result was not lost)");
    /* one registration with the new broker, and it stays one */
    uint64_t regs = s_status_total("registrations");
    int64_t later = zclock_mono() + 2000; /* ten heartbeats */
    cr_assert(zxt_wait_for(s_reached, &later, 60));
    cr_assert_eq(regs, 1, "no registration storm");
    cr_assert_eq(s_status_total("registrations"), 1);
    zx_executor_destroy(&ex);
    zx_worker_stop(w);
    pthread_join(th, NULL);
    zx_worker_destroy(&w);
}

/* ---- attempt tokens -------------------------------------------------------------------- */

/* READY by hand listing (session, seq) with a token and attempt. */
static void s_ready_claim(fp_t *w, const char *node, const char *fn, const uint8_t *session,
                          uint64_t seq, const uint8_t *token, uint32_t attempt)
{
    zxp_out_t out;
    zxp_out_init(&out);
    zxp_out_begin(&out, ZXP_READY);
    msgpack_packer *pk = zxp_out_pk(&out);
    msgpack_pack_array(pk, 10);
    msgpack_pack_uint32(pk, ZXP_VERSION);
    msgpack_pack_bin(pk, ZXP_ID_LEN);
    msgpack_pack_bin_body(pk, w->id, ZXP_ID_LEN);
    msgpack_pack_str(pk, strlen(node));
    msgpack_pack_str_body(pk, node, strlen(node));
    msgpack_pack_uint32(pk, 1234);
    msgpack_pack_uint32(pk, 1);
    msgpack_pack_uint32(pk, 0);
    msgpack_pack_uint32(pk, 0);
    msgpack_pack_uint32(pk, w->hb_ms);
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 2);
    msgpack_pack_str(pk, strlen(fn));
    msgpack_pack_str_body(pk, fn, strlen(fn));
    msgpack_pack_uint8(pk, ZXP_POOLS_THREAD);
    msgpack_pack_array(pk, 1);
    msgpack_pack_array(pk, 5);
    msgpack_pack_bin(pk, ZXP_ID_LEN);
    msgpack_pack_bin_body(pk, session, ZXP_ID_LEN);
    msgpack_pack_uint64(pk, seq);
    msgpack_pack_uint8(pk, ZXP_POOL_THREAD);
    msgpack_pack_bin(pk, ZXP_TOKEN_LEN);
    msgpack_pack_bin_body(pk, token, ZXP_TOKEN_LEN);
    msgpack_pack_uint32(pk, attempt);
    cr_assert(zxp_out_send(&out, w->sock, NULL) == 0);
    zxp_out_fini(&out);
}

/* WRESULT by hand with a token. */
static void s_result_token(fp_t *w, const uint8_t *session, uint64_t seq, const void *data,
                           size_t len, const uint8_t *token)
{
    zxp_out_t out;
    zxp_out_init(&out);
    zxp_out_begin(&out, ZXP_WRESULT);
    zxp_wresult_t r = {.session = session,
                       .seq = seq,
                       .status = ZXP_ST_OK,
                       .pid = 4242,
                       .pool = ZXP_POOL_THREAD,
                       .slot_freed = true};
    zxp_put_wresult(&out, &r);
    zxp_out_payload_mem(&out, data, len);
    zxp_out_item_token(&out, token);
    cr_assert(zxp_out_send(&out, w->sock, NULL) == 0);
    zxp_out_fini(&out);
}

/* A worker cannot claim another client's task: its READY lists a queued
   (session, seq) it was never given, with a made-up token; the broker does
   not attach it, its result is dropped, and the task runs on an honest
   worker. Before, the claim took the queued task and its forged result
   reached the client. (Without a shared secret, the first --client-timeout
   after a start trusts claims for tasks this run never gave out, as a
   restarted broker must: the claim comes after that window here.) */
Test(failpaths, a_worker_cannot_claim_a_task_it_was_never_given, .fini = s_fini)
{
    const char *const bargs[] = {"--heartbeat", "0.1", "--nofunc-grace", "60", "--client-timeout",
                                 "0.5",         NULL};
    cr_assert_eq(zxt_broker_start(&s_cluster, bargs), 0);
    int64_t past = zclock_mono() + 1000; /* the broker's restart window is over */
    cr_assert(zxt_wait_for(s_reached, &past, 60));
    fp_t c, forger, honest;
    fp_init(&c, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fc_hello(&c, "victim");
    fc_submit(&c, 1, "g"); /* no worker offers g yet: it stays queued */
    for (int i = 0; i < 100 && s_status_total("queued") != 1; i++) {
        fp_quiet(&c, 50);
    }
    cr_assert_eq(s_status_total("queued"), 1, "the broker has the task before the claim");
    fp_init(&forger, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    uint8_t fake[ZXP_TOKEN_LEN];
    memset(fake, 0x5a, sizeof fake);
    s_ready_claim(&forger, "forger", "h", c.id, 1, fake, 1);
    cr_assert(fp_expect(&forger, ZXP_WELCOME, 10000));
    s_result_token(&forger, c.id, 1,
                   "\xa6"
                   "forged",
                   7, fake);
    cr_assert_eq(s_status_total("forged_claims"), 1);
    fp_init(&honest, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fw_ready(&honest, "honest", 1, 0, "g");
    cr_assert(fp_expect(&honest, ZXP_TASK, 10000), "the task is still the broker's to give");
    cr_assert_eq(fw_answer_all(&honest), 1);
    cr_assert(fp_expect(&c, ZXP_RESULT, 10000));
    zxp_result_t r;
    zxp_get_result(&c.in, 0, &r);
    cr_assert_eq(r.seq, 1);
    cr_assert(r.node.len == 6 && memcmp(r.node.ptr, "honest", 6) == 0, "%.*s", (int)r.node.len,
              r.node.ptr);
    fp_fini(&c);
    fp_fini(&forger);
    fp_fini(&honest);
}

/* A result for an earlier attempt is dropped: the worker was lost, the
   task given to it again (attempt 2); a late result carrying attempt 1's
   token is counted as stale, and attempt 2's result is the one the client
   gets. Before, the stale one was accepted. */
Test(failpaths, a_result_for_an_earlier_attempt_is_dropped, .fini = s_fini)
{
    const char *const bargs[] = {"--heartbeat", "0.1", "--liveness", "3", NULL};
    cr_assert_eq(zxt_broker_start(&s_cluster, bargs), 0);
    fp_t c, w;
    fp_init(&c, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fc_hello(&c, "patient");
    fp_init(&w, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fw_ready(&w, "flaky", 1, 0, "f");
    fc_submit(&c, 1, "f");
    cr_assert(fp_expect(&w, ZXP_TASK, 10000));
    zxp_task_t t;
    zxp_get_task(&w.in, 0, &t);
    cr_assert_eq(t.attempt, 1);
    cr_assert(t.token, "every TASK carries an attempt token");
    uint8_t token1[ZXP_TOKEN_LEN];
    memcpy(token1, t.token, sizeof token1);
    /* cut off past its liveness: lost; then back, registering afresh */
    fp_silence(&w);
    fp_t probe;
    fp_init(&probe, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fw_ready(&probe, "probe", 1, 0, "other");
    for (int i = 0; i < 100 && s_status_total("running") != 0; i++) {
        fp_quiet(&probe, 100);
    }
    cr_assert_eq(s_status_total("running"), 0, "the cut-off worker was lost");
    w.live = true;
    fw_ready(&w, "flaky", 1, 0, "f");
    cr_assert(fp_expect(&w, ZXP_TASK, 10000), "given again");
    zxp_get_task(&w.in, 0, &t);
    cr_assert_eq(t.attempt, 2);
    uint8_t token2[ZXP_TOKEN_LEN];
    memcpy(token2, t.token, sizeof token2);
    cr_assert(memcmp(token1, token2, sizeof token1) != 0);
    s_result_token(&w, c.id, 1,
                   "\xa5"
                   "stale",
                   6, token1);
    s_result_token(&w, c.id, 1,
                   "\xa5"
                   "fresh",
                   6, token2);
    cr_assert(fp_expect(&c, ZXP_RESULT, 10000));
    zxp_result_t r;
    zxp_get_result(&c.in, 0, &r);
    const void *data;
    size_t len;
    cr_assert(zxp_payload_take_inline(&c.in, &data, &len));
    cr_assert(len == 6 && memcmp(data,
                                 "\xa5"
                                 "fresh",
                                 6) == 0,
              "the current attempt's result");
    cr_assert_eq(r.attempts, 2);
    cr_assert_eq(s_status_total("stale_results"), 1);
    fp_fini(&c);
    fp_fini(&w);
    fp_fini(&probe);
}

/* A worker counts the broker lost after its own liveness x heartbeat: one
   with a shorter heartbeat (0.2 s) than the broker's (1 s) must still hear
   from the broker often enough. It used to be heartbeaten every second,
   declared the broker lost after 0.6 s and re-registered about twice a
   second. */
Test(failpaths, a_worker_with_a_shorter_heartbeat_than_the_broker_stays_registered, .timeout = 60,
     .fini = s_fini)
{
    const char *const bargs[] = {"--heartbeat", "1", NULL};
    cr_assert_eq(zxt_broker_start(&s_cluster, bargs), 0);
    zx_worker_opts_t wo = {.node = "fast", .threads = 1, .procs = -1, .heartbeat = 0.2};
    zx_worker_t *w = zx_worker_new(s_cluster.worker_ep, &wo);
    cr_assert(w);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, s_slow_worker_run, w), 0);
    int64_t later = zclock_mono() + 3000; /* five of the worker's liveness windows */
    cr_assert(zxt_wait_for(s_reached, &later, 60));
    cr_assert_eq(s_status_total("registrations"), 1, "the worker re-registered");
    zx_worker_stop(w);
    pthread_join(th, NULL);
    zx_worker_destroy(&w);
}
