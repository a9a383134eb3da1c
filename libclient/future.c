/*  future.c - zx_future_t: the result of one task, shared by the user's
    threads and the executor that completes it. State machine PENDING ->
    RUNNING -> FINISHED, or PENDING/RUNNING -> CANCELLED; the first completion
    wins and later ones are ignored, so executors may race (a result against a
    time limit, a cancel against a dispatch) without coordinating.

    Locks: one mutex per future guards everything mutable in it. Completion
    updates the state, notifies registered waiters (zx_waiter.h; future lock
    then waiter lock) and broadcasts the future's own condition under that
    lock, then runs the done-callbacks with no lock held on the completing
    thread. The refcount is atomic and needs no lock.
*/
#include "zx_client_int.h"
#include "zx_clock.h"
#include "zx_proto.h"
#include "zx_spin.h"
#include "zx_waiter.h"

#include <czmq.h>
#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct s_callback {
    zx_done_fn *fn;
    void *arg;
    struct s_callback *next;
} s_callback_t;

struct zx_future {
    atomic_int refs;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* broadcast on completion; CLOCK_MONOTONIC */
    zx_state_t state;
    zx_executor_t *ex; /* borrowed; NULL once done (executors may go away then) */
    char *fn;
    uint64_t seq;
    void *priv;
    void *data;
    /* FINISHED with a value */
    void *value;
    size_t value_len;
    /* FINISHED with an exception, or CANCELLED with a reason */
    bool has_error;
    zx_error_t error; /* strings below are owned copies */
    char *node;       /* who produced the result or error; NULL: "" */
    int pid;
    int attempts; /* the broker's count of starts (RESULT), set before completion */
    s_callback_t *cb_head, *cb_tail;
    zx__list_t waiters;   /* zx__waiter_link_t registrations */
    int sleepers;         /* threads asleep in s_wait_done_locked */
    atomic_bool finished; /* set with state, read by spinning waiters */
    /* A small value and a short node name are kept here, not malloc'd: a
       result was a malloc for its bytes and a strdup for its node, freed
       with the future, two of the client's allocations per task. */
    uint8_t value_store[24];
    char node_store[32];
    char fn_store[]; /* fn points here */
};

static const zx_error_t s_timeout_error = {
    ZX_ETIMEOUT, "TimeoutError", "timed out waiting for the future", "", "", 0};
static const zx_error_t s_cancelled_error = {
    ZX_ECANCELLED, "CancelledError", "the future was cancelled", "", "", 0};

/* ---- time helpers shared with waiters.c ----------------------------------- */

static pthread_condattr_t s_condattr;
static pthread_once_t s_condattr_once = PTHREAD_ONCE_INIT;

static void s_condattr_init(void)
{
    pthread_condattr_init(&s_condattr);
    pthread_condattr_setclock(&s_condattr, CLOCK_MONOTONIC);
}

int zx__cond_init(pthread_cond_t *cond)
{
    pthread_once(&s_condattr_once, s_condattr_init);
    return pthread_cond_init(cond, &s_condattr) == 0 ? ZX_OK : ZX_ENOMEM;
}

struct timespec zx__deadline(double timeout)
{
    struct timespec ts;
    if (timeout < 0) {
        ts.tv_sec = -1;
        ts.tv_nsec = 0;
        return ts;
    }
    clock_gettime(CLOCK_MONOTONIC, &ts);
    /* a huge finite timeout must not overflow time_t: treat a century as forever */
    if (timeout > 3.0e9) {
        ts.tv_sec = -1;
        ts.tv_nsec = 0;
        return ts;
    }
    time_t sec = (time_t)timeout;
    long nsec = (long)((timeout - (double)sec) * 1e9);
    ts.tv_sec += sec;
    ts.tv_nsec += nsec;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

int zx__cond_wait_until(pthread_cond_t *cond, pthread_mutex_t *lock,
                        const struct timespec *deadline)
{
    if (deadline->tv_sec < 0) {
        return pthread_cond_wait(cond, lock);
    }
    return pthread_cond_timedwait(cond, lock, deadline);
}

int zx__waiter_init(zx__waiter_t *w, size_t cap)
{
    memset(w, 0, sizeof *w);
    w->cap = cap;
    w->done = calloc(cap ? cap : 1, sizeof *w->done);
    if (!w->done) {
        return ZX_ENOMEM;
    }
    if (zx__cond_init(&w->cond) != ZX_OK) {
        free(w->done);
        return ZX_ENOMEM;
    }
    pthread_mutex_init(&w->lock, NULL);
    return ZX_OK;
}

void zx__waiter_fini(zx__waiter_t *w)
{
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->cond);
    free(w->done);
    w->done = NULL;
}

/* ---- life cycle ----------------------------------------------------------- */

zx_future_t *zx__future_new(zx_executor_t *ex, const char *fn, uint64_t seq)
{
    /* one allocation, the function name inline */
    size_t fn_len = fn ? strlen(fn) : 0;
    zx_future_t *f = calloc(1, sizeof *f + fn_len + 1);
    if (!f) {
        return NULL;
    }
    f->fn = memcpy(f->fn_store, fn ? fn : "", fn_len);
    f->fn[fn_len] = '\0';
    if (zx__cond_init(&f->cond) != ZX_OK) {
        free(f);
        return NULL;
    }
    pthread_mutex_init(&f->lock, NULL);
    atomic_init(&f->refs, 1);
    f->state = ZX_PENDING;
    f->ex = ex;
    f->seq = seq;
    return f;
}

zx_future_t *zx_future_ref(zx_future_t *f)
{
    if (f) {
        atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
    }
    return f;
}

static void s_error_free(zx_future_t *f)
{
    free((char *)f->error.type);
    free((char *)f->error.message);
    free((char *)f->error.traceback);
    f->error.type = f->error.message = f->error.traceback = NULL;
}

void zx_future_unref(zx_future_t **f_p)
{
    if (!f_p || !*f_p) {
        return;
    }
    zx_future_t *f = *f_p;
    *f_p = NULL;
    if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) != 1) {
        return;
    }
    /* Last reference: waiters hold references, so none is registered now.
       Callbacks of a future that never completed are dropped uncalled. */
    s_callback_t *cb = f->cb_head;
    while (cb) {
        s_callback_t *next = cb->next;
        free(cb);
        cb = next;
    }
    s_error_free(f);
    if (f->value != (void *)f->value_store) {
        free(f->value);
    }
    if (f->node != f->node_store) {
        free(f->node);
    }
    pthread_cond_destroy(&f->cond);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

/* ---- accessors ------------------------------------------------------------ */

uint64_t zx__future_seq(const zx_future_t *f)
{
    return f->seq;
}

zx_executor_t *zx__future_executor(const zx_future_t *f)
{
    zx_future_t *mf = (zx_future_t *)f;
    pthread_mutex_lock(&mf->lock);
    zx_executor_t *ex = mf->ex;
    pthread_mutex_unlock(&mf->lock);
    return ex;
}

void zx__future_set_priv(zx_future_t *f, void *priv)
{
    pthread_mutex_lock(&f->lock);
    f->priv = priv;
    pthread_mutex_unlock(&f->lock);
}

void zx__future_init_priv(zx_future_t *f, void *priv)
{
    f->priv = priv;
}

void *zx__future_priv(const zx_future_t *f)
{
    zx_future_t *mf = (zx_future_t *)f;
    pthread_mutex_lock(&mf->lock);
    void *priv = mf->priv;
    pthread_mutex_unlock(&mf->lock);
    return priv;
}

void zx_future_set_data(zx_future_t *f, void *data)
{
    if (!f) {
        return;
    }
    pthread_mutex_lock(&f->lock);
    f->data = data;
    pthread_mutex_unlock(&f->lock);
}

void *zx_future_data(zx_future_t *f)
{
    if (!f) {
        return NULL;
    }
    pthread_mutex_lock(&f->lock);
    void *data = f->data;
    pthread_mutex_unlock(&f->lock);
    return data;
}

const char *zx_future_fn(zx_future_t *f)
{
    return f ? f->fn : NULL;
}

const char *zx_future_node(zx_future_t *f)
{
    const char *node = "";
    if (f && zx_future_done(f)) { /* node is set once, with the outcome */
        zx__future_origin(f, &node, NULL);
    }
    return node;
}

int zx_future_pid(zx_future_t *f)
{
    int pid = 0;
    if (f && zx_future_done(f)) {
        zx__future_origin(f, NULL, &pid);
    }
    return pid;
}

void zx__future_set_attempts(zx_future_t *f, int attempts)
{
    f->attempts = attempts;
}

int zx_future_attempts(zx_future_t *f)
{
    return f && zx_future_done(f) ? f->attempts : 0;
}

zx_state_t zx_future_state(zx_future_t *f)
{
    if (!f) {
        return ZX_PENDING;
    }
    pthread_mutex_lock(&f->lock);
    zx_state_t st = f->state;
    pthread_mutex_unlock(&f->lock);
    return st;
}

bool zx_future_done(zx_future_t *f)
{
    zx_state_t st = zx_future_state(f);
    return st == ZX_FINISHED || st == ZX_CANCELLED;
}

bool zx_future_running(zx_future_t *f)
{
    return zx_future_state(f) == ZX_RUNNING;
}

bool zx_future_cancelled(zx_future_t *f)
{
    return zx_future_state(f) == ZX_CANCELLED;
}

bool zx__future_failed(zx_future_t *f)
{
    pthread_mutex_lock(&f->lock);
    bool failed = f->state == ZX_FINISHED && f->has_error;
    pthread_mutex_unlock(&f->lock);
    return failed;
}

void zx__future_origin(zx_future_t *f, const char **node, int *pid)
{
    pthread_mutex_lock(&f->lock);
    if (node) {
        *node = f->node ? f->node : "";
    }
    if (pid) {
        *pid = f->pid;
    }
    pthread_mutex_unlock(&f->lock);
}

/* ---- waiters -------------------------------------------------------------- */

static bool s_done(const zx_future_t *f)
{
    return f->state == ZX_FINISHED || f->state == ZX_CANCELLED;
}

bool zx__future_add_waiter(zx_future_t *f, zx__waiter_t *w, zx__waiter_link_t *link)
{
    link->waiter = w;
    link->linked = false;
    pthread_mutex_lock(&f->lock);
    bool registered = !s_done(f);
    if (registered) {
        zx__list_push_front(&f->waiters, &link->link);
        link->linked = true;
    }
    pthread_mutex_unlock(&f->lock);
    return registered;
}

void zx__future_remove_waiter(zx_future_t *f, zx__waiter_link_t *link)
{
    pthread_mutex_lock(&f->lock);
    if (link->linked) {
        zx__list_remove(&f->waiters, &link->link);
        link->linked = false;
    }
    pthread_mutex_unlock(&f->lock);
}

size_t zx__future_waiting(zx_future_t *f)
{
    pthread_mutex_lock(&f->lock);
    size_t n = (size_t)f->sleepers + f->waiters.size;
    pthread_mutex_unlock(&f->lock);
    return n;
}

/* ---- completion ----------------------------------------------------------- */

/* Called with f->lock held and f->state just set to a done state: wakes
   result()/exception() waiters and the registered zx__waiter_t's, forgets the
   executor, and detaches the callback list for the caller to run unlocked. */
static s_callback_t *s_finish_locked(zx_future_t *f)
{
    atomic_store_explicit(&f->finished, true, memory_order_release);
    f->ex = NULL;
    f->priv = NULL;
    bool failed = f->state == ZX_FINISHED && f->has_error;
    for (zx__link_t *k = f->waiters.head; k; k = k->next) {
        zx__waiter_link_t *l = ZX__CONTAINER(k, zx__waiter_link_t, link);
        zx__waiter_t *w = l->waiter;
        pthread_mutex_lock(&w->lock);
        if (w->n_done < w->cap) { /* always true: cap >= registrations */
            w->done[w->n_done++] = f;
        }
        if (failed) {
            w->n_failed++;
        }
        pthread_cond_broadcast(&w->cond);
        pthread_mutex_unlock(&w->lock);
        l->linked = false;
    }
    zx__list_init(&f->waiters); /* the links are their waiters' storage */
    pthread_cond_broadcast(&f->cond);
    s_callback_t *cbs = f->cb_head;
    f->cb_head = f->cb_tail = NULL;
    return cbs;
}

/* Runs and frees detached callbacks. The caller holds a reference to f so a
   callback that drops the user's last reference cannot free f under us. */
static void s_run_callbacks(zx_future_t *f, s_callback_t *cb)
{
    while (cb) {
        s_callback_t *next = cb->next;
        cb->fn(f, cb->arg);
        free(cb);
        cb = next;
    }
}

/* Common tail of every completion: runs callbacks without any lock, holding
   our own reference for their duration. */
static void s_after_finish(zx_future_t *f, s_callback_t *cbs)
{
    if (!cbs) {
        return;
    }
    zx_future_ref(f);
    s_run_callbacks(f, cbs);
    zx_future_unref(&f);
}

bool zx__future_set_running(zx_future_t *f)
{
    pthread_mutex_lock(&f->lock);
    bool changed = f->state == ZX_PENDING;
    if (changed) {
        f->state = ZX_RUNNING;
    }
    pthread_mutex_unlock(&f->lock);
    return changed;
}

bool zx__future_set_result_owned(zx_future_t *f, void *value, size_t len)
{
    pthread_mutex_lock(&f->lock);
    if (s_done(f)) {
        pthread_mutex_unlock(&f->lock);
        free(value);
        return false;
    }
    f->value = value;
    f->value_len = len;
    f->state = ZX_FINISHED;
    s_callback_t *cbs = s_finish_locked(f);
    pthread_mutex_unlock(&f->lock);
    s_after_finish(f, cbs);
    return true;
}

/* Whether node fits the future's own store. */
static bool s_node_fits(const zx_future_t *f, const char *node)
{
    return node && *node && strlen(node) < sizeof f->node_store;
}

/* Under f->lock: records where the outcome came from (n: a copy made
   before locking when it does not fit). */
static void s_set_node(zx_future_t *f, const char *node, char *n)
{
    if (s_node_fits(f, node)) {
        f->node = strcpy(f->node_store, node);
    } else {
        f->node = n;
    }
}

/* Like set_result, copying the value and recording where it ran. */
static bool s_set_result_from(zx_future_t *f, const void *value, size_t len, const char *node,
                              int pid)
{
    char *n = node && *node && !s_node_fits(f, node) ? strdup(node) : NULL;
    void *copy = NULL;
    if (len > sizeof f->value_store && !(copy = malloc(len))) {
        free(n);
        return zx__future_set_exception(f, ZX_ENOMEM, "MemoryError",
                                        "out of memory storing the result", "", node, pid);
    }
    pthread_mutex_lock(&f->lock);
    if (s_done(f)) {
        pthread_mutex_unlock(&f->lock);
        free(copy);
        free(n);
        return false;
    }
    f->value = copy ? copy : f->value_store;
    if (len) {
        memcpy(f->value, value, len);
    }
    f->value_len = len;
    s_set_node(f, node, n);
    f->pid = pid;
    f->state = ZX_FINISHED;
    s_callback_t *cbs = s_finish_locked(f);
    pthread_mutex_unlock(&f->lock);
    s_after_finish(f, cbs);
    return true;
}

bool zx__future_set_result(zx_future_t *f, const void *value, size_t len)
{
    void *copy = malloc(len ? len : 1);
    if (!copy) {
        return zx__future_set_exception(f, ZX_ENOMEM, "MemoryError",
                                        "out of memory storing the result", "", "", 0);
    }
    if (len) {
        memcpy(copy, value, len);
    }
    return zx__future_set_result_owned(f, copy, len);
}

static char *s_dup(const char *s)
{
    return strdup(s ? s : "");
}

/* Sets f's error strings (copies); with the state given. Returns as set_*. */
static bool s_set_error(zx_future_t *f, zx_state_t state, int code, const char *type,
                        const char *message, const char *traceback, const char *node, int pid)
{
    char *t = s_dup(type), *m = s_dup(message), *tb = s_dup(traceback);
    char *n = node && *node && !s_node_fits(f, node) ? strdup(node) : NULL;
    pthread_mutex_lock(&f->lock);
    if (s_done(f) || !t || !m || !tb) {
        bool was_done = s_done(f);
        pthread_mutex_unlock(&f->lock);
        free(t);
        free(m);
        free(tb);
        free(n);
        if (!was_done) {
            /* out of memory: still complete, with the static strings */
            return s_set_error(f, state, code, "MemoryError", "out of memory", "", "", pid);
        }
        return false;
    }
    f->has_error = true;
    f->error.code = code;
    f->error.type = t;
    f->error.message = m;
    f->error.traceback = tb;
    s_set_node(f, node, n);
    f->pid = pid;
    f->state = state;
    s_callback_t *cbs = s_finish_locked(f);
    pthread_mutex_unlock(&f->lock);
    s_after_finish(f, cbs);
    return true;
}

bool zx__future_set_exception(zx_future_t *f, int code, const char *type, const char *message,
                              const char *traceback, const char *node, int pid)
{
    return s_set_error(f, ZX_FINISHED, code, type && *type ? type : "Error", message, traceback,
                       node, pid);
}

bool zx__future_set_cancelled(zx_future_t *f, const char *reason)
{
    if (reason && *reason) {
        return s_set_error(f, ZX_CANCELLED, ZX_ECANCELLED, "CancelledError", reason, "", "", 0);
    }
    pthread_mutex_lock(&f->lock);
    if (s_done(f)) {
        pthread_mutex_unlock(&f->lock);
        return false;
    }
    f->state = ZX_CANCELLED;
    s_callback_t *cbs = s_finish_locked(f);
    pthread_mutex_unlock(&f->lock);
    s_after_finish(f, cbs);
    return true;
}

int zx__status_code(int status)
{
    switch (status) {
    case ZXP_ST_OK: return ZX_OK;
    case ZXP_ST_RAISED: return ZX_ERAISED;
    case ZXP_ST_NOFUNC: return ZX_ENOFUNC;
    case ZXP_ST_TIMELIMIT: return ZX_ETIMELIMIT;
    case ZXP_ST_CRASHED: return ZX_ECRASHED;
    case ZXP_ST_WORKERLOST: return ZX_EWORKERLOST;
    case ZXP_ST_CANCELLED: return ZX_ECANCELLED;
    case ZXP_ST_REJECTED: return ZX_EREJECTED;
    case ZXP_ST_MEMORY: return ZX_EMEMORY;
    case ZXP_ST_NOTALLOWED: return ZX_ENOTALLOWED;
    default: return ZX_EPROTO;
    }
}

/* Copies a str/bin msgpack object into a new C string; NULL if another type. */
static char *s_obj_str(const msgpack_object *o)
{
    const char *p;
    uint32_t n;
    if (o->type == MSGPACK_OBJECT_STR) {
        p = o->via.str.ptr;
        n = o->via.str.size;
    } else if (o->type == MSGPACK_OBJECT_BIN) {
        p = o->via.bin.ptr;
        n = o->via.bin.size;
    } else {
        return NULL;
    }
    char *s = malloc((size_t)n + 1);
    if (s) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

/* Decodes an untrusted [type, message, traceback] payload (traceback may be
   missing). 0 with three malloc'd strings, or -1. */
static int s_decode_error(const void *payload, size_t len, char **type, char **message,
                          char **traceback)
{
    *type = *message = *traceback = NULL;
    if (!payload || len == 0) {
        return -1;
    }
    msgpack_zone zone;
    msgpack_object obj;
    msgpack_zone_init(&zone, 256);
    int rc = -1;
    if (zxp_mp_unpack(payload, len, &zone, &obj) == 0 && obj.type == MSGPACK_OBJECT_ARRAY &&
        obj.via.array.size >= 2 && obj.via.array.size <= 3) {
        *type = s_obj_str(&obj.via.array.ptr[0]);
        *message = s_obj_str(&obj.via.array.ptr[1]);
        *traceback = obj.via.array.size == 3 ? s_obj_str(&obj.via.array.ptr[2]) : strdup("");
        if (*type && *message && *traceback) {
            rc = 0;
        } else {
            free(*type);
            free(*message);
            free(*traceback);
            *type = *message = *traceback = NULL;
        }
    }
    msgpack_zone_destroy(&zone);
    return rc;
}

bool zx__future_complete(zx_future_t *f, int status, const void *payload, size_t len,
                         const char *node, int pid)
{
    if (status == ZXP_ST_OK) {
        /* a value is exactly one well-formed msgpack value: anything else
           (raw bytes, a truncated value, `dd ff ff ff ff`) would reach the
           caller as ZX_OK and make its unpacker fail or allocate wildly */
        if (zxp_mp_check(payload, len, ZXP_MAX_DEPTH) != (long)len) {
            char msg[128];
            snprintf(msg, sizeof msg, "the result (%zu bytes) is not one well-formed msgpack value",
                     len);
            return zx__future_set_exception(f, ZX_EPROTO, "ProtocolError", msg, "", node, pid);
        }
        return s_set_result_from(f, payload, len, node, pid);
    }
    char *type, *message, *traceback;
    bool decoded = s_decode_error(payload, len, &type, &message, &traceback) == 0;
    bool changed;
    if (status == ZXP_ST_CANCELLED) {
        changed =
            zx__future_set_cancelled(f, decoded && *message ? message : "terminated while running");
    } else if (!decoded) {
        char msg[96];
        snprintf(msg, sizeof msg, "malformed error payload (%zu bytes) for status %d", len, status);
        changed = zx__future_set_exception(f, ZX_EPROTO, "ProtocolError", msg, "", node, pid);
    } else {
        changed = zx__future_set_exception(f, zx__status_code(status), type, message, traceback,
                                           node, pid);
    }
    free(type);
    free(message);
    free(traceback);
    return changed;
}

/* ---- user API ------------------------------------------------------------- */

/* Waiting. A remote result comes back through a chain of threads in three
   processes; each thread that sleeps lets its core halt, and on a virtual
   machine waking a halted core costs tens of microseconds
   (docs/performance.md, "Waiting"). Two things shorten the chain here:

   - A thread waiting on a remote future leads (ops->lead, remote_io.c):
     while the executor's I/O thread sleeps, the waiting thread reads the
     executor's socket itself and completes futures, its own and others'.
     The result then wakes the thread that waits for it, not the I/O thread
     that would hand it over.
   - A thread whose recent waits were short spins first (busy-polls the
     socket when it leads, else yields in a loop watching the future) for at
     most ZEXEC_SPIN_US microseconds, and only when the machine has an idle
     core (spin.c measures it): its core does not halt. Bounded three ways:
     only while this thread's recent spun waits averaged under that bound
     (zx__spin_plan, with a probe now and then once they did not), never
     past the caller's timeout, and one spinning thread per process. */
static _Thread_local zx__spin_hist_t s_hist; /* this thread's waits */

/* f->lock not held. Returns when f is done or at until_us. It yields rather
   than pauses: the thread stays runnable, so its core does not halt, yet a
   thread the scheduler placed on this core (the client's I/O thread, say)
   runs at once instead of waiting for this one to be preempted (pausing
   measured bimodal, half the runs slower than not spinning at all). */
static void s_spin(zx_future_t *f, int64_t until_us)
{
    while (!atomic_load_explicit(&f->finished, memory_order_acquire) && zx__mono_us() < until_us) {
        sched_yield();
    }
}

static bool s_finished(void *arg)
{
    zx_future_t *f = arg;
    return atomic_load_explicit(&f->finished, memory_order_acquire);
}

int zx__future_leader(zx_future_t *f, zx_executor_t **ex)
{
    pthread_mutex_lock(&f->lock);
    *ex = f->ex;
    int rc = s_done(f) || !f->ex ? 0 : f->ex->ops->lead ? 1 : -1;
    pthread_mutex_unlock(&f->lock);
    return rc;
}

zx_executor_t *zx__future_lead_enter(zx_future_t *f)
{
    pthread_mutex_lock(&f->lock);
    zx_executor_t *ex = f->ex;
    if (s_done(f) || !ex || !ex->ops->lead_enter || !ex->ops->lead_enter(ex)) {
        ex = NULL;
    }
    pthread_mutex_unlock(&f->lock);
    return ex;
}

/* Waits (f->lock held) until f is done or the deadline passes; true if done. */
static bool s_wait_done_locked(zx_future_t *f, double timeout)
{
    if (s_done(f) || timeout == 0) {
        return s_done(f);
    }
    struct timespec dl = zx__deadline(timeout);
    int max_us = zx__spin_max_us();
    int64_t t0 = zx__mono_us();
    int64_t until = dl.tv_sec < 0 ? -1 : t0 + (int64_t)(timeout * 1e6);
    double spin = zx__spin_plan(&s_hist, max_us);
    if (timeout > 0 && spin > timeout * 1e6) {
        spin = timeout * 1e6;
    }
    /* ex is valid while f is not done and we hold its lock */
    zx_executor_t *ex = f->ex;
    bool lead = ex && ex->ops->lead_enter && ex->ops->lead_enter(ex);
    f->sleepers++;
    pthread_mutex_unlock(&f->lock);
    bool spinning = spin >= 1 && zx__spin_begin();
    bool spun = spinning;
    int led = ZX__LEAD_BUSY;
    if (lead) {
        /* ends the spin itself */
        led = ex->ops->lead(ex, s_finished, f, until, spinning ? t0 + (int64_t)spin : 0);
        /* the I/O thread took over: the rest of the spin watches f */
        spinning = led == ZX__LEAD_BUSY && spinning && zx__mono_us() < t0 + (int64_t)spin &&
                   zx__spin_begin();
    }
    if (spinning) {
        s_spin(f, t0 + (int64_t)spin);
        zx__spin_end();
    }
    pthread_mutex_lock(&f->lock);
    while (!s_done(f) && led == ZX__LEAD_BUSY) {
        if (zx__cond_wait_until(&f->cond, &f->lock, &dl) == ETIMEDOUT) {
            break;
        }
    }
    f->sleepers--;
    zx__spin_note(&s_hist, spun, (double)(zx__mono_us() - t0));
    return s_done(f);
}

int zx_future_result(zx_future_t *f, double timeout, const void **value, size_t *value_len)
{
    if (!f) {
        return ZX_EINVAL;
    }
    pthread_mutex_lock(&f->lock);
    int rc;
    if (!s_wait_done_locked(f, timeout)) {
        rc = ZX_ETIMEOUT;
    } else if (f->state == ZX_CANCELLED) {
        rc = ZX_ECANCELLED;
    } else if (f->has_error) {
        rc = ZX_ERAISED;
    } else {
        rc = ZX_OK;
        /* value and value_len never change once FINISHED: safe to hand out */
        if (value) {
            *value = f->value;
        }
        if (value_len) {
            *value_len = f->value_len;
        }
    }
    pthread_mutex_unlock(&f->lock);
    return rc;
}

const zx_error_t *zx_future_exception(zx_future_t *f, double timeout)
{
    if (!f) {
        return NULL;
    }
    pthread_mutex_lock(&f->lock);
    const zx_error_t *err;
    if (!s_wait_done_locked(f, timeout)) {
        err = &s_timeout_error;
    } else if (f->has_error) {
        /* immutable once done; node/pid are filled on demand */
        f->error.node = f->node ? f->node : "";
        f->error.pid = f->pid;
        err = &f->error;
    } else if (f->state == ZX_CANCELLED) {
        err = &s_cancelled_error;
    } else {
        err = NULL;
    }
    pthread_mutex_unlock(&f->lock);
    return err;
}

int zx_future_add_done_callback(zx_future_t *f, zx_done_fn *fn, void *arg)
{
    if (!f || !fn) {
        return ZX_EINVAL;
    }
    s_callback_t *cb = malloc(sizeof *cb);
    if (!cb) {
        return ZX_ENOMEM;
    }
    cb->fn = fn;
    cb->arg = arg;
    cb->next = NULL;
    pthread_mutex_lock(&f->lock);
    if (!s_done(f)) {
        if (f->cb_tail) {
            f->cb_tail->next = cb;
        } else {
            f->cb_head = cb;
        }
        f->cb_tail = cb;
        pthread_mutex_unlock(&f->lock);
        return ZX_OK;
    }
    pthread_mutex_unlock(&f->lock);
    free(cb);
    fn(f, arg); /* already done: at once, on the caller's thread */
    return ZX_OK;
}

/* Shared by cancel and terminate: the executor decides, with no lock held. */
static bool s_cancel(zx_future_t *f, bool terminate)
{
    if (!f) {
        return false;
    }
    pthread_mutex_lock(&f->lock);
    zx_state_t st = f->state;
    zx_executor_t *ex = f->ex;
    pthread_mutex_unlock(&f->lock);
    if (st == ZX_CANCELLED) {
        return true;
    }
    if (st == ZX_FINISHED || (st == ZX_RUNNING && !terminate) || !ex || !ex->ops->cancel) {
        return false;
    }
    /* The executor outlives its unresolved futures (destroy resolves them
       first), so ex is still valid here unless the user destroys it
       concurrently with this call, which is a use-after-destroy. */
    bool ok = ex->ops->cancel(ex, f, terminate);
    return ok || zx_future_cancelled(f);
}

bool zx_future_cancel(zx_future_t *f)
{
    return s_cancel(f, false);
}

bool zx_future_terminate(zx_future_t *f)
{
    return s_cancel(f, true);
}
