#pragma once
// GeneEmbedding: the CGT embedding policy (docs/cell_graph_transformer.md): X = [cls; E] ∈ R^{(N+1)×d}, CLS at row 0,
// no positional encoding.
//  - Learned (cfg.gene_feature_dim == 0): E = gene_embedding.weight [N, d] ~ N(0, 0.02).
//  - Precomputed gene features F [N, f] (cfg.gene_feature_dim = f, set_gene_features()): the features
//    REPLACE the learned embedding (there is then no gene_embedding parameter; the spec gives no
//    other rule). f == d: E = F. f != d: E = projection(F) with projection = Linear(f,d) → LayerNorm →
//    GELU(erf) → Dropout → Linear(d,d) → LayerNorm, named feature_projection.{0,1,4,5} as the
//    indices of an nn.Sequential. F is a constant (no gradient).
//  - cls_token [1, d] ~ N(0, 0.02).
//  - forward(ctx) -> X [N+1, d]; backward(dX) ASSIGNS every parameter gradient (no input gradient).
#include <cstdint>
#include <optional>
#include <string>
#include "celltx/backend/ops.hpp"
#include "celltx/core/context.hpp"
#include "celltx/core/parameter.hpp"
#include "celltx/core/rng.hpp"
#include "celltx/nn/activation.hpp"
#include "celltx/nn/dropout.hpp"
#include "celltx/nn/init.hpp"
#include "celltx/nn/layer_norm.hpp"
#include "celltx/nn/linear.hpp"
#include "celltx/policies/cgt_config.hpp"

namespace celltx {

struct GeneEmbedding {
    static constexpr const char* name = "GeneEmbedding";

    template <Scalar T, Backend B = cpu>
    class module {
    public:
        /// The feature projection Linear(f,d) → LayerNorm → GELU → Dropout → Linear(d,d) → LayerNorm.
        struct Projection {
            nn::Linear<T, B> in;        // feature_projection.0
            nn::LayerNorm<T, B> norm1;  // feature_projection.1
            nn::Activation<T, B> gelu{ActivationKind::gelu};
            nn::Dropout<T, B> drop;
            nn::Linear<T, B> out;       // feature_projection.4
            nn::LayerNorm<T, B> norm2;  // feature_projection.5
        };

        module() = default;
        explicit module(const CgtConfig& cfg) : n_(cfg.num_genes), d_(cfg.d_model), f_(cfg.gene_feature_dim) {
            require(cfg.num_genes >= 1 && cfg.d_model >= 1 && cfg.gene_feature_dim >= 0,
                    "GeneEmbedding: needs N >= 1, d >= 1, feature width >= 0 (got {}, {}, {})", cfg.num_genes, cfg.d_model,
                    cfg.gene_feature_dim);
            cls_token = Parameter<T, B>(Shape{1, d_});
            if (f_ == 0) gene_embedding = Parameter<T, B>(Shape{n_, d_});
            if (f_ != 0 && f_ != d_)
                projection.emplace(Projection{nn::Linear<T, B>(f_, d_), nn::LayerNorm<T, B>(d_), nn::Activation<T, B>(ActivationKind::gelu),
                                              nn::Dropout<T, B>(cfg.dropout, dropout_stream), nn::Linear<T, B>(d_, d_),
                                              nn::LayerNorm<T, B>(d_)});
        }

        index_t num_genes() const noexcept { return n_; }
        index_t d_model() const noexcept { return d_; }
        /// Whether the gene rows come from precomputed features (set_gene_features) instead of a table.
        bool uses_features() const noexcept { return f_ != 0; }

        /// The reference's initialisation: gene_embedding then cls_token from N(0, 0.02); the
        /// projection as PyTorch's nn.Linear / nn.LayerNorm defaults.
        void reset_parameters(Generator& g) {
            if (f_ == 0) init::normal(gene_embedding.value, g, 0.0, 0.02);
            init::normal(cls_token.value, g, 0.0, 0.02);
            if (projection) {
                projection->in.reset_parameters(g);
                projection->norm1.reset_parameters(g);
                projection->out.reset_parameters(g);
                projection->norm2.reset_parameters(g);
            }
        }

        /// The precomputed features F [N, f] (f = cfg.gene_feature_dim), kept by value.
        void set_gene_features(Tensor<T, B> features) {
            require(f_ != 0, "GeneEmbedding: gene features given but the config has gene_feature_dim = 0");
            require(features.rank() == 2 && features.size(0) == n_ && features.size(1) == f_,
                    "GeneEmbedding: gene features {} are not [{}, {}]", features.shape(), n_, f_);
            features_ = std::move(features);
        }

        /// X [N+1, d]: row 0 the CLS token, rows 1..N the genes.
        Tensor<T, B> forward(const Context& ctx = {}) {
            auto X = Tensor<T, B>::uninitialized(Shape{n_ + 1, d_});
            copy(cls_token.value.cview(), X.view().slice(0, 1));
            const TensorView<T, B> genes = X.view().slice(1, n_);
            if (f_ == 0) {
                copy(gene_embedding.value.cview(), genes);
                return X;
            }
            require(features_.numel() > 0, "GeneEmbedding: gene_feature_dim = {} but set_gene_features() was not called", f_);
            if (!projection) {
                copy(features_.cview(), genes);
                return X;
            }
            Projection& p = *projection;
            Tensor<T, B> h = p.in.forward(features_.cview(), ctx);
            h = p.norm1.forward(h.cview(), ctx);
            h = p.gelu.forward(h.cview(), ctx);
            h = p.drop.forward(h.cview(), ctx);
            h = p.out.forward(h.cview(), ctx);
            h = p.norm2.forward(h.cview(), ctx);
            copy(h.cview(), genes);
            return X;
        }

        /// dX [N+1, d] -> parameter gradients (assigned).
        void backward(ConstView<T, B> dX) {
            require(dX.rank() == 2 && dX.size(0) == n_ + 1 && dX.size(1) == d_, "GeneEmbedding::backward: dX {} is not [{}, {}]",
                    dX.shape(), n_ + 1, d_);
            copy(dX.slice(0, 1), cls_token.grad_for_backward().view());
            const ConstView<T, B> dgenes = dX.slice(1, n_);
            if (f_ == 0) {
                copy(dgenes, gene_embedding.grad_for_backward().view());
                return;
            }
            if (!projection) return;
            Projection& p = *projection;
            const Shape s{n_, d_};
            Tensor<T, B> a(s), b(s);
            p.norm2.backward(dgenes, a.view());
            p.out.backward(a.cview(), b.view());
            a.zero();
            p.drop.backward(b.cview(), a.view());
            b.zero();
            p.gelu.backward(a.cview(), b.view());
            a.zero();
            p.norm1.backward(b.cview(), a.view());
            p.in.backward(a.cview(), TensorView<T, B>{});  // the features are constants
        }

        template <class F>
        void visit_parameters(F&& f, const std::string& prefix = "") {
            if (f_ == 0) f(join_name(prefix, "gene_embedding.weight"), gene_embedding);
            f(join_name(prefix, "cls_token"), cls_token);
            if (projection) {
                projection->in.visit_parameters(f, join_name(prefix, "feature_projection.0."));
                projection->norm1.visit_parameters(f, join_name(prefix, "feature_projection.1."));
                projection->out.visit_parameters(f, join_name(prefix, "feature_projection.4."));
                projection->norm2.visit_parameters(f, join_name(prefix, "feature_projection.5."));
            }
        }

        Parameter<T, B> gene_embedding;  ///< [N, d]; absent (empty) with gene features
        Parameter<T, B> cls_token;       ///< [1, d]
        std::optional<Projection> projection;

    private:
        static constexpr std::uint64_t dropout_stream = 0x67656E655F656D62ull;  // "gene_emb"

        index_t n_ = 0, d_ = 0, f_ = 0;
        Tensor<T, B> features_;
    };
};

} // namespace celltx
