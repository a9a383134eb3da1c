/*  status.c - the broker's answer to STATUS: one STATUS-REPLY map of the
    broker, its workers, its queues per function and client, and its
    totals, documented in docs/operations.md (zexec-cli status prints it).

    Packed with msgpack into the broker's one control batch and sent at
    once; it reads the records and changes nothing but the completion-rate
    ring, which it brings up to now. Free slots are the pool size less the
    tasks assigned to that pool (zxb_place_free_slots), never more than the
    pool: the window, prefetch included, is a dispatch matter, not a free
    slot.
*/
#include "zxb_broker.h"

#include "zexec.h"

#include <stdio.h>
#include <string.h>

/* STATUS-REPLY: one map, documented in docs/operations.md. */
typedef struct {
    msgpack_packer *pk;
    zxb_client_t *client;
    size_t n;
    bool count_only;
} s_depths_t;

static void s_pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void s_pack_kv_str(msgpack_packer *pk, const char *k, const char *v)
{
    s_pack_str(pk, k);
    s_pack_str(pk, v);
}

static void s_pack_kv_u(msgpack_packer *pk, const char *k, uint64_t v)
{
    s_pack_str(pk, k);
    msgpack_pack_uint64(pk, v);
}

static void s_depth_cb(zxb_fn_t *fn, uint64_t depth, void *arg)
{
    s_depths_t *d = arg;
    d->n++;
    if (d->count_only) {
        return;
    }
    char hex[33];
    zxb_hex(d->client->session, hex);
    msgpack_pack_map(d->pk, 4);
    s_pack_kv_str(d->pk, "function", fn->name);
    s_pack_kv_str(d->pk, "client", d->client->name);
    s_pack_kv_str(d->pk, "session", hex);
    s_pack_kv_u(d->pk, "depth", depth);
}

void zxb_status_reply(zxb_broker_t *self, zxb_client_t *c)
{
    zxp_out_t *out = &self->ctl;
    zxp_out_begin(out, ZXP_STATUS_REPLY);
    msgpack_packer *pk = zxp_out_pk(out);
    msgpack_pack_array(pk, 1);
    msgpack_pack_map(pk, 4);

    s_pack_str(pk, "broker");
    msgpack_pack_map(pk, self->standby ? 9 : 8);
    s_pack_kv_str(pk, "id", self->id_hex);
    char version[32];
    snprintf(version, sizeof version, "%d.%d.%d", ZEXEC_VERSION_MAJOR, ZEXEC_VERSION_MINOR,
             ZEXEC_VERSION_PATCH);
    s_pack_kv_str(pk, "version", version);
    s_pack_str(pk, "uptime_s");
    msgpack_pack_double(pk, (double)(self->now - self->started) / 1000.0);
    s_pack_kv_str(pk, "clients_endpoint", self->cfg.clients_ep);
    s_pack_kv_str(pk, "workers_endpoint", self->cfg.workers_ep);
    s_pack_str(pk, "insecure");
    if (self->cfg.insecure) {
        msgpack_pack_true(pk);
    } else {
        msgpack_pack_false(pk);
    }
    s_pack_kv_u(pk, "heartbeat_ms", self->cfg.heartbeat_ms);
    s_pack_kv_u(pk, "liveness", self->cfg.liveness);
    if (self->standby) {
        /* a pair (pair.c): only the active one answers STATUS */
        char pair[320];
        snprintf(pair, sizeof pair, "%s (%s, peer %s)", zxb_pair_state(self),
                 self->cfg.pair_primary ? "primary" : "backup", self->cfg.peer);
        s_pack_kv_str(pk, "pair", pair);
    }

    s_pack_str(pk, "workers");
    msgpack_pack_array(pk, zhashx_size(self->workers));
    for (zxb_worker_t *w = zhashx_first(self->workers); w; w = zhashx_next(self->workers)) {
        char hex[33];
        zxb_hex(w->id, hex);
        msgpack_pack_map(pk, 16);
        s_pack_kv_str(pk, "node", w->node);
        s_pack_kv_str(pk, "id", hex);
        s_pack_kv_u(pk, "pid", w->pid);
        s_pack_kv_u(pk, "threads", w->threads);
        s_pack_kv_u(pk, "procs", w->procs);
        s_pack_kv_u(pk, "prefetch", w->prefetch);
        s_pack_kv_u(pk, "free_thread", zxb_place_free_slots(&w->place[ZXP_POOL_THREAD]));
        s_pack_kv_u(pk, "free_process", zxb_place_free_slots(&w->place[ZXP_POOL_PROCESS]));
        s_pack_kv_u(pk, "running", w->running);
        s_pack_kv_u(pk, "assigned", w->ntasks);
        s_pack_kv_u(pk, "done", w->done);
        s_pack_kv_u(pk, "failed", w->failed);
        s_pack_kv_u(pk, "last_heartbeat_ms_ago", (uint64_t)(self->now - w->last_recv));
        s_pack_kv_u(pk, "heartbeat_ms", w->hb_ms);
        s_pack_str(pk, "draining");
        if (w->draining) {
            msgpack_pack_true(pk);
        } else {
            msgpack_pack_false(pk);
        }
        s_pack_str(pk, "functions");
        msgpack_pack_array(pk, w->nfns);
        for (size_t i = 0; i < w->nfns; i++) {
            s_pack_str(pk, w->fns[i].fn->name);
        }
    }

    s_pack_str(pk, "queues");
    s_depths_t d = {.pk = pk, .count_only = true};
    for (zxb_client_t *cl = zhashx_first(self->clients); cl; cl = zhashx_next(self->clients)) {
        d.client = cl;
        zxb_client_depths(cl, s_depth_cb, &d);
    }
    msgpack_pack_array(pk, d.n);
    d.count_only = false;
    for (zxb_client_t *cl = zhashx_first(self->clients); cl; cl = zhashx_next(self->clients)) {
        d.client = cl;
        zxb_client_depths(cl, s_depth_cb, &d);
    }

    s_pack_str(pk, "totals");
    msgpack_pack_map(pk, 21);
    s_pack_kv_u(pk, "submitted", self->submitted);
    s_pack_kv_u(pk, "done", self->done);
    s_pack_kv_u(pk, "failed", self->failed);
    s_pack_kv_u(pk, "cancelled", self->cancelled);
    s_pack_kv_u(pk, "rejected", self->rejected);
    s_pack_kv_u(pk, "duplicates", self->duplicates);
    s_pack_kv_u(pk, "bad_results", self->bad_results);
    s_pack_kv_u(pk, "too_large", self->too_large);
    s_pack_kv_u(pk, "slow_clients", self->slow_clients);
    s_pack_kv_u(pk, "registrations", self->registrations);
    s_pack_kv_u(pk, "stale_results", self->stale_results);
    s_pack_kv_u(pk, "forged_claims", self->forged_claims);
    s_pack_kv_u(pk, "queued", self->queued);
    s_pack_kv_u(pk, "running", self->running);
    s_pack_kv_u(pk, "clients", zhashx_size(self->clients));
    s_pack_str(pk, "rate_per_s");
    zxb_rate_roll(self);
    uint64_t sum = 0;
    for (int i = 0; i < 10; i++) {
        sum += self->rate[i];
    }
    double span = (double)(self->now - self->started) / 1000.0;
    msgpack_pack_double(pk, (double)sum / (span < 10.0 ? (span > 1.0 ? span : 1.0) : 10.0));
    s_pack_kv_u(pk, "dropped_messages", self->drops.total);
    s_pack_kv_u(pk, "jobs", zhashx_size(self->jobs));
    s_pack_kv_u(pk, "held_results", self->jobs_held);
    s_pack_kv_u(pk, "journal_uncommitted",
                self->last_lsn > self->committed ? self->last_lsn - self->committed : 0);
    s_pack_kv_str(pk, "journal",
                  !self->journal         ? "off"
                  : self->journal_failed ? self->journal_error
                                         : "ok");
    zxp_out_send(out, zxb_csock(self), c->rid);
}
