/*  zxc.h - internals of the zexec command (cli/): the subcommands' entry
    points, flag parsing shared by them, the connection options every
    network subcommand takes, JSON <-> msgpack conversion (jansson) and the
    progress display. Only the zexec program uses these.
*/
#ifndef ZXC_H
#define ZXC_H

#include <zexec.h>

#include <jansson.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stdio.h>

/* Exit statuses shared by every subcommand. */
enum { ZXC_EXIT_OK = 0, ZXC_EXIT_FAIL = 1, ZXC_EXIT_USAGE = 2 };

/* How many seconds a subcommand waits for the broker's WELCOME before it
   says the broker cannot be reached ($ZEXEC_CONNECT_TIMEOUT overrides). */
#define ZXC_CONNECT_TIMEOUT 3.0

/* ---- subcommands -------------------------------------------------------------- */
int zxc_run_main(int argc, char **argv);
int zxc_submit_main(int argc, char **argv);
int zxc_map_main(int argc, char **argv);
int zxc_status_main(int argc, char **argv);
int zxc_cluster_main(int argc, char **argv);
int zxc_jobs_main(int argc, char **argv);    /* jobs.c: zexec jobs */
int zxc_results_main(int argc, char **argv); /* jobs.c: zexec results JOB */
int zxc_cancel_main(int argc, char **argv);  /* jobs.c: zexec cancel JOB */
int zx__keygen_main(int argc, char **argv);  /* keygen.c */

/* ---- flags ---------------------------------------------------------------------- */

/* Prints "zexec CMD: <message>" and a hint to --help on stderr; returns
   ZXC_EXIT_USAGE for the caller to return. */
int zxc_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Reports getopt's '?' (unknown flag or missing value) by name. */
int zxc_bad_flag(const char *cmd, int argc, char **argv);

/* The connection flags of run/submit/map/status: --broker EP (default
   $ZEXEC_BROKER, then ZX_DEFAULT_CLIENT_ENDPOINT), --key, --server-key,
   --secret-file (default $ZEXEC_SECRET). */
typedef struct {
    const char *broker;
    const char *key;
    const char *server_key;
    const char *secret_file;
    double timeout;       /* > 0: the probe's wait and the executor's broker_timeout */
    bool detach;          /* the executor's session is a detached job (--detach) */
    const char *job_name; /* --job-name */
} zxc_conn_t;

/* Long-option ids for the connection flags; each subcommand's option table
   includes ZXC_CONN_OPTIONS and hands unknown ids to zxc_conn_flag. */
enum { ZXC_OPT_BROKER = 1000, ZXC_OPT_KEY, ZXC_OPT_SERVER_KEY, ZXC_OPT_SECRET_FILE };
#define ZXC_CONN_OPTIONS                                                                           \
    {"broker", required_argument, NULL, ZXC_OPT_BROKER},                                           \
        {"key", required_argument, NULL, ZXC_OPT_KEY},                                             \
        {"server-key", required_argument, NULL, ZXC_OPT_SERVER_KEY},                               \
    {                                                                                              \
        "secret-file", required_argument, NULL, ZXC_OPT_SECRET_FILE                                \
    }
#define ZXC_CONN_HELP                                                                              \
    "  --broker EP[,EP]     broker client endpoint, or a pair's two endpoints (the\n"              \
    "                       active one is used); default $ZEXEC_BROKER, else\n"                    \
    "                       tcp://127.0.0.1:5570\n"                                                \
    "  --server-key FILE    CURVE: the broker's public certificate (with --key)\n"                 \
    "  --key FILE           CURVE: this client's secret certificate\n"                             \
    "  --secret-file FILE   sign messages with this shared secret (default $ZEXEC_SECRET)\n"

void zxc_conn_init(zxc_conn_t *c);
/* true if opt was a connection flag (and stored). */
bool zxc_conn_flag(zxc_conn_t *c, int opt, const char *arg);

/* Checks within timeout seconds (<= 0: ZXC_CONNECT_TIMEOUT or
   $ZEXEC_CONNECT_TIMEOUT) that the broker answers HELLO. 0, or -1 with a
   message for the user in err. If status is not NULL, also asks for STATUS
   and stores the reply as JSON in *status (caller json_decref's). */
int zxc_probe(const zxc_conn_t *c, double timeout, json_t **status, char *err, size_t errlen);

/* A remote executor for c once the broker answered (zxc_probe: a signal
   meanwhile ends the command with 128+signal), or NULL with a message on
   stderr. Either way it returns with SIGINT, SIGTERM and SIGUSR1 blocked
   (zxc_signals_block), for the caller's signal thread (zxc_signals_start). */
zx_executor_t *zxc_executor(const zxc_conn_t *c, const char *cmd);

/* zexec run/submit --detach. zxc_detach_begin probes the broker as
   zxc_executor does (a signal then simply ends the command), blocks SIGINT
   and SIGTERM (zxc_signals_block), makes the detached executor (NULL with a
   message) and starts the signal thread: from then until the job id is
   printed, a signal cancels the job at the broker (zx_job_attach +
   zx_job_cancel, a few seconds at most), says so on stderr naming the job
   id (or, when the cancel fails, how to cancel it later) and ends the
   process with 128 + the signal; a second signal meanwhile leaves at once,
   printing the id. total is the number of tasks the command means to
   submit (for that message); fail the exit status when the job is
   cancelled otherwise (below). Then exactly one of: */
zx_executor_t *zxc_detach_begin(const zxc_conn_t *c, const char *cmd, size_t total, int fail);
/* waits until the broker has every task of ex (ACCEPTED), leaves, prints the
   job id on stdout and a hint on stderr: 0; or, when the broker did not
   accept them, cancels the job as a signal does and ends the process with
   fail (zxc_detach_abort); */
int zxc_detach(zx_executor_t **ex_p, const char *results_hint);
/* cancels the job as a signal does (why begins the line: "cannot submit:
   ...") and ends the process with fail, without destroying the executor:
   that would wait for futures that no longer matter (conn.c says which); */
_Noreturn void zxc_detach_abort(const char *why);
/* destroys ex when nothing reached the broker (no task was submitted). */
void zxc_detach_release(zx_executor_t **ex_p);
/* The options of a job client for c (the security flags). */
zx_options_t zxc_job_options(const zxc_conn_t *c, const char *cmd);

/* Prints a task's exception as "TYPE: message (node N, pid P)" to out. */
void zxc_print_error(FILE *out, const char *cmd, const zx_error_t *e);

/* ---- run's output format (exec_out.c) ----------------------------------------------- */

/* One job's outcome as the exec built-in reported it. */
typedef struct {
    char *out, *err; /* what the command wrote (malloc'd), then run's notes on err */
    size_t out_len, err_len;
    bool out_trunc, err_trunc; /* cut at --max-output */
    bool ok, timed_out;
    int exit_code;         /* as the zexec log shows it: 124 timed out, 128+N signal N */
    int exitval, sig;      /* as GNU parallel's log shows them */
    double start, runtime; /* kept when exec does not say */
} zxc_exec_t;
/* Reads exec's result map (a msgpack value of n bytes) into x. */
void zxc_exec_decode(zxc_exec_t *x, const void *v, size_t n);
/* The task failed without a result (e its exception, may be NULL). */
void zxc_exec_failed(zxc_exec_t *x, const zx_error_t *e);
/* Frees the output held in x. */
void zxc_exec_clear(zxc_exec_t *x);
void zxc_exec_err_append(zxc_exec_t *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends to x->err the notes `zexec CMD` writes after a job's own stderr:
   output truncated, then why it failed (rc: the future's result code, e its
   exception). label names the job ("job 3 (a.txt)"); timeout and max_output
   0 when unknown. */
void zxc_exec_note(zxc_exec_t *x, const char *cmd, const char *label, int rc, const zx_error_t *e,
                   const char *node, int attempts, double timeout, size_t max_output);
/* Writes len bytes to out, each line prefixed with tag and a tab when tag is
   not NULL. false if the stream is closed (EPIPE) or failing. */
bool zxc_write(FILE *out, const char *p, size_t len, const char *tag);

/* ---- stopping (signals.c) --------------------------------------------------------- */

/* Called on the signal thread for each SIGINT or SIGTERM; count is 1 for
   the first signal, 2 for the second... */
typedef void zxc_sig_fn(int sig, int count, void *arg);
/* Blocks SIGINT and SIGTERM in this thread and the threads it starts from
   now on, and ignores SIGPIPE (writes to a closed stdout fail with EPIPE).
   Call before creating the executor. */
void zxc_signals_block(void);
/* Starts the thread that takes the blocked signals and calls fn. 0 or -1. */
int zxc_signals_start(zxc_sig_fn *fn, void *arg);
/* Stops that thread (idempotent). */
void zxc_signals_stop(void);

/* ---- JSON <-> msgpack ----------------------------------------------------------- */

/* A new JSON value for a msgpack object: nil null, bool, ints, floats,
   str and bin a string when UTF-8 text without NULs, else {"$hex": "..."},
   array, map object (non-string keys
   become their compact JSON text), ext null. Never NULL unless out of memory. */
json_t *zxc_mp_to_json(const msgpack_object *o);
/* Unpacks one msgpack value of len bytes and converts it; NULL if malformed. */
json_t *zxc_mp_buf_to_json(const void *buf, size_t len);
/* Packs a JSON value: integer int64, real double, string str, true/false,
   null nil, array, object map. 0, or -1 (out of memory). */
int zxc_json_to_mp(const json_t *j, msgpack_packer *pk);
/* Writes a JSON value compactly on one line (no newline). */
int zxc_json_print(FILE *out, const json_t *j);

/* ---- progress ------------------------------------------------------------------- */

typedef struct zxc_progress zxc_progress_t;
/* A progress display on stderr: a redrawn bar when stderr is a terminal,
   a plain line every few seconds otherwise; NULL when quiet. total 0:
   unknown (no bar, no ETA) until zxc_progress_total. */
zxc_progress_t *zxc_progress_new(const char *what, size_t total, bool quiet);
void zxc_progress_total(zxc_progress_t *self, size_t total);
/* Records the counts and redraws if it is time; NULL self: nothing. */
void zxc_progress_update(zxc_progress_t *self, size_t done, size_t failed);
/* Erases the bar so other output can be written cleanly; the next update
   draws it again. */
void zxc_progress_clear(zxc_progress_t *self);
/* Prints the final line and frees. */
void zxc_progress_destroy(zxc_progress_t **self_p);

#endif
