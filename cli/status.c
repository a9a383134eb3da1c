/*  status.c - `zexec status`: the broker's STATUS-REPLY (docs/protocol.md,
    docs/operations.md) as JSON with --json, else as tables. The reply is a
    map the broker may grow; unknown keys are kept in the JSON and missing
    ones print as "-" in the tables, so the two need not change in step.
*/
#include "zxc.h"
#include "zx_parse.h"

#include <czmq.h>
#include <getopt.h>
#include <string.h>

static void s_usage(FILE *out)
{
    fprintf(out, "usage: zexec status [OPTIONS]\n"
                 "Prints the broker's view: its configuration, the workers (node, pools, free\n"
                 "slots, running, done, failed, last heartbeat), queue depth per function and\n"
                 "client, and totals with the task rate. Exits 1 if the broker does not answer\n"
                 "within a few seconds.\n"
                 "\n" ZXC_CONN_HELP "  --json               print the reply as one JSON object\n"
                 "  --timeout S          how long to wait for the broker (default 3, or 60\n"
                 "                       with --wait-workers)\n"
                 "  --wait-workers N     first wait until at least N workers are registered\n"
                 "                       (for scripts and healthchecks; exit 1 on timeout)\n"
                 "  -h, --help           this text\n");
}

/* A field as text: numbers, strings, bools; "-" when absent. */
static const char *s_field(json_t *obj, const char *key, char *buf, size_t len)
{
    json_t *v = json_object_get(obj, key);
    if (json_is_string(v)) {
        snprintf(buf, len, "%s", json_string_value(v));
    } else if (json_is_integer(v)) {
        snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    } else if (json_is_real(v)) {
        snprintf(buf, len, "%.1f", json_real_value(v));
    } else if (json_is_boolean(v)) {
        snprintf(buf, len, "%s", json_is_true(v) ? "yes" : "no");
    } else if (json_is_array(v)) {
        snprintf(buf, len, "%zu", json_array_size(v));
    } else {
        snprintf(buf, len, "-");
    }
    return buf;
}

static void s_print_table(json_t *st)
{
    char a[128], b[128], c[128], d[128];
    json_t *br = json_object_get(st, "broker");
    printf("broker %s  version %s  up %s s  insecure %s\n", s_field(br, "id", a, sizeof a),
           s_field(br, "version", b, sizeof b), s_field(br, "uptime_s", c, sizeof c),
           s_field(br, "insecure", d, sizeof d));
    printf("  clients %s  workers %s\n", s_field(br, "clients_endpoint", a, sizeof a),
           s_field(br, "workers_endpoint", b, sizeof b));
    if (json_object_get(br, "pair")) {
        printf("  pair %s\n", s_field(br, "pair", a, sizeof a));
    }

    json_t *t = json_object_get(st, "totals");
    printf("totals: submitted %s  done %s  failed %s", s_field(t, "submitted", a, sizeof a),
           s_field(t, "done", b, sizeof b), s_field(t, "failed", c, sizeof c));
    printf("  cancelled %s  rejected %s", s_field(t, "cancelled", a, sizeof a),
           s_field(t, "rejected", b, sizeof b));
    printf("  queued %s  running %s  clients %s", s_field(t, "queued", a, sizeof a),
           s_field(t, "running", b, sizeof b), s_field(t, "clients", c, sizeof c));
    printf("  rate %s/s\n", s_field(t, "rate_per_s", a, sizeof a));

    json_t *ws = json_object_get(st, "workers");
    printf("\n%-20s %7s %7s %5s %6s %6s %7s %8s %7s %7s %s\n", "NODE", "PID", "THREADS", "PROCS",
           "FREE_T", "FREE_P", "RUNNING", "DONE", "FAILED", "HB_AGO", "STATE");
    size_t i;
    json_t *w;
    json_array_foreach(ws, i, w)
    {
        char e[128], f[128], g[128], h[128], k[128];
        json_t *hb = json_object_get(w, "last_heartbeat_ms_ago");
        char hbs[32] = "-";
        if (json_is_integer(hb)) {
            snprintf(hbs, sizeof hbs, "%.1fs", (double)json_integer_value(hb) / 1000.0);
        }
        printf("%-20s %7s %7s %5s %6s %6s %7s %8s %7s %7s %s\n", s_field(w, "node", a, sizeof a),
               s_field(w, "pid", b, sizeof b), s_field(w, "threads", c, sizeof c),
               s_field(w, "procs", d, sizeof d), s_field(w, "free_thread", e, sizeof e),
               s_field(w, "free_process", f, sizeof f), s_field(w, "running", g, sizeof g),
               s_field(w, "done", h, sizeof h), s_field(w, "failed", k, sizeof k), hbs,
               json_is_true(json_object_get(w, "draining")) ? "draining" : "ready");
    }
    if (json_array_size(ws) == 0) {
        printf("(no workers)\n");
    }

    json_t *qs = json_object_get(st, "queues");
    if (json_array_size(qs) > 0) {
        printf("\n%-24s %-24s %-32s %s\n", "FUNCTION", "CLIENT", "SESSION", "DEPTH");
        json_t *q;
        json_array_foreach(qs, i, q)
        {
            printf("%-24s %-24s %-32s %s\n", s_field(q, "function", a, sizeof a),
                   s_field(q, "client", b, sizeof b), s_field(q, "session", c, sizeof c),
                   s_field(q, "depth", d, sizeof d));
        }
    } else {
        printf("\n(no queued tasks)\n");
    }
}

int zxc_status_main(int argc, char **argv)
{
    static const struct option longopts[] = {ZXC_CONN_OPTIONS,
                                             {"json", no_argument, NULL, 'j'},
                                             {"timeout", required_argument, NULL, 't'},
                                             {"wait-workers", required_argument, NULL, 'w'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    zxc_conn_t conn;
    zxc_conn_init(&conn);
    bool as_json = false;
    double timeout = 0;
    long want = -1;
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (zxc_conn_flag(&conn, opt, optarg)) {
            continue;
        }
        switch (opt) {
        case 'h': s_usage(stdout); return 0;
        case 'j': as_json = true; break;
        case 't':
            if (!zx__parse_double(optarg, 0.1, 3600, &timeout)) {
                return zxc_usage_error("status", "invalid --timeout '%s': seconds >= 0.1", optarg);
            }
            break;
        case 'w':
            if (!zx__parse_long(optarg, 0, 100000, &want)) {
                return zxc_usage_error("status", "invalid --wait-workers '%s': 0..100000", optarg);
            }
            break;
        default: return zxc_bad_flag("status", argc, argv);
        }
    }
    if (optind < argc) {
        return zxc_usage_error("status", "unexpected argument '%s'", argv[optind]);
    }
    json_t *st = NULL;
    char err[512] = "no answer from the broker";
    if (want >= 0) {
        /* poll: STATUS is cheap for the broker, and registration has no
           event a client could wait on */
        double limit = timeout > 0 ? timeout : 60.0;
        int64_t end = zclock_mono() + (int64_t)(limit * 1000.0);
        size_t have = 0;
        while (true) {
            double left = (double)(end - zclock_mono()) / 1000.0;
            if (left < 0.1) {
                left = 0.1;
            }
            if (zxc_probe(&conn, left < 3.0 ? left : 3.0, &st, err, sizeof err) == 0) {
                have = json_array_size(json_object_get(st, "workers"));
                if (have >= (size_t)want) {
                    break;
                }
                json_decref(st);
                st = NULL;
            }
            if (zclock_mono() >= end) {
                fprintf(stderr, "zexec status: %zu of %ld workers registered after %.1f s%s%s\n",
                        have, want, limit, have ? "" : ": ", have ? "" : err);
                return ZXC_EXIT_FAIL;
            }
            zclock_sleep(250);
        }
    } else if (zxc_probe(&conn, timeout, &st, err, sizeof err) != 0) {
        fprintf(stderr, "zexec status: %s\n", err);
        return ZXC_EXIT_FAIL;
    }
    if (as_json) {
        zxc_json_print(stdout, st);
        putchar('\n');
    } else {
        s_print_table(st);
    }
    json_decref(st);
    return 0;
}
