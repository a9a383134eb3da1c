/*  embedded_worker - a program that is its own zexec worker node, with a
    function registered in it ("reverse": the reversed string), as Gearman
    workers are. Run a broker, then this, then submit "reverse":

        zexec-broker &
        embedded_worker [BROKER_WORKER_ENDPOINT]

    It stops (draining) on Ctrl-C or SIGTERM. */
#include <zexec_worker.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int s_reverse(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    if (args->via.array.size != 1 || args->via.array.ptr[0].type != MSGPACK_OBJECT_STR) {
        return zx_raise(task, "TypeError", "reverse takes one string");
    }
    const msgpack_object_str *s = &args->via.array.ptr[0].via.str;
    char *out = malloc(s->size + 1);
    if (!out) {
        return zx_raise(task, "MemoryError", "out of memory");
    }
    for (uint32_t i = 0; i < s->size; i++) {
        out[i] = s->ptr[s->size - 1 - i];
    }
    msgpack_pack_str(result, s->size);
    msgpack_pack_str_body(result, out, s->size);
    free(out);
    return ZX_OK;
}

int main(int argc, char **argv)
{
    const char *endpoint = argc > 1 ? argv[1] : ZX_DEFAULT_WORKER_ENDPOINT;
    zx_worker_opts_t opts = {.node = "embedded", .threads = 2, .procs = 1};
    zx_worker_t *w = zx_worker_new(endpoint, &opts);
    if (!w || zx_worker_register(w, "reverse", s_reverse, ZX_POOLS_ANY) != ZX_OK) {
        fprintf(stderr, "embedded_worker: cannot set up the worker\n");
        zx_worker_destroy(&w);
        return 1;
    }
    printf("embedded_worker: serving \"reverse\" for %s\n", endpoint);
    fflush(stdout);
    /* zx_worker_run forks the process pool's fork server before it starts
       any thread or ZeroMQ context: call it before making either */
    int rc = zx_worker_run(w);
    zx_worker_destroy(&w);
    return rc == ZX_OK ? 0 : 1;
}
