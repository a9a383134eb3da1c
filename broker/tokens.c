/*  tokens.c - attempt tokens: every TASK item carries a 16-byte token, a
    MAC (SipHash-2-4 from OpenSSL, keyed by the broker) over the task's
    session and seq, the attempt number and the worker's id. A worker sends
    it back with its result and lists it in READY; the broker accepts a
    result only for the current attempt on that worker, and a READY entry
    for a task it knows, or after a restart for one it does not, only with a
    token that proves the task was given to that worker. So a worker cannot
    claim another client's task, and a result for an earlier attempt (a
    worker cut off, then back) is counted and dropped.

    The key is derived from the shared secret when one is configured, so it
    survives a broker restart (a restarted broker can check what workers
    report); otherwise it is random per run, and tasks a worker reports
    after a restart cannot be proven: they are taken on trust, as before
    (docs/security.md). One MAC per dispatch; the token is kept in the task,
    so a result costs a comparison. The MAC is computed here rather than
    through OpenSSL's EVP interface, whose per-call overhead (parameter
    handling, context re-initialisation) was 4% of the broker's user time
    on a lone task's round trip (docs/performance.md, 36); at start-up it
    is checked against OpenSSL's SipHash on the same key, and OpenSSL is
    used if they ever differ, so tokens stay what they were (a token made
    by an older broker from the same secret still checks).
*/
#include "zxb_broker.h"
#include "zxb_sec.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

/* what a token is the MAC of: session, seq, attempt, worker id */
#define S_MSG_LEN (ZXP_ID_LEN + 8 + 4 + ZXP_ID_LEN)

typedef struct {
    EVP_MAC_CTX *evp; /* OpenSSL's SipHash-2-4, keyed: the reference */
    uint64_t k0, k1;  /* the same key, for the built-in one */
    bool fast;        /* the built-in one matched OpenSSL's at start-up */
} s_tok_t;

static uint64_t s_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

static void s_put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

#define S_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define S_SIPROUND                                                                                 \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = S_ROTL(v1, 13);                                                                       \
        v1 ^= v0;                                                                                  \
        v0 = S_ROTL(v0, 32);                                                                       \
        v2 += v3;                                                                                  \
        v3 = S_ROTL(v3, 16);                                                                       \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = S_ROTL(v3, 21);                                                                       \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = S_ROTL(v1, 17);                                                                       \
        v1 ^= v2;                                                                                  \
        v2 = S_ROTL(v2, 32);                                                                       \
    } while (0)

/* SipHash-2-4 with a 16-byte output (the reference algorithm, as OpenSSL
   computes it for a hash size of 16) over the S_MSG_LEN bytes of m. */
static void s_siphash(const s_tok_t *tok, const uint8_t *m, uint8_t out[ZXP_TOKEN_LEN])
{
    uint64_t v0 = tok->k0 ^ 0x736f6d6570736575ull, v1 = tok->k1 ^ 0x646f72616e646f6dull,
             v2 = tok->k0 ^ 0x6c7967656e657261ull, v3 = tok->k1 ^ 0x7465646279746573ull;
    v1 ^= 0xee;
    const size_t full = S_MSG_LEN - S_MSG_LEN % 8;
    for (size_t i = 0; i < full; i += 8) {
        uint64_t w = s_le64(m + i);
        v3 ^= w;
        S_SIPROUND;
        S_SIPROUND;
        v0 ^= w;
    }
    uint64_t b = (uint64_t)S_MSG_LEN << 56;
    for (size_t i = 0; i < S_MSG_LEN % 8; i++) {
        b |= (uint64_t)m[full + i] << (8 * i);
    }
    v3 ^= b;
    S_SIPROUND;
    S_SIPROUND;
    v0 ^= b;
    v2 ^= 0xee;
    for (int i = 0; i < 4; i++) {
        S_SIPROUND;
    }
    s_put_le64(out, v0 ^ v1 ^ v2 ^ v3);
    v1 ^= 0xdd;
    for (int i = 0; i < 4; i++) {
        S_SIPROUND;
    }
    s_put_le64(out + 8, v0 ^ v1 ^ v2 ^ v3);
}

/* OpenSSL's SipHash over m; 0 on success. */
static int s_evp(s_tok_t *tok, const uint8_t *m, uint8_t out[ZXP_TOKEN_LEN])
{
    size_t len = 0;
    /* re-initialised with the same key: no key schedule per token */
    if (EVP_MAC_init(tok->evp, NULL, 0, NULL) != 1 || EVP_MAC_update(tok->evp, m, S_MSG_LEN) != 1 ||
        EVP_MAC_final(tok->evp, out, &len, ZXP_TOKEN_LEN) != 1 || len != ZXP_TOKEN_LEN) {
        return -1;
    }
    return 0;
}

int zxb_tokens_init(zxb_broker_t *self)
{
    uint8_t key[16];
    self->tok_persistent = zxb_sec_token_key(key);
    if (!self->tok_persistent && RAND_bytes(key, sizeof key) != 1) {
        zsys_error("no randomness for the attempt-token key");
        return -1;
    }
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "SIPHASH", NULL);
    EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
    EVP_MAC_free(mac); /* the context keeps its own reference */
    size_t size = ZXP_TOKEN_LEN;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &size),
                           OSSL_PARAM_construct_end()};
    if (!ctx || EVP_MAC_init(ctx, key, sizeof key, params) != 1) {
        zsys_error("OpenSSL SipHash unavailable for attempt tokens");
        EVP_MAC_CTX_free(ctx);
        OPENSSL_cleanse(key, sizeof key);
        return -1;
    }
    s_tok_t *tok = calloc(1, sizeof *tok);
    if (!tok) {
        EVP_MAC_CTX_free(ctx);
        OPENSSL_cleanse(key, sizeof key);
        return -1;
    }
    tok->evp = ctx;
    tok->k0 = s_le64(key);
    tok->k1 = s_le64(key + 8);
    OPENSSL_cleanse(key, sizeof key);
    /* the built-in SipHash must give OpenSSL's tokens bit for bit */
    uint8_t probe[S_MSG_LEN], a[ZXP_TOKEN_LEN], b[ZXP_TOKEN_LEN];
    for (size_t i = 0; i < sizeof probe; i++) {
        probe[i] = (uint8_t)(i * 37 + 11);
    }
    s_siphash(tok, probe, a);
    tok->fast = s_evp(tok, probe, b) == 0 && memcmp(a, b, sizeof a) == 0;
    if (!tok->fast) {
        zsys_warning("built-in SipHash differs from OpenSSL's: attempt tokens use OpenSSL");
    }
    self->tok_ctx = tok;
    return 0;
}

void zxb_tokens_fini(zxb_broker_t *self)
{
    s_tok_t *tok = self->tok_ctx;
    if (tok) {
        EVP_MAC_CTX_free(tok->evp);
        OPENSSL_cleanse(tok, sizeof *tok);
        free(tok);
    }
    self->tok_ctx = NULL;
}

void zxb_token(zxb_broker_t *self, const uint8_t *session, uint64_t seq, uint32_t attempt,
               const uint8_t *worker_id, uint8_t out[ZXP_TOKEN_LEN])
{
    uint8_t buf[S_MSG_LEN];
    memcpy(buf, session, ZXP_ID_LEN);
    for (int i = 0; i < 8; i++) {
        buf[ZXP_ID_LEN + i] = (uint8_t)(seq >> (56 - 8 * i));
    }
    for (int i = 0; i < 4; i++) {
        buf[ZXP_ID_LEN + 8 + i] = (uint8_t)(attempt >> (24 - 8 * i));
    }
    memcpy(buf + ZXP_ID_LEN + 12, worker_id, ZXP_ID_LEN);
    s_tok_t *tok = self->tok_ctx;
    if (tok->fast) {
        s_siphash(tok, buf, out);
    } else if (s_evp(tok, buf, out) != 0) {
        memset(out, 0, ZXP_TOKEN_LEN); /* never matches a real one by chance */
    }
}

bool zxb_token_ok(zxb_broker_t *self, const uint8_t *session, uint64_t seq, uint32_t attempt,
                  const uint8_t *worker_id, const uint8_t *token)
{
    uint8_t want[ZXP_TOKEN_LEN];
    zxb_token(self, session, seq, attempt, worker_id, want);
    return CRYPTO_memcmp(want, token, ZXP_TOKEN_LEN) == 0;
}

void zxb_token_put(zxb_broker_t *self, zxp_out_t *out, zxb_task_t *t, zxb_worker_t *w)
{
    zxb_token(self, t->client->session, t->seq, t->attempts, w->id, t->token);
    zxp_out_item_token(out, t->token);
    t->unproven = 0; /* this attempt's result carries a token we can check */
}

bool zxb_token_current(const zxb_task_t *t, const uint8_t *token)
{
    /* the MAC was made when the attempt was sent (or proven at READY):
       a result costs a comparison, not a second MAC (a fifth of A's
       tasks/s went to computing both) */
    return CRYPTO_memcmp(t->token, token, ZXP_TOKEN_LEN) == 0;
}
