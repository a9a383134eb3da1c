/*  zxb.h - zexec-broker internals shared by its files: configuration, the
    records for clients, workers, functions and tasks, and the scheduling
    structures of queue.c (described at the top of queue.c).

    The broker is one thread; nothing here is locked. Records point at each
    other freely; queue.c owns tasks, functions and queues; the broker
    record, the sockets and what each command does are in the files that
    zxb_broker.h lists (broker.c, client.c, workers.c, dispatch.c, tasks.c,
    status.c, metrics.c); placement.c (zxb_place.h) is the placement policy.
*/
#ifndef ZXB_H
#define ZXB_H

#include "zx_list.h"
#include "zx_proto.h"
#include "zxb_place.h"

#include <stdbool.h>
#include <stdint.h>

/* ---- configuration (main.c fills it from flags) ----------------------------- */

typedef struct {
    const char *clients_ep;
    const char *workers_ep;
    uint32_t heartbeat_ms;
    uint32_t liveness;
    int64_t nofunc_grace_ms;
    int64_t client_timeout_ms; /* recovered tasks wait this long for their client */
    uint64_t max_queued;
    uint64_t max_queued_bytes;
    uint64_t max_waiting_bytes; /* --max-results-waiting: result bytes a client has not read */
    int retries;                /* default retries of a task after its worker is lost */
    double prefetch_target_ms;  /* adaptive prefetch: queue this much short work per slot; 0: off */
    uint32_t prefetch_max;      /* adaptive prefetch: most tasks beyond the slots, per pool */
    uint64_t prefetch_bytes;    /* adaptive prefetch: argument bytes in flight per pool
                                   beyond which only the announced window applies */
    double steal_after_ms;      /* a task prefetched and not started this long may be
                                   withdrawn for an idle slot elsewhere */
    bool insecure;
    int verbose;              /* 0 quiet (warnings), 1 normal, 2 verbose */
    const char *metrics_addr; /* Prometheus HTTP endpoint, HOST:PORT; NULL: none */
    /* durable jobs (jobs.c, durable.c) */
    const char *journal_dir; /* --journal; NULL: nothing is journaled */
    int fsync_policy;        /* --fsync: zxb_fsync_t */
    uint32_t fsync_interval_ms;
    int64_t job_retention_s; /* --job-retention: a job is dropped this long after its last
                                activity */
    uint64_t job_max_bytes;  /* --job-max-bytes: held result bytes per job */
    uint64_t max_jobs;       /* --max-jobs: jobs a HELLO may bring the count to */
    /* a pair of brokers (pair.c, standby.c) */
    const char *peer;        /* --peer; NULL: a broker alone */
    bool pair_primary;       /* --primary (else --backup) */
    uint64_t snapshot_bytes; /* --journal-snapshot: least journal growth between snapshots */
} zxb_config_t;

/* metrics.c: the Prometheus endpoint. new: NULL on a bad or refused
   address (logged). publish: takes text (malloc'd) as the page to serve. */
typedef struct zxb_metrics zxb_metrics_t;
zxb_metrics_t *zxb_metrics_new(const char *addr, bool insecure);
bool zxb_metrics_addr_ok(const char *addr); /* HOST:PORT, IPv4 or "*" */
void zxb_metrics_destroy(zxb_metrics_t **self_p);
void zxb_metrics_publish(zxb_metrics_t *self, char *text, size_t len);

/* Log helpers: what happened to whom, at the level the operator chose. */
extern int zxb_log_level;
#define ZXB_INFO(...)                                                                              \
    do {                                                                                           \
        if (zxb_log_level >= 1) {                                                                  \
            zsys_info(__VA_ARGS__);                                                                \
        }                                                                                          \
    } while (0)
#define ZXB_DEBUG(...)                                                                             \
    do {                                                                                           \
        if (zxb_log_level >= 2) {                                                                  \
            zsys_info(__VA_ARGS__);                                                                \
        }                                                                                          \
    } while (0)

/* security.c: the one place that decides whether an endpoint may be bound.
   0: bind it; -1: refuse (the reason is logged). */
int zxb_bind_check(const char *endpoint, bool insecure);

/* ---- records ------------------------------------------------------------------ */

typedef struct zxb_task zxb_task_t;
typedef struct zxb_client zxb_client_t;
typedef struct zxb_worker zxb_worker_t;
typedef struct zxb_fn zxb_fn_t;
typedef struct zxb_wfn zxb_wfn_t;
typedef struct zxb_queue zxb_queue_t;
typedef struct zxb_fifo zxb_fifo_t;
typedef struct zxb_sched zxb_sched_t;
typedef struct zxb_job zxb_job_t;

enum {
    ZXB_T_FREE = 0,
    ZXB_T_QUEUED,     /* in a queue, waiting for a worker */
    ZXB_T_DISPATCHED, /* sent to task->worker, not started */
    ZXB_T_RUNNING,    /* the worker said it started */
    ZXB_T_HELD,       /* finished before its client re-submitted it: result kept */
    ZXB_T_JHELD,      /* a job's task with its result, kept until RACKed (jobs.c) */
};

/* Where a task keeps its payload. A zframe_t costs about 370 bytes in
   Debian's czmq (draft fields compiled in), more than the whole per-task
   budget, so small payloads are copied out of their frame: inline up to 16
   bytes, else a bare heap copy; frames are kept from 1 KiB on, where the
   overhead is small and zero-copy sharing pays. */
enum { ZXB_PL_NONE = 0, ZXB_PL_INLINE, ZXB_PL_HEAP, ZXB_PL_FRAME };
#define ZXB_PL_INLINE_MAX 16
#define ZXB_PL_FRAME_MIN 1024

/* One task. Kept small (the benchmark allows 300 bytes per queued task
   beyond the payload): the function is an interned pointer, the session is
   the client's, the links are intrusive. */
struct zxb_task {
    /* what a table lookup reads, together at the start (one cache line) */
    zxb_task_t *hnext; /* task table chain */
    zxb_client_t *client;
    uint64_t seq;
    zx__link_t link; /* the client's FIFO while queued; the worker's list after */
    /* NULL: recovered from a worker's READY, not yet re-submitted; while
       ZXB_T_HELD, the interned name of the node that ran it */
    zxb_fn_t *fn;
    zxb_worker_t *worker;
    union {
        zframe_t *frame; /* ZXB_PL_FRAME */
        uint8_t *heap;   /* ZXB_PL_HEAP */
        uint8_t inl[ZXB_PL_INLINE_MAX];
    } pl; /* arguments (kept for retries), or the held result */
    union {
        uint64_t arrival; /* ms since broker start << 20 | counter: age and order */
        uint64_t jindex;  /* ZXB_T_JHELD: the job's completion index of its result */
    };
    int64_t start_us; /* on a worker: when it was sent, then when it started (us) */
    union {
        struct {
            uint32_t timeout_ms, flags;
        };
        struct {
            uint32_t held_pid, held_status; /* ZXB_T_HELD */
        };
    };
    /* the current attempt's token (tokens.c), set when it is sent: its
       result is checked against it without a second MAC */
    uint8_t token[ZXP_TOKEN_LEN];
    uint32_t gen;  /* bumped on free and dispatch: timer entries check it */
    uint32_t size; /* payload bytes, for the byte quota */
    int8_t priority;
    int8_t retries; /* as submitted: -1 none, 0 broker default */
    uint8_t pool_req, pool, state, attempts;
    uint8_t pl_kind : 2;   /* ZXB_PL_* */
    uint8_t adopted : 1;   /* its client submitted it (not only a worker reported it) */
    uint8_t bcancel : 1;   /* the broker sent WCANCEL because its client left */
    uint8_t cancelled : 1; /* a CANCEL was forwarded to the worker */
    uint8_t unproven : 1;  /* recovered from READY without a token it could check (tokens.c) */
    uint8_t withdraw : 1;  /* the broker sent WCANCEL to place it elsewhere */
    uint8_t lng : 1;       /* sent as a task of a function not known short */
    uint8_t counted : 1;   /* counted among its function's running (est.running) */
    uint8_t journaled : 1; /* its TASK record is in the journal: its end is written too */
    uint8_t refused : 1;   /* the journal failed before it was ACCEPTED: REJECTED sent,
                              its result is discarded (durable.c) */
};

/* A function a worker offers, with its place in the function's lists of
   workers that have free credit and of workers that have an idle slot (one
   list of each per pool kind). */
struct zxb_wfn {
    zxb_fn_t *fn;
    zxb_worker_t *worker;
    uint8_t mask; /* ZXP_POOLS_* this worker runs it in */
    bool linked[3], ilinked[3];
    zx__link_t flink[3]; /* on fn->free[p] */
    zx__link_t ilink[3]; /* on fn->idle[p] */
};

/* The zxb_wfn_t whose flink[p] is k. */
static inline zxb_wfn_t *zxb_wfn_of(zx__link_t *k, int p)
{
    return k ? ZX__CONTAINER(k - p, zxb_wfn_t, flink) : NULL;
}

/* The zxb_wfn_t whose ilink[p] is k. */
static inline zxb_wfn_t *zxb_wfn_idle_of(zx__link_t *k, int p)
{
    return k ? ZX__CONTAINER(k - p, zxb_wfn_t, ilink) : NULL;
}

static inline zxb_task_t *zxb_task_of(zx__link_t *k)
{
    return k ? ZX__CONTAINER(k, zxb_task_t, link) : NULL;
}

/* An interned function name with its queues (one per requested pool kind,
   made on first use) and the workers that offer it. */
struct zxb_fn {
    char *name;
    uint32_t len;
    uint32_t id;
    uint64_t refs;              /* tasks and worker offers that point here */
    uint32_t offered[3];        /* non-draining workers offering it per pool kind */
    zxb_queue_t *q[3];          /* by requested pool: ANY, THREAD, PROCESS */
    zx__list_t free[3];         /* zxb_wfn_t with free credit, per pool kind */
    zx__list_t idle[3];         /* zxb_wfn_t with an idle slot, per pool kind (through ilink) */
    zxb_place_est_t est[3];     /* its run time per pool kind (placement.c) */
    int64_t orphan_deadline[3]; /* per requested pool: when its queue lost its last
                                   worker, + grace; 0 when served */
    bool orphan_listed;         /* on the broker's list of orphaned functions */
};

struct zxb_worker {
    uint8_t id[ZXP_ID_LEN];
    zframe_t *rid;
    char node[ZXP_MAX_NAME + 1];
    uint32_t pid, threads, procs, prefetch, hb_ms;
    uint64_t max_msg;     /* READY's trailing max_msg; 0: not said (an older worker) */
    uint64_t results_rx;  /* WRESULT items received since its READY */
    uint64_t results_ack; /* as last told to it (HEARTBEAT's trailing field) */
    /* with --journal: results_rx counts as received only once the records
       of those results are committed; (lsn, rx) marks of WRESULT messages
       whose records are not committed yet (durable.c) */
    uint64_t results_safe;
    zlist_t *rx_marks;
    int64_t ack_at;
    /* per pool kind (ZXP_POOL_THREAD, ZXP_POOL_PROCESS; [0] unused): the
       placement policy's view (zxb_place.h): slots, window, the tasks in
       flight (dispatched, not resulted, and late slots, see held) and their
       argument bytes (of the tasks linked here, w->tasks), run times */
    zxb_place_pool_t place[3];
    uint32_t held[3];    /* slots kept by WRESULT slot_freed=false until CREDIT */
    uint32_t foreign[3]; /* slots a re-READY reported for tasks now elsewhere */
    /* the credit lists were last set for these: relisting is skipped while
       nothing that decides them changed (see zxb_worker_relist) */
    uint32_t lo[3], hi[3]; /* inflight within [lo, hi): no function's credit changes */
    uint32_t at_nlong[3];
    uint64_t at_epoch;
    bool at_bytes[3], listed_valid, idle[3];
    bool draining;
    bool dead;
    int64_t last_recv, last_send;
    size_t nfns;
    zxb_wfn_t *fns;
    zx__list_t tasks;   /* zxb_task_t in flight here, newest first, through link */
    uint32_t claims[3]; /* withdrawals asked for this pool's idle slots, unanswered */
    uint64_t ntasks, running, done, failed;
    zxp_out_t *out_task, *out_cancel; /* batches being built this turn */
    zxb_worker_t *dirty_next;
    bool dirty;
};

struct zxb_client {
    uint8_t session[ZXP_ID_LEN];
    zframe_t *rid;
    char name[ZXP_MAX_NAME + 1];
    uint32_t hb_ms;
    uint64_t max_msg; /* HELLO's trailing max_msg; 0: not said (an older client) */
    /* result payload bytes sent, and read as its HEARTBEAT says (acks: it
       says so; older clients do not, and are not bounded) */
    uint64_t tx_bytes, rx_bytes;
    bool acks;
    bool overflow; /* tx - rx passed --max-results-waiting: dropped at the tick */
    bool alive;    /* said HELLO and has not left */
    bool ever;     /* has said HELLO since this broker started */
    bool expired;  /* a placeholder whose wait for HELLO ran out */
    bool doomed;   /* gone with no task left: freed at the end of this turn */
    int64_t last_recv, last_send, created;
    zhashx_t *fifos;       /* key (queue, level) -> zxb_fifo_t */
    zxb_fifo_t *last_fifo; /* one-entry cache for bursts of the same kind */
    uint64_t ntasks;       /* tasks pointing at this record (it lives while > 0) */
    uint64_t queued, queued_bytes;
    uint64_t open_fifos; /* its non-empty FIFOs: each charged ZXB_FIFO_CHARGE (client.c) */
    uint64_t max_seq;    /* highest seq seen: above it a SUBMIT needs no duplicate lookup */
    /* its use of slots, for fair turns across functions (dispatch.c): run
       time of its ended tasks, and its running ones (count, sum of starts) */
    int64_t used_us, run_start_sum;
    uint32_t nrun;
    uint32_t nlong;       /* its tasks on workers sent as not known short */
    uint64_t active_tick; /* the last tick that saw it with tasks (dispatch.c) */
    zxp_out_t *out_started, *out_result, *out_cancelled, *out_accepted;
    zxb_job_t *job;   /* its session is a detached job (HELLO flag JOB): jobs.c */
    bool job_refused; /* it asked for a job beyond --max-jobs: its SUBMITs are refused */
    bool want_accept; /* HELLO flag ACCEPT: send ACCEPTED */
    zxb_client_t *dirty_next;
    bool dirty;
};

/* ---- queue.c: tasks, functions, queues ------------------------------------------ */

zxb_sched_t *zxb_sched_new(void);
void zxb_sched_destroy(zxb_sched_t **self_p);

/* Payloads: set takes *frame_p (NULL for none) and sets size; put appends
   it to out and keeps it (copied when small, shared when a frame); take
   gives it up as a frame (NULL for none). */
void zxb_task_payload_set(zxb_task_t *task, zframe_t **frame_p);
/* The same from bytes (copied): an inline payload read in place. */
void zxb_task_payload_set_mem(zxb_task_t *task, const void *data, size_t size);
void zxb_task_payload_put(zxb_task_t *task, zxp_out_t *out);
zframe_t *zxb_task_payload_take(zxb_task_t *task);
void zxb_task_payload_clear(zxb_task_t *task);

/* Tasks come from a slab: zeroed, gen kept. task_free releases the payload. */
zxb_task_t *zxb_task_alloc(zxb_sched_t *self);
void zxb_task_free(zxb_sched_t *self, zxb_task_t *task);
/* The (client, seq) table. */
void zxb_task_index(zxb_sched_t *self, zxb_task_t *task);
void zxb_task_unindex(zxb_sched_t *self, zxb_task_t *task);
zxb_task_t *zxb_task_find(zxb_sched_t *self, const zxb_client_t *client, uint64_t seq);
size_t zxb_task_count(zxb_sched_t *self);
/* Next arrival stamp (ms since start << 20 | counter). */
uint64_t zxb_arrival_now(zxb_sched_t *self, int64_t now_ms);
int64_t zxb_arrival_ms(uint64_t arrival);

/* Interned function names. intern creates; NULL only on a bad name. */
zxb_fn_t *zxb_fn_intern(zxb_sched_t *self, const char *name, size_t len);
/* The interned function of that name, or NULL: interns nothing. */
zxb_fn_t *zxb_fn_find(zxb_sched_t *self, const char *name, size_t len);
/* Frees functions nobody points at, when there are many of them. */
void zxb_fn_gc(zxb_sched_t *self);
/* Every function (first/next): the nearest offered names for a task whose
   function nobody offers (dispatch.c). */
zxb_fn_t *zxb_fn_first(zxb_sched_t *self);
zxb_fn_t *zxb_fn_next(zxb_sched_t *self);

/* Queues. push puts a task at the back (or the front, for a retry) of its
   client's FIFO at its priority in fn->q[pool_req]. */
void zxb_queue_push(zxb_sched_t *self, zxb_task_t *task, bool front);
/* Whether a task of client for fn (NULL: not interned yet), pool_req and
   priority would open a FIFO (one that has no task now): what it is
   charged ZXB_FIFO_CHARGE for. */
bool zxb_queue_opens(zxb_client_t *client, const zxb_fn_t *fn, uint8_t pool_req, int8_t priority);
/* What the broker may hold for each (function, pool, priority) a client
   has tasks queued under, beyond the tasks: the FIFO with its hash entry
   (~150 B) and, at worst, the function record (376 B), its name twice (the
   record's and the hash key's, up to 2 x 256 B) with a hash entry (~100 B),
   its queue (~190 B) and a block of rings (~400 B): ~1.3 KB with short
   names (measured: 82k distinct names cost 1.2 KB each), ~1.8 KB with
   255-byte ones. A client's open FIFOs beyond its first are counted at
   this against --max-queued-bytes (client.c), so distinct names or
   priorities cannot make the broker hold more than that bound for it. */
#define ZXB_FIFO_CHARGE 2048
/* The task a pop would return: highest priority, the client whose turn it
   is, oldest first. NULL when empty. */
zxb_task_t *zxb_queue_peek(const zxb_queue_t *q);
/* Removes peek's task and gives the next client its turn. */
zxb_task_t *zxb_queue_pop(zxb_sched_t *self, zxb_queue_t *q);
/* Removes any queued task (cancel, client gone). */
void zxb_queue_remove(zxb_sched_t *self, zxb_task_t *task);
uint64_t zxb_queue_depth(const zxb_queue_t *q);
/* Calls fn for every queued task of q, oldest levels last; fn may remove
   the task it is given (and only that one). */
void zxb_queue_each(zxb_sched_t *self, zxb_queue_t *q, void (*fn)(zxb_task_t *, void *), void *arg);
/* Drops every queued task of client (its fifos), calling fn on each after
   removal; fn frees it. */
void zxb_client_fifos_drain(zxb_sched_t *self, zxb_client_t *client,
                            void (*fn)(zxb_task_t *, void *), void *arg);
void zxb_client_fifos_destroy(zxb_client_t *client);
/* Per-function depth of client's queues, for STATUS: calls fn(fn, depth). */
void zxb_client_depths(zxb_client_t *client, void (*fn)(zxb_fn_t *, uint64_t, void *), void *arg);

/* Free-credit lists: workers offering fn in pool kind p that can take a task. */
void zxb_free_link(zxb_wfn_t *wf, int pool);
void zxb_free_unlink(zxb_wfn_t *wf, int pool);
/* Idle lists: workers offering fn in pool kind p with a slot that has no task. */
void zxb_idle_link(zxb_wfn_t *wf, int pool);
void zxb_idle_unlink(zxb_wfn_t *wf, int pool);
void zxb_idle_rotate(zxb_wfn_t *wf, int pool);
/* Moves wf to the back of its list so tasks spread over workers. */
void zxb_free_rotate(zxb_wfn_t *wf, int pool);

/* A FIFO of (task, gen, deadline) for timers that never scan all tasks:
   entries are appended in deadline order (one fixed delay per timer). */
typedef struct {
    zxb_task_t *task;
    uint32_t gen;
    int64_t deadline;
} zxb_timer_entry_t;
typedef struct {
    zxb_timer_entry_t *ring;
    size_t cap, head, count;
} zxb_timer_fifo_t;
void zxb_timer_push(zxb_timer_fifo_t *f, zxb_task_t *task, int64_t deadline);
/* The next entry due at now, or false. Stale entries (gen changed) are skipped. */
bool zxb_timer_pop_due(zxb_timer_fifo_t *f, int64_t now, zxb_timer_entry_t *out);
void zxb_timer_fini(zxb_timer_fifo_t *f);

/* ---- broker.c ---------------------------------------------------------------------- */

typedef struct zxb_broker zxb_broker_t;
/* Binds both endpoints. NULL (logged) if an endpoint cannot be bound. */
zxb_broker_t *zxb_broker_new(const zxb_config_t *config);
void zxb_broker_destroy(zxb_broker_t **self_p);
/* Runs until SIGINT/SIGTERM; then says SHUTDOWN to every peer. 0, or
   ZXB_RUN_RESTART: a pair's broker stepped down and must start again
   (main.c execs itself with the same arguments; pair.c). */
#define ZXB_RUN_RESTART 3
int zxb_broker_run(zxb_broker_t *self);

#endif
