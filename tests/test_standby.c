/*  test_standby.c - the standby broker's mechanism (broker/standby.c, with
    broker/journal.c, compiled into this test).

    The state machine alone, on a fake clock: a primary alone serves once
    the peer's liveness has passed and a client comes, a backup alone never;
    a pair settles as primary active, backup passive; a passive takes over
    only when its peer has been silent for its liveness AND a client request
    reaches it, and only with a complete copy; a partition between the two
    while clients reach the active changes nothing; dual actives end with
    the backup stepping down; restarts beside a passive.

    The peer link, two standbys in this process over inproc with real
    journals in temporary directories and the fake clock driving heartbeats
    and expiry: the backup's copy starts from the primary's snapshot and
    becomes complete; the primary's acknowledgements then wait for the
    backup's; the primary dies; the backup takes over at the first client
    request after the liveness, and its journal replays everything the
    primary acknowledged.
*/
#include "../broker/journal.c"
#include "../broker/standby.c"

#include <criterion/criterion.h>
#include <ftw.h>
#include <poll.h>

#define LIVE 300 /* heartbeat 100 ms x liveness 3 */

/* ---- the state machine ------------------------------------------------------------------ */

Test(standby_fsm, a_primary_alone_serves_after_the_liveness_and_a_backup_alone_never)
{
    zxb_sb_t p, b;
    zxb_sb_init(&p, true, LIVE, 1000);
    zxb_sb_init(&b, false, LIVE, 1000);
    cr_assert_eq(p.state, ZXB_SB_PRIMARY);
    cr_assert_eq(zxb_sb_event(&p, ZXB_SB_CLIENT_REQUEST, 1100), ZXB_SB_REJECT,
                 "a backup may be active somewhere: wait out its liveness");
    cr_assert_eq(p.state, ZXB_SB_PRIMARY);
    cr_assert_eq(zxb_sb_event(&p, ZXB_SB_CLIENT_REQUEST, 1000 + LIVE), ZXB_SB_OK);
    cr_assert_eq(p.state, ZXB_SB_ACTIVE);
    cr_assert_eq(zxb_sb_event(&b, ZXB_SB_CLIENT_REQUEST, 1000 + 100 * LIVE), ZXB_SB_REJECT);
    cr_assert_eq(b.state, ZXB_SB_BACKUP, "a backup that starts alone waits for its primary");
}

Test(standby_fsm, a_pair_settles_primary_active_backup_passive)
{
    zxb_sb_t p, b;
    zxb_sb_init(&p, true, LIVE, 0);
    zxb_sb_init(&b, false, LIVE, 0);
    /* the backup hears the primary first: nothing yet */
    cr_assert_eq(zxb_sb_event(&b, ZXB_SB_PEER_PRIMARY, 10), ZXB_SB_OK);
    cr_assert_eq(b.state, ZXB_SB_BACKUP);
    cr_assert_eq(zxb_sb_event(&p, ZXB_SB_PEER_BACKUP, 20), ZXB_SB_OK);
    cr_assert_eq(p.state, ZXB_SB_ACTIVE);
    cr_assert_eq(zxb_sb_event(&b, ZXB_SB_PEER_ACTIVE, 30), ZXB_SB_OK);
    cr_assert_eq(b.state, ZXB_SB_PASSIVE);
    cr_assert_not(b.eligible, "a new passive has no copy yet");
    cr_assert_eq(zxb_sb_event(&p, ZXB_SB_PEER_STALE, 40), ZXB_SB_OK);
    cr_assert_eq(p.state, ZXB_SB_ACTIVE);
    cr_assert_eq(zxb_sb_event(&p, ZXB_SB_CLIENT_REQUEST, 50), ZXB_SB_OK);
    cr_assert_eq(zxb_sb_event(&b, ZXB_SB_CLIENT_REQUEST, 50), ZXB_SB_REJECT);
}

Test(standby_fsm, both_primary_is_a_configuration_error)
{
    zxb_sb_t p;
    zxb_sb_init(&p, true, LIVE, 0);
    cr_assert_eq(zxb_sb_event(&p, ZXB_SB_PEER_PRIMARY, 10), ZXB_SB_SAME_ROLE);
    cr_assert_eq(p.state, ZXB_SB_PRIMARY);
}

/* A passive backup with a complete copy beside an active primary. */
static void s_pair(zxb_sb_t *p, zxb_sb_t *b)
{
    zxb_sb_init(p, true, LIVE, 0);
    zxb_sb_init(b, false, LIVE, 0);
    zxb_sb_event(p, ZXB_SB_PEER_BACKUP, 0);
    zxb_sb_event(b, ZXB_SB_PEER_ACTIVE, 0);
    b->eligible = true; /* the link sets it once the copy is complete */
    zxb_sb_event(p, ZXB_SB_PEER_PASSIVE, 0);
    cr_assert_eq(p->state, ZXB_SB_ACTIVE);
    cr_assert_eq(b->state, ZXB_SB_PASSIVE);
}

Test(standby_fsm, failover_needs_the_peer_silent_for_its_liveness_and_a_client)
{
    zxb_sb_t p, b;
    s_pair(&p, &b);
    int64_t t = 0;
    /* the primary heartbeats; clients ask the backup: it never serves */
    for (; t < 10 * LIVE; t += 100) {
        zxb_sb_event(&b, ZXB_SB_PEER_ACTIVE, t);
        cr_assert_eq(zxb_sb_event(&b, ZXB_SB_CLIENT_REQUEST, t + 50), ZXB_SB_REJECT);
    }
    /* the primary dies at t: silence alone changes nothing */
    int64_t died = t - 100;
    cr_assert_eq(b.state, ZXB_SB_PASSIVE);
    cr_assert_eq(zxb_sb_event(&b, ZXB_SB_CLIENT_REQUEST, died + LIVE - 1), ZXB_SB_REJECT,
                 "one ms before the liveness is up");
    cr_assert_eq(b.state, ZXB_SB_PASSIVE);
    cr_assert_eq(zxb_sb_event(&b, ZXB_SB_CLIENT_REQUEST, died + LIVE), ZXB_SB_OK);
    cr_assert_eq(b.state, ZXB_SB_ACTIVE, "failover");
    /* the primary comes back: it sees an active backup and goes passive */
    zxb_sb_t p2;
    zxb_sb_init(&p2, true, LIVE, died + 5000);
    cr_assert_eq(zxb_sb_event(&b, ZXB_SB_PEER_PRIMARY, died + 5000), ZXB_SB_OK);
    cr_assert_eq(b.state, ZXB_SB_ACTIVE);
    cr_assert_eq(zxb_sb_event(&p2, ZXB_SB_PEER_ACTIVE, died + 5000), ZXB_SB_OK);
    cr_assert_eq(p2.state, ZXB_SB_PASSIVE);
    cr_assert_not(p2.eligible);
}

Test(standby_fsm, a_passive_without_a_complete_copy_never_takes_over)
{
    zxb_sb_t p, b;
    s_pair(&p, &b);
    b.eligible = false;
    cr_assert_eq(zxb_sb_event(&b, ZXB_SB_CLIENT_REQUEST, 100 * LIVE), ZXB_SB_REJECT);
    cr_assert_eq(b.state, ZXB_SB_PASSIVE);
    /* its primary restarts: the primary serves, seeing it stale */
    zxb_sb_t p2;
    zxb_sb_init(&p2, true, LIVE, 200 * LIVE);
    cr_assert_eq(zxb_sb_event(&b, ZXB_SB_PEER_PRIMARY, 200 * LIVE), ZXB_SB_OK);
    cr_assert_eq(b.state, ZXB_SB_PASSIVE);
    cr_assert_eq(zxb_sb_event(&p2, ZXB_SB_PEER_STALE, 200 * LIVE), ZXB_SB_OK);
    cr_assert_eq(p2.state, ZXB_SB_ACTIVE);
}

Test(standby_fsm, an_eligible_passive_takes_over_when_its_active_peer_restarts)
{
    zxb_sb_t p, b;
    s_pair(&p, &b);
    /* the primary crashed and came back within the liveness: it is a
       primary again; the passive holds every acknowledged record */
    cr_assert_eq(zxb_sb_event(&b, ZXB_SB_PEER_PRIMARY, 150), ZXB_SB_OK);
    cr_assert_eq(b.state, ZXB_SB_ACTIVE);
    zxb_sb_t p2;
    zxb_sb_init(&p2, true, LIVE, 150);
    cr_assert_eq(zxb_sb_event(&p2, ZXB_SB_PEER_ACTIVE, 160), ZXB_SB_OK);
    cr_assert_eq(p2.state, ZXB_SB_PASSIVE);
}

Test(standby_fsm, a_partition_with_clients_on_the_active_side_keeps_one_active)
{
    zxb_sb_t p, b;
    s_pair(&p, &b);
    /* the link between the brokers is cut at 0; clients reach both
       brokers, and talk to the one that serves them: the primary */
    for (int64_t t = 0; t < 1000 * LIVE; t += 100) {
        cr_assert_eq(zxb_sb_event(&p, ZXB_SB_CLIENT_REQUEST, t), ZXB_SB_OK);
        cr_assert_eq(p.state, ZXB_SB_ACTIVE);
        cr_assert_eq(b.state, ZXB_SB_PASSIVE, "no client request reaches the passive");
    }
    /* healed: each hears the other again, nothing moves */
    cr_assert_eq(zxb_sb_event(&p, ZXB_SB_PEER_PASSIVE, 1000 * LIVE), ZXB_SB_OK);
    cr_assert_eq(zxb_sb_event(&b, ZXB_SB_PEER_ACTIVE, 1000 * LIVE), ZXB_SB_OK);
    cr_assert_eq(p.state, ZXB_SB_ACTIVE);
    cr_assert_eq(b.state, ZXB_SB_PASSIVE);
}

Test(standby_fsm, dual_actives_end_with_the_backup_stepping_down)
{
    zxb_sb_t p, b;
    s_pair(&p, &b);
    /* a client reached only the backup during a partition */
    cr_assert_eq(zxb_sb_event(&b, ZXB_SB_CLIENT_REQUEST, 2 * LIVE), ZXB_SB_OK);
    cr_assert_eq(b.state, ZXB_SB_ACTIVE);
    /* healed */
    cr_assert_eq(zxb_sb_event(&b, ZXB_SB_PEER_ACTIVE, 3 * LIVE), ZXB_SB_DUAL_ACTIVE);
    cr_assert_eq(zxb_sb_event(&p, ZXB_SB_PEER_ACTIVE, 3 * LIVE), ZXB_SB_DUAL_ACTIVE);
    cr_assert_eq(p.state, ZXB_SB_ACTIVE, "the primary stays");
    cr_assert_eq(b.state, ZXB_SB_PASSIVE, "the backup steps down");
    cr_assert_not(b.eligible, "and needs a new copy");
}

/* ---- the peer link -------------------------------------------------------------------------- */

typedef struct {
    zxb_journal_t *j;
    zxb_standby_t *sb;
    char *dir;
    bool dead; /* not pumped: the process is gone */
    int snapshots;
    int transitions;
    zxb_sb_state_t last_to;
    uint64_t live; /* records 1..live of the test's "state" */
} s_node_t;

static char *s_tmpdir(void)
{
    char tmpl[] = "/tmp/zxsb-test-XXXXXX";
    char *d = mkdtemp(tmpl);
    cr_assert_not_null(d);
    return strdup(d);
}

static int s_rm(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void s_on_state_cb(void *arg, zxb_sb_state_t from, zxb_sb_state_t to)
{
    s_node_t *n = arg;
    n->transitions++;
    n->last_to = to;
}

/* The broker's snapshot: a record per live object (here: "task i"). */
static void s_snapshot_cb(void *arg)
{
    s_node_t *n = arg;
    n->snapshots++;
    zxb_journal_snapshot_begin(n->j);
    for (uint64_t i = 1; i <= n->live; i++) {
        char body[32];
        int len = snprintf(body, sizeof body, "task %" PRIu64, i);
        zxb_journal_append(n->j, 1, body, (size_t)len);
    }
    zxb_journal_snapshot_end(n->j);
    zxb_journal_flush(n->j);
}

/* The link's protection for a node (borrowed): CURVE keys, a signer. */
typedef struct {
    zcert_t *cert;
    const char *peer_key;
    zx__sign_t *sign;
} s_sec_t;

static void s_node_open_sec(s_node_t *n, bool primary, const char *ep, uint64_t records,
                            int64_t now, const s_sec_t *sec)
{
    memset(n, 0, sizeof *n);
    n->dir = s_tmpdir();
    zxb_journal_config_t cfg = {.dir = n->dir, .fsync = ZXB_FSYNC_BATCH};
    char err[256] = "";
    n->j = zxb_journal_open(&cfg, err, sizeof err);
    cr_assert_not_null(n->j, "%s", err);
    cr_assert_eq(zxb_journal_replay(n->j, NULL, NULL, NULL, err, sizeof err), 0, "%s", err);
    for (uint64_t i = 1; i <= records; i++) {
        char body[32];
        int len = snprintf(body, sizeof body, "task %" PRIu64, i);
        zxb_journal_append(n->j, 1, body, (size_t)len);
    }
    n->live = records;
    zxb_journal_flush(n->j);
    zxb_standby_config_t sc = {.primary = primary,
                               .peer = ep,
                               .heartbeat_ms = 100,
                               .liveness = 3,
                               .journal = n->j,
                               .on_state = s_on_state_cb,
                               .snapshot = s_snapshot_cb,
                               .arg = n};
    if (sec) {
        sc.cert = sec->cert;
        sc.peer_key = sec->peer_key;
        sc.sign = sec->sign;
    }
    n->sb = zxb_standby_new(&sc, now, err, sizeof err);
    cr_assert_not_null(n->sb, "%s", err);
}

static void s_node_open(s_node_t *n, bool primary, const char *ep, uint64_t records, int64_t now)
{
    s_node_open_sec(n, primary, ep, records, now, NULL);
}

static void s_node_close(s_node_t *n)
{
    zxb_standby_destroy(&n->sb);
    zxb_journal_destroy(&n->j);
    nftw(n->dir, s_rm, 16, FTW_DEPTH | FTW_PHYS);
    free(n->dir);
}

/* What the broker's loop does for the standby, once. */
static void s_pump(s_node_t *n, int64_t now)
{
    if (n->dead) {
        return;
    }
    zxb_standby_handle(n->sb, now);
    zxb_standby_tick(n->sb, now);
    zxb_standby_committed(n->sb, zxb_journal_committed(n->j), now);
}

/* Pumps both, step fake ms per round, until cond holds; false after 3000
   rounds (each waits up to 5 ms for a file descriptor). Waits for the disk
   use step 0: however slow it is, no peer expires meanwhile. */
static bool s_until_step(s_node_t *a, s_node_t *b, int64_t *now,
                         bool (*cond)(s_node_t *, s_node_t *), int64_t step)
{
    for (int i = 0; i < 3000; i++) {
        s_pump(a, *now);
        s_pump(b, *now);
        if (cond(a, b)) {
            return true;
        }
        struct pollfd fds[6];
        int n = 0;
        s_node_t *nodes[2] = {a, b};
        for (int k = 0; k < 2; k++) {
            if (!nodes[k]->dead) {
                int f[2];
                zxb_standby_fds(nodes[k]->sb, f);
                fds[n++] = (struct pollfd){.fd = f[0], .events = POLLIN};
                fds[n++] = (struct pollfd){.fd = f[1], .events = POLLIN};
                fds[n++] = (struct pollfd){.fd = zxb_journal_fd(nodes[k]->j), .events = POLLIN};
            }
        }
        poll(fds, (nfds_t)n, 5);
        *now += step;
    }
    return false;
}

static bool s_until(s_node_t *a, s_node_t *b, int64_t *now, bool (*cond)(s_node_t *, s_node_t *))
{
    return s_until_step(a, b, now, cond, 10);
}

static bool s_settled(s_node_t *p, s_node_t *b)
{
    return zxb_standby_state(p->sb) == ZXB_SB_ACTIVE &&
           zxb_standby_state(b->sb) == ZXB_SB_PASSIVE && zxb_standby_eligible(b->sb);
}

static uint64_t s_last_p;

static bool s_durable(s_node_t *p, s_node_t *b)
{
    return zxb_standby_durable(p->sb, zxb_journal_committed(p->j)) >= s_last_p;
}

static bool s_committed(s_node_t *p, s_node_t *b)
{
    return zxb_journal_committed(p->j) >= s_last_p;
}

static bool s_b_peer_gone(s_node_t *p, s_node_t *b)
{
    return !b->sb->peer_alive;
}

typedef struct {
    size_t n;
    char bodies[64][32];
} s_bodies_t;

static int s_collect(void *arg, uint8_t type, uint64_t lsn, const uint8_t *body, size_t len)
{
    s_bodies_t *b = arg;
    cr_assert_lt(b->n, 64);
    cr_assert_lt(len, 32);
    memcpy(b->bodies[b->n], body, len);
    b->bodies[b->n][len] = 0;
    b->n++;
    return 0;
}

Test(standby_link, the_backup_copies_the_journal_gates_acks_and_takes_over)
{
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://zxsb-test-%d", (int)getpid());
    int64_t now = 1000;
    s_node_t p, b;
    s_node_open(&p, true, ep, 20, now);
    s_node_open(&b, false, ep, 0, now);

    cr_assert(s_until(&p, &b, &now, s_settled), "primary active, backup passive and complete");
    cr_assert_geq(p.snapshots, 1, "the copy started from a snapshot of the primary");
    cr_assert_eq(b.snapshots, 0);
    cr_assert_eq(p.last_to, ZXB_SB_ACTIVE);
    cr_assert_eq(b.last_to, ZXB_SB_PASSIVE);
    uint8_t lp[16], lb[16];
    zxb_journal_lineage(p.j, lp);
    zxb_journal_lineage(b.j, lb);
    cr_assert_arr_eq(lp, lb, 16, "the copy has the primary's lineage");

    /* ten more tasks; with the backup stalled, the primary commits them
       but may not acknowledge them */
    for (int i = 21; i <= 30; i++) {
        char body[32];
        int len = snprintf(body, sizeof body, "task %d", i);
        s_last_p = zxb_journal_append(p.j, 1, body, (size_t)len);
    }
    p.live = 30;
    zxb_journal_flush(p.j);
    b.dead = true;
    cr_assert(s_until_step(&p, &b, &now, s_committed, 0));
    cr_assert_lt(zxb_standby_durable(p.sb, zxb_journal_committed(p.j)), s_last_p,
                 "not durable in the pair before the backup has it");
    b.dead = false;
    cr_assert(s_until(&p, &b, &now, s_durable), "durable once the backup acknowledged");

    /* the primary dies; clients come to the backup */
    p.dead = true;
    cr_assert_eq(zxb_standby_client_request(b.sb, now), -1, "the peer is not silent long enough");
    cr_assert(s_until(&p, &b, &now, s_b_peer_gone));
    cr_assert_eq(zxb_standby_state(b.sb), ZXB_SB_PASSIVE, "silence alone changes nothing");
    int before = b.transitions;
    cr_assert_eq(zxb_standby_client_request(b.sb, now), 0, "failover");
    cr_assert_eq(zxb_standby_state(b.sb), ZXB_SB_ACTIVE);
    cr_assert_eq(b.transitions, before + 1);
    cr_assert_eq(b.last_to, ZXB_SB_ACTIVE, "on_state told the broker");

    /* the broker would now rebuild its state from its journal */
    zxb_standby_destroy(&b.sb);
    zxb_journal_destroy(&b.j);
    zxb_journal_config_t cfg = {.dir = b.dir};
    char err[256] = "";
    b.j = zxb_journal_open(&cfg, err, sizeof err);
    cr_assert_not_null(b.j, "%s", err);
    s_bodies_t got = {0};
    cr_assert_eq(zxb_journal_replay(b.j, s_collect, &got, NULL, err, sizeof err), 0, "%s", err);
    cr_assert_geq(got.n, 30, "every acknowledged task: %zu", got.n);
    /* the snapshot's copies, then what followed, with no task missing */
    bool seen[31] = {false};
    for (size_t i = 0; i < got.n; i++) {
        int k = 0;
        cr_assert_eq(sscanf(got.bodies[i], "task %d", &k), 1);
        cr_assert(k >= 1 && k <= 30, "%s", got.bodies[i]);
        seen[k] = true;
    }
    for (int k = 1; k <= 30; k++) {
        cr_assert(seen[k], "task %d is in the backup's journal", k);
    }
    zxb_journal_destroy(&b.j);
    s_node_close(&p);
    s_node_close(&b);
}

static bool s_p_peer_gone(s_node_t *p, s_node_t *b)
{
    return !p->sb->peer_alive;
}

static bool s_regated(s_node_t *p, s_node_t *b)
{
    return p->sb->gating && zxb_standby_eligible(b->sb) && s_durable(p, b);
}

Test(standby_link, a_passive_that_missed_records_is_copied_again_before_it_counts)
{
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://zxsb-test2-%d", (int)getpid());
    int64_t now = 1000;
    s_node_t p, b;
    s_node_open(&p, true, ep, 5, now);
    s_node_open(&b, false, ep, 0, now);
    cr_assert(s_until(&p, &b, &now, s_settled));
    int snaps = p.snapshots;

    /* the backup stalls past the liveness: the primary acknowledges alone
       and drops what it cannot send */
    b.dead = true;
    cr_assert(s_until(&p, &b, &now, s_p_peer_gone));
    cr_assert_not(p.sb->gating);
    for (int i = 6; i <= 15; i++) {
        char body[32];
        int len = snprintf(body, sizeof body, "task %d", i);
        s_last_p = zxb_journal_append(p.j, 1, body, (size_t)len);
    }
    p.live = 15;
    zxb_journal_flush(p.j);
    cr_assert(s_until(&p, &b, &now, s_committed));
    cr_assert_eq(zxb_standby_durable(p.sb, zxb_journal_committed(p.j)), s_last_p,
                 "alone, the primary's commit is enough");

    /* back: the backup must not count (nor take over) until a new copy */
    b.dead = false;
    cr_assert(s_until(&p, &b, &now, s_regated), "copied again, counted again");
    cr_assert_gt(p.snapshots, snaps, "a new snapshot made the new copy");
    for (int i = 16; i <= 20; i++) {
        char body[32];
        int len = snprintf(body, sizeof body, "task %d", i);
        s_last_p = zxb_journal_append(p.j, 1, body, (size_t)len);
    }
    p.live = 20;
    zxb_journal_flush(p.j);
    cr_assert(s_until(&p, &b, &now, s_durable));

    /* takeover: the backup's journal holds tasks 1..20 */
    p.dead = true;
    cr_assert(s_until(&p, &b, &now, s_b_peer_gone));
    cr_assert_eq(zxb_standby_client_request(b.sb, now), 0);
    zxb_standby_destroy(&b.sb);
    zxb_journal_destroy(&b.j);
    zxb_journal_config_t cfg = {.dir = b.dir};
    char err[256] = "";
    b.j = zxb_journal_open(&cfg, err, sizeof err);
    cr_assert_not_null(b.j, "%s", err);
    s_bodies_t got = {0};
    cr_assert_eq(zxb_journal_replay(b.j, s_collect, &got, NULL, err, sizeof err), 0, "%s", err);
    bool seen[21] = {false};
    for (size_t i = 0; i < got.n; i++) {
        int k = 0;
        cr_assert_eq(sscanf(got.bodies[i], "task %d", &k), 1);
        cr_assert(k >= 1 && k <= 20, "%s", got.bodies[i]);
        seen[k] = true;
    }
    for (int k = 1; k <= 20; k++) {
        cr_assert(seen[k], "task %d is in the backup's journal", k);
    }
    zxb_journal_destroy(&b.j);
    s_node_close(&p);
    s_node_close(&b);
}

/* ---- the link's protection -------------------------------------------------------------- */

#define S_SECRET "0123456789abcdef0123456789abcdef"

static zx__sign_t *s_signer(const char *secret, bool primary)
{
    zx__sign_t *sg = zx__sign_new((const uint8_t *)secret, strlen(secret), primary);
    cr_assert_not_null(sg);
    return sg;
}

/* A STATE body as a peer in state announces it. */
static void s_state_body(uint8_t b[S_STATE_LEN], zxb_sb_state_t state, uint8_t flags)
{
    memset(b, 0, S_STATE_LEN);
    b[0] = (uint8_t)state;
    b[1] = flags;
}

/* [rid][ZXSB1][cmd][body], signed with sg for role when sg is given; a copy
   of what went out (without the routing id) in *copy when asked. */
static void s_fake_send(zsock_t *sock, zx__sign_t *sg, int role, zframe_t *rid, char cmd,
                        const void *body, size_t len, zmsg_t **copy)
{
    zmsg_t *m = zmsg_new();
    zmsg_addstr(m, S_SIG);
    zmsg_addmem(m, &cmd, 1);
    zmsg_addmem(m, body, len);
    if (sg) {
        cr_assert_eq(zx__sign_msg(sg, m, rid, role), 0);
    }
    if (copy) {
        *copy = zmsg_dup(m);
    }
    if (rid) {
        zmsg_pushmem(m, zframe_data(rid), zframe_size(rid));
    }
    cr_assert_eq(zmsg_send(&m, sock), 0);
}

/* Reads whatever the fake socket holds; returns the bytes (every frame). */
static size_t s_drain(zsock_t *sock)
{
    size_t bytes = 0;
    while (zsock_events(sock) & ZMQ_POLLIN) {
        zmsg_t *m = zmsg_recv(sock);
        if (!m) {
            break;
        }
        bytes += zmsg_content_size(m) + zmsg_size(m); /* an empty message counts too */
        zmsg_destroy(&m);
    }
    return bytes;
}

/* Pumps a and b (either may be dead) for rounds rounds, 10 fake ms and up
   to 5 real ms each, reading what the fake socket receives meanwhile. */
static size_t s_rounds(s_node_t *a, s_node_t *b, int64_t *now, int rounds, zsock_t *fake)
{
    size_t bytes = 0;
    for (int i = 0; i < rounds; i++) {
        s_pump(a, *now);
        s_pump(b, *now);
        bytes += s_drain(fake);
        struct pollfd fds[7];
        int n = 0;
        s_node_t *nodes[2] = {a, b};
        for (int k = 0; k < 2; k++) {
            if (!nodes[k]->dead) {
                int f[2];
                zxb_standby_fds(nodes[k]->sb, f);
                fds[n++] = (struct pollfd){.fd = f[0], .events = POLLIN};
                fds[n++] = (struct pollfd){.fd = f[1], .events = POLLIN};
                fds[n++] = (struct pollfd){.fd = zxb_journal_fd(nodes[k]->j), .events = POLLIN};
            }
        }
        fds[n++] = (struct pollfd){.fd = zsock_fd(fake), .events = POLLIN};
        poll(fds, (nfds_t)n, 5);
        *now += 10;
    }
    return bytes + s_drain(fake);
}

static void s_append(s_node_t *p, int from, int to)
{
    for (int i = from; i <= to; i++) {
        char body[32];
        int len = snprintf(body, sizeof body, "task %d", i);
        s_last_p = zxb_journal_append(p->j, 1, body, (size_t)len);
    }
    p->live = (uint64_t)to;
    zxb_journal_flush(p->j);
}

Test(standby_secure, a_signed_pair_copies_the_journal_and_fails_over)
{
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://zxsb-sign-%d", (int)getpid());
    zx__sign_t *ps = s_signer(S_SECRET, true), *bs = s_signer(S_SECRET, false);
    s_sec_t psec = {.sign = ps}, bsec = {.sign = bs};
    int64_t now = 1000;
    s_node_t p, b;
    s_node_open_sec(&p, true, ep, 20, now, &psec);
    s_node_open_sec(&b, false, ep, 0, now, &bsec);
    cr_assert(s_until(&p, &b, &now, s_settled), "signed: primary active, backup passive, complete");
    s_append(&p, 21, 30);
    cr_assert(s_until(&p, &b, &now, s_durable), "durable once the backup acknowledged");
    uint64_t verified, refused;
    zx__sign_counts(ps, &verified, &refused);
    cr_assert_gt(verified, 0, "the primary checked the backup's messages");
    zx__sign_counts(bs, &verified, &refused);
    cr_assert_gt(verified, 0, "the backup checked the primary's messages");
    cr_assert_eq(zxb_standby_refused(b.sb), 0, "nothing of the primary's was refused");

    p.dead = true;
    cr_assert(s_until(&p, &b, &now, s_b_peer_gone));
    cr_assert_eq(zxb_standby_client_request(b.sb, now), 0, "failover");
    cr_assert_eq(zxb_standby_state(b.sb), ZXB_SB_ACTIVE);
    s_node_close(&p);
    s_node_close(&b);
    zx__sign_destroy(&ps);
    zx__sign_destroy(&bs);
}

static zsock_t *s_stranger(const char *ep)
{
    zsock_t *f = zsock_new(ZMQ_DEALER);
    cr_assert_not_null(f);
    zsock_set_linger(f, 0);
    zsock_set_identity(f, S_BACKUP_ID); /* posing as the backup */
    cr_assert_eq(zsock_connect(f, "%s", ep), 0);
    return f;
}

Test(standby_secure, a_stranger_at_a_signed_primary_gets_nothing_and_moves_nothing)
{
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://zxsb-stranger-%d", (int)getpid());
    zx__sign_t *ps = s_signer(S_SECRET, true), *bs = s_signer(S_SECRET, false);
    zx__sign_t *wrong = s_signer("a different secret of 32 bytes!!", false);
    s_sec_t psec = {.sign = ps}, bsec = {.sign = bs};
    int64_t now = 1000;
    s_node_t p, b;
    s_node_open_sec(&p, true, ep, 20, now, &psec);
    memset(&b, 0, sizeof b);
    b.dead = true; /* not there yet */

    /* a plain DEALER named zxb-backup says "a backup just started", which
       would make the primary active and start a copy; then the same
       signed with the wrong secret */
    zsock_t *fake = s_stranger(ep);
    uint8_t st[S_STATE_LEN];
    s_state_body(st, ZXB_SB_BACKUP, 0);
    size_t got = 0;
    for (int i = 0; i < 5; i++) {
        s_fake_send(fake, NULL, 0, NULL, 'S', st, sizeof st, NULL);
        s_fake_send(fake, wrong, ZXP_ROLE_PEER_PRIMARY, NULL, 'S', st, sizeof st, NULL);
        got += s_rounds(&p, &b, &now, 20, fake);
    }
    cr_assert_geq(zxb_standby_refused(p.sb), 10, "every message was refused: %" PRIu64,
                  zxb_standby_refused(p.sb));
    cr_assert_eq(zxb_standby_state(p.sb), ZXB_SB_PRIMARY, "the stranger moved nothing");
    cr_assert_eq(p.snapshots, 0, "no copy was started for it");
    cr_assert_eq(got, 0, "the stranger received %zu bytes", got);

    /* the real backup comes: the pair forms and the journal flows, to it only */
    s_node_open_sec(&b, false, ep, 0, now, &bsec);
    cr_assert(s_until(&p, &b, &now, s_settled));
    s_append(&p, 21, 30);
    cr_assert(s_until(&p, &b, &now, s_durable));
    got += s_rounds(&p, &b, &now, 20, fake);
    cr_assert_eq(got, 0, "the stranger received %zu bytes (the journal went to it?)", got);
    zsock_destroy(&fake);
    s_node_close(&p);
    s_node_close(&b);
    zx__sign_destroy(&ps);
    zx__sign_destroy(&bs);
    zx__sign_destroy(&wrong);
}

static bool s_b_passive(s_node_t *p, s_node_t *b)
{
    return zxb_standby_state(b->sb) == ZXB_SB_PASSIVE;
}

static uint64_t s_refused_before;

static bool s_b_refused_more(s_node_t *p, s_node_t *b)
{
    return zxb_standby_refused(b->sb) > s_refused_before;
}

/* The fake primary's side of the handshake: receives until a message from
   the backup verifies; answers RESUME to one that was signed before it knew
   our session. Returns the backup's routing id. */
static zframe_t *s_fake_primary_handshake(zsock_t *fake, zx__sign_t *fs, s_node_t *dead,
                                          s_node_t *b, int64_t *now)
{
    for (int i = 0; i < 1000; i++) {
        s_pump(b, *now);
        while (zsock_events(fake) & ZMQ_POLLIN) {
            zmsg_t *m = zmsg_recv(fake);
            zframe_t *rid = zmsg_pop(m);
            int rc = zx__sign_verify(fs, m, rid, ZXP_ROLE_PEER_PRIMARY);
            zmsg_destroy(&m);
            if (rc == 0) {
                return rid;
            }
            cr_assert(rc == ZXP_E_SIGN_FIRST || rc == ZXP_E_SIGN_EPOCH, "%d", rc);
            s_fake_send(fake, fs, ZXP_ROLE_PEER_BACKUP, rid, 'R', "", 0, NULL);
            zframe_destroy(&rid);
        }
        struct pollfd pf = {.fd = zsock_fd(fake), .events = POLLIN};
        poll(&pf, 1, 5);
        *now += 10;
    }
    cr_assert_fail("the backup never verified");
    return NULL;
}

Test(standby_secure, a_replayed_state_is_refused_and_moves_nothing)
{
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://zxsb-replay-%d", (int)getpid());
    /* a fake primary that knows the secret records what it sends */
    zsock_t *fake = zsock_new(ZMQ_ROUTER);
    cr_assert_not_null(fake);
    zsock_set_linger(fake, 0);
    cr_assert_eq(zsock_bind(fake, "%s", ep), 0);
    zx__sign_t *fs = s_signer(S_SECRET, true), *bs = s_signer(S_SECRET, false);
    s_sec_t bsec = {.sign = bs};
    int64_t now = 1000;
    s_node_t none, b;
    memset(&none, 0, sizeof none);
    none.dead = true;
    s_node_open_sec(&b, false, ep, 0, now, &bsec);

    zframe_t *rid = s_fake_primary_handshake(fake, fs, &none, &b, &now);
    uint8_t st[S_STATE_LEN];
    s_state_body(st, ZXB_SB_ACTIVE, 0);
    zmsg_t *recorded = NULL;
    s_fake_send(fake, fs, ZXP_ROLE_PEER_BACKUP, rid, 'S', st, sizeof st, &recorded);
    cr_assert(s_until(&none, &b, &now, s_b_passive), "an authentic STATE moves the backup");
    cr_assert_eq(zxb_standby_refused(b.sb), 0);

    /* the same bytes again: a replay */
    s_refused_before = zxb_standby_refused(b.sb);
    zmsg_t *again = zmsg_dup(recorded);
    zmsg_pushmem(again, zframe_data(rid), zframe_size(rid));
    zmsg_send(&again, fake);
    cr_assert(s_until(&none, &b, &now, s_b_refused_more), "the replay was refused");

    /* the backup restarts (a new session): the recorded "I am active" must
       not make it passive */
    zxb_standby_destroy(&b.sb);
    zx__sign_destroy(&bs);
    bs = s_signer(S_SECRET, false);
    bsec.sign = bs;
    zxb_standby_config_t sc = {.primary = false,
                               .peer = ep,
                               .heartbeat_ms = 100,
                               .liveness = 3,
                               .journal = b.j,
                               .on_state = s_on_state_cb,
                               .snapshot = s_snapshot_cb,
                               .arg = &b,
                               .sign = bs};
    char err[256] = "";
    b.sb = zxb_standby_new(&sc, now, err, sizeof err);
    cr_assert_not_null(b.sb, "%s", err);
    /* its first STATE reaches the fake on a new connection: replay there
       (what the old connection sent before is skipped) */
    zframe_t *rid2 = NULL;
    for (int i = 0; i < 1000 && !rid2; i++) {
        s_pump(&b, now);
        if (zsock_events(fake) & ZMQ_POLLIN) {
            zmsg_t *m = zmsg_recv(fake);
            rid2 = zmsg_pop(m);
            zmsg_destroy(&m);
            if (zframe_eq(rid2, rid)) {
                zframe_destroy(&rid2); /* the old connection's, in flight */
            }
        } else {
            struct pollfd pf = {.fd = zsock_fd(fake), .events = POLLIN};
            poll(&pf, 1, 5);
        }
    }
    cr_assert_not_null(rid2);
    s_refused_before = zxb_standby_refused(b.sb);
    again = zmsg_dup(recorded);
    zmsg_pushmem(again, zframe_data(rid2), zframe_size(rid2));
    zmsg_send(&again, fake);
    cr_assert(s_until(&none, &b, &now, s_b_refused_more), "the old session's message was refused");
    cr_assert_eq(zxb_standby_state(b.sb), ZXB_SB_BACKUP, "the replay moved nothing");

    zmsg_destroy(&recorded);
    zframe_destroy(&rid);
    zframe_destroy(&rid2);
    zsock_destroy(&fake);
    s_node_close(&b);
    zx__sign_destroy(&fs);
    zx__sign_destroy(&bs);
}

Test(standby_secure, a_curve_pair_works_and_a_stranger_key_is_refused)
{
    zcert_t *pc = zcert_new(), *bc = zcert_new(), *other = zcert_new();
    cr_assert(pc && bc && other);
    zx__auth_t *auth = zx__auth_new(NULL, NULL, zcert_public_txt(bc));
    cr_assert_not_null(auth);
    cr_assert_eq(zx__auth_keys(auth, ZX__AUTH_DOMAIN_PEER), 1);
    s_sec_t psec = {.cert = pc, .peer_key = zcert_public_txt(bc)};
    s_sec_t bsec = {.cert = bc, .peer_key = zcert_public_txt(pc)};
    int64_t now = 1000;
    s_node_t p, b;
    s_node_open_sec(&p, true, "tcp://127.0.0.1:*", 20, now, &psec);
    char ep[128];
    snprintf(ep, sizeof ep, "%s", zsock_endpoint(p.sb->sock));
    memset(&b, 0, sizeof b);
    b.dead = true;

    /* a stranger with a key of its own, who knows the primary's public key */
    zsock_t *fake = zsock_new(ZMQ_DEALER);
    cr_assert_not_null(fake);
    zsock_set_linger(fake, 0);
    zcert_apply(other, fake);
    zsock_set_curve_serverkey(fake, zcert_public_txt(pc));
    zsock_set_identity(fake, S_BACKUP_ID);
    cr_assert_eq(zsock_connect(fake, "%s", ep), 0);
    uint8_t st[S_STATE_LEN];
    s_state_body(st, ZXB_SB_BACKUP, 0);
    s_fake_send(fake, NULL, 0, NULL, 'S', st, sizeof st, NULL);
    uint64_t admitted = 0, refused = 0;
    size_t got = 0;
    for (int i = 0; i < 1000 && refused == 0; i++) {
        got += s_rounds(&p, &b, &now, 1, fake);
        zx__auth_counts(auth, &admitted, &refused);
    }
    cr_assert_geq(refused, 1, "the ZAP handler refused the stranger's key");
    cr_assert_eq(admitted, 0);
    got += s_rounds(&p, &b, &now, 20, fake);
    cr_assert_eq(got, 0, "the stranger received %zu bytes", got);
    cr_assert_eq(zxb_standby_state(p.sb), ZXB_SB_PRIMARY, "the stranger moved nothing");

    /* the backup with its key: the pair forms over CURVE and fails over */
    s_node_open_sec(&b, false, ep, 0, now, &bsec);
    cr_assert(s_until(&p, &b, &now, s_settled), "CURVE: primary active, backup passive, complete");
    zx__auth_counts(auth, &admitted, &refused);
    cr_assert_geq(admitted, 1);
    s_append(&p, 21, 30);
    cr_assert(s_until(&p, &b, &now, s_durable));
    got += s_rounds(&p, &b, &now, 5, fake);
    cr_assert_eq(got, 0, "the stranger received %zu bytes", got);
    p.dead = true;
    cr_assert(s_until(&p, &b, &now, s_b_peer_gone));
    cr_assert_eq(zxb_standby_client_request(b.sb, now), 0, "failover");

    zsock_destroy(&fake);
    s_node_close(&p);
    s_node_close(&b);
    zx__auth_destroy(&auth);
    zcert_destroy(&pc);
    zcert_destroy(&bc);
    zcert_destroy(&other);
}

static zx__sign_t *s_rot_signer;

static bool s_rotated_settled(s_node_t *p, s_node_t *b)
{
    return zx__sign_rotations(s_rot_signer) >= 3 && s_settled(p, b) && s_durable(p, b);
}

/* The primary's signing session rotates (every 10 minutes in a broker;
   every 30 ms here): the backup adopts each new one and the pair goes on
   without a copy restarted or a state changed, every record acknowledged.
   (At this pace a backup's message can be two sessions old when it
   arrives: refused, answered by RESUME, and an ACK said again at the next
   heartbeat; at 10 minutes a heartbeat is never that late.) */
Test(standby_secure, a_signed_pair_survives_the_primarys_session_rotations)
{
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://zxsb-rotate-%d", (int)getpid());
    zx__sign_t *ps = s_signer(S_SECRET, true), *bs = s_signer(S_SECRET, false);
    s_sec_t psec = {.sign = ps}, bsec = {.sign = bs};
    int64_t now = 1000;
    s_node_t p, b;
    s_node_open_sec(&p, true, ep, 20, now, &psec);
    s_node_open_sec(&b, false, ep, 0, now, &bsec);
    cr_assert(s_until(&p, &b, &now, s_settled));
    int snaps = p.snapshots, pt = p.transitions, bt = b.transitions;
    uint64_t refused_p0 = zxb_standby_refused(p.sb);
    zx__sign_set_limits(ps, 30, 0);
    s_rot_signer = ps;
    for (int i = 0; i < 3; i++) {
        s_append(&p, 21 + 10 * i, 30 + 10 * i);
        cr_assert(s_until(&p, &b, &now, s_durable), "durable across rotations");
    }
    cr_assert(s_until(&p, &b, &now, s_rotated_settled), "%" PRIu64 " rotations",
              zx__sign_rotations(ps));
    cr_assert_eq(zxb_standby_refused(b.sb), 0, "the backup refused nothing of the primary's");
    printf("rotations: %" PRIu64 ", backup messages refused by the primary: %" PRIu64 "\n",
           zx__sign_rotations(ps), zxb_standby_refused(p.sb) - refused_p0);
    cr_assert_eq(p.snapshots, snaps, "the copy never broke off");
    cr_assert_eq(p.transitions, pt);
    cr_assert_eq(b.transitions, bt);
    s_node_close(&p);
    s_node_close(&b);
    zx__sign_destroy(&ps);
    zx__sign_destroy(&bs);
}
