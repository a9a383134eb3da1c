/*  test_sigstop.c - the SIGSTOP/SIGCONT trials of issue 16: tests/sigstop.sh
    runs a real broker (heartbeat 0.1 s, liveness 3) and two real workers,
    stops one with SIGSTOP while it runs tasks, until the broker declares it
    lost and runs them again on the other, then continues it. Per trial: the
    `zexec map` ends with every result once and its own (none lost, none
    hung), the broker resolved exactly the tasks submitted (none twice), and
    every task the stopped worker was running ends either dropped as a stale
    result (`stale_results`) or taken back when no other attempt had started.
    The CTest form is 20 trials; `tests/sigstop.sh 1000` is the long form
    (docs/testing.md).
*/
#include "zx_testutil.h"
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <stdio.h>
#include <string.h>

Test(sigstop, stopped_worker_past_liveness_its_stale_results_dropped_every_future_once,
     .timeout = 200)
{
    char last[4096];
    int rc = zxt_run_script("sigstop.sh", "20", 180, last, sizeof last);
    cr_assert_neq(rc, -1, "cannot run sigstop.sh");
    if (rc == 77) {
        /* skipped only for a missing capability, which the script names */
        cr_log_warn("sigstop test skipped: %s", last);
        printf("sigstop test skipped: %s", last);
        return;
    }
    cr_assert_eq(rc, 0, "sigstop.sh failed (status %d): %s", rc, last);
    cr_assert(strstr(last, "passed"), "sigstop.sh ended without passing: %s", last);
}
