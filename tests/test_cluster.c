/*  test_cluster.c - a local cluster (zx_executor_new(NULL, ...)) does not
    outlive the program that started it, even when that program is killed
    with SIGKILL mid-task. */
#include "zx_testutil.h"

#include <zexec.h>

#include <criterion/criterion.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* pids whose parent is ppid (from /proc/<pid>/stat) */
static int s_children(pid_t ppid, pid_t *out, int max)
{
    DIR *d = opendir("/proc");
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) && n < max) {
        pid_t pid = (pid_t)atoi(e->d_name);
        if (pid <= 0) {
            continue;
        }
        char path[64], buf[512];
        snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
        FILE *f = fopen(path, "r");
        if (!f) {
            continue;
        }
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[len] = 0;
        char *rp = strrchr(buf, ')'); /* the command may hold spaces */
        int parent = 0;
        char state;
        if (rp && sscanf(rp + 1, " %c %d", &state, &parent) == 2 && parent == ppid &&
            state != 'Z') {
            out[n++] = pid;
        }
    }
    if (d) {
        closedir(d);
    }
    return n;
}

static pid_t *watched;
static int nwatched;

static bool s_all_gone(void *arg)
{
    for (int i = 0; i < nwatched; i++) {
        if (kill(watched[i], 0) == 0) {
            char path[64], state = 0;
            snprintf(path, sizeof path, "/proc/%d/stat", (int)watched[i]);
            FILE *f = fopen(path, "r");
            if (f) {
                char buf[512];
                size_t len = fread(buf, 1, sizeof buf - 1, f);
                buf[len] = 0;
                char *rp = strrchr(buf, ')');
                if (rp) {
                    sscanf(rp + 1, " %c", &state);
                }
                fclose(f);
            }
            if (state != 'Z') { /* zombies wait for init to reap them */
                return false;
            }
        }
    }
    return true;
}

static bool s_has_children(void *arg)
{
    pid_t tmp[8];
    return s_children(*(pid_t *)arg, tmp, 8) >= 3;
}

Test(cluster, local_cluster_stops_when_its_program_is_killed, .timeout = 60)
{
    int ready[2];
    cr_assert_eq(pipe(ready), 0);
    pid_t prog = fork();
    cr_assert_geq(prog, 0);
    if (prog == 0) {
        close(ready[0]);
        zx_options_t opts = {.local_workers = 2, .local_threads = 1, .local_procs = 1};
        zx_executor_t *ex = zx_executor_new(NULL, &opts);
        if (!ex) {
            _exit(2);
        }
        zx_future_t *f = zx_submitf(ex, "sleep", "d", 30.0);
        while (!zx_future_running(f)) {
            zx_future_result(f, 0.05, NULL, NULL);
        }
        (void)!write(ready[1], "r", 1);
        pause(); /* killed here, mid-task */
        _exit(0);
    }
    close(ready[1]);
    char c;
    cr_assert_eq(read(ready[0], &c, 1), 1, "the program never got its task running");
    close(ready[0]);
    cr_assert(zxt_wait_for(s_has_children, &prog, 10), "no broker and workers under it");
    pid_t kids[8];
    nwatched = s_children(prog, kids, 8);
    watched = kids;
    cr_assert_geq(nwatched, 3, "broker + 2 workers expected, found %d", nwatched);
    kill(prog, SIGKILL);
    waitpid(prog, NULL, 0);
    cr_assert(zxt_wait_for(s_all_gone, NULL, 10), "the local cluster outlived its program by 10 s");
}
