#!/usr/bin/env bash
# Runs every fuzz target briefly (FUZZ_SECONDS each, default 15) on its seed corpus, so a
# target that no longer builds or crashes at once fails CI. Long runs: see proxy/fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
# A smoke that does not run must fail, not pass: CI would be green without ever fuzzing.
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz smoke: FAILED: cargo-fuzz is not installed; proxy/bootstrap.sh test installs the pinned version (or: cargo install --locked cargo-fuzz)" >&2
  exit 1
fi
seconds="${FUZZ_SECONDS:-15}"
# cargo-fuzz passes nightly-only flags (-Zsanitizer, sanitizer coverage). The machine's one
# toolchain is stable; RUSTC_BOOTSTRAP=1 makes it accept them, no nightly needed.
export RUSTC_BOOTSTRAP=1
target_dir="${CARGO_TARGET_DIR:-fuzz/target}/fuzz"
targets=$(cargo fuzz list)
if [ -z "$targets" ]; then
  echo "fuzz smoke: FAILED: cargo fuzz list names no target" >&2
  exit 1
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in $targets; do
  mkdir -p "fuzz/corpus/$t"
  work=$(mktemp -d)
  cp -r "fuzz/corpus/$t/." "$work/" 2>/dev/null || true
  echo "fuzz smoke: $t for ${seconds}s" >&2
  if ! cargo fuzz run --target-dir "$target_dir" "$t" "$work" -- -max_total_time="$seconds" -rss_limit_mb=4096 >"$log" 2>&1; then
    echo "fuzz smoke: FAILED: $t; the end of its output:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
  tail -n 2 "$log"
  rm -rf "$work"
done
