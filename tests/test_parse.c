/*  test_parse.c - the command-line number parsers (common/parse.c) that
    zexec, zexec-broker and zexec-worker share: valid values, both bounds
    and one past each, empty strings, trailing junk, signs, overflow,
    inf/nan, and every byte-suffix spelling. A refusal must leave *out as
    it was, so each refusal is checked against a sentinel. */
#include "zx_parse.h"

#include <criterion/criterion.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

TestSuite(parse, .timeout = 10);

/* ---- zx__parse_long ----------------------------------------------------------- */

static void s_long_ok(const char *s, long min, long max, long want)
{
    long v = 12345;
    cr_assert(zx__parse_long(s, min, max, &v), "'%s' in [%ld, %ld] must parse", s, min, max);
    cr_assert_eq(v, want, "'%s' gave %ld, not %ld", s, v, want);
}

static void s_long_bad(const char *s, long min, long max)
{
    long v = 12345;
    cr_assert_not(zx__parse_long(s, min, max, &v), "'%s' in [%ld, %ld] must be refused", s, min,
                  max);
    cr_assert_eq(v, 12345, "a refusal of '%s' changed *out to %ld", s, v);
}

Test(parse, long_takes_valid_integers)
{
    s_long_ok("0", LONG_MIN, LONG_MAX, 0);
    s_long_ok("42", LONG_MIN, LONG_MAX, 42);
    s_long_ok("-7", LONG_MIN, LONG_MAX, -7);
    s_long_ok("007", 0, 10, 7); /* base 10, not octal */
    char buf[32];
    snprintf(buf, sizeof buf, "%ld", LONG_MAX);
    s_long_ok(buf, LONG_MIN, LONG_MAX, LONG_MAX);
    snprintf(buf, sizeof buf, "%ld", LONG_MIN);
    s_long_ok(buf, LONG_MIN, LONG_MAX, LONG_MIN);
}

Test(parse, long_bounds_are_inclusive_and_one_past_is_refused)
{
    s_long_ok("-5", -5, 10, -5);
    s_long_ok("10", -5, 10, 10);
    s_long_bad("-6", -5, 10);
    s_long_bad("11", -5, 10);
}

Test(parse, long_refuses_empty_junk_and_overflow)
{
    s_long_bad("", LONG_MIN, LONG_MAX);
    s_long_bad("12x", LONG_MIN, LONG_MAX);
    s_long_bad("1.5.2", LONG_MIN, LONG_MAX);
    s_long_bad("1.5", LONG_MIN, LONG_MAX);
    s_long_bad("0x10", LONG_MIN, LONG_MAX);
    s_long_bad("12 ", LONG_MIN, LONG_MAX);
    s_long_bad("-", LONG_MIN, LONG_MAX);
    s_long_bad("99999999999999999999", LONG_MIN, LONG_MAX);
    s_long_bad("-99999999999999999999", LONG_MIN, LONG_MAX);
}

/* ---- zx__parse_double --------------------------------------------------------- */

static void s_double_ok(const char *s, double min, double max, double want)
{
    double v = 12345;
    cr_assert(zx__parse_double(s, min, max, &v), "'%s' in [%g, %g] must parse", s, min, max);
    cr_assert(v == want, "'%s' gave %.17g, not %.17g", s, v, want);
}

static void s_double_bad(const char *s, double min, double max)
{
    double v = 12345;
    cr_assert_not(zx__parse_double(s, min, max, &v), "'%s' in [%g, %g] must be refused", s, min,
                  max);
    cr_assert(v == 12345, "a refusal of '%s' changed *out to %g", s, v);
}

Test(parse, double_takes_valid_numbers)
{
    s_double_ok("0", -DBL_MAX, DBL_MAX, 0);
    s_double_ok("1.5", -DBL_MAX, DBL_MAX, 1.5);
    s_double_ok("-0.25", -DBL_MAX, DBL_MAX, -0.25);
    s_double_ok("1e3", -DBL_MAX, DBL_MAX, 1000);
    s_double_ok("42", -DBL_MAX, DBL_MAX, 42);
}

Test(parse, double_bounds_are_inclusive_and_one_past_is_refused)
{
    s_double_ok("0.01", 0.01, 3600, 0.01);
    s_double_ok("3600", 0.01, 3600, 3600);
    /* the nearest doubles outside the bounds, printed exactly */
    char below[64], above[64];
    snprintf(below, sizeof below, "%.17g", nextafter(0.01, 0));
    snprintf(above, sizeof above, "%.17g", nextafter(3600, INFINITY));
    s_double_bad(below, 0.01, 3600);
    s_double_bad(above, 0.01, 3600);
    s_double_bad("0.009", 0.01, 3600);
    s_double_bad("3601", 0.01, 3600);
}

Test(parse, double_refuses_empty_junk_overflow_inf_and_nan)
{
    s_double_bad("", -DBL_MAX, DBL_MAX);
    s_double_bad("12x", -DBL_MAX, DBL_MAX);
    s_double_bad("1.5.2", -DBL_MAX, DBL_MAX);
    s_double_bad("1.5 ", -DBL_MAX, DBL_MAX);
    s_double_bad(".", -DBL_MAX, DBL_MAX);
    s_double_bad("99999999999999999999", 0, 1e7);
    s_double_bad("1e999", -DBL_MAX, DBL_MAX);
    s_double_bad("-1e999", -DBL_MAX, DBL_MAX);
    s_double_bad("1e-400", -DBL_MAX, DBL_MAX); /* underflows to 0: not the number written */
    s_double_bad("inf", -DBL_MAX, DBL_MAX);
    s_double_bad("-inf", -DBL_MAX, DBL_MAX);
    s_double_bad("infinity", -DBL_MAX, DBL_MAX);
    s_double_bad("nan", -DBL_MAX, DBL_MAX);
    s_double_bad("NAN", -DBL_MAX, DBL_MAX);
    s_double_bad("nan", 0, 1); /* a NaN fails no < or > test, so this needs its own check */
}

/* ---- zx__parse_bytes ---------------------------------------------------------- */

static void s_bytes_ok(const char *s, uint64_t want)
{
    uint64_t v = 12345;
    const char *why = zx__parse_bytes(s, &v);
    cr_assert_null(why, "'%s' must parse, got: %s", s, why);
    cr_assert_eq(v, want, "'%s' gave %llu, not %llu", s, (unsigned long long)v,
                 (unsigned long long)want);
}

static void s_bytes_bad(const char *s, const char *want_why)
{
    uint64_t v = 12345;
    const char *why = zx__parse_bytes(s, &v);
    cr_assert_not_null(why, "'%s' must be refused, gave %llu", s, (unsigned long long)v);
    cr_assert_str_eq(why, want_why, "'%s': reason", s);
    cr_assert_eq(v, 12345, "a refusal of '%s' changed *out", s);
}

static const char *const NUM = "expected a number of bytes";
static const char *const SUFFIX = "unknown suffix (use K, M or G)";
static const char *const LARGE = "too large";

Test(parse, bytes_takes_plain_counts_from_zero_to_the_top_of_uint64)
{
    s_bytes_ok("0", 0);
    s_bytes_ok("1", 1);
    s_bytes_ok("4096", 4096);
    s_bytes_ok("0004096", 4096);
    s_bytes_ok("18446744073709551615", UINT64_MAX);
    s_bytes_ok("512B", 512);
    s_bytes_ok("512b", 512);
}

Test(parse, bytes_refuses_one_past_each_end)
{
    s_bytes_bad("-1", NUM);
    s_bytes_bad("18446744073709551616", LARGE);
}

Test(parse, bytes_takes_every_suffix_spelling_as_a_power_of_1024)
{
    static const struct {
        char c;
        unsigned shift;
    } mult[] = {{'K', 10}, {'k', 10}, {'M', 20}, {'m', 20}, {'G', 30}, {'g', 30}};
    static const char *const unit[] = {"", "B", "b", "iB"};
    for (size_t i = 0; i < sizeof mult / sizeof mult[0]; i++) {
        for (size_t j = 0; j < sizeof unit / sizeof unit[0]; j++) {
            char s[32];
            snprintf(s, sizeof s, "3%c%s", mult[i].c, unit[j]);
            s_bytes_ok(s, 3ull << mult[i].shift);
        }
    }
    s_bytes_ok("1KB", 1024);
    s_bytes_ok("2MiB", 2097152);
    s_bytes_ok("512M", 512ull << 20);
    s_bytes_ok("512MB", 512ull << 20);
    s_bytes_ok("512Mb", 512ull << 20);
    s_bytes_ok("512MiB", 512ull << 20);
    s_bytes_ok("0G", 0);
    s_bytes_ok("17179869183G", UINT64_MAX - (1ull << 30) + 1); /* the largest whole G */
}

Test(parse, bytes_refuses_empty_signs_and_space)
{
    s_bytes_bad("", NUM);
    s_bytes_bad("-1", NUM);
    s_bytes_bad("-1K", NUM);
    s_bytes_bad("+1", NUM);
    s_bytes_bad(" 1", NUM);
    s_bytes_bad("K", NUM);
    s_bytes_bad("MiB", NUM);
}

Test(parse, bytes_refuses_junk_after_the_number)
{
    s_bytes_bad("12x", SUFFIX);
    s_bytes_bad("12Q", SUFFIX);
    s_bytes_bad("1.5.2", SUFFIX);
    s_bytes_bad("1.5M", SUFFIX);
    s_bytes_bad("1 K", SUFFIX);
    s_bytes_bad("1K ", SUFFIX);
    s_bytes_bad("1KK", SUFFIX);
    s_bytes_bad("1Kib", SUFFIX);
    s_bytes_bad("1KIB", SUFFIX);
    s_bytes_bad("1Ki", SUFFIX);
    s_bytes_bad("1KBB", SUFFIX);
    s_bytes_bad("1T", SUFFIX);
    s_bytes_bad("512iB", SUFFIX); /* iB only after K, M or G */
    s_bytes_bad("99999999999999999999x", SUFFIX);
}

Test(parse, bytes_refuses_what_does_not_fit_in_64_bits)
{
    s_bytes_bad("99999999999999999999", LARGE);
    s_bytes_bad("17179869184G", LARGE);    /* 2^64 */
    s_bytes_bad("17592186044416M", LARGE); /* 2^64 */
    s_bytes_bad("18014398509481984K", LARGE);
    s_bytes_bad("99999999999999999999G", LARGE);
}
