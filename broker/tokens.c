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
    (docs/security.md). One MAC per dispatch (OpenSSL's EVP SipHash, with its call overhead); the
    token is kept in the task, so a result costs a comparison.
*/
#include "zxb_broker.h"
#include "zxb_sec.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <string.h>

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
    OPENSSL_cleanse(key, sizeof key);
    self->tok_ctx = ctx;
    return 0;
}

void zxb_tokens_fini(zxb_broker_t *self)
{
    EVP_MAC_CTX_free(self->tok_ctx);
    self->tok_ctx = NULL;
}

void zxb_token(zxb_broker_t *self, const uint8_t *session, uint64_t seq, uint32_t attempt,
               const uint8_t *worker_id, uint8_t out[ZXP_TOKEN_LEN])
{
    uint8_t buf[ZXP_ID_LEN + 8 + 4 + ZXP_ID_LEN];
    memcpy(buf, session, ZXP_ID_LEN);
    for (int i = 0; i < 8; i++) {
        buf[ZXP_ID_LEN + i] = (uint8_t)(seq >> (56 - 8 * i));
    }
    for (int i = 0; i < 4; i++) {
        buf[ZXP_ID_LEN + 8 + i] = (uint8_t)(attempt >> (24 - 8 * i));
    }
    memcpy(buf + ZXP_ID_LEN + 12, worker_id, ZXP_ID_LEN);
    size_t len = 0;
    /* re-initialised with the same key: no key schedule per token */
    if (EVP_MAC_init(self->tok_ctx, NULL, 0, NULL) != 1 ||
        EVP_MAC_update(self->tok_ctx, buf, sizeof buf) != 1 ||
        EVP_MAC_final(self->tok_ctx, out, &len, ZXP_TOKEN_LEN) != 1 || len != ZXP_TOKEN_LEN) {
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
