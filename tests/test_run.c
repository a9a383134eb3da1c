/*  test_run.c - `zexec run` (and map/submit stopping) as a batch user meets
    it, issue 15: the output of failed and timed-out jobs, Ctrl-C and a
    closed stdout (queued tasks cancelled first, nothing undelivered in the
    job log, a goodbye to the broker), --wd/--env, the job log's times and
    GNU parallel format, several input sources and the other parallel
    flags. A real broker and two workers (two process slots each) on
    loopback; the broker's liveness is long (60 heartbeats), so a client
    that leaves without BYE stays visible in its STATUS for a minute and a
    test that waits for the client to be gone fails.
*/
#include "zx_testutil.h"

#include <criterion/criterion.h>
#include <czmq.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static zxt_cluster_t s_c;
static char *s_zexec;
static char s_dir[] = "/tmp/zx_run_XXXXXX";

typedef zxt_proc_t s_res_t;

static void s_path(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", s_dir, name);
}

static int s_lines(const char *name)
{
    char p[512];
    s_path(p, sizeof p, name);
    char *t = zxt_slurp(p);
    int n = 0;
    for (char *q = t; *q; q++) {
        n += *q == '\n';
    }
    free(t);
    return n;
}

/* Starts zexec with args (NULL-terminated) in s_dir, stdin from the text
   in, stdout to s_dir/out (or the fd out_fd when >= 0), stderr to
   s_dir/err. */
static pid_t s_start(const char *in, int out_fd, const char *const *args)
{
    const char *env[] = {"ZEXEC_BROKER", s_c.client_ep, NULL};
    pid_t pid = zxt_run_cmd(s_zexec, s_dir, true, in, out_fd, args, env);
    cr_assert_gt(pid, 0);
    return pid;
}

static s_res_t s_finish(pid_t pid, double timeout)
{
    return zxt_collect(pid, s_dir, timeout);
}

static s_res_t s_zx(const char *in, double timeout, const char *const *args)
{
    return s_finish(s_start(in, -1, args), timeout);
}

#define s_free zxt_proc_free

/* The broker's totals from `zexec status`: queued, running, clients (the
   status command itself is one). */
typedef struct {
    long queued, running, clients, cancelled;
} s_totals_t;

static bool s_totals(s_totals_t *t)
{
    const char *a[] = {"status", NULL};
    s_res_t r = s_zx(NULL, 20, a);
    const char *p = strstr(r.out, "totals:");
    bool ok = p && (p = strstr(p, "cancelled ")) &&
              sscanf(p, "cancelled %ld", &t->cancelled) == 1 && (p = strstr(p, "queued ")) &&
              sscanf(p, "queued %ld", &t->queued) == 1 && (p = strstr(p, "running ")) &&
              sscanf(p, "running %ld", &t->running) == 1 && (p = strstr(p, "clients ")) &&
              sscanf(p, "clients %ld", &t->clients) == 1;
    s_free(&r);
    return ok;
}

/* Nothing queued or running and no client but the asking one: every client
   that left said BYE (without it the broker keeps it for a minute). */
static bool s_idle(void *arg)
{
    (void)arg;
    s_totals_t t;
    return s_totals(&t) && t.queued == 0 && t.running == 0 && t.clients <= 1;
}

typedef struct {
    const char *name;
    int n;
} s_count_t;

static bool s_has_lines(void *arg)
{
    s_count_t *c = arg;
    return s_lines(c->name) >= c->n;
}

/* The command's stderr (dir/err) holds the text arg. */
static bool s_err_has(void *arg)
{
    char p[512];
    s_path(p, sizeof p, "err");
    char *text = zxt_slurp(p);
    bool has = text && strstr(text, arg);
    free(text);
    return has;
}

static void s_setup(void)
{
    cr_assert_not_null(mkdtemp(s_dir));
    s_zexec = zxt_bin("zexec");
    const char *bargs[] = {"--liveness", "60", NULL};
    cr_assert_eq(zxt_broker_start(&s_c, bargs), 0);
    const char *wargs[] = {"--allow-exec", "--threads", "2", "--procs", "2", NULL};
    cr_assert_gt(zxt_worker_start(&s_c, "run-w1", wargs), 0);
    cr_assert_gt(zxt_worker_start(&s_c, "run-w2", wargs), 0);
    const char *a[] = {"status", "--wait-workers", "2", "--timeout", "20", NULL};
    s_res_t r = s_zx(NULL, 30, a);
    cr_assert_eq(r.status, 0, "workers registered: %s", r.err);
    s_free(&r);
}

static void s_teardown(void)
{
    zxt_cluster_stop(&s_c);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", s_dir);
    cr_assert_eq(system(cmd), 0);
    free(s_zexec);
}

TestSuite(run, .init = s_setup, .fini = s_teardown, .timeout = 180);

/* ---- 1: output of failed jobs ------------------------------------------------------ */

Test(run, failed_and_timed_out_jobs_print_all_they_wrote_stdout_and_stderr_apart)
{
    /* parallel prints a failing diff; grep -c prints 0 and exits 1 */
    const char *a[] = {"run", "-q", "--", "sh", "-c", "echo 0; echo why >&2; exit 1",
                       ":::", "x",  NULL};
    s_res_t r = s_zx(NULL, 60, a);
    cr_assert_eq(r.status, 1, "stderr: %s", r.err);
    cr_assert_str_eq(r.out, "0\n");
    cr_assert(strncmp(r.err, "why\n", 4) == 0, "the job's stderr first: %s", r.err);
    cr_assert(strstr(r.err, "exited with status 1"), "stderr: %s", r.err);
    s_free(&r);

    /* 500 stderr lines and exit 1: all of them, from the first */
    const char *b[] = {"run", "-q", "--",
                       "sh",  "-c", "for i in $(seq 500); do echo e$i >&2; done; exit 1",
                       ":::", "x",  NULL};
    r = s_zx(NULL, 60, b);
    cr_assert_eq(r.status, 1);
    cr_assert(strncmp(r.err, "e1\ne2\n", 6) == 0, "from the first line: %.40s", r.err);
    cr_assert(strstr(r.err, "\ne250\n") && strstr(r.err, "\ne500\n"), "stderr: %s", r.err);
    cr_assert_str_eq(r.out, "");
    s_free(&r);

    /* a job that times out keeps what it printed */
    const char *c[] = {"run", "-q", "--timeout", "0.5", "--", "sh", "-c", "echo before; sleep 60",
                       ":::", "x",  NULL};
    r = s_zx(NULL, 60, c);
    cr_assert_eq(r.status, 1, "stderr: %s", r.err);
    cr_assert_str_eq(r.out, "before\n");
    cr_assert(strstr(r.err, "--timeout"), "stderr: %s", r.err);
    s_free(&r);

    /* --max-output: that much, and a note */
    const char *d[] = {
        "run", "-q", "--max-output", "100", "--", "sh", "-c", "seq 1000 # {}", ":::", "x", NULL};
    r = s_zx(NULL, 60, d);
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_assert_eq(strlen(r.out), 100);
    cr_assert(strncmp(r.out, "1\n2\n3\n", 6) == 0);
    cr_assert(strstr(r.err, "stdout truncated at 100 bytes (--max-output)"), "stderr: %s", r.err);
    s_free(&r);
}

/* ---- 2, 3, 4: stopping ----------------------------------------------------------------- */

Test(run, ctrl_c_cancels_queued_jobs_before_it_stops_the_running_ones)
{
    /* 4 process slots, 40 jobs that never end by themselves: once 4 have
       started no slot is free, so any later start came from our stopping */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cd %s && echo {} >> started; exec sleep 60", s_dir);
    const char *a[] = {"run", "-q", "-j", "40", "--", "sh", "-c", cmd,  ":::", "1",
                       "2",   "3",  "4",  "5",  "6",  "7",  "8",  "9",  "10",  "11",
                       "12",  "13", "14", "15", "16", "17", "18", "19", "20",  "21",
                       "22",  "23", "24", "25", "26", "27", "28", "29", "30",  "31",
                       "32",  "33", "34", "35", "36", "37", "38", "39", "40",  NULL};
    pid_t pid = s_start(NULL, -1, a);
    s_count_t c = {"started", 4};
    cr_assert(zxt_wait_for(s_has_lines, &c, 60), "4 jobs started");
    kill(pid, SIGINT);
    s_res_t r = s_finish(pid, 60);
    cr_assert_eq(r.status, 130, "stderr: %s", r.err);
    cr_assert(zxt_wait_for(s_idle, NULL, 30), "the broker is idle and the client gone (BYE)");
    cr_assert_eq(s_lines("started"), 4, "no queued job started after Ctrl-C");
    s_free(&r);
}

Test(run, sigterm_with_keep_order_prints_what_finished_and_logs_only_that)
{
    char log[512];
    s_path(log, sizeof log, "jobs.tsv");
    /* job 1 never ends; 2..4 finish, held back behind it */
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "cd %s && if [ {} = 1 ]; then exec sleep 60; fi; echo out{}; touch done{}", s_dir);
    const char *a[] = {"run", "-k",  "--joblog", log, "--", "sh", "-c",
                       cmd,   ":::", "1",        "2", "3",  "4",  NULL};
    /* the barrier: the client has the three results (its progress line
       counts what arrived; a job's file exists before its result does) */
    const char *env[] = {"ZEXEC_BROKER", s_c.client_ep, "ZEXEC_PROGRESS_EVERY", "0.05", NULL};
    pid_t pid = zxt_run_cmd(s_zexec, s_dir, true, NULL, -1, a, env);
    cr_assert_gt(pid, 0);
    cr_assert(zxt_wait_for(s_err_has, "run 3/4 done", 60), "three results reached the client");
    kill(pid, SIGTERM);
    s_res_t r = s_finish(pid, 60);
    cr_assert_eq(r.status, 143, "stderr: %s", r.err);
    /* job 1 was stopped: what finished behind it is printed, still in order,
       and logged; job 1 is not */
    cr_assert_str_eq(r.out, "out2\nout3\nout4\n", "stderr: %s", r.err);
    s_free(&r);
    char *text = zxt_slurp(log);
    cr_assert(
        strncmp(text, "Seq\tInput\tNode\tExitval\tStarttime\tRuntime\tAttempts\n2\t2\t", 54) == 0,
        "log: %s", text);
    cr_assert(strstr(text, "\n3\t3\t") && strstr(text, "\n4\t4\t") && !strstr(text, "\n1\t1\t"),
              "no row for the job that did not finish: %s", text);
    free(text);
    /* so --resume runs job 1 again, and only it */
    const char *b[] = {"run",   "-q",  "-k", "--joblog", log, "--resume", "--", "echo",
                       "again", ":::", "1",  "2",        "3", "4",        NULL};
    r = s_zx(NULL, 60, b);
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_assert_str_eq(r.out, "again 1\n");
    s_free(&r);
}

Test(run, a_closed_stdout_stops_the_run_and_the_client_says_bye)
{
    int p[2];
    cr_assert_eq(pipe(p), 0);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cd %s && echo {} >> started; echo {}; sleep 1", s_dir);
    const char *a[] = {"run", "-q", "-j", "20", "--", "sh", "-c", cmd,  ":::", "1",
                       "2",   "3",  "4",  "5",  "6",  "7",  "8",  "9",  "10",  "11",
                       "12",  "13", "14", "15", "16", "17", "18", "19", "20",  "21",
                       "22",  "23", "24", "25", "26", "27", "28", "29", "30",  NULL};
    pid_t pid = s_start(NULL, p[1], a);
    close(p[1]);
    char c;
    cr_assert_eq(read(p[0], &c, 1), 1, "a first output byte");
    close(p[0]); /* as `| head -c1` does */
    s_res_t r = s_finish(pid, 60);
    cr_assert_eq(r.status, 141, "status %d, stderr: %s", r.status, r.err);
    int at_exit = s_lines("started");
    cr_assert(zxt_wait_for(s_idle, NULL, 30), "the broker is idle and the client gone (BYE)");
    cr_assert_eq(s_lines("started"), at_exit, "no job started after the run ended");
    cr_assert_lt(at_exit, 30);
    s_free(&r);
}

Test(run, map_and_submit_stop_on_ctrl_c_and_say_bye)
{
    /* map: 200 half-second sleeps; Ctrl-C after the first result */
    char *in = malloc(200 * 8 + 1);
    in[0] = 0;
    for (int i = 0; i < 200; i++) {
        strcat(in, "[0.5]\n");
    }
    const char *a[] = {"map", "-q", "sleep", NULL};
    pid_t pid = s_start(in, -1, a);
    free(in);
    s_count_t c = {"out", 1};
    cr_assert(zxt_wait_for(s_has_lines, &c, 60));
    kill(pid, SIGINT);
    s_res_t r = s_finish(pid, 60);
    cr_assert_eq(r.status, 130, "stderr: %s", r.err);
    cr_assert(zxt_wait_for(s_idle, NULL, 30), "map: the broker is idle and the client gone");
    s_free(&r);

    /* submit: a process-pool task is terminated */
    const char *b[] = {"submit", "--pool", "process", "sleep", "[60]", NULL};
    pid = s_start(NULL, -1, b);
    s_totals_t t = {0};
    for (int i = 0; i < 600 && !(s_totals(&t) && t.running == 1); i++) {
        zclock_sleep(50);
    }
    cr_assert_eq(t.running, 1, "the task runs");
    kill(pid, SIGINT);
    r = s_finish(pid, 60);
    cr_assert_eq(r.status, 130, "stderr: %s", r.err);
    cr_assert(zxt_wait_for(s_idle, NULL, 30), "submit: the task is stopped and the client gone");
    s_free(&r);
}

/* ---- 5: --wd, --env ----------------------------------------------------------------- */

Test(run, wd_dots_runs_in_this_directory_and_env_passes_variables)
{
    char f[512];
    s_path(f, sizeof f, "data.txt");
    FILE *fp = fopen(f, "w");
    fputs("hello\n", fp);
    fclose(fp);
    setenv("ZXT_RUN_V", "from-client", 1);
    const char *a[] = {"run",
                       "-q",
                       "-k",
                       "--wd",
                       "...",
                       "--env",
                       "ZXT_RUN_V",
                       "--env",
                       "W=2",
                       "--",
                       "sh",
                       "-c",
                       "cat {}; pwd; echo $ZXT_RUN_V $W",
                       ":::",
                       "data.txt",
                       NULL};
    s_res_t r = s_zx(NULL, 60, a);
    unsetenv("ZXT_RUN_V");
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    char want[1024];
    snprintf(want, sizeof want, "hello\n%s\nfrom-client 2\n", s_dir);
    cr_assert_str_eq(r.out, want);
    s_free(&r);
    /* a directory the worker does not have: the job fails, saying so */
    const char *b[] = {"run", "-q", "--wd", "/nonexistent/zx", "--", "true", ":::", "x", NULL};
    r = s_zx(NULL, 60, b);
    cr_assert_eq(r.status, 1, "stderr: %s", r.err);
    cr_assert(strstr(r.err, "cannot run"), "stderr: %s", r.err);
    s_free(&r);
}

/* ---- 7: the job log ------------------------------------------------------------------ */

Test(run, joblog_has_each_jobs_own_start_and_run_time_and_the_parallel_format)
{
    char log[512];
    s_path(log, sizeof log, "jobs.tsv");
    /* 6 one-second jobs on 4 slots: two of them start after another ended */
    const char *a[] = {"run", "-q", "--joblog", log, "--", "sh", "-c", "sleep 1; : {}",
                       ":::", "a",  "b",        "c", "d",  "e",  "f",  NULL};
    s_res_t r = s_zx(NULL, 60, a);
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    s_free(&r);
    char *text = zxt_slurp(log);
    double first = 1e18, last = 0, minrun = 1e18;
    int rows = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        int seq, ex, att;
        char in[32], node[64];
        double start, run;
        if (sscanf(line, "%d\t%31s\t%63s\t%d\t%lf\t%lf\t%d", &seq, in, node, &ex, &start, &run,
                   &att) == 7) {
            rows++;
            cr_assert(strncmp(node, "run-w", 5) == 0);
            cr_assert_geq(run, 1.0, "the command's own run time: %s", line);
            first = start < first ? start : first;
            last = start > last ? start : last;
            minrun = run < minrun ? run : minrun;
        }
    }
    free(text);
    cr_assert_eq(rows, 6);
    cr_assert_geq(last - first, minrun * 0.9,
                  "a job that waited for a slot started when it ran, not when submitted");

    /* GNU parallel's columns, and --resume reads them */
    const char *b[] = {"run",
                       "-q",
                       "-k",
                       "--joblog",
                       log,
                       "--joblog-format",
                       "parallel",
                       "--",
                       "sh",
                       "-c",
                       "echo {}; exit {}",
                       ":::",
                       "0",
                       "3",
                       NULL};
    r = s_zx(NULL, 60, b);
    cr_assert_eq(r.status, 1, "stderr: %s", r.err);
    s_free(&r);
    text = zxt_slurp(log);
    const char *hdr = "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n";
    cr_assert(strncmp(text, hdr, strlen(hdr)) == 0, "log: %s", text);
    int seq, ex, sig;
    char host[64];
    double st, rt;
    long send, recv;
    char *l2 = strchr(text, '\n') + 1;
    cr_assert_eq(sscanf(l2, "%d\t%63s\t%lf\t%lf\t%ld\t%ld\t%d\t%d\t", &seq, host, &st, &rt, &send,
                        &recv, &ex, &sig),
                 8, "row: %s", l2);
    cr_assert(strstr(text, "\tsh -c 'echo 0; exit 0'\n") &&
                  strstr(text, "\tsh -c 'echo 3; exit 3'\n"),
              "the command lines: %s", text);
    cr_assert(strstr(text, "\t3\t0\tsh -c 'echo 3"), "exit 3, no signal: %s", text);
    free(text);
    const char *c[] = {"run",      "-q",       "-k", "--joblog", log,  "--joblog-format",
                       "parallel", "--resume", "--", "sh",       "-c", "echo {}; exit {}",
                       ":::",      "0",        "3",  NULL};
    r = s_zx(NULL, 60, c);
    cr_assert_eq(r.status, 1);
    cr_assert_str_eq(r.out, "3\n", "only the failed job again");
    s_free(&r);
}

/* ---- 8: GNU parallel's input sources and flags ---------------------------------------- */

Test(run, several_sources_positions_slots_n_colsep_tag_and_unknown_strings)
{
    const char *a[] = {
        "run", "-q", "-k", "--", "echo", "{1}{2}", ":::", "a", "b", ":::", "1", "2", NULL};
    s_res_t r = s_zx(NULL, 60, a);
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_assert_str_eq(r.out, "a1\na2\nb1\nb2\n", "every combination, the first slowest");
    s_free(&r);

    const char *b[] = {"run",   "-q",  "-k",   "--", "echo", "{2}-{1/.}", ":::",
                       "d/x.c", "y.h", ":::+", "1",  "2",    NULL};
    r = s_zx(NULL, 60, b);
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_assert_str_eq(r.out, "1-x\n2-y\n", ":::+ links");
    s_free(&r);

    const char *c[] = {"run",    "-q",  "-k",  "-N", "2", "--", "echo",
                       "{2}{1}", "{#}", ":::", "a",  "b", "c",  NULL};
    r = s_zx(NULL, 60, c);
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_assert_str_eq(r.out, "ba 1\nc 2\n");
    s_free(&r);

    const char *d[] = {"run",  "-q", "-k",  "-n", "2", "--", "echo",
                       "[{}]", "{}", ":::", "a",  "b", "c",  NULL};
    r = s_zx(NULL, 60, d);
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_assert_str_eq(r.out, "[a b] a b\n[c] c\n");
    s_free(&r);

    const char *e[] = {"run", "-q",   "-k",  "--colsep", ",", "--tag",
                       "--",  "echo", "{2}", "{1}",      NULL};
    r = s_zx("x,1\ny,2\n", 60, e);
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_assert_str_eq(r.out, "x 1\t1 x\ny 2\t2 y\n", "tagged with the columns, as parallel does");
    s_free(&r);

    /* {%}: slots 1..-j */
    const char *f[] = {"run", "-q", "-j", "2", "--", "echo", "{%}",
                       ":::", "a",  "b",  "c", "d",  "e",    NULL};
    r = s_zx(NULL, 60, f);
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    int ones = 0;
    for (char *p = r.out; *p; p++) {
        cr_assert(*p == '1' || *p == '2' || *p == '\n', "slots: %s", r.out);
        ones += *p != '\n';
    }
    cr_assert_eq(ones, 5);
    s_free(&r);

    /* --bar shows the progress display even with -q */
    const char *bar[] = {"run", "-q", "--bar", "--", "true", ":::", "a", NULL};
    r = s_zx(NULL, 60, bar);
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_assert(strstr(r.err, "zexec: run 1/1 done"), "stderr: %s", r.err);
    s_free(&r);

    /* unknown replacement strings are an error; awk's braces are text */
    const char *g[] = {"run", "-q", "--", "echo", "{..}", ":::", "a", NULL};
    r = s_zx(NULL, 60, g);
    cr_assert_eq(r.status, 2);
    cr_assert(strstr(r.err, "unknown replacement string '{..}'"), "stderr: %s", r.err);
    s_free(&r);
    const char *h[] = {"run", "-q", "--", "echo", "{3}", ":::", "a", ":::", "b", NULL};
    r = s_zx(NULL, 60, h);
    cr_assert_eq(r.status, 2);
    cr_assert(strstr(r.err, "{3}"), "stderr: %s", r.err);
    s_free(&r);
    const char *i[] = {"run", "-q", "--", "echo", "{print $1}", "{}", ":::", "a", NULL};
    r = s_zx(NULL, 60, i);
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_assert_str_eq(r.out, "{print $1} a\n");
    s_free(&r);
}

Test(run, halt_now_stops_at_the_first_failure_with_its_exit_status)
{
    const char *a[] = {"run", "-q", "--halt", "now,fail=1",
                       "--",  "sh", "-c",     "if [ {} = 2 ]; then exit 7; fi; exec sleep 60",
                       ":::", "1",  "2",      "3",
                       NULL};
    s_res_t r = s_zx(NULL, 60, a);
    cr_assert_eq(r.status, 7, "stderr: %s", r.err);
    cr_assert(strstr(r.err, "--halt"), "stderr: %s", r.err);
    cr_assert(zxt_wait_for(s_idle, NULL, 30), "the sleeping jobs were stopped");
    s_free(&r);
}

/* ---- 6: exec not offered ------------------------------------------------------------- */

Test(run, workers_without_allow_exec_fail_the_run_once_saying_how_to_enable_it)
{
    zxt_cluster_t c2;
    cr_assert_eq(zxt_broker_start(&c2, NULL), 0);
    const char *wargs[] = {"--procs", "1", "--threads", "1", NULL};
    cr_assert_gt(zxt_worker_start(&c2, "noexec", wargs), 0);
    const char *s[] = {"status", "--broker",  c2.client_ep, "--wait-workers",
                       "1",      "--timeout", "20",         NULL};
    s_res_t r = s_zx(NULL, 30, s);
    cr_assert_eq(r.status, 0);
    s_free(&r);
    const char *a[] = {"run", "-q", "--broker", c2.client_ep, "--", "true", ":::", "1",  "2",
                       "3",   "4",  "5",        "6",          "7",  "8",    "9",   "10", NULL};
    r = s_zx(NULL, 60, a);
    zxt_cluster_stop(&c2);
    cr_assert_eq(r.status, 255, "stderr: %s", r.err);
    const char *hint = strstr(r.err, "--allow-exec");
    cr_assert(hint, "stderr: %s", r.err);
    cr_assert_null(strstr(hint + 1, "--allow-exec"), "said once: %s", r.err);
    s_free(&r);
}

/* ---- 7: attempts after a lost worker ---------------------------------------------------- */

Test(run, joblog_attempts_count_a_rerun_after_a_lost_worker)
{
    /* a broker with the default liveness (3 s), one worker that dies
       while it runs the job, and one that takes it over */
    zxt_cluster_t c2;
    cr_assert_eq(zxt_broker_start(&c2, NULL), 0);
    const char *wargs[] = {"--allow-exec", "--procs", "1", "--threads", "1", NULL};
    pid_t first = zxt_worker_start(&c2, "lost", wargs);
    cr_assert_gt(first, 0);
    const char *s[] = {"status", "--broker",  c2.client_ep, "--wait-workers",
                       "1",      "--timeout", "20",         NULL};
    s_res_t r = s_zx(NULL, 30, s);
    cr_assert_eq(r.status, 0);
    s_free(&r);
    char log[512];
    s_path(log, sizeof log, "jobs.tsv");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cd %s && echo {} >> started; sleep 2", s_dir);
    const char *a[] = {"run", "-q", "--broker", c2.client_ep, "--joblog", log, "--",
                       "sh",  "-c", cmd,        ":::",        "x",        NULL};
    pid_t pid = s_start(NULL, -1, a);
    s_count_t c = {"started", 1};
    cr_assert(zxt_wait_for(s_has_lines, &c, 60), "the job started");
    zxt_kill(first);
    cr_assert_gt(zxt_worker_start(&c2, "takeover", wargs), 0);
    r = s_finish(pid, 90);
    zxt_cluster_stop(&c2);
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    s_free(&r);
    char *text = zxt_slurp(log);
    cr_assert(strstr(text, "\n1\tx\ttakeover\t0\t"), "log: %s", text);
    size_t n = strlen(text);
    cr_assert(n > 3 && strcmp(text + n - 3, "\t2\n") == 0, "2 attempts: %s", text);
    free(text);
}

/* ---- 6: a function nobody offers fails at once ------------------------------------------ */

static bool s_uptime_over(void *arg)
{
    const char *ep = arg;
    const char *a[] = {"status", "--json", "--broker", ep, NULL};
    s_res_t r = s_zx(NULL, 20, a);
    const char *p = strstr(r.out, "\"uptime_s\":");
    double up = p ? atof(p + 11) : 0;
    s_free(&r);
    return up >= 0.5;
}

Test(run, a_misspelled_function_fails_at_once_with_the_closest_names_and_run_checks_for_exec)
{
    /* a grace of an hour: only the fail-fast answers within the test;
       the liveness window (0.2 s x 2) is the "cluster still starting" */
    zxt_cluster_t c2;
    const char *bargs[] = {"--nofunc-grace", "3600", "--heartbeat", "0.2", "--liveness", "2", NULL};
    cr_assert_eq(zxt_broker_start(&c2, bargs), 0);
    char *plugin = zxt_plugin("zexec_demo_plugin");
    const char *wargs[] = {"--no-builtins", "--plugin", plugin, "--procs", "1",
                           "--threads",     "1",        NULL};
    cr_assert_gt(zxt_worker_start(&c2, "plain", wargs), 0);
    const char *s[] = {"status", "--broker",  c2.client_ep, "--wait-workers",
                       "1",      "--timeout", "20",         NULL};
    s_res_t r = s_zx(NULL, 30, s);
    cr_assert_eq(r.status, 0);
    s_free(&r);
    cr_assert(zxt_wait_for(s_uptime_over, c2.client_ep, 30));

    const char *a[] = {"submit", "--broker", c2.client_ep, "sqaure", "[7]", NULL};
    r = s_zx(NULL, 30, a);
    cr_assert_eq(r.status, 1, "stderr: %s", r.err);
    cr_assert(strstr(r.err, "NoWorkerError: no worker offers function 'sqaure'; did you mean "
                            "'square'?"),
              "stderr: %s", r.err);
    s_free(&r);

    /* run asks first: no worker offers exec */
    const char *b[] = {"run", "-q", "--broker", c2.client_ep, "--", "true", ":::", "x", NULL};
    r = s_zx(NULL, 30, b);
    zxt_cluster_stop(&c2);
    free(plugin);
    cr_assert_eq(r.status, 255, "stderr: %s", r.err);
    cr_assert(strstr(r.err, "none of the 1 worker offers exec") && strstr(r.err, "--allow-exec"),
              "stderr: %s", r.err);
    s_free(&r);
}
