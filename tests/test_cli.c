/*  test_cli.c - the zexec command, run as a program against a real broker
    and real workers on loopback: what it prints, its exit statuses, the job
    log, and how it fails (bad flags, bad input, no broker).
*/
#include "zx_testutil.h"

#include <criterion/criterion.h>
#include <czmq.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static zxt_cluster_t s_c;
static char *s_zexec, *s_plugin;
static char s_dir[] = "/tmp/zx_cli_XXXXXX";

typedef zxt_proc_t s_res_t;

/* Runs zexec with args (NULL-terminated) and stdin text, for at most
   timeout seconds. */
static s_res_t s_zx(const char *in, double timeout, const char *const *args)
{
    const char *env[] = {"ZEXEC_BROKER", NULL, "ZEXEC_PROGRESS_EVERY", "0.05", NULL};
    pid_t pid = zxt_run_cmd(s_zexec, s_dir, false, in, -1, args, env);
    cr_assert_gt(pid, 0);
    return zxt_collect(pid, s_dir, timeout);
}

#define s_free zxt_proc_free

static void s_setup(void)
{
    cr_assert_not_null(mkdtemp(s_dir));
    s_zexec = zxt_bin("zexec");
    s_plugin = zxt_plugin("zexec_demo_plugin");
    cr_assert_eq(zxt_broker_start(&s_c, NULL), 0);
    const char *wargs[] = {"--plugin", s_plugin, "--allow-exec", "--threads", "2", "--procs",
                           "2",        NULL};
    cr_assert_gt(zxt_worker_start(&s_c, "cli-w1", wargs), 0);
    cr_assert_gt(zxt_worker_start(&s_c, "cli-w2", wargs), 0);
    const char *a[] = {"status", "--broker",  s_c.client_ep, "--wait-workers",
                       "2",      "--timeout", "20",          NULL};
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
    free(s_plugin);
}

TestSuite(cli, .init = s_setup, .fini = s_teardown, .timeout = 120);

Test(cli, submit_prints_the_result_as_json)
{
    const char *a[] = {"submit", "--broker", s_c.client_ep, "square", "[12]", NULL};
    s_res_t r = s_zx(NULL, 30, a);
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_assert_str_eq(r.out, "144\n");
    s_free(&r);
    /* every JSON type goes through msgpack and back unchanged */
    const char *b[] = {
        "submit",
        "--broker",
        s_c.client_ep,
        "echo",
        "[1, -2, 2.5, \"h\\u00e9\", null, true, false, [1, [2]], {\"k\": {\"v\": 3}}]",
        NULL};
    r = s_zx(NULL, 30, b);
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_assert_str_eq(r.out, "[1,-2,2.5,\"h\xc3\xa9\",null,true,false,[1,[2]],{\"k\":{\"v\":3}}]\n");
    s_free(&r);
}

Test(cli, submit_failure_prints_type_message_and_node_and_exits_1)
{
    const char *a[] = {"submit", "--broker", s_c.client_ep, "divide", "[1, 0]", NULL};
    s_res_t r = s_zx(NULL, 30, a);
    cr_assert_eq(r.status, 1);
    cr_assert_str_eq(r.out, "");
    cr_assert(strstr(r.err, "ZeroDivisionError: division by zero (node cli-w") &&
                  strstr(r.err, ", pid "),
              "stderr: %s", r.err);
    s_free(&r);
}

Test(cli, map_writes_one_result_per_line_in_input_order)
{
    zchunk_t *in = zchunk_new(NULL, 0), *want = zchunk_new(NULL, 0);
    for (int i = 1; i <= 300; i++) {
        char line[64];
        /* later inputs finish first: order must come from the input */
        int n = snprintf(line, sizeof line, "[%d, %s]\n", i, i % 7 == 0 ? "0.05" : "0");
        zchunk_extend(in, line, (size_t)n);
        n = snprintf(line, sizeof line, "%d\n", i * i);
        zchunk_extend(want, line, (size_t)n);
        if (i == 150) {
            zchunk_extend(in, "\n", 1); /* blank lines are skipped */
        }
    }
    zchunk_extend(in, "", 1);
    zchunk_extend(want, "", 1);
    const char *a[] = {"map", "--broker", s_c.client_ep, "slow_square", NULL};
    s_res_t r = s_zx((char *)zchunk_data(in), 60, a);
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_assert_str_eq(r.out, (char *)zchunk_data(want));
    cr_assert(strstr(r.err, "map 300/300 done, 0 failed"), "progress line: %s", r.err);
    s_free(&r);
    /* chunked: same answer */
    const char *b[] = {"map",      "-q",          "--chunksize", "16",
                       "--broker", s_c.client_ep, "slow_square", NULL};
    r = s_zx((char *)zchunk_data(in), 60, b);
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_assert_str_eq(r.out, (char *)zchunk_data(want));
    cr_assert_str_eq(r.err, "", "--quiet prints nothing on stderr");
    s_free(&r);
    zchunk_destroy(&in);
    zchunk_destroy(&want);
}

Test(cli, map_names_the_bad_line_and_exits_2)
{
    const char *a[] = {"map", "-q", "--broker", s_c.client_ep, "square", NULL};
    s_res_t r = s_zx("[1]\n[2]\n{\"not\": \"a list\"}\n[4]\n", 30, a);
    cr_assert_eq(r.status, 2);
    cr_assert(strstr(r.err, "stdin line 3"), "stderr: %s", r.err);
    s_free(&r);
    r = s_zx("[1]\n[2, \n", 30, a);
    cr_assert_eq(r.status, 2);
    cr_assert(strstr(r.err, "stdin line 2") && strstr(r.err, "not valid JSON"), "stderr: %s",
              r.err);
    s_free(&r);
}

Test(cli, map_stops_at_the_first_failure_with_exit_1)
{
    const char *a[] = {"map", "-q", "--broker", s_c.client_ep, "divide", NULL};
    s_res_t r = s_zx("[6, 3]\n[1, 0]\n[8, 2]\n", 30, a);
    cr_assert_eq(r.status, 1);
    cr_assert(strncmp(r.out, "2", 1) == 0 && !strstr(r.out, "4"), "stdout: %s", r.out);
    cr_assert(strstr(r.err, "(node cli-w"), "stderr: %s", r.err);
    s_free(&r);
}

Test(cli, run_substitutes_every_replacement_string)
{
    const char *a[] = {"run",  "-q",  "-k",        "--broker", s_c.client_ep, "--",
                       "echo", "{}",  "{.}",       "{/}",      "{//}",        "{/.}",
                       "{#}",  ":::", "dir/a.txt", "b.tar.gz", NULL};
    s_res_t r = s_zx(NULL, 30, a);
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_assert_str_eq(r.out, "dir/a.txt dir/a a.txt dir a 1\nb.tar.gz b.tar b.tar.gz . b.tar 2\n");
    s_free(&r);
    /* without a replacement string the input is the last argument; inputs
       from stdin */
    const char *b[] = {"run", "-q", "-k", "--broker", s_c.client_ep, "echo", "x", NULL};
    r = s_zx("1\n2\n3\n", 30, b);
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_assert_str_eq(r.out, "x 1\nx 2\nx 3\n");
    s_free(&r);
}

Test(cli, run_counts_failures_in_its_exit_status_and_the_joblog_and_resume_skips_successes)
{
    char log[512], inputs[512];
    snprintf(log, sizeof log, "%s/jobs.tsv", s_dir);
    snprintf(inputs, sizeof inputs, "%s/inputs", s_dir);
    FILE *f = fopen(inputs, "w");
    for (int i = 1; i <= 40; i++) {
        fprintf(f, "%d\n", i);
    }
    fclose(f);
    /* multiples of 10 fail */
    const char *a[] = {
        "run",         "-q",   "--joblog", log,  "--broker",
        s_c.client_ep, "--",   "sh",       "-c", "case {} in *0) exit 3;; *) echo ok {};; esac",
        "::::",        inputs, NULL};
    s_res_t r = s_zx(NULL, 60, a);
    cr_assert_eq(r.status, 4, "4 jobs failed; stderr: %s", r.err);
    int lines = 0, oks = 0;
    for (char *p = r.out; (p = strstr(p, "ok ")); p++) {
        oks++;
    }
    cr_assert_eq(oks, 36);
    cr_assert(strstr(r.err, "job 10 (10) failed on cli-w") && strstr(r.err, "exited with status 3"),
              "stderr: %s", r.err);
    s_free(&r);
    char *text = zxt_slurp(log);
    cr_assert(strncmp(text, "Seq\tInput\tNode\tExitval\tStarttime\tRuntime\tAttempts\n", 50) == 0);
    int failed = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        lines++;
        int seq, exit_code, attempts;
        char input[32], node[64];
        double start, dur;
        if (sscanf(line, "%d\t%31s\t%63s\t%d\t%lf\t%lf\t%d", &seq, input, node, &exit_code, &start,
                   &dur, &attempts) == 7) {
            cr_assert_eq(atoi(input), seq);
            cr_assert_eq(exit_code, seq % 10 == 0 ? 3 : 0, "line: %s", line);
            cr_assert_eq(attempts, 1);
            cr_assert_gt(start, 1e9);
            failed += exit_code != 0;
            cr_assert(strncmp(node, "cli-w", 5) == 0, "job %d's node: %s", seq, node);
        }
    }
    free(text);
    cr_assert_eq(lines, 41);
    cr_assert_eq(failed, 4);

    /* --resume runs only the failed ones; --retries counts attempts */
    const char *b[] = {"run",
                       "-q",
                       "--joblog",
                       log,
                       "--resume",
                       "--retries",
                       "2",
                       "--broker",
                       s_c.client_ep,
                       "--",
                       "sh",
                       "-c",
                       "case {} in 20) exit 5;; *) echo again {};; esac",
                       "::::",
                       inputs,
                       NULL};
    r = s_zx(NULL, 60, b);
    cr_assert_eq(r.status, 1, "job 20 still fails; stderr: %s", r.err);
    oks = 0;
    for (char *p = r.out; (p = strstr(p, "again ")); p++) {
        oks++;
    }
    cr_assert_eq(oks, 3, "only 10, 30, 40 ran again: %s", r.out);
    cr_assert(strstr(r.err, "job 20 (20) failed on cli-w") && strstr(r.err, "after 3 attempts"),
              "stderr: %s", r.err);
    s_free(&r);
    text = zxt_slurp(log);
    cr_assert(strstr(text, "\n20\t20\tcli-w") && strstr(text, "\t5\t"), "log: %s", text);
    free(text);
}

Test(cli, run_keep_order_prints_in_input_order)
{
    const char *a[] = {
        "run", "-q", "-k", "--broker", s_c.client_ep, "--", "sh", "-c", "sleep 0.{}; echo {}",
        ":::", "3",  "2",  "1",        "0",           NULL};
    s_res_t r = s_zx(NULL, 30, a);
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_assert_str_eq(r.out, "3\n2\n1\n0\n");
    s_free(&r);
}

Test(cli, status_shows_the_workers_as_json_and_as_a_table)
{
    const char *a[] = {"status", "--json", "--broker", s_c.client_ep, NULL};
    s_res_t r = s_zx(NULL, 30, a);
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_assert(r.out[0] == '{' && strstr(r.out, "\"node\":\"cli-w1\"") &&
                  strstr(r.out, "\"node\":\"cli-w2\"") && strstr(r.out, "\"totals\":{"),
              "stdout: %s", r.out);
    s_free(&r);
    const char *b[] = {"status", "--broker", s_c.client_ep, NULL};
    r = s_zx(NULL, 30, b);
    cr_assert_eq(r.status, 0);
    cr_assert(strstr(r.out, "NODE") && strstr(r.out, "cli-w1") && strstr(r.out, "totals:"),
              "stdout: %s", r.out);
    s_free(&r);
}

Test(cli, an_unreachable_broker_is_a_clear_error_after_the_connect_timeout)
{
    /* the message names the wait it gave up after: the bounded wait ran,
       without a wall-clock bound here (s_zx's own limit catches a hang) */
    setenv("ZEXEC_CONNECT_TIMEOUT", "1.5", 1);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", zxt_free_port());
    const char *cmds[][8] = {{"status", "--broker", ep, NULL},
                             {"submit", "--broker", ep, "square", "[1]", NULL},
                             {"map", "--broker", ep, "square", NULL},
                             {"run", "--broker", ep, "echo", ":::", "a", NULL}};
    for (size_t i = 0; i < 4; i++) {
        s_res_t r = s_zx("[1]\n", 20, cmds[i]);
        cr_assert_eq(r.status, i == 3 ? 255 : 1, "%s: status %d", cmds[i][0], r.status);
        cr_assert(strstr(r.err, "no answer from the broker at") && strstr(r.err, ep) &&
                      strstr(r.err, "within 1.5 s"),
                  "%s: %s", cmds[i][0], r.err);
        s_free(&r);
    }
    unsetenv("ZEXEC_CONNECT_TIMEOUT");
}

/* Ctrl-C (or SIGTERM) while the command waits for the broker's first
   answer ends it as the shell expects, 130 (143), saying so; not as if the
   broker had failed. The barrier: a listener that accepts the command's
   connection and never answers, so the command is in that wait. */
Test(cli, a_signal_while_waiting_for_the_broker_exits_128_plus_its_number)
{
    const int sigs[] = {SIGINT, SIGTERM};
    for (size_t i = 0; i < 2; i++) {
        int port = zxt_free_port();
        int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert_geq(lfd, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        cr_assert_eq(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
        cr_assert_eq(listen(lfd, 4), 0);
        char ep[64];
        snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
        const char *args[] = {"status", "--broker", ep, NULL};
        const char *env[] = {"ZEXEC_CONNECT_TIMEOUT", "60", NULL};
        pid_t pid = zxt_run_cmd(s_zexec, s_dir, false, "", -1, args, env);
        cr_assert_gt(pid, 0);
        struct pollfd pfd = {.fd = lfd, .events = POLLIN};
        cr_assert_eq(poll(&pfd, 1, 30000), 1, "the command connects");
        int cfd = accept(lfd, NULL, NULL);
        cr_assert_geq(cfd, 0);
        cr_assert_eq(kill(pid, sigs[i]), 0);
        s_res_t r = zxt_collect(pid, s_dir, 30);
        cr_assert_eq(r.status, 128 + sigs[i], "status %d: %s", r.status, r.err);
        cr_assert(strstr(r.err, "interrupted"), "%s", r.err);
        s_free(&r);
        close(cfd);
        close(lfd);
    }
}

Test(cli, bad_flags_and_input_exit_2_naming_the_problem_and_help_exits_0)
{
    const char *bad[][8] = {{"run", "--bogus", "echo", NULL},
                            {"run", "--jobs", "0", "echo", ":::", "a", NULL},
                            {"run", "--resume", "echo", ":::", "a", NULL},
                            {"run", "echo", "{..}", ":::", "a", NULL},
                            {"submit", "--pool", "gpu", "square", NULL},
                            {"submit", "square", "{not json", NULL},
                            {"submit", "square", "3", NULL},
                            {"map", "--chunksize", "x", "square", NULL},
                            {"status", "--nope", NULL},
                            {"cluster", "--workers", "-1", NULL},
                            {"frobnicate", NULL}};
    const char *named[] = {"--bogus", "--jobs",    "--resume",   "unknown replacement string",
                           "--pool",  "not valid", "JSON array", "--chunksize",
                           "--nope",  "--workers", "frobnicate"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        s_res_t r = s_zx(NULL, 10, bad[i]);
        cr_assert_eq(r.status, 2, "%s %s: status %d", bad[i][0], bad[i][1], r.status);
        cr_assert(strstr(r.err, named[i]), "case %zu: stderr does not name '%s': %s", i, named[i],
                  r.err);
        s_free(&r);
    }
    const char *sub[] = {"run", "submit", "map", "status", "cluster", "keygen"};
    for (size_t i = 0; i < 6; i++) {
        const char *a[] = {sub[i], "--help", NULL};
        s_res_t r = s_zx(NULL, 10, a);
        cr_assert_eq(r.status, 0, "%s --help", sub[i]);
        cr_assert(strstr(r.out, "usage: zexec"), "%s --help: %s", sub[i], r.out);
        s_free(&r);
    }
}

static bool s_gone(void *arg)
{
    return kill(*(pid_t *)arg, 0) != 0;
}

Test(cli, cluster_serves_until_sigterm_then_stops_its_daemons)
{
    char cep[64], wep[64];
    snprintf(cep, sizeof cep, "tcp://127.0.0.1:%d", zxt_free_port());
    snprintf(wep, sizeof wep, "tcp://127.0.0.1:%d", zxt_free_port());
    char *argv[] = {s_zexec,    "cluster", "--workers", "2", "--threads",          "1",
                    "--procs",  "1",       "--clients", cep, "--workers-endpoint", wep,
                    "--plugin", s_plugin,  "-q",        NULL};
    pid_t pid = zxt_spawn(argv);
    cr_assert_gt(pid, 0);
    const char *a[] = {"status", "--json",    "--broker", cep, "--wait-workers",
                       "2",      "--timeout", "20",       NULL};
    s_res_t r = s_zx(NULL, 30, a);
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    /* the worker pids, to check they are gone afterwards */
    pid_t wp[2] = {0, 0};
    char *p = r.out;
    for (int i = 0; i < 2; i++) {
        p = strstr(p, "\"pid\":");
        cr_assert(p);
        p += 6;
        wp[i] = (pid_t)atoi(p);
    }
    s_free(&r);
    const char *b[] = {"submit", "--broker", cep, "square", "[9]", NULL};
    r = s_zx(NULL, 30, b);
    cr_assert_str_eq(r.out, "81\n");
    s_free(&r);
    kill(pid, SIGTERM);
    int st;
    cr_assert(zxt_wait_exit(pid, 20, &st));
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    for (int i = 0; i < 2; i++) {
        cr_assert(zxt_wait_for(s_gone, &wp[i], 5), "worker %d is gone", (int)wp[i]);
    }
    const char *c[] = {"status", "--timeout", "0.5", "--broker", cep, NULL};
    r = s_zx(NULL, 10, c);
    cr_assert_eq(r.status, 1, "the broker is gone too");
    s_free(&r);
}

Test(cli, bytes_come_back_as_text_or_as_hex_objects)
{
    /* exec's stdout is msgpack bin: text stays a string, other bytes become $hex */
    const char *a[] = {"submit",
                       "--broker",
                       s_c.client_ep,
                       "--pool",
                       "process",
                       "exec",
                       "[[\"printf\", \"hi\\\\001\\\\000x\"], {}]",
                       NULL};
    s_res_t r = s_zx(NULL, 30, a);
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_assert(strstr(r.out, "\"stdout\":{\"$hex\":\"6869010078\"}"), "stdout: %s", r.out);
    cr_assert(strstr(r.out, "\"stderr\":\"\""), "stdout: %s", r.out);
    s_free(&r);
    const char *b[] = {
        "submit", "--broker", s_c.client_ep, "exec", "[[\"printf\", \"h\\u00e9llo\"], {}]", NULL};
    r = s_zx(NULL, 30, b);
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_assert(strstr(r.out, "\"stdout\":\"h\\u00e9llo\"") || strstr(r.out, "\"stdout\":\"héllo\""),
              "stdout: %s", r.out);
    s_free(&r);
    const char *c[] = {"submit",
                       "--broker",
                       s_c.client_ep,
                       "echo",
                       "[null, true, -5, 2.5, \"s\", [1], {\"k\": {}}]",
                       NULL};
    r = s_zx(NULL, 30, c);
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    cr_assert_str_eq(r.out, "[null,true,-5,2.5,\"s\",[1],{\"k\":{}}]\n");
    s_free(&r);
}

Test(cli, submit_time_limit_and_timeout_are_separate_flags)
{
    const char *a[] = {"submit", "--broker", s_c.client_ep, "--time-limit",
                       "0.3",    "sleep",    "[5]",         NULL};
    s_res_t r = s_zx(NULL, 30, a);
    cr_assert_eq(r.status, 1, "stdout %s stderr %s", r.out, r.err);
    /* the 5 s task failed with TimeLimitError: the limit cut it, while the
       submit's own wait (--timeout, unset) did not end it */
    cr_assert(strstr(r.err, "TimeLimitError"), "stderr: %s", r.err);
    s_free(&r);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", zxt_free_port());
    const char *b[] = {"submit", "--broker", ep, "--timeout", "1", "square", "[2]", NULL};
    r = s_zx(NULL, 30, b);
    cr_assert_eq(r.status, 1);
    cr_assert(strstr(r.err, ep) && strstr(r.err, "within 1.0 s"), "stderr: %s", r.err);
    s_free(&r);
}

/* Reads pid numbers after `key` in text into pids; returns how many. */
static int s_pids_after(const char *text, const char *key, pid_t *pids, int max)
{
    const char *p = strstr(text, key);
    int n = 0;
    if (!p) {
        return 0;
    }
    p += strlen(key);
    while (n < max) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v <= 0) {
            break;
        }
        pids[n++] = (pid_t)v;
        p = end;
    }
    return n;
}

/* Starts `zexec cluster` with 2 workers; returns its pid and fills pids with
   the broker's and the workers' as it printed them. */
static pid_t s_cluster_start(pid_t pids[3], char *cep, size_t ceplen)
{
    char wep[64], errp[600];
    snprintf(cep, ceplen, "tcp://127.0.0.1:%d", zxt_free_port());
    snprintf(wep, sizeof wep, "tcp://127.0.0.1:%d", zxt_free_port());
    snprintf(errp, sizeof errp, "%s/cluster.err", s_dir);
    char *argv[] = {s_zexec,   "cluster", "--workers", "2", "--threads",          "1",
                    "--procs", "1",       "--clients", cep, "--workers-endpoint", wep,
                    "-q",      NULL};
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int e = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(e, 2);
        execv(s_zexec, argv);
        _exit(127);
    }
    char *text = NULL;
    int64_t deadline = zclock_mono() + 20000;
    int nw = 0;
    while (zclock_mono() < deadline) {
        free(text);
        text = zxt_slurp(errp);
        const char *w = strstr(text, "worker pids");
        if (w && strchr(w, '\n')) {
            nw = s_pids_after(text, "worker pids", pids + 1, 2);
            break;
        }
        zclock_sleep(20);
    }
    cr_assert_eq(nw, 2, "stderr: %s", text);
    cr_assert_eq(s_pids_after(text, "broker pid", pids, 1), 1, "stderr: %s", text);
    cr_assert(strstr(text, cep) && strstr(text, wep), "endpoints printed: %s", text);
    free(text);
    const char *a[] = {"status", "--broker", cep, "--wait-workers", "2", "--timeout", "20", NULL};
    s_res_t r = s_zx(NULL, 30, a);
    cr_assert_eq(r.status, 0, "stderr: %s", r.err);
    s_free(&r);
    return pid;
}

Test(cli, cluster_stops_every_child_it_printed_on_sigint)
{
    pid_t pids[3] = {0};
    char cep[64];
    pid_t pid = s_cluster_start(pids, cep, sizeof cep);
    kill(pid, SIGINT);
    int st;
    cr_assert(zxt_wait_exit(pid, 20, &st), "zexec cluster exits after SIGINT");
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    for (int i = 0; i < 3; i++) {
        cr_assert(zxt_wait_for(s_gone, &pids[i], 5), "child %d is gone", (int)pids[i]);
    }
}

Test(cli, cluster_exits_1_and_stops_the_rest_when_a_worker_dies)
{
    pid_t pids[3] = {0};
    char cep[64];
    pid_t pid = s_cluster_start(pids, cep, sizeof cep);
    kill(pids[2], SIGKILL);
    int st;
    bool exited = zxt_wait_exit(pid, 20, &st);
    if (!exited) {
        kill(pid, SIGINT); /* do not leave it behind */
        zxt_wait_exit(pid, 20, &st);
    }
    cr_assert(exited, "zexec cluster exits when a worker dies");
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1, "status %d", st);
    for (int i = 0; i < 3; i++) {
        cr_assert(zxt_wait_for(s_gone, &pids[i], 5), "child %d is gone", (int)pids[i]);
    }
}

Test(cli, a_shared_secret_signs_status_and_submit_and_without_it_the_broker_is_silent)
{
    char secret[600];
    snprintf(secret, sizeof secret, "%s/secret", s_dir);
    const char *k[] = {"keygen", "--secret", secret, NULL};
    s_res_t r = s_zx(NULL, 10, k);
    cr_assert_eq(r.status, 0, "keygen: %s", r.err);
    s_free(&r);
    zxt_cluster_t c;
    const char *bargs[] = {"--secret-file", secret, NULL};
    cr_assert_eq(zxt_broker_start(&c, bargs), 0);
    const char *wargs[] = {"--secret-file", secret, "--plugin", s_plugin, NULL};
    cr_assert_gt(zxt_worker_start(&c, "cli-signed", wargs), 0);
    const char *a[] = {"status", "--json",         "--broker", c.client_ep, "--secret-file",
                       secret,   "--wait-workers", "1",        "--timeout", "20",
                       NULL};
    r = s_zx(NULL, 30, a);
    bool ok = r.status == 0 && strstr(r.out, "\"node\":\"cli-signed\"");
    char *msg = strdup(r.err);
    s_free(&r);
    const char *b[] = {"submit", "--broker", c.client_ep, "--secret-file",
                       secret,   "square",   "[12]",      NULL};
    r = s_zx(NULL, 30, b);
    bool ok2 = r.status == 0 && strcmp(r.out, "144\n") == 0;
    s_free(&r);
    const char *d[] = {"status", "--broker", c.client_ep, "--timeout", "1", NULL};
    r = s_zx(NULL, 10, d);
    int unsigned_status = r.status;
    s_free(&r);
    zxt_cluster_stop(&c);
    cr_assert(ok, "signed status: %s", msg);
    free(msg);
    cr_assert(ok2, "signed submit");
    cr_assert_eq(unsigned_status, 1, "an unsigned status gets no answer");
}
