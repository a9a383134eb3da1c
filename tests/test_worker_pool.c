/*  test_worker_pool.c - the real zexec-worker's process pool against a fake
    broker: crash isolation, time limits, child recycling and initializers,
    pool independence, memory limits, terminate and cancel. */
#include "worker_fb.h"

#if defined(__SANITIZE_ADDRESS__)
#define FB_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FB_ASAN 1
#endif
#endif

Test(worker_pool, segfault_fails_only_its_task_and_the_child_is_replaced, .timeout = 60)
{
    fb_t fb;
    fb_start(&fb, "n-crash", "--threads", "1", "--procs", "2", NULL);
    fb_send0(&fb, 1, "crash", ZXP_POOL_PROCESS, 0);
    for (uint64_t s = 2; s <= 201; s++) {
        fb_send_num(&fb, s, "square", ZXP_POOL_PROCESS, 0, (double)s, 1, 0);
    }
    cr_assert(fb_wait(&fb, fb_c_results_upto, 201, 30), "not every task ended");
    cr_assert_eq(fb.res[1].status, ZXP_ST_CRASHED);
    char type[64], msg[256];
    fb_error(&fb, 1, type, sizeof type, msg, sizeof msg);
    cr_assert_str_eq(type, "ProcessCrashed");
    cr_assert(strstr(msg, "signal 11") && strstr(msg, "Segmentation fault"), "%s", msg);
    char pidtxt[32];
    snprintf(pidtxt, sizeof pidtxt, "pid %u", fb.res[1].pid);
    cr_assert(strstr(msg, pidtxt), "%s does not name %s", msg, pidtxt);
    cr_assert(strstr(msg, "n-crash"), "%s does not name the node", msg);
    for (uint64_t s = 2; s <= 201; s++) {
        cr_assert_eq(fb.res[s].status, ZXP_ST_OK, "task %llu", (unsigned long long)s);
        cr_assert_eq(fb_int(&fb, s), (int64_t)(s * s));
        cr_assert_neq(fb.res[s].pid, fb.res[1].pid, "the crashed child ran more tasks");
        cr_assert_eq(fb.res[s].count, 1);
    }
    /* abort and exit are named as well */
    fb_send0(&fb, 300, "abort_", ZXP_POOL_PROCESS, 0);
    fb_send_num(&fb, 301, "exit_", ZXP_POOL_PROCESS, 0, 7, 1, 0);
    cr_assert(fb_wait(&fb, fb_c_results_upto, 201, 1));
    cr_assert(fb_wait(&fb, fb_c_result, 300, 10));
    cr_assert(fb_wait(&fb, fb_c_result, 301, 10));
    fb_error(&fb, 300, type, sizeof type, msg, sizeof msg);
    cr_assert(strstr(msg, "signal 6"), "%s", msg);
    fb_error(&fb, 301, type, sizeof type, msg, sizeof msg);
    cr_assert(strstr(msg, "exited with status 7"), "%s", msg);
    fb_stop(&fb);
}

Test(worker_pool, time_limit_kills_a_busy_child_and_the_pool_keeps_its_size, .timeout = 60)
{
    fb_t fb;
    fb_start(&fb, "n-busy", "--threads", "1", "--procs", "2", NULL);
    int64_t t0 = zclock_mono();
    fb_send0(&fb, 1, "busy", ZXP_POOL_PROCESS, 1000);
    cr_assert(fb_wait(&fb, fb_c_result, 1, 3), "no result within 3 s");
    cr_assert_eq(fb.res[1].status, ZXP_ST_TIMELIMIT);
    cr_assert(fb.res[1].slot_freed);
    cr_assert_geq(fb.res[1].at - t0, 900);
    char type[64], msg[256];
    fb_error(&fb, 1, type, sizeof type, msg, sizeof msg);
    cr_assert_str_eq(type, "TimeLimitError");
    /* two slow tasks at once: both start before either ends, in two
       children, neither of them the killed one */
    fb_send_num(&fb, 2, "slow_square", ZXP_POOL_PROCESS, 0, 2, 2, 0.6);
    fb_send_num(&fb, 3, "slow_square", ZXP_POOL_PROCESS, 0, 3, 2, 0.6);
    cr_assert(fb_wait(&fb, fb_c_started, 2, 5));
    cr_assert(fb_wait(&fb, fb_c_started, 3, 5));
    cr_assert_not(fb.res[2].have || fb.res[3].have, "the tasks ran one after the other");
    cr_assert(fb_wait(&fb, fb_c_results_upto, 3, 5));
    cr_assert_neq(fb.res[2].pid, fb.res[3].pid);
    cr_assert_neq(fb.res[2].pid, fb.res[1].pid);
    cr_assert_neq(fb.res[3].pid, fb.res[1].pid);
    cr_assert_eq(fb_int(&fb, 2), 4);
    cr_assert_eq(fb_int(&fb, 3), 9);
    fb_stop(&fb);
}

Test(worker_pool, max_tasks_per_child_recycles_children_and_runs_the_initializer_in_each,
     .timeout = 60)
{
    fb_t fb;
    fb_start(&fb, "n-recycle", "--threads", "1", "--procs", "1", "--max-tasks-per-child", "2",
             NULL);
    for (uint64_t s = 1; s <= 10; s++) {
        fb_send0(&fb, s, "init_count", ZXP_POOL_PROCESS, 0);
    }
    cr_assert(fb_wait(&fb, fb_c_results_upto, 10, 20));
    uint32_t pids[10];
    size_t npids = 0;
    for (uint64_t s = 1; s <= 10; s++) {
        cr_assert_eq(fb.res[s].status, ZXP_ST_OK);
        cr_assert_eq(fb_int(&fb, s), 1, "the initializer ran %lld times in child %u",
                     (long long)fb_int(&fb, s), fb.res[s].pid);
        bool seen = false;
        for (size_t i = 0; i < npids; i++) {
            seen |= pids[i] == fb.res[s].pid;
        }
        if (!seen) {
            pids[npids++] = fb.res[s].pid;
        }
    }
    cr_assert_geq(npids, 5, "only %zu distinct children ran 10 tasks", npids);
    fb_stop(&fb);
}

Test(worker_pool, thread_and_process_tasks_do_not_wait_for_each_other, .timeout = 60)
{
    fb_t fb;
    fb_start(&fb, "n-both", "--threads", "1", "--procs", "1", NULL);
    fb_send_num(&fb, 1, "task", ZXP_POOL_THREAD, 0, 1, 2, 1.0);
    fb_send_num(&fb, 2, "task", ZXP_POOL_PROCESS, 0, 1, 2, 1.0);
    cr_assert(fb_wait(&fb, fb_c_started, 1, 5));
    cr_assert(fb_wait(&fb, fb_c_started, 2, 5));
    cr_assert_not(fb.res[1].have || fb.res[2].have, "one kind waited for the other");
    cr_assert(fb_wait(&fb, fb_c_results_upto, 2, 5));
    cr_assert_eq(fb.res[1].pool, ZXP_POOL_THREAD);
    cr_assert_eq(fb.res[2].pool, ZXP_POOL_PROCESS);
    int64_t gap = fb.res[1].at - fb.res[2].at;
    cr_assert(gap > -500 && gap < 500, "results %lld ms apart", (long long)gap);
    fb_stop(&fb);
}

Test(worker_pool, terminate_kills_a_running_task_and_the_next_runs_at_once, .timeout = 60)
{
    fb_t fb;
    fb_start(&fb, "n-term", "--threads", "1", "--procs", "1", NULL);
    fb_send_num(&fb, 1, "sleep", ZXP_POOL_PROCESS, 0, 30, 1, 0);
    cr_assert(fb_wait(&fb, fb_c_started, 1, 5));
    uint32_t victim = fb.started_pid[1];
    int64_t t0 = zclock_mono();
    fb_cancel(&fb, 1, true);
    cr_assert(fb_wait(&fb, fb_c_cancelled, 1, 2), "no WCANCELLED within 2 s");
    cr_assert_eq(fb.cancelled[1] - 1, ZXP_CANCEL_TERMINATED);
    cr_assert_lt(fb.cancelled_at[1] - t0, 2000);
    fb_send_num(&fb, 2, "square", ZXP_POOL_PROCESS, 0, 11, 1, 0);
    cr_assert(fb_wait(&fb, fb_c_result, 2, 3), "the next task did not run");
    cr_assert_eq(fb_int(&fb, 2), 121);
    cr_assert_neq(fb.res[2].pid, victim);
    cr_assert_not(fb.res[1].have, "a terminated task got a result");
    /* terminate of a finished task: refused */
    fb_cancel(&fb, 2, true);
    cr_assert(fb_wait(&fb, fb_c_cancelled, 2, 5));
    cr_assert_eq(fb.cancelled[2] - 1, ZXP_CANCEL_REFUSED);
    fb_stop(&fb);
}

Test(worker_pool, cancel_of_a_queued_process_task_is_done_and_it_never_runs, .timeout = 60)
{
    fb_t fb;
    fb_start(&fb, "n-pcq", "--threads", "1", "--procs", "1", NULL);
    char path[256];
    snprintf(path, sizeof path, "/tmp/zx_worker_pcq_%d", (int)getpid());
    unlink(path);
    fb_send_num(&fb, 1, "task", ZXP_POOL_PROCESS, 0, 0.5, 1, 0);
    fb_args_t a;
    fb_pack_str(fb_args_begin(&a, 1), path);
    fb_send(&fb, 2, "touch", ZXP_POOL_PROCESS, 0, &a);
    cr_assert(fb_wait(&fb, fb_c_started, 1, 5));
    fb_cancel(&fb, 2, false);
    cr_assert(fb_wait(&fb, fb_c_cancelled, 2, 5));
    cr_assert_eq(fb.cancelled[2] - 1, ZXP_CANCEL_DONE);
    /* a running process task without terminate: refused, its result follows */
    fb_cancel(&fb, 1, false);
    cr_assert(fb_wait(&fb, fb_c_cancelled, 1, 5));
    cr_assert_eq(fb.cancelled[1] - 1, ZXP_CANCEL_REFUSED);
    cr_assert(fb_wait(&fb, fb_c_result, 1, 5));
    cr_assert_eq(fb.res[1].status, ZXP_ST_OK);
    fb_send_num(&fb, 3, "square", ZXP_POOL_PROCESS, 0, 2, 1, 0);
    cr_assert(fb_wait(&fb, fb_c_result, 3, 5));
    cr_assert_not(fb.res[2].have || fb.started[2], "the cancelled task ran");
    cr_assert_neq(access(path, F_OK), 0, "the cancelled task left its trace");
    fb_stop(&fb);
}

Test(worker_pool, memory_limit_fails_the_task_with_memory_error_and_the_next_succeeds,
     .timeout = 60)
{
#ifdef FB_ASAN
    cr_skip_test("RLIMIT_AS cannot work under AddressSanitizer's shadow memory");
#else
    fb_t fb;
    fb_start(&fb, "n-mem", "--threads", "1", "--procs", "1", "--child-memory", "64M", NULL);
    fb_send_num(&fb, 1, "alloc", ZXP_POOL_PROCESS, 0, 128.0 * 1024 * 1024, 1, 0);
    cr_assert(fb_wait(&fb, fb_c_result, 1, 10));
    cr_assert_eq(fb.res[1].status, ZXP_ST_MEMORY);
    char type[64], msg[256];
    fb_error(&fb, 1, type, sizeof type, msg, sizeof msg);
    cr_assert_str_eq(type, "MemoryError");
    fb_send_num(&fb, 2, "alloc", ZXP_POOL_PROCESS, 0, 1024.0 * 1024, 1, 0);
    cr_assert(fb_wait(&fb, fb_c_result, 2, 10));
    cr_assert_eq(fb.res[2].status, ZXP_ST_OK);
    cr_assert_eq(fb_int(&fb, 2), 1024 * 1024);
    cr_assert_neq(fb.res[2].pid, fb.res[1].pid, "the child that ran out was kept");
    /* a function that crashes when malloc fails: still a memory error */
    fb_send0(&fb, 3, "hog", ZXP_POOL_PROCESS, 0);
    cr_assert(fb_wait(&fb, fb_c_result, 3, 20));
    fb_error(&fb, 3, type, sizeof type, msg, sizeof msg);
    cr_assert_eq(fb.res[3].status, ZXP_ST_MEMORY, "%s: %s", type, msg);
    cr_assert_str_eq(type, "MemoryError");
    cr_assert(strstr(msg, "signal 11"), "%s", msg);
    fb_send_num(&fb, 4, "square", ZXP_POOL_PROCESS, 0, 3, 1, 0);
    cr_assert(fb_wait(&fb, fb_c_result, 4, 10));
    cr_assert_eq(fb.res[4].status, ZXP_ST_OK);
    /* a crash far below the limit stays a crash */
    fb_send0(&fb, 5, "crash", ZXP_POOL_PROCESS, 0);
    cr_assert(fb_wait(&fb, fb_c_result, 5, 10));
    cr_assert_eq(fb.res[5].status, ZXP_ST_CRASHED);
    fb_stop(&fb);
#endif
}

/* ---- exec --------------------------------------------------------------- */

static void s_send_exec(fb_t *fb, uint64_t seq, const char *script, double timeout)
{
    fb_args_t a;
    msgpack_packer *pk = fb_args_begin(&a, 2);
    msgpack_pack_array(pk, 3);
    fb_pack_str(pk, "/bin/sh");
    fb_pack_str(pk, "-c");
    fb_pack_str(pk, script);
    msgpack_pack_map(pk, timeout > 0 ? 3 : 2);
    fb_pack_str(pk, "stdin");
    msgpack_pack_bin(pk, 5);
    msgpack_pack_bin_body(pk, "piped", 5);
    fb_pack_str(pk, "env");
    msgpack_pack_map(pk, 1);
    fb_pack_str(pk, "ZX_TEST_VAR");
    fb_pack_str(pk, "from-env");
    if (timeout > 0) {
        fb_pack_str(pk, "timeout");
        msgpack_pack_double(pk, timeout);
    }
    fb_send(fb, seq, "exec", ZXP_POOL_PROCESS, 0, &a);
}

static const msgpack_object *s_map_get(const msgpack_object *m, const char *key)
{
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *k = &m->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(key) &&
            memcmp(k->via.str.ptr, key, k->via.str.size) == 0) {
            return &m->via.map.ptr[i].val;
        }
    }
    return NULL;
}

Test(worker_pool, exec_reports_exit_status_output_and_stderr_tail, .timeout = 60)
{
    fb_t fb;
    fb_start(&fb, "n-exec", "--threads", "1", "--procs", "1", "--allow-exec", NULL);
    s_send_exec(&fb, 1, "read x; echo \"out:$x:$ZX_TEST_VAR\"; echo note >&2", 0);
    s_send_exec(&fb, 2, "echo some-context >&2; echo the-real-cause >&2; exit 3", 0);
    s_send_exec(&fb, 3, "kill -9 $$", 0);
    fb_args_t a;
    msgpack_packer *pk = fb_args_begin(&a, 2);
    msgpack_pack_array(pk, 3);
    fb_pack_str(pk, "sh");
    fb_pack_str(pk, "-c");
    fb_pack_str(pk, "pwd; head -c 100000 /dev/zero");
    msgpack_pack_map(pk, 2);
    fb_pack_str(pk, "cwd");
    fb_pack_str(pk, "/tmp");
    fb_pack_str(pk, "max_output");
    msgpack_pack_uint32(pk, 1000);
    fb_send(&fb, 4, "exec", ZXP_POOL_PROCESS, 0, &a);
    cr_assert(fb_wait(&fb, fb_c_results_upto, 4, 15));
    cr_assert_eq(fb.res[4].status, ZXP_ST_OK);
    msgpack_zone z4;
    msgpack_zone_init(&z4, 256);
    msgpack_object m4 = fb_value(&fb, 4, &z4);
    const msgpack_object *out4 = s_map_get(&m4, "stdout");
    cr_assert_eq(out4->via.bin.size, 1000);
    cr_assert(memcmp(out4->via.bin.ptr, "/tmp\n", 5) == 0);
    cr_assert(s_map_get(&m4, "stdout_truncated")->via.boolean);
    cr_assert_not(s_map_get(&m4, "stderr_truncated")->via.boolean);
    msgpack_zone_destroy(&z4);
    cr_assert_eq(fb.res[1].status, ZXP_ST_OK);
    msgpack_zone z;
    msgpack_zone_init(&z, 256);
    msgpack_object m = fb_value(&fb, 1, &z);
    cr_assert_eq(m.type, MSGPACK_OBJECT_MAP);
    const msgpack_object *ex = s_map_get(&m, "exit"), *out = s_map_get(&m, "stdout"),
                         *err = s_map_get(&m, "stderr"), *tr = s_map_get(&m, "stdout_truncated");
    cr_assert(ex && out && err && tr && s_map_get(&m, "stderr_truncated"));
    cr_assert_eq(ex->via.u64, 0);
    cr_assert_eq(out->type, MSGPACK_OBJECT_BIN);
    cr_assert_eq(out->via.bin.size, strlen("out:piped:from-env\n"));
    cr_assert(memcmp(out->via.bin.ptr, "out:piped:from-env\n", out->via.bin.size) == 0);
    cr_assert(err->via.bin.size == 5 && memcmp(err->via.bin.ptr, "note\n", 5) == 0);
    cr_assert_not(tr->via.boolean);
    msgpack_zone_destroy(&z);
    char type[64], msg[1500];
    cr_assert_eq(fb.res[2].status, ZXP_ST_RAISED);
    fb_error(&fb, 2, type, sizeof type, msg, sizeof msg);
    cr_assert_str_eq(type, "ExecError");
    cr_assert(strstr(msg, "exited with status 3"), "%s", msg);
    cr_assert(strstr(msg, "the-real-cause"), "no stderr tail in: %s", msg);
    fb_error(&fb, 3, type, sizeof type, msg, sizeof msg);
    cr_assert_str_eq(type, "ExecError");
    cr_assert(strstr(msg, "signal 9"), "%s", msg);
    fb_stop(&fb);
}

/* One exec: argv and an optional env map of one KEY=VALUE; the result's stdout. */
static void s_send_exec_env(fb_t *fb, uint64_t seq, const char *prog, const char *script,
                            const char *key, const char *val)
{
    fb_args_t a;
    msgpack_packer *pk = fb_args_begin(&a, 2);
    msgpack_pack_array(pk, script ? 3 : 1);
    fb_pack_str(pk, prog);
    if (script) {
        fb_pack_str(pk, "-c");
        fb_pack_str(pk, script);
    }
    msgpack_pack_map(pk, key ? 1 : 0);
    if (key) {
        fb_pack_str(pk, "env");
        msgpack_pack_map(pk, 1);
        fb_pack_str(pk, key);
        fb_pack_str(pk, val);
    }
    fb_send(fb, seq, "exec", ZXP_POOL_PROCESS, 0, &a);
}

static void s_assert_stdout(fb_t *fb, uint64_t seq, const char *want)
{
    cr_assert_eq(fb->res[seq].status, ZXP_ST_OK, "exec %llu failed", (unsigned long long)seq);
    msgpack_zone z;
    msgpack_zone_init(&z, 256);
    msgpack_object m = fb_value(fb, seq, &z);
    const msgpack_object *out = s_map_get(&m, "stdout");
    cr_assert(out && out->type == MSGPACK_OBJECT_BIN);
    cr_assert(out->via.bin.size == strlen(want) &&
                  memcmp(out->via.bin.ptr, want, strlen(want)) == 0,
              "exec %llu printed '%.*s', not '%s'", (unsigned long long)seq, (int)out->via.bin.size,
              out->via.bin.ptr, want);
    msgpack_zone_destroy(&z);
}

/* The command starts from the worker's environment with the task's env put
   in: a task's KEY replaces the worker's own (HOME here), and leaves
   nothing behind for the next command of the same pool child; signals the
   pool child ignores (SIGINT, SIGTERM, SIGPIPE) are the defaults again in
   the command; a command that is not there fails naming itself. (The
   command is started with vfork from the pool child: change 41.) */
Test(worker_pool, exec_env_replaces_and_does_not_leak_and_a_missing_command_fails, .timeout = 60)
{
    fb_t fb;
    fb_start(&fb, "n-execenv", "--threads", "1", "--procs", "1", "--allow-exec", NULL);
    const char *home = getenv("HOME") ? getenv("HOME") : "";
    s_send_exec_env(&fb, 1, "/bin/sh", "echo \"$HOME\"", "HOME", "/zx-home");
    s_send_exec_env(&fb, 2, "/bin/sh", "echo \"$HOME\"", NULL, NULL);
    s_send_exec_env(&fb, 3, "/bin/sh", "grep -E '^Sig(Ign|Blk):' /proc/self/status", NULL, NULL);
    s_send_exec_env(&fb, 4, "zx-no-such-command-here", NULL, NULL, NULL);
    s_send_exec_env(&fb, 5, "/bin/sh", "echo \"$ZX_NEW\"", "ZX_NEW", "v=1");
    cr_assert(fb_wait(&fb, fb_c_results_upto, 5, 15));
    s_assert_stdout(&fb, 1, "/zx-home\n");
    char want[600];
    snprintf(want, sizeof want, "%s\n", home);
    s_assert_stdout(&fb, 2, want);
    s_assert_stdout(&fb, 3, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");
    s_assert_stdout(&fb, 5, "v=1\n");
    cr_assert_neq(fb.res[4].status, ZXP_ST_OK);
    char type[64], msg[1500];
    fb_error(&fb, 4, type, sizeof type, msg, sizeof msg);
    cr_assert(strstr(msg, "zx-no-such-command-here"), "%s: %s", type, msg);
    fb_stop(&fb);
}

Test(worker_pool, exec_time_limit_kills_the_command, .timeout = 60)
{
    fb_t fb;
    fb_start(&fb, "n-exectl", "--threads", "1", "--procs", "1", "--allow-exec", NULL);
    int64_t t0 = zclock_mono();
    s_send_exec(&fb, 1, "echo started >&2; exec sleep 20", 0.5);
    cr_assert(fb_wait(&fb, fb_c_result, 1, 5));
    cr_assert_lt(fb.res[1].at - t0, 3000);
    cr_assert_eq(fb.res[1].status, ZXP_ST_TIMELIMIT);
    char type[64], msg[1500];
    fb_error(&fb, 1, type, sizeof type, msg, sizeof msg);
    cr_assert_str_eq(type, "TimeLimitError");
    cr_assert(strstr(msg, "started"), "%s", msg);
    /* and the task's own time limit kills the child running the command */
    t0 = zclock_mono();
    fb_args_t a;
    msgpack_packer *pk = fb_args_begin(&a, 1);
    msgpack_pack_array(pk, 2);
    fb_pack_str(pk, "sleep");
    fb_pack_str(pk, "20");
    fb_send(&fb, 2, "exec", ZXP_POOL_PROCESS, 500, &a);
    cr_assert(fb_wait(&fb, fb_c_result, 2, 5));
    cr_assert_lt(fb.res[2].at - t0, 3000);
    cr_assert_eq(fb.res[2].status, ZXP_ST_TIMELIMIT);
    fb_stop(&fb);
}

Test(worker_pool, exec_is_refused_without_allow_exec, .timeout = 60)
{
    fb_t fb;
    fb_start(&fb, "n-noexec", "--threads", "1", "--procs", "1", NULL);
    s_send_exec(&fb, 1, "echo hi", 0);
    cr_assert(fb_wait(&fb, fb_c_result, 1, 5));
    cr_assert_eq(fb.res[1].status, ZXP_ST_NOTALLOWED);
    char type[64], msg[256];
    fb_error(&fb, 1, type, sizeof type, msg, sizeof msg);
    cr_assert(strstr(msg, "exec not allowed on node n-noexec"), "%s", msg);
    fb_stop(&fb);
}
