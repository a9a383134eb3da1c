/*  zxw_node.h - the worker node's record (struct zx_worker) and the
    functions its three files share:

      worker.c   the embeddable API of zexec_worker.h: a node's record, its
                 functions and plugins, stop and destroy
      session.c  the broker session: job records, what is sent (READY,
                 WSTARTED, WRESULT, WCANCELLED, CREDIT, DRAIN) and what each
                 broker command does, results held while the broker is away,
                 (re)connecting
      loop.c     zx_worker_run and its loop: the poll over the socket and the
                 pools, thread-pool events and time limits, heartbeats,
                 liveness, draining, and a pool thread standing in for the
                 sleeping loop

    The pools, the job table and the platform calls they use are declared in
    zx_worker_int.h.
*/
#ifndef ZXW_NODE_H
#define ZXW_NODE_H

#include "zx_endpoints.h"
#include "zx_monitor.h"
#include "zx_security.h"
#include "zx_worker_int.h"

#include <pthread.h>

#define ZXW_HELD_MAX_JOBS 10000 /* READY lists them: keep it under the header limit */
#define ZXW_HELD_MAX_BYTES (256u << 20)
#define ZXW_BATCH_BYTES (16u << 20) /* flush a result batch past this */
#define ZXW_RECV_BURST 256          /* messages read per loop turn */
#define ZXW_JOBS_MAX 1000000        /* local sanity bound; the broker's credits rule */
/* Job records kept for reuse: as many as results may wait for the broker's
   acknowledgement, since an acknowledgement frees that many at once and
   the next tasks would allocate them all again (344 bytes each: at most
   3.4 MB kept after a peak, which malloc's heap would mostly keep too). */
#define ZXW_FREE_JOBS ZXW_HELD_MAX_JOBS

#define ZXW_INFO(...)                                                                              \
    do {                                                                                           \
        if (zx__worker_log_level >= 1)                                                             \
            zsys_info(__VA_ARGS__);                                                                \
    } while (0)
#define ZXW_DEBUG(...)                                                                             \
    do {                                                                                           \
        if (zx__worker_log_level >= 2)                                                             \
            zsys_debug(__VA_ARGS__);                                                               \
    } while (0)

struct zx_worker {
    char *endpoint; /* as given: one endpoint or a list (zx_endpoints.h) */
    zx__eps_t eps;  /* the list and the broker currently talked to */
    char *node;
    zx_worker_opts_t opts; /* normalised; opts.node points at node */
    zhashx_t *fns;         /* name -> zxw_fn_t */
    zlistx_t *plugins;     /* loaded plugins (worker.c) */
    zxw_init_fn **inits;   /* NULL-terminated */
    size_t ninits;
    zxw_child_cfg_t cfg;
    int stop_pipe[2];
    int stop_requests; /* atomic: written from signal handlers */
    bool running;
    pthread_mutex_t lock; /* everything below, while running (see loop.c) */
    bool looping;         /* the loop runs: a pool thread may stand in for it */

    /* while running */
    uint8_t wid[ZXP_ID_LEN];
    uint32_t pid;
    zsock_t *dealer;
    /* The dealer's libzmq handle and ZMQ_FD, read once per socket
       (zsock_fd is a getsockopt each loop turn otherwise), and a count of
       the sockets made, which tells the loop that the socket was replaced
       (a handle's address may come back). */
    void *dealer_h;
    int dealer_fd;
    uint32_t dealer_gen;
    zsock_t *monitor;    /* the dealer's handshake events (zx_monitor.h), read each heartbeat */
    bool refused;        /* the broker refused our last handshake (logged once per streak) */
    uint64_t broker_max; /* the broker's max_msg from WELCOME; 0 until known */
    /* Results sent but not yet acknowledged (the broker's HEARTBEAT counts
       the WRESULT items it got since our READY): kept, with their index in
       sent order, so that a broker lost meanwhile gets them again. Only
       once the broker has acknowledged anything (an older one never does). */
    zx__list_t unacked;
    size_t unacked_bytes;
    uint64_t results_sent; /* WRESULT items sent since our READY */
    bool broker_acks;
    bool awaiting_welcome;   /* READY sent, nothing heard since */
    int64_t ready_at;        /* zclock_mono ms of the last READY */
    uint8_t ready_epoch[16]; /* signing: the broker session that READY was signed for */
    zxw_tpool_t *tpool;
    zxw_ppool_t *ppool;
    zxw_jobtab_t jobs;   /* key -> job: every job the broker should hear of */
    zxw_fn_t *last_fn;   /* the function of the last task (session.c s_on_task) */
    zx__list_t trunning; /* thread-pool jobs running (for their deadlines) */
    zx__list_t held;     /* finished while the broker was away */
    size_t held_bytes;
    zxw_job_t *free_jobs;
    size_t nfree;
    zxp_in_t in;
    zxp_out_t out_started, out_result, out_cancelled;
    bool started_open, result_open, cancelled_open;
    size_t result_bytes;
    uint32_t credit_thread; /* late-freed thread slots to report */
    zxp_drops_t drops;
    bool connected; /* the broker spoke since the last (re)connect */
    int64_t hb_ms;
    int64_t last_recv, next_hb;
    bool draining, forced, said_drain;
    zhashx_t *given; /* hex keys of tasks dropped unstarted at drain: a WCANCEL for
                        one is answered DONE (the broker runs it elsewhere) */
    size_t tzombies; /* thread jobs past their limit, still running */
    size_t tjobs;    /* thread jobs pushed and not yet ended for the broker */
    zxw_job_t *tpush_head, *tpush_tail; /* thread jobs of this message, not pushed yet */
    int tpush_n;
    zx__sec_t *sec; /* CURVE keys and signer (security.c) */
    /* A lone task of a short function the loop runs itself (loop.c) */
    int64_t inline_us;         /* a function qualifies while its runs take at most this; 0: never */
    zxw_job_t *inline_next;    /* chosen by s_on_task, run once its message is handled */
    zxw_job_t *inline_job;     /* running on the loop thread, the lock let go */
    msgpack_sbuffer inline_sb; /* its result buffer, reused */
    int rescue_fd;             /* timerfd the rescue thread waits on; -1: no loop runs */
    pthread_t rescue_thread;
    pthread_cond_t rescue_cond; /* signalled when the rescue thread lets go of the loop */
    bool rescuing;              /* the rescue thread runs the loop meanwhile */
    bool rescue_stop;
    bool loop_over;                /* the loop ended the run (a stop), maybe on the rescue thread */
    int64_t rescue_at;             /* when the current run on the loop thread is rescued (ns) */
    int64_t rescue_armed;          /* when the timer fires (ns), 0: not armed (loop.c) */
    uint64_t inline_runs, rescues; /* counts, logged at exit (verbose) */
};

/* ---- worker.c ----------------------------------------------------------------- */

/* Wakes the loop (whether to stop is stop_requests' business). */
void zxw_kick(zx_worker_t *w);

/* ---- session.c ---------------------------------------------------------------- */

/* Job records come from a free list; free releases their frames. */
zxw_job_t *zxw_job_new(zx_worker_t *w);
void zxw_job_free(zx_worker_t *w, zxw_job_t *job);
/* A fresh DEALER to the broker with the node's routing id, then READY. */
int zxw_connect(zx_worker_t *w);
/* The broker went silent or is stopping: a fresh DEALER, READY again,
   results held until the broker speaks. */
void zxw_reconnect(zx_worker_t *w, const char *why);
/* Reads the DEALER's handshake events; logs a refusal once. */
void zxw_check_handshake(zx_worker_t *w);
/* One message from the broker (consumed): its signature checked, decoded
   into w->in and handled. */
void zxw_on_message(zx_worker_t *w, zmsg_t **msg_p);
/* Handles the message zxp_recv (or zxp_decode) left in w->in; rc is what
   it returned (not ZXP_E_AGAIN): a malformed message is counted dropped. */
void zxw_on_decoded(zx_worker_t *w, int rc);
/* Sends the batches of this turn (STARTED before RESULT) and late credit. */
void zxw_flush(zx_worker_t *w);
/* A job started: its WSTARTED item. */
void zxw_emit_started(zx_worker_t *w, zxw_job_t *job);
/* job is finished with job->status/result/pid set: send or hold, then
   forget it. slot_freed is false only for a thread past its limit. */
void zxw_job_finish(zx_worker_t *w, zxw_job_t *job, bool slot_freed);
/* Takes no new tasks: queued ones are dropped (the broker re-queues them),
   DRAIN is said once connected. */
void zxw_begin_drain(zx_worker_t *w);
/* Whether the task just made a job (counted in tjobs, not pushed) may run
   on the loop thread (loop.c). */
bool zxw_may_run_here(zx_worker_t *w, const zxw_job_t *job);
/* The process pool's events (zxw_ppool_events_t; arg is the node). */
void zxw_pp_started(void *arg, zxw_job_t *job);
void zxw_pp_done(void *arg, zxw_job_t *job);

#endif
