/*  test_failover.c - a pair of brokers (issue 18, the standby broker):
    tests/failover.sh runs a primary and a backup with their journals, two
    workers and a `zexec map` given both endpoints, kills the active broker
    with SIGKILL mid-run and checks that the backup takes over and the map
    ends with every result, each its own (0 lost, 0 hung), and that the
    killed broker comes back as the passive with a complete copy; then it
    cuts the two brokers apart (network namespaces; the worker and the
    client still see both) for longer than the liveness window: the backup
    must stay passive (no split brain), the map must end whole, and the
    copy must resume after the heal. The CI form is one kill and a 5 s cut;
    `tests/failover.sh 10 30` is the long form (failover time p50 and max,
    docs/testing.md). Without root or namespace support the script skips
    the partition part and says so on its last line, which this test
    prints as a warning: a missing capability, not a failure.
*/
#include "zx_testutil.h"
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <stdio.h>
#include <string.h>

Test(failover, kill_the_active_under_load_then_cut_the_brokers_apart_none_lost_no_split_brain,
     .timeout = 290)
{
    char last[4096];
    int rc = zxt_run_script("failover.sh", "1 5", 280, last, sizeof last);
    cr_assert_neq(rc, -1, "cannot run failover.sh");
    cr_assert_eq(rc, 0, "failover.sh failed (status %d): %s", rc, last);
    cr_assert(strstr(last, "passed"), "failover.sh ended without passing: %s", last);
    if (strstr(last, "skipped")) {
        cr_log_warn("%s", last);
        printf("%s\n", last);
    }
}
