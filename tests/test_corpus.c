/*  test_corpus.c - replays every input of tests/corpus/ (fuzzer seeds and
    every crash scripts/fuzz ever found) through every decoder: zxp_decode
    for each role, zxp_mp_check + zxp_mp_unpack, the HMAC envelope check and
    certificate parsing. The harness is the fuzzers' own (fuzz_harness.h),
    so a crash found by fuzzing stays fixed in the normal test run. */
#include "fuzz/fuzz_harness.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <stdlib.h>
#include <sys/stat.h>

TestSuite(corpus, .timeout = 120);

typedef int (*s_entry_fn)(const uint8_t *, size_t);

static size_t s_replay_dir(const char *dir, s_entry_fn *fns, size_t nfns)
{
    size_t n = 0;
    DIR *d = opendir(dir);
    if (!d) {
        return 0;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        char path[8192];
        snprintf(path, sizeof path, "%.4000s/%.255s", dir, e->d_name);
        struct stat st;
        if (e->d_name[0] == '.' || stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
            continue;
        }
        FILE *f = fopen(path, "rb");
        cr_assert(f, "%s", path);
        uint8_t *buf = malloc((size_t)st.st_size + 1);
        size_t len = fread(buf, 1, (size_t)st.st_size, f);
        fclose(f);
        for (size_t i = 0; i < nfns; i++) {
            /* every input through every decoder; also with the role or mode
               byte varied, so a frame list meets each role */
            for (int b = 0; b < 4 && len > 0; b++) {
                uint8_t save = buf[0];
                buf[0] = (uint8_t)(save + b);
                fns[i](buf, len);
                buf[0] = save;
            }
            fns[i](buf, len);
        }
        free(buf);
        n++;
    }
    closedir(d);
    return n;
}

Test(corpus, every_saved_input_goes_through_every_decoder_without_a_crash)
{
    const char *src = getenv("ZEXEC_SOURCE_DIR");
    cr_assert(src, "ZEXEC_SOURCE_DIR is set by CTest");
    s_entry_fn fns[] = {zxf_decode, zxf_msgpack, zxf_envelope, zxf_cert};
    const char *dirs[] = {"decode", "msgpack", "envelope", "cert"};
    size_t total = 0;
    for (size_t i = 0; i < 4; i++) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/tests/corpus/%s", src, dirs[i]);
        size_t n = s_replay_dir(dir, fns, 4);
        cr_assert_gt(n, 0, "%s holds inputs", dir);
        total += n;
    }
    cr_log_info("replayed %zu inputs through 4 decoders", total);
}

Test(corpus, valid_seed_messages_decode_for_their_role)
{
    /* the seeds are only useful if they reach deep: each decode seed that
       is named after a command must decode */
    const char *src = getenv("ZEXEC_SOURCE_DIR");
    cr_assert(src);
    const char *names[] = {"hello", "submit", "ready", "task", "wresult", "result", "welcome"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/tests/corpus/decode/seed-%s", src, names[i]);
        FILE *f = fopen(path, "rb");
        cr_assert(f, "%s", path);
        uint8_t buf[4096];
        size_t len = fread(buf, 1, sizeof buf, f);
        fclose(f);
        zmsg_t *m = zxf_frames(buf + 1, len - 1);
        zxp_in_t in;
        zxp_in_init(&in);
        cr_assert_eq(zxp_decode(&in, &m, 1 + buf[0] % 4), 0, "%s: %s", names[i],
                     in.reason ? in.reason : "");
        zxp_in_fini(&in);
    }
}
