// EXPECT: required for the satisfaction of 'ParameterVisitable<M, T, B>' \[with M = NotAModule
// A type without visit_parameters is not a module: parameter_count must reject it by concept name.
#include "celltx/core/concepts.hpp"

struct NotAModule {
    int weight = 0;
};

int main() {
    NotAModule m;
    return static_cast<int>(celltx::parameter_count<float>(m));
}
