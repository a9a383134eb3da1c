/*  zxb_broker.h - the broker record and the functions its files share.

    The broker is one thread and one record (zxb_broker_t), split by what
    the code is about, not by who calls it:

      broker.c    the loop: sockets, turns, batches and flushes, timers
      client.c    client records and commands (HELLO, SUBMIT, CANCEL, BYE),
                  client liveness
      workers.c   worker records and commands (READY and the recovery of the
                  tasks it reports, WSTARTED, WRESULT, WCANCELLED, CREDIT,
                  DRAIN, BYE), held results, worker liveness
      dispatch.c  the path from queue to worker: credit, choosing tasks for
                  a worker, sending them, re-queueing, the no-worker grace
      tasks.c     task bookkeeping both sides share: counters, results and
                  cancels to clients, freeing
      status.c    the STATUS-REPLY map
      metrics.c   the Prometheus text and its HTTP endpoint
      placement.c the placement policy (zxb_place.h), pure
      jobs.c      detached jobs: held results, FETCH, RACK, JOBS, JCANCEL, expiry
      durable.c   the journal's records (--journal): appends, ACCEPTED after
                  commit, recovery at start, snapshots (journal.c writes them)

    Functions here take the broker record and act at self->now; none blocks.
*/
#ifndef ZXB_BROKER_H
#define ZXB_BROKER_H

#include "zxb.h"
#include "zxb_journal.h"

#include <stdio.h>

/* A detached job (jobs.c). */
struct zxb_job {
    uint8_t id[ZXP_ID_LEN]; /* its session */
    char name[ZXP_MAX_NAME + 1];
    zxb_client_t *client; /* its session's record; NULL once that is gone (info only) */
    uint64_t submitted, done, failed, held, held_bytes, acked;
    uint64_t next;         /* the highest completion index given */
    int64_t created, last; /* unix seconds: made, last activity */
    bool cancelled, expired, deleted;
    bool poked; /* moved this turn: waiting FETCHes look again */
    /* held tasks in completion order: ring[i] has index base + i; [0, lo)
       were RACKed; NULL entries too */
    zxb_task_t **ring;
    size_t cap, len, lo;
    uint64_t base;
};

#define ZXB_OUTPOOL_MAX 64

struct zxb_broker {
    zxb_config_t cfg;
    zxb_place_cfg_t place; /* the placement policy's settings, from cfg */
    uint64_t place_epoch;  /* bumped when a function's run-time estimate changes */
    zlist_t *withdrawals;  /* WCANCELs sent to place tasks elsewhere, unanswered (dispatch.c) */
    uint64_t withdrawn, withdrawn_done; /* withdrawals asked, and those that took the task */
    int64_t used_last;                  /* the slot use of the client served last (dispatch.c) */
    uint32_t total_slots;               /* of the workers that take tasks (dispatch.c) */
    uint32_t active_clients;            /* clients with tasks at the last tick */
    uint64_t tick_no;
    int64_t steal_at; /* monotonic us when a task an idle slot wanted becomes withdrawable; 0 */
    /* the clients' and the workers' ROUTER sockets: send only through
       zxb_csock and zxb_wsock, which clear quiet (broker.c) */
    zsock_t *clients_sock, *workers_sock;
    /* [0] workers, [1] clients: nothing used the socket since its last
       drain ended empty (or ZMQ_EVENTS said so), so its ZMQ_FD will signal
       the next message and the loop may sleep without asking ZMQ_EVENTS */
    bool quiet[2];
    uint8_t id[ZXP_ID_LEN];
    char id_hex[33];
    int64_t started;
    int64_t now;
    int64_t now_us; /* monotonic microseconds (not the wall clock), for run times */
    zxb_sched_t *sched;
    zhashx_t *clients;         /* session -> zxb_client_t */
    zhashx_t *workers;         /* worker id -> zxb_worker_t */
    zxb_client_t *last_client; /* the last found (zxb_client_find); NULL once freed */
    zxb_worker_t *last_worker; /* the sender of the last worker message; NULL once freed */
    zxp_in_t in;
    zframe_t *rid; /* the routing id of the message in in (broker.c's s_drain) */
    zxp_drops_t drops;
    zxp_out_t *outpool[ZXB_OUTPOOL_MAX]; /* spare batches, lent to peers (broker.c) */
    size_t noutpool;
    zxb_client_t *dirty_clients;
    zxb_worker_t *dirty_workers;
    zlist_t *doomed;         /* clients to free at the end of the turn */
    zxb_timer_fifo_t nofunc; /* queued tasks no worker could take when they came */
    zxb_timer_fifo_t heldq;  /* results kept for clients that have not re-submitted */
    size_t nheld;
    zlist_t *orphans; /* functions whose queue lost its last worker */
    zxp_out_t ctl;    /* for STATUS-REPLY */
    uint64_t submitted, done, failed, cancelled, duplicates, rejected;
    uint64_t bad_results;   /* WRESULT items refused one by one (zxp_item_bad): task failed */
    uint64_t too_large;     /* tasks failed because a message would pass a peer's --max-msg */
    uint64_t slow_clients;  /* sessions dropped for not reading their results */
    uint64_t registrations; /* READYs accepted */
    uint64_t stale_results; /* WRESULT items for another attempt (token), dropped */
    uint64_t forged_claims; /* READY running entries without a valid token, ignored */
    void *tok_ctx;          /* attempt tokens (tokens.c): the keyed MAC */
    bool tok_persistent;    /* its key comes from the shared secret: survives restarts */
    uint64_t queued, running;
    uint64_t rate[10];
    int64_t rate_sec;
    zxb_metrics_t *metrics; /* --metrics: the page is rebuilt once a second */
    int64_t metrics_at;
    /* jobs.c */
    zhashx_t *jobs;         /* job id -> zxb_job_t */
    zlist_t *fetch_waiters; /* FETCHes waiting for a result (long poll) */
    zxp_out_t jout;         /* JRESULT batches of a FETCH's answer */
    uint64_t jobs_held;     /* results held for jobs, all jobs */
    int64_t jobs_tick_at;
    /* durable.c (NULL journal: --journal not given) */
    zxb_journal_t *journal;
    bool replaying; /* recovery: nothing is appended */
    bool journal_failed;
    char journal_error[256];
    zlist_t *accepts;    /* ACCEPTED waiting for their record's commit */
    uint64_t committed;  /* the journal's committed LSN, as last read */
    uint64_t last_lsn;   /* of the last record appended */
    uint64_t live_bytes; /* journal bytes of what is live (the snapshot would hold) */
    msgpack_sbuffer jbuf;
    msgpack_packer jpk;
    uint64_t recovered_tasks, recovered_results;
    /* after a recovery, nothing is dispatched until then (broker ms; 0:
       dispatching): one liveness window in which workers still running or
       holding results of recovered tasks register and report them, so
       those tasks are not given to another worker first */
    int64_t hold_until;
    double recovery_s;
    /* pair.c (NULL standby: no --peer) */
    struct zxb_standby *standby;
    zxb_journal_t *pair_journal; /* the journal while not active (the standby's copy) */
    bool pair_stepdown;          /* was active, is not: the run loop ends, main restarts */
    bool pair_fatal;             /* a takeover could not recover: the run loop ends */
    uint64_t pair_refused;       /* messages answered ERROR 3 (passive) */
    int64_t pair_active_at;      /* when it last became active (monotonic ms); 0: never */
};

/* The clients' and the workers' sockets, for a send (or a batch that may
   send). A send can make libzmq process the socket's pending commands and
   so consume the signal of its ZMQ_FD while messages wait: the loop then
   asks ZMQ_EVENTS before it sleeps (broker.c). */
static inline zsock_t *zxb_csock(zxb_broker_t *self)
{
    self->quiet[1] = false;
    return self->clients_sock;
}

static inline zsock_t *zxb_wsock(zxb_broker_t *self)
{
    self->quiet[0] = false;
    return self->workers_sock;
}

/* An optional trailing uint field of a header (appended by a later minor
   version): its value, or 0 when it is absent or not a uint. */
static inline uint64_t zxb_opt_u(const msgpack_object *arr, size_t field)
{
    return arr->via.array.size > field &&
                   arr->via.array.ptr[field].type == MSGPACK_OBJECT_POSITIVE_INTEGER
               ? arr->via.array.ptr[field].via.u64
               : 0;
}

static inline void zxb_hex(const uint8_t *id, char out[33])
{
    zxp_hex(id, ZXP_ID_LEN, out);
}

static inline const char *zxb_pool_name(int pool)
{
    return pool == ZXP_POOL_THREAD ? "thread" : pool == ZXP_POOL_PROCESS ? "process" : "any";
}

/* ---- broker.c: batches ------------------------------------------------------------ */

/* The batch of cmd being built in *slot for a peer (taken from the pool of
   spare batches when it has none); a full one is sent at once. A peer
   keeps its emptied batches until the next tick. */
zxp_out_t *zxb_batch(zxb_broker_t *self, zxp_out_t **slot, uint8_t cmd, zsock_t *sock,
                     zframe_t *rid);
/* Gives a batch back to the pool, dropping anything unsent. */
void zxb_out_put(zxb_broker_t *self, zxp_out_t **out_p);

/* ---- client.c --------------------------------------------------------------------- */

/* A client record under session (a placeholder until its HELLO). */
zxb_client_t *zxb_client_new(zxb_broker_t *self, const uint8_t *session);
void zxb_client_destroy(zxb_broker_t *self, zxb_client_t **c_p);
/* The client record of session (16 bytes), or NULL. */
zxb_client_t *zxb_client_find(zxb_broker_t *self, const uint8_t *session);
/* A client that is gone and holds no task is freed at the end of the turn. */
void zxb_client_check(zxb_broker_t *self, zxb_client_t *c);
/* The client's batch of STARTED, RESULT or CANCELLED; marks it dirty. */
zxp_out_t *zxb_client_batch(zxb_broker_t *self, zxb_client_t *c, uint8_t cmd);
/* One message from the clients' socket, decoded in self->in (rid: its
   routing id). */
void zxb_client_msg(zxb_broker_t *self, zframe_t *rid);
/* Heartbeats to clients; clients silent too long are gone. */
void zxb_clients_tick(zxb_broker_t *self);

/* ---- workers.c -------------------------------------------------------------------- */

/* The worker's batch of TASK or WCANCEL; marks it dirty. */
zxp_out_t *zxb_worker_batch(zxb_broker_t *self, zxb_worker_t *w, uint8_t cmd);
/* Links a task to the worker's list (and its bytes to the pool's). unlink
   at now_us ends its run for its function's and client's accounts. */
void zxb_task_link(zxb_worker_t *w, zxb_task_t *t);
void zxb_task_unlink(zxb_worker_t *w, zxb_task_t *t, int64_t now_us);
/* A client's use of slots at now_us: what its tasks ran, and run so far. */
int64_t zxb_client_used(const zxb_client_t *c, int64_t now_us);
/* Frees a worker record already out of the table. */
void zxb_worker_free(zxb_broker_t *self, zxb_worker_t **w_p);
/* One message from the workers' socket, decoded in self->in (rid: its
   routing id). */
void zxb_worker_msg(zxb_broker_t *self, zframe_t *rid);
/* Heartbeats to workers, the placement policy's tick; workers silent too
   long are lost. */
void zxb_workers_tick(zxb_broker_t *self);
/* Held results whose client did not come back in time are dropped. */
void zxb_held_tick(zxb_broker_t *self);

/* ---- dispatch.c ------------------------------------------------------------------- */

/* Puts the worker on (or takes it off) its functions' idle and free-credit
   lists when its idle slots or its credit for a function may have changed:
   O(its functions), only then. */
void zxb_worker_relist(zxb_broker_t *self, zxb_worker_t *w);
/* Gives the worker queued tasks while it has credit (idle slots of both
   pools first), relists it, and withdraws tasks waiting elsewhere for the
   idle slots it still has (zxb_worker_steal). */
void zxb_worker_fill(zxb_broker_t *self, zxb_worker_t *w);
/* For each idle slot of w with no withdrawal asked for it yet: a task of a
   function w offers there that waits unstarted at a node (another worker,
   or w's other pool) for longer than --steal-after-ms is withdrawn. */
void zxb_worker_steal(zxb_broker_t *self, zxb_worker_t *w);
/* A draining worker: every task it has not started is withdrawn. */
void zxb_worker_giveback(zxb_broker_t *self, zxb_worker_t *w);
/* The worker answered the WCANCEL of a withdrawal of t (clears t->withdraw
   and the slot's claim); what the answer means is the caller's. */
void zxb_withdraw_answered(zxb_broker_t *self, zxb_task_t *t);
/* Counts the slots of the workers that take tasks (after a READY, a DRAIN,
   a removal). */
void zxb_slots_count(zxb_broker_t *self);
/* w is going away: withdrawals asked for its slots are for nobody now. */
void zxb_withdraw_forget(zxb_broker_t *self, zxb_worker_t *w);
/* When self->steal_at has come: every worker with an idle slot withdraws
   again (a task that was too young for it at its last try may now be old
   enough, and the tick may be 100 ms away). */
void zxb_steal_due(zxb_broker_t *self);
/* The placement policy's tick: running tasks raise their function's
   estimate, stale withdrawals are dropped, and every worker is filled
   (a changed estimate changes windows) and may withdraw for idle slots. */
void zxb_place_tick_all(zxb_broker_t *self);
/* Queues a task (fresh from SUBMIT, or back from a worker) and dispatches
   it if a worker can take it. */
void zxb_task_enqueue(zxb_broker_t *self, zxb_task_t *t, bool front, bool fresh);
/* A task that left its worker unfinished: back in the queue (counted: the
   attempt counts), or ended. True when it was re-queued. */
bool zxb_task_requeue(zxb_broker_t *self, zxb_task_t *t, bool counted, const char *node);
/* Starts the no-worker grace of fn's queues that lost their last worker
   (and clears it for those served again). */
void zxb_orphan_mark(zxb_broker_t *self, zxb_fn_t *fn);
/* Fails queued tasks whose no-worker grace ran out. */
void zxb_nofunc_tick(zxb_broker_t *self);

/* ---- tasks.c ---------------------------------------------------------------------- */

/* Forgets a task that is in no queue and on no worker. */
void zxb_task_release(zxb_broker_t *self, zxb_task_t *t);
/* Queues a task and counts it (client and broker); forget uncounts a task
   taken out of its queue; remove does both. */
void zxb_queued_push(zxb_broker_t *self, zxb_task_t *t, bool front);
void zxb_queued_forget(zxb_broker_t *self, zxb_task_t *t);
void zxb_queued_remove(zxb_broker_t *self, zxb_task_t *t);
/* Sends a RESULT item to the task's client (when it listens). Its payload
   is *payload (consumed) or, when that is NULL, the len bytes at mem. */
void zxb_result_send(zxb_broker_t *self, zxb_task_t *t, uint32_t status, const char *node,
                     size_t node_len, uint32_t pid, uint8_t pool, zframe_t **payload,
                     const void *mem, size_t len);
/* Fails a task the broker holds (not on a worker) with an error of its own. */
/* ---- tokens.c: attempt tokens ---------------------------------------------------- */

int zxb_tokens_init(zxb_broker_t *self);
void zxb_tokens_fini(zxb_broker_t *self);
/* The token of (session, seq, attempt) given to the worker worker_id. */
void zxb_token(zxb_broker_t *self, const uint8_t *session, uint64_t seq, uint32_t attempt,
               const uint8_t *worker_id, uint8_t out[ZXP_TOKEN_LEN]);
bool zxb_token_ok(zxb_broker_t *self, const uint8_t *session, uint64_t seq, uint32_t attempt,
                  const uint8_t *worker_id, const uint8_t *token);
/* Appends t's token for w to the TASK item just put in out. */
void zxb_token_put(zxb_broker_t *self, zxp_out_t *out, zxb_task_t *t, zxb_worker_t *w);
/* Whether token is that of t's current attempt (the one zxb_token_put sent,
   or the one a READY proved). */
bool zxb_token_current(const zxb_task_t *t, const uint8_t *token);

/* Fails t (REJECTED) if its arguments are over w's --max-msg; true if so. */
bool zxb_task_too_large(zxb_broker_t *self, zxb_worker_t *w, zxb_task_t *t);
void zxb_task_fail(zxb_broker_t *self, zxb_task_t *t, uint32_t status, const char *type,
                   const char *message, const char *node);
void zxb_cancelled_send(zxb_broker_t *self, zxb_client_t *c, uint64_t seq, uint32_t outcome);
/* Brings the ring of completions per second up to self->now. */
void zxb_rate_roll(zxb_broker_t *self);

/* ---- status.c --------------------------------------------------------------------- */

/* Answers a client's STATUS with the map of docs/operations.md. */
void zxb_status_reply(zxb_broker_t *self, zxb_client_t *c);

/* WRESULT items of w it may forget: with a journal, those whose records are
   committed (durable.c), else all received. */
static inline uint64_t zxb_results_safe(const zxb_broker_t *self, const zxb_worker_t *w)
{
    return self->journal ? w->results_safe : w->results_rx;
}

/* ---- jobs.c ----------------------------------------------------------------------- */

/* Whether a client still wants its tasks run: it is connected, or it is a
   job that has not been cancelled or expired. */
static inline bool zxb_client_wants(const zxb_client_t *c)
{
    return c->alive || (c->job && !c->job->cancelled && !c->job->expired);
}
zxb_job_t *zxb_job_find(zxb_broker_t *self, const uint8_t *id);
zxb_job_t *zxb_job_new(zxb_broker_t *self, const uint8_t *id, const char *name, int64_t created);
void zxb_job_destroy(zxb_broker_t *self, zxb_job_t **job_p);
/* c said HELLO with the JOB flag: its job (new, or the one it had).
   Returns false, attaching nothing, when a new job would pass --max-jobs
   (a job replayed from the journal or a peer is made by durable.c, never
   here, so it is never refused). */
bool zxb_job_attach(zxb_broker_t *self, zxb_client_t *c);
/* The job's session left: its tasks stay. */
void zxb_job_left(zxb_broker_t *self, zxb_client_t *c, const char *why);
const char *zxb_job_state(const zxb_job_t *job);
void zxb_job_info(zxb_broker_t *self, const zxb_job_t *job, zxp_jobinfo_t *info);
/* t (of a job's client) got its result: held in t (payload moved in), with
   completion index index (0: the next). False: the job takes no more. */
bool zxb_job_hold(zxb_broker_t *self, zxb_task_t *t, uint32_t status, const char *node,
                  size_t node_len, uint32_t pid, uint8_t pool, zframe_t **payload, const void *mem,
                  size_t len, uint64_t index);
/* Forgets a held result (RACKed, or its job dropped): the task is freed. */
void zxb_job_unhold(zxb_broker_t *self, zxb_job_t *job, zxb_task_t *t);
/* A held task's payload copied into out. */
void zxb_job_payload_copy(zxb_task_t *t, zxp_out_t *out);
void zxb_job_on_fetch(zxb_broker_t *self, zxb_client_t *c);
void zxb_job_on_rack(zxb_broker_t *self);
void zxb_job_on_jobs(zxb_broker_t *self, zxb_client_t *c);
void zxb_job_on_jcancel(zxb_broker_t *self, zxb_client_t *c);
/* End of turn: waiting FETCHes whose job moved are answered. */
void zxb_jobs_flush(zxb_broker_t *self);
/* Tick: waits that are over are answered; jobs past --job-retention go. */
void zxb_jobs_tick(zxb_broker_t *self);
void zxb_jobs_fini(zxb_broker_t *self);

/* ---- durable.c ------------------------------------------------------------------- */

/* Opens the journal (cfg.journal_dir) and replays it into tasks, clients and
   jobs (with --peer: only what every broker needs; pair.c recovers when it
   becomes active). 0, or -1 (logged: the broker does not start). */
int zxb_durable_open(zxb_broker_t *self);
/* Opens the journal and replays it into the tables, as at a start (a
   pair's broker becoming active: pair.c). 0, or -1 (logged). */
int zxb_durable_recover(zxb_broker_t *self);
/* Writes a snapshot now (the standby's copy starts from one). */
void zxb_durable_snapshot(zxb_broker_t *self);
void zxb_durable_close(zxb_broker_t *self);
/* A task just accepted from SUBMIT: its record, and its ACCEPTED (at once
   without a journal, else once the record is committed). */
void zxb_durable_task(zxb_broker_t *self, zxb_task_t *t);
/* A task already known was sent again: ACCEPTED once what is appended now
   is committed (its record is at or before it). */
void zxb_durable_accept_again(zxb_broker_t *self, zxb_client_t *c, uint64_t seq);
/* Whether held result t may be fetched: its record is committed (always,
   without a journal). */
bool zxb_durable_visible(const zxb_broker_t *self, const zxb_task_t *t);
/* A job's held result (t is ZXB_T_JHELD). */
void zxb_durable_result(zxb_broker_t *self, zxb_task_t *t);
/* A journaled task is forgotten (result sent, RACKed, cancelled, dropped). */
void zxb_durable_end(zxb_broker_t *self, zxb_task_t *t);
/* bytes of the journal are no longer live (the snapshot estimate). */
void zxb_durable_unlive(zxb_broker_t *self, uint64_t bytes);
/* A job's record (made, attached, cancelled, expired, deleted). */
void zxb_durable_job(zxb_broker_t *self, zxb_job_t *job);
/* After a WRESULT message of n items from w: acknowledged once committed. */
void zxb_durable_wresults(zxb_broker_t *self, zxb_worker_t *w);
/* Why SUBMITs are refused now (the journal failed), or NULL. */
const char *zxb_durable_refusal(zxb_broker_t *self);
/* End of turn: the batch goes to the writer; a snapshot when due. */
void zxb_durable_turn(zxb_broker_t *self);
/* The journal's fd said something: ACCEPTED and worker acks for what is
   committed now; a failure is handled. */
void zxb_durable_committed(zxb_broker_t *self);
int zxb_durable_fd(zxb_broker_t *self);
/* Tick: the recovery window is over: every worker is filled. */
void zxb_durable_tick(zxb_broker_t *self);

/* ---- pair.c: a pair of brokers (--peer) --------------------------------------------- */

/* Opens the journal for the standby (read through, nothing built) and
   makes the standby; the broker serves nothing until it is active. */
int zxb_pair_open(zxb_broker_t *self);
void zxb_pair_close(zxb_broker_t *self);
/* Serving: no pair, or this broker is the active one and has recovered. */
bool zxb_pair_active(zxb_broker_t *self);
/* A message from a client or worker while not active: true if it may be
   handled (a HELLO or SUBMIT that made this broker active); otherwise it
   is answered ERROR 3 (passive) and must be dropped. */
bool zxb_pair_admit(zxb_broker_t *self, bool worker, zframe_t *rid, zmsg_t *msg);
/* The standby's fds to poll (peer socket, tap) and the quiet journal's
   (-1 each when absent). */
void zxb_pair_fds(zxb_broker_t *self, int fds[3]);
/* Every turn: peer messages and forwarding; true if more may wait. */
bool zxb_pair_handle(zxb_broker_t *self);
/* The journal's fd fired (after zxb_durable_committed when active). */
void zxb_pair_journal_moved(zxb_broker_t *self);
void zxb_pair_tick(zxb_broker_t *self);
/* What may be acknowledged given the committed LSN (the passive's
   acknowledgements count while it has a complete copy). */
uint64_t zxb_pair_durable(zxb_broker_t *self, uint64_t committed);
/* "active", "passive", "primary" (undecided), "backup", or NULL. */
const char *zxb_pair_state(zxb_broker_t *self);
/* Peer-link messages dropped because their signature check failed (0: no pair). */
uint64_t zxb_pair_peer_refused(zxb_broker_t *self);

/* ---- metrics.c -------------------------------------------------------------------- */

/* Builds the Prometheus page from the broker's figures and publishes it. */
void zxb_metrics_update(zxb_broker_t *self);

#endif
