/*  remote_io.c - the remote executor's I/O actor: one thread (a czmq
    actor) per executor that owns its DEALER socket to the zexec-broker,
    moves tasks from the outbox to the broker and results back to futures.

    zx_submit (remote.c) appends a task record to a mutex-protected outbox
    and wakes the actor (eventfd) only when the outbox goes from empty to
    non-empty. The actor drains the whole outbox at each turn into SUBMIT
    batches of up to max_batch tasks, so under load one message carries many
    tasks. A lone task (nothing else in flight) is sent by the submitting
    thread itself when the actor sleeps (zx__remote_submit_here): the socket
    and the actor's state (zx__rio_t) belong to whoever holds ex->iolock,
    which the actor lets go of only while it sleeps in poll. That spares the
    lone task a thread hand-off (bench B). The actor polls the socket's raw
    ZMQ_FD so that sleeping never touches the socket; as ZMQ_FD only
    signals changes, which a send may consume, whoever lets go of iolock
    asks ZMQ_EVENTS first whether a message waits (unless it read to EAGAIN
    and used the socket no more since), and leaves the answer to the next
    holder (io->more), who reads first only if it is yes.

    Sent tasks live in the pending table (zx_seqtab.h: no allocation per
    lookup, no scans) until their RESULT arrives. The outbox drains only
    while the argument bytes in that table stay under max_inflight_bytes
    (the send window): a burst of large arguments waits in the outbox, where
    memory is already spent, instead of being copied into the broker's
    memory, which measured slower (page faults) for no gain.

    Leader/follower: a thread that waits for a future of this executor
    (future.c, waiters.c) takes iolock when the actor sleeps and does the
    actor's turns itself until its future is done or its wait runs out
    (zx__remote_lead): it reads the socket, completing whatever futures the
    answers are for, and runs the control work and ticks, so a result wakes
    the thread waiting for it and no other. Meanwhile the actor, woken by
    the same socket, turns deaf to it instead of queueing on iolock
    (s_actor_sleep). Other waiting threads sleep on their futures as before
    (followers). That spares a waiting caller the hand-off from the actor
    (bench B, docs/performance.md 35).

    Futures are completed on the actor thread or on a leader, so
    done-callbacks of remote futures run on either; a cancel from one is
    decided here without a round trip (zx__remote_cancel_on_actor: a leader
    stands in for the actor, s_on_actor).

    Broker loss: after liveness x heartbeat of silence the actor says HELLO
    every interval; futures stay pending, and every unresolved task is
    re-sent after the next WELCOME (the broker drops duplicates by (session,
    seq)). A task fails with ZX_ECONN (BrokerUnreachableError) once the
    broker has been unreachable for broker_timeout during the task's life.

    Detached jobs (zx_options_t.detach): HELLO asks for JOB|ACCEPT; ACCEPTED
    marks each task durable at the broker; zx_executor_detach (remote.c)
    waits for every task to be marked, then zx__remote_detach_try says BYE
    from the caller's thread and the actor goes quiet for good.
*/
#include "remote_int.h"

#include "zx_clock.h"
#include "zx_spin.h"

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define S_RECV_BURST 256        /* messages read per turn before looking at the rest */
#define S_ACK_BYTES (16u << 20) /* result bytes read between two acks at most */
#define S_RETRY_MAX 30000       /* ms: the longest wait before trying a refused handshake again */
#define S_LEADER_TRIES 8        /* s_actor_sleep: turns an fd may stay ready under a leader */
#define S_DEAF_MS 2 /* s_actor_sleep: a deaf actor looks for a leader's end this often */

static _Thread_local zx__remote_t *s_on_actor; /* the executor whose actor runs this thread */

/* ---- the pending table ----------------------------------------------------------- */

/* The table of sent tasks (zx_seqtab.h) with the argument bytes it holds,
   which the send window counts. */
static int s_pending_put(zx__rio_t *io, zx__rtask_t *t)
{
    if (zx__seqtab_put(&io->table, t->seq, t) != 0) {
        return -1;
    }
    io->pending_bytes += t->args_len;
    return 0;
}

static void s_pending_del(zx__rio_t *io, uint64_t seq)
{
    zx__rtask_t *t = zx__seqtab_del(&io->table, seq);
    if (t) {
        io->pending_bytes -= t->args_len;
    }
}

/* ---- small helpers -------------------------------------------------------------- */

void zx__rtask_free(zx__rtask_t *t)
{
    if (t) {
        zx_future_unref(&t->future);
        zframe_destroy(&t->payload);
        free(t);
    }
}

void zx__remote_wake(zx__remote_t *ex)
{
    uint64_t one = 1;
    ssize_t rc;
    do {
        rc = write(ex->efd, &one, sizeof one);
    } while (rc < 0 && errno == EINTR);
    /* EAGAIN means the counter is saturated: the actor is awake anyway */
}

/* Under lock: the actor is about to complete n futures it counted. */
void zx__remote_resolved_locked(zx__remote_t *ex, size_t n)
{
    ex->unresolved = n > ex->unresolved ? 0 : ex->unresolved - n;
}

/* Under lock: decides every SENT cancel whose future is now done. */
static bool s_decide_done_locked(zx__remote_t *ex)
{
    bool any = false;
    for (zx__rreq_t *r = zx__rreq_of(ex->reqs.head); r; r = zx__rreq_of(r->link.next)) {
        if (r->state != ZX__REQ_DECIDED && zx_future_done(r->future)) {
            r->state = ZX__REQ_DECIDED;
            r->result = zx_future_cancelled(r->future);
            any = true;
        }
    }
    return any;
}

/* After the actor completed n futures: one lock per batch, not per task. */
static void s_after_batch(zx__remote_t *ex, size_t n)
{
    pthread_mutex_lock(&ex->lock);
    zx__remote_resolved_locked(ex, n);
    bool changed = n > 0;
    if (ex->reqs.size) {
        changed |= s_decide_done_locked(ex);
    }
    if (changed && (ex->waiters || ex->reqs.size)) {
        pthread_cond_broadcast(&ex->cond);
    }
    pthread_mutex_unlock(&ex->lock);
}

static void s_set_connected(zx__remote_t *ex, bool connected)
{
    pthread_mutex_lock(&ex->lock);
    ex->connected = connected;
    pthread_mutex_unlock(&ex->lock);
}

/* ZMQ_EVENTS on the dealer's raw handle: whether a message waits. It
   processes the socket's pending commands, so ZMQ_FD signals the next
   message after it (the caveat at the top). */
static bool s_pollin(zx__rio_t *io)
{
    int ev = 0;
    size_t size = sizeof ev;
    return zmq_getsockopt(io->dealer_h, ZMQ_EVENTS, &ev, &size) == 0 && (ev & ZMQ_POLLIN);
}

/* ---- sending ------------------------------------------------------------------ */

static void s_put_task(zx__rio_t *io, zx__rtask_t *t)
{
    zxp_submit_t s = {.seq = t->seq,
                      .fn = {t->data, t->fn_len},
                      .pool = t->pool,
                      .priority = t->priority,
                      .retries = t->retries,
                      .timeout_ms = t->timeout_ms,
                      .flags = t->flags};
    zxp_put_submit(&io->out, &s);
    if (t->payload) {
        zxp_out_payload_share(&io->out, t->payload);
    } else {
        zxp_out_payload_mem(&io->out, t->data + t->fn_len + 1, t->args_len);
    }
}

/* Sends never wait (zxp_sock_setup: ZMQ_SNDTIMEO 0): with no connection,
   which is what a refused handshake leaves, a send fails at once; what it
   carried is re-sent after the next WELCOME. */
static void s_flush(zx__remote_t *ex, zxp_out_t *out)
{
    if (out->count > 0 && zxp_out_send(out, ex->io.dealer, NULL) != 0 && !ex->io.refused) {
        zsys_warning("zexec client: send to %s failed: %s", ex->endpoint, zmq_strerror(errno));
    }
}

/* A task whose arguments are over the broker's --max-msg (WELCOME says it)
   would make the broker's libzmq drop our connection at every send and
   re-send: its future fails now, naming the limit. True if so; the caller
   takes it out of the table or the outbox and frees it. */
static bool s_too_large(zx__remote_t *ex, zx__rtask_t *t)
{
    uint64_t max = ex->io.broker_max;
    if (!max || t->args_len <= max) {
        return false;
    }
    char msg[256];
    snprintf(msg, sizeof msg,
             "the task's arguments are %u bytes, over the broker's limit of %llu bytes (its "
             "--max-msg)",
             (unsigned)t->args_len, (unsigned long long)max);
    zx__future_set_exception(t->future, ZX_EINVAL, "MessageTooLargeError", msg, "", "", 0);
    return true;
}

/* Sends tasks[0..n) as SUBMIT batches of at most max_batch; those over the
   broker's limit fail instead (s_too_large). */
static void s_send_tasks(zx__remote_t *ex, zx__rtask_t **tasks, size_t n)
{
    zx__rio_t *io = &ex->io;
    size_t failed = 0;
    zxp_out_begin(&io->out, ZXP_SUBMIT);
    for (size_t i = 0; i < n; i++) {
        if (s_too_large(ex, tasks[i])) {
            s_pending_del(io, tasks[i]->seq);
            zx__rtask_free(tasks[i]);
            failed++;
            continue;
        }
        s_put_task(io, tasks[i]);
        if (io->out.count >= ex->max_batch || zxp_out_full(&io->out)) {
            s_flush(ex, &io->out);
            zxp_out_begin(&io->out, ZXP_SUBMIT);
        }
    }
    s_flush(ex, &io->out);
    if (failed) {
        s_after_batch(ex, failed);
    }
}

static void s_send_hello(zx__remote_t *ex)
{
    uint32_t flags = ex->detach ? ZXP_HELLO_JOB | ZXP_HELLO_ACCEPT : 0;
    if (zxp_send_hello_flags(ex->io.dealer, ex->session, ex->name, (uint32_t)ex->hb_ms, flags) !=
            0 &&
        !ex->io.refused) {
        zsys_warning("zexec client: HELLO to %s failed", ex->endpoint);
    }
}

/* ---- completing ---------------------------------------------------------------- */

/* Fails one record's future with ZX_ECONN. Caller removed it from the table
   or the outbox; frees it. */
static void s_fail_unreachable(zx__remote_t *ex, zx__rtask_t *t, double secs)
{
    char msg[512];
    snprintf(msg, sizeof msg, "broker %s unreachable for %.1f s", ex->endpoint, secs);
    zx__future_set_exception(t->future, ZX_ECONN, "BrokerUnreachableError", msg, "", "", 0);
    zx__rtask_free(t);
}

/* Fails one record's future because the broker refused our handshake.
   Caller removed it from the table or the outbox; frees it. */
static void s_fail_refused(zx__remote_t *ex, zx__rtask_t *t)
{
    zx__future_set_exception(t->future, ZX_ECONN, "HandshakeRefusedError", ex->io.refusal, "", "",
                             0);
    zx__rtask_free(t);
}

/* Cancels t here, without the broker (it is unreachable, or slow, or this is
   the actor thread). Returns true if t's future is now cancelled. The record
   stays in the table as abandoned so it is never re-sent. */
static bool s_cancel_local(zx__remote_t *ex, zx__rtask_t *t, size_t *resolved)
{
    if (t->abandoned || zx_future_done(t->future)) {
        return zx_future_cancelled(t->future);
    }
    if (zx_future_running(t->future)) {
        return false; /* started: cancel is refused, terminate cannot reach it */
    }
    t->abandoned = true;
    (*resolved)++;
    zx__future_set_cancelled(t->future, "");
    return zx_future_cancelled(t->future);
}

/* ---- the actor's turn: outbox, cancels, shutdown ---------------------------------- */

/* Decides or forwards the cancel requests that wait for the actor. */
static void s_handle_reqs(zx__remote_t *ex)
{
    zx__rio_t *io = &ex->io;
    enum { MAXL = 64 };
    zx__rreq_t *local[MAXL];
    size_t nlocal = 0;
    bool more = true;
    while (more) {
        more = false;
        nlocal = 0;
        bool decided = false;
        zxp_out_begin(&io->out, ZXP_CANCEL);
        pthread_mutex_lock(&ex->lock);
        for (zx__rreq_t *r = zx__rreq_of(ex->reqs.head); r; r = zx__rreq_of(r->link.next)) {
            if (r->state == ZX__REQ_DECIDED) {
                continue;
            }
            zx__rtask_t *t = zx__seqtab_get(&io->table, r->seq);
            if (!t || t->abandoned || zx_future_done(r->future)) {
                r->state = ZX__REQ_DECIDED;
                r->result = zx_future_cancelled(r->future);
                decided = true;
            } else if (io->state != ZX__RIO_CONNECTED || r->force) {
                if (nlocal == MAXL) {
                    more = true;
                    continue;
                }
                local[nlocal++] = r;
            } else if (r->state == ZX__REQ_NEW) {
                zxp_put_cancel(&io->out, r->seq, r->terminate);
                r->state = ZX__REQ_SENT;
            }
        }
        if (decided) {
            pthread_cond_broadcast(&ex->cond);
        }
        pthread_mutex_unlock(&ex->lock);
        s_flush(ex, &io->out);
        if (nlocal == 0) {
            break;
        }
        /* the requesters wait until DECIDED, so their records stay valid */
        size_t resolved = 0;
        bool results[MAXL];
        for (size_t i = 0; i < nlocal; i++) {
            zx__rtask_t *t = zx__seqtab_get(&io->table, local[i]->seq);
            results[i] =
                t ? s_cancel_local(ex, t, &resolved) : zx_future_cancelled(local[i]->future);
        }
        pthread_mutex_lock(&ex->lock);
        zx__remote_resolved_locked(ex, resolved);
        for (size_t i = 0; i < nlocal; i++) {
            local[i]->state = ZX__REQ_DECIDED;
            local[i]->result = results[i];
        }
        pthread_cond_broadcast(&ex->cond);
        pthread_mutex_unlock(&ex->lock);
    }
}

/* shutdown(cancel_futures): every sent task not started gets a CANCEL (or is
   cancelled here while the broker is away); DONE answers complete them. */
static void s_cancel_all_sent(zx__remote_t *ex)
{
    zx__rio_t *io = &ex->io;
    size_t n;
    zx__rtask_t **v = (zx__rtask_t **)zx__seqtab_list(&io->table, &n, true);
    if (!v) {
        return;
    }
    size_t resolved = 0;
    zxp_out_begin(&io->out, ZXP_CANCEL);
    for (size_t i = 0; i < n; i++) {
        zx__rtask_t *t = v[i];
        if (t->abandoned || zx_future_state(t->future) != ZX_PENDING) {
            continue;
        }
        if (io->state == ZX__RIO_CONNECTED) {
            zxp_put_cancel(&io->out, t->seq, false);
            if (zxp_out_full(&io->out)) {
                s_flush(ex, &io->out);
                zxp_out_begin(&io->out, ZXP_CANCEL);
            }
        } else {
            s_cancel_local(ex, t, &resolved);
        }
    }
    s_flush(ex, &io->out);
    free(v);
    s_after_batch(ex, resolved);
}

/* One turn of control work: drain the outbox into SUBMITs (when connected),
   shutdown's cancel_futures, and waiting cancels. lone (a submitting
   thread, zx__remote_submit_here): only the outbox, and nothing at all
   when cancels wait to be decided (their futures' callbacks are the
   actor's to run): false then, and the actor must be woken. */
static bool s_control(zx__remote_t *ex, bool lone)
{
    zx__rio_t *io = &ex->io;
    pthread_mutex_lock(&ex->lock);
    if (lone && (ex->reqs.size > 0 || ex->cancel_all)) {
        pthread_mutex_unlock(&ex->lock);
        return false;
    }
    io->kick = false;
    bool cancel_all = ex->cancel_all;
    ex->cancel_all = false;
    zx__list_t batch;
    zx__list_init(&batch);
    io->held = false;
    if (cancel_all || io->refused ||
        (io->state == ZX__RIO_CONNECTED && io->pending_bytes + ex->out_bytes <= ex->max_inflight)) {
        /* all of it (the usual case: small arguments), in O(1) */
        if (ex->outbox.tail) {
            ex->sent_upto = zx__rtask_of(ex->outbox.tail)->seq;
        }
        zx__list_take_all(&batch, &ex->outbox);
        ex->out_bytes = 0;
    } else if (io->state == ZX__RIO_CONNECTED && ex->outbox.head) {
        /* the longest prefix of the outbox that fits the send window (at
           least one task, however large, when nothing is out); the rest
           stays, cancellable here, until results make room */
        uint64_t bytes = io->pending_bytes;
        zx__rtask_t *last = NULL;
        for (zx__rtask_t *t = zx__rtask_of(ex->outbox.head); t; t = zx__rtask_of(t->link.next)) {
            if ((last || bytes > 0) && bytes + t->args_len > ex->max_inflight) {
                break;
            }
            bytes += t->args_len;
            last = t;
        }
        if (last) {
            ex->out_bytes -= bytes - io->pending_bytes;
            ex->sent_upto = last->seq;
            zx__list_take_front(&batch, &ex->outbox, &last->link);
        }
        io->held = ex->outbox.head != NULL;
        io->held_need = io->held ? zx__rtask_of(ex->outbox.head)->args_len : 0;
    }
    bool reqs = ex->reqs.size > 0;
    pthread_mutex_unlock(&ex->lock);

    zx__link_t *k;
    if (batch.head && cancel_all) {
        /* never sent: cancelled exactly, here */
        size_t n = 0;
        while ((k = zx__list_pop_front(&batch))) {
            zx__rtask_t *t = zx__rtask_of(k);
            zx__future_set_cancelled(t->future, "");
            zx__rtask_free(t);
            n++;
        }
        s_after_batch(ex, n);
    } else if (batch.head && io->refused) {
        /* refused: nothing can be sent; say so at once, not after broker_timeout */
        size_t n = 0;
        while ((k = zx__list_pop_front(&batch))) {
            s_fail_refused(ex, zx__rtask_of(k));
            n++;
        }
        s_after_batch(ex, n);
    } else if (batch.head) {
        size_t failed = 0;
        zxp_out_begin(&io->out, ZXP_SUBMIT);
        while ((k = zx__list_pop_front(&batch))) {
            zx__rtask_t *t = zx__rtask_of(k);
            if (s_too_large(ex, t)) {
                zx__rtask_free(t);
                failed++;
                continue;
            }
            if (s_pending_put(io, t) != 0) {
                zx__future_set_exception(t->future, ZX_ENOMEM, "MemoryError",
                                         "out of memory in the client", "", "", 0);
                zx__rtask_free(t);
                failed++;
                continue;
            }
            s_put_task(io, t);
            if (io->out.count >= ex->max_batch || zxp_out_full(&io->out)) {
                s_flush(ex, &io->out);
                zxp_out_begin(&io->out, ZXP_SUBMIT);
            }
        }
        s_flush(ex, &io->out);
        if (failed) {
            s_after_batch(ex, failed);
        }
    }
    if (cancel_all) {
        s_cancel_all_sent(ex);
    }
    if (reqs) {
        s_handle_reqs(ex);
    }
    return true;
}

/* ---- receiving ------------------------------------------------------------------- */

static void s_on_result(zx__remote_t *ex)
{
    zx__rio_t *io = &ex->io;
    size_t resolved = 0;
    char node[ZXP_MAX_NAME + 1];
    for (size_t i = 0; i < io->in.count; i++) {
        zxp_result_t r = {0};
        int bad = zxp_item_bad(&io->in, i);
        if (bad) {
            r.seq = zxp_u(zxp_item(&io->in, i), 0); /* its future fails below */
        } else {
            zxp_get_result(&io->in, i, &r);
        }
        /* an inline payload is read in place: no frame for it */
        const void *data = NULL;
        size_t len = 0;
        zframe_t *payload = NULL;
        if (!zxp_payload_take_inline(&io->in, &data, &len)) {
            payload = zxp_payload_take(&io->in);
            data = payload ? zframe_data(payload) : NULL;
            len = payload ? zframe_size(payload) : 0;
        }
        io->rx_bytes += len;
        zx__rtask_t *t = zx__seqtab_get(&io->table, r.seq);
        if (!t) {
            io->unknown++; /* a duplicate, or for a task failed here */
            zframe_destroy(&payload);
            continue;
        }
        s_pending_del(io, r.seq);
        if (!t->abandoned) {
            size_t n = r.node.len < sizeof node ? r.node.len : sizeof node - 1;
            memcpy(node, r.node.ptr, n);
            node[n] = '\0';
            if (bad) {
                char msg[160];
                snprintf(msg, sizeof msg, "the broker sent a malformed result: %s",
                         zxp_bad_reason(bad));
                zx__future_set_exception(t->future, ZX_EPROTO, "ProtocolError", msg, "", "", 0);
            } else {
                zx__future_set_attempts(t->future, (int)r.attempts);
                zx__future_complete(t->future, (int)r.status, data, len, node, (int)r.pid);
            }
            resolved++;
        }
        zframe_destroy(&payload);
        zx__rtask_free(t);
    }
    s_after_batch(ex, resolved);
    if (io->rx_bytes - io->rx_said >= S_ACK_BYTES) {
        /* the broker bounds what we have not read: tell it before the tick */
        zxp_send_heartbeat_rx(io->dealer, NULL, io->rx_bytes);
        io->rx_said = io->rx_bytes;
    }
}

static void s_on_started(zx__remote_t *ex)
{
    zx__rio_t *io = &ex->io;
    for (size_t i = 0; i < io->in.count; i++) {
        uint64_t seq = zxp_u(zxp_item(&io->in, i), 0);
        zx__rtask_t *t = zx__seqtab_get(&io->table, seq);
        if (t && !t->abandoned) {
            zx__future_set_running(t->future);
        }
    }
}

static void s_on_cancelled(zx__remote_t *ex)
{
    zx__rio_t *io = &ex->io;
    size_t resolved = 0;
    for (size_t i = 0; i < io->in.count; i++) {
        const msgpack_object *it = zxp_item(&io->in, i);
        uint64_t seq = zxp_u(it, 0);
        uint64_t outcome = zxp_u(it, 1);
        zx__rtask_t *t = zx__seqtab_get(&io->table, seq);
        if (!t) {
            io->unknown++;
            continue;
        }
        if (outcome == ZXP_CANCEL_REFUSED) {
            if (t->abandoned) {
                continue; /* its RESULT follows and frees it */
            }
            pthread_mutex_lock(&ex->lock);
            for (zx__rreq_t *r = zx__rreq_of(ex->reqs.head); r; r = zx__rreq_of(r->link.next)) {
                if (r->seq == seq && r->state == ZX__REQ_SENT) {
                    r->state = ZX__REQ_DECIDED;
                    r->result = false;
                    pthread_cond_broadcast(&ex->cond);
                }
            }
            pthread_mutex_unlock(&ex->lock);
            continue;
        }
        s_pending_del(io, seq);
        if (!t->abandoned) {
            zx__future_set_cancelled(
                t->future, outcome == ZXP_CANCEL_TERMINATED ? "terminated while running" : "");
            resolved++;
        }
        zx__rtask_free(t);
    }
    s_after_batch(ex, resolved);
}

/* Re-sends every unresolved task after a broker restart or a lost session,
   in submission order; abandoned tasks get a CANCEL instead and are freed. */
static void s_resend(zx__remote_t *ex)
{
    zx__rio_t *io = &ex->io;
    size_t n;
    zx__rtask_t **v = (zx__rtask_t **)zx__seqtab_list(&io->table, &n, true);
    if (!v) {
        zsys_error("zexec client: out of memory re-sending tasks");
        return;
    }
    size_t live = 0;
    zxp_out_begin(&io->out, ZXP_CANCEL);
    for (size_t i = 0; i < n; i++) {
        if (v[i]->abandoned) {
            zxp_put_cancel(&io->out, v[i]->seq, false);
            if (zxp_out_full(&io->out)) {
                s_flush(ex, &io->out);
                zxp_out_begin(&io->out, ZXP_CANCEL);
            }
            s_pending_del(io, v[i]->seq);
            zx__rtask_free(v[i]);
        } else {
            v[live++] = v[i];
        }
    }
    s_flush(ex, &io->out);
    if (live) {
        zsys_info("zexec client: re-sending %zu unresolved tasks to %s", live, ex->endpoint);
        s_send_tasks(ex, v, live);
    }
    free(v);
}

static void s_on_welcome(zx__remote_t *ex)
{
    zx__rio_t *io = &ex->io;
    const msgpack_object *h = zxp_item(&io->in, 0);
    zxp_str_t id = zxp_s(h, 0);
    uint64_t hb = zxp_u(h, 1);
    bool changed =
        io->have_broker && (id.len != ZXP_ID_LEN || memcmp(id.ptr, io->broker_id, ZXP_ID_LEN) != 0);
    if (id.len == ZXP_ID_LEN) {
        memcpy(io->broker_id, id.ptr, ZXP_ID_LEN);
        io->have_broker = true;
    }
    io->broker_hb = hb > 0 && hb < 3600000 ? (int64_t)hb : ex->hb_ms;
    io->broker_max = zxp_u(h, 3);
    io->rx_bytes = io->rx_said = 0; /* the broker counts from its WELCOME too */
    bool was = io->state == ZX__RIO_CONNECTED;
    io->state = ZX__RIO_CONNECTED;
    if (!was) {
        s_set_connected(ex, true);
    }
    if (changed || io->need_resend) {
        io->need_resend = false;
        s_resend(ex);
    }
    io->kick = true; /* drain what queued while we waited */
}

static void s_lost(zx__remote_t *ex, const char *why)
{
    zx__rio_t *io = &ex->io;
    if (io->state == ZX__RIO_CONNECTED) {
        zsys_warning("zexec client: broker %s %s; futures stay pending, reconnecting", ex->endpoint,
                     why);
        io->state = ZX__RIO_CONNECTING;
        s_set_connected(ex, false);
    }
    /* the broker may have dropped our session: re-send after WELCOME */
    io->need_resend = true;
    io->kick = true; /* waiting cancels are now decided locally */
}

/* A detached job's tasks the broker made durable: zx_executor_detach waits
   for these. */
static void s_on_accepted(zx__remote_t *ex)
{
    zx__rio_t *io = &ex->io;
    for (size_t i = 0; i < io->in.count; i++) {
        zx__rtask_t *t = zx__seqtab_get(&io->table, zxp_u(zxp_item(&io->in, i), 0));
        if (t) {
            t->accepted = true;
        }
    }
    pthread_mutex_lock(&ex->lock);
    ex->accept_events++;
    if (ex->waiters) {
        pthread_cond_broadcast(&ex->cond);
    }
    pthread_mutex_unlock(&ex->lock);
}

/* Handles the message just decoded into io->in. */
static void s_on_message(zx__remote_t *ex)
{
    zx__rio_t *io = &ex->io;
    io->last_rx = zclock_mono();
    switch (io->in.cmd) {
    case ZXP_RESULT: s_on_result(ex); break;
    case ZXP_STARTED: s_on_started(ex); break;
    case ZXP_CANCELLED: s_on_cancelled(ex); break;
    case ZXP_WELCOME: s_on_welcome(ex); break;
    case ZXP_HEARTBEAT: break;
    case ZXP_ACCEPTED: s_on_accepted(ex); break;
    case ZXP_RESET:
        if (io->state == ZX__RIO_CONNECTED) {
            s_lost(ex, "does not know this session (RESET)");
            s_send_hello(ex);
        }
        /* while connecting, a HELLO is already on its way; when signing, the
           RESET answered a HELLO signed for an unknown broker session: say
           HELLO again now, under the session it told us */
        if (io->state != ZX__RIO_CONNECTED && zx__sec_signing(ex->sec)) {
            s_send_hello(ex);
        }
        io->need_resend = true;
        break;
    case ZXP_SHUTDOWN: s_lost(ex, "is shutting down"); break;
    case ZXP_ERROR: {
        const msgpack_object *h = zxp_item(&io->in, 0);
        zxp_str_t m = zxp_s(h, 1);
        if (zxp_u(h, 0) == ZXP_ERR_PASSIVE && ex->eps.n > 1) {
            s_lost(ex, "is passive");
            zx__remote_next_broker(ex, "is passive", io->last_rx);
            s_send_hello(ex);
            break;
        }
        zsys_warning("zexec client: broker %s says error %u: %.*s", ex->endpoint,
                     (unsigned)zxp_u(h, 0), (int)m.len, m.ptr);
        break;
    }
    default: break; /* STATUS_REPLY and anything newer: not ours to handle */
    }
}

/* Reads one message from the dealer and handles it (or drops it: after
   BYE, or malformed). false when none waits: the read processed the
   socket's commands and found none (EAGAIN), or was interrupted before
   taking their signal (EINTR); either way ZMQ_FD signals what comes next.
   Unsigned messages are decoded straight from the socket (zxp_recv: no
   zmsg, no frames for the header); a signed one is verified whole first. */
static bool s_read_one(zx__remote_t *ex)
{
    zx__rio_t *io = &ex->io;
    int rc;
    if (zx__sec_signing(ex->sec)) {
        zmsg_t *msg = zmsg_recv(io->dealer); /* RCVTIMEO 0 */
        if (!msg) {
            return false;
        }
        if (ex->detached) {
            zmsg_destroy(&msg); /* we said BYE: the job's results are fetched elsewhere */
            return true;
        }
        rc = zx__sec_verify(ex->sec, msg, ZXP_ROLE_CLIENT);
        if (rc != 0) {
            zmsg_destroy(&msg);
            zxp_drop(&io->drops, "client", NULL, rc, "signature check failed");
            return true;
        }
        rc = zxp_decode(&io->in, &msg, ZXP_ROLE_CLIENT);
    } else {
        rc = zxp_recv(&io->in, io->dealer, NULL, ZXP_ROLE_CLIENT);
        if (rc == ZXP_E_AGAIN) {
            return false;
        }
        if (ex->detached) {
            return true; /* read and dropped, as above */
        }
    }
    if (rc != 0) {
        zxp_drop(&io->drops, "client", NULL, rc, io->in.reason);
        return true;
    }
    s_on_message(ex);
    return true;
}

/* Takes a task that was never sent out of the outbox (ex->lock held). */
void zx__remote_outbox_unlink(zx__remote_t *ex, zx__rtask_t *t)
{
    zx__list_remove(&ex->outbox, &t->link);
    ex->out_bytes -= t->args_len;
}

/* Fails every task the broker has been unreachable for broker_timeout of
   its life: those in the table and those still in the outbox. */
static void s_expire(zx__remote_t *ex, int64_t now)
{
    zx__rio_t *io = &ex->io;
    int64_t since = io->last_rx;
    size_t n, failed = 0;
    zx__rtask_t **v = (zx__rtask_t **)zx__seqtab_list(&io->table, &n, true);
    for (size_t i = 0; v && i < n; i++) {
        zx__rtask_t *t = v[i];
        int64_t from = t->t_submit > since ? t->t_submit : since;
        if (t->abandoned || now - from < ex->timeout_ms) {
            continue;
        }
        s_pending_del(io, t->seq);
        s_fail_unreachable(ex, t, (double)(now - since) / 1000.0);
        failed++;
    }
    free(v);
    zx__list_t expired;
    zx__list_init(&expired);
    pthread_mutex_lock(&ex->lock);
    for (zx__rtask_t *t = zx__rtask_of(ex->outbox.head), *next; t; t = next) {
        next = zx__rtask_of(t->link.next);
        int64_t from = t->t_submit > since ? t->t_submit : since;
        if (now - from < ex->timeout_ms) {
            continue;
        }
        zx__remote_outbox_unlink(ex, t);
        zx__future_set_priv(t->future, NULL);
        zx__list_push_back(&expired, &t->link);
    }
    pthread_mutex_unlock(&ex->lock);
    for (zx__link_t *k; (k = zx__list_pop_front(&expired));) {
        zx__rtask_t *t = zx__rtask_of(k);
        s_fail_unreachable(ex, t, (double)(now - since) / 1000.0);
        failed++;
    }
    if (failed) {
        zsys_warning("zexec client: broker %s unreachable for %.1f s: %zu futures failed",
                     ex->endpoint, (double)(now - since) / 1000.0, failed);
        s_after_batch(ex, failed);
    }
}

/* The broker refused our handshake (why says who and for what): every
   unresolved future fails now with that reason, and so will new ones until
   a handshake succeeds. The actor tries again with a backoff (an operator
   may fix the key folder); reconnect: libzmq gave the connection up. */
static void s_refused(zx__remote_t *ex, const char *why, bool reconnect)
{
    zx__rio_t *io = &ex->io;
    if (!io->refused) {
        zsys_error("zexec client: %s; unresolved futures fail", why);
    }
    snprintf(io->refusal, sizeof io->refusal, "%s", why);
    io->refused = true;
    io->reconnect = reconnect;
    io->retry_ms = io->retry_ms ? io->retry_ms * 2 : ex->hb_ms;
    if (io->retry_ms > S_RETRY_MAX) {
        io->retry_ms = S_RETRY_MAX;
    }
    io->retry_at = zclock_mono() + io->retry_ms;
    if (io->state == ZX__RIO_CONNECTED) {
        io->state = ZX__RIO_CONNECTING;
        s_set_connected(ex, false);
    }
    io->need_resend = true;
    size_t n, failed = 0;
    zx__rtask_t **v = (zx__rtask_t **)zx__seqtab_list(&io->table, &n, true);
    for (size_t i = 0; v && i < n; i++) {
        s_pending_del(io, v[i]->seq);
        if (v[i]->abandoned) {
            zx__rtask_free(v[i]); /* decided already: nothing to cancel any more */
        } else {
            s_fail_refused(ex, v[i]);
            failed++;
        }
    }
    free(v);
    s_after_batch(ex, failed);
    io->kick = true; /* the outbox fails too, and waiting cancels are decided */
}

static void s_on_monitor(zx__remote_t *ex)
{
    zx__rio_t *io = &ex->io;
    char peer[300], why[sizeof io->refusal];
    snprintf(peer, sizeof peer, "the broker at %s", ex->endpoint);
    for (;;) {
        zx__hs_t ev = zx__monitor_read(io->monitor, io->dealer, peer, why, sizeof why);
        if (ev == ZX__HS_NONE) {
            break;
        }
        if (ev == ZX__HS_OK) {
            if (io->refused) {
                zsys_info("zexec client: handshake with %s succeeded", ex->endpoint);
            }
            io->refused = false;
            io->hs_fails = 0;
            io->retry_ms = 0;
        } else if (ev == ZX__HS_REFUSED) {
            s_refused(ex, why, true);
        } else if (ev == ZX__HS_FAILED_RETRY && ++io->hs_fails >= ZX__HS_NO_DETAIL_MAX) {
            s_refused(ex, why, false); /* libzmq reconnects by itself after these */
        }
    }
}

static void s_tick(zx__remote_t *ex, int64_t now)
{
    zx__rio_t *io = &ex->io;
    if (ex->detached) {
        return; /* no HELLO, no expiry: the session is the broker's job now */
    }
    if (io->refused) {
        if (io->reconnect && now >= io->retry_at) {
            io->reconnect = false;
            if (zx__monitor_reconnect(io->dealer, zx__eps_current(&ex->eps)) != 0) {
                zsys_error("zexec client: cannot reconnect to %s", zx__eps_current(&ex->eps));
            }
            s_send_hello(ex);
        }
        return;
    }
    if (io->state == ZX__RIO_CONNECTED) {
        if (now - io->last_rx > (int64_t)ex->liveness * io->broker_hb) {
            s_lost(ex, "is silent");
        } else {
            zxp_send_heartbeat_rx(io->dealer, NULL, io->rx_bytes);
            io->rx_said = io->rx_bytes;
            return;
        }
    }
    /* a pair: the current endpoint has been silent for the liveness window */
    int64_t heard = io->last_rx > ex->ep_since ? io->last_rx : ex->ep_since;
    if (now - heard > (int64_t)ex->liveness * io->broker_hb) {
        zx__remote_next_broker(ex, "is silent", now);
    }
    s_send_hello(ex);
    if (now - io->last_rx >= ex->timeout_ms) {
        s_expire(ex, now);
    }
}

/* At the actor's end: nothing may wait on it any more. */
static void s_actor_finish(zx__remote_t *ex)
{
    zx__rio_t *io = &ex->io;
    size_t n, failed = 0;
    zx__rtask_t **v = (zx__rtask_t **)zx__seqtab_list(&io->table, &n, false);
    for (size_t i = 0; v && i < n; i++) {
        s_pending_del(io, v[i]->seq);
        if (!v[i]->abandoned) {
            zx__future_set_exception(v[i]->future, ZX_ESHUTDOWN, "ExecutorShutdown",
                                     "the executor was destroyed", "", "", 0);
            failed++;
        }
        zx__rtask_free(v[i]);
    }
    free(v);
    zx__list_t left;
    zx__list_init(&left);
    pthread_mutex_lock(&ex->lock);
    zx__list_take_all(&left, &ex->outbox);
    ex->out_bytes = 0;
    ex->accepting = false;
    ex->actor_dead = true;
    pthread_mutex_unlock(&ex->lock);
    for (zx__link_t *k; (k = zx__list_pop_front(&left));) {
        zx__rtask_t *t = zx__rtask_of(k);
        zx__future_set_exception(t->future, ZX_ESHUTDOWN, "ExecutorShutdown",
                                 "the executor was destroyed", "", "", 0);
        zx__rtask_free(t);
        failed++;
    }
    pthread_mutex_lock(&ex->lock);
    zx__remote_resolved_locked(ex, failed);
    for (zx__rreq_t *r = zx__rreq_of(ex->reqs.head); r; r = zx__rreq_of(r->link.next)) {
        if (r->state != ZX__REQ_DECIDED) {
            r->state = ZX__REQ_DECIDED;
            r->result = zx_future_cancelled(r->future);
        }
    }
    pthread_cond_broadcast(&ex->cond);
    pthread_mutex_unlock(&ex->lock);
}

/* The actor's room in the send window opened (results made room). */
static bool s_room(zx__remote_t *ex)
{
    zx__rio_t *io = &ex->io;
    return io->held &&
           (io->pending_bytes == 0 || io->pending_bytes + io->held_need <= ex->max_inflight);
}

/* The actor sleeps in poll without iolock, then takes it back and returns
   poll's rc (fds' revents filled). A thread that leads (zx__remote_lead)
   may hold iolock when the socket wakes the actor: the leader reads what
   woke both of them, and would pay for the actor queueing on the mutex
   (a futex wake on its way out, and an actor that holds the socket just
   when the caller's next submit wants it). So the actor turns deaf: it
   sleeps again without the socket's fd, waking every S_DEAF_MS to see
   whether the leader is gone, and hears again as soon as it holds iolock
   (its turn asks ZMQ_EVENTS first, so nothing that arrived meanwhile is
   missed). A leader that lets go while answers are still due wakes a deaf
   actor at once (zx__remote_lead); the S_DEAF_MS bound is for the rest, a
   task submitted from a thread that does not wait for it right after
   another thread led. The eventfd (which the leader handles too) and the
   pipe ($TERM, the actor's alone) still wake it; when the same fd stays
   ready for S_LEADER_TRIES turns (the leader busy in a callback, say), the
   actor waits for the mutex instead of spinning. */
static int s_actor_sleep(zx__remote_t *ex, struct pollfd *fds, int wait)
{
    int dealer_fd = fds[1].fd, monitor_fd = fds[3].fd;
    int rc;
    for (int tries = 0;; tries++) {
        rc = poll(fds, 4, wait);
        if (pthread_mutex_trylock(&ex->iolock) == 0) {
            break;
        }
        if (rc < 0 || (rc > 0 && fds[0].revents) || tries >= S_LEADER_TRIES) {
            pthread_mutex_lock(&ex->iolock);
            break;
        }
        if (rc == 0 || fds[1].revents || fds[3].revents) {
            tries = 0; /* the leader has the socket: only the eventfd counts */
        }
        atomic_store(&ex->deaf, true);
        atomic_thread_fence(memory_order_seq_cst);
        if (pthread_mutex_trylock(&ex->iolock) == 0) {
            break; /* the leader let go meanwhile (see zx__remote_lead) */
        }
        fds[1].fd = -1;
        fds[1].revents = 0;
        fds[3].fd = -1;
        fds[3].revents = 0;
        sched_yield(); /* let the leader read */
        int64_t left =
            atomic_load_explicit(&ex->io.next_tick, memory_order_relaxed) - zclock_mono();
        wait = left < 1 ? 1 : left < S_DEAF_MS ? (int)left : S_DEAF_MS;
    }
    atomic_store_explicit(&ex->deaf, false, memory_order_relaxed);
    fds[1].fd = dealer_fd;
    fds[3].fd = monitor_fd;
    return rc;
}

void zx__remote_actor(zsock_t *pipe, void *arg)
{
    zx__remote_t *ex = arg;
    zx__rio_t *io = &ex->io;
    s_on_actor = ex;
    pthread_mutex_lock(&ex->iolock);
    zsock_signal(pipe, 0);

    io->dealer_h = zsock_resolve(io->dealer);
    io->dealer_fd = zsock_fd(io->dealer);
    io->monitor_fd = io->monitor ? zsock_fd(io->monitor) : -1;
    io->more = true;                    /* messages may wait on the dealer */
    io->mon_more = io->monitor != NULL; /* and events on the monitor */
    io->last_rx = zclock_mono();
    io->broker_hb = ex->hb_ms;
    io->state = ZX__RIO_CONNECTING;
    s_send_hello(ex);
    io->next_tick = zclock_mono() + ex->hb_ms;

    /* raw fds, plain poll: see the top. The pipe's ZMQ_FD is safe to poll
       raw because only this thread touches the pipe, and only when it
       signals. */
    struct pollfd fds[4] = {{zsock_fd(pipe), POLLIN, 0},
                            {io->dealer_fd, POLLIN, 0},
                            {ex->efd, POLLIN, 0},
                            {io->monitor_fd, POLLIN, 0}};
    /* the signal above was an operation on the pipe: until its commands are
       processed, ZMQ_FD would not signal the next message ($TERM) */
    bool term = zsock_events(pipe) & ZMQ_POLLIN;
    bool running = true;
    while (running) {
        int64_t now = zclock_mono();
        int wait = io->next_tick > now ? (int)(io->next_tick - now) : 0;
        /* the ZMQ_FD caveat (see the top); the monitor needs no such
           question: only its reader, who reads it until none is left
           (s_on_monitor), uses it */
        if (!io->more) {
            io->more = s_pollin(io);
        }
        if (io->kick || io->more || term || io->mon_more) {
            wait = 0;
        }
        pthread_mutex_unlock(&ex->iolock);
        int rc = s_actor_sleep(ex, fds, wait);
        if (rc < 0) {
            if (errno == EINTR) {
                continue;
            }
            zsys_error("zexec client: I/O thread poll: %s", strerror(errno));
            break;
        }
        if (rc > 0 && ((fds[0].revents | fds[1].revents) & POLLNVAL)) {
            /* czmq's atexit handler closed every socket because the program
               exits without destroying this executor. Returning would make
               czmq's actor shim use its closed pipe (an assertion); the
               process is exiting, so this thread parks until it does. */
            zsys_warning("zexec client: I/O thread stops: executor not destroyed before exit");
            pthread_mutex_unlock(&ex->iolock);
            for (;;) {
                pause();
            }
        }
        if (term || (rc > 0 && fds[0].revents)) {
            term = false;
            /* ends with ZMQ_EVENTS saying no: then ZMQ_FD signals the next */
            while (running && (zsock_events(pipe) & ZMQ_POLLIN)) {
                char *cmd = zstr_recv(pipe);
                running = !(cmd && streq(cmd, "$TERM")) && cmd;
                zstr_free(&cmd);
            }
            if (!running) {
                break;
            }
        }
        /* io->more and io->mon_more: what this thread left before it slept,
           or what a leader left since (zx__remote_lead) */
        if (io->more || (rc > 0 && fds[1].revents)) {
            io->more = false;
            for (int i = 0; i < S_RECV_BURST && s_read_one(ex); i++) {
                io->more = i + 1 == S_RECV_BURST;
            }
        }
        if (io->monitor && (io->mon_more || (rc > 0 && fds[3].revents))) {
            io->mon_more = false;
            s_on_monitor(ex); /* reads until none is left: ZMQ_FD signals the next */
        }
        if (rc > 0 && fds[2].revents) {
            uint64_t v;
            if (read(ex->efd, &v, sizeof v) < 0 && errno != EAGAIN) {
                zsys_warning("zexec client: eventfd read: %s", strerror(errno));
            }
            io->kick = true;
        }
        if (s_room(ex)) {
            io->kick = true; /* results made room in the send window */
        }
        if (io->kick) {
            s_control(ex, false);
        }
        now = zclock_mono();
        if (now >= io->next_tick) {
            s_tick(ex, now);
            io->next_tick = now + ex->hb_ms;
        }
    }
    if (io->state == ZX__RIO_CONNECTED) {
        zxp_send_empty(io->dealer, NULL, ZXP_BYE);
        zsock_set_linger(io->dealer, 200); /* let BYE leave */
    }
    zx__monitor_destroy(&io->monitor, io->dealer);
    zsock_destroy(&io->dealer);
    io->dealer_h = NULL;
    io->dealer_fd = io->monitor_fd = -1;
    io->more = io->mon_more = false;
    io->state = ZX__RIO_CONNECTING; /* nothing may be sent any more */
    /* last: its unlock is what orders the actor's writes before destroy's
       reads (zactor's own handshake goes through ZeroMQ, which sanitizers
       cannot see) */
    s_actor_finish(ex);
    pthread_mutex_unlock(&ex->iolock);
    s_on_actor = NULL;
}

bool zx__remote_on_actor(const zx__remote_t *ex)
{
    return s_on_actor == ex;
}

/* A lone task (nothing in flight) leaves from the submitting thread when the
   actor sleeps: true if it was sent here, false if the actor must be woken.
   Under load the actor batches instead: the first task of a burst goes from
   here, the rest queue behind it in the outbox. */
bool zx__remote_submit_here(zx__remote_t *ex)
{
    if (s_on_actor == ex || pthread_mutex_trylock(&ex->iolock) != 0) {
        return false; /* the actor is awake (or this is it): it sends */
    }
    zx__rio_t *io = &ex->io;
    bool sent = io->state == ZX__RIO_CONNECTED && io->dealer && io->table.count == 0 && !io->held;
    bool more = false;
    if (sent) {
        /* a task failed here for want of memory completes on this thread,
           which stands in for the actor until it lets go of iolock */
        zx__remote_t *was = s_on_actor;
        s_on_actor = ex;
        sent = s_control(ex, true);
        s_on_actor = was;
    }
    if (sent) {
        more = io->more = s_pollin(io); /* the send may have taken ZMQ_FD's signal */
    }
    pthread_mutex_unlock(&ex->iolock);
    if (more) {
        zx__remote_wake(ex); /* our send took the signal the actor sleeps on */
    }
    return sent;
}

/* ---- leader/follower ----------------------------------------------------------------- */

bool zx__remote_lead_enter(zx_executor_t *base)
{
    zx__remote_t *ex = (zx__remote_t *)base;
    if (s_on_actor == ex) {
        return false; /* the actor, or a callback run by a leader: it holds iolock */
    }
    atomic_fetch_add(&ex->leaders, 1);
    return true;
}

bool zx__remote_leading(zx_executor_t *base)
{
    zx__remote_t *ex = (zx__remote_t *)base;
    return base && base->ops->lead == zx__remote_lead &&
           atomic_load_explicit(&ex->leading, memory_order_relaxed);
}

void zx__remote_leaders_wait(zx__remote_t *ex)
{
    while (atomic_load(&ex->leaders) > 0) {
        zclock_sleep(1); /* rare: a leader whose future is done is on its way out */
    }
}

/* A thread waiting for futures of ex leads while the actor sleeps: it takes
   iolock and does the actor's turns itself, until done(arg) or until_us.
   It reads the socket and handles each message as the actor would (results
   complete any future of ex, so done-callbacks run on this thread; STARTED,
   heartbeats, WELCOME, RESET...), runs the control work the eventfd asks
   for (the outbox, cancels, shutdown's cancel_futures) and the ticks
   (heartbeats, broker loss, expiry). A result then wakes only the thread
   that waits for it. What stays the actor's: the pipe ($TERM), and
   everything while nobody leads. The leader waits in poll on the same raw
   fds as the actor (see the top; the actor, woken too, turns deaf:
   s_actor_sleep); one that has the process's spin (zx_spin.h) busy-polls
   first. A message that completes its wait ends its reading unless more
   wait (one ZMQ_EVENTS, not a read to EAGAIN). Before it lets go it asks
   ZMQ_EVENTS whether a message waits unread (ZMQ_FD will not signal it
   again), unless nothing used the socket since it last found none, and
   after, it wakes the actor if so, or if the actor is deaf while answers
   are still due. */
int zx__remote_lead(zx_executor_t *base, bool (*done)(void *arg), void *arg, int64_t until_us,
                    int64_t spin_until_us)
{
    zx__remote_t *ex = (zx__remote_t *)base;
    zx__rio_t *io = &ex->io;
    bool spinning = spin_until_us > 0;
    int rc = ZX__LEAD_BUSY;
    if (pthread_mutex_trylock(&ex->iolock) != 0) {
        goto out; /* the actor is awake, or another thread leads */
    }
    if (!io->dealer) {
        pthread_mutex_unlock(&ex->iolock);
        goto out; /* the actor has ended */
    }
    zx__remote_t *was = s_on_actor;
    s_on_actor = ex; /* this thread stands in for the actor (callbacks, cancels) */
    atomic_store_explicit(&ex->leading, true, memory_order_relaxed);
    struct pollfd fds[3] = {
        {io->dealer_fd, POLLIN, 0}, {ex->efd, POLLIN, 0}, {io->monitor_fd, POLLIN, 0}};
    /* what the last holder of iolock left (a lone submit asked ZMQ_EVENTS
       after its send): no read on entry when nothing waits */
    bool more = io->more, mon_more = io->mon_more, efd = false;
    /* ZMQ_FD signals (or already signals) the next message: ZMQ_EVENTS
       said no, or a read found none, and the socket was not used since.
       Anything that may use it (a message's handling, control work, a tick,
       done-callbacks) clears it; it spares the question before polling and
       before letting go. */
    bool quiet = !more;
    for (;;) {
        if (more) {
            more = false;
            quiet = false;
            bool asked = false;
            for (int i = 0;; i++) {
                if (i == S_RECV_BURST) {
                    more = true;
                    break;
                }
                if (!s_read_one(ex)) {
                    quiet = true;
                    break;
                }
                /* done: rather than read on to EAGAIN, ask once whether
                   anything else waits (cheaper than a read that finds
                   nothing); if so, read the burst on as before, so that a
                   waiter for many futures (as_completed) still drains it */
                if (!asked && done(arg)) {
                    asked = true;
                    if (!s_pollin(io)) {
                        quiet = true;
                        break;
                    }
                }
            }
        }
        if (mon_more) {
            mon_more = false;
            quiet = false; /* a refusal fails futures: their callbacks may send */
            s_on_monitor(ex);
        }
        if (efd) {
            efd = false;
            uint64_t v;
            if (read(ex->efd, &v, sizeof v) < 0 && errno != EAGAIN) {
                zsys_warning("zexec client: eventfd read: %s", strerror(errno));
            }
            io->kick = true;
        }
        if (s_room(ex)) {
            io->kick = true;
        }
        if (io->kick) {
            quiet = false;
            s_control(ex, false);
        }
        int64_t now = zx__mono_us();
        if (now / 1000 >= io->next_tick) {
            quiet = false;
            s_tick(ex, now / 1000);
            io->next_tick = now / 1000 + ex->hb_ms;
        }
        if (done(arg)) {
            rc = ZX__LEAD_DONE;
            break;
        }
        if (until_us >= 0 && now >= until_us) {
            rc = ZX__LEAD_TIMEOUT;
            break;
        }
        /* a spin watches the socket by asking: its fd is not polled */
        bool spin = spinning && now < spin_until_us;
        if (!more && (!quiet || spin)) {
            more = s_pollin(io);
            quiet = !more;
        }
        if (more || mon_more || io->kick) {
            continue;
        }
        if (spin) {
            sched_yield(); /* its core stays awake; see future.c */
            continue;
        }
        if (spinning) {
            spinning = false;
            zx__spin_end();
        }
        int64_t to = io->next_tick * 1000;
        if (until_us >= 0 && until_us < to) {
            to = until_us;
        }
        int prc = poll(fds, 3, to > now ? (int)((to - now + 999) / 1000) : 0);
        if (prc < 0 && errno != EINTR) {
            break;
        }
        if (prc > 0 && ((fds[0].revents | fds[2].revents) & POLLNVAL)) {
            break; /* closed at exit (see the actor): not ours to handle */
        }
        more = prc > 0 && fds[0].revents;
        efd = prc > 0 && fds[1].revents;
        mon_more = prc > 0 && fds[2].revents;
    }
    /* the ZMQ_FD caveat (see the top): the next holder of iolock, or the
       actor, reads what this thread leaves */
    io->more = !quiet && s_pollin(io);
    io->mon_more = mon_more;
    bool wake = io->kick || s_room(ex) || io->more || io->mon_more;
    bool due = io->table.count > 0; /* answers will come: a deaf actor must hear them */
    s_on_actor = was;
    atomic_store_explicit(&ex->leading, false, memory_order_relaxed);
    pthread_mutex_unlock(&ex->iolock);
    /* ex lives on until leaders drops (zx__remote_leaders_wait). Checked
       after unlocking, against the actor's store then trylock
       (s_actor_sleep): one of the two sees the other. */
    atomic_thread_fence(memory_order_seq_cst);
    if (wake || (due && atomic_load(&ex->deaf))) {
        zx__remote_wake(ex);
    }
out:
    if (spinning) {
        zx__spin_end();
    }
    atomic_fetch_sub(&ex->leaders, 1); /* the last use of ex */
    return rc;
}

/* ---- cancels from the actor thread ------------------------------------------------ */

/* A cancel from a done-callback on the actor thread cannot wait for the
   actor: decided here (CANCEL sent without waiting when connected). */
bool zx__remote_cancel_on_actor(zx__remote_t *ex, zx_future_t *f, bool terminate)
{
    zx__rio_t *io = &ex->io;
    zx__rtask_t *t = zx__seqtab_get(&io->table, zx__future_seq(f));
    if (!t) {
        return zx_future_cancelled(f);
    }
    if (terminate && zx_future_running(f) && io->state == ZX__RIO_CONNECTED) {
        /* answered later by CANCELLED TERMINATED or a RESULT */
        zxp_out_begin(&io->out2, ZXP_CANCEL);
        zxp_put_cancel(&io->out2, t->seq, true);
        s_flush(ex, &io->out2);
        return false;
    }
    size_t resolved = 0;
    bool ok = s_cancel_local(ex, t, &resolved);
    if (ok && io->state == ZX__RIO_CONNECTED) {
        zxp_out_begin(&io->out2, ZXP_CANCEL);
        zxp_put_cancel(&io->out2, t->seq, false);
        s_flush(ex, &io->out2);
    }
    s_after_batch(ex, resolved);
    return ok;
}

/* ---- detaching (zx_executor_detach) ------------------------------------------------ */

int zx__remote_detach_try(zx__remote_t *ex, uint64_t upto)
{
    pthread_mutex_lock(&ex->iolock);
    zx__rio_t *io = &ex->io;
    pthread_mutex_lock(&ex->lock);
    bool gone = ex->detached || ex->actor_dead;
    zx__rtask_t *head = zx__rtask_of(ex->outbox.head);
    bool ready = !gone && io->state == ZX__RIO_CONNECTED && !io->refused && io->dealer &&
                 (!head || head->seq > upto);
    pthread_mutex_unlock(&ex->lock);
    size_t n = 0;
    zx__rtask_t **v = ready ? (zx__rtask_t **)zx__seqtab_list(&io->table, &n, false) : NULL;
    if (ready && !v && io->table.count > 0) {
        ready = false; /* out of memory: try again later */
    }
    for (size_t i = 0; ready && i < n; i++) {
        ready = v[i]->abandoned || v[i]->accepted || v[i]->seq > upto;
    }
    if (!ready) {
        free(v);
        pthread_mutex_unlock(&ex->iolock);
        return gone ? ZX_ESHUTDOWN : ZX_ETIMEOUT;
    }
    /* BYE without CANCELs: a job session that leaves keeps its tasks */
    zxp_send_empty(io->dealer, NULL, ZXP_BYE);
    zsock_set_linger(io->dealer, 200); /* let BYE leave */
    io->more = true;                   /* the send may have taken ZMQ_FD's signal */
    io->state = ZX__RIO_CONNECTING;
    zx__list_t never_sent;
    zx__list_init(&never_sent);
    pthread_mutex_lock(&ex->lock);
    ex->detached = true;
    ex->accepting = false;
    ex->connected = false;
    zx__list_take_all(&never_sent, &ex->outbox);
    ex->out_bytes = 0;
    pthread_mutex_unlock(&ex->lock);
    /* done-callbacks run here: this thread stands in for the actor */
    zx__remote_t *was = s_on_actor;
    s_on_actor = ex;
    size_t resolved = 0;
    for (size_t i = 0; i < n; i++) {
        s_pending_del(io, v[i]->seq);
        if (!v[i]->abandoned) {
            zx__future_set_exception(v[i]->future, ZX_EDETACHED, "DetachedError",
                                     "detached: fetch its results with zx_job_attach", "", "", 0);
            resolved++;
        }
        zx__rtask_free(v[i]);
    }
    free(v);
    for (zx__link_t *k; (k = zx__list_pop_front(&never_sent));) {
        zx__rtask_t *t = zx__rtask_of(k);
        zx__future_set_cancelled(t->future, "the executor detached before sending it");
        zx__rtask_free(t);
        resolved++;
    }
    s_after_batch(ex, resolved);
    s_on_actor = was;
    pthread_mutex_unlock(&ex->iolock);
    return ZX_OK;
}
