#pragma once
// The CPU backend: ops::kernels<cpu> gathers the CPU's kernel families (Eigen, a packed AVX2/FMA
// float GEMM, OpenMP threads). This is the backend that defines what is correct; every other
// backend is tested against it (testing/op_harness.hpp).
#include "celltx/backend/cpu/attention.hpp"
#include "celltx/backend/cpu/dense_cross_attention.hpp"
#include "celltx/backend/cpu/elementwise.hpp"
#include "celltx/backend/cpu/gemm.hpp"
#include "celltx/backend/cpu/indexing.hpp"
#include "celltx/backend/cpu/norm.hpp"
#include "celltx/backend/cpu/optimizer.hpp"
#include "celltx/backend/cpu/pairwise.hpp"
#include "celltx/backend/cpu/ragged_attention.hpp"
#include "celltx/backend/cpu/reduction.hpp"

namespace celltx::ops {

template <>
struct kernels<cpu> : cpu_kernels::dense,
                      cpu_kernels::elementwise,
                      cpu_kernels::normalization,
                      cpu_kernels::indexing,
                      cpu_kernels::attention,
                      cpu_kernels::ragged_attention,
                      cpu_kernels::dense_cross_attention,
                      cpu_kernels::pairwise,
                      cpu_kernels::reduction,
                      cpu_kernels::optimizer {};

} // namespace celltx::ops
