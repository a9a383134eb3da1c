/*  seed_done_callback - seed 001: a done-callback that reports the value, the
    error or the cancellation of its future, using the future's user data as
    the seed uses fn.arg.
    usage: seed_done_callback [ENDPOINT] */
#include "example.h"

#include <pthread.h>

static void s_done(zx_future_t *f, void *arg)
{
    int n = (int)(intptr_t)zx_future_data(f);
    if (zx_future_cancelled(f)) {
        printf("%d: canceled\n", n);
    } else {
        const zx_error_t *e = zx_future_exception(f, 0);
        if (e) {
            printf("%d: error returned: %s: %s\n", n, e->type, e->message);
        } else {
            const void *v;
            size_t len;
            zx_future_result(f, 0, &v, &len);
            printf("%d: value returned: ", n);
            example_print(stdout, v, len);
            printf("\n");
        }
    }
    fflush(stdout);
}

int main(int argc, char **argv)
{
    zx_executor_t *ex = example_executor(argc, argv, 1);
    double scale = example_scale();
    printf("main: starting\n");
    zx_future_t *f = zx_submitf(ex, "task", "id", 5, scale);
    zx_future_set_data(f, (void *)(intptr_t)5);
    zx_future_add_done_callback(f, s_done, NULL);

    /* one that raises, and one cancelled before it can start */
    zx_future_t *bad = zx_submitf(ex, "divide", "ii", 1, 0);
    zx_future_set_data(bad, (void *)(intptr_t)0);
    zx_future_add_done_callback(bad, s_done, NULL);
    zx_task_opts_t low = {.priority = -100};
    char args[3] = {(char)0x92, 60, 0}; /* [60, 0]: would sleep a minute */
    zx_future_t *late = zx_submit_opts(ex, "task", args, sizeof args, &low);
    zx_future_set_data(late, (void *)(intptr_t)60);
    zx_future_add_done_callback(late, s_done, NULL);
    /* it is cancelled if it has not started; on a busy machine a free
       worker may have started it already, and then the callback reports
       its value instead (Python's Future.cancel() is False then too) */
    bool cancelled = zx_future_cancel(late);
    printf("main: cancel of 60 before it started: %s\n", cancelled ? "yes" : "no");
    fflush(stdout);

    zx_future_result(f, ZX_FOREVER, NULL, NULL);
    zx_future_result(bad, ZX_FOREVER, NULL, NULL);
    zx_future_unref(&f);
    zx_future_unref(&bad);
    zx_future_unref(&late);
    zx_executor_destroy(&ex);
    return 0;
}
