/*  test_broker.c - zexec-broker's scheduling, driven by fake clients and
    workers (raw DEALER sockets, tests/broker_peers.h) against the real
    binary: relay, credit, priority and fair turns, routing, cancel, no-worker
    grace, duplicates, quotas, STATUS, answers at once while messages cross
    the broker's sends.
*/
#include "broker_peers.h"

static zxt_cluster_t s_cluster;

static void s_stop(void)
{
    zxt_cluster_stop(&s_cluster);
}

Test(broker, relays_a_task_and_its_result_with_the_same_bytes, .timeout = 30, .fini = s_stop)
{
    fb_start(&s_cluster, NULL);
    fp_t w, c;
    fp_init(&w, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fp_init(&c, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fw_ready(&w, "node-a", 2, 0, "echo");
    fc_hello(&c, "tester");

    uint8_t args[3000];
    for (size_t i = 0; i < sizeof args; i++) {
        args[i] = (uint8_t)(i * 7);
    }
    fc_submit_ex(&c, 1, "echo", ZXP_POOL_ANY, 0, 0, args, sizeof args);
    cr_assert(fp_expect(&w, ZXP_TASK, 5000), "worker got no TASK");
    cr_assert_eq(w.in.count, 1);
    zxp_task_t t;
    zxp_get_task(&w.in, 0, &t);
    cr_assert_eq(t.seq, 1);
    cr_assert(memcmp(t.session, c.id, ZXP_ID_LEN) == 0);
    cr_assert(t.fn.len == 4 && memcmp(t.fn.ptr, "echo", 4) == 0);
    cr_assert_eq(t.pool, ZXP_POOL_THREAD, "ANY must become a concrete pool");
    cr_assert_eq(t.attempt, 1);
    zframe_t *p = zxp_payload_take(&w.in);
    cr_assert_eq(zframe_size(p), sizeof args);
    cr_assert(memcmp(zframe_data(p), args, sizeof args) == 0);
    zframe_destroy(&p);

    uint8_t res[] = {0xa2, 'o', 'k'};
    fw_result_ex(&w, c.id, 1, ZXP_ST_OK, ZXP_POOL_THREAD, true, res, sizeof res);
    cr_assert(fp_expect(&c, ZXP_RESULT, 5000), "client got no RESULT");
    zxp_result_t r;
    zxp_get_result(&c.in, 0, &r);
    cr_assert_eq(r.seq, 1);
    cr_assert_eq(r.status, ZXP_ST_OK);
    cr_assert(r.node.len == 6 && memcmp(r.node.ptr, "node-a", 6) == 0);
    cr_assert_eq(r.attempts, 1);
    cr_assert_eq(r.pid, 4242);
    p = zxp_payload_take(&c.in);
    cr_assert(zframe_size(p) == sizeof res && memcmp(zframe_data(p), res, sizeof res) == 0);
    zframe_destroy(&p);
    fp_fini(&w);
    fp_fini(&c);
}

Test(broker, relays_started_to_the_client, .timeout = 30, .fini = s_stop)
{
    fb_start(&s_cluster, NULL);
    fp_t w, c;
    fp_init(&w, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fp_init(&c, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fw_ready(&w, "node-s", 1, 0, "echo");
    fc_hello(&c, "tester");
    fc_submit(&c, 9, "echo");
    cr_assert(fp_expect(&w, ZXP_TASK, 5000));
    zxp_out_t out;
    zxp_out_init(&out);
    zxp_out_begin(&out, ZXP_WSTARTED);
    zxp_put_wstarted(&out, c.id, 9, 777, ZXP_POOL_THREAD);
    zxp_out_send(&out, w.sock, NULL);
    zxp_out_fini(&out);
    cr_assert(fp_expect(&c, ZXP_STARTED, 5000));
    const msgpack_object *it = zxp_item(&c.in, 0);
    cr_assert_eq(zxp_u(it, 0), 9);
    cr_assert_eq(zxp_u(it, 2), 777);
    zxp_str_t node = zxp_s(it, 1);
    cr_assert(node.len == 6 && memcmp(node.ptr, "node-s", 6) == 0);
    fp_fini(&w);
    fp_fini(&c);
}

Test(broker, never_sends_more_than_slots_plus_prefetch, .timeout = 30, .fini = s_stop)
{
    /* adaptive prefetch off: every function gets the window the worker
       announces (with it on, an unknown function gets its free slots only) */
    static const char *const args[] = {"--prefetch-target-ms", "0", NULL};
    fb_start(&s_cluster, args);
    fp_t w, c;
    fp_init(&w, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fp_init(&c, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fw_ready(&w, "node-c", 2, 1, "echo"); /* 2 threads + 1 prefetch = 3 */
    fc_hello(&c, "tester");
    for (uint64_t s = 1; s <= 10; s++) {
        fc_submit(&c, s, "echo");
    }
    size_t got = 0;
    uint64_t seqs[16];
    while (got < 3 && fp_expect(&w, ZXP_TASK, 5000)) {
        for (size_t i = 0; i < w.in.count; i++) {
            zxp_task_t t;
            zxp_get_task(&w.in, i, &t);
            seqs[got++] = t.seq;
        }
    }
    cr_assert_eq(got, 3, "expected exactly 3 tasks in flight, got %zu", got);
    /* all ten submits came before the barrier's cancel */
    cr_assert_eq(fp_barrier(&c, &w, seqs[0]), ZXP_WCANCEL,
                 "the broker sent more than the worker's credit");
    /* one result frees one slot: exactly one more task */
    uint8_t res[] = {0x01};
    fw_result_ex(&w, c.id, seqs[0], ZXP_ST_OK, ZXP_POOL_THREAD, true, res, 1);
    cr_assert(fp_expect(&w, ZXP_TASK, 5000));
    cr_assert_eq(w.in.count, 1);
    cr_assert(fc_expect_result(&c, seqs[0], 5000, NULL));
    cr_assert_eq(fp_barrier(&c, &w, seqs[1]), ZXP_WCANCEL, "one result, two tasks");
    /* a result that keeps its slot (thread past its limit) frees nothing... */
    fw_result_ex(&w, c.id, seqs[1], ZXP_ST_TIMELIMIT, ZXP_POOL_THREAD, false, res, 1);
    cr_assert(fc_expect_result(&c, seqs[1], 5000, NULL));
    cr_assert_eq(fp_barrier(&c, &w, seqs[2]), ZXP_WCANCEL, "slot_freed=false must keep the slot");
    /* ...until CREDIT */
    zxp_send_credit(w.sock, ZXP_POOL_THREAD, 1);
    cr_assert(fp_expect(&w, ZXP_TASK, 5000));
    cr_assert_eq(w.in.count, 1);
    fp_fini(&w);
    fp_fini(&c);
}

/* Collects the seqs of TASKs until n arrived, answering each at once. */
static size_t s_collect(fp_t *w, uint64_t *seqs, size_t n)
{
    size_t got = 0;
    while (got < n && fp_expect(w, ZXP_TASK, 5000)) {
        for (size_t i = 0; i < w->in.count && got < n; i++) {
            zxp_task_t t;
            zxp_get_task(&w->in, i, &t);
            seqs[got++] = t.seq;
        }
        fw_answer_all(w);
    }
    return got;
}

Test(broker, serves_higher_priority_first_then_takes_turns_between_clients, .timeout = 30,
     .fini = s_stop)
{
    fb_start(&s_cluster, NULL);
    fp_t w, a, b;
    fp_init(&w, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fp_init(&a, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fp_init(&b, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fc_hello(&a, "alice");
    fc_hello(&b, "bob");
    uint8_t args[] = {0x90};
    /* queue everything before any worker exists, so order is the broker's */
    for (uint64_t s = 1; s <= 4; s++) {
        fc_submit_ex(&a, s, "f", ZXP_POOL_ANY, 0, 0, args, 1); /* a: 1..4 prio 0 */
    }
    for (uint64_t s = 101; s <= 104; s++) {
        fc_submit_ex(&b, s, "f", ZXP_POOL_ANY, 0, 0, args, 1); /* b: 101..104 prio 0 */
    }
    fc_submit_ex(&b, 200, "f", ZXP_POOL_ANY, 5, 0, args, 1);  /* high priority, last */
    fc_submit_ex(&a, 300, "f", ZXP_POOL_ANY, -5, 0, args, 1); /* low priority */
    /* a STATUS round trip proves the broker has read all of them */
    zxp_send_empty(a.sock, NULL, ZXP_STATUS);
    cr_assert(fp_expect(&a, ZXP_STATUS_REPLY, 5000));
    zxp_send_empty(b.sock, NULL, ZXP_STATUS);
    cr_assert(fp_expect(&b, ZXP_STATUS_REPLY, 5000));

    fw_ready(&w, "node-p", 1, 0, "f"); /* one slot: strictly one at a time */
    uint64_t seqs[10];
    cr_assert_eq(s_collect(&w, seqs, 10), 10);
    cr_assert_eq(seqs[0], 200, "highest priority first (got %lu)", (unsigned long)seqs[0]);
    /* then alternate between the clients, each in FIFO order */
    uint64_t na = 1, nb = 101;
    for (int i = 1; i <= 8; i++) {
        bool from_a = seqs[i] < 100;
        cr_assert_eq(seqs[i], from_a ? na : nb, "FIFO within a client at position %d", i);
        if (from_a) {
            na++;
        } else {
            nb++;
        }
        if (i > 1) {
            cr_assert_neq(seqs[i] < 100, seqs[i - 1] < 100, "clients must take turns (pos %d)", i);
        }
    }
    cr_assert_eq(seqs[9], 300, "lowest priority last");
    fp_fini(&w);
    fp_fini(&a);
    fp_fini(&b);
}

Test(broker, routes_by_function_and_pool, .timeout = 30, .fini = s_stop)
{
    fb_start(&s_cluster, NULL);
    fp_t wt, wp, c;
    fp_init(&wt, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fp_init(&wp, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fp_init(&c, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fw_fn_t tf[] = {{"alpha", ZXP_POOLS_THREAD}, {"both", ZXP_POOLS_THREAD | ZXP_POOLS_PROCESS}};
    fw_fn_t pf[] = {{"beta", ZXP_POOLS_PROCESS}, {"both", ZXP_POOLS_THREAD | ZXP_POOLS_PROCESS}};
    fw_ready_ex(&wt, "threads-only", 4, 0, 0, tf, 2, NULL, NULL, 0);
    fw_ready_ex(&wp, "procs-only", 0, 4, 0, pf, 2, NULL, NULL, 0);
    fc_hello(&c, "router");
    uint8_t args[] = {0x90};
    fc_submit_ex(&c, 1, "alpha", ZXP_POOL_ANY, 0, 0, args, 1);
    cr_assert(fp_expect(&wt, ZXP_TASK, 5000));
    zxp_task_t t;
    zxp_get_task(&wt.in, 0, &t);
    cr_assert(t.seq == 1 && t.pool == ZXP_POOL_THREAD);
    fc_submit_ex(&c, 2, "beta", ZXP_POOL_ANY, 0, 0, args, 1);
    cr_assert(fp_expect(&wp, ZXP_TASK, 5000));
    zxp_get_task(&wp.in, 0, &t);
    cr_assert(t.seq == 2 && t.pool == ZXP_POOL_PROCESS);
    fc_submit_ex(&c, 3, "both", ZXP_POOL_PROCESS, 0, 0, args, 1);
    cr_assert(fp_expect(&wp, ZXP_TASK, 5000));
    zxp_get_task(&wp.in, 0, &t);
    cr_assert(t.seq == 3 && t.pool == ZXP_POOL_PROCESS);
    fc_submit_ex(&c, 4, "both", ZXP_POOL_THREAD, 0, 0, args, 1);
    cr_assert(fp_expect(&wt, ZXP_TASK, 5000));
    zxp_get_task(&wt.in, 0, &t);
    cr_assert(t.seq == 4 && t.pool == ZXP_POOL_THREAD);
    /* alpha is offered only in thread pools: asking for a process fails clearly */
    fc_submit_ex(&c, 5, "alpha", ZXP_POOL_PROCESS, 0, 0, args, 1);
    cr_assert(fp_expect(&c, ZXP_RESULT, 5000));
    zxp_result_t r;
    zxp_get_result(&c.in, 0, &r);
    cr_assert_eq(r.seq, 5);
    cr_assert_eq(r.status, ZXP_ST_NOTALLOWED);
    zframe_t *f = zxp_payload_take(&c.in);
    char type[64], msg[512];
    fp_error_of(f, type, sizeof type, msg, sizeof msg);
    zframe_destroy(&f);
    cr_assert_str_eq(type, "NotAllowedError");
    cr_assert(strstr(msg, "alpha") && strstr(msg, "process"), "message: %s", msg);
    /* a later alpha task for any pool is the next thing the thread worker
       gets: the refused one was not sent there before it */
    fc_submit_ex(&c, 6, "alpha", ZXP_POOL_ANY, 0, 0, args, 1);
    cr_assert(fp_expect(&wt, ZXP_TASK, 5000));
    cr_assert_eq(fw_task_seq(&wt), 6);
    fp_fini(&wt);
    fp_fini(&wp);
    fp_fini(&c);
}

Test(broker, cancels_a_queued_task_so_it_never_runs, .timeout = 30, .fini = s_stop)
{
    fb_start(&s_cluster, NULL);
    fp_t w, c;
    fp_init(&w, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fp_init(&c, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fw_ready(&w, "node-x", 1, 0, "f");
    fc_hello(&c, "canceller");
    fc_submit(&c, 1, "f"); /* takes the only slot */
    fc_submit(&c, 2, "f"); /* queued */
    cr_assert(fp_expect(&w, ZXP_TASK, 5000));
    fc_cancel(&c, 2, false);
    cr_assert(fp_expect(&c, ZXP_CANCELLED, 5000));
    const msgpack_object *it = zxp_item(&c.in, 0);
    cr_assert_eq(zxp_u(it, 0), 2);
    cr_assert_eq(zxp_u(it, 1), ZXP_CANCEL_DONE);
    /* task 1 is on the worker: the broker asks it, and relays its answer */
    fc_cancel(&c, 1, false);
    cr_assert(fp_expect(&w, ZXP_WCANCEL, 5000));
    zxp_out_t out;
    zxp_out_init(&out);
    zxp_out_begin(&out, ZXP_WCANCELLED);
    zxp_put_wcancelled(&out, c.id, 1, ZXP_CANCEL_REFUSED);
    zxp_out_send(&out, w.sock, NULL);
    zxp_out_fini(&out);
    cr_assert(fp_expect(&c, ZXP_CANCELLED, 5000));
    it = zxp_item(&c.in, 0);
    cr_assert_eq(zxp_u(it, 0), 1);
    cr_assert_eq(zxp_u(it, 1), ZXP_CANCEL_REFUSED);
    /* finishing task 1 frees the slot; task 2 must not be dispatched */
    uint8_t res[] = {0x01};
    fw_result_ex(&w, c.id, 1, ZXP_ST_OK, ZXP_POOL_THREAD, true, res, 1);
    cr_assert(fp_expect(&c, ZXP_RESULT, 5000));
    /* the free slot takes the next task submitted, not the cancelled one */
    fc_submit(&c, 3, "f");
    cr_assert(fp_expect(&w, ZXP_TASK, 5000));
    cr_assert_eq(fw_task_seq(&w), 3, "a cancelled task was dispatched");
    /* unknown seq: refused */
    fc_cancel(&c, 77, false);
    cr_assert(fp_expect(&c, ZXP_CANCELLED, 5000));
    cr_assert_eq(zxp_u(zxp_item(&c.in, 0), 1), ZXP_CANCEL_REFUSED);
    fp_fini(&w);
    fp_fini(&c);
}

Test(broker, fails_an_unknown_function_after_the_grace_period, .timeout = 30, .fini = s_stop)
{
    const char *extra[] = {"--nofunc-grace", "0.3", NULL};
    fb_start(&s_cluster, extra);
    fp_t c;
    fp_init(&c, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fc_hello(&c, "lonely");
    int64_t t0 = zclock_mono();
    fc_submit(&c, 1, "nobody_has_this");
    cr_assert(fp_expect(&c, ZXP_RESULT, 5000));
    cr_assert_geq(zclock_mono() - t0, 250, "failed before the grace period");
    zxp_result_t r;
    zxp_get_result(&c.in, 0, &r);
    cr_assert_eq(r.status, ZXP_ST_NOFUNC);
    zframe_t *f = zxp_payload_take(&c.in);
    char type[64], msg[512];
    fp_error_of(f, type, sizeof type, msg, sizeof msg);
    zframe_destroy(&f);
    cr_assert_str_eq(type, "NoWorkerError");
    cr_assert_str_eq(msg, "no worker offers function 'nobody_has_this'");
    fp_fini(&c);
}

Test(broker, a_worker_arriving_within_the_grace_period_takes_the_task, .timeout = 30,
     .fini = s_stop)
{
    const char *extra[] = {"--nofunc-grace", "5", NULL};
    fb_start(&s_cluster, extra);
    fp_t w, c;
    fp_init(&c, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fc_hello(&c, "patient");
    fc_submit(&c, 1, "late");
    fp_init(&w, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fw_ready(&w, "late-node", 1, 0, "late");
    cr_assert(fp_expect(&w, ZXP_TASK, 5000));
    fp_fini(&w);
    fp_fini(&c);
}

Test(broker, ignores_a_duplicate_submit, .timeout = 30, .fini = s_stop)
{
    fb_start(&s_cluster, NULL);
    fp_t w, c;
    fp_init(&w, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fp_init(&c, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fw_ready(&w, "node-d", 4, 0, "f");
    fc_hello(&c, "twice");
    fc_submit(&c, 5, "f");
    fc_submit(&c, 5, "f");
    cr_assert(fp_expect(&w, ZXP_TASK, 5000));
    cr_assert_eq(fw_task_seq(&w), 5);
    /* the next task submitted is the next one dispatched (4 free threads) */
    fc_submit(&c, 6, "f");
    cr_assert(fp_expect(&w, ZXP_TASK, 5000));
    cr_assert_eq(fw_task_seq(&w), 6, "a duplicate (session, seq) was dispatched");
    fp_fini(&w);
    fp_fini(&c);
}

Test(broker, rejects_tasks_over_the_client_quota, .timeout = 30, .fini = s_stop)
{
    const char *extra[] = {"--max-queued", "3", NULL};
    fb_start(&s_cluster, extra);
    fp_t c;
    fp_init(&c, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fc_hello(&c, "greedy");
    for (uint64_t s = 1; s <= 4; s++) {
        fc_submit(&c, s, "f"); /* no worker: all stay queued */
    }
    cr_assert(fp_expect(&c, ZXP_RESULT, 5000));
    zxp_result_t r;
    zxp_get_result(&c.in, 0, &r);
    cr_assert_eq(r.seq, 4);
    cr_assert_eq(r.status, ZXP_ST_REJECTED);
    zframe_t *f = zxp_payload_take(&c.in);
    char type[64], msg[512];
    fp_error_of(f, type, sizeof type, msg, sizeof msg);
    zframe_destroy(&f);
    cr_assert_str_eq(type, "QuotaError");
    cr_assert(strstr(msg, "--max-queued"), "message names the limit: %s", msg);
    fp_fini(&c);
}

Test(broker, rejects_tasks_over_the_byte_quota, .timeout = 30, .fini = s_stop)
{
    const char *extra[] = {"--max-queued-bytes", "1K", NULL};
    fb_start(&s_cluster, extra);
    fp_t c;
    fp_init(&c, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fc_hello(&c, "heavy");
    uint8_t big[700] = {0x90};
    fc_submit_ex(&c, 1, "f", ZXP_POOL_ANY, 0, 0, big, sizeof big);
    fc_submit_ex(&c, 2, "f", ZXP_POOL_ANY, 0, 0, big, sizeof big);
    cr_assert(fp_expect(&c, ZXP_RESULT, 5000));
    zxp_result_t r;
    zxp_get_result(&c.in, 0, &r);
    cr_assert_eq(r.seq, 2);
    cr_assert_eq(r.status, ZXP_ST_REJECTED);
    zframe_t *f = zxp_payload_take(&c.in);
    char type[64], msg[512];
    fp_error_of(f, type, sizeof type, msg, sizeof msg);
    zframe_destroy(&f);
    cr_assert(strstr(msg, "--max-queued-bytes"), "message names the limit: %s", msg);
    fp_fini(&c);
}

/* Each distinct function a client has tasks queued under costs the broker
   a function record, a queue and a FIFO: counted against --max-queued-bytes
   (beyond the first), so a flood of distinct names is refused once the
   bound is reached, and the broker keeps serving the client and others. */
Test(broker, distinct_function_names_count_against_the_byte_quota, .timeout = 30, .fini = s_stop)
{
    const char *extra[] = {"--max-queued-bytes", "64K", NULL};
    fb_start(&s_cluster, extra);
    fp_t c, w;
    fp_init(&c, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fp_init(&w, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fc_hello(&c, "names");
    /* a worker that offers none of them: the tasks wait (no NoWorkerError
       before the grace) */
    fw_ready(&w, "node-a", 1, 0, "other");
    enum { N = 200 };
    for (uint64_t i = 1; i <= N; i++) {
        char fn[32];
        snprintf(fn, sizeof fn, "u%" PRIu64, i);
        fc_submit_ex(&c, i, fn, ZXP_POOL_ANY, 0, 0, NULL, 0);
    }
    /* 2048: ZXB_FIFO_CHARGE (broker/zxb.h); the first function is free */
    uint64_t fit = 1 + (64 * 1024) / 2048;
    uint64_t refused = 0, first = 0;
    while (refused < N - fit) {
        cr_assert(fp_expect(&c, ZXP_RESULT, 5000), "only %" PRIu64 " refused", refused);
        for (size_t i = 0; i < c.in.count; i++) {
            zxp_result_t r;
            zxp_get_result(&c.in, i, &r);
            cr_assert_eq(r.status, ZXP_ST_REJECTED, "seq %" PRIu64, r.seq);
            cr_assert_gt(r.seq, fit, "seq %" PRIu64 " refused within the bound", r.seq);
            zframe_t *f = zxp_payload_take(&c.in);
            char type[64], msg[512];
            fp_error_of(f, type, sizeof type, msg, sizeof msg);
            zframe_destroy(&f);
            cr_assert_str_eq(type, "QuotaError");
            cr_assert(strstr(msg, "--max-queued-bytes"), "message names the limit: %s", msg);
            first = first ? first : r.seq;
            refused++;
        }
    }
    cr_assert_eq(first, fit + 1);
    /* more of a function it has queued still fit; the broker answers */
    fc_submit_ex(&c, N + 1, "u1", ZXP_POOL_ANY, 0, 0, NULL, 0);
    const msgpack_object *st = fc_status(&c);
    cr_assert_eq(fp_status_total(st, "queued"), fit + 1);
    cr_assert_eq(fp_status_total(st, "rejected"), N - fit);
    /* another client has a quota of its own */
    fp_t d;
    fp_init(&d, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fc_hello(&d, "other-client");
    fc_submit_ex(&d, 1, "v1", ZXP_POOL_ANY, 0, 0, NULL, 0);
    fc_submit_ex(&d, 2, "v2", ZXP_POOL_ANY, 0, 0, NULL, 0);
    st = fc_status(&d);
    cr_assert_eq(fp_status_total(st, "queued"), fit + 3);
    fp_fini(&d);
    fp_fini(&w);
    fp_fini(&c);
}

/* Looks up key in a msgpack map. */
static const msgpack_object *s_get(const msgpack_object *map, const char *key)
{
    cr_assert_eq(map->type, MSGPACK_OBJECT_MAP);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(key) &&
            memcmp(k->via.str.ptr, key, k->via.str.size) == 0) {
            return &map->via.map.ptr[i].val;
        }
    }
    cr_assert_fail("no key '%s' in the status map", key);
    return NULL;
}

Test(broker, answers_status_with_broker_workers_queues_and_totals, .timeout = 30, .fini = s_stop)
{
    fb_start(&s_cluster, NULL);
    fp_t w, c;
    fp_init(&w, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fp_init(&c, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fw_ready(&w, "node-status", 1, 0, "f");
    fc_hello(&c, "watcher");
    fc_submit(&c, 1, "f");
    fc_submit(&c, 2, "f");
    fc_submit(&c, 3, "g");
    cr_assert(fp_expect(&w, ZXP_TASK, 5000));
    zxp_send_empty(c.sock, NULL, ZXP_STATUS);
    cr_assert(fp_expect(&c, ZXP_STATUS_REPLY, 5000));
    const msgpack_object *st = zxp_o(zxp_item(&c.in, 0), 0);
    const msgpack_object *b = s_get(st, "broker");
    cr_assert_eq(s_get(b, "id")->via.str.size, 32);
    cr_assert_eq(s_get(b, "insecure")->type, MSGPACK_OBJECT_BOOLEAN);
    s_get(b, "version");
    s_get(b, "uptime_s");
    cr_assert_eq(s_get(b, "clients_endpoint")->via.str.size, strlen(s_cluster.client_ep));
    s_get(b, "workers_endpoint");
    const msgpack_object *ws = s_get(st, "workers");
    cr_assert_eq(ws->type, MSGPACK_OBJECT_ARRAY);
    cr_assert_eq(ws->via.array.size, 1);
    const msgpack_object *w0 = &ws->via.array.ptr[0];
    const msgpack_object *node = s_get(w0, "node");
    cr_assert(node->via.str.size == 11 && memcmp(node->via.str.ptr, "node-status", 11) == 0);
    cr_assert_eq(s_get(w0, "threads")->via.u64, 1);
    cr_assert_eq(s_get(w0, "free_thread")->via.u64, 0);
    cr_assert_eq(s_get(w0, "free_process")->via.u64, 0);
    cr_assert_eq(s_get(w0, "assigned")->via.u64, 1);
    const char *keys[] = {
        "id", "pid", "procs", "running", "done", "failed", "last_heartbeat_ms_ago", "functions"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        s_get(w0, keys[i]);
    }
    const msgpack_object *qs = s_get(st, "queues");
    cr_assert_eq(qs->type, MSGPACK_OBJECT_ARRAY);
    uint64_t depth_f = 0, depth_g = 0;
    for (uint32_t i = 0; i < qs->via.array.size; i++) {
        const msgpack_object *q = &qs->via.array.ptr[i];
        const msgpack_object *fn = s_get(q, "function");
        uint64_t d = s_get(q, "depth")->via.u64;
        s_get(q, "client");
        if (fn->via.str.size == 1 && fn->via.str.ptr[0] == 'f') {
            depth_f += d;
        } else if (fn->via.str.size == 1 && fn->via.str.ptr[0] == 'g') {
            depth_g += d;
        }
    }
    cr_assert_eq(depth_f, 1);
    cr_assert_eq(depth_g, 1);
    const msgpack_object *tot = s_get(st, "totals");
    cr_assert_eq(s_get(tot, "submitted")->via.u64, 3);
    cr_assert_eq(s_get(tot, "queued")->via.u64, 2);
    cr_assert_eq(s_get(tot, "running")->via.u64, 1);
    s_get(tot, "done");
    s_get(tot, "failed");
    s_get(tot, "rate_per_s");
    s_get(tot, "dropped_messages");
    fp_fini(&w);
    fp_fini(&c);
}

/* The broker sleeps on its sockets' ZMQ_FDs and asks ZMQ_EVENTS only of a
   socket used since its last drain (broker.c): a send that went around
   that bookkeeping could consume the signal of a message that came in
   meanwhile and leave it unread until the next heartbeat on that socket.
   Here heartbeats are 10 s and more apart (the fake peers' too), the
   client keeps two tasks in flight, so that its next SUBMIT crosses the
   RESULT of the other task on the clients' socket, and the worker answers
   each TASK message as it comes, so that results cross tasks on the
   workers' socket: no answer may take a heartbeat to come. */
Test(broker, answers_at_once_while_messages_cross_its_sends, .timeout = 60, .fini = s_stop)
{
    static const char *const args[] = {"--heartbeat", "10", NULL};
    fb_start(&s_cluster, args);
    fp_t w, c;
    fp_init(&w, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fp_init(&c, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    w.hb_ms = c.hb_ms = 60000;
    fw_ready(&w, "node-x", 2, 0, "f");
    fc_hello(&c, "crossing");
    enum { N = 4000 };
    uint64_t next = 1, done = 0;
    for (; next <= 2; next++) {
        fc_submit(&c, next, "f");
    }
    while (done < N) {
        zmq_pollitem_t items[2] = {{zsock_resolve(w.sock), 0, ZMQ_POLLIN, 0},
                                   {zsock_resolve(c.sock), 0, ZMQ_POLLIN, 0}};
        int rc = zmq_poll(items, 2, 3000);
        cr_assert_gt(rc, 0, "no answer for 3 s after %lu results", (unsigned long)done);
        while (fp_recv(&w, 0) == ZXP_TASK) {
            fw_answer_all(&w);
        }
        for (int cmd; (cmd = fp_recv(&c, 0)) >= 0;) {
            for (size_t i = 0; cmd == ZXP_RESULT && i < c.in.count; i++, done++) {
                if (next <= N) {
                    fc_submit(&c, next++, "f");
                }
            }
        }
    }
    fp_fini(&w);
    fp_fini(&c);
}
