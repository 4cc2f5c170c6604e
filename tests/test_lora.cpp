// LoRA adapters on the State backbone's attention projections (nn/lora.hpp, the adapters in
// nn/attention.hpp, policies/backbone/lora.hpp, train/lora.hpp, io/peft.hpp):
//  - central differences of the attention layer with adapters (LLaMA q/k/v/o with grouped KV
//    heads; GPT-2 c_attn/c_proj), in evaluation and with adapter dropout in training, and of a
//    whole StateTransition model with adapters;
//  - a fresh adapter leaves the function unchanged; merging gives the unmerged function;
//  - PEFT's names and shapes; the frozen base (only adapters and the parts outside the backbone
//    train); the PEFT adapter directory round trip and its errors; PEFT's in-model key names.
#include <boost/test/unit_test.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>
#include <nlohmann/json.hpp>
#include "celltx/io/peft.hpp"
#include "celltx/models/state_transition.hpp"
#include "celltx/nn/attention.hpp"
#include "celltx/testing/gradcheck.hpp"
#include "celltx/train/adam.hpp"
#include "celltx/train/lora.hpp"

using namespace celltx;
namespace fs = std::filesystem;

namespace {

nn::MultiHeadAttention<double> attention(nn::AttentionLayout layout, index_t heads, index_t kv_heads, bool bias) {
    nn::AttentionConfig c;
    c.d_model = 12;
    c.num_heads = heads;
    c.num_kv_heads = kv_heads;
    c.bias = bias;
    c.layout = layout;
    nn::MultiHeadAttention<double> a(c);
    Generator g(3);
    a.reset_parameters(g);
    return a;
}

/// B random, so the adapters change the function (a fresh B is zero).
template <class M>
void randomise_lora_b(M& m, std::uint64_t seed) {
    CounterRng r(seed, 1);
    std::uint64_t i = 0;
    m.visit_parameters([&](const std::string& name, auto& p) {
        if (name.find("lora_B") == std::string::npos) return;
        for (index_t k = 0; k < p.value.numel(); ++k) p.value[k] = 0.3 * r.normal(i++);
    });
}

template <class T>
std::map<std::string, Shape> shapes_of(auto& model) {
    std::map<std::string, Shape> out;
    model.visit_parameters([&](const std::string& n, Parameter<T>& p) { out[n] = p.shape(); });
    return out;
}

StateConfig tiny_state(bool gpt2) {
    StateConfig c;
    c.input_dim = c.output_dim = 6;
    c.pert_dim = 3;
    c.hidden = 8;
    c.n_encoder_layers = c.n_decoder_layers = 2;
    c.dropout = 0.0;
    c.cell_set_len = 4;
    c.backbone.layers = 2;
    c.backbone.heads = 2;
    c.backbone.kv_heads = gpt2 ? 0 : 1;
    c.backbone.intermediate = gpt2 ? 0 : 12;
    return c;
}

} // namespace

BOOST_AUTO_TEST_SUITE(lora)

BOOST_AUTO_TEST_CASE(attention_adapters_gradcheck) {
    for (const auto layout : {nn::AttentionLayout::llama, nn::AttentionLayout::gpt2, nn::AttentionLayout::separate}) {
        const bool gpt2 = layout == nn::AttentionLayout::gpt2;
        BOOST_TEST_CONTEXT("layout " << static_cast<int>(layout)) {
            nn::MultiHeadAttention<double> a = attention(layout, 4, gpt2 ? 0 : 2, gpt2);
            Generator g(9);
            a.add_lora({.rank = 3, .alpha = 6.0, .dropout = 0.25}, g);
            randomise_lora_b(a, 4);
            const Tensor<double> x = testing::random_tensor(Shape{2, 5, 12}, 5);
            for (const Context ctx : {Context::eval(), Context::train(17, 3)}) {
                const auto r = testing::gradcheck_layer(a, x, ctx);
                BOOST_TEST(r.ok, (ctx.training ? "train: " : "eval: ") << r.summary());
            }
        }
    }
    // packed nn.MultiheadAttention has no PEFT target; cross-attention with adapters is refused
    nn::MultiHeadAttention<double> packed = attention(nn::AttentionLayout::packed, 2, 0, true);
    Generator g(1);
    BOOST_CHECK_THROW(packed.add_lora({.rank = 2}, g), ShapeError);
    nn::MultiHeadAttention<double> sep = attention(nn::AttentionLayout::separate, 2, 0, true);
    sep.add_lora({.rank = 2}, g);
    const Tensor<double> x = testing::random_tensor(Shape{1, 3, 12}, 2);
    BOOST_CHECK_THROW(sep.forward_cross(x.cview(), x.cview()), ShapeError);
}

BOOST_AUTO_TEST_CASE(fresh_adapters_are_identity_and_merge_is_exact) {
    for (const auto layout : {nn::AttentionLayout::llama, nn::AttentionLayout::gpt2}) {
        const bool gpt2 = layout == nn::AttentionLayout::gpt2;
        nn::MultiHeadAttention<double> a = attention(layout, 4, gpt2 ? 0 : 2, gpt2);
        const Tensor<double> x = testing::random_tensor(Shape{2, 5, 12}, 6);
        const Tensor<double> y0 = a.forward(x.cview());
        Generator g(2);
        a.add_lora({.rank = 4, .alpha = 8.0}, g);
        const Tensor<double> y1 = a.forward(x.cview());
        for (index_t i = 0; i < y0.numel(); ++i) BOOST_TEST(y1[i] == y0[i]);
        randomise_lora_b(a, 8);
        const Tensor<double> y2 = a.forward(x.cview());
        double moved = 0.0;
        for (index_t i = 0; i < y0.numel(); ++i) moved = std::max(moved, std::abs(y2[i] - y0[i]));
        BOOST_TEST(moved > 1e-2);
        a.merge_lora();
        BOOST_TEST(!a.has_lora());
        const Tensor<double> y3 = a.forward(x.cview());
        for (index_t i = 0; i < y0.numel(); ++i) BOOST_TEST(y3[i] == y2[i], boost::test_tools::tolerance(1e-12));
    }
}

BOOST_AUTO_TEST_CASE(peft_names_and_shapes) {
    using Llama = StateTransition<float, cpu, LlamaBackbone, EnergyLoss>;
    using Gpt2 = StateTransition<float, cpu, GPT2Backbone, EnergyLoss>;
    Generator g(1);
    Llama l(tiny_state(false));
    l.reset_parameters(g);
    apply_lora(l, {.rank = 2, .alpha = 4.0}, g);
    auto s = shapes_of<float>(l);
    // q: 8 → 2 heads × 4; k, v: 1 kv head × 4; o: 8 → 8
    BOOST_TEST((s.at("transformer_backbone.layers.0.self_attn.q_proj.lora_A.weight") == Shape{2, 8}));
    BOOST_TEST((s.at("transformer_backbone.layers.0.self_attn.q_proj.lora_B.weight") == Shape{8, 2}));
    BOOST_TEST((s.at("transformer_backbone.layers.1.self_attn.k_proj.lora_B.weight") == Shape{4, 2}));
    BOOST_TEST((s.at("transformer_backbone.layers.1.self_attn.v_proj.lora_A.weight") == Shape{2, 8}));
    BOOST_TEST((s.at("transformer_backbone.layers.1.self_attn.o_proj.lora_A.weight") == Shape{2, 8}));
    std::size_t adapters = 0;
    for (const auto& [n, sh] : s) adapters += is_lora_parameter(n);
    BOOST_TEST(adapters == 2u * 4u * 2u);
    Gpt2 m(tiny_state(true));
    m.reset_parameters(g);
    apply_lora(m, {.rank = 3}, g);
    s = shapes_of<float>(m);
    BOOST_TEST((s.at("transformer_backbone.h.0.attn.c_attn.lora_A.weight") == Shape{3, 8}));
    BOOST_TEST((s.at("transformer_backbone.h.0.attn.c_attn.lora_B.weight") == Shape{24, 3}));
    BOOST_TEST((s.at("transformer_backbone.h.1.attn.c_proj.lora_B.weight") == Shape{8, 3}));
    BOOST_TEST(s.count("transformer_backbone.h.0.mlp.c_proj.lora_A.weight") == 0u);  // the MLP's c_proj is not an attention projection
    adapters = 0;
    for (const auto& [n, sh] : s) adapters += is_lora_parameter(n);
    BOOST_TEST(adapters == 2u * 2u * 2u);
}

BOOST_AUTO_TEST_CASE(state_model_with_adapters_gradcheck) {
    using Model = StateTransition<double, cpu, LlamaBackbone, EnergyLoss>;
    Model m(tiny_state(false));
    Generator g(4);
    m.reset_parameters(g);
    apply_lora(m, {.rank = 2, .alpha = 2.0}, g);
    randomise_lora_b(m, 5);
    Tensor<double> pert = testing::random_tensor(Shape{2, 4, 3}, 1), ctrl = testing::random_tensor(Shape{2, 4, 6}, 2);
    for (index_t i = 0; i < ctrl.numel(); ++i) ctrl[i] = std::abs(ctrl[i]) + 1.0;
    std::vector<testing::NamedParameter> params;
    m.visit_parameters([&](const std::string& n, Parameter<double>& p) {
        if (is_lora_parameter(n)) params.emplace_back(n, &p);
    });
    BOOST_TEST(params.size() == 16u);
    const auto r = testing::gradcheck([&] { return m.forward(pert.cview(), ctrl.cview()).pred; },
                                      [&](ConstView<double> dy, std::vector<TensorView<double>>& dx) { m.backward(dy, {}, {}, dx[0], dx[1]); },
                                      {&pert, &ctrl}, params, {.tolerance = 1e-6});
    BOOST_TEST(r.ok, r.summary());
}

BOOST_AUTO_TEST_CASE(base_weights_stay_frozen) {
    using Model = StateTransition<float, cpu, GPT2Backbone, EnergyLoss>;
    Model m(tiny_state(true));
    Generator g(6);
    m.reset_parameters(g);
    apply_lora(m, {.rank = 2, .alpha = 4.0}, g);
    const train::ParameterList<float> trainable = train::lora_trainable_parameters<float>(m);
    for (const auto& [n, p] : trainable) BOOST_TEST((!n.starts_with("transformer_backbone.") || is_lora_parameter(n)), n);
    BOOST_TEST(std::any_of(trainable.begin(), trainable.end(), [](const auto& e) { return e.first == "pert_encoder.0.weight"; }));
    std::map<std::string, Tensor<float>> before;
    m.visit_parameters([&](const std::string& n, Parameter<float>& p) { before[n] = p.value; });
    train::Adam<float> adam(trainable, {.lr = 1e-2});
    const Tensor<float> pert = testing::random_tensor<float>(Shape{2, 4, 3}, 1), ctrl = testing::random_tensor<float>(Shape{2, 4, 6}, 2),
                        target = testing::random_tensor<float>(Shape{2, 4, 6}, 3);
    for (int step = 0; step < 3; ++step) {
        m.train_step(pert.cview(), ctrl.cview(), target.cview());
        adam.step();
    }
    m.visit_parameters([&](const std::string& n, Parameter<float>& p) {
        const bool same = std::equal(p.value.data(), p.value.data() + p.value.numel(), before.at(n).data());
        const bool frozen = n.starts_with("transformer_backbone.") && !is_lora_parameter(n);
        BOOST_TEST(same == frozen, n << (frozen ? " changed though frozen" : " did not train"));
    });
}

BOOST_AUTO_TEST_CASE(peft_adapter_directory) {
    using Model = StateTransition<float, cpu, LlamaBackbone, EnergyLoss>;
    Model a(tiny_state(false));
    Generator g(7);
    a.reset_parameters(g);
    const nn::LoraConfig lc{.rank = 2, .alpha = 4.0, .dropout = 0.05};
    apply_lora(a, lc, g);
    randomise_lora_b(a, 3);
    const fs::path dir = fs::temp_directory_path() / "celltx_test_lora" / "adapter";
    fs::remove_all(dir);
    io::save_lora_adapter(a, dir, lc, LlamaBackbone::name);
    const io::SafetensorsFile f(dir / "adapter_model.safetensors");
    BOOST_TEST(f.contains("base_model.model.layers.0.self_attn.q_proj.lora_A.weight"));
    BOOST_TEST(f.contains("base_model.model.layers.1.self_attn.o_proj.lora_B.weight"));
    BOOST_TEST(f.names().size() == 16u);
    std::ifstream in(dir / "adapter_config.json");
    const nlohmann::json j = nlohmann::json::parse(in);
    BOOST_TEST(j.at("peft_type").get<std::string>() == "LORA");
    BOOST_TEST(j.at("r").get<int>() == 2);
    BOOST_TEST(j.at("lora_alpha").get<double>() == 4.0);
    BOOST_TEST(j.at("target_modules").size() == 4u);
    const nn::LoraConfig back = io::read_lora_config(dir);
    BOOST_TEST(back.rank == 2);
    BOOST_TEST(back.dropout == 0.05);

    // the same base weights plus the loaded adapter predict exactly what the saved model did
    Model b(tiny_state(false));
    Generator g2(7);
    b.reset_parameters(g2);
    apply_lora(b, back, g2);
    io::load_lora_adapter(b, dir);
    const Tensor<float> pert = testing::random_tensor<float>(Shape{1, 4, 3}, 1), ctrl = testing::random_tensor<float>(Shape{1, 4, 6}, 2);
    const Tensor<float> ya = a.forward(pert.cview(), ctrl.cview()).pred, yb = b.forward(pert.cview(), ctrl.cview()).pred;
    for (index_t i = 0; i < ya.numel(); ++i) BOOST_TEST(ya[i] == yb[i]);

    // a rank mismatch, or a model without adapters, is a clear error
    Model c(tiny_state(false));
    c.reset_parameters(g2);
    BOOST_CHECK_EXCEPTION(io::load_lora_adapter(c, dir), IoError,
                          [](const IoError& e) { return std::string(e.what()).find("no LoRA adapters") != std::string::npos; });
    apply_lora(c, {.rank = 3}, g2);
    BOOST_CHECK_EXCEPTION(io::load_lora_adapter(c, dir), IoError,
                          [](const IoError& e) { return std::string(e.what()).find("has shape [2,8]") != std::string::npos; });

    // a PEFT-wrapped model's own keys map onto celltx's names
    BOOST_TEST(io::peft_to_celltx_name("transformer_backbone.base_model.model.layers.0.self_attn.q_proj.lora_A.default.weight") ==
               "transformer_backbone.layers.0.self_attn.q_proj.lora_A.weight");
    BOOST_TEST(io::peft_to_celltx_name("transformer_backbone.base_model.model.layers.0.self_attn.q_proj.base_layer.weight") ==
               "transformer_backbone.layers.0.self_attn.q_proj.weight");
    BOOST_TEST(io::peft_to_celltx_name("pert_encoder.0.weight") == "pert_encoder.0.weight");
}

BOOST_AUTO_TEST_SUITE_END()
