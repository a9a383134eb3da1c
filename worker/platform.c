/*  platform.c - the POSIX calls of the worker node in one place: socket
    pairs and descriptor passing (SCM_RIGHTS), signals, rlimits, process
    status text, and running a command for the built-in exec.

    Linux-only bits (prctl PR_SET_PDEATHSIG) are guarded so the rest builds
    on other POSIX systems; there a killed worker leaves its fork server to
    notice EOF on its control socket instead.
*/
#include "zx_worker_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#include <sys/random.h>
#endif

int zxw_plat_socketpair(int type, int sv[2])
{
    return socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv);
}

int zxw_plat_send_ctl(int sock, const zxw_ctl_t *msg, int fd)
{
    struct iovec iov = {(void *)msg, sizeof *msg};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr mh = {0};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    if (fd >= 0) {
        memset(&u, 0, sizeof u);
        mh.msg_control = u.buf;
        mh.msg_controllen = sizeof u.buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof fd);
    }
    ssize_t n;
    do {
        n = sendmsg(sock, &mh, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n == (ssize_t)sizeof *msg ? 0 : -1;
}

int zxw_plat_recv_ctl(int sock, zxw_ctl_t *msg, int *fd)
{
    struct iovec iov = {msg, sizeof *msg};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr mh = {0};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = u.buf;
    mh.msg_controllen = sizeof u.buf;
    if (fd) {
        *fd = -1;
    }
    ssize_t n;
    do {
        n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n == 0) {
        return 0;
    }
    if (n < 0) {
        return (errno == EAGAIN || errno == EWOULDBLOCK) ? -1 : 0;
    }
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int got;
            memcpy(&got, CMSG_DATA(c), sizeof got);
            if (fd) {
                *fd = got;
            } else {
                close(got);
            }
        }
    }
    if (n != (ssize_t)sizeof *msg) {
        if (fd && *fd >= 0) {
            close(*fd);
            *fd = -1;
        }
        return -1;
    }
    return 1;
}

int zxw_plat_set_nonblock(int fd, bool on)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0) {
        return -1;
    }
    fl = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
    return fcntl(fd, F_SETFL, fl);
}

bool zxw_plat_writev_all(int fd, struct iovec *iov, int n)
{
    while (n > 0) {
        ssize_t w = writev(fd, iov, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                struct pollfd p = {fd, POLLOUT, 0};
                if (poll(&p, 1, 1000) < 0 && errno != EINTR) {
                    return false;
                }
                continue;
            }
            return false;
        }
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return true;
}

bool zxw_plat_read_all(int fd, void *data, size_t len)
{
    char *p = data;
    while (len > 0) {
        ssize_t r = read(fd, p, len);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return false;
        }
        p += r;
        len -= (size_t)r;
    }
    return true;
}

void zxw_plat_precise_timers(void)
{
#ifdef __linux__
    prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
#endif
}

static void s_die_with_parent(void)
{
#ifdef __linux__
    prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
}

/* Ctrl-C reaches the whole process group and a service manager's SIGTERM
   the whole cgroup: the worker drains on those, so its fork server and
   children must outlive them until the worker lets them go. */
static void s_ignore_stop_signals(void)
{
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
}

void zxw_plat_server_setup(void)
{
    s_die_with_parent();
    s_ignore_stop_signals();
}

static int s_chld_pipe[2] = {-1, -1};

static void s_on_sigchld(int sig)
{
    (void)sig;
    int saved = errno;
    char c = 1;
    if (write(s_chld_pipe[1], &c, 1) < 0) {
        /* full pipe: a wake-up is already pending */
    }
    errno = saved;
}

int zxw_plat_sigchld_pipe(void)
{
    if (pipe2(s_chld_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        return -1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_sigchld;
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGCHLD, &sa, NULL);
    return s_chld_pipe[0];
}

int zxw_plat_child_setup(size_t child_memory)
{
    s_die_with_parent();
    /* the fork server's SIGCHLD handler and self-pipe are not ours */
    signal(SIGCHLD, SIG_DFL);
    if (s_chld_pipe[0] >= 0) {
        close(s_chld_pipe[0]);
        close(s_chld_pipe[1]);
        s_chld_pipe[0] = s_chld_pipe[1] = -1;
    }
    s_ignore_stop_signals();
    zxw_plat_precise_timers();
    /* a crash must end the child with its own signal, so the worker can name
       it (a sanitizer's handler would turn it into exit status 1) */
    static const int crash[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
    for (size_t i = 0; i < sizeof crash / sizeof crash[0]; i++) {
        signal(crash[i], SIG_DFL);
    }
    if (child_memory > 0) {
        struct rlimit rl = {(rlim_t)child_memory, (rlim_t)child_memory};
        if (setrlimit(RLIMIT_AS, &rl) != 0) {
            return -1;
        }
    }
    return 0;
}

void zxw_plat_describe_status(int status, char *buf, size_t len)
{
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        const char *name = strsignal(sig);
        snprintf(buf, len, "killed by signal %d (%s)", sig, name ? name : "unknown signal");
    } else if (WIFEXITED(status)) {
        snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
    } else {
        snprintf(buf, len, "ended with wait status %d", status);
    }
}

int zxw_plat_random(void *buf, size_t len)
{
#ifdef __linux__
    if (getrandom(buf, len, 0) == (ssize_t)len) {
        return 0;
    }
#endif
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    bool ok = zxw_plat_read_all(fd, buf, len);
    close(fd);
    return ok ? 0 : -1;
}

static void (*s_stop_fn)(void *);
static void *s_stop_arg;
static struct sigaction s_old_int, s_old_term;
static bool s_stop_installed;

static void s_on_stop_signal(int sig)
{
    (void)sig;
    int saved = errno;
    if (s_stop_fn) {
        s_stop_fn(s_stop_arg);
    }
    errno = saved;
}

void zxw_plat_stop_handlers_install(void (*fn)(void *), void *arg)
{
    s_stop_fn = fn;
    s_stop_arg = arg;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_stop_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &s_old_int);
    sigaction(SIGTERM, &sa, &s_old_term);
    s_stop_installed = true;
}

void zxw_plat_stop_handlers_restore(void)
{
    if (s_stop_installed) {
        sigaction(SIGINT, &s_old_int, NULL);
        sigaction(SIGTERM, &s_old_term, NULL);
        s_stop_installed = false;
    }
    s_stop_fn = NULL;
    s_stop_arg = NULL;
}

void zxw_plat_ignore_sigpipe(void)
{
    signal(SIGPIPE, SIG_IGN);
}

uint64_t zxw_plat_vm_nonresident(void)
{
    uint64_t size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "re");
    if (!f) {
        return 0;
    }
    if (fscanf(f, "%" SCNu64 " %" SCNu64, &size, &resident) != 2 || resident > size) {
        size = resident = 0;
    }
    fclose(f);
    return (size - resident) * (uint64_t)sysconf(_SC_PAGESIZE);
}

int zxw_plat_cores(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* ---- exec ----------------------------------------------------------------- */

void zxw_exec_result_fini(zxw_exec_result_t *res)
{
    free(res->out);
    free(res->err);
    res->out = res->err = NULL;
}

/* In the command's process, between vfork and exec: it shares the pool
   child's memory (and its stack below this frame) until exec, so it only
   makes system calls: nothing here may allocate or write to memory the
   parent will read, and it never returns. Every signal is blocked on entry
   (zxw_plat_exec), so no handler of the parent's runs here before the
   dispositions are reset. */
static void s_exec_child(char *const argv[], const zxw_exec_opts_t *o, char *const envp[], int in,
                         int out, int err, int ep)
{
    s_die_with_parent();
    setpgid(0, 0);
    /* dispositions set to ignore survive exec: give the command defaults */
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig != SIGKILL && sig != SIGSTOP) {
            signal(sig, SIG_DFL);
        }
    }
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0) {
        goto fail;
    }
    if (o->cwd && chdir(o->cwd) != 0) {
        goto fail;
    }
    execvpe(argv[0], argv, envp);
fail:;
    int e = errno;
    if (write(ep, &e, sizeof e) < 0) {
        /* nothing more to do: the parent sees EOF */
    }
    _exit(127);
}

static void s_take(char **buf, size_t *len, size_t max, bool *trunc, const char *data, size_t n)
{
    size_t room = *len < max ? max - *len : 0;
    size_t keep = n < room ? n : room;
    if (keep < n) {
        *trunc = true;
    }
    if (keep > 0) {
        char *nb = realloc(*buf, *len + keep);
        if (!nb) {
            *trunc = true;
            return;
        }
        *buf = nb;
        memcpy(*buf + *len, data, keep);
        *len += keep;
    }
}

static void s_tail(zxw_exec_result_t *r, const char *data, size_t n)
{
    size_t cap = sizeof r->err_tail;
    if (n >= cap) {
        memcpy(r->err_tail, data + n - cap, cap);
        r->err_tail_len = cap;
        return;
    }
    if (r->err_tail_len + n > cap) {
        size_t drop = r->err_tail_len + n - cap;
        memmove(r->err_tail, r->err_tail + drop, r->err_tail_len - drop);
        r->err_tail_len -= drop;
    }
    memcpy(r->err_tail + r->err_tail_len, data, n);
    r->err_tail_len += n;
}

/* The command's environment: ours with o->env's KEY=VALUE entries put in
   (each replaces ours of the same KEY, as putenv would), made before the
   vfork since the child may not allocate. environ itself (or an empty one)
   when there are none; NULL when out of memory. */
static char **s_envp(char *const *add)
{
    static char *none[] = {NULL};
    if (!add || !*add) {
        return environ ? environ : none; /* clearenv() leaves it NULL */
    }
    size_t n = 0, m = 0;
    while (environ && environ[n]) {
        n++;
    }
    while (add[m]) {
        m++;
    }
    char **envp = malloc((n + m + 1) * sizeof *envp);
    if (!envp) {
        return NULL;
    }
    if (n) {
        memcpy(envp, environ, n * sizeof *envp);
    }
    for (size_t i = 0; i < m; i++) {
        const char *eq = strchr(add[i], '=');
        if (!eq) {
            continue; /* not KEY=VALUE (builtins.c makes only those) */
        }
        size_t key = (size_t)(eq - add[i]) + 1; /* "KEY=" */
        size_t j = 0;
        while (j < n && strncmp(envp[j], add[i], key) != 0) {
            j++;
        }
        envp[j] = add[i];
        n += j == n;
    }
    envp[n] = NULL;
    return envp;
}

/* Starts the command: vfork, not fork. The pool child has the worker's
   libraries mapped, and fork copied its page tables for every command only
   to tear them down at exec, as much CPU per `true` as `true` itself
   (docs/performance.md change 41). The caller is suspended until the child
   execs or exits. A function of its own, so that no variable of the
   caller's lives across the vfork. The pid, or -1 with errno. */
__attribute__((noinline)) static pid_t s_spawn(char *const argv[], const zxw_exec_opts_t *o,
                                               char *const envp[], const int fds[4])
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t pid = vfork();
    if (pid == 0) {
        s_exec_child(argv, o, envp, fds[0], fds[1], fds[2], fds[3]);
    }
    int e = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = e;
    return pid;
}

int zxw_plat_exec(char *const argv[], const zxw_exec_opts_t *o, zxw_exec_result_t *r)
{
    memset(r, 0, sizeof *r);
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, ep[2] = {-1, -1};
    int rc = -1;
    if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC) ||
        pipe2(ep, O_CLOEXEC)) {
        r->exec_errno = errno;
        goto done;
    }
    char **envp = s_envp(o->env);
    if (!envp) {
        r->exec_errno = ENOMEM;
        goto done;
    }
    pid_t pid = s_spawn(argv, o, envp, (int[4]){in[0], out[1], err[1], ep[1]});
    int fork_errno = errno;
    if (o->env && *o->env) {
        free(envp);
    }
    if (pid < 0) {
        r->exec_errno = fork_errno;
        goto done;
    }
    close(in[0]);
    close(out[1]);
    close(err[1]);
    close(ep[1]);
    in[0] = out[1] = err[1] = ep[1] = -1;
    int e = 0;
    if (zxw_plat_read_all(ep[0], &e, sizeof e)) {
        r->exec_errno = e ? e : ENOEXEC;
        waitpid(pid, &r->status, 0);
        goto done;
    }
    size_t in_off = 0;
    if (o->stdin_len == 0) {
        close(in[1]);
        in[1] = -1;
    } else {
        zxw_plat_set_nonblock(in[1], true);
    }
    int64_t kill_grace = 0; /* after a kill: stop waiting for EOF by then */
    char buf[65536];
    while (out[0] >= 0 || err[0] >= 0) {
        struct pollfd p[3];
        int np = 0, iout = -1, ierr = -1, iin = -1;
        if (out[0] >= 0) {
            iout = np;
            p[np++] = (struct pollfd){out[0], POLLIN, 0};
        }
        if (err[0] >= 0) {
            ierr = np;
            p[np++] = (struct pollfd){err[0], POLLIN, 0};
        }
        if (in[1] >= 0) {
            iin = np;
            p[np++] = (struct pollfd){in[1], POLLOUT, 0};
        }
        int timeout = -1;
        int64_t now = zclock_mono();
        if (kill_grace) {
            if (now >= kill_grace) {
                break; /* something outside the group holds the pipes */
            }
            timeout = (int)(kill_grace - now);
        } else if (o->deadline) {
            if (now >= o->deadline) {
                r->timed_out = true;
                kill(-pid, SIGKILL);
                kill(pid, SIGKILL);
                kill_grace = now + 1000;
                continue;
            }
            timeout = (int)(o->deadline - now);
        }
        int n = poll(p, (nfds_t)np, timeout);
        if (n < 0 && errno != EINTR) {
            break;
        }
        if (n <= 0) {
            continue;
        }
        if (iin >= 0 && p[iin].revents) {
            ssize_t w = write(in[1], (const char *)o->stdin_data + in_off, o->stdin_len - in_off);
            if (w > 0) {
                in_off += (size_t)w;
            }
            if ((w < 0 && errno != EAGAIN && errno != EINTR) || in_off == o->stdin_len) {
                close(in[1]); /* done, or the command does not read stdin */
                in[1] = -1;
            }
        }
        if (iout >= 0 && p[iout].revents) {
            ssize_t got = read(out[0], buf, sizeof buf);
            if (got > 0) {
                s_take(&r->out, &r->out_len, o->max_output, &r->out_trunc, buf, (size_t)got);
            } else if (got == 0 || errno != EINTR) {
                close(out[0]);
                out[0] = -1;
            }
        }
        if (ierr >= 0 && p[ierr].revents) {
            ssize_t got = read(err[0], buf, sizeof buf);
            if (got > 0) {
                s_take(&r->err, &r->err_len, o->max_output, &r->err_trunc, buf, (size_t)got);
                s_tail(r, buf, (size_t)got);
            } else if (got == 0 || errno != EINTR) {
                close(err[0]);
                err[0] = -1;
            }
        }
    }
    /* pipes closed: the command is gone or going; a deadline still holds.
       A command closes its pipes as it exits, a moment before it can be
       reaped: look again after 20 us, then less often up to every 5 ms
       (a flat 5 ms added up to 5 ms to every job with a time limit) */
    for (long nap_us = 20;; nap_us = nap_us < 5000 ? nap_us * 2 : 5000) {
        pid_t w = waitpid(pid, &r->status, o->deadline && !r->timed_out ? WNOHANG : 0);
        if (w == pid || (w < 0 && errno != EINTR)) {
            break;
        }
        if (o->deadline && zclock_mono() >= o->deadline && !r->timed_out) {
            r->timed_out = true;
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
        }
        nanosleep(&(struct timespec){0, nap_us * 1000}, NULL);
    }
    rc = 0;
done:
    for (int i = 0; i < 2; i++) {
        if (in[i] >= 0) {
            close(in[i]);
        }
        if (out[i] >= 0) {
            close(out[i]);
        }
        if (err[i] >= 0) {
            close(err[i]);
        }
        if (ep[i] >= 0) {
            close(ep[i]);
        }
    }
    return rc;
}
