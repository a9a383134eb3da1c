/*  run.c - `zexec run`: GNU parallel across the cluster. One `exec` task per
    job (the workers' built-in, --allow-exec, process pool), the command
    line's replacement strings filled in per job, at most --jobs tasks in
    flight. Completions arrive through done-callbacks on the executor's I/O
    thread and are queued to the main thread, which prints, logs, retries
    and refills the window: the I/O thread never waits on our stdout.

    Nothing a job wrote is lost: exec runs with check=false, so a job that
    exits non-zero or times out still returns its stdout and stderr (up to
    --max-output each), printed to our stdout and stderr as they are. A job
    is "delivered" once its output has been written; only delivered jobs get
    a job-log row, so --resume re-runs whatever was not (a -k job held back
    for ordering when the run stopped, a job whose output met a closed pipe).

    Stopping (Ctrl-C, SIGTERM, a closed stdout, --halt now): first every
    queued task is cancelled at the broker in one batch (shutdown with
    cancel_futures: the broker sees those CANCELs before anything else, so
    no slot freed below can start a queued task), then the running ones are
    terminated, then the executor is destroyed, which says BYE.
*/
#include "zxc.h"
#include "zx_parse.h"

#include <czmq.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <regex.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#define S_DEFAULT_JOBS 256
#define S_MAX_FAILED_EXIT 101
#define S_EXIT_ERROR 255 /* could not run at all (broker unreachable, bad input file) */
#define S_DEFAULT_MAX_OUTPUT (1u << 20)
#define S_MAX_MAX_OUTPUT (32u << 20) /* the worker's own bound */

typedef struct s_run s_run_t;

typedef enum {
    S_J_WAIT,      /* not submitted yet */
    S_J_FLIGHT,    /* submitted */
    S_J_DONE,      /* finished, output held (-k) */
    S_J_DELIVERED, /* output written, logged */
    S_J_DROPPED,   /* cancelled, terminated, or its output could not be written */
    S_J_SKIPPED    /* --resume: succeeded in an earlier run */
} s_jstate_t;

typedef struct {
    s_run_t *run;
    size_t seq; /* 1-based, {#} */
    char **args;
    size_t nargs;
    char *input; /* the arguments joined by spaces: log, --tag, messages */
    s_jstate_t state;
    int submits;  /* ours: the first and each --retries re-run */
    int attempts; /* runs: submits, plus the broker's re-runs after lost workers */
    size_t slot;  /* {%}, 1-based, while in flight */
    zx_future_t *f;
    /* the outcome; its output kept only until delivered (--keep-order holds it back) */
    zxc_exec_t x;
    double sub_time; /* when submitted (epoch), if the worker does not say */
    int64_t sub_ms;
    char *node;
    size_t received; /* bytes the command wrote (kept), for parallel's log */
} s_job_t;

/* One piece of a command-line word: literal text or a replacement string. */
typedef enum { S_SEG_LIT, S_SEG_ALL, S_SEG_POS, S_SEG_SEQ, S_SEG_SLOT } s_segkind_t;
typedef enum { S_MOD_NONE, S_MOD_NOEXT, S_MOD_BASE, S_MOD_DIR, S_MOD_BASE_NOEXT } s_mod_t;
typedef struct {
    s_segkind_t kind;
    s_mod_t mod;
    size_t pos; /* S_SEG_POS: 1-based */
    const char *lit;
    size_t lit_len;
} s_seg_t;
typedef struct {
    s_seg_t *seg;
    size_t n;
} s_word_t;

/* An input source: ::: values, a :::: file, or stdin; linked (:::+, ::::+)
   to the one before it. */
typedef struct {
    char **v;
    size_t n, cap;
    bool linked;
} s_src_t;

typedef enum { S_HALT_NEVER, S_HALT_SOON, S_HALT_NOW } s_halt_when_t;
typedef enum { S_HALT_FAIL, S_HALT_SUCCESS, S_HALT_DONE } s_halt_kind_t;

struct s_run {
    /* flags */
    long jobs, retries, nper;
    bool nper_set;
    double timeout;
    size_t max_output;
    const char *joblog_path;
    bool parallel_log;
    bool resume, keep_order, quiet, tag, bar;
    bool detach; /* --detach: submit every job as a detached job, print its id, leave */
    const char *wd;
    char *wd_abs;
    zlist_t *env; /* "NAME=VALUE" */
    regex_t colsep;
    bool has_colsep;
    s_halt_when_t halt_when;
    s_halt_kind_t halt_kind;
    long halt_count;
    double halt_pct;
    char **tmpl; /* the command line template */
    int tmpl_n;
    s_word_t *words;
    bool has_placeholder;
    /* state */
    s_job_t *job;
    size_t njobs, jcap;
    FILE *joblog;
    zhashx_t *succeeded; /* "seq\tkey" of succeeded jobs in the old log (--resume) */
    zx_executor_t *ex;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    zlist_t *completed; /* s_job_t*, pushed by done-callbacks */
    int signal;         /* under lock: the signal that asks us to stop */
    size_t *free_slots, nfree, slots_made;
    size_t nsucceeded, nfailed, ndone, inflight, next_print, dropped_held;
    s_halt_when_t halting;
    int halt_exit;
    bool stopping;    /* no more submits or retries */
    bool stopped_now; /* queued cancelled, running terminated */
    int stop_sig;     /* what stopped us: a signal, SIGPIPE, or 0 */
    bool exec_refused;
    zxc_progress_t *prog;
};

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: zexec run [OPTIONS] [--] COMMAND [ARG...] ::: INPUT... [::: INPUT...]\n"
            "       zexec run [OPTIONS] [--] COMMAND [ARG...] :::: FILE...\n"
            "       zexec run [OPTIONS] [--] COMMAND [ARG...] < INPUTS\n"
            "Runs COMMAND once per input on the cluster's workers (they need --allow-exec),\n"
            "as GNU parallel does on one machine. Inputs come after ':::', from the files\n"
            "after '::::' ('-' is stdin), or from stdin, one per line. Several sources\n"
            "combine every way (the first varies slowest); ':::+' and '::::+' link a\n"
            "source to the one before it instead (the n-th value with the n-th).\n"
            "In the command line:\n"
            "  {}    the input          {.}   the input without its extension\n"
            "  {/}   its basename       {//}  its directory       {/.}  basename, no extension\n"
            "  {N}   the N-th argument (source or column), also {N.} {N/} {N//} {N/.}\n"
            "  {#}   the job number (1, 2, ...)      {%%}  the job slot (1..--jobs)\n"
            "With none of these the arguments are appended. Arguments go to the command as\n"
            "they are, with no shell: use sh -c '...' for pipes.\n"
            "\n" ZXC_CONN_HELP
            "  -j, --jobs N         at most N jobs in flight (default %d; the workers'\n"
            "                       process pools decide how many run at once)\n"
            "  -n, --max-args N     N inputs per command line ({} is all of them)\n"
            "  -N N                 as -n; -N0 runs once per input, inserting none\n"
            "  --colsep REGEX       split each input into columns {1} {2} ...\n"
            "  --wd DIR             run in DIR on the worker; '...' is this directory\n"
            "                       (for workers that share this file system)\n"
            "  --env NAME[=VALUE]   set NAME in the commands' environment (default: its\n"
            "                       value here); repeatable\n"
            "  --retries N          re-run a failed job up to N more times (default 0)\n"
            "  --timeout S          kill a job's command after S seconds (exit 124 in the log)\n"
            "  --max-output BYTES   keep at most this much of each job's stdout and of its\n"
            "                       stderr (K, M suffixes; default 1M, at most 32M); a note\n"
            "                       on stderr says when more was dropped\n"
            "  --halt WHEN,WHAT=N   stop early: WHEN now (kill running jobs) or soon (let\n"
            "                       them finish), WHAT fail, success or done, N a count or\n"
            "                       a percentage (e.g. now,fail=1  soon,fail=10%%)\n"
            "  --tag                prefix every output line with the arguments and a tab\n"
            "  --joblog FILE        a TSV log: Seq Input Node Exitval Starttime Runtime Attempts\n"
            "  --joblog-format F    zexec (above, default) or parallel (GNU parallel's columns)\n"
            "  --resume             with --joblog: skip the jobs the log shows succeeded\n"
            "  -k, --keep-order     print outputs in input order (default: as jobs complete)\n"
            "  --bar                show the progress display (even with -q)\n"
            "  -q, --quiet          no progress display on stderr\n"
            "  --detach             submit every job as a detached job, print its id and\n"
            "                       leave; 'zexec results ID --format run' prints what run\n"
            "                       would have (not with -k, --tag, --retries, --halt,\n"
            "                       --joblog, --bar); Ctrl-C before the id is printed\n"
            "                       cancels the job\n"
            "  --job-name NAME      the detached job's name in 'zexec jobs'\n"
            "  -h, --help           this text\n"
            "\n"
            "Exit status: 0 if every job succeeded, else the number of failed jobs (at most\n"
            "101); with --halt on failures, the exit status of the job that halted it; 255\n"
            "if nothing could run (broker unreachable, unreadable input file); 128+signal\n"
            "after Ctrl-C (130), SIGTERM (143) or a closed stdout (141).\n"
            "Example: zexec run --wd ... -- gzip -9 {} ::: *.log\n",
            S_DEFAULT_JOBS);
}

/* ---- the command-line template -------------------------------------------------- */

/* Parses "{...}" at p (its length n, braces included) into seg. 1: a
   replacement string; 0: not one, literal text (e.g. awk's '{print $1}');
   -1: looks like one but is not known (an error). */
static int s_parse_token(const char *p, size_t n, s_seg_t *seg)
{
    const char *in = p + 1;
    size_t len = n - 2;
    memset(seg, 0, sizeof *seg);
    if (len >= 1 && in[0] == '=') {
        return -1; /* {= perl expression =} */
    }
    /* only these characters make a replacement string */
    for (size_t i = 0; i < len; i++) {
        if (!strchr("0123456789./#%+-", in[i])) {
            return 0;
        }
    }
    size_t i = 0;
    size_t pos = 0;
    while (i < len && in[i] >= '0' && in[i] <= '9') {
        pos = pos * 10 + (size_t)(in[i] - '0');
        if (pos > 1000000) {
            return -1;
        }
        i++;
    }
    const char *mod = in + i;
    size_t ml = len - i;
    if (i > 0 && pos == 0) {
        return -1;
    }
    seg->kind = i > 0 ? S_SEG_POS : S_SEG_ALL;
    seg->pos = pos;
    if (ml == 0) {
        seg->mod = S_MOD_NONE;
    } else if (ml == 1 && *mod == '.') {
        seg->mod = S_MOD_NOEXT;
    } else if (ml == 1 && *mod == '/') {
        seg->mod = S_MOD_BASE;
    } else if (ml == 2 && strncmp(mod, "//", 2) == 0) {
        seg->mod = S_MOD_DIR;
    } else if (ml == 2 && strncmp(mod, "/.", 2) == 0) {
        seg->mod = S_MOD_BASE_NOEXT;
    } else if (i == 0 && ml == 1 && *mod == '#') {
        seg->kind = S_SEG_SEQ;
    } else if (i == 0 && ml == 1 && *mod == '%') {
        seg->kind = S_SEG_SLOT;
    } else {
        return -1;
    }
    return 1;
}

/* Splits every template word into segments; a usage error for an unknown
   replacement string. */
static int s_parse_template(s_run_t *r)
{
    r->words = calloc((size_t)r->tmpl_n, sizeof *r->words);
    if (!r->words) {
        return -1;
    }
    for (int w = 0; w < r->tmpl_n; w++) {
        const char *t = r->tmpl[w];
        size_t tl = strlen(t);
        s_word_t *wd = &r->words[w];
        wd->seg = calloc(tl + 1, sizeof *wd->seg); /* never more segments than bytes */
        if (!wd->seg) {
            return -1;
        }
        const char *lit = t;
        const char *p = t;
        while (*p) {
            const char *close = *p == '{' ? strchr(p + 1, '}') : NULL;
            const char *open2 = close ? memchr(p + 1, '{', (size_t)(close - p - 1)) : NULL;
            s_seg_t seg;
            int k = close && !open2 ? s_parse_token(p, (size_t)(close - p + 1), &seg) : 0;
            if (k < 0) {
                return zxc_usage_error("run",
                                       "unknown replacement string '%.*s' in '%s' (known: {} {.} "
                                       "{/} {//} {/.} {#} {%%} and {N} {N.} {N/} {N//} {N/.})",
                                       (int)(close - p + 1), p, t);
            }
            if (k == 0) {
                p++;
                continue;
            }
            if (p > lit) {
                wd->seg[wd->n++] =
                    (s_seg_t){.kind = S_SEG_LIT, .lit = lit, .lit_len = (size_t)(p - lit)};
            }
            wd->seg[wd->n++] = seg;
            r->has_placeholder = true;
            p = close + 1;
            lit = p;
        }
        if (p > lit) {
            wd->seg[wd->n++] =
                (s_seg_t){.kind = S_SEG_LIT, .lit = lit, .lit_len = (size_t)(p - lit)};
        }
    }
    return 0;
}

/* The largest {N} in the template (0: none). */
static size_t s_max_pos(const s_run_t *r)
{
    size_t m = 0;
    for (int w = 0; w < r->tmpl_n; w++) {
        for (size_t i = 0; i < r->words[w].n; i++) {
            if (r->words[w].seg[i].kind == S_SEG_POS && r->words[w].seg[i].pos > m) {
                m = r->words[w].seg[i].pos;
            }
        }
    }
    return m;
}

/* One argument with a modifier applied, into sb. */
static void s_put_arg(zchunk_t *sb, const char *in, s_mod_t mod)
{
    const char *slash = strrchr(in, '/');
    const char *base = slash ? slash + 1 : in;
    const char *dot = strrchr(base, '.');
    size_t base_noext = dot && dot != base ? (size_t)(dot - base) : strlen(base);
    size_t in_noext = (size_t)(base - in) + base_noext;
    switch (mod) {
    case S_MOD_NONE: zchunk_extend(sb, in, strlen(in)); break;
    case S_MOD_NOEXT: zchunk_extend(sb, in, in_noext); break;
    case S_MOD_BASE: zchunk_extend(sb, base, strlen(base)); break;
    case S_MOD_BASE_NOEXT: zchunk_extend(sb, base, base_noext); break;
    case S_MOD_DIR:
        if (!slash) {
            zchunk_extend(sb, ".", 1);
        } else {
            zchunk_extend(sb, in, slash == in ? 1 : (size_t)(slash - in));
        }
        break;
    }
}

static void s_pack_chunk(msgpack_packer *pk, zchunk_t *sb)
{
    msgpack_pack_str(pk, zchunk_size(sb));
    msgpack_pack_str_body(pk, zchunk_data(sb), zchunk_size(sb));
}

/* How many argv words word w makes for job j: a word that is only {} (or
   {.} ...) makes one per argument, as parallel's quoting does; any other
   word makes one. */
static size_t s_word_count(const s_word_t *w, const s_job_t *j)
{
    if (w->n == 1 && w->seg[0].kind == S_SEG_ALL) {
        return j->nargs;
    }
    return 1;
}

/* Packs word w for job j (s_word_count strings). */
static void s_pack_word(msgpack_packer *pk, zchunk_t *sb, const s_word_t *w, const s_job_t *j)
{
    char num[32];
    if (w->n == 1 && w->seg[0].kind == S_SEG_ALL) {
        for (size_t a = 0; a < j->nargs; a++) {
            zchunk_set(sb, NULL, 0);
            s_put_arg(sb, j->args[a], w->seg[0].mod);
            s_pack_chunk(pk, sb);
        }
        return;
    }
    zchunk_set(sb, NULL, 0);
    for (size_t i = 0; i < w->n; i++) {
        const s_seg_t *s = &w->seg[i];
        switch (s->kind) {
        case S_SEG_LIT: zchunk_extend(sb, s->lit, s->lit_len); break;
        case S_SEG_ALL:
            for (size_t a = 0; a < j->nargs; a++) {
                if (a) {
                    zchunk_extend(sb, " ", 1);
                }
                s_put_arg(sb, j->args[a], s->mod);
            }
            break;
        case S_SEG_POS:
            if (s->pos <= j->nargs) {
                s_put_arg(sb, j->args[s->pos - 1], s->mod);
            }
            break;
        case S_SEG_SEQ:
            snprintf(num, sizeof num, "%zu", j->seq);
            zchunk_extend(sb, num, strlen(num));
            break;
        case S_SEG_SLOT:
            snprintf(num, sizeof num, "%zu", j->slot);
            zchunk_extend(sb, num, strlen(num));
            break;
        }
    }
    s_pack_chunk(pk, sb);
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

/* The command line as GNU parallel's log shows it: words joined by spaces,
   a word with anything but [A-Za-z0-9_./=:,+-] single-quoted. */
static char *s_command_line(s_run_t *r, s_job_t *j)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    zchunk_t *tmp = zchunk_new(NULL, 256);
    for (int w = 0; w < r->tmpl_n; w++) {
        s_pack_word(&pk, tmp, &r->words[w], j);
    }
    zchunk_destroy(&tmp);
    zchunk_t *line = zchunk_new(NULL, 256);
    size_t off = 0;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    bool first = true;
    while (msgpack_unpack_next(&u, sb.data, sb.size, &off) == MSGPACK_UNPACK_SUCCESS) {
        const char *p = u.data.via.str.ptr;
        size_t n = u.data.via.str.size;
        if (!first) {
            zchunk_extend(line, " ", 1);
        }
        first = false;
        bool plain = n > 0;
        for (size_t i = 0; i < n && plain; i++) {
            plain = strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./=:,+-",
                           p[i]) != NULL &&
                    p[i];
        }
        if (plain) {
            zchunk_extend(line, p, n);
        } else {
            zchunk_extend(line, "'", 1);
            for (size_t i = 0; i < n; i++) {
                if (p[i] == '\'') {
                    zchunk_extend(line, "'\\''", 4);
                } else {
                    zchunk_extend(line, &p[i], 1);
                }
            }
            zchunk_extend(line, "'", 1);
        }
    }
    if (!r->has_placeholder) {
        for (size_t a = 0; a < j->nargs; a++) {
            zchunk_extend(line, " ", 1);
            zchunk_extend(line, j->args[a], strlen(j->args[a]));
        }
    }
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&sb);
    char *s = strndup((const char *)zchunk_data(line), zchunk_size(line));
    zchunk_destroy(&line);
    char *e = s ? s_escape(s) : NULL;
    free(s);
    return e;
}

/* The key --resume matches a job by: its number and its input (zexec log)
   or its command line (parallel's log). */
static char *s_key(s_run_t *r, s_job_t *j)
{
    char *what = r->parallel_log ? s_command_line(r, j) : s_escape(j->input);
    char *k = NULL;
    if (what && asprintf(&k, "%zu\t%s", j->seq, what) < 0) {
        k = NULL;
    }
    free(what);
    return k;
}

/* Reads an existing job log: the jobs that succeeded. */
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
        char *fields[9];
        int nf = 0;
        /* strtok_r would merge empty fields; the input may be empty */
        char *p = line;
        while (nf < 9) {
            fields[nf++] = p;
            char *tab = strchr(p, '\t');
            if (!tab) {
                break;
            }
            *tab = 0;
            p = tab + 1;
        }
        if (strcmp(fields[0], "Seq") == 0) {
            continue;
        }
        const char *key;
        if (r->parallel_log) {
            /* Seq Host Starttime JobRuntime Send Receive Exitval Signal Command */
            if (nf < 9 || strcmp(fields[6], "0") != 0 || strcmp(fields[7], "0") != 0) {
                continue;
            }
            key = fields[8];
        } else {
            if (nf < 4 || strcmp(fields[3], "0") != 0) {
                continue;
            }
            key = fields[1];
        }
        char *end;
        unsigned long long seq = strtoull(fields[0], &end, 10);
        if (*end || seq == 0) {
            continue;
        }
        char *k = NULL;
        if (asprintf(&k, "%llu\t%s", seq, key) >= 0) {
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
    const char *node = j->node && *j->node ? j->node : "-";
    if (r->parallel_log) {
        char *cmd = s_command_line(r, j);
        fprintf(r->joblog, "%zu\t%s\t%.3f\t%.3f\t%d\t%zu\t%d\t%d\t%s\n", j->seq, node, j->x.start,
                j->x.runtime, 0, j->received, j->x.exitval, j->x.sig, cmd ? cmd : "?");
        free(cmd);
    } else {
        char *in = s_escape(j->input);
        fprintf(r->joblog, "%zu\t%s\t%s\t%d\t%.3f\t%.3f\t%d\n", j->seq, in ? in : "?", node,
                j->x.exit_code, j->x.start, j->x.runtime, j->attempts);
        free(in);
    }
    /* flushed per job: --resume after a crash must see every delivered job */
    fflush(r->joblog);
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

static void s_on_signal(int sig, int count, void *arg)
{
    s_run_t *r = arg;
    if (count > 1) {
        fprintf(stderr, "zexec run: %s again: leaving without waiting\n", strsignal(sig));
        _exit(128 + sig);
    }
    pthread_mutex_lock(&r->lock);
    if (!r->signal) {
        r->signal = sig;
    }
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
    fprintf(stderr,
            "zexec run: %s: cancelling queued jobs, stopping running ones (again to leave at "
            "once)\n",
            strsignal(sig));
}

static void s_pack_key(msgpack_packer *pk, const char *k)
{
    msgpack_pack_str(pk, strlen(k));
    msgpack_pack_str_body(pk, k, strlen(k));
}

static size_t s_slot_take(s_run_t *r)
{
    if (r->nfree) {
        return r->free_slots[--r->nfree];
    }
    return ++r->slots_made;
}

static void s_slot_give(s_run_t *r, size_t slot)
{
    if (slot) {
        r->free_slots[r->nfree++] = slot;
    }
}

static int s_submit(s_run_t *r, s_job_t *j)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    zchunk_t *tmp = zchunk_new(NULL, 256);
    if (!j->slot) {
        j->slot = s_slot_take(r);
    }
    size_t nw = 0;
    for (int i = 0; i < r->tmpl_n; i++) {
        nw += s_word_count(&r->words[i], j);
    }
    if (!r->has_placeholder) {
        nw += j->nargs;
    }
    msgpack_pack_array(&pk, 2);
    msgpack_pack_array(&pk, nw);
    for (int i = 0; i < r->tmpl_n; i++) {
        s_pack_word(&pk, tmp, &r->words[i], j);
    }
    if (!r->has_placeholder) {
        for (size_t a = 0; a < j->nargs; a++) {
            msgpack_pack_str(&pk, strlen(j->args[a]));
            msgpack_pack_str_body(&pk, j->args[a], strlen(j->args[a]));
        }
    }
    zchunk_destroy(&tmp);
    /* check=false: a failed or timed-out command still returns its output */
    msgpack_pack_map(&pk, 2 + (r->timeout > 0) + (r->wd_abs != NULL) + (zlist_size(r->env) > 0));
    s_pack_key(&pk, "check");
    msgpack_pack_false(&pk);
    s_pack_key(&pk, "max_output");
    msgpack_pack_uint64(&pk, r->max_output);
    if (r->timeout > 0) {
        s_pack_key(&pk, "timeout");
        msgpack_pack_double(&pk, r->timeout);
    }
    if (r->wd_abs) {
        s_pack_key(&pk, "cwd");
        s_pack_key(&pk, r->wd_abs);
    }
    if (zlist_size(r->env) > 0) {
        s_pack_key(&pk, "env");
        msgpack_pack_map(&pk, zlist_size(r->env));
        for (const char *kv = zlist_first(r->env); kv; kv = zlist_next(r->env)) {
            const char *eq = strchr(kv, '=');
            msgpack_pack_str(&pk, (size_t)(eq - kv));
            msgpack_pack_str_body(&pk, kv, (size_t)(eq - kv));
            s_pack_key(&pk, eq + 1);
        }
    }
    zx_task_opts_t opts = {.pool = ZX_POOL_PROCESS};
    struct timeval tv;
    gettimeofday(&tv, NULL);
    j->sub_time = (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
    j->sub_ms = zclock_mono();
    j->submits++;
    j->f = zx_submit_opts(r->ex, "exec", sb.data, sb.size, &opts);
    msgpack_sbuffer_destroy(&sb);
    if (!j->f) {
        return zx_last_error();
    }
    j->state = S_J_FLIGHT;
    r->inflight++;
    zx_future_add_done_callback(j->f, s_on_done, j);
    return 0;
}

static void s_stop_now(s_run_t *r);

/* Writes a finished job's output and logs it; a closed stdout stops the
   run (as SIGPIPE would) and the job is not logged. */
static void s_deliver(s_run_t *r, s_job_t *j)
{
    zxc_progress_clear(r->prog);
    const char *tag = r->tag ? j->input : NULL;
    bool out_ok = zxc_write(stdout, j->x.out, j->x.out_len, tag);
    if (j->x.err_len) {
        zxc_write(stderr, j->x.err, j->x.err_len, tag);
    }
    if (out_ok) {
        s_joblog_write(r, j);
        j->state = S_J_DELIVERED;
    } else {
        j->state = S_J_DROPPED;
        if (!r->stop_sig) {
            r->stop_sig = SIGPIPE;
            r->stopping = true;
            s_stop_now(r);
        }
    }
    zxc_exec_clear(&j->x);
}

/* Counts a finished job toward --halt; true if the run should halt. */
static void s_halt_check(s_run_t *r, s_job_t *j)
{
    if (r->halt_when == S_HALT_NEVER || r->halting) {
        return;
    }
    size_t n = r->halt_kind == S_HALT_FAIL      ? r->nfailed
               : r->halt_kind == S_HALT_SUCCESS ? r->nsucceeded
                                                : r->nsucceeded + r->nfailed;
    bool counts = r->halt_kind == S_HALT_DONE || (r->halt_kind == S_HALT_FAIL) == !j->x.ok;
    if (!counts) {
        return;
    }
    bool hit = r->halt_pct > 0 ? (double)n * 100.0 >= r->halt_pct * (double)r->njobs && n > 0
                               : (long)n >= r->halt_count;
    if (!hit) {
        return;
    }
    r->halting = r->halt_when;
    r->halt_exit = r->halt_kind == S_HALT_FAIL ? (j->x.exit_code ? j->x.exit_code : 1) : 0;
    r->stopping = true;
    fprintf(stderr, "zexec run: --halt: %zu job%s %s; %s\n", n, n == 1 ? "" : "s",
            r->halt_kind == S_HALT_FAIL      ? "failed"
            : r->halt_kind == S_HALT_SUCCESS ? "succeeded"
                                             : "done",
            r->halt_when == S_HALT_NOW ? "stopping running jobs"
                                       : "waiting for the running jobs, starting no more");
    if (r->halt_when == S_HALT_NOW) {
        s_stop_now(r);
    }
}

/* Delivers what can be in order (-k) or at once. */
static void s_print_ready(s_run_t *r, s_job_t *j)
{
    if (!r->keep_order && j->state == S_J_DONE) {
        s_deliver(r, j);
    }
    while (r->next_print < r->njobs) {
        s_job_t *k = &r->job[r->next_print];
        if (k->state == S_J_DONE) {
            s_deliver(r, k);
        } else if (k->state == S_J_FLIGHT || k->state == S_J_WAIT) {
            break;
        }
        r->next_print++;
    }
}

/* A finished attempt: retry it, or record and deliver the job. */
static void s_complete(s_run_t *r, s_job_t *j)
{
    r->inflight--;
    const void *v;
    size_t n;
    int rc = zx_future_result(j->f, 0, &v, &n);
    const zx_error_t *e = rc == ZX_OK ? NULL : zx_future_exception(j->f, 0);
    zxc_exec_clear(&j->x);
    free(j->node);
    const char *node = rc == ZX_OK ? zx_future_node(j->f) : e && e->node ? e->node : "";
    j->node = *node ? strdup(node) : NULL;
    j->x.start = j->sub_time;
    j->x.runtime = (double)(zclock_mono() - j->sub_ms) / 1000.0;
    if (rc == ZX_OK) {
        zxc_exec_decode(&j->x, v, n);
    } else {
        zxc_exec_failed(&j->x, e);
    }
    int runs = zx_future_attempts(j->f);
    j->attempts += runs > 1 ? runs : 1;
    bool cancelled = rc == ZX_ECANCELLED || (e && e->code == ZX_ECANCELLED);
    /* e lives as long as the future: held until the end */
    zx_future_t *f = j->f;
    j->f = NULL;
    s_slot_give(r, j->slot);
    j->slot = 0;
    if (cancelled && r->stopping) {
        /* cancelled or terminated by our stop: never delivered */
        j->state = S_J_DROPPED;
        zxc_exec_clear(&j->x);
        s_print_ready(r, j);
        zx_future_unref(&f);
        return;
    }
    bool refused = e && (e->code == ZX_ENOTALLOWED || e->code == ZX_ENOFUNC);
    if (!j->x.ok && !refused && j->submits <= r->retries && !r->stopping) {
        if (s_submit(r, j) == 0) {
            zx_future_unref(&f);
            return;
        }
    }
    j->received = j->x.out_len + j->x.err_len;
    /* what the job wrote, then (stderr) why it failed */
    if (rc != ZX_OK && refused) {
        /* every job would fail the same way: say it once and stop */
        if (!r->exec_refused) {
            const char *m = e && e->message ? e->message : zx_strerror(rc);
            r->exec_refused = true;
            zxc_exec_err_append(&j->x, "zexec run: %s\n", m);
            if (!strstr(m, "--allow-exec")) {
                zxc_exec_err_append(&j->x, "zexec run: the workers must offer exec: start "
                                           "zexec-worker with --allow-exec\n");
            }
        }
    } else {
        char *label = NULL;
        if (asprintf(&label, "job %zu (%s)", j->seq, j->input) < 0) {
            label = NULL;
        }
        zxc_exec_note(&j->x, "run", label ? label : "job", rc, e, j->node, j->attempts, r->timeout,
                      r->max_output);
        free(label);
    }
    j->state = S_J_DONE;
    r->ndone++;
    if (j->x.ok) {
        r->nsucceeded++;
    } else {
        r->nfailed++;
    }
    s_print_ready(r, j);
    if (refused && !r->stopping) {
        r->stopping = true;
        r->halting = S_HALT_NOW;
        r->halt_exit = S_EXIT_ERROR;
        s_stop_now(r);
    }
    s_halt_check(r, j);
    zxc_progress_update(r->prog, r->ndone, r->nfailed);
    zx_future_unref(&f);
}

/* Stops everything now: queued tasks cancelled at the broker first (one
   batch, ahead of anything below on the same connection), then the
   running ones terminated. Their completions arrive as cancellations. */
static void s_stop_now(s_run_t *r)
{
    if (r->stopped_now) {
        return;
    }
    r->stopped_now = true;
    r->stopping = true;
    zx_executor_shutdown(r->ex, false, true);
    for (size_t i = r->next_print; i < r->njobs; i++) {
        s_job_t *j = &r->job[i];
        if (j->state == S_J_WAIT) {
            break; /* jobs are submitted in order: none after this one */
        }
        if (j->state == S_J_FLIGHT && j->f && !zx_future_done(j->f)) {
            zx_future_terminate(j->f);
        }
    }
}

/* ---- inputs --------------------------------------------------------------------- */

static int s_src_add(s_src_t *s, const char *p, size_t len)
{
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 64;
        char **nv = realloc(s->v, nc * sizeof *nv);
        if (!nv) {
            return -1;
        }
        s->v = nv;
        s->cap = nc;
    }
    s->v[s->n] = strndup(p, len);
    return s->v[s->n] ? (int)(s->n++, 0) : -1;
}

static int s_src_read(s_src_t *s, FILE *f)
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
        rc = s_src_add(s, line, (size_t)n);
    }
    free(line);
    return rc;
}

/* Appends value's arguments (its --colsep columns, or itself) to args. */
static int s_split(s_run_t *r, const char *value, char ***args, size_t *nargs, size_t *cap)
{
    const char *p = value;
    for (;;) {
        regmatch_t m;
        size_t len = strlen(p);
        bool hit = r->has_colsep && regexec(&r->colsep, p, 1, &m, 0) == 0 && m.rm_eo > m.rm_so;
        if (hit) {
            len = (size_t)m.rm_so;
        }
        if (*nargs == *cap) {
            size_t nc = *cap ? *cap * 2 : 4;
            char **na = realloc(*args, nc * sizeof *na);
            if (!na) {
                return -1;
            }
            *args = na;
            *cap = nc;
        }
        (*args)[*nargs] = strndup(p, len);
        if (!(*args)[*nargs]) {
            return -1;
        }
        (*nargs)++;
        if (!hit) {
            return 0;
        }
        p += m.rm_eo;
    }
}

static int s_job_add(s_run_t *r, char **args, size_t nargs)
{
    if (r->njobs == r->jcap) {
        size_t nc = r->jcap ? r->jcap * 2 : 64;
        s_job_t *nj = realloc(r->job, nc * sizeof *nj);
        if (!nj) {
            return -1;
        }
        r->job = nj;
        r->jcap = nc;
    }
    s_job_t *j = &r->job[r->njobs];
    memset(j, 0, sizeof *j);
    j->run = r;
    j->args = args;
    j->nargs = nargs;
    size_t len = 1;
    for (size_t i = 0; i < nargs; i++) {
        len += strlen(args[i]) + 1;
    }
    j->input = calloc(1, len);
    if (!j->input) {
        return -1;
    }
    for (size_t i = 0; i < nargs; i++) {
        if (i) {
            strcat(j->input, " ");
        }
        strcat(j->input, args[i]);
    }
    j->seq = ++r->njobs;
    return 0;
}

/* Makes the jobs: every combination of the source groups (a source and the
   sources linked to it, which advance together, the shorter ones wrapping
   around), the first group varying slowest; then -n/-N records per job. */
static int s_make_jobs(s_run_t *r, s_src_t *src, size_t nsrc)
{
    size_t ngroups = 0;
    size_t *gstart = calloc(nsrc + 1, sizeof *gstart), *glen = calloc(nsrc + 1, sizeof *glen);
    size_t *idx = calloc(nsrc + 1, sizeof *idx);
    int rc = gstart && glen && idx ? 0 : -1;
    size_t total = 1;
    for (size_t s = 0; rc == 0 && s < nsrc; s++) {
        if (!src[s].linked || ngroups == 0) {
            gstart[ngroups++] = s;
        }
        size_t *gl = &glen[ngroups - 1];
        *gl = src[s].n > *gl ? src[s].n : *gl;
        if (src[s].n == 0) {
            *gl = 0;
            break;
        }
    }
    for (size_t g = 0; g < ngroups; g++) {
        total = glen[g] == 0 ? 0 : total * glen[g];
    }
    if (nsrc == 0) {
        total = 0;
    }
    size_t per = r->nper_set ? (size_t)(r->nper > 0 ? r->nper : 1) : 1;
    char **args = NULL;
    size_t nargs = 0, acap = 0, inrec = 0;
    for (size_t rec = 0; rc == 0 && rec < total; rec++) {
        /* decompose rec: last group fastest */
        size_t rest = rec;
        for (size_t g = ngroups; g-- > 0;) {
            idx[g] = rest % glen[g];
            rest /= glen[g];
        }
        for (size_t g = 0; rc == 0 && g < ngroups; g++) {
            size_t end = g + 1 < ngroups ? gstart[g + 1] : nsrc;
            for (size_t s = gstart[g]; rc == 0 && s < end; s++) {
                if (r->nper_set && r->nper == 0) {
                    continue; /* -N0: the input only counts */
                }
                rc = s_split(r, src[s].v[idx[g] % src[s].n], &args, &nargs, &acap);
            }
        }
        if (++inrec == per || rec + 1 == total) {
            if (rc == 0) {
                rc = s_job_add(r, args, nargs);
            }
            if (rc != 0) {
                for (size_t i = 0; i < nargs; i++) {
                    free(args[i]);
                }
                free(args);
            }
            args = NULL;
            nargs = acap = inrec = 0;
        }
    }
    free(gstart);
    free(glen);
    free(idx);
    return rc;
}

/* ---- flags ---------------------------------------------------------------------- */

static bool s_parse_size(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *s == '-') {
        return false;
    }
    unsigned long long mul = 1;
    if (*end == 'k' || *end == 'K') {
        mul = 1024, end++;
    } else if (*end == 'm' || *end == 'M') {
        mul = 1024 * 1024, end++;
    }
    if (*end || v > S_MAX_MAX_OUTPUT / mul) {
        return false;
    }
    *out = (size_t)(v * mul);
    return true;
}

/* --halt: "never", "now,fail=N", "soon,success=N%", ..., or parallel's old
   0 (never), 1 (soon,fail=1), 2 (now,fail=1). */
static bool s_parse_halt(s_run_t *r, const char *s)
{
    if (strcmp(s, "never") == 0 || strcmp(s, "0") == 0) {
        r->halt_when = S_HALT_NEVER;
        return true;
    }
    if (strcmp(s, "1") == 0 || strcmp(s, "2") == 0) {
        r->halt_when = *s == '1' ? S_HALT_SOON : S_HALT_NOW;
        r->halt_kind = S_HALT_FAIL;
        r->halt_count = 1;
        return true;
    }
    const char *comma = strchr(s, ',');
    if (!comma) {
        return false;
    }
    if (strncmp(s, "now", (size_t)(comma - s)) == 0 && comma - s == 3) {
        r->halt_when = S_HALT_NOW;
    } else if (strncmp(s, "soon", (size_t)(comma - s)) == 0 && comma - s == 4) {
        r->halt_when = S_HALT_SOON;
    } else {
        return false;
    }
    const char *what = comma + 1, *eq = strchr(what, '=');
    if (!eq) {
        return false;
    }
    size_t wl = (size_t)(eq - what);
    if (wl == 4 && strncmp(what, "fail", 4) == 0) {
        r->halt_kind = S_HALT_FAIL;
    } else if (wl == 7 && strncmp(what, "success", 7) == 0) {
        r->halt_kind = S_HALT_SUCCESS;
    } else if (wl == 4 && strncmp(what, "done", 4) == 0) {
        r->halt_kind = S_HALT_DONE;
    } else {
        return false;
    }
    const char *num = eq + 1;
    size_t nl = strlen(num);
    if (nl > 1 && num[nl - 1] == '%') {
        char buf[32];
        if (nl > sizeof buf) {
            return false;
        }
        memcpy(buf, num, nl - 1);
        buf[nl - 1] = 0;
        return zx__parse_double(buf, 0.001, 100, &r->halt_pct);
    }
    return zx__parse_long(num, 1, 1000000000, &r->halt_count);
}

/* The exec check: with workers registered, does any offer exec? The broker
   lists each worker's functions in STATUS (a worker offers exec only with
   --allow-exec). 0, or -1 after telling the user. */
static int s_check_exec(const zxc_conn_t *conn)
{
    json_t *st = NULL;
    char err[256];
    if (zxc_probe(conn, conn->timeout, &st, err, sizeof err) != 0) {
        fprintf(stderr, "zexec run: %s\n", err);
        return -1;
    }
    json_t *ws = json_object_get(st, "workers");
    size_t nw = json_array_size(ws), i;
    json_t *w;
    bool offered = nw == 0; /* none yet: a cluster still starting */
    json_array_foreach(ws, i, w)
    {
        size_t k;
        json_t *fn;
        json_array_foreach(json_object_get(w, "functions"), k, fn)
        {
            offered = offered || (json_is_string(fn) && strcmp(json_string_value(fn), "exec") == 0);
        }
    }
    json_decref(st);
    if (!offered) {
        fprintf(stderr,
                "zexec run: none of the %zu worker%s offers exec: start zexec-worker with "
                "--allow-exec\n",
                nw, nw == 1 ? "" : "s");
        return -1;
    }
    return 0;
}

/* ---- main ----------------------------------------------------------------------- */

/* --detach: every job submitted at once (the broker queues them; the
   workers' pools bound what runs), then zxc_detach waits for the broker to
   hold them all and prints the job id. The exec tasks are the ones a plain
   run sends, so `zexec results --format run` prints their output alike.
   Interrupted, or when a submission fails, before the id is printed: the
   job is cancelled at the broker (conn.c). */
static int s_run_detached(s_run_t *r, const zxc_conn_t *conn)
{
    size_t total = 0;
    for (size_t i = 0; i < r->njobs; i++) {
        total += r->job[i].state == S_J_WAIT;
    }
    r->ex = zxc_detach_begin(conn, "run", total, S_EXIT_ERROR);
    if (!r->ex) {
        return S_EXIT_ERROR;
    }
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    int err = 0;
    for (size_t i = 0; i < r->njobs && !err; i++) {
        if (r->job[i].state == S_J_WAIT) {
            err = s_submit(r, &r->job[i]);
        }
    }
    if (err) {
        char why[256];
        snprintf(why, sizeof why, "cannot submit: %s", zx_strerror(err));
        zxc_detach_abort(why);
    }
    int st = zxc_detach(&r->ex, " --format run");
    /* a task the broker refused (a quota, a full journal) is not in the job */
    size_t refused = 0;
    const zx_error_t *first = NULL;
    for (size_t i = 0; st == 0 && i < r->njobs; i++) {
        const zx_error_t *e = r->job[i].f ? zx_future_exception(r->job[i].f, 0) : NULL;
        if (e && e->code == ZX_EREJECTED) {
            first = first ? first : e;
            refused++;
        }
    }
    if (refused) {
        fprintf(stderr,
                "zexec run: the broker refused %zu of %zu jobs, which are not in the job: %s: %s\n",
                refused, r->njobs, first->type, first->message);
        st = ZXC_EXIT_FAIL;
    }
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->lock);
    return st;
}

static void s_free(s_run_t *r)
{
    for (size_t i = 0; i < r->njobs; i++) {
        zx_future_unref(&r->job[i].f);
        for (size_t a = 0; a < r->job[i].nargs; a++) {
            free(r->job[i].args[a]);
        }
        free(r->job[i].args);
        free(r->job[i].input);
        free(r->job[i].node);
        free(r->job[i].x.out);
        free(r->job[i].x.err);
    }
    free(r->job);
    for (int w = 0; r->words && w < r->tmpl_n; w++) {
        free(r->words[w].seg);
    }
    free(r->words);
    free(r->free_slots);
    free(r->wd_abs);
    zlist_destroy(&r->env);
    if (r->has_colsep) {
        regfree(&r->colsep);
    }
    zhashx_destroy(&r->succeeded);
    zlist_destroy(&r->completed);
    if (r->joblog) {
        fclose(r->joblog);
    }
}

static void s_free_srcs(s_src_t *src, size_t n)
{
    for (size_t s = 0; s < n; s++) {
        for (size_t i = 0; i < src[s].n; i++) {
            free(src[s].v[i]);
        }
        free(src[s].v);
    }
    free(src);
}

/* Parses the flags into r; -1 to go on, else the exit status. */
static int s_flags(s_run_t *r, zxc_conn_t *conn, int argc, char **argv)
{
    enum {
        O_RETRIES = 'r',
        O_TIMEOUT = 't',
        O_JOBLOG = 'l',
        O_RESUME = 'R',
        O_FORMAT = 2000,
        O_COLSEP,
        O_WD,
        O_ENV,
        O_MAXOUT,
        O_HALT,
        O_TAG,
        O_BAR,
        O_DETACH,
        O_JOBNAME
    };
    static const struct option longopts[] = {ZXC_CONN_OPTIONS,
                                             {"jobs", required_argument, NULL, 'j'},
                                             {"max-args", required_argument, NULL, 'n'},
                                             {"retries", required_argument, NULL, O_RETRIES},
                                             {"timeout", required_argument, NULL, O_TIMEOUT},
                                             {"joblog", required_argument, NULL, O_JOBLOG},
                                             {"joblog-format", required_argument, NULL, O_FORMAT},
                                             {"resume", no_argument, NULL, O_RESUME},
                                             {"colsep", required_argument, NULL, O_COLSEP},
                                             {"wd", required_argument, NULL, O_WD},
                                             {"workdir", required_argument, NULL, O_WD},
                                             {"env", required_argument, NULL, O_ENV},
                                             {"max-output", required_argument, NULL, O_MAXOUT},
                                             {"halt", required_argument, NULL, O_HALT},
                                             {"halt-on-error", required_argument, NULL, O_HALT},
                                             {"tag", no_argument, NULL, O_TAG},
                                             {"bar", no_argument, NULL, O_BAR},
                                             {"detach", no_argument, NULL, O_DETACH},
                                             {"job-name", required_argument, NULL, O_JOBNAME},
                                             {"keep-order", no_argument, NULL, 'k'},
                                             {"quiet", no_argument, NULL, 'q'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "+hj:kqn:N:", longopts, NULL)) != -1) {
        if (zxc_conn_flag(conn, opt, optarg)) {
            continue;
        }
        switch (opt) {
        case 'h': s_usage(stdout); return 0;
        case 'j':
            if (!zx__parse_long(optarg, 1, 1000000, &r->jobs)) {
                return zxc_usage_error("run", "invalid --jobs '%s': 1..1000000", optarg);
            }
            break;
        case 'n':
        case 'N':
            if (!zx__parse_long(optarg, opt == 'N' ? 0 : 1, 100000, &r->nper)) {
                return zxc_usage_error("run", "invalid -%c '%s': %s..100000", opt, optarg,
                                       opt == 'N' ? "0" : "1");
            }
            r->nper_set = true;
            break;
        case O_RETRIES:
            if (!zx__parse_long(optarg, 0, 1000, &r->retries)) {
                return zxc_usage_error("run", "invalid --retries '%s': 0..1000", optarg);
            }
            break;
        case O_TIMEOUT:
            if (!zx__parse_double(optarg, 0.001, 1e7, &r->timeout)) {
                return zxc_usage_error("run", "invalid --timeout '%s': seconds > 0", optarg);
            }
            break;
        case O_JOBLOG: r->joblog_path = optarg; break;
        case O_FORMAT:
            if (strcmp(optarg, "parallel") == 0) {
                r->parallel_log = true;
            } else if (strcmp(optarg, "zexec") == 0) {
                r->parallel_log = false;
            } else {
                return zxc_usage_error("run", "invalid --joblog-format '%s': zexec or parallel",
                                       optarg);
            }
            break;
        case O_RESUME: r->resume = true; break;
        case O_COLSEP:
            if (r->has_colsep) {
                regfree(&r->colsep);
                r->has_colsep = false;
            }
            if (regcomp(&r->colsep, optarg, REG_EXTENDED) != 0) {
                return zxc_usage_error("run", "invalid --colsep '%s': not a regular expression",
                                       optarg);
            }
            r->has_colsep = true;
            break;
        case O_WD: r->wd = optarg; break;
        case O_ENV: {
            const char *eq = strchr(optarg, '=');
            const char *val = eq ? eq + 1 : getenv(optarg);
            size_t nl = eq ? (size_t)(eq - optarg) : strlen(optarg);
            if (nl == 0) {
                return zxc_usage_error("run", "invalid --env '%s': NAME or NAME=VALUE", optarg);
            }
            if (!val) {
                return zxc_usage_error("run", "--env %s: %s is not set here (give NAME=VALUE)",
                                       optarg, optarg);
            }
            char *kv = NULL;
            if (asprintf(&kv, "%.*s=%s", (int)nl, optarg, val) < 0) {
                return S_EXIT_ERROR;
            }
            zlist_append(r->env, kv); /* autofree: the list keeps a copy */
            free(kv);
            break;
        }
        case O_MAXOUT:
            if (!s_parse_size(optarg, &r->max_output)) {
                return zxc_usage_error("run", "invalid --max-output '%s': bytes (K, M) up to 32M",
                                       optarg);
            }
            break;
        case O_HALT:
            if (!s_parse_halt(r, optarg)) {
                return zxc_usage_error("run",
                                       "invalid --halt '%s': never, or now|soon,fail|success|"
                                       "done=N or N%%",
                                       optarg);
            }
            break;
        case O_TAG: r->tag = true; break;
        case O_BAR: r->bar = true; break;
        case O_DETACH: r->detach = conn->detach = true; break;
        case O_JOBNAME: conn->job_name = optarg; break;
        case 'k': r->keep_order = true; break;
        case 'q': r->quiet = true; break;
        default: return zxc_bad_flag("run", argc, argv);
        }
    }
    if (r->resume && !r->joblog_path) {
        return zxc_usage_error("run", "--resume needs --joblog FILE");
    }
    if (conn->job_name && !r->detach) {
        return zxc_usage_error("run", "--job-name needs --detach");
    }
    if (r->detach) {
        /* these act on deliveries, which happen later, in `zexec results` */
        const char *no = r->keep_order    ? "-k (use: zexec results JOB --order input)"
                         : r->tag         ? "--tag"
                         : r->retries > 0 ? "--retries"
                         : r->halt_when   ? "--halt"
                         : r->joblog_path ? "--joblog"
                         : r->bar         ? "--bar"
                                          : NULL;
        if (no) {
            return zxc_usage_error("run", "--detach does not go with %s", no);
        }
    }
    if (r->wd && strcmp(r->wd, "...") == 0) {
        r->wd_abs = getcwd(NULL, 0);
        if (!r->wd_abs) {
            fprintf(stderr, "zexec run: --wd ...: cannot tell this directory: %s\n",
                    strerror(errno));
            return S_EXIT_ERROR;
        }
    } else if (r->wd) {
        r->wd_abs = strdup(r->wd);
    }
    return -1;
}

static bool s_is_sep(const char *a)
{
    return strcmp(a, ":::") == 0 || strcmp(a, "::::") == 0 || strcmp(a, ":::+") == 0 ||
           strcmp(a, "::::+") == 0;
}

/* Reads the input sources after the command; -1 to go on, else the exit
   status. */
static int s_inputs(s_run_t *r, int argc, char **argv, int first)
{
    size_t nsrc = 0;
    for (int i = first; i < argc; i++) {
        nsrc += s_is_sep(argv[i]);
    }
    bool from_stdin = nsrc == 0;
    s_src_t *src = calloc(nsrc ? nsrc * (size_t)argc : 1, sizeof *src);
    if (!src) {
        return S_EXIT_ERROR;
    }
    size_t ns = 0;
    int rc = 0;
    if (from_stdin) {
        if (isatty(STDIN_FILENO)) {
            fprintf(stderr, "zexec run: reading inputs from the terminal, one per line "
                            "(end with Ctrl-D)\n");
        }
        rc = s_src_read(&src[ns++], stdin);
    }
    for (int i = first; rc == 0 && i < argc;) {
        const char *sep = argv[i++];
        bool files = strncmp(sep, "::::", 4) == 0;
        bool linked = sep[strlen(sep) - 1] == '+';
        int end = i;
        while (end < argc && !s_is_sep(argv[end])) {
            end++;
        }
        if (files && end == i) {
            s_free_srcs(src, ns);
            return zxc_usage_error("run", "'%s' needs at least one file", sep);
        }
        if (linked && ns == 0) {
            s_free_srcs(src, ns);
            return zxc_usage_error("run", "'%s' links to the source before it: there is none", sep);
        }
        if (!files) {
            s_src_t *s = &src[ns++];
            s->linked = linked;
            for (; rc == 0 && i < end; i++) {
                rc = s_src_add(s, argv[i], strlen(argv[i]));
            }
            continue;
        }
        /* each file is a source of its own, as in parallel */
        for (bool first_file = true; rc == 0 && i < end; i++, first_file = false) {
            FILE *f = strcmp(argv[i], "-") == 0 ? stdin : fopen(argv[i], "r");
            if (!f) {
                fprintf(stderr, "zexec run: cannot read inputs from %s: %s\n", argv[i],
                        strerror(errno));
                s_free_srcs(src, ns);
                return S_EXIT_ERROR;
            }
            s_src_t *s = &src[ns++];
            s->linked = linked && first_file;
            rc = s_src_read(s, f);
            if (f != stdin) {
                fclose(f);
            }
        }
    }
    if (rc == 0) {
        rc = s_make_jobs(r, src, ns);
    }
    s_free_srcs(src, ns);
    if (rc != 0) {
        fprintf(stderr, "zexec run: out of memory reading inputs\n");
        return S_EXIT_ERROR;
    }
    /* {N} beyond the arguments every job has is a typo, unless columns or
       -n make the count vary */
    size_t maxpos = s_max_pos(r);
    size_t per = r->nper_set ? (size_t)r->nper : 1;
    if (maxpos && !r->has_colsep && r->njobs > 0 && maxpos > ns * (per ? per : 1)) {
        return zxc_usage_error("run", "{%zu} in the command, but each job has %zu argument%s",
                               maxpos, ns * per, ns * per == 1 ? "" : "s");
    }
    return -1;
}

int zxc_run_main(int argc, char **argv)
{
    s_run_t r = {.jobs = S_DEFAULT_JOBS, .max_output = S_DEFAULT_MAX_OUTPUT};
    r.env = zlist_new();
    zlist_autofree(r.env);
    zxc_conn_t conn;
    zxc_conn_init(&conn);
    int st = s_flags(&r, &conn, argc, argv);
    if (st >= 0) {
        s_free(&r);
        return st;
    }
    /* COMMAND ARGS... [::: INPUTS... | :::: FILES...]... */
    int sep = argc;
    for (int i = optind; i < argc; i++) {
        if (s_is_sep(argv[i])) {
            sep = i;
            break;
        }
    }
    r.tmpl = argv + optind;
    r.tmpl_n = sep - optind;
    if (r.tmpl_n <= 0) {
        s_free(&r);
        return zxc_usage_error("run", "missing the command to run");
    }
    if ((st = s_parse_template(&r)) != 0) {
        s_free(&r);
        return st < 0 ? S_EXIT_ERROR : st;
    }
    if ((st = s_inputs(&r, argc, argv, sep)) >= 0) {
        s_free(&r);
        return st;
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
            fputs(r.parallel_log ? "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\t"
                                   "Signal\tCommand\n"
                                 : "Seq\tInput\tNode\tExitval\tStarttime\tRuntime\tAttempts\n",
                  r.joblog);
            fflush(r.joblog);
        }
        for (size_t i = 0; r.succeeded && i < r.njobs; i++) {
            char *k = s_key(&r, &r.job[i]);
            if (k && zhashx_lookup(r.succeeded, k)) {
                r.job[i].state = S_J_SKIPPED;
                skipped++;
            }
            free(k);
        }
    }
    if (r.njobs == skipped) {
        s_free(&r);
        return 0;
    }
    if (s_check_exec(&conn) != 0) {
        s_free(&r);
        return S_EXIT_ERROR;
    }
    size_t nslots = (size_t)r.jobs < r.njobs ? (size_t)r.jobs : r.njobs;
    r.free_slots = calloc(nslots + 1, sizeof *r.free_slots);
    r.completed = zlist_new();
    if (!r.free_slots || !r.completed) {
        s_free(&r);
        return S_EXIT_ERROR;
    }
    if (r.detach) {
        st = s_run_detached(&r, &conn);
        s_free(&r);
        return st;
    }
    /* it blocks the signals the thread started below waits for */
    r.ex = zxc_executor(&conn, "run");
    if (!r.ex) {
        s_free(&r);
        return S_EXIT_ERROR;
    }
    pthread_mutex_init(&r.lock, NULL);
    pthread_cond_init(&r.cond, NULL);
    zxc_signals_start(s_on_signal, &r);
    r.prog = zxc_progress_new("run", r.njobs - skipped, r.quiet && !r.bar);

    size_t next = 0, to_run = r.njobs - skipped;
    int err = 0;
    for (;;) {
        while (!r.stopping && next < r.njobs && r.inflight < (size_t)r.jobs && !err) {
            s_job_t *j = &r.job[next++];
            if (j->state == S_J_WAIT) {
                err = s_submit(&r, j);
            }
        }
        if (err) {
            fprintf(stderr, "zexec run: cannot submit: %s\n", zx_strerror(err));
            r.stopping = true;
            s_stop_now(&r);
            err = 0;
            r.halt_exit = S_EXIT_ERROR;
            r.halting = S_HALT_NOW;
        }
        if (r.inflight == 0 && (r.stopping || next >= r.njobs)) {
            break;
        }
        /* wait for completions; wake now and then for the progress display */
        pthread_mutex_lock(&r.lock);
        if (zlist_size(r.completed) == 0 && !(r.signal && !r.stop_sig)) {
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
        int sig = r.signal;
        pthread_mutex_unlock(&r.lock);
        if (sig && !r.stop_sig) {
            r.stop_sig = sig;
            s_stop_now(&r);
        }
        for (s_job_t *j = zlist_first(batch); j; j = zlist_next(batch)) {
            s_complete(&r, j);
        }
        zlist_destroy(&batch);
        zxc_progress_update(r.prog, r.ndone, r.nfailed);
    }
    /* -k: finished jobs behind one that never finished are not delivered */
    for (size_t i = 0; i < r.njobs; i++) {
        if (r.job[i].state == S_J_DONE) {
            r.job[i].state = S_J_DROPPED;
            r.dropped_held++;
        }
    }
    zxc_progress_destroy(&r.prog);
    zx_executor_shutdown(r.ex, false, true);
    zx_executor_destroy(&r.ex); /* says BYE */
    zxc_signals_stop();
    pthread_cond_destroy(&r.cond);
    pthread_mutex_destroy(&r.lock);
    size_t delivered = 0;
    for (size_t i = 0; i < r.njobs; i++) {
        delivered += r.job[i].state == S_J_DELIVERED;
    }
    int status;
    if (r.stop_sig) {
        if (r.stop_sig != SIGPIPE) {
            fprintf(stderr,
                    "zexec run: interrupted: %zu of %zu jobs done and delivered, %zu failed%s\n",
                    delivered, to_run, r.nfailed, r.joblog ? "; --resume runs the rest" : "");
        }
        if (r.dropped_held) {
            fprintf(stderr,
                    "zexec run: %zu finished job%s held back for --keep-order not printed "
                    "(not in the job log)\n",
                    r.dropped_held, r.dropped_held == 1 ? "" : "s");
        }
        status = 128 + r.stop_sig;
    } else if (r.halting) {
        status = r.halt_exit;
    } else {
        status = r.nfailed > S_MAX_FAILED_EXIT ? S_MAX_FAILED_EXIT : (int)r.nfailed;
    }
    s_free(&r);
    return status;
}
