/*  zx_worker_int.h - internals of the worker node, shared by the files of worker/.

    A worker node is one main loop (loop.c, with the broker session in
    session.c and the embeddable API in worker.c; their shared record is in
    zxw_node.h) that owns the DEALER to the broker and every job record, a
    thread pool (tpool.c) whose threads take jobs from a locked queue, and a
    process pool (ppool.c) whose children are forked by a fork server
    (forksrv.c) that was itself forked before any thread or ZeroMQ context
    existed. Platform calls live in platform.c.

    Ownership: the main loop allocates and frees every job. A thread-pool job
    is lent to the pool while queued or running; its state field is guarded
    by the pool's lock, which is also where "start" and "cancel" race and
    exactly one wins. Process-pool jobs are only ever touched by the main
    thread.
*/
#ifndef ZX_WORKER_INT_H
#define ZX_WORKER_INT_H

#include "zexec_worker.h"
#include "zx_list.h"
#include "zx_proto.h"
#include "zx_task.h"

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* Verbosity of the worker's logs: 0 quiet (warnings and errors), 1 normal,
   2 verbose (per-task debug lines). Set by zexec-worker's flags. */
extern int zx__worker_log_level;

/* ---- functions ---------------------------------------------------------- */

typedef struct zxw_fn {
    char *name;
    zx_task_fn *fn;
    int pools; /* ZX_POOLS_* */
    bool exec; /* the built-in exec: needs --allow-exec */
    /* Its thread-pool runs in a row that took at most the loop's bound
       (loop.c, s_note_run); under the worker's lock. */
    int32_t short_runs;
} zxw_fn_t;

/* The built-ins (builtins.c). node is what "pid" reports. */
void zxw_builtins_set_node(const char *node);
zx_task_fn zxw_builtin_echo, zxw_builtin_sleep, zxw_builtin_fail, zxw_builtin_pid, zxw_builtin_exec;

/* Maps a raised error to a status: TimeLimitError -> TIMELIMIT, MemoryError
   -> MEMORY, else st unchanged. Both pools use it, so a function can report
   those kinds itself. */
int zxw_status_of(const zx_task_t *task, int st);

/* A result larger than the largest frame the broker accepts would cost the
   worker its connection: it is replaced by a ResultTooLarge error. */
int zxw_check_result_size(int st, msgpack_sbuffer *sb);

/* ---- jobs --------------------------------------------------------------- */

enum {
    ZXW_QUEUED = 0,   /* waiting in a pool's queue */
    ZXW_RUNNING = 1,  /* a thread or child runs it */
    ZXW_FINISHED = 2, /* result ready (thread: done event pending) */
    ZXW_TIMEDOUT = 3, /* thread past its limit: result discarded when it ends */
    ZXW_CANCELLED = 4 /* removed from the queue before it started */
};

#define ZXW_KEY_LEN (ZXP_ID_LEN + 8)

typedef struct zxw_job zxw_job_t;
struct zxw_job {
    uint8_t key[ZXW_KEY_LEN]; /* session, then seq big-endian: the table key */
    uint64_t seq;
    zxw_fn_t *fn; /* short_runs: under the worker lock */
    uint8_t pool; /* ZXP_POOL_THREAD or ZXP_POOL_PROCESS */
    uint32_t flags;
    int64_t limit_ms; /* time limit, 0: none */
    int64_t deadline; /* zclock_mono() deadline once started, 0: none */
    zframe_t *args;   /* NULL: the arguments are in args_small */
    /* the outcome */
    int status;
    uint32_t pid;
    zframe_t *result; /* NULL: the result, if any, is in result_small */
    /* Small arguments and results live in the job (jobs are recycled),
       not in a zframe each: two allocations and frees per task less. */
    uint8_t args_small[64];
    uint8_t result_small[64];
    uint8_t args_len;   /* bytes in args_small */
    uint8_t result_len; /* bytes in result_small */
    /* thread pool: guarded by the pool lock */
    int state;
    void *qhandle;                /* process pool: in its queue */
    zxw_job_t *tq_prev, *tq_next; /* thread pool: its queue, or a list to push */
    zxw_job_t *started_next;      /* event lists: each link is written once */
    zxw_job_t *done_next;
    bool quick;      /* set by zxw_tpool_take: its start and end came in one take */
    uint32_t run_us; /* how long its function ran (zxw_tpool_run) */
    /* main thread only */
    /* in one of the worker's lists (running, held or unacknowledged), or
       none: rlist NULL. Intrusive: a zlistx allocated a node per task. */
    zx__link_t rlink;
    zx__list_t *rlist;
    struct zxw_child *child; /* process pool: the child running it */
    bool held;               /* finished while the broker was away */
    bool unacked;            /* sent, kept until the broker acknowledges it */
    bool has_token;          /* the TASK carried an attempt token: results carry it back */
    uint8_t token[16];
    uint32_t attempt;
    uint64_t sent_index; /* its WRESULT item's index since READY */
    zxw_job_t *free_next;
};

/* A job's arguments and result, wherever they are kept. */
static inline const void *zxw_job_args(const zxw_job_t *job, size_t *len)
{
    *len = job->args ? zframe_size(job->args) : job->args_len;
    return job->args ? zframe_data(job->args) : job->args_small;
}

static inline const void *zxw_job_result(const zxw_job_t *job, size_t *len)
{
    *len = job->result ? zframe_size(job->result) : job->result_len;
    return job->result ? zframe_data(job->result) : job->result_small;
}

/* The worker's lists of jobs: job goes on the end of l (it is on none). */
static inline void zxw_jlist_add(zx__list_t *l, zxw_job_t *job)
{
    zx__list_push_back(l, &job->rlink);
    job->rlist = l;
}

/* Takes job off the list it is on, if any. */
static inline void zxw_jlist_del(zxw_job_t *job)
{
    if (job->rlist) {
        zx__list_remove(job->rlist, &job->rlink);
        job->rlist = NULL;
    }
}

static inline zxw_job_t *zxw_jlist_first(const zx__list_t *l)
{
    return l->head ? ZX__CONTAINER(l->head, zxw_job_t, rlink) : NULL;
}

static inline zxw_job_t *zxw_jlist_next(const zxw_job_t *job)
{
    return job->rlink.next ? ZX__CONTAINER(job->rlink.next, zxw_job_t, rlink) : NULL;
}

/* Takes the first job off l and returns it, or NULL. */
static inline zxw_job_t *zxw_jlist_pop(zx__list_t *l)
{
    zxw_job_t *job = zxw_jlist_first(l);
    if (job) {
        zxw_jlist_del(job);
    }
    return job;
}

/* ---- jobs by key (jobtab.c) --------------------------------------------- */

typedef struct {
    zxw_job_t **slots;
    size_t mask;
    size_t count;
} zxw_jobtab_t;

int zxw_jobtab_init(zxw_jobtab_t *t); /* 0, or -1 out of memory */
void zxw_jobtab_fini(zxw_jobtab_t *t);
/* The job whose key (ZXW_KEY_LEN bytes) this is, or NULL. */
zxw_job_t *zxw_jobtab_get(const zxw_jobtab_t *t, const uint8_t *key);
/* Adds job under job->key, which must not be there. 0, or -1 out of memory. */
int zxw_jobtab_put(zxw_jobtab_t *t, zxw_job_t *job);
/* Removes the job with this key, if any. */
void zxw_jobtab_del(zxw_jobtab_t *t, const uint8_t *key);
/* Iteration: *pos = 0 first; NULL at the end. No puts or dels meanwhile. */
zxw_job_t *zxw_jobtab_next(const zxw_jobtab_t *t, size_t *pos);

/* ---- thread pool (tpool.c) ---------------------------------------------- */

typedef struct zxw_tpool zxw_tpool_t;

/* Starts n threads. NULL on failure. */
zxw_tpool_t *zxw_tpool_new(int n);
/* Stops the threads. Threads still running a task past its time limit are
   detached and the pool leaked (their functions may never return); returns
   false then. */
bool zxw_tpool_destroy(zxw_tpool_t **self_p);
/* A pipe fd that becomes readable when events wait. */
int zxw_tpool_fd(zxw_tpool_t *self);
/* Queues the jobs of a list linked by tq_next (tq_prev unset), in order,
   under one lock: the main loop pushes a message's tasks at once. */
void zxw_tpool_push(zxw_tpool_t *self, zxw_job_t *first);
/* True if the job was still queued: it is removed and will never run. */
bool zxw_tpool_cancel(zxw_tpool_t *self, zxw_job_t *job);
/* True if the job was running: it is marked TIMEDOUT (its done event still
   comes, and the main loop frees it then). */
bool zxw_tpool_expire(zxw_tpool_t *self, zxw_job_t *job);
/* Removes every queued job, passing each to fn (drain). */
void zxw_tpool_drop_queued(zxw_tpool_t *self, void (*fn)(void *arg, zxw_job_t *job), void *arg);
/* Takes the pending events: jobs that started, and jobs that ended, each in
   order. The lists are linked by started_next / done_next. disarm: also
   cancel the delayed wake-up for the starts taken (a pool thread taking the
   events itself, through the direct hook; the main loop's own wake-up has
   already replaced it). */
void zxw_tpool_take(zxw_tpool_t *self, zxw_job_t **started, zxw_job_t **done, bool disarm);
/* Called by a pool thread that just queued a done event and would wake the
   main loop: returns true if it handled the events itself (and the loop
   need not wake), false to wake the loop as usual. */
typedef bool zxw_tpool_direct_fn(void *arg);
void zxw_tpool_set_direct(zxw_tpool_t *self, zxw_tpool_direct_fn *fn, void *arg);
/* Tasks running, including ones past their limit. */
size_t zxw_tpool_busy(zxw_tpool_t *self);
/* Runs job's function as a pool thread does (status, result and run_us
   set), on the calling thread; sb is its reusable result buffer. */
void zxw_tpool_run(zxw_job_t *job, msgpack_sbuffer *sb);
/* take: one slot of the pool is taken by a task the main loop runs itself
   (no thread starts a queued task past the slots left); !take gives it
   back. */
void zxw_tpool_reserve(zxw_tpool_t *self, bool take);

/* ---- process pool (ppool.c, forksrv.c) ---------------------------------- */

typedef struct zxw_ppool zxw_ppool_t;
typedef struct zxw_child zxw_child_t;
typedef int zxw_init_fn(void);

/* What the fork server and its children need: a snapshot taken at fork. */
typedef struct {
    zhashx_t *fns;       /* name -> zxw_fn_t */
    zxw_init_fn **inits; /* plugin initialisers, NULL-terminated */
    size_t child_memory; /* RLIMIT_AS, 0: none */
    const char *node;
} zxw_child_cfg_t;

/* Callbacks into the main loop. */
typedef struct {
    void *arg;
    void (*started)(void *arg, zxw_job_t *job);
    /* job->status, ->result, ->pid are set; the pool forgets the job */
    void (*done)(void *arg, zxw_job_t *job);
} zxw_ppool_events_t;

/* Forks the fork server. Must run before any thread or ZeroMQ context. */
zxw_ppool_t *zxw_ppool_new(int procs, int max_tasks_per_child, const zxw_child_cfg_t *cfg);
void zxw_ppool_destroy(zxw_ppool_t **self_p);
/* Starts the children (after the main loop is set up). */
void zxw_ppool_start(zxw_ppool_t *self, const zxw_ppool_events_t *ev);
void zxw_ppool_push(zxw_ppool_t *self, zxw_job_t *job);
/* Cancel: ZXP_CANCEL_DONE (removed from the queue: never runs),
   ZXP_CANCEL_TERMINATED (running and terminate: its child is killed, no
   result follows) or ZXP_CANCEL_REFUSED. */
int zxw_ppool_cancel(zxw_ppool_t *self, zxw_job_t *job, bool terminate);
void zxw_ppool_drop_queued(zxw_ppool_t *self, void (*fn)(void *arg, zxw_job_t *job), void *arg);
size_t zxw_ppool_busy(zxw_ppool_t *self);
/* Poll integration: fills up to max items, returns how many. */
size_t zxw_ppool_poll_items(zxw_ppool_t *self, void *items, size_t max);
/* Handles the items filled by the last poll_items, then timers. */
void zxw_ppool_handle(zxw_ppool_t *self, void *items, size_t n);
/* Deadline (zclock_mono) of the next timer, or 0. */
int64_t zxw_ppool_next_timer(zxw_ppool_t *self);
size_t zxw_ppool_max_items(zxw_ppool_t *self);

/* Fork-server side (forksrv.c): never returns. */
void zxw_forksrv_main(int ctl, const zxw_child_cfg_t *cfg) __attribute__((noreturn));

/* Fork server <-> worker control messages (SOCK_SEQPACKET, one struct each;
   SPAWNED carries the child's socket as SCM_RIGHTS). */
enum {
    ZXW_CTL_SPAWN = 1,
    ZXW_CTL_KILL = 2,
    ZXW_CTL_SPAWNED = 3,
    ZXW_CTL_EXITED = 4,
    ZXW_CTL_FAILED = 5
};
typedef struct {
    int32_t op;
    int32_t pid;
    int32_t status; /* EXITED: waitpid status; FAILED: errno */
    int32_t maxrss; /* EXITED: peak resident size in KiB */
} zxw_ctl_t;

/* Worker <-> child frames on the child's stream socket: a uint32 length,
   then the body. Host byte order: both ends are the same machine. */
typedef struct {
    uint64_t seq;
    int64_t deadline; /* zclock_mono() */
    uint32_t flags;
    uint32_t fn_len; /* then fn_len bytes of name, then the args */
} zxw_ctask_t;
/* HELLO: status 0 and a uint64 body (the child's non-resident address
   space at start, for telling memory-limit deaths), or status 1 and why
   it could not start. */
enum { ZXW_CR_HELLO = 1, ZXW_CR_RESULT = 2 };
typedef struct {
    uint32_t kind;
    uint32_t status; /* then the result or error bytes */
} zxw_cres_t;

/* ---- platform (platform.c) ---------------------------------------------- */

int zxw_plat_socketpair(int type, int sv[2]);
int zxw_plat_send_ctl(int sock, const zxw_ctl_t *msg, int fd);
/* 1 with *msg (and *fd, -1 if none), 0 on EOF, -1 on error / nothing. */
int zxw_plat_recv_ctl(int sock, zxw_ctl_t *msg, int *fd);
int zxw_plat_set_nonblock(int fd, bool on);
bool zxw_plat_writev_all(int fd, struct iovec *iov, int n);
/* true when len bytes were read; false on EOF or error. */
bool zxw_plat_read_all(int fd, void *data, size_t len);
/* In a freshly forked fork server: die with the worker, ignore SIGINT/SIGTERM. */
void zxw_plat_server_setup(void);
/* Self-pipe for SIGCHLD: returns the read end, or -1. */
int zxw_plat_sigchld_pipe(void);
/* In a freshly forked child: die with the fork server, default crash
   signals (so a segfault ends the process with its signal), ignore
   SIGINT/SIGTERM/SIGPIPE, apply RLIMIT_AS. 0 or -1. */
int zxw_plat_child_setup(size_t child_memory);
/* "killed by signal 11 (Segmentation fault)" or "exited with status 3". */
void zxw_plat_describe_status(int status, char *buf, size_t len);
int zxw_plat_random(void *buf, size_t len);
/* Installs SIGINT/SIGTERM handlers that call fn(arg); restore puts back
   the previous ones. */
void zxw_plat_stop_handlers_install(void (*fn)(void *), void *arg);
void zxw_plat_stop_handlers_restore(void);
void zxw_plat_ignore_sigpipe(void);
/* Timer slack of the calling thread down to 1 ns (Linux; nothing elsewhere):
   a task's sleeps and timed waits end on time instead of up to 50 us late
   (the default slack), which is most of the overshoot measured on 0-2 ms
   sleeps (bench C). Threads and children started by it inherit it. */
void zxw_plat_precise_timers(void);
int zxw_plat_cores(void);
/* Bytes of this process's address space that are not resident (Linux
   /proc/self/statm), 0 when unknown. */
uint64_t zxw_plat_vm_nonresident(void);

/* exec: runs argv with its own pipes and process group, within deadline
   (zclock_mono, 0: none). */
typedef struct {
    const void *stdin_data;
    size_t stdin_len;
    const char *cwd;   /* NULL: inherit */
    char **env;        /* "K=V" additions, NULL-terminated, or NULL */
    size_t max_output; /* per stream */
    int64_t deadline;
} zxw_exec_opts_t;
typedef struct {
    int status; /* waitpid status */
    bool timed_out;
    int exec_errno;  /* the command could not be started */
    char *out, *err; /* malloc'd */
    size_t out_len, err_len;
    bool out_trunc, err_trunc;
    char err_tail[1024]; /* last bytes of stderr, even past max_output */
    size_t err_tail_len;
} zxw_exec_result_t;
int zxw_plat_exec(char *const argv[], const zxw_exec_opts_t *opts, zxw_exec_result_t *res);
void zxw_exec_result_fini(zxw_exec_result_t *res);

#endif
