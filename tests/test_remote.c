/*  test_remote.c - the remote executor and the local cluster (libclient/remote.c,
    remote_io.c, cluster.c).

    Two kinds of tests: against a scripted fake broker in this process (a
    ROUTER speaking ZXP through common/proto.c), for protocol behaviour the
    real broker makes hard to provoke on demand (RESET, cancel answers,
    re-sends); and integration tests with the real zexec-broker and
    zexec-worker binaries, started and stopped by PID. */
#include "remote.h"
#include "zx_waiter.h"
#include "zx_proto.h"
#include "zx_testutil.h"
#include "zexec.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
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
        zxp_send_welcome(fk->router, rid, fk->broker_id, 60000, 3, ZXP_MAX_MSG);
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
   "ANSWER" (echo every held seq, empty args), "ANSWER1" (the same, one
   message per seq), "STATS" -> "submits hellos cancels byes resubmits". */
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
        } else if (streq(cmd, "ANSWER1")) {
            /* one RESULT message per held seq, back to back */
            static const uint8_t arr1[] = {0x91, 0x2a}; /* [42] */
            for (void *s = zlistx_first(fk.held); s && fk.client; s = zlistx_next(fk.held)) {
                zxp_out_t out;
                zxp_out_init(&out);
                zxp_out_begin(&out, ZXP_RESULT);
                zframe_t *p = zframe_new(arr1, sizeof arr1);
                s_fake_reply_echo(&fk, &out, (uint64_t)(uintptr_t)s, &p);
                zxp_out_send(&out, fk.router, fk.client);
                zxp_out_fini(&out);
            }
            zlistx_purge(fk.held);
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

static bool s_bye_seen(void *fake)
{
    return s_fake_stats(fake).byes == 1;
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
    /* BYE is the last thing the actor sends: wait for it to cross the wire */
    bool got = zxt_wait_for(s_bye_seen, fake, 5);
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

/* The send window: with 100 KiB of window and 40 KiB arguments two tasks
   are out at a time; the rest wait in the client, where a cancel is decided
   at once and the broker never sees the task. */
/* A positive barrier: a cancel the fake refuses is one round trip on the
   same connection, so once it returns the fake has counted every message
   the client sent before it (a submit that must not have left would have). */
static void s_barrier(zx_future_t *held)
{
    cr_assert_not(zx_future_cancel(held), "the fake refuses cancels");
}

Test(remote_fake, the_send_window_holds_large_arguments_in_the_client)
{
    fake_cfg_t cfg = {.mode = FAKE_HOLD, .cancel_outcome = ZXP_CANCEL_REFUSED};
    char ep[64];
    zactor_t *fake = s_fake_start(&cfg, ep, sizeof ep);
    zx_options_t o = s_opts();
    o.max_inflight_bytes = 100 * 1024;
    zx_executor_t *ex = zx_executor_new(ep, &o);
    cr_assert(ex);
    enum { N = 10, ARG = 40 * 1024 };
    char *arg = calloc(1, ARG);
    zx_future_t *fs[N];
    for (int i = 0; i < N; i++) {
        fs[i] = zx_submitf(ex, "echo", "y", arg, (size_t)ARG);
        cr_assert(fs[i]);
    }
    free(arg);
    stats_arg_t a = {fake, 2};
    cr_assert(zxt_wait_for(s_submits_reach, &a, 10));
    s_barrier(fs[1]);
    cr_assert_eq(s_fake_stats(fake).submits, 2, "two 40 KiB tasks fit a 100 KiB window");
    /* the last one waits in the client: cancelled here, never sent */
    cr_assert(zx_future_cancel(fs[N - 1]));
    cr_assert(zx_future_cancelled(fs[N - 1]));
    cr_assert_eq(s_fake_stats(fake).cancels, 1, "only the barrier's cancel reached the fake");
    size_t barriers = 1;
    for (size_t sent = 2; sent < N - 1;) {
        s_fake_cmd(fake, "ANSWER"); /* results make room: two more go */
        size_t want = sent + 2 < N - 1 ? sent + 2 : N - 1;
        a.at_least = want;
        cr_assert(zxt_wait_for(s_submits_reach, &a, 10), "window did not reopen at %zu", sent);
        s_barrier(fs[want - 1]);
        barriers++;
        cr_assert_eq(s_fake_stats(fake).submits, want);
        sent = want;
    }
    cr_assert_eq(s_fake_stats(fake).cancels, barriers);
    s_fake_cmd(fake, "ANSWER");
    for (int i = 0; i < N - 1; i++) {
        cr_assert_eq(zx_future_result(fs[i], 10, NULL, NULL), ZX_OK, "task %d", i);
    }
    cr_assert_eq(s_fake_stats(fake).submits, N - 1, "the cancelled task never left");
    for (int i = 0; i < N; i++) {
        zx_future_unref(&fs[i]);
    }
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

typedef struct {
    zx_future_t *other;
    bool result;
    int calls;
} cb_cancel_t;

static void s_cancel_other(zx_future_t *f, void *arg)
{
    (void)f;
    cb_cancel_t *c = arg;
    c->result = zx_future_cancel(c->other);
    __atomic_add_fetch(&c->calls, 1, __ATOMIC_SEQ_CST);
}

static bool s_cb_called(void *arg)
{
    return __atomic_load_n(&((cb_cancel_t *)arg)->calls, __ATOMIC_SEQ_CST) == 1;
}

Test(remote_fake, a_done_callback_on_the_io_thread_can_cancel_another_future)
{
    fake_cfg_t cfg = {.mode = FAKE_HOLD, .cancel_outcome = ZXP_CANCEL_DONE};
    char ep[64];
    zactor_t *fake = s_fake_start(&cfg, ep, sizeof ep);
    zx_options_t o = s_opts();
    zx_executor_t *ex = zx_executor_new(ep, &o);
    zx_future_t *a = zx_submitf(ex, "echo", "i", 1);
    zx_future_t *b = zx_submitf(ex, "echo", "i", 2);
    stats_arg_t st = {fake, 2};
    cr_assert(zxt_wait_for(s_submits_reach, &st, 10));
    cb_cancel_t c = {.other = b};
    cr_assert_eq(zx_future_add_done_callback(a, s_cancel_other, &c), ZX_OK);
    /* answers a (and would answer b, but b is cancelled first, in a's callback,
       without a round trip: the I/O thread cannot wait for itself) */
    s_fake_cmd(fake, "ANSWER");
    cr_assert(zxt_wait_for(s_cb_called, &c, 10));
    cr_assert(zx_future_done(a));
    cr_assert(c.result);
    cr_assert(zx_future_cancelled(b));
    zx_future_unref(&a);
    zx_future_unref(&b);
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

/* ---- leader/follower (remote_io.c): a waiting thread reads the socket ---------------- */

/* A thread that waits for one future in slices, so that a wait that began
   while the I/O thread was awake (and so sleeps) tries again to lead;
   records which thread it is. */
typedef struct {
    zx_future_t *f;
    double slice; /* each wait's timeout; 0: 2 s */
    pthread_t self;
    int rc;
} waiter_t;

static void *s_waiter_main(void *arg)
{
    waiter_t *w = arg;
    w->self = pthread_self();
    do {
        w->rc = zx_future_result(w->f, w->slice > 0 ? w->slice : 2, NULL, NULL);
    } while (w->rc == ZX_ETIMEOUT);
    return NULL;
}

typedef struct {
    pthread_mutex_t lock;
    pthread_t thread;
    int calls;
} cb_where_t;

static void s_record_thread(zx_future_t *f, void *arg)
{
    (void)f;
    cb_where_t *w = arg;
    pthread_mutex_lock(&w->lock);
    w->thread = pthread_self();
    w->calls++;
    pthread_mutex_unlock(&w->lock);
}

typedef struct {
    zx_executor_t *ex;
    zx_future_t *const *fs;
    size_t n;
} leading_arg_t;

/* a thread leads and every future has its waiter */
static bool s_leading_and_waited(void *arg)
{
    leading_arg_t *a = arg;
    for (size_t i = 0; i < a->n; i++) {
        if (zx__future_waiting(a->fs[i]) == 0) {
            return false;
        }
    }
    return zx__remote_leading(a->ex);
}

Test(remote_fake, a_leader_completes_the_futures_other_threads_wait_for)
{
    fake_cfg_t cfg = {.mode = FAKE_HOLD};
    char ep[64];
    zactor_t *fake = s_fake_start(&cfg, ep, sizeof ep);
    zx_options_t o = s_opts();
    zx_executor_t *ex = zx_executor_new(ep, &o);
    enum { N = 3 };
    zx_future_t *fs[N];
    waiter_t w[N];
    cb_where_t where[N];
    for (int i = 0; i < N; i++) {
        fs[i] = zx_submitf(ex, "echo", "i", i);
        cr_assert(fs[i]);
        where[i] = (cb_where_t){.lock = PTHREAD_MUTEX_INITIALIZER};
        cr_assert_eq(zx_future_add_done_callback(fs[i], s_record_thread, &where[i]), ZX_OK);
    }
    stats_arg_t st = {fake, N};
    cr_assert(zxt_wait_for(s_submits_reach, &st, 10));
    pthread_t t[N];
    for (int i = 0; i < N; i++) {
        w[i] = (waiter_t){.f = fs[i]};
        cr_assert_eq(pthread_create(&t[i], NULL, s_waiter_main, &w[i]), 0);
    }
    leading_arg_t la = {ex, fs, N};
    cr_assert(zxt_wait_for(s_leading_and_waited, &la, 20), "no thread leads");
    /* one RESULT message answers all three: whoever leads completes them */
    s_fake_cmd(fake, "ANSWER");
    for (int i = 0; i < N; i++) {
        cr_assert_eq(pthread_join(t[i], NULL), 0);
        cr_assert_eq(w[i].rc, ZX_OK);
    }
    /* every callback ran on one of the waiting threads (the leader), the
       same for all, and not on the I/O thread */
    int leader = -1;
    for (int i = 0; i < N && leader < 0; i++) {
        if (pthread_equal(where[0].thread, w[i].self)) {
            leader = i;
        }
    }
    cr_assert_geq(leader, 0, "the callbacks ran on the I/O thread, not on a leader");
    for (int i = 0; i < N; i++) {
        cr_assert_eq(where[i].calls, 1);
        cr_assert(pthread_equal(where[i].thread, w[leader].self));
        zx_future_unref(&fs[i]);
    }
    zx_executor_destroy(&ex);
    zactor_destroy(&fake);
}

typedef struct {
    cb_cancel_t c;
    pthread_t thread;
} cb_cancel_where_t;

static void s_cancel_other_where(zx_future_t *f, void *arg)
{
    cb_cancel_where_t *cw = arg;
    cw->thread = pthread_self();
    s_cancel_other(f, &cw->c);
}

Test(remote_fake, a_done_callback_run_by_a_leader_can_cancel_another_future)
{
    fake_cfg_t cfg = {.mode = FAKE_HOLD, .cancel_outcome = ZXP_CANCEL_DONE};
    char ep[64];
    zactor_t *fake = s_fake_start(&cfg, ep, sizeof ep);
    zx_options_t o = s_opts();
    zx_executor_t *ex = zx_executor_new(ep, &o);
    zx_future_t *a = zx_submitf(ex, "echo", "i", 1);
    zx_future_t *b = zx_submitf(ex, "echo", "i", 2);
    stats_arg_t st = {fake, 2};
    cr_assert(zxt_wait_for(s_submits_reach, &st, 10));
    cb_cancel_where_t cw = {.c = {.other = b}};
    cr_assert_eq(zx_future_add_done_callback(a, s_cancel_other_where, &cw), ZX_OK);
    waiter_t w = {.f = a};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, s_waiter_main, &w), 0);
    leading_arg_t la = {ex, &a, 1};
    cr_assert(zxt_wait_for(s_leading_and_waited, &la, 20), "no thread leads");
    /* the leader completes a; a's callback, on the leader, cancels b at once
       (the leader stands in for the I/O thread: no round trip to wait for) */
    s_fake_cmd(fake, "ANSWER");
    cr_assert_eq(pthread_join(t, NULL), 0);
    cr_assert_eq(w.rc, ZX_OK);
    cr_assert(s_cb_called(&cw.c));
    cr_assert(pthread_equal(cw.thread, w.self), "the callback did not run on the leader");
    cr_assert(cw.c.result);
    cr_assert(zx_future_cancelled(b));
    cr_assert_eq(zx_future_result(b, 0, NULL, NULL), ZX_ECANCELLED);
    zx_future_unref(&a);
    zx_future_unref(&b);
    zx_executor_destroy(&ex);
    zactor_destroy(&fake);
}

static bool s_future_done(void *f)
{
    return zx_future_done(f);
}

/* A leader lets go once its own future is done, also with messages still
   waiting (it reads a burst at most, then looks at its future): whatever it
   leaves unread must reach its futures at once (the I/O thread is woken),
   not at the next heartbeat. */
Test(remote_fake, what_a_leader_leaves_unread_is_read_at_once)
{
    fake_cfg_t cfg = {.mode = FAKE_HOLD};
    char ep[64];
    zactor_t *fake = s_fake_start(&cfg, ep, sizeof ep);
    zx_options_t o = s_opts();
    o.heartbeat = 10; /* a missed wake would wait for the tick */
    zx_executor_t *ex = zx_executor_new(ep, &o);
    enum { N = 1000 }; /* answered one message each: more than a burst */
    zx_future_t **fs = calloc(N, sizeof *fs);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) {
            fs[i] = zx_submitf(ex, "echo", "i", i);
            cr_assert(fs[i]);
        }
        stats_arg_t st = {fake, (size_t)(round + 1) * N};
        cr_assert(zxt_wait_for(s_submits_reach, &st, 10));
        /* a thread leads for the first future; the others are nobody's */
        waiter_t w = {.f = fs[0]};
        pthread_t t;
        cr_assert_eq(pthread_create(&t, NULL, s_waiter_main, &w), 0);
        leading_arg_t la = {ex, fs, 1};
        cr_assert(zxt_wait_for(s_leading_and_waited, &la, 20), "no thread leads");
        s_fake_cmd(fake, "ANSWER1"); /* the leader's answer first, then the others' */
        cr_assert_eq(pthread_join(t, NULL), 0);
        cr_assert_eq(w.rc, ZX_OK);
        for (int i = 1; i < N; i++) {
            cr_assert(zxt_wait_for(s_future_done, fs[i], 2), "round %d: future %d waits", round, i);
        }
        for (int i = 0; i < N; i++) {
            cr_assert_eq(zx_future_result(fs[i], 0, NULL, NULL), ZX_OK);
            zx_future_unref(&fs[i]);
        }
    }
    free(fs);
    zx_executor_destroy(&ex);
    zactor_destroy(&fake);
}

Test(remote_fake, a_timeout_while_leading_hands_the_socket_back)
{
    fake_cfg_t cfg = {.mode = FAKE_HOLD};
    char ep[64];
    zactor_t *fake = s_fake_start(&cfg, ep, sizeof ep);
    zx_options_t o = s_opts();
    zx_executor_t *ex = zx_executor_new(ep, &o);
    zx_future_t *fs[2] = {zx_submitf(ex, "echo", "i", 1), zx_submitf(ex, "echo", "i", 2)};
    stats_arg_t st = {fake, 2};
    cr_assert(zxt_wait_for(s_submits_reach, &st, 10));
    /* every way of waiting runs out while leading (or sleeping) */
    cr_assert_eq(zx_future_result(fs[0], 0.05, NULL, NULL), ZX_ETIMEOUT);
    cr_assert_eq(zx_future_exception(fs[0], 0.05)->code, ZX_ETIMEOUT);
    size_t nd = 9, nn = 9;
    cr_assert_eq(zx_wait(fs, 2, 0.05, ZX_FIRST_COMPLETED, NULL, &nd, NULL, &nn), ZX_ETIMEOUT);
    cr_assert_eq(nd, 0);
    cr_assert_eq(nn, 2);
    zx_as_completed_t *it = zx_as_completed_new(fs, 2, 0.05);
    cr_assert_null(zx_as_completed_next(it));
    cr_assert_eq(zx_as_completed_status(it), ZX_ETIMEOUT);
    zx_as_completed_destroy(&it);
    cr_assert(!zx__remote_leading(ex));
    /* with nobody waiting, the I/O thread reads the answers again */
    s_fake_cmd(fake, "ANSWER");
    cr_assert(zxt_wait_for(s_future_done, fs[0], 10));
    cr_assert(zxt_wait_for(s_future_done, fs[1], 10));
    cr_assert_eq(zx_future_result(fs[1], 0, NULL, NULL), ZX_OK);
    zx_future_unref(&fs[0]);
    zx_future_unref(&fs[1]);
    zx_executor_destroy(&ex);
    zactor_destroy(&fake);
}

typedef struct {
    zx_future_t *const *fs;
    size_t n;
    size_t got;
    int status;
} ac_arg_t;

static void *s_as_completed_main(void *arg)
{
    ac_arg_t *a = arg;
    zx_as_completed_t *it = zx_as_completed_new(a->fs, a->n, 30);
    while (zx_as_completed_next(it)) {
        a->got++;
    }
    a->status = zx_as_completed_status(it);
    zx_as_completed_destroy(&it);
    return NULL;
}

static bool s_waited_by_as_completed(void *arg)
{
    leading_arg_t *a = arg;
    for (size_t i = 0; i < a->n; i++) {
        if (zx__future_waiting(a->fs[i]) == 0) {
            return false;
        }
    }
    return true;
}

Test(remote_fake, as_completed_over_two_executors_sleeps_and_gets_both)
{
    fake_cfg_t cfg1 = {.mode = FAKE_HOLD}, cfg2 = {.mode = FAKE_HOLD};
    char ep1[64], ep2[64];
    zactor_t *fake1 = s_fake_start(&cfg1, ep1, sizeof ep1);
    zactor_t *fake2 = s_fake_start(&cfg2, ep2, sizeof ep2);
    zx_options_t o = s_opts();
    zx_executor_t *ex1 = zx_executor_new(ep1, &o);
    zx_executor_t *ex2 = zx_executor_new(ep2, &o);
    zx_future_t *fs[2] = {zx_submitf(ex1, "echo", "i", 1), zx_submitf(ex2, "echo", "i", 2)};
    stats_arg_t st1 = {fake1, 1}, st2 = {fake2, 1};
    cr_assert(zxt_wait_for(s_submits_reach, &st1, 10));
    cr_assert(zxt_wait_for(s_submits_reach, &st2, 10));
    ac_arg_t a = {.fs = fs, .n = 2};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, s_as_completed_main, &a), 0);
    leading_arg_t la = {NULL, fs, 2};
    cr_assert(zxt_wait_for(s_waited_by_as_completed, &la, 10));
    /* futures of two executors: each I/O thread completes its own */
    cr_assert(!zx__remote_leading(ex1));
    cr_assert(!zx__remote_leading(ex2));
    s_fake_cmd(fake2, "ANSWER");
    s_fake_cmd(fake1, "ANSWER");
    cr_assert_eq(pthread_join(t, NULL), 0);
    cr_assert_eq(a.got, 2);
    cr_assert_eq(a.status, ZX_OK);
    zx_future_unref(&fs[0]);
    zx_future_unref(&fs[1]);
    zx_executor_destroy(&ex1);
    zx_executor_destroy(&ex2);
    zactor_destroy(&fake1);
    zactor_destroy(&fake2);
}

Test(remote_fake, as_completed_over_one_executor_leads)
{
    fake_cfg_t cfg = {.mode = FAKE_HOLD};
    char ep[64];
    zactor_t *fake = s_fake_start(&cfg, ep, sizeof ep);
    zx_options_t o = s_opts();
    zx_executor_t *ex = zx_executor_new(ep, &o);
    enum { N = 4 };
    zx_future_t *fs[N];
    for (int i = 0; i < N; i++) {
        fs[i] = zx_submitf(ex, "echo", "i", i);
    }
    stats_arg_t st = {fake, N};
    cr_assert(zxt_wait_for(s_submits_reach, &st, 10));
    ac_arg_t a = {.fs = fs, .n = N};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, s_as_completed_main, &a), 0);
    leading_arg_t la = {ex, fs, N};
    cr_assert(zxt_wait_for(s_leading_and_waited, &la, 20), "as_completed does not lead");
    s_fake_cmd(fake, "ANSWER");
    cr_assert_eq(pthread_join(t, NULL), 0);
    cr_assert_eq(a.got, N);
    cr_assert_eq(a.status, ZX_OK);
    for (int i = 0; i < N; i++) {
        zx_future_unref(&fs[i]);
    }
    zx_executor_destroy(&ex);
    zactor_destroy(&fake);
}

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

Test(remote_nobroker, a_local_cluster_uses_bin_dir_first_and_fails_if_its_broker_exits)
{
    /* bin_dir holds stand-ins that exit at once: the cluster must pick them
       over the build tree, see the broker die, retry, and give up cleanly */
    char dir[] = "/tmp/zexec-test-bin-XXXXXX";
    cr_assert(mkdtemp(dir));
    char path[128];
    const char *names[] = {"zexec-broker", "zexec-worker"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        FILE *f = fopen(path, "w");
        cr_assert(f);
        fputs("#!/bin/sh\nexit 3\n", f);
        fclose(f);
        chmod(path, 0755);
    }
    zx_options_t o = s_opts();
    o.bin_dir = dir;
    zx_executor_t *ex = zx_executor_new(NULL, &o);
    cr_assert_null(ex);
    cr_assert_eq(zx_last_error(), ZX_ECONN); /* a hang instead: the test's own limit */
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

/* ---- with the real zexec-broker and zexec-worker ---------------------------------------- */

static zxt_cluster_t C;

static void s_stop_all(void)
{
    zxt_cluster_stop(&C);
}

TestSuite(remote, .fini = s_stop_all, .timeout = 120);

static void s_start(const char *const broker_extra[])
{
    cr_assert_eq(zxt_broker_start(&C, broker_extra), 0);
}

static pid_t s_worker(const char *node, const char *const extra[])
{
    pid_t pid = zxt_worker_start(&C, node, extra);
    cr_assert_gt(pid, 0);
    return pid;
}

static zx_executor_t *s_connect(double broker_timeout)
{
    zx_options_t o = s_opts();
    o.broker_timeout = broker_timeout;
    zx_executor_t *ex = zx_executor_new(C.client_ep, &o);
    cr_assert(ex);
    return ex;
}

static zx_future_t *s_sleep(zx_executor_t *ex, double secs, int retries)
{
    zx_task_opts_t to = {.retries = retries};
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_double(&pk, secs);
    zx_future_t *f = zx_submit_opts(ex, "sleep", sb.data, sb.size, &to);
    msgpack_sbuffer_destroy(&sb);
    cr_assert(f);
    return f;
}

static void s_assert_ok(zx_future_t *f, double timeout)
{
    const zx_error_t *e = zx_future_exception(f, timeout);
    cr_assert_null(e, "task failed: %s %s: %s", e ? zx_strerror(e->code) : "", e ? e->type : "",
                   e ? e->message : "");
    cr_assert_eq(zx_future_result(f, 0, NULL, NULL), ZX_OK);
}

/* Waits until tasks have run on both nodes, so both are registered with
   the broker: a worker process that starts is not yet a worker the broker
   dispatches to, and a fast burst can be over before the second joins.
   Rounds of more tasks than one worker's widest window (--prefetch-max
   1024 plus its slots), so that a registered second worker gets some. */
static void s_wait_two_nodes(zx_executor_t *ex, const char *a, const char *b)
{
    enum { ROUND = 2048 };
    zx_future_t **fs = calloc(ROUND, sizeof *fs);
    bool seen_a = false, seen_b = false;
    int64_t end = zclock_mono() + 30000;
    while (!(seen_a && seen_b) && zclock_mono() < end) {
        for (int i = 0; i < ROUND; i++) {
            fs[i] = zx_submitf(ex, "pid", "");
            cr_assert(fs[i]);
        }
        for (int i = 0; i < ROUND; i++) {
            cr_assert_eq(zx_future_result(fs[i], 30, NULL, NULL), ZX_OK);
            seen_a |= streq(zx_future_node(fs[i]), a);
            seen_b |= streq(zx_future_node(fs[i]), b);
            zx_future_unref(&fs[i]);
        }
    }
    free(fs);
    cr_assert(seen_a && seen_b, "tasks ran on %s: %d, on %s: %d", a, seen_a, b, seen_b);
}

Test(remote, ten_thousand_echo_tasks_over_two_workers_return_their_own_arguments)
{
    s_start(NULL);
    s_worker("w1", NULL);
    s_worker("w2", NULL);
    zx_executor_t *ex = s_connect(60);
    s_wait_two_nodes(ex, "w1", "w2");
    enum { N = 10000 };
    zx_future_t **fs = calloc(N, sizeof *fs);
    for (int i = 0; i < N; i++) {
        uint8_t buf[16];
        size_t n = s_args_int(buf, sizeof buf, i * 7 + 1);
        fs[i] = zx_submit(ex, "echo", buf, n);
        cr_assert(fs[i]);
    }
    int on_w1 = 0, on_w2 = 0;
    for (int i = 0; i < N; i++) {
        cr_assert_eq(s_first_int(fs[i]), i * 7 + 1);
        const char *node = zx_future_node(fs[i]);
        cr_assert_gt(zx_future_pid(fs[i]), 0);
        on_w1 += streq(node, "w1");
        on_w2 += streq(node, "w2");
        zx_future_unref(&fs[i]);
    }
    free(fs);
    cr_assert_eq(on_w1 + on_w2, N, "every result names its node");
    cr_assert(on_w1 > 0 && on_w2 > 0, "both workers ran tasks (%d, %d)", on_w1, on_w2);
    zx_executor_destroy(&ex);
}

Test(remote, a_plugin_error_arrives_with_its_type_and_message)
{
    char *plugin = zxt_plugin("zexec_demo_plugin");
    s_start(NULL);
    const char *extra[] = {"--plugin", plugin, NULL};
    s_worker("w1", extra);
    zx_executor_t *ex = s_connect(60);
    zx_future_t *f = zx_submitf(ex, "divide", "ii", 1, 0);
    cr_assert(f);
    const zx_error_t *e = zx_future_exception(f, 30);
    cr_assert(e);
    cr_assert_eq(e->code, ZX_ERAISED);
    cr_assert_str_eq(e->type, "ZeroDivisionError");
    cr_assert_neq(strlen(e->message), 0);
    cr_assert_str_eq(e->node, "w1");
    cr_assert_gt(e->pid, 0);
    cr_assert_eq(zx_future_result(f, 0, NULL, NULL), ZX_ERAISED);
    zx_future_unref(&f);
    zx_executor_destroy(&ex);
    free(plugin);
}

Test(remote, an_unknown_function_fails_with_enofunc)
{
    const char *bextra[] = {"--nofunc-grace", "1", NULL};
    s_start(bextra);
    s_worker("w1", NULL);
    zx_executor_t *ex = s_connect(60);
    zx_future_t *f = zx_submitf(ex, "no_such_function", "i", 1);
    const zx_error_t *e = zx_future_exception(f, 30);
    cr_assert(e);
    cr_assert_eq(e->code, ZX_ENOFUNC, "got %s (%s: %s)", zx_strerror(e->code), e->type, e->message);
    cr_assert(strstr(e->message, "no_such_function"), "message names it: %s", e->message);
    zx_future_unref(&f);
    zx_executor_destroy(&ex);
}

typedef struct {
    zx_future_t **fs;
    int n, want;
} running_arg_t;

static bool s_n_running(void *arg)
{
    running_arg_t *a = arg;
    int k = 0;
    for (int i = 0; i < a->n; i++) {
        k += zx_future_running(a->fs[i]);
    }
    return k >= a->want;
}

Test(remote, running_sleep_tasks_of_a_killed_worker_finish_on_the_other)
{
    s_start(NULL);
    const char *extra[] = {"--threads", "2", NULL};
    pid_t w1 = s_worker("w1", extra);
    s_worker("w2", extra);
    zx_executor_t *ex = s_connect(60);
    enum { N = 6 };
    zx_future_t *fs[N];
    for (int i = 0; i < N; i++) {
        fs[i] = s_sleep(ex, 3.0, 0);
    }
    /* two threads each: four running means each worker runs two */
    running_arg_t a = {fs, N, 4};
    cr_assert(zxt_wait_for(s_n_running, &a, 20), "four tasks never ran at once");
    zxt_kill(w1);
    for (int i = 0; i < N; i++) {
        s_assert_ok(fs[i], 60);
        const char *node = NULL;
        zx__future_origin(fs[i], &node, NULL);
        cr_assert_str_eq(node, "w2", "task %d finished on %s", i, node);
        zx_future_unref(&fs[i]);
    }
    zx_executor_destroy(&ex);
}

Test(remote, a_task_whose_only_worker_dies_fails_as_worker_lost)
{
    s_start(NULL);
    pid_t w1 = s_worker("w1", NULL);
    zx_executor_t *ex = s_connect(60);
    zx_future_t *f = s_sleep(ex, 60, -1);
    cr_assert(zxt_wait_for(s_running_cond, f, 20));
    zxt_kill(w1);
    const zx_error_t *e = zx_future_exception(f, 30);
    cr_assert(e, "no hang: the future ends");
    cr_assert_eq(e->code, ZX_EWORKERLOST, "got %s (%s)", zx_strerror(e->code), e->message);
    zx_future_unref(&f);
    zx_executor_destroy(&ex);
}

Test(remote, pending_tasks_complete_after_the_broker_restarts_on_the_same_ports)
{
    s_start(NULL);
    const char *extra[] = {"--threads", "2", NULL};
    s_worker("w1", extra);
    zx_executor_t *ex = s_connect(60);
    enum { N = 12 };
    zx_future_t *fs[N];
    for (int i = 0; i < N; i++) {
        fs[i] = s_sleep(ex, 0.3, 0);
    }
    cr_assert(zxt_wait_for(s_running_cond, fs[0], 20));
    zxt_kill(C.broker);
    C.broker = 0;
    /* work submitted while it is away waits in the client */
    zx_future_t *late = zx_submitf(ex, "echo", "i", 77);
    cr_assert_eq(zxt_broker_restart(&C, NULL), 0);
    for (int i = 0; i < N; i++) {
        s_assert_ok(fs[i], 60);
        zx_future_unref(&fs[i]);
    }
    cr_assert_eq(s_first_int(late), 77);
    zx_future_unref(&late);
    zx_executor_destroy(&ex);
}

Test(remote, futures_fail_with_econn_when_the_broker_is_gone_for_good)
{
    s_start(NULL);
    s_worker("w1", NULL);
    zx_executor_t *ex = s_connect(2.0);
    zx_future_t *ok = zx_submitf(ex, "echo", "i", 1);
    cr_assert_eq(s_first_int(ok), 1);
    zx_future_t *f = s_sleep(ex, 30, 0);
    cr_assert(zxt_wait_for(s_running_cond, f, 20));
    zxt_kill(C.broker);
    C.broker = 0;
    zx_future_t *g = zx_submitf(ex, "echo", "i", 2);
    const zx_error_t *e = zx_future_exception(f, 20);
    cr_assert(e);
    cr_assert_eq(e->code, ZX_ECONN);
    cr_assert_str_eq(e->type, "BrokerUnreachableError");
    cr_assert(strstr(e->message, C.client_ep), "%s", e->message);
    e = zx_future_exception(g, 20);
    cr_assert(e);
    cr_assert_eq(e->code, ZX_ECONN);
    zx_future_unref(&ok);
    zx_future_unref(&f);
    zx_future_unref(&g);
    zx_executor_destroy(&ex);
}

Test(remote, a_local_cluster_runs_tasks_and_destroy_leaves_no_child)
{
    zx_options_t o = s_opts();
    o.local_workers = 2;
    o.local_threads = 2;
    zx_executor_t *ex = zx_executor_new(NULL, &o);
    cr_assert(ex, "local cluster: %s", zx_strerror(zx_last_error()));
    cr_assert(strncmp(zx_executor_endpoint(ex), "tcp://127.0.0.1:", 16) == 0);
    pid_t pids[8];
    size_t n = zx__cluster_pids(zx__remote_cluster(ex), pids, 8);
    cr_assert_eq(n, 3, "one broker and two workers");
    zx_future_t *fs[100];
    for (int i = 0; i < 100; i++) {
        fs[i] = zx_submitf(ex, "echo", "i", i);
    }
    for (int i = 0; i < 100; i++) {
        cr_assert_eq(s_first_int(fs[i]), i);
        zx_future_unref(&fs[i]);
    }
    zx_executor_destroy(&ex);
    for (size_t i = 0; i < n; i++) {
        cr_assert(s_gone_cond(&pids[i]), "child %d still exists", (int)pids[i]);
        cr_assert_eq(waitpid(pids[i], NULL, WNOHANG), -1, "child %d not reaped", (int)pids[i]);
    }
}

Test(remote, running_becomes_true_only_once_a_worker_started_the_task)
{
    s_start(NULL);
    zx_executor_t *ex = s_connect(60);
    zx_future_t *a = s_sleep(ex, 1.0, 0);
    zx_future_t *b = s_sleep(ex, 0.1, 0);
    /* No worker yet. The cancel of a third task is a round trip to the
       broker after a and b on the same connection, so once it returns the
       broker holds them and the client has read all it said about them:
       they must not look running while no worker has started them. */
    zx_future_t *c = s_sleep(ex, 0.1, 0);
    cr_assert(zx_future_cancel(c), "a queued task can be cancelled");
    cr_assert_eq(zx_future_state(a), ZX_PENDING);
    cr_assert_eq(zx_future_state(b), ZX_PENDING);
    cr_assert_not(zx_future_running(a));
    /* one thread and no process pool: pool "any" would start b at once in
       a free process slot */
    const char *extra[] = {"--threads", "1", "--procs", "0", NULL};
    s_worker("w1", extra);
    cr_assert(zxt_wait_for(s_running_cond, a, 20));
    cr_assert_eq(zx_future_state(a), ZX_RUNNING);
    /* one thread: b waits (queued or prefetched) and must not look running */
    cr_assert_not(zx_future_running(b));
    cr_assert_eq(zx_future_state(b), ZX_PENDING);
    s_assert_ok(a, 20);
    s_assert_ok(b, 20);
    cr_assert_eq(zx_future_state(b), ZX_FINISHED);
    zx_future_unref(&a);
    zx_future_unref(&b);
    zx_future_unref(&c);
    zx_executor_destroy(&ex);
}

static bool s_file_exists(void *arg)
{
    struct stat st;
    return stat(arg, &st) == 0;
}

Test(remote, cancelling_a_queued_task_succeeds_and_it_never_runs)
{
    char *plugin = zxt_plugin("zexec_demo_plugin");
    s_start(NULL);
    const char *extra[] = {"--threads", "1", "--procs", "0", "--plugin", plugin, NULL};
    s_worker("w1", extra);
    zx_executor_t *ex = s_connect(60);
    char path[128];
    snprintf(path, sizeof path, "/tmp/zexec-test-remote-%d-touch", (int)getpid());
    unlink(path);
    zx_future_t *busy = s_sleep(ex, 1.0, 0);
    cr_assert(zxt_wait_for(s_running_cond, busy, 20));
    zx_future_t *t = zx_submitf(ex, "touch", "s", path);
    cr_assert(t);
    cr_assert(zx_future_cancel(t), "a task that has not started can be cancelled");
    cr_assert(zx_future_cancelled(t));
    cr_assert_eq(zx_future_result(t, 0, NULL, NULL), ZX_ECANCELLED);
    s_assert_ok(busy, 20);
    /* the single thread runs what comes next where t would have run */
    zx_future_t *after = zx_submitf(ex, "echo", "i", 3);
    cr_assert_eq(s_first_int(after), 3);
    cr_assert_not(s_file_exists(path), "the cancelled task ran");
    zx_future_unref(&busy);
    zx_future_unref(&t);
    zx_future_unref(&after);
    zx_executor_destroy(&ex);
    free(plugin);
}

Test(remote, cancelling_a_running_task_fails_and_it_completes)
{
    s_start(NULL);
    s_worker("w1", NULL);
    zx_executor_t *ex = s_connect(60);
    zx_future_t *f = s_sleep(ex, 0.5, 0);
    cr_assert(zxt_wait_for(s_running_cond, f, 20));
    cr_assert_not(zx_future_cancel(f));
    cr_assert_not(zx_future_cancelled(f));
    s_assert_ok(f, 20);
    zx_future_unref(&f);
    zx_executor_destroy(&ex);
}

Test(remote, terminating_a_running_process_pool_task_cancels_it)
{
    s_start(NULL);
    const char *extra[] = {"--threads", "1", "--procs", "1", NULL};
    s_worker("w1", extra);
    zx_executor_t *ex = s_connect(60);
    zx_task_opts_t to = {.pool = ZX_POOL_PROCESS};
    static const uint8_t thirty[] = {0x91, 0x1e}; /* [30] */
    zx_future_t *f = zx_submit_opts(ex, "sleep", thirty, sizeof thirty, &to);
    cr_assert(f);
    cr_assert(zxt_wait_for(s_running_cond, f, 20));
    cr_assert_not(zx_future_cancel(f), "plain cancel of a running task is refused");
    cr_assert(zx_future_terminate(f));
    cr_assert(zx_future_cancelled(f));
    const zx_error_t *e = zx_future_exception(f, 0);
    cr_assert(e);
    cr_assert_eq(e->code, ZX_ECANCELLED);
    /* the worker is still serving */
    zx_future_t *g = zx_submitf(ex, "echo", "i", 9);
    cr_assert_eq(s_first_int(g), 9);
    zx_future_unref(&f);
    zx_future_unref(&g);
    zx_executor_destroy(&ex);
}

Test(remote, a_local_cluster_signs_with_the_clients_secret_file)
{
    char path[] = "/tmp/zexec-test-secret-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    const char secret[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n";
    cr_assert_eq(write(fd, secret, sizeof secret - 1), (ssize_t)(sizeof secret - 1));
    close(fd);
    zx_options_t o = s_opts();
    o.local_workers = 1;
    o.secret_file = path;
    zx_executor_t *ex = zx_executor_new(NULL, &o);
    cr_assert(ex, "local cluster: %s", zx_strerror(zx_last_error()));
    zx_future_t *f = zx_submitf(ex, "echo", "i", 11);
    cr_assert_eq(s_first_int(f), 11);
    zx_future_unref(&f);
    zx_executor_destroy(&ex);
    unlink(path);
}

static bool s_leads(void *ex)
{
    return zx__remote_leading(ex);
}

/* The broker restarts while a thread leads: the leader sees the loss (its
   ticks), says HELLO, re-sends after WELCOME and gets its result. */
Test(remote, a_thread_leading_through_a_broker_restart_gets_its_result)
{
    s_start(NULL);
    const char *extra[] = {"--threads", "2", NULL};
    s_worker("w1", extra);
    zx_executor_t *ex = s_connect(60);
    zx_future_t *f = s_sleep(ex, 2.0, 0);
    /* short slices: a wait that began while the I/O thread was awake sleeps
       (a follower) until its slice ends, then tries to lead again */
    waiter_t w = {.f = f, .slice = 0.05};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, s_waiter_main, &w), 0);
    cr_assert(zxt_wait_for(s_leads, ex, 20), "no thread leads");
    zxt_kill(C.broker);
    C.broker = 0;
    cr_assert_eq(zxt_broker_restart(&C, NULL), 0);
    cr_assert_eq(pthread_join(t, NULL), 0);
    cr_assert_eq(w.rc, ZX_OK);
    s_assert_ok(f, 0);
    zx_future_unref(&f);
    zx_executor_destroy(&ex);
}
