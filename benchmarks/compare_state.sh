#!/usr/bin/env bash
# celltx vs the PyTorch anchor on the State Transition model (16 sets × 128 cells, 2000 genes, H 512,
# 4 LLaMA layers, energy loss, float32, 2 threads), in one run: configs state_fwd (forward + loss,
# no gradients) and state_step (forward + loss + backward + Adam), the anchor's recipe on both sides
# (pert_dim 2000, no dropout, no clipping, Adam lr 1e-4), median of 3 runs after 1 warm-up.
# Usage (after building the state_step target): benchmarks/compare_state.sh [build-dir]
#   REPS=3 WARMUP=1 THREADS=2 ANCHOR=/work/shared/anchors/torch_cgt_bench.py override the defaults.
# The anchor's state_step takes about a minute per run on the 2-core machine: about 6 minutes in all.
set -euo pipefail
build=${1:-build}
reps=${REPS:-3}
warmup=${WARMUP:-1}
threads=${THREADS:-2}
anchor=${ANCHOR:-/work/shared/anchors/torch_cgt_bench.py}
bench="$build/benchmarks/state_step"
[ -x "$bench" ] || { echo "compare_state.sh: $bench not found (cmake --build $build --target state_step)" >&2; exit 1; }

echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
results=()
for config in state_fwd state_step; do
    flag=$([ "$config" = state_fwd ] && echo --fwd || true)
    ours=$(OMP_NUM_THREADS=$threads "$bench" --anchor $flag --reps "$reps" --warmup "$warmup")
    echo "$ours"
    theirs=$(/usr/bin/python3 "$anchor" --config "$config" --reps "$reps" --warmup "$warmup" --threads "$threads")
    echo "# torch: $theirs"
    results+=("$(grep '^{' <<<"$ours" | tail -1)" "$(grep '^{' <<<"$theirs" | tail -1)")
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "${results[@]}" <<'PY'
import json, sys
rows = [json.loads(a) for a in sys.argv[1:]]
for ours, theirs in zip(rows[0::2], rows[1::2]):
    c = ours["config"]
    print(f"{c:10s}: celltx median {ours['median_s']:.2f} s (min {ours['min_s']:.2f}, max {ours['max_s']:.2f}) vs torch "
          f"{theirs['median_s']:.2f} s (min {theirs['min_s']:.2f}, max {theirs['max_s']:.2f}) -> "
          f"torch/celltx {theirs['median_s'] / ours['median_s']:.1f}; peak RSS celltx {ours['peak_rss_mb']:.0f} MB vs torch "
          f"{theirs['peak_rss_mb']:.0f} MB -> torch/celltx {theirs['peak_rss_mb'] / ours['peak_rss_mb']:.2f} "
          f"(celltx tensor peak {ours['tensor_peak_mb']:.0f} MB; celltx CPU s per run {ours['cpu_median_s']:.2f})")
PY
