/*  parse.c - see zx_parse.h. */
#include "zx_parse.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>

bool zx__parse_long(const char *s, long min, long max, long *out)
{
    assert(s && out);
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        return false;
    }
    *out = v;
    return true;
}

bool zx__parse_double(const char *s, double min, double max, double *out)
{
    assert(s && out);
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    /* strtod takes "inf" and "nan" as numbers, and a NaN passes both bound
       comparisons below, so finiteness is checked on its own */
    if (errno || end == s || *end || !isfinite(v) || v < min || v > max) {
        return false;
    }
    *out = v;
    return true;
}

const char *zx__parse_bytes(const char *s, uint64_t *out)
{
    assert(s && out);
    /* digits by hand rather than strtoull, which would take a sign (and
       quietly negate "-1" into 2^64-1) and leading white space */
    const char *p = s;
    if (*p < '0' || *p > '9') {
        return "expected a number of bytes";
    }
    uint64_t v = 0;
    bool too_large = false;
    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10) {
            too_large = true; /* keep reading: a bad suffix is the better message */
        } else {
            v = v * 10 + d;
        }
    }
    unsigned shift = 0;
    switch (*p) {
    case 'k':
    case 'K': shift = 10; break;
    case 'm':
    case 'M': shift = 20; break;
    case 'g':
    case 'G': shift = 30; break;
    default: break;
    }
    if (shift) {
        p++;
    }
    /* "iB" only after a multiplier: "512iB" is no unit anyone writes */
    if (*p == 'B' || *p == 'b') {
        p++;
    } else if (shift && p[0] == 'i' && p[1] == 'B') {
        p += 2;
    }
    if (*p) {
        return "unknown suffix (use K, M or G)";
    }
    if (too_large || v > UINT64_MAX >> shift) {
        return "too large";
    }
    *out = v << shift;
    return NULL;
}
