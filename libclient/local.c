/*  local.c - zx_executor_new_local: an in-process thread pool, Python's
    ThreadPoolExecutor. A fixed set of N threads takes tasks from one FIFO
    queue and runs functions registered by name with zx__task_call (the same
    code path as a worker's thread pool), so its futures behave like remote
    ones and mix with them in as_completed and wait.

    Locks: one executor mutex guards the queue, the function table, the
    running slots and the shutdown flag. Lock order: executor, then future
    (zx_client_int.h). A thread takes a task and marks its future RUNNING
    under the executor lock, and cancel looks for the task in the queue under
    the same lock, so a cancel and a start race one way only. Futures are
    completed (callbacks run) with no executor lock held.

    Time limits: a timer thread sleeps until the earliest deadline among the
    running tasks and fails that future with TimeLimitError; the pool thread
    finishes the function in the background (zx_task_expired lets it stop
    early) and its late result is ignored (first completion wins). Such a
    future completes on the timer thread, so its done-callbacks run there.

    Threads: shutdown(wait) and destroy join the pool and timer threads, so
    on one of those threads (a task, a done-callback) shutdown does not wait
    and destroy does not free (s_on_own_thread); the executor is joined by the
    next shutdown(wait) or destroy from another thread.
*/
#include "zx_client_int.h"
#include "zx_list.h"
#include "zx_proto.h"
#include "zx_task.h"
#include "zx_waiter.h"

#include <czmq.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

typedef struct s_job {
    zx__link_t link;     /* in the queue while queued */
    zx_future_t *future; /* the queue's (then the running thread's) reference */
    uint32_t flags;
    double time_limit;
    bool queued;
    size_t len;
    unsigned char args[]; /* copied argument bytes */
} s_job_t;

typedef struct {
    zx_future_t *future; /* borrowed from the job the thread runs; NULL when idle */
    int64_t deadline_ms; /* zclock_mono(); 0: none */
} s_slot_t;

typedef struct {
    zx_executor_t base;
    pthread_mutex_t lock;
    pthread_cond_t work;  /* a job was queued, or shutdown */
    pthread_cond_t timer; /* a deadline was added, or shutdown */
    zx__list_t queue;     /* s_job_t, FIFO */
    zhashx_t *fns;        /* name -> zx_task_fn * */
    uint64_t next_seq;
    bool shutdown;
    bool stopping_timer;
    int nthreads;
    pthread_t *threads;
    s_slot_t *slots;
    pthread_t timer_thread;
    pthread_mutex_t join_lock; /* serialises joining the threads */
    bool joined;
} s_local_t;

static const zx__executor_ops_t s_ops;

/* The executor whose pool or timer thread this is; NULL on other threads. */
static _Thread_local s_local_t *s_own_executor;

/* Per-thread start argument. */
typedef struct {
    s_local_t *self;
    int index;
} s_thread_arg_t;

/* ---- queue (executor lock held) ------------------------------------------- */

static void s_queue_push(s_local_t *self, s_job_t *job)
{
    zx__list_push_back(&self->queue, &job->link);
    job->queued = true;
}

static void s_queue_unlink(s_local_t *self, s_job_t *job)
{
    zx__list_remove(&self->queue, &job->link);
    job->queued = false;
}

static s_job_t *s_queue_head(s_local_t *self)
{
    return self->queue.head ? ZX__CONTAINER(self->queue.head, s_job_t, link) : NULL;
}

/* ---- threads -------------------------------------------------------------- */

static void s_run_job(s_job_t *job, zx_task_fn *fn, int64_t deadline_ms)
{
    zx_future_t *f = job->future;
    if (!fn) {
        char msg[ZXP_MAX_NAME + 64];
        snprintf(msg, sizeof msg, "no function named '%s' is registered with this executor",
                 zx_future_fn(f));
        zx__future_set_exception(f, ZX_ENOFUNC, "NoFunctionError", msg, "", "local", getpid());
        return;
    }
    zx_task_t task;
    zx__task_init(&task, zx_future_fn(f), ZX_POOL_THREAD, deadline_ms);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    int st = (job->flags & ZXP_F_CHUNK) ? zx__task_call_chunk(&task, fn, job->args, job->len, &sb)
                                        : zx__task_call(&task, fn, job->args, job->len, &sb);
    zx__task_fini(&task);
    if (deadline_ms && zclock_mono() >= deadline_ms) {
        /* past the limit: the future fails even if the function won the race
           with the timer thread (typically by checking zx_task_expired) */
        zx__future_set_exception(f, ZX_ETIMELIMIT, "TimeLimitError",
                                 "the task ran past its time limit", "", "local", getpid());
    } else {
        zx__future_complete(f, st, sb.data, sb.size, "local", getpid());
    }
    msgpack_sbuffer_destroy(&sb);
}

static void *s_worker(void *arg)
{
    s_thread_arg_t *ta = arg;
    s_local_t *self = ta->self;
    s_slot_t *slot = &self->slots[ta->index];
    free(ta);
    s_own_executor = self;
    pthread_mutex_lock(&self->lock);
    while (true) {
        while (zx__list_empty(&self->queue) && !self->shutdown) {
            pthread_cond_wait(&self->work, &self->lock);
        }
        s_job_t *job = s_queue_head(self);
        if (!job) {
            break; /* shut down and drained */
        }
        s_queue_unlink(self, job);
        zx__future_set_priv(job->future, NULL);
        zx__future_set_running(job->future);
        zx_task_fn *fn = zhashx_lookup(self->fns, zx_future_fn(job->future));
        int64_t deadline = 0;
        if (job->time_limit > 0) {
            deadline = zclock_mono() + (int64_t)(job->time_limit * 1000.0 + 0.5);
            if (deadline == 0) {
                deadline = 1;
            }
        }
        slot->future = job->future;
        slot->deadline_ms = deadline;
        if (deadline) {
            pthread_cond_signal(&self->timer);
        }
        pthread_mutex_unlock(&self->lock);

        s_run_job(job, fn, deadline);

        pthread_mutex_lock(&self->lock);
        slot->future = NULL;
        slot->deadline_ms = 0;
        pthread_mutex_unlock(&self->lock);
        zx_future_unref(&job->future);
        free(job);
        pthread_mutex_lock(&self->lock);
    }
    pthread_mutex_unlock(&self->lock);
    return NULL;
}

/* Fails the futures of running tasks past their deadline. */
static void *s_timer(void *arg)
{
    s_local_t *self = arg;
    s_own_executor = self;
    pthread_mutex_lock(&self->lock);
    while (!self->stopping_timer) {
        int64_t now = zclock_mono();
        int64_t earliest = 0;
        zx_future_t *expired = NULL;
        for (int i = 0; i < self->nthreads; i++) {
            s_slot_t *s = &self->slots[i];
            if (!s->future || !s->deadline_ms) {
                continue;
            }
            if (s->deadline_ms <= now) {
                /* fail it once: the slot forgets its deadline */
                expired = zx_future_ref(s->future);
                s->deadline_ms = 0;
                break;
            }
            if (!earliest || s->deadline_ms < earliest) {
                earliest = s->deadline_ms;
            }
        }
        if (expired) {
            pthread_mutex_unlock(&self->lock);
            zx__future_set_exception(expired, ZX_ETIMELIMIT, "TimeLimitError",
                                     "the task ran past its time limit", "", "local", getpid());
            zx_future_unref(&expired);
            pthread_mutex_lock(&self->lock);
            continue;
        }
        if (earliest) {
            struct timespec dl = zx__deadline((double)(earliest - now) / 1000.0);
            zx__cond_wait_until(&self->timer, &self->lock, &dl);
        } else {
            pthread_cond_wait(&self->timer, &self->lock);
        }
    }
    pthread_mutex_unlock(&self->lock);
    return NULL;
}

/* ---- ops ------------------------------------------------------------------ */

static zx_future_t *s_submit(zx_executor_t *ex, const char *fn, const void *args, size_t len,
                             const zx_task_opts_t *opts, uint32_t flags, int *err)
{
    s_local_t *self = (s_local_t *)ex;
    s_job_t *job = malloc(sizeof *job + len);
    if (!job) {
        *err = ZX_ENOMEM;
        return NULL;
    }
    memcpy(job->args, args, len);
    job->len = len;
    job->flags = flags;
    job->time_limit = opts ? opts->time_limit : 0;
    pthread_mutex_lock(&self->lock);
    if (self->shutdown) {
        pthread_mutex_unlock(&self->lock);
        free(job);
        *err = ZX_ESHUTDOWN;
        return NULL;
    }
    zx_future_t *f = zx__future_new(ex, fn, ++self->next_seq);
    if (!f) {
        pthread_mutex_unlock(&self->lock);
        free(job);
        *err = ZX_ENOMEM;
        return NULL;
    }
    job->future = zx_future_ref(f); /* the queue's reference */
    zx__future_set_priv(f, job);
    s_queue_push(self, job);
    pthread_cond_signal(&self->work);
    pthread_mutex_unlock(&self->lock);
    return f;
}

static bool s_cancel(zx_executor_t *ex, zx_future_t *f, bool terminate)
{
    s_local_t *self = (s_local_t *)ex;
    pthread_mutex_lock(&self->lock);
    s_job_t *job = zx__future_priv(f);
    if (!job || !job->queued) {
        /* running or done: thread-pool tasks cannot be terminated */
        pthread_mutex_unlock(&self->lock);
        return false;
    }
    s_queue_unlink(self, job);
    zx__future_set_priv(f, NULL);
    pthread_mutex_unlock(&self->lock);
    zx__future_set_cancelled(f, "");
    zx_future_unref(&job->future);
    free(job);
    return true;
}

/* True on one of the executor's own threads: a pool thread (a task or a
   done-callback it runs) or the timer thread (the done-callbacks of a future
   failed by its time limit). Each of them sets s_own_executor when it starts;
   thread ids are not compared because a joined thread's id can be reused. */
static bool s_on_own_thread(s_local_t *self)
{
    return s_own_executor == self;
}

/* Joins the pool and timer threads once. On one of those threads it does
   nothing and returns false: a thread cannot join itself, and taking
   join_lock there would deadlock with another thread joining this one. */
static bool s_join(s_local_t *self)
{
    if (s_on_own_thread(self)) {
        return false;
    }
    pthread_mutex_lock(&self->join_lock);
    if (!self->joined) {
        for (int i = 0; i < self->nthreads; i++) {
            pthread_join(self->threads[i], NULL);
        }
        pthread_mutex_lock(&self->lock);
        self->stopping_timer = true;
        pthread_cond_signal(&self->timer);
        pthread_mutex_unlock(&self->lock);
        pthread_join(self->timer_thread, NULL);
        self->joined = true;
    }
    pthread_mutex_unlock(&self->join_lock);
    return true;
}

static int s_shutdown(zx_executor_t *ex, bool wait, bool cancel_futures)
{
    s_local_t *self = (s_local_t *)ex;
    zx__list_t cancelled;
    zx__list_init(&cancelled);
    pthread_mutex_lock(&self->lock);
    self->shutdown = true;
    if (cancel_futures) {
        for (zx__link_t *k = self->queue.head; k; k = k->next) {
            s_job_t *j = ZX__CONTAINER(k, s_job_t, link);
            j->queued = false;
            zx__future_set_priv(j->future, NULL);
        }
        zx__list_take_all(&cancelled, &self->queue);
    }
    pthread_cond_broadcast(&self->work);
    pthread_mutex_unlock(&self->lock);
    zx__link_t *k;
    while ((k = zx__list_pop_front(&cancelled))) {
        s_job_t *j = ZX__CONTAINER(k, s_job_t, link);
        zx__future_set_cancelled(j->future, "");
        zx_future_unref(&j->future);
        free(j);
    }
    if (wait && !s_join(self)) {
        zsys_warning("zexec client: shutdown(wait) from a local executor's own thread "
                     "(a task or a done-callback) cannot wait; not waiting");
    }
    return ZX_OK;
}

static void s_destroy(zx_executor_t *ex)
{
    s_local_t *self = (s_local_t *)ex;
    if (!s_join(self)) {
        /* destroyed from one of its own threads (documented as not allowed):
           leak rather than free memory that thread still uses */
        zsys_error("zexec client: a local executor cannot be destroyed from its own "
                   "thread; leaking it");
        return;
    }
    zhashx_destroy(&self->fns);
    pthread_cond_destroy(&self->work);
    pthread_cond_destroy(&self->timer);
    pthread_mutex_destroy(&self->lock);
    pthread_mutex_destroy(&self->join_lock);
    free(self->threads);
    free(self->slots);
    free(self);
}

static int s_register(zx_executor_t *ex, const char *name, zx_task_fn *fn)
{
    s_local_t *self = (s_local_t *)ex;
    pthread_mutex_lock(&self->lock);
    zhashx_update(self->fns, name, (void *)fn);
    pthread_mutex_unlock(&self->lock);
    return ZX_OK;
}

static const char *s_endpoint(zx_executor_t *ex)
{
    return "local";
}

static const zx__executor_ops_t s_ops = {
    .kind = "local",
    .submit = s_submit,
    .cancel = s_cancel,
    .shutdown = s_shutdown,
    .destroy = s_destroy,
    .register_fn = s_register,
    .endpoint = s_endpoint,
};

zx_executor_t *zx_executor_new_local(int max_workers)
{
    if (max_workers <= 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        max_workers = cores > 0 ? (int)cores : 1;
    }
    s_local_t *self = calloc(1, sizeof *self);
    if (!self) {
        goto fail;
    }
    self->base.ops = &s_ops;
    zx__list_init(&self->queue);
    self->nthreads = max_workers;
    self->threads = calloc((size_t)max_workers, sizeof *self->threads);
    self->slots = calloc((size_t)max_workers, sizeof *self->slots);
    self->fns = zhashx_new();
    if (!self->threads || !self->slots || !self->fns) {
        goto fail_alloc;
    }
    if (zx__cond_init(&self->timer) != ZX_OK) {
        goto fail_alloc;
    }
    pthread_mutex_init(&self->lock, NULL);
    pthread_mutex_init(&self->join_lock, NULL);
    pthread_cond_init(&self->work, NULL);
    if (pthread_create(&self->timer_thread, NULL, s_timer, self) != 0) {
        goto fail_threads;
    }
    int started = 0;
    for (; started < max_workers; started++) {
        s_thread_arg_t *ta = malloc(sizeof *ta);
        if (!ta) {
            break;
        }
        ta->self = self;
        ta->index = started;
        if (pthread_create(&self->threads[started], NULL, s_worker, ta) != 0) {
            free(ta);
            break;
        }
    }
    if (started < max_workers) {
        /* stop what started, then fail */
        self->nthreads = started;
        s_shutdown(&self->base, true, false);
        s_destroy(&self->base);
        zx__set_last_error(ZX_ENOMEM);
        return NULL;
    }
    return &self->base;

fail_threads:
    pthread_cond_destroy(&self->work);
    pthread_cond_destroy(&self->timer);
    pthread_mutex_destroy(&self->lock);
    pthread_mutex_destroy(&self->join_lock);
fail_alloc:
    zhashx_destroy(&self->fns);
    free(self->threads);
    free(self->slots);
    free(self);
fail:
    zx__set_last_error(ZX_ENOMEM);
    return NULL;
}
