// perturbation_response: trains Arc Institute's State Transition model on real Perturb-seq data
// (.h5ad), next to the baselines State is compared with, and evaluates all of them with cell-eval's
// metrics on held-out cells; predicts and evaluates on other files. docs/perturbation_response.md
// has the data, the command lines and the figures of a real run.
//
//   perturbation_response train    [--out runs/perturbation_response] [--input FILE.h5ad] [model, training flags]
//                                  [--init CHECKPOINT [--lora RANK]] [--resume PATH] [--device cpu|cuda]
//   perturbation_response predict  --checkpoint PATH --input FILE.h5ad --out FILE.h5ad [--device cpu|cuda]
//   perturbation_response evaluate --pred FILE.h5ad --real FILE.h5ad
//   perturbation_response <command> --help
//
// train: Papalexi et al. 2021's THP-1 CRISPR screen (papalexi2021_thp1_lowmoi_train.h5ad) by
// default. Counts are normalised to the median total and log1p-transformed; 20% of the cells of
// every perturbation (controls included) are held out for the evaluation, and 10% of the rest
// validate every epoch (the best epoch by the pooled validation pearson_delta is kept). State and
// the trainable baselines (embedsum, pseudobulk) are fitted by the shared trainer
// (train/trainer.hpp) on sets of cells of one perturbation paired with control cells of the same
// batch, redrawn every epoch; perturb_mean and context_mean are fitted on the training cells. The
// held-out perturbed cells are then predicted from held-out control cells, and one table of
// cell-eval metrics is printed for every model. Writes DIR/config.json, DIR/last.safetensors,
// DIR/best.safetensors, DIR/metrics.csv, DIR/eval_metrics.csv, DIR/eval_per_perturbation.csv,
// DIR/predictions.h5ad (State's predictions of the held-out cells, controls passed through) and
// DIR/test_real.h5ad (the held-out cells themselves), so `evaluate` reproduces State's column.
// --init CHECKPOINT fine-tunes a trained model (its configuration, genes and perturbation vectors)
// on the input; with --lora RANK only LoRA adapters on the backbone's attention projections and
// the layers outside the backbone train (PEFT's apply_lora), saved also as a PEFT adapter directory.
// The data directory is --data, else $CELLTX_DATA, else $CELLTX_DATA_DIR, else ../shared/data.
// --device cuda trains and predicts on the GPU (State and embedsum; the program compiled by nvcc, which
// CMake does when CELLTX_CUDA is on): the program is one template over the backend (run<B>), and
// celltx::main_on_device picks B. Data, sets, perturb_mean / context_mean, pseudobulk (its set pooling
// is host code) and cell-eval stay on the host; checkpoints and adapters are the same files.
#include <unistd.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>
#include <fmt/core.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include "celltx/backend/device.hpp"
#include "celltx/io/arguments.hpp"
#include "celltx/io/checkpoint.hpp"
#include "celltx/io/h5ad.hpp"
#include "celltx/io/peft.hpp"
#include "celltx/io/perturbseq.hpp"
#include "celltx/io/state_json.hpp"
#include "celltx/models/state_baselines.hpp"
#include "celltx/models/state_transition.hpp"
#include "celltx/train/cell_eval.hpp"
#include "celltx/train/lora.hpp"
#include "celltx/train/perturbation_task.hpp"
#include "celltx/train/set_sampler.hpp"
#include "celltx/train/trainer.hpp"

using namespace celltx;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr const char* kDefaultInput = "perturbseq/papalexi2021_thp1_lowmoi_train.h5ad";
constexpr const char* kProgram = "perturbation_response";

using io::UsageError;

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}


// ---------------------------------------------------------------------------------------------
// Data: where it is, and what to say when it is missing.

fs::path resolve_data_dir(const std::optional<std::string>& flag) {
    if (flag) return *flag;
    if (const char* env = std::getenv("CELLTX_DATA"); env && *env) return env;
    if (const char* env = std::getenv("CELLTX_DATA_DIR"); env && *env) return env;
#ifdef CELLTX_DATA_DIR
    if (std::error_code ec; fs::is_directory(CELLTX_DATA_DIR, ec)) return CELLTX_DATA_DIR;
#endif
    return "../shared/data";
}

void require_input(const fs::path& dir, const fs::path& file, bool is_default) {
    if (std::error_code ec; fs::is_regular_file(file, ec)) return;
    std::string msg = fmt::format("the input file {} does not exist.\n", file.string());
    if (is_default)
        msg += fmt::format(
            "  It is the default training data: {}/{}\n"
            "      Papalexi et al. 2021 (Nat Genet) ECCITE-seq CRISPR screen in THP-1 cells (GEO GSE153056), as down-sampled in\n"
            "      Katsevich-Lab/sceptredata data/lowmoi_example_data.rda, converted to AnnData (raw UMI counts, obs 'perturbation').\n"
            "  Point --data (or $CELLTX_DATA) at a directory holding perturbseq/ (its SOURCES.md describes the files), or give --input.",
            dir.string(), kDefaultInput);
    else
        msg += "  --input takes an AnnData .h5ad file of cells × genes with the perturbation of every cell in an obs column.";
    throw IoError(msg);
}

// What the data look like to a model; saved in the checkpoint's configuration.
struct DataConfig {
    std::string input;                 ///< as given ("" = the default file in the data directory)
    std::string perturbation_column;   ///< "" = uns["perturbation_key"] or "perturbation"
    std::string control_label;         ///< "" = uns["control_label"] or control / non-targeting
    std::string cell_type_column;      ///< "" = one cell type
    std::string batch_column = "auto"; ///< controls are matched within a batch; auto: batch, bio_rep, gem_group if present
    bool normalize = true;             ///< normalize_total + log1p (the file holds counts)
    double target_sum = 0.0;           ///< 0 = the median total of the training file (the value used is saved)
    index_t hvg = 0;                   ///< > 0: the n most variable genes (Seurat flavour); 0: all genes
    std::string pert_features;         ///< a perturbation feature file; "" = one-hot
    std::vector<std::string> genes;    ///< the genes the model sees, in order (filled by train)
    std::vector<std::string> perturbations;  ///< the vocabulary of the perturbation table (filled by train)
};

json data_config_json(const DataConfig& d) {
    return {{"input", d.input},
            {"perturbation_column", d.perturbation_column},
            {"control_label", d.control_label},
            {"cell_type_column", d.cell_type_column},
            {"batch_column", d.batch_column},
            {"normalize", d.normalize},
            {"target_sum", d.target_sum},
            {"hvg", d.hvg},
            {"pert_features", d.pert_features},
            {"genes", d.genes},
            {"perturbations", d.perturbations}};
}
DataConfig data_config_from_json(const json& j, const std::string& where) {
    DataConfig d;
    try {
        j.at("input").get_to(d.input);
        j.at("perturbation_column").get_to(d.perturbation_column);
        j.at("control_label").get_to(d.control_label);
        j.at("cell_type_column").get_to(d.cell_type_column);
        j.at("batch_column").get_to(d.batch_column);
        j.at("normalize").get_to(d.normalize);
        j.at("target_sum").get_to(d.target_sum);
        j.at("hvg").get_to(d.hvg);
        j.at("pert_features").get_to(d.pert_features);
        j.at("genes").get_to(d.genes);
        j.at("perturbations").get_to(d.perturbations);
    } catch (const json::exception& e) {
        throw IoError(fmt::format("{}: the 'data' configuration is incomplete or invalid: {}", where, e.what()));
    }
    return d;
}

/// The input after preprocessing, with its cells' perturbations, cell types and batches.
struct Prepared {
    io::AnnData<float> adata;  ///< log-normalised, genes in the model's order
    io::PerturbSeqData<float> data;
};

/// Reads and preprocesses `file`. With fit, the target sum (if 0), the genes and the batch column
/// are decided here and written back into `d`; otherwise the genes of `d` are selected by name.
Prepared prepare(const fs::path& file, DataConfig& d, bool fit) {
    Prepared p;
    p.adata = io::read_h5ad<float>(file, {.read_layers = false, .read_obsm = false});
    if (d.normalize) {
        d.target_sum = io::normalize_total(p.adata.X, d.target_sum > 0 ? std::optional<double>(d.target_sum) : std::nullopt);
        io::log1p(p.adata.X);
    }
    if (fit) {
        if (d.hvg > 0) {
            const io::HvgResult h = io::highly_variable_genes(p.adata.X, {.n_top_genes = d.hvg});
            io::select_genes(p.adata, h.selected());
        }
        d.genes = p.adata.var_names();
    } else {
        std::map<std::string, index_t> where;
        for (index_t j = 0; j < p.adata.n_vars(); ++j) where.emplace(p.adata.var_names()[j], j);
        std::vector<index_t> keep;
        std::vector<std::string> missing;
        for (const auto& g : d.genes) {
            const auto it = where.find(g);
            if (it == where.end()) missing.push_back(g);
            else keep.push_back(it->second);
        }
        if (!missing.empty())
            throw IoError(fmt::format("{}: {} of the model's {} genes are not in /var (e.g. {}); the model needs all of them", file.string(),
                                      missing.size(), d.genes.size(), fmt::join(missing.begin(), missing.begin() + std::min<std::ptrdiff_t>(5, missing.size()), ", ")));
        io::select_genes(p.adata, keep);
    }
    if (d.batch_column == "auto") {
        d.batch_column.clear();
        for (const char* c : {"batch", "bio_rep", "gem_group", "replicate"})
            if (p.adata.obs.has(c)) {
                d.batch_column = c;
                break;
            }
    }
    if (!d.batch_column.empty() && !p.adata.obs.has(d.batch_column)) {
        fmt::print("note: {} has no obs column '{}': controls are matched by cell type only\n", file.string(), d.batch_column);
        d.batch_column.clear();
    }
    p.data = io::perturbseq_data(p.adata, {.perturbation_column = d.perturbation_column,
                                           .control_label = d.control_label,
                                           .cell_type_column = d.cell_type_column,
                                           .batch_column = d.batch_column});
    if (fit) {
        d.perturbation_column = p.data.perturbation_column;
        d.control_label = p.data.control_label;
    }
    return p;
}

/// The perturbation table of a model, saved in its checkpoint (state "perturbations.table").
struct PerturbationTable {
    Tensor<float> table;  ///< [vocabulary, pert_dim]
    template <class F>
    void visit_state(F&& f) {
        f("perturbations.table", table);
    }
};

/// Rows of `table` (over `vocabulary`) for `names`; a name outside the vocabulary gets zeros and a warning.
Tensor<float> table_for(const std::vector<std::string>& vocabulary, const Tensor<float>& table, const std::vector<std::string>& names,
                        const std::string& source) {
    io::PerturbationEncoding<float> e;
    e.names = vocabulary;
    e.table = table;
    e.source = source;
    std::vector<std::string> warnings;
    Tensor<float> out = e.rows_for(names, &warnings);
    for (const auto& w : warnings) fmt::print("warning: {}\n", w);
    return out;
}

train::PerturbationData<float> view_of(const io::PerturbSeqData<float>& d, const Tensor<float>& table) {
    return {d.expression.cview(), table.cview(), d.perturbation, d.cell_type, d.batch, d.control};
}

// ---------------------------------------------------------------------------------------------
// Model configuration

struct ModelConfig {
    std::string backbone = "llama";  ///< llama | gpt2
    StateConfig state;
};

ModelConfig default_model() {
    ModelConfig m;
    StateConfig& c = m.state;
    c.hidden = 64;
    c.n_encoder_layers = 2;
    c.n_decoder_layers = 2;
    c.dropout = 0.1;
    c.cell_set_len = 32;
    c.backbone.layers = 2;
    c.backbone.heads = 4;
    c.backbone.intermediate = 128;
    return m;
}

struct LoraSettings {
    index_t rank = 0;  ///< 0: no LoRA
    double alpha = 0.0;  ///< 0: 2·rank
    double dropout = 0.05;
    bool merge = false;
};

struct TrainConfig {
    fs::path data_dir, out = "runs/perturbation_response";
    DataConfig data;
    ModelConfig model = default_model();
    double test_fraction = 0.2, val_fraction = 0.1;
    std::uint64_t split_seed = 1;
    train::TrainerOptions trainer;
    std::string baselines = "all";  ///< all | none | comma list of perturb_mean, context_mean, embedsum, pseudobulk
    std::int64_t baseline_epochs = 15;  ///< epochs of embedsum and pseudobulk
    bool write_baselines = false;
    std::string init;  ///< a checkpoint to fine-tune
    LoraSettings lora;
};

TrainConfig default_train_config() {
    TrainConfig c;
    c.trainer.epochs = 30;
    c.trainer.batch_size = 8;  // sets per step
    c.trainer.lr = 2e-3;
    c.trainer.min_lr_ratio = 0.1;
    c.trainer.warmup_fraction = 0.05;
    c.trainer.weight_decay = 1e-4;
    c.trainer.clip_norm = 10.0;
    c.trainer.seed = 1;
    return c;
}

void print_help() {
    fmt::print(R"(perturbation_response: the State Transition model on Perturb-seq data (.h5ad).

  perturbation_response train    [--out DIR] [--input FILE.h5ad] [flags]   fit State and the baselines, evaluate
  perturbation_response predict  --checkpoint PATH --input FILE.h5ad --out FILE.h5ad
  perturbation_response evaluate --pred FILE.h5ad --real FILE.h5ad
  perturbation_response <command> --help

Every command takes --device cpu|cuda (default cpu): train and predict run the models there.
)");
}

void print_train_help() {
    const TrainConfig d = default_train_config();
    const StateConfig& s = d.model.state;
    fmt::print(R"(perturbation_response train: fit the State Transition model and the baselines (perturb_mean,
context_mean, embedsum, pseudobulk) on one .h5ad file; evaluate all of them with cell-eval's metrics on
held-out cells.

Data:
  --data DIR              data directory (default: $CELLTX_DATA, else $CELLTX_DATA_DIR, else ../shared/data)
  --input FILE.h5ad       cells × genes with the perturbation in obs (default: DIR/{})
  --perturbation-column C obs column of the perturbation (default: uns["perturbation_key"], else 'perturbation')
  --control LABEL         the control perturbation (default: uns["control_label"], else control / non-targeting)
  --cell-type-column C    obs column of the cell type (default: none, one cell type)
  --batch-column C|none   controls are matched within a batch (default: auto = batch, bio_rep, gem_group)
  --normalize on|off      normalize_total + log1p of the counts in X (default on)
  --target-sum X          counts per cell after normalize_total (default: the median total)
  --hvg N                 keep the N most variable genes (Seurat flavour; default 0 = all genes)
  --pert-features FILE    perturbation vectors (.safetensors or "name v1 v2 ..." text) instead of one-hot
  --test-fraction F       share of every perturbation's cells held out for the evaluation (default {})
  --val-fraction F        share of the remaining cells that validate every epoch (default {})
  --split-seed S          (default {})

Model (State Transition, energy loss):
  --backbone llama|gpt2   (default {})
  --hidden H --layers L --heads A --kv-heads K --intermediate I   (default {} {} {} 0 {})
  --encoder-layers N --decoder-layers N   build_mlp depths (default {} {})
  --dropout P             (default {})
  --set-len S             cells per set (default {})

Training (the shared trainer: AdamW, cosine schedule with warm-up, clipping, best epoch kept):
  --epochs N --batch SETS --lr LR   (default {} epochs, {} sets per step, lr {})
  --min-lr-ratio R --warmup F --weight-decay W --clip X --patience N --seed S
                          (default {}, {}, {}, {}, {}, {})
  --baselines LIST        all, none, or a comma list of perturb_mean, context_mean, embedsum, pseudobulk (default all)
  --baseline-epochs N     epochs of embedsum and pseudobulk (default {}; 0: as --epochs)
  --write-baselines       also write DIR/predictions_<baseline>.h5ad

Fine-tuning and runs:
  --out DIR               run directory (default {})
  --init CHECKPOINT       start from a trained model: its configuration, genes and perturbation vectors
  --lora RANK             with --init: train LoRA adapters of this rank on the backbone's attention
                          projections (and the layers outside the backbone); the base weights stay frozen
  --lora-alpha A          (default 2·RANK)   --lora-dropout P (default 0.05)   --merge: fold the adapters in at the end
  --resume PATH           continue a run from a checkpoint or run directory (its last.safetensors)

Device:
  --device cpu|cuda       where State and embedsum train and predict (default cpu); cuda needs the program
                          compiled by nvcc (CMake does it when it finds the CUDA Toolkit) and a CUDA device.
                          Data, perturb_mean, context_mean, pseudobulk and cell-eval stay on the host;
                          checkpoints and adapters are the same files on every device.
)",
               kDefaultInput, d.test_fraction, d.val_fraction, d.split_seed, d.model.backbone, s.hidden, s.backbone.layers,
               s.backbone.heads, s.backbone.intermediate, s.n_encoder_layers, s.n_decoder_layers, s.dropout, s.cell_set_len,
               d.trainer.epochs, d.trainer.batch_size, d.trainer.lr, d.trainer.min_lr_ratio, d.trainer.warmup_fraction,
               d.trainer.weight_decay, d.trainer.clip_norm, d.trainer.patience, d.trainer.seed, d.baseline_epochs, d.out.string());
}

/// merged: the checkpoint's weights have the adapters folded in (else they hold them beside the base).
json train_config_json(const TrainConfig& c, bool merged = false) {
    json model = io::state_config_to_json(c.model.state);
    model["backbone_family"] = c.model.backbone;
    model["loss"] = "energy";
    json j = {{"program", kProgram},
              {"version", 1},
              {"model", model},
              {"data", data_config_json(c.data)},
              {"split", {{"test_fraction", c.test_fraction}, {"val_fraction", c.val_fraction}, {"seed", c.split_seed}}},
              {"trainer", c.trainer},
              {"baselines", {{"list", c.baselines}, {"epochs", c.baseline_epochs}}},
              {"init", c.init}};
    if (c.lora.rank > 0)
        j["lora"] = {{"rank", c.lora.rank}, {"alpha", c.lora.alpha}, {"dropout", c.lora.dropout}, {"merged", merged}};
    return j;
}

/// The model half of a configuration (what predict and --init need).
struct SavedModel {
    ModelConfig model;
    DataConfig data;
    LoraSettings lora;
};

SavedModel saved_model_from_json(const json& j, const std::string& where) {
    if (j.value("program", "") != kProgram)
        throw IoError(fmt::format("{}: not written by '{} train' (its configuration's 'program' is not '{}')", where, kProgram, kProgram));
    SavedModel s;
    try {
        s.model.state = io::state_config_from_json(j.at("model"), where);
        s.model.backbone = j.at("model").at("backbone_family").get<std::string>();
        s.data = data_config_from_json(j.at("data"), where);
        if (j.contains("lora") && !j.at("lora").at("merged").get<bool>()) {
            s.lora.rank = j.at("lora").at("rank").get<index_t>();
            s.lora.alpha = j.at("lora").at("alpha").get<double>();
            s.lora.dropout = j.at("lora").at("dropout").get<double>();
        }
    } catch (const json::exception& e) {
        throw IoError(fmt::format("{}: the configuration is incomplete or invalid: {}", where, e.what()));
    }
    if (s.model.backbone != "llama" && s.model.backbone != "gpt2")
        throw IoError(fmt::format("{}: backbone family '{}' is not llama or gpt2", where, s.model.backbone));
    return s;
}

fs::path checkpoint_file(const fs::path& p) { return fs::is_directory(p) ? p / "best.safetensors" : p; }

TrainConfig parse_train(io::CommandLine& a, std::optional<std::string>& resume) {
    TrainConfig c = default_train_config();
    resume = a.value("--resume");
    if (auto v = a.value("--out")) c.out = *v;
    if (auto v = a.value("--input")) c.data.input = *v;
    if (auto v = a.value("--perturbation-column")) c.data.perturbation_column = *v;
    if (auto v = a.value("--control")) c.data.control_label = *v;
    if (auto v = a.value("--cell-type-column")) c.data.cell_type_column = *v;
    if (auto v = a.value("--batch-column")) c.data.batch_column = *v == "none" ? std::string() : *v;
    if (auto v = a.value("--normalize")) {
        if (*v != "on" && *v != "off") throw UsageError(fmt::format("--normalize: '{}' is not on or off", *v));
        c.data.normalize = *v == "on";
    }
    a.get("--target-sum", c.data.target_sum);
    a.get("--hvg", c.data.hvg);
    if (auto v = a.value("--pert-features")) c.data.pert_features = *v;
    a.get("--test-fraction", c.test_fraction);
    a.get("--val-fraction", c.val_fraction);
    a.get("--split-seed", c.split_seed);
    StateConfig& s = c.model.state;
    if (auto v = a.value("--backbone")) c.model.backbone = *v;
    a.get("--hidden", s.hidden);
    a.get("--layers", s.backbone.layers);
    a.get("--heads", s.backbone.heads);
    a.get("--kv-heads", s.backbone.kv_heads);
    a.get("--intermediate", s.backbone.intermediate);
    a.get("--encoder-layers", s.n_encoder_layers);
    a.get("--decoder-layers", s.n_decoder_layers);
    a.get("--dropout", s.dropout);
    a.get("--set-len", s.cell_set_len);
    a.get("--epochs", c.trainer.epochs);
    a.get("--batch", c.trainer.batch_size);
    a.get("--lr", c.trainer.lr);
    a.get("--min-lr-ratio", c.trainer.min_lr_ratio);
    a.get("--warmup", c.trainer.warmup_fraction);
    a.get("--weight-decay", c.trainer.weight_decay);
    a.get("--clip", c.trainer.clip_norm);
    a.get("--patience", c.trainer.patience);
    a.get("--seed", c.trainer.seed);
    if (auto v = a.value("--baselines")) c.baselines = *v;
    a.get("--baseline-epochs", c.baseline_epochs);
    c.write_baselines = a.flag("--write-baselines");
    if (auto v = a.value("--init")) c.init = *v;
    a.get("--lora", c.lora.rank);
    a.get("--lora-alpha", c.lora.alpha);
    a.get("--lora-dropout", c.lora.dropout);
    c.lora.merge = a.flag("--merge");
    return c;
}

std::set<std::string> baseline_set(const std::string& s) {
    static const std::vector<std::string> all{"perturb_mean", "context_mean", "embedsum", "pseudobulk"};
    if (s == "all") return {all.begin(), all.end()};
    if (s == "none") return {};
    std::set<std::string> out;
    for (std::size_t b = 0, e; b <= s.size(); b = e + 1) {
        e = s.find(',', b);
        if (e == std::string::npos) e = s.size();
        const std::string name = s.substr(b, e - b);
        if (name.empty()) continue;
        if (std::find(all.begin(), all.end(), name) == all.end())
            throw UsageError(fmt::format("--baselines: '{}' is not one of perturb_mean, context_mean, embedsum, pseudobulk", name));
        out.insert(name);
    }
    return out;
}

void check_train_config(const TrainConfig& c) {
    const StateConfig& s = c.model.state;
    if (c.model.backbone != "llama" && c.model.backbone != "gpt2")
        throw UsageError(fmt::format("--backbone '{}' is not llama or gpt2", c.model.backbone));
    if (s.hidden < 1 || s.backbone.heads < 1 || s.hidden % s.backbone.heads != 0)
        throw UsageError(fmt::format("--heads {} must divide --hidden {}", s.backbone.heads, s.hidden));
    if (s.backbone.kv_heads < 0 || (s.backbone.kv_heads > 0 && s.backbone.heads % s.backbone.kv_heads != 0))
        throw UsageError(fmt::format("--kv-heads {} must divide --heads {}", s.backbone.kv_heads, s.backbone.heads));
    if (c.model.backbone == "gpt2" && s.backbone.kv_heads > 0) throw UsageError("--kv-heads is for the llama backbone");
    if (s.backbone.layers < 1) throw UsageError(fmt::format("--layers {} must be >= 1", s.backbone.layers));
    if (c.model.backbone == "llama" && s.backbone.intermediate < 1) throw UsageError("--intermediate must be >= 1");
    if (s.n_encoder_layers < 1 || s.n_decoder_layers < 1) throw UsageError("--encoder-layers and --decoder-layers must be >= 1");
    if (!(s.dropout >= 0.0 && s.dropout < 1.0)) throw UsageError(fmt::format("--dropout {} must be in [0, 1)", s.dropout));
    if (s.cell_set_len < 2) throw UsageError(fmt::format("--set-len {} must be >= 2", s.cell_set_len));
    if (!(c.test_fraction > 0.0 && c.test_fraction < 1.0)) throw UsageError(fmt::format("--test-fraction {} must be in (0, 1)", c.test_fraction));
    if (!(c.val_fraction > 0.0 && c.val_fraction < 1.0)) throw UsageError(fmt::format("--val-fraction {} must be in (0, 1)", c.val_fraction));
    if (c.data.hvg < 0) throw UsageError(fmt::format("--hvg {} must be >= 0", c.data.hvg));
    if (!(c.data.target_sum >= 0.0)) throw UsageError(fmt::format("--target-sum {} must be >= 0", c.data.target_sum));
    if (c.lora.rank < 0) throw UsageError(fmt::format("--lora {} must be >= 0", c.lora.rank));
    if (c.lora.rank > 0 && c.init.empty()) throw UsageError("--lora fine-tunes a trained model: give --init CHECKPOINT");
    if (!(c.lora.dropout >= 0.0 && c.lora.dropout < 1.0)) throw UsageError(fmt::format("--lora-dropout {} must be in [0, 1)", c.lora.dropout));
    if (c.baseline_epochs < 0) throw UsageError("--baseline-epochs must be >= 0");
    (void)baseline_set(c.baselines);
    try {
        c.trainer.validate();
    } catch (const Error& e) {
        throw UsageError(e.what());
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation

struct ModelScores {
    std::string name;
    train::CellEvalResult result;
};

/// cell-eval of predictions `pred` of the cells `cells` (real: their expression).
train::CellEvalResult evaluate_cells(const io::PerturbSeqData<float>& d, std::span<const index_t> cells, const Tensor<float>& pred) {
    const index_t G = d.genes();
    Tensor<float> real = Tensor<float>::uninitialized(Shape{static_cast<index_t>(cells.size()), G});
    train::gather_rows(d.expression.cview(), cells, real.data());
    std::vector<index_t> labels;
    for (index_t c : cells) labels.push_back(d.perturbation[c]);
    return train::cell_eval<float>({real.cview(), labels}, {pred.cview(), labels}, d.control, d.perturbation_names, d.gene_names);
}

void print_table(const std::vector<ModelScores>& scores) {
    if (scores.empty()) return;
    std::vector<std::string> metrics;
    for (const auto& [name, v] : scores.front().result.summary()) metrics.push_back(name);
    static const std::set<std::string> lower_better{"mse", "mae", "mse_delta", "mae_delta"};
    std::string head = fmt::format("{:<30}", "metric (mean over perturbations)");
    for (const auto& s : scores) head += fmt::format(" {:>13}", s.name);
    fmt::print("{}\n{}\n", head, std::string(head.size(), '-'));
    for (std::size_t m = 0; m < metrics.size(); ++m) {
        std::string line = fmt::format("{:<30}", metrics[m] + (lower_better.count(metrics[m]) ? " (↓)" : " (↑)"));
        for (const auto& s : scores) line += fmt::format(" {:>13.4f}", s.result.summary()[m].second);
        fmt::print("{}\n", line);
    }
}

std::string scores_csv(const std::vector<ModelScores>& scores) {
    std::string csv = "model,metric,value\n";
    for (const auto& s : scores)
        for (const auto& [name, v] : s.result.summary()) csv += fmt::format("{},{},{:.9g}\n", s.name, name, v);
    return csv;
}

std::string per_perturbation_csv(const train::CellEvalResult& r) {
    std::string csv = "perturbation,real_cells,pred_cells,pearson_delta,mse,mae,mse_delta,mae_delta,discrimination_l1,discrimination_l2,"
                      "discrimination_cosine,de_real,de_pred";
    for (index_t k : r.de_top_k) csv += k ? fmt::format(",overlap_at_{}", k) : std::string(",overlap_at_N");
    csv += "\n";
    for (const auto& p : r.perturbations) {
        csv += fmt::format("{},{},{},{:.9g},{:.9g},{:.9g},{:.9g},{:.9g},{:.9g},{:.9g},{:.9g},{},{}", p.name, p.real_cells, p.pred_cells,
                           p.pearson_delta, p.mse, p.mae, p.mse_delta, p.mae_delta, p.discrimination_l1, p.discrimination_l2,
                           p.discrimination_cosine, p.de_real, p.de_pred);
        for (double v : p.de_overlap) csv += fmt::format(",{:.9g}", v);
        csv += "\n";
    }
    return csv;
}

/// The cells `cells` of the prepared input with X replaced by `x` (or kept when x is empty).
io::AnnData<float> cells_as_anndata(const Prepared& p, std::span<const index_t> cells, const Tensor<float>* x, const std::string& note) {
    io::AnnData<float> a = p.adata.subset_obs(std::vector<index_t>(cells.begin(), cells.end()));
    a.X = io::Matrix<float>(x ? *x : a.X.to_dense());
    a.X.stored_dtype = io::h5::Dtype::f32;
    a.layers.clear();
    a.uns["perturbation_key"] = p.data.perturbation_column;
    a.uns["control_label"] = p.data.control_label;
    a.uns["celltx_note"] = note;
    a.uns_lists.clear();
    return a;
}

// ---------------------------------------------------------------------------------------------
// train

template <class Model>
using Task = train::PerturbationTask<Model>;

/// In-memory copy of every parameter, for keeping a baseline's best epoch without a file.
template <class M>
struct ParameterSnapshot {
    using B = typename M::backend;
    std::vector<Tensor<float, B>> values;  // in the model's memory (device to device on a GPU)
    void take(M& m) {
        values.clear();
        m.visit_parameters([&](const std::string&, Parameter<float, B>& p) { values.push_back(p.value); });
    }
    void restore(M& m) const {
        std::size_t i = 0;
        m.visit_parameters([&](const std::string&, Parameter<float, B>& p) { p.value = values.at(i++); });
    }
};

/// Progress printing shared by every fit: a line rewritten in place on a terminal, one per 30 s otherwise.
template <class Tr>
void attach_progress(Tr& trainer, const std::string& who) {
    const bool tty = ::isatty(STDOUT_FILENO) != 0;
    auto last = std::make_shared<double>(-1e9);
    trainer.on_progress = [tty, last, who](const train::Progress& p) {
        if (tty) fmt::print("\r{}: {}   ", who, train::format_progress(p));
        else if (p.elapsed_seconds - *last >= 30.0) {
            fmt::print("{}: {}\n", who, train::format_progress(p));
            *last = p.elapsed_seconds;
        }
        std::fflush(stdout);
    };
}

/// Fits a trainable baseline with the shared trainer; keeps its best epoch.
template <class M>
void fit_baseline(M& model, const std::string& name, const train::PerturbationData<float>& data, const std::vector<index_t>& train_cells,
                  const std::vector<index_t>& val_cells, const TrainConfig& cfg) {
    const auto t0 = std::chrono::steady_clock::now();
    Generator g(cfg.trainer.seed + 17);
    model.reset_parameters(g);
    Task<M> task(model, data, train_cells, val_cells, cfg.model.state.cell_set_len, cfg.trainer.seed);
    train::TrainerOptions o = cfg.trainer;
    if (cfg.baseline_epochs > 0) o.epochs = cfg.baseline_epochs;
    train::Trainer<Task<M>> trainer(task, o);
    attach_progress(trainer, name);
    ParameterSnapshot<M> best;
    trainer.on_epoch_end = [&](const train::EpochRecord& r) {
        if (r.best) best.take(model);
    };
    trainer.fit();
    if (!best.values.empty()) best.restore(model);
    if (::isatty(STDOUT_FILENO)) fmt::print("\n");
    fmt::print("{}: {} epochs, best epoch {} (validation pearson_delta {:.4f}), {:.1f} s\n", name, trainer.epoch(), trainer.best_epoch(),
               trainer.best_pearson(), seconds_since(t0));
}

template <Backend B, class Backbone>
int train_with(TrainConfig& cfg, const std::optional<fs::path>& resume_file, const json& init_config, std::chrono::steady_clock::time_point t_start) {
    using Model = StateTransition<float, B, Backbone, EnergyLoss>;
    const bool default_input = cfg.data.input.empty();
    const fs::path input = default_input ? cfg.data_dir / kDefaultInput : fs::path(cfg.data.input);
    require_input(cfg.data_dir, input, default_input);

    // Data, preprocessing and the perturbation table.
    const bool have_genes = !cfg.data.genes.empty();  // --init / --resume: the model's genes
    Prepared prep = prepare(input, cfg.data, !have_genes);
    const io::PerturbSeqData<float>& d = prep.data;
    fmt::print("data: {} cells × {} genes from {}; {} perturbations in obs/{} (control '{}', {} cells); {}{}{}\n", d.cells(), d.genes(),
               input.string(), d.perturbation_names.size() - 1, d.perturbation_column, d.control_label,
               std::count(d.perturbation.begin(), d.perturbation.end(), d.control),
               cfg.data.normalize ? fmt::format("normalize_total (target {:g}) + log1p", cfg.data.target_sum) : std::string("X as is"),
               cfg.data.hvg > 0 ? fmt::format(", {} highly variable genes", cfg.data.hvg) : std::string(),
               cfg.data.batch_column.empty() ? std::string() : fmt::format("; controls matched within obs/{}", cfg.data.batch_column));
    PerturbationTable ptable;
    Tensor<float> table;  // rows by the input's perturbation ids
    if (cfg.data.perturbations.empty()) {  // a fresh model: the vocabulary is this file's perturbations
        cfg.data.perturbations = d.perturbation_names;
        if (cfg.data.pert_features.empty()) {
            ptable.table = io::PerturbationEncoding<float>::one_hot(d.perturbation_names).table;
        } else {
            const auto enc = io::PerturbationEncoding<float>::from_file(cfg.data.pert_features);
            std::vector<std::string> warnings;
            ptable.table = enc.rows_for(d.perturbation_names, &warnings);
            for (const auto& w : warnings) fmt::print("warning: {}\n", w);
        }
        table = ptable.table;
    } else {  // the model's vocabulary; names it lacks get a zero vector
        ptable.table = Tensor<float>(Shape{static_cast<index_t>(cfg.data.perturbations.size()), cfg.model.state.pert_dim});
    }
    StateConfig& sc = cfg.model.state;
    sc.input_dim = sc.output_dim = d.genes();
    if (sc.pert_dim == 0) sc.pert_dim = ptable.table.size(1);

    // Split: test cells of every perturbation, then validation cells of the rest.
    const auto [rest, test] = train::holdout_split(d.perturbation, cfg.test_fraction, cfg.split_seed);
    std::vector<index_t> rest_pert;
    for (index_t c : rest) rest_pert.push_back(d.perturbation[c]);
    const auto [tr_local, val_local] = train::holdout_split(rest_pert, cfg.val_fraction, cfg.split_seed + 1);
    std::vector<index_t> train_cells, val_cells;
    for (index_t i : tr_local) train_cells.push_back(rest[i]);
    for (index_t i : val_local) val_cells.push_back(rest[i]);
    fmt::print("split: {} training, {} validation, {} test cells ({:.0f}% of every perturbation held out for the evaluation; seed {})\n",
               train_cells.size(), val_cells.size(), test.size(), 100 * cfg.test_fraction, cfg.split_seed);

    // The model (fresh, or the --init checkpoint's), LoRA, the trainer.
    Model model(sc);
    Generator g(cfg.trainer.seed);
    model.reset_parameters(g);
    if (!cfg.init.empty()) {
        const fs::path init = checkpoint_file(cfg.init);
        const SavedModel base = saved_model_from_json(init_config, init.string());
        if (base.lora.rank > 0) apply_lora(model, {.rank = base.lora.rank, .alpha = base.lora.alpha, .dropout = base.lora.dropout}, g);
        io::load_checkpoint(init, model, ptable);
        if (base.lora.rank > 0) merge_lora(model);  // an unmerged adapter becomes part of the base
        fmt::print("init: {} (trained State weights, {} genes, {} perturbation vectors)\n", init.string(), d.genes(), ptable.table.size(0));
    }
    if (resume_file) io::SafetensorsFile(*resume_file).load_into<float>("state/perturbations.table", ptable.table.view());
    if (!cfg.data.perturbations.empty() && table.empty()) table = table_for(cfg.data.perturbations, ptable.table, d.perturbation_names, "the model");
    train::ParameterList<float, B> params;
    if (cfg.lora.rank > 0) {
        if (cfg.lora.alpha <= 0.0) cfg.lora.alpha = 2.0 * static_cast<double>(cfg.lora.rank);
        apply_lora(model, {.rank = cfg.lora.rank, .alpha = cfg.lora.alpha, .dropout = cfg.lora.dropout}, g);
        params = train::lora_trainable_parameters<float, B>(model);
    } else {
        params = train::collect_parameters<float, B>(model);
    }
    const train::PerturbationData<float> data = view_of(d, table);
    Task<Model> task(model, data, train_cells, val_cells, sc.cell_set_len, cfg.trainer.seed);
    train::Trainer<Task<Model>> trainer(task, cfg.trainer, params);
    index_t trainable = 0;
    for (const auto& [n, p] : params) trainable += p->numel();
    fmt::print("model: State Transition ({} backbone, hidden {}, {} layers × {} heads, intermediate {}, set length {}, energy loss), "
               "{} parameters, {} trained{}{}\n",
               cfg.model.backbone, sc.hidden, sc.backbone.layers, sc.backbone.heads, sc.backbone.intermediate, sc.cell_set_len,
               parameter_count<float, B>(model), trainable, cfg.lora.rank > 0 ? fmt::format(" (LoRA rank {}, base frozen)", cfg.lora.rank) : std::string(),
               B::is_device ? fmt::format(" on {}", B::name) : std::string());
    const json config = train_config_json(cfg);
    if (resume_file) {
        io::load_checkpoint(*resume_file, model, trainer, ptable);
        fmt::print("resumed from {}: epoch {}, step {}\n", resume_file->string(), trainer.epoch(), trainer.step_count());
    }
    fs::create_directories(cfg.out);
    io::write_text_atomic(cfg.out / "config.json", config.dump(2) + "\n");
    fmt::print("run directory: {} ({} epochs of {} steps, {} sets of {} cells per step, lr {:g}; ready in {:.1f} s)\n", cfg.out.string(),
               cfg.trainer.epochs, trainer.batches_per_epoch(), cfg.trainer.batch_size, sc.cell_set_len, cfg.trainer.lr,
               seconds_since(t_start));
    std::fflush(stdout);

    const auto t_fit = std::chrono::steady_clock::now();
    attach_progress(trainer, "State");
    trainer.on_epoch_end = [&](const train::EpochRecord& r) {
        if (::isatty(STDOUT_FILENO)) fmt::print("\n");
        fmt::print("State epoch {:3d}/{}  train energy {:.4f}  validation pearson_delta {:.4f}  lr {:.2e}  {:.1f} s{}\n", r.epoch,
                   cfg.trainer.epochs, r.train_loss, r.validation.pearson, r.lr, r.seconds, r.best ? "  * best" : "");
        io::save_checkpoint(cfg.out / "last.safetensors", model, config, trainer, ptable);
        if (r.best) io::save_checkpoint(cfg.out / "best.safetensors", model, config, trainer, ptable);
        io::write_text_atomic(cfg.out / "metrics.csv", train::metrics_csv(trainer.history()));
        std::fflush(stdout);
    };
    trainer.fit();
    const double state_seconds = seconds_since(t_fit);
    const fs::path best = cfg.out / "best.safetensors";
    if (!fs::exists(best)) throw Error(fmt::format("no epoch gave a finite validation Pearson, so {} was not written", best.string()));
    io::load_checkpoint(best, model);
    fmt::print("State: best epoch {} of {} (validation pearson_delta {:.4f}), {:.1f} s\n", trainer.best_epoch(), trainer.epoch(),
               trainer.best_pearson(), state_seconds);
    if (cfg.lora.rank > 0) {
        io::save_lora_adapter(model, cfg.out / "lora_adapter", {.rank = cfg.lora.rank, .alpha = cfg.lora.alpha, .dropout = cfg.lora.dropout},
                              Backbone::name);
        fmt::print("LoRA adapter (PEFT format): {}\n", (cfg.out / "lora_adapter").string());
        if (cfg.lora.merge) {
            merge_lora(model);
            io::save_checkpoint(cfg.out / "merged.safetensors", model, train_config_json(cfg, true), ptable);
            fmt::print("merged weights: {}\n", (cfg.out / "merged.safetensors").string());
        }
    }

    // Baselines.
    const std::set<std::string> baselines = baseline_set(cfg.baselines);
    std::vector<ModelScores> scores;
    const auto test_controls = train::control_cells(data, test);
    if (test_controls.empty()) throw Error("the test split holds no control cells: nothing to predict from");
    const train::ControlMatcher matcher(d.cell_type, d.batch, test_controls, cfg.split_seed ^ 0xe7a1, !cfg.data.batch_column.empty());
    std::map<std::string, Tensor<float>> predictions;
    predictions["State"] = train::predict_cells(model, data, test, matcher, sc.cell_set_len);
    if (baselines.count("perturb_mean")) {
        PerturbMean<float> pm;
        pm.fit(d.expression.cview(), d.perturbation, d.cell_type, d.control, train_cells);
        predictions["perturb_mean"] = train::predict_cells(pm, data, test, matcher, sc.cell_set_len);
    }
    if (baselines.count("context_mean")) {
        ContextMean<float> cm;
        cm.fit(d.expression.cview(), d.perturbation, d.cell_type, d.control, train_cells);
        predictions["context_mean"] = train::predict_cells(cm, data, test, matcher, sc.cell_set_len);
    }
    StateConfig bc = sc;  // the baselines' sizes: State's
    if (baselines.count("embedsum")) {
        EmbedSum<float, B, EnergyLoss> es(bc);
        fit_baseline(es, "embedsum", data, train_cells, val_cells, cfg);
        predictions["embedsum"] = train::predict_cells(es, data, test, matcher, sc.cell_set_len);
    }
    if (baselines.count("pseudobulk")) {
        Pseudobulk<float, cpu, Backbone, EnergyLoss> pb(bc);  // host loops pool its sets: it trains on the CPU on every device
        fit_baseline(pb, "pseudobulk", data, train_cells, val_cells, cfg);
        predictions["pseudobulk"] = train::predict_cells(pb, data, test, matcher, sc.cell_set_len);
    }
    const auto t_eval = std::chrono::steady_clock::now();
    for (const char* name : {"State", "perturb_mean", "context_mean", "embedsum", "pseudobulk"})
        if (predictions.count(name)) scores.push_back({name, evaluate_cells(d, test, predictions.at(name))});
    const double eval_seconds = seconds_since(t_eval);

    // The table, the files.
    std::size_t test_perturbed = 0;
    for (index_t c : test) test_perturbed += d.perturbation[c] != d.control;
    fmt::print("\nevaluation on the {} held-out cells ({} perturbed, {} controls; {} perturbations), each predicted from a held-out "
               "control cell{}:\n\n",
               test.size(), test_perturbed, test.size() - test_perturbed, scores.front().result.perturbations.size(),
               cfg.data.batch_column.empty() ? "" : " of its batch");
    print_table(scores);
    io::write_text_atomic(cfg.out / "eval_metrics.csv", scores_csv(scores));
    io::write_text_atomic(cfg.out / "eval_per_perturbation.csv", per_perturbation_csv(scores.front().result));
    io::write_h5ad(cfg.out / "predictions.h5ad", cells_as_anndata(prep, test, &predictions.at("State"), "State predictions (celltx perturbation_response)"));
    io::write_h5ad(cfg.out / "test_real.h5ad", cells_as_anndata(prep, test, nullptr, "held-out cells (celltx perturbation_response)"));
    if (cfg.write_baselines)
        for (const auto& [name, x] : predictions)
            if (name != "State")
                io::write_h5ad(cfg.out / fmt::format("predictions_{}.h5ad", name), cells_as_anndata(prep, test, &x, name + " predictions"));
    fmt::print("\nwrote {}/{{config.json, best.safetensors, last.safetensors, metrics.csv, eval_metrics.csv, eval_per_perturbation.csv, "
               "predictions.h5ad, test_real.h5ad}}; cell-eval of {} models {:.1f} s; total {:.1f} s\n",
               cfg.out.string(), scores.size(), eval_seconds, seconds_since(t_start));
    return 0;
}

template <Backend B>
int run_train(io::CommandLine& args) {
    if (args.help()) {
        print_train_help();
        return 0;
    }
    const auto t_start = std::chrono::steady_clock::now();
    std::optional<std::string> resume;
    const std::optional<std::string> data_flag = args.value("--data");
    TrainConfig cfg = parse_train(args, resume);
    args.finish();
    std::optional<fs::path> resume_file;
    json init_config;
    if (resume) {
        for (const auto& g : args.given())
            if (g != "--resume" && g != "--out" && g != "--input")
                throw UsageError(fmt::format("with --resume the configuration comes from the checkpoint: drop {}", g));
        resume_file = fs::is_directory(*resume) ? fs::path(*resume) / "last.safetensors" : fs::path(*resume);
        const io::CheckpointHeader h = io::read_checkpoint_header(*resume_file);
        if (!h.celltx) throw IoError(fmt::format("{}: not a {} checkpoint (no celltx metadata)", h.path, kProgram));
        const fs::path out = cfg.out;
        const std::string input = cfg.data.input;
        const SavedModel s = saved_model_from_json(h.config, h.path);
        cfg = default_train_config();
        cfg.model = s.model;
        cfg.data = s.data;
        try {
            cfg.trainer = h.config.at("trainer").get<train::TrainerOptions>();
            cfg.test_fraction = h.config.at("split").at("test_fraction").get<double>();
            cfg.val_fraction = h.config.at("split").at("val_fraction").get<double>();
            cfg.split_seed = h.config.at("split").at("seed").get<std::uint64_t>();
            cfg.baselines = h.config.at("baselines").at("list").get<std::string>();
            cfg.baseline_epochs = h.config.at("baselines").at("epochs").get<std::int64_t>();
            cfg.init = h.config.at("init").get<std::string>();
        } catch (const std::exception& e) {
            throw IoError(fmt::format("{}: the configuration is incomplete: {}", h.path, e.what()));
        }
        cfg.lora = s.lora;
        cfg.out = args.given().count("--out") ? out : resume_file->parent_path().empty() ? fs::path(".") : resume_file->parent_path();
        if (args.given().count("--input")) cfg.data.input = input;
        if (cfg.lora.rank > 0) throw UsageError("--resume of a LoRA fine-tuning run is not supported: rerun it from --init");
    } else if (!cfg.init.empty()) {
        for (const char* f : {"--backbone", "--hidden", "--layers", "--heads", "--kv-heads", "--intermediate", "--encoder-layers",
                              "--decoder-layers", "--hvg", "--pert-features", "--target-sum", "--normalize"})
            if (args.given().count(f)) throw UsageError(fmt::format("{}: with --init the model and its preprocessing come from the checkpoint", f));
        const fs::path init = checkpoint_file(cfg.init);
        const io::CheckpointHeader h = io::read_checkpoint_header(init);
        if (!h.celltx) throw IoError(fmt::format("{}: not a {} checkpoint (no celltx metadata)", h.path, kProgram));
        const SavedModel s = saved_model_from_json(h.config, h.path);
        const double dropout = cfg.model.state.dropout;
        const index_t set_len = cfg.model.state.cell_set_len;
        cfg.model = s.model;
        if (args.given().count("--dropout")) cfg.model.state.dropout = dropout;
        if (args.given().count("--set-len")) cfg.model.state.cell_set_len = set_len;
        const std::string input = cfg.data.input, pcol = cfg.data.perturbation_column, ctrl = cfg.data.control_label,
                          ctype = cfg.data.cell_type_column, bcol = cfg.data.batch_column;
        cfg.data = s.data;
        cfg.data.input = input;
        if (args.given().count("--perturbation-column")) cfg.data.perturbation_column = pcol;
        else cfg.data.perturbation_column.clear();
        if (args.given().count("--control")) cfg.data.control_label = ctrl;
        else cfg.data.control_label.clear();
        cfg.data.cell_type_column = ctype;
        cfg.data.batch_column = bcol;
        init_config = h.config;
    }
    check_train_config(cfg);
    cfg.data_dir = resolve_data_dir(data_flag);
    if (cfg.model.backbone == "gpt2") {
        cfg.model.state.backbone.intermediate = cfg.model.state.backbone.intermediate == default_model().state.backbone.intermediate &&
                                                        !args.given().count("--intermediate") && cfg.init.empty() && !resume
                                                    ? 0
                                                    : cfg.model.state.backbone.intermediate;
        return train_with<B, GPT2Backbone>(cfg, resume_file, init_config, t_start);
    }
    return train_with<B, LlamaBackbone>(cfg, resume_file, init_config, t_start);
}

// ---------------------------------------------------------------------------------------------
// predict

void print_predict_help() {
    fmt::print(R"(perturbation_response predict: predict the perturbed cells of every perturbation in an .h5ad file.

  --checkpoint PATH     a checkpoint written by 'perturbation_response train' (a file, or a run directory:
                        its best.safetensors); it carries the model's configuration, genes, preprocessing
                        and perturbation vectors
  --input FILE.h5ad     cells with their perturbation in obs (the checkpoint's perturbation column, or
                        --perturbation-column); X holds counts (normalised as in training) unless --normalize off
  --out FILE.h5ad       every cell of the input: perturbed cells predicted, each from a control cell of the
                        input (same cell type and batch where possible), control cells copied
  --perturbation-column C --control LABEL --cell-type-column C --batch-column C|none --normalize on|off
  --seed S              the draw of the control cells (default 1)
  --device cpu|cuda     where the model runs (default cpu; cuda: a program compiled by nvcc and a CUDA device)

A perturbation the model has not seen gets a zero perturbation vector (as in State) and a warning.
)");
}

template <Backend B, class Backbone>
int predict_with(const fs::path& ckpt, SavedModel& s, const fs::path& input, const fs::path& out, std::uint64_t seed) {
    using Model = StateTransition<float, B, Backbone, EnergyLoss>;
    const auto t0 = std::chrono::steady_clock::now();
    Model model(s.model.state);
    Generator g(1);
    if (s.lora.rank > 0) apply_lora(model, {.rank = s.lora.rank, .alpha = s.lora.alpha, .dropout = s.lora.dropout}, g);
    PerturbationTable ptable;
    ptable.table = Tensor<float>(Shape{static_cast<index_t>(s.data.perturbations.size()), s.model.state.pert_dim});
    io::load_checkpoint(ckpt, model, ptable);
    Prepared prep = prepare(input, s.data, false);
    const io::PerturbSeqData<float>& d = prep.data;
    const Tensor<float> table = table_for(s.data.perturbations, ptable.table, d.perturbation_names, ckpt.string());
    const train::PerturbationData<float> data = view_of(d, table);
    std::vector<index_t> all(static_cast<std::size_t>(d.cells()));
    std::iota(all.begin(), all.end(), index_t{0});
    const auto controls = train::control_cells(data, all);
    if (controls.empty()) throw IoError(fmt::format("{}: no control cells ('{}' in obs/{}) to predict from", input.string(), d.control_label, d.perturbation_column));
    const train::ControlMatcher matcher(d.cell_type, d.batch, controls, seed, !s.data.batch_column.empty());
    const Tensor<float> pred = train::predict_cells(model, data, all, matcher, s.model.state.cell_set_len);
    io::write_h5ad(out, cells_as_anndata(prep, all, &pred, fmt::format("State predictions of {} (celltx perturbation_response)", ckpt.string())));
    fmt::print("predicted {} perturbed cells of {} perturbations from {} control cells of {}; wrote {} ({:.1f} s)\n",
               d.cells() - static_cast<index_t>(controls.size()), d.perturbation_names.size() - 1, controls.size(), input.string(), out.string(),
               seconds_since(t0));
    return 0;
}

template <Backend B>
int run_predict(io::CommandLine& args) {
    if (args.help()) {
        print_predict_help();
        return 0;
    }
    const auto ckpt_flag = args.value("--checkpoint"), input_flag = args.value("--input"), out_flag = args.value("--out");
    const auto pcol = args.value("--perturbation-column"), ctrl = args.value("--control"), ctype = args.value("--cell-type-column"),
               bcol = args.value("--batch-column"), norm = args.value("--normalize");
    std::uint64_t seed = 1;
    args.get("--seed", seed);
    args.finish();
    if (!ckpt_flag) throw UsageError("--checkpoint is required");
    if (!input_flag) throw UsageError("--input is required");
    if (!out_flag) throw UsageError("--out is required");
    const fs::path ckpt = checkpoint_file(*ckpt_flag);
    const io::CheckpointHeader h = io::read_checkpoint_header(ckpt);
    if (!h.celltx) throw IoError(fmt::format("{}: not a {} checkpoint (no celltx metadata: its configuration is needed)", h.path, kProgram));
    SavedModel s = saved_model_from_json(h.config, h.path);
    if (pcol) s.data.perturbation_column = *pcol;
    if (ctrl) s.data.control_label = *ctrl;
    if (ctype) s.data.cell_type_column = *ctype;
    if (bcol) s.data.batch_column = *bcol == "none" ? std::string() : *bcol;
    if (norm) {
        if (*norm != "on" && *norm != "off") throw UsageError(fmt::format("--normalize: '{}' is not on or off", *norm));
        s.data.normalize = *norm == "on";
    }
    require_input("", *input_flag, false);
    return s.model.backbone == "gpt2" ? predict_with<B, GPT2Backbone>(ckpt, s, *input_flag, *out_flag, seed)
                                      : predict_with<B, LlamaBackbone>(ckpt, s, *input_flag, *out_flag, seed);
}

// ---------------------------------------------------------------------------------------------
// evaluate

void print_evaluate_help() {
    fmt::print(R"(perturbation_response evaluate: cell-eval metrics of predicted against real cells.

  --pred FILE.h5ad      predicted cells (control cells included), e.g. train's predictions.h5ad or predict's output
  --real FILE.h5ad      real cells (control cells included), e.g. train's test_real.h5ad
  --perturbation-column C   (default: uns["perturbation_key"], else 'perturbation')
  --control LABEL           (default: uns["control_label"], else control / non-targeting)
  --normalize on|off    normalize_total + log1p both files first (default off: the files are log-normalised)
  --csv FILE            also write the per-perturbation metrics
  --device cpu|cuda     accepted as by train and predict; evaluate computes on the host

Genes are matched by name (the predicted file may hold them in another order). Metrics: pearson_delta,
mse, mae, mse_delta, mae_delta, discrimination scores (L1, L2, cosine), pearson_edistance, DE overlap.
)");
}

int run_evaluate(io::CommandLine& args) {
    if (args.help()) {
        print_evaluate_help();
        return 0;
    }
    const auto pred_flag = args.value("--pred"), real_flag = args.value("--real"), pcol = args.value("--perturbation-column"),
               ctrl = args.value("--control"), norm = args.value("--normalize"), csv = args.value("--csv");
    args.finish();
    if (!pred_flag) throw UsageError("--pred is required");
    if (!real_flag) throw UsageError("--real is required");
    if (norm && *norm != "on" && *norm != "off") throw UsageError(fmt::format("--normalize: '{}' is not on or off", *norm));
    DataConfig dc;
    dc.perturbation_column = pcol.value_or("");
    dc.control_label = ctrl.value_or("");
    dc.batch_column.clear();
    dc.normalize = norm && *norm == "on";
    require_input("", *real_flag, false);
    require_input("", *pred_flag, false);
    DataConfig real_dc = dc;
    Prepared real = prepare(*real_flag, real_dc, true);
    DataConfig pred_dc = dc;
    pred_dc.genes = real_dc.genes;
    pred_dc.target_sum = real_dc.target_sum;  // both files normalised to the same total
    Prepared pred = prepare(*pred_flag, pred_dc, false);
    // shared perturbation ids: the real file's names; the predicted file must hold the same ones
    const auto& names = real.data.perturbation_names;
    std::vector<index_t> pred_labels;
    for (index_t i = 0; i < pred.data.cells(); ++i) {
        const std::string& n = pred.data.perturbation_names[pred.data.perturbation[i]];
        const auto it = std::lower_bound(names.begin(), names.end(), n);
        if (it == names.end() || *it != n)
            throw IoError(fmt::format("{}: cell {} has perturbation '{}', which {} does not hold", *pred_flag, pred.data.cell_names[i], n, *real_flag));
        pred_labels.push_back(it - names.begin());
    }
    const train::CellEvalResult r = train::cell_eval<float>({real.data.expression.cview(), real.data.perturbation},
                                                            {pred.data.expression.cview(), pred_labels}, real.data.control, names,
                                                            real.data.gene_names);
    fmt::print("{} predicted vs {} real cells, {} perturbations, {} genes\n\n", pred.data.cells(), real.data.cells(), r.perturbations.size(),
               real.data.genes());
    print_table({{"prediction", r}});
    if (csv) {
        io::write_text_atomic(*csv, per_perturbation_csv(r));
        fmt::print("\nwrote {}\n", *csv);
    }
    return 0;
}

/// The whole program on backend B (main_on_device has taken --device out of argv).
template <Backend B>
int run(int argc, char** argv) {
    const std::string command = argc > 1 ? argv[1] : "";
    try {
        if (command.empty() || command == "--help" || command == "-h" || command == "help") {
            print_help();
            return command.empty() ? 2 : 0;
        }
        io::CommandLine args(argc, argv, 2);
        if (command == "train") return run_train<B>(args);
        if (command == "predict") return run_predict<B>(args);
        if (command == "evaluate") return run_evaluate(args);
        throw UsageError(fmt::format("unknown command '{}' (train, predict, evaluate)", command));
    } catch (const UsageError& e) {
        std::fprintf(stderr, "%s %s: %s\n(see %s %s --help)\n", kProgram, command.c_str(), e.what(), kProgram, command.c_str());
        return 2;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "\n%s %s: %s\n", kProgram, command.c_str(), e.what());
        return 1;
    }
}

} // namespace

int main(int argc, char** argv) {
    return main_on_device(argc, argv, [&](auto backend) { return run<decltype(backend)>(argc, argv); });
}
