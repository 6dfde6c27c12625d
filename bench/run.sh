#!/usr/bin/env bash
# Builds libmoe and runs moe-bench. With a GPU visible, moe-bench's default is the sweep of the
# default preset at full size on the CUDA backend; without one, a scaled preset on the CPU
# backend, checked against the naive reference. Arguments go to moe-bench (try --help).
#   bash bench/run.sh
#   bash bench/run.sh --preset deepseek-v3 --scale 16 --tokens 64 --check
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
build="${BUILD_DIR:-build}"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j "$(nproc)" --target moe-bench >/dev/null
exec "$build/bench/moe-bench" "$@"
