#pragma once
// LoRA adapters in PEFT's format (what PeftModel.save_pretrained writes and from_pretrained reads,
// for PEFT applied to state's transformer_backbone):
//   DIR/adapter_model.safetensors  keys "base_model.model.<module path>.lora_A.weight" [r, in] and
//                                  ".lora_B.weight" [out, r], e.g.
//                                  base_model.model.layers.0.self_attn.q_proj.lora_A.weight (LLaMA),
//                                  base_model.model.h.0.attn.c_attn.lora_B.weight (GPT-2);
//   DIR/adapter_config.json        peft_type LORA, r, lora_alpha, lora_dropout, target_modules,
//                                  fan_in_fan_out (true for GPT-2's Conv1D), bias "none".
// load_lora_adapter also takes the file alone, and the keys a PEFT-wrapped model's own
// state_dict uses ("transformer_backbone.base_model.model.<path>.lora_A.default.weight").
// peft_key_map() maps such a whole-model state_dict onto celltx's names (base_layer. and
// base_model.model. dropped, .default dropped) for io::load_state_dict.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <string_view>
#include <vector>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include "celltx/core/error.hpp"
#include "celltx/io/safetensors.hpp"
#include "celltx/io/state_dict.hpp"
#include "celltx/nn/lora.hpp"
#include "celltx/policies/backbone/lora.hpp"

namespace celltx::io {

inline constexpr std::string_view peft_prefix = "base_model.model.";

/// A PEFT-wrapped model's state_dict key → celltx's parameter name.
inline std::string peft_to_celltx_name(std::string key) {
    auto erase_all = [&](std::string_view what) {
        for (std::size_t p; (p = key.find(what)) != std::string::npos;) key.erase(p, what.size());
    };
    erase_all("base_model.model.");
    erase_all("base_layer.");
    for (const char* ab : {".lora_A.default.", ".lora_B.default."}) {
        const std::size_t p = key.find(ab);
        if (p != std::string::npos) key.erase(p + 7, 8);  // ".lora_A" + ".default" → ".lora_A"
    }
    return key;
}

/// LoadOptions whose map_name reads a PEFT-wrapped model's keys (then `base`'s own mapping).
inline LoadOptions peft_key_map(LoadOptions base = {}) {
    auto inner = base.map_name;
    base.map_name = [inner](const std::string& k) {
        const std::string n = peft_to_celltx_name(k);
        return inner ? inner(n) : n;
    };
    return base;
}

namespace peft_detail {
inline void write_text_atomically(const std::filesystem::path& path, const std::string& text) {
    const std::filesystem::path tmp = path.string() + ".tmp";
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        if (!out) throw IoError(fmt::format("{}: cannot write", tmp.string()));
        out << text;
        out.flush();
        if (!out) throw IoError(fmt::format("{}: write failed", tmp.string()));
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) throw IoError(fmt::format("{}: cannot rename {} over it: {}", path.string(), tmp.string(), ec.message()));
}
} // namespace peft_detail

/// Writes the adapters of `model` (celltx names "<backbone_prefix><path>.lora_{A,B}.weight") as a
/// PEFT adapter directory. `backbone` is the family ("llama" or "gpt2").
template <class M>
void save_lora_adapter(M& model, const std::filesystem::path& dir, const nn::LoraConfig& c, std::string_view backbone,
                       std::string_view backbone_prefix = "transformer_backbone.") {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw IoError(fmt::format("{}: cannot create the adapter directory: {}", dir.string(), ec.message()));
    std::vector<TensorEntry> entries;
    HostCopies host;  // a device model's adapters, downloaded
    model.visit_parameters(
        [&](const auto& name, auto& p) {
            const std::string n(name);
            if (!is_lora_parameter(n)) return;
            if (!n.starts_with(backbone_prefix))
                throw IoError(fmt::format("{}: adapter '{}' lies outside the backbone '{}'", dir.string(), n, backbone_prefix));
            entries.emplace_back(std::string(peft_prefix) + n.substr(backbone_prefix.size()), host.view_of(p.value), DType::F32);
        },
        std::string{});
    if (entries.empty()) throw IoError(fmt::format("{}: the model has no LoRA adapters to save (apply_lora first)", dir.string()));
    save_safetensors(dir / "adapter_model.safetensors", entries, {{"format", "pt"}});
    nlohmann::json j;
    j["peft_type"] = "LORA";
    j["r"] = c.rank;
    j["lora_alpha"] = c.alpha;
    j["lora_dropout"] = c.dropout;
    j["bias"] = "none";
    j["fan_in_fan_out"] = backbone == "gpt2";
    j["inference_mode"] = true;
    j["init_lora_weights"] = true;
    j["task_type"] = nullptr;
    j["base_model_name_or_path"] = nullptr;
    if (backbone == "gpt2") j["target_modules"] = ".*\\.attn\\.(c_attn|c_proj)";  // a regex: not mlp.c_proj
    else j["target_modules"] = {"q_proj", "k_proj", "v_proj", "o_proj"};
    j["celltx_backbone"] = std::string(backbone);
    peft_detail::write_text_atomically(dir / "adapter_config.json", j.dump(2) + "\n");
}

/// The LoraConfig of a PEFT adapter directory's adapter_config.json.
inline nn::LoraConfig read_lora_config(const std::filesystem::path& dir) {
    const std::filesystem::path p = dir / "adapter_config.json";
    std::ifstream in(p);
    if (!in) throw IoError(fmt::format("{}: cannot open", p.string()));
    nlohmann::json j;
    try {
        in >> j;
    } catch (const std::exception& e) {
        throw IoError(fmt::format("{}: not JSON: {}", p.string(), e.what()));
    }
    if (j.value("peft_type", std::string()) != "LORA") throw IoError(fmt::format("{}: peft_type is not LORA", p.string()));
    nn::LoraConfig c;
    try {
        c.rank = j.at("r").get<index_t>();
        c.alpha = j.at("lora_alpha").get<double>();
        c.dropout = j.value("lora_dropout", 0.0);
    } catch (const std::exception& e) {
        throw IoError(fmt::format("{}: {}", p.string(), e.what()));
    }
    if (c.rank < 1 || c.alpha <= 0.0) throw IoError(fmt::format("{}: r {} and lora_alpha {} must be positive", p.string(), c.rank, c.alpha));
    return c;
}

/// Loads adapter weights into a model that has adapters of the same shapes (apply_lora with the
/// file's rank first). `path`: a PEFT adapter directory or its .safetensors file. Every adapter of
/// the model must be found; an adapter key the model lacks is an error (nothing is loaded then).
template <class M>
void load_lora_adapter(M& model, const std::filesystem::path& path, std::string_view backbone_prefix = "transformer_backbone.") {
    const std::filesystem::path file = std::filesystem::is_directory(path) ? path / "adapter_model.safetensors" : path;
    const SafetensorsFile f(file);
    std::map<std::string, std::string> by_name;  // celltx name → file key
    for (const std::string& key : f.names()) {
        if (!is_lora_parameter(key)) continue;
        std::string n = peft_to_celltx_name(key);
        if (n.starts_with("transformer_backbone.")) n = n.substr(std::string_view("transformer_backbone.").size());
        by_name.emplace(std::string(backbone_prefix) + n, key);
    }
    std::vector<std::string> missing, errors;
    std::vector<std::pair<std::string, std::string>> plan;
    std::size_t adapters = 0;
    model.visit_parameters(
        [&](const auto& name, auto& p) {
            const std::string n(name);
            if (!is_lora_parameter(n)) return;
            ++adapters;
            const auto it = by_name.find(n);
            if (it == by_name.end()) {
                missing.push_back(n);
                return;
            }
            if (!(f.info(it->second).shape == p.value.shape()))
                errors.push_back(fmt::format("'{}' has shape {} but the model's adapter has {}", it->second, f.info(it->second).shape,
                                             p.value.shape()));
            plan.emplace_back(n, it->second);
            by_name.erase(it);
        },
        std::string{});
    if (adapters == 0) throw IoError(fmt::format("{}: the model has no LoRA adapters (apply_lora with the adapter's rank first)", file.string()));
    if (!missing.empty()) errors.push_back(fmt::format("no weights for {} adapter(s), e.g. '{}'", missing.size(), missing.front()));
    if (!by_name.empty()) errors.push_back(fmt::format("{} adapter key(s) match no adapter of the model, e.g. '{}'", by_name.size(),
                                                       by_name.begin()->second));
    if (!errors.empty()) {
        std::string s;
        for (const auto& e : errors) s += "\n  " + e;
        throw IoError(fmt::format("{}: cannot load the LoRA adapter:{}", file.string(), s));
    }
    model.visit_parameters(
        [&](const auto& name, auto& p) {
            const std::string n(name);
            using V = std::remove_cvref_t<decltype(p.value)>;
            using T = typename V::value_type;
            for (const auto& [pn, key] : plan) {
                if (pn != n) continue;
                if constexpr (V::backend::is_device) {  // read on the host, then upload
                    auto h = Tensor<T, cpu>::uninitialized(p.value.shape());
                    f.load_into<T>(key, h.view());
                    upload(static_cast<const T*>(h.data()), p.value.view());
                } else {
                    f.load_into<T>(key, p.value.view());
                }
            }
        },
        std::string{});
}

} // namespace celltx::io
