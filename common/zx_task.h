/*  zx_task.h - the task context a task function sees (zx_task_t), shared by
    the worker's pools and the local executor. */
#ifndef ZX_TASK_H
#define ZX_TASK_H

#include "zexec.h"

struct zx_task {
    const char *fn;      /* borrowed function name */
    int pool;            /* ZX_POOL_THREAD or ZX_POOL_PROCESS */
    int64_t deadline_ms; /* zclock_mono() deadline, 0: none */
    /* set by zx_raise; freed by zx__task_fini */
    char *err_type;
    char *err_message;
    char *err_traceback;
};

void zx__task_init(zx_task_t *task, const char *fn, int pool, int64_t deadline_ms);
void zx__task_fini(zx_task_t *task);

/* Runs fn on the msgpack argument bytes and returns the status and, in *out
   (a new frame, caller frees), the result value or the error array
   [type, message, traceback]. Bad argument bytes fail with TypeError; a
   function that returns OK without packing a value returns nil. */
int zx__task_call(zx_task_t *task, zx_task_fn *fn, const void *args, size_t len,
                  msgpack_sbuffer *out);

/* Same for a chunk (ZXP_F_CHUNK): args is an array of argument arrays; the
   result an array of [ok, value-or-error] pairs. Always ZXP_ST_OK unless the
   chunk itself is malformed. */
int zx__task_call_chunk(zx_task_t *task, zx_task_fn *fn, const void *args, size_t len,
                        msgpack_sbuffer *out);

/* Packs an error array [type, message, traceback] into sb. */
void zx__pack_error(msgpack_packer *pk, const char *type, const char *message,
                    const char *traceback);

#endif
