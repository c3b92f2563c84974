#!/usr/bin/env bash
# Runs every fuzz target briefly (FUZZ_SECONDS each, default 15) on its seed corpus, so a
# target that no longer builds or crashes at once fails CI. Long runs: see proxy/fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz smoke: cargo-fuzz not installed (cargo install cargo-fuzz); skipped" >&2
  exit 0
fi
seconds="${FUZZ_SECONDS:-15}"
# cargo-fuzz needs nightly-only flags; the stable toolchain accepts them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
target_dir="${CARGO_TARGET_DIR:-fuzz/target}/fuzz"
for t in $(cargo fuzz list); do
  mkdir -p "fuzz/corpus/$t"
  work=$(mktemp -d)
  cp -r "fuzz/corpus/$t/." "$work/" 2>/dev/null || true
  echo "fuzz smoke: $t for ${seconds}s" >&2
  cargo fuzz run --target-dir "$target_dir" "$t" "$work" -- -max_total_time="$seconds" -rss_limit_mb=4096 2>&1 | tail -n 2
  rm -rf "$work"
done
