/*  keygen.c - `zexec keygen`: makes CURVE certificate pairs for the broker,
    clients and workers (zcert files: NAME public, NAME_secret secret), and
    shared secrets for the HMAC mode. The work is in common/auth.c; this is
    the command line.
*/
#include "zx_auth.h"
#include "zx_sign.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <string.h>
#include <unistd.h>

int zx__keygen_main(int argc, char **argv);

static void s_usage(FILE *out)
{
    fprintf(out, "usage: zexec keygen DIR NAME [NAME...]\n"
                 "       zexec keygen --secret FILE\n"
                 "\n"
                 "  DIR NAME     write DIR/NAME (public certificate: give it to the other side)\n"
                 "               and DIR/NAME_secret (secret, mode 0600: keep it on this host)\n"
                 "  --secret F   write a new random 256-bit shared secret (64 hex characters)\n"
                 "               to F, mode 0600, for --secret-file or ZEXEC_SECRET\n"
                 "\n"
                 "A CURVE cluster: keygen the broker's pair, one pair per client and per\n"
                 "worker; copy client public files into the broker's --client-keys folder\n"
                 "and worker public files into --worker-keys; give every client and worker\n"
                 "the broker's public file as --server-key and its own _secret as --key.\n");
}

static int s_secret(const char *path)
{
    uint8_t raw[32];
    char hex[65];
    if (RAND_bytes(raw, sizeof raw) != 1) {
        fprintf(stderr, "zexec keygen: no randomness available\n");
        return 1;
    }
    for (int i = 0; i < 32; i++) {
        snprintf(hex + 2 * i, 3, "%02x", raw[i]);
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "zexec keygen: %s: %s%s\n", path, strerror(errno),
                errno == EEXIST ? " (not overwriting)" : "");
        return 1;
    }
    hex[64] = '\n';
    int ok = write(fd, hex, 65) == 65;
    close(fd);
    memset(raw, 0, sizeof raw);
    memset(hex, 0, sizeof hex);
    if (!ok) {
        fprintf(stderr, "zexec keygen: could not write %s\n", path);
        unlink(path);
        return 1;
    }
    printf("wrote shared secret %s (mode 0600)\n", path);
    return 0;
}

int zx__keygen_main(int argc, char **argv)
{
    /* accept both "keygen DIR NAME" and "DIR NAME" (argv[0] the program) */
    int first = 1;
    if (argc > 1 && strcmp(argv[1], "keygen") == 0) {
        first = 2;
    }
    if (argc - first == 1 &&
        (strcmp(argv[first], "-h") == 0 || strcmp(argv[first], "--help") == 0)) {
        s_usage(stdout);
        return 0;
    }
    if (argc - first == 2 && strcmp(argv[first], "--secret") == 0) {
        return s_secret(argv[first + 1]);
    }
    if (argc - first < 2) {
        s_usage(stderr);
        return 2;
    }
    const char *dir = argv[first];
    for (int i = first + 1; i < argc; i++) {
        char err[512];
        if (zx__auth_keygen(dir, argv[i], err, sizeof err) != 0) {
            fprintf(stderr, "zexec keygen: %s\n", err);
            return 1;
        }
        printf("wrote %s/%s (public) and %s/%s_secret (secret, mode 0600)\n", dir, argv[i], dir,
               argv[i]);
    }
    return 0;
}
