#!/usr/bin/env bash
# celltx vs the PyTorch anchor (../shared/anchors/torch_cgt_bench.py) on the Cell Graph Transformer
# configurations, same shapes, 2 threads each, run one after the other in one go; prints the ratios.
# Usage (after building the cgt_train_step target):
#   benchmarks/compare_cgt.sh [build-dir] [configs] [reps]
#   configs default: enc_fwd_infer,enc_fwdbwd,typeI_B32,train_step
set -euo pipefail
build=${1:-build}
configs=${2:-enc_fwd_infer,enc_fwdbwd,typeI_B32,train_step}
reps=${3:-2}
here=$(cd "$(dirname "$0")" && pwd)
anchor=${CELLTX_ANCHOR:-$here/../../shared/anchors/torch_cgt_bench.py}
out=$(mktemp -d)
for c in ${configs//,/ }; do
  /usr/bin/python3 "$anchor" --config "$c" --reps "$reps" --warmup 1 | tail -1 >> "$out/torch.jsonl"
  OMP_NUM_THREADS=2 "$build/benchmarks/cgt_train_step" --config "$c" --reps "$reps" --warmup 1 | grep '^{' | tail -1 >> "$out/celltx.jsonl"
done
python3 - "$out/torch.jsonl" "$out/celltx.jsonl" <<'PY'
import json, sys
torch = {r["config"]: r for r in map(json.loads, open(sys.argv[1]))}
ours = {r["config"]: r for r in map(json.loads, open(sys.argv[2]))}
print(f"{'config':15s} {'torch s':>9s} {'celltx s':>9s} {'speed-up':>9s} {'torch RSS MB':>13s} {'celltx RSS MB':>14s} {'less':>6s}")
for c, t in torch.items():
    o = ours.get(c)
    if not o or o.get("failed"):
        print(f"{c:15s} celltx run missing"); continue
    print(f"{c:15s} {t['median_s']:9.2f} {o['median_s']:9.2f} {t['median_s'] / o['median_s']:8.1f}x "
          f"{t['peak_rss_mb']:13.0f} {o['peak_rss_mb']:14.0f} {t['peak_rss_mb'] / o['peak_rss_mb']:5.0f}x")
PY
