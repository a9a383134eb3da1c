/*  test_broker_faults.c - zexec-broker under faults, driven by fake peers
    against the real binary: lost and leaving workers (retries, worker-lost),
    garbage frames, unknown peers, clients that leave, broker restarts with
    tasks still running on workers, signals and bad flags.
*/
#include "broker_peers.h"

#include <signal.h>
#include <sys/wait.h>

static zxt_cluster_t s_cluster;

static void s_stop(void)
{
    zxt_cluster_stop(&s_cluster);
}

static const char *const s_fast[] = {"--heartbeat", "0.1", "--liveness", "3", NULL};

static zxp_task_t s_task0(fp_t *w)
{
    zxp_task_t t;
    zxp_get_task(&w->in, 0, &t);
    return t;
}

Test(broker_faults, retries_a_lost_workers_task_on_another_worker, .timeout = 30, .fini = s_stop)
{
    fb_start(&s_cluster, s_fast);
    fp_t a, b, c;
    fp_init(&a, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fp_init(&c, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fw_ready(&a, "doomed", 1, 0, "f");
    fc_hello(&c, "survivor");
    fc_submit(&c, 1, "f");
    cr_assert(fp_expect(&a, ZXP_TASK, 5000));
    cr_assert_eq(s_task0(&a).attempt, 1);
    fp_silence(&a); /* as if SIGKILLed: no more heartbeats */
    fp_init(&b, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fw_ready(&b, "healthy", 1, 0, "f");
    cr_assert(fp_expect(&b, ZXP_TASK, 5000), "the lost worker's task was not retried");
    zxp_task_t t = s_task0(&b);
    cr_assert_eq(t.seq, 1);
    cr_assert_eq(t.attempt, 2);
    zframe_t *p = zxp_payload_take(&b.in);
    cr_assert_eq(zframe_size(p), 2, "the retry carries the original arguments");
    zframe_destroy(&p);
    uint8_t res[] = {0x07};
    fw_result_ex(&b, c.id, 1, ZXP_ST_OK, ZXP_POOL_THREAD, true, res, 1);
    cr_assert(fp_expect(&c, ZXP_RESULT, 5000));
    zxp_result_t r;
    zxp_get_result(&c.in, 0, &r);
    cr_assert_eq(r.status, ZXP_ST_OK);
    cr_assert_eq(r.attempts, 2);
    cr_assert(r.node.len == 7 && memcmp(r.node.ptr, "healthy", 7) == 0);
    /* the lost worker is forgotten: it is told to register again */
    zxp_send_empty(a.sock, NULL, ZXP_HEARTBEAT);
    cr_assert(fp_expect(&a, ZXP_RESET, 5000));
    fp_fini(&a);
    fp_fini(&b);
    fp_fini(&c);
}

Test(broker_faults, fails_with_worker_lost_when_retries_are_used_up, .timeout = 30, .fini = s_stop)
{
    fb_start(&s_cluster, s_fast);
    fp_t a1, a2, c;
    fp_init(&c, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fc_hello(&c, "unlucky");
    uint8_t args[] = {0x90};
    fc_submit_ex(&c, 1, "f", ZXP_POOL_ANY, 0, 1, args, 1); /* one retry: two attempts */
    fp_init(&a1, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fw_ready(&a1, "first", 1, 0, "f");
    cr_assert(fp_expect(&a1, ZXP_TASK, 5000));
    fp_silence(&a1);
    fp_init(&a2, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fw_ready(&a2, "second", 1, 0, "f");
    cr_assert(fp_expect(&a2, ZXP_TASK, 5000));
    cr_assert_eq(s_task0(&a2).attempt, 2);
    fp_silence(&a2);
    cr_assert(fp_expect(&c, ZXP_RESULT, 5000), "no worker-lost error: a hang");
    zxp_result_t r;
    zxp_get_result(&c.in, 0, &r);
    cr_assert_eq(r.status, ZXP_ST_WORKERLOST);
    cr_assert_eq(r.attempts, 2);
    zframe_t *f = zxp_payload_take(&c.in);
    char type[64], msg[512];
    fp_error_of(f, type, sizeof type, msg, sizeof msg);
    zframe_destroy(&f);
    cr_assert_str_eq(type, "WorkerLostError");
    cr_assert(strstr(msg, "worker second lost; retries used up"), "message: %s", msg);
    fp_fini(&a1);
    fp_fini(&a2);
    fp_fini(&c);
}

Test(broker_faults, no_retries_means_one_attempt, .timeout = 30, .fini = s_stop)
{
    fb_start(&s_cluster, s_fast);
    fp_t a, c;
    fp_init(&c, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fp_init(&a, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fc_hello(&c, "once");
    fw_ready(&a, "only", 1, 0, "f");
    uint8_t args[] = {0x90};
    fc_submit_ex(&c, 1, "f", ZXP_POOL_ANY, 0, -1, args, 1);
    cr_assert(fp_expect(&a, ZXP_TASK, 5000));
    fp_silence(&a);
    cr_assert(fp_expect(&c, ZXP_RESULT, 5000));
    zxp_result_t r;
    zxp_get_result(&c.in, 0, &r);
    cr_assert_eq(r.status, ZXP_ST_WORKERLOST);
    cr_assert_eq(r.attempts, 1);
    fp_fini(&a);
    fp_fini(&c);
}

Test(broker_faults, a_leaving_worker_hands_back_its_tasks_without_counting_an_attempt,
     .timeout = 30, .fini = s_stop)
{
    fb_start(&s_cluster, NULL);
    fp_t a, b, c;
    fp_init(&a, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fp_init(&c, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fw_ready(&a, "leaver", 1, 0, "f");
    fc_hello(&c, "client");
    fc_submit(&c, 1, "f");
    cr_assert(fp_expect(&a, ZXP_TASK, 5000));
    zxp_send_empty(a.sock, NULL, ZXP_DRAIN);
    zxp_send_empty(a.sock, NULL, ZXP_BYE);
    fp_init(&b, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fw_ready(&b, "stayer", 1, 0, "f");
    cr_assert(fp_expect(&b, ZXP_TASK, 5000));
    cr_assert_eq(s_task0(&b).attempt, 1, "a BYE must not count an attempt");
    fp_fini(&a);
    fp_fini(&b);
    fp_fini(&c);
}

static void s_started(fp_t *w, const uint8_t *session, uint64_t seq)
{
    zxp_out_t out;
    zxp_out_init(&out);
    zxp_out_begin(&out, ZXP_WSTARTED);
    zxp_put_wstarted(&out, session, seq, 1, ZXP_POOL_THREAD);
    cr_assert(zxp_out_send(&out, w->sock, NULL) == 0);
    zxp_out_fini(&out);
}

/* A cancel the broker has relayed to a worker that is then lost before it
   answers: a task that never started is cancelled (the client is told, the
   task never runs elsewhere)... */
Test(broker_faults, a_lost_worker_with_a_cancel_pending_cancels_its_unstarted_task, .timeout = 30,
     .fini = s_stop)
{
    fb_start(&s_cluster, s_fast);
    fp_t a, b, c;
    fp_init(&a, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fp_init(&c, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fw_ready(&a, "doomed", 1, 0, "f");
    fc_hello(&c, "canceller");
    fc_submit(&c, 1, "f");
    cr_assert(fp_expect(&a, ZXP_TASK, 5000));
    fc_cancel(&c, 1, false);
    cr_assert(fp_expect(&a, ZXP_WCANCEL, 5000));
    fp_silence(&a); /* lost before it answers */
    cr_assert(fp_expect(&c, ZXP_CANCELLED, 5000), "the pending cancel was not answered");
    cr_assert_eq(zxp_u(zxp_item(&c.in, 0), 0), 1);
    cr_assert_eq(zxp_u(zxp_item(&c.in, 0), 1), ZXP_CANCEL_DONE);
    /* and it is not re-queued: the next task a new worker gets is task 2 */
    fp_init(&b, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fw_ready(&b, "healthy", 1, 0, "f");
    fc_submit(&c, 2, "f");
    cr_assert(fp_expect(&b, ZXP_TASK, 5000));
    cr_assert_eq(s_task0(&b).seq, 2, "a cancelled task ran elsewhere");
    fp_fini(&a);
    fp_fini(&b);
    fp_fini(&c);
}

/* ...while a task that had started is retried elsewhere, not cancelled. */
Test(broker_faults, a_lost_worker_with_a_cancel_pending_retries_its_started_task, .timeout = 30,
     .fini = s_stop)
{
    fb_start(&s_cluster, s_fast);
    fp_t a, b, c;
    fp_init(&a, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fp_init(&c, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fw_ready(&a, "doomed", 1, 0, "f");
    fc_hello(&c, "canceller");
    fc_submit(&c, 1, "f");
    cr_assert(fp_expect(&a, ZXP_TASK, 5000));
    s_started(&a, c.id, 1);
    cr_assert(fp_expect(&c, ZXP_STARTED, 5000));
    fc_cancel(&c, 1, false);
    cr_assert(fp_expect(&a, ZXP_WCANCEL, 5000));
    fp_silence(&a);
    fp_init(&b, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fw_ready(&b, "healthy", 1, 0, "f");
    cr_assert(fp_expect(&b, ZXP_TASK, 5000), "a started task was not retried");
    cr_assert_eq(s_task0(&b).seq, 1);
    cr_assert_eq(s_task0(&b).attempt, 2);
    uint8_t res[] = {0x07};
    fw_result_ex(&b, c.id, 1, ZXP_ST_OK, ZXP_POOL_THREAD, true, res, 1);
    /* the client gets its result, and no CANCEL_DONE before it */
    bool result = false;
    while (!result && fp_recv(&c, 5000) >= 0) {
        if (c.in.cmd == ZXP_CANCELLED) {
            cr_assert_neq(zxp_u(zxp_item(&c.in, 0), 1), ZXP_CANCEL_DONE,
                          "a started task was reported cancelled");
        } else if (c.in.cmd == ZXP_RESULT) {
            zxp_result_t r;
            zxp_get_result(&c.in, 0, &r);
            cr_assert_eq(r.seq, 1);
            cr_assert_eq(r.status, ZXP_ST_OK);
            result = true;
        }
    }
    cr_assert(result, "no result for the retried task");
    fp_fini(&a);
    fp_fini(&b);
    fp_fini(&c);
}

/* A worker that re-registers (READY) reporting a task the broker has since
   given to another worker holds a slot for that foreign run; its result
   frees the slot (and is discarded: the task belongs to the other). The
   worker was really given the task (its READY carries that TASK's token):
   cut off long enough to be lost, it comes back while the retry runs. */
Test(broker_faults, a_foreign_task_reported_at_ready_frees_its_slot_with_its_result, .timeout = 30,
     .fini = s_stop)
{
    static const char *const args[] = {"--heartbeat",    "0.1", "--liveness", "3",
                                       "--prefetch-max", "0",   NULL};
    fb_start(&s_cluster, args);
    fp_t a, b, c;
    fp_init(&b, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fp_init(&c, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fw_ready(&b, "stale", 1, 0, "f");
    fc_hello(&c, "client");
    fc_submit(&c, 1, "f");
    cr_assert(fp_expect(&b, ZXP_TASK, 5000));
    zxp_task_t given = s_task0(&b);
    cr_assert(given.token, "every TASK carries an attempt token");
    uint8_t token[1][ZXP_TOKEN_LEN];
    memcpy(token[0], given.token, ZXP_TOKEN_LEN);
    uint32_t attempt[1] = {given.attempt};
    s_started(&b, c.id, 1);
    fp_silence(&b); /* cut off: lost, its task retried on a */
    fp_init(&a, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fw_ready(&a, "owner", 1, 0, "f");
    cr_assert(fp_expect(&a, ZXP_TASK, 5000), "the lost worker's task was not retried");
    cr_assert_eq(s_task0(&a).attempt, 2);
    s_started(&a, c.id, 1);
    /* b is back and says it runs (c, 1) too, in its only slot */
    b.live = true;
    fw_fn_t fns[] = {{"f", ZXP_POOLS_THREAD}};
    const uint8_t(*running)[ZXP_ID_LEN] = (const uint8_t(*)[ZXP_ID_LEN])c.id;
    uint64_t seqs[] = {1};
    fw_ready_tok(&b, "stale", 1, 0, 0, fns, 1, running, seqs,
                 (const uint8_t(*)[ZXP_TOKEN_LEN])token, attempt, 1);
    /* both slots are taken: task 2 waits */
    fc_submit(&c, 2, "f");
    cr_assert_eq(fp_status_total(fc_status(&c), "queued"), 1, "the foreign run holds no slot");
    /* b's result for the foreign run frees its slot: task 2 goes there */
    uint8_t stale[] = {0x05};
    fw_result_ex(&b, c.id, 1, ZXP_ST_OK, ZXP_POOL_THREAD, true, stale, 1);
    cr_assert(fp_expect(&b, ZXP_TASK, 5000), "the foreign run's result freed no slot");
    cr_assert_eq(s_task0(&b).seq, 2);
    /* task 1's result is a's, not b's */
    uint8_t res[] = {0x07};
    fw_result_ex(&a, c.id, 1, ZXP_ST_OK, ZXP_POOL_THREAD, true, res, 1);
    zxp_result_t r;
    cr_assert(fc_expect_result(&c, 1, 5000, &r));
    cr_assert(r.node.len == 5 && memcmp(r.node.ptr, "owner", 5) == 0, "result from %.*s",
              (int)r.node.len, r.node.ptr);
    fp_fini(&a);
    fp_fini(&b);
    fp_fini(&c);
}

/* The "assigned" count of the worker named node in a status map. */
static uint64_t s_assigned(const msgpack_object *st, const char *node)
{
    const msgpack_object *ws = fp_map_get(st, "workers");
    cr_assert(ws && ws->type == MSGPACK_OBJECT_ARRAY, "STATUS has no workers array");
    for (uint32_t i = 0; i < ws->via.array.size; i++) {
        const msgpack_object *w = &ws->via.array.ptr[i];
        const msgpack_object *n = fp_map_get(w, "node");
        if (n && n->type == MSGPACK_OBJECT_STR && n->via.str.size == strlen(node) &&
            memcmp(n->via.str.ptr, node, n->via.str.size) == 0) {
            const msgpack_object *a = fp_map_get(w, "assigned");
            cr_assert(a && a->type == MSGPACK_OBJECT_POSITIVE_INTEGER);
            return a->via.u64;
        }
    }
    cr_assert_fail("STATUS does not list worker %s", node);
    return 0;
}

static bool s_is_draining(const msgpack_object *st, const char *node)
{
    const msgpack_object *ws = fp_map_get(st, "workers");
    for (uint32_t i = 0; ws && i < ws->via.array.size; i++) {
        const msgpack_object *w = &ws->via.array.ptr[i];
        const msgpack_object *n = fp_map_get(w, "node");
        const msgpack_object *d = fp_map_get(w, "draining");
        if (n && d && n->via.str.size == strlen(node) &&
            memcmp(n->via.str.ptr, node, n->via.str.size) == 0) {
            return d->type == MSGPACK_OBJECT_BOOLEAN && d->via.boolean;
        }
    }
    return false;
}

/* A draining worker with free threads gets no task, even while another
   worker offers the function (so the task is not simply waiting for one). */
Test(broker_faults, a_draining_worker_gets_no_new_tasks, .timeout = 30, .fini = s_stop)
{
    /* adaptive prefetch off: the busy worker's window stays its one slot */
    static const char *const args[] = {"--prefetch-max", "0", NULL};
    fb_start(&s_cluster, args);
    fp_t a, b, c;
    fp_init(&a, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fp_init(&c, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fw_ready(&a, "drainer", 4, 0, "f");
    fc_hello(&c, "client");
    zxp_send_empty(a.sock, NULL, ZXP_DRAIN);
    /* DRAIN and SUBMIT travel on different sockets: wait until STATUS shows
       the worker draining */
    bool draining = false;
    int64_t end = zclock_mono() + 5000;
    while (!draining && zclock_mono() < end) {
        draining = s_is_draining(fc_status(&c), "drainer");
    }
    cr_assert(draining, "STATUS never showed the worker draining");
    fp_init(&b, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fw_ready(&b, "busy", 1, 0, "f");
    fc_submit(&c, 1, "f");
    cr_assert(fp_expect(&b, ZXP_TASK, 5000), "the other worker did not get task 1");
    cr_assert_eq(s_task0(&b).seq, 1);
    fc_submit(&c, 2, "f");
    /* STATUS after the submit on the same socket: the broker handled it and
       kept task 2 queued (b is busy); nothing went to the draining worker */
    const msgpack_object *st = fc_status(&c);
    cr_assert_eq(fp_status_total(st, "queued"), 1, "a draining worker got a task");
    cr_assert_eq(s_assigned(st, "drainer"), 0, "a draining worker got a task");
    cr_assert_eq(s_assigned(st, "busy"), 1);
    fp_fini(&a);
    fp_fini(&b);
    fp_fini(&c);
}

/* Sends raw frames (each a string of bytes) as one message. */
static void s_raw(zsock_t *s, int nframes, const void *const *data, const size_t *len)
{
    zmsg_t *m = zmsg_new();
    for (int i = 0; i < nframes; i++) {
        zmsg_addmem(m, data[i], len[i]);
    }
    zmsg_send(&m, s);
}

static void s_garbage(zsock_t *s, uint8_t cmd_ok)
{
    const uint8_t sig[4] = {'Z', 'X', ZXP_VERSION, cmd_ok};
    const uint8_t badsig[4] = {'Q', 'X', 1, cmd_ok};
    const uint8_t badver[4] = {'Z', 'X', 9, cmd_ok};
    const uint8_t badcmd[4] = {'Z', 'X', ZXP_VERSION, 0x7f};
    const uint8_t bomb[5] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    const uint8_t mapbomb[5] = {0xdf, 0xff, 0xff, 0xff, 0xff};
    const uint8_t trunc[3] = {0x93, 0x01, 0xa5};
    const uint8_t shape[2] = {0x91, 0xc0};
    const uint8_t empty[1] = {0x90};
    uint8_t deep[200];
    memset(deep, 0x91, sizeof deep);
    deep[sizeof deep - 1] = 0x01;
    {
        const void *d[] = {badsig, empty};
        size_t l[] = {4, 1};
        s_raw(s, 2, d, l);
    }
    {
        const void *d[] = {badver, empty};
        size_t l[] = {4, 1};
        s_raw(s, 2, d, l);
    }
    {
        const void *d[] = {badcmd, empty};
        size_t l[] = {4, 1};
        s_raw(s, 2, d, l);
    }
    {
        const void *d[] = {sig, bomb};
        size_t l[] = {4, 5};
        s_raw(s, 2, d, l);
    }
    {
        const void *d[] = {sig, mapbomb};
        size_t l[] = {4, 5};
        s_raw(s, 2, d, l);
    }
    {
        const void *d[] = {sig, trunc};
        size_t l[] = {4, 3};
        s_raw(s, 2, d, l);
    }
    {
        const void *d[] = {sig, shape};
        size_t l[] = {4, 2};
        s_raw(s, 2, d, l);
    }
    {
        const void *d[] = {sig, deep};
        size_t l[] = {4, sizeof deep};
        s_raw(s, 2, d, l);
    }
    {
        const void *d[] = {sig};
        size_t l[] = {4};
        s_raw(s, 1, d, l);
    }
    {
        const void *d[] = {"hello"};
        size_t l[] = {5};
        s_raw(s, 1, d, l);
    }
}

static uint64_t s_dropped(fp_t *c)
{
    zxp_send_empty(c->sock, NULL, ZXP_STATUS);
    cr_assert(fp_expect(c, ZXP_STATUS_REPLY, 5000));
    const msgpack_object *st = zxp_o(zxp_item(&c->in, 0), 0);
    uint64_t dropped = 0;
    for (uint32_t i = 0; i < st->via.map.size; i++) {
        const msgpack_object *k = &st->via.map.ptr[i].key;
        if (k->via.str.size == 6 && memcmp(k->via.str.ptr, "totals", 6) == 0) {
            const msgpack_object *t = &st->via.map.ptr[i].val;
            for (uint32_t j = 0; j < t->via.map.size; j++) {
                const msgpack_object *kk = &t->via.map.ptr[j].key;
                if (kk->via.str.size == 16 &&
                    memcmp(kk->via.str.ptr, "dropped_messages", 16) == 0) {
                    dropped = t->via.map.ptr[j].val.via.u64;
                }
            }
        }
    }
    return dropped;
}

Test(broker_faults, drops_garbage_and_keeps_serving, .timeout = 30, .fini = s_stop)
{
    fb_start(&s_cluster, NULL);
    zsock_t *gc = zsock_new(ZMQ_DEALER), *gw = zsock_new(ZMQ_DEALER);
    zsock_connect(gc, "%s", s_cluster.client_ep);
    zsock_connect(gw, "%s", s_cluster.worker_ep);
    s_garbage(gc, ZXP_SUBMIT);
    s_garbage(gw, ZXP_WRESULT);
    /* a worker command on the client endpoint, and the reverse */
    zxp_send_empty(gc, NULL, ZXP_DRAIN);
    zxp_send_empty(gw, NULL, ZXP_STATUS);

    fp_t w, c;
    fp_init(&w, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fp_init(&c, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fw_ready(&w, "node-g", 2, 0, "echo");
    fc_hello(&c, "real");
    /* a result for a task this worker does not hold is dropped too */
    uint8_t res[] = {0x01};
    fw_result_ex(&w, c.id, 999, ZXP_ST_OK, ZXP_POOL_THREAD, true, res, 1);
    fc_submit(&c, 1, "echo");
    cr_assert(fp_expect(&w, ZXP_TASK, 5000), "the broker stopped serving");
    fw_answer_all(&w);
    cr_assert(fp_expect(&c, ZXP_RESULT, 5000));
    cr_assert_eq(zxp_u(zxp_item(&c.in, 0), 0), 1, "only the real task's result arrives");
    /* the garbage came on other connections: poll until all of it is counted */
    uint64_t dropped = 0;
    int64_t end = zclock_mono() + 5000;
    while (dropped < 23 && zclock_mono() < end) {
        dropped = s_dropped(&c);
    }
    cr_assert_geq(dropped, 23, "garbage messages are counted (%lu)", (unsigned long)dropped);
    cr_assert(kill(s_cluster.broker, 0) == 0, "the broker died");
    zsock_destroy(&gc);
    zsock_destroy(&gw);
    fp_fini(&w);
    fp_fini(&c);
}

Test(broker_faults, resets_peers_it_does_not_know, .timeout = 30, .fini = s_stop)
{
    fb_start(&s_cluster, NULL);
    fp_t w, c;
    fp_init(&w, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fp_init(&c, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fc_submit(&c, 1, "f");
    cr_assert(fp_expect(&c, ZXP_RESET, 5000), "a client without HELLO must get RESET");
    zxp_send_credit(w.sock, ZXP_POOL_THREAD, 1);
    cr_assert(fp_expect(&w, ZXP_RESET, 5000), "a worker without READY must get RESET");
    fp_fini(&w);
    fp_fini(&c);
}

Test(broker_faults, a_client_that_leaves_loses_its_queued_tasks, .timeout = 30, .fini = s_stop)
{
    /* the announced window for every function (adaptive prefetch sends an
       unknown function's tasks to free slots only) */
    static const char *const args[] = {"--prefetch-target-ms", "0", NULL};
    fb_start(&s_cluster, args);
    fp_t w, c, c2;
    fp_init(&w, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fp_init(&c, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fw_ready(&w, "node-l", 1, 1, "f"); /* one slot + one prefetch */
    fc_hello(&c, "leaver");
    for (uint64_t s = 1; s <= 5; s++) {
        fc_submit(&c, s, "f");
    }
    size_t got = 0;
    while (got < 2 && fp_expect(&w, ZXP_TASK, 5000)) {
        got += w.in.count;
    }
    cr_assert_eq(got, 2);
    /* the worker starts one of them; the other is prefetched */
    zxp_out_t out;
    zxp_out_init(&out);
    zxp_out_begin(&out, ZXP_WSTARTED);
    zxp_put_wstarted(&out, c.id, 1, 1, ZXP_POOL_THREAD);
    zxp_out_send(&out, w.sock, NULL);
    zxp_out_fini(&out);
    cr_assert(fp_expect(&c, ZXP_STARTED, 5000));
    zxp_send_empty(c.sock, NULL, ZXP_BYE);
    fp_silence(&c); /* gone: no heartbeats (which would earn a RESET) */
    /* the prefetched, not started task is withdrawn */
    cr_assert(fp_expect(&w, ZXP_WCANCEL, 5000), "no WCANCEL for the prefetched task");
    const msgpack_object *it = zxp_item(&w.in, 0);
    cr_assert_eq(zxp_u(it, 1), 2);
    cr_assert_eq(zxp_b(it, 2), false, "withdrawing never terminates");
    fp_init(&c2, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fc_hello(&c2, "observer");
    zxp_send_empty(c2.sock, NULL, ZXP_STATUS);
    cr_assert(fp_expect(&c2, ZXP_STATUS_REPLY, 5000));
    const msgpack_object *st = zxp_o(zxp_item(&c2.in, 0), 0);
    const msgpack_object *queues = fp_map_get(st, "queues");
    cr_assert(queues && queues->type == MSGPACK_OBJECT_ARRAY, "STATUS has no queues array");
    cr_assert_eq(queues->via.array.size, 0, "queued tasks remain");
    cr_assert_eq(fp_status_total(st, "queued"), 0, "queued tasks remain");
    /* its running task's result is discarded: nothing reaches anyone */
    uint8_t res[] = {0x01};
    fw_result_ex(&w, c.id, 1, ZXP_ST_OK, ZXP_POOL_THREAD, true, res, 1);
    cr_assert_eq(fp_quiet(&c, 300), -1);
    fp_fini(&w);
    fp_fini(&c);
    fp_fini(&c2);
}

Test(broker_faults, attaches_tasks_workers_report_after_a_broker_restart, .timeout = 30,
     .fini = s_stop)
{
    fb_start(&s_cluster, NULL);
    fp_t w, c;
    fp_init(&w, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fp_init(&c, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    /* a worker that was running (c, 1) and (c, 2) when the old broker died */
    fw_fn_t fns[] = {{"f", ZXP_POOLS_THREAD}};
    const uint8_t sessions[2][ZXP_ID_LEN] = {{0}, {0}};
    uint8_t(*ss)[ZXP_ID_LEN] = (uint8_t(*)[ZXP_ID_LEN])sessions;
    memcpy(ss[0], c.id, ZXP_ID_LEN);
    memcpy(ss[1], c.id, ZXP_ID_LEN);
    uint64_t seqs[2] = {1, 2};
    fw_ready_ex(&w, "survivor", 2, 0, 0, fns, 1, (const uint8_t(*)[ZXP_ID_LEN])ss, seqs, 2);
    /* both slots are taken: a new task must wait */
    fc_hello(&c, "returning");
    fc_submit(&c, 3, "f");
    cr_assert_eq(fp_status_total(fc_status(&c), "queued"), 1,
                 "reported running tasks must hold their slots");
    /* task 1 finishes before its client re-sends it: the result is kept */
    uint8_t res1[] = {0xa1, 'a'};
    fw_result_ex(&w, c.id, 1, ZXP_ST_OK, ZXP_POOL_THREAD, true, res1, sizeof res1);
    cr_assert(fp_expect(&w, ZXP_TASK, 5000), "the freed slot takes task 3");
    cr_assert_eq(s_task0(&w).seq, 3);
    /* the client re-sends its unresolved tasks 1 and 2 */
    fc_submit(&c, 1, "f");
    fc_submit(&c, 2, "f");
    cr_assert(fp_expect(&c, ZXP_RESULT, 5000), "the kept result was not delivered");
    zxp_result_t r;
    zxp_get_result(&c.in, 0, &r);
    cr_assert_eq(r.seq, 1);
    cr_assert(r.node.len == 8 && memcmp(r.node.ptr, "survivor", 8) == 0);
    zframe_t *p = zxp_payload_take(&c.in);
    cr_assert(zframe_size(p) == sizeof res1 && memcmp(zframe_data(p), res1, sizeof res1) == 0);
    zframe_destroy(&p);
    /* task 2 is attached, not queued again: no duplicate dispatch before
       the barrier's WCANCEL */
    cr_assert_eq(fp_barrier(&c, &w, 2), ZXP_WCANCEL, "a re-sent running task was dispatched again");
    uint8_t res2[] = {0x02};
    fw_result_ex(&w, c.id, 2, ZXP_ST_OK, ZXP_POOL_THREAD, true, res2, 1);
    bool got2 = false;
    while (!got2 && fp_recv(&c, 5000) >= 0) {
        if (c.in.cmd == ZXP_RESULT && zxp_u(zxp_item(&c.in, 0), 0) == 2) {
            got2 = true;
        }
    }
    cr_assert(got2, "the attached task's result was not relayed");
    fp_fini(&w);
    fp_fini(&c);
}

Test(broker_faults, says_shutdown_and_exits_zero_on_sigterm, .timeout = 30, .fini = s_stop)
{
    fb_start(&s_cluster, NULL);
    fp_t w, c;
    fp_init(&w, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fp_init(&c, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fw_ready(&w, "node-t", 1, 0, "f");
    fc_hello(&c, "client");
    fc_submit(&c, 1, "f");
    fc_submit(&c, 2, "f");
    cr_assert(fp_expect(&w, ZXP_TASK, 5000));
    kill(s_cluster.broker, SIGTERM);
    cr_assert(fp_expect(&w, ZXP_SHUTDOWN, 5000), "worker got no SHUTDOWN");
    cr_assert(fp_expect(&c, ZXP_SHUTDOWN, 5000), "client got no SHUTDOWN");
    int status = 0;
    cr_assert(zxt_wait_exit(s_cluster.broker, 5, &status));
    s_cluster.broker = 0;
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status %d", status);
    fp_fini(&w);
    fp_fini(&c);
}

static int s_run_broker(const char *const args[])
{
    char *bin = zxt_bin("zexec-broker");
    char *argv[16] = {bin};
    int n = 1;
    for (int i = 0; args[i] && n < 15; i++) {
        argv[n++] = (char *)args[i];
    }
    argv[n] = NULL;
    pid_t pid = zxt_spawn(argv);
    free(bin);
    int status = -1;
    cr_assert(zxt_wait_exit(pid, 10, &status), "zexec-broker did not exit");
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

Test(broker_faults, rejects_bad_flags_with_exit_status_2, .timeout = 30)
{
    const char *help[] = {"--help", NULL};
    cr_assert_eq(s_run_broker(help), 0);
    const char *bad[][3] = {
        {"--no-such-flag", NULL, NULL}, {"--heartbeat", "fast", NULL},
        {"--liveness", "0", NULL},      {"--liveness", "3x", NULL},
        {"--max-queued", "-1", NULL},   {"--max-queued-bytes", "12Q", NULL},
        {"--nofunc-grace", "-2", NULL}, {"--clients", "nowhere", NULL},
        {"--retries", "101", NULL},     {"stray-argument", NULL, NULL},
        {"--workers", NULL, NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(s_run_broker(bad[i]), 2, "'%s %s' must exit 2", bad[i][0],
                     bad[i][1] ? bad[i][1] : "");
    }
}
