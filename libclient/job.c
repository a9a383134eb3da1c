/*  job.c - zx_job_t: a client of one detached job, from any process or host.
    A detached executor (zx_options_t.detach, zx_executor_detach) leaves its
    tasks and results at the broker; a job handle attaches to them by the job
    id and fetches the results, in the order they completed, resumably.

    A handle is a small client of its own: its own DEALER and session (made
    by the executor's zx__client_connect, so CURVE and signing work alike),
    driven synchronously from the caller's thread: HELLO, then FETCH (a long
    poll: the broker answers with JRESULT batches and a FETCHED carrying the
    job's info), RACK (the results kept: the broker forgets them), JCANCEL,
    JOBS. No I/O thread: a handle waits only while its caller does. The one
    exception is zx_job_futures, whose futures must complete while the user
    sleeps in zx_as_completed or zx_wait: a fetcher thread then runs the
    same FETCH loop. job->lock makes one exchange at a time on the socket
    (the caller's or the fetcher's); futures are completed with it released.

    Resumable and at-least-once: results are acknowledged (RACK) only after
    the caller has had them (zx_job_next: at its next call; futures: once
    completed), so a consumer killed midway loses nothing; the next one gets
    the unacknowledged ones again. Within one handle a result is yielded
    once: FETCH asks for completion indexes past the last one received.

    Broker restarts and idle periods: a RESET (the broker does not know our
    session: it restarted, or timed us out while the caller slept) makes the
    handle say HELLO again and repeat its request. Silence for broker_timeout
    gives ZX_ECONN.
*/
#include "remote_int.h"
#include "zx_waiter.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_FETCH_MAX 256        /* results per FETCH */
#define S_POLL_MS 1000         /* longest FETCH wait: the session stays alive at the broker */
#define S_HELLO_EVERY_MS 500   /* HELLO again while no WELCOME came */
#define S_GRACE_MS 3000        /* a reply's allowance beyond its long poll */
#define S_ATTACH_TIMEOUT 10.0  /* seconds: attach and list wait this long by default */
#define S_SILENCE_TIMEOUT 60.0 /* seconds of silence before ZX_ECONN (the executor's default) */
#define S_RACK_BATCH 64        /* acknowledgements held back at most (zx_job_next) */

/* A result as received, before it becomes a future's. */
typedef struct {
    uint64_t seq, index;
    int status; /* ZXP_ST_*, or -1: a malformed item */
    int bad;
    uint32_t pid, attempts;
    char node[ZXP_MAX_NAME + 1];
    zframe_t *payload;
} s_item_t;

typedef struct {
    s_item_t *v;
    size_t n, cap, head;
} s_items_t;

struct zx_job {
    char *endpoint;   /* as given: one endpoint or a list (zx_endpoints.h) */
    zx__eps_t eps;    /* the list; the broker talked to is the current one */
    int64_t ep_since; /* when the current one became current */
    char *name;
    uint8_t id[ZXP_ID_LEN];
    uint8_t session[ZXP_ID_LEN];
    bool has_id;
    int64_t hb_ms;
    int64_t timeout_ms; /* silence before ZX_ECONN */
    int64_t attach_ms;  /* how long attach and list wait */
    zx__sec_t *sec;

    pthread_mutex_t lock; /* everything below: one exchange at a time */
    zsock_t *dealer;
    zsock_t *monitor;
    zpoller_t *poller;
    zxp_in_t in;
    zxp_drops_t drops;
    bool welcomed;
    int outstanding; /* requests sent whose reply has not come (stale ones are skipped) */
    int64_t last_rx;
    uint64_t after; /* the highest completion index received */
    zxp_jobinfo_t info;
    bool info_ok;
    zxp_jobinfo_t *list; /* JOBS_REPLY */
    size_t nlist;

    /* zx_job_next (the caller's thread only) */
    bool mode_next;
    bool manual_ack; /* zx_job_autoack(false) */
    s_items_t buf;
    zx_future_t *cur; /* the result last yielded: acknowledged at the next call */
    uint64_t *racks;
    size_t nracks, rack_cap;
    bool finished;

    /* zx_job_futures */
    bool mode_futures;
    zx_future_t **futs; /* seq i is futs[i - 1] (the handle's references) */
    size_t nfuts;
    pthread_t fetcher;
    bool fetcher_started;
    atomic_bool stop;
};

/* ---- items ---------------------------------------------------------------------- */

static void s_items_clear(s_items_t *b)
{
    for (size_t i = b->head; i < b->n; i++) {
        zframe_destroy(&b->v[i].payload);
    }
    b->n = b->head = 0;
}

static s_item_t *s_items_add(s_items_t *b)
{
    if (b->head > 0 && b->head == b->n) {
        b->n = b->head = 0;
    }
    if (b->n == b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 64;
        s_item_t *nv = realloc(b->v, nc * sizeof *nv);
        if (!nv) {
            return NULL;
        }
        b->v = nv;
        b->cap = nc;
    }
    s_item_t *it = &b->v[b->n++];
    memset(it, 0, sizeof *it);
    return it;
}

/* Completes f with a received item (consumes its payload). */
static void s_complete(zx_future_t *f, s_item_t *it)
{
    if (it->bad) {
        char msg[160];
        snprintf(msg, sizeof msg, "the broker sent a malformed result: %s",
                 zxp_bad_reason(it->bad));
        zx__future_set_exception(f, ZX_EPROTO, "ProtocolError", msg, "", "", 0);
    } else {
        zx__future_set_attempts(f, (int)it->attempts);
        zx__future_complete(f, it->status, it->payload ? zframe_data(it->payload) : NULL,
                            it->payload ? zframe_size(it->payload) : 0, it->node, (int)it->pid);
    }
    zframe_destroy(&it->payload);
}

/* ---- the exchange ----------------------------------------------------------------- */

enum { S_REQ_FETCH, S_REQ_JOBS, S_REQ_JCANCEL };

typedef struct {
    int kind;
    uint64_t max;
    uint32_t wait_ms;
} s_req_t;

static int s_send_req(zx_job_t *job, const s_req_t *req)
{
    int rc;
    switch (req->kind) {
    case S_REQ_FETCH: {
        zxp_fetch_t f = {
            .job = job->id, .after = job->after, .max = req->max, .wait_ms = req->wait_ms};
        rc = zxp_send_fetch(job->dealer, &f);
        break;
    }
    case S_REQ_JOBS: rc = zxp_send_empty(job->dealer, NULL, ZXP_JOBS); break;
    default: rc = zxp_send_jcancel(job->dealer, job->id); break;
    }
    if (rc == 0) {
        job->outstanding++;
    }
    return rc;
}

/* Keeps the JRESULTs of the current message that are new to this handle. */
static void s_on_jresults(zx_job_t *job, s_items_t *sink)
{
    zxp_in_t *in = &job->in;
    for (size_t i = 0; i < in->count; i++) {
        zxp_jresult_t j = {0};
        int bad = zxp_item_bad(in, i);
        if (bad) {
            j.r.seq = zxp_u(zxp_item(in, i), 0);
            j.index = job->after + 1; /* its index is unreadable: taken as the next */
        } else {
            zxp_get_jresult(in, i, &j);
        }
        zframe_t *payload = zxp_payload_take(in);
        s_item_t *it = j.index > job->after && sink ? s_items_add(sink) : NULL;
        if (!it) {
            zframe_destroy(&payload); /* one we had already, or no room */
            continue;
        }
        job->after = j.index;
        it->seq = j.r.seq;
        it->index = j.index;
        it->bad = bad;
        it->status = (int)j.r.status;
        it->pid = j.r.pid;
        it->attempts = j.r.attempts;
        size_t nl = j.r.node.len < sizeof it->node ? j.r.node.len : sizeof it->node - 1;
        if (nl) {
            memcpy(it->node, j.r.node.ptr, nl);
        }
        it->node[nl] = 0;
        it->payload = payload;
    }
}

/* The info map of a FETCHED or JCANCELLED; ZX_ENOJOB when it says error. */
static int s_on_info(zx_job_t *job)
{
    zxp_get_jobinfo(zxp_jobinfo_obj(&job->in), &job->info);
    job->info_ok = true;
    return job->info.error[0] ? ZX_ENOJOB : ZX_OK;
}

static int s_on_jobs(zx_job_t *job)
{
    size_t n = zxp_jobs_count(&job->in);
    zxp_jobinfo_t *v = n ? calloc(n, sizeof *v) : NULL;
    if (n && !v) {
        return ZX_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        zxp_get_jobinfo(zxp_jobs_info(&job->in, i), &v[i]);
    }
    free(job->list);
    job->list = v;
    job->nlist = n;
    return ZX_OK;
}

/* A pair of brokers: the current endpoint is silent or passive, so the
   DEALER leaves it for the next one (its routing id, the session, stays). */
static void s_next_broker(zx_job_t *job, const char *why)
{
    const char *from = zx__eps_current(&job->eps);
    zsock_disconnect(job->dealer, "%s", from);
    const char *to = zx__eps_next(&job->eps);
    zsys_warning("zexec job: broker %s %s; trying %s", from, why, to);
    if (zsock_connect(job->dealer, "%s", to) != 0) {
        zsys_error("zexec job: cannot connect to '%s': %s", to, zmq_strerror(zmq_errno()));
    }
    job->ep_since = zclock_mono();
    job->welcomed = false;
    job->outstanding = 0;
}

/* One request and its reply, under job->lock: says HELLO first when
   needed, again after a RESET (then repeats the request), and reads until
   the reply; JRESULTs on the way go to sink. Waits until deadline (ms,
   zclock_mono) but at least for one answer, unless the broker is silent
   for S_GRACE_MS past the long poll. ZX_OK, ZX_ETIMEOUT, ZX_ECONN (refused,
   or silent for timeout_ms), ZX_ENOJOB, ZX_ENOMEM. */
static int s_exchange(zx_job_t *job, const s_req_t *req, int64_t deadline, s_items_t *sink)
{
    int want = req->kind == S_REQ_FETCH  ? ZXP_FETCHED
               : req->kind == S_REQ_JOBS ? ZXP_JOBS_REPLY
                                         : ZXP_JCANCELLED;
    int64_t now = zclock_mono();
    int64_t reply_by = now + req->wait_ms + S_GRACE_MS;
    if (deadline < reply_by) {
        deadline = reply_by; /* one answer, however short the caller's wait */
    }
    bool sent = false;
    int64_t next_hello = 0;
    for (;;) {
        now = zclock_mono();
        if (!job->welcomed && now >= next_hello) {
            zxp_send_hello(job->dealer, job->session, job->name, (uint32_t)job->hb_ms);
            next_hello = now + S_HELLO_EVERY_MS;
        }
        if (job->welcomed && !sent) {
            if (s_send_req(job, req) != 0) {
                job->welcomed = false; /* no connection: HELLO until there is one */
                continue;
            }
            sent = true;
            reply_by = now + req->wait_ms + S_GRACE_MS;
        }
        int64_t heard = job->last_rx > job->ep_since ? job->last_rx : job->ep_since;
        if (job->eps.n > 1 && (!job->welcomed || (sent && now >= reply_by)) &&
            now - heard > 3 * job->hb_ms) {
            s_next_broker(job, "is silent"); /* a pair: try the other */
            next_hello = 0;
            sent = false;
            continue;
        }
        if (now - job->last_rx > job->timeout_ms && now >= reply_by) {
            return ZX_ECONN;
        }
        if (now >= deadline) {
            return ZX_ETIMEOUT;
        }
        int64_t until = deadline;
        if (!job->welcomed && next_hello < until) {
            until = next_hello;
        }
        void *which = zpoller_wait(job->poller, (int)(until > now ? until - now : 0));
        if (which == job->monitor && job->monitor) {
            char peer[300], why[384];
            snprintf(peer, sizeof peer, "the broker at %s", job->endpoint);
            zx__hs_t ev;
            while ((ev = zx__monitor_read(job->monitor, job->dealer, peer, why, sizeof why)) !=
                   ZX__HS_NONE) {
                if (ev == ZX__HS_REFUSED) {
                    zsys_error("zexec job: %s", why);
                    return ZX_ECONN;
                }
            }
            continue;
        }
        for (;;) {
            zmsg_t *msg = zmsg_recv(job->dealer); /* RCVTIMEO 0 */
            if (!msg) {
                break;
            }
            int rc = zx__sec_verify(job->sec, msg, ZXP_ROLE_CLIENT);
            if (rc != 0) {
                zmsg_destroy(&msg);
                zxp_drop(&job->drops, "job", NULL, rc, "signature check failed");
                continue;
            }
            rc = zxp_decode(&job->in, &msg, ZXP_ROLE_CLIENT);
            if (rc != 0) {
                zxp_drop(&job->drops, "job", NULL, rc, job->in.reason);
                continue;
            }
            job->last_rx = zclock_mono();
            uint8_t cmd = job->in.cmd;
            if (cmd == ZXP_WELCOME) {
                job->welcomed = true;
            } else if (cmd == ZXP_RESET) {
                /* the broker does not know this session: HELLO, then ask again */
                job->welcomed = false;
                job->outstanding = 0;
                next_hello = 0;
                sent = false;
            } else if (cmd == ZXP_ERROR && job->eps.n > 1 &&
                       zxp_u(zxp_item(&job->in, 0), 0) == ZXP_ERR_PASSIVE) {
                s_next_broker(job, "is passive"); /* a pair: the other is active */
                next_hello = now + job->hb_ms;
                sent = false;
                break;
            } else if (cmd == ZXP_ERROR) {
                zxp_str_t m = zxp_s(zxp_item(&job->in, 0), 1);
                zsys_error("zexec job: the broker at %s refused: %.*s", job->endpoint, (int)m.len,
                           m.ptr);
                return ZX_ECONN;
            } else if (cmd == ZXP_JRESULT) {
                s_on_jresults(job, sink);
            } else if (cmd == ZXP_FETCHED || cmd == ZXP_JOBS_REPLY || cmd == ZXP_JCANCELLED) {
                if (job->outstanding > 0) {
                    job->outstanding--;
                }
                /* replies come in order: one to an earlier, abandoned request is stale */
                if (cmd != want || !sent || job->outstanding > 0 ||
                    (cmd != ZXP_JOBS_REPLY &&
                     memcmp(zxp_job_id(&job->in), job->id, ZXP_ID_LEN) != 0)) {
                    continue;
                }
                return cmd == ZXP_JOBS_REPLY ? s_on_jobs(job) : s_on_info(job);
            }
        }
        if (zpoller_terminated(job->poller)) {
            return ZX_ECONN;
        }
    }
}

static void s_send_racks(zx_job_t *job, const uint64_t *seqs, size_t n)
{
    while (n > 0) {
        size_t k = n > ZXP_MAX_BATCH ? ZXP_MAX_BATCH : n;
        if (zxp_send_rack(job->dealer, job->id, seqs, k) != 0) {
            zsys_warning("zexec job: acknowledging results to %s failed: they will be fetched "
                         "again",
                         job->endpoint);
        }
        seqs += k;
        n -= k;
    }
}

static void s_flush_racks(zx_job_t *job)
{
    if (job->nracks && job->welcomed) {
        s_send_racks(job, job->racks, job->nracks);
        job->nracks = 0;
    }
}

static int s_rack_later(zx_job_t *job, uint64_t seq)
{
    if (job->nracks == job->rack_cap) {
        size_t nc = job->rack_cap ? job->rack_cap * 2 : S_RACK_BATCH;
        uint64_t *nv = realloc(job->racks, nc * sizeof *nv);
        if (!nv) {
            return ZX_ENOMEM;
        }
        job->racks = nv;
        job->rack_cap = nc;
    }
    job->racks[job->nracks++] = seq;
    return ZX_OK;
}

static int64_t s_deadline_ms(double timeout)
{
    if (timeout < 0 || timeout > 3.0e9) {
        return INT64_MAX / 2;
    }
    return zclock_mono() + (int64_t)(timeout * 1000.0);
}

static bool s_terminal(const zxp_jobinfo_t *info)
{
    return strcmp(info->state, "done") == 0 || strcmp(info->state, "cancelled") == 0 ||
           strcmp(info->state, "expired") == 0;
}

static void s_info_out(const zxp_jobinfo_t *in, zx_job_info_t *out)
{
    memset(out, 0, sizeof *out);
    zxp_hex(in->id, ZXP_ID_LEN, out->id);
    snprintf(out->name, sizeof out->name, "%s", in->name);
    snprintf(out->state, sizeof out->state, "%s", in->state);
    out->submitted = in->submitted;
    out->queued = in->queued;
    out->running = in->running;
    out->done = in->done;
    out->failed = in->failed;
    out->held = in->held;
    out->held_bytes = in->held_bytes;
    out->acked = in->acked;
    out->next = in->next;
    out->created = in->created;
    out->expires = in->expires;
}

/* ---- making and destroying ---------------------------------------------------------- */

static void s_fail_futures(zx_job_t *job, int code, const char *type, const char *msg)
{
    for (size_t i = 0; i < job->nfuts; i++) {
        if (code == ZX_ECANCELLED) {
            zx__future_set_cancelled(job->futs[i], msg);
        } else {
            zx__future_set_exception(job->futs[i], code, type, msg, "", "", 0);
        }
    }
}

void zx_job_destroy(zx_job_t **job_p)
{
    if (!job_p || !*job_p) {
        return;
    }
    zx_job_t *job = *job_p;
    *job_p = NULL;
    if (job->fetcher_started) {
        atomic_store(&job->stop, true);
        pthread_join(job->fetcher, NULL);
    }
    s_fail_futures(job, ZX_ESHUTDOWN, "ExecutorShutdown", "the job handle was destroyed");
    for (size_t i = 0; i < job->nfuts; i++) {
        zx_future_unref(&job->futs[i]);
    }
    free(job->futs);
    if (job->cur) {
        if (!job->manual_ack) {
            s_rack_later(job, zx__future_seq(job->cur)); /* the caller has had it */
        }
        zx_future_unref(&job->cur);
    }
    if (job->dealer) {
        s_flush_racks(job);
        if (job->welcomed) {
            zxp_send_empty(job->dealer, NULL, ZXP_BYE);
        }
        zsock_set_linger(job->dealer, 1000); /* the RACK and BYE must leave */
    }
    zpoller_destroy(&job->poller);
    zx__monitor_destroy(&job->monitor, job->dealer);
    zsock_destroy(&job->dealer);
    zx__sec_destroy(&job->sec);
    s_items_clear(&job->buf);
    free(job->buf.v);
    free(job->racks);
    free(job->list);
    zxp_in_fini(&job->in);
    zxp_drops_fini(&job->drops);
    pthread_mutex_destroy(&job->lock);
    free(job->endpoint);
    zx__eps_clear(&job->eps);
    free(job->name);
    free(job);
}

static bool s_parse_id(const char *hex, uint8_t *id)
{
    if (!hex || strlen(hex) != ZX_JOB_ID_LEN) {
        return false;
    }
    for (size_t i = 0; i < ZXP_ID_LEN; i++) {
        unsigned v = 0;
        for (int k = 0; k < 2; k++) {
            char c = hex[2 * i + (size_t)k];
            int d = c >= '0' && c <= '9'   ? c - '0'
                    : c >= 'a' && c <= 'f' ? c - 'a' + 10
                    : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                           : -1;
            if (d < 0) {
                return false;
            }
            v = v * 16 + (unsigned)d;
        }
        id[i] = (uint8_t)v;
    }
    return true;
}

/* A connected handle (no HELLO yet: the first exchange says it). NULL with
 *err set. */
static zx_job_t *s_new(const char *endpoint, const zx_options_t *opts, int *err)
{
    zx_options_t o = opts ? *opts : (zx_options_t){0};
    *err = ZX_EINVAL;
    if (!endpoint || !*endpoint) {
        return NULL;
    }
    *err = ZX_ENOMEM;
    zx_job_t *job = calloc(1, sizeof *job);
    if (!job) {
        return NULL;
    }
    pthread_mutex_init(&job->lock, NULL);
    zxp_in_init(&job->in);
    zxp_drops_init(&job->drops);
    atomic_init(&job->stop, false);
    job->endpoint = strdup(endpoint);
    job->name = strdup(o.name && *o.name ? o.name : "zexec job");
    if (!job->endpoint || !job->name) {
        goto fail;
    }
    if (strlen(job->name) > ZXP_MAX_NAME) {
        job->name[ZXP_MAX_NAME] = 0;
    }
    job->hb_ms = o.heartbeat > 0 ? (int64_t)(o.heartbeat * 1000.0 + 0.5) : 1000;
    double t = o.broker_timeout > 0 ? o.broker_timeout : S_SILENCE_TIMEOUT;
    job->timeout_ms = (int64_t)(t * 1000.0);
    t = o.broker_timeout > 0 ? o.broker_timeout : S_ATTACH_TIMEOUT;
    job->attach_ms = (int64_t)(t * 1000.0);
    zx__random_session(job->session);
    char eperr[512];
    if (zx__eps_parse(&job->eps, endpoint, eperr, sizeof eperr) != 0) {
        zsys_error("zexec job: %s", eperr);
        *err = ZX_EINVAL;
        goto fail;
    }
    job->ep_since = zclock_mono();
    *err = zx__client_connect(zx__eps_current(&job->eps), &o, job->session, &job->sec, &job->dealer,
                              &job->monitor);
    if (*err != ZX_OK) {
        goto fail;
    }
    *err = ZX_ENOMEM;
    job->poller = zpoller_new(job->dealer, job->monitor, NULL);
    if (!job->poller) {
        goto fail;
    }
    job->last_rx = zclock_mono();
    return job;
fail:
    zx_job_destroy(&job);
    return NULL;
}

zx_job_t *zx_job_attach(const char *endpoint, const char *job_id, const zx_options_t *opts)
{
    uint8_t id[ZXP_ID_LEN];
    if (!s_parse_id(job_id, id)) {
        zx__set_last_error(ZX_EINVAL);
        return NULL;
    }
    int err;
    zx_job_t *job = s_new(endpoint, opts, &err);
    if (!job) {
        zx__set_last_error(err);
        return NULL;
    }
    memcpy(job->id, id, ZXP_ID_LEN);
    job->has_id = true;
    s_req_t req = {.kind = S_REQ_FETCH, .max = 0, .wait_ms = 0};
    pthread_mutex_lock(&job->lock);
    job->last_rx = zclock_mono();
    err = s_exchange(job, &req, zclock_mono() + job->attach_ms, NULL);
    pthread_mutex_unlock(&job->lock);
    if (err != ZX_OK) {
        zx_job_destroy(&job);
        zx__set_last_error(err == ZX_ETIMEOUT ? ZX_ECONN : err);
        return NULL;
    }
    return job;
}

/* ---- the caller's requests -------------------------------------------------------- */

int zx_job_info(zx_job_t *job, double timeout, zx_job_info_t *info)
{
    if (!job || !info) {
        return ZX_EINVAL;
    }
    s_req_t req = {.kind = S_REQ_FETCH, .max = 0, .wait_ms = 0};
    pthread_mutex_lock(&job->lock);
    int rc = s_exchange(job, &req, s_deadline_ms(timeout), NULL);
    if (rc == ZX_OK || rc == ZX_ENOJOB) {
        s_info_out(&job->info, info);
    }
    pthread_mutex_unlock(&job->lock);
    return rc;
}

int zx_job_cancel(zx_job_t *job, double timeout)
{
    if (!job) {
        return ZX_EINVAL;
    }
    s_req_t req = {.kind = S_REQ_JCANCEL};
    pthread_mutex_lock(&job->lock);
    int rc = s_exchange(job, &req, s_deadline_ms(timeout), NULL);
    pthread_mutex_unlock(&job->lock);
    return rc;
}

int zx_job_next(zx_job_t *job, double timeout, zx_job_result_t *r)
{
    if (!job || !r || job->mode_futures) {
        return ZX_EINVAL;
    }
    job->mode_next = true;
    memset(r, 0, sizeof *r);
    if (job->cur) {
        int rc = job->manual_ack ? ZX_OK : s_rack_later(job, zx__future_seq(job->cur));
        zx_future_unref(&job->cur);
        if (rc != ZX_OK) {
            return rc;
        }
    }
    int64_t deadline = s_deadline_ms(timeout);
    int rc = ZX_OK;
    pthread_mutex_lock(&job->lock);
    for (;;) {
        if (job->buf.head < job->buf.n) {
            if (job->nracks >= S_RACK_BATCH) {
                s_flush_racks(job);
            }
            s_item_t *it = &job->buf.v[job->buf.head];
            zx_future_t *f = zx__future_new(NULL, "", it->seq);
            if (!f) {
                rc = ZX_ENOMEM;
                break;
            }
            job->buf.head++;
            s_complete(f, it);
            const void *v = NULL;
            size_t len = 0;
            int st = zx_future_result(f, 0, &v, &len);
            r->seq = it->seq;
            r->index = it->index;
            r->status = st;
            r->value = st == ZX_OK ? v : NULL;
            r->value_len = st == ZX_OK ? len : 0;
            r->error = st == ZX_OK ? NULL : zx_future_exception(f, 0);
            r->node = zx_future_node(f);
            r->pid = zx_future_pid(f);
            r->attempts = zx_future_attempts(f);
            if (!r->error && st != ZX_OK) {
                r->error = zx_future_exception(f, 0);
            }
            job->cur = f;
            rc = ZX_OK;
            break;
        }
        if (job->finished) {
            s_flush_racks(job);
            rc = ZX_EDONE;
            break;
        }
        int64_t now = zclock_mono();
        s_flush_racks(job);
        int64_t left = deadline - now;
        uint32_t wait = left <= 0 ? 0 : left > S_POLL_MS ? S_POLL_MS : (uint32_t)left;
        s_req_t req = {.kind = S_REQ_FETCH, .max = S_FETCH_MAX, .wait_ms = wait};
        s_items_clear(&job->buf);
        rc = s_exchange(job, &req, deadline, &job->buf);
        if (rc == ZX_ENOJOB) {
            /* attached once: the broker forgot it, every result acknowledged */
            job->finished = true;
            continue;
        }
        if (rc == ZX_OK && job->buf.n == 0 && s_terminal(&job->info)) {
            job->finished = true;
            continue;
        }
        if (rc != ZX_OK && rc != ZX_ETIMEOUT) {
            break;
        }
        if (job->buf.n == 0 && zclock_mono() >= deadline) {
            rc = ZX_ETIMEOUT;
            break;
        }
    }
    pthread_mutex_unlock(&job->lock);
    return rc;
}

int zx_job_autoack(zx_job_t *job, bool on)
{
    if (!job) {
        return ZX_EINVAL;
    }
    job->manual_ack = !on;
    return ZX_OK;
}

int zx_job_ack(zx_job_t *job, uint64_t seq)
{
    if (!job || seq == 0 || job->mode_futures) {
        return ZX_EINVAL;
    }
    int rc = s_rack_later(job, seq);
    if (rc == ZX_OK && job->nracks >= S_RACK_BATCH) {
        pthread_mutex_lock(&job->lock);
        s_flush_racks(job);
        pthread_mutex_unlock(&job->lock);
    }
    return rc;
}

/* ---- futures ---------------------------------------------------------------------- */

static zx_future_t *s_future_of(zx_job_t *job, uint64_t seq)
{
    return seq >= 1 && seq <= job->nfuts ? job->futs[seq - 1] : NULL;
}

/* The fetcher thread: FETCH, complete, RACK, until the job is finished or
   the handle is destroyed. */
static void *s_fetcher(void *arg)
{
    zx_job_t *job = arg;
    s_items_t got = {0};
    uint64_t *racks = NULL;
    size_t rack_cap = 0;
    while (!atomic_load(&job->stop)) {
        s_req_t req = {.kind = S_REQ_FETCH, .max = S_FETCH_MAX, .wait_ms = S_POLL_MS};
        pthread_mutex_lock(&job->lock);
        int rc = s_exchange(job, &req, zclock_mono(), &got);
        bool terminal = rc == ZX_ENOJOB || (rc == ZX_OK && s_terminal(&job->info));
        pthread_mutex_unlock(&job->lock);
        if (rc == ZX_ECONN || rc == ZX_ENOMEM) {
            char msg[400];
            snprintf(msg, sizeof msg,
                     "the broker at %s stopped answering while fetching the "
                     "job's results",
                     job->endpoint);
            s_items_clear(&got);
            s_fail_futures(job, ZX_ECONN, "BrokerUnreachableError", msg);
            break;
        }
        if (got.n > rack_cap) {
            uint64_t *nv = realloc(racks, got.n * sizeof *nv);
            if (nv) {
                racks = nv;
                rack_cap = got.n;
            }
        }
        size_t nr = 0;
        for (size_t i = 0; i < got.n; i++) {
            zx_future_t *f = s_future_of(job, got.v[i].seq);
            if (!f) {
                zframe_destroy(&got.v[i].payload); /* submitted after our call: not ours */
                continue;
            }
            s_complete(f, &got.v[i]); /* done-callbacks run here, no lock held */
            if (nr < rack_cap) {
                racks[nr++] = got.v[i].seq;
            }
        }
        bool none = got.n == 0;
        got.n = got.head = 0;
        if (nr) {
            pthread_mutex_lock(&job->lock);
            s_send_racks(job, racks, nr);
            pthread_mutex_unlock(&job->lock);
        }
        if (terminal && none) {
            /* no more results can come: what is left was acknowledged by an
               earlier consumer, or cancelled before it ran */
            s_fail_futures(job, ZX_ECANCELLED, "",
                           "no result: the task was cancelled, or its result was fetched and "
                           "acknowledged elsewhere");
            break;
        }
    }
    free(got.v);
    free(racks);
    return NULL;
}

int zx_job_futures(zx_job_t *job, double timeout, zx_future_t ***fs, size_t *n)
{
    if (!job || !fs || !n || job->mode_next || job->mode_futures) {
        return ZX_EINVAL;
    }
    *fs = NULL;
    *n = 0;
    s_req_t req = {.kind = S_REQ_FETCH, .max = 0, .wait_ms = 0};
    pthread_mutex_lock(&job->lock);
    int rc = s_exchange(job, &req, s_deadline_ms(timeout), NULL);
    uint64_t count = job->info.submitted;
    pthread_mutex_unlock(&job->lock);
    if (rc != ZX_OK) {
        return rc;
    }
    if (count > SIZE_MAX / sizeof(zx_future_t *) / 2) {
        return ZX_ENOMEM;
    }
    zx_future_t **mine = calloc(count ? count : 1, sizeof *mine);
    zx_future_t **theirs = calloc(count ? count : 1, sizeof *theirs);
    if (!mine || !theirs) {
        free(mine);
        free(theirs);
        return ZX_ENOMEM;
    }
    for (size_t i = 0; i < count; i++) {
        mine[i] = zx__future_new(NULL, "", i + 1);
        if (!mine[i]) {
            for (size_t k = 0; k < i; k++) {
                zx_future_unref(&mine[k]);
            }
            free(mine);
            free(theirs);
            return ZX_ENOMEM;
        }
        theirs[i] = zx_future_ref(mine[i]);
    }
    job->futs = mine;
    job->nfuts = count;
    job->mode_futures = true;
    if (pthread_create(&job->fetcher, NULL, s_fetcher, job) != 0) {
        s_fail_futures(job, ZX_ENOMEM, "MemoryError", "cannot start the fetcher thread");
    } else {
        job->fetcher_started = true;
    }
    *fs = theirs;
    *n = count;
    return ZX_OK;
}

/* ---- listing ------------------------------------------------------------------------ */

int zx_jobs_list(const char *endpoint, const zx_options_t *opts, double timeout,
                 zx_job_info_t **infos, size_t *n)
{
    if (!infos || !n) {
        return ZX_EINVAL;
    }
    *infos = NULL;
    *n = 0;
    int rc;
    zx_job_t *job = s_new(endpoint, opts, &rc);
    if (!job) {
        return rc;
    }
    if (timeout < 0) {
        timeout = (double)job->attach_ms / 1000.0;
    }
    s_req_t req = {.kind = S_REQ_JOBS};
    pthread_mutex_lock(&job->lock);
    rc = s_exchange(job, &req, s_deadline_ms(timeout), NULL);
    pthread_mutex_unlock(&job->lock);
    if (rc == ZX_ETIMEOUT) {
        rc = ZX_ECONN;
    }
    if (rc == ZX_OK && job->nlist) {
        *infos = calloc(job->nlist, sizeof **infos);
        if (!*infos) {
            rc = ZX_ENOMEM;
        } else {
            for (size_t i = 0; i < job->nlist; i++) {
                s_info_out(&job->list[i], &(*infos)[i]);
            }
            *n = job->nlist;
        }
    }
    zx_job_destroy(&job);
    return rc;
}
