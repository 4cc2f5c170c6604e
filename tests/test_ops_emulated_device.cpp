// The emulated device backend (testing/emulated_device.hpp): device semantics above the backend,
// the CPU's kernels below. Every op runs through the harness as on any backend, and both model
// families train on it with every option; since the kernels are the CPU's, every output, gradient
// and updated weight must be bit-identical to the CPU's. What this proves: the models reach a
// device's memory only through ops and host staging, so a real device backend needs nothing but
// its storage_traits and its ops::kernels.
#include <boost/test/unit_test.hpp>
#include <unistd.h>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string_view>
#include <string>
#include "celltx/io/state_dict.hpp"
#include "celltx/testing/emulated_device.hpp"
#include "celltx/testing/model_parity.hpp"
#include "celltx/testing/op_harness.hpp"

using namespace celltx;
using celltx::testing::emulated_device;

BOOST_AUTO_TEST_SUITE(ops_emulated_device)

BOOST_AUTO_TEST_CASE(every_op_in_float_and_double) {
    for (const auto& r : {testing::run_op_harness<emulated_device, float>(), testing::run_op_harness<emulated_device, double>()}) {
        BOOST_TEST_MESSAGE(r.summary());
        BOOST_TEST(r.ok(), r.summary());
        BOOST_TEST(r.not_implemented.empty());
    }
}

BOOST_AUTO_TEST_CASE(cgt_training_step_is_bit_identical_to_the_cpu) {
    std::string where;
    const double e = testing::compare_runs(testing::cgt_scenario<float, emulated_device>(), testing::cgt_scenario<float, cpu>(), &where);
    BOOST_TEST(e == 0.0, "largest difference " << e << " at " << where);
}

BOOST_AUTO_TEST_CASE(state_training_step_is_bit_identical_to_the_cpu) {
    std::string where;
    const double e = testing::compare_runs(testing::state_scenario<float, emulated_device>(), testing::state_scenario<float, cpu>(), &where);
    BOOST_TEST(e == 0.0, "largest difference " << e << " at " << where);
}

BOOST_AUTO_TEST_CASE(the_scenarios_measure_float_error_against_double) {
    // The yardstick of the GPU's model tests: float against double on the CPU.
    std::string where;
    const double cgt = testing::compare_runs(testing::cgt_scenario<float, cpu>(), testing::cgt_scenario<double, cpu>(), &where);
    BOOST_TEST_MESSAGE("CGT step, float vs double: " << cgt << " at " << where);
    // Adam normalises each gradient entry, so an entry whose exact value is 0 (the key bias, to
    // which softmax is blind) steps by ±lr on its rounding noise: about 2e-3 of the weights here.
    BOOST_TEST(cgt < 1e-2);
    const double st = testing::compare_runs(testing::state_scenario<float, cpu>(), testing::state_scenario<double, cpu>(), &where);
    BOOST_TEST_MESSAGE("State step, float vs double: " << st << " at " << where);
    BOOST_TEST(st < 1e-3);
}

BOOST_AUTO_TEST_CASE(state_dicts_load_into_and_save_from_a_device_model) {
    // The device path of io::load_state_dict / save_state_dict (read on the host and upload; download
    // and write), as the CUDA backend takes it.
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
    const auto a = dir / ("celltx_emulated_a_" + std::to_string(::getpid()) + ".safetensors");
    const auto b = dir / ("celltx_emulated_b_" + std::to_string(::getpid()) + ".safetensors");
    io::save_state_dict(host, a);
    StateTransition<float, emulated_device, LlamaBackbone, EnergyLoss, ConfidenceToken> dev(c);
    const io::LoadReport r = io::load_state_dict(dev, a);
    BOOST_TEST(r.missing.empty());
    BOOST_TEST(r.unexpected.empty());
    std::size_t names = 0;
    host.visit_parameters([&](std::string_view, Parameter<float>&) { ++names; }, std::string{});
    BOOST_TEST(r.loaded.size() == names);
    io::save_state_dict(dev, b);
    auto bytes = [](const std::filesystem::path& p) {
        std::ifstream f(p, std::ios::binary);
        return std::string(std::istreambuf_iterator<char>(f), {});
    };
    BOOST_TEST(bytes(a) == bytes(b), "the device model saves the file it loaded");

    Tensor<float> pert(Shape{2, 6, 3}), ctrl = Tensor<float>::uninitialized(Shape{2, 6, 10});
    for (index_t i = 0; i < 12; ++i) pert[i * 3 + i % 3] = 1.0f;
    for (index_t i = 0; i < ctrl.numel(); ++i) ctrl[i] = static_cast<float>(g.normal());
    const Tensor<float> ph = host.forward(pert.cview(), ctrl.cview()).pred;
    const Tensor<float> pd = to_host(dev.forward(pert.to<emulated_device>().cview(), ctrl.to<emulated_device>().cview()).pred);
    BOOST_TEST(std::equal(ph.data(), ph.data() + ph.numel(), pd.data()));
    std::filesystem::remove(a);
    std::filesystem::remove(b);
}

BOOST_AUTO_TEST_SUITE_END()
