/*  executor.c - the public executor and submit functions. They validate
    arguments, then dispatch through the executor's vtable
    (zx__executor_ops_t) to the remote (remote.c) or local (local.c)
    implementation, and keep this thread's last error for the NULL-returning
    calls.
*/
#include "zx_client_int.h"
#include "zx_proto.h"

#include <czmq.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

zx_executor_t *zx_executor_new(const char *endpoint, const zx_options_t *opts)
{
    zx__set_last_error(ZX_OK);
    zx_executor_t *ex = zx__remote_new(endpoint, opts);
    if (!ex && zx_last_error() == ZX_OK) {
        zx__set_last_error(ZX_ECONN);
    }
    return ex;
}

int zx_executor_shutdown(zx_executor_t *ex, bool wait, bool cancel_futures)
{
    if (!ex) {
        return ZX_EINVAL;
    }
    return ex->ops->shutdown(ex, wait, cancel_futures);
}

void zx_executor_destroy(zx_executor_t **ex_p)
{
    if (!ex_p || !*ex_p) {
        return;
    }
    zx_executor_t *ex = *ex_p;
    *ex_p = NULL;
    ex->ops->shutdown(ex, true, false);
    ex->ops->destroy(ex);
}

int zx_executor_register(zx_executor_t *ex, const char *name, zx_task_fn *fn)
{
    if (!ex || !name || !*name || strlen(name) > ZXP_MAX_NAME || !fn || !ex->ops->register_fn) {
        return ZX_EINVAL;
    }
    return ex->ops->register_fn(ex, name, fn);
}

const char *zx_executor_endpoint(zx_executor_t *ex)
{
    if (!ex || !ex->ops->endpoint) {
        return NULL;
    }
    return ex->ops->endpoint(ex);
}

bool zx__is_args_array(const void *data, size_t len)
{
    if (!data || len == 0) {
        return false;
    }
    uint8_t b = *(const uint8_t *)data;
    bool array = (b >= 0x90 && b <= 0x9f) || b == 0xdc || b == 0xdd;
    return array && zxp_mp_check(data, len, ZXP_MAX_DEPTH) == (long)len;
}

zx_future_t *zx__submit_flags(zx_executor_t *ex, const char *fn, const void *args, size_t len,
                              const zx_task_opts_t *opts, uint32_t flags)
{
    if (!zx__is_args_array(args, len)) {
        zx__set_last_error(ZX_EINVAL);
        return NULL;
    }
    return zx__submit_packed(ex, fn, args, len, opts, flags);
}

zx_future_t *zx__submit_packed(zx_executor_t *ex, const char *fn, const void *args, size_t len,
                               const zx_task_opts_t *opts, uint32_t flags)
{
    if (!ex || !fn || !*fn || strlen(fn) > ZXP_MAX_NAME || len > ZXP_MAX_MSG || !args || len == 0) {
        zx__set_last_error(ZX_EINVAL);
        return NULL;
    }
    if (opts &&
        (opts->pool < ZX_POOL_ANY || opts->pool > ZX_POOL_PROCESS || opts->priority < -128 ||
         opts->priority > 127 || opts->retries < -1 || opts->time_limit < 0)) {
        zx__set_last_error(ZX_EINVAL);
        return NULL;
    }
    int err = ZX_OK;
    zx_future_t *f = ex->ops->submit(ex, fn, args, len, opts, flags, &err);
    if (!f) {
        zx__set_last_error(err != ZX_OK ? err : ZX_ENOMEM);
    }
    return f;
}

zx_future_t *zx_submit(zx_executor_t *ex, const char *fn, const void *args, size_t args_len)
{
    return zx__submit_flags(ex, fn, args, args_len, NULL, 0);
}

zx_future_t *zx_submit_opts(zx_executor_t *ex, const char *fn, const void *args, size_t args_len,
                            const zx_task_opts_t *opts)
{
    return zx__submit_flags(ex, fn, args, args_len, opts, 0);
}

/* zx_submitf's arguments are packed on the stack while they fit (a task's
   arguments are usually a few bytes; msgpack_sbuffer would allocate 8 KiB
   per call) and on the heap beyond. */
typedef struct {
    char *data;
    size_t size, alloc;
    bool failed;
    char small[256];
} s_argbuf_t;

static int s_argbuf_write(void *p, const char *buf, size_t len)
{
    s_argbuf_t *b = p;
    if (len > b->alloc - b->size) {
        size_t n = b->alloc * 2;
        while (n - b->size < len) {
            n *= 2;
        }
        bool small = b->data == b->small;
        char *d = small ? malloc(n) : realloc(b->data, n);
        if (!d) {
            b->failed = true;
            return -1;
        }
        if (small) {
            memcpy(d, b->small, b->size);
        }
        b->data = d;
        b->alloc = n;
    }
    memcpy(b->data + b->size, buf, len);
    b->size += len;
    return 0;
}

zx_future_t *zx_submitf(zx_executor_t *ex, const char *fn, const char *fmt, ...)
{
    if (!fmt) {
        zx__set_last_error(ZX_EINVAL);
        return NULL;
    }
    s_argbuf_t sb;
    sb.data = sb.small;
    sb.size = 0;
    sb.alloc = sizeof sb.small;
    sb.failed = false;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, s_argbuf_write);
    size_t n = strlen(fmt);
    msgpack_pack_array(&pk, n);
    va_list ap;
    va_start(ap, fmt);
    bool ok = true;
    for (size_t i = 0; ok && i < n; i++) {
        switch (fmt[i]) {
        case 'i': msgpack_pack_int(&pk, va_arg(ap, int)); break;
        case 'I': msgpack_pack_int64(&pk, va_arg(ap, int64_t)); break;
        case 'u': msgpack_pack_unsigned_int(&pk, va_arg(ap, unsigned)); break;
        case 'U': msgpack_pack_uint64(&pk, va_arg(ap, uint64_t)); break;
        case 'd': msgpack_pack_double(&pk, va_arg(ap, double)); break;
        case 'b':
            if (va_arg(ap, int)) {
                msgpack_pack_true(&pk);
            } else {
                msgpack_pack_false(&pk);
            }
            break;
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s) {
                ok = false;
                break;
            }
            size_t sl = strlen(s);
            msgpack_pack_str(&pk, sl);
            msgpack_pack_str_body(&pk, s, sl);
            break;
        }
        case 'y': {
            const void *p = va_arg(ap, const void *);
            size_t bl = va_arg(ap, size_t);
            if (!p && bl) {
                ok = false;
                break;
            }
            msgpack_pack_bin(&pk, bl);
            msgpack_pack_bin_body(&pk, p, bl);
            break;
        }
        case 'n': msgpack_pack_nil(&pk); break;
        case 'm': {
            const void *p = va_arg(ap, const void *);
            size_t ml = va_arg(ap, size_t);
            /* one whole value, or the array's element count would lie */
            if (!p || ml == 0 || zxp_mp_check(p, ml, ZXP_MAX_DEPTH) != (long)ml) {
                ok = false;
                break;
            }
            s_argbuf_write(&sb, p, ml);
            break;
        }
        default: ok = false; break;
        }
    }
    va_end(ap);
    zx_future_t *f = NULL;
    if (ok && !sb.failed) {
        f = zx__submit_packed(ex, fn, sb.data, sb.size, NULL, 0);
    } else {
        zx__set_last_error(ok ? ZX_ENOMEM : ZX_EINVAL);
    }
    if (sb.data != sb.small) {
        free(sb.data);
    }
    return f;
}
