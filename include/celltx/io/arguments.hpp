#pragma once
// Numbers from command-line arguments and environment variables, with errors that name what was
// parsed: "--batch: '0' is outside [1, 1000000]", "environment variable CELLTX_X='abc' is not an
// integer" (std::stoi would say only "stoi", and would accept "12abc").
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
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

} // namespace celltx::io
