// libFuzzer target: io::read_go_slim (SGD's go_slim_mapping.tab), unfiltered and filtered.
#include <cstdint>
#include "celltx/io/gene_sets.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto path = celltx_fuzz::write_input(data, size, ".tab");
    celltx_fuzz::run_parser([&] { (void)celltx::io::read_go_slim(path, celltx_fuzz::universe()); });
    celltx_fuzz::run_parser([&] { (void)celltx::io::read_go_slim(path, celltx_fuzz::universe(), {"P", 2, 3}); });
    return 0;
}
