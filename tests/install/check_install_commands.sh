#!/usr/bin/env bash
# The install commands written in the README (its code blocks) and the Dockerfile work as written:
#  - cmake --install copies every installed target (libmoe.a too) and bench/run.sh builds only
#    moe-bench, so a whole-tree `cmake --build build` (no --target) must come first;
#  - an install into /usr or /usr/local is followed by ldconfig, or programs linked against
#    libmoe do not find it (the loader searches those folders through its cache).
#   check_install_commands.sh README.md docker/Dockerfile
set -euo pipefail
for f in "$@"; do
  awk -v markdown="$([[ $f == *.md ]] && echo 1 || echo 0)" -v file="$f" '
    function close_block() { if (pending) { print file ":" pending ": no ldconfig after an install into a system prefix"; bad = 1 } pending = 0 }
    markdown && /^```/ { close_block(); inblock = !inblock; built = 0; next }
    !markdown || inblock {
      line = $0
      sub(/^[ \t]*(RUN[ \t]+)?(&&[ \t]*)?/, "", line)
      if (line ~ /^cmake --build build([ \t]|$)/ && line !~ /--target/) built = 1
      if (line ~ /^cmake --install build/) {
        found = 1
        if (!built) { print file ":" NR ": cmake --install before a full cmake --build build"; bad = 1 }
        if (line ~ /--prefix \/usr(\/local)?([ \t]|$)/) pending = NR
      }
      if (line ~ /(^|[ \t;&])ldconfig([ \t;]|$)/) pending = 0
    }
    END {
      close_block()
      if (!found) { print file ": no cmake --install build command"; exit 1 }
      if (bad) exit 1
      print file ": install commands build everything first and refresh the loader cache"
    }' "$f"
done
