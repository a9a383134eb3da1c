/*  worker.c - the worker node: the embeddable API of zexec_worker.h and the
    main loop that talks ZXP to the broker.

    One thread (the caller of zx_worker_run) runs the main loop. It polls the
    socket's ZMQ_FD, the thread pool's wake-up fd, the stop pipe, and the
    process pool's fork-server and child sockets in one poll, handles
    everything that is ready, then flushes: all WSTARTED items of one loop
    turn go out as one message, then all WRESULT items as one, so a burst of
    finished tasks costs one send.

    The DEALER socket, the job table and the outgoing batches belong to
    whoever holds w->lock: the loop holds it except while it sleeps in poll,
    and a pool thread that finishes a task while the loop sleeps takes it to
    send its result itself (s_direct). ZeroMQ allows a socket to move
    between threads behind a full barrier, which the mutex is. The loop
    polls the raw ZMQ_FD rather than the socket so that sleeping never
    touches the socket; as ZMQ_FD is edge-triggered, every holder checks
    ZMQ_EVENTS before it lets go (s_more_input).

    The broker's silence for liveness x heartbeat means it is gone: the
    DEALER is destroyed and made again with the same routing id, and READY
    is sent with every task the worker still holds. Results that finish
    while the broker is away are held (bounded) and sent when it speaks.
*/
#include "zx_czmq.h"
#include "zx_parent.h"
#include "zx_security.h"
#include "zx_worker_int.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int zx__worker_log_level = 1;

#define ZXW_HELD_MAX_JOBS 10000 /* READY lists them: keep it under the header limit */
#define ZXW_HELD_MAX_BYTES (256u << 20)
#define ZXW_BATCH_BYTES (16u << 20) /* flush a result batch past this */
#define ZXW_RECV_BURST 256          /* messages read per loop turn */
#define ZXW_JOBS_MAX 1000000        /* local sanity bound; the broker's credits rule */
#define ZXW_FREE_JOBS 1024

#define ZXW_INFO(...)                                                                              \
    do {                                                                                           \
        if (zx__worker_log_level >= 1)                                                             \
            zsys_info(__VA_ARGS__);                                                                \
    } while (0)
#define ZXW_DEBUG(...)                                                                             \
    do {                                                                                           \
        if (zx__worker_log_level >= 2)                                                             \
            zsys_debug(__VA_ARGS__);                                                               \
    } while (0)

typedef struct {
    void *handle;
    char *path;
} s_plugin_t;

struct zx_worker {
    char *endpoint;
    char *node;
    zx_worker_opts_t opts; /* normalised; opts.node points at node */
    zhashx_t *fns;         /* name -> zxw_fn_t */
    zlistx_t *plugins;     /* s_plugin_t */
    zxw_init_fn **inits;   /* NULL-terminated */
    size_t ninits;
    zxw_child_cfg_t cfg;
    int stop_pipe[2];
    int stop_requests; /* atomic: written from signal handlers */
    bool running;
    pthread_mutex_t lock; /* everything below, while running (see the top) */
    bool looping;         /* the loop runs: s_direct may stand in for it */

    /* while running */
    uint8_t wid[ZXP_ID_LEN];
    uint32_t pid;
    zsock_t *dealer;
    zxw_tpool_t *tpool;
    zxw_ppool_t *ppool;
    zxw_jobtab_t jobs;       /* key -> job: every job the broker should hear of */
    const zxw_fn_t *last_fn; /* the function of the last task (s_on_task) */
    zlistx_t *trunning;      /* thread-pool jobs running (for their deadlines) */
    zlistx_t *held;          /* finished while the broker was away */
    size_t held_bytes;
    zxw_job_t *free_jobs;
    size_t nfree;
    zxp_in_t in;
    zxp_out_t out_started, out_result, out_cancelled;
    bool started_open, result_open, cancelled_open;
    size_t result_bytes;
    uint32_t credit_thread; /* late-freed thread slots to report */
    zxp_drops_t drops;
    bool connected; /* the broker spoke since the last (re)connect */
    int64_t hb_ms;
    int64_t last_recv, next_hb;
    bool draining, forced, said_drain;
    size_t tzombies;                    /* thread jobs past their limit, still running */
    size_t tjobs;                       /* thread jobs pushed and not yet ended for the broker */
    zxw_job_t *tpush_head, *tpush_tail; /* thread jobs of this message, not pushed yet */
    int tpush_n;
    zx_sec_t *sec; /* CURVE keys and signer (security.c) */
};

/* ---- job keys and allocation ------------------------------------------- */

static void s_make_key(uint8_t key[ZXW_KEY_LEN], const uint8_t *session, uint64_t seq)
{
    memcpy(key, session, ZXP_ID_LEN);
    for (int i = 0; i < 8; i++) {
        key[ZXP_ID_LEN + i] = (uint8_t)(seq >> (56 - 8 * i));
    }
}

static zxw_job_t *s_job_new(zx_worker_t *w)
{
    zxw_job_t *job = w->free_jobs;
    if (job) {
        w->free_jobs = job->free_next;
        w->nfree--;
        memset(job, 0, sizeof *job);
    } else {
        job = calloc(1, sizeof *job);
    }
    return job;
}

static void s_job_free(zx_worker_t *w, zxw_job_t *job)
{
    zframe_destroy(&job->args);
    zframe_destroy(&job->result);
    if (w->nfree < ZXW_FREE_JOBS) {
        job->free_next = w->free_jobs;
        w->free_jobs = job;
        w->nfree++;
    } else {
        free(job);
    }
}

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
    zx_worker_opts_t o = {0};
    if (opts) {
        o = *opts;
    }
    if (o.node && !s_name_ok(o.node)) {
        zsys_error("worker: node name must be 1..%d bytes", ZXP_MAX_NAME);
        return NULL;
    }
    if (o.heartbeat < 0 || o.liveness < 0 || o.time_limit < 0 || o.max_tasks_per_child < 0 ||
        o.prefetch < 0 || o.threads < -1 || o.procs < -1) {
        zsys_error("worker: negative option value");
        return NULL;
    }
    zx_worker_t *w = calloc(1, sizeof *w);
    if (!w) {
        return NULL;
    }
    w->stop_pipe[0] = w->stop_pipe[1] = -1;
    pthread_mutex_init(&w->lock, NULL);
    w->endpoint = strdup(broker_endpoint ? broker_endpoint : ZX_DEFAULT_WORKER_ENDPOINT);
    w->node = o.node ? strdup(o.node) : s_hostname();
    w->fns = zhashx_new();
    w->plugins = zlistx_new();
    w->inits = calloc(1, sizeof *w->inits);
    if (!w->endpoint || !w->node || !w->fns || !w->plugins || !w->inits ||
        pipe2(w->stop_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        zx_worker_destroy(&w);
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
    w->sec = zx_sec_new(o.key, o.server_key, o.secret_file, true);
    if (!w->sec) {
        zx_worker_destroy(&w);
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
static void s_kick(zx_worker_t *w)
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
    s_kick(w); /* async-signal-safe: one write */
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
    free(w->node);
    zx_sec_destroy(&w->sec);
    for (int i = 0; i < 2; i++) {
        if (w->stop_pipe[i] >= 0) {
            close(w->stop_pipe[i]);
        }
    }
    pthread_mutex_destroy(&w->lock);
    free(w);
}

/* ---- sending --------------------------------------------------------------- */

static int s_avail_pools(zx_worker_t *w)
{
    return (w->tpool ? ZX_POOLS_THREAD : 0) | (w->ppool ? ZX_POOLS_PROCESS : 0);
}

static void s_send_ready(zx_worker_t *w)
{
    zxp_out_t o;
    zxp_out_init(&o);
    zxp_out_begin(&o, ZXP_READY);
    msgpack_packer *pk = zxp_out_pk(&o);
    msgpack_pack_array(pk, 10);
    msgpack_pack_uint32(pk, ZXP_VERSION);
    msgpack_pack_bin(pk, ZXP_ID_LEN);
    msgpack_pack_bin_body(pk, w->wid, ZXP_ID_LEN);
    size_t nl = strlen(w->node);
    msgpack_pack_str(pk, nl);
    msgpack_pack_str_body(pk, w->node, nl);
    msgpack_pack_uint32(pk, w->pid);
    msgpack_pack_uint32(pk, w->tpool ? (uint32_t)w->opts.threads : 0);
    msgpack_pack_uint32(pk, w->ppool ? (uint32_t)w->opts.procs : 0);
    msgpack_pack_uint32(pk, (uint32_t)w->opts.prefetch);
    msgpack_pack_uint32(pk, (uint32_t)w->hb_ms);
    /* functions: only the pools this node has */
    int avail = s_avail_pools(w);
    size_t nfns = 0;
    for (zxw_fn_t *f = zhashx_first(w->fns); f; f = zhashx_next(w->fns)) {
        nfns += (f->pools & avail) != 0;
    }
    msgpack_pack_array(pk, nfns);
    for (zxw_fn_t *f = zhashx_first(w->fns); f; f = zhashx_next(w->fns)) {
        if (f->pools & avail) {
            size_t n = strlen(f->name);
            msgpack_pack_array(pk, 2);
            msgpack_pack_str(pk, n);
            msgpack_pack_str_body(pk, f->name, n);
            msgpack_pack_uint8(pk, (uint8_t)(f->pools & avail));
        }
    }
    /* every task this worker will still report on: queued, running, or
       finished with its result held */
    msgpack_pack_array(pk, w->jobs.count);
    size_t pos = 0;
    for (zxw_job_t *job; (job = zxw_jobtab_next(&w->jobs, &pos));) {
        msgpack_pack_array(pk, 3);
        msgpack_pack_bin(pk, ZXP_ID_LEN);
        msgpack_pack_bin_body(pk, job->key, ZXP_ID_LEN);
        msgpack_pack_uint64(pk, job->seq);
        msgpack_pack_uint8(pk, job->pool);
    }
    zxp_out_send(&o, w->dealer, NULL);
    zxp_out_fini(&o);
    ZXW_DEBUG("worker: READY sent (%zu functions, %zu tasks held)", nfns, w->jobs.count);
}

static void s_flush(zx_worker_t *w)
{
    /* STARTED before RESULT: a task that started and ended in one turn
       is seen in that order */
    if (w->started_open) {
        zxp_out_send(&w->out_started, w->dealer, NULL);
        w->started_open = false;
    }
    if (w->result_open) {
        zxp_out_send(&w->out_result, w->dealer, NULL);
        w->result_open = false;
        w->result_bytes = 0;
    }
    if (w->cancelled_open) {
        zxp_out_send(&w->out_cancelled, w->dealer, NULL);
        w->cancelled_open = false;
    }
    if (w->credit_thread && w->connected) {
        zxp_send_credit(w->dealer, ZXP_POOL_THREAD, w->credit_thread);
    }
    w->credit_thread = 0;
}

static void s_emit_started(zx_worker_t *w, zxw_job_t *job)
{
    if (!w->connected) {
        return; /* READY's list tells a new broker instead */
    }
    if (!w->started_open) {
        zxp_out_begin(&w->out_started, ZXP_WSTARTED);
        w->started_open = true;
    }
    zxp_put_wstarted(&w->out_started, job->key, job->seq, job->pid, job->pool);
    if (w->out_started.count >= ZXP_MAX_BATCH) {
        zxp_out_send(&w->out_started, w->dealer, NULL);
        w->started_open = false;
    }
}

/* Emits one WRESULT item. Its payload is *payload (consumed), or when that
   is NULL the len bytes at small (copied). */
static void s_emit_result(zx_worker_t *w, const uint8_t *session, uint64_t seq, int status,
                          uint32_t pid, uint8_t pool, bool slot_freed, zframe_t **payload,
                          const void *small, size_t len)
{
    if (!w->result_open) {
        zxp_out_begin(&w->out_result, ZXP_WRESULT);
        w->result_open = true;
    }
    zxp_wresult_t r = {session, seq, (uint32_t)status, pid, pool, slot_freed};
    zxp_put_wresult(&w->out_result, &r);
    if (*payload) {
        w->result_bytes += zframe_size(*payload);
        zxp_out_payload(&w->out_result, payload);
    } else {
        w->result_bytes += len;
        zxp_out_payload_mem(&w->out_result, small, len);
    }
    if (w->out_result.count >= ZXP_MAX_BATCH || w->result_bytes >= ZXW_BATCH_BYTES) {
        if (w->started_open) {
            /* a task's STARTED always goes out ahead of its RESULT */
            zxp_out_send(&w->out_started, w->dealer, NULL);
            w->started_open = false;
        }
        zxp_out_send(&w->out_result, w->dealer, NULL);
        w->result_open = false;
        w->result_bytes = 0;
    }
}

static void s_emit_cancelled(zx_worker_t *w, const uint8_t *session, uint64_t seq, int outcome)
{
    if (!w->cancelled_open) {
        zxp_out_begin(&w->out_cancelled, ZXP_WCANCELLED);
        w->cancelled_open = true;
    }
    zxp_put_wcancelled(&w->out_cancelled, session, seq, (uint32_t)outcome);
    if (w->out_cancelled.count >= ZXP_MAX_BATCH) {
        zxp_out_send(&w->out_cancelled, w->dealer, NULL);
        w->cancelled_open = false;
    }
}

/* An immediate failure of a task that never became a job. */
static void s_reject(zx_worker_t *w, const zxp_task_t *t, int status, const char *type,
                     const char *msg)
{
    ZXW_DEBUG("worker: task %.*s refused: %s", (int)t->fn.len, t->fn.ptr, msg);
    zframe_t *err = zxp_error_frame(type, msg, "");
    s_emit_result(w, t->session, t->seq, status, w->pid, t->pool ? t->pool : ZXP_POOL_THREAD, true,
                  &err, NULL, 0);
}

/* ---- job endings ------------------------------------------------------------- */

static size_t s_result_size(const zxw_job_t *job)
{
    size_t len;
    zxw_job_result(job, &len);
    return len;
}

static void s_drop_held_oldest(zx_worker_t *w)
{
    zxw_job_t *old = zlistx_detach(w->held, NULL);
    if (!old) {
        return;
    }
    w->held_bytes -= s_result_size(old);
    zxw_jobtab_del(&w->jobs, old->key);
    zsys_warning("worker: too many results held for an absent broker; dropped one (the broker "
                 "re-runs its task)");
    s_job_free(w, old);
}

/* job is finished with job->status/result/pid set: send or hold, then
   forget it. slot_freed is false only for a thread past its limit. */
static void s_job_finish(zx_worker_t *w, zxw_job_t *job, bool slot_freed)
{
    if (!w->connected) {
        job->held = true;
        job->state = slot_freed ? ZXW_FINISHED : ZXW_TIMEDOUT;
        job->rhandle = zlistx_add_end(w->held, job);
        w->held_bytes += s_result_size(job);
        while (zlistx_size(w->held) > ZXW_HELD_MAX_JOBS || w->held_bytes > ZXW_HELD_MAX_BYTES) {
            s_drop_held_oldest(w);
        }
        return;
    }
    size_t len;
    const void *small = zxw_job_result(job, &len);
    s_emit_result(w, job->key, job->seq, job->status, job->pid, job->pool, slot_freed, &job->result,
                  small, len);
    zxw_jobtab_del(&w->jobs, job->key);
    s_job_free(w, job);
}

static void s_release_held(zx_worker_t *w)
{
    zxw_job_t *job;
    size_t n = zlistx_size(w->held);
    while ((job = zlistx_detach(w->held, NULL))) {
        job->held = false;
        job->rhandle = NULL;
        w->held_bytes -= s_result_size(job);
        s_job_finish(w, job, job->state != ZXW_TIMEDOUT);
    }
    if (n) {
        ZXW_INFO("worker: sent %zu result(s) held while the broker was away", n);
    }
}

static void s_pp_started(void *arg, zxw_job_t *job)
{
    zx_worker_t *w = arg;
    job->state = ZXW_RUNNING;
    s_emit_started(w, job);
}

static void s_pp_done(void *arg, zxw_job_t *job)
{
    zx_worker_t *w = arg;
    job->state = ZXW_FINISHED;
    s_job_finish(w, job, true); /* no result frame: an empty result */
}

static void s_drop_job(void *arg, zxw_job_t *job)
{
    zx_worker_t *w = arg;
    if (job->pool == ZXP_POOL_THREAD) {
        w->tjobs--;
    }
    zxw_jobtab_del(&w->jobs, job->key);
    s_job_free(w, job);
}

/* ---- the broker's commands ---------------------------------------------------- */

static const char *s_pool_name(int pool)
{
    return pool == ZXP_POOL_THREAD ? "thread" : pool == ZXP_POOL_PROCESS ? "process" : "any";
}

/* Tasks for the thread pool are pushed in lists of up to this many: one
   lock and one signal per list, and the pool starts on a long batch before
   the whole message is decoded. */
#define S_PUSH_BATCH 32

static void s_push_thread_jobs(zx_worker_t *w)
{
    zxw_tpool_push(w->tpool, w->tpush_head);
    w->tpush_head = w->tpush_tail = NULL;
    w->tpush_n = 0;
}

/* The arguments are *payload (taken), or when that is NULL the len bytes
   at data (copied). */
static void s_on_task(zx_worker_t *w, const zxp_task_t *t, zframe_t **payload, const void *data,
                      size_t len)
{
    if (w->draining) {
        /* the broker re-queues what we never ran when it sees BYE */
        zframe_destroy(payload);
        return;
    }
    char name[ZXP_MAX_NAME + 1];
    memcpy(name, t->fn.ptr, t->fn.len);
    name[t->fn.len] = 0;
    uint8_t key[ZXW_KEY_LEN];
    s_make_key(key, t->session, t->seq);
    if (zxw_jobtab_get(&w->jobs, key)) {
        ZXW_DEBUG("worker: duplicate task %s seq %llu ignored", name, (unsigned long long)t->seq);
        zframe_destroy(payload);
        return;
    }
    char msg[512];
    /* tasks come in runs of one function: functions are never removed, so
       the last one found stays valid */
    const zxw_fn_t *fn = w->last_fn;
    if (!fn || strcmp(fn->name, name) != 0) {
        fn = zhashx_lookup(w->fns, name);
        w->last_fn = fn ? fn : w->last_fn;
    }
    if (!fn) {
        snprintf(msg, sizeof msg, "no function %s on node %s", name, w->node);
        s_reject(w, t, ZXP_ST_NOFUNC, "NoFunctionError", msg);
        zframe_destroy(payload);
        return;
    }
    if (fn->exec && !w->opts.allow_exec) {
        snprintf(msg, sizeof msg, "exec not allowed on node %s (start it with --allow-exec)",
                 w->node);
        s_reject(w, t, ZXP_ST_NOTALLOWED, "NotAllowedError", msg);
        zframe_destroy(payload);
        return;
    }
    int avail = s_avail_pools(w);
    int pool = t->pool;
    if (pool == ZXP_POOL_ANY) {
        pool = (fn->pools & avail & ZX_POOLS_THREAD)    ? ZXP_POOL_THREAD
               : (fn->pools & avail & ZX_POOLS_PROCESS) ? ZXP_POOL_PROCESS
                                                        : ZXP_POOL_ANY;
    }
    int bit = pool == ZXP_POOL_THREAD ? ZX_POOLS_THREAD : ZX_POOLS_PROCESS;
    if (pool == ZXP_POOL_ANY || !(fn->pools & bit)) {
        snprintf(msg, sizeof msg, "function %s may not run in the %s pool (node %s)", name,
                 s_pool_name(t->pool), w->node);
        s_reject(w, t, ZXP_ST_NOTALLOWED, "NotAllowedError", msg);
        zframe_destroy(payload);
        return;
    }
    if (!(avail & bit)) {
        snprintf(msg, sizeof msg, "node %s has no %s pool", w->node, s_pool_name(pool));
        s_reject(w, t, ZXP_ST_NOTALLOWED, "NotAllowedError", msg);
        zframe_destroy(payload);
        return;
    }
    zxw_job_t *job = w->jobs.count < ZXW_JOBS_MAX ? s_job_new(w) : NULL;
    if (!job) {
        s_reject(w, t, ZXP_ST_REJECTED, "RejectedError", "worker is out of task slots");
        zframe_destroy(payload);
        return;
    }
    memcpy(job->key, key, ZXW_KEY_LEN);
    job->seq = t->seq;
    job->fn = fn;
    job->pool = (uint8_t)pool;
    job->flags = t->flags;
    double limit = t->timeout_ms ? (double)t->timeout_ms : w->opts.time_limit * 1000.0;
    job->limit_ms = limit > 0 ? (int64_t)(limit + 0.5) : 0;
    if (*payload) {
        job->args = *payload;
        *payload = NULL;
    } else if (len <= sizeof job->args_small) {
        if (len) {
            memcpy(job->args_small, data, len);
        }
        job->args_len = (uint8_t)len;
    } else if (!(job->args = zframe_new(data, len))) {
        s_job_free(w, job);
        s_reject(w, t, ZXP_ST_REJECTED, "RejectedError", "worker is out of memory");
        return;
    }
    job->pid = w->pid;
    if (zxw_jobtab_put(&w->jobs, job) != 0) {
        s_job_free(w, job);
        s_reject(w, t, ZXP_ST_REJECTED, "RejectedError", "worker is out of memory");
        return;
    }
    ZXW_DEBUG("worker: task %s seq %llu -> %s pool", name, (unsigned long long)t->seq,
              s_pool_name(pool));
    if (pool == ZXP_POOL_THREAD) {
        w->tjobs++;
        /* pushed with the rest of the message's tasks (s_push_thread_jobs) */
        if (w->tpush_tail) {
            w->tpush_tail->tq_next = job;
        } else {
            w->tpush_head = job;
        }
        w->tpush_tail = job;
        if (++w->tpush_n == S_PUSH_BATCH) {
            s_push_thread_jobs(w);
        }
    } else {
        zxw_ppool_push(w->ppool, job); /* may finish it at once (broken pool) */
    }
}

static void s_on_cancel(zx_worker_t *w, const zxp_in_t *in, size_t i)
{
    const msgpack_object *it = zxp_item(in, i);
    const uint8_t *session = (const uint8_t *)zxp_s(it, 0).ptr;
    uint64_t seq = zxp_u(it, 1);
    bool terminate = zxp_b(it, 2);
    uint8_t key[ZXW_KEY_LEN];
    s_make_key(key, session, seq);
    zxw_job_t *job = zxw_jobtab_get(&w->jobs, key);
    int outcome = ZXP_CANCEL_REFUSED;
    if (job && !job->held) {
        if (job->pool == ZXP_POOL_THREAD) {
            if (zxw_tpool_cancel(w->tpool, job)) {
                outcome = ZXP_CANCEL_DONE;
                w->tjobs--;
            }
        } else {
            outcome = zxw_ppool_cancel(w->ppool, job, terminate);
        }
        if (outcome != ZXP_CANCEL_REFUSED) {
            ZXW_DEBUG("worker: task %s seq %llu %s", job->fn->name, (unsigned long long)seq,
                      outcome == ZXP_CANCEL_DONE ? "cancelled" : "terminated");
            zxw_jobtab_del(&w->jobs, key);
            s_job_free(w, job);
        }
    }
    s_emit_cancelled(w, session, seq, outcome);
}

static int s_connect(zx_worker_t *w)
{
    w->dealer = zsock_new(ZMQ_DEALER);
    if (!w->dealer) {
        return ZX_ENOMEM;
    }
    zxp_sock_setup(w->dealer);
    zsock_set_rcvtimeo(w->dealer, 0); /* the loop reads until EAGAIN */
    zx_sec_socket(w->sec, w->dealer, ZXP_ROLE_BROKER_W);
    zmq_setsockopt(zsock_resolve(w->dealer), ZMQ_ROUTING_ID, w->wid, ZXP_ID_LEN);
    if (zsock_connect(w->dealer, "%s", w->endpoint) != 0) {
        zsys_error("worker: cannot connect to %s: %s", w->endpoint, zmq_strerror(zmq_errno()));
        zsock_destroy(&w->dealer);
        return ZX_EINVAL;
    }
    w->connected = false;
    w->last_recv = zclock_mono();
    s_send_ready(w);
    return ZX_OK;
}

/* The broker went silent or is stopping: a fresh DEALER with the same
   routing id, READY again, results held until the broker speaks. */
static void s_reconnect(zx_worker_t *w, const char *why)
{
    zsys_warning("worker: %s; reconnecting to %s", why, w->endpoint);
    s_flush(w);
    zsock_destroy(&w->dealer);
    if (s_connect(w) != ZX_OK) {
        zsys_error("worker: cannot recreate the broker socket");
    }
}

static void s_begin_drain(zx_worker_t *w)
{
    if (!w->draining) {
        w->draining = true;
        if (w->tpool) {
            zxw_tpool_drop_queued(w->tpool, s_drop_job, w);
        }
        if (w->ppool) {
            zxw_ppool_drop_queued(w->ppool, s_drop_job, w);
        }
        ZXW_INFO("worker: draining: finishing %zu running task(s), taking no new ones",
                 w->tjobs + (w->ppool ? zxw_ppool_busy(w->ppool) : 0));
    }
    if (!w->said_drain && w->connected) {
        zxp_send_empty(w->dealer, NULL, ZXP_DRAIN);
        w->said_drain = true;
    }
}

static void s_on_message(zx_worker_t *w, zmsg_t **msg_p)
{
    int rc = zx_sec_verify(w->sec, *msg_p, ZXP_ROLE_WORKER);
    if (rc != 0) {
        zmsg_destroy(msg_p);
        zxp_drop(&w->drops, "worker", NULL, rc, "signature check failed");
        return;
    }
    rc = zxp_decode(&w->in, msg_p, ZXP_ROLE_WORKER);
    if (rc != 0) {
        zxp_drop(&w->drops, "worker", NULL, rc, w->in.reason);
        return;
    }
    w->last_recv = zclock_mono();
    if (!w->connected) {
        w->connected = true;
        ZXW_INFO("worker: broker %s answered", w->endpoint);
        s_release_held(w);
        if (w->draining) {
            s_begin_drain(w);
        }
    }
    switch (w->in.cmd) {
    case ZXP_TASK:
        for (size_t i = 0; i < w->in.count; i++) {
            zxp_task_t t;
            zxp_get_task(&w->in, i, &t);
            const void *data = NULL;
            size_t len = 0;
            zframe_t *payload = NULL;
            if (!zxp_payload_take_inline(&w->in, &data, &len)) {
                payload = zxp_payload_take(&w->in);
            }
            s_on_task(w, &t, &payload, data, len);
        }
        s_push_thread_jobs(w);
        break;
    case ZXP_WCANCEL:
        for (size_t i = 0; i < w->in.count; i++) {
            s_on_cancel(w, &w->in, i);
        }
        break;
    case ZXP_RESET:
        ZXW_INFO("worker: the broker does not know us; sending READY again");
        s_send_ready(w);
        break;
    case ZXP_ERROR: {
        const msgpack_object *h = zxp_item(&w->in, 0);
        zxp_str_t m = zxp_s(h, 1);
        zsys_warning("worker: broker error %llu: %.*s", (unsigned long long)zxp_u(h, 0), (int)m.len,
                     m.ptr);
        break;
    }
    case ZXP_SHUTDOWN: s_reconnect(w, "the broker is shutting down"); break;
    case ZXP_WELCOME: ZXW_DEBUG("worker: welcomed by the broker"); break;
    default: break; /* HEARTBEAT: liveness is all */
    }
}

/* ---- thread-pool events and deadlines ----------------------------------------- */

static void s_tpool_events(zx_worker_t *w, bool disarm)
{
    zxw_job_t *started, *done;
    zxw_tpool_take(w->tpool, &started, &done, disarm);
    for (zxw_job_t *job = started; job; job = job->started_next) {
        if (job->quick) {
            continue; /* done too: its WRESULT alone says it ran */
        }
        job->rhandle = zlistx_add_end(w->trunning, job);
        s_emit_started(w, job);
    }
    for (zxw_job_t *job = done, *next; job; job = next) {
        next = job->done_next;
        if (job->state == ZXW_TIMEDOUT && !job->held) {
            /* its TIMELIMIT result went out at the deadline: just the slot */
            w->tzombies--;
            w->credit_thread++;
            s_job_free(w, job);
            continue;
        }
        if (job->rhandle) {
            zlistx_detach(w->trunning, job->rhandle);
            job->rhandle = NULL;
        }
        w->tjobs--;
        s_job_finish(w, job, true);
    }
}

/* The first running thread job past its deadline, or NULL. The list holds
   at most one job per thread, and expiry is rare, so a scan per expiry is
   cheaper than keeping it sorted. */
static zxw_job_t *s_first_expired(zx_worker_t *w, int64_t now)
{
    for (zxw_job_t *job = zlistx_first(w->trunning); job; job = zlistx_next(w->trunning)) {
        if (job->deadline && now >= job->deadline) {
            return job;
        }
    }
    return NULL;
}

static void s_thread_deadlines(zx_worker_t *w, int64_t now)
{
    zxw_job_t *job;
    while ((job = s_first_expired(w, now))) {
        zlistx_detach(w->trunning, job->rhandle);
        job->rhandle = NULL;
        if (!zxw_tpool_expire(w->tpool, job)) {
            continue; /* it just finished: its done event is on the way */
        }
        zxw_jobtab_del(&w->jobs, job->key);
        w->tzombies++;
        w->tjobs--;
        /* the thread keeps job; the broker hears now, from a stand-in */
        zxw_job_t *r = s_job_new(w);
        if (!r) {
            continue;
        }
        memcpy(r->key, job->key, ZXW_KEY_LEN);
        r->seq = job->seq;
        r->fn = job->fn;
        r->pool = ZXP_POOL_THREAD;
        r->pid = job->pid;
        r->status = ZXP_ST_TIMELIMIT;
        char msg[256];
        snprintf(msg, sizeof msg,
                 "task ran past its time limit of %.3f s in the thread pool of node %s; its "
                 "thread finishes in the background",
                 (double)job->limit_ms / 1000.0, w->node);
        r->result = zxp_error_frame("TimeLimitError", msg, "");
        /* it takes the slot job just left, so this put never grows the
           table and cannot fail: the broker hears of the task either way */
        (void)zxw_jobtab_put(&w->jobs, r);
        s_job_finish(w, r, false);
    }
}

static int64_t s_next_thread_deadline(zx_worker_t *w)
{
    int64_t next = 0;
    for (zxw_job_t *job = zlistx_first(w->trunning); job; job = zlistx_next(w->trunning)) {
        if (job->deadline && (!next || job->deadline < next)) {
            next = job->deadline;
        }
    }
    return next;
}

/* Tasks the broker still waits on that will end here (not counting
   threads past their limit, already reported). */
static size_t s_running(zx_worker_t *w)
{
    return w->tjobs + (w->ppool ? zxw_ppool_busy(w->ppool) : 0);
}

/* ---- run ------------------------------------------------------------------------ */

static void s_stop_cb(void *arg)
{
    zx_worker_stop(arg);
}

/* Under the lock, before letting go of it: whether a message waits on the
   socket. ZMQ_FD only signals a change, and a send or this very check may
   consume the change that said a message came, so whoever lets go of the
   lock asks here and makes sure the loop does not sleep on it. */
static bool s_more_input(zx_worker_t *w)
{
    return w->dealer && (zsock_events(w->dealer) & ZMQ_POLLIN);
}

/* The pool's direct hook, on a pool thread that just finished a task: if
   the loop sleeps (the lock is free), do its work for the thread pool's
   events here and send the result now, sparing the loop a wake-up. */
static bool s_direct(void *arg)
{
    zx_worker_t *w = arg;
    if (pthread_mutex_trylock(&w->lock) != 0) {
        return false; /* the loop is awake: it takes the events itself */
    }
    bool done = w->looping && !w->draining; /* draining: the loop counts down */
    bool wake = false;
    if (done) {
        s_tpool_events(w, true);
        s_flush(w);
        wake = s_more_input(w);
    }
    pthread_mutex_unlock(&w->lock);
    if (wake) {
        s_kick(w);
    }
    return done;
}

static void s_loop(zx_worker_t *w)
{
    size_t max_items = 3 + (w->ppool ? zxw_ppool_max_items(w->ppool) : 0);
    zmq_pollitem_t *items = calloc(max_items, sizeof *items);
    struct pollfd *fds = calloc(max_items, sizeof *fds);
    if (!items || !fds) {
        free(items);
        free(fds);
        return;
    }
    int64_t live_ms = w->hb_ms * (int64_t)w->opts.liveness;
    w->next_hb = zclock_mono() + w->hb_ms;
    pthread_mutex_lock(&w->lock);
    w->looping = true;
    bool input = true; /* messages may wait on the socket: read before sleeping */
    if (w->tpool) {
        zxw_tpool_set_direct(w->tpool, s_direct, w);
    }
    for (;;) {
        size_t n = 0;
        void *dealer_handle = zsock_resolve(w->dealer);
        items[n++] = (zmq_pollitem_t){NULL, zsock_fd(w->dealer), ZMQ_POLLIN, 0};
        items[n++] = (zmq_pollitem_t){NULL, w->stop_pipe[0], ZMQ_POLLIN, 0};
        size_t tp_at = n;
        if (w->tpool) {
            items[n++] = (zmq_pollitem_t){NULL, zxw_tpool_fd(w->tpool), ZMQ_POLLIN, 0};
        }
        size_t pp_at = n;
        if (w->ppool) {
            n += zxw_ppool_poll_items(w->ppool, items + n, max_items - n);
        }
        int64_t now = zclock_mono();
        int64_t wake = w->next_hb;
        if (w->last_recv + live_ms < wake) {
            wake = w->last_recv + live_ms;
        }
        int64_t t = w->tpool ? s_next_thread_deadline(w) : 0;
        if (t && t < wake) {
            wake = t;
        }
        t = w->ppool ? zxw_ppool_next_timer(w->ppool) : 0;
        if (t && t < wake) {
            wake = t;
        }
        int timeout = wake > now ? (int)(wake - now) : 0;
        if (!input) {
            input = s_more_input(w);
        }
        if (input) {
            timeout = 0;
        }
        for (size_t i = 0; i < n; i++) {
            fds[i] = (struct pollfd){items[i].fd, POLLIN, 0};
        }
        /* plain poll on raw fds: zmq_poll would first poll with a zero
           timeout (one more syscall per wake-up), and must not touch the
           socket while a pool thread may hold it */
        pthread_mutex_unlock(&w->lock);
        int rc = poll(fds, (nfds_t)n, timeout);
        pthread_mutex_lock(&w->lock);
        if (rc < 0 && errno != EINTR) {
            zsys_error("worker: poll failed: %s", strerror(errno));
            break;
        }
        for (size_t i = 0; i < n; i++) {
            items[i].revents = rc > 0 ? (short)(fds[i].revents & (POLLIN | POLLERR | POLLHUP)) : 0;
        }
        now = zclock_mono();
        if (items[1].revents) {
            char buf[64];
            while (read(w->stop_pipe[0], buf, sizeof buf) > 0) {
            }
        }
        int stops = __atomic_load_n(&w->stop_requests, __ATOMIC_SEQ_CST);
        if (stops > 0) {
            s_begin_drain(w);
            if (stops > 1 && !w->forced) {
                w->forced = true;
                zsys_warning("worker: stopping again: leaving without waiting for %zu task(s)",
                             s_running(w));
            }
        }
        if (w->ppool) {
            zxw_ppool_handle(w->ppool, items + pp_at, n - pp_at);
        }
        if (w->tpool && items[tp_at].revents) {
            s_tpool_events(w, false);
        }
        /* ZMQ_FD readable or not, ask the socket: the signal may have been
           consumed by a pool thread's send (and the socket may have been
           replaced since the poll) */
        if ((input || items[0].revents) && zsock_resolve(w->dealer) == dealer_handle) {
            input = false;
            for (int k = 0; k < ZXW_RECV_BURST; k++) {
                zmsg_t *msg = zmsg_recv(w->dealer); /* RCVTIMEO 0: NULL when none is left */
                if (!msg) {
                    break;
                }
                s_on_message(w, &msg);
                if (zsock_resolve(w->dealer) != dealer_handle) {
                    break;
                }
                input = k + 1 == ZXW_RECV_BURST;
            }
        }
        if (w->tpool) {
            s_thread_deadlines(w, now);
        }
        if (zclock_mono() - w->last_recv > live_ms) {
            s_reconnect(w, "the broker is silent");
        }
        now = zclock_mono();
        if (now >= w->next_hb) {
            zxp_send_empty(w->dealer, NULL, ZXP_HEARTBEAT);
            w->next_hb = now + w->hb_ms;
            if (zx__parent_gone() && !w->draining) {
                /* nobody is left to take the results: leave at once */
                zsys_warning("worker: the program that started this local cluster is gone");
                s_begin_drain(w);
                w->forced = true;
            }
        }
        s_flush(w);
        if (w->draining && (w->forced || s_running(w) == 0)) {
            break;
        }
    }
    /* from here on only this thread touches the socket (zx_worker_run's
       last sends and the pool's shutdown) */
    w->looping = false;
    pthread_mutex_unlock(&w->lock);
    free(items);
    free(fds);
}

int zx_worker_run(zx_worker_t *w)
{
    if (!w || w->running) {
        return ZX_EINVAL;
    }
    w->running = true;
    int rc = ZX_OK;
    w->pid = (uint32_t)getpid();
    w->hb_ms = (int64_t)(w->opts.heartbeat * 1000.0 + 0.5);
    if (w->hb_ms < 10) {
        w->hb_ms = 10;
    }
    if (zxw_plat_random(w->wid, sizeof w->wid) != 0) {
        zsys_error("worker: no randomness for the worker id");
        w->running = false;
        return ZX_EINVAL;
    }
    if (w->wid[0] == 0) {
        w->wid[0] = 1; /* ZeroMQ reserves routing ids starting with 0 */
    }
    zxw_builtins_set_node(w->node);
    zxw_plat_ignore_sigpipe();
    /* the fork server first: before any thread or ZeroMQ context exists */
    if (w->opts.procs > 0) {
        w->cfg = (zxw_child_cfg_t){w->fns, w->inits, w->opts.child_memory, w->node};
        w->ppool = zxw_ppool_new(w->opts.procs, w->opts.max_tasks_per_child, &w->cfg);
        if (!w->ppool) {
            w->running = false;
            return ZX_ENOMEM;
        }
    }
    zx__czmq_init();
    /* after zsys_init, whose own handler would otherwise replace ours */
    zxw_plat_stop_handlers_install(s_stop_cb, w);
    w->trunning = zlistx_new();
    w->held = zlistx_new();
    zxp_in_init(&w->in);
    zxp_out_init(&w->out_started);
    zxp_out_init(&w->out_result);
    zxp_out_init(&w->out_cancelled);
    zxp_drops_init(&w->drops);
    if (zxw_jobtab_init(&w->jobs) != 0) {
        rc = ZX_ENOMEM;
        goto done;
    }
    if (w->opts.threads > 0) {
        w->tpool = zxw_tpool_new(w->opts.threads);
        if (!w->tpool) {
            rc = ZX_ENOMEM;
            goto done;
        }
    }
    rc = s_connect(w);
    if (rc != ZX_OK) {
        goto done;
    }
    if (w->ppool) {
        zxw_ppool_events_t ev = {w, s_pp_started, s_pp_done};
        zxw_ppool_start(w->ppool, &ev);
    }
    char hex[33];
    zxp_hex(w->wid, sizeof w->wid, hex);
    ZXW_INFO("worker: node %s (id %s, pid %u) serving %s with %d thread(s), %d process(es)",
             w->node, hex, w->pid, w->endpoint, w->tpool ? w->opts.threads : 0,
             w->ppool ? w->opts.procs : 0);
    s_loop(w);
    if (w->forced) {
        s_begin_drain(w);
    }
    s_flush(w);
    if (w->connected) {
        zxp_send_empty(w->dealer, NULL, ZXP_BYE);
    }
    ZXW_INFO("worker: node %s leaves", w->node);
done:;
    zxw_ppool_destroy(&w->ppool);
    bool joined = zxw_tpool_destroy(&w->tpool);
    /* jobs left: forced stop or an early failure. A thread still running
       one keeps it (the pool was left behind with it). */
    size_t pos = 0;
    for (zxw_job_t *job; (job = zxw_jobtab_next(&w->jobs, &pos));) {
        if (joined || job->pool != ZXP_POOL_THREAD || job->held) {
            zframe_destroy(&job->args);
            zframe_destroy(&job->result);
            free(job);
        }
    }
    zxw_jobtab_fini(&w->jobs);
    zlistx_destroy(&w->trunning);
    zlistx_destroy(&w->held);
    while (w->free_jobs) {
        zxw_job_t *next = w->free_jobs->free_next;
        free(w->free_jobs);
        w->free_jobs = next;
    }
    w->nfree = 0;
    if (w->dealer) {
        /* let BYE and the last results leave */
        zsock_set_linger(w->dealer, 2000);
        zsock_destroy(&w->dealer);
    }
    zxp_in_fini(&w->in);
    zxp_out_fini(&w->out_started);
    zxp_out_fini(&w->out_result);
    zxp_out_fini(&w->out_cancelled);
    zxp_drops_fini(&w->drops);
    zxw_plat_stop_handlers_restore();
    w->tzombies = 0;
    w->tjobs = 0;
    w->draining = w->forced = w->said_drain = false;
    w->stop_requests = 0;
    w->running = false;
    return rc;
}
