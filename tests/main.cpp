// The one Boost.Test entry point; the suites live in tests/test_*.cpp.
#define BOOST_TEST_MODULE celltx
#include <boost/test/unit_test.hpp>
