/*  zx_net.h - small socket helpers shared by the local-cluster launcher,
    the tests and the benchmarks. */
#ifndef ZX_NET_H
#define ZX_NET_H

/* A TCP port on 127.0.0.1 that was free a moment ago (bind port 0, read it,
   close): the caller must still cope with losing a race for it. -1 on error. */
int zx__free_tcp_port(void);

#endif
