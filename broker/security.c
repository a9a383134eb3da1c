/*  security.c - the one place that decides whether the broker may bind an
    endpoint. Until authentication lands (the security issue: CURVE and
    shared-secret modes), a non-loopback bind is allowed with a warning;
    that issue replaces this function with a refusal unless keys, a secret or
    --insecure are configured.
*/
#include "zxb.h"

#include <string.h>

/* True for endpoints only this machine can reach: ipc, inproc, and tcp on
   127.0.0.0/8, ::1 or localhost. */
static bool s_is_local(const char *endpoint)
{
    if (strncmp(endpoint, "ipc://", 6) == 0 || strncmp(endpoint, "inproc://", 9) == 0) {
        return true;
    }
    if (strncmp(endpoint, "tcp://", 6) != 0) {
        return false;
    }
    const char *host = endpoint + 6;
    return strncmp(host, "127.", 4) == 0 || strncmp(host, "localhost:", 10) == 0 ||
           strncmp(host, "[::1]:", 6) == 0;
}

int zx__bind_check(const char *endpoint, bool insecure)
{
    if (s_is_local(endpoint)) {
        return 0;
    }
    if (insecure) {
        zsys_warning("binding %s with --insecure: anyone who can reach it may submit tasks or "
                     "register as a worker",
                     endpoint);
    } else {
        zsys_warning("binding %s, which is not loopback, without authentication: anyone who can "
                     "reach it may submit tasks or register as a worker (authentication arrives "
                     "with the security issue; it will then refuse unless --insecure is given)",
                     endpoint);
    }
    return 0;
}
