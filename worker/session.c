/*  session.c - the worker node's session with the broker: job records,
    the messages it sends (READY, WSTARTED, WRESULT, WCANCELLED, CREDIT,
    DRAIN) and what each broker command does (TASK, WCANCEL, RESET, ERROR,
    SHUTDOWN, WELCOME).

    Outgoing items of one loop turn are batched: all WSTARTED items go out
    as one message, then all WRESULT items as one (zxw_flush), so a burst of
    finished tasks costs one send; a task's STARTED always leaves ahead of
    its RESULT. Everything here runs under w->lock, on the loop's thread or
    on a pool thread standing in for it (loop.c).

    The broker's silence for liveness x heartbeat means it is gone: the
    DEALER is destroyed and made again with the same routing id, and READY
    is sent with every task the worker still holds. Results that finish
    while the broker is away are held (bounded) and sent when it speaks.
*/
#include "zxw_node.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- job keys and allocation ------------------------------------------- */

static void s_make_key(uint8_t key[ZXW_KEY_LEN], const uint8_t *session, uint64_t seq)
{
    memcpy(key, session, ZXP_ID_LEN);
    for (int i = 0; i < 8; i++) {
        key[ZXP_ID_LEN + i] = (uint8_t)(seq >> (56 - 8 * i));
    }
}

zxw_job_t *zxw_job_new(zx_worker_t *w)
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

void zxw_job_free(zx_worker_t *w, zxw_job_t *job)
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

/* ---- sending --------------------------------------------------------------- */

static int s_avail_pools(zx_worker_t *w)
{
    return (w->tpool ? ZX_POOLS_THREAD : 0) | (w->ppool ? ZX_POOLS_PROCESS : 0);
}

static void s_unacked_to_held(zx_worker_t *w);

static void s_send_ready(zx_worker_t *w)
{
    /* what is batched leaves first, numbered under the old count: READY
       starts the count again */
    zxw_flush(w);
    s_unacked_to_held(w);
    w->results_sent = 0;
    w->broker_acks = false; /* until this broker acknowledges something */
    w->awaiting_welcome = true;
    w->ready_at = zclock_mono();
    const uint8_t *epoch = zx__sec_epoch(w->sec);
    if (epoch) {
        memcpy(w->ready_epoch, epoch, sizeof w->ready_epoch);
    }
    /* functions: only the pools this node has */
    int avail = s_avail_pools(w);
    size_t nfns = 0;
    for (zxw_fn_t *f = zhashx_first(w->fns); f; f = zhashx_next(w->fns)) {
        nfns += (f->pools & avail) != 0;
    }
    zxp_out_t o;
    zxp_out_init(&o);
    zxp_out_begin(&o, ZXP_READY);
    zxp_ready_t r = {.worker_id = w->wid,
                     .node = w->node,
                     .pid = w->pid,
                     .threads = w->tpool ? (uint32_t)w->opts.threads : 0,
                     .procs = w->ppool ? (uint32_t)w->opts.procs : 0,
                     .prefetch = (uint32_t)w->opts.prefetch,
                     .heartbeat_ms = (uint32_t)w->hb_ms,
                     .nfns = nfns,
                     /* the largest frame we accept, so the broker never sends
                        us a task our libzmq would drop the connection for */
                     .max_msg = (uint64_t)zxp_max_msg()};
    zxp_put_ready(&o, &r);
    for (zxw_fn_t *f = zhashx_first(w->fns); f; f = zhashx_next(w->fns)) {
        if (f->pools & avail) {
            zxp_put_ready_fn(&o, f->name, (uint8_t)(f->pools & avail));
        }
    }
    /* every task this worker will still report on: queued, running, or
       finished with its result held */
    zxp_put_ready_running(&o, w->jobs.count);
    size_t pos = 0;
    for (zxw_job_t *job; (job = zxw_jobtab_next(&w->jobs, &pos));) {
        /* with the TASK's token and attempt: the proof, for a broker that
           restarted, that this task was given to us */
        zxp_put_ready_task(&o, job->key, job->seq, job->pool, job->has_token ? job->token : NULL,
                           job->attempt);
    }
    zxp_put_ready_end(&o, &r);
    zxp_out_send(&o, w->dealer, NULL);
    zxp_out_fini(&o);
    ZXW_DEBUG("worker: READY sent (%zu functions, %zu tasks held)", nfns, w->jobs.count);
}

void zxw_flush(zx_worker_t *w)
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

void zxw_emit_started(zx_worker_t *w, zxw_job_t *job)
{
    if (!w->connected) {
        return; /* READY's list tells a new broker instead */
    }
    if (!w->started_open) {
        zxp_out_begin(&w->out_started, ZXP_WSTARTED);
        w->started_open = true;
    }
    zxp_put_wstarted(&w->out_started, job->key, job->seq, job->pid, job->pool);
    if (zxp_out_full(&w->out_started)) {
        zxp_out_send(&w->out_started, w->dealer, NULL);
        w->started_open = false;
    }
}

static void s_emit_result_ex(zx_worker_t *w, const uint8_t *session, uint64_t seq, int status,
                             uint32_t pid, uint8_t pool, bool slot_freed, zframe_t **payload,
                             const void *small, size_t len, bool keep, const uint8_t *token);

/* Emits one WRESULT item. Its payload is *payload (consumed), or when that
   is NULL the len bytes at small (copied). */
static void s_emit_result(zx_worker_t *w, const uint8_t *session, uint64_t seq, int status,
                          uint32_t pid, uint8_t pool, bool slot_freed, zframe_t **payload,
                          const void *small, size_t len, const uint8_t *token)
{
    s_emit_result_ex(w, session, seq, status, pid, pool, slot_freed, payload, small, len, false,
                     token);
}

/* keep: *payload is only borrowed (sent shared, zero copy): its job keeps
   it for a re-send until the broker acknowledges it. */
static void s_emit_result_ex(zx_worker_t *w, const uint8_t *session, uint64_t seq, int status,
                             uint32_t pid, uint8_t pool, bool slot_freed, zframe_t **payload,
                             const void *small, size_t len, bool keep, const uint8_t *token)
{
    w->results_sent++; /* the broker counts WRESULT items the same way */
    size_t size = *payload ? zframe_size(*payload) : len;
    zframe_t *err = NULL;
    if (w->broker_max && size > w->broker_max) {
        /* the broker's libzmq would drop the connection, and the result
           with it, at every attempt: the task fails instead, saying why */
        char msg[256];
        snprintf(msg, sizeof msg,
                 "the result is %zu bytes, over the broker's limit of %llu bytes (its --max-msg)",
                 size, (unsigned long long)w->broker_max);
        if (!keep) {
            zframe_destroy(payload);
        }
        err = zxp_error_frame("ResultTooLargeError", msg, "");
        payload = &err;
        status = ZXP_ST_RAISED;
        keep = false;
    }
    if (!w->result_open) {
        zxp_out_begin(&w->out_result, ZXP_WRESULT);
        w->result_open = true;
    }
    zxp_wresult_t r = {session, seq, (uint32_t)status, pid, pool, slot_freed, NULL};
    zxp_put_wresult(&w->out_result, &r);
    if (*payload) {
        w->result_bytes += zframe_size(*payload);
        if (keep) {
            zxp_out_payload_share(&w->out_result, *payload);
        } else {
            zxp_out_payload(&w->out_result, payload);
        }
    } else {
        w->result_bytes += len;
        zxp_out_payload_mem(&w->out_result, small, len);
    }
    if (token) {
        zxp_out_item_token(&w->out_result, token); /* which attempt this answers */
    }
    if (zxp_out_full(&w->out_result) || w->result_bytes >= ZXW_BATCH_BYTES) {
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
    if (zxp_out_full(&w->out_cancelled)) {
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
                  &err, NULL, 0, t->token);
}

/* ---- job endings ------------------------------------------------------------- */

static size_t s_result_size(const zxw_job_t *job)
{
    size_t len;
    zxw_job_result(job, &len);
    return len;
}

/* Forgets a result the broker acknowledged (or the oldest, over the bound). */
static void s_unacked_forget(zx_worker_t *w, zxw_job_t *job)
{
    zxw_jlist_del(job);
    job->unacked = false;
    w->unacked_bytes -= s_result_size(job);
    zxw_jobtab_del(&w->jobs, job->key);
    zxw_job_free(w, job);
}

static void s_drop_held_oldest(zx_worker_t *w)
{
    zxw_job_t *old = zxw_jlist_pop(&w->held);
    if (!old) {
        return;
    }
    w->held_bytes -= s_result_size(old);
    zxw_jobtab_del(&w->jobs, old->key);
    zsys_warning("worker: too many results held for an absent broker; dropped one (the broker "
                 "re-runs its task)");
    zxw_job_free(w, old);
}

/* job is finished with job->status/result/pid set: send or hold, then
   forget it. slot_freed is false only for a thread past its limit. */
void zxw_job_finish(zx_worker_t *w, zxw_job_t *job, bool slot_freed)
{
    if (slot_freed) {
        /* the function has returned: a result kept for the broker's ack (or
           held while it is away) needs no arguments. Kept with it, they
           added up to a heartbeat's worth of every task's arguments, which
           the held-results bound does not count (1 MiB arguments: 400 MB).
           A thread past its limit (slot_freed false) still reads them. */
        zframe_destroy(&job->args);
    }
    if (!w->connected) {
        job->held = true;
        job->state = slot_freed ? ZXW_FINISHED : ZXW_TIMEDOUT;
        zxw_jlist_add(&w->held, job);
        w->held_bytes += s_result_size(job);
        while (w->held.size > ZXW_HELD_MAX_JOBS || w->held_bytes > ZXW_HELD_MAX_BYTES) {
            s_drop_held_oldest(w);
        }
        return;
    }
    size_t len;
    const void *small = zxw_job_result(job, &len);
    if (w->broker_acks) {
        /* kept until the broker says it got it: a broker lost meanwhile
           (its results sent into a dead connection) gets it again */
        s_emit_result_ex(w, job->key, job->seq, job->status, job->pid, job->pool, slot_freed,
                         &job->result, small, len, true, job->has_token ? job->token : NULL);
        job->state = slot_freed ? ZXW_FINISHED : ZXW_TIMEDOUT;
        job->unacked = true;
        job->sent_index = w->results_sent;
        zxw_jlist_add(&w->unacked, job);
        w->unacked_bytes += s_result_size(job);
        while (w->unacked.size > ZXW_HELD_MAX_JOBS || w->unacked_bytes > ZXW_HELD_MAX_BYTES) {
            /* the oldest was almost surely delivered */
            s_unacked_forget(w, zxw_jlist_first(&w->unacked));
        }
        return;
    }
    s_emit_result(w, job->key, job->seq, job->status, job->pid, job->pool, slot_freed, &job->result,
                  small, len, job->has_token ? job->token : NULL);
    zxw_jobtab_del(&w->jobs, job->key);
    zxw_job_free(w, job);
}

/* The broker got every WRESULT item up to index n (its HEARTBEAT says). */
static void s_on_ack(zx_worker_t *w, uint64_t n)
{
    w->broker_acks = true;
    zxw_job_t *job;
    while ((job = zxw_jlist_first(&w->unacked)) && job->sent_index <= n) {
        s_unacked_forget(w, job);
    }
}

/* Before a READY: results sent and not acknowledged go back to the held
   list, so READY names them and they are sent again when the broker speaks
   (a broker that had them drops the copy: the task is no longer that
   worker's; a new one holds it for its client). */
static void s_unacked_to_held(zx_worker_t *w)
{
    zxw_job_t *job;
    size_t n = 0;
    while ((job = zxw_jlist_pop(&w->unacked))) {
        w->unacked_bytes -= s_result_size(job);
        job->unacked = false;
        job->held = true;
        zxw_jlist_add(&w->held, job);
        w->held_bytes += s_result_size(job);
        n++;
    }
    while (w->held.size > ZXW_HELD_MAX_JOBS || w->held_bytes > ZXW_HELD_MAX_BYTES) {
        s_drop_held_oldest(w);
    }
    if (n) {
        ZXW_INFO("worker: %zu result(s) not acknowledged by the broker will be sent again", n);
    }
}

static void s_release_held(zx_worker_t *w)
{
    zxw_job_t *job;
    size_t n = w->held.size;
    while ((job = zxw_jlist_pop(&w->held))) {
        job->held = false;
        w->held_bytes -= s_result_size(job);
        zxw_job_finish(w, job, job->state != ZXW_TIMEDOUT);
    }
    if (n) {
        ZXW_INFO("worker: sent %zu result(s) held while the broker was away", n);
    }
}

void zxw_pp_started(void *arg, zxw_job_t *job)
{
    zx_worker_t *w = arg;
    job->state = ZXW_RUNNING;
    zxw_emit_started(w, job);
}

void zxw_pp_done(void *arg, zxw_job_t *job)
{
    zx_worker_t *w = arg;
    job->state = ZXW_FINISHED;
    zxw_job_finish(w, job, true); /* no result frame: an empty result */
}

static void s_key_hex(const uint8_t *key, char hex[2 * ZXW_KEY_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < ZXW_KEY_LEN; i++) {
        hex[2 * i] = digits[key[i] >> 4];
        hex[2 * i + 1] = digits[key[i] & 15];
    }
    hex[2 * ZXW_KEY_LEN] = 0;
}

/* Remembers a task dropped unstarted while draining: the broker may ask for
   it back (WCANCEL), and it never ran here, so the answer is DONE. */
static void s_given(zx_worker_t *w, const uint8_t *key)
{
    if (!w->given) {
        w->given = zhashx_new();
    }
    char hex[2 * ZXW_KEY_LEN + 1];
    s_key_hex(key, hex);
    zhashx_insert(w->given, hex, w);
}

static bool s_take_given(zx_worker_t *w, const uint8_t *key)
{
    if (!w->given) {
        return false;
    }
    char hex[2 * ZXW_KEY_LEN + 1];
    s_key_hex(key, hex);
    if (!zhashx_lookup(w->given, hex)) {
        return false;
    }
    zhashx_delete(w->given, hex);
    return true;
}

static void s_drop_job(void *arg, zxw_job_t *job)
{
    zx_worker_t *w = arg;
    s_given(w, job->key);
    if (job->pool == ZXP_POOL_THREAD) {
        w->tjobs--;
    }
    zxw_jobtab_del(&w->jobs, job->key);
    zxw_job_free(w, job);
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
    uint8_t key[ZXW_KEY_LEN];
    s_make_key(key, t->session, t->seq);
    if (w->draining) {
        /* never run here: the broker takes it back (WCANCEL, answered
           DONE), or re-queues it when it sees BYE */
        s_given(w, key);
        zframe_destroy(payload);
        return;
    }
    char name[ZXP_MAX_NAME + 1];
    memcpy(name, t->fn.ptr, t->fn.len);
    name[t->fn.len] = 0;
    zxw_job_t *old = zxw_jobtab_get(&w->jobs, key);
    if (old && old->unacked) {
        zxw_flush(w);             /* its result may still be in the open batch, borrowed */
        s_unacked_forget(w, old); /* the broker runs it again: this copy is stale */
        old = NULL;
    }
    if (old) {
        /* the broker gave it again (a new attempt, after it lost us): it is
           the one running, so its result carries the new token */
        if (t->token) {
            memcpy(old->token, t->token, ZXP_TOKEN_LEN);
            old->has_token = true;
            old->attempt = t->attempt;
        }
        ZXW_DEBUG("worker: duplicate task %s seq %llu ignored", name, (unsigned long long)t->seq);
        zframe_destroy(payload);
        return;
    }
    char msg[512];
    /* tasks come in runs of one function: functions are never removed, so
       the last one found stays valid */
    zxw_fn_t *fn = w->last_fn;
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
    zxw_job_t *job = w->jobs.count < ZXW_JOBS_MAX ? zxw_job_new(w) : NULL;
    if (!job) {
        s_reject(w, t, ZXP_ST_REJECTED, "RejectedError", "worker is out of task slots");
        zframe_destroy(payload);
        return;
    }
    memcpy(job->key, key, ZXW_KEY_LEN);
    job->seq = t->seq;
    job->fn = fn;
    job->has_token = t->token != NULL;
    if (t->token) {
        memcpy(job->token, t->token, ZXP_TOKEN_LEN);
    }
    job->attempt = t->attempt;
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
        zxw_job_free(w, job);
        s_reject(w, t, ZXP_ST_REJECTED, "RejectedError", "worker is out of memory");
        return;
    }
    job->pid = w->pid;
    if (zxw_jobtab_put(&w->jobs, job) != 0) {
        zxw_job_free(w, job);
        s_reject(w, t, ZXP_ST_REJECTED, "RejectedError", "worker is out of memory");
        return;
    }
    ZXW_DEBUG("worker: task %s seq %llu -> %s pool", name, (unsigned long long)t->seq,
              s_pool_name(pool));
    if (pool == ZXP_POOL_THREAD) {
        w->tjobs++;
        if (zxw_may_run_here(w, job)) {
            w->inline_next = job; /* the loop runs it once this message is handled */
            return;
        }
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
    if (job && !job->held && !job->unacked) {
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
            zxw_job_free(w, job);
        }
    } else if (!job && s_take_given(w, key)) {
        outcome = ZXP_CANCEL_DONE; /* dropped unstarted at drain */
    }
    s_emit_cancelled(w, session, seq, outcome);
}

int zxw_connect(zx_worker_t *w)
{
    w->dealer_h = NULL;
    w->dealer_fd = -1; /* poll skips it while there is no socket */
    w->dealer_gen++;
    w->dealer = zsock_new(ZMQ_DEALER);
    if (!w->dealer) {
        return ZX_ENOMEM;
    }
    zxp_sock_setup(w->dealer);
    zsock_set_rcvtimeo(w->dealer, 0); /* the loop reads until EAGAIN */
    zx__sec_socket(w->sec, w->dealer, ZXP_ROLE_BROKER_W);
    zmq_setsockopt(zsock_resolve(w->dealer), ZMQ_ROUTING_ID, w->wid, ZXP_ID_LEN);
    w->monitor = zx__monitor_new(w->dealer);
    const char *ep = zx__eps_current(&w->eps);
    if (zsock_connect(w->dealer, "%s", ep) != 0) {
        zsys_error("worker: cannot connect to %s: %s", ep, zmq_strerror(zmq_errno()));
        zx__monitor_destroy(&w->monitor, w->dealer);
        zsock_destroy(&w->dealer);
        return ZX_EINVAL;
    }
    w->dealer_h = zsock_resolve(w->dealer);
    w->dealer_fd = zsock_fd(w->dealer);
    w->connected = false;
    w->last_recv = zclock_mono();
    /* a new broker session re-queues what it does not hear of */
    zhashx_destroy(&w->given);
    s_send_ready(w);
    return ZX_OK;
}

/* The broker went silent, is stopping or is passive: a fresh DEALER with
   the same routing id, READY again, results held until the broker speaks.
   With a pair of brokers (a list of endpoints) the new DEALER goes to the
   next endpoint: the other broker is the active one, or will be. */
void zxw_reconnect(zx_worker_t *w, const char *why)
{
    const char *from = zx__eps_current(&w->eps);
    zsys_warning("worker: %s; reconnecting to %s", why,
                 w->eps.n > 1 ? zx__eps_next(&w->eps) : from);
    zxw_flush(w);
    zx__monitor_destroy(&w->monitor, w->dealer);
    zsock_destroy(&w->dealer);
    if (zxw_connect(w) != ZX_OK) {
        zsys_error("worker: cannot recreate the broker socket");
    }
}

/* A refused handshake leaves the DEALER with no connection (libzmq 4.3
   does not reconnect after one) and no message ever arrives: the liveness
   reconnect above tries again every liveness x heartbeat, and this says
   why, once until a handshake succeeds. */
void zxw_check_handshake(zx_worker_t *w)
{
    if (!w->monitor) {
        return;
    }
    char peer[300], why[512];
    snprintf(peer, sizeof peer, "the broker at %s", zx__eps_current(&w->eps));
    for (;;) {
        zx__hs_t ev = zx__monitor_read(w->monitor, w->dealer, peer, why, sizeof why);
        if (ev == ZX__HS_NONE) {
            break;
        }
        if (ev == ZX__HS_OK) {
            w->refused = false;
        } else if ((ev == ZX__HS_REFUSED || ev == ZX__HS_FAILED_RETRY) && !w->refused) {
            w->refused = true;
            zsys_error("worker: %s; retrying every %lld ms", why,
                       (long long)(w->hb_ms * w->opts.liveness));
        }
    }
}

void zxw_begin_drain(zx_worker_t *w)
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

void zxw_on_message(zx_worker_t *w, zmsg_t **msg_p)
{
    int rc = zx__sec_verify(w->sec, *msg_p, ZXP_ROLE_WORKER);
    if (rc != 0) {
        zmsg_destroy(msg_p);
        zxp_drop(&w->drops, "worker", NULL, rc, "signature check failed");
        return;
    }
    zxw_on_decoded(w, zxp_decode(&w->in, msg_p, ZXP_ROLE_WORKER));
}

void zxw_on_decoded(zx_worker_t *w, int rc)
{
    if (rc != 0) {
        zxp_drop(&w->drops, "worker", NULL, rc, w->in.reason);
        return;
    }
    if (w->in.cmd == ZXP_ERROR && w->eps.n > 1 &&
        zxp_u(zxp_item(&w->in, 0), 0) == ZXP_ERR_PASSIVE) {
        /* the passive broker of a pair: results stay held for the active one */
        w->connected = false;
        zxw_reconnect(w, "the broker is passive");
        return;
    }
    w->last_recv = zclock_mono();
    if (!w->connected) {
        w->connected = true;
        ZXW_INFO("worker: broker %s answered", zx__eps_current(&w->eps));
        s_release_held(w);
        if (w->draining) {
            zxw_begin_drain(w);
        }
    }
    if (w->in.cmd != ZXP_RESET) {
        w->awaiting_welcome = false; /* it knows us: a RESET now is news */
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
    case ZXP_RESET: {
        /* every message that crossed a broker restart draws a RESET; one
           READY answers them all (a READY per RESET was a registration
           storm: 45 after one quick restart). When signing, a RESET from a
           broker session other than the one our READY was signed for (the
           first contact, a restarted broker) says that READY was dropped:
           it is answered at once, else registering waits liveness x
           heartbeat (3 s) */
        const uint8_t *epoch = zx__sec_epoch(w->sec);
        bool dropped = epoch && memcmp(epoch, w->ready_epoch, sizeof w->ready_epoch) != 0;
        if (w->awaiting_welcome && !dropped &&
            zclock_mono() - w->ready_at < w->hb_ms * w->opts.liveness) {
            break;
        }
        ZXW_INFO("worker: the broker does not know us; sending READY again");
        w->connected = false; /* results are held until it answers */
        s_send_ready(w);
        break;
    }
    case ZXP_ERROR: {
        const msgpack_object *h = zxp_item(&w->in, 0);
        zxp_str_t m = zxp_s(h, 1);
        zsys_warning("worker: broker error %llu: %.*s", (unsigned long long)zxp_u(h, 0), (int)m.len,
                     m.ptr);
        break;
    }
    case ZXP_SHUTDOWN: zxw_reconnect(w, "the broker is shutting down"); break;
    case ZXP_WELCOME:
        w->broker_max = zxp_u(zxp_item(&w->in, 0), 3);
        ZXW_DEBUG("worker: welcomed by the broker (max message %llu bytes)",
                  (unsigned long long)w->broker_max);
        break;
    case ZXP_HEARTBEAT: {
        const msgpack_object *h = zxp_item(&w->in, 0);
        if (h->via.array.size >= 1 && h->via.array.ptr[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
            s_on_ack(w, h->via.array.ptr[0].via.u64);
        }
        break;
    }
    default: break;
    }
}
