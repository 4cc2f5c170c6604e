#pragma once
// Edge lists of the real yeast graphs, mapped onto a GeneUniverse (build a GeneGraph from them):
// - STRING v11 protein actions (4932.protein.actions.v11.0.txt.gz): one edge list per `mode`
//   (reaction, binding, catalysis, activation, inhibition, ptmod, expression), item_id_a -> item_id_b
//   as given ('4932.' stripped). The file lists most pairs in both orientations and repeats a pair
//   once per action, so graphs dedupe (GeneGraph counts duplicates once).
// - YEASTRACT (yeastract_tf_target.csv): TF -> target, directed; the TF's protein name loses its
//   trailing 'p' ("Ace2p" -> ACE2) and both are looked up as standard names.
// Edges with a gene outside the universe are skipped and counted in the report. A malformed line
// throws IoError naming the file, the line number and what is wrong.
#include <algorithm>
#include <charconv>
#include <filesystem>
#include <iterator>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>
#include "celltx/core/gene_graph.hpp"
#include "celltx/io/gene_universe.hpp"
#include "celltx/io/text_reader.hpp"

namespace celltx::io {

/// Edges over a universe, and what mapping the source's names cost.
struct EdgeList {
    std::vector<Edge> edges;
    MappingReport report;  ///< records = source rows, kept = edges (before dedup), skipped = unknown gene
};

struct StringOptions {
    int min_score = 0;         ///< keep rows with score >= min_score (0..1000)
    bool acting_only = false;  ///< keep only rows with a_is_acting = t (a acts on b: a truly directed graph)
};

/// The STRING v11 mode names, in the order of their edge counts in the yeast file.
inline const std::vector<std::string>& string_modes() {
    static const std::vector<std::string> m{"reaction", "binding", "catalysis", "activation", "inhibition", "ptmod", "expression"};
    return m;
}

/// All modes of a STRING protein.actions file in one pass: mode -> edges.
inline std::map<std::string, EdgeList> read_string_actions(const std::filesystem::path& path, const GeneUniverse& u,
                                                           StringOptions opt = {}) {
    TextReader in(path);
    std::string_view line;
    std::vector<std::string_view> f;
    if (!in.next_line(line)) throw line_error(path, 0, "empty file");
    split(line, '\t', f);
    static constexpr std::string_view header[] = {"item_id_a", "item_id_b", "mode", "action", "is_directional", "a_is_acting", "score"};
    if (f.size() != 7 || !std::equal(f.begin(), f.end(), std::begin(header)))
        in.fail("expected the STRING actions header 'item_id_a<TAB>item_id_b<TAB>mode<TAB>action<TAB>is_directional"
                "<TAB>a_is_acting<TAB>score'");
    std::map<std::string, EdgeList, std::less<>> out;
    auto flag = [&](std::string_view v, const char* what) {
        if (v != "t" && v != "f") in.fail("{} must be 't' or 'f', found '{}'", what, v);
        return v == "t";
    };
    auto protein = [&](std::string_view id, const char* what) {
        if (!id.starts_with("4932.") || id.size() == 5) in.fail("{} '{}' is not a '4932.<ORF>' yeast protein id", what, id);
        return id.substr(5);
    };
    while (in.next_line(line)) {
        if (line.empty()) continue;
        split(line, '\t', f);
        if (f.size() != 7) in.fail("expected 7 tab-separated fields, found {}", f.size());
        const std::string_view a = protein(f[0], "item_id_a"), b = protein(f[1], "item_id_b");
        if (f[2].empty()) in.fail("empty mode");
        flag(f[4], "is_directional");
        const bool acting = flag(f[5], "a_is_acting");
        int score = -1;
        const auto [p, ec] = std::from_chars(f[6].data(), f[6].data() + f[6].size(), score);
        if (ec != std::errc{} || p != f[6].data() + f[6].size() || score < 0 || score > 1000)
            in.fail("score must be an integer in [0,1000], found '{}'", f[6]);
        auto it = out.find(f[2]);
        if (it == out.end()) it = out.emplace(std::string(f[2]), EdgeList{}).first;
        if (score < opt.min_score || (opt.acting_only && !acting)) continue;
        EdgeList& el = it->second;
        ++el.report.records;
        const auto ia = u.find(a), ib = u.find(b);
        if (!ia || !ib) {
            if (!ia && !ib) el.report.skip({a, b});
            else el.report.skip({ia ? b : a});
            continue;
        }
        ++el.report.kept;
        el.edges.push_back({*ia, *ib});
    }
    return {std::make_move_iterator(out.begin()), std::make_move_iterator(out.end())};
}

/// One mode of a STRING protein.actions file (a mode absent from the file throws).
inline EdgeList read_string_actions(const std::filesystem::path& path, const GeneUniverse& u, std::string_view mode,
                                    StringOptions opt = {}) {
    auto all = read_string_actions(path, u, opt);
    const auto it = all.find(std::string(mode));
    if (it == all.end()) throw line_error(path, 0, fmt::format("no edges of mode '{}'", mode));
    return std::move(it->second);
}

/// YEASTRACT TF -> target CSV: header "","TF","TG"; rows "<n>","<TF protein>","<target gene>".
inline EdgeList read_yeastract(const std::filesystem::path& path, const GeneUniverse& u) {
    TextReader in(path);
    std::string_view line;
    if (!in.next_line(line)) throw line_error(path, 0, "empty file");
    auto h = split_quoted(line, ',', in);
    if (h.size() != 3 || h[1] != "TF" || h[2] != "TG") in.fail("expected the header \"\",\"TF\",\"TG\"");
    EdgeList el;
    while (in.next_line(line)) {
        if (line.empty()) continue;
        auto f = split_quoted(line, ',', in);
        if (f.size() != 3) in.fail("expected 3 comma-separated fields, found {}", f.size());
        if (f[1].empty() || f[2].empty()) in.fail("empty {} name", f[1].empty() ? "TF" : "target");
        std::string tf = f[1];
        if (tf.size() > 1 && tf.back() == 'p') tf.pop_back();  // protein name "Ace2p" -> gene ACE2
        ++el.report.records;
        const auto it = u.find(tf), ig = u.find(f[2]);
        if (!it || !ig) {
            if (!it && !ig) el.report.skip({tf, f[2]});
            else el.report.skip({it ? std::string_view(f[2]) : std::string_view(tf)});
            continue;
        }
        ++el.report.kept;
        el.edges.push_back({*it, *ig});
    }
    return el;
}

} // namespace celltx::io
