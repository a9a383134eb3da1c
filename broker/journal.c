/*  journal.c - the broker's journal (zxb_journal.h): opaque records framed,
    checksummed and appended to segment files by a writer thread, with group
    commit, three fsync policies, compaction by snapshots, replay with a
    torn tail cut off, and a tap that hands every write to the standby.

    The broker thread never waits for the disk: append copies a record into
    the current batch (one growing buffer), flush hands the batch to the
    writer through a mutex-protected list and a condition variable. The
    writer takes every batch handed over since its last write and writes
    them with one writev: while it waits for fdatasync the broker goes on
    appending, and the next write takes all of that at once (group commit).
    So a flood of small submits costs one fdatasync per disk round trip,
    not one per record or per broker turn. Committed LSNs go back through
    an atomic and an eventfd, which the broker polls like a socket.

    Why a new segment at every start, and at every snapshot: a segment is
    only ever appended to by the writer that created it, so replay's rules
    stay simple (only the newest segment can have a torn tail; a snapshot
    is the whole of its segment from its first record), and compaction is
    unlink of whole files, never a rewrite.

    Why the writer fails for good at the first write or fdatasync error:
    after a failed fdatasync Linux may have dropped the dirty pages and
    cleared the error, so a retry that succeeds proves nothing (the lesson
    of PostgreSQL's "fsyncgate"). The broker refuses new work instead
    (docs/operations.md says how to recover: free space, restart).

    Lock order: one mutex (mu), held only to move batches and read the tap;
    no callback is called with it held.
*/
#include "zxb_journal.h"

#include <czmq.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define S_MAGIC "ZXJ1"
#define S_VERSION 1
#define S_HDR_LEN 36 /* magic 4, version 4, lineage 16, first LSN 8, crc 4 */
#define S_REC_HDR 17 /* length 4, crc 4, type 1, lsn 8 */
#define S_BATCH_MIN (64 * 1024)
#define S_IOV_MAX 1024

typedef struct s_batch {
    struct s_batch *next;
    uint8_t *data;
    size_t len, cap;
    uint64_t first, last; /* LSN range; first 0: empty */
    bool roll;            /* starts with SNAP_BEGIN: a new segment before it */
    bool snap_end;        /* holds SNAP_END: older segments go once it is committed */
} s_batch_t;

struct zxb_journal {
    zxb_journal_config_t cfg;
    char *dir;
    int lock_fd, dir_fd, efd;
    uint8_t lineage[ZXB_JOURNAL_LINEAGE_LEN];
    bool fresh; /* nothing replayed or appended yet: append_raw may adopt a lineage */

    /* the broker thread's */
    bool replayed;
    s_batch_t *cur;
    uint64_t next_lsn;
    uint64_t since_snap;
    bool in_snap;

    /* shared */
    atomic_uint_fast64_t appended, written; /* bytes: backlog = appended - written */
    atomic_uint_fast64_t committed;
    atomic_int failed; /* errno of the writer's first error; errmsg set before it */
    char errmsg[512];
    atomic_uint_fast64_t c_writes, c_syncs, c_records, c_bytes, c_deleted;

    pthread_mutex_t mu; /* guards q_head/q_tail, stop, tap */
    pthread_cond_t cv;
    s_batch_t *q_head, **q_tail;
    bool stop;
    zxb_journal_tap_fn *tap;
    void *tap_arg;
    pthread_t thread;
    bool started;

    /* the writer thread's (set up by replay before the thread starts) */
    int seg_fd;
    uint64_t seg_first, seg_size;
    bool w_in_snap;
    uint64_t w_written, w_synced; /* LSNs */
    int64_t last_sync_ms;
    uint64_t *segs; /* first LSNs of the segments on disk, ascending */
    size_t nsegs, segs_cap;
};

/* ---- encoding ------------------------------------------------------------------ */

static void s_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static void s_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static uint32_t s_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t s_get64(const uint8_t *p)
{
    return (uint64_t)s_get32(p) | (uint64_t)s_get32(p + 4) << 32;
}

/* crc32 over type + lsn (as encoded at p + 8) and the body */
static uint32_t s_rec_crc(const uint8_t *hdr, const uint8_t *body, size_t len)
{
    uLong c = crc32(0L, Z_NULL, 0);
    c = crc32(c, hdr + 8, 9);
    /* zlib's crc32 takes uInt lengths: feed big bodies in pieces */
    while (len > 0) {
        uInt n = len > (1u << 30) ? (1u << 30) : (uInt)len;
        c = crc32(c, body, n);
        body += n;
        len -= n;
    }
    return (uint32_t)c;
}

static void s_header(uint8_t hdr[S_HDR_LEN], const uint8_t lineage[16], uint64_t first)
{
    memcpy(hdr, S_MAGIC, 4);
    s_put32(hdr + 4, S_VERSION);
    memcpy(hdr + 8, lineage, 16);
    s_put64(hdr + 24, first);
    s_put32(hdr + 32, (uint32_t)crc32(crc32(0L, Z_NULL, 0), hdr, 32));
}

static int64_t s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void s_seg_name(char *buf, size_t len, uint64_t first)
{
    snprintf(buf, len, "seg-%016" PRIx64 ".zxj", first);
}

/* ---- open / destroy --------------------------------------------------------------- */

zxb_journal_t *zxb_journal_open(const zxb_journal_config_t *cfg, char *err, size_t errlen)
{
    assert(cfg && cfg->dir);
    zxb_journal_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    self->cfg = *cfg;
    if (self->cfg.interval_ms == 0) {
        self->cfg.interval_ms = 100;
    }
    if (self->cfg.segment_bytes == 0) {
        self->cfg.segment_bytes = 64ull << 20;
    }
    self->lock_fd = self->dir_fd = self->efd = self->seg_fd = -1;
    self->dir = strdup(cfg->dir);
    self->cfg.dir = self->dir;
    self->next_lsn = 1;
    self->fresh = true;
    self->q_tail = &self->q_head;
    pthread_mutex_init(&self->mu, NULL);
    pthread_cond_init(&self->cv, NULL);
    if (!self->dir) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (mkdir(self->dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "journal %s: cannot create the directory: %s", self->dir,
                 strerror(errno));
        goto fail;
    }
    self->dir_fd = open(self->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (self->dir_fd < 0) {
        snprintf(err, errlen, "journal %s: %s", self->dir, strerror(errno));
        goto fail;
    }
    self->lock_fd = openat(self->dir_fd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (self->lock_fd < 0) {
        snprintf(err, errlen, "journal %s: cannot open its lock file: %s", self->dir,
                 strerror(errno));
        goto fail;
    }
    if (flock(self->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) {
            snprintf(err, errlen, "journal %s is in use by another broker", self->dir);
        } else {
            snprintf(err, errlen, "journal %s: cannot lock it: %s", self->dir, strerror(errno));
        }
        goto fail;
    }
    self->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (self->efd < 0) {
        snprintf(err, errlen, "journal %s: eventfd: %s", self->dir, strerror(errno));
        goto fail;
    }
    if (getrandom(self->lineage, sizeof self->lineage, 0) != (ssize_t)sizeof self->lineage) {
        snprintf(err, errlen, "journal %s: no randomness for its lineage id", self->dir);
        goto fail;
    }
    return self;
fail:
    zxb_journal_destroy(&self);
    return NULL;
}

static void s_batch_free(s_batch_t *b)
{
    if (b) {
        free(b->data);
        free(b);
    }
}

void zxb_journal_destroy(zxb_journal_t **self_p)
{
    assert(self_p);
    zxb_journal_t *self = *self_p;
    if (!self) {
        return;
    }
    if (self->started) {
        zxb_journal_flush(self);
        pthread_mutex_lock(&self->mu);
        self->stop = true;
        pthread_cond_signal(&self->cv);
        pthread_mutex_unlock(&self->mu);
        pthread_join(self->thread, NULL);
    }
    s_batch_free(self->cur);
    while (self->q_head) {
        s_batch_t *b = self->q_head;
        self->q_head = b->next;
        s_batch_free(b);
    }
    if (self->seg_fd >= 0) {
        close(self->seg_fd);
    }
    if (self->efd >= 0) {
        close(self->efd);
    }
    if (self->lock_fd >= 0) {
        close(self->lock_fd); /* releases the flock */
    }
    if (self->dir_fd >= 0) {
        close(self->dir_fd);
    }
    pthread_mutex_destroy(&self->mu);
    pthread_cond_destroy(&self->cv);
    free(self->segs);
    free(self->dir);
    free(self);
    *self_p = NULL;
}

/* ---- the writer thread -------------------------------------------------------------- */

static void s_signal(zxb_journal_t *self)
{
    uint64_t one = 1;
    /* EAGAIN only when the counter is near overflow: it is readable then anyway */
    if (write(self->efd, &one, sizeof one) < 0) {
        return;
    }
}

static void s_fail(zxb_journal_t *self, int err, const char *what, uint64_t seg)
{
    if (atomic_load(&self->failed)) {
        return;
    }
    char name[40];
    s_seg_name(name, sizeof name, seg);
    snprintf(self->errmsg, sizeof self->errmsg, "journal %s: %s %s: %s", self->dir, what, name,
             strerror(err));
    atomic_store(&self->failed, err ? err : EIO);
    zsys_error("%s", self->errmsg);
    s_signal(self);
}

static int s_sync(zxb_journal_t *self)
{
    if (self->seg_fd < 0 || self->w_synced == self->w_written) {
        return 0;
    }
    if (fdatasync(self->seg_fd) != 0) {
        s_fail(self, errno, "fdatasync", self->seg_first);
        return -1;
    }
    self->w_synced = self->w_written;
    self->last_sync_ms = s_now_ms();
    atomic_fetch_add(&self->c_syncs, 1);
    return 0;
}

static int s_sync_dir(zxb_journal_t *self)
{
    if (fsync(self->dir_fd) != 0) {
        s_fail(self, errno, "fsync of the directory after", self->seg_first);
        return -1;
    }
    return 0;
}

static void s_segs_add(zxb_journal_t *self, uint64_t first)
{
    if (self->nsegs == self->segs_cap) {
        size_t cap = self->segs_cap ? self->segs_cap * 2 : 16;
        uint64_t *s = realloc(self->segs, cap * sizeof *s);
        assert(s); /* the broker may abort on out-of-memory */
        self->segs = s;
        self->segs_cap = cap;
    }
    self->segs[self->nsegs++] = first;
}

/* Closes the current segment (synced first, whatever the policy: a file
   once closed is never written again) and starts seg-<first>. */
static int s_roll(zxb_journal_t *self, uint64_t first)
{
    if (self->seg_fd >= 0) {
        if (s_sync(self) != 0) {
            return -1;
        }
        close(self->seg_fd);
        self->seg_fd = -1;
    }
    char name[40];
    s_seg_name(name, sizeof name, first);
    self->seg_first = first;
    /* O_TRUNC: a file of that name can only be one that holds no record
       (replay removes those, the standby may start a copy afresh) */
    int fd = openat(self->dir_fd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        s_fail(self, errno, "cannot create", first);
        return -1;
    }
    uint8_t hdr[S_HDR_LEN];
    s_header(hdr, self->lineage, first);
    ssize_t n = write(fd, hdr, sizeof hdr);
    if (n != (ssize_t)sizeof hdr) {
        s_fail(self, n < 0 ? errno : ENOSPC, "write of the header of", first);
        close(fd);
        return -1;
    }
    self->seg_fd = fd;
    self->seg_size = S_HDR_LEN;
    s_segs_add(self, first);
    if (self->cfg.fsync != ZXB_FSYNC_NONE && fdatasync(fd) != 0) {
        s_fail(self, errno, "fdatasync", first);
        return -1;
    }
    return s_sync_dir(self);
}

/* SNAP_END is durable: the segments before the snapshot's go. */
static void s_compact(zxb_journal_t *self)
{
    if (s_sync(self) != 0) {
        return;
    }
    size_t keep = 0;
    while (keep < self->nsegs && self->segs[keep] < self->seg_first) {
        keep++;
    }
    if (keep == 0) {
        return;
    }
    for (size_t i = 0; i < keep; i++) {
        char name[40];
        s_seg_name(name, sizeof name, self->segs[i]);
        if (unlinkat(self->dir_fd, name, 0) != 0 && errno != ENOENT) {
            /* not fatal: replay skips segments older than the newest snapshot */
            zsys_warning("journal %s: cannot remove %s: %s", self->dir, name, strerror(errno));
        } else {
            atomic_fetch_add(&self->c_deleted, 1);
        }
    }
    memmove(self->segs, self->segs + keep, (self->nsegs - keep) * sizeof *self->segs);
    self->nsegs -= keep;
    s_sync_dir(self);
}

static void s_publish(zxb_journal_t *self, uint64_t lsn)
{
    atomic_store(&self->committed, lsn);
    s_signal(self);
}

static bool s_must_roll(zxb_journal_t *self, const s_batch_t *b)
{
    return b->roll || self->seg_fd < 0 ||
           (self->seg_size >= self->cfg.segment_bytes && !self->w_in_snap);
}

/* Writes batches [b, end) (consecutive, none rolling but maybe the first)
   with one writev, then commits under the policy. False when nothing was
   written (the journal failed). */
static bool s_write_group(zxb_journal_t *self, s_batch_t *b, s_batch_t *end,
                          zxb_journal_tap_fn *tap, void *tap_arg)
{
    if (s_must_roll(self, b) && s_roll(self, b->first) != 0) {
        return false;
    }
    struct iovec iov[S_IOV_MAX];
    int n = 0;
    size_t total = 0;
    uint64_t last = 0, records = 0;
    bool snap_end = false;
    for (s_batch_t *p = b; p != end; p = p->next) {
        iov[n].iov_base = p->data;
        iov[n].iov_len = p->len;
        n++;
        total += p->len;
        last = p->last;
        records += p->last - p->first + 1;
        if (p->roll) {
            self->w_in_snap = true;
        }
        if (p->snap_end) {
            self->w_in_snap = false;
            snap_end = true;
        }
    }
    /* writev may write part (a full disk fills up in the middle): go on
       from where it stopped until it says why */
    struct iovec *v = iov;
    int left = n;
    size_t done = 0;
    while (done < total) {
        ssize_t w = writev(self->seg_fd, v, left);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            int e = w < 0 ? errno : ENOSPC;
            /* best effort: leave whole records only, so the file ends clean */
            if (ftruncate(self->seg_fd, (off_t)self->seg_size) != 0) {
                zsys_warning("journal %s: cannot cut the partial write back", self->dir);
            }
            s_fail(self, e, "write to", self->seg_first);
            return false;
        }
        done += (size_t)w;
        while (left > 0 && (size_t)w >= v->iov_len) {
            w -= (ssize_t)v->iov_len;
            v++;
            left--;
        }
        if (left > 0) {
            v->iov_base = (uint8_t *)v->iov_base + w;
            v->iov_len -= (size_t)w;
        }
    }
    self->seg_size += total;
    self->w_written = last;
    atomic_fetch_add(&self->written, total);
    atomic_fetch_add(&self->c_writes, 1);
    atomic_fetch_add(&self->c_records, records);
    atomic_fetch_add(&self->c_bytes, total);
    if (tap) {
        for (s_batch_t *p = b; p != end; p = p->next) {
            tap(tap_arg, p->data, p->len, p->first, p->last);
        }
    }
    switch (self->cfg.fsync) {
    case ZXB_FSYNC_BATCH:
        if (s_sync(self) != 0) {
            return true;
        }
        s_publish(self, last);
        break;
    case ZXB_FSYNC_INTERVAL:
        s_publish(self, last);
        if (s_now_ms() - self->last_sync_ms >= (int64_t)self->cfg.interval_ms) {
            s_sync(self);
        }
        break;
    case ZXB_FSYNC_NONE: s_publish(self, last); break;
    }
    if (snap_end) {
        s_compact(self);
    }
    return true;
}

static void s_write_all(zxb_journal_t *self, s_batch_t *list, zxb_journal_tap_fn *tap,
                        void *tap_arg)
{
    while (list) {
        if (atomic_load(&self->failed)) {
            break;
        }
        /* a group ends before the next batch that starts a snapshot, where
           the segment is full (outside a snapshot), and at S_IOV_MAX
           batches */
        uint64_t room = UINT64_MAX;
        if (!list->roll && !self->w_in_snap) {
            uint64_t used = s_must_roll(self, list) ? S_HDR_LEN : self->seg_size;
            room = used < self->cfg.segment_bytes ? self->cfg.segment_bytes - used : 0;
        }
        uint64_t bytes = list->len;
        s_batch_t *end = list->next;
        int n = 1;
        while (end && !end->roll && n < S_IOV_MAX && bytes < room) {
            bytes += end->len;
            end = end->next;
            n++;
        }
        if (!s_write_group(self, list, end, tap, tap_arg)) {
            atomic_fetch_add(&self->written, bytes);
        }
        while (list != end) {
            s_batch_t *next = list->next;
            s_batch_free(list);
            list = next;
        }
    }
    while (list) { /* failed: what is left is never written */
        s_batch_t *next = list->next;
        atomic_fetch_add(&self->written, list->len);
        s_batch_free(list);
        list = next;
    }
}

static void *s_writer(void *arg)
{
    zxb_journal_t *self = arg;
    pthread_mutex_lock(&self->mu);
    for (;;) {
        while (!self->q_head && !self->stop) {
            if (self->cfg.fsync == ZXB_FSYNC_INTERVAL && self->w_synced != self->w_written &&
                !atomic_load(&self->failed)) {
                /* written and not synced: sync when the interval is up */
                int64_t due = self->last_sync_ms + self->cfg.interval_ms;
                int64_t now = s_now_ms();
                if (now >= due) {
                    pthread_mutex_unlock(&self->mu);
                    s_sync(self);
                    pthread_mutex_lock(&self->mu);
                    continue;
                }
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                int64_t ns = ts.tv_nsec + (due - now) * 1000000;
                ts.tv_sec += ns / 1000000000;
                ts.tv_nsec = ns % 1000000000;
                pthread_cond_timedwait(&self->cv, &self->mu, &ts);
            } else {
                pthread_cond_wait(&self->cv, &self->mu);
            }
        }
        s_batch_t *list = self->q_head;
        self->q_head = NULL;
        self->q_tail = &self->q_head;
        bool stop = self->stop;
        zxb_journal_tap_fn *tap = self->tap;
        void *tap_arg = self->tap_arg;
        pthread_mutex_unlock(&self->mu);
        s_write_all(self, list, tap, tap_arg);
        if (stop) {
            if (!atomic_load(&self->failed)) {
                s_sync(self);
            }
            return NULL;
        }
        pthread_mutex_lock(&self->mu);
    }
}

/* ---- the broker thread's side ---------------------------------------------------------- */

static s_batch_t *s_batch_new(size_t need)
{
    s_batch_t *b = calloc(1, sizeof *b);
    assert(b);
    b->cap = need > S_BATCH_MIN ? need : S_BATCH_MIN;
    b->data = malloc(b->cap);
    assert(b->data);
    return b;
}

static void s_reserve(zxb_journal_t *self, size_t need)
{
    if (!self->cur) {
        self->cur = s_batch_new(need);
    }
    s_batch_t *b = self->cur;
    if (b->len + need > b->cap) {
        size_t cap = b->cap * 2;
        while (cap < b->len + need) {
            cap *= 2;
        }
        uint8_t *d = realloc(b->data, cap);
        assert(d);
        b->data = d;
        b->cap = cap;
    }
}

static void s_add(zxb_journal_t *self, const uint8_t *rec, size_t len, uint64_t lsn)
{
    s_reserve(self, len);
    s_batch_t *b = self->cur;
    memcpy(b->data + b->len, rec, len);
    b->len += len;
    if (b->first == 0) {
        b->first = lsn;
    }
    b->last = lsn;
    self->since_snap += len;
    self->fresh = false;
    atomic_fetch_add(&self->appended, len);
}

uint64_t zxb_journal_append(zxb_journal_t *self, uint8_t type, const void *body, size_t len)
{
    assert(self && self->replayed);
    assert(len <= ZXB_JOURNAL_MAX_BODY);
    if (atomic_load(&self->failed)) {
        return 0;
    }
    uint64_t lsn = self->next_lsn++;
    s_reserve(self, S_REC_HDR + len);
    s_batch_t *b = self->cur;
    uint8_t *p = b->data + b->len;
    s_put32(p, (uint32_t)len);
    p[8] = type;
    s_put64(p + 9, lsn);
    if (len) {
        memcpy(p + S_REC_HDR, body, len);
    }
    s_put32(p + 4, s_rec_crc(p, p + S_REC_HDR, len));
    b->len += S_REC_HDR + len;
    if (b->first == 0) {
        b->first = lsn;
    }
    b->last = lsn;
    self->since_snap += S_REC_HDR + len;
    self->fresh = false;
    atomic_fetch_add(&self->appended, S_REC_HDR + len);
    return lsn;
}

void zxb_journal_flush(zxb_journal_t *self)
{
    assert(self);
    s_batch_t *b = self->cur;
    if (!b || b->first == 0) {
        return;
    }
    self->cur = NULL;
    if (atomic_load(&self->failed)) {
        atomic_fetch_add(&self->written, b->len);
        s_batch_free(b);
        return;
    }
    pthread_mutex_lock(&self->mu);
    *self->q_tail = b;
    self->q_tail = &b->next;
    pthread_cond_signal(&self->cv);
    pthread_mutex_unlock(&self->mu);
}

int zxb_journal_fd(zxb_journal_t *self)
{
    assert(self);
    return self->efd;
}

uint64_t zxb_journal_committed(zxb_journal_t *self)
{
    assert(self);
    uint64_t v;
    if (read(self->efd, &v, sizeof v) < 0) {
        /* EAGAIN: nothing new since the last read */
    }
    return atomic_load(&self->committed);
}

int zxb_journal_error(zxb_journal_t *self, char *buf, size_t len)
{
    assert(self);
    int e = atomic_load(&self->failed);
    if (e && buf && len) {
        snprintf(buf, len, "%s", self->errmsg);
    }
    return e;
}

uint64_t zxb_journal_bytes_since_snapshot(zxb_journal_t *self)
{
    assert(self);
    return self->since_snap;
}

uint64_t zxb_journal_backlog(zxb_journal_t *self)
{
    assert(self);
    return atomic_load(&self->appended) - atomic_load(&self->written);
}

void zxb_journal_snapshot_begin(zxb_journal_t *self)
{
    assert(self && self->replayed && !self->in_snap);
    zxb_journal_flush(self);
    self->in_snap = true;
    self->since_snap = 0;
    uint64_t lsn = zxb_journal_append(self, ZXB_JREC_SNAP_BEGIN, NULL, 0);
    if (lsn && self->cur) {
        self->cur->roll = true;
    }
}

void zxb_journal_snapshot_end(zxb_journal_t *self)
{
    assert(self && self->in_snap);
    self->in_snap = false;
    uint64_t lsn = zxb_journal_append(self, ZXB_JREC_SNAP_END, NULL, 0);
    if (lsn && self->cur) {
        self->cur->snap_end = true;
    }
}

void zxb_journal_set_tap(zxb_journal_t *self, zxb_journal_tap_fn *fn, void *arg)
{
    assert(self);
    pthread_mutex_lock(&self->mu);
    self->tap = fn;
    self->tap_arg = arg;
    pthread_mutex_unlock(&self->mu);
}

void zxb_journal_counters(zxb_journal_t *self, zxb_journal_counters_t *c)
{
    assert(self && c);
    c->writes = atomic_load(&self->c_writes);
    c->syncs = atomic_load(&self->c_syncs);
    c->records = atomic_load(&self->c_records);
    c->bytes = atomic_load(&self->c_bytes);
    c->segments_deleted = atomic_load(&self->c_deleted);
}

void zxb_journal_lineage(zxb_journal_t *self, uint8_t id[ZXB_JOURNAL_LINEAGE_LEN])
{
    assert(self);
    memcpy(id, self->lineage, ZXB_JOURNAL_LINEAGE_LEN);
}

/* Checks one record at p (of avail bytes): 0 and its total size, or -1. */
static int s_check(const uint8_t *p, size_t avail, size_t *size)
{
    if (avail < S_REC_HDR) {
        return -1;
    }
    uint32_t len = s_get32(p);
    if (len > ZXB_JOURNAL_MAX_BODY || len > avail - S_REC_HDR) {
        return -1;
    }
    if (s_rec_crc(p, p + S_REC_HDR, len) != s_get32(p + 4)) {
        return -1;
    }
    *size = S_REC_HDR + len;
    return 0;
}

uint64_t zxb_journal_append_raw(zxb_journal_t *self, const uint8_t lineage[ZXB_JOURNAL_LINEAGE_LEN],
                                const uint8_t *bytes, size_t len, char *err, size_t errlen)
{
    assert(self && self->replayed);
    if (atomic_load(&self->failed)) {
        zxb_journal_error(self, err, errlen);
        return 0;
    }
    if (!self->fresh && memcmp(lineage, self->lineage, ZXB_JOURNAL_LINEAGE_LEN) != 0) {
        snprintf(err, errlen, "journal %s belongs to another lineage", self->dir);
        return 0;
    }
    /* check everything before appending anything */
    uint64_t expect = self->next_lsn, last = 0;
    for (size_t off = 0, size = 0; off < len; off += size) {
        if (s_check(bytes + off, len - off, &size) != 0) {
            snprintf(err, errlen, "not whole valid records at byte %zu", off);
            return 0;
        }
        uint8_t type = bytes[off + 8];
        uint64_t lsn = s_get64(bytes + off + 9);
        /* a gap only where a copy starts afresh from a snapshot */
        bool restart = off == 0 && type == ZXB_JREC_SNAP_BEGIN && lsn >= expect;
        bool start = off == 0 && self->fresh && lsn == 1;
        if (lsn != expect && !restart && !start) {
            snprintf(err, errlen, "record LSN %" PRIu64 " where %" PRIu64 " was expected", lsn,
                     expect);
            return 0;
        }
        last = lsn;
        expect = lsn + 1;
    }
    if (len == 0) {
        return self->next_lsn - 1;
    }
    if (self->fresh) {
        memcpy(self->lineage, lineage, ZXB_JOURNAL_LINEAGE_LEN);
    }
    for (size_t off = 0, size = 0; off < len; off += size) {
        size = S_REC_HDR + s_get32(bytes + off);
        uint8_t type = bytes[off + 8];
        if (type == ZXB_JREC_SNAP_BEGIN) {
            /* as snapshot_begin: the snapshot starts a segment */
            zxb_journal_flush(self);
            self->since_snap = 0;
            self->in_snap = true;
        }
        s_add(self, bytes + off, size, s_get64(bytes + off + 9));
        if (type == ZXB_JREC_SNAP_BEGIN) {
            self->cur->roll = true;
        } else if (type == ZXB_JREC_SNAP_END) {
            self->cur->snap_end = true;
            self->in_snap = false;
        }
    }
    self->next_lsn = last + 1;
    return last;
}

/* ---- replay ---------------------------------------------------------------------------- */

typedef struct {
    uint64_t first; /* from the name */
    char name[40];
    int fd;
    uint8_t *map;
    size_t size;
    /* what a scan found */
    bool bad_header;
    size_t end;       /* offset after the last good record */
    uint64_t last;    /* LSN of the last good record; first - 1 if none */
    uint64_t records; /* good records */
    bool starts_snap, has_end;
} s_seg_t;

static int s_seg_cmp(const void *a, const void *b)
{
    const s_seg_t *x = a, *y = b;
    return x->first < y->first ? -1 : x->first > y->first;
}

/* Whether a valid record that follows on starts anywhere after off: a
   torn tail has none, corruption in the middle has. */
static bool s_good_after(const s_seg_t *s, size_t off, uint64_t after)
{
    for (size_t o = off + 1; o + S_REC_HDR <= s->size; o++) {
        uint64_t lsn = s_get64(s->map + o + 9);
        size_t size;
        if (lsn > after && lsn - after <= (s->size - off) / S_REC_HDR + 1 &&
            s_check(s->map + o, s->size - o, &size) == 0) {
            return true;
        }
    }
    return false;
}

/* Reads and checks seg's header and records. */
static int s_scan(zxb_journal_t *self, s_seg_t *s, bool tail, uint8_t *lineage, bool *have,
                  char *err, size_t errlen)
{
    s->last = s->first - 1;
    s->end = 0;
    if (s->size < S_HDR_LEN || memcmp(s->map, S_MAGIC, 4) != 0 ||
        s_get32(s->map + 32) != (uint32_t)crc32(crc32(0L, Z_NULL, 0), s->map, 32) ||
        s_get64(s->map + 24) != s->first) {
        if (tail) {
            s->bad_header = true; /* created, header not (wholly) written: torn */
            return 0;
        }
        snprintf(err, errlen, "journal %s: %s has a bad header", self->dir, s->name);
        return -1;
    }
    if (s_get32(s->map + 4) != S_VERSION) {
        snprintf(err, errlen, "journal %s: %s is of format version %u (this broker reads %u)",
                 self->dir, s->name, s_get32(s->map + 4), S_VERSION);
        return -1;
    }
    if (*have && memcmp(lineage, s->map + 8, 16) != 0) {
        snprintf(err, errlen, "journal %s: %s belongs to another journal (lineage id differs)",
                 self->dir, s->name);
        return -1;
    }
    memcpy(lineage, s->map + 8, 16);
    *have = true;
    size_t off = S_HDR_LEN, size = 0;
    uint64_t expect = s->first;
    while (off < s->size) {
        if (s_check(s->map + off, s->size - off, &size) != 0 ||
            s_get64(s->map + off + 9) != expect) {
            if (!tail || s_good_after(s, off, expect - 1)) {
                snprintf(err, errlen,
                         "journal %s: %s: corrupt record at byte %zu (LSN %" PRIu64
                         ") followed by valid records",
                         self->dir, s->name, off, expect);
                return -1;
            }
            break;
        }
        uint8_t type = s->map[off + 8];
        if (type == ZXB_JREC_SNAP_BEGIN && off == S_HDR_LEN) {
            s->starts_snap = true;
        }
        if (type == ZXB_JREC_SNAP_END && s->starts_snap) {
            s->has_end = true;
        }
        s->records++;
        s->last = expect++;
        off += size;
    }
    s->end = off;
    return 0;
}

static int s_list(zxb_journal_t *self, s_seg_t **segs_p, size_t *n_p, char *err, size_t errlen)
{
    DIR *d = fdopendir(dup(self->dir_fd));
    if (!d) {
        snprintf(err, errlen, "journal %s: %s", self->dir, strerror(errno));
        return -1;
    }
    s_seg_t *segs = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        uint64_t first;
        char tail[8];
        if (strlen(e->d_name) != 4 + 16 + 4 ||
            sscanf(e->d_name, "seg-%16" SCNx64 "%7s", &first, tail) != 2 ||
            strcmp(tail, ".zxj") != 0 || first == 0) {
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            s_seg_t *g = realloc(segs, cap * sizeof *g);
            assert(g);
            segs = g;
        }
        memset(&segs[n], 0, sizeof segs[n]);
        segs[n].first = first;
        segs[n].fd = -1;
        snprintf(segs[n].name, sizeof segs[n].name, "%.39s", e->d_name);
        n++;
    }
    closedir(d);
    if (n) {
        qsort(segs, n, sizeof *segs, s_seg_cmp);
    }
    *segs_p = segs;
    *n_p = n;
    return 0;
}

static int s_map(zxb_journal_t *self, s_seg_t *s, char *err, size_t errlen)
{
    s->fd = openat(self->dir_fd, s->name, O_RDWR | O_CLOEXEC);
    struct stat st;
    if (s->fd < 0 || fstat(s->fd, &st) != 0) {
        snprintf(err, errlen, "journal %s: %s: %s", self->dir, s->name, strerror(errno));
        return -1;
    }
    s->size = (size_t)st.st_size;
    if (s->size > 0) {
        s->map = mmap(NULL, s->size, PROT_READ, MAP_PRIVATE, s->fd, 0);
        if (s->map == MAP_FAILED) {
            s->map = NULL;
            snprintf(err, errlen, "journal %s: %s: mmap: %s", self->dir, s->name, strerror(errno));
            return -1;
        }
        madvise(s->map, s->size, MADV_SEQUENTIAL);
    }
    return 0;
}

static void s_unmap(s_seg_t *s)
{
    if (s->map) {
        munmap(s->map, s->size);
        s->map = NULL;
    }
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
}

int zxb_journal_replay(zxb_journal_t *self,
                       int (*fn)(void *arg, uint8_t type, uint64_t lsn, const uint8_t *body,
                                 size_t len),
                       void *arg, zxb_journal_stats_t *st, char *err, size_t errlen)
{
    assert(self && !self->replayed && !self->started);
    int64_t t0 = zclock_usecs();
    zxb_journal_stats_t stats = {0};
    s_seg_t *segs = NULL;
    size_t n = 0, start = 0;
    int rc = -1;
    bool dirty_dir = false;
    if (s_list(self, &segs, &n, err, errlen) != 0) {
        goto done;
    }
    /* from the newest segment back to the newest complete snapshot: the
       segments before it are dead, never read */
    uint8_t lineage[16];
    bool have = false;
    for (size_t i = n; i-- > 0;) {
        if (s_map(self, &segs[i], err, errlen) != 0 ||
            s_scan(self, &segs[i], i == n - 1, lineage, &have, err, errlen) != 0) {
            goto done;
        }
        if (segs[i].starts_snap && segs[i].has_end) {
            start = i;
            break;
        }
    }
    /* LSNs follow on across the live segments (a copy made by a standby
       may jump forward to a snapshot that restarted it) */
    for (size_t i = start + 1; i < n; i++) {
        if (segs[i].bad_header) {
            continue;
        }
        if (segs[i].first != segs[i - 1].last + 1 && !segs[i].starts_snap) {
            snprintf(err, errlen,
                     "journal %s: %s starts at LSN %" PRIu64 " after LSN %" PRIu64
                     " (a segment is missing)",
                     self->dir, segs[i].name, segs[i].first, segs[i - 1].last);
            goto done;
        }
    }
    /* the tail: cut what is torn, drop a newest segment with no record */
    if (n > 0) {
        s_seg_t *t = &segs[n - 1];
        if (t->bad_header || t->records == 0) {
            stats.torn_bytes += t->bad_header ? t->size : t->size - t->end;
            zsys_warning("journal %s: removed %s (%zu bytes, no whole record)", self->dir, t->name,
                         t->size);
            s_unmap(t);
            if (unlinkat(self->dir_fd, t->name, 0) != 0) {
                snprintf(err, errlen, "journal %s: cannot remove %s: %s", self->dir, t->name,
                         strerror(errno));
                goto done;
            }
            dirty_dir = true;
            n--;
        } else if (t->end < t->size) {
            stats.torn_bytes += t->size - t->end;
            zsys_warning("journal %s: cut a torn tail of %zu bytes off %s (after LSN %" PRIu64 ")",
                         self->dir, t->size - t->end, t->name, t->last);
            if (ftruncate(t->fd, (off_t)t->end) != 0 || fsync(t->fd) != 0) {
                snprintf(err, errlen, "journal %s: cannot truncate %s: %s", self->dir, t->name,
                         strerror(errno));
                goto done;
            }
        }
    }
    if (start >= n) {
        start = 0;
    }
    /* the live records, in order */
    for (size_t i = start; i < n; i++) {
        s_seg_t *s = &segs[i];
        stats.segments++;
        if (s->starts_snap && !s->has_end) {
            continue; /* an interrupted snapshot: copies of what came before */
        }
        size_t off = S_HDR_LEN;
        while (off < s->end) {
            uint32_t len = s_get32(s->map + off);
            uint8_t type = s->map[off + 8];
            uint64_t lsn = s_get64(s->map + off + 9);
            stats.bytes += S_REC_HDR + len;
            if (type < ZXB_JREC_SNAP_BEGIN) {
                stats.records++;
                if (fn && fn(arg, type, lsn, s->map + off + S_REC_HDR, len) != 0) {
                    snprintf(err, errlen, "journal %s: replay stopped at LSN %" PRIu64, self->dir,
                             lsn);
                    goto done;
                }
            }
            off += S_REC_HDR + len;
        }
    }
    /* what is before the snapshot is dead: a crash came between its
       SNAP_END and the removal */
    for (size_t i = 0; i < start; i++) {
        if (unlinkat(self->dir_fd, segs[i].name, 0) == 0) {
            dirty_dir = true;
        }
    }
    if (dirty_dir && fsync(self->dir_fd) != 0) {
        snprintf(err, errlen, "journal %s: fsync of the directory: %s", self->dir, strerror(errno));
        goto done;
    }
    if (have) {
        memcpy(self->lineage, lineage, 16);
        self->fresh = false;
    }
    uint64_t last = 0;
    for (size_t i = start; i < n; i++) {
        s_segs_add(self, segs[i].first);
        last = segs[i].last;
    }
    self->next_lsn = last + 1;
    self->w_written = self->w_synced = last;
    self->since_snap = stats.bytes;
    atomic_store(&self->committed, last);
    self->last_sync_ms = s_now_ms();
    self->replayed = true;
    if (pthread_create(&self->thread, NULL, s_writer, self) != 0) {
        snprintf(err, errlen, "journal %s: cannot start its writer thread", self->dir);
        self->replayed = false;
        goto done;
    }
    self->started = true;
    rc = 0;
done:
    for (size_t i = 0; i < n; i++) {
        s_unmap(&segs[i]);
    }
    /* n may have dropped by one: the removed tail was unmapped already */
    free(segs);
    stats.seconds = (zclock_usecs() - t0) / 1e6;
    if (st) {
        *st = stats;
    }
    return rc;
}
