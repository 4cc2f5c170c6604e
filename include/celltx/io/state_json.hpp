#pragma once
// StateConfig <-> JSON, so that a checkpoint's configuration rebuilds its State Transition model
// (and the baselines that share StateConfig). Field names follow state's model kwargs where it has
// them (hidden_dim, n_encoder_layers, cell_set_len, ...) and the Hugging Face backbone config
// inside "backbone". Reading requires every field and names the one that is missing or invalid.
#include <string>
#include <nlohmann/json.hpp>
#include "celltx/core/error.hpp"
#include "celltx/policies/state/state_config.hpp"

namespace celltx::io {

inline const char* output_space_name(OutputSpace s) {
    switch (s) {
        case OutputSpace::gene: return "gene";
        case OutputSpace::latent: return "latent";
        case OutputSpace::all: return "all";
    }
    return "gene";
}

inline nlohmann::json state_config_to_json(const StateConfig& c) {
    const BackboneConfig& b = c.backbone;
    return {{"input_dim", c.input_dim},
            {"output_dim", c.output_dim},
            {"pert_dim", c.pert_dim},
            {"hidden_dim", c.hidden},
            {"n_encoder_layers", c.n_encoder_layers},
            {"n_decoder_layers", c.n_decoder_layers},
            {"dropout", c.dropout},
            {"cell_set_len", c.cell_set_len},
            {"predict_residual", c.predict_residual},
            {"output_space", output_space_name(c.output_space)},
            {"use_basal_projection", c.use_basal_projection},
            {"apply_relu", c.apply_relu},
            {"batch_dim", c.batch_dim},
            {"gene_dim", c.gene_dim},
            {"decoder_hidden", c.decoder_hidden},
            {"decoder_dropout", c.decoder_dropout},
            {"detach_decoder", c.detach_decoder},
            {"blur", c.blur},
            {"sinkhorn_weight", c.sinkhorn_weight},
            {"energy_weight", c.energy_weight},
            {"decoder_loss_weight", c.decoder_loss_weight},
            {"confidence_weight", c.confidence_weight},
            {"confidence_target_scale", c.confidence_target_scale},
            {"l1_lambda", c.l1_lambda},
            {"loss_block", c.loss_block},
            {"backbone",
             {{"hidden_size", b.hidden},
              {"num_hidden_layers", b.layers},
              {"num_attention_heads", b.heads},
              {"num_key_value_heads", b.kv_heads},
              {"head_dim", b.head_dim},
              {"intermediate_size", b.intermediate},
              {"eps", b.eps},
              {"attention_dropout", b.attn_dropout},
              {"resid_pdrop", b.resid_dropout},
              {"embd_pdrop", b.embd_dropout},
              {"vocab_size", b.vocab_size},
              {"n_positions", b.n_positions},
              {"stream", b.stream}}}};
}

inline StateConfig state_config_from_json(const nlohmann::json& j, const std::string& where) {
    StateConfig c;
    auto get = [&](const nlohmann::json& o, const char* key, auto& v, const char* section) {
        if (!o.contains(key)) throw IoError(fmt::format("{}: the State configuration has no field '{}{}'", where, section, key));
        try {
            o.at(key).get_to(v);
        } catch (const nlohmann::json::exception& e) {
            throw IoError(fmt::format("{}: the State configuration's field '{}{}' is invalid: {}", where, section, key, e.what()));
        }
    };
    get(j, "input_dim", c.input_dim, "");
    get(j, "output_dim", c.output_dim, "");
    get(j, "pert_dim", c.pert_dim, "");
    get(j, "hidden_dim", c.hidden, "");
    get(j, "n_encoder_layers", c.n_encoder_layers, "");
    get(j, "n_decoder_layers", c.n_decoder_layers, "");
    get(j, "dropout", c.dropout, "");
    get(j, "cell_set_len", c.cell_set_len, "");
    get(j, "predict_residual", c.predict_residual, "");
    std::string space;
    get(j, "output_space", space, "");
    try {
        c.output_space = output_space_from_name(space);
    } catch (const Error& e) {
        throw IoError(fmt::format("{}: {}", where, e.what()));
    }
    get(j, "use_basal_projection", c.use_basal_projection, "");
    get(j, "apply_relu", c.apply_relu, "");
    get(j, "batch_dim", c.batch_dim, "");
    get(j, "gene_dim", c.gene_dim, "");
    get(j, "decoder_hidden", c.decoder_hidden, "");
    get(j, "decoder_dropout", c.decoder_dropout, "");
    get(j, "detach_decoder", c.detach_decoder, "");
    get(j, "blur", c.blur, "");
    get(j, "sinkhorn_weight", c.sinkhorn_weight, "");
    get(j, "energy_weight", c.energy_weight, "");
    get(j, "decoder_loss_weight", c.decoder_loss_weight, "");
    get(j, "confidence_weight", c.confidence_weight, "");
    get(j, "confidence_target_scale", c.confidence_target_scale, "");
    get(j, "l1_lambda", c.l1_lambda, "");
    get(j, "loss_block", c.loss_block, "");
    if (!j.contains("backbone") || !j.at("backbone").is_object())
        throw IoError(fmt::format("{}: the State configuration has no 'backbone' object", where));
    const nlohmann::json& b = j.at("backbone");
    get(b, "hidden_size", c.backbone.hidden, "backbone.");
    get(b, "num_hidden_layers", c.backbone.layers, "backbone.");
    get(b, "num_attention_heads", c.backbone.heads, "backbone.");
    get(b, "num_key_value_heads", c.backbone.kv_heads, "backbone.");
    get(b, "head_dim", c.backbone.head_dim, "backbone.");
    get(b, "intermediate_size", c.backbone.intermediate, "backbone.");
    get(b, "eps", c.backbone.eps, "backbone.");
    get(b, "attention_dropout", c.backbone.attn_dropout, "backbone.");
    get(b, "resid_pdrop", c.backbone.resid_dropout, "backbone.");
    get(b, "embd_pdrop", c.backbone.embd_dropout, "backbone.");
    get(b, "vocab_size", c.backbone.vocab_size, "backbone.");
    get(b, "n_positions", c.backbone.n_positions, "backbone.");
    get(b, "stream", c.backbone.stream, "backbone.");
    return c;
}

} // namespace celltx::io
