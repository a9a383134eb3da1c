/*  test_worker.c - the real zexec-worker against a fake broker: READY,
    the thread pool, errors, cancel, time limits, drain and reconnect. */
#include "worker_fb.h"

Test(worker, announces_pools_functions_and_identity_in_ready, .timeout = 30)
{
    fb_t fb;
    fb_start(&fb, "n-ready", "--threads", "3", "--procs", "2", "--prefetch", "4", "--heartbeat",
             "0.5", NULL);
    cr_assert_eq(fb.ready_pid, (uint32_t)fb.pid);
    cr_assert_str_eq(fb.ready_node, "n-ready");
    cr_assert_eq(fb.ready_threads, 3);
    cr_assert_eq(fb.ready_procs, 2);
    cr_assert_eq(fb.ready_prefetch, 4);
    cr_assert_eq(fb.ready_hb, 500);
    cr_assert_eq(fb.ready_nrunning, 0);
    /* the routing id is the worker id */
    cr_assert_eq(zframe_size(fb.rid), ZXP_ID_LEN);
    cr_assert(memcmp(zframe_data(fb.rid), fb.ready_wid, ZXP_ID_LEN) == 0);
    const char *want[] = {"echo:3,",   "sleep:3,", "fail:3,", "pid:3,",       "exec:2,",
                          "square:3,", "crash:2,", "busy:2,", "init_count:3,"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char pat[64];
        snprintf(pat, sizeof pat, ",%s", want[i]);
        char all[4200];
        snprintf(all, sizeof all, ",%s", fb.ready_fns);
        cr_assert(strstr(all, pat), "READY lacks %s in %s", want[i], fb.ready_fns);
    }
    fb_stop(&fb);
}

Test(worker, echo_returns_its_arguments_byte_for_byte, .timeout = 30)
{
    fb_t fb;
    fb_start(&fb, "n-echo", "--threads", "2", "--procs", "1", NULL);
    /* a bin with every byte value, a nested map, a str */
    fb_args_t a;
    msgpack_packer *pk = fb_args_begin(&a, 3);
    char bin[100000];
    for (size_t i = 0; i < sizeof bin; i++) {
        bin[i] = (char)(i * 7);
    }
    msgpack_pack_bin(pk, sizeof bin);
    msgpack_pack_bin_body(pk, bin, sizeof bin);
    msgpack_pack_map(pk, 1);
    fb_pack_str(pk, "k");
    msgpack_pack_int(pk, -5);
    fb_pack_str(pk, "hello");
    char *copy = malloc(a.sb.size);
    memcpy(copy, a.sb.data, a.sb.size);
    size_t len = a.sb.size;
    fb_args_t b;
    msgpack_sbuffer_init(&b.sb);
    msgpack_sbuffer_write(&b.sb, copy, len);
    fb_send(&fb, 1, "echo", ZXP_POOL_THREAD, 0, &a);
    fb_send(&fb, 2, "echo", ZXP_POOL_PROCESS, 0, &b);
    cr_assert(fb_wait(&fb, fb_c_results_upto, 2, 10));
    for (int s = 1; s <= 2; s++) {
        cr_assert_eq(fb.res[s].status, ZXP_ST_OK);
        cr_assert_eq(fb.res[s].len, len);
        cr_assert(memcmp(fb.res[s].data, copy, len) == 0, "echo changed the bytes");
        cr_assert(fb.res[s].slot_freed);
    }
    /* a process-pool task always says WSTARTED; a thread-pool task that
       ends within 1 ms may leave it out (its WRESULT says it ran) */
    cr_assert(fb.started[2], "no WSTARTED before the process-pool result");
    cr_assert_eq(fb.res[1].pool, ZXP_POOL_THREAD);
    cr_assert_eq(fb.res[1].pid, (uint32_t)fb.pid);
    cr_assert_eq(fb.res[2].pool, ZXP_POOL_PROCESS);
    cr_assert_neq(fb.res[2].pid, (uint32_t)fb.pid, "process task ran in the worker itself");
    free(copy);
    fb_stop(&fb);
}

Test(worker, echo_keeps_arguments_either_side_of_the_inline_sizes, .timeout = 60)
{
    /* arguments from 2 to 306 bytes, over the sizes kept in the job (64)
       and carried inline in the message (256), in both pools */
    fb_t fb;
    fb_start(&fb, "n-sizes", "--threads", "2", "--procs", "1", NULL);
    char *want[FB_MAXSEQ] = {0};
    size_t want_len[FB_MAXSEQ] = {0};
    uint64_t seq = 1;
    for (int pool = ZXP_POOL_THREAD; pool <= ZXP_POOL_PROCESS; pool++) {
        for (size_t n = 0; n <= 300; n += (n < 70 || (n > 240 && n < 270)) ? 1 : 23, seq++) {
            fb_args_t a;
            msgpack_packer *pk = fb_args_begin(&a, 1);
            msgpack_pack_bin(pk, n);
            char body[300];
            for (size_t i = 0; i < n; i++) {
                body[i] = (char)(i * 13 + n);
            }
            msgpack_pack_bin_body(pk, body, n);
            want_len[seq] = a.sb.size;
            want[seq] = malloc(a.sb.size);
            memcpy(want[seq], a.sb.data, a.sb.size);
            fb_send(&fb, seq, "echo", pool, 0, &a);
        }
    }
    cr_assert(seq < FB_MAXSEQ);
    cr_assert(fb_wait(&fb, fb_c_results_upto, seq - 1, 30), "not every echo came back");
    for (uint64_t s = 1; s < seq; s++) {
        cr_assert_eq(fb.res[s].status, ZXP_ST_OK, "task %llu", (unsigned long long)s);
        cr_assert_eq(fb.res[s].len, want_len[s], "task %llu: %zu bytes back, %zu sent",
                     (unsigned long long)s, fb.res[s].len, want_len[s]);
        cr_assert(memcmp(fb.res[s].data, want[s], want_len[s]) == 0, "task %llu changed",
                  (unsigned long long)s);
        free(want[s]);
    }
    fb_stop(&fb);
}

Test(worker, plugin_error_arrives_with_type_and_message, .timeout = 30)
{
    fb_t fb;
    fb_start(&fb, "n-err", "--threads", "1", "--procs", "1", NULL);
    fb_args_t a;
    msgpack_packer *pk = fb_args_begin(&a, 2);
    msgpack_pack_int(pk, 1);
    msgpack_pack_int(pk, 0);
    fb_send(&fb, 1, "divide", ZXP_POOL_ANY, 0, &a);
    pk = fb_args_begin(&a, 2);
    fb_pack_str(pk, "ValueError");
    fb_pack_str(pk, "bad value 42");
    fb_send(&fb, 2, "fail", ZXP_POOL_PROCESS, 0, &a);
    fb_send_num(&fb, 3, "square", ZXP_POOL_ANY, 0, 12, 1, 0);
    cr_assert(fb_wait(&fb, fb_c_results_upto, 3, 10));
    char type[64], msg[256];
    cr_assert_eq(fb.res[1].status, ZXP_ST_RAISED);
    fb_error(&fb, 1, type, sizeof type, msg, sizeof msg);
    cr_assert_str_eq(type, "ZeroDivisionError");
    cr_assert_str_eq(msg, "division by zero");
    cr_assert_eq(fb.res[2].status, ZXP_ST_RAISED);
    fb_error(&fb, 2, type, sizeof type, msg, sizeof msg);
    cr_assert_str_eq(type, "ValueError");
    cr_assert_str_eq(msg, "bad value 42");
    cr_assert_eq(fb.res[3].status, ZXP_ST_OK);
    cr_assert_eq(fb_int(&fb, 3), 144);
    fb_stop(&fb);
}

Test(worker, unknown_function_and_forbidden_pool_are_refused, .timeout = 30)
{
    fb_t fb;
    fb_start(&fb, "n-nofn", "--threads", "1", "--procs", "1", NULL);
    fb_send0(&fb, 1, "no_such_function", ZXP_POOL_ANY, 0);
    fb_send0(&fb, 2, "crash", ZXP_POOL_THREAD, 0); /* process-only */
    cr_assert(fb_wait(&fb, fb_c_results_upto, 2, 10));
    char type[64], msg[256];
    cr_assert_eq(fb.res[1].status, ZXP_ST_NOFUNC);
    fb_error(&fb, 1, type, sizeof type, msg, sizeof msg);
    cr_assert_str_eq(type, "NoFunctionError");
    cr_assert(strstr(msg, "no_such_function"), "%s", msg);
    cr_assert(fb.res[1].slot_freed);
    cr_assert_eq(fb.res[2].status, ZXP_ST_NOTALLOWED);
    fb_error(&fb, 2, type, sizeof type, msg, sizeof msg);
    cr_assert(strstr(msg, "thread pool"), "%s", msg);
    fb_stop(&fb);
}

Test(worker, a_worker_without_a_process_pool_refuses_process_tasks, .timeout = 30)
{
    fb_t fb;
    fb_start(&fb, "n-noproc", "--threads", "1", "--procs", "0", NULL);
    cr_assert_eq(fb.ready_procs, 0);
    cr_assert(strstr(fb.ready_fns, "crash") == NULL, "process-only function announced");
    fb_send_num(&fb, 1, "square", ZXP_POOL_PROCESS, 0, 3, 1, 0);
    fb_send_num(&fb, 2, "square", ZXP_POOL_ANY, 0, 3, 1, 0);
    cr_assert(fb_wait(&fb, fb_c_results_upto, 2, 10));
    cr_assert_eq(fb.res[1].status, ZXP_ST_NOTALLOWED);
    cr_assert_eq(fb.res[2].status, ZXP_ST_OK);
    cr_assert_eq(fb.res[2].pool, ZXP_POOL_THREAD);
    fb_stop(&fb);
}

Test(worker, chunk_tasks_return_ok_and_error_pairs, .timeout = 30)
{
    fb_t fb;
    fb_start(&fb, "n-chunk", "--threads", "1", "--procs", "1", NULL);
    for (int pool = ZXP_POOL_THREAD; pool <= ZXP_POOL_PROCESS; pool++) {
        fb_args_t a;
        /* ok, error, ok: the error's flag and state stay with its element */
        msgpack_packer *pk = fb_args_begin(&a, 3);
        msgpack_pack_array(pk, 2);
        msgpack_pack_int(pk, 6);
        msgpack_pack_int(pk, 3);
        msgpack_pack_array(pk, 2);
        msgpack_pack_int(pk, 1);
        msgpack_pack_int(pk, 0);
        msgpack_pack_array(pk, 2);
        msgpack_pack_int(pk, 9);
        msgpack_pack_int(pk, 2);
        fb_send_raw(&fb, (uint64_t)pool, "divide", pool, 0, ZXP_F_CHUNK, a.sb.data, a.sb.size);
        msgpack_sbuffer_destroy(&a.sb);
    }
    cr_assert(fb_wait(&fb, fb_c_results_upto, 2, 10));
    for (int s = 1; s <= 2; s++) {
        cr_assert_eq(fb.res[s].status, ZXP_ST_OK);
        msgpack_zone z;
        msgpack_zone_init(&z, 256);
        msgpack_object o = fb_value(&fb, (uint64_t)s, &z);
        cr_assert_eq(o.type, MSGPACK_OBJECT_ARRAY);
        cr_assert_eq(o.via.array.size, 3);
        for (uint32_t i = 0; i < 3; i++) {
            cr_assert_eq(o.via.array.ptr[i].type, MSGPACK_OBJECT_ARRAY);
            cr_assert_eq(o.via.array.ptr[i].via.array.size, 2);
            cr_assert_eq(o.via.array.ptr[i].via.array.ptr[0].type, MSGPACK_OBJECT_BOOLEAN);
        }
        cr_assert(o.via.array.ptr[0].via.array.ptr[0].via.boolean);
        cr_assert_float_eq(o.via.array.ptr[0].via.array.ptr[1].via.f64, 2.0, 1e-9);
        const msgpack_object *err = &o.via.array.ptr[1];
        cr_assert_not(err->via.array.ptr[0].via.boolean);
        cr_assert_eq(err->via.array.ptr[1].type, MSGPACK_OBJECT_ARRAY);
        cr_assert_eq(err->via.array.ptr[1].via.array.size, 3);
        const msgpack_object *ty = &err->via.array.ptr[1].via.array.ptr[0];
        cr_assert_eq(ty->type, MSGPACK_OBJECT_STR);
        cr_assert(ty->via.str.size == 17 && memcmp(ty->via.str.ptr, "ZeroDivisionError", 17) == 0);
        cr_assert(o.via.array.ptr[2].via.array.ptr[0].via.boolean);
        cr_assert_float_eq(o.via.array.ptr[2].via.array.ptr[1].via.f64, 4.5, 1e-9);
        msgpack_zone_destroy(&z);
    }
    fb_stop(&fb);
}

Test(worker, thread_time_limit_fails_on_time_and_credits_the_slot_later, .timeout = 30)
{
    fb_t fb;
    fb_start(&fb, "n-ttl", "--threads", "1", "--procs", "0", NULL);
    int64_t t0 = zclock_mono();
    /* the seeds' task: a plain sleep that ignores the limit */
    fb_send_num(&fb, 1, "task", ZXP_POOL_THREAD, 500, 2, 1, 0);
    cr_assert(fb_wait(&fb, fb_c_result, 1, 10));
    int64_t took = fb.res[1].at - t0;
    cr_assert_eq(fb.res[1].status, ZXP_ST_TIMELIMIT);
    cr_assert_not(fb.res[1].slot_freed, "the thread is still busy");
    cr_assert(took >= 400 && took < 1500, "TIMELIMIT after %lld ms", (long long)took);
    char type[64], msg[256];
    fb_error(&fb, 1, type, sizeof type, msg, sizeof msg);
    cr_assert_str_eq(type, "TimeLimitError");
    cr_assert_eq(fb.credits_thread, 0);
    /* when the thread is done, its slot comes back as CREDIT, not a result */
    cr_assert(fb_wait(&fb, fb_c_credits, 1, 10));
    cr_assert_geq(zclock_mono() - t0, 1800);
    cr_assert_eq(fb.res[1].count, 1, "a second result came for the timed-out task");
    /* the freed thread serves the next task */
    fb_send_num(&fb, 2, "square", ZXP_POOL_THREAD, 0, 5, 1, 0);
    cr_assert(fb_wait(&fb, fb_c_result, 2, 10));
    cr_assert_eq(fb_int(&fb, 2), 25);
    fb_stop(&fb);
}

Test(worker, worker_default_time_limit_applies_to_tasks_without_one, .timeout = 30)
{
    fb_t fb;
    fb_start(&fb, "n-deflim", "--threads", "1", "--procs", "0", "--time-limit", "0.3", NULL);
    fb_send_num(&fb, 1, "sleep", ZXP_POOL_THREAD, 0, 5, 1, 0);
    cr_assert(fb_wait(&fb, fb_c_result, 1, 5));
    cr_assert_eq(fb.res[1].status, ZXP_ST_TIMELIMIT);
    /* sleep stops at its limit, so the slot comes back at once: either in
       the result itself or as a CREDIT right after */
    cr_assert(fb.res[1].slot_freed || fb_wait(&fb, fb_c_credits, 1, 3));
    fb_stop(&fb);
}

Test(worker, cancel_of_a_running_thread_task_is_refused_and_its_result_follows, .timeout = 30)
{
    fb_t fb;
    fb_start(&fb, "n-cref", "--threads", "1", "--procs", "0", NULL);
    fb_send_num(&fb, 1, "sleep", ZXP_POOL_THREAD, 0, 0.5, 1, 0);
    cr_assert(fb_wait(&fb, fb_c_started, 1, 5));
    /* a task longer than 1 ms is reported running while it runs */
    cr_assert_not(fb.res[1].have, "WSTARTED came only with the result");
    fb_cancel(&fb, 1, true);
    cr_assert(fb_wait(&fb, fb_c_cancelled, 1, 5));
    cr_assert_eq(fb.cancelled[1] - 1, ZXP_CANCEL_REFUSED);
    cr_assert(fb_wait(&fb, fb_c_result, 1, 5));
    cr_assert_eq(fb.res[1].status, ZXP_ST_OK);
    cr_assert_float_eq(fb_double(&fb, 1), 0.5, 1e-9);
    /* an unknown task: refused too */
    fb_cancel(&fb, 999, false);
    cr_assert(fb_wait(&fb, fb_c_cancelled, 999, 5));
    cr_assert_eq(fb.cancelled[999] - 1, ZXP_CANCEL_REFUSED);
    fb_stop(&fb);
}

Test(worker, cancel_of_a_queued_thread_task_is_done_and_it_never_runs, .timeout = 30)
{
    fb_t fb;
    fb_start(&fb, "n-cq", "--threads", "1", "--procs", "0", NULL);
    char path[256];
    snprintf(path, sizeof path, "/tmp/zx_worker_cq_%d", (int)getpid());
    unlink(path);
    fb_send_num(&fb, 1, "sleep", ZXP_POOL_THREAD, 0, 0.5, 1, 0);
    fb_args_t a;
    fb_pack_str(fb_args_begin(&a, 1), path);
    fb_send(&fb, 2, "touch", ZXP_POOL_THREAD, 0, &a);
    cr_assert(fb_wait(&fb, fb_c_started, 1, 5));
    fb_cancel(&fb, 2, false);
    cr_assert(fb_wait(&fb, fb_c_cancelled, 2, 5));
    cr_assert_eq(fb.cancelled[2] - 1, ZXP_CANCEL_DONE);
    fb_send_num(&fb, 3, "square", ZXP_POOL_THREAD, 0, 2, 1, 0);
    cr_assert(fb_wait(&fb, fb_c_result, 3, 5));
    cr_assert_not(fb.res[2].have, "a cancelled task got a result");
    cr_assert_not(fb.started[2], "a cancelled task started");
    cr_assert_neq(access(path, F_OK), 0, "the cancelled task ran");
    fb_stop(&fb);
}

Test(worker, sigterm_drains_a_running_task_before_bye, .timeout = 30)
{
    fb_t fb;
    fb_start(&fb, "n-drain", "--threads", "1", "--procs", "1", NULL);
    fb_send_num(&fb, 1, "sleep", ZXP_POOL_THREAD, 0, 0.8, 1, 0);
    fb_send_num(&fb, 2, "task", ZXP_POOL_PROCESS, 0, 0.8, 1, 0);
    fb_send_num(&fb, 3, "square", ZXP_POOL_THREAD, 0, 4, 1, 0); /* queued behind 1 */
    cr_assert(fb_wait(&fb, fb_c_started, 1, 5));
    cr_assert(fb_wait(&fb, fb_c_started, 2, 5));
    cr_assert_eq(kill(fb.pid, SIGTERM), 0);
    cr_assert(fb_wait(&fb, fb_c_drains, 1, 5), "no DRAIN");
    cr_assert_not(fb.res[1].have, "DRAIN came after the result");
    cr_assert(fb_wait(&fb, fb_c_byes, 1, 10), "no BYE");
    cr_assert(fb.res[1].have && fb.res[2].have, "BYE before the running tasks' results");
    cr_assert_eq(fb.res[1].status, ZXP_ST_OK);
    cr_assert_eq(fb.res[2].status, ZXP_ST_OK);
    cr_assert_not(fb.res[3].have, "a queued task ran during the drain");
    int status = -1;
    cr_assert(zxt_wait_exit(fb.pid, 5, &status));
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status %d", status);
    fb.pid = 0;
    fb_stop(&fb);
}

Test(worker, silent_broker_gets_ready_again_with_the_running_tasks, .timeout = 30)
{
    fb_t fb;
    fb_start(&fb, "n-silent", "--threads", "1", "--procs", "1", "--heartbeat", "0.2", "--liveness",
             "3", NULL);
    fb_send_num(&fb, 7, "task", ZXP_POOL_PROCESS, 0, 1.5, 1, 0);
    fb_send_num(&fb, 8, "task", ZXP_POOL_THREAD, 0, 1.5, 1, 0);
    cr_assert(fb_wait(&fb, fb_c_started, 7, 5));
    cr_assert(fb_wait(&fb, fb_c_started, 8, 5));
    fb.heartbeats = false; /* the broker goes quiet */
    int64_t t0 = zclock_mono();
    cr_assert(fb_wait(&fb, fb_c_readies, 2, 5), "no second READY");
    int64_t took = fb.last_ready_at - t0;
    cr_assert(took >= 400 && took < 2000, "READY again after %lld ms", (long long)took);
    cr_assert_eq(fb.ready_nrunning, 2);
    bool seen7 = false, seen8 = false;
    for (size_t i = 0; i < fb.ready_nrunning; i++) {
        seen7 |= fb.ready_running[i] == 7;
        seen8 |= fb.ready_running[i] == 8;
    }
    cr_assert(seen7 && seen8, "READY does not list the running tasks");
    /* the same identity on the new connection */
    cr_assert(memcmp(zframe_data(fb.rid), fb.ready_wid, ZXP_ID_LEN) == 0);
    /* while the broker stays silent, finished results are held (and READY
       keeps listing them), then delivered when it speaks */
    cr_assert_not(fb_wait(&fb, fb_c_result, 7, 2.5), "a result went to a silent broker");
    cr_assert_geq(fb.readies, 3);
    cr_assert_eq(fb.ready_nrunning, 2);
    fb.heartbeats = true;
    cr_assert(fb_wait(&fb, fb_c_result, 7, 5));
    cr_assert(fb_wait(&fb, fb_c_result, 8, 5));
    cr_assert_eq(fb.res[7].status, ZXP_ST_OK);
    cr_assert_eq(fb.res[8].status, ZXP_ST_OK);
    cr_assert_float_eq(fb_double(&fb, 7), 15.0, 1e-9);
    fb_stop(&fb);
}

Test(worker, garbage_from_the_broker_is_dropped_and_the_worker_goes_on, .timeout = 30)
{
    fb_t fb;
    fb_start(&fb, "n-garbage", "--threads", "1", "--procs", "0", NULL);
    zmsg_t *m = zmsg_new();
    zmsg_append(m, &(zframe_t *){zframe_dup(fb.rid)});
    zmsg_addstr(m, "not a protocol frame");
    zmsg_send(&m, fb.router);
    m = zmsg_new();
    zmsg_append(m, &(zframe_t *){zframe_dup(fb.rid)});
    uint8_t sig[4] = {'Z', 'X', ZXP_VERSION, ZXP_TASK};
    zmsg_addmem(m, sig, 4);
    uint8_t huge[5] = {0xdd, 0xff, 0xff, 0xff, 0xff}; /* array of 4 G items */
    zmsg_addmem(m, huge, 5);
    zmsg_send(&m, fb.router);
    fb_send_num(&fb, 1, "square", ZXP_POOL_THREAD, 0, 9, 1, 0);
    cr_assert(fb_wait(&fb, fb_c_result, 1, 5));
    cr_assert_eq(fb_int(&fb, 1), 81);
    fb_stop(&fb);
}

Test(worker, bad_flags_exit_with_status_2, .timeout = 30)
{
    char *bin = zxt_bin("zexec-worker");
    const char *bad[][3] = {{"--threads", "lots", NULL},
                            {"--child-memory", "12Q", NULL},
                            {"--heartbeat", "-1", NULL},
                            {"--prefetch", "0", NULL},
                            {"--no-such-flag", NULL, NULL}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *argv[] = {bin, (char *)bad[i][0], (char *)bad[i][1], NULL};
        pid_t pid = zxt_spawn(argv);
        int status = -1;
        cr_assert(zxt_wait_exit(pid, 5, &status));
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 2, "%s %s: status %d", bad[i][0],
                  bad[i][1] ? bad[i][1] : "", status);
    }
    free(bin);
}

Test(worker, ten_thousand_echo_tasks_in_batches_all_come_back_once, .timeout = 120)
{
    fb_t fb;
    fb_start(&fb, "n-many", "--threads", "2", "--procs", "2", NULL);
    enum { N = 10000, BATCH = 500 };
    int *seen = calloc(N, sizeof *seen);
    int got = 0;
    for (int base = 0; base < N; base += BATCH) {
        zxp_out_t o;
        zxp_out_init(&o);
        zxp_out_begin(&o, ZXP_TASK);
        for (int i = base; i < base + BATCH; i++) {
            zxp_task_t t = {fb.session,  (uint64_t)i + 100000,
                            {"echo", 4}, (uint8_t)(i % 2 ? ZXP_POOL_THREAD : ZXP_POOL_PROCESS),
                            0,           1,
                            0,           NULL};
            zxp_put_task(&o, &t);
            fb_args_t a;
            msgpack_pack_int(fb_args_begin(&a, 1), i);
            zxp_out_payload_mem(&o, a.sb.data, a.sb.size);
            msgpack_sbuffer_destroy(&a.sb);
        }
        cr_assert_eq(zxp_out_send(&o, fb.router, fb.rid), 0);
        zxp_out_fini(&o);
    }
    /* seqs beyond FB_MAXSEQ are not recorded by fb_record: count here */
    int64_t end = zclock_mono() + 100000;
    int batches = 0;
    while (got < N && zclock_mono() < end) {
        zpoller_t *p = zpoller_new(fb.router, NULL);
        void *r = zpoller_wait(p, 1000);
        zpoller_destroy(&p);
        if (!r) {
            continue;
        }
        zmsg_t *msg = zmsg_recv(fb.router);
        zframe_t *rid = zmsg_pop(msg);
        zframe_destroy(&rid);
        cr_assert_eq(zxp_decode(&fb.in, &msg, ZXP_ROLE_BROKER_W), 0);
        if (fb.in.cmd != ZXP_WRESULT) {
            continue;
        }
        batches++;
        for (size_t i = 0; i < fb.in.count; i++) {
            zxp_wresult_t w;
            zxp_get_wresult(&fb.in, i, &w);
            zframe_t *pl = zxp_payload_take(&fb.in);
            cr_assert_eq(w.status, ZXP_ST_OK);
            cr_assert(w.seq >= 100000 && w.seq < 100000 + N);
            int k = (int)(w.seq - 100000);
            msgpack_zone z;
            msgpack_zone_init(&z, 64);
            msgpack_object o;
            cr_assert_eq(zxp_mp_unpack(zframe_data(pl), zframe_size(pl), &z, &o), 0);
            cr_assert(o.type == MSGPACK_OBJECT_ARRAY && o.via.array.size == 1);
            int v = (int)o.via.array.ptr[0].via.u64;
            msgpack_zone_destroy(&z);
            cr_assert_eq(v, k, "task %d came back with %d", k, v);
            cr_assert_eq(seen[k], 0, "task %d came back twice", k);
            seen[k] = 1;
            got++;
            zframe_destroy(&pl);
        }
    }
    cr_assert_eq(got, N);
    /* results are coalesced: far fewer messages than tasks */
    cr_assert_lt(batches, N / 2, "%d result messages for %d tasks", batches, N);
    free(seen);
    fb_stop(&fb);
}

Test(worker, the_embedded_worker_example_serves_its_own_function, .timeout = 30)
{
    fb_t fb;
    memset(&fb, 0, sizeof fb);
    zxp_in_init(&fb.in);
    fb.heartbeats = true;
    fb.router = zsock_new(ZMQ_ROUTER);
    zxp_sock_setup(fb.router);
    int port = zxt_free_port();
    snprintf(fb.ep, sizeof fb.ep, "tcp://127.0.0.1:%d", port);
    cr_assert_geq(zsock_bind(fb.router, "%s", fb.ep), 0);
    char *bin = zxt_bin("examples/embedded_worker");
    char *argv[] = {bin, fb.ep, NULL};
    fb.pid = zxt_spawn(argv);
    free(bin);
    cr_assert(fb_wait(&fb, fb_c_readies, 1, 10));
    cr_assert_str_eq(fb.ready_node, "embedded");
    cr_assert(strstr(fb.ready_fns, "reverse:3,"), "%s", fb.ready_fns);
    for (int pool = ZXP_POOL_THREAD; pool <= ZXP_POOL_PROCESS; pool++) {
        fb_args_t a;
        fb_pack_str(fb_args_begin(&a, 1), "stressed");
        fb_send(&fb, (uint64_t)pool, "reverse", pool, 0, &a);
    }
    cr_assert(fb_wait(&fb, fb_c_results_upto, 2, 10));
    for (int s = 1; s <= 2; s++) {
        cr_assert_eq(fb.res[s].status, ZXP_ST_OK);
        cr_assert_eq(fb.res[s].len, 9); /* fixstr header + 8 bytes */
        cr_assert(memcmp(fb.res[s].data + 1, "desserts", 8) == 0);
    }
    cr_assert_neq(fb.res[2].pid, (uint32_t)fb.pid, "the process pool ran it in the worker");
    fb_stop(&fb);
}

Test(worker, reset_and_shutdown_from_the_broker_bring_ready_again, .timeout = 30)
{
    fb_t fb;
    fb_start(&fb, "n-reset", "--threads", "1", "--procs", "0", NULL);
    fb_send_num(&fb, 1, "sleep", ZXP_POOL_THREAD, 0, 1.0, 1, 0);
    cr_assert(fb_wait(&fb, fb_c_started, 1, 5));
    cr_assert_eq(zxp_send_empty(fb.router, fb.rid, ZXP_RESET), 0);
    cr_assert(fb_wait(&fb, fb_c_readies, 2, 5), "no READY after RESET");
    cr_assert_eq(fb.ready_nrunning, 1);
    cr_assert_eq(fb.ready_running[0], 1);
    cr_assert_eq(zxp_send_empty(fb.router, fb.rid, ZXP_SHUTDOWN), 0);
    cr_assert(fb_wait(&fb, fb_c_readies, 3, 5), "no READY after SHUTDOWN");
    cr_assert(fb_wait(&fb, fb_c_result, 1, 5));
    cr_assert_eq(fb.res[1].status, ZXP_ST_OK);
    fb_stop(&fb);
}

Test(worker, a_plugin_that_clashes_with_loaded_names_stops_the_start, .timeout = 30)
{
    char *bin = zxt_bin("zexec-worker");
    char *plugin = zxt_plugin("zexec_demo_plugin");
    char *argv[] = {bin,    "--broker", "tcp://127.0.0.1:1", "--plugin", plugin, "--plugin",
                    plugin, NULL};
    pid_t pid = zxt_spawn(argv);
    int status = -1;
    cr_assert(zxt_wait_exit(pid, 10, &status));
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1, "status %d", status);
    free(bin);
    free(plugin);
}

/* ---- tasks the loop runs itself (worker/loop.c) ---------------------------------- */

#include <stdlib.h>
#include <sys/syscall.h>

/* The syscall the worker's main thread (the one running its loop) is in,
   from /proc/PID/task/PID/syscall; -1 when running or unreadable. */
static long s_main_syscall(pid_t pid)
{
    char path[64], buf[128];
    snprintf(path, sizeof path, "/proc/%d/task/%d/syscall", (int)pid, (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) {
        return -1;
    }
    long nr = -1;
    if (!fgets(buf, sizeof buf, f) || sscanf(buf, "%ld", &nr) != 1) {
        nr = -1;
    }
    fclose(f);
    return nr;
}

static bool s_is_sleep(long nr)
{
#ifdef SYS_nanosleep
    if (nr == SYS_nanosleep) {
        return true;
    }
#endif
    return nr == SYS_clock_nanosleep;
}

/* Pumps until the worker's main thread is seen sleeping in a function (a
   task running on the loop thread) or seq's result is in. */
static bool s_seen_sleeping_on_the_loop(fb_t *fb, uint64_t seq)
{
    int64_t until = zclock_mono() + 10000;
    while (!fb->res[seq].have && zclock_mono() < until) {
        if (s_is_sleep(s_main_syscall(fb->pid))) {
            return true;
        }
        fb_pump(fb, 2);
    }
    return false;
}

/* Runs fn(args) n times one after the other, each alone on the node: what
   makes a function known short. The bound is wide so that a loaded machine
   does not make sleep(0) look long. */
static void s_make_known_short(fb_t *fb, uint64_t first, int n, const char *fn, double arg)
{
    for (uint64_t s = first; s < first + (uint64_t)n; s++) {
        fb_send_num(fb, s, fn, ZXP_POOL_THREAD, 0, arg, 1, 0);
        cr_assert(fb_wait(fb, fb_c_result, s, 10), "task %llu", (unsigned long long)s);
        cr_assert_eq(fb->res[s].status, ZXP_ST_OK);
    }
}

Test(worker, a_lone_short_function_runs_on_the_loop_thread_and_a_long_run_hands_the_loop_over,
     .timeout = 60)
{
#ifndef __linux__
    cr_skip_test("runs on the loop thread need Linux's timerfd");
#endif
    setenv("ZEXEC_WORKER_INLINE_US", "100000", 1);
    fb_t fb;
    /* frequent heartbeats to count; the fake broker's come every 200 ms,
       so a wide liveness keeps it alive for the worker */
    fb_start(&fb, "n-inline", "--threads", "2", "--procs", "0", "--heartbeat", "0.05", "--liveness",
             "100", NULL);
    cr_assert_geq(s_main_syscall(fb.pid), -1);
    s_make_known_short(&fb, 1, 12, "sleep", 0);
    /* the next lone sleep runs on the loop thread, and lasts: the rescue
       thread reports it started and serves the broker meanwhile */
    int hb0 = fb.heartbeats_in;
    fb_send_num(&fb, 20, "sleep", ZXP_POOL_THREAD, 0, 0.8, 1, 0);
    cr_assert(s_seen_sleeping_on_the_loop(&fb, 20), "the sleep did not run on the main thread");
    cr_assert(fb_wait(&fb, fb_c_started, 20, 5), "no WSTARTED for a long run on the loop thread");
    fb_send_num(&fb, 21, "square", ZXP_POOL_THREAD, 0, 7, 1, 0);
    fb_cancel(&fb, 20, false);
    cr_assert(fb_wait(&fb, fb_c_result, 21, 5), "the pool was not served meanwhile");
    cr_assert_eq(fb_int(&fb, 21), 49);
    cr_assert(fb_wait(&fb, fb_c_cancelled, 20, 5));
    cr_assert_eq(fb.cancelled[20] - 1, ZXP_CANCEL_REFUSED, "a running task was cancelled");
    cr_assert(fb_wait(&fb, fb_c_result, 20, 10));
    cr_assert_eq(fb.res[20].status, ZXP_ST_OK);
    cr_assert_float_eq(fb_double(&fb, 20), 0.8, 1e-9);
    cr_assert_lt(fb.res[21].at, fb.res[20].at, "the square waited for the sleep");
    cr_assert_lt(fb.cancelled_at[20], fb.res[20].at, "the cancel waited for the sleep");
    cr_assert_geq(fb.heartbeats_in - hb0, 4, "%d heartbeats during 0.8 s at 0.05 s",
                  fb.heartbeats_in - hb0);
    /* the long run made sleep a pool function again: the next one runs on a
       pool thread while the main thread waits in poll */
    fb_send_num(&fb, 30, "sleep", ZXP_POOL_THREAD, 0, 0.3, 1, 0);
    cr_assert(fb_wait(&fb, fb_c_started, 30, 5));
    cr_assert_not(s_seen_sleeping_on_the_loop(&fb, 30), "a function that ran long ran on the loop");
    cr_assert(fb_wait(&fb, fb_c_result, 30, 5));
    for (uint64_t s = 1; s <= 30; s++) {
        cr_assert_leq(fb.res[s].count, 1, "task %llu answered twice", (unsigned long long)s);
    }
    fb_stop(&fb);
}

/* The rescue timer is armed for a run on the loop thread only when it is
   not armed already to fire sooner; it is not disarmed after a run. A long
   run right after a short one (the next message) finds it armed by the
   short one: that fire, before the long run's time, arms it again, and the
   long run is still handed over at 1 ms. */
Test(worker, a_long_run_right_after_a_short_one_on_the_loop_is_handed_over_in_time, .timeout = 60)
{
#ifndef __linux__
    cr_skip_test("runs on the loop thread need Linux's timerfd");
#endif
    setenv("ZEXEC_WORKER_INLINE_US", "100000", 1);
    fb_t fb;
    fb_start(&fb, "n-rearm", "--threads", "2", "--procs", "0", NULL);
    s_make_known_short(&fb, 1, 12, "sleep", 0);
    int64_t t0 = zclock_mono();
    fb_send_num(&fb, 20, "sleep", ZXP_POOL_THREAD, 0, 0, 1, 0);
    fb_send_num(&fb, 21, "sleep", ZXP_POOL_THREAD, 0, 0.6, 1, 0);
    cr_assert(s_seen_sleeping_on_the_loop(&fb, 21), "the sleep did not run on the main thread");
    cr_assert(fb_wait(&fb, fb_c_started, 21, 5), "no WSTARTED for a long run on the loop thread");
    cr_assert_not(fb.res[21].have, "the long run was never handed over");
    cr_assert_lt(fb.started_at[21] - t0, 300, "handed over only after %lld ms",
                 (long long)(fb.started_at[21] - t0));
    fb_send_num(&fb, 22, "square", ZXP_POOL_THREAD, 0, 5, 1, 0);
    cr_assert(fb_wait(&fb, fb_c_result, 22, 5));
    cr_assert_eq(fb_int(&fb, 22), 25);
    cr_assert(fb_wait(&fb, fb_c_result, 21, 5));
    cr_assert_eq(fb.res[20].status, ZXP_ST_OK);
    cr_assert_eq(fb.res[21].status, ZXP_ST_OK);
    cr_assert_lt(fb.res[22].at, fb.res[21].at, "the square waited for the sleep");
    fb_stop(&fb);
}

Test(worker, a_run_on_the_loop_thread_keeps_its_time_limit_and_its_slot, .timeout = 60)
{
#ifndef __linux__
    cr_skip_test("runs on the loop thread need Linux's timerfd");
#endif
    setenv("ZEXEC_WORKER_INLINE_US", "100000", 1);
    fb_t fb;
    fb_start(&fb, "n-inttl", "--threads", "1", "--procs", "0", NULL);
    s_make_known_short(&fb, 1, 12, "task", 0);
    /* a sleep that ignores its limit, on the loop thread */
    int64_t t0 = zclock_mono();
    fb_send_num(&fb, 20, "task", ZXP_POOL_THREAD, 400, 1.5, 1, 0);
    cr_assert(s_seen_sleeping_on_the_loop(&fb, 20), "the task did not run on the main thread");
    cr_assert(fb_wait(&fb, fb_c_result, 20, 10));
    int64_t took = fb.res[20].at - t0;
    cr_assert_eq(fb.res[20].status, ZXP_ST_TIMELIMIT);
    cr_assert_not(fb.res[20].slot_freed, "the loop thread is still busy");
    cr_assert_geq(took, 300, "TIMELIMIT after %lld ms", (long long)took);
    cr_assert_lt(took, 1400, "TIMELIMIT only when the function returned (%lld ms)",
                 (long long)took);
    /* a task sent now waits for the slot, as behind a pool thread past its limit */
    fb_send_num(&fb, 21, "square", ZXP_POOL_THREAD, 0, 6, 1, 0);
    cr_assert(fb_wait(&fb, fb_c_credits, 1, 10), "the slot never came back");
    cr_assert(fb_wait(&fb, fb_c_result, 21, 10));
    cr_assert_eq(fb_int(&fb, 21), 36);
    cr_assert_geq(fb.res[21].at - t0, 1400, "a second task ran beside the one past its limit");
    cr_assert_eq(fb.res[20].count, 1, "a second result came for the timed-out task");
    fb_stop(&fb);
}

Test(worker, sigterm_drains_a_task_running_on_the_loop_thread, .timeout = 60)
{
#ifndef __linux__
    cr_skip_test("runs on the loop thread need Linux's timerfd");
#endif
    setenv("ZEXEC_WORKER_INLINE_US", "100000", 1);
    fb_t fb;
    fb_start(&fb, "n-indrain", "--threads", "1", "--procs", "0", NULL);
    s_make_known_short(&fb, 1, 12, "sleep", 0);
    fb_send_num(&fb, 20, "sleep", ZXP_POOL_THREAD, 0, 0.8, 1, 0);
    cr_assert(s_seen_sleeping_on_the_loop(&fb, 20), "the sleep did not run on the main thread");
    cr_assert(fb_wait(&fb, fb_c_started, 20, 5));
    cr_assert_eq(kill(fb.pid, SIGTERM), 0);
    cr_assert(fb_wait(&fb, fb_c_drains, 1, 5), "no DRAIN while the loop thread ran a task");
    cr_assert_not(fb.res[20].have, "DRAIN came after the result");
    cr_assert(fb_wait(&fb, fb_c_byes, 1, 10), "no BYE");
    cr_assert(fb.res[20].have, "BYE before the running task's result");
    cr_assert_eq(fb.res[20].status, ZXP_ST_OK);
    int status = -1;
    cr_assert(zxt_wait_exit(fb.pid, 5, &status));
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status %d", status);
    fb.pid = 0;
    fb_stop(&fb);
}

/* ---- a finished task's arguments ------------------------------------------ */

Test(worker, a_result_kept_for_the_brokers_ack_does_not_keep_its_arguments, .timeout = 60)
{
    /* Results wait for the broker's ack (HEARTBEAT [n]) so a lost broker
       gets them again; the arguments are not needed for that. 96 tasks of
       1 MiB arguments, one ack before them and none after: every result
       stays unacknowledged, and the worker must not hold 96 MiB for them.
       Under ASan a freed block waits in the quarantine, which would count
       it: the worker gets none. */
    const char *old = getenv("ASAN_OPTIONS");
    char asan[512];
    snprintf(asan, sizeof asan, "%s%squarantine_size_mb=0", old ? old : "", old && *old ? ":" : "");
    setenv("ASAN_OPTIONS", asan, 1);
    fb_t fb;
    fb_start(&fb, "n-args", "--threads", "2", "--procs", "1", NULL);
    cr_assert(fb_wait(&fb, fb_c_readies, 1, 10));
    cr_assert_eq(zxp_send_heartbeat_rx(fb.router, fb.rid, 0), 0); /* acks on, none yet */
    enum { N = 96, MIB = 1 << 20 };
    char *body = malloc(MIB);
    memset(body, 'a', MIB);
    /* warm-up: one of each pool, then the baseline */
    for (uint64_t s = 1; s <= 2; s++) {
        fb_send0(&fb, s, "pid", s == 1 ? ZXP_POOL_THREAD : ZXP_POOL_PROCESS, 0);
    }
    cr_assert(fb_wait(&fb, fb_c_results_upto, 2, 20));
    long rss0 = zxt_rss_kb(fb.pid);
    cr_assert_gt(rss0, 0);
    for (uint64_t s = 3; s < 3 + N; s++) {
        fb_args_t a;
        msgpack_packer *pk = fb_args_begin(&a, 1);
        msgpack_pack_bin(pk, MIB);
        msgpack_pack_bin_body(pk, body, MIB);
        fb_send(&fb, s, "pid", s % 4 ? ZXP_POOL_THREAD : ZXP_POOL_PROCESS, 0, &a);
        if ((s - 2) % 8 == 0) {
            /* in waves of eight, as a broker's credit would send them: what
               the worker holds at the end is what it kept, not a backlog */
            cr_assert(fb_wait(&fb, fb_c_results_upto, s, 20), "wave up to %llu did not end",
                      (unsigned long long)s);
        }
    }
    free(body);
    cr_assert(fb_wait(&fb, fb_c_results_upto, 2 + N, 40), "not every task ended");
    for (uint64_t s = 3; s < 3 + N; s++) {
        cr_assert_eq(fb.res[s].status, ZXP_ST_OK, "task %llu", (unsigned long long)s);
        cr_assert_eq(fb.res[s].count, 1);
    }
    long rss1 = zxt_rss_kb(fb.pid);
    cr_assert_lt(rss1 - rss0, 32 * 1024,
                 "the worker grew by %ld KiB with %d MiB of arguments run and unacknowledged",
                 rss1 - rss0, (int)N);
    fb_stop(&fb);
}
