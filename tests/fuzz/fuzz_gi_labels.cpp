// libFuzzer target: the DCell pair files (io::read_gi_labels, labeled and unlabeled, strict and
// lenient) and gene lists (io::read_gene_list).
#include <cstdint>
#include "celltx/io/gi_labels.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace celltx::io;
    const auto path = celltx_fuzz::write_input(data, size, ".txt");
    const auto& u = celltx_fuzz::universe();
    celltx_fuzz::run_parser([&] { (void)read_gi_labels(path, u); });
    celltx_fuzz::run_parser([&] { (void)read_gi_labels(path, u, {false, Unknown::skip, Duplicates::keep_first}); });
    celltx_fuzz::run_parser([&] {
        MappingReport r;
        (void)read_gene_list(path, u, Unknown::skip, &r);
    });
    return 0;
}
