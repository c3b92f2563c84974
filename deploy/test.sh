#!/usr/bin/env bash
# Builds and runs the container artefacts in deploy/ with podman, on a Debian machine that cannot
# reach a public image registry (base images are made locally with debootstrap). Run as root.
#
#   deploy/test.sh [full]   install podman & co, build deploy/Dockerfile, then check the image,
#                           docker-compose.yml under podman-compose and the Kubernetes pod under
#                           `podman play kube` (see deploy/README.md for the time it takes)
#   deploy/test.sh smoke    the Dockerfile's runtime stage around an already built binary
#                           ($CERTGATE_BIN, else $CARGO_TARGET_DIR/{release,debug}/certgate),
#                           and the image checks only: a few minutes, for CI
#
# CERTGATE_TEST_IMAGE=<image> skips the build and tests that image. Containers talk only to
# each other; every request from the host goes to a port published on 127.0.0.1. Everything
# started is removed on exit. The last line is "N passed, M failed".
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
MODE=${1:-full}
WORK=${CERTGATE_TEST_WORK:-/var/tmp/certgate-deploy-test}
CACHE=${CERTGATE_TEST_CACHE:-/var/tmp/certgate-deploy-cache}
PY=/usr/bin/python3           # Debian's, with python3-yaml (not a pyenv/venv one)
IMAGE=${CERTGATE_TEST_IMAGE:-}
CLEANUP=()

# shellcheck source=deploy/test/lib.sh
. "$HERE/test/lib.sh"
# shellcheck source=deploy/test/image.sh
. "$HERE/test/image.sh"
# shellcheck source=deploy/test/compose.sh
. "$HERE/test/compose.sh"
# shellcheck source=deploy/test/kube.sh
. "$HERE/test/kube.sh"

case "$MODE" in full | smoke) ;; *) die "usage: deploy/test.sh [full|smoke]" ;; esac
[ "$(id -u)" = 0 ] || die "run as root: rootful podman, debootstrap and chown to uid 65532"

START=$(date +%s)
finish() {
  local rc=$? i
  for ((i = ${#CLEANUP[@]} - 1; i >= 0; i--)); do eval "${CLEANUP[$i]}" >/dev/null 2>&1 || true; done
  [ "$rc" = 0 ] || [ "$FAILED" -gt 0 ] || FAILED=1
  log "$MODE: $(($(date +%s) - START))s, work files in $WORK"
  echo "$PASSED passed, $FAILED failed"
  [ "$FAILED" = 0 ] || exit 1
}
trap finish EXIT

rm -rf "$WORK"
mkdir -p "$WORK" "$CACHE"
chmod 0755 "$WORK"

# iptables: netavark sets up every pod's and network's firewall rules with it, yet Debian's
# netavark neither depends on nor recommends it; without it no pod starts ("internal libpod
# error", the cause only in podman's debug log).
install_packages podman runc uidmap slirp4netns fuse-overlayfs netavark aardvark-dns catatonit \
  iptables debootstrap podman-compose python3 python3-yaml curl openssl ca-certificates iproute2
podman_settings
podman_preflight

# Runs a step and says how long it took.
phase() {
  local t0
  t0=$(date +%s)
  "$@"
  log "$1: $(($(date +%s) - t0))s"
}

# The built image: deploy/Dockerfile as it is, with its base images pointed at the local ones.
# The build container has no network (--network none): apt finds its packages already
# installed, and cargo reads vendored crates from the context (.cargo/config.toml).
build_full() {
  local ctx="$WORK/context" vendor builder runtime
  builder=$(build_base)
  runtime=$(runtime_base)
  vendor=$(vendored_crates)
  mkdir -p "$ctx"
  (cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
    | xargs -0 cp --parents -t "$ctx" 2>/dev/null) || die "copying the repository"
  cp -a "$vendor" "$ctx/vendor"
  mkdir -p "$ctx/.cargo"
  printf '[source.crates-io]\nreplace-with = "vendored"\n[source.vendored]\ndirectory = "vendor"\n[net]\noffline = true\n' \
    > "$ctx/.cargo/config.toml"
  IMAGE=localhost/certgate:test
  log "podman build -f deploy/Dockerfile (BUILD_IMAGE=$builder RUNTIME_IMAGE=$runtime)"
  (cd "$ctx" && nice -n 10 podman build --network none -f deploy/Dockerfile \
    --build-arg "BUILD_IMAGE=$builder" --build-arg "RUNTIME_IMAGE=$runtime" -t "$IMAGE" .) \
    > "$WORK/build.log" 2>&1 || { tail -n 40 "$WORK/build.log"; fail "podman build"; }
  pass "deploy/Dockerfile builds ($IMAGE)"
}

# The runtime stage, verbatim from deploy/Dockerfile (every line from its FROM on, and the ARGs
# before the first FROM), after a stand-in build stage that holds the given binary.
build_smoke() {
  local ctx="$WORK/smoke" bin=${CERTGATE_BIN:-} runtime t
  if [ -z "$bin" ]; then
    for t in "${CARGO_TARGET_DIR:-$REPO/target}"/{release,debug}/certgate; do
      [ -x "$t" ] && { bin=$t; break; }
    done
  fi
  [ -x "${bin:-/nonexistent}" ] || die "smoke: no certgate binary (set CERTGATE_BIN or build first)"
  runtime=$(runtime_base)
  mkdir -p "$ctx"
  cp "$bin" "$ctx/certgate"
  awk 'BEGIN { n = 0 }
       /^FROM / { n++; if (n == 1) { print "FROM scratch AS build"; print "COPY certgate /out/certgate" } }
       n == 0 && /^ARG / { print } n >= 2 { print }' "$HERE/Dockerfile" > "$WORK/Dockerfile.smoke"
  grep -q '^COPY --from=build /out/certgate' "$WORK/Dockerfile.smoke" \
    || die "smoke: the runtime stage no longer copies /out/certgate from the build stage"
  IMAGE=localhost/certgate:smoke
  (cd "$ctx" && podman build --network none -f "$WORK/Dockerfile.smoke" \
    --build-arg "RUNTIME_IMAGE=$runtime" -t "$IMAGE" .) > "$WORK/build.log" 2>&1 \
    || { tail -n 40 "$WORK/build.log"; fail "podman build (runtime stage)"; }
  pass "the runtime stage builds around $bin"
}

if [ -n "$IMAGE" ]; then
  podman image exists "$IMAGE" || die "CERTGATE_TEST_IMAGE=$IMAGE: no such image"
elif [ "$MODE" = smoke ]; then
  phase build_smoke
else
  phase build_full
fi
phase image_checks
if [ "$MODE" = full ]; then
  phase compose_checks
  phase kube_checks
fi
