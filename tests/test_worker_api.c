/*  test_worker_api.c - the embeddable worker API without running it:
    registration and plugin loading validate what they are given; and a
    built-in called directly. */
#include <criterion/criterion.h>

#include "zexec_worker.h"
#include "zx_worker_int.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static int s_fn(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    msgpack_pack_nil(result);
    return ZX_OK;
}

Test(worker_api, register_rejects_bad_names_duplicates_and_bad_pools)
{
    zx_worker_t *w = zx_worker_new("tcp://127.0.0.1:1", NULL);
    cr_assert_not_null(w);
    cr_assert_eq(zx_worker_register(w, "mine", s_fn, ZX_POOLS_ANY), ZX_OK);
    cr_assert_eq(zx_worker_register(w, "mine", s_fn, ZX_POOLS_ANY), ZX_EINVAL);
    cr_assert_eq(zx_worker_register(w, "echo", s_fn, 0), ZX_EINVAL, "a built-in was replaced");
    cr_assert_eq(zx_worker_register(w, "", s_fn, 0), ZX_EINVAL);
    cr_assert_eq(zx_worker_register(w, NULL, s_fn, 0), ZX_EINVAL);
    cr_assert_eq(zx_worker_register(w, "nofn", NULL, 0), ZX_EINVAL);
    cr_assert_eq(zx_worker_register(w, "badpools", s_fn, 7), ZX_EINVAL);
    char long_name[300];
    memset(long_name, 'x', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = 0;
    cr_assert_eq(zx_worker_register(w, long_name, s_fn, 0), ZX_EINVAL);
    zx_worker_destroy(&w);
    cr_assert_null(w);
    zx_worker_destroy(&w); /* NULL is fine */
}

Test(worker_api, no_builtins_leaves_the_names_free)
{
    zx_worker_opts_t o = {.no_builtins = true, .node = "api"};
    zx_worker_t *w = zx_worker_new(NULL, &o);
    cr_assert_not_null(w);
    cr_assert_eq(zx_worker_register(w, "echo", s_fn, ZX_POOLS_THREAD), ZX_OK);
    zx_worker_destroy(&w);
}

Test(worker_api, bad_options_make_no_worker)
{
    zx_worker_opts_t o = {.threads = -2};
    cr_assert_null(zx_worker_new(NULL, &o));
    cr_assert_eq(zx_last_error(), ZX_EINVAL);
    zx_worker_opts_t ok = {.no_builtins = true};
    zx_worker_t *w = zx_worker_new(NULL, &ok);
    cr_assert_not_null(w);
    cr_assert_eq(zx_last_error(), ZX_OK, "a success clears the last error");
    zx_worker_destroy(&w);
    zx_worker_opts_t o2 = {.node = ""};
    cr_assert_null(zx_worker_new(NULL, &o2));
    cr_assert_eq(zx_last_error(), ZX_EINVAL);
    zx_worker_opts_t o3 = {.heartbeat = -1};
    cr_assert_null(zx_worker_new(NULL, &o3));
    cr_assert_eq(zx_last_error(), ZX_EINVAL);
    zx_worker_opts_t o4 = {.key = "/nonexistent/key", .server_key = "/nonexistent/server"};
    cr_assert_null(zx_worker_new(NULL, &o4), "a security configuration that does not load");
    cr_assert_eq(zx_last_error(), ZX_EINVAL);
}

Test(worker_api, load_plugin_checks_the_file_and_its_table)
{
    /* (a plugin's own symbols resolve against the program that loads it,
       so loading the demo plugin is tested through zexec-worker) */
    zx_worker_t *w = zx_worker_new(NULL, NULL);
    cr_assert_eq(zx_worker_load_plugin(w, "/nonexistent/libnothing.so"), ZX_EINVAL);
    cr_assert_eq(zx_worker_load_plugin(w, "libm.so.6"), ZX_EINVAL, "a library without a table");
    cr_assert_eq(zx_worker_load_plugin(w, NULL), ZX_EINVAL);
    zx_worker_destroy(&w);
}

/* The built-in sleep keeps sub-millisecond precision (it once rounded to
   whole milliseconds of zclock_mono, so 1.5 ms could end after 1.0). A lower
   bound only: how late it ends is the machine's business. */
Test(worker_api, builtin_sleep_sleeps_at_least_its_fractional_seconds)
{
    msgpack_sbuffer args, out;
    msgpack_sbuffer_init(&args);
    msgpack_sbuffer_init(&out);
    msgpack_packer pk, rk;
    msgpack_packer_init(&pk, &args, msgpack_sbuffer_write);
    msgpack_packer_init(&rk, &out, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_double(&pk, 0.0015);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    cr_assert_eq(msgpack_unpack_next(&u, args.data, args.size, NULL), MSGPACK_UNPACK_SUCCESS);
    for (int i = 0; i < 20; i++) {
        zx_task_t task;
        zx__task_init(&task, "sleep", ZX_POOL_THREAD, 0);
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        cr_assert_eq(zxw_builtin_sleep(&task, &u.data, &rk), ZX_OK);
        clock_gettime(CLOCK_MONOTONIC, &b);
        zx__task_fini(&task);
        int64_t ns = (int64_t)(b.tv_sec - a.tv_sec) * 1000000000 + (b.tv_nsec - a.tv_nsec);
        cr_assert_geq(ns, 1500000, "sleep(0.0015) took %lld ns", (long long)ns);
    }
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&args);
    msgpack_sbuffer_destroy(&out);
}
