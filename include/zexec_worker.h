/*  zexec_worker.h - the worker side: embed a worker in a program, or write a
    plugin that zexec-worker loads with --plugin.

    A task function (zx_task_fn, in zexec.h) receives its arguments as a
    msgpack array and packs one result value, or returns zx_raise(...).
*/
#ifndef ZEXEC_WORKER_H
#define ZEXEC_WORKER_H

#include "zexec.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Pools a function may run in (bit mask). */
#define ZX_POOLS_THREAD 1
#define ZX_POOLS_PROCESS 2
#define ZX_POOLS_ANY 3

/* A plugin is a shared library exporting, under the symbol named
   ZX_PLUGIN_SYMBOL, an array of entries ended by one whose name is NULL:

       const zx_plugin_entry_t zexec_plugin[] = {
           {"square", square, ZX_POOLS_ANY},
           {NULL, NULL, 0}
       };

   It may also export ZX_PLUGIN_INIT_SYMBOL, an int (*)(void) run once in the
   worker and once in every new process-pool child before its first task (as
   Python's initializer); non-zero fails the load or the child. */
typedef struct zx_plugin_entry {
    const char *name;
    zx_task_fn *fn;
    int pools; /* ZX_POOLS_* ; 0 means ZX_POOLS_ANY */
} zx_plugin_entry_t;

#define ZX_PLUGIN_SYMBOL "zexec_plugin"
#define ZX_PLUGIN_INIT_SYMBOL "zexec_plugin_init"

typedef struct zx_worker zx_worker_t;

/* Worker options. All-zero means every default. */
typedef struct zx_worker_opts {
    const char *node;        /* node name; default: hostname */
    int threads;             /* thread-pool size; default: cores; -1: no thread pool */
    int procs;               /* process-pool size; default: cores; -1: no process pool */
    int prefetch;            /* tasks queued beyond free slots, per pool; default 1 */
    double heartbeat;        /* seconds; default 1.0 */
    int liveness;            /* missed heartbeats before the broker is lost; default 3 */
    double time_limit;       /* default per-task limit in seconds; 0: none */
    int max_tasks_per_child; /* replace a child after this many tasks; 0: never */
    size_t child_memory;     /* RLIMIT_AS of each child in bytes; 0: unlimited */
    bool allow_exec;         /* offer the built-in "exec" (runs command lines) */
    bool no_builtins;        /* do not offer echo, sleep, fail */
    /* Security (docs/security.md). CURVE: both or neither. */
    const char *server_key;  /* the broker's public certificate file */
    const char *key;         /* this worker's secret certificate file */
    const char *secret_file; /* shared secret for signing; default $ZEXEC_SECRET (which the
                                worker then unsets, so tasks and exec never see it) */
} zx_worker_opts_t;

/* Makes a worker for the broker's worker endpoint (NULL: the loopback default).
   Nothing is started yet. opts may be NULL. Returns NULL with zx_last_error()
   set on failure: ZX_EINVAL (a bad option, or a security configuration that
   does not load, logged), ZX_ENOMEM. */
ZX_EXPORT zx_worker_t *zx_worker_new(const char *broker_endpoint, const zx_worker_opts_t *opts);

/* Registers fn under name for the given ZX_POOLS_* (0: any). Call before
   zx_worker_run. ZX_EINVAL on a bad name or a duplicate. */
ZX_EXPORT int zx_worker_register(zx_worker_t *w, const char *name, zx_task_fn *fn, int pools);

/* Loads a plugin (see above) and registers its functions. */
ZX_EXPORT int zx_worker_load_plugin(zx_worker_t *w, const char *path);

/* Runs until zx_worker_stop, SIGINT or SIGTERM (then drains: running tasks
   finish, no new ones are taken, BYE is sent). The process pool's fork server
   starts here, before any thread or ZeroMQ context: call it from a process
   that has neither yet if you use the process pool. Returns ZX_OK or a code. */
ZX_EXPORT int zx_worker_run(zx_worker_t *w);

/* Asks a running worker to drain and return; safe from any thread or a
   signal handler. */
ZX_EXPORT void zx_worker_stop(zx_worker_t *w);

ZX_EXPORT void zx_worker_destroy(zx_worker_t **w_p);

#ifdef __cplusplus
}
#endif
#endif
