/*  cluster.c - the local cluster a remote executor starts when it is given no
    endpoint (zx_executor_new(NULL, opts)), as Dask's Client() does: one
    zexec-broker and opts->local_workers zexec-worker child processes on two
    free loopback ports, owned by the executor and stopped by its destroy.

    Children are started with posix_spawn, never fork: the calling process may
    already run threads or hold a ZeroMQ context (another executor), and a
    forked copy of those is undefined behaviour until exec. The children stay
    in the caller's process group, so a Ctrl-C at the terminal reaches them
    too, and are otherwise tracked by PID only.
*/
#include "remote.h"
#include "zx_net.h"
#include "zx_parent.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <czmq.h>

extern char **environ;

#ifndef ZX_INSTALL_BIN_DIR
#define ZX_INSTALL_BIN_DIR ""
#endif

#define S_MAX_CHILDREN 65
#define S_PORT_TRIES 5
#define S_BROKER_UP_S 10.0 /* the broker must listen within this long */

struct zx__cluster {
    pid_t pids[S_MAX_CHILDREN]; /* [0] broker, then workers; 0 once reaped */
    size_t npids;
    char client_ep[64];
    char worker_ep[64];
};

/* dir/name if it is an executable regular file; malloc'd, or NULL. */
static char *s_try(const char *dir, size_t dir_len, const char *name)
{
    if (!dir || dir_len == 0) {
        return NULL;
    }
    char *p = NULL;
    if (asprintf(&p, "%.*s/%s", (int)dir_len, dir, name) < 0) {
        return NULL;
    }
    struct stat st;
    if (stat(p, &st) == 0 && S_ISREG(st.st_mode) && access(p, X_OK) == 0) {
        return p;
    }
    free(p);
    return NULL;
}

/* Looks for name in the documented order; on failure appends the places it
   looked to where (for the error message). */
static char *s_find(const zx_options_t *opts, const char *name, char *where, size_t where_size)
{
    const char *dirs[] = {opts ? opts->bin_dir : NULL, getenv("ZEXEC_BIN_DIR"), ZX_INSTALL_BIN_DIR};
    const char *labels[] = {"opts->bin_dir", "$ZEXEC_BIN_DIR", "install prefix"};
    char *p;
    size_t used = strlen(where);
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        if ((p = s_try(dirs[i], dirs[i] ? strlen(dirs[i]) : 0, name))) {
            return p;
        }
        if (dirs[i] && *dirs[i] && used < where_size) {
            used += (size_t)snprintf(where + used, where_size - used, "%s%s (%s)", used ? ", " : "",
                                     dirs[i], labels[i]);
        }
    }
    const char *path = getenv("PATH");
    for (const char *s = path; s && *s;) {
        const char *e = strchr(s, ':');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if ((p = s_try(s, n, name))) {
            return p;
        }
        s = e ? e + 1 : s + n;
    }
    if (used < where_size) {
        snprintf(where + used, where_size - used, "%s$PATH", used ? ", " : "");
    }
    return NULL;
}

/* True once something accepts TCP connections on 127.0.0.1:port. */
static bool s_listening(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return false;
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* The daemons of a local cluster log only warnings and errors (to stderr,
   which they share with the program), unless ZEXEC_VERBOSE is set. */
static char *s_quiet(void)
{
    return getenv("ZEXEC_VERBOSE") ? NULL : "-q";
}

/* posix_spawn with default signal dispositions and an empty mask (the
   parent may ignore or block signals the daemons rely on), stdout to
   /dev/null unless ZEXEC_VERBOSE is set (what task functions print must
   not mix with the program's output); stderr, where the daemons log, is
   inherited. */
static pid_t s_spawn(char *const argv[])
{
    posix_spawnattr_t attr;
    posix_spawn_file_actions_t fa;
    if (posix_spawnattr_init(&attr) != 0) {
        return -1;
    }
    if (posix_spawn_file_actions_init(&fa) != 0) {
        posix_spawnattr_destroy(&attr);
        return -1;
    }
    sigset_t all, none;
    sigfillset(&all);
    sigemptyset(&none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    if (!getenv("ZEXEC_VERBOSE")) {
        posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    }
    /* our pid tells the daemons when they are orphaned (zx_parent.h) */
    size_t n = 0;
    while (environ[n]) {
        n++;
    }
    char **env = calloc(n + 2, sizeof *env);
    char parent[64];
    snprintf(parent, sizeof parent, ZX_PARENT_ENV "=%ld", (long)getpid());
    size_t k = 0;
    for (size_t i = 0; env && i < n; i++) {
        if (strncmp(environ[i], ZX_PARENT_ENV "=", strlen(ZX_PARENT_ENV) + 1) != 0) {
            env[k++] = environ[i];
        }
    }
    pid_t pid = -1;
    int rc = ENOMEM;
    if (env) {
        env[k] = parent;
        rc = posix_spawn(&pid, argv[0], &fa, &attr, argv, env);
    }
    free(env);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
        zsys_error("zexec: cannot start %s: %s", argv[0], strerror(rc));
        return -1;
    }
    return pid;
}

/* Waits up to timeout for pid; true if it exited (and was reaped). */
static bool s_reap(pid_t pid, double timeout)
{
    int64_t end = zclock_mono() + (int64_t)(timeout * 1000);
    for (;;) {
        pid_t r = waitpid(pid, NULL, WNOHANG);
        if (r == pid || (r < 0 && errno == ECHILD)) {
            return true;
        }
        if (zclock_mono() >= end) {
            return false;
        }
        zclock_sleep(5);
    }
}

/* Stops pids[from..to): SIGTERM to all, one shared deadline, then SIGKILL. */
static void s_stop_range(zx__cluster_t *c, size_t from, size_t to, double grace)
{
    for (size_t i = from; i < to; i++) {
        if (c->pids[i] > 0) {
            kill(c->pids[i], SIGTERM);
        }
    }
    int64_t end = zclock_mono() + (int64_t)(grace * 1000);
    for (size_t i = from; i < to; i++) {
        if (c->pids[i] <= 0) {
            continue;
        }
        double left = (double)(end - zclock_mono()) / 1000.0;
        if (!s_reap(c->pids[i], left > 0 ? left : 0)) {
            zsys_warning("zexec: local cluster child %d ignored SIGTERM; killing it",
                         (int)c->pids[i]);
            kill(c->pids[i], SIGKILL);
            s_reap(c->pids[i], 5.0);
        }
        c->pids[i] = 0;
    }
}

/* Starts the broker on fresh ports; retries when it cannot bind (another
   process took a port between our probe and its bind). */
static int s_start_broker(zx__cluster_t *c, const char *bin, const zx_options_t *opts)
{
    for (int attempt = 0; attempt < S_PORT_TRIES; attempt++) {
        int cp = zx__free_tcp_port(), wp = zx__free_tcp_port();
        while (cp > 0 && wp == cp) {
            wp = zx__free_tcp_port();
        }
        if (cp < 0 || wp < 0) {
            continue;
        }
        snprintf(c->client_ep, sizeof c->client_ep, "tcp://127.0.0.1:%d", cp);
        snprintf(c->worker_ep, sizeof c->worker_ep, "tcp://127.0.0.1:%d", wp);
        char *argv[10];
        size_t k = 0;
        argv[k++] = (char *)bin;
        argv[k++] = "--clients";
        argv[k++] = c->client_ep;
        argv[k++] = "--workers";
        argv[k++] = c->worker_ep;
        if (opts && opts->secret_file) {
            /* a client that signs needs a broker that does */
            argv[k++] = "--secret-file";
            argv[k++] = (char *)opts->secret_file;
        }
        if (s_quiet()) {
            argv[k++] = s_quiet();
        }
        argv[k] = NULL;
        pid_t pid = s_spawn(argv);
        if (pid < 0) {
            return ZX_EINVAL;
        }
        c->pids[0] = pid;
        c->npids = 1;
        int64_t end = zclock_mono() + (int64_t)(S_BROKER_UP_S * 1000);
        int status = 0;
        while (zclock_mono() < end) {
            if (waitpid(pid, &status, WNOHANG) == pid) {
                c->pids[0] = 0;
                break; /* it exited: most likely a port was taken; try others */
            }
            if (s_listening(cp)) {
                return ZX_OK;
            }
            zclock_sleep(5);
        }
        if (c->pids[0] > 0) {
            s_stop_range(c, 0, 1, 2.0);
            zsys_error("zexec: local zexec-broker did not listen on %s within %.0f s", c->client_ep,
                       S_BROKER_UP_S);
            return ZX_ECONN;
        }
        zsys_warning("zexec: local %s exited at start (%s %d; port taken?); retrying", bin,
                     WIFSIGNALED(status) ? "signal" : "exit status",
                     WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    }
    zsys_error("zexec: local zexec-broker failed to start %d times", S_PORT_TRIES);
    return ZX_ECONN;
}

static int s_start_worker(zx__cluster_t *c, const char *bin, const zx_options_t *opts, int n)
{
    char node[32], threads[16], procs[16];
    snprintf(node, sizeof node, "local-%d", n);
    const char *argv[16 + 2 * 64];
    size_t k = 0;
    argv[k++] = bin;
    argv[k++] = "--broker";
    argv[k++] = c->worker_ep;
    argv[k++] = "--node";
    argv[k++] = node;
    if (s_quiet()) {
        argv[k++] = s_quiet();
    }
    if (opts && opts->local_threads > 0) {
        snprintf(threads, sizeof threads, "%d", opts->local_threads);
        argv[k++] = "--threads";
        argv[k++] = threads;
    }
    if (opts && opts->local_procs > 0) {
        snprintf(procs, sizeof procs, "%d", opts->local_procs);
        argv[k++] = "--procs";
        argv[k++] = procs;
    }
    for (size_t i = 0; opts && opts->plugins && opts->plugins[i]; i++) {
        if (k + 6 >= sizeof argv / sizeof argv[0]) {
            zsys_error("zexec: too many plugins for a local worker (at most 64)");
            return ZX_EINVAL;
        }
        argv[k++] = "--plugin";
        argv[k++] = opts->plugins[i];
    }
    if (opts && opts->allow_exec) {
        argv[k++] = "--allow-exec";
    }
    if (opts && opts->secret_file) {
        argv[k++] = "--secret-file";
        argv[k++] = opts->secret_file;
    }
    argv[k] = NULL;
    pid_t pid = s_spawn((char *const *)argv);
    if (pid < 0) {
        return ZX_EINVAL;
    }
    c->pids[c->npids++] = pid;
    return ZX_OK;
}

zx__cluster_t *zx__cluster_start(const zx_options_t *opts)
{
    int nworkers = opts && opts->local_workers > 0 ? opts->local_workers : 2;
    if (nworkers > S_MAX_CHILDREN - 1) {
        zsys_error("zexec: local_workers %d is more than %d", nworkers, S_MAX_CHILDREN - 1);
        zx__set_last_error(ZX_EINVAL);
        return NULL;
    }
    char where_b[2048] = "", where_w[2048] = "";
    char *broker = s_find(opts, "zexec-broker", where_b, sizeof where_b);
    char *worker = broker ? s_find(opts, "zexec-worker", where_w, sizeof where_w) : NULL;
    if (!broker || !worker) {
        zsys_error("zexec: cannot start a local cluster: %s not found; looked in %s",
                   broker ? "zexec-worker" : "zexec-broker", broker ? where_w : where_b);
        free(broker);
        free(worker);
        zx__set_last_error(ZX_EINVAL);
        return NULL;
    }
    int rc = ZX_ENOMEM;
    zx__cluster_t *c = calloc(1, sizeof *c);
    if (!c) {
        goto fail;
    }
    if ((rc = s_start_broker(c, broker, opts)) != ZX_OK) {
        goto fail;
    }
    for (int i = 1; i <= nworkers; i++) {
        if ((rc = s_start_worker(c, worker, opts, i)) != ZX_OK) {
            goto fail;
        }
    }
    free(broker);
    free(worker);
    return c;
fail:
    zx__cluster_stop(&c);
    free(broker);
    free(worker);
    zx__set_last_error(rc);
    return NULL;
}

const char *zx__cluster_endpoint(const zx__cluster_t *c)
{
    return c->client_ep;
}

size_t zx__cluster_pids(const zx__cluster_t *c, pid_t *pids, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; c && i < c->npids && n < max; i++) {
        pids[n++] = c->pids[i];
    }
    return n;
}

void zx__cluster_stop(zx__cluster_t **c_p)
{
    if (!c_p || !*c_p) {
        return;
    }
    zx__cluster_t *c = *c_p;
    /* workers first: they drain and say BYE while the broker is still there */
    if (c->npids > 1) {
        s_stop_range(c, 1, c->npids, 5.0);
    }
    if (c->npids > 0) {
        s_stop_range(c, 0, 1, 5.0);
    }
    free(c);
    *c_p = NULL;
}
