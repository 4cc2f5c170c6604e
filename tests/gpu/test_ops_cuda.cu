// The cross-backend op harness on the CUDA backend (testing/op_harness.hpp): every op the backend
// provides, in float and double, against the float64 CPU reference and the naive implementation.
// Exit 77 (ctest: skipped) without a CUDA device. The ops the backend does not provide are listed;
// with --require-all they fail the test.
#include <cstdio>
#include <cstring>
#include "celltx/backend/ops.hpp"
#include "celltx/testing/op_harness.hpp"

int main(int argc, char** argv) {
    using namespace celltx;
    if (!cuda_device_available()) {
        std::puts("no CUDA device: skipped");
        return 77;
    }
    const bool require_all = argc > 1 && std::strcmp(argv[1], "--require-all") == 0;
    int failures = 0;
    for (const auto& [scalar, r] : {std::pair{"float", testing::run_op_harness<cuda, float>()}, std::pair{"double", testing::run_op_harness<cuda, double>()}}) {
        std::printf("cuda %s: %s\n", scalar, r.summary().c_str());
        failures += !r.ok() || (require_all && !r.not_implemented.empty());
    }
    return failures ? 1 : 0;
}
