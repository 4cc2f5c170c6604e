#!/usr/bin/env bash
# celltx vs PyTorch, one attention layer at T=6608, d=64, 8 heads (float32, 2 threads), in one run.
# Usage (after building): benchmarks/compare_attention.sh [build-dir]
set -euo pipefail
build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
ours=$(OMP_NUM_THREADS=2 "$build/benchmarks/attention_memory" 6608 64 8 3)
theirs=$(/usr/bin/python3 "$here/attention_torch.py" 6608 64 8 3)
echo "$ours"; echo "$theirs"
python3 - "$ours" "$theirs" <<'PY'
import re, sys
def parse(text):
    out = {}
    for mode in ("eval", "training"):
        m = re.search(mode + r"\s*: forward ([\d.]+) s, backward ([\d.]+) s.*?peak RSS ([\d.]+) MB", text)
        out[mode] = tuple(float(v) for v in m.groups())
    return out
a, b = parse(sys.argv[1]), parse(sys.argv[2])
for mode in ("eval", "training"):
    (fa, ba, ra), (fb, bb, rb) = a[mode], b[mode]
    print(f"{mode:8s}: forward+backward celltx {fa + ba:.2f} s vs torch {fb + bb:.2f} s -> {(fb + bb) / (fa + ba):.1f}x faster; "
          f"peak RSS {ra:.0f} MB vs {rb:.0f} MB -> {rb / ra:.0f}x less")
PY
