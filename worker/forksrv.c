/*  forksrv.c - the process pool's fork server and the code its children run.

    Why a fork server (as Python's multiprocessing "forkserver"): fork() in a
    process that has threads or a ZeroMQ context copies locks held by other
    threads and the context's sockets into the child, where they can never be
    released. zx_worker_run forks this server first, while the worker is
    still single-threaded; the server stays single-threaded and forks every
    pool child on request. Unlike spawning a fresh image (exec), the children
    inherit the registered functions and loaded plugins of the worker as they
    were, so an embedded worker's own functions run in the process pool too.

    The server holds no task data. It answers SPAWN with SPAWNED (the child's
    socket passed by SCM_RIGHTS), KILL by SIGKILL to a child it has not yet
    reaped (so a recycled pid is never hit), and reports every child's exit
    with its wait status. On EOF of its control socket it kills its children
    and exits.
*/
#include "zx_worker_int.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- the child ------------------------------------------------------------ */

static void s_child_send(int fd, uint32_t kind, uint32_t status, const void *data, size_t len)
{
    zxw_cres_t h = {kind, status};
    uint32_t total = (uint32_t)(sizeof h + len);
    struct iovec iov[3] = {{&total, sizeof total}, {&h, sizeof h}, {(void *)data, len}};
    if (!zxw_plat_writev_all(fd, iov, len ? 3 : 2)) {
        _exit(0); /* the worker is gone */
    }
}

static void s_child_main(int fd, const zxw_child_cfg_t *cfg) __attribute__((noreturn));
static void s_child_main(int fd, const zxw_child_cfg_t *cfg)
{
    if (zxw_plat_child_setup(cfg->child_memory) != 0) {
        char msg[128];
        snprintf(msg, sizeof msg, "cannot set the memory limit: %s", strerror(errno));
        s_child_send(fd, ZXW_CR_HELLO, 1, msg, strlen(msg));
        _exit(1);
    }
    for (zxw_init_fn **init = cfg->inits; init && *init; init++) {
        int rc = (*init)();
        if (rc != 0) {
            char msg[128];
            snprintf(msg, sizeof msg, "plugin initializer returned %d", rc);
            s_child_send(fd, ZXW_CR_HELLO, 1, msg, strlen(msg));
            _exit(1);
        }
    }
    uint64_t nonres = zxw_plat_vm_nonresident();
    s_child_send(fd, ZXW_CR_HELLO, 0, &nonres, sizeof nonres);

    char *buf = NULL;
    size_t cap = 0;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    for (;;) {
        uint32_t len;
        if (!zxw_plat_read_all(fd, &len, sizeof len)) {
            _exit(0); /* EOF: retired, or the worker is gone */
        }
        if (len < sizeof(zxw_ctask_t)) {
            _exit(3);
        }
        if (len > cap) {
            free(buf);
            cap = len;
            buf = malloc(cap);
            if (!buf) {
                _exit(4);
            }
        }
        if (!zxw_plat_read_all(fd, buf, len)) {
            _exit(0);
        }
        zxw_ctask_t t;
        memcpy(&t, buf, sizeof t);
        if (t.fn_len > ZXP_MAX_NAME || sizeof t + t.fn_len > len) {
            _exit(3);
        }
        char name[ZXP_MAX_NAME + 1];
        memcpy(name, buf + sizeof t, t.fn_len);
        name[t.fn_len] = 0;
        const char *args = buf + sizeof t + t.fn_len;
        size_t args_len = len - sizeof t - t.fn_len;

        msgpack_sbuffer_clear(&sb);
        int st;
        zxw_fn_t *fn = zhashx_lookup(cfg->fns, name);
        if (!fn) {
            msgpack_packer pk;
            msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
            zx__pack_error(&pk, "NoFunctionError", "no such function in the child", "");
            st = ZXP_ST_NOFUNC;
        } else {
            zx_task_t task;
            zx__task_init(&task, fn->name, ZX_POOL_PROCESS, t.deadline);
            st = (t.flags & ZXP_F_CHUNK) ? zx__task_call_chunk(&task, fn->fn, args, args_len, &sb)
                                         : zx__task_call(&task, fn->fn, args, args_len, &sb);
            st = zxw_status_of(&task, st);
            zx__task_fini(&task);
        }
        st = zxw_check_result_size(st, &sb);
        s_child_send(fd, ZXW_CR_RESULT, (uint32_t)st, sb.data, sb.size);
        /* a big argument buffer is not kept for the child's whole life */
        if (cap > (1u << 20)) {
            free(buf);
            buf = NULL;
            cap = 0;
        }
    }
}

/* ---- the server ----------------------------------------------------------- */

typedef struct {
    pid_t *pids;
    size_t n, cap;
} s_pids_t;

static void s_pids_add(s_pids_t *p, pid_t pid)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 16;
        pid_t *np = realloc(p->pids, cap * sizeof *np);
        if (!np) {
            return; /* untracked: it still gets reaped and reported */
        }
        p->pids = np;
        p->cap = cap;
    }
    p->pids[p->n++] = pid;
}

static bool s_pids_remove(s_pids_t *p, pid_t pid)
{
    for (size_t i = 0; i < p->n; i++) {
        if (p->pids[i] == pid) {
            p->pids[i] = p->pids[--p->n];
            return true;
        }
    }
    return false;
}

static void s_spawn(int ctl, const zxw_child_cfg_t *cfg, s_pids_t *pids)
{
    int sv[2];
    zxw_ctl_t reply = {0};
    if (zxw_plat_socketpair(SOCK_STREAM, sv) != 0) {
        reply.op = ZXW_CTL_FAILED;
        reply.status = errno;
        zxw_plat_send_ctl(ctl, &reply, -1);
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(ctl); /* the SIGCHLD pipe is closed by zxw_plat_child_setup */
        close(sv[0]);
        free(pids->pids);
        s_child_main(sv[1], cfg);
    }
    close(sv[1]);
    if (pid < 0) {
        reply.op = ZXW_CTL_FAILED;
        reply.status = errno;
        zxw_plat_send_ctl(ctl, &reply, -1);
    } else {
        s_pids_add(pids, pid);
        reply.op = ZXW_CTL_SPAWNED;
        reply.pid = pid;
        zxw_plat_send_ctl(ctl, &reply, sv[0]);
    }
    close(sv[0]);
}

static void s_quit(s_pids_t *pids) __attribute__((noreturn));
static void s_quit(s_pids_t *pids)
{
    for (size_t i = 0; i < pids->n; i++) {
        kill(pids->pids[i], SIGKILL);
    }
    while (waitpid(-1, NULL, 0) > 0 || errno == EINTR) {
    }
    _exit(0);
}

void zxw_forksrv_main(int ctl, const zxw_child_cfg_t *cfg)
{
    zxw_plat_server_setup();
    int chld = zxw_plat_sigchld_pipe();
    if (chld < 0) {
        _exit(1);
    }
    s_pids_t pids = {0};
    for (;;) {
        struct pollfd p[2] = {{ctl, POLLIN, 0}, {chld, POLLIN, 0}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            s_quit(&pids);
        }
        if (p[1].revents) {
            char buf[64];
            while (read(chld, buf, sizeof buf) > 0) {
            }
        }
        /* reap on every wake-up: a SIGCHLD can land before the pid is tracked */
        int status;
        pid_t pid;
        struct rusage ru;
        while ((pid = wait4(-1, &status, WNOHANG, &ru)) > 0) {
            s_pids_remove(&pids, pid);
            /* the peak resident size lets the worker tell a child that died
               at its memory limit from another crash */
            long kib = ru.ru_maxrss > INT32_MAX ? INT32_MAX : ru.ru_maxrss;
            zxw_ctl_t msg = {ZXW_CTL_EXITED, pid, status, (int32_t)kib};
            if (zxw_plat_send_ctl(ctl, &msg, -1) != 0) {
                s_quit(&pids);
            }
        }
        if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            for (;;) {
                zxw_ctl_t msg;
                int rc = zxw_plat_recv_ctl(ctl, &msg, NULL);
                if (rc == 0) {
                    s_quit(&pids); /* the worker closed us, or died */
                }
                if (rc < 0) {
                    break;
                }
                if (msg.op == ZXW_CTL_SPAWN) {
                    s_spawn(ctl, cfg, &pids);
                } else if (msg.op == ZXW_CTL_KILL) {
                    for (size_t i = 0; i < pids.n; i++) {
                        if (pids.pids[i] == msg.pid) {
                            kill(msg.pid, SIGKILL);
                        }
                    }
                }
            }
        }
    }
}
