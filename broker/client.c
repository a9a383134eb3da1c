/*  client.c - the broker's side of its clients: their records and what
    each client command does (HELLO, SUBMIT, CANCEL, STATUS, BYE), and
    client liveness.

    A client record is keyed by its session (the 16-byte routing id it
    chose); it outlives the connection while tasks point at it, so a client
    that reconnects finds its tasks, and a worker's READY after a broker
    restart can report tasks of a client that has not said HELLO yet (a
    placeholder record, made in workers.c). SUBMIT accepts a batch of tasks,
    applies the per-client quotas, recognises re-sent tasks (duplicates, or
    tasks a worker reported that the client now adopts) and hands new ones
    to dispatch.c. A client that leaves has its queued tasks dropped and its
    not-yet-started tasks withdrawn from workers.
*/
#include "zxb_broker.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- client records ------------------------------------------------------------ */

zxb_client_t *zxb_client_new(zxb_broker_t *self, const uint8_t *session)
{
    zxb_client_t *c = calloc(1, sizeof *c);
    assert(c);
    memcpy(c->session, session, ZXP_ID_LEN);
    c->rid = zframe_new(session, ZXP_ID_LEN);
    c->created = self->now;
    c->last_recv = self->now;
    snprintf(c->name, sizeof c->name, "?");
    zhashx_insert(self->clients, c->session, c);
    return c;
}

zxb_client_t *zxb_client_find(zxb_broker_t *self, const uint8_t *session)
{
    /* most messages in a row are of one client (a stream, or the one
       client of a round trip): a comparison instead of a table lookup */
    zxb_client_t *c = self->last_client;
    if (c && memcmp(c->session, session, ZXP_ID_LEN) == 0) {
        return c;
    }
    c = zhashx_lookup(self->clients, session);
    if (c) {
        self->last_client = c;
    }
    return c;
}

void zxb_client_destroy(zxb_broker_t *self, zxb_client_t **c_p)
{
    zxb_client_t *c = *c_p;
    if (!c) {
        return;
    }
    if (self->last_client == c) {
        self->last_client = NULL;
    }
    zxb_out_put(self, &c->out_started);
    zxb_out_put(self, &c->out_result);
    zxb_out_put(self, &c->out_cancelled);
    zxb_out_put(self, &c->out_accepted);
    if (c->job) {
        c->job->client = NULL; /* the job stays, as its info */
    }
    zxb_client_fifos_destroy(c);
    zframe_destroy(&c->rid);
    free(c);
    *c_p = NULL;
}

/* A client that is gone and holds no task is freed at the end of the turn
   (it may still be on the dirty list now). */
void zxb_client_check(zxb_broker_t *self, zxb_client_t *c)
{
    if (!c->alive && c->ntasks == 0 && !c->doomed) {
        c->doomed = true;
        zlist_append(self->doomed, c);
    }
}

static void s_client_dirty(zxb_broker_t *self, zxb_client_t *c)
{
    if (!c->dirty) {
        c->dirty = true;
        c->dirty_next = self->dirty_clients;
        self->dirty_clients = c;
    }
}

zxp_out_t *zxb_client_batch(zxb_broker_t *self, zxb_client_t *c, uint8_t cmd)
{
    s_client_dirty(self, c);
    zxp_out_t **slot = cmd == ZXP_STARTED    ? &c->out_started
                       : cmd == ZXP_RESULT   ? &c->out_result
                       : cmd == ZXP_ACCEPTED ? &c->out_accepted
                                             : &c->out_cancelled;
    return zxb_batch(self, slot, cmd, zxb_csock(self), c->rid);
}

/* ---- client commands ------------------------------------------------------------- */

static void s_client_gone(zxb_broker_t *self, zxb_client_t *c, const char *why);

static void s_drop_queued(zxb_task_t *t, void *arg)
{
    zxb_broker_t *self = arg;
    zxb_queued_forget(self, t);
    zxb_task_release(self, t);
}

static void s_on_hello(zxb_broker_t *self, zxb_client_t *c, zframe_t *rid)
{
    const msgpack_object *h = zxp_item(&self->in, 0);
    zxp_str_t session = zxp_s(h, 1), name = zxp_s(h, 2);
    if (zxp_u(h, 0) != ZXP_VERSION) {
        zxp_send_error(zxb_csock(self), rid, ZXP_ERR_VERSION, "unsupported protocol version");
        return;
    }
    if (memcmp(session.ptr, zframe_data(rid), ZXP_ID_LEN) != 0) {
        zxp_send_error(zxb_csock(self), rid, ZXP_ERR_IDENTITY,
                       "the routing id must be the 16-byte session");
        zxp_drop(&self->drops, "clients", rid, ZXP_E_SHAPE, "HELLO session is not the routing id");
        return;
    }
    bool known = c != NULL;
    if (!c) {
        c = zxb_client_new(self, (const uint8_t *)session.ptr);
    }
    bool recovered = known && !c->ever;
    bool back = known && c->ever && !c->alive;
    snprintf(c->name, sizeof c->name, "%.*s", (int)name.len, name.ptr);
    uint64_t hb = zxp_u(h, 3);
    c->hb_ms = hb ? (uint32_t)hb : self->cfg.heartbeat_ms;
    c->max_msg = zxb_opt_u(h, 4);
    c->alive = true;
    c->ever = true;
    c->tx_bytes = c->rx_bytes = 0; /* a new connection counts from zero, as the client does */
    c->acks = false;
    c->overflow = false;
    c->expired = false;
    c->doomed = false;
    c->last_recv = self->now;
    uint32_t flags = zxp_hello_flags(&self->in);
    c->want_accept = flags & ZXP_HELLO_ACCEPT;
    c->job_refused = false;
    if (((flags & ZXP_HELLO_JOB) || c->job) && !zxb_job_attach(self, c)) {
        /* no ERROR for it (a client goes on saying HELLO after one): the
           session is welcomed and each of its tasks is refused, saying why
           (protocol.md 13) */
        c->job_refused = true;
        ZXB_INFO("client %s asked for a detached job: refused, the broker holds %zu "
                 "(--max-jobs %" PRIu64 ")",
                 c->name, zhashx_size(self->jobs), self->cfg.max_jobs);
    }
    char hex[33];
    zxb_hex(c->session, hex);
    if (recovered) {
        ZXB_INFO("client %s (session %s) connected; %" PRIu64 " of its tasks were reported by "
                 "workers",
                 c->name, hex, c->ntasks);
    } else if (back) {
        ZXB_INFO("client %s (session %s) is back; %" PRIu64 " of its tasks still on workers",
                 c->name, hex, c->ntasks);
    } else if (!known) {
        ZXB_INFO("client %s (session %s) connected", c->name, hex);
    }
    zxp_send_welcome(zxb_csock(self), c->rid, self->id, self->cfg.heartbeat_ms, self->cfg.liveness,
                     (uint32_t)zxp_max_msg());
    c->last_send = self->now;
}

static void s_reject(zxb_broker_t *self, zxb_client_t *c, const zxp_submit_t *s, zframe_t **payload,
                     const char *type, const char *msg)
{
    zframe_destroy(payload);
    zframe_t *err = zxp_error_frame(type, msg, "");
    zxp_out_t *out = zxb_client_batch(self, c, ZXP_RESULT);
    zxp_result_t r = {.seq = s->seq, .status = ZXP_ST_REJECTED, .pool = s->pool};
    zxp_put_result(out, &r);
    zxp_out_payload(out, &err);
    self->rejected++;
    self->failed++;
}

/* A SUBMIT item the decoder refused (zxp_item_bad) fails alone: its
   future gets REJECTED with the reason and the code, and the rest of the
   batch goes on. */
static void s_reject_bad(zxb_broker_t *self, zxb_client_t *c, size_t i, int bad)
{
    char msg[256];
    snprintf(msg, sizeof msg, "task refused by the broker: %s (bad item code %d)",
             zxp_bad_reason(bad), bad);
    zframe_t *err = zxp_error_frame("BadRequestError", msg, "");
    zxp_out_t *out = zxb_client_batch(self, c, ZXP_RESULT);
    zxp_result_t r = {.seq = zxp_u(zxp_item(&self->in, i), 0), .status = ZXP_ST_REJECTED};
    zxp_put_result(out, &r);
    zxp_out_payload(out, &err);
    self->rejected++;
    self->failed++;
}

/* The client re-sent a task a worker reported after a broker restart: it
   becomes the client's again (with its arguments, for a retry). */
static void s_adopt(zxb_broker_t *self, zxb_task_t *t, const zxp_submit_t *s, zframe_t **payload)
{
    zxb_client_t *c = t->client;
    zxb_fn_t *fn = zxb_fn_intern(self->sched, s->fn.ptr, s->fn.len);
    t->adopted = 1;
    t->priority = s->priority;
    t->retries = (int8_t)s->retries;
    t->pool_req = s->pool;
    if (t->state == ZXB_T_HELD) {
        zxb_fn_t *node = t->fn; /* the interned node name, see zxb_task */
        zframe_t *res = zxb_task_payload_take(t);
        zframe_destroy(payload);
        zxb_result_send(self, t, t->held_status, node->name, node->len, t->held_pid, t->pool, &res,
                        NULL, 0);
        self->nheld--;
        zxb_task_release(self, t);
        return;
    }
    t->fn = fn;
    fn->refs++;
    t->timeout_ms = s->timeout_ms;
    t->flags = s->flags;
    uint32_t before = t->size;
    zxb_task_payload_set(t, payload);
    if (t->worker) {
        /* recovered on a worker: its bytes count there (zxb_task_link) */
        t->worker->place[t->pool].bytes = t->worker->place[t->pool].bytes - before + t->size;
    }
    if (t->state == ZXB_T_RUNNING && t->worker && c->alive) {
        zxb_worker_t *w = t->worker;
        zxp_put_started(zxb_client_batch(self, c, ZXP_STARTED), t->seq, w->node, strlen(w->node),
                        0);
    }
}

static void s_on_submit(zxb_broker_t *self, zxb_client_t *c)
{
    zxp_in_t *in = &self->in;
    zxb_fn_t *last = NULL;
    for (size_t i = 0; i < in->count; i++) {
        int bad = zxp_item_bad(in, i);
        if (bad) {
            const void *m;
            size_t l;
            if (!zxp_payload_take_inline(in, &m, &l)) {
                zframe_t *p = zxp_payload_take(in);
                zframe_destroy(&p);
            }
            s_reject_bad(self, c, i, bad);
            continue;
        }
        zxp_submit_t s;
        zxp_get_submit(in, i, &s);
        /* an inline payload is read in place; a frame is made for it only
           when an adopted task keeps it */
        const void *mem = NULL;
        size_t size = 0;
        zframe_t *payload = NULL;
        bool inl = zxp_payload_take_inline(in, &mem, &size);
        if (!inl) {
            payload = zxp_payload_take(in);
            size = payload ? zframe_size(payload) : 0;
        }
        /* clients number tasks upwards: only a re-send can be known already */
        zxb_task_t *t = s.seq > c->max_seq ? NULL : zxb_task_find(self->sched, c, s.seq);
        if (s.seq > c->max_seq) {
            c->max_seq = s.seq;
        }
        if (t) {
            if (!t->adopted) {
                if (inl) {
                    payload = zframe_new(mem, size); /* the adopted task keeps it */
                }
                s_adopt(self, t, &s, &payload);
            } else {
                self->duplicates++; /* re-sent after a reconnect: we have it */
                zframe_destroy(&payload);
            }
            zxb_durable_accept_again(self, c, s.seq);
            continue;
        }
        const char *refusal = zxb_durable_refusal(self);
        if (refusal) {
            /* the journal cannot be written: nothing new is acknowledged */
            s_reject(self, c, &s, &payload, "JournalError", refusal);
            continue;
        }
        if (c->job_refused) {
            char msg[256];
            snprintf(
                msg, sizeof msg,
                "no detached job made: the broker holds %zu jobs, its limit (--max-jobs %" PRIu64
                ")",
                zhashx_size(self->jobs), self->cfg.max_jobs);
            s_reject(self, c, &s, &payload, "QuotaError", msg);
            continue;
        }
        if (c->job && (c->job->cancelled || c->job->expired)) {
            s_reject(self, c, &s, &payload, "QuotaError",
                     c->job->cancelled ? "job cancelled: it takes no more tasks"
                                       : "job expired: it takes no more tasks");
            continue;
        }
        if (c->job && c->job->held_bytes >= self->cfg.job_max_bytes) {
            char msg[256];
            snprintf(msg, sizeof msg,
                     "job quota exceeded: fetch results (%" PRIu64
                     " result bytes held, --job-max-bytes %" PRIu64 ")",
                     c->job->held_bytes, self->cfg.job_max_bytes);
            s_reject(self, c, &s, &payload, "QuotaError", msg);
            continue;
        }
        if (c->queued >= self->cfg.max_queued) {
            char msg[512];
            snprintf(msg, sizeof msg,
                     "client %s has %" PRIu64 " tasks queued, the broker's limit "
                     "(--max-queued %" PRIu64 ")",
                     c->name, c->queued, self->cfg.max_queued);
            s_reject(self, c, &s, &payload, "QuotaError", msg);
            continue;
        }
        zxb_fn_t *fn = last;
        if (!fn || fn->len != s.fn.len || memcmp(fn->name, s.fn.ptr, s.fn.len) != 0) {
            /* a task refused below interns nothing */
            fn = zxb_fn_find(self->sched, s.fn.ptr, s.fn.len);
        }
        /* what the broker holds for the (function, pool, priority) kinds
           it has queued counts too, beyond its first: else distinct names
           would cost the broker ~1 KB a task against a few bytes of quota */
        uint64_t kinds = c->open_fifos + zxb_queue_opens(c, fn, s.pool, s.priority);
        uint64_t charged = kinds > 1 ? (kinds - 1) * ZXB_FIFO_CHARGE : 0;
        if (c->queued_bytes + charged + size > self->cfg.max_queued_bytes) {
            char msg[512];
            snprintf(msg, sizeof msg,
                     "client %s has %" PRIu64 " bytes of arguments queued under %" PRIu64
                     " functions or priorities (%u bytes each beyond the first); this task "
                     "would pass the broker's limit (--max-queued-bytes %" PRIu64 ")",
                     c->name, c->queued_bytes, c->open_fifos, (unsigned)ZXB_FIFO_CHARGE,
                     self->cfg.max_queued_bytes);
            s_reject(self, c, &s, &payload, "QuotaError", msg);
            continue;
        }
        if (!fn) {
            fn = zxb_fn_intern(self->sched, s.fn.ptr, s.fn.len);
        }
        last = fn;
        t = zxb_task_alloc(self->sched);
        assert(t && fn);
        t->client = c;
        t->seq = s.seq;
        t->fn = fn;
        fn->refs++;
        if (inl) {
            zxb_task_payload_set_mem(t, mem, size);
        } else {
            zxb_task_payload_set(t, &payload);
        }
        t->timeout_ms = s.timeout_ms;
        t->flags = s.flags;
        t->priority = s.priority;
        t->retries = (int8_t)s.retries;
        t->pool_req = s.pool;
        t->adopted = 1;
        t->arrival = zxb_arrival_now(self->sched, self->now);
        zxb_task_index(self->sched, t);
        c->ntasks++;
        self->submitted++;
        if (c->job) {
            c->job->submitted++;
        }
        zxb_durable_task(self, t); /* its record before anything can end it */
        zxb_task_enqueue(self, t, false, true);
    }
}

static void s_on_cancel(zxb_broker_t *self, zxb_client_t *c)
{
    zxp_in_t *in = &self->in;
    for (size_t i = 0; i < in->count; i++) {
        const msgpack_object *it = zxp_item(in, i);
        uint64_t seq = zxp_u(it, 0);
        bool terminate = zxp_b(it, 1);
        zxb_task_t *t = zxb_task_find(self->sched, c, seq);
        if (!t || !t->adopted || t->state == ZXB_T_HELD || t->state == ZXB_T_JHELD) {
            zxb_cancelled_send(self, c, seq, ZXP_CANCEL_REFUSED);
            continue;
        }
        if (t->state == ZXB_T_QUEUED) {
            zxb_queued_remove(self, t);
            zxb_cancelled_send(self, c, seq, ZXP_CANCEL_DONE);
            self->cancelled++;
            ZXB_DEBUG("task %" PRIu64 " of client %s cancelled while queued", seq, c->name);
            zxb_task_release(self, t);
            continue;
        }
        /* on a worker: it alone knows whether the task started */
        if (!t->cancelled || terminate) {
            t->cancelled = 1;
            zxp_put_wcancel(zxb_worker_batch(self, t->worker, ZXP_WCANCEL), c->session, seq,
                            terminate);
        }
    }
}

void zxb_client_msg(zxb_broker_t *self, zframe_t *rid)
{
    zxb_client_t *c = NULL;
    if (zframe_size(rid) == ZXP_ID_LEN) {
        c = zxb_client_find(self, zframe_data(rid));
    }
    uint8_t cmd = self->in.cmd;
    if (cmd == ZXP_HELLO) {
        if (zframe_size(rid) != ZXP_ID_LEN) {
            zxp_send_error(zxb_csock(self), rid, ZXP_ERR_IDENTITY,
                           "the routing id must be the 16-byte session");
            zxp_drop(&self->drops, "clients", rid, ZXP_E_SHAPE, "routing id is not 16 bytes");
            return;
        }
        s_on_hello(self, c, rid);
        return;
    }
    if (!c || !c->alive) {
        if (cmd != ZXP_BYE) {
            zxp_send_empty(zxb_csock(self), rid, ZXP_RESET);
        }
        return;
    }
    c->last_recv = self->now;
    switch (cmd) {
    case ZXP_SUBMIT: s_on_submit(self, c); break;
    case ZXP_CANCEL: s_on_cancel(self, c); break;
    case ZXP_STATUS: zxb_status_reply(self, c); break;
    case ZXP_FETCH: zxb_job_on_fetch(self, c); break;
    case ZXP_RACK: zxb_job_on_rack(self); break;
    case ZXP_JOBS: zxb_job_on_jobs(self, c); break;
    case ZXP_JCANCEL: zxb_job_on_jcancel(self, c); break;
    case ZXP_BYE: s_client_gone(self, c, "said BYE"); break;
    case ZXP_HEARTBEAT: {
        /* a trailing field: the result payload bytes it has read */
        const msgpack_object *h = zxp_item(&self->in, 0);
        if (h->via.array.size >= 1 && h->via.array.ptr[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
            c->acks = true;
            c->rx_bytes = h->via.array.ptr[0].via.u64;
        }
        break;
    }
    default: break;
    }
}

static void s_client_gone(zxb_broker_t *self, zxb_client_t *c, const char *why)
{
    c->alive = false;
    if (c->job) {
        /* a detached job: its tasks stay, their results are held */
        zxb_job_left(self, c, why);
        zxb_client_check(self, c);
        return;
    }
    uint64_t before = c->queued;
    zxb_client_fifos_drain(self->sched, c, s_drop_queued, self);
    /* free the prefetch its tasks hold on workers: those not started are
       withdrawn; results of the rest are discarded when they come */
    size_t withdrawn = 0, onworkers = 0;
    if (c->ntasks > 0) {
        for (zxb_worker_t *w = zhashx_first(self->workers); w; w = zhashx_next(self->workers)) {
            for (zxb_task_t *t = zxb_task_of(w->tasks.head); t; t = zxb_task_of(t->link.next)) {
                if (t->client != c) {
                    continue;
                }
                onworkers++;
                if (t->state == ZXB_T_DISPATCHED && !t->bcancel && !t->cancelled) {
                    t->bcancel = 1;
                    zxp_put_wcancel(zxb_worker_batch(self, w, ZXP_WCANCEL), c->session, t->seq,
                                    false);
                    withdrawn++;
                }
            }
        }
    }
    char hex[33];
    zxb_hex(c->session, hex);
    ZXB_INFO("client %s (session %s) %s: %" PRIu64 " queued tasks dropped, %zu on workers (%zu "
             "withdrawn)",
             c->name, hex, why, before, onworkers, withdrawn);
    zxb_client_check(self, c);
}

/* ---- liveness --------------------------------------------------------------------- */

void zxb_clients_tick(zxb_broker_t *self)
{
    int64_t now = self->now;
    uint32_t hb = self->cfg.heartbeat_ms;
    zlist_t *gone = NULL;
    for (zxb_client_t *c = zhashx_first(self->clients); c; c = zhashx_next(self->clients)) {
        if (c->alive) {
            if (c->overflow || now - c->last_recv > (int64_t)self->cfg.liveness * c->hb_ms) {
                if (!gone) {
                    gone = zlist_new();
                }
                zlist_append(gone, c);
            } else if (now - c->last_send >= hb) {
                zxp_send_empty(zxb_csock(self), c->rid, ZXP_HEARTBEAT);
                c->last_send = now;
            }
        } else if (!c->ever && !c->expired && !c->job &&
                   now - c->created > self->cfg.client_timeout_ms) {
            char hex[33];
            zxb_hex(c->session, hex);
            ZXB_INFO("session %s: no client came back for its %" PRIu64
                     " recovered tasks; their results will be dropped",
                     hex, c->ntasks);
            c->expired = true;
            /* those recovered from the journal and still queued go now */
            zxb_client_fifos_drain(self->sched, c, s_drop_queued, self);
        }
    }
    for (zxb_client_t *c = gone ? zlist_first(gone) : NULL; c; c = zlist_next(gone)) {
        char why[160];
        if (c->overflow) {
            snprintf(why, sizeof why,
                     "does not read its results (%" PRIu64 " bytes waiting, over "
                     "--max-results-waiting %" PRIu64 "): session dropped",
                     c->tx_bytes - c->rx_bytes, self->cfg.max_waiting_bytes);
            self->slow_clients++;
        } else {
            snprintf(why, sizeof why, "lost (silent for %" PRId64 " ms)", now - c->last_recv);
        }
        s_client_gone(self, c, why);
    }
    zlist_destroy(&gone);
}
