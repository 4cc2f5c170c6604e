#pragma once
// Tensor<T, Backend>: an owning, contiguous, row-major array of rank 0..4, and TensorView, its
// non-owning counterpart. Layers take views (so callers can pass slices) and return Tensors.
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <type_traits>
#include <vector>
#include "celltx/core/backend.hpp"
#include "celltx/core/error.hpp"
#include "celltx/core/shape.hpp"

namespace celltx {

/// Where a backend's memory comes from: allocate, deallocate, copy and zero within the backend, and
/// upload / download to and from host memory. The host specialisation lives here; the CUDA one in
/// include/celltx/backend/cuda/memory.hpp.
template <Backend B>
struct storage_traits;

/// What a Tensor may hold: the Scalar types of the layers, and index_t for index arrays that ops
/// read on the backend (row lists, offsets).
template <class T>
concept TensorElement = Scalar<T> || std::same_as<T, index_t>;

/// Live and peak bytes held by Tensors of one backend: how tests and benchmarks prove that no
/// T×T buffer was ever allocated.
struct MemoryStats {
    std::atomic<std::size_t> live{0};
    std::atomic<std::size_t> peak{0};
    void add(std::size_t bytes) noexcept {
        const std::size_t now = live.fetch_add(bytes) + bytes;
        std::size_t p = peak.load();
        while (now > p && !peak.compare_exchange_weak(p, now)) {}
    }
    void remove(std::size_t bytes) noexcept { live.fetch_sub(bytes); }
    /// Starts a new peak measurement from the current live bytes.
    void reset_peak() noexcept { peak.store(live.load()); }
};

template <Backend B>
inline MemoryStats& memory_stats() {
    static MemoryStats stats;
    return stats;
}

/// Host blocks of 1 MiB and more, kept for reuse when freed. The C library returns such blocks to
/// the kernel at once and maps fresh, zeroed pages for the next one, so a training step over 200 MB
/// activations spent as much time in page faults as in arithmetic. A freed block waits here and
/// goes to the next request of its size (up to 1/8 larger). The cache is emptied, oldest first,
/// before a fresh block would take the cached plus live bytes past 9/8 of the largest working set
/// so far (the live bytes' peak). The 1/8 of room matters: with no room, a step whose blocks
/// differ in size from moment to moment freed and re-mapped a few blocks every step (13,500 page
/// faults per State step). CELLTX_HOST_CACHE=0 turns it off, and so do the address sanitizer builds
/// (a reused block would hide a use after free).
class HostBlockCache {
public:
    static constexpr std::size_t min_block = std::size_t{1} << 20, granule = std::size_t{64} << 10;

    static HostBlockCache& instance() {
        static HostBlockCache* c = new HostBlockCache;  // never destroyed: Tensors in statics may outlive any static here
        return *c;
    }
    bool enabled() const noexcept { return enabled_; }
    static std::size_t round(std::size_t bytes) noexcept { return (bytes + granule - 1) / granule * granule; }

    /// A cached block for `bytes` (>= min_block), or null.
    void* take(std::size_t bytes) {
        const std::size_t want = round(bytes);
        std::lock_guard<std::mutex> lock(mu_);
        auto it = std::find_if(free_.begin(), free_.end(), [&](const Block& b) { return b.size >= want && b.size <= want + want / 8; });
        void* p = nullptr;
        if (it != free_.end()) {
            p = it->ptr;
            cached_ -= it->size;
            live_ += it->size;
            live_peak_ = std::max(live_peak_, live_);  // a reused block is working set too
            sizes_.push_back({p, it->size});
            free_.erase(it);
        }
        return p;
    }
    /// Records a fresh block of round(bytes), first freeing cached blocks that would take the
    /// footprint past 9/8 of the live bytes' peak.
    void* fresh(std::size_t bytes) {
        const std::size_t size = round(bytes);
        {
            std::lock_guard<std::mutex> lock(mu_);
            live_peak_ = std::max(live_peak_, live_ + size);
            while (!free_.empty() && live_ + cached_ + size > live_peak_ + live_peak_ / 8) {
                std::free(free_.front().ptr);
                cached_ -= free_.front().size;
                free_.erase(free_.begin());
            }
        }
        void* p = std::aligned_alloc(64, size);
        if (!p) {
            release();
            p = std::aligned_alloc(64, size);
            if (!p) return nullptr;
        }
        std::lock_guard<std::mutex> lock(mu_);
        live_ += size;
        live_peak_ = std::max(live_peak_, live_);
        sizes_.push_back({p, size});
        return p;
    }
    /// Takes back a block from take() or fresh().
    void give_back(void* p) {
        std::lock_guard<std::mutex> lock(mu_);
        auto it = std::find_if(sizes_.begin(), sizes_.end(), [&](const Block& b) { return b.ptr == p; });
        if (it == sizes_.end()) {  // not one of ours: cannot happen through storage_traits, but never guess
            std::free(p);
            return;
        }
        const std::size_t size = it->size;
        sizes_.erase(it);
        live_ -= size;
        free_.push_back({p, size});
        cached_ += size;
    }
    /// Frees every cached block.
    void release() {
        std::lock_guard<std::mutex> lock(mu_);
        for (const Block& b : free_) std::free(b.ptr);
        free_.clear();
        cached_ = 0;
    }
    std::size_t cached_bytes() {
        std::lock_guard<std::mutex> lock(mu_);
        return cached_;
    }
private:
    struct Block {
        void* ptr;
        std::size_t size;
    };
    HostBlockCache() {
#if defined(__SANITIZE_ADDRESS__)
        enabled_ = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
        enabled_ = false;
#endif
#endif
        if (const char* env = std::getenv("CELLTX_HOST_CACHE")) enabled_ = enabled_ && std::strcmp(env, "0") != 0;
    }
    bool enabled_ = true;
    std::mutex mu_;
    std::vector<Block> free_;   // oldest first
    std::vector<Block> sizes_;  // blocks in use and their sizes
    std::size_t live_ = 0, cached_ = 0, live_peak_ = 0;
};

/// Frees the host blocks kept for reuse (HostBlockCache), e.g. before measuring a process's memory.
inline void release_cached_host_memory() { HostBlockCache::instance().release(); }

template <>
struct storage_traits<cpu> {
    static constexpr std::size_t alignment = 64;  // one cache line, enough for AVX-512 loads
    static void* allocate(std::size_t bytes) {
        if (bytes == 0) return nullptr;
        void* p = nullptr;
        if (bytes >= HostBlockCache::min_block && HostBlockCache::instance().enabled()) {
            p = HostBlockCache::instance().take(bytes);
            if (!p) p = HostBlockCache::instance().fresh(bytes);
        } else {
            std::size_t rounded = (bytes + alignment - 1) / alignment * alignment;
            p = std::aligned_alloc(alignment, rounded);
        }
        if (!p) throw std::bad_alloc();
        memory_stats<cpu>().add(bytes);
        return p;
    }
    static void deallocate(void* p, std::size_t bytes) noexcept {
        if (!p) return;
        memory_stats<cpu>().remove(bytes);
        if (bytes >= HostBlockCache::min_block && HostBlockCache::instance().enabled()) {
            try {
                HostBlockCache::instance().give_back(p);
                return;
            } catch (...) {  // the bookkeeping could not grow: free the block instead
            }
        }
        std::free(p);
    }
    static void copy(void* dst, const void* src, std::size_t bytes) {
        if (bytes) std::memcpy(dst, src, bytes);
    }
    static void zero(void* dst, std::size_t bytes) {
        if (bytes) std::memset(dst, 0, bytes);
    }
    static void upload(void* dst, const void* host_src, std::size_t bytes) { copy(dst, host_src, bytes); }
    static void download(void* host_dst, const void* src, std::size_t bytes) { copy(host_dst, src, bytes); }
};

template <class T, Backend B = cpu>
class TensorView;
template <TensorElement T, Backend B>
class Tensor;

namespace detail {
inline index_t flat_index(const Shape& s, std::initializer_list<index_t> idx) {
    require(static_cast<int>(idx.size()) == s.rank(), "Tensor: {} indices given for a tensor of shape {}",
            idx.size(), s);
    index_t flat = 0;
    int axis = 0;
    for (index_t i : idx) {
        const index_t n = s[axis++];
        require(i >= 0 && i < n, "Tensor: index {} out of range on axis {} of shape {}", i, axis - 1, s);
        flat = flat * n + i;
    }
    return flat;
}
} // namespace detail

/// Non-owning view of contiguous row-major memory. `T` may be const-qualified.
template <class T, Backend B>
class TensorView {
public:
    using value_type = std::remove_const_t<T>;
    using backend = B;

    TensorView() = default;
    TensorView(T* data, Shape shape) : data_(data), shape_(shape) {}
    /// A view of mutable data converts to a view of const data.
    template <class U>
        requires(std::is_const_v<T> && std::same_as<std::remove_const_t<T>, U>)
    TensorView(const TensorView<U, B>& other) : data_(other.data()), shape_(other.shape()) {}

    T* data() const noexcept { return data_; }
    const Shape& shape() const noexcept { return shape_; }
    index_t numel() const noexcept { return shape_.numel(); }
    int rank() const noexcept { return shape_.rank(); }
    index_t size(int axis) const { return shape_[axis]; }
    bool empty() const noexcept { return numel() == 0; }

    /// The same memory under another shape with the same number of elements.
    TensorView reshaped(Shape s) const {
        require(s.numel() == numel(), "TensorView::reshaped: cannot view {} as {}", shape_, s);
        return {data_, s};
    }
    /// Sub-view of the leading axis: items [begin, begin+count).
    TensorView slice(index_t begin, index_t count) const {
        require(rank() >= 1 && begin >= 0 && count >= 0 && begin + count <= shape_[0],
                "TensorView::slice: [{}, {}) out of range for shape {}", begin, begin + count, shape_);
        const index_t inner = shape_[0] ? numel() / shape_[0] : 0;
        std::vector<index_t> dims(shape_.begin(), shape_.end());
        dims[0] = count;
        return {data_ + begin * inner, Shape::from_range(dims.begin(), dims.end())};
    }

    template <class... I>
    T& operator()(I... idx) const
        requires(!B::is_device)
    {
        return data_[detail::flat_index(shape_, {static_cast<index_t>(idx)...})];
    }
    T& operator[](index_t flat) const
        requires(!B::is_device)
    {
        return data_[flat];
    }

private:
    T* data_ = nullptr;
    Shape shape_{0};  // a default view is empty
};

template <class T, Backend B = cpu>
using ConstView = TensorView<const T, B>;

/// Owning, contiguous, row-major tensor. Copies are deep; moves are cheap.
template <TensorElement T, Backend B = cpu>
class Tensor {
    using traits = storage_traits<B>;

public:
    using value_type = T;
    using backend = B;

    /// An empty tensor of shape [0].
    Tensor() = default;
    /// Zero-initialised tensor of the given shape.
    explicit Tensor(Shape shape) : Tensor(shape, uninitialized_tag{}) { traits::zero(data_.get(), bytes()); }

    /// Tensor whose contents are unspecified: for outputs that are fully written next.
    static Tensor uninitialized(Shape shape) { return Tensor(shape, uninitialized_tag{}); }
    static Tensor zeros(Shape shape) { return Tensor(shape); }
    static Tensor full(Shape shape, T value)
        requires(!B::is_device)
    {
        Tensor t = uninitialized(shape);
        t.fill(value);
        return t;
    }
    /// Host tensor from values in row-major order.
    static Tensor from(Shape shape, const std::vector<T>& values)
        requires(!B::is_device)
    {
        require(static_cast<index_t>(values.size()) == shape.numel(),
                "Tensor::from: {} values given for shape {}", values.size(), shape);
        Tensor t = uninitialized(shape);
        std::copy(values.begin(), values.end(), t.data());
        return t;
    }
    /// Deep copy of a view.
    static Tensor copy_of(ConstView<T, B> v) {
        Tensor t = uninitialized(v.shape());
        traits::copy(t.data(), v.data(), t.bytes());
        return t;
    }

    Tensor(const Tensor& o) : Tensor(o.shape_, uninitialized_tag{}) { traits::copy(data(), o.data(), bytes()); }
    Tensor& operator=(const Tensor& o) {
        if (this != &o) {
            if (!(shape_ == o.shape_)) *this = Tensor(o.shape_, uninitialized_tag{});
            traits::copy(data(), o.data(), bytes());
        }
        return *this;
    }
    Tensor(Tensor&&) noexcept = default;
    Tensor& operator=(Tensor&&) noexcept = default;

    T* data() noexcept { return data_.get(); }
    const T* data() const noexcept { return data_.get(); }
    const Shape& shape() const noexcept { return shape_; }
    index_t numel() const noexcept { return shape_.numel(); }
    int rank() const noexcept { return shape_.rank(); }
    index_t size(int axis) const { return shape_[axis]; }
    bool empty() const noexcept { return numel() == 0; }
    std::size_t bytes() const noexcept { return static_cast<std::size_t>(numel()) * sizeof(T); }

    TensorView<T, B> view() noexcept { return {data(), shape_}; }
    ConstView<T, B> view() const noexcept { return {data(), shape_}; }
    ConstView<T, B> cview() const noexcept { return {data(), shape_}; }
    operator TensorView<T, B>() noexcept { return view(); }
    operator ConstView<T, B>() const noexcept { return cview(); }

    /// Changes the shape in place; the element count must not change.
    Tensor& reshape(Shape s) {
        require(s.numel() == numel(), "Tensor::reshape: cannot reshape {} to {}", shape_, s);
        shape_ = s;
        return *this;
    }
    TensorView<T, B> reshaped(Shape s) { return view().reshaped(s); }
    ConstView<T, B> reshaped(Shape s) const { return cview().reshaped(s); }

    void zero() { traits::zero(data(), bytes()); }
    void fill(T value)
        requires(!B::is_device)
    {
        std::fill_n(data(), numel(), value);
    }

    template <class... I>
    T& operator()(I... idx)
        requires(!B::is_device)
    {
        return data()[detail::flat_index(shape_, {static_cast<index_t>(idx)...})];
    }
    template <class... I>
    const T& operator()(I... idx) const
        requires(!B::is_device)
    {
        return data()[detail::flat_index(shape_, {static_cast<index_t>(idx)...})];
    }
    T& operator[](index_t flat) requires(!B::is_device) { return data()[flat]; }
    const T& operator[](index_t flat) const requires(!B::is_device) { return data()[flat]; }

    /// Element-wise conversion to another scalar type on the host (float <-> double).
    template <Scalar U>
    Tensor<U, B> cast() const
        requires(!B::is_device)
    {
        Tensor<U, B> out = Tensor<U, B>::uninitialized(shape_);
        std::transform(data(), data() + numel(), out.data(), [](T v) { return static_cast<U>(v); });
        return out;
    }

    /// A copy in backend D's memory (host <-> device uploads and downloads; a plain copy otherwise).
    template <Backend D>
    Tensor<T, D> to() const;

private:
    struct uninitialized_tag {};
    struct deleter {
        std::size_t bytes = 0;
        void operator()(T* p) const noexcept { traits::deallocate(p, bytes); }
    };
    Tensor(Shape shape, uninitialized_tag)
        : shape_(shape),
          data_(static_cast<T*>(traits::allocate(static_cast<std::size_t>(shape.numel()) * sizeof(T))),
                deleter{static_cast<std::size_t>(shape.numel()) * sizeof(T)}) {}

    Shape shape_{0};  // a default tensor is empty (not a rank-0 scalar, which would need storage)
    std::unique_ptr<T, deleter> data_;
};

/// Copies `src` into `dst`; shapes must hold the same number of elements.
template <class T, Backend B>
void copy(ConstView<T, B> src, TensorView<T, B> dst) {
    require(src.numel() == dst.numel(), "copy: {} elements into {}", src.shape(), dst.shape());
    storage_traits<B>::copy(dst.data(), src.data(), static_cast<std::size_t>(src.numel()) * sizeof(T));
}

// Host staging. Code above the backend reads or writes a handful of values on the host (a loss
// value, per-set scalars, index lists) through these, so that it never dereferences backend memory.

/// `src` (any backend) copied into host memory.
template <class T, Backend B>
Tensor<std::remove_const_t<T>, cpu> to_host(TensorView<T, B> src) {
    using U = std::remove_const_t<T>;
    auto h = Tensor<U, cpu>::uninitialized(src.shape());
    storage_traits<B>::download(h.data(), src.data(), h.bytes());
    return h;
}
template <TensorElement T, Backend B>
Tensor<T, cpu> to_host(const Tensor<T, B>& src) {
    return to_host(src.cview());
}

/// Host values copied into backend memory of the given shape.
template <TensorElement T, Backend B>
Tensor<T, B> from_host(const T* values, Shape shape) {
    auto t = Tensor<T, B>::uninitialized(shape);
    storage_traits<B>::upload(t.data(), values, t.bytes());
    return t;
}
template <TensorElement T, Backend B>
Tensor<T, B> from_host(const std::vector<T>& values) {
    return from_host<T, B>(values.data(), Shape{static_cast<index_t>(values.size())});
}

/// dst (backend memory) = the host values `src` (same number of elements).
template <class T, Backend B>
void upload(const T* src, TensorView<T, B> dst) {
    storage_traits<B>::upload(dst.data(), src, static_cast<std::size_t>(dst.numel()) * sizeof(T));
}

/// One value of backend memory, read on the host.
template <class T, Backend B>
std::remove_const_t<T> read_value(TensorView<T, B> src, index_t flat = 0) {
    require(flat >= 0 && flat < src.numel(), "read_value: index {} out of range for shape {}", flat, src.shape());
    std::remove_const_t<T> v{};
    storage_traits<B>::download(&v, src.data() + flat, sizeof(T));
    return v;
}

template <TensorElement T, Backend B>
template <Backend D>
Tensor<T, D> Tensor<T, B>::to() const {
    auto out = Tensor<T, D>::uninitialized(shape_);
    if constexpr (std::same_as<B, D>) {
        storage_traits<B>::copy(out.data(), data(), bytes());
    } else if constexpr (!B::is_device) {
        storage_traits<D>::upload(out.data(), data(), bytes());
    } else if constexpr (!D::is_device) {
        storage_traits<B>::download(out.data(), data(), bytes());
    } else {  // device to another device: through the host
        const Tensor<T, cpu> h = to_host(cview());
        storage_traits<D>::upload(out.data(), h.data(), bytes());
    }
    return out;
}

} // namespace celltx
