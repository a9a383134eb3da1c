/*  error.c - the public error codes: their names (zx_strerror) and this
    thread's last error, set by the NULL-returning calls of the client and
    of the embeddable worker alike (zx_error.h). */
#include "zx_error.h"
#include "zexec.h"

static _Thread_local int s_last_error;

void zx__set_last_error(int code)
{
    s_last_error = code;
}

int zx_last_error(void)
{
    return s_last_error;
}

const char *zx_strerror(int code)
{
    switch (code) {
    case ZX_OK: return "success";
    case ZX_ETIMEOUT: return "timed out waiting";
    case ZX_ECANCELLED: return "cancelled";
    case ZX_ERAISED: return "the task raised an error";
    case ZX_ESHUTDOWN: return "executor is shut down";
    case ZX_EINVAL: return "invalid argument";
    case ZX_ENOMEM: return "out of memory";
    case ZX_ECONN: return "broker unreachable";
    case ZX_ENOFUNC: return "no worker offers the function";
    case ZX_ETIMELIMIT: return "task exceeded its time limit";
    case ZX_ECRASHED: return "the process running the task crashed";
    case ZX_EWORKERLOST: return "worker lost and retries exhausted";
    case ZX_EREJECTED: return "rejected by the broker";
    case ZX_EMEMORY: return "task exceeded its memory limit";
    case ZX_ENOTALLOWED: return "not allowed on this worker or pool";
    case ZX_EPROTO: return "protocol error";
    case ZX_EEND: return "no more items";
    case ZX_EDETACHED: return "detached: fetch its results with zx_job_attach";
    case ZX_EDONE: return "the job has no more results";
    case ZX_ENOJOB: return "no such job at the broker";
    default: return "unknown error";
    }
}
