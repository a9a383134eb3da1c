/*  loop.c - the worker node's run: zx_worker_run starts the pools (the
    fork server first, before any thread or ZeroMQ context exists), connects
    and runs the main loop until the node stops and drains.

    One thread (the caller of zx_worker_run) runs the main loop. It polls the
    socket's ZMQ_FD, the thread pool's wake-up fd, the stop pipe, and the
    process pool's fork-server and child sockets in one poll, handles
    everything that is ready (broker messages in session.c), then flushes
    the turn's batches. It also keeps the thread pool's time limits (a task
    past its limit is reported at once; its thread finishes in the
    background), heartbeats and the broker's liveness.

    The DEALER socket, the job table and the outgoing batches belong to
    whoever holds w->lock: the loop holds it except while it sleeps in poll,
    and a pool thread that finishes a task while the loop sleeps takes it to
    send its result itself (s_direct). ZeroMQ allows a socket to move
    between threads behind a full barrier, which the mutex is. The loop
    polls the raw ZMQ_FD rather than the socket so that sleeping never
    touches the socket; as ZMQ_FD is edge-triggered, every holder checks
    ZMQ_EVENTS before it lets go (s_more_input).

    A lone task (the only one of its message, no other thread task queued
    or running) of a function whose last S_INLINE_AFTER runs each took at
    most inline_us (ZEXEC_WORKER_INLINE_US, default 200 us; 0: never) runs
    on the loop thread itself, with the lock let go: no hand-off to a pool
    thread and back, the result leaves in the same turn (bench B). It takes
    one of the pool's slots meanwhile (zxw_tpool_reserve), so the node never
    runs more tasks than it has threads. A function is not known short until
    it has been: a run that lasts longer than S_RESCUE_NS (or reaches the
    task's time limit first) wakes the rescue thread, which takes the lock
    and runs the loop in its place until the run ends: the task is reported
    started, its time limit is kept, heartbeats, other tasks, cancels and
    stops are served as usual. The function's count starts again from zero,
    so a function that turns long goes back to the pool. The one thing the
    loop thread cannot do while a function runs on it is leave: a forced
    stop (a second SIGTERM) waits for that function to return, where a pool
    thread would be left behind.
*/
#include "zx_clock.h"
#include "zx_czmq.h"
#include "zx_parent.h"
#include "zxw_node.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/timerfd.h>
#endif

#define S_INLINE_AFTER 8        /* short runs in a row before a function runs on the loop */
#define S_INLINE_US_DEFAULT 200 /* ZEXEC_WORKER_INLINE_US when unset */
#define S_RESCUE_NS 1000000L    /* a run on the loop longer than this hands the loop over */

/* Under the lock: a thread-pool run of job's function just ended. */
static void s_note_run(zx_worker_t *w, zxw_job_t *job)
{
    zxw_fn_t *fn = job->fn;
    if (job->run_us <= w->inline_us) {
        fn->short_runs += fn->short_runs < INT32_MAX;
    } else {
        fn->short_runs = 0;
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
        zxw_jlist_add(&w->trunning, job);
        zxw_emit_started(w, job);
    }
    for (zxw_job_t *job = done, *next; job; job = next) {
        next = job->done_next;
        s_note_run(w, job);
        if (job->state == ZXW_TIMEDOUT && !job->held) {
            /* its TIMELIMIT result went out at the deadline: just the slot */
            w->tzombies--;
            w->credit_thread++;
            zxw_job_free(w, job);
            continue;
        }
        zxw_jlist_del(job);
        w->tjobs--;
        zxw_job_finish(w, job, true);
    }
}

/* The first running thread job past its deadline, or NULL. The list holds
   at most one job per thread, and expiry is rare, so a scan per expiry is
   cheaper than keeping it sorted. */
static zxw_job_t *s_first_expired(zx_worker_t *w, int64_t now)
{
    for (zxw_job_t *job = zxw_jlist_first(&w->trunning); job; job = zxw_jlist_next(job)) {
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
        zxw_jlist_del(job);
        bool expired;
        if (job == w->inline_job) {
            /* on the loop thread, with the rescue thread here: its state is
               under w->lock, which its runner takes before it looks */
            expired = job->state == ZXW_RUNNING;
            job->state = expired ? ZXW_TIMEDOUT : job->state;
        } else {
            expired = zxw_tpool_expire(w->tpool, job);
        }
        if (!expired) {
            continue; /* it just finished: its done event is on the way */
        }
        zxw_jobtab_del(&w->jobs, job->key);
        w->tzombies++;
        w->tjobs--;
        /* the thread keeps job; the broker hears now, from a stand-in */
        zxw_job_t *r = zxw_job_new(w);
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
        zxw_job_finish(w, r, false);
    }
}

static int64_t s_next_thread_deadline(zx_worker_t *w)
{
    int64_t next = 0;
    for (zxw_job_t *job = zxw_jlist_first(&w->trunning); job; job = zxw_jlist_next(job)) {
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
    int events = 0;
    size_t size = sizeof events;
    return w->dealer && zmq_getsockopt(w->dealer_h, ZMQ_EVENTS, &events, &size) == 0 &&
           (events & ZMQ_POLLIN);
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
        zxw_flush(w);
        wake = s_more_input(w);
    }
    pthread_mutex_unlock(&w->lock);
    if (wake) {
        zxw_kick(w);
    }
    return done;
}

/* Receives and handles one message from the broker; false when none
   waits. Unsigned messages are read straight into w->in (zxp_recv: no
   zmsg or zframe per message, nothing allocated when the socket is empty);
   signed ones are checked whole (zx__sec_verify takes a zmsg). */
static bool s_recv_one(zx_worker_t *w)
{
    if (zx__sec_signing(w->sec)) {
        zmsg_t *msg = zmsg_recv(w->dealer); /* RCVTIMEO 0: NULL when none is left */
        if (!msg) {
            return false;
        }
        zxw_on_message(w, &msg);
        return true;
    }
    int rc = zxp_recv(&w->in, w->dealer, NULL, ZXP_ROLE_WORKER);
    if (rc == ZXP_E_AGAIN) {
        return false;
    }
    zxw_on_decoded(w, rc);
    return true;
}

/* ---- tasks the loop runs itself ------------------------------------------------ */

bool zxw_may_run_here(zx_worker_t *w, const zxw_job_t *job)
{
    /* tjobs == 1: this job is the node's only thread task; in.count == 1:
       the only task of its message (a batch goes to the pool, in parallel) */
    return w->inline_us > 0 && w->rescue_fd >= 0 && w->looping && !w->inline_job &&
           !w->inline_next && w->tjobs == 1 && !w->tpush_head && w->in.count == 1 &&
           job->fn->short_runs >= S_INLINE_AFTER;
}

/* Arms the rescue timer for at (CLOCK_MONOTONIC ns), or disarms it (0). */
static void s_rescue_arm(zx_worker_t *w, int64_t at)
{
#ifdef __linux__
    struct itimerspec its = {{0, 0}, {(time_t)(at / 1000000000), (long)(at % 1000000000)}};
    if (timerfd_settime(w->rescue_fd, at ? TFD_TIMER_ABSTIME : 0, &its, NULL) != 0) {
        zsys_error("worker: cannot set the rescue timer: %s", strerror(errno));
    }
#else
    (void)w;
    (void)at;
#endif
}

/* Under the lock, on the loop thread: runs w->inline_next here. The lock
   is let go while the function runs; the rescue thread may take the loop
   meanwhile, and has given it back when this returns. */
static void s_run_inline(zx_worker_t *w)
{
    zxw_job_t *job = w->inline_next;
    w->inline_next = NULL;
    zxw_flush(w); /* what the turn has so far does not wait for the run */
    job->state = ZXW_RUNNING;
    job->deadline = job->limit_ms ? zclock_mono() + job->limit_ms : 0;
    w->inline_job = job;
    w->inline_runs++;
    zxw_tpool_reserve(w->tpool, true);
    int64_t at = zx__mono_us() * 1000 + S_RESCUE_NS;
    if (job->deadline && job->deadline * 1000000 < at) {
        at = job->deadline * 1000000;
    }
    w->rescue_at = at;
    /* Armed only when it is not armed already for this time or earlier:
       an earlier fire finds the run's rescue_at still ahead and arms the
       timer again (s_rescue_main). Nor is it disarmed after the run: that
       was two timerfd_settime calls per run (about 2 us, one per round
       trip of a sequential client). A fire after runs that ended costs
       the rescue thread one wake-up, while the loop sleeps: at most one
       per S_RESCUE_NS of runs in a row, or one per run when runs come
       further apart than that. */
    if (!w->rescue_armed || w->rescue_armed > at) {
        s_rescue_arm(w, at);
        w->rescue_armed = at;
    }
    pthread_mutex_unlock(&w->lock);
    zxw_tpool_run(job, &w->inline_sb);
    pthread_mutex_lock(&w->lock);
    w->inline_job = NULL;
    if (w->rescuing) {
        zxw_kick(w); /* out of its poll: it sees the run over and lets go */
        while (w->rescuing) {
            pthread_cond_wait(&w->rescue_cond, &w->lock);
        }
    }
    zxw_tpool_reserve(w->tpool, false);
    s_note_run(w, job);
    zxw_jlist_del(job);
    if (job->state == ZXW_TIMEDOUT) {
        /* the rescue reported its time limit: only the slot is left */
        w->tzombies--;
        w->credit_thread++;
        zxw_job_free(w, job);
        return;
    }
    w->tjobs--;
    zxw_job_finish(w, job, true);
}

static void s_serve(zx_worker_t *w, bool rescue);

/* The rescue thread: sleeps on its timer, which fires only when a run on
   the loop thread lasts; then runs the loop until that run ends. */
static void *s_rescue_main(void *arg)
{
    zx_worker_t *w = arg;
    for (;;) {
        uint64_t ticks;
        if (read(w->rescue_fd, &ticks, sizeof ticks) < 0 && errno != EINTR && errno != EAGAIN) {
            zsys_error("worker: the rescue timer failed: %s", strerror(errno));
            break;
        }
        pthread_mutex_lock(&w->lock);
        if (w->rescue_stop) {
            pthread_mutex_unlock(&w->lock);
            break;
        }
        zxw_job_t *job = w->inline_job;
        w->rescue_armed = 0; /* fired: the next run arms it */
        /* a fire armed for an earlier run finds this one's time ahead:
           it is armed for that time (s_run_inline armed it only if it
           was not armed) */
        if (job && !w->loop_over && zx__mono_us() * 1000 < w->rescue_at) {
            s_rescue_arm(w, w->rescue_at);
            w->rescue_armed = w->rescue_at;
        } else if (job && !w->loop_over) {
            w->rescuing = true;
            w->rescues++;
            zxw_jlist_add(&w->trunning, job); /* its time limit */
            zxw_emit_started(w, job);
            s_serve(w, true);
            w->rescuing = false;
            pthread_cond_broadcast(&w->rescue_cond);
        }
        pthread_mutex_unlock(&w->lock);
    }
    return NULL;
}

/* Starts the rescue thread, or leaves runs on the loop off (no timerfd). */
static void s_rescue_start(zx_worker_t *w)
{
    const char *env = getenv("ZEXEC_WORKER_INLINE_US");
    w->inline_us = env && *env ? atoll(env) : S_INLINE_US_DEFAULT;
    w->rescue_stop = w->loop_over = w->rescuing = false;
    w->inline_runs = w->rescues = 0;
    w->rescue_armed = 0;
    if (!w->tpool || w->inline_us <= 0) {
        return;
    }
#ifdef __linux__
    w->rescue_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    if (w->rescue_fd >= 0 && pthread_create(&w->rescue_thread, NULL, s_rescue_main, w) != 0) {
        close(w->rescue_fd);
        w->rescue_fd = -1;
    }
#endif
    if (w->rescue_fd < 0) {
        zsys_warning("worker: no rescue timer: every task goes to the pool");
    }
}

static void s_rescue_stop(zx_worker_t *w)
{
    if (w->rescue_fd < 0) {
        return;
    }
    pthread_mutex_lock(&w->lock);
    w->rescue_stop = true;
    pthread_mutex_unlock(&w->lock);
    s_rescue_arm(w, 1); /* long past: it fires at once */
    pthread_join(w->rescue_thread, NULL);
    close(w->rescue_fd);
    w->rescue_fd = -1;
    ZXW_DEBUG("worker: %llu task(s) ran on the loop thread, %llu of them handed the loop over",
              (unsigned long long)w->inline_runs, (unsigned long long)w->rescues);
}

/* The loop. Called and returns with w->lock held. rescue: on the rescue
   thread, while a function runs on the loop thread; returns when that run
   ends (or the node stops: loop_over). */
static void s_serve(zx_worker_t *w, bool rescue)
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
    bool input = true; /* messages may wait on the socket: read before sleeping */
    /* read twice a turn: after the poll, and after the messages (that one
       also serves the next turn's timeout: only the flush comes between) */
    int64_t now = zclock_mono();
    for (;;) {
        size_t n = 0;
        uint32_t gen = w->dealer_gen;
        items[n++] = (zmq_pollitem_t){NULL, w->dealer_fd, ZMQ_POLLIN, 0};
        items[n++] = (zmq_pollitem_t){NULL, w->stop_pipe[0], ZMQ_POLLIN, 0};
        size_t tp_at = n;
        if (w->tpool) {
            items[n++] = (zmq_pollitem_t){NULL, zxw_tpool_fd(w->tpool), ZMQ_POLLIN, 0};
        }
        size_t pp_at = n;
        if (w->ppool) {
            n += zxw_ppool_poll_items(w->ppool, items + n, max_items - n);
        }
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
            w->loop_over = true;
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
            zxw_begin_drain(w);
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
        if ((input || items[0].revents) && w->dealer && w->dealer_gen == gen) {
            input = false;
            for (int k = 0; k < ZXW_RECV_BURST; k++) {
                if (!s_recv_one(w)) {
                    break;
                }
                if (w->inline_next) {
                    /* its message is done with: run it now, read on after */
                    s_run_inline(w);
                    input = false; /* asked before sleeping (s_more_input) */
                    break;
                }
                if (w->dealer_gen != gen) {
                    break;
                }
                input = k + 1 == ZXW_RECV_BURST;
            }
        }
        if (w->tpool) {
            s_thread_deadlines(w, now);
        }
        now = zclock_mono();
        if (now - w->last_recv > live_ms) {
            zxw_reconnect(w, "the broker is silent");
        }
        if (now >= w->next_hb) {
            zxw_check_handshake(w);
            zxp_send_empty(w->dealer, NULL, ZXP_HEARTBEAT);
            w->next_hb = now + w->hb_ms;
            if (zx__parent_gone() && !w->draining) {
                /* nobody is left to take the results: leave at once */
                zsys_warning("worker: the program that started this local cluster is gone");
                zxw_begin_drain(w);
                w->forced = true;
            }
        }
        zxw_flush(w);
        if (w->loop_over || (w->draining && (w->forced || s_running(w) == 0))) {
            w->loop_over = true;
            break;
        }
        if (rescue && !w->inline_job) {
            break; /* the loop thread is back */
        }
    }
    free(items);
    free(fds);
}

static void s_loop(zx_worker_t *w)
{
    w->next_hb = zclock_mono() + w->hb_ms;
    msgpack_sbuffer_init(&w->inline_sb);
    s_rescue_start(w);
    pthread_mutex_lock(&w->lock);
    w->looping = true;
    if (w->tpool) {
        zxw_tpool_set_direct(w->tpool, s_direct, w);
    }
    s_serve(w, false);
    /* from here on only this thread touches the socket (zx_worker_run's
       last sends and the pool's shutdown) */
    w->looping = false;
    pthread_mutex_unlock(&w->lock);
    s_rescue_stop(w);
    msgpack_sbuffer_destroy(&w->inline_sb);
}

int zx_worker_run(zx_worker_t *w)
{
    if (!w || w->running) {
        return ZX_EINVAL;
    }
    char zerr[256];
    if (!zx__zmq_runtime_ok(zerr, sizeof zerr)) {
        zsys_error("worker: %s", zerr);
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
    zx__list_init(&w->trunning);
    zx__list_init(&w->held);
    zx__list_init(&w->unacked);
    w->unacked_bytes = 0;
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
    rc = zxw_connect(w);
    if (rc != ZX_OK) {
        goto done;
    }
    if (w->ppool) {
        zxw_ppool_events_t ev = {w, zxw_pp_started, zxw_pp_done};
        zxw_ppool_start(w->ppool, &ev);
    }
    char hex[33];
    zxp_hex(w->wid, sizeof w->wid, hex);
    ZXW_INFO("worker: node %s (id %s, pid %u) serving %s with %d thread(s), %d process(es)",
             w->node, hex, w->pid, w->endpoint, w->tpool ? w->opts.threads : 0,
             w->ppool ? w->opts.procs : 0);
    s_loop(w);
    if (w->forced) {
        zxw_begin_drain(w);
    }
    zxw_flush(w);
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
        if (joined || job->pool != ZXP_POOL_THREAD || job->held || job->unacked) {
            zframe_destroy(&job->args);
            zframe_destroy(&job->result);
            free(job);
        }
    }
    zxw_jobtab_fini(&w->jobs);
    zx__list_init(&w->trunning); /* the jobs on them went with the table */
    zx__list_init(&w->held);
    zx__list_init(&w->unacked);
    zhashx_destroy(&w->given);
    while (w->free_jobs) {
        zxw_job_t *next = w->free_jobs->free_next;
        free(w->free_jobs);
        w->free_jobs = next;
    }
    w->nfree = 0;
    zx__monitor_destroy(&w->monitor, w->dealer);
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
