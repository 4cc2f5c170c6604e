#pragma once
// Shared by the libFuzzer targets (tests/fuzz/fuzz_*.cpp). The parsers take file paths, so each
// input is written to a per-process temporary file first. A bad input must end in a celltx::Error
// (IoError, ShapeError): run_parser swallows those; any other exception escapes and libFuzzer
// reports it (as it reports crashes, leaks, hangs and sanitizer findings).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>
#include <unistd.h>
#include "celltx/core/error.hpp"
#include "celltx/io/gene_universe.hpp"

namespace celltx_fuzz {

/// Writes bytes to this process's temporary file `<TMPDIR>/celltx_fuzz_<pid><suffix>` (the suffix
/// keeps ".gz" or ".safetensors" visible in messages) and returns its path.
inline std::filesystem::path write_input(const void* data, std::size_t size, const std::string& suffix) {
    static const std::filesystem::path dir = [] {
        const char* t = std::getenv("TMPDIR");
        return std::filesystem::path(t != nullptr && *t != '\0' ? t : "/tmp");
    }();
    const auto path = dir / ("celltx_fuzz_" + std::to_string(::getpid()) + suffix);
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr) std::abort();  // the harness itself is broken: stop loudly
    if (size > 0 && std::fwrite(data, 1, size, f) != size) std::abort();
    std::fclose(f);
    return path;
}

/// Calls f(); a celltx::Error is a clean rejection of a bad input.
template <class F>
void run_parser(F&& f) {
    try {
        f();
    } catch (const celltx::Error&) {
    }
}

/// A 16-gene universe with standard names: enough for the seed files to map.
inline const celltx::io::GeneUniverse& universe() {
    static const celltx::io::GeneUniverse u = celltx::io::GeneUniverse::from_names(
        {"YAL001C", "YAL002W", "YBR158W", "YLR131C", "YGL035C", "YER111C", "YLR035C", "YML060W", "YGL094C", "YDL154W", "YKL067W",
         "YEL018W", "YOR346W", "YIR018W", "YDR501W", "YIL033C"},
        {"TFC3", "VPS8", "AMN1", "ACE2", "MIG1", "SWI4", "MLH2", "OGG1", "PAN2", "MSH5", "YNK1", "EAF5", "REV1", "YAP5", "PLM2", "BCY1"});
    return u;
}

} // namespace celltx_fuzz
