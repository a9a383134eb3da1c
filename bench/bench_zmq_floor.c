/*  bench_zmq_floor.c - the floor: what raw libzmq does on this machine, with
    the same process layout as zexec (client -> broker -> worker), so that
    zexec's figures can be read as ratios to it.

      relay64   client DEALER -> ROUTER/DEALER zmq_proxy (own process) ->
                echo worker DEALER (own process), 64 B, one at a time:
                p50/p99 round trip.
      relay64 spin: the same, with a client that polls with ZMQ_DONTWAIT and
                sched_yield instead of sleeping in zmq_recv (info, beside
                zexec's B, whose result() yield-spins for short waits).
      relay64 pipelined: the same path with a window of messages in flight:
                msgs/s (the ceiling for a no-op task stream).
      push64    PUSH -> PULL (two processes), 64 B one way: msgs/s.
      relay1m   the same relay with 1 MiB requests; the worker answers with
                the 8-byte length it received (as workload D's `len` does),
                one at a time and with a window of 8 in flight: MB/s of
                request payload (1 MB = 1e6 bytes); the floor is the better.

      --tag T   only relay64's round trip (sleeping client), as
                floor.Bpair_T_p50/_p99/_mean: one half of a pair that
                scripts/bench alternates with zexec's B; --rounds N.
      --curve   every connection of the relay with CURVE (the proxy a
                CURVE server on both sides, the client and the worker its
                clients; keys made for the run): the floor of zexec's B with
                CURVE.

    Every reply is checked: echoes byte for byte, lengths by value.
    Helper processes are forked before this process makes a ZeroMQ context
    (never fork a process that has one) and are stopped by PID.

    Usage: bench_zmq_floor [--quick] [--tag T [--rounds N]] [--curve] */
#include "bench_util.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#define SMALL 64
#define MIB (1024 * 1024)

typedef void s_role_fn(FILE *out, const char *arg);

/* Forks a helper that runs role(out, arg); the role writes the lines the
   parent needs (endpoints, figures) to out. *in_p gets the read end. */
static pid_t s_fork_role(s_role_fn *role, const char *arg, FILE **in_p)
{
    int fds[2];
    if (pipe(fds) != 0) {
        bu_die("pipe failed");
    }
    pid_t parent = getpid();
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        bu_die("fork failed");
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) {
            _exit(1);
        }
        close(fds[0]);
        FILE *out = fdopen(fds[1], "w");
        role(out, arg);
        fclose(out);
        _exit(0);
    }
    close(fds[1]);
    *in_p = fdopen(fds[0], "r");
    return pid;
}

static void s_read_line(FILE *in, char *buf, size_t size)
{
    if (!fgets(buf, (int)size, in)) {
        bu_die("helper process did not report");
    }
    buf[strcspn(buf, "\n")] = 0;
}

static void s_bind_any(void *sock, char *ep, size_t size)
{
    if (zmq_bind(sock, "tcp://127.0.0.1:*") != 0) {
        bu_die("bind: %s", zmq_strerror(zmq_errno()));
    }
    zmq_getsockopt(sock, ZMQ_LAST_ENDPOINT, ep, &size);
}

static void s_set_int(void *sock, int opt, int value)
{
    zmq_setsockopt(sock, opt, &value, sizeof value);
}

/* --curve: keys made before any fork, so every helper has them */
static bool s_curve;
static char s_srv_pub[41], s_srv_sec[41], s_cli_pub[41], s_cli_sec[41];

static void s_curve_keys(void)
{
    if (zmq_curve_keypair(s_srv_pub, s_srv_sec) != 0 ||
        zmq_curve_keypair(s_cli_pub, s_cli_sec) != 0) {
        bu_die("zmq_curve_keypair: %s (libzmq without CURVE?)", zmq_strerror(zmq_errno()));
    }
}

/* Before bind: the socket is a CURVE server. */
static void s_curve_server(void *sock)
{
    if (s_curve) {
        s_set_int(sock, ZMQ_CURVE_SERVER, 1);
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, s_srv_sec, 40);
    }
}

/* Before connect: the socket is a CURVE client of the proxy. */
static void s_curve_client(void *sock)
{
    if (s_curve) {
        zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, s_srv_pub, 40);
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, s_cli_pub, 40);
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, s_cli_sec, 40);
    }
}

/* ---- helper roles ----------------------------------------------------------- */

/* The broker stand-in: ROUTER for clients, DEALER for workers, zmq_proxy
   between them until the parent kills it. */
static void s_role_proxy(FILE *out, const char *arg)
{
    void *ctx = zmq_ctx_new();
    void *front = zmq_socket(ctx, ZMQ_ROUTER);
    void *back = zmq_socket(ctx, ZMQ_DEALER);
    s_set_int(front, ZMQ_SNDHWM, 100000);
    s_set_int(front, ZMQ_RCVHWM, 100000);
    s_set_int(back, ZMQ_SNDHWM, 100000);
    s_set_int(back, ZMQ_RCVHWM, 100000);
    char fep[256], bep[256];
    s_curve_server(front);
    s_curve_server(back);
    s_bind_any(front, fep, sizeof fep);
    s_bind_any(back, bep, sizeof bep);
    fprintf(out, "%s\n%s\n", fep, bep);
    fflush(out);
    zmq_proxy(front, back, NULL);
}

/* The worker stand-in. arg "echo": sends every message back as it came;
   "len": replaces the last frame with its length as 8 bytes. */
static void s_role_worker(FILE *out, const char *arg)
{
    const char *ep = strchr(arg, ' ') + 1;
    bool echo = strncmp(arg, "echo", 4) == 0;
    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, ZMQ_DEALER);
    s_set_int(sock, ZMQ_SNDHWM, 100000);
    s_set_int(sock, ZMQ_RCVHWM, 100000);
    s_curve_client(sock);
    if (zmq_connect(sock, ep) != 0) {
        bu_die("worker connect %s: %s", ep, zmq_strerror(zmq_errno()));
    }
    fprintf(out, "ready\n");
    fflush(out);
    zmq_msg_t part;
    zmq_msg_init(&part);
    while (true) {
        if (zmq_msg_recv(&part, sock, 0) < 0) {
            break;
        }
        bool more = zmq_msg_more(&part);
        if (!echo && !more) {
            uint64_t len = zmq_msg_size(&part);
            zmq_send(sock, &len, sizeof len, 0);
            continue;
        }
        zmq_msg_send(&part, sock, more ? ZMQ_SNDMORE : 0);
    }
}

/* PULL side of the one-way test: binds, reports its endpoint, receives
   count messages in order, reports the rate from the first to the last. */
static void s_role_puller(FILE *out, const char *arg)
{
    long count = atol(arg);
    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, ZMQ_PULL);
    s_set_int(sock, ZMQ_RCVHWM, 100000);
    char ep[256];
    s_bind_any(sock, ep, sizeof ep);
    fprintf(out, "%s\n", ep);
    fflush(out);
    char buf[SMALL];
    double t0 = 0;
    for (long i = 0; i <= count; i++) {
        int n = zmq_recv(sock, buf, sizeof buf, 0);
        if (n != SMALL) {
            fprintf(out, "WRONG size %d\n", n);
            return;
        }
        uint64_t seq;
        memcpy(&seq, buf, sizeof seq);
        if (seq != (uint64_t)i) {
            fprintf(out, "WRONG seq %llu expected %ld\n", (unsigned long long)seq, i);
            return;
        }
        if (i == 0) {
            t0 = bu_now(); /* message 0 only starts the clock */
        }
    }
    double dt = bu_now() - t0;
    fprintf(out, "%.3f\n", (double)count / dt);
    fflush(out);
    zmq_close(sock);
    zmq_ctx_term(ctx);
}

/* ---- the measurements --------------------------------------------------------- */

typedef struct {
    pid_t proxy, worker;
    void *ctx, *sock;
} s_relay_t;

static void s_relay_start(s_relay_t *r, const char *mode)
{
    FILE *pin, *win;
    char fep[256], bep[256], line[64], arg[300];
    r->proxy = s_fork_role(s_role_proxy, "", &pin);
    s_read_line(pin, fep, sizeof fep);
    s_read_line(pin, bep, sizeof bep);
    fclose(pin);
    snprintf(arg, sizeof arg, "%s %s", mode, bep);
    r->worker = s_fork_role(s_role_worker, arg, &win);
    s_read_line(win, line, sizeof line);
    fclose(win);
    r->ctx = zmq_ctx_new();
    r->sock = zmq_socket(r->ctx, ZMQ_DEALER);
    s_set_int(r->sock, ZMQ_SNDHWM, 100000);
    s_set_int(r->sock, ZMQ_RCVHWM, 100000);
    s_curve_client(r->sock);
    if (zmq_connect(r->sock, fep) != 0) {
        bu_die("client connect: %s", zmq_strerror(zmq_errno()));
    }
}

static void s_relay_stop(s_relay_t *r)
{
    s_set_int(r->sock, ZMQ_LINGER, 0);
    zmq_close(r->sock);
    zmq_ctx_term(r->ctx);
    bu_stop(r->worker);
    bu_stop(r->proxy);
}

static void s_send_small(void *sock, uint64_t seq)
{
    char buf[SMALL];
    memset(buf, 'x', sizeof buf);
    memcpy(buf, &seq, sizeof seq);
    if (zmq_send(sock, buf, sizeof buf, 0) != SMALL) {
        bu_die("send: %s", zmq_strerror(zmq_errno()));
    }
}

/* spin: poll with ZMQ_DONTWAIT and sched_yield between tries instead of
   sleeping in zmq_recv (what zexec's result() does for short waits) */
static void s_recv_small(void *sock, uint64_t expect, bool spin)
{
    char buf[SMALL + 1], want[SMALL];
    int n;
    while ((n = zmq_recv(sock, buf, sizeof buf, spin ? ZMQ_DONTWAIT : 0)) < 0 && spin &&
           zmq_errno() == EAGAIN) {
        sched_yield();
    }
    memset(want, 'x', sizeof want);
    memcpy(want, &expect, sizeof expect);
    if (n != SMALL || memcmp(buf, want, SMALL) != 0) {
        bu_wrong("relay echo %llu came back wrong (%d bytes)", (unsigned long long)expect, n);
    }
}

static void s_bench_relay64(long rounds, long warmup, long pipelined)
{
    s_relay_t r;
    s_relay_start(&r, "echo");
    uint64_t seq = 0;
    for (long i = 0; i < warmup; i++, seq++) {
        s_send_small(r.sock, seq);
        s_recv_small(r.sock, seq, false);
    }
    double *lat = malloc(sizeof(double) * (size_t)rounds);
    for (long i = 0; i < rounds; i++, seq++) {
        double t0 = bu_now();
        s_send_small(r.sock, seq);
        s_recv_small(r.sock, seq, false);
        lat[i] = (bu_now() - t0) * 1e6;
    }
    double mean = 0;
    for (long i = 0; i < rounds; i++) {
        mean += lat[i];
    }
    bu_result("floor.relay64_p50", bu_percentile(lat, (size_t)rounds, 50), "us");
    bu_result("floor.relay64_p99", bu_percentile(lat, (size_t)rounds, 99), "us");
    bu_result("floor.relay64_mean", mean / (double)rounds, "us");
    /* the same with a client that yield-spins instead of sleeping (info:
       the floor for a waiting technique zexec uses, docs/performance.md) */
    for (long i = 0; i < rounds; i++, seq++) {
        double t0 = bu_now();
        s_send_small(r.sock, seq);
        s_recv_small(r.sock, seq, true);
        lat[i] = (bu_now() - t0) * 1e6;
    }
    bu_result("floor.relay64_spin_p50", bu_percentile(lat, (size_t)rounds, 50), "us");
    bu_result("floor.relay64_spin_p99", bu_percentile(lat, (size_t)rounds, 99), "us");
    free(lat);

    /* Pipelined: a window of 1000 in flight; the proxy and the echo worker
       preserve order, so replies are checked against the send order. */
    long window = 1000, sent = 0, got = 0;
    uint64_t base = seq;
    double t0 = bu_now();
    while (got < pipelined) {
        while (sent < pipelined && sent - got < window) {
            s_send_small(r.sock, base + (uint64_t)sent++);
        }
        s_recv_small(r.sock, base + (uint64_t)got++, false);
    }
    bu_result("floor.relay64_pipelined", (double)pipelined / (bu_now() - t0), "msgs/s");
    s_relay_stop(&r);
}

/* --tag: one half of a B pair (scripts/bench): the sleeping client's
   round trip only, named after the pair. */
static void s_bench_pair(const char *tag, long rounds, long warmup)
{
    s_relay_t r;
    s_relay_start(&r, "echo");
    uint64_t seq = 0;
    for (long i = 0; i < warmup; i++, seq++) {
        s_send_small(r.sock, seq);
        s_recv_small(r.sock, seq, false);
    }
    double *lat = malloc(sizeof(double) * (size_t)rounds);
    double mean = 0;
    for (long i = 0; i < rounds; i++, seq++) {
        double t0 = bu_now();
        s_send_small(r.sock, seq);
        s_recv_small(r.sock, seq, false);
        lat[i] = (bu_now() - t0) * 1e6;
        mean += lat[i];
    }
    char name[160];
    snprintf(name, sizeof name, "floor.Bpair_%s_p50", tag);
    bu_result(name, bu_percentile(lat, (size_t)rounds, 50), "us");
    snprintf(name, sizeof name, "floor.Bpair_%s_p99", tag);
    bu_result(name, bu_percentile(lat, (size_t)rounds, 99), "us");
    snprintf(name, sizeof name, "floor.Bpair_%s_mean", tag);
    bu_result(name, mean / (double)rounds, "us");
    free(lat);
    s_relay_stop(&r);
}

static void s_bench_push(long count)
{
    FILE *in;
    char ep[256], line[128], arg[32];
    snprintf(arg, sizeof arg, "%ld", count);
    pid_t puller = s_fork_role(s_role_puller, arg, &in);
    s_read_line(in, ep, sizeof ep);
    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, ZMQ_PUSH);
    s_set_int(sock, ZMQ_SNDHWM, 100000);
    if (zmq_connect(sock, ep) != 0) {
        bu_die("push connect: %s", zmq_strerror(zmq_errno()));
    }
    for (long i = 0; i <= count; i++) {
        s_send_small(sock, (uint64_t)i);
    }
    s_read_line(in, line, sizeof line);
    fclose(in);
    if (strncmp(line, "WRONG", 5) == 0) {
        bu_wrong("push/pull: %s", line);
    }
    bu_result("floor.push64", atof(line), "msgs/s");
    zmq_close(sock);
    zmq_ctx_term(ctx);
    bu_stop(puller);
}

static double s_bench_relay1m(long count, long window, const char *name)
{
    s_relay_t r;
    s_relay_start(&r, "len");
    char *payload = malloc(MIB);
    memset(payload, 'y', MIB);
    long sent = 0, got = 0;
    double rate = 0;
    /* one warm-up round trip: connection set-up is not part of the rate */
    for (long phase = 0; phase < 2; phase++) {
        long n = phase == 0 ? 1 : count;
        sent = got = 0;
        double t0 = bu_now();
        while (got < n) {
            while (sent < n && sent - got < window) {
                zmq_send(r.sock, payload, MIB, 0);
                sent++;
            }
            uint64_t len = 0;
            int rc = zmq_recv(r.sock, &len, sizeof len, 0);
            if (rc != (int)sizeof len || len != MIB) {
                bu_wrong("relay 1 MiB: worker saw %llu bytes", (unsigned long long)len);
            }
            got++;
        }
        if (phase == 1) {
            rate = (double)count * MIB / 1e6 / (bu_now() - t0);
            bu_result(name, rate, "MB/s");
        }
    }
    free(payload);
    s_relay_stop(&r);
    return rate;
}

int main(int argc, char **argv)
{
    bool quick = bu_has_flag(argc, argv, "--quick");
    signal(SIGPIPE, SIG_IGN);
    int major, minor, patch;
    zmq_version(&major, &minor, &patch);
    s_curve = bu_has_flag(argc, argv, "--curve");
    if (s_curve) {
        s_curve_keys();
    }
    printf("# raw libzmq %d.%d.%d floor%s%s\n", major, minor, patch, quick ? " (quick)" : "",
           s_curve ? " with CURVE" : "");
    const char *tag = bu_opt(argc, argv, "--tag");
    if (tag) {
        const char *n = bu_opt(argc, argv, "--rounds");
        long rounds = n ? atol(n) : quick ? 300 : 5000;
        s_bench_pair(tag, rounds > 0 ? rounds : 1, quick ? 50 : 200);
        return 0;
    }
    s_bench_relay64(quick ? 2000 : 20000, quick ? 200 : 2000, quick ? 20000 : 200000);
    s_bench_push(quick ? 100000 : 2000000);
    /* One at a time is faster than a window here (libzmq 4.3 on loopback:
       about 1.0-1.5 GB/s against 0.35-0.5 GB/s with 2-8 in flight), so the
       floor is the better of the two. */
    double w1 = s_bench_relay1m(quick ? 40 : 500, 1, "floor.relay1m_w1");
    double w8 = s_bench_relay1m(quick ? 40 : 500, 8, "floor.relay1m_w8");
    bu_result("floor.relay1m", w1 > w8 ? w1 : w8, "MB/s");
    return 0;
}
