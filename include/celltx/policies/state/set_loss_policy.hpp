#pragma once
// SetLossPolicy: the State Transition model's main distributional loss, chosen at compile time
// (EnergyLoss, SinkhornLoss, CombinedLoss = state's "se", MseLoss). A policy names the
// loss::SetLossKind it runs; weights, blur and block size are runtime (StateConfig). The losses
// themselves are policies/loss/*.hpp: per set, then nan-mean over the sets.
#include <concepts>
#include "celltx/policies/loss/set_loss.hpp"

namespace celltx {

/// A main-loss policy: `kind` is the loss::SetLossKind it selects, `name` state's config name.
template <class P>
concept SetLossPolicy = requires {
    { P::kind } -> std::convertible_to<loss::SetLossKind>;
    { P::name } -> std::convertible_to<const char*>;
};

/// geomloss "energy" (the default of state's configs).
struct EnergyLoss {
    static constexpr loss::SetLossKind kind = loss::SetLossKind::energy;
    static constexpr const char* name = "energy";
};
/// geomloss "sinkhorn" (p = 2, debiased, ε-annealing; blur from the config).
struct SinkhornLoss {
    static constexpr loss::SetLossKind kind = loss::SetLossKind::sinkhorn;
    static constexpr const char* name = "sinkhorn";
};
/// state's "se": sinkhorn_weight · sinkhorn + energy_weight · energy.
struct CombinedLoss {
    static constexpr loss::SetLossKind kind = loss::SetLossKind::combined;
    static constexpr const char* name = "se";
};
/// The reference's fallback: mean squared error over every element.
struct MseLoss {
    static constexpr loss::SetLossKind kind = loss::SetLossKind::mse;
    static constexpr const char* name = "mse";
};

} // namespace celltx
