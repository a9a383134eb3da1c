/*  test_endpoints.c - the broker endpoint list (common/endpoints.c) that
    clients, workers and the CLI use to follow the active broker of a pair:
    one endpoint, two, blanks around items, the order kept, wrapping, and
    every malformed spelling refused with a reason and nothing allocated
    left behind (ASan's leak check sees that). Then the following itself,
    with the real zexec-broker, zexec-worker and zexec: a list whose first
    endpoint is a passive broker (a fake that answers every message with
    ERROR 3, as the passive of a pair does) or a dead one (a port nobody
    listens on) still reaches the real broker after it (the executor, the
    worker, `zexec submit` and the job client through `zexec jobs`), and
    the fake saw the HELLO and READY that were tried first. */
#include "zexec.h"
#include "zx_endpoints.h"
#include "zx_proto.h"
#include "zx_testutil.h"

#include <criterion/criterion.h>
#include <czmq.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

TestSuite(endpoints, .timeout = 10);

Test(endpoints, one_endpoint_is_a_list_of_one)
{
    zx__eps_t e;
    char err[256] = "";
    cr_assert_eq(zx__eps_parse(&e, "tcp://127.0.0.1:5570", err, sizeof err), 0, "%s", err);
    cr_assert_eq(e.n, 1);
    cr_assert_str_eq(zx__eps_current(&e), "tcp://127.0.0.1:5570");
    cr_assert_str_eq(zx__eps_next(&e), "tcp://127.0.0.1:5570", "one endpoint wraps to itself");
    zx__eps_clear(&e);
    cr_assert_eq(e.n, 0);
    cr_assert_null(e.v);
    zx__eps_clear(&e); /* twice is harmless */
}

Test(endpoints, a_pair_in_order_and_wrapping)
{
    zx__eps_t e;
    char err[256] = "";
    cr_assert_eq(zx__eps_parse(&e, "tcp://a:5570,tcp://b:5570", err, sizeof err), 0, "%s", err);
    cr_assert_eq(e.n, 2);
    cr_assert_str_eq(zx__eps_current(&e), "tcp://a:5570");
    cr_assert_str_eq(zx__eps_next(&e), "tcp://b:5570");
    cr_assert_str_eq(zx__eps_current(&e), "tcp://b:5570");
    cr_assert_str_eq(zx__eps_next(&e), "tcp://a:5570");
    zx__eps_clear(&e);
}

Test(endpoints, blanks_around_items_are_ignored)
{
    zx__eps_t e;
    char err[256] = "";
    cr_assert_eq(zx__eps_parse(&e, "  tcp://a:1 ,\ttcp://b:2 , ipc:///tmp/c  ", err, sizeof err), 0,
                 "%s", err);
    cr_assert_eq(e.n, 3);
    cr_assert_str_eq(e.v[0], "tcp://a:1");
    cr_assert_str_eq(e.v[1], "tcp://b:2");
    cr_assert_str_eq(e.v[2], "ipc:///tmp/c");
    zx__eps_clear(&e);
}

Test(endpoints, sixteen_is_the_most)
{
    char spec[1024] = "", err[2048] = "";
    for (int i = 0; i < ZX__EPS_MAX; i++) {
        char one[32];
        snprintf(one, sizeof one, "%stcp://h:%d", i ? "," : "", 5000 + i);
        strcat(spec, one);
    }
    zx__eps_t e;
    cr_assert_eq(zx__eps_parse(&e, spec, err, sizeof err), 0, "%s", err);
    cr_assert_eq(e.n, ZX__EPS_MAX);
    cr_assert_str_eq(e.v[ZX__EPS_MAX - 1], "tcp://h:5015");
    zx__eps_clear(&e);
    strcat(spec, ",tcp://h:6000");
    cr_assert_eq(zx__eps_parse(&e, spec, err, sizeof err), -1);
    cr_assert(strstr(err, "more than 16"), "reason: %s", err);
}

static void s_bad(const char *spec, const char *why)
{
    zx__eps_t e = {.n = 99};
    char err[512] = "";
    cr_assert_eq(zx__eps_parse(&e, spec, err, sizeof err), -1, "'%s' must be refused",
                 spec ? spec : "(null)");
    cr_assert_eq(e.n, 0, "a refusal leaves the list empty");
    cr_assert_null(e.v);
    cr_assert(strstr(err, why), "'%s': reason '%s' should say '%s'", spec ? spec : "(null)", err,
              why);
}

Test(endpoints, malformed_lists_are_refused)
{
    s_bad(NULL, "no broker endpoint");
    s_bad("", "an empty endpoint");
    s_bad("   ", "an empty endpoint");
    s_bad(",", "an empty endpoint");
    s_bad("tcp://a:1,", "an empty endpoint");
    s_bad(",tcp://a:1", "an empty endpoint");
    s_bad("tcp://a:1,,tcp://b:2", "an empty endpoint");
    s_bad("tcp://a:1, ,tcp://b:2", "an empty endpoint");
    s_bad("tcp://a :1", "a blank inside");
    s_bad("tcp://a:1 tcp://b:2", "a blank inside");
    char longer[300];
    memset(longer, 'x', sizeof longer - 1);
    longer[sizeof longer - 1] = '\0';
    s_bad(longer, "longer than 255");
}

Test(endpoints, the_longest_endpoint_fits)
{
    char ep[ZX__EP_MAX_LEN + 1];
    memset(ep, 'y', ZX__EP_MAX_LEN);
    ep[ZX__EP_MAX_LEN] = '\0';
    zx__eps_t e;
    char err[512] = "";
    cr_assert_eq(zx__eps_parse(&e, ep, err, sizeof err), 0, "%s", err);
    cr_assert_eq(strlen(zx__eps_current(&e)), ZX__EP_MAX_LEN);
    zx__eps_clear(&e);
}

/* ---- following the active broker ---------------------------------------------------- */

/* A fake passive broker: a ROUTER on a client and a worker port that
   answers every message with ERROR 3 and counts what it was sent. */
static atomic_int s_refused;
static zactor_t *s_fake;
static char s_fake_c[64], s_fake_w[64];
static zxt_cluster_t C;
static char s_dir[] = "/tmp/zx_eps_XXXXXX";

static void s_fake_actor(zsock_t *pipe, void *arg)
{
    (void)arg;
    zsock_t *r = zsock_new(ZMQ_ROUTER);
    zxp_sock_setup(r);
    int a = zsock_bind(r, "tcp://127.0.0.1:*[50000-]");
    int b = zsock_bind(r, "tcp://127.0.0.1:*[50000-]");
    snprintf(s_fake_c, sizeof s_fake_c, "tcp://127.0.0.1:%d", a);
    snprintf(s_fake_w, sizeof s_fake_w, "tcp://127.0.0.1:%d", b);
    zsock_signal(pipe, a > 0 && b > 0 ? 0 : 1);
    zpoller_t *p = zpoller_new(pipe, r, NULL);
    while (true) {
        void *which = zpoller_wait(p, -1);
        if (which != r) {
            break; /* $TERM or interrupted */
        }
        zmsg_t *m = zmsg_recv(r);
        if (!m) {
            continue;
        }
        zframe_t *rid = zmsg_pop(m);
        zxp_send_error(r, rid, ZXP_ERR_PASSIVE, "this broker is passive: use the other endpoint");
        atomic_fetch_add(&s_refused, 1);
        zframe_destroy(&rid);
        zmsg_destroy(&m);
    }
    zpoller_destroy(&p);
    zsock_destroy(&r);
}

static void s_follow_setup(void)
{
    atomic_store(&s_refused, 0);
    s_fake = zactor_new(s_fake_actor, NULL);
    cr_assert_not_null(s_fake);
    cr_assert_eq(zxt_broker_start(&C, NULL), 0);
    cr_assert_not_null(mkdtemp(s_dir));
}

static void s_follow_teardown(void)
{
    zxt_cluster_stop(&C);
    zactor_destroy(&s_fake);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", s_dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(follow, .init = s_follow_setup, .fini = s_follow_teardown, .timeout = 120);

/* zexec-worker --broker LIST, its pid recorded for the teardown. */
static void s_worker(const char *list, const char *node)
{
    char *bin = zxt_bin("zexec-worker");
    char *const argv[] = {bin,         "--broker",   (char *)list, "--node", (char *)node,
                          "--threads", "2",          "--procs",    "0",      "--heartbeat",
                          "0.2",       "--liveness", "2",          NULL};
    pid_t pid = zxt_spawn(argv);
    free(bin);
    cr_assert_gt(pid, 0);
    C.workers[C.nworkers++] = pid;
}

/* A task through an executor made with the list: its result arrives. */
static void s_one_task(const char *list)
{
    zx_options_t o = {.heartbeat = 0.2, .liveness = 2, .broker_timeout = 60};
    zx_executor_t *ex = zx_executor_new(list, &o);
    cr_assert_not_null(ex, "an executor on '%s'", list);
    cr_assert_str_eq(zx_executor_endpoint(ex), list, "the endpoint as given");
    zx_future_t *f = zx_submitf(ex, "pid", "");
    cr_assert_not_null(f);
    const zx_error_t *e = zx_future_exception(f, 60);
    cr_assert_null(e, "the task through '%s' failed: %s", list, e ? e->message : "");
    zx_future_unref(&f);
    zx_executor_destroy(&ex);
}

static int s_free_dead_port(char *ep, size_t len)
{
    int port = zxt_free_port();
    snprintf(ep, len, "tcp://127.0.0.1:%d", port);
    return port;
}

Test(follow, client_and_worker_skip_a_passive_broker)
{
    char wl[160], cl[160];
    snprintf(wl, sizeof wl, "%s,%s", s_fake_w, C.worker_ep);
    snprintf(cl, sizeof cl, "%s,%s", s_fake_c, C.client_ep);
    s_worker(wl, "eps-w1");
    s_one_task(cl);
    /* at least the worker's READY and the client's HELLO were refused */
    cr_assert_geq(atomic_load(&s_refused), 2, "the passive fake was tried first (%d refusals)",
                  atomic_load(&s_refused));
}

Test(follow, client_and_worker_skip_a_silent_endpoint)
{
    char dead_w[64], dead_c[64], wl[160], cl[160];
    s_free_dead_port(dead_w, sizeof dead_w);
    s_free_dead_port(dead_c, sizeof dead_c);
    snprintf(wl, sizeof wl, "%s,%s", dead_w, C.worker_ep);
    snprintf(cl, sizeof cl, " %s , %s ", dead_c, C.client_ep);
    s_worker(wl, "eps-w2");
    s_one_task(cl);
}

Test(follow, the_cli_skips_a_passive_broker)
{
    char wl[160], cl[160];
    snprintf(wl, sizeof wl, "%s,%s", s_fake_w, C.worker_ep);
    snprintf(cl, sizeof cl, "%s,%s", s_fake_c, C.client_ep);
    s_worker(wl, "eps-w3");
    char *zexec = zxt_bin("zexec");
    const char *a[] = {"submit", "--broker", cl, "--timeout", "30", "pid", "[]", NULL};
    pid_t pid = zxt_run_cmd(zexec, s_dir, false, "", -1, a, NULL);
    cr_assert_gt(pid, 0);
    zxt_proc_t r = zxt_collect(pid, s_dir, 60);
    cr_assert_eq(r.status, 0, "zexec submit --broker '%s': %s", cl, r.err);
    cr_assert_gt(strlen(r.out), 0, "a pid printed");
    zxt_proc_free(&r);
    free(zexec);
    cr_assert_geq(atomic_load(&s_refused), 2, "the CLI tried the passive fake first");
}

Test(follow, the_job_client_skips_a_passive_and_a_silent_endpoint)
{
    /* zexec jobs goes through the job client (libclient/job.c): JOBS at the
       real broker after a passive fake, then after a dead port */
    char dead[64], l1[160], l2[160];
    s_free_dead_port(dead, sizeof dead);
    snprintf(l1, sizeof l1, "%s,%s", s_fake_c, C.client_ep);
    snprintf(l2, sizeof l2, "%s,%s", dead, C.client_ep);
    char *zexec = zxt_bin("zexec");
    const char *lists[] = {l1, l2};
    for (int i = 0; i < 2; i++) {
        const char *a[] = {"jobs", "--broker", lists[i], "--json", NULL};
        pid_t pid = zxt_run_cmd(zexec, s_dir, false, "", -1, a, NULL);
        cr_assert_gt(pid, 0);
        zxt_proc_t r = zxt_collect(pid, s_dir, 60);
        cr_assert_eq(r.status, 0, "zexec jobs --broker '%s': %s", lists[i], r.err);
        zxt_proc_free(&r);
    }
    free(zexec);
    cr_assert_geq(atomic_load(&s_refused), 1, "the job client tried the passive fake first");
}

Test(follow, a_malformed_list_is_refused_everywhere)
{
    zx_options_t o = {0};
    cr_assert_null(zx_executor_new("tcp://127.0.0.1:1,,tcp://127.0.0.1:2", &o));
    cr_assert_eq(zx_last_error(), ZX_EINVAL);
    char *zexec = zxt_bin("zexec");
    const char *a[] = {"submit", "--broker", "tcp://127.0.0.1:1,", "pid", "[]", NULL};
    pid_t pid = zxt_run_cmd(zexec, s_dir, false, "", -1, a, NULL);
    zxt_proc_t r = zxt_collect(pid, s_dir, 30);
    cr_assert_neq(r.status, 0);
    cr_assert(strstr(r.err, "an empty endpoint"), "the reason: %s", r.err);
    zxt_proc_free(&r);
    free(zexec);
}
