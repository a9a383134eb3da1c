/*  test_multihost.c - the multi-host test: tests/multihost.sh builds four hosts out of network
    namespaces (broker, two workers, a client; a bridge; their own addresses,
    never loopback), runs 4,000 tasks through the zexec command, cuts a
    worker host's link mid-run and brings it back, and restarts the broker
    mid-run. It needs root; without it (or without namespace/veth/bridge
    support) the script says why and exits 77, and this test passes with
    that reason printed as a warning: a missing capability, not a failure.
*/
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

/* Runs the script, echoing its output (the test log shows each step);
   returns its exit status and keeps the last line. */
static int s_run_script(const char *script, char *last, size_t last_len)
{
    const char *src = getenv("ZEXEC_SOURCE_DIR");
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "timeout -k 5 270 '%s/tests/%s' 2>&1", src ? src : ".", script);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p, "cannot run %s", script);
    char line[4096];
    last[0] = 0;
    while (fgets(line, sizeof line, p)) {
        fputs(line, stdout);
        fflush(stdout);
        if (line[0] != '\n') {
            snprintf(last, last_len, "%s", line);
        }
    }
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

Test(multihost, tasks_survive_a_cut_link_and_a_broker_restart_across_namespaced_hosts,
     .timeout = 280)
{
    char last[4096];
    int rc = s_run_script("multihost.sh", last, sizeof last);
    if (rc == 77) {
        /* skipped only for a missing capability, which the script names */
        cr_log_warn("multihost test skipped: %s", last);
        printf("multihost test skipped: %s", last);
        return;
    }
    cr_assert_eq(rc, 0, "multihost.sh failed (status %d): %s", rc, last);
    cr_assert(strstr(last, "passed"), "multihost.sh ended without passing: %s", last);
}
