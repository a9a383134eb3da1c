/*  zx_net.h - small socket helpers shared by the local-cluster launcher,
    the tests and the benchmarks. */
#ifndef ZX_NET_H
#define ZX_NET_H

/* A TCP port on 127.0.0.1 that was free a moment ago: chosen at random
   below the kernel's ephemeral range (net.c says why) and checked by a bind.
   The caller must still cope with losing a race for it. -1 on error. */
int zx__free_tcp_port(void);

#endif
