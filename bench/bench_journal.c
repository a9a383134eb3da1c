/*  bench_journal.c - the broker's journal (broker/journal.c, built in) on
    this machine's disk: what it costs per record under each fsync policy,
    and how long replaying a journal of a million records takes (the
    journal's share of "recovery of 1M tasks"; the broker's rebuild of its
    tables from the records comes on top, measured with the broker).

      append    N records (1,000,000; --quick 20,000) of 100-byte bodies
                shaped like a SUBMIT record (session id, seq, function name,
                options, a small argument), handed to the writer every 256
                records as a broker turn would, until the last is committed:
                records/s for batch, interval:100 and none; fdatasync calls
                and records per fdatasync for batch; bytes of journal per
                record. The producer never waits for the disk, as the broker
                does not; it pauses only when 64 MiB are waiting to be
                written (the broker's backlog limit is a matter for it).
      replay    the batch policy's journal, reopened and replayed with a
                callback that reads every body: seconds with the segments'
                pages dropped from the page cache first (posix_fadvise
                DONTNEED after they were synced: a read from the disk, as
                after a reboot), and again with them cached.

    Every committed LSN and every replayed record is checked (count, LSN
    order, a checksum of the bodies): a mismatch is WRONG.

    Usage: bench_journal [--quick] [--count N] [--dir PARENT]
    (the journals go in a fresh directory under PARENT, default /var/tmp,
    removed at the end) */
#include "bench_util.h"
#include "zxb_journal.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BODY 100
#define TURN 256
#define MAX_BACKLOG (64u << 20)

static void s_body(uint8_t *b, uint64_t i)
{
    /* fixarray(6): session bin16, seq, "inc", options map, priority, arg */
    memset(b, 0, BODY);
    b[0] = 0x96;
    b[1] = 0xc4;
    b[2] = 16;
    memcpy(b + 3, "session-0123456", 16);
    b[19] = 0xcf;
    for (int k = 0; k < 8; k++) {
        b[20 + k] = (uint8_t)(i >> (56 - 8 * k));
    }
    memcpy(b + 28, "\xa3inc", 4);
    for (int k = 32; k < BODY; k++) {
        b[k] = (uint8_t)(i * 31 + (uint64_t)k);
    }
}

static uint64_t s_sum(const uint8_t *b, size_t len)
{
    uint64_t s = 0;
    for (size_t k = 0; k < len; k++) {
        s = s * 131 + b[k];
    }
    return s;
}

static void s_wait_fd(zxb_journal_t *j)
{
    struct pollfd p = {.fd = zxb_journal_fd(j), .events = POLLIN};
    poll(&p, 1, 100);
}

static zxb_journal_t *s_open(const char *dir, zxb_fsync_t policy)
{
    zxb_journal_config_t cfg = {.dir = dir, .fsync = policy, .interval_ms = 100};
    char err[512];
    zxb_journal_t *j = zxb_journal_open(&cfg, err, sizeof err);
    if (!j) {
        bu_die("%s", err);
    }
    return j;
}

typedef struct {
    uint64_t n, next, sum;
} s_check_t;

static int s_replayed(void *arg, uint8_t type, uint64_t lsn, const uint8_t *body, size_t len)
{
    s_check_t *c = arg;
    if (type != 1 || lsn != c->next || len != BODY) {
        bu_wrong("replay: record %" PRIu64 " has type %u, LSN %" PRIu64 ", %zu bytes", c->next,
                 type, lsn, len);
    }
    c->next++;
    c->n++;
    c->sum += s_sum(body, len);
    return 0;
}

/* Appends n records under policy into dir; prints its figures. Returns the
   checksum of the bodies. */
static uint64_t s_append(const char *dir, zxb_fsync_t policy, const char *name, uint64_t n)
{
    zxb_journal_t *j = s_open(dir, policy);
    char err[512];
    if (zxb_journal_replay(j, NULL, NULL, NULL, err, sizeof err) != 0) {
        bu_die("%s", err);
    }
    uint8_t body[BODY];
    uint64_t sum = 0, last = 0;
    double t0 = bu_now();
    for (uint64_t i = 1; i <= n; i++) {
        s_body(body, i);
        sum += s_sum(body, BODY);
        last = zxb_journal_append(j, 1, body, BODY);
        if (last != i) {
            bu_wrong("%s: append %" PRIu64 " got LSN %" PRIu64, name, i, last);
        }
        if (i % TURN == 0) {
            zxb_journal_flush(j);
            while (zxb_journal_backlog(j) > MAX_BACKLOG && !zxb_journal_error(j, NULL, 0)) {
                s_wait_fd(j);
                zxb_journal_committed(j);
            }
        }
    }
    zxb_journal_flush(j);
    while (zxb_journal_committed(j) < last) {
        if (zxb_journal_error(j, err, sizeof err)) {
            bu_die("%s", err);
        }
        s_wait_fd(j);
    }
    double secs = bu_now() - t0;
    zxb_journal_counters_t c;
    zxb_journal_counters(j, &c);
    if (c.records != n) {
        bu_wrong("%s: %" PRIu64 " records written of %" PRIu64, name, c.records, n);
    }
    char fig[64];
    snprintf(fig, sizeof fig, "journal.%s_rps", name);
    bu_result(fig, (double)n / secs, "records/s");
    snprintf(fig, sizeof fig, "journal.%s_syncs", name);
    bu_result(fig, (double)c.syncs, "fdatasync");
    if (policy == ZXB_FSYNC_BATCH) {
        bu_result("journal.batch_records_per_sync", c.syncs ? (double)n / c.syncs : 0, "records");
        bu_result("journal.bytes_per_record", (double)c.bytes / n, "B");
    }
    printf("# %s: %" PRIu64 " records in %.2f s, %" PRIu64 " writes, %" PRIu64
           " fdatasync, %" PRIu64 " bytes\n",
           name, n, secs, c.writes, c.syncs, c.bytes);
    zxb_journal_destroy(&j);
    return sum;
}

/* Drops the segments' pages from the page cache (they are synced). */
static void s_drop_cache(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        bu_die("%s: cannot list it", dir);
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "seg-", 4) != 0) {
            continue;
        }
        char p[4500];
        snprintf(p, sizeof p, "%.4200s/%.255s", dir, e->d_name);
        int fd = open(p, O_RDONLY);
        if (fd >= 0) {
            fdatasync(fd);
            posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
            close(fd);
        }
    }
    closedir(d);
}

static double s_replay(const char *dir, uint64_t n, uint64_t sum, const char *fig)
{
    zxb_journal_t *j = s_open(dir, ZXB_FSYNC_BATCH);
    s_check_t c = {.next = 1};
    zxb_journal_stats_t st;
    char err[512];
    double t0 = bu_now();
    if (zxb_journal_replay(j, s_replayed, &c, &st, err, sizeof err) != 0) {
        bu_wrong("replay: %s", err);
    }
    double secs = bu_now() - t0;
    if (c.n != n || st.records != n || c.sum != sum || st.torn_bytes != 0) {
        bu_wrong("replay gave %" PRIu64 " records of %" PRIu64 " (checksum %s, torn %" PRIu64 ")",
                 c.n, n, c.sum == sum ? "equal" : "differs", st.torn_bytes);
    }
    bu_result(fig, secs, "s");
    printf("# replay: %" PRIu64 " records, %" PRIu64 " bytes, %" PRIu64 " segments, %.3f s\n",
           st.records, st.bytes, st.segments, secs);
    zxb_journal_destroy(&j);
    return secs;
}

static int s_rm(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

int main(int argc, char **argv)
{
    bool quick = bu_has_flag(argc, argv, "--quick");
    uint64_t n = quick ? 20000 : 1000000;
    if (bu_opt(argc, argv, "--count")) {
        n = strtoull(bu_opt(argc, argv, "--count"), NULL, 10);
    }
    const char *parent = bu_opt(argc, argv, "--dir") ? bu_opt(argc, argv, "--dir") : "/var/tmp";
    char root[4096];
    snprintf(root, sizeof root, "%s/zxj-bench-XXXXXX", parent);
    if (!mkdtemp(root)) {
        bu_die("cannot make a directory under %s", parent);
    }
    printf("# journal: %" PRIu64 " records of %d bytes, a flush every %d, in %s\n", n, BODY, TURN,
           root);
    struct {
        zxb_fsync_t policy;
        const char *name;
    } runs[] = {
        {ZXB_FSYNC_BATCH, "batch"}, {ZXB_FSYNC_INTERVAL, "interval"}, {ZXB_FSYNC_NONE, "none"}};
    uint64_t sum = 0;
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        char dir[4200];
        snprintf(dir, sizeof dir, "%s/%s", root, runs[r].name);
        uint64_t s = s_append(dir, runs[r].policy, runs[r].name, n);
        if (r == 0) {
            sum = s;
        }
    }
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/batch", root);
    s_drop_cache(dir);
    s_replay(dir, n, sum, "journal.replay_s");
    s_replay(dir, n, sum, "journal.replay_warm_s");
    bu_result("journal.replay_records", (double)n, "records");
    nftw(root, s_rm, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}
