/*  tasks.c - the broker's task bookkeeping that client and worker commands
    share: the queued counters (per client, for its quotas, and the
    broker's), the RESULT and CANCELLED items a task's end sends its client,
    the completion rate STATUS reports, and freeing a task once nothing
    holds it (which may free a client that has left).

    Where a task goes (queue, worker) is dispatch.c's; what each command
    does to it is client.c's and workers.c's.
*/
#include "zxb_broker.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* Completions per second over the last 10 s: a ring of per-second counts. */
void zxb_rate_roll(zxb_broker_t *self)
{
    int64_t sec = self->now / 1000;
    if (sec != self->rate_sec) {
        for (int64_t s = self->rate_sec + 1; s <= sec && s <= self->rate_sec + 10; s++) {
            self->rate[s % 10] = 0;
        }
        self->rate_sec = sec;
    }
}

static void s_rate_count(zxb_broker_t *self)
{
    zxb_rate_roll(self);
    self->rate[self->rate_sec % 10]++;
}

/* Forgets a task that is in no queue and on no worker. */
void zxb_task_release(zxb_broker_t *self, zxb_task_t *t)
{
    if (t->state == ZXB_T_JHELD) {
        return; /* its job keeps it until a RACK (jobs.c) */
    }
    zxb_client_t *c = t->client;
    if (t->journaled) {
        zxb_durable_end(self, t);
    }
    zxb_task_unindex(self->sched, t);
    if (t->fn) {
        t->fn->refs--;
    }
    zxb_task_free(self->sched, t);
    c->ntasks--;
    zxb_client_check(self, c);
}

void zxb_queued_push(zxb_broker_t *self, zxb_task_t *t, bool front)
{
    zxb_queue_push(self->sched, t, front);
    t->client->queued++;
    t->client->queued_bytes += t->size;
    self->queued++;
}

void zxb_queued_forget(zxb_broker_t *self, zxb_task_t *t)
{
    t->client->queued--;
    t->client->queued_bytes -= t->size;
    self->queued--;
}

void zxb_queued_remove(zxb_broker_t *self, zxb_task_t *t)
{
    zxb_queue_remove(self->sched, t);
    zxb_queued_forget(self, t);
}

/* Sends a RESULT item to the task's client (when it listens). Its payload
   is *payload (consumed) or, when that is NULL, the len bytes at mem (an
   inline payload read in place: no frame made and freed per result). */
void zxb_result_send(zxb_broker_t *self, zxb_task_t *t, uint32_t status, const char *node,
                     size_t node_len, uint32_t pid, uint8_t pool, zframe_t **payload,
                     const void *mem, size_t len)
{
    zxb_client_t *c = t->client;
    if (status == ZXP_ST_OK) {
        self->done++;
    } else {
        self->failed++;
    }
    s_rate_count(self);
    /* a job's result is held (the payload moves into the task) whether or
       not its session listens now */
    bool held = c->job && t->adopted && !t->refused &&
                zxb_job_hold(self, t, status, node, node_len, pid, pool, payload, mem, len, 0);
    if (!c->alive || !t->adopted || c->overflow || t->refused) {
        if (!held) {
            zframe_destroy(payload);
        }
        return;
    }
    size_t size = held ? t->size : *payload ? zframe_size(*payload) : len;
    zframe_t *err = NULL;
    if (c->max_msg && size > c->max_msg) {
        /* its libzmq would drop the connection, and the client would re-send
           the task to run again: the task fails instead, saying why */
        char msg[256];
        snprintf(msg, sizeof msg,
                 "the result is %zu bytes, over the client's limit of %" PRIu64 " bytes", size,
                 c->max_msg);
        if (!held) {
            zframe_destroy(payload);
        }
        err = zxp_error_frame("ResultTooLargeError", msg, "");
        payload = &err;
        held = false;
        status = ZXP_ST_RAISED;
        self->too_large++;
    }
    /* what the client has not read is the broker's memory (libzmq's queue):
       bounded per client; past the bound its session is dropped at the next
       tick (it re-sends its unresolved tasks when it speaks again) */
    c->tx_bytes += held ? t->size : *payload ? zframe_size(*payload) : len;
    if (c->acks && c->tx_bytes - c->rx_bytes > self->cfg.max_waiting_bytes) {
        c->overflow = true;
    }
    zxp_out_t *out = zxb_client_batch(self, c, ZXP_RESULT);
    zxp_result_t r = {.seq = t->seq,
                      .status = status,
                      .node = {node, (uint32_t)node_len},
                      .pid = pid,
                      .pool = pool,
                      .attempts = t->attempts};
    zxp_put_result(out, &r);
    if (held) {
        zxb_job_payload_copy(t, out);
    } else if (*payload) {
        zxp_out_payload(out, payload);
    } else {
        zxp_out_payload_mem(out, mem, len);
    }
}

/* A task whose arguments are over worker w's --max-msg (READY says it):
   sending it would make w's libzmq drop the connection, and every retry on
   another such worker too. Fails it (REJECTED) and returns true. */
bool zxb_task_too_large(zxb_broker_t *self, zxb_worker_t *w, zxb_task_t *t)
{
    if (!w->max_msg || t->size <= w->max_msg) {
        return false;
    }
    char msg[512];
    snprintf(msg, sizeof msg,
             "the task's arguments are %" PRIu32 " bytes, over worker %s's limit of %" PRIu64
             " bytes (its --max-msg)",
             t->size, w->node, w->max_msg);
    self->too_large++;
    zxb_task_fail(self, t, ZXP_ST_REJECTED, "MessageTooLargeError", msg, w->node);
    return true;
}

/* Fails a task the broker holds (not on a worker) with an error of its own. */
void zxb_task_fail(zxb_broker_t *self, zxb_task_t *t, uint32_t status, const char *type,
                   const char *message, const char *node)
{
    zframe_t *err = zxp_error_frame(type, message, "");
    ZXB_DEBUG("task %" PRIu64 " of client %s failed: %s: %s", t->seq, t->client->name, type,
              message);
    zxb_result_send(self, t, status, node ? node : "", node ? strlen(node) : 0, 0,
                    t->pool ? t->pool : t->pool_req, &err, NULL, 0);
    zxb_task_release(self, t);
}

void zxb_cancelled_send(zxb_broker_t *self, zxb_client_t *c, uint64_t seq, uint32_t outcome)
{
    if (!c->alive) {
        return;
    }
    zxp_put_cancelled(zxb_client_batch(self, c, ZXP_CANCELLED), seq, outcome);
}
