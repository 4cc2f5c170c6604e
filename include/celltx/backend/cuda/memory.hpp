#pragma once
// Device memory for Tensor<T, cuda>: stream-ordered allocation from the device's memory pool
// (cudaMallocAsync / cudaFreeAsync on cuda_stream(); the pool keeps freed blocks for reuse instead of
// returning them to the driver, so a training step allocates without system calls), never managed
// memory. memory_stats<cuda>() counts the live and peak bytes of every device tensor and scratch
// buffer. Host code only (plain C++ compilers can use it when linked with CUDA::cudart).
//  - Uploads of up to 4 MB go through pinned staging buffers, so they are truly asynchronous (a copy
//    from pageable memory may wait for the stream); larger ones copy and wait.
//  - Downloads wait for the stream: the host reads the values next.
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <fmt/format.h>
#include "celltx/backend/cuda/runtime.hpp"
#include "celltx/core/error.hpp"
#include "celltx/core/tensor.hpp"

namespace celltx::cuda_detail {

/// Whether the device has stream-ordered memory pools (every GPU celltx targets does; some
/// virtualised ones do not: there celltx falls back to cudaMalloc / cudaFree). On first use it sets
/// the default pool's release threshold to the maximum, so freed memory stays in the pool.
inline bool memory_pool_enabled() {
    static const bool enabled = [] {
        int dev = 0, supported = 0;
        CELLTX_CUDA_CHECK(cudaGetDevice(&dev));
        CELLTX_CUDA_CHECK(cudaDeviceGetAttribute(&supported, cudaDevAttrMemoryPoolsSupported, dev));
        if (!supported) return false;
        cudaMemPool_t pool = nullptr;
        CELLTX_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, dev));
        std::uint64_t threshold = std::numeric_limits<std::uint64_t>::max();
        CELLTX_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
        return true;
    }();
    return enabled;
}

/// A few pinned host buffers that small uploads are staged through; an event per buffer says when
/// its last copy has left it.
class UploadStaging {
public:
    static constexpr std::size_t slot_bytes = std::size_t{4} << 20;
    static constexpr int slots = 4;

    static UploadStaging& instance() {
        static UploadStaging* s = new UploadStaging();  // never destroyed: pinned memory outlives static tensors
        return *s;
    }

    /// Copies `bytes` (<= slot_bytes) from host memory to device memory `dst`, asynchronously.
    void upload(void* dst, const void* src, std::size_t bytes) {
        std::lock_guard<std::mutex> lock(mutex_);
        Slot& s = slot_[next_];
        next_ = (next_ + 1) % slots;
        if (!s.buffer) {
            CELLTX_CUDA_CHECK(cudaHostAlloc(&s.buffer, slot_bytes, cudaHostAllocDefault));
            CELLTX_CUDA_CHECK(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming));
        } else {
            CELLTX_CUDA_CHECK(cudaEventSynchronize(s.done));  // its previous copy has left the buffer
        }
        std::memcpy(s.buffer, src, bytes);
        CELLTX_CUDA_CHECK(cudaMemcpyAsync(dst, s.buffer, bytes, cudaMemcpyHostToDevice, cuda_stream()));
        CELLTX_CUDA_CHECK(cudaEventRecord(s.done, cuda_stream()));
    }

private:
    struct Slot {
        void* buffer = nullptr;
        cudaEvent_t done = nullptr;
    };
    std::mutex mutex_;
    Slot slot_[slots];
    int next_ = 0;
};

} // namespace celltx::cuda_detail

namespace celltx {

template <>
struct storage_traits<cuda> {
    static void* allocate(std::size_t bytes) {
        if (bytes == 0) return nullptr;
        void* p = nullptr;
        const cudaError_t e = cuda_detail::memory_pool_enabled() ? cudaMallocAsync(&p, bytes, cuda_stream()) : cudaMalloc(&p, bytes);
        if (e != cudaSuccess) {
            cudaGetLastError();
            throw Error(fmt::format(fmt::runtime("CUDA could not allocate {} bytes of device memory ({}: {}); celltx holds {} bytes live, "
                                                 "{} at the peak"),
                                    bytes, cudaGetErrorName(e), cudaGetErrorString(e), memory_stats<cuda>().live.load(),
                                    memory_stats<cuda>().peak.load()));
        }
        memory_stats<cuda>().add(bytes);
        return p;
    }
    static void deallocate(void* p, std::size_t bytes) noexcept {
        if (!p) return;
        memory_stats<cuda>().remove(bytes);
        // Stream-ordered: the block returns to the pool once the queued work that uses it is done.
        // Errors are ignored here (a destructor at exit may run after the runtime has shut down).
        const cudaError_t e = cuda_detail::memory_pool_enabled() ? cudaFreeAsync(p, cuda_stream()) : cudaFree(p);
        if (e != cudaSuccess) cudaGetLastError();
    }
    static void copy(void* dst, const void* src, std::size_t bytes) {
        if (bytes) CELLTX_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cuda_stream()));
    }
    static void zero(void* dst, std::size_t bytes) {
        if (bytes) CELLTX_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, cuda_stream()));
    }
    static void upload(void* dst, const void* host_src, std::size_t bytes) {
        if (bytes == 0) return;
        if (bytes <= cuda_detail::UploadStaging::slot_bytes) {
            cuda_detail::UploadStaging::instance().upload(dst, host_src, bytes);
            return;
        }
        CELLTX_CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, cuda_stream()));
        CELLTX_CUDA_CHECK(cudaStreamSynchronize(cuda_stream()));  // the source may be reused when we return
    }
    static void download(void* host_dst, const void* src, std::size_t bytes) {
        if (bytes == 0) return;
        CELLTX_CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, cuda_stream()));
        CELLTX_CUDA_CHECK(cudaStreamSynchronize(cuda_stream()));
    }
};

} // namespace celltx
