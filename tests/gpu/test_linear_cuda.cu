// GPU check of the CUDA backend: nn::Linear<T, cuda> against the CPU layer and a float64 reference.
// Rule (after ggml/llm.c): the CUDA error against float64 must stay within twice the error of a
// naive float32 CPU implementation (plus a tiny absolute slack). Exits 77 (ctest: skipped) without a GPU.
#include <cmath>
#include <cstdio>
#include "celltx/backend/ops.hpp"
#include "celltx/nn/linear.hpp"

using namespace celltx;

static int failures = 0;
static void expect(bool ok, const char* what, double a, double b) {
    std::printf("%-48s %s (%.3e vs bound %.3e)\n", what, ok ? "ok" : "FAILED", a, b);
    if (!ok) ++failures;
}

static Tensor<double> random_tensor(Shape s, std::uint64_t seed) {
    Tensor<double> t(s);
    CounterRng rng(seed);
    for (index_t i = 0; i < t.numel(); ++i) t[i] = rng.normal(static_cast<std::uint64_t>(i));
    return t;
}

template <class T>
static double max_abs_diff(const Tensor<T>& a, const Tensor<double>& b) {
    double m = 0;
    for (index_t i = 0; i < a.numel(); ++i) m = std::max(m, std::abs(static_cast<double>(a[i]) - b[i]));
    return m;
}

int main() {
    if (!cuda_device_available()) {
        std::printf("no CUDA device: skipped\n");
        return 77;
    }
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

    nn::Linear<float, celltx::cuda> gpu(in, out);
    gpu.weight.value = cpu_lin.weight.value.to<celltx::cuda>();
    gpu.bias.value = cpu_lin.bias.value.to<celltx::cuda>();
    auto xd = x.cast<float>().to<celltx::cuda>();
    auto y_gpu = to_host(gpu.forward(xd.cview()));
    Tensor<float, celltx::cuda> dxd(x.shape());
    gpu.backward(dy.cast<float>().to<celltx::cuda>().cview(), dxd.view());
    auto dx_gpu = to_host(dxd);
    auto dw_gpu = to_host(gpu.weight.grad);
    auto db_gpu = to_host(gpu.bias.grad);

    const double slack = 1e-6;
    double e_cpu = max_abs_diff(y_cpu, y_ref), e_gpu = max_abs_diff(y_gpu, y_ref);
    expect(e_gpu <= 2 * e_cpu + slack, "forward within 2x naive float32 error", e_gpu, 2 * e_cpu + slack);
    e_cpu = max_abs_diff(dx_cpu, dx_ref); e_gpu = max_abs_diff(dx_gpu, dx_ref);
    expect(e_gpu <= 2 * e_cpu + slack, "input gradient within 2x naive error", e_gpu, 2 * e_cpu + slack);
    e_cpu = max_abs_diff(cpu_lin.weight.grad, ref.weight.grad); e_gpu = max_abs_diff(dw_gpu, ref.weight.grad);
    expect(e_gpu <= 2 * e_cpu + 1e-5, "weight gradient within 2x naive error", e_gpu, 2 * e_cpu + 1e-5);
    e_cpu = max_abs_diff(cpu_lin.bias.grad, ref.bias.grad); e_gpu = max_abs_diff(db_gpu, ref.bias.grad);
    expect(e_gpu <= 2 * e_cpu + 1e-5, "bias gradient within 2x naive error", e_gpu, 2 * e_cpu + 1e-5);
    std::printf("%d passed, %d failed\n", 4 - failures, failures);
    return failures ? 1 : 0;
}
