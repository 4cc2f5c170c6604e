#pragma once
// IndexSets: a list of sets of indices as one ragged array (CSR, PyG pointer style): set s is
// indices[offsets[s], offsets[s+1]). It is both the CGT's batch of perturbation sets S_b and its
// list of gene sets (GO-slim terms), so readers in io/ build either directly.
// Duplicates inside a set are kept (a gene listed twice is two keys and counts twice in a mean);
// empty sets are allowed. validate(bound) names the set and the position of the first bad entry.
#include <algorithm>
#include <cstddef>
#include <initializer_list>
#include <span>
#include <string_view>
#include <vector>
#include "celltx/core/error.hpp"
#include "celltx/core/shape.hpp"

namespace celltx {

struct IndexSets {
    std::vector<index_t> offsets{0};  ///< size()+1 offsets into indices, offsets[0] == 0
    std::vector<index_t> indices;     ///< the entries of every set, concatenated

    /// Sets given one by one (each in the order given, duplicates kept).
    static IndexSets from_sets(const std::vector<std::vector<index_t>>& sets) {
        IndexSets r;
        r.offsets.reserve(sets.size() + 1);
        for (const auto& s : sets) r.push_back(s);
        return r;
    }
    static IndexSets from_sets(std::initializer_list<std::vector<index_t>> sets) {
        return from_sets(std::vector<std::vector<index_t>>(sets));
    }

    /// Appends one set.
    void push_back(std::span<const index_t> set) {
        indices.insert(indices.end(), set.begin(), set.end());
        offsets.push_back(static_cast<index_t>(indices.size()));
    }
    /// Appends every set of `other`.
    void append(const IndexSets& other) {
        for (index_t s = 0; s < other.size(); ++s) push_back(other.set(s));
    }

    /// Number of sets.
    index_t size() const noexcept { return offsets.empty() ? 0 : static_cast<index_t>(offsets.size()) - 1; }
    /// Number of sets, under the name a batch of perturbations uses.
    index_t batch_size() const noexcept { return size(); }
    /// Entries over all sets (duplicates counted).
    index_t total() const noexcept { return static_cast<index_t>(indices.size()); }
    index_t set_size(index_t s) const { return offsets[static_cast<std::size_t>(s) + 1] - offsets[static_cast<std::size_t>(s)]; }
    std::span<const index_t> set(index_t s) const {
        require(s >= 0 && s < size(), "IndexSets: set {} out of range for {} sets", s, size());
        return std::span<const index_t>(indices).subspan(static_cast<std::size_t>(offsets[static_cast<std::size_t>(s)]),
                                                        static_cast<std::size_t>(set_size(s)));
    }
    /// Every index of every set, sorted, once.
    std::vector<index_t> unique_indices() const {
        std::vector<index_t> u = indices;
        std::sort(u.begin(), u.end());
        u.erase(std::unique(u.begin(), u.end()), u.end());
        return u;
    }

    /// Throws ShapeError (messages start with `what`) unless the offsets are a valid pointer vector
    /// over `indices` and every index lies in [0, bound).
    void validate(index_t bound, std::string_view what = "IndexSets") const {
        require(!offsets.empty(), "{}: offsets is empty (a list of n sets needs n+1 offsets)", what);
        require(offsets.front() == 0, "{}: offsets[0] is {}, expected 0", what, offsets.front());
        require(offsets.back() == total(), "{}: the last offset is {} but there are {} indices", what, offsets.back(), total());
        for (index_t s = 0; s < size(); ++s)
            require(offsets[static_cast<std::size_t>(s)] <= offsets[static_cast<std::size_t>(s) + 1],
                    "{}: offsets decrease at set {} ({} > {})", what, s, offsets[static_cast<std::size_t>(s)],
                    offsets[static_cast<std::size_t>(s) + 1]);
        for (index_t s = 0; s < size(); ++s) {
            const auto v = set(s);
            for (std::size_t k = 0; k < v.size(); ++k)
                require(v[k] >= 0 && v[k] < bound, "{}: set {} entry {} has index {}, outside [0, {})", what, s, k, v[k], bound);
        }
    }
};

/// B perturbation sets S_b over the genes of a universe (the CGT's batch).
using PerturbationBatch = IndexSets;
/// m gene sets over the genes of a universe (GO-slim terms, for gene-set readouts).
using GeneSetList = IndexSets;

} // namespace celltx
