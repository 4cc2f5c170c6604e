#pragma once
// The online softmax (Milakov & Gimelshein 2018) that the attention kernels and Sinkhorn's soft-min
// run block by block, on every backend: a running maximum and a running sum of exp(s − max).
#include <cmath>
#include "celltx/core/host_device.hpp"

namespace celltx::math {

/// Moves the running max to max(max, block_max) and scales the running sum to it; returns the
/// factor exp(old max − new max) by which every accumulator of the row must be scaled (0 on the
/// first block, when max was −inf). The block's own exp(s − max) terms are added to sum after.
template <class T>
CELLTX_HOST_DEVICE inline T online_softmax_rescale(T& max, T& sum, T block_max) {
    const T new_max = max < block_max ? block_max : max;  // std::max's choice, also for NaN
    const T corr = std::exp(max - new_max);
    sum = sum * corr;
    max = new_max;
    return corr;
}

/// log Σ exp(s) of a finished row: max + log(sum).
template <class T>
CELLTX_HOST_DEVICE inline T online_softmax_lse(T max, T sum) {
    return max + std::log(sum);
}

} // namespace celltx::math
