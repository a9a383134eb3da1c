/*  security.c - zx__sec_t: CURVE keys and the signer of one client or worker
    (see zx_security.h). Keys are loaded and checked once, at creation, so a
    bad path fails the program at start rather than at the first reconnect.
*/
#include "zx_security.h"
#include "zx_auth.h"
#include "zx_sign.h"

struct zx__sec {
    zcert_t *mine;   /* our secret certificate (CURVE) */
    char *server_pk; /* the broker's public key, Z85 */
    zx__sign_t *sign;
};

zx__sec_t *zx__sec_new(const char *key, const char *server_key, const char *secret_file,
                       bool scrub_env)
{
    zx__sec_t *self = calloc(1, sizeof *self);
    if (!self) {
        return NULL;
    }
    char err[512];
    if ((key && *key) || (server_key && *server_key)) {
        if (!key || !*key || !server_key || !*server_key) {
            zsys_error("zexec: CURVE needs both --key (our secret certificate) and "
                       "--server-key (the broker's public certificate)");
            goto fail;
        }
        self->mine = zx__auth_cert_load(key, true, err, sizeof err);
        if (!self->mine) {
            zsys_error("zexec: --key %s", err);
            goto fail;
        }
        zcert_t *server = zx__auth_cert_load(server_key, false, err, sizeof err);
        if (!server) {
            zsys_error("zexec: --server-key %s", err);
            goto fail;
        }
        self->server_pk = strdup(zcert_public_txt(server));
        zcert_destroy(&server);
    }
    int rc;
    self->sign = zx__sign_new_from_config(secret_file, scrub_env, false, &rc);
    if (rc < 0) {
        goto fail;
    }
    return self;
fail:
    zx__sec_destroy(&self);
    return NULL;
}

void zx__sec_destroy(zx__sec_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    zx__sec_t *self = *self_p;
    zcert_destroy(&self->mine);
    free(self->server_pk);
    zx__sign_destroy(&self->sign);
    free(self);
    *self_p = NULL;
}

int zx__sec_socket(zx__sec_t *self, zsock_t *sock, int peer_role)
{
    if (!self) {
        return 0;
    }
    if (self->mine) {
        zcert_apply(self->mine, sock);
        zsock_set_curve_serverkey(sock, self->server_pk);
    }
    if (self->sign) {
        zx__sign_attach(self->sign, sock, peer_role);
    }
    return 0;
}

int zx__sec_verify(zx__sec_t *self, zmsg_t *msg, int role)
{
    if (!self || !self->sign) {
        return 0;
    }
    return zx__sign_verify(self->sign, msg, NULL, role);
}

bool zx__sec_signing(const zx__sec_t *self)
{
    return self && self->sign;
}

const uint8_t *zx__sec_epoch(const zx__sec_t *self)
{
    return self && self->sign ? zx__sign_epoch(self->sign) : NULL;
}
