// Both model families train on the GPU: the training steps of testing/model_parity.hpp (the CGT
// with dropout, a graph regulariser, a propagation layer and all four readouts under the masked
// multi-task loss; the State model with grouped KV heads, Sinkhorn + energy, the confidence token,
// the gene decoder, the batch embedding and L1; each followed by a clipped AdamW step) run on cuda in
// float from the same weights, batch and seed as on the CPU, so with the same dropout masks. The
// loss, every output, every gradient and every stepped weight must lie within twice the CPU's own
// float-vs-double difference (plus a small floor) of the CPU double run. Also: the GPU step repeats
// bit for bit, safetensors load into and save from the device, and no device memory is left behind.
// Exit 77 (ctest: skipped) without a CUDA device.
#include <cstdio>
#include <filesystem>
#include <string>
#include "celltx/backend/ops.hpp"
#include "celltx/io/state_dict.hpp"
#include "celltx/testing/model_parity.hpp"

using namespace celltx;

namespace {

int failures = 0;

void expect(bool ok, const std::string& what, double value, double bound) {
    std::printf("%-64s %s (%.3e vs bound %.3e)\n", what.c_str(), ok ? "ok" : "FAILED", value, bound);
    if (!ok) ++failures;
}

void against_the_cpu(const char* model, const testing::ModelRun& gpu, const testing::ModelRun& cpu_float, const testing::ModelRun& cpu_double) {
    std::string where_cpu, where_gpu, where_pair;
    const double e_cpu = testing::compare_runs(cpu_float, cpu_double, &where_cpu);
    const double e_gpu = testing::compare_runs(gpu, cpu_double, &where_gpu);
    const double e_pair = testing::compare_runs(gpu, cpu_float, &where_pair);
    std::printf("%s: CPU float vs double %.3e (at %s); GPU float vs CPU double %.3e (at %s); GPU vs CPU float %.3e (at %s); loss %.9g vs %.9g\n",
                model, e_cpu, where_cpu.c_str(), e_gpu, where_gpu.c_str(), e_pair, where_pair.c_str(), gpu.loss, cpu_double.loss);
    const double bound = 2.0 * e_cpu + 1e-5;
    expect(e_gpu <= bound, std::string(model) + " step on the GPU within 2x the CPU float error", e_gpu, bound);
}

/// A State model saved on the CPU loads onto the GPU, predicts the same, and saves the same bytes.
void state_dict_round_trip() {
    StateConfig c;
    c.input_dim = c.output_dim = 10;
    c.pert_dim = 3;
    c.hidden = 16;
    c.n_encoder_layers = c.n_decoder_layers = 2;
    c.cell_set_len = 6;
    c.backbone.layers = 1;
    c.backbone.heads = 2;
    c.backbone.intermediate = 24;
    StateTransition<float, cpu, LlamaBackbone, EnergyLoss, ConfidenceToken> host(c);
    Generator g(11);
    host.reset_parameters(g);
    const auto dir = std::filesystem::temp_directory_path();
    const auto a = dir / "celltx_gpu_state_a.safetensors", b = dir / "celltx_gpu_state_b.safetensors";
    io::save_state_dict(host, a);

    StateTransition<float, cuda, LlamaBackbone, EnergyLoss, ConfidenceToken> dev(c);
    const io::LoadReport r = io::load_state_dict(dev, a);
    expect(r.missing.empty() && r.unexpected.empty() && !r.loaded.empty(), "load_state_dict into a cuda model", static_cast<double>(r.loaded.size()),
           0);
    io::save_state_dict(dev, b);
    const io::SafetensorsFile fa(a), fb(b);
    bool same = fa.tensors().size() == fb.tensors().size();
    for (const auto& t : fa.tensors()) same = same && fa.load_values<float>(t.name) == fb.load_values<float>(t.name);
    expect(same, "save_state_dict from the GPU gives the CPU's values", 0, 0);

    Tensor<float> pert(Shape{2, 6, 3}), ctrl = Tensor<float>::uninitialized(Shape{2, 6, 10});
    for (index_t i = 0; i < 12; ++i) pert[i * 3 + i % 3] = 1.0f;
    for (index_t i = 0; i < ctrl.numel(); ++i) ctrl[i] = static_cast<float>(g.normal());
    const Tensor<float> ph = host.forward(pert.cview(), ctrl.cview()).pred;
    const Tensor<float> pd = to_host(dev.forward(pert.to<cuda>().cview(), ctrl.to<cuda>().cview()).pred);
    double e = 0.0, scale = 0.0;
    for (index_t i = 0; i < ph.numel(); ++i) e = std::max(e, static_cast<double>(std::abs(ph[i] - pd[i]))), scale = std::max(scale, static_cast<double>(std::abs(ph[i])));
    expect(e <= 1e-5 * std::max(scale, 1.0), "the loaded GPU model predicts as the CPU model", e, 1e-5 * std::max(scale, 1.0));
    std::filesystem::remove(a);
    std::filesystem::remove(b);
}

} // namespace

int main() try {
    if (!cuda_device_available()) {
        std::puts("no CUDA device: skipped");
        return 77;
    }
    std::printf("device: %s\n", cuda_device_properties().name);
    const std::size_t live_before = memory_stats<cuda>().live.load();
    {
        const testing::ModelRun gpu = testing::cgt_scenario<float, cuda>();
        against_the_cpu("CGT", gpu, testing::cgt_scenario<float, cpu>(), testing::cgt_scenario<double, cpu>());
        const double again = testing::compare_runs(testing::cgt_scenario<float, cuda>(), gpu);
        expect(again == 0.0, "CGT step on the GPU repeats bit for bit", again, 0.0);
    }
    {
        const testing::ModelRun gpu = testing::state_scenario<float, cuda>();
        against_the_cpu("State", gpu, testing::state_scenario<float, cpu>(), testing::state_scenario<double, cpu>());
        const double again = testing::compare_runs(testing::state_scenario<float, cuda>(), gpu);
        expect(again == 0.0, "State step on the GPU repeats bit for bit", again, 0.0);
    }
    state_dict_round_trip();
    const std::size_t live_after = memory_stats<cuda>().live.load();
    expect(live_after == live_before, "no device memory left behind", static_cast<double>(live_after), static_cast<double>(live_before));
    std::printf("peak device memory of the tests: %.1f MB\n", static_cast<double>(memory_stats<cuda>().peak.load()) / 1e6);
    std::printf("%s\n", failures ? "FAILED" : "all passed");
    return failures ? 1 : 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "test_models_cuda: %s\n", e.what());
    return 1;
}
