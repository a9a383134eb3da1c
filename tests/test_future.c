/*  test_future.c - the future core (libclient/future.c) through its internal
    completion API: states, first completion wins, result and exception with
    timeouts, done-callbacks, status mapping, and cancel dispatch to the
    executor. */
#include "zx_client_int.h"
#include "zx_proto.h"
#include "zx_task.h"
#include "zx_waiter.h"

#include <criterion/criterion.h>
#include <czmq.h>
#include <stdatomic.h>
#include <string.h>

/* ---- a fake executor that records cancel requests ----------------------- */

typedef struct {
    zx_executor_t base;
    atomic_int cancels;
    bool last_terminate;
    bool answer; /* what cancel decides */
} fake_ex_t;

static bool s_fake_cancel(zx_executor_t *ex, zx_future_t *f, bool terminate)
{
    fake_ex_t *fx = (fake_ex_t *)ex;
    atomic_fetch_add(&fx->cancels, 1);
    fx->last_terminate = terminate;
    if (fx->answer) {
        zx__future_set_cancelled(f, terminate ? "terminated while running" : "");
    }
    return fx->answer;
}

static const zx__executor_ops_t s_fake_ops = {.kind = "fake", .cancel = s_fake_cancel};

static void s_fake_init(fake_ex_t *fx, bool answer)
{
    memset(fx, 0, sizeof *fx);
    fx->base.ops = &s_fake_ops;
    fx->answer = answer;
}

static const unsigned char k_value[] = {0x93, 0x01, 0x02, 0x03}; /* [1, 2, 3] */

/* ---- states ------------------------------------------------------------- */

Test(future, moves_pending_running_finished_and_first_completion_wins, .timeout = 10)
{
    zx_future_t *f = zx__future_new(NULL, "fn", 7);
    cr_assert_not_null(f);
    cr_assert_eq(zx_future_state(f), ZX_PENDING);
    cr_assert_not(zx_future_running(f));
    cr_assert_not(zx_future_done(f));
    cr_assert_str_eq(zx_future_fn(f), "fn");
    cr_assert_eq(zx__future_seq(f), 7);

    cr_assert(zx__future_set_running(f));
    cr_assert_not(zx__future_set_running(f), "RUNNING twice");
    cr_assert(zx_future_running(f));

    cr_assert(zx__future_set_result(f, k_value, sizeof k_value));
    cr_assert_eq(zx_future_state(f), ZX_FINISHED);
    cr_assert(zx_future_done(f));
    cr_assert_not(zx_future_cancelled(f));
    /* later completions are ignored */
    cr_assert_not(zx__future_set_exception(f, ZX_ERAISED, "ValueError", "x", "", "", 0));
    cr_assert_not(zx__future_set_cancelled(f, ""));
    cr_assert_not(zx__future_set_running(f));

    const void *v = NULL;
    size_t len = 0;
    cr_assert_eq(zx_future_result(f, 0, &v, &len), ZX_OK);
    cr_assert_eq(len, sizeof k_value);
    cr_assert_eq(memcmp(v, k_value, len), 0);
    cr_assert_null(zx_future_exception(f, 0));
    zx_future_unref(&f);
    cr_assert_null(f);
}

Test(future, pending_can_be_cancelled_directly_and_reports_cancellation, .timeout = 10)
{
    zx_future_t *f = zx__future_new(NULL, "fn", 1);
    cr_assert(zx__future_set_cancelled(f, ""));
    cr_assert(zx_future_cancelled(f));
    cr_assert(zx_future_done(f));
    cr_assert_eq(zx_future_result(f, ZX_FOREVER, NULL, NULL), ZX_ECANCELLED);
    const zx_error_t *e = zx_future_exception(f, 0);
    cr_assert_not_null(e);
    cr_assert_eq(e->code, ZX_ECANCELLED);
    cr_assert_str_eq(e->type, "CancelledError");
    cr_assert_not(zx__future_set_result(f, k_value, sizeof k_value));
    zx_future_unref(&f);
}

Test(future, terminated_future_carries_its_reason, .timeout = 10)
{
    zx_future_t *f = zx__future_new(NULL, "fn", 1);
    zx__future_set_running(f);
    cr_assert(zx__future_set_cancelled(f, "terminated while running"));
    const zx_error_t *e = zx_future_exception(f, 0);
    cr_assert_eq(e->code, ZX_ECANCELLED);
    cr_assert_str_eq(e->type, "CancelledError");
    cr_assert_str_eq(e->message, "terminated while running");
    cr_assert_eq(zx_future_result(f, 0, NULL, NULL), ZX_ECANCELLED);
    cr_assert_not(zx__future_failed(f), "cancelled does not count as an exception");
    zx_future_unref(&f);
}

Test(future, ref_and_unref_keep_it_alive_and_data_slot_holds, .timeout = 10)
{
    zx_future_t *f = zx__future_new(NULL, "fn", 1);
    zx_future_t *g = zx_future_ref(f);
    cr_assert_eq(f, g);
    int tag;
    zx_future_set_data(f, &tag);
    zx_future_unref(&f);
    cr_assert_eq(zx_future_data(g), &tag, "g still valid after one unref");
    zx__future_set_priv(g, &tag);
    cr_assert_eq(zx__future_priv(g), &tag);
    zx_future_unref(&g);
    zx_future_unref(&g); /* NULL: no-op */
    zx_future_unref(NULL);
}

/* ---- timeouts ----------------------------------------------------------- */

/* Completes the future as soon as a thread sleeps waiting on it, until
   told to stop: a poll (timeout 0) that slept would get the result. */
typedef struct {
    zx_future_t *f;
    atomic_bool stop;
} s_trap_t;

static void *s_complete_if_waited(void *arg)
{
    s_trap_t *trap = arg;
    while (!atomic_load(&trap->stop)) {
        if (zx__future_waiting(trap->f) > 0) {
            zx__future_set_result(trap->f, k_value, sizeof k_value);
            break;
        }
        zclock_sleep(1);
    }
    return NULL;
}

Test(future, result_times_out_and_poll_returns_at_once, .timeout = 10)
{
    zx_future_t *f = zx__future_new(NULL, "fn", 1);
    /* timeout 0 only looks: it never sleeps, so the trap never fires */
    s_trap_t trap = {.f = f};
    pthread_t t;
    pthread_create(&t, NULL, s_complete_if_waited, &trap);
    for (int i = 0; i < 100; i++) {
        cr_assert_eq(zx_future_result(f, 0, NULL, NULL), ZX_ETIMEOUT, "poll %d waited", i);
    }
    atomic_store(&trap.stop, true);
    pthread_join(t, NULL);
    cr_assert_eq(zx_future_state(f), ZX_PENDING);
    int64_t t0 = zclock_mono();
    cr_assert_eq(zx_future_result(f, 0.15, NULL, NULL), ZX_ETIMEOUT);
    int64_t waited = zclock_mono() - t0;
    cr_assert_geq(waited, 140, "waited %lld ms", (long long)waited);
    const zx_error_t *e = zx_future_exception(f, 0.01);
    cr_assert_not_null(e);
    cr_assert_eq(e->code, ZX_ETIMEOUT);
    cr_assert_str_eq(e->type, "TimeoutError");
    cr_assert_eq(zx_future_state(f), ZX_PENDING, "a timeout leaves the future alone");
    zx__future_set_result(f, k_value, sizeof k_value);
    cr_assert_eq(zx_future_result(f, 0, NULL, NULL), ZX_OK);
    zx_future_unref(&f);
}

static void *s_complete(void *arg)
{
    zx_future_t *f = arg;
    zx__future_set_result(f, k_value, sizeof k_value);
    zx_future_unref(&f);
    return NULL;
}

/* Completes f once a thread sleeps waiting on it, so the wake-up is what
   is tested (not a result already there when the wait began). */
static void *s_complete_once_waited(void *arg)
{
    zx_future_t *f = arg;
    while (zx__future_waiting(f) == 0) {
        zclock_sleep(1);
    }
    return s_complete(f);
}

Test(future, result_forever_wakes_on_completion_from_another_thread, .timeout = 10)
{
    zx_future_t *f = zx__future_new(NULL, "fn", 1);
    pthread_t t;
    pthread_create(&t, NULL, s_complete_once_waited, zx_future_ref(f));
    size_t len = 0;
    cr_assert_eq(zx_future_result(f, ZX_FOREVER, NULL, &len), ZX_OK);
    cr_assert_eq(len, sizeof k_value);
    pthread_join(t, NULL);
    zx_future_unref(&f);
}

/* ---- callbacks ---------------------------------------------------------- */

typedef struct {
    atomic_int calls;
    pthread_t thread;
    zx_state_t state_seen;
    bool value_visible;
    int order[8];
    atomic_int n_order;
} cb_log_t;

static cb_log_t s_log;

static void s_cb_record(zx_future_t *f, void *arg)
{
    atomic_fetch_add(&s_log.calls, 1);
    s_log.thread = pthread_self();
    s_log.state_seen = zx_future_state(f);
    s_log.value_visible = zx_future_result(f, 0, NULL, NULL) == ZX_OK;
    int i = atomic_fetch_add(&s_log.n_order, 1);
    if (i < 8) {
        s_log.order[i] = (int)(intptr_t)arg;
    }
}

/* A callback that drops the user's reference and adds another callback: the
   others must still run, once each. */
static void s_cb_disruptive(zx_future_t *f, void *arg)
{
    zx_future_t **user_ref = arg;
    zx_future_unref(user_ref);
    zx_future_add_done_callback(f, s_cb_record, (void *)(intptr_t)99);
}

Test(future, callbacks_run_once_in_order_after_the_result_on_completing_thread, .timeout = 10)
{
    memset(&s_log, 0, sizeof s_log);
    zx_future_t *f = zx__future_new(NULL, "fn", 1);
    for (intptr_t i = 1; i <= 3; i++) {
        cr_assert_eq(zx_future_add_done_callback(f, s_cb_record, (void *)i), ZX_OK);
    }
    cr_assert_eq(atomic_load(&s_log.calls), 0);
    pthread_t t;
    pthread_create(&t, NULL, s_complete, zx_future_ref(f));
    pthread_join(t, NULL);
    cr_assert_eq(atomic_load(&s_log.calls), 3);
    cr_assert(pthread_equal(s_log.thread, t), "ran on the completing thread");
    cr_assert_eq(s_log.state_seen, ZX_FINISHED);
    cr_assert(s_log.value_visible);
    cr_assert_eq(s_log.order[0], 1);
    cr_assert_eq(s_log.order[1], 2);
    cr_assert_eq(s_log.order[2], 3);
    /* a second completion does not call them again */
    zx__future_set_exception(f, ZX_ERAISED, "E", "", "", "", 0);
    cr_assert_eq(atomic_load(&s_log.calls), 3);
    zx_future_unref(&f);
}

Test(future, callback_on_done_future_runs_at_once_on_caller_thread, .timeout = 10)
{
    memset(&s_log, 0, sizeof s_log);
    zx_future_t *f = zx__future_new(NULL, "fn", 1);
    zx__future_set_cancelled(f, "");
    cr_assert_eq(zx_future_add_done_callback(f, s_cb_record, NULL), ZX_OK);
    cr_assert_eq(atomic_load(&s_log.calls), 1);
    cr_assert(pthread_equal(s_log.thread, pthread_self()));
    cr_assert_eq(s_log.state_seen, ZX_CANCELLED);
    cr_assert_eq(zx_future_add_done_callback(f, NULL, NULL), ZX_EINVAL);
    zx_future_unref(&f);
}

Test(future, a_callback_dropping_refs_and_adding_callbacks_does_not_disturb_others, .timeout = 10)
{
    memset(&s_log, 0, sizeof s_log);
    zx_future_t *f = zx__future_new(NULL, "fn", 1);
    zx_future_t *user = zx_future_ref(f);
    zx_future_add_done_callback(f, s_cb_record, (void *)(intptr_t)1);
    zx_future_add_done_callback(f, s_cb_disruptive, &user);
    zx_future_add_done_callback(f, s_cb_record, (void *)(intptr_t)3);
    zx__future_set_result(f, k_value, sizeof k_value);
    cr_assert_null(user, "the disruptive callback ran");
    cr_assert_eq(atomic_load(&s_log.calls), 3);
    cr_assert_eq(s_log.order[0], 1);
    cr_assert_eq(s_log.order[1], 99, "added from a callback: called at once");
    cr_assert_eq(s_log.order[2], 3);
    zx_future_unref(&f);
}

/* ---- completion from wire statuses -------------------------------------- */

static zframe_t *s_err_payload(void)
{
    return zxp_error_frame("ValueError", "bad value", "line 1");
}

Test(future, complete_maps_statuses_to_codes_and_copies_strings, .timeout = 10)
{
    static const struct {
        int status;
        int code;
    } map[] = {{ZXP_ST_RAISED, ZX_ERAISED},         {ZXP_ST_NOFUNC, ZX_ENOFUNC},
               {ZXP_ST_TIMELIMIT, ZX_ETIMELIMIT},   {ZXP_ST_CRASHED, ZX_ECRASHED},
               {ZXP_ST_WORKERLOST, ZX_EWORKERLOST}, {ZXP_ST_REJECTED, ZX_EREJECTED},
               {ZXP_ST_MEMORY, ZX_EMEMORY},         {ZXP_ST_NOTALLOWED, ZX_ENOTALLOWED}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        cr_assert_eq(zx__status_code(map[i].status), map[i].code);
        zx_future_t *f = zx__future_new(NULL, "fn", 1);
        zframe_t *p = s_err_payload();
        char node[] = "node-a";
        cr_assert(zx__future_complete(f, map[i].status, zframe_data(p), zframe_size(p), node, 42));
        zframe_destroy(&p);
        node[0] = 'X'; /* the future copied it */
        cr_assert_eq(zx_future_result(f, 0, NULL, NULL), ZX_ERAISED);
        const zx_error_t *e = zx_future_exception(f, 0);
        cr_assert_eq(e->code, map[i].code);
        cr_assert_str_eq(e->type, "ValueError");
        cr_assert_str_eq(e->message, "bad value");
        cr_assert_str_eq(e->traceback, "line 1");
        cr_assert_str_eq(e->node, "node-a");
        cr_assert_eq(e->pid, 42);
        cr_assert(zx__future_failed(f));
        zx_future_unref(&f);
    }
    cr_assert_eq(zx__status_code(77), ZX_EPROTO);
    cr_assert_eq(zx__status_code(ZXP_ST_OK), ZX_OK);
}

Test(future, complete_ok_copies_the_value, .timeout = 10)
{
    zx_future_t *f = zx__future_new(NULL, "fn", 1);
    unsigned char buf[sizeof k_value];
    memcpy(buf, k_value, sizeof buf);
    cr_assert(zx__future_complete(f, ZXP_ST_OK, buf, sizeof buf, "n", 1));
    memset(buf, 0, sizeof buf);
    const void *v;
    size_t len;
    cr_assert_eq(zx_future_result(f, 0, &v, &len), ZX_OK);
    cr_assert_eq(memcmp(v, k_value, sizeof k_value), 0);
    zx_future_unref(&f);
}

/* Writes the header of a msgpack value of exactly len bytes into buf: a
   fixint for 1 byte, else a bin 8, 16 or 32 header; returns its size. */
static size_t s_bin_header(unsigned char *buf, size_t len)
{
    if (len == 1) {
        buf[0] = 0x01;
        return 1;
    }
    if (len - 2 <= 0xff) {
        buf[0] = 0xc4;
        buf[1] = (unsigned char)(len - 2);
        return 2;
    }
    if (len - 3 <= 0xffff) {
        buf[0] = 0xc5;
        buf[1] = (unsigned char)((len - 3) >> 8);
        buf[2] = (unsigned char)(len - 3);
        return 3;
    }
    uint32_t n = (uint32_t)(len - 5);
    buf[0] = 0xc6;
    buf[1] = (unsigned char)(n >> 24);
    buf[2] = (unsigned char)(n >> 16);
    buf[3] = (unsigned char)(n >> 8);
    buf[4] = (unsigned char)n;
    return 5;
}

Test(future, complete_ok_refuses_what_is_not_one_msgpack_value, .timeout = 10)
{
    static const struct {
        const char *bytes;
        size_t len;
    } bad[] = {
        {"", 0}, {"\xdd\xff\xff\xff\xff", 5}, {"raw bytes", 9}, {"\x92\x01", 2}, {"\xc0\xc0", 2}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        zx_future_t *f = zx__future_new(NULL, "fn", 1);
        cr_assert(zx__future_complete(f, ZXP_ST_OK, bad[i].bytes, bad[i].len, "n", 1));
        cr_assert_eq(zx_future_result(f, 0, NULL, NULL), ZX_ERAISED, "case %zu", i);
        const zx_error_t *e = zx_future_exception(f, 0);
        cr_assert_eq(e->code, ZX_EPROTO, "case %zu", i);
        cr_assert_str_eq(e->type, "ProtocolError");
        zx_future_unref(&f);
    }
}

Test(future, complete_ok_keeps_small_and_large_values_and_node_names, .timeout = 10)
{
    /* values and node names either side of the sizes kept in the future */
    static const size_t vlens[] = {1, 23, 24, 25, 200, 70000};
    static const size_t nlens[] = {1, 30, 31, 32, 200};
    for (size_t i = 0; i < sizeof vlens / sizeof vlens[0]; i++) {
        for (size_t j = 0; j < sizeof nlens / sizeof nlens[0]; j++) {
            /* one msgpack value of exactly vlens[i] bytes: a fixint, or a
               bin whose header is followed by the pattern */
            unsigned char *buf = malloc(vlens[i] + 1);
            size_t hdr = s_bin_header(buf, vlens[i]);
            for (size_t k = hdr; k < vlens[i]; k++) {
                buf[k] = (unsigned char)(k * 7 + i);
            }
            char node[256];
            memset(node, 'a' + (int)j, nlens[j]);
            node[nlens[j]] = 0;
            zx_future_t *f = zx__future_new(NULL, "fn", 1);
            cr_assert(zx__future_complete(f, ZXP_ST_OK, buf, vlens[i], node, 9));
            /* a second completion changes nothing */
            cr_assert_not(zx__future_complete(f, ZXP_ST_OK, "x", 1, "other", 1));
            const void *v;
            size_t len;
            cr_assert_eq(zx_future_result(f, 0, &v, &len), ZX_OK);
            cr_assert_eq(len, vlens[i]);
            cr_assert_eq(memcmp(v, buf, hdr), 0);
            for (size_t k = hdr; k < vlens[i]; k++) {
                cr_assert_eq(((const unsigned char *)v)[k], (unsigned char)(k * 7 + i),
                             "value %zu byte %zu", vlens[i], k);
            }
            const char *origin;
            int pid;
            zx__future_origin(f, &origin, &pid);
            cr_assert_str_eq(origin, node, "node of length %zu", nlens[j]);
            cr_assert_eq(pid, 9);
            free(buf);
            zx_future_unref(&f);
        }
    }
}

Test(future, malformed_error_payload_still_fails_with_eproto, .timeout = 10)
{
    static const unsigned char bad[][4] = {
        {0xc1, 0, 0, 0},    /* never-used byte */
        {0x92, 0x01, 0x02}, /* [1, 2]: not strings */
        {0xdd, 0xff, 0xff}, /* truncated huge array */
    };
    static const size_t lens[] = {1, 3, 3};
    for (size_t i = 0; i < 3; i++) {
        zx_future_t *f = zx__future_new(NULL, "fn", 1);
        cr_assert(zx__future_complete(f, ZXP_ST_RAISED, bad[i], lens[i], "n", 1));
        const zx_error_t *e = zx_future_exception(f, 0);
        cr_assert_eq(e->code, ZX_EPROTO, "case %zu", i);
        zx_future_unref(&f);
    }
    zx_future_t *f = zx__future_new(NULL, "fn", 1);
    cr_assert(zx__future_complete(f, ZXP_ST_CRASHED, NULL, 0, "", 0));
    cr_assert_eq(zx_future_exception(f, 0)->code, ZX_EPROTO);
    zx_future_unref(&f);
}

Test(future, complete_cancelled_status_cancels_with_reason, .timeout = 10)
{
    zx_future_t *f = zx__future_new(NULL, "fn", 1);
    zx__future_set_running(f);
    zframe_t *p = zxp_error_frame("CancelledError", "terminated while running", "");
    cr_assert(zx__future_complete(f, ZXP_ST_CANCELLED, zframe_data(p), zframe_size(p), "n", 3));
    zframe_destroy(&p);
    cr_assert(zx_future_cancelled(f));
    cr_assert_str_eq(zx_future_exception(f, 0)->message, "terminated while running");
    zx_future_unref(&f);
}

/* ---- cancel dispatch ---------------------------------------------------- */

Test(future, cancel_asks_the_executor_only_while_pending, .timeout = 10)
{
    fake_ex_t fx;
    s_fake_init(&fx, true);
    zx_future_t *f = zx__future_new(&fx.base, "fn", 1);
    cr_assert_eq(zx__future_executor(f), &fx.base);
    cr_assert(zx_future_cancel(f));
    cr_assert_eq(atomic_load(&fx.cancels), 1);
    cr_assert_not(fx.last_terminate);
    cr_assert(zx_future_cancelled(f));
    cr_assert_null(zx__future_executor(f), "executor forgotten once done");
    cr_assert(zx_future_cancel(f), "cancelled stays cancelled");
    cr_assert_eq(atomic_load(&fx.cancels), 1, "no second round trip");
    zx_future_unref(&f);

    /* the executor refuses: the answer is false and the future unchanged */
    s_fake_init(&fx, false);
    f = zx__future_new(&fx.base, "fn", 2);
    cr_assert_not(zx_future_cancel(f));
    cr_assert_eq(atomic_load(&fx.cancels), 1);
    cr_assert_eq(zx_future_state(f), ZX_PENDING);
    zx_future_unref(&f);
}

Test(future, cancel_running_or_finished_is_false_without_asking, .timeout = 10)
{
    fake_ex_t fx;
    s_fake_init(&fx, true);
    zx_future_t *f = zx__future_new(&fx.base, "fn", 1);
    zx__future_set_running(f);
    cr_assert_not(zx_future_cancel(f));
    cr_assert_eq(atomic_load(&fx.cancels), 0);
    cr_assert(zx_future_running(f));
    /* terminate does ask for a running one */
    cr_assert(zx_future_terminate(f));
    cr_assert_eq(atomic_load(&fx.cancels), 1);
    cr_assert(fx.last_terminate);
    cr_assert(zx_future_cancelled(f));
    zx_future_unref(&f);

    f = zx__future_new(&fx.base, "fn", 2);
    zx__future_set_result(f, k_value, sizeof k_value);
    cr_assert_not(zx_future_cancel(f));
    cr_assert_not(zx_future_terminate(f));
    cr_assert_eq(atomic_load(&fx.cancels), 1);
    zx_future_unref(&f);
}

Test(future, null_arguments_are_harmless, .timeout = 10)
{
    cr_assert_eq(zx_future_result(NULL, 0, NULL, NULL), ZX_EINVAL);
    cr_assert_null(zx_future_exception(NULL, 0));
    cr_assert_not(zx_future_cancel(NULL));
    cr_assert_null(zx_future_data(NULL));
    cr_assert_eq(zx_future_add_done_callback(NULL, s_cb_record, NULL), ZX_EINVAL);
}
