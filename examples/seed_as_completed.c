/*  seed_as_completed - seeds 001/003: five tasks with random sleeps, consumed
    with as_completed: results print in completion order.
    usage: seed_as_completed [ENDPOINT] */
#include "example.h"

#include <time.h>

int main(int argc, char **argv)
{
    zx_executor_t *ex = example_executor(argc, argv, 2);
    double scale = example_scale();
    srand((unsigned)time(NULL));
    printf("main: starting\n");
    zx_future_t *fs[5];
    for (int n = 5; n >= 1; n--) {
        /* task returns (n, n * 10.0) after 1..5 random seconds */
        double t = (double)(1 + rand() % 5) * scale;
        fs[5 - n] = zx_submitf(ex, "task_pair", "id", n, t);
    }
    zx_as_completed_t *it = zx_as_completed_new(fs, 5, ZX_FOREVER);
    zx_future_t *f;
    while ((f = zx_as_completed_next(it))) {
        const void *v;
        size_t n;
        if (zx_future_result(f, ZX_FOREVER, &v, &n) == ZX_OK) {
            printf("main: result: ");
            example_print(stdout, v, n);
            printf("\n");
        }
    }
    zx_as_completed_destroy(&it);
    for (int i = 0; i < 5; i++) {
        zx_future_unref(&fs[i]);
    }
    zx_executor_destroy(&ex);
    return 0;
}
