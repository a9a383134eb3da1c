/*  endpoints.c - see zx_endpoints.h. */
#include "zx_endpoints.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int s_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

int zx__eps_parse(zx__eps_t *eps, const char *spec, char *err, size_t errlen)
{
    assert(eps);
    *eps = (zx__eps_t){0};
    if (!spec) {
        snprintf(err, errlen, "no broker endpoint");
        return -1;
    }
    char **v = calloc(ZX__EPS_MAX, sizeof *v);
    if (!v) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    size_t n = 0;
    const char *p = spec;
    for (;;) {
        const char *end = strchr(p, ',');
        if (!end) {
            end = p + strlen(p);
        }
        const char *a = p, *b = end;
        while (a < b && s_blank(*a)) {
            a++;
        }
        while (b > a && s_blank(b[-1])) {
            b--;
        }
        size_t len = (size_t)(b - a);
        const char *why = NULL;
        if (len == 0) {
            why = "an empty endpoint";
        } else if (len > ZX__EP_MAX_LEN) {
            why = "an endpoint longer than 255 bytes";
        } else if (n == ZX__EPS_MAX) {
            why = "more than 16 endpoints";
        } else {
            for (const char *q = a; q < b; q++) {
                if (s_blank(*q)) {
                    why = "a blank inside an endpoint";
                    break;
                }
            }
        }
        if (why) {
            snprintf(err, errlen,
                     "invalid broker endpoint list '%s': %s (expected e.g. "
                     "tcp://HOST:5570 or tcp://A:5570,tcp://B:5570)",
                     spec, why);
            eps->v = v;
            eps->n = n;
            zx__eps_clear(eps);
            return -1;
        }
        v[n] = strndup(a, len);
        if (!v[n]) {
            snprintf(err, errlen, "out of memory");
            eps->v = v;
            eps->n = n;
            zx__eps_clear(eps);
            return -1;
        }
        n++;
        if (!*end) {
            break;
        }
        p = end + 1;
    }
    eps->v = v;
    eps->n = n;
    eps->cur = 0;
    return 0;
}

void zx__eps_clear(zx__eps_t *eps)
{
    if (!eps) {
        return;
    }
    for (size_t i = 0; eps->v && i < eps->n; i++) {
        free(eps->v[i]);
    }
    free(eps->v);
    *eps = (zx__eps_t){0};
}

const char *zx__eps_current(const zx__eps_t *eps)
{
    return eps->n ? eps->v[eps->cur] : NULL;
}

const char *zx__eps_next(zx__eps_t *eps)
{
    if (eps->n) {
        eps->cur = (eps->cur + 1) % eps->n;
    }
    return zx__eps_current(eps);
}
