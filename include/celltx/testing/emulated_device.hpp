#pragma once
// emulated_device: a test backend that behaves like a device to every line of code above the
// backend (is_device = true: no host indexing of its tensors compiles, so every value crosses
// through ops or the explicit host staging of core/tensor.hpp) while its memory is host memory and
// its kernels are the CPU's. Models and ops instantiated on it prove, without a GPU, that the
// library needs nothing of a device backend beyond its storage_traits and ops::kernels.
#include <cstdlib>
#include <cstring>
#include <new>
#include "celltx/backend/ops.hpp"
#include "celltx/core/tensor.hpp"

namespace celltx::testing {

struct emulated_device {
    static constexpr const char* name = "emulated_device";
    static constexpr bool is_device = true;
};

} // namespace celltx::testing

namespace celltx {

template <>
struct storage_traits<testing::emulated_device> {
    static void* allocate(std::size_t bytes) {
        if (bytes == 0) return nullptr;
        void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
        if (!p) throw std::bad_alloc();
        memory_stats<testing::emulated_device>().add(bytes);
        return p;
    }
    static void deallocate(void* p, std::size_t bytes) noexcept {
        if (p) memory_stats<testing::emulated_device>().remove(bytes);
        std::free(p);
    }
    static void copy(void* dst, const void* src, std::size_t bytes) {
        if (bytes) std::memcpy(dst, src, bytes);
    }
    static void zero(void* dst, std::size_t bytes) {
        if (bytes) std::memset(dst, 0, bytes);
    }
    static void upload(void* dst, const void* host_src, std::size_t bytes) { copy(dst, host_src, bytes); }
    static void download(void* host_dst, const void* src, std::size_t bytes) { copy(host_dst, src, bytes); }
};

template <>
struct ops::kernels<testing::emulated_device> : ops::kernels<cpu> {};

} // namespace celltx
