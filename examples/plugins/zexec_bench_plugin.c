/*  zexec_bench_plugin.c - the functions bench/bench_zexec runs (issue 6),
    as a worker plugin (libzexec_bench_plugin.so):

      inc [n]        -> n + 1 (the no-op task of workloads A, B, F)
      nop []         -> nil   (the queued task of workload E)
      sleep_ms [ms]  -> ms, after sleeping ms milliseconds (int or float; C)
      len [bytes]    -> the length of a bin (or str) argument (D)

    All run in either pool. They validate their arguments and raise
    TypeError instead of guessing, so a benchmark that sends the wrong thing
    fails loudly rather than measuring it. */
#include <errno.h>
#include <time.h>

#include "zexec_worker.h"

static int s_inc(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    if (args->type != MSGPACK_OBJECT_ARRAY || args->via.array.size != 1) {
        return zx_raise(task, "TypeError", "inc takes one integer");
    }
    const msgpack_object *n = &args->via.array.ptr[0];
    if (n->type == MSGPACK_OBJECT_POSITIVE_INTEGER && n->via.u64 < INT64_MAX) {
        return msgpack_pack_uint64(result, n->via.u64 + 1) == 0 ? ZX_OK : ZX_ENOMEM;
    }
    if (n->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        return msgpack_pack_int64(result, n->via.i64 + 1) == 0 ? ZX_OK : ZX_ENOMEM;
    }
    return zx_raise(task, "TypeError", "inc takes one integer");
}

static int s_nop(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    return msgpack_pack_nil(result) == 0 ? ZX_OK : ZX_ENOMEM;
}

static int s_sleep_ms(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    if (args->type != MSGPACK_OBJECT_ARRAY || args->via.array.size != 1) {
        return zx_raise(task, "TypeError", "sleep_ms takes one number of milliseconds");
    }
    const msgpack_object *a = &args->via.array.ptr[0];
    double ms;
    switch (a->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER: ms = (double)a->via.u64; break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: ms = a->via.f64; break;
    default: return zx_raise(task, "TypeError", "sleep_ms takes one number of milliseconds");
    }
    if (!(ms >= 0 && ms <= 3600e3)) {
        return zx_raise(task, "ValueError", "sleep_ms: %g ms is out of range", ms);
    }
    struct timespec ts = {(time_t)(ms / 1000),
                          (long)((ms - (double)(time_t)(ms / 1000) * 1000) * 1e6)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    /* echo the argument back as it came, so the caller can check it */
    return msgpack_pack_object(result, *a) == 0 ? ZX_OK : ZX_ENOMEM;
}

static int s_len(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    if (args->type != MSGPACK_OBJECT_ARRAY || args->via.array.size != 1) {
        return zx_raise(task, "TypeError", "len takes one bytes argument");
    }
    const msgpack_object *a = &args->via.array.ptr[0];
    if (a->type == MSGPACK_OBJECT_BIN) {
        return msgpack_pack_uint64(result, a->via.bin.size) == 0 ? ZX_OK : ZX_ENOMEM;
    }
    if (a->type == MSGPACK_OBJECT_STR) {
        return msgpack_pack_uint64(result, a->via.str.size) == 0 ? ZX_OK : ZX_ENOMEM;
    }
    return zx_raise(task, "TypeError", "len takes one bytes argument");
}

const zx_plugin_entry_t zexec_plugin[] = {
    {"inc", s_inc, ZX_POOLS_ANY},
    {"nop", s_nop, ZX_POOLS_ANY},
    {"sleep_ms", s_sleep_ms, ZX_POOLS_ANY},
    {"len", s_len, ZX_POOLS_ANY},
    {NULL, NULL, 0},
};
