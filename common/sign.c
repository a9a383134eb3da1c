/*  sign.c - the ZXP shared-secret envelope: HMAC-SHA256 over every frame
    of a message plus a session, an epoch and a sequence number, with replay
    rules that survive a broker restart without any state on disk (the
    epoch is the receiver's per-start session). zx_sign.h has the format;
    docs/security.md the reasoning.
*/
#include "zx_sign.h"
#include "zx_proto.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define S_MAX_ATTACH 4

typedef struct {
    zx__sign_t *owner;
    zsock_t *sock;
    int role;
} s_attach_t;

struct zx__sign {
    bool broker;
    EVP_MAC *mac;
    EVP_MAC_CTX *ctx;
    uint8_t session[16];
    uint64_t send_seq;
    /* one peer (client, worker): the broker's session and highest seq */
    uint8_t remote[16];
    uint64_t remote_hi;
    /* our session before we adopted the broker's current one: what the
       broker signed for it before it heard our new one still verifies, from
       that broker session only (its seq rule holds) */
    uint8_t own_prev[16];
    /* broker: sender session (hex) -> highest seq; routing id (hex) ->
       session. Two generations of each: those of the current session and of
       the previous one (zx__sign_rotate); older ones are forgotten, which is
       safe because a message signed for an older session fails the epoch
       rule whatever its seq. */
    zhashx_t *hi, *hi_prev;
    zhashx_t *by_peer, *by_peer_prev;
    uint8_t prev_session[16]; /* zero until the first rotation */
    int64_t rotated_at;       /* zclock_mono ms */
    int64_t rotate_ms;        /* the window */
    size_t gen_max;           /* sessions per generation: ZX__SIGN_MAX_SESSIONS / 2 */
    uint64_t rotations;
    s_attach_t attach[S_MAX_ATTACH];
    uint64_t verified, refused;
};

static const uint8_t s_zero[16];

/* ---- the secret --------------------------------------------------------------- */

static int s_trim_check(uint8_t *buf, size_t *len, const char *from)
{
    while (*len > 0 && (buf[*len - 1] == '\n' || buf[*len - 1] == '\r' || buf[*len - 1] == ' ' ||
                        buf[*len - 1] == '\t')) {
        (*len)--;
    }
    if (*len < ZX__SIGN_MIN_SECRET || *len > ZX__SIGN_MAX_SECRET) {
        zsys_error("zexec: the shared secret from %s must be %d..%d bytes (it is %zu); use "
                   "e.g. `openssl rand -hex 32`",
                   from, ZX__SIGN_MIN_SECRET, ZX__SIGN_MAX_SECRET, *len);
        return -1;
    }
    return 0;
}

int zx__sign_key_load(const char *secret_file, bool scrub_env, uint8_t **key, size_t *len)
{
    *key = NULL;
    *len = 0;
    uint8_t *buf = malloc(ZX__SIGN_MAX_SECRET + 2);
    if (!buf) {
        return -1;
    }
    size_t n = 0;
    if (secret_file) {
        int fd = open(secret_file, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            zsys_error("zexec: --secret-file %s: %s", secret_file, strerror(errno));
            free(buf);
            return -1;
        }
        struct stat st;
        if (fstat(fd, &st) == 0 && (st.st_mode & 077)) {
            zsys_warning("zexec: secret file %s may be read by group or others (mode %03o)",
                         secret_file, (unsigned)(st.st_mode & 0777));
        }
        while (n < ZX__SIGN_MAX_SECRET + 2) {
            ssize_t r = read(fd, buf + n, ZX__SIGN_MAX_SECRET + 2 - n);
            if (r < 0 && errno == EINTR) {
                continue;
            }
            if (r <= 0) {
                break;
            }
            n += (size_t)r;
        }
        close(fd);
        if (s_trim_check(buf, &n, secret_file) != 0) {
            OPENSSL_cleanse(buf, ZX__SIGN_MAX_SECRET + 2);
            free(buf);
            return -1;
        }
    } else {
        const char *env = getenv("ZEXEC_SECRET");
        if (!env || !*env) {
            free(buf);
            return 0;
        }
        n = strlen(env);
        if (n > ZX__SIGN_MAX_SECRET + 1) {
            n = ZX__SIGN_MAX_SECRET + 1;
        }
        memcpy(buf, env, n);
        if (scrub_env) {
            unsetenv("ZEXEC_SECRET");
        }
        if (s_trim_check(buf, &n, "ZEXEC_SECRET") != 0) {
            OPENSSL_cleanse(buf, ZX__SIGN_MAX_SECRET + 2);
            free(buf);
            return -1;
        }
    }
    *key = buf;
    *len = n;
    return 1;
}

void zx__sign_key_free(uint8_t **key, size_t len)
{
    if (key && *key) {
        OPENSSL_cleanse(*key, len);
        free(*key);
        *key = NULL;
    }
}

/* ---- objects -------------------------------------------------------------------- */

static void s_random(uint8_t *p, size_t n)
{
    if (RAND_bytes(p, (int)n) != 1) {
        /* no randomness is a broken system; sessions must never repeat */
        zsys_error("zexec: RAND_bytes failed");
        abort();
    }
}

static void s_hex(const uint8_t *p, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[p[i] >> 4];
        out[2 * i + 1] = hex[p[i] & 15];
    }
    out[2 * n] = 0;
}

static zhashx_t *s_table_new(void)
{
    zhashx_t *t = zhashx_new();
    zhashx_set_destructor(t, (zhashx_destructor_fn *)zstr_free);
    return t;
}

zx__sign_t *zx__sign_new(const uint8_t *secret, size_t len, bool broker)
{
    if (!secret || len < ZX__SIGN_MIN_SECRET || len > ZX__SIGN_MAX_SECRET) {
        return NULL;
    }
    zx__sign_t *self = calloc(1, sizeof *self);
    if (!self) {
        return NULL;
    }
    self->broker = broker;
    self->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    self->ctx = self->mac ? EVP_MAC_CTX_new(self->mac) : NULL;
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                           OSSL_PARAM_construct_end()};
    /* K = HMAC(secret, label): the key used on the wire is never the raw secret */
    uint8_t k[32];
    size_t klen = 0;
    static const char label[] = "zexec ZXS1 key";
    if (!self->ctx || EVP_MAC_init(self->ctx, secret, len, params) != 1 ||
        EVP_MAC_update(self->ctx, (const uint8_t *)label, sizeof label - 1) != 1 ||
        EVP_MAC_final(self->ctx, k, &klen, sizeof k) != 1 ||
        EVP_MAC_init(self->ctx, k, sizeof k, params) != 1) {
        zsys_error("zexec: OpenSSL HMAC-SHA256 unavailable");
        OPENSSL_cleanse(k, sizeof k);
        zx__sign_destroy(&self);
        return NULL;
    }
    OPENSSL_cleanse(k, sizeof k);
    s_random(self->session, sizeof self->session);
    if (broker) {
        self->hi = s_table_new();
        self->hi_prev = s_table_new();
        self->by_peer = s_table_new();
        self->by_peer_prev = s_table_new();
        self->rotated_at = zclock_mono();
        self->rotate_ms = ZX__SIGN_ROTATE_MS;
        self->gen_max = ZX__SIGN_MAX_SESSIONS / 2;
    }
    return self;
}

zx__sign_t *zx__sign_new_from_config(const char *secret_file, bool scrub_env, bool broker, int *rc)
{
    uint8_t *key;
    size_t len;
    *rc = zx__sign_key_load(secret_file, scrub_env, &key, &len);
    if (*rc <= 0) {
        return NULL;
    }
    zx__sign_t *self = zx__sign_new(key, len, broker);
    zx__sign_key_free(&key, len);
    if (!self) {
        *rc = -1;
    }
    return self;
}

void zx__sign_destroy(zx__sign_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    zx__sign_t *self = *self_p;
    for (int i = 0; i < S_MAX_ATTACH; i++) {
        if (self->attach[i].sock) {
            /* only our own hook: the socket may be gone and its address reused */
            zxp_sock_set_signer(self->attach[i].sock, NULL, &self->attach[i]);
        }
    }
    EVP_MAC_CTX_free(self->ctx);
    EVP_MAC_free(self->mac);
    zhashx_destroy(&self->hi);
    zhashx_destroy(&self->hi_prev);
    zhashx_destroy(&self->by_peer);
    zhashx_destroy(&self->by_peer_prev);
    free(self);
    *self_p = NULL;
}

void zx__sign_rotate(zx__sign_t *self)
{
    if (!self || !self->broker) {
        return;
    }
    memcpy(self->prev_session, self->session, 16);
    s_random(self->session, sizeof self->session);
    zhashx_destroy(&self->hi_prev);
    self->hi_prev = self->hi;
    self->hi = s_table_new();
    zhashx_destroy(&self->by_peer_prev);
    self->by_peer_prev = self->by_peer;
    self->by_peer = s_table_new();
    self->rotated_at = zclock_mono();
    self->rotations++;
}

void zx__sign_set_limits(zx__sign_t *self, int64_t window_ms, size_t max_sessions)
{
    if (self) {
        self->rotate_ms = window_ms > 0 ? window_ms : ZX__SIGN_ROTATE_MS;
        self->gen_max = max_sessions >= 2 ? max_sessions / 2 : ZX__SIGN_MAX_SESSIONS / 2;
    }
}

uint64_t zx__sign_rotations(zx__sign_t *self)
{
    return self ? self->rotations : 0;
}

int zx__sign_derive(zx__sign_t *self, const char *label, uint8_t out[32])
{
    size_t len = 0;
    if (!self || EVP_MAC_init(self->ctx, NULL, 0, NULL) != 1 ||
        EVP_MAC_update(self->ctx, (const uint8_t *)label, strlen(label)) != 1 ||
        EVP_MAC_final(self->ctx, out, &len, 32) != 1 || len != 32) {
        return -1;
    }
    return 0;
}

const uint8_t *zx__sign_session(zx__sign_t *self)
{
    return self->session;
}

const uint8_t *zx__sign_epoch(zx__sign_t *self)
{
    return self->remote;
}

void zx__sign_counts(zx__sign_t *self, uint64_t *verified, uint64_t *refused)
{
    *verified = self ? self->verified : 0;
    *refused = self ? self->refused : 0;
}

/* ---- the MAC ---------------------------------------------------------------------- */

static void s_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint64_t s_get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

/* MAC over env[2..44) and every frame of msg but skip (the envelope). */
static int s_mac(zx__sign_t *self, const uint8_t *env, zmsg_t *msg, zframe_t *skip, uint8_t out[32])
{
    uint8_t n[4], l[8];
    uint32_t count = (uint32_t)zmsg_size(msg) - (skip ? 1 : 0);
    n[0] = (uint8_t)(count >> 24);
    n[1] = (uint8_t)(count >> 16);
    n[2] = (uint8_t)(count >> 8);
    n[3] = (uint8_t)count;
    size_t outlen = 0;
    if (EVP_MAC_init(self->ctx, NULL, 0, NULL) != 1 ||
        EVP_MAC_update(self->ctx, (const uint8_t *)"ZXS1", 4) != 1 ||
        EVP_MAC_update(self->ctx, env + 2, 42) != 1 || EVP_MAC_update(self->ctx, n, 4) != 1) {
        return -1;
    }
    for (zframe_t *f = zmsg_first(msg); f; f = zmsg_next(msg)) {
        if (f == skip) {
            continue;
        }
        s_be64(l, zframe_size(f));
        if (EVP_MAC_update(self->ctx, l, 8) != 1 ||
            (zframe_size(f) && EVP_MAC_update(self->ctx, zframe_data(f), zframe_size(f)) != 1)) {
            return -1;
        }
    }
    return EVP_MAC_final(self->ctx, out, &outlen, 32) == 1 && outlen == 32 ? 0 : -1;
}

/* The session a routing id last signed with (broker), or NULL; key gets the
   table key when not NULL. */
static uint8_t *s_peer_session(zx__sign_t *self, zframe_t *peer, char key_out[2 * 255 + 1])
{
    char buf[2 * 255 + 1], *key = key_out ? key_out : buf;
    size_t n = zframe_size(peer) > 255 ? 255 : zframe_size(peer);
    s_hex(zframe_data(peer), n, key);
    uint8_t *s = zhashx_lookup(self->by_peer, key);
    if (!s && (s = zhashx_lookup(self->by_peer_prev, key))) {
        /* still in touch: it moves to the current generation */
        uint8_t *v = malloc(16);
        if (v && zhashx_size(self->by_peer) < self->gen_max) {
            memcpy(v, s, 16);
            zhashx_insert(self->by_peer, key, v);
            zhashx_delete(self->by_peer_prev, key);
            s = v;
        } else {
            free(v);
        }
    }
    return s;
}

int zx__sign_msg(zx__sign_t *self, zmsg_t *msg, zframe_t *peer, int role)
{
    if (!self || !msg) {
        return -1;
    }
    uint8_t env[ZX__SIGN_ENV_LEN];
    env[0] = 'Z';
    env[1] = 'S';
    env[2] = 1;
    env[3] = (uint8_t)role;
    memcpy(env + 4, self->session, 16);
    const uint8_t *epoch = self->remote;
    if (self->broker) {
        const uint8_t *known = peer ? s_peer_session(self, peer, NULL) : NULL;
        epoch = known ? known : s_zero;
    }
    memcpy(env + 20, epoch, 16);
    s_be64(env + 36, ++self->send_seq);
    if (s_mac(self, env, msg, NULL, env + 44) != 0) {
        return -1;
    }
    return zmsg_addmem(msg, env, sizeof env);
}

int zx__sign_verify(zx__sign_t *self, zmsg_t *msg, zframe_t *peer, int role)
{
    zframe_t *envf = msg ? zmsg_last(msg) : NULL;
    int rc = 0;
    if (self->broker && zclock_mono() - self->rotated_at >= self->rotate_ms) {
        zx__sign_rotate(self); /* the window: see zx_sign.h */
    }
    if (!envf || zmsg_size(msg) < 2 || zframe_size(envf) != ZX__SIGN_ENV_LEN) {
        rc = ZXP_E_SIGN_MISSING;
        goto out;
    }
    const uint8_t *env = zframe_data(envf);
    if (env[0] != 'Z' || env[1] != 'S' || env[2] != 1 || env[3] != (uint8_t)role) {
        rc = ZXP_E_SIGN_FORMAT;
        goto out;
    }
    uint8_t mac[32];
    if (s_mac(self, env, msg, envf, mac) != 0 || CRYPTO_memcmp(mac, env + 44, 32) != 0) {
        rc = ZXP_E_SIGN_MAC;
        goto out;
    }
    /* authentic from here on: records are safe to make */
    const uint8_t *sender = env + 4, *epoch = env + 20;
    uint64_t seq = s_get64(env + 36);
    char shex[33];
    s_hex(sender, 16, shex);
    if (self->broker && peer) {
        /* remember whom to sign for, even for a stale epoch: the RESET that
           answers it must carry the peer's session */
        char key[2 * 255 + 1];
        uint8_t *cur = s_peer_session(self, peer, key);
        if (cur) {
            memcpy(cur, sender, 16);
        } else if (zhashx_size(self->by_peer) < self->gen_max) {
            uint8_t *v = malloc(16);
            if (v) {
                memcpy(v, sender, 16);
                zhashx_insert(self->by_peer, key, v);
            }
        }
    }
    /* the broker's previous session (before its last rotation) still
       counts for the senders it verified under it: their messages in flight
       when it rotated; they adopt the new one from its next message */
    bool prev = self->broker && memcmp(epoch, self->session, 16) != 0 &&
                memcmp(self->prev_session, s_zero, 16) != 0 &&
                memcmp(epoch, self->prev_session, 16) == 0 && zhashx_lookup(self->hi_prev, shex);
    if (!self->broker && memcmp(epoch, self->session, 16) != 0 &&
        memcmp(self->own_prev, s_zero, 16) != 0 && memcmp(epoch, self->own_prev, 16) == 0 &&
        memcmp(sender, self->remote, 16) == 0) {
        prev = true; /* in flight when we adopted this broker session */
    }
    if (memcmp(epoch, self->session, 16) != 0 && !prev) {
        static const uint8_t zero[16];
        rc = memcmp(epoch, zero, 16) == 0 ? ZXP_E_SIGN_FIRST : ZXP_E_SIGN_EPOCH;
        goto out;
    }
    if (self->broker) {
        zhashx_t *table = prev ? self->hi_prev : self->hi;
        uint64_t *hi = zhashx_lookup(table, shex);
        if (hi && seq <= *hi) {
            rc = ZXP_E_SIGN_REPLAY;
            goto out;
        }
        if (!hi) {
            if (zhashx_size(self->hi) >= self->gen_max) {
                /* a generation is full: the next one starts now. Nothing is
                   reopened (the old sessions' messages fail the epoch
                   rule); this sender is told the new session by RESET */
                zx__sign_rotate(self);
                rc = ZXP_E_SIGN_EPOCH;
                goto out;
            }
            hi = malloc(sizeof *hi);
            if (!hi) {
                rc = ZXP_E_SIGN_FULL;
                goto out;
            }
            zhashx_insert(self->hi, shex, hi);
        }
        *hi = seq;
    } else if (memcmp(sender, self->remote, 16) == 0) {
        if (seq <= self->remote_hi) {
            rc = ZXP_E_SIGN_REPLAY;
            goto out;
        }
        self->remote_hi = seq;
    } else {
        /* a new broker session answering our current session. If it replaces
           another, take a new session of our own: whatever the old broker
           signed for the old one can never verify again. */
        if (memcmp(self->remote, s_zero, 16) != 0) {
            memcpy(self->own_prev, self->session, 16);
            s_random(self->session, sizeof self->session);
        }
        memcpy(self->remote, sender, 16);
        self->remote_hi = seq;
    }
    zmsg_remove(msg, envf);
    zframe_destroy(&envf);
out:
    if (rc == 0) {
        self->verified++;
    } else {
        self->refused++;
    }
    return rc;
}

/* ---- the zxp_out_send hook ----------------------------------------------------------- */

static int s_signer(void *arg, zmsg_t *msg, zframe_t *routing_id)
{
    s_attach_t *a = arg;
    return zx__sign_msg(a->owner, msg, routing_id, a->role) == 0 ? 0 : -1;
}

void zx__sign_attach(zx__sign_t *self, zsock_t *sock, int peer_role)
{
    if (!self) {
        zxp_sock_set_signer(sock, NULL, NULL);
        return;
    }
    if (!self->broker) {
        /* one peer, one socket: a reconnect's new DEALER replaces the old */
        for (int i = 0; i < S_MAX_ATTACH; i++) {
            if (self->attach[i].sock && self->attach[i].sock != sock) {
                zxp_sock_set_signer(self->attach[i].sock, NULL, &self->attach[i]);
            }
            self->attach[i].sock = NULL;
        }
    }
    for (int i = 0; i < S_MAX_ATTACH; i++) {
        s_attach_t *a = &self->attach[i];
        if (!a->sock || a->sock == sock) {
            a->owner = self;
            a->sock = sock;
            a->role = peer_role;
            zxp_sock_set_signer(sock, s_signer, a);
            return;
        }
    }
    zsys_error("zexec: zx__sign_attach: more than %d sockets", S_MAX_ATTACH);
}
