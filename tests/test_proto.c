/*  test_proto.c - ZXP: every message kind round-trips through the encoder
    and the strict decoder; every malformed case is rejected with its code. */
#include "zx_proto.h"

#include <criterion/criterion.h>
#include <string.h>

static const uint8_t SESSION[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

/* A PAIR of inproc sockets stands in for the wire: what zxp_out_send writes
   is exactly what a peer receives. */
static zsock_t *tx, *rx;

static void setup(void)
{
    tx = zsock_new_pair("@inproc://zxp-test");
    rx = zsock_new_pair(">inproc://zxp-test");
    cr_assert(tx && rx);
}

static void teardown(void)
{
    zsock_destroy(&tx);
    zsock_destroy(&rx);
}

TestSuite(proto, .init = setup, .fini = teardown, .timeout = 10);

static int s_recv(zxp_in_t *in, int role)
{
    zmsg_t *msg = zmsg_recv(rx);
    cr_assert(msg);
    return zxp_decode(in, &msg, role);
}

static zmsg_t *s_raw(const void *sig, size_t siglen, const void *hdr, size_t hdrlen)
{
    zmsg_t *m = zmsg_new();
    zmsg_addmem(m, sig, siglen);
    zmsg_addmem(m, hdr, hdrlen);
    return m;
}

Test(proto, submit_batch_round_trips_with_payloads)
{
    zxp_out_t out;
    zxp_out_init(&out);
    zxp_out_begin(&out, ZXP_SUBMIT);
    for (uint64_t i = 0; i < 100; i++) {
        zxp_submit_t s = {.seq = i + 1,
                          .fn = {"echo", 4},
                          .pool = (uint8_t)(i % 3),
                          .priority = (int8_t)(i % 7) - 3,
                          .retries = (int32_t)(i % 5) - 1,
                          .timeout_ms = (uint32_t)i * 10,
                          .flags = (uint32_t)(i & 1)};
        zxp_put_submit(&out, &s);
        zxp_out_payload_mem(&out, &i, sizeof i);
    }
    cr_assert_eq(zxp_out_send(&out, tx, NULL), 0);
    zxp_out_fini(&out);

    zxp_in_t in;
    zxp_in_init(&in);
    cr_assert_eq(s_recv(&in, ZXP_ROLE_BROKER_C), 0, "%s", in.reason);
    cr_assert_eq(in.cmd, ZXP_SUBMIT);
    cr_assert_eq(in.count, 100);
    for (uint64_t i = 0; i < 100; i++) {
        zxp_submit_t s;
        zxp_get_submit(&in, i, &s);
        cr_assert_eq(s.seq, i + 1);
        cr_assert_eq(s.fn.len, 4);
        cr_assert(memcmp(s.fn.ptr, "echo", 4) == 0);
        cr_assert_eq(s.pool, i % 3);
        cr_assert_eq(s.priority, (int8_t)(i % 7) - 3);
        cr_assert_eq(s.retries, (int32_t)(i % 5) - 1);
        cr_assert_eq(s.timeout_ms, i * 10);
        cr_assert_eq(s.flags, i & 1);
        zframe_t *p = zxp_payload_take(&in);
        cr_assert_eq(zframe_size(p), sizeof i);
        cr_assert(memcmp(zframe_data(p), &i, sizeof i) == 0);
        zframe_destroy(&p);
    }
    zxp_in_fini(&in);
}

/* Payloads up to ZXP_INLINE_MAX ride inside their item, larger ones in
   frames; a batch mixes both and each item gets its own back, in order,
   through all three ways of appending one. */
Test(proto, small_payloads_go_inline_and_large_ones_in_frames)
{
    enum { N = 12 };
    size_t sizes[N] = {0, 1, 2, 255, 256, 257, 300, 1000, 3, ZXP_INLINE_MAX, 4096, 7};
    zxp_out_t out;
    zxp_out_init(&out);
    zxp_out_begin(&out, ZXP_WRESULT);
    size_t framed = 0;
    uint8_t sess[ZXP_ID_LEN] = {1};
    for (size_t i = 0; i < N; i++) {
        uint8_t *b = malloc(sizes[i] + 1);
        memset(b, (int)('a' + i), sizes[i]);
        zxp_wresult_t r = {sess, i + 1, 0, 42, ZXP_POOL_THREAD, true, NULL};
        zxp_put_wresult(&out, &r);
        zframe_t *f = zframe_new(b, sizes[i]);
        switch (i % 3) {
        case 0: zxp_out_payload_mem(&out, b, sizes[i]); break;
        case 1: zxp_out_payload(&out, &f); break;
        default: zxp_out_payload_share(&out, f); break;
        }
        framed += sizes[i] > ZXP_INLINE_MAX;
        if (i % 3 != 2) {
            zframe_destroy(&f); /* NULL after zxp_out_payload took it */
        }
        cr_assert_eq(zmsg_size(out.payloads), framed, "item %zu (%zu bytes)", i, sizes[i]);
        if (i % 3 == 2) {
            /* a shared frame must outlive the send: keep it until then */
            zframe_t *keep = f;
            cr_assert_eq(zxp_out_send(&out, tx, NULL), 0);
            zframe_destroy(&keep);
            zxp_out_begin(&out, ZXP_WRESULT);
            framed = 0;
        }
        free(b);
    }
    zxp_out_fini(&out);

    zxp_in_t in;
    zxp_in_init(&in);
    for (size_t i = 0; i < N; i++) {
        if (i % 3 == 0) {
            cr_assert_eq(s_recv(&in, ZXP_ROLE_BROKER_W), 0, "%s", in.reason);
            cr_assert_eq(in.count, 3);
        }
        zxp_wresult_t r;
        zxp_get_wresult(&in, i % 3, &r);
        cr_assert_eq(r.seq, i + 1);
        cr_assert_eq(r.pid, 42);
        zframe_t *p = zxp_payload_take(&in);
        cr_assert_not_null(p);
        cr_assert_eq(zframe_size(p), sizes[i], "item %zu", i);
        for (size_t k = 0; k < sizes[i]; k++) {
            cr_assert_eq(zframe_data(p)[k], (uint8_t)('a' + i));
        }
        zframe_destroy(&p);
    }
    cr_assert_null(zxp_payload_take(&in), "one payload per item, no more");

    /* nil in the payload's place means "in a frame"; later fields are a
       newer version's, ignored */
    zmsg_t *m = s_raw("ZX\x02\x03", 4,
                      "\x91\x99\x05\xa1"
                      "f\x00\x00\x00\x00\x00\xc0\x07",
                      12);
    zmsg_addmem(m, "\x91\x01", 2);
    cr_assert_eq(zxp_decode(&in, &m, ZXP_ROLE_BROKER_C), 0, "%s", in.reason);
    zxp_submit_t sub;
    zxp_get_submit(&in, 0, &sub);
    cr_assert_eq(sub.seq, 5);
    zframe_t *p = zxp_payload_take(&in);
    cr_assert(p && zframe_size(p) == 2 && memcmp(zframe_data(p), "\x91\x01", 2) == 0);
    zframe_destroy(&p);
    zxp_in_fini(&in);
}

Test(proto, worker_messages_round_trip)
{
    zxp_out_t out;
    zxp_out_init(&out);
    zxp_in_t in;
    zxp_in_init(&in);

    zxp_out_begin(&out, ZXP_TASK);
    zxp_task_t t = {.session = SESSION,
                    .seq = 7,
                    .fn = {"sq", 2},
                    .pool = ZXP_POOL_PROCESS,
                    .timeout_ms = 1500,
                    .attempt = 2,
                    .flags = ZXP_F_CHUNK};
    zxp_put_task(&out, &t);
    zxp_out_payload(&out, NULL);
    zxp_out_send(&out, tx, NULL);
    cr_assert_eq(s_recv(&in, ZXP_ROLE_WORKER), 0, "%s", in.reason);
    zxp_task_t t2;
    zxp_get_task(&in, 0, &t2);
    cr_assert(memcmp(t2.session, SESSION, 16) == 0);
    cr_assert_eq(t2.seq, 7);
    cr_assert_eq(t2.pool, ZXP_POOL_PROCESS);
    cr_assert_eq(t2.timeout_ms, 1500);
    cr_assert_eq(t2.attempt, 2);
    cr_assert_eq(t2.flags, ZXP_F_CHUNK);

    zxp_out_begin(&out, ZXP_WRESULT);
    zxp_wresult_t r = {.session = SESSION,
                       .seq = 7,
                       .status = ZXP_ST_CRASHED,
                       .pid = 4242,
                       .pool = ZXP_POOL_PROCESS,
                       .slot_freed = false};
    zxp_put_wresult(&out, &r);
    zframe_t *err = zxp_error_frame("ProcessCrashed", "signal 11", "");
    zxp_out_payload(&out, &err);
    cr_assert_null(err);
    zxp_out_send(&out, tx, NULL);
    cr_assert_eq(s_recv(&in, ZXP_ROLE_BROKER_W), 0, "%s", in.reason);
    zxp_wresult_t r2;
    zxp_get_wresult(&in, 0, &r2);
    cr_assert_eq(r2.status, ZXP_ST_CRASHED);
    cr_assert_eq(r2.pid, 4242);
    cr_assert_eq(r2.slot_freed, false);

    zxp_out_begin(&out, ZXP_WCANCELLED);
    zxp_put_wcancelled(&out, SESSION, 9, ZXP_CANCEL_TERMINATED);
    zxp_out_send(&out, tx, NULL);
    cr_assert_eq(s_recv(&in, ZXP_ROLE_BROKER_W), 0, "%s", in.reason);
    cr_assert_eq(zxp_u(zxp_item(&in, 0), 2), ZXP_CANCEL_TERMINATED);

    zxp_out_begin(&out, ZXP_READY);
    zxp_ready_t ready = {.worker_id = SESSION,
                         .node = "node-r",
                         .pid = 77,
                         .threads = 4,
                         .procs = 2,
                         .prefetch = 1,
                         .heartbeat_ms = 500,
                         .nfns = 2};
    zxp_put_ready(&out, &ready);
    zxp_put_ready_fn(&out, "sq", ZXP_POOLS_THREAD);
    zxp_put_ready_fn(&out, "both", ZXP_POOLS_THREAD | ZXP_POOLS_PROCESS);
    zxp_put_ready_running(&out, 1);
    zxp_put_ready_task(&out, SESSION, 12, ZXP_POOL_PROCESS, NULL, 0);
    zxp_out_send(&out, tx, NULL);
    cr_assert_eq(s_recv(&in, ZXP_ROLE_BROKER_W), 0, "%s", in.reason);
    cr_assert_eq(in.cmd, ZXP_READY);
    const msgpack_object *h = zxp_item(&in, 0);
    cr_assert_eq(zxp_u(h, 0), ZXP_VERSION);
    cr_assert(memcmp(zxp_s(h, 1).ptr, SESSION, 16) == 0);
    zxp_str_t rn = zxp_s(h, 2);
    cr_assert(rn.len == 6 && memcmp(rn.ptr, "node-r", 6) == 0);
    cr_assert_eq(zxp_u(h, 3), 77);
    cr_assert_eq(zxp_u(h, 4), 4);
    cr_assert_eq(zxp_u(h, 5), 2);
    cr_assert_eq(zxp_u(h, 6), 1);
    cr_assert_eq(zxp_u(h, 7), 500);
    const msgpack_object *fns = zxp_o(h, 8);
    cr_assert_eq(fns->via.array.size, 2);
    zxp_str_t f1 = zxp_s(&fns->via.array.ptr[1], 0);
    cr_assert(f1.len == 4 && memcmp(f1.ptr, "both", 4) == 0);
    cr_assert_eq(zxp_u(&fns->via.array.ptr[1], 1), ZXP_POOLS_THREAD | ZXP_POOLS_PROCESS);
    const msgpack_object *run = zxp_o(h, 9);
    cr_assert_eq(run->via.array.size, 1);
    cr_assert(memcmp(zxp_s(&run->via.array.ptr[0], 0).ptr, SESSION, 16) == 0);
    cr_assert_eq(zxp_u(&run->via.array.ptr[0], 1), 12);
    cr_assert_eq(zxp_u(&run->via.array.ptr[0], 2), ZXP_POOL_PROCESS);

    cr_assert_eq(zxp_send_credit(tx, ZXP_POOL_THREAD, 3), 0);
    cr_assert_eq(s_recv(&in, ZXP_ROLE_BROKER_W), 0, "%s", in.reason);
    cr_assert_eq(in.cmd, ZXP_CREDIT);
    cr_assert_eq(zxp_u(&in.hdr, 1), 3);

    zxp_out_fini(&out);
    zxp_in_fini(&in);
}

Test(proto, client_control_messages_round_trip)
{
    zxp_in_t in;
    zxp_in_init(&in);
    cr_assert_eq(zxp_send_hello(tx, SESSION, "tester", 1000), 0);
    cr_assert_eq(s_recv(&in, ZXP_ROLE_BROKER_C), 0, "%s", in.reason);
    cr_assert_eq(in.cmd, ZXP_HELLO);
    cr_assert_eq(zxp_u(&in.hdr, 3), 1000);
    zxp_str_t name = zxp_s(&in.hdr, 2);
    cr_assert(name.len == 6 && memcmp(name.ptr, "tester", 6) == 0);

    cr_assert_eq(zxp_send_welcome(tx, NULL, SESSION, 500, 3, ZXP_MAX_MSG), 0);
    cr_assert_eq(s_recv(&in, ZXP_ROLE_CLIENT), 0, "%s", in.reason);
    cr_assert_eq(zxp_u(&in.hdr, 2), 3);

    zxp_out_t out;
    zxp_out_init(&out);
    zxp_out_begin(&out, ZXP_RESULT);
    zxp_result_t r = {.seq = 5,
                      .status = ZXP_ST_OK,
                      .node = {"n1", 2},
                      .pid = 9,
                      .pool = ZXP_POOL_THREAD,
                      .attempts = 1};
    zxp_put_result(&out, &r);
    zxp_out_payload_mem(&out, "\x05", 1);
    zxp_out_send(&out, tx, NULL);
    cr_assert_eq(s_recv(&in, ZXP_ROLE_CLIENT), 0, "%s", in.reason);
    zxp_result_t r2;
    zxp_get_result(&in, 0, &r2);
    cr_assert_eq(r2.seq, 5);
    cr_assert(r2.node.len == 2 && memcmp(r2.node.ptr, "n1", 2) == 0);

    for (int cmd = ZXP_HEARTBEAT; cmd <= ZXP_BYE; cmd++) {
        zxp_send_empty(tx, NULL, (uint8_t)cmd);
        cr_assert_eq(s_recv(&in, ZXP_ROLE_BROKER_C), 0);
        cr_assert_eq(in.cmd, cmd);
    }
    zxp_out_fini(&out);
    zxp_in_fini(&in);
}

/* zxp_recv once a message waits (it never waits itself) */
static int s_wire_recv(zxp_in_t *in, zsock_t *sock, zframe_t **rid_p, int role)
{
    zmq_pollitem_t it = {zsock_resolve(sock), 0, ZMQ_POLLIN, 0};
    cr_assert_eq(zmq_poll(&it, 1, 5000), 1, "a message arrives");
    return zxp_recv(in, sock, rid_p, role);
}

/* Decodes m both ways: zxp_decode on a copy, and zxp_recv from the wire,
   followed there by a good HEARTBEAT that must decode next (a malformed
   message is read whole, never leaving frames behind to shift the next). */
static void s_expect(zmsg_t *m, int role, int code)
{
    zxp_in_t in;
    zxp_in_init(&in);
    zmsg_t *wire = zmsg_size(m) > 0 ? zmsg_dup(m) : NULL;
    int rc = zxp_decode(&in, &m, role);
    cr_assert_null(m, "decode consumes the message");
    cr_assert_eq(rc, code, "got %d (%s), wanted %d", rc, zxp_strerror(rc), code);
    cr_assert(in.reason != NULL);
    if (wire) {
        cr_assert_eq(zmsg_send(&wire, tx), 0);
        cr_assert_eq(zxp_send_empty(tx, NULL, ZXP_HEARTBEAT), 0);
        zxp_in_fini(&in);
        zxp_in_init(&in);
        rc = s_wire_recv(&in, rx, NULL, role);
        cr_assert_eq(rc, code, "zxp_recv got %d (%s), wanted %d", rc, zxp_strerror(rc), code);
        cr_assert(in.reason != NULL);
        cr_assert_eq(s_wire_recv(&in, rx, NULL, role), 0, "%s", in.reason);
        cr_assert_eq(in.cmd, ZXP_HEARTBEAT);
        cr_assert_eq(zxp_recv(&in, rx, NULL, role), ZXP_E_AGAIN);
    }
    zxp_in_fini(&in);
}

Test(proto, malformed_messages_are_rejected_with_their_reason)
{
    const uint8_t sig_ok[4] = {'Z', 'X', ZXP_VERSION, ZXP_HEARTBEAT};
    const uint8_t empty[1] = {0x90};
    s_expect(zmsg_new(), ZXP_ROLE_BROKER_C, ZXP_E_SHORT);
    zmsg_t *one = zmsg_new();
    zmsg_addmem(one, sig_ok, 4);
    s_expect(one, ZXP_ROLE_BROKER_C, ZXP_E_SHORT);
    s_expect(s_raw("ZY\x01\x08", 4, empty, 1), ZXP_ROLE_BROKER_C, ZXP_E_SIG);
    s_expect(s_raw("ZX\x02", 3, empty, 1), ZXP_ROLE_BROKER_C, ZXP_E_SIG);
    s_expect(s_raw("ZX\x03\x08", 4, empty, 1), ZXP_ROLE_BROKER_C, ZXP_E_VERSION);
    s_expect(s_raw("ZX\x02\x7f", 4, empty, 1), ZXP_ROLE_BROKER_C, ZXP_E_CMD);
    /* TASK is for workers, not for the broker's client endpoint */
    s_expect(s_raw("ZX\x02\x22", 4, empty, 1), ZXP_ROLE_BROKER_C, ZXP_E_CMD);
    /* msgpack-c would reserve ~96 GB for this array header */
    s_expect(s_raw(sig_ok, 4, "\xdd\xff\xff\xff\xff", 5), ZXP_ROLE_BROKER_C, ZXP_E_MSGPACK);
    s_expect(s_raw(sig_ok, 4, "\xdf\xff\xff\xff\xff", 5), ZXP_ROLE_BROKER_C, ZXP_E_MSGPACK);
    s_expect(s_raw(sig_ok, 4, "\x92\x01", 2), ZXP_ROLE_BROKER_C, ZXP_E_MSGPACK); /* truncated */
    s_expect(s_raw(sig_ok, 4, "\x90\x90", 2), ZXP_ROLE_BROKER_C, ZXP_E_MSGPACK); /* trailing */
    s_expect(s_raw(sig_ok, 4, "\x01", 1), ZXP_ROLE_BROKER_C, ZXP_E_SHAPE);       /* not array */
    /* SUBMIT item with a string where the seq belongs */
    s_expect(s_raw("ZX\x02\x03", 4,
                   "\x91\x97\xa1x\xa1"
                   "f\x00\x00\x00\x00\x00",
                   11),
             ZXP_ROLE_BROKER_C, ZXP_E_SHAPE);
    /* a valid SUBMIT item but no payload frame */
    s_expect(s_raw("ZX\x02\x03", 4,
                   "\x91\x97\x01\xa1"
                   "f\x00\x00\x00\x00\x00",
                   10),
             ZXP_ROLE_BROKER_C, ZXP_E_PAYLOADS);
    /* an inline payload that is not a bin */
    zmsg_t *m0 = s_raw("ZX\x02\x03", 4,
                       "\x91\x98\x01\xa1"
                       "f\x00\x00\x00\x00\x00\xa1x",
                       12);
    s_expect(m0, ZXP_ROLE_BROKER_C, ZXP_E_SHAPE);
    /* an inline payload and a frame as well */
    m0 = s_raw("ZX\x02\x03", 4,
               "\x91\x98\x01\xa1"
               "f\x00\x00\x00\x00\x00\xc4\x01\x90",
               13);
    zmsg_addmem(m0, "\x90", 1);
    s_expect(m0, ZXP_ROLE_BROKER_C, ZXP_E_PAYLOADS);
    /* a header over the limit */
    size_t big = ZXP_MAX_HEADER + 1;
    char *buf = calloc(1, big);
    s_expect(s_raw(sig_ok, 4, buf, big), ZXP_ROLE_BROKER_C, ZXP_E_SIZE);
    free(buf);
}

/* One bad SUBMIT, RESULT or WRESULT item fails alone (zxp_item_bad) when
   it still names its task; the others of its batch decode. */
Test(proto, a_bad_item_that_names_its_task_is_marked_and_its_batch_decodes)
{
    zxp_in_t in;
    zxp_in_init(&in);
    /* SUBMIT: seq 1 good, seq 2 with pool 9, seq 3 with a string for retries,
       seq 4 good; payloads: inline (seq 3), frames for the others */
    zmsg_t *m = s_raw("ZX\x02\x03", 4,
                      "\x94"
                      "\x97\x01\xa1"
                      "f\x00\x00\x00\x00\x00"
                      "\x97\x02\xa1"
                      "f\x09\x00\x00\x00\x00"
                      "\x98\x03\xa1"
                      "f\x00\x00\xa1x\x00\x00\xc4\x01\x90"
                      "\x97\x04\xa1"
                      "f\x00\x00\x00\x00\x00",
                      1 + 9 + 9 + 13 + 9);
    zmsg_addmem(m, "\x91\x01", 2);
    zmsg_addmem(m, "\x91\x02", 2);
    zmsg_addmem(m, "\x91\x04", 2);
    cr_assert_eq(zxp_decode(&in, &m, ZXP_ROLE_BROKER_C), 0, "%s", in.reason);
    cr_assert_eq(in.count, 4);
    cr_assert_eq(zxp_item_bad(&in, 0), 0);
    cr_assert_eq(zxp_item_bad(&in, 1), ZXP_BAD_POOL);
    cr_assert_eq(zxp_item_bad(&in, 2), ZXP_BAD_FIELDS);
    cr_assert_eq(zxp_item_bad(&in, 3), 0);
    uint8_t want[] = {1, 2, 0, 4};
    for (size_t i = 0; i < 4; i++) {
        cr_assert_eq(zxp_u(zxp_item(&in, i), 0), i + 1, "every item names its seq");
        zframe_t *p = zxp_payload_take(&in);
        cr_assert(p && zframe_size(p) == (i == 2 ? 1u : 2u), "payload %zu in order", i);
        if (i != 2) {
            cr_assert_eq(((uint8_t *)zframe_data(p))[1], want[i]);
        }
        zframe_destroy(&p);
    }
    /* WRESULT with status 99: bad, but its session and seq are there */
    zxp_out_t out;
    zxp_out_init(&out);
    zxp_out_begin(&out, ZXP_WRESULT);
    uint8_t sess[16] = {1};
    zxp_wresult_t r = {.session = sess, .seq = 7, .status = 99, .pool = 1, .slot_freed = true};
    zxp_put_wresult(&out, &r);
    zxp_out_payload_mem(&out, "\xc0", 1);
    r.seq = 8;
    r.status = ZXP_ST_OK;
    zxp_put_wresult(&out, &r);
    zxp_out_payload_mem(&out, "\xc0", 1);
    cr_assert_eq(zxp_out_send(&out, tx, NULL), 0);
    cr_assert_eq(s_recv(&in, ZXP_ROLE_BROKER_W), 0, "%s", in.reason);
    cr_assert_eq(zxp_item_bad(&in, 0), ZXP_BAD_STATUS);
    cr_assert_eq(zxp_item_bad(&in, 1), 0);
    zxp_out_fini(&out);
    /* an item that names no task still drops its batch */
    m = s_raw("ZX\x02\x03", 4,
              "\x91\x97\xa1x\xa1"
              "f\x00\x00\x00\x00\x00",
              11);
    cr_assert_eq(zxp_decode(&in, &m, ZXP_ROLE_BROKER_C), ZXP_E_SHAPE);
    zxp_in_fini(&in);
}

Test(proto, mp_check_bounds_nesting_and_lengths)
{
    char deep[10000];
    memset(deep, 0x91, sizeof deep); /* 10,000 nested one-element arrays */
    cr_assert_eq(zxp_mp_check(deep, sizeof deep, ZXP_MAX_DEPTH), -1);
    char ok[33];
    memset(ok, 0x91, 32);
    ok[32] = 0x01;
    cr_assert_eq(zxp_mp_check(ok, 33, ZXP_MAX_DEPTH), 33);
    cr_assert_eq(zxp_mp_check(ok, 33, 31), -1);
    cr_assert_eq(zxp_mp_check("\xdb\xff\xff\xff\xff", 5, 32), -1); /* str32 past the end */
    cr_assert_eq(zxp_mp_check("\xc6\x00\x00\x00\x02"
                              "ab",
                              7, 32),
                 7);
    cr_assert_eq(zxp_mp_check("\xc1", 1, 32), -1);
    cr_assert_eq(zxp_mp_check("\x82\x01\x02\x03\x04", 5, 32), 5);
    cr_assert_eq(zxp_mp_check("\x82\x01\x02\x03", 4, 32), -1);
    cr_assert_eq(zxp_mp_check("\xd8\x01"
                              "0123456789abcdef",
                              18, 32),
                 18);
}

Test(proto, batch_limit_is_enforced)
{
    /* ZXP_MAX_BATCH + 1 CANCEL items */
    zxp_out_t out;
    zxp_out_init(&out);
    zxp_out_begin(&out, ZXP_CANCEL);
    for (int i = 0; i <= ZXP_MAX_BATCH; i++) {
        zxp_put_cancel(&out, (uint64_t)i, false);
    }
    zxp_out_send(&out, tx, NULL);
    zxp_out_fini(&out);
    zxp_in_t in;
    zxp_in_init(&in);
    cr_assert_eq(s_recv(&in, ZXP_ROLE_BROKER_C), ZXP_E_BATCH);
    zxp_in_fini(&in);
}

/* ---- revision 2.2: detached jobs ---------------------------------------------- */

Test(proto, hello_flags_are_optional_and_checked)
{
    zxp_in_t in;
    zxp_in_init(&in);
    cr_assert_eq(zxp_send_hello(tx, SESSION, "old", 1000), 0);
    cr_assert_eq(s_recv(&in, ZXP_ROLE_BROKER_C), 0, "%s", in.reason);
    cr_assert_eq(in.hdr.via.array.size, 5, "a 2.1 HELLO has no flags field");
    cr_assert_eq(zxp_hello_flags(&in), 0);
    cr_assert_eq(zxp_send_hello_flags(tx, SESSION, "job", 1000, ZXP_HELLO_JOB | ZXP_HELLO_ACCEPT),
                 0);
    cr_assert_eq(s_recv(&in, ZXP_ROLE_BROKER_C), 0, "%s", in.reason);
    cr_assert_eq(zxp_hello_flags(&in), ZXP_HELLO_JOB | ZXP_HELLO_ACCEPT);
    zxp_in_fini(&in);
    /* flags that are not a u32 drop the HELLO */
    const uint8_t sig[4] = {'Z', 'X', ZXP_VERSION, ZXP_HELLO};
    uint8_t h[64];
    size_t n = 0;
    h[n++] = 0x96;
    h[n++] = 0x02;
    h[n++] = 0xc4;
    h[n++] = 16;
    memcpy(h + n, SESSION, 16);
    n += 16;
    h[n++] = 0xa1;
    h[n++] = 'x';
    h[n++] = 0xcd; /* 1000 */
    h[n++] = 0x03;
    h[n++] = 0xe8;
    h[n++] = 0x01;   /* max_msg */
    size_t at = n++; /* flags */
    h[at] = 0xa1;    /* a str */
    h[n++] = 'f';
    s_expect(s_raw(sig, 4, h, n), ZXP_ROLE_BROKER_C, ZXP_E_SHAPE);
    h[at] = 0xcf; /* a uint64 over u32 */
    memset(h + at + 1, 0xff, 8);
    s_expect(s_raw(sig, 4, h, at + 9), ZXP_ROLE_BROKER_C, ZXP_E_SHAPE);
}

Test(proto, accepted_and_jresult_round_trip)
{
    zxp_out_t out;
    zxp_out_init(&out);
    zxp_in_t in;
    zxp_in_init(&in);
    zxp_out_begin(&out, ZXP_ACCEPTED);
    for (uint64_t s = 1; s <= 300; s++) {
        zxp_put_accepted(&out, s * 7);
    }
    cr_assert_eq(zxp_out_send(&out, tx, NULL), 0);
    cr_assert_eq(s_recv(&in, ZXP_ROLE_CLIENT), 0, "%s", in.reason);
    cr_assert_eq(in.cmd, ZXP_ACCEPTED);
    cr_assert_eq(in.count, 300);
    cr_assert_eq(zxp_u(zxp_item(&in, 299), 0), 2100);

    zxp_out_begin(&out, ZXP_JRESULT);
    char big[1000];
    memset(big, 'v', sizeof big);
    for (uint64_t i = 0; i < 3; i++) {
        zxp_jresult_t j = {.r = {.seq = 10 + i,
                                 .status = i == 1 ? ZXP_ST_RAISED : ZXP_ST_OK,
                                 .node = {"n1", 2},
                                 .pid = 42,
                                 .pool = ZXP_POOL_PROCESS,
                                 .attempts = 2},
                           .index = 100 + i};
        zxp_put_jresult(&out, &j);
        zxp_out_payload_mem(&out, big, i == 2 ? sizeof big : 1); /* the last in a frame */
    }
    cr_assert_eq(zxp_out_send(&out, tx, NULL), 0);
    cr_assert_eq(s_recv(&in, ZXP_ROLE_CLIENT), 0, "%s", in.reason);
    cr_assert_eq(in.cmd, ZXP_JRESULT);
    for (size_t i = 0; i < 3; i++) {
        zxp_jresult_t j;
        cr_assert_eq(zxp_item_bad(&in, i), 0);
        zxp_get_jresult(&in, i, &j);
        cr_assert_eq(j.r.seq, 10 + i);
        cr_assert_eq(j.index, 100 + i);
        cr_assert_eq(j.r.status, i == 1 ? ZXP_ST_RAISED : ZXP_ST_OK);
        cr_assert_eq(j.r.attempts, 2);
        cr_assert_eq(j.r.pool, ZXP_POOL_PROCESS);
        cr_assert(j.r.node.len == 2 && memcmp(j.r.node.ptr, "n1", 2) == 0);
        zframe_t *p = zxp_payload_take(&in);
        cr_assert_eq(zframe_size(p), i == 2 ? sizeof big : 1);
        zframe_destroy(&p);
    }
    /* a JRESULT item with an unknown status fails alone, like RESULT's */
    zxp_out_begin(&out, ZXP_JRESULT);
    zxp_jresult_t j = {.r = {.seq = 1, .status = 77}, .index = 1};
    zxp_put_jresult(&out, &j);
    zxp_out_payload_mem(&out, "\xc0", 1);
    j.r.seq = 2;
    j.r.status = ZXP_ST_OK;
    zxp_put_jresult(&out, &j);
    zxp_out_payload_mem(&out, "\xc0", 1);
    cr_assert_eq(zxp_out_send(&out, tx, NULL), 0);
    cr_assert_eq(s_recv(&in, ZXP_ROLE_CLIENT), 0, "%s", in.reason);
    cr_assert_eq(zxp_item_bad(&in, 0), ZXP_BAD_STATUS);
    cr_assert_eq(zxp_item_bad(&in, 1), 0);
    /* JRESULT and ACCEPTED go to clients only */
    zxp_out_begin(&out, ZXP_ACCEPTED);
    zxp_put_accepted(&out, 1);
    cr_assert_eq(zxp_out_send(&out, tx, NULL), 0);
    cr_assert_eq(s_recv(&in, ZXP_ROLE_BROKER_C), ZXP_E_CMD);
    zxp_out_fini(&out);
    zxp_in_fini(&in);
}

Test(proto, fetch_rack_and_jcancel_round_trip_and_are_bounded)
{
    zxp_in_t in;
    zxp_in_init(&in);
    zxp_fetch_t f = {.job = SESSION, .after = 5, .max = 1000, .wait_ms = 999999};
    cr_assert_eq(zxp_send_fetch(tx, &f), 0);
    cr_assert_eq(s_recv(&in, ZXP_ROLE_BROKER_C), 0, "%s", in.reason);
    cr_assert_eq(in.cmd, ZXP_FETCH);
    zxp_fetch_t g;
    zxp_get_fetch(&in, &g);
    cr_assert(memcmp(g.job, SESSION, 16) == 0);
    cr_assert_eq(g.after, 5);
    cr_assert_eq(g.max, 1000);
    cr_assert_eq(g.wait_ms, ZXP_FETCH_WAIT_MAX, "the encoder bounds the long poll");
    /* a raw FETCH asking to wait over 60 s is dropped */
    uint8_t h[32] = {0x94, 0xc4, 16};
    memcpy(h + 3, SESSION, 16);
    h[19] = 0x00;
    h[20] = 0x01;
    h[21] = 0xcd; /* 60001 */
    h[22] = 0xea;
    h[23] = 0x61;
    s_expect(s_raw("ZX\x02\x0f", 4, h, 24), ZXP_ROLE_BROKER_C, ZXP_E_SHAPE);
    /* FETCH is for the broker's client endpoint only */
    cr_assert_eq(zxp_send_fetch(tx, &f), 0);
    cr_assert_eq(s_recv(&in, ZXP_ROLE_CLIENT), ZXP_E_CMD);

    uint64_t seqs[ZXP_MAX_BATCH + 1];
    for (size_t i = 0; i <= ZXP_MAX_BATCH; i++) {
        seqs[i] = i * 3 + 1;
    }
    cr_assert_eq(zxp_send_rack(tx, SESSION, seqs, ZXP_MAX_BATCH), 0);
    cr_assert_eq(s_recv(&in, ZXP_ROLE_BROKER_C), 0, "%s", in.reason);
    cr_assert_eq(in.cmd, ZXP_RACK);
    cr_assert(memcmp(zxp_rack_job(&in), SESSION, 16) == 0);
    cr_assert_eq(zxp_rack_count(&in), ZXP_MAX_BATCH);
    cr_assert_eq(zxp_rack_seq(&in, ZXP_MAX_BATCH - 1), (ZXP_MAX_BATCH - 1) * 3 + 1);
    /* a RACK of 4097 seqs, or with a seq that is not a uint, is dropped */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_bin(&pk, 16);
    msgpack_pack_bin_body(&pk, SESSION, 16);
    msgpack_pack_array(&pk, ZXP_MAX_BATCH + 1);
    for (size_t i = 0; i <= ZXP_MAX_BATCH; i++) {
        msgpack_pack_uint64(&pk, seqs[i]);
    }
    s_expect(s_raw("ZX\x02\x12", 4, sb.data, sb.size), ZXP_ROLE_BROKER_C, ZXP_E_SHAPE);
    msgpack_sbuffer_clear(&sb);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_bin(&pk, 16);
    msgpack_pack_bin_body(&pk, SESSION, 16);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint64(&pk, 1);
    msgpack_pack_int64(&pk, -1);
    s_expect(s_raw("ZX\x02\x12", 4, sb.data, sb.size), ZXP_ROLE_BROKER_C, ZXP_E_SHAPE);
    msgpack_sbuffer_destroy(&sb);

    cr_assert_eq(zxp_send_jcancel(tx, SESSION), 0);
    cr_assert_eq(s_recv(&in, ZXP_ROLE_BROKER_C), 0, "%s", in.reason);
    cr_assert_eq(in.cmd, ZXP_JCANCEL);
    cr_assert(memcmp(zxp_job_id(&in), SESSION, 16) == 0);
    cr_assert_eq(zxp_send_empty(tx, NULL, ZXP_JOBS), 0);
    cr_assert_eq(s_recv(&in, ZXP_ROLE_BROKER_C), 0, "%s", in.reason);
    cr_assert_eq(in.cmd, ZXP_JOBS);
    zxp_in_fini(&in);
}

Test(proto, job_info_maps_round_trip)
{
    zxp_jobinfo_t a = {.name = "nightly",
                       .state = "detached",
                       .submitted = 1000000,
                       .queued = 10,
                       .running = 20,
                       .done = 999970,
                       .failed = 3,
                       .held = 500,
                       .held_bytes = 1ull << 33,
                       .acked = 999470,
                       .created = 1700000000,
                       .expires = 1700604800,
                       .next = 999970};
    memcpy(a.id, SESSION, 16);
    zxp_in_t in;
    zxp_in_init(&in);
    cr_assert_eq(zxp_send_jobinfo(tx, NULL, ZXP_FETCHED, SESSION, &a), 0);
    cr_assert_eq(s_recv(&in, ZXP_ROLE_CLIENT), 0, "%s", in.reason);
    cr_assert_eq(in.cmd, ZXP_FETCHED);
    cr_assert(memcmp(zxp_job_id(&in), SESSION, 16) == 0);
    zxp_jobinfo_t b;
    cr_assert_eq(zxp_get_jobinfo(zxp_jobinfo_obj(&in), &b), 0);
    cr_assert(memcmp(&a, &b, sizeof a) == 0, "every field survives the wire");

    zxp_jobinfo_t e = {.state = "", .error = "no such job"};
    memcpy(e.id, SESSION, 16);
    cr_assert_eq(zxp_send_jobinfo(tx, NULL, ZXP_JCANCELLED, SESSION, &e), 0);
    cr_assert_eq(s_recv(&in, ZXP_ROLE_CLIENT), 0, "%s", in.reason);
    cr_assert_eq(in.cmd, ZXP_JCANCELLED);
    cr_assert_eq(zxp_get_jobinfo(zxp_jobinfo_obj(&in), &b), 0);
    cr_assert_str_eq(b.error, "no such job");

    zxp_jobinfo_t two[2] = {a, e};
    cr_assert_eq(zxp_send_jobs_reply(tx, NULL, two, 2), 0);
    cr_assert_eq(s_recv(&in, ZXP_ROLE_CLIENT), 0, "%s", in.reason);
    cr_assert_eq(in.cmd, ZXP_JOBS_REPLY);
    cr_assert_eq(zxp_jobs_count(&in), 2);
    cr_assert_eq(zxp_get_jobinfo(zxp_jobs_info(&in, 0), &b), 0);
    cr_assert_eq(b.held_bytes, 1ull << 33);
    cr_assert_str_eq(b.name, "nightly");
    cr_assert_eq(zxp_get_jobinfo(zxp_jobs_info(&in, 1), &b), 0);
    cr_assert_str_eq(b.error, "no such job");

    /* unknown keys are ignored, wrong-typed values read as zero, a non-map
       is refused */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    msgpack_pack_str_with_body(&pk, "future", 6);
    msgpack_pack_uint8(&pk, 1);
    msgpack_pack_str_with_body(&pk, "done", 4);
    msgpack_pack_str_with_body(&pk, "x", 1);
    msgpack_pack_str_with_body(&pk, "held", 4);
    msgpack_pack_uint8(&pk, 9);
    msgpack_zone z;
    msgpack_zone_init(&z, 1024);
    msgpack_object o;
    cr_assert_eq(zxp_mp_unpack(sb.data, sb.size, &z, &o), 0);
    cr_assert_eq(zxp_get_jobinfo(&o, &b), 0);
    cr_assert_eq(b.done, 0);
    cr_assert_eq(b.held, 9);
    msgpack_object nil = {.type = MSGPACK_OBJECT_NIL};
    cr_assert_eq(zxp_get_jobinfo(&nil, &b), -1);
    msgpack_zone_destroy(&z);
    msgpack_sbuffer_destroy(&sb);
    /* a JOBS_REPLY whose list holds a non-map is dropped */
    s_expect(s_raw("ZX\x02\x14", 4, "\x91\x91\x01", 3), ZXP_ROLE_CLIENT, ZXP_E_SHAPE);
    zxp_in_fini(&in);
}

/* zxp_recv reads what zxp_out_send writes as zxp_decode does: a batch with
   framed and inline payloads, from a ROUTER with the sender's routing id;
   an empty socket allocates nothing and says ZXP_E_AGAIN; a message with
   more payload frames than items is read whole and refused. */
Test(proto, zxp_recv_decodes_batches_from_a_router_and_keeps_in_step)
{
    zsock_t *router = zsock_new_router("@inproc://zxp-router");
    zsock_t *dealer = zsock_new(ZMQ_DEALER);
    cr_assert(router && dealer);
    zsock_set_identity(dealer, "peer-1");
    cr_assert_eq(zsock_connect(dealer, "inproc://zxp-router"), 0);
    zxp_in_t in;
    zxp_in_init(&in);
    zframe_t *rid = NULL;
    cr_assert_eq(zxp_recv(&in, router, &rid, ZXP_ROLE_BROKER_C), ZXP_E_AGAIN);
    cr_assert_null(rid, "nothing received, no routing id");

    enum { N = 40 };
    zxp_out_t out;
    zxp_out_init(&out);
    zxp_out_begin(&out, ZXP_SUBMIT);
    uint8_t big[ZXP_INLINE_MAX + 100];
    for (uint64_t i = 0; i < N; i++) {
        zxp_submit_t sub = {.seq = i + 1, .fn = {"echo", 4}, .retries = -1};
        zxp_put_submit(&out, &sub);
        size_t len = i % 2 ? sizeof big : 8; /* odd items in frames */
        memset(big, (int)i, len);
        zxp_out_payload_mem(&out, big, len);
    }
    cr_assert_eq(zxp_out_send(&out, dealer, NULL), 0);
    zxp_out_fini(&out);
    cr_assert_eq(s_wire_recv(&in, router, &rid, ZXP_ROLE_BROKER_C), 0, "%s", in.reason);
    cr_assert(rid && zframe_streq(rid, "peer-1"), "the sender's routing id");
    zframe_destroy(&rid);
    cr_assert_eq(in.cmd, ZXP_SUBMIT);
    cr_assert_eq(in.count, N);
    for (uint64_t i = 0; i < N; i++) {
        zxp_submit_t sub;
        zxp_get_submit(&in, i, &sub);
        cr_assert_eq(sub.seq, i + 1);
        zframe_t *p = zxp_payload_take(&in);
        cr_assert_not_null(p);
        cr_assert_eq(zframe_size(p), i % 2 ? sizeof big : 8);
        cr_assert_eq(zframe_data(p)[0], (uint8_t)i);
        zframe_destroy(&p);
    }
    cr_assert_null(zxp_payload_take(&in));

    /* a SUBMIT of one inline item followed by a frame it does not call for */
    zmsg_t *m = s_raw("ZX\x02\x03", 4,
                      "\x91\x98\x01\xa1"
                      "f\x00\x00\x00\x00\x00\xc4\x01\x90",
                      13);
    zmsg_addmem(m, "\x90", 1);
    zmsg_addmem(m, "\x90", 1);
    cr_assert_eq(zmsg_send(&m, dealer), 0);
    cr_assert_eq(zxp_send_empty(dealer, NULL, ZXP_STATUS), 0);
    cr_assert_eq(s_wire_recv(&in, router, &rid, ZXP_ROLE_BROKER_C), ZXP_E_PAYLOADS);
    cr_assert(rid && zframe_streq(rid, "peer-1"), "a malformed message still names its sender");
    zframe_destroy(&rid);
    cr_assert_eq(s_wire_recv(&in, router, &rid, ZXP_ROLE_BROKER_C), 0, "%s", in.reason);
    cr_assert_eq(in.cmd, ZXP_STATUS);
    zframe_destroy(&rid);
    cr_assert_eq(zxp_recv(&in, router, &rid, ZXP_ROLE_BROKER_C), ZXP_E_AGAIN);
    cr_assert_null(rid);
    zxp_in_fini(&in);
    zsock_destroy(&dealer);
    zsock_destroy(&router);
}
