/*  security.c - the broker's security: whether an endpoint may be bound,
    CURVE on both ROUTER sockets with one ZAP domain (and allowlist) each,
    and shared-secret signing; for a pair of brokers, the same for the peer
    link: CURVE with --key and the other broker's --peer-key (the primary's
    ZAP domain "peer" admits that one key), and a signer of its own made
    from the same secret. The mechanisms live in common/ (auth.c, sign.c);
    this file is their configuration for the broker. See docs/security.md.
*/
#include "zxb.h"
#include "zxb_sec.h"
#include "zx_auth.h"
#include "zx_sign.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

static struct {
    bool ready;
    zcert_t *cert;
    zx__auth_t *auth;
    zx__sign_t *sign;
    char *peer_pk;         /* CURVE on the peer link: the other broker's public key */
    zx__sign_t *peer_sign; /* the peer link's signer */
} s_sec;

int zxb_sec_init(const zxb_sec_config_t *cfg)
{
    char err[512];
    zxp_set_max_msg(cfg->max_msg);
    if ((cfg->client_keys || cfg->worker_keys) && !cfg->key) {
        zsys_error("--client-keys and --worker-keys need --key (the broker's secret "
                   "certificate: zexec keygen DIR broker)");
        return -1;
    }
    if (cfg->peer_key && (!cfg->peer || !cfg->key)) {
        zsys_error("--peer-key needs --peer and --key (CURVE on the link of a pair of brokers)");
        return -1;
    }
    if (cfg->peer && cfg->key && !cfg->peer_key) {
        /* CURVE everywhere but on the link that carries the whole journal
           would be a trap: say so rather than leave it open */
        zsys_error("--key with --peer needs --peer-key FILE: the other broker's public "
                   "certificate (zexec keygen DIR NAME writes DIR/NAME), so that the peer link "
                   "is CURVE too");
        return -1;
    }
    if (cfg->peer_key) {
        zcert_t *pc = zx__auth_cert_load(cfg->peer_key, false, err, sizeof err);
        if (!pc) {
            zsys_error("--peer-key %s", err);
            return -1;
        }
        s_sec.peer_pk = strdup(zcert_public_txt(pc));
        zcert_destroy(&pc);
    }
    if (cfg->key) {
        s_sec.cert = zx__auth_cert_load(cfg->key, true, err, sizeof err);
        if (!s_sec.cert) {
            zsys_error("--key %s", err);
            zxb_sec_fini();
            return -1;
        }
        /* folders missing or empty are not fatal, but refuse every peer of
           that endpoint (fail closed), loudly */
        bool zap = true;
#ifdef ZX_TEST_HOOKS
        /* test hook, only in the test build zexec-broker-testhooks (never
           installed; tests/test_security.c): run with no ZAP handler to show
           that CURVE then refuses everyone instead of admitting all */
        if (getenv("ZEXEC_TEST_ZAP_OFF")) {
            zsys_warning("ZEXEC_TEST_ZAP_OFF: no ZAP handler; every peer will be refused");
            zap = false;
        }
#endif
        /* the primary's peer ROUTER admits the backup's key only */
        const char *pk = cfg->pair_primary ? s_sec.peer_pk : NULL;
        if (zap && !(s_sec.auth = zx__auth_new(cfg->client_keys, cfg->worker_keys, pk))) {
            zxb_sec_fini();
            return -1;
        }
        zsys_info("CURVE on: server key %s; clients from %s, workers from %s",
                  zcert_public_txt(s_sec.cert), cfg->client_keys ? cfg->client_keys : "(none)",
                  cfg->worker_keys ? cfg->worker_keys : "(none)");
    }
    if (s_sec.peer_pk) {
        zsys_info("CURVE on the peer link: the other broker's key %s", s_sec.peer_pk);
    }
    uint8_t *secret = NULL;
    size_t len = 0;
    int rc = zx__sign_key_load(cfg->secret_file, true, &secret, &len);
    if (rc < 0) {
        zxb_sec_fini();
        return -1;
    }
    if (rc > 0) {
        s_sec.sign = zx__sign_new(secret, len, true);
        /* the peer link signs with its own sessions and counters: the
           primary answers connections (broker mode), the backup is one peer */
        if (s_sec.sign && cfg->peer) {
            s_sec.peer_sign = zx__sign_new(secret, len, cfg->pair_primary);
        }
        zx__sign_key_free(&secret, len);
        if (!s_sec.sign || (cfg->peer && !s_sec.peer_sign)) {
            zxb_sec_fini();
            return -1;
        }
        zsys_info("signing on: every message carries an HMAC-SHA256 envelope%s",
                  cfg->peer ? ", the peer link's too" : "");
    }
    s_sec.ready = true;
    return 0;
}

void zxb_sec_fini(void)
{
    zx__auth_destroy(&s_sec.auth);
    zx__sign_destroy(&s_sec.sign);
    zx__sign_destroy(&s_sec.peer_sign);
    zcert_destroy(&s_sec.cert);
    free(s_sec.peer_pk);
    s_sec.peer_pk = NULL;
    s_sec.ready = false;
}

int zxb_sec_socket(zsock_t *sock, bool workers)
{
    if (s_sec.cert &&
        zx__auth_server_setup(sock, s_sec.cert,
                              workers ? ZX__AUTH_DOMAIN_WORKERS : ZX__AUTH_DOMAIN_CLIENTS) != 0) {
        return -1;
    }
    if (s_sec.sign) {
        zx__sign_attach(s_sec.sign, sock, workers ? ZXP_ROLE_WORKER : ZXP_ROLE_CLIENT);
    }
    return 0;
}

int zxb_sec_verify(zsock_t *sock, bool workers, zframe_t *rid, zmsg_t *msg, zxp_drops_t *drops)
{
    if (!s_sec.sign) {
        return 0;
    }
    int rc = zx__sign_verify(s_sec.sign, msg, rid, workers ? ZXP_ROLE_BROKER_W : ZXP_ROLE_BROKER_C);
    if (rc == 0) {
        return 0;
    }
    if (rc != ZXP_E_SIGN_FIRST) {
        /* a first contact is every new peer's normal start, not worth a
           warning; the rest are */
        zxp_drop(drops, workers ? "workers" : "clients", rid, rc, "signature check failed");
    }
    if (rc == ZXP_E_SIGN_EPOCH || rc == ZXP_E_SIGN_FIRST) {
        /* authentic, but signed for a previous broker session (or before
           the peer knew ours): RESET, signed under ours, tells it the
           session to sign for; it then says HELLO/READY again */
        zxp_send_empty(sock, rid, ZXP_RESET);
    }
    return -1;
}

bool zxb_sec_signing(void)
{
    return s_sec.sign != NULL;
}

int zxb_bind_check(const char *endpoint, bool insecure)
{
    return zx__auth_bind_check(endpoint, s_sec.cert != NULL, s_sec.sign != NULL, insecure);
}

void zxb_sec_peer(zcert_t **cert, const char **peer_key, zx__sign_t **sign)
{
    *cert = s_sec.peer_pk ? s_sec.cert : NULL;
    *peer_key = s_sec.cert ? s_sec.peer_pk : NULL;
    *sign = s_sec.peer_sign;
}

int zxb_sec_peer_check(const char *endpoint, bool insecure)
{
    if (zx__auth_endpoint_is_loopback(endpoint) || s_sec.peer_pk || s_sec.peer_sign) {
        return 0;
    }
    if (insecure) {
        zsys_warning("zexec: INSECURE: the peer link %s reaches other hosts with no "
                     "authentication; anyone who can connect can read the whole journal or pose "
                     "as the other broker",
                     endpoint);
        return 0;
    }
    zsys_error("zexec: refusing the peer endpoint %s: it is not loopback and neither CURVE keys "
               "(--key, --peer-key) nor a shared secret (--secret-file or ZEXEC_SECRET) are "
               "configured; pass --insecure to run the link open anyway",
               endpoint);
    return -1;
}

bool zxb_sec_token_key(uint8_t out[16])
{
    uint8_t k[32];
    if (!s_sec.sign || zx__sign_derive(s_sec.sign, "zexec ZXT1 attempt-token key", k) != 0) {
        return false;
    }
    memcpy(out, k, 16);
    OPENSSL_cleanse(k, sizeof k);
    return true;
}
