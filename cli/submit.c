/*  submit.c - `zexec submit` (one call, result as JSON) and `zexec map`
    (JSON argument lists on stdin, JSON results on stdout in input order,
    streamed through zx_map_new_gen so an endless producer works too).
*/
#include "zxc.h"
#include "zx_parse.h"

#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* What the signal thread may touch: the executor and submit's future. */
typedef struct {
    pthread_mutex_t lock;
    zx_executor_t *ex;
    zx_future_t *f;
    volatile int sig;
    const char *cmd;
} s_stop_t;

/* The first Ctrl-C or SIGTERM: cancel what is queued at the broker (map) or
   terminate the task (submit: a process-pool task is killed, a thread-pool
   one runs to its end); results already coming are still printed, then the
   executor says BYE. The second: leave at once. */
static void s_on_signal(int sig, int count, void *arg)
{
    s_stop_t *st = arg;
    if (count > 1) {
        fprintf(stderr, "zexec %s: %s again: leaving without waiting\n", st->cmd, strsignal(sig));
        _exit(128 + sig);
    }
    fprintf(stderr, "zexec %s: %s: cancelling queued tasks (again to leave at once)\n", st->cmd,
            strsignal(sig));
    pthread_mutex_lock(&st->lock);
    st->sig = sig;
    if (st->ex) {
        zx_executor_shutdown(st->ex, false, true);
    }
    if (st->f) {
        zx_future_terminate(st->f);
    }
    pthread_mutex_unlock(&st->lock);
    /* no more inputs: map's generator sees the end of stdin */
    int nul = open("/dev/null", O_RDONLY);
    if (nul >= 0) {
        dup2(nul, STDIN_FILENO);
        close(nul);
    }
}

/* ---- submit -------------------------------------------------------------------- */

static void s_submit_usage(FILE *out)
{
    fprintf(out, "usage: zexec submit [OPTIONS] FN [ARGS]\n"
                 "Calls FN once on the cluster with ARGS, a JSON array (default []), and prints\n"
                 "the result as one line of JSON. On failure prints the exception (type,\n"
                 "message, node) on stderr and exits 1.\n"
                 "\n" ZXC_CONN_HELP "  --pool POOL          thread, process or any (default any)\n"
                 "  --time-limit S       the task's time limit in seconds (default: the worker's)\n"
                 "  --timeout S          give up when the broker is unreachable this long\n"
                 "                       (default 3 s to connect, 60 s once connected)\n"
                 "  --priority N         -128..127, higher runs first (default 0)\n"
                 "  --detach             submit it as a detached job: print the job id and\n"
                 "                       leave; 'zexec results ID' prints the result later\n"
                 "                       (Ctrl-C before the id is printed cancels the job)\n"
                 "  --job-name NAME      the detached job's name in 'zexec jobs'\n"
                 "  -h, --help           this text\n"
                 "\n"
                 "example: zexec submit square '[7]'   ->  49\n");
}

/* Parses text as a JSON array and packs it; exit status 2 on bad input. */
static int s_pack_args(const char *cmd, const char *text, msgpack_sbuffer *sb, char *err,
                       size_t errlen)
{
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &jerr);
    if (!j) {
        snprintf(err, errlen, "not valid JSON: %s (column %d)", jerr.text, jerr.column);
        return -1;
    }
    if (!json_is_array(j)) {
        snprintf(err, errlen, "arguments must be a JSON array, e.g. [1, \"a\"]");
        json_decref(j);
        return -1;
    }
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    int rc = zxc_json_to_mp(j, &pk);
    json_decref(j);
    if (rc != 0) {
        snprintf(err, errlen, "out of memory");
    }
    (void)cmd;
    return rc;
}

int zxc_submit_main(int argc, char **argv)
{
    static const struct option longopts[] = {ZXC_CONN_OPTIONS,
                                             {"pool", required_argument, NULL, 'p'},
                                             {"time-limit", required_argument, NULL, 'L'},
                                             {"timeout", required_argument, NULL, 't'},
                                             {"priority", required_argument, NULL, 'P'},
                                             {"detach", no_argument, NULL, 'D'},
                                             {"job-name", required_argument, NULL, 'J'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    zxc_conn_t conn;
    zxc_conn_init(&conn);
    zx_task_opts_t topts = {0};
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        long l;
        if (zxc_conn_flag(&conn, opt, optarg)) {
            continue;
        }
        switch (opt) {
        case 'h': s_submit_usage(stdout); return 0;
        case 'p':
            if (strcmp(optarg, "thread") == 0) {
                topts.pool = ZX_POOL_THREAD;
            } else if (strcmp(optarg, "process") == 0) {
                topts.pool = ZX_POOL_PROCESS;
            } else if (strcmp(optarg, "any") == 0) {
                topts.pool = ZX_POOL_ANY;
            } else {
                return zxc_usage_error("submit", "invalid --pool '%s': thread, process or any",
                                       optarg);
            }
            break;
        case 'L':
            if (!zx__parse_double(optarg, 0.001, 1e7, &topts.time_limit)) {
                return zxc_usage_error("submit", "invalid --time-limit '%s': seconds > 0", optarg);
            }
            break;
        case 't':
            if (!zx__parse_double(optarg, 0.1, 1e7, &conn.timeout)) {
                return zxc_usage_error("submit", "invalid --timeout '%s': seconds > 0", optarg);
            }
            break;
        case 'P':
            if (!zx__parse_long(optarg, -128, 127, &l)) {
                return zxc_usage_error("submit", "invalid --priority '%s': -128..127", optarg);
            }
            topts.priority = (int)l;
            break;
        case 'D': conn.detach = true; break;
        case 'J': conn.job_name = optarg; break;
        default: return zxc_bad_flag("submit", argc, argv);
        }
    }
    if (optind >= argc) {
        return zxc_usage_error("submit", "missing the function name");
    }
    if (conn.job_name && !conn.detach) {
        return zxc_usage_error("submit", "--job-name needs --detach");
    }
    if (argc - optind > 2) {
        return zxc_usage_error("submit", "too many arguments: give ARGS as one JSON array");
    }
    const char *fn = argv[optind];
    if (!*fn || strlen(fn) > 255) {
        return zxc_usage_error("submit", "invalid function name '%s'", fn);
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    char err[256];
    if (s_pack_args("submit", optind + 1 < argc ? argv[optind + 1] : "[]", &sb, err, sizeof err)) {
        msgpack_sbuffer_destroy(&sb);
        return zxc_usage_error("submit", "ARGS: %s", err);
    }
    int rc = ZXC_EXIT_FAIL;
    if (conn.detach) {
        /* interrupted before the id is printed: the job is cancelled (conn.c) */
        zx_executor_t *ex = zxc_detach_begin(&conn, "submit", 1, ZXC_EXIT_FAIL);
        zx_future_t *f = ex ? zx_submit_opts(ex, fn, sb.data, sb.size, &topts) : NULL;
        msgpack_sbuffer_destroy(&sb);
        if (!f) {
            if (ex) {
                fprintf(stderr, "zexec submit: %s\n", zx_strerror(zx_last_error()));
                zxc_detach_release(&ex); /* the one task never left */
            }
            return ZXC_EXIT_FAIL;
        }
        rc = zxc_detach(&ex, "");
        const zx_error_t *e = zx_future_exception(f, 0);
        if (rc == 0 && e && e->code == ZX_EREJECTED) {
            zxc_print_error(stderr, "submit", e); /* refused: not in the job */
            rc = ZXC_EXIT_FAIL;
        }
        zx_future_unref(&f);
        return rc;
    }
    s_stop_t st = {.cmd = "submit"};
    pthread_mutex_init(&st.lock, NULL);
    zx_executor_t *ex = zxc_executor(&conn, "submit");
    zx_future_t *f = ex ? zx_submit_opts(ex, fn, sb.data, sb.size, &topts) : NULL;
    if (ex && !f) {
        fprintf(stderr, "zexec submit: %s\n", zx_strerror(zx_last_error()));
    }
    st.ex = ex;
    st.f = f;
    zxc_signals_start(s_on_signal, &st);
    if (f) {
        const void *v;
        size_t n;
        if (zx_future_result(f, ZX_FOREVER, &v, &n) == ZX_OK) {
            json_t *j = zxc_mp_buf_to_json(v, n);
            if (j) {
                zxc_json_print(stdout, j);
                putchar('\n');
                rc = 0;
            } else {
                fprintf(stderr, "zexec submit: the result is not valid msgpack\n");
            }
            json_decref(j);
        } else {
            zxc_print_error(stderr, "submit", zx_future_exception(f, 0));
        }
    }
    pthread_mutex_lock(&st.lock);
    st.ex = NULL;
    st.f = NULL;
    pthread_mutex_unlock(&st.lock);
    zx_executor_destroy(&ex); /* says BYE */
    zxc_signals_stop();
    zx_future_unref(&f);
    pthread_mutex_destroy(&st.lock);
    msgpack_sbuffer_destroy(&sb);
    return st.sig ? 128 + st.sig : rc;
}

/* ---- map ----------------------------------------------------------------------- */

static void s_map_usage(FILE *out)
{
    fprintf(out, "usage: zexec map [OPTIONS] FN < ARGS.jsonl\n"
                 "Reads one JSON array of arguments per line from stdin (blank lines are\n"
                 "skipped), calls FN on each across the cluster and writes one JSON result per\n"
                 "line to stdout, in input order. Stops at the first task that fails (its\n"
                 "exception on stderr, exit 1), as Python's Executor.map does. A line that is\n"
                 "not a JSON array stops the map with its line number (exit 2).\n"
                 "\n" ZXC_CONN_HELP "  --chunksize N        inputs per task (default 1)\n"
                 "  --timeout S          give up after S seconds in all (default: none)\n"
                 "  -q, --quiet          no progress display on stderr\n"
                 "  -h, --help           this text\n"
                 "\n"
                 "example: seq 5 | sed 's/.*/[&]/' | zexec map square\n");
}

typedef struct {
    char *line;
    size_t cap;
    size_t lineno; /* lines read */
    size_t inputs; /* argument arrays handed out */
    msgpack_sbuffer sb;
    bool eof;
    size_t bad_line; /* 0: none */
    char bad[256];
} s_gen_t;

static int s_gen_next(void *arg, const void **args, size_t *args_len)
{
    s_gen_t *g = arg;
    while (true) {
        ssize_t n = getline(&g->line, &g->cap, stdin);
        if (n < 0) {
            g->eof = true;
            return 0;
        }
        g->lineno++;
        const char *p = g->line;
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') {
            p++;
        }
        if (!*p) {
            continue;
        }
        json_error_t jerr;
        json_t *j = json_loadb(g->line, (size_t)n, JSON_DECODE_ANY, &jerr);
        if (!j || !json_is_array(j)) {
            g->bad_line = g->lineno;
            if (j) {
                snprintf(g->bad, sizeof g->bad, "expected a JSON array of arguments, e.g. [1, 2]");
            } else {
                snprintf(g->bad, sizeof g->bad, "not valid JSON: %s (column %d)", jerr.text,
                         jerr.column);
            }
            json_decref(j);
            return ZX_EINVAL;
        }
        msgpack_sbuffer_clear(&g->sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &g->sb, msgpack_sbuffer_write);
        int rc = zxc_json_to_mp(j, &pk);
        json_decref(j);
        if (rc != 0) {
            return ZX_ENOMEM;
        }
        g->inputs++;
        *args = g->sb.data;
        *args_len = g->sb.size;
        return 1;
    }
}

int zxc_map_main(int argc, char **argv)
{
    static const struct option longopts[] = {ZXC_CONN_OPTIONS,
                                             {"chunksize", required_argument, NULL, 'c'},
                                             {"timeout", required_argument, NULL, 't'},
                                             {"quiet", no_argument, NULL, 'q'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    zxc_conn_t conn;
    zxc_conn_init(&conn);
    long chunksize = 1;
    double timeout = ZX_FOREVER;
    bool quiet = false;
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "hq", longopts, NULL)) != -1) {
        if (zxc_conn_flag(&conn, opt, optarg)) {
            continue;
        }
        switch (opt) {
        case 'h': s_map_usage(stdout); return 0;
        case 'q': quiet = true; break;
        case 'c':
            if (!zx__parse_long(optarg, 1, 1000000, &chunksize)) {
                return zxc_usage_error("map", "invalid --chunksize '%s': 1..1000000", optarg);
            }
            break;
        case 't':
            if (!zx__parse_double(optarg, 0.001, 1e9, &timeout)) {
                return zxc_usage_error("map", "invalid --timeout '%s': seconds > 0", optarg);
            }
            break;
        default: return zxc_bad_flag("map", argc, argv);
        }
    }
    if (optind >= argc) {
        return zxc_usage_error("map", "missing the function name");
    }
    if (argc - optind > 1) {
        return zxc_usage_error("map", "unexpected argument '%s' (arguments come from stdin)",
                               argv[optind + 1]);
    }
    const char *fn = argv[optind];
    s_stop_t st = {.cmd = "map"};
    pthread_mutex_init(&st.lock, NULL);
    zx_executor_t *ex = zxc_executor(&conn, "map");
    if (!ex) {
        pthread_mutex_destroy(&st.lock);
        return ZXC_EXIT_FAIL;
    }
    st.ex = ex;
    zxc_signals_start(s_on_signal, &st);
    s_gen_t g = {0};
    msgpack_sbuffer_init(&g.sb);
    zxc_progress_t *prog = zxc_progress_new("map", 0, quiet);
    zx_map_t *m = zx_map_new_gen(ex, fn, s_gen_next, &g, (size_t)chunksize, timeout);
    int rc = 0, code = m ? ZX_OK : zx_last_error();
    size_t done = 0;
    while (m) {
        const void *v;
        size_t n;
        code = zx_map_next(m, &v, &n);
        if (code != ZX_OK) {
            break;
        }
        json_t *j = zxc_mp_buf_to_json(v, n);
        zxc_progress_clear(prog);
        if (j) {
            zxc_json_print(stdout, j);
        } else {
            fputs("null", stdout);
        }
        json_decref(j);
        putchar('\n');
        if (fflush(stdout) != 0) {
            /* a closed stdout (EPIPE): stop as on SIGPIPE */
            pthread_mutex_lock(&st.lock);
            st.sig = SIGPIPE;
            zx_executor_shutdown(ex, false, true);
            pthread_mutex_unlock(&st.lock);
            code = ZX_ECANCELLED;
            break;
        }
        done++;
        if (g.eof) {
            zxc_progress_total(prog, g.inputs);
        }
        zxc_progress_update(prog, done, 0);
    }
    if (code != ZX_EEND) {
        zxc_progress_update(prog, done, 1);
    }
    zxc_progress_destroy(&prog);
    if (st.sig) {
        if (st.sig != SIGPIPE) {
            fprintf(stderr, "zexec map: interrupted after %zu results\n", done);
        }
        rc = 128 + st.sig;
    } else if (g.bad_line) {
        fprintf(stderr, "zexec map: stdin line %zu: %s\n", g.bad_line, g.bad);
        rc = ZXC_EXIT_USAGE;
    } else if (code == ZX_ERAISED || code == ZX_ECANCELLED || code == ZX_ETIMEOUT) {
        const zx_error_t *e = zx_map_exception(m);
        if (e) {
            zxc_print_error(stderr, "map", e);
        } else {
            fprintf(stderr, "zexec map: %s\n", zx_strerror(code));
        }
        rc = ZXC_EXIT_FAIL;
    } else if (code != ZX_EEND) {
        fprintf(stderr, "zexec map: %s\n", zx_strerror(code));
        rc = ZXC_EXIT_FAIL;
    }
    zx_map_destroy(&m);
    pthread_mutex_lock(&st.lock);
    st.ex = NULL;
    pthread_mutex_unlock(&st.lock);
    zx_executor_destroy(&ex); /* says BYE */
    zxc_signals_stop();
    pthread_mutex_destroy(&st.lock);
    msgpack_sbuffer_destroy(&g.sb);
    free(g.line);
    return rc;
}
