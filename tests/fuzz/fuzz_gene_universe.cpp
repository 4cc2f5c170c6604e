// libFuzzer target: the gene universe readers, GeneUniverse::from_table (SGD gene table) and
// GeneUniverse::from_gff (GFF3, percent escapes, aliases), then lookups of every name found.
#include <cstdint>
#include "celltx/io/gene_universe.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace celltx::io;
    const auto path = celltx_fuzz::write_input(data, size, ".tsv");
    celltx_fuzz::run_parser([&] {
        const auto u = GeneUniverse::from_table(path);
        for (celltx::index_t i = 0; i < u.size(); ++i) (void)u.find(u.standard_name(i));
    });
    celltx_fuzz::run_parser([&] {
        const auto u = GeneUniverse::from_gff(path, GeneOrder::file);
        for (const auto& n : u.names()) (void)u.index(n);
    });
    return 0;
}
