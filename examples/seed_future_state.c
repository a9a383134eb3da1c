/*  seed_future_state - seed 001: submit one task, print the future while it
    runs, then its result and its state after.
    usage: seed_future_state [ENDPOINT] */
#include "example.h"

static const char *s_state(zx_future_t *f)
{
    static const char *names[] = {"pending", "running", "finished", "cancelled"};
    return names[zx_future_state(f)];
}

int main(int argc, char **argv)
{
    zx_executor_t *ex = example_executor(argc, argv, 1);
    printf("main: starting\n");
    zx_future_t *f = zx_submitf(ex, "task", "id", 5, example_scale());
    /* Wait (without sleeping blind) until a worker has really started it. */
    while (zx_future_state(f) == ZX_PENDING) {
        zx_future_result(f, 0.01, NULL, NULL);
    }
    printf("main: future: <Future state=%s>\n", s_state(f));
    printf("main: waiting for results\n");
    printf("main: result: %.1f\n", example_result_number(f));
    printf("main: future after result: <Future state=%s>\n", s_state(f));
    zx_future_unref(&f);
    zx_executor_destroy(&ex);
    return 0;
}
