#!/usr/bin/env bash
# Makes sure the Debian packages libmoe builds with are installed. As root it installs what is
# missing with apt-get; otherwise it names the packages and the command, and fails.
# The CUDA toolkit is not a Debian package here: without nvcc the build is CPU-only.
set -euo pipefail

packages=(cmake ninja-build g++ pkg-config libgtest-dev libopenmpi-dev openmpi-bin libcjson-dev)
# clang and its runtime build the libFuzzer target of the checkpoint reader.
packages+=(clang libclang-rt-dev)

missing=()
for p in "${packages[@]}"; do
  # (a string test, not `| grep -q`: under pipefail grep's early exit can fail the pipe)
  [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" == *"install ok installed"* ]] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "install_deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "install_deps: missing Debian packages: ${missing[*]}" >&2
  echo "install_deps: run as root, or: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
