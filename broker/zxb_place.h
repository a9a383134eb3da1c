/*  zxb_place.h - the broker's placement policy (placement.c): which worker
    pool may take a task of a given function now, from what the pool
    announced, what it holds, and how long that function's tasks run; and
    which of the tasks a pool holds without having started them are worth
    taking back for an idle slot elsewhere.

    Kept apart from the sockets and the records so that it can be read,
    changed and tested alone: every function works on one pool's state
    (zxb_place_pool_t), one function's run-time estimate (zxb_place_est_t)
    and the policy's settings (zxb_place_cfg_t), and takes the time as an
    argument (monotonic microseconds), so a test drives it with a fake
    clock, fake pools and fake functions. The broker keeps one
    zxb_place_pool_t per worker and pool kind (zxb_worker.place[]) and one
    zxb_place_est_t per function and pool kind (zxb_fn.est[]), updates the
    counts as tasks come and go, and asks the policy.
*/
#ifndef ZXB_PLACE_H
#define ZXB_PLACE_H

#include <stdbool.h>
#include <stdint.h>

/* Results of a function (in one pool kind) that make its first run-time
   estimate. Later batches move it halfway towards their mean: up at the
   tick once they have ZXB_PLACE_FIRST results, either way at once when
   they have ZXB_PLACE_EVERY (a busy stream's estimate moves per sample,
   not per tick; a batch of 16 tiny tasks with one preempted among them
   would narrow a window fifty times, and a function with 1% of long tasks
   has batches of 16 without one, so it goes down on 256 only). */
#define ZXB_PLACE_FIRST 16
#define ZXB_PLACE_EVERY 256

/* A result with no WSTARTED before it ran under 1 ms (the worker sends
   WSTARTED for anything longer). */
#define ZXB_PLACE_NOSTART_US 1000

/* The policy's settings, from the broker's flags. */
typedef struct {
    double target_ms; /* --prefetch-target-ms: queue this much short work per slot; 0: off
                         (every function gets the window the worker announced) */
    uint32_t max;     /* --prefetch-max: most tasks beyond the slots */
    uint64_t bytes;   /* --prefetch-bytes: argument bytes in flight beyond which only
                         the announced window applies */
    double steal_ms;  /* --steal-after-ms: a task prefetched this long at a node and not
                         started may be taken back for an idle slot elsewhere */
} zxb_place_cfg_t;

/* One function's run time in one pool kind, over the whole cluster. */
typedef struct {
    double run_us;     /* the estimate; 0: not measured yet (unknown) */
    uint32_t n;        /* samples since the last update */
    uint32_t ticks;    /* ticks since the last update */
    double sum_us;     /* their sum */
    uint32_t running;  /* its tasks reported started and not ended */
    int64_t start_sum; /* the sum of their start times (us): their mean age */
} zxb_place_est_t;

/* One worker pool (thread or process) as the policy sees it. */
typedef struct {
    /* what the worker announced at READY (zxb_place_pool_init) */
    uint32_t slots;    /* pool size; 0: the worker has no such pool */
    uint32_t prefetch; /* tasks beyond the slots it asked for */
    /* kept by the broker's accounting, read here */
    uint32_t inflight; /* dispatched and not resulted (and slots held, see zxb_worker) */
    uint32_t nlong;    /* of those, tasks of functions not known short when sent */
    uint64_t bytes;    /* argument bytes of the tasks on this pool */
} zxb_place_pool_t;

/* A pool as READY announces it, holding nothing. */
void zxb_place_pool_init(zxb_place_pool_t *pool, uint32_t slots, uint32_t prefetch);

/* Whether adaptive prefetch is on (a target above 0). */
bool zxb_place_adaptive(const zxb_place_cfg_t *cfg);

/* Whether a function is known to be short: measured, and its tasks run at
   most the target. Only such tasks are sent beyond a pool's free slots when
   adaptive prefetch is on. */
bool zxb_place_short(const zxb_place_cfg_t *cfg, const zxb_place_est_t *est);

/* Tasks of a function with estimate est that the pool may hold (the window):
   - adaptive prefetch off: slots + the announced prefetch, for every function;
   - unknown or long function: the slots alone (pure late binding: a task
     goes only to a free slot);
   - short function: slots + fast x target / run time, at least the announced
     prefetch, at most cfg->max, where fast is the slots not taken by long
     tasks (none when every slot has one: nothing waits behind them). */
uint32_t zxb_place_window(const zxb_place_cfg_t *cfg, const zxb_place_pool_t *pool,
                          const zxb_place_est_t *est);

/* Whether the pool can take one more task of that function: a free slot
   always can; beyond the slots, below the function's window, and past the
   announced window, below the byte budget (widening is for short tasks;
   megabytes of arguments parked at one worker only cost memory there). The
   worker's own state (gone, draining) is the caller's to check. */
bool zxb_place_has_credit(const zxb_place_cfg_t *cfg, const zxb_place_pool_t *pool,
                          const zxb_place_est_t *est);

/* Slots with no task assigned: the pool size less the tasks in flight,
   never more than the pool. An idle slot is one of these. */
uint32_t zxb_place_free_slots(const zxb_place_pool_t *pool);

/* The count of tasks in flight below which the pool can take one more task
   of that function (has_credit is inflight < bound). One number, so the
   broker can tell when a worker's credit for its functions may have changed
   without asking for each. */
uint32_t zxb_place_bound(const zxb_place_cfg_t *cfg, const zxb_place_pool_t *pool,
                         const zxb_place_est_t *est);

/* A task of the function started at now_us. */
void zxb_place_on_start(zxb_place_est_t *est, int64_t now_us);

/* A task of the function ended on pool at now_us. start_us: when it
   started (started), or was sent (not started: the worker leaves WSTARTED
   out for a task that ended within 1 ms of its start, which counts as a
   run of about no time). One sample; the running count is on_gone's.
   Returns true when the estimate changed. */
bool zxb_place_on_result(zxb_place_est_t *est, zxb_place_pool_t *pool, bool started,
                         int64_t start_us, int64_t now_us);

/* A started task (counted by on_start) ended, with a result or without
   (its worker lost): it no longer counts among the running. */
void zxb_place_on_gone(zxb_place_est_t *est, int64_t start_us);

/* At the tick: a known estimate takes the batch of results since its last
   update if it has ZXB_PLACE_FIRST, its mean is higher, and it began a
   tick ago or more (a stream's batches are judged on ZXB_PLACE_EVERY:
   under load a few preempted tiny tasks in a part-batch would narrow its
   window for the next 256 results); then, the function's running tasks have
   run, on average, for (now - their mean start), and an estimate below
   that is raised to it, so a function that turned long stops being
   prefetched before its first slow result. Returns true when the estimate
   changed. */
bool zxb_place_tick(zxb_place_est_t *est, int64_t now_us);

/* Whether a task sent to a pool at sent_us and not started by now_us may
   be taken back for an idle slot elsewhere: it has waited steal_ms. */
bool zxb_place_withdrawable(const zxb_place_cfg_t *cfg, int64_t sent_us, int64_t now_us);

#endif
