/*  remote.c - the remote executor: hands out futures at once and moves their
    tasks to a zexec-broker and their results back, over one DEALER socket
    owned by one I/O thread (a czmq actor) per executor.

    zx_submit creates the future, packs the task into one record (function
    name and argument bytes copied once) and appends it to a mutex-protected
    outbox; the actor is woken (eventfd) only when the outbox goes from empty
    to non-empty. The actor drains the whole outbox at each turn into SUBMIT
    batches of up to max_batch tasks, so under load one message carries many
    tasks. A lone task (nothing else in flight) is sent by the submitting
    thread itself when the actor sleeps: the socket and the actor's state
    (s_io_t) belong to whoever holds ex->iolock, which the actor lets go of
    only while it sleeps in poll. That spares the lone task a thread
    hand-off (bench B). The actor polls the socket's raw ZMQ_FD so that
    sleeping never touches the socket; as ZMQ_FD only signals changes, which
    a send may consume, whoever lets go of iolock asks ZMQ_EVENTS first
    whether a message waits.

    Sent tasks live in the pending table (open addressing keyed by seq, no
    allocation per lookup, no scans) until their RESULT arrives. The outbox
    drains only while the argument bytes in that table stay under
    max_inflight_bytes (the send window): a burst of large arguments waits
    here, where memory is already spent, instead of being copied into the
    broker's memory, which measured slower (page faults) for no gain.

    Threads: futures are completed on the actor thread, so done-callbacks of
    remote futures run there. They must not block; they may submit and
    cancel (a cancel from the actor thread is decided without a round trip),
    but must not destroy the executor. A cancel from any other thread blocks
    that thread for at most one round trip (bounded; see s_cancel).

    Broker loss: after liveness x heartbeat of silence the executor says
    HELLO every interval; futures stay pending, and every unresolved task is
    re-sent after the next WELCOME (the broker drops duplicates by (session,
    seq)). A task fails with ZX_ECONN (BrokerUnreachableError) once the
    broker has been unreachable for broker_timeout during the task's life.

    Lock order: ex->iolock, then ex->lock, then a future's lock
    (zx_future_done etc.). No future is completed and no socket is used while
    ex->lock is held.
*/
#include "remote.h"

#include "zx_czmq.h"
#include "zx_proto.h"
#include "zx_security.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <czmq.h>

#define S_CANCEL_WAIT_MS 5000 /* a cancel waits this long for the broker */
#define S_RECV_BURST 256      /* messages read per turn before looking at the rest */
#define S_FRAME_MIN 1024      /* arguments this long go in their own frame (see s_task_t) */

/* A task: the record submit makes, the outbox holds and the pending table
   keeps until the task resolves. One allocation with fn and args inline. */
typedef struct s_task s_task_t;
struct s_task {
    s_task_t *prev, *next; /* outbox links, under ex->lock */
    zx_future_t *future;   /* one reference, dropped when the record is freed */
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
    /* Arguments from S_FRAME_MIN bytes on: copied once, at submit, straight
       into the ZeroMQ message that carries them, and sent shared
       (ZFRAME_REUSE: reference counted, no copy) on every send and re-send.
       Smaller ones stay inline in data, where one allocation is cheaper. */
    zframe_t *payload;
    char data[]; /* fn, NUL, args (when inline) */
};

/* Pending table: open addressing on seq (never 0) with the seq itself as
   the hash and Robin Hood probing. Seqs are handed out in order and mostly
   resolve in order, so the live ones sit in consecutive slots at distance 0:
   a submit, a lookup and a delete touch the next cache line, where a mixing
   hash (Fibonacci, before) sent each to a random one, a cache miss per task
   with 200,000 in flight (callgrind/perf: ~10% of the client in A). Robin
   Hood keeps runs sorted by distance, so a miss and a backward-shift delete
   stop at the first entry at its home slot instead of walking the run. */
typedef struct {
    uint64_t *keys;
    s_task_t **vals;
    size_t mask;
    unsigned bits;
    size_t count;
    uint64_t bytes; /* argument bytes of the tasks held (the send window) */
} s_table_t;

/* A cancel waiting for the actor: lives on the cancelling thread's stack,
   listed in ex->reqs under ex->lock until DECIDED. */
enum { S_REQ_NEW, S_REQ_SENT, S_REQ_DECIDED };
typedef struct s_req s_req_t;
struct s_req {
    s_req_t *prev, *next;
    zx_future_t *future;
    uint64_t seq;
    bool terminate;
    bool force; /* the wait ran out: decide locally */
    int state;
    bool result;
};

enum { S_CONNECTING, S_CONNECTED };

/* State of whoever holds ex->iolock: the actor, or a submitting thread. */
typedef struct {
    zsock_t *dealer;
    int state;
    bool need_resend;   /* re-send everything after the next WELCOME */
    bool held;          /* the send window keeps tasks in the outbox */
    uint64_t held_need; /* argument bytes of the first task it keeps */
    bool have_broker;   /* broker_id is valid */
    bool kick;          /* run s_control this turn */
    uint8_t broker_id[ZXP_ID_LEN];
    int64_t last_rx;   /* last message from the broker (start time before any) */
    int64_t broker_hb; /* the broker's announced heartbeat, ms */
    s_table_t table;
    zxp_in_t in;
    zxp_out_t out;  /* SUBMIT / CANCEL batches */
    zxp_out_t out2; /* CANCELs sent from callbacks while out is in use */
    zxp_drops_t drops;
    uint64_t unknown; /* answers for tasks we no longer hold */
} s_io_t;

typedef struct {
    struct zx_executor base; /* first: a zx_executor_t * is a remote_t * */
    char *endpoint;
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
    s_io_t io;

    pthread_mutex_t lock;
    pthread_cond_t cond; /* unresolved reached 0, a cancel was decided */
    /* under lock: */
    s_task_t *out_head, *out_tail;
    uint64_t out_bytes; /* argument bytes in the outbox */
    uint64_t next_seq;
    uint64_t sent_upto; /* every seq <= this has left the outbox */
    size_t unresolved;  /* futures of this executor not yet done by us */
    bool accepting;
    bool cancel_all;
    bool connected;
    bool actor_dead;
    s_req_t *reqs;
    size_t nreqs;
    int waiters;
    zx_sec_t *sec; /* CURVE keys and signer (common/security.c) */
} s_remote_t;

static _Thread_local s_remote_t *s_on_actor; /* the executor whose actor runs this thread */

static const zx__executor_ops_t s_ops;

/* A future's priv while a cancelling thread owns its unlinked record. */
static char s_cancelling;
#define S_CANCELLING ((void *)&s_cancelling)

/* ---- pending table ------------------------------------------------------------ */

/* How far slot i is from k's home slot. */
static size_t s_dist(const s_table_t *t, uint64_t k, size_t i)
{
    return (i - (size_t)k) & t->mask;
}

static int s_table_init(s_table_t *t, unsigned bits)
{
    size_t cap = (size_t)1 << bits;
    t->keys = calloc(cap, sizeof *t->keys);
    t->vals = calloc(cap, sizeof *t->vals);
    if (!t->keys || !t->vals) {
        free(t->keys);
        free(t->vals);
        return -1;
    }
    t->mask = cap - 1;
    t->bits = bits;
    t->count = 0;
    t->bytes = 0;
    return 0;
}

static void s_table_fini(s_table_t *t)
{
    free(t->keys);
    free(t->vals);
    memset(t, 0, sizeof *t);
}

/* The slot holding k, or SIZE_MAX. */
static size_t s_table_find(const s_table_t *t, uint64_t k)
{
    size_t i = (size_t)k & t->mask;
    for (size_t d = 0;; d++, i = (i + 1) & t->mask) {
        uint64_t x = t->keys[i];
        if (x == k) {
            return i;
        }
        if (x == 0 || s_dist(t, x, i) < d) {
            return SIZE_MAX; /* k would sit before this entry */
        }
    }
}

static s_task_t *s_table_get(const s_table_t *t, uint64_t k)
{
    size_t i = s_table_find(t, k);
    return i == SIZE_MAX ? NULL : t->vals[i];
}

static void s_table_insert(s_table_t *t, s_task_t *v)
{
    t->count++;
    t->bytes += v->args_len;
    uint64_t k = v->seq;
    size_t i = (size_t)k & t->mask;
    for (size_t d = 0;; d++, i = (i + 1) & t->mask) {
        if (t->keys[i] == 0) {
            t->keys[i] = k;
            t->vals[i] = v;
            return;
        }
        size_t e = s_dist(t, t->keys[i], i);
        if (e < d) { /* the richer entry moves on: runs stay sorted by distance */
            uint64_t tk = t->keys[i];
            s_task_t *tv = t->vals[i];
            t->keys[i] = k;
            t->vals[i] = v;
            k = tk;
            v = tv;
            d = e;
        }
    }
}

/* Keeps the load at most 1/2; -1 when it cannot grow. */
static int s_table_put(s_table_t *t, s_task_t *v)
{
    if ((t->count + 1) * 2 > t->mask + 1) {
        s_table_t bigger;
        if (s_table_init(&bigger, t->bits + 1) != 0) {
            return -1;
        }
        for (size_t i = 0; i <= t->mask; i++) {
            if (t->keys[i]) {
                s_table_insert(&bigger, t->vals[i]);
            }
        }
        s_table_fini(t);
        *t = bigger;
    }
    s_table_insert(t, v);
    return 0;
}

static void s_table_del(s_table_t *t, uint64_t k)
{
    size_t i = s_table_find(t, k);
    if (i == SIZE_MAX) {
        return;
    }
    t->bytes -= t->vals[i]->args_len;
    /* backward shift until an empty slot or an entry at its home */
    for (size_t j = (i + 1) & t->mask; t->keys[j] != 0 && s_dist(t, t->keys[j], j) > 0;
         j = (j + 1) & t->mask) {
        t->keys[i] = t->keys[j];
        t->vals[i] = t->vals[j];
        i = j;
    }
    t->keys[i] = 0;
    t->vals[i] = NULL;
    t->count--;
}

/* Every record in the table, in seq order when sorted; malloc'd, *n set. */
static int s_cmp_seq(const void *a, const void *b)
{
    uint64_t x = (*(s_task_t *const *)a)->seq, y = (*(s_task_t *const *)b)->seq;
    return x < y ? -1 : x > y;
}

static s_task_t **s_table_list(const s_table_t *t, size_t *n, bool sorted)
{
    *n = 0;
    s_task_t **v = malloc((t->count ? t->count : 1) * sizeof *v);
    if (!v) {
        return NULL;
    }
    for (size_t i = 0; i <= t->mask; i++) {
        if (t->keys[i]) {
            v[(*n)++] = t->vals[i];
        }
    }
    if (sorted) {
        qsort(v, *n, sizeof *v, s_cmp_seq);
    }
    return v;
}

/* ---- small helpers -------------------------------------------------------------- */

static void s_task_free(s_task_t *t)
{
    if (t) {
        zx_future_unref(&t->future);
        zframe_destroy(&t->payload);
        free(t);
    }
}

static void s_wake(s_remote_t *ex)
{
    uint64_t one = 1;
    ssize_t rc;
    do {
        rc = write(ex->efd, &one, sizeof one);
    } while (rc < 0 && errno == EINTR);
    /* EAGAIN means the counter is saturated: the actor is awake anyway */
}

/* Under lock: the actor is about to complete n futures it counted. */
static void s_resolved_locked(s_remote_t *ex, size_t n)
{
    ex->unresolved = n > ex->unresolved ? 0 : ex->unresolved - n;
}

/* Under lock: decides every SENT cancel whose future is now done. */
static bool s_decide_done_locked(s_remote_t *ex)
{
    bool any = false;
    for (s_req_t *r = ex->reqs; r; r = r->next) {
        if (r->state != S_REQ_DECIDED && zx_future_done(r->future)) {
            r->state = S_REQ_DECIDED;
            r->result = zx_future_cancelled(r->future);
            any = true;
        }
    }
    return any;
}

/* After the actor completed n futures: one lock per batch, not per task. */
static void s_after_batch(s_remote_t *ex, size_t n)
{
    pthread_mutex_lock(&ex->lock);
    s_resolved_locked(ex, n);
    bool changed = n > 0;
    if (ex->nreqs) {
        changed |= s_decide_done_locked(ex);
    }
    if (changed && (ex->waiters || ex->nreqs)) {
        pthread_cond_broadcast(&ex->cond);
    }
    pthread_mutex_unlock(&ex->lock);
}

static void s_set_connected(s_remote_t *ex, bool connected)
{
    pthread_mutex_lock(&ex->lock);
    ex->connected = connected;
    pthread_mutex_unlock(&ex->lock);
}

/* ---- sending ------------------------------------------------------------------ */

static void s_put_task(s_io_t *io, s_task_t *t)
{
    zxp_submit_t s = {.seq = t->seq,
                      .fn = {t->data, t->fn_len},
                      .pool = t->pool,
                      .priority = t->priority,
                      .retries = t->retries,
                      .timeout_ms = t->timeout_ms,
                      .flags = t->flags};
    zxp_put_submit(&io->out, &s);
    if (t->payload) {
        zxp_out_payload_share(&io->out, t->payload);
    } else {
        zxp_out_payload_mem(&io->out, t->data + t->fn_len + 1, t->args_len);
    }
}

static void s_flush(s_remote_t *ex, zxp_out_t *out)
{
    if (out->count > 0 && zxp_out_send(out, ex->io.dealer, NULL) != 0) {
        zsys_warning("zexec client: send to %s failed: %s", ex->endpoint, zmq_strerror(errno));
    }
}

/* Sends tasks[0..n) as SUBMIT batches of at most max_batch. */
static void s_send_tasks(s_remote_t *ex, s_task_t **tasks, size_t n)
{
    s_io_t *io = &ex->io;
    zxp_out_begin(&io->out, ZXP_SUBMIT);
    for (size_t i = 0; i < n; i++) {
        s_put_task(io, tasks[i]);
        if (io->out.count >= ex->max_batch) {
            s_flush(ex, &io->out);
            zxp_out_begin(&io->out, ZXP_SUBMIT);
        }
    }
    s_flush(ex, &io->out);
}

static void s_send_hello(s_remote_t *ex)
{
    if (zxp_send_hello(ex->io.dealer, ex->session, ex->name, (uint32_t)ex->hb_ms) != 0) {
        zsys_warning("zexec client: HELLO to %s failed", ex->endpoint);
    }
}

/* ---- completing ---------------------------------------------------------------- */

/* Fails one record's future with ZX_ECONN. Caller removed it from the table
   or the outbox; frees it. */
static void s_fail_unreachable(s_remote_t *ex, s_task_t *t, double secs)
{
    char msg[512];
    snprintf(msg, sizeof msg, "broker %s unreachable for %.1f s", ex->endpoint, secs);
    zx__future_set_exception(t->future, ZX_ECONN, "BrokerUnreachableError", msg, "", "", 0);
    s_task_free(t);
}

/* Cancels t here, without the broker (it is unreachable, or slow, or this is
   the actor thread). Returns true if t's future is now cancelled. The record
   stays in the table as abandoned so it is never re-sent. */
static bool s_cancel_local(s_remote_t *ex, s_task_t *t, size_t *resolved)
{
    if (t->abandoned || zx_future_done(t->future)) {
        return zx_future_cancelled(t->future);
    }
    if (zx_future_running(t->future)) {
        return false; /* started: cancel is refused, terminate cannot reach it */
    }
    t->abandoned = true;
    (*resolved)++;
    zx__future_set_cancelled(t->future, "");
    return zx_future_cancelled(t->future);
}

/* ---- the actor's turn: outbox, cancels, shutdown ---------------------------------- */

/* Decides or forwards the cancel requests that wait for the actor. */
static void s_handle_reqs(s_remote_t *ex)
{
    s_io_t *io = &ex->io;
    enum { MAXL = 64 };
    s_req_t *local[MAXL];
    size_t nlocal = 0;
    bool more = true;
    while (more) {
        more = false;
        nlocal = 0;
        bool decided = false;
        zxp_out_begin(&io->out, ZXP_CANCEL);
        pthread_mutex_lock(&ex->lock);
        for (s_req_t *r = ex->reqs; r; r = r->next) {
            if (r->state == S_REQ_DECIDED) {
                continue;
            }
            s_task_t *t = s_table_get(&io->table, r->seq);
            if (!t || t->abandoned || zx_future_done(r->future)) {
                r->state = S_REQ_DECIDED;
                r->result = zx_future_cancelled(r->future);
                decided = true;
            } else if (io->state != S_CONNECTED || r->force) {
                if (nlocal == MAXL) {
                    more = true;
                    continue;
                }
                local[nlocal++] = r;
            } else if (r->state == S_REQ_NEW) {
                zxp_put_cancel(&io->out, r->seq, r->terminate);
                r->state = S_REQ_SENT;
            }
        }
        if (decided) {
            pthread_cond_broadcast(&ex->cond);
        }
        pthread_mutex_unlock(&ex->lock);
        s_flush(ex, &io->out);
        if (nlocal == 0) {
            break;
        }
        /* the requesters wait until DECIDED, so their records stay valid */
        size_t resolved = 0;
        bool results[MAXL];
        for (size_t i = 0; i < nlocal; i++) {
            s_task_t *t = s_table_get(&io->table, local[i]->seq);
            results[i] =
                t ? s_cancel_local(ex, t, &resolved) : zx_future_cancelled(local[i]->future);
        }
        pthread_mutex_lock(&ex->lock);
        s_resolved_locked(ex, resolved);
        for (size_t i = 0; i < nlocal; i++) {
            local[i]->state = S_REQ_DECIDED;
            local[i]->result = results[i];
        }
        pthread_cond_broadcast(&ex->cond);
        pthread_mutex_unlock(&ex->lock);
    }
}

/* shutdown(cancel_futures): every sent task not started gets a CANCEL (or is
   cancelled here while the broker is away); DONE answers complete them. */
static void s_cancel_all_sent(s_remote_t *ex)
{
    s_io_t *io = &ex->io;
    size_t n;
    s_task_t **v = s_table_list(&io->table, &n, true);
    if (!v) {
        return;
    }
    size_t resolved = 0;
    zxp_out_begin(&io->out, ZXP_CANCEL);
    for (size_t i = 0; i < n; i++) {
        s_task_t *t = v[i];
        if (t->abandoned || zx_future_state(t->future) != ZX_PENDING) {
            continue;
        }
        if (io->state == S_CONNECTED) {
            zxp_put_cancel(&io->out, t->seq, false);
            if (io->out.count >= ZXP_MAX_BATCH) {
                s_flush(ex, &io->out);
                zxp_out_begin(&io->out, ZXP_CANCEL);
            }
        } else {
            s_cancel_local(ex, t, &resolved);
        }
    }
    s_flush(ex, &io->out);
    free(v);
    s_after_batch(ex, resolved);
}

/* One turn of control work: drain the outbox into SUBMITs (when connected),
   shutdown's cancel_futures, and waiting cancels. */
static void s_control(s_remote_t *ex)
{
    s_io_t *io = &ex->io;
    io->kick = false;
    pthread_mutex_lock(&ex->lock);
    bool cancel_all = ex->cancel_all;
    ex->cancel_all = false;
    s_task_t *head = NULL;
    io->held = false;
    if (cancel_all ||
        (io->state == S_CONNECTED && io->table.bytes + ex->out_bytes <= ex->max_inflight)) {
        /* all of it (the usual case: small arguments), in O(1) */
        head = ex->out_head;
        if (head) {
            ex->sent_upto = ex->out_tail->seq;
        }
        ex->out_head = ex->out_tail = NULL;
        ex->out_bytes = 0;
    } else if (io->state == S_CONNECTED && ex->out_head) {
        /* the longest prefix of the outbox that fits the send window (at
           least one task, however large, when nothing is out); the rest
           stays, cancellable here, until results make room */
        uint64_t bytes = io->table.bytes;
        s_task_t *last = NULL;
        for (s_task_t *t = ex->out_head; t; t = t->next) {
            if ((last || bytes > 0) && bytes + t->args_len > ex->max_inflight) {
                break;
            }
            bytes += t->args_len;
            last = t;
        }
        if (last) {
            ex->out_bytes -= bytes - io->table.bytes;
            head = ex->out_head;
            ex->sent_upto = last->seq;
            ex->out_head = last->next;
            if (ex->out_head) {
                ex->out_head->prev = NULL;
            } else {
                ex->out_tail = NULL;
            }
            last->next = NULL;
        }
        io->held = ex->out_head != NULL;
        io->held_need = io->held ? ex->out_head->args_len : 0;
    }
    bool reqs = ex->nreqs > 0;
    pthread_mutex_unlock(&ex->lock);

    if (head && cancel_all) {
        /* never sent: cancelled exactly, here */
        size_t n = 0;
        while (head) {
            s_task_t *t = head;
            head = t->next;
            zx__future_set_cancelled(t->future, "");
            s_task_free(t);
            n++;
        }
        s_after_batch(ex, n);
    } else if (head) {
        size_t failed = 0;
        zxp_out_begin(&io->out, ZXP_SUBMIT);
        while (head) {
            s_task_t *t = head;
            head = t->next;
            t->prev = t->next = NULL;
            if (s_table_put(&io->table, t) != 0) {
                zx__future_set_exception(t->future, ZX_ENOMEM, "MemoryError",
                                         "out of memory in the client", "", "", 0);
                s_task_free(t);
                failed++;
                continue;
            }
            s_put_task(io, t);
            if (io->out.count >= ex->max_batch) {
                s_flush(ex, &io->out);
                zxp_out_begin(&io->out, ZXP_SUBMIT);
            }
        }
        s_flush(ex, &io->out);
        if (failed) {
            s_after_batch(ex, failed);
        }
    }
    if (cancel_all) {
        s_cancel_all_sent(ex);
    }
    if (reqs) {
        s_handle_reqs(ex);
    }
}

/* ---- receiving ------------------------------------------------------------------- */

static void s_on_result(s_remote_t *ex)
{
    s_io_t *io = &ex->io;
    size_t resolved = 0;
    char node[ZXP_MAX_NAME + 1];
    for (size_t i = 0; i < io->in.count; i++) {
        zxp_result_t r;
        zxp_get_result(&io->in, i, &r);
        /* an inline payload is read in place: no frame for it */
        const void *data = NULL;
        size_t len = 0;
        zframe_t *payload = NULL;
        if (!zxp_payload_take_inline(&io->in, &data, &len)) {
            payload = zxp_payload_take(&io->in);
            data = payload ? zframe_data(payload) : NULL;
            len = payload ? zframe_size(payload) : 0;
        }
        s_task_t *t = s_table_get(&io->table, r.seq);
        if (!t) {
            io->unknown++; /* a duplicate, or for a task failed here */
            zframe_destroy(&payload);
            continue;
        }
        s_table_del(&io->table, r.seq);
        if (!t->abandoned) {
            size_t n = r.node.len < sizeof node ? r.node.len : sizeof node - 1;
            memcpy(node, r.node.ptr, n);
            node[n] = '\0';
            zx__future_set_attempts(t->future, (int)r.attempts);
            zx__future_complete(t->future, (int)r.status, data, len, node, (int)r.pid);
            resolved++;
        }
        zframe_destroy(&payload);
        s_task_free(t);
    }
    s_after_batch(ex, resolved);
}

static void s_on_started(s_remote_t *ex)
{
    s_io_t *io = &ex->io;
    for (size_t i = 0; i < io->in.count; i++) {
        uint64_t seq = zxp_u(zxp_item(&io->in, i), 0);
        s_task_t *t = s_table_get(&io->table, seq);
        if (t && !t->abandoned) {
            zx__future_set_running(t->future);
        }
    }
}

static void s_on_cancelled(s_remote_t *ex)
{
    s_io_t *io = &ex->io;
    size_t resolved = 0;
    for (size_t i = 0; i < io->in.count; i++) {
        const msgpack_object *it = zxp_item(&io->in, i);
        uint64_t seq = zxp_u(it, 0);
        uint64_t outcome = zxp_u(it, 1);
        s_task_t *t = s_table_get(&io->table, seq);
        if (!t) {
            io->unknown++;
            continue;
        }
        if (outcome == ZXP_CANCEL_REFUSED) {
            if (t->abandoned) {
                continue; /* its RESULT follows and frees it */
            }
            pthread_mutex_lock(&ex->lock);
            for (s_req_t *r = ex->reqs; r; r = r->next) {
                if (r->seq == seq && r->state == S_REQ_SENT) {
                    r->state = S_REQ_DECIDED;
                    r->result = false;
                    pthread_cond_broadcast(&ex->cond);
                }
            }
            pthread_mutex_unlock(&ex->lock);
            continue;
        }
        s_table_del(&io->table, seq);
        if (!t->abandoned) {
            zx__future_set_cancelled(
                t->future, outcome == ZXP_CANCEL_TERMINATED ? "terminated while running" : "");
            resolved++;
        }
        s_task_free(t);
    }
    s_after_batch(ex, resolved);
}

/* Re-sends every unresolved task after a broker restart or a lost session,
   in submission order; abandoned tasks get a CANCEL instead and are freed. */
static void s_resend(s_remote_t *ex)
{
    s_io_t *io = &ex->io;
    size_t n;
    s_task_t **v = s_table_list(&io->table, &n, true);
    if (!v) {
        zsys_error("zexec client: out of memory re-sending tasks");
        return;
    }
    size_t live = 0;
    zxp_out_begin(&io->out, ZXP_CANCEL);
    for (size_t i = 0; i < n; i++) {
        if (v[i]->abandoned) {
            zxp_put_cancel(&io->out, v[i]->seq, false);
            if (io->out.count >= ZXP_MAX_BATCH) {
                s_flush(ex, &io->out);
                zxp_out_begin(&io->out, ZXP_CANCEL);
            }
            s_table_del(&io->table, v[i]->seq);
            s_task_free(v[i]);
        } else {
            v[live++] = v[i];
        }
    }
    s_flush(ex, &io->out);
    if (live) {
        zsys_info("zexec client: re-sending %zu unresolved tasks to %s", live, ex->endpoint);
        s_send_tasks(ex, v, live);
    }
    free(v);
}

static void s_on_welcome(s_remote_t *ex)
{
    s_io_t *io = &ex->io;
    const msgpack_object *h = zxp_item(&io->in, 0);
    zxp_str_t id = zxp_s(h, 0);
    uint64_t hb = zxp_u(h, 1);
    bool changed =
        io->have_broker && (id.len != ZXP_ID_LEN || memcmp(id.ptr, io->broker_id, ZXP_ID_LEN) != 0);
    if (id.len == ZXP_ID_LEN) {
        memcpy(io->broker_id, id.ptr, ZXP_ID_LEN);
        io->have_broker = true;
    }
    io->broker_hb = hb > 0 && hb < 3600000 ? (int64_t)hb : ex->hb_ms;
    bool was = io->state == S_CONNECTED;
    io->state = S_CONNECTED;
    if (!was) {
        s_set_connected(ex, true);
    }
    if (changed || io->need_resend) {
        io->need_resend = false;
        s_resend(ex);
    }
    io->kick = true; /* drain what queued while we waited */
}

static void s_lost(s_remote_t *ex, const char *why)
{
    s_io_t *io = &ex->io;
    if (io->state == S_CONNECTED) {
        zsys_warning("zexec client: broker %s %s; futures stay pending, reconnecting", ex->endpoint,
                     why);
        io->state = S_CONNECTING;
        s_set_connected(ex, false);
    }
    /* the broker may have dropped our session: re-send after WELCOME */
    io->need_resend = true;
    io->kick = true; /* waiting cancels are now decided locally */
}

static void s_on_message(s_remote_t *ex, zmsg_t *msg)
{
    s_io_t *io = &ex->io;
    int rc = zx_sec_verify(ex->sec, msg, ZXP_ROLE_CLIENT);
    if (rc != 0) {
        zmsg_destroy(&msg);
        zxp_drop(&io->drops, "client", NULL, rc, "signature check failed");
        return;
    }
    rc = zxp_decode(&io->in, &msg, ZXP_ROLE_CLIENT);
    if (rc != 0) {
        zxp_drop(&io->drops, "client", NULL, rc, io->in.reason);
        return;
    }
    io->last_rx = zclock_mono();
    switch (io->in.cmd) {
    case ZXP_RESULT: s_on_result(ex); break;
    case ZXP_STARTED: s_on_started(ex); break;
    case ZXP_CANCELLED: s_on_cancelled(ex); break;
    case ZXP_WELCOME: s_on_welcome(ex); break;
    case ZXP_HEARTBEAT: break;
    case ZXP_RESET:
        if (io->state == S_CONNECTED) {
            s_lost(ex, "does not know this session (RESET)");
            s_send_hello(ex);
        }
        /* while connecting, a HELLO is already on its way; when signing, the
           RESET answered a HELLO signed for an unknown broker session: say
           HELLO again now, under the session it told us */
        if (io->state != S_CONNECTED && zx_sec_signing(ex->sec)) {
            s_send_hello(ex);
        }
        io->need_resend = true;
        break;
    case ZXP_SHUTDOWN: s_lost(ex, "is shutting down"); break;
    case ZXP_ERROR: {
        const msgpack_object *h = zxp_item(&io->in, 0);
        zxp_str_t m = zxp_s(h, 1);
        zsys_warning("zexec client: broker %s says error %u: %.*s", ex->endpoint,
                     (unsigned)zxp_u(h, 0), (int)m.len, m.ptr);
        break;
    }
    default: break; /* STATUS_REPLY and anything newer: not ours to handle */
    }
}

/* Takes a task that was never sent out of the outbox (ex->lock held). */
static void s_outbox_unlink(s_remote_t *ex, s_task_t *t)
{
    if (t->prev) {
        t->prev->next = t->next;
    } else {
        ex->out_head = t->next;
    }
    if (t->next) {
        t->next->prev = t->prev;
    } else {
        ex->out_tail = t->prev;
    }
    ex->out_bytes -= t->args_len;
}

/* Fails every task the broker has been unreachable for broker_timeout of
   its life: those in the table and those still in the outbox. */
static void s_expire(s_remote_t *ex, int64_t now)
{
    s_io_t *io = &ex->io;
    int64_t since = io->last_rx;
    size_t n, failed = 0;
    s_task_t **v = s_table_list(&io->table, &n, true);
    for (size_t i = 0; v && i < n; i++) {
        s_task_t *t = v[i];
        int64_t from = t->t_submit > since ? t->t_submit : since;
        if (t->abandoned || now - from < ex->timeout_ms) {
            continue;
        }
        s_table_del(&io->table, t->seq);
        s_fail_unreachable(ex, t, (double)(now - since) / 1000.0);
        failed++;
    }
    free(v);
    s_task_t *expired = NULL;
    pthread_mutex_lock(&ex->lock);
    for (s_task_t *t = ex->out_head, *next; t; t = next) {
        next = t->next;
        int64_t from = t->t_submit > since ? t->t_submit : since;
        if (now - from < ex->timeout_ms) {
            continue;
        }
        s_outbox_unlink(ex, t);
        zx__future_set_priv(t->future, NULL);
        t->next = expired;
        expired = t;
    }
    pthread_mutex_unlock(&ex->lock);
    while (expired) {
        s_task_t *t = expired;
        expired = t->next;
        s_fail_unreachable(ex, t, (double)(now - since) / 1000.0);
        failed++;
    }
    if (failed) {
        zsys_warning("zexec client: broker %s unreachable for %.1f s: %zu futures failed",
                     ex->endpoint, (double)(now - since) / 1000.0, failed);
        s_after_batch(ex, failed);
    }
}

static void s_tick(s_remote_t *ex, int64_t now)
{
    s_io_t *io = &ex->io;
    if (io->state == S_CONNECTED) {
        if (now - io->last_rx > (int64_t)ex->liveness * io->broker_hb) {
            s_lost(ex, "is silent");
        } else {
            zxp_send_empty(io->dealer, NULL, ZXP_HEARTBEAT);
            return;
        }
    }
    s_send_hello(ex);
    if (now - io->last_rx >= ex->timeout_ms) {
        s_expire(ex, now);
    }
}

/* At the actor's end: nothing may wait on it any more. */
static void s_actor_finish(s_remote_t *ex)
{
    s_io_t *io = &ex->io;
    size_t n, failed = 0;
    s_task_t **v = s_table_list(&io->table, &n, false);
    for (size_t i = 0; v && i < n; i++) {
        s_table_del(&io->table, v[i]->seq);
        if (!v[i]->abandoned) {
            zx__future_set_exception(v[i]->future, ZX_ESHUTDOWN, "ExecutorShutdown",
                                     "the executor was destroyed", "", "", 0);
            failed++;
        }
        s_task_free(v[i]);
    }
    free(v);
    pthread_mutex_lock(&ex->lock);
    s_task_t *head = ex->out_head;
    ex->out_head = ex->out_tail = NULL;
    ex->out_bytes = 0;
    ex->accepting = false;
    ex->actor_dead = true;
    pthread_mutex_unlock(&ex->lock);
    while (head) {
        s_task_t *t = head;
        head = t->next;
        zx__future_set_exception(t->future, ZX_ESHUTDOWN, "ExecutorShutdown",
                                 "the executor was destroyed", "", "", 0);
        s_task_free(t);
        failed++;
    }
    pthread_mutex_lock(&ex->lock);
    s_resolved_locked(ex, failed);
    for (s_req_t *r = ex->reqs; r; r = r->next) {
        if (r->state != S_REQ_DECIDED) {
            r->state = S_REQ_DECIDED;
            r->result = zx_future_cancelled(r->future);
        }
    }
    pthread_cond_broadcast(&ex->cond);
    pthread_mutex_unlock(&ex->lock);
}

static void s_actor(zsock_t *pipe, void *arg)
{
    s_remote_t *ex = arg;
    s_io_t *io = &ex->io;
    s_on_actor = ex;
    pthread_mutex_lock(&ex->iolock);
    zsock_signal(pipe, 0);

    io->last_rx = zclock_mono();
    io->broker_hb = ex->hb_ms;
    io->state = S_CONNECTING;
    s_send_hello(ex);
    int64_t next_tick = zclock_mono() + ex->hb_ms;

    /* raw fds, plain poll: see the top. The pipe's ZMQ_FD is safe to poll
       raw because only this thread touches the pipe, and only when it
       signals. */
    struct pollfd fds[3] = {
        {zsock_fd(pipe), POLLIN, 0}, {zsock_fd(io->dealer), POLLIN, 0}, {ex->efd, POLLIN, 0}};
    bool more = true; /* messages may wait on the dealer */
    /* the signal above was an operation on the pipe: until its commands are
       processed, ZMQ_FD would not signal the next message ($TERM) */
    bool term = zsock_events(pipe) & ZMQ_POLLIN;
    bool running = true;
    while (running) {
        int64_t now = zclock_mono();
        int wait = next_tick > now ? (int)(next_tick - now) : 0;
        if (!more) {
            more = zsock_events(io->dealer) & ZMQ_POLLIN;
        }
        if (io->kick || more || term) {
            wait = 0;
        }
        pthread_mutex_unlock(&ex->iolock);
        int rc = poll(fds, 3, wait);
        pthread_mutex_lock(&ex->iolock);
        if (rc < 0) {
            if (errno == EINTR) {
                continue;
            }
            zsys_error("zexec client: I/O thread poll: %s", strerror(errno));
            break;
        }
        if (rc > 0 && ((fds[0].revents | fds[1].revents) & POLLNVAL)) {
            /* czmq's atexit handler closed every socket because the program
               exits without destroying this executor. Returning would make
               czmq's actor shim use its closed pipe (an assertion); the
               process is exiting, so this thread parks until it does. */
            zsys_warning("zexec client: I/O thread stops: executor not destroyed before exit");
            pthread_mutex_unlock(&ex->iolock);
            for (;;) {
                pause();
            }
        }
        if (term || (rc > 0 && fds[0].revents)) {
            term = false;
            /* ends with ZMQ_EVENTS saying no: then ZMQ_FD signals the next */
            while (running && (zsock_events(pipe) & ZMQ_POLLIN)) {
                char *cmd = zstr_recv(pipe);
                running = !(cmd && streq(cmd, "$TERM")) && cmd;
                zstr_free(&cmd);
            }
            if (!running) {
                break;
            }
        }
        if (more || (rc > 0 && fds[1].revents)) {
            more = false;
            for (int i = 0; i < S_RECV_BURST; i++) {
                zmsg_t *msg = zmsg_recv(io->dealer); /* RCVTIMEO 0: NULL when none is left */
                if (!msg) {
                    break;
                }
                s_on_message(ex, msg);
                more = i + 1 == S_RECV_BURST;
            }
        }
        if (rc > 0 && fds[2].revents) {
            uint64_t v;
            if (read(ex->efd, &v, sizeof v) < 0 && errno != EAGAIN) {
                zsys_warning("zexec client: eventfd read: %s", strerror(errno));
            }
            io->kick = true;
        }
        if (io->held &&
            (io->table.bytes == 0 || io->table.bytes + io->held_need <= ex->max_inflight)) {
            io->kick = true; /* results made room in the send window */
        }
        if (io->kick) {
            s_control(ex);
        }
        now = zclock_mono();
        if (now >= next_tick) {
            s_tick(ex, now);
            next_tick = now + ex->hb_ms;
        }
    }
    if (io->state == S_CONNECTED) {
        zxp_send_empty(io->dealer, NULL, ZXP_BYE);
        zsock_set_linger(io->dealer, 200); /* let BYE leave */
    }
    zsock_destroy(&io->dealer);
    io->state = S_CONNECTING; /* nothing may be sent any more */
    /* last: its unlock is what orders the actor's writes before destroy's
       reads (zactor's own handshake goes through ZeroMQ, which sanitizers
       cannot see) */
    s_actor_finish(ex);
    pthread_mutex_unlock(&ex->iolock);
    s_on_actor = NULL;
}

/* A lone task (nothing in flight) leaves from the submitting thread when the
   actor sleeps: true if it was sent here, false if the actor must be woken.
   Under load the actor batches instead: the first task of a burst goes from
   here, the rest queue behind it in the outbox. */
static bool s_submit_here(s_remote_t *ex)
{
    if (s_on_actor == ex || pthread_mutex_trylock(&ex->iolock) != 0) {
        return false; /* the actor is awake (or this is it): it sends */
    }
    s_io_t *io = &ex->io;
    pthread_mutex_lock(&ex->lock);
    /* cancels to decide (their futures' callbacks would run here) are the
       actor's */
    bool plain = ex->nreqs == 0 && !ex->cancel_all;
    pthread_mutex_unlock(&ex->lock);
    bool sent =
        plain && io->state == S_CONNECTED && io->dealer && io->table.count == 0 && !io->held;
    bool more = false;
    if (sent) {
        /* a task failed here for want of memory completes on this thread,
           which stands in for the actor until it lets go of iolock */
        s_remote_t *was = s_on_actor;
        s_on_actor = ex;
        s_control(ex);
        s_on_actor = was;
        more = zsock_events(io->dealer) & ZMQ_POLLIN;
    }
    pthread_mutex_unlock(&ex->iolock);
    if (more) {
        s_wake(ex); /* our send took the signal the actor sleeps on */
    }
    return sent;
}

/* ---- the executor interface --------------------------------------------------- */

static zx_future_t *s_submit(zx_executor_t *base, const char *fn, const void *args, size_t len,
                             const zx_task_opts_t *opts, uint32_t flags, int *err)
{
    s_remote_t *ex = (s_remote_t *)base;
    static const uint8_t empty_array = 0x90;
    size_t fn_len = fn ? strlen(fn) : 0;
    if (fn_len == 0 || fn_len > ZXP_MAX_NAME || (!args && len > 0) || len > ZXP_MAX_MSG - 1024) {
        *err = ZX_EINVAL;
        return NULL;
    }
    if (!args || len == 0) {
        args = &empty_array;
        len = 1;
    }
    zx_task_opts_t o = opts ? *opts : (zx_task_opts_t){0};
    if (o.pool < ZX_POOL_ANY || o.pool > ZX_POOL_PROCESS || o.priority < -128 || o.priority > 127 ||
        o.retries < -1 || o.retries > 100 || !(o.time_limit >= 0) || o.time_limit > 4e6) {
        *err = ZX_EINVAL;
        return NULL;
    }
    bool framed = len >= S_FRAME_MIN;
    s_task_t *t = malloc(sizeof *t + fn_len + 1 + (framed ? 0 : len));
    if (!t) {
        *err = ZX_ENOMEM;
        return NULL;
    }
    t->payload = NULL;
    if (framed && !(t->payload = zframe_new(args, len))) {
        free(t);
        *err = ZX_ENOMEM;
        return NULL;
    }
    t->prev = t->next = NULL;
    t->args_len = (uint32_t)len;
    t->timeout_ms = (uint32_t)(o.time_limit * 1000.0 + 0.999);
    t->flags = flags;
    t->retries = o.retries;
    t->priority = (int8_t)o.priority;
    t->pool = (uint8_t)o.pool;
    t->fn_len = (uint8_t)fn_len;
    t->abandoned = false;
    memcpy(t->data, fn, fn_len + 1);
    if (!framed) {
        memcpy(t->data + fn_len + 1, args, len);
    }
    t->t_submit = zclock_mono();

    pthread_mutex_lock(&ex->lock);
    if (!ex->accepting) {
        pthread_mutex_unlock(&ex->lock);
        zframe_destroy(&t->payload);
        free(t);
        *err = ZX_ESHUTDOWN;
        return NULL;
    }
    /* the future is made under the lock so that seqs enter the outbox in
       order: cancel relies on "seq > sent_upto" meaning "still in the outbox" */
    t->seq = ex->next_seq + 1;
    t->future = zx__future_new(base, fn, t->seq);
    if (!t->future) {
        pthread_mutex_unlock(&ex->lock);
        zframe_destroy(&t->payload);
        free(t);
        *err = ZX_ENOMEM;
        return NULL;
    }
    ex->next_seq++;
    zx__future_set_priv(t->future, t);
    zx_future_t *f = zx_future_ref(t->future);
    bool was_empty = ex->out_head == NULL;
    t->prev = ex->out_tail;
    if (ex->out_tail) {
        ex->out_tail->next = t;
    } else {
        ex->out_head = t;
    }
    ex->out_tail = t;
    ex->out_bytes += t->args_len;
    ex->unresolved++;
    pthread_mutex_unlock(&ex->lock);
    if (was_empty && !s_submit_here(ex)) {
        s_wake(ex);
    }
    return f;
}

/* A cancel from a done-callback on the actor thread cannot wait for the
   actor: decided here (CANCEL sent without waiting when connected). */
static bool s_cancel_on_actor(s_remote_t *ex, zx_future_t *f, bool terminate)
{
    s_io_t *io = &ex->io;
    s_task_t *t = s_table_get(&io->table, zx__future_seq(f));
    if (!t) {
        return zx_future_cancelled(f);
    }
    if (terminate && zx_future_running(f) && io->state == S_CONNECTED) {
        /* answered later by CANCELLED TERMINATED or a RESULT */
        zxp_out_begin(&io->out2, ZXP_CANCEL);
        zxp_put_cancel(&io->out2, t->seq, true);
        s_flush(ex, &io->out2);
        return false;
    }
    size_t resolved = 0;
    bool ok = s_cancel_local(ex, t, &resolved);
    if (ok && io->state == S_CONNECTED) {
        zxp_out_begin(&io->out2, ZXP_CANCEL);
        zxp_put_cancel(&io->out2, t->seq, false);
        s_flush(ex, &io->out2);
    }
    s_after_batch(ex, resolved);
    return ok;
}

static void s_deadline(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Never sent: removed from the outbox and cancelled here, exactly. Sent: a
   CANCEL goes to the broker, which alone knows whether it was dispatched,
   and this thread waits for its answer. If the broker is unreachable, or
   does not answer within S_CANCEL_WAIT_MS, the cancel is decided here: the
   future is cancelled and the task never re-sent, but a copy the broker
   already holds may still run (at-least-once, docs/guide.md). */
static bool s_cancel(zx_executor_t *base, zx_future_t *f, bool terminate)
{
    s_remote_t *ex = (s_remote_t *)base;
    uint64_t seq = zx__future_seq(f);
    pthread_mutex_lock(&ex->lock);
    if (seq > ex->sent_upto) {
        s_task_t *t = zx__future_priv(f);
        if (t == S_CANCELLING || !t) {
            pthread_mutex_unlock(&ex->lock);
            /* another thread is cancelling it right now, or it failed */
            return t == S_CANCELLING || zx_future_cancelled(f);
        }
        s_outbox_unlink(ex, t);
        zx__future_set_priv(f, S_CANCELLING);
        s_resolved_locked(ex, 1);
        if (ex->waiters) {
            pthread_cond_broadcast(&ex->cond);
        }
        pthread_mutex_unlock(&ex->lock);
        zx__future_set_cancelled(f, "");
        s_task_free(t);
        return true;
    }
    if (s_on_actor == ex) {
        pthread_mutex_unlock(&ex->lock);
        return s_cancel_on_actor(ex, f, terminate);
    }
    if (ex->actor_dead) {
        pthread_mutex_unlock(&ex->lock);
        return zx_future_cancelled(f);
    }
    s_req_t req = {.future = f, .seq = seq, .terminate = terminate, .state = S_REQ_NEW};
    req.next = ex->reqs;
    if (ex->reqs) {
        ex->reqs->prev = &req;
    }
    ex->reqs = &req;
    ex->nreqs++;
    pthread_mutex_unlock(&ex->lock);
    s_wake(ex);

    struct timespec deadline;
    s_deadline(&deadline, S_CANCEL_WAIT_MS);
    pthread_mutex_lock(&ex->lock);
    while (req.state != S_REQ_DECIDED) {
        int rc = pthread_cond_timedwait(&ex->cond, &ex->lock, &deadline);
        if (rc == ETIMEDOUT && req.state != S_REQ_DECIDED) {
            if (!req.force) {
                zsys_warning("zexec client: broker %s did not answer a cancel in %d ms; "
                             "cancelled locally",
                             ex->endpoint, S_CANCEL_WAIT_MS);
                req.force = true;
                pthread_mutex_unlock(&ex->lock);
                s_wake(ex);
                pthread_mutex_lock(&ex->lock);
            }
            s_deadline(&deadline, 1000); /* the actor decides promptly now */
        }
    }
    if (req.prev) {
        req.prev->next = req.next;
    } else {
        ex->reqs = req.next;
    }
    if (req.next) {
        req.next->prev = req.prev;
    }
    ex->nreqs--;
    pthread_mutex_unlock(&ex->lock);
    return req.result;
}

static int s_shutdown(zx_executor_t *base, bool wait, bool cancel_futures)
{
    s_remote_t *ex = (s_remote_t *)base;
    pthread_mutex_lock(&ex->lock);
    ex->accepting = false;
    if (cancel_futures) {
        ex->cancel_all = true;
    }
    pthread_mutex_unlock(&ex->lock);
    if (cancel_futures) {
        s_wake(ex);
    }
    if (!wait) {
        return ZX_OK;
    }
    if (s_on_actor == ex) {
        zsys_warning("zexec client: shutdown(wait) from a done-callback cannot wait; "
                     "not waiting");
        return ZX_OK;
    }
    pthread_mutex_lock(&ex->lock);
    ex->waiters++;
    while (ex->unresolved > 0 && !ex->actor_dead) {
        pthread_cond_wait(&ex->cond, &ex->lock);
    }
    ex->waiters--;
    pthread_mutex_unlock(&ex->lock);
    return ZX_OK;
}

static void s_destroy(zx_executor_t *base)
{
    s_remote_t *ex = (s_remote_t *)base;
    if (s_on_actor == ex) {
        zsys_error("zexec client: an executor cannot be destroyed from its own "
                   "done-callback; leaking it");
        return;
    }
    s_shutdown(base, true, false);
    zactor_destroy(&ex->actor);
    pthread_mutex_lock(&ex->lock); /* pairs with the actor's last unlock */
    pthread_mutex_unlock(&ex->lock);
    if (ex->io.dealer) {
        zsock_destroy(&ex->io.dealer); /* the actor never started */
    }
    s_table_fini(&ex->io.table);
    zxp_in_fini(&ex->io.in);
    zxp_out_fini(&ex->io.out);
    zxp_out_fini(&ex->io.out2);
    zxp_drops_fini(&ex->io.drops);
    if (ex->efd >= 0) {
        close(ex->efd);
    }
    pthread_cond_destroy(&ex->cond);
    pthread_mutex_destroy(&ex->lock);
    pthread_mutex_destroy(&ex->iolock);
    zx__cluster_stop(&ex->cluster);
    zx_sec_destroy(&ex->sec);
    free(ex->endpoint);
    free(ex->name);
    free(ex);
}

static const char *s_endpoint(zx_executor_t *base)
{
    return ((s_remote_t *)base)->endpoint;
}

static const zx__executor_ops_t s_ops = {
    .kind = "remote",
    .submit = s_submit,
    .cancel = s_cancel,
    .shutdown = s_shutdown,
    .destroy = s_destroy,
    .register_fn = NULL,
    .endpoint = s_endpoint,
};

zx__cluster_t *zx__remote_cluster(zx_executor_t *ex)
{
    return ex && ex->ops == &s_ops ? ((s_remote_t *)ex)->cluster : NULL;
}

static void s_random_session(uint8_t *id)
{
    size_t got = 0;
    while (got < ZXP_ID_LEN) {
        ssize_t n = getrandom(id + got, ZXP_ID_LEN - got, 0);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        got += (size_t)n;
    }
    if (got < ZXP_ID_LEN) {
        /* no getrandom: still unique enough per process and time */
        uint64_t a = (uint64_t)zclock_usecs() ^ ((uint64_t)getpid() << 32);
        uint64_t b = (uint64_t)(uintptr_t)id * 0x9E3779B97F4A7C15ull ^ (uint64_t)zclock_time();
        memcpy(id, &a, 8);
        memcpy(id + 8, &b, 8);
    }
    if (id[0] == 0) {
        id[0] = 1; /* ZeroMQ reserves routing ids starting with 0 */
    }
}

zx_executor_t *zx__remote_new(const char *endpoint, const zx_options_t *opts)
{
    zx_options_t o = opts ? *opts : (zx_options_t){0};
    /* the cluster is spawned before this call creates any ZeroMQ state */
    zx__cluster_t *cluster = NULL;
    if (!endpoint) {
        cluster = zx__cluster_start(opts);
        if (!cluster) {
            return NULL; /* last error set */
        }
        endpoint = zx__cluster_endpoint(cluster);
    }
    int err = ZX_ENOMEM;
    s_remote_t *ex = calloc(1, sizeof *ex);
    if (!ex) {
        zx__cluster_stop(&cluster);
        zx__set_last_error(ZX_ENOMEM);
        return NULL;
    }
    ex->base.ops = &s_ops;
    ex->cluster = cluster;
    ex->efd = -1;
    ex->accepting = true;
    ex->endpoint = strdup(endpoint);
    ex->name = strdup(o.name && *o.name ? o.name : "client");
    if (ex->name && strlen(ex->name) > ZXP_MAX_NAME) {
        ex->name[ZXP_MAX_NAME] = '\0';
    }
    ex->hb_ms = o.heartbeat > 0 ? (int64_t)(o.heartbeat * 1000.0 + 0.5) : 1000;
    if (ex->hb_ms < 10) {
        ex->hb_ms = 10;
    }
    ex->liveness = o.liveness > 0 ? o.liveness : 3;
    ex->timeout_ms = o.broker_timeout > 0 ? (int64_t)(o.broker_timeout * 1000.0) : 60000;
    ex->max_batch = o.max_batch > 0 ? o.max_batch : 256;
    ex->max_inflight = o.max_inflight_bytes > 0 ? o.max_inflight_bytes : 64u << 20;
    if (ex->max_batch > ZXP_MAX_BATCH) {
        ex->max_batch = ZXP_MAX_BATCH;
    }
    s_random_session(ex->session);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ex->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&ex->lock, NULL);
    pthread_mutex_init(&ex->iolock, NULL);
    zxp_in_init(&ex->io.in);
    zxp_out_init(&ex->io.out);
    zxp_out_init(&ex->io.out2);
    zxp_drops_init(&ex->io.drops);
    if (!ex->endpoint || !ex->name || s_table_init(&ex->io.table, 10) != 0) {
        goto fail;
    }
    ex->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (ex->efd < 0) {
        zsys_error("zexec client: eventfd: %s", strerror(errno));
        goto fail;
    }
    /* A library must not take over SIGINT/SIGTERM: czmq would otherwise
       install its own handlers on first use. */
    zsys_handler_set(NULL);
    zx__czmq_init();
    ex->io.dealer = zsock_new(ZMQ_DEALER);
    if (!ex->io.dealer) {
        goto fail;
    }
    zxp_sock_setup(ex->io.dealer);
    zsock_set_rcvtimeo(ex->io.dealer, 0); /* the actor reads until EAGAIN */
    ex->sec = zx_sec_new(o.key, o.server_key, o.secret_file, false);
    if (!ex->sec || zx_sec_socket(ex->sec, ex->io.dealer, ZXP_ROLE_BROKER_C) != 0) {
        err = ZX_EINVAL;
        goto fail;
    }
    /* the session is the routing id, so the broker knows us across reconnects */
    zmq_setsockopt(zsock_resolve(ex->io.dealer), ZMQ_ROUTING_ID, ex->session, ZXP_ID_LEN);
    if (zsock_connect(ex->io.dealer, "%s", ex->endpoint) != 0) {
        zsys_error("zexec client: cannot connect to '%s': %s", ex->endpoint,
                   zmq_strerror(zmq_errno()));
        err = ZX_EINVAL;
        goto fail;
    }
    ex->actor = zactor_new(s_actor, ex);
    if (!ex->actor) {
        goto fail;
    }
    return &ex->base;
fail:
    s_destroy(&ex->base);
    zx__set_last_error(err);
    return NULL;
}
