/*  dispatch.c - the path of a task from its queue to a worker: whether a
    worker has credit for one more task, choosing the task a worker takes
    next, sending it (in the worker's TASK batch), re-queueing tasks that
    come back unfinished, and the grace a queue gets when no worker offers
    its function (or, with workers registered and none offering it, the
    failure at once, with the closest offered names suggested).

    Invariant after every turn: no worker with free credit for a pool could
    take a queued task, so a new task only needs the head of its function's
    free-worker list, and a worker that frees a slot only needs the queues
    of its own functions. A worker is on its functions' free-credit lists
    while it has credit; how much it may hold is the placement policy's
    decision (placement.c), asked here through zxb_place_has_credit, and a
    change of that decision moves it onto or off the lists like any other
    change of credit (zxb_worker_relist).
*/
#include "zxb_broker.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static bool s_served(const zxb_fn_t *fn, int pool_req)
{
    if (pool_req == ZXP_POOL_ANY) {
        return fn->offered[ZXP_POOL_THREAD] > 0 || fn->offered[ZXP_POOL_PROCESS] > 0;
    }
    return fn->offered[pool_req] > 0;
}

/* Whether w can take one more task in pool p: alive, not draining, and
   the placement policy allows it. */
static bool s_has_credit(const zxb_broker_t *self, const zxb_worker_t *w, int p)
{
    if (w->dead || w->draining) {
        return false;
    }
    return zxb_place_has_credit(&self->place, &w->place[p]);
}

void zxb_worker_relist(const zxb_broker_t *self, zxb_worker_t *w)
{
    for (int p = ZXP_POOL_THREAD; p <= ZXP_POOL_PROCESS; p++) {
        bool want = s_has_credit(self, w, p);
        if (want == w->listed[p]) {
            continue;
        }
        for (size_t i = 0; i < w->nfns; i++) {
            if (w->fns[i].mask & p) {
                if (want) {
                    zxb_free_link(&w->fns[i], p);
                } else {
                    zxb_free_unlink(&w->fns[i], p);
                }
            }
        }
        w->listed[p] = want;
    }
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

/* The queue whose head this worker should take next in pool p: highest
   priority, then oldest. Looks only at the worker's own functions. */
static zxb_queue_t *s_worker_best(zxb_worker_t *w, int p)
{
    zxb_queue_t *best = NULL;
    zxb_task_t *bt = NULL;
    for (size_t i = 0; i < w->nfns; i++) {
        if (!(w->fns[i].mask & p)) {
            continue;
        }
        zxb_fn_t *fn = w->fns[i].fn;
        zxb_queue_t *qs[2] = {fn->q[p], fn->q[ZXP_POOL_ANY]};
        for (int k = 0; k < 2; k++) {
            zxb_task_t *t = zxb_queue_peek(qs[k]);
            if (t && (!bt || t->priority > bt->priority ||
                      (t->priority == bt->priority && t->arrival < bt->arrival))) {
                bt = t;
                best = qs[k];
            }
        }
    }
    return best;
}

static bool s_worker_take(zxb_broker_t *self, zxb_worker_t *w, int p)
{
    if (!s_has_credit(self, w, p)) {
        return false;
    }
    zxb_queue_t *q = s_worker_best(w, p);
    if (!q) {
        return false;
    }
    zxb_task_t *t = zxb_queue_pop(self->sched, q);
    s_dispatch(self, w, t, (uint8_t)p);
    return true;
}

void zxb_worker_fill(zxb_broker_t *self, zxb_worker_t *w)
{
    for (int p = ZXP_POOL_THREAD; p <= ZXP_POOL_PROCESS; p++) {
        while (s_worker_take(self, w, p)) {
        }
    }
    zxb_worker_relist(self, w);
}

/* A task just queued: hand it to a worker with free credit, if its function
   has one (the free lists' heads; each use rotates, spreading the load). */
static void s_dispatch_new(zxb_broker_t *self, zxb_task_t *t)
{
    zxb_fn_t *fn = t->fn;
    int pools[2] = {t->pool_req, 0};
    if (t->pool_req == ZXP_POOL_ANY) {
        pools[0] = ZXP_POOL_THREAD;
        pools[1] = ZXP_POOL_PROCESS;
    }
    for (int i = 0; i < 2 && pools[i]; i++) {
        int p = pools[i];
        zxb_wfn_t *wf = zxb_wfn_of(fn->free[p].head, p);
        if (wf) {
            zxb_worker_t *w = wf->worker;
            zxb_free_rotate(wf, p);
            s_worker_take(self, w, p);
            zxb_worker_relist(self, w);
            return;
        }
    }
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
    if (!t->adopted || !c->alive) {
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
