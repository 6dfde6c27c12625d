#!/usr/bin/env bash
# The ctest moe_bench.gpu_check_rehearsal (emulation builds): bench/gpu_check.sh end to end on the
# emulated device, with a fake nvidia-smi and compute-sanitizer, a tiny sweep (one preset at
# 1/64 size, T = 1,3) and the tuner, then a check that the results file has every section
# filled and that the JSON parses. gpu_check.sh itself runs only on a lent GPU, rarely and with
# scarce device time: this keeps its parsing and bookkeeping from breaking in between.
#   bash bench/tools/gpu_check_rehearsal.sh BUILD_DIR     # an emulation build (tests/run.sh)
#   bash bench/tools/gpu_check_rehearsal.sh --fakes DIR   # only write the two fakes into DIR,
#                                                         # for a rehearsal by hand (NOTES.md)
# It needs moe, moe-bench and moe_gpu_tests built there; it builds and configures nothing
# (MOE_GPU_CHECK_SKIP_BUILD): gpu_check.sh works in a scratch directory whose CTestTestfile
# holds three stand-in tests (one passes, one skips, one fails) and which links to the binaries.
set -euo pipefail

write_fakes() { # write_fakes DIR: nvidia-smi and compute-sanitizer stand-ins
  mkdir -p "$1"
  cat >"$1/nvidia-smi" <<'EOF'
#!/bin/sh
# What gpu_check.sh asks of nvidia-smi, answered as an H100 would.
case "${1:-}" in
  -L) echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-00000000-0000-0000-0000-000000000000)" ;;
  --query-gpu=name) echo "NVIDIA H100 80GB HBM3" ;;
  --query-gpu=driver_version) echo "580.159.04" ;;
  "") echo "fake nvidia-smi (gpu_check rehearsal): NVIDIA H100 80GB HBM3, driver 580.159.04" ;;
  *) echo "fake nvidia-smi: unexpected arguments: $*" >&2; exit 2 ;;
esac
EOF
  cat >"$1/compute-sanitizer" <<'EOF'
#!/bin/sh
# Runs the program and prints the summary line the real tool prints.
tool=memcheck
while [ $# -gt 0 ]; do
  case $1 in
    --tool) tool=$2; shift 2 ;;
    --error-exitcode) shift 2 ;;
    --*) shift ;;
    *) break ;;
  esac
done
"$@"; rc=$?
if [ "$tool" = racecheck ]; then
  echo "========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)"
else
  echo "========= ERROR SUMMARY: 0 errors"
fi
exit $rc
EOF
  chmod +x "$1/nvidia-smi" "$1/compute-sanitizer"
}
if [ "${1:-}" = --fakes ] && [ $# -eq 2 ]; then
  write_fakes "$2"
  exit 0
fi
[ $# -eq 1 ] || { echo "usage: $0 BUILD_DIR | --fakes DIR" >&2; exit 2; }
build=$(cd "$1" && pwd)
src=$(cd "$(dirname "$0")/../.." && pwd)
for f in libmoe.so bench/moe-bench tests/moe_gpu_tests; do
  [ -e "$build/$f" ] || { echo "gpu_check_rehearsal: $build/$f not built" >&2; exit 1; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/out" "$tmp/b/bench" "$tmp/b/tests"
write_fakes "$tmp/bin"

# The scratch build directory: the real binaries, a cache that says tests and bench are on,
# and three stand-in tests whose results the ctest summary must report.
ln -s "$build/libmoe.so" "$tmp/b/libmoe.so"
ln -s "$build/bench/moe-bench" "$tmp/b/bench/moe-bench"
ln -s "$build/tests/moe_gpu_tests" "$tmp/b/tests/moe_gpu_tests"
printf 'MOE_BUILD_TESTS:BOOL=ON\nMOE_BUILD_BENCH:BOOL=ON\n' >"$tmp/b/CMakeCache.txt"
cat >"$tmp/b/CTestTestfile.cmake" <<'EOF'
add_test(rehearsal.passes "sh" "-c" "exit 0")
add_test(rehearsal.skips "sh" "-c" "exit 77")
set_tests_properties(rehearsal.skips PROPERTIES SKIP_RETURN_CODE 77)
add_test(rehearsal.fails "sh" "-c" "echo 'x_test.cc:1: Failure'; echo 'Expected: 1'; exit 1")
EOF

rc=0
(
  cd "$src"
  PATH="$tmp/bin:$PATH" BUILD_DIR="$tmp/b" MOE_GPU_CHECK_SKIP_BUILD=1 \
    MOE_RESULTS_DIR="$tmp/results" OUT="$tmp/out" MOE_BENCH_COMMIT=rehearsal \
    MOE_GPU_CHECK_DEADLINE_S=240 MOE_SWEEP_TIME_S=60 MOE_BENCH_PEERS=0 \
    MOE_BENCH_PRESETS=mixtral-8x7b MOE_BENCH_TOKENS=1,3 MOE_BENCH_ARGS="--scale 64 --iters 2 --warmup 1" \
    MOE_BENCH_TUNE=mixtral-8x7b MOE_SANITIZER_FILTER='CudaCombine.*' \
    bash bench/gpu_check.sh
) >"$tmp/log.txt" 2>&1 || rc=$?
cat "$tmp/log.txt"
[ $rc -eq 0 ] || { echo "gpu_check_rehearsal: gpu_check.sh exited with $rc" >&2; exit 1; }

md=$(ls "$tmp"/results/*-H100-80GB-HBM3-rehearsal.md)
fails=0
expect() { # expect WHAT REGEX: a line of the results file must match
  if grep -qE -- "$2" "$md"; then echo "ok: $1"; else echo "MISSING: $1 (/$2/)"; fails=$((fails + 1)); fi
}
expect "the title" '^# libmoe GPU check: NVIDIA H100 80GB HBM3, commit rehearsal$'
expect "the build skipped" '^## Build: skipped'
expect "ctest: 1 of 3 failed, 1 skipped" '^## ctest: 67% tests passed, 1 tests failed out of 3 \(1 skipped\)$'
expect "ctest: the failed test named" 'Test +#3: rehearsal\.fails \*\*\*Failed'
expect "ctest: the gtest failure quoted" '^x_test\.cc:1: Failure$'
expect "memcheck clean" '^## compute-sanitizer --tool memcheck: clean: ========= ERROR SUMMARY: 0 errors$'
expect "racecheck clean" '^## compute-sanitizer --tool racecheck: clean: ========= RACECHECK SUMMARY'
expect "the sweep heading" '^## moe-bench \(moe-bench --scale 64 --iters 2 --warmup 1, bf16, T = 1,3\)$'
expect "the preset ran" '^### mixtral-8x7b: ok \([0-9]+ s\)$'
expect "moe-bench's table" 'PASS rel [0-9.e+-]+ \(tol'
expect "the tuner" '^## moe-bench --tune: ok, table [^ ]+-tuning\.txt$'
expect "summary: sweep" '^\| sweep \(moe-bench\) \| 1 of 1 presets ok \|$'
expect "summary: figures" '^\| mixtral-8x7b \| [0-9]+ \(-\) \| [0-9]+ \(-\) \|$'
expect "summary: checks" '^--check: PASS 2$'
expect "summary: peers" '^\| peers \(compare_torch\.py\) \| not run: MOE_BENCH_PEERS=0 \|$'
for f in "${md%.md}.json" "${md%.md}-tuning.txt"; do
  if [ -s "$f" ]; then echo "ok: $(basename "$f")"; else echo "MISSING: $f"; fails=$((fails + 1)); fi
done
n_out=$(find "$tmp/out" -type f | wc -l) # .md, .json, -tuning.txt, -logs.tar.gz
if [ "$n_out" -eq 4 ]; then echo "ok: 4 files in \$OUT"
else echo "MISSING: 4 files in \$OUT (found $n_out)"; fails=$((fails + 1))
fi
if command -v python3 >/dev/null; then
  if python3 - "${md%.md}.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["commit"] == "rehearsal" and d["steps"]["sweep"] == "1 of 1 presets ok", d["steps"]
rows = [r for run in d["runs"] for r in run["results"]]
assert [r["T"] for r in rows] == [1, 3], rows
EOF
  then echo "ok: the JSON parses, with the steps and 2 rows"
  else echo "MISSING: a valid JSON with the steps and 2 rows"; fails=$((fails + 1))
  fi
fi
[ $fails -eq 0 ] || { echo "gpu_check_rehearsal: $fails checks failed; the results file:"; cat "$md"; exit 1; }
echo "gpu_check_rehearsal: all checks passed"
