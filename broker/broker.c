/*  broker.c - the zexec-broker event loop: two ROUTER sockets (clients,
    workers), the peers' records, and what each ZXP command does to tasks.

    One thread. Each turn of the loop drains what is readable on each socket
    (at most 1024 messages, without blocking), appending outgoing items to
    per-peer batches (TASK, WCANCEL to workers; STARTED, RESULT, CANCELLED to
    clients), then flushes every peer it touched: a lone task goes out at
    once, a burst goes out in a few large messages. Timers (heartbeats,
    liveness, the no-worker grace, held results) run at a short tick and never
    scan tasks; they scan peers, which are few.

    Scheduling structures are in queue.c. Invariant after every turn: no
    worker with free credit for a pool could take a queued task, so a new
    task only needs the head of its function's free-worker list, and a worker
    that frees a slot only needs the queues of its own functions.

    Adaptive prefetch (s_adapt, s_has_credit): a worker announces its slots
    and a prefetch (usually 1), and with that window alone a worker running
    10 us tasks idles for a network round trip between them. The broker
    measures how long tasks run on each worker pool (from its own clock: the
    time each task spends between its WSTARTED and its WRESULT, summed as
    the integral of the started count and divided by the tasks that ended,
    smoothed per tick; the first estimate comes after 16 results, without
    waiting for the tick) and widens the pool's window to slots + slots *
    --prefetch-target-ms / run time, between the announced prefetch and
    --prefetch-max. Until a pool has a measurement, and with a target of 0,
    the announced window applies; long tasks keep it, so they spread over
    workers instead of waiting behind each other at one node. The widened
    part also stops while the pool's tasks in flight carry --prefetch-bytes
    of arguments. A window change moves the worker onto or off its
    functions' free-credit lists like any other change of credit.
*/
#include "zxb.h"
#include "zx_clock.h"
#include "zx_parent.h"
#include "zxb_sec.h"

#include "zexec.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int zxb_log_level = 1;

#define S_DRAIN_MAX 1024
#define S_HELD_MAX 100000
#define S_OUTPOOL_MAX 64
#define S_ADAPT_FIRST 16  /* results that give a pool its first run-time estimate */
#define S_ADAPT_EVERY 256 /* results that update it before the tick */

struct zxb_broker {
    zxb_config_t cfg;
    zsock_t *csock, *wsock;
    uint8_t id[ZXP_ID_LEN];
    char id_hex[33];
    int64_t started;
    int64_t now;
    int64_t now_us; /* monotonic microseconds (not the wall clock), for run times */
    zxb_sched_t *sched;
    zhashx_t *clients; /* session -> zxb_client_t */
    zhashx_t *workers; /* worker id -> zxb_worker_t */
    zxp_in_t in;
    zxp_drops_t drops;
    zlist_t *outpool; /* spare zxp_out_t, lent to peers while they have a batch */
    zxb_client_t *dirty_clients;
    zxb_worker_t *dirty_workers;
    zlist_t *doomed;         /* clients to free at the end of the turn */
    zxb_timer_fifo_t nofunc; /* queued tasks no worker could take when they came */
    zxb_timer_fifo_t heldq;  /* results kept for clients that have not re-submitted */
    size_t nheld;
    zlist_t *orphans; /* functions whose queue lost its last worker */
    zxp_out_t ctl;    /* for STATUS-REPLY */
    uint64_t submitted, done, failed, cancelled, duplicates, rejected;
    uint64_t queued, running;
    uint64_t rate[10];
    int64_t rate_sec;
    zxb_metrics_t *metrics; /* --metrics: the page is rebuilt once a second */
    int64_t metrics_at;
};

/* ---- small helpers -------------------------------------------------------------- */

static size_t s_id_hash(const void *key)
{
    uint64_t a, b;
    memcpy(&a, key, 8);
    memcpy(&b, (const uint8_t *)key + 8, 8);
    uint64_t h = (a ^ (b * 0x9E3779B97F4A7C15ull)) * 0xC2B2AE3D27D4EB4Full;
    return (size_t)(h ^ (h >> 29));
}

static int s_id_cmp(const void *a, const void *b)
{
    return memcmp(a, b, ZXP_ID_LEN);
}

static zhashx_t *s_id_table(void)
{
    zhashx_t *h = zhashx_new();
    zhashx_set_key_hasher(h, s_id_hash);
    zhashx_set_key_comparator(h, s_id_cmp);
    zhashx_set_key_duplicator(h, NULL);
    zhashx_set_key_destructor(h, NULL);
    return h;
}

/* A worker's pool size for a pool kind (thread or process). */
static uint32_t s_slots(const zxb_worker_t *w, int pool)
{
    return pool == ZXP_POOL_THREAD ? w->threads : w->procs;
}

static const char *s_pool_name(int pool)
{
    return pool == ZXP_POOL_THREAD ? "thread" : pool == ZXP_POOL_PROCESS ? "process" : "any";
}

static void s_hex(const uint8_t *id, char out[33])
{
    zxp_hex(id, ZXP_ID_LEN, out);
}

static zxp_out_t *s_out_get(zxb_broker_t *self, uint8_t cmd)
{
    zxp_out_t *out = zlist_pop(self->outpool);
    if (!out) {
        out = malloc(sizeof *out);
        assert(out);
        zxp_out_init(out);
    }
    zxp_out_begin(out, cmd);
    return out;
}

static void s_out_put(zxb_broker_t *self, zxp_out_t **out_p)
{
    zxp_out_t *out = *out_p;
    if (!out) {
        return;
    }
    *out_p = NULL;
    /* a huge batch leaves a huge buffer: do not keep it for idle peers */
    if (zlist_size(self->outpool) >= S_OUTPOOL_MAX || out->buf.alloc > (1u << 20)) {
        zxp_out_fini(out);
        free(out);
        return;
    }
    zxp_out_begin(out, ZXP_HEARTBEAT); /* drops anything unsent */
    zlist_append(self->outpool, out);
}

static void s_out_flush(zxb_broker_t *self, zxp_out_t **out_p, zsock_t *sock, zframe_t *rid)
{
    if (*out_p && (*out_p)->count > 0) {
        zxp_out_send(*out_p, sock, rid);
    }
    s_out_put(self, out_p);
}

/* ---- client records ------------------------------------------------------------ */

static zxb_client_t *s_client_new(zxb_broker_t *self, const uint8_t *session)
{
    zxb_client_t *c = calloc(1, sizeof *c);
    assert(c);
    memcpy(c->session, session, ZXP_ID_LEN);
    c->rid = zframe_new(session, ZXP_ID_LEN);
    c->created = self->now;
    c->last_recv = self->now;
    snprintf(c->name, sizeof c->name, "?");
    zhashx_insert(self->clients, c->session, c);
    return c;
}

static void s_client_destroy(zxb_broker_t *self, zxb_client_t **c_p)
{
    zxb_client_t *c = *c_p;
    if (!c) {
        return;
    }
    s_out_put(self, &c->out_started);
    s_out_put(self, &c->out_result);
    s_out_put(self, &c->out_cancelled);
    zxb_client_fifos_destroy(c);
    zframe_destroy(&c->rid);
    free(c);
    *c_p = NULL;
}

/* A client that is gone and holds no task is freed at the end of the turn
   (it may still be on the dirty list now). */
static void s_client_check(zxb_broker_t *self, zxb_client_t *c)
{
    if (!c->alive && c->ntasks == 0 && !c->doomed) {
        c->doomed = true;
        zlist_append(self->doomed, c);
    }
}

static void s_client_dirty(zxb_broker_t *self, zxb_client_t *c)
{
    if (!c->dirty) {
        c->dirty = true;
        c->dirty_next = self->dirty_clients;
        self->dirty_clients = c;
    }
}

static void s_worker_dirty(zxb_broker_t *self, zxb_worker_t *w)
{
    if (!w->dirty) {
        w->dirty = true;
        w->dirty_next = self->dirty_workers;
        self->dirty_workers = w;
    }
}

/* The batch of cmd being built for a peer; sent at once when full. */
static zxp_out_t *s_batch(zxb_broker_t *self, zxp_out_t **slot, uint8_t cmd, zsock_t *sock,
                          zframe_t *rid)
{
    if (*slot && (*slot)->count >= ZXP_MAX_BATCH) {
        zxp_out_send(*slot, sock, rid);
        zxp_out_begin(*slot, cmd);
    }
    if (!*slot) {
        *slot = s_out_get(self, cmd);
    }
    return *slot;
}

static zxp_out_t *s_client_batch(zxb_broker_t *self, zxb_client_t *c, uint8_t cmd)
{
    s_client_dirty(self, c);
    zxp_out_t **slot = cmd == ZXP_STARTED  ? &c->out_started
                       : cmd == ZXP_RESULT ? &c->out_result
                                           : &c->out_cancelled;
    return s_batch(self, slot, cmd, self->csock, c->rid);
}

static zxp_out_t *s_worker_batch(zxb_broker_t *self, zxb_worker_t *w, uint8_t cmd)
{
    s_worker_dirty(self, w);
    zxp_out_t **slot = cmd == ZXP_TASK ? &w->out_task : &w->out_cancel;
    return s_batch(self, slot, cmd, self->wsock, w->rid);
}

/* ---- task bookkeeping ------------------------------------------------------------- */

/* Completions per second over the last 10 s: a ring of per-second counts. */
static void s_rate_roll(zxb_broker_t *self)
{
    int64_t sec = self->now / 1000;
    if (sec != self->rate_sec) {
        for (int64_t s = self->rate_sec + 1; s <= sec && s <= self->rate_sec + 10; s++) {
            self->rate[s % 10] = 0;
        }
        self->rate_sec = sec;
    }
}

static void s_rate_count(zxb_broker_t *self)
{
    s_rate_roll(self);
    self->rate[self->rate_sec % 10]++;
}

/* Forgets a task that is in no queue and on no worker. */
static void s_task_release(zxb_broker_t *self, zxb_task_t *t)
{
    zxb_client_t *c = t->client;
    zxb_task_unindex(self->sched, t);
    if (t->fn) {
        t->fn->refs--;
    }
    zxb_task_free(self->sched, t);
    c->ntasks--;
    s_client_check(self, c);
}

static void s_q_push(zxb_broker_t *self, zxb_task_t *t, bool front)
{
    zxb_queue_push(self->sched, t, front);
    t->client->queued++;
    t->client->queued_bytes += t->size;
    self->queued++;
}

static void s_q_forget(zxb_broker_t *self, zxb_task_t *t)
{
    t->client->queued--;
    t->client->queued_bytes -= t->size;
    self->queued--;
}

static void s_q_remove(zxb_broker_t *self, zxb_task_t *t)
{
    zxb_queue_remove(self->sched, t);
    s_q_forget(self, t);
}

/* Sends a RESULT item to the task's client (when it listens). Its payload
   is *payload (consumed) or, when that is NULL, the len bytes at mem (an
   inline payload read in place: no frame made and freed per result). */
static void s_result_send(zxb_broker_t *self, zxb_task_t *t, uint32_t status, const char *node,
                          size_t node_len, uint32_t pid, uint8_t pool, zframe_t **payload,
                          const void *mem, size_t len)
{
    zxb_client_t *c = t->client;
    if (status == ZXP_ST_OK) {
        self->done++;
    } else {
        self->failed++;
    }
    s_rate_count(self);
    if (!c->alive || !t->adopted) {
        zframe_destroy(payload);
        return;
    }
    zxp_out_t *out = s_client_batch(self, c, ZXP_RESULT);
    zxp_result_t r = {.seq = t->seq,
                      .status = status,
                      .node = {node, (uint32_t)node_len},
                      .pid = pid,
                      .pool = pool,
                      .attempts = t->attempts};
    zxp_put_result(out, &r);
    if (*payload) {
        zxp_out_payload(out, payload);
    } else {
        zxp_out_payload_mem(out, mem, len);
    }
}

/* Fails a task the broker holds (not on a worker) with an error of its own. */
static void s_task_fail(zxb_broker_t *self, zxb_task_t *t, uint32_t status, const char *type,
                        const char *message, const char *node)
{
    zframe_t *err = zxp_error_frame(type, message, "");
    ZXB_DEBUG("task %" PRIu64 " of client %s failed: %s: %s", t->seq, t->client->name, type,
              message);
    s_result_send(self, t, status, node ? node : "", node ? strlen(node) : 0, 0,
                  t->pool ? t->pool : t->pool_req, &err, NULL, 0);
    s_task_release(self, t);
}

static void s_cancelled_send(zxb_broker_t *self, zxb_client_t *c, uint64_t seq, uint32_t outcome)
{
    if (!c->alive) {
        return;
    }
    zxp_put_cancelled(s_client_batch(self, c, ZXP_CANCELLED), seq, outcome);
}

/* ---- workers: credit and dispatch --------------------------------------------------- */

static bool s_served(const zxb_fn_t *fn, int pool_req)
{
    if (pool_req == ZXP_POOL_ANY) {
        return fn->offered[ZXP_POOL_THREAD] > 0 || fn->offered[ZXP_POOL_PROCESS] > 0;
    }
    return fn->offered[pool_req] > 0;
}

/* Puts the worker on (or takes it off) its functions' free lists when its
   credit for a pool crosses zero: O(its functions), only on a crossing. */
/* Whether w can take one more task in pool p: below its window, and, past
   the window it announced, below the byte budget of adaptive prefetch
   (widening is for short tasks; megabytes of arguments parked at one
   worker only cost memory there and page faults on fresh buffers). */
static bool s_has_credit(const zxb_broker_t *self, const zxb_worker_t *w, int p)
{
    if (w->dead || w->draining || w->cap[p] <= w->inflight[p]) {
        return false;
    }
    uint32_t slots = s_slots(w, p);
    return w->inflight[p] < slots + w->prefetch || w->bytes[p] < self->cfg.prefetch_bytes;
}

static void s_worker_relist(const zxb_broker_t *self, zxb_worker_t *w)
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

static void s_task_link(zxb_worker_t *w, zxb_task_t *t)
{
    t->worker = w;
    t->prev = NULL;
    t->next = w->tasks;
    if (w->tasks) {
        w->tasks->prev = t;
    }
    w->tasks = t;
    w->ntasks++;
    w->bytes[t->pool] += t->size;
}

static void s_task_unlink(zxb_worker_t *w, zxb_task_t *t)
{
    if (t->prev) {
        t->prev->next = t->next;
    } else {
        w->tasks = t->next;
    }
    if (t->next) {
        t->next->prev = t->prev;
    }
    t->next = t->prev = NULL;
    t->worker = NULL;
    w->ntasks--;
    w->bytes[t->pool] -= t->size;
}

static void s_dispatch(zxb_broker_t *self, zxb_worker_t *w, zxb_task_t *t, uint8_t pool)
{
    s_q_forget(self, t);
    t->gen++; /* invalidates its no-worker timer entry */
    t->state = ZXB_T_DISPATCHED;
    t->pool = pool;
    t->attempts++;
    s_task_link(w, t);
    w->inflight[pool]++;
    self->running++;
    zxp_out_t *out = s_worker_batch(self, w, ZXP_TASK);
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
    ZXB_DEBUG("task %" PRIu64 " of client %s (%s) -> worker %s %s pool, attempt %u", t->seq,
              t->client->name, t->fn->name, w->node, s_pool_name(pool), t->attempts);
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

/* Adaptive prefetch. A worker announces its slots and a prefetch; with the
   announced prefetch alone (usually 1) a worker running 10 us tasks idles
   for a network round trip between batches. So the broker measures how
   long tasks run on each worker pool (the integral of the started count
   over time, divided by the tasks that finished) and widens the window to
   slots + slots * target / run time, between the announced prefetch and
   --prefetch-max. Long tasks keep the announced prefetch, so they spread
   over workers instead of waiting behind each other at one node. */
static void s_busy_mark(zxb_worker_t *w, int p, int64_t now_us)
{
    if (now_us > w->mark_us[p]) {
        w->busy_us[p] += (int64_t)w->started_p[p] * (now_us - w->mark_us[p]);
    }
    w->mark_us[p] = now_us;
}

static void s_worker_fill(zxb_broker_t *self, zxb_worker_t *w);

static void s_adapt(zxb_broker_t *self, zxb_worker_t *w)
{
    bool wider = false;
    for (int p = ZXP_POOL_THREAD; p <= ZXP_POOL_PROCESS; p++) {
        uint32_t slots = s_slots(w, p);
        if (!slots || w->cap[p] == 0) {
            continue;
        }
        s_busy_mark(w, p, self->now_us);
        if (w->nres[p] > 0) {
            /* at least 1 us: STARTED and RESULT read in one loop turn (one
               clock reading) measure 0, and 0 means "not measured yet" */
            double sample = (double)w->busy_us[p] / (double)w->nres[p];
            sample = sample < 1.0 ? 1.0 : sample;
            w->run_us[p] = w->run_us[p] > 0 ? 0.5 * w->run_us[p] + 0.5 * sample : sample;
        } else if (w->started_p[p] > 0) {
            /* nothing finished since the last tick: tasks run at least this long */
            double floor_us = (double)w->busy_us[p] / (double)w->started_p[p];
            if (floor_us > w->run_us[p]) {
                w->run_us[p] = floor_us;
            }
        }
        w->busy_us[p] = 0;
        w->nres[p] = 0;
        if (w->run_us[p] <= 0) {
            continue;
        }
        double want = (double)slots * self->cfg.prefetch_target_ms * 1000.0 /
                      (w->run_us[p] > 1.0 ? w->run_us[p] : 1.0);
        uint32_t pf =
            want >= (double)self->cfg.prefetch_max ? self->cfg.prefetch_max : (uint32_t)want;
        if (pf < w->prefetch) {
            pf = w->prefetch;
        }
        uint32_t cap = slots + pf;
        if (cap != w->cap[p]) {
            wider = wider || cap > w->cap[p];
            ZXB_DEBUG("worker %s: %s window %u -> %u (tasks run about %.0f us)", w->node,
                      p == ZXP_POOL_THREAD ? "thread" : "process", w->cap[p], cap, w->run_us[p]);
            w->cap[p] = cap;
        }
    }
    if (wider) {
        s_worker_fill(self, w);
    } else {
        s_worker_relist(self, w);
    }
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

static void s_worker_fill(zxb_broker_t *self, zxb_worker_t *w)
{
    for (int p = ZXP_POOL_THREAD; p <= ZXP_POOL_PROCESS; p++) {
        while (s_worker_take(self, w, p)) {
        }
    }
    s_worker_relist(self, w);
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
        zxb_wfn_t *wf = fn->free_head[p];
        if (wf) {
            zxb_worker_t *w = wf->worker;
            zxb_free_rotate(wf, p);
            s_worker_take(self, w, p);
            s_worker_relist(self, w);
            return;
        }
    }
}

static void s_orphan_mark(zxb_broker_t *self, zxb_fn_t *fn)
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
             fn->name, s_pool_name(pool_req), fn->offered[ZXP_POOL_THREAD] ? "thread " : "",
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
static void s_task_enqueue(zxb_broker_t *self, zxb_task_t *t, bool front, bool fresh)
{
    zxb_fn_t *fn = t->fn;
    t->worker = NULL;
    if (!s_served(fn, t->pool_req)) {
        if (fresh && (fn->offered[ZXP_POOL_THREAD] || fn->offered[ZXP_POOL_PROCESS])) {
            char msg[512];
            s_notallowed_msg(fn, t->pool_req, msg, sizeof msg);
            s_task_fail(self, t, ZXP_ST_NOTALLOWED, "NotAllowedError", msg, NULL);
            return;
        }
        if (fresh && s_nofunc_now(self, fn)) {
            char msg[512];
            s_nofunc_msg(self, fn, msg, sizeof msg);
            s_task_fail(self, t, ZXP_ST_NOFUNC, "NoWorkerError", msg, NULL);
            return;
        }
        s_q_push(self, t, front);
        zxb_timer_push(&self->nofunc, t, self->now + self->cfg.nofunc_grace_ms);
        return;
    }
    s_q_push(self, t, front);
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
static bool s_task_requeue(zxb_broker_t *self, zxb_task_t *t, bool counted, const char *node)
{
    zxb_client_t *c = t->client;
    uint8_t was = t->state;
    if (!counted && t->attempts > 0) {
        t->attempts--;
    }
    if (!t->adopted || !c->alive) {
        /* recovered and not re-submitted: the client re-sends it; gone: drop */
        s_task_release(self, t);
        return false;
    }
    if (t->cancelled && was == ZXB_T_DISPATCHED) {
        /* the client asked to cancel and it never started: that is a cancel */
        s_cancelled_send(self, c, t->seq, ZXP_CANCEL_DONE);
        self->cancelled++;
        s_task_release(self, t);
        return false;
    }
    if (counted && t->attempts >= s_attempt_limit(self, t)) {
        char msg[512];
        snprintf(msg, sizeof msg, "worker %s lost; retries used up (%u attempts)", node,
                 t->attempts);
        s_task_fail(self, t, ZXP_ST_WORKERLOST, "WorkerLostError", msg, node);
        return false;
    }
    t->cancelled = 0;
    t->bcancel = 0;
    s_task_enqueue(self, t, true, false);
    return true;
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
        s_orphan_mark(self, fn);
    }
}

static void s_worker_free(zxb_broker_t *self, zxb_worker_t **w_p)
{
    zxb_worker_t *w = *w_p;
    if (!w) {
        return;
    }
    s_out_put(self, &w->out_task);
    s_out_put(self, &w->out_cancel);
    for (size_t i = 0; i < w->nfns; i++) {
        for (int p = ZXP_POOL_THREAD; p <= ZXP_POOL_PROCESS; p++) {
            zxb_free_unlink(&w->fns[i], p);
        }
        w->fns[i].fn->refs--;
    }
    free(w->fns);
    zframe_destroy(&w->rid);
    free(w);
    *w_p = NULL;
}

/* Takes a worker out: its unfinished tasks go back to the queue (lost:
   counting the attempt) or fail; the record is freed. */
static void s_worker_remove(zxb_broker_t *self, zxb_worker_t *w, bool lost, const char *why)
{
    w->dead = true;
    s_out_put(self, &w->out_task); /* unsent batches never reach it */
    s_out_put(self, &w->out_cancel);
    s_worker_relist(self, w);
    if (!w->draining) {
        s_worker_offer(self, w, -1);
    }
    size_t requeued = 0, failed = 0;
    while (w->tasks) {
        zxb_task_t *t = w->tasks;
        s_task_unlink(w, t);
        self->running--;
        if (s_task_requeue(self, t, lost, w->node)) {
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
    if (w->dirty) {
        /* unlink from the dirty list */
        for (zxb_worker_t **pp = &self->dirty_workers; *pp; pp = &(*pp)->dirty_next) {
            if (*pp == w) {
                *pp = w->dirty_next;
                break;
            }
        }
    }
    s_worker_free(self, &w);
}

/* ---- client commands ------------------------------------------------------------- */

static void s_client_gone(zxb_broker_t *self, zxb_client_t *c, const char *why);

static void s_drop_queued(zxb_task_t *t, void *arg)
{
    zxb_broker_t *self = arg;
    s_q_forget(self, t);
    s_task_release(self, t);
}

static void s_on_hello(zxb_broker_t *self, zxb_client_t *c, zframe_t *rid)
{
    const msgpack_object *h = zxp_item(&self->in, 0);
    zxp_str_t session = zxp_s(h, 1), name = zxp_s(h, 2);
    if (zxp_u(h, 0) != ZXP_VERSION) {
        zxp_send_error(self->csock, rid, 1, "unsupported protocol version");
        return;
    }
    if (memcmp(session.ptr, zframe_data(rid), ZXP_ID_LEN) != 0) {
        zxp_send_error(self->csock, rid, 2, "the routing id must be the 16-byte session");
        zxp_drop(&self->drops, "clients", rid, ZXP_E_SHAPE, "HELLO session is not the routing id");
        return;
    }
    bool known = c != NULL;
    if (!c) {
        c = s_client_new(self, (const uint8_t *)session.ptr);
    }
    bool recovered = known && !c->ever;
    bool back = known && c->ever && !c->alive;
    snprintf(c->name, sizeof c->name, "%.*s", (int)name.len, name.ptr);
    uint64_t hb = zxp_u(h, 3);
    c->hb_ms = hb ? (uint32_t)hb : self->cfg.heartbeat_ms;
    c->alive = true;
    c->ever = true;
    c->expired = false;
    c->doomed = false;
    c->last_recv = self->now;
    char hex[33];
    s_hex(c->session, hex);
    if (recovered) {
        ZXB_INFO("client %s (session %s) connected; %" PRIu64 " of its tasks were reported by "
                 "workers",
                 c->name, hex, c->ntasks);
    } else if (back) {
        ZXB_INFO("client %s (session %s) is back; %" PRIu64 " of its tasks still on workers",
                 c->name, hex, c->ntasks);
    } else if (!known) {
        ZXB_INFO("client %s (session %s) connected", c->name, hex);
    }
    zxp_send_welcome(self->csock, c->rid, self->id, self->cfg.heartbeat_ms, self->cfg.liveness,
                     (uint32_t)zxp_max_msg());
    c->last_send = self->now;
}

static void s_reject(zxb_broker_t *self, zxb_client_t *c, const zxp_submit_t *s, zframe_t **payload,
                     const char *msg)
{
    zframe_destroy(payload);
    zframe_t *err = zxp_error_frame("QuotaError", msg, "");
    zxp_out_t *out = s_client_batch(self, c, ZXP_RESULT);
    zxp_result_t r = {.seq = s->seq, .status = ZXP_ST_REJECTED, .pool = s->pool};
    zxp_put_result(out, &r);
    zxp_out_payload(out, &err);
    self->rejected++;
    self->failed++;
}

/* The client re-sent a task a worker reported after a broker restart: it
   becomes the client's again (with its arguments, for a retry). */
static void s_adopt(zxb_broker_t *self, zxb_task_t *t, const zxp_submit_t *s, zframe_t **payload)
{
    zxb_client_t *c = t->client;
    zxb_fn_t *fn = zxb_fn_intern(self->sched, s->fn.ptr, s->fn.len);
    t->adopted = 1;
    t->priority = s->priority;
    t->retries = (int8_t)s->retries;
    t->pool_req = s->pool;
    if (t->state == ZXB_T_HELD) {
        zxb_fn_t *node = t->fn; /* the interned node name, see zxb_task */
        zframe_t *res = zxb_task_payload_take(t);
        zframe_destroy(payload);
        s_result_send(self, t, t->held_status, node->name, node->len, t->held_pid, t->pool, &res,
                      NULL, 0);
        self->nheld--;
        s_task_release(self, t);
        return;
    }
    t->fn = fn;
    fn->refs++;
    t->timeout_ms = s->timeout_ms;
    t->flags = s->flags;
    uint32_t before = t->size;
    zxb_task_payload_set(t, payload);
    if (t->worker) {
        /* recovered on a worker: its bytes count there (s_task_link) */
        t->worker->bytes[t->pool] = t->worker->bytes[t->pool] - before + t->size;
    }
    if (t->state == ZXB_T_RUNNING && t->worker && c->alive) {
        zxb_worker_t *w = t->worker;
        zxp_put_started(s_client_batch(self, c, ZXP_STARTED), t->seq, w->node, strlen(w->node), 0);
    }
}

static void s_on_submit(zxb_broker_t *self, zxb_client_t *c)
{
    zxp_in_t *in = &self->in;
    zxb_fn_t *last = NULL;
    for (size_t i = 0; i < in->count; i++) {
        zxp_submit_t s;
        zxp_get_submit(in, i, &s);
        /* an inline payload is read in place; a frame is made for it only
           when an adopted task keeps it */
        const void *mem = NULL;
        size_t size = 0;
        zframe_t *payload = NULL;
        bool inl = zxp_payload_take_inline(in, &mem, &size);
        if (!inl) {
            payload = zxp_payload_take(in);
            size = payload ? zframe_size(payload) : 0;
        }
        /* clients number tasks upwards: only a re-send can be known already */
        zxb_task_t *t = s.seq > c->max_seq ? NULL : zxb_task_find(self->sched, c, s.seq);
        if (s.seq > c->max_seq) {
            c->max_seq = s.seq;
        }
        if (t) {
            if (!t->adopted) {
                if (inl) {
                    payload = zframe_new(mem, size); /* the adopted task keeps it */
                }
                s_adopt(self, t, &s, &payload);
            } else {
                self->duplicates++; /* re-sent after a reconnect: we have it */
                zframe_destroy(&payload);
            }
            continue;
        }
        if (c->queued >= self->cfg.max_queued) {
            char msg[512];
            snprintf(msg, sizeof msg,
                     "client %s has %" PRIu64 " tasks queued, the broker's limit "
                     "(--max-queued %" PRIu64 ")",
                     c->name, c->queued, self->cfg.max_queued);
            s_reject(self, c, &s, &payload, msg);
            continue;
        }
        if (c->queued_bytes + size > self->cfg.max_queued_bytes) {
            char msg[512];
            snprintf(msg, sizeof msg,
                     "client %s has %" PRIu64 " bytes of arguments queued; this task would pass "
                     "the broker's limit (--max-queued-bytes %" PRIu64 ")",
                     c->name, c->queued_bytes, self->cfg.max_queued_bytes);
            s_reject(self, c, &s, &payload, msg);
            continue;
        }
        zxb_fn_t *fn = last;
        if (!fn || fn->len != s.fn.len || memcmp(fn->name, s.fn.ptr, s.fn.len) != 0) {
            fn = zxb_fn_intern(self->sched, s.fn.ptr, s.fn.len);
            last = fn;
        }
        t = zxb_task_alloc(self->sched);
        assert(t && fn);
        t->client = c;
        t->seq = s.seq;
        t->fn = fn;
        fn->refs++;
        if (inl) {
            zxb_task_payload_set_mem(t, mem, size);
        } else {
            zxb_task_payload_set(t, &payload);
        }
        t->timeout_ms = s.timeout_ms;
        t->flags = s.flags;
        t->priority = s.priority;
        t->retries = (int8_t)s.retries;
        t->pool_req = s.pool;
        t->adopted = 1;
        t->arrival = zxb_arrival_now(self->sched, self->now);
        zxb_task_index(self->sched, t);
        c->ntasks++;
        self->submitted++;
        s_task_enqueue(self, t, false, true);
    }
}

static void s_on_cancel(zxb_broker_t *self, zxb_client_t *c)
{
    zxp_in_t *in = &self->in;
    for (size_t i = 0; i < in->count; i++) {
        const msgpack_object *it = zxp_item(in, i);
        uint64_t seq = zxp_u(it, 0);
        bool terminate = zxp_b(it, 1);
        zxb_task_t *t = zxb_task_find(self->sched, c, seq);
        if (!t || !t->adopted || t->state == ZXB_T_HELD) {
            s_cancelled_send(self, c, seq, ZXP_CANCEL_REFUSED);
            continue;
        }
        if (t->state == ZXB_T_QUEUED) {
            s_q_remove(self, t);
            s_cancelled_send(self, c, seq, ZXP_CANCEL_DONE);
            self->cancelled++;
            ZXB_DEBUG("task %" PRIu64 " of client %s cancelled while queued", seq, c->name);
            s_task_release(self, t);
            continue;
        }
        /* on a worker: it alone knows whether the task started */
        if (!t->cancelled || terminate) {
            t->cancelled = 1;
            zxp_put_wcancel(s_worker_batch(self, t->worker, ZXP_WCANCEL), c->session, seq,
                            terminate);
        }
    }
}

/* STATUS-REPLY: one map, documented in docs/operations.md. */
typedef struct {
    msgpack_packer *pk;
    zxb_client_t *client;
    size_t n;
    bool count_only;
} s_depths_t;

static void s_pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void s_pack_kv_str(msgpack_packer *pk, const char *k, const char *v)
{
    s_pack_str(pk, k);
    s_pack_str(pk, v);
}

static void s_pack_kv_u(msgpack_packer *pk, const char *k, uint64_t v)
{
    s_pack_str(pk, k);
    msgpack_pack_uint64(pk, v);
}

static void s_depth_cb(zxb_fn_t *fn, uint64_t depth, void *arg)
{
    s_depths_t *d = arg;
    d->n++;
    if (d->count_only) {
        return;
    }
    char hex[33];
    s_hex(d->client->session, hex);
    msgpack_pack_map(d->pk, 4);
    s_pack_kv_str(d->pk, "function", fn->name);
    s_pack_kv_str(d->pk, "client", d->client->name);
    s_pack_kv_str(d->pk, "session", hex);
    s_pack_kv_u(d->pk, "depth", depth);
}

/* Pool size less the tasks assigned to that pool, so never more than the
   pool (the window, prefetch included, is a dispatch matter, not a free
   slot). STATUS and the metrics report it. */
static uint32_t s_free_slots(const zxb_worker_t *w, int pool)
{
    uint32_t slots = s_slots(w, pool);
    return slots > w->inflight[pool] ? slots - w->inflight[pool] : 0;
}

static void s_on_status(zxb_broker_t *self, zxb_client_t *c)
{
    zxp_out_t *out = &self->ctl;
    zxp_out_begin(out, ZXP_STATUS_REPLY);
    msgpack_packer *pk = zxp_out_pk(out);
    msgpack_pack_array(pk, 1);
    msgpack_pack_map(pk, 4);

    s_pack_str(pk, "broker");
    msgpack_pack_map(pk, 8);
    s_pack_kv_str(pk, "id", self->id_hex);
    char version[32];
    snprintf(version, sizeof version, "%d.%d.%d", ZEXEC_VERSION_MAJOR, ZEXEC_VERSION_MINOR,
             ZEXEC_VERSION_PATCH);
    s_pack_kv_str(pk, "version", version);
    s_pack_str(pk, "uptime_s");
    msgpack_pack_double(pk, (double)(self->now - self->started) / 1000.0);
    s_pack_kv_str(pk, "clients_endpoint", self->cfg.clients_ep);
    s_pack_kv_str(pk, "workers_endpoint", self->cfg.workers_ep);
    s_pack_str(pk, "insecure");
    if (self->cfg.insecure) {
        msgpack_pack_true(pk);
    } else {
        msgpack_pack_false(pk);
    }
    s_pack_kv_u(pk, "heartbeat_ms", self->cfg.heartbeat_ms);
    s_pack_kv_u(pk, "liveness", self->cfg.liveness);

    s_pack_str(pk, "workers");
    msgpack_pack_array(pk, zhashx_size(self->workers));
    for (zxb_worker_t *w = zhashx_first(self->workers); w; w = zhashx_next(self->workers)) {
        char hex[33];
        s_hex(w->id, hex);
        msgpack_pack_map(pk, 16);
        s_pack_kv_str(pk, "node", w->node);
        s_pack_kv_str(pk, "id", hex);
        s_pack_kv_u(pk, "pid", w->pid);
        s_pack_kv_u(pk, "threads", w->threads);
        s_pack_kv_u(pk, "procs", w->procs);
        s_pack_kv_u(pk, "prefetch", w->prefetch);
        s_pack_kv_u(pk, "free_thread", s_free_slots(w, ZXP_POOL_THREAD));
        s_pack_kv_u(pk, "free_process", s_free_slots(w, ZXP_POOL_PROCESS));
        s_pack_kv_u(pk, "running", w->running);
        s_pack_kv_u(pk, "assigned", w->ntasks);
        s_pack_kv_u(pk, "done", w->done);
        s_pack_kv_u(pk, "failed", w->failed);
        s_pack_kv_u(pk, "last_heartbeat_ms_ago", (uint64_t)(self->now - w->last_recv));
        s_pack_kv_u(pk, "heartbeat_ms", w->hb_ms);
        s_pack_str(pk, "draining");
        if (w->draining) {
            msgpack_pack_true(pk);
        } else {
            msgpack_pack_false(pk);
        }
        s_pack_str(pk, "functions");
        msgpack_pack_array(pk, w->nfns);
        for (size_t i = 0; i < w->nfns; i++) {
            s_pack_str(pk, w->fns[i].fn->name);
        }
    }

    s_pack_str(pk, "queues");
    s_depths_t d = {.pk = pk, .count_only = true};
    for (zxb_client_t *cl = zhashx_first(self->clients); cl; cl = zhashx_next(self->clients)) {
        d.client = cl;
        zxb_client_depths(cl, s_depth_cb, &d);
    }
    msgpack_pack_array(pk, d.n);
    d.count_only = false;
    for (zxb_client_t *cl = zhashx_first(self->clients); cl; cl = zhashx_next(self->clients)) {
        d.client = cl;
        zxb_client_depths(cl, s_depth_cb, &d);
    }

    s_pack_str(pk, "totals");
    msgpack_pack_map(pk, 11);
    s_pack_kv_u(pk, "submitted", self->submitted);
    s_pack_kv_u(pk, "done", self->done);
    s_pack_kv_u(pk, "failed", self->failed);
    s_pack_kv_u(pk, "cancelled", self->cancelled);
    s_pack_kv_u(pk, "rejected", self->rejected);
    s_pack_kv_u(pk, "duplicates", self->duplicates);
    s_pack_kv_u(pk, "queued", self->queued);
    s_pack_kv_u(pk, "running", self->running);
    s_pack_kv_u(pk, "clients", zhashx_size(self->clients));
    s_pack_str(pk, "rate_per_s");
    s_rate_roll(self);
    uint64_t sum = 0;
    for (int i = 0; i < 10; i++) {
        sum += self->rate[i];
    }
    double span = (double)(self->now - self->started) / 1000.0;
    msgpack_pack_double(pk, (double)sum / (span < 10.0 ? (span > 1.0 ? span : 1.0) : 10.0));
    s_pack_kv_u(pk, "dropped_messages", self->drops.total);
    zxp_out_send(out, self->csock, c->rid);
}

/* ---- Prometheus metrics (metrics.c serves them) ------------------------------ */

/* A label value as the text format wants it: \\, \" and \n escaped. */
static void s_label(FILE *f, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"') {
            fputc('\\', f);
            fputc(*v, f);
        } else if (*v == '\n') {
            fputs("\\n", f);
        } else {
            fputc(*v, f);
        }
    }
}

static void s_metric_head(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void s_metric(FILE *f, const char *name, const char *type, const char *help, double v)
{
    s_metric_head(f, name, type, help);
    fprintf(f, "%s %.17g\n", name, v);
}

typedef struct {
    FILE *f;
    zxb_client_t *client;
} s_qmetrics_t;

static void s_queue_metric(zxb_fn_t *fn, uint64_t depth, void *arg)
{
    s_qmetrics_t *q = arg;
    fputs("zexec_queue_depth{function=\"", q->f);
    s_label(q->f, fn->name);
    fputs("\",client=\"", q->f);
    s_label(q->f, q->client->name);
    fprintf(q->f, "\"} %" PRIu64 "\n", depth);
}

enum { S_WM_SLOTS, S_WM_FREE, S_WM_RUNNING, S_WM_DONE, S_WM_FAILED };

/* One line per worker (per worker and pool kind for slots and free slots). */
static void s_worker_series(zxb_broker_t *self, FILE *f, const char *name, int what)
{
    bool per_pool = what == S_WM_SLOTS || what == S_WM_FREE;
    for (zxb_worker_t *w = zhashx_first(self->workers); w; w = zhashx_next(self->workers)) {
        for (int p = ZXP_POOL_THREAD; p <= (per_pool ? ZXP_POOL_PROCESS : ZXP_POOL_THREAD); p++) {
            uint64_t v = what == S_WM_SLOTS     ? s_slots(w, p)
                         : what == S_WM_FREE    ? s_free_slots(w, p)
                         : what == S_WM_RUNNING ? w->running
                         : what == S_WM_DONE    ? w->done
                                                : w->failed;
            fprintf(f, "%s{node=\"", name);
            s_label(f, w->node);
            if (per_pool) {
                fprintf(f, "\",pool=\"%s", s_pool_name(p));
            }
            fprintf(f, "\"} %" PRIu64 "\n", v);
        }
    }
}

/* The page: broker totals, then one series per worker (and pool), then the
   queue depth per function and client; the figures of STATUS. */
static void s_metrics_publish(zxb_broker_t *self)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) {
        return;
    }
    s_metric(f, "zexec_uptime_seconds", "gauge", "Seconds since the broker started.",
             (double)(self->now - self->started) / 1000.0);
    s_metric(f, "zexec_tasks_submitted_total", "counter", "Tasks accepted from clients.",
             (double)self->submitted);
    s_metric(f, "zexec_tasks_done_total", "counter", "Tasks that returned a value.",
             (double)self->done);
    s_metric(f, "zexec_tasks_failed_total", "counter", "Tasks that ended with an error.",
             (double)self->failed);
    s_metric(f, "zexec_tasks_cancelled_total", "counter", "Tasks cancelled before they ran.",
             (double)self->cancelled);
    s_metric(f, "zexec_tasks_rejected_total", "counter", "Tasks refused by a client quota.",
             (double)self->rejected);
    s_metric(f, "zexec_tasks_duplicate_total", "counter",
             "Re-sent tasks the broker already had (dropped).", (double)self->duplicates);
    s_metric(f, "zexec_tasks_queued", "gauge", "Tasks waiting for a worker.", (double)self->queued);
    s_metric(f, "zexec_tasks_running", "gauge", "Tasks on workers.", (double)self->running);
    s_metric(f, "zexec_clients", "gauge", "Connected clients.", (double)zhashx_size(self->clients));
    s_metric(f, "zexec_workers", "gauge", "Connected workers.", (double)zhashx_size(self->workers));
    s_metric(f, "zexec_dropped_messages_total", "counter",
             "Malformed, unsigned or unexpected messages dropped.", (double)self->drops.total);

    /* per worker and pool kind, then per worker */
    s_metric_head(f, "zexec_worker_slots", "gauge", "Pool size of a worker.");
    s_worker_series(self, f, "zexec_worker_slots", S_WM_SLOTS);
    s_metric_head(f, "zexec_worker_free_slots", "gauge", "Pool slots with no task assigned.");
    s_worker_series(self, f, "zexec_worker_free_slots", S_WM_FREE);
    s_metric_head(f, "zexec_worker_running", "gauge",
                  "Tasks a worker has started and not finished.");
    s_worker_series(self, f, "zexec_worker_running", S_WM_RUNNING);
    s_metric_head(f, "zexec_worker_tasks_done_total", "counter",
                  "Tasks a worker finished with a value.");
    s_worker_series(self, f, "zexec_worker_tasks_done_total", S_WM_DONE);
    s_metric_head(f, "zexec_worker_tasks_failed_total", "counter",
                  "Tasks a worker finished with an error.");
    s_worker_series(self, f, "zexec_worker_tasks_failed_total", S_WM_FAILED);
    s_metric_head(f, "zexec_queue_depth", "gauge", "Queued tasks per function and client.");
    for (zxb_client_t *cl = zhashx_first(self->clients); cl; cl = zhashx_next(self->clients)) {
        s_qmetrics_t q = {f, cl};
        zxb_client_depths(cl, s_queue_metric, &q);
    }
    if (fclose(f) != 0 || !text) {
        free(text);
        return;
    }
    zxb_metrics_publish(self->metrics, text, len);
}

static void s_client_msg(zxb_broker_t *self, zframe_t *rid, zmsg_t **msg_p)
{
    int rc = zxp_decode(&self->in, msg_p, ZXP_ROLE_BROKER_C);
    if (rc != 0) {
        zxp_drop(&self->drops, "clients", rid, rc, self->in.reason);
        return;
    }
    zxb_client_t *c = NULL;
    if (zframe_size(rid) == ZXP_ID_LEN) {
        c = zhashx_lookup(self->clients, zframe_data(rid));
    }
    uint8_t cmd = self->in.cmd;
    if (cmd == ZXP_HELLO) {
        if (zframe_size(rid) != ZXP_ID_LEN) {
            zxp_send_error(self->csock, rid, 2, "the routing id must be the 16-byte session");
            zxp_drop(&self->drops, "clients", rid, ZXP_E_SHAPE, "routing id is not 16 bytes");
            return;
        }
        s_on_hello(self, c, rid);
        return;
    }
    if (!c || !c->alive) {
        if (cmd != ZXP_BYE) {
            zxp_send_empty(self->csock, rid, ZXP_RESET);
        }
        return;
    }
    c->last_recv = self->now;
    switch (cmd) {
    case ZXP_SUBMIT: s_on_submit(self, c); break;
    case ZXP_CANCEL: s_on_cancel(self, c); break;
    case ZXP_STATUS: s_on_status(self, c); break;
    case ZXP_BYE: s_client_gone(self, c, "said BYE"); break;
    case ZXP_HEARTBEAT:
    default: break;
    }
}

static void s_client_gone(zxb_broker_t *self, zxb_client_t *c, const char *why)
{
    c->alive = false;
    uint64_t before = c->queued;
    zxb_client_fifos_drain(self->sched, c, s_drop_queued, self);
    /* free the prefetch its tasks hold on workers: those not started are
       withdrawn; results of the rest are discarded when they come */
    size_t withdrawn = 0, onworkers = 0;
    if (c->ntasks > 0) {
        for (zxb_worker_t *w = zhashx_first(self->workers); w; w = zhashx_next(self->workers)) {
            for (zxb_task_t *t = w->tasks; t; t = t->next) {
                if (t->client != c) {
                    continue;
                }
                onworkers++;
                if (t->state == ZXB_T_DISPATCHED && !t->bcancel && !t->cancelled) {
                    t->bcancel = 1;
                    zxp_put_wcancel(s_worker_batch(self, w, ZXP_WCANCEL), c->session, t->seq,
                                    false);
                    withdrawn++;
                }
            }
        }
    }
    char hex[33];
    s_hex(c->session, hex);
    ZXB_INFO("client %s (session %s) %s: %" PRIu64 " queued tasks dropped, %zu on workers (%zu "
             "withdrawn)",
             c->name, hex, why, before, onworkers, withdrawn);
    s_client_check(self, c);
}

/* ---- worker commands ------------------------------------------------------------- */

/* The task (session, seq) if it is assigned to w; else counts a drop. */
static zxb_task_t *s_worker_task(zxb_broker_t *self, zxb_worker_t *w, const uint8_t *session,
                                 uint64_t seq, zframe_t *rid, bool drop)
{
    zxb_client_t *c = zhashx_lookup(self->clients, session);
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
    zxb_client_t *c = zhashx_lookup(self->clients, session);
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
            s_busy_mark(w, t->pool, self->now_us);
            w->started_p[t->pool]++;
        }
        zxb_client_t *c = t->client;
        if (c->alive && t->adopted && !t->bcancel) {
            zxp_put_started(s_client_batch(self, c, ZXP_STARTED), seq, w->node, strlen(w->node),
                            pid);
        }
    }
}

/* A task ends on its worker: slot accounting. */
static void s_task_off_worker(zxb_broker_t *self, zxb_worker_t *w, zxb_task_t *t, bool slot_freed)
{
    if (t->state == ZXB_T_RUNNING) {
        w->running--;
        s_busy_mark(w, t->pool, self->now_us);
        if (w->started_p[t->pool] > 0) {
            w->started_p[t->pool]--;
        }
        w->nres[t->pool]++;
    } else if (t->state == ZXB_T_DISPATCHED) {
        /* a result with no WSTARTED before it: the worker leaves WSTARTED
           out for a task that ended within a millisecond of its start, so it
           counts as a run of (about) no time for the adaptive window */
        w->nres[t->pool]++;
    }
    s_task_unlink(w, t);
    self->running--;
    if (slot_freed) {
        w->inflight[t->pool]--;
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
        s_task_release(self, t);
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

static void s_on_wresult(zxb_broker_t *self, zxb_worker_t *w, zframe_t *rid)
{
    zxp_in_t *in = &self->in;
    for (size_t i = 0; i < in->count; i++) {
        zxp_wresult_t r;
        zxp_get_wresult(in, i, &r);
        const void *mem = NULL;
        size_t len = 0;
        zframe_t *payload = NULL;
        if (!zxp_payload_take_inline(in, &mem, &len)) {
            payload = zxp_payload_take(in);
        }
        zxb_task_t *t = s_worker_task(self, w, r.session, r.seq, rid, false);
        if (!t) {
            uint8_t p = r.pool ? r.pool : ZXP_POOL_THREAD;
            if (w->foreign[p] > 0) {
                /* a task it reported at READY that had gone elsewhere */
                w->foreign[p]--;
                w->inflight[p]--;
                zxb_task_t *q = s_find_any(self, r.session, r.seq);
                if (q && q->state == ZXB_T_QUEUED && q->adopted) {
                    s_q_remove(self, q);
                    s_result_send(self, q, r.status, w->node, strlen(w->node), r.pid, p, &payload,
                                  mem, len);
                    s_task_release(self, q);
                }
            } else {
                zxp_drop(&self->drops, "workers", rid, ZXP_E_UNKNOWN,
                         "result for a task not assigned to this worker");
            }
            zframe_destroy(&payload);
            continue;
        }
        s_task_off_worker(self, w, t, r.slot_freed);
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
        s_result_send(self, t, r.status, w->node, strlen(w->node), r.pid, t->pool, &payload, mem,
                      len);
        s_task_release(self, t);
    }
    /* the first measurement of a pool need not wait for the tick: a burst
       of short tasks may be over before it; nor need later ones once
       S_ADAPT_EVERY results have come (the estimate moves per sample, not
       per 100 ms: after a phase of 40 us tasks, a stream of 1 us ones ran
       its first half-second in the narrow window, halving it once a tick) */
    if (self->cfg.prefetch_target_ms > 0 && !w->dead && !w->draining &&
        ((w->run_us[ZXP_POOL_THREAD] <= 0 && w->nres[ZXP_POOL_THREAD] >= S_ADAPT_FIRST) ||
         (w->run_us[ZXP_POOL_PROCESS] <= 0 && w->nres[ZXP_POOL_PROCESS] >= S_ADAPT_FIRST) ||
         w->nres[ZXP_POOL_THREAD] >= S_ADAPT_EVERY || w->nres[ZXP_POOL_PROCESS] >= S_ADAPT_EVERY)) {
        s_adapt(self, w);
    }
    s_worker_fill(self, w);
}

static void s_on_wcancelled(zxb_broker_t *self, zxb_worker_t *w, zframe_t *rid)
{
    zxp_in_t *in = &self->in;
    bool freed = false;
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
        if (outcome == ZXP_CANCEL_REFUSED) {
            if (t->cancelled && !t->bcancel) {
                s_cancelled_send(self, c, seq, outcome);
            }
            continue;
        }
        s_task_off_worker(self, w, t, true);
        freed = true;
        if (t->bcancel && !t->cancelled) {
            /* withdrawn because its client left; if it came back, queue again */
            if (c->alive && outcome == ZXP_CANCEL_DONE) {
                t->bcancel = 0;
                if (t->attempts > 0) {
                    t->attempts--;
                }
                s_task_enqueue(self, t, true, false);
                continue;
            }
        } else {
            s_cancelled_send(self, c, seq, outcome);
            self->cancelled++;
            ZXB_DEBUG("task %" PRIu64 " of client %s %s on worker %s", seq, c->name,
                      outcome == ZXP_CANCEL_DONE ? "cancelled" : "terminated", w->node);
        }
        s_task_release(self, t);
    }
    if (freed) {
        s_worker_fill(self, w);
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
    w->inflight[p] -= (uint32_t)n;
    s_worker_fill(self, w);
}

static void s_on_drain(zxb_broker_t *self, zxb_worker_t *w)
{
    if (w->draining) {
        return;
    }
    w->draining = true;
    s_worker_relist(self, w);
    s_worker_offer(self, w, -1);
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
    zxb_client_t *c = zhashx_lookup(self->clients, session);
    if (!c) {
        c = s_client_new(self, session); /* a placeholder until its HELLO */
    }
    zxb_task_t *t = zxb_task_find(self->sched, c, seq);
    if (t && t->worker == old && old &&
        (t->state == ZXB_T_DISPATCHED || t->state == ZXB_T_RUNNING)) {
        s_task_off_worker(self, old, t, true);
    } else if (t && t->state == ZXB_T_QUEUED) {
        s_q_remove(self, t);
        t->attempts++;
    } else if (t) {
        w->foreign[pool]++;
        w->inflight[pool]++;
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
    s_task_link(w, t);
    w->inflight[pool]++;
    w->running++;
    self->running++;
    if (c->alive && t->adopted) {
        zxp_put_started(s_client_batch(self, c, ZXP_STARTED), seq, w->node, strlen(w->node), 0);
    }
}

static void s_on_ready(zxb_broker_t *self, zxb_worker_t *old, zframe_t *rid)
{
    const msgpack_object *h = zxp_item(&self->in, 0);
    if (zxp_u(h, 0) != ZXP_VERSION) {
        zxp_send_error(self->wsock, rid, 1, "unsupported protocol version");
        return;
    }
    zxp_str_t wid = zxp_s(h, 1), node = zxp_s(h, 2);
    if (zframe_size(rid) != ZXP_ID_LEN || memcmp(wid.ptr, zframe_data(rid), ZXP_ID_LEN) != 0) {
        zxp_send_error(self->wsock, rid, 2, "the routing id must be the 16-byte worker id");
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
    uint64_t hb = zxp_u(h, 7);
    w->hb_ms = hb ? (uint32_t)hb : self->cfg.heartbeat_ms;
    w->cap[ZXP_POOL_THREAD] = w->threads ? w->threads + w->prefetch : 0;
    w->cap[ZXP_POOL_PROCESS] = w->procs ? w->procs + w->prefetch : 0;
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
    for (uint32_t i = 0; i < running->via.array.size; i++) {
        s_recover_running(self, w, old, &running->via.array.ptr[i]);
    }
    if (old) {
        /* it is alive: a task it did not list crossed its READY in flight */
        s_worker_remove(self, old, false, "registered again (READY)");
    }
    zhashx_insert(self->workers, w->id, w);
    s_worker_offer(self, w, +1);
    zxp_send_welcome(self->wsock, w->rid, self->id, self->cfg.heartbeat_ms, self->cfg.liveness,
                     (uint32_t)zxp_max_msg());
    char hex[33];
    s_hex(w->id, hex);
    ZXB_INFO("worker %s (pid %u, id %s) ready: %u threads, %u processes, prefetch %u, %zu "
             "functions, %u tasks running",
             w->node, w->pid, hex, w->threads, w->procs, w->prefetch, w->nfns,
             running->via.array.size);
    s_worker_fill(self, w);
}

static void s_worker_msg(zxb_broker_t *self, zframe_t *rid, zmsg_t **msg_p)
{
    int rc = zxp_decode(&self->in, msg_p, ZXP_ROLE_BROKER_W);
    if (rc != 0) {
        zxp_drop(&self->drops, "workers", rid, rc, self->in.reason);
        return;
    }
    zxb_worker_t *w = NULL;
    if (zframe_size(rid) == ZXP_ID_LEN) {
        w = zhashx_lookup(self->workers, zframe_data(rid));
    }
    uint8_t cmd = self->in.cmd;
    if (cmd == ZXP_READY) {
        s_on_ready(self, w, rid);
        return;
    }
    if (!w) {
        if (cmd != ZXP_BYE) {
            zxp_send_empty(self->wsock, rid, ZXP_RESET);
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

/* ---- timers --------------------------------------------------------------------- */

static void s_nofunc_fail(zxb_broker_t *self, zxb_task_t *t)
{
    s_q_remove(self, t);
    zxb_fn_t *fn = t->fn;
    char msg[512];
    if (fn->offered[ZXP_POOL_THREAD] || fn->offered[ZXP_POOL_PROCESS]) {
        s_notallowed_msg(fn, t->pool_req, msg, sizeof msg);
        s_task_fail(self, t, ZXP_ST_NOTALLOWED, "NotAllowedError", msg, NULL);
    } else {
        s_nofunc_msg(self, fn, msg, sizeof msg);
        s_task_fail(self, t, ZXP_ST_NOFUNC, "NoWorkerError", msg, NULL);
    }
}

static void s_orphan_cb(zxb_task_t *t, void *arg)
{
    zxb_broker_t *self = arg;
    if (zxb_arrival_ms(t->arrival) + self->cfg.nofunc_grace_ms <= self->now - self->started) {
        s_nofunc_fail(self, t);
    }
}

static void s_tick_nofunc(zxb_broker_t *self)
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
    zxb_timer_entry_t h;
    while (zxb_timer_pop_due(&self->heldq, self->now, &h)) {
        if (h.task->state == ZXB_T_HELD) {
            self->nheld--;
            s_task_release(self, h.task);
        }
    }
}

static void s_tick_peers(zxb_broker_t *self)
{
    int64_t now = self->now;
    uint32_t hb = self->cfg.heartbeat_ms;
    zlist_t *lost = NULL;
    for (zxb_worker_t *w = zhashx_first(self->workers); w; w = zhashx_next(self->workers)) {
        if (now - w->last_recv > (int64_t)self->cfg.liveness * w->hb_ms) {
            if (!lost) {
                lost = zlist_new();
            }
            zlist_append(lost, w);
        } else {
            if (now - w->last_send >= hb) {
                zxp_send_empty(self->wsock, w->rid, ZXP_HEARTBEAT);
                w->last_send = now;
            }
            if (self->cfg.prefetch_target_ms > 0 && !w->dead && !w->draining) {
                s_adapt(self, w);
            }
        }
    }
    /* all of them dead first, so tasks re-queued from one never go to another */
    for (zxb_worker_t *w = lost ? zlist_first(lost) : NULL; w; w = zlist_next(lost)) {
        w->dead = true;
        s_worker_relist(self, w);
    }
    for (zxb_worker_t *w = lost ? zlist_first(lost) : NULL; w; w = zlist_next(lost)) {
        char why[64];
        snprintf(why, sizeof why, "silent for %" PRId64 " ms", now - w->last_recv);
        s_worker_remove(self, w, true, why);
    }
    zlist_destroy(&lost);
    zlist_t *gone = NULL;
    for (zxb_client_t *c = zhashx_first(self->clients); c; c = zhashx_next(self->clients)) {
        if (c->alive) {
            if (now - c->last_recv > (int64_t)self->cfg.liveness * c->hb_ms) {
                if (!gone) {
                    gone = zlist_new();
                }
                zlist_append(gone, c);
            } else if (now - c->last_send >= hb) {
                zxp_send_empty(self->csock, c->rid, ZXP_HEARTBEAT);
                c->last_send = now;
            }
        } else if (!c->ever && !c->expired && now - c->created > self->cfg.client_timeout_ms) {
            char hex[33];
            s_hex(c->session, hex);
            ZXB_INFO("session %s: no client came back for its %" PRIu64
                     " recovered tasks; their results will be dropped",
                     hex, c->ntasks);
            c->expired = true;
        }
    }
    for (zxb_client_t *c = gone ? zlist_first(gone) : NULL; c; c = zlist_next(gone)) {
        char why[64];
        snprintf(why, sizeof why, "lost (silent for %" PRId64 " ms)", now - c->last_recv);
        s_client_gone(self, c, why);
    }
    zlist_destroy(&gone);
}

/* ---- the loop -------------------------------------------------------------------- */

static void s_flush(zxb_broker_t *self)
{
    while (self->dirty_workers) {
        zxb_worker_t *w = self->dirty_workers;
        self->dirty_workers = w->dirty_next;
        w->dirty = false;
        s_out_flush(self, &w->out_task, self->wsock, w->rid);
        s_out_flush(self, &w->out_cancel, self->wsock, w->rid);
        w->last_send = self->now;
    }
    while (self->dirty_clients) {
        zxb_client_t *c = self->dirty_clients;
        self->dirty_clients = c->dirty_next;
        c->dirty = false;
        s_out_flush(self, &c->out_started, self->csock, c->rid);
        s_out_flush(self, &c->out_result, self->csock, c->rid);
        s_out_flush(self, &c->out_cancelled, self->csock, c->rid);
        c->last_send = self->now;
    }
    zxb_client_t *c;
    while ((c = zlist_pop(self->doomed))) {
        if (c->doomed && !c->alive && c->ntasks == 0) {
            zhashx_delete(self->clients, c->session);
            s_client_destroy(self, &c);
        } else {
            c->doomed = false;
        }
    }
}

/* Reads up to S_DRAIN_MAX messages; true if it stopped at that bound (more
   may wait), false once the socket said EAGAIN. */
static bool s_drain(zxb_broker_t *self, bool workers)
{
    zsock_t *sock = workers ? self->wsock : self->csock;
    for (int i = 0; i < S_DRAIN_MAX; i++) {
        zmsg_t *msg = zmsg_recv(sock); /* RCVTIMEO 0: NULL when nothing is left */
        if (!msg) {
            return false;
        }
        zframe_t *rid = zmsg_pop(msg);
        if (rid && zx__sec_verify(sock, workers, rid, msg, &self->drops) == 0) {
            if (workers) {
                s_worker_msg(self, rid, &msg);
            } else {
                s_client_msg(self, rid, &msg);
            }
        }
        zmsg_destroy(&msg);
        zframe_destroy(&rid);
    }
    return true;
}

zxb_broker_t *zxb_broker_new(const zxb_config_t *config)
{
    zxb_broker_t *self = calloc(1, sizeof *self);
    if (!self) {
        return NULL;
    }
    self->cfg = *config;
    zxb_log_level = config->verbose;
    self->started = self->now = zclock_mono();
    self->now_us = zx__mono_us();
    self->rate_sec = self->now / 1000;
    zuuid_t *uuid = zuuid_new();
    memcpy(self->id, zuuid_data(uuid), ZXP_ID_LEN);
    zuuid_destroy(&uuid);
    s_hex(self->id, self->id_hex);
    self->sched = zxb_sched_new();
    self->clients = s_id_table();
    self->workers = s_id_table();
    self->outpool = zlist_new();
    self->doomed = zlist_new();
    self->orphans = zlist_new();
    zxp_in_init(&self->in);
    zxp_out_init(&self->ctl);
    zxp_drops_init(&self->drops);
    const char *eps[2] = {config->clients_ep, config->workers_ep};
    zsock_t **socks[2] = {&self->csock, &self->wsock};
    for (int i = 0; i < 2; i++) {
        if (zx__bind_check(eps[i], config->insecure) != 0) {
            zxb_broker_destroy(&self);
            return NULL;
        }
        zsock_t *s = zsock_new(ZMQ_ROUTER);
        if (!s) {
            zsys_error("cannot create a socket: %s", zmq_strerror(zmq_errno()));
            zxb_broker_destroy(&self);
            return NULL;
        }
        *socks[i] = s;
        zxp_sock_setup(s);
        if (zx__sec_socket(s, i == 1) != 0) {
            zxb_broker_destroy(&self);
            return NULL;
        }
        zsock_set_router_handover(s, 1);
        zsock_set_router_mandatory(s, 0);
        zsock_set_rcvtimeo(s, 0);
        if (zsock_bind(s, "%s", eps[i]) < 0) {
            zsys_error("cannot bind the %s endpoint %s: %s", i == 0 ? "client" : "worker", eps[i],
                       zmq_strerror(zmq_errno()));
            zxb_broker_destroy(&self);
            return NULL;
        }
    }
    if (config->metrics_addr) {
        self->metrics = zxb_metrics_new(config->metrics_addr, config->insecure);
        if (!self->metrics) {
            zxb_broker_destroy(&self);
            return NULL;
        }
        ZXB_INFO("Prometheus metrics on http://%s/metrics", config->metrics_addr);
    }
    return self;
}

static void s_free_workers(zxb_broker_t *self)
{
    zxb_worker_t *w;
    while ((w = zhashx_first(self->workers))) {
        while (w->tasks) {
            zxb_task_t *t = w->tasks;
            s_task_unlink(w, t);
        }
        zhashx_delete(self->workers, w->id);
        s_worker_free(self, &w);
    }
}

void zxb_broker_destroy(zxb_broker_t **self_p)
{
    zxb_broker_t *self = *self_p;
    if (!self) {
        return;
    }
    zxb_metrics_destroy(&self->metrics); /* first: its thread copies only its own page */
    self->dirty_clients = NULL;
    self->dirty_workers = NULL;
    if (self->workers) {
        s_free_workers(self);
        zhashx_destroy(&self->workers);
    }
    if (self->clients) {
        zxb_client_t *c;
        while ((c = zhashx_first(self->clients))) {
            zhashx_delete(self->clients, c->session);
            s_client_destroy(self, &c);
        }
        zhashx_destroy(&self->clients);
    }
    zxb_sched_destroy(&self->sched); /* frees every task's payload */
    zxp_out_t *out;
    while (self->outpool && (out = zlist_pop(self->outpool))) {
        zxp_out_fini(out);
        free(out);
    }
    zlist_destroy(&self->outpool);
    zlist_destroy(&self->doomed);
    zlist_destroy(&self->orphans);
    zxb_timer_fini(&self->nofunc);
    zxb_timer_fini(&self->heldq);
    zxp_in_fini(&self->in);
    zxp_out_fini(&self->ctl);
    zxp_drops_fini(&self->drops);
    zsock_destroy(&self->csock);
    zsock_destroy(&self->wsock);
    free(self);
    *self_p = NULL;
}

int zxb_broker_run(zxb_broker_t *self)
{
    ZXB_INFO("broker %s: clients on %s, workers on %s (heartbeat %u ms, liveness %u)", self->id_hex,
             self->cfg.clients_ep, self->cfg.workers_ep, self->cfg.heartbeat_ms,
             self->cfg.liveness);
    int64_t tick_ms = self->cfg.heartbeat_ms / 4;
    if (tick_ms > 100) {
        tick_ms = 100;
    }
    if (tick_ms < 5) {
        tick_ms = 5;
    }
    int64_t next_tick = zclock_mono() + tick_ms;
    /* The loop polls the sockets' ZMQ_FDs itself. zmq_poll would cost two
       poll calls and four ZMQ_EVENTS checks (each a getpid and a poll
       inside libzmq) per wake-up; syscalls are most of a lone task's cost
       (docs/performance.md). ZMQ_FD only says the socket's state changed,
       and a send may consume that change, so before sleeping the loop asks
       ZMQ_EVENTS of each socket. */
    struct pollfd fds[2] = {{zsock_fd(self->wsock), POLLIN, 0}, {zsock_fd(self->csock), POLLIN, 0}};
    bool more[2] = {true, true}; /* messages may wait: read before sleeping */
    while (!zsys_interrupted) {
        /* (a socket left with more to read is read again without asking;
           the other is asked, so that it is not starved) */
        if (!more[0]) {
            more[0] = zsock_events(self->wsock) & ZMQ_POLLIN;
        }
        if (!more[1]) {
            more[1] = zsock_events(self->csock) & ZMQ_POLLIN;
        }
        if (!more[0] && !more[1]) {
            int64_t wait = next_tick - zclock_mono();
            int rc = poll(fds, 2, wait > 0 ? (int)wait : 0);
            if (rc < 0 && errno != EINTR) {
                zsys_error("poll failed: %s", strerror(errno));
                break;
            }
            more[0] = rc > 0 && fds[0].revents;
            more[1] = rc > 0 && fds[1].revents;
        }
        self->now = zclock_mono();
        self->now_us = zx__mono_us();
        /* workers first: their results free the credit new submissions need */
        if (more[0]) {
            more[0] = s_drain(self, true);
        }
        if (more[1]) {
            more[1] = s_drain(self, false);
        }
        s_flush(self);
        if (self->now >= next_tick) {
            next_tick = self->now + tick_ms;
            if (zx__parent_gone()) {
                zsys_warning("the program that started this local cluster is gone; stopping");
                break;
            }
            s_tick_nofunc(self);
            s_tick_peers(self);
            if (self->metrics && self->now - self->metrics_at >= 1000) {
                self->metrics_at = self->now;
                s_metrics_publish(self);
            }
            zxb_fn_gc(self->sched);
            s_flush(self);
        }
    }
    ZXB_INFO("broker stopping: SHUTDOWN to %zu workers and %zu clients", zhashx_size(self->workers),
             zhashx_size(self->clients));
    for (zxb_worker_t *w = zhashx_first(self->workers); w; w = zhashx_next(self->workers)) {
        zxp_send_empty(self->wsock, w->rid, ZXP_SHUTDOWN);
    }
    for (zxb_client_t *c = zhashx_first(self->clients); c; c = zhashx_next(self->clients)) {
        if (c->alive) {
            zxp_send_empty(self->csock, c->rid, ZXP_SHUTDOWN);
        }
    }
    /* give the SHUTDOWNs a moment to leave */
    zsock_set_linger(self->wsock, 200);
    zsock_set_linger(self->csock, 200);
    return 0;
}
