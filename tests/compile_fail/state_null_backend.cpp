// EXPECT: required for the satisfaction of 'provides_gemm<B, T>' \[with B = null_backend; T = double\]
// A State Transition model on a backend tag that implements no op: rejected in one line naming the
// first op it needs.
#include "celltx/models/state_transition.hpp"
#include "celltx/policies/backbone/llama_backbone.hpp"

struct null_backend {
    static constexpr const char* name = "null";
    static constexpr bool is_device = true;
};

int main() {
    celltx::StateConfig c = celltx::StateConfig::state_sm(2000, 2024);
    celltx::StateTransition<double, null_backend, celltx::LlamaBackbone, celltx::EnergyLoss> model(c);
    return static_cast<int>(model.config().hidden);
}
