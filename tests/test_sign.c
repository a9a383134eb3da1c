/*  test_sign.c - the shared-secret envelope (common/sign.c): round trips in
    both directions, every flipped byte of every frame refused, replays
    refused in the same session, after a broker restart and on a second
    broker, a million forgeries then a replay refused, the epoch handshake
    (RESET) and the key loading rules. */
#include "zx_proto.h"
#include "zx_sign.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const uint8_t KEY[] = "0123456789abcdef0123456789abcdef";
static const uint8_t RID[16] = {0x42, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

TestSuite(sign, .timeout = 60);

/* A SUBMIT of n items as it leaves a client: frame 0, header, payloads. */
static zmsg_t *s_submit(int n)
{
    zxp_out_t o;
    zxp_out_init(&o);
    zxp_out_begin(&o, ZXP_SUBMIT);
    /* payloads past ZXP_INLINE_MAX, so each travels in a frame of its own
       and the envelope's per-frame checks have frames to check: [bin 300] */
    uint8_t pay[4 + 300] = {0x91, 0xc5, 0x01, 0x2c};
    memset(pay + 4, 'p', 300);
    for (int i = 0; i < n; i++) {
        zxp_submit_t s = {.seq = (uint64_t)i + 1, .fn = {"echo", 4}};
        zxp_put_submit(&o, &s);
        zxp_out_payload_mem(&o, pay, sizeof pay);
    }
    /* build the message the way zxp_out_send does, without a socket */
    uint8_t *h = (uint8_t *)o.buf.data;
    h[4] = (uint8_t)n;
    zmsg_t *m = o.payloads;
    o.payloads = NULL;
    uint8_t sig[4] = {'Z', 'X', ZXP_VERSION, ZXP_SUBMIT};
    zmsg_pushmem(m, o.buf.data, o.buf.size);
    zmsg_pushmem(m, sig, 4);
    zxp_out_fini(&o);
    return m;
}

static zframe_t *s_rid(void)
{
    return zframe_new(RID, sizeof RID);
}

/* Client and broker that have done the epoch handshake. */
typedef struct {
    zx__sign_t *client, *broker;
    zframe_t *rid;
} s_pair_t;

/* expect: ZXP_E_SIGN_FIRST for a client's first broker, ZXP_E_SIGN_EPOCH
   for a client that knew an earlier one */
static void s_handshake(zx__sign_t *client, zx__sign_t *broker, zframe_t *rid, int expect)
{
    /* the client's first message carries a zero epoch: the broker refuses it
       (its MAC verified) and answers RESET under its own session */
    zmsg_t *hello = s_submit(1);
    cr_assert_eq(zx__sign_msg(client, hello, NULL, ZXP_ROLE_BROKER_C), 0);
    cr_assert_eq(zx__sign_verify(broker, hello, rid, ZXP_ROLE_BROKER_C), expect);
    zmsg_destroy(&hello);
    zmsg_t *reset = zmsg_new();
    zmsg_addmem(reset, (uint8_t[]){'Z', 'X', ZXP_VERSION, ZXP_RESET}, 4);
    zmsg_addmem(reset, "\x90", 1);
    cr_assert_eq(zx__sign_msg(broker, reset, rid, ZXP_ROLE_CLIENT), 0);
    cr_assert_eq(zx__sign_verify(client, reset, NULL, ZXP_ROLE_CLIENT), 0);
    cr_assert_eq(zmsg_size(reset), 2, "the envelope is stripped");
    zmsg_destroy(&reset);
}

static s_pair_t s_pair(void)
{
    s_pair_t p = {zx__sign_new(KEY, 32, false), zx__sign_new(KEY, 32, true), s_rid()};
    cr_assert(p.client && p.broker);
    s_handshake(p.client, p.broker, p.rid, ZXP_E_SIGN_FIRST);
    return p;
}

static void s_pair_free(s_pair_t *p)
{
    zx__sign_destroy(&p->client);
    zx__sign_destroy(&p->broker);
    zframe_destroy(&p->rid);
}

Test(sign, round_trips_both_ways_and_strips_the_envelope)
{
    s_pair_t p = s_pair();
    for (int i = 0; i < 100; i++) {
        zmsg_t *m = s_submit(3);
        cr_assert_eq(zx__sign_msg(p.client, m, NULL, ZXP_ROLE_BROKER_C), 0);
        cr_assert_eq(zmsg_size(m), 6);
        cr_assert_eq(zframe_size(zmsg_last(m)), ZX__SIGN_ENV_LEN);
        cr_assert_eq(zx__sign_verify(p.broker, m, p.rid, ZXP_ROLE_BROKER_C), 0);
        zxp_in_t in;
        zxp_in_init(&in);
        cr_assert_eq(zxp_decode(&in, &m, ZXP_ROLE_BROKER_C), 0, "decodes after stripping");
        cr_assert_eq(in.count, 3);
        zxp_in_fini(&in);

        zmsg_t *r = zmsg_new();
        zmsg_addmem(r, (uint8_t[]){'Z', 'X', ZXP_VERSION, ZXP_HEARTBEAT}, 4);
        zmsg_addmem(r, "\x90", 1);
        cr_assert_eq(zx__sign_msg(p.broker, r, p.rid, ZXP_ROLE_CLIENT), 0);
        cr_assert_eq(zx__sign_verify(p.client, r, NULL, ZXP_ROLE_CLIENT), 0);
        zmsg_destroy(&r);
    }
    s_pair_free(&p);
}

Test(sign, every_flipped_byte_of_every_frame_is_refused)
{
    s_pair_t p = s_pair();
    zmsg_t *orig = s_submit(2);
    cr_assert_eq(zx__sign_msg(p.client, orig, NULL, ZXP_ROLE_BROKER_C), 0);
    size_t tried = 0, refused = 0, frame_no = 0, nframes = zmsg_size(orig);
    for (; frame_no < nframes; frame_no++) {
        /* zmsg_dup moves orig's cursor: find the frame by index each time */
        zframe_t *f = zmsg_first(orig);
        for (size_t k = 0; k < frame_no; k++) {
            f = zmsg_next(orig);
        }
        size_t fsize = zframe_size(f);
        for (size_t b = 0; b < fsize; b++) {
            for (int bit = 0; bit < 8; bit += 7) { /* lowest and highest bit */
                zmsg_t *m = zmsg_dup(orig);
                zframe_t *g = zmsg_first(m);
                for (size_t k = 0; k < frame_no; k++) {
                    g = zmsg_next(m);
                }
                zframe_data(g)[b] ^= (uint8_t)(1u << bit);
                tried++;
                if (zx__sign_verify(p.broker, m, p.rid, ZXP_ROLE_BROKER_C) != 0) {
                    refused++;
                }
                zmsg_destroy(&m);
            }
        }
    }
    cr_assert_eq(frame_no, 5, "frame 0, header, 2 payloads, envelope");
    cr_assert_eq(refused, tried, "%zu of %zu flipped messages refused", refused, tried);
    /* and the untouched message still verifies: no flip was recorded */
    cr_assert_eq(zx__sign_verify(p.broker, orig, p.rid, ZXP_ROLE_BROKER_C), 0);
    zmsg_destroy(&orig);
    s_pair_free(&p);
}

Test(sign, a_dropped_added_or_reordered_frame_is_refused)
{
    s_pair_t p = s_pair();
    zmsg_t *orig = s_submit(2);
    cr_assert_eq(zx__sign_msg(p.client, orig, NULL, ZXP_ROLE_BROKER_C), 0);
    zmsg_t *m = zmsg_dup(orig); /* drop payload 1 */
    zframe_t *f = zmsg_first(m);
    f = zmsg_next(m);
    f = zmsg_next(m);
    zmsg_remove(m, f);
    zframe_destroy(&f);
    cr_assert_eq(zx__sign_verify(p.broker, m, p.rid, ZXP_ROLE_BROKER_C), ZXP_E_SIGN_MAC);
    zmsg_destroy(&m);
    m = zmsg_dup(orig); /* an extra empty payload in front */
    zmsg_pushmem(m, "", 0);
    cr_assert_neq(zx__sign_verify(p.broker, m, p.rid, ZXP_ROLE_BROKER_C), 0);
    zmsg_destroy(&m);
    m = zmsg_dup(orig); /* bytes moved from one frame to the next */
    zframe_t *a = zmsg_first(m);
    zframe_t *h = zmsg_next(m);
    zframe_t *joined = zframe_new(NULL, zframe_size(a) + zframe_size(h));
    memcpy(zframe_data(joined), zframe_data(a), zframe_size(a));
    memcpy(zframe_data(joined) + zframe_size(a), zframe_data(h), zframe_size(h));
    zmsg_remove(m, a);
    zmsg_remove(m, h);
    zframe_destroy(&a);
    zframe_destroy(&h);
    zmsg_prepend(m, &joined);
    cr_assert_eq(zx__sign_verify(p.broker, m, p.rid, ZXP_ROLE_BROKER_C), ZXP_E_SIGN_MAC);
    zmsg_destroy(&m);
    cr_assert_eq(zx__sign_verify(p.broker, orig, p.rid, ZXP_ROLE_BROKER_C), 0);
    zmsg_destroy(&orig);
    s_pair_free(&p);
}

Test(sign, unsigned_wrong_role_and_wrong_key_are_refused)
{
    s_pair_t p = s_pair();
    zmsg_t *m = s_submit(1);
    cr_assert_eq(zx__sign_verify(p.broker, m, p.rid, ZXP_ROLE_BROKER_C), ZXP_E_SIGN_MISSING);
    cr_assert_eq(zx__sign_msg(p.client, m, NULL, ZXP_ROLE_BROKER_W), 0);
    cr_assert_eq(zx__sign_verify(p.broker, m, p.rid, ZXP_ROLE_BROKER_C), ZXP_E_SIGN_FORMAT,
                 "a message for the worker endpoint is not valid on the client endpoint");
    zmsg_destroy(&m);
    zx__sign_t *other =
        zx__sign_new((const uint8_t *)"another secret of 32 bytes......", 32, false);
    m = s_submit(1);
    cr_assert_eq(zx__sign_msg(other, m, NULL, ZXP_ROLE_BROKER_C), 0);
    cr_assert_eq(zx__sign_verify(p.broker, m, p.rid, ZXP_ROLE_BROKER_C), ZXP_E_SIGN_MAC);
    zmsg_destroy(&m);
    zx__sign_destroy(&other);
    s_pair_free(&p);
}

Test(sign, a_replay_in_the_same_session_is_refused)
{
    s_pair_t p = s_pair();
    zmsg_t *m = s_submit(1);
    cr_assert_eq(zx__sign_msg(p.client, m, NULL, ZXP_ROLE_BROKER_C), 0);
    zmsg_t *copy = zmsg_dup(m);
    cr_assert_eq(zx__sign_verify(p.broker, m, p.rid, ZXP_ROLE_BROKER_C), 0);
    cr_assert_eq(zx__sign_verify(p.broker, copy, p.rid, ZXP_ROLE_BROKER_C), ZXP_E_SIGN_REPLAY);
    /* also from another connection (routing id) */
    zframe_t *rid2 = zframe_new("\x77xyz", 4);
    cr_assert_eq(zx__sign_verify(p.broker, copy, rid2, ZXP_ROLE_BROKER_C), ZXP_E_SIGN_REPLAY);
    /* an older message, delivered late, is refused too: seq must increase */
    zmsg_t *m1 = s_submit(1), *m2 = s_submit(1);
    cr_assert_eq(zx__sign_msg(p.client, m1, NULL, ZXP_ROLE_BROKER_C), 0);
    cr_assert_eq(zx__sign_msg(p.client, m2, NULL, ZXP_ROLE_BROKER_C), 0);
    cr_assert_eq(zx__sign_verify(p.broker, m2, p.rid, ZXP_ROLE_BROKER_C), 0);
    cr_assert_eq(zx__sign_verify(p.broker, m1, p.rid, ZXP_ROLE_BROKER_C), ZXP_E_SIGN_REPLAY);
    zmsg_destroy(&m);
    zmsg_destroy(&copy);
    zmsg_destroy(&m1);
    zmsg_destroy(&m2);
    zframe_destroy(&rid2);
    s_pair_free(&p);
}

/* A signed broker message (heartbeat) for the client of p. */
static zmsg_t *s_from_broker(s_pair_t *p)
{
    zmsg_t *m = zmsg_new();
    zmsg_addmem(m, (uint8_t[]){'Z', 'X', ZXP_VERSION, ZXP_HEARTBEAT}, 4);
    zmsg_addmem(m, "\x90", 1);
    cr_assert_eq(zx__sign_msg(p->broker, m, p->rid, ZXP_ROLE_CLIENT), 0);
    return m;
}

/* The peer side (client, worker) keeps the broker session's highest seq:
   the same message twice, or an older one delivered late, is refused. */
Test(sign, a_replay_of_a_broker_message_to_the_client_is_refused)
{
    s_pair_t p = s_pair();
    zmsg_t *m = s_from_broker(&p);
    zmsg_t *copy = zmsg_dup(m);
    cr_assert_eq(zx__sign_verify(p.client, m, NULL, ZXP_ROLE_CLIENT), 0);
    cr_assert_eq(zx__sign_verify(p.client, copy, NULL, ZXP_ROLE_CLIENT), ZXP_E_SIGN_REPLAY);
    zmsg_t *m1 = s_from_broker(&p), *m2 = s_from_broker(&p);
    cr_assert_eq(zx__sign_verify(p.client, m2, NULL, ZXP_ROLE_CLIENT), 0);
    cr_assert_eq(zx__sign_verify(p.client, m1, NULL, ZXP_ROLE_CLIENT), ZXP_E_SIGN_REPLAY);
    /* a refused replay changes nothing: the next message is accepted */
    zmsg_t *m3 = s_from_broker(&p);
    cr_assert_eq(zx__sign_verify(p.client, m3, NULL, ZXP_ROLE_CLIENT), 0);
    zmsg_destroy(&m);
    zmsg_destroy(&copy);
    zmsg_destroy(&m1);
    zmsg_destroy(&m2);
    zmsg_destroy(&m3);
    s_pair_free(&p);
}

Test(sign, a_replay_after_a_broker_restart_or_to_another_broker_is_refused)
{
    s_pair_t p = s_pair();
    zmsg_t *m = s_submit(1);
    cr_assert_eq(zx__sign_msg(p.client, m, NULL, ZXP_ROLE_BROKER_C), 0);
    zmsg_t *c1 = zmsg_dup(m), *c2 = zmsg_dup(m);
    cr_assert_eq(zx__sign_verify(p.broker, m, p.rid, ZXP_ROLE_BROKER_C), 0);
    /* restart: a new broker object is a new process start (new session) */
    zx__sign_destroy(&p.broker);
    p.broker = zx__sign_new(KEY, 32, true);
    cr_assert_eq(zx__sign_verify(p.broker, c1, p.rid, ZXP_ROLE_BROKER_C), ZXP_E_SIGN_EPOCH);
    zx__sign_t *second = zx__sign_new(KEY, 32, true);
    cr_assert_eq(zx__sign_verify(second, c2, p.rid, ZXP_ROLE_BROKER_C), ZXP_E_SIGN_EPOCH);
    zx__sign_destroy(&second);
    zmsg_destroy(&m);
    zmsg_destroy(&c1);
    zmsg_destroy(&c2);
    s_pair_free(&p);
}

Test(sign, the_client_follows_a_restarted_broker_and_old_broker_messages_die)
{
    s_pair_t p = s_pair();
    /* a message from the first broker, captured */
    zmsg_t *old = zmsg_new();
    zmsg_addmem(old, (uint8_t[]){'Z', 'X', ZXP_VERSION, ZXP_HEARTBEAT}, 4);
    zmsg_addmem(old, "\x90", 1);
    cr_assert_eq(zx__sign_msg(p.broker, old, p.rid, ZXP_ROLE_CLIENT), 0);
    zmsg_t *old_copy = zmsg_dup(old);
    cr_assert_eq(zx__sign_verify(p.client, old, NULL, ZXP_ROLE_CLIENT), 0);
    zx__sign_destroy(&p.broker);
    p.broker = zx__sign_new(KEY, 32, true);
    uint8_t before[16];
    memcpy(before, zx__sign_session(p.client), 16);
    /* the client still signs for the old broker: refused, answered by RESET */
    s_handshake(p.client, p.broker, p.rid, ZXP_E_SIGN_EPOCH);
    cr_assert_neq(memcmp(before, zx__sign_session(p.client), 16), 0,
                  "the client took a new session when the broker's changed");
    cr_assert_eq(zx__sign_verify(p.client, old_copy, NULL, ZXP_ROLE_CLIENT), ZXP_E_SIGN_EPOCH,
                 "the old broker's messages never verify again");
    /* and the new pair works */
    zmsg_t *m = s_submit(1);
    cr_assert_eq(zx__sign_msg(p.client, m, NULL, ZXP_ROLE_BROKER_C), 0);
    cr_assert_eq(zx__sign_verify(p.broker, m, p.rid, ZXP_ROLE_BROKER_C), 0);
    zmsg_destroy(&m);
    zmsg_destroy(&old);
    zmsg_destroy(&old_copy);
    s_pair_free(&p);
}

Test(sign, a_million_forgeries_then_a_replay_all_refused_and_nothing_recorded, .timeout = 120)
{
    s_pair_t p = s_pair();
    zmsg_t *real = s_submit(1);
    cr_assert_eq(zx__sign_msg(p.client, real, NULL, ZXP_ROLE_BROKER_C), 0);
    zmsg_t *capture = zmsg_dup(real);
    cr_assert_eq(zx__sign_verify(p.broker, real, p.rid, ZXP_ROLE_BROKER_C), 0);
    /* forgeries: the captured envelope with every seq above the real one
       and random MACs: would evict or advance state if recorded first */
    zmsg_t *forged = zmsg_dup(capture);
    uint8_t *env = zframe_data(zmsg_last(forged));
    size_t accepted = 0;
    for (uint64_t i = 0; i < 1000000; i++) {
        uint64_t seq = 1000 + i;
        for (int b = 0; b < 8; b++) {
            env[36 + b] = (uint8_t)(seq >> (56 - 8 * b));
        }
        memcpy(env + 44, &i, sizeof i);
        if (zx__sign_verify(p.broker, forged, p.rid, ZXP_ROLE_BROKER_C) == 0) {
            accepted++;
        }
    }
    cr_assert_eq(accepted, 0);
    uint64_t ok, bad;
    zx__sign_counts(p.broker, &ok, &bad);
    cr_assert_geq(bad, 1000000);
    cr_assert_eq(zx__sign_verify(p.broker, capture, p.rid, ZXP_ROLE_BROKER_C), ZXP_E_SIGN_REPLAY);
    /* the legitimate client's next message is still accepted: forgeries
       never advanced its seq */
    zmsg_t *next = s_submit(1);
    cr_assert_eq(zx__sign_msg(p.client, next, NULL, ZXP_ROLE_BROKER_C), 0);
    cr_assert_eq(zx__sign_verify(p.broker, next, p.rid, ZXP_ROLE_BROKER_C), 0);
    zmsg_destroy(&next);
    zmsg_destroy(&forged);
    zmsg_destroy(&capture);
    zmsg_destroy(&real);
    s_pair_free(&p);
}

Test(sign, signs_through_the_zxp_send_hook_on_real_sockets)
{
    zsock_t *router = zsock_new(ZMQ_ROUTER), *dealer = zsock_new(ZMQ_DEALER);
    cr_assert_eq(zsock_bind(router, "inproc://sign-hook"), 0);
    zsock_set_identity(dealer, "\x01session-0000001");
    cr_assert_eq(zsock_connect(dealer, "inproc://sign-hook"), 0);
    s_pair_t p = {zx__sign_new(KEY, 32, false), zx__sign_new(KEY, 32, true), NULL};
    zx__sign_attach(p.client, dealer, ZXP_ROLE_BROKER_C);
    zx__sign_attach(p.broker, router, ZXP_ROLE_CLIENT);
    uint8_t session[16] = {1, 2, 3};
    zxp_in_t in;
    zxp_in_init(&in);
    int welcomed = 0, resets = 0;
    cr_assert_eq(zxp_send_hello(dealer, session, "c", 1000), 0);
    for (int round = 0; round < 4 && !welcomed; round++) {
        zmsg_t *m = zmsg_recv(router);
        zframe_t *rid = zmsg_pop(m);
        int rc = zx__sign_verify(p.broker, m, rid, ZXP_ROLE_BROKER_C);
        if (rc == ZXP_E_SIGN_FIRST || rc == ZXP_E_SIGN_EPOCH) {
            zmsg_destroy(&m);
            cr_assert_eq(zxp_send_empty(router, rid, ZXP_RESET), 0);
        } else {
            cr_assert_eq(rc, 0);
            cr_assert_eq(zxp_decode(&in, &m, ZXP_ROLE_BROKER_C), 0);
            cr_assert_eq(in.cmd, ZXP_HELLO);
            cr_assert_eq(zxp_send_welcome(router, rid, session, 1000, 3, 1 << 20), 0);
        }
        zframe_destroy(&rid);
        zmsg_t *r = zmsg_recv(dealer);
        cr_assert_eq(zx__sign_verify(p.client, r, NULL, ZXP_ROLE_CLIENT), 0);
        cr_assert_eq(zxp_decode(&in, &r, ZXP_ROLE_CLIENT), 0);
        if (in.cmd == ZXP_RESET) {
            resets++;
            cr_assert_eq(zxp_send_hello(dealer, session, "c", 1000), 0);
        } else {
            cr_assert_eq(in.cmd, ZXP_WELCOME);
            welcomed = 1;
        }
    }
    cr_assert_eq(resets, 1, "one RESET tells the client the broker's session");
    cr_assert(welcomed);
    zxp_in_fini(&in);
    zsock_destroy(&dealer);
    zsock_destroy(&router);
    s_pair_free(&p);
}

Test(sign, the_secret_comes_from_a_file_or_the_environment_never_too_short)
{
    char path[] = "/tmp/zx-secret-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, "a-secret-of-24-bytes....\n", 25), 25);
    close(fd);
    uint8_t *key;
    size_t len;
    unsetenv("ZEXEC_SECRET");
    cr_assert_eq(zx__sign_key_load(NULL, false, &key, &len), 0, "nothing configured");
    cr_assert_eq(zx__sign_key_load(path, false, &key, &len), 1);
    cr_assert_eq(len, 24, "the trailing newline is not part of the secret");
    zx__sign_key_free(&key, len);
    cr_assert_eq(zx__sign_key_load("/nonexistent/zx", false, &key, &len), -1);
    setenv("ZEXEC_SECRET", "short", 1);
    cr_assert_eq(zx__sign_key_load(NULL, false, &key, &len), -1, "under 16 bytes");
    setenv("ZEXEC_SECRET", "an environment secret", 1);
    cr_assert_eq(zx__sign_key_load(NULL, true, &key, &len), 1);
    cr_assert_eq(len, strlen("an environment secret"));
    cr_assert_null(getenv("ZEXEC_SECRET"), "scrubbed so child programs do not inherit it");
    zx__sign_key_free(&key, len);
    int rc;
    zx__sign_t *s = zx__sign_new_from_config(path, false, true, &rc);
    cr_assert(s);
    cr_assert_eq(rc, 1);
    zx__sign_destroy(&s);
    unlink(path);
}

/* ---- session expiry (issue 16, item 3) ------------------------------------------------ */

static zmsg_t *s_beat(void)
{
    zmsg_t *r = zmsg_new();
    zmsg_addmem(r, (uint8_t[]){'Z', 'X', ZXP_VERSION, ZXP_HEARTBEAT}, 4);
    zmsg_addmem(r, "\x90", 1);
    return r;
}

/* The broker rotates its session with traffic in flight both ways: nothing
   is lost, and the client carries on under a session of its own. */
Test(sign, a_rotation_loses_nothing_in_flight_either_way)
{
    s_pair_t p = s_pair();
    zmsg_t *hello = s_submit(1); /* a connected client: the broker has its record */
    cr_assert_eq(zx__sign_msg(p.client, hello, NULL, ZXP_ROLE_BROKER_C), 0);
    cr_assert_eq(zx__sign_verify(p.broker, hello, p.rid, ZXP_ROLE_BROKER_C), 0);
    zmsg_destroy(&hello);
    /* in flight from the client, signed for the broker's session before it rotates */
    zmsg_t *up = s_submit(1);
    cr_assert_eq(zx__sign_msg(p.client, up, NULL, ZXP_ROLE_BROKER_C), 0);
    zx__sign_rotate(p.broker);
    cr_assert_eq(zx__sign_rotations(p.broker), 1);
    cr_assert_eq(zx__sign_verify(p.broker, up, p.rid, ZXP_ROLE_BROKER_C), 0,
                 "a recorded sender's message for the previous session is accepted");
    zmsg_destroy(&up);
    /* two broker messages under the new session, both signed for the
       client's old one: the first makes it adopt (and redraw its own) */
    zmsg_t *d1 = s_beat(), *d2 = s_beat();
    cr_assert_eq(zx__sign_msg(p.broker, d1, p.rid, ZXP_ROLE_CLIENT), 0);
    cr_assert_eq(zx__sign_msg(p.broker, d2, p.rid, ZXP_ROLE_CLIENT), 0);
    zmsg_t *d2copy = zmsg_dup(d2);
    cr_assert_eq(zx__sign_verify(p.client, d1, NULL, ZXP_ROLE_CLIENT), 0);
    cr_assert_eq(zx__sign_verify(p.client, d2, NULL, ZXP_ROLE_CLIENT), 0,
                 "the second, in flight when the client adopted, still verifies");
    cr_assert_eq(zx__sign_verify(p.client, d2copy, NULL, ZXP_ROLE_CLIENT), ZXP_E_SIGN_REPLAY);
    zmsg_destroy(&d1);
    zmsg_destroy(&d2);
    zmsg_destroy(&d2copy);
    /* the client's next messages are for the new session, from its new one */
    for (int i = 0; i < 3; i++) {
        zmsg_t *m = s_submit(1);
        cr_assert_eq(zx__sign_msg(p.client, m, NULL, ZXP_ROLE_BROKER_C), 0);
        cr_assert_eq(zx__sign_verify(p.broker, m, p.rid, ZXP_ROLE_BROKER_C), 0);
        zmsg_destroy(&m);
    }
    s_pair_free(&p);
}

/* A message captured before two rotations is refused, though its sender's
   record is gone: expiry does not reopen replays. */
Test(sign, a_replay_after_its_sessions_expired_is_refused)
{
    s_pair_t p = s_pair();
    zmsg_t *m = s_submit(1);
    cr_assert_eq(zx__sign_msg(p.client, m, NULL, ZXP_ROLE_BROKER_C), 0);
    zmsg_t *copy = zmsg_dup(m);
    cr_assert_eq(zx__sign_verify(p.broker, m, p.rid, ZXP_ROLE_BROKER_C), 0);
    zx__sign_rotate(p.broker);
    zx__sign_rotate(p.broker);
    cr_assert_eq(zx__sign_verify(p.broker, copy, p.rid, ZXP_ROLE_BROKER_C), ZXP_E_SIGN_EPOCH);
    zmsg_destroy(&m);
    zmsg_destroy(&copy);
    s_pair_free(&p);
}

/* Ten times the session bound of new senders: every one is admitted (after
   the RESET round trip a rotation costs it), none is refused as "full",
   and the first sender's captured message stays refused. */
Test(sign, new_senders_past_the_bound_are_admitted_and_old_replays_stay_refused)
{
    zx__sign_t *broker = zx__sign_new(KEY, 32, true);
    zx__sign_set_limits(broker, 0, 100);
    zframe_t *rid = s_rid();
    zx__sign_t *first = zx__sign_new(KEY, 32, false);
    s_handshake(first, broker, rid, ZXP_E_SIGN_FIRST);
    zmsg_t *captured = s_submit(1);
    cr_assert_eq(zx__sign_msg(first, captured, NULL, ZXP_ROLE_BROKER_C), 0);
    zmsg_t *replay = zmsg_dup(captured);
    cr_assert_eq(zx__sign_verify(broker, captured, rid, ZXP_ROLE_BROKER_C), 0);
    int admitted = 0;
    for (int i = 0; i < 1000; i++) {
        zx__sign_t *c = zx__sign_new(KEY, 32, false);
        s_handshake(c, broker, rid, ZXP_E_SIGN_FIRST);
        zmsg_t *m = s_submit(1);
        cr_assert_eq(zx__sign_msg(c, m, NULL, ZXP_ROLE_BROKER_C), 0);
        int rc = zx__sign_verify(broker, m, rid, ZXP_ROLE_BROKER_C);
        if (rc == ZXP_E_SIGN_EPOCH) {
            /* this one filled a generation: told the new session, it goes on */
            zmsg_destroy(&m);
            zmsg_t *reset = s_beat();
            cr_assert_eq(zx__sign_msg(broker, reset, rid, ZXP_ROLE_CLIENT), 0);
            cr_assert_eq(zx__sign_verify(c, reset, NULL, ZXP_ROLE_CLIENT), 0);
            zmsg_destroy(&reset);
            m = s_submit(1);
            cr_assert_eq(zx__sign_msg(c, m, NULL, ZXP_ROLE_BROKER_C), 0);
            rc = zx__sign_verify(broker, m, rid, ZXP_ROLE_BROKER_C);
        }
        cr_assert_eq(rc, 0, "sender %d: %s", i, zxp_strerror(rc));
        admitted++;
        zmsg_destroy(&m);
        zx__sign_destroy(&c);
    }
    cr_assert_eq(admitted, 1000);
    cr_assert_geq(zx__sign_rotations(broker), 10, "the bound (50 per generation) held");
    cr_assert_eq(zx__sign_verify(broker, replay, rid, ZXP_ROLE_BROKER_C), ZXP_E_SIGN_EPOCH);
    zmsg_destroy(&captured);
    zmsg_destroy(&replay);
    zx__sign_destroy(&first);
    zx__sign_destroy(&broker);
    zframe_destroy(&rid);
}
