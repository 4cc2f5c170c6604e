#pragma once
// Where the real yeast data lie: the shared data directory (never copied into the repository)
// and the file names inside it. The directory is, in order: an explicit path, the environment
// variable CELLTX_DATA_DIR, or ../shared/data (relative to the working directory, i.e. beside the
// repository when run from its root). See docs/data.md for what each file is.
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

namespace celltx::io {

struct YeastData {
    std::filesystem::path root;

    /// `dir` if not empty, else $CELLTX_DATA_DIR, else "../shared/data".
    static YeastData locate(const std::filesystem::path& dir = {}) {
        if (!dir.empty()) return {dir};
        if (const char* env = std::getenv("CELLTX_DATA_DIR"); env != nullptr && *env != '\0') return {env};
        return {std::filesystem::path("..") / "shared" / "data"};
    }

    /// The 6,607-gene table (systematic_name, standard_name, ...): the gene universe.
    std::filesystem::path genes_table() const { return root / "yeast-genome" / "yeast_genes_R64-4-1.tsv"; }
    /// SGD's GFF3 the table was derived from (adds the aliases).
    std::filesystem::path genome_gff() const {
        return root / "yeast-genome" / "saccharomyces_cerevisiae_R64-4-1_20230830_trimmed.gff.gz";
    }
    std::filesystem::path string_actions() const { return root / "yeast-graphs" / "4932.protein.actions.v11.0.txt.gz"; }
    std::filesystem::path yeastract() const { return root / "yeast-graphs" / "yeastract_tf_target.csv"; }
    std::filesystem::path go_slim() const { return root / "yeast-graphs" / "go_slim_mapping.tab"; }
    /// DCell train labels of a GO term ("GO:0006281" or "GO_0006281").
    std::filesystem::path gi_train(std::string_view go_term) const {
        return root / "yeast-gi" / ("dcell_costanzo2016_" + file_term(go_term) + "_train.txt");
    }
    /// DCell's unlabeled query pairs (only GO:0006281 has one).
    std::filesystem::path gi_query(std::string_view go_term) const {
        return root / "yeast-gi" / ("dcell_costanzo2016_" + file_term(go_term) + "_query_unlabeled.txt");
    }
    /// DCell's GO-term hierarchy of a GO term ("GO:0006281" or "GO_0006281"): io/dcell_topology.hpp.
    std::filesystem::path dcell_topology(std::string_view go_term) const {
        return root / "yeast-graphs" / ("dcell_topology_" + file_term(go_term) + ".txt");
    }
    /// Costanzo 2016's gene list: 15 of its ORFs are outside the universe (read with Unknown::skip).
    std::filesystem::path costanzo_genes() const { return root / "yeast-gi" / "costanzo_2016_genes.txt"; }

private:
    static std::string file_term(std::string_view go_term) {
        std::string s(go_term);
        for (char& c : s)
            if (c == ':') c = '_';  // the files were renamed ':' -> '_'
        return s;
    }
};

} // namespace celltx::io
