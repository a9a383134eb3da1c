/*  zx_test_fns.h - task functions and small helpers shared by the future,
    waiter, local-executor and map tests (header only: each test binary gets
    its own copy of the globals). A gate lets a test hold tasks running and
    release them, so tests synchronise on conditions instead of sleeping.
*/
#ifndef ZX_TEST_FNS_H
#define ZX_TEST_FNS_H

#include "zexec.h"

#include <czmq.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

/* ---- the gate ------------------------------------------------------------- */

static pthread_mutex_t zxt_gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t zxt_gate_cond = PTHREAD_COND_INITIALIZER;
static int zxt_gate_open_flag;
static int zxt_gate_started;
static atomic_int zxt_trace; /* counts runs of "trace" and "block" */

static inline void zxt_gate_reset(void)
{
    pthread_mutex_lock(&zxt_gate_lock);
    zxt_gate_open_flag = 0;
    zxt_gate_started = 0;
    pthread_mutex_unlock(&zxt_gate_lock);
    atomic_store(&zxt_trace, 0);
}

static inline void zxt_gate_open(void)
{
    pthread_mutex_lock(&zxt_gate_lock);
    zxt_gate_open_flag = 1;
    pthread_cond_broadcast(&zxt_gate_cond);
    pthread_mutex_unlock(&zxt_gate_lock);
}

/* Waits until at least n "block" tasks have started; false on timeout. */
static inline bool zxt_gate_wait_started(int n, double timeout)
{
    int64_t end = zclock_mono() + (int64_t)(timeout * 1000);
    pthread_mutex_lock(&zxt_gate_lock);
    while (zxt_gate_started < n && zclock_mono() < end) {
        /* woken by block's broadcast; the realtime timeout only bounds it */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&zxt_gate_cond, &zxt_gate_lock, &ts);
    }
    bool ok = zxt_gate_started >= n;
    pthread_mutex_unlock(&zxt_gate_lock);
    return ok;
}

/* ---- task functions ------------------------------------------------------- */

static inline int64_t zxt_arg_int(const msgpack_object *args, uint32_t i)
{
    if (args->via.array.size <= i) {
        return 0;
    }
    const msgpack_object *o = &args->via.array.ptr[i];
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        return (int64_t)o->via.u64;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        return o->via.i64;
    }
    return 0;
}

/* square(n) -> n * n */
static inline int zxt_fn_square(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    int64_t n = zxt_arg_int(args, 0);
    msgpack_pack_int64(result, n * n);
    return ZX_OK;
}

/* fail_if(n, bad) -> n, or ValueError when n == bad */
static inline int zxt_fn_fail_if(zx_task_t *task, const msgpack_object *args,
                                 msgpack_packer *result)
{
    int64_t n = zxt_arg_int(args, 0);
    if (n == zxt_arg_int(args, 1)) {
        return zx_raise(task, "ValueError", "bad input %lld", (long long)n);
    }
    msgpack_pack_int64(result, n);
    return ZX_OK;
}

/* trace() -> counter after incrementing: proves whether a task ran */
static inline int zxt_fn_trace(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    msgpack_pack_int(result, atomic_fetch_add(&zxt_trace, 1) + 1);
    return ZX_OK;
}

/* block(v) -> v, after the gate opens (30 s safety limit) */
static inline int zxt_fn_block(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    atomic_fetch_add(&zxt_trace, 1);
    int64_t end = zclock_mono() + 30000;
    pthread_mutex_lock(&zxt_gate_lock);
    zxt_gate_started++;
    pthread_cond_broadcast(&zxt_gate_cond);
    while (!zxt_gate_open_flag && zclock_mono() < end) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&zxt_gate_cond, &zxt_gate_lock, &ts);
    }
    pthread_mutex_unlock(&zxt_gate_lock);
    msgpack_pack_int64(result, zxt_arg_int(args, 0));
    return ZX_OK;
}

/* spin_ms(ms): busy for ms milliseconds, or until its time limit passes */
static inline int zxt_fn_spin_ms(zx_task_t *task, const msgpack_object *args,
                                 msgpack_packer *result)
{
    int64_t end = zclock_mono() + zxt_arg_int(args, 0);
    while (zclock_mono() < end && !zx_task_expired(task)) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    msgpack_pack_true(result);
    return ZX_OK;
}

/* echo(args...) -> the argument array itself */
static inline int zxt_fn_echo(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    msgpack_pack_object(result, *args);
    return ZX_OK;
}

/* first(x, ...) -> x, as it came */
static inline int zxt_fn_first(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    if (args->type != MSGPACK_OBJECT_ARRAY || args->via.array.size < 1) {
        return zx_raise(task, "TypeError", "first takes at least one argument");
    }
    msgpack_pack_object(result, args->via.array.ptr[0]);
    return ZX_OK;
}

static inline void zxt_register_all(zx_executor_t *ex)
{
    zx_executor_register(ex, "square", zxt_fn_square);
    zx_executor_register(ex, "fail_if", zxt_fn_fail_if);
    zx_executor_register(ex, "trace", zxt_fn_trace);
    zx_executor_register(ex, "block", zxt_fn_block);
    zx_executor_register(ex, "spin_ms", zxt_fn_spin_ms);
    zx_executor_register(ex, "echo", zxt_fn_echo);
    zx_executor_register(ex, "first", zxt_fn_first);
}

/* ---- values --------------------------------------------------------------- */

/* Packs [a] or [a, b] into sb (reset first). */
static inline void zxt_args_int(msgpack_sbuffer *sb, int nargs, int64_t a, int64_t b)
{
    sb->size = 0;
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, (size_t)nargs);
    if (nargs > 0) {
        msgpack_pack_int64(&pk, a);
    }
    if (nargs > 1) {
        msgpack_pack_int64(&pk, b);
    }
}

/* Decodes one msgpack integer value; INT64_MIN if it is not one. */
static inline int64_t zxt_value_int(const void *v, size_t len)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    int64_t out = INT64_MIN;
    if (msgpack_unpack_next(&u, v, len, NULL) == MSGPACK_UNPACK_SUCCESS) {
        if (u.data.type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
            out = (int64_t)u.data.via.u64;
        } else if (u.data.type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
            out = u.data.via.i64;
        }
    }
    msgpack_unpacked_destroy(&u);
    return out;
}

/* Submits fn(a) or fn(a, b). */
static inline zx_future_t *zxt_submit_int(zx_executor_t *ex, const char *fn, int nargs, int64_t a,
                                          int64_t b)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    zxt_args_int(&sb, nargs, a, b);
    zx_future_t *f = zx_submit(ex, fn, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    return f;
}

/* The integer result of f (waits up to timeout); INT64_MIN on failure. */
static inline int64_t zxt_result_int(zx_future_t *f, double timeout)
{
    const void *v;
    size_t len;
    if (zx_future_result(f, timeout, &v, &len) != ZX_OK) {
        return INT64_MIN;
    }
    return zxt_value_int(v, len);
}

#endif
