#pragma once
// What a forward call needs besides its inputs: train/eval mode and where randomness comes from.
#include <cstdint>

namespace celltx {

/// Passed to every forward. Dropout masks are pure functions of (seed, step, the layer's stream),
/// so a backward (or a recomputation) sees exactly the mask its forward drew.
struct Context {
    bool training = false;
    std::uint64_t seed = 0;
    std::uint64_t step = 0;

    static Context eval() { return {}; }
    static Context train(std::uint64_t seed, std::uint64_t step = 0) { return {true, seed, step}; }
};

} // namespace celltx
