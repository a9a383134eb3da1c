/*  zexec.h - the public C API of libzexec.

    Python's concurrent.futures across machines: executors hand out futures at
    once; the calls run on worker nodes (remote executors) or on threads of
    this process (local executors); as_completed and wait take any mix of them.

    Conventions: functions that can fail return ZX_OK (0) or a negative ZX_E*
    code (zx_strerror names it); constructors return NULL on failure. Timeouts
    are seconds as double; ZX_FOREVER waits without limit. Objects are opaque;
    zx_<thing>_destroy(&p) accepts NULL and sets *p to NULL.
*/
#ifndef ZEXEC_H
#define ZEXEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "zexec_version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Marks the public API: libzexec is built with hidden visibility, so only
   the functions declared with ZX_EXPORT in zexec.h and zexec_worker.h are
   exported (abi/libzexec.symbols lists them; a CTest test compares). */
#define ZX_EXPORT __attribute__((visibility("default")))

#define ZX_FOREVER (-1.0)

/* Default loopback endpoints of zexec-broker. */
#define ZX_DEFAULT_CLIENT_ENDPOINT "tcp://127.0.0.1:5570"
#define ZX_DEFAULT_WORKER_ENDPOINT "tcp://127.0.0.1:5571"

/* Result codes. A task's failure kinds (ZX_ERAISED .. ZX_ENOTALLOWED) also
   appear as zx_error_t.code. */
enum {
    ZX_OK = 0,
    ZX_ETIMEOUT = -1,     /* a wait ran out of time; the task goes on */
    ZX_ECANCELLED = -2,   /* the future was cancelled (or terminated) */
    ZX_ERAISED = -3,      /* the task failed: see zx_future_exception() */
    ZX_ESHUTDOWN = -4,    /* the executor is shut down */
    ZX_EINVAL = -5,       /* bad argument */
    ZX_ENOMEM = -6,       /* out of memory */
    ZX_ECONN = -7,        /* the broker is unreachable */
    ZX_ENOFUNC = -8,      /* no worker offers the function */
    ZX_ETIMELIMIT = -9,   /* the task ran past its time limit */
    ZX_ECRASHED = -10,    /* the process running the task died */
    ZX_EWORKERLOST = -11, /* the worker node was lost and retries ran out */
    ZX_EREJECTED = -12,   /* the broker refused the task (quota, bad request) */
    ZX_EMEMORY = -13,     /* the task exceeded its process memory limit */
    ZX_ENOTALLOWED = -14, /* the function may not run there (pool, exec off) */
    ZX_EPROTO = -15,      /* a malformed message or value */
    ZX_EEND = -16,        /* an iterator has nothing more to yield */
    ZX_EDETACHED = -17,   /* the executor detached: fetch the result with zx_job_attach */
    ZX_EDONE = -18,       /* a job has no more results: every one was yielded */
    ZX_ENOJOB = -19,      /* the broker holds no job of that id */
};

/* Returns a static English description of a ZX_* code. */
ZX_EXPORT const char *zx_strerror(int code);

typedef enum { ZX_PENDING = 0, ZX_RUNNING = 1, ZX_FINISHED = 2, ZX_CANCELLED = 3 } zx_state_t;

typedef enum { ZX_POOL_ANY = 0, ZX_POOL_THREAD = 1, ZX_POOL_PROCESS = 2 } zx_pool_t;

typedef enum {
    ZX_FIRST_COMPLETED = 0,
    ZX_FIRST_EXCEPTION = 1,
    ZX_ALL_COMPLETED = 2
} zx_return_when_t;

/* The exception a task ended with. Owned by its future; valid while the
   caller holds a reference to the future. */
typedef struct zx_error {
    int code;              /* ZX_ERAISED for an error the function raised, else the kind */
    const char *type;      /* exception type name, e.g. "ValueError", "TimeLimitError" */
    const char *message;   /* human-readable message */
    const char *traceback; /* traceback or context; "" when none */
    const char *node;      /* node that ran the task; "" when none did */
    int pid;               /* pid that ran the task; 0 when none did */
} zx_error_t;

typedef struct zx_executor zx_executor_t;
typedef struct zx_future zx_future_t;
typedef struct zx_as_completed zx_as_completed_t;
typedef struct zx_map zx_map_t;
typedef struct zx_task zx_task_t;

/* Executor options. All-zero means every default. */
typedef struct zx_options {
    const char *name;      /* client name shown in broker logs; default "client" */
    double heartbeat;      /* seconds between heartbeats; default 1.0 */
    int liveness;          /* missed heartbeats before the broker counts as lost; default 3 */
    double broker_timeout; /* unresolved futures fail with ZX_ECONN after the broker has
                              been unreachable this long; default 60 s */
    size_t max_batch;      /* most tasks per SUBMIT message; default 256 */
    /* Send window: argument bytes sent to the broker and not yet resolved.
       Beyond it further tasks wait in the client (in submit order, still
       cancellable at once) until results make room; a task larger than the
       window goes alone. Keeps a burst of large arguments from being parked
       in the broker's memory. Default 64 MiB. */
    size_t max_inflight_bytes;
    /* Local cluster (endpoint NULL) only: */
    int local_workers;          /* worker processes; default 2 */
    int local_threads;          /* thread-pool size per worker; default: cores */
    int local_procs;            /* process-pool size per worker; default: cores */
    const char *bin_dir;        /* where zexec-broker and zexec-worker are; default: $ZEXEC_BIN_DIR,
                                   then the install prefix, then $PATH */
    const char *const *plugins; /* NULL-terminated plugin paths given to each local worker */
    bool allow_exec;            /* local workers get --allow-exec */
    /* Security (docs/security.md). CURVE: both or neither. */
    const char *server_key;  /* the broker's public certificate file */
    const char *key;         /* this client's secret certificate file */
    const char *secret_file; /* shared secret for signing; default $ZEXEC_SECRET */
    /* Detached jobs (docs/guide.md "Detached jobs"): the executor's session is
       a job whose tasks and results stay at the broker when it leaves (see
       zx_executor_detach); job_name names it (default: name). */
    bool detach;
    const char *job_name;
} zx_options_t;

/* Per-task options for zx_submit_opts. All-zero means every default. */
typedef struct zx_task_opts {
    zx_pool_t pool;    /* which pool may run it */
    int priority;      /* -128..127; higher runs first; default 0 */
    int retries;       /* re-runs after a worker is lost; 0 means default (3); -1 means none */
    double time_limit; /* seconds; 0 means the worker's default */
} zx_task_opts_t;

/* ---- executors ------------------------------------------------------------ */

/* Connects to the broker's client endpoint, e.g. "tcp://10.0.0.5:5570". With
   endpoint NULL, starts a local cluster (one zexec-broker and opts->local_workers
   zexec-worker child processes on loopback, free ports) owned by the executor
   and stopped by its destroy. opts may be NULL. Returns NULL on failure.
   Connecting never blocks: an unreachable broker shows as futures that stay
   PENDING, then fail with ZX_ECONN after opts->broker_timeout. */
ZX_EXPORT zx_executor_t *zx_executor_new(const char *endpoint, const zx_options_t *opts);

/* An in-process thread pool of max_workers threads (<= 0: cores) running the
   functions registered with zx_executor_register. Its futures mix freely with
   remote ones. */
ZX_EXPORT zx_executor_t *zx_executor_new_local(int max_workers);

/* Local executors only: registers fn under name. ZX_EINVAL on a remote one. */
/* A task function: reads its arguments (a msgpack array), packs exactly one
   result value into result and returns ZX_OK, or returns zx_raise(...).
   Shared by local executors and workers (zexec_worker.h). */
typedef int zx_task_fn(zx_task_t *task, const msgpack_object *args, msgpack_packer *result);
ZX_EXPORT int zx_executor_register(zx_executor_t *ex, const char *name, zx_task_fn *fn);

/* Inside a task function: records an exception of the given type and
   printf-style message, and returns ZX_ERAISED for the function to return. */
ZX_EXPORT int zx_raise(zx_task_t *task, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Inside a task function: attaches a traceback/context string to the error. */
ZX_EXPORT void zx_task_set_traceback(zx_task_t *task, const char *text);
ZX_EXPORT const char *zx_task_fn_name(const zx_task_t *task);
/* Seconds left before the task's time limit, or ZX_FOREVER when it has none. */
ZX_EXPORT double zx_task_time_left(const zx_task_t *task);
/* True once the task's time limit has passed: long thread-pool functions
   should check it and return early (their future already failed). */
ZX_EXPORT bool zx_task_expired(const zx_task_t *task);

/* Stops accepting work. cancel_futures cancels every task not yet started;
   wait blocks until every other task is done, except on one of the executor's
   own threads (a done-callback it runs, a local executor's task), where it logs
   a warning and does not wait. Idempotent. */
ZX_EXPORT int zx_executor_shutdown(zx_executor_t *ex, bool wait, bool cancel_futures);

/* shutdown(wait=true, cancel_futures=false), then frees the executor (and stops
   its local cluster). Futures still referenced stay valid. */
ZX_EXPORT void zx_executor_destroy(zx_executor_t **ex_p);

/* The local cluster's client endpoint, or the endpoint given; borrowed. */
ZX_EXPORT const char *zx_executor_endpoint(zx_executor_t *ex);

/* ---- submitting ----------------------------------------------------------- */

/* Submits fn with args, one msgpack-encoded array of args_len bytes (copied).
   Returns a new future (one reference, the caller's) or NULL with errno-like
   detail from zx_last_error(): ZX_ESHUTDOWN, ZX_EINVAL, ZX_ENOMEM. Never blocks
   on the network. */
ZX_EXPORT zx_future_t *zx_submit(zx_executor_t *ex, const char *fn, const void *args,
                                 size_t args_len);

/* As zx_submit, packing the arguments from fmt: i int, I int64_t, u unsigned,
   U uint64_t, d double, b bool (int), s C string, y bytes (const void *, size_t),
   n nil, m raw msgpack (const void *, size_t) inserted as one argument. */
ZX_EXPORT zx_future_t *zx_submitf(zx_executor_t *ex, const char *fn, const char *fmt, ...);

ZX_EXPORT zx_future_t *zx_submit_opts(zx_executor_t *ex, const char *fn, const void *args,
                                      size_t args_len, const zx_task_opts_t *opts);

/* The code that made the last NULL-returning call of this thread fail. */
ZX_EXPORT int zx_last_error(void);

/* ---- futures -------------------------------------------------------------- */

ZX_EXPORT zx_state_t zx_future_state(zx_future_t *f);
ZX_EXPORT bool zx_future_done(zx_future_t *f);    /* FINISHED or CANCELLED */
ZX_EXPORT bool zx_future_running(zx_future_t *f); /* a worker has started it */
ZX_EXPORT bool zx_future_cancelled(zx_future_t *f);

/* Cancels a task that has not started: true if it is now CANCELLED (it will
   never run), false if it is running or done. May take one round trip to the
   broker, which decides races with dispatch. */
ZX_EXPORT bool zx_future_cancel(zx_future_t *f);

/* Beyond Python: as cancel for a pending task; for a task running in a process
   pool, kills its child and the future ends CANCELLED (reason: terminated while
   running). False for thread-pool tasks and finished futures. */
ZX_EXPORT bool zx_future_terminate(zx_future_t *f);

/* Waits at most timeout. ZX_OK: *value and *value_len (either may be NULL) point at
   the msgpack-encoded result, owned by the future. ZX_ETIMEOUT, ZX_ECANCELLED, or
   ZX_ERAISED (any failure; zx_future_exception tells which). */
ZX_EXPORT int zx_future_result(zx_future_t *f, double timeout, const void **value,
                               size_t *value_len);

/* Waits at most timeout. NULL when the task returned a value; else its error.
   On timeout or cancellation returns a static error with code ZX_ETIMEOUT or
   ZX_ECANCELLED (types "TimeoutError", "CancelledError"). */
ZX_EXPORT const zx_error_t *zx_future_exception(zx_future_t *f, double timeout);

/* Calls fn(f, arg) once when f is done, after its result is visible, on the
   thread that completes it: a remote executor's I/O thread; a local executor's
   pool thread, or its timer thread when the task's time limit fails it; or the
   cancelling thread. If f is already done, calls fn at once on the caller's
   thread. fn must not block for long. fn may call any zexec function except
   destroying the executor that runs it; zx_executor_shutdown(ex, true, ...)
   called from it logs a warning and does not wait. */
typedef void zx_done_fn(zx_future_t *f, void *arg);
ZX_EXPORT int zx_future_add_done_callback(zx_future_t *f, zx_done_fn *fn, void *arg);

/* User data slot (the seed's future -> url dict idiom). Not freed by zexec. */
ZX_EXPORT void zx_future_set_data(zx_future_t *f, void *data);
ZX_EXPORT void *zx_future_data(zx_future_t *f);

/* The name of the function the future runs; borrowed. */
ZX_EXPORT const char *zx_future_fn(zx_future_t *f);

/* Where a done future ran: the worker node's name and the pid of the worker
   process or of its process-pool child; "local" and this process's pid for
   a local executor; "" and 0 when it ran nowhere (cancelled while queued) or
   is not done yet. The string is borrowed and lives as long as the future. */
ZX_EXPORT const char *zx_future_node(zx_future_t *f);
ZX_EXPORT int zx_future_pid(zx_future_t *f);
/* Remote executors: how many times the broker dispatched the task before it
   completed (1, or more when a worker was lost while running it and the
   task was re-run); 0 when not done, never dispatched, or local. */
ZX_EXPORT int zx_future_attempts(zx_future_t *f);

ZX_EXPORT zx_future_t *zx_future_ref(zx_future_t *f);
ZX_EXPORT void zx_future_unref(zx_future_t **f_p);

/* ---- waiting on many ------------------------------------------------------ */

/* Yields the futures as they complete (already-done ones first, duplicates
   once). timeout counts from this call. The iterator holds references and
   is used by one thread at a time. */
ZX_EXPORT zx_as_completed_t *zx_as_completed_new(zx_future_t *const *fs, size_t n, double timeout);
/* The next completed future (borrowed: valid while the iterator lives, or
   take a ref), or NULL when all were yielded or time ran out. */
ZX_EXPORT zx_future_t *zx_as_completed_next(zx_as_completed_t *it);
ZX_EXPORT int zx_as_completed_status(zx_as_completed_t *it); /* ZX_OK or ZX_ETIMEOUT */
ZX_EXPORT void zx_as_completed_destroy(zx_as_completed_t **it_p);

/* Waits until the condition holds or timeout. done and not_done are arrays of
   at least n entries (either may be NULL); they receive borrowed pointers from
   fs, duplicates once. ZX_OK when the condition holds, ZX_ETIMEOUT otherwise
   (the sets are filled either way). */
ZX_EXPORT int zx_wait(zx_future_t *const *fs, size_t n, double timeout, zx_return_when_t when,
                      zx_future_t **done, size_t *n_done, zx_future_t **not_done,
                      size_t *n_not_done);

/* ---- map ------------------------------------------------------------------ */

/* A map, like an as_completed iterator, is used by one thread at a time.
   Calls fn on each args[i] (msgpack arrays, borrowed until zx_map_destroy),
   chunksize inputs per task (<= 1: one each), keeping a bounded window of tasks
   in flight. timeout counts from this call (ZX_FOREVER: none). */
ZX_EXPORT zx_map_t *zx_map_new(zx_executor_t *ex, const char *fn, const void *const *args,
                               const size_t *args_len, size_t n, size_t chunksize, double timeout);

/* Generator variant: next(arg, &buf, &len) returns 1 and sets one msgpack
   argument array (copied by zexec at once), 0 at the end, or < 0 to stop the
   map with that error. */
typedef int zx_map_gen_fn(void *arg, const void **args, size_t *args_len);
ZX_EXPORT zx_map_t *zx_map_new_gen(zx_executor_t *ex, const char *fn, zx_map_gen_fn *next,
                                   void *arg, size_t chunksize, double timeout);

/* The next result in input order. ZX_OK with *value (owned by the map, valid
   until the next call); ZX_EEND after the last; ZX_ETIMEOUT; ZX_ERAISED (then
   zx_map_exception tells what; the map stops there, as Python's does). */
ZX_EXPORT int zx_map_next(zx_map_t *m, const void **value, size_t *value_len);
ZX_EXPORT const zx_error_t *zx_map_exception(zx_map_t *m);
ZX_EXPORT void zx_map_destroy(zx_map_t **m_p); /* cancels what is still pending */

/* ---- detached jobs ---------------------------------------------------------- */

/* A job id: 32 lower-case hex digits (the detached executor's session id). */
#define ZX_JOB_ID_LEN 32

typedef struct zx_job zx_job_t;

/* A job as the broker reports it (zx_job_info, zx_jobs_list). */
typedef struct zx_job_info {
    char id[ZX_JOB_ID_LEN + 1];
    char name[256];
    char state[16]; /* "open" (its executor is connected), "detached", "done" (every task
                       has a result), "cancelled", "expired" */
    uint64_t submitted, queued, running;
    uint64_t done;       /* results arrived */
    uint64_t failed;     /* of done, those that did not return a value */
    uint64_t held;       /* results kept at the broker, not yet acknowledged by a fetcher */
    uint64_t held_bytes; /* their size */
    uint64_t acked;      /* results fetched and acknowledged (then forgotten by the broker) */
    uint64_t next;       /* the highest completion index so far */
    int64_t created;     /* unix seconds */
    int64_t expires;     /* unix seconds: held results are dropped after this */
} zx_job_info_t;

/* One result of a job (zx_job_next). Pointers are owned by the job and
   valid until the next zx_job_next or zx_job_destroy. */
typedef struct zx_job_result {
    uint64_t seq;            /* the task's number in its job: 1, 2, ... in submit order */
    uint64_t index;          /* its completion index: 1, 2, ... in the order results arrived */
    int status;              /* ZX_OK, or the failure's code (ZX_ERAISED, ZX_ECANCELLED...) */
    const void *value;       /* ZX_OK: the msgpack-encoded result */
    size_t value_len;        /* its length */
    const zx_error_t *error; /* not ZX_OK: what it failed with; else NULL */
    const char *node;        /* where it ran; "" when nowhere */
    int pid;
    int attempts;
} zx_job_result_t;

/* An executor made with opts->detach: waits at most timeout until every task
   submitted so far is ACCEPTED (durable at the broker), then leaves without
   cancelling anything and writes the job id to id. Futures of ex still
   pending end with ZX_EDETACHED ("DetachedError"); tasks submitted during
   the call that never reached the broker end cancelled (they are not in the
   job). The executor then accepts no more tasks: destroy it. ZX_ETIMEOUT:
   nothing changed, the executor stays usable (call again). ZX_EINVAL: not a
   detached executor, or called from one of its done-callbacks; ZX_ESHUTDOWN:
   already detached or destroyed. */
ZX_EXPORT int zx_executor_detach(zx_executor_t *ex, double timeout, char id[ZX_JOB_ID_LEN + 1]);

/* The job id of an executor made with opts->detach, known from its
   creation (the session id: the broker keeps the job from its first
   accepted task, before zx_executor_detach): e.g. to cancel the job with
   zx_job_attach + zx_job_cancel when the program is interrupted before it
   detached. Writes 32 hex digits and a NUL to id; the same id
   zx_executor_detach gives. ZX_OK, or ZX_EINVAL: not a detached (remote)
   executor. */
ZX_EXPORT int zx_executor_job_id(zx_executor_t *ex, char id[ZX_JOB_ID_LEN + 1]);

/* Attaches to a job the broker at endpoint holds, from any process or host:
   its own connection (opts: the security fields, name, heartbeat and
   broker_timeout, which bounds this call, default 10 s, and the broker's
   silence before ZX_ECONN later, default 60 s). NULL with
   zx_last_error(): ZX_ENOJOB (no such job), ZX_ECONN (no broker answered),
   ZX_EINVAL (bad id or options). A job handle is used by one thread at a
   time, as an iterator is. */
ZX_EXPORT zx_job_t *zx_job_attach(const char *endpoint, const char *job_id,
                                  const zx_options_t *opts);

/* The job's progress now. ZX_OK, ZX_ETIMEOUT, ZX_ENOJOB (the broker no
   longer holds it: finished and every result acknowledged, or expired). */
ZX_EXPORT int zx_job_info(zx_job_t *job, double timeout, zx_job_info_t *info);

/* The next result as completed, waiting at most timeout: ZX_OK and *r;
   ZX_ETIMEOUT; ZX_EDONE when every result has been yielded and no more can
   come (the job is done, cancelled or expired); ZX_ECONN when the broker
   stopped answering. A result is acknowledged to the broker (which then
   forgets it) only once the caller has had it: at the next call or
   zx_job_destroy. A consumer killed midway loses nothing; the next one
   attached gets the unacknowledged results again (at-least-once). */
ZX_EXPORT int zx_job_next(zx_job_t *job, double timeout, zx_job_result_t *r);

/* Acknowledgement by hand: with on false, zx_job_next no longer
   acknowledges what it yielded; the caller acknowledges each result it has
   kept with zx_job_ack (e.g. after printing results it held back to show
   them in seq order). Results never acknowledged are yielded again to the
   next handle. ZX_OK or ZX_EINVAL. */
ZX_EXPORT int zx_job_autoack(zx_job_t *job, bool on);
ZX_EXPORT int zx_job_ack(zx_job_t *job, uint64_t seq);

/* One future per task of the job whose result has not been acknowledged, in
   seq order (*fs malloc'd, free() it; each future one reference, the
   caller's). They complete as results arrive, from a background thread
   (done-callbacks run there), so zx_as_completed and zx_wait work on them;
   each result is acknowledged once its future completes; when the broker
   stays silent for broker_timeout they fail with ZX_ECONN. A future whose
   result an earlier consumer already acknowledged, or whose task was
   cancelled, ends CANCELLED once the job is finished. The futures do not
   cancel their tasks (use zx_job_cancel). Called once per handle, and not
   mixed with zx_job_next: ZX_EINVAL. ZX_ENOMEM, ZX_ETIMEOUT, ZX_ENOJOB. */
ZX_EXPORT int zx_job_futures(zx_job_t *job, double timeout, zx_future_t ***fs, size_t *n);

/* Cancels the job: its queued tasks are dropped, running ones terminated,
   results already held stay fetchable. ZX_OK, ZX_ETIMEOUT, ZX_ENOJOB. */
ZX_EXPORT int zx_job_cancel(zx_job_t *job, double timeout);

/* Every job the broker at endpoint holds: *infos malloc'd (free() it; NULL
   when none), *n of them. ZX_OK, ZX_ECONN (no answer within timeout;
   ZX_FOREVER: opts->broker_timeout, default 10 s), ZX_EINVAL, ZX_ENOMEM. */
ZX_EXPORT int zx_jobs_list(const char *endpoint, const zx_options_t *opts, double timeout,
                           zx_job_info_t **infos, size_t *n);

/* Acknowledges the last result zx_job_next yielded, says BYE and frees the
   handle. Futures from zx_job_futures not yet complete end with
   ZX_ESHUTDOWN; the job itself goes on at the broker. Accepts NULL. */
ZX_EXPORT void zx_job_destroy(zx_job_t **job_p);

#ifdef __cplusplus
}
#endif
#endif
