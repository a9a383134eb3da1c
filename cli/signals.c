/*  signals.c - how run, map and submit stop on Ctrl-C, SIGTERM and a closed
    stdout. SIGINT and SIGTERM are blocked in every thread (the executor's
    I/O thread inherits the mask) and taken by one thread in sigwait, which
    calls the subcommand's handler: a handler there may take locks and
    signal condition variables, which an async signal handler may not, so
    the main thread wakes at once instead of at its next poll. SIGPIPE is
    ignored: a write to a closed stdout fails with EPIPE, which the
    subcommand treats as the signal, and the process lives to cancel its
    tasks and say BYE to the broker.
*/
#include "zxc.h"

#include <pthread.h>
#include <signal.h>
#include <string.h>

static pthread_t s_thread;
static bool s_started;
static zxc_sig_fn *s_fn;
static void *s_arg;

/* SIGUSR1 is the thread's own stop request (zxc_signals_stop) */
static void s_set(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGUSR1);
}

void zxc_signals_block(void)
{
    sigset_t set;
    s_set(&set);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static void *s_waiter(void *arg)
{
    (void)arg;
    sigset_t set;
    s_set(&set);
    int count = 0;
    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0 || sig == SIGUSR1) {
            break;
        }
        s_fn(sig, ++count, s_arg);
    }
    return NULL;
}

int zxc_signals_start(zxc_sig_fn *fn, void *arg)
{
    s_fn = fn;
    s_arg = arg;
    if (pthread_create(&s_thread, NULL, s_waiter, NULL) != 0) {
        return -1;
    }
    s_started = true;
    return 0;
}

void zxc_signals_stop(void)
{
    if (s_started) {
        pthread_kill(s_thread, SIGUSR1);
        pthread_join(s_thread, NULL);
        s_started = false;
    }
}
