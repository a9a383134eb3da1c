/*  fuzz_msgpack.c - libFuzzer target: zxf_msgpack in fuzz_harness.h. */
#include "fuzz_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return zxf_msgpack(data, size);
}
