/*  test_security.c - the attacks of docs/security.md against the real
    zexec-broker and zexec-worker on a non-loopback address made for the test:
    the CURVE authentication matrix (every refused case: 0 tasks queued, 0
    run, while the legitimate client completes all of its tasks), the ZAP
    handler gone and an empty key folder (the right key is refused too), the
    shared-secret cluster, and a captured SUBMIT replayed in the same
    session, after a broker restart and to a second broker. */
#include "zexec.h"
#include "zx_auth.h"
#include "zx_proto.h"
#include "zx_sign.h"
#include "zx_testutil.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

TestSuite(security, .timeout = 240);

static char s_ip[64];
static char s_dir[64];

/* A non-loopback address that only this test can reach: a veth pair made
   here with a private /32 on one end (the broker must refuse to bind it
   without security, so it is the real case, not 127.0.0.1). Needs root;
   removed by s_teardown. The machine's own interfaces are never used. */
static char s_veth[16];

static bool s_find_ip(void)
{
    if (geteuid() != 0) {
        return false;
    }
    unsigned id = (unsigned)getpid();
    snprintf(s_veth, sizeof s_veth, "zxs%u", id % 100000);
    snprintf(s_ip, sizeof s_ip, "10.233.%u.%u", (id / 250) % 250, 1 + id % 250);
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "ip link add %s type veth peer name %sp && ip addr add %s/32 dev %s && "
             "ip link set %s up && ip link set %sp up",
             s_veth, s_veth, s_ip, s_veth, s_veth, s_veth);
    if (system(cmd) != 0) {
        snprintf(cmd, sizeof cmd, "ip link del %s 2>/dev/null", s_veth);
        (void)!system(cmd);
        s_veth[0] = 0;
        return false;
    }
    return true;
}

static void s_drop_ip(void)
{
    if (s_veth[0]) {
        char cmd[64];
        snprintf(cmd, sizeof cmd, "ip link del %s 2>/dev/null", s_veth);
        (void)!system(cmd);
        s_veth[0] = 0;
    }
}

static char *s_path(const char *name)
{
    static char p[16][300];
    static int n;
    n = (n + 1) % 16;
    snprintf(p[n], sizeof p[n], "%s/%s", s_dir, name);
    return p[n];
}

static void s_setup(void)
{
    if (!s_find_ip()) {
        cr_skip_test("needs root and iproute2 to make a private non-loopback address (veth)");
    }
    snprintf(s_dir, sizeof s_dir, "/tmp/zx-sec-XXXXXX");
    cr_assert(mkdtemp(s_dir));
    char err[256];
    const char *names[] = {"broker", "alice", "w1", "eve", "fakebroker"};
    for (size_t i = 0; i < 5; i++) {
        cr_assert_eq(zx__auth_keygen(s_dir, names[i], err, sizeof err), 0, "%s", err);
    }
    mkdir(s_path("clients"), 0700);
    mkdir(s_path("workers"), 0700);
    mkdir(s_path("empty"), 0700);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cp %s/alice %s/clients/ && cp %s/w1 %s/workers/", s_dir, s_dir,
             s_dir, s_dir);
    cr_assert_eq(system(cmd), 0);
    FILE *f = fopen(s_path("secret"), "w");
    fputs("a shared secret of at least sixteen bytes\n", f);
    fclose(f);
    f = fopen(s_path("wrong_secret"), "w");
    fputs("another secret, not the cluster's\n", f);
    fclose(f);
    chmod(s_path("secret"), 0600); /* as an operator would: no mode warning */
    chmod(s_path("wrong_secret"), 0600);
}

static void s_teardown(void)
{
    s_drop_ip();
    if (s_dir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", s_dir);
        cr_assert_eq(system(cmd), 0);
    }
}

typedef struct {
    pid_t broker;
    int cport, wport;
    char cep[96], wep[96];
} s_broker_t;

/* Starts the broker binary named name on s_ip with extra args
   (NULL-terminated list). */
static pid_t s_broker_start_bin(s_broker_t *b, const char *const *extra, const char *name)
{
    if (!b->cport) {
        b->cport = zxt_free_port();
        b->wport = zxt_free_port();
        snprintf(b->cep, sizeof b->cep, "tcp://%s:%d", s_ip, b->cport);
        snprintf(b->wep, sizeof b->wep, "tcp://%s:%d", s_ip, b->wport);
    }
    char *bin = zxt_bin(name);
    const char *argv[32] = {bin, "--clients", b->cep, "--workers", b->wep, "-q"};
    int n = 6;
    for (; extra && *extra; extra++) {
        argv[n++] = *extra;
    }
    argv[n] = NULL;
    b->broker = zxt_spawn((char *const *)argv);
    free(bin);
    return b->broker;
}

static pid_t s_broker_start(s_broker_t *b, const char *const *extra)
{
    return s_broker_start_bin(b, extra, "zexec-broker");
}

static pid_t s_worker_start(const char *ep, const char *const *extra)
{
    char *bin = zxt_bin("zexec-worker");
    const char *argv[32] = {bin, "--broker", ep, "--threads", "4", "--procs", "0", "-q"};
    int n = 8;
    for (; extra && *extra; extra++) {
        argv[n++] = *extra;
    }
    argv[n] = NULL;
    pid_t pid = zxt_spawn((char *const *)argv);
    free(bin);
    return pid;
}

static const uint8_t ARGS[] = {0x91, 0x2a}; /* [42] */

/* Submits n echo tasks; returns how many completed with the value within
   timeout seconds. */
static int s_run(zx_executor_t *ex, int n, double timeout)
{
    zx_future_t **fs = calloc((size_t)n, sizeof *fs);
    for (int i = 0; i < n; i++) {
        fs[i] = zx_submit(ex, "echo", ARGS, sizeof ARGS);
        cr_assert(fs[i]);
    }
    int ok = 0;
    for (int i = 0; i < n; i++) {
        const void *v;
        size_t len;
        int rc = zx_future_result(fs[i], timeout, &v, &len);
        /* echo returns its arguments */
        if (rc == ZX_OK && len == sizeof ARGS && memcmp(v, ARGS, len) == 0) {
            ok++;
        } else if (ok == i) {
            const zx_error_t *e = zx_future_exception(fs[i], 0);
            cr_log_warn("task %d: rc %d len %zu: %s: %s", i, rc, len, e ? e->type : "?",
                        e ? e->message : "no result");
        }
        zx_future_unref(&fs[i]);
    }
    free(fs);
    return ok;
}

/* An attacker: submits n tasks and holds the futures. */
typedef struct {
    zx_executor_t *ex;
    zx_future_t *fs[10];
} s_attacker_t;

static void s_attack(s_attacker_t *a, const char *ep, const char *key, const char *server_key,
                     const char *secret_file)
{
    zx_options_t o = {
        .broker_timeout = 600, .key = key, .server_key = server_key, .secret_file = secret_file};
    a->ex = zx_executor_new(ep, &o);
    cr_assert(a->ex, "the attacker's executor is made (connecting never blocks)");
    for (int i = 0; i < 10; i++) {
        a->fs[i] = zx_submit(a->ex, "echo", ARGS, sizeof ARGS);
    }
}

/* None of its tasks ran or even started (a refused handshake fails them:
   that is not running); then it is torn down. */
static int s_attack_ran(s_attacker_t *a)
{
    int ran = 0;
    for (int i = 0; i < 10; i++) {
        const zx_error_t *e = zx_future_done(a->fs[i]) ? zx_future_exception(a->fs[i], 0) : NULL;
        bool refused = e && e->code == ZX_ECONN;
        if ((zx_future_done(a->fs[i]) && !refused) || zx_future_running(a->fs[i])) {
            ran++;
        }
        zx_future_cancel(a->fs[i]);
        zx_future_unref(&a->fs[i]);
    }
    zx_executor_shutdown(a->ex, false, true);
    zx_executor_destroy(&a->ex);
    return ran;
}

/* ---- a raw client: HELLO, STATUS, signed SUBMIT bytes ----------------------------- */

typedef struct {
    zsock_t *dealer;
    zx__sign_t *sign;
    uint8_t session[16];
    zxp_in_t in;
} s_raw_t;

static zmsg_t *s_raw_recv(s_raw_t *r, int timeout_ms)
{
    zsock_set_rcvtimeo(r->dealer, timeout_ms);
    zmsg_t *m = zmsg_recv(r->dealer);
    if (m && r->sign && zx__sign_verify(r->sign, m, NULL, ZXP_ROLE_CLIENT) != 0) {
        zmsg_destroy(&m);
    }
    return m;
}

/* Connects and says HELLO until WELCOME (RESET first when signing). */
static void s_raw_open(s_raw_t *r, const char *ep, const char *key, const char *server_key,
                       zx__sign_t *sign, const uint8_t *session)
{
    memset(r, 0, sizeof *r);
    r->dealer = zsock_new(ZMQ_DEALER);
    zxp_sock_setup(r->dealer);
    if (key) {
        cr_assert_eq(zx__auth_client_setup(r->dealer, key, server_key), 0);
    }
    r->sign = sign;
    if (sign) {
        zx__sign_attach(sign, r->dealer, ZXP_ROLE_BROKER_C);
    }
    memcpy(r->session, session, 16);
    zmq_setsockopt(zsock_resolve(r->dealer), ZMQ_ROUTING_ID, r->session, 16);
    cr_assert_eq(zsock_connect(r->dealer, "%s", ep), 0);
    zxp_in_init(&r->in);
    int64_t end = zclock_mono() + 20000;
    while (zclock_mono() < end) {
        zxp_send_hello(r->dealer, r->session, "raw", 1000);
        zmsg_t *m = s_raw_recv(r, 500);
        if (m && zxp_decode(&r->in, &m, ZXP_ROLE_CLIENT) == 0 && r->in.cmd == ZXP_WELCOME) {
            return;
        }
        zmsg_destroy(&m);
    }
    cr_assert_fail("no WELCOME from %s", ep);
}

static void s_raw_close(s_raw_t *r)
{
    zxp_in_fini(&r->in);
    if (r->sign) {
        zx__sign_attach(NULL, r->dealer, 0);
    }
    zsock_destroy(&r->dealer);
}

/* Finds key in the STATUS map (at any depth); UINT64_MAX when absent. */
static uint64_t s_find(const msgpack_object *o, const char *key, int depth)
{
    if (depth > 6) {
        return UINT64_MAX;
    }
    if (o->type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == strlen(key) &&
                memcmp(kv->key.via.str.ptr, key, strlen(key)) == 0) {
                if (kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
                    return kv->val.via.u64;
                }
                if (kv->val.type == MSGPACK_OBJECT_ARRAY) {
                    return kv->val.via.array.size;
                }
            }
            uint64_t v = s_find(&kv->val, key, depth + 1);
            if (v != UINT64_MAX) {
                return v;
            }
        }
    }
    return UINT64_MAX;
}

typedef struct {
    uint64_t submitted, done, workers, dropped;
} s_status_t;

static s_status_t s_raw_status(s_raw_t *r)
{
    s_status_t st = {UINT64_MAX, UINT64_MAX, UINT64_MAX, UINT64_MAX};
    int64_t end = zclock_mono() + 10000;
    zxp_send_empty(r->dealer, NULL, ZXP_STATUS);
    while (zclock_mono() < end) {
        zmsg_t *m = s_raw_recv(r, 1000);
        if (!m) {
            zxp_send_empty(r->dealer, NULL, ZXP_STATUS);
            continue;
        }
        if (zxp_decode(&r->in, &m, ZXP_ROLE_CLIENT) == 0 && r->in.cmd == ZXP_STATUS_REPLY) {
            const msgpack_object *map = zxp_o(zxp_item(&r->in, 0), 0);
            st.submitted = s_find(map, "submitted", 0);
            st.done = s_find(map, "done", 0);
            st.dropped = s_find(map, "dropped_messages", 0);
            for (uint32_t i = 0; i < map->via.map.size; i++) {
                const msgpack_object_kv *kv = &map->via.map.ptr[i];
                if (kv->key.via.str.size == 7 && memcmp(kv->key.via.str.ptr, "workers", 7) == 0 &&
                    kv->val.type == MSGPACK_OBJECT_ARRAY) {
                    st.workers = kv->val.via.array.size;
                }
            }
            return st;
        }
        zmsg_destroy(&m);
    }
    cr_assert_fail("no STATUS-REPLY");
    return st;
}

/* ---- the CURVE matrix ------------------------------------------------------------------- */

Test(security, curve_matrix_every_stranger_runs_nothing_while_the_client_runs_everything,
     .init = s_setup, .fini = s_teardown)
{
    s_broker_t b = {0};
    const char *bargs[] = {"--key",
                           s_path("broker_secret"),
                           "--client-keys",
                           s_path("clients"),
                           "--worker-keys",
                           s_path("workers"),
                           NULL};
    cr_assert_gt(s_broker_start(&b, bargs), 0);
    const char *wargs[] = {"--key", s_path("w1_secret"), "--server-key", s_path("broker"), NULL};
    pid_t w1 = s_worker_start(b.wep, wargs);
    /* a client key trying to register as a worker */
    const char *fake_w[] = {
        "--key", s_path("alice_secret"), "--server-key", s_path("broker"), "--node", "impostor",
        NULL};
    pid_t w2 = s_worker_start(b.wep, fake_w);
    /* a worker without CURVE */
    pid_t w3 = s_worker_start(b.wep, NULL);

    s_attacker_t a[4];
    s_attack(&a[0], b.cep, NULL, NULL, NULL);                                 /* no CURVE */
    s_attack(&a[1], b.cep, s_path("eve_secret"), s_path("fakebroker"), NULL); /* unknown keys */
    s_attack(&a[2], b.cep, s_path("eve_secret"), s_path("broker"), NULL);     /* server key, no
                                                                                 allowlisted key */
    s_attack(&a[3], b.cep, s_path("w1_secret"), s_path("broker"), NULL); /* worker key as client */

    zx_options_t o = {.key = s_path("alice_secret"), .server_key = s_path("broker")};
    zx_executor_t *ex = zx_executor_new(b.cep, &o);
    cr_assert(ex);
    int n = 500;
    cr_assert_eq(s_run(ex, n, 60), n, "the legitimate client completes every task");

    s_raw_t r;
    s_raw_open(&r, b.cep, s_path("alice_secret"), s_path("broker"), NULL,
               (const uint8_t *)"\x07raw-status-1234");
    s_status_t st = s_raw_status(&r);
    cr_assert_eq(st.submitted, (uint64_t)n, "only the legitimate client's tasks were queued");
    cr_assert_eq(st.done, (uint64_t)n);
    cr_assert_eq(st.workers, 1, "neither the client key nor the keyless worker registered");
    s_raw_close(&r);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(s_attack_ran(&a[i]), 0, "attacker %d ran nothing", i);
    }
    zx_executor_destroy(&ex);
    zxt_stop(w1);
    zxt_stop(w2);
    zxt_stop(w3);
    zxt_stop(b.broker);
}

/* With no ZAP handler, or an empty allowlist, even the right key is
   refused: nothing fails open. */
static void s_refused_everyone(const char *const *bargs, bool zap_off)
{
    s_broker_t b = {0};
    if (zap_off) {
        /* the hook is only in the test build of the broker */
        setenv("ZEXEC_TEST_ZAP_OFF", "1", 1);
        cr_assert_gt(s_broker_start_bin(&b, bargs, "zexec-broker-testhooks"), 0);
        unsetenv("ZEXEC_TEST_ZAP_OFF");
    } else {
        cr_assert_gt(s_broker_start(&b, bargs), 0);
    }
    const char *wargs[] = {"--key", s_path("w1_secret"), "--server-key", s_path("broker"), NULL};
    pid_t w1 = s_worker_start(b.wep, wargs);
    s_attacker_t a;
    s_attack(&a, b.cep, s_path("alice_secret"), s_path("broker"), NULL);
    /* a second broker process with the same keys proves the keys work: the
       refusal is the ZAP state's, not a typo in the test */
    s_broker_t good = {0};
    const char *gargs[] = {"--key",
                           s_path("broker_secret"),
                           "--client-keys",
                           s_path("clients"),
                           "--worker-keys",
                           s_path("workers"),
                           NULL};
    cr_assert_gt(s_broker_start(&good, gargs), 0);
    pid_t w2 = s_worker_start(good.wep, wargs);
    zx_options_t o = {.key = s_path("alice_secret"), .server_key = s_path("broker")};
    zx_executor_t *ex = zx_executor_new(good.cep, &o);
    cr_assert_eq(s_run(ex, 100, 60), 100);
    cr_assert_eq(s_attack_ran(&a), 0);
    zx_executor_destroy(&ex);
    zxt_stop(w1);
    zxt_stop(w2);
    zxt_stop(b.broker);
    zxt_stop(good.broker);
}

Test(security, no_zap_handler_refuses_even_the_right_key, .init = s_setup, .fini = s_teardown)
{
    const char *bargs[] = {"--key",
                           s_path("broker_secret"),
                           "--client-keys",
                           s_path("clients"),
                           "--worker-keys",
                           s_path("workers"),
                           NULL};
    s_refused_everyone(bargs, true);
}

Test(security, an_empty_key_folder_refuses_even_the_right_key, .init = s_setup, .fini = s_teardown)
{
    const char *bargs[] = {"--key",
                           s_path("broker_secret"),
                           "--client-keys",
                           s_path("empty"),
                           "--worker-keys",
                           s_path("workers"),
                           NULL};
    s_refused_everyone(bargs, false);
}

Test(security, a_non_loopback_bind_without_security_refuses_to_start, .init = s_setup,
     .fini = s_teardown)
{
    s_broker_t b = {0};
    pid_t pid = s_broker_start(&b, NULL);
    int status = 0;
    cr_assert(zxt_wait_exit(pid, 10, &status), "the broker exits instead of running open");
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) != 0);
    const char *insecure[] = {"--insecure", NULL};
    pid = s_broker_start(&b, insecure);
    cr_assert_not(zxt_wait_exit(pid, 1, NULL), "--insecure runs (with a warning)");
    zxt_stop(pid);
}

/* ---- shared secret ------------------------------------------------------------------------ */

Test(security, shared_secret_cluster_runs_and_wrong_or_no_secret_runs_nothing, .init = s_setup,
     .fini = s_teardown)
{
    s_broker_t b = {0};
    const char *bargs[] = {"--secret-file", s_path("secret"), NULL};
    cr_assert_gt(s_broker_start(&b, bargs), 0);
    pid_t w1 = s_worker_start(b.wep, bargs);
    pid_t w2 = s_worker_start(
        b.wep, (const char *[]){"--secret-file", s_path("wrong_secret"), "--node", "wrong", NULL});
    s_attacker_t a[2];
    s_attack(&a[0], b.cep, NULL, NULL, NULL);
    s_attack(&a[1], b.cep, NULL, NULL, s_path("wrong_secret"));
    zx_options_t o = {.secret_file = s_path("secret")};
    zx_executor_t *ex = zx_executor_new(b.cep, &o);
    int n = 500;
    cr_assert_eq(s_run(ex, n, 60), n);
    zx__sign_t *sign = zx__sign_new_from_config(s_path("secret"), false, false, &(int){0});
    s_raw_t r;
    s_raw_open(&r, b.cep, NULL, NULL, sign, (const uint8_t *)"\x07raw-status-1234");
    s_status_t st = s_raw_status(&r);
    cr_assert_eq(st.submitted, (uint64_t)n);
    cr_assert_eq(st.workers, 1, "the worker with the wrong secret never registered");
    s_raw_close(&r);
    zx__sign_destroy(&sign);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(s_attack_ran(&a[i]), 0);
    }
    zx_executor_destroy(&ex);
    zxt_stop(w1);
    zxt_stop(w2);
    zxt_stop(b.broker);
}

/* A SUBMIT of one echo task, signed and kept for replaying. */
static zmsg_t *s_signed_submit(zx__sign_t *sign, uint64_t seq)
{
    zxp_out_t o;
    zxp_out_init(&o);
    zxp_out_begin(&o, ZXP_SUBMIT);
    zxp_submit_t s = {.seq = seq, .fn = {"echo", 4}};
    zxp_put_submit(&o, &s);
    uint8_t *h = (uint8_t *)o.buf.data;
    h[4] = 1;
    zmsg_t *m = zmsg_new();
    zmsg_addmem(m, (uint8_t[]){'Z', 'X', ZXP_VERSION, ZXP_SUBMIT}, 4);
    zmsg_addmem(m, o.buf.data, o.buf.size);
    zmsg_addmem(m, ARGS, sizeof ARGS);
    zxp_out_fini(&o);
    cr_assert_eq(zx__sign_msg(sign, m, NULL, ZXP_ROLE_BROKER_C), 0);
    return m;
}

/* Waits until the broker's done counter reaches want (or 5 s pass). */
static s_status_t s_wait_done(s_raw_t *r, uint64_t want)
{
    s_status_t st;
    int64_t end = zclock_mono() + 5000;
    do {
        st = s_raw_status(r);
    } while (st.done < want && zclock_mono() < end);
    return st;
}

Test(security, a_captured_submit_replayed_runs_nowhere, .init = s_setup, .fini = s_teardown)
{
    s_broker_t b = {0};
    const char *bargs[] = {"--secret-file", s_path("secret"), NULL};
    cr_assert_gt(s_broker_start(&b, bargs), 0);
    pid_t w1 = s_worker_start(b.wep, bargs);
    int rc;
    zx__sign_t *sign = zx__sign_new_from_config(s_path("secret"), false, false, &rc);
    const uint8_t *session = (const uint8_t *)"\x09victim-session!";
    s_raw_t r;
    s_raw_open(&r, b.cep, NULL, NULL, sign, session);
    zmsg_t *m = s_signed_submit(sign, 1);
    zmsg_t *capture = zmsg_dup(m);
    cr_assert_eq(zmsg_send(&m, r.dealer), 0);
    s_status_t st = s_wait_done(&r, 1);
    cr_assert_eq(st.done, 1, "the real SUBMIT ran once");
    uint64_t dropped = st.dropped;

    /* 1. the same bytes again, same connection and session */
    m = zmsg_dup(capture);
    cr_assert_eq(zmsg_send(&m, r.dealer), 0);
    st = s_raw_status(&r);
    cr_assert_eq(st.submitted, 1, "the replay was not queued");
    cr_assert_eq(st.done, 1, "nor run");
    cr_assert_gt(st.dropped, dropped, "it was dropped");
    s_raw_close(&r);

    /* 2. after a broker restart, from a raw socket with the victim's routing id */
    zxt_stop(b.broker);
    cr_assert_gt(s_broker_start(&b, bargs), 0);
    zsock_t *raw = zsock_new(ZMQ_DEALER);
    zmq_setsockopt(zsock_resolve(raw), ZMQ_ROUTING_ID, session, 16);
    cr_assert_eq(zsock_connect(raw, "%s", b.cep), 0);
    m = zmsg_dup(capture);
    cr_assert_eq(zmsg_send(&m, raw), 0);
    /* 3. and to a second broker */
    s_broker_t b2 = {0};
    cr_assert_gt(s_broker_start(&b2, bargs), 0);
    pid_t w2 = s_worker_start(b2.wep, bargs);
    zsock_t *raw2 = zsock_new(ZMQ_DEALER);
    zmq_setsockopt(zsock_resolve(raw2), ZMQ_ROUTING_ID, session, 16);
    cr_assert_eq(zsock_connect(raw2, "%s", b2.cep), 0);
    m = zmsg_dup(capture);
    cr_assert_eq(zmsg_send(&m, raw2), 0);

    /* the broker answers an authentic stale message with RESET only */
    zsock_set_rcvtimeo(raw, 5000);
    zmsg_t *reply = zmsg_recv(raw);
    cr_assert(reply, "the restarted broker answered");
    zframe_t *f0 = zmsg_first(reply);
    cr_assert_eq(zframe_data(f0)[3], ZXP_RESET);
    zmsg_destroy(&reply);

    zx__sign_t *sign2 = zx__sign_new_from_config(s_path("secret"), false, false, &rc);
    zx__sign_t *sign3 = zx__sign_new_from_config(s_path("secret"), false, false, &rc);
    s_raw_t r2, r3;
    s_raw_open(&r2, b.cep, NULL, NULL, sign2, (const uint8_t *)"\x07raw-status-1234");
    s_raw_open(&r3, b2.cep, NULL, NULL, sign3, (const uint8_t *)"\x07raw-status-1234");
    st = s_raw_status(&r2);
    cr_assert_eq(st.submitted, 0, "the restarted broker queued nothing");
    s_status_t st3 = s_raw_status(&r3);
    cr_assert_eq(st3.submitted, 0, "the second broker queued nothing");
    cr_assert_eq(st3.done, 0);
    s_raw_close(&r2);
    s_raw_close(&r3);
    zsock_destroy(&raw);
    zsock_destroy(&raw2);
    zmsg_destroy(&capture);
    zx__sign_destroy(&sign);
    zx__sign_destroy(&sign2);
    zx__sign_destroy(&sign3);
    zxt_stop(w1);
    zxt_stop(w2);
    zxt_stop(b.broker);
    zxt_stop(b2.broker);
}

/* A signed worker's first READY is signed for no broker session, so the
   broker drops it and answers RESET, which tells the session: the worker
   must answer that RESET at once (one extra round trip, protocol.md §10).
   It used to ignore it as one more RESET while its READY was unanswered and
   registered only after liveness x heartbeat (here 3 x 5 s: far from the
   bound below, which a loaded sanitizer build stays well inside). */
Test(security, a_signed_worker_registers_in_one_round_trip, .init = s_setup, .fini = s_teardown)
{
    s_broker_t b = {0};
    const char *bargs[] = {"--secret-file", s_path("secret"), NULL};
    cr_assert_gt(s_broker_start(&b, bargs), 0);
    zx_options_t o = {.secret_file = s_path("secret")};
    zx_executor_t *ex = zx_executor_new(b.cep, &o);
    int64_t t0 = zclock_mono();
    pid_t w1 = s_worker_start(
        b.wep, (const char *[]){"--secret-file", s_path("secret"), "--heartbeat", "5", NULL});
    /* the task waits at the broker (no worker yet: the grace period) */
    cr_assert_eq(s_run(ex, 1, 60), 1);
    int64_t took = zclock_mono() - t0;
    cr_assert_lt(took, 7000, "first result %lld ms after the worker started", (long long)took);
    zx_executor_destroy(&ex);
    zxt_stop(w1);
    zxt_stop(b.broker);
}

Test(security, a_signed_cluster_survives_a_broker_restart, .init = s_setup, .fini = s_teardown)
{
    s_broker_t b = {0};
    const char *bargs[] = {"--secret-file", s_path("secret"), NULL};
    cr_assert_gt(s_broker_start(&b, bargs), 0);
    pid_t w1 = s_worker_start(b.wep, bargs);
    zx_options_t o = {.secret_file = s_path("secret")};
    zx_executor_t *ex = zx_executor_new(b.cep, &o);
    cr_assert_eq(s_run(ex, 100, 60), 100);
    /* the new broker has a new session: every peer is RESET once, signs for
       the new session, and goes on */
    zxt_kill(b.broker);
    cr_assert_gt(s_broker_start(&b, bargs), 0);
    cr_assert_eq(s_run(ex, 100, 60), 100, "tasks after the restart complete");
    zx_executor_destroy(&ex);
    zxt_stop(w1);
    zxt_stop(b.broker);
}
