#pragma once
// The CUDA backend: ops::kernels<cuda> gathers the GPU's kernel families (cuBLAS, kernels of our
// own); compiled by nvcc only (backend/ops.hpp includes it when __CUDACC__ is defined). An op this
// specialisation lacks makes its provides_* concept false, so a model that needs it is rejected at
// compile time naming the op.
#include "celltx/backend/cuda/elementwise.cuh"
#include "celltx/backend/cuda/gemm.hpp"
#include "celltx/backend/cuda/memory.hpp"

namespace celltx::ops {

template <>
struct kernels<cuda> : cuda_kernels::dense, cuda_kernels::elementwise {};

} // namespace celltx::ops
