/*  test_journal.c - the broker's journal (broker/journal.c, compiled into
    this test) alone, on real files in a temporary directory: records
    round-trip through replay; the directory lock keeps a second broker out;
    group commit takes many batches per fdatasync (counted, with the tap
    holding the writer still while batches pile up); each fsync policy
    commits as it promises; a torn tail is cut at every byte offset of the
    last record; corruption followed by good records is an error; a
    snapshot removes the segments before it and replay starts at it, and an
    interrupted one is skipped; a full disk (a 64 KiB tmpfs in a private
    mount namespace) and a file-size limit surface through
    zxb_journal_error; the tap's bytes rebuild an identical journal through
    zxb_journal_append_raw.
*/
#include "../broker/journal.c"

#include <criterion/criterion.h>
#include <ftw.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/wait.h>

/* ---- helpers ---------------------------------------------------------------------- */

static char *s_tmpdir(void)
{
    char tmpl[] = "/tmp/zxj-test-XXXXXX";
    char *d = mkdtemp(tmpl);
    cr_assert_not_null(d);
    return strdup(d);
}

static int s_rm(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void s_rmtree(char **dir_p)
{
    nftw(*dir_p, s_rm, 16, FTW_DEPTH | FTW_PHYS);
    free(*dir_p);
    *dir_p = NULL;
}

static zxb_journal_t *s_open(const char *dir, zxb_fsync_t policy, uint64_t seg_bytes)
{
    zxb_journal_config_t cfg = {
        .dir = dir, .fsync = policy, .interval_ms = 20, .segment_bytes = seg_bytes};
    char err[256] = "";
    zxb_journal_t *j = zxb_journal_open(&cfg, err, sizeof err);
    cr_assert_not_null(j, "open: %s", err);
    return j;
}

typedef struct {
    size_t n;
    uint8_t types[4096];
    uint64_t lsns[4096];
    char bodies[4096][64];
    size_t lens[4096];
} s_seen_t;

static int s_collect(void *arg, uint8_t type, uint64_t lsn, const uint8_t *body, size_t len)
{
    s_seen_t *s = arg;
    cr_assert_lt(s->n, 4096);
    cr_assert_lt(len, sizeof s->bodies[0]);
    s->types[s->n] = type;
    s->lsns[s->n] = lsn;
    memcpy(s->bodies[s->n], body, len);
    s->bodies[s->n][len] = 0;
    s->lens[s->n] = len;
    s->n++;
    return 0;
}

/* Replays dir into a fresh s_seen_t; the journal stays open in *j_p. */
static s_seen_t *s_replay(const char *dir, zxb_journal_t **j_p, zxb_journal_stats_t *st)
{
    s_seen_t *seen = calloc(1, sizeof *seen);
    *j_p = s_open(dir, ZXB_FSYNC_BATCH, 0);
    char err[256] = "";
    int rc = zxb_journal_replay(*j_p, s_collect, seen, st, err, sizeof err);
    cr_assert_eq(rc, 0, "replay: %s", err);
    return seen;
}

/* Waits (on the eventfd, as the broker would) until lsn is committed or
   the journal failed; false after 20 s. */
static bool s_wait_committed(zxb_journal_t *j, uint64_t lsn)
{
    for (int i = 0; i < 200; i++) {
        if (zxb_journal_committed(j) >= lsn || zxb_journal_error(j, NULL, 0)) {
            return zxb_journal_committed(j) >= lsn;
        }
        struct pollfd p = {.fd = zxb_journal_fd(j), .events = POLLIN};
        poll(&p, 1, 100);
    }
    return false;
}

static uint64_t s_append_str(zxb_journal_t *j, uint8_t type, const char *fmt, int i)
{
    char body[64];
    int n = snprintf(body, sizeof body, fmt, i);
    return zxb_journal_append(j, type, body, (size_t)n);
}

/* The segment files of dir, sorted; returns how many (names in out). */
static size_t s_segments(const char *dir, char out[][64], size_t max)
{
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "seg-", 4) == 0 && n < max) {
            snprintf(out[n++], 64, "%.63s", e->d_name);
        }
    }
    closedir(d);
    qsort(out, n, 64, (int (*)(const void *, const void *))strcmp);
    return n;
}

static void s_path(char *buf, size_t len, const char *dir, const char *name)
{
    snprintf(buf, len, "%s/%s", dir, name);
}

static uint8_t *s_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(*len ? *len : 1);
    cr_assert_eq(fread(buf, 1, *len, f), *len);
    fclose(f);
    return buf;
}

static void s_write_file(const char *path, const uint8_t *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s", path);
    cr_assert_eq(fwrite(buf, 1, len, f), len);
    fclose(f);
}

/* ---- round trip, lock ------------------------------------------------------------------ */

Test(journal, records_round_trip_through_replay_across_segments)
{
    char *dir = s_tmpdir();
    zxb_journal_t *j = s_open(dir, ZXB_FSYNC_BATCH, 512);
    char err[256];
    zxb_journal_stats_t st;
    cr_assert_eq(zxb_journal_replay(j, NULL, NULL, &st, err, sizeof err), 0, "%s", err);
    cr_assert_eq(st.records, 0);
    uint64_t last = 0;
    for (int i = 1; i <= 300; i++) {
        last = s_append_str(j, (uint8_t)(1 + i % 15), "body %d", i);
        cr_assert_eq(last, (uint64_t)i, "LSNs count records from 1");
        if (i % 7 == 0) {
            zxb_journal_flush(j);
        }
    }
    cr_assert_eq(zxb_journal_append(j, 3, NULL, 0), 301, "an empty body is a record too");
    zxb_journal_flush(j);
    cr_assert(s_wait_committed(j, 301));
    cr_assert_eq(zxb_journal_backlog(j), 0);
    zxb_journal_counters_t c;
    zxb_journal_counters(j, &c);
    cr_assert_eq(c.records, 301);
    zxb_journal_destroy(&j);
    cr_assert_null(j);

    char segs[64][64];
    cr_assert_gt(s_segments(dir, segs, 64), 2, "512-byte segments roll over");

    s_seen_t *seen = s_replay(dir, &j, &st);
    cr_assert_eq(seen->n, 301);
    cr_assert_eq(st.records, 301);
    cr_assert_eq(st.torn_bytes, 0);
    cr_assert_gt(st.segments, 2);
    for (int i = 1; i <= 300; i++) {
        char want[64];
        snprintf(want, sizeof want, "body %d", i);
        cr_assert_eq(seen->lsns[i - 1], (uint64_t)i);
        cr_assert_eq(seen->types[i - 1], 1 + i % 15);
        cr_assert_str_eq(seen->bodies[i - 1], want);
    }
    cr_assert_eq(seen->lens[300], 0);
    cr_assert_eq(zxb_journal_committed(j), 301, "what was replayed is committed");
    cr_assert_eq(zxb_journal_append(j, 1, "x", 1), 302, "appends go on after the last LSN");
    zxb_journal_destroy(&j);
    free(seen);
    s_rmtree(&dir);
}

Test(journal, a_second_broker_on_the_same_directory_is_refused)
{
    char *dir = s_tmpdir();
    zxb_journal_t *j = s_open(dir, ZXB_FSYNC_BATCH, 0);
    zxb_journal_config_t cfg = {.dir = dir};
    char err[256] = "";
    zxb_journal_t *k = zxb_journal_open(&cfg, err, sizeof err);
    cr_assert_null(k);
    cr_assert(strstr(err, "is in use by another broker"), "%s", err);
    zxb_journal_destroy(&j);
    k = zxb_journal_open(&cfg, err, sizeof err);
    cr_assert_not_null(k, "the lock goes with the first: %s", err);
    zxb_journal_destroy(&k);
    s_rmtree(&dir);
}

/* ---- group commit and the policies ----------------------------------------------------------- */

/* The tap holds the writer in its first write until the test lets it go. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool entered, released;
    int calls;
} s_gate_t;

static void s_gate_tap(void *arg, const uint8_t *bytes, size_t len, uint64_t first, uint64_t last)
{
    s_gate_t *g = arg;
    pthread_mutex_lock(&g->mu);
    g->calls++;
    g->entered = true;
    pthread_cond_broadcast(&g->cv);
    while (!g->released) {
        pthread_cond_wait(&g->cv, &g->mu);
    }
    pthread_mutex_unlock(&g->mu);
}

Test(journal, group_commit_takes_every_waiting_batch_in_one_fdatasync)
{
    char *dir = s_tmpdir();
    zxb_journal_t *j = s_open(dir, ZXB_FSYNC_BATCH, 0);
    char err[256];
    cr_assert_eq(zxb_journal_replay(j, NULL, NULL, NULL, err, sizeof err), 0);
    s_gate_t g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    zxb_journal_set_tap(j, s_gate_tap, &g);
    s_append_str(j, 1, "batch %d", 0);
    zxb_journal_flush(j);
    pthread_mutex_lock(&g.mu);
    while (!g.entered) {
        pthread_cond_wait(&g.cv, &g.mu);
    }
    pthread_mutex_unlock(&g.mu);
    /* the writer is inside its first write: 999 broker turns pile up */
    const int batches = 1000;
    uint64_t last = 0;
    for (int b = 1; b < batches; b++) {
        for (int r = 0; r < 3; r++) {
            last = s_append_str(j, 1, "record %d", b * 3 + r);
        }
        zxb_journal_flush(j);
    }
    cr_assert_eq(zxb_journal_committed(j), 0, "nothing committed before its fdatasync");
    cr_assert_gt(zxb_journal_backlog(j), 0);
    pthread_mutex_lock(&g.mu);
    g.released = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    cr_assert(s_wait_committed(j, last));
    zxb_journal_counters_t c;
    zxb_journal_counters(j, &c);
    cr_assert_eq(c.records, last);
    cr_assert_eq(c.writes, 2, "the first batch, then the 999 that waited: %" PRIu64, c.writes);
    cr_assert_eq(c.syncs, 2, "one fdatasync per write, not per batch: %" PRIu64, c.syncs);
    cr_assert_eq(g.calls, batches, "the tap sees every batch");
    zxb_journal_set_tap(j, NULL, NULL);
    zxb_journal_destroy(&j);
    s_rmtree(&dir);
}

Test(journal, interval_policy_commits_at_write_and_syncs_when_idle)
{
    char *dir = s_tmpdir();
    zxb_journal_t *j = s_open(dir, ZXB_FSYNC_INTERVAL, 0);
    char err[256];
    cr_assert_eq(zxb_journal_replay(j, NULL, NULL, NULL, err, sizeof err), 0);
    uint64_t last = 0;
    for (int b = 0; b < 50; b++) {
        last = s_append_str(j, 2, "r %d", b);
        zxb_journal_flush(j);
    }
    cr_assert(s_wait_committed(j, last));
    /* idle now: within the interval (20 ms) the writer syncs what it wrote */
    zxb_journal_counters_t c = {0};
    for (int i = 0; i < 200 && c.syncs == 0; i++) {
        zxb_journal_counters(j, &c);
        if (c.syncs == 0) {
            usleep(50 * 1000); /* polling a condition, bounded: 10 s */
        }
    }
    cr_assert_geq(c.syncs, 1, "an idle writer syncs when the interval is up");
    cr_assert_lt(c.syncs, c.writes + 1);
    zxb_journal_destroy(&j);
    s_rmtree(&dir);
}

Test(journal, none_policy_never_syncs_until_close)
{
    char *dir = s_tmpdir();
    zxb_journal_t *j = s_open(dir, ZXB_FSYNC_NONE, 0);
    char err[256];
    cr_assert_eq(zxb_journal_replay(j, NULL, NULL, NULL, err, sizeof err), 0);
    uint64_t last = 0;
    for (int b = 0; b < 100; b++) {
        last = s_append_str(j, 2, "r %d", b);
        zxb_journal_flush(j);
    }
    cr_assert(s_wait_committed(j, last));
    zxb_journal_counters_t c;
    zxb_journal_counters(j, &c);
    cr_assert_eq(c.syncs, 0);
    cr_assert_eq(c.records, 100);
    zxb_journal_destroy(&j);
    zxb_journal_stats_t st;
    s_seen_t *seen = s_replay(dir, &j, &st);
    cr_assert_eq(seen->n, 100, "destroy wrote and synced everything");
    zxb_journal_destroy(&j);
    free(seen);
    s_rmtree(&dir);
}

/* ---- torn tail, corruption ------------------------------------------------------------------ */

/* Writes 10 records into a fresh journal in dir; returns the segment's
   path and the offset where the last record starts. */
static size_t s_ten(const char *dir, char *path, size_t pathlen)
{
    zxb_journal_t *j = s_open(dir, ZXB_FSYNC_BATCH, 0);
    char err[256];
    cr_assert_eq(zxb_journal_replay(j, NULL, NULL, NULL, err, sizeof err), 0);
    for (int i = 1; i <= 10; i++) {
        s_append_str(j, 1, "the record number %d", i);
    }
    zxb_journal_flush(j);
    zxb_journal_destroy(&j);
    char segs[4][64];
    cr_assert_eq(s_segments(dir, segs, 4), 1);
    s_path(path, pathlen, dir, segs[0]);
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    return (size_t)sb.st_size - (S_REC_HDR + strlen("the record number 10"));
}

Test(journal, a_tail_torn_at_every_byte_of_the_last_record_is_cut_off)
{
    char *dir = s_tmpdir();
    char path[512];
    size_t start = s_ten(dir, path, sizeof path);
    size_t full;
    uint8_t *orig = s_read_file(path, &full);
    cr_assert_gt(full, start);
    for (size_t cut = start; cut < full; cut++) {
        s_write_file(path, orig, cut);
        zxb_journal_t *j;
        zxb_journal_stats_t st;
        s_seen_t *seen = s_replay(dir, &j, &st);
        cr_assert_eq(seen->n, 9, "cut at %zu: all but the last", cut);
        cr_assert_str_eq(seen->bodies[8], "the record number 9");
        cr_assert_eq(st.torn_bytes, cut - start, "cut at %zu", cut);
        struct stat sb;
        cr_assert_eq(stat(path, &sb), 0);
        cr_assert_eq((size_t)sb.st_size, start, "the torn bytes are gone from the file");
        cr_assert_eq(zxb_journal_append(j, 1, "again", 5), 10, "LSN 10 is given again");
        zxb_journal_destroy(&j);
        free(seen);
        /* the next round starts from the original single segment */
        char segs[4][64];
        size_t n = s_segments(dir, segs, 4);
        for (size_t i = 0; i < n; i++) {
            char p[600];
            s_path(p, sizeof p, dir, segs[i]);
            unlink(p);
        }
    }
    /* the same with a torn header: a segment with no whole record is removed */
    s_write_file(path, orig, 20);
    zxb_journal_t *j;
    zxb_journal_stats_t st;
    s_seen_t *seen = s_replay(dir, &j, &st);
    cr_assert_eq(seen->n, 0);
    cr_assert_eq(st.torn_bytes, 20);
    cr_assert_neq(access(path, F_OK), 0);
    zxb_journal_destroy(&j);
    free(seen);
    free(orig);
    s_rmtree(&dir);
}

Test(journal, corruption_followed_by_good_records_is_an_error)
{
    char *dir = s_tmpdir();
    char path[512];
    size_t last_start = s_ten(dir, path, sizeof path);
    size_t full;
    uint8_t *orig = s_read_file(path, &full);
    /* a byte of the 5th record's body */
    size_t rec5 = S_HDR_LEN;
    for (int i = 1; i < 5; i++) {
        rec5 += S_REC_HDR + s_get32(orig + rec5);
    }
    uint8_t *bad = malloc(full);
    memcpy(bad, orig, full);
    bad[rec5 + S_REC_HDR + 3] ^= 0x20;
    s_write_file(path, bad, full);
    zxb_journal_t *j = s_open(dir, ZXB_FSYNC_BATCH, 0);
    char err[256] = "";
    s_seen_t seen = {0};
    cr_assert_eq(zxb_journal_replay(j, s_collect, &seen, NULL, err, sizeof err), -1);
    cr_assert(strstr(err, "corrupt record"), "%s", err);
    cr_assert(strstr(err, "LSN 5"), "%s", err);
    cr_assert_eq(seen.n, 0, "nothing is replayed from a corrupt journal");
    zxb_journal_destroy(&j);
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    cr_assert_eq((size_t)sb.st_size, full, "an error truncates nothing");

    /* a bad length in the middle too */
    memcpy(bad, orig, full);
    s_put32(bad + rec5, 0x7fffffff);
    s_write_file(path, bad, full);
    j = s_open(dir, ZXB_FSYNC_BATCH, 0);
    cr_assert_eq(zxb_journal_replay(j, NULL, NULL, NULL, err, sizeof err), -1);
    zxb_journal_destroy(&j);

    /* the same flip in the last record is a torn tail, not an error */
    memcpy(bad, orig, full);
    bad[last_start + S_REC_HDR + 3] ^= 0x20;
    s_write_file(path, bad, full);
    zxb_journal_stats_t st;
    s_seen_t *s2 = s_replay(dir, &j, &st);
    cr_assert_eq(s2->n, 9);
    cr_assert_eq(st.torn_bytes, full - last_start);
    zxb_journal_destroy(&j);
    free(s2);
    free(bad);
    free(orig);
    s_rmtree(&dir);
}

Test(journal, a_missing_segment_is_an_error)
{
    char *dir = s_tmpdir();
    zxb_journal_t *j = s_open(dir, ZXB_FSYNC_BATCH, 256);
    char err[256];
    cr_assert_eq(zxb_journal_replay(j, NULL, NULL, NULL, err, sizeof err), 0);
    for (int i = 0; i < 60; i++) {
        s_append_str(j, 1, "record %d", i);
        zxb_journal_flush(j);
    }
    zxb_journal_destroy(&j);
    char segs[64][64];
    size_t n = s_segments(dir, segs, 64);
    cr_assert_geq(n, 3);
    char p[600];
    s_path(p, sizeof p, dir, segs[1]);
    cr_assert_eq(unlink(p), 0);
    j = s_open(dir, ZXB_FSYNC_BATCH, 0);
    cr_assert_eq(zxb_journal_replay(j, NULL, NULL, NULL, err, sizeof err), -1);
    cr_assert(strstr(err, "a segment is missing"), "%s", err);
    zxb_journal_destroy(&j);
    s_rmtree(&dir);
}

/* ---- snapshots --------------------------------------------------------------------------- */

Test(journal, a_snapshot_removes_older_segments_and_replay_starts_at_it)
{
    char *dir = s_tmpdir();
    zxb_journal_t *j = s_open(dir, ZXB_FSYNC_BATCH, 300);
    char err[256];
    cr_assert_eq(zxb_journal_replay(j, NULL, NULL, NULL, err, sizeof err), 0);
    for (int i = 0; i < 100; i++) {
        s_append_str(j, 1, "old %d", i);
        zxb_journal_flush(j);
    }
    cr_assert_gt(zxb_journal_bytes_since_snapshot(j), 100 * S_REC_HDR);
    zxb_journal_snapshot_begin(j);
    for (int i = 0; i < 40; i++) { /* bigger than a segment: no rollover inside */
        s_append_str(j, 4, "live %d", i);
    }
    zxb_journal_snapshot_end(j);
    uint64_t last = s_append_str(j, 5, "after %d", 1);
    zxb_journal_flush(j);
    cr_assert_lt(zxb_journal_bytes_since_snapshot(j), 45 * (S_REC_HDR + 10));
    last = s_append_str(j, 5, "after %d", 2);
    zxb_journal_flush(j);
    cr_assert(s_wait_committed(j, last));
    zxb_journal_destroy(&j); /* joins the writer: the removal is done */
    char segs[64][64];
    size_t n = s_segments(dir, segs, 64);
    cr_assert_leq(n, 2, "the snapshot's segment and the one after it are left, %zu are", n);
    char want[64];
    s_seg_name(want, sizeof want, 101);
    cr_assert_str_eq(segs[0], want, "the segments before the snapshot are gone");

    zxb_journal_stats_t st;
    s_seen_t *seen = s_replay(dir, &j, &st);
    cr_assert_eq(seen->n, 42);
    cr_assert_str_eq(seen->bodies[0], "live 0");
    cr_assert_eq(seen->lsns[0], 102, "SNAP_BEGIN (101) is the module's, not replayed");
    cr_assert_str_eq(seen->bodies[39], "live 39");
    cr_assert_str_eq(seen->bodies[40], "after 1");
    cr_assert_eq(seen->lsns[40], 143);
    cr_assert_str_eq(seen->bodies[41], "after 2");
    zxb_journal_destroy(&j);
    free(seen);
    s_rmtree(&dir);
}

Test(journal, an_interrupted_snapshot_is_skipped)
{
    char *dir = s_tmpdir();
    zxb_journal_t *j = s_open(dir, ZXB_FSYNC_BATCH, 0);
    char err[256];
    cr_assert_eq(zxb_journal_replay(j, NULL, NULL, NULL, err, sizeof err), 0);
    for (int i = 1; i <= 5; i++) {
        s_append_str(j, 1, "task %d", i);
    }
    zxb_journal_flush(j);
    zxb_journal_snapshot_begin(j);
    for (int i = 1; i <= 5; i++) {
        s_append_str(j, 1, "copy %d", i);
    }
    zxb_journal_flush(j);
    /* the broker dies here: no SNAP_END */
    zxb_journal_destroy(&j);
    char segs[8][64];
    cr_assert_eq(s_segments(dir, segs, 8), 2);
    zxb_journal_stats_t st;
    s_seen_t *seen = s_replay(dir, &j, &st);
    cr_assert_eq(seen->n, 5, "the originals only, no copies: %zu", seen->n);
    cr_assert_str_eq(seen->bodies[4], "task 5");
    cr_assert_eq(zxb_journal_append(j, 1, "x", 1), 12, "LSNs go on after the copies");
    zxb_journal_destroy(&j);
    /* and a complete snapshot later supersedes both segments */
    free(seen);
    seen = s_replay(dir, &j, &st);
    cr_assert_eq(seen->n, 6);
    zxb_journal_snapshot_begin(j);
    s_append_str(j, 1, "only %d", 1);
    zxb_journal_snapshot_end(j);
    zxb_journal_flush(j);
    zxb_journal_destroy(&j);
    free(seen);
    seen = s_replay(dir, &j, &st);
    cr_assert_eq(seen->n, 1);
    cr_assert_str_eq(seen->bodies[0], "only 1");
    cr_assert_eq(st.segments, 1);
    zxb_journal_destroy(&j);
    free(seen);
    s_rmtree(&dir);
}

/* ---- disk full ------------------------------------------------------------------------------ */

/* Appends 1 KiB records, a batch at a time, until the journal fails;
   returns the last LSN committed. */
static uint64_t s_fill(zxb_journal_t *j, int want_errno, const char *want_msg)
{
    char body[1024];
    memset(body, 'x', sizeof body);
    uint64_t last = 0;
    for (int b = 0; b < 1000 && !zxb_journal_error(j, NULL, 0); b++) {
        for (int r = 0; r < 4; r++) {
            uint64_t l = zxb_journal_append(j, 1, body, sizeof body);
            last = l ? l : last;
        }
        zxb_journal_flush(j);
        s_wait_committed(j, last);
    }
    char msg[512] = "";
    int e = zxb_journal_error(j, msg, sizeof msg);
    cr_assert_eq(e, want_errno, "the error surfaces: %d (%s)", e, msg);
    cr_assert(strstr(msg, want_msg), "%s", msg);
    uint64_t committed = zxb_journal_committed(j);
    cr_assert_lt(committed, last, "what did not fit is not committed");
    cr_assert_eq(zxb_journal_append(j, 1, "y", 1), 0, "a failed journal takes nothing more");
    return committed;
}

Test(journal, a_full_disk_fails_the_journal_and_loses_nothing_committed)
{
    if (geteuid() != 0) {
        cr_skip_test("needs root for a tmpfs in a private mount namespace");
    }
    /* criterion runs each test in a process of its own: the namespace and
       the mount go with it */
    if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
        cr_skip_test("no private mount namespace here: %s", strerror(errno));
    }
    char *dir = s_tmpdir();
    cr_assert_eq(mount("zxj", dir, "tmpfs", 0, "size=64k"), 0, "%s", strerror(errno));
    char jdir[600];
    snprintf(jdir, sizeof jdir, "%s/j", dir);
    zxb_journal_t *j = s_open(jdir, ZXB_FSYNC_BATCH, 0);
    char err[256];
    cr_assert_eq(zxb_journal_replay(j, NULL, NULL, NULL, err, sizeof err), 0);
    uint64_t committed = s_fill(j, ENOSPC, "No space left on device");
    zxb_journal_destroy(&j);
    zxb_journal_stats_t st;
    s_seen_t seen_c = {0};
    j = s_open(jdir, ZXB_FSYNC_BATCH, 0);
    cr_assert_eq(zxb_journal_replay(j, NULL, &seen_c, &st, err, sizeof err), 0, "%s", err);
    cr_assert_geq(st.records, committed, "every committed record is there");
    zxb_journal_destroy(&j);
    umount(dir);
    s_rmtree(&dir);
}

Test(journal, a_file_size_limit_fails_the_journal_with_efbig)
{
    char *dir = s_tmpdir();
    zxb_journal_t *j = s_open(dir, ZXB_FSYNC_BATCH, 0);
    char err[256];
    cr_assert_eq(zxb_journal_replay(j, NULL, NULL, NULL, err, sizeof err), 0);
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {.rlim_cur = 48 * 1024, .rlim_max = RLIM_INFINITY};
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    uint64_t committed = s_fill(j, EFBIG, "File too large");
    zxb_journal_destroy(&j);
    rl.rlim_cur = RLIM_INFINITY;
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    zxb_journal_stats_t st;
    j = s_open(dir, ZXB_FSYNC_BATCH, 0);
    cr_assert_eq(zxb_journal_replay(j, NULL, NULL, &st, err, sizeof err), 0, "%s", err);
    cr_assert_geq(st.records, committed);
    cr_assert_eq(st.torn_bytes, 0, "the partial write was cut back");
    zxb_journal_destroy(&j);
    s_rmtree(&dir);
}

/* ---- the tap and append_raw ---------------------------------------------------------------------
 */

typedef struct {
    uint8_t *buf;
    size_t len;
    uint64_t first, last;
    int calls;
    bool gap; /* a range that did not follow on (checked on the test's thread) */
} s_copy_t;

static void s_copy_tap(void *arg, const uint8_t *bytes, size_t len, uint64_t first, uint64_t last)
{
    s_copy_t *c = arg;
    if (c->calls++ == 0) {
        c->first = first;
    } else if (first != c->last + 1) {
        c->gap = true;
    }
    c->last = last;
    c->buf = realloc(c->buf, c->len + len);
    memcpy(c->buf + c->len, bytes, len);
    c->len += len;
}

Test(journal, the_taps_bytes_rebuild_the_same_journal_through_append_raw)
{
    char *a = s_tmpdir(), *b = s_tmpdir();
    zxb_journal_t *ja = s_open(a, ZXB_FSYNC_BATCH, 0);
    char err[256] = "";
    cr_assert_eq(zxb_journal_replay(ja, NULL, NULL, NULL, err, sizeof err), 0);
    s_copy_t copy = {0};
    zxb_journal_set_tap(ja, s_copy_tap, &copy);
    uint64_t last = 0;
    for (int i = 1; i <= 20; i++) {
        last = s_append_str(ja, 2, "rec %d", i);
        if (i % 5 == 0) {
            zxb_journal_flush(ja);
        }
    }
    zxb_journal_snapshot_begin(ja);
    s_append_str(ja, 3, "snap %d", 1);
    zxb_journal_snapshot_end(ja);
    last = s_append_str(ja, 2, "rec %d", 21);
    zxb_journal_flush(ja);
    cr_assert(s_wait_committed(ja, last));
    zxb_journal_set_tap(ja, NULL, NULL);
    uint8_t lineage[16];
    zxb_journal_lineage(ja, lineage);
    zxb_journal_destroy(&ja);
    cr_assert_eq(copy.first, 1);
    cr_assert_eq(copy.last, last);
    cr_assert_not(copy.gap, "the tap's ranges follow on");

    zxb_journal_t *jb = s_open(b, ZXB_FSYNC_BATCH, 0);
    cr_assert_eq(zxb_journal_replay(jb, NULL, NULL, NULL, err, sizeof err), 0);
    /* a bad crc is refused whole */
    copy.buf[S_REC_HDR] ^= 1;
    cr_assert_eq(zxb_journal_append_raw(jb, lineage, copy.buf, copy.len, err, sizeof err), 0);
    cr_assert(strstr(err, "not whole valid records"), "%s", err);
    copy.buf[S_REC_HDR] ^= 1;
    /* a piece cut inside a record is refused */
    cr_assert_eq(zxb_journal_append_raw(jb, lineage, copy.buf, copy.len - 1, err, sizeof err), 0);
    cr_assert_eq(zxb_journal_append_raw(jb, lineage, copy.buf, copy.len, err, sizeof err), last,
                 "%s", err);
    uint8_t other[16] = {1};
    cr_assert_eq(zxb_journal_append_raw(jb, other, copy.buf, copy.len, err, sizeof err), 0);
    cr_assert(strstr(err, "another lineage"), "%s", err);
    /* the same records again do not follow on */
    size_t first_len = S_REC_HDR + s_get32(copy.buf);
    cr_assert_eq(zxb_journal_append_raw(jb, lineage, copy.buf, first_len, err, sizeof err), 0);
    cr_assert(strstr(err, "was expected"), "%s", err);
    zxb_journal_flush(jb);
    cr_assert(s_wait_committed(jb, last));
    uint8_t lb[16];
    zxb_journal_lineage(jb, lb);
    cr_assert_arr_eq(lb, lineage, 16, "the copy adopted the lineage");
    zxb_journal_destroy(&jb);

    zxb_journal_t *ra, *rb;
    zxb_journal_stats_t sa, sb;
    s_seen_t *va = s_replay(a, &ra, &sa), *vb = s_replay(b, &rb, &sb);
    cr_assert_eq(va->n, 2, "the snapshot's record and the one after");
    cr_assert_eq(vb->n, va->n);
    for (size_t i = 0; i < va->n; i++) {
        cr_assert_eq(vb->lsns[i], va->lsns[i]);
        cr_assert_str_eq(vb->bodies[i], va->bodies[i]);
    }
    char segs[8][64];
    cr_assert_eq(s_segments(b, segs, 8), 1, "the copy compacted too");
    zxb_journal_destroy(&ra);
    zxb_journal_destroy(&rb);
    free(va);
    free(vb);
    free(copy.buf);
    s_rmtree(&a);
    s_rmtree(&b);
}
