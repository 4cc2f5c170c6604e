#pragma once
// Genetic-interaction labels (Costanzo 2016, as DCell prepared them) over a GeneUniverse.
// Label files hold one perturbation per line, whitespace-separated, in one of two layouts:
//   "<n> <ORF_1> ... <ORF_n> <label>"  (a leading gene count: the DCell train files, n = 2)
//   "<ORF_1> ... <ORF_k> <label>"      (no count: the DCell query file, whose label -2.0 is a placeholder)
// read_gi_labels returns (gene rows in file order, label); GiOptions::labeled = false stores NaN
// labels (for the query file). The genes file (costanzo_2016_genes.txt) is one ORF per line.
// What is an error (each names the file and the line):
// - a file without records; a gene count that is not a positive integer or does not match the
//   fields (a count near 2^64 is an error, not a wrap-around); a label that is not finite;
// - a gene named twice in one record (a perturbation set lists each gene once; the model's
//   PerturbationBatch would count it twice);
// - the same gene set twice (in any order): with different labels always; with the same label
//   unless GiOptions::duplicates = Duplicates::keep_first, which drops and counts the repeats;
// - a gene outside the universe, by default (a silently shrinking training set is worse than an
//   error); Unknown::skip drops the record and counts it in the report.
// Gene lists (read_gene_list) keep the first occurrence of a gene listed twice and count the
// repeats; unknown genes throw by default. The real costanzo_2016_genes.txt names 15 ORFs outside
// the 6,607-gene universe (the first, YIL171W, on line 45): read it with Unknown::skip and a
// MappingReport, which counts them (docs/data.md).
// read_gi_queries reads the sets to predict: "[<n>] <gene_1> ... <gene_k> [<label>]", the count and
// the label both optional (a DCell train line, a query line "<a> <b> -2.0", or bare names), keeping
// each line's names as written and its line number; an unknown gene always throws.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>
#include "celltx/core/ragged.hpp"
#include "celltx/io/gene_universe.hpp"
#include "celltx/io/text_reader.hpp"

namespace celltx::io {

struct GiRecord {
    std::vector<index_t> genes;  ///< the perturbed set S (file order; each gene once)
    double label = 0;            ///< epsilon, NaN when unlabeled
    std::size_t line = 0;        ///< line of the file it came from (for messages)
};

/// What a reader does with a record that repeats an earlier one exactly.
enum class Duplicates { error, keep_first };

struct GiOptions {
    bool labeled = true;                      ///< false: the last column is a placeholder; labels become NaN
    Unknown unknown = Unknown::error;         ///< a gene outside the universe throws or skips the record
    Duplicates duplicates = Duplicates::error;  ///< a repeated gene set (same label) throws or is dropped
};

struct GiLabels {
    std::vector<GiRecord> records;
    MappingReport report;  ///< records = lines, kept = records returned, duplicates = repeats dropped
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
    std::map<std::vector<index_t>, std::pair<std::size_t, double>> seen;  // sorted set -> (line, label)
    std::size_t lines = 0;
    while (in.next_line(line)) {
        split_whitespace(line, t);
        if (t.empty()) continue;
        ++lines;
        std::size_t first = 0, count = 0;
        if (gi_detail::all_digits(t[0])) {
            std::uint64_t n = 0;
            const auto [p, ec] = std::from_chars(t[0].data(), t[0].data() + t[0].size(), n);
            if (ec != std::errc{} || n == 0) in.fail("gene count '{}' must be a positive integer", t[0]);
            if (t.size() < 2 || t.size() - 2 != n)
                in.fail("gene count {} needs {} fields (count, {} genes, label), found {}", n, n < t.size() ? std::to_string(n + 2) : "more", n,
                        t.size());
            first = 1;
            count = static_cast<std::size_t>(n);
        } else {
            if (t.size() < 2) in.fail("expected at least one gene and a label, found {} field", t.size());
            count = t.size() - 1;
        }
        const double label = gi_detail::parse_label(t.back(), in);
        ++out.report.records;
        GiRecord r;
        r.label = opt.labeled ? label : std::numeric_limits<double>::quiet_NaN();
        r.line = in.line_number();
        r.genes.reserve(count);
        bool ok = true;
        for (std::size_t k = first; k < first + count; ++k) {
            const auto g = u.find(t[k]);
            if (!g) {
                if (opt.unknown == Unknown::error)
                    in.fail("gene '{}' is not in the universe of {} genes (Unknown::skip drops such records)", t[k], u.size());
                out.report.skip({t[k]});
                ok = false;
                break;
            }
            for (std::size_t j = 0; j < r.genes.size(); ++j)
                if (r.genes[j] == *g)
                    in.fail("gene '{}' appears twice in the record (as '{}' and '{}'; a perturbation set lists each gene once)", u.name(*g),
                            t[first + j], t[k]);
            r.genes.push_back(*g);
        }
        if (!ok) continue;
        std::vector<index_t> key = r.genes;
        std::sort(key.begin(), key.end());
        const auto [it, fresh] = seen.emplace(std::move(key), std::pair{in.line_number(), label});
        if (!fresh) {
            const auto [first_line, first_label] = it->second;
            if (opt.labeled && first_label != label)
                in.fail("conflicting labels for the same gene set: {} here, {} on line {}", label, first_label, first_line);
            if (opt.duplicates == Duplicates::error)
                in.fail("the gene set of line {} appears again (Duplicates::keep_first drops repeats)", first_line);
            ++out.report.duplicates;
            continue;
        }
        ++out.report.kept;
        out.records.push_back(std::move(r));
    }
    if (lines == 0) throw line_error(path, 0, "no records (the file is empty or blank)");
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
            if (n >= t.size()) in.fail("gene count {} needs {} fields (count and {} genes), found {}", n, n + 1, n, t.size());
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
    if (out.empty()) throw line_error(path, 0, "no records (the file is empty or blank)");
    return out;
}

/// A list of genes, one per line (blank lines ignored), as universe rows in file order; a gene
/// listed twice (under any of its names) is kept once and counted in report->duplicates. An empty
/// file throws; unknown genes throw, or with Unknown::skip are dropped and counted.
inline std::vector<index_t> read_gene_list(const std::filesystem::path& path, const GeneUniverse& u,
                                           Unknown unknown = Unknown::error, MappingReport* report = nullptr) {
    TextReader in(path);
    std::string_view line;
    std::vector<std::string_view> t;
    std::vector<index_t> out;
    std::vector<bool> have(static_cast<std::size_t>(u.size()), false);
    std::size_t lines = 0;
    while (in.next_line(line)) {
        split_whitespace(line, t);
        if (t.empty()) continue;
        ++lines;
        if (t.size() != 1) in.fail("expected one gene name per line, found {} fields", t.size());
        if (report) ++report->records;
        const auto g = u.find(t[0]);
        if (!g) {
            if (unknown == Unknown::error)
                in.fail("gene '{}' is not in the universe of {} genes (Unknown::skip drops and counts such genes)", t[0], u.size());
            if (report) report->skip({t[0]});
            continue;
        }
        if (have[static_cast<std::size_t>(*g)]) {
            if (report) ++report->duplicates;
            continue;
        }
        have[static_cast<std::size_t>(*g)] = true;
        if (report) ++report->kept;
        out.push_back(*g);
    }
    if (lines == 0) throw line_error(path, 0, "no genes (the file is empty or blank)");
    return out;
}

} // namespace celltx::io
