/*  metrics.c - the broker's Prometheus endpoint (--metrics HOST:PORT) and
    the text it serves.

    libmicrohttpd serves HTTP on its own thread; the broker's loop publishes
    the whole text once a second (zxb_metrics_update, at the end of this
    file, builds it on the broker's thread from the figures STATUS reports)
    and a scrape copies the last one under a mutex. So a slow or hostile
    HTTP client never holds up scheduling, and the HTTP thread never reads
    the broker's structures. Only GET (and HEAD) of /metrics answer.
*/
#include "zxb_broker.h"
#include "zx_auth.h"

#include <inttypes.h>

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct zxb_metrics {
    struct MHD_Daemon *daemon;
    pthread_mutex_t lock;
    char *text; /* last published, NUL-terminated */
    size_t len;
};

static enum MHD_Result s_reply(struct MHD_Connection *conn, unsigned status, const char *text,
                               size_t len, enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)text, mode);
    if (!r) {
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            status == MHD_HTTP_OK ? "text/plain; version=0.0.4; charset=utf-8"
                                                  : "text/plain; charset=utf-8");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED) {
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    }
    enum MHD_Result rc = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result s_answer(void *cls, struct MHD_Connection *conn, const char *url,
                                const char *method, const char *version, const char *upload,
                                size_t *upload_len, void **req_cls)
{
    (void)version;
    (void)upload;
    (void)req_cls;
    zxb_metrics_t *self = cls;
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
        static const char msg[] = "only GET /metrics is served\n";
        return s_reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, msg, sizeof msg - 1,
                       MHD_RESPMEM_PERSISTENT);
    }
    if (*upload_len) {
        *upload_len = 0; /* a GET with a body: ignore the body */
    }
    if (strcmp(url, "/metrics") != 0) {
        static const char msg[] = "not found: the metrics are at /metrics\n";
        return s_reply(conn, MHD_HTTP_NOT_FOUND, msg, sizeof msg - 1, MHD_RESPMEM_PERSISTENT);
    }
    pthread_mutex_lock(&self->lock);
    char *copy = malloc(self->len + 1);
    size_t len = self->len;
    if (copy) {
        memcpy(copy, self->text, len + 1);
    }
    pthread_mutex_unlock(&self->lock);
    if (!copy) {
        static const char msg[] = "out of memory\n";
        return s_reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, msg, sizeof msg - 1,
                       MHD_RESPMEM_PERSISTENT);
    }
    return s_reply(conn, MHD_HTTP_OK, copy, len, MHD_RESPMEM_MUST_FREE);
}

/* "HOST:PORT" with an IPv4 HOST ("*" or 0.0.0.0 for every interface). */
static int s_parse(const char *addr, struct sockaddr_in *sa);

bool zxb_metrics_addr_ok(const char *addr)
{
    struct sockaddr_in sa;
    return s_parse(addr, &sa) == 0;
}

static int s_parse(const char *addr, struct sockaddr_in *sa)
{
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr || colon[1] == 0) {
        return -1;
    }
    char host[64];
    size_t hl = (size_t)(colon - addr);
    if (hl >= sizeof host) {
        return -1;
    }
    memcpy(host, addr, hl);
    host[hl] = 0;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 1 || port > 65535) {
        return -1;
    }
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (strcmp(host, "*") == 0) {
        sa->sin_addr.s_addr = htonl(INADDR_ANY);
        return 0;
    }
    return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

zxb_metrics_t *zxb_metrics_new(const char *addr, bool insecure)
{
    struct sockaddr_in sa;
    if (s_parse(addr, &sa) != 0) {
        zsys_error("--metrics %s: expected HOST:PORT with an IPv4 host, e.g. 127.0.0.1:5572", addr);
        return NULL;
    }
    /* loopback decided where the ZeroMQ endpoints' is; this HTTP has no
       authentication at all, so keys or a secret do not open it: off
       loopback only with --insecure */
    char ep[96];
    char host[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &sa.sin_addr, host, sizeof host);
    snprintf(ep, sizeof ep, "tcp://%s:%u", host, (unsigned)ntohs(sa.sin_port));
    if (!zx__auth_endpoint_is_loopback(ep)) {
        if (!insecure) {
            zsys_error("refusing to serve metrics on %s: it is not loopback and the metrics "
                       "endpoint has no authentication; pass --insecure to serve it anyway",
                       addr);
            return NULL;
        }
        zsys_warning("INSECURE: metrics on %s are readable by anyone who can reach it", addr);
    }
    zxb_metrics_t *self = calloc(1, sizeof *self);
    if (!self) {
        return NULL;
    }
    pthread_mutex_init(&self->lock, NULL);
    self->text = strdup("");
    self->daemon =
        MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
                         s_answer, self, MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_CONNECTION_LIMIT,
                         (unsigned)64, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
    if (!self->daemon || !self->text) {
        zsys_error("--metrics %s: cannot serve HTTP there (address in use?)", addr);
        zxb_metrics_destroy(&self);
        return NULL;
    }
    return self;
}

void zxb_metrics_destroy(zxb_metrics_t **self_p)
{
    zxb_metrics_t *self = *self_p;
    if (!self) {
        return;
    }
    *self_p = NULL;
    if (self->daemon) {
        MHD_stop_daemon(self->daemon);
    }
    free(self->text);
    pthread_mutex_destroy(&self->lock);
    free(self);
}

void zxb_metrics_publish(zxb_metrics_t *self, char *text, size_t len)
{
    pthread_mutex_lock(&self->lock);
    free(self->text);
    self->text = text;
    self->len = len;
    pthread_mutex_unlock(&self->lock);
}

/* ---- the page (built on the broker's thread) -------------------------------------- */

/* A label value as the text format wants it: \\, \" and \n escaped. */
static void s_label(FILE *f, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"') {
            fputc('\\', f);
            fputc(*v, f);
        } else if (*v == '\n') {
            fputs("\\n", f);
        } else {
            fputc(*v, f);
        }
    }
}

static void s_metric_head(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void s_metric(FILE *f, const char *name, const char *type, const char *help, double v)
{
    s_metric_head(f, name, type, help);
    fprintf(f, "%s %.17g\n", name, v);
}

typedef struct {
    FILE *f;
    zxb_client_t *client;
} s_qmetrics_t;

static void s_queue_metric(zxb_fn_t *fn, uint64_t depth, void *arg)
{
    s_qmetrics_t *q = arg;
    fputs("zexec_queue_depth{function=\"", q->f);
    s_label(q->f, fn->name);
    fputs("\",client=\"", q->f);
    s_label(q->f, q->client->name);
    fprintf(q->f, "\"} %" PRIu64 "\n", depth);
}

enum { S_WM_SLOTS, S_WM_FREE, S_WM_RUNNING, S_WM_DONE, S_WM_FAILED };

/* One line per worker (per worker and pool kind for slots and free slots). */
static void s_worker_series(zxb_broker_t *self, FILE *f, const char *name, int what)
{
    bool per_pool = what == S_WM_SLOTS || what == S_WM_FREE;
    for (zxb_worker_t *w = zhashx_first(self->workers); w; w = zhashx_next(self->workers)) {
        for (int p = ZXP_POOL_THREAD; p <= (per_pool ? ZXP_POOL_PROCESS : ZXP_POOL_THREAD); p++) {
            uint64_t v = what == S_WM_SLOTS     ? w->place[p].slots
                         : what == S_WM_FREE    ? zxb_place_free_slots(&w->place[p])
                         : what == S_WM_RUNNING ? w->running
                         : what == S_WM_DONE    ? w->done
                                                : w->failed;
            fprintf(f, "%s{node=\"", name);
            s_label(f, w->node);
            if (per_pool) {
                fprintf(f, "\",pool=\"%s", zxb_pool_name(p));
            }
            fprintf(f, "\"} %" PRIu64 "\n", v);
        }
    }
}

/* The page: broker totals, then one series per worker (and pool), then the
   queue depth per function and client; the figures of STATUS. */
void zxb_metrics_update(zxb_broker_t *self)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) {
        return;
    }
    s_metric(f, "zexec_uptime_seconds", "gauge", "Seconds since the broker started.",
             (double)(self->now - self->started) / 1000.0);
    s_metric(f, "zexec_tasks_submitted_total", "counter", "Tasks accepted from clients.",
             (double)self->submitted);
    s_metric(f, "zexec_tasks_done_total", "counter", "Tasks that returned a value.",
             (double)self->done);
    s_metric(f, "zexec_tasks_failed_total", "counter", "Tasks that ended with an error.",
             (double)self->failed);
    s_metric(f, "zexec_tasks_cancelled_total", "counter", "Tasks cancelled before they ran.",
             (double)self->cancelled);
    s_metric(f, "zexec_tasks_rejected_total", "counter",
             "Tasks refused by a client quota or as malformed.", (double)self->rejected);
    s_metric(f, "zexec_results_malformed_total", "counter",
             "Worker results refused as malformed (their tasks failed).",
             (double)self->bad_results);
    s_metric(f, "zexec_tasks_too_large_total", "counter",
             "Tasks failed because a message would pass a peer's --max-msg.",
             (double)self->too_large);
    s_metric(f, "zexec_clients_dropped_slow_total", "counter",
             "Client sessions dropped for not reading their results.", (double)self->slow_clients);
    s_metric(f, "zexec_results_stale_total", "counter",
             "Worker results for another attempt of their task (token), dropped.",
             (double)self->stale_results);
    s_metric(f, "zexec_claims_forged_total", "counter",
             "Tasks a worker's READY listed without a valid token, ignored.",
             (double)self->forged_claims);
    s_metric(f, "zexec_tasks_duplicate_total", "counter",
             "Re-sent tasks the broker already had (dropped).", (double)self->duplicates);
    s_metric(f, "zexec_tasks_queued", "gauge", "Tasks waiting for a worker.", (double)self->queued);
    s_metric(f, "zexec_tasks_running", "gauge", "Tasks on workers.", (double)self->running);
    s_metric(f, "zexec_clients", "gauge", "Connected clients.", (double)zhashx_size(self->clients));
    s_metric(f, "zexec_workers", "gauge", "Connected workers.", (double)zhashx_size(self->workers));
    s_metric(f, "zexec_jobs", "gauge", "Detached jobs the broker holds.",
             (double)zhashx_size(self->jobs));
    s_metric(f, "zexec_job_results_held", "gauge", "Results held for jobs, not yet RACKed.",
             (double)self->jobs_held);
    s_metric(f, "zexec_journal_uncommitted_records", "gauge",
             "Journal records appended and not yet committed under the fsync policy.",
             (double)(self->last_lsn > self->committed ? self->last_lsn - self->committed : 0));
    s_metric(f, "zexec_journal_failed", "gauge",
             "1 when the journal could not be written (submissions are refused), else 0.",
             self->journal_failed ? 1.0 : 0.0);
    s_metric(f, "zexec_dropped_messages_total", "counter",
             "Malformed, unsigned or unexpected messages dropped.", (double)self->drops.total);
    if (self->cfg.peer) {
        s_metric(f, "zexec_pair_peer_refused_total", "counter",
                 "Peer-link messages dropped: their signature check failed.",
                 (double)zxb_pair_peer_refused(self));
    }

    /* per worker and pool kind, then per worker */
    s_metric_head(f, "zexec_worker_slots", "gauge", "Pool size of a worker.");
    s_worker_series(self, f, "zexec_worker_slots", S_WM_SLOTS);
    s_metric_head(f, "zexec_worker_free_slots", "gauge", "Pool slots with no task assigned.");
    s_worker_series(self, f, "zexec_worker_free_slots", S_WM_FREE);
    s_metric_head(f, "zexec_worker_running", "gauge",
                  "Tasks a worker has started and not finished.");
    s_worker_series(self, f, "zexec_worker_running", S_WM_RUNNING);
    s_metric_head(f, "zexec_worker_tasks_done_total", "counter",
                  "Tasks a worker finished with a value.");
    s_worker_series(self, f, "zexec_worker_tasks_done_total", S_WM_DONE);
    s_metric_head(f, "zexec_worker_tasks_failed_total", "counter",
                  "Tasks a worker finished with an error.");
    s_worker_series(self, f, "zexec_worker_tasks_failed_total", S_WM_FAILED);
    s_metric_head(f, "zexec_queue_depth", "gauge", "Queued tasks per function and client.");
    for (zxb_client_t *cl = zhashx_first(self->clients); cl; cl = zhashx_next(self->clients)) {
        s_qmetrics_t q = {f, cl};
        zxb_client_depths(cl, s_queue_metric, &q);
    }
    if (fclose(f) != 0 || !text) {
        free(text);
        return;
    }
    zxb_metrics_publish(self->metrics, text, len);
}
