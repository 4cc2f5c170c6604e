#pragma once
// The dropout decision every backend draws its masks by: element i of a CounterRng stream is kept
// iff uniform(i) = (bits + 1)·2⁻³² > p, bits being lane i & 3 of Philox block i >> 2
// (PhiloxStream::element_bits). Kernels may compare the raw bits with keep_threshold(p) instead
// (dropout_keeps_above): the same decision for every p in [0, 1) (tests/test_ops.cpp (suite ops_cpu) checks it).
#include <cstdint>
#include "celltx/core/host_device.hpp"
#include "celltx/core/rng.hpp"

namespace celltx::math {

/// Whether dropout of probability p keeps the element whose 32 random bits are `bits`.
CELLTX_HOST_DEVICE inline bool dropout_keeps(std::uint32_t bits, double p) noexcept { return uint_to_unit(bits) > p; }

/// The same decision in integers: threshold = ops::keep_threshold(p) = ⌊p·2³²⌋, p in [0, 1).
CELLTX_HOST_DEVICE inline bool dropout_keeps_above(std::uint32_t bits, std::uint32_t threshold) noexcept { return bits >= threshold; }

/// The keep factor of an element: `scale` (1/(1−p)) when kept, 0 otherwise.
template <class T>
CELLTX_HOST_DEVICE inline T dropout_factor(std::uint32_t bits, std::uint32_t threshold, T scale) noexcept {
    return dropout_keeps_above(bits, threshold) ? scale : T(0);
}

} // namespace celltx::math
