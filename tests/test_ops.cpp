// The cross-backend op harness (testing/op_harness.hpp) on the backends every machine has, one
// ctest entry each, in one translation unit (the float64 reference and the naive implementations
// are compiled once):
//  - ops_cpu: every op in float and double against the float64 CPU reference and a naive
//    implementation, every backward op against finite differences, the harness's list of ops
//    against the ops backend/ops.hpp declares, and the harness itself on a broken backend;
//  - ops_emulated_device (testing/emulated_device.hpp): device semantics above the backend, the
//    CPU's kernels below. Every op runs through the harness, and both model families train on it
//    with every option; since the kernels are the CPU's, every output, gradient and updated weight
//    must be bit-identical to the CPU's. This proves that the models reach a device's memory only
//    through ops and host staging: a real device backend needs nothing but its storage_traits and
//    its ops::kernels.
#include <boost/test/unit_test.hpp>
#include <algorithm>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include "celltx/testing/emulated_device.hpp"
#include "celltx/testing/model_parity.hpp"
#include "celltx/testing/op_harness.hpp"

using namespace celltx;
using celltx::testing::emulated_device;

namespace {

/// A backend whose column sum forgets the last row, and which lacks scale_rows: everything else is the CPU's.
struct broken_backend {
    static constexpr const char* name = "broken";
    static constexpr bool is_device = false;
};

} // namespace

namespace celltx {
template <>
struct storage_traits<broken_backend> : storage_traits<cpu> {};
template <>
struct ops::kernels<broken_backend> : ops::kernels<cpu> {
    template <Scalar T>
    static void column_sum(const T* X, index_t rows, index_t n, T* out, bool accumulate) {
        ops::kernels<cpu>::column_sum(X, rows > 1 ? rows - 1 : rows, n, out, accumulate);
    }
    static void scale_rows(auto&&...) = delete;
};
} // namespace celltx

namespace {

void expect_clean(const testing::OpHarnessReport& r, const char* what) {
    BOOST_TEST_MESSAGE(what << ": " << r.summary());
    BOOST_TEST(r.ok(), what << ": " << r.summary());
    BOOST_TEST(r.not_implemented.empty(), what << ": the CPU backend lacks ops");
}

} // namespace

BOOST_AUTO_TEST_SUITE(ops_cpu)

BOOST_AUTO_TEST_CASE(every_op_is_registered_once) {
    std::ifstream in(std::string(CELLTX_INCLUDE_DIR) + "/celltx/backend/ops.hpp");
    BOOST_REQUIRE(in.good());
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    std::set<std::string> declared;
    const std::regex re(R"(concept provides_(\w+) =)");
    for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator(); ++it) declared.insert((*it)[1]);
    const std::vector<std::string> names = testing::registered_op_names();
    const std::set<std::string> registered(names.begin(), names.end());
    BOOST_TEST(registered.size() == names.size(), "an op is registered twice");
    for (const auto& d : declared) BOOST_TEST(registered.count(d) == 1u, "op " << d << " is declared in backend/ops.hpp but not in the harness");
    for (const auto& r : registered) BOOST_TEST(declared.count(r) == 1u, "the harness registers " << r << ", which backend/ops.hpp does not declare");
    BOOST_TEST(declared.size() >= 40u);
}

BOOST_AUTO_TEST_CASE(every_op_in_float) { expect_clean(testing::run_op_harness<cpu, float>(), "cpu float"); }

BOOST_AUTO_TEST_CASE(every_op_in_double) { expect_clean(testing::run_op_harness<cpu, double>(), "cpu double"); }

BOOST_AUTO_TEST_CASE(every_backward_against_finite_differences) {
    const auto r = testing::check_backward_ops();
    BOOST_TEST_MESSAGE(r.summary());
    for (const auto& c : r.checks) BOOST_TEST_MESSAGE(c.op << " [" << c.label << "]: " << c.error);
    BOOST_TEST(r.ok(), r.summary());
}

BOOST_AUTO_TEST_CASE(the_harness_catches_a_wrong_kernel_and_a_missing_one) {
    static_assert(!ops::provides_scale_rows<broken_backend, float> && ops::provides_column_sum<broken_backend, float>);
    const auto r = testing::run_op_harness<broken_backend, float>();
    BOOST_TEST(!r.ok());
    std::set<std::string> failed;
    for (const auto* c : r.failures()) failed.insert(c->op);
    BOOST_TEST((failed == std::set<std::string>{"column_sum"}), r.summary());
    BOOST_TEST((r.not_implemented == std::vector<std::string>{"scale_rows (float)"}), r.summary());
}

BOOST_AUTO_TEST_SUITE_END()

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

BOOST_AUTO_TEST_SUITE_END()
