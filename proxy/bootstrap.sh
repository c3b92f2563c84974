#!/usr/bin/env bash
# Installs what building and testing certgate needs on a Debian/Ubuntu machine (when it can),
# or says what to install (when it cannot), then runs the requested step:
#   proxy/bootstrap.sh demo   build and run `certgate demo` (extra args go to the demo)
#   proxy/bootstrap.sh test   formatting, lints, and every test
#   proxy/bootstrap.sh        only install
set -euo pipefail
cd "$(dirname "$0")/.."

step="${1:-}"
[ $# -gt 0 ] && shift

# cmake: pingora's zlib-ng; perl+make+gcc: the vendored OpenSSL; curl/openssl/haproxy: tests.
need=()
for tool in cmake perl make gcc; do command -v "$tool" >/dev/null 2>&1 || need+=("$tool"); done
if [ "$step" = test ]; then
  for tool in curl openssl haproxy; do command -v "$tool" >/dev/null 2>&1 || need+=("$tool"); done
fi
if [ ${#need[@]} -gt 0 ]; then
  apt=(apt-get)
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then apt=(sudo apt-get); else apt=(); fi
  fi
  if [ ${#apt[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${apt[@]}" update -qq >/dev/null
    "${apt[@]}" install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "bootstrap: certgate's build needs: ${need[*]}" >&2
    echo "           install them (Debian/Ubuntu: sudo apt-get install ${need[*]}) and run this again" >&2
    exit 1
  fi
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "bootstrap: no cargo on PATH; install Rust (https://rustup.rs) and run this again" >&2
  exit 1
fi

case "$step" in
  demo) exec cargo run -q -p certgate -- demo "$@" ;;
  test)
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -q -- -D warnings
    # Supply chain: licenses, bans, sources (advisories need GitHub; see proxy/deny.toml).
    command -v cargo-deny >/dev/null 2>&1 || cargo install --locked -q cargo-deny
    cargo deny --manifest-path proxy/Cargo.toml check licenses bans sources 2>&1 | tail -n 1
    if ls "${CARGO_HOME:-$HOME/.cargo}"/advisory-dbs/advisory-db-* >/dev/null 2>&1; then
      cargo deny --offline --manifest-path proxy/Cargo.toml check advisories 2>&1 | tail -n 1
    else
      echo "cargo deny: no local RustSec database; advisories not checked (see proxy/deny.toml)" >&2
    fi
    proxy/fuzz/smoke.sh
    cargo test --workspace "$@"
    # The container image's runtime stage around the binary just built, run hardened under
    # podman (deploy/README.md). Rootful podman and debootstrap need root, as CI is.
    if [ "$(id -u)" = 0 ]; then
      CERTGATE_BIN="${CARGO_TARGET_DIR:-target}/debug/certgate" deploy/test.sh smoke
    else
      echo "deploy/test.sh smoke: skipped (needs root)" >&2
    fi
    ;;
  "") ;;
  *) echo "usage: proxy/bootstrap.sh [demo|test]" >&2; exit 2 ;;
esac
