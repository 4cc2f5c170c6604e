// Readers of the real yeast data (read where they lie, in CELLTX_DATA_DIR): the gene universe,
// STRING / YEASTRACT graphs as CSR, GO-slim gene sets and the DCell GI labels. Expected counts and
// spot checks were obtained independently (Python csv/gzip over the same files, and grep); the CSR
// normalisation is checked against a dense evaluation of the spec's formula; malformed temporary
// files check that every error names the file and the line.
#include <boost/test/unit_test.hpp>
#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>
#include <unistd.h>
#include <zlib.h>
#include "celltx/core/gene_graph.hpp"
#include "celltx/io/dcell_topology.hpp"
#include "celltx/io/gene_sets.hpp"
#include "celltx/io/gene_universe.hpp"
#include "celltx/io/gi_labels.hpp"
#include "celltx/io/graph_sources.hpp"
#include "celltx/io/text_reader.hpp"
#include "celltx/io/yeast_data.hpp"

#ifndef CELLTX_DATA_DIR
#define CELLTX_DATA_DIR ""
#endif

using namespace celltx;
using namespace celltx::io;
namespace fs = std::filesystem;

namespace {

const YeastData& data() {
    static const YeastData d = YeastData::locate(CELLTX_DATA_DIR);
    return d;
}
const GeneUniverse& universe() {
    static const GeneUniverse u = GeneUniverse::from_table(data().genes_table());
    return u;
}
// STRING is 769k lines: parse it once per test process.
const std::map<std::string, EdgeList>& string_edges() {
    static const auto e = read_string_actions(data().string_actions(), universe());
    return e;
}

// A fresh directory for malformed files, removed when the test case ends.
struct TempDir {
    fs::path dir;
    TempDir() {
        static std::atomic<int> n{0};
        dir = fs::temp_directory_path() / ("celltx_data_io_" + std::to_string(::getpid()) + "_" + std::to_string(n++));
        fs::create_directories(dir);
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
    fs::path write(const std::string& name, const std::string& text) const {
        const fs::path p = dir / name;
        std::ofstream(p, std::ios::binary) << text;
        return p;
    }
    fs::path write_gz(const std::string& name, const std::string& text) const {
        const fs::path p = dir / name;
        gzFile f = gzopen(p.c_str(), "wb");
        BOOST_REQUIRE(f != nullptr);
        BOOST_REQUIRE(gzwrite(f, text.data(), static_cast<unsigned>(text.size())) == static_cast<int>(text.size()));
        gzclose(f);
        return p;
    }
};

// `f` must throw IoError whose message names `path` and, if line > 0, "path:line:", and holds `what`.
void expect_io_error(const std::function<void()>& f, const fs::path& path, std::size_t line, const std::string& what) {
    try {
        f();
        BOOST_ERROR("no IoError for " << path << " line " << line);
    } catch (const IoError& e) {
        const std::string m = e.what();
        const std::string where = line > 0 ? path.string() + ":" + std::to_string(line) + ":" : path.string();
        BOOST_TEST(m.find(where) != std::string::npos, "message '" << m << "' lacks '" << where << "'");
        BOOST_TEST(m.find(what) != std::string::npos, "message '" << m << "' lacks '" << what << "'");
    }
}

// CSR invariants, and Ã rows summing to 1 wherever the degree is positive.
void check_csr(const GeneGraph& g) {
    const auto rp = g.row_ptr();
    const auto col = g.col();
    BOOST_REQUIRE(rp.size() == static_cast<std::size_t>(g.num_nodes()) + 1);
    BOOST_TEST(rp[0] == 0);
    BOOST_TEST(rp.back() == g.nnz());
    bool monotone = true, sorted_unique = true, in_range = true;
    for (index_t i = 0; i < g.num_nodes(); ++i) {
        monotone = monotone && rp[i] <= rp[i + 1];
        for (index_t k = rp[i]; k < rp[i + 1]; ++k) {
            in_range = in_range && col[k] >= 0 && col[k] < g.num_nodes();
            if (k > rp[i]) sorted_unique = sorted_unique && col[k - 1] < col[k];
        }
    }
    BOOST_TEST(monotone);
    BOOST_TEST(sorted_unique);
    BOOST_TEST(in_range);
    const auto v = g.normalized_values<double>();
    double worst = 0;
    for (index_t i = 0; i < g.num_nodes(); ++i) {
        double s = 0;
        for (index_t k = rp[i]; k < rp[i + 1]; ++k) s += v[k];
        if (rp[i + 1] > rp[i]) worst = std::max(worst, std::abs(s - 1.0));
    }
    BOOST_TEST(worst < 1e-9);
    BOOST_TEST(g.num_rows_with_edges() == static_cast<index_t>(g.rows_with_edges().size()));
}

bool symmetric(const GeneGraph& g) {
    for (const Edge& e : g.edges())
        if (!g.has_edge(e.dst, e.src)) return false;
    return true;
}

} // namespace

BOOST_AUTO_TEST_SUITE(data_io)

BOOST_AUTO_TEST_CASE(text_reader_reads_plain_and_gzip_lines) {
    TempDir t;
    const std::string long_field(200000, 'x');  // straddles the 64 KiB read buffer
    const std::string text = "a\tb\t\r\n  c  d \n\n" + long_field + "\nlast";
    const std::vector<std::string> expect{"a\tb\t", "  c  d ", "", long_field, "last"};
    for (const fs::path& p : {t.write("plain.txt", text), t.write_gz("packed.txt.gz", text)}) {
        TextReader in(p);
        std::string_view line;
        std::vector<std::string> got;
        while (in.next_line(line)) {
            got.emplace_back(line);
            BOOST_TEST(in.line_number() == got.size());
        }
        BOOST_TEST(got == expect, p);
        BOOST_TEST(!in.next_line(line));
    }
    BOOST_TEST(split("a\t\tb\t", '\t') == (std::vector<std::string_view>{"a", "", "b", ""}));
    BOOST_TEST(split_whitespace(" 2  YAL001C\tYBR002W 0.5 ") ==
               (std::vector<std::string_view>{"2", "YAL001C", "YBR002W", "0.5"}));
    TextReader dummy(t.write("one.txt", "x\n"));
    BOOST_TEST(split_quoted(R"("1","say ""hi""",,x,"")", ',', dummy) ==
               (std::vector<std::string>{"1", "say \"hi\"", "", "x", ""}));
    BOOST_TEST(split_quoted("a,", ',', dummy) == (std::vector<std::string>{"a", ""}));

    // A missing file and a truncated gzip name the file (and the line the damage was met on).
    expect_io_error([&] { TextReader r(t.dir / "absent.txt"); }, t.dir / "absent.txt", 0, "cannot open");
    std::string many;
    for (int i = 0; i < 20000; ++i) many += "line " + std::to_string(i * 7919) + "\n";
    const fs::path gz = t.write_gz("cut.gz", many);
    fs::resize_file(gz, fs::file_size(gz) / 2);
    expect_io_error(
        [&] {
            TextReader r(gz);
            std::string_view l;
            while (r.next_line(l)) {
            }
        },
        gz, 0, "truncated gzip stream");
}

BOOST_AUTO_TEST_CASE(gene_universe_matches_the_sgd_annotation) {
    const GeneUniverse& u = universe();
    BOOST_TEST(u.size() == 6607);
    // Sorted by systematic name (torchcell's SortedSet order); positions from Python's sorted().
    BOOST_TEST(u.name(0) == "Q0010");
    BOOST_TEST(u.name(1) == "Q0017");
    BOOST_TEST(u.name(6606) == "YPR204W");
    BOOST_TEST(u.index("YAL001C") == 28);
    BOOST_TEST(u.index("RAD52") == 4594);  // standard name -> YML032C
    BOOST_TEST(u.name(4594) == "YML032C");
    BOOST_TEST(u.standard_name(4594) == "RAD52");
    BOOST_TEST(u.index("rad52") == 4594);  // case-insensitive fallback
    BOOST_TEST(u.index("MF(ALPHA)2") == u.index("YGL089C"));
    BOOST_TEST(!u.contains("YFL056C"));  // a STRING protein absent from R64-4-1
    BOOST_CHECK_EXCEPTION(u.index("NOTAGENE"), Error,
                          [](const Error& e) { return std::string(e.what()).find("'NOTAGENE'") != std::string::npos; });
    MappingReport rep;
    const auto rows = u.indices({"ACE2", "NOTAGENE", "YBR158W"}, Unknown::skip, &rep);
    BOOST_TEST(rows == (std::vector<index_t>{u.index("YLR131C"), u.index("AMN1")}));
    BOOST_TEST(rep.records == 3u);
    BOOST_TEST(rep.skipped == 1u);
    BOOST_TEST(rep.unknown_names.at("NOTAGENE") == 1u);
    BOOST_CHECK_THROW(u.indices({"ACE2", "NOTAGENE"}), Error);

    // File order keeps the table's (chromosomal) order.
    const auto f = GeneUniverse::from_table(data().genes_table(), GeneOrder::file);
    BOOST_TEST(f.name(0) == "YAL069W");
    BOOST_TEST(f.name(2) == "YAL068C");

    // The GFF it was derived from gives the same genes and standard names, plus aliases.
    const auto g = GeneUniverse::from_gff(data().genome_gff());
    BOOST_TEST(g.names() == u.names());
    bool same_std = true;
    for (index_t i = 0; i < u.size(); ++i) same_std = same_std && g.standard_name(i) == u.standard_name(i);
    BOOST_TEST(same_std);
    BOOST_TEST(g.index("FUN51") == g.index("YAL062W"));  // GFF: ID=YAL062W;gene=GDH3;Alias=GDH3,FUN51,...
    BOOST_TEST(g.index("TDA8") == g.index("YAL064C-A"));
    BOOST_TEST(!u.contains("FUN51"));  // the table has no aliases
}

BOOST_AUTO_TEST_CASE(gene_graph_csr_matches_the_dense_definition) {
    // Duplicates, a self-edge, a one-way edge and an isolated row (4).
    const std::vector<Edge> e{{0, 1}, {0, 1}, {0, 3}, {2, 2}, {3, 0}, {1, 2}, {0, 2}, {1, 2}};
    const index_t n = 5;
    for (bool sym : {false, true})
        for (bool loops : {false, true}) {
            const GeneGraph g(n, e, {sym, loops});
            check_csr(g);
            // Dense reference: A[i][j] = 1 for every given edge (spec: duplicates collapse to 1).
            std::vector<std::vector<int>> A(n, std::vector<int>(n, 0));
            for (const Edge& x : e) {
                A[x.src][x.dst] = 1;
                if (sym) A[x.dst][x.src] = 1;
            }
            if (loops)
                for (index_t i = 0; i < n; ++i) A[i][i] = 1;
            index_t nnz = 0;
            for (auto& r : A)
                for (int a : r) nnz += a;
            BOOST_TEST(g.nnz() == nnz);
            BOOST_TEST(g.duplicates() == static_cast<index_t>(e.size() * (sym ? 2 : 1)) + (loops ? n : 0) - nnz);
            const auto vd = g.normalized_values<double>();
            const auto vf = g.normalized_values<float>();
            bool exact = true;
            for (index_t i = 0; i < n; ++i) {
                double sd = 0;
                float sf = 0;
                for (index_t j = 0; j < n; ++j) {
                    sd += A[i][j];
                    sf += static_cast<float>(A[i][j]);
                }
                BOOST_TEST(g.degree(i) == static_cast<index_t>(sd));
                for (index_t j = 0; j < n; ++j) {
                    BOOST_TEST(g.has_edge(i, j) == (A[i][j] == 1));
                    if (A[i][j] == 0) continue;
                    const auto k = static_cast<std::size_t>(
                        std::lower_bound(g.col().begin() + g.row_ptr()[i], g.col().begin() + g.row_ptr()[i + 1], j) -
                        g.col().begin());
                    // torch: A / (A.sum(1, keepdim=True) + 1e-10), in each dtype.
                    exact = exact && vd[k] == 1.0 / (sd + 1e-10) && vf[k] == 1.0f / (sf + static_cast<float>(1e-10));
                }
            }
            BOOST_TEST(exact);
            BOOST_TEST(g.rows_with_edges() == (loops ? std::vector<index_t>{0, 1, 2, 3, 4} : std::vector<index_t>{0, 1, 2, 3}));
        }
    const GeneGraph d(n, e);
    BOOST_TEST(!d.has_edge(2, 1));  // directed as given
    BOOST_TEST(d.has_edge(2, 2));
    BOOST_TEST(std::abs(d.normalized_values()[0] - 1.0 / 3.0) < 1e-9);  // row 0 = {1, 2, 3}
    BOOST_CHECK_THROW(GeneGraph(n, std::vector<Edge>{{0, 5}}), ShapeError);
    BOOST_CHECK_THROW(GeneGraph(n, std::vector<Edge>{{-1, 0}}), ShapeError);
    const GeneGraph empty;
    BOOST_TEST(empty.nnz() == 0);
    BOOST_TEST(empty.row_ptr().size() == 1u);
}

BOOST_AUTO_TEST_CASE(string_actions_give_one_graph_per_mode) {
    const auto& all = string_edges();
    // Rows per mode (SOURCES.md) and distinct edges between universe genes (Python over the file).
    const std::map<std::string, std::pair<std::size_t, index_t>> expect{
        {"reaction", {338662, 116990}}, {"binding", {211170, 208868}},  {"catalysis", {183844, 100740}},
        {"activation", {21634, 18480}}, {"inhibition", {6778, 5628}},   {"ptmod", {6394, 5846}},
        {"expression", {546, 524}}};
    const std::map<std::string, index_t> rows_with_edges{{"reaction", 2131}, {"binding", 5199},   {"catalysis", 2059},
                                                         {"activation", 1335}, {"inhibition", 599}, {"ptmod", 779},
                                                         {"expression", 318}};
    BOOST_TEST(all.size() == 7u);
    BOOST_TEST(string_modes().size() == 7u);
    for (const std::string& mode : string_modes()) {
        BOOST_TEST_CONTEXT("mode " << mode) {
            const EdgeList& el = all.at(mode);
            BOOST_TEST(el.report.records == expect.at(mode).first);
            BOOST_TEST(el.report.kept + el.report.skipped == el.report.records);
            const GeneGraph g(universe().size(), el.edges);
            BOOST_TEST(g.nnz() == expect.at(mode).second);
            BOOST_TEST(g.num_rows_with_edges() == rows_with_edges.at(mode));
            check_csr(g);
            BOOST_TEST(symmetric(g));  // STRING lists every pair in both orientations
            BOOST_TEST(GeneGraph(universe().size(), el.edges, {true, false}).nnz() == g.nnz());
        }
    }
    // 19 of the 5,288 STRING proteins are not in R64-4-1; their rows are skipped.
    BOOST_TEST(all.at("binding").report.skipped == 98u);
    BOOST_TEST(all.at("activation").report.skipped == 2u);
    BOOST_TEST(all.at("reaction").report.skipped == 0u);
    BOOST_TEST(all.at("binding").report.unknown_names.size() == 19u);  // all 19 occur in binding rows
    BOOST_TEST(all.at("binding").report.unknown_names.at("YFL056C") == 6u);  // awk: 6 binding rows name it
    // grep: "4932.Q0045\t4932.Q0050\tbinding\t\tf\tf\t900" (first data line).
    const GeneUniverse& u = universe();
    const GeneGraph b(u.size(), all.at("binding").edges);
    BOOST_TEST(b.has_edge(u.index("Q0045"), u.index("Q0050")));
    BOOST_TEST(b.has_edge(u.index("Q0050"), u.index("Q0045")));
    // The per-mode overload and the filters: a_is_acting = t rows are a directed subset.
    const auto acting = read_string_actions(data().string_actions(), u, "expression", {0, true});
    BOOST_TEST(acting.report.records == 168u + 83u);  // expression rows with a_is_acting = t (awk)
    const GeneGraph directed(u.size(), acting.edges);
    BOOST_TEST(!symmetric(directed));
    bool subset = true;
    const GeneGraph expression(u.size(), all.at("expression").edges);
    for (const Edge& x : directed.edges()) subset = subset && expression.has_edge(x.src, x.dst);
    BOOST_TEST(subset);
    BOOST_CHECK_THROW(read_string_actions(data().string_actions(), u, "telepathy"), IoError);
}

BOOST_AUTO_TEST_CASE(yeastract_is_a_directed_tf_target_graph) {
    const GeneUniverse& u = universe();
    const EdgeList el = read_yeastract(data().yeastract(), u);
    BOOST_TEST(el.report.records == 9487u);
    BOOST_TEST(el.report.skipped == 143u);
    BOOST_TEST(el.report.kept == 9344u);
    BOOST_TEST(el.report.unknown_names.count("FLO8") == 1u);  // FLO8 is no standard name in R64-4-1
    const GeneGraph g(u.size(), el.edges);
    check_csr(g);
    BOOST_TEST(g.nnz() == 9344);
    BOOST_TEST(g.num_rows_with_edges() == 122);  // the TFs that map
    const index_t ace2 = u.index("YLR131C"), amn1 = u.index("YBR158W");
    BOOST_TEST(g.has_edge(ace2, amn1));  // row 2: "2","Ace2p","AMN1"
    BOOST_TEST(!g.has_edge(amn1, ace2));
    BOOST_TEST(g.degree(ace2) == 35);
    // The reference data path: self-loops give every row degree >= 1 and Ã rows summing to 1.
    const GeneGraph s(u.size(), el.edges, {false, true});
    check_csr(s);
    BOOST_TEST(s.nnz() == 15918);  // 9344 edges, 33 of them already self-loops, + 6607 loops
    BOOST_TEST(s.num_rows_with_edges() == u.size());
    BOOST_TEST(GeneGraph(u.size(), el.edges, {true, false}).nnz() == 18637);
    const auto vf = s.normalized_values<float>();
    BOOST_TEST(s.degree(ace2) == 36);  // 35 targets (not itself) + the loop
    BOOST_TEST(s.normalized_values<float>()[static_cast<std::size_t>(s.row_ptr()[ace2])] == 1.0f / 36.0f);

    // With the GFF's aliases a few more YEASTRACT names map.
    const auto ga = GeneUniverse::from_gff(data().genome_gff());
    const EdgeList ea = read_yeastract(data().yeastract(), ga);
    BOOST_TEST(ea.report.kept >= el.report.kept);
    BOOST_TEST(ea.report.kept + ea.report.skipped == 9487u);
}

BOOST_AUTO_TEST_CASE(go_slim_gene_sets) {
    const GeneUniverse& u = universe();
    const auto all = read_go_slim(data().go_slim(), u);
    BOOST_TEST(all.report.records == 55514u);
    BOOST_TEST(all.report.kept == 48372u);
    BOOST_TEST(all.report.skipped == 7142u);  // complexes, tRNA, snoRNA, ... genes
    BOOST_TEST(all.report.unknown_names.count("R0010W") == 1u);  // FLP1 on the 2-micron plasmid
    BOOST_TEST(all.rows_without_term == 0u);
    std::map<char, int> per_aspect;
    for (const GeneSet& s : all.sets) ++per_aspect[s.aspect];
    BOOST_TEST(per_aspect['P'] == 131);
    BOOST_TEST(per_aspect['F'] == 44);
    BOOST_TEST(per_aspect['C'] == 509);
    BOOST_TEST(all.sets.front().id == "GO:0000003");
    BOOST_TEST(all.sets.front().genes.size() == 44u);
    const auto it = std::find_if(all.sets.begin(), all.sets.end(), [](const GeneSet& s) { return s.id == "GO:0006281"; });
    BOOST_REQUIRE(it != all.sets.end());
    BOOST_TEST(it->name == "DNA repair");
    BOOST_TEST(it->aspect == 'P');
    BOOST_TEST(it->genes.size() == 242u);
    BOOST_TEST(std::binary_search(it->genes.begin(), it->genes.end(), u.index("RAD52")));
    BOOST_TEST(std::is_sorted(it->genes.begin(), it->genes.end()));

    const auto p = read_go_slim(data().go_slim(), u, {"P", 5, 500});
    BOOST_TEST(p.sets.size() == 120u);
    BOOST_TEST(p.filtered_out == all.sets.size() - 120u);
    for (const GeneSet& s : p.sets) BOOST_TEST((s.aspect == 'P' && s.genes.size() >= 5u && s.genes.size() <= 500u));
    BOOST_CHECK_THROW(read_go_slim(data().go_slim(), u, {"X"}), IoError);
}

BOOST_AUTO_TEST_CASE(dcell_gi_labels_and_genes) {
    const GeneUniverse& u = universe();
    const auto tr = read_gi_labels(data().gi_train("GO:0006281"), u);
    BOOST_TEST(tr.records.size() == 8783u);
    BOOST_TEST(tr.report.skipped == 0u);
    // First and last lines: "2 YLR035C YML060W 0.0447", "2 YGL094C YDL154W -0.0014".
    BOOST_TEST(tr.records.front().genes == (std::vector<index_t>{4084, 4622}));
    BOOST_TEST(tr.records.front().label == 0.0447);
    BOOST_TEST(tr.records.back().genes == (std::vector<index_t>{2181, 946}));
    BOOST_TEST(tr.records.back().label == -0.0014);
    double sum = 0, lo = 1, hi = -1;
    std::vector<index_t> genes;
    for (const auto& r : tr.records) {
        sum += r.label;
        lo = std::min(lo, r.label);
        hi = std::max(hi, r.label);
        genes.insert(genes.end(), r.genes.begin(), r.genes.end());
    }
    std::sort(genes.begin(), genes.end());
    BOOST_TEST(std::abs(sum - (-144.542)) < 1e-9);
    BOOST_TEST(lo == -0.8355);
    BOOST_TEST(hi == 0.4246);
    const auto distinct = std::unique(genes.begin(), genes.end()) - genes.begin();
    BOOST_TEST(distinct == 162);
    BOOST_TEST(read_gi_labels(data().gi_train("GO_0000790"), u).records.size() == 5092u);

    const auto q = read_gi_labels(data().gi_query("GO:0006281"), u, {false});
    BOOST_TEST(q.records.size() == 1390u);
    BOOST_TEST(std::isnan(q.records.front().label));
    BOOST_TEST(q.records.front().genes == (std::vector<index_t>{u.index("YLL002W"), u.index("YLR032W")}));

    BOOST_TEST(tr.report.duplicates == 0u);  // no pair twice, in either order

    // costanzo_2016_genes.txt: 15 ORFs outside the universe (strict by default: an error at the
    // first, line 45). Unknown::skip reads it and counts them.
    MappingReport rep;
    const auto cg = read_gene_list(data().costanzo_genes(), u, Unknown::skip, &rep);
    BOOST_TEST(rep.records == 4111u);
    BOOST_TEST(cg.size() == 4096u);
    BOOST_TEST(rep.skipped == 15u);
    BOOST_TEST(rep.duplicates == 0u);
    BOOST_TEST(rep.unknown_names.count("YER109C") == 1u);
    BOOST_TEST(cg.front() == u.index("YBR177C"));
    BOOST_TEST(std::set<index_t>(cg.begin(), cg.end()).size() == cg.size());
    expect_io_error([&] { read_gene_list(data().costanzo_genes(), u); }, data().costanzo_genes(), 45, "gene 'YIL171W' is not in the universe");
}

BOOST_AUTO_TEST_CASE(dcell_topologies) {
    const GeneUniverse& u = universe();
    const auto t = read_dcell_topology(data().dcell_topology("GO:0006281"), u);
    BOOST_TEST(t.terms.size() == 21u);
    BOOST_TEST(t.terms[t.root].id == "GO:0006281");
    BOOST_TEST(t.genes_under(t.root).size() == 162u);
    BOOST_TEST(t.report.skipped == 0u);
    for (std::size_t k = 0; k < t.terms.size(); ++k) BOOST_TEST(t.genes_under(k).size() == t.terms[k].declared_genes, t.terms[k].id);
    // GO:0006303 (double-strand break repair via NHEJ) has two parents in this DAG.
    const std::size_t nhej = t.find("GO:0006303");
    BOOST_REQUIRE(nhej < t.terms.size());
    std::size_t parents = 0;
    for (const auto& term : t.terms) parents += std::count(term.children.begin(), term.children.end(), nhej);
    BOOST_TEST(parents == 2u);
    // The 162 genes under the root are the genes of the GI file of the same term.
    const auto gi = read_gi_labels(data().gi_train("GO:0006281"), u);
    std::set<index_t> gi_genes;
    for (const auto& r : gi.records) gi_genes.insert(r.genes.begin(), r.genes.end());
    const auto under = t.genes_under(t.root);
    BOOST_TEST((std::set<index_t>(under.begin(), under.end()) == gi_genes));
    const auto c = read_dcell_topology(data().dcell_topology("GO_0000790"), u);
    BOOST_TEST(c.terms.size() == 11u);
    BOOST_TEST(c.genes_under(c.root).size() == 124u);
}

BOOST_AUTO_TEST_CASE(malformed_files_name_the_file_and_line) {
    TempDir t;
    const GeneUniverse& u = universe();
    const std::string sh = "item_id_a\titem_id_b\tmode\taction\tis_directional\ta_is_acting\tscore\n";
    const std::string ok = "4932.YAL001C\t4932.YBR158W\tbinding\t\tf\tf\t900\n";
    auto p = t.write_gz("s1.txt.gz", sh + ok + "4932.YAL001C\t4932.YBR158W\tbinding\tf\tf\t900\n");
    expect_io_error([&] { read_string_actions(p, u); }, p, 3, "expected 7 tab-separated fields, found 6");
    p = t.write("s2.txt", sh + ok + ok + "4932.YAL001C\t4932.YBR158W\tbinding\t\tf\tf\t9x\n");
    expect_io_error([&] { read_string_actions(p, u); }, p, 4, "score must be an integer");
    p = t.write("s3.txt", sh + "9606.YAL001C\t4932.YBR158W\tbinding\t\tf\tf\t900\n");
    expect_io_error([&] { read_string_actions(p, u); }, p, 2, "'9606.YAL001C'");
    p = t.write("s4.txt", "protein1 protein2 score\n");
    expect_io_error([&] { read_string_actions(p, u); }, p, 1, "header");

    p = t.write("y.csv", "\"\",\"TF\",\"TG\"\n\"1\",\"Ace2p\",\"AMN1\"\n\"2\",\"Ace2p,\"DSE1\"\n");
    expect_io_error([&] { read_yeastract(p, u); }, p, 3, "unexpected character 'D' after a closing quote");
    p = t.write("y2.csv", "\"\",\"TF\",\"TG\"\n\"1\",\"Ace2p\"\n");
    expect_io_error([&] { read_yeastract(p, u); }, p, 2, "expected 3 comma-separated fields, found 2");

    p = t.write("go.tab", "YAL001C\tTFC3\tS000000001\tP\tDNA repair\tGO:0006281\tORF|Verified\n"
                          "YAL001C\tTFC3\tS000000001\tQ\tDNA repair\tGO:0006281\tORF|Verified\n");
    expect_io_error([&] { read_go_slim(p, u); }, p, 2, "aspect (column 4) must be P, F or C, found 'Q'");
    p = t.write("go2.tab", "YAL001C\tTFC3\tS000000001\tP\tDNA repair\t6281\tORF|Verified\n");
    expect_io_error([&] { read_go_slim(p, u); }, p, 1, "GOID");

    p = t.write("gi.txt", "2 YLR035C YML060W 0.0447\n\n2 YLR035C 0.1\n");
    expect_io_error([&] { read_gi_labels(p, u); }, p, 3, "gene count 2 needs 4 fields");
    p = t.write("gi2.txt", "2 YLR035C YML060W 0.0447\n2 YLR035C NOTAGENE 0.1\n");
    expect_io_error([&] { read_gi_labels(p, u); }, p, 2, "gene 'NOTAGENE' is not in the universe");
    const auto lenient = read_gi_labels(p, u, {true, Unknown::skip});
    BOOST_TEST(lenient.records.size() == 1u);
    BOOST_TEST(lenient.report.skipped == 1u);
    p = t.write("gi3.txt", "YLR035C YML060W nan\n");
    expect_io_error([&] { read_gi_labels(p, u); }, p, 1, "label 'nan' is not a finite number");
    p = t.write("genes.txt", "YAL001C\nYAL002W YAL003W\n");
    expect_io_error([&] { read_gene_list(p, u); }, p, 2, "one gene name per line");

    p = t.write("table.tsv", "systematic_name\tstandard_name\nYAL001C\tTFC3\nYAL002W\tVPS8\nYAL001C\t\n");
    expect_io_error([&] { GeneUniverse::from_table(p); }, p, 4, "duplicate systematic name 'YAL001C' (first on line 2)");
    p = t.write_gz("g.gff.gz", "##gff-version 3\nchrI\tSGD\tgene\t1\t9\t.\t+\t.\tName=X;gene=ABC1\n");
    expect_io_error([&] { GeneUniverse::from_gff(p); }, p, 2, "gene feature without an ID");
}

BOOST_AUTO_TEST_CASE(gi_records_become_perturbation_batches) {
    std::vector<io::GiRecord> recs{{{4, 9}, 0.1}, {{7}, -0.2}, {{2, 2, 5}, 0.0}};
    const std::vector<std::size_t> pick{2, 0};
    const PerturbationBatch b = io::gi_batch(recs, pick);
    BOOST_TEST((b.offsets == std::vector<index_t>{0, 3, 5}));
    BOOST_TEST((b.indices == std::vector<index_t>{2, 2, 5, 4, 9}));
    BOOST_TEST(io::gi_batch(recs).batch_size() == 3);
    const std::vector<std::size_t> bad{3};
    BOOST_CHECK_THROW(io::gi_batch(recs, bad), ShapeError);
}

BOOST_AUTO_TEST_SUITE_END()
