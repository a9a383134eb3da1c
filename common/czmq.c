/*  czmq.c - see zx_czmq.h. */
#include "zx_czmq.h"

#include <czmq.h>
#include <pthread.h>

static pthread_once_t s_once = PTHREAD_ONCE_INIT;

static void s_init(void)
{
    zsys_init();
}

void zx__czmq_init(void)
{
    pthread_once(&s_once, s_init);
}
