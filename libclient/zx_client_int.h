/*  zx_client_int.h - internals shared inside libzexec's client side: the
    executor interface (remote and local executors implement it) and the
    future's completion API (executors complete futures; the future core does
    not know about the network).

    Lock order: executor lock, then future lock, then waiter lock. Futures
    never call back into an executor while holding their own lock; user
    callbacks run with no lock held.
*/
#ifndef ZX_CLIENT_INT_H
#define ZX_CLIENT_INT_H

#include "zexec.h"
#include "zx_error.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

/* ---- executors -------------------------------------------------------------- */

typedef struct zx__executor_ops {
    const char *kind; /* "remote" or "local" */
    /* Creates and queues a task; returns a new future (one ref for the caller)
       or NULL with *err set. flags are ZXP_F_* (ZXP_F_CHUNK for map chunks). */
    zx_future_t *(*submit)(zx_executor_t *ex, const char *fn, const void *args, size_t len,
                           const zx_task_opts_t *opts, uint32_t flags, int *err);
    /* Decides a cancel for a future of this executor that was PENDING when
       asked. Returns true if the task will never run; the executor has then
       completed the future as cancelled (zx__future_set_cancelled). With
       terminate, may also kill a running process-pool task (true, future
       cancelled). Called with no lock held; may block for one round trip. */
    bool (*cancel)(zx_executor_t *ex, zx_future_t *f, bool terminate);
    int (*shutdown)(zx_executor_t *ex, bool wait, bool cancel_futures);
    void (*destroy)(zx_executor_t *ex); /* after shutdown(wait); frees ex */
    int (*register_fn)(zx_executor_t *ex, const char *name, zx_task_fn *fn); /* NULL: EINVAL */
    const char *(*endpoint)(zx_executor_t *ex);
    /* Leader/follower (optional; NULL: waiting threads sleep). lead_enter is
       called with a lock held on a future of ex that is not done (so ex is
       valid): true registers the caller as a would-be leader, which the
       executor's destroy waits out. lead is then called with no lock held,
       exactly once after a true lead_enter: it does the executor's I/O on
       this thread until done(arg) holds or until_us (zx__mono_us; < 0:
       none) and returns ZX__LEAD_DONE or ZX__LEAD_TIMEOUT, or ZX__LEAD_BUSY
       when the executor's own thread does the I/O now (the caller then
       sleeps as usual). spin_until_us > 0: this thread is the process's
       spinner (zx_spin.h) and may busy-poll until then before it sleeps; lead
       calls zx__spin_end once, when it stops spinning. */
    bool (*lead_enter)(zx_executor_t *ex);
    int (*lead)(zx_executor_t *ex, bool (*done)(void *arg), void *arg, int64_t until_us,
                int64_t spin_until_us);
} zx__executor_ops_t;

enum { ZX__LEAD_DONE, ZX__LEAD_TIMEOUT, ZX__LEAD_BUSY };

/* Every executor struct starts with this header. */
struct zx_executor {
    const zx__executor_ops_t *ops;
};

/* True if data[0..len) is exactly one well-formed msgpack array: one linear
   scan without allocation, which saves a round trip for a bad call. */
bool zx__is_args_array(const void *data, size_t len);

/* Submit with internal flags (map uses ZXP_F_CHUNK). */
zx_future_t *zx__submit_flags(zx_executor_t *ex, const char *fn, const void *args, size_t len,
                              const zx_task_opts_t *opts, uint32_t flags);
/* The same without checking that args is one msgpack array: for arguments
   this library packed itself (zx_submitf, map's chunks of checked inputs),
   where the check would walk every byte a second time. */
zx_future_t *zx__submit_packed(zx_executor_t *ex, const char *fn, const void *args, size_t len,
                               const zx_task_opts_t *opts, uint32_t flags);

/* zx__set_last_error: zx_error.h. */

/* Constructors used by zx_executor_new. */
zx_executor_t *zx__remote_new(const char *endpoint, const zx_options_t *opts);

/* ---- futures ---------------------------------------------------------------- */

/* A new PENDING future with one reference. ex is borrowed and used only for
   cancel/terminate while the future is not done (executors outlive their
   unresolved futures: shutdown/destroy resolves them first). fn copied. */
zx_future_t *zx__future_new(zx_executor_t *ex, const char *fn, uint64_t seq);
uint64_t zx__future_seq(const zx_future_t *f);
zx_executor_t *zx__future_executor(const zx_future_t *f);
/* If f is not done and its executor can lead (lead_enter above): enters and
   returns the executor, which the caller must then lead (ops->lead) once;
   else NULL. */
zx_executor_t *zx__future_lead_enter(zx_future_t *f);
/* 0: f is done; 1: not done, and its executor (*ex, only to compare: it may
   be gone once f is done) can lead; -1: not done, cannot lead. */
int zx__future_leader(zx_future_t *f, zx_executor_t **ex);

/* Executor-private slot (e.g. the remote executor's pending-table entry). */
void zx__future_set_priv(zx_future_t *f, void *priv);
/* The same for a future that no other thread can see yet (just made by
   zx__future_new, not handed out): without its lock. */
void zx__future_init_priv(zx_future_t *f, void *priv);
void *zx__future_priv(const zx_future_t *f);

/* How many threads wait on f now: asleep in zx_future_result/exception (past
   their spin) or registered by zx_wait/as_completed. For tests, which
   complete a future only once a thread waits on it, instead of sleeping. */
size_t zx__future_waiting(zx_future_t *f);

/* Completion. Each returns true if it changed the state, false if the future
   was already done (first completion wins; later ones are ignored). They
   wake waiters and run done-callbacks with no lock held. */
bool zx__future_set_running(zx_future_t *f);                               /* PENDING -> RUNNING */
bool zx__future_set_result(zx_future_t *f, const void *value, size_t len); /* copies */
/* Takes ownership of value (malloc'd), avoiding a copy. */
bool zx__future_set_result_owned(zx_future_t *f, void *value, size_t len);
bool zx__future_set_exception(zx_future_t *f, int code, const char *type, const char *message,
                              const char *traceback, const char *node, int pid);
/* reason: "" for a plain cancel, or e.g. "terminated while running". */
bool zx__future_set_cancelled(zx_future_t *f, const char *reason);

/* Completes f from a RESULT/WRESULT-style status and payload (ZXP_ST_*):
   OK -> value; errors -> exception decoded from the [type, message,
   traceback] payload (a malformed one still fails the future, with
   ZX_EPROTO); CANCELLED -> cancelled. Returns as zx__future_set_*. */
bool zx__future_complete(zx_future_t *f, int status, const void *payload, size_t len,
                         const char *node, int pid);

/* The attempts a RESULT reports; set before the future completes. */
void zx__future_set_attempts(zx_future_t *f, int attempts);

/* Maps a ZXP_ST_* status to a ZX_E* code. */
int zx__status_code(int status);

#endif
