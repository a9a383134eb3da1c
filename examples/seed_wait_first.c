/*  seed_wait_first - seed 003: wait(futures, return_when=FIRST_COMPLETED),
    then the rest with ALL_COMPLETED.
    usage: seed_wait_first [ENDPOINT] */
#include "example.h"

int main(int argc, char **argv)
{
    zx_executor_t *ex = example_executor(argc, argv, 2);
    double scale = example_scale();
    zx_future_t *fs[5], *done[5], *not_done[5];
    size_t nd, nn;
    for (int i = 0; i < 5; i++) {
        /* task i returns i * i after i tenths of a second */
        fs[i] = zx_submitf(ex, "slow_square", "id", i, 0.1 * i * scale);
    }
    zx_wait(fs, 5, ZX_FOREVER, ZX_FIRST_COMPLETED, done, &nd, not_done, &nn);
    printf("first completed: %zu done, %zu not done\n", nd, nn);
    for (size_t i = 0; i < nd; i++) {
        printf("Task returned: %.0f\n", example_result_number(done[i]));
    }
    zx_wait(fs, 5, ZX_FOREVER, ZX_ALL_COMPLETED, done, &nd, not_done, &nn);
    printf("all completed: %zu done, %zu not done\n", nd, nn);
    for (int i = 0; i < 5; i++) {
        zx_future_unref(&fs[i]);
    }
    zx_executor_destroy(&ex);
    return 0;
}
