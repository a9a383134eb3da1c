/*  seed_map_order - seeds 001/002: task(n) sleeps n seconds and returns n * 10;
    over range(5, 0, -1) on two worker slots, map returns the results in input
    order, while as_completed logs the order in which the same tasks completed.
    usage: seed_map_order [ENDPOINT] */
#include "example.h"

int main(int argc, char **argv)
{
    zx_executor_t *ex = example_executor(argc, argv, 1);
    double scale = example_scale();
    printf("main: starting\n");

    /* The log of completions: the same calls as futures, in completion order. */
    zx_future_t *fs[5];
    for (int n = 5; n >= 1; n--) {
        fs[5 - n] = zx_submitf(ex, "task", "id", n, scale);
        zx_future_set_data(fs[5 - n], (void *)(intptr_t)n);
    }
    zx_as_completed_t *it = zx_as_completed_new(fs, 5, ZX_FOREVER);
    for (zx_future_t *f; (f = zx_as_completed_next(it));) {
        printf("done with %d\n", (int)(intptr_t)zx_future_data(f));
    }
    zx_as_completed_destroy(&it);
    for (int i = 0; i < 5; i++) {
        zx_future_unref(&fs[i]);
    }

    /* results = ex.map(task, range(5, 0, -1)) */
    msgpack_sbuffer sb[5];
    const void *args[5];
    size_t lens[5];
    for (int i = 0; i < 5; i++) {
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb[i]);
        msgpack_packer_init(&pk, &sb[i], msgpack_sbuffer_write);
        msgpack_pack_array(&pk, 2);
        msgpack_pack_int(&pk, 5 - i);
        msgpack_pack_double(&pk, scale);
        args[i] = sb[i].data;
        lens[i] = sb[i].size;
    }
    printf("main: waiting for real results\n");
    zx_map_t *m = zx_map_new(ex, "task", args, lens, 5, 1, ZX_FOREVER);
    const void *v;
    size_t n;
    printf("main: results: [");
    for (int i = 0; m && zx_map_next(m, &v, &n) == ZX_OK; i++) {
        printf(i ? ", " : "");
        example_print(stdout, v, n);
    }
    printf("]\n");
    zx_map_destroy(&m);
    for (int i = 0; i < 5; i++) {
        msgpack_sbuffer_destroy(&sb[i]);
    }
    zx_executor_destroy(&ex);
    return 0;
}
