/*  zx_testutil.h - helpers for integration tests: free ports, the real
    zexec-broker / zexec-worker binaries started and stopped by PID.
    Children get PR_SET_PDEATHSIG(SIGKILL), so a test that dies mid-way
    leaves nothing running. */
#ifndef ZX_TESTUTIL_H
#define ZX_TESTUTIL_H

#include <stdbool.h>
#include <sys/types.h>

/* A TCP port on 127.0.0.1 that was free a moment ago. */
int zxt_free_port(void);

/* Absolute path of a built binary ("zexec-broker") or plugin
   ("zexec_demo_plugin" -> .../examples/libzexec_demo_plugin.so); static buffer
   per call site is not kept: returns a malloc'd string the caller frees. */
char *zxt_bin(const char *name);
char *zxt_plugin(const char *name);

/* fork + execv(argv[0], argv) with stdout/stderr to /dev/null unless
   ZXT_VERBOSE is set in the environment. Returns the pid, or -1. */
pid_t zxt_spawn(char *const argv[]);

/* Waits for pid to exit for at most timeout seconds; true if it did
   (*status gets the waitpid status when status is not NULL). */
bool zxt_wait_exit(pid_t pid, double timeout, int *status);

/* SIGTERM, up to 5 s, then SIGKILL; always reaps. Ignores pid <= 0. */
void zxt_stop(pid_t pid);
/* SIGKILL and reap. */
void zxt_kill(pid_t pid);

#define ZXT_MAX_WORKERS 8
typedef struct {
    pid_t broker;
    pid_t workers[ZXT_MAX_WORKERS];
    int nworkers;
    int client_port, worker_port;
    char client_ep[64]; /* tcp://127.0.0.1:<client_port> */
    char worker_ep[64]; /* tcp://127.0.0.1:<worker_port> */
} zxt_cluster_t;

/* Picks two free ports and starts zexec-broker --clients/--workers on them,
   plus extra arguments (NULL-terminated, may be NULL). 0 or -1. */
int zxt_broker_start(zxt_cluster_t *c, const char *const extra[]);
/* Restarts the broker on the same ports (after zxt_kill(c->broker) etc.). */
int zxt_broker_restart(zxt_cluster_t *c, const char *const extra[]);
/* Starts zexec-worker --broker <worker_ep> --node <node> plus extra args;
   returns its pid (also stored in c->workers) or -1. */
pid_t zxt_worker_start(zxt_cluster_t *c, const char *node, const char *const extra[]);
/* Stops every worker, then the broker. */
void zxt_cluster_stop(zxt_cluster_t *c);

/* Polls cond(arg) every 10 ms for at most timeout seconds; true if it held.
   For state that has no event to wait on (a process's existence, a file). */
bool zxt_wait_for(bool (*cond)(void *arg), void *arg, double timeout);

/* A process's resident set in KiB (VmRSS of /proc/PID/status; pid 0: this
   one); -1 when it cannot be read. */
long zxt_rss_kb(pid_t pid);

/* A whole file as a string (malloc'd, NUL-terminated); "" when it cannot be
   read, so a missing output file reads as empty output. */
char *zxt_slurp(const char *path);

/* A command's run: its exit status (-1 when it did not exit in time; 128 +
   n when killed by signal n) and its stdout and stderr (malloc'd). */
typedef struct {
    int status;
    char *out, *err;
} zxt_proc_t;

/* Starts prog with args (NULL-terminated, not counting prog) in dir: stdin
   from the text in (written to dir/in), stdout to dir/out (or the fd out_fd
   when >= 0), stderr to dir/err, every other fd closed, working directory
   dir when chdir_to_dir. env: NAME, VALUE pairs, NULL-terminated (VALUE NULL
   unsets NAME), may be NULL. The child dies with the test (PDEATHSIG).
   Returns its pid, or -1. */
pid_t zxt_run_cmd(const char *prog, const char *dir, bool chdir_to_dir, const char *in, int out_fd,
                  const char *const *args, const char *const *env);
/* Waits for pid at most timeout seconds (then kills it) and reads dir/out and
   dir/err. */
zxt_proc_t zxt_collect(pid_t pid, const char *dir, double timeout);
void zxt_proc_free(zxt_proc_t *r);

/* Runs tests/<script> (under $ZEXEC_SOURCE_DIR) with args (a shell word list,
   may be ""), bounded by `timeout -k 5 limit_s`, echoing its output so the
   test log shows each step; keeps its last non-empty line in last. Returns
   its exit status (77: skipped, the reason in last; 128 + n: killed by
   signal n), -1 when it cannot be started. */
int zxt_run_script(const char *script, const char *args, int limit_s, char *last, size_t last_len);

#endif
