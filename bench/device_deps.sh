#!/usr/bin/env bash
# Run on a machine with Debian's apt (the dev machine), before a GPU session: downloads the .deb
# packages the lent GPU machine's image may lack (GoogleTest, cJSON) into .deps/ (git-ignored).
# The device tool carries that folder (run ... carry [".deps"]) and bench/gpu_check.sh unpacks
# it into a private prefix there, never into /, since nothing can be fetched on that machine.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .deps
cd .deps
rm -f ./*.deb
apt-get download libgtest-dev libcjson-dev libcjson1 >/dev/null
ls -l ./*.deb
