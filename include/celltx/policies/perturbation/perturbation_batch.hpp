#pragma once
// PerturbationBatch: B perturbation sets S_b as one ragged array (PyG pointer style): the gene
// indices of every set concatenated, and B+1 offsets. Set b is indices[offsets[b], offsets[b+1]).
// Duplicates inside a set are kept (a gene listed twice is two keys and counts twice in a mean);
// empty sets are allowed. validate(N) names the sample and the position of the first bad entry.
#include <cstddef>
#include <initializer_list>
#include <span>
#include <vector>
#include "celltx/core/error.hpp"
#include "celltx/core/shape.hpp"

namespace celltx {

struct PerturbationBatch {
    std::vector<index_t> indices;  ///< gene indices of all sets, concatenated
    std::vector<index_t> offsets;  ///< B+1 offsets into indices (offsets[0] == 0)

    /// A batch from a list of sets (each in the order given, duplicates kept).
    static PerturbationBatch from_sets(const std::vector<std::vector<index_t>>& sets) {
        PerturbationBatch p;
        p.offsets.reserve(sets.size() + 1);
        p.offsets.push_back(0);
        for (const auto& s : sets) {
            p.indices.insert(p.indices.end(), s.begin(), s.end());
            p.offsets.push_back(static_cast<index_t>(p.indices.size()));
        }
        return p;
    }
    static PerturbationBatch from_sets(std::initializer_list<std::vector<index_t>> sets) {
        return from_sets(std::vector<std::vector<index_t>>(sets));
    }

    index_t batch_size() const noexcept { return offsets.empty() ? 0 : static_cast<index_t>(offsets.size()) - 1; }
    /// Total number of entries over all sets (duplicates counted).
    index_t total() const noexcept { return static_cast<index_t>(indices.size()); }
    index_t set_size(index_t b) const { return offsets[static_cast<std::size_t>(b) + 1] - offsets[static_cast<std::size_t>(b)]; }
    std::span<const index_t> set(index_t b) const {
        require(b >= 0 && b < batch_size(), "PerturbationBatch: sample {} out of range for batch size {}", b, batch_size());
        return std::span<const index_t>(indices).subspan(static_cast<std::size_t>(offsets[static_cast<std::size_t>(b)]),
                                                        static_cast<std::size_t>(set_size(b)));
    }

    /// Throws ShapeError unless the offsets are a valid pointer vector over `indices` and every
    /// index lies in [0, num_genes).
    void validate(index_t num_genes) const {
        require(!offsets.empty(), "PerturbationBatch: offsets is empty (a batch of B sets needs B+1 offsets)");
        require(offsets.front() == 0, "PerturbationBatch: offsets[0] is {}, expected 0", offsets.front());
        require(offsets.back() == total(), "PerturbationBatch: the last offset is {} but there are {} indices", offsets.back(), total());
        for (index_t b = 0; b < batch_size(); ++b)
            require(offsets[static_cast<std::size_t>(b)] <= offsets[static_cast<std::size_t>(b) + 1],
                    "PerturbationBatch: offsets decrease at sample {} ({} > {})", b, offsets[static_cast<std::size_t>(b)],
                    offsets[static_cast<std::size_t>(b) + 1]);
        for (index_t b = 0; b < batch_size(); ++b) {
            const auto s = set(b);
            for (std::size_t k = 0; k < s.size(); ++k)
                require(s[k] >= 0 && s[k] < num_genes, "PerturbationBatch: sample {} entry {} has gene index {}, outside [0, {})", b, k,
                        s[k], num_genes);
        }
    }
};

} // namespace celltx
