/*  test_remote.c - the remote executor and the local cluster (libclient/remote.c,
    libclient/cluster.c).

    Two kinds of tests: against a scripted fake broker in this process (a
    ROUTER speaking ZXP/1 through common/proto.c), for protocol behaviour the
    real broker makes hard to provoke on demand (RESET, cancel answers,
    re-sends); and integration tests with the real zexec-broker and
    zexec-worker binaries, started and stopped by PID. */
#include "remote.h"
#include "zx_proto.h"
#include "zx_testutil.h"
#include "zexec.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- helpers ---------------------------------------------------------------------- */

/* msgpack [i] */
static size_t s_args_int(uint8_t *buf, size_t size, int64_t i)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_int64(&pk, i);
    cr_assert_leq(sb.size, size);
    memcpy(buf, sb.data, sb.size);
    size_t n = sb.size;
    msgpack_sbuffer_destroy(&sb);
    return n;
}

/* The value of a finished future, unpacked: an array whose first element
   is returned as int64 (echo returns its arguments). */
static int64_t s_first_int(zx_future_t *f)
{
    const void *v;
    size_t len;
    int rc = zx_future_result(f, 30, &v, &len);
    cr_assert_eq(rc, ZX_OK, "result: %s", zx_strerror(rc));
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    cr_assert_eq(msgpack_unpack_next(&u, v, len, NULL), MSGPACK_UNPACK_SUCCESS);
    cr_assert_eq(u.data.type, MSGPACK_OBJECT_ARRAY);
    cr_assert_geq(u.data.via.array.size, 1);
    const msgpack_object *o = &u.data.via.array.ptr[0];
    int64_t x = o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (int64_t)o->via.u64 : o->via.i64;
    msgpack_unpacked_destroy(&u);
    return x;
}

static bool s_done_cond(void *arg)
{
    return zx_future_done(arg);
}

static bool s_running_cond(void *arg)
{
    return zx_future_running(arg);
}

static bool s_gone_cond(void *arg)
{
    pid_t pid = *(pid_t *)arg;
    return kill(pid, 0) != 0 && errno == ESRCH;
}

static zx_options_t s_opts(void)
{
    zx_options_t o = {0};
    o.heartbeat = 0.2;
    o.liveness = 3;
    return o;
}

/* ---- a scripted fake broker ------------------------------------------------------- */

enum { FAKE_ECHO, FAKE_HOLD };

typedef struct {
    int mode;
    int cancel_outcome; /* answer to every CANCEL */
    int port;
} fake_cfg_t;

typedef struct {
    fake_cfg_t cfg;
    zsock_t *router;
    zframe_t *client; /* routing id of the last client */
    zlistx_t *held;   /* uint64 seqs held in FAKE_HOLD */
    zhashx_t *seen;   /* every seq ever submitted, with counts */
    size_t submits, hellos, cancels, byes, resubmits, messages;
    uint8_t broker_id[ZXP_ID_LEN];
} fake_t;

static void s_fake_reply_echo(fake_t *fk, zxp_out_t *out, uint64_t seq, zframe_t **payload)
{
    zxp_result_t r = {
        .seq = seq, .status = ZXP_ST_OK, .node = {"fake", 4}, .pid = 1, .pool = 1, .attempts = 1};
    zxp_put_result(out, &r);
    zxp_out_payload(out, payload);
}

static void s_fake_on_msg(fake_t *fk, zmsg_t *msg)
{
    zframe_t *rid = zmsg_pop(msg);
    zxp_in_t in;
    zxp_in_init(&in);
    if (zxp_decode(&in, &msg, ZXP_ROLE_BROKER_C) != 0) {
        zframe_destroy(&rid);
        zxp_in_fini(&in);
        return;
    }
    fk->messages++;
    zframe_destroy(&fk->client);
    fk->client = zframe_dup(rid);
    zxp_out_t out;
    zxp_out_init(&out);
    switch (in.cmd) {
    case ZXP_HELLO:
        fk->hellos++;
        zxp_send_welcome(fk->router, rid, fk->broker_id, 200, 3, ZXP_MAX_MSG);
        break;
    case ZXP_SUBMIT:
        zxp_out_begin(&out, ZXP_RESULT);
        for (size_t i = 0; i < in.count; i++) {
            zxp_submit_t s;
            zxp_get_submit(&in, i, &s);
            zframe_t *p = zxp_payload_take(&in);
            fk->submits++;
            char key[32];
            snprintf(key, sizeof key, "%llu", (unsigned long long)s.seq);
            if (zhashx_lookup(fk->seen, key)) {
                fk->resubmits++;
            } else {
                zhashx_insert(fk->seen, key, (void *)1);
            }
            if (fk->cfg.mode == FAKE_ECHO) {
                s_fake_reply_echo(fk, &out, s.seq, &p);
            } else {
                zlistx_add_end(fk->held, (void *)(uintptr_t)s.seq);
                zframe_destroy(&p);
            }
        }
        zxp_out_send(&out, fk->router, rid);
        break;
    case ZXP_CANCEL:
        zxp_out_begin(&out, ZXP_CANCELLED);
        for (size_t i = 0; i < in.count; i++) {
            fk->cancels++;
            zxp_put_cancelled(&out, zxp_u(zxp_item(&in, i), 0), (uint32_t)fk->cfg.cancel_outcome);
        }
        zxp_out_send(&out, fk->router, rid);
        break;
    case ZXP_BYE: fk->byes++; break;
    default: break;
    }
    zxp_out_fini(&out);
    zxp_in_fini(&in);
    zframe_destroy(&rid);
}

/* Pipe commands: "RESET", "NEWID" (broker restart: new broker id and RESET),
   "ANSWER" (echo every held seq, empty args), "STATS" -> "submits hellos
   cancels byes resubmits". */
static void s_fake_actor(zsock_t *pipe, void *arg)
{
    fake_t fk = {.cfg = *(fake_cfg_t *)arg};
    fk.router = zsock_new(ZMQ_ROUTER);
    zxp_sock_setup(fk.router);
    zsock_set_router_handover(fk.router, 1);
    fk.held = zlistx_new();
    fk.seen = zhashx_new();
    memset(fk.broker_id, 7, sizeof fk.broker_id);
    int port = zsock_bind(fk.router, "tcp://127.0.0.1:*");
    ((fake_cfg_t *)arg)->port = port;
    zsock_signal(pipe, 0);
    zpoller_t *poller = zpoller_new(pipe, fk.router, NULL);
    while (true) {
        void *which = zpoller_wait(poller, -1);
        if (which == fk.router) {
            zmsg_t *msg = zmsg_recv(fk.router);
            if (msg) {
                s_fake_on_msg(&fk, msg);
            }
            continue;
        }
        if (which != pipe) {
            break;
        }
        char *cmd = zstr_recv(pipe);
        if (!cmd || streq(cmd, "$TERM")) {
            zstr_free(&cmd);
            break;
        }
        if (streq(cmd, "RESET") || streq(cmd, "NEWID")) {
            if (streq(cmd, "NEWID")) {
                memset(fk.broker_id, 9, sizeof fk.broker_id);
            }
            if (fk.client) {
                zxp_send_empty(fk.router, fk.client, ZXP_RESET);
            }
            zstr_send(pipe, "ok");
        } else if (streq(cmd, "ANSWER")) {
            zxp_out_t out;
            zxp_out_init(&out);
            zxp_out_begin(&out, ZXP_RESULT);
            static const uint8_t arr1[] = {0x91, 0x2a}; /* [42] */
            for (void *s = zlistx_first(fk.held); s; s = zlistx_next(fk.held)) {
                zframe_t *p = zframe_new(arr1, sizeof arr1);
                s_fake_reply_echo(&fk, &out, (uint64_t)(uintptr_t)s, &p);
            }
            zlistx_purge(fk.held);
            if (fk.client && out.count) {
                zxp_out_send(&out, fk.router, fk.client);
            }
            zxp_out_fini(&out);
            zstr_send(pipe, "ok");
        } else if (streq(cmd, "STATS")) {
            zstr_sendf(pipe, "%zu %zu %zu %zu %zu", fk.submits, fk.hellos, fk.cancels, fk.byes,
                       fk.resubmits);
        }
        zstr_free(&cmd);
    }
    zpoller_destroy(&poller);
    zframe_destroy(&fk.client);
    zlistx_destroy(&fk.held);
    zhashx_destroy(&fk.seen);
    zsock_destroy(&fk.router);
}

typedef struct {
    size_t submits, hellos, cancels, byes, resubmits;
} fake_stats_t;

static fake_stats_t s_fake_stats(zactor_t *fake)
{
    zstr_send(fake, "STATS");
    char *s = zstr_recv(fake);
    fake_stats_t st = {0};
    cr_assert(s);
    sscanf(s, "%zu %zu %zu %zu %zu", &st.submits, &st.hellos, &st.cancels, &st.byes, &st.resubmits);
    zstr_free(&s);
    return st;
}

static void s_fake_cmd(zactor_t *fake, const char *cmd)
{
    zstr_send(fake, cmd);
    char *ok = zstr_recv(fake);
    zstr_free(&ok);
}

static zactor_t *s_fake_start(fake_cfg_t *cfg, char *ep, size_t ep_size)
{
    zactor_t *fake = zactor_new(s_fake_actor, cfg);
    cr_assert(fake);
    cr_assert_gt(cfg->port, 0);
    snprintf(ep, ep_size, "tcp://127.0.0.1:%d", cfg->port);
    return fake;
}

typedef struct {
    zactor_t *fake;
    size_t at_least;
} stats_arg_t;

static bool s_submits_reach(void *arg)
{
    stats_arg_t *a = arg;
    return s_fake_stats(a->fake).submits >= a->at_least;
}

static bool s_resubmits_reach(void *arg)
{
    stats_arg_t *a = arg;
    return s_fake_stats(a->fake).resubmits >= a->at_least;
}

/* ---- against the fake broker ------------------------------------------------------- */

TestSuite(remote_fake, .timeout = 60);

Test(remote_fake, completes_every_future_with_its_own_echo)
{
    fake_cfg_t cfg = {.mode = FAKE_ECHO};
    char ep[64];
    zactor_t *fake = s_fake_start(&cfg, ep, sizeof ep);
    zx_options_t o = s_opts();
    zx_executor_t *ex = zx_executor_new(ep, &o);
    cr_assert(ex);
    cr_assert_str_eq(zx_executor_endpoint(ex), ep);
    enum { N = 5000 };
    zx_future_t **fs = calloc(N, sizeof *fs);
    for (int i = 0; i < N; i++) {
        uint8_t buf[16];
        size_t n = s_args_int(buf, sizeof buf, i);
        fs[i] = zx_submit(ex, "echo", buf, n);
        cr_assert(fs[i]);
    }
    for (int i = 0; i < N; i++) {
        cr_assert_eq(s_first_int(fs[i]), i);
        const zx_error_t *e = zx_future_exception(fs[i], 0);
        cr_assert_null(e);
        zx_future_unref(&fs[i]);
    }
    free(fs);
    fake_stats_t st = s_fake_stats(fake);
    cr_assert_eq(st.submits, N);
    cr_assert_eq(st.hellos, 1);
    zx_executor_destroy(&ex);
    zactor_destroy(&fake);
}

Test(remote_fake, says_bye_on_destroy)
{
    fake_cfg_t cfg = {.mode = FAKE_ECHO};
    char ep[64];
    zactor_t *fake = s_fake_start(&cfg, ep, sizeof ep);
    zx_options_t o = s_opts();
    zx_executor_t *ex = zx_executor_new(ep, &o);
    zx_future_t *f = zx_submitf(ex, "echo", "i", 5);
    cr_assert_eq(s_first_int(f), 5);
    zx_future_unref(&f);
    zx_executor_destroy(&ex);
    cr_assert_null(ex);
    /* BYE is the last thing the actor sends; give the wire a moment */
    stats_arg_t a = {fake, 0};
    (void)a;
    bool got = false;
    for (int i = 0; i < 200 && !got; i++) {
        got = s_fake_stats(fake).byes == 1;
        if (!got) {
            zclock_sleep(10);
        }
    }
    cr_assert(got, "the broker never saw BYE");
    zactor_destroy(&fake);
}

Test(remote_fake, resends_unresolved_tasks_after_reset)
{
    fake_cfg_t cfg = {.mode = FAKE_HOLD};
    char ep[64];
    zactor_t *fake = s_fake_start(&cfg, ep, sizeof ep);
    zx_options_t o = s_opts();
    zx_executor_t *ex = zx_executor_new(ep, &o);
    zx_future_t *fs[10];
    for (int i = 0; i < 10; i++) {
        fs[i] = zx_submitf(ex, "echo", "i", i);
        cr_assert(fs[i]);
    }
    stats_arg_t a = {fake, 10};
    cr_assert(zxt_wait_for(s_submits_reach, &a, 10));
    s_fake_cmd(fake, "RESET");
    cr_assert(zxt_wait_for(s_resubmits_reach, &a, 10), "tasks were not re-sent after RESET");
    cr_assert_geq(s_fake_stats(fake).hellos, 2);
    for (int i = 0; i < 10; i++) {
        cr_assert_not(zx_future_done(fs[i]));
    }
    s_fake_cmd(fake, "ANSWER");
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(s_first_int(fs[i]), 42);
        zx_future_unref(&fs[i]);
    }
    zx_executor_destroy(&ex);
    zactor_destroy(&fake);
}

Test(remote_fake, cancel_of_a_sent_task_follows_the_broker_answer)
{
    fake_cfg_t cfg = {.mode = FAKE_HOLD, .cancel_outcome = ZXP_CANCEL_DONE};
    char ep[64];
    zactor_t *fake = s_fake_start(&cfg, ep, sizeof ep);
    zx_options_t o = s_opts();
    zx_executor_t *ex = zx_executor_new(ep, &o);
    zx_future_t *f = zx_submitf(ex, "echo", "i", 1);
    stats_arg_t a = {fake, 1};
    cr_assert(zxt_wait_for(s_submits_reach, &a, 10));
    cr_assert(zx_future_cancel(f));
    cr_assert(zx_future_cancelled(f));
    cr_assert_eq(zx_future_result(f, 0, NULL, NULL), ZX_ECANCELLED);
    cr_assert_eq(s_fake_stats(fake).cancels, 1);
    zx_future_unref(&f);
    zx_executor_destroy(&ex);
    zactor_destroy(&fake);
}

Test(remote_fake, cancel_refused_by_the_broker_is_false_and_the_result_follows)
{
    fake_cfg_t cfg = {.mode = FAKE_HOLD, .cancel_outcome = ZXP_CANCEL_REFUSED};
    char ep[64];
    zactor_t *fake = s_fake_start(&cfg, ep, sizeof ep);
    zx_options_t o = s_opts();
    zx_executor_t *ex = zx_executor_new(ep, &o);
    zx_future_t *f = zx_submitf(ex, "echo", "i", 1);
    stats_arg_t a = {fake, 1};
    cr_assert(zxt_wait_for(s_submits_reach, &a, 10));
    cr_assert_not(zx_future_cancel(f));
    cr_assert_not(zx_future_done(f));
    s_fake_cmd(fake, "ANSWER");
    cr_assert_eq(s_first_int(f), 42);
    zx_future_unref(&f);
    zx_executor_destroy(&ex);
    zactor_destroy(&fake);
}

Test(remote_fake, shutdown_cancel_futures_cancels_sent_tasks_and_refuses_submits)
{
    fake_cfg_t cfg = {.mode = FAKE_HOLD, .cancel_outcome = ZXP_CANCEL_DONE};
    char ep[64];
    zactor_t *fake = s_fake_start(&cfg, ep, sizeof ep);
    zx_options_t o = s_opts();
    zx_executor_t *ex = zx_executor_new(ep, &o);
    zx_future_t *fs[20];
    for (int i = 0; i < 20; i++) {
        fs[i] = zx_submitf(ex, "echo", "i", i);
    }
    stats_arg_t a = {fake, 20};
    cr_assert(zxt_wait_for(s_submits_reach, &a, 10));
    cr_assert_eq(zx_executor_shutdown(ex, true, true), ZX_OK);
    for (int i = 0; i < 20; i++) {
        cr_assert(zx_future_cancelled(fs[i]));
        zx_future_unref(&fs[i]);
    }
    cr_assert_null(zx_submitf(ex, "echo", "i", 1));
    cr_assert_eq(zx_last_error(), ZX_ESHUTDOWN);
    zx_executor_destroy(&ex);
    zactor_destroy(&fake);
}

/* ---- no broker at all ---------------------------------------------------------------- */

TestSuite(remote_nobroker, .timeout = 30);

Test(remote_nobroker, futures_fail_with_econn_after_broker_timeout)
{
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", zxt_free_port());
    zx_options_t o = s_opts();
    o.broker_timeout = 1.0;
    zx_executor_t *ex = zx_executor_new(ep, &o);
    cr_assert(ex, "connecting never fails for an absent broker");
    zx_future_t *f = zx_submitf(ex, "echo", "i", 1);
    cr_assert(f);
    cr_assert_not(zx_future_done(f));
    const zx_error_t *e = zx_future_exception(f, 10);
    cr_assert(e);
    cr_assert_eq(e->code, ZX_ECONN);
    cr_assert_str_eq(e->type, "BrokerUnreachableError");
    cr_assert(strstr(e->message, ep), "message names the endpoint: %s", e->message);
    zx_future_unref(&f);
    zx_executor_destroy(&ex);
}

Test(remote_nobroker, cancel_of_an_unsent_task_is_immediate)
{
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", zxt_free_port());
    zx_options_t o = s_opts();
    zx_executor_t *ex = zx_executor_new(ep, &o);
    zx_future_t *f = zx_submitf(ex, "echo", "i", 1);
    cr_assert(zx_future_cancel(f));
    cr_assert(zx_future_cancelled(f));
    zx_future_unref(&f);
    zx_executor_destroy(&ex);
}

Test(remote_nobroker, bad_endpoint_is_einval)
{
    zx_executor_t *ex = zx_executor_new("nonsense://x", NULL);
    cr_assert_null(ex);
    cr_assert_eq(zx_last_error(), ZX_EINVAL);
}

Test(remote_nobroker, local_cluster_without_binaries_is_einval)
{
    char *saved = getenv("ZEXEC_BIN_DIR") ? strdup(getenv("ZEXEC_BIN_DIR")) : NULL;
    char *path = getenv("PATH") ? strdup(getenv("PATH")) : NULL;
    setenv("ZEXEC_BIN_DIR", "/nonexistent", 1);
    setenv("PATH", "/nonexistent", 1);
    zx_options_t o = s_opts();
    o.bin_dir = "/nonexistent-either";
    zx_executor_t *ex = zx_executor_new(NULL, &o);
    /* the build tree (ZX_BUILD_BIN_DIR) still has the binaries when built */
    if (ex) {
        zx_executor_destroy(&ex);
    } else {
        cr_assert_eq(zx_last_error(), ZX_EINVAL);
    }
    if (saved) {
        setenv("ZEXEC_BIN_DIR", saved, 1);
    }
    if (path) {
        setenv("PATH", path, 1);
    }
    free(saved);
    free(path);
}
