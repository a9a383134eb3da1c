/*  testutil.c - start and stop the real binaries for integration tests. */
#include "zx_testutil.h"
#include "zx_net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <czmq.h>

int zxt_free_port(void)
{
    return zx__free_tcp_port();
}

static char *s_join(const char *dir, const char *name)
{
    char *p = NULL;
    if (asprintf(&p, "%s/%s", dir, name) < 0) {
        return NULL;
    }
    return p;
}

char *zxt_bin(const char *name)
{
    const char *dir = getenv("ZEXEC_BIN_DIR");
    return s_join(dir ? dir : ".", name);
}

char *zxt_plugin(const char *name)
{
    const char *dir = getenv("ZEXEC_PLUGIN_DIR");
    char *file = NULL;
    if (asprintf(&file, "lib%s.so", name) < 0) {
        return NULL;
    }
    char *p = s_join(dir ? dir : "./examples", file);
    free(file);
    return p;
}

pid_t zxt_spawn(char *const argv[])
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0) {
        return pid;
    }
    /* the child dies with the test process, whatever kills it */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) {
        _exit(127);
    }
    if (!getenv("ZXT_VERBOSE")) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) {
            dup2(null, STDOUT_FILENO);
            dup2(null, STDERR_FILENO);
            close(null);
        }
    }
    execv(argv[0], argv);
    _exit(127);
}

bool zxt_wait_exit(pid_t pid, double timeout, int *status)
{
    int64_t end = zclock_mono() + (int64_t)(timeout * 1000);
    int st = 0;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid || (r < 0 && errno == ECHILD)) {
            if (status) {
                *status = st;
            }
            return true;
        }
        if (zclock_mono() >= end) {
            return false;
        }
        zclock_sleep(5);
    }
}

void zxt_stop(pid_t pid)
{
    if (pid <= 0) {
        return;
    }
    kill(pid, SIGTERM);
    if (!zxt_wait_exit(pid, 5.0, NULL)) {
        zxt_kill(pid);
    }
}

void zxt_kill(pid_t pid)
{
    if (pid <= 0) {
        return;
    }
    kill(pid, SIGKILL);
    zxt_wait_exit(pid, 5.0, NULL);
}

/* argv = fixed args + extra (NULL-terminated), then NULL */
static pid_t s_spawn_with(char **fixed, size_t nfixed, const char *const extra[])
{
    size_t nextra = 0;
    while (extra && extra[nextra]) {
        nextra++;
    }
    char **argv = calloc(nfixed + nextra + 1, sizeof *argv);
    if (!argv) {
        return -1;
    }
    memcpy(argv, fixed, nfixed * sizeof *argv);
    for (size_t i = 0; i < nextra; i++) {
        argv[nfixed + i] = (char *)extra[i];
    }
    pid_t pid = zxt_spawn(argv);
    free(argv);
    return pid;
}

static pid_t s_broker_spawn(zxt_cluster_t *c, const char *const extra[])
{
    char *bin = zxt_bin("zexec-broker");
    char *fixed[] = {bin, "--clients", c->client_ep, "--workers", c->worker_ep};
    pid_t pid = s_spawn_with(fixed, 5, extra);
    free(bin);
    return pid;
}

int zxt_broker_start(zxt_cluster_t *c, const char *const extra[])
{
    memset(c, 0, sizeof *c);
    c->client_port = zxt_free_port();
    c->worker_port = zxt_free_port();
    while (c->worker_port == c->client_port) {
        c->worker_port = zxt_free_port();
    }
    if (c->client_port < 0 || c->worker_port < 0) {
        return -1;
    }
    snprintf(c->client_ep, sizeof c->client_ep, "tcp://127.0.0.1:%d", c->client_port);
    snprintf(c->worker_ep, sizeof c->worker_ep, "tcp://127.0.0.1:%d", c->worker_port);
    c->broker = s_broker_spawn(c, extra);
    return c->broker > 0 ? 0 : -1;
}

int zxt_broker_restart(zxt_cluster_t *c, const char *const extra[])
{
    c->broker = s_broker_spawn(c, extra);
    return c->broker > 0 ? 0 : -1;
}

pid_t zxt_worker_start(zxt_cluster_t *c, const char *node, const char *const extra[])
{
    if (c->nworkers >= ZXT_MAX_WORKERS) {
        return -1;
    }
    char *bin = zxt_bin("zexec-worker");
    char *fixed[] = {bin, "--broker", c->worker_ep, "--node", (char *)node};
    pid_t pid = s_spawn_with(fixed, 5, extra);
    free(bin);
    if (pid > 0) {
        c->workers[c->nworkers++] = pid;
    }
    return pid;
}

void zxt_cluster_stop(zxt_cluster_t *c)
{
    for (int i = 0; i < c->nworkers; i++) {
        zxt_stop(c->workers[i]);
        c->workers[i] = 0;
    }
    c->nworkers = 0;
    zxt_stop(c->broker);
    c->broker = 0;
}

bool zxt_wait_for(bool (*cond)(void *arg), void *arg, double timeout)
{
    int64_t end = zclock_mono() + (int64_t)(timeout * 1000);
    for (;;) {
        if (cond(arg)) {
            return true;
        }
        if (zclock_mono() >= end) {
            return false;
        }
        zclock_sleep(10);
    }
}

long zxt_rss_kb(pid_t pid)
{
    char path[64], line[256];
    if (pid) {
        snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    } else {
        snprintf(path, sizeof path, "/proc/self/status");
    }
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof line, f)) {
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) {
            break;
        }
    }
    if (f) {
        fclose(f);
    }
    return kb;
}

char *zxt_slurp(const char *path)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = fopen(path, "r");
    FILE *m = open_memstream(&buf, &len);
    if (!m) {
        abort();
    }
    if (f) {
        char chunk[8192];
        size_t n;
        while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
            fwrite(chunk, 1, n, m);
        }
        fclose(f);
    }
    fclose(m);
    return buf;
}

pid_t zxt_run_cmd(const char *prog, const char *dir, bool chdir_to_dir, const char *in, int out_fd,
                  const char *const *args, const char *const *env)
{
    char pin[512], pout[512], perr[512];
    snprintf(pin, sizeof pin, "%s/in", dir);
    snprintf(pout, sizeof pout, "%s/out", dir);
    snprintf(perr, sizeof perr, "%s/err", dir);
    FILE *f = fopen(pin, "w");
    if (!f) {
        return -1;
    }
    fputs(in ? in : "", f);
    fclose(f);
    size_t nargs = 0;
    while (args && args[nargs]) {
        nargs++;
    }
    const char **argv = calloc(nargs + 2, sizeof *argv);
    if (!argv) {
        return -1;
    }
    argv[0] = prog;
    for (size_t k = 0; k < nargs; k++) {
        argv[k + 1] = args[k];
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0) {
        free(argv);
        return pid;
    }
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) {
        _exit(127);
    }
    int i = open(pin, O_RDONLY), e = open(perr, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int o = out_fd >= 0 ? out_fd : open(pout, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (i < 0 || o < 0 || e < 0 || dup2(i, 0) < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0) {
        _exit(126);
    }
    for (int fd = 3; fd < 1024; fd++) {
        close(fd); /* the test's end of a pipe, above all */
    }
    if (chdir_to_dir && chdir(dir) != 0) {
        _exit(126);
    }
    for (size_t k = 0; env && env[k]; k += 2) {
        if (env[k + 1]) {
            setenv(env[k], env[k + 1], 1);
        } else {
            unsetenv(env[k]);
        }
    }
    execv(prog, (char *const *)argv);
    _exit(127);
}

zxt_proc_t zxt_collect(pid_t pid, const char *dir, double timeout)
{
    zxt_proc_t r = {.status = -1};
    int st;
    if (pid > 0 && zxt_wait_exit(pid, timeout, &st)) {
        r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    } else if (pid > 0) {
        zxt_kill(pid);
    }
    char pout[512], perr[512];
    snprintf(pout, sizeof pout, "%s/out", dir);
    snprintf(perr, sizeof perr, "%s/err", dir);
    r.out = zxt_slurp(pout);
    r.err = zxt_slurp(perr);
    return r;
}

void zxt_proc_free(zxt_proc_t *r)
{
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}

int zxt_run_script(const char *script, const char *args, int limit_s, char *last, size_t last_len)
{
    const char *src = getenv("ZEXEC_SOURCE_DIR");
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "timeout -k 5 %d '%s/tests/%s' %s 2>&1", limit_s, src ? src : ".",
             script, args ? args : "");
    last[0] = 0;
    FILE *p = popen(cmd, "r");
    if (!p) {
        return -1;
    }
    char line[4096];
    while (fgets(line, sizeof line, p)) {
        fputs(line, stdout);
        fflush(stdout);
        if (line[0] != '\n') {
            snprintf(last, last_len, "%s", line);
        }
    }
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
