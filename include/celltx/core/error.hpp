#pragma once
// Errors: every failure is an exception whose message names where (file, key, field) and what.
#include <stdexcept>
#include <string>
#include <string_view>
#include <fmt/format.h>

namespace celltx {

/// Base of every celltx exception.
class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// A shape or argument does not satisfy a layer's contract.
class ShapeError : public Error {
public:
    using Error::Error;
};

/// A file could not be read or written, or its contents are invalid.
class IoError : public Error {
public:
    using Error::Error;
};

/// Throws ShapeError with a formatted message when `cond` is false.
#if defined(__CUDACC__)
// nvcc's front end cannot evaluate fmt's consteval format-string checks: format at run time there.
template <class... Args>
inline void require(bool cond, std::string_view f, const Args&... args) {
    if (!cond) throw ShapeError(fmt::vformat(f, fmt::make_format_args(args...)));
}
#else
template <class... Args>
inline void require(bool cond, fmt::format_string<Args...> f, Args&&... args) {
    if (!cond) throw ShapeError(fmt::format(f, std::forward<Args>(args)...));
}
#endif

} // namespace celltx
