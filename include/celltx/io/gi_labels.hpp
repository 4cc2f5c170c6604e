#pragma once
// Genetic-interaction labels (Costanzo 2016, as DCell prepared them) over a GeneUniverse.
// Label files hold one perturbation per line, whitespace-separated, in one of two layouts:
//   "<n> <ORF_1> ... <ORF_n> <label>"  (a leading gene count: the DCell train files, n = 2)
//   "<ORF_1> ... <ORF_k> <label>"      (no count: the DCell query file, whose label -2.0 is a placeholder)
// read_gi_labels returns (gene rows in file order, label); GiOptions::labeled = false stores NaN
// labels (for the query file). The genes file (costanzo_2016_genes.txt) is one ORF per line.
// Unknown genes throw by default (a silently shrinking training set is worse than an error);
// Unknown::skip drops the record and counts it. Every error names the file and the line.
// read_gi_queries reads the sets to predict: "[<n>] <gene_1> ... <gene_k> [<label>]", the count and
// the label both optional (a DCell train line, a query line "<a> <b> -2.0", or bare names), keeping
// each line's names as written and its line number; an unknown gene always throws.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>
#include "celltx/core/ragged.hpp"
#include "celltx/io/gene_universe.hpp"
#include "celltx/io/text_reader.hpp"

namespace celltx::io {

struct GiRecord {
    std::vector<index_t> genes;  ///< the perturbed set S (file order; duplicates kept)
    double label = 0;            ///< epsilon, NaN when unlabeled
};

struct GiOptions {
    bool labeled = true;              ///< false: the last column is a placeholder; labels become NaN
    Unknown unknown = Unknown::error;  ///< a gene outside the universe throws or skips the record
};

struct GiLabels {
    std::vector<GiRecord> records;
    MappingReport report;  ///< records = lines, kept = records returned
};

/// The perturbation sets of records[positions[i]], in that order, as one batch for a CGT.
inline PerturbationBatch gi_batch(const std::vector<GiRecord>& records, std::span<const std::size_t> positions) {
    PerturbationBatch b;
    b.offsets.reserve(positions.size() + 1);
    for (std::size_t p : positions) {
        require(p < records.size(), "gi_batch: position {} out of range for {} records", p, records.size());
        b.push_back(records[p].genes);
    }
    return b;
}
/// Every record's perturbation set, in file order.
inline PerturbationBatch gi_batch(const std::vector<GiRecord>& records) {
    PerturbationBatch b;
    for (const GiRecord& r : records) b.push_back(r.genes);
    return b;
}

namespace gi_detail {
inline bool all_digits(std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}
inline double parse_label(std::string_view s, const TextReader& at) {
    double v = 0;
    const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || p != s.data() + s.size() || !std::isfinite(v))
        throw at.error(fmt::format("label '{}' is not a finite number", s));
    return v;
}
} // namespace gi_detail

inline GiLabels read_gi_labels(const std::filesystem::path& path, const GeneUniverse& u, GiOptions opt = {}) {
    TextReader in(path);
    std::string_view line;
    std::vector<std::string_view> t;
    GiLabels out;
    while (in.next_line(line)) {
        split_whitespace(line, t);
        if (t.empty()) continue;
        std::size_t first = 0, count = 0;
        if (gi_detail::all_digits(t[0])) {
            std::size_t n = 0;
            const auto [p, ec] = std::from_chars(t[0].data(), t[0].data() + t[0].size(), n);
            if (ec != std::errc{} || n == 0) in.fail("gene count '{}' must be a positive integer", t[0]);
            if (t.size() != n + 2) in.fail("gene count {} needs {} fields (count, {} genes, label), found {}", n, n + 2, n, t.size());
            first = 1;
            count = n;
        } else {
            if (t.size() < 2) in.fail("expected at least one gene and a label, found {} field", t.size());
            count = t.size() - 1;
        }
        const double label = gi_detail::parse_label(t.back(), in);
        ++out.report.records;
        GiRecord r;
        r.label = opt.labeled ? label : std::numeric_limits<double>::quiet_NaN();
        r.genes.reserve(count);
        bool ok = true;
        for (std::size_t k = first; k < first + count; ++k) {
            const auto g = u.find(t[k]);
            if (!g) {
                if (opt.unknown == Unknown::error) in.fail("gene '{}' is not in the universe of {} genes", t[k], u.size());
                out.report.skip({t[k]});
                ok = false;
                break;
            }
            r.genes.push_back(*g);
        }
        if (!ok) continue;
        ++out.report.kept;
        out.records.push_back(std::move(r));
    }
    return out;
}

/// One line of a query file: the genes as written, their rows, the label (NaN when absent), the line.
struct GiQuery {
    std::vector<std::string> names;
    std::vector<index_t> genes;
    double label = std::numeric_limits<double>::quiet_NaN();
    std::size_t line = 0;
};

inline std::vector<GiQuery> read_gi_queries(const std::filesystem::path& path, const GeneUniverse& u) {
    TextReader in(path);
    std::string_view line;
    std::vector<std::string_view> t;
    std::vector<GiQuery> out;
    auto is_number = [](std::string_view s) {
        double v = 0;
        const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
        return ec == std::errc{} && p == s.data() + s.size();
    };
    while (in.next_line(line)) {
        split_whitespace(line, t);
        if (t.empty()) continue;
        std::size_t first = 0, count = 0;
        bool labelled = false;
        if (gi_detail::all_digits(t[0])) {
            std::size_t n = 0;
            const auto [p, ec] = std::from_chars(t[0].data(), t[0].data() + t[0].size(), n);
            if (ec != std::errc{} || n == 0) in.fail("gene count '{}' must be a positive integer", t[0]);
            if (t.size() != n + 1 && t.size() != n + 2)
                in.fail("gene count {} needs {} fields (count and {} genes) or {} (and a label), found {}", n, n + 1, n, n + 2, t.size());
            first = 1;
            count = n;
            labelled = t.size() == n + 2;
        } else {
            labelled = t.size() >= 2 && is_number(t.back());
            count = t.size() - (labelled ? 1 : 0);
        }
        GiQuery q;
        q.line = in.line_number();
        if (labelled) q.label = gi_detail::parse_label(t.back(), in);
        for (std::size_t k = first; k < first + count; ++k) {
            const auto g = u.find(t[k]);
            if (!g) in.fail("gene '{}' is not in the universe of {} genes", t[k], u.size());
            q.names.emplace_back(t[k]);
            q.genes.push_back(*g);
        }
        out.push_back(std::move(q));
    }
    return out;
}

/// A list of genes, one per line (blank lines ignored), as universe rows in file order.
inline std::vector<index_t> read_gene_list(const std::filesystem::path& path, const GeneUniverse& u,
                                           Unknown unknown = Unknown::error, MappingReport* report = nullptr) {
    TextReader in(path);
    std::string_view line;
    std::vector<std::string_view> t;
    std::vector<index_t> out;
    while (in.next_line(line)) {
        split_whitespace(line, t);
        if (t.empty()) continue;
        if (t.size() != 1) in.fail("expected one gene name per line, found {} fields", t.size());
        if (report) ++report->records;
        const auto g = u.find(t[0]);
        if (!g) {
            if (unknown == Unknown::error) in.fail("gene '{}' is not in the universe of {} genes", t[0], u.size());
            if (report) report->skip({t[0]});
            continue;
        }
        if (report) ++report->kept;
        out.push_back(*g);
    }
    return out;
}

} // namespace celltx::io
