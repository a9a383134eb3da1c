/*  run.c - `zexec run`: GNU parallel across the cluster. One `exec` task per
    input (the workers' built-in, --allow-exec, process pool), the command
    line's {} {.} {/} {//} {/.} {#} replaced per input, at most --jobs tasks
    in flight. Completions arrive through done-callbacks on the executor's
    I/O thread and are queued to the main thread, which prints, logs, retries
    and refills the window: the I/O thread never waits on our stdout.
*/
#include "zxc.h"
#include "zx_parse.h"

#include <czmq.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#define S_DEFAULT_JOBS 256
#define S_MAX_FAILED_EXIT 101
#define S_EXIT_ERROR 255 /* could not run at all (broker unreachable, bad input file) */

typedef struct s_run s_run_t;

typedef struct {
    s_run_t *run;
    size_t seq; /* 1-based, {#} */
    char *input;
    int attempts;
    double start;     /* epoch seconds of the first attempt */
    int64_t start_ms; /* monotonic, for the duration */
    zx_future_t *f;
    bool done, ok, skipped, printed;
    int exit_code;
    char *node;
    /* kept only until printed (--keep-order holds them back) */
    char *out, *err;
    size_t out_len, err_len;
} s_job_t;

struct s_run {
    /* flags */
    long jobs, retries;
    double timeout;
    const char *joblog_path;
    bool resume, keep_order, quiet;
    char **tmpl; /* the command line template */
    int tmpl_n;
    bool has_placeholder;
    /* state */
    s_job_t *job;
    size_t njobs;
    FILE *joblog;
    zhashx_t *succeeded; /* "seq\tinput" of succeeded jobs in the old log (--resume) */
    zx_executor_t *ex;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    zlist_t *completed; /* s_job_t*, pushed by done-callbacks */
    size_t ndone, nfailed, inflight, next_print;
    zxc_progress_t *prog;
};

static volatile sig_atomic_t s_interrupted = 0;

static void s_on_signal(int sig)
{
    s_interrupted = sig;
}

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: zexec run [OPTIONS] [--] COMMAND [ARG...] ::: INPUT...\n"
            "       zexec run [OPTIONS] [--] COMMAND [ARG...] :::: FILE...\n"
            "       zexec run [OPTIONS] [--] COMMAND [ARG...] < INPUTS\n"
            "Runs COMMAND once per input on the cluster's workers (they need --allow-exec),\n"
            "as GNU parallel does on one machine. Inputs come after ':::', from the files\n"
            "after '::::' ('-' is stdin), or from stdin, one per line. In the command line:\n"
            "  {}    the input          {.}   the input without its extension\n"
            "  {/}   its basename       {//}  its directory       {/.}  basename, no extension\n"
            "  {#}   the job number (1, 2, ...)\n"
            "With none of these the input is appended as the last argument. Arguments go\n"
            "to the command as they are, with no shell: use sh -c '...' for pipes.\n"
            "\n" ZXC_CONN_HELP
            "  -j, --jobs N         at most N jobs in flight (default %d; the workers'\n"
            "                       process pools decide how many run at once)\n"
            "  --retries N          re-run a failed job up to N more times (default 0)\n"
            "  --timeout S          kill a job's command after S seconds (exit 124 in the log)\n"
            "  --joblog FILE        a TSV log: Seq Input Node Exitval Starttime Runtime Attempts\n"
            "  --resume             with --joblog: skip the jobs the log shows succeeded\n"
            "  -k, --keep-order     print outputs in input order (default: as jobs complete)\n"
            "  -q, --quiet          no progress display on stderr\n"
            "  -h, --help           this text\n"
            "\n"
            "Exit status: 0 if every job succeeded, else the number of failed jobs (at most\n"
            "101); 255 if nothing could run (broker unreachable, unreadable input file); 130\n"
            "after Ctrl-C. Example: zexec run -- gzip -9 {} ::: *.log\n",
            S_DEFAULT_JOBS);
}

/* ---- substitution --------------------------------------------------------------- */

static const char *const s_tokens[] = {"{//}", "{/.}", "{/}", "{.}", "{#}", "{}"};

static bool s_has_token(const char *s)
{
    for (size_t i = 0; i < sizeof s_tokens / sizeof s_tokens[0]; i++) {
        if (strstr(s, s_tokens[i])) {
            return true;
        }
    }
    return false;
}

/* The replacement of token t for input in (seq for {#}) into sb. */
static void s_replace(zchunk_t *sb, const char *t, const char *in, size_t seq)
{
    const char *slash = strrchr(in, '/');
    const char *base = slash ? slash + 1 : in;
    const char *dot = strrchr(base, '.');
    size_t base_noext = dot && dot != base ? (size_t)(dot - base) : strlen(base);
    size_t in_noext = (size_t)(base - in) + base_noext;
    char num[32];
    if (strcmp(t, "{}") == 0) {
        zchunk_extend(sb, in, strlen(in));
    } else if (strcmp(t, "{.}") == 0) {
        zchunk_extend(sb, in, in_noext);
    } else if (strcmp(t, "{/}") == 0) {
        zchunk_extend(sb, base, strlen(base));
    } else if (strcmp(t, "{/.}") == 0) {
        zchunk_extend(sb, base, base_noext);
    } else if (strcmp(t, "{//}") == 0) {
        if (!slash) {
            zchunk_extend(sb, ".", 1);
        } else {
            zchunk_extend(sb, in, slash == in ? 1 : (size_t)(slash - in));
        }
    } else {
        snprintf(num, sizeof num, "%zu", seq);
        zchunk_extend(sb, num, strlen(num));
    }
}

/* Packs one msgpack str: the template argument with its tokens replaced. */
static void s_pack_subst(msgpack_packer *pk, zchunk_t *sb, const char *tmpl, const char *in,
                         size_t seq)
{
    zchunk_set(sb, NULL, 0);
    const char *p = tmpl;
    while (*p) {
        size_t matched = 0;
        if (*p == '{') {
            for (size_t i = 0; i < sizeof s_tokens / sizeof s_tokens[0]; i++) {
                size_t n = strlen(s_tokens[i]);
                if (strncmp(p, s_tokens[i], n) == 0) {
                    s_replace(sb, s_tokens[i], in, seq);
                    matched = n;
                    break;
                }
            }
        }
        if (!matched) {
            zchunk_extend(sb, p, 1);
            matched = 1;
        }
        p += matched;
    }
    msgpack_pack_str(pk, zchunk_size(sb));
    msgpack_pack_str_body(pk, zchunk_data(sb), zchunk_size(sb));
}

/* ---- job log -------------------------------------------------------------------- */

/* Tabs, newlines and backslashes in an input would break the TSV. */
static char *s_escape(const char *s)
{
    size_t n = strlen(s);
    char *e = malloc(2 * n + 1), *q = e;
    if (!e) {
        return NULL;
    }
    for (const char *p = s; *p; p++) {
        switch (*p) {
        case '\t':
            *q++ = '\\';
            *q++ = 't';
            break;
        case '\n':
            *q++ = '\\';
            *q++ = 'n';
            break;
        case '\r':
            *q++ = '\\';
            *q++ = 'r';
            break;
        case '\\':
            *q++ = '\\';
            *q++ = '\\';
            break;
        default: *q++ = *p;
        }
    }
    *q = 0;
    return e;
}

static char *s_key(size_t seq, const char *escaped_input)
{
    char *k = NULL;
    if (asprintf(&k, "%zu\t%s", seq, escaped_input) < 0) {
        return NULL;
    }
    return k;
}

/* Reads an existing job log: the (seq, input) pairs that exited 0. */
static int s_joblog_load(s_run_t *r)
{
    r->succeeded = zhashx_new();
    zhashx_set_destructor(r->succeeded, NULL);
    FILE *f = fopen(r->joblog_path, "r");
    if (!f) {
        return errno == ENOENT ? 0 : -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] == '\n') {
            line[--n] = 0;
        }
        char *fields[7];
        int nf = 0;
        char *save = NULL;
        /* strtok_r would merge empty fields; the input may be empty */
        char *p = line;
        while (nf < 7) {
            fields[nf++] = p;
            char *tab = strchr(p, '\t');
            if (!tab) {
                break;
            }
            *tab = 0;
            p = tab + 1;
        }
        (void)save;
        if (nf < 4 || strcmp(fields[0], "Seq") == 0 || strcmp(fields[3], "0") != 0) {
            continue;
        }
        char *end;
        unsigned long long seq = strtoull(fields[0], &end, 10);
        if (*end || seq == 0) {
            continue;
        }
        char *k = s_key((size_t)seq, fields[1]);
        if (k) {
            zhashx_update(r->succeeded, k, (void *)1);
            free(k);
        }
    }
    free(line);
    fclose(f);
    return 0;
}

static void s_joblog_write(s_run_t *r, s_job_t *j)
{
    if (!r->joblog) {
        return;
    }
    char *in = s_escape(j->input);
    double dur = (double)(zclock_mono() - j->start_ms) / 1000.0;
    fprintf(r->joblog, "%zu\t%s\t%s\t%d\t%.3f\t%.3f\t%d\n", j->seq, in ? in : "?",
            j->node && *j->node ? j->node : "-", j->exit_code, j->start, dur, j->attempts);
    /* flushed per job: --resume after a crash must see every finished job */
    fflush(r->joblog);
    free(in);
}

/* ---- running -------------------------------------------------------------------- */

static void s_on_done(zx_future_t *f, void *arg)
{
    s_job_t *j = arg;
    s_run_t *r = j->run;
    pthread_mutex_lock(&r->lock);
    zlist_append(r->completed, j);
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
    (void)f;
}

static int s_submit(s_run_t *r, s_job_t *j)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    zchunk_t *tmp = zchunk_new(NULL, 256);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_array(&pk, (size_t)r->tmpl_n + (r->has_placeholder ? 0 : 1));
    for (int i = 0; i < r->tmpl_n; i++) {
        s_pack_subst(&pk, tmp, r->tmpl[i], j->input, j->seq);
    }
    if (!r->has_placeholder) {
        s_pack_subst(&pk, tmp, "{}", j->input, j->seq);
    }
    zchunk_destroy(&tmp);
    if (r->timeout > 0) {
        msgpack_pack_map(&pk, 1);
        msgpack_pack_str(&pk, 7);
        msgpack_pack_str_body(&pk, "timeout", 7);
        msgpack_pack_double(&pk, r->timeout);
    } else {
        msgpack_pack_nil(&pk);
    }
    zx_task_opts_t opts = {.pool = ZX_POOL_PROCESS};
    if (j->attempts == 0) {
        struct timeval tv;
        gettimeofday(&tv, NULL);
        j->start = (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
        j->start_ms = zclock_mono();
    }
    j->attempts++;
    j->f = zx_submit_opts(r->ex, "exec", sb.data, sb.size, &opts);
    msgpack_sbuffer_destroy(&sb);
    if (!j->f) {
        return zx_last_error();
    }
    r->inflight++;
    zx_future_add_done_callback(j->f, s_on_done, j);
    return 0;
}

/* The exit status for the log from a failed exec's exception. */
static int s_exit_of(const zx_error_t *e)
{
    const char *m = e->message ? e->message : "";
    const char *p;
    int v;
    if ((p = strstr(m, "exited with status ")) && sscanf(p, "exited with status %d", &v) == 1) {
        return v;
    }
    if ((p = strstr(m, "killed by signal ")) && sscanf(p, "killed by signal %d", &v) == 1) {
        return 128 + v;
    }
    if (e->type && strcmp(e->type, "TimeLimitError") == 0) {
        return 124;
    }
    if (strstr(m, "cannot run")) {
        return 127;
    }
    return 255;
}

/* Bytes of a bin (or str) field of the exec result map. */
static void s_take_bin(const msgpack_object *map, const char *key, char **out, size_t *len,
                       bool *truncated)
{
    size_t kn = strlen(key);
    char tkey[64];
    snprintf(tkey, sizeof tkey, "%s_truncated", key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key, *v = &map->via.map.ptr[i].val;
        if (k->type != MSGPACK_OBJECT_STR) {
            continue;
        }
        if (k->via.str.size == kn && memcmp(k->via.str.ptr, key, kn) == 0) {
            const char *p = v->type == MSGPACK_OBJECT_BIN   ? v->via.bin.ptr
                            : v->type == MSGPACK_OBJECT_STR ? v->via.str.ptr
                                                            : NULL;
            size_t n = v->type == MSGPACK_OBJECT_BIN   ? v->via.bin.size
                       : v->type == MSGPACK_OBJECT_STR ? v->via.str.size
                                                       : 0;
            if (p && n) {
                *out = malloc(n);
                if (*out) {
                    memcpy(*out, p, n);
                    *len = n;
                }
            }
        } else if (k->via.str.size == strlen(tkey) && memcmp(k->via.str.ptr, tkey, kn + 10) == 0 &&
                   v->type == MSGPACK_OBJECT_BOOLEAN) {
            *truncated = v->via.boolean;
        }
    }
}

static void s_print(s_run_t *r, s_job_t *j)
{
    zxc_progress_clear(r->prog);
    if (j->out_len) {
        fwrite(j->out, 1, j->out_len, stdout);
        fflush(stdout);
    }
    if (j->err_len) {
        fwrite(j->err, 1, j->err_len, stderr);
        fflush(stderr);
    }
    free(j->out);
    free(j->err);
    j->out = j->err = NULL;
    j->out_len = j->err_len = 0;
    j->printed = true;
}

/* A finished attempt: retry it, or record and print the job. */
static void s_complete(s_run_t *r, s_job_t *j)
{
    r->inflight--;
    const void *v;
    size_t n;
    int rc = zx_future_result(j->f, 0, &v, &n);
    if (rc != ZX_OK && j->attempts <= r->retries && !s_interrupted) {
        zx_future_unref(&j->f);
        if (s_submit(r, j) == 0) {
            return;
        }
    }
    if (rc == ZX_OK) {
        j->ok = true;
        j->exit_code = 0;
        const char *node = zx_future_node(j->f);
        free(j->node);
        j->node = *node ? strdup(node) : NULL;
        msgpack_zone zone;
        msgpack_zone_init(&zone, 256);
        msgpack_object obj;
        size_t off = 0;
        bool tout = false, terr = false;
        if (msgpack_unpack(v, n, &off, &zone, &obj) == MSGPACK_UNPACK_SUCCESS &&
            obj.type == MSGPACK_OBJECT_MAP) {
            s_take_bin(&obj, "stdout", &j->out, &j->out_len, &tout);
            s_take_bin(&obj, "stderr", &j->err, &j->err_len, &terr);
        }
        msgpack_zone_destroy(&zone);
        if (tout || terr) {
            char *note = NULL;
            int k = asprintf(&note, "zexec run: job %zu (%s): output truncated by the worker\n",
                             j->seq, j->input);
            if (k > 0) {
                char *e = realloc(j->err, j->err_len + (size_t)k);
                if (e) {
                    memcpy(e + j->err_len, note, (size_t)k);
                    j->err = e;
                    j->err_len += (size_t)k;
                }
            }
            free(note);
        }
    } else {
        const zx_error_t *e = j->f ? zx_future_exception(j->f, 0) : NULL;
        j->exit_code = e ? s_exit_of(e) : 255;
        free(j->node);
        j->node = e && e->node && *e->node ? strdup(e->node) : NULL;
        const char *m = e && e->message ? e->message : zx_strerror(rc);
        size_t ml = strlen(m);
        char *msg = NULL;
        int k = asprintf(&msg, "zexec run: job %zu (%s) failed%s%s after %d attempt%s: %s: %s%s",
                         j->seq, j->input, j->node ? " on " : "", j->node ? j->node : "",
                         j->attempts, j->attempts == 1 ? "" : "s", e && e->type ? e->type : "Error",
                         m, ml && m[ml - 1] == '\n' ? "" : "\n");
        if (k > 0) {
            j->err = msg;
            j->err_len = (size_t)k;
        } else {
            free(msg);
        }
        r->nfailed++;
    }
    zx_future_unref(&j->f);
    j->done = true;
    r->ndone++;
    s_joblog_write(r, j);
    if (!r->keep_order) {
        s_print(r, j);
    }
    while (r->next_print < r->njobs && r->job[r->next_print].done) {
        if (!r->job[r->next_print].printed) {
            s_print(r, &r->job[r->next_print]);
        }
        r->next_print++;
    }
    zxc_progress_update(r->prog, r->ndone, r->nfailed);
}

/* ---- inputs --------------------------------------------------------------------- */

static int s_add_input(s_run_t *r, size_t *cap, const char *s, size_t len)
{
    if (r->njobs == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        s_job_t *nj = realloc(r->job, nc * sizeof *nj);
        if (!nj) {
            return -1;
        }
        r->job = nj;
        *cap = nc;
    }
    s_job_t *j = &r->job[r->njobs];
    memset(j, 0, sizeof *j);
    j->input = strndup(s, len);
    if (!j->input) {
        return -1;
    }
    j->run = r;
    j->seq = ++r->njobs;
    return 0;
}

static int s_read_lines(s_run_t *r, size_t *cap, FILE *f)
{
    char *line = NULL;
    size_t lcap = 0;
    ssize_t n;
    int rc = 0;
    while (rc == 0 && (n = getline(&line, &lcap, f)) >= 0) {
        if (n > 0 && line[n - 1] == '\n') {
            n--;
        }
        if (n > 0 && line[n - 1] == '\r') {
            n--;
        }
        rc = s_add_input(r, cap, line, (size_t)n);
    }
    free(line);
    return rc;
}

/* ---- main ----------------------------------------------------------------------- */

static void s_free(s_run_t *r)
{
    for (size_t i = 0; i < r->njobs; i++) {
        zx_future_unref(&r->job[i].f);
        free(r->job[i].input);
        free(r->job[i].node);
        free(r->job[i].out);
        free(r->job[i].err);
    }
    free(r->job);
    zhashx_destroy(&r->succeeded);
    zlist_destroy(&r->completed);
    if (r->joblog) {
        fclose(r->joblog);
    }
}

int zxc_run_main(int argc, char **argv)
{
    static const struct option longopts[] = {ZXC_CONN_OPTIONS,
                                             {"jobs", required_argument, NULL, 'j'},
                                             {"retries", required_argument, NULL, 'r'},
                                             {"timeout", required_argument, NULL, 't'},
                                             {"joblog", required_argument, NULL, 'l'},
                                             {"resume", no_argument, NULL, 'R'},
                                             {"keep-order", no_argument, NULL, 'k'},
                                             {"quiet", no_argument, NULL, 'q'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    s_run_t r = {.jobs = S_DEFAULT_JOBS};
    zxc_conn_t conn;
    zxc_conn_init(&conn);
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "+hj:kq", longopts, NULL)) != -1) {
        if (zxc_conn_flag(&conn, opt, optarg)) {
            continue;
        }
        switch (opt) {
        case 'h': s_usage(stdout); return 0;
        case 'j':
            if (!zx__parse_long(optarg, 1, 1000000, &r.jobs)) {
                return zxc_usage_error("run", "invalid --jobs '%s': 1..1000000", optarg);
            }
            break;
        case 'r':
            if (!zx__parse_long(optarg, 0, 1000, &r.retries)) {
                return zxc_usage_error("run", "invalid --retries '%s': 0..1000", optarg);
            }
            break;
        case 't':
            if (!zx__parse_double(optarg, 0.001, 1e7, &r.timeout)) {
                return zxc_usage_error("run", "invalid --timeout '%s': seconds > 0", optarg);
            }
            break;
        case 'l': r.joblog_path = optarg; break;
        case 'R': r.resume = true; break;
        case 'k': r.keep_order = true; break;
        case 'q': r.quiet = true; break;
        default: return zxc_bad_flag("run", argc, argv);
        }
    }
    if (r.resume && !r.joblog_path) {
        return zxc_usage_error("run", "--resume needs --joblog FILE");
    }
    /* COMMAND ARGS... [::: INPUTS... | :::: FILES...] */
    int sep = -1;
    for (int i = optind; i < argc; i++) {
        if (strcmp(argv[i], ":::") == 0 || strcmp(argv[i], "::::") == 0) {
            if (sep >= 0) {
                return zxc_usage_error("run", "only one input source (':::' or '::::') is "
                                              "supported");
            }
            sep = i;
        }
    }
    r.tmpl = argv + optind;
    r.tmpl_n = (sep >= 0 ? sep : argc) - optind;
    if (r.tmpl_n <= 0) {
        return zxc_usage_error("run", "missing the command to run");
    }
    for (int i = 0; i < r.tmpl_n; i++) {
        r.has_placeholder = r.has_placeholder || s_has_token(r.tmpl[i]);
    }
    size_t cap = 0;
    int rc = 0;
    if (sep >= 0 && strcmp(argv[sep], ":::") == 0) {
        for (int i = sep + 1; rc == 0 && i < argc; i++) {
            rc = s_add_input(&r, &cap, argv[i], strlen(argv[i]));
        }
    } else if (sep >= 0) {
        if (sep + 1 >= argc) {
            return zxc_usage_error("run", "'::::' needs at least one file");
        }
        for (int i = sep + 1; rc == 0 && i < argc; i++) {
            FILE *f = strcmp(argv[i], "-") == 0 ? stdin : fopen(argv[i], "r");
            if (!f) {
                fprintf(stderr, "zexec run: cannot read inputs from %s: %s\n", argv[i],
                        strerror(errno));
                s_free(&r);
                return S_EXIT_ERROR;
            }
            rc = s_read_lines(&r, &cap, f);
            if (f != stdin) {
                fclose(f);
            }
        }
    } else {
        if (isatty(STDIN_FILENO)) {
            fprintf(stderr, "zexec run: reading inputs from the terminal, one per line "
                            "(end with Ctrl-D)\n");
        }
        rc = s_read_lines(&r, &cap, stdin);
    }
    if (rc != 0) {
        fprintf(stderr, "zexec run: out of memory reading inputs\n");
        s_free(&r);
        return S_EXIT_ERROR;
    }

    size_t skipped = 0;
    if (r.joblog_path) {
        if (r.resume && s_joblog_load(&r) != 0) {
            fprintf(stderr, "zexec run: cannot read the job log %s: %s\n", r.joblog_path,
                    strerror(errno));
            s_free(&r);
            return S_EXIT_ERROR;
        }
        r.joblog = fopen(r.joblog_path, r.resume ? "a" : "w");
        if (!r.joblog) {
            fprintf(stderr, "zexec run: cannot write the job log %s: %s\n", r.joblog_path,
                    strerror(errno));
            s_free(&r);
            return S_EXIT_ERROR;
        }
        if (ftell(r.joblog) == 0) {
            fprintf(r.joblog, "Seq\tInput\tNode\tExitval\tStarttime\tRuntime\tAttempts\n");
            fflush(r.joblog);
        }
        for (size_t i = 0; r.succeeded && i < r.njobs; i++) {
            char *in = s_escape(r.job[i].input);
            char *k = in ? s_key(r.job[i].seq, in) : NULL;
            if (k && zhashx_lookup(r.succeeded, k)) {
                r.job[i].skipped = r.job[i].done = r.job[i].ok = r.job[i].printed = true;
                skipped++;
            }
            free(k);
            free(in);
        }
    }
    if (r.njobs == skipped) {
        s_free(&r);
        return 0;
    }

    r.ex = zxc_executor(&conn, "run");
    if (!r.ex) {
        s_free(&r);
        return S_EXIT_ERROR;
    }
    r.completed = zlist_new();
    pthread_mutex_init(&r.lock, NULL);
    pthread_cond_init(&r.cond, NULL);
    struct sigaction sa = {.sa_handler = s_on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    r.prog = zxc_progress_new("run", r.njobs - skipped, r.quiet);

    size_t next = 0, to_run = r.njobs - skipped;
    int err = 0;
    while (r.ndone < to_run && !s_interrupted && !err) {
        while (next < r.njobs && r.inflight < (size_t)r.jobs && !err) {
            s_job_t *j = &r.job[next++];
            if (!j->skipped) {
                err = s_submit(&r, j);
            }
        }
        if (err) {
            fprintf(stderr, "zexec run: cannot submit: %s\n", zx_strerror(err));
            break;
        }
        /* wait for completions; wake now and then for the progress display
           and a Ctrl-C */
        pthread_mutex_lock(&r.lock);
        if (zlist_size(r.completed) == 0) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 200 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&r.cond, &r.lock, &ts);
        }
        zlist_t *batch = r.completed;
        r.completed = zlist_new();
        pthread_mutex_unlock(&r.lock);
        for (s_job_t *j = zlist_first(batch); j; j = zlist_next(batch)) {
            s_complete(&r, j);
        }
        zlist_destroy(&batch);
        zxc_progress_update(r.prog, r.ndone, r.nfailed);
    }
    if (s_interrupted || err) {
        /* stop what is still out there: queued tasks never run, running
           commands are killed */
        for (size_t i = 0; i < r.njobs; i++) {
            if (r.job[i].f && !zx_future_done(r.job[i].f)) {
                zx_future_terminate(r.job[i].f);
            }
        }
    }
    zxc_progress_destroy(&r.prog);
    zx_executor_shutdown(r.ex, false, true);
    zx_executor_destroy(&r.ex);
    pthread_cond_destroy(&r.cond);
    pthread_mutex_destroy(&r.lock);
    int status;
    if (s_interrupted) {
        fprintf(stderr, "zexec run: interrupted: %zu of %zu jobs done, %zu failed\n", r.ndone,
                to_run, r.nfailed);
        status = 130;
    } else if (err) {
        status = S_EXIT_ERROR;
    } else {
        status = r.nfailed > S_MAX_FAILED_EXIT ? S_MAX_FAILED_EXIT : (int)r.nfailed;
    }
    s_free(&r);
    return status;
}
