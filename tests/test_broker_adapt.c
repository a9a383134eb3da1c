/*  test_broker_adapt.c - adaptive prefetch: the broker widens a worker's
    window beyond slots + announced prefetch when tasks finish quickly, and
    keeps it at slots + prefetch when they run long. */
#include "broker_peers.h"

static zxt_cluster_t s_cluster;

static void s_stop(void)
{
    zxt_cluster_stop(&s_cluster);
}

/* Sends WSTARTED for every task in w->in, as a real worker does. */
static void s_started_all(fp_t *w)
{
    zxp_out_t out;
    zxp_out_init(&out);
    zxp_out_begin(&out, ZXP_WSTARTED);
    for (size_t i = 0; i < w->in.count; i++) {
        zxp_task_t t;
        zxp_get_task(&w->in, i, &t);
        zxp_put_wstarted(&out, t.session, t.seq, 4242, t.pool);
    }
    cr_assert(zxp_out_send(&out, w->sock, NULL) == 0);
    zxp_out_fini(&out);
}

static const char *const s_args[] = {"--heartbeat", "0.2", NULL};

Test(adapt, short_tasks_widen_the_window_beyond_slots_plus_prefetch, .timeout = 60, .fini = s_stop)
{
    fb_start(&s_cluster, s_args);
    fp_t w, c;
    fp_init(&w, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fp_init(&c, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fw_ready(&w, "fast", 2, 1, "echo");
    fc_hello(&c, "tester");
    enum { N = 20000 };
    for (uint64_t s = 1; s <= N; s++) {
        fc_submit(&c, s, "echo");
    }
    size_t got = 0, widest = 0;
    while (got < N && fp_expect(&w, ZXP_TASK, 5000)) {
        got += w.in.count;
        if (w.in.count > widest) {
            widest = w.in.count;
        }
        s_started_all(&w);
        fw_answer_all(&w);
    }
    cr_assert_eq(got, N, "only %zu of %d tasks were dispatched", got, N);
    /* 2 threads + 1 prefetch = 3 without adaptation */
    cr_assert_gt(widest, 3, "the window never grew past 3 (widest batch %zu)", widest);
    fp_fini(&w);
    fp_fini(&c);
}

Test(adapt, long_tasks_keep_slots_plus_prefetch, .timeout = 60, .fini = s_stop)
{
    fb_start(&s_cluster, s_args);
    fp_t w, c;
    fp_init(&w, s_cluster.worker_ep, ZXP_ROLE_WORKER);
    fp_init(&c, s_cluster.client_ep, ZXP_ROLE_CLIENT);
    fw_ready(&w, "slow", 2, 1, "echo");
    fc_hello(&c, "tester");
    for (uint64_t s = 1; s <= 30; s++) {
        fc_submit(&c, s, "echo");
    }
    /* each batch "runs" 300 ms (several broker ticks) before its results */
    size_t got = 0;
    for (int round = 0; round < 6; round++) {
        cr_assert(fp_expect(&w, ZXP_TASK, 5000));
        size_t inflight = w.in.count;
        zxp_in_t held = w.in; /* answer these after the pause */
        s_started_all(&w);
        /* anything else arriving while they run must stay within 3 in flight */
        int64_t until = zclock_mono() + 300;
        zxp_in_init(&w.in);
        while (zclock_mono() < until) {
            if (fp_recv(&w, (int)(until - zclock_mono())) == ZXP_TASK) {
                inflight += w.in.count;
                s_started_all(&w);
                fw_answer_all(&w);
                inflight -= w.in.count;
            }
            cr_assert_leq(inflight, 3, "window grew to %zu for 300 ms tasks", inflight);
        }
        zxp_in_fini(&w.in);
        w.in = held;
        got += w.in.count;
        cr_assert_leq(w.in.count, 3, "a batch of %zu for a 2-thread, prefetch-1 worker",
                      w.in.count);
        fw_answer_all(&w);
    }
    cr_assert_gt(got, 0);
    fp_fini(&w);
    fp_fini(&c);
}
