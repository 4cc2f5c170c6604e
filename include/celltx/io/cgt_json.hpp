#pragma once
// The Cell Graph Transformer's configuration as JSON (what a checkpoint stores so that a program
// rebuilds the model without flags), and the configuration of weights exported from PyTorch:
//  - cgt_config_to_json / cgt_config_from_json: every CgtConfig field; reading requires the sizes
//    (num_genes, d_model, num_layers, num_heads, pert_heads) and takes the documented defaults for
//    the others; a wrong type or value throws naming the field;
//  - infer_cgt_config(file, heads, pert_heads): N and d from gene_embedding.weight [N, d], L from the
//    highest transformer_layers.<l>. index, propagation layers likewise; head counts do not change
//    any shape, so the caller gives them.
#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include "celltx/core/error.hpp"
#include "celltx/io/safetensors.hpp"
#include "celltx/policies/cgt_config.hpp"

namespace celltx::io {

inline const char* gi_pooling_name(GiPooling p) { return p == GiPooling::sum ? "sum" : "mean"; }
inline GiPooling parse_gi_pooling(std::string_view s) {
    if (s == "mean") return GiPooling::mean;
    if (s == "sum") return GiPooling::sum;
    throw Error(fmt::format("GI pooling '{}' is not 'mean' or 'sum'", s));
}

inline nlohmann::json cgt_config_to_json(const CgtConfig& c) {
    return {{"num_genes", c.num_genes},
            {"d_model", c.d_model},
            {"num_layers", c.num_layers},
            {"num_heads", c.num_heads},
            {"pert_heads", c.pert_heads},
            {"dropout", c.dropout},
            {"gene_feature_dim", c.gene_feature_dim},
            {"gi_pooling", gi_pooling_name(c.gi_pooling)},
            {"propagation_layers", c.propagation_layers},
            {"fitness_outputs", c.fitness_outputs},
            {"expression_outputs", c.expression_outputs},
            {"seed", c.seed}};
}

inline CgtConfig cgt_config_from_json(const nlohmann::json& j, std::string_view where = "model configuration") {
    if (!j.is_object()) throw Error(fmt::format("{}: expected a JSON object, found {}", where, j.dump()));
    CgtConfig c;
    auto get = [&](const char* key, auto& v, bool required) {
        if (!j.contains(key)) {
            if (required) throw Error(fmt::format("{}: the field '{}' is missing", where, key));
            return;
        }
        try {
            j.at(key).get_to(v);
        } catch (const nlohmann::json::exception& e) {
            throw Error(fmt::format("{}: the field '{}' is invalid ({}): {}", where, key, j.at(key).dump(), e.what()));
        }
    };
    get("num_genes", c.num_genes, true);
    get("d_model", c.d_model, true);
    get("num_layers", c.num_layers, true);
    get("num_heads", c.num_heads, true);
    get("pert_heads", c.pert_heads, true);
    get("dropout", c.dropout, false);
    get("gene_feature_dim", c.gene_feature_dim, false);
    std::string pool = gi_pooling_name(c.gi_pooling);
    get("gi_pooling", pool, false);
    try {
        c.gi_pooling = parse_gi_pooling(pool);
    } catch (const Error& e) {
        throw Error(fmt::format("{}: the field 'gi_pooling': {}", where, e.what()));
    }
    get("propagation_layers", c.propagation_layers, false);
    get("fitness_outputs", c.fitness_outputs, false);
    get("expression_outputs", c.expression_outputs, false);
    get("seed", c.seed, false);
    auto check = [&](bool ok, const char* field, auto value, const char* what) {
        if (!ok) throw Error(fmt::format("{}: the field '{}' is {} ({})", where, field, value, what));
    };
    check(c.num_genes >= 1, "num_genes", c.num_genes, "must be >= 1");
    check(c.d_model >= 1, "d_model", c.d_model, "must be >= 1");
    check(c.num_layers >= 1, "num_layers", c.num_layers, "must be >= 1");
    check(c.num_heads >= 1 && c.d_model % c.num_heads == 0, "num_heads", c.num_heads, "must divide d_model");
    check(c.pert_heads >= 1 && c.d_model % c.pert_heads == 0, "pert_heads", c.pert_heads, "must divide d_model");
    check(c.dropout >= 0.0 && c.dropout < 1.0, "dropout", c.dropout, "must be in [0, 1)");
    return c;
}

/// The configuration of a PyTorch state_dict's CGT (sizes from the tensor shapes, heads given).
inline CgtConfig infer_cgt_config(const SafetensorsFile& f, int num_heads, int pert_heads) {
    CgtConfig c;
    const TensorInfo& emb = f.info("gene_embedding.weight");
    if (emb.shape.rank() != 2)
        throw IoError(fmt::format("{}: 'gene_embedding.weight' has shape {}, expected [num_genes, d_model]", f.path(), emb.shape));
    c.num_genes = emb.shape[0];
    c.d_model = emb.shape[1];
    auto count_layers = [&](std::string_view prefix) {
        int layers = 0;
        for (const auto& ti : f.tensors()) {
            const std::string_view name = ti.name;
            if (!name.starts_with(prefix)) continue;
            const auto rest = name.substr(prefix.size());
            const auto dot = rest.find('.');
            int l = 0;
            for (char ch : rest.substr(0, dot)) {
                if (ch < '0' || ch > '9') {
                    l = -1;
                    break;
                }
                l = l * 10 + (ch - '0');
            }
            if (l >= 0 && dot != std::string_view::npos) layers = std::max(layers, l + 1);
        }
        return layers;
    };
    c.num_layers = count_layers("transformer_layers.");
    if (c.num_layers == 0) throw IoError(fmt::format("{}: no 'transformer_layers.<l>.' tensors: not a Cell Graph Transformer state_dict", f.path()));
    c.propagation_layers = count_layers("propagation_layers.");
    c.num_heads = num_heads;
    c.pert_heads = pert_heads;
    if (num_heads < 1 || c.d_model % num_heads != 0)
        throw Error(fmt::format("{}: {} heads do not divide d_model = {}", f.path(), num_heads, c.d_model));
    if (pert_heads < 1 || c.d_model % pert_heads != 0)
        throw Error(fmt::format("{}: {} perturbation heads do not divide d_model = {}", f.path(), pert_heads, c.d_model));
    return c;
}

} // namespace celltx::io
