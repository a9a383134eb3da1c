/*  seed_square - seed 000: square over [1..5] with map, then with submit and
    result() in launch order.
    usage: seed_square [ENDPOINT]   (no endpoint: a local cluster) */
#include "example.h"

int main(int argc, char **argv)
{
    zx_executor_t *ex = example_executor(argc, argv, 2);

    /* executor.map(square, numbers) */
    char buf[5][8];
    const void *args[5];
    size_t lens[5];
    for (int i = 0; i < 5; i++) {
        buf[i][0] = (char)0x91; /* [i + 1] as a msgpack array of one fixint */
        buf[i][1] = (char)(i + 1);
        args[i] = buf[i];
        lens[i] = 2;
    }
    zx_map_t *m = zx_map_new(ex, "square", args, lens, 5, 1, ZX_FOREVER);
    const void *v;
    size_t n;
    int rc;
    printf("map:");
    while (m && (rc = zx_map_next(m, &v, &n)) == ZX_OK) {
        printf(" ");
        example_print(stdout, v, n);
    }
    printf("\n");
    zx_map_destroy(&m);

    /* futures.append(executor.submit(square, number)); then result() in order */
    zx_future_t *fs[5];
    for (int i = 0; i < 5; i++) {
        fs[i] = zx_submitf(ex, "square", "i", i + 1);
    }
    printf("submit:");
    for (int i = 0; i < 5; i++) {
        printf(" %.0f", example_result_number(fs[i]));
        zx_future_unref(&fs[i]);
    }
    printf("\n");
    zx_executor_destroy(&ex);
    return 0;
}
