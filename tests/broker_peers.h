/*  broker_peers.h - fake clients and workers for the broker tests: raw
    DEALER sockets speaking ZXP through the zxp_* encoders, so the tests
    drive the real zexec-broker binary message by message.

    Header-only (static inline) so each test program gets its own copy.
    Every fake peer that is "live" heartbeats while any of them waits, so a
    test can keep one peer alive while it waits on another, and silence one
    on purpose (fp_silence) to make the broker lose it.
*/
#ifndef BROKER_PEERS_H
#define BROKER_PEERS_H

#include "zx_proto.h"
#include "zx_testutil.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    zsock_t *sock;
    uint8_t id[ZXP_ID_LEN];
    zxp_in_t in;
    int role;
    uint32_t hb_ms;
    int64_t last_hb;
    bool live;
} fp_t;

#define FP_MAX_LIVE 16
static fp_t *fp_live[FP_MAX_LIVE];

static inline void fp_random_id(uint8_t *id)
{
    zuuid_t *u = zuuid_new();
    memcpy(id, zuuid_data(u), ZXP_ID_LEN);
    zuuid_destroy(&u);
    id[0] |= 0x80; /* ZeroMQ reserves a leading zero byte */
}

/* role: ZXP_ROLE_CLIENT or ZXP_ROLE_WORKER. */
static inline void fp_init(fp_t *p, const char *endpoint, int role)
{
    memset(p, 0, sizeof *p);
    fp_random_id(p->id);
    p->role = role;
    p->hb_ms = 100;
    p->sock = zsock_new(ZMQ_DEALER);
    cr_assert(p->sock);
    zxp_sock_setup(p->sock);
    zmq_setsockopt(zsock_resolve(p->sock), ZMQ_ROUTING_ID, p->id, ZXP_ID_LEN);
    cr_assert(zsock_connect(p->sock, "%s", endpoint) == 0);
    zxp_in_init(&p->in);
    p->live = true;
    for (int i = 0; i < FP_MAX_LIVE; i++) {
        if (!fp_live[i]) {
            fp_live[i] = p;
            break;
        }
    }
}

/* Stops heartbeating (and answering): the broker will lose this peer. */
static inline void fp_silence(fp_t *p)
{
    p->live = false;
}

static inline void fp_fini(fp_t *p)
{
    for (int i = 0; i < FP_MAX_LIVE; i++) {
        if (fp_live[i] == p) {
            fp_live[i] = NULL;
        }
    }
    zxp_in_fini(&p->in);
    zsock_destroy(&p->sock);
}

static inline void fp_heartbeats(void)
{
    int64_t now = zclock_mono();
    for (int i = 0; i < FP_MAX_LIVE; i++) {
        fp_t *p = fp_live[i];
        if (p && p->live && now - p->last_hb >= p->hb_ms) {
            zxp_send_empty(p->sock, NULL, ZXP_HEARTBEAT);
            p->last_hb = now;
        }
    }
}

/* Next message other than HEARTBEAT within timeout_ms, decoded into p->in.
   Returns its command, or -1 on timeout. Asserts that it decodes. */
static inline int fp_recv(fp_t *p, int timeout_ms)
{
    int64_t end = zclock_mono() + timeout_ms;
    for (;;) {
        fp_heartbeats();
        int64_t left = end - zclock_mono();
        if (left < 0) {
            return -1;
        }
        zmq_pollitem_t it = {zsock_resolve(p->sock), 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(&it, 1, left < 20 ? (long)left : 20);
        if (rc <= 0) {
            continue;
        }
        zmsg_t *msg = zmsg_recv(p->sock);
        if (!msg) {
            continue;
        }
        int drc = zxp_decode(&p->in, &msg, p->role);
        cr_assert_eq(drc, 0, "peer got a message that does not decode: %s (%s)", zxp_strerror(drc),
                     p->in.reason ? p->in.reason : "");
        if (p->in.cmd != ZXP_HEARTBEAT) {
            return p->in.cmd;
        }
    }
}

/* Waits for cmd, skipping others; true if it came within timeout_ms. */
static inline bool fp_expect(fp_t *p, int cmd, int timeout_ms)
{
    int64_t end = zclock_mono() + timeout_ms;
    for (;;) {
        int left = (int)(end - zclock_mono());
        if (left <= 0) {
            return false;
        }
        int got = fp_recv(p, left);
        if (got == cmd) {
            return true;
        }
        if (got < 0) {
            return false;
        }
    }
}

/* Lets time pass while live peers heartbeat (for "nothing arrives" checks):
   returns the first command that p receives, or -1. */
static inline int fp_quiet(fp_t *p, int ms)
{
    return fp_recv(p, ms);
}

/* ---- client side ---------------------------------------------------------------- */

static inline void fc_hello(fp_t *c, const char *name)
{
    cr_assert(zxp_send_hello(c->sock, c->id, name, c->hb_ms) == 0);
    cr_assert(fp_expect(c, ZXP_WELCOME, 5000), "no WELCOME for client %s", name);
}

static inline void fc_submit_ex(fp_t *c, uint64_t seq, const char *fn, uint8_t pool, int8_t prio,
                                int32_t retries, const void *data, size_t len)
{
    /* a long run of submits (20,000 under ASan takes seconds) must not
       leave the fake workers silent long enough for the broker to drop them */
    fp_heartbeats();
    zxp_out_t out;
    zxp_out_init(&out);
    zxp_out_begin(&out, ZXP_SUBMIT);
    zxp_submit_t s = {.seq = seq,
                      .fn = {fn, (uint32_t)strlen(fn)},
                      .pool = pool,
                      .priority = prio,
                      .retries = retries};
    zxp_put_submit(&out, &s);
    zxp_out_payload_mem(&out, data, len);
    cr_assert(zxp_out_send(&out, c->sock, NULL) == 0);
    zxp_out_fini(&out);
}

static inline void fc_submit(fp_t *c, uint64_t seq, const char *fn)
{
    uint8_t args[] = {0x91, 0x01}; /* [1] */
    fc_submit_ex(c, seq, fn, ZXP_POOL_ANY, 0, 0, args, sizeof args);
}

static inline void fc_cancel(fp_t *c, uint64_t seq, bool terminate)
{
    zxp_out_t out;
    zxp_out_init(&out);
    zxp_out_begin(&out, ZXP_CANCEL);
    zxp_put_cancel(&out, seq, terminate);
    cr_assert(zxp_out_send(&out, c->sock, NULL) == 0);
    zxp_out_fini(&out);
}

/* ---- worker side ---------------------------------------------------------------- */

typedef struct {
    const char *name;
    uint8_t pools; /* ZXP_POOLS_* */
} fw_fn_t;

/* READY listing running tasks, each with the token and attempt of the TASK
   that gave it (the proof a broker asks of a task that is not, or no
   longer, this worker's); tokens NULL: none. */
static inline void fw_ready_tok(fp_t *w, const char *node, uint32_t threads, uint32_t procs,
                                uint32_t prefetch, const fw_fn_t *fns, size_t nfns,
                                const uint8_t (*running)[ZXP_ID_LEN], const uint64_t *seqs,
                                const uint8_t (*tokens)[ZXP_TOKEN_LEN], const uint32_t *attempts,
                                size_t nrunning)
{
    zxp_out_t out;
    zxp_out_init(&out);
    zxp_out_begin(&out, ZXP_READY);
    zxp_ready_t r = {.worker_id = w->id,
                     .node = node,
                     .pid = (uint32_t)getpid(),
                     .threads = threads,
                     .procs = procs,
                     .prefetch = prefetch,
                     .heartbeat_ms = w->hb_ms,
                     .nfns = nfns};
    zxp_put_ready(&out, &r);
    for (size_t i = 0; i < nfns; i++) {
        zxp_put_ready_fn(&out, fns[i].name, fns[i].pools);
    }
    zxp_put_ready_running(&out, nrunning);
    for (size_t i = 0; i < nrunning; i++) {
        zxp_put_ready_task(&out, running[i], seqs[i], ZXP_POOL_THREAD, tokens ? tokens[i] : NULL,
                           attempts ? attempts[i] : 0);
    }
    cr_assert(zxp_out_send(&out, w->sock, NULL) == 0);
    zxp_out_fini(&out);
    cr_assert(fp_expect(w, ZXP_WELCOME, 5000), "no WELCOME for worker %s", node);
}

static inline void fw_ready_ex(fp_t *w, const char *node, uint32_t threads, uint32_t procs,
                               uint32_t prefetch, const fw_fn_t *fns, size_t nfns,
                               const uint8_t (*running)[ZXP_ID_LEN], const uint64_t *seqs,
                               size_t nrunning)
{
    fw_ready_tok(w, node, threads, procs, prefetch, fns, nfns, running, seqs, NULL, NULL, nrunning);
}

static inline void fw_ready(fp_t *w, const char *node, uint32_t threads, uint32_t prefetch,
                            const char *fn)
{
    fw_fn_t f = {fn, ZXP_POOLS_THREAD | ZXP_POOLS_PROCESS};
    fw_ready_ex(w, node, threads, 0, prefetch, &f, 1, NULL, NULL, 0);
}

static inline void fw_result_ex(fp_t *w, const uint8_t *session, uint64_t seq, uint32_t status,
                                uint8_t pool, bool slot_freed, const void *data, size_t len)
{
    zxp_out_t out;
    zxp_out_init(&out);
    zxp_out_begin(&out, ZXP_WRESULT);
    zxp_wresult_t r = {.session = session,
                       .seq = seq,
                       .status = status,
                       .pid = 4242,
                       .pool = pool,
                       .slot_freed = slot_freed};
    zxp_put_wresult(&out, &r);
    zxp_out_payload_mem(&out, data, len);
    cr_assert(zxp_out_send(&out, w->sock, NULL) == 0);
    zxp_out_fini(&out);
}

/* Answers every item of the TASK in w->in with an OK result echoing its
   payload. Returns the number of items. */
static inline size_t fw_answer_all(fp_t *w)
{
    zxp_out_t out;
    zxp_out_init(&out);
    zxp_out_begin(&out, ZXP_WRESULT);
    size_t n = w->in.count;
    for (size_t i = 0; i < n; i++) {
        zxp_task_t t;
        zxp_get_task(&w->in, i, &t);
        zxp_wresult_t r = {.session = t.session,
                           .seq = t.seq,
                           .status = ZXP_ST_OK,
                           .pid = 4242,
                           .pool = t.pool,
                           .slot_freed = true};
        zxp_put_wresult(&out, &r);
        zframe_t *f = zxp_payload_take(&w->in);
        zxp_out_payload(&out, &f);
    }
    cr_assert(zxp_out_send(&out, w->sock, NULL) == 0);
    zxp_out_fini(&out);
    return n;
}

/* The value of key in msgpack map m, or NULL (also when m is not a map). */
static inline const msgpack_object *fp_map_get(const msgpack_object *m, const char *key)
{
    if (!m || m->type != MSGPACK_OBJECT_MAP) {
        return NULL;
    }
    size_t n = strlen(key);
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *k = &m->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
            memcmp(k->via.str.ptr, key, n) == 0) {
            return &m->via.map.ptr[i].val;
        }
    }
    return NULL;
}

/* Asks the broker for STATUS on client c's socket and returns the status
   map (valid until c receives again). Being on c's socket, it reflects every
   message c sent before: a positive barrier for c's submits. */
static inline const msgpack_object *fc_status(fp_t *c)
{
    zxp_send_empty(c->sock, NULL, ZXP_STATUS);
    cr_assert(fp_expect(c, ZXP_STATUS_REPLY, 5000), "no STATUS_REPLY");
    const msgpack_object *st = zxp_o(zxp_item(&c->in, 0), 0);
    cr_assert(st && st->type == MSGPACK_OBJECT_MAP);
    return st;
}

/* An unsigned number at totals.<key> of a status map; asserts it is there. */
static inline uint64_t fp_status_total(const msgpack_object *st, const char *key)
{
    const msgpack_object *v = fp_map_get(fp_map_get(st, "totals"), key);
    cr_assert(v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER, "STATUS has no totals.%s", key);
    return v->via.u64;
}

/* ---- barriers ------------------------------------------------------------------- */

/* A positive barrier for "nothing more reaches w" checks, instead of a quiet
   period: client c cancels seq, a task that worker w holds. The broker
   relays that as a WCANCEL to w after whatever it sent w while handling the
   messages it took before the CANCEL (every earlier message of c, and any
   message of another peer whose effect c has already seen), so the next
   command w receives is WCANCEL unless the broker wrongly sent something
   first. w refuses the cancel and c receives the refusal, so the task stays
   where it was. Returns the command w received first. */
static inline int fp_barrier(fp_t *c, fp_t *w, uint64_t seq)
{
    fc_cancel(c, seq, false);
    int got = fp_recv(w, 5000);
    if (got != ZXP_WCANCEL) {
        return got;
    }
    zxp_out_t out;
    zxp_out_init(&out);
    zxp_out_begin(&out, ZXP_WCANCELLED);
    zxp_put_wcancelled(&out, c->id, seq, ZXP_CANCEL_REFUSED);
    cr_assert(zxp_out_send(&out, w->sock, NULL) == 0);
    zxp_out_fini(&out);
    cr_assert(fp_expect(c, ZXP_CANCELLED, 5000), "no CANCELLED for the barrier's cancel");
    cr_assert_eq(zxp_u(zxp_item(&c->in, 0), 1), ZXP_CANCEL_REFUSED);
    return got;
}

/* Waits until client c receives the RESULT of seq (skipping others): the
   broker has handled the message that produced it. *out (may be NULL) gets
   the result, valid until c receives again. */
static inline bool fc_expect_result(fp_t *c, uint64_t seq, int timeout_ms, zxp_result_t *out)
{
    int64_t end = zclock_mono() + timeout_ms;
    while (fp_expect(c, ZXP_RESULT, (int)(end - zclock_mono()))) {
        for (size_t i = 0; i < c->in.count; i++) {
            zxp_result_t r;
            zxp_get_result(&c->in, i, &r);
            if (r.seq == seq) {
                if (out) {
                    *out = r;
                }
                return true;
            }
        }
    }
    return false;
}

/* The seq of the only item of the TASK in w->in. */
static inline uint64_t fw_task_seq(fp_t *w)
{
    cr_assert_eq(w->in.count, 1, "one task expected, got %zu", w->in.count);
    zxp_task_t t;
    zxp_get_task(&w->in, 0, &t);
    return t.seq;
}

/* ---- broker ---------------------------------------------------------------------- */

static inline void fb_start(zxt_cluster_t *c, const char *const extra[])
{
    cr_assert(zxt_broker_start(c, extra) == 0, "cannot start zexec-broker");
}

/* Error payload [type, message, traceback]: copies type and message out. */
static inline void fp_error_of(zframe_t *f, char *type, size_t tlen, char *msg, size_t mlen)
{
    msgpack_zone zone;
    msgpack_zone_init(&zone, 1024);
    msgpack_object o;
    cr_assert(zxp_mp_unpack(zframe_data(f), zframe_size(f), &zone, &o) == 0);
    cr_assert(o.type == MSGPACK_OBJECT_ARRAY && o.via.array.size >= 2);
    msgpack_object_str ts = o.via.array.ptr[0].via.str, ms = o.via.array.ptr[1].via.str;
    snprintf(type, tlen, "%.*s", (int)ts.size, ts.ptr);
    snprintf(msg, mlen, "%.*s", (int)ms.size, ms.ptr);
    msgpack_zone_destroy(&zone);
}

#endif
