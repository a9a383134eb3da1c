/*  seed_download - seeds 003/004: the download simulation. Each future maps
    to its URL through the future's user data (the seed's dict idiom); one URL
    fails, and its error is reported for that URL only.
    usage: seed_download [ENDPOINT] */
#include "example.h"

int main(int argc, char **argv)
{
    static const char *urls[] = {"http://example.com/page1", "http://example.com/page2",
                                 "http://example.com/bad-page", "http://example.com/page3"};
    enum { N = sizeof urls / sizeof urls[0] };
    zx_executor_t *ex = example_executor(argc, argv, 2);
    zx_future_t *fs[N];
    for (size_t i = 0; i < N; i++) {
        fs[i] = zx_submitf(ex, "download", "sd", urls[i], example_scale());
        zx_future_set_data(fs[i], (void *)urls[i]);
    }
    int failed = 0;
    zx_as_completed_t *it = zx_as_completed_new(fs, N, ZX_FOREVER);
    zx_future_t *f;
    while ((f = zx_as_completed_next(it))) {
        const char *url = zx_future_data(f);
        const void *v;
        size_t n;
        if (zx_future_result(f, ZX_FOREVER, &v, &n) == ZX_OK) {
            printf("Download completed for %s: ", url);
            example_print(stdout, v, n);
            printf("\n");
        } else {
            const zx_error_t *e = zx_future_exception(f, 0);
            printf("Error for %s: %s: %s\n", url, e->type, e->message);
            failed++;
        }
    }
    zx_as_completed_destroy(&it);
    for (size_t i = 0; i < N; i++) {
        zx_future_unref(&fs[i]);
    }
    zx_executor_destroy(&ex);
    return failed == 1 ? 0 : 1;
}
