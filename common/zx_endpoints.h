/*  zx_endpoints.h - a broker endpoint list: "tcp://a:5570,tcp://b:5570", the
    two brokers of a pair (docs/operations.md, "Running a pair"). A client,
    a worker or the CLI talks to one endpoint at a time, the current one, and
    moves to the next when the current one has been silent for its liveness
    window or answers ERROR ZXP_ERR_PASSIVE; after the last it wraps to the
    first. A single endpoint is a list of one, so every caller handles both
    the same way and a plain "tcp://h:5570" behaves as it always did.
*/
#ifndef ZX_ENDPOINTS_H
#define ZX_ENDPOINTS_H

#include <stddef.h>

/* At most this many endpoints in a list, each at most ZX__EP_MAX_LEN bytes. */
#define ZX__EPS_MAX 16
#define ZX__EP_MAX_LEN 255

typedef struct {
    char **v;   /* the endpoints, in the order given */
    size_t n;   /* how many (>= 1 once parsed) */
    size_t cur; /* the current one */
} zx__eps_t;

/* Parses spec: endpoints separated by commas, blanks around each ignored.
   An empty spec, an empty item ("a,,b", a trailing comma), an item with a
   blank inside it, too long an item or more than ZX__EPS_MAX items is
   refused: -1 with a sentence in err and *eps left empty. 0 on success, the
   first endpoint current. The endpoints' syntax is libzmq's to check when
   connecting. */
int zx__eps_parse(zx__eps_t *eps, const char *spec, char *err, size_t errlen);

/* Frees the list; safe on a zeroed or already cleared one. */
void zx__eps_clear(zx__eps_t *eps);

/* The current endpoint (borrowed, valid until zx__eps_clear). */
const char *zx__eps_current(const zx__eps_t *eps);

/* Makes the next endpoint current (wrapping) and returns it. */
const char *zx__eps_next(zx__eps_t *eps);

#endif
