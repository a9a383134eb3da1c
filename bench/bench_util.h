/*  bench_util.h - small helpers shared by the benchmark programs: clocks,
    percentiles, the RESULT lines scripts/bench collects, child processes
    started and stopped by PID, free loopback ports and a process's RSS.

    Every program prints its figures as

        RESULT <name>=<value> <unit>

    one per line on stdout; anything else it prints is commentary. A wrong
    result aborts the program with "WRONG: ..." and exit status 2, so a
    benchmark can be slow but never silently wrong. */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Monotonic seconds. */
double bu_now(void);

/* Sorts v in place and returns its p-th percentile (0..100), nearest rank. */
double bu_percentile(double *v, size_t n, double p);

/* Prints one RESULT line and flushes stdout. */
void bu_result(const char *name, double value, const char *unit);

/* Prints "WRONG: <message>" to stderr and stdout and exits with status 2. */
void bu_wrong(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Prints "ERROR: <message>" and exits with status 1 (setup failures). */
void bu_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* fork + execvp(argv[0], argv). The child dies with its parent
   (PR_SET_PDEATHSIG). Its stdout/stderr go to /dev/null unless
   BENCH_VERBOSE is set. Returns the pid or -1. */
pid_t bu_spawn(char *const argv[]);

/* SIGTERM, up to 5 s, then SIGKILL; always reaps. Ignores pid <= 0. */
void bu_stop(pid_t pid);

/* A TCP port on 127.0.0.1 that was free a moment ago, or -1. */
int bu_free_port(void);

/* Waits until a TCP connect to 127.0.0.1:port succeeds; true if it did. */
bool bu_wait_port(int port, double timeout);

/* VmRSS of pid in bytes from /proc/<pid>/status, or -1. */
long bu_rss_bytes(pid_t pid);

/* True if argv holds flag. */
bool bu_has_flag(int argc, char **argv, const char *flag);

/* The value after "--name" in argv, or NULL. */
const char *bu_opt(int argc, char **argv, const char *name);

#endif
