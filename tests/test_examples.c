/*  test_examples.c - every seed example runs against a real cluster (a
    zexec-broker and two zexec-worker processes with the demo plugin) and
    prints what the seed's Python prints. One also runs with no endpoint,
    starting its own local cluster. */
#include "zx_testutil.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static zxt_cluster_t cluster;

static void setup(void)
{
    cr_assert_eq(zxt_broker_start(&cluster, NULL), 0);
    char *plugin = zxt_plugin("zexec_demo_plugin");
    const char *extra[] = {"--threads", "2", "--procs", "2", "--plugin", plugin, NULL};
    cr_assert_gt(zxt_worker_start(&cluster, "node-1", extra), 0);
    cr_assert_gt(zxt_worker_start(&cluster, "node-2", extra), 0);
    free(plugin);
    setenv("ZEXEC_EXAMPLE_SCALE", "0.05", 1);
}

static void teardown(void)
{
    zxt_cluster_stop(&cluster);
}

TestSuite(examples, .init = setup, .fini = teardown, .timeout = 60);

/* Runs an example with the cluster's endpoint (or none) and returns its
   stdout (malloc'd); *status gets the exit status. */
static char *s_run(const char *name, bool with_endpoint, int *status)
{
    const char *dir = getenv("ZEXEC_BIN_DIR");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/examples/%s %s", dir ? dir : ".", name,
             with_endpoint ? cluster.client_ep : "");
    FILE *p = popen(cmd, "r");
    cr_assert(p, "cannot run %s", cmd);
    size_t cap = 1 << 16, len = 0;
    char *out = calloc(1, cap);
    size_t n;
    while (len + 1 < cap && (n = fread(out + len, 1, cap - len - 1, p)) > 0) {
        len += n;
    }
    int st = pclose(p);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return out;
}

static int s_count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle)) {
        n++;
    }
    return n;
}

Test(examples, square_by_map_and_by_submit)
{
    int st;
    char *out = s_run("seed_square", true, &st);
    cr_assert_eq(st, 0, "%s", out);
    cr_assert(strstr(out, "map: 1 4 9 16 25\n"), "%s", out);
    cr_assert(strstr(out, "submit: 1 4 9 16 25\n"), "%s", out);
    free(out);
}

Test(examples, square_starts_its_own_local_cluster_without_an_endpoint)
{
    int st;
    char *out = s_run("seed_square", false, &st);
    cr_assert_eq(st, 0, "%s", out);
    cr_assert(strstr(out, "map: 1 4 9 16 25\n"), "%s", out);
    free(out);
}

Test(examples, map_returns_input_order_whatever_the_completion_order)
{
    int st;
    char *out = s_run("seed_map_order", true, &st);
    cr_assert_eq(st, 0, "%s", out);
    cr_assert(strstr(out, "main: results: [50.0, 40.0, 30.0, 20.0, 10.0]\n"), "%s", out);
    cr_assert_eq(s_count(out, "done with "), 5, "%s", out);
    free(out);
}

Test(examples, future_state_is_running_then_finished)
{
    int st;
    char *out = s_run("seed_future_state", true, &st);
    cr_assert_eq(st, 0, "%s", out);
    cr_assert(strstr(out, "main: future: <Future state=running>"), "%s", out);
    cr_assert(strstr(out, "main: result: 50.0"), "%s", out);
    cr_assert(strstr(out, "main: future after result: <Future state=finished>"), "%s", out);
    free(out);
}

Test(examples, as_completed_yields_all_five)
{
    int st;
    char *out = s_run("seed_as_completed", true, &st);
    cr_assert_eq(st, 0, "%s", out);
    cr_assert_eq(s_count(out, "main: result: "), 5, "%s", out);
    for (int n = 1; n <= 5; n++) {
        char want[32];
        snprintf(want, sizeof want, "[%d, %d.0]", n, n * 10);
        cr_assert(strstr(out, want), "missing %s in %s", want, out);
    }
    free(out);
}

Test(examples, done_callback_reports_value_error_and_cancellation)
{
    int st;
    char *out = s_run("seed_done_callback", true, &st);
    cr_assert_eq(st, 0, "%s", out);
    cr_assert(strstr(out, "5: value returned: 50.0"), "%s", out);
    cr_assert(strstr(out, "0: error returned: ZeroDivisionError"), "%s", out);
    /* the callback reports what cancel() decided: cancelled, or (when a
       free worker had started it first, on a loaded machine) its value */
    if (strstr(out, "main: cancel of 60 before it started: yes")) {
        cr_assert(strstr(out, "60: canceled"), "%s", out);
        cr_assert_not(strstr(out, "60: value returned"), "%s", out);
    } else {
        cr_assert(strstr(out, "main: cancel of 60 before it started: no"), "%s", out);
        cr_assert(strstr(out, "60: value returned: 600.0"), "%s", out);
        cr_assert_not(strstr(out, "60: canceled"), "%s", out);
    }
    free(out);
}

Test(examples, wait_first_completed_then_all)
{
    int st;
    char *out = s_run("seed_wait_first", true, &st);
    cr_assert_eq(st, 0, "%s", out);
    cr_assert(strstr(out, "first completed: "), "%s", out);
    cr_assert_eq(s_count(out, "first completed: 0 done"), 0, "%s", out);
    cr_assert(strstr(out, "all completed: 5 done, 0 not done"), "%s", out);
    free(out);
}

Test(examples, download_error_is_reported_for_its_url_only)
{
    int st;
    char *out = s_run("seed_download", true, &st);
    cr_assert_eq(st, 0, "%s", out);
    cr_assert(strstr(out, "Error for http://example.com/bad-page: HTTPError"), "%s", out);
    cr_assert_eq(s_count(out, "Download completed for "), 3, "%s", out);
    cr_assert_eq(s_count(out, "Error for "), 1, "%s", out);
    free(out);
}

Test(examples, as_completed_mixes_thread_process_and_local_futures)
{
    int st;
    char *out = s_run("seed_mixed_executors", true, &st);
    cr_assert_eq(st, 0, "%s", out);
    cr_assert(strstr(out, "remote thread pool: ran in "), "%s", out);
    cr_assert(strstr(out, "remote process pool: ran in "), "%s", out);
    cr_assert(strstr(out, "local executor: ran in [\"local\""), "%s", out);
    free(out);
}
