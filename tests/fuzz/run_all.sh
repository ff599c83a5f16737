#!/usr/bin/env bash
# Runs every fuzzer in BUILD/bin for SECONDS each (default 20) over its seed corpus in
# tests/fuzz/corpus/<name>/ (copied to a scratch dir, so the tree stays clean), with the flags in
# tests/fuzz/<name>.options if there is one. Fails on a crash.
set -euo pipefail
build=${1:-build-fuzz}
secs=${2:-20}
here=$(cd "$(dirname "$0")" && pwd)
shopt -s nullglob
n=0
for f in "$build"/bin/fuzz_*; do
  name=$(basename "$f")
  work=$(mktemp -d)
  [ -d "$here/corpus/$name" ] && cp -r "$here/corpus/$name/." "$work/"
  # Per-fuzzer libFuzzer flags, if any: tests/fuzz/<name>.options (one line).
  extra=()
  [ -f "$here/$name.options" ] && read -r -a extra <"$here/$name.options"
  if ! "$f" -max_total_time="$secs" -max_len=70000 -rss_limit_mb=2048 "${extra[@]}" "$work" >"$work.log" 2>&1; then
    echo "fuzz: $name FAILED"; tail -40 "$work.log"; exit 1
  fi
  echo "fuzz: $name ok ($(grep -o 'Done [0-9]* runs' "$work.log" | tail -1))"
  rm -rf "$work" "$work.log"
  n=$((n+1))
done
echo "fuzz: $n fuzzers passed"
