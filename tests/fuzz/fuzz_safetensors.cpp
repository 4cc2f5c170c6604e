// libFuzzer target: io::SafetensorsFile (header, layout, every dtype conversion) and load_state_dict.
#include <cstdint>
#include "celltx/io/safetensors.hpp"
#include "celltx/io/state_dict.hpp"
#include "celltx/nn/linear.hpp"
#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto path = celltx_fuzz::write_input(data, size, ".safetensors");
    celltx_fuzz::run_parser([&] {
        const celltx::io::SafetensorsFile f(path);
        for (const auto& t : f.tensors()) {
            (void)f.load<float>(t.name);
            (void)f.load<double>(t.name);
            celltx_fuzz::run_parser([&] { (void)f.load_values<std::int64_t>(t.name); });
            celltx_fuzz::run_parser([&] { (void)f.load_values<std::uint8_t>(t.name); });
        }
        (void)f.metadata();
        celltx_fuzz::run_parser([&] { (void)f.info("weight"); });
        // A module with parameters "weight" [3, 4] and "bias" [3]: the loader's checks on any file.
        celltx::nn::Linear<float> lin(4, 3);
        celltx_fuzz::run_parser([&] { celltx::io::load_state_dict(lin, f); });
        celltx_fuzz::run_parser([&] { celltx::io::load_state_dict(lin, f, {.strict = false}); });
    });
    return 0;
}
