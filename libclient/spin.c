/*  spin.c - whether a thread about to wait for a future may spin first, and
    for how long: the policy behind ZEXEC_SPIN_US (docs/guide.md,
    docs/performance.md change 35).

    Spinning pays only when a core would otherwise sit idle: the spinner
    keeps its own core from halting, so the wake-up at the end of the wait
    costs nothing, while the threads that finish the future (the broker, the
    worker, the client's I/O thread) run on the other cores. On a machine
    with no idle core the spinner instead takes a core from exactly those
    threads, and every round trip waits for the scheduler to preempt it
    (issue 19 measured B at 3-5x the raw relay that way). So the decision is
    measured: at most every S_SAMPLE_MS, one waiting thread reads the first
    lines of /proc/stat (the machine's busy and idle time and its online
    CPUs) and computes how many cores the rest of the machine kept busy over
    the last interval, leaving out the CPU time this process spent spinning
    (measured per spin with CLOCK_THREAD_CPUTIME_ID, so that spinning does
    not switch itself off). Spinning is allowed while the rest of the
    machine left at least S_SPARE_MIN of a core idle on average, which the
    spinner then takes; time of niced processes counts as busy (s_parse_stat).
    And nobody may have waited for a CPU much: the kernel's pressure
    figure (/proc/pressure/cpu, "some": the time at least one runnable
    thread waited) must stay under S_STALL_MAX of the interval. That is the
    cost a spinner imposes, measured where it lands: on a saturated machine
    the spinner's time was taken from threads that wanted it, which the
    spare figure cannot see (the spinner's share looks like spare), and on
    a machine that our own cluster keeps busy beside the spinner, with no
    one else wanting a core, nothing waits and spinning is free. Where the
    kernel has no pressure figure (CONFIG_PSI off), the machine must have
    idled a little instead (S_IDLE_MIN), which also turns the spin off in
    that second case. Until the first interval (S_FIRST_MS) ends, and
    without /proc, the bound alone applies.

    One thread per process spins at a time (zx__spin_begin takes that role),
    so spinners cannot take every core from the threads that would finish
    their futures.
*/
#include "zx_spin.h"

#include "zx_clock.h"

#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define S_SPIN_DEFAULT_US 250
#define S_SAMPLE_MS 100 /* the longest a decision stands before it is measured again */
#define S_FIRST_MS 10   /* the first interval: until it ends, spinning is allowed */
#define S_SPARE_MIN 0.5 /* idle cores, on average, needed to spin (see the top) */
#define S_STALL_MAX 0.5 /* and the share of the time some thread waited for a CPU */
#define S_IDLE_MIN 0.1  /* without that figure, cores that really idled: none means saturated */

static int s_max_us;
static pthread_once_t s_once = PTHREAD_ONCE_INIT;

static atomic_bool s_spinning;       /* one spinner per process */
static atomic_bool s_sampling;       /* one thread measures at a time */
static atomic_bool s_allowed = true; /* the last decision */
static atomic_int_fast64_t s_next;   /* zx__mono_us of the next measurement */
static atomic_int_fast64_t s_spent;  /* CPU ns spent spinning, all threads */
/* the previous sample, under s_sampling */
static uint64_t s_prev_busy, s_prev_total; /* /proc/stat jiffies */
static int64_t s_prev_spent;
static int64_t s_prev_stall, s_prev_at; /* pressure "some" total and zx__mono_us, in us */
static bool s_have_prev;
static bool s_no_proc; /* /proc/stat unreadable: never measured */

static void s_init(void)
{
    const char *e = getenv("ZEXEC_SPIN_US");
    char *end;
    long v = e ? strtol(e, &end, 10) : S_SPIN_DEFAULT_US;
    if (e && (*e == '\0' || *end != '\0' || v < 0 || v > 1000000)) {
        zsys_warning("zexec: ZEXEC_SPIN_US='%s' is not 0..1000000 microseconds; using %d", e,
                     S_SPIN_DEFAULT_US);
        v = S_SPIN_DEFAULT_US;
    }
    s_max_us = (int)v;
}

int zx__spin_max_us(void)
{
    pthread_once(&s_once, s_init);
    return s_max_us;
}

/* Only waits that spun count: a wait that did not spin pays the wake-up the
   spin exists to save. Judged by every wait, a thread whose spun waits
   took 200 us and unspun ones 300 us (B signed, a 250 us bound) stopped
   spinning for good after a few slow waits, in one run of three. A thread
   the average ruled out spins on every S_PROBE_EVERY-th wait to see
   whether spinning pays again, which with long waits costs one bound of
   CPU per that many waits; a probe starts the average afresh, since the
   waits it stands for did not spin. */
#define S_PROBE_EVERY 16

int zx__spin_plan(zx__spin_hist_t *h, int max_us)
{
    h->probe = false;
    if (h->recent_us <= max_us) {
        return max_us;
    }
    h->probe = ++h->unspun >= S_PROBE_EVERY;
    return h->probe ? max_us : 0;
}

void zx__spin_note(zx__spin_hist_t *h, bool spun, double waited_us)
{
    if (!spun) {
        return; /* the machine's policy said no, or the average did */
    }
    h->recent_us = h->probe ? waited_us : h->recent_us + (waited_us - h->recent_us) / 4;
    h->unspun = 0;
    h->probe = false;
}

/* Reads at most cap - 1 bytes of a /proc file; the length or -1. */
static ssize_t s_read(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    if (n >= 0) {
        buf[n] = '\0';
    }
    return n;
}

/* From the text of /proc/stat: the machine's busy and total jiffies and the
   online CPUs (its "cpuN" lines). 0 or -1. */
static int s_parse_stat(const char *text, uint64_t *busy, uint64_t *total, int *cpus)
{
    unsigned long long v[10] = {0};
    int n = sscanf(text, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1],
                   &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]);
    if (n < 4) {
        return -1;
    }
    /* user nice system idle iowait irq softirq steal (guest time is already
       counted in user and nice). Time of niced processes counts as busy:
       nice orders threads only within one scheduling group, and with
       autogroups (one per session, the default) a spinner shares a core
       evenly with a niced build started from another terminal, which
       measured as half a core "idle" beside one CPU-bound process per
       core. Only a core that really idles is one a spinner takes from
       nobody. */
    uint64_t idle = v[3] + v[4];
    uint64_t all = 0;
    for (int i = 0; i < 8 && i < n; i++) {
        all += v[i];
    }
    *busy = all - idle;
    *total = all;
    int c = 0;
    for (const char *p = strstr(text, "\ncpu"); p; p = strstr(p + 1, "\ncpu")) {
        c += p[4] >= '0' && p[4] <= '9';
    }
    *cpus = c > 0 ? c : 1;
    return 0;
}

/* The kernel's CPU pressure: microseconds in which at least one runnable
   thread waited for a CPU, since boot ("some ... total=N" in
   /proc/pressure/cpu); -1 without it. */
static int64_t s_stall_us(void)
{
    char buf[256];
    if (s_read("/proc/pressure/cpu", buf, sizeof buf) <= 0) {
        return -1;
    }
    const char *t = strncmp(buf, "some ", 5) == 0 ? strstr(buf, "total=") : NULL;
    char *end;
    long long v = t ? strtoll(t + 6, &end, 10) : -1;
    return t && end != t + 6 && v >= 0 ? (int64_t)v : -1;
}

/* Under s_sampling: measures and decides; returns the microseconds until
   the next measurement. */
static int64_t s_measure(void)
{
    char buf[4096];
    uint64_t busy, total;
    int cpus;
    if (s_read("/proc/stat", buf, sizeof buf) <= 0 || s_parse_stat(buf, &busy, &total, &cpus)) {
        s_no_proc = true;
        atomic_store(&s_allowed, true);
        return 0;
    }
    bool first = !s_have_prev;
    int64_t spent = atomic_load(&s_spent);
    int64_t stall = s_stall_us(), at = zx__mono_us();
    if (s_have_prev && total > s_prev_total) {
        /* jiffies of every CPU summed: total / cpus is the interval */
        double dt = (double)(total - s_prev_total);
        double busy_cores = (double)(busy - s_prev_busy) / dt * cpus;
        long hz = sysconf(_SC_CLK_TCK);
        double interval_ns = dt / cpus / (double)(hz > 0 ? hz : 100) * 1e9;
        double spin_cores = interval_ns > 0 ? (double)(spent - s_prev_spent) / interval_ns : 0;
        double others = busy_cores - spin_cores;
        double spare = (double)cpus - (others > 0 ? others : 0);
        /* Leaving the spin out of the busy time is right only while the
           spinner took its core from nobody; beside one CPU-bound process
           per core it kept the spin going (B loaded). Threads that waited
           for a CPU say whether it did (see the top). */
        bool calm;
        if (stall >= 0 && s_prev_stall >= 0 && at > s_prev_at) {
            calm = (double)(stall - s_prev_stall) / (double)(at - s_prev_at) < S_STALL_MAX;
        } else {
            calm = (double)cpus - busy_cores >= S_IDLE_MIN;
        }
        atomic_store(&s_allowed, spare >= S_SPARE_MIN && calm);
    }
    if (total > s_prev_total || !s_have_prev) {
        s_prev_busy = busy;
        s_prev_total = total;
        s_prev_spent = spent;
        s_prev_stall = stall;
        s_prev_at = at;
        s_have_prev = true;
    }
    return first ? S_FIRST_MS * 1000 : S_SAMPLE_MS * 1000;
}

/* Whether the machine had an idle core lately; measures again when the last
   decision is older than S_SAMPLE_MS (one thread at a time; the others use
   the last decision). */
static bool s_idle_core(void)
{
    int64_t now = zx__mono_us();
    if (now >= atomic_load_explicit(&s_next, memory_order_relaxed) && !s_no_proc &&
        !atomic_exchange(&s_sampling, true)) {
        if (now >= atomic_load(&s_next)) {
            atomic_store(&s_next, now + s_measure());
        }
        atomic_store(&s_sampling, false);
    }
    return atomic_load_explicit(&s_allowed, memory_order_relaxed);
}

static _Thread_local int64_t s_cpu0; /* this thread's CPU ns when its spin began */

static int64_t s_thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

bool zx__spin_begin(void)
{
    if (!s_idle_core() || atomic_exchange(&s_spinning, true)) {
        return false;
    }
    s_cpu0 = s_thread_cpu_ns();
    return true;
}

void zx__spin_end(void)
{
    atomic_fetch_add(&s_spent, s_thread_cpu_ns() - s_cpu0);
    atomic_store(&s_spinning, false);
}

bool zx__spin_idle_core(void)
{
    return s_idle_core();
}
