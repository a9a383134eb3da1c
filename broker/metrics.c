/*  metrics.c - the broker's Prometheus endpoint (--metrics HOST:PORT).

    libmicrohttpd serves HTTP on its own thread; the broker's loop publishes
    the whole text once a second (broker.c builds it from the figures STATUS
    reports) and a scrape copies the last one under a mutex. So a slow or
    hostile HTTP client never holds up scheduling, and the HTTP thread never
    reads the broker's structures. Only GET (and HEAD) of /metrics answer.
*/
#include "zxb.h"
#include "zx_auth.h"

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
    if (!zx_auth_endpoint_is_loopback(ep)) {
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
