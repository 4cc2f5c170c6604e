// gene_interaction: trains the equivariant Cell Graph Transformer (Type I + gene-interaction readout)
// on real yeast genetic interactions, predicts, and evaluates. docs/gene_interaction.md has the data,
// the command lines, the figures of a real run and what was tried.
//
//   gene_interaction train    [--out runs/] [--pairs FILE] [graph, model, training flags] [--resume PATH] [--device cpu|cuda]
//   gene_interaction predict  --checkpoint PATH --pairs FILE --out FILE.csv [--device cpu|cuda]
//   gene_interaction evaluate --pred FILE.csv --pairs FILE
//   gene_interaction <command> --help
//
// train: Costanzo 2016 digenic interaction scores (DCell's GO:0006281 train file by default) over the
// 6,607-gene universe of SGD R64-4-1; 20% of the pairs held out for validation (seeded). In the same
// run it fits the additive baseline ε ≈ b + a_i + a_j (ridge, λ by exact leave-one-out on the training
// pairs; with --target residual the CGT corrects it instead), and prints validation Pearson and
// Spearman of both side by side. Writes DIR/config.json, DIR/last.safetensors (every epoch),
// DIR/best.safetensors (best validation Pearson), DIR/metrics.csv, DIR/validation_predictions.csv and
// DIR/validation_pairs.txt (the held-out pairs in DCell's format, for predict + evaluate).
// The data directory is --data, else $CELLTX_DATA, else $CELLTX_DATA_DIR, else ../shared/data.
// --device cuda trains and predicts on the GPU (the program compiled by nvcc, which CMake does when
// CELLTX_CUDA is on); the program is one template over the backend (run<B>), and celltx::main_on_device
// picks B. Data, the additive baseline and the metrics stay on the host; checkpoints are the same files.
#include <unistd.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <numeric>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>
#include <fstream>
#include <sstream>
#include <charconv>
#include <fmt/core.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include "celltx/backend/device.hpp"
#include "celltx/io/arguments.hpp"
#include "celltx/io/cgt_json.hpp"
#include "celltx/io/checkpoint.hpp"
#include "celltx/io/gene_universe.hpp"
#include "celltx/io/gi_labels.hpp"
#include "celltx/io/graph_sources.hpp"
#include "celltx/io/text_reader.hpp"
#include "celltx/io/yeast_data.hpp"
#include "celltx/models/additive_baseline.hpp"
#include "celltx/models/cell_graph_transformer.hpp"
#include "celltx/train/gene_interaction_task.hpp"
#include "celltx/train/metrics.hpp"
#include "celltx/train/trainer.hpp"

using namespace celltx;
namespace fs = std::filesystem;
using json = nlohmann::json;
template <Backend B>
using Model = CellGraphTransformer<float, B, GeneEmbedding, PostNormEncoder, CrossAttentionTransform, GeneInteractionReadout>;
template <Backend B>
using Task = train::GeneInteractionTask<Model<B>>;

namespace {

// The checkpoint's architecture (the same file on every device).
constexpr const char* kArchitecture =
    "CellGraphTransformer<float, cpu, GeneEmbedding, PostNormEncoder, CrossAttentionTransform, GeneInteractionReadout>";
constexpr const char* kDefaultPairs = "yeast-gi/dcell_costanzo2016_GO_0006281_train.txt";

using io::UsageError;

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}


std::vector<std::string> split_list(const std::string& s) {
    std::vector<std::string> out;
    for (std::size_t b = 0, e; b <= s.size(); b = e + 1) {
        e = s.find(',', b);
        if (e == std::string::npos) e = s.size();
        if (e > b) out.push_back(s.substr(b, e - b));
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// The data directory, and what to say when it is missing.

fs::path resolve_data_dir(const std::optional<std::string>& flag) {
    if (flag) return *flag;
    if (const char* env = std::getenv("CELLTX_DATA"); env && *env) return env;
    return io::YeastData::locate().root;  // $CELLTX_DATA_DIR, else ../shared/data
}

struct NeededFile {
    fs::path path;
    std::string what, source;
};

/// Throws (exit 3) naming every missing file and its public source.
void require_files(const fs::path& dir, const std::vector<NeededFile>& files) {
    std::vector<const NeededFile*> missing;
    for (const auto& f : files)
        if (std::error_code ec; !fs::is_regular_file(f.path, ec)) missing.push_back(&f);
    if (missing.empty()) return;
    std::string msg = fmt::format("the data directory '{}' {} the files this command reads.\nMissing:\n", dir.string(),
                                  fs::is_directory(dir) ? "lacks" : "does not exist, so it lacks");
    for (const auto* f : missing) msg += fmt::format("  {}\n      {}\n      source: {}\n", f->path.string(), f->what, f->source);
    msg += "Point --data (or $CELLTX_DATA) at a directory laid out as yeast-genome/, yeast-graphs/, yeast-gi/ "
           "(docs/data.md and each folder's SOURCES.md describe the files).";
    throw IoError(msg);
}

NeededFile genes_file(const io::YeastData& d) {
    return {d.genes_table(), "the 6,607 protein-coding genes of S. cerevisiae S288C (systematic and standard names)",
            "SGD, Saccharomyces Genome Database, genome release R64-4-1 (yeastgenome.org), table derived from its GFF3"};
}
NeededFile string_file(const io::YeastData& d) {
    return {d.string_actions(), "STRING v11.0 protein actions of yeast (taxon 4932): the graphs' modes",
            "STRING database v11.0, 4932.protein.actions.v11.0.txt.gz (string-db.org)"};
}
NeededFile yeastract_file(const io::YeastData& d) {
    return {d.yeastract(), "documented transcription factor -> target gene regulations",
            "YEASTRACT (yeastract.com), via sajal49/AdpFunChisq Data/Yeast/Yeast_TFTG.csv"};
}
NeededFile pairs_file(const fs::path& p) {
    return {p, "digenic genetic-interaction scores (epsilon), 2 <ORF_a> <ORF_b> <epsilon> per line",
            "Costanzo et al. 2016 (Science 353:aaf1420), as DCell prepared them (idekerlab/DCell training/TrainData)"};
}

// ---------------------------------------------------------------------------------------------
// train

struct TrainConfig {
    fs::path data_dir, out = "runs";
    std::string pairs;  // as given; empty: the default file in the data directory
    CgtConfig model;
    std::vector<std::string> string_modes{"binding", "reaction", "catalysis"};
    bool yeastract = true;
    int graph_layer = 0;
    double graph_lambda = 1e-3, row_rate = 1.0;
    std::string target = "label";  // label | residual | loo-residual
    std::string loss = "mse";
    double target_clip = 0.0;
    double val_fraction = 0.2;
    std::uint64_t split_seed = 1;
    train::TrainerOptions trainer;
};

TrainConfig default_train_config() {
    TrainConfig c;
    c.model.d_model = 32;
    c.model.num_layers = 1;
    c.model.num_heads = 4;
    c.model.pert_heads = 4;
    c.model.dropout = 0.1;
    c.model.gi_pooling = GiPooling::mean;
    c.trainer.epochs = 24;
    c.trainer.batch_size = 1024;
    c.trainer.lr = 3e-3;
    c.trainer.min_lr_ratio = 0.05;
    c.trainer.warmup_fraction = 0.1;
    c.trainer.weight_decay = 1e-8;
    c.trainer.clip_norm = 10.0;
    c.trainer.seed = 1;
    c.trainer.patience = 0;
    return c;
}

void print_train_help() {
    const TrainConfig d = default_train_config();
    fmt::print(R"(gene_interaction train: fit the equivariant Cell Graph Transformer (Type I + GI readout) on
Costanzo 2016 digenic interaction scores, next to the additive ridge baseline.

Data and output:
  --data DIR            data directory (default: $CELLTX_DATA, else $CELLTX_DATA_DIR, else ../shared/data)
  --pairs FILE          labelled pairs, "2 <ORF_a> <ORF_b> <epsilon>" per line
                        (default: DIR/{})
  --out DIR             run directory: config.json, last.safetensors, best.safetensors, metrics.csv,
                        validation_predictions.csv, validation_pairs.txt (default: runs/)
  --resume PATH         continue a run from a checkpoint file or run directory (its last.safetensors),
                        bit-identically; the configuration comes from the checkpoint (only --data,
                        --out, --pairs and --stop-after may be given)
  --stop-after N        end this invocation after N more epochs (checkpoints written; resume later)
  --val-fraction F      share of the pairs held out for validation (default {})
  --split-seed S        seed of the validation split (default {})

Graphs (graph k regularises head k of --graph-layer; each graph gets its own head):
  --string MODES        STRING v11 modes, comma-separated, or 'none' (default {}; modes:
                        reaction, binding, catalysis, activation, inhibition, ptmod, expression)
  --yeastract on|off    the YEASTRACT TF -> target graph (default on)
  --graph-layer L       encoder layer (0-based) of the graph-regularised heads (default {})
  --graph-lambda X      regulariser weight λ of every graph (density-normalised; default {})
  --row-rate R          share of the rows regularised per step, in (0, 1] (default {})

Model:
  --d D --layers L --heads H --pert-heads P   sizes (default d={} L={} H={} P={})
  --dropout P           (default {})
  --pool mean|sum       pooling of the GI readout (default {})
  --preset full         the published size: d=64, L=6, H=8, P=8, graphs on layer 1, batch 256,
                        lr 5e-4, 20 epochs (hours on 2 cores; a GPU-sized run)

Target and loss:
  --target label|residual|loo-residual
                        label: the CGT alone; residual: the CGT corrects the additive baseline
                        (trained on y - additive); loo-residual: on the baseline's leave-one-out
                        residuals (default {})
  --loss mse|log_cosh   (default {})
  --target-clip K       clip the z-scored training targets to [-K, K]; 0: off (default {})

Training:
  --epochs N --batch B --lr LR                (default {} epochs, batch {}, lr {})
  --min-lr-ratio R      cosine floor as a fraction of lr (default {})
  --warmup F            warm-up as a fraction of each cosine cycle (default {})
  --cycle-epochs N      warm restart every N epochs; 0: one cosine over the run (default {})
  --weight-decay W      AdamW decoupled weight decay (default {})
  --clip X              gradient-norm clipping; 0: off (default {})
  --patience N          early stopping after N epochs without a better validation Pearson; 0: off (default {})
  --seed S              initialisation, batch order, dropout and graph row sampling (default {})

Device:
  --device cpu|cuda     where the model trains (default cpu); cuda needs the program compiled by nvcc
                        (CMake does it when it finds the CUDA Toolkit) and a CUDA device. The data, the
                        additive baseline and the metrics stay on the host; checkpoints are the same files.
)",
               kDefaultPairs, d.val_fraction, d.split_seed, fmt::join(d.string_modes, ","), d.graph_layer, d.graph_lambda, d.row_rate,
               d.model.d_model, d.model.num_layers, d.model.num_heads, d.model.pert_heads, d.model.dropout,
               io::gi_pooling_name(d.model.gi_pooling), d.target, d.loss, d.target_clip, d.trainer.epochs, d.trainer.batch_size,
               d.trainer.lr, d.trainer.min_lr_ratio, d.trainer.warmup_fraction, d.trainer.cycle_epochs, d.trainer.weight_decay,
               d.trainer.clip_norm, d.trainer.patience, d.trainer.seed);
}

json train_config_json(const TrainConfig& c, const fs::path& pairs_path, const io::GeneUniverse& u, std::size_t n_train, std::size_t n_val) {
    json model = io::cgt_config_to_json(c.model);
    model["architecture"] = kArchitecture;
    json genes = json::object();
    genes["systematic"] = u.names();
    std::vector<std::string> standard;
    for (index_t i = 0; i < u.size(); ++i) standard.push_back(u.standard_name(i));
    genes["standard"] = standard;
    return {{"program", "gene_interaction"},
            {"version", 1},
            {"model", model},
            {"graphs",
             {{"string_modes", c.string_modes},
              {"yeastract", c.yeastract},
              {"layer", c.graph_layer},
              {"lambda", c.graph_lambda},
              {"row_rate", c.row_rate},
              {"self_loops", true},
              {"normalization", "density"},
              {"heads", "graph k on head k"}}},
            {"data",
             {{"pairs", c.pairs.empty() ? std::string(kDefaultPairs) : c.pairs},
              {"pairs_in_data_dir", c.pairs.empty()},
              {"pairs_resolved", pairs_path.string()},
              {"validation_fraction", c.val_fraction},
              {"split_seed", c.split_seed},
              {"train_pairs", n_train},
              {"validation_pairs", n_val}}},
            {"target", {{"kind", c.target}, {"loss", c.loss}, {"clip", c.target_clip}}},
            {"trainer", c.trainer},
            {"genes", genes}};
}

TrainConfig train_config_from_json(const json& j, const std::string& where) {
    TrainConfig c = default_train_config();
    try {
        if (j.value("program", "") != "gene_interaction")
            throw Error("not written by gene_interaction train (its 'program' field is not 'gene_interaction')");
        c.model = io::cgt_config_from_json(j.at("model"), where + ": model");
        const auto& g = j.at("graphs");
        c.string_modes = g.at("string_modes").get<std::vector<std::string>>();
        c.yeastract = g.at("yeastract").get<bool>();
        c.graph_layer = g.at("layer").get<int>();
        c.graph_lambda = g.at("lambda").get<double>();
        c.row_rate = g.at("row_rate").get<double>();
        const auto& d = j.at("data");
        c.pairs = d.at("pairs_in_data_dir").get<bool>() ? std::string() : d.at("pairs").get<std::string>();
        c.val_fraction = d.at("validation_fraction").get<double>();
        c.split_seed = d.at("split_seed").get<std::uint64_t>();
        const auto& t = j.at("target");
        c.target = t.at("kind").get<std::string>();
        c.loss = t.at("loss").get<std::string>();
        c.target_clip = t.at("clip").get<double>();
        c.trainer = j.at("trainer").get<train::TrainerOptions>();
    } catch (const json::exception& e) {
        throw IoError(fmt::format("{}: the configuration is incomplete or invalid: {}", where, e.what()));
    }
    return c;
}

TrainConfig parse_train(io::CommandLine& a, std::optional<std::string>& resume) {
    TrainConfig c = default_train_config();
    resume = a.value("--resume");
    if (auto v = a.value("--preset")) {
        if (*v != "full") throw UsageError(fmt::format("--preset: '{}' is not 'full'", *v));
        c.model.d_model = 64;
        c.model.num_layers = 6;
        c.model.num_heads = 8;
        c.model.pert_heads = 8;
        c.graph_layer = 1;
        c.trainer.batch_size = 256;
        c.trainer.lr = 5e-4;
        c.trainer.epochs = 20;
    }
    if (auto v = a.value("--out")) c.out = *v;
    if (auto v = a.value("--pairs")) c.pairs = *v;
    a.get("--val-fraction", c.val_fraction);
    a.get("--split-seed", c.split_seed);
    if (auto v = a.value("--string")) c.string_modes = *v == "none" ? std::vector<std::string>{} : split_list(*v);
    if (auto v = a.value("--yeastract")) {
        if (*v != "on" && *v != "off") throw UsageError(fmt::format("--yeastract: '{}' is not 'on' or 'off'", *v));
        c.yeastract = *v == "on";
    }
    a.get("--graph-layer", c.graph_layer);
    a.get("--graph-lambda", c.graph_lambda);
    a.get("--row-rate", c.row_rate);
    a.get("--d", c.model.d_model);
    a.get("--layers", c.model.num_layers);
    a.get("--heads", c.model.num_heads);
    a.get("--pert-heads", c.model.pert_heads);
    a.get("--dropout", c.model.dropout);
    if (auto v = a.value("--pool")) {
        try {
            c.model.gi_pooling = io::parse_gi_pooling(*v);
        } catch (const Error& e) {
            throw UsageError(fmt::format("--pool: {}", e.what()));
        }
    }
    if (auto v = a.value("--target")) c.target = *v;
    if (auto v = a.value("--loss")) c.loss = *v;
    a.get("--target-clip", c.target_clip);
    a.get("--epochs", c.trainer.epochs);
    a.get("--batch", c.trainer.batch_size);
    a.get("--lr", c.trainer.lr);
    a.get("--min-lr-ratio", c.trainer.min_lr_ratio);
    a.get("--warmup", c.trainer.warmup_fraction);
    a.get("--cycle-epochs", c.trainer.cycle_epochs);
    a.get("--weight-decay", c.trainer.weight_decay);
    a.get("--clip", c.trainer.clip_norm);
    a.get("--patience", c.trainer.patience);
    a.get("--seed", c.trainer.seed);
    return c;
}

void check_train_config(const TrainConfig& c) {
    for (const auto& m : c.string_modes)
        if (std::find(io::string_modes().begin(), io::string_modes().end(), m) == io::string_modes().end())
            throw UsageError(fmt::format("--string: '{}' is not a STRING mode (reaction, binding, catalysis, activation, inhibition, "
                                         "ptmod, expression) or 'none'",
                                         m));
    const std::size_t graphs = c.string_modes.size() + (c.yeastract ? 1 : 0);
    if (graphs > static_cast<std::size_t>(c.model.num_heads))
        throw UsageError(fmt::format("{} graphs need as many heads (each graph regularises its own head), but --heads is {}", graphs,
                                     c.model.num_heads));
    if (graphs > 0 && (c.graph_layer < 0 || c.graph_layer >= c.model.num_layers))
        throw UsageError(fmt::format("--graph-layer {} is not a layer of a {}-layer encoder (0-based)", c.graph_layer, c.model.num_layers));
    if (c.model.d_model < 1 || c.model.num_heads < 1 || c.model.d_model % c.model.num_heads != 0)
        throw UsageError(fmt::format("--heads {} must divide --d {}", c.model.num_heads, c.model.d_model));
    if (c.model.pert_heads < 1 || c.model.d_model % c.model.pert_heads != 0)
        throw UsageError(fmt::format("--pert-heads {} must divide --d {}", c.model.pert_heads, c.model.d_model));
    if (c.trainer.batch_size < 1 || c.trainer.batch_size > (1 << 20))
        throw UsageError(fmt::format("--batch {} is outside [1, 1048576]", c.trainer.batch_size));
    if (c.trainer.epochs < 1) throw UsageError(fmt::format("--epochs {} must be >= 1", c.trainer.epochs));
    if (c.model.num_layers < 1) throw UsageError(fmt::format("--layers {} must be >= 1", c.model.num_layers));
    if (!(c.model.dropout >= 0.0 && c.model.dropout < 1.0)) throw UsageError(fmt::format("--dropout {} must be in [0, 1)", c.model.dropout));
    if (!(c.graph_lambda >= 0.0)) throw UsageError(fmt::format("--graph-lambda {} must be >= 0", c.graph_lambda));
    if (!(c.row_rate > 0.0 && c.row_rate <= 1.0)) throw UsageError(fmt::format("--row-rate {} must be in (0, 1]", c.row_rate));
    if (c.target != "residual" && c.target != "label" && c.target != "loo-residual")
        throw UsageError(fmt::format("--target '{}' is not residual, label or loo-residual", c.target));
    if (c.loss != "mse" && c.loss != "log_cosh") throw UsageError(fmt::format("--loss '{}' is not mse or log_cosh", c.loss));
    if (!(c.target_clip >= 0.0)) throw UsageError(fmt::format("--target-clip {} must be >= 0", c.target_clip));
    if (!(c.val_fraction > 0.0 && c.val_fraction < 1.0)) throw UsageError(fmt::format("--val-fraction {} must be in (0, 1)", c.val_fraction));
    try {
        c.trainer.validate();
    } catch (const Error& e) {
        throw UsageError(e.what());
    }
}

/// The seeded split: a Fisher-Yates permutation of the pairs from CounterRng(split_seed); the first
/// round(fraction·n) of it are the validation pairs (both parts then in file order).
std::pair<std::vector<std::size_t>, std::vector<std::size_t>> split_pairs(std::size_t n, double fraction, std::uint64_t seed) {
    const std::vector<std::size_t> perm = train::epoch_order(seed, -1, n);
    const auto n_val = static_cast<std::size_t>(std::llround(fraction * static_cast<double>(n)));
    std::vector<std::size_t> val(perm.begin(), perm.begin() + static_cast<std::ptrdiff_t>(n_val));
    std::vector<std::size_t> tr(perm.begin() + static_cast<std::ptrdiff_t>(n_val), perm.end());
    std::sort(val.begin(), val.end());
    std::sort(tr.begin(), tr.end());
    return {tr, val};
}

void print_side_by_side(std::size_t n, const train::RegressionMetrics& additive, const train::RegressionMetrics& cgt,
                        const std::string& cgt_name, double lambda) {
    const std::string add_name = fmt::format("additive baseline (ridge, λ = {:g})", lambda);
    fmt::print("\n{:<44s}{:>9s}{:>10s}{:>10s}\n", fmt::format("validation ({} pairs)", n), "Pearson", "Spearman", "RMSE");
    fmt::print("  {:<42s}{:9.4f}{:10.4f}{:10.5f}\n", add_name, additive.pearson, additive.spearman, additive.rmse);
    fmt::print("  {:<42s}{:9.4f}{:10.4f}{:10.5f}\n", cgt_name, cgt.pearson, cgt.spearman, cgt.rmse);
    fmt::print("  {:<42s}{:+9.4f}{:+10.4f}{:+10.5f}\n", "CGT - additive", cgt.pearson - additive.pearson, cgt.spearman - additive.spearman,
               cgt.rmse - additive.rmse);
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
    std::int64_t stop_after = 0;
    args.get("--stop-after", stop_after);
    if (stop_after < 0) throw UsageError(fmt::format("--stop-after {} must be >= 0", stop_after));
    TrainConfig cfg = parse_train(args, resume);
    args.finish();
    std::optional<fs::path> resume_file;
    json resume_config;
    if (resume) {
        for (const auto& g : args.given())
            if (g != "--resume" && g != "--out" && g != "--pairs" && g != "--stop-after")
                throw UsageError(fmt::format("with --resume the configuration comes from the checkpoint: drop {}", g));
        resume_file = fs::path(*resume);
        if (fs::is_directory(*resume_file)) resume_file = *resume_file / "last.safetensors";
        const io::CheckpointHeader h = io::read_checkpoint_header(*resume_file);
        if (!h.celltx) throw IoError(fmt::format("{}: not a gene_interaction checkpoint (no celltx metadata)", h.path));
        const fs::path out = cfg.out;
        const std::string pairs = cfg.pairs;
        cfg = train_config_from_json(h.config, h.path);
        // The run continues where its checkpoint lies unless --out says otherwise.
        cfg.out = args.given().count("--out") ? out : resume_file->parent_path().empty() ? fs::path(".") : resume_file->parent_path();
        if (args.given().count("--pairs")) cfg.pairs = pairs;
        resume_config = h.config;
    }
    check_train_config(cfg);
    cfg.data_dir = resolve_data_dir(data_flag);
    const io::YeastData data{cfg.data_dir};
    const fs::path pairs_path = cfg.pairs.empty() ? cfg.data_dir / kDefaultPairs : fs::path(cfg.pairs);
    std::vector<NeededFile> needed{genes_file(data), pairs_file(pairs_path)};
    if (!cfg.string_modes.empty()) needed.push_back(string_file(data));
    if (cfg.yeastract) needed.push_back(yeastract_file(data));
    require_files(cfg.data_dir, needed);

    // Data and split.
    const auto universe = io::GeneUniverse::from_table(data.genes_table());
    const index_t N = universe.size();
    const auto labels = io::read_gi_labels(pairs_path, universe);
    const auto& recs = labels.records;
    if (recs.size() < 10) throw IoError(fmt::format("{}: {} labelled pairs; training needs at least 10", pairs_path.string(), recs.size()));
    const auto [tr_idx, val_idx] = split_pairs(recs.size(), cfg.val_fraction, cfg.split_seed);
    train::PerturbationSamples train_set, val_set;
    for (auto i : tr_idx) {
        train_set.sets.push_back(recs[i].genes);
        train_set.labels.push_back(recs[i].label);
    }
    for (auto i : val_idx) {
        val_set.sets.push_back(recs[i].genes);
        val_set.labels.push_back(recs[i].label);
    }
    std::set<index_t> genes_seen;
    for (const auto& r : recs) genes_seen.insert(r.genes.begin(), r.genes.end());
    fmt::print("data: {} genes (SGD R64-4-1); {} labelled pairs over {} genes from {}\n", N, recs.size(), genes_seen.size(),
               pairs_path.string());
    fmt::print("split: {} training, {} validation pairs (fraction {}, split seed {})\n", tr_idx.size(), val_idx.size(), cfg.val_fraction,
               cfg.split_seed);

    // The additive baseline, λ by exact leave-one-out on the training pairs.
    RidgeSelection sel;
    AdditiveBaseline additive = AdditiveBaseline::fit_loo(N, train_set.sets, train_set.labels, {}, &sel);
    const auto additive_val = train::regression_metrics(additive.predict(val_set.sets), val_set.labels);
    fmt::print("additive baseline: ridge ε ≈ b + a_i + a_j, λ = {:.3g} chosen by leave-one-out on the training pairs (LOO MSE {:.6g}); "
               "validation Pearson {:.4f}, Spearman {:.4f}\n",
               sel.lambda, *std::min_element(sel.loo_mse.begin(), sel.loo_mse.end()), additive_val.pearson, additive_val.spearman);

    // The model and its graphs: graph k regularises head k of cfg.graph_layer, self-loops on every row.
    cfg.model.num_genes = N;
    cfg.model.seed = cfg.trainer.seed;
    GraphRegularizerOptions gopt;
    gopt.row_rate = cfg.row_rate;
    gopt.seed = cfg.trainer.seed;
    Model<B> model(cfg.model, gopt);
    const GraphOptions loops{.symmetrize = false, .self_loops = true};
    index_t head = 0;
    if (!cfg.string_modes.empty()) {
        const auto modes = io::read_string_actions(data.string_actions(), universe);
        for (const auto& m : cfg.string_modes)
            model.add_graph(GeneGraph(N, modes.at(m).edges, loops), {{cfg.graph_layer}, head++, cfg.graph_lambda}, "string_" + m);
    }
    if (cfg.yeastract)
        model.add_graph(GeneGraph(N, io::read_yeastract(data.yeastract(), universe).edges, loops), {{cfg.graph_layer}, head++, cfg.graph_lambda},
                        "yeastract");
    const auto& reg = model.graph_regularizer();
    for (index_t g = 0; g < reg.num_graphs(); ++g)
        fmt::print("graph {:18s} {:7d} edges (self-loops included), layer {}, head {}, λ = {:g}\n", reg.name(g), reg.graph(g).nnz(),
                   cfg.graph_layer, reg.assignment(g).head, reg.assignment(g).lambda);
    fmt::print("model: CGT d={} L={} H={} Type I heads={} dropout={} pooling={}, {} parameters{}; target: {}{}\n", cfg.model.d_model,
               cfg.model.num_layers, cfg.model.num_heads, cfg.model.pert_heads, cfg.model.dropout, io::gi_pooling_name(cfg.model.gi_pooling),
               parameter_count<float, B>(model), B::is_device ? fmt::format(" on {}", B::name) : std::string(), cfg.target,
               cfg.target == "label" ? " (the CGT alone)" : " (the CGT corrects the additive baseline)");

    std::vector<double> targets;
    if (cfg.target == "loo-residual") targets = AdditiveBaseline::loo_residuals(N, train_set.sets, train_set.labels, sel.lambda);
    const AdditiveBaseline* offset = cfg.target == "label" ? nullptr : &additive;
    Task<B> task(model, train_set, val_set, offset, targets, cfg.loss == "mse" ? loss::PhenotypeLoss::mse : loss::PhenotypeLoss::log_cosh,
              cfg.target_clip);
    train::Trainer<Task<B>> trainer(task, cfg.trainer);
    const json config = train_config_json(cfg, pairs_path, universe, tr_idx.size(), val_idx.size());
    if (resume_file) {
        if (resume_config.at("genes") != config.at("genes"))
            throw IoError(fmt::format("{}: the checkpoint's gene universe differs from {}", resume_file->string(), data.genes_table().string()));
        AdditiveBaseline loaded = additive;
        io::load_checkpoint(*resume_file, model, trainer, loaded);
        if (loaded.gene_effects() != additive.gene_effects() || loaded.intercept() != additive.intercept())
            throw IoError(fmt::format("{}: the checkpoint's additive baseline differs from the one fit on these pairs (the data changed)",
                                      resume_file->string()));
        fmt::print("resumed from {}: epoch {}, batch {}, step {}\n", resume_file->string(), trainer.epoch(), trainer.batch(),
                   trainer.step_count());
    }
    fs::create_directories(cfg.out);
    io::write_text_atomic(cfg.out / "config.json", config.dump(2) + "\n");
    fmt::print("run directory: {} ({} epochs of {} steps, batch {}, lr {:g}; data and model ready in {:.1f} s)\n", cfg.out.string(),
               cfg.trainer.epochs, trainer.batches_per_epoch(), cfg.trainer.batch_size, cfg.trainer.lr, seconds_since(t_start));
    std::fflush(stdout);

    // Progress: a line rewritten in place on a terminal, one line every 30 s otherwise.
    const bool tty = ::isatty(STDOUT_FILENO) != 0;
    bool line_open = false;
    double last_print = -1e9;
    trainer.on_progress = [&](const train::Progress& p) {
        if (tty) {
            fmt::print("\r{}   ", train::format_progress(p));
            line_open = true;
        } else if (p.elapsed_seconds - last_print >= 30.0) {
            fmt::print("{}\n", train::format_progress(p));
            last_print = p.elapsed_seconds;
        }
        std::fflush(stdout);
    };
    trainer.on_epoch_end = [&](const train::EpochRecord& r) {
        if (line_open) fmt::print("\n");
        line_open = false;
        fmt::print("epoch {:3d}/{}  train {} (z) {:.4f} + graph {:.3f}  validation MSE {:.6f}  Pearson {:.4f}  Spearman {:.4f}  "
                   "lr {:.2e}  {:.1f} s{}\n",
                   r.epoch, cfg.trainer.epochs, cfg.loss, r.train_phenotype, r.train_auxiliary, r.validation.mse, r.validation.pearson,
                   r.validation.spearman, r.lr, r.seconds, r.best ? "  * best" : "");
        io::save_checkpoint(cfg.out / "last.safetensors", model, config, trainer, additive);
        if (r.best) io::save_checkpoint(cfg.out / "best.safetensors", model, config, trainer, additive);
        io::write_text_atomic(cfg.out / "metrics.csv", train::metrics_csv(trainer.history()));
        std::fflush(stdout);
    };
    std::int64_t epochs_here = 0;
    while (!trainer.finished() && (stop_after == 0 || epochs_here < stop_after)) {
        const std::int64_t e = trainer.epoch();
        trainer.step();
        epochs_here += trainer.epoch() - e;
    }
    if (!trainer.finished())
        fmt::print("stopped after {} epoch{} as asked (--stop-after); continue with: gene_interaction train --resume {}\n", epochs_here,
                   epochs_here == 1 ? "" : "s", cfg.out.string());
    if (trainer.stopped_early()) fmt::print("stopped early: no better validation Pearson for {} epochs\n", cfg.trainer.patience);

    // The best checkpoint's predictions, next to the additive baseline's.
    const fs::path best = cfg.out / "best.safetensors";
    if (!fs::exists(best)) throw Error(fmt::format("no epoch gave a finite validation Pearson, so {} was not written", best.string()));
    train::LabelScaler scaler;
    AdditiveBaseline best_additive;
    io::load_checkpoint(best, model, scaler, best_additive);
    const std::vector<double> pred = train::predict_gene_interactions(model, val_set.sets, scaler, offset ? &best_additive : nullptr);
    const std::vector<double> add_pred = additive.predict(val_set.sets);
    const auto cgt_val = train::regression_metrics(pred, val_set.labels);
    std::string csv = "gene_a,gene_b,label,prediction,additive\n";
    for (std::size_t n = 0; n < val_set.size(); ++n)
        csv += fmt::format("{},{},{:.9g},{:.9g},{:.9g}\n", universe.name(val_set.sets[n][0]), universe.name(val_set.sets[n].back()),
                           val_set.labels[n], pred[n], add_pred[n]);
    io::write_text_atomic(cfg.out / "validation_predictions.csv", csv);
    std::string pairs_txt;
    for (std::size_t n = 0; n < val_set.size(); ++n)
        pairs_txt += fmt::format("2 {} {} {}\n", universe.name(val_set.sets[n][0]), universe.name(val_set.sets[n].back()), val_set.labels[n]);
    io::write_text_atomic(cfg.out / "validation_pairs.txt", pairs_txt);
    print_side_by_side(val_set.size(), additive_val, cgt_val, fmt::format("CGT (best epoch {} of {})", trainer.best_epoch(), trainer.epoch()),
                       sel.lambda);
    fmt::print("\nwrote {} (best), {} (last), {}, {} and {} (the validation pairs); total {:.1f} s\n", best.string(),
               (cfg.out / "last.safetensors").string(), (cfg.out / "metrics.csv").string(), (cfg.out / "validation_predictions.csv").string(),
               (cfg.out / "validation_pairs.txt").string(), seconds_since(t_start));
    return 0;
}

// ---------------------------------------------------------------------------------------------
// predict

void print_predict_help() {
    fmt::print(R"(gene_interaction predict: predict the interaction score of gene pairs with a trained model.

  --checkpoint PATH     a checkpoint file, or a run directory (its best.safetensors)
  --pairs FILE          pairs, one per line: "2 <ORF_a> <ORF_b> [epsilon]", "<ORF_a> <ORF_b> [epsilon]"
                        (DCell's format; the label column is optional and ignored)
  --out FILE.csv        writes gene_a,gene_b,prediction in the input's order

A checkpoint written by 'gene_interaction train' carries its configuration, gene universe, label
statistics and additive baseline: nothing else is needed. Weights exported from the PyTorch model
(a safetensors state_dict with the same names) take the data directory's gene universe and:
  --config FILE         a run's config.json (its "model" section), or else
  --heads H --pert-heads P --pool mean|sum   (sizes N, d, L come from the tensor shapes;
                        default H=8, P=8, mean)
  --label-mean M --label-sd S   undo the z-scoring of the labels the model was trained on
                        (default 0 and 1: the model's raw output)
  --data DIR            data directory (default: $CELLTX_DATA, else $CELLTX_DATA_DIR, else ../shared/data)

  --device cpu|cuda     where the model runs (default cpu; cuda: a program compiled by nvcc and a CUDA device)
)");
}

fs::path resolve_checkpoint(const fs::path& p) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
        const fs::path best = p / "best.safetensors";
        if (fs::is_regular_file(best, ec)) return best;
        std::string have;
        for (const auto& e : fs::directory_iterator(p, ec)) have += (have.empty() ? "" : ", ") + e.path().filename().string();
        throw IoError(fmt::format("{}: a run directory without best.safetensors (it holds: {})", p.string(), have.empty() ? "nothing" : have));
    }
    if (!fs::is_regular_file(p, ec)) throw IoError(fmt::format("{}: no such checkpoint file or run directory", p.string()));
    return p;
}

template <Backend B>
int run_predict(io::CommandLine& args) {
    if (args.help()) {
        print_predict_help();
        return 0;
    }
    const auto ckpt_flag = args.value("--checkpoint");
    const auto pairs_flag = args.value("--pairs");
    const auto out_flag = args.value("--out");
    const auto config_flag = args.value("--config");
    const auto data_flag = args.value("--data");
    int heads = 8, pert_heads = 8;
    args.get("--heads", heads);
    args.get("--pert-heads", pert_heads);
    std::string pool = "mean";
    args.get("--pool", pool);
    double label_mean = 0.0, label_sd = 1.0;
    args.get("--label-mean", label_mean);
    args.get("--label-sd", label_sd);
    args.finish();
    if (!ckpt_flag) throw UsageError("--checkpoint is required");
    if (!pairs_flag) throw UsageError("--pairs is required");
    if (!out_flag) throw UsageError("--out is required");

    const fs::path ckpt = resolve_checkpoint(*ckpt_flag);
    const io::SafetensorsFile file(ckpt);
    const io::CheckpointHeader h = io::checkpoint_header(file);
    CgtConfig cfg;
    io::GeneUniverse universe;
    train::LabelScaler scaler;
    AdditiveBaseline additive;
    bool residual = false;
    std::string about;
    if (h.celltx) {
        for (const char* f : {"--config", "--heads", "--pert-heads", "--pool", "--label-mean", "--label-sd", "--data"})
            if (args.given().count(f)) throw UsageError(fmt::format("{} is for PyTorch weights; {} carries its own configuration", f, ckpt.string()));
        const TrainConfig tc = train_config_from_json(h.config, h.path);
        cfg = tc.model;
        try {
            const auto& g = h.config.at("genes");
            universe = io::GeneUniverse::from_names(g.at("systematic").get<std::vector<std::string>>(),
                                                    g.at("standard").get<std::vector<std::string>>(), io::GeneOrder::file);
        } catch (const json::exception& e) {
            throw IoError(fmt::format("{}: the checkpoint's gene list is invalid: {}", h.path, e.what()));
        }
        residual = tc.target != "label";
        std::int64_t epoch = 0;
        double best = 0;
        if (h.state.contains("trainer.epoch")) epoch = h.state.at("trainer.epoch").get<std::int64_t>();
        if (h.state.contains("trainer.best_pearson") && h.state.at("trainer.best_pearson").is_number())
            best = h.state.at("trainer.best_pearson").get<double>();
        about = fmt::format("celltx checkpoint after epoch {} (best validation Pearson {:.4f}), target {}", epoch, best, tc.target);
    } else {
        if (config_flag) {
            json j;
            try {
                std::ifstream in(*config_flag);
                if (!in) throw IoError(fmt::format("{}: cannot open the configuration file", *config_flag));
                std::stringstream text;
                text << in.rdbuf();
                j = json::parse(text.str());
            } catch (const json::exception& e) {
                throw IoError(fmt::format("{}: not valid JSON: {}", *config_flag, e.what()));
            }
            cfg = io::cgt_config_from_json(j.contains("model") ? j.at("model") : j, *config_flag);
        } else {
            cfg = io::infer_cgt_config(file, heads, pert_heads);
            try {
                cfg.gi_pooling = io::parse_gi_pooling(pool);
            } catch (const Error& e) {
                throw UsageError(fmt::format("--pool: {}", e.what()));
            }
        }
        const fs::path dir = resolve_data_dir(data_flag);
        const io::YeastData data{dir};
        require_files(dir, {genes_file(data)});
        universe = io::GeneUniverse::from_table(data.genes_table());
        if (universe.size() != cfg.num_genes)
            throw IoError(fmt::format("{}: the weights embed {} genes but the universe {} has {}", ckpt.string(), cfg.num_genes,
                                      data.genes_table().string(), universe.size()));
        if (!(label_sd > 0.0) || !std::isfinite(label_mean)) throw UsageError(fmt::format("--label-sd {} must be > 0", label_sd));
        std::vector<double> two{label_mean - label_sd, label_mean + label_sd};  // mean m, population sd s
        scaler = train::LabelScaler::fit(two, 1);
        about = fmt::format("PyTorch weights (N={} d={} L={} H={} P={} pooling {})", cfg.num_genes, cfg.d_model, cfg.num_layers, cfg.num_heads,
                            cfg.pert_heads, io::gi_pooling_name(cfg.gi_pooling));
    }
    Model<B> model(cfg);
    if (h.celltx) io::load_checkpoint(ckpt, model, scaler, additive);
    else io::load_state_dict(model, file);

    const auto queries = io::read_gi_queries(*pairs_flag, universe);
    std::vector<std::vector<index_t>> sets;
    for (const auto& q : queries) {
        if (q.genes.size() != 2)
            throw IoError(fmt::format("{}:{}: predict takes gene pairs; this line has {} gene{}", *pairs_flag, q.line, q.genes.size(),
                                      q.genes.size() == 1 ? "" : "s"));
        sets.push_back(q.genes);
    }
    if (sets.empty()) throw IoError(fmt::format("{}: no pairs", *pairs_flag));
    const auto t0 = std::chrono::steady_clock::now();
    const std::vector<double> pred = train::predict_gene_interactions(model, sets, scaler, residual ? &additive : nullptr);
    std::string csv = "gene_a,gene_b,prediction\n";
    for (std::size_t i = 0; i < queries.size(); ++i) csv += fmt::format("{},{},{:.9g}\n", queries[i].names[0], queries[i].names[1], pred[i]);
    io::write_text_atomic(*out_flag, csv);
    fmt::print("{}: {}\nwrote {} predictions for {} to {} ({:.1f} s)\n", ckpt.string(), about, pred.size(), *pairs_flag, *out_flag,
               seconds_since(t0));
    return 0;
}

// ---------------------------------------------------------------------------------------------
// evaluate

void print_evaluate_help() {
    fmt::print(R"(gene_interaction evaluate: metrics of predictions against labelled pairs.

  --pred FILE.csv       predictions as 'predict' writes them: a header naming the columns gene_a,
                        gene_b and prediction (others are ignored), one pair per line
  --pairs FILE          labelled pairs, "2 <ORF_a> <ORF_b> <epsilon>" (or "<ORF_a> <ORF_b> <epsilon>")

Every labelled pair must have a prediction (the pair in either order); predictions of pairs that
are not labelled are ignored. Prints the count, MSE, RMSE, Pearson and Spearman (ties averaged).

  --device cpu|cuda     accepted as by train and predict; evaluate reads CSV files and computes on the host
)");
}

int run_evaluate(io::CommandLine& args) {
    if (args.help()) {
        print_evaluate_help();
        return 0;
    }
    const auto pred_flag = args.value("--pred");
    const auto pairs_flag = args.value("--pairs");
    args.finish();
    if (!pred_flag) throw UsageError("--pred is required");
    if (!pairs_flag) throw UsageError("--pairs is required");

    struct Pred {
        double value;
        std::size_t line;
    };
    std::map<std::pair<std::string, std::string>, Pred> preds;
    {
        io::TextReader in(*pred_flag);
        std::string_view line;
        std::vector<std::string_view> f;
        if (!in.next_line(line)) throw io::line_error(*pred_flag, 0, "empty file (expected the header gene_a,gene_b,prediction)");
        io::split(line, ',', f);
        std::size_t col_a = f.size(), col_b = f.size(), col_p = f.size();
        for (std::size_t c = 0; c < f.size(); ++c) {
            if (f[c] == "gene_a") col_a = c;
            if (f[c] == "gene_b") col_b = c;
            if (f[c] == "prediction") col_p = c;
        }
        if (col_a == f.size() || col_b == f.size() || col_p == f.size())
            in.fail("expected a header with the columns gene_a, gene_b and prediction, found '{}'", line);
        const std::size_t columns = f.size();
        while (in.next_line(line)) {
            if (line.empty()) continue;
            io::split(line, ',', f);
            if (f.size() != columns) in.fail("expected {} comma-separated fields, found {}", columns, f.size());
            double v = 0;
            const std::string_view pv = f[col_p];
            const auto [p, ec] = std::from_chars(pv.data(), pv.data() + pv.size(), v);
            if (ec != std::errc{} || p != pv.data() + pv.size() || !std::isfinite(v)) in.fail("prediction '{}' is not a finite number", pv);
            std::pair<std::string, std::string> key{std::string(f[col_a]), std::string(f[col_b])};
            if (key.second < key.first) std::swap(key.first, key.second);
            const auto [it, fresh] = preds.emplace(key, Pred{v, in.line_number()});
            if (!fresh && it->second.value != v)
                in.fail("pair {} {} was predicted {} on line {} and {} here", f[col_a], f[col_b], it->second.value, it->second.line, v);
        }
    }
    std::vector<double> prediction, truth;
    {
        io::TextReader in(*pairs_flag);
        std::string_view line;
        std::vector<std::string_view> t;
        while (in.next_line(line)) {
            io::split_whitespace(line, t);
            if (t.empty()) continue;
            std::size_t first = 0;
            if (t.size() == 4 && t[0] == "2") first = 1;
            else if (t.size() != 3) in.fail("expected '2 <ORF_a> <ORF_b> <epsilon>' or '<ORF_a> <ORF_b> <epsilon>', found {} fields", t.size());
            double y = 0;
            const auto [p, ec] = std::from_chars(t.back().data(), t.back().data() + t.back().size(), y);
            if (ec != std::errc{} || p != t.back().data() + t.back().size() || !std::isfinite(y))
                in.fail("label '{}' is not a finite number", t.back());
            std::pair<std::string, std::string> key{std::string(t[first]), std::string(t[first + 1])};
            if (key.second < key.first) std::swap(key.first, key.second);
            const auto it = preds.find(key);
            if (it == preds.end()) in.fail("no prediction for the pair {} {} in {}", t[first], t[first + 1], *pred_flag);
            prediction.push_back(it->second.value);
            truth.push_back(y);
        }
    }
    if (truth.empty()) throw IoError(fmt::format("{}: no labelled pairs", *pairs_flag));
    const auto m = train::regression_metrics(prediction, truth);
    fmt::print("{} labelled pairs of {} matched in {} ({} predictions)\n", truth.size(), *pairs_flag, *pred_flag, preds.size());
    fmt::print("MSE {:.6g}\nRMSE {:.6g}\nPearson {:.4f}\nSpearman {:.4f}\n", m.mse, m.rmse, m.pearson, m.spearman);
    return 0;
}

void print_help() {
    fmt::print(R"(gene_interaction: the Cell Graph Transformer on yeast genetic interactions.

  gene_interaction train    [--out runs/] [--pairs FILE] [...]   train, next to the additive baseline
  gene_interaction predict  --checkpoint PATH --pairs FILE --out FILE.csv
  gene_interaction evaluate --pred FILE.csv --pairs FILE
  gene_interaction <command> --help

Every command takes --device cpu|cuda (default cpu): train and predict run the model there.

Data: --data DIR, else $CELLTX_DATA, else $CELLTX_DATA_DIR, else ../shared/data (docs/data.md).
)");
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
        std::fprintf(stderr, "gene_interaction: unknown command '%s' (train, predict, evaluate; see gene_interaction --help)\n",
                     command.c_str());
        return 2;
    } catch (const UsageError& e) {
        std::fprintf(stderr, "gene_interaction %s: %s\n(see gene_interaction %s --help)\n", command.c_str(), e.what(), command.c_str());
        return 2;
    } catch (const std::exception& e) {
        // A progress line may be open on the terminal: the error starts on a line of its own.
        std::fprintf(stderr, "%sgene_interaction %s: %s\n", ::isatty(STDOUT_FILENO) ? "\n" : "", command.c_str(), e.what());
        return 1;
    }
}

} // namespace

int main(int argc, char** argv) {
    return main_on_device(argc, argv, [&](auto backend) { return run<decltype(backend)>(argc, argv); });
}
