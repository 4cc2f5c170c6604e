#!/usr/bin/env bash
# celltx on the GPU (benchmarks/gpu_step.cu) against the PyTorch GPU anchor
# (../shared/anchors/torch_gpu_anchor.py: fp32, and bf16 autocast where the issue lists it), the same
# configurations on the same GPU, run one after the other in one go; prints one table:
#   config | PyTorch fp32 ms | PyTorch peak GB | PyTorch bf16 ms | celltx fp32 ms | celltx peak GB |
#   speed-up vs fp32 | vs bf16 | memory (torch / celltx) | target
# Usage, on a machine with a CUDA GPU and PyTorch (after `cmake -S . -B build`):
#   benchmarks/compare_gpu.sh [build-dir] [configs] [reps]
#   configs default: train_B32,train_B256,prop2_B256,train_B32_N20000,state_step
# Environment: CELLTX_ANCHOR (the anchor script), PYTHON (an interpreter with torch; default python3),
# CELLTX_SKIP_BUILD=1 (use the gpu_step already built). The raw JSON lines are kept in $out (printed).
set -euo pipefail
build=${1:-build}
configs=${2:-train_B32,train_B256,prop2_B256,train_B32_N20000,state_step}
reps=${3:-5}
here=$(cd "$(dirname "$0")" && pwd)
anchor=${CELLTX_ANCHOR:-$here/../../shared/anchors/torch_gpu_anchor.py}
python=${PYTHON:-python3}
[ -f "$anchor" ] || { echo "compare_gpu.sh: the anchor $anchor is missing (set CELLTX_ANCHOR)" >&2; exit 2; }
if [ "${CELLTX_SKIP_BUILD:-0}" != 1 ]; then
  cmake --build "$build" -j"$(nproc)" --target gpu_step >&2
fi
bench="$build/benchmarks/gpu_step"
[ -x "$bench" ] || { echo "compare_gpu.sh: $bench is missing (configure with CUDA: cmake -S . -B $build)" >&2; exit 2; }
out=$(mktemp -d)
echo "# raw results in $out" >&2
for c in ${configs//,/ }; do
  # The anchor runs each configuration in its own process; bf16 where the issue's table has it.
  torch_runs=$c
  case $c in train_B32|prop2_B256|state_step) torch_runs="$c,${c}_bf16" ;; esac
  "$python" "$anchor" --configs "$torch_runs" --reps "$reps" --warmup 2 | sed 's/ # wall.*//' >> "$out/torch.jsonl" || true
  "$bench" --config "$c" --reps "$reps" --warmup 2 | grep '^{' >> "$out/celltx.jsonl" || echo "{\"config\": \"$c\", \"failed\": true}" >> "$out/celltx.jsonl"
done
"$python" - "$out/torch.jsonl" "$out/celltx.jsonl" <<'PY'
import json, sys
def load(path):
    rows = {}
    for line in open(path):
        line = line.strip()
        if line.startswith("{"):
            r = json.loads(line)
            rows[r["config"]] = r
    return rows
torch, ours = load(sys.argv[1]), load(sys.argv[2])
targets = {"train_B32": "<= 29 ms, <= 1 GB", "train_B256": "<= 50 ms", "prop2_B256": "<= 450 ms, <= 8 GB",
           "train_B32_N20000": "<= 200 ms, <= 4 GB", "state_step": "<= 15 ms"}
def ms(r):
    return f"{1e3 * r['median_s']:.1f}" if r and "median_s" in r else ("OOM" if r and r.get("oom") else "-")
def gb(r):
    return f"{r['peak_gpu_gb']:.2f}" if r and r.get("peak_gpu_gb") is not None else "-"
def ratio(a, b):
    return f"{a['median_s'] / b['median_s']:.2f}x" if a and b and "median_s" in a and "median_s" in b else "-"
devices = {r.get("device") for r in list(torch.values()) + list(ours.values()) if r.get("device")}
print(f"GPU: {', '.join(sorted(devices)) or 'unknown'}; medians; speed-up = PyTorch time / celltx time; memory = PyTorch peak / celltx peak")
head = ["config", "PyTorch fp32 ms", "PyTorch peak GB", "PyTorch bf16 ms", "celltx fp32 ms", "celltx peak GB", "speed-up vs fp32", "vs bf16", "memory", "target (celltx fp32)"]
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for c in targets:
    if c not in ours and c not in torch:
        continue
    t, tb, o = torch.get(c), torch.get(c + "_bf16"), ours.get(c)
    mem = f"{t['peak_gpu_gb'] / o['peak_gpu_gb']:.1f}x" if t and o and t.get("peak_gpu_gb") and o.get("peak_gpu_gb") else "-"
    print(f"| `{c}` | {ms(t)} | {gb(t)} | {ms(tb)} | {ms(o)} | {gb(o)} | {ratio(t, o)} | {ratio(tb, o)} | {mem} | {targets[c]} |")
PY
