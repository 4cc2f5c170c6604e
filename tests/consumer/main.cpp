// Uses the installed headers: a Linear layer's forward must give the hand-computed numbers.
#include <cmath>
#include <cstdio>
#include <celltx/nn/linear.hpp>

int main() {
    celltx::nn::Linear<float> lin(2, 1);
    lin.weight.value = celltx::Tensor<float>::from(celltx::Shape{1, 2}, {2.0f, -1.0f});
    lin.bias.value = celltx::Tensor<float>::from(celltx::Shape{1}, {0.5f});
    auto x = celltx::Tensor<float>::from(celltx::Shape{2, 2}, {1.0f, 3.0f, 4.0f, 1.0f});
    auto y = lin.forward(x.cview());
    const bool ok = std::abs(y[0] - (-0.5f)) < 1e-6f && std::abs(y[1] - 7.5f) < 1e-6f;
    std::printf("consumer: y = [%g, %g] %s\n", y[0], y[1], ok ? "OK" : "WRONG");
    return ok ? 0 : 1;
}
