// libFuzzer target: io::read_string_actions on the raw bytes (plain text, or gzip when the input
// starts with the gzip magic: corrupt, truncated and trailing-garbage streams).
#include <cstdint>
#include "celltx/io/graph_sources.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto path = celltx_fuzz::write_input(data, size, ".txt");
    celltx_fuzz::run_parser([&] { (void)celltx::io::read_string_actions(path, celltx_fuzz::universe()); });
    celltx_fuzz::run_parser([&] { (void)celltx::io::read_string_actions(path, celltx_fuzz::universe(), "binding", {700, true}); });
    return 0;
}
