// Host/device qualifiers for the math that both backends share. Kept free of
// Kokkos so that hand-written CUDA translation units can include it.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define KFUSE_HD __host__ __device__
#else
#define KFUSE_HD
#endif
#define KFUSE_HDI KFUSE_HD inline
// Unrolls the loop that follows in device code (the host compilers unroll on
// their own). In the device pass only: nvcc hands the pragma to the host
// compiler otherwise, which warns of an unknown pragma.
#if defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__)
#define KFUSE_UNROLL _Pragma("unroll")
#else
#define KFUSE_UNROLL
#endif
