#pragma once
// The CUDA runtime as celltx uses it: checked calls, the one stream, the device query. Host code
// only: a plain C++ compiler can include it when the program links CUDA::cudart.
//  - Every CUDA and cuBLAS call goes through CELLTX_CUDA_CHECK / CELLTX_CUBLAS_CHECK, and every kernel
//    launch through CELLTX_CUDA_LAUNCH (backend/cuda/launch.cuh): a failure throws celltx::Error naming
//    the call, the file and the line. Kernels run asynchronously, so an error inside one surfaces at a
//    later call; CELLTX_CUDA_SYNC=1 in the environment synchronises after every launch, so that the
//    error names the launch that caused it.
//  - One stream for everything (cuda_stream(): kernels, cuBLAS, allocation, copies), so the order of
//    the calls is the order of the work and nothing else needs synchronising; the host waits only
//    where it reads results (downloads, ops that return host values).
#include <cstdlib>
#include <string_view>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <fmt/format.h>
#include "celltx/core/error.hpp"

namespace celltx::cuda_detail {

[[noreturn]] inline void throw_cuda_error(cudaError_t e, const char* call, const char* file, int line) {
    throw Error(fmt::format(fmt::runtime("CUDA error {} ({}) in {} at {}:{}"), cudaGetErrorName(e), cudaGetErrorString(e), call, file, line));
}

inline void check_cuda(cudaError_t e, const char* call, const char* file, int line) {
    if (e != cudaSuccess) {
        cudaGetLastError();  // clear a non-sticky error, so that the next call does not report it again
        throw_cuda_error(e, call, file, line);
    }
}

inline const char* cublas_status_name(cublasStatus_t s) {
    switch (s) {
        case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
        case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
        case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
        case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
        case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
        case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
        case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
        case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
        case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
        default: return "unknown cuBLAS status";
    }
}

inline void check_cublas(cublasStatus_t s, const char* call, const char* file, int line) {
    if (s != CUBLAS_STATUS_SUCCESS)
        throw Error(fmt::format(fmt::runtime("cuBLAS error {} ({}) in {} at {}:{}"), cublas_status_name(s), static_cast<int>(s), call, file, line));
}

/// CELLTX_CUDA_SYNC=1: synchronise after every kernel launch (debugging: errors name their launch).
inline bool sync_after_launch() {
    static const bool on = [] {
        const char* v = std::getenv("CELLTX_CUDA_SYNC");
        return v != nullptr && std::string_view(v) != "0" && std::string_view(v) != "";
    }();
    return on;
}

} // namespace celltx::cuda_detail

/// Checks a CUDA runtime call: throws celltx::Error naming the call, the file and the line.
#define CELLTX_CUDA_CHECK(expr) ::celltx::cuda_detail::check_cuda((expr), #expr, __FILE__, __LINE__)
/// Checks a cuBLAS call the same way.
#define CELLTX_CUBLAS_CHECK(expr) ::celltx::cuda_detail::check_cublas((expr), #expr, __FILE__, __LINE__)

namespace celltx {

/// True when a CUDA device can be used (GPU tests skip otherwise).
inline bool cuda_device_available() {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();  // clear the "no device" error
        return false;
    }
    return n > 0;
}

/// The stream every celltx CUDA call runs on (created on first use, never destroyed: work queued
/// by static objects' destructors must still find it).
inline cudaStream_t cuda_stream() {
    static const cudaStream_t s = [] {
        cudaStream_t st = nullptr;
        CELLTX_CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
        return st;
    }();
    return s;
}

/// Waits until every queued celltx kernel and copy has finished (benchmarks time with it).
inline void cuda_synchronize() { CELLTX_CUDA_CHECK(cudaStreamSynchronize(cuda_stream())); }

/// The current device's properties, read once.
inline const cudaDeviceProp& cuda_device_properties() {
    static const cudaDeviceProp props = [] {
        int dev = 0;
        CELLTX_CUDA_CHECK(cudaGetDevice(&dev));
        cudaDeviceProp p{};
        CELLTX_CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
        return p;
    }();
    return props;
}

} // namespace celltx
