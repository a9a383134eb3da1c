/*  test_jobtab.c - the worker's job table (worker/jobtab.c) against a
    reference: random puts, gets and deletes over two sessions, through
    growth and wrap-around of probe runs, and iteration that sees every job
    once. */
#include "zx_worker_int.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

enum { N = 20000 };
static zxw_job_t s_jobs[N];
static bool s_in[N];

static void s_key(uint8_t *key, int session, uint64_t seq)
{
    memset(key, 0, ZXW_KEY_LEN);
    memset(key, 0x40 + session, ZXP_ID_LEN);
    for (int i = 0; i < 8; i++) {
        key[ZXP_ID_LEN + i] = (uint8_t)(seq >> (56 - 8 * i));
    }
}

Test(jobtab, random_operations_match_a_reference, .timeout = 30)
{
    zxw_jobtab_t t;
    cr_assert_eq(zxw_jobtab_init(&t), 0);
    for (int i = 0; i < N; i++) {
        s_key(s_jobs[i].key, i % 2, (uint64_t)(i / 2 + 1)); /* two sessions, seqs 1.. */
        s_in[i] = false;
    }
    srand(11);
    size_t live = 0;
    for (long step = 0; step < 400000; step++) {
        int i = rand() % N;
        int op = rand() % 3;
        if (op == 0 && !s_in[i]) {
            cr_assert_eq(zxw_jobtab_put(&t, &s_jobs[i]), 0);
            s_in[i] = true;
            live++;
        } else if (op == 1) {
            zxw_jobtab_del(&t, s_jobs[i].key);
            live -= s_in[i];
            s_in[i] = false;
        }
        /* a get of any key: present exactly when the reference says so */
        int k = rand() % N;
        cr_assert_eq(zxw_jobtab_get(&t, s_jobs[k].key), s_in[k] ? &s_jobs[k] : NULL,
                     "step %ld: job %d", step, k);
        cr_assert_eq(t.count, live);
    }
    /* a key never put (third session) is absent */
    uint8_t other[ZXW_KEY_LEN];
    s_key(other, 2, 5);
    cr_assert_null(zxw_jobtab_get(&t, other));
    zxw_jobtab_del(&t, other);
    cr_assert_eq(t.count, live);
    /* iteration: each live job once */
    static bool seen[N];
    size_t n = 0, pos = 0;
    for (zxw_job_t *job; (job = zxw_jobtab_next(&t, &pos));) {
        long i = job - s_jobs;
        cr_assert(i >= 0 && i < N && s_in[i], "iterated a job not in the table");
        cr_assert_not(seen[i], "job %ld iterated twice", i);
        seen[i] = true;
        n++;
    }
    cr_assert_eq(n, live);
    zxw_jobtab_fini(&t);
    cr_assert_null(zxw_jobtab_next(&t, &(size_t){0}), "a finished table iterates nothing");
}

Test(jobtab, sequential_seqs_of_one_session_spread_over_the_slots, .timeout = 30)
{
    /* one client's seqs count up: their keys must not pile into one probe
       run (a hash that saw only the seq's top byte put all of them in one,
       and every lookup walked it) */
    zxw_jobtab_t t;
    cr_assert_eq(zxw_jobtab_init(&t), 0);
    for (int i = 0; i < 4096; i++) {
        s_key(s_jobs[i].key, 0, (uint64_t)i + 1);
        cr_assert_eq(zxw_jobtab_put(&t, &s_jobs[i]), 0);
    }
    size_t run = 0, longest = 0;
    for (size_t i = 0; i <= t.mask; i++) {
        run = t.slots[i] ? run + 1 : 0;
        longest = run > longest ? run : longest;
    }
    cr_assert_lt(longest, 64, "a probe run of %zu slots over %zu", longest, t.mask + 1);
    zxw_jobtab_fini(&t);
}
