/*  placement.c - the broker's placement policy: adaptive prefetch, the
    decision of how many tasks a worker pool may hold (zxb_place.h).

    A worker announces its slots and a prefetch (usually 1), and with that
    window alone a worker running 10 us tasks idles for a network round trip
    between them. So the broker measures how long tasks run on each worker
    pool, from its own clock: the time each task spends between its
    WSTARTED and its WRESULT, summed as the integral of the started count
    over time and divided by the tasks that ended, smoothed per tick (the
    first estimate comes after ZXB_PLACE_FIRST results, without waiting for
    the tick). It widens the pool's window to slots + slots * target / run
    time, between the announced prefetch and the maximum. Until a pool has a
    measurement, and with a target of 0, the announced window applies; long
    tasks keep it, so they spread over workers instead of waiting behind
    each other at one node. The widened part also stops while the pool's
    tasks in flight carry the byte budget of arguments.

    Pure: no sockets, no records, no clock of its own (the caller passes
    monotonic microseconds), so tests drive it with a fake clock. The broker
    moves a worker onto or off its functions' free-credit lists when this
    module's answer changes (dispatch.c).
*/
#include "zxb_place.h"

void zxb_place_pool_init(zxb_place_pool_t *pool, uint32_t slots, uint32_t prefetch)
{
    *pool = (zxb_place_pool_t){.slots = slots, .prefetch = prefetch};
    pool->window = slots ? slots + prefetch : 0;
}

bool zxb_place_adaptive(const zxb_place_cfg_t *cfg)
{
    return cfg->target_ms > 0;
}

uint32_t zxb_place_window(const zxb_place_pool_t *pool)
{
    return pool->window;
}

bool zxb_place_has_credit(const zxb_place_cfg_t *cfg, const zxb_place_pool_t *pool)
{
    if (pool->window <= pool->inflight) {
        return false;
    }
    return pool->inflight < pool->slots + pool->prefetch || pool->bytes < cfg->bytes;
}

uint32_t zxb_place_free_slots(const zxb_place_pool_t *pool)
{
    return pool->slots > pool->inflight ? pool->slots - pool->inflight : 0;
}

/* Adds the running tasks' time since the last mark to the integral. */
static void s_busy_mark(zxb_place_pool_t *pool, int64_t now_us)
{
    if (now_us > pool->mark_us) {
        pool->busy_us += (int64_t)pool->started * (now_us - pool->mark_us);
    }
    pool->mark_us = now_us;
}

void zxb_place_on_start(zxb_place_pool_t *pool, int64_t now_us)
{
    s_busy_mark(pool, now_us);
    pool->started++;
}

void zxb_place_on_result(zxb_place_pool_t *pool, bool started, int64_t now_us)
{
    if (started) {
        s_busy_mark(pool, now_us);
        if (pool->started > 0) {
            pool->started--;
        }
    }
    pool->nres++;
}

bool zxb_place_due(const zxb_place_cfg_t *cfg, const zxb_place_pool_t *pool)
{
    if (!zxb_place_adaptive(cfg)) {
        return false;
    }
    return (pool->run_us <= 0 && pool->nres >= ZXB_PLACE_FIRST) || pool->nres >= ZXB_PLACE_EVERY;
}

uint32_t zxb_place_adapt(const zxb_place_cfg_t *cfg, zxb_place_pool_t *pool, int64_t now_us)
{
    if (!pool->slots || pool->window == 0) {
        return pool->window;
    }
    s_busy_mark(pool, now_us);
    if (pool->nres > 0) {
        /* at least 1 us: STARTED and RESULT read in one loop turn (one
           clock reading) measure 0, and 0 means "not measured yet" */
        double sample = (double)pool->busy_us / (double)pool->nres;
        sample = sample < 1.0 ? 1.0 : sample;
        pool->run_us = pool->run_us > 0 ? 0.5 * pool->run_us + 0.5 * sample : sample;
    } else if (pool->started > 0) {
        /* nothing finished since the last tick: tasks run at least this long */
        double floor_us = (double)pool->busy_us / (double)pool->started;
        if (floor_us > pool->run_us) {
            pool->run_us = floor_us;
        }
    }
    pool->busy_us = 0;
    pool->nres = 0;
    if (pool->run_us <= 0) {
        return pool->window;
    }
    double want =
        (double)pool->slots * cfg->target_ms * 1000.0 / (pool->run_us > 1.0 ? pool->run_us : 1.0);
    uint32_t pf = want >= (double)cfg->max ? cfg->max : (uint32_t)want;
    if (pf < pool->prefetch) {
        pf = pool->prefetch;
    }
    pool->window = pool->slots + pf;
    return pool->window;
}
