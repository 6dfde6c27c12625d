#!/usr/bin/env bash
# Installs the build into a temporary prefix, then builds the README example against it three
# ways (find_package shared, find_package static, pkg-config) and runs each.
set -euo pipefail
build_dir=$1 source_dir=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build_dir" --prefix "$work/prefix" >/dev/null
cmake -S "$source_dir/tests/install" -B "$work/consumer" -DCMAKE_PREFIX_PATH="$work/prefix" \
  -DEXAMPLE="$source_dir/tests/example/readme_example.c" >/dev/null
cmake --build "$work/consumer" >/dev/null
"$work/consumer/consumer_shared"
"$work/consumer/consumer_static"
export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig"
cc "$source_dir/tests/example/readme_example.c" $(pkg-config --cflags --libs moe) \
  -Wl,-rpath,"$work/prefix/lib" -o "$work/consumer_pc"
"$work/consumer_pc"
echo "install: find_package shared, static and pkg-config consumers all ran"
