// Host/device qualifiers for the math that both backends share. Kept free of
// Kokkos so that hand-written CUDA translation units can include it.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define KFUSE_HD __host__ __device__
#else
#define KFUSE_HD
#endif
#define KFUSE_HDI KFUSE_HD inline
// Unrolls the loop that follows in device code (the host compilers unroll on their own).
#if defined(__CUDACC__) || defined(__HIPCC__)
#define KFUSE_UNROLL _Pragma("unroll")
#else
#define KFUSE_UNROLL
#endif
