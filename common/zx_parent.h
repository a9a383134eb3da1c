/*  zx_parent.h - daemons started by a program (a local cluster) stop when
    that program dies, even by SIGKILL. posix_spawn cannot set
    PR_SET_PDEATHSIG, and PDEATHSIG follows the spawning thread, not the
    process, so the launcher passes its pid in ZEXEC_PARENT_PID and the
    daemon compares it with getppid() on its heartbeat tick. */
#ifndef ZX_PARENT_H
#define ZX_PARENT_H

#include <stdbool.h>

#define ZX_PARENT_ENV "ZEXEC_PARENT_PID"

/* True when ZEXEC_PARENT_PID was set at the first call and this process has
   since been re-parented (its launcher is gone). Cheap: one getppid(). */
bool zx__parent_gone(void);

#endif
