/*  test_broker_queue.c - unit tests of the broker's scheduling structures
    (broker/queue.c, compiled into this test): priority bitmap, fair turns
    between clients, FIFO, removal from the middle, the (client, seq) table,
    free-credit lists, timer FIFOs and payload storage.
*/
#include "../broker/queue.c"

#include <criterion/criterion.h>

typedef struct {
    zxb_sched_t *s;
    zxb_client_t clients[4];
    zxb_fn_t *fn;
} fx_t;

static void fx_init(fx_t *fx)
{
    memset(fx, 0, sizeof *fx);
    fx->s = zxb_sched_new();
    cr_assert(fx->s);
    fx->fn = zxb_fn_intern(fx->s, "f", 1);
    cr_assert(fx->fn);
}

static void fx_fini(fx_t *fx)
{
    for (int i = 0; i < 4; i++) {
        zxb_client_fifos_destroy(&fx->clients[i]);
    }
    zxb_sched_destroy(&fx->s);
}

static zxb_task_t *fx_task(fx_t *fx, int client, uint64_t seq, int8_t prio)
{
    zxb_task_t *t = zxb_task_alloc(fx->s);
    cr_assert(t);
    t->client = &fx->clients[client];
    t->seq = seq;
    t->fn = fx->fn;
    t->priority = prio;
    t->pool_req = ZXP_POOL_ANY;
    t->arrival = zxb_arrival_now(fx->s, zclock_mono());
    zxb_task_index(fx->s, t);
    zxb_queue_push(fx->s, t, false);
    return t;
}

static uint64_t fx_pop(fx_t *fx)
{
    zxb_task_t *t = zxb_queue_pop(fx->s, fx->fn->q[ZXP_POOL_ANY]);
    cr_assert(t, "queue empty too early");
    uint64_t seq = t->seq;
    zxb_task_unindex(fx->s, t);
    zxb_task_free(fx->s, t);
    return seq;
}

Test(broker_queue, pops_by_priority_then_client_turns_then_fifo)
{
    fx_t fx;
    fx_init(&fx);
    /* client 0: 1,2,3 at prio 0; client 1: 11,12 at prio 0; client 2: 21 at
       prio 0; 100 at prio 100 and 200 at prio -100 from client 1 */
    fx_task(&fx, 0, 1, 0);
    fx_task(&fx, 0, 2, 0);
    fx_task(&fx, 1, 11, 0);
    fx_task(&fx, 0, 3, 0);
    fx_task(&fx, 1, 200, -100);
    fx_task(&fx, 1, 12, 0);
    fx_task(&fx, 2, 21, 0);
    fx_task(&fx, 1, 100, 100);
    cr_assert_eq(zxb_queue_depth(fx.fn->q[ZXP_POOL_ANY]), 8);
    cr_assert_eq(zxb_queue_peek(fx.fn->q[ZXP_POOL_ANY])->seq, 100);
    uint64_t want[] = {100, 1, 11, 21, 2, 12, 3, 200};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        cr_assert_eq(fx_pop(&fx), want[i], "position %zu", i);
    }
    cr_assert_null(zxb_queue_peek(fx.fn->q[ZXP_POOL_ANY]));
    cr_assert_eq(zxb_queue_depth(fx.fn->q[ZXP_POOL_ANY]), 0);
    fx_fini(&fx);
}

Test(broker_queue, extreme_priorities_use_both_ends_of_the_bitmap)
{
    fx_t fx;
    fx_init(&fx);
    fx_task(&fx, 0, 1, -128);
    fx_task(&fx, 0, 2, 127);
    fx_task(&fx, 0, 3, 63);
    fx_task(&fx, 0, 4, 64);
    fx_task(&fx, 0, 5, -65);
    uint64_t want[] = {2, 4, 3, 5, 1};
    for (size_t i = 0; i < 5; i++) {
        cr_assert_eq(fx_pop(&fx), want[i]);
    }
    fx_fini(&fx);
}

Test(broker_queue, a_retry_goes_to_the_front_of_its_clients_fifo)
{
    fx_t fx;
    fx_init(&fx);
    fx_task(&fx, 0, 1, 0);
    fx_task(&fx, 0, 2, 0);
    zxb_task_t *t = zxb_queue_pop(fx.s, fx.fn->q[ZXP_POOL_ANY]);
    cr_assert_eq(t->seq, 1);
    zxb_queue_push(fx.s, t, true);
    cr_assert_eq(fx_pop(&fx), 1);
    cr_assert_eq(fx_pop(&fx), 2);
    fx_fini(&fx);
}

Test(broker_queue, removes_tasks_from_the_middle_and_keeps_the_rest_in_order)
{
    fx_t fx;
    fx_init(&fx);
    zxb_task_t *t[6];
    for (int i = 0; i < 6; i++) {
        t[i] = fx_task(&fx, i % 2, (uint64_t)i, 0);
    }
    /* remove the head of client 0, a middle one of client 1, and all of client 0 but one */
    zxb_queue_remove(fx.s, t[0]);
    zxb_queue_remove(fx.s, t[3]);
    zxb_queue_remove(fx.s, t[2]);
    for (int i = 0; i < 6; i++) {
        if (i == 0 || i == 2 || i == 3) {
            zxb_task_unindex(fx.s, t[i]);
            zxb_task_free(fx.s, t[i]);
        }
    }
    cr_assert_eq(zxb_queue_depth(fx.fn->q[ZXP_POOL_ANY]), 3);
    uint64_t a = fx_pop(&fx), b = fx_pop(&fx), c = fx_pop(&fx);
    cr_assert(a == 1 || a == 4);
    cr_assert_eq(a == 1 ? b : a, 4);
    cr_assert_eq(c, 5);
    fx_fini(&fx);
}

static void s_free_cb(zxb_task_t *t, void *arg)
{
    fx_t *fx = arg;
    zxb_task_unindex(fx->s, t);
    zxb_task_free(fx->s, t);
}

Test(broker_queue, drains_one_clients_fifos_and_leaves_the_others)
{
    fx_t fx;
    fx_init(&fx);
    for (uint64_t s = 0; s < 50; s++) {
        fx_task(&fx, (int)(s % 3), s, (int8_t)(s % 5));
    }
    zxb_client_fifos_drain(fx.s, &fx.clients[1], s_free_cb, &fx);
    cr_assert_eq(zxb_queue_depth(fx.fn->q[ZXP_POOL_ANY]), 50 - 17);
    cr_assert_eq(zxb_task_count(fx.s), 50 - 17);
    while (zxb_queue_peek(fx.fn->q[ZXP_POOL_ANY])) {
        cr_assert_neq(fx_pop(&fx) % 3, 1, "a drained client's task came out");
    }
    fx_fini(&fx);
}

static void s_each_remove_odd(zxb_task_t *t, void *arg)
{
    fx_t *fx = arg;
    if (t->seq % 2) {
        zxb_queue_remove(fx->s, t);
        s_free_cb(t, arg);
    }
}

Test(broker_queue, each_visits_every_task_and_allows_removing_it)
{
    fx_t fx;
    fx_init(&fx);
    for (uint64_t s = 0; s < 40; s++) {
        fx_task(&fx, (int)(s % 4), s, (int8_t)((s % 3) - 1));
    }
    zxb_queue_each(fx.s, fx.fn->q[ZXP_POOL_ANY], s_each_remove_odd, &fx);
    cr_assert_eq(zxb_queue_depth(fx.fn->q[ZXP_POOL_ANY]), 20);
    while (zxb_queue_peek(fx.fn->q[ZXP_POOL_ANY])) {
        cr_assert_eq(fx_pop(&fx) % 2, 0);
    }
    fx_fini(&fx);
}

Test(broker_queue, finds_tasks_by_client_and_seq_across_table_growth)
{
    fx_t fx;
    fx_init(&fx);
    enum { N = 50000 };
    for (uint64_t s = 0; s < N; s++) {
        fx_task(&fx, (int)(s % 2), s, 0);
    }
    cr_assert_eq(zxb_task_count(fx.s), N);
    for (uint64_t s = 0; s < N; s++) {
        zxb_task_t *t = zxb_task_find(fx.s, &fx.clients[s % 2], s);
        cr_assert(t && t->seq == s);
        cr_assert_null(zxb_task_find(fx.s, &fx.clients[(s + 1) % 2], s));
    }
    for (uint64_t s = 0; s < N; s++) {
        fx_pop(&fx);
    }
    cr_assert_eq(zxb_task_count(fx.s), 0);
    cr_assert_null(zxb_task_find(fx.s, &fx.clients[0], 0));
    fx_fini(&fx);
}

Test(broker_queue, interns_function_names_once)
{
    zxb_sched_t *s = zxb_sched_new();
    zxb_fn_t *a = zxb_fn_intern(s, "echo", 4), *b = zxb_fn_intern(s, "echoXX", 4);
    cr_assert_eq(a, b);
    cr_assert_str_eq(a->name, "echo");
    cr_assert_neq(zxb_fn_intern(s, "sleep", 5), a);
    cr_assert_null(zxb_fn_intern(s, "", 0));
    zxb_sched_destroy(&s);
}

Test(broker_queue, free_lists_link_unlink_and_rotate)
{
    zxb_sched_t *s = zxb_sched_new();
    zxb_fn_t *fn = zxb_fn_intern(s, "f", 1);
    zxb_wfn_t w[3];
    memset(w, 0, sizeof w);
    for (int i = 0; i < 3; i++) {
        w[i].fn = fn;
        zxb_free_link(&w[i], ZXP_POOL_THREAD);
    }
    zxb_free_link(&w[0], ZXP_POOL_THREAD); /* twice: no effect */
    const int T = ZXP_POOL_THREAD;
    cr_assert_eq(fn->free[T].size, 3);
    cr_assert_eq(zxb_wfn_of(fn->free[T].head, T), &w[0]);
    zxb_free_rotate(&w[0], T);
    cr_assert_eq(zxb_wfn_of(fn->free[T].head, T), &w[1]);
    cr_assert_eq(zxb_wfn_of(fn->free[T].tail, T), &w[0]);
    zxb_free_unlink(&w[2], T);
    cr_assert_eq(zxb_wfn_of(fn->free[T].head->next, T), &w[0]);
    zxb_free_unlink(&w[1], T);
    zxb_free_unlink(&w[0], T);
    cr_assert_null(fn->free[T].head);
    cr_assert_null(fn->free[T].tail);
    cr_assert_eq(fn->free[T].size, 0);
    cr_assert_null(fn->free[ZXP_POOL_PROCESS].head);
    zxb_sched_destroy(&s);
}

Test(broker_queue, timer_fifo_skips_entries_of_freed_tasks)
{
    zxb_sched_t *s = zxb_sched_new();
    zxb_timer_fifo_t f = {0};
    zxb_task_t *t[100];
    for (int i = 0; i < 100; i++) {
        t[i] = zxb_task_alloc(s);
        zxb_timer_push(&f, t[i], 1000 + i);
    }
    for (int i = 0; i < 100; i += 2) {
        zxb_task_free(s, t[i]); /* bumps gen */
    }
    zxb_timer_entry_t e;
    cr_assert_not(zxb_timer_pop_due(&f, 1000, &e), "entry 0 is stale, entry 1 not due");
    int n = 0;
    while (zxb_timer_pop_due(&f, 1099, &e)) {
        cr_assert_eq(e.task, t[2 * n + 1]);
        n++;
    }
    cr_assert_eq(n, 50);
    zxb_timer_fini(&f);
    zxb_sched_destroy(&s);
}

Test(broker_queue, keeps_small_payloads_inline_or_on_the_heap_and_big_ones_as_frames)
{
    zxb_sched_t *s = zxb_sched_new();
    size_t sizes[] = {0, 5, 16, 17, 1000, 5000};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        zxb_task_t *t = zxb_task_alloc(s);
        uint8_t *buf = malloc(sizes[i] + 1);
        for (size_t k = 0; k < sizes[i]; k++) {
            buf[k] = (uint8_t)(k * 13 + i);
        }
        zframe_t *f = zframe_new(buf, sizes[i]);
        zxb_task_payload_set(t, &f);
        cr_assert_null(f, "the frame is taken");
        cr_assert_eq(t->size, sizes[i]);
        int want = sizes[i] <= ZXB_PL_INLINE_MAX ? ZXB_PL_INLINE
                   : sizes[i] < ZXB_PL_FRAME_MIN ? ZXB_PL_HEAP
                                                 : ZXB_PL_FRAME;
        cr_assert_eq(t->pl_kind, want, "size %zu", sizes[i]);
        zxp_out_t out;
        zxp_out_init(&out);
        zxp_out_begin(&out, ZXP_TASK);
        zxb_task_payload_put(t, &out); /* kept by the task */
        zframe_t *sent = zmsg_first(out.payloads);
        cr_assert_eq(zframe_size(sent), sizes[i]);
        cr_assert(sizes[i] == 0 || memcmp(zframe_data(sent), buf, sizes[i]) == 0);
        zxp_out_fini(&out);
        zframe_t *back = zxb_task_payload_take(t);
        cr_assert_eq(zframe_size(back), sizes[i]);
        cr_assert(sizes[i] == 0 || memcmp(zframe_data(back), buf, sizes[i]) == 0);
        cr_assert_eq(t->pl_kind, ZXB_PL_NONE);
        zframe_destroy(&back);
        free(buf);
        zxb_task_free(s, t);
    }
    zxb_sched_destroy(&s);
}

/* A client that goes through many (function, priority) kinds keeps a FIFO
   table in proportion to what it has queued (empty FIFOs are swept), its
   count of non-empty FIFOs (charged by client.c) stays exact, and the
   tasks it keeps queued throughout are not disturbed. */
Test(broker_queue, empty_fifos_are_swept_and_open_ones_counted)
{
    fx_t fx;
    fx_init(&fx);
    zxb_client_t *c = &fx.clients[0];
    fx_task(&fx, 0, 1, 0);  /* kept queued throughout */
    fx_task(&fx, 0, 2, 50); /* and this one, at another level */
    cr_assert_eq(c->open_fifos, 2);
    cr_assert(!zxb_queue_opens(c, fx.fn, ZXP_POOL_ANY, 0));
    cr_assert(zxb_queue_opens(c, fx.fn, ZXP_POOL_ANY, 1));
    cr_assert(zxb_queue_opens(c, fx.fn, ZXP_POOL_THREAD, 0));
    for (uint64_t i = 0; i < 5000; i++) {
        char name[32];
        snprintf(name, sizeof name, "g%" PRIu64, i);
        zxb_fn_t *fn = zxb_fn_intern(fx.s, name, strlen(name));
        cr_assert(zxb_queue_opens(c, fn, ZXP_POOL_ANY, (int8_t)(i % 200 - 100)));
        zxb_task_t *t = zxb_task_alloc(fx.s);
        t->client = c;
        t->seq = 100 + i;
        t->fn = fn;
        t->priority = (int8_t)(i % 200 - 100);
        t->pool_req = ZXP_POOL_ANY;
        zxb_task_index(fx.s, t);
        zxb_queue_push(fx.s, t, false);
        cr_assert_eq(c->open_fifos, 3);
        cr_assert(!zxb_queue_opens(c, fn, ZXP_POOL_ANY, (int8_t)(i % 200 - 100)));
        cr_assert_eq(zxb_queue_pop(fx.s, fn->q[ZXP_POOL_ANY]), t);
        zxb_task_unindex(fx.s, t);
        zxb_task_free(fx.s, t);
        cr_assert_eq(c->open_fifos, 2);
        cr_assert_leq(zhashx_size(c->fifos), 2 * 2 + 64 + 1);
    }
    cr_assert_eq(fx_pop(&fx), 2);
    cr_assert_eq(fx_pop(&fx), 1);
    cr_assert_eq(c->open_fifos, 0);
    fx_fini(&fx);
}
