/*  zxb_standby.h - the standby broker (standby.c): two brokers, a primary and
    a backup, one active and one passive (the Binary Star pattern of the
    ZeroMQ Guide, chapter 4), the active's journal streamed to the passive.

    Two parts:

    - The state machine (zxb_sb_t), pure: events in (the peer's announced
      state, a client's request), the time as an argument, a result out. It
      decides who is active. A test drives it with a fake clock.
    - The peer link (zxb_standby_t): a DEALER/ROUTER pair on the --peer
      endpoint (the primary binds a ROUTER, the backup connects a DEALER),
      STATE heartbeats both ways, the active's journal bytes (from the
      journal's tap) to the passive, which appends them raw to its own
      journal and acknowledges the LSNs it has committed.

    The rule that decides who is active (no split brain): a broker becomes
    active only when (1) its peer says it is a primary or backup that has
    just started, or a passive that cannot take over, or (2) its peer has
    been silent for heartbeat x liveness AND a client's HELLO or SUBMIT has
    reached it. A partition between the brokers alone changes nothing while
    clients reach the active: the passive gets no client request. A backup
    that starts alone never serves (it waits for the primary); a primary that
    starts alone serves after liveness once a client comes. A passive takes
    over only with a complete copy: it has committed a snapshot of the
    active's journal and everything after it, and everything the active
    acknowledged before it counted the passive. Were both active at once
    (a client reached each side of a partition), the backup steps down when
    they see each other again.

    Threads: everything here runs on the broker's thread except the tap,
    which hands the journal's bytes over through a queue and an eventfd.

    How the broker uses it (main.c, broker.c, durable.c):
      - flags --peer ENDPOINT and --primary / --backup; with --peer the
        broker needs --journal; after replaying its journal it makes the
        standby with the journal, the heartbeat and liveness, on_state and
        a snapshot callback (durable.c's snapshot writer), and the link's
        protection from security.c (zxb_sec_peer: CURVE keys, a signer);
      - its poll loop adds zxb_standby_fds and, when they fire and before
        it sleeps, calls zxb_standby_handle; zxb_standby_tick at its tick;
        when the journal's fd fires, zxb_standby_committed(committed);
      - HELLO and SUBMIT first ask zxb_standby_client_request: -1 means
        answer that this broker is not active (the client tries the other)
        and do nothing else; workers are refused likewise while passive;
      - ACCEPTED and the workers' results_ack use
        zxb_standby_durable(committed) in place of the committed LSN;
      - a passive appends nothing itself; on_state PASSIVE -> ACTIVE: the
        broker destroys and reopens its journal, replays it into its tables
        as at a start, and gives the new handle to zxb_standby_set_journal;
        ACTIVE -> PASSIVE (a dual active resolved): it stops serving and
        restarts as a passive (its journal is set aside when the copy
        starts).
*/
#ifndef ZXB_STANDBY_H
#define ZXB_STANDBY_H

#include "zx_sign.h"
#include "zxb_journal.h"

#include <stdbool.h>
#include <stdint.h>

/* ---- the state machine ------------------------------------------------------------- */

typedef enum { ZXB_SB_PRIMARY = 1, ZXB_SB_BACKUP, ZXB_SB_ACTIVE, ZXB_SB_PASSIVE } zxb_sb_state_t;

typedef enum {
    ZXB_SB_PEER_PRIMARY = 1, /* the peer announced: a primary, just started */
    ZXB_SB_PEER_BACKUP,      /* a backup, just started */
    ZXB_SB_PEER_ACTIVE,      /* active */
    ZXB_SB_PEER_PASSIVE,     /* passive, with a complete copy: it may take over */
    ZXB_SB_PEER_STALE,       /* passive without a complete copy: it never takes over */
    ZXB_SB_CLIENT_REQUEST    /* a client's HELLO or SUBMIT reached this broker */
} zxb_sb_event_t;

typedef enum {
    ZXB_SB_OK,          /* accepted (the state may have changed) */
    ZXB_SB_REJECT,      /* a client request this broker must not serve (not active) */
    ZXB_SB_DUAL_ACTIVE, /* both were active: the backup stepped down to passive */
    ZXB_SB_DUAL_PASSIVE,
    ZXB_SB_SAME_ROLE /* both configured primary, or both backup: a configuration error */
} zxb_sb_result_t;

typedef struct {
    bool primary;
    zxb_sb_state_t state;
    int64_t liveness_ms; /* heartbeat x liveness */
    int64_t peer_expiry; /* the peer counts as gone from then (monotonic ms) */
    bool eligible;       /* passive: its copy holds everything the active acknowledged */
} zxb_sb_t;

/* Starts as PRIMARY or BACKUP; the peer counts as present until now + liveness_ms. */
void zxb_sb_init(zxb_sb_t *sb, bool primary, int64_t liveness_ms, int64_t now_ms);
/* Applies an event at now_ms. Peer events also push the peer's expiry to now + liveness. */
zxb_sb_result_t zxb_sb_event(zxb_sb_t *sb, zxb_sb_event_t ev, int64_t now_ms);
const char *zxb_sb_state_name(zxb_sb_state_t state);

/* ---- the peer link ---------------------------------------------------------------------- */

typedef struct zxb_standby zxb_standby_t;

typedef struct {
    bool primary;
    const char *peer; /* e.g. tcp://10.0.0.5:5573: the primary binds it, the backup connects */
    uint32_t heartbeat_ms;
    uint32_t liveness;
    zxb_journal_t *journal; /* borrowed; replayed already */
    /* on the broker's thread: */
    void (*on_state)(void *arg, zxb_sb_state_t from, zxb_sb_state_t to);
    /* active: write a snapshot now (zxb_journal_snapshot_begin, a record per live object,
       zxb_journal_snapshot_end, zxb_journal_flush), to start the passive's copy */
    void (*snapshot)(void *arg);
    void *arg;
    /* The link's protection (borrowed; NULL: none), broker/security.c:
       CURVE with cert (this broker's secret certificate) and peer_key (the
       other's public key, Z85): the primary's ROUTER is a CURVE server in
       ZAP domain "peer" (a ZAP handler admitting that key must run in the
       process: zx__auth_new), the backup's DEALER a CURVE client. sign: a
       signer made from the shared secret (zx__sign_new: broker mode on the
       primary, peer mode on the backup): every message signed and checked,
       replays refused. */
    zcert_t *cert;
    const char *peer_key;
    zx__sign_t *sign;
} zxb_standby_config_t;

/* Binds or connects the peer socket; NULL with err on failure. */
zxb_standby_t *zxb_standby_new(const zxb_standby_config_t *cfg, int64_t now_ms, char *err,
                               size_t errlen);
void zxb_standby_destroy(zxb_standby_t **self_p);
/* The file descriptors to poll for POLLIN (the peer socket's ZMQ_FD, the tap's eventfd);
   returns how many (2). */
int zxb_standby_fds(zxb_standby_t *self, int fds[2]);
/* Reads whatever arrived (peer messages, tap bytes to forward); call when a fd fired and
   before sleeping (ZMQ_FD is edge-triggered). Returns true if the peer socket may hold more. */
bool zxb_standby_handle(zxb_standby_t *self, int64_t now_ms);
/* Heartbeats and the peer's expiry; call at the broker's tick. */
void zxb_standby_tick(zxb_standby_t *self, int64_t now_ms);
/* A client's HELLO or SUBMIT: 0 if this broker serves it (it may just have become active;
   on_state was called), -1 if it must not (the client should try the other broker). */
int zxb_standby_client_request(zxb_standby_t *self, int64_t now_ms);
/* The broker's journal has committed up to lsn (call after zxb_journal_committed): a
   passive acknowledges it to the active. */
void zxb_standby_committed(zxb_standby_t *self, uint64_t lsn, int64_t now_ms);
/* Active: the highest LSN durable in the pair, given the local committed LSN: while the
   passive counts (its copy is complete and it is alive), what it acknowledged too;
   otherwise the local committed LSN (the active acknowledges alone). */
uint64_t zxb_standby_durable(zxb_standby_t *self, uint64_t committed);
zxb_sb_state_t zxb_standby_state(zxb_standby_t *self);
/* Peer messages dropped because their signature check failed. */
uint64_t zxb_standby_refused(zxb_standby_t *self);
/* Passive: whether it may take over (its copy is complete). */
bool zxb_standby_eligible(zxb_standby_t *self);
/* After the broker reopened its journal (a takeover replays it): use this one.
   NULL lets go of the current one (its tap removed) so that the broker can
   close it before it reopens the directory (the journal's lock allows one
   handle); nothing else may be called until a journal is set again, except
   from within on_state, whose caller goes on with the journal set there. */
void zxb_standby_set_journal(zxb_standby_t *self, zxb_journal_t *journal);

#endif
