#!/usr/bin/env bash
# Builds libmoe (CUDA kernels too when nvcc is found) and runs every test suite through ctest.
# GPU suites skip themselves where no GPU is visible; the CPU suites always run.
# Then, where python3 and the CUDA headers exist, a second build runs the GPU suites on the
# CPU emulation of the CUDA device (tests/emulator/README.md), so the kernels execute here too.
#   bash tests/run.sh            # build dirs: build/ and build-emu/
#   BUILD_DIR=build-x bash tests/run.sh -DMOE_WITH_CUDA=OFF   # extra args go to the first cmake
#   MOE_SKIP_EMULATION=1 bash tests/run.sh                    # the first pass only
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
build="${BUILD_DIR:-build}"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build "$build" -j "$(nproc)"
ctest --test-dir "$build" --output-on-failure -j "$(nproc)"

cuda_include="${CUDA_HOME:-/usr/local/cuda}/include"
if [ -n "${MOE_SKIP_EMULATION:-}" ]; then
  exit 0
elif ! command -v python3 >/dev/null || [ ! -f "$cuda_include/cuda_runtime_api.h" ]; then
  echo "run.sh: no python3 or no CUDA headers in $cuda_include: GPU suites not emulated"
  exit 0
fi
emu="${build}-emu"
cmake -S . -B "$emu" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOE_CUDA_EMULATION=ON \
  -DMOE_BUILD_BENCH=ON -DMOE_WITH_MPI=ON
targets=(moe_gpu_tests moe_emulator_tests moe_nccl_emu_tests moe_ep_tests moe-bench)
# With MPI: NCCL bootstrapped over MPI (moeEpCommCreateMpi on a CUDA context), one rank.
# (ninja -t query, not `targets all | grep -q`: under pipefail grep's early exit can SIGPIPE
# ninja, the test reads false, and mpirun then finds no executable; that failed CI once.)
if ninja -C "$emu" -t query moe_mpi_tests >/dev/null 2>&1; then targets+=(moe_mpi_tests); fi
cmake --build "$emu" -j "$(nproc)" --target "${targets[@]}"
# The GPU suites, the emulator's and the emulated NCCL's own checks and moe-bench's GPU mode
# (label gpu), then expert parallelism on the CUDA backend: the loopback suite's CUDA cases, the
# GPU layout, the NCCL transport (one rank, and 2 or 4 ranks as threads) and its MPI bootstrap
# (mpirun -np 1: the emulated NCCL connects the threads of one process, not processes).
ctest --test-dir "$emu" --output-on-failure -j "$(nproc)" -L gpu
ctest --test-dir "$emu" --output-on-failure -j "$(nproc)" \
  -R 'EpLoopback.*Cuda_|EpLayoutCuda|EpNccl|^moe_mpi_np1$'
