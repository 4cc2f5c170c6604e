#pragma once
// Sets of cells for the State Transition model (state's cell-load sampler), on plain per-cell ids:
//  - holdout_split: a seeded fraction of the cells of every group (e.g. every perturbation) held out;
//  - ControlMatcher: every perturbed cell gets a random control cell of its cell type (and batch,
//    when that batch has controls), redrawn every epoch; a pure function of (seed, epoch, cell), so
//    any rank can draw any cell's control without communication;
//  - SetSampler: the cells grouped by (cell type, perturbation) and cut into sets of S cells. In
//    training every group is shuffled each epoch and its last, short set (or a group shorter than
//    S) is filled up by drawing from the group with replacement; the order of the sets is shuffled
//    too. For evaluation the groups are cut in order and the last set of a group is simply shorter.
// Every draw comes from CounterRng streams keyed by (seed, epoch), so an epoch's sets are the same
// whatever ran before (resume) and can be sharded by rank (shard()).
#include <algorithm>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <utility>
#include <vector>
#include <fmt/format.h>
#include "celltx/core/error.hpp"
#include "celltx/core/rng.hpp"
#include "celltx/core/shape.hpp"

namespace celltx::train {

namespace sampler_detail {
/// Fisher–Yates with draws i of `rng` (a pure function of the stream).
inline void shuffle(std::vector<index_t>& v, const CounterRng& rng) {
    for (std::size_t i = v.size(); i > 1; --i) {
        const auto j = static_cast<std::size_t>(rng.below(i, i));
        std::swap(v[i - 1], v[j]);
    }
}
} // namespace sampler_detail

/// The cells of every group split into (kept, held out): round(fraction · n) of each group's cells
/// (at least one when the group has two or more and fraction > 0), chosen by a seeded shuffle.
/// Both lists are sorted.
inline std::pair<std::vector<index_t>, std::vector<index_t>> holdout_split(std::span<const index_t> group, double fraction,
                                                                            std::uint64_t seed) {
    require(fraction >= 0.0 && fraction < 1.0, "holdout_split: fraction {} is outside [0, 1)", fraction);
    std::map<index_t, std::vector<index_t>> members;
    for (std::size_t i = 0; i < group.size(); ++i) members[group[i]].push_back(static_cast<index_t>(i));
    std::vector<index_t> keep, held;
    const CounterRng rng(seed, 0x5e1d);
    for (auto& [g, cells] : members) {
        sampler_detail::shuffle(cells, rng.substream(static_cast<std::uint64_t>(g)));
        auto n_held = static_cast<std::size_t>(fraction * static_cast<double>(cells.size()) + 0.5);
        if (fraction > 0.0 && cells.size() >= 2) n_held = std::clamp<std::size_t>(n_held, 1, cells.size() - 1);
        held.insert(held.end(), cells.begin(), cells.begin() + static_cast<std::ptrdiff_t>(n_held));
        keep.insert(keep.end(), cells.begin() + static_cast<std::ptrdiff_t>(n_held), cells.end());
    }
    std::sort(keep.begin(), keep.end());
    std::sort(held.begin(), held.end());
    return {keep, held};
}

/// Draws a control cell for every cell: same cell type, and same batch where that batch has controls.
class ControlMatcher {
public:
    ControlMatcher() = default;
    /// cell_type / batch: per cell of the dataset; controls: the cells controls are drawn from.
    ControlMatcher(std::span<const index_t> cell_type, std::span<const index_t> batch, std::span<const index_t> controls,
                   std::uint64_t seed, bool match_batch = true)
        : cell_type_(cell_type.begin(), cell_type.end()), batch_(batch.begin(), batch.end()), rng_(seed, 0xc0de), match_batch_(match_batch) {
        require(cell_type.size() == batch.size(), "ControlMatcher: {} cell types for {} batches", cell_type.size(), batch.size());
        require(!controls.empty(), "ControlMatcher: no control cells to draw from");
        for (index_t c : controls) {
            require(c >= 0 && c < static_cast<index_t>(cell_type.size()), "ControlMatcher: control cell {} is outside the {} cells", c,
                    cell_type.size());
            by_type_batch_[{cell_type[c], batch[c]}].push_back(c);
            by_type_[cell_type[c]].push_back(c);
        }
    }

    /// The control paired with `cell` in `epoch`; throws if its cell type has no control at all.
    index_t draw(index_t cell, std::uint64_t epoch) const {
        const std::vector<index_t>& pool = pool_of(cell);
        return pool[rng_.substream(epoch).below(static_cast<std::uint64_t>(cell), pool.size())];
    }
    /// Whether `cell` draws from its own (cell type, batch) pool, or falls back to its cell type.
    bool batch_matched(index_t cell) const {
        return match_batch_ && by_type_batch_.count({cell_type_.at(static_cast<std::size_t>(cell)), batch_.at(static_cast<std::size_t>(cell))});
    }
    const std::vector<index_t>& pool_of(index_t cell) const {
        require(cell >= 0 && cell < static_cast<index_t>(cell_type_.size()), "ControlMatcher: cell {} is outside the {} cells", cell,
                cell_type_.size());
        if (match_batch_)
            if (auto it = by_type_batch_.find({cell_type_[cell], batch_[cell]}); it != by_type_batch_.end()) return it->second;
        auto it = by_type_.find(cell_type_[cell]);
        require(it != by_type_.end(), "ControlMatcher: cell {} is of cell type {}, which has no control cells", cell, cell_type_[cell]);
        return it->second;
    }

private:
    std::vector<index_t> cell_type_, batch_;
    std::map<std::pair<index_t, index_t>, std::vector<index_t>> by_type_batch_;
    std::map<index_t, std::vector<index_t>> by_type_;
    CounterRng rng_;
    bool match_batch_ = true;
};

/// One set: cells of one (cell type, perturbation) group.
struct CellSet {
    index_t cell_type = 0, perturbation = 0;
    std::vector<index_t> cells;
};

class SetSampler {
public:
    SetSampler() = default;
    /// pool: the cells to sample (e.g. the training split); cell_type / perturbation: per cell of the dataset.
    SetSampler(std::span<const index_t> pool, std::span<const index_t> cell_type, std::span<const index_t> perturbation, index_t set_len,
               std::uint64_t seed)
        : set_len_(set_len), rng_(seed, 0x5e7) {
        require(set_len >= 1, "SetSampler: set length {} must be positive", set_len);
        require(cell_type.size() == perturbation.size(), "SetSampler: {} cell types for {} perturbations", cell_type.size(),
                perturbation.size());
        std::map<std::pair<index_t, index_t>, std::vector<index_t>> g;
        for (index_t c : pool) {
            require(c >= 0 && c < static_cast<index_t>(cell_type.size()), "SetSampler: cell {} is outside the {} cells", c, cell_type.size());
            g[{cell_type[c], perturbation[c]}].push_back(c);
        }
        for (auto& [key, cells] : g) groups_.push_back({key.first, key.second, std::move(cells)});
    }

    index_t set_len() const noexcept { return set_len_; }
    const std::vector<CellSet>& groups() const noexcept { return groups_; }
    /// Sets per epoch: ceil(n / S) for every group.
    index_t sets_per_epoch() const {
        index_t n = 0;
        for (const auto& g : groups_) n += (static_cast<index_t>(g.cells.size()) + set_len_ - 1) / set_len_;
        return n;
    }

    /// The sets of `epoch`: shuffled and filled to S cells (training), or in order (evaluation).
    std::vector<CellSet> epoch(std::uint64_t e, bool training) const {
        std::vector<CellSet> out;
        const CounterRng er = rng_.substream(e);
        for (std::size_t gi = 0; gi < groups_.size(); ++gi) {
            const CellSet& g = groups_[gi];
            std::vector<index_t> cells = g.cells;
            const CounterRng gr = er.substream(gi);
            if (training) sampler_detail::shuffle(cells, gr.substream(0));
            const index_t n = static_cast<index_t>(cells.size());
            std::uint64_t fill = 0;
            for (index_t begin = 0; begin < n; begin += set_len_) {
                CellSet s{g.cell_type, g.perturbation, {}};
                const index_t end = std::min(n, begin + set_len_);
                s.cells.assign(cells.begin() + begin, cells.begin() + end);
                if (training)  // short: resample the group with replacement
                    while (static_cast<index_t>(s.cells.size()) < set_len_)
                        s.cells.push_back(cells[gr.substream(1).below(fill++, static_cast<std::uint64_t>(n))]);
                out.push_back(std::move(s));
            }
        }
        if (training) {
            std::vector<index_t> order(out.size());
            for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<index_t>(i);
            sampler_detail::shuffle(order, er.substream(~std::uint64_t{0}));
            std::vector<CellSet> shuffled;
            shuffled.reserve(out.size());
            for (index_t i : order) shuffled.push_back(std::move(out[i]));
            out = std::move(shuffled);
        }
        return out;
    }

    /// Rank `rank` of `ranks`' share of an epoch's sets (every ranks-th set): the data-parallel split.
    static std::vector<CellSet> shard(const std::vector<CellSet>& sets, int rank, int ranks) {
        require(ranks >= 1 && rank >= 0 && rank < ranks, "SetSampler::shard: rank {} of {}", rank, ranks);
        std::vector<CellSet> out;
        for (std::size_t i = static_cast<std::size_t>(rank); i < sets.size(); i += static_cast<std::size_t>(ranks)) out.push_back(sets[i]);
        return out;
    }

private:
    index_t set_len_ = 1;
    CounterRng rng_;
    std::vector<CellSet> groups_;
};

} // namespace celltx::train
