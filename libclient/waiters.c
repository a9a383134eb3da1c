/*  waiters.c - waiting on many futures at once: zx_as_completed_* and
    zx_wait, as CPython's concurrent.futures does them. One waiter object
    (zx_waiter.h) is registered on every future not yet done; completion
    appends the future to the waiter and signals it, so the waiting thread
    sleeps on one condition variable and is woken by completion, never by a
    polling timer. Futures of any executor mix, since only the future core is
    involved.

    When every future still pending is of one executor that can lead (a
    remote one), the waiting thread leads instead of sleeping at first
    (zx_client_int.h, lead; remote_io.c): it reads that executor's socket
    itself while its I/O thread sleeps, until the condition holds. With
    futures of several executors it sleeps as before: each executor's own
    thread completes its futures.

    Lock order: future lock, then waiter lock (futures notify under their own
    lock). Here the waiter lock is never held while a future lock is taken.
*/
#include "zx_client_int.h"
#include "zx_waiter.h"

#include <czmq.h>
#include <errno.h>
#include <string.h>

/* ---- de-duplication ------------------------------------------------------- */

/* Copies the non-NULL entries of fs into out, each pointer once, in input
   order. Returns how many, or -1 out of memory. Above a handful, a flat
   open-addressing set of pointers (load <= 1/2, freed at once): a zhashx
   allocated and freed an item per future, 12-18% of the client's CPU in
   bench A's as_completed over 200,000 futures (perf). */
static long s_unique(zx_future_t *const *fs, size_t n, zx_future_t **out)
{
    if (n <= 8) {
        /* a hash table costs more than a scan for the common handful */
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            bool seen = !fs[i];
            for (size_t j = 0; j < k && !seen; j++) {
                seen = out[j] == fs[i];
            }
            if (!seen) {
                out[k++] = fs[i];
            }
        }
        return (long)k;
    }
    unsigned bits = 4;
    while (((size_t)1 << bits) < 2 * n) {
        bits++;
    }
    size_t mask = ((size_t)1 << bits) - 1;
    zx_future_t **set = calloc(mask + 1, sizeof *set);
    if (!set) {
        return -1;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        zx_future_t *f = fs[i];
        if (!f) {
            continue;
        }
        size_t h = (size_t)(((uintptr_t)f >> 4) * 0x9E3779B97F4A7C15ull >> (64 - bits));
        while (set[h] && set[h] != f) {
            h = (h + 1) & mask;
        }
        if (!set[h]) {
            set[h] = f;
            out[k++] = f;
        }
    }
    free(set);
    return (long)k;
}

/* ---- leading ------------------------------------------------------------------ */

/* Whether the futures fs[0..n) not done yet are all of one executor that can
   lead (remote). Done ones (NULL executor) do not count. */
static bool s_one_leader(zx_future_t *const *fs, size_t n)
{
    zx_executor_t *one = NULL;
    for (size_t i = 0; i < n; i++) {
        zx_executor_t *ex;
        int rc = zx__future_leader(fs[i], &ex);
        if (rc < 0 || (rc > 0 && one && ex != one)) {
            return false;
        }
        if (rc > 0) {
            one = ex;
        }
    }
    return one != NULL;
}

/* Enters the executor of the first future from *probe on that is not done
   (moving *probe past done ones: they stay done) and leads it until
   ready(arg) or deadline. ZX__LEAD_BUSY when nothing could be led. */
static int s_lead(zx_future_t *const *fs, size_t n, size_t *probe, bool (*ready)(void *), void *arg,
                  const struct timespec *deadline)
{
    for (; *probe < n; (*probe)++) {
        zx_executor_t *ex = zx__future_lead_enter(fs[*probe]);
        if (ex) {
            int64_t until = deadline->tv_sec < 0
                                ? -1
                                : (int64_t)deadline->tv_sec * 1000000 + deadline->tv_nsec / 1000;
            return ex->ops->lead(ex, ready, arg, until, 0);
        }
    }
    return ZX__LEAD_BUSY;
}

/* ---- as_completed --------------------------------------------------------- */

struct zx_as_completed {
    zx_future_t **fs;         /* unique futures, one reference each */
    zx__waiter_link_t *links; /* per future; linked ones are registered */
    size_t n;
    zx_future_t **early; /* done at the call, in input order (borrowed from fs) */
    size_t n_early, early_pos;
    zx__waiter_t waiter;
    size_t late_pos;  /* next index into waiter.done */
    size_t n_pending; /* registered at the call */
    bool lead;        /* they are all of one executor that can lead (s_one_leader) */
    size_t probe;     /* fs before this index are done (s_lead) */
    struct timespec deadline;
    int status;
};

zx_as_completed_t *zx_as_completed_new(zx_future_t *const *fs, size_t n, double timeout)
{
    if (!fs && n) {
        zx__set_last_error(ZX_EINVAL);
        return NULL;
    }
    zx_as_completed_t *it = calloc(1, sizeof *it);
    if (!it) {
        goto fail;
    }
    it->deadline = zx__deadline(timeout);
    it->fs = calloc(n ? n : 1, sizeof *it->fs);
    it->early = calloc(n ? n : 1, sizeof *it->early);
    it->links = calloc(n ? n : 1, sizeof *it->links);
    if (!it->fs || !it->early || !it->links) {
        goto fail_it;
    }
    long k = s_unique(fs, n, it->fs);
    if (k < 0 || zx__waiter_init(&it->waiter, (size_t)k) != ZX_OK) {
        goto fail_it;
    }
    it->n = (size_t)k;
    for (size_t i = 0; i < it->n; i++) {
        zx_future_ref(it->fs[i]);
        if (zx__future_add_waiter(it->fs[i], &it->waiter, &it->links[i])) {
            it->n_pending++;
        } else {
            it->early[it->n_early++] = it->fs[i];
        }
    }
    it->lead = it->n_pending > 0 && s_one_leader(it->fs, it->n);
    return it;

fail_it:
    free(it->fs);
    free(it->early);
    free(it->links);
    free(it);
fail:
    zx__set_last_error(ZX_ENOMEM);
    return NULL;
}

/* Whether a future completed since the last next(). */
static bool s_ac_ready(void *arg)
{
    zx_as_completed_t *it = arg;
    pthread_mutex_lock(&it->waiter.lock);
    bool ready = it->late_pos < it->waiter.n_done;
    pthread_mutex_unlock(&it->waiter.lock);
    return ready;
}

zx_future_t *zx_as_completed_next(zx_as_completed_t *it)
{
    if (!it) {
        return NULL;
    }
    if (it->early_pos < it->n_early) {
        return it->early[it->early_pos++];
    }
    if (it->status != ZX_OK || it->late_pos >= it->n_pending) {
        return NULL;
    }
    if (it->lead && !s_ac_ready(it)) {
        s_lead(it->fs, it->n, &it->probe, s_ac_ready, it, &it->deadline);
    }
    zx_future_t *f = NULL;
    pthread_mutex_lock(&it->waiter.lock);
    while (it->late_pos >= it->waiter.n_done) {
        if (zx__cond_wait_until(&it->waiter.cond, &it->waiter.lock, &it->deadline) == ETIMEDOUT &&
            it->late_pos >= it->waiter.n_done) {
            it->status = ZX_ETIMEOUT;
            break;
        }
    }
    if (it->status == ZX_OK) {
        f = it->waiter.done[it->late_pos++];
    }
    pthread_mutex_unlock(&it->waiter.lock);
    return f;
}

int zx_as_completed_status(zx_as_completed_t *it)
{
    return it ? it->status : ZX_EINVAL;
}

void zx_as_completed_destroy(zx_as_completed_t **it_p)
{
    if (!it_p || !*it_p) {
        return;
    }
    zx_as_completed_t *it = *it_p;
    *it_p = NULL;
    for (size_t i = 0; i < it->n; i++) {
        zx__future_remove_waiter(it->fs[i], &it->links[i]);
    }
    /* no future can reach the waiter any more */
    for (size_t i = 0; i < it->n; i++) {
        zx_future_unref(&it->fs[i]);
    }
    zx__waiter_fini(&it->waiter);
    free(it->fs);
    free(it->early);
    free(it->links);
    free(it);
}

/* ---- wait ----------------------------------------------------------------- */

/* Whether the return_when condition holds for these counts. */
static bool s_condition(zx_return_when_t when, size_t n, size_t n_done, size_t n_failed)
{
    switch (when) {
    case ZX_FIRST_COMPLETED: return n_done > 0 || n == 0;
    case ZX_FIRST_EXCEPTION: return n_failed > 0 || n_done == n;
    default: return n_done == n;
    }
}

/* zx_wait's condition, for a leader (s_lead). */
typedef struct {
    zx__waiter_t *w;
    zx_return_when_t when;
    size_t n, d, fl; /* futures, and those done / failed before registering */
} s_wait_t;

static bool s_wait_ready(void *arg)
{
    s_wait_t *sw = arg;
    pthread_mutex_lock(&sw->w->lock);
    bool ready = s_condition(sw->when, sw->n, sw->d + sw->w->n_done, sw->fl + sw->w->n_failed);
    pthread_mutex_unlock(&sw->w->lock);
    return ready;
}

int zx_wait(zx_future_t *const *fs, size_t n, double timeout, zx_return_when_t when,
            zx_future_t **done, size_t *n_done, zx_future_t **not_done, size_t *n_not_done)
{
    if ((!fs && n) || when < ZX_FIRST_COMPLETED || when > ZX_ALL_COMPLETED) {
        return ZX_EINVAL;
    }
    struct timespec deadline = zx__deadline(timeout);
    zx_future_t **u = calloc(n ? n : 1, sizeof *u);
    zx__waiter_link_t *links = calloc(n ? n : 1, sizeof *links);
    long k = u && links ? s_unique(fs, n, u) : -1;
    if (k < 0) {
        free(u);
        free(links);
        return ZX_ENOMEM;
    }
    size_t m = (size_t)k;
    /* The caller's references keep fs alive for the call: no refs taken. */
    size_t d0 = 0, f0 = 0;
    for (size_t i = 0; i < m; i++) {
        if (zx_future_done(u[i])) {
            d0++;
            f0 += zx__future_failed(u[i]);
        }
    }
    int rc = ZX_OK;
    if (!s_condition(when, m, d0, f0)) {
        zx__waiter_t w;
        if (zx__waiter_init(&w, m) != ZX_OK) {
            free(u);
            free(links);
            return ZX_ENOMEM;
        }
        /* Re-count while registering: a future may finish between the scan
           above and its registration; then it is counted here, not notified. */
        size_t d = 0, fl = 0;
        for (size_t i = 0; i < m; i++) {
            if (!zx__future_add_waiter(u[i], &w, &links[i])) {
                d++;
                fl += zx__future_failed(u[i]);
            }
        }
        if (s_one_leader(u, m)) {
            s_wait_t sw = {&w, when, m, d, fl};
            size_t probe = 0;
            if (!s_wait_ready(&sw)) {
                s_lead(u, m, &probe, s_wait_ready, &sw, &deadline);
            }
        }
        pthread_mutex_lock(&w.lock);
        while (!s_condition(when, m, d + w.n_done, fl + w.n_failed)) {
            if (zx__cond_wait_until(&w.cond, &w.lock, &deadline) == ETIMEDOUT) {
                break;
            }
        }
        pthread_mutex_unlock(&w.lock);
        for (size_t i = 0; i < m; i++) {
            zx__future_remove_waiter(u[i], &links[i]);
        }
        zx__waiter_fini(&w);
    }
    /* The sets reflect the states now, which can only have moved forward. */
    size_t nd = 0, nn = 0, nf = 0;
    for (size_t i = 0; i < m; i++) {
        if (zx_future_done(u[i])) {
            nf += zx__future_failed(u[i]);
            if (done) {
                done[nd] = u[i];
            }
            nd++;
        } else {
            if (not_done) {
                not_done[nn] = u[i];
            }
            nn++;
        }
    }
    if (n_done) {
        *n_done = nd;
    }
    if (n_not_done) {
        *n_not_done = nn;
    }
    rc = s_condition(when, m, nd, nf) ? ZX_OK : ZX_ETIMEOUT;
    free(u);
    free(links);
    return rc;
}
