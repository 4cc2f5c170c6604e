// The emulated device backend (testing/emulated_device.hpp): device semantics above the backend,
// the CPU's kernels below. Every op runs through the harness as on any backend, and both model
// families train on it with every option; since the kernels are the CPU's, every output, gradient
// and updated weight must be bit-identical to the CPU's. What this proves: the models reach a
// device's memory only through ops and host staging, so a real device backend needs nothing but
// its storage_traits and its ops::kernels.
#include <boost/test/unit_test.hpp>
#include <string>
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

BOOST_AUTO_TEST_SUITE_END()
