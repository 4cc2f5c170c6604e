#pragma once
// ParameterList: a module's parameters as (state_dict name, pointer) pairs, in visit order.
//
// Contract: collect_parameters<T>(module, prefix) walks module.visit_parameters once; the order is
// the module's visit order (stable across runs), so optimiser state and clipping are reproducible.
// The pointers alias the module's members: the module must outlive the list and must not move.
// Names and pointers must be unique (optimiser state is keyed by name; a shared pointer would be
// stepped twice), otherwise collect_parameters throws ShapeError.
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>
#include "celltx/core/error.hpp"
#include "celltx/core/parameter.hpp"

namespace celltx::train {

template <Scalar T, Backend B = cpu>
using ParameterList = std::vector<std::pair<std::string, Parameter<T, B>*>>;

/// Checks that a list names every parameter once and points at each once.
template <Scalar T, Backend B>
void check_unique(const ParameterList<T, B>& params, std::string_view who) {
    std::set<std::string_view> names;
    std::set<const Parameter<T, B>*> seen;
    for (const auto& [name, p] : params) {
        require(p != nullptr, "{}: parameter '{}' is a null pointer", who, name);
        require(names.insert(name).second, "{}: parameter name '{}' appears twice", who, name);
        require(seen.insert(p).second, "{}: parameter '{}' is the same object as an earlier one", who, name);
    }
}

/// Every parameter of `module` with its PyTorch state_dict name (prefixed by `prefix`).
template <Scalar T, Backend B = cpu, class M>
ParameterList<T, B> collect_parameters(M& module, const std::string& prefix = "") {
    ParameterList<T, B> out;
    module.visit_parameters([&](std::string_view name, Parameter<T, B>& p) { out.emplace_back(std::string(name), &p); },
                            prefix);
    check_unique(out, "collect_parameters");
    return out;
}

} // namespace celltx::train
