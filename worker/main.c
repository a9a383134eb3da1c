/*  main.c - zexec-worker: a worker node as a program. Parses flags, loads
    plugins and runs the embeddable worker (worker.c, loop.c) until SIGTERM/SIGINT,
    which drain it: running tasks finish, BYE is sent, exit status 0.
*/
#include "zexec_worker.h"
#include "zx_worker_int.h"
#include "zx_czmq.h"
#include "zx_parse.h"

#include <czmq.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: zexec-worker [options]\n"
            "Runs a zexec worker node: a thread pool and a process pool serving the tasks a\n"
            "zexec-broker sends.\n"
            "\n"
            "  --broker EP[,EP]          broker worker endpoint, or a pair's two endpoints\n"
            "                            (the active one is used; default %s)\n"
            "  --node NAME               node name (default: the host name)\n"
            "  --threads N               thread-pool size (default: cores; 0: no thread pool)\n"
            "  --procs N                 process-pool size (default: cores; 0: no process pool)\n"
            "  --prefetch N              tasks queued beyond free slots, per pool (1..100000;\n"
            "                            default 1)\n"
            "  --plugin PATH             load a plugin (.so); repeatable\n"
            "  --allow-exec              offer the built-in exec (runs command lines)\n"
            "  --no-builtins             do not offer echo, sleep, fail, pid, exec\n"
            "  --time-limit S            default per-task time limit in seconds (0: none)\n"
            "  --max-tasks-per-child N   replace a process-pool child after N tasks (0: never)\n"
            "  --child-memory BYTES      address-space limit per child (at least 16M; 0: none)\n"
            "  --heartbeat S             heartbeat interval in seconds (default 1)\n"
            "  --liveness N              missed heartbeats before the broker is lost (default 3)\n"
            "  --server-key FILE         CURVE: the broker's public certificate (with --key)\n"
            "  --key FILE                CURVE: this worker's secret certificate (zexec keygen)\n"
            "  --secret-file FILE        sign every message with this shared secret (default:\n"
            "                            $ZEXEC_SECRET, then unset so tasks never see it)\n"
            "  --max-msg BYTES           largest message accepted (default 64M)\n"
            "  -v, --verbose             log every task\n"
            "  -q, --quiet               log only warnings and errors\n"
            "  -h, --help                this text\n"
            "\n"
            "SIGTERM or SIGINT drains: running tasks finish, queued ones go back to the broker,\n"
            "then the worker says BYE and exits 0. A second signal leaves at once.\n"
            "\n"
            "BYTES: digits, then optionally K, M or G (powers of 1024, either case), then\n"
            "optionally B, b or (after a letter) iB: 4096, 512K, 64M, 64MB, 64MiB, 1g.\n",
            ZX_DEFAULT_WORKER_ENDPOINT);
}

static int s_bad(const char *flag, const char *value, const char *why)
{
    fprintf(stderr, "zexec-worker: invalid value '%s' for --%s: %s\n", value, flag, why);
    return 2;
}

enum {
    OPT_BROKER = 256,
    OPT_NODE,
    OPT_THREADS,
    OPT_PROCS,
    OPT_PREFETCH,
    OPT_PLUGIN,
    OPT_ALLOW_EXEC,
    OPT_NO_BUILTINS,
    OPT_TIME_LIMIT,
    OPT_MAX_TASKS,
    OPT_CHILD_MEMORY,
    OPT_HEARTBEAT,
    OPT_LIVENESS,
    OPT_SERVER_KEY,
    OPT_KEY,
    OPT_SECRET_FILE,
    OPT_MAX_MSG,
};

int main(int argc, char *argv[])
{
    char zerr[256];
    if (!zx__zmq_runtime_ok(zerr, sizeof zerr)) {
        fprintf(stderr, "zexec-worker: %s\n", zerr);
        return 1;
    }
    static const struct option longopts[] = {
        {"broker", required_argument, NULL, OPT_BROKER},
        {"node", required_argument, NULL, OPT_NODE},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"procs", required_argument, NULL, OPT_PROCS},
        {"prefetch", required_argument, NULL, OPT_PREFETCH},
        {"plugin", required_argument, NULL, OPT_PLUGIN},
        {"allow-exec", no_argument, NULL, OPT_ALLOW_EXEC},
        {"no-builtins", no_argument, NULL, OPT_NO_BUILTINS},
        {"time-limit", required_argument, NULL, OPT_TIME_LIMIT},
        {"max-tasks-per-child", required_argument, NULL, OPT_MAX_TASKS},
        {"child-memory", required_argument, NULL, OPT_CHILD_MEMORY},
        {"heartbeat", required_argument, NULL, OPT_HEARTBEAT},
        {"liveness", required_argument, NULL, OPT_LIVENESS},
        {"server-key", required_argument, NULL, OPT_SERVER_KEY},
        {"key", required_argument, NULL, OPT_KEY},
        {"secret-file", required_argument, NULL, OPT_SECRET_FILE},
        {"max-msg", required_argument, NULL, OPT_MAX_MSG},
        {"verbose", no_argument, NULL, 'v'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    zx_worker_opts_t o = {0};
    const char *broker = ZX_DEFAULT_WORKER_ENDPOINT;
    const char **plugins = calloc((size_t)argc + 1, sizeof *plugins);
    size_t nplugins = 0;
    int log_level = 1;
    long n;
    double d;
    int rc = 0;
    if (!plugins) {
        return 1;
    }
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":vqh", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_BROKER: broker = optarg; break;
        case OPT_NODE:
            if (!*optarg || strlen(optarg) > ZXP_MAX_NAME) {
                rc = s_bad("node", optarg, "must be 1..255 bytes");
            }
            o.node = optarg;
            break;
        case OPT_THREADS:
        case OPT_PROCS:
            if (!zx__parse_long(optarg, 0, 4096, &n)) {
                rc = s_bad(c == OPT_THREADS ? "threads" : "procs", optarg,
                           "must be an integer 0..4096");
            } else if (c == OPT_THREADS) {
                o.threads = n ? (int)n : -1;
            } else {
                o.procs = n ? (int)n : -1;
            }
            break;
        case OPT_PREFETCH:
            /* at least 1: a worker always takes one task beyond its free
               slots (the broker's adaptive prefetch may send more) */
            if (!zx__parse_long(optarg, 1, 100000, &n)) {
                rc = s_bad("prefetch", optarg, "must be an integer 1..100000");
            }
            o.prefetch = (int)n;
            break;
        case OPT_PLUGIN: plugins[nplugins++] = optarg; break;
        case OPT_ALLOW_EXEC: o.allow_exec = true; break;
        case OPT_NO_BUILTINS: o.no_builtins = true; break;
        case OPT_TIME_LIMIT:
            if (!zx__parse_double(optarg, 0, 1e7, &d)) {
                rc = s_bad("time-limit", optarg, "must be seconds >= 0");
            }
            o.time_limit = d;
            break;
        case OPT_MAX_TASKS:
            if (!zx__parse_long(optarg, 0, INT_MAX, &n)) {
                rc = s_bad("max-tasks-per-child", optarg, "must be an integer >= 0");
            }
            o.max_tasks_per_child = (int)n;
            break;
        case OPT_CHILD_MEMORY: {
            uint64_t v = 0;
            /* child_memory is a size_t: on a 32-bit build "8G" must fail, not wrap */
            if (zx__parse_bytes(optarg, &v) || v > SIZE_MAX) {
                rc = s_bad("child-memory", optarg, "must be bytes, with an optional K/M/G suffix");
            } else if (v && v < (16u << 20)) {
                rc = s_bad("child-memory", optarg, "must be at least 16M (or 0: unlimited)");
            }
            o.child_memory = (size_t)v;
            break;
        }
        case OPT_HEARTBEAT:
            if (!zx__parse_double(optarg, 0.01, 3600, &d)) {
                rc = s_bad("heartbeat", optarg, "must be seconds in 0.01..3600");
            }
            o.heartbeat = d;
            break;
        case OPT_LIVENESS:
            if (!zx__parse_long(optarg, 1, 1000, &n)) {
                rc = s_bad("liveness", optarg, "must be an integer 1..1000");
            }
            o.liveness = (int)n;
            break;
        case OPT_SERVER_KEY: o.server_key = optarg; break;
        case OPT_KEY: o.key = optarg; break;
        case OPT_SECRET_FILE: o.secret_file = optarg; break;
        case OPT_MAX_MSG: {
            uint64_t max = 0;
            if (zx__parse_bytes(optarg, &max) || max < ZXP_MIN_MAX_MSG || max > INT64_MAX) {
                rc = s_bad("max-msg", optarg, "must be bytes >= 64K, K/M/G suffixes");
            }
            zxp_set_max_msg((int64_t)max);
            break;
        }
        case 'v': log_level = 2; break;
        case 'q': log_level = 0; break;
        case 'h':
            s_usage(stdout);
            free(plugins);
            return 0;
        case ':':
            fprintf(stderr, "zexec-worker: option '%s' needs a value\n", argv[optind - 1]);
            rc = 2;
            break;
        default:
            fprintf(stderr, "zexec-worker: unknown option '%s'\n", argv[optind - 1]);
            rc = 2;
            break;
        }
        if (rc) {
            break;
        }
    }
    if (!rc && optind < argc) {
        fprintf(stderr, "zexec-worker: unexpected argument '%s'\n", argv[optind]);
        rc = 2;
    }
    if (rc) {
        fprintf(stderr, "try 'zexec-worker --help'\n");
        free(plugins);
        return rc;
    }
    zx__worker_log_level = log_level;
    /* Log as the broker does: to stderr, named (docs/operations.md). Through
       czmq's environment, read by the zsys_init of zx_worker_run: calling
       zsys_set_logstream here would start czmq before the fork server,
       which must come first. A value the user set wins. */
    setenv("ZSYS_LOGSTREAM", "stderr", 0);
    setenv("ZSYS_LOGIDENT", "zexec-worker", 0);
    zx_worker_t *w = zx_worker_new(broker, &o);
    if (!w) {
        fprintf(stderr, "zexec-worker: cannot create the worker\n");
        free(plugins);
        return 1;
    }
    for (size_t i = 0; i < nplugins; i++) {
        if (zx_worker_load_plugin(w, plugins[i]) != ZX_OK) {
            fprintf(stderr, "zexec-worker: cannot load plugin %s\n", plugins[i]);
            zx_worker_destroy(&w);
            free(plugins);
            return 1;
        }
    }
    free(plugins);
    rc = zx_worker_run(w);
    zx_worker_destroy(&w);
    if (rc != ZX_OK) {
        fprintf(stderr, "zexec-worker: %s\n", zx_strerror(rc));
        return 1;
    }
    return 0;
}
