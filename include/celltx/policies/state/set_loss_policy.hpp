#pragma once
// SetLossPolicy: the State Transition model's main distributional loss, chosen at compile time
// (EnergyLoss, SinkhornLoss, CombinedLoss = state's "se", MseLoss). A policy names the
// loss::SetLossKind it runs, and its module is a loss::SetLoss of that kind built from the
// StateConfig (blur, weights and block size are runtime). The losses themselves are
// policies/loss/*.hpp: per set, then nan-mean over the sets.
#include <concepts>
#include "celltx/backend/ops.hpp"
#include "celltx/policies/loss/set_loss.hpp"
#include "celltx/policies/policy.hpp"
#include "celltx/policies/state/state_config.hpp"

namespace celltx {

/// The ops the State set losses call on backend B: the pairwise tiles, the reductions and the
/// element-wise updates of the Sinkhorn potentials.
template <class B, class T>
concept StateLossOps =
    ops::provides_pairwise_sqdist<B, T> && ops::provides_pairwise_distance_sum<B, T> && ops::provides_pairwise_distance_grad<B, T> &&
    ops::provides_pairwise_softmin<B, T> && ops::provides_pairwise_softmin_grad<B, T> && ops::provides_column_min_max<B, T> &&
    ops::provides_row_sum_squares<B, T> && ops::provides_shift_div<B, T> && ops::provides_axpby<B, T> && ops::provides_fill<B, T>;

namespace state_parts {

/// A loss::SetLoss whose kind the policy fixes, built from the model's StateConfig.
template <loss::SetLossKind Kind, Scalar T, Backend B = cpu>
class FixedSetLoss : public loss::SetLoss<T, B> {
public:
    FixedSetLoss() = default;
    explicit FixedSetLoss(const StateConfig& c) : loss::SetLoss<T, B>(options(c)) {}

    static loss::SetLossOptions options(const StateConfig& c) {
        loss::SetLossOptions o;
        o.kind = Kind;
        o.blur = c.blur;
        o.sinkhorn_weight = c.sinkhorn_weight;
        o.energy_weight = c.energy_weight;
        o.block = c.loss_block;
        return o;
    }
};

} // namespace state_parts

/// A main-loss policy: `kind` is the loss::SetLossKind it selects, `name` state's config name.
template <class P, class T = float, class B = cpu>
concept SetLossPolicy = StateLossOps<B, T> && requires {
    { P::kind } -> std::convertible_to<loss::SetLossKind>;
    { P::name } -> std::convertible_to<const char*>;
} && policy_requirements::has_module_template<P, T, B> && policy_requirements::module_from_config<P, T, B, StateConfig>;

/// geomloss "energy" (the default of state's configs).
struct EnergyLoss {
    static constexpr loss::SetLossKind kind = loss::SetLossKind::energy;
    static constexpr const char* name = "energy";
    template <Scalar T, Backend B>
    using module = state_parts::FixedSetLoss<kind, T, B>;
};
/// geomloss "sinkhorn" (p = 2, debiased, ε-annealing; blur from the config).
struct SinkhornLoss {
    static constexpr loss::SetLossKind kind = loss::SetLossKind::sinkhorn;
    static constexpr const char* name = "sinkhorn";
    template <Scalar T, Backend B>
    using module = state_parts::FixedSetLoss<kind, T, B>;
};
/// state's "se": sinkhorn_weight · sinkhorn + energy_weight · energy.
struct CombinedLoss {
    static constexpr loss::SetLossKind kind = loss::SetLossKind::combined;
    static constexpr const char* name = "se";
    template <Scalar T, Backend B>
    using module = state_parts::FixedSetLoss<kind, T, B>;
};
/// The reference's fallback: mean squared error over every element.
struct MseLoss {
    static constexpr loss::SetLossKind kind = loss::SetLossKind::mse;
    static constexpr const char* name = "mse";
    template <Scalar T, Backend B>
    using module = state_parts::FixedSetLoss<kind, T, B>;
};

} // namespace celltx
