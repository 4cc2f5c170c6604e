#pragma once
// ConfidenceLoss: how the State Transition model trains its confidence token, the MSE between the
// confidence prediction [B] (or [B, 1]) and target_scale (10) × the per-set main loss, taken as
// data (detached: no gradient flows into the loss). The loss may also be one value for every set
// (state's original code uses the batch loss). The model weighs the result (0.01).
//  - forward(conf, loss) -> rank-0 tensor mean_b (conf_b − scale·loss_b)²;
//  - backward(dloss, dconf) ADDS 2·dloss·(conf_b − scale·loss_b)/B.
#include <cmath>
#include "celltx/backend/ops.hpp"
#include "celltx/core/context.hpp"
#include "celltx/core/tensor.hpp"

namespace celltx::loss {

template <Scalar T, Backend B = cpu>
class ConfidenceLoss {
public:
    explicit ConfidenceLoss(double target_scale = 10.0) : scale_(target_scale) {}

    double target_scale() const noexcept { return scale_; }

    Tensor<T, B> forward(ConstView<T, B> conf, ConstView<T, B> loss, const Context& = {}) {
        const index_t n = conf.numel();
        require(n > 0 && (conf.rank() == 1 || (conf.rank() == 2 && conf.size(1) == 1)),
                "ConfidenceLoss: the prediction {} must be [B] or [B, 1]", conf.shape());
        require(loss.numel() == n || loss.numel() == 1, "ConfidenceLoss: {} loss values for {} predictions", loss.numel(), n);
        shape_ = conf.shape();
        // One value per set: computed on the host.
        const Tensor<T, cpu> c = to_host(conf), l = to_host(loss);
        err_ = Tensor<T, cpu>::uninitialized(Shape{n});
        const T scale = static_cast<T>(scale_);
        double sum = 0.0;
        for (index_t b = 0; b < n; ++b) {
            err_[b] = c[b] - scale * l[l.numel() == 1 ? 0 : b];
            sum += static_cast<double>(err_[b]) * static_cast<double>(err_[b]);
        }
        const T v = static_cast<T>(sum / static_cast<double>(n));
        return from_host<T, B>(&v, Shape{});
    }

    void backward(ConstView<T, B> dloss, TensorView<T, B> dconf) {
        require(dloss.numel() == 1, "ConfidenceLoss::backward: dloss {} must hold one value", dloss.shape());
        if (!dconf.data()) return;
        require(dconf.shape() == shape_, "ConfidenceLoss::backward: dconf {} does not match the prediction {}", dconf.shape(), shape_);
        const T g = static_cast<T>(2.0 * static_cast<double>(read_value(dloss)) / static_cast<double>(err_.numel()));
        const Tensor<T, B> err = err_.template to<B>();
        ops::axpby(B{}, err.numel(), g, err.data(), T(1), dconf.data());
    }

private:
    double scale_ = 10.0;
    Shape shape_;
    Tensor<T, cpu> err_;  // conf − scale·loss per set, on the host
};

} // namespace celltx::loss
