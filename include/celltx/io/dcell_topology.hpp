#pragma once
// DCell ontology files (yeast-graphs/dcell_topology_GO_*.txt): the GO-term hierarchy that DCell
// builds its network on, as repeated blocks of three lines
//   ROOT: <GO term> <number of genes under the term, its descendants' included>
//   GENES: <ORFs annotated to the term itself>
//   TERMS: <child terms>
// read_dcell_topology checks the whole structure and names the file and the line of any defect:
// the block layout, GO ids, positive counts, a term defined twice, a gene or child listed twice in
// a block, a child that is never defined, a cycle, not exactly one root, and a declared count that
// differs from the genes under the term. Unknown genes throw by default (Unknown::skip drops them
// from the term and counts them; the declared counts are checked on the names as written).
#include <algorithm>
#include <charconv>
#include <cstdint>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>
#include "celltx/io/gene_universe.hpp"
#include "celltx/io/text_reader.hpp"

namespace celltx::io {

struct OntologyTerm {
    std::string id;                    ///< "GO:0006281"
    std::size_t declared_genes = 0;    ///< the count on the ROOT line (genes under the term)
    std::vector<index_t> genes;        ///< universe rows annotated to the term itself, file order
    std::vector<std::size_t> children;  ///< indices into DcellTopology::terms
    std::size_t line = 0;              ///< line of the ROOT: line
};

struct DcellTopology {
    std::vector<OntologyTerm> terms;  ///< file order
    std::size_t root = 0;             ///< the term that is nobody's child
    MappingReport report;             ///< records = gene entries, skipped = genes outside the universe

    /// Index of term `id`, or terms.size() when absent.
    std::size_t find(std::string_view id) const {
        for (std::size_t i = 0; i < terms.size(); ++i)
            if (terms[i].id == id) return i;
        return terms.size();
    }
    /// Rows under term t (its own and its descendants'), ascending and unique.
    std::vector<index_t> genes_under(std::size_t t) const {
        std::vector<index_t> out;
        std::vector<bool> visited(terms.size(), false);
        std::vector<std::size_t> stack{t};
        while (!stack.empty()) {
            const std::size_t k = stack.back();
            stack.pop_back();
            if (visited.at(k)) continue;
            visited[k] = true;
            out.insert(out.end(), terms[k].genes.begin(), terms[k].genes.end());
            stack.insert(stack.end(), terms[k].children.begin(), terms[k].children.end());
        }
        std::sort(out.begin(), out.end());
        out.erase(std::unique(out.begin(), out.end()), out.end());
        return out;
    }
};

namespace dcell_detail {
inline bool is_go_id(std::string_view s) {
    return s.size() == 10 && s.starts_with("GO:") && std::all_of(s.begin() + 3, s.end(), [](char c) { return c >= '0' && c <= '9'; });
}
} // namespace dcell_detail

inline DcellTopology read_dcell_topology(const std::filesystem::path& path, const GeneUniverse& u, Unknown unknown = Unknown::error) {
    TextReader in(path);
    std::string_view line;
    std::vector<std::string_view> t;
    DcellTopology out;
    struct Pending {
        std::vector<std::string> gene_names, child_ids;
        std::size_t terms_line = 0;
    };
    std::vector<Pending> pending;
    std::map<std::string, std::size_t, std::less<>> index;  // id -> term
    enum class Expect { root, genes, terms } expect = Expect::root;
    while (in.next_line(line)) {
        split_whitespace(line, t);
        if (t.empty()) continue;
        const std::string_view tag = t[0];
        if (expect == Expect::root) {
            if (tag != "ROOT:") in.fail("expected a 'ROOT: <term> <gene count>' line, found '{}'", tag);
            if (t.size() != 3) in.fail("'ROOT:' needs a term and a gene count, found {} fields", t.size());
            if (!dcell_detail::is_go_id(t[1])) in.fail("term '{}' does not look like GO:0006281", t[1]);
            std::uint64_t n = 0;
            const auto [p, ec] = std::from_chars(t[2].data(), t[2].data() + t[2].size(), n);
            if (ec != std::errc{} || p != t[2].data() + t[2].size() || n == 0 || n > static_cast<std::uint64_t>(u.size()))
                in.fail("gene count '{}' of {} must be an integer in [1, {}]", t[2], t[1], u.size());
            const auto [it, fresh] = index.emplace(std::string(t[1]), out.terms.size());
            if (!fresh) in.fail("term {} is defined twice (first on line {})", t[1], out.terms[it->second].line);
            out.terms.push_back(OntologyTerm{std::string(t[1]), static_cast<std::size_t>(n), {}, {}, in.line_number()});
            pending.emplace_back();
            expect = Expect::genes;
        } else if (expect == Expect::genes) {
            if (tag != "GENES:") in.fail("expected the 'GENES:' line of term {}, found '{}'", out.terms.back().id, tag);
            std::set<std::string_view> listed;
            for (std::size_t k = 1; k < t.size(); ++k) {
                if (!listed.insert(t[k]).second) in.fail("gene '{}' is listed twice for term {}", t[k], out.terms.back().id);
                pending.back().gene_names.emplace_back(t[k]);
                ++out.report.records;
                const auto g = u.find(t[k]);
                if (!g) {
                    if (unknown == Unknown::error)
                        in.fail("gene '{}' of term {} is not in the universe of {} genes (Unknown::skip drops such genes)", t[k],
                                out.terms.back().id, u.size());
                    out.report.skip({t[k]});
                    continue;
                }
                ++out.report.kept;
                out.terms.back().genes.push_back(*g);
            }
            expect = Expect::terms;
        } else {
            if (tag != "TERMS:") in.fail("expected the 'TERMS:' line of term {}, found '{}'", out.terms.back().id, tag);
            std::set<std::string_view> listed;
            for (std::size_t k = 1; k < t.size(); ++k) {
                if (!dcell_detail::is_go_id(t[k])) in.fail("child term '{}' does not look like GO:0006281", t[k]);
                if (t[k] == out.terms.back().id) in.fail("term {} lists itself as a child", t[k]);
                if (!listed.insert(t[k]).second) in.fail("child term {} is listed twice for term {}", t[k], out.terms.back().id);
                pending.back().child_ids.emplace_back(t[k]);
            }
            pending.back().terms_line = in.line_number();
            expect = Expect::root;
        }
    }
    if (out.terms.empty()) throw line_error(path, 0, "no terms (the file is empty or blank)");
    if (expect != Expect::root)
        throw line_error(path, in.line_number() + 1,
                         fmt::format("the file ends inside the block of term {} (missing its '{}' line)", out.terms.back().id,
                                     expect == Expect::genes ? "GENES:" : "TERMS:"));

    // Children, then one root and no cycle.
    std::vector<std::size_t> parents(out.terms.size(), 0);
    for (std::size_t i = 0; i < out.terms.size(); ++i)
        for (const std::string& c : pending[i].child_ids) {
            const auto it = index.find(c);
            if (it == index.end())
                throw line_error(path, pending[i].terms_line, fmt::format("child term {} of {} is never defined", c, out.terms[i].id));
            out.terms[i].children.push_back(it->second);
            ++parents[it->second];
        }
    std::vector<std::size_t> roots;
    for (std::size_t i = 0; i < out.terms.size(); ++i)
        if (parents[i] == 0) roots.push_back(i);
    if (roots.empty()) throw line_error(path, 0, "every term is some term's child: the hierarchy has no root (a cycle)");
    if (roots.size() > 1)
        throw line_error(path, out.terms[roots[1]].line,
                         fmt::format("term {} is nobody's child, as is {}: a topology has one root", out.terms[roots[1]].id, out.terms[roots[0]].id));
    out.root = roots[0];
    {  // iterative DFS with colours: a back edge is a cycle
        std::vector<int> colour(out.terms.size(), 0);  // 0 new, 1 on the path, 2 done
        std::vector<std::pair<std::size_t, std::size_t>> stack{{out.root, 0}};
        colour[out.root] = 1;
        while (!stack.empty()) {
            auto& [k, next] = stack.back();
            if (next == out.terms[k].children.size()) {
                colour[k] = 2;
                stack.pop_back();
                continue;
            }
            const std::size_t c = out.terms[k].children[next++];
            if (colour[c] == 1)
                throw line_error(path, pending[k].terms_line,
                                 fmt::format("term {} lists {}, which is above it: the hierarchy has a cycle", out.terms[k].id, out.terms[c].id));
            if (colour[c] == 0) {
                colour[c] = 1;
                stack.emplace_back(c, 0);
            }
        }
        for (std::size_t i = 0; i < out.terms.size(); ++i)
            if (colour[i] == 0)
                throw line_error(path, out.terms[i].line, fmt::format("term {} is not below the root {} (a cycle apart from it)", out.terms[i].id,
                                                                      out.terms[out.root].id));
    }
    // Declared counts: the distinct gene names under each term, as written.
    for (std::size_t i = 0; i < out.terms.size(); ++i) {
        std::set<std::string_view> names;
        std::vector<bool> visited(out.terms.size(), false);
        std::vector<std::size_t> stack{i};
        while (!stack.empty()) {
            const std::size_t k = stack.back();
            stack.pop_back();
            if (visited[k]) continue;
            visited[k] = true;
            for (const auto& n : pending[k].gene_names) names.insert(n);
            stack.insert(stack.end(), out.terms[k].children.begin(), out.terms[k].children.end());
        }
        if (names.size() != out.terms[i].declared_genes)
            throw line_error(path, out.terms[i].line, fmt::format("term {} declares {} genes but {} genes lie under it", out.terms[i].id,
                                                                  out.terms[i].declared_genes, names.size()));
    }
    return out;
}

} // namespace celltx::io
