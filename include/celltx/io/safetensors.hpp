#pragma once
// safetensors (https://github.com/huggingface/safetensors) reading and writing.
// Layout: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}}
// (plus an optional "__metadata__" string map), then the data; offsets are relative to the end of
// the header and must tile the data section exactly.
//
// Reading: SafetensorsFile(path) opens without blocking (a FIFO is refused, not waited on), reads
// the 8-byte length and the header first and validates them against the file size, then reads the
// data section; nothing is allocated for the data before the header proves the file consistent.
// The header must start with '{', hold no NUL byte, nest at most max_json_depth levels, and be
// valid JSON; any defect throws IoError naming the file, the key and what is wrong (quoting at
// most a short prefix of a bad value). load<T>(name) converts any stored dtype to T exactly as
// torch's .to(dtype) does (round to nearest even).
// Writing: save_safetensors(path, entries, metadata) writes F32/F64 through io::detail::AtomicFile
// (io/atomic_file.hpp: temporary file, fsync, rename; permissions kept, symlinks written through,
// read-only files refused): the destination is either the old file or the complete new one.
#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <deque>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include "celltx/core/error.hpp"
#include "celltx/core/tensor.hpp"
#include "celltx/io/atomic_file.hpp"
#include "celltx/io/posix_file.hpp"

namespace celltx::io {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian; this reader copies it as is");

/// The safetensors dtypes celltx reads (all but the 8-bit floats). Only F32 and F64 are written.
enum class DType { F32, F64, F16, BF16, I32, I64, BOOL, U8, I8, I16, U16, U32, U64 };

inline std::size_t dtype_size(DType d) {
    switch (d) {
        case DType::BOOL: case DType::U8: case DType::I8: return 1;
        case DType::F16: case DType::BF16: case DType::I16: case DType::U16: return 2;
        case DType::F32: case DType::I32: case DType::U32: return 4;
        case DType::F64: case DType::I64: case DType::U64: return 8;
    }
    return 0;
}
inline const char* dtype_name(DType d) {
    switch (d) {
        case DType::F32: return "F32"; case DType::F64: return "F64"; case DType::F16: return "F16";
        case DType::BF16: return "BF16"; case DType::I32: return "I32"; case DType::I64: return "I64";
        case DType::BOOL: return "BOOL"; case DType::U8: return "U8"; case DType::I8: return "I8";
        case DType::I16: return "I16"; case DType::U16: return "U16"; case DType::U32: return "U32";
        case DType::U64: return "U64";
    }
    return "?";
}
inline std::optional<DType> dtype_from_name(std::string_view s) {
    for (DType d : {DType::F32, DType::F64, DType::F16, DType::BF16, DType::I32, DType::I64, DType::BOOL, DType::U8,
                    DType::I8, DType::I16, DType::U16, DType::U32, DType::U64})
        if (s == dtype_name(d)) return d;
    return std::nullopt;
}
inline bool is_floating(DType d) { return d == DType::F32 || d == DType::F64 || d == DType::F16 || d == DType::BF16; }
/// The dtype a Scalar is stored as by default.
template <Scalar T>
inline constexpr DType dtype_of = std::is_same_v<T, float> ? DType::F32 : DType::F64;

struct TensorInfo {
    std::string name;
    DType dtype;
    Shape shape;
    std::size_t begin = 0, end = 0;  ///< byte offsets into the data section
};

namespace detail {

/// `s` for a message: control bytes escaped as \xNN, cut after `max` bytes (at a UTF-8 boundary)
/// with the full length appended, so that a 100 MB key or value never floods a message.
inline std::string short_text(std::string_view s, std::size_t max = 64) {
    std::string out;
    std::size_t i = 0;
    for (; i < s.size() && out.size() < max; ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x20 || c == 0x7f) out += fmt::format("\\x{:02x}", c);
        else out += static_cast<char>(c);
    }
    while (i < s.size() && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) out += s[i++];  // finish a UTF-8 sequence
    if (i < s.size()) out += fmt::format("... ({} bytes)", s.size());
    return out;
}

/// A JSON value for a message: compact JSON, at most about `max` characters ("..." after), never
/// recursing deeper than the parser allowed.
inline void short_json_into(const nlohmann::json& v, std::string& out, std::size_t max, int depth) {
    if (out.size() > max) return;
    if (depth > 64) {
        out += "...";
        return;
    }
    if (v.is_array() || v.is_object()) {
        out += v.is_array() ? '[' : '{';
        bool first = true;
        for (auto it = v.begin(); it != v.end(); ++it) {
            if (out.size() > max) {
                out += ",...";
                break;
            }
            if (!first) out += ',';
            first = false;
            if (v.is_object()) out += '"' + short_text(it.key(), max) + "\":";
            short_json_into(*it, out, max, depth + 1);
        }
        out += v.is_array() ? ']' : '}';
    } else {
        out += v.is_string() ? '"' + short_text(v.get_ref<const std::string&>(), max) + '"' : short_text(v.dump(), max);
    }
}
inline std::string short_json(const nlohmann::json& v, std::size_t max = 64) {
    std::string out;
    short_json_into(v, out, max, 0);
    if (out.size() > max + 16) out = out.substr(0, max) + "...";
    return out;
}

/// IEEE half bits -> float, exactly (every half is a float); NaN payloads are kept.
inline float half_bits_to_float(std::uint16_t h) {
    const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, frac = h & 0x3ffu;
    if (exp == 0) {  // zero or subnormal: frac * 2^-24, exact in float
        const float v = std::ldexp(static_cast<float>(frac), -24);
        return sign ? -v : v;
    }
    const std::uint32_t bits = exp == 0x1f ? (sign | 0x7f800000u | (frac << 13)) : (sign | ((exp + 112u) << 23) | (frac << 13));
    return std::bit_cast<float>(bits);
}
/// bfloat16 bits are the top half of a float's.
inline float bf16_bits_to_float(std::uint16_t b) { return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16); }

template <class S, class U>
void convert_from(const unsigned char* src, U* dst, std::size_t n) {
    if constexpr (std::is_same_v<S, U>) {
        if (n) std::memcpy(dst, src, n * sizeof(U));
    } else {
        for (std::size_t i = 0; i < n; ++i) {
            S v;
            std::memcpy(&v, src + i * sizeof(S), sizeof(S));
            if constexpr (std::is_same_v<S, bool>) dst[i] = static_cast<U>(v ? 1 : 0);
            else dst[i] = static_cast<U>(v);
        }
    }
}

/// n stored values of dtype d -> U (one rounding, as torch's .to(dtype)).
template <class U>
void convert(DType d, const unsigned char* src, U* dst, std::size_t n) {
    switch (d) {
        case DType::F32: return convert_from<float>(src, dst, n);
        case DType::F64: return convert_from<double>(src, dst, n);
        case DType::I32: return convert_from<std::int32_t>(src, dst, n);
        case DType::I64: return convert_from<std::int64_t>(src, dst, n);
        case DType::U8: return convert_from<std::uint8_t>(src, dst, n);
        case DType::I8: return convert_from<std::int8_t>(src, dst, n);
        case DType::I16: return convert_from<std::int16_t>(src, dst, n);
        case DType::U16: return convert_from<std::uint16_t>(src, dst, n);
        case DType::U32: return convert_from<std::uint32_t>(src, dst, n);
        case DType::U64: return convert_from<std::uint64_t>(src, dst, n);
        case DType::BOOL:  // bytes 0/1; any non-zero byte reads as true
            for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<U>(src[i] ? 1 : 0);
            return;
        case DType::F16: case DType::BF16:
            for (std::size_t i = 0; i < n; ++i) {
                const auto bits = static_cast<std::uint16_t>(src[2 * i] | (src[2 * i + 1] << 8));
                dst[i] = static_cast<U>(d == DType::F16 ? half_bits_to_float(bits) : bf16_bits_to_float(bits));
            }
            return;
    }
}

/// Levenshtein distance, for "did you mean" suggestions.
inline std::size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
        std::size_t diag = row[0];
        row[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            const std::size_t up = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
            diag = up;
        }
    }
    return row[b.size()];
}

/// Up to `count` names closest to `name`: names containing it or contained in it (a missing or
/// extra prefix) first, then by edit distance.
inline std::vector<std::string> closest_names(std::string_view name, const std::vector<std::string>& names, std::size_t count = 3) {
    auto score = [&](const std::string& s) {
        const bool part = s.find(name) != std::string::npos || name.find(s) != std::string_view::npos;
        return std::pair<int, std::size_t>{part ? 0 : 1, edit_distance(name, s)};
    };
    std::vector<std::pair<std::pair<int, std::size_t>, std::string>> scored;
    for (const auto& s : names) scored.push_back({score(s), s});
    std::sort(scored.begin(), scored.end());
    std::vector<std::string> out;
    for (std::size_t i = 0; i < scored.size() && out.size() < count; ++i) {
        const auto& [sc, s] = scored[i];
        if (sc.first == 0 || sc.second <= std::max<std::size_t>(3, name.size() / 2)) out.push_back(s);
    }
    return out;
}

} // namespace detail

/// A safetensors file read into memory and validated. Copies are cheap (they share the bytes).
class SafetensorsFile {
public:
    static constexpr std::uint64_t max_header_bytes = 100'000'000;  // the reference implementation's limit
    /// Deepest JSON nesting accepted in a header (a valid one needs 3: header, entry, shape).
    static constexpr int max_json_depth = 16;

    explicit SafetensorsFile(const std::filesystem::path& path) : path_(path.string()) {
        ReadableFile file = open_for_reading(path, "safetensors file");
        size_ = file.size;
        if (size_ < 8)
            throw IoError(fmt::format("{}: file of {} bytes is too short for the 8-byte header length (empty or truncated file)", path_, size_));
        unsigned char len[8];
        read_exactly(file.fd.fd, 0, len, 8, path);
        std::uint64_t n = 0;
        for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
        if (n > max_header_bytes) throw IoError(fmt::format("{}: header length {} exceeds the 100 MB limit (not a safetensors file?)", path_, n));
        if (n > size_ - 8)
            throw IoError(fmt::format("{}: header length {} runs past the end of the {}-byte file (truncated file?)", path_, n, size_));
        std::string header(static_cast<std::size_t>(n), '\0');
        read_exactly(file.fd.fd, 8, header.data(), header.size(), path);
        data_size_ = static_cast<std::size_t>(size_ - 8 - n);
        parse_header(header);
        // The header tiles the data section exactly, so the file is consistent: now read the data.
        try {
            buffer_ = std::make_shared_for_overwrite<unsigned char[]>(std::max<std::size_t>(data_size_, 1));
        } catch (const std::bad_alloc&) {
            throw IoError(fmt::format("{}: cannot allocate {} bytes for the data section", path_, data_size_));
        }
        read_exactly(file.fd.fd, 8 + n, buffer_.get(), data_size_, path);
        data_ = buffer_.get();
    }

    const std::string& path() const noexcept { return path_; }
    /// Every tensor, sorted by name.
    const std::vector<TensorInfo>& tensors() const noexcept { return infos_; }
    const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }
    bool contains(std::string_view name) const { return index_.find(name) != index_.end(); }
    const TensorInfo& info(std::string_view name) const {
        auto it = index_.find(name);
        if (it == index_.end()) throw missing(name);
        return infos_[it->second];
    }
    std::vector<std::string> names() const {
        std::vector<std::string> out;
        for (const auto& t : infos_) out.push_back(t.name);
        return out;
    }

    /// The tensor `name`, converted to T.
    template <Scalar T>
    Tensor<T> load(std::string_view name) const {
        const TensorInfo& ti = info(name);
        Tensor<T> t = Tensor<T>::uninitialized(ti.shape);
        detail::convert(ti.dtype, data_ + ti.begin, t.data(), static_cast<std::size_t>(ti.shape.numel()));
        return t;
    }
    /// Converts tensor `name` into `dst`, whose shape must be the stored one.
    template <Scalar T>
    void load_into(std::string_view name, TensorView<T> dst) const {
        const TensorInfo& ti = info(name);
        if (!(ti.shape == dst.shape()))
            throw IoError(fmt::format("{}: tensor '{}' has shape {} but the destination has shape {}", path_, ti.name, ti.shape, dst.shape()));
        detail::convert(ti.dtype, data_ + ti.begin, dst.data(), static_cast<std::size_t>(ti.shape.numel()));
    }
    /// The values of tensor `name` as U, row-major. An integer U takes only integer (or BOOL) data,
    /// and every value must fit: indices and counts stay exact beyond 2^53.
    template <class U>
        requires(std::is_floating_point_v<U> || (std::is_integral_v<U> && !std::is_same_v<U, bool>))
    std::vector<U> load_values(std::string_view name) const {
        const TensorInfo& ti = info(name);
        const auto n = static_cast<std::size_t>(ti.shape.numel());
        std::vector<U> out(n);
        const unsigned char* src = data_ + ti.begin;
        if constexpr (std::is_integral_v<U>) {
            if (is_floating(ti.dtype))
                throw IoError(fmt::format("{}: tensor '{}' holds {} values, not integers", path_, ti.name, dtype_name(ti.dtype)));
            // Widen through the int64 or uint64 value, then range-check against U.
            const bool unsigned_source = ti.dtype == DType::U64;
            for (std::size_t i = 0; i < n; ++i) {
                bool fits;
                if (unsigned_source) {
                    std::uint64_t v;
                    std::memcpy(&v, src + i * 8, 8);
                    fits = std::in_range<U>(v);
                    out[i] = static_cast<U>(v);
                } else {
                    std::int64_t v;
                    detail::convert(ti.dtype, src + i * dtype_size(ti.dtype), &v, 1);
                    fits = std::in_range<U>(v);
                    out[i] = static_cast<U>(v);
                }
                if (!fits)
                    throw IoError(fmt::format("{}: tensor '{}': value at flat index {} does not fit the requested integer type", path_, ti.name, i));
            }
        } else {
            detail::convert(ti.dtype, src, out.data(), n);
        }
        return out;
    }

    /// The raw bytes of tensor `name` (little-endian, its own dtype).
    const unsigned char* bytes(std::string_view name) const { return data_ + info(name).begin; }
    /// Bytes in the data section (after the header).
    std::size_t data_size() const noexcept { return data_size_; }

    /// One stored value as a double (I64/U64 beyond 2^53 round).
    static double read_scalar(DType d, const unsigned char* p) {
        double v;
        detail::convert(d, p, &v, 1);
        return v;
    }
    static double half_to_double(std::uint16_t h) { return detail::half_bits_to_float(h); }

private:
    IoError missing(std::string_view name) const {
        const auto close = detail::closest_names(name, names());
        std::string hint;
        for (const auto& s : close) hint += fmt::format("{}'{}'", hint.empty() ? "" : ", ", s);
        return IoError(fmt::format("{}: no tensor named '{}'{} (the file holds {} tensors)", path_, detail::short_text(name, 200),
                                   hint.empty() ? "" : fmt::format("; did you mean {}?", hint), infos_.size()));
    }

    [[noreturn]] void fail(std::string_view what) const { throw IoError(fmt::format("{}: {}", path_, what)); }
    [[noreturn]] void fail(const std::string& key, std::string_view what) const {
        throw IoError(fmt::format("{}: tensor '{}': {}", path_, detail::short_text(key, 200), what));
    }

    /// Parses the JSON, rejecting what nlohmann would let through: duplicate keys at any depth (it
    /// keeps the last one), a byte-order mark (skipped), a NUL byte (read as the end of the input,
    /// so "{}\0garbage" would parse), and nesting deeper than max_json_depth (a deep value would
    /// be printed recursively).
    nlohmann::json parse_json(std::string_view header) const {
        using json = nlohmann::json;
        if (header.empty() || header[0] != '{')
            fail(fmt::format("header is not a JSON object: it must start with '{{' but starts with {}", header.empty() ? std::string("nothing (empty header)")
                                                                                               : "'" + detail::short_text(header.substr(0, 8), 16) + "'"));
        if (const auto nul = header.find('\0'); nul != std::string_view::npos)
            fail(fmt::format("header holds a NUL byte at offset {} (the header is JSON text padded with spaces)", nul));
        struct TooDeep {};
        std::vector<std::pair<std::string, std::set<std::string>>> open;  // (owning key, keys seen) per object
        std::string last_key, dup, dup_owner;
        json::parser_callback_t track = [&](int depth, json::parse_event_t ev, json& parsed) {
            if ((ev == json::parse_event_t::object_start || ev == json::parse_event_t::array_start) && depth >= max_json_depth) throw TooDeep{};
            if (ev == json::parse_event_t::object_start) open.emplace_back(open.empty() ? std::string{} : last_key, std::set<std::string>{});
            else if (ev == json::parse_event_t::object_end) open.pop_back();
            else if (ev == json::parse_event_t::key) {
                last_key = parsed.get<std::string>();
                if (!open.back().second.insert(last_key).second && dup.empty()) {
                    dup = last_key;
                    dup_owner = open.back().first;
                }
            }
            return true;
        };
        json j;
        try {
            j = json::parse(header.begin(), header.end(), track, /*allow_exceptions*/ true, /*ignore_comments*/ false);
        } catch (const json::exception& e) {
            fail(fmt::format("header is not valid JSON: {}", detail::short_text(e.what(), 200)));
        } catch (const TooDeep&) {
            fail(fmt::format("header JSON nests deeper than {} levels", max_json_depth));
        }
        if (!dup.empty()) {
            if (dup_owner.empty()) fail(dup, "key appears twice in the header (duplicate key)");
            fail(fmt::format("duplicate key '{}' inside header entry '{}'", detail::short_text(dup, 200), detail::short_text(dup_owner, 200)));
        }
        return j;
    }

    void parse_header(std::string_view header) {
        const nlohmann::json j = parse_json(header);
        if (!j.is_object()) fail(fmt::format("header is not a JSON object but {}", j.type_name()));
        for (auto it = j.begin(); it != j.end(); ++it) {
            const std::string& key = it.key();
            const auto& v = it.value();
            if (key == "__metadata__") {
                if (!v.is_object()) fail("header field '__metadata__' is not an object");
                for (auto m = v.begin(); m != v.end(); ++m) {
                    if (!m.value().is_string())
                        fail(fmt::format("header field '__metadata__': value of '{}' is {}, not a string", detail::short_text(m.key(), 200),
                                        detail::short_json(m.value())));
                    metadata_[m.key()] = m.value().get<std::string>();
                }
                continue;
            }
            infos_.push_back(parse_entry(key, v));
        }
        for (std::size_t i = 0; i < infos_.size(); ++i) index_.emplace(infos_[i].name, i);
        check_layout();
    }

    TensorInfo parse_entry(const std::string& key, const nlohmann::json& v) const {
        if (!v.is_object()) fail(key, fmt::format("entry is {}, not an object", v.type_name()));
        for (const char* field : {"dtype", "shape", "data_offsets"})
            if (!v.contains(field)) fail(key, fmt::format("missing field '{}'", field));
        TensorInfo ti;
        ti.name = key;
        const auto& dt = v["dtype"];
        const auto dtype = dt.is_string() ? dtype_from_name(dt.get<std::string>()) : std::nullopt;
        if (!dtype) fail(key, fmt::format("field 'dtype': unknown or unsupported dtype {}", detail::short_json(dt)));
        ti.dtype = *dtype;

        const auto& shp = v["shape"];
        if (!shp.is_array()) fail(key, fmt::format("field 'shape' is {}, not an array", detail::short_json(shp)));
        if (shp.size() > static_cast<std::size_t>(Shape::max_rank))
            fail(key, fmt::format("field 'shape' {} has rank {}, more than the maximum rank {}", detail::short_json(shp), shp.size(), Shape::max_rank));
        std::vector<index_t> dims;
        std::uint64_t numel = 1, nonzero = 1;
        for (const auto& d : shp) {
            if (d.is_number_integer() && !d.is_number_unsigned()) fail(key, fmt::format("field 'shape' {} has a negative extent", detail::short_json(shp)));
            if (!d.is_number_unsigned()) fail(key, fmt::format("field 'shape' {} has a non-integer extent", detail::short_json(shp)));
            const auto e = d.get<std::uint64_t>();
            // Reject shapes whose element count (ignoring zeros) overflows or exceeds Shape::max_numel.
            if (e > 0 && (__builtin_mul_overflow(nonzero, e, &nonzero) || nonzero > static_cast<std::uint64_t>(Shape::max_numel)))
                fail(key, fmt::format("field 'shape' {} has too many elements (more than 2^60)", detail::short_json(shp)));
            numel = e == 0 ? 0 : numel * e;
            dims.push_back(static_cast<index_t>(e));
        }
        ti.shape = Shape::from_range(dims.begin(), dims.end());

        const auto& off = v["data_offsets"];
        if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
            fail(key, fmt::format("field 'data_offsets' {} is not two non-negative integers", detail::short_json(off)));
        ti.begin = off[0].get<std::size_t>();
        ti.end = off[1].get<std::size_t>();
        if (ti.end < ti.begin) fail(key, fmt::format("field 'data_offsets' [{}, {}] ends before it begins", ti.begin, ti.end));
        if (ti.end > data_size_)
            fail(key, fmt::format("field 'data_offsets' [{}, {}] runs past the end of the {}-byte data section (truncated file?)",
                                  ti.begin, ti.end, data_size_));
        std::uint64_t need = 0;
        if (__builtin_mul_overflow(numel, dtype_size(ti.dtype), &need) || need != ti.end - ti.begin)
            fail(key, fmt::format("dtype {} and shape {} need {} bytes but field 'data_offsets' [{}, {}] spans {}", dtype_name(ti.dtype),
                                  ti.shape, need, ti.begin, ti.end, ti.end - ti.begin));
        return ti;
    }

    /// Offsets must tile the data section exactly: no gap, no overlap, nothing after the last tensor.
    void check_layout() const {
        std::vector<const TensorInfo*> sorted;
        for (const auto& t : infos_) sorted.push_back(&t);
        std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return std::pair(a->begin, a->end) < std::pair(b->begin, b->end); });
        std::size_t at = 0;
        const TensorInfo* prev = nullptr;
        for (const auto* t : sorted) {
            if (t->begin > at)
                fail(t->name, fmt::format("field 'data_offsets' [{}, {}] leaves a gap of {} bytes after {} (offsets must be contiguous)",
                                          t->begin, t->end, t->begin - at, prev ? fmt::format("tensor '{}'", prev->name) : "the header"));
            if (t->begin < at)
                fail(t->name, fmt::format("field 'data_offsets' [{}, {}] overlaps tensor '{}' [{}, {}]", t->begin, t->end, prev->name,
                                          prev->begin, prev->end));
            at = t->end;
            prev = t;
        }
        if (at != data_size_)
            fail(fmt::format("{} bytes after the end of the last tensor{} belong to no tensor (data section of {} bytes)", data_size_ - at,
                             prev ? fmt::format(" '{}'", prev->name) : std::string{}, data_size_));
    }

    std::string path_;
    std::shared_ptr<unsigned char[]> buffer_;  // the whole file, immutable once read: copies share it
    std::size_t size_ = 0;
    const unsigned char* data_ = nullptr;
    std::size_t data_size_ = 0;
    std::vector<TensorInfo> infos_;
    std::map<std::string, std::size_t, std::less<>> index_;
    std::map<std::string, std::string> metadata_;
};

/// One tensor to write: a name, the caller's data (not copied: it must outlive the save call) and
/// the dtype to store it as (F32 or F64; a double tensor may be stored as F32).
struct TensorEntry {
    std::string name;
    Shape shape;
    const void* data = nullptr;
    DType source = DType::F32;  ///< dtype of `data` in memory
    DType stored = DType::F32;  ///< dtype written to the file

    template <Scalar T>
    TensorEntry(std::string name_, ConstView<T> v, std::optional<DType> as = std::nullopt)
        : name(std::move(name_)), shape(v.shape()), data(v.data()), source(dtype_of<T>), stored(as.value_or(dtype_of<T>)) {}
    template <Scalar T>
    TensorEntry(std::string name_, TensorView<T> v, std::optional<DType> as = std::nullopt) : TensorEntry(std::move(name_), ConstView<T>(v), as) {}
    template <Scalar T>
    TensorEntry(std::string name_, const Tensor<T>& t, std::optional<DType> as = std::nullopt) : TensorEntry(std::move(name_), t.cview(), as) {}
};

/// Host views of tensors about to be written: a host tensor's own memory, or a device tensor's
/// download, held here until the write is done (a deque never moves what it holds).
class HostCopies {
public:
    template <Scalar T, Backend B>
    ConstView<T> view_of(const Tensor<T, B>& t) {
        if constexpr (B::is_device) return std::get<std::deque<Tensor<T, cpu>>>(held_).emplace_back(to_host(t)).cview();
        else return t.cview();
    }

private:
    std::tuple<std::deque<Tensor<float, cpu>>, std::deque<Tensor<double, cpu>>> held_;
};

namespace detail {

template <class S, class D>
void write_converted(AtomicFile& out, const S* src, std::size_t n) {
    D chunk[4096];
    for (std::size_t i = 0; i < n; i += 4096) {
        const std::size_t m = std::min<std::size_t>(4096, n - i);
        for (std::size_t k = 0; k < m; ++k) chunk[k] = static_cast<D>(src[i + k]);
        out.write(chunk, m * sizeof(D));
    }
}

} // namespace detail

/// Writes `entries` (sorted by name in the file) and the optional metadata to `path`, atomically.
/// Every entry is validated before the file is created; on any failure the destination is left as
/// it was, no temporary file remains, and IoError names the file (and the entry).
inline void save_safetensors(const std::filesystem::path& path, const std::vector<TensorEntry>& entries,
                             const std::map<std::string, std::string>& metadata = {}) {
    const std::string file = path.string();
    std::vector<const TensorEntry*> sorted;
    for (const auto& e : entries) sorted.push_back(&e);
    std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->name < b->name; });
    for (std::size_t i = 0; i < sorted.size(); ++i) {
        const TensorEntry& e = *sorted[i];
        auto bad = [&](std::string_view what) { return IoError(fmt::format("{}: tensor '{}': {}", file, e.name, what)); };
        if (e.name.empty()) throw bad("empty tensor name");
        if (e.name == "__metadata__") throw bad("the name is reserved for the metadata");
        if (i > 0 && sorted[i - 1]->name == e.name) throw bad("name given twice");
        if (e.stored != DType::F32 && e.stored != DType::F64)
            throw bad(fmt::format("cannot store as {} (only F32 and F64 are written)", dtype_name(e.stored)));
        if (e.source != DType::F32 && e.source != DType::F64) throw bad("the source data must be float or double");
        if (!e.data && e.shape.numel() > 0) throw bad(fmt::format("no data for shape {}", e.shape));
    }

    // Field order as the reference writer: dtype, shape, data_offsets; metadata first.
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    if (!metadata.empty()) header["__metadata__"] = metadata;
    std::size_t offset = 0;
    for (const TensorEntry* e : sorted) {
        nlohmann::ordered_json shape = nlohmann::ordered_json::array();
        for (index_t d : e->shape) shape.push_back(d);
        const std::size_t bytes = static_cast<std::size_t>(e->shape.numel()) * dtype_size(e->stored);
        header[e->name] = {{"dtype", dtype_name(e->stored)}, {"shape", shape}, {"data_offsets", {offset, offset + bytes}}};
        offset += bytes;
    }
    std::string text;
    try {
        text = header.dump();
    } catch (const nlohmann::json::exception& e) {
        throw IoError(fmt::format("{}: cannot encode the header (names and metadata must be UTF-8): {}", file, e.what()));
    }
    text.append((8 - text.size() % 8) % 8, ' ');  // data starts 8-byte aligned, as the reference writer pads
    if (text.size() > SafetensorsFile::max_header_bytes)
        throw IoError(fmt::format("{}: header of {} bytes exceeds the 100 MB limit", file, text.size()));

    detail::AtomicFile out(path);
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(static_cast<std::uint64_t>(text.size()) >> (8 * i));
    out.write(len, 8);
    out.write(text.data(), text.size());
    for (const TensorEntry* e : sorted) {
        const auto n = static_cast<std::size_t>(e->shape.numel());
        if (e->source == e->stored) out.write(e->data, n * dtype_size(e->stored));
        else if (e->source == DType::F64) detail::write_converted<double, float>(out, static_cast<const double*>(e->data), n);
        else detail::write_converted<float, double>(out, static_cast<const float*>(e->data), n);
    }
    out.commit();
}

} // namespace celltx::io
