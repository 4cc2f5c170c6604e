// libFuzzer target: io::read_yeastract (quoted CSV).
#include <cstdint>
#include "celltx/io/graph_sources.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto path = celltx_fuzz::write_input(data, size, ".csv");
    celltx_fuzz::run_parser([&] { (void)celltx::io::read_yeastract(path, celltx_fuzz::universe()); });
    return 0;
}
