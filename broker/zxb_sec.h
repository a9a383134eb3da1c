/*  zxb_sec.h - the broker side of zexec security (broker/security.c): the
    bind policy, CURVE server sockets with a ZAP handler per endpoint, and
    shared-secret signing; and the same two modes for the peer link of a
    pair of brokers (standby.c), whose keys and signer are handed to the
    standby. Process-wide state: one broker per process.
    Order: zxb_sec_init, then sockets (zxb_sec_socket after zxp_sock_setup,
    before bind), zxb_sec_verify on every received message before
    zxp_decode while zxb_sec_signing(); zxb_sec_fini after the sockets
    are gone.
*/
#ifndef ZXB_SEC_H
#define ZXB_SEC_H

#include "zx_proto.h"
#include "zx_sign.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    const char *key;         /* --key: the broker's secret certificate (CURVE on) */
    const char *client_keys; /* --client-keys DIR */
    const char *worker_keys; /* --worker-keys DIR */
    const char *secret_file; /* --secret-file (else $ZEXEC_SECRET) */
    int64_t max_msg;         /* --max-msg; 0: ZXP_MAX_MSG */
    const char *peer;        /* --peer: one of a pair (NULL: alone) */
    bool pair_primary;       /* --primary (else --backup) */
    const char *peer_key;    /* --peer-key: the other broker's public certificate */
} zxb_sec_config_t;

/* Loads keys and the secret, starts the ZAP handler, sets the message
   limit. 0, or -1 with the reason logged (the broker must not start). */
int zxb_sec_init(const zxb_sec_config_t *cfg);
void zxb_sec_fini(void);
/* CURVE server and signing on one of the two ROUTER sockets. 0 or -1. */
int zxb_sec_socket(zsock_t *sock, bool workers);
/* Checks and strips the signature of a message from rid (frame 0 first).
   0: go on; -1: dropped and counted (and answered by RESET when it was
   signed under a previous broker session). */
int zxb_sec_verify(zsock_t *sock, bool workers, zframe_t *rid, zmsg_t *msg, zxp_drops_t *drops);
/* Whether messages are signed (a shared secret is configured): then each
   must be received whole for zxb_sec_verify. */
bool zxb_sec_signing(void);
/* The peer link's protection (NULLs: none), for the standby's
   configuration: this broker's certificate and the peer's public key (Z85)
   for CURVE, and the link's own signer (broker mode on the primary, which
   answers many connections; peer mode on the backup). Owned here. */
void zxb_sec_peer(zcert_t **cert, const char **peer_key, zx__sign_t **sign);
/* The start-up rule for the peer endpoint (bound by the primary, connected
   to by the backup): not loopback needs CURVE or a shared secret, or
   insecure. 0, or -1 with the reason logged. */
int zxb_sec_peer_check(const char *endpoint, bool insecure);
/* The attempt-token key (16 bytes) derived from the shared secret: true, or
   false when no secret is configured (out untouched). */
bool zxb_sec_token_key(uint8_t out[16]);

#endif
