#pragma once
// CELLTX_HOST_DEVICE marks the per-element math that every backend runs (backend/math/, the Philox
// generator of core/rng.hpp): __host__ __device__ under nvcc, nothing for a plain C++ compiler. The
// CPU kernels call the same functions, so the CPU tests exercise the device's arithmetic too.
#if defined(__CUDACC__)
#define CELLTX_HOST_DEVICE __host__ __device__
#else
#define CELLTX_HOST_DEVICE
#endif
