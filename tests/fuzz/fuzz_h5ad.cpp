// libFuzzer target: io::read_h5ad (AnnData) and io::read_10x_h5 on the same bytes, through a file,
// as users give them. libhdf5 is not instrumented (its own memory errors are invisible to ASan,
// only its crashes are seen); what this target checks is celltx's side: every input ends in a
// result or a celltx::Error naming the file, and no HDF5 handle stays open afterwards.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <hdf5.h>
#include "celltx/io/h5ad.hpp"
#include "fuzz_common.hpp"

// libhdf5 1.10 leaks some of its metadata-cache blocks (H5FL free-list allocations) when it gives
// up on a corrupt object header. That is inside the library and cannot be prevented from celltx;
// LeakSanitizer ignores leaks of blocks that libhdf5 allocated itself (docs/reliability.md).
// Leaks of celltx's own allocations are still reported.
extern "C" const char* __lsan_default_suppressions() { return "leak:libhdf5\n"; }

namespace {
void expect_no_open_handles() {
    const ssize_t open = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
    if (open != 0) {
        std::fprintf(stderr, "fuzz_h5ad: %zd HDF5 handles are still open after the input\n", static_cast<ssize_t>(open));
        std::abort();
    }
}
} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto path = celltx_fuzz::write_input(data, size, ".h5ad");
    auto names_the_file = [&](auto&& read) {
        try {
            read();
        } catch (const celltx::Error& e) {
            if (std::string(e.what()).find(path.string()) == std::string::npos) {
                std::fprintf(stderr, "fuzz_h5ad: an error that does not name the file: %s\n", e.what());
                std::abort();
            }
        }
    };
    names_the_file([&] {
        const celltx::io::AnnData<float> a = celltx::io::read_h5ad<float>(path);
        for (const auto& [name, column] : a.obs.columns) (void)column.labels();
        for (const auto& [name, column] : a.var.columns) (void)column.labels();
    });
    names_the_file([&] { (void)celltx::io::read_h5ad<double>(path, {.read_layers = false, .read_obsm = false}); });
    names_the_file([&] { (void)celltx::io::read_10x_h5<float>(path); });
    expect_no_open_handles();
    return 0;
}
