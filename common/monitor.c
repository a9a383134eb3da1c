/*  monitor.c - see zx_monitor.h. The events come from libzmq's socket
    monitor in its version 1 format: frame 1 is a 16-bit event id and a
    32-bit value, frame 2 the endpoint. */
#include "zx_monitor.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define S_EVENTS                                                                                   \
    (ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |                        \
     ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)

zsock_t *zx__monitor_new(zsock_t *sock)
{
    static atomic_uint counter;
    char ep[96];
    snprintf(ep, sizeof ep, "inproc://zx-monitor-%p-%u", (void *)sock,
             atomic_fetch_add(&counter, 1));
    if (zmq_socket_monitor(zsock_resolve(sock), ep, S_EVENTS) != 0) {
        zsys_warning("zexec: socket monitor: %s (refused handshakes go unreported)",
                     zmq_strerror(zmq_errno()));
        return NULL;
    }
    zsock_t *mon = zsock_new(ZMQ_PAIR);
    if (!mon || zsock_connect(mon, "%s", ep) != 0) {
        zsock_destroy(&mon);
        zmq_socket_monitor(zsock_resolve(sock), NULL, 0);
        return NULL;
    }
    zsock_set_rcvtimeo(mon, 0);
    zsock_set_linger(mon, 0);
    return mon;
}

void zx__monitor_destroy(zsock_t **mon, zsock_t *sock)
{
    if (*mon) {
        /* stopped first: libzmq's monitor end must not outlive its reader */
        if (sock) {
            zmq_socket_monitor(zsock_resolve(sock), NULL, 0);
        }
        zsock_destroy(mon);
    }
}

/* The ZMTP and ZAP protocol errors a misconfiguration produces, in words. */
static const char *s_protocol_reason(uint32_t v)
{
    switch (v) {
    case ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
        return "security mechanism mismatch (one side uses CURVE, the other does not)";
    case ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
        return "CURVE cryptographic error (wrong server key?)";
    case ZMQ_PROTOCOL_ERROR_ZMTP_KEY_EXCHANGE: return "CURVE key exchange failed";
    case ZMQ_PROTOCOL_ERROR_ZAP_UNSPECIFIED:
    case ZMQ_PROTOCOL_ERROR_ZAP_MALFORMED_REPLY:
    case ZMQ_PROTOCOL_ERROR_ZAP_BAD_REQUEST_ID:
    case ZMQ_PROTOCOL_ERROR_ZAP_BAD_VERSION:
    case ZMQ_PROTOCOL_ERROR_ZAP_INVALID_STATUS_CODE:
    case ZMQ_PROTOCOL_ERROR_ZAP_INVALID_METADATA: return "the authentication handler failed";
    default: return NULL;
    }
}

zx__hs_t zx__monitor_read(zsock_t *mon, zsock_t *sock, const char *peer, char *why, size_t size)
{
    zmsg_t *msg = zmsg_recv(mon);
    if (!msg) {
        return ZX__HS_NONE;
    }
    zframe_t *f = zmsg_first(msg);
    if (!f || zframe_size(f) != 6) {
        zmsg_destroy(&msg);
        return ZX__HS_OTHER;
    }
    const uint8_t *d = zframe_data(f);
    uint16_t event;
    uint32_t value;
    memcpy(&event, d, 2);
    memcpy(&value, d + 2, 4);
    zmsg_destroy(&msg);
    switch (event) {
    case ZMQ_EVENT_HANDSHAKE_SUCCEEDED: return ZX__HS_OK;
    case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
        /* the ZAP status code the other side's handler answered: 400 is
           "not allowed" (the key is not in its folder), 300 temporary */
        snprintf(why, size, "%s refused the handshake: key not allowed (ZAP status %u)", peer,
                 value);
        return ZX__HS_REFUSED;
    case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL: {
        const char *r = s_protocol_reason(value);
        if (r) {
            snprintf(why, size, "handshake with %s failed: %s", peer, r);
        } else {
            snprintf(why, size, "handshake with %s failed: ZMTP protocol error 0x%x", peer, value);
        }
        return ZX__HS_REFUSED;
    }
    case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        /* the other side gave up first (it saw the mismatch, or could not
           decrypt us): only our own mechanism can narrow it down */
        snprintf(why, size, "%s closed the connection during the handshake (%s; %s)", peer,
                 value ? strerror((int)value) : "no detail",
                 sock && zsock_mechanism(sock) == ZMQ_CURVE
                     ? "wrong server key, or no CURVE on the other side?"
                     : "this side uses no CURVE key: does the other side require CURVE?");
        return ZX__HS_FAILED_RETRY;
    default: return ZX__HS_OTHER;
    }
}

int zx__monitor_reconnect(zsock_t *sock, const char *endpoint)
{
    zsock_disconnect(sock, "%s", endpoint); /* fails harmlessly if libzmq forgot it already */
    return zsock_connect(sock, "%s", endpoint);
}
