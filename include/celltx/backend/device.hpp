#pragma once
// Choosing the backend at run time. A program is written once as a template over the backend tag
// and picks cpu or cuda from its command line (--device cpu|cuda):
//
//   template <celltx::Backend B> int run(int argc, char** argv);   // the program, on backend B
//   int main(int argc, char** argv) {
//       return celltx::main_on_device(argc, argv, [&](auto backend) { return run<decltype(backend)>(argc, argv); });
//   }
//
// main_on_device takes "--device X" / "--device=X" out of argv (so the program parses the rest as
// before), prints any celltx error as "program: message" and returns 1. The CUDA backend exists in
// a program compiled by nvcc (CMake: the source file's LANGUAGE CUDA when CELLTX_CUDA is on); in a
// program compiled by a plain C++ compiler, or on a machine without a CUDA device, --device cuda is
// an error that says so.
#include <cstdio>
#include <exception>
#include <string>
#include <string_view>
#include <fmt/format.h>
#include "celltx/core/backend.hpp"
#include "celltx/core/error.hpp"
#if defined(__CUDACC__)
#include "celltx/backend/cuda/runtime.hpp"
#endif

namespace celltx {

/// The devices a program can run on.
enum class DeviceKind { cpu, cuda };

/// Whether this translation unit has the CUDA backend (it was compiled by nvcc).
inline constexpr bool cuda_backend_compiled =
#if defined(__CUDACC__)
    true;
#else
    false;
#endif

/// The device named `name`: "cpu", or "cuda" (also "gpu").
inline DeviceKind parse_device(std::string_view name) {
    if (name == "cpu") return DeviceKind::cpu;
    if (name == "cuda" || name == "gpu") return DeviceKind::cuda;
    throw Error(fmt::format(fmt::runtime("unknown device '{}': use --device cpu or --device cuda"), name));
}

/// Takes "--device X" or "--device=X" out of argv (argc shrinks; the other arguments keep their
/// order) and returns the device it names, `fallback` when there is none.
inline DeviceKind take_device_flag(int& argc, char** argv, DeviceKind fallback = DeviceKind::cpu) {
    DeviceKind d = fallback;
    int out = 1;
    for (int i = 1; i < argc; ++i) {
        const std::string_view a = argv[i];
        if (a == "--device") {
            if (i + 1 >= argc) throw Error("--device needs a value: cpu or cuda");
            d = parse_device(argv[++i]);
        } else if (a.starts_with("--device=")) {
            d = parse_device(a.substr(9));
        } else {
            argv[out++] = argv[i];
        }
    }
    argc = out;
    argv[argc] = nullptr;
    return d;
}

/// Calls f(cpu{}) or f(cuda{}) and returns what it returns (both calls must return the same type).
/// Throws celltx::Error when cuda is asked for and this program has no CUDA backend or no device.
template <class F>
auto with_device(DeviceKind d, F&& f) {
    if (d == DeviceKind::cpu) return f(cpu{});
#if defined(__CUDACC__)
    if (!cuda_device_available())
        throw Error("--device cuda: no CUDA device is available on this machine (cudaGetDeviceCount found none); use --device cpu");
    return f(cuda{});
#else
    throw Error("--device cuda: this program was compiled without the CUDA backend; rebuild it with nvcc (CMake finds "
                "/usr/local/cuda/bin/nvcc and turns CELLTX_CUDA on) or use --device cpu");
#endif
}

/// The whole of a main(): takes --device out of argv, runs f(cpu{}) or f(cuda{}) (an int exit code),
/// and turns an exception into a message on stderr and exit code 1.
template <class F>
int main_on_device(int& argc, char** argv, F&& f, DeviceKind fallback = DeviceKind::cpu) {
    const std::string program = argc > 0 ? std::string(argv[0]) : std::string("celltx");
    try {
        const DeviceKind d = take_device_flag(argc, argv, fallback);
        return with_device(d, f);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s: %s\n", program.c_str(), e.what());
        return 1;
    }
}

} // namespace celltx
