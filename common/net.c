/*  net.c - small socket helpers (zx_net.h). */
#include "zx_net.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

/* Binds port on 127.0.0.1 (0: any) and lets it go: the port bound, or -1. */
static int s_try_port(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -1;
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int got = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0) {
        got = ntohs(a.sin_port);
    }
    close(fd);
    return got;
}

/* The port is chosen below the kernel's ephemeral range, not by binding port
   0: a port from that range, once released, can be taken by any connect()
   on the machine before the caller binds it (a worker reconnecting every
   100 ms to a dead endpoint is enough), while ports below it are only ever
   taken by an explicit bind. */
int zx__free_tcp_port(void)
{
    int lo = 32768, hi = 60999;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "re");
    if (f) {
        if (fscanf(f, "%d %d", &lo, &hi) != 2) {
            lo = 32768;
        }
        fclose(f);
    }
    int base = lo > 12000 ? 10000 : 1025;
    for (int i = 0; lo > base && i < 200; i++) {
        unsigned r = 0;
        if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r) {
            break;
        }
        int port = s_try_port(base + (int)(r % (unsigned)(lo - base)));
        if (port > 0) {
            return port;
        }
    }
    return s_try_port(0); /* no room below the range: any port the kernel gives */
}
