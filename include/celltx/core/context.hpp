#pragma once
// What a forward call needs besides its inputs: train/eval mode, where randomness comes from, and
// whether a backward will follow.
#include <cstdint>
#include <string_view>

namespace celltx {

/// Passed to every forward. Dropout masks are pure functions of (seed, step, the layer's stream),
/// so a backward (or a recomputation) sees exactly the mask its forward drew.
struct Context {
    bool training = false;
    std::uint64_t seed = 0;
    std::uint64_t step = 0;
    /// false: every layer and model keeps nothing for a backward (PyTorch's inference_mode): each
    /// activation is freed as soon as the next layer has read it, and a backward afterwards throws.
    bool keep_for_backward = true;

    static Context eval() { return {}; }
    static Context train(std::uint64_t seed, std::uint64_t step = 0) { return {true, seed, step}; }
    /// Eval mode that keeps nothing: prediction only.
    static Context inference() { return {false, 0, 0, false}; }
};

/// The reason a backward gives when its forward kept nothing.
inline constexpr std::string_view nothing_kept_for_backward =
    "nothing was kept for backward (no forward has run, or the last one ran under Context::inference())";

} // namespace celltx
