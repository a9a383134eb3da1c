/*  queue.c - the broker's scheduling structures: tasks, the (session, seq)
    table, interned function names, the priority/fair/FIFO queues, the lists
    of workers with free credit, and deadline FIFOs for timers.

    The benchmark asks that a scheduling decision cost the same with 1M
    queued tasks as with 10k, and with 200 idle workers as with 1, and that a
    queued task cost at most 300 bytes beyond its payload. So:

    - Task: one 112-byte struct from a slab (chunks of 1024, free list), no
      per-task malloc. The function is a pointer to an interned name; the
      session is the client record's; links are intrusive. Arguments up to
      16 bytes live inside it, up to 1 KiB in a bare heap copy, and bigger
      ones stay in their zframe_t (shared with ZeroMQ, never copied): a
      zframe_t alone costs ~370 bytes with Debian's czmq.
    - Task table: an intrusive chained hash keyed by (client record, seq),
      power-of-two buckets grown at load 1 (8-16 bytes per task).
    - Queue: one per (function, requested pool kind ANY/THREAD/PROCESS).
      A 256-bit bitmap says which priority levels are non-empty; per level a
      ring of per-client FIFOs (zxb_fifo_t, intrusive doubly linked lists of
      tasks) holds the clients with work at that level, and cur[level] is the
      client whose turn it is. peek = highest set bit (4 words) -> cur -> head;
      pop advances cur to the next client (fair turns), and a FIFO that empties
      leaves the ring (clearing the bit if the level empties). A client finds
      its FIFO through its own hash of (function id, pool, level), with a
      one-entry cache for bursts. The rings come in blocks of 16 levels
      behind a 16-entry table, a block made when one of its levels is first
      used (freed with the queue): a queue used at one priority costs ~0.6 KB
      instead of 6 KB, so distinct function names are cheap (a client is
      charged for each one it has tasks queued under: ZXB_FIFO_CHARGE), and
      a ring is still one indexed load away. A client's empty FIFOs are
      swept when they outnumber its non-empty ones (plus 64): amortized O(1)
      per FIFO made, and its table stays in proportion to what it has queued
      whatever names it used.
    - Free lists: per function and pool kind (thread/process), an intrusive
      list of the workers that offer it there and have free credit for it
      (credit depends on the function: placement.c), and a second list of
      those with an idle slot. A worker joins or leaves the lists of its
      functions only when its credit or idleness for a pool changes (O(its
      function count)); a new task looks at the list heads of its function,
      idle ones first, so idle workers elsewhere cost nothing.
      A worker with free credit looks only at the queues of the functions it
      offers (two per function and pool: the pool's own and ANY), choosing
      the highest priority head, ties by the oldest arrival.
    - Timers (no-worker grace, held results): FIFOs of (task, generation,
      deadline) in deadline order; a task freed meanwhile bumped its
      generation, so its entry is skipped when it comes up.
*/
#include "zxb.h"

#include <stdlib.h>
#include <string.h>

#define S_SLAB 1024
#define S_LEVELS 256
#define S_BLOCK 16 /* levels per block of rings */
#define S_NBLOCKS (S_LEVELS / S_BLOCK)

struct zxb_fifo {
    zx__list_t tasks; /* zxb_task_t, oldest first */
    zx__link_t rlink; /* in the queue's ring of non-empty FIFOs at this level */
    zxb_client_t *client;
    zxb_queue_t *queue;
    uint64_t key;
    uint8_t level;
    bool in_ring;
};

typedef struct {
    zx__list_t ring[S_BLOCK]; /* zxb_fifo_t */
} s_block_t;

/* The ring of a level is a list whose head is the FIFO whose turn it is:
   a turn moves the head to the tail, a newcomer joins at the tail (just
   before the head, so it waits one round). */
struct zxb_queue {
    zxb_fn_t *fn;
    uint8_t pool_req;
    uint64_t bits[S_LEVELS / 64];
    uint64_t depth;
    s_block_t *blocks[S_NBLOCKS]; /* NULL until one of its levels is used */
};

/* The ring of level: only for a level whose block exists (any level that
   has or had a FIFO in it). */
static inline zx__list_t *s_ring(const zxb_queue_t *q, unsigned level)
{
    return &q->blocks[level / S_BLOCK]->ring[level % S_BLOCK];
}

static zxb_fifo_t *s_fifo_of(zx__link_t *k)
{
    return k ? ZX__CONTAINER(k, zxb_fifo_t, rlink) : NULL;
}

struct zxb_sched {
    /* slab */
    zxb_task_t **chunks;
    size_t nchunks, capchunks;
    zx__list_t free_tasks; /* through link */
    /* table */
    zxb_task_t **buckets;
    size_t nbuckets, count;
    /* functions */
    zhashx_t *fns;
    zxb_fn_t *last_fn; /* the last interned: most tasks in a row are of one function */
    uint32_t next_fn_id;
    /* arrival stamps */
    int64_t start_ms;
    uint64_t counter;
};

zxb_sched_t *zxb_sched_new(void)
{
    zxb_sched_t *self = calloc(1, sizeof *self);
    if (!self) {
        return NULL;
    }
    self->nbuckets = 1024;
    self->buckets = calloc(self->nbuckets, sizeof *self->buckets);
    self->fns = zhashx_new();
    self->start_ms = zclock_mono();
    self->next_fn_id = 1;
    if (!self->buckets || !self->fns) {
        zxb_sched_destroy(&self);
    }
    return self;
}

static void s_queue_destroy(zxb_queue_t **q_p)
{
    zxb_queue_t *q = *q_p;
    if (q) {
        for (int i = 0; i < S_NBLOCKS; i++) {
            free(q->blocks[i]);
        }
    }
    free(q);
    *q_p = NULL;
}

static void s_fn_destroy(zxb_fn_t **fn_p)
{
    zxb_fn_t *fn = *fn_p;
    if (fn) {
        for (int i = 0; i < 3; i++) {
            s_queue_destroy(&fn->q[i]);
        }
        free(fn->name);
        free(fn);
        *fn_p = NULL;
    }
}

static void s_fn_destructor(void **item)
{
    s_fn_destroy((zxb_fn_t **)item);
}

void zxb_sched_destroy(zxb_sched_t **self_p)
{
    zxb_sched_t *self = *self_p;
    if (!self) {
        return;
    }
    /* tasks still alive own payloads */
    for (size_t i = 0; i < self->nbuckets && self->buckets; i++) {
        for (zxb_task_t *t = self->buckets[i]; t; t = t->hnext) {
            zxb_task_payload_clear(t);
        }
    }
    for (size_t i = 0; i < self->nchunks; i++) {
        free(self->chunks[i]);
    }
    free(self->chunks);
    free(self->buckets);
    if (self->fns) {
        zhashx_set_destructor(self->fns, s_fn_destructor);
        zhashx_destroy(&self->fns);
    }
    free(self);
    *self_p = NULL;
}

/* ---- tasks ----------------------------------------------------------------------- */

zxb_task_t *zxb_task_alloc(zxb_sched_t *self)
{
    if (zx__list_empty(&self->free_tasks)) {
        if (self->nchunks == self->capchunks) {
            size_t cap = self->capchunks ? self->capchunks * 2 : 16;
            zxb_task_t **c = realloc(self->chunks, cap * sizeof *c);
            if (!c) {
                return NULL;
            }
            self->chunks = c;
            self->capchunks = cap;
        }
        zxb_task_t *chunk = calloc(S_SLAB, sizeof *chunk);
        if (!chunk) {
            return NULL;
        }
        self->chunks[self->nchunks++] = chunk;
        for (size_t i = 0; i < S_SLAB; i++) {
            zx__list_push_back(&self->free_tasks, &chunk[i].link);
        }
    }
    zxb_task_t *t = zxb_task_of(zx__list_pop_front(&self->free_tasks));
    uint32_t gen = t->gen;
    memset(t, 0, sizeof *t);
    t->gen = gen;
    return t;
}

void zxb_task_payload_clear(zxb_task_t *t)
{
    if (t->pl_kind == ZXB_PL_FRAME) {
        zframe_destroy(&t->pl.frame);
    } else if (t->pl_kind == ZXB_PL_HEAP) {
        free(t->pl.heap);
    }
    t->pl_kind = ZXB_PL_NONE;
    t->size = 0;
}

/* Bytes below ZXB_PL_FRAME_MIN, copied: inside the task or on the heap. */
static void s_payload_copy(zxb_task_t *t, const void *data, size_t size)
{
    t->size = (uint32_t)size;
    if (size <= ZXB_PL_INLINE_MAX) {
        if (size) {
            memcpy(t->pl.inl, data, size);
        }
        t->pl_kind = ZXB_PL_INLINE;
    } else {
        t->pl.heap = malloc(size);
        assert(t->pl.heap); /* a daemon may abort on out of memory */
        memcpy(t->pl.heap, data, size);
        t->pl_kind = ZXB_PL_HEAP;
    }
}

void zxb_task_payload_set_mem(zxb_task_t *t, const void *data, size_t size)
{
    zxb_task_payload_clear(t);
    if (size == 0 && !data) {
        return;
    }
    if (size >= ZXB_PL_FRAME_MIN) {
        zframe_t *f = zframe_new(data, size);
        assert(f); /* a daemon may abort on out of memory */
        zxb_task_payload_set(t, &f);
        return;
    }
    s_payload_copy(t, data, size);
}

void zxb_task_payload_set(zxb_task_t *t, zframe_t **frame_p)
{
    zxb_task_payload_clear(t);
    zframe_t *f = frame_p ? *frame_p : NULL;
    if (!f) {
        return;
    }
    *frame_p = NULL;
    size_t size = zframe_size(f);
    if (size >= ZXB_PL_FRAME_MIN) {
        t->size = (uint32_t)size;
        t->pl.frame = f;
        t->pl_kind = ZXB_PL_FRAME;
        return;
    }
    s_payload_copy(t, zframe_data(f), size);
    zframe_destroy(&f);
}

void zxb_task_payload_put(zxb_task_t *t, zxp_out_t *out)
{
    switch (t->pl_kind) {
    case ZXB_PL_INLINE: zxp_out_payload_mem(out, t->pl.inl, t->size); break;
    case ZXB_PL_HEAP: zxp_out_payload_mem(out, t->pl.heap, t->size); break;
    case ZXB_PL_FRAME: zxp_out_payload_share(out, t->pl.frame); break;
    default: zxp_out_payload(out, NULL); break;
    }
}

zframe_t *zxb_task_payload_take(zxb_task_t *t)
{
    zframe_t *f = NULL;
    switch (t->pl_kind) {
    case ZXB_PL_INLINE: f = zframe_new(t->pl.inl, t->size); break;
    case ZXB_PL_HEAP: f = zframe_new(t->pl.heap, t->size); break;
    case ZXB_PL_FRAME:
        f = t->pl.frame;
        t->pl.frame = NULL;
        t->pl_kind = ZXB_PL_NONE;
        break;
    default: break;
    }
    zxb_task_payload_clear(t);
    return f;
}

void zxb_task_free(zxb_sched_t *self, zxb_task_t *task)
{
    zxb_task_payload_clear(task);
    task->state = ZXB_T_FREE;
    task->gen++;
    zx__list_push_front(&self->free_tasks, &task->link);
}

/* Runs of S_RUN consecutive seqs of a client land in consecutive buckets
   at a hashed offset. Clients number tasks upwards and the slab hands out
   tasks in arrival order, so the lookups of a stream (SUBMIT, WSTARTED,
   WRESULT come in seq order) walk the bucket array and the tasks in order
   instead of missing the cache and the TLB twice per lookup: at 1M queued
   tasks that was most of the broker's time per task. Distinct seqs of a run
   never share a bucket; runs are spread like single keys, so chains stay
   as short as with a per-seq hash. */
#define S_RUN 512

static size_t s_hash(const zxb_client_t *client, uint64_t seq)
{
    uint64_t h = (uint64_t)(uintptr_t)client * 0x9E3779B97F4A7C15ull;
    h ^= (seq / S_RUN) * 0xC2B2AE3D27D4EB4Full;
    h ^= h >> 31;
    h *= 0x94D049BB133111EBull;
    h ^= h >> 29;
    return (size_t)(h + seq % S_RUN);
}

/* Doubling rehash: amortized O(1) per insert. */
static void s_table_grow(zxb_sched_t *self)
{
    size_t n = self->nbuckets * 2;
    zxb_task_t **b = calloc(n, sizeof *b);
    if (!b) {
        return; /* longer chains, still correct */
    }
    for (size_t i = 0; i < self->nbuckets; i++) {
        zxb_task_t *t = self->buckets[i];
        while (t) {
            zxb_task_t *next = t->hnext;
            size_t j = s_hash(t->client, t->seq) & (n - 1);
            t->hnext = b[j];
            b[j] = t;
            t = next;
        }
    }
    free(self->buckets);
    self->buckets = b;
    self->nbuckets = n;
}

void zxb_task_index(zxb_sched_t *self, zxb_task_t *task)
{
    if (self->count >= self->nbuckets) {
        s_table_grow(self);
    }
    size_t i = s_hash(task->client, task->seq) & (self->nbuckets - 1);
    task->hnext = self->buckets[i];
    self->buckets[i] = task;
    self->count++;
}

void zxb_task_unindex(zxb_sched_t *self, zxb_task_t *task)
{
    size_t i = s_hash(task->client, task->seq) & (self->nbuckets - 1);
    for (zxb_task_t **pp = &self->buckets[i]; *pp; pp = &(*pp)->hnext) {
        if (*pp == task) {
            *pp = task->hnext;
            task->hnext = NULL;
            self->count--;
            return;
        }
    }
}

zxb_task_t *zxb_task_find(zxb_sched_t *self, const zxb_client_t *client, uint64_t seq)
{
    size_t i = s_hash(client, seq) & (self->nbuckets - 1);
    for (zxb_task_t *t = self->buckets[i]; t; t = t->hnext) {
        if (t->client == client && t->seq == seq) {
            return t;
        }
    }
    return NULL;
}

size_t zxb_task_count(zxb_sched_t *self)
{
    return self->count;
}

uint64_t zxb_arrival_now(zxb_sched_t *self, int64_t now_ms)
{
    uint64_t ms = (uint64_t)(now_ms - self->start_ms);
    return (ms << 20) | (self->counter++ & 0xFFFFF);
}

int64_t zxb_arrival_ms(uint64_t arrival)
{
    return (int64_t)(arrival >> 20);
}

/* ---- functions ------------------------------------------------------------------- */

zxb_fn_t *zxb_fn_intern(zxb_sched_t *self, const char *name, size_t len)
{
    zxb_fn_t *fn = zxb_fn_find(self, name, len);
    if (fn) {
        self->last_fn = fn;
        return fn;
    }
    if (len == 0 || len > ZXP_MAX_NAME || !(fn = calloc(1, sizeof *fn))) {
        return NULL;
    }
    fn->name = malloc(len + 1);
    fn->len = (uint32_t)len;
    fn->id = self->next_fn_id++;
    if (!fn->name) {
        free(fn);
        return NULL;
    }
    memcpy(fn->name, name, len);
    fn->name[len] = 0;
    zhashx_insert(self->fns, fn->name, fn);
    self->last_fn = fn;
    return fn;
}

zxb_fn_t *zxb_fn_find(zxb_sched_t *self, const char *name, size_t len)
{
    if (len == 0 || len > ZXP_MAX_NAME) {
        return NULL;
    }
    zxb_fn_t *last = self->last_fn;
    if (last && last->len == len && memcmp(last->name, name, len) == 0) {
        return last;
    }
    char key[ZXP_MAX_NAME + 1];
    memcpy(key, name, len);
    key[len] = 0;
    return zhashx_lookup(self->fns, key);
}

void zxb_fn_gc(zxb_sched_t *self)
{
    if (zhashx_size(self->fns) < 4096) {
        return;
    }
    self->last_fn = NULL; /* it may be freed below */
    zlist_t *dead = zlist_new();
    for (zxb_fn_t *fn = zhashx_first(self->fns); fn; fn = zhashx_next(self->fns)) {
        if (fn->refs == 0 && !fn->orphan_listed) {
            zlist_append(dead, fn);
        }
    }
    for (zxb_fn_t *fn = zlist_first(dead); fn; fn = zlist_next(dead)) {
        zhashx_delete(self->fns, fn->name);
        s_fn_destroy(&fn);
    }
    zlist_destroy(&dead);
}

zxb_fn_t *zxb_fn_first(zxb_sched_t *self)
{
    return zhashx_first(self->fns);
}

zxb_fn_t *zxb_fn_next(zxb_sched_t *self)
{
    return zhashx_next(self->fns);
}

/* ---- queues ---------------------------------------------------------------------- */

static size_t s_key_hash(const void *key)
{
    uint64_t h = *(const uint64_t *)key * 0x9E3779B97F4A7C15ull;
    return (size_t)(h ^ (h >> 32));
}

static int s_key_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void s_fifo_free(void **item)
{
    free(*item);
    *item = NULL;
}

/* Frees the client's empty FIFOs but its cached one (none is in a ring,
   and nothing but the table points at them). */
static void s_fifo_sweep(zxb_client_t *c)
{
    size_t n = 0, cap = zhashx_size(c->fifos) - c->open_fifos;
    zxb_fifo_t **dead = malloc(cap * sizeof *dead);
    if (!dead) {
        return; /* a bigger table, still correct */
    }
    for (zxb_fifo_t *f = zhashx_first(c->fifos); f && n < cap; f = zhashx_next(c->fifos)) {
        if (!f->in_ring && f != c->last_fifo) {
            dead[n++] = f;
        }
    }
    for (size_t i = 0; i < n; i++) {
        zhashx_delete(c->fifos, &dead[i]->key); /* its destructor frees it */
    }
    free(dead);
}

/* A client's FIFO key: (function id, pool, level). */
static uint64_t s_fifo_key(const zxb_fn_t *fn, uint8_t pool_req, uint8_t level)
{
    return ((uint64_t)fn->id << 10) | ((uint64_t)pool_req << 8) | level;
}

/* The client's FIFO of key, if it has one: the one-entry cache, then its table. */
static zxb_fifo_t *s_fifo_find(const zxb_client_t *c, uint64_t key)
{
    if (c->last_fifo && c->last_fifo->key == key) {
        return c->last_fifo;
    }
    return c->fifos ? zhashx_lookup(c->fifos, &key) : NULL;
}

static zxb_fifo_t *s_fifo_get(zxb_client_t *c, zxb_queue_t *q, uint8_t level)
{
    uint64_t key = s_fifo_key(q->fn, q->pool_req, level);
    zxb_fifo_t *f = s_fifo_find(c, key);
    if (!f) {
        if (!c->fifos) {
            c->fifos = zhashx_new();
            zhashx_set_key_hasher(c->fifos, s_key_hash);
            zhashx_set_key_comparator(c->fifos, s_key_cmp);
            zhashx_set_key_duplicator(c->fifos, NULL);
            zhashx_set_key_destructor(c->fifos, NULL);
            zhashx_set_destructor(c->fifos, s_fifo_free);
        } else if (zhashx_size(c->fifos) > 2 * c->open_fifos + 64) {
            s_fifo_sweep(c);
        }
        f = calloc(1, sizeof *f);
        if (!f) {
            return NULL;
        }
        f->key = key;
        f->client = c;
        f->queue = q;
        f->level = level;
        zhashx_insert(c->fifos, &f->key, f);
    }
    c->last_fifo = f;
    return f;
}

bool zxb_queue_opens(zxb_client_t *c, const zxb_fn_t *fn, uint8_t pool_req, int8_t priority)
{
    if (!fn || !fn->q[pool_req]) {
        return true;
    }
    const zxb_fifo_t *f = s_fifo_find(c, s_fifo_key(fn, pool_req, (uint8_t)(priority + 128)));
    return !f || !f->in_ring;
}

static void s_ring_insert(zxb_queue_t *q, zxb_fifo_t *f)
{
    s_block_t **b = &q->blocks[f->level / S_BLOCK];
    if (!*b) {
        *b = calloc(1, sizeof **b);
        assert(*b); /* a daemon may abort on out of memory */
    }
    zx__list_t *ring = &(*b)->ring[f->level % S_BLOCK];
    f->client->open_fifos++;
    if (zx__list_empty(ring)) {
        q->bits[f->level / 64] |= 1ull << (f->level % 64);
    }
    /* at the tail: just before the client whose turn it is (the head), so
       a newcomer waits one round */
    zx__list_push_back(ring, &f->rlink);
    f->in_ring = true;
}

/* f leaves its ring, empty (it stays in its client's table). */
static void s_ring_remove(zxb_queue_t *q, zxb_fifo_t *f)
{
    zx__list_t *ring = s_ring(q, f->level);
    f->client->open_fifos--;
    zx__list_remove(ring, &f->rlink); /* the head's leaving gives the next its turn */
    if (zx__list_empty(ring)) {
        q->bits[f->level / 64] &= ~(1ull << (f->level % 64));
    }
    f->in_ring = false;
}

void zxb_queue_push(zxb_sched_t *self, zxb_task_t *t, bool front)
{
    (void)self;
    zxb_fn_t *fn = t->fn;
    zxb_queue_t *q = fn->q[t->pool_req];
    if (!q) {
        q = calloc(1, sizeof *q);
        assert(q); /* a daemon may abort on out of memory */
        q->fn = fn;
        q->pool_req = t->pool_req;
        fn->q[t->pool_req] = q;
    }
    uint8_t level = (uint8_t)(t->priority + 128);
    zxb_fifo_t *f = s_fifo_get(t->client, q, level);
    assert(f);
    if (front) {
        zx__list_push_front(&f->tasks, &t->link);
    } else {
        zx__list_push_back(&f->tasks, &t->link);
    }
    q->depth++;
    if (!f->in_ring) {
        s_ring_insert(q, f);
    }
    t->state = ZXB_T_QUEUED;
}

static int s_top_level(const zxb_queue_t *q)
{
    for (int i = S_LEVELS / 64 - 1; i >= 0; i--) {
        if (q->bits[i]) {
            return i * 64 + 63 - __builtin_clzll(q->bits[i]);
        }
    }
    return -1;
}

zxb_task_t *zxb_queue_peek(const zxb_queue_t *q)
{
    if (!q || q->depth == 0) {
        return NULL;
    }
    int level = s_top_level(q);
    return level < 0 ? NULL : zxb_task_of(s_fifo_of(s_ring(q, (unsigned)level)->head)->tasks.head);
}

static void s_unlink(zxb_queue_t *q, zxb_fifo_t *f, zxb_task_t *t, bool advance)
{
    zx__list_remove(&f->tasks, &t->link);
    q->depth--;
    zx__list_t *ring = s_ring(q, f->level);
    if (zx__list_empty(&f->tasks)) {
        s_ring_remove(q, f);
    } else if (advance && ring->head == &f->rlink && ring->size > 1) {
        /* its turn is over: the next client's comes */
        zx__list_remove(ring, &f->rlink);
        zx__list_push_back(ring, &f->rlink);
    }
}

zxb_task_t *zxb_queue_pop(zxb_sched_t *self, zxb_queue_t *q)
{
    (void)self;
    if (!q || q->depth == 0) {
        return NULL;
    }
    int level = s_top_level(q);
    zxb_fifo_t *f = s_fifo_of(s_ring(q, (unsigned)level)->head);
    zxb_task_t *t = zxb_task_of(f->tasks.head);
    s_unlink(q, f, t, true);
    return t;
}

void zxb_queue_remove(zxb_sched_t *self, zxb_task_t *t)
{
    (void)self;
    zxb_queue_t *q = t->fn->q[t->pool_req];
    zxb_fifo_t *f = s_fifo_get(t->client, q, (uint8_t)(t->priority + 128));
    assert(f && f->tasks.size > 0);
    s_unlink(q, f, t, false);
}

uint64_t zxb_queue_depth(const zxb_queue_t *q)
{
    return q ? q->depth : 0;
}

void zxb_queue_each(zxb_sched_t *self, zxb_queue_t *q, void (*fn)(zxb_task_t *, void *), void *arg)
{
    (void)self;
    if (!q) {
        return;
    }
    for (int level = S_LEVELS - 1; level >= 0; level--) {
        if (!q->blocks[level / S_BLOCK]) {
            continue;
        }
        zxb_fifo_t *f = s_fifo_of(s_ring(q, (unsigned)level)->head);
        while (f) {
            zxb_fifo_t *nextf = s_fifo_of(f->rlink.next); /* f may leave the ring below */
            zxb_task_t *t = zxb_task_of(f->tasks.head);
            while (t) {
                zxb_task_t *nt = zxb_task_of(t->link.next);
                fn(t, arg);
                t = nt;
            }
            f = nextf;
        }
    }
}

void zxb_client_fifos_drain(zxb_sched_t *self, zxb_client_t *c, void (*fn)(zxb_task_t *, void *),
                            void *arg)
{
    (void)self;
    if (!c->fifos) {
        return;
    }
    for (zxb_fifo_t *f = zhashx_first(c->fifos); f; f = zhashx_next(c->fifos)) {
        /* an empty FIFO's queue may be gone with its function: never touch it */
        while (f->tasks.size > 0) {
            zxb_task_t *t = zxb_task_of(f->tasks.head);
            s_unlink(f->queue, f, t, false);
            fn(t, arg);
        }
    }
    /* all empty now: freed (not during the walk, which deleting would upset) */
    zhashx_purge(c->fifos);
    c->last_fifo = NULL;
}

void zxb_client_fifos_destroy(zxb_client_t *c)
{
    zhashx_destroy(&c->fifos);
    c->last_fifo = NULL;
}

void zxb_client_depths(zxb_client_t *c, void (*fn)(zxb_fn_t *, uint64_t, void *), void *arg)
{
    if (!c->fifos) {
        return;
    }
    for (zxb_fifo_t *f = zhashx_first(c->fifos); f; f = zhashx_next(c->fifos)) {
        if (f->tasks.size > 0) {
            fn(f->queue->fn, f->tasks.size, arg);
        }
    }
}

/* ---- free-credit lists ----------------------------------------------------------- */

void zxb_free_link(zxb_wfn_t *wf, int p)
{
    if (wf->linked[p]) {
        return;
    }
    zx__list_push_back(&wf->fn->free[p], &wf->flink[p]);
    wf->linked[p] = true;
}

void zxb_free_unlink(zxb_wfn_t *wf, int p)
{
    if (!wf->linked[p]) {
        return;
    }
    zx__list_remove(&wf->fn->free[p], &wf->flink[p]);
    wf->linked[p] = false;
}

void zxb_free_rotate(zxb_wfn_t *wf, int p)
{
    if (wf->linked[p] && wf->fn->free[p].tail != &wf->flink[p]) {
        zxb_free_unlink(wf, p);
        zxb_free_link(wf, p);
    }
}

/* ---- idle lists: the same, for workers with a slot that has no task ---------- */

void zxb_idle_link(zxb_wfn_t *wf, int p)
{
    if (wf->ilinked[p]) {
        return;
    }
    zx__list_push_back(&wf->fn->idle[p], &wf->ilink[p]);
    wf->ilinked[p] = true;
}

void zxb_idle_unlink(zxb_wfn_t *wf, int p)
{
    if (!wf->ilinked[p]) {
        return;
    }
    zx__list_remove(&wf->fn->idle[p], &wf->ilink[p]);
    wf->ilinked[p] = false;
}

void zxb_idle_rotate(zxb_wfn_t *wf, int p)
{
    if (wf->ilinked[p] && wf->fn->idle[p].tail != &wf->ilink[p]) {
        zxb_idle_unlink(wf, p);
        zxb_idle_link(wf, p);
    }
}

/* ---- timer FIFOs ------------------------------------------------------------------- */

void zxb_timer_push(zxb_timer_fifo_t *f, zxb_task_t *task, int64_t deadline)
{
    if (f->count == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 64;
        zxb_timer_entry_t *r = malloc(cap * sizeof *r);
        assert(r);
        for (size_t i = 0; i < f->count; i++) {
            r[i] = f->ring[(f->head + i) % f->cap];
        }
        free(f->ring);
        f->ring = r;
        f->cap = cap;
        f->head = 0;
    }
    f->ring[(f->head + f->count) % f->cap] =
        (zxb_timer_entry_t){.task = task, .gen = task->gen, .deadline = deadline};
    f->count++;
}

bool zxb_timer_pop_due(zxb_timer_fifo_t *f, int64_t now, zxb_timer_entry_t *out)
{
    while (f->count > 0) {
        zxb_timer_entry_t *e = &f->ring[f->head];
        bool stale = e->task->gen != e->gen;
        if (!stale && e->deadline > now) {
            return false;
        }
        *out = *e;
        f->head = (f->head + 1) % f->cap;
        f->count--;
        if (!stale) {
            return true;
        }
    }
    return false;
}

void zxb_timer_fini(zxb_timer_fifo_t *f)
{
    free(f->ring);
    memset(f, 0, sizeof *f);
}
