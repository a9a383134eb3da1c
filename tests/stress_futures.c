/*  stress_futures.c - many user threads submitting, waiting, cancelling,
    iterating as_completed and mapping on shared futures of local executors.
    A plain program rather than a criterion test because criterion cannot
    start under ThreadSanitizer (Snaipe/Criterion#274): build with
    -DZEXEC_SANITIZE=thread and run it (CTest does). Exit status 0: pass.

    Checks: every future ends done with exactly one callback; a cancel and a
    start never both happen (tasks that ran == futures that finished); results
    are right; as_completed and wait see every future once. */
#include "zexec.h"
#include "zx_stress.h"
#include "zx_test_fns.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#define THREADS 8
#define ROUNDS 200
#define SHARED 64

static zx_executor_t *s_ex[3];
static zx_future_t *s_shared[SHARED];
static zx_future_t *s_spin[SHARED];
static atomic_int s_callbacks;
static atomic_int s_added; /* callbacks users added to shared futures */

static void s_cb(zx_future_t *f, void *arg)
{
    atomic_fetch_add(&s_callbacks, 1);
}

#define CHECK(cond, what) ZX_STRESS_CHECK("stress_futures", cond, what)

static int s_gen(void *arg, const void **args, size_t *len)
{
    int *state = arg; /* [next, n] */
    static _Thread_local msgpack_sbuffer sb;
    static _Thread_local bool init;
    if (!init) {
        msgpack_sbuffer_init(&sb);
        init = true;
    }
    if (state[0] >= state[1]) {
        msgpack_sbuffer_destroy(&sb);
        init = false;
        return 0;
    }
    zxt_args_int(&sb, 1, state[0]++, 0);
    *args = sb.data;
    *len = sb.size;
    return 1;
}

static void *s_user(void *p)
{
    int id = (int)(intptr_t)p;
    unsigned seed = (unsigned)id * 2654435761u + 1;
    for (int r = 0; r < ROUNDS; r++) {
        zx_future_t *mine[4];
        for (int i = 0; i < 4; i++) {
            mine[i] = zxt_submit_int(s_ex[(r + i) % 2], "square", 1, r + i, 0);
            CHECK(mine[i], "submit");
            zx_future_add_done_callback(mine[i], s_cb, NULL);
        }
        seed = seed * 1103515245u + 12345u;
        zx_future_t *sh = s_shared[seed % SHARED];
        switch ((seed >> 8) % 5) {
        case 0: zx_future_cancel(mine[seed % 4]); break;
        case 1: zx_future_cancel(sh); break;
        case 2: zx_future_result(sh, 0.001, NULL, NULL); break;
        case 3: zx_future_exception(sh, 0); break;
        default:
            atomic_fetch_add(&s_added, 1);
            zx_future_add_done_callback(sh, s_cb, NULL);
            break;
        }
        zx_future_t *all[7] = {mine[0], mine[1], mine[2], mine[3], sh, mine[0], sh};
        zx_as_completed_t *it = zx_as_completed_new(all, 7, 30);
        int yielded = 0;
        while (zx_as_completed_next(it)) {
            yielded++;
        }
        CHECK(zx_as_completed_status(it) == ZX_OK && yielded == 5, "as_completed");
        zx_as_completed_destroy(&it);
        size_t nd = 0;
        CHECK(zx_wait(all, 7, 30, ZX_ALL_COMPLETED, NULL, &nd, NULL, NULL) == ZX_OK && nd == 5,
              "wait");
        for (int i = 0; i < 4; i++) {
            if (!zx_future_cancelled(mine[i])) {
                CHECK(zxt_result_int(mine[i], 0) == (int64_t)(r + i) * (r + i), "result");
            }
            zx_future_unref(&mine[i]);
        }
        if (r % 50 == 0) {
            int state[2] = {0, 300};
            zx_map_t *m = zx_map_new_gen(s_ex[r % 2], "square", s_gen, state, 1 + r % 7, 30);
            CHECK(m, "map");
            const void *v;
            size_t len;
            for (int64_t i = 0; i < 300; i++) {
                CHECK(zx_map_next(m, &v, &len) == ZX_OK && zxt_value_int(v, len) == i * i,
                      "map value");
            }
            CHECK(zx_map_next(m, &v, &len) == ZX_EEND, "map end");
            zx_map_destroy(&m);
        }
    }
    return NULL;
}

int main(void)
{
    s_ex[0] = zx_executor_new_local(3);
    s_ex[1] = zx_executor_new_local(2);
    s_ex[2] = zx_executor_new_local(1);
    for (int i = 0; i < 3; i++) {
        zxt_register_all(s_ex[i]);
    }
    /* The shared futures are "trace" tasks, which count their runs: one that
       was cancelled must never have run. They sit on a one-thread executor
       behind 2 ms tasks, so users' cancels race with their start. */
    for (int i = 0; i < SHARED; i++) {
        s_spin[i] = zxt_submit_int(s_ex[2], "spin_ms", 1, 2, 0);
        s_shared[i] = zxt_submit_int(s_ex[2], "trace", 0, 0, 0);
        zx_future_add_done_callback(s_shared[i], s_cb, NULL);
    }
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        pthread_create(&t[i], NULL, s_user, (void *)(intptr_t)i);
    }
    int failed = 0;
    for (int i = 0; i < THREADS; i++) {
        void *rv;
        pthread_join(t[i], &rv);
        failed |= rv != NULL;
    }
    for (int i = 0; i < 3; i++) {
        zx_executor_shutdown(s_ex[i], true, false);
    }
    int finished = 0, cancelled = 0;
    for (int i = 0; i < SHARED; i++) {
        if (zx_future_cancelled(s_shared[i])) {
            cancelled++;
        } else if (zx_future_state(s_shared[i]) == ZX_FINISHED) {
            finished++;
        } else {
            fprintf(stderr, "stress_futures: shared future %d not done\n", i);
            failed = 1;
        }
    }
    if (atomic_load(&zxt_trace) != finished) {
        fprintf(stderr, "stress_futures: %d trace runs but %d finished futures\n",
                atomic_load(&zxt_trace), finished);
        failed = 1;
    }
    /* each callback exactly once: one per user future, one registered on
       each shared future at start, and those users added */
    int want_cb = THREADS * ROUNDS * 4 + SHARED + atomic_load(&s_added);
    if (atomic_load(&s_callbacks) != want_cb) {
        fprintf(stderr, "stress_futures: %d callbacks, expected %d\n", atomic_load(&s_callbacks),
                want_cb);
        failed = 1;
    }
    for (int i = 0; i < SHARED; i++) {
        zx_future_unref(&s_shared[i]);
        zx_future_unref(&s_spin[i]);
    }
    for (int i = 0; i < 3; i++) {
        zx_executor_destroy(&s_ex[i]);
    }
    printf("stress_futures: %s (%d shared finished, %d cancelled, %d callbacks)\n",
           failed ? "FAILED" : "ok", finished, cancelled, atomic_load(&s_callbacks));
    return failed;
}
