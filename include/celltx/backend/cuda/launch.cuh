#pragma once
// Kernel launches and the small device helpers every CUDA kernel family shares; compiled by nvcc
// only. CELLTX_CUDA_LAUNCH(grid, block, shared_bytes, kernel, args...) launches on cuda_stream() and
// checks the launch (backend/cuda/runtime.hpp says how errors surface).
#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>
#include "celltx/backend/cuda/memory.hpp"
#include "celltx/backend/cuda/runtime.hpp"
#include "celltx/core/shape.hpp"

namespace celltx::cuda_detail {

template <class... P, class... A>
void launch_checked(const char* call, const char* file, int line, dim3 grid, dim3 block, std::size_t shared_bytes, void (*kernel)(P...),
                    A&&... args) {
    if (grid.x == 0 || grid.y == 0 || grid.z == 0) return;  // no work
    kernel<<<grid, block, shared_bytes, cuda_stream()>>>(std::forward<A>(args)...);
    check_cuda(cudaGetLastError(), call, file, line);
    if (sync_after_launch()) check_cuda(cudaStreamSynchronize(cuda_stream()), call, file, line);
}

/// Blocks of `threads` for a grid-stride loop over n items (at most 2^20 blocks; 0 when n == 0).
inline unsigned blocks_for(index_t n, int threads) {
    if (n <= 0) return 0;
    return static_cast<unsigned>(std::min<index_t>((n + threads - 1) / threads, index_t{1} << 20));
}

/// The global index of this thread and the stride of a grid-stride loop.
__device__ inline index_t thread_index() { return static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ inline index_t grid_stride() { return static_cast<index_t>(gridDim.x) * blockDim.x; }

/// min of two index values (no ambiguity between CUDA's integer overloads).
__device__ inline index_t imin(index_t a, index_t b) { return a < b ? a : b; }

/// Sum over the lanes of a warp (every lane gets it), in a fixed butterfly order.
template <class A>
__device__ inline A warp_sum(A v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/// Sum over the `width` lanes (a power of two <= 32) of a lane group, every lane of it gets it.
template <class A>
__device__ inline A group_sum(A v, int width) {
    for (int o = width >> 1; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o, width);
    return v;
}

/// Sum of v over the block (blockDim.x a multiple of 32, at most 1024) in a fixed order; the result
/// is valid in thread 0. `shared` holds 32 values.
template <class A>
__device__ inline A block_sum(A v, A* shared) {
    v = warp_sum(v);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    A s = A(0);
    if (threadIdx.x == 0)
        for (int w = 0; w < static_cast<int>(blockDim.x >> 5); ++w) s += shared[w];
    return s;
}

/// The segment s with offsets[s] <= e < offsets[s+1] (offsets non-decreasing, [count + 1] entries):
/// the last s whose offset is <= e.
__device__ inline index_t segment_of(const index_t* offsets, index_t count, index_t e) {
    index_t lo = 0, hi = count;  // answer in [lo, hi)
    while (hi - lo > 1) {
        const index_t mid = lo + (hi - lo) / 2;
        if (offsets[mid] <= e) lo = mid;
        else hi = mid;
    }
    return lo;
}

} // namespace celltx::cuda_detail

/// Launches `kernel` (the first of the variadic arguments) with the rest as its arguments, on
/// cuda_stream(), and checks the launch.
#define CELLTX_CUDA_LAUNCH(grid, block, shared_bytes, ...) \
    ::celltx::cuda_detail::launch_checked(#__VA_ARGS__, __FILE__, __LINE__, (grid), (block), (shared_bytes), __VA_ARGS__)
