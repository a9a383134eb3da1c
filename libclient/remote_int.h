/*  remote_int.h - the remote executor's records, shared by its two files:
    remote.c (the executor operations: submit, cancel, shutdown, destroy,
    and the constructor) and remote_io.c (the I/O actor: the socket, the
    outbox drained into SUBMIT batches, the pending table, results,
    reconnects and expiry). Their behaviour is described at the top of each.

    Lock order: ex->iolock, then ex->lock, then a future's lock
    (zx_future_done etc.). No future is completed and no socket is used while
    ex->lock is held. ex->io and the socket belong to whoever holds
    ex->iolock: the actor, a submitting thread sending a lone task, or a
    thread that waits for a future and leads (remote_io.c).
*/
#ifndef ZX_REMOTE_INT_H
#define ZX_REMOTE_INT_H

#include "remote.h"
#include "zx_endpoints.h"
#include "zx_monitor.h"
#include "zx_proto.h"
#include "zx_security.h"
#include "zx_seqtab.h"

#include "zx_list.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <czmq.h>

#define ZX__RTASK_FRAME_MIN 1024 /* arguments this long go in their own frame (zx__rtask) */

/* A task: the record submit makes, the outbox holds and the pending table
   keeps until the task resolves. One allocation with fn and args inline. */
typedef struct zx__rtask zx__rtask_t;
struct zx__rtask {
    zx__link_t link;     /* in the outbox, under ex->lock */
    zx_future_t *future; /* one reference, dropped when the record is freed */
    uint64_t seq;
    int64_t t_submit; /* zclock_mono ms */
    uint32_t args_len;
    uint32_t timeout_ms;
    uint32_t flags;
    int32_t retries;
    int8_t priority;
    uint8_t pool;
    uint8_t fn_len;
    /* Decided here (cancelled or failed) while the broker may still hold a
       copy: never re-sent; a CANCEL goes out on reconnect; a late answer for
       it is swallowed. Not counted as unresolved. */
    bool abandoned;
    bool accepted; /* a detached job's task: the broker said ACCEPTED (durable) */
    /* Arguments from ZX__RTASK_FRAME_MIN bytes on: copied once, at submit, straight
       into the ZeroMQ message that carries them, and sent shared
       (ZFRAME_REUSE: reference counted, no copy) on every send and re-send.
       Smaller ones stay inline in data, where one allocation is cheaper. */
    zframe_t *payload;
    char data[]; /* fn, NUL, args (when inline) */
};

/* A cancel waiting for the actor: lives on the cancelling thread's stack,
   listed in ex->reqs under ex->lock until DECIDED. */
enum { ZX__REQ_NEW, ZX__REQ_SENT, ZX__REQ_DECIDED };
typedef struct zx__rreq zx__rreq_t;
struct zx__rreq {
    zx__link_t link; /* in ex->reqs */
    zx_future_t *future;
    uint64_t seq;
    bool terminate;
    bool force; /* the wait ran out: decide locally */
    int state;
    bool result;
};

static inline zx__rtask_t *zx__rtask_of(zx__link_t *k)
{
    return k ? ZX__CONTAINER(k, zx__rtask_t, link) : NULL;
}

static inline zx__rreq_t *zx__rreq_of(zx__link_t *k)
{
    return k ? ZX__CONTAINER(k, zx__rreq_t, link) : NULL;
}

enum { ZX__RIO_CONNECTING, ZX__RIO_CONNECTED };

/* State of whoever holds ex->iolock: the actor, a submitting thread, or a
   leader (remote_io.c). */
typedef struct {
    zsock_t *dealer;
    zsock_t *monitor; /* its handshake events (zx_monitor.h); NULL: unwatched */
    /* The dealer's libzmq handle and the two sockets' ZMQ_FDs (-1: none),
       resolved once when the actor starts: zsock_resolve and zsock_fd cost
       more than the getsockopt or poll they would precede on every turn. */
    void *dealer_h;
    int dealer_fd;
    int monitor_fd;
    /* Left by whoever lets go of iolock for the next holder (the ZMQ_FD
       caveat, remote_io.c): a message may wait on the dealer, or an event on
       the monitor, that their ZMQ_FD will not signal again. false: the
       last holder read to EAGAIN or asked ZMQ_EVENTS after its last use. */
    bool more;
    bool mon_more;
    int state;
    /* The broker refused our handshake (zx_monitor.h): futures fail at once
       with refusal as their message until a handshake succeeds; libzmq
       gave the connection up, so the actor reconnects at retry_at. */
    bool refused;
    bool reconnect;   /* libzmq will not reconnect by itself: we do at retry_at */
    int hs_fails;     /* handshakes failed without detail since the last success */
    int64_t retry_at; /* zclock_mono ms */
    int64_t retry_ms; /* the next backoff: heartbeat, doubling up to S_RETRY_MAX */
    char refusal[384];
    bool need_resend;   /* re-send everything after the next WELCOME */
    bool held;          /* the send window keeps tasks in the outbox */
    uint64_t held_need; /* argument bytes of the first task it keeps */
    bool have_broker;   /* broker_id is valid */
    bool kick;          /* run the control work (outbox, cancels) this turn */
    /* zclock_mono ms of the next tick (the actor's or a leader's); atomic:
       the actor reads it without iolock while a leader may move it */
    _Atomic int64_t next_tick;
    uint8_t broker_id[ZXP_ID_LEN];
    int64_t last_rx;        /* last message from the broker (start time before any) */
    int64_t broker_hb;      /* the broker's announced heartbeat, ms */
    uint64_t broker_max;    /* the broker's max_msg from WELCOME; 0 until known */
    uint64_t rx_bytes;      /* result payload bytes read on this connection (HEARTBEAT says) */
    uint64_t rx_said;       /* rx_bytes as last said */
    zx__seqtab_t table;     /* the pending table: sent tasks by seq, until resolved */
    uint64_t pending_bytes; /* argument bytes of the tasks in it (the send window) */
    zxp_in_t in;
    zxp_out_t out;  /* SUBMIT / CANCEL batches */
    zxp_out_t out2; /* CANCELs sent from callbacks while out is in use */
    zxp_drops_t drops;
    uint64_t unknown; /* answers for tasks we no longer hold */
} zx__rio_t;

typedef struct {
    struct zx_executor base; /* first: a zx_executor_t * is a remote_t * */
    char *endpoint;          /* as given: one endpoint or a list (zx_endpoints.h) */
    zx__eps_t eps;           /* under iolock: the list, its current endpoint */
    int64_t ep_since;        /* under iolock: when the current endpoint became current */
    char *name;
    zx__cluster_t *cluster;
    uint8_t session[ZXP_ID_LEN];
    int64_t hb_ms;
    int liveness;
    int64_t timeout_ms; /* broker_timeout */
    size_t max_batch;
    uint64_t max_inflight; /* argument bytes sent and unresolved (send window) */
    int efd;               /* wakes the actor */
    zactor_t *actor;
    pthread_mutex_t iolock; /* io and the socket (see the top) */
    atomic_int leaders;     /* threads between lead_enter and the end of lead */
    atomic_bool deaf;       /* the actor sleeps without the socket's fd (remote_io.c) */
    atomic_bool leading;    /* a thread leads (zx__remote_leading) */
    zx__rio_t io;

    pthread_mutex_t lock;
    pthread_cond_t cond; /* unresolved reached 0, a cancel was decided */
    /* under lock: */
    zx__list_t outbox;  /* zx__rtask_t not yet sent, in seq order */
    uint64_t out_bytes; /* argument bytes in the outbox */
    uint64_t next_seq;
    uint64_t sent_upto; /* every seq <= this has left the outbox */
    size_t unresolved;  /* futures of this executor not yet done by us */
    bool accepting;
    bool cancel_all;
    bool connected;
    bool actor_dead;
    zx__list_t reqs; /* zx__rreq_t waiting for the actor */
    int waiters;
    zx__sec_t *sec; /* CURVE keys and signer (common/security.c) */
    /* A detached job's session (zx_options_t.detach): HELLO says JOB|ACCEPT. */
    bool detach;
    /* under iolock and lock: zx_executor_detach said BYE; the actor is quiet */
    bool detached;
    uint64_t accept_events; /* under lock: ACCEPTED batches seen (zx_executor_detach waits) */
} zx__remote_t;

/* ---- remote_io.c ---------------------------------------------------------------- */

/* The actor's body (zactor_new(zx__remote_actor, ex)): owns the socket
   until $TERM, then fails what is left and marks the actor dead. */
void zx__remote_actor(zsock_t *pipe, void *arg);
/* Whether this thread is ex's actor (done-callbacks of ex run there). */
bool zx__remote_on_actor(const zx__remote_t *ex);
/* Wakes the actor (its eventfd). */
void zx__remote_wake(zx__remote_t *ex);
/* A lone task (nothing in flight) leaves from the submitting thread when the
   actor sleeps: true if it was sent here, false if the actor must be woken. */
bool zx__remote_submit_here(zx__remote_t *ex);
/* Leader/follower (zx__executor_ops_t.lead_enter, .lead): a thread waiting
   on futures of ex reads the socket itself while the actor sleeps. */
bool zx__remote_lead_enter(zx_executor_t *base);
int zx__remote_lead(zx_executor_t *base, bool (*done)(void *arg), void *arg, int64_t until_us,
                    int64_t spin_until_us);
/* destroy: waits until no thread is between lead_enter and the end of lead. */
void zx__remote_leaders_wait(zx__remote_t *ex);
/* A cancel from a done-callback on the actor thread, decided at once. */
bool zx__remote_cancel_on_actor(zx__remote_t *ex, zx_future_t *f, bool terminate);
/* Under ex->lock: n futures the executor counted are resolved. */
void zx__remote_resolved_locked(zx__remote_t *ex, size_t n);
/* Under ex->lock: takes a task that was never sent out of the outbox. */
void zx__remote_outbox_unlink(zx__remote_t *ex, zx__rtask_t *t);
/* Frees a task record and its reference to the future. Accepts NULL. */
void zx__rtask_free(zx__rtask_t *t);
/* zx_executor_detach's step: if every task up to seq upto is ACCEPTED (or
   resolved), says BYE and ends the futures still pending (ZX_EDETACHED for
   those the broker holds, cancelled for those never sent): ZX_OK. Else
   ZX_ETIMEOUT (nothing changed), or ZX_ESHUTDOWN when the executor can no
   longer detach. */
int zx__remote_detach_try(zx__remote_t *ex, uint64_t upto);

/* ---- remote.c, shared with the job client (job.c) ---------------------------------- */

/* A random session id (never starting with 0, which ZeroMQ reserves). */
void zx__random_session(uint8_t *id);
/* A DEALER to a broker's client endpoint: zexec's socket options, session
   as routing id, CURVE and signing from o (*sec_p), a handshake monitor
   (*monitor_p, may be NULL), connected. ZX_OK, or a ZX_E* code (logged);
   on failure the caller destroys what was made (monitor, socket, sec). */
int zx__client_connect(const char *endpoint, const zx_options_t *o, const uint8_t *session,
                       zx__sec_t **sec_p, zsock_t **dealer_p, zsock_t **monitor_p);

/* ---- remote.c ------------------------------------------------------------------- */

/* A pair of brokers (ex->eps holds more than one endpoint): the current one
   is silent or passive (why says which), so the DEALER leaves it for the
   next one; the caller says HELLO there and WELCOME re-sends what is
   unresolved. Whoever holds iolock (the actor or a leader). false with a
   single endpoint. */
bool zx__remote_next_broker(zx__remote_t *ex, const char *why, int64_t now);

#endif
