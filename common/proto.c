/*  proto.c - ZXP encoding and strict decoding.

    Every received message is validated completely (frame 0, header shape of
    every item, payload count) before anyone reads a field, so the getters
    cannot fail and handlers never see a half-checked message. Untrusted
    msgpack passes zxp_mp_check before msgpack_unpack: msgpack-c sizes an
    array's storage from its header count before reading any element
    (msgpack-c issues 985, 1013), so counts are checked against the bytes left.
*/
#include "zx_proto.h"
#include "zx_sign.h"

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdatomic.h>
#include <string.h>

/* ---- msgpack bounds check --------------------------------------------------- */

static uint64_t s_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

long zxp_mp_check(const void *data, size_t len, int max_depth)
{
    const uint8_t *start = data, *p = data, *end = p + len;
    uint64_t left[64]; /* values still to read at each open level */
    int depth = 0;
    if (max_depth > 63) {
        max_depth = 63;
    }
    left[0] = 1;
    while (depth >= 0) {
        if (left[depth] == 0) {
            depth--;
            continue;
        }
        left[depth]--;
        if (p >= end) {
            return -1;
        }
        uint8_t b = *p++;
        size_t avail = (size_t)(end - p);
        uint64_t skip = 0, children = 0;
        int lenbytes = 0;
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
            continue;
        } else if ((b & 0xf0) == 0x80) {
            children = 2 * (uint64_t)(b & 0x0f);
        } else if ((b & 0xf0) == 0x90) {
            children = b & 0x0f;
        } else if ((b & 0xe0) == 0xa0) {
            skip = b & 0x1f;
        } else {
            switch (b) {
            case 0xc4:
            case 0xd9: lenbytes = 1; break;
            case 0xc5:
            case 0xda: lenbytes = 2; break;
            case 0xc6:
            case 0xdb: lenbytes = 4; break;
            case 0xc7:
                lenbytes = 1;
                skip = 1;
                break; /* ext: +1 type byte */
            case 0xc8:
                lenbytes = 2;
                skip = 1;
                break;
            case 0xc9:
                lenbytes = 4;
                skip = 1;
                break;
            case 0xca: skip = 4; break;
            case 0xcb: skip = 8; break;
            case 0xcc:
            case 0xd0: skip = 1; break;
            case 0xcd:
            case 0xd1: skip = 2; break;
            case 0xce:
            case 0xd2: skip = 4; break;
            case 0xcf:
            case 0xd3: skip = 8; break;
            case 0xd4: skip = 2; break;
            case 0xd5: skip = 3; break;
            case 0xd6: skip = 5; break;
            case 0xd7: skip = 9; break;
            case 0xd8: skip = 17; break;
            case 0xdc:
            case 0xdd:
            case 0xde:
            case 0xdf: {
                int n = (b == 0xdc || b == 0xde) ? 2 : 4;
                if (avail < (size_t)n) {
                    return -1;
                }
                children = s_be(p, n);
                if (b >= 0xde) {
                    children *= 2;
                }
                p += n;
                avail -= (size_t)n;
                break;
            }
            default: /* 0xc1 is never used */ return -1;
            }
            if (lenbytes) {
                if (avail < (size_t)lenbytes) {
                    return -1;
                }
                skip += s_be(p, lenbytes);
                p += lenbytes;
                avail -= (size_t)lenbytes;
            }
        }
        if (children) {
            /* every element takes at least one byte */
            if (children > avail || depth + 1 > max_depth) {
                return -1;
            }
            left[++depth] = children;
        } else {
            if (skip > avail) {
                return -1;
            }
            p += skip;
        }
    }
    return (long)(p - start);
}

int zxp_mp_unpack(const void *data, size_t len, msgpack_zone *zone, msgpack_object *obj)
{
    if (len == 0 || zxp_mp_check(data, len, ZXP_MAX_DEPTH) != (long)len) {
        return -1;
    }
    size_t off = 0;
    /* msgpack-c grows a zone by doubling its chunk size until a request
       fits, so one big array can cost up to twice what it needs (48 bytes
       per input byte). After zxp_mp_check every object takes at least one
       input byte, so all of them fit in 24 * len bytes (kv pairs: 48 per 2):
       with that as the chunk size a growing zone allocates it once, exactly,
       and decoding n bytes stays under 32n + 64 KiB (test_security_bounds).
       The size is restored at once: msgpack_zone_clear trusts it. */
    size_t chunk = zone->chunk_size;
    if (len <= (SIZE_MAX - 64) / sizeof(msgpack_object)) {
        zone->chunk_size = len * sizeof(msgpack_object) + 64;
    }
    msgpack_unpack_return rc = msgpack_unpack(data, len, &off, zone, obj);
    zone->chunk_size = chunk;
    return (rc == MSGPACK_UNPACK_SUCCESS && off == len) ? 0 : -1;
}

/* ---- command table ----------------------------------------------------------- */

/* Field types: u uint, i int, s str-or-bin, n name (str 1..255), k id (16-byte
   bin), B bool, a array, m map, x anything. */
typedef struct {
    uint8_t cmd;
    bool batch;
    bool payload; /* one payload frame per item */
    const char *fields;
    uint8_t roles; /* bit (1 << role) for each role that accepts it */
} s_cmd_t;

#define R(r) (1u << (r))
/* indexed by command: a lookup per message and per item put, no scan */
static const s_cmd_t s_cmds[256] = {
    [ZXP_HELLO] = {ZXP_HELLO, false, false, "uknu", R(ZXP_ROLE_BROKER_C)},
    [ZXP_WELCOME] = {ZXP_WELCOME, false, false, "kuuu", R(ZXP_ROLE_CLIENT) | R(ZXP_ROLE_WORKER)},
    [ZXP_SUBMIT] = {ZXP_SUBMIT, true, true, "unuiiuu", R(ZXP_ROLE_BROKER_C)},
    [ZXP_STARTED] = {ZXP_STARTED, true, false, "usu", R(ZXP_ROLE_CLIENT)},
    [ZXP_RESULT] = {ZXP_RESULT, true, true, "uusuuu", R(ZXP_ROLE_CLIENT)},
    [ZXP_CANCEL] = {ZXP_CANCEL, true, false, "uB", R(ZXP_ROLE_BROKER_C)},
    [ZXP_CANCELLED] = {ZXP_CANCELLED, true, false, "uu", R(ZXP_ROLE_CLIENT)},
    [ZXP_HEARTBEAT] = {ZXP_HEARTBEAT, false, false, "",
                       R(ZXP_ROLE_BROKER_C) | R(ZXP_ROLE_BROKER_W) | R(ZXP_ROLE_CLIENT) |
                           R(ZXP_ROLE_WORKER)},
    [ZXP_BYE] = {ZXP_BYE, false, false, "", R(ZXP_ROLE_BROKER_C) | R(ZXP_ROLE_BROKER_W)},
    [ZXP_STATUS] = {ZXP_STATUS, false, false, "", R(ZXP_ROLE_BROKER_C)},
    [ZXP_STATUS_REPLY] = {ZXP_STATUS_REPLY, false, false, "m", R(ZXP_ROLE_CLIENT)},
    [ZXP_ERROR] = {ZXP_ERROR, false, false, "us", R(ZXP_ROLE_CLIENT) | R(ZXP_ROLE_WORKER)},
    [ZXP_RESET] = {ZXP_RESET, false, false, "", R(ZXP_ROLE_CLIENT) | R(ZXP_ROLE_WORKER)},
    [ZXP_ACCEPTED] = {ZXP_ACCEPTED, true, false, "u", R(ZXP_ROLE_CLIENT)},
    [ZXP_FETCH] = {ZXP_FETCH, false, false, "kuuu", R(ZXP_ROLE_BROKER_C)},
    [ZXP_JRESULT] = {ZXP_JRESULT, true, true, "uusuuuu", R(ZXP_ROLE_CLIENT)},
    [ZXP_FETCHED] = {ZXP_FETCHED, false, false, "km", R(ZXP_ROLE_CLIENT)},
    [ZXP_RACK] = {ZXP_RACK, false, false, "ka", R(ZXP_ROLE_BROKER_C)},
    [ZXP_JOBS] = {ZXP_JOBS, false, false, "", R(ZXP_ROLE_BROKER_C)},
    [ZXP_JOBS_REPLY] = {ZXP_JOBS_REPLY, false, false, "a", R(ZXP_ROLE_CLIENT)},
    [ZXP_JCANCEL] = {ZXP_JCANCEL, false, false, "k", R(ZXP_ROLE_BROKER_C)},
    [ZXP_JCANCELLED] = {ZXP_JCANCELLED, false, false, "km", R(ZXP_ROLE_CLIENT)},
    [ZXP_READY] = {ZXP_READY, false, false, "uknuuuuuaa", R(ZXP_ROLE_BROKER_W)},
    [ZXP_TASK] = {ZXP_TASK, true, true, "kunuuuu", R(ZXP_ROLE_WORKER)},
    [ZXP_WSTARTED] = {ZXP_WSTARTED, true, false, "kuuu", R(ZXP_ROLE_BROKER_W)},
    [ZXP_WRESULT] = {ZXP_WRESULT, true, true, "kuuuuB", R(ZXP_ROLE_BROKER_W)},
    [ZXP_CREDIT] = {ZXP_CREDIT, false, false, "uu", R(ZXP_ROLE_BROKER_W)},
    [ZXP_WCANCEL] = {ZXP_WCANCEL, true, false, "kuB", R(ZXP_ROLE_WORKER)},
    [ZXP_WCANCELLED] = {ZXP_WCANCELLED, true, false, "kuu", R(ZXP_ROLE_BROKER_W)},
    [ZXP_DRAIN] = {ZXP_DRAIN, false, false, "", R(ZXP_ROLE_BROKER_W)},
    [ZXP_SHUTDOWN] = {ZXP_SHUTDOWN, false, false, "", R(ZXP_ROLE_CLIENT) | R(ZXP_ROLE_WORKER)},
};
#undef R

static const s_cmd_t *s_cmd(int cmd)
{
    /* an entry's fields are never NULL: a NULL marks no command */
    return cmd >= 0 && cmd < 256 && s_cmds[cmd].fields ? &s_cmds[cmd] : NULL;
}

const char *zxp_strerror(int code)
{
    switch (code) {
    case 0: return "ok";
    case ZXP_E_SHORT: return "too few frames";
    case ZXP_E_SIG: return "bad signature frame";
    case ZXP_E_VERSION: return "unsupported protocol version";
    case ZXP_E_CMD: return "unknown or unexpected command";
    case ZXP_E_SIZE: return "header too large";
    case ZXP_E_MSGPACK: return "malformed msgpack header";
    case ZXP_E_SHAPE: return "header has the wrong shape";
    case ZXP_E_PAYLOADS: return "payload frames do not match the items";
    case ZXP_E_BATCH: return "batch too large";
    case ZXP_E_UNKNOWN: return "reply for an unknown task";
    case ZXP_E_AGAIN: return "no message waits";
    case ZXP_E_SIGN_MISSING: return "unsigned message (no envelope frame)";
    case ZXP_E_SIGN_FORMAT: return "malformed envelope, or signed for another endpoint";
    case ZXP_E_SIGN_MAC: return "signature does not verify";
    case ZXP_E_SIGN_EPOCH: return "signed for another session of the receiver (restart or replay)";
    case ZXP_E_SIGN_FIRST: return "first contact: not yet signed for the receiver's session";
    case ZXP_E_SIGN_REPLAY: return "sequence number not above the last one (replay)";
    case ZXP_E_SIGN_FULL: return "too many sender sessions";
    default: return "unknown protocol error";
    }
}

/* ---- decoding ---------------------------------------------------------------- */

void zxp_in_init(zxp_in_t *in)
{
    memset(in, 0, sizeof *in);
    zmq_msg_init(&in->hmsg);
    msgpack_zone_init(&in->zone, 4096);
}

static void s_in_release(zxp_in_t *in)
{
    if (in->nbad) {
        memset(in->bad, 0, in->count < ZXP_MAX_BATCH ? in->count : ZXP_MAX_BATCH);
        in->nbad = 0;
    }
    zmsg_destroy(&in->msg);
    zframe_destroy(&in->header);
    if (in->hmsg_held) {
        zmq_msg_close(&in->hmsg);
        zmq_msg_init(&in->hmsg);
        in->hmsg_held = false;
    }
    msgpack_zone_clear(&in->zone);
    in->count = 0;
    in->taken = 0;
    in->inline_at = 0;
    in->cmd = 0;
}

void zxp_in_fini(zxp_in_t *in)
{
    s_in_release(in);
    msgpack_zone_destroy(&in->zone);
}

static bool s_field_ok(const msgpack_object *o, char t)
{
    switch (t) {
    case 'u': return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER;
    case 'i':
        return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
               o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER;
    case 's': return o->type == MSGPACK_OBJECT_STR || o->type == MSGPACK_OBJECT_BIN;
    case 'n':
        return o->type == MSGPACK_OBJECT_STR && o->via.str.size >= 1 &&
               o->via.str.size <= ZXP_MAX_NAME;
    case 'k': return o->type == MSGPACK_OBJECT_BIN && o->via.bin.size == ZXP_ID_LEN;
    case 'B': return o->type == MSGPACK_OBJECT_BOOLEAN;
    case 'a': return o->type == MSGPACK_OBJECT_ARRAY;
    case 'm': return o->type == MSGPACK_OBJECT_MAP;
    default: return true;
    }
}

/* Extra fields after the known ones are allowed (later minor versions may
   append); missing ones are not. */
static bool s_shape_ok(const msgpack_object *o, const char *fields)
{
    size_t n = strlen(fields);
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size < n) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (!s_field_ok(&o->via.array.ptr[i], fields[i])) {
            return false;
        }
    }
    return true;
}

static bool s_u_max(const msgpack_object *arr, size_t f, uint64_t max)
{
    return arr->via.array.ptr[f].via.u64 <= max;
}

/* Range checks of the item kinds answered one by one (zxp_item_bad):
   0 or a ZXP_BAD_* code. */
static int s_item_check(int cmd, const msgpack_object *it, const char *fields)
{
    if (!s_shape_ok(it, fields)) {
        return ZXP_BAD_FIELDS;
    }
    switch (cmd) {
    case ZXP_SUBMIT: {
        int64_t prio = zxp_i(it, 3), retries = zxp_i(it, 4);
        if (!s_u_max(it, 2, 2)) {
            return ZXP_BAD_POOL;
        }
        if (prio < -128 || prio > 127) {
            return ZXP_BAD_PRIORITY;
        }
        if (retries < -1 || retries > 100) {
            return ZXP_BAD_RETRIES;
        }
        return s_u_max(it, 5, UINT32_MAX) && s_u_max(it, 6, UINT32_MAX) ? 0 : ZXP_BAD_RANGE;
    }
    case ZXP_RESULT:
    case ZXP_JRESULT: /* RESULT's fields, then the completion index (any uint) */
        if (!s_u_max(it, 1, ZXP_ST_MAX)) {
            return ZXP_BAD_STATUS;
        }
        return s_u_max(it, 3, UINT32_MAX) && s_u_max(it, 4, 2) && s_u_max(it, 5, UINT32_MAX)
                   ? 0
                   : ZXP_BAD_RANGE;
    case ZXP_WRESULT:
        if (!s_u_max(it, 2, ZXP_ST_MAX)) {
            return ZXP_BAD_STATUS;
        }
        return s_u_max(it, 3, UINT32_MAX) && s_u_max(it, 4, 2) ? 0 : ZXP_BAD_RANGE;
    default: return 0;
    }
}

/* Whether a bad item of cmd still names its task, so it can be answered:
   an array whose seq (and session, for WRESULT) have their types. */
static bool s_item_named(int cmd, const msgpack_object *it)
{
    switch (cmd) {
    case ZXP_SUBMIT:
    case ZXP_RESULT:
    case ZXP_JRESULT: return s_shape_ok(it, "u");
    case ZXP_WRESULT: return s_shape_ok(it, "ku");
    default: return false;
    }
}

int zxp_item_bad(const zxp_in_t *in, size_t i)
{
    return in->nbad && i < in->count ? in->bad[i] : 0;
}

const char *zxp_bad_reason(int code)
{
    switch (code) {
    case 0: return "good";
    case ZXP_BAD_FIELDS: return "missing fields, or fields of the wrong type";
    case ZXP_BAD_POOL: return "pool out of range 0..2";
    case ZXP_BAD_PRIORITY: return "priority out of range -128..127";
    case ZXP_BAD_RETRIES: return "retries out of range -1..100";
    case ZXP_BAD_RANGE: return "a number out of its field's range";
    case ZXP_BAD_STATUS: return "unknown status";
    default: return "bad item";
    }
}

/* Range checks beyond types, per command (but those of s_item_check). */
static bool s_ranges_ok(int cmd, const msgpack_object *it)
{
    switch (cmd) {
    case ZXP_TASK:
        return s_u_max(it, 3, 2) && s_u_max(it, 4, UINT32_MAX) && s_u_max(it, 5, UINT32_MAX) &&
               s_u_max(it, 6, UINT32_MAX);
    case ZXP_WSTARTED: return s_u_max(it, 2, UINT32_MAX) && s_u_max(it, 3, 2);
    case ZXP_CREDIT: return zxp_u(it, 0) >= 1 && s_u_max(it, 0, 2) && s_u_max(it, 1, ZXP_MAX_COUNT);
    case ZXP_CANCELLED:
    case ZXP_WCANCELLED: return s_u_max(it, cmd == ZXP_CANCELLED ? 1 : 2, 2);
    case ZXP_READY: {
        /* a pid is any pid_t (Linux allows up to 4,194,304; systemd sets
           that on 64-bit machines); slot counts and prefetch are bounded by
           INT32_MAX so that size + prefetch cannot wrap a uint32 */
        for (size_t i = 3; i <= 6; i++) {
            if (!s_u_max(it, i, ZXP_MAX_COUNT)) {
                return false;
            }
        }
        if (!s_u_max(it, 7, 3600000)) {
            return false;
        }
        const msgpack_object *fns = zxp_o(it, 8), *run = zxp_o(it, 9);
        for (uint32_t i = 0; i < fns->via.array.size; i++) {
            const msgpack_object *f = &fns->via.array.ptr[i];
            if (!s_shape_ok(f, "nu") || !s_u_max(f, 1, 3)) {
                return false;
            }
        }
        for (uint32_t i = 0; i < run->via.array.size; i++) {
            const msgpack_object *r = &run->via.array.ptr[i];
            if (!s_shape_ok(r, "kuu") || !s_u_max(r, 2, 2)) {
                return false;
            }
        }
        return true;
    }
    case ZXP_HELLO:
        /* 2.1 max_msg and 2.2 flags: optional, but a uint (flags a u32) when there */
        if (it->via.array.size > 4 && !s_field_ok(&it->via.array.ptr[4], 'u')) {
            return false;
        }
        if (it->via.array.size > 5 &&
            (!s_field_ok(&it->via.array.ptr[5], 'u') || !s_u_max(it, 5, UINT32_MAX))) {
            return false;
        }
        return s_u_max(it, 3, 3600000);
    case ZXP_WELCOME: return s_u_max(it, 1, 3600000);
    case ZXP_FETCH: return s_u_max(it, 3, ZXP_FETCH_WAIT_MAX);
    case ZXP_RACK: {
        const msgpack_object *seqs = zxp_o(it, 1);
        if (seqs->via.array.size > ZXP_MAX_BATCH) {
            return false;
        }
        for (uint32_t i = 0; i < seqs->via.array.size; i++) {
            if (!s_field_ok(&seqs->via.array.ptr[i], 'u')) {
                return false;
            }
        }
        return true;
    }
    case ZXP_JOBS_REPLY: {
        const msgpack_object *infos = zxp_o(it, 0);
        for (uint32_t i = 0; i < infos->via.array.size; i++) {
            if (!s_field_ok(&infos->via.array.ptr[i], 'm')) {
                return false;
            }
        }
        return true;
    }
    default: return true;
    }
}

/* Frame 0: 'Z' 'X' version command. 0, or the error (in->reason set). */
static int s_decode_sig(zxp_in_t *in, const uint8_t *s, size_t len, int role, const s_cmd_t **c_p)
{
    if (len != 4 || s[0] != ZXP_SIG0 || s[1] != ZXP_SIG1) {
        in->reason = "frame 0 is not 'ZX' version command";
        return ZXP_E_SIG;
    }
    if (s[2] != ZXP_VERSION) {
        in->reason = "protocol version is not 2";
        return ZXP_E_VERSION;
    }
    in->cmd = s[3];
    const s_cmd_t *c = s_cmd(in->cmd);
    if (!c || !(c->roles & (1u << role))) {
        in->reason = c ? "command not accepted on this endpoint" : "unknown command";
        return ZXP_E_CMD;
    }
    *c_p = c;
    return 0;
}

/* The header frame (its bytes live as long as in's message): unpacked and
   every item checked. Sets *framed to the number of payload frames the
   items call for. 0, or the error (in->reason set). */
static int s_decode_header(zxp_in_t *in, const s_cmd_t *c, const void *hdata, size_t hlen,
                           size_t *framed_p)
{
    if (hlen > ZXP_MAX_HEADER) {
        in->reason = "header frame over the limit";
        return ZXP_E_SIZE;
    }
    if (zxp_mp_unpack(hdata, hlen, &in->zone, &in->hdr) != 0) {
        in->reason = "header is not one bounded msgpack value";
        return ZXP_E_MSGPACK;
    }
    if (in->hdr.type != MSGPACK_OBJECT_ARRAY) {
        in->reason = "header is not an array";
        return ZXP_E_SHAPE;
    }
    size_t framed = 0; /* items whose payload is a frame */
    if (c->batch) {
        in->count = in->hdr.via.array.size;
        if (in->count > ZXP_MAX_BATCH) {
            in->reason = "more items than the batch limit";
            return ZXP_E_BATCH;
        }
        size_t nf = strlen(c->fields);
        in->inline_at = c->payload ? nf : 0;
        bool one_by_one = in->cmd == ZXP_SUBMIT || in->cmd == ZXP_RESULT ||
                          in->cmd == ZXP_WRESULT || in->cmd == ZXP_JRESULT;
        for (size_t i = 0; i < in->count; i++) {
            const msgpack_object *it = &in->hdr.via.array.ptr[i];
            if (one_by_one) {
                /* one bad item fails itself, not its batch: it names its task */
                int bad = s_item_check(in->cmd, it, c->fields);
                if (bad && !s_item_named(in->cmd, it)) {
                    in->reason = "an item has the wrong fields and names no task";
                    return ZXP_E_SHAPE;
                }
                in->bad[i] = (uint8_t)bad;
                in->nbad += bad != 0;
            } else if (!s_shape_ok(it, c->fields) || !s_ranges_ok(in->cmd, it)) {
                in->reason = "an item has the wrong fields or values";
                return ZXP_E_SHAPE;
            }
            if (!c->payload) {
                continue;
            }
            /* the field after the command's own: the payload inline (bin),
               or nil or absent for a payload frame; later fields ignored */
            int t = it->via.array.size > nf ? (int)it->via.array.ptr[nf].type : MSGPACK_OBJECT_NIL;
            if (t == MSGPACK_OBJECT_NIL) {
                framed++;
            } else if (t != MSGPACK_OBJECT_BIN) {
                in->reason = "an item's inline payload is neither bin nor nil";
                return ZXP_E_SHAPE;
            }
        }
    } else {
        in->count = 1;
        if (!s_shape_ok(&in->hdr, c->fields) || !s_ranges_ok(in->cmd, &in->hdr)) {
            in->reason = "header has the wrong fields or values";
            return ZXP_E_SHAPE;
        }
    }
    *framed_p = c->payload ? framed : 0;
    return 0;
}

static int s_payloads_check(zxp_in_t *in, size_t payloads, size_t framed)
{
    if (payloads != framed) {
        in->reason = "payload frame count does not match the items";
        return ZXP_E_PAYLOADS;
    }
    return 0;
}

int zxp_decode(zxp_in_t *in, zmsg_t **msg_p, int role)
{
    s_in_release(in);
    in->msg = *msg_p;
    *msg_p = NULL;
    in->reason = NULL;
    if (!in->msg || zmsg_size(in->msg) < 2) {
        in->reason = "fewer than 2 frames";
        return ZXP_E_SHORT;
    }
    zframe_t *sig = zmsg_pop(in->msg);
    const s_cmd_t *c = NULL;
    int rc = s_decode_sig(in, zframe_data(sig), zframe_size(sig), role, &c);
    zframe_destroy(&sig);
    if (rc) {
        return rc;
    }
    in->header = zmsg_pop(in->msg);
    size_t framed = 0;
    rc = s_decode_header(in, c, zframe_data(in->header), zframe_size(in->header), &framed);
    return rc ? rc : s_payloads_check(in, zmsg_size(in->msg), framed);
}

/* Reads and drops the rest of a multipart message. */
static void s_skip_rest(void *handle, zmq_msg_t *part, bool more)
{
    while (more) {
        if (zmq_msg_recv(part, handle, ZMQ_DONTWAIT) < 0) {
            if (errno == EINTR) {
                continue;
            }
            break; /* ZeroMQ delivers a message whole: cannot happen */
        }
        more = zmq_msg_more(part);
    }
}

zmsg_t *zxp_recv_rest(zsock_t *sock, size_t max, size_t *count)
{
    zmsg_t *msg = NULL;
    size_t n = 0;
    for (bool more = true; more;) {
        if (n >= max) {
            zmq_msg_t part;
            zmq_msg_init(&part);
            s_skip_rest(zsock_resolve(sock), &part, true);
            zmq_msg_close(&part);
            n++;
            break;
        }
        zframe_t *f = zframe_recv(sock);
        if (!f) {
            if (errno == EINTR) {
                continue;
            }
            break; /* ZeroMQ delivers a message whole: cannot happen */
        }
        more = zframe_more(f);
        if (!msg) {
            msg = zmsg_new();
        }
        zmsg_append(msg, &f);
        n++;
    }
    if (count) {
        *count = n;
    }
    return msg;
}

int zxp_recv(zxp_in_t *in, zsock_t *sock, zframe_t **rid_p, int role)
{
    void *handle = zsock_resolve(sock);
    zmq_msg_t part;
    zmq_msg_init(&part);
    if (zmq_msg_recv(&part, handle, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&part);
        return ZXP_E_AGAIN; /* nothing waits (or EINTR): nothing consumed */
    }
    s_in_release(in);
    in->reason = NULL;
    bool more = zmq_msg_more(&part);
    if (rid_p) {
        /* a ROUTER's routing id; the rest of the message is there already:
           ZeroMQ delivers a message whole */
        *rid_p = zframe_new(zmq_msg_data(&part), zmq_msg_size(&part));
        int r = -1;
        while (more && (r = zmq_msg_recv(&part, handle, ZMQ_DONTWAIT)) < 0 && errno == EINTR) {
        }
        more = r >= 0 && zmq_msg_more(&part);
        if (r < 0) {
            zmq_msg_close(&part);
            in->reason = "fewer than 2 frames";
            return ZXP_E_SHORT;
        }
    }
    /* frame 0 */
    const s_cmd_t *c = NULL;
    int rc =
        more ? s_decode_sig(in, zmq_msg_data(&part), zmq_msg_size(&part), role, &c) : ZXP_E_SHORT;
    if (rc) {
        if (rc == ZXP_E_SHORT) {
            in->reason = "fewer than 2 frames";
        }
        s_skip_rest(handle, &part, more);
        zmq_msg_close(&part);
        return rc;
    }
    /* the header, kept in in->hmsg: the decoded objects point into it */
    while (zmq_msg_recv(&in->hmsg, handle, ZMQ_DONTWAIT) < 0) {
        if (errno != EINTR) {
            zmq_msg_close(&part);
            in->reason = "fewer than 2 frames";
            return ZXP_E_SHORT;
        }
    }
    in->hmsg_held = true;
    more = zmq_msg_more(&in->hmsg);
    size_t framed = 0;
    rc = s_decode_header(in, c, zmq_msg_data(&in->hmsg), zmq_msg_size(&in->hmsg), &framed);
    if (rc) {
        s_skip_rest(handle, &part, more);
        zmq_msg_close(&part);
        return rc;
    }
    zmq_msg_close(&part);
    /* payload frames, as zframes for zxp_payload_take; any beyond the
       items' count are read and dropped, and fail the check below */
    size_t payloads = 0;
    if (more) {
        in->msg = zxp_recv_rest(sock, framed, &payloads);
    }
    return s_payloads_check(in, payloads, framed);
}

const msgpack_object *zxp_item(const zxp_in_t *in, size_t i)
{
    const s_cmd_t *c = s_cmd(in->cmd);
    assert(c && i < in->count);
    return c->batch ? &in->hdr.via.array.ptr[i] : &in->hdr;
}

uint64_t zxp_u(const msgpack_object *arr, size_t field)
{
    return arr->via.array.ptr[field].via.u64;
}

int64_t zxp_i(const msgpack_object *arr, size_t field)
{
    const msgpack_object *o = &arr->via.array.ptr[field];
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        return o->via.u64 > INT64_MAX ? INT64_MAX : (int64_t)o->via.u64;
    }
    return o->via.i64;
}

bool zxp_b(const msgpack_object *arr, size_t field)
{
    return arr->via.array.ptr[field].via.boolean;
}

zxp_str_t zxp_s(const msgpack_object *arr, size_t field)
{
    const msgpack_object *o = &arr->via.array.ptr[field];
    zxp_str_t s = {o->via.str.ptr, o->via.str.size}; /* str and bin share layout */
    if (o->type == MSGPACK_OBJECT_BIN) {
        s.ptr = o->via.bin.ptr;
        s.len = o->via.bin.size;
    }
    return s;
}

const msgpack_object *zxp_o(const msgpack_object *arr, size_t field)
{
    return &arr->via.array.ptr[field];
}

bool zxp_payload_take_inline(zxp_in_t *in, const void **data, size_t *len)
{
    /* the field after the item's own: a bin inline, else (nil or absent) a
       frame */
    if (in->inline_at && in->taken < in->count) {
        const msgpack_object *it = &in->hdr.via.array.ptr[in->taken];
        if (it->via.array.size > in->inline_at &&
            it->via.array.ptr[in->inline_at].type == MSGPACK_OBJECT_BIN) {
            const msgpack_object *b = &it->via.array.ptr[in->inline_at];
            *data = b->via.bin.ptr;
            *len = b->via.bin.size;
            in->taken++;
            return true;
        }
    }
    return false;
}

zframe_t *zxp_payload_take(zxp_in_t *in)
{
    const void *data;
    size_t len;
    if (zxp_payload_take_inline(in, &data, &len)) {
        return zframe_new(data, len);
    }
    if (in->inline_at && in->taken < in->count) {
        in->taken++; /* this item's payload is the next frame */
    }
    return in->msg ? zmsg_pop(in->msg) : NULL;
}

void zxp_get_submit(const zxp_in_t *in, size_t i, zxp_submit_t *out)
{
    const msgpack_object *it = zxp_item(in, i);
    out->seq = zxp_u(it, 0);
    out->fn = zxp_s(it, 1);
    out->pool = (uint8_t)zxp_u(it, 2);
    out->priority = (int8_t)zxp_i(it, 3);
    out->retries = (int32_t)zxp_i(it, 4);
    out->timeout_ms = (uint32_t)zxp_u(it, 5);
    out->flags = (uint32_t)zxp_u(it, 6);
}

/* An optional trailing token at field f: a 16-byte bin, else NULL. */
static const uint8_t *s_tail_token(const msgpack_object *it, size_t f)
{
    if (it->via.array.size > f && it->via.array.ptr[f].type == MSGPACK_OBJECT_BIN &&
        it->via.array.ptr[f].via.bin.size == ZXP_TOKEN_LEN) {
        return (const uint8_t *)it->via.array.ptr[f].via.bin.ptr;
    }
    return NULL;
}

void zxp_get_task(const zxp_in_t *in, size_t i, zxp_task_t *out)
{
    const msgpack_object *it = zxp_item(in, i);
    out->session = (const uint8_t *)zxp_s(it, 0).ptr;
    out->seq = zxp_u(it, 1);
    out->fn = zxp_s(it, 2);
    out->pool = (uint8_t)zxp_u(it, 3);
    out->timeout_ms = (uint32_t)zxp_u(it, 4);
    out->attempt = (uint32_t)zxp_u(it, 5);
    out->flags = (uint32_t)zxp_u(it, 6);
    out->token = s_tail_token(it, 8);
}

void zxp_get_wresult(const zxp_in_t *in, size_t i, zxp_wresult_t *out)
{
    const msgpack_object *it = zxp_item(in, i);
    out->session = (const uint8_t *)zxp_s(it, 0).ptr;
    out->seq = zxp_u(it, 1);
    out->status = (uint32_t)zxp_u(it, 2);
    out->pid = (uint32_t)zxp_u(it, 3);
    out->pool = (uint8_t)zxp_u(it, 4);
    out->slot_freed = zxp_b(it, 5);
    out->token = s_tail_token(it, 7);
}

void zxp_get_result(const zxp_in_t *in, size_t i, zxp_result_t *out)
{
    const msgpack_object *it = zxp_item(in, i);
    out->seq = zxp_u(it, 0);
    out->status = (uint32_t)zxp_u(it, 1);
    out->node = zxp_s(it, 2);
    out->pid = (uint32_t)zxp_u(it, 3);
    out->pool = (uint8_t)zxp_u(it, 4);
    out->attempts = (uint32_t)zxp_u(it, 5);
}

/* ---- encoding ---------------------------------------------------------------- */

void zxp_out_init(zxp_out_t *out)
{
    memset(out, 0, sizeof *out);
    msgpack_sbuffer_init(&out->buf);
    msgpack_packer_init(&out->pk, &out->buf, msgpack_sbuffer_write);
}

/* Empties the unsent payloads except the borrowed ones (zxp_out_payload_share),
   which stay their owner's. The empty zmsg is kept: a batch is begun, sent
   and begun again per message on a lone task's path, and a new zmsg each
   time was two callocs and two frees (docs/performance.md, 36). */
static void s_out_drop_payloads(zxp_out_t *out)
{
    if (!out->payloads) {
        out->payloads = zmsg_new();
        return;
    }
    zframe_t *f;
    while ((f = zmsg_pop(out->payloads))) {
        if (out->shared && f == zlist_first(out->shared)) {
            zlist_pop(out->shared);
        } else {
            zframe_destroy(&f);
        }
    }
}

void zxp_out_fini(zxp_out_t *out)
{
    msgpack_sbuffer_destroy(&out->buf);
    if (out->payloads) {
        s_out_drop_payloads(out);
        zmsg_destroy(&out->payloads);
    }
    zlist_destroy(&out->shared);
}

void zxp_out_begin(zxp_out_t *out, uint8_t cmd)
{
    const s_cmd_t *c = s_cmd(cmd);
    assert(c);
    out->cmd = cmd;
    out->batch = c->batch;
    out->payload = c->payload;
    out->count = 0;
    out->item_open = false;
    msgpack_sbuffer_clear(&out->buf);
    s_out_drop_payloads(out);
    if (out->batch) {
        /* array32 with its count patched at send time */
        static const char hdr[5] = {(char)0xdd, 0, 0, 0, 0};
        msgpack_sbuffer_write(&out->buf, hdr, sizeof hdr);
    }
}

msgpack_packer *zxp_out_pk(zxp_out_t *out)
{
    return &out->pk;
}

static bool s_inline(zxp_out_t *out, const void *data, size_t len);

void zxp_out_payload(zxp_out_t *out, zframe_t **frame_p)
{
    zframe_t *f = frame_p ? *frame_p : NULL;
    if (s_inline(out, f ? zframe_data(f) : NULL, f ? zframe_size(f) : 0)) {
        if (frame_p) {
            zframe_destroy(frame_p);
        }
        return;
    }
    if (!f) {
        f = zframe_new(NULL, 0);
    }
    if (frame_p) {
        *frame_p = NULL;
    }
    zmsg_append(out->payloads, &f);
}

void zxp_out_payload_share(zxp_out_t *out, zframe_t *frame)
{
    if (!frame) {
        zxp_out_payload(out, NULL);
        return;
    }
    if (s_inline(out, zframe_data(frame), zframe_size(frame))) {
        return;
    }
    if (!out->shared) {
        out->shared = zlist_new();
    }
    zlist_append(out->shared, frame);
    zframe_t *f = frame;
    zmsg_append(out->payloads, &f);
}

void zxp_out_item_token(zxp_out_t *out, const uint8_t *token)
{
    if (!out->last_inline) {
        msgpack_pack_nil(&out->pk);
        out->buf.data[out->item_at]++; /* fixarray: one field more */
    }
    msgpack_pack_bin(&out->pk, ZXP_TOKEN_LEN);
    msgpack_pack_bin_body(&out->pk, token, ZXP_TOKEN_LEN);
    out->buf.data[out->item_at]++;
    out->last_inline = true; /* a second call appends only the token */
}

void zxp_out_payload_mem(zxp_out_t *out, const void *data, size_t len)
{
    if (!s_inline(out, data, len)) {
        zmsg_addmem(out->payloads, data, len);
    }
}

/* ---- signing hook and limits (zx_sign.h) -------------------------------------- */

/* Sockets with a signer: few (two on a broker, one per executor or worker), so
   a small table; the atomic count keeps unsigned sends to one load. */
#define S_MAX_SIGNERS 64
static struct {
    zsock_t *sock;
    zxp_signer_fn *fn;
    void *arg;
} s_signers[S_MAX_SIGNERS];
static atomic_int s_nsigners;
static pthread_mutex_t s_signers_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_llong s_max_msg = ZXP_MAX_MSG;

void zxp_sock_set_signer(zsock_t *sock, zxp_signer_fn *fn, void *arg)
{
    pthread_mutex_lock(&s_signers_lock);
    int free_slot = -1;
    for (int i = 0; i < S_MAX_SIGNERS; i++) {
        /* removing (fn NULL) with an arg only removes that arg's hook: the
           socket may be gone and its address reused by another signer's */
        if (s_signers[i].sock == sock && (fn || !arg || s_signers[i].arg == arg)) {
            s_signers[i].sock = NULL;
            atomic_fetch_sub(&s_nsigners, 1);
        }
        if (!s_signers[i].sock && free_slot < 0) {
            free_slot = i;
        }
    }
    if (fn && free_slot >= 0) {
        s_signers[free_slot].sock = sock;
        s_signers[free_slot].fn = fn;
        s_signers[free_slot].arg = arg;
        atomic_fetch_add(&s_nsigners, 1);
    } else if (fn) {
        zsys_error("zxp_sock_set_signer: more than %d signed sockets", S_MAX_SIGNERS);
    }
    pthread_mutex_unlock(&s_signers_lock);
}

static int s_sign_hook(zsock_t *sock, zmsg_t *msg, zframe_t *routing_id)
{
    if (atomic_load_explicit(&s_nsigners, memory_order_relaxed) == 0) {
        return 0;
    }
    zxp_signer_fn *fn = NULL;
    void *arg = NULL;
    pthread_mutex_lock(&s_signers_lock);
    for (int i = 0; i < S_MAX_SIGNERS; i++) {
        if (s_signers[i].sock == sock) {
            fn = s_signers[i].fn;
            arg = s_signers[i].arg;
            break;
        }
    }
    pthread_mutex_unlock(&s_signers_lock);
    /* the signer belongs to the socket's thread: call it outside the lock */
    return fn ? fn(arg, msg, routing_id) : 0;
}

/* Drops a built message whose borrowed payloads stay their owner's. */
static void s_out_drop_msg(zxp_out_t *out, zmsg_t *msg)
{
    zframe_t *f;
    while ((f = zmsg_pop(msg))) {
        if (out->shared && f == zlist_first(out->shared)) {
            zlist_pop(out->shared);
        } else {
            zframe_destroy(&f);
        }
    }
    zmsg_destroy(&msg);
}

void zxp_set_max_msg(int64_t bytes)
{
    atomic_store(&s_max_msg, bytes > 0 ? bytes : ZXP_MAX_MSG);
}

int64_t zxp_max_msg(void)
{
    return atomic_load(&s_max_msg);
}

/* Resets a sent batch for the next one of the same command. */
static void s_out_sent(zxp_out_t *out)
{
    out->count = 0;
    out->item_open = false;
    msgpack_sbuffer_clear(&out->buf);
    if (out->batch) {
        static const char hdr[5] = {(char)0xdd, 0, 0, 0, 0};
        msgpack_sbuffer_write(&out->buf, hdr, sizeof hdr);
    }
}

/* zxp_out_send when no signer is registered (nothing to sign, so no
   message to build): the routing id, signature and header go out as
   zmq_send copies, the payload frames as they are, and the emptied zmsg
   stays for the next batch. Building a zmsg cost a zframe (calloc, free)
   per frame and a new zmsg (two callocs) per message: a lone task's round
   trip sends two messages from the broker (docs/performance.md, 36). */
static int s_out_send_plain(zxp_out_t *out, const uint8_t sig[4], zsock_t *sock,
                            zframe_t *routing_id)
{
    void *handle = zsock_resolve(sock);
    size_t nframes = zmsg_size(out->payloads);
    int rc = 0;
    if (routing_id &&
        zmq_send(handle, zframe_data(routing_id), zframe_size(routing_id), ZMQ_SNDMORE) < 0) {
        rc = -1;
    }
    if (rc == 0 && zmq_send(handle, sig, 4, ZMQ_SNDMORE) < 0) {
        rc = -1;
    }
    if (rc == 0 && zmq_send(handle, out->buf.data, out->buf.size, nframes ? ZMQ_SNDMORE : 0) < 0) {
        rc = -1;
    }
    /* frame by frame, so borrowed payloads go with ZFRAME_REUSE: ZeroMQ
       sends a reference-counted copy of the zmq_msg_t, not of the bytes */
    zframe_t *f;
    while ((f = zmsg_pop(out->payloads))) {
        int more = zmsg_size(out->payloads) > 0 ? ZFRAME_MORE : 0;
        bool borrowed = out->shared && f == zlist_first(out->shared);
        if (borrowed) {
            zlist_pop(out->shared);
        }
        if (rc == 0 && zframe_send(&f, sock, more | (borrowed ? ZFRAME_REUSE : 0)) != 0) {
            rc = -1;
        }
        if (!borrowed) {
            zframe_destroy(&f); /* unsent (zframe_send nulls a sent one) */
        }
    }
    s_out_sent(out);
    return rc;
}

int zxp_out_send(zxp_out_t *out, zsock_t *sock, zframe_t *routing_id)
{
    if (out->batch) {
        uint8_t *h = (uint8_t *)out->buf.data;
        uint32_t n = (uint32_t)out->count;
        h[1] = (uint8_t)(n >> 24);
        h[2] = (uint8_t)(n >> 16);
        h[3] = (uint8_t)(n >> 8);
        h[4] = (uint8_t)n;
    }
    uint8_t sig[4] = {ZXP_SIG0, ZXP_SIG1, ZXP_VERSION, out->cmd};
    if (atomic_load_explicit(&s_nsigners, memory_order_relaxed) == 0) {
        return s_out_send_plain(out, sig, sock, routing_id);
    }
    zmsg_t *msg = out->payloads;
    out->payloads = NULL;
    zmsg_pushmem(msg, out->buf.data, out->buf.size);
    zmsg_pushmem(msg, sig, sizeof sig);
    int rc = s_sign_hook(sock, msg, routing_id);
    if (routing_id) {
        zmsg_pushmem(msg, zframe_data(routing_id), zframe_size(routing_id));
    }
    if (rc != 0) {
        s_out_drop_msg(out, msg); /* not signed: never sent */
        msg = NULL;
    } else if (out->shared && zlist_size(out->shared) > 0) {
        /* frame by frame, so borrowed payloads go with ZFRAME_REUSE: ZeroMQ
           sends a reference-counted copy of the zmq_msg_t, not of the bytes */
        zframe_t *f;
        while ((f = zmsg_pop(msg))) {
            int more = zmsg_size(msg) > 0 ? ZFRAME_MORE : 0;
            if (f == zlist_first(out->shared)) {
                zlist_pop(out->shared);
                if (rc == 0 && zframe_send(&f, sock, more | ZFRAME_REUSE) != 0) {
                    rc = -1;
                }
            } else if (rc == 0) {
                if (zframe_send(&f, sock, more) != 0) {
                    rc = -1;
                    zframe_destroy(&f);
                }
            } else {
                zframe_destroy(&f);
            }
        }
    } else {
        rc = zmsg_send(&msg, sock);
    }
    zmsg_destroy(&msg);
    out->payloads = zmsg_new();
    s_out_sent(out);
    return rc;
}

static void s_pack_str(msgpack_packer *pk, const char *s, size_t len)
{
    msgpack_pack_str(pk, len);
    msgpack_pack_str_body(pk, s, len);
}

static void s_pack_id(msgpack_packer *pk, const uint8_t *id)
{
    msgpack_pack_bin(pk, ZXP_ID_LEN);
    msgpack_pack_bin_body(pk, id, ZXP_ID_LEN);
}

static msgpack_packer *s_item(zxp_out_t *out, size_t fields)
{
    assert(out->batch && fields < 15); /* a fixarray: one byte, patched below */
    out->count++;
    out->item_at = out->buf.size;
    out->item_open = out->payload;
    out->last_inline = false;
    msgpack_pack_array(&out->pk, fields);
    return &out->pk;
}

/* Puts len bytes inline as the last item's trailing bin field, if they are
   small enough and that item takes a payload; false: use a frame. */
static bool s_inline(zxp_out_t *out, const void *data, size_t len)
{
    bool ok = out->item_open && len <= ZXP_INLINE_MAX;
    out->item_open = false;
    out->last_inline = ok;
    if (ok) {
        msgpack_pack_bin(&out->pk, len);
        msgpack_pack_bin_body(&out->pk, data, len);
        out->buf.data[out->item_at]++; /* fixarray of n fields -> n + 1 */
    }
    return ok;
}

void zxp_put_submit(zxp_out_t *out, const zxp_submit_t *s)
{
    msgpack_packer *pk = s_item(out, 7);
    msgpack_pack_uint64(pk, s->seq);
    s_pack_str(pk, s->fn.ptr, s->fn.len);
    msgpack_pack_uint8(pk, s->pool);
    msgpack_pack_int8(pk, s->priority);
    msgpack_pack_int32(pk, s->retries);
    msgpack_pack_uint32(pk, s->timeout_ms);
    msgpack_pack_uint32(pk, s->flags);
}

void zxp_put_started(zxp_out_t *out, uint64_t seq, const char *node, size_t node_len, uint32_t pid)
{
    msgpack_packer *pk = s_item(out, 3);
    msgpack_pack_uint64(pk, seq);
    s_pack_str(pk, node, node_len);
    msgpack_pack_uint32(pk, pid);
}

void zxp_put_result(zxp_out_t *out, const zxp_result_t *r)
{
    msgpack_packer *pk = s_item(out, 6);
    msgpack_pack_uint64(pk, r->seq);
    msgpack_pack_uint32(pk, r->status);
    s_pack_str(pk, r->node.ptr ? r->node.ptr : "", r->node.len);
    msgpack_pack_uint32(pk, r->pid);
    msgpack_pack_uint8(pk, r->pool);
    msgpack_pack_uint32(pk, r->attempts);
}

void zxp_put_cancel(zxp_out_t *out, uint64_t seq, bool terminate)
{
    msgpack_packer *pk = s_item(out, 2);
    msgpack_pack_uint64(pk, seq);
    if (terminate) {
        msgpack_pack_true(pk);
    } else {
        msgpack_pack_false(pk);
    }
}

void zxp_put_cancelled(zxp_out_t *out, uint64_t seq, uint32_t outcome)
{
    msgpack_packer *pk = s_item(out, 2);
    msgpack_pack_uint64(pk, seq);
    msgpack_pack_uint32(pk, outcome);
}

void zxp_put_task(zxp_out_t *out, const zxp_task_t *t)
{
    msgpack_packer *pk = s_item(out, 7);
    s_pack_id(pk, t->session);
    msgpack_pack_uint64(pk, t->seq);
    s_pack_str(pk, t->fn.ptr, t->fn.len);
    msgpack_pack_uint8(pk, t->pool);
    msgpack_pack_uint32(pk, t->timeout_ms);
    msgpack_pack_uint32(pk, t->attempt);
    msgpack_pack_uint32(pk, t->flags);
}

void zxp_put_wstarted(zxp_out_t *out, const uint8_t *session, uint64_t seq, uint32_t pid,
                      uint8_t pool)
{
    msgpack_packer *pk = s_item(out, 4);
    s_pack_id(pk, session);
    msgpack_pack_uint64(pk, seq);
    msgpack_pack_uint32(pk, pid);
    msgpack_pack_uint8(pk, pool);
}

void zxp_put_wresult(zxp_out_t *out, const zxp_wresult_t *r)
{
    msgpack_packer *pk = s_item(out, 6);
    s_pack_id(pk, r->session);
    msgpack_pack_uint64(pk, r->seq);
    msgpack_pack_uint32(pk, r->status);
    msgpack_pack_uint32(pk, r->pid);
    msgpack_pack_uint8(pk, r->pool);
    if (r->slot_freed) {
        msgpack_pack_true(pk);
    } else {
        msgpack_pack_false(pk);
    }
}

void zxp_put_wcancel(zxp_out_t *out, const uint8_t *session, uint64_t seq, bool terminate)
{
    msgpack_packer *pk = s_item(out, 3);
    s_pack_id(pk, session);
    msgpack_pack_uint64(pk, seq);
    if (terminate) {
        msgpack_pack_true(pk);
    } else {
        msgpack_pack_false(pk);
    }
}

void zxp_put_wcancelled(zxp_out_t *out, const uint8_t *session, uint64_t seq, uint32_t outcome)
{
    msgpack_packer *pk = s_item(out, 3);
    s_pack_id(pk, session);
    msgpack_pack_uint64(pk, seq);
    msgpack_pack_uint32(pk, outcome);
}

/* Control messages are rare: a fresh builder each is fine. */
static int s_send_built(zxp_out_t *o, zsock_t *sock, zframe_t *rid)
{
    int rc = zxp_out_send(o, sock, rid);
    zxp_out_fini(o);
    return rc;
}

int zxp_send_empty(zsock_t *sock, zframe_t *routing_id, uint8_t cmd)
{
    zxp_out_t o;
    zxp_out_init(&o);
    zxp_out_begin(&o, cmd);
    msgpack_pack_array(&o.pk, 0);
    return s_send_built(&o, sock, routing_id);
}

int zxp_send_heartbeat_rx(zsock_t *sock, zframe_t *routing_id, uint64_t rx)
{
    zxp_out_t o;
    zxp_out_init(&o);
    zxp_out_begin(&o, ZXP_HEARTBEAT);
    msgpack_pack_array(&o.pk, 1);
    msgpack_pack_uint64(&o.pk, rx);
    return s_send_built(&o, sock, routing_id);
}

int zxp_send_hello(zsock_t *sock, const uint8_t *session, const char *name, uint32_t heartbeat_ms)
{
    return zxp_send_hello_flags(sock, session, name, heartbeat_ms, 0);
}

uint32_t zxp_hello_flags(const zxp_in_t *in)
{
    return in->cmd == ZXP_HELLO && in->hdr.via.array.size > 5 ? (uint32_t)zxp_u(&in->hdr, 5) : 0;
}

int zxp_send_hello_flags(zsock_t *sock, const uint8_t *session, const char *name,
                         uint32_t heartbeat_ms, uint32_t flags)
{
    zxp_out_t o;
    zxp_out_init(&o);
    zxp_out_begin(&o, ZXP_HELLO);
    /* flags only when set: a 2.1 broker never sees the field it does not know */
    msgpack_pack_array(&o.pk, flags ? 6 : 5);
    msgpack_pack_uint32(&o.pk, ZXP_VERSION);
    s_pack_id(&o.pk, session);
    s_pack_str(&o.pk, name, strlen(name));
    msgpack_pack_uint32(&o.pk, heartbeat_ms);
    /* a trailing field (an older broker ignores it): the largest frame this
       process accepts, so the broker fails a result over it instead of
       sending it */
    msgpack_pack_uint64(&o.pk, (uint64_t)zxp_max_msg());
    if (flags) {
        msgpack_pack_uint32(&o.pk, flags);
    }
    return s_send_built(&o, sock, NULL);
}

int zxp_send_welcome(zsock_t *sock, zframe_t *routing_id, const uint8_t *broker_id,
                     uint32_t heartbeat_ms, uint32_t liveness, uint32_t max_msg)
{
    zxp_out_t o;
    zxp_out_init(&o);
    zxp_out_begin(&o, ZXP_WELCOME);
    msgpack_pack_array(&o.pk, 4);
    s_pack_id(&o.pk, broker_id);
    msgpack_pack_uint32(&o.pk, heartbeat_ms);
    msgpack_pack_uint32(&o.pk, liveness);
    msgpack_pack_uint32(&o.pk, max_msg);
    return s_send_built(&o, sock, routing_id);
}

int zxp_send_error(zsock_t *sock, zframe_t *routing_id, uint32_t code, const char *message)
{
    zxp_out_t o;
    zxp_out_init(&o);
    zxp_out_begin(&o, ZXP_ERROR);
    msgpack_pack_array(&o.pk, 2);
    msgpack_pack_uint32(&o.pk, code);
    s_pack_str(&o.pk, message, strlen(message));
    return s_send_built(&o, sock, routing_id);
}

void zxp_put_ready(zxp_out_t *out, const zxp_ready_t *r)
{
    msgpack_packer *pk = &out->pk;
    msgpack_pack_array(pk, r->max_msg ? 11 : 10);
    msgpack_pack_uint32(pk, ZXP_VERSION);
    s_pack_id(pk, r->worker_id);
    s_pack_str(pk, r->node, strlen(r->node));
    msgpack_pack_uint32(pk, r->pid);
    msgpack_pack_uint32(pk, r->threads);
    msgpack_pack_uint32(pk, r->procs);
    msgpack_pack_uint32(pk, r->prefetch);
    msgpack_pack_uint32(pk, r->heartbeat_ms);
    msgpack_pack_array(pk, r->nfns);
}

void zxp_put_ready_fn(zxp_out_t *out, const char *name, uint8_t pools)
{
    msgpack_pack_array(&out->pk, 2);
    s_pack_str(&out->pk, name, strlen(name));
    msgpack_pack_uint8(&out->pk, pools);
}

void zxp_put_ready_running(zxp_out_t *out, size_t nrunning)
{
    msgpack_pack_array(&out->pk, nrunning);
}

void zxp_put_ready_task(zxp_out_t *out, const uint8_t *session, uint64_t seq, uint8_t pool,
                        const uint8_t *token, uint32_t attempt)
{
    msgpack_packer *pk = &out->pk;
    msgpack_pack_array(pk, token ? 5 : 3);
    s_pack_id(pk, session);
    msgpack_pack_uint64(pk, seq);
    msgpack_pack_uint8(pk, pool);
    if (token) {
        msgpack_pack_bin(pk, ZXP_TOKEN_LEN);
        msgpack_pack_bin_body(pk, token, ZXP_TOKEN_LEN);
        msgpack_pack_uint32(pk, attempt);
    }
}

void zxp_put_ready_end(zxp_out_t *out, const zxp_ready_t *r)
{
    if (r->max_msg) {
        msgpack_pack_uint64(&out->pk, r->max_msg);
    }
}

int zxp_send_credit(zsock_t *sock, uint8_t pool, uint32_t n)
{
    zxp_out_t o;
    zxp_out_init(&o);
    zxp_out_begin(&o, ZXP_CREDIT);
    msgpack_pack_array(&o.pk, 2);
    msgpack_pack_uint8(&o.pk, pool);
    msgpack_pack_uint32(&o.pk, n);
    return s_send_built(&o, sock, NULL);
}

/* ---- detached jobs (2.2) ------------------------------------------------------- */

void zxp_put_accepted(zxp_out_t *out, uint64_t seq)
{
    msgpack_pack_uint64(s_item(out, 1), seq);
}

void zxp_put_jresult(zxp_out_t *out, const zxp_jresult_t *j)
{
    msgpack_packer *pk = s_item(out, 7);
    const zxp_result_t *r = &j->r;
    msgpack_pack_uint64(pk, r->seq);
    msgpack_pack_uint32(pk, r->status);
    s_pack_str(pk, r->node.ptr ? r->node.ptr : "", r->node.len);
    msgpack_pack_uint32(pk, r->pid);
    msgpack_pack_uint8(pk, r->pool);
    msgpack_pack_uint32(pk, r->attempts);
    msgpack_pack_uint64(pk, j->index);
}

void zxp_get_jresult(const zxp_in_t *in, size_t i, zxp_jresult_t *out)
{
    zxp_get_result(in, i, &out->r);
    out->index = zxp_u(zxp_item(in, i), 6);
}

int zxp_send_fetch(zsock_t *sock, const zxp_fetch_t *f)
{
    zxp_out_t o;
    zxp_out_init(&o);
    zxp_out_begin(&o, ZXP_FETCH);
    msgpack_pack_array(&o.pk, 4);
    s_pack_id(&o.pk, f->job);
    msgpack_pack_uint64(&o.pk, f->after);
    msgpack_pack_uint64(&o.pk, f->max);
    msgpack_pack_uint32(&o.pk, f->wait_ms > ZXP_FETCH_WAIT_MAX ? ZXP_FETCH_WAIT_MAX : f->wait_ms);
    return s_send_built(&o, sock, NULL);
}

const uint8_t *zxp_job_id(const zxp_in_t *in)
{
    return (const uint8_t *)zxp_s(&in->hdr, 0).ptr;
}

void zxp_get_fetch(const zxp_in_t *in, zxp_fetch_t *out)
{
    out->job = zxp_job_id(in);
    out->after = zxp_u(&in->hdr, 1);
    out->max = zxp_u(&in->hdr, 2);
    out->wait_ms = (uint32_t)zxp_u(&in->hdr, 3);
}

int zxp_send_rack(zsock_t *sock, const uint8_t *job, const uint64_t *seqs, size_t n)
{
    assert(n <= ZXP_MAX_BATCH);
    zxp_out_t o;
    zxp_out_init(&o);
    zxp_out_begin(&o, ZXP_RACK);
    msgpack_pack_array(&o.pk, 2);
    s_pack_id(&o.pk, job);
    msgpack_pack_array(&o.pk, n);
    for (size_t i = 0; i < n; i++) {
        msgpack_pack_uint64(&o.pk, seqs[i]);
    }
    return s_send_built(&o, sock, NULL);
}

const uint8_t *zxp_rack_job(const zxp_in_t *in)
{
    return zxp_job_id(in);
}

size_t zxp_rack_count(const zxp_in_t *in)
{
    return zxp_o(&in->hdr, 1)->via.array.size;
}

uint64_t zxp_rack_seq(const zxp_in_t *in, size_t i)
{
    return zxp_o(&in->hdr, 1)->via.array.ptr[i].via.u64;
}

int zxp_send_jcancel(zsock_t *sock, const uint8_t *job)
{
    zxp_out_t o;
    zxp_out_init(&o);
    zxp_out_begin(&o, ZXP_JCANCEL);
    msgpack_pack_array(&o.pk, 1);
    s_pack_id(&o.pk, job);
    return s_send_built(&o, sock, NULL);
}

static void s_kv_u(msgpack_packer *pk, const char *k, uint64_t v)
{
    s_pack_str(pk, k, strlen(k));
    msgpack_pack_uint64(pk, v);
}

static void s_kv_s(msgpack_packer *pk, const char *k, const char *v)
{
    s_pack_str(pk, k, strlen(k));
    s_pack_str(pk, v, strlen(v));
}

void zxp_pack_jobinfo(msgpack_packer *pk, const zxp_jobinfo_t *info)
{
    bool err = info->error[0] != 0;
    msgpack_pack_map(pk, 14 + (err ? 1 : 0));
    s_pack_str(pk, "id", 2);
    msgpack_pack_bin(pk, ZXP_ID_LEN);
    msgpack_pack_bin_body(pk, info->id, ZXP_ID_LEN);
    s_kv_s(pk, "name", info->name);
    s_kv_s(pk, "state", info->state);
    s_kv_u(pk, "submitted", info->submitted);
    s_kv_u(pk, "queued", info->queued);
    s_kv_u(pk, "running", info->running);
    s_kv_u(pk, "done", info->done);
    s_kv_u(pk, "failed", info->failed);
    s_kv_u(pk, "held", info->held);
    s_kv_u(pk, "held_bytes", info->held_bytes);
    s_kv_u(pk, "acked", info->acked);
    s_pack_str(pk, "created", 7);
    msgpack_pack_int64(pk, info->created);
    s_pack_str(pk, "expires", 7);
    msgpack_pack_int64(pk, info->expires);
    s_kv_u(pk, "next", info->next);
    if (err) {
        s_kv_s(pk, "error", info->error);
    }
}

/* Copies a str or bin into a NUL-terminated buffer, cut to fit. */
static void s_copy_text(const msgpack_object *v, char *dst, size_t cap)
{
    const char *p = NULL;
    size_t n = 0;
    if (v->type == MSGPACK_OBJECT_STR) {
        p = v->via.str.ptr;
        n = v->via.str.size;
    } else if (v->type == MSGPACK_OBJECT_BIN) {
        p = v->via.bin.ptr;
        n = v->via.bin.size;
    }
    if (n >= cap) {
        n = cap - 1;
    }
    if (n) {
        memcpy(dst, p, n);
    }
    dst[n] = 0;
}

int zxp_get_jobinfo(const msgpack_object *map, zxp_jobinfo_t *out)
{
    memset(out, 0, sizeof *out);
    if (map->type != MSGPACK_OBJECT_MAP) {
        return -1;
    }
    static const struct {
        const char *key;
        size_t off;
    } u64s[] = {
        {"submitted", offsetof(zxp_jobinfo_t, submitted)},
        {"queued", offsetof(zxp_jobinfo_t, queued)},
        {"running", offsetof(zxp_jobinfo_t, running)},
        {"done", offsetof(zxp_jobinfo_t, done)},
        {"failed", offsetof(zxp_jobinfo_t, failed)},
        {"held", offsetof(zxp_jobinfo_t, held)},
        {"held_bytes", offsetof(zxp_jobinfo_t, held_bytes)},
        {"acked", offsetof(zxp_jobinfo_t, acked)},
        {"next", offsetof(zxp_jobinfo_t, next)},
    };
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key, *v = &map->via.map.ptr[i].val;
        if (k->type != MSGPACK_OBJECT_STR) {
            continue;
        }
        char key[16];
        s_copy_text(k, key, sizeof key);
        if (strcmp(key, "id") == 0) {
            if (v->type == MSGPACK_OBJECT_BIN && v->via.bin.size == ZXP_ID_LEN) {
                memcpy(out->id, v->via.bin.ptr, ZXP_ID_LEN);
            }
        } else if (strcmp(key, "name") == 0) {
            s_copy_text(v, out->name, sizeof out->name);
        } else if (strcmp(key, "state") == 0) {
            s_copy_text(v, out->state, sizeof out->state);
        } else if (strcmp(key, "error") == 0) {
            s_copy_text(v, out->error, sizeof out->error);
        } else if (strcmp(key, "created") == 0 || strcmp(key, "expires") == 0) {
            int64_t t = v->type == MSGPACK_OBJECT_POSITIVE_INTEGER
                            ? (v->via.u64 > INT64_MAX ? INT64_MAX : (int64_t)v->via.u64)
                        : v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER ? v->via.i64
                                                                     : 0;
            *(key[0] == 'c' ? &out->created : &out->expires) = t;
        } else if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
            for (size_t j = 0; j < sizeof u64s / sizeof u64s[0]; j++) {
                if (strcmp(key, u64s[j].key) == 0) {
                    *(uint64_t *)((char *)out + u64s[j].off) = v->via.u64;
                }
            }
        }
    }
    return 0;
}

int zxp_send_jobinfo(zsock_t *sock, zframe_t *routing_id, uint8_t cmd, const uint8_t *job,
                     const zxp_jobinfo_t *info)
{
    assert(cmd == ZXP_FETCHED || cmd == ZXP_JCANCELLED);
    zxp_out_t o;
    zxp_out_init(&o);
    zxp_out_begin(&o, cmd);
    msgpack_pack_array(&o.pk, 2);
    s_pack_id(&o.pk, job);
    zxp_pack_jobinfo(&o.pk, info);
    return s_send_built(&o, sock, routing_id);
}

int zxp_send_jobs_reply(zsock_t *sock, zframe_t *routing_id, const zxp_jobinfo_t *infos, size_t n)
{
    zxp_out_t o;
    zxp_out_init(&o);
    zxp_out_begin(&o, ZXP_JOBS_REPLY);
    msgpack_pack_array(&o.pk, 1);
    msgpack_pack_array(&o.pk, n);
    for (size_t i = 0; i < n; i++) {
        zxp_pack_jobinfo(&o.pk, &infos[i]);
    }
    return s_send_built(&o, sock, routing_id);
}

const msgpack_object *zxp_jobinfo_obj(const zxp_in_t *in)
{
    return zxp_o(&in->hdr, 1);
}

size_t zxp_jobs_count(const zxp_in_t *in)
{
    return zxp_o(&in->hdr, 0)->via.array.size;
}

const msgpack_object *zxp_jobs_info(const zxp_in_t *in, size_t i)
{
    return &zxp_o(&in->hdr, 0)->via.array.ptr[i];
}

zframe_t *zxp_error_frame(const char *type, const char *message, const char *traceback)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 3);
    s_pack_str(&pk, type ? type : "Error", strlen(type ? type : "Error"));
    s_pack_str(&pk, message ? message : "", strlen(message ? message : ""));
    s_pack_str(&pk, traceback ? traceback : "", strlen(traceback ? traceback : ""));
    zframe_t *f = zframe_new(sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    return f;
}

void zxp_sock_setup(zsock_t *sock)
{
    zmq_setsockopt(zsock_resolve(sock), ZMQ_MAXMSGSIZE, &(int64_t){zxp_max_msg()}, sizeof(int64_t));
    zsock_set_linger(sock, 0);
    /* no send ever waits: a DEALER whose handshake was refused has no
       connection left (libzmq 4.3 does not reconnect after one), and a
       blocking send there would wait forever; EAGAIN is reported instead */
    zsock_set_sndtimeo(sock, 0);
    zsock_set_sndhwm(sock, 0); /* flow control is by credit and quotas, not by drops */
    zsock_set_rcvhwm(sock, 0);
    zsock_set_handshake_ivl(sock, 10000);
}

/* ---- peers and counters ------------------------------------------------------ */

void zxp_hex(const uint8_t *id, size_t len, char out[33])
{
    static const char hex[] = "0123456789abcdef";
    if (len > 16) {
        len = 16;
    }
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = hex[id[i] >> 4];
        out[2 * i + 1] = hex[id[i] & 15];
    }
    out[2 * len] = 0;
}

void zxp_drops_init(zxp_drops_t *d)
{
    d->total = 0;
    d->seen = zhashx_new();
}

void zxp_drops_fini(zxp_drops_t *d)
{
    zhashx_destroy(&d->seen);
}

void zxp_drop(zxp_drops_t *d, const char *where, zframe_t *peer, int code, const char *reason)
{
    d->total++;
    char hex[33] = "-";
    if (peer) {
        zxp_hex(zframe_data(peer), zframe_size(peer), hex);
    }
    char key[80];
    snprintf(key, sizeof key, "%s/%d", hex, code);
    /* the table is bounded, so a flood from many peers cannot grow it */
    if (zhashx_lookup(d->seen, key)) {
        return;
    }
    if (zhashx_size(d->seen) < 4096) {
        zhashx_insert(d->seen, key, (void *)1);
    }
    zsys_warning("%s: dropped a message from peer %s: %s (%s); further drops of this kind "
                 "from this peer are counted, not logged",
                 where, hex, zxp_strerror(code), reason ? reason : "");
}
