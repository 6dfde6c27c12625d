#!/usr/bin/env bash
# Run on a machine with Debian's apt (the dev machine), before a GPU session: downloads the .deb
# packages the lent GPU machine's image may lack (GoogleTest, cJSON, and pkgconf, without which
# CMake cannot find cJSON) into .deps/ (git-ignored). The device tool carries that folder
# (run ... carry [".deps"]) and bench/gpu_check.sh unpacks it into a private prefix there, never
# into /, since nothing can be fetched on that machine. The device tool sends the checkout the
# session was started in: run this there, not in another worktree.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .deps
cd .deps
rm -f ./*.deb
apt-get download libgtest-dev libcjson-dev libcjson1 pkgconf-bin libpkgconf3 >/dev/null
ls -l ./*.deb
