/*  exec_out.c - run's output format, shared by `zexec run` and `zexec
    results --format run`: the exec built-in's result (a map with the
    command's stdout, stderr, exit status, signal, times) decoded, the
    notes run writes after a failed job's own stderr, and the writing of
    output (with --tag's prefix). Both commands print a job's output the
    same way because both go through here.
*/
#include "zxc.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const msgpack_object *s_map_get(const msgpack_object *map, const char *key)
{
    size_t kn = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == kn &&
            memcmp(k->via.str.ptr, key, kn) == 0) {
            return &map->via.map.ptr[i].val;
        }
    }
    return NULL;
}

static void s_take_bin(const msgpack_object *map, const char *key, char **out, size_t *len)
{
    const msgpack_object *v = s_map_get(map, key);
    const char *p = !v                              ? NULL
                    : v->type == MSGPACK_OBJECT_BIN ? v->via.bin.ptr
                    : v->type == MSGPACK_OBJECT_STR ? v->via.str.ptr
                                                    : NULL;
    size_t n = !p ? 0 : v->type == MSGPACK_OBJECT_BIN ? v->via.bin.size : v->via.str.size;
    if (p && n) {
        *out = malloc(n);
        if (*out) {
            memcpy(*out, p, n);
            *len = n;
        }
    }
}

static long s_int_of(const msgpack_object *v, long dflt)
{
    if (v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        return (long)v->via.u64;
    }
    if (v && v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        return (long)v->via.i64;
    }
    return dflt;
}

static double s_double_of(const msgpack_object *v, double dflt)
{
    if (v && (v->type == MSGPACK_OBJECT_FLOAT64 || v->type == MSGPACK_OBJECT_FLOAT32)) {
        return v->via.f64;
    }
    return dflt;
}

static bool s_true(const msgpack_object *map, const char *key)
{
    const msgpack_object *t = s_map_get(map, key);
    return t && t->type == MSGPACK_OBJECT_BOOLEAN && t->via.boolean;
}

void zxc_exec_clear(zxc_exec_t *x)
{
    free(x->out);
    free(x->err);
    x->out = x->err = NULL;
    x->out_len = x->err_len = 0;
    x->out_trunc = x->err_trunc = false;
}

void zxc_exec_decode(zxc_exec_t *x, const void *v, size_t n)
{
    zxc_exec_clear(x);
    x->ok = true;
    x->exit_code = x->exitval = x->sig = 0;
    x->timed_out = false;
    msgpack_zone zone;
    msgpack_zone_init(&zone, 256);
    msgpack_object obj;
    size_t off = 0;
    if (msgpack_unpack(v, n, &off, &zone, &obj) == MSGPACK_UNPACK_SUCCESS &&
        obj.type == MSGPACK_OBJECT_MAP) {
        s_take_bin(&obj, "stdout", &x->out, &x->out_len);
        s_take_bin(&obj, "stderr", &x->err, &x->err_len);
        x->out_trunc = s_true(&obj, "stdout_truncated");
        x->err_trunc = s_true(&obj, "stderr_truncated");
        x->timed_out = s_true(&obj, "timed_out");
        long ex = s_int_of(s_map_get(&obj, "exit"), 0);
        x->sig = (int)s_int_of(s_map_get(&obj, "signal"), 0);
        x->exitval = ex < 0 ? 0 : (int)ex;
        x->exit_code = x->timed_out ? 124 : x->sig ? 128 + x->sig : (int)ex;
        x->start = s_double_of(s_map_get(&obj, "started"), x->start);
        x->runtime = s_double_of(s_map_get(&obj, "runtime"), x->runtime);
        x->ok = x->exit_code == 0;
    }
    msgpack_zone_destroy(&zone);
}

/* The exit status for the log from a failed exec's exception (workers
   without check=false raise for every failure). */
static int s_exit_of(const zx_error_t *e)
{
    const char *m = e->message ? e->message : "";
    const char *p;
    int v;
    if ((p = strstr(m, "exited with status ")) && sscanf(p, "exited with status %d", &v) == 1) {
        return v;
    }
    if ((p = strstr(m, "killed by signal ")) && sscanf(p, "killed by signal %d", &v) == 1) {
        return 128 + v;
    }
    if (e->type && strcmp(e->type, "TimeLimitError") == 0) {
        return 124;
    }
    if (strstr(m, "cannot run")) {
        return 127;
    }
    return 255;
}

void zxc_exec_failed(zxc_exec_t *x, const zx_error_t *e)
{
    zxc_exec_clear(x);
    x->ok = false;
    x->timed_out = false;
    x->exit_code = e ? s_exit_of(e) : 255;
    x->exitval = x->exit_code;
    x->sig = 0;
}

void zxc_exec_err_append(zxc_exec_t *x, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = NULL;
    int k = vasprintf(&msg, fmt, ap);
    va_end(ap);
    if (k > 0) {
        char *e = realloc(x->err, x->err_len + (size_t)k);
        if (e) {
            memcpy(e + x->err_len, msg, (size_t)k);
            x->err = e;
            x->err_len += (size_t)k;
        }
    }
    free(msg);
}

void zxc_exec_note(zxc_exec_t *x, const char *cmd, const char *label, int rc, const zx_error_t *e,
                   const char *node, int attempts, double timeout, size_t max_output)
{
    if (x->out_trunc || x->err_trunc) {
        size_t at = max_output ? max_output : x->out_trunc ? x->out_len : x->err_len;
        zxc_exec_err_append(x, "zexec %s: %s: %s%s%s truncated at %zu bytes (--max-output)\n", cmd,
                            label, x->out_trunc ? "stdout" : "",
                            x->out_trunc && x->err_trunc ? " and " : "",
                            x->err_trunc ? "stderr" : "", at);
    }
    const char *on = node && *node ? " on " : "", *nd = node && *node ? node : "";
    const char *s_att = attempts == 1 ? "" : "s";
    if (rc == ZX_OK && !x->ok) {
        if (x->timed_out && timeout > 0) {
            zxc_exec_err_append(x,
                                "zexec %s: %s failed%s%s after %d attempt%s: ran past "
                                "--timeout %g s and was killed\n",
                                cmd, label, on, nd, attempts, s_att, timeout);
        } else if (x->timed_out) {
            zxc_exec_err_append(x,
                                "zexec %s: %s failed%s%s after %d attempt%s: ran past "
                                "--timeout and was killed\n",
                                cmd, label, on, nd, attempts, s_att);
        } else if (x->sig) {
            zxc_exec_err_append(x,
                                "zexec %s: %s failed%s%s after %d attempt%s: killed by "
                                "signal %d (%s)\n",
                                cmd, label, on, nd, attempts, s_att, x->sig, strsignal(x->sig));
        } else {
            zxc_exec_err_append(x,
                                "zexec %s: %s failed%s%s after %d attempt%s: exited with "
                                "status %d\n",
                                cmd, label, on, nd, attempts, s_att, x->exit_code);
        }
    } else if (rc != ZX_OK) {
        const char *m = e && e->message ? e->message : zx_strerror(rc);
        size_t ml = strlen(m);
        zxc_exec_err_append(x, "zexec %s: %s failed%s%s after %d attempt%s: %s: %s%s", cmd, label,
                            on, nd, attempts, s_att, e && e->type ? e->type : "Error", m,
                            ml && m[ml - 1] == '\n' ? "" : "\n");
    }
}

bool zxc_write(FILE *out, const char *p, size_t len, const char *tag)
{
    if (!tag) {
        if (len && fwrite(p, 1, len, out) != len) {
            return false;
        }
    } else {
        size_t tl = strlen(tag);
        bool bol = true;
        for (size_t i = 0; i < len;) {
            if (bol && (fwrite(tag, 1, tl, out) != tl || fputc('\t', out) == EOF)) {
                return false;
            }
            const char *nl = memchr(p + i, '\n', len - i);
            size_t n = nl ? (size_t)(nl - (p + i)) + 1 : len - i;
            if (fwrite(p + i, 1, n, out) != n) {
                return false;
            }
            i += n;
            bol = nl != NULL;
        }
    }
    return fflush(out) == 0;
}
