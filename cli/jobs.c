/*  jobs.c - the detached-job subcommands: `zexec jobs` (what the broker
    holds, with progress), `zexec results JOB` (a job's results as JSON lines
    or in run's output format) and `zexec cancel JOB`. A job is made by
    `zexec run --detach` or `zexec submit --detach` (zxc_detach, conn.c).

    results prints each result, then acknowledges it (zx_job_next does at
    its next call; in input order, zx_job_ack once printed), so a results
    command killed midway loses nothing: the next one prints what was not
    acknowledged, some results perhaps twice (at-least-once).
*/
#include "zxc.h"
#include "zx_parse.h"

#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define S_EXIT_ERROR 255
#define S_MAX_FAILED_EXIT 101

/* ---- shared ------------------------------------------------------------------- */

/* The broker must answer before anything else (a clear message, not a
   ten-second wait). 0, or the exit status. */
static int s_probe(const zxc_conn_t *conn, const char *cmd)
{
    char err[512];
    if (zxc_probe(conn, conn->timeout, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "zexec %s: %s\n", cmd, err);
        return S_EXIT_ERROR;
    }
    return 0;
}

static zx_job_t *s_attach(const zxc_conn_t *conn, const char *cmd, const char *id)
{
    zx_options_t o = zxc_job_options(conn, cmd);
    zx_job_t *job = zx_job_attach(conn->broker, id, &o);
    if (!job) {
        int e = zx_last_error();
        if (e == ZX_ENOJOB) {
            fprintf(stderr,
                    "zexec %s: the broker at %s holds no job %s (every result already "
                    "fetched, expired, or never there)\n",
                    cmd, conn->broker, id);
        } else {
            fprintf(stderr, "zexec %s: cannot attach to job %s at %s: %s\n", cmd, id, conn->broker,
                    zx_strerror(e));
        }
    }
    return job;
}

static bool s_valid_id(const char *id)
{
    if (strlen(id) != ZX_JOB_ID_LEN) {
        return false;
    }
    for (const char *p = id; *p; p++) {
        if (!strchr("0123456789abcdefABCDEF", *p)) {
            return false;
        }
    }
    return true;
}

/* The one job id operand of `zexec CMD [flags] JOB` after getopt: 0 with
 *id set, or the usage error's exit status. */
static int s_job_operand(const char *cmd, int argc, char **argv, const char **id)
{
    if (optind >= argc) {
        return zxc_usage_error(cmd, "missing the job id (zexec jobs lists them)");
    }
    if (argc - optind > 1) {
        return zxc_usage_error(cmd, "one job at a time");
    }
    *id = argv[optind];
    if (!s_valid_id(*id)) {
        return zxc_usage_error(cmd, "invalid job id '%s': %d hex digits", *id, ZX_JOB_ID_LEN);
    }
    return 0;
}

static json_t *s_info_json(const zx_job_info_t *i)
{
    return json_pack(
        "{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "id", i->id,
        "name", i->name, "state", i->state, "submitted", (json_int_t)i->submitted, "queued",
        (json_int_t)i->queued, "running", (json_int_t)i->running, "done", (json_int_t)i->done,
        "failed", (json_int_t)i->failed, "held", (json_int_t)i->held, "held_bytes",
        (json_int_t)i->held_bytes, "acked", (json_int_t)i->acked, "next", (json_int_t)i->next,
        "created", (json_int_t)i->created, "expires", (json_int_t)i->expires);
}

/* ---- zexec jobs ------------------------------------------------------------------ */

static void s_jobs_usage(FILE *out)
{
    fprintf(out, "usage: zexec jobs [OPTIONS]\n"
                 "Lists the detached jobs the broker holds (zexec run --detach, zexec submit\n"
                 "--detach) with their progress: tasks submitted, done (of which failed),\n"
                 "queued, running, results held for fetching, and when they expire.\n"
                 "\n" ZXC_CONN_HELP
                 "  --json               one JSON array of the jobs instead of a table\n"
                 "  -h, --help           this text\n");
}

int zxc_jobs_main(int argc, char **argv)
{
    static const struct option longopts[] = {ZXC_CONN_OPTIONS,
                                             {"json", no_argument, NULL, 'j'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    zxc_conn_t conn;
    zxc_conn_init(&conn);
    bool as_json = false;
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (zxc_conn_flag(&conn, opt, optarg)) {
            continue;
        }
        switch (opt) {
        case 'h': s_jobs_usage(stdout); return 0;
        case 'j': as_json = true; break;
        default: return zxc_bad_flag("jobs", argc, argv);
        }
    }
    if (optind < argc) {
        return zxc_usage_error("jobs", "unexpected argument '%s'", argv[optind]);
    }
    int st = s_probe(&conn, "jobs");
    if (st) {
        return st;
    }
    zx_options_t o = zxc_job_options(&conn, "jobs");
    zx_job_info_t *v = NULL;
    size_t n = 0;
    int rc = zx_jobs_list(conn.broker, &o, ZX_FOREVER, &v, &n);
    if (rc != ZX_OK) {
        fprintf(stderr, "zexec jobs: %s: %s\n", conn.broker, zx_strerror(rc));
        return S_EXIT_ERROR;
    }
    if (as_json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++) {
            json_array_append_new(arr, s_info_json(&v[i]));
        }
        zxc_json_print(stdout, arr);
        putchar('\n');
        json_decref(arr);
    } else if (n == 0) {
        printf("no jobs\n");
    } else {
        printf("%-32s  %-16s  %-9s  %9s  %9s  %7s  %8s  %8s  %9s  %s\n", "ID", "NAME", "STATE",
               "SUBMITTED", "DONE", "FAILED", "QUEUED", "RUNNING", "HELD", "EXPIRES");
        for (size_t i = 0; i < n; i++) {
            char exp[32] = "-";
            time_t t = (time_t)v[i].expires;
            struct tm tm;
            if (v[i].expires > 0 && localtime_r(&t, &tm)) {
                strftime(exp, sizeof exp, "%Y-%m-%d %H:%M", &tm);
            }
            printf("%-32s  %-16.16s  %-9s  %9llu  %9llu  %7llu  %8llu  %8llu  %9llu  %s\n", v[i].id,
                   v[i].name, v[i].state, (unsigned long long)v[i].submitted,
                   (unsigned long long)v[i].done, (unsigned long long)v[i].failed,
                   (unsigned long long)v[i].queued, (unsigned long long)v[i].running,
                   (unsigned long long)v[i].held, exp);
        }
    }
    free(v);
    return fflush(stdout) == 0 ? 0 : ZXC_EXIT_FAIL;
}

/* ---- zexec results ---------------------------------------------------------------- */

/* A result copied out of zx_job_next (whose pointers live until its next
   call), for printing now or later (input order). */
typedef struct {
    uint64_t seq;
    int status;
    void *value;
    size_t len;
    zx_error_t error; /* strings malloc'd */
    char *node;
    int pid, attempts;
} s_res_t;

static char *s_dup(const char *s)
{
    return strdup(s ? s : "");
}

static s_res_t *s_res_copy(const zx_job_result_t *r)
{
    s_res_t *c = calloc(1, sizeof *c);
    if (!c) {
        return NULL;
    }
    c->seq = r->seq;
    c->status = r->status;
    c->pid = r->pid;
    c->attempts = r->attempts;
    c->node = s_dup(r->node);
    if (r->value_len) {
        c->value = malloc(r->value_len);
        if (c->value) {
            memcpy(c->value, r->value, r->value_len);
            c->len = r->value_len;
        }
    }
    if (r->error) {
        c->error = *r->error;
        c->error.type = s_dup(r->error->type);
        c->error.message = s_dup(r->error->message);
        c->error.traceback = s_dup(r->error->traceback);
        c->error.node = s_dup(r->error->node);
    }
    return c;
}

static void s_res_free(s_res_t **c_p)
{
    s_res_t *c = *c_p;
    if (!c) {
        return;
    }
    *c_p = NULL;
    free(c->value);
    free(c->node);
    free((char *)c->error.type);
    free((char *)c->error.message);
    free((char *)c->error.traceback);
    free((char *)c->error.node);
    free(c);
}

static const char *s_status_name(int status)
{
    switch (status) {
    case ZX_OK: return "ok";
    case ZX_ERAISED: return "raised";
    case ZX_ENOFUNC: return "nofunc";
    case ZX_ETIMELIMIT: return "timelimit";
    case ZX_ECRASHED: return "crashed";
    case ZX_EWORKERLOST: return "workerlost";
    case ZX_ECANCELLED: return "cancelled";
    case ZX_EREJECTED: return "rejected";
    case ZX_EMEMORY: return "memory";
    case ZX_ENOTALLOWED: return "notallowed";
    default: return "error";
    }
}

typedef struct {
    bool run_format;
    size_t printed, failed;
    bool closed; /* stdout is gone */
} s_out_t;

/* Prints one result; false when stdout is closed. */
static bool s_print(s_out_t *o, const s_res_t *c)
{
    if (o->run_format) {
        zxc_exec_t x = {0};
        if (c->status == ZX_OK) {
            zxc_exec_decode(&x, c->value, c->len);
        } else {
            zxc_exec_failed(&x, &c->error);
        }
        char label[64];
        snprintf(label, sizeof label, "job %llu", (unsigned long long)c->seq);
        const char *node = c->status == ZX_OK ? c->node : c->error.node;
        zxc_exec_note(&x, "results", label, c->status, c->status == ZX_OK ? NULL : &c->error, node,
                      c->attempts > 0 ? c->attempts : 1, 0, 0);
        bool ok = zxc_write(stdout, x.out, x.out_len, NULL);
        if (x.err_len) {
            zxc_write(stderr, x.err, x.err_len, NULL);
        }
        o->failed += !x.ok;
        zxc_exec_clear(&x);
        o->printed += ok;
        return ok;
    }
    json_t *j = json_object();
    json_object_set_new(j, "seq", json_integer((json_int_t)c->seq));
    json_object_set_new(j, "status", json_string(s_status_name(c->status)));
    if (c->status == ZX_OK) {
        json_t *v = zxc_mp_buf_to_json(c->value, c->len);
        json_object_set_new(j, "value", v ? v : json_null());
    } else {
        json_object_set_new(j, "error",
                            json_pack("{s:s, s:s, s:s}", "type", c->error.type, "message",
                                      c->error.message, "traceback", c->error.traceback));
        o->failed++;
    }
    json_object_set_new(j, "node", json_string(c->status == ZX_OK ? c->node : c->error.node));
    json_object_set_new(j, "pid",
                        json_integer(c->status == ZX_OK ? c->pid : (json_int_t)c->error.pid));
    zxc_json_print(stdout, j);
    json_decref(j);
    bool ok = putchar('\n') != EOF && fflush(stdout) == 0;
    o->printed += ok;
    return ok;
}

static void s_results_usage(FILE *out)
{
    fprintf(out,
            "usage: zexec results [OPTIONS] JOB\n"
            "Prints the results of a detached job (zexec run --detach, zexec submit --detach)\n"
            "as they complete, from any host, and acknowledges each one after printing it:\n"
            "the broker then forgets it. Interrupted, it loses nothing: run it again to get\n"
            "the rest (a result printed just before the interruption may come again).\n"
            "\n" ZXC_CONN_HELP
            "  --order ORDER        completed (default: as results arrive) or input (by task\n"
            "                       number; results are held back until those before them\n"
            "                       are printed)\n"
            "  --format FORMAT      json (default): one line per result, {\"seq\", \"status\",\n"
            "                       \"value\" or \"error\", \"node\", \"pid\"}; run: the output\n"
            "                       'zexec run' would have printed (stdout and stderr of each\n"
            "                       command) for a job of 'zexec run --detach'\n"
            "  --wait               wait until the job is finished (default)\n"
            "  --no-wait            print what is there now and stop\n"
            "  -h, --help           this text\n"
            "\n"
            "Exit status: 0 if every printed result succeeded, else the number that failed\n"
            "(at most 101); 255 if the job or the broker cannot be reached; 128+signal after\n"
            "Ctrl-C or SIGTERM.\n");
}

typedef struct {
    pthread_mutex_t lock;
    int sig;
} s_stop_t;

static void s_on_signal(int sig, int count, void *arg)
{
    s_stop_t *st = arg;
    if (count > 1) {
        _exit(128 + sig);
    }
    pthread_mutex_lock(&st->lock);
    st->sig = sig;
    pthread_mutex_unlock(&st->lock);
}

static int s_stopped(s_stop_t *st)
{
    pthread_mutex_lock(&st->lock);
    int sig = st->sig;
    pthread_mutex_unlock(&st->lock);
    return sig;
}

/* Input order: results by seq; printed (and acknowledged) from next on
   while there is no gap, the rest when no more results can come. */
typedef struct {
    s_res_t **v; /* by seq */
    size_t cap;
    uint64_t next;
    size_t held;
} s_order_t;

static int s_order_put(s_order_t *o, s_res_t *c)
{
    if (c->seq >= o->cap) {
        size_t nc = o->cap ? o->cap : 256;
        while (nc <= c->seq) {
            nc *= 2;
        }
        s_res_t **nv = realloc(o->v, nc * sizeof *nv);
        if (!nv) {
            return -1;
        }
        memset(nv + o->cap, 0, (nc - o->cap) * sizeof *nv);
        o->v = nv;
        o->cap = nc;
    }
    if (o->v[c->seq]) {
        s_res_free(&o->v[c->seq]); /* the same result again: one is enough */
        o->held--;
    }
    o->v[c->seq] = c;
    o->held++;
    return 0;
}

/* Prints held results in seq order: from o->next while there is no gap, or
   all of them (all). false when stdout is closed. */
static bool s_order_flush(s_order_t *o, s_out_t *out, zx_job_t *job, bool all)
{
    for (uint64_t s = o->next; s < o->cap && o->held > 0; s++) {
        if (!o->v[s]) {
            if (!all) {
                break;
            }
            continue;
        }
        if (!s_print(out, o->v[s])) {
            return false;
        }
        zx_job_ack(job, s);
        s_res_free(&o->v[s]);
        o->held--;
        if (!all || s == o->next) {
            o->next = s + 1;
        }
    }
    return true;
}

int zxc_results_main(int argc, char **argv)
{
    static const struct option longopts[] = {ZXC_CONN_OPTIONS,
                                             {"order", required_argument, NULL, 'o'},
                                             {"format", required_argument, NULL, 'f'},
                                             {"wait", no_argument, NULL, 'w'},
                                             {"no-wait", no_argument, NULL, 'W'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    zxc_conn_t conn;
    zxc_conn_init(&conn);
    bool input_order = false, wait = true;
    s_out_t out = {0};
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (zxc_conn_flag(&conn, opt, optarg)) {
            continue;
        }
        switch (opt) {
        case 'h': s_results_usage(stdout); return 0;
        case 'o':
            if (strcmp(optarg, "input") == 0) {
                input_order = true;
            } else if (strcmp(optarg, "completed") == 0) {
                input_order = false;
            } else {
                return zxc_usage_error("results", "invalid --order '%s': input or completed",
                                       optarg);
            }
            break;
        case 'f':
            if (strcmp(optarg, "run") == 0) {
                out.run_format = true;
            } else if (strcmp(optarg, "json") == 0) {
                out.run_format = false;
            } else {
                return zxc_usage_error("results", "invalid --format '%s': json or run", optarg);
            }
            break;
        case 'w': wait = true; break;
        case 'W': wait = false; break;
        default: return zxc_bad_flag("results", argc, argv);
        }
    }
    const char *id;
    int st = s_job_operand("results", argc, argv, &id);
    if (st) {
        return st;
    }
    st = s_probe(&conn, "results");
    if (st) {
        return st;
    }
    s_stop_t stop = {.sig = 0};
    pthread_mutex_init(&stop.lock, NULL);
    zxc_signals_block();
    zx_job_t *job = s_attach(&conn, "results", id);
    if (!job) {
        pthread_mutex_destroy(&stop.lock);
        return S_EXIT_ERROR;
    }
    zxc_signals_start(s_on_signal, &stop);
    s_order_t order = {.next = 1};
    if (input_order) {
        zx_job_autoack(job, false);
    }
    int status = 0;
    for (;;) {
        if (s_stopped(&stop)) {
            break;
        }
        zx_job_result_t r;
        /* short waits: a signal is seen within half a second */
        int rc = zx_job_next(job, wait ? 0.5 : 0, &r);
        if (rc == ZX_ETIMEOUT) {
            if (!wait) {
                break;
            }
            continue;
        }
        if (rc == ZX_EDONE) {
            break;
        }
        if (rc != ZX_OK) {
            fprintf(stderr, "zexec results: job %s at %s: %s\n", id, conn.broker, zx_strerror(rc));
            status = S_EXIT_ERROR;
            break;
        }
        s_res_t *c = s_res_copy(&r);
        if (!c) {
            fprintf(stderr, "zexec results: out of memory\n");
            status = S_EXIT_ERROR;
            break;
        }
        bool ok;
        if (input_order) {
            ok = s_order_put(&order, c) == 0 && s_order_flush(&order, &out, job, false);
        } else {
            ok = s_print(&out, c);
            s_res_free(&c);
        }
        if (!ok) {
            out.closed = true;
            break;
        }
    }
    int sig = s_stopped(&stop);
    if (input_order && !sig && !out.closed && status == 0 &&
        !s_order_flush(&order, &out, job, true)) {
        out.closed = true;
    }
    for (size_t s = 0; s < order.cap; s++) {
        s_res_free(&order.v[s]);
    }
    free(order.v);
    zx_job_destroy(&job); /* acknowledges the last result printed */
    zxc_signals_stop();
    pthread_mutex_destroy(&stop.lock);
    if (sig) {
        return 128 + sig;
    }
    if (out.closed) {
        return 128 + SIGPIPE;
    }
    if (status) {
        return status;
    }
    return out.failed > S_MAX_FAILED_EXIT ? S_MAX_FAILED_EXIT : (int)out.failed;
}

/* ---- zexec cancel ------------------------------------------------------------------ */

static void s_cancel_usage(FILE *out)
{
    fprintf(out, "usage: zexec cancel [OPTIONS] JOB\n"
                 "Cancels a detached job: its queued tasks are dropped and its running ones\n"
                 "stopped. Results already there stay at the broker for 'zexec results JOB'.\n"
                 "\n" ZXC_CONN_HELP "  -h, --help           this text\n");
}

int zxc_cancel_main(int argc, char **argv)
{
    static const struct option longopts[] = {
        ZXC_CONN_OPTIONS, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    zxc_conn_t conn;
    zxc_conn_init(&conn);
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (zxc_conn_flag(&conn, opt, optarg)) {
            continue;
        }
        switch (opt) {
        case 'h': s_cancel_usage(stdout); return 0;
        default: return zxc_bad_flag("cancel", argc, argv);
        }
    }
    const char *id;
    int st = s_job_operand("cancel", argc, argv, &id);
    if (st) {
        return st;
    }
    st = s_probe(&conn, "cancel");
    if (st) {
        return st;
    }
    zx_job_t *job = s_attach(&conn, "cancel", id);
    if (!job) {
        return S_EXIT_ERROR;
    }
    int rc = zx_job_cancel(job, 10.0);
    zx_job_info_t info;
    if (rc == ZX_OK && zx_job_info(job, 10.0, &info) == ZX_OK) {
        printf("job %s cancelled: %llu of %llu tasks done, %llu results held (zexec results %s)\n",
               id, (unsigned long long)info.done, (unsigned long long)info.submitted,
               (unsigned long long)info.held, id);
    } else if (rc == ZX_OK) {
        printf("job %s cancelled\n", id);
    } else {
        fprintf(stderr, "zexec cancel: job %s at %s: %s\n", id, conn.broker, zx_strerror(rc));
    }
    zx_job_destroy(&job);
    return rc == ZX_OK ? 0 : S_EXIT_ERROR;
}
