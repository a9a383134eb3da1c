/*  zxb_place.h - the broker's placement policy (placement.c): how many tasks
    a worker pool may hold at once, from what the pool announced and from
    how long its tasks run.

    Kept apart from the sockets and the records so that it can be read,
    changed and tested alone: every function works on one pool's state
    (zxb_place_pool_t) and the policy's settings (zxb_place_cfg_t), and
    takes the time as an argument (monotonic microseconds), so a test drives
    it with a fake clock and fake pools. The broker keeps one
    zxb_place_pool_t per worker and pool kind (zxb_worker.place[]), updates
    its inflight and bytes as tasks come and go, tells the policy when a
    task starts and ends, and asks it whether the pool can take one more.
*/
#ifndef ZXB_PLACE_H
#define ZXB_PLACE_H

#include <stdbool.h>
#include <stdint.h>

/* Results that give a pool its first run-time estimate, and results that
   update it before the next tick (zxb_place_due). */
#define ZXB_PLACE_FIRST 16
#define ZXB_PLACE_EVERY 256

/* The policy's settings, from the broker's flags. */
typedef struct {
    double target_ms; /* --prefetch-target-ms: queue this much work per slot; 0: off */
    uint32_t max;     /* --prefetch-max: most tasks beyond the slots */
    uint64_t bytes;   /* --prefetch-bytes: argument bytes in flight beyond which only
                         the announced window applies */
} zxb_place_cfg_t;

/* One worker pool (thread or process) as the policy sees it. */
typedef struct {
    /* what the worker announced at READY (zxb_place_pool_init) */
    uint32_t slots;    /* pool size; 0: the worker has no such pool */
    uint32_t prefetch; /* tasks beyond the slots it asked for */
    /* the decision: tasks this pool may hold (slots + prefetch at first,
       widened by zxb_place_adapt); 0 when the pool is absent */
    uint32_t window;
    /* kept by the broker's accounting, read here */
    uint32_t inflight; /* dispatched and not resulted (and slots held, see zxb_worker) */
    uint64_t bytes;    /* argument bytes of the tasks on this pool */
    /* the run-time measurement: the integral of the started count over
       time (busy_us, up to mark_us), divided by the tasks that ended */
    uint32_t started; /* tasks running now, as far as the policy counts them */
    uint32_t nres;    /* tasks ended since the last estimate */
    int64_t busy_us, mark_us;
    double run_us; /* smoothed run time per task; 0: not measured yet */
} zxb_place_pool_t;

/* A pool as READY announces it: window slots + prefetch (0 without slots),
   nothing measured. */
void zxb_place_pool_init(zxb_place_pool_t *pool, uint32_t slots, uint32_t prefetch);

/* Whether adaptive prefetch is on (a target above 0). */
bool zxb_place_adaptive(const zxb_place_cfg_t *cfg);

/* Tasks the pool may hold now. */
uint32_t zxb_place_window(const zxb_place_pool_t *pool);

/* Whether the pool can take one more task: below its window, and, past the
   window it announced, below the byte budget (widening is for short tasks;
   megabytes of arguments parked at one worker only cost memory there and
   page faults on fresh buffers). The worker's own state (gone, draining)
   is the caller's to check. */
bool zxb_place_has_credit(const zxb_place_cfg_t *cfg, const zxb_place_pool_t *pool);

/* Slots with no task assigned: the pool size less the tasks in flight,
   never more than the pool (the window is a dispatch matter, not a free
   slot). STATUS and the metrics report it. */
uint32_t zxb_place_free_slots(const zxb_place_pool_t *pool);

/* A task of this pool started (its worker said WSTARTED) at now_us. */
void zxb_place_on_start(zxb_place_pool_t *pool, int64_t now_us);

/* A task of this pool ended at now_us. started: whether it had been
   reported started; a result with no start before it (the worker leaves
   WSTARTED out for a task that ended within a millisecond of its start)
   counts as a run of about no time. */
void zxb_place_on_result(zxb_place_pool_t *pool, bool started, int64_t now_us);

/* Whether the pool's estimate should be updated now rather than at the
   next tick: its first ZXB_PLACE_FIRST results have come, or
   ZXB_PLACE_EVERY since the last update (a burst of short tasks may be
   over before the tick; the estimate moves per sample, not per tick).
   False when adaptive prefetch is off. */
bool zxb_place_due(const zxb_place_cfg_t *cfg, const zxb_place_pool_t *pool);

/* Updates the pool's run-time estimate at now_us (the mean of the runs
   since the last update, smoothed by half with the previous estimate; with
   no run ended, the time the running tasks have run so far as a floor) and
   sets its window to slots + slots * target / run time, between the
   announced prefetch and cfg->max. Until the pool has an estimate the
   window stays. Returns the new window. An absent pool is left alone. */
uint32_t zxb_place_adapt(const zxb_place_cfg_t *cfg, zxb_place_pool_t *pool, int64_t now_us);

#endif
