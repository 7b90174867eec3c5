// Hot loops compiled twice, for the x86-64 baseline (SSE2) and for AVX2, the copy picked at
// load time for the CPU it runs on (GCC function multiversioning). Both copies compute the
// same IEEE operations in the same order: -ffp-contract=off forbids FMA contraction and the
// "avx2" target does not enable FMA either, so results are bit-identical on every CPU.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define SSD_EXT_SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define SSD_EXT_SIMD_CLONES
#endif
