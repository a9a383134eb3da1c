/*  test_security_bounds.c - decoding n untrusted bytes never allocates more
    than 32n + 64 KiB, and hostile inputs (dd ff ff ff ff, df ff ff ff ff,
    10,000-deep nesting, the worst-case valid array) are refused or decoded
    within that bound. Allocations are counted by wrapping malloc and
    friends in this test binary (glibc's __libc_* entry points), which is
    incompatible with the sanitizers' own allocator: under ASan the byte
    counts are skipped and only the refusals are checked. */
#include "zx_proto.h"

#include <criterion/criterion.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define S_COUNTING 0
#else
#define S_COUNTING 1
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);

/* Bytes handed out while this thread counts (frees are not subtracted: the
   total allocated is an upper bound on the peak). */
static _Thread_local bool s_counting;
static _Thread_local size_t s_allocated;

void *malloc(size_t n)
{
    void *p = __libc_malloc(n);
    if (s_counting && p) {
        s_allocated += malloc_usable_size(p);
    }
    return p;
}

void *calloc(size_t a, size_t b)
{
    void *p = __libc_calloc(a, b);
    if (s_counting && p) {
        s_allocated += malloc_usable_size(p);
    }
    return p;
}

void *realloc(void *old, size_t n)
{
    void *p = __libc_realloc(old, n);
    if (s_counting && p) {
        s_allocated += malloc_usable_size(p);
    }
    return p;
}

void free(void *p)
{
    __libc_free(p);
}
#endif

TestSuite(bounds, .timeout = 120);

static size_t s_bound(size_t n)
{
    return 32 * n + 64 * 1024;
}

/* Runs zxp_decode on [ZX 1 SUBMIT][header] for the client endpoint; returns
   its code, and the bytes allocated in *bytes. */
static int s_decode(const uint8_t *hdr, size_t len, size_t *bytes)
{
    zxp_in_t in;
    zxp_in_init(&in);
    zmsg_t *m = zmsg_new();
    zmsg_addmem(m, (uint8_t[]){'Z', 'X', ZXP_VERSION, ZXP_STATUS_REPLY}, 4);
    zmsg_addmem(m, hdr, len);
#if S_COUNTING
    s_allocated = 0;
    s_counting = true;
#endif
    int rc = zxp_decode(&in, &m, ZXP_ROLE_CLIENT);
#if S_COUNTING
    s_counting = false;
    *bytes = s_allocated;
#else
    *bytes = 0;
#endif
    zxp_in_fini(&in);
    return rc;
}

static size_t s_unpack(const uint8_t *data, size_t len, int *rc)
{
    msgpack_zone zone;
    msgpack_zone_init(&zone, 4096);
    msgpack_object obj;
#if S_COUNTING
    s_allocated = 0;
    s_counting = true;
#endif
    *rc = zxp_mp_unpack(data, len, &zone, &obj);
#if S_COUNTING
    s_counting = false;
#endif
    msgpack_zone_destroy(&zone);
#if S_COUNTING
    return s_allocated;
#else
    return 0;
#endif
}

Test(bounds, giant_container_headers_are_refused_without_allocating)
{
    const uint8_t a32[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    const uint8_t m32[] = {0xdf, 0xff, 0xff, 0xff, 0xff};
    const uint8_t s32[] = {0xdb, 0xff, 0xff, 0xff, 0xff};
    const uint8_t *cases[] = {a32, m32, s32};
    for (int i = 0; i < 3; i++) {
        size_t bytes;
        int rc;
        bytes = s_unpack(cases[i], 5, &rc);
        cr_assert_eq(rc, -1);
        cr_assert_leq(bytes, s_bound(5), "case %d: %zu bytes", i, bytes);
        cr_assert_eq(s_decode(cases[i], 5, &bytes), ZXP_E_MSGPACK);
        cr_assert_leq(bytes, s_bound(5 + 4), "case %d: %zu bytes", i, bytes);
    }
}

Test(bounds, ten_thousand_deep_nesting_is_refused_within_the_bound)
{
    size_t n = 10001;
    uint8_t *deep = malloc(n);
    memset(deep, 0x91, n - 1);
    deep[n - 1] = 0xc0;
    size_t bytes;
    int rc;
    bytes = s_unpack(deep, n, &rc);
    cr_assert_eq(rc, -1);
    cr_assert_leq(bytes, s_bound(n));
    cr_assert_eq(s_decode(deep, n, &bytes), ZXP_E_MSGPACK);
    cr_assert_leq(bytes, s_bound(n + 4));
    /* 32 levels are fine, 33 are not */
    cr_assert_eq(zxp_mp_check(deep + n - 33, 33, ZXP_MAX_DEPTH), 33);
    cr_assert_eq(zxp_mp_check(deep + n - 34, 34, ZXP_MAX_DEPTH), -1);
    free(deep);
}

/* The most objects per byte: an array of nils (one 24-byte msgpack_object
   per input byte), at sizes where msgpack-c's chunk doubling is worst. */
Test(bounds, the_worst_valid_input_decodes_within_32n_plus_64k)
{
    size_t counts[] = {1000, 170, 171, 100000, 1398102, 1398101 * 2 / 2, 2000000};
    for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
        size_t count = counts[k], n = 5 + count;
        uint8_t *buf = malloc(n);
        buf[0] = 0xdd;
        buf[1] = (uint8_t)(count >> 24);
        buf[2] = (uint8_t)(count >> 16);
        buf[3] = (uint8_t)(count >> 8);
        buf[4] = (uint8_t)count;
        memset(buf + 5, 0xc0, count);
        int rc;
        size_t bytes = s_unpack(buf, n, &rc);
        cr_assert_eq(rc, 0, "a valid array of %zu nils decodes", count);
        cr_assert_leq(bytes, s_bound(n), "%zu nils: %zu bytes allocated, bound %zu", count, bytes,
                      s_bound(n));
        /* maps: one 48-byte kv per two input bytes */
        buf[0] = 0xdf;
        uint32_t pairs = (uint32_t)(count / 2);
        buf[1] = (uint8_t)(pairs >> 24);
        buf[2] = (uint8_t)(pairs >> 16);
        buf[3] = (uint8_t)(pairs >> 8);
        buf[4] = (uint8_t)pairs;
        size_t mn = 5 + 2 * (size_t)pairs;
        bytes = s_unpack(buf, mn, &rc);
        cr_assert_eq(rc, 0);
        cr_assert_leq(bytes, s_bound(mn), "%u pairs: %zu bytes", pairs, bytes);
        free(buf);
    }
}

Test(bounds, after_hostile_inputs_the_decoder_goes_on)
{
    const uint8_t a32[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    size_t bytes;
    for (int i = 0; i < 1000; i++) {
        cr_assert_eq(s_decode(a32, 5, &bytes), ZXP_E_MSGPACK);
    }
    const uint8_t ok[] = {0x91, 0x80}; /* [{}] */
    cr_assert_eq(s_decode(ok, sizeof ok, &bytes), 0);
}
