#pragma once
// GO-slim gene sets from SGD's go_slim_mapping.tab (7 tab-separated columns: ORF, gene, SGDID,
// aspect P/F/C, GO-slim term name, GOID, feature type), as rows of a GeneUniverse, for gene-set
// readouts (pool the genes of each set). Rows whose ORF is not in the universe (protein complexes,
// tRNA, snoRNA, ... genes) are skipped and counted; rows with a blank GOID ("other", per SGD's
// README) belong to no term and are counted apart. Filters (aspects, min/max size) apply to the
// set sizes after mapping. Sets come sorted by GOID, genes ascending and unique (a repeated row
// counts once). An empty file is an error.
#include <algorithm>
#include <filesystem>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <vector>
#include "celltx/io/gene_universe.hpp"
#include "celltx/io/text_reader.hpp"

namespace celltx::io {

struct GeneSet {
    std::string id;    ///< GO ID, "GO:0006281"
    std::string name;  ///< term name, "DNA repair"
    char aspect = 'P';  ///< P (process), F (function) or C (component)
    std::vector<index_t> genes;
};

struct GeneSetOptions {
    std::string aspects = "PFC";  ///< which aspects to keep
    index_t min_size = 1;         ///< keep sets with min_size <= |genes| <= max_size
    index_t max_size = std::numeric_limits<index_t>::max();
};

struct GeneSetCollection {
    std::vector<GeneSet> sets;
    MappingReport report;              ///< records = annotation rows with a GOID; skipped = ORF not in the universe
    std::size_t rows_without_term = 0;  ///< rows with a blank GOID
    std::size_t filtered_out = 0;       ///< sets dropped by the aspect or size filters
};

inline GeneSetCollection read_go_slim(const std::filesystem::path& path, const GeneUniverse& u, GeneSetOptions opt = {}) {
    for (char a : opt.aspects)
        if (a != 'P' && a != 'F' && a != 'C') throw IoError(fmt::format("read_go_slim: unknown aspect '{}' in the filter", a));
    TextReader in(path);
    std::string_view line;
    std::vector<std::string_view> f;
    GeneSetCollection out;
    std::map<std::string, GeneSet, std::less<>> sets;
    std::size_t rows = 0;
    while (in.next_line(line)) {
        if (line.empty()) continue;
        ++rows;
        split(line, '\t', f);
        if (f.size() != 7) in.fail("expected 7 tab-separated fields, found {}", f.size());
        if (f[0].empty()) in.fail("empty ORF (column 1)");
        if (f[3].size() != 1 || (f[3][0] != 'P' && f[3][0] != 'F' && f[3][0] != 'C'))
            in.fail("aspect (column 4) must be P, F or C, found '{}'", f[3]);
        if (f[5].empty()) {
            ++out.rows_without_term;
            continue;
        }
        const std::string_view id = f[5];
        if (id.size() != 10 || !id.starts_with("GO:") ||
            !std::all_of(id.begin() + 3, id.end(), [](char c) { return c >= '0' && c <= '9'; }))
            in.fail("GOID (column 6) must look like GO:0006281, found '{}'", id);
        if (f[4].empty()) in.fail("empty GO-slim term name (column 5)");
        auto it = sets.find(id);
        if (it == sets.end()) {
            it = sets.emplace(std::string(id), GeneSet{std::string(id), std::string(f[4]), f[3][0], {}}).first;
        } else if (it->second.aspect != f[3][0] || it->second.name != f[4]) {
            in.fail("{} is '{}' (aspect {}) here but '{}' (aspect {}) earlier", id, f[4], f[3], it->second.name,
                    it->second.aspect);
        }
        ++out.report.records;
        const auto g = u.find(f[0]);
        if (!g) {
            out.report.skip({f[0]});
            continue;
        }
        ++out.report.kept;
        it->second.genes.push_back(*g);
    }
    if (rows == 0) throw line_error(path, 0, "no annotation rows (the file is empty or blank)");
    for (auto& [id, s] : sets) {
        std::sort(s.genes.begin(), s.genes.end());
        s.genes.erase(std::unique(s.genes.begin(), s.genes.end()), s.genes.end());
        const auto n = static_cast<index_t>(s.genes.size());
        if (n == 0) continue;  // a term of genes outside the universe only: not a set over it
        if (opt.aspects.find(s.aspect) == std::string::npos || n < opt.min_size || n > opt.max_size) {
            ++out.filtered_out;
            continue;
        }
        out.sets.push_back(std::move(s));
    }
    return out;
}

} // namespace celltx::io
