/*  zx_czmq.h - czmq's global set-up, once per process. */
#ifndef ZX_CZMQ_H
#define ZX_CZMQ_H

/* zsys_init, made safe to reach from several threads at once: czmq's own
   first-use check is not atomic, and a worker embedded in a program that
   also makes an executor on another thread would run zsys_init twice at
   once (czmq then asserts that no socket exists yet). Call it before the
   first socket of a client or worker. */
void zx__czmq_init(void);

#endif
