// libFuzzer target: io::read_dcell_topology (DCell's GO-term hierarchy), strict and lenient.
#include <cstdint>
#include "celltx/io/dcell_topology.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace celltx::io;
    const auto path = celltx_fuzz::write_input(data, size, ".txt");
    celltx_fuzz::run_parser([&] {
        const auto t = read_dcell_topology(path, celltx_fuzz::universe());
        (void)t.genes_under(t.root);
    });
    celltx_fuzz::run_parser([&] { (void)read_dcell_topology(path, celltx_fuzz::universe(), Unknown::skip); });
    return 0;
}
