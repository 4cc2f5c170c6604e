#pragma once
// L1Penalty: the State Transition model's regulariser λ · mean|pred − ctrl| over every element
// (state's `regularization`: keeps predictions near their control cells).
//  - forward(pred, ctrl) -> rank-0 tensor; saves pred − ctrl;
//  - backward(dloss, dpred, dctrl) ADDS the (sub)gradient ±λ·dloss·sign(pred − ctrl)/numel, with
//    sign(0) = 0 as PyTorch's abs; an empty view skips one (ctrl is usually data: no gradient).
#include <cmath>
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
        diff_ = Tensor<T, B>::uninitialized(pred.shape());
        double sum = 0.0;
        for (index_t i = 0; i < pred.numel(); ++i) {
            diff_[i] = pred[i] - ctrl[i];
            sum += std::abs(static_cast<double>(diff_[i]));
        }
        auto out = Tensor<T, B>::uninitialized(Shape{});
        out[0] = static_cast<T>(lambda_ * (sum / static_cast<double>(pred.numel())));
        return out;
    }

    void backward(ConstView<T, B> dloss, TensorView<T, B> dpred, TensorView<T, B> dctrl = {}) {
        require(dloss.numel() == 1, "L1Penalty::backward: dloss {} must hold one value", dloss.shape());
        for (auto v : {dpred, dctrl})
            require(!v.data() || v.numel() == diff_.numel(), "L1Penalty::backward: gradient {} does not match the input {}", v.shape(),
                    diff_.shape());
        const T g = static_cast<T>(lambda_ * static_cast<double>(dloss[0]) / static_cast<double>(diff_.numel()));
        for (index_t i = 0; i < diff_.numel(); ++i) {
            const T s = diff_[i] > T(0) ? g : (diff_[i] < T(0) ? -g : T(0));
            if (dpred.data()) dpred[i] += s;
            if (dctrl.data()) dctrl[i] -= s;
        }
    }

private:
    double lambda_ = 0.0;
    Tensor<T, B> diff_;
};

} // namespace celltx::loss
