/*  fuzz_decode.c - libFuzzer target: zxf_decode in fuzz_harness.h. */
#include "fuzz_harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return zxf_decode(data, size);
}
