/*  workers.c - the broker's side of its workers: their records and what
    each worker command does (READY, WSTARTED, WRESULT, WCANCELLED, CREDIT,
    DRAIN, BYE), the recovery of tasks a worker reports at READY, held
    results, and worker liveness.

    A worker record is keyed by the worker's id (its routing id) and lists
    the tasks assigned to it, so a lost worker's tasks can be re-queued
    (dispatch.c) without scanning all tasks. Slots are counted per pool kind
    in the record's placement state (zxb_place.h): inflight goes up when a
    task is dispatched and down when the worker says its slot is free (a
    WRESULT with slot_freed, or a CREDIT for slots it kept while a late
    task's thread ran on). The placement policy hears of every start and
    end (the run time of each function, placement.c); dispatch.c asks it.

    After a broker restart, workers say READY again listing the tasks they
    run: those become tasks of placeholder client records until their
    clients re-submit them (client.c adopts them); a result that comes
    before that is held for the client (client_timeout_ms). A worker that
    says READY again while it has a record replaces it.
*/
#include "zxb_broker.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_HELD_MAX 100000 /* results held for clients that have not re-submitted */

/* ---- batches and task lists ---------------------------------------------------------- */

static void s_worker_dirty(zxb_broker_t *self, zxb_worker_t *w)
{
    if (!w->dirty) {
        w->dirty = true;
        w->dirty_next = self->dirty_workers;
        self->dirty_workers = w;
    }
}

zxp_out_t *zxb_worker_batch(zxb_broker_t *self, zxb_worker_t *w, uint8_t cmd)
{
    s_worker_dirty(self, w);
    zxp_out_t **slot = cmd == ZXP_TASK ? &w->out_task : &w->out_cancel;
    return zxb_batch(self, slot, cmd, zxb_wsock(self), w->rid);
}

void zxb_task_link(zxb_worker_t *w, zxb_task_t *t)
{
    t->worker = w;
    zx__list_push_front(&w->tasks, &t->link);
    w->ntasks++;
    w->place[t->pool].bytes += t->size;
    w->place[t->pool].nlong += t->lng;
    t->client->nlong += t->lng;
}

void zxb_task_unlink(zxb_worker_t *w, zxb_task_t *t, int64_t now_us)
{
    zx__list_remove(&w->tasks, &t->link);
    t->worker = NULL;
    w->ntasks--;
    w->place[t->pool].bytes -= t->size;
    w->place[t->pool].nlong -= t->lng;
    t->client->nlong -= t->lng;
    t->lng = 0;
    if (t->counted) {
        t->counted = 0;
        zxb_place_on_gone(&t->fn->est[t->pool], t->start_us);
        zxb_client_t *c = t->client;
        c->nrun--;
        c->run_start_sum -= t->start_us;
        if (now_us > t->start_us) {
            c->used_us += now_us - t->start_us;
        }
    }
}

/* ---- worker records --------------------------------------------------------------- */

static void s_worker_offer(zxb_broker_t *self, zxb_worker_t *w, int delta)
{
    for (size_t i = 0; i < w->nfns; i++) {
        zxb_fn_t *fn = w->fns[i].fn;
        for (int p = ZXP_POOL_THREAD; p <= ZXP_POOL_PROCESS; p++) {
            if (w->fns[i].mask & p) {
                fn->offered[p] = (uint32_t)((int64_t)fn->offered[p] + delta);
            }
        }
        zxb_orphan_mark(self, fn);
    }
}

void zxb_worker_free(zxb_broker_t *self, zxb_worker_t **w_p)
{
    zxb_worker_t *w = *w_p;
    if (!w) {
        return;
    }
    if (self->last_worker == w) {
        self->last_worker = NULL;
    }
    zxb_out_put(self, &w->out_task);
    zxb_out_put(self, &w->out_cancel);
    for (size_t i = 0; i < w->nfns; i++) {
        for (int p = ZXP_POOL_THREAD; p <= ZXP_POOL_PROCESS; p++) {
            zxb_free_unlink(&w->fns[i], p);
            zxb_idle_unlink(&w->fns[i], p);
        }
        w->fns[i].fn->refs--;
    }
    free(w->fns);
    if (w->rx_marks) {
        void *m;
        while ((m = zlist_pop(w->rx_marks))) {
            free(m);
        }
        zlist_destroy(&w->rx_marks);
    }
    zframe_destroy(&w->rid);
    free(w);
    *w_p = NULL;
}

/* Takes a worker out: its unfinished tasks go back to the queue (lost:
   counting the attempt) or fail; the record is freed. */
static void s_worker_remove(zxb_broker_t *self, zxb_worker_t *w, bool lost, const char *why)
{
    w->dead = true;
    zxb_out_put(self, &w->out_task); /* unsent batches never reach it */
    zxb_out_put(self, &w->out_cancel);
    zxb_worker_relist(self, w);
    zxb_withdraw_forget(self, w);
    if (!w->draining) {
        s_worker_offer(self, w, -1);
    }
    size_t requeued = 0, failed = 0;
    while (w->tasks.head) {
        zxb_task_t *t = zxb_task_of(w->tasks.head);
        zxb_task_unlink(w, t, self->now_us);
        self->running--;
        if (zxb_task_requeue(self, t, lost, w->node)) {
            requeued++;
        } else {
            failed++;
        }
    }
    if (lost) {
        zsys_warning("worker %s (pid %u) lost: %s; %zu of its tasks re-queued, %zu ended", w->node,
                     w->pid, why, requeued, failed);
    } else {
        ZXB_INFO("worker %s (pid %u) left: %s; %zu of its tasks re-queued", w->node, w->pid, why,
                 requeued);
    }
    zhashx_delete(self->workers, w->id);
    zxb_slots_count(self);
    if (w->dirty) {
        /* unlink from the dirty list */
        for (zxb_worker_t **pp = &self->dirty_workers; *pp; pp = &(*pp)->dirty_next) {
            if (*pp == w) {
                *pp = w->dirty_next;
                break;
            }
        }
    }
    zxb_worker_free(self, &w);
}

/* ---- worker commands ------------------------------------------------------------- */

/* The task (session, seq) if it is assigned to w; else counts a drop. */
static zxb_task_t *s_worker_task(zxb_broker_t *self, zxb_worker_t *w, const uint8_t *session,
                                 uint64_t seq, zframe_t *rid, bool drop)
{
    zxb_client_t *c = zxb_client_find(self, session);
    zxb_task_t *t = c ? zxb_task_find(self->sched, c, seq) : NULL;
    if (t && t->worker == w && (t->state == ZXB_T_DISPATCHED || t->state == ZXB_T_RUNNING)) {
        return t;
    }
    if (drop) {
        zxp_drop(&self->drops, "workers", rid, ZXP_E_UNKNOWN,
                 "reply for a task not assigned to this worker");
    }
    return NULL;
}

static zxb_task_t *s_find_any(zxb_broker_t *self, const uint8_t *session, uint64_t seq)
{
    zxb_client_t *c = zxb_client_find(self, session);
    return c ? zxb_task_find(self->sched, c, seq) : NULL;
}

static void s_on_wstarted(zxb_broker_t *self, zxb_worker_t *w, zframe_t *rid)
{
    zxp_in_t *in = &self->in;
    for (size_t i = 0; i < in->count; i++) {
        const msgpack_object *it = zxp_item(in, i);
        const uint8_t *session = (const uint8_t *)zxp_s(it, 0).ptr;
        uint64_t seq = zxp_u(it, 1);
        uint32_t pid = (uint32_t)zxp_u(it, 2);
        zxb_task_t *t = s_worker_task(self, w, session, seq, rid, true);
        if (!t) {
            continue;
        }
        if (t->state == ZXB_T_DISPATCHED) {
            t->state = ZXB_T_RUNNING;
            w->running++;
            t->start_us = self->now_us;
            if (t->fn && !t->counted) {
                t->counted = 1;
                zxb_place_on_start(&t->fn->est[t->pool], self->now_us);
                t->client->nrun++;
                t->client->run_start_sum += self->now_us;
            }
        }
        zxb_client_t *c = t->client;
        if (c->alive && t->adopted && !t->bcancel) {
            zxp_put_started(zxb_client_batch(self, c, ZXP_STARTED), seq, w->node, strlen(w->node),
                            pid);
        }
    }
}

/* A task leaves its worker (result: with a WRESULT, a run-time sample of
   its function): slot accounting. */
static void s_task_off_worker(zxb_broker_t *self, zxb_worker_t *w, zxb_task_t *t, bool slot_freed,
                              bool result)
{
    if (result && t->fn &&
        zxb_place_on_result(&t->fn->est[t->pool], &w->place[t->pool], t->state == ZXB_T_RUNNING,
                            t->start_us, self->now_us)) {
        self->place_epoch++;
    }
    if (t->state == ZXB_T_RUNNING) {
        w->running--;
    } else if (result && t->fn) {
        /* ended within 1 ms of its start: its client used about what the
           function takes */
        double run = t->fn->est[t->pool].run_us;
        int64_t waited = self->now_us - t->start_us;
        t->client->used_us += run > 0
                                  ? (int64_t)run
                                  : (waited < ZXB_PLACE_NOSTART_US ? waited : ZXB_PLACE_NOSTART_US);
    }
    zxb_task_unlink(w, t, self->now_us);
    self->running--;
    if (slot_freed) {
        w->place[t->pool].inflight--;
    } else {
        w->held[t->pool]++;
    }
}

static void s_hold_result(zxb_broker_t *self, zxb_worker_t *w, zxb_task_t *t,
                          const zxp_wresult_t *r, zframe_t **payload)
{
    zxb_fn_t *node = zxb_fn_intern(self->sched, w->node, strlen(w->node));
    if (self->nheld >= S_HELD_MAX || t->client->expired || !node) {
        zframe_destroy(payload);
        zxb_task_release(self, t);
        return;
    }
    t->state = ZXB_T_HELD;
    t->fn = node;
    node->refs++;
    zxb_task_payload_set(t, payload);
    t->held_status = r->status;
    t->held_pid = r->pid;
    self->nheld++;
    zxb_timer_push(&self->heldq, t, self->now + self->cfg.client_timeout_ms);
}

/* A WRESULT item the decoder refused (zxp_item_bad: an unknown status, a
   field out of range) still names its task: the task fails with a
   ProtocolError that says so, instead of staying RUNNING for ever. The
   fields that can be read are kept; a slot is taken as freed unless the
   item says otherwise. */
static void s_bad_wresult(zxb_broker_t *self, zxb_worker_t *w, size_t i, int bad, zxp_wresult_t *r,
                          zframe_t **payload)
{
    const msgpack_object *it = zxp_item(&self->in, i);
    const msgpack_object *f = it->via.array.ptr;
    uint32_t n = it->via.array.size;
    r->session = (const uint8_t *)zxp_s(it, 0).ptr;
    r->seq = zxp_u(it, 1);
    r->status = ZXP_ST_RAISED;
    r->pid = n > 3 && f[3].type == MSGPACK_OBJECT_POSITIVE_INTEGER && f[3].via.u64 <= UINT32_MAX
                 ? (uint32_t)f[3].via.u64
                 : 0;
    r->pool = n > 4 && f[4].type == MSGPACK_OBJECT_POSITIVE_INTEGER && f[4].via.u64 <= 2
                  ? (uint8_t)f[4].via.u64
                  : 0;
    r->slot_freed = !(n > 5 && f[5].type == MSGPACK_OBJECT_BOOLEAN && !f[5].via.boolean);
    r->token = NULL; /* not checked: the item fails its task either way */
    char msg[512];
    if (bad == ZXP_BAD_STATUS) {
        snprintf(msg, sizeof msg, "worker %s answered with unknown status %" PRIu64, w->node,
                 n > 2 && f[2].type == MSGPACK_OBJECT_POSITIVE_INTEGER ? f[2].via.u64 : 0);
    } else {
        snprintf(msg, sizeof msg, "worker %s answered with a malformed result: %s", w->node,
                 zxp_bad_reason(bad));
    }
    zframe_destroy(payload);
    *payload = zxp_error_frame("ProtocolError", msg, "");
    self->bad_results++;
}

static void s_on_wresult(zxb_broker_t *self, zxb_worker_t *w, zframe_t *rid)
{
    zxp_in_t *in = &self->in;
    w->results_rx += in->count; /* acknowledged in the next HEARTBEAT */
    for (size_t i = 0; i < in->count; i++) {
        zxp_wresult_t r;
        int bad = zxp_item_bad(in, i);
        if (!bad) {
            zxp_get_wresult(in, i, &r);
        }
        const void *mem = NULL;
        size_t len = 0;
        zframe_t *payload = NULL;
        if (!zxp_payload_take_inline(in, &mem, &len)) {
            payload = zxp_payload_take(in);
        }
        if (bad) {
            s_bad_wresult(self, w, i, bad, &r, &payload);
            mem = NULL;
            len = 0;
        }
        zxb_task_t *t = s_worker_task(self, w, r.session, r.seq, rid, false);
        if (t && r.token && !t->unproven && !zxb_token_current(t, r.token)) {
            /* for an earlier attempt (it was given the task again since),
               or forged: the current attempt's result is still to come */
            self->stale_results++;
            zxp_drop(&self->drops, "workers", rid, ZXP_E_UNKNOWN,
                     "result for another attempt of its task (token)");
            zframe_destroy(&payload);
            continue;
        }
        if (!t) {
            uint8_t p = r.pool ? r.pool : ZXP_POOL_THREAD;
            if (w->foreign[p] > 0) {
                /* a task it reported at READY that had gone elsewhere */
                w->foreign[p]--;
                w->place[p].inflight--;
                zxb_task_t *q = s_find_any(self, r.session, r.seq);
                if (q && q->state == ZXB_T_QUEUED && q->adopted) {
                    zxb_queued_remove(self, q);
                    zxb_result_send(self, q, r.status, w->node, strlen(w->node), r.pid, p, &payload,
                                    mem, len);
                    zxb_task_release(self, q);
                } else {
                    /* another attempt runs it now (or ran it): this one is
                       stale, as one with another attempt's token is */
                    self->stale_results++;
                    zxp_drop(&self->drops, "workers", rid, ZXP_E_UNKNOWN,
                             "result for an earlier attempt of a task it reported at READY");
                }
            } else {
                zxp_drop(&self->drops, "workers", rid, ZXP_E_UNKNOWN,
                         "result for a task not assigned to this worker");
            }
            zframe_destroy(&payload);
            continue;
        }
        s_task_off_worker(self, w, t, r.slot_freed, true);
        if (r.status == ZXP_ST_OK) {
            w->done++;
        } else {
            w->failed++;
        }
        if (!t->adopted) {
            if (!payload && mem) {
                payload = zframe_new(mem, len);
            }
            s_hold_result(self, w, t, &r, &payload);
            continue;
        }
        zxb_result_send(self, t, r.status, w->node, strlen(w->node), r.pid, t->pool, &payload, mem,
                        len);
        zxb_task_release(self, t);
    }
    zxb_durable_wresults(self, w);
    zxb_worker_fill(self, w);
}

static void s_on_wcancelled(zxb_broker_t *self, zxb_worker_t *w, zframe_t *rid)
{
    zxp_in_t *in = &self->in;
    bool freed = false, refused = false;
    for (size_t i = 0; i < in->count; i++) {
        const msgpack_object *it = zxp_item(in, i);
        const uint8_t *session = (const uint8_t *)zxp_s(it, 0).ptr;
        uint64_t seq = zxp_u(it, 1);
        uint32_t outcome = (uint32_t)zxp_u(it, 2);
        zxb_task_t *t = s_worker_task(self, w, session, seq, rid, false);
        if (!t) {
            /* it may have finished meanwhile: its RESULT answered already */
            continue;
        }
        zxb_client_t *c = t->client;
        if (t->withdraw) {
            /* the answer to a withdrawal (sent before any cancel of the
               client's, answered in order) */
            zxb_withdraw_answered(self, t);
            if (outcome == ZXP_CANCEL_REFUSED) {
                /* too late: it runs there (a cancel's answer follows); the
                   idle slot that wanted it looks again at once */
                refused = true;
                continue;
            }
            s_task_off_worker(self, w, t, true, false);
            freed = true;
            self->withdrawn_done++;
            if (t->cancelled) {
                zxb_cancelled_send(self, c, seq, ZXP_CANCEL_DONE);
                self->cancelled++;
            } else if (zxb_client_wants(c) && t->adopted) {
                t->bcancel = 0;
                if (t->attempts > 0) {
                    t->attempts--;
                }
                zxb_task_enqueue(self, t, true, false);
                continue;
            }
            zxb_task_release(self, t);
            continue;
        }
        if (outcome == ZXP_CANCEL_REFUSED) {
            if (t->cancelled && !t->bcancel) {
                zxb_cancelled_send(self, c, seq, outcome);
            }
            continue;
        }
        s_task_off_worker(self, w, t, true, false);
        freed = true;
        if (t->bcancel && !t->cancelled) {
            /* withdrawn because its client left; if it came back, queue again */
            if (zxb_client_wants(c) && outcome == ZXP_CANCEL_DONE) {
                t->bcancel = 0;
                if (t->attempts > 0) {
                    t->attempts--;
                }
                zxb_task_enqueue(self, t, true, false);
                continue;
            }
        } else {
            zxb_cancelled_send(self, c, seq, outcome);
            self->cancelled++;
            ZXB_DEBUG("task %" PRIu64 " of client %s %s on worker %s", seq, c->name,
                      outcome == ZXP_CANCEL_DONE ? "cancelled" : "terminated", w->node);
        }
        zxb_task_release(self, t);
    }
    if (freed) {
        zxb_worker_fill(self, w);
    }
    if (refused) {
        zxb_steal_due(self);
    }
}

static void s_on_credit(zxb_broker_t *self, zxb_worker_t *w)
{
    const msgpack_object *h = zxp_item(&self->in, 0);
    uint8_t p = (uint8_t)zxp_u(h, 0);
    uint64_t n = zxp_u(h, 1);
    if (n > w->held[p]) {
        n = w->held[p];
    }
    w->held[p] -= (uint32_t)n;
    w->place[p].inflight -= (uint32_t)n;
    zxb_worker_fill(self, w);
}

static void s_on_drain(zxb_broker_t *self, zxb_worker_t *w)
{
    if (w->draining) {
        return;
    }
    w->draining = true;
    zxb_worker_relist(self, w);
    s_worker_offer(self, w, -1);
    zxb_slots_count(self);
    zxb_worker_giveback(self, w);
    ZXB_INFO("worker %s (pid %u) is draining: no new tasks; %" PRIu64 " still assigned", w->node,
             w->pid, w->ntasks);
}

/* Attaches a task a READY reports as running to its new worker record. */
static void s_recover_running(zxb_broker_t *self, zxb_worker_t *w, zxb_worker_t *old,
                              const msgpack_object *r)
{
    const uint8_t *session = (const uint8_t *)zxp_s(r, 0).ptr;
    uint64_t seq = zxp_u(r, 1);
    uint8_t pool = (uint8_t)zxp_u(r, 2);
    if (pool == ZXP_POOL_ANY) {
        pool = ZXP_POOL_THREAD;
    }
    if (session[0] == 0) {
        return; /* not a valid routing id: no client can own it */
    }
    zxb_client_t *c = zxb_client_find(self, session);
    if (!c) {
        c = zxb_client_new(self, session); /* a placeholder until its HELLO */
    }
    zxb_task_t *t = zxb_task_find(self->sched, c, seq);
    bool same =
        t && t->worker == old && old && (t->state == ZXB_T_DISPATCHED || t->state == ZXB_T_RUNNING);
    /* the proof that this worker was given the task: its token and attempt
       (tokens.c). Needed for a task of this run that is not its own, and,
       when the key survives restarts, for one this run does not know */
    const msgpack_object *rf = r->via.array.ptr;
    const uint8_t *token = r->via.array.size > 4 && rf[3].type == MSGPACK_OBJECT_BIN &&
                                   rf[3].via.bin.size == ZXP_TOKEN_LEN &&
                                   rf[4].type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
                                   rf[4].via.u64 <= 255
                               ? (const uint8_t *)rf[3].via.bin.ptr
                               : NULL;
    uint32_t attempt = token ? (uint32_t)rf[4].via.u64 : 0;
    bool proven = token && zxb_token_ok(self, session, seq, attempt, w->id, token);
    /* a task this run never gave anyone (unknown, or re-sent by its client
       and still queued) is taken on trust only in the window after a start
       when workers report what a previous run gave them, and only when no
       key survives restarts (then nothing could prove it) */
    bool restarting = self->now - self->started <= (int64_t)self->cfg.client_timeout_ms;
    bool never_given = !t || (t->state == ZXB_T_QUEUED && t->attempts == 0);
    if (!same && !proven && (self->tok_persistent || !restarting || !never_given)) {
        self->forged_claims++;
        zxp_drop(&self->drops, "workers", w->rid, ZXP_E_UNKNOWN,
                 "READY lists a task it cannot prove it was given (token)");
        if (!c->ever && c->ntasks == 0) {
            zxb_client_check(self, c); /* the placeholder made for it goes */
        }
        return;
    }
    if (!t && self->journal && c->job && !c->alive) {
        /* the journal holds every task a job's session had ACCEPTED, and a
           detached session re-sends nothing: a task it does not hold has
           ended (its result RACKed) and this is a copy the worker kept
           until the broker's acknowledgement */
        w->foreign[pool]++;
        w->place[pool].inflight++;
        return;
    }
    if (same) {
        s_task_off_worker(self, old, t, true, false);
    } else if (t && t->state == ZXB_T_QUEUED) {
        zxb_queued_remove(self, t);
        t->attempts++;
    } else if (t || (proven && (!self->tok_persistent || !restarting))) {
        /* running elsewhere now (another attempt), or, unknown but proven
           with this run's key (or past the window in which a previous run's
           tasks come back), given by this run and resolved since: the
           attempt it reports is stale, its result dropped when it comes */
        w->foreign[pool]++;
        w->place[pool].inflight++;
        if (!t && !c->ever && c->ntasks == 0) {
            zxb_client_check(self, c); /* the placeholder made for it goes */
        }
        return;
    } else {
        t = zxb_task_alloc(self->sched);
        assert(t);
        t->client = c;
        t->seq = seq;
        t->attempts = 1;
        if (seq > c->max_seq) {
            c->max_seq = seq;
        }
        t->arrival = zxb_arrival_now(self->sched, self->now);
        zxb_task_index(self->sched, t);
        c->ntasks++;
        c->doomed = false;
    }
    t->gen++;
    t->state = ZXB_T_RUNNING;
    t->pool = pool;
    if (proven) {
        t->attempts = (uint8_t)attempt; /* its result carries that attempt's token */
        memcpy(t->token, token, ZXP_TOKEN_LEN);
        t->unproven = 0;
    } else if (!same) {
        t->unproven = 1; /* taken on trust (no key that survives restarts) */
    }
    t->withdraw = 0;
    t->start_us = self->now_us;
    t->lng = 1; /* how long it runs is not known: nothing short waits behind it */
    zxb_task_link(w, t);
    w->place[pool].inflight++;
    w->running++;
    self->running++;
    if (c->alive && t->adopted) {
        zxp_put_started(zxb_client_batch(self, c, ZXP_STARTED), seq, w->node, strlen(w->node), 0);
    }
}

static void s_on_ready(zxb_broker_t *self, zxb_worker_t *old, zframe_t *rid)
{
    const msgpack_object *h = zxp_item(&self->in, 0);
    if (zxp_u(h, 0) != ZXP_VERSION) {
        zxp_send_error(zxb_wsock(self), rid, ZXP_ERR_VERSION, "unsupported protocol version");
        return;
    }
    zxp_str_t wid = zxp_s(h, 1), node = zxp_s(h, 2);
    if (zframe_size(rid) != ZXP_ID_LEN || memcmp(wid.ptr, zframe_data(rid), ZXP_ID_LEN) != 0) {
        zxp_send_error(zxb_wsock(self), rid, ZXP_ERR_IDENTITY,
                       "the routing id must be the 16-byte worker id");
        zxp_drop(&self->drops, "workers", rid, ZXP_E_SHAPE,
                 "READY worker id is not the routing id");
        return;
    }
    zxb_worker_t *w = calloc(1, sizeof *w);
    assert(w);
    memcpy(w->id, wid.ptr, ZXP_ID_LEN);
    w->rid = zframe_new(w->id, ZXP_ID_LEN);
    snprintf(w->node, sizeof w->node, "%.*s", (int)node.len, node.ptr);
    w->pid = (uint32_t)zxp_u(h, 3);
    w->threads = (uint32_t)zxp_u(h, 4);
    w->procs = (uint32_t)zxp_u(h, 5);
    w->prefetch = (uint32_t)zxp_u(h, 6);
    w->max_msg = zxb_opt_u(h, 10);
    uint64_t hb = zxp_u(h, 7);
    w->hb_ms = hb ? (uint32_t)hb : self->cfg.heartbeat_ms;
    zxb_place_pool_init(&w->place[ZXP_POOL_THREAD], w->threads, w->prefetch);
    zxb_place_pool_init(&w->place[ZXP_POOL_PROCESS], w->procs, w->prefetch);
    w->last_recv = w->last_send = self->now;
    uint8_t have = (w->threads ? ZXP_POOLS_THREAD : 0) | (w->procs ? ZXP_POOLS_PROCESS : 0);
    const msgpack_object *fns = zxp_o(h, 8), *running = zxp_o(h, 9);
    w->fns = calloc(fns->via.array.size ? fns->via.array.size : 1, sizeof *w->fns);
    assert(w->fns);
    for (uint32_t i = 0; i < fns->via.array.size; i++) {
        const msgpack_object *f = &fns->via.array.ptr[i];
        zxp_str_t name = zxp_s(f, 0);
        zxb_fn_t *fn = zxb_fn_intern(self->sched, name.ptr, name.len);
        if (!fn) {
            continue;
        }
        zxb_wfn_t *wf = &w->fns[w->nfns++];
        wf->fn = fn;
        wf->worker = w;
        wf->mask = (uint8_t)zxp_u(f, 1) & have;
        fn->refs++;
    }
    /* a task listed twice is taken once: a second entry would count a slot
       that no WRESULT ever frees */
    zhashx_t *seen = running->via.array.size > 1 ? zhashx_new() : NULL;
    size_t dups = 0;
    for (uint32_t i = 0; i < running->via.array.size; i++) {
        const msgpack_object *r = &running->via.array.ptr[i];
        if (seen) {
            char key[2 * ZXP_ID_LEN + 24];
            zxb_hex((const uint8_t *)zxp_s(r, 0).ptr, key);
            snprintf(key + 2 * ZXP_ID_LEN, sizeof key - 2 * ZXP_ID_LEN, ":%" PRIx64, zxp_u(r, 1));
            if (zhashx_lookup(seen, key)) {
                dups++;
                continue;
            }
            zhashx_insert(seen, key, (void *)1);
        }
        s_recover_running(self, w, old, r);
    }
    zhashx_destroy(&seen);
    if (dups) {
        zxp_drop(&self->drops, "workers", rid, ZXP_E_SHAPE, "READY lists a running task twice");
    }
    if (old) {
        /* it is alive: a task it did not list crossed its READY in flight */
        s_worker_remove(self, old, false, "registered again (READY)");
    }
    zhashx_insert(self->workers, w->id, w);
    self->registrations++;
    zxb_slots_count(self);
    s_worker_offer(self, w, +1);
    zxp_send_welcome(zxb_wsock(self), w->rid, self->id, self->cfg.heartbeat_ms, self->cfg.liveness,
                     (uint32_t)zxp_max_msg());
    char hex[33];
    zxb_hex(w->id, hex);
    ZXB_INFO("worker %s (pid %u, id %s) ready: %u threads, %u processes, prefetch %u, %zu "
             "functions, %u tasks running",
             w->node, w->pid, hex, w->threads, w->procs, w->prefetch, w->nfns,
             running->via.array.size);
    zxb_worker_fill(self, w);
}

void zxb_worker_msg(zxb_broker_t *self, zframe_t *rid)
{
    zxb_worker_t *w = NULL;
    if (zframe_size(rid) == ZXP_ID_LEN) {
        /* as for clients (zxb_client_find): most often the worker of the
           message before */
        w = self->last_worker;
        if (!w || memcmp(w->id, zframe_data(rid), ZXP_ID_LEN) != 0) {
            w = zhashx_lookup(self->workers, zframe_data(rid));
            if (w) {
                self->last_worker = w;
            }
        }
    }
    uint8_t cmd = self->in.cmd;
    if (cmd == ZXP_READY) {
        s_on_ready(self, w, rid);
        return;
    }
    if (!w) {
        if (cmd != ZXP_BYE) {
            zxp_send_empty(zxb_wsock(self), rid, ZXP_RESET);
        }
        return;
    }
    w->last_recv = self->now;
    switch (cmd) {
    case ZXP_WSTARTED: s_on_wstarted(self, w, rid); break;
    case ZXP_WRESULT: s_on_wresult(self, w, rid); break;
    case ZXP_WCANCELLED: s_on_wcancelled(self, w, rid); break;
    case ZXP_CREDIT: s_on_credit(self, w); break;
    case ZXP_DRAIN: s_on_drain(self, w); break;
    case ZXP_BYE: s_worker_remove(self, w, false, "said BYE"); break;
    case ZXP_HEARTBEAT:
    default: break;
    }
}

/* ---- liveness and held results ----------------------------------------------------- */

void zxb_workers_tick(zxb_broker_t *self)
{
    int64_t now = self->now;
    uint32_t hb = self->cfg.heartbeat_ms;
    zlist_t *lost = NULL;
    for (zxb_worker_t *w = zhashx_first(self->workers); w; w = zhashx_next(self->workers)) {
        /* a worker counts the broker lost after its own liveness x its own
           heartbeat (it does not use WELCOME's): one that announced a
           shorter heartbeat than ours gets one at its pace, else it would
           reconnect every few hundred ms (protocol.md §6) */
        uint32_t whb = w->hb_ms < hb ? w->hb_ms : hb;
        if (now - w->last_recv > (int64_t)self->cfg.liveness * w->hb_ms) {
            if (!lost) {
                lost = zlist_new();
            }
            zlist_append(lost, w);
        } else {
            /* the heartbeat says how many WRESULT items came since READY, so
               the worker can forget the results it keeps for a re-send; a
               busy worker (never idle for a heartbeat) gets it too */
            if (now - w->last_send >= whb ||
                (zxb_results_safe(self, w) != w->results_ack && now - w->ack_at >= hb)) {
                zxp_send_heartbeat_rx(zxb_wsock(self), w->rid, zxb_results_safe(self, w));
                w->results_ack = zxb_results_safe(self, w);
                w->ack_at = now;
                w->last_send = now;
            }
        }
    }
    /* all of them dead first, so tasks re-queued from one never go to another */
    for (zxb_worker_t *w = lost ? zlist_first(lost) : NULL; w; w = zlist_next(lost)) {
        w->dead = true;
        zxb_worker_relist(self, w);
    }
    for (zxb_worker_t *w = lost ? zlist_first(lost) : NULL; w; w = zlist_next(lost)) {
        char why[64];
        snprintf(why, sizeof why, "silent for %" PRId64 " ms", now - w->last_recv);
        s_worker_remove(self, w, true, why);
    }
    zlist_destroy(&lost);
    zxb_place_tick_all(self);
}

void zxb_held_tick(zxb_broker_t *self)
{
    zxb_timer_entry_t h;
    while (zxb_timer_pop_due(&self->heldq, self->now, &h)) {
        if (h.task->state == ZXB_T_HELD) {
            self->nheld--;
            zxb_task_release(self, h.task);
        }
    }
}
