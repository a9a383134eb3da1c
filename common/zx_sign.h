/*  zx_sign.h - shared-secret message signing for ZXP (HMAC-SHA256 with
    replay protection), usable by the broker, the worker and the client.

    Every signed message carries one extra final frame, the envelope
    (docs/security.md "Shared-secret mode", docs/protocol.md §10):

      offset size
       0      2   'Z' 'S'
       2      1   envelope version (1)
       3      1   receiver role (ZXP_ROLE_*): a message for one endpoint or
                  direction is never valid on another
       4     16   sender session: random per sender instance
      20     16   epoch: the receiver's session as the sender last saw it
                  (zero when it has not heard from the receiver yet)
      36      8   seq: big-endian, strictly increasing per sender
      44     32   HMAC-SHA256(K, "ZXS1" || bytes 2..43 || u32 frame count ||
                  for each other frame: u64 length || bytes)

    K = HMAC-SHA256(secret, "zexec ZXS1 key"). The routing id frame of a
    ROUTER is not signed (it is not part of the message as sent).

    Replay rules (a record is made only after the MAC verifies):
    - the epoch must equal the receiver's current session. The broker draws
      a new session at every start, so a message captured before a restart,
      or sent to another broker, fails here (ZXP_E_SIGN_EPOCH); the broker
      answers such a message (its MAC verified) with a RESET signed under its
      new session, which tells the peer the new epoch;
    - seq must be above the highest seen from that sender session
      (ZXP_E_SIGN_REPLAY). The broker keeps the highest seq of every sender
      session verified under its current session and its previous one (only
      verified ones, so forgeries cannot fill the table); a peer keeps the
      broker's, and draws a new session of its own when the broker's
      changes, so nothing sent to the old one verifies.
    - the broker's session rotates (zx__sign_rotate) every ZX__SIGN_ROTATE_MS,
      or at once when ZX__SIGN_MAX_SESSIONS / 2 senders were verified under
      the current one. Messages for the previous session are still accepted
      from the senders recorded under it (in flight at the rotation); for
      any older session they fail the epoch rule, so the records of those
      sessions are dropped without reopening any replay. A live peer adopts
      the new session from the broker's next message (heartbeats: within a
      second) and carries on with a new session of its own.

    A zx__sign_t is used by one thread: the one that owns its socket.
*/
#ifndef ZX__SIGN_H
#define ZX__SIGN_H

#include "zx_proto.h"

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

#define ZX__SIGN_ENV_LEN 76
#define ZX__SIGN_MAC_LEN 32
#define ZX__SIGN_MIN_SECRET 16              /* bytes */
#define ZX__SIGN_MAX_SECRET 4096            /* bytes */
#define ZX__SIGN_MAX_SESSIONS 1000000       /* sender sessions remembered, both generations */
#define ZX__SIGN_ROTATE_MS (10 * 60 * 1000) /* the broker's session lasts at most this */

/* Errors: the ZXP_E_SIGN_* codes of zx_proto.h (one family with the
   decoder's, named by zxp_strerror). */

/* Reads the shared secret: secret_file if given, else the environment
   variable ZEXEC_SECRET; trailing whitespace is dropped; 16..4096 bytes.
   Returns 1 with key and len set (free *key with zx__sign_key_free), 0 when
   neither is set, -1 with the reason logged. scrub_env unsets ZEXEC_SECRET
   once read, so programs the process starts (the worker's exec built-in)
   do not inherit it: only call it that way before starting threads. */
int zx__sign_key_load(const char *secret_file, bool scrub_env, uint8_t **key, size_t *len);
void zx__sign_key_free(uint8_t **key, size_t len);

typedef struct zx__sign zx__sign_t;

/* broker: many peers, told apart by routing id; otherwise one peer (the
   broker). NULL on failure. The secret is copied (and the copy derived). */
zx__sign_t *zx__sign_new(const uint8_t *secret, size_t len, bool broker);
void zx__sign_destroy(zx__sign_t **self_p);

/* Convenience: zx__sign_key_load + zx__sign_new. *rc: 1 signing on, 0 no
   secret configured (NULL returned), -1 error (NULL returned). */
zx__sign_t *zx__sign_new_from_config(const char *secret_file, bool scrub_env, bool broker, int *rc);

/* Appends the envelope to msg, whose first frame is frame 0 (no routing id).
   peer: the routing id the message goes to on a ROUTER, NULL on a DEALER.
   role: the receiver's role. 0 or -1. */
int zx__sign_msg(zx__sign_t *self, zmsg_t *msg, zframe_t *peer, int role);

/* Checks the envelope of msg (first frame is frame 0; the routing id popped
   and given as peer on a ROUTER) for a receiver of role, records its seq,
   and removes the envelope frame. 0 or a ZXP_E_SIGN_* code; msg unchanged on
   error. */
int zx__sign_verify(zx__sign_t *self, zmsg_t *msg, zframe_t *peer, int role);

/* Makes every zxp_out_send and zxp_send_* on sock sign for a receiver of
   peer_role (ZXP_ROLE_CLIENT on the broker's client socket, ZXP_ROLE_BROKER_C
   on a client's, ...). self NULL detaches. self must outlive the socket's
   use, or be detached first. A peer (not broker) signer signs one socket:
   attaching a new one (after a reconnect) detaches the old. */
void zx__sign_attach(zx__sign_t *self, zsock_t *sock, int peer_role);

/* Broker: starts a new session now (the previous one stays valid for its
   recorded senders; older ones are forgotten). */
void zx__sign_rotate(zx__sign_t *self);
/* Broker: the rotation window in ms (<= 0: ZX__SIGN_ROTATE_MS) and the
   sessions remembered over both generations (< 2: ZX__SIGN_MAX_SESSIONS).
   For tests. */
void zx__sign_set_limits(zx__sign_t *self, int64_t window_ms, size_t max_sessions);
/* Broker: rotations so far. */
uint64_t zx__sign_rotations(zx__sign_t *self);

/* A 32-byte key for another use, HMAC(K, label): the same for every process
   holding the secret, and independent of the signing key. 0 or -1. */
int zx__sign_derive(zx__sign_t *self, const char *label, uint8_t out[32]);

/* This side's current session (16 bytes), for tests and logs. */
const uint8_t *zx__sign_session(zx__sign_t *self);
/* Peer (client, worker): the broker session it signs for now, the epoch of
   its next message (16 bytes, zero before the first verified message). */
const uint8_t *zx__sign_epoch(zx__sign_t *self);
/* Messages verified and refused so far. */
void zx__sign_counts(zx__sign_t *self, uint64_t *verified, uint64_t *refused);

#endif
