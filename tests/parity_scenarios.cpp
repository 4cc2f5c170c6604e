// The CPU runs of the model parity scenarios (testing/model_parity.hpp), compiled once and linked
// into every test program that compares a backend with them: the test executable (the emulated
// device) and the CUDA model test, whose nvcc translation unit then instantiates only the device runs.
#define CELLTX_DEFINE_PARITY_SCENARIOS
#include "celltx/testing/model_parity.hpp"
