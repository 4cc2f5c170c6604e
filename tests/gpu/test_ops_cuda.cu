// The CUDA backend's ops: the cross-backend op harness (testing/op_harness.hpp) runs every op, in
// float and double, against the float64 CPU reference and the naive implementation; then a layer
// (nn::Linear, forward and backward) through the tensors' device memory, and the device's errors.
// Exit 77 (ctest: skipped) without a CUDA device. With --require-all (as ctest runs it) an op the
// backend does not provide fails the test; the static_assert below already refuses to compile then.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <tuple>
#include "celltx/backend/ops.hpp"
#include "celltx/nn/linear.hpp"
#include "celltx/testing/op_harness.hpp"

using namespace celltx;

namespace {

// Every op but the optional (fused) ones, which the callers compose from the others where a backend lacks them.
template <class Op>
constexpr bool provided = testing::harness_detail::optional_op<Op> || (Op::template available<cuda, float> && Op::template available<cuda, double>);
static_assert(std::apply([](auto... op) { return (provided<decltype(op)> && ...); }, testing::OpTests{}),
              "the CUDA backend must provide every required op of backend/ops.hpp in float and double");

int failures = 0;

void expect(bool ok, const std::string& what, double a, double b) {
    std::printf("%-56s %s (%.3e vs bound %.3e)\n", what.c_str(), ok ? "ok" : "FAILED", a, b);
    if (!ok) ++failures;
}

Tensor<double> random_tensor(Shape s, std::uint64_t seed) {
    Tensor<double> t(s);
    CounterRng rng(seed);
    for (index_t i = 0; i < t.numel(); ++i) t[i] = rng.normal(static_cast<std::uint64_t>(i));
    return t;
}

template <class T>
double max_abs_diff(const Tensor<T>& a, const Tensor<double>& b) {
    double m = 0;
    for (index_t i = 0; i < a.numel(); ++i) m = std::max(m, std::abs(static_cast<double>(a[i]) - b[i]));
    return m;
}

/// nn::Linear<float, cuda> against the float CPU layer and a double reference: within twice the
/// float CPU error (plus a tiny floor).
void linear_layer() {
    const index_t rows = 257, in = 96, out = 80;
    nn::Linear<double> ref(in, out);
    Generator g(3);
    ref.reset_parameters(g);
    auto x = random_tensor(Shape{rows, in}, 9);
    auto dy = random_tensor(Shape{rows, out}, 10);
    auto y_ref = ref.forward(x.cview());
    Tensor<double> dx_ref(x.shape());
    ref.backward(dy.cview(), dx_ref.view());

    nn::Linear<float> cpu_lin(in, out);
    cpu_lin.weight.value = ref.weight.value.cast<float>();
    cpu_lin.bias.value = ref.bias.value.cast<float>();
    auto y_cpu = cpu_lin.forward(x.cast<float>().cview());
    Tensor<float> dx_cpu(x.shape());
    cpu_lin.backward(dy.cast<float>().cview(), dx_cpu.view());

    nn::Linear<float, cuda> gpu(in, out);
    gpu.weight.value = cpu_lin.weight.value.to<cuda>();
    gpu.bias.value = cpu_lin.bias.value.to<cuda>();
    auto xd = x.cast<float>().to<cuda>();
    auto y_gpu = to_host(gpu.forward(xd.cview()));
    Tensor<float, cuda> dxd(x.shape());
    gpu.backward(dy.cast<float>().to<cuda>().cview(), dxd.view());
    const auto dx_gpu = to_host(dxd), dw_gpu = to_host(gpu.weight.grad), db_gpu = to_host(gpu.bias.grad);

    double e_cpu = max_abs_diff(y_cpu, y_ref), e_gpu = max_abs_diff(y_gpu, y_ref);
    expect(e_gpu <= 2 * e_cpu + 1e-6, "Linear forward within 2x the CPU's float error", e_gpu, 2 * e_cpu + 1e-6);
    e_cpu = max_abs_diff(dx_cpu, dx_ref), e_gpu = max_abs_diff(dx_gpu, dx_ref);
    expect(e_gpu <= 2 * e_cpu + 1e-6, "Linear input gradient within 2x", e_gpu, 2 * e_cpu + 1e-6);
    e_cpu = max_abs_diff(cpu_lin.weight.grad, ref.weight.grad), e_gpu = max_abs_diff(dw_gpu, ref.weight.grad);
    expect(e_gpu <= 2 * e_cpu + 1e-5, "Linear weight gradient within 2x", e_gpu, 2 * e_cpu + 1e-5);
    e_cpu = max_abs_diff(cpu_lin.bias.grad, ref.bias.grad), e_gpu = max_abs_diff(db_gpu, ref.bias.grad);
    expect(e_gpu <= 2 * e_cpu + 1e-5, "Linear bias gradient within 2x", e_gpu, 2 * e_cpu + 1e-5);
}

/// Device memory: counted by memory_stats<cuda>, freed in stream order, copies round-trip.
void device_memory() {
    auto& stats = memory_stats<cuda>();
    const std::size_t before = stats.live.load();
    {
        auto h = random_tensor(Shape{1000, 3}, 4).cast<float>();
        const Tensor<float, cuda> d = h.to<cuda>();
        expect(stats.live.load() == before + 12000, "a device tensor counts its bytes", static_cast<double>(stats.live.load() - before), 12000);
        const Tensor<float, cuda> d2 = d;  // device-to-device copy
        const Tensor<float> back = to_host(d2);
        expect(std::memcmp(back.data(), h.data(), h.bytes()) == 0, "upload, device copy, download round-trip", 0, 0);
        const auto big = Tensor<float>::zeros(Shape{3, 1 << 20});  // larger than a staging buffer
        expect(to_host(big.to<cuda>()).numel() == big.numel(), "a large upload", 0, 0);
    }
    expect(stats.live.load() == before, "freed tensors leave no live bytes", static_cast<double>(stats.live.load()), static_cast<double>(before));
}

/// Errors name the call, the file and the line; a bad graph term is refused with the CPU's message.
void errors() {
    std::string msg;
    try {
        auto t = Tensor<float, cuda>::uninitialized(Shape{index_t{1} << 45});  // 128 TiB
    } catch (const Error& e) {
        msg = e.what();
    }
    expect(msg.find("could not allocate") != std::string::npos, "an impossible allocation throws celltx::Error", 0, 0);
    msg.clear();
    try {
        CELLTX_CUDA_CHECK(cudaSetDevice(1 << 20));  // no such device (an error that leaves the context usable)
    } catch (const Error& e) {
        msg = e.what();
    }
    std::printf("  %s\n", msg.c_str());
    expect(msg.find("cudaSetDevice") != std::string::npos && msg.find("test_ops_cuda.cu") != std::string::npos, "a failed call names itself and its line",
           0, 0);
    msg.clear();
    try {
        const ops::AttentionDims d{1, 2, 3, 1, 1, 8, 0.0};
        const auto rp = from_host<index_t, cuda>(std::vector<index_t>{0, 1, 2});
        const auto col = from_host<index_t, cuda>(std::vector<index_t>{0, 7});  // key 7 of 3
        const auto w = Tensor<float, cuda>::zeros(Shape{2});
        const auto q = Tensor<float, cuda>::zeros(Shape{16}), k = Tensor<float, cuda>::zeros(Shape{24});
        auto out = Tensor<float, cuda>::zeros(Shape{2});
        const ops::GraphTerm<float> term{0, std::span<const index_t>(rp.data(), 3), std::span<const index_t>(col.data(), 2),
                                         std::span<const float>(w.data(), 2)};
        ops::attention_edge_scores(cuda{}, d, ops::HeadsRef<const float>{q.data(), 8}, ops::HeadsRef<const float>{k.data(), 8}, term, out.data());
    } catch (const ShapeError& e) {
        msg = e.what();
    }
    expect(msg.find("column of edge 1 is out of range") != std::string::npos, "a graph term with a bad column is refused", 0, 0);
}

} // namespace

int main(int argc, char** argv) try {
    if (!cuda_device_available()) {
        std::puts("no CUDA device: skipped");
        return 77;
    }
    const bool require_all = argc > 1 && std::strcmp(argv[1], "--require-all") == 0;
    std::printf("device: %s\n", cuda_device_properties().name);
    // In double, nvcc's contraction of a·b + c into FMAs and its exp/log give element errors of up to a few
    // hundred units of rounding where the CPU's naive code and reference agree to the bit.
    testing::OpHarnessOptions in_double;
    in_double.ulp_floor = 256.0;
    for (const auto& [scalar, r] : {std::pair{"float", testing::run_op_harness<cuda, float>()},
                                    std::pair{"double", testing::run_op_harness<cuda, double>(in_double)}}) {
        std::printf("cuda %s: %s\n", scalar, r.summary().c_str());
        failures += !r.ok() || (require_all && !r.missing_ops.empty());
    }
    linear_layer();
    device_memory();
    errors();
    std::printf("%s\n", failures ? "FAILED" : "all passed");
    return failures ? 1 : 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "test_ops_cuda: %s\n", e.what());
    return 1;
}
