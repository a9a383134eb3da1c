/*  progress.c - the progress display of run and map on stderr. On a
    terminal: one line redrawn at most ten times a second,
      [#########.........]  452/1000  3 failed  120.4/s  ETA 0:04
    elsewhere (a log file, a pipe): a plain line every ZXC_PROGRESS_EVERY
    seconds and a last one at the end, so a batch job's log shows how it went
    without a screenful of carriage returns. No Debian library does this for
    C programs, and it is sixty lines.
*/
#include "zxc.h"
#include "zx_parse.h"

#include <czmq.h>
#include <stdlib.h>
#include <unistd.h>

#define ZXC_PROGRESS_TTY_MS 100
#define ZXC_PROGRESS_EVERY 5.0

struct zxc_progress {
    const char *what;
    size_t total, done, failed;
    bool tty, drawn;
    int64_t started, last;
    int64_t every_ms;
};

zxc_progress_t *zxc_progress_new(const char *what, size_t total, bool quiet)
{
    if (quiet) {
        return NULL;
    }
    zxc_progress_t *self = calloc(1, sizeof *self);
    if (!self) {
        return NULL;
    }
    self->what = what;
    self->total = total;
    self->tty = isatty(STDERR_FILENO);
    self->started = self->last = zclock_mono();
    double every = ZXC_PROGRESS_EVERY;
    const char *env = getenv("ZEXEC_PROGRESS_EVERY"); /* seconds, for logs and tests */
    if (env) {
        zx__parse_double(env, 0.01, 86400, &every);
    }
    self->every_ms = self->tty ? ZXC_PROGRESS_TTY_MS : (int64_t)(every * 1000.0);
    return self;
}

void zxc_progress_total(zxc_progress_t *self, size_t total)
{
    if (self) {
        self->total = total;
    }
}

static void s_eta(char *buf, size_t len, double secs)
{
    long s = (long)(secs + 0.5);
    if (s >= 3600) {
        snprintf(buf, len, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    } else {
        snprintf(buf, len, "%ld:%02ld", s / 60, s % 60);
    }
}

static void s_draw(zxc_progress_t *self, bool final)
{
    double elapsed = (double)(zclock_mono() - self->started) / 1000.0;
    double rate = elapsed > 0.001 ? (double)self->done / elapsed : 0;
    char counts[64], tail[64] = "";
    if (self->total) {
        snprintf(counts, sizeof counts, "%zu/%zu", self->done, self->total);
    } else {
        snprintf(counts, sizeof counts, "%zu", self->done);
    }
    if (final) {
        char t[32];
        s_eta(t, sizeof t, elapsed);
        snprintf(tail, sizeof tail, "in %s", t);
    } else if (self->total && rate > 0 && self->done < self->total) {
        char t[32];
        s_eta(t, sizeof t, (double)(self->total - self->done) / rate);
        snprintf(tail, sizeof tail, "ETA %s", t);
    }
    if (self->tty) {
        char bar[32] = "";
        if (self->total) {
            size_t w = 20, full = self->done >= self->total ? w : self->done * w / self->total;
            bar[0] = '[';
            for (size_t i = 0; i < w; i++) {
                bar[1 + i] = i < full ? '#' : '.';
            }
            bar[w + 1] = ']';
            bar[w + 2] = ' ';
            bar[w + 3] = 0;
        }
        fprintf(stderr, "\r\033[K%s%s %s  %zu failed  %.1f/s  %s%s", bar, self->what, counts,
                self->failed, rate, tail, final ? "\n" : "");
    } else {
        fprintf(stderr, "zexec: %s %s done, %zu failed, %.1f/s %s\n", self->what, counts,
                self->failed, rate, tail);
    }
    fflush(stderr);
    self->drawn = self->tty && !final;
    self->last = zclock_mono();
}

void zxc_progress_update(zxc_progress_t *self, size_t done, size_t failed)
{
    if (!self) {
        return;
    }
    self->done = done;
    self->failed = failed;
    if (zclock_mono() - self->last >= self->every_ms || (self->tty && !self->drawn)) {
        s_draw(self, false);
    }
}

void zxc_progress_clear(zxc_progress_t *self)
{
    if (self && self->drawn) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
        self->drawn = false;
    }
}

void zxc_progress_destroy(zxc_progress_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    s_draw(*self_p, true);
    free(*self_p);
    *self_p = NULL;
}
