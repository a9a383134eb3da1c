/*  zxb_journal.h - the broker's journal (journal.c): an append-only log of
    opaque records in a directory, written by a thread of its own with group
    commit, checksummed, compacted by snapshots, replayed at start. It knows
    nothing of tasks: the records' bodies are the caller's (broker/durable.c).

    Files: DIR/lock (flock), DIR/seg-<16 hex of first LSN>.zxj. A segment
    starts with a 36-byte header (magic "ZXJ1", u32 format version 1, the
    journal's 16-byte lineage id, u64 first LSN, u32 crc32 of the 32 bytes
    before it); then records: u32 body length, u32 crc32 (zlib's, over
    type + lsn + body), u8 type, u64 lsn, body. Integers are little-endian.
    LSNs count records from 1, without gaps, across segments.

    Threads: every function but the tap runs on one thread (the broker's);
    the tap runs on the writer thread. Nothing here blocks on I/O except
    open, replay and destroy.

    Against the lead's design (docs of issue 18, section 1) this header
    adds, without changing anything that was there:
      - zxb_journal_counters (writes, syncs, records and bytes written): the
        group-commit test counts syncs with it, the benchmark and the
        broker's metrics can show it;
      - zxb_journal_lineage, zxb_journal_append_raw: the standby broker
        (standby.c) keeps a copy of the active broker's journal with the
        same lineage and LSNs;
      - what append does once the journal has failed (returns 0, drops the
        record) and what replay does with an interrupted snapshot (skips
        it), which the design left open.
*/
#ifndef ZXB_JOURNAL_H
#define ZXB_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

typedef struct zxb_journal zxb_journal_t;
typedef enum { ZXB_FSYNC_BATCH, ZXB_FSYNC_INTERVAL, ZXB_FSYNC_NONE } zxb_fsync_t;
typedef struct {
    const char *dir;
    zxb_fsync_t fsync;
    uint32_t interval_ms;   /* ZXB_FSYNC_INTERVAL: fsync at least this often (default 100) */
    uint64_t segment_bytes; /* default 64 MiB */
} zxb_journal_config_t;
typedef struct {
    uint64_t records, bytes, segments, torn_bytes;
    double seconds;
} zxb_journal_stats_t;

/* Record types 1..15 are the caller's; 0xF0 and up the module's (never
   given to the replay callback). */
#define ZXB_JREC_SNAP_BEGIN 0xF0
#define ZXB_JREC_SNAP_END 0xF1
/* The largest record body append takes (a programmer error beyond it). */
#define ZXB_JOURNAL_MAX_BODY (1u << 30)
#define ZXB_JOURNAL_LINEAGE_LEN 16

/* Opens (creating DIR if needed) and takes an exclusive lock on DIR/lock (flock): a second
   broker on the same journal gets NULL and *err "journal DIR is in use by another broker".
   NULL with err filled on any other failure too (cfg fields 0 take the defaults). */
zxb_journal_t *zxb_journal_open(const zxb_journal_config_t *cfg, char *err, size_t errlen);
/* Flushes the current batch, writes and fsyncs everything (whatever the policy), joins the
   writer, releases the lock. Accepts NULL; sets *self_p to NULL. */
void zxb_journal_destroy(zxb_journal_t **self_p);
/* Replays the live records in LSN order: from the newest complete snapshot (SNAP_BEGIN ..
   SNAP_END in one segment) to the end. A torn or corrupt tail (bad length or crc) is cut off
   (truncated, logged with its byte count); corruption followed by good records is an error.
   A snapshot that was interrupted (SNAP_BEGIN without SNAP_END in its segment) is skipped:
   its records are copies of what the records before it say. fn returns 0 to go on (non-zero
   stops the replay with an error); fn may be NULL (the journal is only checked). Must be
   called once, before the first append: it starts the segment new records go to.
   Returns 0 or -1 (err set). st may be NULL. */
int zxb_journal_replay(zxb_journal_t *self,
                       int (*fn)(void *arg, uint8_t type, uint64_t lsn, const uint8_t *body,
                                 size_t len),
                       void *arg, zxb_journal_stats_t *st, char *err, size_t errlen);
/* Appends a record to the current batch (copied); returns its LSN. Never blocks on I/O.
   Once the journal has failed (zxb_journal_error), returns 0 and drops the record. */
uint64_t zxb_journal_append(zxb_journal_t *self, uint8_t type, const void *body, size_t len);
/* Hands the batch to the writer thread (call at the end of each broker turn). */
void zxb_journal_flush(zxb_journal_t *self);
/* A file descriptor (eventfd) the broker polls (zloop_poller): readable when the committed
   LSN moved or the writer failed. zxb_journal_committed reads and clears it. */
int zxb_journal_fd(zxb_journal_t *self);
/* The highest LSN durable under the policy (BATCH: written and fdatasync'd; INTERVAL and
   NONE: written). Everything replayed counts as committed. */
uint64_t zxb_journal_committed(zxb_journal_t *self);
/* 0, or the writer's first error (errno, e.g. ENOSPC) with its message in buf; once failed,
   the journal stays failed (the broker refuses submissions; docs say how to recover). */
int zxb_journal_error(zxb_journal_t *self, char *buf, size_t len);
/* Bytes appended since the last snapshot began, and pending (appended, not yet written). */
uint64_t zxb_journal_bytes_since_snapshot(zxb_journal_t *self);
uint64_t zxb_journal_backlog(zxb_journal_t *self);
/* Compaction: begin starts a new segment with SNAP_BEGIN; the caller appends a record for every
   live object; end appends SNAP_END. Once SNAP_END is committed the writer deletes the older
   segments. Begin and end belong in one broker turn (the snapshot describes one moment); a
   segment never rolls over inside a snapshot. */
void zxb_journal_snapshot_begin(zxb_journal_t *self);
void zxb_journal_snapshot_end(zxb_journal_t *self);
/* Replication (standby broker): called on the writer thread after each write with the exact
   bytes written (whole records) and the LSN range; may be NULL. */
typedef void(zxb_journal_tap_fn)(void *arg, const uint8_t *bytes, size_t len, uint64_t first,
                                 uint64_t last);
void zxb_journal_set_tap(zxb_journal_t *self, zxb_journal_tap_fn *fn, void *arg);

/* What the writer has done since open (for tests, the benchmark and metrics). */
typedef struct {
    uint64_t writes;  /* writev calls (each takes every batch handed over since the last) */
    uint64_t syncs;   /* fdatasync calls on segments */
    uint64_t records; /* records written */
    uint64_t bytes;   /* record bytes written */
    uint64_t segments_deleted;
} zxb_journal_counters_t;
void zxb_journal_counters(zxb_journal_t *self, zxb_journal_counters_t *c);

/* The journal's lineage id (16 bytes, random when its first segment was made). */
void zxb_journal_lineage(zxb_journal_t *self, uint8_t id[ZXB_JOURNAL_LINEAGE_LEN]);
/* Standby: appends records as another journal's tap gave them (whole records, each crc
   checked) to the current batch, keeping their LSNs; the caller flushes. The first LSN must
   follow this journal's last, or the bytes must start with a SNAP_BEGIN (a copy starting
   afresh from the other journal's snapshot: the older segments go once its SNAP_END is
   committed). On an empty journal (nothing replayed, nothing appended) the first call adopts
   the lineage given. Returns the last LSN appended, or 0 with err set when the bytes are not
   whole valid records that follow on, or the lineage differs (nothing appended then). */
uint64_t zxb_journal_append_raw(zxb_journal_t *self, const uint8_t lineage[ZXB_JOURNAL_LINEAGE_LEN],
                                const uint8_t *bytes, size_t len, char *err, size_t errlen);

#endif
