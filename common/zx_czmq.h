/*  zx_czmq.h - czmq's global set-up, once per process. */
#ifndef ZX_CZMQ_H
#define ZX_CZMQ_H

#include <stdbool.h>
#include <stddef.h>

/* zsys_init, made safe to reach from several threads at once: czmq's own
   first-use check is not atomic, and a worker embedded in a program that
   also makes an executor on another thread would run zsys_init twice at
   once (czmq then asserts that no socket exists yet). Call it before the
   first socket of a client or worker. */
void zx__czmq_init(void);

/* The oldest libzmq zexec runs on: 4.3.2 (CURVE with ZAP enforcement,
   ZMQ_ZAP_ENFORCE_DOMAIN, and the handshake events of its socket monitor). */
#define ZX_ZMQ_MIN_MAJOR 4
#define ZX_ZMQ_MIN_MINOR 3
#define ZX_ZMQ_MIN_PATCH 2

/* Whether libzmq major.minor.patch is new enough; if not, writes a sentence
   saying so into err. */
bool zx__zmq_version_ok(int major, int minor, int patch, char *err, size_t size);
/* The same for the libzmq this process runs with (zmq_version). */
bool zx__zmq_runtime_ok(char *err, size_t size);

#endif
