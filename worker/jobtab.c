/*  jobtab.c - the worker's jobs by (session, seq): open addressing with
    linear probing and backward-shift deletion, the job pointers themselves
    in the slots. It replaces a zhashx, which allocated an item per insert,
    hashed the 24-byte key three times per task with FNV-1a (lookup, insert,
    delete) and called through function pointers: about 15% of the worker
    in bench A (perf). Load stays at most 1/2. */
#include "zx_worker_int.h"

#include <stdlib.h>
#include <string.h>

static uint64_t s_word(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Sessions are random, seqs count up: one word of the session and the seq
   (big-endian in the key), mixed so that sequential seqs spread over the
   low bits. (A multiply alone carries differences only upwards: seqs read
   as little-endian words vary in their top byte and all met in one slot.) */
static size_t s_home(const zxw_jobtab_t *t, const uint8_t *key)
{
    /* written out, so the compiler makes it one load and a byte swap (the
       loop it replaces was 40 instructions, and s_home runs 3-4 times a
       task) */
    const uint8_t *p = key + ZXP_ID_LEN;
    uint64_t seq = (uint64_t)p[0] << 56 | (uint64_t)p[1] << 48 | (uint64_t)p[2] << 40 |
                   (uint64_t)p[3] << 32 | (uint64_t)p[4] << 24 | (uint64_t)p[5] << 16 |
                   (uint64_t)p[6] << 8 | (uint64_t)p[7];
    uint64_t h = (s_word(key) ^ seq) * 0x9E3779B97F4A7C15ull;
    return (size_t)(h ^ (h >> 29)) & t->mask;
}

int zxw_jobtab_init(zxw_jobtab_t *t)
{
    t->slots = calloc(64, sizeof *t->slots);
    t->mask = 63;
    t->count = 0;
    return t->slots ? 0 : -1;
}

void zxw_jobtab_fini(zxw_jobtab_t *t)
{
    free(t->slots);
    memset(t, 0, sizeof *t);
}

static size_t s_find(const zxw_jobtab_t *t, const uint8_t *key)
{
    for (size_t i = s_home(t, key);; i = (i + 1) & t->mask) {
        zxw_job_t *job = t->slots[i];
        if (!job) {
            return SIZE_MAX;
        }
        if (memcmp(job->key, key, ZXW_KEY_LEN) == 0) {
            return i;
        }
    }
}

zxw_job_t *zxw_jobtab_get(const zxw_jobtab_t *t, const uint8_t *key)
{
    size_t i = s_find(t, key);
    return i == SIZE_MAX ? NULL : t->slots[i];
}

static void s_insert(zxw_jobtab_t *t, zxw_job_t *job)
{
    size_t i = s_home(t, job->key);
    while (t->slots[i]) {
        i = (i + 1) & t->mask;
    }
    t->slots[i] = job;
    t->count++;
}

int zxw_jobtab_put(zxw_jobtab_t *t, zxw_job_t *job)
{
    if ((t->count + 1) * 2 > t->mask + 1) {
        size_t cap = (t->mask + 1) * 2;
        zxw_jobtab_t bigger = {calloc(cap, sizeof *t->slots), cap - 1, 0};
        if (!bigger.slots) {
            return -1;
        }
        for (size_t i = 0; i <= t->mask; i++) {
            if (t->slots[i]) {
                s_insert(&bigger, t->slots[i]);
            }
        }
        free(t->slots);
        *t = bigger;
    }
    s_insert(t, job);
    return 0;
}

void zxw_jobtab_del(zxw_jobtab_t *t, const uint8_t *key)
{
    size_t i = s_find(t, key);
    if (i == SIZE_MAX) {
        return;
    }
    /* backward shift: pull later entries of the run into the hole unless
       their home lies cyclically in (hole, j] */
    for (size_t j = (i + 1) & t->mask; t->slots[j]; j = (j + 1) & t->mask) {
        size_t h = s_home(t, t->slots[j]->key);
        bool stays = i <= j ? (h > i && h <= j) : (h > i || h <= j);
        if (!stays) {
            t->slots[i] = t->slots[j];
            i = j;
        }
    }
    t->slots[i] = NULL;
    t->count--;
}

zxw_job_t *zxw_jobtab_next(const zxw_jobtab_t *t, size_t *pos)
{
    for (size_t i = *pos; t->slots && i <= t->mask; i++) {
        if (t->slots[i]) {
            *pos = i + 1;
            return t->slots[i];
        }
    }
    *pos = t->mask + 1;
    return NULL;
}
