/*  test_auth.c - CURVE (common/auth.c): certificate parsing and keygen, the
    bind policy, and the ZAP handler's per-domain allowlists, each case seen
    through a socket monitor: admitted (a message arrives) or refused (the
    server reports a failed handshake and no message ever arrives). */
#include "zx_auth.h"

#include <criterion/criterion.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

TestSuite(auth, .timeout = 60);

static char s_dir[64];

/* A scratch folder with keys: broker, alice (client), w1 (worker), eve. */
static void s_keys(void)
{
    snprintf(s_dir, sizeof s_dir, "/tmp/zx-auth-XXXXXX");
    cr_assert(mkdtemp(s_dir));
    char err[256], sub[128];
    cr_assert_eq(zx__auth_keygen(s_dir, "broker", err, sizeof err), 0, "%s", err);
    cr_assert_eq(zx__auth_keygen(s_dir, "alice", err, sizeof err), 0, "%s", err);
    cr_assert_eq(zx__auth_keygen(s_dir, "w1", err, sizeof err), 0, "%s", err);
    cr_assert_eq(zx__auth_keygen(s_dir, "eve", err, sizeof err), 0, "%s", err);
    const char *dirs[] = {"clients", "workers", "empty"};
    for (int i = 0; i < 3; i++) {
        snprintf(sub, sizeof sub, "%s/%s", s_dir, dirs[i]);
        cr_assert_eq(mkdir(sub, 0700), 0);
    }
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cp %s/alice %s/clients/ && cp %s/w1 %s/workers/", s_dir, s_dir,
             s_dir, s_dir);
    cr_assert_eq(system(cmd), 0);
}

static void s_rmkeys(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", s_dir);
    cr_assert_eq(system(cmd), 0);
}

static char *s_path(const char *name)
{
    static char p[4][256];
    static int i;
    i = (i + 1) % 4;
    snprintf(p[i], sizeof p[i], "%s/%s", s_dir, name);
    return p[i];
}

/* 1: the server got the client's message; 0: the handshake failed. */
static int s_try(const char *domain, const char *key, const char *server_key, bool with_auth,
                 const char *clients, const char *workers)
{
    char err[256];
    zx__auth_t *auth = NULL;
    if (with_auth) {
        auth = zx__auth_new(clients, workers, NULL);
        cr_assert(auth);
    }
    zcert_t *server_cert = zx__auth_cert_load(s_path("broker_secret"), true, err, sizeof err);
    cr_assert(server_cert, "%s", err);
    zsock_t *server = zsock_new(ZMQ_ROUTER);
    cr_assert_eq(zx__auth_server_setup(server, server_cert, domain), 0);
    int port = zsock_bind(server, "tcp://127.0.0.1:*");
    cr_assert_gt(port, 0);
    zsock_t *mon = zsock_new(ZMQ_PAIR);
    char mon_ep[64];
    static int mon_no;
    snprintf(mon_ep, sizeof mon_ep, "inproc://mon-%d", ++mon_no);
    cr_assert_eq(zmq_socket_monitor(zsock_resolve(server), mon_ep,
                                    ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                                        ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                                        ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                                        ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL),
                 0);
    cr_assert_eq(zsock_connect(mon, "%s", mon_ep), 0);

    zsock_t *client = zsock_new(ZMQ_DEALER);
    if (key) {
        cr_assert_eq(zx__auth_client_setup(client, key, server_key), 0);
    }
    cr_assert_eq(zsock_connect(client, "tcp://127.0.0.1:%d", port), 0);
    zstr_send(client, "hello");

    /* wait for the handshake's outcome, then (if it succeeded) the message */
    int result = -1;
    zpoller_t *poller = zpoller_new(mon, server, NULL);
    int64_t deadline = zclock_mono() + 10000;
    while (result < 0 && zclock_mono() < deadline) {
        void *which = zpoller_wait(poller, 200);
        if (which == server) {
            zmsg_t *m = zmsg_recv(server);
            zmsg_destroy(&m);
            result = 1;
        } else if (which == mon) {
            zmsg_t *ev = zmsg_recv(mon);
            zframe_t *f = zmsg_first(ev);
            uint16_t event = 0;
            memcpy(&event, zframe_data(f), 2);
            zmsg_destroy(&ev);
            if (event != ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
                result = 0;
            }
        }
    }
    cr_assert_geq(result, 0, "neither a message nor a failed handshake within 10 s");
    if (result == 0) {
        /* and nothing slips through afterwards */
        zpoller_t *p2 = zpoller_new(server, NULL);
        cr_assert_null(zpoller_wait(p2, 300));
        zpoller_destroy(&p2);
    }
    zpoller_destroy(&poller);
    zsock_destroy(&client);
    zsock_destroy(&mon);
    zsock_destroy(&server);
    zcert_destroy(&server_cert);
    zx__auth_destroy(&auth);
    return result;
}

Test(auth, an_allowlisted_client_key_is_admitted_on_the_client_endpoint)
{
    s_keys();
    cr_assert_eq(s_try("clients", s_path("alice_secret"), s_path("broker"), true, s_path("clients"),
                       s_path("workers")),
                 1);
    cr_assert_eq(s_try("workers", s_path("w1_secret"), s_path("broker"), true, s_path("clients"),
                       s_path("workers")),
                 1);
    s_rmkeys();
}

Test(auth, an_unknown_key_is_refused)
{
    s_keys();
    cr_assert_eq(s_try("clients", s_path("eve_secret"), s_path("broker"), true, s_path("clients"),
                       s_path("workers")),
                 0);
    s_rmkeys();
}

Test(auth, a_client_without_curve_is_refused)
{
    s_keys();
    cr_assert_eq(s_try("clients", NULL, NULL, true, s_path("clients"), s_path("workers")), 0);
    s_rmkeys();
}

Test(auth, a_client_key_cannot_register_as_a_worker_nor_the_reverse)
{
    s_keys();
    cr_assert_eq(s_try("workers", s_path("alice_secret"), s_path("broker"), true, s_path("clients"),
                       s_path("workers")),
                 0);
    cr_assert_eq(s_try("clients", s_path("w1_secret"), s_path("broker"), true, s_path("clients"),
                       s_path("workers")),
                 0);
    s_rmkeys();
}

Test(auth, the_server_key_without_an_allowlisted_client_key_is_refused)
{
    s_keys();
    /* eve knows the broker's public key and makes her own pair: refused */
    char err[256];
    cr_assert_eq(zx__auth_keygen(s_dir, "eve2", err, sizeof err), 0);
    cr_assert_eq(s_try("clients", s_path("eve2_secret"), s_path("broker"), true, s_path("clients"),
                       s_path("workers")),
                 0);
    s_rmkeys();
}

Test(auth, no_zap_handler_refuses_everyone)
{
    s_keys();
    /* libzmq alone would admit anyone with the server key; ZAP_ENFORCE_DOMAIN
       makes the missing handler refuse instead */
    cr_assert_eq(s_try("clients", s_path("alice_secret"), s_path("broker"), false, NULL, NULL), 0);
    s_rmkeys();
}

Test(auth, a_destroyed_zap_handler_refuses_new_connections)
{
    s_keys();
    char err[256];
    zx__auth_t *auth = zx__auth_new(s_path("clients"), s_path("workers"), NULL);
    cr_assert(auth);
    cr_assert_eq(zx__auth_keys(auth, "clients"), 1);
    zx__auth_destroy(&auth);
    cr_assert_null(auth);
    (void)err;
    cr_assert_eq(s_try("clients", s_path("alice_secret"), s_path("broker"), false, NULL, NULL), 0);
    /* and a new handler can take its place */
    cr_assert_eq(s_try("clients", s_path("alice_secret"), s_path("broker"), true, s_path("clients"),
                       s_path("workers")),
                 1);
    s_rmkeys();
}

Test(auth, an_empty_or_missing_key_folder_refuses_everyone)
{
    s_keys();
    cr_assert_eq(s_try("clients", s_path("alice_secret"), s_path("broker"), true, s_path("empty"),
                       s_path("workers")),
                 0);
    cr_assert_eq(s_try("clients", s_path("alice_secret"), s_path("broker"), true,
                       s_path("nonexistent"), s_path("workers")),
                 0);
    cr_assert_eq(
        s_try("clients", s_path("alice_secret"), s_path("broker"), true, NULL, s_path("workers")),
        0);
    s_rmkeys();
}

Test(auth, a_bad_file_in_a_key_folder_refuses_everyone)
{
    s_keys();
    FILE *f = fopen(s_path("clients/garbage"), "w");
    fputs("this is not a certificate\n", f);
    fclose(f);
    zx__auth_t *auth = zx__auth_new(s_path("clients"), s_path("workers"), NULL);
    cr_assert_eq(zx__auth_keys(auth, "clients"), -1);
    cr_assert_eq(zx__auth_keys(auth, "workers"), 1);
    zx__auth_destroy(&auth);
    cr_assert_eq(s_try("clients", s_path("alice_secret"), s_path("broker"), true, s_path("clients"),
                       s_path("workers")),
                 0);
    /* an unreadable file, too (unless we are root, who reads anything) */
    unlink(s_path("clients/garbage"));
    if (geteuid() != 0) {
        chmod(s_path("clients/alice"), 0);
        cr_assert_eq(s_try("clients", s_path("alice_secret"), s_path("broker"), true,
                           s_path("clients"), s_path("workers")),
                     0);
    }
    s_rmkeys();
}

Test(auth, keys_added_or_removed_take_effect_without_a_restart)
{
    s_keys();
    /* one handler for the whole test; s_try(..., false, ...) starts none */
    zx__auth_t *auth = zx__auth_new(s_path("clients"), s_path("workers"), NULL);
    cr_assert_eq(zx__auth_keys(auth, "clients"), 1);
    cr_assert_eq(s_try("clients", s_path("eve_secret"), s_path("broker"), false, NULL, NULL), 0);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cp %s/eve %s/clients/", s_dir, s_dir);
    cr_assert_eq(system(cmd), 0);
    cr_assert_eq(s_try("clients", s_path("eve_secret"), s_path("broker"), false, NULL, NULL), 1);
    cr_assert_eq(zx__auth_keys(auth, "clients"), 2);
    cr_assert_eq(unlink(s_path("clients/eve")), 0);
    cr_assert_eq(s_try("clients", s_path("eve_secret"), s_path("broker"), false, NULL, NULL), 0,
                 "a revoked key is refused at its next handshake");
    uint64_t ok, refused;
    zx__auth_counts(auth, &ok, &refused);
    cr_assert_eq(ok, 1);
    cr_assert_eq(refused, 2);
    zx__auth_destroy(&auth);
    s_rmkeys();
}

Test(auth, certificate_parsing_is_strict)
{
    s_keys();
    char err[256];
    zcert_t *c = zx__auth_cert_load(s_path("alice_secret"), true, err, sizeof err);
    cr_assert(c, "%s", err);
    zcert_destroy(&c);
    cr_assert_null(zx__auth_cert_load(s_path("alice"), true, err, sizeof err),
                   "a public file is not a secret key");
    c = zx__auth_cert_load(s_path("alice"), false, err, sizeof err);
    cr_assert(c);
    zcert_destroy(&c);
    const char *bad[] = {
        "",
        "curve\n    public-key = \"short\"\n",
        "curve\n    public-key = \"0000000000000000000000000000000000000000\"\n",
        "\x01\x02\x03",
        "curve\n    public-key = \"" /* unterminated */,
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        c = zx__auth_cert_parse(bad[i], strlen(bad[i]), false, err, sizeof err);
        if (c && i == 2) {
            /* forty '0's are valid Z85: accepted as a (useless) key */
            zcert_destroy(&c);
            continue;
        }
        cr_assert_null(c, "case %zu", i);
    }
    /* a secret that does not match its public half */
    zcert_t *a = zcert_new(), *b = zcert_new();
    char text[512];
    snprintf(text, sizeof text, "curve\n    public-key = \"%s\"\n    secret-key = \"%s\"\n",
             zcert_public_txt(a), zcert_secret_txt(b));
    cr_assert_null(zx__auth_cert_parse(text, strlen(text), true, err, sizeof err));
    cr_assert(strstr(err, "does not match"));
    zcert_destroy(&a);
    zcert_destroy(&b);
    /* keygen refuses to overwrite; the secret file is private */
    cr_assert_eq(zx__auth_keygen(s_dir, "alice", err, sizeof err), -1);
    struct stat st;
    cr_assert_eq(stat(s_path("alice_secret"), &st), 0);
    cr_assert_eq(st.st_mode & 077, 0);
    cr_assert_eq(zx__auth_keygen(s_dir, "../escape", err, sizeof err), -1);
    s_rmkeys();
}

Test(auth, only_loopback_binds_may_run_without_security)
{
    const char *local[] = {"tcp://127.0.0.1:5570", "tcp://127.1.2.3:1", "tcp://localhost:5570",
                           "tcp://[::1]:5570",     "ipc:///tmp/x",      "inproc://x"};
    const char *remote[] = {"tcp://*:5570",
                            "tcp://0.0.0.0:5570",
                            "tcp://10.0.0.5:5570",
                            "tcp://eth0:5570",
                            "tcp://127.0.0.1.evil.com:1",
                            "tcp://127.0.0.1x:1",
                            "tcp://[::]:5570",
                            "pgm://x"};
    for (size_t i = 0; i < sizeof local / sizeof local[0]; i++) {
        cr_assert(zx__auth_endpoint_is_loopback(local[i]), "%s", local[i]);
        cr_assert_eq(zx__auth_bind_check(local[i], false, false, false), 0);
    }
    for (size_t i = 0; i < sizeof remote / sizeof remote[0]; i++) {
        cr_assert_not(zx__auth_endpoint_is_loopback(remote[i]), "%s", remote[i]);
        cr_assert_eq(zx__auth_bind_check(remote[i], false, false, false), -1, "%s", remote[i]);
        cr_assert_eq(zx__auth_bind_check(remote[i], true, false, false), 0);
        cr_assert_eq(zx__auth_bind_check(remote[i], false, true, false), 0);
        cr_assert_eq(zx__auth_bind_check(remote[i], false, false, true), 0);
    }
}
