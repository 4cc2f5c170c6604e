#pragma once
// What LoRA fine-tuning trains (PEFT on state's transformer_backbone): the adapter weights and
// every parameter outside the backbone; the backbone's base weights are frozen by leaving them
// out of the optimiser's (and the gradient clipping's) parameter list. Backward still computes
// their gradients; nothing reads them.
#include <string>
#include <string_view>
#include "celltx/policies/backbone/lora.hpp"
#include "celltx/train/parameter_list.hpp"

namespace celltx::train {

/// The parameters of `model` that LoRA fine-tuning updates (names as visit_parameters gives them).
template <Scalar T, Backend B = cpu, class M>
ParameterList<T, B> lora_trainable_parameters(M& model, std::string_view backbone_prefix = "transformer_backbone.") {
    ParameterList<T, B> out;
    for (auto& [name, p] : collect_parameters<T, B>(model))
        if (!name.starts_with(backbone_prefix) || is_lora_parameter(name)) out.emplace_back(name, p);
    return out;
}

} // namespace celltx::train
