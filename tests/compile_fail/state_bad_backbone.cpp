// EXPECT: required for the satisfaction of 'BackbonePolicy<Backbone, T, B>' \[with Backbone = celltx::EnergyLoss
// A State Transition model whose backbone slot holds a loss policy: the BackbonePolicy concept
// must reject it (the policies are given in the wrong order).
#include "celltx/models/state_transition.hpp"
#include "celltx/policies/backbone/llama_backbone.hpp"

int main() {
    celltx::StateConfig c = celltx::StateConfig::state_sm(2000, 2024);
    celltx::StateTransition<float, celltx::cpu, celltx::EnergyLoss, celltx::LlamaBackbone> model(c);
    return static_cast<int>(model.config().hidden);
}
