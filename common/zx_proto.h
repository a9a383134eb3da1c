/*  zx_proto.h - the zexec wire protocol (ZXP), shared by broker, worker and
    client. docs/protocol.md is the specification; this is its only encoder
    and decoder.

    A message is a ZeroMQ multipart message:
      frame 0  4 bytes: 'Z' 'X' version command
      frame 1  msgpack header: an array (fields, or for batch commands a list
               of item arrays)
      frame 2+ payloads, opaque bytes, one per item for SUBMIT/TASK/RESULT
    ROUTER sockets see the peer's routing id in front of frame 0.
*/
#ifndef ZX_PROTO_H
#define ZX_PROTO_H

#include <czmq.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

#define ZXP_SIG0 'Z'
#define ZXP_SIG1 'X'
#define ZXP_VERSION 2 /* 2: small payloads ride inline in their item */

/* Limits (docs/protocol.md "Limits"). */
#define ZXP_MAX_MSG (64 * 1024 * 1024) /* ZMQ_MAXMSGSIZE: largest frame */
#define ZXP_MAX_HEADER (4 * 1024 * 1024)
#define ZXP_MAX_BATCH 4096 /* items in one batch message */
/* Payloads up to this size travel inside their item (a trailing bin field)
   rather than in a frame of their own (docs/protocol.md). 4096 items of
   this much stay well under ZXP_MAX_HEADER. */
#define ZXP_INLINE_MAX 256
#define ZXP_MAX_DEPTH 32          /* msgpack nesting */
#define ZXP_MAX_COUNT 2147483647u /* pids, slot counts, prefetch, credits: INT32_MAX */
/* A batch is sent once its header reaches this (its last item adds at most
   about 600 bytes), so a header fits any peer's --max-msg (at least
   ZXP_MIN_MAX_MSG) */
#define ZXP_BATCH_HEADER_MAX (32 * 1024)
#define ZXP_MIN_MAX_MSG (64 * 1024) /* the smallest --max-msg */
#define ZXP_TOKEN_LEN 16            /* an attempt token (TASK, WRESULT, READY's running entries) */
#define ZXP_MAX_NAME 255            /* function and node names */
#define ZXP_ID_LEN 16               /* session and worker ids */

/* Commands. 0x0_ client endpoint, 0x2_ worker endpoint, some on both. */
enum {
    ZXP_HELLO = 0x01,     /* c->b [version, session, name, heartbeat_ms, max_msg?, flags?] */
    ZXP_WELCOME = 0x02,   /* b->c, b->w [broker_id, heartbeat_ms, liveness, max_msg] */
    ZXP_SUBMIT = 0x03,    /* c->b batch [seq, fn, pool, priority, retries, timeout_ms, flags] +1 */
    ZXP_STARTED = 0x04,   /* b->c batch [seq, node, pid] */
    ZXP_RESULT = 0x05,    /* b->c batch [seq, status, node, pid, pool, attempts] +1 */
    ZXP_CANCEL = 0x06,    /* c->b batch [seq, terminate] */
    ZXP_CANCELLED = 0x07, /* b->c batch [seq, outcome] */
    ZXP_HEARTBEAT = 0x08, /* any [] */
    ZXP_BYE = 0x09,       /* c->b, w->b [] */
    ZXP_STATUS = 0x0A,    /* c->b [] */
    ZXP_STATUS_REPLY = 0x0B, /* b->c [map] */
    ZXP_ERROR = 0x0C,        /* b->c, b->w [code, message] */
    ZXP_RESET = 0x0D,        /* b->c, b->w []: unknown peer, say HELLO/READY again */
    /* 2.2: detached jobs (docs/protocol.md §13) */
    ZXP_ACCEPTED = 0x0E,   /* b->c batch [seq]: these tasks are durable */
    ZXP_FETCH = 0x0F,      /* c->b [job, after, max, wait_ms] */
    ZXP_JRESULT = 0x10,    /* b->c batch [seq, status, node, pid, pool, attempts, index] +1 */
    ZXP_FETCHED = 0x11,    /* b->c [job, info] */
    ZXP_RACK = 0x12,       /* c->b [job, [seq..]] */
    ZXP_JOBS = 0x13,       /* c->b [] */
    ZXP_JOBS_REPLY = 0x14, /* b->c [[info..]] */
    ZXP_JCANCEL = 0x15,    /* c->b [job] */
    ZXP_JCANCELLED = 0x16, /* b->c [job, info] */
    ZXP_READY =
        0x21,              /* w->b [version, worker_id, node, pid, threads, procs, prefetch,
                              heartbeat_ms, functions [[name, pools]..], running [[session, seq, pool]..]] */
    ZXP_TASK = 0x22,       /* b->w batch [session, seq, fn, pool, timeout_ms, attempt, flags] +1 */
    ZXP_WSTARTED = 0x23,   /* w->b batch [session, seq, pid, pool] */
    ZXP_WRESULT = 0x24,    /* w->b batch [session, seq, status, pid, pool, slot_freed] +1 */
    ZXP_CREDIT = 0x25,     /* w->b [pool, n]: n slots of pool freed late */
    ZXP_WCANCEL = 0x26,    /* b->w batch [session, seq, terminate] */
    ZXP_WCANCELLED = 0x27, /* w->b batch [session, seq, outcome] */
    ZXP_DRAIN = 0x28,      /* w->b []: send me no more tasks */
    ZXP_SHUTDOWN = 0x29,   /* b->w, b->c []: the broker is stopping */
};

/* Pool kinds (also zx_pool_t) and masks of pools a function allows. */
enum { ZXP_POOL_ANY = 0, ZXP_POOL_THREAD = 1, ZXP_POOL_PROCESS = 2 };
enum { ZXP_POOLS_THREAD = 1, ZXP_POOLS_PROCESS = 2 };

/* Task flags (SUBMIT, TASK). */
enum {
    ZXP_F_CHUNK = 1 /* payload is an array of argument arrays; the result an array of
                       [ok, value-or-error] pairs */
};

/* RESULT status. Payload: the msgpack value for OK, else an error array
   [type, message, traceback]. */
enum {
    ZXP_ST_OK = 0,
    ZXP_ST_RAISED = 1,
    ZXP_ST_NOFUNC = 2,
    ZXP_ST_TIMELIMIT = 3,
    ZXP_ST_CRASHED = 4,
    ZXP_ST_WORKERLOST = 5,
    ZXP_ST_CANCELLED = 6, /* terminated while running */
    ZXP_ST_REJECTED = 7,
    ZXP_ST_MEMORY = 8,
    ZXP_ST_NOTALLOWED = 9,
    ZXP_ST_MAX = 9
};

/* CANCELLED outcome. */
enum {
    ZXP_CANCEL_DONE = 0,       /* cancelled before it started: it never runs, no RESULT */
    ZXP_CANCEL_REFUSED = 1,    /* running, finished or unknown: a RESULT follows or came */
    ZXP_CANCEL_TERMINATED = 2, /* killed while running: no RESULT follows */
};

/* Roles: which commands a receiver accepts. */
enum {
    ZXP_ROLE_BROKER_C = 1, /* broker, client endpoint */
    ZXP_ROLE_BROKER_W = 2, /* broker, worker endpoint */
    ZXP_ROLE_CLIENT = 3,
    ZXP_ROLE_WORKER = 4,
    /* the peer link of a pair of brokers (broker/standby.c): never a ZXP
       command, only the receiver's role in a signed envelope, so that a
       message signed for one direction of the link, or for a client or
       worker endpoint, never verifies on another */
    ZXP_ROLE_PEER_PRIMARY = 5,
    ZXP_ROLE_PEER_BACKUP = 6,
};

/* The internal error family, each code named by zxp_strerror: the
   decoder's (-100..) and the signing envelope's (-120.., zx_sign.h). No
   public function returns one: a protocol failure reaches users as ZX_EPROTO
   (zx__status_code, map.c), and public functions return ZX_* codes only. */
enum {
    ZXP_E_SHORT = -100,        /* too few frames */
    ZXP_E_SIG = -101,          /* frame 0 is not 'Z' 'X' v c */
    ZXP_E_VERSION = -102,      /* unsupported protocol version */
    ZXP_E_CMD = -103,          /* unknown command, or not accepted by this role */
    ZXP_E_SIZE = -104,         /* header too large */
    ZXP_E_MSGPACK = -105,      /* header is not one well-formed bounded msgpack value */
    ZXP_E_SHAPE = -106,        /* header has the wrong shape or types */
    ZXP_E_PAYLOADS = -107,     /* payload frame count does not match the items */
    ZXP_E_BATCH = -108,        /* too many items */
    ZXP_E_UNKNOWN = -109,      /* a reply for a task the receiver does not know */
    ZXP_E_AGAIN = -110,        /* zxp_recv: no message waits */
    ZXP_E_SIGN_MISSING = -120, /* no envelope frame */
    ZXP_E_SIGN_FORMAT = -121,  /* envelope malformed, or for another role */
    ZXP_E_SIGN_MAC = -122,     /* signature does not verify */
    ZXP_E_SIGN_EPOCH = -123,   /* signed for another session of the receiver */
    ZXP_E_SIGN_REPLAY = -124,  /* seq not above the highest seen */
    ZXP_E_SIGN_FULL = -125,    /* too many sender sessions */
    ZXP_E_SIGN_FIRST = -126,   /* epoch zero: first contact, the sender does not
                                 know the receiver's session yet */
};
const char *zxp_strerror(int code);

/* A string view into a received header (not NUL-terminated). */
typedef struct {
    const char *ptr;
    uint32_t len;
} zxp_str_t;

/* ---- validating untrusted msgpack ------------------------------------------ */

/* Checks that data[0..len) starts with one well-formed msgpack value whose
   containers never claim more elements than bytes remain and whose nesting
   is at most max_depth: after this, msgpack_unpack allocates O(len). Returns
   the value's size in bytes, or -1. */
long zxp_mp_check(const void *data, size_t len, int max_depth);

/* Unpacks untrusted bytes into zone after zxp_mp_check; the whole buffer must
   be exactly one value. Returns 0 or -1. */
int zxp_mp_unpack(const void *data, size_t len, msgpack_zone *zone, msgpack_object *obj);

/* ---- receiving ------------------------------------------------------------ */

typedef struct zxp_in {
    uint8_t cmd;
    zmsg_t *msg;      /* frame 0 and header popped; payload frames remain */
    zframe_t *header; /* zxp_decode: owns the bytes the header object points into */
    zmq_msg_t hmsg;   /* zxp_recv: the same */
    bool hmsg_held;
    msgpack_zone zone;
    msgpack_object hdr;         /* the header array */
    size_t count;               /* batch commands: number of items */
    size_t taken;               /* payloads taken so far (zxp_payload_take) */
    size_t inline_at;           /* payload commands: the inline payload's field index; else 0 */
    const char *reason;         /* on error: what was wrong, for the log */
    size_t nbad;                /* items marked bad (zxp_item_bad) */
    uint8_t bad[ZXP_MAX_BATCH]; /* per item: 0, or a ZXP_BAD_* code */
} zxp_in_t;

/* Why one item of a SUBMIT, RESULT or WRESULT was refused while the rest of
   its batch goes on (zxp_item_bad). The item still names its task (seq, and
   session for WRESULT), so the receiver answers for it instead of leaving
   its future waiting. Codes are part of the protocol (protocol.md §7). */
enum {
    ZXP_BAD_FIELDS = 1,   /* missing fields, or fields of the wrong type */
    ZXP_BAD_POOL = 2,     /* pool not 0..2 */
    ZXP_BAD_PRIORITY = 3, /* priority not -128..127 */
    ZXP_BAD_RETRIES = 4,  /* retries not -1..100 */
    ZXP_BAD_RANGE = 5,    /* a number over its field's range (timeout, flags, pid) */
    ZXP_BAD_STATUS = 6,   /* a status this receiver does not know */
};
/* 0 if item i is good, else its ZXP_BAD_* code: its getter must not be
   called; its seq (field 0, or 1 after a session) and its payload (which
   must still be taken, in order) are valid. */
int zxp_item_bad(const zxp_in_t *in, size_t i);
/* The sentence for a ZXP_BAD_* code. */
const char *zxp_bad_reason(int code);

void zxp_in_init(zxp_in_t *in);
void zxp_in_fini(zxp_in_t *in);
/* Releases the previous message, takes *msg_p (consumed, also on error:
   *msg_p is set to NULL) and validates it completely for role: frame 0,
   header shape of every item, payload count. ZX_OK (0) or a ZXP_E_* code with
   in->reason set. After success the getters below cannot fail, except on
   the items of SUBMIT, RESULT and WRESULT that zxp_item_bad marks. */
int zxp_decode(zxp_in_t *in, zmsg_t **msg_p, int role);

/* Receives one whole message from sock without waiting and decodes it as
   zxp_decode does, without czmq message objects: frame 0 is read into a
   zmq_msg_t on the stack and the header frame into one held by in; payload
   frames, if any, into in->msg (as zxp_decode leaves them, for
   zxp_payload_take). Nothing is allocated when the socket is empty. For a
   ROUTER socket pass rid_p: the routing id frame is returned there as a new
   zframe_t (the caller destroys it), also when the message is malformed; or
   read the routing id yourself and pass NULL for the rest (the broker keeps
   one frame for it). Returns 0 when decoded, ZXP_E_AGAIN when no message
   waits (nothing consumed; errno as libzmq left it: EAGAIN, or EINTR), or
   another ZXP_E_* code when the message was
   malformed (read whole and dropped; in->reason says why). Only for
   sockets whose messages are not signed: a signed message goes through
   zx__sec_verify as a zmsg_t, then zxp_decode. */
int zxp_recv(zxp_in_t *in, zsock_t *sock, zframe_t **rid_p, int role);

/* Reads the rest of a message whose first frames were read (ZeroMQ delivers
   a message whole, so it is all there): up to max frames into a new zmsg_t
   (NULL when none), any beyond read and dropped; *count (if not NULL) is
   the number of frames read, dropped ones included. */
zmsg_t *zxp_recv_rest(zsock_t *sock, size_t max, size_t *count);

/* Item i of a batch header, or the header itself for non-batch commands. */
const msgpack_object *zxp_item(const zxp_in_t *in, size_t i);
uint64_t zxp_u(const msgpack_object *arr, size_t field);
int64_t zxp_i(const msgpack_object *arr, size_t field);
bool zxp_b(const msgpack_object *arr, size_t field);
zxp_str_t zxp_s(const msgpack_object *arr, size_t field); /* str or bin */
const msgpack_object *zxp_o(const msgpack_object *arr, size_t field);
/* Takes the payload of the next item, in item order, once per item: its
   frame (zero copy), or a new frame holding the bytes it carried inline.
   Caller owns it. NULL if none. */
zframe_t *zxp_payload_take(zxp_in_t *in);
/* Takes the next item's payload only if it rode inline: true with *data and
   *len pointing into the decoded header (valid until the next decode into
   in), no frame made; false, and nothing taken, if it is a frame. */
bool zxp_payload_take_inline(zxp_in_t *in, const void **data, size_t *len);

/* Typed views of hot-path items. */
typedef struct {
    uint64_t seq;
    zxp_str_t fn;
    uint8_t pool;
    int8_t priority;
    int32_t retries; /* -1: none; 0: default */
    uint32_t timeout_ms;
    uint32_t flags;
} zxp_submit_t;
void zxp_get_submit(const zxp_in_t *in, size_t i, zxp_submit_t *out);

typedef struct {
    const uint8_t *session; /* ZXP_ID_LEN bytes */
    uint64_t seq;
    zxp_str_t fn;
    uint8_t pool;
    uint32_t timeout_ms;
    uint32_t attempt;
    uint32_t flags;
    const uint8_t *token; /* ZXP_TOKEN_LEN bytes after the payload field; NULL: none */
} zxp_task_t;
void zxp_get_task(const zxp_in_t *in, size_t i, zxp_task_t *out);

typedef struct {
    const uint8_t *session;
    uint64_t seq;
    uint32_t status;
    uint32_t pid;
    uint8_t pool;
    bool slot_freed;
    const uint8_t *token; /* the TASK's token, after the payload field; NULL: none */
} zxp_wresult_t;
void zxp_get_wresult(const zxp_in_t *in, size_t i, zxp_wresult_t *out);

typedef struct {
    uint64_t seq;
    uint32_t status;
    zxp_str_t node;
    uint32_t pid;
    uint8_t pool;
    uint32_t attempts;
} zxp_result_t;
void zxp_get_result(const zxp_in_t *in, size_t i, zxp_result_t *out);

/* ---- sending -------------------------------------------------------------- */

/* A message under construction. Batch items are appended one by one; the
   header's item count is patched in at send time, so a sender can coalesce
   whatever is ready without counting first. */
typedef struct zxp_out {
    uint8_t cmd;
    bool batch;
    bool payload; /* each item carries one payload */
    size_t count;
    msgpack_sbuffer buf;
    msgpack_packer pk;
    size_t item_at;   /* offset of the last item's array header in buf */
    bool item_open;   /* that item may still take its payload inline */
    bool last_inline; /* that item's payload went inline */
    zmsg_t *payloads;
    zlist_t *shared; /* frames of payloads appended by zxp_out_payload_share (borrowed) */
} zxp_out_t;

void zxp_out_init(zxp_out_t *out);
/* Appends an attempt token to the last item, after its payload field (a nil
   stands for a payload that went in a frame): call right after its payload. */
void zxp_out_item_token(zxp_out_t *out, const uint8_t *token);

/* Whether a batch must be sent before another item: ZXP_MAX_BATCH items, or
   a header of ZXP_BATCH_HEADER_MAX bytes. */
static inline bool zxp_out_full(const zxp_out_t *out)
{
    return out->count >= ZXP_MAX_BATCH || out->buf.size >= ZXP_BATCH_HEADER_MAX;
}
void zxp_out_fini(zxp_out_t *out);
/* Starts a message (discarding any unsent one). For non-batch commands pack
   the header array yourself with zxp_out_pk after begin. */
void zxp_out_begin(zxp_out_t *out, uint8_t cmd);
msgpack_packer *zxp_out_pk(zxp_out_t *out);
/* The three payload calls below give the item just put its payload: up to
   ZXP_INLINE_MAX bytes go inline in the item (copied into the header),
   larger ones as a frame of their own. Exactly one call per item of SUBMIT,
   TASK, RESULT, WRESULT.
   zxp_out_payload: the frame is consumed; NULL is an empty payload. */
void zxp_out_payload(zxp_out_t *out, zframe_t **frame_p);
/* Appends frame as a payload without copying its bytes and without taking it:
   it is sent with ZFRAME_REUSE, so ZeroMQ shares the buffer (reference
   counted) and the caller keeps frame (the broker keeps a task's arguments
   for a retry). frame must stay alive until zxp_out_send or zxp_out_begin. */
void zxp_out_payload_share(zxp_out_t *out, zframe_t *frame);
/* Appends a copy of bytes as a payload frame. */
void zxp_out_payload_mem(zxp_out_t *out, const void *data, size_t len);
/* Sends frame 0, the header and the payloads, to routing_id on a ROUTER
   (borrowed, NULL on a DEALER). Resets out. 0, or -1 if the socket refused
   (the message is dropped either way). */
int zxp_out_send(zxp_out_t *out, zsock_t *sock, zframe_t *routing_id);

/* Batch item encoders: each starts a new item array in the open batch.
   The caller appends the item's payload with zxp_out_payload where the
   command carries one. */
void zxp_put_submit(zxp_out_t *out, const zxp_submit_t *s);
void zxp_put_started(zxp_out_t *out, uint64_t seq, const char *node, size_t node_len, uint32_t pid);
void zxp_put_result(zxp_out_t *out, const zxp_result_t *r);
void zxp_put_cancel(zxp_out_t *out, uint64_t seq, bool terminate);
void zxp_put_cancelled(zxp_out_t *out, uint64_t seq, uint32_t outcome);
void zxp_put_task(zxp_out_t *out, const zxp_task_t *t);
void zxp_put_wstarted(zxp_out_t *out, const uint8_t *session, uint64_t seq, uint32_t pid,
                      uint8_t pool);
void zxp_put_wresult(zxp_out_t *out, const zxp_wresult_t *r);
void zxp_put_wcancel(zxp_out_t *out, const uint8_t *session, uint64_t seq, bool terminate);
void zxp_put_wcancelled(zxp_out_t *out, const uint8_t *session, uint64_t seq, uint32_t outcome);

/* READY, the worker's registration, built in order after
   zxp_out_begin(out, ZXP_READY): zxp_put_ready (the head, announcing nfns
   functions), nfns zxp_put_ready_fn, zxp_put_ready_running (announcing
   nrunning tasks), nrunning zxp_put_ready_task, zxp_put_ready_end (the
   fields appended in 2.1); then zxp_out_send. The only
   encoder of READY (the worker, the broker tests' fake workers and the
   benchmark's idle workers use it). */
typedef struct {
    const uint8_t *worker_id; /* ZXP_ID_LEN bytes: also the routing id */
    const char *node;
    uint32_t pid, threads, procs, prefetch, heartbeat_ms;
    size_t nfns;
    uint64_t max_msg; /* appended in 2.1: the largest frame accepted; 0: not said */
} zxp_ready_t;
void zxp_put_ready(zxp_out_t *out, const zxp_ready_t *r);
void zxp_put_ready_fn(zxp_out_t *out, const char *name, uint8_t pools);
void zxp_put_ready_running(zxp_out_t *out, size_t nrunning);
/* token (ZXP_TOKEN_LEN bytes, with its attempt) proves to a restarted
   broker that the task was given to this worker; NULL: none (2.0) */
void zxp_put_ready_task(zxp_out_t *out, const uint8_t *session, uint64_t seq, uint8_t pool,
                        const uint8_t *token, uint32_t attempt);
void zxp_put_ready_end(zxp_out_t *out, const zxp_ready_t *r);

/* ERROR codes: the broker refuses a HELLO or READY and says why. */
enum {
    ZXP_ERR_VERSION = 1,  /* unsupported protocol version */
    ZXP_ERR_IDENTITY = 2, /* the routing id is not the 16-byte session or worker id */
    ZXP_ERR_PASSIVE = 3,  /* this broker is the passive one of a pair: use the other endpoint */
};

/* HELLO flags (2.2, its optional 6th field). */
enum {
    ZXP_HELLO_JOB = 1,    /* this session is a detached job: its session id is the job id, its
                             tasks and results outlive the connection */
    ZXP_HELLO_ACCEPT = 2, /* send me ACCEPTED */
};
#define ZXP_FETCH_WAIT_MAX 60000 /* FETCH's wait_ms bound (long poll) */

/* Control messages, sent at once. 0 or -1. */
int zxp_send_empty(zsock_t *sock, zframe_t *routing_id, uint8_t cmd); /* HEARTBEAT, BYE, ... */
int zxp_send_hello(zsock_t *sock, const uint8_t *session, const char *name, uint32_t heartbeat_ms);
/* HELLO with its flags (ZXP_HELLO_*); flags 0 sends what zxp_send_hello does. */
int zxp_send_hello_flags(zsock_t *sock, const uint8_t *session, const char *name,
                         uint32_t heartbeat_ms, uint32_t flags);
/* A decoded HELLO's flags: its 6th field, 0 when absent (a 2.1 client). */
uint32_t zxp_hello_flags(const zxp_in_t *in);
int zxp_send_welcome(zsock_t *sock, zframe_t *routing_id, const uint8_t *broker_id,
                     uint32_t heartbeat_ms, uint32_t liveness, uint32_t max_msg);
int zxp_send_error(zsock_t *sock, zframe_t *routing_id, uint32_t code, const char *message);
int zxp_send_credit(zsock_t *sock, uint8_t pool, uint32_t n);
/* A HEARTBEAT with its trailing field: from a client, the RESULT payload
   bytes it has read since the last WELCOME; from the broker to a worker, the
   WRESULT items it has received since that worker's READY. */
int zxp_send_heartbeat_rx(zsock_t *sock, zframe_t *routing_id, uint64_t rx);

/* ---- detached jobs (2.2) ---------------------------------------------------- */

/* ACCEPTED: one item per task, in a batch begun with zxp_out_begin(out,
   ZXP_ACCEPTED); zxp_u(zxp_item(in, i), 0) is its seq. */
void zxp_put_accepted(zxp_out_t *out, uint64_t seq);

/* JRESULT: RESULT's item and the job's completion index (from 1). Its
   payload follows as for RESULT. Items are checked one by one like
   RESULT's (zxp_item_bad). */
typedef struct {
    zxp_result_t r;
    uint64_t index;
} zxp_jresult_t;
void zxp_put_jresult(zxp_out_t *out, const zxp_jresult_t *j);
void zxp_get_jresult(const zxp_in_t *in, size_t i, zxp_jresult_t *out);

/* FETCH: the job's held results with completion index > after, at most max
   (0: none, only FETCHED's info), waiting up to wait_ms (<= 60000) for one. */
typedef struct {
    const uint8_t *job; /* ZXP_ID_LEN bytes */
    uint64_t after;
    uint64_t max;
    uint32_t wait_ms;
} zxp_fetch_t;
int zxp_send_fetch(zsock_t *sock, const zxp_fetch_t *f);
void zxp_get_fetch(const zxp_in_t *in, zxp_fetch_t *out);

/* RACK: the client has kept these results (n <= ZXP_MAX_BATCH seqs). */
int zxp_send_rack(zsock_t *sock, const uint8_t *job, const uint64_t *seqs, size_t n);
/* A decoded RACK: its job and the number of seqs; zxp_rack_seq reads seq i. */
const uint8_t *zxp_rack_job(const zxp_in_t *in);
size_t zxp_rack_count(const zxp_in_t *in);
uint64_t zxp_rack_seq(const zxp_in_t *in, size_t i);

/* JCANCEL [job]. JOBS has no fields: zxp_send_empty(sock, NULL, ZXP_JOBS). */
int zxp_send_jcancel(zsock_t *sock, const uint8_t *job);
/* The job of a decoded FETCH, FETCHED, JCANCEL or JCANCELLED (field 0). */
const uint8_t *zxp_job_id(const zxp_in_t *in);

/* A job's info map (FETCHED, JCANCELLED, JOBS_REPLY). On the wire a map
   keyed by these names; unknown keys are ignored and missing ones read as
   zero or empty, so later revisions may add keys. */
#define ZXP_JOB_STATE_MAX 16
typedef struct {
    uint8_t id[ZXP_ID_LEN];
    char name[ZXP_MAX_NAME + 1];
    char state[ZXP_JOB_STATE_MAX]; /* open, detached, done, cancelled, expired; "" unknown */
    uint64_t submitted, queued, running, done, failed, held, held_bytes, acked;
    int64_t created, expires; /* unix seconds */
    uint64_t next;            /* highest completion index so far */
    char error[256];          /* FETCHED/JCANCELLED of an unknown job: why; else "" */
} zxp_jobinfo_t;
void zxp_pack_jobinfo(msgpack_packer *pk, const zxp_jobinfo_t *info);
/* Reads an info map (any msgpack object: a non-map gives all zeros and
   returns -1); 0 on success. */
int zxp_get_jobinfo(const msgpack_object *map, zxp_jobinfo_t *out);
/* FETCHED and JCANCELLED (cmd) [job, info]; JOBS_REPLY [[info..]]. */
int zxp_send_jobinfo(zsock_t *sock, zframe_t *routing_id, uint8_t cmd, const uint8_t *job,
                     const zxp_jobinfo_t *info);
int zxp_send_jobs_reply(zsock_t *sock, zframe_t *routing_id, const zxp_jobinfo_t *infos, size_t n);
/* A decoded FETCHED or JCANCELLED's info map, and JOBS_REPLY's count and
   info i. */
const msgpack_object *zxp_jobinfo_obj(const zxp_in_t *in);
size_t zxp_jobs_count(const zxp_in_t *in);
const msgpack_object *zxp_jobs_info(const zxp_in_t *in, size_t i);

/* Packs an error payload [type, message, traceback] into a new frame. */
zframe_t *zxp_error_frame(const char *type, const char *message, const char *traceback);

/* Socket options every zexec socket gets: ZMQ_MAXMSGSIZE, linger, HWMs,
   handshake interval, and a send timeout of 0 (a send that cannot go at once
   fails with EAGAIN: no send ever blocks). */
void zxp_sock_setup(zsock_t *sock);

/* The ZMQ_MAXMSGSIZE zxp_sock_setup applies from now on (default ZXP_MAX_MSG;
   a program's --max-msg). Call before making sockets. */
void zxp_set_max_msg(int64_t bytes);
int64_t zxp_max_msg(void);

/* Signing hook (zx_sign.h installs it): zxp_out_send, and so every zxp_send_*,
   on sock calls fn with the message (frame 0 first, no routing id) just
   before sending; non-zero drops the message. fn NULL removes the hook (with
   arg not NULL, only if it is the hook installed with that arg). */
typedef int(zxp_signer_fn)(void *arg, zmsg_t *msg, zframe_t *routing_id);
void zxp_sock_set_signer(zsock_t *sock, zxp_signer_fn *fn, void *arg);

/* ---- peers and counters ---------------------------------------------------- */

/* Hex of a routing id or session, for logs: writes at most 2*16+1 bytes. */
void zxp_hex(const uint8_t *id, size_t len, char out[33]);

/* Counts a dropped message and logs it at most once per (peer, reason),
   so a garbage flood costs a counter, not a log line each. */
typedef struct zxp_drops {
    uint64_t total;
    zhashx_t *seen;
} zxp_drops_t;
void zxp_drops_init(zxp_drops_t *d);
void zxp_drops_fini(zxp_drops_t *d);
void zxp_drop(zxp_drops_t *d, const char *where, zframe_t *peer, int code, const char *reason);

#endif
