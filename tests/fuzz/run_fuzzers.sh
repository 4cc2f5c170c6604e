#!/usr/bin/env bash
# Runs every libFuzzer target (or those named) for a bounded time each, one after the other at low
# priority, and prints a table of executions, coverage (edges, features) and findings.
#   tests/fuzz/run_fuzzers.sh [SECONDS_PER_TARGET] [TARGET...]
# Build first: cmake --preset asan-ubsan && cmake --build --preset asan-ubsan
# Environment: BUILD_DIR (default build-asan), FUZZ_WORK (default $BUILD_DIR/fuzz-work: the new
# corpus of each target and its crash artifacts), FUZZ_FLAGS (extra libFuzzer flags).
# Exit status 1 when a target found a crash, a leak, a timeout or an out-of-memory: the input is in
# $FUZZ_WORK/<target>/artifacts/; fix the parser, then copy the input to tests/fuzz/corpus/<target>/
# as crash-<what> so that CI replays it. A finding inside libhdf5 that celltx cannot prevent goes to
# tests/fuzz/libhdf5_findings/ instead (not replayed; docs/reliability.md). To keep fuzzing h5ad past
# such findings: FUZZ_FLAGS="-fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1".
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-60}
shift || true
build=${BUILD_DIR:-build-asan}
work=${FUZZ_WORK:-$build/fuzz-work}
if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for f in tests/fuzz/fuzz_*.cpp; do t=$(basename "$f" .cpp); targets+=("${t#fuzz_}"); done
fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TMPDIR=${TMPDIR:-$( [ -d /dev/shm ] && echo /dev/shm || echo /tmp )}
status=0
printf '%-20s %10s %8s %8s %8s %8s  %s\n' target seconds execs exec/s cov ft findings
for t in "${targets[@]}"; do
  bin=$build/tests/fuzz/fuzz_$t
  [ -x "$bin" ] || { echo "no $bin: build the asan-ubsan preset first" >&2; exit 2; }
  mkdir -p "$work/$t/corpus" "$work/$t/artifacts"
  log=$work/$t/log.txt
  # New inputs go to the work corpus (the first directory); the committed seeds are read only.
  if nice -n 10 "$bin" "$work/$t/corpus" "tests/fuzz/corpus/$t" -max_total_time="$secs" -timeout=20 -rss_limit_mb=2560 \
       -max_len=65536 -print_final_stats=1 -artifact_prefix="$work/$t/artifacts/" ${FUZZ_FLAGS:-} > "$log" 2>&1; then
    found=none
  else
    found="$(ls "$work/$t/artifacts" | tr '\n' ' ')"
    status=1
  fi
  execs=$(grep -o 'stat::number_of_executed_units:[[:space:]]*[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
  rate=$(grep -o 'stat::average_exec_per_sec:[[:space:]]*[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
  # -fork=N mode (FUZZ_FLAGS) prints "#EXECS: cov: C ft: F corp: N exec/s R ..." instead of final stats.
  [ -n "$execs" ] || execs=$(grep -o '^#[0-9]*:' "$log" | tail -1 | tr -dc '0-9' || true)
  [ -n "$rate" ] || rate=$(grep -o 'exec/s [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
  execs=${execs:-0} rate=${rate:-0}
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo 0)
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo 0)
  printf '%-20s %10s %8s %8s %8s %8s  %s\n' "$t" "$secs" "$execs" "$rate" "$cov" "$ft" "$found"
done
exit $status
