/*  map.c - zx_map_*: Python's Executor.map over any executor. Inputs are
    submitted lazily, keeping a bounded window of tasks in flight that is
    refilled as the caller consumes results in input order, so memory does
    not grow with the number of inputs (a million-input generator runs in the
    same memory as a hundred-input one).

    Window: ZX_MAP_WINDOW (2048) tasks when chunksize <= 1; with chunks,
    enough tasks for about ZX_MAP_WINDOW_INPUTS (262144) inputs, at least
    ZX_MAP_MIN_CHUNKS (16) and at most ZX_MAP_WINDOW tasks; and, whatever
    the count, no more tasks once those in flight carry ZX_MAP_WINDOW_BYTES
    (64 MiB) of arguments (one at least). The window is what keeps the
    workers fed across the round trip: map(1) ran 120k tasks/s with 128 in
    flight and 185k (the rate of plain submits) with 2048; map(256) 2.1M/s
    with 4 chunks and 3.4-4.4M with 32. With several workers the results
    come back out of input order, and a window of 32 chunks (8192 inputs)
    left the consumer waiting on the one at its head while the rest sat
    done: 256 chunks (65536 inputs) ran 1 to 4 workers 15-50% faster
    (bench F). Once chunks got cheaper to run, a worker that fell behind
    for a moment still held the head while the others ran dry (four
    single-thread workers' queues emptied on 8.5% of chunks); 1024 chunks
    (262144 inputs) run map(256) 14% faster with one worker or four
    (docs/performance.md, change 31). A chunk task (ZXP_F_CHUNK) carries a
    msgpack array of argument arrays; its result is an array of [ok,
    value-or-error] pairs (zx__task_call_chunk is the other side), walked
    in place without unpacking.

    Stopping: the map stops, as Python's iterator does, at the first element
    that failed (ZX_ERAISED, or ZX_ECANCELLED if its task was cancelled), at a
    timeout (ZX_ETIMEOUT, measured from zx_map_new), at a submit failure
    (e.g. ZX_ESHUTDOWN) or a generator error; the tasks still in flight are
    then cancelled, and every later zx_map_next returns the same code again.
    A map is used by one thread at a time.
*/
#include "zx_client_int.h"
#include "zx_proto.h"
#include "zx_waiter.h"

#include <czmq.h>
#include <string.h>

#define ZX_MAP_WINDOW 2048
#define ZX_MAP_WINDOW_INPUTS 262144
#define ZX_MAP_MIN_CHUNKS 16
#define ZX_MAP_WINDOW_BYTES ((size_t)64 << 20)

typedef struct {
    zx_future_t *f;
    size_t count; /* inputs in this task */
    size_t bytes; /* its argument bytes */
    bool chunk;
} s_slot_t;

struct zx_map {
    zx_executor_t *ex;
    char *fn;
    /* input: an array, or a generator */
    const void *const *args;
    const size_t *args_len;
    size_t n, next_in;
    zx_map_gen_fn *gen;
    void *gen_arg;
    bool input_end;  /* no more inputs will be submitted */
    int input_error; /* why input ended early (reported after the window drains) */
    size_t chunksize;
    struct timespec deadline;
    /* window: a ring of in-flight tasks, oldest first */
    s_slot_t *ring;
    size_t cap, head, count;
    size_t bytes; /* argument bytes of the tasks in the window */
    /* the task whose result the caller is reading */
    zx_future_t *cur;
    const uint8_t *chunk_p, *chunk_end; /* rest of a chunk result */
    uint32_t chunk_left;
    const char *cur_node;
    int cur_pid;
    msgpack_sbuffer pack; /* reused for building chunk payloads */
    int final;            /* once non-zero: the code every later next returns */
    zx_error_t err;       /* owned strings, for zx_map_exception */
    bool has_err;
};

static const zx_error_t s_timeout_error = {
    ZX_ETIMEOUT, "TimeoutError", "the map ran out of time", "", "", 0};

/* ---- errors --------------------------------------------------------------- */

static void s_err_clear(zx_map_t *m)
{
    free((char *)m->err.type);
    free((char *)m->err.message);
    free((char *)m->err.traceback);
    free((char *)m->err.node);
    memset(&m->err, 0, sizeof m->err);
    m->has_err = false;
}

static void s_err_set(zx_map_t *m, const zx_error_t *e)
{
    s_err_clear(m);
    m->err.code = e->code;
    m->err.type = strdup(e->type ? e->type : "Error");
    m->err.message = strdup(e->message ? e->message : "");
    m->err.traceback = strdup(e->traceback ? e->traceback : "");
    m->err.node = strdup(e->node ? e->node : "");
    m->err.pid = e->pid;
    m->has_err = m->err.type && m->err.message && m->err.traceback && m->err.node;
    if (!m->has_err) {
        s_err_clear(m);
    }
}

static void s_err_code(zx_map_t *m, int code, const char *type)
{
    zx_error_t e = {code, type, zx_strerror(code), "", "", 0};
    s_err_set(m, &e);
}

/* ---- input and submission ------------------------------------------------- */

/* Fetches the next input. 1 with *a, *len; 0 at the end; < 0 an error. */
static int s_next_input(zx_map_t *m, const void **a, size_t *len)
{
    if (m->input_end) {
        return 0;
    }
    if (m->gen) {
        int rc = m->gen(m->gen_arg, a, len);
        return rc > 0 ? 1 : rc;
    }
    if (m->next_in >= m->n) {
        return 0;
    }
    *a = m->args[m->next_in];
    *len = m->args_len[m->next_in];
    m->next_in++;
    return 1;
}

/* Ends the input with code (0: a normal end). */
static void s_input_stop(zx_map_t *m, int code)
{
    m->input_end = true;
    if (code < 0 && m->input_error == 0) {
        m->input_error = code;
    }
}

/* Submits one more task into the window. false when no task was added. */
static bool s_submit_one(zx_map_t *m)
{
    if (m->input_end || m->count == m->cap || (m->count > 0 && m->bytes >= ZX_MAP_WINDOW_BYTES)) {
        return false;
    }
    const void *a;
    size_t len;
    zx_future_t *f = NULL;
    size_t count = 0, bytes = 0;
    if (m->chunksize <= 1) {
        int rc = s_next_input(m, &a, &len);
        if (rc <= 0) {
            s_input_stop(m, rc);
            return false;
        }
        f = zx__submit_flags(m->ex, m->fn, a, len, NULL, 0);
        count = 1;
        bytes = len;
    } else {
        /* Pack up to chunksize inputs; the array header is written last, in
           front, once the count is known (5 bytes reserved: array32). */
        m->pack.size = 0;
        static const char reserve[5] = {0};
        msgpack_sbuffer_write(&m->pack, reserve, sizeof reserve);
        while (count < m->chunksize) {
            int rc = s_next_input(m, &a, &len);
            if (rc <= 0) {
                s_input_stop(m, rc);
                break;
            }
            if (!zx__is_args_array(a, len)) {
                s_input_stop(m, ZX_EINVAL);
                break;
            }
            if (msgpack_sbuffer_write(&m->pack, a, len) != 0) {
                s_input_stop(m, ZX_ENOMEM);
                break;
            }
            count++;
        }
        if (count == 0) {
            return false;
        }
        uint8_t *p = (uint8_t *)m->pack.data;
        p[0] = 0xdd;
        p[1] = (uint8_t)(count >> 24);
        p[2] = (uint8_t)(count >> 16);
        p[3] = (uint8_t)(count >> 8);
        p[4] = (uint8_t)count;
        f = zx__submit_packed(m->ex, m->fn, m->pack.data, m->pack.size, NULL, ZXP_F_CHUNK);
        bytes = m->pack.size;
    }
    if (!f) {
        /* the inputs taken for this task are lost with the map's stop */
        s_input_stop(m, zx_last_error() ? zx_last_error() : ZX_ENOMEM);
        return false;
    }
    s_slot_t *s = &m->ring[(m->head + m->count) % m->cap];
    s->f = f;
    s->count = count;
    s->bytes = bytes;
    s->chunk = m->chunksize > 1;
    m->count++;
    m->bytes += bytes;
    return true;
}

static void s_fill(zx_map_t *m)
{
    while (s_submit_one(m)) {
    }
}

/* ---- construction --------------------------------------------------------- */

static zx_map_t *s_new(zx_executor_t *ex, const char *fn, size_t chunksize, double timeout)
{
    if (!ex || !fn || !*fn) {
        zx__set_last_error(ZX_EINVAL);
        return NULL;
    }
    zx_map_t *m = calloc(1, sizeof *m);
    if (!m) {
        zx__set_last_error(ZX_ENOMEM);
        return NULL;
    }
    m->deadline = zx__deadline(timeout);
    m->ex = ex;
    m->chunksize = chunksize > 1 ? chunksize : 1;
    if (m->chunksize == 1) {
        m->cap = ZX_MAP_WINDOW;
    } else {
        size_t tasks = (ZX_MAP_WINDOW_INPUTS + m->chunksize - 1) / m->chunksize;
        tasks = tasks > ZX_MAP_WINDOW ? ZX_MAP_WINDOW : tasks;
        m->cap = tasks < ZX_MAP_MIN_CHUNKS ? ZX_MAP_MIN_CHUNKS : tasks;
    }
    m->fn = strdup(fn);
    m->ring = calloc(m->cap, sizeof *m->ring);
    msgpack_sbuffer_init(&m->pack);
    if (!m->fn || !m->ring) {
        free(m->fn);
        free(m->ring);
        free(m);
        zx__set_last_error(ZX_ENOMEM);
        return NULL;
    }
    return m;
}

/* Primes the window; NULL (and the map freed) if not even one task could be
   submitted because the executor refused (shut down, bad argument). */
static zx_map_t *s_start(zx_map_t *m)
{
    s_fill(m);
    if (m->count == 0 && m->input_error != 0) {
        int code = m->input_error;
        zx_map_destroy(&m);
        zx__set_last_error(code);
        return NULL;
    }
    return m;
}

zx_map_t *zx_map_new(zx_executor_t *ex, const char *fn, const void *const *args,
                     const size_t *args_len, size_t n, size_t chunksize, double timeout)
{
    if (n && (!args || !args_len)) {
        zx__set_last_error(ZX_EINVAL);
        return NULL;
    }
    zx_map_t *m = s_new(ex, fn, chunksize, timeout);
    if (!m) {
        return NULL;
    }
    m->args = args;
    m->args_len = args_len;
    m->n = n;
    return s_start(m);
}

zx_map_t *zx_map_new_gen(zx_executor_t *ex, const char *fn, zx_map_gen_fn *next, void *arg,
                         size_t chunksize, double timeout)
{
    if (!next) {
        zx__set_last_error(ZX_EINVAL);
        return NULL;
    }
    zx_map_t *m = s_new(ex, fn, chunksize, timeout);
    if (!m) {
        return NULL;
    }
    m->gen = next;
    m->gen_arg = arg;
    return s_start(m);
}

/* ---- iteration ------------------------------------------------------------ */

/* Cancels and drops every task in the window. */
static void s_cancel_window(zx_map_t *m)
{
    while (m->count) {
        s_slot_t *s = &m->ring[m->head];
        zx_future_cancel(s->f);
        zx_future_unref(&s->f);
        m->head = (m->head + 1) % m->cap;
        m->count--;
        m->bytes -= s->bytes;
    }
}

/* Stops the map with code; later calls return it again. */
static int s_stop(zx_map_t *m, int code)
{
    m->final = code;
    s_input_stop(m, 0);
    s_cancel_window(m);
    zx_future_unref(&m->cur);
    m->chunk_left = 0;
    return code;
}

/* Reads a big-endian unsigned of n bytes. */
static uint32_t s_be(const uint8_t *p, int n)
{
    uint32_t v = 0;
    for (int i = 0; i < n; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

/* The encoded length of the scalar (number, nil, bool, short string) at p,
   0 for anything else or past left. The chunk passed zxp_mp_check whole
   in s_chunk_open; this spares a second walk over each small value (what
   small tasks return), the rest is still walked for its length. */
static long s_scalar_len(const uint8_t *p, size_t left)
{
    uint8_t b = p[0];
    size_t n = 0;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
        n = 1;
    } else if ((b & 0xe0) == 0xa0) {
        n = 1 + (size_t)(b & 0x1f);
    } else if (b == 0xcc || b == 0xd0) {
        n = 2;
    } else if (b == 0xcd || b == 0xd1) {
        n = 3;
    } else if (b == 0xce || b == 0xd2 || b == 0xca) {
        n = 5;
    } else if (b == 0xcf || b == 0xd3 || b == 0xcb) {
        n = 9;
    }
    return n <= left ? (long)n : 0;
}

/* Yields the next [ok, value] pair of the current chunk result. */
static int s_chunk_next(zx_map_t *m, const void **value, size_t *value_len)
{
    const uint8_t *p = m->chunk_p;
    size_t left = (size_t)(m->chunk_end - p);
    if (left < 3 || p[0] != 0x92 || (p[1] != 0xc2 && p[1] != 0xc3)) {
        s_err_code(m, ZX_EPROTO, "ProtocolError");
        return s_stop(m, ZX_EPROTO);
    }
    bool ok = p[1] == 0xc3;
    p += 2;
    left -= 2;
    long vlen = s_scalar_len(p, left);
    if (vlen == 0) {
        vlen = zxp_mp_check(p, left, ZXP_MAX_DEPTH);
    }
    if (vlen <= 0) {
        s_err_code(m, ZX_EPROTO, "ProtocolError");
        return s_stop(m, ZX_EPROTO);
    }
    m->chunk_p = p + vlen;
    m->chunk_left--;
    if (ok) {
        if (value) {
            *value = p;
        }
        if (value_len) {
            *value_len = (size_t)vlen;
        }
        return ZX_OK;
    }
    /* [type, message, traceback]: decode bounded and copy the strings */
    msgpack_zone zone;
    msgpack_object o;
    msgpack_zone_init(&zone, 256);
    zx_error_t e = {ZX_ERAISED, "Error", "", "", m->cur_node, m->cur_pid};
    char *f3[3] = {NULL, NULL, NULL};
    if (zxp_mp_unpack(p, (size_t)vlen, &zone, &o) == 0 && o.type == MSGPACK_OBJECT_ARRAY &&
        o.via.array.size >= 2) {
        for (uint32_t i = 0; i < 3 && i < o.via.array.size; i++) {
            const msgpack_object *s = &o.via.array.ptr[i];
            if (s->type == MSGPACK_OBJECT_STR) {
                f3[i] = strndup(s->via.str.ptr, s->via.str.size);
            }
        }
    }
    msgpack_zone_destroy(&zone);
    if (f3[0] && f3[1]) {
        e.type = f3[0];
        e.message = f3[1];
        e.traceback = f3[2] ? f3[2] : "";
    } else {
        e.code = ZX_EPROTO;
        e.type = "ProtocolError";
        e.message = "malformed error in a chunk result";
    }
    s_err_set(m, &e);
    free(f3[0]);
    free(f3[1]);
    free(f3[2]);
    return s_stop(m, ZX_ERAISED);
}

/* Starts reading a chunk result of count elements; validates its header. */
static int s_chunk_open(zx_map_t *m, const void *v, size_t len, size_t count, const void **value,
                        size_t *value_len)
{
    const uint8_t *p = v;
    uint32_t size = 0;
    int hdr = 0;
    if (len >= 1 && p[0] >= 0x90 && p[0] <= 0x9f) {
        size = p[0] & 0x0f;
        hdr = 1;
    } else if (len >= 3 && p[0] == 0xdc) {
        size = s_be(p + 1, 2);
        hdr = 3;
    } else if (len >= 5 && p[0] == 0xdd) {
        size = s_be(p + 1, 4);
        hdr = 5;
    }
    /* the whole result must be one bounded value holding exactly count pairs */
    if (!hdr || size != count || zxp_mp_check(v, len, ZXP_MAX_DEPTH) != (long)len) {
        s_err_code(m, ZX_EPROTO, "ProtocolError");
        return s_stop(m, ZX_EPROTO);
    }
    m->chunk_p = p + hdr;
    m->chunk_end = p + len;
    m->chunk_left = size;
    zx__future_origin(m->cur, &m->cur_node, &m->cur_pid);
    return s_chunk_next(m, value, value_len);
}

int zx_map_next(zx_map_t *m, const void **value, size_t *value_len)
{
    if (!m) {
        return ZX_EINVAL;
    }
    if (m->final) {
        return m->final;
    }
    if (m->chunk_left > 0) {
        return s_chunk_next(m, value, value_len);
    }
    zx_future_unref(&m->cur); /* the previous value's bytes go with it */
    if (m->count == 0) {
        if (m->input_error) {
            s_err_code(m, m->input_error, "MapError");
            return s_stop(m, m->input_error);
        }
        return s_stop(m, ZX_EEND);
    }
    s_slot_t *s = &m->ring[m->head];
    double left = ZX_FOREVER;
    if (m->deadline.tv_sec >= 0) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        left = (double)(m->deadline.tv_sec - now.tv_sec) +
               (double)(m->deadline.tv_nsec - now.tv_nsec) / 1e9;
        if (left < 0) {
            left = 0;
        }
    }
    const void *v = NULL;
    size_t vlen = 0;
    int rc = zx_future_result(s->f, left, &v, &vlen);
    if (rc == ZX_ETIMEOUT) {
        return s_stop(m, ZX_ETIMEOUT);
    }
    /* take the slot out of the window and refill behind it */
    m->cur = s->f;
    s->f = NULL;
    bool chunk = s->chunk;
    size_t count = s->count;
    m->head = (m->head + 1) % m->cap;
    m->count--;
    m->bytes -= s->bytes;
    if (rc != ZX_OK) {
        const zx_error_t *e = zx_future_exception(m->cur, 0);
        if (e) {
            s_err_set(m, e);
        }
        return s_stop(m, rc);
    }
    s_fill(m);
    if (chunk) {
        return s_chunk_open(m, v, vlen, count, value, value_len);
    }
    if (value) {
        *value = v;
    }
    if (value_len) {
        *value_len = vlen;
    }
    return ZX_OK;
}

const zx_error_t *zx_map_exception(zx_map_t *m)
{
    if (!m) {
        return NULL;
    }
    if (m->final == ZX_ETIMEOUT) {
        return &s_timeout_error;
    }
    return m->has_err ? &m->err : NULL;
}

void zx_map_destroy(zx_map_t **m_p)
{
    if (!m_p || !*m_p) {
        return;
    }
    zx_map_t *m = *m_p;
    *m_p = NULL;
    s_cancel_window(m);
    zx_future_unref(&m->cur);
    s_err_clear(m);
    msgpack_sbuffer_destroy(&m->pack);
    free(m->ring);
    free(m->fn);
    free(m);
}
