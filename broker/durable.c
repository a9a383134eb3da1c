/*  durable.c - what the broker writes to its journal (--journal DIR) and
    how it rebuilds itself from it: the record bodies (msgpack), the appends
    at a task's acceptance, a job's result, a task's end and a job's
    changes, ACCEPTED once a task's record is committed, worker results
    acknowledged once theirs are, the recovery at start, snapshots, and
    what happens when the journal cannot be written. The journal itself
    (framing, checksums, the writer thread, group commit, segments) is
    journal.c's, which knows nothing of tasks.

    Records (types 1..4; fields in this order, msgpack arrays):
      JOB    [id, name, created, last, flags, submitted, done, failed, acked, next]
             flags: 1 cancelled, 2 expired, 4 deleted. The counters are
             absolute: replay sets them (records after it add to them).
      TASK   [session, seq, fn, pool, priority, retries, timeout_ms, flags, args]
      RESULT [session, seq, status, node, pid, pool, attempts, index, payload]
             a job's held result
      END    [session, seq]: the task is forgotten (its result went to its
             client, it was RACKed, cancelled, or dropped)
    A snapshot holds, for each job, its JOB record, its tasks' TASK (and
    RESULT) records and its JOB record again (with the counters at that
    moment), and then the TASK records of the other sessions' tasks.

    Without --journal every function here but zxb_durable_task is a no-op,
    and zxb_durable_task sends ACCEPTED at once.
*/
#include "zxb_broker.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { S_JOB = 1, S_TASK = 2, S_RESULT = 3, S_END = 4 };
enum { S_JF_CANCELLED = 1, S_JF_EXPIRED = 2, S_JF_DELETED = 4 };

/* An ACCEPTED waiting for its record's commit. */
typedef struct {
    uint8_t session[ZXP_ID_LEN];
    uint64_t seq, lsn;
} s_accept_t;

/* A worker's WRESULT count to acknowledge once lsn is committed. */
typedef struct {
    uint64_t lsn, rx;
} s_mark_t;

/* ---- appends ------------------------------------------------------------------------ */

/* What is live in the journal (what a snapshot would write) is estimated
   as it changes: a TASK record's bytes (about 60 and its arguments) from
   its append to the task's END; a held result's RESULT record (about 70
   and the result) from its append to its RACK, while the task's arguments
   no longer count (a snapshot writes a held task without them). */
#define S_TASK_OVERHEAD 60
#define S_RESULT_OVERHEAD 70

void zxb_durable_unlive(zxb_broker_t *self, uint64_t bytes)
{
    self->live_bytes = self->live_bytes > bytes ? self->live_bytes - bytes : 0;
}

static msgpack_packer *s_begin(zxb_broker_t *self)
{
    msgpack_sbuffer_clear(&self->jbuf);
    return &self->jpk;
}

static uint64_t s_append(zxb_broker_t *self, uint8_t type)
{
    uint64_t lsn = zxb_journal_append(self->journal, type, self->jbuf.data, self->jbuf.size);
    if (lsn) {
        self->last_lsn = lsn;
    }
    return lsn;
}

static void s_pack_id(msgpack_packer *pk, const uint8_t *id)
{
    msgpack_pack_bin(pk, ZXP_ID_LEN);
    msgpack_pack_bin_body(pk, id, ZXP_ID_LEN);
}

static void s_pack_bytes(msgpack_packer *pk, const void *p, size_t n)
{
    msgpack_pack_bin(pk, n);
    if (n) {
        msgpack_pack_bin_body(pk, p, n);
    }
}

static void s_pack_payload(msgpack_packer *pk, const zxb_task_t *t)
{
    switch (t->pl_kind) {
    case ZXB_PL_INLINE: s_pack_bytes(pk, t->pl.inl, t->size); break;
    case ZXB_PL_HEAP: s_pack_bytes(pk, t->pl.heap, t->size); break;
    case ZXB_PL_FRAME: s_pack_bytes(pk, zframe_data(t->pl.frame), zframe_size(t->pl.frame)); break;
    default: s_pack_bytes(pk, NULL, 0); break;
    }
}

/* fn NULL: a held result's task (its function is not kept; it never runs
   again): "-" and no arguments. */
static uint64_t s_task_record(zxb_broker_t *self, const zxb_task_t *t, const zxb_fn_t *fn)
{
    msgpack_packer *pk = s_begin(self);
    msgpack_pack_array(pk, 9);
    s_pack_id(pk, t->client->session);
    msgpack_pack_uint64(pk, t->seq);
    msgpack_pack_str(pk, fn ? fn->len : 1);
    msgpack_pack_str_body(pk, fn ? fn->name : "-", fn ? fn->len : 1);
    msgpack_pack_uint8(pk, t->pool_req);
    msgpack_pack_int8(pk, t->priority);
    msgpack_pack_int8(pk, t->retries);
    msgpack_pack_uint32(pk, t->timeout_ms);
    msgpack_pack_uint32(pk, t->flags);
    if (fn) {
        s_pack_payload(pk, t);
    } else {
        s_pack_bytes(pk, NULL, 0);
    }
    self->live_bytes += self->jbuf.size + 17;
    return s_append(self, S_TASK);
}

static uint64_t s_result_record(zxb_broker_t *self, const zxb_task_t *t)
{
    msgpack_packer *pk = s_begin(self);
    msgpack_pack_array(pk, 9);
    s_pack_id(pk, t->client->session);
    msgpack_pack_uint64(pk, t->seq);
    msgpack_pack_uint32(pk, t->held_status);
    msgpack_pack_str(pk, t->fn ? t->fn->len : 0);
    if (t->fn) {
        msgpack_pack_str_body(pk, t->fn->name, t->fn->len);
    }
    msgpack_pack_uint32(pk, t->held_pid);
    msgpack_pack_uint8(pk, t->pool);
    msgpack_pack_uint32(pk, t->attempts);
    msgpack_pack_uint64(pk, t->jindex);
    s_pack_payload(pk, t);
    self->live_bytes += self->jbuf.size + 17;
    return s_append(self, S_RESULT);
}

static void s_job_record(zxb_broker_t *self, const zxb_job_t *job)
{
    msgpack_packer *pk = s_begin(self);
    msgpack_pack_array(pk, 10);
    s_pack_id(pk, job->id);
    size_t n = strlen(job->name);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, job->name, n);
    msgpack_pack_int64(pk, job->created);
    msgpack_pack_int64(pk, job->last);
    msgpack_pack_uint8(pk, (job->cancelled ? S_JF_CANCELLED : 0) |
                               (job->expired ? S_JF_EXPIRED : 0) |
                               (job->deleted ? S_JF_DELETED : 0));
    msgpack_pack_uint64(pk, job->submitted);
    msgpack_pack_uint64(pk, job->done);
    msgpack_pack_uint64(pk, job->failed);
    msgpack_pack_uint64(pk, job->acked);
    msgpack_pack_uint64(pk, job->next);
    s_append(self, S_JOB);
}

static void s_accept_send(zxb_broker_t *self, zxb_client_t *c, uint64_t seq)
{
    if (c && c->alive && c->want_accept) {
        zxp_put_accepted(zxb_client_batch(self, c, ZXP_ACCEPTED), seq);
    }
}

void zxb_durable_task(zxb_broker_t *self, zxb_task_t *t)
{
    zxb_client_t *c = t->client;
    if (!self->journal) {
        s_accept_send(self, c, t->seq);
        return;
    }
    uint64_t lsn = s_task_record(self, t, t->fn);
    t->journaled = 1;
    if (c->want_accept) {
        s_accept_t *a = malloc(sizeof *a);
        assert(a);
        memcpy(a->session, c->session, ZXP_ID_LEN);
        a->seq = t->seq;
        a->lsn = lsn ? lsn : UINT64_MAX; /* refused below if the journal failed */
        zlist_append(self->accepts, a);
    }
}

void zxb_durable_accept_again(zxb_broker_t *self, zxb_client_t *c, uint64_t seq)
{
    if (!self->journal) {
        s_accept_send(self, c, seq);
        return;
    }
    if (c->want_accept) {
        s_accept_t *a = malloc(sizeof *a);
        assert(a);
        memcpy(a->session, c->session, ZXP_ID_LEN);
        a->seq = seq;
        a->lsn = self->last_lsn; /* its record is at or before the last one */
        zlist_append(self->accepts, a);
    }
}

void zxb_durable_result(zxb_broker_t *self, zxb_task_t *t)
{
    t->start_us = 0; /* a held result: its record's LSN (0: nothing to wait for) */
    if (self->journal && !self->replaying) {
        uint64_t lsn = s_result_record(self, t);
        t->start_us = lsn ? (int64_t)lsn : INT64_MAX; /* journal failed: never committed */
        t->journaled = 1;
    }
}

bool zxb_durable_visible(const zxb_broker_t *self, const zxb_task_t *t)
{
    /* once the journal failed nothing more commits: what is held is served
       from memory (it is not durable, and STATUS says so) */
    return !self->journal || self->journal_failed || (uint64_t)t->start_us <= self->committed;
}

void zxb_durable_end(zxb_broker_t *self, zxb_task_t *t)
{
    if (!self->journal || self->replaying) {
        return;
    }
    msgpack_packer *pk = s_begin(self);
    msgpack_pack_array(pk, 2);
    s_pack_id(pk, t->client->session);
    msgpack_pack_uint64(pk, t->seq);
    s_append(self, S_END);
    zxb_durable_unlive(self, (uint64_t)t->size + S_TASK_OVERHEAD);
}

void zxb_durable_job(zxb_broker_t *self, zxb_job_t *job)
{
    if (self->journal && !self->replaying) {
        s_job_record(self, job);
    }
}

void zxb_durable_wresults(zxb_broker_t *self, zxb_worker_t *w)
{
    if (!self->journal) {
        return;
    }
    if (!w->rx_marks) {
        w->rx_marks = zlist_new();
    }
    s_mark_t *m = zlist_tail(w->rx_marks);
    if (m && m->lsn == self->last_lsn) {
        m->rx = w->results_rx; /* nothing appended since: one mark does */
        return;
    }
    m = malloc(sizeof *m);
    assert(m);
    m->lsn = self->last_lsn;
    m->rx = w->results_rx;
    zlist_append(w->rx_marks, m);
}

const char *zxb_durable_refusal(zxb_broker_t *self)
{
    return self->journal_failed ? self->journal_error : NULL;
}

int zxb_durable_fd(zxb_broker_t *self)
{
    return self->journal ? zxb_journal_fd(self->journal) : -1;
}

/* ---- commit ----------------------------------------------------------------------- */

/* The journal failed: say so once, refuse what was not committed. */
static void s_failed(zxb_broker_t *self)
{
    char msg[200];
    int err = zxb_journal_error(self->journal, msg, sizeof msg);
    self->journal_failed = true;
    snprintf(self->journal_error, sizeof self->journal_error, "JournalError: %s", msg);
    zsys_error("journal %s: %s (errno %d): submissions are refused from now on; results are "
               "still served. Free space (or fix the disk) and restart the broker: it recovers "
               "from what was committed",
               self->cfg.journal_dir, msg, err);
    /* tasks whose ACCEPTED was waiting: refused (REJECTED) and stopped */
    s_accept_t *a;
    size_t n = 0;
    while ((a = zlist_pop(self->accepts))) {
        if (a->lsn > self->committed) {
            zxb_client_t *c = zxb_client_find(self, a->session);
            zxb_task_t *t = c ? zxb_task_find(self->sched, c, a->seq) : NULL;
            if (t && !t->refused && t->state != ZXB_T_JHELD) {
                t->refused = 1;
                zframe_t *e = zxp_error_frame("JournalError", msg, "");
                zxp_result_t r = {.seq = t->seq, .status = ZXP_ST_REJECTED, .pool = t->pool_req};
                if (c->alive) {
                    zxp_out_t *out = zxb_client_batch(self, c, ZXP_RESULT);
                    zxp_put_result(out, &r);
                    zxp_out_payload(out, &e);
                } else {
                    zframe_destroy(&e);
                }
                self->rejected++;
                n++;
                if (t->state == ZXB_T_QUEUED) {
                    zxb_queued_remove(self, t);
                    zxb_task_release(self, t);
                } else if (t->worker && !t->cancelled) {
                    t->cancelled = 1;
                    zxp_put_wcancel(zxb_worker_batch(self, t->worker, ZXP_WCANCEL), c->session,
                                    t->seq, true);
                }
            }
        } else {
            zxb_client_t *c = zxb_client_find(self, a->session);
            s_accept_send(self, c, a->seq);
        }
        free(a);
    }
    for (zxb_job_t *job = zhashx_first(self->jobs); job; job = zhashx_next(self->jobs)) {
        job->poked = true; /* what is held is fetchable now */
    }
    if (n) {
        zsys_error("journal %s: %zu submitted tasks were not committed: refused (REJECTED)",
                   self->cfg.journal_dir, n);
    }
}

void zxb_durable_committed(zxb_broker_t *self)
{
    if (!self->journal || self->journal_failed) {
        return;
    }
    uint64_t lsn = zxb_journal_committed(self->journal);
    if (lsn > self->committed) {
        self->committed = lsn;
    }
    char buf[8];
    if (zxb_journal_error(self->journal, buf, sizeof buf) != 0) {
        s_failed(self);
        return;
    }
    /* with a pair, durable once the passive holds it too (pair.c) */
    uint64_t durable = zxb_pair_durable(self, self->committed);
    if (lsn > 0 && zlist_size(self->fetch_waiters) > 0) {
        /* held results may have become fetchable */
        for (zxb_job_t *job = zhashx_first(self->jobs); job; job = zhashx_next(self->jobs)) {
            job->poked = job->poked || job->held > 0;
        }
    }
    s_accept_t *a;
    while ((a = zlist_first(self->accepts)) && a->lsn <= durable) {
        zlist_pop(self->accepts);
        s_accept_send(self, zxb_client_find(self, a->session), a->seq);
        free(a);
    }
    for (zxb_worker_t *w = zhashx_first(self->workers); w; w = zhashx_next(self->workers)) {
        s_mark_t *m;
        while (w->rx_marks && (m = zlist_first(w->rx_marks)) && m->lsn <= durable) {
            w->results_safe = m->rx;
            zlist_pop(w->rx_marks);
            free(m);
        }
        if (w->results_safe != w->results_ack) {
            /* at once, not at the next heartbeat: a result the worker still
               keeps is one it reports again after a broker restart, and
               the fewer of those whose task has ended since, the better */
            zxp_send_heartbeat_rx(zxb_wsock(self), w->rid, w->results_safe);
            w->results_ack = w->results_safe;
            w->ack_at = self->now;
        }
    }
}

/* ---- snapshot ----------------------------------------------------------------------- */

static void s_snap_queued(zxb_task_t *t, void *arg)
{
    zxb_broker_t *self = arg;
    if (t->journaled) {
        s_task_record(self, t, t->fn);
    }
}

void zxb_durable_snapshot(zxb_broker_t *self)
{
    zxb_journal_snapshot_begin(self->journal);
    self->live_bytes = 0;
    /* jobs first: their JOB record, held results, JOB again */
    for (zxb_job_t *job = zhashx_first(self->jobs); job; job = zhashx_next(self->jobs)) {
        s_job_record(self, job);
        for (size_t pos = job->lo; pos < job->len; pos++) {
            zxb_task_t *t = job->ring[pos];
            if (t) {
                s_task_record(self, t, NULL);
                s_result_record(self, t);
            }
        }
    }
    /* every unfinished journaled task: queued ones, and those on workers */
    for (zxb_fn_t *fn = zxb_fn_first(self->sched); fn; fn = zxb_fn_next(self->sched)) {
        for (int p = 0; p < 3; p++) {
            if (fn->q[p]) {
                zxb_queue_each(self->sched, fn->q[p], s_snap_queued, self);
            }
        }
    }
    for (zxb_worker_t *w = zhashx_first(self->workers); w; w = zhashx_next(self->workers)) {
        for (zxb_task_t *t = zxb_task_of(w->tasks.head); t; t = zxb_task_of(t->link.next)) {
            if (t->journaled && t->fn) {
                s_task_record(self, t, t->fn);
            }
        }
    }
    for (zxb_job_t *job = zhashx_first(self->jobs); job; job = zhashx_next(self->jobs)) {
        s_job_record(self, job);
    }
    zxb_journal_snapshot_end(self->journal);
    ZXB_INFO("journal %s: snapshot of %" PRIu64 " bytes", self->cfg.journal_dir, self->live_bytes);
}

void zxb_durable_turn(zxb_broker_t *self)
{
    if (!self->journal) {
        return;
    }
    uint64_t since = zxb_journal_bytes_since_snapshot(self->journal);
    uint64_t min = self->cfg.snapshot_bytes ? self->cfg.snapshot_bytes : (64ull << 20);
    uint64_t due = 4 * self->live_bytes > min ? 4 * self->live_bytes : min;
    if (!self->journal_failed && since > due) {
        zxb_durable_snapshot(self);
    }
    zxb_journal_flush(self->journal);
}

/* ---- recovery ------------------------------------------------------------------------- */

typedef struct {
    zxb_broker_t *self;
    zx__list_t pending; /* recovered tasks without a result, through link */
} s_replay_t;

static zxb_client_t *s_client_for(zxb_broker_t *self, const uint8_t *session)
{
    zxb_client_t *c = zxb_client_find(self, session);
    if (!c) {
        c = zxb_client_new(self, session);
    }
    return c;
}

static bool s_arr(const msgpack_object *o, const char *shape)
{
    size_t n = strlen(shape);
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size < n) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        msgpack_object_type ty = o->via.array.ptr[i].type;
        bool ok = true;
        switch (shape[i]) {
        case 'k':
            ok = ty == MSGPACK_OBJECT_BIN && o->via.array.ptr[i].via.bin.size == ZXP_ID_LEN;
            break;
        case 'u': ok = ty == MSGPACK_OBJECT_POSITIVE_INTEGER; break;
        case 'i':
            ok = ty == MSGPACK_OBJECT_POSITIVE_INTEGER || ty == MSGPACK_OBJECT_NEGATIVE_INTEGER;
            break;
        case 's': ok = ty == MSGPACK_OBJECT_STR; break;
        case 'b': ok = ty == MSGPACK_OBJECT_BIN; break;
        default: break;
        }
        if (!ok) {
            return false;
        }
    }
    return true;
}

static void s_replay_job(zxb_broker_t *self, const msgpack_object *o)
{
    const uint8_t *id = (const uint8_t *)zxp_s(o, 0).ptr;
    zxp_str_t name = zxp_s(o, 1);
    uint64_t flags = zxp_u(o, 4);
    zxb_job_t *job = zxb_job_find(self, id);
    if (flags & S_JF_DELETED) {
        if (job) {
            zhashx_delete(self->jobs, job->id);
            zxb_job_destroy(self, &job);
        }
        return;
    }
    if (!job) {
        char nm[ZXP_MAX_NAME + 1];
        snprintf(nm, sizeof nm, "%.*s", (int)name.len, name.ptr);
        job = zxb_job_new(self, id, nm, zxp_i(o, 2));
    }
    job->last = zxp_i(o, 3);
    job->cancelled = flags & S_JF_CANCELLED;
    job->expired = flags & S_JF_EXPIRED;
    job->submitted = zxp_u(o, 5);
    job->done = zxp_u(o, 6);
    job->failed = zxp_u(o, 7);
    job->acked = zxp_u(o, 8);
    if (zxp_u(o, 9) > job->next) {
        job->next = zxp_u(o, 9);
    }
    if (!job->client) {
        zxb_client_t *c = s_client_for(self, id);
        snprintf(c->name, sizeof c->name, "%s", job->name);
        c->job = job;
        job->client = c;
    }
}

static void s_replay_task(s_replay_t *r, const msgpack_object *o)
{
    zxb_broker_t *self = r->self;
    zxb_client_t *c = s_client_for(self, (const uint8_t *)zxp_s(o, 0).ptr);
    uint64_t seq = zxp_u(o, 1);
    if (zxb_task_find(self->sched, c, seq)) {
        return; /* a snapshot's copy of a task already here */
    }
    zxp_str_t fname = zxp_s(o, 2);
    zxb_fn_t *fn = zxb_fn_intern(self->sched, fname.ptr, fname.len);
    if (!fn) {
        return;
    }
    zxb_task_t *t = zxb_task_alloc(self->sched);
    assert(t);
    t->client = c;
    t->seq = seq;
    t->fn = fn;
    fn->refs++;
    t->pool_req = (uint8_t)zxp_u(o, 3);
    t->priority = (int8_t)zxp_i(o, 4);
    t->retries = (int8_t)zxp_i(o, 5);
    t->timeout_ms = (uint32_t)zxp_u(o, 6);
    t->flags = (uint32_t)zxp_u(o, 7);
    zxp_str_t args = zxp_s(o, 8);
    zxb_task_payload_set_mem(t, args.ptr, args.len);
    t->adopted = 1;
    t->journaled = 1;
    t->arrival = zxb_arrival_now(self->sched, self->now);
    zxb_task_index(self->sched, t);
    if (seq > c->max_seq) {
        c->max_seq = seq;
    }
    c->ntasks++;
    if (c->job) {
        c->job->submitted++;
    }
    zx__list_push_back(&r->pending, &t->link);
    self->live_bytes += args.len + S_TASK_OVERHEAD;
    self->recovered_tasks++;
}

static void s_replay_result(s_replay_t *r, const msgpack_object *o)
{
    zxb_broker_t *self = r->self;
    zxb_client_t *c = zxb_client_find(self, (const uint8_t *)zxp_s(o, 0).ptr);
    zxb_task_t *t = c ? zxb_task_find(self->sched, c, zxp_u(o, 1)) : NULL;
    if (!t || t->state == ZXB_T_JHELD || !c->job) {
        return;
    }
    zx__list_remove(&r->pending, &t->link);
    zxp_str_t node = zxp_s(o, 3), pl = zxp_s(o, 8);
    t->attempts = (uint8_t)(zxp_u(o, 6) > 255 ? 255 : zxp_u(o, 6));
    if (!zxb_job_hold(self, t, (uint32_t)zxp_u(o, 2), node.ptr, node.len, (uint32_t)zxp_u(o, 4),
                      (uint8_t)zxp_u(o, 5), NULL, pl.ptr, pl.len, zxp_u(o, 7))) {
        zxb_task_release(self, t);
        return;
    }
    self->live_bytes += pl.len + S_RESULT_OVERHEAD;
    self->recovered_results++;
}

static void s_replay_end(s_replay_t *r, const msgpack_object *o)
{
    zxb_broker_t *self = r->self;
    zxb_client_t *c = zxb_client_find(self, (const uint8_t *)zxp_s(o, 0).ptr);
    zxb_task_t *t = c ? zxb_task_find(self->sched, c, zxp_u(o, 1)) : NULL;
    if (!t) {
        return;
    }
    zxb_durable_unlive(self, (uint64_t)t->size + S_TASK_OVERHEAD);
    if (t->state == ZXB_T_JHELD) {
        zxb_job_t *job = c->job;
        job->acked++;
        zxb_job_unhold(self, job, t);
        return;
    }
    zx__list_remove(&r->pending, &t->link);
    zxb_task_release(self, t);
}

static int s_replay_fn(void *arg, uint8_t type, uint64_t lsn, const uint8_t *body, size_t len)
{
    s_replay_t *r = arg;
    (void)lsn;
    msgpack_zone zone;
    msgpack_zone_init(&zone, 2048);
    msgpack_object o;
    int rc = 0;
    if (zxp_mp_unpack(body, len, &zone, &o) != 0) {
        rc = -1;
    } else if (type == S_JOB && s_arr(&o, "ksiiuuuuuu")) {
        s_replay_job(r->self, &o);
    } else if (type == S_TASK && s_arr(&o, "kusuiiuub")) {
        s_replay_task(r, &o);
    } else if (type == S_RESULT && s_arr(&o, "kuusuuuub")) {
        s_replay_result(r, &o);
    } else if (type == S_END && s_arr(&o, "ku")) {
        s_replay_end(r, &o);
    } else {
        rc = -1;
    }
    msgpack_zone_destroy(&zone);
    if (rc) {
        zsys_error("journal %s: record %" PRIu64 " (type %u, %zu bytes) is not one this broker "
                   "writes",
                   r->self->cfg.journal_dir, lsn, type, len);
    }
    return rc;
}

int zxb_durable_open(zxb_broker_t *self)
{
    self->accepts = zlist_new();
    msgpack_sbuffer_init(&self->jbuf);
    msgpack_packer_init(&self->jpk, &self->jbuf, msgpack_sbuffer_write);
    if (!self->cfg.journal_dir) {
        return 0;
    }
    if (self->cfg.peer) {
        return zxb_pair_open(self); /* recovers when it becomes active */
    }
    return zxb_durable_recover(self);
}

int zxb_durable_recover(zxb_broker_t *self)
{
    int64_t t0 = zclock_usecs();
    zxb_journal_config_t jc = {.dir = self->cfg.journal_dir,
                               .fsync = (zxb_fsync_t)self->cfg.fsync_policy,
                               .interval_ms = self->cfg.fsync_interval_ms};
    char err[512];
    self->journal = zxb_journal_open(&jc, err, sizeof err);
    if (!self->journal) {
        zsys_error("journal %s: %s", self->cfg.journal_dir, err);
        return -1;
    }
    s_replay_t r = {.self = self};
    zx__list_init(&r.pending);
    zxb_journal_stats_t st;
    memset(&st, 0, sizeof st);
    self->replaying = true;
    int rc = zxb_journal_replay(self->journal, s_replay_fn, &r, &st, err, sizeof err);
    self->replaying = false;
    if (rc != 0) {
        zsys_error("journal %s: cannot recover: %s", self->cfg.journal_dir, err);
        return -1; /* the tasks made so far are freed with the broker */
    }
    /* unfinished tasks are queued again (those a worker still runs come
       back with its READY and are taken off the queue then) */
    zx__link_t *k;
    uint64_t queued = 0;
    self->hold_until = 1; /* nothing is dispatched while they are queued */
    while ((k = zx__list_pop_front(&r.pending))) {
        zxb_task_t *t = zxb_task_of(k);
        zx__link_init(&t->link);
        zxb_job_t *job = t->client->job;
        if (job && (job->cancelled || job->expired)) {
            zxb_task_release(self, t); /* it was being terminated */
            continue;
        }
        zxb_task_enqueue(self, t, false, false);
        queued++;
    }
    self->committed = zxb_journal_committed(self->journal);
    self->last_lsn = self->committed;
    self->hold_until =
        queued ? self->now + (int64_t)self->cfg.heartbeat_ms * self->cfg.liveness : 0;
    self->recovery_s = (double)(zclock_usecs() - t0) / 1e6;
    ZXB_INFO("journal %s: recovered %" PRIu64 " records (%" PRIu64 " bytes, %" PRIu64
             " segments%s) in %.3f s: %zu jobs, %" PRIu64 " tasks queued again, %" PRIu64
             " results held",
             self->cfg.journal_dir, st.records, st.bytes, st.segments,
             st.torn_bytes ? ", a torn tail cut off" : "", self->recovery_s,
             zhashx_size(self->jobs), queued, self->recovered_results);
    if (st.torn_bytes) {
        zsys_warning("journal %s: a torn last record (%" PRIu64 " bytes) was cut off: it was "
                     "never acknowledged",
                     self->cfg.journal_dir, st.torn_bytes);
    }
    return 0;
}

void zxb_durable_tick(zxb_broker_t *self)
{
    if (self->hold_until && self->now >= self->hold_until) {
        self->hold_until = 0;
        ZXB_INFO("journal %s: recovery window over: dispatching %" PRIu64 " queued tasks to %zu "
                 "workers",
                 self->cfg.journal_dir, self->queued, zhashx_size(self->workers));
        for (zxb_worker_t *w = zhashx_first(self->workers); w; w = zhashx_next(self->workers)) {
            zxb_worker_fill(self, w);
        }
    }
}

void zxb_durable_close(zxb_broker_t *self)
{
    zxb_pair_close(self); /* the standby's tap comes off the journal first */
    if (self->journal) {
        zxb_journal_flush(self->journal);
        zxb_journal_destroy(&self->journal);
    }
    if (self->accepts) {
        s_accept_t *a;
        while ((a = zlist_pop(self->accepts))) {
            free(a);
        }
        zlist_destroy(&self->accepts);
    }
    msgpack_sbuffer_destroy(&self->jbuf);
}
