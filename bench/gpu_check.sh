#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU: configure + build (Release, CUDA), every ctest
# suite (GPU ones included), compute-sanitizer memcheck and racecheck on the GPU test binary,
# and the moe-bench sweep of every preset at full size. Everything goes into one results file,
#   bench/results/<date>-<gpu>-<commit>.md   (+ <same>.json: each step's result and the bench
#                                             results of every preset; -peers.json, -tuning.txt)
# copied to $OUT when that is set, after every step (a run killed at the device call's limit
# still brings back what it did), with <same>-logs.tar.gz, every log of the run, at the end.
# A short summary table is printed last.
#
#   bash bench/gpu_check.sh
#   bash bench/device_deps.sh    # first, on the dev machine: .deb files the GPU image may lack
#   device tool: run(command="MOE_BENCH_COMMIT=<hash> bash bench/gpu_check.sh", carry=[".deps"])
#   MOE_BENCH_COMMIT=$(git rev-parse --short HEAD) bash bench/gpu_check.sh   # tree without .git
#   rehearsal without a GPU (fake nvidia-smi, the emulated device): bench/NOTES.md, and the
#   ctest moe_bench.gpu_check_rehearsal (bench/tools/gpu_check_rehearsal.sh)
#
# Environment (defaults aim at ~8 minutes on an H100 with a hard stop at 470 s; not yet run on
# a GPU, so the split between build, tests and sweep is an estimate):
#   MOE_BENCH_TOKENS   token counts of the sweep            [1,8,64,256,1024,4096,16384]
#   MOE_BENCH_PRESETS  presets, space-separated             [all of moe-bench --list]
#   MOE_BENCH_ITERS    timed replays per T                  [automatic, see MOE_BENCH_MAX_TIME]
#   MOE_BENCH_MAX_TIME seconds of timed replays per T (automatic iterations, 10..200) [0.5]
#   MOE_BENCH_CHECK_TOKENS  tokens per T checked against the naive double reference; 0 = no
#                      --check                              [1]
#   MOE_GPU_CHECK_DEADLINE_S  the whole script's time limit: each step's timeout is cut to what
#                      is left, later steps are skipped (and say so) when it is spent [470]
#   MOE_CUDA_ARCHS     CMAKE_CUDA_ARCHITECTURES             [the project's default]
#   MOE_SANITIZER_FILTER  --gtest_filter for the sanitizer runs            [*]
#   MOE_SWEEP_TIME_S   seconds the sanitizers leave for the sweep (each is capped at 90 s and
#                      cut or skipped so that this much is left)                 [150]
#   MOE_CMAKE_ARGS     extra configure arguments (word-split), e.g. -DMOE_WITH_MPI=OFF
#   MOE_BENCH_BACKEND  moe-bench --backend                  [cuda]
#   MOE_BENCH_ARGS     extra moe-bench arguments for the sweep and the tuner (word-split), e.g.
#                      "--scale 64 --iters 2" for a rehearsal on the emulated device   [none]
#   MOE_CTEST_ARGS     extra ctest arguments (word-split, no quoting), e.g. -L gpu   [none]
#   MOE_RESULTS_DIR    where the results files go (relative to the repository root) [bench/results]
#   MOE_BENCH_PEERS    1 = run bench/compare_torch.py (libmoe vs torch._grouped_mm vs the
#                      per-expert loop) after the sweep when python3 can import torch with CUDA;
#                      0 = skip                             [1]
#   MOE_PEERS_TIME_S   seconds kept back from the sweep for that step; its rows are written as
#                      they finish, so a cut run keeps the finished ones [150]
#   MOE_PEERS_TOKENS   its token counts                     [1,8,32,64,128,256,1024,4096,16384]
#   MOE_PEERS_ARGS     extra compare_torch.py arguments (word-split), e.g. --transformers
#   MOE_BENCH_TUNE     presets to run moe-bench --tune on (the kernel-choice table, written
#                      to <results>-tuning.txt), space-separated; empty = skip [empty: a
#                      second device call, MOE_BENCH_TUNE="mixtral-8x7b deepseek-v3", does it]
#   MOE_GPU_CHECK_SKIP_BUILD  1 = no configure or build: the binaries in BUILD_DIR as they are
#                      (bench/tools/gpu_check_rehearsal.sh; a repeat call on a warm machine) [0]
#   BUILD_DIR          build directory                      [build]
#   JOBS               build parallelism                    [16]
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
start=$(date +%s)
elapsed() { echo $(($(date +%s) - start)); }

build="${BUILD_DIR:-build}"
jobs="${JOBS:-16}"
tokens="${MOE_BENCH_TOKENS:-1,8,64,256,1024,4096,16384}"
iters="${MOE_BENCH_ITERS:-}"
check_tokens="${MOE_BENCH_CHECK_TOKENS:-1}"
bench_args=(--max-time "${MOE_BENCH_MAX_TIME:-0.5}")
[ -n "$iters" ] && bench_args+=(--iters "$iters")
if [ "$check_tokens" -gt 0 ] 2>/dev/null; then
  bench_args+=(--check --check-tokens "$check_tokens")
fi
read -ra bench_extra <<<"${MOE_BENCH_ARGS:-}"
bench_args+=("${bench_extra[@]}")
# The sweep is at full size unless MOE_BENCH_ARGS scales it (a rehearsal on the emulator).
sweep_size="full size"
[ ${#bench_extra[@]} -gt 0 ] && sweep_size="moe-bench ${bench_extra[*]}"
read -ra ctest_extra <<<"${MOE_CTEST_ARGS:-}"
deadline="${MOE_GPU_CHECK_DEADLINE_S:-470}"
# Seconds a step may take: its own cap $1, or what is left before the deadline less $2 seconds
# kept for later steps, if that is less; never below 1, since `timeout 0` would mean no limit.
cap() {
  local c=$1 left=$((deadline - ${2:-0} - $(elapsed)))
  [ "$left" -lt "$c" ] && c=$left
  [ "$c" -lt 1 ] && c=1
  echo "$c"
}
# bounded CAP COMMAND...: SIGTERM at CAP seconds, SIGKILL 10 s later if that is ignored (a
# process stuck in a GPU call), so the script always reaches its summary.
bounded() { timeout -k 10 "$@"; }
# timeout answers 124 after its SIGTERM, 137 after the SIGKILL.
timed_out() { [ "$1" -eq 124 ] || [ "$1" -eq 137 ]; }
filter="${MOE_SANITIZER_FILTER:-*}"
# Every step's result, "not reached" until the step runs: the files written after each step
# (and copied to $OUT) then say how far a run that was killed got.
for step in configure build ctest memcheck racecheck sweep peers tune; do
  printf -v "status_$step" '%s' "not reached"
done
# The peer comparison runs last, in time kept back from the sweep, when torch is usable.
peers_time=0
status_peers="not run: MOE_BENCH_PEERS=0"
if [ "${MOE_BENCH_PEERS:-1}" != 0 ]; then
  if bounded 120 python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; then
    peers_time="${MOE_PEERS_TIME_S:-150}"
  else
    status_peers="not run: python3 cannot import torch with CUDA"
  fi
fi
# A sweep step leaves the peers their time.
cap_sweep() { cap "$1" "$peers_time"; }
# Seconds kept for the sweep: the sanitizers before it stop in time to leave it that much.
sweep_time="${MOE_SWEEP_TIME_S:-150}"
commit="${MOE_BENCH_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
export MOE_BENCH_COMMIT="$commit"

# nvidia-smi under a limit too: on a GPU in a bad state it can hang.
if ! command -v nvidia-smi >/dev/null || ! bounded 60 nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU visible (nvidia-smi failed); nothing to do" >&2
  exit 1
fi
gpu_name=$(bounded 60 nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
gpu_tag=$(echo "$gpu_name" | sed -e 's/NVIDIA //' -e 's/[^A-Za-z0-9]\+/-/g' -e 's/^-//' -e 's/-$//')
gpu_tag="${gpu_tag:-gpu}"
driver=$(bounded 60 nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)
stamp=$(date -u +%Y%m%d-%H%M)
results="${MOE_RESULTS_DIR:-bench/results}"
mkdir -p "$results"
base="$results/${stamp}-${gpu_tag}-${commit}"
md="$base.md"
json="$base.json"
peers_json="$base-peers.json"
tuning="$base-tuning.txt"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# moe-bench's JSON documents, merged into $json after every preset (write_json).
jsons=()
valid_json() {
  ! command -v python3 >/dev/null || python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$1" 2>/dev/null
}
json_str() {
  local v
  v=$(printf '%s' "$1" | tr -d '\000-\037')
  v=${v//\\/\\\\}
  printf '"%s"' "${v//\"/\\\"}"
}
write_json() {
  local first=1 j step
  {
    echo "{\"gpu\": $(json_str "$gpu_name"), \"driver\": $(json_str "$driver"), \"commit\": $(json_str "$commit"),"
    printf ' "steps": {'
    for step in configure build ctest memcheck racecheck sweep peers tune; do
      [ $first -eq 1 ] || printf ', '
      first=0
      local var="status_$step"
      printf '"%s": %s' "$step" "$(json_str "${!var}")"
    done
    echo '},'
    echo ' "runs": ['
    first=1
    for j in "${jsons[@]}"; do
      [ $first -eq 1 ] || echo ","
      cat "$j"
      first=0
    done
    echo ']}'
  } >"$json"
}
# The results so far to $OUT (the device tool's folder), after every step: a run killed at the
# call's limit still brings back what it did.
publish() {
  [ -n "${OUT:-}" ] && [ -d "$OUT" ] || return 0
  local f
  for f in "$md" "$json" "$peers_json" "$tuning"; do
    [ -s "$f" ] && cp "$f" "$OUT"/
  done
  return 0
}

# Packages the GPU image may lack, carried as .deb files in .deps/ (bench/device_deps.sh):
# unpacked into a private prefix that CMake, pkg-config and the loader are pointed at.
# The prefix lives in the build directory, not in $work: CMake caches the paths it found there
# (pkg-config results above all), and a second call on a warm machine reuses the build directory.
carried_deps="none"
deps_args=()
skip_build="${MOE_GPU_CHECK_SKIP_BUILD:-0}"
if [ "$skip_build" = 0 ] && compgen -G ".deps/*.deb" >/dev/null; then
  mkdir -p "$build"
  deps="$(cd "$build" && pwd)/carried-deps"
  rm -rf "$deps"
  mkdir -p "$deps"
  for f in .deps/*.deb; do
    if command -v dpkg-deb >/dev/null; then
      dpkg-deb -x "$f" "$deps"
    else
      (cd "$work" && ar x "$OLDPWD/$f" data.tar.xz && tar -xJf data.tar.xz -C "$deps" && rm -f data.tar.xz)
    fi
  done
  multiarch="$deps/usr/lib/x86_64-linux-gnu"
  export CMAKE_PREFIX_PATH="$deps/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  # The .pc files carry absolute /usr paths: point them at the prefix. (Not with
  # PKG_CONFIG_SYSROOT_DIR: that would prefix every other .pc file too, and the InstallAndConsume
  # test, whose consumer reads the moe.pc it installed, failed so in the rehearsal.)
  for pc in "$multiarch"/pkgconfig/*.pc; do
    [ -e "$pc" ] && sed -i -E "s#^([A-Za-z_]+)=/usr#\1=$deps/usr#" "$pc"
  done
  export PKG_CONFIG_PATH="$multiarch/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  export LD_LIBRARY_PATH="$multiarch${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  carried_deps=$(cd .deps && printf '%s ' ./*.deb | sed 's|\./||g')
  # No pkg-config on the image: CMake cannot find cJSON without one, so use the carried pkgconf.
  if ! command -v pkg-config >/dev/null && [ -x "$deps/usr/bin/pkgconf" ]; then
    deps_args+=("-DPKG_CONFIG_EXECUTABLE=$deps/usr/bin/pkgconf")
    carried_deps="$carried_deps(pkgconf used: no pkg-config here)"
  fi
fi

section() { printf '\n## %s\n\n' "$1" >>"$md"; }
fence() { { printf '```\n'; cat "$1"; printf '```\n'; } >>"$md"; }

{
  echo "# libmoe GPU check: $gpu_name, commit $commit"
  echo
  echo "- date (UTC): $(date -u '+%Y-%m-%d %H:%M:%S')"
  echo "- GPU: $gpu_name, driver $driver"
  # (CMake also finds the nvcc of /usr/local/cuda/bin when PATH has none.)
  nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
  echo "- nvcc: $("$nvcc" --version 2>/dev/null | grep -o 'release .*' || echo 'not found')"
  echo "- host: $(uname -srm), $(nproc) cores"
  echo "- carried packages (.deps): $carried_deps"
  echo "- sweep: T = $tokens, presets: ${MOE_BENCH_PRESETS:-all}, bf16, moe-bench ${bench_args[*]}"
} >"$md"
section "nvidia-smi"
bounded 60 nvidia-smi >"$work/smi.txt" 2>&1
fence "$work/smi.txt"
write_json
publish

# ---- configure + build ---------------------------------------------------------------------
# Tests and cJSON ON explicitly: a fallback below is cached, and must not outlive this call.
# Ninja where there is one (the image should have it), else Makefiles rather than nothing.
generator=Ninja keep_going=(-k 0)
command -v ninja >/dev/null || generator="Unix Makefiles" keep_going=(-k)
cmake_args=(-S . -B "$build" -G "$generator" -DCMAKE_BUILD_TYPE=Release -DMOE_WITH_CUDA=ON
            -DMOE_BUILD_TESTS=ON -DMOE_WITH_CJSON=ON)
[ -n "${MOE_CUDA_ARCHS:-}" ] && cmake_args+=("-DCMAKE_CUDA_ARCHITECTURES=$MOE_CUDA_ARCHS")
cmake_args+=("${deps_args[@]}")
# shellcheck disable=SC2206
[ -n "${MOE_CMAKE_ARGS:-}" ] && cmake_args+=(${MOE_CMAKE_ARGS})
# A failed configure is retried without what failed, so that the library and moe-bench get
# built whatever the image lacks: without cJSON (the checkpoint loader; the sweep reads no
# checkpoint) when it or pkg-config is missing, without the test suites when GoogleTest is (or
# when the cause is unknown), at most three tries.
status_configure="FAILED"
fallback=()
: >"$work/configure.txt"
[ "$skip_build" != 0 ] && status_configure="skipped (MOE_GPU_CHECK_SKIP_BUILD)"
for try in 1 2 3; do
  [ "$skip_build" != 0 ] && break
  bounded "$(cap 120)" cmake "${cmake_args[@]}" "${fallback[@]}" >"$work/configure$try.txt" 2>&1
  rc=$?
  cat "$work/configure$try.txt" >>"$work/configure.txt"
  if [ $rc -eq 0 ]; then
    status_configure="ok${fallback[*]:+ only with ${fallback[*]} (earlier tries: see below)}"
    break
  fi
  timed_out $rc && { status_configure="TIMEOUT"; break; }
  # (What the error says, not the whole log: that names libcjson when it was found, too.)
  # (awk reads its whole input: `sed | grep -q` under pipefail reads false when grep's early exit
  # kills sed, the bug class that once broke CI.)
  if awk '/CMake Error/ {on = 1} on && /pkg_check_modules|PkgConfig/ {found = 1} END {exit !found}' \
    "$work/configure$try.txt" && [[ "${fallback[*]}" != *CJSON* ]]; then
    fallback+=(-DMOE_WITH_CJSON=OFF)
  elif [[ "${fallback[*]}" != *BUILD_TESTS* ]]; then
    fallback+=(-DMOE_BUILD_TESTS=OFF)
  else
    break
  fi
done
tests_built="no"
grep -q '^MOE_BUILD_TESTS:BOOL=ON' "$build/CMakeCache.txt" 2>/dev/null && tests_built="yes"
status_build="not run: configure failed"
core_built="no"
if [ "$skip_build" != 0 ]; then
  status_build="skipped: the binaries in $build as they are"
  [ -e "$build/libmoe.so" ] && core_built="yes"
elif [ "${status_configure:0:2}" = ok ]; then
  # First the library and moe-bench alone: what the sweep and the peers need, current even when
  # a test file fails or the time runs out later (after a failed build an old moe-bench from an
  # earlier call could otherwise be timed under this commit's name).
  core=(moe)
  grep -q '^MOE_BUILD_BENCH:BOOL=ON' "$build/CMakeCache.txt" && core+=(moe-bench)
  limit=$(cap 300)
  build_end=$(($(elapsed) + limit))
  bounded "$limit" cmake --build "$build" -j "$jobs" --target "${core[@]}" >"$work/build.txt" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then
    core_built="yes"
    # Then everything else (the test suites) in what is left of the build's time; keep going:
    # a failing test file does not stop the others.
    limit=$(cap $((build_end - $(elapsed))))
    bounded "$limit" cmake --build "$build" -j "$jobs" -- "${keep_going[@]}" >>"$work/build.txt" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then status_build="ok ($(elapsed) s in all)"
    elif timed_out $rc; then status_build="TIMEOUT after $limit s: ${core[*]} built, the tests partly"
    else status_build="FAIL (rc $rc): ${core[*]} built, not every test suite"
    fi
  elif timed_out $rc; then status_build="TIMEOUT after $limit s: ${core[*]} not built"
  else status_build="FAIL (rc $rc): ${core[*]} not built"
  fi
fi
section "Build: $status_build"
{
  echo "- configure: $status_configure"
  echo "- test suites configured: $tests_built"
  if [ "$status_build" != "not run: configure failed" ]; then
    built=""
    for f in libmoe.so bench/moe-bench tests/moe_gpu_tests; do
      [ -e "$build/$f" ] && built="$built $(basename "$f")"
    done
    echo "- built:${built:- none of libmoe.so, moe-bench, moe_gpu_tests}"
  fi
  echo
} >>"$md"
if [ "${status_configure:0:6}" = FAILED ] || [ ${#fallback[@]} -gt 0 ]; then
  # The first error of every try, not only the last lines of the last one.
  for f in "$work"/configure[0-9].txt; do
    grep -q "CMake Error" "$f" || continue
    try=${f##*/configure}
    echo "try ${try%.txt}:"
    grep -m1 -A10 "CMake Error" "$f"
  done >"$work/configure_sum.txt"
  echo "configure errors:" >>"$md"
  fence "$work/configure_sum.txt"
fi
if [ -s "$work/configure.txt" ]; then
  tail -n 30 "$work/configure.txt" >"$work/configure_tail.txt"
  echo "configure (last lines):" >>"$md"
  fence "$work/configure_tail.txt"
fi
# Compiler and linker diagnostics, in order, once each (not ninja's progress lines, whose file
# names can contain 'error').
if [ -s "$work/build.txt" ]; then
  grep -E "warning:|error:|^FAILED:|undefined reference|ninja: build stopped" "$work/build.txt" |
    grep -v '^\[[0-9]*/[0-9]*\]' | awk '!seen[$0]++' | head -40 >"$work/build_diag.txt"
  [ -s "$work/build_diag.txt" ] || echo "(none)" >"$work/build_diag.txt"
  echo "build warnings/errors (first 40, in order):" >>"$md"
  fence "$work/build_diag.txt"
fi

publish

# ---- ctest -----------------------------------------------------------------------------------
# A test line without its gtest GetParam() dump and ctest's dot padding (lines of 300+ chars).
compact() {
  sed -E -e 's/  # GetParam\(\) = .*(\*\*\*[A-Za-z]|Passed)/ \1/' \
    -e 's/  # GetParam\(\) = .*(\([A-Za-z ]+\))$/ \1/' -e 's/  # GetParam\(\) = .*$//' \
    -e 's/ \.{4,}/ /' -e 's/ {3,}/  /g'
}
if [ "$tests_built" != yes ]; then status_ctest="not run: no test suites configured"
elif [ "$core_built" != yes ]; then status_ctest="not run: the library did not build"
elif [ "$(cap 120)" -le 10 ]; then status_ctest="not run: the time budget was spent"
else
  limit=$(cap 120)
  # -E gpu_check_rehearsal: that test runs this script; never from inside it.
  bounded "$limit" ctest --test-dir "$build" --output-on-failure -j 4 -E gpu_check_rehearsal \
    "${ctest_extra[@]}" >"$work/ctest.txt" 2>&1
  rc=$?
  # Counted from the per-test lines, so that a run cut by the timeout still says how far it got;
  # the skips are counted because a GPU suite that cannot see the GPU skips, it does not fail.
  test_lines=$(grep -E '^ *[0-9]+/[0-9]+ Test +#[0-9]+: ' "$work/ctest.txt")
  n_pass=$(grep -cE ' Passed +[0-9.]+ sec$' <<<"$test_lines")
  n_skip=$(grep -c '\*\*\*Skipped' <<<"$test_lines")
  n_fail=$(grep -v -e ' Passed ' -e '\*\*\*Skipped' <<<"$test_lines" | grep -c .)
  n_all=$(head -1 <<<"$test_lines" | sed -E 's|^ *[0-9]+/([0-9]+) .*|\1|')
  status_ctest=$(grep -E "tests passed|tests failed" "$work/ctest.txt" | tail -1)
  if timed_out $rc; then
    status_ctest="TIMEOUT after $limit s: $n_pass passed, $n_fail failed, $n_skip skipped of ${n_all:-?} when cut"
  elif [ -n "$status_ctest" ]; then
    status_ctest="$status_ctest ($n_skip skipped)"
  else
    status_ctest="rc $rc, no summary line"
  fi
  section "ctest: $status_ctest"
  {
    grep -E "tests passed|tests failed|Total Test time" "$work/ctest.txt"
    if [ "$n_fail" -gt 0 ]; then
      echo; echo "failed:"
      grep -v -e ' Passed ' -e '\*\*\*Skipped' <<<"$test_lines" | compact | head -40
      gtest_out=$(grep -E -A8 ': Failure$' "$work/ctest.txt" | head -80)
      [ -n "$gtest_out" ] && printf '\nfirst gtest failures:\n%s\n' "$gtest_out"
    fi
    if [ "$n_skip" -gt 0 ]; then
      echo; echo "skipped ($n_skip, first 20):"
      grep '\*\*\*Skipped' <<<"$test_lines" | compact | head -20
    fi
    if timed_out $rc; then
      echo; echo "last lines before the cut:"
      tail -n 8 "$work/ctest.txt" | compact
    fi
  } >"$work/ctest_sum.txt"
  fence "$work/ctest_sum.txt"
fi

publish

# ---- compute-sanitizer -------------------------------------------------------------------------
# The sanitizers leave the sweep its time (sweep_time, like the peers' peers_time): a full
# suite under memcheck can take longer than any cap, and the figures matter at least as much.
cap_sanitizer() { cap "$1" $((peers_time + sweep_time)); }
gpu_tests="$build/tests/moe_gpu_tests"
if [ "$core_built" = yes ] && [ -x "$gpu_tests" ] && command -v compute-sanitizer >/dev/null; then
  for tool in memcheck racecheck; do
    limit=$(cap_sanitizer 90)
    if [ "$limit" -le 10 ]; then
      s="not run: the time budget was spent (${sweep_time} s kept for the sweep)"
    else
      # Not --gtest_brief: when the time runs out, the [ OK ] lines say how far it got.
      bounded "$limit" compute-sanitizer --tool "$tool" --error-exitcode 99 "$gpu_tests" \
        --gtest_filter="$filter" >"$work/$tool.txt" 2>&1
      rc=$?
      summary=$(grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$work/$tool.txt" | tail -1)
      n_ok=$(grep -c '^\[       OK \]' "$work/$tool.txt")
      if [ $rc -eq 0 ]; then s="clean: ${summary:-no summary line}"
      elif [ $rc -eq 99 ]; then s="ERRORS: $summary"
      elif timed_out $rc; then
        s="TIMEOUT after $limit s, $n_ok tests done: ${summary:-no summary} (narrow MOE_SANITIZER_FILTER)"
      else s="rc $rc: ${summary:-no summary line}"
      fi
      section "compute-sanitizer --tool $tool: $s"
      { grep -E "^=========|^\[  FAILED  \]" "$work/$tool.txt" | head -40; echo "..."
        tail -n 15 "$work/$tool.txt"; } >"$work/${tool}_sum.txt"
      fence "$work/${tool}_sum.txt"
    fi
    [ $tool = memcheck ] && status_memcheck="$s" || status_racecheck="$s"
  done
else
  if [ "$core_built" != yes ] || [ ! -x "$gpu_tests" ]; then status_memcheck="not run: $gpu_tests not built"
  else status_memcheck="not run: compute-sanitizer not found"
  fi
  status_racecheck="$status_memcheck"
  section "compute-sanitizer: $status_memcheck"
fi
publish

# ---- the benchmark sweep -----------------------------------------------------------------------
bench="$build/bench/moe-bench"
presets="${MOE_BENCH_PRESETS:-}"
if [ -z "$presets" ] && [ "$core_built" = yes ]; then
  presets=$(bounded 60 "$bench" --list --quiet)
fi
section "moe-bench ($sweep_size, bf16, T = $tokens)"
bench_ok=""
bench_failed=""
bench_skipped=""
csvs=()
if [ "$core_built" != yes ] || [ ! -x "$bench" ]; then
  status_sweep="not run: moe-bench not built"
elif [ -z "$presets" ]; then
  status_sweep="not run: no presets (moe-bench --list --quiet printed none)"
else
  for p in $presets; do
    limit=$(cap_sweep 150)
    if [ "$limit" -le 15 ]; then
      bench_skipped="$bench_skipped $p"
      continue
    fi
    t0=$(elapsed)
    bounded "$limit" "$bench" --backend "${MOE_BENCH_BACKEND:-cuda}" --preset "$p" --tokens "$tokens" \
      "${bench_args[@]}" --json "$work/$p.json" --csv "$work/$p.csv" >"$work/$p.txt" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then s="ok"
    elif timed_out $rc; then s="TIMEOUT after $limit s"
    else s="rc $rc"
    fi
    echo "### $p: $s ($(($(elapsed) - t0)) s)" >>"$md"
    fence "$work/$p.txt"
    [ $rc -eq 0 ] && bench_ok="$bench_ok $p" || bench_failed="$bench_failed $p ($s)"
    [ -s "$work/$p.csv" ] && csvs+=("$work/$p.csv")
    # moe-bench rewrites its JSON after every row: one cut mid-write is left out, not merged.
    if [ -s "$work/$p.json" ]; then
      if valid_json "$work/$p.json"; then jsons+=("$work/$p.json")
      else echo "(its JSON is not valid, cut mid-write?: left out of $(basename "$json"))" >>"$md"
      fi
    fi
    write_json
    publish
  done
  [ -n "$bench_skipped" ] && echo "skipped, the time budget (${deadline} s) was spent:$bench_skipped" >>"$md"
  n_ok=$(wc -w <<<"$bench_ok")
  status_sweep="$n_ok of $(wc -w <<<"$presets") presets ok"
fi
[ -n "$bench_failed" ] && status_sweep="$status_sweep; failed:$bench_failed"
[ -n "$bench_skipped" ] && status_sweep="$status_sweep; skipped (time):$bench_skipped"
[ "${status_sweep:0:7}" = "not run" ] && echo "$status_sweep" >>"$md"

# ---- peers: bench/compare_torch.py ------------------------------------------------------------
if [ "$peers_time" -gt 0 ]; then
  limit=$(cap "$peers_time")
  if [ "$limit" -le 30 ]; then
    status_peers="not run: the time budget was spent"
  elif [ "$core_built" != yes ]; then
    status_peers="not run: libmoe or moe-bench not built"
  else
    # --deadline: no new (preset, T) 20 s before the hard stop; rows are in the JSON as they end.
    # shellcheck disable=SC2086  # MOE_PEERS_ARGS is word-split on purpose
    bounded "$limit" python3 bench/compare_torch.py --lib "$build" --backend cuda \
      -p qwen3-30b-a3b -p mixtral-8x7b -p deepseek-v3 \
      --tokens "${MOE_PEERS_TOKENS:-1,8,32,64,128,256,1024,4096,16384}" \
      --max-time 0.3 --iters 50 --deadline $((limit - 20)) --json "$peers_json" \
      ${MOE_PEERS_ARGS:-} >"$work/peers.txt" 2>&1
    rc=$?
    status_peers="rc $rc: $(grep -E '^check:' "$work/peers.txt" | tail -1)"
    timed_out $rc && status_peers="TIMEOUT after $limit s (finished rows kept); $status_peers"
  fi
  section "Peers, bench/compare_torch.py: $status_peers"
  [ -s "$work/peers.txt" ] && fence "$work/peers.txt"
  publish
fi

# ---- the tuner: moe-bench --tune (opt-in) -------------------------------------------------------
if [ -z "${MOE_BENCH_TUNE:-}" ]; then
  status_tune="not run (MOE_BENCH_TUNE empty)"
elif [ "$core_built" != yes ] || [ ! -x "$bench" ]; then
  status_tune="not run: moe-bench not built"
elif [ "$(cap 300)" -le 15 ]; then
  status_tune="not run: the time budget was spent"
else
  limit=$(cap 300)
  tune_args=()
  for p in $MOE_BENCH_TUNE; do tune_args+=(--preset "$p"); done
  bounded "$limit" "$bench" --backend cuda "${tune_args[@]}" --tokens "$tokens" --no-stages \
    --max-time 0.3 "${bench_extra[@]}" --tune "$tuning" --json "$work/tune.json" >"$work/tune.txt" 2>&1
  rc=$?
  if [ $rc -eq 0 ]; then status_tune="ok"
  elif timed_out $rc; then status_tune="TIMEOUT after $limit s"
  else status_tune="rc $rc"
  fi
  [ -s "$tuning" ] && status_tune="$status_tune, table $(basename "$tuning")" || status_tune="$status_tune, no table written"
  section "moe-bench --tune: $status_tune"
  fence "$work/tune.txt"
  [ -s "$tuning" ] && fence "$tuning"
fi

# ---- summary -------------------------------------------------------------------------------------
{
  echo "| step | result |"
  echo "|---|---|"
  echo "| configure | $status_configure |"
  echo "| build | $status_build |"
  echo "| ctest | $status_ctest |"
  echo "| memcheck | $status_memcheck |"
  echo "| racecheck | $status_racecheck |"
  echo "| sweep (moe-bench) | $status_sweep |"
  echo "| peers (compare_torch.py) | $status_peers |"
  echo "| tuner (moe-bench --tune) | $status_tune |"
  echo
  echo "median us per forward (%roofline floor) by T, and the --check results:"
  echo
  # Columns of moe-bench --csv (bench/report.c): 3 preset, 8 T, 17 median_us,
  # 32 roofline_fraction (empty where no ceiling was measured), 33 check.
  [ ${#csvs[@]} -gt 0 ] && cat "${csvs[@]}" | awk -F, '
    $1 == "commit" { next }
    { if (!($3 in seen)) { seen[$3] = 1; order[n++] = $3 }
      t = $8 + 0; if (!(t in ts)) { ts[t] = 1; tl[m++] = t }
      med = $17 == "" ? "-" : sprintf("%.0f", $17)
      cell[$3, t] = med " (" ($32 == "" ? "-" : sprintf("%.0f%%", 100 * $32)) ")"
      if ($33 != "") checks[$33]++ }
    END {
      if (n == 0) { print "no rows: no preset finished a T"; exit }
      for (i = 0; i < m; i++) for (j = i + 1; j < m; j++) if (tl[j] < tl[i]) { x = tl[i]; tl[i] = tl[j]; tl[j] = x }
      printf "| preset |"; for (i = 0; i < m; i++) printf " T=%d |", tl[i]; printf "\n|---|"
      for (i = 0; i < m; i++) printf "---|"; printf "\n"
      for (k = 0; k < n; k++) {
        printf "| %s |", order[k]
        for (i = 0; i < m; i++) printf " %s |", ((order[k], tl[i]) in cell) ? cell[order[k], tl[i]] : "-"
        printf "\n"
      }
      printf "\n--check:"; c = 0
      for (r in checks) { printf " %s %d", r, checks[r]; c++ }
      print c ? "" : " none"
    }'
  [ ${#csvs[@]} -gt 0 ] || echo "no rows: moe-bench wrote no CSV"
  echo
  echo "total time: $(elapsed) s"
} >"$work/summary.md"
section "Summary"
cat "$work/summary.md" >>"$md"
write_json
publish
# Every log of this run, for a failure the results file only summarises (only to $OUT: the
# device machine keeps nothing, and the logs do not belong in bench/results).
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then
  tar -czf "$OUT/$(basename "$base")-logs.tar.gz" -C "$work" . 2>/dev/null || true
fi
echo
echo "results: $md"
for f in "$json" "$peers_json" "$tuning"; do [ -s "$f" ] && echo "         $f"; done
[ -n "${OUT:-}" ] && [ -d "$OUT" ] && echo "copied to \$OUT ($OUT), with the logs"
cat "$work/summary.md"
