/*  zx_auth.h - CURVE authentication for zexec: certificate files, socket
    setup for the broker (server) and its peers (clients, workers), the ZAP
    handler with one allowlist per endpoint, and the bind policy.

    Why our own ZAP handler: czmq's zauth keeps one certificate store for
    every ZAP domain, so a key admitted on the client endpoint would also be
    admitted on the worker endpoint. zx__auth answers ZAP requests (RFC 27) on
    inproc://zeromq.zap.01 with a store per domain: "clients" and "workers".

    Fail closed, everywhere:
    - server sockets set ZMQ_ZAP_ENFORCE_DOMAIN, so with no ZAP handler bound
      (never started, or destroyed) libzmq refuses every CURVE handshake
      instead of admitting anyone who knows the server key;
    - a missing or empty key folder, or one with a file that does not parse as
      a certificate, refuses every peer of that domain (and says so in the log);
    - any mechanism but CURVE, and any domain but the two above and "peer"
      (one key, given at start: a pair's other broker), is refused.
    docs/security.md describes the whole model.
*/
#ifndef ZX_AUTH_H
#define ZX_AUTH_H

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

#define ZX__AUTH_DOMAIN_CLIENTS "clients"
#define ZX__AUTH_DOMAIN_WORKERS "workers"
#define ZX__AUTH_DOMAIN_PEER "peer" /* the peer link of a pair of brokers: one key */

/* Largest certificate file we read: a zcert file is a few hundred bytes. */
#define ZX__AUTH_CERT_MAX 65536

/* ---- certificate files ------------------------------------------------------- */

/* Parses the text of a zcert file (ZPL, as zcert_save writes it): a
   "curve" section with a 40-character Z85 "public-key" and, when
   need_secret, a "secret-key" whose public half must match. Returns a new
   certificate (the secret is all zero when absent), or NULL with a reason
   in err. Never trusts the input: bounded size, every key decoded and
   checked. */
zcert_t *zx__auth_cert_parse(const char *text, size_t len, bool need_secret, char *err,
                             size_t errlen);

/* Reads and parses a certificate file (at most ZX__AUTH_CERT_MAX bytes).
   For a secret file, warns when group or others may read it. NULL with a
   reason in err on any failure. */
zcert_t *zx__auth_cert_load(const char *path, bool need_secret, char *err, size_t errlen);

/* Writes dir/name (public) and dir/name_secret (secret, mode 0600) for a new
   key pair; refuses to overwrite. 0 or -1 with a reason in err. */
int zx__auth_keygen(const char *dir, const char *name, char *err, size_t errlen);

/* ---- sockets ------------------------------------------------------------------ */

/* Broker side, before bind: CURVE server with the broker's secret
   certificate, ZAP domain, ZMQ_ZAP_ENFORCE_DOMAIN. 0 or -1. */
int zx__auth_server_setup(zsock_t *sock, zcert_t *server_cert, const char *domain);

/* Client or worker side, before connect: loads key_file (our secret
   certificate) and server_key_file (the broker's public certificate) and
   applies them. 0, or -1 with the reason logged. */
int zx__auth_client_setup(zsock_t *sock, const char *key_file, const char *server_key_file);

/* ---- the ZAP handler ------------------------------------------------------------ */

typedef struct zx__auth zx__auth_t;

/* Loads the allowlists (a NULL folder admits nobody on that domain) and
   starts the ZAP handler in this process's czmq context. Folders are
   re-read when their modification time changes, so keys can be added or
   revoked without a restart. peer_key: the one public key (Z85) admitted on
   the "peer" domain (a pair's primary admits its backup there); NULL admits
   nobody on it. NULL if the handler could not bind (another ZAP handler
   already runs in the process). */
zx__auth_t *zx__auth_new(const char *client_keys_dir, const char *worker_keys_dir,
                         const char *peer_key);

/* Stops the handler. Sockets with ZMQ_ZAP_ENFORCE_DOMAIN refuse every new
   connection from then on. */
void zx__auth_destroy(zx__auth_t **self_p);

/* Number of keys admitted on a domain now (-1: the folder is missing,
   unreadable or holds a bad file, and the domain refuses everyone). */
int zx__auth_keys(zx__auth_t *self, const char *domain);

/* Handshakes admitted and refused so far, over both domains. */
void zx__auth_counts(zx__auth_t *self, uint64_t *admitted, uint64_t *refused);

/* ---- bind policy ----------------------------------------------------------------- */

/* True if endpoint only accepts connections from this host: tcp:// on
   127.0.0.0/8, localhost or [::1], ipc:// and inproc://. */
bool zx__auth_endpoint_is_loopback(const char *endpoint);

/* The broker's start-up rule: a non-loopback endpoint needs CURVE or a
   shared secret, or insecure. 0 if the broker may bind (warning logged when
   it is insecure), -1 with the reason logged. */
int zx__auth_bind_check(const char *endpoint, bool curve, bool secret, bool insecure);

#endif
