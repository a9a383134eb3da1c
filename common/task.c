/*  task.c - running a task function: argument checking, result packing and
    zx_raise. Used by worker pools and local executors alike. */
#include "zx_task.h"
#include "zx_proto.h"

#include <czmq.h>
#include <stdarg.h>
#include <string.h>

void zx__task_init(zx_task_t *task, const char *fn, int pool, int64_t deadline_ms)
{
    memset(task, 0, sizeof *task);
    task->fn = fn;
    task->pool = pool;
    task->deadline_ms = deadline_ms;
}

void zx__task_fini(zx_task_t *task)
{
    free(task->err_type);
    free(task->err_message);
    free(task->err_traceback);
    task->err_type = task->err_message = task->err_traceback = NULL;
}

int zx_raise(zx_task_t *task, const char *type, const char *fmt, ...)
{
    if (!task) {
        return ZX_ERAISED;
    }
    free(task->err_type);
    free(task->err_message);
    task->err_type = strdup(type && *type ? type : "Error");
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&task->err_message, fmt, ap) < 0) {
        task->err_message = NULL;
    }
    va_end(ap);
    return ZX_ERAISED;
}

void zx_task_set_traceback(zx_task_t *task, const char *text)
{
    if (task) {
        free(task->err_traceback);
        task->err_traceback = strdup(text ? text : "");
    }
}

const char *zx_task_fn_name(const zx_task_t *task)
{
    return task ? task->fn : NULL;
}

double zx_task_time_left(const zx_task_t *task)
{
    if (!task || task->deadline_ms == 0) {
        return ZX_FOREVER;
    }
    int64_t left = task->deadline_ms - zclock_mono();
    return left > 0 ? (double)left / 1000.0 : 0.0;
}

bool zx_task_expired(const zx_task_t *task)
{
    return task && task->deadline_ms != 0 && zclock_mono() >= task->deadline_ms;
}

void zx__pack_error(msgpack_packer *pk, const char *type, const char *message,
                    const char *traceback)
{
    const char *f[3] = {type ? type : "Error", message ? message : "", traceback ? traceback : ""};
    msgpack_pack_array(pk, 3);
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(f[i]);
        msgpack_pack_str(pk, n);
        msgpack_pack_str_body(pk, f[i], n);
    }
}

/* Runs one call on an already unpacked argument array; packs into sb. */
static int s_call_obj(zx_task_t *task, zx_task_fn *fn, const msgpack_object *args,
                      msgpack_sbuffer *sb)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    size_t mark = sb->size;
    /* only after an error: a chunk calls this for every input */
    if (task->err_type || task->err_message || task->err_traceback) {
        zx__task_fini(task);
    }
    int rc = fn(task, args, &pk);
    if (rc == ZX_OK) {
        if (sb->size == mark) {
            msgpack_pack_nil(&pk);
        }
        return ZXP_ST_OK;
    }
    sb->size = mark; /* drop a partial result */
    if (task->err_type) {
        zx__pack_error(&pk, task->err_type, task->err_message, task->err_traceback);
    } else {
        zx__pack_error(&pk, "Error", zx_strerror(rc), task->err_traceback);
    }
    return ZXP_ST_RAISED;
}

int zx__task_call(zx_task_t *task, zx_task_fn *fn, const void *args, size_t len,
                  msgpack_sbuffer *out)
{
    msgpack_zone zone;
    msgpack_object obj;
    msgpack_zone_init(&zone, 1024);
    int st;
    if (zxp_mp_unpack(args, len, &zone, &obj) != 0 || obj.type != MSGPACK_OBJECT_ARRAY) {
        msgpack_packer pk;
        msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
        zx__pack_error(&pk, "TypeError", "task arguments are not one msgpack array", "");
        st = ZXP_ST_RAISED;
    } else {
        st = s_call_obj(task, fn, &obj, out);
    }
    msgpack_zone_destroy(&zone);
    return st;
}

int zx__task_call_chunk(zx_task_t *task, zx_task_fn *fn, const void *args, size_t len,
                        msgpack_sbuffer *out)
{
    msgpack_zone zone;
    msgpack_object obj;
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    msgpack_zone_init(&zone, 4096);
    int st = ZXP_ST_OK;
    if (zxp_mp_unpack(args, len, &zone, &obj) != 0 || obj.type != MSGPACK_OBJECT_ARRAY) {
        zx__pack_error(&pk, "TypeError", "chunk arguments are not one msgpack array", "");
        st = ZXP_ST_RAISED;
        goto done;
    }
    msgpack_pack_array(&pk, obj.via.array.size);
    for (uint32_t i = 0; i < obj.via.array.size; i++) {
        const msgpack_object *a = &obj.via.array.ptr[i];
        /* [true, (result)] header in one write; true becomes false on error */
        static const char pair_ok[2] = {(char)0x92, (char)0xc3};
        size_t flag_at = out->size + 1;
        msgpack_sbuffer_write(out, pair_ok, sizeof pair_ok);
        if (a->type != MSGPACK_OBJECT_ARRAY) {
            out->data[flag_at] = (char)0xc2;
            zx__pack_error(&pk, "TypeError", "chunk element is not an argument array", "");
        } else if (s_call_obj(task, fn, a, out) != ZXP_ST_OK) {
            out->data[flag_at] = (char)0xc2; /* false: the pair holds an error */
        }
    }
done:
    msgpack_zone_destroy(&zone);
    return st;
}
