/*  remote.h - internals of the remote executor (remote.c, remote_io.c; the
    records they share are in remote_int.h) and of the local cluster it may
    own (cluster.c): one zexec-broker and N zexec-worker child processes on
    loopback, started for zx_executor_new(NULL, opts).
*/
#ifndef ZX_REMOTE_H
#define ZX_REMOTE_H

#include "zx_client_int.h"

#include <sys/types.h>

typedef struct zx__cluster zx__cluster_t;

/* Finds the binaries (opts->bin_dir, $ZEXEC_BIN_DIR, the
   install prefix, $PATH), picks two free loopback ports and spawns the broker
   and opts->local_workers workers (posix_spawn, no fork). Returns NULL with
   zx_last_error set (ZX_EINVAL: binaries not found, logged with where it
   looked; ZX_ENOMEM; ZX_ECONN: the broker would not start). */
zx__cluster_t *zx__cluster_start(const zx_options_t *opts);

/* The broker's client endpoint, e.g. "tcp://127.0.0.1:40123"; borrowed. */
const char *zx__cluster_endpoint(const zx__cluster_t *c);

/* PIDs of the children: [0] is the broker, then the workers. Returns the
   count; for tests that check every child is gone after destroy. */
size_t zx__cluster_pids(const zx__cluster_t *c, pid_t *pids, size_t max);

/* SIGTERM to the workers, then the broker; waits a bounded time for each,
   SIGKILLs what is left and reaps everything. Accepts NULL. */
void zx__cluster_stop(zx__cluster_t **c_p);

/* Whether a thread that waits for a future of this remote executor leads
   now (reads its socket in place of the I/O thread, remote_io.c). For
   tests, which answer only once a thread leads. */
bool zx__remote_leading(zx_executor_t *ex);

/* The local cluster of a remote executor, or NULL if it connected to a
   given endpoint (or is not a remote executor). Borrowed. */
zx__cluster_t *zx__remote_cluster(zx_executor_t *ex);

#endif
