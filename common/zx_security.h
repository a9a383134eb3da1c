/*  zx_security.h - the peer side (client, worker) of zexec security in one
    object: CURVE keys (--key, --server-key) and shared-secret signing
    (--secret-file or ZEXEC_SECRET), applied to a DEALER with one call at
    socket setup and checked with one call per received message. The broker
    side is broker/security.c. docs/security.md has the model.
*/
#ifndef ZX_SECURITY_H
#define ZX_SECURITY_H

#include <czmq.h>
#include <stdbool.h>

typedef struct zx__sec zx__sec_t;

/* key and server_key: both (CURVE) or neither. secret_file, else the
   environment's ZEXEC_SECRET, turns signing on. scrub_env: unset
   ZEXEC_SECRET after reading it (programs, not libraries). NULL on a
   configuration error (logged): the caller must not connect. */
zx__sec_t *zx__sec_new(const char *key, const char *server_key, const char *secret_file,
                       bool scrub_env);
void zx__sec_destroy(zx__sec_t **self_p);

/* Before connect, on every new DEALER: CURVE client keys and the signing
   hook for a receiver of peer_role (ZXP_ROLE_BROKER_C or _W). self may be
   NULL (nothing on). 0 or -1. */
int zx__sec_socket(zx__sec_t *self, zsock_t *sock, int peer_role);

/* Every received message, before zxp_decode: checks and strips the
   signature for a receiver of role. 0, or a ZXP_E_SIGN_* code: drop the
   message (zxp_drop names the code). self NULL: 0. */
int zx__sec_verify(zx__sec_t *self, zmsg_t *msg, int role);

bool zx__sec_signing(const zx__sec_t *self);

/* When signing: the broker session our messages are signed for now (16
   bytes, zero before the broker's first verified message); else NULL. A
   RESET from a session other than the one a READY was signed for means the
   broker dropped that READY and is news (worker/session.c). */
const uint8_t *zx__sec_epoch(const zx__sec_t *self);

#endif
