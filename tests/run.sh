#!/usr/bin/env bash
# Builds libmoe (CUDA kernels too when nvcc is found) and runs every test suite through ctest.
# GPU suites skip themselves where no GPU is visible; the CPU suites always run.
#   bash tests/run.sh            # build dir: build/
#   BUILD_DIR=build-x bash tests/run.sh -DMOE_WITH_CUDA=OFF   # extra args go to cmake
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
build="${BUILD_DIR:-build}"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build "$build" -j "$(nproc)"
ctest --test-dir "$build" --output-on-failure -j "$(nproc)"
