/*  cluster.c - `zexec cluster`: a broker and N workers on this machine in the
    foreground until Ctrl-C or SIGTERM, for someone who wants one machine to
    act as a cluster now (the library's zx_executor_new(NULL) does the same
    for one program; this one outlives programs and listens on fixed
    endpoints, by default the ones every other subcommand connects to).

    The daemons are found next to this binary (/proc/self/exe), then on
    $PATH, started with posix_spawn and tracked by PID; ZEXEC_PARENT_PID makes
    them exit if this process is killed without a chance to stop them.
*/
#include "zxc.h"
#include "zx_parse.h"
#include "zx_parent.h"

#include <czmq.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define S_MAX_WORKERS 64
#define S_MAX_EXTRA 64

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: zexec cluster [OPTIONS]\n"
            "Runs a zexec-broker and N zexec-workers on this machine until Ctrl-C or SIGTERM,\n"
            "then stops them all. Other zexec commands reach it at its client endpoint.\n"
            "\n"
            "  --workers N            worker processes (default 2)\n"
            "  --threads T            thread-pool size per worker (default: cores)\n"
            "  --procs P              process-pool size per worker (default: cores)\n"
            "  --clients EP           broker client endpoint (default %s)\n"
            "  --workers-endpoint EP  broker worker endpoint (default %s)\n"
            "  --plugin SO            load a plugin into every worker; repeatable\n"
            "  --allow-exec           workers offer the exec built-in (needed by 'zexec run';\n"
            "                         anyone who can reach the client endpoint can then run\n"
            "                         commands as you)\n"
            "  --secret-file FILE     broker and workers sign messages with this secret\n"
            "  --broker-arg ARG       pass ARG to zexec-broker; repeatable\n"
            "  --worker-arg ARG       pass ARG to every zexec-worker; repeatable\n"
            "  -q, --quiet            daemons log warnings and errors only\n"
            "  -h, --help             this text\n",
            ZX_DEFAULT_CLIENT_ENDPOINT, ZX_DEFAULT_WORKER_ENDPOINT);
}

/* dir of /proc/self/exe + "/" + name if executable there, else name on
   $PATH; NULL if neither. Caller frees. */
static char *s_find_bin(const char *name)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = 0;
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = 0;
            char *p = NULL;
            if (asprintf(&p, "%s/%s", self, name) > 0 && access(p, X_OK) == 0) {
                return p;
            }
            free(p);
        }
    }
    const char *path = getenv("PATH");
    if (!path) {
        return NULL;
    }
    char *copy = strdup(path), *save = NULL;
    for (char *dir = copy ? strtok_r(copy, ":", &save) : NULL; dir;
         dir = strtok_r(NULL, ":", &save)) {
        char *p = NULL;
        if (asprintf(&p, "%s/%s", *dir ? dir : ".", name) > 0 && access(p, X_OK) == 0) {
            free(copy);
            return p;
        }
        free(p);
    }
    free(copy);
    return NULL;
}

static pid_t s_spawn(char *const argv[])
{
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], NULL, NULL, argv, environ);
    if (rc != 0) {
        fprintf(stderr, "zexec cluster: cannot start %s: %s\n", argv[0], strerror(rc));
        return -1;
    }
    return pid;
}

/* SIGTERM (drains), up to grace seconds, then SIGKILL; always reaps. */
static void s_stop(pid_t *pids, int n, double grace)
{
    for (int i = 0; i < n; i++) {
        if (pids[i] > 0) {
            kill(pids[i], SIGTERM);
        }
    }
    int64_t end = zclock_mono() + (int64_t)(grace * 1000.0);
    for (int i = 0; i < n; i++) {
        while (pids[i] > 0) {
            pid_t r = waitpid(pids[i], NULL, WNOHANG);
            if (r == pids[i] || (r < 0 && errno == ECHILD)) {
                pids[i] = 0;
            } else if (zclock_mono() >= end) {
                kill(pids[i], SIGKILL);
                waitpid(pids[i], NULL, 0);
                pids[i] = 0;
            } else {
                usleep(20000);
            }
        }
    }
}

int zxc_cluster_main(int argc, char **argv)
{
    enum { O_CLIENTS = 1, O_WEP, O_PLUGIN, O_EXEC, O_SECRET, O_BARG, O_WARG, O_WORKERS };
    static const struct option longopts[] = {{"workers", required_argument, NULL, O_WORKERS},
                                             {"threads", required_argument, NULL, 't'},
                                             {"procs", required_argument, NULL, 'p'},
                                             {"clients", required_argument, NULL, O_CLIENTS},
                                             {"workers-endpoint", required_argument, NULL, O_WEP},
                                             {"plugin", required_argument, NULL, O_PLUGIN},
                                             {"allow-exec", no_argument, NULL, O_EXEC},
                                             {"secret-file", required_argument, NULL, O_SECRET},
                                             {"broker-arg", required_argument, NULL, O_BARG},
                                             {"worker-arg", required_argument, NULL, O_WARG},
                                             {"quiet", no_argument, NULL, 'q'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    long nworkers = 2, threads = -1, procs = -1;
    const char *cep = ZX_DEFAULT_CLIENT_ENDPOINT, *wep = ZX_DEFAULT_WORKER_ENDPOINT;
    const char *secret = NULL;
    const char *plugins[S_MAX_EXTRA], *bargs[S_MAX_EXTRA], *wargs[S_MAX_EXTRA];
    int nplugins = 0, nbargs = 0, nwargs = 0;
    bool allow_exec = false, quiet = false;
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "hq", longopts, NULL)) != -1) {
        switch (opt) {
        case 'h': s_usage(stdout); return 0;
        case 'q': quiet = true; break;
        case O_WORKERS:
            if (!zx__parse_long(optarg, 0, S_MAX_WORKERS, &nworkers)) {
                return zxc_usage_error("cluster", "invalid --workers '%s': 0..%d", optarg,
                                       S_MAX_WORKERS);
            }
            break;
        case 't':
            if (!zx__parse_long(optarg, 0, 4096, &threads)) {
                return zxc_usage_error("cluster", "invalid --threads '%s': 0..4096", optarg);
            }
            break;
        case 'p':
            if (!zx__parse_long(optarg, 0, 4096, &procs)) {
                return zxc_usage_error("cluster", "invalid --procs '%s': 0..4096", optarg);
            }
            break;
        case O_CLIENTS: cep = optarg; break;
        case O_WEP: wep = optarg; break;
        case O_EXEC: allow_exec = true; break;
        case O_SECRET: secret = optarg; break;
        case O_PLUGIN:
        case O_BARG:
        case O_WARG: {
            const char **list = opt == O_PLUGIN ? plugins : opt == O_BARG ? bargs : wargs;
            int *n = opt == O_PLUGIN ? &nplugins : opt == O_BARG ? &nbargs : &nwargs;
            if (*n >= S_MAX_EXTRA) {
                return zxc_usage_error("cluster", "too many %s flags", argv[optind - 2]);
            }
            list[(*n)++] = optarg;
            break;
        }
        default: return zxc_bad_flag("cluster", argc, argv);
        }
    }
    if (optind < argc) {
        return zxc_usage_error("cluster", "unexpected argument '%s'", argv[optind]);
    }
    for (int i = 0; i < nplugins; i++) {
        if (access(plugins[i], R_OK) != 0) {
            return zxc_usage_error("cluster", "cannot read --plugin %s: %s", plugins[i],
                                   strerror(errno));
        }
    }
    char *broker_bin = s_find_bin("zexec-broker"), *worker_bin = s_find_bin("zexec-worker");
    if (!broker_bin || !worker_bin) {
        fprintf(stderr, "zexec cluster: cannot find %s next to this program or on $PATH\n",
                !broker_bin ? "zexec-broker" : "zexec-worker");
        free(broker_bin);
        free(worker_bin);
        return ZXC_EXIT_FAIL;
    }

    /* signals: blocked here and taken with sigtimedwait, so a Ctrl-C during
       startup is not lost and the children start with the default mask */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_BLOCK, &set, &old);
    char ppid[32];
    snprintf(ppid, sizeof ppid, "%d", (int)getpid());
    setenv(ZX_PARENT_ENV, ppid, 1);

    pid_t pids[1 + S_MAX_WORKERS] = {0};
    int npids = 0, rc = 0;
    const char *av[16 + 3 * S_MAX_EXTRA];
    int n = 0;
    av[n++] = broker_bin;
    av[n++] = "--clients";
    av[n++] = cep;
    av[n++] = "--workers";
    av[n++] = wep;
    if (secret) {
        av[n++] = "--secret-file";
        av[n++] = secret;
    }
    if (quiet) {
        av[n++] = "--quiet";
    }
    for (int i = 0; i < nbargs; i++) {
        av[n++] = bargs[i];
    }
    av[n] = NULL;
    /* children must not inherit the blocked mask: posix_spawn keeps it, so
       unblock around the spawns (a signal now is delivered to us, default
       action: we die and ZEXEC_PARENT_PID stops the children) */
    sigprocmask(SIG_SETMASK, &old, NULL);
    pids[npids] = s_spawn((char *const *)av);
    if (pids[npids] < 0) {
        rc = ZXC_EXIT_FAIL;
        goto stop;
    }
    npids++;
    char tbuf[32], pbuf[32], node[128], host[64] = "localhost";
    gethostname(host, sizeof host - 1);
    snprintf(tbuf, sizeof tbuf, "%ld", threads);
    snprintf(pbuf, sizeof pbuf, "%ld", procs);
    for (long w = 0; w < nworkers; w++) {
        n = 0;
        snprintf(node, sizeof node, "%s-w%ld", host, w + 1);
        av[n++] = worker_bin;
        av[n++] = "--broker";
        av[n++] = wep;
        av[n++] = "--node";
        av[n++] = node;
        if (threads >= 0) {
            av[n++] = "--threads";
            av[n++] = tbuf;
        }
        if (procs >= 0) {
            av[n++] = "--procs";
            av[n++] = pbuf;
        }
        for (int i = 0; i < nplugins; i++) {
            av[n++] = "--plugin";
            av[n++] = plugins[i];
        }
        if (allow_exec) {
            av[n++] = "--allow-exec";
        }
        if (secret) {
            av[n++] = "--secret-file";
            av[n++] = secret;
        }
        if (quiet) {
            av[n++] = "--quiet";
        }
        for (int i = 0; i < nwargs; i++) {
            av[n++] = wargs[i];
        }
        av[n] = NULL;
        pids[npids] = s_spawn((char *const *)av);
        if (pids[npids] < 0) {
            rc = ZXC_EXIT_FAIL;
            goto stop;
        }
        npids++;
    }
    sigprocmask(SIG_BLOCK, &set, NULL);
    /* every PID, so a script (or a test) can check they are all gone later */
    fprintf(stderr,
            "zexec cluster: broker pid %d (clients %s, workers %s), %ld worker%s; Ctrl-C "
            "stops\n",
            (int)pids[0], cep, wep, nworkers, nworkers == 1 ? "" : "s");
    fprintf(stderr, "zexec cluster: worker pids");
    for (int i = 1; i < npids; i++) {
        fprintf(stderr, " %d", (int)pids[i]);
    }
    fputc('\n', stderr);
    while (true) {
        struct timespec tick = {0, 200 * 1000000L};
        int sig = sigtimedwait(&set, NULL, &tick);
        if (sig > 0) {
            fprintf(stderr, "zexec cluster: %s: stopping the workers and the broker\n",
                    strsignal(sig));
            break;
        }
        /* a daemon that exits on its own (bad flag, port taken, crash) */
        int st;
        pid_t dead = waitpid(-1, &st, WNOHANG);
        if (dead > 0) {
            for (int i = 0; i < npids; i++) {
                if (pids[i] == dead) {
                    pids[i] = 0;
                    fprintf(stderr, "zexec cluster: %s (pid %d) %s %d\n",
                            i == 0 ? "the broker" : "a worker", (int)dead,
                            WIFSIGNALED(st) ? "was killed by signal" : "exited with status",
                            WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
                    /* a cluster short of a member is not what was asked for:
                       say so by stopping everything and exiting 1, so a
                       supervisor (systemd, a script) notices and restarts it */
                    fprintf(stderr, "zexec cluster: stopping the rest\n");
                    rc = ZXC_EXIT_FAIL;
                    goto stop;
                }
            }
        }
    }
stop:
    /* workers first (they drain and say BYE), then the broker */
    if (npids > 1) {
        s_stop(pids + 1, npids - 1, 5.0);
    }
    if (npids > 0) {
        s_stop(pids, 1, 5.0);
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    free(broker_bin);
    free(worker_bin);
    return rc;
}
