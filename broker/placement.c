/*  placement.c - the broker's placement policy (zxb_place.h): how many
    tasks of a function a worker pool may hold, how long each function runs,
    and which unstarted tasks may be taken back.

    The invariant it serves (docs/rationale.md): a task never waits, queued
    at the broker or prefetched at a node, while a slot that could run it is
    idle anywhere in the cluster, for longer than one round trip plus one
    scheduling tick. Three rules hold it:

    - Late binding by default. A task of a function the broker has not
      measured, or knows to run longer than the target, goes only to a free
      slot; it waits at the broker, where any slot that frees can take it,
      never behind a busy one at a node.
    - Prefetch only what is known short. A worker announces its slots and a
      prefetch, and with free slots alone a worker running 10 us tasks idles
      for a network round trip between them. So the broker measures how long
      each function runs, per pool kind, over the whole cluster (a pool that
      ran a million 1 us echoes knows nothing about the next function): the
      time between a task's WSTARTED and its WRESULT, first over
      ZXB_PLACE_FIRST results, then each batch moving the estimate halfway
      to its mean (up within a tick, down within ZXB_PLACE_EVERY results),
      and the age of its running tasks raising it at every tick. A
      function measured at most the target per task may fill a pool's window
      of slots + fast x target / run time (between the announced prefetch
      and the maximum), fast being the slots not busy with long tasks: short
      tasks never queue behind a long one when no slot is left for them.
    - Take back what waits. A task sent to a node and not started there for
      steal_ms, while a slot that could run it is idle elsewhere, is
      withdrawn (WCANCEL: the node decides the race with its start, once)
      and placed again (dispatch.c). This covers what the first two cannot
      foresee: a function that turns long, a node that joins, one that
      drains, the fixed window when adaptive prefetch is off.

    Pure: no sockets, no records, no clock of its own (the caller passes
    monotonic microseconds), so tests drive it with a fake clock.
*/
#include "zxb_place.h"

void zxb_place_pool_init(zxb_place_pool_t *pool, uint32_t slots, uint32_t prefetch)
{
    *pool = (zxb_place_pool_t){.slots = slots, .prefetch = prefetch};
}

bool zxb_place_adaptive(const zxb_place_cfg_t *cfg)
{
    return cfg->target_ms > 0;
}

bool zxb_place_short(const zxb_place_cfg_t *cfg, const zxb_place_est_t *est)
{
    return zxb_place_adaptive(cfg) && est && est->run_us > 0 &&
           est->run_us <= cfg->target_ms * 1000.0;
}

uint32_t zxb_place_window(const zxb_place_cfg_t *cfg, const zxb_place_pool_t *pool,
                          const zxb_place_est_t *est)
{
    if (!pool->slots) {
        return 0;
    }
    if (!zxb_place_adaptive(cfg)) {
        return pool->slots + pool->prefetch;
    }
    if (!zxb_place_short(cfg, est) || pool->nlong >= pool->slots) {
        return pool->slots;
    }
    uint32_t fast = pool->slots - pool->nlong;
    /* at least 1 us: a start and a result read in one loop turn measure 0 */
    double run = est->run_us > 1.0 ? est->run_us : 1.0;
    double want = (double)fast * cfg->target_ms * 1000.0 / run;
    uint32_t pf = want >= (double)cfg->max ? cfg->max : (uint32_t)want;
    if (pf < pool->prefetch) {
        pf = pool->prefetch;
    }
    return pool->slots + pf;
}

uint32_t zxb_place_bound(const zxb_place_cfg_t *cfg, const zxb_place_pool_t *pool,
                         const zxb_place_est_t *est)
{
    uint32_t window = zxb_place_window(cfg, pool, est);
    uint32_t announced = pool->slots + pool->prefetch;
    if (window > announced && pool->bytes >= cfg->bytes) {
        /* the widened part stops at the byte budget */
        window = announced;
    }
    return window > pool->slots ? window : pool->slots;
}

bool zxb_place_has_credit(const zxb_place_cfg_t *cfg, const zxb_place_pool_t *pool,
                          const zxb_place_est_t *est)
{
    return pool->inflight < zxb_place_bound(cfg, pool, est);
}

uint32_t zxb_place_free_slots(const zxb_place_pool_t *pool)
{
    return pool->slots > pool->inflight ? pool->slots - pool->inflight : 0;
}

/* The batch of results since the last update moves the estimate halfway
   towards its mean (or makes it, the first time). */
static void s_update(zxb_place_est_t *est)
{
    double mean = est->sum_us / est->n;
    mean = mean < 1.0 ? 1.0 : mean; /* 0 means "not measured yet" */
    est->run_us = est->run_us > 0 ? 0.5 * est->run_us + 0.5 * mean : mean;
    est->n = 0;
    est->ticks = 0;
    est->sum_us = 0;
}

void zxb_place_on_start(zxb_place_est_t *est, int64_t now_us)
{
    est->running++;
    est->start_sum += now_us;
}

void zxb_place_on_gone(zxb_place_est_t *est, int64_t start_us)
{
    if (est->running > 0) {
        est->running--;
        est->start_sum -= start_us;
    }
}

bool zxb_place_on_result(zxb_place_est_t *est, zxb_place_pool_t *pool, bool started,
                         int64_t start_us, int64_t now_us)
{
    /* a result without a start ran under 1 ms: counted as no time (1 us
       after the clamp below). Measuring it from the gap since the pool's
       previous result was tried: that gap holds the pool's idle time, and
       the windows it gave tiny tasks cost bench A a fifth of its rate. */
    double sample = started ? (double)(now_us - start_us) : 0;
    (void)pool;
    est->n++;
    est->sum_us += sample < 0 ? 0 : sample;
    if (est->n < (est->run_us > 0 ? ZXB_PLACE_EVERY : ZXB_PLACE_FIRST)) {
        return false;
    }
    s_update(est);
    return true;
}

bool zxb_place_tick(zxb_place_est_t *est, int64_t now_us)
{
    if (est->run_us <= 0) {
        return false; /* unknown stays unknown: it is late-bound either way */
    }
    bool changed = false;
    if (est->n >= ZXB_PLACE_FIRST && est->ticks >= 1 && est->sum_us / est->n > est->run_us) {
        /* up at once; down only on a whole batch (on_result): prefetching
           a long task costs a slot's worth of waiting, late binding a short
           one a round trip, and a function with 1% of long tasks has
           batches of 16 without one */
        s_update(est);
        changed = true;
    } else {
        est->ticks++;
    }
    if (est->running > 0) {
        double age = (double)now_us - (double)est->start_sum / est->running;
        if (age > est->run_us) {
            est->run_us = age;
            changed = true;
        }
    }
    return changed;
}

bool zxb_place_withdrawable(const zxb_place_cfg_t *cfg, int64_t sent_us, int64_t now_us)
{
    return (double)(now_us - sent_us) >= cfg->steal_ms * 1000.0;
}
