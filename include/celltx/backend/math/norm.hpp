#pragma once
// The per-row statistics and per-element formulas of LayerNorm and RMSNorm, on every backend. Row
// sums are accumulated in double whatever T is (the order of that accumulation is each backend's);
// these functions turn them into the outputs and gradients.
#include <cmath>
#include "celltx/core/host_device.hpp"

namespace celltx::math {

/// 1/sqrt(sum_sq/d + eps): LayerNorm's rstd from the sum of squared deviations (biased variance),
/// RMSNorm's from the sum of squares.
CELLTX_HOST_DEVICE inline double inverse_rms(double sum_sq, double d, double eps) { return 1.0 / std::sqrt(sum_sq / d + eps); }

/// LayerNorm's y from xhat (in double) with the affine (w, b) of its column: rounded once to T.
template <class T>
CELLTX_HOST_DEVICE inline T layer_norm_affine(double xhat, T w, T b) {
    return static_cast<T>(xhat * w + b);
}

/// LayerNorm's dx of one element: rstd·(g − mean(g) − xhat·mean(g·xhat)), g = dy·w.
CELLTX_HOST_DEVICE inline double layer_norm_input_grad(double rstd, double g, double mean_g, double xhat, double mean_gx) {
    return rstd * (g - mean_g - xhat * mean_gx);
}

/// RMSNorm's dx of one element: rstd·(g − n·mean(g·n)), g = dy·w.
CELLTX_HOST_DEVICE inline double rms_norm_input_grad(double rstd, double g, double n, double mean_gn) { return rstd * (g - n * mean_gn); }

} // namespace celltx::math
