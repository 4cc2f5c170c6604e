#!/usr/bin/env bash
# celltx against the PyTorch anchor (../shared/anchors/torch_cgt_bench.py) on every CPU configuration,
# side by side in one run: for each configuration the anchor, then ours, each in its own process
# (so that each peak RSS is that process's), RUNS timed repetitions after one warm-up, 2 threads.
# Prints one table: medians and min–max, the ratio, the peak RSS of each, the anchor's measured BLAS
# rate (blas_gflops), our GFLOP/s and its fraction of our packed sgemm's rate measured in the same run
# (cgt_train_step --config sgemm_peak, before and after), and the load average before and after.
#
# Rows marked "shortcut" are NOT the anchor's work: Type I and the training step with rows on demand
# (only the perturbed rows, which is all the GI readout reads). They are never the same-work ratio.
#
# Usage (after building cgt_train_step and state_step; needs python3-torch and libopenblas0-pthread):
#   benchmarks/compare.sh [build-dir] [configs]
#   RUNS=5 THREADS=2 ANCHOR=../shared/anchors/torch_cgt_bench.py override the defaults.
#   configs: a comma list of row names below (default: all). The whole table takes about 25 minutes.
set -euo pipefail
build=${1:-build}
only=${2:-}
runs=${RUNS:-5}
threads=${THREADS:-2}
here=$(cd "$(dirname "$0")" && pwd)
anchor=${ANCHOR:-$here/../../shared/anchors/torch_cgt_bench.py}
cgt="$build/benchmarks/cgt_train_step"
state="$build/benchmarks/state_step"
for b in "$cgt" "$state"; do
  [ -x "$b" ] || { echo "compare.sh: $b not found (cmake --build $build --target cgt_train_step state_step)" >&2; exit 1; }
done
[ -f "$anchor" ] || { echo "compare.sh: the anchor $anchor is missing (set ANCHOR=...)" >&2; exit 1; }
(( runs >= 5 )) || { echo "compare.sh: RUNS=$runs: at least 5 runs per side" >&2; exit 1; }

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# row name | anchor config | our command (after the binary) | kind
rows=(
  "enc_fwd_infer|enc_fwd_infer|cgt|--config enc_fwd_infer|same work"
  "enc_fwdbwd|enc_fwdbwd|cgt|--config enc_fwdbwd|same work"
  "typeI_all_B32|typeI_B32|cgt|--config typeI_all_B32|same work"
  "train_step|train_step|cgt|--config train_step|same work"
  "state_fwd|state_fwd|state|--anchor --fwd|same work"
  "state_step|state_step|state|--anchor|same work"
  "typeI_B32_rows_on_demand|typeI_B32|cgt|--config typeI_B32|shortcut"
  "train_step_rows_on_demand|train_step|cgt|--config train_step_rows_on_demand|shortcut"
)

json_line() { grep '^{' | tail -1; }
sgemm() { OMP_NUM_THREADS=$threads "$cgt" --config sgemm_peak --reps "$runs" --warmup 1 | json_line; }

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "# $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $threads threads each, $runs runs after 1 warm-up; load before: $load_before" >&2
sgemm > "$out/sgemm_before.json"
declare -A anchor_cache
: > "$out/rows.txt"
for row in "${rows[@]}"; do
  IFS='|' read -r name aconf which args kind <<< "$row"
  if [ -n "$only" ] && [[ ",$only," != *",$name,"* ]]; then continue; fi
  key=$aconf
  if [ -z "${anchor_cache[$key]:-}" ]; then
    echo "# anchor $aconf" >&2
    /usr/bin/python3 "$anchor" --config "$aconf" --reps "$runs" --warmup 1 --threads "$threads" | json_line > "$out/anchor_$key.json"
    anchor_cache[$key]=1
  fi
  bin=$cgt; [ "$which" = state ] && bin=$state
  echo "# celltx $name" >&2
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=$threads "$bin" $args --reps "$runs" --warmup 1 | json_line > "$out/ours.json"
  printf '%s\t%s\t%s\t%s\n' "$name" "$kind" "$out/anchor_$key.json" "$(cat "$out/ours.json")" >> "$out/rows.txt"
done
sgemm > "$out/sgemm_after.json"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$out" "$load_before" "$load_after" "$runs" <<'PY'
import json, sys
out, load_before, load_after, runs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
sg = [json.load(open(f"{out}/sgemm_{w}.json")) for w in ("before", "after")]
peak = max(s["gflops_per_s"] for s in sg)
print(f"sgemm (celltx packed GEMM, 2048^3): {sg[0]['gflops_per_s']:.1f} GFLOP/s before, {sg[1]['gflops_per_s']:.1f} after; "
      f"load average before {load_before}, after {load_after}; {runs} runs each")
hdr = ("| row | kind | PyTorch median (min–max) s | celltx median (min–max) s | PyTorch / celltx | peak RSS PyTorch MB | "
       "peak RSS celltx MB | less memory | anchor blas_gflops | celltx GFLOP/s | of sgemm peak |")
print(hdr)
print("|---" * (hdr.count("|") - 1) + "|")
for line in open(f"{out}/rows.txt"):
    name, kind, afile, ours = line.rstrip("\n").split("\t")
    a, o = json.load(open(afile)), json.loads(ours)
    ratio = a["median_s"] / o["median_s"]
    gf = o.get("gflops_per_s")
    frac = f"{100 * gf / peak:.0f}%" if gf else "-"
    gfs = f"{gf:.1f}" if gf else "-"
    label = f"**{name}**" if kind == "same work" else f"{name} (shortcut)"
    print(f"| {label} | {kind} | {a['median_s']:.4g} ({a['min_s']:.4g}–{a['max_s']:.4g}) | {o['median_s']:.4g} ({o['min_s']:.4g}–{o['max_s']:.4g}) | "
          f"{ratio:.2f}× | {a['peak_rss_mb']:.0f} | {o['peak_rss_mb']:.0f} | {a['peak_rss_mb'] / o['peak_rss_mb']:.1f}× | "
          f"{a.get('blas_gflops', '-')} | {gfs} | {frac} |")
PY
