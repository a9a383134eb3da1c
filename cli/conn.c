/*  conn.c - what every network subcommand shares: the connection flags, a
    quick "is the broker there" probe, and the executor. The library never
    blocks on connect (an unreachable broker shows as futures that fail after
    broker_timeout, 60 s), which suits programs but not a person at a shell:
    so each subcommand first says HELLO on a raw socket and gives up with a
    clear message after a few seconds. The same raw socket asks for STATUS.
    And run/submit --detach: the job from the executor's creation until its
    id is printed, cancelled at the broker if the command is interrupted or
    the broker does not take every task.
*/
#include "zxc.h"
#include "zx_endpoints.h"
#include "zx_monitor.h"
#include "zx_parse.h"
#include "zx_proto.h"
#include "zx_security.h"

#include <czmq.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

void zxc_conn_init(zxc_conn_t *c)
{
    memset(c, 0, sizeof *c);
    const char *env = getenv("ZEXEC_BROKER");
    c->broker = env && *env ? env : ZX_DEFAULT_CLIENT_ENDPOINT;
}

bool zxc_conn_flag(zxc_conn_t *c, int opt, const char *arg)
{
    switch (opt) {
    case ZXC_OPT_BROKER: c->broker = arg; return true;
    case ZXC_OPT_KEY: c->key = arg; return true;
    case ZXC_OPT_SERVER_KEY: c->server_key = arg; return true;
    case ZXC_OPT_SECRET_FILE: c->secret_file = arg; return true;
    default: return false;
    }
}

/* The longest default wait for a pair's passive broker to take over (see
   zxc_probe). */
#define S_TAKEOVER_WAIT 10.0

/* The wait for a first answer: timeout if given, else $ZEXEC_CONNECT_TIMEOUT,
   else the default; *chosen says whether the user set it. */
static double s_connect_timeout(double timeout, bool *chosen)
{
    *chosen = true;
    if (timeout > 0) {
        return timeout;
    }
    const char *env = getenv("ZEXEC_CONNECT_TIMEOUT");
    double t;
    if (env && zx__parse_double(env, 0.1, 3600, &t)) {
        return t;
    }
    *chosen = false;
    return ZXC_CONNECT_TIMEOUT;
}

/* One endpoint of the list for up to timeout seconds: 0 welcomed (and
   *status filled if asked), 1 no answer or a passive broker (err says
   which: the caller may try the next endpoint), -1 a refusal or a fault
   that another endpoint would not cure (err says why). */
static int s_probe_one(const zxc_conn_t *c, const char *ep, double timeout, json_t **status,
                       char *err, size_t errlen)
{
    int rc = -1;
    bool welcomed = false;
    zxp_in_t in;
    zxp_in_init(&in);
    zx__sec_t *sec = zx__sec_new(c->key, c->server_key, c->secret_file, false);
    zsock_t *sock = zsock_new(ZMQ_DEALER);
    zsock_t *mon = NULL;
    zpoller_t *poller = NULL;
    if (!sec) {
        snprintf(err, errlen, "bad security configuration (see the message above)");
        goto done;
    }
    if (!sock) {
        snprintf(err, errlen, "cannot make a socket");
        goto done;
    }
    zxp_sock_setup(sock);
    uint8_t session[ZXP_ID_LEN];
    if (getrandom(session, sizeof session, 0) != (ssize_t)sizeof session) {
        snprintf(err, errlen, "no randomness for a session id");
        goto done;
    }
    zmq_setsockopt(zsock_resolve(sock), ZMQ_ROUTING_ID, session, sizeof session);
    zx__sec_socket(sec, sock, ZXP_ROLE_BROKER_C);
    /* a refused handshake is reported at once instead of as a timeout */
    mon = zx__monitor_new(sock);
    if (zsock_connect(sock, "%s", ep) != 0) {
        snprintf(err, errlen, "invalid broker endpoint '%s' (expected e.g. tcp://HOST:5570)", ep);
        goto done;
    }
    poller = zpoller_new(sock, mon, NULL);
    int64_t deadline = zclock_mono() + (int64_t)(timeout * 1000.0);
    int64_t next_hello = 0;
    int no_detail = 0; /* handshakes closed without detail in a row */
    while (true) {
        int64_t now = zclock_mono();
        if (now >= deadline) {
            snprintf(err, errlen,
                     "no answer from the broker at %s within %.1f s (is zexec-broker running "
                     "there? do --key/--server-key/--secret-file match its configuration?)",
                     ep, timeout);
            rc = 1;
            goto done;
        }
        if (!welcomed && now >= next_hello) {
            zxp_send_hello(sock, session, "zexec", 1000);
            next_hello = now + 500;
        }
        int64_t wait = (welcomed ? deadline : next_hello) - now;
        if (wait > deadline - now) {
            wait = deadline - now;
        }
        void *which = zpoller_wait(poller, (int)(wait > 0 ? wait : 1));
        if (!which) {
            if (zpoller_terminated(poller)) {
                snprintf(err, errlen, "interrupted");
                goto done;
            }
            continue;
        }
        if (which == mon) {
            char peer[300];
            snprintf(peer, sizeof peer, "the broker at %s", ep);
            zx__hs_t ev;
            while ((ev = zx__monitor_read(mon, sock, peer, err, errlen)) != ZX__HS_NONE) {
                if (ev == ZX__HS_REFUSED ||
                    (ev == ZX__HS_FAILED_RETRY && ++no_detail >= ZX__HS_NO_DETAIL_MAX)) {
                    goto done;
                }
            }
            continue;
        }
        zmsg_t *msg = zmsg_recv(sock);
        if (!msg) {
            continue;
        }
        if (zx__sec_verify(sec, msg, ZXP_ROLE_CLIENT) != 0 ||
            zxp_decode(&in, &msg, ZXP_ROLE_CLIENT) != 0) {
            zmsg_destroy(&msg);
            continue;
        }
        if (in.cmd == ZXP_WELCOME && !welcomed) {
            welcomed = true;
            if (!status) {
                rc = 0;
                goto done;
            }
            zxp_send_empty(sock, NULL, ZXP_STATUS);
        } else if (in.cmd == ZXP_RESET) {
            /* the broker does not know us (yet, or any more): HELLO again */
            welcomed = false;
            next_hello = 0;
        } else if (in.cmd == ZXP_ERROR) {
            const msgpack_object *h = zxp_item(&in, 0);
            zxp_str_t m = zxp_s(h, 1);
            snprintf(err, errlen, "the broker at %s refused: %.*s", ep, (int)m.len, m.ptr);
            if (zxp_u(h, 0) == ZXP_ERR_PASSIVE) {
                rc = 1; /* the other one of the pair is, or will be, active */
            }
            goto done;
        } else if (in.cmd == ZXP_STATUS_REPLY && status) {
            *status = zxc_mp_to_json(zxp_o(zxp_item(&in, 0), 0));
            rc = *status ? 0 : -1;
            if (rc) {
                snprintf(err, errlen, "out of memory");
            }
            goto done;
        }
    }
done:
    if (welcomed && sock) {
        zxp_send_empty(sock, NULL, ZXP_BYE);
    }
    zpoller_destroy(&poller);
    zx__monitor_destroy(&mon, sock);
    zsock_destroy(&sock);
    zx__sec_destroy(&sec);
    zxp_in_fini(&in);
    return rc;
}

/* Ctrl-C or SIGTERM while the broker is asked: czmq's own handler would
   only set zsys_interrupted, and the command would end as if the broker
   had failed (255); this one also keeps which signal, so the command ends
   as the shell expects (130, 143). Installed after czmq's set-up, which
   would install its own, and replaced (zsys_handler_set(NULL)) once an
   executor is made; commands that handle signals block them after the
   probe. */
static volatile sig_atomic_t s_probe_signal;

static void s_on_probe_signal(int sig)
{
    s_probe_signal = sig;
    zsys_interrupted = 1;
}

static void s_probe_exit_if_interrupted(void)
{
    if (s_probe_signal) {
        fprintf(stderr, "zexec: interrupted\n");
        exit(128 + s_probe_signal);
    }
}

int zxc_probe(const zxc_conn_t *c, double timeout, json_t **status, char *err, size_t errlen)
{
    zsys_init();
    zsys_handler_set(s_on_probe_signal);
    s_probe_exit_if_interrupted(); /* between two probes (status --wait-workers) */
    bool chosen;
    timeout = s_connect_timeout(timeout, &chosen);
    zx__eps_t eps;
    if (zx__eps_parse(&eps, c->broker, err, errlen) != 0) {
        return -1;
    }
    /* a pair: each endpoint in turn, a slice of the wait each (a passive
       broker answers at once; the active may be taking over), until one
       welcomes us or the time is up */
    int64_t start = zclock_mono(), deadline = start + (int64_t)(timeout * 1000.0);
    bool stretched = false;
    double slice = eps.n > 1 ? timeout / (double)eps.n : timeout;
    if (eps.n > 1 && slice < 1.0) {
        slice = 1.0;
    }
    int rc;
    char passive[512] = ""; /* a passive broker's answer, kept over later timeouts */
    for (;;) {
        double left = (double)(deadline - zclock_mono()) / 1000.0;
        if (left <= 0) {
            left = 0.001;
        }
        int64_t t0 = zclock_mono();
        rc =
            s_probe_one(c, zx__eps_current(&eps), left < slice ? left : slice, status, err, errlen);
        int64_t now = zclock_mono();
        if (rc == 1 && strstr(err, "passive")) {
            snprintf(passive, sizeof passive, "%s", err);
        }
        if (rc != 1) {
            break;
        }
        if (now >= deadline) {
            /* One broker of a pair says it is passive and none is active:
               the active has just died and the passive takes over only
               once it has been silent for its liveness window (3 s by
               default) and a client asks. The default wait, as long as
               that window, would give up just before; unless the user
               chose the wait, it is stretched once to S_TAKEOVER_WAIT. */
            if (!*passive || eps.n < 2 || chosen || stretched ||
                start + (int64_t)(S_TAKEOVER_WAIT * 1000.0) <= now) {
                break;
            }
            stretched = true;
            timeout = S_TAKEOVER_WAIT;
            deadline = start + (int64_t)(S_TAKEOVER_WAIT * 1000.0);
        }
        if (now - t0 < 200) {
            /* a passive answer is immediate: do not spin on it */
            int64_t nap = 200 - (now - t0);
            zclock_sleep((int)(nap < deadline - now ? nap : deadline - now));
        }
        zx__eps_next(&eps);
    }
    if (rc == 1) {
        char last[512];
        snprintf(last, sizeof last, "%s", *passive ? passive : err);
        if (eps.n > 1) {
            snprintf(err, errlen, "no active broker among %s within %.1f s (last: %s)", c->broker,
                     timeout, last);
        } else {
            snprintf(err, errlen, "%s", last);
        }
    }
    zx__eps_clear(&eps);
    s_probe_exit_if_interrupted();
    return rc == 0 ? 0 : -1;
}

/* zxc_probe with the message on stderr: 0 or -1. */
static int s_probe_or_say(const zxc_conn_t *c, const char *cmd)
{
    char err[512];
    if (zxc_probe(c, c->timeout, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "zexec %s: %s\n", cmd, err);
        return -1;
    }
    return 0;
}

/* The executor once the broker answered. */
static zx_executor_t *s_executor_new(const zxc_conn_t *c, const char *cmd)
{
    char name[64];
    snprintf(name, sizeof name, "zexec %s", cmd);
    zx_options_t opts = {
        .name = name,
        .key = c->key,
        .server_key = c->server_key,
        .secret_file = c->secret_file,
        /* if the broker goes away after the probe, fail after this long, not 60 s */
        .broker_timeout = c->timeout,
        .detach = c->detach,
        .job_name = c->job_name};
    zx_executor_t *ex = zx_executor_new(c->broker, &opts);
    if (!ex) {
        fprintf(stderr, "zexec %s: cannot connect to %s: %s\n", cmd, c->broker,
                zx_strerror(zx_last_error()));
    }
    return ex;
}

zx_executor_t *zxc_executor(const zxc_conn_t *c, const char *cmd)
{
    bool ok = s_probe_or_say(c, cmd) == 0;
    /* after the probe, which a signal ends at once (130, 143), and before
       the executor, so that its threads inherit the blocked signals; a
       signal that came in between ends the command here. Blocked on
       failure too: the caller's signal thread, started either way, is
       stopped with SIGUSR1, which must not reach another thread. */
    zxc_signals_block();
    s_probe_exit_if_interrupted();
    return ok ? s_executor_new(c, cmd) : NULL;
}

/* ---- --detach: the job from the executor's creation until its id is printed ---- */

/* How long --detach waits for the broker to make every task durable: with
   a journal and a million tasks that is group commits of many seconds.
   $ZEXEC_DETACH_WAIT overrides. */
#define S_DETACH_WAIT 600.0
/* How long an interrupted --detach gives the broker to cancel the job (to
   attach, and again to cancel), and to show the job it did not see yet. */
#define S_CANCEL_WAIT 3.0
#define S_NOJOB_WAIT_MS 1000

/* The broker keeps a job session's tasks from the first one it accepts,
   whether or not its connection stays; the id is printed only once every
   task is accepted. Until then a signal, a timeout or a failed submission
   must not leave a job nobody can name: it is cancelled at the broker
   through a connection of its own, and if that fails its id is printed.
   The main thread (zxc_detach...) and the signal thread each claim the job
   under the lock: the first to move it from S_ARMED owns it. The signal
   thread hands the cancel to a thread of its own so that it stays free to
   take a second signal (leave at once); a main thread that finds the job
   being cancelled waits for that thread to end the process. */
enum { S_IDLE, S_ARMED, S_CANCELLING, S_DONE };
static struct {
    pthread_mutex_t lock;
    int phase;
    zx_executor_t *ex;
    zxc_conn_t conn;
    const char *cmd;
    size_t total; /* tasks the command means to submit */
    int fail;     /* the exit status when the job is cancelled without a signal */
    int sig;      /* the signal the cancelling thread answers */
    char id[ZX_JOB_ID_LEN + 1];
} s_det = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* Moves the job from S_ARMED to phase; false if another thread already
   claimed it. */
static bool s_claim(int phase)
{
    pthread_mutex_lock(&s_det.lock);
    bool mine = s_det.phase == S_ARMED;
    if (mine) {
        s_det.phase = phase;
    }
    pthread_mutex_unlock(&s_det.lock);
    return mine;
}

/* The main thread when the signal side is cancelling: it ends the process. */
static _Noreturn void s_park(void)
{
    for (;;) {
        pause();
    }
}

/* Cancels the job at the broker, bounded, and says in one line on stderr
   what happened, beginning with what ("interrupted"...). No more tasks
   leave the executor first, and those sent but not started get a CANCEL on
   its own connection (after their SUBMITs, so the broker sees them in
   order). false when the job may go on (the broker could not be reached). */
static bool s_cancel_job(const char *what)
{
    const char *cmd = s_det.cmd, *id = s_det.id;
    zx_executor_shutdown(s_det.ex, false, true);
    zx_options_t o = zxc_job_options(&s_det.conn, cmd);
    o.broker_timeout = S_CANCEL_WAIT;
    /* a job exists from its session's HELLO: right after the executor
       started, the broker may not have read it yet */
    int64_t nojob_until = zclock_mono() + S_NOJOB_WAIT_MS;
    zx_job_t *job;
    int rc = ZX_OK;
    while (!(job = zx_job_attach(s_det.conn.broker, id, &o)) &&
           (rc = zx_last_error()) == ZX_ENOJOB && zclock_mono() < nojob_until) {
        zclock_sleep(100);
    }
    zx_job_info_t info;
    bool counted = false;
    if (job) {
        rc = zx_job_cancel(job, S_CANCEL_WAIT);
        counted = rc == ZX_OK && zx_job_info(job, S_CANCEL_WAIT, &info) == ZX_OK;
        zx_job_destroy(&job);
    }
    if (rc == ZX_OK && counted && info.done == 0) {
        fprintf(stderr,
                "zexec %s: %s: job %s cancelled (%llu of %zu tasks had been accepted, none had "
                "finished)\n",
                cmd, what, id, (unsigned long long)info.submitted, s_det.total);
    } else if (rc == ZX_OK && counted) {
        fprintf(stderr,
                "zexec %s: %s: job %s cancelled (%llu of %zu tasks had been accepted, %llu had "
                "finished; their results stay: zexec results %s)\n",
                cmd, what, id, (unsigned long long)info.submitted, s_det.total,
                (unsigned long long)info.done, id);
    } else if (rc == ZX_OK) {
        fprintf(stderr,
                "zexec %s: %s: job %s cancelled (results already there stay: zexec results %s)\n",
                cmd, what, id, id);
    } else if (rc == ZX_ENOJOB) {
        fprintf(stderr,
                "zexec %s: %s: no task reached the broker (it holds no job %s); should 'zexec "
                "jobs' list it later: zexec cancel %s\n",
                cmd, what, id, id);
    } else {
        fprintf(stderr,
                "zexec %s: %s: cannot cancel job %s at %s (%s): its tasks may go on; cancel it "
                "later: zexec cancel %s\n",
                cmd, what, id, s_det.conn.broker, zx_strerror(rc), id);
    }
    fflush(stderr);
    return rc == ZX_OK || rc == ZX_ENOJOB;
}

static void *s_canceller(void *arg)
{
    (void)arg;
    int sig = s_det.sig;
    s_cancel_job(sig == SIGINT ? "interrupted" : "terminated");
    _exit(128 + sig);
}

static void s_on_signal(int sig, int count, void *arg)
{
    (void)count;
    (void)arg;
    pthread_mutex_lock(&s_det.lock);
    int phase = s_det.phase;
    if (phase == S_ARMED) {
        s_det.phase = S_CANCELLING;
        s_det.sig = sig;
    }
    pthread_mutex_unlock(&s_det.lock);
    if (phase == S_DONE) {
        return; /* the id is being printed: the job is the user's now */
    }
    if (phase == S_CANCELLING) {
        fprintf(stderr,
                "zexec %s: %s while cancelling: leaving at once; job %s may go on: zexec cancel "
                "%s\n",
                s_det.cmd, strsignal(sig), s_det.id, s_det.id);
        fflush(stderr);
        _exit(128 + sig);
    }
    pthread_t t;
    if (pthread_create(&t, NULL, s_canceller, NULL) == 0) {
        pthread_detach(t);
    } else {
        s_canceller(NULL); /* no thread: cancel here (a second signal waits) */
    }
}

zx_executor_t *zxc_detach_begin(const zxc_conn_t *c, const char *cmd, size_t total, int fail)
{
    /* Ctrl-C during the probe ends the command as usual: no job yet */
    if (s_probe_or_say(c, cmd) != 0) {
        return NULL;
    }
    /* before the executor, so that its threads inherit the blocked signals */
    zxc_signals_block();
    s_probe_exit_if_interrupted();
    zx_executor_t *ex = s_executor_new(c, cmd);
    if (!ex) {
        return NULL;
    }
    s_det.ex = ex;
    s_det.conn = *c;
    s_det.cmd = cmd;
    s_det.total = total;
    s_det.fail = fail;
    if (zx_executor_job_id(ex, s_det.id) != ZX_OK) {
        fprintf(stderr, "zexec %s: the executor is not a detached one\n", cmd);
        zx_executor_destroy(&ex);
        return NULL;
    }
    s_det.phase = S_ARMED;
    if (zxc_signals_start(s_on_signal, NULL) != 0) {
        fprintf(stderr, "zexec %s: cannot start the signal thread\n", cmd);
        s_det.phase = S_IDLE;
        zx_executor_destroy(&ex);
        return NULL;
    }
    return ex;
}

/* After the job is claimed by this thread: no signal acts on it any more. */
static void s_end(zx_executor_t **ex_p)
{
    pthread_mutex_lock(&s_det.lock);
    s_det.phase = S_DONE;
    pthread_mutex_unlock(&s_det.lock);
    zxc_signals_stop();
    zx_executor_destroy(ex_p);
    s_det.ex = NULL;
}

_Noreturn void zxc_detach_abort(const char *why)
{
    if (!s_claim(S_CANCELLING)) {
        s_park();
    }
    s_cancel_job(why);
    /* Either way the line said everything. Destroying the executor would
       wait for every future: with the broker gone that is broker_timeout
       (60 s), and with the job cancelled, tasks the send window held back
       would leave now only to be refused, and a running task's end can
       take as long as its worker needs to stop it. Nothing of the job is
       in this process any more: leave without sending what is queued. */
    fflush(stdout);
    fflush(stderr);
    _exit(s_det.fail);
}

void zxc_detach_release(zx_executor_t **ex_p)
{
    if (!s_claim(S_DONE)) {
        s_park();
    }
    s_end(ex_p);
}

static double s_detach_wait(void)
{
    const char *env = getenv("ZEXEC_DETACH_WAIT");
    double t;
    if (env && zx__parse_double(env, 0.1, 1e7, &t)) {
        return t;
    }
    return S_DETACH_WAIT;
}

int zxc_detach(zx_executor_t **ex_p, const char *results_hint)
{
    char id[ZX_JOB_ID_LEN + 1];
    double wait = s_detach_wait();
    int rc = zx_executor_detach(*ex_p, wait, id);
    if (rc != ZX_OK) {
        char why[256];
        snprintf(why, sizeof why, "the broker did not accept every task within %g s (%s)", wait,
                 zx_strerror(rc));
        zxc_detach_abort(why);
    }
    /* from here a signal does nothing: the id is printed */
    if (!s_claim(S_DONE)) {
        s_park();
    }
    const char *cmd = s_det.cmd;
    s_end(ex_p);
    printf("%s\n", id);
    fflush(stdout);
    fprintf(stderr, "zexec %s: detached job %s; its results: zexec results %s%s\n", cmd, id, id,
            results_hint ? results_hint : "");
    return 0;
}

zx_options_t zxc_job_options(const zxc_conn_t *c, const char *cmd)
{
    (void)cmd;
    return (zx_options_t){.name = "zexec job",
                          .key = c->key,
                          .server_key = c->server_key,
                          .secret_file = c->secret_file,
                          .broker_timeout = c->timeout};
}

void zxc_print_error(FILE *out, const char *cmd, const zx_error_t *e)
{
    fprintf(out, "zexec %s: %s: %s", cmd, e->type && *e->type ? e->type : "Error",
            e->message ? e->message : "");
    if (e->node && *e->node) {
        fprintf(out, " (node %s, pid %d)", e->node, e->pid);
    }
    fputc('\n', out);
    /* exec's traceback is the stderr tail its message already carries */
    if (e->traceback && *e->traceback && (!e->message || !strstr(e->message, e->traceback))) {
        fprintf(out, "%s%s", e->traceback,
                e->traceback[strlen(e->traceback) - 1] == '\n' ? "" : "\n");
    }
}
