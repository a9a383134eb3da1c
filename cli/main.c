/*  main.c - the zexec command: dispatches to a subcommand and holds the flag
    helpers they share. Every subcommand parses its own flags (getopt_long)
    and answers --help; a usage error names what was wrong and exits 2.
*/
#include "zx_czmq.h"
#include "zxc.h"

#include <czmq.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static void s_usage(FILE *out)
{
    fprintf(
        out,
        "usage: zexec COMMAND [OPTIONS] [ARGS]\n"
        "Runs work on a zexec cluster (a zexec-broker and its zexec-workers).\n"
        "\n"
        "commands:\n"
        "  run       run a command line once per input across the cluster (GNU parallel-like)\n"
        "  submit    call one function, print its result as JSON\n"
        "  map       call a function on JSON argument lists read from stdin, in order\n"
        "  status    the broker's view: workers, queues, totals\n"
        "  jobs      the detached jobs the broker holds (run/submit --detach), progress\n"
        "  results   print a detached job's results (JSON lines or run's output)\n"
        "  cancel    cancel a detached job\n"
        "  cluster   run a broker and N workers on this machine until Ctrl-C\n"
        "  keygen    make CURVE certificates or a shared secret\n"
        "\n"
        "'zexec COMMAND --help' describes each. Environment:\n"
        "  ZEXEC_BROKER           default broker endpoint, or a pair's two separated by a comma\n"
        "  ZEXEC_SECRET           shared secret\n"
        "  ZEXEC_CONNECT_TIMEOUT  seconds to wait for the broker before giving up (default 3)\n"
        "  ZEXEC_DETACH_WAIT      seconds run/submit --detach wait for the broker to accept\n"
        "                         every task (default 600)\n");
}

int main(int argc, char **argv)
{
    char zerr[256];
    if (!zx__zmq_runtime_ok(zerr, sizeof zerr)) {
        fprintf(stderr, "zexec: %s\n", zerr);
        return 1;
    }
    if (argc < 2) {
        s_usage(stderr);
        return ZXC_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        s_usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("zexec %d.%d.%d\n", ZEXEC_VERSION_MAJOR, ZEXEC_VERSION_MINOR, ZEXEC_VERSION_PATCH);
        return 0;
    }
    /* czmq logs to stdout unless told otherwise; stdout carries results
       (JSON lines, job output), so the library's log lines go to stderr */
    zsys_set_logstream(stderr);
    zsys_set_logident("zexec");
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {
        {"run", zxc_run_main},       {"submit", zxc_submit_main},   {"map", zxc_map_main},
        {"status", zxc_status_main}, {"cluster", zxc_cluster_main}, {"keygen", zx__keygen_main},
        {"jobs", zxc_jobs_main},     {"results", zxc_results_main}, {"cancel", zxc_cancel_main}};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        if (strcmp(cmd, cmds[i].name) == 0) {
            /* the subcommand sees itself as argv[0], as getopt expects */
            int rc = cmds[i].fn(argc - 1, argv + 1);
            zsys_shutdown();
            return rc;
        }
    }
    fprintf(stderr, "zexec: unknown command '%s'\nTry 'zexec --help'.\n", cmd);
    return ZXC_EXIT_USAGE;
}

int zxc_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "zexec %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'zexec %s --help'.\n", cmd);
    return ZXC_EXIT_USAGE;
}

int zxc_bad_flag(const char *cmd, int argc, char **argv)
{
    /* getopt_long leaves optind past the offending element */
    const char *what = optind > 0 && optind <= argc ? argv[optind - 1] : "?";
    if (optopt && optopt < 256) {
        return zxc_usage_error(cmd, "unknown flag or missing value: -%c", optopt);
    }
    return zxc_usage_error(cmd, "unknown flag or missing value: %s", what);
}
