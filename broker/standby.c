/*  standby.c - the standby broker (zxb_standby.h): the Binary Star state
    machine, and the peer link that streams the active's journal to the
    passive.

    The state machine follows the ZeroMQ Guide's bstar.c (chapter 4), with
    two changes. A passive takes over only with a complete copy of the
    active's journal (the "eligible" flag), because a copy that is still
    being made holds less than what clients were told is durable; and a
    passive that cannot take over says so (PEER_STALE), so that a primary or
    backup that restarts beside it becomes active instead of both waiting.
    Dual actives end with the backup stepping down rather than both
    aborting: the primary's journal is the one kept.

    The peer link: the primary binds a ROUTER on the peer endpoint, the
    backup connects a DEALER with the routing id "zxb-backup"; either may be
    active, so messages flow both ways on the one connection. Messages:

      STATE   [sig][S][u8 state, u8 flags, u64 committed, u64 solo_max,
              16 lineage]                                 every heartbeat
      JOURNAL [sig][J][16 lineage, u64 first, u64 last][records]  active->passive
      ACK     [sig][A][u64 lsn]                           passive->active
      RESUME  [sig][R][]                       primary->backup, signing only

    flags: 1 copy complete, 2 eligible, 4 gating (the active counts the
    passive's acknowledgements). Integers little-endian.

    How a copy is made: a passive starts every session "resyncing": it
    ignores journal bytes until a batch starts with SNAP_BEGIN, then sets its
    own journal aside (zxb_journal_reset: DIR/previous) and appends raw from
    there. Its STATE says "copy incomplete", and the active answers that by
    writing a snapshot (the broker's snapshot callback); once the passive
    has committed the snapshot's SNAP_END and acknowledged it, the active
    starts gating: from then on a record counts as durable (the broker
    tells clients ACCEPTED) only once the passive acknowledged it too. The
    active announces gating with solo_max, the highest LSN it may have
    acknowledged alone before; the passive becomes eligible once it holds
    it. A record that does not follow on sends the passive back to
    resyncing. While the passive is silent or incomplete, the active
    acknowledges alone: the cluster keeps working on one broker, and those
    acknowledgements rest on its disk only (docs/operations.md).

    The link's protection (the same two modes as the client and worker
    endpoints; docs/operations.md "Running a pair"):
    - CURVE (cfg.cert and cfg.peer_key): the primary's ROUTER is a CURVE
      server in the ZAP domain "peer", whose handler (common/auth.c) admits
      the backup's key only; the backup's DEALER is a CURVE client that
      expects the primary's key. A peer with another key never connects.
    - A shared secret (cfg.sign): every message carries common/sign.c's
      envelope for the receiver's role (ZXP_ROLE_PEER_PRIMARY or _BACKUP)
      and is checked before anything reads it; one that fails is dropped and
      counted (logged once per connection and reason), never acted upon.
      The envelope's epoch (the receiver's per-start session) and strictly
      increasing seq refuse replays, so an old STATE or JOURNAL cannot move
      the state machine back. The primary signs in broker mode: a backup's
      first message (or its first after the primary restarted) fails the
      epoch rule but is authentic, and the primary answers it with RESUME
      [sig][R][] (signed under its session) so that the backup learns it;
      and a complete passive says its last ACK again at every heartbeat, so
      an ACK refused across a rotation of the primary's session costs a
      heartbeat, not the wait for the next commit.
      The primary sends only to the connection whose message verified last,
      and the backup takes no fixed routing id, so a stranger connecting as
      "zxb-backup" receives nothing (without a secret the name is fixed and
      a reconnecting backup takes it over).

    The tap runs on the journal's writer thread: it copies the bytes into a
    queue under a mutex and writes an eventfd; the broker's thread forwards
    them. A batch the peer socket cannot take at once (the passive is gone
    or slow) is dropped; the passive then sees a gap and resyncs.

    Lock order: one mutex (mu), the tap queue only.
*/
#include "zxb_standby.h"
#include "zx_auth.h"

#include <czmq.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* ---- the state machine -------------------------------------------------------------- */

void zxb_sb_init(zxb_sb_t *sb, bool primary, int64_t liveness_ms, int64_t now_ms)
{
    assert(sb);
    memset(sb, 0, sizeof *sb);
    sb->primary = primary;
    sb->state = primary ? ZXB_SB_PRIMARY : ZXB_SB_BACKUP;
    sb->liveness_ms = liveness_ms;
    sb->peer_expiry = now_ms + liveness_ms;
}

const char *zxb_sb_state_name(zxb_sb_state_t state)
{
    switch (state) {
    case ZXB_SB_PRIMARY: return "primary";
    case ZXB_SB_BACKUP: return "backup";
    case ZXB_SB_ACTIVE: return "active";
    case ZXB_SB_PASSIVE: return "passive";
    }
    return "?";
}

zxb_sb_result_t zxb_sb_event(zxb_sb_t *sb, zxb_sb_event_t ev, int64_t now_ms)
{
    assert(sb);
    if (ev != ZXB_SB_CLIENT_REQUEST) {
        sb->peer_expiry = now_ms + sb->liveness_ms;
    }
    switch (sb->state) {
    case ZXB_SB_PRIMARY:
    case ZXB_SB_BACKUP:
        if (ev == ZXB_SB_PEER_ACTIVE) {
            sb->state = ZXB_SB_PASSIVE; /* connected to an active peer: ready passive */
            sb->eligible = false;
        } else if (ev == ZXB_SB_PEER_STALE) {
            sb->state = ZXB_SB_ACTIVE; /* the peer is passive and cannot serve */
        } else if (sb->state == ZXB_SB_PRIMARY && ev == ZXB_SB_PEER_BACKUP) {
            sb->state = ZXB_SB_ACTIVE; /* connected to a starting backup: ready active */
        } else if ((sb->state == ZXB_SB_PRIMARY && ev == ZXB_SB_PEER_PRIMARY) ||
                   (sb->state == ZXB_SB_BACKUP && ev == ZXB_SB_PEER_BACKUP)) {
            return ZXB_SB_SAME_ROLE;
        } else if (ev == ZXB_SB_CLIENT_REQUEST) {
            /* a primary alone serves once it has waited long enough to believe
               that no backup is active; a backup alone never does */
            if (sb->state == ZXB_SB_PRIMARY && now_ms >= sb->peer_expiry) {
                sb->state = ZXB_SB_ACTIVE;
                return ZXB_SB_OK;
            }
            return ZXB_SB_REJECT;
        }
        /* PEER_PASSIVE: that passive becomes active when it sees us start */
        return ZXB_SB_OK;
    case ZXB_SB_ACTIVE:
        if (ev == ZXB_SB_PEER_ACTIVE) {
            if (!sb->primary) {
                sb->state = ZXB_SB_PASSIVE; /* the primary's journal is the one kept */
                sb->eligible = false;
            }
            return ZXB_SB_DUAL_ACTIVE;
        }
        return ZXB_SB_OK;
    case ZXB_SB_PASSIVE:
        if (ev == ZXB_SB_PEER_PRIMARY || ev == ZXB_SB_PEER_BACKUP || ev == ZXB_SB_PEER_STALE) {
            /* the active peer restarted (or cannot serve): take over if our
               copy is complete; if not, it sees us stale and serves itself */
            if (sb->eligible) {
                sb->state = ZXB_SB_ACTIVE;
            }
            return ev == ZXB_SB_PEER_STALE && !sb->eligible ? ZXB_SB_DUAL_PASSIVE : ZXB_SB_OK;
        }
        if (ev == ZXB_SB_PEER_PASSIVE) {
            /* both with complete copies, neither serving: the primary takes it */
            if (sb->primary) {
                sb->state = ZXB_SB_ACTIVE;
            }
            return ZXB_SB_DUAL_PASSIVE;
        }
        if (ev == ZXB_SB_CLIENT_REQUEST) {
            if (sb->eligible && now_ms >= sb->peer_expiry) {
                sb->state = ZXB_SB_ACTIVE; /* failover */
                return ZXB_SB_OK;
            }
            return ZXB_SB_REJECT;
        }
        return ZXB_SB_OK;
    }
    return ZXB_SB_OK;
}

/* ---- the peer link -------------------------------------------------------------------- */

#define S_SIG "ZXSB1"
#define S_BACKUP_ID "zxb-backup"
#define S_STATE_LEN (1 + 1 + 8 + 8 + ZXB_JOURNAL_LINEAGE_LEN)
#define S_JHDR_LEN (ZXB_JOURNAL_LINEAGE_LEN + 8 + 8)
#define F_COMPLETE 1
#define F_ELIGIBLE 2
#define F_GATING 4

typedef struct s_chunk {
    struct s_chunk *next;
    uint64_t first, last;
    size_t len;
    uint8_t bytes[];
} s_chunk_t;

struct zxb_standby {
    zxb_standby_config_t cfg;
    char *peer_ep;
    zxb_sb_t sb;
    zsock_t *sock;
    int efd;
    pthread_mutex_t mu;
    s_chunk_t *q_head, **q_tail;
    zxb_journal_t *j;
    int64_t next_hb;
    bool peer_alive;
    uint8_t peer_flags;
    /* active */
    uint64_t peer_acked; /* the highest LSN the passive acknowledged this copy */
    uint64_t snap_end;   /* the LSN that ends the snapshot the copy started from; 0: none */
    int64_t snap_at;     /* when it was asked (ms); 0: none */
    uint64_t seen;       /* the highest committed LSN the broker asked durable() about */
    uint64_t solo_max;   /* what this active may have acknowledged alone before gating */
    bool gating;
    /* passive */
    bool resyncing;       /* waiting for a snapshot to start the copy from */
    bool complete;        /* the copy's snapshot is committed here, and all since follows on */
    uint64_t copy_end;    /* the SNAP_END LSN the copy waits to commit; 0: not seen yet */
    uint64_t committed;   /* this journal's committed LSN */
    uint64_t acked;       /* what we acknowledged last */
    bool active_gating;   /* the active's last STATE said it counts us */
    uint64_t active_solo; /* and the solo_max it gave */
    /* primary: the routing id messages go to (signing: the connection whose
       message verified last; rid_len 0: none yet) */
    uint8_t rid[256];
    size_t rid_len;
    zxp_drops_t drops;
    uint64_t refused; /* peer messages dropped: signature check failed */
};

static void s_le64_put(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static uint64_t s_le64_get(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = v << 8 | p[i];
    }
    return v;
}

/* Sends the frames of a signed message, the routing id first on the
   primary, without waiting; false if the socket would block or has no such
   peer (then nothing is sent). */
static bool s_send_signed(zxb_standby_t *self, const uint8_t *rid, size_t rid_len, zmsg_t *m)
{
    void *h = zsock_resolve(self->sock);
    int flags = ZMQ_SNDMORE | ZMQ_DONTWAIT;
    if (self->cfg.primary) {
        if (zmq_send(h, rid, rid_len, flags) < 0) {
            return false;
        }
        flags = ZMQ_SNDMORE;
    }
    for (zframe_t *f = zmsg_first(m); f;) {
        zframe_t *next = zmsg_next(m);
        if (zmq_send(h, zframe_data(f), zframe_size(f), next ? flags : flags & ~ZMQ_SNDMORE) < 0) {
            return false; /* only the first part may fail */
        }
        flags = ZMQ_SNDMORE;
        f = next;
    }
    return true;
}

/* Sends [sig][cmd][body][extra] (and the envelope when signing) to rid on
   the primary, to the primary on the backup, without waiting; false if the
   socket would block or has no peer (then nothing is sent). */
static bool s_send_to(zxb_standby_t *self, const uint8_t *rid, size_t rid_len, char cmd,
                      const void *body, size_t len, const void *extra, size_t extra_len)
{
    if (self->cfg.primary && rid_len == 0) {
        return false; /* no verified backup yet */
    }
    if (self->cfg.sign) {
        zmsg_t *m = zmsg_new();
        zmsg_addstr(m, S_SIG);
        zmsg_addmem(m, &cmd, 1);
        zmsg_addmem(m, body, len);
        if (extra) {
            zmsg_addmem(m, extra, extra_len);
        }
        zframe_t *to = self->cfg.primary ? zframe_new(rid, rid_len) : NULL;
        int role = self->cfg.primary ? ZXP_ROLE_PEER_BACKUP : ZXP_ROLE_PEER_PRIMARY;
        bool ok =
            zx__sign_msg(self->cfg.sign, m, to, role) == 0 && s_send_signed(self, rid, rid_len, m);
        zframe_destroy(&to);
        zmsg_destroy(&m);
        return ok;
    }
    void *h = zsock_resolve(self->sock);
    if (self->cfg.primary && zmq_send(h, rid, rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        return false; /* EHOSTUNREACH (no backup connected) or EAGAIN */
    }
    if (!self->cfg.primary && zmq_send(h, S_SIG, strlen(S_SIG), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        return false;
    }
    if (self->cfg.primary) {
        zmq_send(h, S_SIG, strlen(S_SIG), ZMQ_SNDMORE);
    }
    /* the rest of a message whose first part went out cannot block */
    zmq_send(h, &cmd, 1, ZMQ_SNDMORE);
    zmq_send(h, body, len, extra ? ZMQ_SNDMORE : 0);
    if (extra) {
        zmq_send(h, extra, extra_len, 0);
    }
    return true;
}

/* The same, to the peer. */
static bool s_send(zxb_standby_t *self, char cmd, const void *body, size_t len, const void *extra,
                   size_t extra_len)
{
    return s_send_to(self, self->rid, self->rid_len, cmd, body, len, extra, extra_len);
}

static uint8_t s_flags(zxb_standby_t *self)
{
    uint8_t f = 0;
    if (self->complete) {
        f |= F_COMPLETE;
    }
    if (self->sb.eligible) {
        f |= F_ELIGIBLE;
    }
    if (self->gating) {
        f |= F_GATING;
    }
    return f;
}

static void s_send_state(zxb_standby_t *self)
{
    uint8_t b[S_STATE_LEN];
    b[0] = (uint8_t)self->sb.state;
    b[1] = s_flags(self);
    s_le64_put(b + 2, self->committed);
    s_le64_put(b + 10, self->solo_max);
    zxb_journal_lineage(self->j, b + 18);
    s_send(self, 'S', b, sizeof b, NULL, 0);
}

/* The passive's eligibility: a complete copy that holds everything the
   active may have acknowledged without it. */
static void s_update_eligible(zxb_standby_t *self)
{
    bool e = self->sb.state == ZXB_SB_PASSIVE && self->complete && self->active_gating &&
             self->committed >= self->active_solo;
    if (e != self->sb.eligible) {
        self->sb.eligible = e;
        zsys_info("standby: passive copy %s (committed LSN %" PRIu64 ")",
                  e ? "complete: may take over" : "incomplete: may not take over", self->committed);
        s_send_state(self);
    }
}

static void s_set_tap(zxb_standby_t *self);

static void s_transition(zxb_standby_t *self, zxb_sb_state_t from)
{
    zxb_sb_state_t to = self->sb.state;
    if (to == from) {
        return;
    }
    zsys_info("standby: %s -> %s", zxb_sb_state_name(from), zxb_sb_state_name(to));
    if (to == ZXB_SB_PASSIVE) {
        self->resyncing = true;
        self->complete = false;
        self->copy_end = 0;
        self->active_gating = false;
    }
    if (to == ZXB_SB_ACTIVE) {
        self->gating = false;
        self->snap_end = 0;
        self->snap_at = 0;
        self->peer_acked = 0;
    }
    s_set_tap(self);
    if (self->cfg.on_state) {
        self->cfg.on_state(self->cfg.arg, from, to);
    }
    s_send_state(self);
}

static void s_event(zxb_standby_t *self, zxb_sb_event_t ev, int64_t now_ms)
{
    zxb_sb_state_t from = self->sb.state;
    zxb_sb_result_t r = zxb_sb_event(&self->sb, ev, now_ms);
    if (r == ZXB_SB_DUAL_ACTIVE) {
        zsys_error("standby: both brokers were active (a partition with clients on both "
                   "sides); the %s stays active",
                   self->cfg.primary ? "primary (this one)" : "primary, not this backup,");
    } else if (r == ZXB_SB_SAME_ROLE) {
        zsys_error("standby: the peer is configured %s too: one must be the primary, the other "
                   "the backup",
                   self->cfg.primary ? "primary" : "backup");
    }
    s_transition(self, from);
}

/* ---- the tap (writer thread) and its forwarding (broker thread) ---------------------------- */

static void s_tap(void *arg, const uint8_t *bytes, size_t len, uint64_t first, uint64_t last)
{
    zxb_standby_t *self = arg;
    s_chunk_t *c = malloc(sizeof *c + len);
    assert(c); /* the broker may abort on out-of-memory */
    c->next = NULL;
    c->first = first;
    c->last = last;
    c->len = len;
    memcpy(c->bytes, bytes, len);
    pthread_mutex_lock(&self->mu);
    *self->q_tail = c;
    self->q_tail = &c->next;
    pthread_mutex_unlock(&self->mu);
    uint64_t one = 1;
    if (write(self->efd, &one, sizeof one) < 0) {
        /* only near overflow: it is readable then anyway */
    }
}

static void s_set_tap(zxb_standby_t *self)
{
    zxb_journal_set_tap(self->j, self->sb.state == ZXB_SB_ACTIVE ? s_tap : NULL, self);
}

static void s_forward(zxb_standby_t *self)
{
    uint64_t v;
    if (read(self->efd, &v, sizeof v) < 0) {
        /* EAGAIN: nothing new */
    }
    pthread_mutex_lock(&self->mu);
    s_chunk_t *list = self->q_head;
    self->q_head = NULL;
    self->q_tail = &self->q_head;
    pthread_mutex_unlock(&self->mu);
    uint8_t hdr[S_JHDR_LEN];
    zxb_journal_lineage(self->j, hdr);
    while (list) {
        s_chunk_t *next = list->next;
        if (self->sb.state == ZXB_SB_ACTIVE && self->peer_alive) {
            s_le64_put(hdr + 16, list->first);
            s_le64_put(hdr + 24, list->last);
            /* dropped when the socket cannot take it: the passive sees the gap */
            s_send(self, 'J', hdr, sizeof hdr, list->bytes, list->len);
        }
        free(list);
        list = next;
    }
}

/* ---- messages from the peer ---------------------------------------------------------------- */

static zxb_sb_event_t s_peer_event(uint8_t state, uint8_t flags)
{
    switch (state) {
    case ZXB_SB_PRIMARY: return ZXB_SB_PEER_PRIMARY;
    case ZXB_SB_BACKUP: return ZXB_SB_PEER_BACKUP;
    case ZXB_SB_ACTIVE: return ZXB_SB_PEER_ACTIVE;
    default: return (flags & F_ELIGIBLE) ? ZXB_SB_PEER_PASSIVE : ZXB_SB_PEER_STALE;
    }
}

static void s_on_state(zxb_standby_t *self, const uint8_t *b, int64_t now_ms)
{
    uint8_t state = b[0], flags = b[1];
    if (state < ZXB_SB_PRIMARY || state > ZXB_SB_PASSIVE) {
        return;
    }
    if (!self->peer_alive) {
        zsys_info("standby: peer is back (%s)", zxb_sb_state_name((zxb_sb_state_t)state));
    }
    self->peer_alive = true;
    self->peer_flags = flags;
    s_event(self, s_peer_event(state, flags), now_ms);
    if (self->sb.state == ZXB_SB_PASSIVE && state == ZXB_SB_ACTIVE) {
        self->active_gating = flags & F_GATING;
        self->active_solo = s_le64_get(b + 10);
        s_update_eligible(self);
    }
    if (self->sb.state == ZXB_SB_ACTIVE && state == ZXB_SB_PASSIVE &&
        (!(flags & F_COMPLETE) || !self->gating)) {
        /* a copy to start, or to restart: the passive's broke off, or this
           active acknowledged alone for a while (it dropped what it could
           not send). One snapshot at a time, asked again if the passive
           does not count after a while */
        if (self->gating) {
            zsys_warning("standby: the passive's copy broke off; acknowledging alone until "
                         "it has a new one");
            self->gating = false;
        }
        if (!self->snap_at || now_ms - self->snap_at > 4 * self->sb.liveness_ms) {
            self->snap_at = now_ms;
            self->peer_acked = 0;
            if (self->cfg.snapshot) {
                self->cfg.snapshot(self->cfg.arg);
            }
            self->snap_end = zxb_journal_last(self->j);
            zsys_info("standby: a snapshot for the passive's copy, ending at LSN %" PRIu64,
                      self->snap_end);
        }
    }
}

/* The LSN of the first SNAP_END in records (whole, checked), or 0. */
static uint64_t s_snap_end_in(const uint8_t *p, size_t len)
{
    for (size_t off = 0; off + 17 <= len;) {
        uint32_t blen = (uint32_t)p[off] | (uint32_t)p[off + 1] << 8 | (uint32_t)p[off + 2] << 16 |
                        (uint32_t)p[off + 3] << 24;
        if (p[off + 8] == ZXB_JREC_SNAP_END) {
            return s_le64_get(p + off + 9);
        }
        off += 17 + (size_t)blen;
    }
    return 0;
}

static void s_on_journal(zxb_standby_t *self, const uint8_t *hdr, const uint8_t *bytes, size_t len)
{
    if (self->sb.state != ZXB_SB_PASSIVE || len < 17) {
        return;
    }
    const uint8_t *lineage = hdr;
    if (self->resyncing) {
        if (bytes[8] != ZXB_JREC_SNAP_BEGIN) {
            return; /* until a snapshot starts the copy */
        }
        zsys_info("standby: starting a copy of the active's journal at LSN %" PRIu64
                  " (the previous copy goes to previous/)",
                  s_le64_get(hdr + 16));
        zxb_journal_reset(self->j);
        self->resyncing = false;
        self->complete = false;
        self->copy_end = 0;
        self->committed = 0;
        self->acked = 0;
    }
    char err[256];
    if (zxb_journal_append_raw(self->j, lineage, bytes, len, err, sizeof err) == 0) {
        zsys_warning("standby: the active's journal does not follow on here (%s): starting "
                     "the copy again",
                     err);
        self->resyncing = true;
        self->complete = false;
        s_update_eligible(self);
        s_send_state(self);
        return;
    }
    if (!self->copy_end) {
        self->copy_end = s_snap_end_in(bytes, len);
    }
    zxb_journal_flush(self->j);
}

static void s_on_ack(zxb_standby_t *self, uint64_t lsn)
{
    if (self->sb.state != ZXB_SB_ACTIVE || !self->snap_end) {
        return;
    }
    if (lsn > self->peer_acked) {
        self->peer_acked = lsn;
    }
    if (!self->gating && self->peer_acked >= self->snap_end) {
        /* from now on the passive counts; anything acknowledged before was
           at most what the broker was told was committed */
        self->gating = true;
        self->solo_max = self->seen;
        zsys_info("standby: the passive has a complete copy (LSN %" PRIu64
                  "); acknowledgements now wait for it",
                  lsn);
        s_send_state(self);
    }
}

/* Signing: checks and strips the envelope of a message from id (the
   primary's connection to a backup; NULL on the backup). False: dropped. */
static bool s_verify(zxb_standby_t *self, zframe_t *id, zmsg_t *m)
{
    int role = self->cfg.primary ? ZXP_ROLE_PEER_PRIMARY : ZXP_ROLE_PEER_BACKUP;
    int rc = zx__sign_verify(self->cfg.sign, m, id, role);
    if (rc == 0) {
        if (id && (zframe_size(id) != self->rid_len ||
                   memcmp(zframe_data(id), self->rid, self->rid_len) != 0)) {
            /* the backup (re)connected: its messages go there from now on */
            size_t n = zframe_size(id) < sizeof self->rid ? zframe_size(id) : sizeof self->rid;
            memcpy(self->rid, zframe_data(id), n);
            self->rid_len = n;
        }
        return true;
    }
    self->refused++;
    if (rc != ZXP_E_SIGN_FIRST) {
        /* a backup's first message is its normal start, not worth a warning */
        zxp_drop(&self->drops, "standby: peer link", id, rc, "signature check failed");
    }
    if (id && (rc == ZXP_E_SIGN_FIRST || rc == ZXP_E_SIGN_EPOCH)) {
        /* authentic (the MAC verified), signed before it knew this session:
           tell it the session (sign.c recorded whom to sign for) */
        s_send_to(self, zframe_data(id), zframe_size(id), 'R', "", 0, NULL, 0);
    }
    return false;
}

bool zxb_standby_handle(zxb_standby_t *self, int64_t now_ms)
{
    assert(self);
    s_forward(self);
    int n = 0;
    while (n < 256 && (zsock_events(self->sock) & ZMQ_POLLIN)) {
        zmsg_t *m = zmsg_recv(self->sock);
        n++;
        if (!m) {
            break;
        }
        zframe_t *id = self->cfg.primary ? zmsg_pop(m) : NULL;
        if (self->cfg.sign && !s_verify(self, id, m)) {
            zframe_destroy(&id);
            zmsg_destroy(&m);
            continue;
        }
        zframe_destroy(&id);
        zframe_t *sig = zmsg_pop(m), *cmd = zmsg_pop(m), *body = zmsg_pop(m), *extra = zmsg_pop(m);
        if (sig && cmd && body && zframe_streq(sig, S_SIG) && zframe_size(cmd) == 1) {
            char c = (char)zframe_data(cmd)[0];
            if (c == 'S' && zframe_size(body) == S_STATE_LEN) {
                s_on_state(self, zframe_data(body), now_ms);
            } else if (c == 'J' && zframe_size(body) == S_JHDR_LEN && extra) {
                if (!self->peer_alive) {
                    zsys_info("standby: peer is back (its journal)");
                }
                self->peer_alive = true;
                s_on_journal(self, zframe_data(body), zframe_data(extra), zframe_size(extra));
            } else if (c == 'A' && zframe_size(body) == 8) {
                s_on_ack(self, s_le64_get(zframe_data(body)));
            } else if (c == 'R' && zframe_size(body) == 0 && !self->cfg.primary) {
                s_send_state(self); /* the primary knows us now: our state at once */
            }
        }
        zframe_destroy(&sig);
        zframe_destroy(&cmd);
        zframe_destroy(&body);
        zframe_destroy(&extra);
        zmsg_destroy(&m);
    }
    return n == 256;
}

void zxb_standby_tick(zxb_standby_t *self, int64_t now_ms)
{
    assert(self);
    if (self->peer_alive && now_ms >= self->sb.peer_expiry) {
        self->peer_alive = false;
        zsys_warning("standby: peer silent for %" PRId64 " ms%s", self->sb.liveness_ms,
                     self->sb.state == ZXB_SB_ACTIVE ? ": acknowledging alone" : "");
        if (self->gating) {
            self->gating = false;
        }
        self->snap_at = 0;
    }
    if (now_ms >= self->next_hb) {
        self->next_hb = now_ms + self->cfg.heartbeat_ms;
        s_send_state(self);
        if (self->cfg.sign && self->sb.state == ZXB_SB_PASSIVE && self->complete && self->acked) {
            /* an ACK that went out can still be refused (signed for a
               session of the primary's that it has just rotated away from):
               say it again, so that acknowledgements never wait for the
               next commit. The active keeps the highest. */
            uint8_t b[8];
            s_le64_put(b, self->acked);
            s_send(self, 'A', b, sizeof b, NULL, 0);
        }
    }
}

int zxb_standby_client_request(zxb_standby_t *self, int64_t now_ms)
{
    assert(self);
    zxb_sb_state_t from = self->sb.state;
    zxb_sb_result_t r = zxb_sb_event(&self->sb, ZXB_SB_CLIENT_REQUEST, now_ms);
    s_transition(self, from);
    return r == ZXB_SB_OK && self->sb.state == ZXB_SB_ACTIVE ? 0 : -1;
}

void zxb_standby_committed(zxb_standby_t *self, uint64_t lsn, int64_t now_ms)
{
    assert(self);
    self->committed = lsn;
    if (self->sb.state != ZXB_SB_PASSIVE || self->resyncing) {
        return;
    }
    if (!self->complete && self->copy_end && lsn >= self->copy_end) {
        self->complete = true;
        s_send_state(self);
    }
    if (self->complete && lsn > self->acked) {
        uint8_t b[8];
        s_le64_put(b, lsn);
        if (s_send(self, 'A', b, sizeof b, NULL, 0)) {
            self->acked = lsn;
        }
    }
    s_update_eligible(self);
}

uint64_t zxb_standby_durable(zxb_standby_t *self, uint64_t committed)
{
    assert(self);
    if (committed > self->seen) {
        self->seen = committed;
    }
    if (self->sb.state == ZXB_SB_ACTIVE && self->gating) {
        return committed < self->peer_acked ? committed : self->peer_acked;
    }
    return committed;
}

zxb_sb_state_t zxb_standby_state(zxb_standby_t *self)
{
    assert(self);
    return self->sb.state;
}

uint64_t zxb_standby_refused(zxb_standby_t *self)
{
    assert(self);
    return self->refused;
}

bool zxb_standby_eligible(zxb_standby_t *self)
{
    assert(self);
    return self->sb.eligible;
}

void zxb_standby_set_journal(zxb_standby_t *self, zxb_journal_t *journal)
{
    assert(self);
    if (self->j && self->j != journal) {
        zxb_journal_set_tap(self->j, NULL, NULL);
    }
    self->j = journal;
    if (journal) {
        s_set_tap(self);
    }
}

int zxb_standby_fds(zxb_standby_t *self, int fds[2])
{
    assert(self);
    fds[0] = zsock_fd(self->sock);
    fds[1] = self->efd;
    return 2;
}

zxb_standby_t *zxb_standby_new(const zxb_standby_config_t *cfg, int64_t now_ms, char *err,
                               size_t errlen)
{
    assert(cfg && cfg->peer && cfg->journal && cfg->heartbeat_ms > 0 && cfg->liveness > 0);
    zxb_standby_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    self->cfg = *cfg;
    self->peer_ep = strdup(cfg->peer);
    self->cfg.peer = self->peer_ep;
    self->j = cfg->journal;
    self->efd = -1;
    self->q_tail = &self->q_head;
    zxp_drops_init(&self->drops);
    if (cfg->primary && !cfg->sign) {
        memcpy(self->rid, S_BACKUP_ID, strlen(S_BACKUP_ID));
        self->rid_len = strlen(S_BACKUP_ID);
    }
    self->resyncing = true;
    self->committed = zxb_journal_committed(self->j);
    pthread_mutex_init(&self->mu, NULL);
    zxb_sb_init(&self->sb, cfg->primary, (int64_t)cfg->heartbeat_ms * cfg->liveness, now_ms);
    self->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    self->sock = zsock_new(cfg->primary ? ZMQ_ROUTER : ZMQ_DEALER);
    if (!self->peer_ep || self->efd < 0 || !self->sock) {
        snprintf(err, errlen, "standby: cannot make its socket or eventfd");
        goto fail;
    }
    zsock_set_linger(self->sock, 0);
    zsock_set_sndhwm(self->sock, 10000);
    /* a connection that went dead (a cut, a host gone) is dropped and made
       again after the liveness window instead of waiting out TCP's
       retransmissions: the brokers hear each other soon after a heal */
    zsock_set_heartbeat_ivl(self->sock, (int)cfg->heartbeat_ms);
    zsock_set_heartbeat_timeout(self->sock, (int)(cfg->heartbeat_ms * cfg->liveness));
    if (cfg->cert && cfg->peer_key) {
        if (cfg->primary) {
            if (zx__auth_server_setup(self->sock, cfg->cert, ZX__AUTH_DOMAIN_PEER) != 0) {
                snprintf(err, errlen, "standby: cannot make the peer endpoint a CURVE server");
                goto fail;
            }
        } else {
            zcert_apply(cfg->cert, self->sock);
            zsock_set_curve_serverkey(self->sock, cfg->peer_key);
        }
    }
    if (cfg->primary) {
        zsock_set_router_mandatory(self->sock, 1);
        /* a backup that reconnects (after a cut, its old connection not yet
           known dead here) takes its name over: messages to it must go on
           the new connection, not the dead one */
        zsock_set_router_handover(self->sock, 1);
        if (zsock_bind(self->sock, "%s", cfg->peer) < 0) {
            snprintf(err, errlen, "standby: cannot bind the peer endpoint %s: %s", cfg->peer,
                     zmq_strerror(zmq_errno()));
            goto fail;
        }
    } else {
        if (!cfg->sign) {
            zsock_set_identity(self->sock, S_BACKUP_ID);
        }
        if (zsock_connect(self->sock, "%s", cfg->peer) < 0) {
            snprintf(err, errlen, "standby: cannot connect to the peer endpoint %s: %s", cfg->peer,
                     zmq_strerror(zmq_errno()));
            goto fail;
        }
    }
    self->next_hb = now_ms;
    return self;
fail:
    zxb_standby_destroy(&self);
    return NULL;
}

void zxb_standby_destroy(zxb_standby_t **self_p)
{
    assert(self_p);
    zxb_standby_t *self = *self_p;
    if (!self) {
        return;
    }
    /* the tap goes first: the writer thread must not call into a freed object */
    if (self->j) {
        zxb_journal_set_tap(self->j, NULL, NULL);
    }
    while (self->q_head) {
        s_chunk_t *c = self->q_head;
        self->q_head = c->next;
        free(c);
    }
    zsock_destroy(&self->sock);
    if (self->efd >= 0) {
        close(self->efd);
    }
    pthread_mutex_destroy(&self->mu);
    zxp_drops_fini(&self->drops);
    free(self->peer_ep);
    free(self);
    *self_p = NULL;
}
