/*  seed_mixed_executors - seed 004: as_completed over futures from more than
    one executor at once: a remote thread-pool task, a remote process-pool
    task, and a task of an in-process (local) executor.
    usage: seed_mixed_executors [ENDPOINT] */
#include "example.h"

#include <unistd.h>

static int s_local_pid(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    msgpack_pack_array(result, 2);
    msgpack_pack_str_with_body(result, "local", 5);
    msgpack_pack_int(result, getpid());
    return ZX_OK;
}

int main(int argc, char **argv)
{
    zx_executor_t *remote = example_executor(argc, argv, 1);
    zx_executor_t *local = zx_executor_new_local(2);
    zx_executor_register(local, "pid", s_local_pid);

    static const char noargs[] = {(char)0x90};
    zx_task_opts_t thread = {.pool = ZX_POOL_THREAD}, process = {.pool = ZX_POOL_PROCESS};
    zx_future_t *fs[3] = {
        zx_submit_opts(remote, "pid", noargs, 1, &thread),
        zx_submit_opts(remote, "pid", noargs, 1, &process),
        zx_submit(local, "pid", noargs, 1),
    };
    static const char *kinds[] = {"remote thread pool", "remote process pool", "local executor"};
    for (int i = 0; i < 3; i++) {
        zx_future_set_data(fs[i], (void *)kinds[i]);
    }
    zx_as_completed_t *it = zx_as_completed_new(fs, 3, 60);
    zx_future_t *f;
    int ok = 0;
    while ((f = zx_as_completed_next(it))) {
        const void *v;
        size_t n;
        if (zx_future_result(f, 0, &v, &n) == ZX_OK) {
            printf("%s: ran in ", (const char *)zx_future_data(f));
            example_print(stdout, v, n);
            printf("\n");
            ok++;
        } else {
            const zx_error_t *e = zx_future_exception(f, 0);
            printf("%s: %s: %s\n", (const char *)zx_future_data(f), e->type, e->message);
        }
    }
    zx_as_completed_destroy(&it);
    for (int i = 0; i < 3; i++) {
        zx_future_unref(&fs[i]);
    }
    zx_executor_destroy(&local);
    zx_executor_destroy(&remote);
    return ok == 3 ? 0 : 1;
}
