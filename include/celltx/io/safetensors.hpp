#pragma once
// safetensors (https://github.com/huggingface/safetensors) reading and writing.
// Layout: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}},
// then the data; offsets are relative to the end of the header.
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <string_view>
#include <vector>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include "celltx/core/error.hpp"
#include "celltx/core/tensor.hpp"

namespace celltx::io {

enum class DType { F32, F64, F16, BF16, I32, I64 };

inline std::size_t dtype_size(DType d) {
    switch (d) {
        case DType::F32: case DType::I32: return 4;
        case DType::F64: case DType::I64: return 8;
        case DType::F16: case DType::BF16: return 2;
    }
    return 0;
}
inline const char* dtype_name(DType d) {
    switch (d) {
        case DType::F32: return "F32"; case DType::F64: return "F64"; case DType::F16: return "F16";
        case DType::BF16: return "BF16"; case DType::I32: return "I32"; case DType::I64: return "I64";
    }
    return "?";
}

struct TensorInfo {
    std::string name;
    DType dtype;
    Shape shape;
    std::size_t begin = 0, end = 0;  ///< byte offsets into the data section
};

/// A safetensors file read into memory and validated.
class SafetensorsFile {
public:
    explicit SafetensorsFile(const std::filesystem::path& path) : path_(path.string()) {
        std::ifstream in(path, std::ios::binary);
        if (!in) throw IoError(fmt::format("{}: cannot open safetensors file", path_));
        in.seekg(0, std::ios::end);
        const std::size_t size = static_cast<std::size_t>(in.tellg());
        in.seekg(0);
        if (size < 8) throw IoError(fmt::format("{}: file of {} bytes is too short for a safetensors header", path_, size));
        std::uint64_t n = 0;
        unsigned char len[8];
        in.read(reinterpret_cast<char*>(len), 8);
        for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
        if (n > 100'000'000ull) throw IoError(fmt::format("{}: header length {} exceeds the 100 MB limit", path_, n));
        if (8 + n > size) throw IoError(fmt::format("{}: header length {} runs past the end of the {}-byte file", path_, n, size));
        std::string header(n, '\0');
        in.read(header.data(), static_cast<std::streamsize>(n));
        data_.resize(size - 8 - n);
        in.read(reinterpret_cast<char*>(data_.data()), static_cast<std::streamsize>(data_.size()));
        if (!in) throw IoError(fmt::format("{}: read failed", path_));
        parse_header(header);
    }

    const std::string& path() const noexcept { return path_; }
    const std::vector<TensorInfo>& tensors() const noexcept { return infos_; }
    const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }
    bool contains(std::string_view name) const { return index_.count(std::string(name)) > 0; }
    const TensorInfo& info(std::string_view name) const {
        auto it = index_.find(std::string(name));
        if (it == index_.end()) throw IoError(fmt::format("{}: no tensor named '{}'", path_, name));
        return infos_[it->second];
    }

    /// The tensor `name`, converted to T.
    template <Scalar T>
    Tensor<T> load(std::string_view name) const {
        const TensorInfo& ti = info(name);
        Tensor<T> t = Tensor<T>::uninitialized(ti.shape);
        const unsigned char* src = data_.data() + ti.begin;
        const index_t n = ti.shape.numel();
        for (index_t i = 0; i < n; ++i) t[i] = static_cast<T>(read_scalar(ti.dtype, src + i * dtype_size(ti.dtype)));
        return t;
    }

    /// The raw bytes of tensor `name` (little-endian, its own dtype).
    const unsigned char* bytes(std::string_view name) const { return data_.data() + info(name).begin; }

    static double read_scalar(DType d, const unsigned char* p) {
        switch (d) {
            case DType::F32: { float v; std::memcpy(&v, p, 4); return v; }
            case DType::F64: { double v; std::memcpy(&v, p, 8); return v; }
            case DType::I32: { std::int32_t v; std::memcpy(&v, p, 4); return static_cast<double>(v); }
            case DType::I64: { std::int64_t v; std::memcpy(&v, p, 8); return static_cast<double>(v); }
            case DType::BF16: { std::uint32_t b = static_cast<std::uint32_t>(p[0] | (p[1] << 8)) << 16; float v; std::memcpy(&v, &b, 4); return v; }
            case DType::F16: return half_to_double(static_cast<std::uint16_t>(p[0] | (p[1] << 8)));
        }
        return 0.0;
    }
    static double half_to_double(std::uint16_t h) {
        const int sign = (h >> 15) & 1, exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
        double v;
        if (exp == 0) v = std::ldexp(static_cast<double>(frac), -24);
        else if (exp == 31) v = frac ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
        else v = std::ldexp(static_cast<double>(frac | 0x400), exp - 25);
        return sign ? -v : v;
    }

private:
    static bool parse_dtype(const std::string& s, DType& d) {
        static const std::map<std::string, DType> m{{"F32", DType::F32}, {"F64", DType::F64}, {"F16", DType::F16},
                                                    {"BF16", DType::BF16}, {"I32", DType::I32}, {"I64", DType::I64}};
        auto it = m.find(s);
        if (it == m.end()) return false;
        d = it->second;
        return true;
    }
    void parse_header(const std::string& header) {
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(header, nullptr, true, false, /*ignore_comments*/ false);
        } catch (const nlohmann::json::parse_error& e) {
            throw IoError(fmt::format("{}: header is not valid JSON: {}", path_, e.what()));
        }
        if (!j.is_object()) throw IoError(fmt::format("{}: header is not a JSON object", path_));
        for (auto it = j.begin(); it != j.end(); ++it) {
            const std::string& key = it.key();
            const auto& v = it.value();
            if (key == "__metadata__") {
                if (!v.is_object()) throw IoError(fmt::format("{}: __metadata__ is not an object", path_));
                for (auto m = v.begin(); m != v.end(); ++m) {
                    if (!m.value().is_string()) throw IoError(fmt::format("{}: __metadata__ value '{}' is not a string", path_, m.key()));
                    metadata_[m.key()] = m.value().get<std::string>();
                }
                continue;
            }
            auto fail = [&](std::string_view what) { throw IoError(fmt::format("{}: tensor '{}': {}", path_, key, what)); };
            if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
                fail("entry needs dtype, shape and data_offsets");
            TensorInfo ti;
            ti.name = key;
            if (!v["dtype"].is_string() || !parse_dtype(v["dtype"].get<std::string>(), ti.dtype))
                fail(fmt::format("unsupported dtype {}", v["dtype"].dump()));
            const auto& shp = v["shape"];
            if (!shp.is_array() || shp.size() > static_cast<std::size_t>(Shape::max_rank)) fail(fmt::format("shape {} is not an array of rank <= 4", shp.dump()));
            std::vector<index_t> dims;
            for (const auto& d : shp) {
                if (!d.is_number_unsigned()) fail(fmt::format("shape {} has a non-integer or negative extent", shp.dump()));
                dims.push_back(d.get<index_t>());
            }
            ti.shape = Shape::from_range(dims.begin(), dims.end());
            const auto& off = v["data_offsets"];
            if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
                fail("data_offsets must be two non-negative integers");
            ti.begin = off[0].get<std::size_t>();
            ti.end = off[1].get<std::size_t>();
            if (ti.end < ti.begin) fail(fmt::format("data_offsets [{}, {}] end before they begin", ti.begin, ti.end));
            if (ti.end > data_.size()) fail(fmt::format("data_offsets [{}, {}] run past the end of the {}-byte data section", ti.begin, ti.end, data_.size()));
            if (ti.end - ti.begin != static_cast<std::size_t>(ti.shape.numel()) * dtype_size(ti.dtype))
                fail(fmt::format("dtype {} and shape {} need {} bytes but data_offsets span {}", dtype_name(ti.dtype), ti.shape,
                                 ti.shape.numel() * dtype_size(ti.dtype), ti.end - ti.begin));
            if (index_.count(key)) fail("duplicate key");
            index_.emplace(key, infos_.size());
            infos_.push_back(std::move(ti));
        }
        // Offsets must tile the data section exactly: no gaps, no overlaps.
        std::vector<const TensorInfo*> sorted;
        for (const auto& t : infos_) sorted.push_back(&t);
        std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->begin < b->begin || (a->begin == b->begin && a->end < b->end); });
        std::size_t at = 0;
        for (const auto* t : sorted) {
            if (t->begin != at)
                throw IoError(fmt::format("{}: tensor '{}': data_offsets [{}, {}] are not contiguous (expected to start at {}: {})", path_,
                                          t->name, t->begin, t->end, at, t->begin < at ? "overlap" : "gap"));
            at = t->end;
        }
        if (at != data_.size())
            throw IoError(fmt::format("{}: the tensors cover {} bytes but the data section holds {}", path_, at, data_.size()));
    }

    std::string path_;
    std::vector<unsigned char> data_;
    std::vector<TensorInfo> infos_;
    std::map<std::string, std::size_t> index_;
    std::map<std::string, std::string> metadata_;
};

} // namespace celltx::io
