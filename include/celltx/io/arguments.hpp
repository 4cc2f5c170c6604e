#pragma once
// Numbers from command-line arguments and environment variables, with errors that name what was
// parsed: "--batch: '0' is outside [1, 1000000]", "environment variable CELLTX_X='abc' is not an
// integer" (std::stoi would say only "stoi", and would accept "12abc"). CommandLine: the options of
// a program's command line, each value checked with parse_number.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>
#include <fmt/format.h>
#include "celltx/core/error.hpp"

namespace celltx::io {

/// `text` as a T (an integer, or a finite floating-point number) in [lo, hi], the whole text and
/// nothing else; otherwise Error "<what>: '<text>' is ...".
template <class T>
    requires(std::is_arithmetic_v<T> && !std::is_same_v<T, bool>)
T parse_number(std::string_view text, std::string_view what, T lo = std::numeric_limits<T>::lowest(), T hi = std::numeric_limits<T>::max()) {
    constexpr const char* kind = std::is_integral_v<T> ? "an integer" : "a number";
    const std::string shown = text.size() > 64 ? std::string(text.substr(0, 64)) + "..." : std::string(text);
    std::string_view body = text;
    if constexpr (std::is_integral_v<T>) {
        if (body.starts_with('+')) body.remove_prefix(1);  // from_chars takes no '+'
    }
    T v{};
    const auto [p, ec] = std::from_chars(body.data(), body.data() + body.size(), v);
    if (body.empty() || ec == std::errc::invalid_argument || p != body.data() + body.size())
        throw Error(fmt::format("{}: '{}' is not {}", what, shown, kind));
    if (ec == std::errc::result_out_of_range) throw Error(fmt::format("{}: '{}' is out of range for {}", what, shown, kind));
    if constexpr (std::is_floating_point_v<T>) {
        if (!std::isfinite(v)) throw Error(fmt::format("{}: '{}' is not a finite number", what, shown));
    }
    if (v < lo || v > hi) throw Error(fmt::format("{}: '{}' is outside [{}, {}]", what, shown, lo, hi));
    return v;
}

/// The environment variable `name` as a T in [lo, hi], or `fallback` when it is unset or empty;
/// a bad value throws Error naming the variable and its value.
template <class T>
    requires(std::is_arithmetic_v<T> && !std::is_same_v<T, bool>)
T env_number(const char* name, T fallback, T lo = std::numeric_limits<T>::lowest(), T hi = std::numeric_limits<T>::max()) {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') return fallback;
    return parse_number<T>(v, fmt::format("environment variable {}", name), lo, hi);
}

/// A mistake on the command line: a program prints it with its usage hint and exits with status 2.
struct UsageError : Error {
    using Error::Error;
};

/// The arguments of a command line after the first `first`: "--name VALUE" options and "--name"
/// switches, consumed as they are read, so that finish() can refuse whatever is left. Every error is a
/// UsageError naming the option.
class CommandLine {
public:
    CommandLine(int argc, char** argv, int first) {
        for (int i = first; i < argc; ++i) items_.emplace_back(argv[i]);
    }
    bool help() const {
        return std::any_of(items_.begin(), items_.end(), [](const std::string& s) { return s == "--help" || s == "-h"; });
    }
    /// Consumes "--name VALUE"; an option given twice, or without a value, is an error.
    std::optional<std::string> value(const std::string& name) {
        const auto it = std::find(items_.begin(), items_.end(), name);
        if (it == items_.end()) return std::nullopt;
        if (it + 1 == items_.end() || (it + 1)->starts_with("--")) throw UsageError(fmt::format("{} needs a value", name));
        std::string v = *(it + 1);
        items_.erase(it, it + 2);
        if (std::find(items_.begin(), items_.end(), name) != items_.end()) throw UsageError(fmt::format("{} is given twice", name));
        given_.insert(name);
        return v;
    }
    /// Consumes the switch "--name".
    bool flag(const std::string& name) {
        const auto it = std::find(items_.begin(), items_.end(), name);
        if (it == items_.end()) return false;
        items_.erase(it);
        given_.insert(name);
        return true;
    }
    /// Sets `out` from "--name VALUE" when given (a number through parse_number, a string as written).
    template <class T>
    void get(const std::string& name, T& out) {
        const auto v = value(name);
        if (!v) return;
        if constexpr (std::is_same_v<T, std::string>) {
            out = *v;
        } else {
            try {
                out = parse_number<T>(*v, name);
            } catch (const Error& e) {
                throw UsageError(e.what());
            }
        }
    }
    /// Refuses anything not consumed.
    void finish() const {
        if (!items_.empty()) throw UsageError(fmt::format("unknown argument '{}'", items_.front()));
    }
    /// The options and switches given, by name.
    const std::set<std::string>& given() const { return given_; }

private:
    std::vector<std::string> items_;
    std::set<std::string> given_;
};

} // namespace celltx::io
