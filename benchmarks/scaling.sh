#!/usr/bin/env bash
# Step time and peak memory of the CGT training step (the anchor's work: encoder forward+backward +
# KL + Type I over all B·N rows + GI readout + Adam) against the number of genes N (B = 32) and the
# batch B (N = 6607), for celltx (cgt_train_step --config train_step) and the PyTorch anchor
# (benchmarks/anchor_scaling.py, which runs ../shared/anchors/torch_cgt_bench.py's train_step at any
# N and B). Each point is its own process per side (so that each peak RSS is that point's), ours
# first, then the anchor's, REPS timed steps after 1 warm-up, THREADS threads each.
#
# Writes $OUT/scaling_N.dat and $OUT/scaling_B.dat (columns: x, celltx_s, celltx_mb, torch_s,
# torch_mb, then the min and max of each side's steps; NaN where a side ran out of memory), the raw
# JSON lines in $OUT/scaling_raw.jsonl, and the plots docs/scaling_time_memory_vs_N.png and
# docs/scaling_time_memory_vs_B.png (docs/scaling/scaling.gp). The anchor's address space is capped at
# MEM_CAP_GB (default: 22, or less when less memory is available now), so that a size that does not
# fit is reported as out of memory instead of swapping.
#
# Usage (after building cgt_train_step; needs python3-torch, libopenblas0-pthread and gnuplot-nox):
#   benchmarks/scaling.sh [build-dir]
#   REPS=2 THREADS=2 NS="1000 2000 4000 6607 13000 20000" BS="8 16 32 64 128 256" N_FIXED=6607 B_FIXED=32
#   ANCHOR=../shared/anchors/torch_cgt_bench.py MEM_CAP_GB=22 OUT=docs/scaling PLOTS=docs override the defaults;
#   ANCHOR_FROM=FILE takes PyTorch's points from an earlier run's raw lines (FILE) and runs only celltx.
# The whole sweep takes about 20 minutes on the 2-core machine.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build=${1:-build}
reps=${REPS:-2}
threads=${THREADS:-2}
ns=${NS:-1000 2000 4000 6607 13000 20000}
bs=${BS:-8 16 32 64 128 256}
n_fixed=${N_FIXED:-6607}  # N of the B sweep
b_fixed=${B_FIXED:-32}    # B of the N sweep
anchor=${ANCHOR:-$root/../shared/anchors/torch_cgt_bench.py}
out=${OUT:-$root/docs/scaling}
plots=${PLOTS:-$root/docs}
anchor_from=${ANCHOR_FROM:-}  # an earlier run's scaling_raw.jsonl: take PyTorch's points from it, run only ours
cgt="$build/benchmarks/cgt_train_step"
driver="$here/anchor_scaling.py"
python=/usr/bin/python3

die() { echo "scaling.sh: $*" >&2; exit 1; }
[ -x "$cgt" ] || die "$cgt not found (cmake --build $build --target cgt_train_step)"
[ -f "$anchor" ] || die "the anchor $anchor is missing (set ANCHOR=...)"
[ -x "$python" ] || die "$python not found (apt-get install -y python3-torch libopenblas0-pthread)"
"$python" -c 'import torch' 2>/dev/null || die "$python cannot import torch (apt-get install -y python3-torch libopenblas0-pthread)"
command -v gnuplot > /dev/null || die "gnuplot not found (apt-get install -y gnuplot-nox)"
[[ "$reps" =~ ^[1-9][0-9]*$ ]] || die "REPS=$reps: a positive integer"
[[ "$threads" =~ ^[1-9][0-9]*$ ]] || die "THREADS=$threads: a positive integer"
for v in $ns $bs $n_fixed $b_fixed; do [[ "$v" =~ ^[1-9][0-9]*$ ]] || die "NS/BS/N_FIXED/B_FIXED: '$v' is not a positive integer"; done
if [ -z "${MEM_CAP_GB:-}" ]; then
  # 22 GB, or 1 GB less than the memory available now when that is less: the machine is shared.
  avail_gb=$(awk '/^MemAvailable:/ {printf "%d", $2 / 1e6}' /proc/meminfo)
  MEM_CAP_GB=$(( avail_gb - 1 < 22 ? avail_gb - 1 : 22 ))
fi
mkdir -p "$out" "$plots"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
anchor_from_note=
if [ -n "$anchor_from" ]; then
  [ -f "$anchor_from" ] || die "ANCHOR_FROM=$anchor_from: no such file"
  cp "$anchor_from" "$tmp/anchor_from.jsonl"
  anchor_from_note="$anchor_from ($(grep -m1 '^# run:' "$out/scaling_N.dat" 2>/dev/null | sed 's/^# run: //; s/, celltx.*//'))"
  anchor_from="$tmp/anchor_from.jsonl"
fi
raw="$tmp/raw.jsonl"
: > "$raw"
json_line() { grep '^{' | tail -1 || true; }
# A field of a JSON line: seconds to 4 significant digits, megabytes to 1 MB, null as NaN.
field() {
  "$python" -c '
import json, sys
v = json.loads(sys.argv[1]).get(sys.argv[2])
k = sys.argv[2]
print("NaN" if v is None else f"{v:.4g}" if k.endswith("_s") else f"{v:.0f}" if k.endswith("_mb") else v)' "$1" "$2"
}

# One point (N, B): ours, then the anchor's; sets point_row to "celltx_s celltx_mb torch_s torch_mb c_min
# c_max t_min t_max". (N=6607, B=32) is in both sweeps and runs once.
declare -A done_points
point_row=
point() {
  local n=$1 b=$2 key="$1x$2"
  if [ -n "${done_points[$key]:-}" ]; then point_row=${done_points[$key]}; return; fi
  local load ours theirs rc cs cm ts tm cmin cmax tmin tmax
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  echo "# N=$n B=$b: celltx (load $load)" >&2
  rc=0
  ours=$(OMP_NUM_THREADS=$threads "$cgt" --config train_step --genes "$n" --batch "$b" --reps "$reps" --warmup 1 2> "$tmp/err" | json_line) || rc=$?
  if [ "$rc" -ne 0 ] || [ -z "$ours" ]; then
    echo "# celltx failed at N=$n B=$b (exit $rc): $(tail -c 300 "$tmp/err")" >&2
    ours="{\"config\": \"train_step\", \"genes\": $n, \"batch\": $b, \"failed\": true, \"exit\": $rc}"
    cs=NaN; cm=NaN; cmin=NaN; cmax=NaN
  else
    cs=$(field "$ours" median_s); cm=$(field "$ours" peak_rss_mb); cmin=$(field "$ours" min_s); cmax=$(field "$ours" max_s)
  fi
  echo "{\"side\": \"celltx\", \"load_before\": \"$load\", \"result\": $ours}" >> "$raw"
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  rc=0
  if [ -n "$anchor_from" ]; then
    # The anchor's figure of this point from an earlier run's raw lines (PyTorch's side did not change):
    # its load before, then its JSON line.
    { read -r load; read -r theirs; } < <("$python" -c '
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["side"] == "torch" and r["result"].get("genes") == int(sys.argv[2]) and r["result"].get("batch") == int(sys.argv[3]):
        print(r["load_before"]); print(json.dumps(r["result"])); break' "$anchor_from" "$n" "$b") || true
    [ -n "$theirs" ] || die "ANCHOR_FROM=$anchor_from has no PyTorch point N=$n B=$b"
  else
    echo "# N=$n B=$b: PyTorch (load $load)" >&2
    theirs=$("$python" "$driver" --anchor "$anchor" --genes "$n" --batch "$b" --reps "$reps" --warmup 1 --threads "$threads" \
             --mem-cap-gb "$MEM_CAP_GB" 2> "$tmp/err" | json_line) || rc=$?
  fi
  if [ "$rc" -ne 0 ] || [ -z "$theirs" ]; then
    # Killed (e.g. by the kernel's OOM killer, exit 137) or failed: no figure, and say why.
    echo "# PyTorch failed at N=$n B=$b (exit $rc): $(tail -c 300 "$tmp/err")" >&2
    theirs="{\"config\": \"train_step\", \"genes\": $n, \"batch\": $b, \"failed\": true, \"exit\": $rc}"
    ts=NaN; tm=NaN; tmin=NaN; tmax=NaN
  else
    ts=$(field "$theirs" median_s); tm=$(field "$theirs" peak_rss_mb); tmin=$(field "$theirs" min_s); tmax=$(field "$theirs" max_s)
    if [ "$(field "$theirs" oom)" = True ]; then
      echo "# PyTorch out of memory at N=$n B=$b: $(field "$theirs" needed)" >&2
      tm=NaN  # the peak before the failure is not the step's peak
    fi
  fi
  echo "{\"side\": \"torch\", \"load_before\": \"$load\", \"result\": $theirs}" >> "$raw"
  done_points[$key]="$cs $cm $ts $tm $cmin $cmax $tmin $tmax"
  point_row=${done_points[$key]}
}

git_rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
git_dirty=$(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo " (with local changes)" || true)
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
date_start=$(date -u +%Y-%m-%dT%H:%MZ)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "# $date_start, $(nproc) cores ($cpu), $threads threads each, $reps steps after 1 warm-up; PyTorch address space capped at $MEM_CAP_GB GB; load before: $load_before" >&2

: > "$tmp/N.rows"
for n in $ns; do point "$n" "$b_fixed"; echo "$n $point_row" >> "$tmp/N.rows"; done
: > "$tmp/B.rows"
for b in $bs; do point "$n_fixed" "$b"; echo "$b $point_row" >> "$tmp/B.rows"; done

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
date_end=$(date -u +%Y-%m-%dT%H:%MZ)
blas=$({ grep '"side": "torch"' "$raw" || true; } | "$python" -c 'import json,sys; v = [json.loads(l)["result"].get("blas_gflops") for l in sys.stdin]; v = [x for x in v if x]; print(f"{min(v)}–{max(v)}" if v else "?")')
torch_version=$("$python" -c 'import torch; print(torch.__version__)')

write_dat() {  # file, x name, fixed-parameter sentence, rows
  {
    echo "# CGT training step (the anchor's work: encoder fwd+bwd + KL + Type I over all B*N rows + GI readout + Adam), $2; d=64, L=6, H=8, fp32"
    echo "# run: $date_start to $date_end (UTC), celltx $git_rev$git_dirty, $(nproc) cores ($cpu), $threads threads per process, each point its own process, celltx then PyTorch"
    echo "# load average before: $load_before; after: $load_after; niceness of the run: $(nice)"
    echo "# PyTorch $torch_version, blas_gflops $blas, address space capped at $MEM_CAP_GB GB (RLIMIT_AS); NaN: out of memory under the cap (or failed)"
    [ -z "$anchor_from" ] || echo "# PyTorch's points (and the load before each) taken from an earlier run: ANCHOR_FROM=$anchor_from_note"
    echo "# command: REPS=$reps THREADS=$threads benchmarks/scaling.sh $build"
    echo "#   celltx:  OMP_NUM_THREADS=$threads $build/benchmarks/cgt_train_step --config train_step --genes N --batch B --reps $reps --warmup 1"
    echo "#   PyTorch: /usr/bin/python3 benchmarks/anchor_scaling.py --anchor ../shared/anchors/torch_cgt_bench.py --genes N --batch B --reps $reps --warmup 1 --threads $threads --mem-cap-gb $MEM_CAP_GB"
    echo "# median of $reps steps after 1 warm-up (s); peak RSS (ru_maxrss, MB)"
    echo "# $3 celltx_s celltx_mb torch_s torch_mb celltx_min_s celltx_max_s torch_min_s torch_max_s"
    cat "$4"
  } > "$1"
}
write_dat "$out/scaling_N.dat" "against the number of genes N at B=$b_fixed" N "$tmp/N.rows"
write_dat "$out/scaling_B.dat" "against the batch B at N=$n_fixed" B "$tmp/B.rows"
cp "$raw" "$out/scaling_raw.jsonl"
echo "# load after: $load_after" >&2

gnuplot -e "datadir='$out'; plotdir='$plots'; cap_gb=$MEM_CAP_GB" "$root/docs/scaling/scaling.gp"
grep -v '^#' "$out/scaling_N.dat" | column -t || true
grep -v '^#' "$out/scaling_B.dat" | column -t || true
echo "scaling.sh: wrote $out/scaling_N.dat, $out/scaling_B.dat, $out/scaling_raw.jsonl, $plots/scaling_time_memory_vs_N.png, $plots/scaling_time_memory_vs_B.png" >&2
