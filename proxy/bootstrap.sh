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
  # A Go net/http upstream (proxy/tests/security.rs): the Anka services are Go servers.
  command -v go >/dev/null 2>&1 || need+=(golang-go)
  # promtool and the Prometheus server (proxy/tests/monitoring.rs) come in Debian's prometheus.
  command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
  # The fleet's other clients (proxy/tests/interop.rs): the Jenkins plugin's Java 17 (javac
  # compiles the test client), GnuTLS, and Python with venv for the pinned sslyze below.
  command -v javac >/dev/null 2>&1 || need+=(openjdk-17-jdk-headless)
  command -v gnutls-cli >/dev/null 2>&1 || need+=(gnutls-bin)
  command -v python3 >/dev/null 2>&1 || need+=(python3)
  python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
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
    # Installed packages must not start services here (prometheus enables one): while apt
    # runs, a policy-rc.d refuses every start, unless the machine already has such a policy.
    made_rc=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' | "${apt[@]:0:${#apt[@]}-1}" tee /usr/sbin/policy-rc.d >/dev/null
      "${apt[@]:0:${#apt[@]}-1}" chmod 755 /usr/sbin/policy-rc.d
      made_rc=1
    fi
    "${apt[@]}" install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    if [ -n "$made_rc" ]; then "${apt[@]:0:${#apt[@]}-1}" rm -f /usr/sbin/policy-rc.d; fi
    # ...nor at the next boot: the tests run their own Prometheus on 127.0.0.1.
    if [[ " ${need[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
      "${apt[@]:0:${#apt[@]}-1}" systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
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

CARGO_DENY_VERSION=0.20.2
CARGO_FUZZ_VERSION=0.13.2
# sslyze for proxy/tests/interop.rs (its SSLYZE_VERSION), with every dependency pinned in
# proxy/tests/interop/requirements-sslyze.txt, in a virtualenv of its own.
SSLYZE_VERSION=6.3.1
SSLYZE_VENV="$HOME/.cache/certgate-tools/sslyze-$SSLYZE_VERSION"
sslyze() {
  local req=proxy/tests/interop/requirements-sslyze.txt
  # The stamp is the requirements file as installed: an edited pin reinstalls.
  if [ -x "$SSLYZE_VENV/bin/python3" ] && cmp -s "$req" "$SSLYZE_VENV/requirements.txt"; then
    return 0
  fi
  echo "bootstrap: installing sslyze $SSLYZE_VERSION into $SSLYZE_VENV" >&2
  rm -rf "$SSLYZE_VENV"
  python3 -m venv "$SSLYZE_VENV"
  "$SSLYZE_VENV/bin/pip" install -q --disable-pip-version-check --no-input -r "$req"
  cp "$req" "$SSLYZE_VENV/requirements.txt"
}
# Installs cargo subcommand $1 at version $2 unless exactly that version is on PATH.
tool() {
  local have
  have=$(cargo "${1#cargo-}" --version 2>/dev/null || true)
  case "$have" in
    "$1 $2"|"$1 $2 "*) return 0 ;;
  esac
  echo "bootstrap: installing $1 $2${have:+ (found: $have)}" >&2
  cargo install --locked -q --version "$2" "$1"
}

case "$step" in
  demo) exec cargo run -q -p certgate -- demo "$@" ;;
  test)
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -q -- -D warnings
    # Layering: every module imports only from the layers below it, and not the few imports
    # the layers allow but the design forbids (policy -> tls, admin -> reload); the script's
    # self-test plants each kind of violation first.
    python3 .ci/layers.py --self-test
    python3 .ci/layers.py | tail -n 1
    # Pinned tools, built from crates.io with their own lock files (a newer release must not
    # change what CI checks without a commit saying so).
    tool cargo-deny "$CARGO_DENY_VERSION"
    tool cargo-fuzz "$CARGO_FUZZ_VERSION"
    # Supply chain: licenses, bans, sources (advisories need GitHub; see proxy/deny.toml).
    cargo deny --manifest-path proxy/Cargo.toml check licenses bans sources 2>&1 | tail -n 1
    if ls "${CARGO_HOME:-$HOME/.cargo}"/advisory-dbs/advisory-db-* >/dev/null 2>&1; then
      cargo deny --offline --manifest-path proxy/Cargo.toml check advisories 2>&1 | tail -n 1
    else
      echo "cargo deny: no local RustSec database; advisories not checked (see proxy/deny.toml)" >&2
    fi
    proxy/fuzz/smoke.sh
    sslyze
    CERTGATE_SSLYZE_PYTHON="$SSLYZE_VENV/bin/python3" cargo test --workspace "$@"
    # The container image's runtime stage around the binary just built, run hardened under
    # podman (deploy/README.md). Rootful podman and debootstrap need root, as CI is.
    if [ "$(id -u)" = 0 ]; then
      CERTGATE_BIN="${CARGO_TARGET_DIR:-target}/debug/certgate" deploy/test.sh smoke
    elif [ "${CERTGATE_NO_CONTAINERS:-}" = 1 ]; then
      echo "deploy/test.sh smoke: NOT RUN (CERTGATE_NO_CONTAINERS=1): this is not a full test run" >&2
    else
      echo "deploy/test.sh smoke: FAILED: rootful podman needs root; run as root (as CI does)," >&2
      echo "           or set CERTGATE_NO_CONTAINERS=1 to leave the container smoke out knowingly" >&2
      exit 1
    fi
    ;;
  "") ;;
  *) echo "usage: proxy/bootstrap.sh [demo|test]" >&2; exit 2 ;;
esac
