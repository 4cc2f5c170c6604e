#pragma once
// Runtime shapes of rank 0..4 (row-major, last index fastest).
#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <fmt/format.h>
#include "celltx/core/error.hpp"

namespace celltx {

using index_t = std::int64_t;

class Shape {
public:
    static constexpr int max_rank = 4;
    /// Most elements a shape may describe (2^60): numel() and a tensor's byte count never overflow.
    static constexpr index_t max_numel = index_t{1} << 60;

    Shape() = default;
    Shape(std::initializer_list<index_t> dims) {
        require(dims.size() <= max_rank, "Shape: rank {} exceeds the maximum rank {}", dims.size(), max_rank);
        for (index_t d : dims) {
            require(d >= 0, "Shape: negative extent {}", d);
            dims_[rank_++] = d;
        }
        check_numel();
    }
    template <class It>
    static Shape from_range(It first, It last) {
        Shape s;
        for (; first != last; ++first) {
            require(s.rank_ < max_rank, "Shape: rank exceeds the maximum rank {}", max_rank);
            require(*first >= 0, "Shape: negative extent {}", static_cast<index_t>(*first));
            s.dims_[s.rank_++] = static_cast<index_t>(*first);
        }
        s.check_numel();
        return s;
    }

    int rank() const noexcept { return rank_; }
    index_t operator[](int i) const {
        require(i >= -rank_ && i < rank_, "Shape: axis {} out of range for rank {}", i, rank_);
        return dims_[i < 0 ? i + rank_ : i];
    }
    index_t numel() const noexcept {
        index_t n = 1;
        for (int i = 0; i < rank_; ++i) n *= dims_[i];
        return n;
    }
    /// Extent of the last axis (1 for a scalar).
    index_t last() const noexcept { return rank_ ? dims_[rank_ - 1] : 1; }
    /// Product of all axes but the last: the number of rows a row-wise layer sees.
    index_t rows() const noexcept { return last() ? numel() / last() : 0; }
    /// Same shape with the last axis replaced.
    Shape with_last(index_t n) const {
        Shape s = *this;
        if (s.rank_ == 0) s.rank_ = 1;
        s.dims_[s.rank_ - 1] = n;
        return s;
    }
    /// True when the extents other than zero multiply to at most `limit` (no overflow on the way).
    template <class It>
    static bool product_fits(It first, It last, index_t limit = max_numel) {
        index_t n = 1;
        for (; first != last; ++first) {
            const auto d = static_cast<index_t>(*first);
            if (d == 0) continue;
            if (d > limit / n) return false;
            n *= d;
        }
        return true;
    }
    const index_t* begin() const noexcept { return dims_.data(); }
    const index_t* end() const noexcept { return dims_.data() + rank_; }

    friend bool operator==(const Shape& a, const Shape& b) noexcept {
        if (a.rank_ != b.rank_) return false;
        for (int i = 0; i < a.rank_; ++i)
            if (a.dims_[i] != b.dims_[i]) return false;
        return true;
    }
    std::string str() const {
        std::string s = "[";
        for (int i = 0; i < rank_; ++i) {
            if (i) s += ',';
            s += std::to_string(dims_[i]);
        }
        return s + "]";
    }

private:
    void check_numel() const {
        if (!product_fits(begin(), end()))
            throw ShapeError(fmt::format("Shape: the extents multiply to more than 2^60 elements (overflow): {}", dims_text()));
    }
    std::string dims_text() const {
        std::string t = "[";
        for (int i = 0; i < rank_; ++i) t += fmt::format("{}{}", i ? "," : "", dims_[i]);
        return t + "]";
    }

    std::array<index_t, max_rank> dims_{};
    int rank_ = 0;
};

} // namespace celltx

template <>
struct fmt::formatter<celltx::Shape> : fmt::formatter<std::string> {
    auto format(const celltx::Shape& s, format_context& ctx) const {
        return fmt::formatter<std::string>::format(s.str(), ctx);
    }
};
