/*  czmq.c - see zx_czmq.h. */
#include "zx_czmq.h"

#include <czmq.h>
#include <pthread.h>
#include <stdio.h>

#if ZMQ_VERSION < ZMQ_MAKE_VERSION(ZX_ZMQ_MIN_MAJOR, ZX_ZMQ_MIN_MINOR, ZX_ZMQ_MIN_PATCH)
#error "zexec needs libzmq 4.3.2 or newer (CURVE with ZAP enforcement, handshake events)"
#endif

static pthread_once_t s_once = PTHREAD_ONCE_INIT;

static void s_init(void)
{
    zsys_init();
}

void zx__czmq_init(void)
{
    pthread_once(&s_once, s_init);
}

bool zx__zmq_version_ok(int major, int minor, int patch, char *err, size_t size)
{
    int have = ZMQ_MAKE_VERSION(major, minor, patch);
    int need = ZMQ_MAKE_VERSION(ZX_ZMQ_MIN_MAJOR, ZX_ZMQ_MIN_MINOR, ZX_ZMQ_MIN_PATCH);
    if (have >= need) {
        return true;
    }
    /* a shared libzmq older than the headers we were built with: refuse
       rather than run with CURVE that admits strangers when ZAP is away */
    snprintf(err, size,
             "libzmq %d.%d.%d is too old: zexec needs %d.%d.%d or newer (CURVE with ZAP "
             "enforcement and handshake events)",
             major, minor, patch, ZX_ZMQ_MIN_MAJOR, ZX_ZMQ_MIN_MINOR, ZX_ZMQ_MIN_PATCH);
    return false;
}

bool zx__zmq_runtime_ok(char *err, size_t size)
{
    int major, minor, patch;
    zmq_version(&major, &minor, &patch);
    return zx__zmq_version_ok(major, minor, patch, err, size);
}
