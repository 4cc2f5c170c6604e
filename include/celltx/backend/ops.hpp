#pragma once
// Every backend's ops, declared before any layer template that calls them (a qualified call such as
// ops::gemm(B{}, ...) only sees the overloads declared at the layer's definition). The CUDA ops
// come in when the translation unit is compiled by nvcc.
#include "celltx/backend/cpu/activation.hpp"
#include "celltx/backend/cpu/embedding.hpp"
#include "celltx/backend/cpu/gemm.hpp"
#include "celltx/backend/cpu/norm.hpp"
#include "celltx/backend/cpu/rowwise.hpp"
#if defined(__CUDACC__)
#include "celltx/backend/cuda/gemm.hpp"
#include "celltx/backend/cuda/rowwise.cuh"
#endif
