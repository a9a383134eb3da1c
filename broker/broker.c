/*  broker.c - the zexec-broker event loop: two ROUTER sockets (clients,
    workers), the broker record's life, the turns of the loop, the per-peer
    batches and the timers. What each command does is in client.c and
    workers.c, the path of a task to a worker in dispatch.c, the placement
    policy in placement.c (zxb_broker.h lists the files).

    One thread. Each turn of the loop drains what is readable on each socket
    (at most 1024 messages, without blocking), appending outgoing items to
    per-peer batches (TASK, WCANCEL to workers; STARTED, RESULT, CANCELLED to
    clients), then flushes every peer it touched: a lone task goes out at
    once, a burst goes out in a few large messages. Timers (heartbeats,
    liveness, adaptive prefetch, the no-worker grace, held results) run at a
    short tick and never scan tasks; they scan peers, which are few.
*/
#include "zxb_broker.h"
#include "zx_clock.h"
#include "zx_parent.h"
#include "zxb_sec.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int zxb_log_level = 1;

#define S_DRAIN_MAX 1024

/* ---- peer tables and batches ---------------------------------------------------- */

static size_t s_id_hash(const void *key)
{
    uint64_t a, b;
    memcpy(&a, key, 8);
    memcpy(&b, (const uint8_t *)key + 8, 8);
    uint64_t h = (a ^ (b * 0x9E3779B97F4A7C15ull)) * 0xC2B2AE3D27D4EB4Full;
    return (size_t)(h ^ (h >> 29));
}

static int s_id_cmp(const void *a, const void *b)
{
    return memcmp(a, b, ZXP_ID_LEN);
}

static zhashx_t *s_id_table(void)
{
    zhashx_t *h = zhashx_new();
    zhashx_set_key_hasher(h, s_id_hash);
    zhashx_set_key_comparator(h, s_id_cmp);
    zhashx_set_key_duplicator(h, NULL);
    zhashx_set_key_destructor(h, NULL);
    return h;
}

static zxp_out_t *s_out_get(zxb_broker_t *self, uint8_t cmd)
{
    zxp_out_t *out;
    if (self->noutpool > 0) {
        out = self->outpool[--self->noutpool];
    } else {
        out = malloc(sizeof *out);
        assert(out);
        zxp_out_init(out);
    }
    zxp_out_begin(out, cmd);
    return out;
}

void zxb_out_put(zxb_broker_t *self, zxp_out_t **out_p)
{
    zxp_out_t *out = *out_p;
    if (!out) {
        return;
    }
    *out_p = NULL;
    /* a huge batch leaves a huge buffer: do not keep it for idle peers */
    if (self->noutpool >= ZXB_OUTPOOL_MAX || out->buf.alloc > (1u << 20)) {
        zxp_out_fini(out);
        free(out);
        return;
    }
    zxp_out_begin(out, ZXP_HEARTBEAT); /* drops anything unsent */
    self->outpool[self->noutpool++] = out;
}

/* Sends what a peer's batch holds. The emptied batch stays the peer's until
   the next tick (s_outs_release): a lone task's round trip would otherwise
   take two batches from the pool and give them back, each begun twice. */
static void s_out_flush(zxp_out_t *out, zsock_t *sock, zframe_t *rid)
{
    if (out && out->count > 0) {
        zxp_out_send(out, sock, rid);
    }
}

/* An empty batch goes back to the pool: peers that were not sent anything
   since the last tick keep none. */
static void s_out_release(zxb_broker_t *self, zxp_out_t **out_p)
{
    if (*out_p && (*out_p)->count == 0) {
        zxb_out_put(self, out_p);
    }
}

static void s_outs_release(zxb_broker_t *self)
{
    for (zxb_worker_t *w = zhashx_first(self->workers); w; w = zhashx_next(self->workers)) {
        s_out_release(self, &w->out_task);
        s_out_release(self, &w->out_cancel);
    }
    for (zxb_client_t *c = zhashx_first(self->clients); c; c = zhashx_next(self->clients)) {
        s_out_release(self, &c->out_accepted);
        s_out_release(self, &c->out_started);
        s_out_release(self, &c->out_result);
        s_out_release(self, &c->out_cancelled);
    }
}

zxp_out_t *zxb_batch(zxb_broker_t *self, zxp_out_t **slot, uint8_t cmd, zsock_t *sock,
                     zframe_t *rid)
{
    if (*slot && zxp_out_full(*slot)) {
        zxp_out_send(*slot, sock, rid); /* begins the next batch of the same command */
    }
    if (!*slot) {
        *slot = s_out_get(self, cmd);
    }
    return *slot;
}

/* ---- the loop -------------------------------------------------------------------- */

static void s_flush(zxb_broker_t *self)
{
    zxb_jobs_flush(self);
    /* this turn's journal records go to the writer (group commit) */
    zxb_durable_turn(self);
    while (self->dirty_workers) {
        zxb_worker_t *w = self->dirty_workers;
        self->dirty_workers = w->dirty_next;
        w->dirty = false;
        s_out_flush(w->out_task, zxb_wsock(self), w->rid);
        s_out_flush(w->out_cancel, zxb_wsock(self), w->rid);
        w->last_send = self->now;
    }
    while (self->dirty_clients) {
        zxb_client_t *c = self->dirty_clients;
        self->dirty_clients = c->dirty_next;
        c->dirty = false;
        s_out_flush(c->out_accepted, zxb_csock(self), c->rid);
        s_out_flush(c->out_started, zxb_csock(self), c->rid);
        s_out_flush(c->out_result, zxb_csock(self), c->rid);
        s_out_flush(c->out_cancelled, zxb_csock(self), c->rid);
        c->last_send = self->now;
    }
    zxb_client_t *c;
    while ((c = zlist_pop(self->doomed))) {
        if (c->doomed && !c->alive && c->ntasks == 0) {
            zhashx_delete(self->clients, c->session);
            zxb_client_destroy(self, &c);
        } else {
            c->doomed = false;
        }
    }
}

/* The rest of a message whose routing id was read, decoded into self->in
   by zxp_recv as a message without one (a DEALER's). It returns
   ZXP_E_AGAIN only when it read nothing: after an EINTR it is asked again
   (as it does itself past a routing id); anything else cannot happen to a
   message ZeroMQ delivers whole, and is taken for a message cut short. */
static int s_recv_in(zxb_broker_t *self, zsock_t *sock, int role)
{
    int rc;
    while ((rc = zxp_recv(&self->in, sock, NULL, role)) == ZXP_E_AGAIN && errno == EINTR) {
    }
    if (rc == ZXP_E_AGAIN) {
        self->in.reason = "fewer than 2 frames";
        rc = ZXP_E_SHORT;
    }
    return rc;
}

/* ZMQ_EVENTS of a socket (zsock_events without czmq's checks). It makes
   libzmq process the socket's commands: after it says "nothing to read",
   the socket's ZMQ_FD signals the next message. */
static int s_events(void *handle)
{
    int events = 0;
    size_t size = sizeof events;
    zmq_getsockopt(handle, ZMQ_EVENTS, &events, &size);
    return events;
}

/* Reads up to S_DRAIN_MAX messages; true if it stopped at that bound (more
   may wait), false once none waits. The routing id of each is
   read into the one frame kept for it (self->rid: a frame made and freed
   per message was a calloc and a free), the rest straight from the socket
   into self->in (zxp_recv: no zmsg, no frame), unless the message must be
   seen whole first: signed messages are verified as a zmsg, and a pair's
   passive broker reads frame 0 of one to answer it (zxb_pair_admit). */
static bool s_drain(zxb_broker_t *self, bool workers)
{
    zsock_t *sock = workers ? self->workers_sock : self->clients_sock;
    void *handle = zsock_resolve(sock);
    int role = workers ? ZXP_ROLE_BROKER_W : ZXP_ROLE_BROKER_C;
    bool whole = self->standby || zxb_sec_signing();
    zframe_t *rid = self->rid;
    for (int i = 0; i < S_DRAIN_MAX; i++) {
        /* after the first message, ZMQ_EVENTS says whether another waits:
           most drains read one, and a receive that finds none costs more
           (libzmq looks for a message, processes its commands, looks
           again); past a second, receives find out */
        if (i == 1 && !(s_events(handle) & ZMQ_POLLIN)) {
            self->quiet[workers ? 0 : 1] = true;
            return false;
        }
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, handle, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&part); /* nothing waits (or EINTR: asked again before sleeping) */
            self->quiet[workers ? 0 : 1] = true;
            return false;
        }
        bool more = zmq_msg_more(&part);
        zframe_reset(rid, zmq_msg_data(&part), zmq_msg_size(&part));
        zmq_msg_close(&part);
        int rc;
        const char *reason = "fewer than 2 frames";
        if (!more) {
            rc = ZXP_E_SHORT;
        } else if (whole) {
            zmsg_t *msg = zxp_recv_rest(sock, SIZE_MAX, NULL);
            if (!msg) {
                msg = zmsg_new(); /* cannot be: frame 0 follows the routing id */
            }
            if (zxb_sec_verify(sock, workers, rid, msg, &self->drops) != 0 ||
                (self->standby && !zxb_pair_admit(self, workers, rid, msg))) {
                zmsg_destroy(&msg);
                continue;
            }
            rc = zxp_decode(&self->in, &msg, role);
            reason = self->in.reason;
        } else {
            rc = s_recv_in(self, sock, role);
            reason = self->in.reason;
        }
        if (rc != 0) {
            zxp_drop(&self->drops, workers ? "workers" : "clients", rid, rc, reason);
        } else if (workers) {
            zxb_worker_msg(self, rid);
        } else {
            zxb_client_msg(self, rid);
        }
    }
    return true;
}

zxb_broker_t *zxb_broker_new(const zxb_config_t *config)
{
    zxb_broker_t *self = calloc(1, sizeof *self);
    if (!self) {
        return NULL;
    }
    self->cfg = *config;
    self->place = (zxb_place_cfg_t){.target_ms = config->prefetch_target_ms,
                                    .max = config->prefetch_max,
                                    .bytes = config->prefetch_bytes,
                                    .steal_ms = config->steal_after_ms};
    zxb_log_level = config->verbose;
    self->now_us = zx__mono_us();
    self->started = self->now = self->now_us / 1000;
    self->rate_sec = self->now / 1000;
    zuuid_t *uuid = zuuid_new();
    memcpy(self->id, zuuid_data(uuid), ZXP_ID_LEN);
    zuuid_destroy(&uuid);
    zxb_hex(self->id, self->id_hex);
    self->sched = zxb_sched_new();
    self->clients = s_id_table();
    self->workers = s_id_table();
    self->doomed = zlist_new();
    self->orphans = zlist_new();
    self->withdrawals = zlist_new();
    self->jobs = s_id_table();
    self->fetch_waiters = zlist_new();
    zxp_out_init(&self->jout);
    zxp_in_init(&self->in);
    self->rid = zframe_new_empty();
    zxp_out_init(&self->ctl);
    zxp_drops_init(&self->drops);
    if (zxb_tokens_init(self) != 0) {
        zxb_broker_destroy(&self);
        return NULL;
    }
    /* the journal is replayed before the endpoints are bound: nobody is
       served a broker that has not recovered */
    if (zxb_durable_open(self) != 0) {
        zxb_broker_destroy(&self);
        return NULL;
    }
    const char *eps[2] = {config->clients_ep, config->workers_ep};
    zsock_t **socks[2] = {&self->clients_sock, &self->workers_sock};
    for (int i = 0; i < 2; i++) {
        if (zxb_bind_check(eps[i], config->insecure) != 0) {
            zxb_broker_destroy(&self);
            return NULL;
        }
        zsock_t *s = zsock_new(ZMQ_ROUTER);
        if (!s) {
            zsys_error("cannot create a socket: %s", zmq_strerror(zmq_errno()));
            zxb_broker_destroy(&self);
            return NULL;
        }
        *socks[i] = s;
        zxp_sock_setup(s);
        if (zxb_sec_socket(s, i == 1) != 0) {
            zxb_broker_destroy(&self);
            return NULL;
        }
        zsock_set_router_handover(s, 1);
        zsock_set_router_mandatory(s, 0);
        zsock_set_rcvtimeo(s, 0);
        if (zsock_bind(s, "%s", eps[i]) < 0) {
            zsys_error("cannot bind the %s endpoint %s: %s", i == 0 ? "client" : "worker", eps[i],
                       zmq_strerror(zmq_errno()));
            zxb_broker_destroy(&self);
            return NULL;
        }
    }
    if (config->metrics_addr) {
        self->metrics = zxb_metrics_new(config->metrics_addr, config->insecure);
        if (!self->metrics) {
            zxb_broker_destroy(&self);
            return NULL;
        }
        ZXB_INFO("Prometheus metrics on http://%s/metrics", config->metrics_addr);
    }
    return self;
}

static void s_free_workers(zxb_broker_t *self)
{
    zxb_worker_t *w;
    while ((w = zhashx_first(self->workers))) {
        while (w->tasks.head) {
            zxb_task_t *t = zxb_task_of(w->tasks.head);
            zxb_task_unlink(w, t, 0);
        }
        zhashx_delete(self->workers, w->id);
        zxb_worker_free(self, &w);
    }
}

void zxb_broker_destroy(zxb_broker_t **self_p)
{
    zxb_broker_t *self = *self_p;
    if (!self) {
        return;
    }
    zxb_metrics_destroy(&self->metrics); /* first: its thread copies only its own page */
    zxb_durable_close(self);             /* what was appended is written */
    zxb_tokens_fini(self);
    self->dirty_clients = NULL;
    self->dirty_workers = NULL;
    if (self->workers) {
        s_free_workers(self);
        zhashx_destroy(&self->workers);
    }
    if (self->clients) {
        zxb_client_t *c;
        while ((c = zhashx_first(self->clients))) {
            zhashx_delete(self->clients, c->session);
            zxb_client_destroy(self, &c);
        }
        zhashx_destroy(&self->clients);
    }
    zxb_jobs_fini(self);
    zxb_sched_destroy(&self->sched); /* frees every task's payload */
    while (self->noutpool > 0) {
        zxp_out_t *out = self->outpool[--self->noutpool];
        zxp_out_fini(out);
        free(out);
    }
    zlist_destroy(&self->doomed);
    zlist_destroy(&self->orphans);
    void *claim;
    while (self->withdrawals && (claim = zlist_pop(self->withdrawals))) {
        free(claim);
    }
    zlist_destroy(&self->withdrawals);
    zxb_timer_fini(&self->nofunc);
    zxb_timer_fini(&self->heldq);
    zxp_in_fini(&self->in);
    zframe_destroy(&self->rid);
    zxp_out_fini(&self->ctl);
    zxp_drops_fini(&self->drops);
    zsock_destroy(&self->clients_sock);
    zsock_destroy(&self->workers_sock);
    free(self);
    *self_p = NULL;
}

int zxb_broker_run(zxb_broker_t *self)
{
    ZXB_INFO("broker %s: clients on %s, workers on %s (heartbeat %u ms, liveness %u)", self->id_hex,
             self->cfg.clients_ep, self->cfg.workers_ep, self->cfg.heartbeat_ms,
             self->cfg.liveness);
    int64_t tick_ms = self->cfg.heartbeat_ms / 4;
    if (tick_ms > 100) {
        tick_ms = 100;
    }
    if (tick_ms < 5) {
        tick_ms = 5;
    }
    int64_t next_tick = zclock_mono() + tick_ms;
    /* The loop polls the sockets' ZMQ_FDs itself. zmq_poll would cost two
       poll calls and four ZMQ_EVENTS checks (each a getpid and a poll
       inside libzmq) per wake-up; syscalls are most of a lone task's cost
       (docs/performance.md). ZMQ_FD only says the socket's state changed,
       and a send may consume that change, so before sleeping the loop asks
       ZMQ_EVENTS of each socket. */
    /* and the journal's eventfd (-1 without one: poll skips it); with a
       pair, the standby's peer socket and tap, and the journal it keeps
       while not active (pair.c; they change at a takeover) */
    struct pollfd fds[6] = {{zsock_fd(self->workers_sock), POLLIN, 0},
                            {zsock_fd(self->clients_sock), POLLIN, 0},
                            {zxb_durable_fd(self), POLLIN, 0},
                            {-1, POLLIN, 0},
                            {-1, POLLIN, 0},
                            {-1, POLLIN, 0}};
    void *handles[2] = {zsock_resolve(self->workers_sock), zsock_resolve(self->clients_sock)};
    bool more[2] = {true, true}; /* messages may wait: read before sleeping */
    bool jready = false;         /* the journal's eventfd said the writer moved */
    bool pmore = false;          /* the peer socket may hold more */
    int run = 0;
    while (!zsys_interrupted) {
        if (self->standby) {
            /* peer messages first: ZMQ_FD is edge-triggered, so the peer
               socket is read every turn, not only when poll says so */
            pmore = zxb_pair_handle(self);
            if (self->pair_stepdown || self->pair_fatal) {
                run = self->pair_stepdown && !self->pair_fatal ? ZXB_RUN_RESTART : 1;
                break;
            }
            int pf[3];
            zxb_pair_fds(self, pf);
            fds[2].fd = zxb_durable_fd(self);
            for (int i = 0; i < 3; i++) {
                fds[3 + i].fd = pf[i];
            }
        }
        /* (a socket left with more to read is read again without asking;
           the other is asked, so that it is not starved; one left quiet
           need not be asked: its drain ended empty, or ZMQ_EVENTS said so,
           and no send went through it since, so its ZMQ_FD will signal.
           On a lone task's path that halves the ZMQ_EVENTS checks, each a
           getpid and a poll in libzmq.) */
        if (!more[0] && !self->quiet[0]) {
            more[0] = s_events(handles[0]) & ZMQ_POLLIN;
            self->quiet[0] = true;
        }
        if (!more[1] && !self->quiet[1]) {
            more[1] = s_events(handles[1]) & ZMQ_POLLIN;
            self->quiet[1] = true;
        }
        if (!more[0] && !more[1] && !pmore) {
            int64_t wait = next_tick - zclock_mono();
            if (self->steal_at) {
                /* a withdrawal an idle slot waits for (dispatch.c) */
                int64_t steal = (self->steal_at - zx__mono_us()) / 1000 + 1;
                wait = steal < wait ? steal : wait;
            }
            int rc = poll(fds, self->standby ? 6 : 3, wait > 0 ? (int)wait : 0);
            if (rc < 0 && errno != EINTR) {
                zsys_error("poll failed: %s", strerror(errno));
                break;
            }
            more[0] = rc > 0 && fds[0].revents;
            more[1] = rc > 0 && fds[1].revents;
            jready = rc > 0 && (fds[2].revents || fds[5].revents);
        } else {
            jready = true; /* a busy turn: look, its messages pay for the read */
        }
        self->now_us = zx__mono_us();
        self->now = self->now_us / 1000; /* zclock_mono's clock, read once */
        if (self->journal && jready) {
            /* what the writer committed since (ACCEPTED, worker acks); a
               read of the committed LSN clears the eventfd */
            zxb_durable_committed(self);
        }
        if (self->standby && jready) {
            zxb_pair_journal_moved(self); /* a passive acknowledges what it committed */
        }
        /* workers first: their results free the credit new submissions need */
        if (more[0]) {
            more[0] = s_drain(self, true);
        }
        if (more[1]) {
            more[1] = s_drain(self, false);
        }
        if (self->steal_at && self->now_us >= self->steal_at) {
            zxb_steal_due(self);
        }
        s_flush(self);
        if (self->now >= next_tick) {
            next_tick = self->now + tick_ms;
            if (zx__parent_gone()) {
                zsys_warning("the program that started this local cluster is gone; stopping");
                break;
            }
            s_outs_release(self);
            zxb_pair_tick(self);
            zxb_nofunc_tick(self);
            zxb_held_tick(self);
            zxb_jobs_tick(self);
            zxb_durable_tick(self);
            zxb_workers_tick(self);
            zxb_clients_tick(self);
            if (self->metrics && self->now - self->metrics_at >= 1000) {
                self->metrics_at = self->now;
                zxb_metrics_update(self);
            }
            zxb_fn_gc(self->sched);
            s_flush(self);
        }
    }
    ZXB_INFO("broker stopping: SHUTDOWN to %zu workers and %zu clients", zhashx_size(self->workers),
             zhashx_size(self->clients));
    for (zxb_worker_t *w = zhashx_first(self->workers); w; w = zhashx_next(self->workers)) {
        zxp_send_empty(zxb_wsock(self), w->rid, ZXP_SHUTDOWN);
    }
    for (zxb_client_t *c = zhashx_first(self->clients); c; c = zhashx_next(self->clients)) {
        if (c->alive) {
            zxp_send_empty(zxb_csock(self), c->rid, ZXP_SHUTDOWN);
        }
    }
    /* give the SHUTDOWNs a moment to leave */
    zsock_set_linger(self->workers_sock, 200);
    zsock_set_linger(self->clients_sock, 200);
    return run;
}
