/*  test_spin.c - the waiting spin's policy (libclient/spin.c): no spinning
    while every core is busy. The machine these tests run on is shared, so
    only that direction can be asserted: an idle core may not be there. */
#include "zx_spin.h"
#include "zexec.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static pid_t s_hogs[64];
static int s_nhogs;

static void s_stop_hogs(void)
{
    for (int i = 0; i < s_nhogs; i++) {
        kill(s_hogs[i], SIGKILL);
        waitpid(s_hogs[i], NULL, 0);
    }
    s_nhogs = 0;
}

static void s_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

Test(spin, nobody_spins_while_every_core_is_busy, .fini = s_stop_hogs, .timeout = 30)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    cr_assert_gt(cpus, 0);
    /* one CPU-bound process per core, at this process's priority */
    for (long i = 0; i < cpus && i < 64; i++) {
        pid_t p = fork();
        cr_assert_geq(p, 0);
        if (p == 0) {
            alarm(20); /* gone even if this test dies */
            for (volatile unsigned long x = 0;; x++) {
            }
        }
        s_hogs[s_nhogs++] = p;
    }
    /* the first measurement, then one over a whole interval of full load */
    (void)zx__spin_idle_core();
    bool idle = true;
    for (int i = 0; i < 10 && idle; i++) {
        s_sleep_ms(150);
        idle = zx__spin_idle_core();
    }
    cr_assert(!idle, "the policy saw an idle core with %ld CPU-bound processes on %ld cores", cpus,
              cpus);
    cr_assert(!zx__spin_begin(), "a waiter may spin while every core is busy");
    s_stop_hogs();
}

Test(spin, zexec_spin_us_zero_is_read_as_zero)
{
    setenv("ZEXEC_SPIN_US", "0", 1);
    cr_assert_eq(zx__spin_max_us(), 0);
}

/* The second bound (zx__spin_plan): a thread whose spun waits grew past
   the bound stops spinning, probes now and then, and spins again as soon
   as a probe finds short waits; waits that did not spin never count, since
   they pay the wake-up that spinning saves (B signed stayed unspun for a
   whole run when they did). */
Test(spin, a_thread_ruled_out_by_long_waits_probes_and_spins_again)
{
    zx__spin_hist_t h = {0};
    cr_assert_eq(zx__spin_plan(&h, 250), 250, "a fresh thread spins");
    zx__spin_note(&h, true, 100);
    cr_assert_eq(zx__spin_plan(&h, 250), 250);
    for (int i = 0; i < 8; i++) { /* waits of 2 ms: spinning does not pay */
        zx__spin_plan(&h, 250);
        zx__spin_note(&h, true, 2000);
    }
    int unspun = 0;
    while (zx__spin_plan(&h, 250) == 0) {
        zx__spin_note(&h, false, 300); /* unspun waits of 300 us: not counted */
        cr_assert_lt(++unspun, 100, "a thread ruled out never probes");
    }
    cr_assert_geq(unspun, 4, "probed after only %d waits", unspun);
    zx__spin_note(&h, true, 150); /* the probe's wait was short */
    for (int i = 0; i < 20; i++) {
        cr_assert_eq(zx__spin_plan(&h, 250), 250, "wait %d after a short probe did not spin", i);
        zx__spin_note(&h, true, 180);
    }
    /* a probe whose wait was long keeps it ruled out */
    for (int i = 0; i < 8; i++) {
        zx__spin_plan(&h, 250);
        zx__spin_note(&h, true, 5000);
    }
    while (zx__spin_plan(&h, 250) == 0) {
        zx__spin_note(&h, false, 5000);
    }
    zx__spin_note(&h, true, 5000);
    cr_assert_eq(zx__spin_plan(&h, 250), 0, "a long probe let the thread spin again");
    cr_assert_eq(zx__spin_plan(&(zx__spin_hist_t){0}, 0), 0, "ZEXEC_SPIN_US=0 spins");
}
