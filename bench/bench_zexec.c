/*  bench_zexec.c - zexec on the workloads of issue 6, through the public API
    (zexec.h), against a cluster this program starts by PID on free loopback
    ports: one zexec-broker and zexec-worker processes with the bench plugin
    (examples/plugins/zexec_bench_plugin.c). Unless a workload says otherwise
    the cluster is one broker and one worker with 2 threads and no process
    pool (2 slots, as the issue states).

      A  200,000 no-op tasks (inc: n -> n+1): submit each then as_completed;
         map with chunksize 1 and 256. tasks/s.
      B  5,000 sequential submit-then-result: p50/p99/mean us (with
         ZEXEC_SPIN_US=0 in the environment, reported as B_nospin_*).
         --tag T names them Bpair_T_* instead (one half of a pair that
         scripts/bench alternates with the floor), --rounds N sets the count,
         --security curve|sign runs the whole cluster with CURVE keys or a
         shared secret (keys made for the run in a temporary folder).
      C  as_completed over 10,000 tasks sleeping uniformly 0-2 ms on 2 slots:
         wall time and the ideal (sum of sleeps / 2); and, to calibrate, the
         wall time of the same sleeps on 2 local threads (nanosleep overshoot).
      D  500 tasks with a 1 MiB bytes argument returning its length: MB/s of
         argument payload (1 MB = 1e6 bytes).
      E  broker memory per queued no-op task (1,000,000 queued, no worker):
         the RSS difference between 10,000 and 1,000,000 queued, per task,
         less the 1-byte payload; broker CPU per task (all its threads, from
         /proc/<pid>/task/<tid>/schedstat) while a worker drains the first
         tasks of a queue of 10,000 and of 1,000,000 (median of 3 runs each);
         and broker CPU per task of an inc stream with 1 worker and with 200
         more idle worker connections (raw DEALERs that send READY offering
         another function and heartbeats, built with the protocol encoders of
         zx_proto.h).
      F  A (submit and map(256)) with 1, 2 and 4 worker processes splitting
         4 threads (1x4, 2x2, 4x1): three clusters side by side, measured in
         turns (each turn led by the next shape), the median of five turns
         each; submit over 200,000 tasks, map(256) over 2,000,000 inputs;
         and each step (1 -> 2, 2 -> 4 workers) as the median of its
         per-turn ratios.
      G  scheduling of mixed work (issue 14): the makespan of each case
         against its ideal bound, max(total work / slots, longest task)
         (for a join or a drain, the best schedule of whole tasks given when
         the worker came or went): 8 long tasks after a burst of 20,000
         short ones on 2 workers x 2 threads; 99% 0.1 ms + 1% long tasks
         interleaved on 2 x 4 threads; 8 long tasks on one worker of 2
         threads with a second joining at 0.3 x long; the same on two
         workers with one drained (SIGTERM) at 0.3 x long; 8 long tasks of
         pool any on one worker of 2 threads + 2 processes; 25 tasks of
         0.2 x long on nodes of 1 and 4 slots (and the 1-slot node's share,
         ideally 5); and fair turns both ways: 10 long tasks of one client
         submitted after 100,000 short ones of another (and the reverse),
         each client's time against its time alone. Long is 1 s (--quick:
         0.2 s and fewer short tasks).

    J  the journal (issue 18): A by submit with the broker's journal off and
       with each --fsync policy (batch, interval, none), in one run, and the
       journal's bytes per task; then the recovery of a journal of 1,000,000
       queued tasks: the time from the broker's start until it serves them
       (20,000 with --quick).

    Every result received is checked; a wrong one exits with status 2.
    Usage: bench_zexec --workload A|B|C|D|E|F|G|J [--quick] --bin-dir DIR
                       --plugin PATH/libzexec_bench_plugin.so
                       [--tag T] [--rounds N] [--security curve|sign] */
#include "bench_util.h"

#include "zexec.h"
#include "zx_proto.h"

#include <czmq.h>
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024 * 1024)
#define S_LONG 900.0 /* internal waits: longer than any step limit of scripts/bench */

static bool s_quick;
static const char *s_bin_dir;
static const char *s_plugin;

/* --security: flags for the broker and the workers, options for clients */
static const char *s_sec_broker[8];
static const char *s_sec_worker[8];
static zx_options_t s_sec_client;
static char s_sec_dir[64];
static char s_sec_paths[6][128];

static void s_sec_path(int i, const char *name)
{
    snprintf(s_sec_paths[i], sizeof s_sec_paths[i], "%s/%s", s_sec_dir, name);
}

/* Keys for the run in a fresh folder: CURVE certificates (the broker's,
   one client's and one worker's, each admitted by its folder), or a shared
   secret. */
static void s_security_setup(const char *mode)
{
    snprintf(s_sec_dir, sizeof s_sec_dir, "/tmp/zx_bench_sec_XXXXXX");
    if (!mkdtemp(s_sec_dir)) {
        bu_die("mkdtemp failed");
    }
    if (strcmp(mode, "curve") == 0) {
        s_sec_path(0, "broker");
        s_sec_path(1, "broker_secret");
        s_sec_path(2, "clients");
        s_sec_path(3, "workers");
        mkdir(s_sec_paths[2], 0700);
        mkdir(s_sec_paths[3], 0700);
        const char *who[3] = {"broker", "clients/bench", "workers/bench"};
        for (int i = 0; i < 3; i++) {
            char path[160], secret[200];
            snprintf(path, sizeof path, "%s/%s", s_sec_dir, who[i]);
            zcert_t *cert = zcert_new();
            if (!cert || zcert_save(cert, path) != 0) {
                bu_die("cannot write the CURVE certificate %s", path);
            }
            snprintf(secret, sizeof secret, "%s_secret", path);
            chmod(secret, 0600);
            zcert_destroy(&cert);
        }
        s_sec_path(4, "clients/bench_secret");
        s_sec_path(5, "workers/bench_secret");
        const char *b[] = {"--key",
                           s_sec_paths[1],
                           "--client-keys",
                           s_sec_paths[2],
                           "--worker-keys",
                           s_sec_paths[3],
                           NULL};
        memcpy(s_sec_broker, b, sizeof b);
        const char *w[] = {"--server-key", s_sec_paths[0], "--key", s_sec_paths[5], NULL};
        memcpy(s_sec_worker, w, sizeof w);
        s_sec_client.server_key = s_sec_paths[0];
        s_sec_client.key = s_sec_paths[4];
    } else if (strcmp(mode, "sign") == 0) {
        s_sec_path(0, "cluster.secret");
        FILE *f = fopen(s_sec_paths[0], "w");
        if (!f) {
            bu_die("cannot write %s", s_sec_paths[0]);
        }
        chmod(s_sec_paths[0], 0600);
        for (int i = 0; i < 64; i++) {
            fputc("0123456789abcdef"[rand() & 15], f);
        }
        fputc('\n', f);
        fclose(f);
        const char *b[] = {"--secret-file", s_sec_paths[0], NULL};
        memcpy(s_sec_broker, b, sizeof b);
        memcpy(s_sec_worker, b, sizeof b);
        s_sec_client.secret_file = s_sec_paths[0];
    } else {
        bu_die("--security takes curve or sign, not %s", mode);
    }
}

static void s_security_cleanup(void)
{
    if (!s_sec_dir[0]) {
        return;
    }
    for (int i = 0; i < 6; i++) {
        if (s_sec_paths[i][0]) {
            unlink(s_sec_paths[i]);
        }
    }
    const char *rest[] = {"clients/bench", "workers/bench", "clients", "workers", ""};
    for (int i = 0; rest[i]; i++) {
        char path[160];
        snprintf(path, sizeof path, "%s/%s", s_sec_dir, rest[i]);
        if (unlink(path) != 0) {
            rmdir(path);
        }
    }
}

/* ---- msgpack results ---------------------------------------------------------- */

static uint64_t s_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++) {
        v = v << 8 | p[i];
    }
    return v;
}

/* One msgpack integer that fills the buffer exactly. */
static bool s_mp_int(const void *data, size_t n, int64_t *out)
{
    const uint8_t *b = data;
    if (!b || n == 0) {
        return false;
    }
    uint8_t t = b[0];
    if (t <= 0x7f || t >= 0xe0) {
        *out = (int8_t)t;
        *out = t <= 0x7f ? t : *out;
        return n == 1;
    }
    static const int sizes[] = {1, 2, 4, 8};
    if (t >= 0xcc && t <= 0xcf) {
        int k = sizes[t - 0xcc];
        if (n != (size_t)k + 1) {
            return false;
        }
        *out = (int64_t)s_be(b + 1, k);
        return true;
    }
    if (t >= 0xd0 && t <= 0xd3) {
        int k = sizes[t - 0xd0];
        if (n != (size_t)k + 1) {
            return false;
        }
        uint64_t v = s_be(b + 1, k);
        int shift = 64 - 8 * k;
        *out = shift ? (int64_t)(v << shift) >> shift : (int64_t)v;
        return true;
    }
    return false;
}

static void s_check_int(zx_future_t *f, int64_t want, const char *what)
{
    const void *v = NULL;
    size_t len = 0;
    int rc = zx_future_result(f, S_LONG, &v, &len);
    if (rc != ZX_OK) {
        const zx_error_t *e = zx_future_exception(f, 0);
        bu_wrong("%s: task failed: %s (%s: %s)", what, zx_strerror(rc), e ? e->type : "?",
                 e ? e->message : "?");
    }
    int64_t got = 0;
    if (!s_mp_int(v, len, &got) || got != want) {
        bu_wrong("%s: expected %lld, got %s%lld", what, (long long)want,
                 s_mp_int(v, len, &got) ? "" : "a non-integer ", (long long)got);
    }
}

/* ---- the cluster, by PID ---------------------------------------------------------- */

typedef struct {
    pid_t broker;
    pid_t workers[8];
    int nworkers;
    char client_ep[64], worker_ep[64];
} s_cluster_t;

static void s_broker_start(s_cluster_t *c, const char *const extra[])
{
    memset(c, 0, sizeof *c);
    int cp = bu_free_port(), wp = bu_free_port();
    while (wp == cp) {
        wp = bu_free_port();
    }
    snprintf(c->client_ep, sizeof c->client_ep, "tcp://127.0.0.1:%d", cp);
    snprintf(c->worker_ep, sizeof c->worker_ep, "tcp://127.0.0.1:%d", wp);
    char bin[1024];
    snprintf(bin, sizeof bin, "%s/zexec-broker", s_bin_dir);
    const char *argv[32] = {bin, "--clients", c->client_ep, "--workers", c->worker_ep};
    int k = 5;
    for (int i = 0; s_sec_broker[i] && k < 31; i++) {
        argv[k++] = s_sec_broker[i];
    }
    for (int i = 0; extra && extra[i] && k < 31; i++) {
        argv[k++] = extra[i];
    }
    argv[k] = NULL;
    c->broker = bu_spawn((char *const *)argv);
    if (c->broker < 0 || !bu_wait_port(cp, 10) || !bu_wait_port(wp, 10)) {
        bu_stop(c->broker);
        bu_die("zexec-broker (%s) did not start listening", bin);
    }
}

static void s_worker_start_ex(s_cluster_t *c, int threads, int procs);

static void s_worker_start(s_cluster_t *c, int threads)
{
    s_worker_start_ex(c, threads, 0);
}

static void s_worker_start_ex(s_cluster_t *c, int threads, int procs)
{
    if (c->nworkers >= 8) {
        bu_die("too many workers");
    }
    char bin[1024], node[32], th[16], pr[16];
    snprintf(bin, sizeof bin, "%s/zexec-worker", s_bin_dir);
    snprintf(node, sizeof node, "bench-%d", c->nworkers + 1);
    snprintf(th, sizeof th, "%d", threads);
    snprintf(pr, sizeof pr, "%d", procs);
    /* --procs 0: no process pool, so the worker has exactly `threads` slots */
    const char *argv[32] = {bin, "--broker", c->worker_ep, "--node",   node,     "--threads",
                            th,  "--procs",  pr,           "--plugin", s_plugin, NULL};
    /* BENCH_WORKER_ARGS: extra worker flags for experiments, e.g. "--prefetch 256"
       (the figures in bench/results are taken without) */
    char extra[256];
    snprintf(extra, sizeof extra, "%s",
             getenv("BENCH_WORKER_ARGS") ? getenv("BENCH_WORKER_ARGS") : "");
    int k = 11;
    for (int i = 0; s_sec_worker[i] && k < 31; i++) {
        argv[k++] = s_sec_worker[i];
    }
    for (char *save = NULL, *tok = strtok_r(extra, " ", &save); tok && k < 31;
         tok = strtok_r(NULL, " ", &save)) {
        argv[k++] = tok;
    }
    argv[k] = NULL;
    pid_t pid = bu_spawn((char *const *)argv);
    if (pid < 0) {
        bu_die("cannot start %s", bin);
    }
    c->workers[c->nworkers++] = pid;
}

static void s_cluster_stop(s_cluster_t *c)
{
    for (int i = 0; i < c->nworkers; i++) {
        bu_stop(c->workers[i]);
    }
    c->nworkers = 0;
    bu_stop(c->broker);
    c->broker = 0;
}

static zx_executor_t *s_executor(s_cluster_t *c, double broker_timeout)
{
    zx_options_t opts = s_sec_client;
    opts.name = "bench";
    opts.broker_timeout = broker_timeout;
    zx_executor_t *ex = zx_executor_new(c->client_ep, &opts);
    if (!ex) {
        bu_die("zx_executor_new(%s) failed: %s", c->client_ep, zx_strerror(zx_last_error()));
    }
    return ex;
}

/* Waits until a worker answers: one inc round trip (also warms the path). */
static void s_ready(zx_executor_t *ex)
{
    zx_future_t *f = zx_submitf(ex, "inc", "I", (int64_t)41);
    if (!f) {
        bu_die("submit failed: %s", zx_strerror(zx_last_error()));
    }
    if (zx_future_result(f, 60, NULL, NULL) != ZX_OK) {
        const zx_error_t *e = zx_future_exception(f, 0);
        bu_die("the cluster did not run a first task: %s: %s", e ? e->type : "?",
               e ? e->message : "?");
    }
    s_check_int(f, 42, "ready");
    zx_future_unref(&f);
}

/* ---- broker CPU and memory ------------------------------------------------------------ */

/* CPU time of every thread of pid, in ns (schedstat's first field). */
static double s_cpu_ns(pid_t pid)
{
    char path[96];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d) {
        return -1;
    }
    double total = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') {
            continue;
        }
        char p2[320];
        snprintf(p2, sizeof p2, "/proc/%d/task/%s/schedstat", (int)pid, e->d_name);
        FILE *f = fopen(p2, "r");
        if (f) {
            unsigned long long ns = 0;
            if (fscanf(f, "%llu", &ns) == 1) {
                total += (double)ns;
            }
            fclose(f);
        }
    }
    closedir(d);
    return total;
}

/* Asks the broker for its STATUS over a raw client connection (HELLO,
   STATUS, BYE; zx_proto.h): the number of connected workers and of queued
   tasks (the "workers" array and totals.queued of STATUS-REPLY). */
static const msgpack_object *s_map_get(const msgpack_object *map, const char *key)
{
    if (!map || map->type != MSGPACK_OBJECT_MAP) {
        return NULL;
    }
    size_t klen = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == klen &&
            memcmp(k->via.str.ptr, key, klen) == 0) {
            return &map->via.map.ptr[i].val;
        }
    }
    return NULL;
}

static zmsg_t *s_recv_cmd(zsock_t *sock, uint8_t cmd, double timeout)
{
    double deadline = bu_now() + timeout;
    while (bu_now() < deadline) {
        zmsg_t *msg = zmsg_recv(sock); /* the socket's receive timeout bounds each wait */
        if (!msg) {
            continue;
        }
        zframe_t *sig = zmsg_first(msg);
        if (sig && zframe_size(sig) == 4 && zframe_data(sig)[3] == cmd) {
            return msg;
        }
        zmsg_destroy(&msg);
    }
    return NULL;
}

static bool s_status(const char *endpoint, long *workers, long *queued)
{
    uint8_t session[ZXP_ID_LEN];
    for (size_t b = 0; b < sizeof session; b++) {
        session[b] = (uint8_t)(rand() & 0xff);
    }
    session[0] |= 1; /* a routing id may not start with a zero byte */
    zsock_t *sock = zsock_new(ZMQ_DEALER);
    zmq_setsockopt(zsock_resolve(sock), ZMQ_ROUTING_ID, session, sizeof session);
    zxp_sock_setup(sock);
    zsock_set_rcvtimeo(sock, 200);
    bool ok = false;
    zmsg_t *msg = NULL;
    zxp_in_t in;
    zxp_in_init(&in);
    if (zsock_connect(sock, "%s", endpoint) != 0 ||
        zxp_send_hello(sock, session, "bench-status", 1000) != 0 ||
        !(msg = s_recv_cmd(sock, ZXP_WELCOME, 10))) {
        goto done;
    }
    zmsg_destroy(&msg);
    if (zxp_send_empty(sock, NULL, ZXP_STATUS) != 0 ||
        !(msg = s_recv_cmd(sock, ZXP_STATUS_REPLY, 10)) ||
        zxp_decode(&in, &msg, ZXP_ROLE_CLIENT) != 0) {
        goto done;
    }
    const msgpack_object *hdr = zxp_item(&in, 0);
    const msgpack_object *map = hdr->via.array.size ? &hdr->via.array.ptr[0] : NULL;
    const msgpack_object *w = s_map_get(map, "workers");
    const msgpack_object *q = s_map_get(s_map_get(map, "totals"), "queued");
    if (w && w->type == MSGPACK_OBJECT_ARRAY && q && q->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        *workers = (long)w->via.array.size;
        *queued = (long)q->via.u64;
        ok = true;
    }
    zxp_send_empty(sock, NULL, ZXP_BYE);
done:
    zmsg_destroy(&msg);
    zxp_in_fini(&in);
    zsock_set_linger(sock, 100);
    zsock_destroy(&sock);
    return ok;
}

/* Polls STATUS until at least min_workers workers and min_queued queued
   tasks (either may be 0), or timeout. Returns the seconds it took. */
static double s_wait_status(const char *endpoint, long min_workers, long min_queued, double timeout)
{
    double t0 = bu_now();
    long w = -1, q = -1;
    while (bu_now() - t0 < timeout) {
        if (s_status(endpoint, &w, &q) && w >= min_workers && q >= min_queued) {
            return bu_now() - t0;
        }
        zclock_sleep(50);
    }
    bu_die("broker STATUS: %ld workers, %ld queued after %.0f s (waited for %ld and %ld)", w, q,
           timeout, min_workers, min_queued);
}

/* ---- A: no-op tasks ------------------------------------------------------------------- */

static double s_a_submit(zx_executor_t *ex, long n, int64_t base)
{
    zx_future_t **fs = malloc(sizeof *fs * (size_t)n);
    double t0 = bu_now();
    for (long i = 0; i < n; i++) {
        fs[i] = zx_submitf(ex, "inc", "I", base + i);
        if (!fs[i]) {
            bu_die("zx_submitf failed at %ld: %s", i, zx_strerror(zx_last_error()));
        }
        zx_future_set_data(fs[i], (void *)(intptr_t)(i + 1));
    }
    zx_as_completed_t *it = zx_as_completed_new(fs, (size_t)n, S_LONG);
    long got = 0;
    zx_future_t *f;
    while ((f = zx_as_completed_next(it))) {
        s_check_int(f, base + (int64_t)(intptr_t)zx_future_data(f), "A submit");
        got++;
    }
    double dt = bu_now() - t0;
    if (got != n) {
        bu_die("A submit: as_completed yielded %ld of %ld (%s)", got, n,
               zx_strerror(zx_as_completed_status(it)));
    }
    zx_as_completed_destroy(&it);
    for (long i = 0; i < n; i++) {
        zx_future_unref(&fs[i]);
    }
    free(fs);
    return (double)n / dt;
}

typedef struct {
    msgpack_sbuffer buf;
    const void **args;
    size_t *lens;
} s_args_t;

/* n argument arrays [base + i], packed into one buffer. */
static void s_args_make(s_args_t *a, long n, int64_t base)
{
    msgpack_sbuffer_init(&a->buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &a->buf, msgpack_sbuffer_write);
    size_t *offs = malloc(sizeof *offs * ((size_t)n + 1));
    for (long i = 0; i < n; i++) {
        offs[i] = a->buf.size;
        msgpack_pack_array(&pk, 1);
        msgpack_pack_int64(&pk, base + i);
    }
    offs[n] = a->buf.size;
    a->args = malloc(sizeof *a->args * (size_t)n);
    a->lens = malloc(sizeof *a->lens * (size_t)n);
    for (long i = 0; i < n; i++) {
        a->args[i] = a->buf.data + offs[i];
        a->lens[i] = offs[i + 1] - offs[i];
    }
    free(offs);
}

static void s_args_free(s_args_t *a)
{
    msgpack_sbuffer_destroy(&a->buf);
    free(a->args);
    free(a->lens);
}

static double s_a_map(zx_executor_t *ex, long n, size_t chunk, int64_t base)
{
    s_args_t a;
    s_args_make(&a, n, base);
    double t0 = bu_now();
    zx_map_t *m = zx_map_new(ex, "inc", a.args, a.lens, (size_t)n, chunk, S_LONG);
    if (!m) {
        bu_die("zx_map_new failed: %s", zx_strerror(zx_last_error()));
    }
    const void *v;
    size_t len;
    long i = 0;
    int rc;
    while ((rc = zx_map_next(m, &v, &len)) == ZX_OK) {
        int64_t got;
        if (i >= n || !s_mp_int(v, len, &got) || got != base + i + 1) {
            bu_wrong("map(chunksize %zu): result %ld is wrong", chunk, i);
        }
        i++;
    }
    double dt = bu_now() - t0;
    if (rc == ZX_ERAISED) {
        const zx_error_t *e = zx_map_exception(m);
        bu_wrong("map(chunksize %zu): task %ld raised %s: %s", chunk, i, e ? e->type : "?",
                 e ? e->message : "?");
    }
    if (rc != ZX_EEND || i != n) {
        bu_die("map(chunksize %zu): %ld of %ld results, then %s", chunk, i, n, zx_strerror(rc));
    }
    zx_map_destroy(&m);
    s_args_free(&a);
    return (double)n / dt;
}

static void s_workload_a(void)
{
    long n = s_quick ? 5000 : 200000;
    s_cluster_t c;
    s_broker_start(&c, NULL);
    s_worker_start(&c, 2);
    zx_executor_t *ex = s_executor(&c, 60);
    s_ready(ex);
    s_a_submit(ex, s_quick ? 500 : 5000, 1000000); /* warm-up */
    bu_result("zexec.A_submit", s_a_submit(ex, n, 0), "tasks/s");
    bu_result("zexec.A_map1", s_a_map(ex, s_quick ? 2000 : n, 1, 0), "tasks/s");
    bu_result("zexec.A_map256", s_a_map(ex, n, 256, 0), "tasks/s");
    zx_executor_destroy(&ex);
    s_cluster_stop(&c);
}

/* ---- J: the journal (issue 18) ------------------------------------------------------------ */

/* Bytes of the files in dir (the journal's segments). */
static double s_dir_bytes(const char *dir)
{
    DIR *d = opendir(dir);
    double sum = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char path[1024];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (e->d_name[0] != '.' && stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            sum += (double)st.st_size;
        }
    }
    if (d) {
        closedir(d);
    }
    return sum;
}

static void s_rm_rf(const char *dir)
{
    char cmd[1100];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "bench: could not remove %s\n", dir);
    }
}

/* A by submit with the journal off and with each --fsync policy, one after
   the other in this run, alike in all else; and the journal's bytes per
   task (a TASK and an END record each). */
static void s_workload_j_submit(void)
{
    long n = s_quick ? 5000 : 200000;
    const char *pols[] = {NULL, "batch", "interval", "none"};
    for (int p = 0; p < 4; p++) {
        char dir[] = "/tmp/zexec-bench-journal-XXXXXX";
        if (!mkdtemp(dir)) {
            bu_die("mkdtemp failed");
        }
        const char *extra[] = {"--journal", dir, "--fsync", pols[p], NULL};
        s_cluster_t c;
        s_broker_start(&c, pols[p] ? extra : NULL);
        s_worker_start(&c, 2);
        zx_executor_t *ex = s_executor(&c, 60);
        s_ready(ex);
        long warm = s_quick ? 500 : 5000;
        s_a_submit(ex, warm, 1000000);
        char name[64];
        snprintf(name, sizeof name, "zexec.J_submit_%s", pols[p] ? pols[p] : "off");
        bu_result(name, s_a_submit(ex, n, 0), "tasks/s");
        zx_executor_destroy(&ex);
        s_cluster_stop(&c); /* SIGTERM: the journal is flushed and synced */
        if (pols[p]) {
            snprintf(name, sizeof name, "zexec.J_bytes_per_task_%s", pols[p]);
            bu_result(name, s_dir_bytes(dir) / (double)(n + warm + 1), "B");
        }
        s_rm_rf(dir);
    }
}

/* Recovery: a broker with n tasks queued in its journal (no worker) is
   stopped, then started again on it; the time from its start until it
   answers a STATUS with all n queued (replay, rebuild, bind, a round trip). */
static void s_workload_j_recovery(void)
{
    long n = s_quick ? 20000 : 1000000;
    char dir[] = "/tmp/zexec-bench-journal-XXXXXX";
    if (!mkdtemp(dir)) {
        bu_die("mkdtemp failed");
    }
    const char *extra[] = {"--journal", dir, "--max-queued", "2000000", "--nofunc-grace",
                           "3600",      NULL};
    s_cluster_t c;
    s_broker_start(&c, extra);
    zx_executor_t *ex = s_executor(&c, 5);
    zx_future_t **fs = calloc((size_t)n, sizeof *fs);
    static const uint8_t empty[] = {0x90};
    for (long i = 0; i < n; i++) {
        fs[i] = zx_submit(ex, "nop", empty, sizeof empty);
        if (!fs[i]) {
            bu_die("zx_submit failed at %ld: %s", i, zx_strerror(zx_last_error()));
        }
    }
    double q = s_wait_status(c.client_ep, 0, n, S_LONG);
    printf("# J: %ld tasks queued and journaled after %.1f s\n", n, q);
    bu_stop(c.broker); /* SIGTERM: flushed and synced */
    double bytes = s_dir_bytes(dir);
    /* the same endpoints, the same journal */
    char bin[1024];
    snprintf(bin, sizeof bin, "%s/zexec-broker", s_bin_dir);
    const char *argv[16] = {bin, "--clients", c.client_ep, "--workers", c.worker_ep};
    int k = 5;
    for (int i = 0; extra[i]; i++) {
        argv[k++] = extra[i];
    }
    argv[k] = NULL;
    double t0 = bu_now();
    c.broker = bu_spawn((char *const *)argv);
    long w = -1, queued = -1;
    while (!(s_status(c.client_ep, &w, &queued) && queued >= n)) {
        if (bu_now() - t0 > S_LONG) {
            bu_die("J: the broker did not serve its recovered journal (%ld queued)", queued);
        }
        zclock_sleep(5);
    }
    double rec = bu_now() - t0;
    bu_result("zexec.J_recovery_tasks", (double)n, "tasks");
    bu_result("zexec.J_recovery_journal_MB", bytes / 1e6, "MB");
    bu_result("zexec.J_recovery_s", rec, "s");
    s_cluster_stop(&c);
    zx_executor_destroy(&ex);
    for (long i = 0; i < n; i++) {
        zx_future_unref(&fs[i]);
    }
    free(fs);
    s_rm_rf(dir);
}

static void s_workload_j(void)
{
    s_workload_j_submit();
    s_workload_j_recovery();
}

/* ---- B: latency -------------------------------------------------------------------------- */

static const char *s_tag;
static long s_rounds;

static void s_workload_b(void)
{
    long n = s_rounds > 0 ? s_rounds : s_quick ? 300 : 5000, warm = s_quick ? 50 : 200;
    s_cluster_t c;
    s_broker_start(&c, NULL);
    s_worker_start(&c, 2);
    zx_executor_t *ex = s_executor(&c, 60);
    s_ready(ex);
    double *lat = malloc(sizeof(double) * (size_t)n);
    for (long i = -warm; i < n; i++) {
        double t0 = bu_now();
        zx_future_t *f = zx_submitf(ex, "inc", "I", (int64_t)i);
        if (!f) {
            bu_die("zx_submitf failed: %s", zx_strerror(zx_last_error()));
        }
        s_check_int(f, i + 1, "B");
        double dt = bu_now() - t0;
        zx_future_unref(&f);
        if (i >= 0) {
            lat[i] = dt * 1e6;
        }
    }
    double mean = 0;
    for (long i = 0; i < n; i++) {
        mean += lat[i];
    }
    /* scripts/bench runs B twice: as is, and with the waiting spin off;
       and in pairs with the floor, tagged */
    const char *spin = getenv("ZEXEC_SPIN_US");
    bool nospin = spin && strcmp(spin, "0") == 0;
    char prefix[96];
    snprintf(prefix, sizeof prefix, "zexec.B%s%s%s", s_tag ? "pair_" : "", s_tag ? s_tag : "",
             nospin ? "_nospin" : "");
    char name[160];
    snprintf(name, sizeof name, "%s_p50", prefix);
    bu_result(name, bu_percentile(lat, (size_t)n, 50), "us");
    snprintf(name, sizeof name, "%s_p99", prefix);
    bu_result(name, bu_percentile(lat, (size_t)n, 99), "us");
    snprintf(name, sizeof name, "%s_mean", prefix);
    bu_result(name, mean / (double)n, "us");
    free(lat);
    zx_executor_destroy(&ex);
    s_cluster_stop(&c);
}

/* ---- C: sleeping tasks on 2 slots ---------------------------------------------------------- */

/* The same sleeps on 2 plain threads of this process pulling from a shared
   index: what nanosleep's overshoot allows on this machine (a calibration
   beside the ideal, which assumes sleeps end on time). */
typedef struct {
    const double *ms;
    long n;
    atomic_long next;
} s_local_sleeps_t;

static void *s_local_sleeper(void *arg)
{
    s_local_sleeps_t *ls = arg;
    long i;
    while ((i = atomic_fetch_add(&ls->next, 1)) < ls->n) {
        double ms = ls->ms[i];
        struct timespec ts = {(time_t)(ms / 1000), (long)(fmod(ms, 1000.0) * 1e6)};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static double s_local_sleeps(const double *ms, long n)
{
    s_local_sleeps_t ls = {.ms = ms, .n = n};
    pthread_t th[2];
    double t0 = bu_now();
    for (int i = 0; i < 2; i++) {
        pthread_create(&th[i], NULL, s_local_sleeper, &ls);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
    }
    return bu_now() - t0;
}

static void s_workload_c(void)
{
    long n = s_quick ? 400 : 10000;
    s_cluster_t c;
    s_broker_start(&c, NULL);
    s_worker_start(&c, 2);
    zx_executor_t *ex = s_executor(&c, 60);
    s_ready(ex);
    double *ms = malloc(sizeof(double) * (size_t)n);
    zx_future_t **fs = malloc(sizeof *fs * (size_t)n);
    srand48(6);
    double sum = 0;
    for (long i = 0; i < n; i++) {
        ms[i] = drand48() * 2.0;
        sum += ms[i];
    }
    double t0 = bu_now();
    for (long i = 0; i < n; i++) {
        fs[i] = zx_submitf(ex, "sleep_ms", "d", ms[i]);
        if (!fs[i]) {
            bu_die("zx_submitf failed: %s", zx_strerror(zx_last_error()));
        }
        zx_future_set_data(fs[i], &ms[i]);
    }
    zx_as_completed_t *it = zx_as_completed_new(fs, (size_t)n, S_LONG);
    long got = 0;
    zx_future_t *f;
    while ((f = zx_as_completed_next(it))) {
        const uint8_t *v = NULL;
        size_t len = 0;
        if (zx_future_result(f, 0, (const void **)&v, &len) != ZX_OK) {
            bu_wrong("C: a sleep_ms task failed");
        }
        uint64_t bits = len == 9 && v[0] == 0xcb ? s_be(v + 1, 8) : 0, want;
        memcpy(&want, zx_future_data(f), sizeof want);
        if (len != 9 || v[0] != 0xcb || bits != want) {
            bu_wrong("C: sleep_ms did not return its argument");
        }
        got++;
    }
    double wall = bu_now() - t0;
    if (got != n) {
        bu_die("C: as_completed yielded %ld of %ld", got, n);
    }
    bu_result("zexec.C_wall", wall, "s");
    bu_result("zexec.C_ideal", sum / 1000.0 / 2, "s");
    bu_result("zexec.C_local_wall", s_local_sleeps(ms, n), "s");
    zx_as_completed_destroy(&it);
    for (long i = 0; i < n; i++) {
        zx_future_unref(&fs[i]);
    }
    free(fs);
    free(ms);
    zx_executor_destroy(&ex);
    s_cluster_stop(&c);
}

/* ---- D: 1 MiB arguments -----------------------------------------------------------------------
 */

static void s_workload_d(void)
{
    long n = s_quick ? 20 : 500;
    s_cluster_t c;
    s_broker_start(&c, NULL);
    s_worker_start(&c, 2);
    zx_executor_t *ex = s_executor(&c, 60);
    s_ready(ex);
    char *payload = malloc(MIB);
    memset(payload, 'q', MIB);
    zx_future_t **fs = malloc(sizeof *fs * (size_t)n);
    for (int phase = 0; phase < 2; phase++) {
        long k = phase == 0 ? 2 : n; /* phase 0 warms the path with 2 */
        double t0 = bu_now();
        for (long i = 0; i < k; i++) {
            fs[i] = zx_submitf(ex, "len", "y", payload, (size_t)MIB);
            if (!fs[i]) {
                bu_die("zx_submitf failed: %s", zx_strerror(zx_last_error()));
            }
        }
        zx_as_completed_t *it = zx_as_completed_new(fs, (size_t)k, S_LONG);
        long got = 0;
        zx_future_t *f;
        while ((f = zx_as_completed_next(it))) {
            s_check_int(f, MIB, "D");
            got++;
        }
        double dt = bu_now() - t0;
        if (got != k) {
            bu_die("D: as_completed yielded %ld of %ld", got, k);
        }
        zx_as_completed_destroy(&it);
        for (long i = 0; i < k; i++) {
            zx_future_unref(&fs[i]);
        }
        if (phase == 1) {
            bu_result("zexec.D", (double)n * MIB / 1e6 / dt, "MB/s");
        }
    }
    free(fs);
    free(payload);
    zx_executor_destroy(&ex);
    s_cluster_stop(&c);
}

/* ---- E: broker memory and scheduling cost -----------------------------------------------------
 */

/* Counts completions on the executor's I/O thread (done-callbacks), and
   samples the clock and the broker's CPU at the first and the (k+1)-th. */
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pid_t broker;
    long k, done, wrong;
    bool closing;
    double t_first, cpu_first, t_k, cpu_k;
} s_drain_t;

static void s_on_nop_done(zx_future_t *f, void *arg)
{
    s_drain_t *d = arg;
    const uint8_t *v = NULL;
    size_t len = 0;
    pthread_mutex_lock(&d->lock);
    if (d->closing) {
        pthread_mutex_unlock(&d->lock);
        return;
    }
    bool ok = zx_future_result(f, 0, (const void **)&v, &len) == ZX_OK && len == 1 && v[0] == 0xc0;
    d->wrong += !ok;
    d->done++;
    if (d->done == 1) {
        d->t_first = bu_now();
        d->cpu_first = s_cpu_ns(d->broker);
    }
    if (d->done == d->k + 1) {
        d->t_k = bu_now();
        d->cpu_k = s_cpu_ns(d->broker);
        pthread_cond_broadcast(&d->cond);
    }
    pthread_mutex_unlock(&d->lock);
}

static zx_future_t **s_queue_nops(zx_executor_t *ex, zx_future_t **fs, long from, long to,
                                  s_drain_t *d)
{
    static const uint8_t empty[] = {0x90}; /* [] */
    for (long i = from; i < to; i++) {
        fs[i] = zx_submit(ex, "nop", empty, sizeof empty);
        if (!fs[i]) {
            bu_die("zx_submit failed at %ld: %s", i, zx_strerror(zx_last_error()));
        }
        if (zx_future_add_done_callback(fs[i], s_on_nop_done, d) != ZX_OK) {
            bu_die("zx_future_add_done_callback failed");
        }
    }
    return fs;
}

/* Broker flags for E: a queue of a million tasks of a function no worker
   offers yet must neither be refused nor failed as "no worker offers". */
static const char *const s_e_broker_args[] = {"--max-queued", "2000000", "--nofunc-grace", "3600",
                                              NULL};

/* Queues small (and then big, if big > small) nop tasks with no worker,
   measures the broker's RSS at each, then starts a worker and measures the
   broker's CPU and the wall time per task over k completions. */
static void s_e_queue_run(long small, long big, long k, double *rss_small, double *rss_big,
                          double *cpu_per_task, double *wall_per_task)
{
    s_cluster_t c;
    s_broker_start(&c, (const char *const *)s_e_broker_args);
    zx_executor_t *ex = s_executor(&c, 5);
    long n = big > small ? big : small;
    zx_future_t **fs = calloc((size_t)n, sizeof *fs);
    s_drain_t d = {.broker = c.broker, .k = k};
    pthread_mutex_init(&d.lock, NULL);
    pthread_cond_init(&d.cond, NULL);

    s_queue_nops(ex, fs, 0, small, &d);
    double q1 = s_wait_status(c.client_ep, 0, small, S_LONG);
    *rss_small = (double)bu_rss_bytes(c.broker);
    printf("# E: %ld queued, broker RSS %.1f MiB (all queued after %.1f s)\n", small,
           *rss_small / MIB, q1);
    if (big > small) {
        double t0 = bu_now();
        s_queue_nops(ex, fs, small, big, &d);
        double submit_s = bu_now() - t0;
        double q2 = s_wait_status(c.client_ep, 0, big, S_LONG);
        *rss_big = (double)bu_rss_bytes(c.broker);
        printf(
            "# E: %ld queued, broker RSS %.1f MiB (submit calls %.1f s, all queued after %.1f s)\n",
            big, *rss_big / MIB, submit_s, q2);
    }
    fflush(stdout);
    pthread_mutex_lock(&d.lock);
    if (d.done) {
        bu_wrong("E: %ld nop tasks completed with no worker connected", d.done);
    }
    pthread_mutex_unlock(&d.lock);

    s_worker_start(&c, 2);
    pthread_mutex_lock(&d.lock);
    double deadline = bu_now() + S_LONG;
    while (d.done <= k && bu_now() < deadline) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&d.cond, &d.lock, &ts);
    }
    if (d.done <= k) {
        bu_die("E: only %ld of %ld queued tasks ran", d.done, k + 1);
    }
    if (d.wrong) {
        bu_wrong("E: %ld nop results were wrong", d.wrong);
    }
    *cpu_per_task = (d.cpu_k - d.cpu_first) / (double)k;
    *wall_per_task = (d.t_k - d.t_first) * 1e9 / (double)k;
    pthread_mutex_unlock(&d.lock);

    if (big <= small) {
        /* a small queue drains in moments: wait for all and check them */
        for (long i = 0; i < n; i++) {
            if (zx_future_result(fs[i], S_LONG, NULL, NULL) != ZX_OK) {
                bu_wrong("E: nop task %ld failed", i);
            }
        }
    }
    pthread_mutex_lock(&d.lock);
    d.closing = true; /* what is still queued is cancelled now */
    pthread_mutex_unlock(&d.lock);
    /* cancel_futures decides with the broker, asynchronously: the last
       future queued is the last one it cancels */
    zx_executor_shutdown(ex, false, true);
    zx_future_exception(fs[n - 1], 60);
    s_cluster_stop(&c);
    zx_executor_destroy(&ex);
    for (long i = 0; i < n; i++) {
        zx_future_unref(&fs[i]);
    }
    free(fs);
    pthread_mutex_destroy(&d.lock);
    pthread_cond_destroy(&d.cond);
}

/* 200 idle worker connections: each a DEALER that says READY offering a
   function nobody calls, then heartbeats (and READY again on RESET). */
typedef struct {
    const char *endpoint;
    int n;
    atomic_bool stop;
    atomic_int sent_ready;
} s_idle_t;

static void s_idle_ready(zsock_t *sock, const uint8_t *id, int i)
{
    char node[32];
    snprintf(node, sizeof node, "idle-%d", i);
    zxp_out_t out;
    zxp_out_init(&out);
    zxp_out_begin(&out, ZXP_READY);
    zxp_ready_t r = {.worker_id = id,
                     .node = node,
                     .pid = (uint32_t)getpid(),
                     .threads = 1,
                     .procs = 0,
                     .prefetch = 1,
                     .heartbeat_ms = 1000,
                     .nfns = 1};
    zxp_put_ready(&out, &r);
    zxp_put_ready_fn(&out, "bench_idle_fn", ZXP_POOLS_THREAD);
    zxp_put_ready_running(&out, 0);
    zxp_out_send(&out, sock, NULL);
    zxp_out_fini(&out);
}

static void *s_idle_thread(void *arg)
{
    s_idle_t *idle = arg;
    zsock_t **socks = calloc((size_t)idle->n, sizeof *socks);
    uint8_t(*ids)[ZXP_ID_LEN] = calloc((size_t)idle->n, ZXP_ID_LEN);
    for (int i = 0; i < idle->n; i++) {
        /* the broker knows a worker by its routing id, which must be the
           worker id of its READY */
        for (size_t b = 0; b < ZXP_ID_LEN; b++) {
            ids[i][b] = (uint8_t)(rand() & 0xff);
        }
        ids[i][0] |= 1; /* a routing id may not start with a zero byte */
        socks[i] = zsock_new(ZMQ_DEALER);
        zmq_setsockopt(zsock_resolve(socks[i]), ZMQ_ROUTING_ID, ids[i], ZXP_ID_LEN);
        zxp_sock_setup(socks[i]);
        zsock_set_rcvtimeo(socks[i], 0);
        if (zsock_connect(socks[i], "%s", idle->endpoint) != 0) {
            bu_die("idle worker %d cannot connect", i);
        }
        s_idle_ready(socks[i], ids[i], i);
    }
    atomic_store(&idle->sent_ready, 1);
    double next_beat = bu_now() + 0.3;
    while (!atomic_load(&idle->stop)) {
        for (int i = 0; i < idle->n; i++) {
            zmsg_t *msg;
            while ((msg = zmsg_recv(socks[i]))) {
                zframe_t *sig = zmsg_first(msg);
                if (sig && zframe_size(sig) == 4 && zframe_data(sig)[3] == ZXP_RESET) {
                    s_idle_ready(socks[i], ids[i], i);
                }
                zmsg_destroy(&msg);
            }
        }
        if (bu_now() >= next_beat) {
            for (int i = 0; i < idle->n; i++) {
                zxp_send_empty(socks[i], NULL, ZXP_HEARTBEAT);
            }
            next_beat = bu_now() + 0.3;
        }
        zclock_sleep(20); /* a load generator, not a waiter: a coarse tick is fine */
    }
    for (int i = 0; i < idle->n; i++) {
        zxp_send_empty(socks[i], NULL, ZXP_BYE);
        zsock_set_linger(socks[i], 100);
        zsock_destroy(&socks[i]);
    }
    free(socks);
    free(ids);
    return NULL;
}

/* Broker CPU ns per task and wall ns per task of an inc stream (median of
   three rounds of m tasks). */
static void s_stream_cost(zx_executor_t *ex, pid_t broker, long m, double *cpu, double *wall)
{
    double cpus[3], walls[3];
    for (int r = 0; r < 3; r++) {
        double c0 = s_cpu_ns(broker), t0 = bu_now();
        s_a_submit(ex, m, (int64_t)r * m);
        cpus[r] = (s_cpu_ns(broker) - c0) / (double)m;
        walls[r] = (bu_now() - t0) * 1e9 / (double)m;
    }
    *cpu = bu_percentile(cpus, 3, 50);
    *wall = bu_percentile(walls, 3, 50);
}

static void s_workload_e(void)
{
    long small = s_quick ? 2000 : 10000, big = s_quick ? 50000 : 1000000;
    long k = small / 2;
    double rss_s, rss_b, cpu_s, cpu_b, wall_s, wall_b, unused;

    /* a drain of k tasks lasts some 10-30 ms, so one reading swings with
       whatever else the machine does: the median of three runs of each */
    enum { RUNS = 3 };
    double cs[RUNS], cb[RUNS], ws[RUNS], wb[RUNS];
    for (int r = 0; r < RUNS; r++) {
        s_e_queue_run(small, 0, k, &rss_s, &unused, &cs[r], &ws[r]);
        s_e_queue_run(small, big, k, &rss_s, &rss_b, &cb[r], &wb[r]);
    }
    cpu_s = bu_percentile(cs, RUNS, 50);
    cpu_b = bu_percentile(cb, RUNS, 50);
    wall_s = bu_percentile(ws, RUNS, 50);
    wall_b = bu_percentile(wb, RUNS, 50);
    double per_task = (rss_b - rss_s) / (double)(big - small) - 1.0; /* less the payload [] */
    bu_result("zexec.E_rss_small", rss_s, "bytes");
    bu_result("zexec.E_rss_big", rss_b, "bytes");
    bu_result("zexec.E_queued_small", (double)small, "tasks");
    bu_result("zexec.E_queued_big", (double)big, "tasks");
    bu_result("zexec.E_bytes_per_task", per_task, "B");
    bu_result("zexec.E_cost_10k", cpu_s, "ns/task");
    bu_result("zexec.E_cost_1m", cpu_b, "ns/task");
    bu_result("zexec.E_wall_10k", wall_s, "ns/task");
    bu_result("zexec.E_wall_1m", wall_b, "ns/task");

    /* 200 idle workers against 1 */
    long m = s_quick ? 2000 : 30000;
    s_cluster_t c;
    s_broker_start(&c, NULL);
    s_worker_start(&c, 2);
    zx_executor_t *ex = s_executor(&c, 60);
    s_ready(ex);
    s_a_submit(ex, m / 4, 5000000); /* warm-up */
    double cpu_1, wall_1, cpu_200, wall_200;
    s_stream_cost(ex, c.broker, m, &cpu_1, &wall_1);
    s_idle_t idle = {.endpoint = c.worker_ep, .n = 200};
    pthread_t th;
    pthread_create(&th, NULL, s_idle_thread, &idle);
    while (!atomic_load(&idle.sent_ready)) {
        zclock_sleep(10);
    }
    s_wait_status(c.client_ep, 201, 0, 60);
    s_stream_cost(ex, c.broker, m, &cpu_200, &wall_200);
    atomic_store(&idle.stop, true);
    pthread_join(th, NULL);
    bu_result("zexec.E_cost_1w", cpu_1, "ns/task");
    bu_result("zexec.E_cost_200w", cpu_200, "ns/task");
    bu_result("zexec.E_wall_1w", wall_1, "ns/task");
    bu_result("zexec.E_wall_200w", wall_200, "ns/task");
    zx_executor_destroy(&ex);
    s_cluster_stop(&c);
}

/* ---- F: scale-out --------------------------------------------------------------------------- */

/* The three cluster shapes run side by side and are measured in many short
   turns, each turn led by the next shape. This machine's speed swings by
   30% within seconds (one shape's map(256) ran 5.4M and 10.1M inputs/s a
   few turns apart), so shapes measured one after the other, or in a few
   long turns, compared moments rather than shapes. Each shape's throughput
   is all its work over all its time, the turns interleaved so that every
   shape meets the same swings; a step (report.py) is the ratio of two
   throughputs.
   Five turns of 2M inputs, judged by the median of per-turn ratios, moved
   a step by 0.08 from run to run; 40 turns of 1M inputs, by all inputs
   over all time, by 0.04 (docs/performance.md, change 30). */
static void s_workload_f(void)
{
    long n = s_quick ? 3000 : 100000, nm = s_quick ? 3000 : 1000000;
    enum { SHAPES = 3, TURNS_MAX = 40 };
    int turns = s_quick ? 5 : TURNS_MAX;
    static const int counts[SHAPES] = {1, 2, 4};
    s_cluster_t c[SHAPES];
    zx_executor_t *ex[SHAPES];
    for (int i = 0; i < SHAPES; i++) {
        s_broker_start(&c[i], NULL);
        for (int w = 0; w < counts[i]; w++) {
            s_worker_start(&c[i], 4 / counts[i]);
        }
        ex[i] = s_executor(&c[i], 60);
        s_ready(ex[i]);
        s_a_submit(ex[i], s_quick ? 500 : 5000, 1000000); /* warm-up; lets every worker join */
    }
    double sub_s[SHAPES] = {0}, map_s[SHAPES] = {0}; /* seconds over all turns */
    for (int t = 0; t < turns; t++) {
        for (int k = 0; k < SHAPES; k++) {
            int i = (t + k) % SHAPES;
            double rs = s_a_submit(ex[i], n, 0), rm = s_a_map(ex[i], nm, 256, 0);
            sub_s[i] += (double)n / rs;
            map_s[i] += (double)nm / rm;
            printf("# F turn %d, %d worker(s): submit %.0f, map(256) %.0f tasks/s\n", t + 1,
                   counts[i], rs, rm);
        }
    }
    char name[64];
    for (int i = 0; i < SHAPES; i++) {
        snprintf(name, sizeof name, "zexec.F_%dw", counts[i]);
        bu_result(name, (double)n * turns / sub_s[i], "tasks/s");
        snprintf(name, sizeof name, "zexec.F_map_%dw", counts[i]);
        bu_result(name, (double)nm * turns / map_s[i], "tasks/s");
    }
    for (int i = 0; i < SHAPES; i++) {
        zx_executor_destroy(&ex[i]);
        s_cluster_stop(&c[i]);
    }
}

/* ---- G: scheduling of mixed work (issue 14) ----------------------------------------- */

static zx_future_t *s_sleep_ms(zx_executor_t *ex, double ms, zx_pool_t pool)
{
    uint8_t buf[16];
    buf[0] = 0x91; /* [float64] */
    buf[1] = 0xcb;
    uint64_t bits;
    memcpy(&bits, &ms, 8);
    for (int i = 0; i < 8; i++) {
        buf[2 + i] = (uint8_t)(bits >> (56 - 8 * i));
    }
    zx_task_opts_t to = {.pool = pool};
    zx_future_t *f = zx_submit_opts(ex, "sleep_ms", buf, 10, &to);
    if (!f) {
        bu_die("submit failed: %s", zx_strerror(zx_last_error()));
    }
    return f;
}

static void s_wait_ok(zx_future_t *f, const char *what)
{
    if (zx_future_result(f, S_LONG, NULL, NULL) != ZX_OK) {
        const zx_error_t *e = zx_future_exception(f, 0);
        bu_wrong("%s: task failed: %s: %s", what, e ? e->type : "?", e ? e->message : "?");
    }
}

/* Waits until each of the cluster's n workers has run a task (they are
   then registered): rounds of inc tasks wider than one worker's window. */
static void s_ready_all(zx_executor_t *ex, int n)
{
    enum { ROUND = 4096 };
    zx_future_t **fs = calloc(ROUND, sizeof *fs);
    bool seen[8] = {false};
    int nseen = 0;
    double end = bu_now() + 60;
    while (nseen < n && bu_now() < end) {
        for (int i = 0; i < ROUND; i++) {
            fs[i] = zx_submitf(ex, "inc", "I", (int64_t)i);
        }
        for (int i = 0; i < ROUND; i++) {
            s_check_int(fs[i], i + 1, "G ready");
            int k = 0;
            if (sscanf(zx_future_node(fs[i]), "bench-%d", &k) == 1 && k >= 1 && k <= 8 &&
                !seen[k - 1]) {
                seen[k - 1] = true;
                nseen++;
            }
            zx_future_unref(&fs[i]);
        }
    }
    free(fs);
    if (nseen < n) {
        bu_die("only %d of %d workers ran a task", nseen, n);
    }
}

/* n long tasks, all submitted at once; returns the makespan in s and, when
   on is not NULL, how many ran on each node bench-1..8. */
static double s_longs(zx_executor_t *ex, int n, double ms, zx_pool_t pool, int on[8],
                      void (*mid)(void *), void *arg, double mid_at)
{
    zx_future_t **fs = calloc((size_t)n, sizeof *fs);
    double t0 = bu_now();
    for (int i = 0; i < n; i++) {
        fs[i] = s_sleep_ms(ex, ms, pool);
    }
    if (mid) {
        double until = t0 + mid_at;
        while (bu_now() < until) {
            zclock_sleep(1);
        }
        mid(arg);
    }
    for (int i = 0; i < n; i++) {
        s_wait_ok(fs[i], "G");
        int k = 0;
        if (on && sscanf(zx_future_node(fs[i]), "bench-%d", &k) == 1 && k >= 1 && k <= 8) {
            on[k - 1]++;
        }
    }
    double took = bu_now() - t0;
    for (int i = 0; i < n; i++) {
        zx_future_unref(&fs[i]);
    }
    free(fs);
    return took;
}

static void s_g_report(const char *name, double took, double bound)
{
    char key[96];
    snprintf(key, sizeof key, "zexec.G_%s_s", name);
    bu_result(key, took, "s");
    snprintf(key, sizeof key, "zexec.G_%s_bound", name);
    bu_result(key, bound, "s");
    snprintf(key, sizeof key, "zexec.G_%s_ratio", name);
    bu_result(key, took / bound, "x");
}

static void s_g_join(void *arg)
{
    s_worker_start(arg, 2);
}

static void s_g_drain(void *arg)
{
    s_cluster_t *c = arg;
    kill(c->workers[1], SIGTERM); /* reaped by s_cluster_stop */
}

/* n inc tasks by one client; the time until the last result, in s. */
static double s_g_shorts(zx_executor_t *ex, long n)
{
    return (double)n / s_a_submit(ex, n, 0);
}

typedef struct {
    zx_executor_t *ex;
    long n;
    double start_delay, took;
} s_g_client_t;

static void *s_g_short_client(void *arg)
{
    s_g_client_t *c = arg;
    zclock_sleep((int)(c->start_delay * 1000));
    c->took = s_g_shorts(c->ex, c->n);
    return NULL;
}

static void s_workload_g(void)
{
    double L = s_quick ? 200.0 : 1000.0, Ls = L / 1000.0;
    s_cluster_t c;
    zx_executor_t *ex;

    /* short burst, then 8 long on 2 workers x 2 threads */
    s_broker_start(&c, NULL);
    s_worker_start(&c, 2);
    s_worker_start(&c, 2);
    ex = s_executor(&c, 60);
    s_ready_all(ex, 2);
    s_a_submit(ex, s_quick ? 2000 : 20000, 0);
    s_g_report("burst_then_long", s_longs(ex, 8, L, ZX_POOL_ANY, NULL, NULL, NULL, 0), 2 * Ls);
    zx_executor_destroy(&ex);
    s_cluster_stop(&c);

    /* 99% 0.1 ms + 1% long, interleaved, on 2 workers x 4 threads */
    s_broker_start(&c, NULL);
    s_worker_start(&c, 4);
    s_worker_start(&c, 4);
    ex = s_executor(&c, 60);
    s_ready_all(ex, 2);
    {
        int n = s_quick ? 400 : 1600, nlong = 0;
        zx_future_t **fs = calloc((size_t)n, sizeof *fs);
        double t0 = bu_now();
        for (int i = 0; i < n; i++) {
            bool lng = i % 100 == 50;
            nlong += lng;
            fs[i] = s_sleep_ms(ex, lng ? L : 0.1, ZX_POOL_ANY);
        }
        for (int i = 0; i < n; i++) {
            s_wait_ok(fs[i], "G mixed");
            zx_future_unref(&fs[i]);
        }
        double took = bu_now() - t0;
        free(fs);
        double work = nlong * Ls + (n - nlong) * 0.0001;
        s_g_report("mixed_1pct_long", took, work / 8 > Ls ? work / 8 : Ls);
    }
    zx_executor_destroy(&ex);
    s_cluster_stop(&c);

    /* 8 long on one worker of 2 threads; a second joins at 0.3 x long */
    s_broker_start(&c, NULL);
    s_worker_start(&c, 2);
    ex = s_executor(&c, 60);
    s_ready(ex);
    {
        int on[8] = {0};
        double took = s_longs(ex, 8, L, ZX_POOL_ANY, on, s_g_join, &c, 0.3 * Ls);
        /* the first worker runs 4 in 2 rounds, the late one 4 from its join */
        s_g_report("join", took, 2.3 * Ls);
        bu_result("zexec.G_join_late_ran", on[1], "tasks");
    }
    zx_executor_destroy(&ex);
    s_cluster_stop(&c);

    /* 8 long on 2 workers x 2 threads; the second drained at 0.3 x long */
    s_broker_start(&c, NULL);
    s_worker_start(&c, 2);
    s_worker_start(&c, 2);
    ex = s_executor(&c, 60);
    s_ready_all(ex, 2);
    {
        int on[8] = {0};
        double took = s_longs(ex, 8, L, ZX_POOL_ANY, on, s_g_drain, &c, 0.3 * Ls);
        /* the drained worker ends its 2; the other runs 6 in 3 rounds */
        s_g_report("drain", took, 3 * Ls);
        bu_result("zexec.G_drain_drained_ran", on[1], "tasks");
    }
    zx_executor_destroy(&ex);
    s_cluster_stop(&c);

    /* 8 long of pool any on one worker of 2 threads + 2 processes */
    s_broker_start(&c, NULL);
    s_worker_start_ex(&c, 2, 2);
    ex = s_executor(&c, 60);
    s_ready(ex);
    s_g_report("both_pools_any", s_longs(ex, 8, L, ZX_POOL_ANY, NULL, NULL, NULL, 0), 2 * Ls);
    zx_executor_destroy(&ex);
    s_cluster_stop(&c);

    /* 25 x 0.2 long on nodes of 1 and 4 slots */
    s_broker_start(&c, NULL);
    s_worker_start(&c, 1);
    s_worker_start(&c, 4);
    ex = s_executor(&c, 60);
    s_ready_all(ex, 2);
    {
        int on[8] = {0};
        double took = s_longs(ex, 25, 0.2 * L, ZX_POOL_ANY, on, NULL, NULL, 0);
        s_g_report("nodes_1_and_4", took, 25 * 0.2 * Ls / 5);
        bu_result("zexec.G_nodes_1_and_4_small_ran", on[0], "tasks");
    }
    zx_executor_destroy(&ex);
    s_cluster_stop(&c);

    /* fair turns, both ways, on 2 workers x 2 threads: one client's short
       tasks (inc) and another's 10 long ones, each against its time alone */
    s_broker_start(&c, NULL);
    s_worker_start(&c, 2);
    s_worker_start(&c, 2);
    zx_executor_t *sx = s_executor(&c, 60), *lx = s_executor(&c, 60);
    s_ready_all(sx, 2);
    long nshort = s_quick ? 10000 : 100000;
    double short_alone = s_g_shorts(sx, nshort);
    double long_alone = s_longs(lx, 10, L, ZX_POOL_ANY, NULL, NULL, NULL, 0);
    bu_result("zexec.G_fair_short_alone_s", short_alone, "s");
    bu_result("zexec.G_fair_long_alone_s", long_alone, "s");
    {
        /* the short client first, the long one 10 ms later */
        s_g_client_t sc = {sx, nshort, 0, 0};
        pthread_t th;
        pthread_create(&th, NULL, s_g_short_client, &sc);
        zclock_sleep(10);
        double lt = s_longs(lx, 10, L, ZX_POOL_ANY, NULL, NULL, NULL, 0);
        pthread_join(th, NULL);
        bu_result("zexec.G_fair_long_after_short_s", lt, "s");
        bu_result("zexec.G_fair_long_after_short_ratio", lt / long_alone, "x");
        bu_result("zexec.G_fair_short_with_long_s", sc.took, "s");
    }
    {
        /* the long client first, the short one 10 ms later */
        s_g_client_t sc = {sx, nshort, 0.01, 0};
        pthread_t th;
        pthread_create(&th, NULL, s_g_short_client, &sc);
        double lt = s_longs(lx, 10, L, ZX_POOL_ANY, NULL, NULL, NULL, 0);
        pthread_join(th, NULL);
        bu_result("zexec.G_fair_short_after_long_s", sc.took, "s");
        bu_result("zexec.G_fair_short_after_long_ratio", sc.took / short_alone, "x");
        /* no preemption: when the long client holds every slot, the short
           one's first task waits for one long task to end */
        bu_result("zexec.G_fair_short_after_long_bound", short_alone + Ls, "s");
        bu_result("zexec.G_fair_long_with_short_s", lt, "s");
    }
    zx_executor_destroy(&sx);
    zx_executor_destroy(&lx);
    s_cluster_stop(&c);
}

int main(int argc, char **argv)
{
    s_quick = bu_has_flag(argc, argv, "--quick");
    s_bin_dir = bu_opt(argc, argv, "--bin-dir");
    s_plugin = bu_opt(argc, argv, "--plugin");
    const char *w = bu_opt(argc, argv, "--workload");
    if (!s_bin_dir || !s_plugin || !w || strlen(w) != 1 || !strchr("ABCDEFGJ", w[0])) {
        fprintf(stderr, "usage: bench_zexec --workload A|B|C|D|E|F|G|J [--quick] --bin-dir DIR "
                        "--plugin PATH\n");
        return 64;
    }
    if (access(s_plugin, R_OK) != 0) {
        bu_die("plugin %s not found", s_plugin);
    }
    s_tag = bu_opt(argc, argv, "--tag");
    s_rounds = bu_opt(argc, argv, "--rounds") ? atol(bu_opt(argc, argv, "--rounds")) : 0;
    const char *sec = bu_opt(argc, argv, "--security");
    if (sec) {
        s_security_setup(sec);
        atexit(s_security_cleanup);
    }
    signal(SIGPIPE, SIG_IGN);
    zsys_set_logstream(stderr); /* stdout carries the RESULT lines */
    printf("# zexec workload %s%s\n", w, s_quick ? " (quick)" : "");
    fflush(stdout);
    switch (w[0]) {
    case 'A': s_workload_a(); break;
    case 'B': s_workload_b(); break;
    case 'C': s_workload_c(); break;
    case 'D': s_workload_d(); break;
    case 'E': s_workload_e(); break;
    case 'F': s_workload_f(); break;
    case 'G': s_workload_g(); break;
    case 'J': s_workload_j(); break;
    }
    return 0;
}
