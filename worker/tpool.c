/*  tpool.c - the worker's thread pool: N threads taking jobs from one locked
    FIFO queue and reporting "started" and "done" events back to the main
    loop through two intrusive lists and a wake-up pipe.

    Lock order: one lock (self->lock) guards the queue, every queued or
    running job's state, and the event lists. Taking a job off the queue and
    cancelling it both happen under it, so exactly one of them wins; the same
    for a job finishing and the main loop expiring it at its deadline.

    The main loop is woken only when the event lists go from empty to
    non-empty (the signalled flag), so a burst of results costs one wake-up
    and the main loop sends them as one batch. Under load (the thread has
    another task to run, or others run) a result waits up to 200 us for the
    next ones: a single-thread worker woke its loop, and sent a message,
    for every result of a stream of 35 us chunk tasks, and four such
    workers did 5-10% less than two of two threads (bench F, map(256)).
    A lone task's result still goes at once. A "started" event alone does
    not wake it at once: on Linux the wake-up is a timerfd, armed 1 ms ahead
    for a start and at once for a result. A task that ends within that
    millisecond reaches the main loop as started and done together, and the
    worker then sends its result without a WSTARTED: one message and one
    wake-up per task instead of two, on every hop to the client (bench B).
    A longer task is reported running 1 ms after it starts. Elsewhere a pipe
    is written at once for both.

    The queue is intrusive (tq_prev/tq_next in the job): no allocation per
    push. The main loop pushes a message's tasks as one list, under one lock
    and one signal; a thread that finishes a task while others wait takes
    the next one in the same critical section as its done event. With two
    threads and a loop on one lock, the lock was taken five times per task
    and contended (perf, bench A: a third of the worker in futex waits and
    wakes).

    A thread that finishes a lone task (no other queued or running) while
    the main loop sleeps does not wake it: the direct hook (loop.c) takes
    the worker's lock and sends the result itself, one thread hand-off less
    per task (bench B). Under load, or when the loop is busy, the wake-up
    goes out as before and the loop sends the results in batches.
*/
#include "zx_clock.h"
#include "zx_worker_int.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/timerfd.h>
#define S_TIMERFD 1
#endif

#define S_STARTED_DELAY_NS 1000000L /* a start is reported this late */
#define S_RESULT_DELAY_NS 200000L   /* a result under load, at most this late */

struct zxw_tpool {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    zxw_job_t *q_head, *q_tail; /* queued jobs, linked by tq_prev/tq_next */
    pthread_t *threads;
    int nthreads;
    bool stopping;
    size_t busy;
    zxw_job_t *st_head, *st_tail, *dn_head, *dn_tail;
    bool signalled;  /* woken at once, not taken yet */
    int64_t wake_at; /* the armed later wake-up (CLOCK_MONOTONIC ns), 0: none */
    int pipe[2];     /* pipe[0] is what the main loop polls (the timerfd on Linux) */
    uint32_t pid;
    zxw_tpool_direct_fn *direct; /* may take the events in place of a wake-up */
    void *direct_arg;
    size_t reserved; /* slots taken by tasks the main loop runs itself (loop.c) */
};

/* Under the lock: when the caller must wake the main loop (after
   unlocking): S_NO_WAKE, S_WAKE_NOW, or the CLOCK_MONOTONIC time (ns) to
   arm the timer for. delay_ns is how late this event may reach the loop;
   a wake-up already due no later covers it. */
#define S_NO_WAKE (-1)
#define S_WAKE_NOW 0
static int64_t s_mark_event(zxw_tpool_t *self, int64_t delay_ns)
{
    if (self->signalled) {
        return S_NO_WAKE;
    }
#ifdef S_TIMERFD
    if (delay_ns > 0) {
        int64_t at = zx__mono_us() * 1000 + delay_ns;
        if (self->wake_at && self->wake_at <= at) {
            return S_NO_WAKE;
        }
        self->wake_at = at;
        return at;
    }
#else
    (void)delay_ns;
#endif
    self->signalled = true;
    return S_WAKE_NOW;
}

static void s_wake(zxw_tpool_t *self, int64_t at)
{
    int rc = 0;
    if (at == S_NO_WAKE) {
        return;
    }
#ifdef S_TIMERFD
    /* an armed wake-up is replaced by this one, which is never later */
    struct itimerspec its = {{0, 0}, {0, 1}};
    int flags = 0;
    if (at != S_WAKE_NOW) {
        its.it_value = (struct timespec){(time_t)(at / 1000000000), (long)(at % 1000000000)};
        flags = TFD_TIMER_ABSTIME;
    }
    rc = timerfd_settime(self->pipe[0], flags, &its, NULL);
#else
    char c = 1;
    rc = write(self->pipe[1], &c, 1) < 0 && errno != EAGAIN ? -1 : 0;
#endif
    if (rc != 0) {
        zsys_error("worker: thread pool cannot wake the main loop: %s", strerror(errno));
    }
}

/* Under the lock. */
static void s_unlink(zxw_tpool_t *self, zxw_job_t *job)
{
    if (job->tq_prev) {
        job->tq_prev->tq_next = job->tq_next;
    } else {
        self->q_head = job->tq_next;
    }
    if (job->tq_next) {
        job->tq_next->tq_prev = job->tq_prev;
    } else {
        self->q_tail = job->tq_prev;
    }
    job->tq_prev = job->tq_next = NULL;
}

/* Under the lock: takes the queue's first job and records its start;
   returns how to wake the main loop for the start. */
static int64_t s_start_first(zxw_tpool_t *self, zxw_job_t **job_p)
{
    zxw_job_t *job = self->q_head;
    s_unlink(self, job);
    job->state = ZXW_RUNNING;
    job->pid = self->pid;
    job->deadline = job->limit_ms ? zclock_mono() + job->limit_ms : 0;
    job->started_next = NULL;
    if (self->st_tail) {
        self->st_tail->started_next = job;
    } else {
        self->st_head = job;
    }
    self->st_tail = job;
    self->busy++;
    *job_p = job;
    return s_mark_event(self, S_STARTED_DELAY_NS);
}

/* A result buffer kept larger than this is given back after the task. */
#define S_KEEP_BUFFER (1u << 20)

/* sb is the thread's own result buffer, reused from task to task
   (msgpack_sbuffer allocates 8 KiB at its first write: once per task was a
   malloc and free of a size no per-thread cache keeps). */
void zxw_tpool_run(zxw_job_t *job, msgpack_sbuffer *sb)
{
    int64_t t0 = zx__mono_us();
    zx_task_t task;
    zx__task_init(&task, job->fn->name, ZX_POOL_THREAD, job->deadline);
    msgpack_sbuffer_clear(sb);
    size_t len;
    const void *data = zxw_job_args(job, &len);
    int st = (job->flags & ZXP_F_CHUNK) ? zx__task_call_chunk(&task, job->fn->fn, data, len, sb)
                                        : zx__task_call(&task, job->fn->fn, data, len, sb);
    job->status = zxw_check_result_size(zxw_status_of(&task, st), sb);
    zx__task_fini(&task);
    if (sb->size <= sizeof job->result_small) {
        if (sb->size) {
            memcpy(job->result_small, sb->data, sb->size);
        }
        job->result_len = (uint8_t)sb->size;
    } else {
        job->result = zframe_new(sb->data, sb->size);
    }
    if (sb->alloc > S_KEEP_BUFFER) {
        msgpack_sbuffer_destroy(sb);
        msgpack_sbuffer_init(sb);
    }
    int64_t took = zx__mono_us() - t0;
    job->run_us = took < UINT32_MAX ? (uint32_t)took : UINT32_MAX;
}

/* Under the lock: a thread may start a queued task (slots taken by the
   main loop's own runs count as busy). */
static bool s_may_start(zxw_tpool_t *self)
{
    return self->q_head && self->busy + self->reserved < (size_t)self->nthreads;
}

static void *s_thread(void *arg)
{
    zxw_tpool_t *self = arg;
    zxw_plat_precise_timers();
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pthread_mutex_lock(&self->lock);
    for (;;) {
        while (!self->stopping && !s_may_start(self)) {
            pthread_cond_wait(&self->cond, &self->lock);
        }
        if (self->stopping) {
            break;
        }
        zxw_job_t *job;
        int64_t wake = s_start_first(self, &job);
        pthread_mutex_unlock(&self->lock);
        s_wake(self, wake);
        while (job) {
            zxw_tpool_run(job, &sb);

            pthread_mutex_lock(&self->lock);
            if (job->state == ZXW_RUNNING) {
                job->state = ZXW_FINISHED;
            }
            job->done_next = NULL;
            if (self->dn_tail) {
                self->dn_tail->done_next = job;
            } else {
                self->dn_head = job;
            }
            self->dn_tail = job;
            self->busy--;
            /* a lone task's result goes at once; under load the main loop
               collects results for up to S_RESULT_DELAY_NS and sends them
               as one batch */
            bool lone = self->busy == 0 && !self->q_head;
            wake = s_mark_event(self, lone ? 0 : S_RESULT_DELAY_NS);
            zxw_tpool_direct_fn *direct = wake == S_WAKE_NOW && lone ? self->direct : NULL;
            job = NULL;
            if (!self->stopping && s_may_start(self)) {
                /* the done event's wake-up, armed or due, comes no later
                   than the start's would (S_STARTED_DELAY_NS) */
                int64_t w2 = s_start_first(self, &job);
                wake = wake == S_NO_WAKE ? w2 : wake;
            }
            pthread_mutex_unlock(&self->lock);
            if (!direct || !direct(self->direct_arg)) {
                s_wake(self, wake);
            }
        }
        pthread_mutex_lock(&self->lock);
    }
    pthread_mutex_unlock(&self->lock);
    msgpack_sbuffer_destroy(&sb);
    return NULL;
}

zxw_tpool_t *zxw_tpool_new(int n)
{
    zxw_tpool_t *self = calloc(1, sizeof *self);
    if (!self) {
        return NULL;
    }
    self->pipe[0] = self->pipe[1] = -1;
    pthread_mutex_init(&self->lock, NULL);
    pthread_cond_init(&self->cond, NULL);
    self->pid = (uint32_t)getpid();
    self->threads = calloc((size_t)n, sizeof(pthread_t));
#ifdef S_TIMERFD
    self->pipe[0] = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    bool fds = self->pipe[0] >= 0;
#else
    bool fds = pipe2(self->pipe, O_CLOEXEC | O_NONBLOCK) == 0;
#endif
    if (!self->threads || !fds) {
        goto fail;
    }
    for (int i = 0; i < n; i++) {
        if (pthread_create(&self->threads[i], NULL, s_thread, self) != 0) {
            zsys_error("worker: cannot start thread %d of the pool: %s", i, strerror(errno));
            break;
        }
        self->nthreads++;
    }
    if (self->nthreads == 0) {
        goto fail;
    }
    return self;
fail:
    zxw_tpool_destroy(&self);
    return NULL;
}

bool zxw_tpool_destroy(zxw_tpool_t **self_p)
{
    zxw_tpool_t *self = *self_p;
    if (!self) {
        return true;
    }
    *self_p = NULL;
    pthread_mutex_lock(&self->lock);
    self->stopping = true;
    bool stuck = self->busy > 0;
    pthread_cond_broadcast(&self->cond);
    pthread_mutex_unlock(&self->lock);
    if (stuck) {
        /* a function past its time limit may never return: let its thread
           finish on its own time and keep the pool it touches alive */
        for (int i = 0; i < self->nthreads; i++) {
            pthread_detach(self->threads[i]);
        }
        zsys_warning("worker: %zu thread-pool task(s) still running at exit were left behind",
                     self->busy);
        return false;
    }
    for (int i = 0; i < self->nthreads; i++) {
        pthread_join(self->threads[i], NULL);
    }
    free(self->threads);
    for (int i = 0; i < 2; i++) {
        if (self->pipe[i] >= 0) {
            close(self->pipe[i]);
        }
    }
    pthread_cond_destroy(&self->cond);
    pthread_mutex_destroy(&self->lock);
    free(self);
    return true;
}

void zxw_tpool_set_direct(zxw_tpool_t *self, zxw_tpool_direct_fn *fn, void *arg)
{
    pthread_mutex_lock(&self->lock);
    self->direct = fn;
    self->direct_arg = arg;
    pthread_mutex_unlock(&self->lock);
}

int zxw_tpool_fd(zxw_tpool_t *self)
{
    return self->pipe[0];
}

void zxw_tpool_push(zxw_tpool_t *self, zxw_job_t *first)
{
    if (!first) {
        return;
    }
    size_t n = 0;
    zxw_job_t *last = NULL;
    for (zxw_job_t *job = first; job; job = job->tq_next) {
        job->state = ZXW_QUEUED;
        job->tq_prev = last;
        last = job;
        n++;
    }
    pthread_mutex_lock(&self->lock);
    first->tq_prev = self->q_tail;
    if (self->q_tail) {
        self->q_tail->tq_next = first;
    } else {
        self->q_head = first;
    }
    self->q_tail = last;
    if (n == 1) {
        pthread_cond_signal(&self->cond);
    } else {
        pthread_cond_broadcast(&self->cond);
    }
    pthread_mutex_unlock(&self->lock);
}

bool zxw_tpool_cancel(zxw_tpool_t *self, zxw_job_t *job)
{
    pthread_mutex_lock(&self->lock);
    /* QUEUED is also the state of a job not pushed yet: linked or not */
    bool removed = job->state == ZXW_QUEUED && (job->tq_prev || self->q_head == job);
    if (removed) {
        s_unlink(self, job);
        job->state = ZXW_CANCELLED;
    }
    pthread_mutex_unlock(&self->lock);
    return removed;
}

bool zxw_tpool_expire(zxw_tpool_t *self, zxw_job_t *job)
{
    pthread_mutex_lock(&self->lock);
    bool expired = job->state == ZXW_RUNNING;
    if (expired) {
        job->state = ZXW_TIMEDOUT;
    }
    pthread_mutex_unlock(&self->lock);
    return expired;
}

void zxw_tpool_drop_queued(zxw_tpool_t *self, void (*fn)(void *arg, zxw_job_t *job), void *arg)
{
    pthread_mutex_lock(&self->lock);
    zxw_job_t *taken = self->q_head;
    self->q_head = self->q_tail = NULL;
    for (zxw_job_t *job = taken; job; job = job->tq_next) {
        job->state = ZXW_CANCELLED;
    }
    pthread_mutex_unlock(&self->lock);
    for (zxw_job_t *job = taken, *next; job; job = next) {
        next = job->tq_next;
        job->tq_prev = job->tq_next = NULL;
        fn(arg, job);
    }
}

void zxw_tpool_take(zxw_tpool_t *self, zxw_job_t **started, zxw_job_t **done, bool disarm)
{
    /* clear the wake-up before taking the lists: a wake-up armed after
       this read is seen at the next poll, never lost. (A pool thread
       standing in for the loop leaves it: one that fired anyway only makes
       the loop take empty lists.) */
    char buf[64];
    while (!disarm && read(self->pipe[0], buf, sizeof buf) > 0) {
    }
    pthread_mutex_lock(&self->lock);
    *started = self->st_head;
    *done = self->dn_head;
    for (zxw_job_t *job = self->st_head; job; job = job->started_next) {
        job->quick = job->state != ZXW_RUNNING; /* started and done in one take */
    }
    self->st_head = self->st_tail = NULL;
    self->dn_head = self->dn_tail = NULL;
#ifdef S_TIMERFD
    if (disarm && self->wake_at) {
        /* the 1 ms wake-up for starts taken here would find nothing. Under
           the lock: a start after this take arms the timer again after it */
        struct itimerspec off = {{0, 0}, {0, 0}};
        if (timerfd_settime(self->pipe[0], 0, &off, NULL) != 0) {
            zsys_error("worker: thread pool cannot disarm its timer: %s", strerror(errno));
        }
    }
#else
    (void)disarm;
#endif
    self->signalled = false;
    self->wake_at = 0;
    pthread_mutex_unlock(&self->lock);
}

void zxw_tpool_reserve(zxw_tpool_t *self, bool take)
{
    pthread_mutex_lock(&self->lock);
    if (take) {
        self->reserved++;
    } else {
        self->reserved--;
        if (s_may_start(self)) {
            pthread_cond_signal(&self->cond); /* a task queued behind the loop's run */
        }
    }
    pthread_mutex_unlock(&self->lock);
}

size_t zxw_tpool_busy(zxw_tpool_t *self)
{
    pthread_mutex_lock(&self->lock);
    size_t n = self->busy;
    pthread_mutex_unlock(&self->lock);
    return n;
}
