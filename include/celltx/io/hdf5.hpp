#pragma once
// A thin RAII layer over the HDF5 C library, for the AnnData (.h5ad) and 10x (.h5) readers and
// writers (io/h5ad.hpp). What it adds to the C API:
//  - every handle closes itself (h5::Handle), so no error path leaks one;
//  - HDF5's own error stack printing is silenced while celltx calls into the library
//    (h5::QuietErrors, restored afterwards), and every failure becomes a celltx::IoError that names
//    the file and the object path ("data.h5ad: /obs/perturbation/codes: ...");
//  - numeric data are read into any arithmetic type with HDF5's own conversions (integer counts
//    into float, float64 into float32), h5py's boolean enum included; strings are read whether
//    stored variable-length (h5py's `object` dtype) or fixed-length, and written variable-length
//    UTF-8 as h5py writes them.
#include <hdf5.h>
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>
#include <fmt/format.h>
#include "celltx/core/error.hpp"
#include "celltx/core/shape.hpp"

namespace celltx::io::h5 {

/// Turns HDF5's automatic error printing off for its lifetime (celltx reports errors itself).
class QuietErrors {
public:
    QuietErrors() {
        H5Eget_auto2(H5E_DEFAULT, &func_, &data_);
        H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    }
    ~QuietErrors() { H5Eset_auto2(H5E_DEFAULT, func_, data_); }
    QuietErrors(const QuietErrors&) = delete;
    QuietErrors& operator=(const QuietErrors&) = delete;

private:
    H5E_auto2_t func_ = nullptr;
    void* data_ = nullptr;
};

/// An owned hid_t, closed with the function that matches its kind.
class Handle {
public:
    Handle() = default;
    explicit Handle(hid_t id) : id_(id) {}
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;
    Handle(Handle&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)) {}
    Handle& operator=(Handle&& o) noexcept {
        if (this != &o) {
            reset();
            id_ = std::exchange(o.id_, H5I_INVALID_HID);
        }
        return *this;
    }
    ~Handle() { reset(); }

    hid_t get() const noexcept { return id_; }
    bool valid() const noexcept { return id_ >= 0; }
    void reset() noexcept {
        if (id_ >= 0) {
            QuietErrors quiet;
            switch (H5Iget_type(id_)) {
                case H5I_FILE: H5Fclose(id_); break;
                case H5I_GROUP: H5Gclose(id_); break;
                case H5I_DATASET: H5Dclose(id_); break;
                case H5I_ATTR: H5Aclose(id_); break;
                case H5I_DATATYPE: H5Tclose(id_); break;
                case H5I_DATASPACE: H5Sclose(id_); break;
                case H5I_GENPROP_LST: H5Pclose(id_); break;
                default: H5Idec_ref(id_); break;
            }
        }
        id_ = H5I_INVALID_HID;
    }

private:
    hid_t id_ = H5I_INVALID_HID;
};

/// The element types h5ad files hold: what a dataset or attribute stores.
enum class Dtype { f32, f64, i8, i16, i32, i64, u8, u16, u32, u64, boolean, string, other };

inline const char* dtype_name(Dtype d) {
    switch (d) {
        case Dtype::f32: return "float32"; case Dtype::f64: return "float64";
        case Dtype::i8: return "int8"; case Dtype::i16: return "int16"; case Dtype::i32: return "int32"; case Dtype::i64: return "int64";
        case Dtype::u8: return "uint8"; case Dtype::u16: return "uint16"; case Dtype::u32: return "uint32"; case Dtype::u64: return "uint64";
        case Dtype::boolean: return "bool"; case Dtype::string: return "string"; case Dtype::other: return "unsupported";
    }
    return "?";
}
inline bool is_numeric(Dtype d) { return d != Dtype::string && d != Dtype::other; }
inline bool is_integer(Dtype d) {
    return d == Dtype::i8 || d == Dtype::i16 || d == Dtype::i32 || d == Dtype::i64 || d == Dtype::u8 || d == Dtype::u16 ||
           d == Dtype::u32 || d == Dtype::u64;
}

/// The HDF5 memory type of a C++ arithmetic type.
template <class T>
hid_t native_type() {
    if constexpr (std::is_same_v<T, float>) return H5T_NATIVE_FLOAT;
    else if constexpr (std::is_same_v<T, double>) return H5T_NATIVE_DOUBLE;
    else if constexpr (std::is_same_v<T, std::int8_t>) return H5T_NATIVE_INT8;
    else if constexpr (std::is_same_v<T, std::int16_t>) return H5T_NATIVE_INT16;
    else if constexpr (std::is_same_v<T, std::int32_t>) return H5T_NATIVE_INT32;
    else if constexpr (std::is_same_v<T, std::int64_t>) return H5T_NATIVE_INT64;
    else if constexpr (std::is_same_v<T, std::uint8_t>) return H5T_NATIVE_UINT8;
    else if constexpr (std::is_same_v<T, std::uint16_t>) return H5T_NATIVE_UINT16;
    else if constexpr (std::is_same_v<T, std::uint32_t>) return H5T_NATIVE_UINT32;
    else if constexpr (std::is_same_v<T, std::uint64_t>) return H5T_NATIVE_UINT64;
    else static_assert(sizeof(T) == 0, "h5::native_type: unsupported element type");
}

/// The file type celltx writes for a C++ arithmetic type (little-endian, as h5py on x86).
template <class T>
hid_t file_type() {
    if constexpr (std::is_same_v<T, float>) return H5T_IEEE_F32LE;
    else if constexpr (std::is_same_v<T, double>) return H5T_IEEE_F64LE;
    else if constexpr (std::is_same_v<T, std::int8_t>) return H5T_STD_I8LE;
    else if constexpr (std::is_same_v<T, std::int16_t>) return H5T_STD_I16LE;
    else if constexpr (std::is_same_v<T, std::int32_t>) return H5T_STD_I32LE;
    else if constexpr (std::is_same_v<T, std::int64_t>) return H5T_STD_I64LE;
    else if constexpr (std::is_same_v<T, std::uint8_t>) return H5T_STD_U8LE;
    else if constexpr (std::is_same_v<T, std::uint16_t>) return H5T_STD_U16LE;
    else if constexpr (std::is_same_v<T, std::uint32_t>) return H5T_STD_U32LE;
    else if constexpr (std::is_same_v<T, std::uint64_t>) return H5T_STD_U64LE;
    else static_assert(sizeof(T) == 0, "h5::file_type: unsupported element type");
}

namespace detail {

inline Dtype classify(hid_t type) {
    switch (H5Tget_class(type)) {
        case H5T_FLOAT: return H5Tget_size(type) == 4 ? Dtype::f32 : H5Tget_size(type) == 8 ? Dtype::f64 : Dtype::other;
        case H5T_INTEGER: {
            const bool sign = H5Tget_sign(type) == H5T_SGN_2;
            switch (H5Tget_size(type)) {
                case 1: return sign ? Dtype::i8 : Dtype::u8;
                case 2: return sign ? Dtype::i16 : Dtype::u16;
                case 4: return sign ? Dtype::i32 : Dtype::u32;
                case 8: return sign ? Dtype::i64 : Dtype::u64;
                default: return Dtype::other;
            }
        }
        case H5T_ENUM: {  // h5py's bool: an int8 enum {FALSE = 0, TRUE = 1}
            if (H5Tget_nmembers(type) != 2) return Dtype::other;
            char* n0 = H5Tget_member_name(type, 0);
            char* n1 = H5Tget_member_name(type, 1);
            const bool ok = n0 && n1 && std::string_view(n0) == "FALSE" && std::string_view(n1) == "TRUE";
            H5free_memory(n0);
            H5free_memory(n1);
            return ok ? Dtype::boolean : Dtype::other;
        }
        case H5T_STRING: return Dtype::string;
        default: return Dtype::other;
    }
}

/// h5py's boolean type: enum (int8) {FALSE = 0, TRUE = 1}.
inline Handle bool_type() {
    Handle t(H5Tenum_create(H5T_NATIVE_INT8));
    const std::int8_t f = 0, tr = 1;
    H5Tenum_insert(t.get(), "FALSE", &f);
    H5Tenum_insert(t.get(), "TRUE", &tr);
    return t;
}

/// Variable-length UTF-8 strings, as h5py writes `str` and object arrays.
inline Handle vlen_string_type() {
    Handle t(H5Tcopy(H5T_C_S1));
    H5Tset_size(t.get(), H5T_VARIABLE);
    H5Tset_cset(t.get(), H5T_CSET_UTF8);
    return t;
}

inline void reclaim_vlen(hid_t type, hid_t space, void* buf) {
#if H5_VERSION_GE(1, 12, 0)
    H5Treclaim(type, space, H5P_DEFAULT, buf);
#else
    H5Dvlen_reclaim(type, space, H5P_DEFAULT, buf);
#endif
}

/// An HDF5 variable-length memory allocator that refuses blocks larger than a limit (the file's size).
struct VlenLimit {
    hsize_t max_bytes;
    static void* allocate(std::size_t size, void* info) {
        const auto* self = static_cast<const VlenLimit*>(info);
        if (size > self->max_bytes + 1) return nullptr;  // + 1: the string's terminating NUL
        return std::malloc(size);
    }
    static void release(void* p, void*) { std::free(p); }
};

inline std::string join_path(const std::string& parent, std::string_view name) {
    if (parent.empty() || parent == "/") return "/" + std::string(name);
    return parent + "/" + std::string(name);
}

} // namespace detail

/// A group, dataset, attribute owner or file, with its file name and path for error messages.
class Object {
public:
    Object() = default;
    Object(Handle h, std::string file, std::string path) : h_(std::move(h)), file_(std::move(file)), path_(std::move(path)) {}

    hid_t id() const noexcept { return h_.get(); }
    const std::string& file() const noexcept { return file_; }
    const std::string& path() const noexcept { return path_; }
    /// "file: /path" — the prefix of every error about this object.
    std::string where() const { return fmt::format("{}: {}", file_, path_.empty() ? "/" : path_); }
    std::string where(std::string_view child) const { return fmt::format("{}: {}", file_, detail::join_path(path_, child)); }
    [[noreturn]] void fail(const std::string& what) const { throw IoError(fmt::format("{}: {}", where(), what)); }

    // ---- navigation
    /// Whether a direct child link `name` exists.
    bool has(std::string_view name) const {
        QuietErrors quiet;
        const std::string n(name);
        return H5Lexists(id(), n.c_str(), H5P_DEFAULT) > 0;
    }
    bool is_group(std::string_view name) const { return child_type(name) == H5I_GROUP; }
    bool is_dataset(std::string_view name) const { return child_type(name) == H5I_DATASET; }
    Object group(std::string_view name) const {
        QuietErrors quiet;
        if (!has(name)) throw IoError(fmt::format("{}: no such group", where(name)));
        const std::string n(name);
        Handle h(H5Gopen2(id(), n.c_str(), H5P_DEFAULT));
        if (!h.valid()) throw IoError(fmt::format("{}: is not a group", where(name)));
        return {std::move(h), file_, detail::join_path(path_, name)};
    }
    Object dataset(std::string_view name) const {
        QuietErrors quiet;
        if (!has(name)) throw IoError(fmt::format("{}: no such dataset", where(name)));
        const std::string n(name);
        Handle h(H5Dopen2(id(), n.c_str(), H5P_DEFAULT));
        if (!h.valid()) throw IoError(fmt::format("{}: is not a dataset", where(name)));
        return {std::move(h), file_, detail::join_path(path_, name)};
    }
    /// The names of the direct children, in HDF5's name order.
    std::vector<std::string> children() const {
        QuietErrors quiet;
        std::vector<std::string> out;
        auto cb = [](hid_t, const char* name, const H5L_info_t*, void* op) -> herr_t {
            static_cast<std::vector<std::string>*>(op)->emplace_back(name);
            return 0;
        };
        hsize_t idx = 0;
        if (H5Literate(id(), H5_INDEX_NAME, H5_ITER_INC, &idx, cb, &out) < 0) fail("cannot list its members");
        return out;
    }

    // ---- attributes
    bool has_attr(std::string_view name) const {
        QuietErrors quiet;
        const std::string n(name);
        return H5Aexists(id(), n.c_str()) > 0;
    }
    /// A string attribute (scalar, or a one-element array), variable- or fixed-length.
    std::string attr_string(std::string_view name) const {
        std::vector<std::string> v = attr_strings(name);
        if (v.size() != 1) fail(fmt::format("attribute '{}' holds {} strings, expected one", name, v.size()));
        return std::move(v[0]);
    }
    std::string attr_string_or(std::string_view name, std::string fallback) const {
        return has_attr(name) ? attr_string(name) : fallback;
    }
    std::vector<std::string> attr_strings(std::string_view name) const {
        QuietErrors quiet;
        Handle a = open_attr(name);
        Handle type(H5Aget_type(a.get())), space(H5Aget_space(a.get()));
        if (H5Tget_class(type.get()) == H5T_STRING) (void)checked_attr_count(name, type.get(), space.get());
        const std::string what = fmt::format("attribute '{}'", name);
        return read_strings_impl(type.get(), space.get(), what, [&](hid_t mem, void* buf) { return H5Aread(a.get(), mem, buf); });
    }
    /// A numeric attribute (any integer, float or bool type) as doubles.
    std::vector<double> attr_numbers(std::string_view name) const {
        QuietErrors quiet;
        Handle a = open_attr(name);
        Handle type(H5Aget_type(a.get())), space(H5Aget_space(a.get()));
        const Dtype d = detail::classify(type.get());
        if (!is_numeric(d)) fail(fmt::format("attribute '{}' is of type {}, expected a number", name, dtype_name(d)));
        std::vector<double> out(checked_attr_count(name, type.get(), space.get()));
        if (d == Dtype::boolean) {
            std::vector<std::int8_t> raw(out.size());
            Handle mem(H5Tget_native_type(type.get(), H5T_DIR_ASCEND));
            if (!raw.empty() && H5Aread(a.get(), mem.get(), raw.data()) < 0) fail(fmt::format("cannot read attribute '{}'", name));
            std::copy(raw.begin(), raw.end(), out.begin());
        } else if (!out.empty() && H5Aread(a.get(), H5T_NATIVE_DOUBLE, out.data()) < 0) {
            fail(fmt::format("cannot read attribute '{}'", name));
        }
        return out;
    }
    /// The object an HDF5 object-reference attribute points to (anndata 0.7's categorical codes
    /// carry one to obs/__categories/<column>).
    std::optional<Object> attr_object_ref(std::string_view name) const {
        QuietErrors quiet;
        if (!has_attr(name)) return std::nullopt;
        Handle a = open_attr(name);
        Handle type(H5Aget_type(a.get()));
        if (H5Tget_class(type.get()) != H5T_REFERENCE) return std::nullopt;
        hobj_ref_t ref{};
        if (H5Aread(a.get(), H5T_STD_REF_OBJ, &ref) < 0) return std::nullopt;
        Handle obj(H5Rdereference2(id(), H5P_DEFAULT, H5R_OBJECT, &ref));
        if (!obj.valid()) return std::nullopt;
        std::string target = "?";
        const ssize_t len = H5Iget_name(obj.get(), nullptr, 0);
        if (len > 0) {
            target.assign(static_cast<std::size_t>(len) + 1, '\0');
            H5Iget_name(obj.get(), target.data(), target.size());
            target.resize(static_cast<std::size_t>(len));
        }
        return Object(std::move(obj), file_, target);
    }

    void write_attr(std::string_view name, std::string_view value) const {
        QuietErrors quiet;
        Handle type = detail::vlen_string_type();
        Handle space(H5Screate(H5S_SCALAR));
        Handle a = create_attr(name, type.get(), space.get());
        const std::string v(value);
        const char* p = v.c_str();
        if (H5Awrite(a.get(), type.get(), &p) < 0) fail(fmt::format("cannot write attribute '{}'", name));
    }
    void write_attr(std::string_view name, const std::vector<std::string>& values) const {
        QuietErrors quiet;
        Handle type = detail::vlen_string_type();
        const hsize_t n = values.size();
        Handle space(H5Screate_simple(1, &n, nullptr));
        Handle a = create_attr(name, type.get(), space.get());
        std::vector<const char*> ptrs;
        for (const auto& s : values) ptrs.push_back(s.c_str());
        if (n > 0 && H5Awrite(a.get(), type.get(), ptrs.data()) < 0) fail(fmt::format("cannot write attribute '{}'", name));
    }
    void write_attr_bool(std::string_view name, bool value) const {
        QuietErrors quiet;
        Handle type = detail::bool_type();
        Handle space(H5Screate(H5S_SCALAR));
        Handle a = create_attr(name, type.get(), space.get());
        const std::int8_t v = value ? 1 : 0;
        if (H5Awrite(a.get(), type.get(), &v) < 0) fail(fmt::format("cannot write attribute '{}'", name));
    }
    template <class T>
    void write_attr_array(std::string_view name, const std::vector<T>& values) const {
        QuietErrors quiet;
        const hsize_t n = values.size();
        Handle space(H5Screate_simple(1, &n, nullptr));
        Handle a = create_attr(name, file_type<T>(), space.get());
        if (n > 0 && H5Awrite(a.get(), native_type<T>(), values.data()) < 0) fail(fmt::format("cannot write attribute '{}'", name));
    }
    /// An object-reference attribute to `target` (a path in the same file).
    void write_attr_object_ref(std::string_view name, const std::string& target) const {
        QuietErrors quiet;
        hobj_ref_t ref{};
        if (H5Rcreate(&ref, id(), target.c_str(), H5R_OBJECT, -1) < 0) fail(fmt::format("cannot reference '{}'", target));
        Handle space(H5Screate(H5S_SCALAR));
        Handle a = create_attr(name, H5T_STD_REF_OBJ, space.get());
        if (H5Awrite(a.get(), H5T_STD_REF_OBJ, &ref) < 0) fail(fmt::format("cannot write attribute '{}'", name));
    }

    // ---- datasets (this object is a dataset)
    std::vector<index_t> dims() const {
        QuietErrors quiet;
        Handle space(H5Dget_space(id()));
        const int rank = H5Sget_simple_extent_ndims(space.get());
        if (rank < 0) fail("cannot read its dataspace");
        std::vector<hsize_t> d(static_cast<std::size_t>(rank));
        if (rank > 0 && H5Sget_simple_extent_dims(space.get(), d.data(), nullptr) < 0) fail("cannot read its dataspace");
        for (hsize_t x : d)
            if (x > max_extent) fail(fmt::format("an extent of {} elements is larger than any file celltx reads (at most 2^48)", x));
        return {d.begin(), d.end()};
    }
    /// The number of elements (every extent is at most 2^48, so the product is checked against 2^60).
    index_t size() const {
        index_t n = 1;
        for (index_t d : dims()) {
            if (d != 0 && n > max_elements / d) fail(fmt::format("its extents multiply past 2^60 elements"));
            n *= d;
        }
        return n;
    }
    Dtype dtype() const {
        QuietErrors quiet;
        Handle type(H5Dget_type(id()));
        return detail::classify(type.get());
    }
    /// The whole dataset, converted element-wise to T (integers to floats, float64 to float32, bool to 0/1).
    template <class T>
    std::vector<T> read() const {
        QuietErrors quiet;
        Handle type(H5Dget_type(id()));
        const Dtype d = detail::classify(type.get());
        if (!is_numeric(d)) fail(fmt::format("holds {} data, expected numbers", dtype_name(d)));
        std::vector<T> out(checked_element_count(type.get()));
        if (out.empty()) return out;
        if (d == Dtype::boolean) {  // HDF5 does not convert enums to integers: read the raw int8 values
            std::vector<std::int8_t> raw(out.size());
            Handle mem(H5Tget_native_type(type.get(), H5T_DIR_ASCEND));
            if (H5Dread(id(), mem.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, raw.data()) < 0) fail("cannot read its values");
            std::transform(raw.begin(), raw.end(), out.begin(), [](std::int8_t v) { return static_cast<T>(v != 0); });
            return out;
        }
        if (H5Dread(id(), native_type<T>(), H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) < 0)
            fail(fmt::format("cannot convert its {} values", dtype_name(d)));
        return out;
    }
    /// A string dataset (variable- or fixed-length), one entry per element.
    std::vector<std::string> read_strings() const {
        QuietErrors quiet;
        Handle type(H5Dget_type(id())), space(H5Dget_space(id()));
        if (H5Tget_class(type.get()) == H5T_STRING) {
            const std::size_t n = checked_element_count(type.get());
            if (H5Tis_variable_str(type.get()) > 0) check_vlen_lengths(n, file_bytes());
        }
        // Variable-length strings: HDF5 allocates each one at the length its descriptor claims
        // before reading it from the file; an allocator that refuses more than the file's size
        // turns a corrupt length into an error instead of gigabytes of garbage.
        detail::VlenLimit limit{file_bytes()};
        Handle dxpl(H5Pcreate(H5P_DATASET_XFER));
        H5Pset_vlen_mem_manager(dxpl.get(), &detail::VlenLimit::allocate, &limit, &detail::VlenLimit::release, nullptr);
        return read_strings_impl(type.get(), space.get(), "the dataset",
                                 [&](hid_t mem, void* buf) { return H5Dread(id(), mem, H5S_ALL, H5S_ALL, dxpl.get(), buf); });
    }

    // ---- writing (this object is a group or file)
    Object create_group(std::string_view name) const {
        QuietErrors quiet;
        const std::string n(name);
        Handle h(H5Gcreate2(id(), n.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
        if (!h.valid()) throw IoError(fmt::format("{}: cannot create the group", where(name)));
        return {std::move(h), file_, detail::join_path(path_, name)};
    }
    /// A numeric dataset of the given dims from row-major values (gzip when compression > 0).
    template <class T>
    Object write_dataset(std::string_view name, const std::vector<index_t>& dims, const T* values, int compression = 0) const {
        QuietErrors quiet;
        return write_raw(name, dims, file_type<T>(), native_type<T>(), values, compression);
    }
    template <class T>
    Object write_dataset(std::string_view name, const std::vector<T>& values, int compression = 0) const {
        return write_dataset<T>(name, {static_cast<index_t>(values.size())}, values.data(), compression);
    }
    Object write_bool_dataset(std::string_view name, const std::vector<std::int8_t>& values, int compression = 0) const {
        QuietErrors quiet;
        Handle type = detail::bool_type();
        return write_raw(name, {static_cast<index_t>(values.size())}, type.get(), type.get(), values.data(), compression);
    }
    Object write_strings(std::string_view name, const std::vector<std::string>& values, int compression = 0) const {
        QuietErrors quiet;
        Handle type = detail::vlen_string_type();
        std::vector<const char*> ptrs;
        for (const auto& s : values) ptrs.push_back(s.c_str());
        return write_raw(name, {static_cast<index_t>(values.size())}, type.get(), type.get(), ptrs.data(), compression);
    }
    /// A scalar variable-length string dataset (anndata's `string` encoding).
    Object write_string_scalar(std::string_view name, const std::string& value) const {
        QuietErrors quiet;
        Handle type = detail::vlen_string_type();
        Handle space(H5Screate(H5S_SCALAR));
        const std::string n(name);
        Handle d(H5Dcreate2(id(), n.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
        if (!d.valid()) throw IoError(fmt::format("{}: cannot create the dataset", where(name)));
        const char* p = value.c_str();
        if (H5Dwrite(d.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, &p) < 0)
            throw IoError(fmt::format("{}: cannot write the dataset", where(name)));
        return {std::move(d), file_, detail::join_path(path_, name)};
    }

private:
    static constexpr hsize_t max_extent = hsize_t(1) << 48;
    static constexpr index_t max_elements = index_t(1) << 60;

    /// The size of the file this object is in (bounds what any of its elements can hold).
    hsize_t file_bytes() const {
        Handle f(H5Iget_file_id(id()));
        hsize_t n = 0;
        if (!f.valid() || H5Fget_filesize(f.get(), &n) < 0) fail("cannot query the size of its file");
        return n;
    }

    /// The element count of this dataset, refused when the data it declares (elements × the stored
    /// element size) cannot come from the file: more than its allocated storage, or than 1100× that
    /// when filters (gzip: at most about 1030:1) are applied, beyond 16 MiB of slack for fill values.
    /// Checked before anything is allocated: a corrupt extent is an error, not a bad_alloc.
    std::size_t checked_element_count(hid_t file_type) const {
        const index_t n = size();
        const std::size_t elem = H5Tget_size(file_type);
        if (elem == 0) fail("its element type has size 0");
        if (n > 0 && elem > static_cast<std::size_t>(max_elements / n)) fail(fmt::format("{} elements of {} bytes overflow", n, elem));
        const hsize_t bytes = static_cast<hsize_t>(n) * elem;
        const hsize_t storage = H5Dget_storage_size(id());
        Handle dcpl(H5Dget_create_plist(id()));
        const int filters = dcpl.valid() ? H5Pget_nfilters(dcpl.get()) : 0;
        const hsize_t ratio = filters > 0 ? 1100 : 1, slack = hsize_t(16) << 20;
        const hsize_t allowed = storage > (max_extent << 8) ? ~hsize_t(0) : storage * ratio + slack;
        if (bytes > allowed)
            fail(fmt::format("declares {} elements ({} bytes), but the file stores only {} bytes of it{}", n, bytes, storage,
                             filters > 0 ? " (compressed)" : ""));
        return static_cast<std::size_t>(n);
    }

    /// libhdf5 1.10 allocates and zeroes a buffer of the length a variable-length string's stored
    /// descriptor declares (up to 4 GiB) before it reads the string, so a corrupt length costs that
    /// much memory before any error. For contiguous datasets (what h5py and celltx write unless
    /// compressing) the descriptors (length, heap address, index) are read here first and each
    /// length is checked against the file's size. Chunked datasets and attributes are not checked.
    void check_vlen_lengths(std::size_t n, hsize_t file_size) const {
        Handle dcpl(H5Dget_create_plist(id()));
        if (n == 0 || !dcpl.valid() || H5Pget_layout(dcpl.get()) != H5D_CONTIGUOUS) return;
        const haddr_t offset = H5Dget_offset(id());
        Handle f(H5Iget_file_id(id()));
        Handle fcpl(f.valid() ? H5Fget_create_plist(f.get()) : H5I_INVALID_HID);
        std::size_t sizeof_addr = 0, sizeof_size = 0;
        if (offset == HADDR_UNDEF || !fcpl.valid() || H5Pget_sizes(fcpl.get(), &sizeof_addr, &sizeof_size) < 0) return;
        const std::size_t desc = 4 + sizeof_addr + 4;
        if (offset > file_size || n > (file_size - offset) / desc) return;  // HDF5's own read fails on it
        std::vector<unsigned char> raw(n * desc);
        std::FILE* fp = std::fopen(file_.c_str(), "rb");
        if (fp == nullptr) return;
        const bool ok = std::fseek(fp, static_cast<long>(offset), SEEK_SET) == 0 && std::fread(raw.data(), 1, raw.size(), fp) == raw.size();
        std::fclose(fp);
        if (!ok) return;
        for (std::size_t i = 0; i < n; ++i) {
            const unsigned char* d = raw.data() + i * desc;
            const std::uint32_t len = std::uint32_t(d[0]) | std::uint32_t(d[1]) << 8 | std::uint32_t(d[2]) << 16 | std::uint32_t(d[3]) << 24;
            if (len > file_size)
                fail(fmt::format("string {} declares a length of {} bytes, more than the whole file ({} bytes)", i, len, file_size));
        }
    }

    /// The element count of an attribute, at most 2^20 elements and 64 MiB (anndata's attributes
    /// are names and shapes; HDF5 keeps them in object headers of at most 64 KiB each).
    std::size_t checked_attr_count(std::string_view name, hid_t type, hid_t space) const {
        const hssize_t n = H5Sget_simple_extent_npoints(space);
        if (n < 0) fail(fmt::format("cannot read the dataspace of attribute '{}'", name));
        const std::size_t elem = H5Tget_size(type);
        if (n > (hssize_t(1) << 20) || (n > 0 && elem > (std::size_t(64) << 20) / static_cast<std::size_t>(n)))
            fail(fmt::format("attribute '{}' declares {} elements of {} bytes, more than an attribute celltx reads", name, n, elem));
        return static_cast<std::size_t>(n);
    }

    H5I_type_t child_type(std::string_view name) const {
        QuietErrors quiet;
        if (!has(name)) return H5I_BADID;
        const std::string n(name);
        Handle o(H5Oopen(id(), n.c_str(), H5P_DEFAULT));
        if (!o.valid()) return H5I_BADID;
        const H5I_type_t t = H5Iget_type(o.get());
        return t;
    }
    Handle open_attr(std::string_view name) const {
        const std::string n(name);
        if (H5Aexists(id(), n.c_str()) <= 0) fail(fmt::format("has no attribute '{}'", name));
        Handle a(H5Aopen(id(), n.c_str(), H5P_DEFAULT));
        if (!a.valid()) fail(fmt::format("cannot open attribute '{}'", name));
        return a;
    }
    Handle create_attr(std::string_view name, hid_t type, hid_t space) const {
        const std::string n(name);
        if (H5Aexists(id(), n.c_str()) > 0) H5Adelete(id(), n.c_str());
        Handle a(H5Acreate2(id(), n.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT));
        if (!a.valid()) fail(fmt::format("cannot create attribute '{}'", name));
        return a;
    }
    Object write_raw(std::string_view name, const std::vector<index_t>& dims, hid_t ftype, hid_t mtype, const void* values,
                     int compression) const {
        std::vector<hsize_t> d(dims.begin(), dims.end());
        hsize_t total = 1;
        for (hsize_t x : d) total *= x;
        Handle space(H5Screate_simple(static_cast<int>(d.size()), d.data(), nullptr));
        Handle dcpl(H5Pcreate(H5P_DATASET_CREATE));
        if (compression > 0 && total > 0) {
            // Chunks of about 64K elements along the first axis (whole rows).
            std::vector<hsize_t> chunk = d;
            hsize_t row = 1;
            for (std::size_t i = 1; i < d.size(); ++i) row *= std::max<hsize_t>(d[i], 1);
            chunk[0] = std::clamp<hsize_t>(65536 / std::max<hsize_t>(row, 1), 1, std::max<hsize_t>(d[0], 1));
            H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data());
            H5Pset_deflate(dcpl.get(), static_cast<unsigned>(std::min(compression, 9)));
        }
        const std::string n(name);
        Handle ds(H5Dcreate2(id(), n.c_str(), ftype, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT));
        if (!ds.valid()) throw IoError(fmt::format("{}: cannot create the dataset", where(name)));
        if (total > 0 && H5Dwrite(ds.get(), mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, values) < 0)
            throw IoError(fmt::format("{}: cannot write the dataset", where(name)));
        return {std::move(ds), file_, detail::join_path(path_, name)};
    }
    template <class Read>
    std::vector<std::string> read_strings_impl(hid_t ftype, hid_t space, const std::string& what, Read&& read) const {
        if (H5Tget_class(ftype) != H5T_STRING)
            fail(fmt::format("{} is of type {}, expected strings", what, dtype_name(detail::classify(ftype))));
        const hssize_t npoints = H5Sget_simple_extent_npoints(space);
        const std::size_t n = static_cast<std::size_t>(std::max<hssize_t>(npoints, 0));
        std::vector<std::string> out;
        out.reserve(n);
        if (n == 0) return out;
        if (H5Tis_variable_str(ftype) > 0) {
            Handle mem(H5Tcopy(H5T_C_S1));
            H5Tset_size(mem.get(), H5T_VARIABLE);
            H5Tset_cset(mem.get(), H5Tget_cset(ftype));
            std::vector<char*> buf(n, nullptr);
            if (read(mem.get(), buf.data()) < 0) {
                for (char* p : buf) std::free(p);  // the strings read before the failure
                fail(fmt::format("cannot read {} as strings (a corrupt or oversized entry?)", what));
            }
            for (char* s : buf) out.emplace_back(s ? s : "");
            detail::reclaim_vlen(mem.get(), space, buf.data());
        } else {
            const std::size_t len = H5Tget_size(ftype);
            Handle mem(H5Tcopy(H5T_C_S1));
            H5Tset_size(mem.get(), len);
            H5Tset_strpad(mem.get(), H5Tget_strpad(ftype));
            H5Tset_cset(mem.get(), H5Tget_cset(ftype));
            std::vector<char> buf(n * len);
            if (read(mem.get(), buf.data()) < 0) fail(fmt::format("cannot read {} as strings", what));
            const bool space_pad = H5Tget_strpad(ftype) == H5T_STR_SPACEPAD;
            for (std::size_t i = 0; i < n; ++i) {
                std::string_view s(buf.data() + i * len, len);
                s = s.substr(0, std::min(s.find('\0'), s.size()));
                if (space_pad)
                    while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
                out.emplace_back(s);
            }
        }
        return out;
    }

    Handle h_;
    std::string file_, path_;
};

/// An open HDF5 file (its root group).
class File : public Object {
public:
    /// Opens for reading; a missing file or one that is not HDF5 gives an IoError naming it.
    static File open(const std::filesystem::path& path) {
        QuietErrors quiet;
        const std::string p = path.string();
        std::error_code ec;
        if (!std::filesystem::exists(path, ec)) throw IoError(fmt::format("{}: no such file", p));
        if (std::filesystem::is_directory(path, ec)) throw IoError(fmt::format("{}: is a directory, not an HDF5 file", p));
        const htri_t is = H5Fis_hdf5(p.c_str());
        if (is <= 0) throw IoError(fmt::format("{}: not an HDF5 file (no HDF5 signature; is it truncated or another format?)", p));
        Handle h(H5Fopen(p.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
        if (!h.valid()) throw IoError(fmt::format("{}: cannot open the HDF5 file (damaged, or locked by another writer?)", p));
        return File(std::move(h), p);
    }
    /// Creates (truncates) a file for writing.
    static File create(const std::filesystem::path& path) {
        QuietErrors quiet;
        const std::string p = path.string();
        Handle h(H5Fcreate(p.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT));
        if (!h.valid()) throw IoError(fmt::format("{}: cannot create the HDF5 file", p));
        return File(std::move(h), p);
    }
    /// Flushes and closes; errors are reported (the destructor closes silently).
    void close() {
        QuietErrors quiet;
        if (id() >= 0 && H5Fflush(id(), H5F_SCOPE_GLOBAL) < 0) throw IoError(fmt::format("{}: cannot flush the HDF5 file", file()));
        static_cast<Object&>(*this) = Object();
    }

private:
    File(Handle h, std::string path) : Object(std::move(h), std::move(path), "/") {}
};

} // namespace celltx::io::h5
