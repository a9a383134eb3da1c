/*  zx_error.h - setting this thread's zx_last_error() (common/error.c):
    every public constructor that returns NULL sets it first, with a public
    ZX_* code only (zexec.h; internal codes are mapped before they get here).
*/
#ifndef ZX_ERROR_H
#define ZX_ERROR_H

void zx__set_last_error(int code);

#endif
