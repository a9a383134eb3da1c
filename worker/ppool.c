/*  ppool.c - the worker's process pool, main-loop side: M children made by
    the fork server (forksrv.c), a FIFO queue of jobs, time limits, crash
    handling and replacement.

    Everything here runs on the worker's main thread, so starting a job and
    cancelling it can never race. Each child has a stream socket to the
    worker: a task frame goes in, a result frame comes out (zx_worker_int.h).
    The socket is read without blocking, straight into the result frame, so
    a large result costs one copy.

    Two things tell of a child's death: EOF on its socket, and the fork
    server's EXITED report with the wait status. Only the second names the
    signal or exit status, so a child that reaches EOF while running a task
    stays in its slot until the report comes, then its task fails with
    CRASHED. A child we kill (time limit, terminate) leaves its slot at once
    and its replacement is asked for at once; its EXITED report is ignored.
*/
#include "zx_worker_int.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

enum { C_SPAWNING, C_IDLE, C_BUSY, C_DEAD };

#define ZXW_CHILD_HDR 12 /* uint32 length + zxw_cres_t */

struct zxw_child {
    pid_t pid;
    int fd;
    int state;
    int slot;
    zxw_job_t *job;
    int ntasks;
    uint8_t hdr[ZXW_CHILD_HDR];
    size_t hdr_got;
    uint32_t kind, status;
    zframe_t *body;
    size_t body_len, body_got;
    char *start_error;
    uint64_t nonres; /* address space not resident at start */
};

typedef struct {
    int slot;
    pid_t pid;
} s_polled_t;

struct zxw_ppool {
    int procs, max_tasks;
    const zxw_child_cfg_t *cfg;
    pid_t server;
    int ctl;
    bool broken, started;
    zxw_child_t **slots;
    int spawning;
    zlistx_t *queue;
    zxw_ppool_events_t ev;
    int64_t respawn_at;
    int start_failures;
    s_polled_t *polled;
    size_t npolled;
    size_t busy;
};

static void s_child_free(zxw_ppool_t *self, zxw_child_t *c);

zxw_ppool_t *zxw_ppool_new(int procs, int max_tasks_per_child, const zxw_child_cfg_t *cfg)
{
    zxw_ppool_t *self = calloc(1, sizeof *self);
    if (!self) {
        return NULL;
    }
    self->procs = procs;
    self->max_tasks = max_tasks_per_child;
    self->cfg = cfg;
    self->ctl = -1;
    self->slots = calloc((size_t)procs, sizeof *self->slots);
    self->polled = calloc((size_t)procs, sizeof *self->polled);
    self->queue = zlistx_new();
    int sv[2];
    if (!self->slots || !self->polled || !self->queue ||
        zxw_plat_socketpair(SOCK_SEQPACKET, sv) != 0) {
        goto fail;
    }
    pid_t pid = fork();
    if (pid < 0) {
        close(sv[0]);
        close(sv[1]);
        goto fail;
    }
    if (pid == 0) {
        close(sv[0]);
        zxw_forksrv_main(sv[1], cfg);
    }
    close(sv[1]);
    self->server = pid;
    self->ctl = sv[0];
    zxw_plat_set_nonblock(self->ctl, true);
    return self;
fail:
    zsys_error("worker: cannot start the process pool's fork server: %s", strerror(errno));
    zxw_ppool_destroy(&self);
    return NULL;
}

void zxw_ppool_destroy(zxw_ppool_t **self_p)
{
    zxw_ppool_t *self = *self_p;
    if (!self) {
        return;
    }
    *self_p = NULL;
    for (int i = 0; self->slots && i < self->procs; i++) {
        if (self->slots[i]) {
            s_child_free(self, self->slots[i]);
        }
    }
    if (self->ctl >= 0) {
        close(self->ctl); /* the server kills what is left and exits */
    }
    if (self->server > 0) {
        int64_t give_up = zclock_mono() + 3000;
        while (waitpid(self->server, NULL, WNOHANG) == 0) {
            if (zclock_mono() > give_up) {
                kill(self->server, SIGKILL);
                waitpid(self->server, NULL, 0);
                break;
            }
            zclock_sleep(5);
        }
    }
    zlistx_destroy(&self->queue);
    free(self->slots);
    free(self->polled);
    free(self);
}

static int64_t s_backoff_ms(int failures)
{
    int64_t ms = 100LL << (failures < 6 ? failures : 6);
    return ms < 5000 ? ms : 5000;
}

static void s_request_spawns(zxw_ppool_t *self)
{
    if (self->broken || !self->started) {
        return;
    }
    if (self->respawn_at) {
        if (zclock_mono() < self->respawn_at) {
            return;
        }
        self->respawn_at = 0;
    }
    int live = 0;
    for (int i = 0; i < self->procs; i++) {
        live += self->slots[i] != NULL;
    }
    for (int need = self->procs - live - self->spawning; need > 0; need--) {
        zxw_ctl_t msg = {ZXW_CTL_SPAWN, 0, 0, 0};
        if (zxw_plat_send_ctl(self->ctl, &msg, -1) != 0) {
            break; /* the server is gone: EOF on ctl says so next */
        }
        self->spawning++;
    }
}

static void s_child_free(zxw_ppool_t *self, zxw_child_t *c)
{
    if (c->fd >= 0) {
        close(c->fd);
    }
    zframe_destroy(&c->body);
    free(c->start_error);
    if (self->slots[c->slot] == c) {
        self->slots[c->slot] = NULL;
    }
    free(c);
}

/* Ends a job the pool held with a failure. */
static void s_fail(zxw_ppool_t *self, zxw_job_t *job, int status, const char *type, const char *msg)
{
    job->status = status;
    zframe_destroy(&job->result);
    job->result = zxp_error_frame(type, msg, "");
    job->child = NULL;
    self->ev.done(self->ev.arg, job);
}

/* Kills c through the fork server (which only kills what it has not
   reaped) and frees its slot for a replacement at once. */
static void s_kill_child(zxw_ppool_t *self, zxw_child_t *c)
{
    zxw_ctl_t msg = {ZXW_CTL_KILL, c->pid, 0, 0};
    zxw_plat_send_ctl(self->ctl, &msg, -1);
    s_child_free(self, c);
    s_request_spawns(self);
}

static void s_broken(zxw_ppool_t *self, const char *why)
{
    if (self->broken) {
        return;
    }
    self->broken = true;
    zsys_error("worker: the process pool is broken: %s; process-pool tasks now fail", why);
    char msg[256];
    snprintf(msg, sizeof msg, "the process pool of node %s is broken: %s", self->cfg->node, why);
    for (int i = 0; i < self->procs; i++) {
        zxw_child_t *c = self->slots[i];
        if (c) {
            zxw_job_t *job = c->job;
            s_child_free(self, c);
            if (job) {
                self->busy--;
                s_fail(self, job, ZXP_ST_CRASHED, "ProcessCrashed", msg);
            }
        }
    }
    zxw_job_t *job;
    while ((job = zlistx_detach(self->queue, NULL))) {
        job->qhandle = NULL;
        s_fail(self, job, ZXP_ST_CRASHED, "ProcessCrashed", msg);
    }
    close(self->ctl);
    self->ctl = -1;
}

static void s_child_eof(zxw_child_t *c)
{
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    if (c->state != C_BUSY) {
        c->state = C_DEAD; /* its EXITED report frees it */
    }
}

static void s_retire(zxw_ppool_t *self, zxw_child_t *c)
{
    /* EOF makes the child exit on its own; its EXITED report is ignored */
    s_child_free(self, c);
    s_request_spawns(self);
}

/* A complete frame from c. True if c was freed. */
static bool s_child_frame(zxw_ppool_t *self, zxw_child_t *c, zframe_t **body_p)
{
    if (c->kind == ZXW_CR_HELLO) {
        if (c->state == C_SPAWNING && c->status == 0) {
            c->state = C_IDLE;
            if (zframe_size(*body_p) == sizeof c->nonres) {
                memcpy(&c->nonres, zframe_data(*body_p), sizeof c->nonres);
            }
            self->start_failures = 0;
        } else if (c->state == C_SPAWNING) {
            free(c->start_error);
            c->start_error = strndup((const char *)zframe_data(*body_p), zframe_size(*body_p));
        }
        zframe_destroy(body_p);
        return false;
    }
    if (c->kind != ZXW_CR_RESULT || c->state != C_BUSY || !c->job) {
        zframe_destroy(body_p);
        return false;
    }
    zxw_job_t *job = c->job;
    c->job = NULL;
    c->state = C_IDLE;
    c->ntasks++;
    self->busy--;
    job->child = NULL;
    job->status = c->status <= ZXP_ST_MAX ? (int)c->status : ZXP_ST_CRASHED;
    zframe_destroy(&job->result);
    job->result = *body_p;
    *body_p = NULL;
    bool retire = (self->max_tasks > 0 && c->ntasks >= self->max_tasks) ||
                  job->status == ZXP_ST_MEMORY; /* a child that ran out: start afresh */
    if (retire) {
        s_retire(self, c);
    }
    self->ev.done(self->ev.arg, job);
    return retire;
}

/* Reads what c has sent. True if c was freed. */
static bool s_child_read(zxw_ppool_t *self, zxw_child_t *c)
{
    while (c->fd >= 0) {
        if (c->hdr_got == ZXW_CHILD_HDR && c->body_got == c->body_len) {
            c->hdr_got = 0;
            zframe_t *body = c->body ? c->body : zframe_new(NULL, 0);
            c->body = NULL;
            c->body_len = c->body_got = 0;
            if (s_child_frame(self, c, &body)) {
                return true;
            }
            continue;
        }
        ssize_t n;
        if (c->hdr_got < ZXW_CHILD_HDR) {
            n = recv(c->fd, c->hdr + c->hdr_got, ZXW_CHILD_HDR - c->hdr_got, MSG_DONTWAIT);
        } else {
            n = recv(c->fd, (char *)zframe_data(c->body) + c->body_got, c->body_len - c->body_got,
                     MSG_DONTWAIT);
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return false;
        }
        if (n <= 0) {
            s_child_eof(c);
            return false;
        }
        if (c->hdr_got == ZXW_CHILD_HDR) {
            c->body_got += (size_t)n;
            continue;
        }
        c->hdr_got += (size_t)n;
        if (c->hdr_got < ZXW_CHILD_HDR) {
            continue;
        }
        uint32_t len;
        memcpy(&len, c->hdr, 4);
        memcpy(&c->kind, c->hdr + 4, 4);
        memcpy(&c->status, c->hdr + 8, 4);
        if (len < 8 || (int64_t)len - 8 > zxp_max_msg()) {
            zsys_error("worker: process-pool child %d sent a malformed frame; killing it",
                       (int)c->pid);
            zxw_job_t *job = c->job;
            if (job) {
                self->busy--;
            }
            s_kill_child(self, c);
            if (job) {
                s_fail(self, job, ZXP_ST_CRASHED, "ProcessCrashed",
                       "the child running the task broke the pool protocol");
            }
            return true;
        }
        c->body_len = len - 8;
        c->body_got = 0;
        c->body = c->body_len ? zframe_new(NULL, c->body_len) : NULL;
    }
    return false;
}

/* A crash counts as running out of memory when the child had a limit and
   its address space came within 5% of it: RLIMIT_AS makes allocations fail,
   and code that does not check for that then crashes or aborts. The size at
   death is estimated as the peak resident size plus what was mapped but
   not resident when the child started (libraries' untouched pages). */
static bool s_died_of_memory(zxw_ppool_t *self, zxw_child_t *c, int status, int64_t maxrss_kib)
{
    size_t limit = self->cfg->child_memory;
    uint64_t vm = (uint64_t)maxrss_kib * 1024 + c->nonres;
    return limit > 0 && WIFSIGNALED(status) && vm >= limit / 20 * 19;
}

static void s_child_exited(zxw_ppool_t *self, zxw_child_t *c, int status, int64_t maxrss_kib)
{
    /* a child that wrote its result and then died still delivers it */
    if (c->fd >= 0 && s_child_read(self, c)) {
        return;
    }
    char what[128];
    zxw_plat_describe_status(status, what, sizeof what);
    if (c->state == C_SPAWNING) {
        self->start_failures++;
        self->respawn_at = zclock_mono() + s_backoff_ms(self->start_failures);
        zsys_error("worker: process-pool child %d failed to start: %s (%s)", (int)c->pid,
                   c->start_error ? c->start_error : "died before it was ready", what);
        if (self->start_failures >= 3) {
            /* like Python's failing initializer: the waiting tasks fail
               rather than wait for a pool that cannot start */
            char msg[512];
            snprintf(msg, sizeof msg, "process-pool children on node %s fail to start: %s (%s)",
                     self->cfg->node, c->start_error ? c->start_error : "died before ready", what);
            zxw_job_t *job;
            while ((job = zlistx_detach(self->queue, NULL))) {
                job->qhandle = NULL;
                s_fail(self, job, ZXP_ST_CRASHED, "ProcessCrashed", msg);
            }
        }
    } else if (c->state == C_BUSY && c->job) {
        zxw_job_t *job = c->job;
        c->job = NULL;
        self->busy--;
        char msg[512];
        bool memory = s_died_of_memory(self, c, status, maxrss_kib);
        snprintf(msg, sizeof msg, "child pid %d %s while running %s on node %s%s", (int)c->pid,
                 what, job->fn->name, self->cfg->node, memory ? ", at its memory limit" : "");
        if (zx__worker_log_level >= 1) {
            zsys_warning("worker: process-pool %s (peak resident %lld KiB); replacing it", msg,
                         (long long)maxrss_kib);
        }
        s_child_free(self, c);
        s_request_spawns(self);
        if (memory) {
            s_fail(self, job, ZXP_ST_MEMORY, "MemoryError", msg);
        } else {
            s_fail(self, job, ZXP_ST_CRASHED, "ProcessCrashed", msg);
        }
        return;
    } else if (c->state != C_DEAD || WIFSIGNALED(status) || WEXITSTATUS(status) != 0) {
        zsys_warning("worker: idle process-pool child %d %s; replacing it", (int)c->pid, what);
    }
    s_child_free(self, c);
    s_request_spawns(self);
}

static void s_ctl_read(zxw_ppool_t *self)
{
    for (;;) {
        zxw_ctl_t m;
        int fd = -1;
        int rc = zxw_plat_recv_ctl(self->ctl, &m, &fd);
        if (rc == 0) {
            s_broken(self, "its fork server died");
            return;
        }
        if (rc < 0) {
            return;
        }
        if (m.op == ZXW_CTL_SPAWNED) {
            self->spawning--;
            int slot = -1;
            for (int i = 0; i < self->procs && slot < 0; i++) {
                if (!self->slots[i]) {
                    slot = i;
                }
            }
            zxw_child_t *c = slot >= 0 && fd >= 0 ? calloc(1, sizeof *c) : NULL;
            if (!c) {
                zxw_ctl_t k = {ZXW_CTL_KILL, m.pid, 0, 0};
                zxw_plat_send_ctl(self->ctl, &k, -1);
                if (fd >= 0) {
                    close(fd);
                }
                continue;
            }
            c->pid = m.pid;
            c->fd = fd;
            c->slot = slot;
            c->state = C_SPAWNING;
            zxw_plat_set_nonblock(fd, true);
            self->slots[slot] = c;
        } else if (m.op == ZXW_CTL_FAILED) {
            self->spawning--;
            self->start_failures++;
            self->respawn_at = zclock_mono() + s_backoff_ms(self->start_failures);
            zsys_error("worker: the fork server cannot start a child: %s", strerror(m.status));
        } else if (m.op == ZXW_CTL_EXITED) {
            for (int i = 0; i < self->procs; i++) {
                zxw_child_t *c = self->slots[i];
                if (c && c->pid == m.pid) {
                    s_child_exited(self, c, m.status, m.maxrss);
                    break;
                }
            }
        }
        if (fd >= 0 && m.op != ZXW_CTL_SPAWNED) {
            close(fd);
        }
    }
}

static bool s_send_task(zxw_child_t *c, zxw_job_t *job)
{
    size_t fn_len = strlen(job->fn->name);
    zxw_ctask_t h = {job->seq, job->deadline, job->flags, (uint32_t)fn_len};
    size_t args_len;
    const void *args = zxw_job_args(job, &args_len);
    uint32_t len = (uint32_t)(sizeof h + fn_len + args_len);
    struct iovec iov[4] = {{&len, sizeof len},
                           {&h, sizeof h},
                           {(void *)job->fn->name, fn_len},
                           {(void *)args, args_len}};
    return zxw_plat_writev_all(c->fd, iov, 4);
}

static void s_dispatch(zxw_ppool_t *self)
{
    int next = 0;
    while (zlistx_size(self->queue) > 0) {
        zxw_child_t *c = NULL;
        for (; next < self->procs && !c; next++) {
            zxw_child_t *s = self->slots[next];
            if (s && s->state == C_IDLE && s->fd >= 0) {
                c = s;
            }
        }
        if (!c) {
            return;
        }
        zxw_job_t *job = zlistx_detach(self->queue, NULL);
        job->qhandle = NULL;
        job->deadline = job->limit_ms ? zclock_mono() + job->limit_ms : 0;
        if (!s_send_task(c, job)) {
            /* the child died idle: the job waits for another */
            job->qhandle = zlistx_add_start(self->queue, job);
            s_child_eof(c);
            continue;
        }
        c->state = C_BUSY;
        c->job = job;
        job->child = c;
        job->pid = (uint32_t)c->pid;
        self->busy++;
        self->ev.started(self->ev.arg, job);
    }
}

static void s_check_deadlines(zxw_ppool_t *self)
{
    int64_t now = zclock_mono();
    for (int i = 0; i < self->procs; i++) {
        zxw_child_t *c = self->slots[i];
        if (!c || c->state != C_BUSY || !c->job || !c->job->deadline || now < c->job->deadline) {
            continue;
        }
        zxw_job_t *job = c->job;
        c->job = NULL;
        self->busy--;
        char msg[256];
        snprintf(msg, sizeof msg,
                 "task ran past its time limit of %.3f s; its child pid %d on node %s was killed",
                 (double)job->limit_ms / 1000.0, (int)c->pid, self->cfg->node);
        s_kill_child(self, c);
        s_fail(self, job, ZXP_ST_TIMELIMIT, "TimeLimitError", msg);
    }
}

void zxw_ppool_start(zxw_ppool_t *self, const zxw_ppool_events_t *ev)
{
    self->ev = *ev;
    self->started = true;
    s_request_spawns(self);
}

void zxw_ppool_push(zxw_ppool_t *self, zxw_job_t *job)
{
    job->state = ZXW_QUEUED;
    if (self->broken) {
        char msg[256];
        snprintf(msg, sizeof msg, "the process pool of node %s is broken", self->cfg->node);
        s_fail(self, job, ZXP_ST_CRASHED, "ProcessCrashed", msg);
        return;
    }
    job->qhandle = zlistx_add_end(self->queue, job);
    s_dispatch(self);
}

int zxw_ppool_cancel(zxw_ppool_t *self, zxw_job_t *job, bool terminate)
{
    if (job->qhandle) {
        zlistx_detach(self->queue, job->qhandle);
        job->qhandle = NULL;
        job->state = ZXW_CANCELLED;
        return ZXP_CANCEL_DONE;
    }
    if (terminate && job->child) {
        zxw_child_t *c = job->child;
        c->job = NULL;
        job->child = NULL;
        self->busy--;
        s_kill_child(self, c);
        return ZXP_CANCEL_TERMINATED;
    }
    return ZXP_CANCEL_REFUSED;
}

void zxw_ppool_drop_queued(zxw_ppool_t *self, void (*fn)(void *arg, zxw_job_t *job), void *arg)
{
    zxw_job_t *job;
    while ((job = zlistx_detach(self->queue, NULL))) {
        job->qhandle = NULL;
        fn(arg, job);
    }
}

size_t zxw_ppool_busy(zxw_ppool_t *self)
{
    return self->busy;
}

size_t zxw_ppool_max_items(zxw_ppool_t *self)
{
    return (size_t)self->procs + 1;
}

size_t zxw_ppool_poll_items(zxw_ppool_t *self, void *items_, size_t max)
{
    zmq_pollitem_t *items = items_;
    size_t n = 0;
    self->npolled = 0;
    if (!self->broken && n < max) {
        items[n++] = (zmq_pollitem_t){NULL, self->ctl, ZMQ_POLLIN, 0};
    }
    for (int i = 0; i < self->procs && n < max; i++) {
        zxw_child_t *c = self->slots[i];
        if (c && c->fd >= 0) {
            items[n++] = (zmq_pollitem_t){NULL, c->fd, ZMQ_POLLIN, 0};
            self->polled[self->npolled++] = (s_polled_t){i, c->pid};
        }
    }
    return n;
}

void zxw_ppool_handle(zxw_ppool_t *self, void *items_, size_t n)
{
    zmq_pollitem_t *items = items_;
    size_t first = 0;
    bool ctl_ready = false;
    if (!self->broken && n > 0) {
        ctl_ready = items[0].revents != 0;
        first = 1;
    }
    /* children first: a frame they sent before dying is read before the
       fork server's report of their exit */
    for (size_t i = first, k = 0; i < n && k < self->npolled; i++, k++) {
        zxw_child_t *c = self->slots[self->polled[k].slot];
        if (items[i].revents && c && c->pid == self->polled[k].pid && c->fd == items[i].fd) {
            s_child_read(self, c);
        }
    }
    self->npolled = 0;
    if (ctl_ready && !self->broken) {
        s_ctl_read(self);
    }
    if (!self->broken) {
        s_check_deadlines(self);
        s_request_spawns(self);
        s_dispatch(self);
    }
}

int64_t zxw_ppool_next_timer(zxw_ppool_t *self)
{
    int64_t next = 0;
    for (int i = 0; i < self->procs; i++) {
        zxw_child_t *c = self->slots[i];
        if (c && c->state == C_BUSY && c->job && c->job->deadline &&
            (!next || c->job->deadline < next)) {
            next = c->job->deadline;
        }
    }
    if (self->respawn_at && (!next || self->respawn_at < next)) {
        next = self->respawn_at;
    }
    return next;
}
