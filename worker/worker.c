/*  worker.c - the worker node's embeddable API (zexec_worker.h): a node's
    record and options, the functions it offers (built-ins, registered ones,
    plugins loaded with dlopen), stop and destroy. zx_worker_run, the broker
    session and the loop are in loop.c and session.c (zxw_node.h lists the
    files).

    Functions and plugins are registered before the node runs; once it runs
    they never change, so the loop and the process pool's children read the
    registry without a lock. zx_worker_stop is async-signal-safe: it counts
    the request and writes one byte to the stop pipe that the loop polls.
*/
#include "zx_error.h"
#include "zxw_node.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int zx__worker_log_level = 1;

typedef struct {
    void *handle;
    char *path;
} s_plugin_t;

/* ---- registry ------------------------------------------------------------ */

static void s_fn_destroy(void **item)
{
    zxw_fn_t *fn = *item;
    if (fn) {
        free(fn->name);
        free(fn);
        *item = NULL;
    }
}

static bool s_name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    return n >= 1 && n <= ZXP_MAX_NAME;
}

static int s_register(zx_worker_t *w, const char *name, zx_task_fn *fn, int pools, bool exec)
{
    if (!w || w->running || !s_name_ok(name) || !fn || pools < 0 || pools > ZX_POOLS_ANY) {
        return ZX_EINVAL;
    }
    if (zhashx_lookup(w->fns, name)) {
        zsys_error("worker: function %s is already registered", name);
        return ZX_EINVAL;
    }
    zxw_fn_t *f = calloc(1, sizeof *f);
    if (!f || !(f->name = strdup(name))) {
        free(f);
        return ZX_ENOMEM;
    }
    f->fn = fn;
    f->pools = pools ? pools : ZX_POOLS_ANY;
    f->exec = exec;
    zhashx_insert(w->fns, name, f);
    return ZX_OK;
}

static char *s_hostname(void)
{
    char buf[256] = "";
    if (gethostname(buf, sizeof buf - 1) != 0 || !*buf) {
        snprintf(buf, sizeof buf, "localhost");
    }
    buf[ZXP_MAX_NAME] = 0;
    return strdup(buf);
}

zx_worker_t *zx_worker_new(const char *broker_endpoint, const zx_worker_opts_t *opts)
{
    zx__set_last_error(ZX_OK);
    zx_worker_opts_t o = {0};
    if (opts) {
        o = *opts;
    }
    if (o.node && !s_name_ok(o.node)) {
        zsys_error("worker: node name must be 1..%d bytes", ZXP_MAX_NAME);
        zx__set_last_error(ZX_EINVAL);
        return NULL;
    }
    if (o.heartbeat < 0 || o.liveness < 0 || o.time_limit < 0 || o.max_tasks_per_child < 0 ||
        o.prefetch < 0 || o.threads < -1 || o.procs < -1) {
        zsys_error("worker: negative option value");
        zx__set_last_error(ZX_EINVAL);
        return NULL;
    }
    zx_worker_t *w = calloc(1, sizeof *w);
    if (!w) {
        zx__set_last_error(ZX_ENOMEM);
        return NULL;
    }
    w->stop_pipe[0] = w->stop_pipe[1] = -1;
    w->rescue_fd = -1;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->rescue_cond, NULL);
    w->endpoint = strdup(broker_endpoint ? broker_endpoint : ZX_DEFAULT_WORKER_ENDPOINT);
    w->node = o.node ? strdup(o.node) : s_hostname();
    w->fns = zhashx_new();
    w->plugins = zlistx_new();
    w->inits = calloc(1, sizeof *w->inits);
    if (!w->endpoint || !w->node || !w->fns || !w->plugins || !w->inits ||
        pipe2(w->stop_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        zx_worker_destroy(&w);
        zx__set_last_error(ZX_ENOMEM);
        return NULL;
    }
    char eperr[512];
    if (zx__eps_parse(&w->eps, w->endpoint, eperr, sizeof eperr) != 0) {
        zsys_error("worker: %s", eperr);
        zx_worker_destroy(&w);
        zx__set_last_error(ZX_EINVAL);
        return NULL;
    }
    zhashx_set_destructor(w->fns, s_fn_destroy);
    if (o.threads == 0) {
        o.threads = zxw_plat_cores();
    }
    if (o.procs == 0) {
        o.procs = zxw_plat_cores();
    }
    if (o.prefetch == 0) {
        o.prefetch = 1;
    }
    if (o.heartbeat == 0) {
        o.heartbeat = 1.0;
    }
    if (o.liveness == 0) {
        o.liveness = 3;
    }
    o.node = w->node;
    w->opts = o;
    w->sec = zx__sec_new(o.key, o.server_key, o.secret_file, true);
    if (!w->sec) {
        /* a security configuration error, logged by zx__sec_new */
        zx_worker_destroy(&w);
        zx__set_last_error(ZX_EINVAL);
        return NULL;
    }
    if (!o.no_builtins) {
        s_register(w, "echo", zxw_builtin_echo, ZX_POOLS_ANY, false);
        s_register(w, "sleep", zxw_builtin_sleep, ZX_POOLS_ANY, false);
        s_register(w, "fail", zxw_builtin_fail, ZX_POOLS_ANY, false);
        s_register(w, "pid", zxw_builtin_pid, ZX_POOLS_ANY, false);
        s_register(w, "exec", zxw_builtin_exec, ZX_POOLS_PROCESS, true);
    }
    return w;
}

int zx_worker_register(zx_worker_t *w, const char *name, zx_task_fn *fn, int pools)
{
    return s_register(w, name, fn, pools, false);
}

int zx_worker_load_plugin(zx_worker_t *w, const char *path)
{
    if (!w || w->running || !path) {
        return ZX_EINVAL;
    }
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        zsys_error("worker: cannot load plugin %s: %s", path, dlerror());
        return ZX_EINVAL;
    }
    const zx_plugin_entry_t *table = dlsym(h, ZX_PLUGIN_SYMBOL);
    if (!table) {
        zsys_error("worker: plugin %s exports no %s table", path, ZX_PLUGIN_SYMBOL);
        dlclose(h);
        return ZX_EINVAL;
    }
    /* check the whole table before registering any of it */
    size_t n = 0;
    for (; table[n].name; n++) {
        const zx_plugin_entry_t *e = &table[n];
        bool dup = zhashx_lookup(w->fns, e->name) != NULL;
        for (size_t j = 0; j < n && !dup; j++) {
            dup = strcmp(table[j].name, e->name) == 0;
        }
        if (!s_name_ok(e->name) || !e->fn || e->pools < 0 || e->pools > ZX_POOLS_ANY || dup) {
            zsys_error("worker: plugin %s: entry %zu (%s) is invalid or a duplicate", path, n,
                       e->name);
            dlclose(h);
            return ZX_EINVAL;
        }
    }
    zxw_init_fn *init = (zxw_init_fn *)dlsym(h, ZX_PLUGIN_INIT_SYMBOL);
    if (init) {
        int rc = init();
        if (rc != 0) {
            zsys_error("worker: plugin %s: %s returned %d", path, ZX_PLUGIN_INIT_SYMBOL, rc);
            dlclose(h);
            return ZX_EINVAL;
        }
        zxw_init_fn **inits = realloc(w->inits, (w->ninits + 2) * sizeof *inits);
        if (!inits) {
            dlclose(h);
            return ZX_ENOMEM;
        }
        w->inits = inits;
        w->inits[w->ninits++] = init;
        w->inits[w->ninits] = NULL;
    }
    for (size_t i = 0; i < n; i++) {
        s_register(w, table[i].name, table[i].fn, table[i].pools, false);
    }
    s_plugin_t *p = calloc(1, sizeof *p);
    if (p) {
        p->handle = h;
        p->path = strdup(path);
        zlistx_add_end(w->plugins, p);
    }
    ZXW_INFO("worker: loaded plugin %s (%zu functions)", path, n);
    return ZX_OK;
}

/* Wakes the loop (whether to stop is stop_requests' business). */
void zxw_kick(zx_worker_t *w)
{
    char c = 0;
    if (write(w->stop_pipe[1], &c, 1) < 0) {
        /* full pipe: the loop is already woken */
    }
}

void zx_worker_stop(zx_worker_t *w)
{
    if (!w) {
        return;
    }
    __atomic_add_fetch(&w->stop_requests, 1, __ATOMIC_SEQ_CST);
    zxw_kick(w); /* async-signal-safe: one write */
}

void zx_worker_destroy(zx_worker_t **w_p)
{
    if (!w_p || !*w_p) {
        return;
    }
    zx_worker_t *w = *w_p;
    *w_p = NULL;
    zhashx_destroy(&w->fns);
    if (w->plugins) {
        for (s_plugin_t *p = zlistx_first(w->plugins); p; p = zlistx_next(w->plugins)) {
            dlclose(p->handle);
            free(p->path);
            free(p);
        }
        zlistx_destroy(&w->plugins);
    }
    free(w->inits);
    free(w->endpoint);
    zx__eps_clear(&w->eps);
    free(w->node);
    zx__sec_destroy(&w->sec);
    for (int i = 0; i < 2; i++) {
        if (w->stop_pipe[i] >= 0) {
            close(w->stop_pipe[i]);
        }
    }
    pthread_cond_destroy(&w->rescue_cond);
    pthread_mutex_destroy(&w->lock);
    free(w);
}
