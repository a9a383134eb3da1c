/*  zexec_tally_plugin.c - a worker plugin for the durability tests
    (tests/test_durable.c): counts executions, so a test can tell how many
    times each task ran across broker kills.

      tally [n]  -> n, after appending n (8 bytes, native order) to the file
                    $ZEXEC_TALLY_FILE (one write on an O_APPEND descriptor:
                    writes of workers running at once do not interleave)
*/
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "zexec_worker.h"

static int s_tally(zx_task_t *task, const msgpack_object *args, msgpack_packer *result)
{
    if (args->type != MSGPACK_OBJECT_ARRAY || args->via.array.size != 1 ||
        args->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        return zx_raise(task, "TypeError", "tally takes one unsigned integer");
    }
    uint64_t n = args->via.array.ptr[0].via.u64;
    const char *path = getenv("ZEXEC_TALLY_FILE");
    if (path) {
        int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0 || write(fd, &n, sizeof n) != (ssize_t)sizeof n) {
            if (fd >= 0) {
                close(fd);
            }
            return zx_raise(task, "OSError", "cannot append to $ZEXEC_TALLY_FILE");
        }
        close(fd);
    }
    return msgpack_pack_uint64(result, n) == 0 ? ZX_OK : ZX_ENOMEM;
}

const zx_plugin_entry_t zexec_plugin[] = {
    {"tally", s_tally, ZX_POOLS_ANY},
    {NULL, NULL, 0},
};
