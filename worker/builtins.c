/*  builtins.c - the functions every worker offers unless told not to:
    echo, sleep, fail, pid, and exec (a command line, only with --allow-exec,
    only in the process pool so that a command never runs from the worker's
    main process).
*/
#include "zx_worker_int.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ZXW_EXEC_MAX_OUTPUT_DEFAULT (1u << 20)
#define ZXW_EXEC_MAX_OUTPUT_LIMIT (32u << 20)

static char s_node[ZXP_MAX_NAME + 1] = "";

void zxw_builtins_set_node(const char *node)
{
    snprintf(s_node, sizeof s_node, "%s", node ? node : "");
}

int zxw_status_of(const zx_task_t *task, int st)
{
    if (st == ZXP_ST_RAISED && task->err_type) {
        if (strcmp(task->err_type, "TimeLimitError") == 0) {
            return ZXP_ST_TIMELIMIT;
        }
        if (strcmp(task->err_type, "MemoryError") == 0) {
            return ZXP_ST_MEMORY;
        }
    }
    return st;
}

int zxw_check_result_size(int st, msgpack_sbuffer *sb)
{
    size_t max = (size_t)zxp_max_msg();
    if (sb->size <= max) {
        return st;
    }
    char msg[160];
    snprintf(msg, sizeof msg, "the result (%zu bytes) is larger than the message limit (%zu bytes)",
             sb->size, max);
    msgpack_sbuffer_clear(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    zx__pack_error(&pk, "ResultTooLarge", msg, "");
    return ZXP_ST_RAISED;
}

static void s_pack_str(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static bool s_number(const msgpack_object *o, double *out)
{
    switch (o->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER: *out = (double)o->via.u64; return true;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: *out = (double)o->via.i64; return true;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: *out = o->via.f64; return isfinite(o->via.f64); /* NaN: no */
    default: return false;
    }
}

/* A str or bin argument as a new C string (NULs kept out by the caller's
   choice of length); NULL on the wrong type. */
static char *s_strdup_obj(const msgpack_object *o)
{
    const char *p;
    size_t n;
    if (o->type == MSGPACK_OBJECT_STR) {
        p = o->via.str.ptr;
        n = o->via.str.size;
    } else if (o->type == MSGPACK_OBJECT_BIN) {
        p = o->via.bin.ptr;
        n = o->via.bin.size;
    } else {
        return NULL;
    }
    if (memchr(p, 0, n)) {
        return NULL;
    }
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, p, n);
        s[n] = 0;
    }
    return s;
}

static bool s_key_is(const msgpack_object *k, const char *name)
{
    size_t n = strlen(name);
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
           memcmp(k->via.str.ptr, name, n) == 0;
}

int zxw_builtin_echo(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    (void)task;
    msgpack_pack_object(result, *args);
    return ZX_OK;
}

int zxw_builtin_sleep(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    double secs;
    if (args->via.array.size < 1 || !s_number(&args->via.array.ptr[0], &secs) || secs < 0 ||
        secs > 1e9) {
        return zx_raise(task, "TypeError", "sleep takes one argument: seconds (a number >= 0)");
    }
    /* to the nanosecond on CLOCK_MONOTONIC (zclock_mono's clock, in ms), so
       sleep(0.0005) sleeps half a millisecond, as Python's time.sleep does */
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t end = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec + (int64_t)(secs * 1e9);
    /* stop at the time limit: a thread-pool sleeper frees its thread on time */
    int64_t limit = task->deadline_ms * 1000000;
    bool cut = task->deadline_ms && limit < end;
    int64_t until = cut ? limit : end;
    struct timespec ts = {(time_t)(until / 1000000000), (long)(until % 1000000000)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
    if (cut) {
        return zx_raise(task, "TimeLimitError", "sleep cut short by the task's time limit");
    }
    msgpack_pack_double(result, secs);
    return ZX_OK;
}

int zxw_builtin_fail(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    (void)result;
    char *type = args->via.array.size > 0 ? s_strdup_obj(&args->via.array.ptr[0]) : NULL;
    char *msg = args->via.array.size > 1 ? s_strdup_obj(&args->via.array.ptr[1]) : NULL;
    int rc = zx_raise(task, type && *type ? type : "Error", "%s", msg ? msg : "");
    free(type);
    free(msg);
    return rc;
}

int zxw_builtin_pid(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    (void)task;
    (void)args;
    msgpack_pack_array(result, 2);
    s_pack_str(result, s_node, strlen(s_node));
    msgpack_pack_int64(result, (int64_t)getpid());
    return ZX_OK;
}

/* ---- exec ----------------------------------------------------------------- */

typedef struct {
    char **argv;
    size_t argc;
    char **env;
    size_t envc;
    char *cwd;
    bool check; /* raise on a non-zero exit or a timeout (the default) */
    zxw_exec_opts_t o;
} s_exec_args_t;

static void s_exec_args_fini(s_exec_args_t *a)
{
    for (size_t i = 0; i < a->argc; i++) {
        free(a->argv[i]);
    }
    free(a->argv);
    for (size_t i = 0; i < a->envc; i++) {
        free(a->env[i]);
    }
    free(a->env);
    free(a->cwd);
}

/* Fills a from [argv, opts]; NULL or the reason it is malformed. */
static const char *s_exec_parse(const msgpack_object *args, s_exec_args_t *a, int64_t task_deadline)
{
    memset(a, 0, sizeof *a);
    a->check = true;
    a->o.max_output = ZXW_EXEC_MAX_OUTPUT_DEFAULT;
    a->o.deadline = task_deadline;
    if (args->via.array.size < 1 || args->via.array.ptr[0].type != MSGPACK_OBJECT_ARRAY ||
        args->via.array.ptr[0].via.array.size == 0) {
        return "exec takes [argv, opts]: argv a non-empty array of strings";
    }
    const msgpack_object_array *av = &args->via.array.ptr[0].via.array;
    a->argv = calloc(av->size + 1, sizeof(char *));
    if (!a->argv) {
        return "out of memory";
    }
    for (uint32_t i = 0; i < av->size; i++) {
        a->argv[i] = s_strdup_obj(&av->ptr[i]);
        if (!a->argv[i]) {
            return "argv holds something that is not a string without NUL bytes";
        }
        a->argc++;
    }
    if (args->via.array.size < 2 || args->via.array.ptr[1].type == MSGPACK_OBJECT_NIL) {
        return NULL;
    }
    if (args->via.array.ptr[1].type != MSGPACK_OBJECT_MAP) {
        return "exec opts must be a map";
    }
    const msgpack_object_map *m = &args->via.array.ptr[1].via.map;
    for (uint32_t i = 0; i < m->size; i++) {
        const msgpack_object *k = &m->ptr[i].key, *v = &m->ptr[i].val;
        if (s_key_is(k, "stdin")) {
            if (v->type == MSGPACK_OBJECT_BIN) {
                a->o.stdin_data = v->via.bin.ptr;
                a->o.stdin_len = v->via.bin.size;
            } else if (v->type == MSGPACK_OBJECT_STR) {
                a->o.stdin_data = v->via.str.ptr;
                a->o.stdin_len = v->via.str.size;
            } else {
                return "opts.stdin must be bytes";
            }
        } else if (s_key_is(k, "cwd")) {
            free(a->cwd);
            a->cwd = s_strdup_obj(v);
            if (!a->cwd) {
                return "opts.cwd must be a string";
            }
            a->o.cwd = a->cwd;
        } else if (s_key_is(k, "timeout")) {
            double t;
            if (!s_number(v, &t) || t < 0 || t > 1e9) {
                return "opts.timeout must be a number of seconds >= 0";
            }
            if (t > 0) {
                int64_t d = zclock_mono() + (int64_t)(t * 1000.0);
                if (!a->o.deadline || d < a->o.deadline) {
                    a->o.deadline = d;
                }
            }
        } else if (s_key_is(k, "check")) {
            if (v->type != MSGPACK_OBJECT_BOOLEAN) {
                return "opts.check must be a boolean";
            }
            a->check = v->via.boolean;
        } else if (s_key_is(k, "max_output")) {
            if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
                return "opts.max_output must be a byte count";
            }
            a->o.max_output = v->via.u64 > ZXW_EXEC_MAX_OUTPUT_LIMIT ? ZXW_EXEC_MAX_OUTPUT_LIMIT
                                                                     : (size_t)v->via.u64;
        } else if (s_key_is(k, "env")) {
            if (v->type != MSGPACK_OBJECT_MAP) {
                return "opts.env must be a map of strings";
            }
            const msgpack_object_map *e = &v->via.map;
            free(a->env);
            a->env = calloc(e->size + 1, sizeof(char *));
            if (!a->env) {
                return "out of memory";
            }
            for (uint32_t j = 0; j < e->size; j++) {
                char *ek = s_strdup_obj(&e->ptr[j].key), *ev = s_strdup_obj(&e->ptr[j].val);
                char *kv = NULL;
                if (ek && ev && *ek && !strchr(ek, '=') && asprintf(&kv, "%s=%s", ek, ev) < 0) {
                    kv = NULL;
                }
                free(ek);
                free(ev);
                if (!kv) {
                    return "opts.env must map names (without '=') to strings";
                }
                a->env[a->envc++] = kv;
            }
            a->o.env = a->env;
        }
        /* unknown keys are ignored: later versions may add options */
    }
    return NULL;
}

static void s_pack_bin(msgpack_packer *pk, const char *p, size_t n)
{
    msgpack_pack_bin(pk, n);
    msgpack_pack_bin_body(pk, p ? p : "", n);
}

static void s_pack_bool(msgpack_packer *pk, bool b)
{
    if (b) {
        msgpack_pack_true(pk);
    } else {
        msgpack_pack_false(pk);
    }
}

int zxw_builtin_exec(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    if (task->pool != ZX_POOL_PROCESS) {
        /* never fork a command from the worker's own (threaded) process */
        return zx_raise(task, "NotAllowedError", "exec runs only in the process pool");
    }
    s_exec_args_t a;
    const char *bad = s_exec_parse(args, &a, task->deadline_ms);
    if (bad) {
        s_exec_args_fini(&a);
        return zx_raise(task, "TypeError", "%s", bad);
    }
    zxw_exec_result_t r;
    /* when and for how long the command itself ran (zexec run's job log) */
    struct timespec t0;
    clock_gettime(CLOCK_REALTIME, &t0);
    int64_t m0 = zclock_mono();
    int rc = zxw_plat_exec(a.argv, &a.o, &r);
    double runtime = (double)(zclock_mono() - m0) / 1000.0;
    /* the tail goes into a message string: keep it a C string */
    for (size_t i = 0; i < r.err_tail_len; i++) {
        if (r.err_tail[i] == 0) {
            r.err_tail[i] = '?';
        }
    }
    char tail[sizeof r.err_tail + 1];
    memcpy(tail, r.err_tail, r.err_tail_len);
    tail[r.err_tail_len] = 0;
    char what[128];
    int out = ZX_OK;
    if (rc != 0 || r.exec_errno) {
        out = zx_raise(task, "ExecError", "cannot run '%s': %s", a.argv[0],
                       strerror(r.exec_errno ? r.exec_errno : errno));
    } else if (!a.check || (!r.timed_out && WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0)) {
        /* check false: every outcome is a result, output included */
        bool exited = !r.timed_out && WIFEXITED(r.status);
        msgpack_pack_map(result, 9);
        s_pack_str(result, "exit", 4);
        msgpack_pack_int(result, exited ? WEXITSTATUS(r.status) : -1);
        s_pack_str(result, "signal", 6);
        msgpack_pack_int(result, WIFSIGNALED(r.status) ? WTERMSIG(r.status) : 0);
        s_pack_str(result, "timed_out", 9);
        s_pack_bool(result, r.timed_out);
        s_pack_str(result, "stdout", 6);
        s_pack_bin(result, r.out, r.out_len);
        s_pack_str(result, "stderr", 6);
        s_pack_bin(result, r.err, r.err_len);
        s_pack_str(result, "stdout_truncated", 16);
        s_pack_bool(result, r.out_trunc);
        s_pack_str(result, "stderr_truncated", 16);
        s_pack_bool(result, r.err_trunc);
        s_pack_str(result, "started", 7);
        msgpack_pack_double(result, (double)t0.tv_sec + (double)t0.tv_nsec / 1e9);
        s_pack_str(result, "runtime", 7);
        msgpack_pack_double(result, runtime);
    } else if (r.timed_out) {
        zx_task_set_traceback(task, tail);
        out = zx_raise(task, "TimeLimitError",
                       "command '%s' ran past its time limit and was killed; stderr tail:\n%s",
                       a.argv[0], tail);
    } else {
        zxw_plat_describe_status(r.status, what, sizeof what);
        zx_task_set_traceback(task, tail);
        out =
            zx_raise(task, "ExecError", "command '%s' %s; stderr tail:\n%s", a.argv[0], what, tail);
    }
    zxw_exec_result_fini(&r);
    s_exec_args_fini(&a);
    return out;
}
