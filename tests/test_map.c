/*  test_map.c - zx_map_* (libclient/map.c) on a local executor: input
    order, chunks, the stop at a raised element, timeouts from the call,
    cancellation on destroy, and a million-input generator in bounded
    memory. */
#include "zexec.h"
#include "zx_test_fns.h"
#include "zx_testutil.h"

#include <criterion/criterion.h>
#include <czmq.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* n argument arrays [i] (or [i, bad]) with their lengths. */
typedef struct {
    msgpack_sbuffer sb[64];
    const void *args[64];
    size_t lens[64];
    size_t n;
} inputs_t;

static void s_inputs(inputs_t *in, size_t n, int nargs, int64_t bad)
{
    in->n = n;
    for (size_t i = 0; i < n; i++) {
        msgpack_sbuffer_init(&in->sb[i]);
        zxt_args_int(&in->sb[i], nargs, (int64_t)i, bad);
        in->args[i] = in->sb[i].data;
        in->lens[i] = in->sb[i].size;
    }
}

static void s_inputs_fini(inputs_t *in)
{
    for (size_t i = 0; i < in->n; i++) {
        msgpack_sbuffer_destroy(&in->sb[i]);
    }
}

static zx_executor_t *s_ex(int threads)
{
    zx_executor_t *ex = zx_executor_new_local(threads);
    cr_assert_not_null(ex);
    zxt_register_all(ex);
    return ex;
}

Test(map, yields_results_in_input_order_with_and_without_chunks, .timeout = 30)
{
    zx_executor_t *ex = s_ex(4);
    inputs_t in;
    s_inputs(&in, 50, 1, 0);
    size_t chunks[] = {0, 1, 3, 7, 50, 100};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        zx_map_t *m = zx_map_new(ex, "square", in.args, in.lens, in.n, chunks[c], 10);
        cr_assert_not_null(m);
        const void *v;
        size_t len;
        for (int64_t i = 0; i < 50; i++) {
            cr_assert_eq(zx_map_next(m, &v, &len), ZX_OK, "chunk %zu item %lld", chunks[c],
                         (long long)i);
            cr_assert_eq(zxt_value_int(v, len), i * i);
        }
        cr_assert_eq(zx_map_next(m, &v, &len), ZX_EEND);
        cr_assert_eq(zx_map_next(m, &v, &len), ZX_EEND, "stays at the end");
        cr_assert_null(zx_map_exception(m));
        zx_map_destroy(&m);
        cr_assert_null(m);
    }
    s_inputs_fini(&in);
    zx_executor_destroy(&ex);
}

Test(map, empty_input_ends_at_once, .timeout = 30)
{
    zx_executor_t *ex = s_ex(1);
    zx_map_t *m = zx_map_new(ex, "square", NULL, NULL, 0, 1, ZX_FOREVER);
    cr_assert_not_null(m);
    cr_assert_eq(zx_map_next(m, NULL, NULL), ZX_EEND);
    zx_map_destroy(&m);
    zx_executor_destroy(&ex);
}

static void s_check_raised_stop(size_t chunksize)
{
    zx_executor_t *ex = s_ex(2);
    inputs_t in;
    s_inputs(&in, 20, 2, 5); /* fail_if(i, 5): element 5 raises */
    zx_map_t *m = zx_map_new(ex, "fail_if", in.args, in.lens, in.n, chunksize, 10);
    const void *v;
    size_t len;
    for (int64_t i = 0; i < 5; i++) {
        cr_assert_eq(zx_map_next(m, &v, &len), ZX_OK);
        cr_assert_eq(zxt_value_int(v, len), i);
    }
    cr_assert_eq(zx_map_next(m, &v, &len), ZX_ERAISED);
    const zx_error_t *e = zx_map_exception(m);
    cr_assert_not_null(e);
    cr_assert_eq(e->code, ZX_ERAISED);
    cr_assert_str_eq(e->type, "ValueError");
    cr_assert_str_eq(e->message, "bad input 5");
    cr_assert_str_eq(e->node, "local");
    cr_assert_eq(e->pid, getpid());
    cr_assert_eq(zx_map_next(m, &v, &len), ZX_ERAISED, "the map stops there");
    cr_assert_str_eq(zx_map_exception(m)->message, "bad input 5");
    zx_map_destroy(&m);
    s_inputs_fini(&in);
    zx_executor_destroy(&ex);
}

Test(map, stops_at_a_raised_element, .timeout = 30)
{
    s_check_raised_stop(1);
}

Test(map, stops_at_a_raised_element_inside_a_chunk, .timeout = 30)
{
    s_check_raised_stop(4);
}

Test(map, unknown_function_stops_with_its_error, .timeout = 30)
{
    zx_executor_t *ex = s_ex(1);
    inputs_t in;
    s_inputs(&in, 3, 1, 0);
    zx_map_t *m = zx_map_new(ex, "nope", in.args, in.lens, in.n, 1, 10);
    cr_assert_eq(zx_map_next(m, NULL, NULL), ZX_ERAISED);
    cr_assert_eq(zx_map_exception(m)->code, ZX_ENOFUNC);
    zx_map_destroy(&m);
    s_inputs_fini(&in);
    zx_executor_destroy(&ex);
}

Test(map, timeout_counts_from_the_call_and_destroy_cancels_the_rest, .timeout = 30)
{
    zxt_gate_reset();
    zx_executor_t *ex = s_ex(1);
    inputs_t in;
    s_inputs(&in, 40, 1, 0);
    int64_t t0 = zclock_mono();
    zx_map_t *m = zx_map_new(ex, "block", in.args, in.lens, in.n, 1, 0.2);
    cr_assert(zxt_gate_wait_started(1, 10));
    cr_assert_eq(zx_map_next(m, NULL, NULL), ZX_ETIMEOUT);
    int64_t took = zclock_mono() - t0;
    cr_assert_geq(took, 190); /* a timeout that never fired: the test's own limit */
    cr_assert_eq(zx_map_exception(m)->code, ZX_ETIMEOUT);
    cr_assert_eq(zx_map_next(m, NULL, NULL), ZX_ETIMEOUT, "stays timed out");
    zx_map_destroy(&m);
    zxt_gate_open();
    zx_executor_shutdown(ex, true, false);
    cr_assert_eq(atomic_load(&zxt_trace), 1, "the 39 queued tasks were cancelled");
    s_inputs_fini(&in);
    zx_executor_destroy(&ex);
}

Test(map, destroy_before_consuming_cancels_pending_tasks, .timeout = 30)
{
    zxt_gate_reset();
    zx_executor_t *ex = s_ex(1);
    inputs_t in;
    s_inputs(&in, 64, 1, 0);
    zx_map_t *m = zx_map_new(ex, "block", in.args, in.lens, in.n, 4, ZX_FOREVER);
    cr_assert(zxt_gate_wait_started(1, 10));
    zx_map_destroy(&m);
    zxt_gate_open();
    zx_executor_shutdown(ex, true, false);
    cr_assert_eq(atomic_load(&zxt_trace), 4, "only the first chunk ran");
    s_inputs_fini(&in);
    zx_executor_destroy(&ex);
}

Test(map, on_a_shut_down_executor_fails_at_the_call, .timeout = 30)
{
    zx_executor_t *ex = s_ex(1);
    zx_executor_shutdown(ex, true, false);
    inputs_t in;
    s_inputs(&in, 3, 1, 0);
    cr_assert_null(zx_map_new(ex, "square", in.args, in.lens, in.n, 1, 10));
    cr_assert_eq(zx_last_error(), ZX_ESHUTDOWN);
    cr_assert_null(zx_map_new(ex, "square", in.args, in.lens, in.n, 2, 10));
    cr_assert_eq(zx_last_error(), ZX_ESHUTDOWN);
    cr_assert_null(zx_map_new(NULL, "square", in.args, in.lens, in.n, 1, 10));
    cr_assert_eq(zx_last_error(), ZX_EINVAL);
    s_inputs_fini(&in);
    zx_executor_destroy(&ex);
}

/* A chunk's result values are measured inline when they are scalars and
   walked otherwise (map.c s_scalar_len): every kind comes back byte for
   byte, in a chunk beside the others. */
Test(map, every_kind_of_value_comes_back_whole_from_a_chunk, .timeout = 30)
{
    zx_executor_t *ex = s_ex(2);
    enum { N = 24 };
    msgpack_sbuffer sb[N];
    const void *args[N];
    size_t lens[N];
    static const char bin[3] = {1, 2, 3};
    for (int i = 0; i < N; i++) {
        msgpack_sbuffer_init(&sb[i]);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb[i], msgpack_sbuffer_write);
        msgpack_pack_array(&pk, 1);
        switch (i) {
        case 0: msgpack_pack_uint64(&pk, 7); break;             /* positive fixint */
        case 1: msgpack_pack_int64(&pk, -5); break;             /* negative fixint */
        case 2: msgpack_pack_uint8(&pk, 200); break;            /* 0xcc */
        case 3: msgpack_pack_uint16(&pk, 60000); break;         /* 0xcd */
        case 4: msgpack_pack_uint32(&pk, 4000000000u); break;   /* 0xce */
        case 5: msgpack_pack_uint64(&pk, UINT64_MAX); break;    /* 0xcf */
        case 6: msgpack_pack_int8(&pk, -100); break;            /* 0xd0 */
        case 7: msgpack_pack_int16(&pk, -30000); break;         /* 0xd1 */
        case 8: msgpack_pack_int32(&pk, -2000000000); break;    /* 0xd2 */
        case 9: msgpack_pack_int64(&pk, INT64_MIN); break;      /* 0xd3 */
        case 10: msgpack_pack_float(&pk, 1.5f); break;          /* 0xca */
        case 11: msgpack_pack_double(&pk, -2.25); break;        /* 0xcb */
        case 12: msgpack_pack_nil(&pk); break;                  /* 0xc0 */
        case 13: msgpack_pack_true(&pk); break;                 /* 0xc3 */
        case 14: msgpack_pack_false(&pk); break;                /* 0xc2 */
        case 15: msgpack_pack_str_with_body(&pk, "", 0); break; /* fixstr 0 */
        case 16:                                                /* fixstr 31 */
            msgpack_pack_str_with_body(&pk, "abcdefghijklmnopqrstuvwxyz01234", 31);
            break;
        case 17: /* str8: walked */
            msgpack_pack_str_with_body(&pk, "abcdefghijklmnopqrstuvwxyz012345", 32);
            break;
        case 18: msgpack_pack_bin_with_body(&pk, bin, sizeof bin); break; /* walked */
        case 19:                                                          /* array: walked */
            msgpack_pack_array(&pk, 2);
            msgpack_pack_int(&pk, 1);
            msgpack_pack_str_with_body(&pk, "x", 1);
            break;
        case 20: /* map: walked */
            msgpack_pack_map(&pk, 1);
            msgpack_pack_int(&pk, 1);
            msgpack_pack_nil(&pk);
            break;
        default: msgpack_pack_int(&pk, i); break;
        }
        args[i] = sb[i].data;
        lens[i] = sb[i].size;
    }
    size_t chunks[] = {1, 5, N};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        zx_map_t *m = zx_map_new(ex, "first", args, lens, N, chunks[c], 10);
        cr_assert_not_null(m);
        for (int i = 0; i < N; i++) {
            const void *v;
            size_t len;
            cr_assert_eq(zx_map_next(m, &v, &len), ZX_OK, "chunk %zu item %d", chunks[c], i);
            /* the value is the input's one element: its bytes after 0x91 */
            cr_assert_eq(len, lens[i] - 1, "chunk %zu item %d: %zu bytes", chunks[c], i, len);
            cr_assert(memcmp(v, (const char *)args[i] + 1, len) == 0, "chunk %zu item %d",
                      chunks[c], i);
        }
        cr_assert_eq(zx_map_next(m, NULL, NULL), ZX_EEND);
        zx_map_destroy(&m);
    }
    for (int i = 0; i < N; i++) {
        msgpack_sbuffer_destroy(&sb[i]);
    }
    zx_executor_destroy(&ex);
}

Test(map, a_malformed_input_stops_the_map_after_the_results_before_it, .timeout = 30)
{
    /* chunks are packed from inputs checked one by one (and not checked
       again whole): a bad input must still stop the map at its place */
    zx_executor_t *ex = s_ex(2);
    static const char truncated[] = {(char)0x92, 0x01}, scalar[] = {0x05};
    const char *bad[] = {truncated, scalar};
    size_t bad_len[] = {sizeof truncated, sizeof scalar};
    size_t chunks[] = {1, 4};
    for (size_t b = 0; b < 2; b++) {
        for (size_t c = 0; c < 2; c++) {
            inputs_t in;
            s_inputs(&in, 10, 1, 0);
            in.args[6] = bad[b];
            in.lens[6] = bad_len[b];
            zx_map_t *m = zx_map_new(ex, "square", in.args, in.lens, in.n, chunks[c], 10);
            cr_assert_not_null(m);
            const void *v;
            size_t len;
            for (int64_t i = 0; i < 6; i++) {
                cr_assert_eq(zx_map_next(m, &v, &len), ZX_OK, "bad %zu chunk %zu item %lld", b,
                             chunks[c], (long long)i);
                cr_assert_eq(zxt_value_int(v, len), i * i);
            }
            cr_assert_eq(zx_map_next(m, &v, &len), ZX_EINVAL, "bad %zu chunk %zu", b, chunks[c]);
            cr_assert_eq(zx_map_exception(m)->code, ZX_EINVAL);
            zx_map_destroy(&m);
            s_inputs_fini(&in);
        }
    }
    zx_executor_destroy(&ex);
}

/* ---- generator ------------------------------------------------------------ */

typedef struct {
    size_t n, produced;
    int fail_at; /* < 0: never */
    unsigned char buf[16];
    msgpack_sbuffer sb;
} gen_t;

static int s_gen(void *arg, const void **args, size_t *len)
{
    gen_t *g = arg;
    if (g->produced >= g->n) {
        return 0;
    }
    if (g->fail_at >= 0 && g->produced == (size_t)g->fail_at) {
        return ZX_EINVAL;
    }
    zxt_args_int(&g->sb, 1, (int64_t)g->produced, 0);
    g->produced++;
    *args = g->sb.data; /* reused next call: zexec copies at once */
    *len = g->sb.size;
    return 1;
}

static void s_run_gen(size_t n, size_t chunksize, size_t max_in_flight, bool check_rss)
{
    zx_executor_t *ex = s_ex(2);
    gen_t g = {.n = n, .fail_at = -1};
    msgpack_sbuffer_init(&g.sb);
    long rss0 = 0;
    zx_map_t *m = zx_map_new_gen(ex, "square", s_gen, &g, chunksize, ZX_FOREVER);
    cr_assert_not_null(m);
    const void *v;
    size_t len;
    size_t most = 0;
    for (size_t i = 0; i < n; i++) {
        int rc = zx_map_next(m, &v, &len);
        if (rc != ZX_OK) {
            cr_assert_fail("item %zu: %s", i, zx_strerror(rc));
        }
        if (zxt_value_int(v, len) != (int64_t)(i * i)) {
            cr_assert_fail("item %zu: wrong value", i);
        }
        size_t in_flight = g.produced - i;
        most = in_flight > most ? in_flight : most;
        if (i == n / 10) {
            rss0 = zxt_rss_kb(0); /* after warm-up: allocator pools are in place */
        }
    }
    cr_assert_eq(zx_map_next(m, &v, &len), ZX_EEND);
    cr_assert_leq(most, max_in_flight, "inputs taken ahead of the consumer: %zu", most);
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    check_rss = false; /* the sanitizers' quarantine keeps freed memory resident */
#endif
    if (check_rss) {
        long growth = zxt_rss_kb(0) - rss0;
        cr_log_info("RSS growth over %zu inputs: %ld kB", n, growth);
        cr_assert_lt(growth, 32 * 1024, "RSS grew %ld kB over %zu inputs", growth, n);
    }
    zx_map_destroy(&m);
    msgpack_sbuffer_destroy(&g.sb);
    zx_executor_destroy(&ex);
}

Test(map, generator_keeps_a_bounded_window_unchunked, .timeout = 120)
{
    s_run_gen(20000, 1, 2048 + 1, false);
}

Test(map, generator_over_a_million_inputs_runs_in_bounded_memory, .timeout = 280)
{
    /* 262144 inputs in flight at most with chunks of 256: window of 1024 chunks */
    s_run_gen(1000000, 256, 262144 + 256, true);
}

Test(map, small_chunks_keep_the_task_window, .timeout = 120)
{
    /* chunks of 4: 2048 tasks (8192 inputs), not 262144 / 4 tasks */
    s_run_gen(100000, 4, 2048 * 4 + 4, false);
}

/* 1 MiB arguments: the 64 MiB byte bound of the window, not its 2048 tasks,
   limits what is taken ahead of the consumer. */
typedef struct {
    size_t n, produced;
    msgpack_sbuffer sb;
} big_gen_t;

static int s_big_gen(void *arg, const void **args, size_t *len)
{
    big_gen_t *g = arg;
    if (g->produced >= g->n) {
        return 0;
    }
    g->produced++;
    *args = g->sb.data;
    *len = g->sb.size;
    return 1;
}

Test(map, large_arguments_bound_the_window_by_bytes, .timeout = 60)
{
    zx_executor_t *ex = s_ex(2);
    big_gen_t g = {.n = 200};
    msgpack_sbuffer_init(&g.sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &g.sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 1);
    static char mib[1 << 20];
    msgpack_pack_bin(&pk, sizeof mib);
    msgpack_pack_bin_body(&pk, mib, sizeof mib);
    zx_map_t *m = zx_map_new_gen(ex, "echo", s_big_gen, &g, 1, ZX_FOREVER);
    cr_assert_not_null(m);
    size_t most = 0;
    const void *v;
    size_t len;
    for (size_t i = 0; i < g.n; i++) {
        cr_assert_eq(zx_map_next(m, &v, &len), ZX_OK, "item %zu", i);
        cr_assert_eq(len, g.sb.size, "item %zu echoed %zu bytes", i, len);
        most = g.produced - i > most ? g.produced - i : most;
    }
    cr_assert_eq(zx_map_next(m, &v, &len), ZX_EEND);
    cr_assert_leq(most, 64 + 1, "%zu arguments of 1 MiB taken ahead", most);
    cr_assert_geq(most, 2, "the window still pipelines (%zu)", most);
    zx_map_destroy(&m);
    msgpack_sbuffer_destroy(&g.sb);
    zx_executor_destroy(&ex);
}

Test(map, generator_error_stops_the_map_after_earlier_results, .timeout = 30)
{
    zx_executor_t *ex = s_ex(2);
    gen_t g = {.n = 100, .fail_at = 3};
    msgpack_sbuffer_init(&g.sb);
    zx_map_t *m = zx_map_new_gen(ex, "square", s_gen, &g, 1, 10);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(zx_map_next(m, NULL, NULL), ZX_OK);
    }
    cr_assert_eq(zx_map_next(m, NULL, NULL), ZX_EINVAL);
    cr_assert_eq(zx_map_exception(m)->code, ZX_EINVAL);
    cr_assert_eq(zx_map_next(m, NULL, NULL), ZX_EINVAL);
    zx_map_destroy(&m);
    msgpack_sbuffer_destroy(&g.sb);
    zx_executor_destroy(&ex);
}
