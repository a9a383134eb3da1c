/*  zx_parse.h - strict parsing of command-line numbers, one implementation
    for zexec, zexec-broker and zexec-worker so a flag means the same thing
    in every program. Each parser takes the whole string or refuses it, and
    leaves *out untouched when it refuses.
*/
#ifndef ZX_PARSE_H
#define ZX_PARSE_H

#include <stdbool.h>
#include <stdint.h>

/* A base-10 integer (strtol's syntax, nothing after it) within [min, max];
   true and *out set, or false. */
bool zx__parse_long(const char *s, long min, long max, long *out);

/* A finite decimal number (strtod's syntax, nothing after it) within
   [min, max]; true and *out set, or false. */
bool zx__parse_double(const char *s, double min, double max, double *out);

/* A byte count: digits, then optionally K, M or G (either case, powers of
   1024), then optionally B, b or (after K/M/G) iB: "4096", "512M", "2MiB",
   "1kb". 0 is accepted. NULL and *out set, or a short static reason. */
const char *zx__parse_bytes(const char *s, uint64_t *out);

#endif
