#pragma once
// The CUDA backend: ops::kernels<cuda> gathers the GPU's kernel families (cuBLAS, kernels of our
// own); compiled by nvcc only (backend/ops.hpp includes it when __CUDACC__ is defined). Every op of
// backend/ops.hpp has a CUDA overload here, in float and double; docs/cuda.md describes each.
#include "celltx/backend/cuda/attention.cuh"
#include "celltx/backend/cuda/dense.cuh"
#include "celltx/backend/cuda/elementwise.cuh"
#include "celltx/backend/cuda/indexing.cuh"
#include "celltx/backend/cuda/memory.hpp"
#include "celltx/backend/cuda/norm.cuh"
#include "celltx/backend/cuda/optimizer.cuh"
#include "celltx/backend/cuda/pairwise.cuh"
#include "celltx/backend/cuda/ragged_attention.cuh"
#include "celltx/backend/cuda/reduction.cuh"

namespace celltx::ops {

template <>
struct kernels<cuda> : cuda_kernels::dense,
                       cuda_kernels::elementwise,
                       cuda_kernels::normalization,
                       cuda_kernels::indexing,
                       cuda_kernels::attention,
                       cuda_kernels::ragged_attention,
                       cuda_kernels::pairwise,
                       cuda_kernels::reduction,
                       cuda_kernels::optimizer {};

} // namespace celltx::ops
