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
*/
#include "zx_czmq.h"
#include "zx_parent.h"
#include "zxw_node.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
        zxw_emit_started(w, job);
    }
    for (zxw_job_t *job = done, *next; job; job = next) {
        next = job->done_next;
        if (job->state == ZXW_TIMEDOUT && !job->held) {
            /* its TIMELIMIT result went out at the deadline: just the slot */
            w->tzombies--;
            w->credit_thread++;
            zxw_job_free(w, job);
            continue;
        }
        if (job->rhandle) {
            zlistx_detach(w->trunning, job->rhandle);
            job->rhandle = NULL;
        }
        w->tjobs--;
        zxw_job_finish(w, job, true);
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
        zxw_flush(w);
        wake = s_more_input(w);
    }
    pthread_mutex_unlock(&w->lock);
    if (wake) {
        zxw_kick(w);
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
        if ((input || items[0].revents) && zsock_resolve(w->dealer) == dealer_handle) {
            input = false;
            for (int k = 0; k < ZXW_RECV_BURST; k++) {
                zmsg_t *msg = zmsg_recv(w->dealer); /* RCVTIMEO 0: NULL when none is left */
                if (!msg) {
                    break;
                }
                zxw_on_message(w, &msg);
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
            zxw_reconnect(w, "the broker is silent");
        }
        now = zclock_mono();
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
    w->trunning = zlistx_new();
    w->held = zlistx_new();
    w->unacked = zlistx_new();
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
    zlistx_destroy(&w->trunning);
    zlistx_destroy(&w->held);
    zlistx_destroy(&w->unacked);
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
