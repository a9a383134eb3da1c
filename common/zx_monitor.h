/*  zx_monitor.h - handshake watch on a connecting socket: a refused
    handshake (an unknown CURVE key, CURVE against plain, a broken allowlist)
    is otherwise silent, and libzmq 4.3 does not reconnect after one, so a
    peer would wait forever. zx__monitor_new attaches a libzmq socket monitor
    (zmq_socket_monitor) to the socket and gives back its PAIR end, which the
    owner polls in its own loop (no extra thread); zx__monitor_read turns
    each event into what happened and, for a failure, a sentence naming the
    side that refused and why. The PAIR and the socket belong to one thread. */
#ifndef ZX_MONITOR_H
#define ZX_MONITOR_H

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>

/* Handshakes closed without detail in a row that count as a refusal: a
   refusing broker sometimes closes before its ERROR is read (EPIPE), and
   the next attempt, 100 ms later, usually names the reason. */
#define ZX__HS_NO_DETAIL_MAX 10

typedef enum {
    ZX__HS_NONE = 0,     /* no event waits */
    ZX__HS_OTHER,        /* an event we do not act on */
    ZX__HS_OK,           /* a handshake succeeded */
    ZX__HS_REFUSED,      /* refused for good: libzmq will not reconnect */
    ZX__HS_FAILED_RETRY, /* failed without detail: libzmq reconnects by itself */
} zx__hs_t;

/* Starts a monitor of sock's handshake events; returns the PAIR socket to
   poll for them, NULL on error (the socket then goes unwatched). */
zsock_t *zx__monitor_new(zsock_t *sock);

/* Stops the monitor of sock and destroys its PAIR end; before sock is
   destroyed. Accepts a NULL *mon. */
void zx__monitor_destroy(zsock_t **mon, zsock_t *sock);

/* Reads one event from mon (the monitor of sock) without waiting. For a
   failure, writes into why who refused and for what reason (peer names the
   other side, e.g. "the broker at tcp://h:5570"). */
zx__hs_t zx__monitor_read(zsock_t *mon, zsock_t *sock, const char *peer, char *why, size_t size);

/* Reconnects sock to endpoint after a refusal (libzmq gave the connection
   up): disconnect, then connect again. 0 on success. */
int zx__monitor_reconnect(zsock_t *sock, const char *endpoint);

#endif
