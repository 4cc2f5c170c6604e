#pragma once
// Checkpoints: one safetensors file holding a model, the state of whatever trains it, and the
// configuration that rebuilds both.
//   - the model's parameters under their PyTorch state_dict names (its own dtype), so that PyTorch
//     loads them with the "state/" keys filtered out, and io::load_state_dict reads them;
//   - every tensor of the states under "state/<name>": a Tensor<T> in its dtype (the optimiser's
//     moments), a std::vector<double> as F64 (label statistics, an additive baseline, the history);
//   - every scalar of the states (std::int64_t, std::uint64_t, double) in the JSON object of the
//     metadata key "celltx.state"; a non-finite double is written as the string "nan", "inf" or
//     "-inf" (JSON has no such numbers); finite doubles round-trip exactly;
//   - "celltx.format" = "celltx.checkpoint.v1", "celltx.config" = the caller's configuration (JSON).
// A state is any object with visit_state(f) calling f(name, x) with x one of the types above (the
// trainer, a LabelScaler, an AdditiveBaseline, ...); names must be unique across the states.
// Writes are atomic (temporary file, fsync, rename: io/safetensors.hpp), so a crash leaves the old
// checkpoint or the new one, never half of one. Loads check everything (every parameter, every state
// name, dtypes, shapes) before assigning anything, then call state.check_state() where it exists.
// A file without celltx metadata (weights exported from PyTorch) loads as weights only.
// A model and states on a device backend are written from host copies and loaded through the host
// (then uploaded): the file does not depend on the device, so a run moves between CPU and GPU.
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include "celltx/core/error.hpp"
#include "celltx/core/tensor.hpp"
#include "celltx/io/safetensors.hpp"
#include "celltx/io/state_dict.hpp"

namespace celltx::io {

inline constexpr std::string_view checkpoint_format = "celltx.checkpoint.v1";
inline constexpr std::string_view checkpoint_state_prefix = "state/";

/// What a checkpoint says about itself.
struct CheckpointHeader {
    std::string path;
    bool celltx = false;       ///< written by save_checkpoint (else: weights only, e.g. exported from PyTorch)
    nlohmann::json config;     ///< the configuration (null when not celltx)
    nlohmann::json state;      ///< the scalars of the states (null when not celltx)
};

namespace checkpoint_detail {

template <class X>
struct is_tensor : std::false_type {};
template <class T, class B>
struct is_tensor<Tensor<T, B>> : std::true_type {};

inline std::string state_key(std::string_view name) { return std::string(checkpoint_state_prefix) + std::string(name); }

inline nlohmann::json encode_double(double v) {
    if (std::isnan(v)) return "nan";
    if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
    return v;
}

inline double decode_double(const nlohmann::json& j, const std::string& path, std::string_view name) {
    if (j.is_number()) return j.get<double>();
    if (j.is_string()) {
        const auto s = j.get<std::string>();
        if (s == "nan") return std::numeric_limits<double>::quiet_NaN();
        if (s == "inf") return std::numeric_limits<double>::infinity();
        if (s == "-inf") return -std::numeric_limits<double>::infinity();
    }
    throw IoError(fmt::format("{}: checkpoint state '{}' is {}, not a number", path, name, j.dump()));
}

/// Names every state visits, checking they are unique.
template <class... States>
void check_unique_names(const std::string& path, States&... states) {
    std::set<std::string, std::less<>> seen;
    auto one = [&](auto& s) {
        s.visit_state([&](const auto& name, auto&) {
            if (!seen.insert(std::string(name)).second)
                throw IoError(fmt::format("{}: two checkpoint states are both named '{}'", path, std::string(name)));
        });
    };
    (one(states), ...);
}

} // namespace checkpoint_detail

/// Writes model + states + config to `path` atomically.
template <StateDictModule Model, class... States>
void save_checkpoint(const std::filesystem::path& path, Model& model, const nlohmann::json& config, States&... states) {
    using namespace checkpoint_detail;
    const std::string file = path.string();
    check_unique_names(file, states...);
    std::vector<TensorEntry> entries;
    std::set<std::string> names;
    HostCopies host;  // a device model's values and states, downloaded (entries point into them)
    model.visit_parameters(
        [&](const auto& name, auto& p) {
            if (std::string_view(name).starts_with(checkpoint_state_prefix))
                throw IoError(fmt::format("{}: parameter name '{}' uses the reserved prefix '{}'", file, std::string(name),
                                          checkpoint_state_prefix));
            entries.emplace_back(std::string(name), host.view_of(p.value));
        },
        std::string{});
    nlohmann::json scalars = nlohmann::json::object();
    std::vector<std::vector<double>> vectors;  // stable copies: entries point into them
    std::vector<std::pair<std::string, std::size_t>> vector_entries;
    auto visit = [&](auto& s) {
        s.visit_state([&](const auto& name_, auto& v) {
            const std::string name(name_);
            using X = std::remove_cvref_t<decltype(v)>;
            if constexpr (std::is_same_v<X, std::int64_t> || std::is_same_v<X, std::uint64_t>) {
                scalars[name] = v;
            } else if constexpr (std::is_same_v<X, double>) {
                scalars[name] = encode_double(v);
            } else if constexpr (std::is_same_v<X, std::vector<double>>) {
                vectors.push_back(v);
                vector_entries.emplace_back(name, vectors.size() - 1);
            } else if constexpr (is_tensor<X>::value) {
                entries.emplace_back(state_key(name), host.view_of(v));
            } else {
                static_assert(sizeof(X) == 0, "save_checkpoint: a state visits a value of an unsupported type");
            }
        });
    };
    (visit(states), ...);
    for (const auto& [name, i] : vector_entries)
        entries.emplace_back(state_key(name), ConstView<double>(vectors[i].data(), Shape{static_cast<index_t>(vectors[i].size())}));
    std::map<std::string, std::string> metadata{{"celltx.format", std::string(checkpoint_format)},
                                                {"celltx.config", config.dump()},
                                                {"celltx.state", scalars.dump()}};
    save_safetensors(path, entries, metadata);
}

/// The header of an opened checkpoint (configuration and scalars parsed, format checked).
inline CheckpointHeader checkpoint_header(const SafetensorsFile& f) {
    CheckpointHeader h;
    h.path = f.path();
    const auto& md = f.metadata();
    const auto fmt_it = md.find("celltx.format");
    if (fmt_it == md.end()) return h;
    if (fmt_it->second != checkpoint_format)
        throw IoError(fmt::format("{}: checkpoint format '{}' is not the supported '{}'", h.path, fmt_it->second, checkpoint_format));
    auto parse = [&](const char* key) {
        const auto it = md.find(key);
        if (it == md.end()) throw IoError(fmt::format("{}: the checkpoint has no '{}' metadata", h.path, key));
        try {
            return nlohmann::json::parse(it->second);
        } catch (const nlohmann::json::exception& e) {
            throw IoError(fmt::format("{}: the checkpoint's '{}' metadata is not valid JSON: {}", h.path, key, e.what()));
        }
    };
    h.config = parse("celltx.config");
    h.state = parse("celltx.state");
    if (!h.state.is_object()) throw IoError(fmt::format("{}: the checkpoint's 'celltx.state' metadata is not a JSON object", h.path));
    h.celltx = true;
    return h;
}
inline CheckpointHeader read_checkpoint_header(const std::filesystem::path& path) { return checkpoint_header(SafetensorsFile(path)); }

/// Loads the model's parameters (strict: every parameter, no unknown key besides "state/…") and
/// every name the states visit; nothing is assigned unless everything checks out. Returns the header.
template <StateDictModule Model, class... States>
CheckpointHeader load_checkpoint(const std::filesystem::path& path, Model& model, States&... states) {
    using namespace checkpoint_detail;
    const SafetensorsFile f(path);
    CheckpointHeader h = checkpoint_header(f);
    const std::string& file = h.path;
    if constexpr (sizeof...(States) > 0) {
        if (!h.celltx)
            throw IoError(fmt::format("{}: not a celltx checkpoint (no 'celltx.format' metadata): it holds weights only, and the "
                                      "trainer state needed here is missing",
                                      file));
        check_unique_names(file, states...);
    }
    // Pass 1: every state name is present with the right kind, dtype and shape.
    auto check = [&](auto& s) {
        s.visit_state([&](const auto& name_, auto& v) {
            const std::string name(name_);
            using X = std::remove_cvref_t<decltype(v)>;
            if constexpr (std::is_same_v<X, std::int64_t> || std::is_same_v<X, std::uint64_t> || std::is_same_v<X, double>) {
                if (!h.state.contains(name)) throw IoError(fmt::format("{}: the checkpoint has no state '{}'", file, name));
                const auto& j = h.state.at(name);
                if constexpr (std::is_same_v<X, double>) {
                    (void)decode_double(j, file, name);
                } else {
                    if (!j.is_number_integer() || (std::is_same_v<X, std::uint64_t> && !j.is_number_unsigned()))
                        throw IoError(fmt::format("{}: checkpoint state '{}' is {}, not {} integer", file, name, j.dump(),
                                                  std::is_same_v<X, std::uint64_t> ? "a non-negative" : "an"));
                }
            } else if constexpr (std::is_same_v<X, std::vector<double>>) {
                const TensorInfo& ti = f.info(state_key(name));
                if (ti.shape.rank() != 1)
                    throw IoError(fmt::format("{}: checkpoint state '{}' has shape {}, expected a vector", file, name, ti.shape));
            } else if constexpr (is_tensor<X>::value) {
                const TensorInfo& ti = f.info(state_key(name));
                if (!(ti.shape == v.shape()))
                    throw IoError(fmt::format("{}: checkpoint state '{}' has shape {}, expected {}", file, name, ti.shape, v.shape()));
                if (ti.dtype != dtype_of<typename X::value_type>)
                    throw IoError(fmt::format("{}: checkpoint state '{}' is {}, expected {} (a resume must be bit-identical)", file, name,
                                              dtype_name(ti.dtype), dtype_name(dtype_of<typename X::value_type>)));
            } else {
                static_assert(sizeof(X) == 0, "load_checkpoint: a state visits a value of an unsupported type");
            }
        });
    };
    (check(states), ...);
    // The weights: load_state_dict checks all before it copies anything.
    LoadOptions lo;
    lo.ignore = [](const std::string& key) { return std::string_view(key).starts_with(checkpoint_state_prefix); };
    load_state_dict(model, f, lo);
    // Pass 2: assign.
    auto assign = [&](auto& s) {
        s.visit_state([&](const auto& name_, auto& v) {
            const std::string name(name_);
            using X = std::remove_cvref_t<decltype(v)>;
            if constexpr (std::is_same_v<X, double>) v = decode_double(h.state.at(name), file, name);
            else if constexpr (std::is_same_v<X, std::int64_t> || std::is_same_v<X, std::uint64_t>) v = h.state.at(name).template get<X>();
            else if constexpr (std::is_same_v<X, std::vector<double>>) v = f.load_values<double>(state_key(name));
            else if constexpr (X::backend::is_device) {  // read on the host, then upload
                auto staged = Tensor<typename X::value_type, cpu>::uninitialized(v.shape());
                f.load_into<typename X::value_type>(state_key(name), staged.view());
                upload(static_cast<const typename X::value_type*>(staged.data()), v.view());
            } else f.load_into<typename X::value_type>(state_key(name), v.view());
        });
        if constexpr (requires { s.check_state(); }) s.check_state();
    };
    (assign(states), ...);
    return h;
}

/// Writes a text file atomically (temporary file, fsync, rename).
inline void write_text_atomic(const std::filesystem::path& path, std::string_view text) {
    detail::AtomicFile out(path);
    out.write(text.data(), text.size());
    out.commit();
}

} // namespace celltx::io
