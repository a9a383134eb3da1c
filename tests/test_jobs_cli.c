/*  test_jobs_cli.c - detached jobs from the command line, as a batch user
    meets them (issue 18): `zexec run --detach` then `zexec results` from
    another process prints what `zexec run` prints; `zexec results` killed
    with SIGKILL midway and started again prints every result at least once;
    `zexec jobs` shows the progress; `zexec cancel`; `zexec submit --detach`;
    `zexec run --detach` interrupted, or timed out, before it printed the id
    cancels its job and names it.
    The real binaries: a broker and one worker (exec allowed, four process
    slots, the demo plugin) on loopback.
*/
#include "zx_testutil.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static zxt_cluster_t s_c;
static char *s_zexec;
static char s_dir[] = "/tmp/zx_jobs_XXXXXX";

typedef zxt_proc_t s_res_t;

/* The directory of one command's files, s_dir/name (made on first use). */
static void s_path(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", s_dir, name);
    cr_assert(mkdir(buf, 0700) == 0 || errno == EEXIST, "mkdir %s", buf);
}

/* Starts zexec with args (NULL-terminated), stdin empty, stdout and stderr
   to s_dir/<name>/out and err. */
static pid_t s_start_env(const char *name, const char *const *args, const char *var,
                         const char *value)
{
    char dir[512];
    s_path(dir, sizeof dir, name);
    const char *env[] = {"ZEXEC_BROKER", s_c.client_ep, var, value, NULL};
    pid_t pid = zxt_run_cmd(s_zexec, dir, false, NULL, -1, args, env);
    cr_assert_gt(pid, 0);
    return pid;
}

static pid_t s_start(const char *name, const char *const *args)
{
    return s_start_env(name, args, NULL, NULL);
}

static s_res_t s_finish(pid_t pid, const char *name, double timeout)
{
    char dir[512];
    s_path(dir, sizeof dir, name);
    return zxt_collect(pid, dir, timeout);
}

static s_res_t s_zx(const char *name, double timeout, const char *const *args)
{
    return s_finish(s_start(name, args), name, timeout);
}

#define s_free zxt_proc_free

/* Lines of text that begin with prefix, sorted, joined (malloc'd). */
static char *s_lines_with(const char *text, const char *prefix)
{
    char *copy = strdup(text);
    char *lines[4096];
    size_t n = 0;
    for (char *save = NULL, *l = strtok_r(copy, "\n", &save); l && n < 4096;
         l = strtok_r(NULL, "\n", &save)) {
        if (strncmp(l, prefix, strlen(prefix)) == 0) {
            lines[n++] = l;
        }
    }
    for (size_t i = 1; i < n; i++) {
        for (size_t k = i; k > 0 && strcmp(lines[k - 1], lines[k]) > 0; k--) {
            char *t = lines[k];
            lines[k] = lines[k - 1];
            lines[k - 1] = t;
        }
    }
    size_t len = 1;
    for (size_t i = 0; i < n; i++) {
        len += strlen(lines[i]) + 1;
    }
    char *j = calloc(1, len);
    for (size_t i = 0; i < n; i++) {
        strcat(j, lines[i]);
        strcat(j, "\n");
    }
    free(copy);
    return j;
}

static int s_count(const char *text, const char *what)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, what)); p += strlen(what)) {
        n++;
    }
    return n;
}

/* The job id `zexec run/submit --detach` printed. */
static void s_id_of(const s_res_t *r, char id[33])
{
    cr_assert_eq(r->status, 0, "detach failed: %s", r->err);
    cr_assert_eq(strlen(r->out), 33, "one id and a newline: '%s'", r->out);
    memcpy(id, r->out, 32);
    id[32] = 0;
    cr_assert_eq(strspn(id, "0123456789abcdef"), 32);
}

/* The value of "key": N in the object of job id in `zexec jobs --json`;
   -1 when the job is not listed. */
static long s_job_field(const char *id, const char *key)
{
    const char *a[] = {"jobs", "--json", NULL};
    s_res_t r = s_zx("jobs", 20, a);
    cr_assert_eq(r.status, 0, "zexec jobs: %s", r.err);
    long v = -1;
    char pat[64];
    snprintf(pat, sizeof pat, "\"id\":\"%s\"", id);
    const char *p = strstr(r.out, pat);
    if (p) {
        const char *end = strchr(p, '}');
        char k[64];
        snprintf(k, sizeof k, "\"%s\":", key);
        const char *q = strstr(p, k);
        if (q && (!end || q < end)) {
            v = strtol(q + strlen(k), NULL, 10);
        }
    }
    s_free(&r);
    return v;
}

static void s_setup(void)
{
    cr_assert_not_null(mkdtemp(s_dir));
    s_zexec = zxt_bin("zexec");
    cr_assert_eq(zxt_broker_start(&s_c, NULL), 0);
    char *plugin = zxt_plugin("zexec_demo_plugin");
    const char *wargs[] = {"--allow-exec", "--threads", "2", "--procs", "4",
                           "--plugin",     plugin,      NULL};
    cr_assert_gt(zxt_worker_start(&s_c, "jc-w1", wargs), 0);
    free(plugin);
    const char *a[] = {"status", "--wait-workers", "1", "--timeout", "20", NULL};
    s_res_t r = s_zx("status", 30, a);
    cr_assert_eq(r.status, 0, "worker registered: %s", r.err);
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

TestSuite(jobs_cli, .init = s_setup, .fini = s_teardown, .timeout = 180);

#define S_CMD "sh", "-c", "echo out {}; echo err {} >&2; test $(( {} % 4 )) -ne 0"
#define S_INPUTS ":::", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"

Test(jobs_cli, results_of_a_detached_run_print_what_run_prints)
{
    const char *plain[] = {"run", "-q", "-k", "--", S_CMD, S_INPUTS, NULL};
    s_res_t run = s_zx("run", 60, plain);
    cr_assert_eq(run.status, 3, "jobs 4, 8, 12 fail: %s", run.err);

    const char *det[] = {"run", "--detach", "--job-name", "cli-run", "--", S_CMD, S_INPUTS, NULL};
    s_res_t d = s_zx("detach", 60, det);
    char id[33];
    s_id_of(&d, id);
    cr_assert(strstr(d.err, "zexec results"), "a hint names the next step: %s", d.err);
    s_free(&d);

    const char *res[] = {"results", id, "--format", "run", "--order", "input", NULL};
    s_res_t r = s_zx("results", 60, res);
    cr_assert_eq(r.status, run.status, "the same exit status as run: %s", r.err);
    cr_assert_str_eq(r.out, run.out, "the same stdout, in input order");
    /* the commands' stderr alike; run's notes name the failed jobs in both */
    char *e1 = s_lines_with(run.err, "err "), *e2 = s_lines_with(r.err, "err ");
    cr_assert_str_eq(e1, e2);
    free(e1);
    free(e2);
    cr_assert_eq(s_count(r.err, "failed on jc-w1 after 1 attempt: exited with status 1"), 3, "%s",
                 r.err);
    cr_assert(strstr(r.err, "job 8 failed"), "%s", r.err);

    /* fetched and acknowledged: nothing more to print */
    const char *again[] = {"results", id, "--no-wait", NULL};
    s_res_t a = s_zx("again", 30, again);
    cr_assert(a.status == 0 || a.status == 255, "%s", a.err);
    cr_assert_str_eq(a.out, "");
    s_free(&a);
    s_free(&r);
    s_free(&run);
}

Test(jobs_cli, results_killed_midway_then_again_print_every_result)
{
    enum { N = 120 };
    const char *det[N + 8] = {"run", "--detach", "--", "sh", "-c", "sleep 0.05; echo line {}",
                              ":::"};
    char nums[N][8];
    for (int i = 0; i < N; i++) {
        snprintf(nums[i], sizeof nums[i], "%d", i + 1);
        det[7 + i] = nums[i];
    }
    det[7 + N] = NULL;
    s_res_t d = s_zx("detach", 60, det);
    char id[33];
    s_id_of(&d, id);
    s_free(&d);

    const char *res[] = {"results", id, "--format", "run", NULL};
    pid_t pid = s_start("first", res);
    char first[600];
    s_path(first, sizeof first - 4, "first");
    strcat(first, "/out");
    struct {
        const char *path;
    } w = {first};
    bool midway = false;
    for (int i = 0; i < 3000 && !midway; i++) {
        char *t = zxt_slurp(w.path);
        midway = s_count(t, "\n") >= 20;
        free(t);
        if (!midway) {
            usleep(10000);
        }
    }
    cr_assert(midway, "the first results printed 20 lines");
    kill(pid, SIGKILL);
    s_res_t r1 = s_finish(pid, "first", 10);
    cr_assert_eq(r1.status, 128 + SIGKILL);

    s_res_t r2 = s_zx("second", 90, res);
    cr_assert_eq(r2.status, 0, "%s", r2.err);
    int dup = 0;
    for (int i = 1; i <= N; i++) {
        char line[32];
        snprintf(line, sizeof line, "line %d\n", i);
        int n1 = s_count(r1.out, line), n2 = s_count(r2.out, line);
        cr_assert_geq(n1 + n2, 1, "result %d lost", i);
        cr_assert_leq(n1, 1);
        cr_assert_leq(n2, 1);
        dup += n1 && n2;
    }
    cr_assert_lt(s_count(r2.out, "\n"), N, "the second run resumed: it did not print all again");
    cr_assert_lt(dup, N / 2, "few printed twice (%d)", dup);
    s_free(&r1);
    s_free(&r2);
}

Test(jobs_cli, jobs_shows_progress_and_cancel_stops_a_job)
{
    const char *det[] = {
        "run", "--detach", "--job-name", "slowjob", "--", "sleep", "1",  ":::", "1",  "2",
        "3",   "4",        "5",          "6",       "7",  "8",     "9",  "10",  "11", "12",
        "13",  "14",       "15",         "16",      "17", "18",    "19", "20",  NULL};
    s_res_t d = s_zx("detach", 60, det);
    char id[33];
    s_id_of(&d, id);
    s_free(&d);

    cr_assert_eq(s_job_field(id, "submitted"), 20);
    const char *tab[] = {"jobs", NULL};
    s_res_t t = s_zx("table", 20, tab);
    cr_assert_eq(t.status, 0);
    cr_assert(strstr(t.out, "SUBMITTED") && strstr(t.out, id) && strstr(t.out, "slowjob"), "%s",
              t.out);
    s_free(&t);
    /* progress: some done while others still wait (4 slots, 1 s each) */
    long done = 0;
    for (int i = 0; i < 600 && done < 4; i++) {
        done = s_job_field(id, "done");
        if (done < 4) {
            usleep(50000);
        }
    }
    cr_assert_geq(done, 4, "results arrive");
    cr_assert_lt(done, 20);

    const char *can[] = {"cancel", id, NULL};
    s_res_t c = s_zx("cancel", 30, can);
    cr_assert_eq(c.status, 0, "%s", c.err);
    cr_assert(strstr(c.out, "cancelled"), "%s", c.out);
    s_free(&c);
    cr_assert_eq(s_job_field(id, "queued"), 0);

    /* the results held stay fetchable; the job then ends */
    const char *res[] = {"results", id, NULL};
    s_res_t r = s_zx("results", 60, res);
    cr_assert_eq(r.status, 0, "%s", r.err);
    int n = s_count(r.out, "\"status\":\"ok\"");
    cr_assert_geq(n, 4);
    cr_assert_lt(n, 20, "the cancelled tasks never ran");
    s_free(&r);

    const char *bad[] = {"cancel", "0123456789abcdef0123456789abcdef", NULL};
    s_res_t b = s_zx("bad", 30, bad);
    cr_assert_neq(b.status, 0);
    cr_assert(strstr(b.err, "holds no job"), "%s", b.err);
    s_free(&b);
}

Test(jobs_cli, submit_detach_then_results_as_json)
{
    const char *det[] = {"submit", "--detach", "--job-name", "sq", "square", "[7]", NULL};
    s_res_t d = s_zx("detach", 60, det);
    char id[33];
    s_id_of(&d, id);
    s_free(&d);
    const char *res[] = {"results", id, NULL};
    s_res_t r = s_zx("results", 60, res);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_assert(strstr(r.out, "{\"seq\":1,\"status\":\"ok\",\"value\":49,\"node\":\"jc-w1\""), "%s",
              r.out);
    cr_assert_eq(s_count(r.out, "\n"), 1);
    s_free(&r);

    const char *fail[] = {"submit", "--detach", "divide", "[1, 0]", NULL};
    d = s_zx("detach2", 60, fail);
    s_id_of(&d, id);
    s_free(&d);
    const char *res2[] = {"results", id, NULL};
    r = s_zx("results2", 60, res2);
    cr_assert_eq(r.status, 1, "one failed result: %s", r.err);
    cr_assert(strstr(r.out, "\"status\":\"raised\",\"error\":{\"type\":\"ZeroDivisionError\""),
              "%s", r.out);
    s_free(&r);
}

Test(jobs_cli, detach_refuses_flags_that_act_on_delivery)
{
    const char *a[] = {"run", "--detach", "-k", "--", "true", ":::", "1", NULL};
    s_res_t r = s_zx("usage", 30, a);
    cr_assert_eq(r.status, 2);
    cr_assert(strstr(r.err, "--order input"), "%s", r.err);
    s_free(&r);
    const char *b[] = {"results", "nothex", NULL};
    r = s_zx("usage2", 30, b);
    cr_assert_eq(r.status, 2);
    s_free(&r);
}

Test(jobs_cli, tasks_the_broker_refuses_are_reported_and_not_in_the_job)
{
    /* a broker of its own without workers: its tasks stay queued, and it
       takes at most 3 per client */
    zxt_cluster_t c = {0};
    const char *bargs[] = {"--max-queued", "3", "--nofunc-grace", "600", NULL};
    cr_assert_eq(zxt_broker_start(&c, bargs), 0);
    const char *det[] = {"run", "--detach", "--broker", c.client_ep, "--", "true", ":::",
                         "1",   "2",        "3",        "4",         "5",  NULL};
    s_res_t d = s_zx("refused", 60, det);
    cr_assert_eq(d.status, 1, "%s", d.err);
    cr_assert(strstr(d.err, "refused 2 of 5 jobs"), "%s", d.err);
    char id[33];
    cr_assert_eq(strlen(d.out), 33, "the job id is still printed: %s", d.out);
    memcpy(id, d.out, 32);
    id[32] = 0;
    s_free(&d);
    const char *jobs[] = {"jobs", "--json", "--broker", c.client_ep, NULL};
    s_res_t j = s_zx("refused-jobs", 30, jobs);
    cr_assert(strstr(j.out, id) && strstr(j.out, "\"submitted\":3"), "%s", j.out);
    s_free(&j);
    zxt_cluster_stop(&c);
}

/* The id of the one job of state "open" in `zexec jobs --json` with tasks
   submitted; false when there is none yet. */
static bool s_open_job(char id[33])
{
    const char *a[] = {"jobs", "--json", NULL};
    s_res_t r = s_zx("jobs", 20, a);
    cr_assert_eq(r.status, 0, "zexec jobs: %s", r.err);
    const char *p = strstr(r.out, "\"state\":\"open\",\"submitted\":");
    bool found = p && p[strlen("\"state\":\"open\",\"submitted\":")] != '0';
    if (found) {
        const char *q = p;
        while (q > r.out && strncmp(q, "{\"id\":\"", 7) != 0) {
            q--;
        }
        cr_assert_eq(strncmp(q, "{\"id\":\"", 7), 0, "%s", r.out);
        memcpy(id, q + 7, 32);
        id[32] = 0;
    }
    s_free(&r);
    return found;
}

/* Writes s_dir/big/in.txt: 1100 inputs of 64 KB, and its path to in.
   `zexec run --detach -- sh -c "sleep 60" {} :::: in.txt` cannot finish:
   the client's send window (64 MB of arguments in flight) holds the last
   tasks back until results come, and the first ones run `sleep 60`, so
   the broker never ACCEPTs every task and the command waits, its job id
   unprinted. */
static void s_big_input(char *in, size_t len)
{
    s_path(in, len - 8, "big");
    strcat(in, "/in.txt");
    FILE *f = fopen(in, "w");
    cr_assert(f);
    static char line[64002];
    memset(line, 'x', sizeof line - 2);
    line[sizeof line - 2] = '\n';
    line[sizeof line - 1] = 0;
    for (int i = 0; i < 1100; i++) {
        fprintf(f, "%05d", i);
        fputs(line, f);
    }
    cr_assert_eq(fclose(f), 0);
}

/* Polls `zexec jobs` (bounded) until job id is cancelled with nothing
   queued or running (the worker reports its terminated tasks), and returns
   how many tasks it had. */
static long s_wait_cancelled(const char *id)
{
    const char *jobs[] = {"jobs", "--json", NULL};
    bool stopped = false;
    for (int i = 0; i < 600 && !stopped; i++) {
        s_res_t j = s_zx("jobs-after", 20, jobs);
        cr_assert_eq(j.status, 0, "%s", j.err);
        cr_assert(strstr(j.out, id), "the job is listed: %s", j.out);
        stopped = strstr(j.out, "\"state\":\"cancelled\"") && s_job_field(id, "queued") == 0 &&
                  s_job_field(id, "running") == 0;
        s_free(&j);
        if (!stopped) {
            usleep(50000);
        }
    }
    cr_assert(stopped, "job %s cancelled with nothing queued or running", id);
    return s_job_field(id, "submitted");
}

Test(jobs_cli, an_interrupted_detach_cancels_its_job_and_names_it)
{
    char in[600];
    s_big_input(in, sizeof in);
    const char *det[] = {"run", "--detach", "--", "sh", "-c", "sleep 60", "{}", "::::", in, NULL};
    pid_t pid = s_start("interrupted", det);
    char id[33];
    bool open = false;
    for (int i = 0; i < 1200 && !open; i++) {
        open = s_open_job(id);
        if (!open) {
            cr_assert_eq(waitpid(pid, NULL, WNOHANG), 0, "zexec run still waits");
            usleep(50000);
        }
    }
    cr_assert(open, "the job appeared in zexec jobs");
    kill(pid, SIGINT);
    s_res_t d = s_finish(pid, "interrupted", 60);
    cr_assert_eq(d.status, 128 + SIGINT, "%s", d.err);
    cr_assert_str_eq(d.out, "", "no id on stdout: nothing was detached");
    cr_assert(strstr(d.err, "interrupted: job ") && strstr(d.err, id) &&
                  strstr(d.err, " cancelled ("),
              "one line names the cancelled job %s: %s", id, d.err);
    cr_assert(strstr(d.err, "of 1100 tasks had been accepted"), "%s", d.err);
    s_free(&d);
    long submitted = s_wait_cancelled(id);
    cr_assert_gt(submitted, 0);
    cr_assert_lt(submitted, 1100, "the window held some back: they never reached the broker");
}

Test(jobs_cli, a_detach_that_times_out_cancels_its_job_and_names_it)
{
    char in[600];
    s_big_input(in, sizeof in);
    const char *det[] = {"run", "--detach", "--", "sh", "-c", "sleep 60", "{}", "::::", in, NULL};
    pid_t pid = s_start_env("timeout", det, "ZEXEC_DETACH_WAIT", "1");
    s_res_t d = s_finish(pid, "timeout", 90);
    cr_assert_eq(d.status, 255, "%s", d.err);
    cr_assert_str_eq(d.out, "", "no id on stdout: nothing was detached");
    const char *p = strstr(d.err, "did not accept every task within 1 s (");
    cr_assert(p, "%s", d.err);
    p = strstr(p, "): job ");
    cr_assert(p && strstr(p, " cancelled ("), "the line names the cancelled job: %s", d.err);
    char id[33];
    memcpy(id, p + strlen("): job "), 32);
    id[32] = 0;
    cr_assert_eq(strspn(id, "0123456789abcdef"), 32, "%s", d.err);
    s_free(&d);
    cr_assert_lt(s_wait_cancelled(id), 1100);
}
