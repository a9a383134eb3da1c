/*  remote.c - the remote executor: hands out futures at once and moves their
    tasks to a zexec-broker and their results back, over one DEALER socket
    owned by one I/O thread (a czmq actor, remote_io.c) per executor. This
    file is the executor's operations (zx__executor_ops_t: submit, cancel,
    shutdown, destroy) and its constructor; the records both files share are
    in remote_int.h.

    zx_submit creates the future, packs the task into one record (function
    name and argument bytes copied once) and appends it to the outbox; the
    first task of an empty outbox is sent from this thread when the actor
    sleeps, else the actor is woken (remote_io.c describes both paths).

    Threads: futures are completed on the actor thread, or on a thread that
    waits for one of them and leads (remote_io.c), so done-callbacks of
    remote futures run on either. They must not block; they may submit and
    cancel (a cancel from the actor thread is decided without a round trip),
    but must not destroy the executor. A cancel from any other thread blocks
    that thread for at most one round trip (bounded; see s_cancel).
*/
#include "remote_int.h"

#include "zx_czmq.h"
#include "zx_waiter.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define S_CANCEL_WAIT_MS 5000 /* a cancel waits this long for the broker */

static const zx__executor_ops_t s_ops;

/* A future's priv while a cancelling thread owns its unlinked record. */
static char s_cancelling;
#define S_CANCELLING ((void *)&s_cancelling)

/* ---- the executor interface --------------------------------------------------- */

static zx_future_t *s_submit(zx_executor_t *base, const char *fn, const void *args, size_t len,
                             const zx_task_opts_t *opts, uint32_t flags, int *err)
{
    zx__remote_t *ex = (zx__remote_t *)base;
    static const uint8_t empty_array = 0x90;
    size_t fn_len = fn ? strlen(fn) : 0;
    if (fn_len == 0 || fn_len > ZXP_MAX_NAME || (!args && len > 0) || len > ZXP_MAX_MSG - 1024) {
        *err = ZX_EINVAL;
        return NULL;
    }
    if (!args || len == 0) {
        args = &empty_array;
        len = 1;
    }
    zx_task_opts_t o = opts ? *opts : (zx_task_opts_t){0};
    if (o.pool < ZX_POOL_ANY || o.pool > ZX_POOL_PROCESS || o.priority < -128 || o.priority > 127 ||
        o.retries < -1 || o.retries > 100 || !(o.time_limit >= 0) || o.time_limit > 4e6) {
        *err = ZX_EINVAL;
        return NULL;
    }
    bool framed = len >= ZX__RTASK_FRAME_MIN;
    zx__rtask_t *t = malloc(sizeof *t + fn_len + 1 + (framed ? 0 : len));
    if (!t) {
        *err = ZX_ENOMEM;
        return NULL;
    }
    t->payload = NULL;
    if (framed && !(t->payload = zframe_new(args, len))) {
        free(t);
        *err = ZX_ENOMEM;
        return NULL;
    }
    zx__link_init(&t->link);
    t->args_len = (uint32_t)len;
    t->timeout_ms = (uint32_t)(o.time_limit * 1000.0 + 0.999);
    t->flags = flags;
    t->retries = o.retries;
    t->priority = (int8_t)o.priority;
    t->pool = (uint8_t)o.pool;
    t->fn_len = (uint8_t)fn_len;
    t->abandoned = false;
    t->accepted = false;
    memcpy(t->data, fn, fn_len + 1);
    if (!framed) {
        memcpy(t->data + fn_len + 1, args, len);
    }
    t->t_submit = zclock_mono();

    pthread_mutex_lock(&ex->lock);
    if (!ex->accepting) {
        pthread_mutex_unlock(&ex->lock);
        zframe_destroy(&t->payload);
        free(t);
        *err = ZX_ESHUTDOWN;
        return NULL;
    }
    /* the future is made under the lock so that seqs enter the outbox in
       order: cancel relies on "seq > sent_upto" meaning "still in the outbox" */
    t->seq = ex->next_seq + 1;
    t->future = zx__future_new(base, fn, t->seq);
    if (!t->future) {
        pthread_mutex_unlock(&ex->lock);
        zframe_destroy(&t->payload);
        free(t);
        *err = ZX_ENOMEM;
        return NULL;
    }
    ex->next_seq++;
    zx__future_init_priv(t->future, t); /* seen by others only through the outbox, below */
    zx_future_t *f = zx_future_ref(t->future);
    bool was_empty = zx__list_empty(&ex->outbox);
    zx__list_push_back(&ex->outbox, &t->link);
    ex->out_bytes += t->args_len;
    ex->unresolved++;
    pthread_mutex_unlock(&ex->lock);
    if (was_empty && !zx__remote_submit_here(ex)) {
        zx__remote_wake(ex);
    }
    return f;
}

static void s_deadline(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Never sent: removed from the outbox and cancelled here, exactly. Sent: a
   CANCEL goes to the broker, which alone knows whether it was dispatched,
   and this thread waits for its answer. If the broker is unreachable, or
   does not answer within S_CANCEL_WAIT_MS, the cancel is decided here: the
   future is cancelled and the task never re-sent, but a copy the broker
   already holds may still run (at-least-once, docs/guide.md). */
static bool s_cancel(zx_executor_t *base, zx_future_t *f, bool terminate)
{
    zx__remote_t *ex = (zx__remote_t *)base;
    uint64_t seq = zx__future_seq(f);
    pthread_mutex_lock(&ex->lock);
    if (seq > ex->sent_upto) {
        zx__rtask_t *t = zx__future_priv(f);
        if (t == S_CANCELLING || !t) {
            pthread_mutex_unlock(&ex->lock);
            /* another thread is cancelling it right now, or it failed */
            return t == S_CANCELLING || zx_future_cancelled(f);
        }
        zx__remote_outbox_unlink(ex, t);
        zx__future_set_priv(f, S_CANCELLING);
        zx__remote_resolved_locked(ex, 1);
        if (ex->waiters) {
            pthread_cond_broadcast(&ex->cond);
        }
        pthread_mutex_unlock(&ex->lock);
        zx__future_set_cancelled(f, "");
        zx__rtask_free(t);
        return true;
    }
    if (zx__remote_on_actor(ex)) {
        pthread_mutex_unlock(&ex->lock);
        return zx__remote_cancel_on_actor(ex, f, terminate);
    }
    if (ex->actor_dead) {
        pthread_mutex_unlock(&ex->lock);
        return zx_future_cancelled(f);
    }
    zx__rreq_t req = {.future = f, .seq = seq, .terminate = terminate, .state = ZX__REQ_NEW};
    zx__list_push_front(&ex->reqs, &req.link);
    pthread_mutex_unlock(&ex->lock);
    zx__remote_wake(ex);

    struct timespec deadline;
    s_deadline(&deadline, S_CANCEL_WAIT_MS);
    pthread_mutex_lock(&ex->lock);
    while (req.state != ZX__REQ_DECIDED) {
        int rc = pthread_cond_timedwait(&ex->cond, &ex->lock, &deadline);
        if (rc == ETIMEDOUT && req.state != ZX__REQ_DECIDED) {
            if (!req.force) {
                zsys_warning("zexec client: broker %s did not answer a cancel in %d ms; "
                             "cancelled locally",
                             ex->endpoint, S_CANCEL_WAIT_MS);
                req.force = true;
                pthread_mutex_unlock(&ex->lock);
                zx__remote_wake(ex);
                pthread_mutex_lock(&ex->lock);
            }
            s_deadline(&deadline, 1000); /* the actor decides promptly now */
        }
    }
    zx__list_remove(&ex->reqs, &req.link);
    pthread_mutex_unlock(&ex->lock);
    return req.result;
}

static int s_shutdown(zx_executor_t *base, bool wait, bool cancel_futures)
{
    zx__remote_t *ex = (zx__remote_t *)base;
    pthread_mutex_lock(&ex->lock);
    ex->accepting = false;
    if (cancel_futures) {
        ex->cancel_all = true;
    }
    pthread_mutex_unlock(&ex->lock);
    if (cancel_futures) {
        zx__remote_wake(ex);
    }
    if (!wait) {
        return ZX_OK;
    }
    if (zx__remote_on_actor(ex)) {
        zsys_warning("zexec client: shutdown(wait) from a done-callback cannot wait; "
                     "not waiting");
        return ZX_OK;
    }
    pthread_mutex_lock(&ex->lock);
    ex->waiters++;
    while (ex->unresolved > 0 && !ex->actor_dead) {
        pthread_cond_wait(&ex->cond, &ex->lock);
    }
    ex->waiters--;
    pthread_mutex_unlock(&ex->lock);
    return ZX_OK;
}

static void s_destroy(zx_executor_t *base)
{
    zx__remote_t *ex = (zx__remote_t *)base;
    if (zx__remote_on_actor(ex)) {
        zsys_error("zexec client: an executor cannot be destroyed from its own "
                   "done-callback; leaking it");
        return;
    }
    s_shutdown(base, true, false);
    zx__remote_leaders_wait(ex); /* every future is done: they are leaving */
    zactor_destroy(&ex->actor);
    pthread_mutex_lock(&ex->lock); /* pairs with the actor's last unlock */
    pthread_mutex_unlock(&ex->lock);
    if (ex->io.dealer) {
        zx__monitor_destroy(&ex->io.monitor, ex->io.dealer); /* the actor never started */
        zsock_destroy(&ex->io.dealer);
    }
    zx__seqtab_fini(&ex->io.table);
    zxp_in_fini(&ex->io.in);
    zxp_out_fini(&ex->io.out);
    zxp_out_fini(&ex->io.out2);
    zxp_drops_fini(&ex->io.drops);
    if (ex->efd >= 0) {
        close(ex->efd);
    }
    pthread_cond_destroy(&ex->cond);
    pthread_mutex_destroy(&ex->lock);
    pthread_mutex_destroy(&ex->iolock);
    zx__cluster_stop(&ex->cluster);
    zx__sec_destroy(&ex->sec);
    free(ex->endpoint);
    zx__eps_clear(&ex->eps);
    free(ex->name);
    free(ex);
}

bool zx__remote_next_broker(zx__remote_t *ex, const char *why, int64_t now)
{
    if (ex->eps.n < 2) {
        return false;
    }
    /* disconnect drops what still waits for the old endpoint; the routing
       id (the session) stays, so the other broker, which copied the
       journal, knows the session and its tasks */
    const char *from = zx__eps_current(&ex->eps);
    zsock_disconnect(ex->io.dealer, "%s", from);
    const char *to = zx__eps_next(&ex->eps);
    zsys_warning("zexec client: broker %s %s; trying %s", from, why, to);
    if (zsock_connect(ex->io.dealer, "%s", to) != 0) {
        zsys_error("zexec client: cannot connect to '%s': %s", to, zmq_strerror(zmq_errno()));
    }
    ex->ep_since = now;
    ex->io.need_resend = true;
    return true;
}

/* Waits for the ACCEPTED of every task submitted so far (the broker made
   them durable), re-checking when a batch of ACCEPTED or results arrives,
   and at least every S_DETACH_CHECK_MS (the connection may come back
   meanwhile); then zx__remote_detach_try says BYE. */
#define S_DETACH_CHECK_MS 100
int zx_executor_detach(zx_executor_t *base, double timeout, char id[ZX_JOB_ID_LEN + 1])
{
    if (!base || base->ops != &s_ops || !((zx__remote_t *)base)->detach) {
        return ZX_EINVAL;
    }
    zx__remote_t *ex = (zx__remote_t *)base;
    if (zx__remote_on_actor(ex)) {
        return ZX_EINVAL; /* a done-callback cannot wait for the actor it runs on */
    }
    struct timespec deadline = zx__deadline(timeout);
    pthread_mutex_lock(&ex->lock);
    uint64_t upto = ex->next_seq;
    pthread_mutex_unlock(&ex->lock);
    for (;;) {
        pthread_mutex_lock(&ex->lock);
        uint64_t events = ex->accept_events;
        size_t unresolved = ex->unresolved;
        pthread_mutex_unlock(&ex->lock);
        int rc = zx__remote_detach_try(ex, upto);
        if (rc != ZX_ETIMEOUT) {
            if (rc == ZX_OK && id) {
                zxp_hex(ex->session, ZXP_ID_LEN, id);
            }
            return rc;
        }
        struct timespec slice;
        s_deadline(&slice, S_DETACH_CHECK_MS);
        bool last = deadline.tv_sec >= 0 &&
                    (deadline.tv_sec < slice.tv_sec ||
                     (deadline.tv_sec == slice.tv_sec && deadline.tv_nsec <= slice.tv_nsec));
        pthread_mutex_lock(&ex->lock);
        ex->waiters++;
        int w = 0;
        while (w == 0 && ex->accept_events == events && ex->unresolved == unresolved) {
            w = pthread_cond_timedwait(&ex->cond, &ex->lock, last ? &deadline : &slice);
        }
        ex->waiters--;
        pthread_mutex_unlock(&ex->lock);
        if (last && w != 0) {
            /* one last look: what arrived just now counts */
            rc = zx__remote_detach_try(ex, upto);
            if (rc == ZX_OK && id) {
                zxp_hex(ex->session, ZXP_ID_LEN, id);
            }
            return rc;
        }
    }
}

/* The session is drawn once in zx_executor_new and never changes (a
   failover reconnects with the same routing id), so no lock is needed. */
int zx_executor_job_id(zx_executor_t *base, char id[ZX_JOB_ID_LEN + 1])
{
    if (!base || base->ops != &s_ops || !((zx__remote_t *)base)->detach || !id) {
        return ZX_EINVAL;
    }
    zxp_hex(((zx__remote_t *)base)->session, ZXP_ID_LEN, id);
    return ZX_OK;
}

static const char *s_endpoint(zx_executor_t *base)
{
    return ((zx__remote_t *)base)->endpoint;
}

static const zx__executor_ops_t s_ops = {
    .kind = "remote",
    .submit = s_submit,
    .cancel = s_cancel,
    .shutdown = s_shutdown,
    .destroy = s_destroy,
    .register_fn = NULL,
    .endpoint = s_endpoint,
    .lead_enter = zx__remote_lead_enter,
    .lead = zx__remote_lead,
};

zx__cluster_t *zx__remote_cluster(zx_executor_t *ex)
{
    return ex && ex->ops == &s_ops ? ((zx__remote_t *)ex)->cluster : NULL;
}

void zx__random_session(uint8_t *id)
{
    size_t got = 0;
    while (got < ZXP_ID_LEN) {
        ssize_t n = getrandom(id + got, ZXP_ID_LEN - got, 0);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        got += (size_t)n;
    }
    if (got < ZXP_ID_LEN) {
        /* no getrandom: still unique enough per process and time */
        uint64_t a = (uint64_t)zclock_usecs() ^ ((uint64_t)getpid() << 32);
        uint64_t b = (uint64_t)(uintptr_t)id * 0x9E3779B97F4A7C15ull ^ (uint64_t)zclock_time();
        memcpy(id, &a, 8);
        memcpy(id + 8, &b, 8);
    }
    if (id[0] == 0) {
        id[0] = 1; /* ZeroMQ reserves routing ids starting with 0 */
    }
}

/* The connection both the executor and the job client (job.c) make: the
   socket options of every zexec socket, the session as routing id (so the
   broker knows us across reconnects), CURVE and signing from the options,
   and a monitor for refused handshakes (otherwise silent, zx_monitor.h). */
int zx__client_connect(const char *endpoint, const zx_options_t *o, const uint8_t *session,
                       zx__sec_t **sec_p, zsock_t **dealer_p, zsock_t **monitor_p)
{
    /* A library must not take over SIGINT/SIGTERM: czmq would otherwise
       install its own handlers on first use. */
    zsys_handler_set(NULL);
    char zerr[256];
    if (!zx__zmq_runtime_ok(zerr, sizeof zerr)) {
        zsys_error("zexec client: %s", zerr);
        return ZX_EINVAL;
    }
    zx__czmq_init();
    *dealer_p = zsock_new(ZMQ_DEALER);
    if (!*dealer_p) {
        return ZX_ENOMEM;
    }
    zxp_sock_setup(*dealer_p);
    zsock_set_rcvtimeo(*dealer_p, 0); /* readers read until EAGAIN */
    *sec_p = zx__sec_new(o->key, o->server_key, o->secret_file, false);
    if (!*sec_p || zx__sec_socket(*sec_p, *dealer_p, ZXP_ROLE_BROKER_C) != 0) {
        return ZX_EINVAL;
    }
    zmq_setsockopt(zsock_resolve(*dealer_p), ZMQ_ROUTING_ID, session, ZXP_ID_LEN);
    *monitor_p = zx__monitor_new(*dealer_p);
    if (zsock_connect(*dealer_p, "%s", endpoint) != 0) {
        zsys_error("zexec client: cannot connect to '%s': %s", endpoint, zmq_strerror(zmq_errno()));
        return ZX_EINVAL;
    }
    return ZX_OK;
}

zx_executor_t *zx__remote_new(const char *endpoint, const zx_options_t *opts)
{
    zx_options_t o = opts ? *opts : (zx_options_t){0};
    /* the cluster is spawned before this call creates any ZeroMQ state */
    zx__cluster_t *cluster = NULL;
    if (!endpoint) {
        cluster = zx__cluster_start(opts);
        if (!cluster) {
            return NULL; /* last error set */
        }
        endpoint = zx__cluster_endpoint(cluster);
    }
    int err = ZX_ENOMEM;
    zx__remote_t *ex = calloc(1, sizeof *ex);
    if (!ex) {
        zx__cluster_stop(&cluster);
        zx__set_last_error(ZX_ENOMEM);
        return NULL;
    }
    ex->base.ops = &s_ops;
    zx__list_init(&ex->outbox);
    zx__list_init(&ex->reqs);
    ex->cluster = cluster;
    ex->efd = -1;
    ex->accepting = true;
    ex->endpoint = strdup(endpoint);
    /* a detached job's HELLO names the job */
    ex->detach = o.detach;
    ex->name = strdup(o.detach && o.job_name && *o.job_name ? o.job_name
                      : o.name && *o.name                   ? o.name
                                                            : "client");
    if (ex->name && strlen(ex->name) > ZXP_MAX_NAME) {
        ex->name[ZXP_MAX_NAME] = '\0';
    }
    ex->hb_ms = o.heartbeat > 0 ? (int64_t)(o.heartbeat * 1000.0 + 0.5) : 1000;
    if (ex->hb_ms < 10) {
        ex->hb_ms = 10;
    }
    ex->liveness = o.liveness > 0 ? o.liveness : 3;
    ex->timeout_ms = o.broker_timeout > 0 ? (int64_t)(o.broker_timeout * 1000.0) : 60000;
    ex->max_batch = o.max_batch > 0 ? o.max_batch : 256;
    ex->max_inflight = o.max_inflight_bytes > 0 ? o.max_inflight_bytes : 64u << 20;
    if (ex->max_batch > ZXP_MAX_BATCH) {
        ex->max_batch = ZXP_MAX_BATCH;
    }
    zx__random_session(ex->session);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ex->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&ex->lock, NULL);
    pthread_mutex_init(&ex->iolock, NULL);
    zxp_in_init(&ex->io.in);
    zxp_out_init(&ex->io.out);
    zxp_out_init(&ex->io.out2);
    zxp_drops_init(&ex->io.drops);
    if (!ex->endpoint || !ex->name || zx__seqtab_init(&ex->io.table, 10) != 0) {
        goto fail;
    }
    char eperr[512];
    if (zx__eps_parse(&ex->eps, endpoint, eperr, sizeof eperr) != 0) {
        zsys_error("zexec client: %s", eperr);
        err = ZX_EINVAL;
        goto fail;
    }
    ex->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (ex->efd < 0) {
        zsys_error("zexec client: eventfd: %s", strerror(errno));
        goto fail;
    }
    err = zx__client_connect(zx__eps_current(&ex->eps), &o, ex->session, &ex->sec, &ex->io.dealer,
                             &ex->io.monitor);
    if (err != ZX_OK) {
        goto fail;
    }
    err = ZX_ENOMEM;
    ex->actor = zactor_new(zx__remote_actor, ex);
    if (!ex->actor) {
        goto fail;
    }
    return &ex->base;
fail:
    s_destroy(&ex->base);
    zx__set_last_error(err);
    return NULL;
}
