/*  test_metrics.c - the broker's Prometheus endpoint (--metrics): a real
    broker and worker, tasks from a real client, the page read over HTTP
    from a plain socket. */
#include "zexec.h"
#include "zx_testutil.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

static zxt_cluster_t C;

static void s_stop(void)
{
    zxt_cluster_stop(&C);
}

TestSuite(metrics, .fini = s_stop, .timeout = 60);

/* One HTTP/1.0 request; the whole answer (status line, headers, body),
   malloc'd, or NULL if the connection failed. */
static char *s_http(int port, const char *method, const char *path)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return NULL;
    }
    char req[256];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.0\r\nHost: localhost\r\n\r\n", method, path);
    cr_assert_eq(write(fd, req, (size_t)n), n);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    ssize_t r;
    while ((r = read(fd, buf + len, cap - len - 1)) > 0) {
        len += (size_t)r;
        if (len + 1 == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
    }
    buf[len] = 0;
    close(fd);
    return buf;
}

typedef struct {
    int port;
    const char *want;
} s_page_arg_t;

static bool s_page_has(void *arg)
{
    s_page_arg_t *a = arg;
    char *page = s_http(a->port, "GET", "/metrics");
    bool ok = page && strstr(page, a->want);
    free(page);
    return ok;
}

Test(metrics, the_page_counts_tasks_and_lists_workers_and_queues)
{
    int port = zxt_free_port();
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    const char *const args[] = {"--metrics",      addr, "--heartbeat", "0.2",
                                "--nofunc-grace", "60", NULL};
    cr_assert_eq(zxt_broker_start(&C, args), 0);
    pid_t mw1 = zxt_worker_start(&C, "mw1", NULL);
    cr_assert_gt(mw1, 0);
    zx_executor_t *ex = zx_executor_new(C.client_ep, NULL);
    cr_assert(ex);
    enum { N = 50 };
    zx_future_t *fs[N];
    for (int i = 0; i < N; i++) {
        fs[i] = zx_submitf(ex, "echo", "i", i);
        cr_assert(fs[i]);
    }
    for (int i = 0; i < N; i++) {
        cr_assert_eq(zx_future_result(fs[i], 30, NULL, NULL), ZX_OK);
        zx_future_unref(&fs[i]);
    }
    /* published once a second: wait for the page that counts them */
    s_page_arg_t a = {port, "\nzexec_tasks_done_total 50\n"};
    cr_assert(zxt_wait_for(s_page_has, &a, 10), "the page never counted 50 done tasks");
    char *page = s_http(port, "GET", "/metrics");
    cr_assert_not_null(page);
    cr_assert(strncmp(page, "HTTP/1.", 7) == 0 && strstr(page, " 200 "), "%.80s", page);
    cr_assert(strstr(page, "text/plain; version=0.0.4"), "Prometheus content type");
    cr_assert(strstr(page, "# TYPE zexec_tasks_done_total counter\n"));
    cr_assert(strstr(page, "\nzexec_tasks_submitted_total 50\n"), "%s", page);
    cr_assert(strstr(page, "\nzexec_workers 1\n"));
    cr_assert(strstr(page, "\nzexec_worker_tasks_done_total{node=\"mw1\"} 50\n"), "%s", page);
    cr_assert(strstr(page, "\nzexec_worker_slots{node=\"mw1\",pool=\"thread\"} "));
    free(page);

    /* a queue: tasks of a function no worker offers wait, per client, while
       no worker is registered (with workers registered and none offering
       it, the task would fail at once) */
    zxt_stop(mw1);
    C.workers[0] = 0; /* reaped: the cluster's stop must not signal its pid */
    s_page_arg_t none = {port, "\nzexec_workers 0\n"};
    cr_assert(zxt_wait_for(s_page_has, &none, 10), "the stopped worker stayed listed");
    zx_options_t o = {.name = "q\"client"};
    zx_executor_t *ex2 = zx_executor_new(C.client_ep, &o);
    zx_future_t *f = zx_submitf(ex2, "nobody_offers_this", "i", 1);
    cr_assert(f);
    s_page_arg_t q = {
        port, "\nzexec_queue_depth{function=\"nobody_offers_this\",client=\"q\\\"client\"} 1\n"};
    cr_assert(zxt_wait_for(s_page_has, &q, 10), "the queue depth (label escaped) never showed");
    cr_assert(zx_future_cancel(f));
    zx_future_unref(&f);
    zx_executor_destroy(&ex2);

    /* only GET /metrics */
    page = s_http(port, "GET", "/other");
    cr_assert(page && strstr(page, " 404 "), "%.80s", page ? page : "(none)");
    free(page);
    page = s_http(port, "POST", "/metrics");
    cr_assert(page && strstr(page, " 405 "), "%.80s", page ? page : "(none)");
    free(page);
    zx_executor_destroy(&ex);
}

/* Bad input: a malformed address is a usage error (2); a non-loopback one
   without --insecure is refused before anything is bound (1). */
Test(metrics, bad_or_open_addresses_are_refused)
{
    static const char *const cases[][2] = {
        {"nonsense", "2"}, {"127.0.0.1:0x", "2"}, {"127.0.0.1:70000", "2"}, {"*:19999", "1"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *bin = zxt_bin("zexec-broker");
        char *argv[] = {bin,
                        "--clients",
                        "tcp://127.0.0.1:0",
                        "--workers",
                        "tcp://127.0.0.1:0",
                        "--metrics",
                        (char *)cases[i][0],
                        NULL};
        pid_t pid = zxt_spawn(argv);
        cr_assert_gt(pid, 0);
        int st = 0;
        cr_assert(zxt_wait_exit(pid, 10, &st), "the broker ran with --metrics %s", cases[i][0]);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == atoi(cases[i][1]),
                  "--metrics %s: status %d, expected %s", cases[i][0], WEXITSTATUS(st),
                  cases[i][1]);
        free(bin);
    }
}
