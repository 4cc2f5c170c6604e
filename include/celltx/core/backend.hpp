#pragma once
// Backend tag types. A backend is a compile-time tag (as CUTLASS's arch tags): it selects where
// tensors live and which ops run; sizes never become template parameters.
#include <concepts>

namespace celltx {

/// Host memory, Eigen kernels, OpenMP threads.
struct cpu {
    static constexpr const char* name = "cpu";
    static constexpr bool is_device = false;
};

/// NVIDIA GPU memory, CUDA kernels and cuBLAS (include/celltx/backend/cuda).
struct cuda {
    static constexpr const char* name = "cuda";
    static constexpr bool is_device = true;
};

/// A backend tag: names itself and says whether its memory is on a device.
template <class B>
concept Backend = requires {
    { B::name } -> std::convertible_to<const char*>;
    { B::is_device } -> std::convertible_to<bool>;
};

/// The scalar types every layer supports: float (training, parity) and double (gradient checks).
template <class T>
concept Scalar = std::same_as<T, float> || std::same_as<T, double>;

} // namespace celltx
