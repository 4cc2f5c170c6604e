#pragma once
// state_dict loading and saving for any module with visit_parameters(f, prefix), whose names are
// PyTorch's state_dict keys.
//
// load_state_dict(module, file, options) behaves like torch's Module.load_state_dict: every tensor is
// copied (with dtype conversion) into the parameter of the same name; strict mode throws one IoError
// listing ALL missing and ALL unexpected names; a shape mismatch always throws, naming the key and
// both shapes. Everything is checked before anything is copied, so a failed load leaves the module
// untouched. Options add a key -> name mapping (add or strip a prefix) and an "ignore" predicate for
// keys a checkpoint holds and no parameter uses (frozen embeddings). A NaN or an infinity in a
// value that loads into a parameter is an error too (naming the key and the flat index), unless
// LoadOptions::allow_non_finite: a diverged checkpoint would otherwise give NaN predictions silently.
//
// Device modules (a model on celltx::cuda) load and save the same files: each tensor is read on the
// host and uploaded into its parameter (load), or downloaded (save).
#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>
#include <fmt/format.h>
#include "celltx/core/concepts.hpp"
#include "celltx/core/error.hpp"
#include "celltx/core/parameter.hpp"
#include "celltx/io/safetensors.hpp"

namespace celltx::io {

namespace detail {
/// The backend a module names (M::backend), or cpu.
template <class M>
struct module_backend {
    using type = cpu;
};
template <class M>
    requires requires { typename M::backend; }
struct module_backend<M> {
    using type = typename M::backend;
};
} // namespace detail

/// A module whose parameters can be loaded and saved by name, on the host or on a device.
template <class M>
concept StateDictModule = ParameterVisitable<M, float, typename detail::module_backend<M>::type> ||
                          ParameterVisitable<M, double, typename detail::module_backend<M>::type> || ParameterVisitable<M, float> ||
                          ParameterVisitable<M, double> || ParameterVisitable<M, float, cuda> || ParameterVisitable<M, double, cuda>;

struct LoadOptions {
    bool strict = true;  ///< missing or unexpected names are an error
    /// Maps a key of the file to the parameter name it loads into (e.g. strips "model."); none = identity.
    std::function<std::string(const std::string&)> map_name;
    /// Keys of the file that are accepted and used by nothing (tested on the key as stored in the file).
    std::function<bool(const std::string&)> ignore;
    /// Accept NaN and infinite parameter values (off: they are an error naming the key).
    bool allow_non_finite = false;
};

struct LoadReport {
    std::vector<std::string> loaded;      ///< parameter names that were assigned, in module order
    std::vector<std::string> missing;     ///< parameter names that no key of the file provides
    std::vector<std::string> unexpected;  ///< keys of the file that no parameter takes
    std::vector<std::string> ignored;     ///< keys of the file accepted by the ignore predicate
};

namespace detail {
/// "key", or "key" (as "name") when the mapping renamed it.
inline std::string key_text(const std::string& key, const std::string& name) {
    return name == key ? fmt::format("\"{}\"", key) : fmt::format("\"{}\" (as \"{}\")", key, name);
}
/// Flat index and value of the first NaN or infinity of a floating tensor of `file`, or nothing.
inline std::optional<std::pair<std::size_t, double>> first_non_finite(const SafetensorsFile& file, const TensorInfo& ti) {
    if (!is_floating(ti.dtype)) return std::nullopt;
    const auto n = static_cast<std::size_t>(ti.shape.numel());
    const unsigned char* src = file.bytes(ti.name);
    double buf[1024];
    for (std::size_t i = 0; i < n; i += 1024) {
        const std::size_t m = std::min<std::size_t>(1024, n - i);
        convert(ti.dtype, src + i * dtype_size(ti.dtype), buf, m);
        for (std::size_t k = 0; k < m; ++k)
            if (!std::isfinite(buf[k])) return std::pair{i + k, buf[k]};
    }
    return std::nullopt;
}
inline std::string joined(const std::vector<std::string>& items) {
    std::string s;
    for (const auto& i : items) s += (s.empty() ? "" : ", ") + i;
    return s;
}
} // namespace detail

template <StateDictModule M>
LoadReport load_state_dict(M& module, const SafetensorsFile& file, const LoadOptions& options = {}) {
    struct Target {
        std::string name;
        Shape shape;
        std::function<void(std::string_view key)> load;
        const std::string* key = nullptr;  // the file key that loads it
    };
    std::vector<Target> targets;
    std::map<std::string, std::size_t, std::less<>> by_name;
    module.visit_parameters(
        [&](const auto& name, auto& p) {
            using V = decltype(p.value);
            using T = typename V::value_type;
            if (!by_name.emplace(std::string(name), targets.size()).second)
                throw Error(fmt::format("{}: the module has two parameters named '{}'", file.path(), name));
            targets.push_back({std::string(name), p.value.shape(), [&file, &p](std::string_view key) {
                                   if constexpr (V::backend::is_device) {  // read on the host, then upload
                                       auto h = Tensor<T, cpu>::uninitialized(p.value.shape());
                                       file.load_into<T>(key, h.view());
                                       upload(static_cast<const T*>(h.data()), p.value.view());
                                   } else {
                                       file.load_into<T>(key, p.value.view());
                                   }
                               }});
        },
        std::string{});

    LoadReport report;
    std::vector<std::string> errors;
    std::vector<std::pair<std::string, std::size_t>> plan;  // (key, target)
    for (const TensorInfo& ti : file.tensors()) {
        const std::string& key = ti.name;
        if (options.ignore && options.ignore(key)) {
            report.ignored.push_back(key);
            continue;
        }
        const std::string name = options.map_name ? options.map_name(key) : key;
        auto it = by_name.find(name);
        if (it == by_name.end()) {
            report.unexpected.push_back(key);
            continue;
        }
        Target& t = targets[it->second];
        if (t.key)
            throw IoError(fmt::format("{}: keys '{}' and '{}' both map to parameter '{}'", file.path(), *t.key, key, name));
        t.key = &key;
        if (!(ti.shape == t.shape))
            errors.push_back(fmt::format("size mismatch for {}: the file holds shape {}, the parameter in the module has shape {}.",
                                         detail::key_text(key, name), ti.shape, t.shape));
        else if (!options.allow_non_finite)
            if (const auto bad = detail::first_non_finite(file, ti))
                errors.push_back(fmt::format("non-finite value {} at flat index {} of {} (LoadOptions::allow_non_finite accepts it).",
                                             bad->second, bad->first, detail::key_text(key, name)));
        plan.emplace_back(key, it->second);
    }
    for (const Target& t : targets)
        if (!t.key) report.missing.push_back(t.name);

    if (options.strict) {
        std::vector<std::string> unexpected, missing;
        for (const auto& k : report.unexpected) unexpected.push_back(detail::key_text(k, options.map_name ? options.map_name(k) : k));
        for (const auto& n : report.missing) missing.push_back(detail::key_text(n, n));
        if (!unexpected.empty()) errors.insert(errors.begin(), fmt::format("Unexpected key(s) in state_dict: {}.", detail::joined(unexpected)));
        if (!missing.empty()) errors.insert(errors.begin(), fmt::format("Missing key(s) in state_dict: {}.", detail::joined(missing)));
    }
    if (!errors.empty()) {
        std::string msg = fmt::format("{}: error(s) in loading state_dict ({} tensors in the file, {} parameters in the module):",
                                      file.path(), file.tensors().size(), targets.size());
        for (const auto& e : errors) msg += "\n\t" + e;
        throw IoError(msg);
    }

    for (const auto& [key, index] : plan) targets[index].load(key);
    for (const Target& t : targets)
        if (t.key) report.loaded.push_back(t.name);
    return report;
}

template <StateDictModule M>
LoadReport load_state_dict(M& module, const std::filesystem::path& path, const LoadOptions& options = {}) {
    return load_state_dict(module, SafetensorsFile(path), options);
}

/// Writes every parameter value under its name (as its own dtype, or all as `as`), atomically; a
/// device module's values are downloaded first.
template <StateDictModule M>
void save_state_dict(M& module, const std::filesystem::path& path, const std::map<std::string, std::string>& metadata = {},
                     std::optional<DType> as = std::nullopt) {
    std::vector<TensorEntry> entries;
    std::vector<Tensor<float, cpu>> host_f;  // downloaded values (their storage does not move with the vectors)
    std::vector<Tensor<double, cpu>> host_d;
    module.visit_parameters(
        [&](const auto& name, auto& p) {
            using V = std::remove_cvref_t<decltype(p.value)>;
            if constexpr (V::backend::is_device) {
                if constexpr (std::is_same_v<typename V::value_type, float>)
                    entries.emplace_back(std::string(name), host_f.emplace_back(to_host(p.value)).cview(), as);
                else
                    entries.emplace_back(std::string(name), host_d.emplace_back(to_host(p.value)).cview(), as);
            } else {
                entries.emplace_back(std::string(name), p.value.cview(), as);
            }
        },
        std::string{});
    save_safetensors(path, entries, metadata);
}

} // namespace celltx::io
