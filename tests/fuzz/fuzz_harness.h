/*  fuzz_harness.h - one entry point per untrusted-input decoder, shared by
    the libFuzzer targets (tests/fuzz/fuzz_*.c) and the corpus replay test
    (tests/test_corpus.c), so a crash the fuzzer found is replayed by the
    normal test run against exactly the same code path.

    Frame splitting for multi-frame inputs: a sequence of [u16 big-endian
    length][bytes]; a short trailing length takes the rest of the input.
    Header-only (static functions): include it from one .c file.
*/
#ifndef ZX_FUZZ_HARNESS_H
#define ZX_FUZZ_HARNESS_H

#include "zx_auth.h"
#include "zx_proto.h"
#include "zx_sign.h"

#include <stdint.h>
#include <string.h>

static zmsg_t *zxf_frames(const uint8_t *data, size_t size)
{
    zmsg_t *m = zmsg_new();
    size_t off = 0;
    while (off < size && zmsg_size(m) < 4200) {
        size_t len;
        if (size - off < 2) {
            len = size - off;
        } else {
            len = ((size_t)data[off] << 8) | data[off + 1];
            off += 2;
            if (len > size - off) {
                len = size - off;
            }
        }
        zmsg_addmem(m, data + off, len);
        off += len;
    }
    return m;
}

/* Reads every field of a decoded message through the getters, as a handler
   would: after zxp_decode succeeded none of them may misbehave. */
static uint64_t zxf_touch(zxp_in_t *in)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < in->count; i++) {
        switch (in->cmd) {
        case ZXP_SUBMIT: {
            zxp_submit_t s;
            zxp_get_submit(in, i, &s);
            sum += s.seq + s.fn.len + (s.fn.len ? (uint8_t)s.fn.ptr[s.fn.len - 1] : 0);
            break;
        }
        case ZXP_TASK: {
            zxp_task_t t;
            zxp_get_task(in, i, &t);
            sum += t.seq + t.session[15] + t.fn.len;
            break;
        }
        case ZXP_WRESULT: {
            zxp_wresult_t r;
            zxp_get_wresult(in, i, &r);
            sum += r.seq + r.session[0] + r.status;
            break;
        }
        case ZXP_RESULT: {
            zxp_result_t r;
            zxp_get_result(in, i, &r);
            sum += r.seq + r.node.len + r.status;
            break;
        }
        default: {
            const msgpack_object *it = zxp_item(in, i);
            sum += it->via.array.size;
            break;
        }
        }
    }
    zframe_t *p;
    while ((p = zxp_payload_take(in))) {
        sum += zframe_size(p);
        zframe_destroy(&p);
    }
    return sum;
}

/* Input: role byte (mod 4, +1), then frames. */
static int zxf_decode(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    int role = 1 + data[0] % 4;
    zmsg_t *m = zxf_frames(data + 1, size - 1);
    zxp_in_t in;
    zxp_in_init(&in);
    int rc = zxp_decode(&in, &m, role);
    if (rc == 0) {
        volatile uint64_t sink = zxf_touch(&in);
        (void)sink;
    }
    zxp_in_fini(&in);
    return 0;
}

/* Input: msgpack bytes. Checks that the bounds check and the unpacker agree:
   whatever zxp_mp_check accepts as exactly the whole buffer, unpacks. */
static int zxf_msgpack(const uint8_t *data, size_t size)
{
    long n = zxp_mp_check(data, size, ZXP_MAX_DEPTH);
    msgpack_zone zone;
    msgpack_zone_init(&zone, 1024);
    msgpack_object obj;
    int rc = zxp_mp_unpack(data, size, &zone, &obj);
    if (n == (long)size && size > 0 && rc != 0) {
        /* check passed the whole buffer but msgpack-c refused it: a mismatch
           between the two parsers, which the fuzzer should report */
        __builtin_trap();
    }
    msgpack_zone_destroy(&zone);
    return 0;
}

/* A client and a broker signer that did the epoch handshake, so verified
   messages reach the replay rules. */
static zx__sign_t *zxf_signer(bool broker)
{
    static zx__sign_t *s[2];
    if (!s[0]) {
        static const uint8_t key[] = "fuzzing secret, 32 bytes long..";
        s[0] = zx__sign_new(key, 32, false);
        s[1] = zx__sign_new(key, 32, true);
        zframe_t *rid = zframe_new("\x01"
                                   "fuzz-peer",
                                   10);
        zmsg_t *m = zmsg_new();
        zmsg_addmem(m, "ZX\x02\x08", 4);
        zx__sign_msg(s[0], m, NULL, ZXP_ROLE_BROKER_C);
        zx__sign_verify(s[1], m, rid, ZXP_ROLE_BROKER_C); /* epoch refused, peer recorded */
        zmsg_destroy(&m);
        m = zmsg_new();
        zmsg_addmem(m, "ZX\x01\x0d", 4);
        zx__sign_msg(s[1], m, rid, ZXP_ROLE_CLIENT);
        zx__sign_verify(s[0], m, NULL, ZXP_ROLE_CLIENT); /* the client learns the epoch */
        zmsg_destroy(&m);
        zframe_destroy(&rid);
    }
    return s[broker];
}

/* Input: mode byte, then frames. Mode bit 0: verify as the broker (else as
   a client). Mode bit 1: sign the frames first, then flip the bit named by
   the next two bytes: verification must fail exactly when a bit was flipped. */
static int zxf_envelope(const uint8_t *data, size_t size)
{
    if (size < 3) {
        return 0;
    }
    bool broker = data[0] & 1;
    int role = broker ? ZXP_ROLE_BROKER_C : ZXP_ROLE_CLIENT;
    zframe_t *rid = zframe_new("\x01"
                               "fuzz-peer",
                               10);
    zmsg_t *m = zxf_frames(data + 3, size - 3);
    if (data[0] & 2) {
        zx__sign_t *other = zxf_signer(!broker);
        if (zmsg_size(m) > 0 && zx__sign_msg(other, m, broker ? NULL : rid, role) == 0) {
            size_t total = 0;
            for (zframe_t *f = zmsg_first(m); f; f = zmsg_next(m)) {
                total += zframe_size(f);
            }
            size_t bit = ((size_t)data[1] << 8 | data[2]) % (total * 8 + 1);
            bool flipped = bit < total * 8;
            if (flipped) {
                size_t byte = bit / 8;
                for (zframe_t *f = zmsg_first(m); f; f = zmsg_next(m)) {
                    if (byte < zframe_size(f)) {
                        zframe_data(f)[byte] ^= (uint8_t)(1u << (bit % 8));
                        break;
                    }
                    byte -= zframe_size(f);
                }
            }
            int rc = zx__sign_verify(zxf_signer(broker), m, broker ? rid : NULL, role);
            /* unflipped: refused only for the epoch (no handshake here);
               flipped: never accepted */
            if (flipped && rc == 0) {
                __builtin_trap();
            }
        }
    } else {
        (void)zx__sign_verify(zxf_signer(broker), m, broker ? rid : NULL, role);
    }
    zmsg_destroy(&m);
    zframe_destroy(&rid);
    return 0;
}

/* Input: a certificate file's bytes; the first byte says whether a secret
   key is required. */
static int zxf_cert(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    char err[256];
    zcert_t *c =
        zx__auth_cert_parse((const char *)data + 1, size - 1, data[0] & 1, err, sizeof err);
    zcert_destroy(&c);
    return 0;
}

#endif
