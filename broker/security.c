/*  security.c - the broker's security: whether an endpoint may be bound,
    CURVE on both ROUTER sockets with one ZAP domain (and allowlist) each,
    and shared-secret signing. The mechanisms live in common/ (auth.c,
    sign.c); this file is their configuration for the broker. See
    docs/security.md.
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
    if (cfg->key) {
        s_sec.cert = zx__auth_cert_load(cfg->key, true, err, sizeof err);
        if (!s_sec.cert) {
            zsys_error("--key %s", err);
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
        if (zap && !(s_sec.auth = zx__auth_new(cfg->client_keys, cfg->worker_keys))) {
            zxb_sec_fini();
            return -1;
        }
        zsys_info("CURVE on: server key %s; clients from %s, workers from %s",
                  zcert_public_txt(s_sec.cert), cfg->client_keys ? cfg->client_keys : "(none)",
                  cfg->worker_keys ? cfg->worker_keys : "(none)");
    }
    int rc;
    s_sec.sign = zx__sign_new_from_config(cfg->secret_file, true, true, &rc);
    if (rc < 0) {
        zxb_sec_fini();
        return -1;
    }
    if (s_sec.sign) {
        zsys_info("signing on: every message carries an HMAC-SHA256 envelope");
    }
    s_sec.ready = true;
    return 0;
}

void zxb_sec_fini(void)
{
    zx__auth_destroy(&s_sec.auth);
    zx__sign_destroy(&s_sec.sign);
    zcert_destroy(&s_sec.cert);
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

int zxb_bind_check(const char *endpoint, bool insecure)
{
    return zx__auth_bind_check(endpoint, s_sec.cert != NULL, s_sec.sign != NULL, insecure);
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
