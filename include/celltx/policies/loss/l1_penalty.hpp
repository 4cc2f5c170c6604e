#pragma once
// L1Penalty: the State Transition model's regulariser λ · mean|pred − ctrl| over every element
// (state's `regularization`: keeps predictions near their control cells).
//  - forward(pred, ctrl) -> rank-0 tensor; saves pred − ctrl;
//  - backward(dloss, dpred, dctrl) ADDS the (sub)gradient ±λ·dloss·sign(pred − ctrl)/numel, with
//    sign(0) = 0 as PyTorch's abs; an empty view skips one (ctrl is usually data: no gradient).
#include <cmath>
#include "celltx/backend/ops.hpp"
#include "celltx/core/context.hpp"
#include "celltx/core/tensor.hpp"

namespace celltx::loss {

template <Scalar T, Backend B = cpu>
class L1Penalty {
public:
    explicit L1Penalty(double lambda = 0.0) : lambda_(lambda) {
        require(std::isfinite(lambda), "L1Penalty: lambda {} is not finite", lambda);
    }

    double lambda() const noexcept { return lambda_; }

    Tensor<T, B> forward(ConstView<T, B> pred, ConstView<T, B> ctrl, const Context& = {}) {
        require(pred.numel() == ctrl.numel() && pred.numel() > 0, "L1Penalty: pred {} and ctrl {} differ in size (or are empty)",
                pred.shape(), ctrl.shape());
        diff_ = Tensor<T, B>::copy_of(pred);
        ops::axpby(B{}, diff_.numel(), T(-1), ctrl.data(), T(1), diff_.data());  // pred − ctrl
        const double sum = ops::sum_abs(B{}, diff_.data(), diff_.numel());
        const T v = static_cast<T>(lambda_ * (sum / static_cast<double>(pred.numel())));
        return from_host<T, B>(&v, Shape{});
    }

    void backward(ConstView<T, B> dloss, TensorView<T, B> dpred, TensorView<T, B> dctrl = {}) {
        require(dloss.numel() == 1, "L1Penalty::backward: dloss {} must hold one value", dloss.shape());
        for (auto v : {dpred, dctrl})
            require(!v.data() || v.numel() == diff_.numel(), "L1Penalty::backward: gradient {} does not match the input {}", v.shape(),
                    diff_.shape());
        const T g = static_cast<T>(lambda_ * static_cast<double>(read_value(dloss)) / static_cast<double>(diff_.numel()));
        if (dpred.data()) ops::sign_axpy(B{}, diff_.numel(), g, diff_.data(), dpred.data());
        if (dctrl.data()) ops::sign_axpy(B{}, diff_.numel(), static_cast<T>(-g), diff_.data(), dctrl.data());
    }

private:
    double lambda_ = 0.0;
    Tensor<T, B> diff_;
};

} // namespace celltx::loss
