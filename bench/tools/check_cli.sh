#!/bin/sh
# Runs one command and checks its exit status, stdout and stderr apart: for moe-bench's ctest
# cases, where PASS_REGULAR_EXPRESSION would ignore the exit status and mix the two streams.
#
# usage: check_cli.sh [CHECK...] -- COMMAND [ARG...]
#   --status N            the exit status is N
#   --stdout-empty        nothing on stdout
#   --stdout TEXT         stdout holds TEXT (a fixed string)
#   --no-stdout TEXT      stdout does not hold TEXT
#   --stderr TEXT         stderr holds TEXT
#   --stderr-count TEXT N exactly N lines of stderr hold TEXT
#   --remove PATH         PATH is removed before the command runs (no stale result can pass)
#   --file PATH           PATH exists and is not empty after the command
set -u
checks_file=$(mktemp) && out=$(mktemp) && err=$(mktemp) || exit 2
trap 'rm -f "$checks_file" "$out" "$err"' EXIT
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  case "$1" in
    --stdout-empty) printf '%s\n' "stdout-empty" >>"$checks_file"; shift ;;
    --status|--stdout|--no-stdout|--stderr|--file)
      printf '%s\t%s\n' "${1#--}" "$2" >>"$checks_file"; shift 2 ;;
    --stderr-count) printf '%s\t%s\t%s\n' "stderr-count" "$3" "$2" >>"$checks_file"; shift 3 ;;
    --remove) rm -rf "$2"; shift 2 ;;
    *) echo "check_cli.sh: unknown check '$1'" >&2; exit 2 ;;
  esac
done
[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || { echo "check_cli.sh: no command" >&2; exit 2; }

"$@" >"$out" 2>"$err"
status=$?
failed=0
fail() { echo "check_cli.sh: FAILED: $*"; failed=1; }
tab=$(printf '\t')
while IFS="$tab" read -r kind a b; do
  case "$kind" in
    status) [ "$status" -eq "$a" ] || fail "exit status $status, expected $a" ;;
    stdout-empty) [ ! -s "$out" ] || fail "stdout is not empty" ;;
    stdout) grep -qF -e "$a" "$out" || fail "stdout lacks: $a" ;;
    no-stdout) grep -qF -e "$a" "$out" && fail "stdout holds: $a" ;;
    stderr) grep -qF -e "$a" "$err" || fail "stderr lacks: $a" ;;
    stderr-count)
      n=$(grep -cF -e "$b" "$err")
      [ "$n" -eq "$a" ] || fail "stderr holds '$b' on $n lines, expected $a" ;;
    file) [ -s "$a" ] || fail "no file $a, or it is empty" ;;
  esac
done <"$checks_file"
if [ "$failed" -ne 0 ]; then
  echo "command: $*"
  echo "exit status: $status"
  echo "---- stdout"; cat "$out"
  echo "---- stderr"; cat "$err"
fi
exit "$failed"
