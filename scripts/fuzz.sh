#!/usr/bin/env bash
# Runs each libFuzzer harness for a few seconds, starting from the committed corpus.
# Fails on the first crash, leak or sanitizer report.
set -euo pipefail
BUILD=${1:-build-fuzz}
SECONDS_EACH=${2:-20}
for h in cloudevent router webhook; do
  work=$(mktemp -d)
  cp -r "fuzz/corpus/$h/." "$work/"
  "$BUILD/fuzz_$h" -max_total_time="$SECONDS_EACH" -max_len=4096 -print_final_stats=0 \
    -artifact_prefix="$work/" "$work" 2>"$work.log" || { tail -40 "$work.log"; exit 1; }
  echo "fuzz_$h: $(ls "$work" | wc -l) corpus entries after ${SECONDS_EACH}s, no crash"
  rm -rf "$work" "$work.log"
done
