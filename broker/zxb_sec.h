/*  zxb_sec.h - the broker side of zexec security (broker/security.c): the
    bind policy, CURVE server sockets with a ZAP handler per endpoint, and
    shared-secret signing. Process-wide state: one broker per process.
    Order: zxb_sec_init, then sockets (zxb_sec_socket after zxp_sock_setup,
    before bind), zxb_sec_verify on every received message before
    zxp_decode; zxb_sec_fini after the sockets are gone.
*/
#ifndef ZXB_SEC_H
#define ZXB_SEC_H

#include "zx_proto.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    const char *key;         /* --key: the broker's secret certificate (CURVE on) */
    const char *client_keys; /* --client-keys DIR */
    const char *worker_keys; /* --worker-keys DIR */
    const char *secret_file; /* --secret-file (else $ZEXEC_SECRET) */
    int64_t max_msg;         /* --max-msg; 0: ZXP_MAX_MSG */
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
/* The attempt-token key (16 bytes) derived from the shared secret: true, or
   false when no secret is configured (out untouched). */
bool zxb_sec_token_key(uint8_t out[16]);

#endif
