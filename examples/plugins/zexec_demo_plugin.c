/*  zexec_demo_plugin.c - the functions the seed examples and the worker
    tests call, as a worker plugin (libzexec_demo_plugin.so):

      square [n]            -> n * n
      divide [a, b]         -> a / b (float), or raises ZeroDivisionError
      task [n, scale?]      -> n * 10.0 after n * scale seconds (the seeds' task)
      task_pair [n, secs]   -> [n, n * 10.0] after secs seconds
      slow_square [n, secs] -> n * n after secs seconds
      download [url, scale?]-> "Content of <url>" after 0.1..0.4 s * scale;
                               raises HTTPError for URLs containing "bad"
      getpid []             -> this process's pid (the built-in "pid" gives [node, pid])
      touch [path]          -> creates path (a task that leaves a trace); true
      init_count []         -> how many times zexec_plugin_init ran in this process
      crash []              -> raise(SIGSEGV)            (process pool only)
      abort_ []             -> abort()                   (process pool only)
      exit_ [code]          -> exit(code)                (process pool only)
      busy []               -> loops forever             (process pool only)
      alloc [bytes]         -> malloc + memset, returns bytes; MemoryError if
                               malloc fails              (process pool only)
      hog []                -> takes memory until malloc fails, then segfaults
                                                         (process pool only)

    zexec_plugin_init runs once in the worker and once in each new
    process-pool child (as Python's initializer). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "zexec_worker.h"

/* Counted per process: a forked child inherits its parent's count, so the
   count restarts when the pid changes. */
static pid_t s_init_pid;
static int s_init_count;

int zexec_plugin_init(void)
{
    if (s_init_pid != getpid()) {
        s_init_pid = getpid();
        s_init_count = 0;
    }
    s_init_count++;
    return 0;
}

static bool s_num(const msgpack_object *args, uint32_t i, double *out)
{
    if (args->via.array.size <= i) {
        return false;
    }
    const msgpack_object *o = &args->via.array.ptr[i];
    switch (o->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER: *out = (double)o->via.u64; return true;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: *out = (double)o->via.i64; return true;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: *out = o->via.f64; return true;
    default: return false;
    }
}

static bool s_int(const msgpack_object *args, uint32_t i, int64_t *out)
{
    if (args->via.array.size <= i) {
        return false;
    }
    const msgpack_object *o = &args->via.array.ptr[i];
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX) {
        *out = (int64_t)o->via.u64;
        return true;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *out = o->via.i64;
        return true;
    }
    return false;
}

static void s_sleep(double secs)
{
    if (!(secs > 0)) {
        return;
    }
    if (secs > 1e6) {
        secs = 1e6;
    }
    struct timespec ts = {(time_t)secs, (long)((secs - (double)(time_t)secs) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int s_square(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    int64_t n;
    if (s_int(args, 0, &n)) {
        msgpack_pack_int64(result, n * n);
        return ZX_OK;
    }
    double d;
    if (s_num(args, 0, &d)) {
        msgpack_pack_double(result, d * d);
        return ZX_OK;
    }
    return zx_raise(task, "TypeError", "square takes one number");
}

static int s_divide(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    double a, b;
    if (!s_num(args, 0, &a) || !s_num(args, 1, &b)) {
        return zx_raise(task, "TypeError", "divide takes two numbers");
    }
    if (b == 0) {
        return zx_raise(task, "ZeroDivisionError", "division by zero");
    }
    msgpack_pack_double(result, a / b);
    return ZX_OK;
}

static int s_task(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    double n, scale = 1.0;
    if (!s_num(args, 0, &n) || (args->via.array.size > 1 && !s_num(args, 1, &scale))) {
        return zx_raise(task, "TypeError", "task takes [n, scale]");
    }
    s_sleep(n * scale);
    msgpack_pack_double(result, n * 10.0);
    return ZX_OK;
}

static int s_task_pair(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    int64_t n;
    double secs = 0;
    if (!s_int(args, 0, &n) || (args->via.array.size > 1 && !s_num(args, 1, &secs))) {
        return zx_raise(task, "TypeError", "task_pair takes [n, seconds]");
    }
    s_sleep(secs);
    msgpack_pack_array(result, 2);
    msgpack_pack_int64(result, n);
    msgpack_pack_double(result, (double)n * 10.0);
    return ZX_OK;
}

static int s_slow_square(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    int64_t n;
    double secs = 0;
    if (!s_int(args, 0, &n) || (args->via.array.size > 1 && !s_num(args, 1, &secs))) {
        return zx_raise(task, "TypeError", "slow_square takes [n, seconds]");
    }
    s_sleep(secs);
    msgpack_pack_int64(result, n * n);
    return ZX_OK;
}

static int s_download(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    double scale = 1.0;
    if (args->via.array.size < 1 || args->via.array.ptr[0].type != MSGPACK_OBJECT_STR ||
        (args->via.array.size > 1 && !s_num(args, 1, &scale))) {
        return zx_raise(task, "TypeError", "download takes [url, scale]");
    }
    const msgpack_object_str *url = &args->via.array.ptr[0].via.str;
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid() ^ (unsigned)url->size;
    s_sleep((0.1 + 0.1 * (double)(rand_r(&seed) % 4)) * scale);
    if (memmem(url->ptr, url->size, "bad", 3)) {
        return zx_raise(task, "HTTPError", "404 Not Found: %.*s", (int)url->size, url->ptr);
    }
    char buf[300];
    int n = snprintf(buf, sizeof buf, "Content of %.*s", (int)(url->size > 255 ? 255 : url->size),
                     url->ptr);
    msgpack_pack_str(result, (size_t)n);
    msgpack_pack_str_body(result, buf, (size_t)n);
    return ZX_OK;
}

static int s_pid(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    msgpack_pack_int64(result, (int64_t)getpid());
    return ZX_OK;
}

static int s_touch(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    if (args->via.array.size < 1 || args->via.array.ptr[0].type != MSGPACK_OBJECT_STR ||
        args->via.array.ptr[0].via.str.size >= 4096) {
        return zx_raise(task, "TypeError", "touch takes [path]");
    }
    char path[4096];
    const msgpack_object_str *s = &args->via.array.ptr[0].via.str;
    memcpy(path, s->ptr, s->size);
    path[s->size] = 0;
    int fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) {
        return zx_raise(task, "OSError", "cannot create %s: %s", path, strerror(errno));
    }
    close(fd);
    msgpack_pack_true(result);
    return ZX_OK;
}

static int s_init_count_fn(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    msgpack_pack_int(result, s_init_pid == getpid() ? s_init_count : 0);
    return ZX_OK;
}

static int s_crash(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    raise(SIGSEGV);
    return zx_raise(task, "RuntimeError", "still alive after SIGSEGV");
}

static int s_abort(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    abort();
}

static int s_exit(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    int64_t code = 0;
    s_int(args, 0, &code);
    _exit((int)code);
}

static int s_busy(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    volatile unsigned long spin = 0;
    for (;;) {
        spin++;
    }
    return ZX_OK;
}

static int s_alloc(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    int64_t bytes;
    if (!s_int(args, 0, &bytes) || bytes < 0) {
        return zx_raise(task, "TypeError", "alloc takes [bytes]");
    }
    char *p = malloc((size_t)bytes);
    if (!p && bytes > 0) {
        return zx_raise(task, "MemoryError", "cannot allocate %lld bytes", (long long)bytes);
    }
    memset(p, 0x5a, (size_t)bytes);
    msgpack_pack_int64(result, bytes);
    free(p);
    return ZX_OK;
}

/* Takes memory 1 MiB at a time until malloc fails, then crashes the way
   code that does not check malloc does (keeps what it took: the child is
   about to die anyway). */
static int s_hog(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    for (;;) {
        char *p = malloc(1 << 20);
        if (!p) {
            raise(SIGSEGV);
            return zx_raise(task, "RuntimeError", "still alive after SIGSEGV");
        }
        memset(p, 0x5a, 1 << 20);
    }
}

const zx_plugin_entry_t zexec_plugin[] = {
    {"square", s_square, ZX_POOLS_ANY},
    {"divide", s_divide, ZX_POOLS_ANY},
    {"task", s_task, ZX_POOLS_ANY},
    {"task_pair", s_task_pair, ZX_POOLS_ANY},
    {"slow_square", s_slow_square, ZX_POOLS_ANY},
    {"download", s_download, ZX_POOLS_ANY},
    {"getpid", s_pid, ZX_POOLS_ANY},
    {"touch", s_touch, ZX_POOLS_ANY},
    {"init_count", s_init_count_fn, ZX_POOLS_ANY},
    {"crash", s_crash, ZX_POOLS_PROCESS},
    {"abort_", s_abort, ZX_POOLS_PROCESS},
    {"exit_", s_exit, ZX_POOLS_PROCESS},
    {"busy", s_busy, ZX_POOLS_PROCESS},
    {"alloc", s_alloc, ZX_POOLS_PROCESS},
    {"hog", s_hog, ZX_POOLS_PROCESS},
    {NULL, NULL, 0},
};
