/*  dispatch.c - the path of a task from its queue to a worker: whether a
    worker has credit for one more task, choosing the task a worker takes
    next, sending it (in the worker's TASK batch), re-queueing tasks that
    come back unfinished, taking back tasks that wait at one node while a
    slot is idle at another, and the grace a queue gets when no worker
    offers its function (or, with workers registered and none offering it,
    the failure at once, with the closest offered names suggested).

    Invariant after every turn: no worker with an idle slot for a pool could
    take a queued task, and none with free credit could take one ahead of
    the oldest it could take; so a new task only needs the heads of its
    function's idle and free-credit lists, and a worker that frees a slot
    only needs the queues of its own functions. How much a worker may hold
    of each function is the placement policy's decision (placement.c):
    unknown and long functions go only to idle slots (late binding), short
    ones fill a window. A worker is on a function's idle list while the pool
    has a slot with no task, and on its free-credit list while the policy
    allows one more of that function; zxb_worker_relist keeps both, and
    skips the work while nothing that decides them changed.

    What late binding cannot foresee (a function that turned long, a worker
    that joins or drains, the fixed window when adaptive prefetch is off),
    withdrawal corrects: a pool left with an idle slot and nothing queued
    for it asks for tasks that wait unstarted at another node for longer
    than --steal-after-ms. The broker sends WCANCEL for them; the node
    decides the race with the task's start once (as for a client's cancel):
    DONE and the task is queued again, at the front, for the idle slot;
    REFUSED and it runs where it is. No task runs twice.
*/
#include "zxb_broker.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool s_served(const zxb_fn_t *fn, int pool_req)
{
    if (pool_req == ZXP_POOL_ANY) {
        return fn->offered[ZXP_POOL_THREAD] > 0 || fn->offered[ZXP_POOL_PROCESS] > 0;
    }
    return fn->offered[pool_req] > 0;
}

static bool s_alive(const zxb_worker_t *w)
{
    return !w->dead && !w->draining;
}

/* Whether w can take one more task of fn in pool p: alive, not draining,
   and the placement policy allows it. */
static bool s_has_credit(const zxb_broker_t *self, const zxb_worker_t *w, int p, const zxb_fn_t *fn)
{
    return s_alive(w) && zxb_place_has_credit(&self->place, &w->place[p], &fn->est[p]);
}

static bool s_idle(const zxb_worker_t *w, int p)
{
    return s_alive(w) && zxb_place_free_slots(&w->place[p]) > 0;
}

void zxb_worker_relist(zxb_broker_t *self, zxb_worker_t *w)
{
    bool alive = s_alive(w);
    for (int p = ZXP_POOL_THREAD; p <= ZXP_POOL_PROCESS; p++) {
        zxb_place_pool_t *pool = &w->place[p];
        bool idle = s_idle(w, p);
        if (idle != w->idle[p] || !w->listed_valid) {
            for (size_t i = 0; i < w->nfns; i++) {
                if (w->fns[i].mask & p) {
                    if (idle) {
                        zxb_idle_link(&w->fns[i], p);
                    } else {
                        zxb_idle_unlink(&w->fns[i], p);
                    }
                }
            }
            w->idle[p] = idle;
        }
        bool bytes = pool->bytes < self->place.bytes;
        if (alive && w->listed_valid && w->at_epoch == self->place_epoch &&
            w->at_nlong[p] == pool->nlong && w->at_bytes[p] == bytes &&
            pool->inflight >= w->lo[p] && pool->inflight < w->hi[p]) {
            continue; /* no function's credit can have changed */
        }
        uint32_t lo = 0, hi = UINT32_MAX;
        for (size_t i = 0; i < w->nfns; i++) {
            zxb_wfn_t *wf = &w->fns[i];
            if (!(wf->mask & p)) {
                continue;
            }
            uint32_t bound = zxb_place_bound(&self->place, pool, &wf->fn->est[p]);
            bool want = alive && pool->inflight < bound;
            if (pool->inflight < bound) {
                hi = bound < hi ? bound : hi;
            } else {
                lo = bound > lo ? bound : lo;
            }
            if (want) {
                zxb_free_link(wf, p);
            } else {
                zxb_free_unlink(wf, p);
            }
        }
        w->lo[p] = lo;
        w->hi[p] = hi;
        w->at_nlong[p] = pool->nlong;
        w->at_bytes[p] = bytes;
    }
    w->at_epoch = self->place_epoch;
    w->listed_valid = alive;
}

static void s_dispatch(zxb_broker_t *self, zxb_worker_t *w, zxb_task_t *t, uint8_t pool)
{
    zxb_queued_forget(self, t);
    t->gen++; /* invalidates its no-worker timer entry */
    if (zxb_task_too_large(self, w, t)) {
        return; /* failed: its arguments would pass w's --max-msg */
    }
    t->state = ZXB_T_DISPATCHED;
    t->pool = pool;
    t->attempts++;
    t->start_us = self->now_us;
    t->lng = !zxb_place_short(&self->place, &t->fn->est[pool]);
    zxb_task_link(w, t);
    w->place[pool].inflight++;
    self->running++;
    zxp_out_t *out = zxb_worker_batch(self, w, ZXP_TASK);
    zxp_task_t item = {.session = t->client->session,
                       .seq = t->seq,
                       .fn = {t->fn->name, t->fn->len},
                       .pool = pool,
                       .timeout_ms = t->timeout_ms,
                       .attempt = t->attempts,
                       .flags = t->flags};
    zxp_put_task(out, &item);
    /* the task keeps its arguments for a retry; ZeroMQ shares the bytes */
    zxb_task_payload_put(t, out);
    zxb_token_put(self, out, t, w);
    ZXB_DEBUG("task %" PRIu64 " of client %s (%s) -> worker %s %s pool, attempt %u", t->seq,
              t->client->name, t->fn->name, w->node, zxb_pool_name(pool), t->attempts);
}

int64_t zxb_client_used(const zxb_client_t *c, int64_t now_us)
{
    return c->used_us + (int64_t)c->nrun * now_us - c->run_start_sum;
}

void zxb_slots_count(zxb_broker_t *self)
{
    uint32_t n = 0;
    for (zxb_worker_t *w = zhashx_first(self->workers); w; w = zhashx_next(self->workers)) {
        if (s_alive(w)) {
            n += w->place[ZXP_POOL_THREAD].slots + w->place[ZXP_POOL_PROCESS].slots;
        }
    }
    self->total_slots = n;
}

/* Whether t's client already holds its share of the cluster's slots with
   tasks not known short, when other clients have tasks (queued, or in
   flight: a client whose tasks all sit in workers' windows wants slots as
   much as one whose tasks are queued): a long task cannot be preempted, so
   taking more than a share would make the others wait a whole run of it.
   The clients are counted at the tick, t's own counted in if it came since. */
static bool s_capped(const zxb_broker_t *self, const zxb_task_t *t, int p, int nclients)
{
    uint32_t n = self->active_clients + (t->client->active_tick != self->tick_no);
    if (n < (uint32_t)nclients) {
        n = (uint32_t)nclients;
    }
    if (n < 2 || zxb_place_short(&self->place, &t->fn->est[p])) {
        return false;
    }
    uint32_t share = self->total_slots / n;
    return t->client->nlong >= (share ? share : 1);
}

/* The queue whose head this worker should take next in pool p, among the
   heads of its own functions' queues: highest priority; then a client
   below its share of slots for tasks not known short (s_capped; counted
   when the heads are from two clients or more); then the client that has
   used the least slot time (fair turns across functions: a queue's own
   ring gives clients turns within one function, and a client with 100,000
   tasks of 1 us and one with 10 of 1 s take slots by the time they use,
   not by count); then the oldest. */
#define S_BEST_MAX 32
static zxb_queue_t *s_worker_best(zxb_broker_t *self, zxb_worker_t *w, int p)
{
    /* the heads, and how many clients they are from (2 means "several") */
    zxb_queue_t *qs[S_BEST_MAX];
    int n = 0, nclients = 0;
    const zxb_client_t *seen = NULL;
    for (size_t i = 0; i < w->nfns; i++) {
        if (!(w->fns[i].mask & p)) {
            continue;
        }
        zxb_fn_t *fn = w->fns[i].fn;
        zxb_queue_t *two[2] = {fn->q[p], fn->q[ZXP_POOL_ANY]};
        for (int k = 0; k < 2; k++) {
            zxb_task_t *t = zxb_queue_peek(two[k]);
            if (!t) {
                continue;
            }
            if (nclients == 0 || (nclients == 1 && t->client != seen)) {
                nclients++;
                seen = t->client;
            }
            if (n < S_BEST_MAX) {
                qs[n++] = two[k];
            }
        }
    }
    zxb_queue_t *best = NULL;
    zxb_task_t *bt = NULL;
    int64_t bu = 0;
    bool bcap = false;
    for (int i = 0; i < n; i++) {
        zxb_task_t *t = zxb_queue_peek(qs[i]);
        if (bt && t->priority < bt->priority) {
            continue;
        }
        bool cap = s_capped(self, t, p, nclients);
        if (bt && t->priority == bt->priority && cap && !bcap) {
            continue;
        }
        /* one client: its own heads, oldest first (the common case of a
           stream, kept to a comparison per head) */
        int64_t u = nclients > 1 ? zxb_client_used(t->client, self->now_us) : 0;
        if (!bt || t->priority > bt->priority || (bcap && !cap) || u < bu ||
            (u == bu && t->arrival < bt->arrival)) {
            bt = t;
            bu = u;
            bcap = cap;
            best = qs[i];
        }
    }
    return best;
}

/* Gives w the task it should run next in pool p, if the policy lets the
   pool hold it. When the policy does not (the pool has no idle slot, and
   the task's function is not known short), nothing younger is sent in its
   place: the pool's prefetched work runs down to an idle slot and the task
   takes it, so a stream of short tasks cannot starve a long one. */
static bool s_worker_take(zxb_broker_t *self, zxb_worker_t *w, int p, zxb_queue_t *fresh)
{
    /* nothing queued anywhere (a worker that just freed a slot, most
       often): the heads of its functions' queues need not be looked at */
    if (self->queued == 0 || !s_alive(w) || w->place[p].slots == 0) {
        return false;
    }
    /* the one task queued anywhere, just queued in fresh: the heads of
       w's functions are that one alone (w offers it in p: s_dispatch_new
       found w on its function's lists) */
    zxb_queue_t *q = fresh && self->queued == 1 ? fresh : s_worker_best(self, w, p);
    if (!q) {
        return false;
    }
    zxb_task_t *t = zxb_queue_peek(q);
    if (!s_has_credit(self, w, p, t->fn)) {
        return false;
    }
    self->used_last = zxb_client_used(t->client, self->now_us);
    t = zxb_queue_pop(self->sched, q);
    s_dispatch(self, w, t, (uint8_t)p);
    return true;
}

void zxb_worker_fill(zxb_broker_t *self, zxb_worker_t *w)
{
    if (self->hold_until) {
        /* recovered from the journal: workers that still run (or hold the
           results of) recovered tasks report them first (durable.c) */
        zxb_worker_relist(self, w);
        return;
    }
    /* idle slots of both pools first: a task allowed in either pool takes
       an idle slot of one before it is prefetched behind busy ones */
    for (int p = ZXP_POOL_THREAD; p <= ZXP_POOL_PROCESS; p++) {
        while (s_idle(w, p) && s_worker_take(self, w, p, NULL)) {
        }
    }
    for (int p = ZXP_POOL_THREAD; p <= ZXP_POOL_PROCESS; p++) {
        while (s_worker_take(self, w, p, NULL)) {
        }
    }
    zxb_worker_relist(self, w);
    zxb_worker_steal(self, w);
}

/* A task just queued: hand it to a worker with an idle slot for it, else
   to one with free credit (the lists' heads; each use rotates, spreading
   the load). */
static void s_dispatch_new(zxb_broker_t *self, zxb_task_t *t)
{
    if (self->hold_until) {
        return; /* queued: dispatched when the recovery window ends */
    }
    zxb_fn_t *fn = t->fn;
    int pools[2] = {t->pool_req, 0};
    if (t->pool_req == ZXP_POOL_ANY) {
        pools[0] = ZXP_POOL_THREAD;
        pools[1] = ZXP_POOL_PROCESS;
    }
    for (int i = 0; i < 2 && pools[i]; i++) {
        int p = pools[i];
        zxb_wfn_t *wf = zxb_wfn_idle_of(fn->idle[p].head, p);
        if (wf) {
            zxb_worker_t *w = wf->worker;
            zxb_idle_rotate(wf, p);
            s_worker_take(self, w, p, fn->q[t->pool_req]);
            zxb_worker_relist(self, w);
            return;
        }
    }
    for (int i = 0; i < 2 && pools[i]; i++) {
        int p = pools[i];
        zxb_wfn_t *wf = zxb_wfn_of(fn->free[p].head, p);
        if (wf) {
            zxb_worker_t *w = wf->worker;
            zxb_free_rotate(wf, p);
            s_worker_take(self, w, p, fn->q[t->pool_req]);
            zxb_worker_relist(self, w);
            return;
        }
    }
}

/* ---- withdrawal --------------------------------------------------------------------- */

/* A withdrawal asked for a pool's idle slot, until its answer. */
typedef struct {
    zxb_task_t *task;
    uint32_t gen;
    zxb_worker_t *thief; /* NULL: given back by a draining worker */
    uint8_t pool;
} s_claim_t;

static bool s_claim_stale(const s_claim_t *c)
{
    return c->task->gen != c->gen || !c->task->withdraw || c->task->state != ZXB_T_DISPATCHED;
}

static void s_claim_drop(zxb_broker_t *self, s_claim_t *c)
{
    if (c->thief && c->thief->claims[c->pool] > 0) {
        c->thief->claims[c->pool]--;
    }
    zlist_remove(self->withdrawals, c);
    free(c);
}

/* Sends WCANCEL for t to its worker, on behalf of thief's pool p. */
static void s_withdraw(zxb_broker_t *self, zxb_task_t *t, zxb_worker_t *thief, uint8_t p)
{
    t->withdraw = 1;
    zxb_worker_t *v = t->worker;
    zxp_put_wcancel(zxb_worker_batch(self, v, ZXP_WCANCEL), t->client->session, t->seq, false);
    s_claim_t *c = malloc(sizeof *c);
    assert(c);
    *c = (s_claim_t){.task = t, .gen = t->gen, .thief = thief, .pool = p};
    zlist_append(self->withdrawals, c);
    if (thief) {
        thief->claims[p]++;
    }
    self->withdrawn++;
    ZXB_DEBUG("task %" PRIu64 " of client %s (%s): withdrawn from worker %s%s%s", t->seq,
              t->client->name, t->fn->name, v->node, thief ? " for " : " (draining)",
              thief ? thief->node : "");
}

void zxb_withdraw_answered(zxb_broker_t *self, zxb_task_t *t)
{
    t->withdraw = 0;
    for (s_claim_t *c = zlist_first(self->withdrawals); c; c = zlist_next(self->withdrawals)) {
        if (c->task == t && c->gen == t->gen) {
            s_claim_drop(self, c);
            return;
        }
    }
}

void zxb_withdraw_forget(zxb_broker_t *self, zxb_worker_t *w)
{
    s_claim_t *c = zlist_first(self->withdrawals);
    while (c) {
        s_claim_t *next = zlist_next(self->withdrawals);
        if (c->thief == w) {
            c->thief = NULL;
        }
        c = next;
    }
}

static bool s_offers(const zxb_worker_t *w, const zxb_fn_t *fn, int p)
{
    for (size_t i = 0; i < w->nfns; i++) {
        if (w->fns[i].fn == fn) {
            return (w->fns[i].mask & p) != 0;
        }
    }
    return false;
}

/* Tasks of victim v that thief's pool p may take: withdraws up to *want of
   them, newest first (v's list order): the node starts its tasks oldest
   first, so the newest are the last to start there, the ones a withdrawal
   gains most on and races least with (taking the oldest, a worker whose
   slots had just freed refused them all, started, and the thief waited for
   the tick). *budget bounds the tasks looked at in one call of
   zxb_worker_steal (a deep prefetch of young tasks, or old tasks of
   functions the thief does not offer, could otherwise be walked past by
   every idle worker at every tick). */
#define S_STEAL_SCAN 1024
static void s_steal_from(zxb_broker_t *self, zxb_worker_t *thief, int p, zxb_worker_t *v,
                         uint32_t *want, int *budget)
{
    /* its oldest unstarted task (past the running ones at the tail): when
       that one is too young, every other one is too */
    zxb_task_t *old = zxb_task_of(v->tasks.tail);
    for (int k = 0; old && old->state != ZXB_T_DISPATCHED && k < S_STEAL_SCAN; k++) {
        old = zxb_task_of(old->link.prev);
    }
    if (!old) {
        return;
    }
    if (!zxb_place_withdrawable(&self->place, old->start_us, self->now_us)) {
        int64_t at = old->start_us + (int64_t)(self->place.steal_ms * 1000.0) + 1;
        if (self->steal_at == 0 || at < self->steal_at) {
            self->steal_at = at;
        }
        return;
    }
    for (zxb_task_t *t = zxb_task_of(v->tasks.head); t && *want > 0 && *budget > 0;
         t = zxb_task_of(t->link.next), (*budget)--) {
        if (t->state != ZXB_T_DISPATCHED || (v == thief && t->pool == p)) {
            continue;
        }
        if (!zxb_place_withdrawable(&self->place, t->start_us, self->now_us)) {
            /* try again when it is old enough, not only at the tick */
            int64_t at = t->start_us + (int64_t)(self->place.steal_ms * 1000.0) + 1;
            if (self->steal_at == 0 || at < self->steal_at) {
                self->steal_at = at;
            }
            continue;
        }
        if (t->withdraw || t->cancelled || t->bcancel || !t->fn || !t->adopted ||
            (t->pool_req != ZXP_POOL_ANY && t->pool_req != p) || !s_offers(thief, t->fn, p)) {
            continue;
        }
        s_withdraw(self, t, thief, (uint8_t)p);
        (*want)--;
    }
}

/* Whether v offers a function that thief offers in pool p (a worker with
   none in common has nothing thief could take). */
static bool s_shares(const zxb_worker_t *thief, int p, const zxb_worker_t *v)
{
    for (size_t i = 0; i < thief->nfns; i++) {
        if (!(thief->fns[i].mask & p)) {
            continue;
        }
        for (size_t j = 0; j < v->nfns; j++) {
            if (v->fns[j].fn == thief->fns[i].fn) {
                return true;
            }
        }
    }
    return false;
}

void zxb_worker_steal(zxb_broker_t *self, zxb_worker_t *w)
{
    /* (self->running counts the tasks on all workers: none, nothing to
       withdraw, as after a lone task's result) */
    if (self->hold_until || self->running == 0) {
        return;
    }
    for (int p = ZXP_POOL_THREAD; p <= ZXP_POOL_PROCESS; p++) {
        if (!s_idle(w, p)) {
            continue;
        }
        uint32_t idle = zxb_place_free_slots(&w->place[p]);
        if (idle <= w->claims[p]) {
            continue;
        }
        uint32_t want = idle - w->claims[p];
        int budget = S_STEAL_SCAN;
        /* only workers holding unstarted tasks; the lists are newest first */
        for (zxb_worker_t *v = zhashx_first(self->workers); v && want > 0 && budget > 0;
             v = zhashx_next(self->workers)) {
            if (v->ntasks > v->running && !v->dead && s_shares(w, p, v)) {
                s_steal_from(self, w, p, v, &want, &budget);
            }
        }
    }
}

void zxb_steal_due(zxb_broker_t *self)
{
    self->steal_at = 0;
    zlist_t *idle = NULL;
    for (zxb_worker_t *w = zhashx_first(self->workers); w; w = zhashx_next(self->workers)) {
        if (s_idle(w, ZXP_POOL_THREAD) || s_idle(w, ZXP_POOL_PROCESS)) {
            if (!idle) {
                idle = zlist_new();
            }
            zlist_append(idle, w);
        }
    }
    for (zxb_worker_t *w = idle ? zlist_first(idle) : NULL; w; w = zlist_next(idle)) {
        zxb_worker_steal(self, w);
    }
    zlist_destroy(&idle);
}

void zxb_worker_giveback(zxb_broker_t *self, zxb_worker_t *w)
{
    size_t n = 0;
    for (zxb_task_t *t = zxb_task_of(w->tasks.tail); t; t = zxb_task_of(t->link.prev)) {
        if (t->state == ZXB_T_DISPATCHED && !t->withdraw && !t->cancelled && !t->bcancel &&
            t->adopted) {
            s_withdraw(self, t, NULL, t->pool);
            n++;
        }
    }
    if (n) {
        ZXB_INFO("worker %s: %zu unstarted task(s) taken back for other workers", w->node, n);
    }
}

void zxb_place_tick_all(zxb_broker_t *self)
{
    self->tick_no++;
    self->active_clients = 0;
    for (zxb_client_t *c = zhashx_first(self->clients); c; c = zhashx_next(self->clients)) {
        if (zxb_client_wants(c) && c->ntasks > 0) {
            c->active_tick = self->tick_no;
            self->active_clients++;
        }
    }
    if (zxb_place_adaptive(&self->place)) {
        for (zxb_fn_t *fn = zxb_fn_first(self->sched); fn; fn = zxb_fn_next(self->sched)) {
            for (int p = ZXP_POOL_THREAD; p <= ZXP_POOL_PROCESS; p++) {
                if (zxb_place_tick(&fn->est[p], self->now_us)) {
                    self->place_epoch++;
                    ZXB_DEBUG("function %s (%s pool): runs at least %.0f us", fn->name,
                              zxb_pool_name(p), fn->est[p].run_us);
                }
            }
        }
    }
    s_claim_t *c = zlist_first(self->withdrawals);
    while (c) {
        s_claim_t *next = zlist_next(self->withdrawals);
        if (s_claim_stale(c)) {
            s_claim_drop(self, c);
        }
        c = next;
    }
    zlist_t *list = zlist_new();
    for (zxb_worker_t *w = zhashx_first(self->workers); w; w = zhashx_next(self->workers)) {
        zlist_append(list, w);
    }
    for (zxb_worker_t *w = zlist_first(list); w; w = zlist_next(list)) {
        /* a changed estimate may widen or narrow a window */
        zxb_worker_fill(self, w);
    }
    zlist_destroy(&list);
}

void zxb_orphan_mark(zxb_broker_t *self, zxb_fn_t *fn)
{
    for (int pr = 0; pr < 3; pr++) {
        if (s_served(fn, pr)) {
            fn->orphan_deadline[pr] = 0;
        } else if (zxb_queue_depth(fn->q[pr]) > 0 && fn->orphan_deadline[pr] == 0) {
            fn->orphan_deadline[pr] = self->now + self->cfg.nofunc_grace_ms;
            if (!fn->orphan_listed) {
                fn->orphan_listed = true;
                zlist_append(self->orphans, fn);
            }
        }
    }
}

static void s_notallowed_msg(const zxb_fn_t *fn, int pool_req, char *buf, size_t len)
{
    snprintf(buf, len,
             "function '%s' may not run in the %s pool on any connected worker (offered in: "
             "%s%s)",
             fn->name, zxb_pool_name(pool_req), fn->offered[ZXP_POOL_THREAD] ? "thread " : "",
             fn->offered[ZXP_POOL_PROCESS] ? "process" : "");
}

/* Edit distance with adjacent transpositions (optimal string alignment),
   for suggesting a function name; names are at most ZXP_MAX_NAME bytes. */
static size_t s_name_distance(const char *a, const char *b)
{
    size_t n = strlen(a), m = strlen(b);
    if (n > ZXP_MAX_NAME || m > ZXP_MAX_NAME) {
        return SIZE_MAX;
    }
    size_t d[3][ZXP_MAX_NAME + 1]; /* rows i-2, i-1, i, rotated */
    for (size_t j = 0; j <= m; j++) {
        d[0][j] = j;
    }
    for (size_t i = 1; i <= n; i++) {
        size_t *cur = d[i % 3], *prev = d[(i - 1) % 3], *pp = d[(i + 1) % 3];
        cur[0] = i;
        for (size_t j = 1; j <= m; j++) {
            size_t cost = a[i - 1] != b[j - 1];
            size_t v = prev[j] + 1;
            v = cur[j - 1] + 1 < v ? cur[j - 1] + 1 : v;
            v = prev[j - 1] + cost < v ? prev[j - 1] + cost : v;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                pp[j - 2] + 1 < v) {
                v = pp[j - 2] + 1;
            }
            cur[j] = v;
        }
    }
    return d[n % 3][m];
}

/* "no worker offers function 'x'", and the (up to three) offered names
   closest to it when they are close: a typo shows its fix. */
static void s_nofunc_msg(zxb_broker_t *self, const zxb_fn_t *fn, char *buf, size_t len)
{
    const char *best[3] = {NULL, NULL, NULL};
    size_t bestd[3] = {SIZE_MAX, SIZE_MAX, SIZE_MAX};
    size_t limit = fn->len / 3 > 2 ? fn->len / 3 : 2;
    for (zxb_fn_t *o = zxb_fn_first(self->sched); o; o = zxb_fn_next(self->sched)) {
        if (o == fn || (!o->offered[ZXP_POOL_THREAD] && !o->offered[ZXP_POOL_PROCESS])) {
            continue;
        }
        size_t d = s_name_distance(fn->name, o->name);
        for (int i = 0; i < 3 && d <= limit; i++) {
            if (d < bestd[i]) {
                for (int k = 2; k > i; k--) {
                    best[k] = best[k - 1];
                    bestd[k] = bestd[k - 1];
                }
                best[i] = o->name;
                bestd[i] = d;
                break;
            }
        }
    }
    int n = snprintf(buf, len, "no worker offers function '%s'", fn->name);
    for (int i = 0; i < 3 && best[i] && n > 0 && (size_t)n < len; i++) {
        n += snprintf(buf + n, len - (size_t)n, "%s'%s'", i == 0 ? "; did you mean " : " or ",
                      best[i]);
    }
    if (best[0] && n > 0 && (size_t)n < len) {
        snprintf(buf + n, len - (size_t)n, "?");
    }
}

/* A fresh task for a function no registered worker offers (draining ones
   included) fails at once when workers are registered: a typo then fails in
   a round trip instead of after --nofunc-grace. The grace still holds for a
   cluster still starting: no worker yet, or a broker up for less than one
   liveness window (heartbeat x liveness), within which every worker still
   alive after a broker restart has registered again. */
static bool s_nofunc_now(zxb_broker_t *self, const zxb_fn_t *fn)
{
    if (zhashx_size(self->workers) == 0 ||
        self->now - self->started < (int64_t)self->cfg.heartbeat_ms * self->cfg.liveness) {
        return false;
    }
    for (zxb_worker_t *w = zhashx_first(self->workers); w; w = zhashx_next(self->workers)) {
        for (size_t i = 0; i < w->nfns; i++) {
            if (w->fns[i].fn == fn) {
                return false;
            }
        }
    }
    return true;
}

/* Queues a task (fresh from SUBMIT, or back from a worker) and dispatches it
   if a worker can take it. */
void zxb_task_enqueue(zxb_broker_t *self, zxb_task_t *t, bool front, bool fresh)
{
    zxb_fn_t *fn = t->fn;
    t->worker = NULL;
    if (!s_served(fn, t->pool_req)) {
        if (fresh && (fn->offered[ZXP_POOL_THREAD] || fn->offered[ZXP_POOL_PROCESS])) {
            char msg[512];
            s_notallowed_msg(fn, t->pool_req, msg, sizeof msg);
            zxb_task_fail(self, t, ZXP_ST_NOTALLOWED, "NotAllowedError", msg, NULL);
            return;
        }
        if (fresh && s_nofunc_now(self, fn)) {
            char msg[512];
            s_nofunc_msg(self, fn, msg, sizeof msg);
            zxb_task_fail(self, t, ZXP_ST_NOFUNC, "NoWorkerError", msg, NULL);
            return;
        }
        zxb_queued_push(self, t, front);
        zxb_timer_push(&self->nofunc, t, self->now + self->cfg.nofunc_grace_ms);
        return;
    }
    zxb_client_t *c = t->client;
    if (fresh && c->queued == 0 && c->nrun == 0) {
        /* a client that was idle does not bank turns: it starts level with
           the client served last */
        int64_t used = zxb_client_used(c, self->now_us);
        if (used < self->used_last) {
            c->used_us += self->used_last - used;
        }
    }
    zxb_queued_push(self, t, front);
    s_dispatch_new(self, t);
}

static int s_attempt_limit(zxb_broker_t *self, const zxb_task_t *t)
{
    if (t->retries < 0) {
        return 1;
    }
    return 1 + (t->retries == 0 ? self->cfg.retries : t->retries);
}

/* A task that left its worker unfinished: back in the queue (a BYE does not
   count the attempt, a lost worker does), or failed when retries are used
   up. Returns true when it was re-queued. */
bool zxb_task_requeue(zxb_broker_t *self, zxb_task_t *t, bool counted, const char *node)
{
    zxb_client_t *c = t->client;
    uint8_t was = t->state;
    if (!counted && t->attempts > 0) {
        t->attempts--;
    }
    if (!t->adopted || !zxb_client_wants(c)) {
        /* recovered and not re-submitted: the client re-sends it; gone: drop */
        zxb_task_release(self, t);
        return false;
    }
    if (t->cancelled && was == ZXB_T_DISPATCHED) {
        /* the client asked to cancel and it never started: that is a cancel */
        zxb_cancelled_send(self, c, t->seq, ZXP_CANCEL_DONE);
        self->cancelled++;
        zxb_task_release(self, t);
        return false;
    }
    if (counted && t->attempts >= s_attempt_limit(self, t)) {
        char msg[512];
        snprintf(msg, sizeof msg, "worker %s lost; retries used up (%u attempts)", node,
                 t->attempts);
        zxb_task_fail(self, t, ZXP_ST_WORKERLOST, "WorkerLostError", msg, node);
        return false;
    }
    t->cancelled = 0;
    t->bcancel = 0;
    t->withdraw = 0;
    zxb_task_enqueue(self, t, true, false);
    return true;
}

/* ---- the no-worker grace ----------------------------------------------------------- */

static void s_nofunc_fail(zxb_broker_t *self, zxb_task_t *t)
{
    zxb_queued_remove(self, t);
    zxb_fn_t *fn = t->fn;
    char msg[512];
    if (fn->offered[ZXP_POOL_THREAD] || fn->offered[ZXP_POOL_PROCESS]) {
        s_notallowed_msg(fn, t->pool_req, msg, sizeof msg);
        zxb_task_fail(self, t, ZXP_ST_NOTALLOWED, "NotAllowedError", msg, NULL);
    } else {
        s_nofunc_msg(self, fn, msg, sizeof msg);
        zxb_task_fail(self, t, ZXP_ST_NOFUNC, "NoWorkerError", msg, NULL);
    }
}

static void s_orphan_cb(zxb_task_t *t, void *arg)
{
    zxb_broker_t *self = arg;
    if (zxb_arrival_ms(t->arrival) + self->cfg.nofunc_grace_ms <= self->now - self->started) {
        s_nofunc_fail(self, t);
    }
}

void zxb_nofunc_tick(zxb_broker_t *self)
{
    zxb_timer_entry_t e;
    while (zxb_timer_pop_due(&self->nofunc, self->now, &e)) {
        zxb_task_t *t = e.task;
        if (t->state == ZXB_T_QUEUED && !s_served(t->fn, t->pool_req)) {
            s_nofunc_fail(self, t);
        }
    }
    zlist_t *settled = NULL;
    for (zxb_fn_t *fn = zlist_first(self->orphans); fn; fn = zlist_next(self->orphans)) {
        bool pending = false;
        for (int pr = 0; pr < 3; pr++) {
            if (fn->orphan_deadline[pr] && fn->orphan_deadline[pr] <= self->now) {
                fn->orphan_deadline[pr] = 0;
                if (!s_served(fn, pr)) {
                    zxb_queue_each(self->sched, fn->q[pr], s_orphan_cb, self);
                }
            }
            pending |= fn->orphan_deadline[pr] != 0;
        }
        if (!pending) {
            if (!settled) {
                settled = zlist_new();
            }
            zlist_append(settled, fn);
        }
    }
    for (zxb_fn_t *fn = settled ? zlist_first(settled) : NULL; fn; fn = zlist_next(settled)) {
        zlist_remove(self->orphans, fn);
        fn->orphan_listed = false;
    }
    zlist_destroy(&settled);
}
