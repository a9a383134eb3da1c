/*  example.h - what every seed example shares: an executor for the endpoint
    given as argv[1] (or $ZEXEC_ENDPOINT), else a local cluster whose workers
    load the demo plugin; and small msgpack readers for the printouts.
    $ZEXEC_EXAMPLE_SCALE (default 1) scales the seeds' sleeps, so the test
    suite can run them quickly. */
#ifndef ZX_EXAMPLE_H
#define ZX_EXAMPLE_H

#include <zexec.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef ZX_EXAMPLE_PLUGIN_DIR
#define ZX_EXAMPLE_PLUGIN_DIR "."
#endif

static char example_plugin[4096];

static inline zx_executor_t *example_executor(int argc, char **argv, int workers)
{
    const char *ep = argc > 1 ? argv[1] : getenv("ZEXEC_ENDPOINT");
    const char *dir = getenv("ZEXEC_PLUGIN_DIR");
    snprintf(example_plugin, sizeof example_plugin, "%s/libzexec_demo_plugin.so",
             dir ? dir : ZX_EXAMPLE_PLUGIN_DIR);
    static const char *plugins[2];
    plugins[0] = example_plugin;
    zx_options_t opts = {.name = argv[0], .local_workers = workers, .plugins = plugins};
    zx_executor_t *ex = zx_executor_new(ep && *ep ? ep : NULL, &opts);
    if (!ex) {
        fprintf(stderr, "%s: cannot start an executor: %s\n", argv[0],
                zx_strerror(zx_last_error()));
        exit(1);
    }
    return ex;
}

static inline double example_scale(void)
{
    const char *s = getenv("ZEXEC_EXAMPLE_SCALE");
    double v = s ? atof(s) : 1.0;
    return v > 0 ? v : 1.0;
}

/* Decodes one msgpack value; *obj lives in zone. 0 or -1. */
static inline int example_unpack(const void *v, size_t n, msgpack_zone *zone, msgpack_object *obj)
{
    size_t off = 0;
    return msgpack_unpack(v, n, &off, zone, obj) == MSGPACK_UNPACK_SUCCESS ? 0 : -1;
}

static inline double example_number(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return (double)o->via.u64;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return (double)o->via.i64;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return o->via.f64;
    default: return 0;
    }
}

/* The result of a future as a number (the seeds return numbers). */
static inline double example_result_number(zx_future_t *f)
{
    const void *v;
    size_t n;
    if (zx_future_result(f, ZX_FOREVER, &v, &n) != ZX_OK) {
        return -1;
    }
    msgpack_zone zone;
    msgpack_object obj;
    msgpack_zone_init(&zone, 256);
    double d = example_unpack(v, n, &zone, &obj) == 0 ? example_number(&obj) : -1;
    msgpack_zone_destroy(&zone);
    return d;
}

/* Prints a msgpack value the way Python would print it: 50.0, "text" at
   the top level without quotes, arrays as [1, 10.0]. */
static inline void example_print_obj(FILE *out, const msgpack_object *o, int depth)
{
    switch (o->type) {
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: fprintf(out, "%.1f", o->via.f64); break;
    case MSGPACK_OBJECT_STR:
        fprintf(out, depth ? "\"%.*s\"" : "%.*s", (int)o->via.str.size, o->via.str.ptr);
        break;
    case MSGPACK_OBJECT_ARRAY:
        fprintf(out, "[");
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            fprintf(out, i ? ", " : "");
            example_print_obj(out, &o->via.array.ptr[i], depth + 1);
        }
        fprintf(out, "]");
        break;
    default: msgpack_object_print(out, *o); break;
    }
}

static inline void example_print(FILE *out, const void *v, size_t n)
{
    msgpack_zone zone;
    msgpack_object obj;
    msgpack_zone_init(&zone, 256);
    if (example_unpack(v, n, &zone, &obj) == 0) {
        example_print_obj(out, &obj, 0);
    }
    msgpack_zone_destroy(&zone);
}

#endif
