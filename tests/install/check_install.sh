#!/usr/bin/env bash
# Installs the build into a temporary prefix, then builds the README example against it four
# ways (find_package shared and static, pkg-config shared and static) and runs each. Then moves
# the prefix and runs the installed moe-bench, which must find libmoe through its own runpath.
#   check_install.sh BUILD_DIR SOURCE_DIR [LIBDIR [BINDIR]]   (CMAKE_INSTALL_LIBDIR, _BINDIR)
set -euo pipefail
build_dir=$1 source_dir=$2 libdir=${3:-lib} bindir=${4:-bin}
example="$source_dir/tests/example/readme_example.c"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix="$work/prefix"
cmake --install "$build_dir" --prefix "$prefix" >/dev/null

# Every target the CMake package exports is one the README tells users about.
exported=$(sed -n 's/^add_library(\(Moe::[A-Za-z0-9_]*\) .*/\1/p' "$prefix/$libdir/cmake/Moe/MoeTargets.cmake")
[ -n "$exported" ] || { echo "install: no target found in MoeTargets.cmake"; exit 1; }
for t in $exported; do
  grep -q "$t\b" "$source_dir/README.md" || { echo "install: $t is exported but README.md never names it"; exit 1; }
done

cmake -S "$source_dir/tests/install" -B "$work/consumer" -DCMAKE_PREFIX_PATH="$prefix" \
  -DEXAMPLE="$example" >/dev/null
cmake --build "$work/consumer" >/dev/null
"$work/consumer/consumer_shared"
"$work/consumer/consumer_static"
export PKG_CONFIG_PATH="$prefix/$libdir/pkgconfig"
cc "$example" $(pkg-config --cflags --libs moe) -Wl,-rpath,"$prefix/$libdir" -o "$work/consumer_pc"
"$work/consumer_pc"
# Static through pkg-config: Libs.private alone must resolve every dependency (-l:libmoe.a, or
# the linker takes libmoe.so). The link cannot see a wrong -L where the default search path holds
# the library anyway (here /usr/local/lib64 is the toolkit's), so each -L must also be a folder
# that holds one of the libraries named.
libs=$(pkg-config --static --libs moe)
for d in $(printf '%s\n' $libs | sed -n 's/^-L//p'); do
  found=
  for l in $(printf '%s\n' $libs | sed -n 's/^-l//p'); do
    if compgen -G "$d/lib$l.*" >/dev/null; then found=1; fi
  done
  [ -n "$found" ] || { echo "install: moe.pc links -L$d, which holds none of its libraries"; exit 1; }
done
cc "$example" $(pkg-config --cflags moe) ${libs/-lmoe/-l:libmoe.a} -o "$work/consumer_pc_static"
"$work/consumer_pc_static"

# The installed moe-bench, from a prefix moved after install (its runpath must be relative), and
# with no search-path entry of the environment that holds a libmoe (LD_LIBRARY_PATH comes before
# the runpath); other entries stay, they may carry dependencies such as libcjson.
if [ -e "$prefix/$bindir/moe-bench" ]; then
  moved="$work/moved"
  mv "$prefix" "$moved"
  ld_path=
  IFS=: read -ra dirs <<<"${LD_LIBRARY_PATH:-}"
  for d in "${dirs[@]}"; do
    if [ -n "$d" ] && ! compgen -G "$d/libmoe.so*" >/dev/null; then ld_path+=${ld_path:+:}$d; fi
  done
  LD_LIBRARY_PATH=$ld_path "$moved/$bindir/moe-bench" -V
  # ...and the libmoe it loads is the moved prefix's, not one installed on the system.
  loaded=$(LD_LIBRARY_PATH=$ld_path ldd "$moved/$bindir/moe-bench" | awk '$1 ~ /^libmoe\.so/ {print $3}')
  if [ "$(realpath "$loaded" 2>/dev/null)" != "$(realpath "$moved/$libdir/libmoe.so")" ]; then
    echo "install: moe-bench loads libmoe from '${loaded:-nowhere}', not from $moved/$libdir"
    exit 1
  fi
  echo "install: moe-bench runs from a moved prefix"
fi
echo "install: find_package and pkg-config consumers (shared, static) all ran"
