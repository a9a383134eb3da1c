/*  pair.c - the broker's side of a pair of brokers (--peer with --primary or
    --backup; docs/operations.md, "Running a pair"). The standby module
    (standby.c, zxb_standby.h) holds the Binary Star state machine and the
    peer link that streams the active's journal to the passive; this file
    wires it into the broker:

    - At start the journal is opened and read through without building
      anything (the standby needs it positioned at its end), and the
      standby is made. The broker serves nothing until the state machine
      makes it active.
    - Every transition to active (a primary that meets a starting backup,
      a primary alone once a client comes after liveness, a passive that
      takes over) closes that journal and recovers from it exactly as a
      broker with --journal does at start (durable.c: tasks queued again,
      jobs and held results, the recovery window), then serves. So the
      broker's tables hold something only while it is active, and a
      takeover is the restart of a broker whose journal is the copy.
    - The peer link is protected as the client and worker endpoints are
      (CURVE with --key and --peer-key, and/or the shared secret's
      signatures; broker/security.c hands them to the standby), and a
      non-loopback peer endpoint with neither is refused unless --insecure.
    - While not active, every client and worker message is answered with
      ERROR 3 (ZXP_ERR_PASSIVE) and dropped, except a HELLO or SUBMIT that
      the state machine lets through (the failover rule: the peer silent
      for liveness and a client here).
    - ACCEPTED and the workers' results acknowledgements wait for
      zxb_standby_durable: with a passive that counts, a record is durable
      once both brokers have committed it (durable.c asks zxb_pair_durable).
    - An active that must step down (both were active; the backup yields)
      cannot unbuild its tables in place: its run loop ends and main.c
      starts the program again (execv), as a backup that becomes passive
      and copies the primary's journal afresh.
*/
#include "zxb_broker.h"
#include "zxb_sec.h"
#include "zxb_standby.h"

#include <inttypes.h>
#include <string.h>

static int s_skip(void *arg, uint8_t type, uint64_t lsn, const uint8_t *body, size_t len)
{
    (void)arg;
    (void)type;
    (void)lsn;
    (void)body;
    (void)len;
    return 0;
}

/* Opens the journal for the standby: read through, nothing built. */
static zxb_journal_t *s_open_quiet(zxb_broker_t *self)
{
    zxb_journal_config_t jc = {.dir = self->cfg.journal_dir,
                               .fsync = (zxb_fsync_t)self->cfg.fsync_policy,
                               .interval_ms = self->cfg.fsync_interval_ms};
    char err[512];
    zxb_journal_t *j = zxb_journal_open(&jc, err, sizeof err);
    if (!j) {
        zsys_error("journal %s: %s", self->cfg.journal_dir, err);
        return NULL;
    }
    zxb_journal_stats_t st;
    memset(&st, 0, sizeof st);
    if (zxb_journal_replay(j, s_skip, NULL, &st, err, sizeof err) != 0) {
        zsys_error("journal %s: cannot read it: %s", self->cfg.journal_dir, err);
        zxb_journal_destroy(&j);
        return NULL;
    }
    return j;
}

/* Becoming active: the standby lets go of the quiet journal, the broker
   recovers from the directory as at a start and hands the new handle back.
   Called from within the standby (on_state), which goes on with it. */
static void s_take_over(zxb_broker_t *self)
{
    int64_t t0 = zclock_mono();
    zxb_standby_set_journal(self->standby, NULL);
    zxb_journal_destroy(&self->pair_journal);
    if (zxb_durable_recover(self) != 0) {
        zsys_error("pair: cannot recover from the journal %s: stopping (the peer, if alive, "
                   "stays as it is)",
                   self->cfg.journal_dir);
        self->pair_fatal = true;
        if (self->journal) {
            zxb_journal_destroy(&self->journal);
        }
        /* the standby must hold a journal: the quiet one again, if it opens */
        self->pair_journal = s_open_quiet(self);
        if (self->pair_journal) {
            zxb_standby_set_journal(self->standby, self->pair_journal);
        }
        return;
    }
    zxb_standby_set_journal(self->standby, self->journal);
    self->pair_active_at = zclock_mono();
    zsys_info("pair: this broker is active now (%s; journal recovered in %" PRId64
              " ms): serving clients and workers",
              self->cfg.pair_primary ? "primary" : "backup", self->pair_active_at - t0);
}

static void s_on_state(void *arg, zxb_sb_state_t from, zxb_sb_state_t to)
{
    zxb_broker_t *self = arg;
    if (to == ZXB_SB_ACTIVE && !self->journal && !self->pair_fatal) {
        s_take_over(self);
    } else if (from == ZXB_SB_ACTIVE && to != ZXB_SB_ACTIVE) {
        zsys_error("pair: this broker steps down (the peer is the active one): restarting as "
                   "a passive; what it accepted alone is not kept");
        self->pair_stepdown = true;
    }
}

static void s_snapshot(void *arg)
{
    zxb_broker_t *self = arg;
    if (self->journal && !self->journal_failed) {
        zxb_durable_snapshot(self);
        zxb_journal_flush(self->journal);
    }
}

int zxb_pair_open(zxb_broker_t *self)
{
    /* the link carries the whole journal: open only on loopback, or with --insecure */
    if (zxb_sec_peer_check(self->cfg.peer, self->cfg.insecure) != 0) {
        return -1;
    }
    self->pair_journal = s_open_quiet(self);
    if (!self->pair_journal) {
        return -1;
    }
    zxb_standby_config_t sc = {.primary = self->cfg.pair_primary,
                               .peer = self->cfg.peer,
                               .heartbeat_ms = self->cfg.heartbeat_ms,
                               .liveness = self->cfg.liveness,
                               .journal = self->pair_journal,
                               .on_state = s_on_state,
                               .snapshot = s_snapshot,
                               .arg = self};
    zxb_sec_peer(&sc.cert, &sc.peer_key, &sc.sign);
    char err[512];
    self->standby = zxb_standby_new(&sc, zclock_mono(), err, sizeof err);
    if (!self->standby) {
        zsys_error("%s", err);
        return -1;
    }
    ZXB_INFO("pair: %s, peer %s (%s%s%s): waiting to learn which broker is active",
             self->cfg.pair_primary ? "primary" : "backup", self->cfg.peer, sc.cert ? "CURVE" : "",
             sc.cert && sc.sign ? ", " : "",
             sc.sign    ? "signed"
             : !sc.cert ? "unauthenticated"
                        : "");
    return 0;
}

void zxb_pair_close(zxb_broker_t *self)
{
    /* the standby first: its tap must be off the journal before it closes */
    zxb_standby_destroy(&self->standby);
    if (self->pair_journal) {
        zxb_journal_destroy(&self->pair_journal);
    }
}

bool zxb_pair_active(zxb_broker_t *self)
{
    return !self->standby || (zxb_standby_state(self->standby) == ZXB_SB_ACTIVE && self->journal &&
                              !self->pair_stepdown && !self->pair_fatal);
}

bool zxb_pair_admit(zxb_broker_t *self, bool worker, zframe_t *rid, zmsg_t *msg)
{
    if (zxb_pair_active(self)) {
        return true;
    }
    zframe_t *f = zmsg_first(msg);
    const uint8_t *d = f ? zframe_data(f) : NULL;
    int cmd = f && zframe_size(f) == 4 && d[0] == ZXP_SIG0 && d[1] == ZXP_SIG1 ? d[3] : -1;
    if (cmd < 0) {
        return false; /* not a zexec message: dropped as the decoder would */
    }
    if (!worker && (cmd == ZXP_HELLO || cmd == ZXP_SUBMIT) && !self->pair_stepdown &&
        !self->pair_fatal && zxb_standby_client_request(self->standby, zclock_mono()) == 0) {
        return zxb_pair_active(self); /* it took over just now (or could not recover) */
    }
    if (cmd == ZXP_BYE) {
        return false;
    }
    self->pair_refused++;
    zxp_send_error(worker ? zxb_wsock(self) : zxb_csock(self), rid, ZXP_ERR_PASSIVE,
                   "this broker is passive: use the other endpoint");
    return false;
}

void zxb_pair_fds(zxb_broker_t *self, int fds[3])
{
    int two[2] = {-1, -1};
    if (self->standby) {
        zxb_standby_fds(self->standby, two);
    }
    fds[0] = two[0];
    fds[1] = two[1];
    fds[2] = self->pair_journal ? zxb_journal_fd(self->pair_journal) : -1;
}

bool zxb_pair_handle(zxb_broker_t *self)
{
    if (!self->standby) {
        return false;
    }
    bool more = zxb_standby_handle(self->standby, zclock_mono());
    if (self->journal) {
        zxb_durable_committed(self); /* the passive's acknowledgements move what is durable */
    }
    return more;
}

void zxb_pair_journal_moved(zxb_broker_t *self)
{
    if (!self->standby) {
        return;
    }
    uint64_t lsn = self->journal        ? self->committed
                   : self->pair_journal ? zxb_journal_committed(self->pair_journal)
                                        : 0;
    zxb_standby_committed(self->standby, lsn, zclock_mono());
}

void zxb_pair_tick(zxb_broker_t *self)
{
    if (self->standby) {
        zxb_standby_tick(self->standby, zclock_mono());
    }
}

uint64_t zxb_pair_durable(zxb_broker_t *self, uint64_t committed)
{
    return self->standby ? zxb_standby_durable(self->standby, committed) : committed;
}

const char *zxb_pair_state(zxb_broker_t *self)
{
    return self->standby ? zxb_sb_state_name(zxb_standby_state(self->standby)) : NULL;
}

uint64_t zxb_pair_peer_refused(zxb_broker_t *self)
{
    return self->standby ? zxb_standby_refused(self->standby) : 0;
}
