/*  main.c - zexec-broker: flags, logging, then the broker loop (broker.c).
    Bad flags exit with status 2 and a message naming the flag.
*/
#include "zxb.h"
#include "zxb_journal.h"
#include "zxb_sec.h"
#include "zx_czmq.h"
#include "zx_parse.h"

#include <errno.h>
#include <float.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void s_usage(FILE *out)
{
    fprintf(out,
            "Usage: zexec-broker [OPTIONS]\n"
            "The zexec broker: queues tasks from clients and dispatches them to workers.\n"
            "\n"
            "  --clients ENDPOINT       client endpoint to bind (default tcp://127.0.0.1:5570)\n"
            "  --workers ENDPOINT       worker endpoint to bind (default tcp://127.0.0.1:5571)\n"
            "  --heartbeat SECONDS      heartbeat interval sent to peers (default 1)\n"
            "  --liveness N             missed heartbeats before a peer is lost (default 3)\n"
            "  --nofunc-grace SECONDS   while no worker is registered (or the broker just\n"
            "                           started), how long a task waits for a worker offering\n"
            "                           its function before it fails with NoWorkerError\n"
            "                           (default 10); with workers registered and none\n"
            "                           offering it, it fails at once\n"
            "  --retries N              default re-runs of a task whose worker is lost\n"
            "                           (default 3; a task may ask for its own)\n"
            "  --max-queued N           queued tasks per client before RESULTs say REJECTED\n"
            "                           (default 1000000)\n"
            "  --max-queued-bytes BYTES queued argument bytes per client (default 1G)\n"
            "  --max-results-waiting BYTES\n"
            "                           result bytes sent to a client that it has not read;\n"
            "                           beyond, its session is dropped (default 256M)\n"
            "  --client-timeout SECONDS after a broker restart, how long tasks that workers\n"
            "                           report wait for their client to come back (default 60)\n"
            "  --prefetch-target-ms MS  adaptive prefetch: send each worker enough tasks of\n"
            "                           functions measured short to keep a slot busy this long;\n"
            "                           others go only to idle slots (default 2; 0: every\n"
            "                           function gets the prefetch the worker announces)\n"
            "  --prefetch-max N         most tasks beyond a pool's slots (default 1024)\n"
            "  --prefetch-bytes BYTES   widen a pool's window only while its tasks in flight\n"
            "                           carry fewer argument bytes than this (default 4M)\n"
            "  --steal-after-ms MS      a task sent to a worker and not started there this\n"
            "                           long is taken back for an idle slot elsewhere\n"
            "                           (default 10)\n"
            "  --journal DIR            write every accepted task, every job result, every\n"
            "                           RACK and every task's end to an append-only journal\n"
            "                           in DIR and recover from it at start (off by default:\n"
            "                           all in memory)\n"
            "  --fsync POLICY           with --journal: batch (fdatasync each group of\n"
            "                           records before acknowledging them; the default),\n"
            "                           interval[:MS] (fdatasync at most every MS, default\n"
            "                           100: a power loss may lose the last MS), none (leave\n"
            "                           it to the kernel: survives a broker crash, not a\n"
            "                           power loss)\n"
            "  --journal-snapshot BYTES with --journal: write a snapshot (and drop older\n"
            "                           segments) once the journal grew by this much and by\n"
            "                           4 times what is live (default 64M)\n"
            "  --job-retention SECONDS  a detached job and its results are dropped this long\n"
            "                           after its last activity (default 604800: 7 days)\n"
            "  --job-max-bytes BYTES    held result bytes per job; beyond, its new tasks are\n"
            "                           refused until results are fetched (default 1G)\n"
            "  --max-jobs N             detached jobs the broker holds; beyond, a new job's\n"
            "                           tasks are refused (default 100000)\n"
            "  --peer ENDPOINT          one of a pair of brokers (needs --journal and\n"
            "                           --primary or --backup): the link between the two,\n"
            "                           e.g. tcp://10.0.0.5:5573 (the primary binds it, the\n"
            "                           backup connects). One broker is active; the other\n"
            "                           holds a copy of its journal, refuses clients and\n"
            "                           workers (ERROR 3) and takes over when the active is\n"
            "                           gone (docs/operations.md, \"Running a pair\")\n"
            "  --primary, --backup      this broker's role in the pair\n"
            "  --peer-key FILE          with --peer and --key: the other broker's public\n"
            "                           certificate (zexec keygen); the peer link is then\n"
            "                           CURVE and admits that key only. With --secret-file\n"
            "                           (or $ZEXEC_SECRET) every peer message is signed. A\n"
            "                           non-loopback --peer needs one of the two, or\n"
            "                           --insecure\n"
            "  --metrics HOST:PORT      serve Prometheus metrics over HTTP at /metrics\n"
            "                           (e.g. 127.0.0.1:5572; off by default)\n"
            "  --insecure               allow binding non-loopback addresses without\n"
            "                           authentication (logged as a warning)\n"
            "  --key FILE               CURVE: the broker's secret certificate (zexec keygen)\n"
            "  --client-keys DIR        CURVE: public certificates of the admitted clients\n"
            "  --worker-keys DIR        CURVE: public certificates of the admitted workers\n"
            "  --secret-file FILE       sign every message with this shared secret (default:\n"
            "                           $ZEXEC_SECRET); never give a secret on the command line\n"
            "  --max-msg BYTES          largest message accepted (default 64M)\n"
            "  -v, --verbose            log every task dispatch and failure\n"
            "  -q, --quiet              log warnings and errors only\n"
            "  -h, --help               this help\n"
            "  --version                print the version\n"
            "\n"
            "BYTES: digits, then optionally K, M or G (powers of 1024, either case), then\n"
            "optionally B, b or (after a letter) iB: 4096, 512K, 64M, 64MB, 64MiB, 1g.\n"
            "Byte flags must be at least 1.\n");
}

static int s_bad(const char *flag, const char *value, const char *why)
{
    fprintf(stderr, "zexec-broker: invalid value '%s' for %s: %s\n", value, flag, why);
    fprintf(stderr, "Try 'zexec-broker --help'.\n");
    return 2;
}

/* The wrappers below add only the flag's name and the bound to the shared
   parsers' answer: syntax first, then range, so the message says which. */
static int s_parse_seconds(const char *flag, const char *v, double min, double max, int64_t *ms)
{
    double d;
    if (!zx__parse_double(v, -DBL_MAX, DBL_MAX, &d)) {
        return s_bad(flag, v, "expected a number of seconds");
    }
    if (d < min || d > max) {
        char why[96];
        snprintf(why, sizeof why, "must be between %g and %g seconds", min, max);
        return s_bad(flag, v, why);
    }
    *ms = (int64_t)llround(d * 1000.0);
    return 0;
}

static int s_parse_int(const char *flag, const char *v, long min, long max, long *out)
{
    long n;
    if (!zx__parse_long(v, LONG_MIN, LONG_MAX, &n)) {
        return s_bad(flag, v, "expected an integer");
    }
    if (n < min || n > max) {
        char why[96];
        snprintf(why, sizeof why, "must be between %ld and %ld", min, max);
        return s_bad(flag, v, why);
    }
    *out = n;
    return 0;
}

/* Byte flags bound something, and a bound of 0 would refuse everything. */
static int s_parse_bytes(const char *flag, const char *v, uint64_t *out)
{
    uint64_t n;
    const char *why = zx__parse_bytes(v, &n);
    if (why) {
        return s_bad(flag, v, why);
    }
    if (n == 0) {
        return s_bad(flag, v, "must be at least 1");
    }
    *out = n;
    return 0;
}

enum {
    OPT_CLIENTS = 1000,
    OPT_WORKERS,
    OPT_HEARTBEAT,
    OPT_LIVENESS,
    OPT_NOFUNC,
    OPT_RETRIES,
    OPT_MAXQ,
    OPT_MAXQB,
    OPT_MAXWAIT,
    OPT_CLIENT_TIMEOUT,
    OPT_PREFETCH_TARGET,
    OPT_PREFETCH_MAX,
    OPT_PREFETCH_BYTES,
    OPT_STEAL_AFTER,
    OPT_INSECURE,
    OPT_METRICS,
    OPT_KEY,
    OPT_CLIENT_KEYS,
    OPT_WORKER_KEYS,
    OPT_SECRET_FILE,
    OPT_MAX_MSG,
    OPT_JOURNAL,
    OPT_FSYNC,
    OPT_JOB_RETENTION,
    OPT_JOB_MAX_BYTES,
    OPT_MAX_JOBS,
    OPT_PEER,
    OPT_PRIMARY,
    OPT_BACKUP,
    OPT_JOURNAL_SNAPSHOT,
    OPT_PEER_KEY,
    OPT_VERSION,
};

/* the arguments as given (getopt_long permutes argv), for a restart */
static char **args;
/* $ZEXEC_SECRET as given, for a restart (zxb_sec_init unsets it) */
static char *restart_secret;

static void s_forget_secret(void)
{
    if (restart_secret) {
        explicit_bzero(restart_secret, strlen(restart_secret));
        free(restart_secret);
        restart_secret = NULL;
    }
}

int main(int argc, char *argv[])
{
    char zerr[256];
    if (!zx__zmq_runtime_ok(zerr, sizeof zerr)) {
        fprintf(stderr, "zexec-broker: %s\n", zerr);
        return 1;
    }
    zxb_config_t cfg = {
        .clients_ep = "tcp://127.0.0.1:5570",
        .workers_ep = "tcp://127.0.0.1:5571",
        .heartbeat_ms = 1000,
        .liveness = 3,
        .nofunc_grace_ms = 10000,
        .client_timeout_ms = 60000,
        .max_queued = 1000000,
        .max_queued_bytes = 1ull << 30,
        .max_waiting_bytes = 256ull << 20,
        .retries = 3,
        .prefetch_target_ms = 2.0,
        .prefetch_max = 1024,
        .prefetch_bytes = 4ull << 20,
        .steal_after_ms = 10.0,
        .insecure = false,
        .verbose = 1,
        .fsync_policy = ZXB_FSYNC_BATCH,
        .fsync_interval_ms = 100,
        .job_retention_s = 7 * 86400,
        .job_max_bytes = 1ull << 30,
        .max_jobs = 100000,
        .snapshot_bytes = 64ull << 20,
    };
    zxb_sec_config_t sec = {0};
    static const struct option opts[] = {
        {"clients", required_argument, NULL, OPT_CLIENTS},
        {"workers", required_argument, NULL, OPT_WORKERS},
        {"heartbeat", required_argument, NULL, OPT_HEARTBEAT},
        {"liveness", required_argument, NULL, OPT_LIVENESS},
        {"nofunc-grace", required_argument, NULL, OPT_NOFUNC},
        {"retries", required_argument, NULL, OPT_RETRIES},
        {"max-queued", required_argument, NULL, OPT_MAXQ},
        {"max-queued-bytes", required_argument, NULL, OPT_MAXQB},
        {"max-results-waiting", required_argument, NULL, OPT_MAXWAIT},
        {"client-timeout", required_argument, NULL, OPT_CLIENT_TIMEOUT},
        {"prefetch-target-ms", required_argument, NULL, OPT_PREFETCH_TARGET},
        {"prefetch-max", required_argument, NULL, OPT_PREFETCH_MAX},
        {"prefetch-bytes", required_argument, NULL, OPT_PREFETCH_BYTES},
        {"steal-after-ms", required_argument, NULL, OPT_STEAL_AFTER},
        {"insecure", no_argument, NULL, OPT_INSECURE},
        {"metrics", required_argument, NULL, OPT_METRICS},
        {"key", required_argument, NULL, OPT_KEY},
        {"client-keys", required_argument, NULL, OPT_CLIENT_KEYS},
        {"worker-keys", required_argument, NULL, OPT_WORKER_KEYS},
        {"secret-file", required_argument, NULL, OPT_SECRET_FILE},
        {"max-msg", required_argument, NULL, OPT_MAX_MSG},
        {"journal", required_argument, NULL, OPT_JOURNAL},
        {"fsync", required_argument, NULL, OPT_FSYNC},
        {"job-retention", required_argument, NULL, OPT_JOB_RETENTION},
        {"job-max-bytes", required_argument, NULL, OPT_JOB_MAX_BYTES},
        {"max-jobs", required_argument, NULL, OPT_MAX_JOBS},
        {"peer", required_argument, NULL, OPT_PEER},
        {"primary", no_argument, NULL, OPT_PRIMARY},
        {"backup", no_argument, NULL, OPT_BACKUP},
        {"journal-snapshot", required_argument, NULL, OPT_JOURNAL_SNAPSHOT},
        {"peer-key", required_argument, NULL, OPT_PEER_KEY},
        {"verbose", no_argument, NULL, 'v'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPT_VERSION},
        {NULL, 0, NULL, 0},
    };
    opterr = 0;
    int roles = 0; /* 1 --primary, 2 --backup */
    /* getopt_long permutes argv: the arguments as given, for a restart */
    args = calloc((size_t)argc + 1, sizeof *args);
    if (!args) {
        return 1;
    }
    memcpy(args, argv, (size_t)argc * sizeof *args);
    int c, rc = 0;
    int64_t ms;
    long n;
    while ((c = getopt_long(argc, argv, ":vqh", opts, NULL)) != -1) {
        const char *flag = argv[optind - 1];
        switch (c) {
        case OPT_CLIENTS:
        case OPT_WORKERS:
            if (!strstr(optarg, "://")) {
                return s_bad(c == OPT_CLIENTS ? "--clients" : "--workers", optarg,
                             "expected an endpoint such as tcp://127.0.0.1:5570");
            }
            if (c == OPT_CLIENTS) {
                cfg.clients_ep = optarg;
            } else {
                cfg.workers_ep = optarg;
            }
            break;
        case OPT_HEARTBEAT:
            if ((rc = s_parse_seconds("--heartbeat", optarg, 0.01, 3600, &ms))) {
                return rc;
            }
            cfg.heartbeat_ms = (uint32_t)ms;
            break;
        case OPT_LIVENESS:
            if ((rc = s_parse_int("--liveness", optarg, 1, 1000, &n))) {
                return rc;
            }
            cfg.liveness = (uint32_t)n;
            break;
        case OPT_NOFUNC:
            if ((rc = s_parse_seconds("--nofunc-grace", optarg, 0, 86400 * 365.0, &ms))) {
                return rc;
            }
            cfg.nofunc_grace_ms = ms;
            break;
        case OPT_CLIENT_TIMEOUT:
            if ((rc = s_parse_seconds("--client-timeout", optarg, 0, 86400 * 365.0, &ms))) {
                return rc;
            }
            cfg.client_timeout_ms = ms;
            break;
        case OPT_PREFETCH_TARGET: {
            double d;
            if (!zx__parse_double(optarg, 0, 60000, &d)) {
                return s_bad("--prefetch-target-ms", optarg,
                             "expected milliseconds between 0 and 60000");
            }
            cfg.prefetch_target_ms = d;
            break;
        }
        case OPT_STEAL_AFTER: {
            double d;
            if (!zx__parse_double(optarg, 0, 3600000, &d)) {
                return s_bad("--steal-after-ms", optarg,
                             "expected milliseconds between 0 and 3600000");
            }
            cfg.steal_after_ms = d;
            break;
        }
        case OPT_PREFETCH_MAX:
            if ((rc = s_parse_int("--prefetch-max", optarg, 0, 100000, &n))) {
                return rc;
            }
            cfg.prefetch_max = (uint32_t)n;
            break;
        case OPT_PREFETCH_BYTES:
            if ((rc = s_parse_bytes("--prefetch-bytes", optarg, &cfg.prefetch_bytes))) {
                return rc;
            }
            break;
        case OPT_RETRIES:
            if ((rc = s_parse_int("--retries", optarg, 0, 100, &n))) {
                return rc;
            }
            cfg.retries = (int)n;
            break;
        case OPT_MAXQ:
            if ((rc = s_parse_int("--max-queued", optarg, 1, LONG_MAX, &n))) {
                return rc;
            }
            cfg.max_queued = (uint64_t)n;
            break;
        case OPT_MAXQB:
            if ((rc = s_parse_bytes("--max-queued-bytes", optarg, &cfg.max_queued_bytes))) {
                return rc;
            }
            break;
        case OPT_MAXWAIT:
            if ((rc = s_parse_bytes("--max-results-waiting", optarg, &cfg.max_waiting_bytes))) {
                return rc;
            }
            if (cfg.max_waiting_bytes < (1u << 20)) {
                return s_bad("--max-results-waiting", optarg, "must be at least 1M bytes");
            }
            break;
        case OPT_INSECURE: cfg.insecure = true; break;
        case OPT_METRICS:
            if (!zxb_metrics_addr_ok(optarg)) {
                return s_bad("--metrics", optarg, "expected HOST:PORT with an IPv4 host or *");
            }
            cfg.metrics_addr = optarg;
            break;
        case OPT_KEY: sec.key = optarg; break;
        case OPT_CLIENT_KEYS: sec.client_keys = optarg; break;
        case OPT_WORKER_KEYS: sec.worker_keys = optarg; break;
        case OPT_SECRET_FILE: sec.secret_file = optarg; break;
        case OPT_MAX_MSG: {
            uint64_t max = 0;
            if ((rc = s_parse_bytes("--max-msg", optarg, &max))) {
                return rc;
            }
            if (max < ZXP_MIN_MAX_MSG || max > INT64_MAX) {
                return s_bad("--max-msg", optarg, "must be at least 64K bytes");
            }
            sec.max_msg = (int64_t)max;
            break;
        }
        case OPT_JOURNAL:
            if (!*optarg) {
                return s_bad("--journal", optarg, "expected a directory");
            }
            cfg.journal_dir = optarg;
            break;
        case OPT_FSYNC:
            if (strcmp(optarg, "batch") == 0) {
                cfg.fsync_policy = ZXB_FSYNC_BATCH;
            } else if (strcmp(optarg, "none") == 0) {
                cfg.fsync_policy = ZXB_FSYNC_NONE;
            } else if (strncmp(optarg, "interval", 8) == 0 &&
                       (optarg[8] == 0 || optarg[8] == ':')) {
                cfg.fsync_policy = ZXB_FSYNC_INTERVAL;
                if (optarg[8] == ':' &&
                    (rc = s_parse_int("--fsync", optarg + 9, 1, 60000, &n)) != 0) {
                    return rc;
                }
                if (optarg[8] == ':') {
                    cfg.fsync_interval_ms = (uint32_t)n;
                }
            } else {
                return s_bad("--fsync", optarg, "expected batch, interval[:MS] or none");
            }
            break;
        case OPT_JOB_RETENTION:
            if ((rc = s_parse_seconds("--job-retention", optarg, 1, 86400 * 3650.0, &ms))) {
                return rc;
            }
            cfg.job_retention_s = ms / 1000 > 0 ? ms / 1000 : 1;
            break;
        case OPT_JOURNAL_SNAPSHOT:
            if ((rc = s_parse_bytes("--journal-snapshot", optarg, &cfg.snapshot_bytes))) {
                return rc;
            }
            break;
        case OPT_JOB_MAX_BYTES:
            if ((rc = s_parse_bytes("--job-max-bytes", optarg, &cfg.job_max_bytes))) {
                return rc;
            }
            break;
        case OPT_MAX_JOBS:
            if ((rc = s_parse_int("--max-jobs", optarg, 1, LONG_MAX, &n))) {
                return rc;
            }
            cfg.max_jobs = (uint64_t)n;
            break;
        case OPT_PEER:
            if (!*optarg) {
                return s_bad("--peer", optarg, "expected an endpoint, e.g. tcp://10.0.0.5:5573");
            }
            cfg.peer = optarg;
            break;
        case OPT_PEER_KEY: sec.peer_key = optarg; break;
        case OPT_PRIMARY: roles |= 1; break;
        case OPT_BACKUP: roles |= 2; break;
        case 'v': cfg.verbose = 2; break;
        case 'q': cfg.verbose = 0; break;
        case 'h': s_usage(stdout); return 0;
        case OPT_VERSION: printf("zexec-broker 0.1.0\n"); return 0;
        case ':':
            fprintf(stderr, "zexec-broker: %s needs a value\nTry 'zexec-broker --help'.\n", flag);
            return 2;
        default:
            if (optopt > 0 && optopt < 128) {
                fprintf(stderr, "zexec-broker: unknown option '-%c'\n", optopt);
            } else {
                fprintf(stderr, "zexec-broker: unknown option '%s'\n", flag);
            }
            fprintf(stderr, "Try 'zexec-broker --help'.\n");
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "zexec-broker: unexpected argument '%s'\nTry 'zexec-broker --help'.\n",
                argv[optind]);
        return 2;
    }
    if (roles == 3 || (roles && !cfg.peer) || (cfg.peer && !roles) ||
        (cfg.peer && !cfg.journal_dir)) {
        fprintf(stderr, "zexec-broker: %s\nTry 'zexec-broker --help'.\n",
                roles == 3  ? "--primary and --backup exclude each other"
                : !cfg.peer ? "--primary and --backup need --peer ENDPOINT"
                : !roles    ? "--peer needs --primary or --backup"
                            : "--peer needs --journal DIR (the passive keeps a copy of the "
                              "active's journal there)");
        return 2;
    }
    cfg.pair_primary = roles == 1;
    sec.peer = cfg.peer;
    sec.pair_primary = cfg.pair_primary;
    zsys_init();
    zsys_set_logstream(stderr);
    zsys_set_logident("zexec-broker");
    /* zxb_sec_init unsets ZEXEC_SECRET once read (nothing the broker starts
       inherits it), but a pair's broker that steps down starts itself again
       and must sign as before: keep it for that restart only */
    const char *env_secret = getenv("ZEXEC_SECRET");
    restart_secret = cfg.peer && env_secret && !sec.secret_file ? strdup(env_secret) : NULL;
    if (zxb_sec_init(&sec) != 0) {
        s_forget_secret();
        return 1;
    }
    zxb_broker_t *broker = zxb_broker_new(&cfg);
    if (!broker) {
        zxb_sec_fini();
        s_forget_secret();
        return 1;
    }
    int run = zxb_broker_run(broker);
    zxb_broker_destroy(&broker);
    zxb_sec_fini(); /* after the sockets: the ZAP handler outlives them */
    if (run != ZXB_RUN_RESTART) {
        s_forget_secret();
    }
    if (run == ZXB_RUN_RESTART) {
        /* a pair's backup that was active beside the primary steps down: its
           tables cannot be unbuilt in place, so the program starts again with
           the same arguments and comes back as the passive */
        zsys_shutdown();
        if (restart_secret) {
            setenv("ZEXEC_SECRET", restart_secret, 1);
        }
        execv("/proc/self/exe", args);
        fprintf(stderr, "zexec-broker: cannot restart itself: %s\n", strerror(errno));
        return 1;
    }
    return 0;
}
