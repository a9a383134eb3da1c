/*  jobs.c - detached jobs (docs/protocol.md §13): a client session whose
    tasks and results outlive its connection, and the commands that reach
    a job from any session (FETCH with its long poll, RACK, JOBS, JCANCEL),
    the per-job quota and the expiry of jobs at the tick.

    A job is anchored on its client record (the session said HELLO with the
    JOB flag; the session id is the job id). The job record itself lives in
    the broker's job table and outlives the client record: once its session
    has left and every result has been RACKed, the client record goes as any
    client's does and the job stays as its info alone (state "done") until
    it expires. While the client record lives, its tasks are ordinary tasks
    (queued, on workers) whose session leaving does not drop them
    (client.c), and a task with a result becomes ZXB_T_JHELD: the task
    record keeps the result payload, the interned node name and the
    completion index, and stays in the task table (a re-sent SUBMIT is
    known, a RACK finds it by seq) until it is RACKed. The job keeps its
    held tasks in completion order in an array indexed by completion index
    minus a base, so a FETCH starts where it asks in O(1) and RACKed holes
    at the front are reclaimed.
*/
#include "zxb_broker.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define S_JOBS_REPLY_MAX 4096 /* infos in one JOBS-REPLY (header limit) */

/* A FETCH waiting for a result (long poll). */
typedef struct {
    zframe_t *rid; /* the fetcher's routing id */
    uint8_t job[ZXP_ID_LEN];
    uint64_t after, max;
    int64_t deadline; /* broker ms */
} s_waiter_t;

static int64_t s_unix(void)
{
    return (int64_t)time(NULL);
}

zxb_job_t *zxb_job_find(zxb_broker_t *self, const uint8_t *id)
{
    return zhashx_lookup(self->jobs, id);
}

/* Tasks of the job without a result yet. */
static uint64_t s_unfinished(const zxb_job_t *job)
{
    return job->client ? job->client->ntasks - job->held : 0;
}

static void s_touch(zxb_broker_t *self, zxb_job_t *job)
{
    (void)self;
    job->last = s_unix();
}

zxb_job_t *zxb_job_new(zxb_broker_t *self, const uint8_t *id, const char *name, int64_t created)
{
    zxb_job_t *job = calloc(1, sizeof *job);
    assert(job);
    memcpy(job->id, id, ZXP_ID_LEN);
    snprintf(job->name, sizeof job->name, "%s", name);
    job->created = created;
    job->last = created;
    zhashx_insert(self->jobs, job->id, job);
    return job;
}

void zxb_job_destroy(zxb_broker_t *self, zxb_job_t **job_p)
{
    zxb_job_t *job = *job_p;
    if (!job) {
        return;
    }
    (void)self;
    if (job->client) {
        job->client->job = NULL;
    }
    free(job->ring);
    free(job);
    *job_p = NULL;
}

bool zxb_job_attach(zxb_broker_t *self, zxb_client_t *c)
{
    zxb_job_t *job = c->job ? c->job : zxb_job_find(self, c->session);
    bool fresh = !job;
    if (!job) {
        if (zhashx_size(self->jobs) >= self->cfg.max_jobs) {
            return false; /* each is kept --job-retention: a bound on that memory */
        }
        job = zxb_job_new(self, c->session, c->name, s_unix());
    }
    snprintf(job->name, sizeof job->name, "%s", c->name);
    job->client = c;
    c->job = job;
    s_touch(self, job);
    zxb_durable_job(self, job);
    char hex[33];
    zxb_hex(job->id, hex);
    if (fresh) {
        ZXB_INFO("job %s (%s) opened", hex, job->name);
    } else {
        ZXB_INFO("job %s (%s) attached again: %" PRIu64 " tasks unfinished, %" PRIu64
                 " results held",
                 hex, job->name, s_unfinished(job), job->held);
    }
    return true;
}

void zxb_job_left(zxb_broker_t *self, zxb_client_t *c, const char *why)
{
    zxb_job_t *job = c->job;
    s_touch(self, job);
    job->poked = true;
    char hex[33];
    zxb_hex(job->id, hex);
    ZXB_INFO("job %s (%s) detached (its session %s): %" PRIu64 " tasks unfinished, %" PRIu64
             " results held",
             hex, job->name, why, s_unfinished(job), job->held);
}

const char *zxb_job_state(const zxb_job_t *job)
{
    if (job->expired) {
        return "expired";
    }
    if (job->cancelled) {
        return "cancelled";
    }
    if (job->client && job->client->alive) {
        return "open";
    }
    return s_unfinished(job) == 0 ? "done" : "detached";
}

void zxb_job_info(zxb_broker_t *self, const zxb_job_t *job, zxp_jobinfo_t *info)
{
    memset(info, 0, sizeof *info);
    memcpy(info->id, job->id, ZXP_ID_LEN);
    snprintf(info->name, sizeof info->name, "%s", job->name);
    snprintf(info->state, sizeof info->state, "%s", zxb_job_state(job));
    info->submitted = job->submitted;
    info->queued = job->client ? job->client->queued : 0;
    uint64_t unfinished = s_unfinished(job);
    info->running = unfinished > info->queued ? unfinished - info->queued : 0;
    info->done = job->done;
    info->failed = job->failed;
    info->held = job->held;
    info->held_bytes = job->held_bytes;
    info->acked = job->acked;
    info->created = job->created;
    info->expires = job->last + self->cfg.job_retention_s;
    info->next = job->next;
}

/* ---- held results, in completion order -------------------------------------------- */

static void s_ring_push(zxb_job_t *job, zxb_task_t *t)
{
    if (job->len == 0) {
        job->base = t->jindex;
        job->lo = 0;
    }
    if (job->len == job->cap) {
        if (job->lo > 0) {
            /* reclaim the RACKed front */
            memmove(job->ring, job->ring + job->lo, (job->len - job->lo) * sizeof *job->ring);
            job->len -= job->lo;
            job->base += job->lo;
            job->lo = 0;
        }
        if (job->len == job->cap) {
            job->cap = job->cap ? 2 * job->cap : 64;
            job->ring = realloc(job->ring, job->cap * sizeof *job->ring);
            assert(job->ring);
        }
    }
    if (t->jindex > job->base + job->len) {
        /* a gap (recovered from a snapshot: the results between were RACKed) */
        job->ring[job->len++] = NULL;
        s_ring_push(job, t);
        return;
    }
    assert(t->jindex == job->base + job->len);
    job->ring[job->len++] = t;
}

static void s_ring_remove(zxb_job_t *job, zxb_task_t *t)
{
    size_t pos = (size_t)(t->jindex - job->base);
    assert(pos < job->len && job->ring[pos] == t);
    job->ring[pos] = NULL;
    while (job->lo < job->len && !job->ring[job->lo]) {
        job->lo++;
    }
    if (job->lo == job->len) {
        job->lo = job->len = 0;
        job->base = job->next + 1;
    }
}

/* Makes t, which just got its result, a held result of its job (the
   payload moves into the task), with completion index index (0: the next).
   False when the job takes no more results (cancelled, expired): the
   caller discards it. */
bool zxb_job_hold(zxb_broker_t *self, zxb_task_t *t, uint32_t status, const char *node,
                  size_t node_len, uint32_t pid, uint8_t pool, zframe_t **payload, const void *mem,
                  size_t len, uint64_t index)
{
    zxb_job_t *job = t->client->job;
    if ((job->cancelled || job->expired) && !self->replaying) {
        return false;
    }
    if (t->fn) {
        t->fn->refs--;
    }
    t->fn = node_len ? zxb_fn_intern(self->sched, node, node_len) : NULL;
    if (t->fn) {
        t->fn->refs++;
    }
    uint32_t args = t->size; /* its arguments no longer count as live journal bytes */
    if (payload && *payload) {
        zxb_task_payload_set(t, payload);
    } else {
        zxb_task_payload_set_mem(t, mem, len);
    }
    if (t->journaled) {
        zxb_durable_unlive(self, args);
    }
    t->held_status = status;
    t->held_pid = pid;
    t->pool = pool;
    t->state = ZXB_T_JHELD;
    t->worker = NULL;
    t->jindex = index ? index : job->next + 1;
    if (t->jindex > job->next) {
        job->next = t->jindex;
    }
    s_ring_push(job, t);
    job->held++;
    job->held_bytes += t->size;
    job->done++;
    if (status != ZXP_ST_OK) {
        job->failed++;
    }
    self->jobs_held++;
    s_touch(self, job);
    job->poked = true;
    zxb_durable_result(self, t);
    return true;
}

/* Forgets a held result (RACKed, or its job dropped). */
void zxb_job_unhold(zxb_broker_t *self, zxb_job_t *job, zxb_task_t *t)
{
    s_ring_remove(job, t);
    job->held--;
    job->held_bytes -= t->size;
    self->jobs_held--;
    if (t->journaled) {
        zxb_durable_unlive(self, 70); /* its RESULT record (durable.c) */
    }
    t->state = ZXB_T_FREE;
    zxb_task_release(self, t);
}

/* Puts the payload of held task t in out as a copy (a frame is not shared:
   a RACK in this turn may free the task before out is sent). */
void zxb_job_payload_copy(zxb_task_t *t, zxp_out_t *out)
{
    if (t->pl_kind == ZXB_PL_FRAME) {
        zframe_t *f = zframe_dup(t->pl.frame);
        zxp_out_payload(out, &f);
    } else {
        zxb_task_payload_put(t, out);
    }
}

/* ---- FETCH ---------------------------------------------------------------------- */

/* The position in job->ring of the first index past after. */
static size_t s_pos_after(const zxb_job_t *job, uint64_t after)
{
    size_t pos = job->lo;
    if (after + 1 > job->base && after + 1 - job->base > pos) {
        pos = (size_t)(after + 1 - job->base);
    }
    return pos;
}

/* Whether a held result past after can be fetched: with a journal, only
   results whose record is committed are (a RACK of one that was not could
   outlive it across a crash), and those come in index order. */
static bool s_has_after(zxb_broker_t *self, const zxb_job_t *job, uint64_t after)
{
    if (job->held == 0 || job->next <= after) {
        return false;
    }
    for (size_t pos = s_pos_after(job, after); pos < job->len; pos++) {
        if (job->ring[pos]) {
            return zxb_durable_visible(self, job->ring[pos]);
        }
    }
    return false;
}

/* Whether results past after are held but not fetchable yet (their records
   are not committed): a FETCH waits for them. */
static bool s_pending_after(const zxb_job_t *job, uint64_t after)
{
    return job->held > 0 && job->next > after;
}

/* Sends the held results of job past after (at most max) to rid as JRESULT
   batches, then FETCHED. */
static void s_fetch_answer(zxb_broker_t *self, zframe_t *rid, const uint8_t *id, zxb_job_t *job,
                           uint64_t after, uint64_t max)
{
    zxp_out_t *out = &self->jout;
    zxp_jobinfo_t info;
    if (job) {
        uint64_t sent = 0;
        zxp_out_begin(out, ZXP_JRESULT);
        for (size_t pos = s_pos_after(job, after); pos < job->len && sent < max; pos++) {
            zxb_task_t *t = job->ring[pos];
            if (!t) {
                continue;
            }
            if (!zxb_durable_visible(self, t)) {
                break; /* not committed yet: neither is any after it */
            }
            if (zxp_out_full(out)) {
                zxp_out_send(out, zxb_csock(self), rid);
                zxp_out_begin(out, ZXP_JRESULT);
            }
            zxp_jresult_t j = {.r = {.seq = t->seq,
                                     .status = t->held_status,
                                     .node = {t->fn ? t->fn->name : "", t->fn ? t->fn->len : 0},
                                     .pid = t->held_pid,
                                     .pool = t->pool,
                                     .attempts = t->attempts},
                               .index = t->jindex};
            zxp_put_jresult(out, &j);
            zxb_task_payload_put(t, out); /* sent below, before anything can free t */
            sent++;
        }
        if (out->count) {
            zxp_out_send(out, zxb_csock(self), rid);
        }
        zxp_out_begin(out, ZXP_HEARTBEAT); /* drops the borrowed payloads' references */
        zxb_job_info(self, job, &info);
    } else {
        memset(&info, 0, sizeof info);
        memcpy(info.id, id, ZXP_ID_LEN);
        snprintf(info.error, sizeof info.error, "unknown job (never submitted, or expired)");
    }
    zxp_send_jobinfo(zxb_csock(self), rid, ZXP_FETCHED, id, &info);
}

static void s_waiter_free(s_waiter_t **w_p);

void zxb_job_on_fetch(zxb_broker_t *self, zxb_client_t *c)
{
    zxp_fetch_t f;
    zxp_get_fetch(&self->in, &f);
    zxb_job_t *job = zxb_job_find(self, f.job);
    if (job) {
        s_touch(self, job);
    }
    if (job && f.max > 0 && f.wait_ms > 0 && !s_has_after(self, job, f.after) &&
        (s_unfinished(job) > 0 || s_pending_after(job, f.after)) && !job->cancelled &&
        !job->expired) {
        /* one waiting FETCH per session and job: a session that sends FETCH
           after FETCH (a client that gave up on an answer, or a flood: 640
           bytes each, and every turn walks the list) ends the wait of its
           older one now, answered as at its deadline */
        for (s_waiter_t *o = zlist_first(self->fetch_waiters); o;
             o = zlist_next(self->fetch_waiters)) {
            if (memcmp(o->job, f.job, ZXP_ID_LEN) == 0 && zframe_eq(o->rid, c->rid)) {
                zlist_remove(self->fetch_waiters, o);
                s_fetch_answer(self, o->rid, o->job, job, o->after, o->max);
                s_waiter_free(&o);
                break;
            }
        }
        s_waiter_t *w = calloc(1, sizeof *w);
        assert(w);
        w->rid = zframe_dup(c->rid);
        memcpy(w->job, f.job, ZXP_ID_LEN);
        w->after = f.after;
        w->max = f.max;
        w->deadline = self->now + f.wait_ms;
        zlist_append(self->fetch_waiters, w);
        return;
    }
    s_fetch_answer(self, c->rid, f.job, job, f.after, f.max);
}

static void s_waiter_free(s_waiter_t **w_p)
{
    zframe_destroy(&(*w_p)->rid);
    free(*w_p);
    *w_p = NULL;
}

/* Answers the waiting FETCHes whose job moved this turn, or whose wait is
   over (tick: at == true), or all of them (stopping). */
static void s_waiters_answer(zxb_broker_t *self, bool tick, bool all)
{
    s_waiter_t *w = zlist_first(self->fetch_waiters);
    while (w) {
        s_waiter_t *next = zlist_next(self->fetch_waiters);
        zxb_job_t *job = zxb_job_find(self, w->job);
        bool go = all || !job ||
                  (job->poked && (s_has_after(self, job, w->after) ||
                                  (s_unfinished(job) == 0 && !s_pending_after(job, w->after)) ||
                                  job->cancelled || job->expired));
        if (tick && w->deadline <= self->now) {
            go = true;
        }
        if (go) {
            zlist_remove(self->fetch_waiters, w);
            if (!all) {
                s_fetch_answer(self, w->rid, w->job, job, w->after, w->max);
            }
            s_waiter_free(&w);
        }
        w = next;
    }
}

void zxb_jobs_flush(zxb_broker_t *self)
{
    if (zlist_size(self->fetch_waiters) == 0) {
        return;
    }
    s_waiters_answer(self, false, false);
    for (zxb_job_t *job = zhashx_first(self->jobs); job; job = zhashx_next(self->jobs)) {
        job->poked = false;
    }
}

/* ---- RACK, JOBS, JCANCEL ------------------------------------------------------------ */

void zxb_job_on_rack(zxb_broker_t *self)
{
    zxp_in_t *in = &self->in;
    zxb_job_t *job = zxb_job_find(self, zxp_rack_job(in));
    if (!job || !job->client) {
        return;
    }
    s_touch(self, job);
    zxb_client_t *c = job->client;
    size_t n = zxp_rack_count(in);
    for (size_t i = 0; i < n && job->client; i++) {
        zxb_task_t *t = zxb_task_find(self->sched, c, zxp_rack_seq(in, i));
        if (t && t->state == ZXB_T_JHELD) {
            job->acked++;
            zxb_job_unhold(self, job, t); /* may free c (the last of a detached job) */
        }
    }
}

void zxb_job_on_jobs(zxb_broker_t *self, zxb_client_t *c)
{
    size_t n = zhashx_size(self->jobs);
    if (n > S_JOBS_REPLY_MAX) {
        n = S_JOBS_REPLY_MAX;
    }
    zxp_jobinfo_t *infos = calloc(n ? n : 1, sizeof *infos);
    assert(infos);
    size_t k = 0;
    for (zxb_job_t *job = zhashx_first(self->jobs); job && k < n; job = zhashx_next(self->jobs)) {
        zxb_job_info(self, job, &infos[k++]);
    }
    /* oldest first */
    for (size_t i = 1; i < k; i++) {
        zxp_jobinfo_t x = infos[i];
        size_t j = i;
        while (j > 0 && infos[j - 1].created > x.created) {
            infos[j] = infos[j - 1];
            j--;
        }
        infos[j] = x;
    }
    zxp_send_jobs_reply(zxb_csock(self), c->rid, infos, k);
    free(infos);
}

static void s_cancel_queued(zxb_task_t *t, void *arg)
{
    zxb_broker_t *self = arg;
    zxb_queued_forget(self, t);
    /* a session still connected (the submitter, before it detached) holds
       a future for it: that future ends cancelled, as after its own CANCEL */
    zxb_cancelled_send(self, t->client, t->seq, ZXP_CANCEL_DONE);
    self->cancelled++;
    zxb_task_release(self, t);
}

/* Drops the job's queued tasks and terminates its running ones; with
   drop_held, its held results go too. */
static void s_job_stop(zxb_broker_t *self, zxb_job_t *job, bool drop_held)
{
    zxb_client_t *c = job->client;
    if (!c) {
        return;
    }
    c->ntasks++; /* keep c while its tasks go */
    zxb_client_fifos_drain(self->sched, c, s_cancel_queued, self);
    for (zxb_worker_t *w = zhashx_first(self->workers); w; w = zhashx_next(self->workers)) {
        for (zxb_task_t *t = zxb_task_of(w->tasks.head); t; t = zxb_task_of(t->link.next)) {
            if (t->client == c && !t->cancelled) {
                t->cancelled = 1;
                zxp_put_wcancel(zxb_worker_batch(self, w, ZXP_WCANCEL), c->session, t->seq, true);
            }
        }
    }
    if (drop_held) {
        for (size_t pos = job->lo; job->held > 0 && pos < job->len; pos++) {
            if (job->ring[pos]) {
                zxb_job_unhold(self, job, job->ring[pos]);
            }
        }
    }
    c->ntasks--;
    zxb_client_check(self, c);
}

void zxb_job_on_jcancel(zxb_broker_t *self, zxb_client_t *c)
{
    const uint8_t *id = zxp_job_id(&self->in);
    zxb_job_t *job = zxb_job_find(self, id);
    zxp_jobinfo_t info;
    if (!job) {
        memset(&info, 0, sizeof info);
        memcpy(info.id, id, ZXP_ID_LEN);
        snprintf(info.error, sizeof info.error, "unknown job (never submitted, or expired)");
        zxp_send_jobinfo(zxb_csock(self), c->rid, ZXP_JCANCELLED, id, &info);
        return;
    }
    if (!job->cancelled && !job->expired) {
        job->cancelled = true;
        uint64_t unfinished = s_unfinished(job);
        s_job_stop(self, job, false);
        zxb_durable_job(self, job);
        char hex[33];
        zxb_hex(job->id, hex);
        ZXB_INFO("job %s (%s) cancelled: %" PRIu64
                 " unfinished tasks dropped or terminated, %" PRIu64 " results still held",
                 hex, job->name, unfinished, job->held);
    }
    s_touch(self, job);
    job->poked = true;
    zxb_job_info(self, job, &info);
    zxp_send_jobinfo(zxb_csock(self), c->rid, ZXP_JCANCELLED, id, &info);
}

/* ---- expiry ----------------------------------------------------------------------- */

void zxb_jobs_tick(zxb_broker_t *self)
{
    if (zlist_size(self->fetch_waiters) > 0) {
        s_waiters_answer(self, true, false);
    }
    if (self->now - self->jobs_tick_at < 1000) {
        return;
    }
    self->jobs_tick_at = self->now;
    int64_t now = s_unix();
    zlist_t *gone = NULL;
    for (zxb_job_t *job = zhashx_first(self->jobs); job; job = zhashx_next(self->jobs)) {
        if ((job->client && job->client->alive) || now < job->last + self->cfg.job_retention_s) {
            continue;
        }
        if (job->client && job->client->ntasks > 0 && !job->expired) {
            char hex[33];
            zxb_hex(job->id, hex);
            zsys_warning("job %s (%s) expired (no activity for %" PRId64 " s, --job-retention): "
                         "%" PRIu64 " unfinished tasks and %" PRIu64 " held results dropped",
                         hex, job->name, now - job->last, s_unfinished(job), job->held);
            job->expired = true;
            s_job_stop(self, job, true);
            job->last = now; /* its info stays, "expired", for one more period */
            zxb_durable_job(self, job);
            continue;
        }
        if (!job->client || job->client->ntasks == 0) {
            if (!gone) {
                gone = zlist_new();
            }
            zlist_append(gone, job);
        }
    }
    for (zxb_job_t *job = gone ? zlist_first(gone) : NULL; job; job = zlist_next(gone)) {
        job->deleted = true;
        zxb_durable_job(self, job);
        zhashx_delete(self->jobs, job->id);
        zxb_job_destroy(self, &job);
    }
    zlist_destroy(&gone);
}

void zxb_jobs_fini(zxb_broker_t *self)
{
    if (self->fetch_waiters) {
        s_waiters_answer(self, false, true);
        zlist_destroy(&self->fetch_waiters);
    }
    if (self->jobs) {
        zxb_job_t *job;
        while ((job = zhashx_first(self->jobs))) {
            zhashx_delete(self->jobs, job->id);
            zxb_job_destroy(self, &job);
        }
        zhashx_destroy(&self->jobs);
    }
    zxp_out_fini(&self->jout);
}
