/*  stress_journal.c - the journal's threads (broker/journal.c and
    broker/standby.c, compiled in) under load, for ThreadSanitizer: a
    plain program rather than a criterion test because criterion cannot
    start under it (Snaipe/Criterion#274). Exit status 0: pass.

    A primary and a backup (standby links over inproc, real journals in
    temporary directories, real time) settle; the primary appends 50,000
    records in turns of 64 while both are pumped, as the broker's loop
    would, so the writer threads, the taps and the forwarding run at once;
    a snapshot in the middle compacts both journals. Checks: the primary's
    commit and the pair's durable LSN reach the last record, and the
    backup's journal replays every record from the snapshot on, in order. */
#include "../broker/journal.c"
#include "../broker/standby.c"

#include <ftw.h>
#include <poll.h>

#define RECORDS 50000
#define TURN 64

#define CHECK(cond, what)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "stress_journal: %s failed at %s:%d\n", what, __FILE__, __LINE__);     \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

typedef struct {
    zxb_journal_t *j;
    zxb_standby_t *sb;
    char dir[64];
    uint64_t live; /* records 1..live */
} s_node_t;

static void s_snapshot(void *arg)
{
    s_node_t *n = arg;
    zxb_journal_snapshot_begin(n->j);
    for (uint64_t i = 1; i <= n->live; i++) {
        char body[32];
        int len = snprintf(body, sizeof body, "r%" PRIu64, i);
        zxb_journal_append(n->j, 1, body, (size_t)len);
    }
    zxb_journal_snapshot_end(n->j);
    zxb_journal_flush(n->j);
}

static void s_open(s_node_t *n, bool primary, const char *ep)
{
    snprintf(n->dir, sizeof n->dir, "/tmp/zxj-stress-XXXXXX");
    CHECK(mkdtemp(n->dir), "mkdtemp");
    zxb_journal_config_t cfg = {.dir = n->dir, .fsync = ZXB_FSYNC_BATCH};
    char err[256];
    n->j = zxb_journal_open(&cfg, err, sizeof err);
    CHECK(n->j, err);
    CHECK(zxb_journal_replay(n->j, NULL, NULL, NULL, err, sizeof err) == 0, err);
    zxb_standby_config_t sc = {.primary = primary,
                               .peer = ep,
                               .heartbeat_ms = 100,
                               .liveness = 50, /* 5 s: a loaded machine loses no peer */
                               .journal = n->j,
                               .snapshot = s_snapshot,
                               .arg = n};
    n->sb = zxb_standby_new(&sc, zclock_mono(), err, sizeof err);
    CHECK(n->sb, err);
}

static void s_pump(s_node_t *n)
{
    int64_t now = zclock_mono();
    zxb_standby_handle(n->sb, now);
    zxb_standby_tick(n->sb, now);
    zxb_standby_committed(n->sb, zxb_journal_committed(n->j), now);
}

static void s_wait(s_node_t *p, s_node_t *b)
{
    struct pollfd fds[6];
    s_node_t *nodes[2] = {p, b};
    int k = 0;
    for (int i = 0; i < 2; i++) {
        int f[2];
        zxb_standby_fds(nodes[i]->sb, f);
        fds[k++] = (struct pollfd){.fd = f[0], .events = POLLIN};
        fds[k++] = (struct pollfd){.fd = f[1], .events = POLLIN};
        fds[k++] = (struct pollfd){.fd = zxb_journal_fd(nodes[i]->j), .events = POLLIN};
    }
    poll(fds, 6, 5);
}

static int s_rm(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

typedef struct {
    uint64_t n, next, first;
} s_order_t;

static int s_in_order(void *arg, uint8_t type, uint64_t lsn, const uint8_t *body, size_t len)
{
    s_order_t *o = arg;
    if (o->n == 0) {
        o->first = lsn;
    } else if (lsn < o->next || lsn > o->next + 1) {
        return -1; /* in order; at most a SNAP_END (the module's, not given) between */
    }
    o->next = lsn + 1;
    o->n++;
    return 0;
}

int main(void)
{
    zsys_init();
    zsys_set_logstream(NULL);
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://zxj-stress-%d", (int)getpid());
    s_node_t p = {0}, b = {0};
    s_open(&p, true, ep);
    s_open(&b, false, ep);
    int64_t deadline = zclock_mono() + 120000;
    while (!(zxb_standby_state(p.sb) == ZXB_SB_ACTIVE && zxb_standby_eligible(b.sb))) {
        CHECK(zclock_mono() < deadline, "the pair settles within 120 s");
        s_pump(&p);
        s_pump(&b);
        s_wait(&p, &b);
    }
    uint64_t last = 0;
    for (uint64_t i = 1; i <= RECORDS; i++) {
        char body[32];
        int len = snprintf(body, sizeof body, "r%" PRIu64, i);
        last = zxb_journal_append(p.j, 1, body, (size_t)len);
        p.live = i;
        if (i % TURN == 0) {
            zxb_journal_flush(p.j);
            s_pump(&p);
            s_pump(&b);
        }
        if (i == RECORDS / 2) {
            s_snapshot(&p);
            last = zxb_journal_last(p.j);
        }
    }
    zxb_journal_flush(p.j);
    while (zxb_standby_durable(p.sb, zxb_journal_committed(p.j)) < last) {
        CHECK(zclock_mono() < deadline, "every record durable in the pair within 120 s");
        CHECK(zxb_standby_state(p.sb) == ZXB_SB_ACTIVE, "the primary stays active");
        s_pump(&p);
        s_pump(&b);
        s_wait(&p, &b);
    }
    zxb_standby_destroy(&b.sb);
    zxb_standby_destroy(&p.sb);
    zxb_journal_destroy(&b.j);
    zxb_journal_destroy(&p.j);

    zxb_journal_config_t cfg = {.dir = b.dir};
    char err[256];
    b.j = zxb_journal_open(&cfg, err, sizeof err);
    CHECK(b.j, err);
    s_order_t o = {0};
    zxb_journal_stats_t st;
    CHECK(zxb_journal_replay(b.j, s_in_order, &o, &st, err, sizeof err) == 0, err);
    CHECK(o.n == RECORDS, "the backup replays the snapshot's records and all after");
    CHECK(o.next == last + 1, "the backup's last record is the primary's");
    zxb_journal_destroy(&b.j);
    nftw(p.dir, s_rm, 16, FTW_DEPTH | FTW_PHYS);
    nftw(b.dir, s_rm, 16, FTW_DEPTH | FTW_PHYS);
    printf("stress_journal: %" PRIu64 " records, the backup replayed %" PRIu64 " (LSN %" PRIu64
           "..%" PRIu64 ")\n",
           (uint64_t)RECORDS, o.n, o.first, o.next - 1);
    return 0;
}
