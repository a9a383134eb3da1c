/*  zx_waiter.h - the link between futures and the functions that wait on many
    of them (as_completed, wait), as CPython's concurrent.futures does it: a
    waiter (mutex + condition + list of completed futures) is registered on
    every future it watches, and a future's completion appends itself to each
    registered waiter and signals it. Nobody polls.

    Lock order (see zx_client_int.h): future lock, then waiter lock. A future
    notifies its waiters while holding its own lock; waiter code never takes a
    future lock while holding the waiter lock.
*/
#ifndef ZX_WAITER_H
#define ZX_WAITER_H

#include "zx_client_int.h"
#include "zx_list.h"

typedef struct zx__waiter {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* CLOCK_MONOTONIC */
    zx_future_t **done;  /* completed futures, in completion order (borrowed) */
    size_t n_done;       /* entries in done */
    size_t cap;          /* capacity of done: at least the futures registered */
    size_t n_failed;     /* of those, finished with an exception */
} zx__waiter_t;

/* cap: the most futures this waiter will be registered on. 0 or ZX_ENOMEM. */
int zx__waiter_init(zx__waiter_t *w, size_t cap);
void zx__waiter_fini(zx__waiter_t *w);

/* One registration of a waiter on a future: caller-owned storage (an array
   of them per waiter), so registering never allocates and cannot fail. */
typedef struct zx__waiter_link {
    zx__waiter_t *waiter;
    zx__link_t link; /* in the future's list */
    bool linked;
} zx__waiter_link_t;

/* Registers link->waiter = w on f unless f is already done. Returns true if
   registered (f will append itself to w exactly once when it completes),
   false if f was already done (nothing registered). */
bool zx__future_add_waiter(zx_future_t *f, zx__waiter_t *w, zx__waiter_link_t *link);
/* Unregisters link from f (a no-op once f has completed and dropped it). */
void zx__future_remove_waiter(zx_future_t *f, zx__waiter_link_t *link);

/* True if f is FINISHED with an exception (cancelled does not count). */
bool zx__future_failed(zx_future_t *f);

/* The node and pid that produced f's result or error ("" and 0 when unknown);
   borrowed, valid while the caller holds a reference and f is done. */
void zx__future_origin(zx_future_t *f, const char **node, int *pid);

/* An absolute CLOCK_MONOTONIC deadline for timeout seconds from now;
   timeout < 0 gives a deadline that never comes (tv_sec < 0). */
struct timespec zx__deadline(double timeout);
/* Waits on cond until signalled or deadline; returns pthread_cond_*wait's rc. */
int zx__cond_wait_until(pthread_cond_t *cond, pthread_mutex_t *lock,
                        const struct timespec *deadline);
/* Initialises a condition variable on CLOCK_MONOTONIC. */
int zx__cond_init(pthread_cond_t *cond);

#endif
