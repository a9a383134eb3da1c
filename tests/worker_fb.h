/*  worker_fb.h - a fake broker for the worker tests: a ROUTER that starts
    the real zexec-worker against itself, sends TASK / WCANCEL with the ZXP
    encoders, decodes everything the worker says with the strict decoder
    and records it per task seq, so tests wait on conditions, not sleeps. */
#ifndef ZX_WORKER_FB_H
#define ZX_WORKER_FB_H

#include <criterion/criterion.h>

#include "zx_proto.h"
#include "zx_testutil.h"

#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define FB_MAXSEQ 1024

typedef struct {
    bool have;
    uint32_t status, pid;
    uint8_t pool;
    bool slot_freed;
    char *data;
    size_t len;
    int64_t at;
    int count; /* results seen for this seq: must stay 1 */
} fb_res_t;

typedef struct {
    zsock_t *router;
    char ep[64];
    zframe_t *rid;
    pid_t pid;
    uint8_t session[ZXP_ID_LEN];
    zxp_in_t in;
    bool heartbeats;
    int64_t next_hb;
    /* what the worker said */
    int readies, drains, byes, heartbeats_in, credits_thread, credits_process;
    int64_t last_ready_at;
    uint32_t ready_pid, ready_threads, ready_procs, ready_prefetch, ready_hb;
    char ready_node[256];
    uint8_t ready_wid[ZXP_ID_LEN];
    char ready_fns[4096]; /* "name:pools," ... */
    uint64_t ready_running[64];
    size_t ready_nrunning;
    bool started[FB_MAXSEQ];
    uint32_t started_pid[FB_MAXSEQ];
    int64_t started_at[FB_MAXSEQ];
    fb_res_t res[FB_MAXSEQ];
    int cancelled[FB_MAXSEQ]; /* outcome + 1; 0: none */
    int64_t cancelled_at[FB_MAXSEQ];
} fb_t;

static inline void fb_record(fb_t *fb)
{
    zxp_in_t *in = &fb->in;
    switch (in->cmd) {
    case ZXP_READY: {
        const msgpack_object *h = zxp_item(in, 0);
        fb->readies++;
        fb->last_ready_at = zclock_mono();
        zxp_str_t wid = zxp_s(h, 1), node = zxp_s(h, 2);
        memcpy(fb->ready_wid, wid.ptr, ZXP_ID_LEN);
        snprintf(fb->ready_node, sizeof fb->ready_node, "%.*s", (int)node.len, node.ptr);
        fb->ready_pid = (uint32_t)zxp_u(h, 3);
        fb->ready_threads = (uint32_t)zxp_u(h, 4);
        fb->ready_procs = (uint32_t)zxp_u(h, 5);
        fb->ready_prefetch = (uint32_t)zxp_u(h, 6);
        fb->ready_hb = (uint32_t)zxp_u(h, 7);
        const msgpack_object *fns = zxp_o(h, 8), *run = zxp_o(h, 9);
        fb->ready_fns[0] = 0;
        for (uint32_t i = 0; i < fns->via.array.size; i++) {
            zxp_str_t n = zxp_s(&fns->via.array.ptr[i], 0);
            size_t at = strlen(fb->ready_fns);
            snprintf(fb->ready_fns + at, sizeof fb->ready_fns - at, "%.*s:%u,", (int)n.len, n.ptr,
                     (unsigned)zxp_u(&fns->via.array.ptr[i], 1));
        }
        fb->ready_nrunning = 0;
        for (uint32_t i = 0; i < run->via.array.size && i < 64; i++) {
            fb->ready_running[fb->ready_nrunning++] = zxp_u(&run->via.array.ptr[i], 1);
        }
        break;
    }
    case ZXP_WSTARTED:
        for (size_t i = 0; i < in->count; i++) {
            const msgpack_object *it = zxp_item(in, i);
            uint64_t seq = zxp_u(it, 1);
            if (seq < FB_MAXSEQ) {
                fb->started[seq] = true;
                fb->started_pid[seq] = (uint32_t)zxp_u(it, 2);
                fb->started_at[seq] = zclock_mono();
            }
        }
        break;
    case ZXP_WRESULT:
        for (size_t i = 0; i < in->count; i++) {
            zxp_wresult_t r;
            zxp_get_wresult(in, i, &r);
            zframe_t *p = zxp_payload_take(in);
            if (r.seq < FB_MAXSEQ) {
                fb_res_t *x = &fb->res[r.seq];
                free(x->data);
                x->have = true;
                x->status = r.status;
                x->pid = r.pid;
                x->pool = r.pool;
                x->slot_freed = r.slot_freed;
                x->len = zframe_size(p);
                x->data = malloc(x->len + 1);
                memcpy(x->data, zframe_data(p), x->len);
                x->at = zclock_mono();
                x->count++;
            }
            zframe_destroy(&p);
        }
        break;
    case ZXP_WCANCELLED:
        for (size_t i = 0; i < in->count; i++) {
            const msgpack_object *it = zxp_item(in, i);
            uint64_t seq = zxp_u(it, 1);
            if (seq < FB_MAXSEQ) {
                fb->cancelled[seq] = (int)zxp_u(it, 2) + 1;
                fb->cancelled_at[seq] = zclock_mono();
            }
        }
        break;
    case ZXP_CREDIT: {
        const msgpack_object *h = zxp_item(in, 0);
        if (zxp_u(h, 0) == ZXP_POOL_THREAD) {
            fb->credits_thread += (int)zxp_u(h, 1);
        } else {
            fb->credits_process += (int)zxp_u(h, 1);
        }
        break;
    }
    case ZXP_DRAIN: fb->drains++; break;
    case ZXP_BYE: fb->byes++; break;
    case ZXP_HEARTBEAT: fb->heartbeats_in++; break;
    default: break;
    }
}

/* Receives for at most timeout_ms; records one message if any came. */
static inline void fb_pump(fb_t *fb, int timeout_ms)
{
    int64_t now = zclock_mono();
    if (fb->heartbeats && fb->rid && now >= fb->next_hb) {
        zxp_send_empty(fb->router, fb->rid, ZXP_HEARTBEAT);
        fb->next_hb = now + 200;
    }
    zpoller_t *p = zpoller_new(fb->router, NULL);
    void *ready = zpoller_wait(p, timeout_ms);
    zpoller_destroy(&p);
    if (!ready) {
        return;
    }
    zmsg_t *msg = zmsg_recv(fb->router);
    if (!msg) {
        return;
    }
    zframe_t *rid = zmsg_pop(msg);
    zframe_destroy(&fb->rid);
    fb->rid = rid;
    int rc = zxp_decode(&fb->in, &msg, ZXP_ROLE_BROKER_W);
    cr_assert_eq(rc, 0, "worker sent a malformed message: %s (%s)", zxp_strerror(rc),
                 fb->in.reason ? fb->in.reason : "");
    fb_record(fb);
}

/* Pumps until cond(fb, arg) or timeout seconds; returns cond. */
static inline bool fb_wait(fb_t *fb, bool (*cond)(fb_t *, uint64_t), uint64_t arg, double timeout)
{
    int64_t end = zclock_mono() + (int64_t)(timeout * 1000);
    while (!cond(fb, arg)) {
        int64_t left = end - zclock_mono();
        if (left <= 0) {
            return false;
        }
        fb_pump(fb, left < 50 ? (int)left : 50);
    }
    return true;
}

static inline bool fb_c_readies(fb_t *fb, uint64_t n)
{
    return fb->readies >= (int)n;
}
static inline bool fb_c_result(fb_t *fb, uint64_t seq)
{
    return fb->res[seq].have;
}
static inline bool fb_c_started(fb_t *fb, uint64_t seq)
{
    return fb->started[seq];
}
static inline bool fb_c_cancelled(fb_t *fb, uint64_t seq)
{
    return fb->cancelled[seq] != 0;
}
static inline bool fb_c_results_upto(fb_t *fb, uint64_t last)
{
    for (uint64_t s = 1; s <= last; s++) {
        if (!fb->res[s].have) {
            return false;
        }
    }
    return true;
}
static inline bool fb_c_credits(fb_t *fb, uint64_t n)
{
    return fb->credits_thread >= (int)n;
}
static inline bool fb_c_byes(fb_t *fb, uint64_t n)
{
    return fb->byes >= (int)n;
}
static inline bool fb_c_drains(fb_t *fb, uint64_t n)
{
    return fb->drains >= (int)n;
}

/* Binds the fake broker and starts zexec-worker with the demo plugin, the
   given extra flags (NULL-terminated) and waits for its READY. */
static inline void fb_start(fb_t *fb, const char *node, ...)
{
    memset(fb, 0, sizeof *fb);
    zxp_in_init(&fb->in);
    fb->heartbeats = true;
    for (int i = 0; i < ZXP_ID_LEN; i++) {
        fb->session[i] = (uint8_t)(0xA0 + i);
    }
    fb->router = zsock_new(ZMQ_ROUTER);
    cr_assert_not_null(fb->router);
    zxp_sock_setup(fb->router);
    zsock_set_router_handover(fb->router, 1);
    int port = -1;
    for (int tries = 0; tries < 20; tries++) {
        port = zxt_free_port();
        snprintf(fb->ep, sizeof fb->ep, "tcp://127.0.0.1:%d", port);
        if (zsock_bind(fb->router, "%s", fb->ep) >= 0) {
            break;
        }
        port = -1;
    }
    cr_assert_gt(port, 0, "no free port");
    char *bin = zxt_bin("zexec-worker");
    char *plugin = zxt_plugin("zexec_demo_plugin");
    const char *argv[64];
    int n = 0;
    argv[n++] = bin;
    argv[n++] = "--broker";
    argv[n++] = fb->ep;
    argv[n++] = "--node";
    argv[n++] = node;
    argv[n++] = "--plugin";
    argv[n++] = plugin;
    va_list ap;
    va_start(ap, node);
    const char *a;
    while ((a = va_arg(ap, const char *)) && n < 62) {
        argv[n++] = a;
    }
    va_end(ap);
    argv[n] = NULL;
    fb->pid = zxt_spawn((char *const *)argv);
    free(bin);
    free(plugin);
    cr_assert_gt(fb->pid, 0, "cannot spawn zexec-worker");
    cr_assert(fb_wait(fb, fb_c_readies, 1, 10.0), "no READY from the worker");
}

static inline void fb_stop(fb_t *fb)
{
    if (fb->pid > 0) {
        zxt_stop(fb->pid);
        fb->pid = 0;
    }
    zsock_destroy(&fb->router);
    zframe_destroy(&fb->rid);
    zxp_in_fini(&fb->in);
    for (int i = 0; i < FB_MAXSEQ; i++) {
        free(fb->res[i].data);
        fb->res[i].data = NULL;
    }
}

/* ---- sending ------------------------------------------------------------ */

typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} fb_args_t;

static inline msgpack_packer *fb_args_begin(fb_args_t *a, size_t n)
{
    msgpack_sbuffer_init(&a->sb);
    msgpack_packer_init(&a->pk, &a->sb, msgpack_sbuffer_write);
    msgpack_pack_array(&a->pk, n);
    return &a->pk;
}

static inline void fb_pack_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

static inline void fb_send_raw(fb_t *fb, uint64_t seq, const char *fn, int pool,
                               uint32_t timeout_ms, uint32_t flags, const void *args, size_t len)
{
    zxp_out_t o;
    zxp_out_init(&o);
    zxp_out_begin(&o, ZXP_TASK);
    zxp_task_t t = {fb->session, seq, {fn, (uint32_t)strlen(fn)}, (uint8_t)pool, timeout_ms, 1,
                    flags,       NULL};
    zxp_put_task(&o, &t);
    zxp_out_payload_mem(&o, args, len);
    cr_assert_eq(zxp_out_send(&o, fb->router, fb->rid), 0);
    zxp_out_fini(&o);
}

/* Sends one task; a (packed args) is consumed. */
static inline void fb_send(fb_t *fb, uint64_t seq, const char *fn, int pool, uint32_t timeout_ms,
                           fb_args_t *a)
{
    fb_send_raw(fb, seq, fn, pool, timeout_ms, 0, a->sb.data, a->sb.size);
    msgpack_sbuffer_destroy(&a->sb);
}

/* Sends fn with no arguments. */
static inline void fb_send0(fb_t *fb, uint64_t seq, const char *fn, int pool, uint32_t timeout_ms)
{
    fb_args_t a;
    fb_args_begin(&a, 0);
    fb_send(fb, seq, fn, pool, timeout_ms, &a);
}

/* Sends fn [n] or [n, x]. */
static inline void fb_send_num(fb_t *fb, uint64_t seq, const char *fn, int pool,
                               uint32_t timeout_ms, double n, int argc, double x)
{
    fb_args_t a;
    msgpack_packer *pk = fb_args_begin(&a, (size_t)argc);
    if (argc >= 1) {
        if (n == (double)(int64_t)n) {
            msgpack_pack_int64(pk, (int64_t)n);
        } else {
            msgpack_pack_double(pk, n);
        }
    }
    if (argc >= 2) {
        msgpack_pack_double(pk, x);
    }
    fb_send(fb, seq, fn, pool, timeout_ms, &a);
}

static inline void fb_cancel(fb_t *fb, uint64_t seq, bool terminate)
{
    zxp_out_t o;
    zxp_out_init(&o);
    zxp_out_begin(&o, ZXP_WCANCEL);
    zxp_put_wcancel(&o, fb->session, seq, terminate);
    cr_assert_eq(zxp_out_send(&o, fb->router, fb->rid), 0);
    zxp_out_fini(&o);
}

/* ---- reading results ------------------------------------------------------ */

/* Unpacks result seq into zone. */
static inline msgpack_object fb_value(fb_t *fb, uint64_t seq, msgpack_zone *zone)
{
    msgpack_object obj;
    cr_assert(fb->res[seq].have, "no result for seq %llu", (unsigned long long)seq);
    cr_assert_eq(zxp_mp_unpack(fb->res[seq].data, fb->res[seq].len, zone, &obj), 0,
                 "result %llu is not msgpack", (unsigned long long)seq);
    return obj;
}

static inline int64_t fb_int(fb_t *fb, uint64_t seq)
{
    msgpack_zone z;
    msgpack_zone_init(&z, 256);
    msgpack_object o = fb_value(fb, seq, &z);
    int64_t v = o.type == MSGPACK_OBJECT_POSITIVE_INTEGER   ? (int64_t)o.via.u64
                : o.type == MSGPACK_OBJECT_NEGATIVE_INTEGER ? o.via.i64
                                                            : INT64_MIN;
    msgpack_zone_destroy(&z);
    cr_assert_neq(v, INT64_MIN, "result %llu is not an integer", (unsigned long long)seq);
    return v;
}

static inline double fb_double(fb_t *fb, uint64_t seq)
{
    msgpack_zone z;
    msgpack_zone_init(&z, 256);
    msgpack_object o = fb_value(fb, seq, &z);
    cr_assert(o.type == MSGPACK_OBJECT_FLOAT64 || o.type == MSGPACK_OBJECT_FLOAT32);
    double v = o.via.f64;
    msgpack_zone_destroy(&z);
    return v;
}

/* Copies the error [type, message, traceback] of result seq. */
static inline void fb_error(fb_t *fb, uint64_t seq, char *type, size_t tlen, char *msg, size_t mlen)
{
    msgpack_zone z;
    msgpack_zone_init(&z, 256);
    msgpack_object o = fb_value(fb, seq, &z);
    cr_assert(o.type == MSGPACK_OBJECT_ARRAY && o.via.array.size == 3,
              "result %llu is not an error array", (unsigned long long)seq);
    const msgpack_object *t = &o.via.array.ptr[0], *m = &o.via.array.ptr[1];
    cr_assert(t->type == MSGPACK_OBJECT_STR && m->type == MSGPACK_OBJECT_STR);
    snprintf(type, tlen, "%.*s", (int)t->via.str.size, t->via.str.ptr);
    snprintf(msg, mlen, "%.*s", (int)m->via.str.size, m->via.str.ptr);
    msgpack_zone_destroy(&z);
}

#endif
