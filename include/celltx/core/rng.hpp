#pragma once
// Counter-based random numbers (Philox4x32-10, Salmon et al. 2011). Every draw is a pure function
// of (seed, stream, index), so results never depend on the thread count or the visiting order.
#include <array>
#include <cmath>
#include <cstdint>
#include <numbers>
#include "celltx/core/host_device.hpp"

namespace celltx {

/// The rounds of Philox4x32-10 in place: c (the 128-bit counter) becomes the block's 128 random
/// bits under key (k0, k1). Host and device run this same function.
CELLTX_HOST_DEVICE inline void philox4x32_rounds(std::uint32_t (&c)[4], std::uint32_t k0, std::uint32_t k1) noexcept {
    constexpr std::uint32_t m0 = 0xD2511F53u, m1 = 0xCD9E8D57u, w0 = 0x9E3779B9u, w1 = 0xBB67AE85u;
    for (int round = 0; round < 10; ++round) {
#if defined(__CUDA_ARCH__)
        const std::uint32_t hi0 = __umulhi(m0, c[0]), lo0 = m0 * c[0], hi1 = __umulhi(m1, c[2]), lo1 = m1 * c[2];
#else
        const std::uint64_t p0 = static_cast<std::uint64_t>(m0) * c[0];
        const std::uint64_t p1 = static_cast<std::uint64_t>(m1) * c[2];
        const std::uint32_t hi0 = static_cast<std::uint32_t>(p0 >> 32), lo0 = static_cast<std::uint32_t>(p0);
        const std::uint32_t hi1 = static_cast<std::uint32_t>(p1 >> 32), lo1 = static_cast<std::uint32_t>(p1);
#endif
        const std::uint32_t n0 = hi1 ^ c[1] ^ k0, n2 = hi0 ^ c[3] ^ k1;
        c[0] = n0;
        c[1] = lo1;
        c[2] = n2;
        c[3] = lo0;
        k0 += w0;
        k1 += w1;
    }
}

/// One Philox4x32-10 block: 128 random bits from a 128-bit counter and a 64-bit key.
inline std::array<std::uint32_t, 4> philox4x32(std::array<std::uint32_t, 4> ctr, std::array<std::uint32_t, 2> key) noexcept {
    std::uint32_t c[4] = {ctr[0], ctr[1], ctr[2], ctr[3]};
    philox4x32_rounds(c, key[0], key[1]);
    return {c[0], c[1], c[2], c[3]};
}

/// A CounterRng's stream as plain words, for kernels: element i's 32 random bits are lane i & 3 of
/// block i >> 2, exactly as CounterRng::bits / uniform address them.
struct PhiloxStream {
    std::uint32_t key0 = 0, key1 = 0, stream0 = 0, stream1 = 0;

    /// The 128 bits of block `index` (CounterRng::bits).
    CELLTX_HOST_DEVICE void block(std::uint64_t index, std::uint32_t (&out)[4]) const noexcept {
        out[0] = static_cast<std::uint32_t>(index);
        out[1] = static_cast<std::uint32_t>(index >> 32);
        out[2] = stream0;
        out[3] = stream1;
        philox4x32_rounds(out, key0, key1);
    }
    /// The 32 random bits of element i (one lane of a block).
    CELLTX_HOST_DEVICE std::uint32_t element_bits(std::uint64_t i) const noexcept {
        std::uint32_t b[4];
        block(i >> 2, b);
        return b[i & 3];
    }
};

/// Uniform in (0, 1] from 32 random bits; never 0, so log() is safe.
CELLTX_HOST_DEVICE inline double uint_to_unit(std::uint32_t x) noexcept { return (static_cast<double>(x) + 1.0) * (1.0 / 4294967296.0); }

/// A stream of random numbers addressed by index: draw(i) is the same whoever asks and when.
class CounterRng {
public:
    constexpr CounterRng() = default;
    CELLTX_HOST_DEVICE constexpr CounterRng(std::uint64_t seed, std::uint64_t stream = 0) noexcept : seed_(seed), stream_(stream) {}

    CELLTX_HOST_DEVICE std::uint64_t seed() const noexcept { return seed_; }
    CELLTX_HOST_DEVICE std::uint64_t stream() const noexcept { return stream_; }
    /// A derived, independent stream (e.g. one per layer, per step).
    CELLTX_HOST_DEVICE CounterRng substream(std::uint64_t id) const noexcept {
        return CounterRng(seed_, mix(stream_ * 0x9E3779B97F4A7C15ull + id + 1));
    }

    /// The same stream as plain words, for kernels.
    CELLTX_HOST_DEVICE PhiloxStream philox_stream() const noexcept {
        return {static_cast<std::uint32_t>(seed_), static_cast<std::uint32_t>(seed_ >> 32), static_cast<std::uint32_t>(stream_),
                static_cast<std::uint32_t>(stream_ >> 32)};
    }
    /// 128 random bits for block `index`.
    std::array<std::uint32_t, 4> bits(std::uint64_t index) const noexcept {
        return philox4x32({static_cast<std::uint32_t>(index), static_cast<std::uint32_t>(index >> 32),
                           static_cast<std::uint32_t>(stream_), static_cast<std::uint32_t>(stream_ >> 32)},
                          {static_cast<std::uint32_t>(seed_), static_cast<std::uint32_t>(seed_ >> 32)});
    }
    /// Uniform in (0, 1] for element `i` (four elements share one Philox block).
    double uniform(std::uint64_t i) const noexcept { return uint_to_unit(bits(i >> 2)[i & 3]); }
    /// Standard normal for element `i` (Box-Muller on the two halves of a block).
    double normal(std::uint64_t i) const noexcept {
        const auto b = bits(i >> 1);
        const int k = static_cast<int>(i & 1) * 2;
        const double r = std::sqrt(-2.0 * std::log(uint_to_unit(b[k])));
        const double t = 2.0 * std::numbers::pi * uint_to_unit(b[k + 1]);
        return r * std::cos(t);
    }
    /// Uniform integer in [0, n) for element `i` (64-bit multiply-shift; bias below 2^-32 for n < 2^32).
    std::uint64_t below(std::uint64_t i, std::uint64_t n) const noexcept {
        const auto b = bits(i);
        const std::uint64_t x = (static_cast<std::uint64_t>(b[0]) << 32) | b[1];
        return static_cast<std::uint64_t>((static_cast<unsigned __int128>(x) * n) >> 64);
    }

private:
    CELLTX_HOST_DEVICE static constexpr std::uint64_t mix(std::uint64_t z) noexcept {  // splitmix64 finaliser
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    std::uint64_t seed_ = 0;
    std::uint64_t stream_ = 0;
};

/// A sequential generator on top of CounterRng, for initialisation and sampling code that reads
/// numbers one after another. Its state is (seed, stream, position): checkpoints save those three.
class Generator {
public:
    explicit Generator(std::uint64_t seed = 0, std::uint64_t stream = 0) : rng_(seed, stream) {}
    double uniform() noexcept { return rng_.uniform(pos_++); }
    double normal() noexcept { return rng_.normal(pos_++); }
    std::uint64_t below(std::uint64_t n) noexcept { return rng_.below(pos_++, n); }
    std::uint64_t position() const noexcept { return pos_; }
    void set_position(std::uint64_t p) noexcept { pos_ = p; }
    const CounterRng& counter_rng() const noexcept { return rng_; }

private:
    CounterRng rng_;
    std::uint64_t pos_ = 0;
};

} // namespace celltx
