#pragma once
// Device memory for Tensor<T, cuda>: cudaMalloc'd, copied with cudaMemcpy. Host-side code only
// (plain C++ compilers can use it when linked with CUDA::cudart).
#include <cuda_runtime.h>
#include <fmt/format.h>
#include "celltx/core/error.hpp"
#include "celltx/core/tensor.hpp"

namespace celltx {

/// Throws celltx::Error naming the call and CUDA's message when `e` is not cudaSuccess.
inline void cuda_check(cudaError_t e, const char* what) {
    if (e != cudaSuccess) throw Error(fmt::format(fmt::runtime("CUDA error in {}: {} ({})"), what, cudaGetErrorString(e), static_cast<int>(e)));
}

/// True when a CUDA device can be used (GPU tests skip otherwise).
inline bool cuda_device_available() {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();  // clear the sticky "no device" error
        return false;
    }
    return n > 0;
}

template <>
struct storage_traits<cuda> {
    static void* allocate(std::size_t bytes) {
        if (bytes == 0) return nullptr;
        void* p = nullptr;
        cuda_check(cudaMalloc(&p, bytes), "cudaMalloc");
        memory_stats<cuda>().add(bytes);
        return p;
    }
    static void deallocate(void* p, std::size_t bytes) noexcept {
        if (!p) return;
        memory_stats<cuda>().remove(bytes);
        cudaFree(p);
    }
    static void copy(void* dst, const void* src, std::size_t bytes) {
        if (bytes) cuda_check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice), "cudaMemcpy (device to device)");
    }
    static void zero(void* dst, std::size_t bytes) {
        if (bytes) cuda_check(cudaMemset(dst, 0, bytes), "cudaMemset");
    }
    static void upload(void* dst, const void* host_src, std::size_t bytes) {
        if (bytes) cuda_check(cudaMemcpy(dst, host_src, bytes, cudaMemcpyHostToDevice), "cudaMemcpy (host to device)");
    }
    static void download(void* host_dst, const void* src, std::size_t bytes) {
        if (bytes) cuda_check(cudaMemcpy(host_dst, src, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy (device to host)");
    }
};

} // namespace celltx
